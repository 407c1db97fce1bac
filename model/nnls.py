"""Non-negative least squares in Gram form, many right-hand sides at once.

Every ANLS half-step (and the analog circuit's steady state) is a batch of problems

    min_x  1/2 x^T Q x - p^T x   subject to  x >= 0,      one per column p of P,

with Q = A^T A (k x k, symmetric positive semi-definite) and P = A^T B. They are solved
by block principal pivoting (J. Kim and H. Park, "Fast nonnegative matrix factorization:
an active-set-like method and comparisons", SIAM J. Sci. Comput. 33(6), 2011): each
iteration exchanges all KKT-violating variables between the passive set (free) and the
active set (held at zero) at once, with Murty's single-exchange backup rule when that
stops reducing the number of violations. Columns whose passive sets coincide share one
Cholesky factorization (the column-grouping trick); when most columns have distinct
passive sets, the small systems are solved as one stacked LAPACK call instead.

Rank-deficient Q. A variable with a zero diagonal entry (a zero column of A, e.g. a
dead NMF component or an unobserved column) cannot affect the objective: it gets a
decoupled positive diagonal, so it stays at zero and costs the rest nothing. If Q is
still singular (duplicate columns, fewer rows than unknowns) a tiny ridge
``_RIDGE_RCOND * lambda_max(Q)`` is added to the diagonal, only when
``lambda_min(Q) < _RIDGE_RCOND * lambda_max(Q)``. It changes the objective by at most
``_RIDGE_RCOND * lambda_max * ||x||^2 / 2`` (relative ~1e-10) and picks, among the many
minimizers, one close to the minimum-norm one. P must lie in the range of Q (always
true for P = A^T B); a zero diagonal entry with a positive entry of P in that row
means an unbounded problem and is rejected.

The pivoting ends after ``max_iter`` rounds at the latest; columns still violating
the KKT conditions then (none seen in practice) are finished one by one with
``scipy.optimize.nnls`` on the Cholesky factor of Q, which always terminates.
"""
from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.linalg.lapack
import scipy.optimize

__all__ = ["nnls", "nnls_gram", "nnls_gram_batched"]

# Relative eigenvalue floor below which Q counts as singular and gets a ridge of this
# size (relative to its largest eigenvalue).
_RIDGE_RCOND = 1e-10
# Relative tolerance of the KKT checks: values this small against the column's scale
# are rounding noise, and treating them as violations makes the pivoting cycle.
_KKT_RTOL = 1e-11
# Q may come out of A^T A with slightly negative eigenvalues from rounding.
_PSD_RTOL = 1e-8
_SYMMETRY_RTOL = 1e-10
# Elements per stacked LAPACK call, bounds the (c, k, k) temporaries to ~32 MB.
_STACK_ELEMENTS = 4_000_000
# From this k on, solving only each column's passive block (bucketed by its size) beats
# padding every system to k x k; measured crossover between k = 10 and k = 32.
_BUCKET_MIN_K = 16


