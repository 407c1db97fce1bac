"""RRAM device model: config validation, pulse response, noise, drift, faults, write-verify."""
from __future__ import annotations

import re

import numpy as np
import pytest

from anmf.model.device import (RESET, SET, DeviceArray, DeviceConfig, WriteVerifyConfig,
                               write_verify, write_verify_statistics)


def exact(message: str) -> str:
    """A pytest.raises pattern that matches the whole message and nothing else."""
    return "^" + re.escape(message) + "$"


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# ---- DeviceConfig ------------------------------------------------------------------------

@pytest.mark.parametrize("changes, message", [
    ({"g_min_s": -1e-6}, "DeviceConfig.g_min_s must be > 0; got -1e-06"),
    ({"g_max_s": "35uS"}, "DeviceConfig.g_max_s must be a number; got '35uS'"),
    ({"g_ceiling_s": float("inf")}, "DeviceConfig.g_ceiling_s must be finite; got inf"),
    ({"read_noise_rel": -0.01}, "DeviceConfig.read_noise_rel must be >= 0; got -0.01"),
    ({"set_threshold_v": 0}, "DeviceConfig.set_threshold_v must be > 0; got 0.0"),
    ({"levels": 1}, "DeviceConfig.levels must be an integer >= 2; got 1"),
    ({"levels": 8.0}, "DeviceConfig.levels must be an integer >= 2; got 8.0"),
    ({"levels": True}, "DeviceConfig.levels must be an integer >= 2; got True"),
    ({"stuck_high_rate": 1.5}, "DeviceConfig.stuck_high_rate must be in [0, 1]; got 1.5"),
    ({"stuck_high_rate": 0.6, "stuck_low_rate": 0.5},
     "DeviceConfig.stuck_high_rate + stuck_low_rate must be <= 1; got 0.6 + 0.5"),
    ({"g_min_s": 40e-6},
     "DeviceConfig needs g_floor_s < g_min_s < g_max_s < g_ceiling_s (the levels sit strictly "
     "inside the soft bounds); got 1e-07, 4e-05, 3.5e-05, 5e-05"),
    ({"g_ceiling_s": 35e-6},
     "DeviceConfig needs g_floor_s < g_min_s < g_max_s < g_ceiling_s (the levels sit strictly "
     "inside the soft bounds); got 1e-07, 5e-07, 3.5e-05, 3.5e-05"),
])
def test_device_config_rejects_bad_fields_with_exact_message(changes, message):
    with pytest.raises(ValueError, match=exact(message)):
        DeviceConfig(**changes)


def test_device_config_defaults_are_the_published_window_and_ints_from_toml_become_floats():
    config = DeviceConfig()
    assert (config.g_min_s, config.g_max_s, config.levels) == (0.5e-6, 35e-6, 8)
    # TOML writes round numbers as ints; the config stores floats.
    assert isinstance(DeviceConfig(drift_t0_s=1).drift_t0_s, float)


def test_presets_order_ideal_realistic_pessimistic():
    ideal, real, worst = DeviceConfig.ideal(), DeviceConfig(), DeviceConfig.pessimistic()
    noise_fields = ("cycle_noise_rel", "read_noise_rel", "drift_nu_mean", "d2d_window_rel",
                    "d2d_rate_rel", "stuck_high_rate", "stuck_low_rate")
    for name in noise_fields:
        assert getattr(ideal, name) == 0.0, name
        assert getattr(worst, name) > getattr(real, name) > 0.0, name


def test_level_targets_span_the_window_evenly():
    config = DeviceConfig()
    targets = config.level_targets_s()
    assert targets.shape == (8,)
    assert targets[0] == pytest.approx(0.5e-6) and targets[-1] == pytest.approx(35e-6)
    assert np.allclose(np.diff(targets), config.level_spacing_s)
    assert config.level_targets_s(4).shape == (4,)
    with pytest.raises(ValueError, match=exact("levels must be an integer >= 2; got 1")):
        config.level_targets_s(1)


# ---- DeviceArray construction and validation ---------------------------------------------

