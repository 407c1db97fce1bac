"""Run a host job against the controller RTL in cocotb and get its result back.

A *host job* is an async function ``job(bench, inputs, options) -> (outputs, result)`` written
against the host API: ``bench.driver`` is a :class:`~anmf.host.RegisterDriver` over
AXI4-Lite (cocotbext-axi) on the DUT, with the AFE model bound to the DUT's AFE port
(``AFEBinding``); ``inputs`` are numpy arrays, ``options`` and ``result`` JSON values,
``outputs`` numpy arrays.

:func:`run_cosim_job` (outside the simulator) writes the inputs to ``inputs.npz`` and the job
to ``job.json`` in the build folder, builds and runs the cocotb test :func:`cosim_job` of this
module on Icarus or Verilator (``cocotb_tools.runner`` via ``run_bench``), and reads
``outputs.npz`` and ``result.json`` back. ``anmf demo`` runs :func:`run_nmf_job` this way;
``anmf factorize --backend rtl`` can do the same.

The bench is the scenarios' (testbench/bench_scenarios.py ``ScenarioBench``): its build
parameters, AFE configuration, clock and noise come from ``scenario`` (the ``ANMF_SCENARIO``
options), its timing and write-verify settings from the AFE's physics.
"""
from __future__ import annotations

import importlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

import cocotb
import numpy as np

__all__ = ["JOB_ENV", "CosimResult", "run_cosim_job", "cosim_job", "run_nmf_job",
           "ProgressBar", "job_folder", "host_anls_job"]

#: The environment variable that names the job folder inside the simulator.
JOB_ENV = "ANMF_COSIM_JOB"
HostJob = Callable[[Any, dict[str, np.ndarray], dict[str, Any]],
                   Awaitable[tuple[dict[str, np.ndarray], dict[str, Any]]]]


@dataclass(frozen=True)
class CosimResult:
    """What a co-simulated job gave back, and where its files are."""

    outputs: dict[str, np.ndarray]
    result: dict[str, Any]
    folder: Path
    #: Wall time of the whole launch (build included) and of the host job in the simulator.
    seconds: float


def job_folder(name: str, sim: str) -> Path:
    """Where the job's files live: ``build/<name>-<sim>/job``."""
    from anmf.testbench.simulators import build_dir_for

    return build_dir_for(name, sim, False) / "job"


def _resolve(function: str) -> HostJob:
    module, _, attribute = function.partition(":")
    if not module or not attribute:
        raise ValueError(f"job function must be 'module:function'; got {function!r}")
    return getattr(importlib.import_module(module), attribute)


def run_cosim_job(function: str, inputs: dict[str, np.ndarray], options: dict[str, Any], *,
                  scenario: dict[str, Any], sim: str = "verilator",
                  name: str = "cosim_job", bench: str | None = None) -> CosimResult:
    """Run host job ``function`` ("module:function") on the RTL in ``sim``.

    Args:
        inputs: arrays for the job (saved as .npz).
        options: JSON options for the job.
        scenario: the bench's options (``bench_scenarios.DEFAULT_OPTIONS`` keys: params,
            afe, clock_hz, deterministic, seed).
        name: the build folder's name (one per build configuration: the Verilog is rebuilt
            when it changes).
        bench: the bench class ("module:Class", constructed as ``Class(dut)``; default
            ``ScenarioBench``): a ScenarioBench subclass, e.g. one whose AFE model carries
            injected faults (testbench/bench_faults.py).

    Raises RuntimeError when the simulation ended without the job's outputs.
    """
    from anmf.hdl.controller import TOP_MODULE, verilog_text
    from anmf.hdl.params import BuildParams
    from anmf.testbench.bench_scenarios import ENV_VAR
    from anmf.testbench.simulators import SIMULATORS, run_bench

    if sim not in SIMULATORS:
        raise ValueError(f"unknown simulator {sim!r}; accepted: {', '.join(SIMULATORS)}")
    _resolve(function)   # fail here, not inside the simulator
    if bench is not None:
        _resolve(bench)
    started = time.perf_counter()
    folder = job_folder(name, sim)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in ("outputs.npz", "result.json"):
        (folder / stale).unlink(missing_ok=True)
    np.savez(folder / "inputs.npz", **inputs)
    spec: dict[str, Any] = {"function": function, "options": options}
    if bench is not None:
        spec["bench"] = bench
    (folder / "job.json").write_text(json.dumps(spec))
    params = BuildParams(**scenario["params"])
    results = run_bench(sim=sim, verilog=verilog_text(params), toplevel=TOP_MODULE,
                        test_module="anmf.testbench.cosim_job", name=name, testcase="cosim_job",
                        extra_env={JOB_ENV: str(folder), ENV_VAR: json.dumps(scenario)})
    if not (folder / "result.json").is_file():
        raise RuntimeError(f"the co-simulated job {function} ended without a result (log and "
                           f"results: {results})")
    from cocotb_tools.check_results import get_results

    tests, failed = get_results(results)
    if failed or not tests:
        raise RuntimeError(f"the co-simulated job {function} failed ({results})")
    with np.load(folder / "outputs.npz") as data:
        outputs = {key: data[key] for key in data.files}
    result = json.loads((folder / "result.json").read_text())
    return CosimResult(outputs, result, folder, time.perf_counter() - started)


