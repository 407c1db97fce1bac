"""CALIBRATE through the controller (amaranth.sim, AXI4-Lite, the code-level AFE model behind
the AFE port): the coefficients read over the bus, CAL_QUALITY, CAL_FAILED and STATUS equal the
golden model's bit for bit and cycle for cycle; the corrected SOLVE, SOLVE_FREE and MVM results
equal the golden's, and with 5 % FS ADC and DAC offset and gain errors they are closer to the
fault-free AFE's results than the uncorrected ones; the refusals of CALIBRATE; a build without
calibration."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from amaranth.hdl import Value
from amaranth.sim import Simulator

from anmf.hdl.axi4lite import Response
from anmf.hdl.codes import ErrorCode, Opcode
from anmf.hdl.controller import REFUSAL_STATUS_DELAY, STATUS_DELAY, Controller
from anmf.hdl.params import BuildParams
from anmf.hdl.registers import build_register_map
from anmf.hdl.regmap_export import host_constants
from anmf.hdl.solve_sequencer import solve_cycles
from anmf.model import calibration as cal
from anmf.model.afe import AnalogFrontEnd, Mode
from anmf.model.config import preset
from anmf.model.golden import CalEnable, Error, GoldenController
from anmf.testbench.calibration_afe import calibration_afe
from axi_host import AxiLiteHost
from model_afe import ModelAFE

PARAMS = BuildParams(rows=4, cols=2, spare=1, avg_max_log2=2)
ALL_ROWS, ALL_COLS = 0b1111, 0b111
SETUP = {"TIMING": 4, "WATCHDOG": 300, "DAC_SETTLE": 50, "ANALOG_SETTLE": 40, "CAL_SETTLE": 2,
         "COL_ENABLE": ALL_COLS}
RHS = [600, 700, 450, 800]
SOLVE_ARGS = dict(row_mask=ALL_ROWS, col_mask=ALL_COLS, avg_log2=2, dac_settle=50, analog_settle=40,
                  watchdog_limit=300)


def model_afe(*, faulty: bool) -> AnalogFrontEnd:
    """The CALIBRATE benches' AFE (anmf.testbench.calibration_afe) for PARAMS."""
    return calibration_afe(PARAMS, faulty=faulty)


class Bench:
    """Controller + AFE model on its AFE port + a start-strobe monitor; the host uses the bus."""

    def __init__(self, params: BuildParams = PARAMS, afe: AnalogFrontEnd | None = None) -> None:
        self.params = params
        self.dut = Controller(params)
        self.regs = host_constants(build_register_map(params))
        self.model = ModelAFE(afe if afe is not None else model_afe(faulty=True), self.dut.afe, params)
        self.cycle = 0
        self.starts: list[int] = []
        self.sim = Simulator(self.dut)
        self.sim.add_clock(1e-8)
        self.sim.add_process(self.model.process)
        self.sim.add_process(self._monitor)

    async def _monitor(self, ctx) -> None:
        async for _clk, _rst, start in ctx.tick().sample(self.dut.registers.control.start):
            if start:
                self.starts.append(self.cycle)
            self.cycle += 1

    def run(self, testbench) -> None:
        self.sim.add_testbench(testbench)
        self.sim.run()

    async def write(self, ctx, name: str, value: int | None = None, **fields: int) -> Response:
        reg = getattr(self.regs, name)
        return await AxiLiteHost(ctx, self.dut.axil).write(reg.offset, reg.pack(**fields) if value is None
                                                           else value)

    async def read(self, ctx, name: str) -> dict[str, int]:
        reg = getattr(self.regs, name)
        word, resp = await AxiLiteHost(ctx, self.dut.axil).read(reg.offset)
        assert resp == Response.OKAY, f"read {name} answered {resp}"
        return reg.unpack(word)

    async def read_words(self, ctx, window: str) -> list[int]:
        info = getattr(self.regs, window)
        words = []
        for index in range(info.depth):
            word, resp = await AxiLiteHost(ctx, self.dut.axil).read(info.address(index))
            assert resp == Response.OKAY, f"read {window}[{index}] answered {resp}"
            words.append(word)
        return words

    async def setup(self, ctx, **values: int) -> None:
        for name, value in (SETUP | values).items():
            assert await self.write(ctx, name, value) == Response.OKAY, f"write {name}"

    async def command(self, ctx, opcode: Opcode) -> tuple[dict[str, int], int, int]:
        """Run one command: (STATUS, start-strobe cycle, cycles from the strobe to STATUS done)."""
        await self.write(ctx, "COMMAND", opcode=opcode.value)
        await self.write(ctx, "CONTROL", start=1)
        start = self.starts[-1]
        done_at = None
        while done_at is None:
            if ctx.get(self.dut.registers.status.done) and not ctx.get(self.dut.registers.status.busy):
                done_at = self.cycle
            else:
                await ctx.tick()
        return await self.read(ctx, "STATUS"), start, done_at - start


