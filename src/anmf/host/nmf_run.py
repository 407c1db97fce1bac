"""RUN_NMF from the host: the whole factorization on the chip, one command.

:func:`run_nmf` does what a user of the chip needs around the command
(docs/anls-sequencer.md, docs/host-driver.md):

1. R (missing entries zeroed) becomes R_BITS-bit codes, its largest observed entry the top
   code (``formats.r_codes``); the mask goes to NMF_MASK as it is.
2. The initial W (nndsvda of R by default, or the caller's) becomes mantissas with one
   exponent per component (``formats.fixed_from_factor``). RUN_NMF starts with an H-step,
   so no initial H is needed.
3. RUN_NMF runs ``iterations`` ANLS iterations; progress is passed to the caller's callback.
4. The buffers are read back as floats (``formats.factor_from_fixed``); the chip's product
   approximates ``R / (scale * K)`` with K the analog constant of the circuit, so K is fitted
   on the observed entries (``<R, WH> / <WH, WH>``, which also absorbs the chain's gain
   errors) and folded into H with R's scale.

The same code runs on every :class:`~anmf.host.driver.ChipDriver` backend.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from anmf.model.formats import fixed_from_factor, r_codes
from anmf.model.metrics import relative_error
from anmf.model.nmf import INITS, initialize

from .driver import (ChipDriver, Counters, NMFFactors, NMFProgress, NMFReport, NMFSettings,
                     ProgressCallback)

__all__ = ["NMFRunResult", "run_nmf", "check_nmf_inputs", "fit_product_scale"]


@dataclass(frozen=True)
class NMFRunResult:
    """A RUN_NMF factorization: ``W @ H`` approximates R in R's own units."""

    W: NDArray[np.float64]
    H: NDArray[np.float64]
    #: Relative error on the observed entries, of the initial factors and of the result.
    error: float
    initial_error: float
    #: The fitted product scale (R codes ~ K W_chip H_chip).
    K: float
    factors: NMFFactors           #: the buffers as read back (chip units)
    report: NMFReport
    #: Counter increments of this run: solves, pulses, over_range, failed_cells, retries,
    #: unresolved.
    counts: dict[str, int] = field(default_factory=dict)
    #: RUN_NMF's cycles when the backend knows them (ModelDriver: the golden model's done
    #: cycle; RegisterDriver with a cycle counter: start to the observed end), else None.
    cycles: int | None = None
    seconds: float = 0.0          #: wall time of the call
    #: Wall time of its parts: "load" (buffers and registers), "run" (RUN_NMF and the
    #: progress reads), "read" (factors back).
    phase_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def completed(self) -> bool:
        return self.report.completed


def check_nmf_inputs(R: ArrayLike, k: Any, iterations: Any, mask: ArrayLike | None, *,
                     rows: int, cols: int) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """R (missing entries set to 0) and the mask as arrays, or ValueError saying what is
    wrong: R (m, n) with m, n <= ``rows`` and finite non-negative observed entries, not all
    zero; mask bool of R's shape; 1 <= k <= ``cols`` and k <= min(m, n); iterations >= 1."""
    matrix = np.array(R, dtype=np.float64)
    if matrix.ndim != 2 or not (1 <= matrix.shape[0] <= rows and 1 <= matrix.shape[1] <= rows):
        raise ValueError(f"R must be an (m, n) matrix with 1 <= m, n <= {rows} (ROWS); got "
                         f"shape {matrix.shape}")
    m, n = matrix.shape
    if mask is None:
        observed = np.ones((m, n), dtype=bool)
    else:
        observed = np.asarray(mask)
        if observed.dtype != np.bool_ or observed.shape != (m, n):
            raise ValueError(f"mask must be a bool array of R's shape {(m, n)}; got "
                             f"{observed.dtype} array of shape {observed.shape}")
    seen = matrix[observed]
    if not np.all(np.isfinite(seen)) or (seen.size and seen.min() < 0):
        raise ValueError("R must hold finite values >= 0 on its observed entries")
    if not seen.size or seen.max() == 0:
        raise ValueError("R is zero on every observed entry: nothing to factorize")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) \
            or not 1 <= k <= min(cols, m, n):
        raise ValueError(f"k must be an integer from 1 to {min(cols, m, n)} (COLS = {cols} and "
                         f"min(m, n) = {min(m, n)}); got {k!r}")
    if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) \
            or not 1 <= iterations <= 2 ** 16 - 1:
        raise ValueError(f"iterations must be an integer from 1 to 65535; got {iterations!r}")
    return np.where(observed, matrix, 0.0), observed


def fit_product_scale(R: NDArray[np.float64], product: NDArray[np.float64],
                      observed: NDArray[np.bool_]) -> float:
    """The least-squares K of ``R ~ K product`` on the observed entries (1.0 when the
    product is zero there)."""
    p = product[observed]
    energy = float(p @ p)
    return float(R[observed] @ p) / energy if energy > 0 else 1.0


