"""RRAM crossbar: config validation, IR drop, reads, open-loop MVM, programming through it."""
from __future__ import annotations

import re

import numpy as np
import pytest

from anmf.model.crossbar import (Crossbar, CrossbarConfig, port_conductance_s,
                                 series_conductance_s)
from anmf.model.device import RESET, SET, DeviceConfig, write_verify


def exact(message: str) -> str:
    return "^" + re.escape(message) + "$"


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def ideal_crossbar(**changes) -> Crossbar:
    return Crossbar(CrossbarConfig.ideal().replace(**changes), DeviceConfig.ideal(), rng())


# ---- config ------------------------------------------------------------------------------

@pytest.mark.parametrize("changes, message", [
    ({"rows": 0}, "CrossbarConfig.rows must be an integer >= 1; got 0"),
    ({"cols": 2.5}, "CrossbarConfig.cols must be an integer >= 1; got 2.5"),
    ({"spare": -1}, "CrossbarConfig.spare must be an integer >= 0; got -1"),
    ({"wire_resistance_ohm": -1.0}, "CrossbarConfig.wire_resistance_ohm must be >= 0; got -1.0"),
    ({"ir_drop": 1}, "CrossbarConfig.ir_drop must be true or false; got 1"),
    ({"read_voltage_v": 0.0}, "CrossbarConfig.read_voltage_v must be > 0; got 0.0"),
])
def test_crossbar_config_rejects_bad_fields_with_exact_message(changes, message):
    with pytest.raises(ValueError, match=exact(message)):
        CrossbarConfig(**changes)


def test_crossbar_config_defaults_and_presets():
    config = CrossbarConfig()
    assert (config.rows, config.cols, config.spare, config.total_cols) == (64, 8, 2, 10)
    assert config.ir_drop and config.read_voltage_v == 0.2
    assert not CrossbarConfig.ideal().ir_drop
    assert CrossbarConfig.pessimistic().wire_resistance_ohm > config.wire_resistance_ohm > 0
    assert isinstance(CrossbarConfig(wire_resistance_ohm=2).wire_resistance_ohm, float)


def test_crossbar_rejects_a_read_voltage_that_would_program_cells():
    with pytest.raises(ValueError, match=exact(
            "CrossbarConfig.read_voltage_v (0.95 V) must be below the device's SET and RESET "
            "thresholds (0.9 V, 1.0 V) so that reads do not program cells")):
        Crossbar(CrossbarConfig(read_voltage_v=0.95), DeviceConfig(), rng())
    with pytest.raises(ValueError, match=exact("device must be a DeviceConfig; got NoneType")):
        Crossbar(CrossbarConfig(), None, rng())  # type: ignore[arg-type]
    with pytest.raises(ValueError,
                       match=exact("config must be a CrossbarConfig; got DeviceConfig")):
        Crossbar(DeviceConfig(), DeviceConfig(), rng())  # type: ignore[arg-type]


def test_crossbar_holds_rows_by_cols_plus_spare_cells():
    crossbar = Crossbar(CrossbarConfig(rows=16, cols=4, spare=3), DeviceConfig(), rng())
    assert crossbar.shape == (16, 7)
    assert crossbar.conductance_s.shape == (16, 7) == crossbar.stuck_mask.shape


# ---- ideal MVM and reads -----------------------------------------------------------------

def test_ideal_mvm_equals_g_transpose_v_exactly():
    crossbar = ideal_crossbar()
    draw = rng(3)
    g = draw.uniform(0.5e-6, 35e-6, crossbar.shape)
    crossbar.set_conductance(g)
    v = draw.uniform(-0.2, 0.2, crossbar.shape[0])
    assert np.array_equal(crossbar.mvm(v), g.T @ v)