def result_codes(words) -> list[tuple[int, int]]:
    return [(w & 0x3FF, w >> 10 & 1) for w in words]


def test_calibrate_then_solves_equal_the_golden_model_and_correct_5_percent_errors():
    bench = Bench()
    golden = GoldenController(PARAMS, model_afe(faulty=True))
    golden.load_rhs(RHS)
    seen: dict[str, Any] = {}

    async def testbench(ctx):
        await bench.setup(ctx)
        for row, code in enumerate(RHS):
            resp = await AxiLiteHost(ctx, bench.dut.axil).write(bench.regs.RHS.address(row), code)
            assert resp == Response.OKAY
        assert await bench.read_words(ctx, "CAL_COEFF") == [int(w) for w in golden.cal_words], \
            "CAL_COEFF's reset contents are not the identity words"
        status, start, cycles = await bench.command(ctx, Opcode.CALIBRATE)
        outcome = golden.calibrate(col_mask=ALL_COLS, row_mask=ALL_ROWS, avg_log2=2, cal_settle=2,
                                   dac_settle=50, analog_settle=40, watchdog_limit=300, start_s=start * 1e-8)
        seen["calibrate"] = outcome
        assert (status["error"], status["error_detail"]) == (outcome.error.value, outcome.failed_count)
        assert cycles == outcome.done_cycle + STATUS_DELAY, (cycles, outcome.done_cycle)
        assert await bench.read_words(ctx, "CAL_COEFF") == [int(w) for w in golden.cal_words]
        assert (await bench.read(ctx, "CAL_QUALITY"))["residual"] == outcome.quality
        assert (await bench.read(ctx, "CAL_FAILED"))["count"] == outcome.failed_count
        for label, opcode, mode, enable in (
                ("free", Opcode.SOLVE_FREE, Mode.SOLVE_FREE, CalEnable()),
                ("mvm", Opcode.MVM, Mode.MVM, CalEnable()),
                ("solve", Opcode.SOLVE, Mode.SOLVE, CalEnable()),
                ("opamp", Opcode.SOLVE_FREE, Mode.SOLVE_FREE, CalEnable(opamp=True)),
                ("raw", Opcode.SOLVE_FREE, Mode.SOLVE_FREE, CalEnable(adc=False, dac=False))):
            await bench.write(ctx, "CAL_CONTROL", adc=int(enable.adc), dac=int(enable.dac),
                              opamp=int(enable.opamp))
            status, start, cycles = await bench.command(ctx, opcode)
            golden.cal_enable = enable
            expected = golden.solve(mode, **SOLVE_ARGS, start_s=start * 1e-8)
            assert status["error"] == ErrorCode.NONE.value
            assert cycles == expected.done_cycle + STATUS_DELAY == solve_cycles(
                rows=4, cols=3, avg_log2=2, dac_settle=50, analog_settle=40,
                adc_cycles=golden.afe.adc_cycles) + STATUS_DELAY, f"{label}: {cycles} cycles"
            results = await bench.read_words(ctx, "RESULTS")
            assert results == [expected.words[c] for c in range(3)], (label, results, expected.words)
            seen[label] = result_codes(results)
        # One sample per result, the columns' words back to back (docs/synthesis.md E22: stage 1's
        # registered ADC word of each column).
        await bench.write(ctx, "CAL_CONTROL", adc=1, dac=1, opamp=1)
        await bench.write(ctx, "TIMING", adc_samples=1)
        status, start, cycles = await bench.command(ctx, Opcode.SOLVE_FREE)
        golden.cal_enable = CalEnable(opamp=True)
        expected = golden.solve(Mode.SOLVE_FREE, **(SOLVE_ARGS | {"avg_log2": 0}), start_s=start * 1e-8)
        assert status["error"] == ErrorCode.NONE.value and cycles == expected.done_cycle + STATUS_DELAY
        assert await bench.read_words(ctx, "RESULTS") == [expected.words[c] for c in range(3)]

    bench.run(testbench)
    assert seen["calibrate"].error == Error.NONE and seen["calibrate"].quality < 16

    # The fault-free AFE, uncorrected (identity words), at the same times: what the corrections aim at.
    ideal = GoldenController(PARAMS, model_afe(faulty=False))
    ideal.load_rhs(RHS)
    reference = [ideal.solve(Mode.SOLVE_FREE, **SOLVE_ARGS).words[c] & 0x3FF for c in range(3)]
    corrected = [code for code, _ in seen["free"]]
    raw = [code for code, _ in seen["raw"]]
    error_corrected = max(abs(a - b) for a, b in zip(corrected, reference))
    error_raw = max(abs(a - b) for a, b in zip(raw, reference))
    assert error_corrected <= 3 < 10 < error_raw, (reference, corrected, raw)
    assert seen["opamp"] != seen["free"], "the op-amp subtract changed nothing"


