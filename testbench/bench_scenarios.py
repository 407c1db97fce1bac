"""cocotb scenarios of the whole chip: the host driver over AXI4-Lite (RegisterDriver on
``AxiLiteRegisterBus``, completion by the ``irq`` line), the controller RTL, and the AFE
model bound to its AFE port; scoreboards check every solve and every programmed cell.

Tests (SUITE_TESTS run by tests/test_scenarios_cocotb.py on Icarus and Verilator):

- ``single_solves_match_nnls``: well- and ill-conditioned problems, a row mask, rank below
  COLS (columns disabled, a spare column), averaging; cells placed through the model's oracle
  path; each solve against float NNLS (SolveScoreboard).
- ``write_verify_whole_matrix``: PROGRAM_MATRIX of a 16 x 4 matrix to random 3-bit levels;
  pulses and failures printed; each cell within tolerance or flagged (ProgramScoreboard).
- ``host_anls_synthetic``, ``host_anls_camera``: ``anmf.host.host_anls`` on the RTL (every
  solve and programming checked by the scoreboards); relative error against the float
  reference ANLS from the same initialization, both printed; the same host_anls on
  ModelDriver (a twin AFE) gives the same codes bit for bit, deterministic (synthetic) and
  with noise (camera).
- ``host_anls_matches_reference``: the same for the problem the options name (not in the
  suite: the entry point for throughput figures, e.g. ``scenario_env(anls={"problem":
  "camera", "size": 32})``).

Options come as JSON in the environment variable ``ANMF_SCENARIO`` (:func:`scenario_env`
builds it): ``params`` (BuildParams fields), ``afe`` (an AFE configuration dict: preset,
seed, sections), ``clock_hz``, ``deterministic``, ``seed`` (test data), and ``anls``:
``problem`` ("synthetic" or "camera"), ``size``, ``rank``, ``iters``, ``compare_model``,
``max_ratio`` (the accepted host/reference error ratio; None only reports), ``afe``
(overrides of the AFE configuration for this run, merged section by section),
``deterministic`` (noise off; default: the top-level option).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import time
from typing import Any

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import ClockCycles

from anmf.hdl.params import BuildParams
from anmf.hdl.registers import build_register_map
from anmf.hdl.regmap_export import host_constants
from anmf.host import AnalogScale, BusError, ModelDriver, RegisterDriver, Timing, host_anls
from anmf.model.afe import AnalogFrontEnd
from anmf.model.config import config_from_dict
from anmf.model.formats import PICOSECONDS_PER_SECOND
from anmf.model.nmf import anls, initialize
from anmf.testbench.afe_binding import AFEBinding
from anmf.testbench.axi_bus import AxiLiteRegisterBus, IrqLine
from anmf.testbench.scoreboard import CheckedDriver, ProgramScoreboard, SolveScoreboard

__all__ = ["ENV_VAR", "DEFAULT_OPTIONS", "ANLS_SUITE", "SUITE_TESTS", "scenario_env",
           "anls_problem"]

ENV_VAR = "ANMF_SCENARIO"
#: The small build and the AFE every scenario uses unless told otherwise.
DEFAULT_OPTIONS: dict[str, Any] = {
    # 32 rows hold a 32x32 problem; 8 columns hold W and H^T side by side at rank 4 (each
    # half-step reprograms cells that hold the same factor's previous iterate); two spares
    # (one per factor for the host's column repair).
    "params": {"rows": 32, "cols": 8, "spare": 2, "avg_max_log2": 2},
    # rram-3bit: device variation, stuck cells, pulse and read noise, offsets, gain errors,
    # INL/DNL, finite gain, compensation mismatch. A 200 ns conversion (a 60 MHz SAR clock)
    # instead of the preset's 1.2 us keeps the simulations short. IR drop is off: the
    # crossbar model's nodal solve leaves disabled rows floating with their cells connected,
    # which adds sneak paths (up to 10x a cell's conductance) to every solve with a row mask,
    # where a 1T1R array's word line isolates them (docs/host-driver.md, "Known limits");
    # on a full 32-row array the IR-drop effect is below 2 % per cell.
    "afe": {"preset": "rram-3bit", "seed": 11, "adc": {"conversion_time_s": 200e-9},
            "crossbar": {"ir_drop": False}},
    # 25 MHz: the analog timing is in seconds (the same at any clock); fewer cycles per
    # conversion, pulse and settle keep the event-driven simulators fast.
    "clock_hz": 25e6,
    # Noise on (ADC noise, read noise) unless a scenario asks for a deterministic AFE.
    "deterministic": False,
    "seed": 5,
    # The problem of host_anls_matches_reference (throughput figures): it reports the error
    # ratio and asserts it only when given a max_ratio.
    "anls": {"problem": "synthetic", "size": 16, "rank": 4, "iters": 5, "compare_model": True,
             "max_ratio": None},
}
#: The two ANLS problems of the test suite. The synthetic rank-4 matrix is exactly low rank:
#: the float reference keeps converging (0.021 after 5 iterations) below the analog error
#: floor (0.04-0.07 on rram-3bit), so the 10 % target is out of reach there (docs/
#: host-driver.md): it is reported, not asserted, and checked bit for bit against the model.
ANLS_SUITE: dict[str, dict[str, Any]] = {
    "synthetic": {"problem": "synthetic", "size": 16, "max_ratio": None, "compare_model": True,
                  "deterministic": True},
    # Noise on (ADC and read noise), as the chip runs.
    "camera": {"problem": "camera", "size": 32, "max_ratio": 1.10, "compare_model": True,
               "deterministic": False},
}


def scenario_env(**overrides: Any) -> dict[str, str]:
    """``extra_env`` for ``run_bench``: DEFAULT_OPTIONS with ``overrides`` (``anls`` is merged
    key by key)."""
    options = {**DEFAULT_OPTIONS, **overrides}
    options["anls"] = {**DEFAULT_OPTIONS["anls"], **overrides.get("anls", {})}
    return {ENV_VAR: json.dumps(options)}


def anls_problem(problem: str, size: int, rank: int, seed: int) -> np.ndarray:
    """The ANLS scenario's data: "synthetic" (a non-negative rank-``rank`` size x size
    product of uniform factors) or "camera" (scikit-image's camera, a size x size crop at
    rows/cols 200.., scaled to [0, 1])."""
    if problem == "synthetic":
        rng = np.random.default_rng(seed)
        return rng.uniform(0.0, 1.0, (size, rank)) @ rng.uniform(0.0, 1.0, (rank, size))
    if problem == "camera":
        from skimage import data
        return data.camera()[200:200 + size, 200:200 + size].astype(np.float64) / 255.0
    raise ValueError(f"unknown ANLS problem {problem!r}; accepted: synthetic, camera")


def _options() -> dict[str, Any]:
    return json.loads(os.environ[ENV_VAR]) if ENV_VAR in os.environ else DEFAULT_OPTIONS


def _merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides``, sections (dicts) merged key by key."""
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return merged