def test_mvm_disabled_rows_drive_nothing_and_disabled_columns_read_zero():
    crossbar = ideal_crossbar()
    draw = rng(4)
    g = draw.uniform(0.5e-6, 35e-6, crossbar.shape)
    crossbar.set_conductance(g)
    v = draw.uniform(0.05, 0.2, crossbar.shape[0])
    row_enable = np.arange(64) % 3 != 0
    col_enable = np.array([True] * 8 + [False] * 2)
    currents = crossbar.mvm(v, row_enable=row_enable, col_enable=col_enable)
    assert np.array_equal(currents[8:], [0.0, 0.0])
    assert np.array_equal(currents[:8], (g.T @ np.where(row_enable, v, 0.0))[:8])
    assert np.all(currents[:8] < (g.T @ v)[:8])


def test_mvm_validates_inputs_with_exact_messages():
    crossbar = ideal_crossbar()
    with pytest.raises(ValueError, match=exact("v_rows must have shape (64,); got (10,)")):
        crossbar.mvm(np.zeros(10))
    with pytest.raises(ValueError, match=exact("v_rows must be finite (V)")):
        crossbar.mvm(np.full(64, np.nan))
    with pytest.raises(ValueError, match=exact(
            "|v_rows| must stay below 0.9 V (the lowest switching threshold) so that an MVM "
            "does not program cells; got max 1.2 V")):
        crossbar.mvm(np.full(64, -1.2))
    with pytest.raises(ValueError, match=exact(
            "row_enable must be a bool array of shape (64,); got int64 (64,)")):
        crossbar.mvm(np.zeros(64), row_enable=np.ones(64, dtype=np.int64))
    with pytest.raises(ValueError, match=exact(
            "col_enable must be a bool array of shape (10,); got bool (8,)")):
        crossbar.mvm(np.zeros(64), col_enable=np.ones(8, dtype=bool))


def test_ideal_read_cell_is_the_conductance_and_current_is_v_times_g():
    crossbar = ideal_crossbar()
    crossbar.set_conductance(12e-6)
    assert crossbar.read_cell(5, 9) == 12e-6
    assert crossbar.read_current_a(5, 9) == pytest.approx(0.2 * 12e-6, rel=1e-15)
    with pytest.raises(ValueError, match=exact("cols must be in [0, 9]; got values from 10 to 10")):
        crossbar.read_cell(0, 10)


def test_noisy_mvm_averages_to_the_effective_conductance_product():
    crossbar = Crossbar(CrossbarConfig(), DeviceConfig(), rng(7))
    crossbar.set_conductance(rng(1).uniform(1e-6, 30e-6, crossbar.shape))
    v = np.full(64, 0.1)
    runs = np.array([crossbar.mvm(v) for _ in range(400)])
    expected = crossbar.effective_conductance_s().T @ v
    assert np.std(runs[:, 0]) > 0, "each MVM draws fresh read noise"
    assert np.allclose(runs.mean(axis=0), expected, rtol=2e-3)


# ---- IR drop -----------------------------------------------------------------------------

def reference_port_conductance(g, r, row_on, col_on):
    """Straightforward dense nodal analysis, written independently of the model: unknowns
    are every row-line and column-line node voltage; one solve per driven row. Cells of a
    disabled row are open (1T1R word line off): 1e-18 S, so the floating line stays solvable."""
    g = np.where(np.asarray(row_on)[:, None], g, 1e-18)
    rows, cols = g.shape
    size = 2 * rows * cols
    out = np.zeros((rows, cols))

    def row_node(i, j):
        return i * cols + j

    def col_node(i, j):
        return rows * cols + i * cols + j

    laplacian = np.zeros((size, size))

    def connect(a, b, conductance):
        laplacian[a, a] += conductance
        laplacian[b, b] += conductance
        laplacian[a, b] -= conductance
        laplacian[b, a] -= conductance

    for i in range(rows):
        for j in range(cols):
            connect(row_node(i, j), col_node(i, j), g[i, j])
            if j > 0:
                connect(row_node(i, j - 1), row_node(i, j), 1 / r)
            if i > 0:
                connect(col_node(i - 1, j), col_node(i, j), 1 / r)
    for i in range(rows):
        if row_on[i]:
            laplacian[row_node(i, 0), row_node(i, 0)] += 1 / r
    for j in range(cols):
        if col_on[j]:
            laplacian[col_node(0, j), col_node(0, j)] += 1 / r
    for i in np.nonzero(row_on)[0]:
        rhs = np.zeros(size)
        rhs[row_node(i, 0)] = 1 / r
        voltages = np.linalg.solve(laplacian, rhs)
        for j in np.nonzero(col_on)[0]:
            out[i, j] = voltages[col_node(0, j)] / r
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_port_conductance_matches_an_independent_dense_nodal_solve(seed):
    draw = rng(seed)
    g = draw.uniform(0.5e-6, 50e-6, (5, 4))
    row_on = np.array([True, False, True, True, True])
    col_on = np.array([True, True, False, True])
    model = port_conductance_s(g, 200.0, row_on, col_on)  # big r: a large, visible effect
    reference = reference_port_conductance(g, 200.0, row_on, col_on)
    assert np.allclose(model, reference, rtol=1e-6, atol=0)
    assert np.all(model[1] == 0) and np.all(model[:, 2] == 0)
    # With every line connected there is no sneak path through a floating line, and every
    # cell loses current to the wires.
    all_on = port_conductance_s(g, 200.0, np.ones(5, dtype=bool), np.ones(4, dtype=bool))
    assert np.all(all_on < g)


