"""Block principal pivoting NNLS (anmf.model.nnls) against scipy.optimize.nnls."""
from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits
import scipy.optimize

from anmf.model.nnls import nnls, nnls_gram, nnls_gram_batched


@pytest.fixture(autouse=True, scope="module")
def single_blas_thread():
    """On the shared 2-core machine a multi-threaded BLAS waiting for a busy core makes
    small products 100x slower; one thread keeps these tests fast and steady."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _scipy_columns(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    return np.stack([scipy.optimize.nnls(A, B[:, j])[0] for j in range(B.shape[1])], axis=1)


def _objective(A: np.ndarray, X: np.ndarray, B: np.ndarray) -> np.ndarray:
    return 0.5 * np.sum((A @ X - B) ** 2, axis=0)


def _assert_kkt(Q: np.ndarray, P: np.ndarray, X: np.ndarray, rtol: float = 1e-9) -> None:
    gradient = Q @ X - P
    scale = np.abs(Q).max() * np.abs(X).sum(axis=0) + np.abs(P).max(axis=0) + 1e-300
    assert np.all(X >= 0), "solution must be non-negative"
    assert np.all(gradient >= -rtol * scale), f"gradient must be >= 0, min {gradient.min():.3g}"
    assert np.all(np.abs(X * gradient) <= rtol * scale * np.abs(X).max(axis=0)), "complementarity x * grad = 0"


@pytest.mark.parametrize("k", [1, 3, 12, 20, 40])
def test_full_rank_problems_match_scipy(k: int) -> None:
    """k = 20 and 40 exercise the size-bucketed stacked solve, small k the padded one."""
    rng = np.random.default_rng(k)
    for trial in range(6):
        m = k + int(rng.integers(1, 2 * k + 5))
        n = int(rng.integers(1, 60))
        A = rng.standard_normal((m, k))
        B = rng.standard_normal((m, n))
        if trial % 2:  # the NMF case: everything non-negative, many positive solutions
            A, B = np.abs(A), np.abs(B)
        X = nnls(A, B)
        expected = _scipy_columns(A, B)
        np.testing.assert_allclose(X, expected, rtol=1e-8, atol=1e-9 * np.abs(expected).max())
        _assert_kkt(A.T @ A, A.T @ B, X)


def test_rank_deficient_and_degenerate_problems_reach_scipy_objective() -> None:
    """Duplicate columns, zero columns and m < k have many minimizers: compare objectives."""
    rng = np.random.default_rng(7)
    worst = 0.0
    for trial in range(150):
        m, k, n = (int(v) for v in rng.integers(1, 16, size=3))
        A = rng.standard_normal((m, k))
        B = rng.standard_normal((m, n))
        if trial % 3 == 0:
            A, B = np.abs(A), np.abs(B)
        if k > 1 and trial % 2 == 0:
            A[:, 0] = A[:, -1]
        if trial % 5 == 0:
            A[:, int(rng.integers(k))] = 0.0
        if trial % 7 == 0:
            B[:, 0] = 0.0
        X = nnls(A, B)
        assert X.shape == (k, n) and np.all(X >= 0)
        excess = _objective(A, X, B) - _objective(A, _scipy_columns(A, B), B)
        worst = max(worst, float(np.max(excess / (0.5 * np.sum(B**2, axis=0) + 1e-300))))
    assert worst < 1e-9, f"objective above scipy's by {worst:.3g} of ||b||^2"


def test_exactly_fittable_rank_deficient_system_has_tiny_residual() -> None:
    """m < k with b in the cone of A: the ridge fallback must still fit b almost exactly."""
    rng = np.random.default_rng(3)
    A = np.abs(rng.standard_normal((4, 9)))
    B = A @ np.abs(rng.standard_normal((9, 5)))
    X = nnls(A, B)
    assert np.linalg.norm(A @ X - B) <= 1e-7 * np.linalg.norm(B)


def test_zero_column_of_A_gives_zero_coefficient() -> None:
    """An unused variable is decoupled instead of ridged, so the other coefficients are
    exactly those of the problem without that column."""
    rng = np.random.default_rng(4)
    A = np.abs(rng.standard_normal((10, 4)))
    A[:, 2] = 0.0
    B = np.abs(rng.standard_normal((10, 6)))
    X = nnls(A, B)
    assert np.all(X[2] == 0.0)
    np.testing.assert_allclose(X[[0, 1, 3]], nnls(A[:, [0, 1, 3]], B), rtol=1e-12, atol=1e-15)


def test_result_is_scale_invariant() -> None:
    """The KKT tolerances are relative: scaling A and B by 1e6 scales nothing else."""
    rng = np.random.default_rng(5)
    A = np.abs(rng.standard_normal((30, 8)))
    B = np.abs(rng.standard_normal((30, 40)))
    np.testing.assert_allclose(nnls(1e6 * A, 1e6 * B), nnls(A, B), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(nnls(1e-6 * A, B), 1e6 * nnls(A, B), rtol=1e-9, atol=1e-6)


def test_edge_shapes() -> None:
    rng = np.random.default_rng(6)
    A = np.abs(rng.standard_normal((5, 3)))
    assert nnls(A, np.zeros((5, 0))).shape == (3, 0)
    assert nnls_gram(np.zeros((0, 0)), np.zeros((0, 4))).shape == (0, 4)
    b = rng.standard_normal(5)
    x = nnls(A, b)
    assert x.shape == (3,)
    np.testing.assert_allclose(x, scipy.optimize.nnls(A, b)[0], rtol=1e-9, atol=1e-12)
    # k = 1 is a clamp of the 1-D least-squares solution.
    a = np.abs(rng.standard_normal((7, 1)))
    B = rng.standard_normal((7, 9))
    np.testing.assert_allclose(nnls(a, B)[0], np.maximum(a[:, 0] @ B / (a[:, 0] @ a[:, 0]), 0.0), rtol=1e-12)
    # Non-positive right-hand sides: x = 0 is optimal.
    assert np.all(nnls(A, -np.abs(rng.standard_normal((5, 4)))) == 0.0)
    assert np.all(nnls_gram(np.zeros((3, 3)), -np.ones((3, 2))) == 0.0)


def test_warm_start_and_iteration_bound_give_the_same_solution() -> None:
    """Any initial active set converges to the same solution; max_iter=1 forces the
    scipy fallback for the unconverged columns."""
    rng = np.random.default_rng(8)
    A = np.abs(rng.standard_normal((40, 10)))
    B = np.abs(rng.standard_normal((40, 80))) - 0.3
    Q, P = A.T @ A, A.T @ B
    reference = _scipy_columns(A, B)
    for active_init in (None, rng.random((10, 80)) < 0.5, np.ones((10, 80), dtype=bool)):
        np.testing.assert_allclose(nnls_gram(Q, P, active_init=active_init), reference, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(nnls_gram(Q, P, max_iter=1), reference, rtol=1e-8, atol=1e-10)


def test_columns_sharing_a_passive_set_use_the_grouped_path_correctly() -> None:
    """Few distinct right-hand sides repeated many times: one factorization per group."""
    rng = np.random.default_rng(9)
    A = np.abs(rng.standard_normal((25, 6)))
    distinct = rng.standard_normal((25, 3))
    B = distinct[:, rng.integers(0, 3, size=300)]
    np.testing.assert_allclose(nnls(A, B), _scipy_columns(A, B), rtol=1e-8, atol=1e-10)


def test_batched_matches_masked_problems_solved_one_by_one() -> None:
    rng = np.random.default_rng(10)
    m, k, n = 30, 6, 50
    A = np.abs(rng.standard_normal((m, k)))
    B = np.abs(rng.standard_normal((m, n)))
    mask = rng.random((m, n)) < 0.4
    mask[:, 0] = False  # a column with nothing observed: x = 0
    mask[:3, 1] = True
    mask[3:, 1] = False  # fewer observations than unknowns: singular Gram matrix
    Qs = np.einsum("ia,ib,ij->jab", A, A, mask.astype(float))
    P = A.T @ (mask * B)
    X = nnls_gram_batched(Qs, P)
    assert np.all(X[:, 0] == 0.0)
    for j in range(1, n):
        rows = mask[:, j]
        expected = scipy.optimize.nnls(A[rows], B[rows, j])[0]
        f_ours = 0.5 * np.sum((A[rows] @ X[:, j] - B[rows, j]) ** 2)
        f_scipy = 0.5 * np.sum((A[rows] @ expected - B[rows, j]) ** 2)
        assert f_ours - f_scipy <= 1e-9 * (0.5 * np.sum(B[rows, j] ** 2)), f"column {j}"
        if np.linalg.matrix_rank(A[rows]) == k:
            np.testing.assert_allclose(X[:, j], expected, rtol=1e-8, atol=1e-10)
    # The shared-matrix solver agrees when every column has the same matrix.
    Q = A.T @ A
    np.testing.assert_allclose(
        nnls_gram_batched(np.broadcast_to(Q, (n, k, k)).copy(), A.T @ B), nnls_gram(Q, A.T @ B), rtol=1e-10, atol=1e-12
    )


def test_large_k_batched_uses_bucketed_solves_correctly() -> None:
    rng = np.random.default_rng(11)
    m, k, n = 60, 24, 30
    A = np.abs(rng.standard_normal((m, k)))
    B = np.abs(rng.standard_normal((m, n)))
    mask = rng.random((m, n)) < 0.8
    Qs = np.einsum("ia,ib,ij->jab", A, A, mask.astype(float))
    X = nnls_gram_batched(Qs, A.T @ (mask * B))
    expected = np.stack([scipy.optimize.nnls(A[mask[:, j]], B[mask[:, j], j])[0] for j in range(n)], axis=1)
    np.testing.assert_allclose(X, expected, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: nnls_gram(np.ones((2, 3)), np.ones((2, 1))), r"Q must be a square 2-D array \(k, k\); got shape \(2, 3\)"),
        (lambda: nnls_gram(np.eye(3), np.ones((2, 4))),
         r"P must be a \(k,\) vector or a \(k, n\) array with k = 3 rows to match Q; got shape \(2, 4\)"),
        (lambda: nnls_gram(np.full((2, 2), np.nan), np.ones((2, 1))), "Q contains NaN or inf; only finite values are accepted"),
        (lambda: nnls_gram(np.eye(2), np.array([[np.inf], [0.0]])), "P contains NaN or inf; only finite values are accepted"),
        (lambda: nnls_gram(np.array([[1.0, 0.5], [0.0, 1.0]]), np.ones((2, 1))),
         r"Q must be symmetric; got max \|Q - Q\^T\| = 0.5"),
        (lambda: nnls_gram(np.diag([1.0, -1.0]), np.ones((2, 1))),
         r"Q must be positive semi-definite \(a Gram matrix A\^T A\); got an eigenvalue of -1 x the largest"),
        (lambda: nnls_gram(np.diag([1.0, 0.0]), np.ones((2, 3))),
         r"unbounded problem: Q has a zero diagonal entry for variable 1 but P\[1, 0\] > 0; "
         r"P must be A\^T B for the Gram matrix A\^T A"),
        (lambda: nnls_gram(np.array([[0.0, 1.0], [1.0, 1.0]]), np.zeros((2, 1))),
         r"Q must be positive semi-definite \(a Gram matrix A\^T A\); "
         r"got a zero diagonal entry in a row with non-zero entries"),
        (lambda: nnls_gram(np.eye(2), np.ones((2, 3)), active_init=np.zeros((2, 3))),
         r"active_init must be a bool array of shape \(2, 3\) like P; got dtype float64, shape \(2, 3\)"),
        (lambda: nnls_gram(np.eye(2), np.ones(2), active_init=np.zeros(3, dtype=bool)),
         r"active_init must be a bool array of shape \(2,\) like P; got dtype bool, shape \(3,\)"),
        (lambda: nnls_gram(np.eye(2), np.ones((2, 3)), max_iter=0), "max_iter must be a positive integer; got 0"),
        (lambda: nnls(np.ones(3), np.ones(3)), r"A must be a 2-D array \(m, k\); got shape \(3,\)"),
        (lambda: nnls(np.ones((3, 2)), np.ones((4, 2))),
         r"B must be an \(m,\) vector or an \(m, n\) array with m = 3 rows to match A; got shape \(4, 2\)"),
        (lambda: nnls_gram_batched(np.ones((2, 2)), np.ones((2, 2))),
         r"Qs must be a 3-D stack \(n, k, k\) of square matrices; got shape \(2, 2\)"),
        (lambda: nnls_gram_batched(np.stack([np.eye(2)] * 3), np.ones((2, 4))),
         r"Qs must hold one \(k, k\) matrix per column of P: got 3 matrices for 4 columns"),
        (lambda: nnls_gram_batched(np.stack([np.eye(2)] * 2), np.ones(2)),
         r"P must be a 2-D array \(k, n\) with one column per matrix in Qs; got shape \(2,\)"),
    ],
)
def test_validation_messages(call, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        call()
