"""Reading input matrices for the CLI, with one-line errors that say what is accepted."""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["InputError", "IMAGE_SUFFIXES", "load_matrix", "check_matrix", "check_rank"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ACCEPTED = ".npy, .csv, .png, .jpg"


class InputError(ValueError):
    """Bad user input. The CLI prints the message on one line and exits with status 2."""


def load_matrix(path: str | Path) -> tuple[np.ndarray, bool]:
    """Load INPUT as a float64 matrix. Returns (matrix, is_image).

    Images are read as grayscale floats in [0, 1] (8-bit /255, 16-bit /65535).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".csv") + IMAGE_SUFFIXES:
        raise InputError(f"unknown file type {suffix or '(none)'!r} for {str(path)!r}; accepted: {ACCEPTED}")
    if not path.is_file():
        raise InputError(f"cannot read {str(path)!r}: no such file")
    try:
        if suffix == ".npy":
            data = np.load(path, allow_pickle=False)
        elif suffix == ".csv":
            data = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
        else:
            data = _load_image(path)
    except InputError:
        raise
    except Exception as exc:  # any decoder failure is the file's fault, not ours
        raise InputError(f"cannot read {str(path)!r} as {suffix[1:]}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if not np.issubdtype(np.asarray(data).dtype, np.number) or np.iscomplexobj(data):
        raise InputError(f"{str(path)!r} holds {np.asarray(data).dtype} data; accepted: a real numeric matrix")
    return check_matrix(np.asarray(data, dtype=np.float64), name=str(path)), suffix in IMAGE_SUFFIXES


def _load_image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(img, dtype=np.float64)
            peak = 65535.0
        else:
            arr = np.asarray(img.convert("L"), dtype=np.float64)
            peak = 255.0
    return arr / peak


def check_matrix(data: np.ndarray, *, name: str = "input") -> np.ndarray:
    """Reject what NMF cannot take: non-2-D, empty, NaN/inf, negative values."""
    if data.ndim != 2:
        raise InputError(f"{name} is {data.ndim}-D with shape {data.shape}; accepted: a 2-D matrix")
    if data.size == 0:
        raise InputError(f"{name} is empty (shape {data.shape}); accepted: a matrix with at least one row and column")
    if not np.all(np.isfinite(data)):
        bad = int(np.count_nonzero(~np.isfinite(data)))
        raise InputError(f"{name} has {bad} NaN or infinite entries; accepted: finite values >= 0")
    if np.any(data < 0):
        bad = int(np.count_nonzero(data < 0))
        raise InputError(f"{name} has {bad} negative entries (min {data.min():g}); accepted: values >= 0")
    return data


def check_rank(rank: int, shape: tuple[int, int]) -> int:
    limit = min(shape)
    if not 1 <= rank <= limit:
        raise InputError(f"rank {rank} is out of range for a {shape[0]}x{shape[1]} matrix; accepted: 1 to {limit}")
    return rank