@pytest.mark.parametrize("shape", [(0, 4), (4,), [4, 4], (2.0, 3)])
def test_array_rejects_bad_shape(shape):
    with pytest.raises(ValueError, match=exact(
            f"shape must be a tuple of two integers >= 1 (rows, cols); got {shape!r}")):
        DeviceArray(shape, DeviceConfig(), rng())


def test_array_rejects_wrong_config_and_rng_types():
    with pytest.raises(ValueError, match=exact("config must be a DeviceConfig; got dict")):
        DeviceArray((2, 2), {}, rng())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=exact(
            "rng must be a numpy.random.Generator; got int")):
        DeviceArray((2, 2), DeviceConfig(), 7)  # type: ignore[arg-type]


def test_pulse_rejects_bad_arguments_with_exact_messages():
    array = DeviceArray((4, 3), DeviceConfig.ideal(), rng())
    with pytest.raises(ValueError, match=exact(
            "polarity must be +1 (SET) or -1 (RESET); got array([0])")):
        array.pulse(0, 0, 0, 1.5, 100e-9)
    with pytest.raises(ValueError, match=exact(
            "amplitude_v must be finite and >= 0 (V, the pulse magnitude)")):
        array.pulse(0, 0, SET, -1.5, 100e-9)
    with pytest.raises(ValueError, match=exact("width_s must be finite and > 0 (s)")):
        array.pulse(0, 0, SET, 1.5, 0.0)
    with pytest.raises(ValueError, match=exact("rows must be in [0, 3]; got values from 0 to 4")):
        array.pulse([0, 4], [0, 0], SET, 1.5, 100e-9)
    with pytest.raises(ValueError, match=exact("cols must be in [0, 2]; got values from -1 to -1")):
        array.read(0, -1)
    with pytest.raises(ValueError, match=exact("rows must be integer indices; got dtype float64")):
        array.read(0.5, 0)
    with pytest.raises(ValueError, match=exact(
            "each (row, col) cell may be pulsed at most once per pulse() call")):
        array.pulse([1, 1], [2, 2], SET, 1.5, 100e-9)


def test_conductance_view_is_read_only():
    array = DeviceArray((2, 2), DeviceConfig(), rng())
    with pytest.raises(ValueError, match="read-only"):
        array.conductance_s[0, 0] = 1e-6


def test_cells_start_at_the_lowest_level():
    array = DeviceArray((3, 3), DeviceConfig.ideal(), rng())
    assert np.all(array.conductance_s == 0.5e-6)


# ---- pulse response ----------------------------------------------------------------------

def test_ideal_pulses_are_deterministic_and_monotonic_within_the_window():
    config = DeviceConfig.ideal()
    histories = []
    for seed in (1, 2):  # the seed must not matter for the ideal device
        array = DeviceArray((1, 1), config, rng(seed))
        trace = [array.conductance_s[0, 0]]
        for _ in range(60):
            array.pulse(0, 0, SET, 1.6, 100e-9)
            trace.append(array.conductance_s[0, 0])
        for _ in range(60):
            array.pulse(0, 0, RESET, 1.7, 100e-9)
            trace.append(array.conductance_s[0, 0])
        histories.append(np.array(trace))
    assert np.array_equal(histories[0], histories[1])
    rise, fall = np.diff(histories[0][:61]), np.diff(histories[0][60:])
    assert np.all(rise > 0) and np.all(fall < 0)
    assert histories[0].max() <= config.g_ceiling_s and histories[0].min() >= config.g_floor_s
    # 60 strong pulses drive the cell close to each bound.
    assert histories[0][60] > 0.95 * config.g_ceiling_s
    assert histories[0][-1] < 2 * config.g_floor_s


