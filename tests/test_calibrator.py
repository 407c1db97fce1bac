"""The Calibrator (hdl/calibrator.py) in amaranth.sim with the code-level AFE model behind its
AFE port: coefficients, quality and done cycle equal the golden model's (model/calibration.py)
bit for bit on rram-3bit and pessimistic; the correction helpers equal the model's integer
arithmetic; the correction brings large offset/gain errors under 1 LSB; start errors, abort,
watchdog; parameter validation messages."""
from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Module, Value
from amaranth.lib import memory, wiring
from amaranth.sim import Simulator

from anmf.hdl.afe import AFESignature
from anmf.hdl.calibrator import (Calibrator, CodeCorrection, calibration_memory_depth,
                                 round_shift_bound,
                                 coefficient_layout)
from anmf.hdl.codes import ErrorCode
from anmf.hdl.params import BuildParams
from anmf.model import calibration as cal
from anmf.model.afe import AnalogFrontEnd
from anmf.model.config import preset
from model_afe import ModelAFE

PARAMS = BuildParams(rows=4, cols=2, spare=1, avg_max_log2=2)


def exact(message: str) -> str:
    return "^" + re.escape(message) + "$"


def model_afe(name: str = "rram-3bit", params: BuildParams = PARAMS, *, seed: int = 3,
              deterministic: bool = True, conversion_time_s: float = 30e-9) -> AnalogFrontEnd:
    """A preset AFE with a 30 ns ADC (t_adc = 1 + 3 cycles at 100 MHz) to keep runs short."""
    config = preset(name).replace(seed=seed)
    config = config.replace(adc=config.adc.replace(conversion_time_s=conversion_time_s))
    return AnalogFrontEnd.from_build_params(config, params, deterministic=deterministic)


def settings_for(afe: AnalogFrontEnd, *, col_mask: int = 0b101, row_mask: int = 0b1011,
                 avg_log2: int = 2) -> cal.CalibrationSettings:
    dac_settle = math.ceil(afe.config.dac.settle_time_s * afe.clock_hz)
    return cal.CalibrationSettings(col_mask=col_mask, row_mask=row_mask, avg_log2=avg_log2,
                                   cal_settle=2, dac_settle=dac_settle, analog_settle=40)


IDENTITY_WORD = cal.pack_coefficient(cal.IDENTITY, adc_bits=PARAMS.adc_bits,
                                     dac_bits=PARAMS.dac_bits)


class Bench:
    """Calibrator + calibration memory (identity words at reset) + the AFE model."""

    def __init__(self, afe: AnalogFrontEnd, params: BuildParams = PARAMS, **binding: Any):
        self.params = params
        self.dut = Calibrator(params)
        depth = calibration_memory_depth(params)
        layout = coefficient_layout(params)
        self.memory = memory.Memory(shape=layout, depth=depth,
                                    init=[layout.const({"gain": cal.GAIN_ONE})] * depth)
        m = Module()
        m.submodules.dut = self.dut
        m.submodules.memory = self.memory
        wiring.connect(m, self.dut.coeff_write, self.memory.write_port())
        wiring.connect(m, self.dut.coeff_read, self.memory.read_port())
        self.afe = ModelAFE(afe, self.dut.afe, params, **binding)
        self.sim = Simulator(m)
        self.sim.add_clock(1e-8)
        self.sim.add_process(self.afe.process)
        self.outcome: dict[str, Any] = {}

    def run(self, settings: cal.CalibrationSettings, *, watchdog_limit: int = 100,
            abort_at: int | None = None, max_cycles: int = 50_000) -> dict[str, Any]:
        dut, out = self.dut, self.outcome

        async def testbench(ctx):
            for port in ("col_mask", "row_mask", "avg_log2", "cal_settle", "dac_settle",
                         "analog_settle"):
                ctx.set(getattr(dut, port), getattr(settings, port))
            ctx.set(dut.watchdog_limit, watchdog_limit)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            cycles = 1
            while not ctx.get(dut.done):
                assert ctx.get(dut.busy), f"busy low before done at cycle {cycles}"
                ctx.set(dut.abort, int(abort_at == cycles))
                await ctx.tick()
                cycles += 1
                assert cycles < max_cycles, "no done: the calibrator hangs"
            out.update(cycles=cycles, error=ctx.get(dut.error), quality=ctx.get(dut.quality),
                       failed=ctx.get(dut.failed_count))
            out["idle_outputs"] = {p.name: ctx.get(Value.cast(getattr(dut.afe, p.name)))
                                   for p in AFESignature(self.params).ports()
                                   if p.flow == wiring.Out}
            await ctx.tick()
            out["busy_after"] = ctx.get(dut.busy)
            layout = coefficient_layout(self.params)
            out["words"] = [layout.const(ctx.get(self.memory.data[i])).as_value().value
                            for i in range(calibration_memory_depth(self.params))]

        self.sim.add_testbench(testbench)
        self.sim.run()
        return out


