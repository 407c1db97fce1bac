"""The code-level AFE model (model/afe.py): validation, the contract's enums, DAC settling,
the closed-loop transient and its cache, READ_CELL, MVM, calibration references,
programming pulses, timing in cycles, determinism and seeding."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest

from anmf.hdl.afe import AFEMode, ProgPolarity
from anmf.hdl.params import BuildParams
from anmf.model.afe import (CAL_DAC_LOOPBACK, CAL_REFERENCES, AnalogFrontEnd, Mode, Polarity,
                            deterministic_config)
from anmf.model.config import preset
from anmf.model.device import WriteVerifyConfig
from anmf.model.formats import code_to_volts, volts_to_code

NS = 1e-9
SMALL = dict(rows=8, cols=4, spare=1, dac_bits=10, adc_bits=10)
ALL_ROWS, ALL_COLS = 0xFF, 0x1F


def exact(message: str) -> str:
    return "^" + re.escape(message) + "$"


def make(name: str = "rram-3bit", **options) -> AnalogFrontEnd:
    return AnalogFrontEnd(preset(name), **{**SMALL, **options})


def with_levels(afe: AnalogFrontEnd, seed: int = 1) -> np.ndarray:
    """Every cell at a random level above the lowest; returns A (units of g_unit)."""
    levels = afe.config.device.level_targets_s()
    g = levels[np.random.default_rng(seed).integers(1, levels.size,
                                                    (afe.rows, afe.total_cols))]
    afe.set_conductances(g, 0.0)
    circuit = afe.config.circuit
    return (np.asarray(afe.crossbar.conductance_s) - circuit.g_offset_s) / circuit.g_unit_s


def drive(afe: AnalogFrontEnd, codes, t_s: float) -> None:
    for row, code in enumerate(codes):
        afe.write_dac(row, int(code))
    afe.load_dacs(t_s)


# ---- the contract --------------------------------------------------------------------

def test_mode_and_polarity_values_are_the_contracts():
    assert {m.name: m.value for m in Mode} == {m.name: m.value for m in AFEMode}
    assert {p.name: p.value for p in Polarity} == {p.name: p.value for p in ProgPolarity}


@pytest.mark.parametrize("options, message", [
    ({"rows": 0}, "AnalogFrontEnd rows must be an integer >= 1; got 0"),
    ({"spare": -1}, "AnalogFrontEnd spare must be an integer >= 0; got -1"),
    ({"dac_bits": 17}, "AnalogFrontEnd dac_bits must be an integer from 1 to 16; got 17"),
    ({"adc_bits": 10.0}, "AnalogFrontEnd adc_bits must be an integer from 1 to 16; got 10.0"),
    ({"clock_hz": 0}, "AnalogFrontEnd clock_hz must be a finite number > 0; got 0"),
    ({"clock_hz": 1e13}, "AnalogFrontEnd clock_hz must give a period of at least 2 ps; got "
                         "10000000000000.0"),
    ({"deterministic": 1}, "AnalogFrontEnd deterministic must be True or False; got 1"),
    ({"amplitude_lsb_v": -0.01}, "AnalogFrontEnd amplitude_lsb_v must be a finite number > 0; "
                                 "got -0.01"),
    ({"pulse_overhead_s": math.nan}, "AnalogFrontEnd pulse_overhead_s must be a finite number "
                                     ">= 0; got nan"),
    ({"adc_latency_cycles": 0}, "AnalogFrontEnd adc_latency_cycles must be an integer >= 1; "
                                "got 0"),
    ({"rng": 3}, "AnalogFrontEnd rng must be a numpy.random.Generator or None; got int"),
])
def test_constructor_rejects_bad_options_with_exact_messages(options, message):
    with pytest.raises(ValueError, match=exact(message)):
        make(**options)


def test_constructor_needs_an_afe_config():
    with pytest.raises(ValueError, match=exact("AnalogFrontEnd needs an AFEConfig; got str")):
        AnalogFrontEnd("rram-3bit", **SMALL)


def test_build_parameters_override_the_configuration():
    params = BuildParams(rows=12, cols=3, spare=2, dac_bits=8, adc_bits=12, prog_amp_bits=6)
    afe = AnalogFrontEnd.from_build_params(preset("ideal"), params)
    assert afe.crossbar.shape == (12, 5)
    assert (afe.dac.bits, afe.adc.bits, afe.amp_bits) == (8, 12, 6)
    assert afe.circuit.cols == 5 and afe.dac.channels == 12 and afe.adc.channels == 1
    # The ideal preset's ADC has no quantization; the build's width turns it on.
    assert preset("ideal").adc.bits is None and afe.config.adc.bits == 12


# ---- determinism and seeding ---------------------------------------------------------

def test_deterministic_config_turns_only_the_noise_off():
    base = preset("rram-3bit")
    quiet = deterministic_config(base)
    assert (quiet.adc.noise_lsb, quiet.device.read_noise_rel) == (0.0, 0.0)
    assert quiet.adc.offset_std_v == base.adc.offset_std_v > 0
    assert quiet.circuit == base.circuit and quiet.dac == base.dac
    assert quiet.device.cycle_noise_rel == base.device.cycle_noise_rel > 0
    with pytest.raises(ValueError, match=exact("afe must be an AFEConfig; got dict")):
        deterministic_config({})


def test_deterministic_conversions_repeat_and_noisy_ones_scatter():
    quiet, noisy = make(deterministic=True), make()
    for afe in (quiet, noisy):
        afe.apply_controls(0.0, mode=Mode.CAL, loop=0, row_en=0, col_en=0, cal_ref_sel=1)
    assert len({quiet.convert(0, k * NS)[0] for k in range(20)}) == 1
    assert len({noisy.convert(0, k * NS)[0] for k in range(20)}) > 1


def test_twin_has_the_same_static_draws_and_history():
    afe = make()
    twin = afe.twin()
    assert np.array_equal(afe.crossbar.stuck_mask, twin.crossbar.stuck_mask)
    assert np.array_equal(afe.circuit.column_offset_v, twin.circuit.column_offset_v)
    assert np.array_equal(afe.adc.offset_v, twin.adc.offset_v)
    for model in (afe, twin):
        model.apply_controls(0.0, mode=Mode.PROGRAM, loop=0, row_en=0, col_en=0)
        model.pulse(2, 3, Polarity.SET, 150, 10, 10 * NS)
    assert np.array_equal(afe.crossbar.conductance_s, twin.crossbar.conductance_s)
    assert make().twin(deterministic=True).deterministic
    with pytest.raises(ValueError, match=exact("twin() needs an AFE built from its configuration's "
                                               "seed; this one was given an rng")):
        make(rng=np.random.default_rng(0)).twin()


def test_time_must_not_go_backwards():
    afe = make()
    afe.load_dacs(2e-6)
    with pytest.raises(ValueError, match=exact("AnalogFrontEnd time must not go backwards: got "
                                               "1e-06 s after 2e-06 s")):
        afe.load_dacs(1e-6)


# ---- DACs ----------------------------------------------------------------------------

def test_dac_outputs_change_only_on_ldac_and_reach_the_target_at_the_settle_time():
    afe = make(deterministic=True)
    before = afe.dac_output_v(0.0)
    afe.write_dac(0, 1000)
    assert np.array_equal(afe.dac_output_v(10 * NS), before), "an input write moved the output"
    afe.load_dacs(100 * NS)
    target = afe.dac.voltage(afe.dac_codes)
    settle = afe.config.dac.settle_time_s
    assert afe.dac_output_v(100 * NS)[0] == pytest.approx(before[0])
    halfway = afe.dac_output_v(100 * NS + settle / 2)[0]
    assert before[0] < halfway < target[0]
    # A full-scale step is within 1/2 LSB just before the settle time, exact from it on.
    late = afe.dac_output_v(100 * NS + settle - 1 * NS)[0]
    assert abs(late - target[0]) < afe.dac.lsb_v / 2
    assert afe.dac_output_v(100 * NS + settle)[0] == target[0]
    assert afe.dac_codes[0] == 1000 and afe.dac_codes[1] == 512


def test_dac_write_checks_the_port_ranges():
    afe = make()
    with pytest.raises(ValueError, match=exact("AnalogFrontEnd dac_addr must be an integer from 0 "
                                               "to 7; got 8")):
        afe.write_dac(8, 0)
    with pytest.raises(ValueError, match=exact("AnalogFrontEnd dac_data must be an integer from 0 "
                                               "to 1023; got 1024")):
        afe.write_dac(0, 1024)


# ---- closed loop ---------------------------------------------------------------------

def solving_afe(**options) -> tuple[AnalogFrontEnd, np.ndarray]:
    afe = make(deterministic=True, **options)
    a = with_levels(afe)
    x_true = np.full(afe.total_cols, 0.3)
    codes = volts_to_code(a @ x_true / afe.config.circuit.input_gain, 10)
    drive(afe, codes, 0.0)
    return afe, codes


def test_loop_starts_at_zero_volts_and_settles_to_the_circuit_steady_state():
    afe, _ = solving_afe()
    close = 2e-6  # DACs settled
    afe.apply_controls(close, mode=Mode.SOLVE, loop=1, row_en=ALL_ROWS, col_en=ALL_COLS)
    assert afe.analog_input_v(0, close) == 0.0
    steady = afe.solution().steady_state
    assert steady.min() > 0.2, "the right-hand side was built for x ~ 0.3 V"
    early = afe.analog_input_v(0, close + 0.1 * NS)
    assert 0.0 < early < steady[0], "just after closing the output is on its way"
    late = close + 5e-6
    outputs = np.array([afe.analog_input_v(c, late) for c in range(afe.total_cols)])
    assert np.allclose(outputs, steady, atol=1e-9)
    code, over = afe.convert(0, late)
    assert not over and abs(code - volts_to_code(steady[0], 10)) <= 4  # ADC offset/gain/INL


def test_the_solution_is_cached_until_a_change():
    afe, _ = solving_afe()
    afe.apply_controls(2e-6, mode=Mode.SOLVE, loop=1, row_en=ALL_ROWS, col_en=ALL_COLS)
    first = afe.solution()
    afe.convert(0, 2.1e-6)
    afe.apply_controls(2.2e-6, mode=Mode.SOLVE, loop=1, row_en=ALL_ROWS, col_en=ALL_COLS)
    assert afe.solution() is first, "unchanged controls rebuilt the solution"
    afe.apply_controls(2.3e-6, mode=Mode.SOLVE, loop=1, row_en=ALL_ROWS, col_en=0x0F)
    assert afe.solution() is not first


def test_a_change_while_closed_continues_from_the_present_outputs():
    afe, codes = solving_afe()
    afe.apply_controls(2e-6, mode=Mode.SOLVE, loop=1, row_en=ALL_ROWS, col_en=ALL_COLS)
    first = afe.solution().steady_state.copy()
    before = afe.analog_input_v(1, 2.05e-6)
    assert 0.0 < before
    afe.write_dac(0, int(codes[0]) + 50)
    afe.load_dacs(2.05e-6)
    assert afe.analog_input_v(1, 2.05e-6) == pytest.approx(before, abs=1e-12)
    # The DACs move from their old outputs: the new input is in full use once they settle.
    settled = 2.05e-6 + afe.config.dac.settle_time_s
    assert afe.analog_input_v(1, settled + 10 * NS) != pytest.approx(before, abs=1e-6)
    assert not np.allclose(afe.solution().steady_state, first), "the new input is not in use"


def test_opening_the_loop_resets_the_outputs():
    afe, _ = solving_afe()
    afe.apply_controls(2e-6, mode=Mode.SOLVE, loop=1, row_en=ALL_ROWS, col_en=ALL_COLS)
    assert afe.analog_input_v(0, 3e-6) > 0.2
    afe.apply_controls(3.1e-6, mode=Mode.SOLVE, loop=0, row_en=ALL_ROWS, col_en=ALL_COLS)
    assert afe.analog_input_v(0, 3.2e-6) == 0.0 and afe.solution() is None
    afe.close_loop(3.3e-6)
    assert afe.analog_input_v(0, 3.3e-6) == 0.0


def test_closing_before_the_dacs_settle_steps_the_input_when_they_do():
    afe, _ = solving_afe()
    ldac = 1e-6
    drive(afe, afe.dac_codes + 40, ldac)  # a new step: DACs move until ldac + settle
    settle = afe.config.dac.settle_time_s
    afe.apply_controls(ldac + 50 * NS, mode=Mode.SOLVE, loop=1, row_en=ALL_ROWS, col_en=ALL_COLS)
    frozen = afe.solution().steady_state.copy()   # input frozen at the unsettled DAC values
    reference = make(deterministic=True)          # same array, DACs settled before closing
    with_levels(reference)
    drive(reference, afe.dac_codes, 0.0)
    reference.apply_controls(ldac + 50 * NS, mode=Mode.SOLVE, loop=1, row_en=ALL_ROWS,
                             col_en=ALL_COLS)
    late = ldac + settle + 5e-6
    assert afe.analog_input_v(0, late) == pytest.approx(reference.analog_input_v(0, late),
                                                        abs=1e-9)
    assert not np.allclose(frozen, afe.solution().steady_state), "no step at the settle time"


def test_free_mode_goes_below_zero_where_clamped_mode_holds_the_clamp():
    afe = make(deterministic=True)
    with_levels(afe)
    drive(afe, [400] * afe.rows, 0.0)  # negative inputs
    afe.apply_controls(2e-6, mode=Mode.SOLVE, loop=1, row_en=ALL_ROWS, col_en=ALL_COLS)
    clamped = afe.analog_input_v(0, 8e-6)
    afe.apply_controls(9e-6, mode=Mode.SOLVE_FREE, loop=0, row_en=ALL_ROWS, col_en=ALL_COLS)
    afe.close_loop(9e-6)
    free = [afe.analog_input_v(c, 20e-6) for c in range(afe.total_cols)]
    assert clamped >= -afe.config.circuit.clamp_v - 1e-12
    assert min(free) < -afe.config.circuit.clamp_v


# ---- MVM -----------------------------------------------------------------------------

def test_mvm_reads_the_compensated_product_through_the_sense_gain():
    afe = make("ideal")
    a = with_levels(afe)
    v_codes = np.arange(afe.rows) * 40 + 520
    drive(afe, v_codes, 0.0)
    afe.apply_controls(1e-6, mode=Mode.MVM, loop=1, row_en=0b1011_0111, col_en=0b10110)
    rows_on = np.array([(0b1011_0111 >> r) & 1 for r in range(afe.rows)], dtype=bool)
    v = afe.dac.voltage(v_codes)
    g_unit = afe.config.circuit.g_unit_s
    expected = (a[rows_on].T @ v[rows_on]) * g_unit / afe.mvm_feedback_s
    # The sense amplifiers settle: as the loop closes the outputs are still 0 V.
    assert afe.analog_input_v(1, 1e-6) == 0.0
    got = [afe.analog_input_v(c, 3e-6) for c in range(afe.total_cols)]
    for col in range(afe.total_cols):
        want = expected[col] if (0b10110 >> col) & 1 else 0.0
        assert got[col] == pytest.approx(want, rel=1e-9, abs=1e-12)
    # Full scale by default: every row at +1 V on cells at g_max reads 1 V.
    device = afe.config.device
    assert afe.mvm_feedback_s == pytest.approx(afe.rows * (device.g_max_s
                                                           - afe.config.circuit.g_offset_s))


# ---- READ_CELL -----------------------------------------------------------------------

def test_read_cell_codes_follow_the_documented_read_scale():
    afe = make("ideal")
    g = afe.config.device.g_max_s
    assert afe.read_full_scale_s == pytest.approx(40e-6)
    assert afe.conductance_code(g) == 960 and afe.conductance_code(0.0) == 512
    assert afe.code_conductance(960) == pytest.approx(g, rel=1e-12)
    afe.set_conductances(np.where(np.arange(afe.total_cols) == 3, 20e-6, 10e-6)[None, :]
                         .repeat(afe.rows, 0), 0.0)
    # Ideal preset: no wire drop, no converter errors: the read code is the ideal code.
    assert afe.read_cell(2, 3, 1e-6) == (afe.conductance_code(20e-6), False)
    afe.apply_controls(2e-6, mode=Mode.READ_CELL, loop=0, row_en=0, col_en=0, cell_row=2,
                       cell_col=3)
    assert afe.convert(7, 2e-6) == (512, False), "sampled as the cell is selected: 0 V"
    one_tau = afe.analog_input_v(0, 2e-6 + afe.read_settle_tau_s)
    assert one_tau == pytest.approx(0.5 * (1 - math.exp(-1)), rel=1e-9)  # 20 uS reads 0.5 V
    assert afe.convert(7, 3e-6) == (afe.conductance_code(20e-6), False)


def test_read_noise_scatters_only_when_not_deterministic():
    for deterministic, distinct in ((True, 1), (False, 2)):
        afe = make(deterministic=deterministic)
        with_levels(afe)
        codes = {afe.read_cell(1, 1, k * 1e-6)[0] for k in range(12)}
        assert (len(codes) == 1) == (distinct == 1), codes


# ---- programming ---------------------------------------------------------------------

def test_pulses_move_cells_only_in_program_mode_and_report_their_end():
    afe = make("ideal")
    g0 = afe.crossbar.conductance_s[1, 2]
    afe.apply_controls(0.0, mode=Mode.PROGRAM, loop=0, row_en=0, col_en=0, cell_row=1, cell_col=2)
    end = afe.pulse(1, 2, Polarity.SET, 150, 10, 1e-6)
    assert end == pytest.approx(1e-6 + 100e-9 + afe.pulse_overhead_s)
    g1 = afe.crossbar.conductance_s[1, 2]
    afe.pulse(1, 2, Polarity.RESET, 150, 10, 2e-6)
    assert g1 > g0 and afe.crossbar.conductance_s[1, 2] < g1
    afe.set_mode(Mode.IDLE, 3e-6)
    before = afe.crossbar.conductance_s.copy()
    afe.pulse(1, 2, Polarity.SET, 200, 10, 3e-6)
    assert np.array_equal(afe.crossbar.conductance_s, before)
    assert afe.violations == ["t=3000000 ps: prog_fire in mode IDLE"]


def test_timing_in_cycles():
    afe = make()
    # rram-3bit: 1.2 us conversions at 100 MHz: busy 120 cycles after a 1-cycle latency.
    assert (afe.adc_busy_cycles, afe.adc_cycles) == (120, 121)
    assert afe.pulse_cycles(10) == 12   # 100 ns + 20 ns overhead
    assert afe.pulse_cycles(0) == 2
    assert make(pulse_overhead_s=0.0).pulse_cycles(0) == 1, "done comes at least a cycle later"
    assert make(clock_hz=50e6).adc_busy_cycles == 60


def test_program_settings_for_the_write_verify_defaults():
    settings = make().program_settings(read_settle=9)
    assert (settings.tolerance, settings.amp_start, settings.amp_step, settings.amp_max,
            settings.pulse_width, settings.pulse_budget, settings.avg_log2,
            settings.read_settle) == (6, 100, 5, 200, 10, 100, 0, 9)
    assert make().program_settings(WriteVerifyConfig(reads_per_verify=4)).avg_log2 == 2
    with pytest.raises(ValueError, match=exact("WriteVerifyConfig.reads_per_verify must be a power "
                                               "of two for the controller's averaging; got 3")):
        make().program_settings(WriteVerifyConfig(reads_per_verify=3))
    with pytest.raises(ValueError, match=exact("amplitude_max_v = 3.0 needs code 300, beyond the "
                                               "8-bit maximum 255 (LSB 0.01)")):
        make().program_settings(WriteVerifyConfig(amplitude_max_v=3.0))


# ---- calibration ---------------------------------------------------------------------

def test_calibration_references_and_dac_loopback():
    afe = make("ideal")
    assert CAL_REFERENCES[5] == CAL_DAC_LOOPBACK
    drive(afe, [512, 900] + [512] * 6, 0.0)
    readings = []
    for sel in range(8):
        afe.apply_controls(1e-6 * (sel + 1), mode=Mode.CAL, loop=0, row_en=0, col_en=0,
                           cell_row=1, cal_ref_sel=sel)
        readings.append(afe.convert(0, 1e-6 * (sel + 1))[0])
    assert readings == [512, 768, 256, 960, 64, 900, 512, 512]
    assert code_to_volts(readings[1], 10) == 0.5