def test_a_lone_cell_sees_exactly_its_series_wire_path():
    g = np.array([[30e-6]])
    on = np.array([True])
    exact_value = port_conductance_s(g, 2.0, on, on)
    assert exact_value[0, 0] == pytest.approx(30e-6 / (1 + 30e-6 * 4.0), rel=1e-9)
    assert series_conductance_s(g, 2.0)[0, 0] == pytest.approx(exact_value[0, 0], rel=1e-9)


def test_series_estimate_understates_the_loss_of_a_full_array():
    crossbar = ideal_crossbar(ir_drop=True, wire_resistance_ohm=1.5)
    crossbar.set_conductance(35e-6)
    exact_g = crossbar.effective_conductance_s()
    series_g = series_conductance_s(np.full(crossbar.shape, 35e-6), 1.5)
    assert np.all(exact_g <= series_g * (1 + 1e-12))
    assert 1 - exact_g[63, 9] / 35e-6 > 10 * (1 - series_g[63, 9] / 35e-6)


def test_ir_drop_lowers_mvm_currents_and_grows_with_distance():
    with_drop = ideal_crossbar(ir_drop=True, wire_resistance_ohm=1.5)
    without = ideal_crossbar(ir_drop=False, wire_resistance_ohm=1.5)
    for crossbar in (with_drop, without):
        crossbar.set_conductance(35e-6)
    v = np.full(64, 0.2)
    lowered = with_drop.mvm(v)
    full = without.mvm(v)
    assert np.all(lowered < full)
    loss = 1 - lowered / full
    assert np.all(np.diff(loss) > 0), "columns farther from the row drivers lose more"
    assert 0.05 < loss.mean() < 0.09, "64 rows at 35 uS with 1.5 ohm segments lose ~7 %"
    # One row driven at a time: rows farther from the sense nodes give less current.
    single = [with_drop.mvm(np.where(np.arange(64) == i, 0.2, 0.0))[0] for i in (0, 31, 63)]
    assert single[0] > single[1] > single[2]
    # Superposition: the MVM is the effective matrix applied to the drive.
    assert np.allclose(lowered, with_drop.effective_conductance_s().T @ v, rtol=1e-12)


def test_ir_drop_aware_read_equals_the_effective_conductance():
    crossbar = ideal_crossbar(ir_drop=True, wire_resistance_ohm=1.5)
    crossbar.set_conductance(rng(2).uniform(1e-6, 35e-6, crossbar.shape))
    effective = crossbar.effective_conductance_s()
    assert crossbar.read_cell(63, 9) == effective[63, 9] < crossbar.conductance_s[63, 9]
    rows, cols = np.indices(crossbar.shape)
    assert np.array_equal(crossbar.read(rows, cols), effective)