def test_steps_shrink_toward_the_bound_as_a_constant_fraction_of_the_distance():
    config = DeviceConfig.ideal()
    array = DeviceArray((1, 1), config, rng())
    g = [array.conductance_s[0, 0]]
    for _ in range(10):
        array.pulse(0, 0, SET, 1.3, 100e-9)
        g.append(array.conductance_s[0, 0])
    g = np.array(g)
    steps = np.diff(g)
    assert np.all(np.diff(steps) < 0), "SET steps must shrink as G nears the ceiling"
    fraction = steps / (config.g_ceiling_s - g[:-1])
    strength = config.set_rate * np.expm1((1.3 - config.set_threshold_v) / config.overdrive_scale_v)
    assert np.allclose(fraction, -np.expm1(-strength), rtol=1e-12)


def test_no_motion_at_or_below_threshold_and_more_drive_moves_more():
    config = DeviceConfig.ideal()
    array = DeviceArray((1, 5), config, rng())
    array.set_conductance(10e-6)
    cols = np.arange(5)
    array.pulse(0, cols, SET, [0.5, config.set_threshold_v, 1.2, 1.5, 1.5],
                [100e-9, 100e-9, 100e-9, 100e-9, 200e-9])
    g = array.conductance_s[0]
    assert g[0] == g[1] == 10e-6
    assert 10e-6 < g[2] < g[3] < g[4]
    array.pulse(0, 0, RESET, config.reset_threshold_v, 1e-6)
    assert array.conductance_s[0, 0] == 10e-6


def test_noisy_set_raises_and_reset_lowers_on_average():
    array = DeviceArray((50, 50), DeviceConfig(stuck_high_rate=0, stuck_low_rate=0), rng(3))
    array.set_conductance(17e-6)
    rows, cols = np.indices(array.shape)
    array.pulse(rows, cols, SET, 1.4, 100e-9)
    after_set = np.array(array.conductance_s)
    array.set_conductance(17e-6)
    array.pulse(rows, cols, RESET, 1.5, 100e-9)
    after_reset = np.array(array.conductance_s)
    assert after_set.mean() > 17e-6 + 1e-6 and after_reset.mean() < 17e-6 - 1e-6
    # Cycle-to-cycle noise spreads the step: the steps are not all equal.
    assert np.std(after_set) > 0.1e-6


# ---- stuck faults ------------------------------------------------------------------------

def test_stuck_fault_rates_match_the_config_on_a_large_array():
    config = DeviceConfig(stuck_high_rate=0.004, stuck_low_rate=0.01)
    array = DeviceArray((400, 500), config, rng(11))
    cells = array.conductance_s.size
    for mask, rate in ((array.stuck_high_mask, 0.004), (array.stuck_low_mask, 0.01)):
        sigma = np.sqrt(rate * (1 - rate) / cells)
        assert abs(mask.mean() - rate) < 5 * sigma, (mask.mean(), rate)
    assert not np.any(array.stuck_high_mask & array.stuck_low_mask)
    assert np.array_equal(array.stuck_mask, array.stuck_high_mask | array.stuck_low_mask)


def test_stuck_cells_sit_at_their_value_and_never_move():
    array = DeviceArray((60, 60), DeviceConfig.pessimistic(), rng(5))
    stuck = array.stuck_mask
    assert stuck.sum() > 50
    assert np.array_equal(array.conductance_s[stuck], array.stuck_value[stuck])
    assert np.all(np.isnan(array.stuck_value[~stuck]))
    assert np.allclose(array.stuck_value[array.stuck_high_mask],
                       array.ceiling_s[array.stuck_high_mask])
    assert np.allclose(array.stuck_value[array.stuck_low_mask],
                       array.floor_s[array.stuck_low_mask])
    before = np.array(array.conductance_s)
    rows, cols = np.indices(array.shape)
    array.pulse(rows, cols, SET, 2.0, 1e-6)
    array.pulse(rows, cols, RESET, 2.0, 1e-6)
    array.set_conductance(20e-6)
    array.advance_time(1e6)
    assert np.array_equal(array.conductance_s[stuck], before[stuck])
    assert not np.array_equal(array.conductance_s[~stuck], before[~stuck])


# ---- read noise --------------------------------------------------------------------------

