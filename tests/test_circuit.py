"""Closed-loop NNLS circuit: steady state against scipy, transient, settling, non-idealities.

Reference values come from scipy (nnls, lstsq, lsq_linear, solve_ivp) and from a node-level
description of the circuit written out here (row KCL, column summing nodes, single-pole
op-amps) that does not use the module's Gram-form elimination.
"""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import scipy.integrate
import scipy.optimize

from anmf.model.circuit import CircuitConfig, NNLSCircuit

IDEAL = CircuitConfig.ideal()


def exact(message: str) -> str:
    return "^" + re.escape(message) + "$"


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def program(A: np.ndarray, config: CircuitConfig = IDEAL) -> np.ndarray:
    """Conductances that hold A: G = g_offset + g_unit A."""
    return config.g_offset_s + config.g_unit_s * np.asarray(A, dtype=float)


def make(config: CircuitConfig, rows: int, cols: int, seed: int = 0) -> NNLSCircuit:
    return NNLSCircuit(config, rows, cols, rng(seed))


# ---- node-level reference (independent of the module's Gram form) ------------------------

def _nodes(circuit: NNLSCircuit, G: np.ndarray):
    c = circuit.config
    M = G - circuit.reference_conductance_s[None, :]
    S, T = G.sum(axis=1), G.sum(axis=0)
    return c, M, S, T


def row_outputs(circuit, G, v, x):
    """Row TIA outputs from row KCL (row node held at its offset u):
    sum_j G_ij (x_j - u) - sum_j gref_j x_j + g (-v - u) + g_f (v_r - u) = 0."""
    c, M, S, T = _nodes(circuit, G)
    u = circuit.row_offset_v
    return (u * (S + c.input_gain * c.g_unit_s + c.row_feedback_s) + c.input_gain * c.g_unit_s * v - M @ x) / c.row_feedback_s


def netlist_derivative(circuit, G, v, x):
    """Single-pole column op-amps: dx/dt = (omega / A0) (-x + A0 (e - w)), where e is the
    column summing node, e_j = (sum_i G_ij v_r,i - gref_j sum_i v_r,i) / T_j."""
    c, M, S, T = _nodes(circuit, G)
    e = (M.T @ row_outputs(circuit, G, v, x)) / T
    omega = 2 * math.pi * c.gbw_hz
    leak = 0.0 if math.isinf(c.opamp_gain) else x / c.opamp_gain
    return omega * (e - circuit.column_offset_v - leak)


def netlist_steady_state(circuit, G, v):
    """Unclamped steady state: solve the row KCL and column equations together."""
    c, M, S, T = _nodes(circuit, G)
    m, k = G.shape
    u, w = circuit.row_offset_v, circuit.column_offset_v
    system = np.block([[M, c.row_feedback_s * np.eye(m)],
                       [-np.diag(T / c.opamp_gain), M.T]])
    rhs = np.concatenate([u * (S + c.input_gain * c.g_unit_s + c.row_feedback_s) + c.input_gain * c.g_unit_s * v, T * w])
    return np.linalg.solve(system, rhs)[:k]


def random_problem(m, k, seed, rhs=1):
    r = rng(seed)
    A = r.uniform(0.0, 1.0, (m, k))
    x_true = np.where(r.uniform(size=(k, rhs)) < 0.4, 0.0, r.uniform(0.1, 1.0, (k, rhs)))
    b = A @ x_true + 0.3 * r.normal(size=(m, rhs))
    return A, b


# ---- config and argument validation ------------------------------------------------------

@pytest.mark.parametrize("changes, message", [
    ({"opamp_gain": 0.0}, "CircuitConfig.opamp_gain must be > 0; got 0.0"),
    ({"opamp_gain": math.nan}, "CircuitConfig.opamp_gain must be a number or inf; got nan"),
    ({"gbw_hz": math.inf}, "CircuitConfig.gbw_hz must be finite; got inf"),
    ({"offset_std_v": -1.0}, "CircuitConfig.offset_std_v must be >= 0; got -1.0"),
    ({"rail_v": -1.0}, "CircuitConfig.rail_v must be > 0; got -1.0"),
    ({"clamp_v": True}, "CircuitConfig.clamp_v must be a number; got True"),
    ({"compensation_mismatch": 1.5},
     "CircuitConfig.compensation_mismatch must be in [0, 1); got 1.5"),
    ({"g_unit_s": 0.0}, "CircuitConfig.g_unit_s must be > 0; got 0.0"),
    ({"g_offset_s": -1e-6}, "CircuitConfig.g_offset_s must be >= 0; got -1e-06"),
    ({"row_feedback_s": 0.0}, "CircuitConfig.row_feedback_s must be > 0; got 0.0"),
    ({"clamp_v": 2.0}, "CircuitConfig needs clamp_v < rail_v (the clamp acts inside the "
                       "rails); got clamp_v=2.0, rail_v=1.2"),
])
def test_circuit_config_rejects_bad_fields_with_exact_message(changes, message):
    with pytest.raises(ValueError, match=exact(message)):
        CircuitConfig(**changes)


