"""Float64 reference NMF: R (m x n, >= 0) ~ W (m x k) H (k x n) with W, H >= 0.

Three solvers share one driver, one result type and one validation:

- ``anls``: alternating exact non-negative least squares, the algorithm the chip runs.
  Each half-step solves every column's NNLS problem exactly with block principal
  pivoting (:mod:`anmf.model.nnls`), warm-started from the previous active set.
- ``hals``: hierarchical ALS, one exact coordinate sweep over the k components per
  half-step (the same update as scikit-learn's ``solver="cd"``).
- ``mu``: Lee & Seung multiplicative updates for the Frobenius loss.

Every iteration updates H first (given W), then W (given H), as the chip does.

Missing entries: ``mask`` (bool, True = observed). ANLS then gives each column's
(row's) problem only its observed rows (columns), so column j of the H-step has its
own Gram matrix ``W^T diag(mask[:, j]) W``. Columns sharing a mask pattern share one
Gram matrix; otherwise all Gram matrices come from one matrix product
``mask^T (W (x) W)`` and are solved by :func:`anmf.model.nnls.nnls_gram_batched`.
HALS and MU minimise the 0/1-weighted loss ``||mask * (R - W H)||^2``, which is the
same objective.

``ridge`` adds ``ridge * ||x||^2`` to every least-squares problem (a diagonal
conductance in the circuit), i.e. the objective becomes
``||mask * (R - W H)||^2 + ridge (||W||^2 + ||H||^2)``.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from anmf.model.nnls import nnls_gram, nnls_gram_batched

__all__ = ["NMFResult", "METHODS", "INITS", "factorize", "anls", "hals", "mu", "initialize"]

METHODS = ("anls", "hals", "mu")
INITS = ("nndsvda", "nndsvd", "random")

# scikit-learn's NNDSVD truncation: entries below this become exact zeros.
_NNDSVD_EPS = 1e-6
# scikit-learn's MU guard against a zero denominator.
_MU_EPS = float(np.finfo(np.float32).eps)
# Share one Gram matrix per mask pattern when there are at most 1/8 as many patterns as
# columns; otherwise the stacked per-column path is cheaper.
_PATTERNS_PER_COLUMN_TO_GROUP = 1 / 8

Init = str | tuple[np.ndarray, np.ndarray]
Callback = Callable[[int, np.ndarray, np.ndarray, float], bool | None]


@dataclass(frozen=True)
class NMFResult:
    """Factors and the convergence history of one run.

    ``errors[t]`` is the relative error (observed entries only when masked) after
    iteration ``t + 1``; ``initial_error`` is that of the initial factors.
    ``seconds`` is the wall time of the whole call, initialization included.
    """

    W: np.ndarray
    H: np.ndarray
    errors: np.ndarray
    initial_error: float
    iterations: int
    seconds: float
    method: str

    @property
    def error(self) -> float:
        """Relative error of the returned factors."""
        return float(self.errors[-1]) if self.iterations else self.initial_error


def factorize(
    R: np.ndarray,
    k: int,
    *,
    method: str = "anls",
    iters: int,
    init: Init = "nndsvda",
    mask: np.ndarray | None = None,
    ridge: float = 0.0,
    seed: int | np.random.Generator = 0,
    callback: Callback | None = None,
) -> NMFResult:
    """Run NMF with ``method`` in {"anls", "hals", "mu"}; see :func:`anls` for the rest."""
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"unknown method {method!r}; accepted: {', '.join(METHODS)}")
    return _fit(method, R, k, iters=iters, init=init, mask=mask, ridge=ridge, seed=seed, callback=callback)


def anls(
    R: np.ndarray,
    k: int,
    *,
    iters: int,
    init: Init = "nndsvda",
    mask: np.ndarray | None = None,
    ridge: float = 0.0,
    seed: int | np.random.Generator = 0,
    callback: Callback | None = None,
) -> NMFResult:
    """Alternating exact NNLS.

    Args:
        R: (m, n) non-negative data; entries outside ``mask`` may hold anything.
        k: rank, 1 <= k <= min(m, n).
        iters: number of outer iterations (each one H-step and one W-step).
        init: "nndsvda", "nndsvd", "random" or a pair (W0 (m, k), H0 (k, n)).
        mask: optional (m, n) bool, True where R is observed.
        ridge: >= 0, adds ridge * ||x||^2 to every least-squares problem.
        seed: int or numpy Generator for the random initialization.
        callback: called as ``callback(iteration, W, H, error)`` after each
            iteration (iteration counts from 1); returning True stops early.
    """
    return _fit("anls", R, k, iters=iters, init=init, mask=mask, ridge=ridge, seed=seed, callback=callback)


def hals(
    R: np.ndarray,
    k: int,
    *,
    iters: int,
    init: Init = "nndsvda",
    mask: np.ndarray | None = None,
    ridge: float = 0.0,
    seed: int | np.random.Generator = 0,
    callback: Callback | None = None,
) -> NMFResult:
    """Hierarchical ALS (exact coordinate descent); arguments as in :func:`anls`."""
    return _fit("hals", R, k, iters=iters, init=init, mask=mask, ridge=ridge, seed=seed, callback=callback)


def mu(
    R: np.ndarray,
    k: int,
    *,
    iters: int,
    init: Init = "nndsvda",
    mask: np.ndarray | None = None,
    ridge: float = 0.0,
    seed: int | np.random.Generator = 0,
    callback: Callback | None = None,
) -> NMFResult:
    """Multiplicative updates (Frobenius loss); arguments as in :func:`anls`.

    Entries that start at zero stay at zero, so use "nndsvda" or "random" rather
    than "nndsvd" with this method.
    """
    return _fit("mu", R, k, iters=iters, init=init, mask=mask, ridge=ridge, seed=seed, callback=callback)


def initialize(
    R: np.ndarray,
    k: int,
    method: str = "nndsvda",
    seed: int | np.random.Generator = 0,
    *,
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Initial (W, H) as scikit-learn's ``_initialize_nmf`` defines them.

    "nndsvd" (Boutsidis & Gallopoulos 2008) from the exact leading-k SVD, entries below
    1e-6 set to zero; "nndsvda" the same with those zeros replaced by the mean of R;
    "random": |N(0, 1)| * sqrt(mean(R) / k) from ``numpy.random.default_rng(seed)``.
    With a mask, missing entries are filled with the mean of the observed ones first.
    """
    data = _Data.from_input(R, k, mask)
    if not isinstance(method, str) or method not in INITS:
        raise ValueError(f"unknown init {method!r}; accepted: {', '.join(INITS)}, or a (W0, H0) pair")
    return _initialize(data.filled(), k, method, _generator(seed))