@cocotb.test()
async def cosim_job(dut: Any) -> None:
    """The job of ``$ANMF_COSIM_JOB/job.json`` on the scenario bench; its outputs and result
    are written next to it."""
    from cocotb.simtime import get_sim_time

    from anmf.testbench.bench_scenarios import ScenarioBench

    folder = Path(os.environ[JOB_ENV])
    spec = json.loads((folder / "job.json").read_text())
    with np.load(folder / "inputs.npz") as data:
        inputs = {key: data[key] for key in data.files}
    bench_class = _resolve(spec["bench"]) if "bench" in spec else ScenarioBench
    bench = bench_class(dut)
    await bench.start()
    period_ps = bench.afe.period_ps
    bench.driver.cycle_counter = lambda: round(get_sim_time("ps")) // period_ps
    started = time.perf_counter()
    outputs, result = await _resolve(spec["function"])(bench, inputs, spec["options"])
    result["job_seconds"] = round(time.perf_counter() - started, 3)
    np.savez(folder / "outputs.npz", **outputs)
    (folder / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    bench.assert_clean()


# ---- the RUN_NMF job ------------------------------------------------------------------------

class ProgressBar:
    """RUN_NMF's progress as the host reads it (NMF_PROGRESS): a bar redrawn in place on a
    terminal, one line per phase change otherwise. Writing-verify takes most of a half-step
    (docs/anls-sequencer.md), so PROGRAM counts for 80 % of it and SOLVE for the rest."""

    WIDTH = 30

    def __init__(self, iterations: int, m: int, n: int, stream: Any = None):
        self.iterations, self.m, self.n = iterations, m, n
        self.stream = stream if stream is not None else sys.stdout
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last: tuple[int, str, str] | None = None

    def fraction(self, progress: Any) -> float:
        half = 2 * progress.iteration + (progress.step == "W")
        count = self.n if progress.step == "H" else self.m
        within = {"IDLE": 0.0, "PREPARE": 0.0, "PROGRAM": 0.0, "COMMIT": 1.0,
                  "SOLVE": 0.8 + 0.2 * progress.rhs_done / count}[progress.phase]
        if progress.phase == "IDLE":
            half = 2 * progress.iteration
        return min(1.0, (half + within) / (2 * self.iterations))

    def __call__(self, progress: Any) -> None:
        fraction = self.fraction(progress)
        filled = round(fraction * self.WIDTH)
        text = (f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {100 * fraction:5.1f} %  "
                f"iteration {min(progress.iteration + 1, self.iterations)}/{self.iterations}  "
                f"{progress.step}-step {progress.phase:<7}  right-hand sides {progress.rhs_done}")
        key = (progress.iteration, progress.step, progress.phase)
        if self.tty:
            self.stream.write("\r" + text)
            if progress.phase == "IDLE" and progress.iteration == self.iterations:
                self.stream.write("\n")
        elif key != self._last:
            self.stream.write(text + "\n")
        self._last = key
        self.stream.flush()


async def run_nmf_job(bench: Any, inputs: dict[str, np.ndarray],
                      options: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``anmf.host.nmf_run.run_nmf`` on the RTL: inputs ``R`` (m, n), optional ``mask`` and
    ``W0``; options ``k``, ``iterations``, ``range_retries`` (8), ``progress`` (draw a bar),
    ``interval_s`` (progress reads, 20 us), ``timeout_s`` (1 s of simulated time). The
    window is the AFE's (``formats.window_codes``)."""
    from anmf.host.nmf_run import run_nmf
    from anmf.model.formats import window_codes

    afe = bench.afe
    config = afe.config
    window = window_codes(g_offset_s=config.circuit.g_offset_s, g_max_s=config.device.g_max_s,
                          full_scale_s=afe.read_full_scale_s, bits=afe.adc_bits)
    R = inputs["R"]
    iterations = int(options["iterations"])
    driver = bench.driver
    driver.irq_timeout_s = float(options.get("timeout_s", 1.0))
    bar = ProgressBar(iterations, *R.shape) if options.get("progress") else None
    init = inputs["W0"] if "W0" in inputs else options.get("init", "nndsvda")
    result = await run_nmf(driver, R, int(options["k"]), iterations, mask=inputs.get("mask"),
                           init=init, window=window,
                           range_retries=int(options.get("range_retries", 8)),
                           on_progress=bar, interval_s=float(options.get("interval_s", 20e-6)))
    f = result.factors
    outputs = {"W": result.W, "H": result.H, "w_mantissa": f.w_mantissa,
               "w_row_exp": f.w_row_exp, "w_col_exp": f.w_col_exp, "h_mantissa": f.h_mantissa,
               "h_comp_exp": f.h_comp_exp, "h_col_exp": f.h_col_exp}
    cycles = result.cycles
    summary = {"error": result.error, "initial_error": result.initial_error, "K": result.K,
               "counts": result.counts, "cycles": cycles, "clock_hz": bench.clock_hz,
               "sim_seconds": None if cycles is None else cycles / bench.clock_hz,
               "status": result.report.status.error.name,
               "progress_readings": len(result.report.readings),
               "bus": dict(driver.transactions), "window": list(window),
               "phase_seconds": result.phase_seconds,
               "adc_conversion_s": config.adc.conversion_time_s,
               "afe": bench.options["afe"], "params": bench.options["params"]}
    if math.isnan(result.error):
        raise AssertionError("RUN_NMF's relative error is NaN")
    return outputs, summary


# ---- the host-driven (tiled) ANLS job -------------------------------------------------------

async def host_anls_job(bench: Any, inputs: dict[str, np.ndarray],
                        options: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``anmf.host.host_anls`` on the RTL: the outer loop on the host, every NNLS a SOLVE;
    problems beyond the array are tiled (docs/tiling.md). Inputs ``R``, ``W0``, ``H0``;
    options ``k``, ``iterations``."""
    from cocotb.simtime import get_sim_time

    from anmf.host import host_anls

    period_ps = bench.afe.period_ps
    start_cycle = round(get_sim_time("ps")) // period_ps
    result = await host_anls(bench.driver, inputs["R"], int(options["k"]),
                             int(options["iterations"]), scale=bench.scale,
                             init=(inputs["W0"], inputs["H0"]))
    cycles = round(get_sim_time("ps")) // period_ps - start_cycle
    summary = {"error": float(result.error), "initial_error": float(result.initial_error),
               "cycles": int(cycles), "clock_hz": bench.clock_hz,
               "sim_seconds": cycles / bench.clock_hz,
               "stats": {key: float(value) for key, value in result.stats.items()},
               "bus": dict(bench.driver.transactions)}
    if math.isnan(result.error):
        raise AssertionError("host ANLS's relative error is NaN")
    return {"W": result.W, "H": result.H, "errors": np.asarray(result.errors)}, summary