def test_presets():
    ideal, real, bad = CircuitConfig.ideal(), CircuitConfig(), CircuitConfig.pessimistic()
    assert math.isinf(ideal.opamp_gain) and math.isinf(ideal.rail_v)
    assert ideal.clamp_v == ideal.offset_std_v == ideal.compensation_mismatch == 0.0
    assert ideal.gbw_hz == real.gbw_hz > bad.gbw_hz
    assert real.opamp_gain > bad.opamp_gain
    assert 0.0 < real.offset_std_v < bad.offset_std_v
    assert 0.0 < real.clamp_v < bad.clamp_v
    assert real.bounds_v("clamped") == (-0.01, 1.2) and real.bounds_v("free") == (-1.2, 1.2)
    # One unit of A is one of the 7 steps of the device's 8 levels over 0.5-35 uS.
    assert real.g_offset_s + 7 * real.g_unit_s == pytest.approx(35e-6)


def test_constructor_validates_arguments():
    with pytest.raises(ValueError, match=exact("NNLSCircuit rows must be an integer >= 1; got 0")):
        NNLSCircuit(IDEAL, 0, 3, rng())
    with pytest.raises(ValueError, match=exact("NNLSCircuit cols must be an integer >= 1; got 2.0")):
        NNLSCircuit(IDEAL, 3, 2.0, rng())
    with pytest.raises(ValueError, match=exact("NNLSCircuit needs a numpy.random.Generator; "
                                               "got NoneType")):
        NNLSCircuit(IDEAL, 3, 2, None)
    with pytest.raises(ValueError, match=exact("NNLSCircuit needs a CircuitConfig; got dict")):
        NNLSCircuit({}, 3, 2, rng())


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "nnls"}, "mode must be one of 'clamped', 'free'; got 'nnls'"),
    ({"G_s": np.ones((4, 3))}, "G_s must have shape (4, 2); got (4, 3)"),
    ({"G_s": -np.ones((4, 2))}, "G_s must hold finite conductances >= 0 (S)"),
    ({"v_in": np.ones(3)}, "v_in must have shape (4,) or (4, nrhs); got (3,)"),
    ({"v_in": np.array([0, np.inf, 0, 0])}, "v_in must be finite (V)"),
    ({"row_enable": np.ones(4)},
     "row_enable must be a bool array of shape (4,); got float64 array of shape (4,)"),
    ({"col_enable": np.zeros(2, dtype=bool)},
     "col_enable must enable at least one line; got all False"),
    ({"x0_v": np.ones(3)}, "x0_v must have shape (2,); got (3,)"),
    ({"x0_v": np.array([-0.5, 0.0])},
     "x0_v must lie within the mode's output bounds [0.0, inf] V"),
    ({"G_s": np.zeros((4, 2))}, "every enabled column needs a non-zero conductance on an "
                                "enabled row (its summing node would float)"),
])
def test_solve_rejects_bad_arguments_with_exact_message(kwargs, message):
    args = {"G_s": program(np.ones((4, 2))), "v_in": np.ones(4)} | kwargs
    with pytest.raises(ValueError, match=exact(message)):
        make(IDEAL, 4, 2).solve(**args)


def test_solution_methods_validate_arguments():
    solution = make(IDEAL, 4, 2).solve(program(np.eye(4, 2) + 0.1), np.ones(4))
    with pytest.raises(ValueError, match=exact("rhs must be an integer from 0 to 0; got 1")):
        solution.transient(1)
    with pytest.raises(ValueError, match=exact("tol must be a number in (0, 1); got 0")):
        solution.settle_time_estimate(0)
    with pytest.raises(ValueError, match=exact("tol must be a number > 0; got -1.0")):
        solution.settle_time(-1.0)
    with pytest.raises(ValueError, match=exact("t_s must be a time >= 0 (s), or a 1-D array "
                                               "of them")):
        solution.state_at(-1e-9)


