"""cocotb bench of RUN_NMF from the host: ``anmf.host.nmf_run.run_nmf`` through
RegisterDriver over AXI4-Lite (completion and progress by the ``irq`` line) on the controller
RTL, with the AFE model bound to its AFE port (the scenarios' ScenarioBench, deterministic
AFE); the golden model runs the same RUN_NMF on a twin AFE from the cycle the RTL started.

Tests (SUITE_TESTS, run by tests/test_run_nmf_cocotb.py on Icarus and Verilator):

- ``run_nmf_unmasked``: 16 x 16 camera crop, k = 3, 2 iterations;
- ``run_nmf_masked``: a 16 x 16 rank-2 product, k = 2, 2 iterations, 15 % of the entries
  missing and one column fully missing;
- ``run_nmf_abort``: abort during the first W-step's solves.

Checks: NMF_W/H and their exponents, TARGET and FAULT_MAP, the counters (solves, pulses,
over-range samples, failed cells, RUN_NMF retries and unresolved right-hand sides) and the
done cycle equal the golden model's bit for bit; the progress readings cover both half-steps
and their phases; the relative error (K fitted) against the float reference ANLS from the same
initialization, printed and within MAX_ERROR_RATIO of it (plus MAX_ERROR_MARGIN); after an
abort, H is the first H-step's and W the initial one (whole factors).
"""
from __future__ import annotations

import json
from typing import Any, Callable

import cocotb
import numpy as np
from cocotb.simtime import get_sim_time
from cocotb.triggers import RisingEdge

from anmf.hdl.controller import STATUS_DELAY
from anmf.host.driver import NMFProgress
from anmf.host.nmf_run import run_nmf
from anmf.model.formats import PICOSECONDS_PER_SECOND, fixed_from_factor, r_codes, window_codes
from anmf.model.golden import Error, GoldenController
from anmf.model.nmf import anls, initialize
from anmf.testbench.bench_scenarios import DEFAULT_OPTIONS, ENV_VAR, ScenarioBench, anls_problem

__all__ = ["SUITE_TESTS", "MAX_ERROR_RATIO", "MAX_ERROR_MARGIN", "run_nmf_env"]

#: The chip's relative error may be this many times the float reference's, plus the margin
#: (rram-3bit: 3-bit-class cells, 10-bit converters; docs/host-driver.md).
MAX_ERROR_RATIO = 1.5
MAX_ERROR_MARGIN = 0.02
SIZE, ITERATIONS = 16, 2


def run_nmf_env() -> dict[str, str]:
    """``extra_env`` of the bench: the scenarios' build, AFE and clock (so the Verilog, and
    with it the build folder, is the scenarios'), the AFE deterministic."""
    return {ENV_VAR: json.dumps({**DEFAULT_OPTIONS, "deterministic": True})}


def _now_ps() -> int:
    return round(get_sim_time("ps"))


