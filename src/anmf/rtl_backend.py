"""The ``rtl`` backend of ``anmf factorize`` and ``anmf compress``: the controller's Verilog
in co-simulation (Verilator or Icarus through cocotb), the analog model on its AFE port, the
host driver over AXI4-Lite.

A problem that fits the default build's array (m, n <= ROWS, k <= COLS) runs as one RUN_NMF
command: the chip's own ANLS sequencer does every iteration (docs/anls-sequencer.md). A larger
one runs as host-driven ANLS (``anmf.host.host_anls``), tiled onto the array
(docs/tiling.md): the host programs each reduced factor and issues every SOLVE. The bench is
the demo's (``anmf.demo.DEMO_SCENARIO``: default build, 100 MHz, rram-3bit with noise on and
IR drop off, docs/demo.md) with the AFE preset and seed given here.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .data import InputError

__all__ = ["SIMS", "RtlFactorization", "rtl_scenario", "factorize_rtl"]

SIMS = ("verilator", "icarus")
#: The AFE presets the co-simulation bench accepts (a TOML file is a model-backend option).
PRESETS = ("ideal", "rram-3bit", "pessimistic")


@dataclass(frozen=True)
class RtlFactorization:
    """Factors from the RTL and what the run cost."""

    W: NDArray[np.float64]
    H: NDArray[np.float64]
    #: Relative error after each iteration (RUN_NMF: only the last one is observable).
    errors: NDArray[np.float64]
    initial_error: float
    #: "run_nmf" (the chip's sequencer) or "host_anls" (host-driven, tiled when needed).
    mode: str
    sim: str
    cycles: int
    chip_seconds: float          #: cycles at the bench's clock
    wall_seconds: float          #: build and simulation
    counts: dict[str, float] = field(default_factory=dict)


def rtl_scenario(afe: str = "rram-3bit", seed: int = 11) -> dict[str, Any]:
    """The co-simulation bench's options: the demo's with AFE preset ``afe`` and ``seed``."""
    from .demo import DEMO_SCENARIO

    if afe not in PRESETS:
        raise InputError(f"--afe {afe!r} is not available on the rtl backend; accepted presets: "
                         f"{', '.join(PRESETS)}")
    return {**DEMO_SCENARIO, "afe": {**DEMO_SCENARIO["afe"], "preset": afe, "seed": int(seed)}}


def factorize_rtl(R: NDArray[np.float64], rank: int, iters: int, *,
                  init: tuple[NDArray[np.float64], NDArray[np.float64]],
                  afe: str = "rram-3bit", seed: int = 11, sim: str = "verilator",
                  progress: bool = True, name: str = "rtl") -> RtlFactorization:
    """ANLS of R (m x n, non-negative) at ``rank`` for ``iters`` iterations on the RTL from
    ``init`` = (W0, H0) (RUN_NMF uses W0 only: it starts with an H-step)."""
    from anmf.hdl.params import BuildParams
    from anmf.testbench.cosim_job import run_cosim_job

    if sim not in SIMS:
        raise InputError(f"unknown simulator {sim!r}; accepted: {', '.join(SIMS)}")
    scenario = rtl_scenario(afe, seed)
    params = BuildParams(**scenario["params"])
    m, n = R.shape
    W0, H0 = (np.asarray(a, dtype=np.float64) for a in init)
    fits = m <= params.rows and n <= params.rows and rank <= params.cols
    started = time.perf_counter()
    if fits:
        job = run_cosim_job("anmf.testbench.cosim_job:run_nmf_job", {"R": R, "W0": W0},
                            {"k": rank, "iterations": iters, "progress": progress,
                             "interval_s": 50e-6},
                            scenario=scenario, sim=sim, name=name)
        result = job.result
        errors = np.array([result["error"]])
        counts = {key: float(value) for key, value in result["counts"].items()}
    else:
        job = run_cosim_job("anmf.testbench.cosim_job:host_anls_job",
                            {"R": R, "W0": W0, "H0": H0}, {"k": rank, "iterations": iters},
                            scenario=scenario, sim=sim, name=name)
        result = job.result
        errors = job.outputs["errors"]
        counts = dict(result["stats"])
    return RtlFactorization(
        W=job.outputs["W"], H=job.outputs["H"], errors=errors,
        initial_error=float(result["initial_error"]), mode="run_nmf" if fits else "host_anls",
        sim=sim, cycles=int(result["cycles"]), chip_seconds=float(result["sim_seconds"]),
        wall_seconds=time.perf_counter() - started, counts=counts)
