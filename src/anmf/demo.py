"""`anmf demo`: the bundled default, RUN_NMF on the co-simulated chip.

A 64 x 64 crop of scikit-image's `camera` (it fits the default 64-row array) is factorized at
rank 4 by RUN_NMF: the host driver (``anmf.host.nmf_run.run_nmf``) over AXI4-Lite
(cocotbext-axi) on the controller RTL in Verilator (or Icarus), with the rram-3bit AFE model
bound to the RTL's AFE port (``AFEBinding``), through ``anmf.testbench.cosim_job``. The float
reference ANLS runs from the same initialization for comparison. ``backend="model"`` runs the
same host code on the golden model (ModelDriver): no simulator needed.

Configuration (DEMO_SCENARIO, docs/demo.md): the default build (ROWS = 64, COLS = 8, SPARE =
2) at 100 MHz; the rram-3bit AFE with its real 1.2 us ADC conversion, noise on, IR drop off
(the 1T1R array's word lines isolate masked rows; the crossbar model's nodal IR-drop solve
is 10x slower per solve); settle times and write-verify settings from the AFE's physics
(``ScenarioChip``); 2 iterations from nndsvda.
"""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CROP", "RANK", "ITERATIONS", "DEMO_SCENARIO", "BACKENDS", "default_image",
           "run_demo", "demo_scenario", "write_panel"]

#: The bundled default: rows 200-263, columns 200-263 of camera (the cameraman's coat and hand).
CROP_ORIGIN = 200
CROP = (slice(200, 264), slice(200, 264))
RANK = 4
#: Two iterations: write-verify of both factors dominates (docs/anls-sequencer.md), and the
#: relative error is within a few percent of its 20-iteration value after two.
ITERATIONS = 2
BACKENDS = ("rtl", "model")
#: The co-simulation's bench options (bench_scenarios' keys); ``params`` rows follow the size.
DEMO_SCENARIO: dict[str, Any] = {
    "params": {"rows": 64, "cols": 8, "spare": 2},
    "afe": {"preset": "rram-3bit", "seed": 11, "crossbar": {"ir_drop": False}},
    "clock_hz": 100e6,
    "deterministic": False,
    "seed": 0,
}


def default_image(size: int = 64) -> np.ndarray:
    """``size`` x ``size`` crop of scikit-image's camera at (200, 200), floats in [0, 1]."""
    from skimage import data

    crop = slice(CROP_ORIGIN, CROP_ORIGIN + size)
    return data.camera()[crop, crop].astype(np.float64) / 255.0


def demo_scenario(size: int) -> dict[str, Any]:
    """DEMO_SCENARIO with an array of ``size`` rows (64: the default build)."""
    return {**DEMO_SCENARIO, "params": {**DEMO_SCENARIO["params"], "rows": size}}


def _model_run(R: np.ndarray, rank: int, iterations: int, scenario: dict[str, Any],
               progress: bool) -> dict[str, Any]:
    """The same host job on ModelDriver (golden model + AFE model, no simulator)."""
    from anmf.host import ModelDriver
    from anmf.host.nmf_run import run_nmf
    from anmf.model.formats import window_codes
    from anmf.testbench.bench_scenarios import ScenarioChip
    from anmf.testbench.cosim_job import ProgressBar

    chip = ScenarioChip(scenario)
    driver = ModelDriver(chip.params, chip.afe)
    c = chip.afe.config
    window = window_codes(g_offset_s=c.circuit.g_offset_s, g_max_s=c.device.g_max_s,
                          full_scale_s=chip.afe.read_full_scale_s, bits=chip.afe.adc_bits)

    async def run() -> Any:
        await driver.configure(timing=chip.timing, programming=chip.programming)
        bar = ProgressBar(iterations, *R.shape) if progress else None
        return await run_nmf(driver, R, rank, iterations, window=window, on_progress=bar)

    result = asyncio.run(run())
    return {"W": result.W, "H": result.H, "error": result.error, "K": result.K,
            "counts": result.counts, "cycles": result.cycles,
            "sim_seconds": result.cycles / chip.clock_hz, "status": result.report.status.error.name,
            "adc_conversion_s": c.adc.conversion_time_s}