def test_disabled_rows_and_columns_change_the_network_not_just_the_sum():
    crossbar = ideal_crossbar(ir_drop=True, wire_resistance_ohm=1.5)
    crossbar.set_conductance(35e-6)
    row_on = np.arange(64) < 32
    col_on = np.arange(10) != 4
    part = crossbar.effective_conductance_s(row_on, col_on)
    assert np.all(part[32:] == 0) and np.all(part[:, 4] == 0)
    # Fewer conducting rows share the column wires: the enabled cells lose less.
    whole = crossbar.effective_conductance_s()
    assert np.all(part[:32][:, col_on] > whole[:32][:, col_on])
    currents = crossbar.mvm(np.full(64, 0.1), row_enable=row_on, col_enable=col_on)
    assert currents[4] == 0.0
    assert np.allclose(currents, part.T @ np.where(row_on, 0.1, 0.0), rtol=1e-12)


# ---- programming and time ----------------------------------------------------------------

def test_pulse_moves_the_addressed_cell_only():
    crossbar = ideal_crossbar()
    crossbar.set_conductance(10e-6)
    crossbar.pulse(3, 4, SET, 1.5, 100e-9)
    g = np.array(crossbar.conductance_s)
    assert g[3, 4] > 10e-6
    g[3, 4] = 10e-6
    assert np.all(g == 10e-6)
    crossbar.pulse([1, 2], [0, 0], RESET, 1.5, 100e-9)
    assert np.all(crossbar.conductance_s[1:3, 0] < 10e-6)


def test_write_verify_through_the_crossbar_targets_the_conductance_the_periphery_sees():
    crossbar = Crossbar(CrossbarConfig(), DeviceConfig.ideal(), rng())
    target = np.tile(DeviceConfig().level_targets_s()[[1, 3, 5, 7, 7, 5, 3, 1, 7, 7]], (64, 1))
    first = write_verify(crossbar, target, tolerance_s=0.3e-6)
    assert not first.failed.any()
    # Programming one cell shifts the wire currents its neighbours see, so cells accepted
    # early can leave the band; a second sweep touches only those.
    second = write_verify(crossbar, target, tolerance_s=0.3e-6)
    assert 0 < np.count_nonzero(second.pulses) < 0.2 * target.size
    error = np.abs(crossbar.effective_conductance_s() - target)
    assert np.mean(error <= 0.3e-6 + 1e-15) > 0.99
    # The true conductance sits above the target to make up for the wire loss.
    assert crossbar.conductance_s[63, 9] > target[63, 9] + 2e-6


def test_advance_time_drifts_the_crossbar():
    crossbar = Crossbar(CrossbarConfig.ideal(), DeviceConfig.ideal().replace(drift_nu_mean=0.01),
                        rng())
    crossbar.set_conductance(20e-6)
    crossbar.advance_time(99.0)
    assert np.allclose(crossbar.conductance_s, 20e-6 * 100.0 ** -0.01, rtol=1e-12)


def test_same_seed_same_crossbar_and_history():
    def run(seed: int) -> tuple[np.ndarray, np.ndarray]:
        crossbar = Crossbar(CrossbarConfig(), DeviceConfig.pessimistic(), rng(seed))
        write_verify(crossbar, np.full(crossbar.shape, 15e-6))
        return np.array(crossbar.conductance_s), crossbar.mvm(np.full(64, 0.1))

    first, second, other = run(5), run(5), run(6)
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    assert not np.array_equal(first[0], other[0])


def test_masked_rows_leave_the_network() -> None:
    """1T1R: a disabled row's word line is off, so masking half the rows changes the enabled
    cells' effective conductance only through the (now lighter) wire currents."""
    rng = np.random.default_rng(4)
    g = rng.uniform(0.5e-6, 35e-6, (32, 8))
    on = np.ones(32, dtype=bool)
    half = on.copy()
    half[1::2] = False
    cols = np.ones(8, dtype=bool)
    full = port_conductance_s(g, 1.5, on, cols)
    masked = port_conductance_s(g, 1.5, half, cols)
    assert np.all(masked[~half] == 0.0)
    ratio = masked[half] / full[half]
    assert np.all(ratio >= 1.0 - 1e-9) and np.all(ratio < 1.05), "masked rows must not add sneak paths"
    assert np.all(masked[half] <= g[half])
