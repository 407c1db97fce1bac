"""`make bench-model`: NMF of scikit-image's `camera` by the reference solvers next to
scikit-learn's NMF (coordinate descent, NNDSVDa), same rank and iteration count.

Run as ``python -m anmf.model.bench [--rank K] [--iters T] [--repeats N] [--blas-threads N]
[--movielens FILE]``. Prints one
table row per entry of :func:`bench_rows`, then PASS/FAIL for "reference ANLS error <=
scikit-learn error" and the time ratio; the exit status is 1 on FAIL.

The chip model runs twice: single-array mode (one crossbar sized to the problem) and tiled
onto the default build's 64 x 8 array (docs/tiling.md, :data:`TILED_ROW_FUNCTIONS`, which
`make bench-model` appends). Other solvers join the table by adding a row function to
:data:`ROW_FUNCTIONS`: it takes a :class:`BenchCase` and returns a row dict with at
least the keys of :data:`ROW_KEYS`.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from anmf.model.metrics import psnr_db, relative_error
from anmf.model.nmf import factorize

__all__ = ["BenchCase", "ROW_KEYS", "ROW_FUNCTIONS", "TILED_ROW_FUNCTIONS", "camera", "bench_rows", "verdict", "anls_to_reach",
           "load_ratings", "movielens_figures", "main"]

ROW_KEYS = ("name", "seconds", "rel_error", "psnr_db")
REFERENCE_ROW = "reference ANLS"
SKLEARN_ROW = "scikit-learn cd"


@dataclass(frozen=True)
class BenchCase:
    """The matrix and the settings every row runs with. ``seconds`` in a row is the best
    wall time over ``repeats`` runs (initialization included)."""

    R: np.ndarray
    rank: int
    iters: int
    repeats: int = 3
    peak: float = 1.0


def camera() -> np.ndarray:
    """scikit-image's 512 x 512 `camera`, scaled to [0, 1] (bundled, no download)."""
    from skimage import data

    return data.camera().astype(np.float64) / 255.0


def _row(case: BenchCase, name: str, W: np.ndarray, H: np.ndarray, seconds: float) -> dict:
    return {
        "name": name,
        "seconds": seconds,
        "rel_error": relative_error(case.R, W, H),
        "psnr_db": psnr_db(case.R, W @ H, peak=case.peak),
    }


def sklearn_row(case: BenchCase) -> dict:
    """scikit-learn NMF, solver cd, init nndsvda, exactly ``iters`` iterations (tol=0)."""
    from sklearn.decomposition import NMF

    best = np.inf
    for _ in range(case.repeats):
        # random_state fixes the randomized SVD inside scikit-learn's NNDSVDa.
        model = NMF(case.rank, init="nndsvda", solver="cd", max_iter=case.iters, tol=0.0, random_state=0)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning: the iteration cap is the point
            W = model.fit_transform(case.R)
        best = min(best, time.perf_counter() - start)
    return _row(case, SKLEARN_ROW, W, model.components_, best)


def _reference_row(method: str, name: str) -> Callable[[BenchCase], dict]:
    def row(case: BenchCase) -> dict:
        runs = [factorize(case.R, case.rank, method=method, iters=case.iters) for _ in range(case.repeats)]
        return _row(case, name, runs[-1].W, runs[-1].H, min(r.seconds for r in runs))

    row.__name__ = f"{method}_row"
    row.__doc__ = f"anmf.model.nmf.factorize(method={method!r}), init nndsvda."
    return row