def _masked_problem(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    R = rng.uniform(0.1, 1.0, (SIZE, 2)) @ rng.uniform(0.1, 1.0, (2, SIZE))
    observed = rng.random((SIZE, SIZE)) >= 0.15
    observed[:, 5] = False
    return R, observed


class RunNMFCheck:
    """One RUN_NMF on the RTL and the same on the golden model, compared."""

    def __init__(self, dut: Any):
        self.dut = dut
        self.bench = ScenarioBench(dut, deterministic=True)
        self.twin = self.bench.afe.twin()   # power-up state: the golden model's AFE
        afe = self.bench.afe
        c = afe.config
        self.window = window_codes(g_offset_s=c.circuit.g_offset_s, g_max_s=c.device.g_max_s,
                                   full_scale_s=afe.read_full_scale_s, bits=afe.adc_bits)
        self.edges: dict[str, int] = {}

    async def _watch(self) -> None:
        # CONTROL.start's strobe is the command's cycle 0; STATUS.done rises STATUS_DELAY
        # after RUN_NMF's done (docs/controller.md).
        await RisingEdge(self.dut.control__start)
        self.edges["start"] = _now_ps()
        await RisingEdge(self.dut.status__done)
        self.edges["done"] = _now_ps()

    async def run(self, R: np.ndarray, observed: np.ndarray, k: int, *,
                  abort_if: Callable[[NMFProgress], bool] | None = None) -> dict[str, Any]:
        bench = self.bench
        await bench.start()
        watcher = cocotb.start_soon(self._watch())
        readings: list[NMFProgress] = []
        result = await run_nmf(bench.driver, R, k, ITERATIONS, mask=observed, window=self.window,
                               on_progress=readings.append, abort_if=abort_if)
        assert watcher.done(), f"start and done strobes not both seen: {self.edges}"
        period = bench.afe.period_ps
        rtl_done = (self.edges["done"] - self.edges["start"]) // period - STATUS_DELAY
        # The golden model: the same buffers, from the cycle the RTL started.
        matrix = np.where(observed, R, 0.0)
        codes, _ = r_codes(matrix, bench.params.r_bits)
        W0, H0 = initialize(matrix, k, "nndsvda", 0, mask=observed)
        mantissa, col_exp = fixed_from_factor(W0, bench.params.mantissa_bits)
        golden = GoldenController(bench.params, self.twin)
        golden.load_nmf(codes, observed, mantissa, col_exp)
        rows = bench.params.rows
        initial = {"w": golden.nmf_w.copy(), "w_exp": golden.nmf_w_exp.copy()}
        m, n = R.shape
        expected = golden.run_nmf(
            m=m, n=n, k=k, iterations=ITERATIONS, settings=bench.programming,
            dac_settle=bench.timing.dac_settle, analog_settle=bench.timing.analog_settle,
            g_offset=self.window[0], g_span=self.window[1], watchdog_limit=bench.timing.watchdog,
            start_s=self.edges["start"] / PICOSECONDS_PER_SECOND,
            stop_after=1 if abort_if is not None else None)
        f = result.factors
        for name, rtl, model in (
                ("W mantissas", f.w_mantissa, golden.nmf_w[:m, :k]),
                ("W row exponents", f.w_row_exp, golden.nmf_w_exp[:m]),
                ("W component exponents", f.w_col_exp, golden.nmf_w_exp[rows:rows + k]),
                ("H mantissas", f.h_mantissa, golden.nmf_h[:k, :n]),
                ("H component exponents", f.h_comp_exp, golden.nmf_h_exp[rows:rows + k]),
                ("H column exponents", f.h_col_exp, golden.nmf_h_exp[:n])):
            assert np.array_equal(rtl, model), f"{name}: RTL {rtl.tolist()}, golden {model.tolist()}"
        if abort_if is not None:
            # TARGET and FAULT_MAP are working buffers: the aborted W-step already changed
            # them, the golden model stopped before it.
            return dict(result=result, expected=expected, rtl_done=rtl_done, readings=readings,
                        initial=initial, golden=golden, matrix=matrix, W0=W0, H0=H0)
        # The cells RUN_NMF programs (rows of W or H^T, columns 0 to k - 1): the rest of
        # TARGET and FAULT_MAP keeps what earlier tests left (neither is reset).
        regs, f_rows = bench.driver.regs, max(m, n)
        cols = golden.total_cols
        targets = np.array([[regs.TARGET.code.get(await bench.driver.bus.read(
            regs.TARGET.address(r * cols + c))) for c in range(k)] for r in range(f_rows)])
        assert np.array_equal(targets, golden.targets[:f_rows, :k]), \
            f"TARGET: RTL {targets.tolist()}, golden {golden.targets[:f_rows, :k].tolist()}"
        column_bits = (1 << k) - 1
        faults = [await bench.driver.bus.read(regs.FAULT_MAP.address(r)) & column_bits
                  for r in range(f_rows)]
        assert faults == (golden.fault_map[:f_rows] & column_bits).tolist(), \
            "FAULT_MAP differs from the golden model's"
        return dict(result=result, expected=expected, rtl_done=rtl_done, readings=readings,
                    initial=initial, golden=golden, matrix=matrix, W0=W0, H0=H0)


def _check_completed(run: dict[str, Any], label: str, observed: np.ndarray, k: int) -> None:
    result, expected = run["result"], run["expected"]
    assert expected.error == Error.NONE and result.completed, (expected, result.report.status)
    assert run["rtl_done"] == expected.done_cycle, \
        f"done in cycle {run['rtl_done']}, golden {expected.done_cycle}"
    assert result.counts == {"solves": expected.solves, "pulses": expected.pulse_count,
                             "over_range": expected.over_range_samples,
                             "failed_cells": expected.failed_cells, "retries": expected.retries,
                             "unresolved": expected.unresolved}, (result.counts, expected)
    phases = {(p.step, p.phase) for p in run["readings"]}
    assert {("H", "SOLVE"), ("W", "PROGRAM"), ("W", "SOLVE")} <= phases, phases
    assert result.report.progress.iteration == ITERATIONS
    reference = anls(run["matrix"], k, iters=ITERATIONS, mask=observed,
                     init=(run["W0"], run["H0"]))
    bound = MAX_ERROR_RATIO * reference.error + MAX_ERROR_MARGIN
    message = (f"RUN_NMF {label}: relative error RTL {result.error:.4f} (K fitted {result.K:.3g}), "
               f"float reference ANLS {reference.error:.4f}, initial {result.initial_error:.4f}; "
               f"done cycle {expected.done_cycle} (RTL = golden), {expected.solves} solves "
               f"({expected.retries} over-range retries), {expected.pulse_count} pulses, "
               f"{expected.failed_cells} failed cells; bound {bound:.4f}")
    print(message)
    cocotb.log.info(message)
    assert result.error <= bound, message


@cocotb.test()
async def run_nmf_unmasked(dut: Any) -> None:
    """16 x 16 camera crop, k = 3, everything observed."""
    R = anls_problem("camera", SIZE, 3, 0)
    observed = np.ones(R.shape, dtype=bool)
    check = RunNMFCheck(dut)
    run = await check.run(R, observed, 3)
    _check_completed(run, "camera 16x16 k=3", observed, 3)
    check.bench.assert_clean()


@cocotb.test()
async def run_nmf_masked(dut: Any) -> None:
    """Rank-2 product, k = 2, 15 % missing and column 5 fully missing (its H column is 0)."""
    R, observed = _masked_problem(7)
    check = RunNMFCheck(dut)
    run = await check.run(R, observed, 2)
    _check_completed(run, "masked 16x16 k=2 (15 % missing, a missing column)", observed, 2)
    assert not run["result"].factors.h_mantissa[:, 5].any(), "the missing column's H is not 0"
    check.bench.assert_clean()


@cocotb.test()
async def run_nmf_abort(dut: Any) -> None:
    """CONTROL.abort during the first W-step's solves: RUN_NMF ends ABORTED with H the first
    H-step's and W the initial one, both whole."""
    R = anls_problem("camera", SIZE, 2, 0)
    observed = np.ones(R.shape, dtype=bool)
    check = RunNMFCheck(dut)
    run = await check.run(R, observed, 2,
                          abort_if=lambda p: (p.step, p.phase) == ("W", "SOLVE") and p.rhs_done >= 2)
    result, expected = run["result"], run["expected"]
    assert result.report.status.error.name == "ABORTED", result.report.status
    assert expected.half_steps == 1 and result.report.progress.iteration == 0
    golden = run["golden"]
    assert np.array_equal(golden.nmf_w, run["initial"]["w"]), "the golden W moved"
    message = (f"RUN_NMF aborted in the W-step after {result.report.progress.rhs_done} right-hand "
               f"sides: H = the first H-step's, W = the initial one (bit for bit with the golden "
               f"model stopped after one half-step)")
    print(message)
    cocotb.log.info(message)
    check.bench.assert_clean()


#: The cocotb tests of the test suite (tests/test_run_nmf_cocotb.py).
SUITE_TESTS = ("run_nmf_unmasked", "run_nmf_masked", "run_nmf_abort")