# ---- ideal steady state = the mathematical solution ------------------------------------------

@pytest.mark.parametrize("m, k, seed", [(30, 5, 1), (8, 8, 2), (64, 8, 3), (12, 3, 4)])
def test_ideal_clamped_steady_state_equals_scipy_nnls(m, k, seed):
    A, b = random_problem(m, k, seed, rhs=6)
    solution = make(IDEAL, m, k).solve(program(A), b)
    assert solution.steady_state.shape == (k, 6)
    for j in range(6):
        reference, _ = scipy.optimize.nnls(A, b[:, j])
        x = solution.steady_state[:, j]
        assert np.linalg.norm(x - reference) <= 1e-9 * max(np.linalg.norm(reference), 1e-12)
        np.testing.assert_array_equal(solution.clamped[:, j], x == 0.0)
    assert solution.clamped.any() and not solution.saturated.any()


@pytest.mark.parametrize("A", [
    rng(5).uniform(0, 1, (5, 8)),                                          # fewer rows than k
    np.repeat(rng(6).uniform(0, 1, (20, 3)), 2, axis=1),                   # duplicated columns
], ids=["wide", "duplicate-columns"])
def test_ideal_rank_deficient_problems_reach_the_nnls_optimum(A):
    m, k = A.shape
    b = A @ rng(7).uniform(0, 1, k) - 0.2 * rng(8).uniform(0, 1, m)
    x = make(IDEAL, m, k).solve(program(A), b).steady_state
    reference, residual = scipy.optimize.nnls(A, b)
    assert np.all(x >= 0.0)
    assert abs(np.linalg.norm(A @ x - b) - residual) <= 1e-9 * np.linalg.norm(b)
    gradient = A.T @ (A @ x - b)
    assert gradient.min() >= -1e-8 and np.abs(x * gradient).max() <= 1e-8


def test_ideal_free_mode_equals_least_squares():
    A, b = random_problem(20, 5, 9, rhs=3)
    x = make(IDEAL, 20, 5).solve(program(A), b, mode="free").steady_state
    reference = np.linalg.lstsq(A, b, rcond=None)[0]
    assert (reference < 0).any()
    np.testing.assert_allclose(x, reference, rtol=0, atol=1e-9 * np.abs(reference).max())


def test_batch_equals_one_rhs_at_a_time():
    A, b = random_problem(16, 4, 10, rhs=5)
    circuit = make(CircuitConfig(), 16, 4, seed=3)
    batch = circuit.solve(program(A), b)
    for j in range(5):
        single = circuit.solve(program(A), b[:, j])
        np.testing.assert_allclose(batch.steady_state[:, j], single.steady_state, atol=1e-13)
        np.testing.assert_array_equal(batch.clamped[:, j], single.clamped)


# ---- enables, clamp level, rails ------------------------------------------------------------

def test_disabled_rows_are_missing_entries_and_disabled_columns_read_zero():
    A, b = random_problem(10, 4, 11)
    b = b[:, 0]
    rows_on = np.ones(10, dtype=bool)
    rows_on[[1, 4, 7]] = False
    circuit = make(IDEAL, 10, 4)
    solution = circuit.solve(program(A), b, row_enable=rows_on)
    np.testing.assert_allclose(solution.steady_state, scipy.optimize.nnls(A[rows_on], b[rows_on])[0],
                               atol=1e-12)
    np.testing.assert_array_equal(solution.row_output_v[~rows_on], 0.0)
    garbage = b.copy()
    garbage[~rows_on] = 5.0
    np.testing.assert_array_equal(circuit.solve(program(A), garbage, row_enable=rows_on)
                                  .steady_state, solution.steady_state)

    cols_on = np.array([True, False, True, True])
    solution = circuit.solve(program(A), b, col_enable=cols_on)
    assert solution.steady_state[1] == 0.0 and not solution.clamped[1]
    np.testing.assert_allclose(solution.steady_state[cols_on],
                               scipy.optimize.nnls(A[:, cols_on], b)[0], atol=1e-12)
    np.testing.assert_array_equal(solution.state_at([0.0, 1e-7])[1], 0.0)


