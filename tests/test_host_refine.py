"""The host API of REFINE and of the over-range retry (src/anmf/host): ModelDriver bit for bit
with the golden model (GoldenController.refine, solve_with_retries), counters, and argument
validation before any bus access with the exact messages. RegisterDriver against the RTL:
tests/test_refine_cocotb.py (cocotb, Icarus and Verilator)."""
from __future__ import annotations

import re
from dataclasses import replace
from typing import Any, Awaitable, Callable

import numpy as np
import pytest

from anmf.hdl.params import BuildParams
from anmf.hdl.registers import build_register_map
from anmf.hdl.regmap_export import host_constants
from anmf.host import ModelDriver, RegisterDriver, Timing, UnsupportedChip
from anmf.model.afe import AnalogFrontEnd, Mode
from anmf.model.config import config_from_dict
from anmf.model.formats import unpack_result
from anmf.model.golden import Error, GoldenController
from anmf.model.refinement import correction_gain, relative_residual
from test_host_driver import UntouchableBus, run   # module import: no test collected

PARAMS = BuildParams(rows=16, cols=8, spare=1, avg_max_log2=2)
REGS = host_constants(build_register_map(PARAMS))
TIMING = Timing(adc_samples=1, dac_settle=15, analog_settle=25, watchdog=4000)
AFE = {"preset": "rram-3bit", "seed": 4, "adc": {"conversion_time_s": 200e-9},
       "crossbar": {"ir_drop": False}}
EVERY_ROW, EVERY_COL = 2 ** PARAMS.rows - 1, 2 ** PARAMS.cols - 1
B_FRAC_BITS = 20


def exact(message: str) -> str:
    return "^" + re.escape(message) + "$"


def model_and_golden(params: BuildParams = PARAMS) -> tuple[ModelDriver, GoldenController,
                                                             AnalogFrontEnd]:
    afe = AnalogFrontEnd.from_build_params(config_from_dict(AFE), params, deterministic=True,
                                           clock_hz=25e6)
    golden = GoldenController(params, afe.twin())
    return ModelDriver(params, afe), golden, afe


