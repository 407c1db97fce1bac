"""The functional chip model: ANLS where every NNLS goes through DAC, circuit and ADC."""
from __future__ import annotations

import re

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


# ---- tiling onto a fixed array (docs/tiling.md) ---------------------------------------------

def test_default_array_is_the_default_build_and_single_array_mode_stays() -> None:
    from anmf.hdl.params import BuildParams

    chip = ChipModel("ideal")
    assert (chip.rows, chip.cols) == (BuildParams().rows, BuildParams().cols) and chip.tiled
    assert not ChipModel("ideal", rows=None, cols=None).tiled


def test_tall_problem_is_reduced_and_solved_exactly_with_ideal_parts() -> None:
    rng = np.random.default_rng(11)
    A, B = rng.random((100, 4)), rng.random((100, 7))
    chip = ChipModel("ideal", rows=16, cols=4)
    X = chip.solve(A, B)
    expected = np.stack([scipy_nnls(A, B[:, j])[0] for j in range(7)], axis=1)
    np.testing.assert_allclose(X, expected, rtol=1e-6, atol=1e-9)
    assert chip.stats.reductions == 1 and chip.stats.programmed_cells <= 10 * 4, "<= d = 10 rows"
    assert chip.stats.digital_macs >= 100 * 4 * 7


def test_masked_ridge_patterns_are_exact_both_direct_and_reduced() -> None:
    rng = np.random.default_rng(12)
    A, B = rng.random((60, 3)), rng.random((60, 6))
    mask = rng.random((60, 6)) < 0.6
    mask[:, 0] = rng.random(60) < 0.15      # few observed rows: programmed directly
    mask[:, 1] = mask[:, 2]                  # one shared pattern
    ridge = 0.5
    chip = ChipModel("ideal", rows=16, cols=4)
    X = chip.solve(A, B, mask=mask, ridge=ridge)
    expected = np.stack([scipy_nnls(np.vstack([A[mask[:, j]], np.sqrt(ridge) * np.eye(3)]),
                                    np.r_[B[mask[:, j], j], np.zeros(3)])[0] for j in range(6)], axis=1)
    np.testing.assert_allclose(X, expected, rtol=1e-6, atol=1e-9)
    assert chip.stats.programs == 5 and chip.stats.reductions == 4, "one program per distinct pattern"
    untiled = ChipModel("ideal", rows=None, cols=None).solve(A, B, mask=mask, ridge=ridge)
    np.testing.assert_allclose(X, untiled, rtol=1e-6, atol=1e-9)


def test_components_beyond_the_columns_converge_by_block_coordinate_sweeps() -> None:
    rng = np.random.default_rng(13)
    A, B = rng.random((40, 6)), rng.random((40, 5))
    expected = np.stack([scipy_nnls(A, B[:, j])[0] for j in range(5)], axis=1)
    one = ChipModel("ideal", rows=16, cols=4).solve(A, B)
    many = ChipModel("ideal", rows=16, cols=4, group_sweeps=100).solve(A, B)
    assert np.abs(one - expected).max() > 1e-3, "one sweep from 0 is not the NNLS solution"
    np.testing.assert_allclose(many, expected, rtol=1e-6, atol=1e-8)


def test_tiled_factorization_tracks_the_reference(camera_crop: np.ndarray) -> None:
    R = camera_crop[:48, :40]
    ref = anls(R, 6, iters=10)
    ideal = ChipModel("ideal", rows=16, cols=4).factorize(R, 6, iters=10)
    noisy = ChipModel("rram-3bit", rows=16, cols=4).factorize(R, 6, iters=10)
    print(f"\ncamera 48x40 k=6 on a 16x4 array, 10 it.: reference {ref.error:.4f}, "
          f"tiled ideal {ideal.error:.4f}, tiled rram-3bit {noisy.error:.4f}")
    assert ideal.error < 1.1 * ref.error and noisy.error < 1.3 * ref.error
    assert ideal.stats["reductions"] == 10 * 2 * 2, "two groups of 3, both factors taller than 16"


def test_array_setting_is_validated() -> None:
    with pytest.raises(ValueError, match=re.escape(
            "rows and cols must both be integers >= 1 (one crossbar) or both None (single-array mode); "
            "got rows=16, cols=None")):
        ChipModel("ideal", rows=16, cols=None)
    with pytest.raises(ValueError, match=re.escape("cols must be an integer >= 1 or None; got 0")):
        ChipModel("ideal", rows=16, cols=0)
    with pytest.raises(ValueError, match=re.escape("group_sweeps must be an integer >= 1; got 0")):
        ChipModel("ideal", group_sweeps=0)
    with pytest.raises(ValueError, match=re.escape(
            "x0 must be a finite array of shape (2, 1) (k, n); got shape (1, 1)")):
        ChipModel("ideal").solve(np.ones((3, 2)), np.ones((3, 1)), x0=np.ones((1, 1)))