def test_clamp_level_holds_clamped_outputs_at_minus_clamp_v():
    config = IDEAL.replace(clamp_v=0.05)
    A, b = random_problem(15, 5, 12)
    solution = make(config, 15, 5).solve(program(A), b[:, 0])
    reference = scipy.optimize.lsq_linear(A, b[:, 0], bounds=(-0.05, np.inf), method="bvls",
                                          tol=1e-14).x
    assert solution.clamped.any()
    np.testing.assert_array_equal(solution.steady_state[solution.clamped], -0.05)
    np.testing.assert_allclose(solution.steady_state, reference, atol=1e-9)


def test_outputs_saturate_at_the_rails_and_stay_optimal_within_them():
    config = IDEAL.replace(rail_v=0.5)
    A = np.array([[1.0, 0.2, 0.1], [0.1, 1.0, 0.3], [0.2, 0.1, 1.0], [0.3, 0.3, 0.3]])
    b = np.array([0.95, 0.2, 0.3, 0.4])
    solution = make(config, 4, 3).solve(program(A), b)
    reference = scipy.optimize.lsq_linear(A, b, bounds=(0.0, 0.5), method="bvls", tol=1e-14).x
    np.testing.assert_allclose(solution.steady_state, reference, atol=1e-10)
    np.testing.assert_array_equal(solution.saturated, [True, False, False])
    assert solution.steady_state[0] == 0.5
    trajectory = solution.state_at(np.linspace(0.0, 2e-6, 400))
    assert trajectory.max() <= 0.5 and trajectory.min() >= 0.0
    np.testing.assert_allclose(solution.transient().final_value, solution.steady_state, atol=1e-10)

    free = make(config, 4, 3).solve(program(A), -2.0 * b, mode="free")
    assert free.saturated.any() and free.steady_state.min() == -0.5


def test_row_amplifier_outputs_carry_the_residual_and_flag_saturation():
    config = IDEAL.replace(rail_v=0.3)
    b = np.array([1.0, -1.0, 0.8, -0.8])
    solution = make(config, 4, 1).solve(program(np.ones((4, 1))), b)
    assert solution.steady_state[0] == 0.0 and solution.clamped[0]
    np.testing.assert_allclose(solution.row_output_v, b, atol=1e-15)
    assert solution.row_saturated.all()


# ---- transient -------------------------------------------------------------------------------

def test_transient_starts_at_x0_is_unsettled_early_and_converges_to_the_steady_state():
    A, b = random_problem(12, 5, 13)
    solution = make(IDEAL, 12, 5).solve(program(A), b[:, 0])
    transient = solution.transient()
    assert transient.phases > 1          # outputs hit their clamps on the way
    np.testing.assert_array_equal(solution.state_at(0.0), 0.0)
    final = solution.steady_state
    np.testing.assert_allclose(transient.final_value, final, atol=1e-12)
    np.testing.assert_allclose(solution.state_at(1e-3), final, atol=1e-12)
    early = solution.state_at(0.05 * solution.settle_time(1e-3))
    assert np.abs(early - final).max() > 0.1 * np.abs(final).max()
    trajectory = solution.state_at(np.geomspace(1e-12, 1e-5, 300))
    assert trajectory.min() >= 0.0


