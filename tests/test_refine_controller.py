"""REFINE and the over-range retry of host solves through the controller (AXI4-Lite host, the
code-level rram-3bit AFE model behind the AFE port, amaranth.sim): PROGRAM_MATRIX fills
REFINE_A with the verify readings, REFINE's X, status, RESULTS and done cycle equal the golden
model's bit for bit and cycle for cycle and meet the 2^-12 residual target; a SOLVE_FREE that
goes over range retries with halved inputs like the golden model; refusals; a build without
REFINE."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from amaranth.hdl import Value
from amaranth.sim import Simulator

import test_controller as tc   # the controller bench and its helpers (module import: no test collected)
from anmf.hdl.codes import ErrorCode, Opcode
from anmf.hdl.controller import Controller
from anmf.hdl.params import BuildParams
from anmf.hdl.registers import build_register_map
from anmf.hdl.regmap_export import host_constants
from anmf.model.afe import AnalogFrontEnd, Mode
from anmf.model.formats import PICOSECONDS_PER_SECOND, unpack_result
from anmf.model.golden import Error, GoldenController
from anmf.model.refinement import correction_gain, relative_residual
from model_afe import ModelAFE
from test_refiner import PARAMS, exact, model_afe, rhs_words, well_conditioned_levels

TIMING = {"WATCHDOG": 400, "DAC_SETTLE": 3, "ANALOG_SETTLE": 60, "READ_SETTLE": 4, "TIMING": 1}


class ModelBench(tc.Bench):
    """test_controller's bench with the AFE model instead of the stand-in; probes the blocks'
    start strobes (the golden model's start cycles)."""

    def __init__(self, model: AnalogFrontEnd, params: BuildParams = PARAMS) -> None:
        self.params, self.standin = params, {}
        self.dut = Controller(params)
        self.regs = host_constants(build_register_map(params))
        self.afe = ModelAFE(model, self.dut.afe, params, probes={
            "prog": self.dut.programmer.start, "seq": self.dut.sequencer.start,
            "refine": self.dut.refiner.start}, strict=True)
        self.trace = []
        self.sim = Simulator(self.dut)
        self.sim.add_clock(model.period_ps / PICOSECONDS_PER_SECOND)
        self.sim.add_process(self.afe.process)
        self.sim.add_process(self._monitor)

    def start_s(self, block: str, index: int = -1) -> float:
        return self.afe.time_s(self.afe.seen[block][index])

    async def wait_done(self, ctx) -> dict[str, int]:
        while True:
            status = await self.read(ctx, "STATUS")
            if status["done"] and not status["busy"]:
                return status


def test_program_matrix_then_refine_equals_the_golden_model_and_meets_the_residual_target():
    afe = model_afe(seed=2)
    golden = GoldenController(PARAMS, afe.twin())
    bench = ModelBench(afe)
    regs = bench.regs
    circuit = afe.config.circuit
    levels = well_conditioned_levels(np.random.default_rng(2))
    targets = afe.conductance_code(circuit.g_offset_s + circuit.g_unit_s * levels)
    settings = afe.program_settings(read_settle=TIMING["READ_SETTLE"])
    a_offset = int(afe.conductance_code(circuit.g_offset_s))
    gain, gain_shift = correction_gain(afe)
    rng = np.random.default_rng(7)
    x_true = rng.uniform(0.1, 1.0, PARAMS.cols)
    passes = 4
    seen: dict[str, Any] = {}

    async def testbench(ctx):
        await bench.setup(ctx, **TIMING, PROGRAM_TOLERANCE=settings.tolerance,
                          PROGRAM_PULSE=settings.pulse_width, PROGRAM_PULSES=settings.pulse_budget,
                          PROGRAM_AMPLITUDE=regs.PROGRAM_AMPLITUDE.pack(start=settings.amp_start,
                                                                        step=settings.amp_step),
                          PROGRAM_AMPLITUDE_MAX=settings.amp_max)
        await bench.write_words(ctx, "TARGET", targets.ravel())
        await bench.write_words(ctx, "RHS", [600] * PARAMS.rows)
        await bench.start(ctx, Opcode.PROGRAM_MATRIX)
        seen["program"] = await bench.wait_done(ctx)
        seen["a"] = await bench.read_words(ctx, "REFINE_A")
        a_read = np.array(seen["a"]).reshape(PARAMS.rows, PARAMS.cols) - a_offset
        seen["b"] = rhs_words(a_read, x_true)
        await bench.write_words(ctx, "REFINE_B", [int(w) & 0xFFFF_FFFF for w in seen["b"]])
        await bench.write(ctx, "REFINE_CONTROL", passes=passes, headroom=2, a_offset=a_offset)
        await bench.write(ctx, "REFINE_GAIN", gain=gain, shift=gain_shift)
        seen["start"] = await bench.start(ctx, Opcode.REFINE)
        seen["status"] = await bench.wait_done(ctx)
        for name in ("REFINE_X", "RESULTS", "RHS"):
            seen[name] = await bench.read_words(ctx, name)
        seen["REFINE_STATUS"] = await bench.read(ctx, "REFINE_STATUS")
        seen["SOLVE_COUNT"] = await bench.read(ctx, "SOLVE_COUNT")

    bench.run(testbench)
    assert seen["program"]["error"] == ErrorCode.NONE.value, seen["program"]
    golden.load_targets(targets)
    programmed = golden.program_matrix(settings, row_mask=2 ** PARAMS.rows - 1,
                                       col_mask=2 ** PARAMS.cols - 1,
                                       watchdog_limit=TIMING["WATCHDOG"],
                                       start_s=bench.start_s("prog"))
    assert programmed.error == Error.NONE
    assert seen["a"] == [int(c) for c in golden.refine_a.ravel()], "REFINE_A = the verify readings"
    assert seen["a"] == [c.read_code for c in programmed.cells]

    golden.refine_b[:] = seen["b"]
    expected = golden.refine(passes=passes, a_offset=a_offset, gain=gain, gain_shift=gain_shift,
                             headroom=2, row_mask=2 ** PARAMS.rows - 1,
                             col_mask=2 ** PARAMS.cols - 1, avg_log2=0,
                             dac_settle=TIMING["DAC_SETTLE"], analog_settle=TIMING["ANALOG_SETTLE"],
                             watchdog_limit=TIMING["WATCHDOG"], start_s=bench.start_s("refine"))
    assert bench.afe.seen["refine"] == [seen["start"]], "REFINE started in its strobe cycle"
    assert seen["status"] == tc.status_word(ErrorCode.NONE)
    assert expected.error == Error.NONE and expected.passes_done == passes + 1
    assert seen["REFINE_X"] == [int(v) for v in golden.refine_x]
    assert seen["REFINE_STATUS"] == {"passes_done": expected.passes_done,
                                     "residual_msb": max(expected.peaks[-1], 0),
                                     "over_range": int(expected.over_range)}
    assert seen["RESULTS"] == [int(w) for w in golden.results]
    assert bench.status_cycles(seen["start"]) == expected.done_cycle + tc.STATUS_DELAY
    assert seen["RHS"] == [600] * PARAMS.rows, "REFINE leaves the host's RHS buffer alone"
    assert seen["SOLVE_COUNT"]["count"] == passes + 1
    a_read = np.array(seen["a"], dtype=np.float64).reshape(PARAMS.rows, PARAMS.cols) - a_offset
    eta = relative_residual(a_read, seen["b"].astype(np.float64), np.array(seen["REFINE_X"]))
    assert eta < 2.0 ** -12, f"relative residual {eta:.2e} not below 2^-12 after {passes} passes"


def place_low_levels(afe: AnalogFrontEnd, golden: GoldenController) -> None:
    """Both AFEs' cells at the two lowest levels above the offset (large solutions)."""
    levels = afe.config.device.level_targets_s()
    g = levels[np.random.default_rng(1).integers(1, 3, (PARAMS.rows, PARAMS.total_cols))]
    afe.set_conductances(g, 0.0)
    golden.afe.set_conductances(g, 0.0)


#: (RHS amplitude, SOLVE_RETRIES, retries expected, last results still over range)
RETRY_CASES = {"resolved": (300, 4, 2, False), "runs-out": (300, 1, 1, True), "off": (300, 0, 0, True)}


@pytest.mark.parametrize("name", RETRY_CASES)
def test_over_range_solve_retries_with_halved_inputs_like_the_golden_model(name):
    amplitude, limit, retries, still_over = RETRY_CASES[name]
    afe = model_afe(seed=3)
    golden = GoldenController(PARAMS, afe.twin())
    place_low_levels(afe, golden)
    rng = np.random.default_rng(3)
    rhs = np.clip(512 + (amplitude * rng.uniform(-0.2, 1, PARAMS.rows)).astype(np.int64), 0, 1023)
    bench = ModelBench(afe)
    seen: dict[str, Any] = {}

    async def testbench(ctx):
        await bench.setup(ctx, **TIMING, SOLVE_RETRIES=limit)
        await bench.write_words(ctx, "RHS", rhs)
        seen["start"] = await bench.start(ctx, Opcode.SOLVE_FREE)
        seen["status"] = await bench.wait_done(ctx)
        seen["RESULTS"] = await bench.read_words(ctx, "RESULTS")
        for name in ("SOLVE_EXPONENT", "RANGE_RETRY_COUNT", "OVER_RANGE_COUNT", "SOLVE_COUNT"):
            seen[name] = await bench.read(ctx, name)
        seen["RHS"] = await bench.read_words(ctx, "RHS")

    bench.run(testbench)
    golden.load_rhs(rhs)
    expected = golden.solve_with_retries(Mode.SOLVE_FREE, retries=limit, row_mask=2 ** PARAMS.rows - 1,
                                         col_mask=2 ** PARAMS.cols - 1, avg_log2=0,
                                         dac_settle=TIMING["DAC_SETTLE"],
                                         analog_settle=TIMING["ANALOG_SETTLE"],
                                         watchdog_limit=TIMING["WATCHDOG"], start_s=bench.start_s("seq", 0))
    assert (expected.exponent, expected.retries) == (retries, retries)
    assert any(unpack_result(w, PARAMS.adc_bits)[1] for w in expected.words.values()) == still_over
    assert seen["status"] == tc.status_word(ErrorCode.NONE), "out of retries still ends with NONE"
    assert len(bench.afe.seen["seq"]) == retries + 1, "one solve per retry, back to back"
    assert seen["RESULTS"] == [expected.words[c] for c in range(PARAMS.cols)]
    assert seen["SOLVE_EXPONENT"] == {"exponent": retries}
    assert seen["RANGE_RETRY_COUNT"] == {"count": retries}
    assert seen["OVER_RANGE_COUNT"] == {"count": expected.over_range_count}
    assert seen["SOLVE_COUNT"] == {"count": retries + 1}
    assert bench.status_cycles(seen["start"]) == expected.done_cycle + tc.STATUS_DELAY
    assert seen["RHS"] == [int(c) for c in rhs], "the retry scales on the way to the DACs only"


REFINE_REFUSALS = {
    "rows": ({"ROW_MASK": 0}, ErrorCode.BAD_DIMENSION, "ROW_MASK"),
    "only-spares": ({"COL_ENABLE": 0b110000}, ErrorCode.BAD_DIMENSION, "COL_ENABLE"),
    "averaging": ({"TIMING": 3}, ErrorCode.BAD_AVERAGING, "TIMING"),
    "analog-settle": ({"ANALOG_SETTLE": 0}, ErrorCode.BAD_TIMING, "ANALOG_SETTLE"),
}


@pytest.mark.parametrize("name", REFINE_REFUSALS)
def test_refused_refine_reports_the_register_and_starts_nothing(name):
    values, error, register = REFINE_REFUSALS[name]
    bench = tc.Bench()
    seen: dict[str, Any] = {}

    async def testbench(ctx):
        await bench.setup(ctx, **values)
        await bench.start(ctx, Opcode.REFINE)
        seen["status"] = await bench.read(ctx, "STATUS")
        seen["refine_status"] = await bench.read(ctx, "REFINE_STATUS")

    bench.run(testbench)
    assert seen["status"] == tc.status_word(error, getattr(bench.regs, register).offset)
    assert seen["refine_status"] == {"passes_done": 0, "residual_msb": 0, "over_range": 0}
    assert not any(c.mode for c in bench.trace), "nothing reached the AFE"


def test_a_build_without_refinement_refuses_refine_and_has_no_refine_registers():
    params = BuildParams(rows=16, cols=4, refinement=False)
    names = {entry.name for entry in build_register_map(params)}
    assert not {n for n in names if n.startswith("REFINE_")}
    assert {"SOLVE_RETRIES", "SOLVE_EXPONENT", "RANGE_RETRY_COUNT"} <= names
    bench = tc.Bench(params=params)
    assert bench.dut.refiner is None
    seen: dict[str, Any] = {}

    async def testbench(ctx):
        await bench.setup(ctx)
        await bench.start(ctx, Opcode.REFINE)
        seen["status"] = await bench.read(ctx, "STATUS")

    bench.run(testbench)
    assert seen["status"] == tc.status_word(ErrorCode.UNKNOWN_OPCODE, Opcode.REFINE.value)


def test_refinement_flag_is_validated_and_refine_needs_a_small_enough_a_window():
    with pytest.raises(ValueError, match=exact("refinement must be True or False (or 1 or 0), got 2")):
        BuildParams(refinement=2)
    with pytest.raises(ValueError, match=exact(
            "rows * cols must be at most 4096 for the REFINE_A window, not 1024 * 8 = 8192 (or build "
            "without refinement)")):
        build_register_map(BuildParams(rows=1024, cols=8, run_nmf=False))
    assert build_register_map(BuildParams(rows=1024, cols=8, run_nmf=False,
                                          refinement=False))["RESULTS"].offset == 0x100


#: Where the abort strobe lands, relative to the first run's done cycle d: (cycle offset,
#: solve runs started, STATUS.error, SOLVE_EXPONENT, RANGE_RETRY_COUNT).
ABORT_AT_RETRY = {
    # In the done cycle: the run ends normally (the sequencer ignores an abort in its done
    # cycle) and the retry is not decided: its clipped results stand.
    "done-cycle": (0, 1, ErrorCode.NONE, 0, 0),
    # In the cycle the retry would start: it is not started, the solve ends ABORTED. The
    # exponent and the retry count changed in the done cycle (the decision), before the abort.
    "retry-start": (1, 1, ErrorCode.ABORTED, 1, 1),
    # In the retry's first cycle: the retry runs its safe exit and ends ABORTED.
    "retry-running": (2, 2, ErrorCode.ABORTED, 1, 1),
}


@pytest.mark.parametrize("name", ABORT_AT_RETRY)
def test_abort_in_the_cycle_a_retry_would_start_ends_aborted_without_starting_it(name):
    offset, runs, error, exponent, retries = ABORT_AT_RETRY[name]
    afe = model_afe(seed=3)
    golden = GoldenController(PARAMS, afe.twin())
    place_low_levels(afe, golden)
    rng = np.random.default_rng(3)
    rhs = np.clip(512 + (300 * rng.uniform(-0.2, 1, PARAMS.rows)).astype(np.int64), 0, 1023)
    golden.load_rhs(rhs)
    first_run = golden.solve(Mode.SOLVE_FREE, row_mask=2 ** PARAMS.rows - 1,
                             col_mask=2 ** PARAMS.cols - 1, avg_log2=0,
                             dac_settle=TIMING["DAC_SETTLE"], analog_settle=TIMING["ANALOG_SETTLE"],
                             watchdog_limit=TIMING["WATCHDOG"])
    assert first_run.over_range_count > 0, "the first run must go over range (a retry follows)"
    bench = ModelBench(afe)
    seen: dict[str, Any] = {}

    async def testbench(ctx):
        await bench.setup(ctx, **TIMING, SOLVE_RETRIES=4)
        await bench.write_words(ctx, "RHS", rhs)
        # The bus's latency from a write's call to its strobe (an abort while idle does nothing).
        called = bench.cycle
        await bench.write(ctx, "CONTROL", abort=1)
        latency = bench.strobes("abort")[-1] - called
        seen["start"] = await bench.start(ctx, Opcode.SOLVE_FREE)
        seen["target"] = seen["start"] + first_run.done_cycle + offset
        while bench.cycle < seen["target"] - latency:
            await ctx.tick()
        await bench.write(ctx, "CONTROL", abort=1)
        seen["abort"] = bench.strobes("abort")[-1]
        seen["status"] = await bench.wait_done(ctx)
        for register in ("SOLVE_EXPONENT", "RANGE_RETRY_COUNT", "SOLVE_COUNT", "STATUS"):
            seen[register] = await bench.read(ctx, register)
        seen["RESULTS"] = await bench.read_words(ctx, "RESULTS")
        seen["afe"] = {name: ctx.get(Value.cast(getattr(bench.dut.afe, name)))
                       for name in ("mode", "loop", "row_en", "col_en", "adc_start", "prog_fire")}

    bench.run(testbench)
    assert seen["abort"] == seen["target"], "the abort strobe missed the cycle under test"
    assert len(bench.afe.seen["seq"]) == runs, f"solve runs started: {bench.afe.seen['seq']}"
    assert seen["status"] == tc.status_word(error)
    assert seen["SOLVE_EXPONENT"] == {"exponent": exponent}
    assert seen["RANGE_RETRY_COUNT"] == {"count": retries}
    assert seen["SOLVE_COUNT"] == {"count": 1}, "only the first run completed"
    if runs == 1:
        # Nothing ran after the first run: RESULTS are its words, STATUS came one cycle after
        # the abort (retry-start) or after its done.
        assert seen["RESULTS"] == [first_run.words[c] for c in range(PARAMS.cols)]
        assert bench.status_cycles(seen["start"]) == first_run.done_cycle + offset + tc.STATUS_DELAY
    assert all(value == 0 for value in seen["afe"].values()), f"AFE not idle: {seen['afe']}"