def assert_idle(out: dict[str, Any], afe: AnalogFrontEnd) -> None:
    driven = {name: value for name, value in out["idle_outputs"].items() if value}
    assert driven == {}, f"AFE outputs not idle in the done cycle: {driven}"
    assert not out["busy_after"], "busy still high the cycle after done"
    zero = 1 << (afe.dac_bits - 1)
    assert (afe.dac_codes == zero).all(), f"DACs not back at the zero code: {afe.dac_codes}"


# ---- RTL against the golden model ----------------------------------------------------------

@pytest.mark.parametrize("name", ["rram-3bit", "pessimistic"])
def test_coefficients_quality_and_done_cycle_equal_the_golden_bit_for_bit(name):
    rtl_afe = model_afe(name)
    settings = settings_for(rtl_afe)
    bench = Bench(rtl_afe)
    out = bench.run(settings)
    golden = cal.golden_calibration(PARAMS, model_afe(name), settings)

    assert out["error"] == ErrorCode.NONE
    expected_cycles = cal.calibration_cycles(
        channels=2, rows=3, avg_log2=settings.avg_log2, cal_settle=settings.cal_settle,
        dac_settle=settings.dac_settle, analog_settle=settings.analog_settle,
        adc_cycles=rtl_afe.adc_cycles)
    assert out["cycles"] == golden.done_cycle == expected_cycles, \
        f"done in cycle {out['cycles']}, golden {golden.done_cycle}, formula {expected_cycles}"
    expected_words = [golden.words.get(address, IDENTITY_WORD)
                      for address in range(calibration_memory_depth(PARAMS))]
    assert out["words"] == expected_words
    assert len(golden.words) == 2 + 3 + 2     # ADC channels, DAC rows, op-amp columns
    assert (out["quality"], out["failed"]) == (golden.quality, golden.failed_count)
    assert golden.failed_count == 0 and 0 < golden.quality < 2 * 2 ** cal.FRAC_BITS, \
        f"quality {golden.quality / 16} LSB, failed {golden.failed_count}"
    # What the AFE saw: 5 ADC points per channel, 2 loopback points per row, 1 op-amp point
    # per column, 4 samples each; DACs back at the zero code; nothing left driven.
    assert len(bench.afe.conversions) == 4 * (2 * 5 + 3 * 2 + 2)
    refs = [c["cal_ref_sel"] for _, c in bench.afe.conversions[:20:4]]
    assert refs == list(cal.ADC_REFERENCE_ORDER)
    opamp = [c for _, c in bench.afe.conversions[-8:]]
    assert {(c["mode"], c["loop"], c["row_en"], c["col_en"]) for c in opamp} == \
        {(2, 1, 0b1011, 0b101)}
    assert [c["adc_mux"] for c in opamp] == [0] * 4 + [2] * 4
    assert bench.afe.protocol_errors == [] and rtl_afe.violations == []
    assert_idle(out, rtl_afe)