def _chip_row(afe: str, tiled: bool = False) -> Callable[[BenchCase], dict]:
    def row(case: BenchCase) -> dict:
        from anmf.model.chip import ChipModel
        from anmf.model.tiling import DEFAULT_ARRAY_COLS, DEFAULT_ARRAY_ROWS

        # One run: the model is slow enough that the spread of repeats does not matter.
        if tiled:
            chip = ChipModel(afe, rows=DEFAULT_ARRAY_ROWS, cols=DEFAULT_ARRAY_COLS)
            name = f"chip model ({afe}, tiled {DEFAULT_ARRAY_ROWS}x{DEFAULT_ARRAY_COLS})"
        else:
            chip = ChipModel(afe, rows=None, cols=None)
            name = f"chip model ({afe})"
        result = chip.factorize(case.R, case.rank, iters=case.iters)
        return _row(case, name, result.W, result.H, result.seconds)

    mode = "tiled" if tiled else "single"
    row.__name__ = f"chip_row_{afe}_{mode}"
    row.__doc__ = (f"anmf.model.chip.ChipModel({afe!r}).factorize, init nndsvda (one run), "
                   f"{'tiled onto the default 64 x 8 array' if tiled else 'single-array mode'}.")
    return row


#: The table, in order. Append a function ``BenchCase -> row dict`` to add a solver.
ROW_FUNCTIONS: list[Callable[[BenchCase], dict]] = [
    sklearn_row,
    _reference_row("anls", REFERENCE_ROW),
    _reference_row("hals", "reference HALS"),
    _reference_row("mu", "reference MU"),
    _chip_row("ideal"),
    _chip_row("rram-3bit"),
]
#: Rows `make bench-model` adds after :data:`ROW_FUNCTIONS`: the chip model tiled onto the
#: default array (docs/tiling.md).
TILED_ROW_FUNCTIONS: list[Callable[[BenchCase], dict]] = [
    _chip_row("ideal", tiled=True),
    _chip_row("rram-3bit", tiled=True),
]


def bench_rows(case: BenchCase | None = None,
               functions: list[Callable[[BenchCase], dict]] | None = None) -> list[dict]:
    """One row dict per entry of ``functions`` (default :data:`ROW_FUNCTIONS`); default case:
    camera, k=32, 50 iterations."""
    case = case or BenchCase(R=camera(), rank=32, iters=50)
    rows = []
    for function in ROW_FUNCTIONS if functions is None else functions:
        row = function(case)
        missing = [key for key in ROW_KEYS if key not in row]
        if missing:
            raise ValueError(f"bench row from {function.__name__} lacks {', '.join(missing)}; accepted: a dict with {', '.join(ROW_KEYS)}")
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    width = max(len(row["name"]) for row in rows)
    lines = [f"{'solver':<{width}}  {'seconds':>8}  {'rel. error':>10}  {'PSNR dB':>8}"]
    lines += [
        f"{row['name']:<{width}}  {row['seconds']:>8.3f}  {row['rel_error']:>10.5f}  {row['psnr_db']:>8.2f}"
        for row in rows
    ]
    return "\n".join(lines)


def verdict(rows: list[dict]) -> tuple[bool, str]:
    """PASS when the reference ANLS error is <= scikit-learn's; with the time ratio."""
    by_name = {row["name"]: row for row in rows}
    ours, theirs = by_name[REFERENCE_ROW], by_name[SKLEARN_ROW]
    passed = ours["rel_error"] <= theirs["rel_error"]
    ratio = ours["seconds"] / theirs["seconds"]
    text = (
        f"{'PASS' if passed else 'FAIL'}: reference ANLS error {ours['rel_error']:.5f} "
        f"{'<=' if passed else '>'} scikit-learn {theirs['rel_error']:.5f}; "
        f"time ratio ANLS / scikit-learn = {ratio:.2f}"
    )
    return passed, text


def anls_to_reach(case: BenchCase, target_error: float) -> tuple[int, float, bool]:
    """Iterations and best wall time the reference ANLS needs to reach ``target_error``
    (at most ``case.iters`` iterations); the flag says whether it got there."""
    runs = [
        factorize(case.R, case.rank, method="anls", iters=case.iters,
                  callback=lambda _i, _W, _H, error: error <= target_error)
        for _ in range(case.repeats)
    ]
    return runs[-1].iterations, min(r.seconds for r in runs), runs[-1].error <= target_error