@pytest.mark.parametrize("register, value, error, detail", [
    ("COL_ENABLE", 0, ErrorCode.BAD_DIMENSION, 0x01C),
    ("TIMING", 3, ErrorCode.BAD_AVERAGING, 0x030),
    ("WATCHDOG", 0, ErrorCode.BAD_TIMING, 0x03C),
    ("DAC_SETTLE", 0, ErrorCode.BAD_TIMING, 0x034),
    ("ANALOG_SETTLE", 0, ErrorCode.BAD_TIMING, 0x038),
    ("CAL_SETTLE", 0, ErrorCode.BAD_TIMING, 0x090),
])
def test_calibrate_refusals_report_the_register_and_leave_the_coefficients(register, value, error, detail):
    bench = Bench()

    async def testbench(ctx):
        await bench.setup(ctx, **{register: value})
        before = await bench.read_words(ctx, "CAL_COEFF")
        status, _, cycles = await bench.command(ctx, Opcode.CALIBRATE)
        assert (status["error"], status["error_detail"], cycles) == (error.value, detail, 1 + REFUSAL_STATUS_DELAY)
        assert await bench.read_words(ctx, "CAL_COEFF") == before
        assert bench.model.conversions == [], "a refused CALIBRATE touched the AFE"

    bench.run(testbench)


def test_abort_during_calibrate_exits_safely_and_keeps_stored_words():
    bench = Bench()

    async def testbench(ctx):
        await bench.setup(ctx)
        await bench.write(ctx, "COMMAND", opcode=Opcode.CALIBRATE.value)
        await bench.write(ctx, "CONTROL", start=1)
        await ctx.tick().repeat(150)   # channel 1's ADC points (a channel takes 137 cycles here)
        await bench.write(ctx, "CONTROL", abort=1)
        while ctx.get(bench.dut.registers.status.busy):
            await ctx.tick()
        status = await bench.read(ctx, "STATUS")
        assert (status["done"], status["error"]) == (1, ErrorCode.ABORTED.value)
        words = await bench.read_words(ctx, "CAL_COEFF")
        identity = cal.pack_coefficient(cal.IDENTITY, adc_bits=10, dac_bits=10)
        assert words[0] != identity, "channel 0's word (stored before the abort) was lost"
        assert words[1:] == [identity] * (len(words) - 1), "words stored after the abort"
        assert ctx.get(Value.cast(bench.dut.afe.mode)) == 0 and not ctx.get(bench.dut.afe.loop)

    bench.run(testbench)