def _counts(before: Counters, report: NMFReport, retries_before: int,
            unresolved_before: int) -> dict[str, int]:
    after = report.counters
    return {"solves": after.solves - before.solves, "pulses": after.pulses - before.pulses,
            "over_range": after.over_range - before.over_range,
            "failed_cells": after.failed_cells - before.failed_cells,
            "retries": report.retries - retries_before,
            "unresolved": report.unresolved - unresolved_before}


async def run_nmf(driver: ChipDriver, R: ArrayLike, k: int, iterations: int, *,
                  mask: ArrayLike | None = None,
                  init: str | ArrayLike | tuple[ArrayLike, ArrayLike] = "nndsvda",
                  window: tuple[int, int], range_retries: int = 8, seed: int = 0,
                  on_progress: ProgressCallback | None = None,
                  abort_if: Callable[[NMFProgress], bool] | None = None,
                  interval_s: float = 20e-6) -> NMFRunResult:
    """Factorize R (m x n, m, n <= ROWS) at rank k (<= COLS) with ``iterations`` RUN_NMF
    iterations on ``driver`` (configured: timing and programming).

    Args:
        mask: True where R is observed (default: everything).
        init: "nndsvda", "nndsvd", "random" (of R, missing entries filled with the observed
            mean; ``seed`` for "random"), a W0 (m, k), or a (W0, H0) pair (H0 unused:
            RUN_NMF starts with an H-step).
        window: (base, span) TARGET codes of the conductance window (``formats.window_codes``).
        range_retries: over-range retries per right-hand side (NMF_ITERATIONS).
        on_progress, abort_if, interval_s: as :meth:`ChipDriver.wait_nmf`.
    """
    started = time.perf_counter()
    info = driver.info
    matrix, observed = check_nmf_inputs(R, k, iterations, mask, rows=info.rows, cols=info.cols)
    m, n = matrix.shape
    if isinstance(init, str):
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; accepted: {', '.join(INITS)}, a W0 "
                             f"({m}, {k}) or a (W0, H0) pair")
        W0 = initialize(matrix, k, init, seed, mask=observed)[0]
    else:
        W0 = np.array(init[0] if isinstance(init, tuple) else init, dtype=np.float64)
        if W0.shape != (m, k) or not np.all(np.isfinite(W0)) or (W0.size and W0.min() < 0):
            raise ValueError(f"init W0 must be an ({m}, {k}) array of finite values >= 0; got "
                             f"shape {W0.shape}")
    codes, _ = r_codes(matrix, info.r_bits)
    mantissa, col_exp = fixed_from_factor(W0, info.mantissa_bits)
    window_pair = tuple(window) if isinstance(window, (tuple, list)) else window
    settings = NMFSettings(m=m, n=n, k=k, iterations=int(iterations), window=window_pair,
                           range_retries=range_retries)
    # Everything is checked before the first bus access.
    driver.check_nmf_settings(settings)
    driver.check_nmf_problem(codes, observed, mantissa, col_exp)
    marks = [time.perf_counter()]
    await driver.load_nmf(codes, observed, mantissa, col_exp)
    marks.append(time.perf_counter())
    before = await driver.counters()
    retries_before, unresolved_before = await driver.nmf_counts()
    await driver.start_nmf(settings)
    report = await driver.wait_nmf(on_progress, abort_if=abort_if, interval_s=interval_s)
    marks.append(time.perf_counter())
    factors = await driver.read_nmf(m, n, k)
    marks.append(time.perf_counter())
    scale = fit_product_scale(matrix, factors.W @ factors.H, observed)
    H = factors.H * scale
    error = relative_error(matrix, factors.W, H, mask=observed)
    # Where RUN_NMF starts: the W0 it was given as stored (mantissas), with its best H.
    initial_error = _initial_error(matrix, np.ldexp(mantissa.astype(np.float64),
                                                    col_exp[None, :]), observed)
    return NMFRunResult(W=factors.W, H=H, error=error, initial_error=initial_error, K=scale,
                        factors=factors, report=report,
                        counts=_counts(before, report, retries_before, unresolved_before),
                        cycles=driver.nmf_cycles, seconds=time.perf_counter() - started,
                        phase_seconds={name: round(b - a, 3) for name, a, b in
                                       zip(("load", "run", "read"), marks, marks[1:])})


def _initial_error(R: NDArray[np.float64], W0: NDArray[np.float64],
                   observed: NDArray[np.bool_]) -> float:
    """Relative error of W0 with the best non-negative H for it (column by column NNLS on
    the observed entries): where ANLS starts from."""
    from scipy.optimize import nnls

    H0 = np.zeros((W0.shape[1], R.shape[1]))
    for j in range(R.shape[1]):
        rows = observed[:, j]
        if rows.any():
            H0[:, j] = nnls(W0[rows], R[rows, j])[0]
    return relative_error(R, W0, H0, mask=observed)