@pytest.mark.parametrize("adc_bits, dac_bits", [(12, 8), (8, 12)])
def test_mixed_converter_widths_equal_the_golden(adc_bits, dac_bits):
    # The loopback is rescaled between ADC and DAC LSBs (rounded shift one way, exact the other).
    params = BuildParams(rows=2, cols=2, spare=0, adc_bits=adc_bits, dac_bits=dac_bits,
                         avg_max_log2=1)
    rtl_afe, golden_afe = model_afe(params=params), model_afe(params=params)
    settings = settings_for(rtl_afe, col_mask=0b10, row_mask=0b11, avg_log2=1)
    out = Bench(rtl_afe, params).run(settings)
    golden = cal.golden_calibration(params, golden_afe, settings)
    identity = cal.pack_coefficient(cal.IDENTITY, adc_bits=adc_bits, dac_bits=dac_bits)
    assert out["words"] == [golden.words.get(a, identity)
                            for a in range(calibration_memory_depth(params))]
    assert (out["cycles"], out["quality"], out["failed"]) == \
        (golden.done_cycle, golden.quality, golden.failed_count)
    assert golden.failed_count == 0 and golden.quality < 2 * 2 ** cal.FRAC_BITS


def test_calibrator_converts_to_verilog():
    text = verilog.convert(Calibrator(PARAMS), name="calibrator")
    assert "module calibrator" in text and "afe__cal_ref_sel" in text


def test_over_range_reference_stores_identity_and_counts_a_failure():
    # An ADC offset of +0.6 V puts the +1/2 reference beyond full scale on every channel.
    rtl_afe, golden_afe = model_afe(), model_afe()
    for afe in (rtl_afe, golden_afe):
        afe.adc.offset_v[:] = 0.6
    settings = settings_for(rtl_afe, col_mask=0b001, row_mask=0b0001, avg_log2=0)
    out = Bench(rtl_afe).run(settings)
    golden = cal.golden_calibration(PARAMS, golden_afe, settings)
    assert golden.entries[("adc", 0)] == cal.IDENTITY
    assert out["failed"] == golden.failed_count >= 1
    assert out["words"][0] == IDENTITY_WORD
    assert out["cycles"] == golden.done_cycle
    assert [out["words"][a] for a in sorted(golden.words)] == \
        [golden.words[a] for a in sorted(golden.words)]


# ---- correction helpers ----------------------------------------------------------------------

@pytest.mark.parametrize("path", ["adc", "dac"])
def test_code_correction_equals_the_model_arithmetic(path):
    params = BuildParams(rows=4, cols=2, spare=1, adc_bits=10, dac_bits=8)
    bits = params.adc_bits if path == "adc" else params.dac_bits
    ob = cal.offset_bits(params.adc_bits, params.dac_bits)
    dut = CodeCorrection(params, bits, with_subtract=path == "adc")
    rng = np.random.default_rng(11)
    cases = [(int(rng.integers(0, 2 ** bits)),
              cal.Coefficient(int(rng.integers(-800, 800)), int(rng.integers(2 ** 14, 2 ** 16)),
                              True),
              int(rng.integers(-300, 300)) if path == "adc" else 0) for _ in range(300)]
    cases += [(0, cal.Coefficient(2 ** (ob - 1) - 1, 2 ** 16 - 1, True), 0),       # extremes
              (2 ** bits - 1, cal.Coefficient(-2 ** (ob - 1), 2 ** 16 - 1, True), 0),
              (2 ** bits - 1, cal.IDENTITY, 0), (0, cal.IDENTITY, 0)]
    seen = []

    async def testbench(ctx):
        for code, coefficient, subtract in cases:
            ctx.set(dut.code, code)
            ctx.set(dut.coefficient, {"offset": coefficient.offset, "gain": coefficient.gain,
                                      "valid": 1})
            if path == "adc":
                ctx.set(dut.subtract, subtract)
            seen.append((ctx.get(dut.corrected), bool(ctx.get(dut.saturated))))

    sim = Simulator(dut)
    sim.add_testbench(testbench)
    sim.run()
    expected = [cal.correct_code(code, c, bits, s) for code, c, s in cases]
    assert seen == expected
    assert any(flag for _, flag in expected) and not all(flag for _, flag in expected)
    assert expected[-2:] == [(2 ** bits - 1, False), (0, False)]   # identity changes nothing