@pytest.mark.parametrize("seed", [16, 20, 23])
def test_transient_follows_a_projected_integration_of_the_node_equations(seed):
    """Clamped mode with clamp events: explicit Euler of the node-level ODE with the
    clamp as a projection, against the exact piecewise solution."""
    config = IDEAL.replace(clamp_v=0.02)
    A, b = random_problem(6, 3, seed)
    b = b[:, 0]
    circuit = make(config, 6, 3)
    G = program(A, config)
    solution = circuit.solve(G, b)
    assert solution.transient().phases > 1
    horizon = 2 * solution.settle_time(1e-3)
    steps = 20000
    dt = horizon / steps
    x = np.zeros(3)
    samples = {}
    checkpoints = {steps // 8, steps // 4, steps // 2, steps}
    for n in range(1, steps + 1):
        x = np.maximum(x + dt * netlist_derivative(circuit, G, b, x), -0.02)
        if n in checkpoints:
            samples[n * dt] = x.copy()
    scale = np.abs(solution.steady_state).max()
    for t, expected in samples.items():
        np.testing.assert_allclose(solution.state_at(t), expected, atol=2e-3 * scale)


def test_realistic_free_transient_matches_the_node_equations():
    """Finite gain, offsets and compensation mismatch, no bound reached: the exact
    transient and steady state agree with a stiff ODE solve of the node equations."""
    config = CircuitConfig().replace(rail_v=math.inf)
    A = rng(15).uniform(0.2, 1.0, (10, 3))
    b = A @ np.array([0.5, 0.2, 0.7])
    circuit = make(config, 10, 3, seed=4)
    G = program(A, config)
    solution = circuit.solve(G, b, mode="free")
    np.testing.assert_allclose(solution.steady_state, netlist_steady_state(circuit, G, b),
                               rtol=1e-9)
    times = np.array([1e-9, 1e-8, 5e-8, 2e-7, 1e-6])
    ode = scipy.integrate.solve_ivp(lambda t, x: netlist_derivative(circuit, G, b, x),
                                    (0.0, times[-1]), np.zeros(3), method="Radau",
                                    t_eval=times, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(solution.state_at(times), ode.y, rtol=1e-5, atol=1e-9)


def test_initial_state_is_honoured():
    A, b = random_problem(8, 3, 16)
    x0 = np.array([0.3, -0.4, 0.1])
    solution = make(IDEAL, 8, 3).solve(program(A), b[:, 0], mode="free", x0_v=x0)
    np.testing.assert_array_equal(solution.state_at(0.0), x0)
    np.testing.assert_allclose(solution.state_at(1e-3), np.linalg.lstsq(A, b[:, 0], rcond=None)[0],
                               atol=1e-10)


def test_outputs_that_end_clamped_settle_when_they_reach_the_clamp():
    A = np.array([[1.0, 0.3], [0.2, 1.0], [0.5, 0.5]])
    solution = make(IDEAL, 3, 2).solve(program(A), -np.ones(3), x0_v=np.array([0.3, 0.2]))
    transient = solution.transient()
    np.testing.assert_array_equal(solution.steady_state, 0.0)
    assert solution.clamped.all() and transient.phases == 3
    settle = solution.settle_time(1e-3)
    # Inside the band (1e-3 of the 0.3 V initial error) just before the last clamp event.
    assert 0.9 * transient.event_times_s[-1] < settle <= transient.event_times_s[-1]
    assert np.abs(solution.state_at(settle)).max() == pytest.approx(0.3e-3, rel=1e-6)
    assert solution.settle_time_estimate(1e-3) == 0.0
    assert solution.state_at(0.5 * settle).max() > 0.0


def test_batch_transients_have_a_trailing_time_axis():
    A, b = random_problem(8, 3, 17, rhs=2)
    solution = make(IDEAL, 8, 3).solve(program(A), b)
    times = np.array([0.0, 1e-8, 1e-7, 1e-3])
    states = solution.state_at(times)
    assert states.shape == (3, 2, 4)
    np.testing.assert_array_equal(states[:, 1, 2], solution.transient(1).state_at(1e-7))
    np.testing.assert_allclose(states[:, :, -1], solution.steady_state, atol=1e-12)
    assert solution.settle_time(1e-3).shape == (2,)


# ---- settling time -------------------------------------------------------------------------

def test_settle_time_scales_as_one_over_the_smallest_eigenvalue():
    """A = [[1, c], [c, 1]]: lambda_min(A^T A) = (1 - c)^2; the same solution each time."""
    x_star = np.array([0.6, 0.2])
    rates, measured, estimated = [], [], []
    for c in (0.5, 0.7, 0.85, 0.93, 0.97):
        A = np.array([[1.0, c], [c, 1.0]])
        solution = make(IDEAL, 2, 2).solve(program(A), A @ x_star)
        assert solution.transient().phases == 1 and not solution.clamped.any()
        rates.append(solution.slowest_rate_per_s)
        measured.append(solution.settle_time(1e-4))
        estimated.append(solution.settle_time_estimate(1e-4))
    # Equal column sums T: the loop rate is lambda_min(A^T A) omega g_unit^2 / (g_f T).
    couplings = np.array([0.5, 0.7, 0.85, 0.93, 0.97])
    T = 2 * IDEAL.g_offset_s + IDEAL.g_unit_s * (1 + couplings)
    expected = (1 - couplings) ** 2 * 2 * math.pi * IDEAL.gbw_hz * IDEAL.g_unit_s ** 2 / (
        IDEAL.row_feedback_s * T)
    np.testing.assert_allclose(rates, expected, rtol=1e-9)
    slope = np.polyfit(np.log(rates), np.log(measured), 1)[0]
    assert slope == pytest.approx(-1.0, abs=0.05)
    ratio = np.array(measured) / np.array(estimated)
    assert np.all((ratio > 0.7) & (ratio < 1.3))


def test_settle_time_is_of_the_published_order_with_the_realistic_preset():
    """64 x 8 array, random 3-bit levels, 10 MHz op-amps: a few hundred ns at most."""
    config = CircuitConfig()
    A = rng(18).integers(0, 8, (64, 8)).astype(float)
    b = A @ rng(19).uniform(0, 0.1, 8) / config.input_gain
    solution = make(config, 64, 8).solve(program(A, config), b)
    settle = solution.settle_time(2.0 ** -10)
    assert 10e-9 < settle < 1e-6
    assert solution.settle_time_estimate(2.0 ** -10) == pytest.approx(settle, rel=0.5)
    assert solution.settle_time(1e-3, absolute=True) < settle


# ---- non-idealities perturb the solution by the expected amount -------------------------------

def test_finite_gain_error_matches_first_order_theory_and_scales_with_one_over_a0():
    A = rng(20).uniform(0.1, 1.0, (20, 4))
    x_star = np.array([0.4, 0.3, 0.6, 0.2])
    b = A @ x_star
    G = program(A)
    errors = {}
    for gain in (1e3, 1e4):
        config = IDEAL.replace(opamp_gain=gain)
        circuit = make(config, 20, 4)
        x = circuit.solve(G, b, mode="free").steady_state
        np.testing.assert_allclose(x, netlist_steady_state(circuit, G, b), rtol=1e-9)
        # (A^T A + diag(r)) x = A^T b with r_j = g_f T_j / (A0 g_unit^2).
        ridge = IDEAL.row_feedback_s * G.sum(axis=0) / (gain * IDEAL.g_unit_s ** 2)
        predicted = -np.linalg.solve(A.T @ A, ridge * x_star)
        errors[gain] = x - x_star
        np.testing.assert_allclose(errors[gain], predicted, rtol=0.05, atol=0)
    np.testing.assert_allclose(errors[1e3] / errors[1e4], 10.0, rtol=0.05)


def test_offsets_shift_the_solution_linearly_as_the_node_equations_say():
    A = rng(21).uniform(0.1, 1.0, (12, 3))
    b = A @ np.array([0.5, 0.3, 0.4])
    G = program(A)
    shifts = []
    for std in (2e-3, 4e-3):
        circuit = make(IDEAL.replace(offset_std_v=std), 12, 3, seed=8)
        x = circuit.solve(G, b, mode="free").steady_state
        np.testing.assert_allclose(x, netlist_steady_state(circuit, G, b), rtol=1e-9)
        shifts.append(x - np.array([0.5, 0.3, 0.4]))
    assert np.abs(shifts[0]).max() > 1e-4
    np.testing.assert_allclose(shifts[1], 2.0 * shifts[0], rtol=1e-7)


def test_compensation_mismatch_solves_the_miscompensated_matrix():
    config = IDEAL.replace(compensation_mismatch=0.1)
    A, b = random_problem(15, 4, 22)
    b = b[:, 0]
    circuit = make(config, 15, 4, seed=9)
    x = circuit.solve(program(A), b, mode="free").steady_state
    effective = (program(A) - circuit.reference_conductance_s) / IDEAL.g_unit_s
    np.testing.assert_allclose(x, np.linalg.lstsq(effective, b, rcond=None)[0], rtol=1e-9)
    assert np.abs(x - np.linalg.lstsq(A, b, rcond=None)[0]).max() > 1e-4


def test_same_seed_same_result():
    config = CircuitConfig.pessimistic().replace(input_gain=1.0)
    A, b = random_problem(10, 3, 23)
    first = make(config, 10, 3, seed=5).solve(program(A, config), b).steady_state
    again = make(config, 10, 3, seed=5).solve(program(A, config), b).steady_state
    other = make(config, 10, 3, seed=6).solve(program(A, config), b).steady_state
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-6


def test_input_gain_scales_the_solution():
    """The input branch conductance input_gain * g_unit multiplies x: A x ~ input_gain * v."""
    A, b = random_problem(20, 4, 31)
    unity = make(IDEAL, 20, 4).solve(program(A), b, mode="free").steady_state
    gained = make(IDEAL.replace(input_gain=8.0), 20, 4).solve(program(A), b, mode="free").steady_state
    np.testing.assert_allclose(gained, 8.0 * unity, rtol=1e-9)