@dataclass
class _Data:
    """Validated input: R zero-filled outside the mask; mask None when all observed."""

    R: np.ndarray
    mask: np.ndarray | None
    norm: float
    k: int
    _groups: dict = field(default_factory=dict)

    @classmethod
    def from_input(cls, R, k, mask) -> _Data:
        R = np.asarray(R, dtype=np.float64)
        if R.ndim != 2:
            raise ValueError(f"R is {R.ndim}-D with shape {R.shape}; accepted: a 2-D matrix (m, n)")
        if R.size == 0:
            raise ValueError(f"R is empty (shape {R.shape}); accepted: a matrix with at least one row and column")
        if mask is not None:
            mask = np.asarray(mask)
            if mask.dtype != np.bool_ or mask.shape != R.shape:
                raise ValueError(
                    f"mask must be a bool array of shape {R.shape} like R (True = observed); "
                    f"got dtype {mask.dtype}, shape {mask.shape}"
                )
            if not mask.any():
                raise ValueError("mask has no True entry; accepted: at least one observed entry")
            R = np.where(mask, R, 0.0)
            if mask.all():
                mask = None
        where = "" if mask is None else " observed"
        if not np.all(np.isfinite(R)):
            bad = int(np.count_nonzero(~np.isfinite(R)))
            raise ValueError(
                f"R has {bad} NaN or infinite{where} entries; accepted: finite values >= 0 "
                "(mark missing entries False in mask)"
            )
        if np.any(R < 0):
            bad = int(np.count_nonzero(R < 0))
            raise ValueError(f"R has {bad} negative{where} entries (min {R.min():g}); accepted: values >= 0")
        norm = float(np.linalg.norm(R))
        if norm == 0.0:
            raise ValueError(f"R is zero on every{where} entry; accepted: a matrix with a positive entry")
        limit = min(R.shape)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= limit:
            raise ValueError(
                f"rank {k!r} is out of range for a {R.shape[0]}x{R.shape[1]} matrix; accepted: an integer from 1 to {limit}"
            )
        return cls(R=R, mask=mask, norm=norm, k=int(k))

    def filled(self) -> np.ndarray:
        """R with missing entries replaced by the mean of the observed ones."""
        if self.mask is None:
            return self.R
        return np.where(self.mask, self.R, self.R[self.mask].mean())

    def error(self, W: np.ndarray, H: np.ndarray) -> float:
        residual = self.R - W @ H
        if self.mask is not None:
            residual[~self.mask] = 0.0
        return float(np.linalg.norm(residual) / self.norm)

    def groups(self, transposed: bool) -> tuple[np.ndarray, np.ndarray]:
        """Mask patterns of the columns (of R^T's columns when transposed): a
        representative column per pattern and the pattern index of every column."""
        if transposed not in self._groups:
            mask = self.mask.T if transposed else self.mask
            _, representative, group_of_col = np.unique(
                np.packbits(mask, axis=0).T, axis=0, return_index=True, return_inverse=True
            )
            self._groups[transposed] = (representative, group_of_col.reshape(-1))
        return self._groups[transposed]


