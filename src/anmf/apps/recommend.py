"""Collaborative filtering by masked NMF: predict held-out ratings from R ~ W H.

The users x items rating matrix R is mostly missing. Masked ANLS fits W (users x k) and
H (k x items) to the observed training ratings only, with a ridge term
``ridge (||W||^2 + ||H||^2)`` that keeps users and items with few ratings from being
over-fitted (and their least-squares problems regular). A held-out rating (u, i) is
predicted as ``(W H)[u, i]`` clipped to the rating range ([1, 5] on MovieLens); a test
pair whose user or item has no training rating gets the mean training rating (Surprise
does the same for unknown users and items).

Cross-validation: the ratings are shuffled with a seeded generator and cut into F folds
of (nearly) equal size; fold f is the test set of run f, the rest its training set
(5 folds: random 80/20 splits, each rating tested once). Both backends see the same
folds and the same initialization (NNDSVDa of the training matrix, missing entries
filled with the training mean).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from anmf.data import InputError

__all__ = ["BACKENDS", "DEFAULT_RANK", "DEFAULT_RIDGE", "DEFAULT_ITERS", "FoldResult", "CrossValidation",
           "fold_of_ratings", "rating_matrix", "predict", "cross_validate"]

BACKENDS = ("reference", "model")
#: Chosen on the reference, MovieLens-100K, 5-fold CV, seed 0 (docs/applications.md).
DEFAULT_RANK = 3
DEFAULT_RIDGE = 2.0
DEFAULT_ITERS = 30


@dataclass(frozen=True)
class FoldResult:
    """Figures of one train/test split."""

    fold: int
    rmse: float
    mae: float
    test_ratings: int
    train_rel_error: float
    seconds: float
    cold_pairs: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class CrossValidation:
    """All folds of one run; ``rmse`` and ``mae`` are means over the folds."""

    backend: str
    afe: str | None
    rank: int
    ridge: float
    iters: int
    seed: int
    users: int
    items: int
    ratings: int
    rating_range: tuple[float, float]
    folds: list[FoldResult]
    seconds: float
    stats: dict[str, float] = field(default_factory=dict)

    @property
    def rmse(self) -> float:
        return float(np.mean([f.rmse for f in self.folds]))

    @property
    def mae(self) -> float:
        return float(np.mean([f.mae for f in self.folds]))

    @property
    def rmse_std(self) -> float:
        return float(np.std([f.rmse for f in self.folds]))

    def summary(self) -> dict[str, Any]:
        return {
            "backend": self.backend, "afe": self.afe, "rank": self.rank, "ridge": self.ridge,
            "iters": self.iters, "seed": self.seed, "users": self.users, "items": self.items,
            "ratings": self.ratings, "rating_range": list(self.rating_range),
            "rmse": self.rmse, "mae": self.mae, "rmse_std": self.rmse_std,
            "folds": [f.as_dict() for f in self.folds], "seconds": round(self.seconds, 3),
            "stats": dict(self.stats),
        }


def fold_of_ratings(count: int, folds: int, rng: np.random.Generator) -> np.ndarray:
    """Fold index (0 .. folds-1) of each of ``count`` ratings: a seeded random permutation
    cut into ``folds`` parts whose sizes differ by at most one."""
    order = rng.permutation(count)
    fold = np.empty(count, dtype=np.int64)
    fold[order] = np.arange(count) * folds // count
    return fold


def rating_matrix(users: np.ndarray, items: np.ndarray, ratings: np.ndarray,
                  shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Dense R (zeros where missing) and its bool mask from (user, item, rating) triples."""
    R = np.zeros(shape)
    mask = np.zeros(shape, dtype=bool)
    R[users, items] = ratings
    mask[users, items] = True
    return R, mask


def predict(W: np.ndarray, H: np.ndarray, users: np.ndarray, items: np.ndarray, *,
            rating_range: tuple[float, float], fallback: float,
            known_users: np.ndarray, known_items: np.ndarray) -> np.ndarray:
    """(W H)[u, i] for each pair, clipped to ``rating_range``; ``fallback`` where the user or
    the item had no training rating (``known_users`` / ``known_items`` are bool masks)."""
    scores = np.einsum("pk,kp->p", W[users], H[:, items])
    scores = np.clip(scores, *rating_range)
    cold = ~(known_users[users] & known_items[items])
    return np.where(cold, fallback, scores)


def _check_settings(rank, folds, iters, ridge, backend, users, items) -> None:
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; accepted: {', '.join(BACKENDS)}")
    limit = min(users, items)
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= limit:
        raise InputError(f"rank {rank!r} is out of range for {users} users x {items} items; accepted: 1 to {limit}")
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise InputError(f"iters must be an integer >= 1; got {iters!r}")
    if isinstance(ridge, bool) or not isinstance(ridge, (int, float)) or not (np.isfinite(ridge) and ridge >= 0):
        raise InputError(f"ridge must be a finite number >= 0; got {ridge!r}")