def _cycles(seconds: float, clock_hz: float) -> int:
    return max(1, math.ceil(seconds * clock_hz - 1e-9))


class ScenarioChip:
    """The build, the AFE model and the host's settings of a scenario (no simulator): what
    ScenarioBench binds to the DUT, and what the model-side sweep (``python -m
    anmf.testbench.bench_scenarios``) runs on ModelDriver."""

    def __init__(self, options: dict[str, Any], *, afe_overrides: dict[str, Any] | None = None,
                 deterministic: bool | None = None, afe_seed: int | None = None):
        self.options = options
        self.params = BuildParams(**options["params"])
        self.clock_hz = float(options["clock_hz"])
        self.afe_options = dict(clock_hz=self.clock_hz,
                                deterministic=options["deterministic"] if deterministic is None
                                else deterministic)
        afe_config = _merged(options["afe"], afe_overrides or {})
        if afe_seed is not None:
            afe_config["seed"] = afe_seed
        self.afe = AnalogFrontEnd.from_build_params(config_from_dict(afe_config), self.params,
                                                    **self.afe_options)
        self.scale = AnalogScale.from_afe(self.afe)
        config = self.afe.config
        # Settle times from the physics: the DAC's settling, the read chain to 1/2 LSB, 1 us
        # for the loop (a well-conditioned 32 x 8 solve settles in ~0.3 us).
        read_settle = _cycles(math.log(2.0 ** (self.params.adc_bits + 1))
                              * self.afe.read_settle_tau_s, self.clock_hz)
        self.timing = Timing(adc_samples=1,
                             dac_settle=_cycles(config.dac.settle_time_s, self.clock_hz) + 2,
                             analog_settle=_cycles(1e-6, self.clock_hz), watchdog=4000)
        self.programming = self.afe.program_settings(read_settle=read_settle)