def _fit(method, R, k, *, iters, init, mask, ridge, seed, callback) -> NMFResult:
    start = time.perf_counter()
    data = _Data.from_input(R, k, mask)
    if isinstance(iters, bool) or not isinstance(iters, (int, np.integer)) or iters < 0:
        raise ValueError(f"iters must be a non-negative integer; got {iters!r}")
    if isinstance(ridge, bool) or not isinstance(ridge, (int, float, np.floating, np.integer)) or not (
        np.isfinite(ridge) and ridge >= 0
    ):
        raise ValueError(f"ridge must be a finite number >= 0; got {ridge!r}")
    if callback is not None and not callable(callback):
        raise ValueError(f"callback must be callable or None; got {type(callback).__name__}")
    rng = _generator(seed)
    W, H = _initial_factors(data, init, rng)
    step = {"anls": _anls_step, "hals": _hals_step, "mu": _mu_step}[method]
    ridge = float(ridge)
    RT = np.ascontiguousarray(data.R.T)
    maskT = None if data.mask is None else np.ascontiguousarray(data.mask.T)
    initial_error = data.error(W, H)
    errors: list[float] = []
    for iteration in range(1, int(iters) + 1):
        H = step(data, data.R, data.mask, W, H, ridge, transposed=False)
        W = step(data, RT, maskT, H.T, W.T, ridge, transposed=True).T
        errors.append(data.error(W, H))
        if callback is not None and callback(iteration, W, H, errors[-1]) is True:
            break
    W = np.ascontiguousarray(W)
    return NMFResult(
        W=W,
        H=H,
        errors=np.asarray(errors, dtype=np.float64),
        initial_error=initial_error,
        iterations=len(errors),
        seconds=time.perf_counter() - start,
        method=method,
    )


# Each step updates X (k, c) in  R (r, c) ~ F (r, k) X  and returns the new X.


def _anls_step(data: _Data, R, mask, F, X, ridge, *, transposed: bool) -> np.ndarray:
    k = F.shape[1]
    active = X == 0
    if mask is None:
        Q = F.T @ F
        Q.flat[:: k + 1] += ridge
        return nnls_gram(Q, F.T @ R, active_init=active)
    representative, group_of_col = data.groups(transposed)
    c = R.shape[1]
    if representative.size <= _PATTERNS_PER_COLUMN_TO_GROUP * c:
        X_new = np.empty((k, c))
        order = np.argsort(group_of_col, kind="stable")
        bounds = np.searchsorted(group_of_col[order], np.arange(representative.size + 1))
        for g, rep in enumerate(representative):
            cols = order[bounds[g]:bounds[g + 1]]
            Fg = F[mask[:, rep]]
            Q = Fg.T @ Fg
            Q.flat[:: k + 1] += ridge
            X_new[:, cols] = nnls_gram(Q, Fg.T @ R[mask[:, rep]][:, cols], active_init=active[:, cols])
        return X_new
    # Q_j = F^T diag(mask_j) F for every column j in one product: mask^T (F (x) F).
    outer = (F[:, :, None] * F[:, None, :]).reshape(F.shape[0], k * k)
    Qs = (mask.T.astype(np.float64) @ outer).reshape(c, k, k)
    Qs[:, np.arange(k), np.arange(k)] += ridge
    return nnls_gram_batched(Qs, F.T @ R, active_init=active)