def cross_validate(users: np.ndarray, items: np.ndarray, ratings: np.ndarray, *, rank: int = DEFAULT_RANK,
                   ridge: float = DEFAULT_RIDGE, iters: int = DEFAULT_ITERS, folds: int = 5,
                   backend: str = "reference", afe: Any = "rram-3bit", seed: int = 0,
                   failed_rows: str = "exclude", on_fold: Any = None) -> CrossValidation:
    """F-fold cross-validation of masked ANLS on (user, item, rating) triples (0-based indices).

    Args:
        rank, ridge, iters: the factorization (k, ridge weight, ANLS iterations).
        folds: F >= 2; each rating is in the test set of exactly one fold.
        backend: "reference" (float64 ANLS) or "model" (the functional chip model, every
            NNLS through DACs, crossbar, circuit and ADCs, missing entries switched out).
        afe: AFE preset name, TOML path or AFEConfig (model backend); its seed becomes
            ``seed``. One chip serves all folds (converters and op-amps drawn once).
        seed: seeds the fold assignment and the analog front end.
        failed_rows: the chip's policy for rows with a cell that failed write-verify
            (:data:`anmf.model.chip.FAILED_ROW_POLICIES`); "exclude" switches them out.
        on_fold: optional callable ``on_fold(FoldResult)`` after each fold (progress output).
    """
    from anmf.model.metrics import mae, rmse
    from anmf.model.nmf import anls, initialize

    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    ratings = np.asarray(ratings, dtype=np.float64)
    if not (users.shape == items.shape == ratings.shape and users.ndim == 1):
        raise InputError(f"users, items and ratings must be 1-D arrays of one length; got shapes "
                         f"{users.shape}, {items.shape}, {ratings.shape}")
    if users.size == 0 or users.min() < 0 or items.min() < 0:
        raise InputError("users and items must be non-empty arrays of 0-based indices")
    shape = (int(users.max()) + 1, int(items.max()) + 1)
    _check_settings(rank, folds, iters, ridge, backend, *shape)
    if isinstance(folds, bool) or not isinstance(folds, int) or not 2 <= folds <= ratings.size:
        raise InputError(f"folds must be an integer from 2 to the number of ratings ({ratings.size}); got {folds!r}")
    rating_range = (float(ratings.min()), float(ratings.max()))

    rng = np.random.default_rng(seed)
    fold = fold_of_ratings(ratings.size, folds, rng)
    chip = None
    afe_name = None
    if backend == "model":
        from anmf.model.chip import ChipModel
        from anmf.model.config import ConfigError, resolve_afe

        try:
            config = resolve_afe(afe).replace(seed=seed)
        except ConfigError as exc:
            raise InputError(str(exc)) from None
        try:
            # Single-array mode (one crossbar per problem, rows switched per rating): the
            # tiled masked path programs one reduced block per distinct observation pattern,
            # i.e. per user and per item, 40 s per iteration on MovieLens against 1.7 s
            # (docs/tiling.md).
            chip = ChipModel(config, failed_rows=failed_rows, rows=None, cols=None)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        afe_name = config.name

    start = time.perf_counter()
    results: list[FoldResult] = []
    for f in range(folds):
        fold_start = time.perf_counter()
        test = fold == f
        train = ~test
        R, mask = rating_matrix(users[train], items[train], ratings[train], shape)
        init = initialize(R, rank, "nndsvda", seed, mask=mask)
        if chip is None:
            fit = anls(R, rank, iters=iters, init=init, mask=mask, ridge=ridge)
        else:
            fit = chip.factorize(R, rank, iters=iters, init=init, mask=mask, ridge=ridge)
        predicted = predict(fit.W, fit.H, users[test], items[test], rating_range=rating_range,
                            fallback=float(ratings[train].mean()), known_users=mask.any(axis=1),
                            known_items=mask.any(axis=0))
        cold = int(np.count_nonzero(~(mask.any(axis=1)[users[test]] & mask.any(axis=0)[items[test]])))
        result = FoldResult(fold=f + 1, rmse=rmse(ratings[test], predicted), mae=mae(ratings[test], predicted),
                            test_ratings=int(test.sum()), train_rel_error=float(fit.error),
                            seconds=round(time.perf_counter() - fold_start, 3), cold_pairs=cold)
        results.append(result)
        if on_fold is not None:
            on_fold(result)
    return CrossValidation(
        backend=backend, afe=afe_name, rank=rank, ridge=float(ridge), iters=iters, seed=seed,
        users=shape[0], items=shape[1], ratings=int(ratings.size), rating_range=rating_range,
        folds=results, seconds=time.perf_counter() - start,
        stats=chip.stats.as_dict() if chip is not None else {},
    )
