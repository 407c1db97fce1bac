"""The number formats (model/formats.py) and the golden model of the controller
(model/golden.py): agreement with the RTL's definitions (cycle formula, averaging, result
layout, error codes), the AFE calls a solve makes and when, write-verify as the
programmer runs it, refusals, timeouts, and seeding. The bit-exact comparison with the
RTL itself is tests/test_afe_binding.py."""
from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
from amaranth.hdl import Const, Module, Signal
from amaranth.sim import Simulator

from anmf.hdl.codes import ErrorCode
from anmf.hdl.params import BuildParams
from anmf.hdl.solve_sequencer import result_layout
from anmf.hdl.solve_sequencer import rounded_average as rtl_rounded_average
from anmf.hdl.solve_sequencer import solve_cycles as rtl_solve_cycles
from anmf.model.afe import AnalogFrontEnd, Mode
from anmf.model.config import preset
from anmf.model.formats import (ProgramSettings, cell_cycles, code_to_conductance, code_to_volts,
                                conductance_to_code, pack_result, read_cycles, rounded_average,
                                solve_cycles, to_picoseconds, tolerance_to_codes, unpack_result,
                                volts_to_code, zero_code)
from anmf.hdl.controller import STATUS_DELAY as RTL_STATUS_DELAY
from anmf.model.golden import STATUS_DELAY, Error, GoldenController

PARAMS = BuildParams(rows=8, cols=4, spare=1, avg_max_log2=2)
T = 10e-9  # 100 MHz


def exact(message: str) -> str:
    return "^" + re.escape(message) + "$"


def make_golden(name: str = "rram-3bit", params: BuildParams = PARAMS, *,
                afe_class: type[AnalogFrontEnd] = AnalogFrontEnd, input_gain: float | None = None,
                **options) -> GoldenController:
    config = preset(name)
    config = config.replace(adc=config.adc.replace(conversion_time_s=200e-9))
    if input_gain is not None:
        config = config.replace(circuit=config.circuit.replace(input_gain=input_gain))
    afe = afe_class(config, rows=params.rows, cols=params.cols, spare=params.spare,
                    dac_bits=params.dac_bits, adc_bits=params.adc_bits,
                    **{"deterministic": True, **options})
    return GoldenController(params, afe)


def place_levels(golden: GoldenController, seed: int = 3) -> np.ndarray:
    afe = golden.afe
    levels = afe.config.device.level_targets_s()
    g = levels[np.random.default_rng(seed).integers(1, levels.size, (afe.rows, afe.total_cols))]
    afe.set_conductances(g, 0.0)
    circuit = afe.config.circuit
    return (np.asarray(afe.crossbar.conductance_s) - circuit.g_offset_s) / circuit.g_unit_s


# ---- agreement with the RTL's definitions ----------------------------------------------

def test_error_codes_are_the_controllers():
    assert {e.name: e.value for e in Error} == {e.name: e.value for e in ErrorCode}


def test_solve_cycle_formula_agrees_with_the_rtl():
    for rows, cols, avg, dac, analog, adc in itertools.product((1, 3, 64), (1, 10), (0, 2),
                                                                (0, 7), (0, 11), (2, 13)):
        arguments = dict(rows=rows, cols=cols, avg_log2=avg, dac_settle=dac,
                         analog_settle=analog, adc_cycles=adc)
        assert solve_cycles(**arguments) == rtl_solve_cycles(**arguments), arguments
    assert solve_cycles(rows=64, cols=8, avg_log2=0, dac_settle=5, analog_settle=10,
                        adc_cycles=10) == 235  # the example of docs/solve-timing.md
    with pytest.raises(ValueError, match=exact("adc_cycles must be an integer >= 2; got 1")):
        solve_cycles(rows=1, cols=1, avg_log2=0, dac_settle=0, analog_settle=0, adc_cycles=1)