def run_demo(out_dir: str | Path = "out", *, backend: str = "rtl", sim: str = "verilator",
             size: int = 64, rank: int = RANK, iterations: int = ITERATIONS,
             progress: bool = True) -> dict[str, Any]:
    """Run the demo and write ``summary.json`` and ``panel.png`` into ``out_dir``.

    Args:
        backend: "rtl" (co-simulation in ``sim``) or "model" (golden model, no simulator).
        sim: "verilator" or "icarus" (backend "rtl").
        size: the crop's side (<= 64; the array gets that many rows).
    """
    from anmf.model.metrics import psnr_db
    from anmf.model.nmf import anls, initialize

    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; accepted: {', '.join(BACKENDS)}")
    if isinstance(size, bool) or not isinstance(size, int) or not 2 <= size <= 64:
        raise ValueError(f"size must be an integer from 2 to 64; got {size!r}")
    started = time.perf_counter()
    R = default_image(size)
    scenario = demo_scenario(size)
    afe_text = (f"{scenario['afe']['preset']} AFE (noise on, IR drop off), "
                f"{scenario['clock_hz'] / 1e6:.0f} MHz")
    where = f"RTL in {sim}" if backend == "rtl" else "golden model (ModelDriver)"
    print(f"anmf demo: camera crop {size}x{size}, rank {rank}, {iterations} RUN_NMF iterations "
          f"from nndsvda on the {where}, {afe_text}", flush=True)
    if backend == "rtl":
        from anmf.testbench.cosim_job import run_cosim_job

        job = run_cosim_job("anmf.testbench.cosim_job:run_nmf_job", {"R": R},
                            {"k": rank, "iterations": iterations, "progress": progress,
                             "interval_s": 50e-6},
                            scenario=scenario, sim=sim, name=f"demo{size}")
        chip = {**job.result, "W": job.outputs["W"], "H": job.outputs["H"]}
        job_seconds = job.result["job_seconds"]
        launch_seconds = job.seconds
    else:
        t0 = time.perf_counter()
        chip = _model_run(R, rank, iterations, scenario, progress)
        job_seconds = launch_seconds = time.perf_counter() - t0
    reference = anls(R, rank, iters=iterations, init=initialize(R, rank, "nndsvda", 0))
    chip_hat, float_hat = chip["W"] @ chip["H"], reference.W @ reference.H
    rows = [
        {"name": f"chip ({'RTL, ' + sim if backend == 'rtl' else 'golden model'})",
         "rel_error": chip["error"], "psnr_db": psnr_db(R, np.clip(chip_hat, 0.0, 1.0))},
        {"name": "reference ANLS (float64)", "rel_error": reference.error,
         "psnr_db": psnr_db(R, np.clip(float_hat, 0.0, 1.0))},
    ]
    seconds = time.perf_counter() - started
    width = max(len(row["name"]) for row in rows)
    print(f"{'solver':<{width}}  {'rel. error':>10}  {'PSNR dB':>8}")
    for row in rows:
        print(f"{row['name']:<{width}}  {row['rel_error']:>10.4f}  {row['psnr_db']:>8.2f}")
    counts = chip["counts"]
    print(f"chip: {chip['cycles']} cycles = {1e3 * chip['sim_seconds']:.2f} ms of chip time at "
          f"{scenario['clock_hz'] / 1e6:.0f} MHz; {counts['solves']} solves "
          f"({counts['retries']} over-range retries), {counts['pulses']} pulses, "
          f"{counts['failed_cells']} failed cells; K fitted {chip['K']:.4g}")
    print(f"wall time: {seconds:.1f} s ({'build and ' if backend == 'rtl' else ''}simulation "
          f"{launch_seconds:.1f} s, of which the host job {job_seconds:.1f} s)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    panel = write_panel(out / "panel.png", R, chip_hat, float_hat, rows,
                        title=f"camera {size}x{size}, rank {rank}, {iterations} RUN_NMF iterations")
    summary = {
        "input": f"skimage.data.camera()[{CROP_ORIGIN}:{CROP_ORIGIN + size}, "
                 f"{CROP_ORIGIN}:{CROP_ORIGIN + size}] / 255",
        "shape": list(R.shape), "rank": rank, "iterations": iterations, "init": "nndsvda",
        "backend": backend, "sim": sim if backend == "rtl" else "model",
        "rel_error_chip": chip["error"], "rel_error_reference": reference.error,
        "psnr_db_chip": rows[0]["psnr_db"], "psnr_db_reference": rows[1]["psnr_db"],
        "cycles": chip["cycles"], "chip_seconds": chip["sim_seconds"],
        "clock_hz": scenario["clock_hz"], "K": chip["K"], "counts": counts,
        "status": chip["status"], "adc_conversion_s": chip["adc_conversion_s"],
        "scenario": scenario, "seconds": round(seconds, 3),
        "simulation_seconds": round(launch_seconds, 3), "job_seconds": round(job_seconds, 3),
        "panel": str(panel),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"summary written to {out / 'summary.json'}, panel to {panel}")
    return summary


def write_panel(path: Path, image: np.ndarray, chip: np.ndarray, reference: np.ndarray,
                rows: list[dict[str, Any]], *, title: str) -> Path:
    """Original, chip reconstruction, float reconstruction, |chip - original| (matplotlib's
    object API with the Agg canvas, as ``anmf.apps.compress.write_figures``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tiles = [("original", image),
             (f"{rows[0]['name']}\nPSNR {rows[0]['psnr_db']:.2f} dB", chip),
             (f"{rows[1]['name']}\nPSNR {rows[1]['psnr_db']:.2f} dB", reference)]
    error = np.abs(chip - image)
    figure = Figure(figsize=(3.2 * 4 + 0.6, 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 4)
    for ax, (name, pixels) in zip(axes, tiles):
        ax.imshow(np.clip(pixels, 0.0, 1.0), cmap="gray", vmin=0.0, vmax=1.0,
                  interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    shown = axes[3].imshow(error, cmap="inferno", vmin=0.0, vmax=max(float(error.max()), 1e-12),
                           interpolation="nearest")
    axes[3].set_title(f"|chip - original|\nrel. error {rows[0]['rel_error']:.4f}", fontsize=9)
    axes[3].axis("off")
    figure.colorbar(shown, ax=axes[3], fraction=0.046, pad=0.04)
    figure.suptitle(title, fontsize=10)
    figure.savefig(path, dpi=110)
    return path