class ScenarioBench(ScenarioChip):
    """Clock and reset, the AFE model bound to the DUT, the host driver over AXI4-Lite (and
    the same driver wrapped by the scoreboards)."""

    def __init__(self, dut: Any, *, afe_overrides: dict[str, Any] | None = None,
                 deterministic: bool | None = None):
        super().__init__(_options(), afe_overrides=afe_overrides, deterministic=deterministic)
        self.dut = dut
        self.binding = AFEBinding(dut, self.afe, self.params, clock=dut.clk)
        self.regs = host_constants(build_register_map(self.params))
        self.driver = RegisterDriver(AxiLiteRegisterBus(dut, dut.clk, dut.rst), self.regs,
                                     irq=IrqLine(dut.irq))
        self.solves = SolveScoreboard(self.afe.config, self.scale, self.driver.info)
        self.programs = ProgramScoreboard(self.afe.config, self.scale, self.driver.info)
        self.checked = CheckedDriver(self.driver, self.afe.crossbar.effective_conductance_s,
                                     solves=self.solves, programs=self.programs)
        self.rng = np.random.default_rng(self.options["seed"])

    async def start(self) -> None:
        dut = self.dut
        # The clock in the simulator (GPI), not a Python coroutine toggling it twice a cycle:
        # Python then runs only when the bus, the AFE binding or the driver has work.
        Clock(dut.clk, self.afe.period_ps, unit="ps", impl="gpi").start(start_high=False)
        dut.rst.value = 1
        await self.binding.start()
        await ClockCycles(dut.clk, 2)
        dut.rst.value = 0
        await ClockCycles(dut.clk, 2)
        info = await self.checked.identify()
        assert info.rows == self.params.rows, info
        await self.checked.configure(timing=self.timing, programming=self.programming)

    def now_s(self) -> float:
        return round(get_sim_time("ps")) / PICOSECONDS_PER_SECOND

    def assert_clean(self) -> None:
        assert not self.binding.all_violations, self.binding.all_violations
        assert not self.solves.failures, "\n".join(c.describe() for c in self.solves.failures)
        assert not self.programs.failures, [c.describe() for c in self.programs.failures]


# ---- single solves -------------------------------------------------------------------------