def test_round_shift_bound_decides_a_rounded_range_on_the_value():
    # The op-amp point's validity (E54, E58): round_shift(v, s) >= B <=> v >= the bound, and
    # round_shift(v, s) < B <=> v < the bound, at and around every edge.
    shift = cal.GAIN_FRAC_BITS
    checked = 0
    for bound in (-2 ** 14, -1, 0, 1, 2 ** 14):
        edge = round_shift_bound(bound, shift)
        for v in range(edge - 3, edge + 4):
            assert (v >= edge) == (cal.round_shift(v, shift) >= bound), (bound, v)
            assert (v < edge) == (cal.round_shift(v, shift) < bound), (bound, v)
            checked += 1
    assert checked == 35


# ---- the improvement -------------------------------------------------------------------------

def reference_code(afe: AnalogFrontEnd, reference: int, t_s: float) -> int:
    afe.apply_controls(t_s, mode=6, loop=0, row_en=0, col_en=0, cal_ref_sel=reference)
    return afe.convert(0, t_s)[0]


def test_correction_brings_5_percent_offset_and_gain_errors_under_one_lsb():
    """ADC: +50 mV offset (5 % of the +1 V full scale, 25.6 LSB) and +5 % gain; DAC row 1:
    -50 mV and -5 %. After CALIBRATE (golden arithmetic, bit-exact with the RTL above), every
    reference reads within 1 LSB of its ideal code and the DAC drives within 1 LSB."""
    afe = model_afe()
    afe.adc.offset_v[:], afe.adc.gain_error[:] = 0.05, 0.05
    afe.dac.offset_v[1], afe.dac.gain_error[1] = -0.05, -0.05
    settings = settings_for(afe, col_mask=0b001, row_mask=0b0010, avg_log2=2)
    golden = cal.golden_calibration(PARAMS, afe, settings)
    adc = golden.entries[("adc", 0)]
    assert adc.valid and golden.failed_count == 0
    t = (golden.done_cycle + 10) * 1e-8
    zero = 2 ** (PARAMS.adc_bits - 1)
    raw_errors, corrected_errors = [], []
    for reference in cal.ADC_REFERENCE_ORDER:
        ideal = zero + cal.ideal_q(reference, PARAMS.adc_bits) // 2 ** cal.FRAC_BITS
        raw = reference_code(afe, reference, t)
        corrected, _ = cal.correct_code(raw, adc, PARAMS.adc_bits)
        raw_errors.append(abs(raw - ideal))
        corrected_errors.append(abs(corrected - ideal))
    assert max(raw_errors) > 40 and max(corrected_errors) <= 1, (raw_errors, corrected_errors)
    assert golden.quality < 2 ** cal.FRAC_BITS          # < 1 LSB in the quality register

    # DAC row 1 through the loopback (read with the calibrated ADC): wanted code -> written code.
    dac = golden.entries[("dac", 1)]
    dac_errors_raw, dac_errors = [], []
    for wanted in (128, 384, 512, 640, 896):
        written, _ = cal.correct_code(wanted, dac, PARAMS.dac_bits)
        for code, errors in ((wanted, dac_errors_raw), (written, dac_errors)):
            volts = afe.dac.voltage(np.array([code]), np.array([1]))[0]
            errors.append(abs(volts / (2.0 / 2 ** PARAMS.dac_bits) - (wanted - 512)))
    assert max(dac_errors_raw) > 40 and max(dac_errors) < 1.0, (dac_errors_raw, dac_errors)


# ---- arithmetic units ------------------------------------------------------------------------