def test_a_build_without_calibration_refuses_calibrate_and_unmaps_its_registers():
    params = BuildParams(rows=4, cols=2, spare=1, avg_max_log2=2, calibration=False)
    bench = Bench(params, AnalogFrontEnd.from_build_params(preset("rram-3bit"), params, deterministic=True))
    assert "CAL_COEFF" not in {e.name for e in build_register_map(params)}
    full = host_constants(build_register_map(PARAMS))

    async def testbench(ctx):
        status, _, _ = await bench.command(ctx, Opcode.CALIBRATE)
        assert (status["error"], status["error_detail"]) == (ErrorCode.UNKNOWN_OPCODE.value,
                                                             Opcode.CALIBRATE.value)
        for name in ("CAL_SETTLE", "CAL_CONTROL", "CAL_QUALITY"):
            _, resp = await AxiLiteHost(ctx, bench.dut.axil).read(getattr(full, name).offset)
            assert resp == Response.SLVERR, f"{name} answered {resp} in a build without calibration"

    bench.run(testbench)


def test_calibrate_watchdog_timeout_equals_the_golden_model():
    """A watchdog below the ADC's cycles: the first conversion times out (ADC_TIMEOUT, detail the
    first enabled channel) in the golden model's cycle; the DACs end at 0 V."""
    bench = Bench()
    golden = GoldenController(PARAMS, model_afe(faulty=True))
    assert golden.afe.adc_cycles > 3

    async def testbench(ctx):
        await bench.setup(ctx, WATCHDOG=3, COL_ENABLE=0b110)
        status, start, cycles = await bench.command(ctx, Opcode.CALIBRATE)
        outcome = golden.calibrate(col_mask=0b110, row_mask=ALL_ROWS, avg_log2=2, cal_settle=2, dac_settle=50,
                                   analog_settle=40, watchdog_limit=3, start_s=start * 1e-8)
        assert outcome.error == Error.ADC_TIMEOUT
        assert (status["error"], status["error_detail"]) == (ErrorCode.ADC_TIMEOUT.value, 1)
        assert cycles == outcome.done_cycle + STATUS_DELAY
        assert (await bench.read(ctx, "CAL_QUALITY"))["residual"] == outcome.quality == 0
        assert (bench.model.afe.dac_codes == PARAMS.dac_zero_code).all()

    bench.run(testbench)


def intended_conductances(afe: AnalogFrontEnd) -> np.ndarray:
    """A random level per cell (4 x 2+1): what PROGRAM_MATRIX is asked to place."""
    circuit = afe.config.circuit
    levels = np.random.default_rng(5).integers(0, 8, (PARAMS.rows, PARAMS.total_cols))
    return circuit.g_offset_s + circuit.g_unit_s * levels


def programmed_error(afe: AnalogFrontEnd, intended: np.ndarray) -> float:
    """Mean |programmed - intended| conductance, in units of one level step."""
    g = afe.crossbar.conductance_s[:, :PARAMS.total_cols]
    return float(np.abs(g - intended).mean() / afe.config.circuit.g_unit_s)