def test_read_noise_std_matches_the_config():
    config = DeviceConfig.ideal().replace(read_noise_rel=0.02)
    array = DeviceArray((2, 2), config, rng(8))
    array.set_conductance(20e-6)
    reads = array.read(np.zeros(40_000, dtype=int), np.ones(40_000, dtype=int))
    assert reads.shape == (40_000,)
    assert np.mean(reads) == pytest.approx(20e-6, rel=1e-3)
    assert np.std(reads) / 20e-6 == pytest.approx(0.02, rel=0.03)
    assert np.all(array.conductance_s == 20e-6), "reading must not change the cell"


def test_ideal_read_is_exact_and_read_all_has_the_array_shape():
    array = DeviceArray((3, 4), DeviceConfig.ideal(), rng())
    values = np.linspace(1e-6, 30e-6, 12).reshape(3, 4)
    array.set_conductance(values)
    assert np.array_equal(array.read_all(), values)
    assert np.array_equal(array.read([0, 2], [3, 1]), values[[0, 2], [3, 1]])


# ---- drift -------------------------------------------------------------------------------

def test_drift_lowers_conductance_linearly_in_log_time():
    config = DeviceConfig.ideal().replace(drift_nu_mean=0.01)
    array = DeviceArray((4, 4), config, rng())
    array.set_conductance(30e-6)
    ages = [1.0]
    logs = [np.log(array.conductance_s[0, 0])]
    for dt in (9.0, 90.0, 900.0, 9000.0):
        array.advance_time(dt)
        ages.append(ages[-1] + dt)
        logs.append(np.log(array.conductance_s[0, 0]))
    slope = np.polyfit(np.log(ages), logs, 1)[0]
    assert slope == pytest.approx(-0.01, rel=1e-9)
    assert np.all(np.diff(logs) < 0)


def test_drift_exponents_are_drawn_per_cell_around_the_mean():
    config = DeviceConfig(stuck_high_rate=0, stuck_low_rate=0)
    array = DeviceArray((100, 100), config, rng(4))
    assert np.mean(array.drift_nu) == pytest.approx(config.drift_nu_mean, rel=0.05)
    assert np.all(array.drift_nu >= 0)
    array.set_conductance(25e-6)
    start = np.array(array.conductance_s)
    array.advance_time(999.0)  # age 1000 t0
    expected = start * 1000.0 ** (-array.drift_nu)
    assert np.allclose(array.conductance_s, expected, rtol=1e-12)


def test_a_pulse_restarts_the_drift_clock_of_that_cell_only():
    config = DeviceConfig.ideal().replace(drift_nu_mean=0.02)
    array = DeviceArray((1, 2), config, rng())
    array.set_conductance(20e-6)
    array.advance_time(99.0)
    array.pulse(0, 1, SET, 1.2, 100e-9)
    just_programmed = array.conductance_s[0, 1]
    aged = array.conductance_s[0, 0]
    array.advance_time(100.0)
    # cell 0: age 200 t0 (programmed at age 1); cell 1: age 101 t0 since its pulse.
    assert array.conductance_s[0, 0] == pytest.approx(20e-6 * 200.0 ** -0.02, rel=1e-12)
    assert array.conductance_s[0, 1] == pytest.approx(just_programmed * 101.0 ** -0.02, rel=1e-12)
    assert aged == pytest.approx(20e-6 * 100.0 ** -0.02, rel=1e-12)


def test_advance_time_and_set_conductance_validate_their_arguments():
    array = DeviceArray((2, 2), DeviceConfig(), rng())
    with pytest.raises(ValueError, match=exact("seconds must be a finite number >= 0; got -1.0")):
        array.advance_time(-1.0)
    with pytest.raises(ValueError,
                       match=exact("set_conductance values must be finite and >= 0 (S)")):
        array.set_conductance(-1e-6)


def test_set_conductance_clips_into_each_cells_window():
    config = DeviceConfig.ideal()
    array = DeviceArray((1, 2), config, rng())
    array.set_conductance([[1.0, 0.0]])
    assert array.conductance_s[0, 0] == config.g_ceiling_s
    assert array.conductance_s[0, 1] == config.g_floor_s