def test_two_point_coefficient_inverts_a_linear_error_and_refuses_bad_measurements():
    f, ob = 2 ** cal.FRAC_BITS, cal.offset_bits(10, 10)
    # deviation = 1.03 * ideal + 7.25 LSB, ideal points +-256 LSB (span 2^9).
    high, low = round((1.03 * 256 + 7.25) * f), round((-1.03 * 256 + 7.25) * f)
    c = cal.two_point_coefficient(high, low, 9, ob)
    assert c.valid and c.offset == round(7.25 * f)
    assert abs(c.gain / cal.GAIN_ONE - 1 / 1.03) < 2 ** -cal.GAIN_FRAC_BITS
    for measured in range(-256, 257, 32):   # the corrected deviation is the ideal one
        deviation = round((1.03 * measured + 7.25) * f)
        assert abs(cal.correct_deviation(deviation, c) - measured * f) <= 1
    assert cal.two_point_coefficient(high, low, 9, ob, over_range=True) == cal.IDENTITY
    assert cal.two_point_coefficient(low, high, 9, ob) == cal.IDENTITY       # negative slope
    assert cal.two_point_coefficient(128 * f, -128 * f, 9, ob) == cal.IDENTITY  # gain 2
    assert cal.two_point_coefficient(513 * f, -513 * f, 9, ob) == cal.IDENTITY  # gain < 1/2
    assert cal.round_shift(-3, 1) == -1 and cal.round_shift(3, 1) == 2 and \
        cal.round_shift(5, -2) == 20
    assert cal.rescale(-24, 10, 8) == -6 and cal.rescale(5, 8, 10) == 20


def test_coefficient_word_round_trip_and_layout_agree():
    layout = coefficient_layout(PARAMS)
    for coefficient in (cal.Coefficient(-5, 40000, True), cal.IDENTITY,
                        cal.Coefficient(2 ** 14 - 1, 0, False)):
        word = cal.pack_coefficient(coefficient, adc_bits=10, dac_bits=10)
        assert cal.unpack_coefficient(word, adc_bits=10, dac_bits=10) == coefficient
        as_struct = layout.const({"offset": coefficient.offset, "gain": coefficient.gain,
                                  "valid": int(coefficient.valid)})
        assert as_struct.as_value().value == word
    assert layout.size == cal.word_bits(10, 10) == 32


def test_cycle_formula_by_hand():
    # P = 1 + 2 + 4 * 5 = 23; C = 2: 2 * (115 + 17 + 8); N = 3: 3 * (2 * (23 + 4 + 50) + 21);
    # op-amp: 50 + 1 + 40 + 2 * 23.
    assert cal.calibration_cycles(channels=2, rows=3, avg_log2=2, cal_settle=2, dac_settle=50,
                                  analog_settle=40, adc_cycles=4) == \
        1 + 2 * 140 + 3 * 175 + 50 + 1 + 40 + 46


# ---- errors, abort, watchdog -----------------------------------------------------------------

@pytest.mark.parametrize("change, error", [
    ({"col_mask": 0}, ErrorCode.BAD_DIMENSION),
    ({"row_mask": 0}, ErrorCode.BAD_DIMENSION),
    ({"avg_log2": 3}, ErrorCode.BAD_AVERAGING),
    ({"watchdog_limit": 0}, ErrorCode.BAD_TIMING),
])
def test_start_errors_end_at_once_without_touching_the_afe(change, error):
    afe = model_afe()
    base = settings_for(afe)
    watchdog = change.pop("watchdog_limit", 100)
    fields = {**base.__dict__, **change}
    bench = Bench(afe)
    out = bench.run(cal.CalibrationSettings(**fields), watchdog_limit=watchdog)
    assert (out["error"], out["cycles"]) == (error, 1)
    assert bench.afe.conversions == [] and bench.afe.ldac_cycles == []
    assert out["words"] == [IDENTITY_WORD] * calibration_memory_depth(PARAMS)


@pytest.mark.parametrize("abort_at", [3, 300])
def test_abort_takes_the_safe_exit(abort_at):
    afe = model_afe()
    bench = Bench(afe)
    out = bench.run(settings_for(afe, avg_log2=0), abort_at=abort_at)
    assert out["error"] == ErrorCode.ABORTED
    assert out["cycles"] == abort_at + PARAMS.rows + 2
    assert bench.afe.ldac_cycles[-1] == abort_at + PARAMS.rows + 1   # Safe-LDAC
    assert_idle(out, afe)