def test_rounded_average_agrees_with_the_rtl_expression():
    total, exponent, result = Signal(12), Signal(2), Signal(12)
    m = Module()
    m.d.comb += result.eq(rtl_rounded_average(total, exponent, 12))
    cases = [(t, a) for a in range(4) for t in (0, 1, 2, 3, 5, 6, 7, 8, 1021, 4092, 4095)]
    got = []

    async def testbench(ctx):
        for t, a in cases:
            ctx.set(total, t)
            ctx.set(exponent, a)
            got.append(ctx.get(result))

    sim = Simulator(m)
    sim.add_testbench(testbench)
    sim.run()
    assert got == [rounded_average(t, a) for t, a in cases]
    assert (rounded_average(5, 1), rounded_average(6, 2), rounded_average(2, 2)) == (3, 2, 1)


def test_result_words_have_the_rtl_layout():
    layout = result_layout(PARAMS)
    for code, over in ((0, 0), (5, 1), (1023, 0), (1023, 1)):
        word = Const.cast(layout.const({"code": code, "over_range": over})).value
        assert pack_result(code, over, 10) == word
        assert unpack_result(word, 10) == (code, bool(over))
    with pytest.raises(ValueError, match=exact("code must be an integer from 0 to 1023; got 1024")):
        pack_result(1024, 0, 10)


def test_offset_binary_codes():
    assert zero_code(10) == 512 and code_to_volts(512, 10) == 0.0
    assert code_to_volts(0, 10) == -1.0 and code_to_volts(1023, 10) == 1.0 - 2 / 1024
    assert volts_to_code(0.0, 10) == 512 and volts_to_code(5.0, 10) == 1023
    assert list(volts_to_code(np.array([-2.0, 0.5]), 10)) == [0, 768]
    with pytest.raises(ValueError, match=exact("code must be integers from 0 to 1023; got 1024")):
        code_to_volts(1024, 10)
    with pytest.raises(ValueError, match=exact("the converter range needs finite v_min_v < "
                                               "v_max_v; got 1.0 and 1.0")):
        volts_to_code(0.0, 10, 1.0, 1.0)


def test_conductance_codes_and_tolerance():
    assert conductance_to_code(35e-6, full_scale_s=40e-6, bits=10) == 960
    assert code_to_conductance(960, full_scale_s=40e-6, bits=10) == pytest.approx(35e-6)
    assert tolerance_to_codes(0.5e-6, full_scale_s=40e-6, bits=10) == 6   # 78.125 nS per code
    assert tolerance_to_codes(1e-9, full_scale_s=40e-6, bits=10) == 1
    with pytest.raises(ValueError, match=exact("g_s must be finite conductances >= 0 (S); got "
                                               "-1e-06")):
        conductance_to_code(-1e-6, full_scale_s=40e-6, bits=10)
    assert to_picoseconds(1.2345e-4) == 123_450_000


def test_programmer_cycle_formulas():
    assert read_cycles(read_settle=16, avg_log2=2, adc_cycles=10) == 16 + 4 * 11 + 2
    assert cell_cycles(pulses=2, read_settle=0, avg_log2=0, adc_cycles=2,
                       pulse_cycles=3) == 3 + 3 * 5 + 2 * 4


# ---- solves --------------------------------------------------------------------------

