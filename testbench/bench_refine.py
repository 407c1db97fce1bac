"""cocotb bench of REFINE and of the over-range retry of host solves: the host driver
(RegisterDriver over AXI4-Lite, completion by the ``irq`` line) on the controller RTL, the
deterministic rram-3bit AFE model bound to its AFE port (the scenarios' ScenarioBench and
build), and the golden model on a twin AFE from the cycles the RTL started each command.

Tests (SUITE_TESTS, run by tests/test_refine_cocotb.py on Icarus and Verilator):

- ``program_matrix_then_refine``: per problem seed, a well-conditioned 16 x 8 matrix of 3-bit
  levels written by PROGRAM_MATRIX, B = A_read x_true (A_read: REFINE_A, the verify readings),
  then ``refine`` with 4 passes. PROGRAM_MATRIX's report, REFINE_A, REFINE_X, REFINE_STATUS,
  RESULTS, the counters and the done cycle equal the golden model's; the relative residual
  eta (docs/refinement.md) after the run is printed (and asserted < 2^-12 for the suite's
  seed, 5, on which column 0 leaves the active set in pass 0 and re-enters in pass 1).
- ``solve_over_range_retries``: cells at the two lowest levels (large solutions), a SOLVE_FREE
  that goes over range, with SOLVE_RETRIES 4 (resolved after 2 halvings) and 1 (runs out):
  RESULTS, SolveResult.exponent (SOLVE_EXPONENT), RANGE_RETRY_COUNT, OVER_RANGE_COUNT,
  SOLVE_COUNT and the done cycle equal the golden model's ``solve_with_retries``.

Options: JSON in ``ANMF_REFINE`` (:func:`refine_env`): ``seeds`` (problem seeds of the first
test), ``passes``, ``assert_target`` (eta < 2^-12 asserted), ``reentry_seeds`` (seeds on which
a column must re-enter the active set), ``report`` (a JSON file the first test writes its
per-seed figures to). ``python -m anmf.testbench.bench_refine`` runs the
first test on 10 seeds through the RTL and prints the table of docs/refinement.md.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import cocotb
import numpy as np
from cocotb.simtime import get_sim_time
from cocotb.triggers import RisingEdge

from anmf.hdl.controller import STATUS_DELAY
from anmf.model.afe import Mode
from anmf.model.formats import PICOSECONDS_PER_SECOND, unpack_result
from anmf.model.golden import Error, GoldenController
from anmf.model.refinement import correction_gain, relative_residual
from anmf.testbench.bench_scenarios import DEFAULT_OPTIONS, ENV_VAR, ScenarioBench

__all__ = ["SUITE_TESTS", "OPTIONS_VAR", "PROBLEM_SHAPE", "B_FRAC_BITS", "TARGET_LOG2",
           "refine_env", "main"]

OPTIONS_VAR = "ANMF_REFINE"
#: The problem: the first 16 rows and 8 columns of the scenarios' 32 x 8 (+2 spare) build.
PROBLEM_SHAPE = (16, 8)
B_FRAC_BITS = 20        #: B = DAC steps x 2**20 (docs/refinement.md)
MAX_COND = 20.0         #: condition number bound of the level matrix (well-conditioned)
TARGET_LOG2 = -12       #: the issue's target: eta < 2**-12 within 4 passes
#: The suite's seed 5: the clamped pass 0 puts column 0 at 0 and its gradient re-admits it in
#: pass 1 (the gradient sweep and the re-entry in co-simulation; asserted).
DEFAULT_REFINE = {"seeds": [5], "passes": 4, "assert_target": True, "reentry_seeds": [5],
                  "report": None}
#: The retry cases: (SOLVE_RETRIES, retries expected, last results still over range).
RETRY_CASES = ((4, 2, False), (1, 1, True))
RETRY_AMPLITUDE = 400   #: RHS codes up to zero + 400: over range at the lowest levels


def refine_env(**overrides: Any) -> dict[str, str]:
    """``extra_env`` of the bench: the scenarios' options with a deterministic AFE (their
    build, so the Verilog and its build folder are the scenarios'), and this bench's options."""
    return {ENV_VAR: json.dumps({**DEFAULT_OPTIONS, "deterministic": True}),
            OPTIONS_VAR: json.dumps({**DEFAULT_REFINE, **overrides})}


def _options() -> dict[str, Any]:
    return {**DEFAULT_REFINE, **json.loads(os.environ.get(OPTIONS_VAR, "{}"))}


def _now_ps() -> int:
    return round(get_sim_time("ps"))


class CommandEdges:
    """The cycle 0 (CONTROL.start's strobe) and the STATUS.done rise of every command."""

    def __init__(self, dut: Any):
        self.dut = dut
        self.starts: list[int] = []
        self.dones: list[int] = []
        cocotb.start_soon(self._watch())

    async def _watch(self) -> None:
        while True:
            await RisingEdge(self.dut.control__start)
            self.starts.append(_now_ps())
            await RisingEdge(self.dut.status__done)
            self.dones.append(_now_ps())

    def start_s(self, index: int) -> float:
        return self.starts[index] / PICOSECONDS_PER_SECOND

    def done_cycle(self, index: int, period_ps: int) -> int:
        """The block's done cycle, counted from the start strobe (STATUS shows it
        STATUS_DELAY later)."""
        return (self.dones[index] - self.starts[index]) // period_ps - STATUS_DELAY


def well_conditioned_levels(rng: np.random.Generator) -> np.ndarray:
    rows, cols = PROBLEM_SHAPE
    while True:
        levels = rng.integers(0, 8, (rows, cols))
        if np.linalg.cond(levels) <= MAX_COND:
            return levels


async def _read_window(bench: ScenarioBench, name: str, indices: range) -> list[int]:
    window = getattr(bench.regs, name)
    return [await bench.driver.bus.read(window.address(i)) for i in indices]


async def _refine_one(bench: ScenarioBench, golden: GoldenController, edges: CommandEdges,
                      seed: int, passes: int) -> dict[str, Any]:
    """PROGRAM_MATRIX and REFINE of problem ``seed`` on the RTL and on the golden model,
    compared; returns the figures."""
    p, afe, driver = bench.params, bench.afe, bench.driver
    rows, cols = PROBLEM_SHAPE
    circuit = afe.config.circuit
    rng = np.random.default_rng(seed)
    levels = well_conditioned_levels(rng)
    targets = np.array(afe.conductance_code(circuit.g_offset_s + circuit.g_unit_s * levels),
                       dtype=np.int64)
    row_mask, col_enable = (1 << rows) - 1, (1 << cols) - 1
    first = len(edges.starts)
    before = await driver.counters()
    await driver.write_targets(targets)
    report = await driver.program_matrix(row_mask, col_enable)
    full_targets = golden.targets.copy()
    full_targets[:rows, :cols] = targets
    golden.load_targets(full_targets)
    programmed = golden.program_matrix(bench.programming, row_mask=row_mask, col_mask=col_enable,
                                       watchdog_limit=bench.timing.watchdog,
                                       start_s=edges.start_s(first))
    assert (report.pulses, report.failed_cells) == (programmed.pulse_count,
                                                    programmed.failed_count), \
        f"PROGRAM_MATRIX: RTL {report.pulses} pulses, {report.failed_cells} failed; golden " \
        f"{programmed.pulse_count}, {programmed.failed_count}"
    assert edges.done_cycle(first, afe.period_ps) == programmed.done_cycle
    a_codes = np.array(await _read_window(bench, "REFINE_A", range(rows * cols)),
                       dtype=np.int64).reshape(rows, cols)
    assert np.array_equal(a_codes, golden.refine_a[:rows]), \
        f"REFINE_A: RTL {a_codes.tolist()}, golden {golden.refine_a[:rows].tolist()}"

    # B = A_read x_true: in the range of the matrix the controller knows, 0.8 of the DAC range.
    a_offset = int(afe.conductance_code(circuit.g_offset_s))
    gain, gain_shift = correction_gain(afe)
    a_read = (a_codes - a_offset).astype(np.float64)
    x_true = rng.uniform(0.1, 1.0, cols)
    b_float = a_read @ x_true
    b_float *= 0.8 * (2 ** (p.dac_bits - 1) - 1) / np.abs(b_float).max()
    b = np.zeros(p.rows, dtype=np.int64)
    b[:rows] = np.rint(b_float * 2.0 ** B_FRAC_BITS)
    result = await driver.refine(b, passes=passes, row_mask=row_mask, col_enable=col_enable,
                                 a_offset=a_offset, gain=gain, gain_shift=gain_shift,
                                 headroom=2, b_frac_bits=B_FRAC_BITS)
    after = await driver.counters()
    refine_index = first + 1
    golden.refine_b[:] = b
    expected = golden.refine(passes=passes, a_offset=a_offset, gain=gain, gain_shift=gain_shift,
                             headroom=2, row_mask=row_mask, col_mask=col_enable,
                             avg_log2=0, dac_settle=bench.timing.dac_settle,
                             analog_settle=bench.timing.analog_settle,
                             watchdog_limit=bench.timing.watchdog,
                             start_s=edges.start_s(refine_index))
    assert expected.error == Error.NONE, expected.error
    assert np.array_equal(result.x_words, golden.refine_x), \
        f"REFINE_X: RTL {result.x_words.tolist()}, golden {golden.refine_x.tolist()}"
    rtl_status = (result.passes_done, result.residual_msb, result.over_range)
    golden_status = (expected.passes_done, max(expected.peaks[-1], 0), expected.over_range)
    assert rtl_status == golden_status, f"REFINE_STATUS: RTL {rtl_status}, golden {golden_status}"
    rtl_done = edges.done_cycle(refine_index, afe.period_ps)
    assert rtl_done == expected.done_cycle, \
        f"REFINE done in cycle {rtl_done}, golden {expected.done_cycle}"
    results = await _read_window(bench, "RESULTS", range(p.total_cols))
    assert results == golden.results.tolist(), f"RESULTS: RTL {results}, golden {golden.results}"
    solves = after.solves - before.solves
    assert solves == expected.passes_done, f"SOLVE_COUNT +{solves}, {expected.passes_done} passes"
    assert np.allclose(result.x, result.x_words * 2.0 ** -B_FRAC_BITS)
    b_used = b[:rows].astype(np.float64)
    etas = [relative_residual(a_read, b_used, x) for x in expected.history]
    return {"seed": seed, "log2_eta": [math.log2(e) if e > 0 else -math.inf for e in etas],
            "passes_done": result.passes_done, "over_range": result.over_range,
            "done_cycle": rtl_done, "pulses": report.pulses, "failed_cells": report.failed_cells,
            # Columns X ends at 0 (x_true has none), and columns at 0 after some pass that
            # came back (their gradient re-admitted them): column -> the pass they were back in.
            "zero_columns": [int(j) for j in np.flatnonzero(result.x_words[:cols] == 0)],
            "reentered": _reentered(expected.history, cols)}


def _reentered(history: tuple[np.ndarray, ...], cols: int) -> dict[str, int]:
    """Column -> the last pass after which X was positive again after being 0 (JSON keys)."""
    back: dict[str, int] = {}
    for p in range(1, len(history)):
        for j in range(cols):
            if history[p - 1][j] == 0 and history[p][j] > 0:
                back[str(j)] = p
    return back


@cocotb.test()
async def program_matrix_then_refine(dut: Any) -> None:
    """PROGRAM_MATRIX then REFINE, bit for bit and cycle for cycle with the golden model."""
    options = _options()
    bench = ScenarioBench(dut, deterministic=True)
    golden = GoldenController(bench.params, bench.afe.twin())
    await bench.start()
    edges = CommandEdges(dut)
    figures = []
    for seed in options["seeds"]:
        started = time.perf_counter()
        row = await _refine_one(bench, golden, edges, seed, options["passes"])
        row["wall_s"] = round(time.perf_counter() - started, 1)
        figures.append(row)
        message = (f"REFINE 16x8 seed {seed}: log2(eta) per pass "
                   f"{[round(v, 1) for v in row['log2_eta']]}, {row['passes_done']} solves, "
                   f"done cycle {row['done_cycle']} (RTL = golden), PROGRAM_MATRIX "
                   f"{row['pulses']} pulses, {row['failed_cells']} failed cells; "
                   f"{row['wall_s']} s wall")
        print(message)
        cocotb.log.info(message)
    if options["report"]:
        Path(options["report"]).write_text(json.dumps(figures))
    bench.assert_clean()
    for row in figures:
        if row["seed"] in options["reentry_seeds"]:
            assert row["reentered"], f"seed {row['seed']}: no column re-entered " \
                f"(X = 0 in columns {row['zero_columns']})"
    if options["assert_target"]:
        for row in figures:
            assert row["log2_eta"][-1] < TARGET_LOG2, \
                f"seed {row['seed']}: log2(eta) {row['log2_eta'][-1]:.1f} after the last pass"


@cocotb.test()
async def solve_over_range_retries(dut: Any) -> None:
    """SOLVE_FREE over range with SOLVE_RETRIES set: like the golden model's
    solve_with_retries (results, exponent, counters, done cycle)."""
    bench = ScenarioBench(dut, deterministic=True)
    golden = GoldenController(bench.params, bench.afe.twin())
    await bench.start()
    edges = CommandEdges(dut)
    p, driver = bench.params, bench.driver
    rows, cols = PROBLEM_SHAPE
    levels = bench.afe.config.device.level_targets_s()
    g = levels[np.random.default_rng(1).integers(1, 3, (p.rows, p.total_cols))]
    now = bench.now_s()
    bench.afe.set_conductances(g, now)
    golden.afe.set_conductances(g, now)
    rhs = np.full(p.rows, p.dac_zero_code, dtype=np.int64)
    rhs[:rows] += (RETRY_AMPLITUDE * np.random.default_rng(3).uniform(-0.2, 1, rows)).astype(np.int64)
    golden.load_rhs(rhs)
    row_mask, col_enable = (1 << rows) - 1, (1 << cols) - 1
    for limit, retries, still_over in RETRY_CASES:
        await driver.configure(timing=replace(bench.timing, solve_retries=limit))
        before = await driver.counters()
        result = await driver.solve(rhs, row_mask, col_enable, "SOLVE_FREE")
        after = await driver.counters()
        index = len(edges.starts) - 1
        expected = golden.solve_with_retries(
            Mode.SOLVE_FREE, retries=limit, row_mask=row_mask, col_mask=col_enable, avg_log2=0,
            dac_settle=bench.timing.dac_settle, analog_settle=bench.timing.analog_settle,
            watchdog_limit=bench.timing.watchdog, start_s=edges.start_s(index))
        assert expected.error == Error.NONE and (expected.exponent, expected.retries) == \
            (retries, retries), f"golden: {expected}"
        unpacked = [unpack_result(expected.words[c], p.adc_bits) for c in range(cols)]
        assert result.codes.tolist() == [code for code, _ in unpacked], \
            f"limit {limit}: RTL codes {result.codes.tolist()}, golden {unpacked}"
        assert result.over_range.tolist() == [over for _, over in unpacked]
        assert result.any_over_range == still_over
        assert result.exponent == retries, f"SOLVE_EXPONENT {result.exponent}, expected {retries}"
        counts = {name: getattr(after, name) - getattr(before, name)
                  for name in ("solves", "over_range", "range_retries")}
        assert counts == {"solves": retries + 1, "over_range": expected.over_range_count,
                          "range_retries": retries}, counts
        rtl_done = edges.done_cycle(index, bench.afe.period_ps)
        assert rtl_done == expected.done_cycle, f"done {rtl_done}, golden {expected.done_cycle}"
        message = (f"SOLVE_FREE over range, SOLVE_RETRIES {limit}: {retries} retries (exponent "
                   f"{result.exponent}), {expected.over_range_count} over-range samples, still "
                   f"over range: {still_over}, done cycle {rtl_done} (RTL = golden)")
        print(message)
        cocotb.log.info(message)
    assert not bench.binding.all_violations, bench.binding.all_violations


#: The cocotb tests of the test suite (tests/test_refine_cocotb.py).
SUITE_TESTS = ("program_matrix_then_refine", "solve_over_range_retries")


def main(argv: list[str] | None = None) -> None:
    """REFINE through the controller RTL on several problem seeds: the table of
    docs/refinement.md ("Through the controller")."""
    from anmf.hdl.controller import TOP_MODULE, verilog_text
    from anmf.hdl.params import BuildParams
    from anmf.testbench.simulators import BUILD_ROOT, SIMULATORS, run_bench

    parser = argparse.ArgumentParser(prog="python -m anmf.testbench.bench_refine",
                                     description="REFINE on the controller RTL (cocotb), 16 x 8, "
                                     "rram-3bit (deterministic), one row per problem seed.")
    parser.add_argument("--seeds", default="0-9", help="first-last problem seeds (default 0-9)")
    parser.add_argument("--passes", type=int, default=4)
    parser.add_argument("--sim", choices=SIMULATORS, default="verilator")
    args = parser.parse_args(argv)
    first, _, last = args.seeds.partition("-")
    seeds = list(range(int(first), int(last or first) + 1))
    report = BUILD_ROOT / "refine-study.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.unlink(missing_ok=True)
    started = time.perf_counter()
    run_bench(sim=args.sim, verilog=verilog_text(BuildParams(**DEFAULT_OPTIONS["params"])),
              toplevel=TOP_MODULE, test_module="anmf.testbench.bench_refine", name="scenarios",
              testcase="program_matrix_then_refine",
              extra_env=refine_env(seeds=seeds, passes=args.passes, assert_target=False,
                                   reentry_seeds=[], report=str(report)))
    if not report.exists():
        raise SystemExit(f"the bench wrote no figures ({report}); see its log in {report.parent}")
    rows = json.loads(report.read_text())
    passes = max(len(r["log2_eta"]) for r in rows)
    print("| seed | " + " | ".join(f"pass {i}" for i in range(passes)) +
          " | solves | done cycle | X = 0 in columns | re-entered (pass) | met |")
    print("|---" * (passes + 6) + "|")
    for r in rows:
        cells = [f"{v:.1f}" for v in r["log2_eta"]] + [""] * (passes - len(r["log2_eta"]))
        met = r["log2_eta"][-1] < TARGET_LOG2
        print(f"| {r['seed']} | " + " | ".join(cells) +
              f" | {r['passes_done']} | {r['done_cycle']} | "
              f"{', '.join(map(str, r['zero_columns'])) or '-'} | "
              f"{', '.join(f'{j} ({p})' for j, p in r['reentered'].items()) or '-'} | "
              f"{'yes' if met else 'no'} |")
    worst = [max(r["log2_eta"][i] for r in rows if len(r["log2_eta"]) > i) for i in range(passes)]
    print("worst log2(eta) per pass: " + ", ".join(f"{w:.1f}" for w in worst))
    print(f"({args.sim}, {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