def test_watchdog_ends_a_hung_conversion():
    afe = model_afe()
    bench = Bench(afe, hang_adc=True)
    settings = settings_for(afe)
    out = bench.run(settings, watchdog_limit=25)
    first_start = 1 + 1 + settings.cal_settle       # Setup, cal_settle, then the strobe
    assert bench.afe.conversions[0][0] == first_start
    assert out["error"] == ErrorCode.ADC_TIMEOUT
    assert out["cycles"] == first_start + 25 + PARAMS.rows + 2
    assert_idle(out, afe)


# ---- validation messages ---------------------------------------------------------------------

def test_parameter_validation_messages():
    with pytest.raises(TypeError, match=exact("params must be a BuildParams, got 3")):
        Calibrator(3)
    with pytest.raises(ValueError, match=exact(
            "calibration needs cal_ref_bits >= 3 to select the references 0 to 5, got 2")):
        Calibrator(BuildParams(cal_ref_bits=2))
    with pytest.raises(ValueError, match=exact(
            "calibration needs dac_bits >= 2 (the +-1/2 full-scale points), got 1")):
        Calibrator(BuildParams(dac_bits=1))
    with pytest.raises(ValueError, match=exact(
            "bits must be the build's adc_bits (10) or dac_bits (10), got 12")):
        CodeCorrection(PARAMS, 12)
    with pytest.raises(ValueError, match=exact("rows must be an integer >= 1; got 0")):
        cal.calibration_cycles(channels=1, rows=0, avg_log2=0, cal_settle=0, dac_settle=0,
                               analog_settle=0, adc_cycles=4)
    with pytest.raises(ValueError, match=exact("adc_cycles must be an integer >= 2; got 1")):
        cal.calibration_cycles(channels=1, rows=1, avg_log2=0, cal_settle=0, dac_settle=0,
                               analog_settle=0, adc_cycles=1)
    with pytest.raises(ValueError, match=exact("offset must be an integer from -16384 to 16383; "
                                               "got 16384")):
        cal.pack_coefficient(cal.Coefficient(2 ** 14, 0, True), adc_bits=10, dac_bits=10)
    with pytest.raises(ValueError, match=exact("code must be an integer from 0 to 1023; got 1024")):
        cal.correct_code(1024, cal.IDENTITY, 10)
    afe = model_afe()
    with pytest.raises(ValueError, match=exact("col_mask must be an integer from 1 to 7; got 0")):
        cal.golden_calibration(PARAMS, afe, cal.CalibrationSettings(col_mask=0, row_mask=1))
    with pytest.raises(ValueError, match=exact("settings must be a CalibrationSettings; got dict")):
        cal.golden_calibration(PARAMS, afe, {})
    with pytest.raises(ValueError, match=exact("afe must be an AnalogFrontEnd; got NoneType")):
        cal.golden_calibration(PARAMS, None, cal.CalibrationSettings(col_mask=1, row_mask=1))


def test_fastest_dac_walk_over_sparse_rows_equals_the_golden():
    """No settling and one sample a point: the walks' steps come as close as they can (E30's next
    row and E38's next column, registered a cycle after the walk moves, are what Store, ADC-Check
    and Opamp-Point take); the first and the last row of the array, a gap between them; both
    columns."""
    params = BuildParams(rows=8, cols=2, spare=0, avg_max_log2=1)
    rtl_afe, golden_afe = model_afe(params=params), model_afe(params=params)
    settings = cal.CalibrationSettings(col_mask=0b11, row_mask=0b1000_1101, avg_log2=0, cal_settle=0,
                                       dac_settle=0, analog_settle=1)
    bench = Bench(rtl_afe, params)
    out = bench.run(settings)
    golden = cal.golden_calibration(params, golden_afe, settings)
    assert out["error"] == ErrorCode.NONE
    identity = cal.pack_coefficient(cal.IDENTITY, adc_bits=params.adc_bits, dac_bits=params.dac_bits)
    assert out["words"] == [golden.words.get(a, identity) for a in range(calibration_memory_depth(params))]
    assert sorted(golden.words) == [0, 1, 2, 4, 5, 9, 10, 11], "channels 0, 1, rows 0, 2, 3, 7, columns 0, 1"
    assert (out["cycles"], out["quality"], out["failed"]) == \
        (golden.done_cycle, golden.quality, golden.failed_count)
    loopback_rows = [c["cell_row"] for _, c in bench.afe.conversions if c["cal_ref_sel"] == cal.REF_DAC_LOOPBACK]
    assert loopback_rows == [0, 0, 2, 2, 3, 3, 7, 7]