def _solve_cases(bench: ScenarioBench) -> list[dict[str, Any]]:
    """Matrices (units of g_unit, rows x total_cols; only the used cells matter), masks,
    the used physical columns and the solutions the right-hand sides are built from."""
    p, rng = bench.params, bench.rng
    a_max = bench.scale.a_max
    every_row = (1 << p.rows) - 1
    four = [0, 1, 2, 3]
    cases = []

    def case(name: str, a: np.ndarray, row_mask: int, cols: list[int], x_true: list[float],
             samples: int = 1) -> None:
        cases.append(dict(name=name, a=a, row_mask=row_mask, cols=cols,
                          x_true=np.array(x_true), samples=samples))

    def well() -> np.ndarray:
        return rng.uniform(0.5, a_max, (p.rows, p.total_cols))

    case("well-conditioned, all rows", well(), every_row, four, [0.3, 0.0, 0.5, 0.2])
    case("well-conditioned, averaging 4", well(), every_row, four, [0.1, 0.4, 0.0, 0.3],
         samples=4)
    half = sum(1 << int(r) for r in rng.choice(p.rows, p.rows // 2, replace=False))
    case("row mask (half the rows)", well(), half, four, [0.2, 0.2, 0.35, 0.0])
    case("rank 2 (columns 0 and 5)", well(), every_row, [0, 5], [0.4, 0.25])
    case("rank 3 with the spare column", well(), every_row, [1, 2, p.cols], [0.3, 0.0, 0.4])
    case(f"rank {p.cols} (every column)", well(), every_row, list(range(p.cols)),
         [0.1, 0.2, 0.0, 0.15, 0.1, 0.05, 0.2, 0.1])
    # Ill-conditioned (lambda_min ~ 1.5, condition number ~ 10^3): two nearly parallel columns,
    # taken where no cell is stuck (a stuck cell would break the near-parallelism).
    healthy = [c for c in range(p.cols) if not bench.afe.crossbar.stuck_mask[:, c].any()]
    ill = well()
    ill[:, healthy[1]] = np.clip(ill[:, healthy[0]] + rng.normal(0.0, 0.3, p.rows), 0.0, a_max)
    case("ill-conditioned (near-parallel columns)", ill, every_row, healthy[:4],
         [0.25, 0.2, 0.3, 0.1])
    return cases


@cocotb.test()
async def single_solves_match_nnls(dut) -> None:
    """Each solve within the SolveScoreboard's derived tolerance of float NNLS."""
    bench = ScenarioBench(dut)
    await bench.start()
    p, afe, scale = bench.params, bench.afe, bench.scale
    circuit = afe.config.circuit
    # The bus turns a refused access into BusError naming the address and the response.
    bus = bench.driver.bus
    for access, expected in ((bus.read(0x028), "AXI4-Lite read of 0x00028 answered SLVERR"),
                             (bus.write(bench.regs.RESULTS.address(0), 1),
                              "AXI4-Lite write of 0x00000001 to 0x00100 answered SLVERR")):
        try:
            await access
        except BusError as refused:
            assert str(refused) == expected, f"{refused} != {expected}"
        else:
            raise AssertionError(f"no BusError: expected {expected}")
    cases = _solve_cases(bench)
    for case in cases:
        afe.set_conductances(scale.conductance(case["a"]), bench.now_s())
        rows_on = np.array([(case["row_mask"] >> r) & 1 for r in range(p.rows)], dtype=bool)
        cols_on = np.zeros(p.total_cols, dtype=bool)
        cols_on[case["cols"]] = True
        held = (afe.crossbar.effective_conductance_s(rows_on, cols_on)
                - circuit.g_offset_s) / circuit.g_unit_s
        a_used = held[np.ix_(rows_on, cols_on)]
        # b = A x_true / gain, then a zero component pushed below 0 (its clamp is active).
        b = a_used @ case["x_true"] / circuit.input_gain
        zeros = np.flatnonzero(case["x_true"] == 0)
        if zeros.size:
            b -= 0.3 * a_used[:, zeros].sum(axis=1) / circuit.input_gain
        b = np.clip(b, 0.0, 0.9)
        rhs = np.full(p.rows, p.dac_zero_code, dtype=np.int64)
        rhs[rows_on] = scale.dac_codes(b, p.dac_bits)
        # Settle until the transient is within half an ADC LSB of its end (the circuit's
        # exact transient: an ill-conditioned pair settles slowly before a clamp catches it).
        solution = afe.circuit.solve(afe.crossbar.effective_conductance_s(rows_on, cols_on),
                                     afe.dac.voltage(rhs), rows_on, cols_on)
        half_lsb = (afe.config.adc.v_max_v - afe.config.adc.v_min_v) / 2 ** (p.adc_bits + 1)
        settle_s = float(solution.settle_time(half_lsb, absolute=True))
        timing = Timing(adc_samples=case["samples"], dac_settle=bench.timing.dac_settle,
                        analog_settle=min(_cycles(1.2 * settle_s, bench.clock_hz) + 4,
                                          2 ** p.timer_bits - 1),
                        watchdog=bench.timing.watchdog)
        await bench.checked.configure(timing=timing)
        col_enable = sum(1 << c for c in case["cols"])
        result = await bench.checked.solve(rhs, case["row_mask"], col_enable)
        check = bench.solves.checks[-1]
        cocotb.log.info("%-40s settle %5d cycles: %s; x = %s V, x* = %s V", case["name"],
                        timing.analog_settle, check.describe(),
                        np.round(check.x_measured_v, 3), np.round(check.x_reference_v, 3))
        assert not result.any_over_range, f"{case['name']}: over range {result}"
    bench.assert_clean()
    assert len(bench.solves.checks) == len(cases), "one scoreboard check per solve"


# ---- write-verify --------------------------------------------------------------------------

#: Rows and columns of the write-verify scenario's matrix (a factor's size at rank 4).
WRITE_VERIFY_SHAPE = (16, 4)


@cocotb.test()
async def write_verify_whole_matrix(dut) -> None:
    """PROGRAM_MATRIX of a 16 x 4 matrix to random 3-bit levels: pulses and failures
    reported, every cell within tolerance or flagged in the fault map. The testbench places
    the matrix where the model has the most stuck cells (if any) and gives one cell an
    unreachable target, so that the fault path runs."""
    bench = ScenarioBench(dut)
    await bench.start()
    afe, p = bench.afe, bench.params
    rows, cols = WRITE_VERIFY_SHAPE
    stuck = afe.crossbar.stuck_mask
    corners = [(r, c) for r in range(0, p.rows - rows + 1, rows)
               for c in range(0, p.total_cols - cols + 1)]
    first_row, first_col = max(corners, key=lambda rc: int(
        stuck[rc[0]:rc[0] + rows, rc[1]:rc[1] + cols].sum()))
    in_matrix = stuck[first_row:first_row + rows, first_col:first_col + cols]
    levels = afe.config.device.level_targets_s()
    targets = afe.conductance_code(levels[bench.rng.integers(0, levels.size, (rows, cols))])
    # One target below 0 S (under the mid code): no pulse reaches it, the cell must fail.
    unreachable = (first_row + 3, first_col + 2)
    targets[3, 2] = p.dac_zero_code - 100
    await bench.checked.write_targets(targets, first_row, first_col)
    before = await bench.checked.counters()
    started = time.perf_counter()
    row_mask = ((1 << rows) - 1) << first_row
    report = await bench.checked.program_matrix(row_mask, ((1 << cols) - 1) << first_col)
    after = await bench.checked.counters()
    check = bench.programs.checks[-1]
    failed = [(int(r), int(c)) for r, c in np.argwhere(report.fault_map)]
    message = (f"PROGRAM_MATRIX {rows}x{cols} at ({first_row}, {first_col}): {report.pulses} "
               f"pulses ({report.pulses / report.cells:.1f} per cell), {report.failed_cells} "
               f"failed cells {failed} ({int(in_matrix.sum())} stuck in the model: "
               f"{[(int(r) + first_row, int(c) + first_col) for r, c in np.argwhere(in_matrix)]}"
               f"); {check.describe()}; {time.perf_counter() - started:.1f} s wall")
    print(message)
    cocotb.log.info(message)
    assert after.pulses - before.pulses == report.pulses == len(bench.binding.pulses)
    assert after.failed_cells - before.failed_cells == report.failed_cells == len(failed)
    assert unreachable in failed, f"the unreachable target {unreachable} is not flagged"
    outside = report.fault_map.copy()
    outside[first_row:first_row + rows, first_col:first_col + cols] = False
    assert report.cells == rows * cols and not outside.any(), "fault bits outside the matrix"
    bench.assert_clean()


# ---- host-driven ANLS ----------------------------------------------------------------------

async def run_host_anls(dut: Any, problem: dict[str, Any]) -> None:
    """host_anls over AXI on the RTL for ``problem`` (DEFAULT_OPTIONS["anls"] keys): the
    relative error against the float reference ANLS from the same initialization (both
    printed; at most ``max_ratio`` times the reference unless it is None); with
    ``compare_model``, the same host_anls on ModelDriver (a twin AFE: same configuration and
    seed) gives the same codes bit for bit. That holds with noise on too: the AFE draws its
    noise in call order (conversions, reads, pulses), and the binding calls it in the order
    the golden model does."""
    o = {**DEFAULT_OPTIONS["anls"], **problem}
    bench = ScenarioBench(dut, afe_overrides=o.get("afe"), deterministic=o.get("deterministic"))
    twin = bench.afe.twin()   # power-up state, same seed: the model side's AFE
    await bench.start()
    R = anls_problem(o["problem"], o["size"], o["rank"], bench.options["seed"])
    W0, H0 = initialize(R, o["rank"], "nndsvda", 0)
    cycles_before = round(get_sim_time("ps")) // bench.afe.period_ps
    started = time.perf_counter()
    result = await host_anls(bench.checked, R, o["rank"], o["iters"], scale=bench.scale,
                             init=(W0, H0))
    wall = time.perf_counter() - started
    cycles = round(get_sim_time("ps")) // bench.afe.period_ps - cycles_before
    reference = anls(R, o["rank"], iters=o["iters"], init=(W0, H0))
    ratio = result.error / reference.error
    transactions = bench.driver.transactions
    worst = max(c.error_v / c.tolerance_v for c in bench.solves.checks if not c.over_range)
    message = (f"host ANLS {o['problem']} {R.shape[0]}x{R.shape[1]} k={o['rank']} "
               f"{o['iters']} iterations: relative error RTL {result.error:.5f}, float "
               f"reference {reference.error:.5f} (ratio {ratio:.3f}); {cycles} cycles "
               f"({cycles / bench.clock_hz * 1e3:.2f} ms at {bench.clock_hz / 1e6:.0f} MHz), "
               f"{transactions['read']} reads + {transactions['write']} writes, {wall:.1f} s "
               f"wall; stats {result.stats}; scoreboards: {len(bench.solves.checks)} solves "
               f"(worst error/tolerance {worst:.2f}), {len(bench.programs.checks)} "
               f"programmings, no failure")
    print(message)
    cocotb.log.info(message)
    bench.assert_clean()
    assert result.error < result.initial_error, \
        f"no progress: error {result.error:.5f} from {result.initial_error:.5f}"
    if o["max_ratio"] is not None:
        assert ratio <= o["max_ratio"], \
            f"RTL error {result.error:.5f} is {ratio:.3f} x the reference {reference.error:.5f}"
    if o["compare_model"]:
        model = ModelDriver(bench.params, twin)
        await model.configure(timing=bench.timing, programming=bench.programming)
        mirrored = await host_anls(model, R, o["rank"], o["iters"], scale=bench.scale,
                                   init=(W0, H0))
        assert len(mirrored.solve_codes) == len(result.solve_codes), \
            f"{len(mirrored.solve_codes)} model solves, {len(result.solve_codes)} on the RTL"
        for index, (rtl, mod) in enumerate(zip(result.solve_codes, mirrored.solve_codes)):
            assert np.array_equal(rtl, mod), f"solve {index}: RTL codes {rtl}, model {mod}"
        assert np.array_equal(result.W, mirrored.W) and np.array_equal(result.H, mirrored.H)
        assert [(r.pulses, r.failed_cells) for r in result.program_reports] == \
            [(r.pulses, r.failed_cells) for r in mirrored.program_reports]
        cocotb.log.info("ModelDriver: the same %d solve results and %d programming reports, "
                        "bit for bit", len(mirrored.solve_codes), len(mirrored.program_reports))


@cocotb.test()
async def host_anls_matches_reference(dut) -> None:
    """The ANLS problem of ``ANMF_SCENARIO``'s ``anls`` options (default: synthetic 16x16):
    the entry point for throughput figures."""
    await run_host_anls(dut, _options().get("anls", {}))


@cocotb.test()
async def host_anls_synthetic(dut) -> None:
    """ANLS_SUITE["synthetic"] (deterministic AFE): reported, and bit for bit against
    ModelDriver."""
    await run_host_anls(dut, ANLS_SUITE["synthetic"])


@cocotb.test()
async def host_anls_camera(dut) -> None:
    """ANLS_SUITE["camera"] (noise on): within 10 % of the float reference, and bit for bit
    against ModelDriver with the same noise seed."""
    await run_host_anls(dut, ANLS_SUITE["camera"])


#: The cocotb tests of the test suite (tests/test_scenarios_cocotb.py).
SUITE_TESTS = ("single_solves_match_nnls", "write_verify_whole_matrix", "host_anls_synthetic",
               "host_anls_camera")


# ---- model-side sweep over AFE seeds ------------------------------------------------------

def model_sweep(problem: dict[str, Any], seeds: list[int], *,
                deterministic: bool | None = None) -> list[dict[str, float]]:
    """``host_anls`` on ModelDriver with the scenarios' build, AFE and settings, one run per
    AFE seed: the spread behind the single seed the RTL scenario runs."""
    o = {**DEFAULT_OPTIONS["anls"], **problem}
    R = anls_problem(o["problem"], o["size"], o["rank"], DEFAULT_OPTIONS["seed"])
    W0, H0 = initialize(R, o["rank"], "nndsvda", 0)
    reference = anls(R, o["rank"], iters=o["iters"], init=(W0, H0))
    rows = []
    for seed in seeds:
        chip = ScenarioChip(DEFAULT_OPTIONS, afe_overrides=o.get("afe"), afe_seed=seed,
                            deterministic=o.get("deterministic") if deterministic is None
                            else deterministic)
        driver = ModelDriver(chip.params, chip.afe)

        async def run() -> Any:
            await driver.configure(timing=chip.timing, programming=chip.programming)
            return await host_anls(driver, R, o["rank"], o["iters"], scale=chip.scale,
                                   init=(W0, H0))
        result = asyncio.run(run())
        rows.append({"seed": seed, "error": result.error, "reference": reference.error,
                     "ratio": result.error / reference.error, "pulses": result.stats["pulses"],
                     "failed_cells": result.stats["failed_cells"]})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m anmf.testbench.bench_scenarios",
        description="Model-side sweep of the ANLS scenarios over AFE seeds (ModelDriver).")
    parser.add_argument("--seeds", default="11-15", help="first-last AFE seeds (default 11-15)")
    parser.add_argument("--problem", choices=sorted(ANLS_SUITE), action="append",
                        help="problem(s) of ANLS_SUITE (default: all)")
    args = parser.parse_args(argv)
    first, _, last = args.seeds.partition("-")
    seeds = list(range(int(first), int(last or first) + 1))
    for name in args.problem or sorted(ANLS_SUITE):
        print(f"{name}: seed  host error  reference  ratio  pulses  failed cells")
        for row in model_sweep(ANLS_SUITE[name], seeds):
            print(f"{'':{len(name)}}  {row['seed']:>4}  {row['error']:>10.5f}  "
                  f"{row['reference']:>9.5f}  {row['ratio']:>5.3f}  {row['pulses']:>6.0f}  "
                  f"{row['failed_cells']:>12.0f}")


if __name__ == "__main__":
    main()