class RecordingAFE(AnalogFrontEnd):
    """The AFE model, recording the calls the golden model makes (cycle, call, arguments)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[tuple] = []

    def _cycle(self, t_s: float) -> int:
        return round(t_s / T)

    def write_dac(self, addr, code):
        self.calls.append(("write_dac", addr, code))
        super().write_dac(addr, code)

    def load_dacs(self, t_s):
        self.calls.append(("load_dacs", self._cycle(t_s)))
        super().load_dacs(t_s)

    def apply_controls(self, t_s, **controls):
        self.calls.append(("controls", self._cycle(t_s), controls["mode"], controls["loop"]))
        super().apply_controls(t_s, **controls)

    def convert(self, mux, t_s):
        self.calls.append(("convert", self._cycle(t_s), mux))
        return super().convert(mux, t_s)

    def pulse(self, row, col, polarity, amplitude, width, t_s):
        self.calls.append(("pulse", self._cycle(t_s), row, col, int(polarity), amplitude))
        return super().pulse(row, col, polarity, amplitude, width, t_s)


def test_a_solve_calls_the_afe_at_the_sequencers_cycles():
    golden = make_golden(afe_class=RecordingAFE)
    afe = golden.afe
    golden.load_rhs(np.arange(8) * 10 + 512)
    outcome = golden.solve(Mode.SOLVE, row_mask=0b1001_0010, col_mask=0b10100, avg_log2=1,
                           dac_settle=3, analog_settle=4)
    t_adc = afe.adc_cycles
    n = 3
    close = n + 3 + 3
    first = close + 4
    conversions = [("convert", first + k * (t_adc + 1), col)
                   for k, col in enumerate((2, 2, 4, 4))]
    release = first + 4 * (t_adc + 1)
    assert afe.calls == (
        [("write_dac", r, 512 + 10 * r) for r in (1, 4, 7)]
        + [("load_dacs", n + 2), ("controls", close, Mode.SOLVE, 1)] + conversions
        + [("controls", release, Mode.IDLE, 0)] + [("write_dac", r, 512) for r in (1, 4, 7)]
        + [("load_dacs", release + n)])
    assert outcome.done_cycle == release + n + 1 == solve_cycles(
        rows=3, cols=2, avg_log2=1, dac_settle=3, analog_settle=4, adc_cycles=t_adc)
    assert set(outcome.words) == {2, 4} and outcome.error == Error.NONE


def test_solve_words_are_the_rounded_average_of_the_afes_codes():
    golden = make_golden()
    twin = golden.afe.twin()
    place_levels(golden)
    twin.set_conductances(golden.afe.crossbar.conductance_s, 0.0)
    golden.load_rhs(np.full(8, 600))
    outcome = golden.solve(Mode.SOLVE_FREE, row_mask=0xFF, col_mask=0b1, avg_log2=2, dac_settle=1,
                           analog_settle=1, start_s=1e-6)
    # The same conversions on the twin, at the documented times, averaged by hand.
    for row in range(8):
        twin.write_dac(row, 600)
    twin.load_dacs(1e-6 + 10 * T)
    twin.apply_controls(1e-6 + 12 * T, mode=Mode.SOLVE_FREE, loop=1, row_en=0xFF, col_en=1)
    codes = [twin.convert(0, 1e-6 + (13 + k * (twin.adc_cycles + 1)) * T) for k in range(4)]
    average = (sum(c for c, _ in codes) + 2) >> 2
    assert outcome.words == {0: pack_result(average, any(o for _, o in codes), 10)}
    assert golden.results[0] == outcome.words[0]


def test_a_settled_solve_reads_the_circuits_steady_state():
    golden = make_golden("ideal", input_gain=16.0)
    a = place_levels(golden)
    afe = golden.afe
    x_true = np.array([0.3, 0.0, 0.5, 0.2, 0.1])
    rhs = volts_to_code(a @ x_true / afe.config.circuit.input_gain, 10)
    golden.load_rhs(rhs)
    outcome = golden.solve(Mode.SOLVE, row_mask=0xFF, col_mask=0x1F, avg_log2=0, dac_settle=60,
                           analog_settle=2000)
    codes = [unpack_result(outcome.words[c], 10)[0] for c in range(5)]
    assert all(abs(code_to_volts(c, 10) - x) < 0.02 for c, x in zip(codes, x_true)), codes
    assert outcome.over_range_count == 0


def test_over_range_is_flagged_and_counted():
    golden = make_golden()
    place_levels(golden)
    golden.load_rhs(np.full(8, 1000))  # far too large a right-hand side for x in range
    outcome = golden.solve(Mode.SOLVE, row_mask=0xFF, col_mask=0x1F, avg_log2=1, dac_settle=60,
                           analog_settle=100)
    flagged = [c for c, w in outcome.words.items() if unpack_result(w, 10)[1]]
    assert flagged and outcome.over_range_count >= 2 * len(flagged) - 1
    assert all(unpack_result(outcome.words[c], 10)[0] == 1023 for c in flagged)


@pytest.mark.parametrize("changes, error", [
    ({"mode": Mode.READ_CELL}, Error.UNKNOWN_OPCODE),
    ({"col_mask": 0}, Error.BAD_DIMENSION),
    ({"row_mask": 0}, Error.BAD_DIMENSION),
    ({"avg_log2": 3}, Error.BAD_AVERAGING),
    ({"watchdog_limit": 0}, Error.BAD_TIMING),
])
def test_refused_solves_end_in_cycle_one_and_touch_nothing(changes, error):
    golden = make_golden(afe_class=RecordingAFE)
    arguments = dict(mode=Mode.SOLVE, row_mask=1, col_mask=1, avg_log2=0, dac_settle=1,
                     analog_settle=1) | changes
    outcome = golden.solve(arguments.pop("mode"), **arguments)
    assert (outcome.error, outcome.done_cycle, outcome.words) == (error, 1, {})
    assert golden.afe.calls == [] and not golden.results.any()


def test_adc_timeout_takes_the_safe_exit():
    golden = make_golden(afe_class=RecordingAFE)
    limit = golden.afe.adc_cycles - 1
    outcome = golden.solve(Mode.SOLVE, row_mask=0b11, col_mask=0b1, avg_log2=0, dac_settle=1,
                           analog_settle=1, watchdog_limit=limit)
    strobe = 2 + 3 + 1 + 1
    assert outcome.error == Error.ADC_TIMEOUT
    assert outcome.done_cycle == strobe + limit + PARAMS.rows + 2  # docs/solve-timing.md
    assert ("controls", strobe + limit + 1, Mode.IDLE, 0) in golden.afe.calls
    assert (golden.afe.dac_codes == 512).all()


def test_operands_are_checked_against_the_port_widths():
    golden = make_golden()
    with pytest.raises(ValueError, match=exact("row_mask must be an integer from 0 to 255 (a 8-bit "
                                               "port); got 256")):
        golden.solve(Mode.SOLVE, row_mask=256, col_mask=1, avg_log2=0, dac_settle=1,
                     analog_settle=1)
    with pytest.raises(ValueError, match=exact("rhs must be 8 integer codes from 0 to 1023; got "
                                               "int64 array of shape (7,)")):
        golden.load_rhs(np.zeros(7, dtype=np.int64))


def test_constructor_checks_the_afe_against_the_build():
    afe = AnalogFrontEnd(preset("ideal"), rows=8, cols=4, spare=1, dac_bits=10, adc_bits=10)
    with pytest.raises(ValueError, match=exact("params.rows = 16 but the AFE has 8; build the AFE "
                                               "with AnalogFrontEnd.from_build_params")):
        GoldenController(BuildParams(rows=16, cols=4, spare=1), afe)
    with pytest.raises(ValueError, match=exact("clock_hz = 50000000.0 differs from the AFE's "
                                               "clock_hz = 100000000.0")):
        GoldenController(PARAMS, afe, 50e6)
    with pytest.raises(ValueError, match=exact("afe must be an AnalogFrontEnd; got str")):
        GoldenController(PARAMS, "rram-3bit")


def test_commands_follow_each_other_without_a_gap_by_default():
    golden = make_golden(afe_class=RecordingAFE)
    first = golden.solve(Mode.MVM, row_mask=1, col_mask=1, avg_log2=0, dac_settle=1,
                         analog_settle=1)
    golden.afe.calls.clear()
    golden.solve(Mode.MVM, row_mask=1, col_mask=1, avg_log2=0, dac_settle=1, analog_settle=1)
    # The second start is the first cycle STATUS shows the first done (the controller refuses
    # an earlier one): its ldac in cycle N + 2 after that.
    assert RTL_STATUS_DELAY == STATUS_DELAY == 2
    assert golden.afe.calls[1] == ("load_dacs", first.done_cycle + 2 + 3)


# ---- programming ---------------------------------------------------------------------

def settings(**changes) -> ProgramSettings:
    base = dict(tolerance=6, amp_start=100, amp_step=5, amp_max=200, pulse_width=10,
                pulse_budget=40, avg_log2=0, read_settle=16)
    return ProgramSettings(**(base | changes))


def test_program_matrix_reaches_the_targets_and_records_the_faults():
    golden = make_golden("ideal", afe_class=RecordingAFE)
    afe = golden.afe
    levels = afe.config.device.level_targets_s()
    targets = afe.conductance_code(levels[np.random.default_rng(2).integers(0, 8, (8, 5))])
    targets[2, 1] = 300   # below 0 S: unreachable
    golden.load_targets(targets)
    golden.fault_map[5] = 0b11111   # rows left out keep their word
    s = settings()
    outcome = golden.program_matrix(s, row_mask=0b1101_1111, col_mask=0x1F)
    assert outcome.error == Error.CELLS_FAILED and outcome.failed_count == 1
    assert golden.fault_map.tolist() == [0, 0, 0b10, 0, 0, 0b11111, 0, 0]
    cells = {(c.row, c.col): c for c in outcome.cells}
    assert len(cells) == 7 * 5 and (5, 0) not in cells
    assert cells[2, 1].failed and cells[2, 1].pulses == s.pulse_budget
    for (row, col), cell in cells.items():
        if (row, col) != (2, 1):
            assert abs(cell.read_code - targets[row, col]) <= s.tolerance, cell
            assert abs(afe.read_cell(row, col, 1.0)[0] - targets[row, col]) <= s.tolerance
    assert outcome.pulse_count == sum(c.pulses for c in outcome.cells)
    t_prog = afe.pulse_cycles(s.pulse_width)
    expected = 1 + sum(cell_cycles(pulses=c.pulses, read_settle=16, avg_log2=0,
                                   adc_cycles=afe.adc_cycles, pulse_cycles=t_prog)
                       for c in outcome.cells) + 7
    assert outcome.done_cycle == expected   # docs/solve-timing.md, programmer timing


def test_a_short_read_settle_verifies_unsettled_reads_and_overshoots():
    """Verify reads 2 time constants after selecting the cell see 86 % of the settled value:
    write-verify then accepts cells above their targets (READ_SETTLE must cover ~8 tau)."""
    golden = make_golden("ideal")
    afe = golden.afe
    golden.targets[:] = afe.conductance_code(25e-6)
    short = round(2 * afe.read_settle_tau_s / T)
    outcome = golden.program_matrix(settings(read_settle=short), row_mask=0b11, col_mask=0b11)
    assert outcome.error == Error.NONE
    true_codes = [afe.read_cell(c.row, c.col, 1.0)[0] for c in outcome.cells]
    assert all(code > golden.targets[0, 0] + 6 for code in true_codes), true_codes


def test_the_amplitude_ramps_and_restarts_after_a_polarity_flip():
    golden = make_golden("ideal", afe_class=RecordingAFE)
    golden.targets[0, 0] = golden.afe.conductance_code(30e-6)
    outcome = golden.program_cell(0, 0, settings(amp_step=40, amp_max=150, tolerance=2))
    pulses = [call for call in golden.afe.calls if call[0] == "pulse"]
    amplitudes = [call[5] for call in pulses]
    polarities = [call[4] for call in pulses]
    assert amplitudes[:5] == [100, 140, 150, 150, 150], amplitudes   # ramp, capped at amp_max
    flips = [k for k in range(1, len(pulses)) if polarities[k] != polarities[k - 1]]
    assert flips, "the coarse ramp overshoots at least once"
    assert all(amplitudes[k] == 100 for k in flips), "a flip restarts the ramp"
    assert outcome.error == Error.NONE and outcome.pulse_count == len(pulses)


def test_read_cell_puts_the_reading_in_results():
    golden = make_golden("ideal")
    golden.afe.set_conductances(np.full((8, 5), 20e-6), 0.0)
    read = golden.read_cell(3, 4, avg_log2=2, read_settle=10)
    assert (read.error, read.code, read.over_range) == (Error.NONE, 768, False)
    assert golden.results[4] == pack_result(768, False, 10)
    assert read.done_cycle == 3 + read_cycles(read_settle=10, avg_log2=2,
                                              adc_cycles=golden.afe.adc_cycles)


@pytest.mark.parametrize("command, changes, error", [
    ("cell", {"col": 5}, Error.BAD_DIMENSION),
    ("matrix", {"col_mask": 0}, Error.BAD_DIMENSION),
    ("cell", {"avg_log2": 3}, Error.BAD_AVERAGING),
    ("cell", {"tolerance": 0}, Error.BAD_TOLERANCE),
    ("matrix", {"tolerance": 1024}, Error.BAD_TOLERANCE),
    ("cell", {"pulse_width": 0}, Error.BAD_TIMING),
    ("cell", {"watchdog_limit": 0}, Error.BAD_TIMING),
])
def test_refused_programs_end_in_cycle_one(command, changes, error):
    golden = make_golden()
    operands = {"row": 0, "col": 0, "row_mask": 1, "col_mask": 1, "watchdog_limit": 100}
    setting_changes = {k: v for k, v in changes.items() if k not in operands}
    operands |= {k: v for k, v in changes.items() if k in operands}
    s = settings(**setting_changes)
    if command == "cell":
        outcome = golden.program_cell(operands["row"], operands["col"], s,
                                      watchdog_limit=operands["watchdog_limit"])
    else:
        outcome = golden.program_matrix(s, row_mask=operands["row_mask"],
                                        col_mask=operands["col_mask"],
                                        watchdog_limit=operands["watchdog_limit"])
    assert (outcome.error, outcome.done_cycle, outcome.pulse_count) == (error, 1, 0)


def test_program_timeout_abandons_the_pulse():
    golden = make_golden("ideal")
    golden.targets[0, 0] = 900
    s = settings(pulse_width=40)
    limit = golden.afe.pulse_cycles(s.pulse_width) - 1
    assert limit >= golden.afe.adc_cycles, "conversions stay within the limit"
    outcome = golden.program_cell(0, 0, s, watchdog_limit=limit)
    fire = 3 + read_cycles(read_settle=16, avg_log2=0, adc_cycles=golden.afe.adc_cycles)
    assert outcome.error == Error.PROGRAM_TIMEOUT and outcome.pulse_count == 1
    assert outcome.done_cycle == fire + limit + PARAMS.rows + 2


def test_same_seed_same_outcome_even_with_noise():
    outcomes = []
    for _ in range(2):
        golden = make_golden(deterministic=False)
        golden.targets[:] = 800
        outcome = golden.program_matrix(settings(avg_log2=1), row_mask=0b11, col_mask=0b111)
        golden.load_rhs(np.full(8, 560))
        solve = golden.solve(Mode.SOLVE, row_mask=0xFF, col_mask=0x1F, avg_log2=2,
                             dac_settle=5, analog_settle=5)
        outcomes.append((outcome, solve, golden.fault_map.tolist()))
    assert outcomes[0] == outcomes[1]


def test_calibrate_refusals_and_identity_corrections():
    """CALIBRATE's start errors in the calibrator's order (done in cycle 1, nothing stored); with
    the reset (identity) words the corrections change no code."""
    golden = make_golden()
    words = golden.cal_words.copy()
    args = dict(col_mask=1, row_mask=1, avg_log2=0, cal_settle=1, dac_settle=1, analog_settle=1)
    for changes, error in (({"col_mask": 0}, Error.BAD_DIMENSION), ({"row_mask": 0}, Error.BAD_DIMENSION),
                           ({"avg_log2": 3}, Error.BAD_AVERAGING), ({"watchdog_limit": 0}, Error.BAD_TIMING)):
        outcome = golden.calibrate(**{**args, **changes})
        assert (outcome.error, outcome.done_cycle) == (error, 1), changes
    assert (golden.cal_words == words).all()
    for code in (0, 1, 511, 512, 1023):
        assert golden._dac_code(3, code) == code
        for mode in (Mode.SOLVE, Mode.MVM):
            assert golden._corrected_result(2, code, mode) == (code, False)