def _hals_step(data: _Data, R, mask, F, X, ridge, *, transposed: bool) -> np.ndarray:
    X = X.copy()
    k = F.shape[1]
    if mask is None:
        Q = F.T @ F
        Q.flat[:: k + 1] += ridge
        P = F.T @ R
        for a in range(k):
            if Q[a, a] > 0:  # a dead component (zero column of F) keeps its values
                X[a] = np.maximum(X[a] + (P[a] - Q[a] @ X) / Q[a, a], 0.0)
        return X
    weight = mask.astype(np.float64)
    residual = weight * (R - F @ X)
    curvature = (F * F).T @ weight + ridge  # (k, c): sum_i mask_ij F_ia^2 + ridge
    for a in range(k):
        has_data = curvature[a] > 0
        step = (F[:, a] @ residual - ridge * X[a]) / np.where(has_data, curvature[a], 1.0)
        new = np.where(has_data, np.maximum(X[a] + step, 0.0), X[a])
        residual -= weight * np.outer(F[:, a], new - X[a])
        X[a] = new
    return X


def _mu_step(data: _Data, R, mask, F, X, ridge, *, transposed: bool) -> np.ndarray:
    numerator = F.T @ R
    if mask is None:
        denominator = (F.T @ F) @ X
    else:
        denominator = F.T @ (mask * (F @ X))
    if ridge:
        denominator += ridge * X
    denominator[denominator == 0] = _MU_EPS
    return X * (numerator / denominator)


def _initial_factors(data: _Data, init, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    m, n = data.R.shape
    k = data.k
    if isinstance(init, str):
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; accepted: {', '.join(INITS)}, or a (W0, H0) pair")
        return _initialize(data.filled(), k, init, rng)
    if not (isinstance(init, (tuple, list)) and len(init) == 2):
        raise ValueError(f"unknown init of type {type(init).__name__}; accepted: {', '.join(INITS)}, or a (W0, H0) pair")
    factors = []
    for name, given, shape in (("W0", init[0], (m, k)), ("H0", init[1], (k, n))):
        array = np.array(given, dtype=np.float64)
        if array.shape != shape:
            raise ValueError(f"init {name} must have shape {shape} for R {m}x{n} at rank {k}; got {array.shape}")
        if not np.all(np.isfinite(array)) or np.any(array < 0):
            raise ValueError(f"init {name} must hold finite values >= 0")
        factors.append(array)
    return factors[0], factors[1]


def _initialize(R: np.ndarray, k: int, method: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    m, n = R.shape
    if method == "random":
        scale = np.sqrt(R.mean() / k)
        H = scale * np.abs(rng.standard_normal((k, n)))
        W = scale * np.abs(rng.standard_normal((m, k)))
        return W, H
    U, S, Vt = np.linalg.svd(R, full_matrices=False)
    U, S, Vt = U[:, :k], S[:k], Vt[:k]
    # Per component: keep the positive or the negative parts of (u, v), whichever pair
    # carries more of the rank-1 term; the leading pair is one-signed (Perron-Frobenius).
    u_pos, u_neg = np.maximum(U, 0.0), np.maximum(-U, 0.0)
    v_pos, v_neg = np.maximum(Vt, 0.0), np.maximum(-Vt, 0.0)
    nu_pos, nu_neg = np.linalg.norm(u_pos, axis=0), np.linalg.norm(u_neg, axis=0)
    nv_pos, nv_neg = np.linalg.norm(v_pos, axis=1), np.linalg.norm(v_neg, axis=1)
    take_pos = nu_pos * nv_pos > nu_neg * nv_neg
    u = np.where(take_pos, u_pos, u_neg)
    v = np.where(take_pos[:, None], v_pos, v_neg)
    u_norm = np.where(take_pos, nu_pos, nu_neg)
    v_norm = np.where(take_pos, nv_pos, nv_neg)
    sigma = u_norm * v_norm
    # Normalise, leaving an all-zero part (only possible for a zero singular value) zero.
    W = np.divide(u, u_norm, out=np.zeros_like(u), where=u_norm > 0) * np.sqrt(S * sigma)
    H = np.divide(v, v_norm[:, None], out=np.zeros_like(v), where=v_norm[:, None] > 0) * np.sqrt(S * sigma)[:, None]
    W[:, 0] = np.sqrt(S[0]) * np.abs(U[:, 0])
    H[0] = np.sqrt(S[0]) * np.abs(Vt[0])
    W[W < _NNDSVD_EPS] = 0.0
    H[H < _NNDSVD_EPS] = 0.0
    if method == "nndsvda":
        mean = R.mean()
        W[W == 0] = mean
        H[H == 0] = mean
    return W, H


def _generator(seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer or a numpy Generator; got {seed!r}")
    return np.random.default_rng(int(seed))
