"""Row DACs and solution ADCs: validation, quantization, static errors, noise, seeding."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest

from anmf.model.converters import ADC, DAC, ADCConfig, DACConfig


def exact(message: str) -> str:
    return "^" + re.escape(message) + "$"


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def error_free_dac(**changes) -> DAC:
    """10-bit DAC without static errors (quantization only)."""
    config = DACConfig(offset_std_v=0.0, gain_error_std=0.0, inl_lsb=0.0).replace(**changes)
    return DAC(4, config, rng())


def error_free_adc(**changes) -> ADC:
    config = ADCConfig(offset_std_v=0.0, gain_error_std=0.0, inl_lsb=0.0, dnl_lsb=0.0,
                       noise_lsb=0.0).replace(**changes)
    return ADC(4, config, rng())


# ---- config validation -----------------------------------------------------------------

@pytest.mark.parametrize("changes, message", [
    ({"bits": 0}, "DACConfig.bits must be an integer from 1 to 16, or None for an ideal "
                  "converter without quantization; got 0"),
    ({"bits": 10.0}, "DACConfig.bits must be an integer from 1 to 16, or None for an ideal "
                     "converter without quantization; got 10.0"),
    ({"bits": True}, "DACConfig.bits must be an integer from 1 to 16, or None for an ideal "
                     "converter without quantization; got True"),
    ({"v_min_v": 1.0}, "DACConfig needs v_min_v < v_max_v; got 1.0 and 1.0"),
    ({"v_max_v": math.inf}, "DACConfig.v_max_v must be finite; got inf"),
    ({"offset_std_v": -1e-3}, "DACConfig.offset_std_v must be >= 0; got -0.001"),
    ({"gain_error_std": 1.0}, "DACConfig.gain_error_std must be in [0, 1); got 1.0"),
    ({"inl_lsb": "0.5"}, "DACConfig.inl_lsb must be a number; got '0.5'"),
    ({"settle_time_s": -1.0}, "DACConfig.settle_time_s must be >= 0; got -1.0"),
    ({"bits": None}, "DACConfig.inl_lsb must be 0 when bits is None (an ideal converter has "
                     "no LSB); got 0.5"),
])
def test_dac_config_rejects_bad_fields_with_exact_message(changes, message):
    with pytest.raises(ValueError, match=exact(message)):
        DACConfig(**changes)


@pytest.mark.parametrize("changes, message", [
    ({"bits": 17}, "ADCConfig.bits must be an integer from 1 to 16, or None for an ideal "
                   "converter without quantization; got 17"),
    ({"v_min_v": 2.0}, "ADCConfig needs v_min_v < v_max_v; got 2.0 and 1.0"),
    ({"dnl_lsb": 1.0}, "ADCConfig.dnl_lsb must be in [0, 1); got 1.0"),
    ({"noise_lsb": -0.1}, "ADCConfig.noise_lsb must be >= 0; got -0.1"),
    ({"conversion_cycles": 0}, "ADCConfig.conversion_cycles must be an integer >= 1; got 0"),
    ({"conversion_cycles": 9}, "ADCConfig.conversion_cycles must be >= bits (a SAR decides "
                               "one bit per cycle); got 9 cycles for 10 bits"),
    ({"conversion_time_s": 0.0}, "ADCConfig.conversion_time_s must be > 0; got 0.0"),
    ({"bits": None, "inl_lsb": 0.0, "dnl_lsb": 0.0},
     "ADCConfig.noise_lsb must be 0 when bits is None (an ideal converter has no LSB); got 0.3"),
])
def test_adc_config_rejects_bad_fields_with_exact_message(changes, message):
    with pytest.raises(ValueError, match=exact(message)):
        ADCConfig(**changes)


def test_presets_order_the_errors():
    ideal, real, bad = ADCConfig.ideal(), ADCConfig(), ADCConfig.pessimistic()
    assert ideal.bits is None and real.bits == 10
    for name in ("offset_std_v", "gain_error_std", "inl_lsb", "dnl_lsb", "noise_lsb"):
        assert getattr(ideal, name) == 0.0 < getattr(real, name) < getattr(bad, name), name
    assert ideal.conversion_time_s == real.conversion_time_s < bad.conversion_time_s
    dac_ideal, dac_real, dac_bad = DACConfig.ideal(), DACConfig(), DACConfig.pessimistic()
    assert dac_ideal.bits is None
    for name in ("offset_std_v", "gain_error_std", "inl_lsb"):
        assert getattr(dac_ideal, name) == 0.0 < getattr(dac_real, name) < getattr(dac_bad, name)


def test_converter_constructors_validate_arguments():
    with pytest.raises(ValueError, match=exact("DAC channels must be an integer >= 1; got 0")):
        DAC(0, DACConfig(), rng())
    with pytest.raises(ValueError, match=exact("ADC needs a numpy.random.Generator; got int")):
        ADC(2, ADCConfig(), 7)
    with pytest.raises(ValueError, match=exact("DAC needs a DACConfig; got ADCConfig")):
        DAC(2, ADCConfig(), rng())


# ---- code convention and quantization ----------------------------------------------------

def test_dac_code_convention_is_offset_binary_with_zero_at_mid_code():
    dac = error_free_dac()
    assert dac.lsb_v == 2.0 / 1024 and dac.full_scale_code == 1023
    codes = np.array([0, 512, 1023, 1])
    np.testing.assert_array_equal(dac.voltage(codes, channels=np.zeros(4, dtype=int)),
                                  [-1.0, 0.0, 1.0 - 2.0 / 1024, -1.0 + 2.0 / 1024])
    np.testing.assert_array_equal(dac.code_for([0.0, -5.0, 5.0]), [512, 0, 1023])


def test_error_free_dac_reproduces_any_in_range_voltage_within_half_an_lsb():
    dac = error_free_dac()
    wanted = np.linspace(-1.0, 1.0 - dac.lsb_v, 4 * 3001).reshape(4, -1)
    driven = dac.voltage(dac.code_for(wanted))
    assert np.abs(driven - wanted).max() <= 0.5 * dac.lsb_v * (1 + 1e-12)


def test_error_free_adc_quantizes_within_half_an_lsb_and_flags_only_outside():
    adc = error_free_adc()
    low, high = adc.input_range_v()
    assert (low, high) == (-1.0 - adc.lsb_v / 2, 1.0 - adc.lsb_v / 2)
    v = np.linspace(low, high, 4 * 5000, endpoint=False).reshape(4, -1)
    codes, over = adc.convert(v)
    assert codes.dtype == np.int64 and not over.any()
    assert np.abs(adc.voltage_of(codes) - v).max() <= 0.5 * adc.lsb_v * (1 + 1e-12)
    codes, over = adc.convert(np.array([-1.2, low - 1e-9, high, 3.0]))
    np.testing.assert_array_equal(codes, [0, 0, 1023, 1023])
    np.testing.assert_array_equal(over, [True, True, True, True])


def test_sar_search_matches_a_direct_lookup_of_the_transition_levels():
    adc = ADC(3, ADCConfig(offset_std_v=0.0, gain_error_std=0.0, noise_lsb=0.0, inl_lsb=1.5,
                           dnl_lsb=0.6), rng(3))
    v = rng(4).uniform(-1.1, 1.1, (3, 2000))
    codes, _ = adc.convert(v)
    levels = adc.transitions_v
    expected = np.stack([np.searchsorted(levels[c, 1:], v[c], side="right") for c in range(3)])
    np.testing.assert_array_equal(codes, expected)


def test_ideal_converters_pass_voltages_through_and_flag_the_range():
    dac = DAC(3, DACConfig.ideal(), rng())
    assert dac.lsb_v == 0.0 and dac.full_scale_code is None
    v = np.array([-0.123456789, 0.0, 0.987654321])
    np.testing.assert_array_equal(dac.voltage(dac.code_for(v)), v)
    np.testing.assert_array_equal(dac.code_for([2.0, -2.0]), [1.0, -1.0])
    adc = ADC(3, ADCConfig.ideal(), rng())
    codes, over = adc.convert(np.array([0.3333333333, -1.5, 1.5]))
    np.testing.assert_array_equal(adc.voltage_of(codes), [0.3333333333, -1.0, 1.0])
    np.testing.assert_array_equal(over, [False, True, True])


# ---- static errors -----------------------------------------------------------------------

def test_dac_offset_and_gain_are_applied_per_channel():
    dac = DAC(6, DACConfig(inl_lsb=0.0, offset_std_v=3e-3, gain_error_std=0.01), rng(1))
    assert np.unique(dac.offset_v).size == 6 and np.unique(dac.gain_error).size == 6
    codes = np.array([[0, 256, 512, 900]] * 6)
    ideal = -1.0 + codes * dac.lsb_v
    expected = (1.0 + dac.gain_error[:, None]) * ideal + dac.offset_v[:, None]
    np.testing.assert_allclose(dac.voltage(codes), expected, rtol=0, atol=1e-15)
    # At mid code (0 V) only the offset remains.
    np.testing.assert_allclose(dac.voltage(np.full(6, 512)), dac.offset_v, atol=1e-15)


def test_dac_inl_is_a_bow_zero_at_the_ends_bounded_by_inl_lsb():
    dac = DAC(5, DACConfig(offset_std_v=0.0, gain_error_std=0.0, inl_lsb=2.0), rng(2))
    codes = np.tile(np.arange(1024), (5, 1))
    error_lsb = (dac.voltage(codes) - dac.ideal_voltage(codes)) / dac.lsb_v
    np.testing.assert_allclose(error_lsb[:, [0, -1]], 0.0, atol=1e-9)
    assert np.abs(error_lsb).max() <= 2.0 + 1e-9
    mid = error_lsb[:, 511:513].mean(axis=1)
    np.testing.assert_allclose(mid, dac.inl_amplitude_lsb, atol=1e-5)
    assert np.abs(dac.inl_amplitude_lsb).max() > 0.5


def test_adc_offset_and_gain_shift_the_codes_as_an_input_error():
    adc = ADC(4, ADCConfig(offset_std_v=4e-3, gain_error_std=0.02, inl_lsb=0.0, dnl_lsb=0.0,
                           noise_lsb=0.0), rng(5))
    v = rng(6).uniform(-0.9, 0.9, (4, 3000))
    codes, _ = adc.convert(v)
    seen = (1.0 + adc.gain_error[:, None]) * v + adc.offset_v[:, None]
    expected = np.rint((seen + 1.0) / adc.lsb_v).astype(np.int64)
    np.testing.assert_array_equal(codes, expected)
    assert np.any(codes != np.rint((v + 1.0) / adc.lsb_v))


def test_adc_dnl_gives_random_code_widths_within_bounds():
    adc = ADC(2, ADCConfig(offset_std_v=0.0, gain_error_std=0.0, inl_lsb=0.0, dnl_lsb=0.4,
                           noise_lsb=0.0), rng(7))
    widths = np.diff(adc.transitions_v[:, 1:], axis=1) / adc.lsb_v
    dnl = widths - 1.0
    assert np.abs(dnl).max() < 0.4 and np.abs(dnl).max() > 0.35
    assert dnl.std() > 0.1
    # Transitions jitter about their ideal place: the DNL does not accumulate into INL.
    k = np.arange(1, 1024)
    inl = (adc.transitions_v[:, 1:] - (-1.0 + (k - 0.5) * adc.lsb_v)) / adc.lsb_v
    assert np.abs(inl).max() <= 0.2 + 1e-9


def test_adc_rejects_an_inl_that_breaks_monotonicity():
    with pytest.raises(ValueError, match=exact(
            "ADC transition levels are not monotonic: inl_lsb is too large for 4 bits; "
            "got inl_lsb=50.0")):
        ADC(1, ADCConfig(bits=4, inl_lsb=50.0), rng())


def test_adc_noise_is_drawn_per_conversion_with_the_configured_rms():
    adc = ADC(1, ADCConfig(offset_std_v=0.0, gain_error_std=0.0, inl_lsb=0.0, dnl_lsb=0.0,
                           noise_lsb=1.0), rng(8))
    v = np.full(20000, 0.1234)
    codes, _ = adc.convert(v, channels=np.zeros(20000, dtype=int))
    ideal = (0.1234 + 1.0) / adc.lsb_v
    # rms of (noise + quantization) about the ideal position: sqrt(1 + 1/12) LSB.
    rms = np.sqrt(np.mean((codes - ideal) ** 2))
    assert abs(rms - np.sqrt(1 + 1 / 12)) < 0.05
    second, _ = adc.convert(v, channels=np.zeros(20000, dtype=int))
    assert np.any(second != codes)


# ---- seeding and channel addressing --------------------------------------------------------

def test_same_seed_same_result_different_seed_different_result():
    config = ADCConfig.pessimistic()
    v = np.linspace(-0.9, 0.9, 8 * 50).reshape(8, 50)
    first = ADC(8, config, rng(11)).convert(v)[0]
    again = ADC(8, config, rng(11)).convert(v)[0]
    other = ADC(8, config, rng(12)).convert(v)[0]
    np.testing.assert_array_equal(first, again)
    assert np.any(first != other)
    codes = np.tile(np.arange(0, 1024, 7), (8, 1))
    dac_first = DAC(8, DACConfig.pessimistic(), rng(11)).voltage(codes)
    np.testing.assert_array_equal(dac_first, DAC(8, DACConfig.pessimistic(), rng(11)).voltage(codes))
    assert np.any(dac_first != DAC(8, DACConfig.pessimistic(), rng(13)).voltage(codes))


def test_explicit_channels_address_single_converters():
    dac = DAC(4, DACConfig(offset_std_v=5e-3, inl_lsb=0.0, gain_error_std=0.0), rng(9))
    out = dac.voltage(np.array([512, 512, 512]), channels=np.array([3, 0, 3]))
    np.testing.assert_allclose(out, dac.offset_v[[3, 0, 3]], atol=1e-15)


@pytest.mark.parametrize("call, message", [
    (lambda d, a: d.voltage(np.array([1.5, 2.0, 3.0, 4.0])),
     "DAC codes must be integers from 0 to 1023 when bits is 10; got dtype float64"),
    (lambda d, a: d.voltage(np.array([0, 1024, 5, 6])),
     "DAC codes must be integers from 0 to 1023; got values from 0 to 1024"),
    (lambda d, a: d.voltage(np.array([1, 2, 3])),
     "DAC input must have 4 entries along axis 0 (one per channel) when channels is None; "
     "got shape (3,)"),
    (lambda d, a: d.voltage(np.array([1, 2]), channels=np.array([0, 4])),
     "DAC channels must be in 0..3; got values from 0 to 4"),
    (lambda d, a: a.convert(np.zeros(3), channels=np.zeros(2, dtype=int)),
     "ADC channels of shape (2,) do not broadcast to the input's shape (3,)"),
    (lambda d, a: a.convert(np.zeros(2), channels=np.array([0.0, 1.0])),
     "ADC channels must be integers; got dtype float64"),
    (lambda d, a: a.convert(np.array([0.0, np.nan, 0.0, 0.0])),
     "ADC input voltages must be finite"),
    (lambda d, a: a.voltage_of(np.array([-1])),
     "ADC codes must be integers from 0 to 1023; got values from -1 to -1"),
])
def test_converter_calls_reject_bad_inputs_with_exact_message(call, message):
    with pytest.raises(ValueError, match=exact(message)):
        call(DAC(4, DACConfig(), rng()), ADC(4, ADCConfig(), rng()))