# ---- reproducibility ---------------------------------------------------------------------

def _history(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    array = DeviceArray((16, 16), DeviceConfig.pessimistic(), rng(seed))
    target = np.full(array.shape, 20e-6)
    result = write_verify(array, target)
    array.advance_time(50.0)
    return np.array(array.conductance_s), result.pulses, array.read_all()


def test_same_seed_same_result_and_another_seed_differs():
    first, second, other = _history(21), _history(21), _history(22)
    for a, b in zip(first, second):
        assert np.array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


# ---- write-verify ------------------------------------------------------------------------

@pytest.mark.parametrize("changes, message", [
    ({"tolerance_s": 0.0}, "WriteVerifyConfig.tolerance_s must be > 0; got 0.0"),
    ({"max_pulses": 0}, "WriteVerifyConfig.max_pulses must be an integer >= 1; got 0"),
    ({"amplitude_step_v": -0.1}, "WriteVerifyConfig.amplitude_step_v must be >= 0; got -0.1"),
    ({"width_s": 0}, "WriteVerifyConfig.width_s must be > 0; got 0.0"),
    ({"reads_per_verify": 0}, "WriteVerifyConfig.reads_per_verify must be an integer >= 1; got 0"),
    ({"amplitude_start_v": 2.5},
     "WriteVerifyConfig.amplitude_start_v must be <= amplitude_max_v; got 2.5 > 2.0"),
])
def test_write_verify_rejects_bad_parameters_with_exact_message(changes, message):
    with pytest.raises(ValueError, match=exact(message)):
        WriteVerifyConfig(**changes)
    array = DeviceArray((2, 2), DeviceConfig.ideal(), rng())
    with pytest.raises(ValueError, match=exact(message)):
        write_verify(array, np.full((2, 2), 5e-6), **changes)


def test_write_verify_rejects_bad_targets_and_enable_masks():
    array = DeviceArray((2, 3), DeviceConfig.ideal(), rng())
    with pytest.raises(ValueError, match=exact(
            "target_s must have the array's shape (2, 3); got (3, 2)")):
        write_verify(array, np.zeros((3, 2)))
    with pytest.raises(ValueError, match=exact("target_s must be finite and >= 0 (S)")):
        write_verify(array, np.full((2, 3), np.nan))
    with pytest.raises(ValueError, match=exact(
            "enable must be a bool array of shape (2, 3); got int64 (2, 3)")):
        write_verify(array, np.full((2, 3), 5e-6), enable=np.ones((2, 3), dtype=np.int64))


def test_write_verify_reaches_the_8_levels_for_healthy_cells_and_fails_stuck_ones():
    config = DeviceConfig()
    params = WriteVerifyConfig()
    array = DeviceArray((256, 64), config, rng(2024))
    levels = config.level_targets_s()
    target = np.tile(np.repeat(levels, 8), (256, 1))
    result = write_verify(array, target)
    healthy = ~array.stuck_mask

    assert result.failed[healthy].mean() < 0.01
    # The accept decision uses a noisy read, so the true error may exceed the tolerance by a
    # few read-noise sigmas, never more.
    bound = params.tolerance_s + 4 * config.read_noise_rel * target
    true_error = np.abs(result.conductance_s - target)
    assert np.mean(true_error[healthy] <= bound[healthy]) > 0.99
    verified = healthy & ~result.failed
    assert np.all(np.abs(result.read_s[verified] - target[verified]) <= params.tolerance_s)

    pulses = result.pulses[healthy & (target > levels[0])]
    assert 5 < pulses.mean() < 25 and np.percentile(pulses, 99) < params.max_pulses

    far = array.stuck_mask & (np.abs(array.stuck_value - target) > params.tolerance_s)
    assert far.sum() > 20
    assert np.all(result.failed[far]) and np.all(result.pulses[far] == params.max_pulses)


class PulseRecorder:
    """A real DeviceArray that also logs each pulse call (to check the ramp sequence)."""

    def __init__(self, array: DeviceArray):
        self.array = array
        self.log: list[tuple[np.ndarray, np.ndarray]] = []

    @property
    def shape(self):
        return self.array.shape

    @property
    def conductance_s(self):
        return self.array.conductance_s

    def read(self, rows, cols):
        return self.array.read(rows, cols)

    def pulse(self, rows, cols, polarity, amplitude_v, width_s):
        self.log.append((np.broadcast_to(polarity, np.shape(rows)).copy(),
                         np.broadcast_to(amplitude_v, np.shape(rows)).copy()))
        self.array.pulse(rows, cols, polarity, amplitude_v, width_s)


def test_write_verify_ramp_grows_per_polarity_caps_and_restarts_on_a_flip():
    config = DeviceConfig(stuck_high_rate=0, stuck_low_rate=0, cycle_noise_rel=0.5)
    recorder = PulseRecorder(DeviceArray((1, 1), config, rng(9)))
    params = dict(tolerance_s=0.05e-6, max_pulses=60, amplitude_start_v=1.0,
                  amplitude_step_v=0.1, amplitude_max_v=1.5)
    result = write_verify(recorder, np.full((1, 1), 20e-6), **params)
    polarity = np.array([p[0] for p, _ in recorder.log])
    amplitude = np.array([a[0] for _, a in recorder.log])
    assert result.pulses[0, 0] == len(recorder.log) > 5
    assert set(np.unique(polarity)) == {SET, RESET}, "a tight tolerance forces overshoots"
    expected = [1.0]
    for k in range(1, len(polarity)):
        same = polarity[k] == polarity[k - 1]
        expected.append(min(expected[-1] + 0.1, 1.5) if same else 1.0)
    assert np.allclose(amplitude, expected)
    assert amplitude.max() == pytest.approx(1.5)


def test_write_verify_touches_only_enabled_cells_and_skips_cells_already_in_tolerance():
    config = DeviceConfig.ideal()
    array = DeviceArray((2, 2), config, rng())
    enable = np.array([[True, False], [True, True]])
    target = np.array([[20e-6, 20e-6], [0.5e-6, 30e-6]])
    result = write_verify(array, target, enable=enable)
    assert array.conductance_s[0, 1] == 0.5e-6 and result.pulses[0, 1] == 0
    assert np.isnan(result.read_s[0, 1]) and not result.failed[0, 1]
    assert result.pulses[1, 0] == 0, "already at the target"
    assert abs(array.conductance_s[0, 0] - 20e-6) <= 0.5e-6
    assert abs(array.conductance_s[1, 1] - 30e-6) <= 0.5e-6
    assert np.array_equal(result.enabled, enable)


def test_write_verify_averaging_reduces_the_true_error():
    config = DeviceConfig(stuck_high_rate=0, stuck_low_rate=0, read_noise_rel=0.02)
    target = np.full((32, 32), 30e-6)
    errors = []
    for reads in (1, 8):
        array = DeviceArray((32, 32), config, rng(6))
        write_verify(array, target, reads_per_verify=reads)
        errors.append(np.sqrt(np.mean((array.conductance_s - target) ** 2)))
    assert errors[1] < 0.8 * errors[0]


def test_write_verify_statistics_summarize_a_run_per_level():
    stats = write_verify_statistics(DeviceConfig.ideal(), cells_per_level=16, seed=1)
    assert stats.healthy_cells == 16 * 8
    assert stats.verified_fraction == 1.0 == stats.true_within_tolerance_fraction
    assert stats.level_mean_pulses[0] == 0.0, "cells start at the lowest level"
    assert all(p > 0 for p in stats.level_mean_pulses[1:])
    assert stats.pulses_p50 <= stats.pulses_p90 <= stats.pulses_p99 <= stats.pulses_max
    assert max(stats.level_rms_error_s) <= WriteVerifyConfig().tolerance_s
    with pytest.raises(ValueError, match=exact("cells_per_level must be an integer >= 1; got 0")):
        write_verify_statistics(DeviceConfig(), cells_per_level=0)