def nnls_gram(
    Q: np.ndarray,
    P: np.ndarray,
    *,
    active_init: np.ndarray | None = None,
    max_iter: int | None = None,
) -> np.ndarray:
    """Solve ``min 1/2 x^T Q x - p^T x, x >= 0`` for every column p of P.

    Args:
        Q: (k, k) symmetric positive semi-definite Gram matrix A^T A.
        P: (k, n) right-hand sides A^T B (a 1-D (k,) vector is accepted too).
        active_init: optional (k, n) bool warm start, True where a variable starts in
            the active set (held at zero); e.g. ``X_previous == 0`` in ANLS. Default:
            all variables start passive.
        max_iter: bound on pivoting rounds (default ``max(50, 5 k)``).

    Returns:
        X of P's shape, non-negative, satisfying the KKT conditions to ~1e-11 relative.
    """
    Q = _as_finite_float(Q, "Q")
    if Q.ndim != 2 or Q.shape[0] != Q.shape[1]:
        raise ValueError(f"Q must be a square 2-D array (k, k); got shape {Q.shape}")
    P, one_rhs = _as_rhs(P, Q.shape[0], "Q")
    k, n = P.shape
    passive = _initial_passive(active_init, P.shape, one_rhs)
    max_iter = _check_max_iter(max_iter, k)
    if k == 0 or n == 0:
        return _shape_like(np.zeros((k, n)), one_rhs)
    Q = _checked_symmetric(Q, "Q")
    Q = _positive_definite_stand_in(Q[None], P, "Q")[0]

    def solve(passive_cols: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return _solve_passive_shared(Q, P[:, cols], passive_cols)

    def gradient(X_cols: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return Q @ X_cols - P[:, cols]

    def finish(cols: np.ndarray) -> np.ndarray:
        return _finish_with_scipy(np.broadcast_to(Q, (cols.size, k, k)), P[:, cols])

    q_scale = np.full(n, np.abs(Q).max())
    X = _block_principal_pivoting(P, passive, solve, gradient, finish, q_scale, max_iter)
    return _shape_like(X, one_rhs)


def nnls_gram_batched(
    Qs: np.ndarray,
    P: np.ndarray,
    *,
    active_init: np.ndarray | None = None,
    max_iter: int | None = None,
) -> np.ndarray:
    """Like :func:`nnls_gram`, but column j has its own Gram matrix ``Qs[j]``.

    This is the masked case: column j of B only observes some rows of A, so
    ``Qs[j] = A^T diag(mask[:, j]) A``. The passive-set systems are solved as stacked
    LAPACK calls (no Python loop over columns); singular ``Qs[j]`` get their own
    ridge as in :func:`nnls_gram`.

    Args:
        Qs: (n, k, k) stack of symmetric positive semi-definite matrices.
        P: (k, n) right-hand sides.
        active_init, max_iter: as in :func:`nnls_gram`.
    """
    Qs = _as_finite_float(Qs, "Qs")
    if Qs.ndim != 3 or Qs.shape[1] != Qs.shape[2]:
        raise ValueError(f"Qs must be a 3-D stack (n, k, k) of square matrices; got shape {Qs.shape}")
    if np.ndim(P) != 2:
        raise ValueError(f"P must be a 2-D array (k, n) with one column per matrix in Qs; got shape {np.shape(P)}")
    P, _ = _as_rhs(P, Qs.shape[1], "Qs")
    k, n = P.shape
    if Qs.shape[0] != n:
        raise ValueError(
            f"Qs must hold one (k, k) matrix per column of P: got {Qs.shape[0]} matrices for {n} columns"
        )
    passive = _initial_passive(active_init, P.shape, False)
    max_iter = _check_max_iter(max_iter, k)
    if k == 0 or n == 0:
        return np.zeros((k, n))
    Qs = _checked_symmetric(Qs, "Qs")
    Qs = _positive_definite_stand_in(Qs, P, "Qs")

    def solve(passive_cols: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return _solve_passive_stacked(Qs[cols], P[:, cols], passive_cols)

    def gradient(X_cols: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return np.einsum("jab,bj->aj", Qs[cols], X_cols) - P[:, cols]

    def finish(cols: np.ndarray) -> np.ndarray:
        return _finish_with_scipy(Qs[cols], P[:, cols])

    q_scale = np.abs(Qs).max(axis=(1, 2))
    return _block_principal_pivoting(P, passive, solve, gradient, finish, q_scale, max_iter)


def nnls(A: np.ndarray, B: np.ndarray, *, active_init: np.ndarray | None = None) -> np.ndarray:
    """Solve ``min ||A x - b||_2, x >= 0`` for every column b of B (via the Gram form).

    Args:
        A: (m, k) matrix.
        B: (m, n) right-hand sides, or an (m,) vector.
        active_init: optional warm start as in :func:`nnls_gram`.

    Returns:
        X of shape (k, n), or (k,) for a vector B.
    """
    A = _as_finite_float(A, "A")
    if A.ndim != 2:
        raise ValueError(f"A must be a 2-D array (m, k); got shape {A.shape}")
    B = _as_finite_float(B, "B")
    if B.ndim not in (1, 2) or B.shape[0] != A.shape[0]:
        raise ValueError(
            f"B must be an (m,) vector or an (m, n) array with m = {A.shape[0]} rows to match A; "
            f"got shape {B.shape}"
        )
    return nnls_gram(A.T @ A, A.T @ B, active_init=active_init)


def _block_principal_pivoting(P, passive, solve, gradient, finish, q_scale, max_iter):
    """Kim & Park's Algorithm 2 over all columns; returns X (k, n) >= 0."""
    k, n = P.shape
    all_cols = np.arange(n)
    X = solve(passive, all_cols)
    Y = gradient(X, all_cols)
    p_abs_max = np.abs(P).max(axis=0)
    # Per column: the fewest violations seen so far, and how many more full exchanges
    # may fail to improve on it before falling back to single exchanges (Kim & Park's
    # ninf and p, with p_bar = 3).
    fewest = np.full(n, k + 1)
    budget = np.full(n, 3)
    for _ in range(max_iter):
        violating = _kkt_violations(X, Y, passive, q_scale, p_abs_max)
        count = violating.sum(axis=0)
        todo = count > 0
        if not todo.any():
            break
        improved = todo & (count < fewest)
        fewest[improved] = count[improved]
        budget[improved] = 3
        spend = todo & ~improved & (budget >= 1)
        budget[spend] -= 1
        full = improved | spend
        backup = np.flatnonzero(todo & ~full)
        flip = violating & full[None, :]
        if backup.size:
            # Murty's rule: exchange only the violating variable of largest index.
            last = k - 1 - np.argmax(violating[::-1, backup], axis=0)
            flip[last, backup] = True
        passive ^= flip
        cols = np.flatnonzero(todo)
        X[:, cols] = solve(passive[:, cols], cols)
        Y[:, cols] = gradient(X[:, cols], cols)
    else:
        stuck = np.flatnonzero(_kkt_violations(X, Y, passive, q_scale, p_abs_max).any(axis=0))
        if stuck.size:
            X[:, stuck] = finish(stuck)
    np.maximum(X, 0.0, out=X)
    return X


def _kkt_violations(X, Y, passive, q_scale, p_abs_max):
    """Negative passive variables and negative gradients on the active set."""
    x_tol = _KKT_RTOL * np.abs(X).max(axis=0)
    y_tol = _KKT_RTOL * (q_scale * np.abs(X).sum(axis=0) + p_abs_max)
    return (passive & (X < -x_tol)) | (~passive & (Y < -y_tol))


def _solve_passive_shared(Q, P_cols, passive_cols):
    """x_F = Q_FF^-1 p_F per column, x = 0 elsewhere; one factorization per distinct F."""
    k, c = P_cols.shape
    group_of_col, n_groups = _pattern_groups(passive_cols)
    if not _grouping_pays(n_groups, c, k):
        return _solve_passive_stacked(Q, P_cols, passive_cols)
    X = np.zeros((k, c))
    order = np.argsort(group_of_col, kind="stable")
    bounds = np.searchsorted(group_of_col[order], np.arange(n_groups + 1))
    for g in range(n_groups):
        cols = order[bounds[g]:bounds[g + 1]]
        free = np.flatnonzero(passive_cols[:, cols[0]])
        if free.size == 0:
            continue
        rhs = P_cols[free][:, cols]
        factor, info = scipy.linalg.lapack.dpotrf(Q[free][:, free], lower=1, clean=0)
        if info == 0:
            solution, info = scipy.linalg.lapack.dpotrs(factor, rhs, lower=1)
        if info != 0:  # not numerically positive definite despite the ridge
            solution = np.linalg.lstsq(Q[free][:, free], rhs, rcond=None)[0]
        X[free[:, None], cols] = solution
    return X


def _pattern_groups(columns: np.ndarray) -> tuple[np.ndarray, int]:
    """Index of each column's bool pattern among the distinct patterns, and their count."""
    packed = np.ascontiguousarray(np.packbits(columns, axis=0).T)
    # One opaque bytes value per column: 1-D unique is several times faster than axis=0.
    keys = packed.view(np.dtype((np.void, packed.shape[1])))[:, 0]
    patterns, group_of_col = np.unique(keys, return_inverse=True)
    return group_of_col.reshape(-1), patterns.size


def _grouping_pays(n_groups: int, c: int, k: int) -> bool:
    """Whether one Cholesky per passive-set group beats one stacked solve of all c
    columns. Cost model in microseconds, fitted to measurements (2-core x86, k = 5 to
    64, 70% passive): a group costs ~5 + 0.4 k (Python and call overhead dominate),
    a stacked column ~0.4 + 0.0045 k^2."""
    return n_groups * (5.0 + 0.4 * k) < c * (0.4 + 0.0045 * k * k)


def _solve_passive_stacked(Q, P_cols, passive_cols):
    """Same result as _solve_passive_shared, with stacked LAPACK calls instead of a
    Python loop over groups. Q is (k, k) shared by all columns or (c, k, k) per column.

    Small k: one stacked solve in which identity rows and columns stand in for the
    active variables. Large k: columns are bucketed by passive-set size s and each
    bucket solves only its s x s systems, which saves (1 - s/k)^3 of the flops."""
    k, c = P_cols.shape
    X = np.zeros((k, c))
    shared = Q.ndim == 2
    if k < _BUCKET_MIN_K:
        chunk = max(1, _STACK_ELEMENTS // (k * k))
        for start in range(0, c, chunk):
            sl = slice(start, start + chunk)
            free = passive_cols[:, sl].T
            systems = (free[:, :, None] & free[:, None, :]).astype(np.float64)
            systems *= Q if shared else Q[sl]
            diagonal = np.arange(k)
            systems[:, diagonal, diagonal] += ~free
            rhs = np.where(free, P_cols[:, sl].T, 0.0)
            X[:, sl] = np.linalg.solve(systems, rhs[:, :, None])[:, :, 0].T
        return X
    sizes = passive_cols.sum(axis=0)
    for size in np.unique(sizes):
        if size == 0:
            continue
        bucket = np.flatnonzero(sizes == size)
        chunk = max(1, _STACK_ELEMENTS // (size * size))
        for start in range(0, bucket.size, chunk):
            cols = bucket[start:start + chunk]
            # (columns, size): each column's passive indices, ascending.
            free = np.nonzero(passive_cols[:, cols].T)[1].reshape(cols.size, size)
            if shared:
                systems = Q[free[:, :, None], free[:, None, :]]
            else:
                systems = Q[cols[:, None, None], free[:, :, None], free[:, None, :]]
            rhs = P_cols[free, cols[:, None]]
            X[free, cols[:, None]] = np.linalg.solve(systems, rhs[:, :, None])[:, :, 0]
    return X


def _finish_with_scipy(Qs, P_cols):
    """Lawson-Hanson per column on min ||L^T x - L^-1 p|| (same minimizer), L L^T = Q."""
    k, c = P_cols.shape
    X = np.empty((k, c))
    for j in range(c):
        L = np.linalg.cholesky(Qs[j])
        X[:, j], _ = scipy.optimize.nnls(L.T, scipy.linalg.solve_triangular(L, P_cols[:, j], lower=True))
    return X


def _positive_definite_stand_in(Qs: np.ndarray, P: np.ndarray, name: str) -> np.ndarray:
    """Positive definite matrices (n, k, k) with the same NNLS minimizers as Qs (n, k, k),
    up to the tiny ridge: see the module docstring. Checks semi-definiteness on the way."""
    k = Qs.shape[1]
    diagonal = np.diagonal(Qs, axis1=1, axis2=2)
    unused = diagonal == 0  # (n, k): a zero column of A, the variable only needs x = 0
    if unused.any():
        if np.any(unused & (np.abs(Qs).max(axis=2) > 0)):
            raise ValueError(
                f"{name} must be positive semi-definite (a Gram matrix A^T A); "
                "got a zero diagonal entry in a row with non-zero entries"
            )
        bad = unused.T & (P > 0)
        if bad.any():
            i, j = (int(v[0]) for v in np.nonzero(bad))
            raise ValueError(
                f"unbounded problem: {name} has a zero diagonal entry for variable {i} but P[{i}, {j}] > 0; "
                "P must be A^T B for the Gram matrix A^T A"
            )
        # Give those variables a decoupled unit-scale diagonal: x = 0 stays their
        # minimizer (p <= 0) and the rest of the matrix needs no ridge on their account.
        Qs = Qs.copy()
        owner, index = np.nonzero(unused)
        largest_diagonal = diagonal.max(axis=1)
        Qs[owner, index, index] = np.where(largest_diagonal > 0, largest_diagonal, 1.0)[owner]
    eigenvalues = np.linalg.eigvalsh(Qs)
    smallest, largest = eigenvalues[:, 0], eigenvalues[:, -1]
    if np.any(smallest < -_PSD_RTOL * largest):
        worst = float(np.min(smallest / largest))
        raise ValueError(
            f"{name} must be positive semi-definite (a Gram matrix A^T A); "
            f"got an eigenvalue of {worst:.3g} x the largest"
        )
    ridge = np.where(smallest < _RIDGE_RCOND * largest, _RIDGE_RCOND * largest, 0.0)
    if ridge.any():
        Qs = Qs + ridge[:, None, None] * np.eye(k)
    return Qs


def _checked_symmetric(Q: np.ndarray, name: str) -> np.ndarray:
    transposed = np.swapaxes(Q, -1, -2)
    asymmetry = float(np.abs(Q - transposed).max())
    if asymmetry > _SYMMETRY_RTOL * float(np.abs(Q).max()):
        raise ValueError(f"{name} must be symmetric; got max |{name} - {name}^T| = {asymmetry:.3g}")
    return 0.5 * (Q + transposed)


def _as_finite_float(a, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf; only finite values are accepted")
    return a


def _as_rhs(P, k: int, matrix_name: str) -> tuple[np.ndarray, bool]:
    P = _as_finite_float(P, "P")
    if P.ndim not in (1, 2) or P.shape[0] != k:
        raise ValueError(
            f"P must be a (k,) vector or a (k, n) array with k = {k} rows to match {matrix_name}; "
            f"got shape {P.shape}"
        )
    return (P[:, None], True) if P.ndim == 1 else (P, False)


def _initial_passive(active_init, shape: tuple[int, int], one_rhs: bool) -> np.ndarray:
    if active_init is None:
        return np.ones(shape, dtype=bool)
    active = np.asarray(active_init)
    if one_rhs and active.ndim == 1:
        active = active[:, None]
    if active.dtype != np.bool_ or active.shape != shape:
        expected = (shape[0],) if one_rhs else shape
        raise ValueError(
            f"active_init must be a bool array of shape {expected} like P; "
            f"got dtype {active.dtype}, shape {np.shape(active_init)}"
        )
    return ~active


def _check_max_iter(max_iter, k: int) -> int:
    if max_iter is None:
        return max(50, 5 * k)
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer; got {max_iter!r}")
    return int(max_iter)


def _shape_like(X: np.ndarray, one_rhs: bool) -> np.ndarray:
    return X[:, 0] if one_rhs else X
