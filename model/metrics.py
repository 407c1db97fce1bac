"""Quality figures for factorizations, images and rating predictions."""
from __future__ import annotations

import numpy as np

__all__ = ["relative_error", "psnr_db", "rmse", "mae"]


def relative_error(R: np.ndarray, W: np.ndarray, H: np.ndarray, mask: np.ndarray | None = None) -> float:
    """||R - W H||_F / ||R||_F, over the observed entries (mask True) when a mask is given.

    Entries of R outside the mask are ignored, so they may hold anything, NaN included.
    """
    R = np.asarray(R, dtype=np.float64)
    W = np.asarray(W, dtype=np.float64)
    H = np.asarray(H, dtype=np.float64)
    if R.ndim != 2 or W.ndim != 2 or H.ndim != 2 or W.shape[1] != H.shape[0] or (W.shape[0], H.shape[1]) != R.shape:
        raise ValueError(
            f"shapes do not chain: R {R.shape}, W {W.shape}, H {H.shape}; accepted: R (m, n), W (m, k), H (k, n)"
        )
    if mask is not None:
        mask = _check_mask(mask, R.shape)
        R = np.where(mask, R, 0.0)
    _check_finite(R, "R")
    _check_finite(W, "W")
    _check_finite(H, "H")
    residual = R - W @ H
    if mask is not None:
        residual[~mask] = 0.0
    reference = np.linalg.norm(R)
    if reference == 0.0:
        raise ValueError("relative error is undefined: R is zero on every observed entry")
    return float(np.linalg.norm(residual) / reference)


def psnr_db(R: np.ndarray, R_hat: np.ndarray, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio 10 log10(peak^2 / MSE) in dB; inf for a perfect match."""
    R, R_hat = _pair(R, R_hat, "R", "R_hat")
    if not (np.isfinite(peak) and peak > 0):
        raise ValueError(f"peak must be a finite number > 0; got {peak!r}")
    mse = float(np.mean((R - R_hat) ** 2))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(peak * peak / mse))


def rmse(y: np.ndarray, y_hat: np.ndarray) -> float:
    """Root-mean-square error between two arrays of the same shape."""
    y, y_hat = _pair(y, y_hat, "y", "y_hat")
    return float(np.sqrt(np.mean((y - y_hat) ** 2)))


def mae(y: np.ndarray, y_hat: np.ndarray) -> float:
    """Mean absolute error between two arrays of the same shape."""
    y, y_hat = _pair(y, y_hat, "y", "y_hat")
    return float(np.mean(np.abs(y - y_hat)))


def _pair(a, b, name_a: str, name_b: str) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape; got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError(f"{name_a} is empty; accepted: at least one value")
    _check_finite(a, name_a)
    _check_finite(b, name_b)
    return a, b


def _check_finite(a: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf; accepted: finite values")


def _check_mask(mask, shape: tuple[int, ...]) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.dtype != np.bool_ or mask.shape != shape:
        raise ValueError(
            f"mask must be a bool array of shape {shape} like R (True = observed); "
            f"got dtype {mask.dtype}, shape {mask.shape}"
        )
    return mask