def test_calibrated_program_matrix_and_read_cell_equal_the_golden_model_and_program_closer():
    """With the ADC +5 % offset and gain error, CALIBRATE and then PROGRAM_MATRIX verify every cell
    through its channel's corrected ADC: PROGRAM_MATRIX (STATUS, cycles, PULSE_COUNT, FAULT_MAP,
    REFINE_A) and READ_CELL (RESULTS, cycles) equal the golden model's, the crossbar ends equal to
    the golden's, and the cells are closer to the intended conductances than programmed with
    CAL_CONTROL.adc off (the verify reads then judge them through the faulty ADC)."""
    import dataclasses
    bench = Bench()
    golden = GoldenController(PARAMS, model_afe(faulty=True))
    intended = intended_conductances(golden.afe)
    targets = golden.afe.conductance_code(intended)
    golden.load_targets(targets)
    settings = dataclasses.replace(golden.afe.program_settings(read_settle=4), avg_log2=2)
    cell = (2, 1)
    seen: dict[str, Any] = {}

    async def run(ctx, opcode: Opcode, **fields: int) -> tuple[dict[str, int], int, int]:
        await bench.write(ctx, "COMMAND", opcode=opcode.value, **fields)
        await bench.write(ctx, "CONTROL", start=1)
        start = bench.starts[-1]
        while not (ctx.get(bench.dut.registers.status.done) and not ctx.get(bench.dut.registers.status.busy)):
            await ctx.tick()
        cycles = bench.cycle - start
        return await bench.read(ctx, "STATUS"), start, cycles

    async def testbench(ctx):
        await bench.setup(ctx, READ_SETTLE=4, PROGRAM_TOLERANCE=settings.tolerance,
                          PROGRAM_PULSE=settings.pulse_width, PROGRAM_PULSES=settings.pulse_budget,
                          PROGRAM_AMPLITUDE=bench.regs.PROGRAM_AMPLITUDE.pack(start=settings.amp_start,
                                                                              step=settings.amp_step),
                          PROGRAM_AMPLITUDE_MAX=settings.amp_max)
        for index, code in enumerate(targets.ravel()):
            assert await AxiLiteHost(ctx, bench.dut.axil).write(bench.regs.TARGET.address(index),
                                                                 int(code)) == Response.OKAY
        _, start, _ = await run(ctx, Opcode.CALIBRATE)
        assert golden.calibrate(col_mask=ALL_COLS, row_mask=ALL_ROWS, avg_log2=2, cal_settle=2, dac_settle=50,
                                analog_settle=40, watchdog_limit=300, start_s=start * 1e-8).error == Error.NONE
        status, start, cycles = await run(ctx, Opcode.PROGRAM_MATRIX)
        expected = golden.program_matrix(settings, row_mask=ALL_ROWS, col_mask=ALL_COLS, watchdog_limit=300,
                                         start_s=start * 1e-8)
        seen["program"] = expected
        assert status["error"] == expected.error.value, (status, expected.error)
        assert cycles == expected.done_cycle + STATUS_DELAY, (cycles, expected.done_cycle)
        assert (await bench.read(ctx, "PULSE_COUNT"))["count"] == expected.pulse_count
        assert await bench.read_words(ctx, "FAULT_MAP") == [int(w) for w in golden.fault_map]
        assert await bench.read_words(ctx, "REFINE_A") == [int(c) for c in golden.refine_a.ravel()]
        status, start, cycles = await run(ctx, Opcode.READ_CELL, row=cell[0], col=cell[1])
        reading = golden.read_cell(*cell, avg_log2=2, read_settle=4, watchdog_limit=300, start_s=start * 1e-8)
        assert status["error"] == reading.error.value == ErrorCode.NONE.value
        assert cycles == reading.done_cycle + STATUS_DELAY, (cycles, reading.done_cycle)
        seen["read"] = (await bench.read_words(ctx, "RESULTS"))[cell[1]]
        assert seen["read"] == int(golden.results[cell[1]])

    bench.run(testbench)
    assert np.array_equal(bench.model.afe.crossbar.conductance_s, golden.afe.crossbar.conductance_s), \
        "the RTL's pulses did not place the cells where the golden model's did"
    reading = seen["read"] & 0x3FF
    assert abs(reading - int(targets[cell])) <= settings.tolerance, (reading, targets[cell])

    # The same with the ADC correction off: the cells are judged through the faulty ADC.
    uncorrected = GoldenController(PARAMS, model_afe(faulty=True))
    uncorrected.load_targets(targets)
    assert uncorrected.calibrate(col_mask=ALL_COLS, row_mask=ALL_ROWS, avg_log2=2, cal_settle=2, dac_settle=50,
                                 analog_settle=40, watchdog_limit=300).error == Error.NONE
    uncorrected.cal_enable = CalEnable(adc=False)
    uncorrected.program_matrix(settings, row_mask=ALL_ROWS, col_mask=ALL_COLS, watchdog_limit=300)
    error_corrected = programmed_error(golden.afe, intended)
    error_raw = programmed_error(uncorrected.afe, intended)
    print(f"programmed |g - intended| mean: corrected {error_corrected:.3f}, uncorrected {error_raw:.3f} levels;"
          f" pulses {seen['program'].pulse_count}, done cycle {seen['program'].done_cycle}")
    assert error_corrected < 0.5 * error_raw, (error_corrected, error_raw)
