"""`anmf demo`: the bundled default run.

For now the model-level demo: a 64x64 crop of scikit-image's `camera` (it fits the default
64-row array), factorized at rank 4 by the float reference ANLS and by the functional chip
model with the `ideal` and `rram-3bit` front ends, from the same initialization.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

#: The bundled default: rows 200-263, columns 200-263 of camera (the cameraman's coat and hand).
CROP = (slice(200, 264), slice(200, 264))
RANK = 4
ITERS = 20


def default_image() -> np.ndarray:
    """64x64 crop of scikit-image's camera (shipped inside the wheel), floats in [0, 1]."""
    from skimage import data

    return data.camera()[CROP].astype(np.float64) / 255.0


def run_demo(out_dir: str | Path = "out", *, rank: int = RANK, iters: int = ITERS, seed: int = 0) -> dict[str, Any]:
    from anmf.model.chip import ChipModel
    from anmf.model.metrics import psnr_db
    from anmf.model.nmf import anls

    R = default_image()
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    ref = anls(R, rank, iters=iters, seed=seed)
    rows.append({"name": "reference ANLS (float64)", "rel_error": ref.error,
                 "psnr_db": psnr_db(R, ref.W @ ref.H), "seconds": ref.seconds})
    stats = {}
    for afe in ("ideal", "rram-3bit"):
        result = ChipModel(afe).factorize(R, rank, iters=iters, seed=seed)
        rows.append({"name": f"chip model ({afe})", "rel_error": result.error,
                     "psnr_db": psnr_db(R, result.W @ result.H), "seconds": result.seconds})
        stats[afe] = result.stats
    total = time.perf_counter() - start

    print(f"anmf demo: camera crop {R.shape[0]}x{R.shape[1]}, rank {rank}, {iters} ANLS iterations, init nndsvda")
    width = max(len(row["name"]) for row in rows)
    print(f"{'solver':<{width}}  {'rel. error':>10}  {'PSNR dB':>8}  {'seconds':>8}")
    for row in rows:
        print(f"{row['name']:<{width}}  {row['rel_error']:>10.4f}  {row['psnr_db']:>8.2f}  {row['seconds']:>8.2f}")
    real = stats["rram-3bit"]
    print(f"rram-3bit: {int(real['pulses'])} programming pulses, {int(real['failed_cells'])} cells failed write-verify, "
          f"{int(real['solves'])} analog solves ({int(real['over_range_retries'])} over-range retries), "
          f"{real['analog_settle_s'] * 1e6:.1f} us of analog settling in all")

    summary = {
        "input": "skimage.data.camera()[200:264, 200:264] / 255",
        "shape": list(R.shape), "rank": rank, "iters": iters, "seed": seed,
        "rel_error_reference": rows[0]["rel_error"],
        "rel_error_chip": rows[2]["rel_error"],
        "rel_error_chip_ideal": rows[1]["rel_error"],
        "rows": rows, "chip_stats": stats, "seconds": round(total, 3),
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"summary written to {out / 'summary.json'}")
    return summary
