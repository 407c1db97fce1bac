"""The functional chip model: ANLS where every NNLS goes through DAC, circuit and ADC."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import nnls as scipy_nnls

from anmf.model.chip import ChipModel, column_exponents
from anmf.model.config import preset
from anmf.model.nmf import anls


@pytest.fixture(scope="module")
def camera_crop() -> np.ndarray:
    from skimage import data

    return data.camera()[200:264, 200:264].astype(float) / 255.0


def test_ideal_chip_matches_the_reference_anls(camera_crop: np.ndarray) -> None:
    ref = anls(camera_crop, 4, iters=10)
    chip = ChipModel("ideal").factorize(camera_crop, 4, iters=10)
    scale = np.linalg.norm(ref.W @ ref.H)
    assert np.linalg.norm(chip.W @ chip.H - ref.W @ ref.H) <= 1e-6 * scale
    np.testing.assert_allclose(chip.errors, ref.errors, rtol=1e-6)


def test_ideal_solve_equals_scipy_nnls_on_random_problems() -> None:
    rng = np.random.default_rng(3)
    A, B = rng.random((40, 6)), rng.random((40, 9))
    X = ChipModel("ideal").solve(A, B)
    expected = np.stack([scipy_nnls(A, B[:, j])[0] for j in range(B.shape[1])], axis=1)
    np.testing.assert_allclose(X, expected, rtol=1e-6, atol=1e-9)


def test_rram_3bit_lands_near_the_reference_and_reports_it(camera_crop: np.ndarray) -> None:
    ref = anls(camera_crop, 4, iters=10)
    result = ChipModel("rram-3bit").factorize(camera_crop, 4, iters=10)
    print(f"\ncamera 64x64 k=4, 10 iterations: reference {ref.errors[-1]:.4f}, rram-3bit chip {result.errors[-1]:.4f}")
    assert np.all(result.W >= 0) and np.all(result.H >= 0)
    assert result.errors[-1] < 1.25 * ref.errors[-1], "the analog ANLS drifted far from the reference"
    assert result.stats["pulses"] > 0 and result.stats["solves"] == 10 * (64 + 64) + result.stats["over_range_retries"]


def test_same_seed_same_result_and_seed_matters(camera_crop: np.ndarray) -> None:
    R = camera_crop[:32, :32]
    first = ChipModel(preset("rram-3bit").replace(seed=1)).factorize(R, 3, iters=3)
    again = ChipModel(preset("rram-3bit").replace(seed=1)).factorize(R, 3, iters=3)
    other = ChipModel(preset("rram-3bit").replace(seed=2)).factorize(R, 3, iters=3)
    np.testing.assert_array_equal(first.W, again.W)
    assert np.abs(first.W - other.W).max() > 0


def test_over_range_is_retried_with_halved_inputs() -> None:
    # A small A makes x = A^+ b large: the first conversions over-range and are redone.
    rng = np.random.default_rng(5)
    A = rng.random((16, 3)) + 0.5
    B = A @ rng.random((3, 4))
    afe = preset("ideal")
    afe = afe.replace(circuit=afe.circuit.replace(input_gain=64.0))
    chip = ChipModel(afe)
    X = chip.solve(A, B)
    assert chip.stats.over_range_retries > 0 and chip.stats.unresolved_over_range == 0
    expected = np.stack([scipy_nnls(A, B[:, j])[0] for j in range(4)], axis=1)
    np.testing.assert_allclose(X, expected, rtol=1e-6, atol=1e-9)


def test_a_dead_component_reads_zero() -> None:
    rng = np.random.default_rng(6)
    A = rng.random((20, 3))
    A[:, 1] = 0.0
    X = ChipModel("rram-3bit").solve(A, rng.random((20, 5)))
    assert np.all(X[1] == 0.0) and np.all(np.isfinite(X))


def test_column_exponents_fit_the_limit() -> None:
    A = np.array([[0.5, 0.0, 100.0], [3.0, 0.0, 7.0]])
    e = column_exponents(A, 7.0)
    assert list(e) == [-1, 0, 4]
    assert np.all(A.max(axis=0) * np.exp2(-e) <= 7.0)
    assert np.all((A.max(axis=0) * np.exp2(-e + 1) > 7.0) | (A.max(axis=0) == 0))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"A \(m, k\) and B \(m, n\) must share m; got \(3, 2\) and \(4, 1\)"):
        ChipModel("ideal").solve(np.ones((3, 2)), np.ones((4, 1)))
    with pytest.raises(ValueError, match="max_range_retries must be an integer >= 0"):
        ChipModel("ideal", max_range_retries=-1)