def load_ratings(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, item, rating) from a tab-separated MovieLens file: ``u.data`` or RecBole's
    ``ml-100k.inter`` (its header line is skipped). Ids become 0-based indices."""
    with open(path, encoding="utf-8") as handle:
        first = handle.readline()
    header = not first.split("\t")[0].strip().isdigit()
    table = np.loadtxt(path, delimiter="\t", usecols=(0, 1, 2), skiprows=int(header), ndmin=2)
    users, items = (np.unique(table[:, c], return_inverse=True)[1] for c in (0, 1))
    return users, items, table[:, 2]


def movielens_figures(path: str, *, rank: int = 3, ridge: float = 1.0, iters: int = 30,
                      test_fraction: float = 0.2, seed: int = 0) -> dict:
    """Masked ANLS on a ratings file with a seeded random hold-out: seconds per iteration
    and the hold-out RMSE of the predictions clipped to the rating range."""
    from anmf.model.metrics import rmse

    users, items, ratings = load_ratings(path)
    test = np.random.default_rng(seed).random(ratings.size) < test_fraction
    R = np.zeros((users.max() + 1, items.max() + 1))
    mask = np.zeros(R.shape, dtype=bool)
    R[users[~test], items[~test]] = ratings[~test]
    mask[users[~test], items[~test]] = True
    stamps: list[float] = []
    result = factorize(R, rank, method="anls", iters=iters, mask=mask, ridge=ridge,
                       callback=lambda *_: stamps.append(time.perf_counter()))
    predicted = np.clip((result.W @ result.H)[users[test], items[test]], ratings.min(), ratings.max())
    return {
        "shape": R.shape,
        "ratings": int(ratings.size),
        "seconds_per_iteration": float(np.diff(stamps).mean()) if len(stamps) > 1 else result.seconds,
        "train_rel_error": result.error,
        "test_rmse": rmse(ratings[test], predicted),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m anmf.model.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rank", type=int, default=32, help="factorization rank (default 32)")
    parser.add_argument("--iters", type=int, default=50, help="iterations for every solver (default 50)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per solver, best time kept (default 3)")
    parser.add_argument("--movielens", metavar="RATINGS",
                        help="also run masked ANLS (k=3, ridge 1) on this MovieLens ratings file "
                             "(u.data or ml-100k.inter) with a 20%% hold-out")
    parser.add_argument("--blas-threads", type=int, default=1,
                        help="BLAS threads for every solver (default 1: stable timings on a shared machine)")
    args = parser.parse_args(argv)
    if min(args.rank, args.iters, args.repeats, args.blas_threads) < 1:
        parser.error("--rank, --iters, --repeats and --blas-threads must be >= 1")
    # threadpoolctl comes with scikit-learn, which this bench needs anyway.
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=args.blas_threads, user_api="blas"):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    R = camera()
    case = BenchCase(R=R, rank=args.rank, iters=args.iters, repeats=args.repeats)
    print(f"camera {R.shape[0]}x{R.shape[1]} /255, rank {case.rank}, {case.iters} iterations, "
          f"best of {case.repeats} runs, init nndsvda, {args.blas_threads} BLAS thread(s)")
    rows = bench_rows(case, [*ROW_FUNCTIONS, *TILED_ROW_FUNCTIONS])
    print(format_table(rows))
    passed, text = verdict(rows)
    print(text)
    target = next(row for row in rows if row["name"] == SKLEARN_ROW)
    iterations, seconds, reached = anls_to_reach(case, target["rel_error"])
    if reached:
        print(f"reference ANLS reaches scikit-learn's {case.iters}-iteration error after {iterations} iterations "
              f"in {seconds:.3f} s (time ratio {seconds / target['seconds']:.2f})")
    if args.movielens:
        figures = movielens_figures(args.movielens)
        print(f"MovieLens {figures['shape'][0]}x{figures['shape'][1]}, {figures['ratings']} ratings, "
              f"masked ANLS k=3 ridge 1, 30 iterations: {figures['seconds_per_iteration']:.3f} s per iteration, "
              f"hold-out RMSE {figures['test_rmse']:.4f}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