def levels_and_b(afe: AnalogFrontEnd, a_codes: np.ndarray, a_offset: int,
                 seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = (a_codes - a_offset).astype(np.float64)
    b = a @ rng.uniform(0.1, 1.0, PARAMS.cols)
    b *= 0.8 * 511 / np.abs(b).max()
    return np.rint(b * 2.0 ** B_FRAC_BITS).astype(np.int64)


def test_model_refine_after_program_matrix_equals_the_golden_model() -> None:
    driver, golden, afe = model_and_golden()
    settings = afe.program_settings(read_settle=4)
    run(driver.configure(timing=TIMING, programming=settings))
    circuit = afe.config.circuit
    rng = np.random.default_rng(0)
    while True:
        levels = rng.integers(0, 8, (PARAMS.rows, PARAMS.cols))
        if np.linalg.cond(levels) <= 20:
            break
    targets = np.array(afe.conductance_code(circuit.g_offset_s + circuit.g_unit_s * levels),
                       dtype=np.int64)
    run(driver.write_targets(targets))
    report = run(driver.program_matrix(EVERY_ROW, EVERY_COL))
    full = np.zeros((PARAMS.rows, PARAMS.total_cols), dtype=np.int64)
    full[:, :PARAMS.cols] = targets
    golden.load_targets(full)
    programmed = golden.program_matrix(settings, row_mask=EVERY_ROW, col_mask=EVERY_COL,
                                       watchdog_limit=TIMING.watchdog)
    assert report.pulses == programmed.pulse_count
    assert np.array_equal(driver.golden.refine_a, golden.refine_a)
    a_offset = int(afe.conductance_code(circuit.g_offset_s))
    gain, gain_shift = correction_gain(afe)
    b = levels_and_b(afe, golden.refine_a, a_offset, seed=1)
    before = run(driver.counters())
    result = run(driver.refine(b, passes=4, row_mask=EVERY_ROW, col_enable=EVERY_COL,
                               a_offset=a_offset, gain=gain, gain_shift=gain_shift,
                               b_frac_bits=B_FRAC_BITS))
    after = run(driver.counters())
    golden.refine_b[:] = b
    expected = golden.refine(passes=4, a_offset=a_offset, gain=gain, gain_shift=gain_shift,
                             headroom=2, row_mask=EVERY_ROW, col_mask=EVERY_COL, avg_log2=0,
                             dac_settle=TIMING.dac_settle, analog_settle=TIMING.analog_settle,
                             watchdog_limit=TIMING.watchdog)
    assert expected.error == Error.NONE and expected.passes_done == 5
    assert result.x_words.tolist() == golden.refine_x.tolist()
    assert np.array_equal(result.x, golden.refine_x * 2.0 ** -B_FRAC_BITS)
    assert (result.passes_done, result.residual_msb, result.over_range) == \
        (expected.passes_done, max(expected.peaks[-1], 0), expected.over_range)
    assert after.solves - before.solves == 5
    assert np.array_equal(driver.golden.results, golden.results), "each pass's RESULTS"
    assert run(driver.status()).error == Error.NONE
    eta = relative_residual((golden.refine_a - a_offset).astype(np.float64),
                            b.astype(np.float64), result.x_words)
    assert eta < 2.0 ** -12, f"relative residual {eta:.2e}"


def test_model_refine_with_given_a_codes_and_a_row_mask_equals_the_golden_model() -> None:
    driver, golden, afe = model_and_golden()
    run(driver.configure(timing=TIMING))
    # A's values only (no programming): the host writes REFINE_A; the analog matrix is what
    # the cells hold at power-up, so the run need not converge: bit-exactness is the point.
    a_codes = np.random.default_rng(5).integers(530, 900, (PARAMS.rows, PARAMS.cols))
    row_mask, col_enable = 0x7FFE, 0b1011_0111
    b = levels_and_b(afe, a_codes, 518, seed=2)
    b[0] = -1 << 31                           # row 0 is outside row_mask: never used
    result = run(driver.refine(b, passes=2, row_mask=row_mask, col_enable=col_enable,
                               a_offset=518, gain=132972, gain_shift=35, headroom=1,
                               a_codes=a_codes))
    golden.refine_a[:] = a_codes
    golden.refine_b[1:] = b[1:]
    expected = golden.refine(passes=2, a_offset=518, gain=132972, gain_shift=35, headroom=1,
                             row_mask=row_mask, col_mask=col_enable, avg_log2=0,
                             dac_settle=TIMING.dac_settle, analog_settle=TIMING.analog_settle,
                             watchdog_limit=TIMING.watchdog)
    assert np.array_equal(driver.golden.refine_a, a_codes)
    assert driver.golden.refine_b[0] == 0, "rows outside row_mask are not written"
    assert result.x_words.tolist() == expected.x.tolist()
    assert not result.x_words[[3, 6]].any(), "columns outside col_enable stay 0"
    assert result.passes_done == expected.passes_done


#: Halvings this problem needs before no result is over range.
RESOLVED_AFTER = 3


@pytest.mark.parametrize("limit", [0, 1, 4])
def test_model_solve_retries_like_the_golden_model(limit: int) -> None:
    driver, golden, afe = model_and_golden()
    timing = replace(TIMING, solve_retries=limit)
    run(driver.configure(timing=timing))
    g = afe.config.device.level_targets_s()[np.random.default_rng(1).integers(
        1, 3, (PARAMS.rows, PARAMS.total_cols))]
    afe.set_conductances(g, 0.0)
    golden.afe.set_conductances(g, 0.0)
    rhs = 512 + (400 * np.random.default_rng(3).uniform(-0.2, 1, PARAMS.rows)).astype(np.int64)
    result = run(driver.solve(rhs, EVERY_ROW, EVERY_COL, "SOLVE_FREE"))
    counters = run(driver.counters())
    golden.load_rhs(rhs)
    expected = golden.solve_with_retries(Mode.SOLVE_FREE, retries=limit, row_mask=EVERY_ROW,
                                         col_mask=EVERY_COL, avg_log2=0,
                                         dac_settle=TIMING.dac_settle,
                                         analog_settle=TIMING.analog_settle,
                                         watchdog_limit=TIMING.watchdog)
    assert expected.error == Error.NONE and expected.exponent == min(limit, RESOLVED_AFTER), \
        expected
    unpacked = [unpack_result(expected.words[c], PARAMS.adc_bits) for c in range(PARAMS.cols)]
    assert result.codes.tolist() == [code for code, _ in unpacked]
    assert result.over_range.tolist() == [over for _, over in unpacked]
    assert result.exponent == expected.exponent
    assert (counters.solves, counters.over_range, counters.range_retries) == \
        (expected.exponent + 1, expected.over_range_count, expected.retries)
    assert result.any_over_range == (limit < RESOLVED_AFTER)


B = np.zeros(PARAMS.rows, dtype=np.int64)
REFINE = dict(passes=4, row_mask=EVERY_ROW, col_enable=EVERY_COL, a_offset=518, gain=132972,
              gain_shift=35)
REFUSALS: dict[str, tuple[Callable[[RegisterDriver], Awaitable[Any]], type, str]] = {
    "retries": (lambda d: d.configure(timing=replace(TIMING, solve_retries=16)), ValueError,
                "Timing.solve_retries must be an integer from 0 to 15 (retries); got 16"),
    "b shape": (lambda d: d.refine(np.zeros(8, dtype=np.int64), **REFINE), ValueError,
                "b must be a (16,) vector of integers from -2147483648 to 2147483647 (32-bit "
                "two's complement); got int64 array of shape (8,)"),
    "b range": (lambda d: d.refine(B + (1 << 31), **REFINE), ValueError,
                "b must be a (16,) vector of integers from -2147483648 to 2147483647 (32-bit "
                "two's complement); got int64 array of shape (16,)"),
    "b floats": (lambda d: d.refine(B * 0.5, **REFINE), ValueError,
                 "b must be a (16,) vector of integers from -2147483648 to 2147483647 (32-bit "
                 "two's complement); got float64 array of shape (16,)"),
    "passes": (lambda d: d.refine(B, **{**REFINE, "passes": 16}), ValueError,
               "passes must be an integer from 0 to 15 (passes after pass 0); got 16"),
    "spare column": (lambda d: d.refine(B, **{**REFINE, "col_enable": 1 << 8}), ValueError,
                     "col_enable must be a bit mask with at least one of the 8 solution "
                     "columns set (1 to 0xFF); got 256"),
    "rows": (lambda d: d.refine(B, **{**REFINE, "row_mask": 0}), ValueError,
             "row_mask must be a bit mask with at least one of the 16 rows set (1 to 0xFFFF); "
             "got 0"),
    "a_offset": (lambda d: d.refine(B, **{**REFINE, "a_offset": 1024}), ValueError,
                 "a_offset must be an integer from 0 to 1023 (ADC codes); got 1024"),
    "gain": (lambda d: d.refine(B, **{**REFINE, "gain": 1 << 18}), ValueError,
             "gain must be an integer from 0 to 262143; got 262144"),
    "gain_shift": (lambda d: d.refine(B, **{**REFINE, "gain_shift": 64}), ValueError,
                   "gain_shift must be an integer from 0 to 63; got 64"),
    "headroom": (lambda d: d.refine(B, **REFINE, headroom=4), ValueError,
                 "headroom must be an integer from 0 to 3 (DAC bits); got 4"),
    "b_frac_bits": (lambda d: d.refine(B, **REFINE, b_frac_bits=32), ValueError,
                    "b_frac_bits must be an integer from 0 to 31 (bits); got 32"),
    "a_codes": (lambda d: d.refine(B, **REFINE, a_codes=np.zeros((16, 9), dtype=np.int64)),
                ValueError, "a_codes must be a (16, 8) array (ROWS x COLS) of integer codes "
                            "from 0 to 1023; got int64 array of shape (16, 9)"),
    "unconfigured": (lambda d: d.refine(B, **REFINE), RuntimeError,
                     "refine needs the timing: call configure(timing=Timing(...)) first"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_refine_and_retry_arguments_are_refused_before_the_bus_is_touched(case: str) -> None:
    call, kind, message = REFUSALS[case]
    bus = UntouchableBus()
    driver = RegisterDriver(bus, REGS)
    if case != "unconfigured":
        driver.timing = TIMING   # as after configure()
    with pytest.raises(kind, match=exact(message)):
        run(call(driver))
    assert bus.accesses == [], f"the bus was touched: {bus.accesses}"


def test_a_build_without_refine_is_refused_by_both_backends() -> None:
    params = replace(PARAMS, refinement=False)
    message = exact("refine: the chip was built without REFINE (no REFINE_* registers)")
    bus = UntouchableBus()
    driver = RegisterDriver(bus, host_constants(build_register_map(params)))
    driver.timing = TIMING
    with pytest.raises(UnsupportedChip, match=message):
        run(driver.refine(B, **REFINE))
    assert bus.accesses == []
    model, _, _ = model_and_golden(params)
    run(model.configure(timing=TIMING))
    with pytest.raises(UnsupportedChip, match=message):
        run(model.refine(B, **REFINE))


def test_register_driver_writes_solve_retries_with_the_timing() -> None:
    bus = UntouchableBus()
    driver = RegisterDriver(bus, REGS)
    run(driver.configure(timing=replace(TIMING, solve_retries=3)))
    assert bus.memory[REGS.SOLVE_RETRIES.offset] == REGS.SOLVE_RETRIES.pack(limit=3)
