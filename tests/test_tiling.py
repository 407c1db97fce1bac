"""Block-matrix tiling math (model/tiling.py): the Caratheodory row reduction, the block
accumulation of F^T B, component groups and mask patterns."""
from __future__ import annotations

import re

import numpy as np
import pytest
from scipy.optimize import nnls as scipy_nnls

from anmf.hdl.params import BuildParams
from anmf.model.nnls import nnls_gram
from anmf.model.tiling import (DEFAULT_ARRAY_COLS, DEFAULT_ARRAY_ROWS, _eliminate, block_gram_rhs,
                               component_groups, group_size, mask_patterns, reduce_rows,
                               reduction_rows)


def test_default_array_matches_the_default_build() -> None:
    params = BuildParams()
    assert (DEFAULT_ARRAY_ROWS, DEFAULT_ARRAY_COLS) == (params.rows, params.cols)


def gram_residual(M: np.ndarray, F: np.ndarray) -> float:
    return float(np.linalg.norm(M.T @ M - F.T @ F) / np.linalg.norm(F.T @ F))


@pytest.mark.parametrize("f, k", [(512, 8), (300, 6), (40, 3), (7, 2)])
def test_reduction_keeps_the_gram_matrix_with_at_most_d_weighted_rows(f: int, k: int) -> None:
    F = np.random.default_rng(f).random((f, k))
    reduction = reduce_rows(F)
    M = reduction.matrix
    assert M.shape[0] <= reduction_rows(k) and M.shape[1] == k
    assert np.all(M >= 0) and np.all(reduction.weights > 0)
    np.testing.assert_allclose(M, np.sqrt(reduction.weights)[:, None] * F[reduction.rows])
    assert gram_residual(M, F) < 1e-12
    assert reduction.residual == pytest.approx(gram_residual(M, F), abs=1e-15)


def test_rank_deficient_factor_with_zero_rows_and_a_zero_column() -> None:
    rng = np.random.default_rng(4)
    F = rng.random((200, 2)) @ rng.random((2, 5))   # rank 2: Gram in a 3-D space of matrices
    F[:, 3] = 0.0
    F[::7] = 0.0
    reduction = reduce_rows(F)
    assert reduction.matrix.shape[0] <= 3, "a basic solution uses at most rank(A) rows"
    assert np.all(reduction.matrix[:, 3] == 0.0)
    assert gram_residual(reduction.matrix, F) < 1e-12
    assert not np.isin(reduction.rows, np.arange(0, 200, 7)).any(), "zero rows carry nothing"


def test_nnls_through_the_reduced_system_equals_nnls_on_the_full_system() -> None:
    rng = np.random.default_rng(5)
    F = rng.random((150, 6))
    B = rng.random((150, 10)) - 0.3   # signed right-hand sides (the residual of other groups)
    reduction = reduce_rows(F)
    V = reduction.drive(block_gram_rhs(F, B, 64))
    np.testing.assert_allclose(reduction.matrix.T @ V, F.T @ B, rtol=1e-10, atol=1e-10)
    for j in range(B.shape[1]):
        full, _ = scipy_nnls(F, B[:, j])
        reduced, _ = scipy_nnls(reduction.matrix, V[:, j])
        np.testing.assert_allclose(reduced, full, rtol=1e-8, atol=1e-10)
    ours = nnls_gram(reduction.matrix.T @ reduction.matrix, reduction.matrix.T @ V)
    expected = np.stack([scipy_nnls(F, B[:, j])[0] for j in range(B.shape[1])], axis=1)
    np.testing.assert_allclose(ours, expected, rtol=1e-8, atol=1e-10)


def test_rank_deficient_reduced_nnls_reaches_the_same_optimum() -> None:
    rng = np.random.default_rng(6)
    F = rng.random((120, 3)) @ rng.random((3, 5))   # many minimizers: compare objectives
    b = rng.random(120)
    reduction = reduce_rows(F)
    v = reduction.drive(F.T @ b)
    h_full, _ = scipy_nnls(F, b)
    h_reduced, _ = scipy_nnls(reduction.matrix, v)
    assert np.linalg.norm(F @ h_reduced - b) == pytest.approx(np.linalg.norm(F @ h_full - b), rel=1e-9)


def test_elimination_fallback_is_a_basic_exact_combination() -> None:
    rng = np.random.default_rng(7)
    F = rng.random((90, 4))
    upper = np.triu_indices(4)
    A = (F[:, upper[0]] * F[:, upper[1]]).T
    weights = _eliminate(A, np.ones(90))
    assert np.all(weights >= 0) and np.count_nonzero(weights) <= reduction_rows(4)
    np.testing.assert_allclose(A @ weights, A.sum(axis=1), rtol=1e-11)


@pytest.mark.parametrize("block_rows", [1, 7, 64, 1000])
def test_block_accumulation_equals_the_full_product(block_rows: int) -> None:
    rng = np.random.default_rng(8)
    F, B = rng.random((100, 5)), rng.standard_normal((100, 3))
    np.testing.assert_allclose(block_gram_rhs(F, B, block_rows), F.T @ B, rtol=1e-12)


def test_group_size_and_groups() -> None:
    assert group_size(64, 8) == 8       # d = 36 <= 64
    assert group_size(16, 4) == 4       # d = 10 <= 16
    assert group_size(16, 8) == 5       # 15 <= 16 < 21
    assert group_size(2, 8) == 1
    assert [g.tolist() for g in component_groups(6, 4)] == [[0, 1, 2], [3, 4, 5]]
    assert [g.size for g in component_groups(32, 8)] == [8, 8, 8, 8]
    assert [g.tolist() for g in component_groups(3, 8)] == [[0, 1, 2]]


def test_mask_patterns_group_identical_columns() -> None:
    mask = np.array([[1, 0, 1, 1], [0, 1, 0, 0], [1, 1, 1, 0]], dtype=bool)
    patterns, group = mask_patterns(mask)
    assert patterns.shape == (3, 3)
    np.testing.assert_array_equal(patterns[:, group], mask)
    assert group[0] == group[2] and len({group[0], group[1], group[3]}) == 3


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match=re.escape(
            "F must hold finite values >= 0 (a programmable factor)")):
        reduce_rows(-np.ones((3, 2)))
    with pytest.raises(ValueError, match=re.escape(
            "F must be a non-empty 2-D array (rows, k); got shape (4,)")):
        reduce_rows(np.ones(4))
    with pytest.raises(ValueError, match=re.escape("rtol must be a number in (0, 1); got 0")):
        reduce_rows(np.ones((3, 2)), rtol=0)
    with pytest.raises(ValueError, match=re.escape("k must be an integer >= 1; got 0")):
        reduction_rows(0)
    with pytest.raises(ValueError, match=re.escape("cols must be an integer >= 1; got True")):
        group_size(16, True)
    with pytest.raises(ValueError, match=re.escape("size must be an integer >= 1; got 0")):
        component_groups(4, 0)
    with pytest.raises(ValueError, match=re.escape(
            "F (f, k) and B (f, n) must share f; got (4, 2) and (5, 1)")):
        block_gram_rhs(np.ones((4, 2)), np.ones((5, 1)), 2)
    with pytest.raises(ValueError, match=re.escape("block_rows must be an integer >= 1; got -1")):
        block_gram_rhs(np.ones((4, 2)), np.ones((4, 1)), -1)
    with pytest.raises(ValueError, match=re.escape(
            "mask must be a 2-D bool array (rows, right-hand sides); got int64 array of shape (2, 2)")):
        mask_patterns(np.ones((2, 2), dtype=np.int64))
