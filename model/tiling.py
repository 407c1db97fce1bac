"""Block-matrix tiling of NNLS problems larger than one crossbar (docs/tiling.md).

The circuit realises ``min 1/2 x^T M^T M x - (M^T v)^T x, x >= 0`` with M the programmed,
NON-NEGATIVE matrix (at most ROWS rows) and v the signed DAC voltages. An NNLS problem
``min ||F h - r||, h >= 0`` with a tall stored factor F (f x k, f > ROWS) depends on F only
through ``G = F^T F`` and ``c = F^T r``. So it is enough to program any non-negative M with
``M^T M = G`` and drive ``v = M G^+ c`` (then ``M^T v = G G^+ c = c``, since c lies in the
range of G): the circuit's minimiser is exactly the NNLS solution.

Such an M with at most ``d = k (k + 1) / 2`` rows always exists and is made of rows of F
(Caratheodory's theorem for cones): G = sum_i f_i f_i^T is a conic combination of the
rank-1 matrices f_i f_i^T, which live in the d-dimensional space of symmetric k x k
matrices, so some lambda >= 0 with at most d non-zeros gives ``G = sum_i lambda_i f_i
f_i^T``; then ``M = diag(sqrt(lambda_S)) F_S``. lambda is a basic non-negative solution of
``A lambda = vec(G)`` (A's columns: the upper triangles of f_i f_i^T), found by
Lawson-Hanson NNLS (scipy), whose passive columns stay linearly independent; if its
residual is not at rounding level, explicit null-space elimination (the constructive
proof) takes over.

Components beyond the array's columns (k > COLS) are split into groups solved in turn
(block coordinate descent, :func:`component_groups`). This module is pure math: the
functional chip model (model/chip.py) and the host driver (src/anmf/host/anls.py) both use it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.optimize
from numpy.typing import ArrayLike, NDArray

__all__ = ["DEFAULT_ARRAY_ROWS", "DEFAULT_ARRAY_COLS", "GramReduction", "reduction_rows",
           "group_size", "component_groups", "reduce_rows", "block_gram_rhs", "mask_patterns"]

#: One crossbar of the default build (anmf.hdl.params.BuildParams: ROWS = 64, COLS = 8);
#: model/ must not import hdl/, tests/test_tiling.py checks that they agree.
DEFAULT_ARRAY_ROWS = 64
DEFAULT_ARRAY_COLS = 8
#: Relative residual ||M^T M - G|| / ||G|| a reduction must reach (rounding level).
REDUCTION_RTOL = 1e-9
#: Relative eigenvalue floor of G's pseudo-inverse (a rank-deficient F).
_PINV_RCOND = 1e-10


def _check_positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    return int(value)


def reduction_rows(k: int) -> int:
    """Rows a reduced factor of k columns needs at most: d = k (k + 1) / 2."""
    k = _check_positive_int(k, "k")
    return k * (k + 1) // 2


def group_size(rows: int, cols: int) -> int:
    """Most components one solve can take on a rows x cols array when the stored factor may
    need a reduction: at most ``cols``, and with ``s (s + 1) / 2 <= rows``."""
    rows = _check_positive_int(rows, "rows")
    cols = _check_positive_int(cols, "cols")
    # Largest s with s (s + 1) / 2 <= rows.
    s = int((np.sqrt(8 * rows + 1) - 1) // 2)
    while (s + 1) * (s + 2) // 2 <= rows:
        s += 1
    while s * (s + 1) // 2 > rows:
        s -= 1
    return min(cols, s)


def component_groups(k: int, size: int) -> list[NDArray[np.int64]]:
    """Components 0..k-1 in ceil(k / size) contiguous groups of near-equal size (<= size)."""
    k = _check_positive_int(k, "k")
    size = _check_positive_int(size, "size")
    count = -(-k // size)
    return [np.asarray(g, dtype=np.int64) for g in np.array_split(np.arange(k), count)]


@dataclass(frozen=True)
class GramReduction:
    """A non-negative M (r x k, r <= d) with ``M^T M = F^T F`` made of weighted rows of F.

    ``rows`` are the indices into F of the kept rows, ``weights`` their lambda (> 0), so
    ``matrix = sqrt(weights)[:, None] * F[rows]``; ``gram`` is F^T F; ``residual`` the
    relative ``||M^T M - G||_F / ||G||_F``; ``lift`` = M G^+ maps c = F^T r to the DAC
    input v (:meth:`drive`)."""

    rows: NDArray[np.int64]
    weights: NDArray[np.float64]
    matrix: NDArray[np.float64]
    gram: NDArray[np.float64]
    lift: NDArray[np.float64]
    residual: float

    def drive(self, C: ArrayLike) -> NDArray[np.float64]:
        """V = M G^+ C (r x n): inputs with ``M^T V = C`` for every C in the range of G."""
        return self.lift @ np.asarray(C, dtype=np.float64)


def _checked_factor(F: ArrayLike, name: str = "F") -> NDArray[np.float64]:
    F = np.asarray(F, dtype=np.float64)
    if F.ndim != 2 or F.shape[0] < 1 or F.shape[1] < 1:
        raise ValueError(f"{name} must be a non-empty 2-D array (rows, k); got shape {F.shape}")
    if not np.all(np.isfinite(F)) or np.any(F < 0):
        raise ValueError(f"{name} must hold finite values >= 0 (a programmable factor)")
    return F


def reduce_rows(F: ArrayLike, *, rtol: float = REDUCTION_RTOL) -> GramReduction:
    """Caratheodory row reduction of a non-negative F (f x k): at most k (k + 1) / 2 rows
    of F, weighted, with the same Gram matrix. Zero rows and zero columns are fine (a zero
    column stays zero in M); F with no more non-zero rows than d is returned unweighted.

    Raises RuntimeError if the reduction cannot reach ``rtol`` (not seen: the elimination
    fallback is exact up to rounding)."""
    F = _checked_factor(F)
    if isinstance(rtol, bool) or not isinstance(rtol, (int, float)) or not 0 < rtol < 1:
        raise ValueError(f"rtol must be a number in (0, 1); got {rtol!r}")
    k = F.shape[1]
    d = reduction_rows(k)
    gram = F.T @ F
    nonzero = np.flatnonzero(F.any(axis=1))
    if nonzero.size <= d:
        rows, weights = nonzero, np.ones(nonzero.size)
    else:
        upper = np.triu_indices(k)
        # Column i of A: the upper triangle of f_i f_i^T, scaled to unit length so that
        # NNLS sees columns of one size (lambda is unscaled afterwards).
        A = (F[nonzero][:, upper[0]] * F[nonzero][:, upper[1]]).T
        norms = np.linalg.norm(A, axis=0)
        target = gram[upper]
        scaled, _ = scipy.optimize.nnls(A / norms, target, maxiter=50 * nonzero.size)
        weights_all = scaled / norms
        if _relative_residual(A, weights_all, target) > rtol:
            weights_all = _eliminate(A, np.ones(nonzero.size))
        keep = weights_all > 0
        rows, weights = nonzero[keep], weights_all[keep]
    matrix = np.sqrt(weights)[:, None] * F[rows]
    scale = np.linalg.norm(gram)
    residual = float(np.linalg.norm(matrix.T @ matrix - gram) / scale) if scale > 0 else 0.0
    if residual > rtol:
        raise RuntimeError(f"row reduction reached a relative Gram residual of {residual:.3g} "
                           f"(needs <= {rtol:g})")
    lift = matrix @ np.linalg.pinv(gram, rcond=_PINV_RCOND, hermitian=True)
    return GramReduction(rows=rows.astype(np.int64), weights=weights, matrix=matrix, gram=gram,
                         lift=lift, residual=residual)


def _relative_residual(A: NDArray[np.float64], weights: NDArray[np.float64],
                       target: NDArray[np.float64]) -> float:
    scale = np.linalg.norm(target)
    return float(np.linalg.norm(A @ weights - target) / scale) if scale > 0 else 0.0


def _eliminate(A: NDArray[np.float64], weights: NDArray[np.float64]) -> NDArray[np.float64]:
    """Caratheodory's constructive proof: while the support's columns of A are dependent,
    move along a null vector z until a weight reaches 0 (A (w - t z) = A w, w - t z >= 0).
    Works on a window of at most rank + 1 support columns, so each step is a small SVD."""
    weights = weights.astype(np.float64).copy()
    rank_cap = A.shape[0]
    support = list(np.flatnonzero(weights > 0))
    window: list[int] = []
    while support or len(window) > rank_cap:
        while support and len(window) <= rank_cap:
            window.append(support.pop())
        _, sigma, vt = np.linalg.svd(A[:, window])
        rank = int(np.sum(sigma > sigma[0] * 1e-12)) if sigma.size else 0
        if rank == len(window):
            if not support:
                break
            continue   # independent so far: the window grows (it never exceeds rank_cap + 1)
        z = vt[-1]
        if not np.any(z > 0):
            z = -z
        positive = z > 0
        w = weights[window]
        steps = np.full(z.size, np.inf)
        steps[positive] = w[positive] / z[positive]
        t = steps.min()
        w = w - t * z
        w[np.argmin(steps)] = 0.0
        w[w < 0] = 0.0   # rounding
        weights[window] = w
        window = [i for i, value in zip(window, w) if value > 0]
    return weights


def block_gram_rhs(F: ArrayLike, B: ArrayLike, block_rows: int) -> NDArray[np.float64]:
    """C = F^T B accumulated over row blocks of at most ``block_rows`` rows: what the host
    computes digitally (f k MACs per right-hand side), one stored block at a time."""
    F = np.asarray(F, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    block_rows = _check_positive_int(block_rows, "block_rows")
    if F.ndim != 2 or B.ndim != 2 or F.shape[0] != B.shape[0]:
        raise ValueError(f"F (f, k) and B (f, n) must share f; got {F.shape} and {B.shape}")
    C = np.zeros((F.shape[1], B.shape[1]))
    for start in range(0, F.shape[0], block_rows):
        block = slice(start, start + block_rows)
        C += F[block].T @ B[block]
    return C


def mask_patterns(mask: ArrayLike) -> tuple[NDArray[np.bool_], NDArray[np.int64]]:
    """Right-hand sides grouped by identical observation pattern: ``patterns`` (f x p, one
    column per distinct pattern of ``mask`` (f x n, bool)) and ``group`` (n,), the pattern
    of each right-hand side (``mask == patterns[:, group]``)."""
    mask = np.asarray(mask)
    if mask.dtype != np.bool_ or mask.ndim != 2:
        raise ValueError(f"mask must be a 2-D bool array (rows, right-hand sides); got "
                         f"{mask.dtype} array of shape {mask.shape}")
    if mask.shape[1] == 0:
        return np.zeros((mask.shape[0], 0), dtype=bool), np.zeros(0, dtype=np.int64)
    _, first, group = np.unique(np.packbits(mask, axis=0).T, axis=0, return_index=True,
                                return_inverse=True)
    return mask[:, first], group.reshape(-1).astype(np.int64)
