"""Image compression by NMF: an m x n grayscale image stored as W (m x k) and H (k x n).

`anmf compress IMAGE --rank K [--backend reference|model]` factorizes the image by ANLS on
the float reference or on the functional chip model, and reports

- PSNR (peak 1, pixels in [0, 1]) and the relative Frobenius error of W H;
- the storage ratio: (m + n) k stored values at their bit width over m n 8-bit pixels.
  The reference stores float32 (32 bits). The chip's factors are what its ADC read: one
  code per value plus a shared power-of-two exponent per column of H and per row of W
  (block floating point, docs/model-chip.md). Clamped outputs are >= 0 V, so only the ADC
  codes at or above 0 V occur: 9 of the 10 bits of the default +-1 V converter. The
  exponents (8 bits each, m + n of them) are reported separately as
  ``exponent_overhead_ratio``.

It writes a panel (original, chip reconstruction, float reconstruction, error map) and a
convergence plot. With ``--backend model`` the float reconstruction is the reference ANLS
from the same initial factors, so the two columns differ only by the analog front end.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from anmf.data import IMAGE_SUFFIXES, InputError, check_rank, load_matrix

__all__ = ["BACKENDS", "BUNDLED_IMAGES", "CompressionResult", "load_image", "value_bits", "storage_ratio",
           "compress", "write_figures"]

BACKENDS = ("reference", "model", "rtl")
#: scikit-image's images that ship inside its wheel (no download), usable as IMAGE "skimage:NAME".
BUNDLED_IMAGES = ("camera", "coins", "moon", "text")
BUNDLED_PREFIX = "skimage:"
PIXEL_BITS = 8
#: Width of a float32, the reference's stored value.
FLOAT_BITS = 32
#: Width of one shared block-floating-point exponent of the chip's factors.
EXPONENT_BITS = 8


@dataclass(frozen=True)
class CompressionResult:
    """One compression run. ``reconstruction`` is W H of the backend; ``float_reconstruction``
    and ``float_errors`` are the reference ANLS from the same start (equal to the
    backend's own for the reference backend)."""

    backend: str
    afe: str | None
    rank: int
    iters: int
    W: np.ndarray
    H: np.ndarray
    reconstruction: np.ndarray
    float_reconstruction: np.ndarray
    errors: np.ndarray
    float_errors: np.ndarray
    initial_error: float
    psnr_db: float
    rel_error: float
    float_psnr_db: float
    float_rel_error: float
    value_bits: int
    storage_ratio: float
    exponent_overhead_ratio: float
    seconds: float
    stats: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The JSON-ready figures (no arrays)."""
        m, n = self.reconstruction.shape
        return {
            "backend": self.backend, "afe": self.afe, "rank": self.rank, "iters": self.iters,
            "shape": [m, n], "psnr_db": self.psnr_db, "rel_error": self.rel_error,
            "float_psnr_db": self.float_psnr_db, "float_rel_error": self.float_rel_error,
            "value_bits": self.value_bits, "storage_ratio": self.storage_ratio,
            "exponent_overhead_ratio": self.exponent_overhead_ratio,
            "errors": [float(e) for e in self.errors], "float_errors": [float(e) for e in self.float_errors],
            "seconds": round(self.seconds, 4), "stats": dict(self.stats),
        }


def load_image(source: str | Path) -> tuple[np.ndarray, str]:
    """A grayscale image in [0, 1] and its display name: a .png/.jpg file, or
    ``skimage:NAME`` for one of :data:`BUNDLED_IMAGES` (shipped with scikit-image)."""
    text = str(source)
    if text.startswith(BUNDLED_PREFIX):
        name = text[len(BUNDLED_PREFIX):]
        if name not in BUNDLED_IMAGES:
            raise InputError(f"unknown bundled image {name!r}; accepted: "
                             f"{', '.join(BUNDLED_PREFIX + n for n in BUNDLED_IMAGES)}")
        from skimage import data

        pixels = np.asarray(getattr(data, name)(), dtype=np.float64)
        return pixels / 255.0, text
    suffix = Path(text).suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise InputError(f"compress takes an image; got {suffix or 'no suffix'!r} for {text!r}; accepted: "
                         f"{', '.join(IMAGE_SUFFIXES)} files, or {BUNDLED_PREFIX}NAME with NAME in "
                         f"{', '.join(BUNDLED_IMAGES)}")
    pixels, _ = load_matrix(text)
    return pixels, text


def value_bits(backend: str, afe: Any = None) -> int:
    """Bits per stored factor value: 32 (float32) for the reference; for the chip, the bits
    that address the ADC codes at or above 0 V (the only ones a clamped output produces),
    or 32 for an ideal, unquantized ADC."""
    if backend == "reference":
        return FLOAT_BITS
    adc = afe.adc
    if adc.bits is None:
        return FLOAT_BITS
    lsb = (adc.v_max_v - adc.v_min_v) / 2**adc.bits
    first_non_negative = max(0, math.ceil(-adc.v_min_v / lsb - 1e-9))
    codes = 2**adc.bits - first_non_negative
    return max(1, math.ceil(math.log2(codes)))


def storage_ratio(shape: tuple[int, int], rank: int, bits: int, pixel_bits: int = PIXEL_BITS) -> float:
    """(m + n) k values of ``bits`` bits over m n pixels of ``pixel_bits`` bits."""
    m, n = shape
    return (m + n) * rank * bits / (m * n * pixel_bits)


def compress(image: np.ndarray, rank: int, *, backend: str = "reference", iters: int = 30,
             afe: Any = "rram-3bit", seed: int = 0, failed_rows: str = "exclude",
             sim: str = "verilator") -> CompressionResult:
    """Factorize ``image`` (m x n, values in [0, 1]) at ``rank`` by ANLS on ``backend``.

    ``afe`` (a preset name, TOML path or AFEConfig; the rtl backend takes a preset name) is
    used by the chip backends only; its seed is replaced by ``seed`` so that one number fixes
    the whole run. ``failed_rows`` is the chip model's policy for rows with a cell that failed
    write-verify ("exclude": they are switched out for that half-step; "keep"). ``sim`` is
    the rtl backend's simulator (anmf.rtl_backend: RUN_NMF when the image fits the array,
    else host-driven tiled ANLS; RUN_NMF reports only the final error).
    """
    from anmf.model.metrics import psnr_db, relative_error
    from anmf.model.nmf import anls, initialize

    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; accepted: {', '.join(BACKENDS)}")
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2 or image.size == 0 or not np.all(np.isfinite(image)) or image.min() < 0 or image.max() > 1:
        raise InputError("the image must be a non-empty 2-D array of values in [0, 1]")
    if not image.any():
        raise InputError("the image is all black (zero); accepted: an image with a non-zero pixel")
    rank = check_rank(rank, image.shape)
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise InputError(f"iters must be an integer >= 1; got {iters!r}")

    start = time.perf_counter()
    W0, H0 = initialize(image, rank, "nndsvda", seed)
    reference = anls(image, rank, iters=iters, init=(W0, H0))
    afe_name = None
    stats: dict[str, float] = {}
    if backend == "reference":
        result = reference
        bits = value_bits("reference")
    elif backend == "rtl":
        from anmf.model.config import preset

        from ..rtl_backend import factorize_rtl, rtl_scenario

        rtl_scenario(afe, seed)   # the preset check, before any build
        result = factorize_rtl(image, rank, iters, init=(W0, H0), afe=afe, seed=seed, sim=sim)
        afe_name = afe
        stats = dict(result.counts, cycles=result.cycles, chip_seconds=result.chip_seconds)
        bits = value_bits("model", preset(afe))
    else:
        from anmf.model.chip import ChipModel
        from anmf.model.config import ConfigError, resolve_afe

        try:
            config = resolve_afe(afe).replace(seed=seed)
        except ConfigError as exc:
            raise InputError(str(exc)) from None
        # Switching out rows with a failed (mostly stuck) cell: 22.4 dB -> 24.8 dB on camera
        # k = 32 (docs/applications.md).
        try:
            # Single-array mode: "exclude" switches out data rows, which a tiled (reduced)
            # block does not hold; the tiled figures are in docs/tiling.md.
            chip = ChipModel(config, failed_rows=failed_rows, rows=None, cols=None)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        result = chip.factorize(image, rank, iters=iters, init=(W0, H0))
        afe_name = config.name
        stats = dict(result.stats)
        bits = value_bits("model", config)
    seconds = time.perf_counter() - start

    m, n = image.shape
    approx = result.W @ result.H
    float_approx = reference.W @ reference.H
    exponents = 0.0 if backend == "reference" or bits == FLOAT_BITS else (m + n) * EXPONENT_BITS / (m * n * PIXEL_BITS)
    return CompressionResult(
        backend=backend, afe=afe_name, rank=rank, iters=iters, W=result.W, H=result.H,
        reconstruction=approx, float_reconstruction=float_approx,
        errors=np.asarray(result.errors), float_errors=np.asarray(reference.errors),
        initial_error=float(result.initial_error),
        psnr_db=psnr_db(image, approx, peak=1.0), rel_error=relative_error(image, result.W, result.H),
        float_psnr_db=psnr_db(image, float_approx, peak=1.0),
        float_rel_error=relative_error(image, reference.W, reference.H),
        value_bits=bits, storage_ratio=storage_ratio((m, n), rank, bits),
        exponent_overhead_ratio=exponents, seconds=seconds, stats=stats,
    )


def write_figures(result: CompressionResult, image: np.ndarray, out_dir: str | Path, *,
                  title: str = "") -> tuple[Path, Path]:
    """Write ``panel.png`` (original, reconstruction(s), error map) and ``convergence.png``
    (relative error per iteration) to ``out_dir``; returns their paths.

    Uses matplotlib's object API with the Agg canvas: no pyplot, no global backend switch.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chip = result.backend == "model"
    label = f"chip model ({result.afe})" if chip else "reference ANLS (float64)"
    tiles: list[tuple[str, np.ndarray]] = [("original", image),
                                           (f"{label}\nPSNR {result.psnr_db:.2f} dB", result.reconstruction)]
    if chip:
        tiles.append((f"float reference, same start\nPSNR {result.float_psnr_db:.2f} dB", result.float_reconstruction))
    error = np.abs(result.reconstruction - image)

    height, width = image.shape
    tile_inches = 3.2
    figure = Figure(figsize=(tile_inches * (len(tiles) + 1) + 0.6, tile_inches * height / width + 1.0),
                    layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(tiles) + 1)
    for ax, (name, pixels) in zip(axes, tiles):
        ax.imshow(np.clip(pixels, 0.0, 1.0), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    shown = axes[-1].imshow(error, cmap="inferno", vmin=0.0, vmax=max(float(error.max()), 1e-12),
                            interpolation="nearest")
    axes[-1].set_title(f"|{'chip' if chip else 'float'} - original|\nrel. error {result.rel_error:.4f}", fontsize=9)
    axes[-1].axis("off")
    figure.colorbar(shown, ax=axes[-1], fraction=0.046, pad=0.04)
    figure.suptitle(title or f"rank {result.rank}, {result.iters} ANLS iterations, "
                    f"storage {100 * result.storage_ratio:.1f} % of 8-bit pixels", fontsize=10)
    panel = out / "panel.png"
    figure.savefig(panel, dpi=110)

    figure = Figure(figsize=(5.5, 3.8))
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    # RUN_NMF (rtl backend) reports only the last iterations' errors: place them at the end.
    steps = np.concatenate([[0], np.arange(result.iters - result.errors.size + 1, result.iters + 1)])
    ax.semilogy(steps, np.concatenate([[result.initial_error], result.errors]), marker="o", markersize=3, label=label)
    if chip:
        ax.semilogy(np.arange(0, result.float_errors.size + 1),
                    np.concatenate([[result.initial_error], result.float_errors]),
                    linestyle="--", label="float reference, same start")
    ax.set_xlabel("ANLS iteration")
    ax.set_ylabel("relative error ||R - WH|| / ||R||")
    ax.set_title(f"convergence, rank {result.rank}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    figure.tight_layout()
    convergence = out / "convergence.png"
    figure.savefig(convergence, dpi=110)
    return panel, convergence