@pytest.mark.parametrize("name", ["rram-3bit", "pessimistic"])
def test_fastest_conversions_equal_the_golden(name):
    """The quickest ADC the controller admits (t_adc = 2 cycles), one sample a point, no
    settling, three channels: a point's offset * gain (registered apart from the product, E58)
    is the phase's by the state after Correct, its earliest user, with no cycle to spare; every
    word, the quality, the failures and the done cycle equal the golden. (The model has one
    ADC behind the mux, so the channels' ADC words are equal here: a word one cycle late would
    show only at a phase's change.)"""
    fast = dict(conversion_time_s=10e-9)
    rtl_afe, golden_afe = model_afe(name, **fast), model_afe(name, **fast)
    assert rtl_afe.adc_cycles == 2
    settings = cal.CalibrationSettings(col_mask=0b111, row_mask=0b1001, avg_log2=0, cal_settle=0,
                                       dac_settle=0, analog_settle=1)
    bench = Bench(rtl_afe)
    out = bench.run(settings)
    golden = cal.golden_calibration(PARAMS, golden_afe, settings)
    assert out["error"] == ErrorCode.NONE
    assert out["words"] == [golden.words.get(a, IDENTITY_WORD)
                            for a in range(calibration_memory_depth(PARAMS))]
    assert (out["cycles"], out["quality"], out["failed"]) == \
        (golden.done_cycle, golden.quality, golden.failed_count)
    adc_word = cal.unpack_coefficient(golden.words[0], adc_bits=PARAMS.adc_bits,
                                      dac_bits=PARAMS.dac_bits)
    assert adc_word.valid and (adc_word.offset, adc_word.gain) != (0, cal.GAIN_ONE), \
        "a correction that is not the identity"


@pytest.mark.parametrize("avg_log2", [5, 7])
def test_noisy_means_rounded_above_the_fraction_bits_equal_the_golden(avg_log2):
    """2^avg_log2 noisy samples a point with avg_log2 above FRAC_BITS: the mean's rounding
    matters (the sums start at 2^(avg_log2 - 1 - FRAC_BITS), E33), and the first point's sum
    starts with the avg_log2 of the start cycle."""
    params = BuildParams(rows=2, cols=2, spare=0, avg_max_log2=7)
    assert avg_log2 > cal.FRAC_BITS
    rtl_afe = model_afe(params=params, deterministic=False, seed=5)
    golden_afe = model_afe(params=params, deterministic=False, seed=5)
    settings = cal.CalibrationSettings(col_mask=0b1, row_mask=0b10, avg_log2=avg_log2, cal_settle=1,
                                       dac_settle=2, analog_settle=3)
    out = Bench(rtl_afe, params).run(settings, max_cycles=20_000)
    golden = cal.golden_calibration(params, golden_afe, settings)
    identity = cal.pack_coefficient(cal.IDENTITY, adc_bits=params.adc_bits, dac_bits=params.dac_bits)
    assert out["words"] == [golden.words.get(a, identity) for a in range(calibration_memory_depth(params))]
    assert (out["cycles"], out["quality"], out["failed"]) == \
        (golden.done_cycle, golden.quality, golden.failed_count)
    assert golden.words[0] != identity, "the channel's coefficient was measured"
