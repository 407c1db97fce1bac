"""Command-line interface: `anmf SUBCOMMAND ...`.

User errors (bad files, bad values, unknown presets) print one line and exit with status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .data import InputError, check_rank, load_matrix
from .rtl_backend import SIMS

EXIT_USAGE = 2


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports errors on one line (exit 2) without the usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def _at_least_two(text: str) -> int:
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"{value} must be >= 2")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"{text} must be a finite number >= 0")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be >= 0")
    return value


def _write_json(path: str | None, payload: dict[str, Any]) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=2) + "\n")


# --- factorize --------------------------------------------------------------------------

def _cmd_factorize(args: argparse.Namespace) -> int:
    from anmf.model.metrics import psnr_db, relative_error

    R, is_image = load_matrix(args.input)
    rank = check_rank(args.rank, R.shape)
    if args.backend != "reference" and args.method != "anls":
        raise InputError(f"--method {args.method} is not available on the {args.backend} backend; "
                         f"accepted: anls (the chip runs ANLS)")

    start = time.perf_counter()
    if args.backend == "reference":
        from anmf.model.nmf import factorize

        result = factorize(R, rank, method=args.method, iters=args.iters, seed=args.seed)
        W, H = result.W, result.H
        afe_name = None
    elif args.backend == "rtl":
        from anmf.model.nmf import initialize

        from .rtl_backend import factorize_rtl

        rtl = factorize_rtl(R, rank, args.iters, init=initialize(R, rank, "nndsvda", args.seed),
                            afe=args.afe, seed=args.seed, sim=args.sim)
        W, H = rtl.W, rtl.H
        afe_name = args.afe
    else:
        from anmf.model.chip import ChipModel
        from anmf.model.config import ConfigError, resolve_afe

        try:
            afe = resolve_afe(args.afe)
        except ConfigError as exc:
            raise InputError(str(exc)) from None
        chip = ChipModel(afe.replace(seed=args.seed) if args.seed is not None else afe)
        result = chip.factorize(R, rank, iters=args.iters, seed=args.seed)
        W, H = result.W, result.H
        afe_name = afe.name
    seconds = time.perf_counter() - start

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "W.npy", W)
    np.save(out / "H.npy", H)

    summary: dict[str, Any] = {
        "input": str(args.input),
        "backend": args.backend,
        "method": args.method,
        "afe": afe_name,
        "rank": rank,
        "iters": args.iters,
        "shape": list(R.shape),
        "rel_error": float(relative_error(R, W, H)),
        "seconds": round(seconds, 4),
    }
    if args.backend == "rtl":
        summary.update(sim=rtl.sim, mode=rtl.mode, cycles=rtl.cycles, chip_seconds=rtl.chip_seconds,
                       counts=rtl.counts)
    if is_image:
        summary["psnr_db"] = float(psnr_db(R, W @ H, peak=1.0))
    where = f"rtl ({rtl.sim}, {rtl.mode})" if args.backend == "rtl" else args.backend
    line = (f"{args.input}: {R.shape[0]}x{R.shape[1]} rank {rank}, {args.method} on {where}"
            + (f" ({afe_name})" if afe_name else "")
            + f", {args.iters} iterations: relative error {summary['rel_error']:.4f}")
    if is_image:
        line += f", PSNR {summary['psnr_db']:.2f} dB"
    print(line + f", {seconds:.2f} s; W and H written to {out}/")
    _write_json(args.json, summary)
    return 0


# --- compress ----------------------------------------------------------------------------

def _cmd_compress(args: argparse.Namespace) -> int:
    from .apps.compress import compress, load_image, write_figures

    image, name = load_image(args.image)
    result = compress(image, args.rank, backend=args.backend, iters=args.iters, afe=args.afe, seed=args.seed,
                      sim=args.sim)
    panel, convergence = write_figures(result, image, args.out, title=f"{name}: rank {result.rank}, "
                                       f"{result.iters} ANLS iterations")
    m, n = image.shape
    where = f"{args.backend} ({result.afe})" if result.afe else "reference"
    bits = f"{result.value_bits}-bit " + ("float32" if args.backend == "reference" else "ADC codes")
    line = (f"{name}: {m}x{n} rank {result.rank} on {where}, {result.iters} iterations: PSNR {result.psnr_db:.2f} dB, "
            f"relative error {result.rel_error:.4f}")
    if args.backend != "reference":
        line += f" (float reference from the same start: {result.float_psnr_db:.2f} dB, {result.float_rel_error:.4f})"
    print(line)
    print(f"storage: (m+n)k = {(m + n) * result.rank} values as {bits} = {100 * result.storage_ratio:.1f} % "
          f"of {m * n} 8-bit pixels" + (f" (+{100 * result.exponent_overhead_ratio:.1f} % for the shared exponents)"
                                        if result.exponent_overhead_ratio else "")
          + f"; {result.seconds:.2f} s; figures: {panel}, {convergence}")
    summary = {"input": name, **result.summary(), "panel": str(panel), "convergence": str(convergence)}
    _write_json(args.json, summary)
    return 0


# --- recommend ---------------------------------------------------------------------------

def _cmd_recommend(args: argparse.Namespace) -> int:
    from .apps.recommend import cross_validate
    from .datasets import load_movielens, load_ratings

    users, items, ratings = load_ratings(args.ratings) if args.ratings else load_movielens()
    source = args.ratings or "MovieLens-100K"
    print(f"{source}: {ratings.size} ratings, {users.max() + 1} users x {items.max() + 1} items; masked ANLS "
          f"rank {args.rank}, ridge {args.ridge:g}, {args.iters} iterations on {args.backend}"
          + (f" ({args.afe})" if args.backend == "model" else "") + f", {args.folds}-fold CV, seed {args.seed}")

    def report(fold) -> None:
        print(f"fold {fold.fold}/{args.folds}: RMSE {fold.rmse:.4f}  MAE {fold.mae:.4f}  "
              f"({fold.test_ratings} test ratings, {fold.seconds:.1f} s)", flush=True)

    result = cross_validate(users, items, ratings, rank=args.rank, ridge=args.ridge, iters=args.iters,
                            folds=args.folds, backend=args.backend, afe=args.afe, seed=args.seed, on_fold=report)
    print(f"mean: RMSE {result.rmse:.4f} (std {result.rmse_std:.4f})  MAE {result.mae:.4f}  in {result.seconds:.1f} s")
    _write_json(args.json, {"input": source, **result.summary()})
    return 0


# --- energy ------------------------------------------------------------------------------

def _cmd_energy(args: argparse.Namespace) -> int:
    from anmf.model import energy
    from anmf.model.config import ConfigError, resolve_afe

    try:
        workload = energy.parse_workload(args.workload, iterations=args.iters)
        resolve_afe(args.afe)
    except (ValueError, ConfigError) as exc:
        raise InputError(str(exc)) from None
    if workload.name == "ml-100k":
        from .datasets import load_movielens

        users, items, ratings = load_movielens()
        R = np.zeros((workload.m, workload.n))
        R[users, items] = ratings
        mask = np.zeros(R.shape, dtype=bool)
        mask[users, items] = True
    else:
        R, mask = energy.workload_matrix(workload, np.random.default_rng(args.seed))
    activity = energy.measure_activity(workload, R, mask, afe=args.afe, seed=args.seed)
    cpu_s = None if args.no_cpu else energy.cpu_reference_seconds(workload, R, mask)
    report = energy.energy_report(workload, activity, afe=args.afe, scenario=args.scenario, cpu_seconds=cpu_s)
    print(f"{workload.name}: {workload.m}x{workload.n} rank {workload.k}, {workload.iterations} ANLS iterations; "
          f"chip activity from {activity.source}: {activity.solves} solves ({activity.retries} retries), "
          f"{activity.pulses} pulses, settle mean {activity.settle_mean_s * 1e9:.0f} ns / max "
          f"{activity.settle_max_s * 1e9:.0f} ns")
    print(f"{'solver':<28}{'time s':>12}{'energy J':>12}{'GPU/chip time':>15}{'GPU/chip energy':>17}")
    gpu = report["gpu"]
    rows = [(f"chip ({name})", v["time_s"], v["energy_j"]) for name, v in report["scenarios"].items()]
    rows += [("GPU (A100, batched)", gpu["time_s"], gpu["energy_j"]), ("FPGA (Alveo U250)", report["fpga"]["time_s"],
             report["fpga"]["energy_j"]), ("GPU per problem", report["gpu_per_problem"]["time_s"],
                                         report["gpu_per_problem"]["energy_j"])]
    if cpu_s is not None:
        rows.append(("CPU reference (measured)", report["cpu"]["time_s"], report["cpu"]["energy_j"]))
    for name, t, e in rows:
        print(f"{name:<28}{t:>12.4g}{e:>12.4g}{gpu['time_s'] / t:>15.3g}{gpu['energy_j'] / e:>17.3g}")
    print(f"{args.scenario}: speed-up vs GPU {report['speedup_vs_gpu']:.3g}, energy ratio vs GPU "
          f"{report['energy_ratio_vs_gpu']:.3g}; published-style (analog settle only vs GPU per problem): "
          f"{report['published_style']['speedup_vs_gpu']:.3g}x, {report['published_style']['energy_ratio_vs_gpu']:.3g}x")
    if args.plots:
        sizes = (64, 128, 256, 512, 1024, 2048, 4096, 8192)
        size_rows = energy.size_sweep(activity, sizes, workload.k, iterations=workload.iterations,
                                      scenario=args.scenario, afe=args.afe)
        bits_rows = energy.adc_bits_sweep(workload, activity, tuple(range(6, 17)), scenario=args.scenario,
                                          afe=args.afe)
        paths = energy.write_sweep_plots(size_rows, bits_rows, args.plots, title=f"{args.scenario} chip vs A100, "
                                         f"rates of {workload.name}, k = {workload.k}")
        report["size_sweep"], report["adc_bits_sweep"] = size_rows, bits_rows
        print("plots: " + ", ".join(str(p) for p in paths))
    _write_json(args.json, report)
    return 0


# --- demo --------------------------------------------------------------------------------

def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    try:
        run_demo(args.out, backend=args.backend, sim=args.sim, size=args.size,
                 iterations=args.iterations, progress=not args.no_progress)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    return 0


# --- regmap ------------------------------------------------------------------------------

def _cmd_regmap(args: argparse.Namespace) -> int:
    from anmf.hdl.params import BuildParams
    from anmf.hdl.registers import build_register_map
    from anmf.hdl.regmap_export import render

    try:
        register_map = build_register_map(BuildParams(rows=args.rows, cols=args.cols, spare=args.spare,
                                                      dac_bits=args.dac_bits, adc_bits=args.adc_bits,
                                                      avg_max_log2=args.avg_max_log2,
                                                      calibration=not args.no_calibration))
    except ValueError as exc:
        raise InputError(str(exc)) from None
    text = render(register_map, args.format)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


# --- verilog -----------------------------------------------------------------------------

def _cmd_verilog(args: argparse.Namespace) -> int:
    from anmf.hdl.controller import verilog_text
    from anmf.hdl.params import BuildParams

    try:
        params = BuildParams(rows=args.rows, cols=args.cols, spare=args.spare, dac_bits=args.dac_bits,
                             adc_bits=args.adc_bits, calibration=not args.no_calibration)
        text = verilog_text(params)
    except (TypeError, ValueError) as exc:
        raise InputError(str(exc)) from None
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


# --- synth -------------------------------------------------------------------------------

def _cmd_synth(args: argparse.Namespace) -> int:
    from anmf.hdl.synth import check_target, format_report, parse_seeds, synthesize_seeds
    from anmf.hdl.toolchain import ToolMissing

    try:
        check_target(args.target)
        report = synthesize_seeds(args.target, args.build_dir or f"build/synth-{args.target}",
                                  parse_seeds(args.seeds))
    except (ValueError, ToolMissing) as exc:
        raise InputError(str(exc)) from None
    print(format_report(report))
    _write_json(args.json, report.to_json())
    return 0 if report.fits else 1


# --- faults ------------------------------------------------------------------------------

def _cmd_faults(args: argparse.Namespace) -> int:
    from .faults import format_table, run_campaign, write_json

    try:
        rows = run_campaign(args.backend, seed=args.seed, sim=args.sim)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    print(format_table(rows))
    if args.json:
        write_json(rows, args.json, backend=args.backend, seed=args.seed)
    return 0


def _add_build_options(p: argparse.ArgumentParser) -> None:
    """The controller's build parameters, shared by `regmap` and `verilog`."""
    p.add_argument("--rows", type=positive_int, default=64, help="ROWS build parameter (default 64)")
    p.add_argument("--cols", type=positive_int, default=8, help="COLS build parameter (default 8)")
    p.add_argument("--spare", type=non_negative_int, default=2, help="SPARE build parameter (default 2)")
    p.add_argument("--dac-bits", type=positive_int, default=10, help="DAC_BITS build parameter (default 10)")
    p.add_argument("--adc-bits", type=positive_int, default=10, help="ADC_BITS build parameter (default 10)")
    p.add_argument("--no-calibration", action="store_true",
                   help="build without CALIBRATE (needed for converters wider than 10 bits)")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="anmf", description="Hybrid analog/digital NMF: model, controller RTL, co-simulation.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    p = sub.add_parser("factorize", help="factorize a non-negative matrix R ~ W H")
    p.add_argument("input", help="matrix file: .npy, .csv, or an image (.png/.jpg, read as grayscale in [0, 1])")
    p.add_argument("--rank", "-k", type=positive_int, required=True, help="factorization rank K")
    p.add_argument("--iters", type=positive_int, default=50, help="outer iterations (default 50)")
    p.add_argument("--backend", choices=("reference", "model", "rtl"), default="reference",
                   help="reference: float NMF; model: the functional chip model (DAC, circuit, ADC); "
                        "rtl: the controller RTL in co-simulation with the analog model")
    p.add_argument("--sim", choices=SIMS, default="verilator", help="simulator of the rtl backend (default verilator)")
    p.add_argument("--method", choices=("anls", "hals", "mu"), default="anls", help="reference algorithm (default anls)")
    p.add_argument("--afe", default="rram-3bit", help="AFE preset (ideal, rram-3bit, pessimistic) or a .toml file")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed (initialization and analog noise)")
    p.add_argument("--out", default="out", help="folder for W.npy and H.npy (default out/)")
    p.add_argument("--json", help="write a JSON summary to this file")
    p.set_defaults(func=_cmd_factorize)

    from .apps.compress import BACKENDS, BUNDLED_IMAGES, BUNDLED_PREFIX
    from .apps.recommend import DEFAULT_ITERS, DEFAULT_RANK, DEFAULT_RIDGE

    p = sub.add_parser("compress", help="store an image as NMF factors W, H; PSNR, storage ratio and figures")
    p.add_argument("image", help=f"a .png/.jpg (read as grayscale in [0, 1]), or {BUNDLED_PREFIX}NAME with NAME in "
                                 f"{', '.join(BUNDLED_IMAGES)} (bundled with scikit-image)")
    p.add_argument("--rank", "-k", type=positive_int, required=True, help="factorization rank K")
    p.add_argument("--backend", choices=BACKENDS, default="reference",
                   help="reference: float ANLS; model: the functional chip model (DAC, circuit, ADC); "
                        "rtl: the controller RTL in co-simulation with the analog model")
    p.add_argument("--sim", choices=SIMS, default="verilator", help="simulator of the rtl backend (default verilator)")
    p.add_argument("--iters", type=positive_int, default=30, help="ANLS iterations (default 30)")
    p.add_argument("--afe", default="rram-3bit", help="AFE preset (ideal, rram-3bit, pessimistic) or a .toml file")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed of the analog front end (default 0)")
    p.add_argument("--out", default="out", help="folder for panel.png and convergence.png (default out/)")
    p.add_argument("--json", help="write a JSON summary to this file")
    p.set_defaults(func=_cmd_compress)

    p = sub.add_parser("recommend", help="predict held-out ratings by masked NMF, F-fold cross-validation")
    p.add_argument("--ratings", help="tab-separated user, item, rating[, ...] file (default: MovieLens-100K, "
                                     "fetched once with `python -m anmf.datasets fetch`)")
    p.add_argument("--rank", "-k", type=positive_int, default=DEFAULT_RANK, help=f"rank K (default {DEFAULT_RANK})")
    p.add_argument("--backend", choices=("reference", "model"), default="reference",
                   help="reference: float masked ANLS; model: the functional chip model, missing ratings switched out")
    p.add_argument("--folds", type=_at_least_two, default=5, help="cross-validation folds (default 5)")
    p.add_argument("--iters", type=positive_int, default=DEFAULT_ITERS,
                   help=f"ANLS iterations (default {DEFAULT_ITERS})")
    p.add_argument("--ridge", type=_non_negative_float, default=DEFAULT_RIDGE,
                   help=f"ridge weight on ||W||^2 + ||H||^2 (default {DEFAULT_RIDGE:g})")
    p.add_argument("--afe", default="rram-3bit", help="AFE preset (ideal, rram-3bit, pessimistic) or a .toml file")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seeds the folds and the analog front end (default 0)")
    p.add_argument("--json", help="write a JSON summary to this file")
    p.set_defaults(func=_cmd_recommend)

    from anmf.model.energy import SCENARIOS, WORKLOAD_HELP

    p = sub.add_parser("energy", help="time and energy per NMF: chip cost model vs GPU, FPGA and this CPU")
    p.add_argument("--workload", default="camera", help=f"{WORKLOAD_HELP} (default camera)")
    p.add_argument("--iters", type=positive_int, default=30, help="ANLS iterations (default 30)")
    p.add_argument("--scenario", choices=tuple(SCENARIOS), default="paper",
                   help="chip organisation reported as `chip` (default paper; all are in `scenarios`)")
    p.add_argument("--afe", default="rram-3bit", help="AFE preset (ideal, rram-3bit, pessimistic) or a .toml file")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default 0)")
    p.add_argument("--no-cpu", action="store_true", help="skip timing the float reference on this CPU")
    p.add_argument("--plots", help="write the size and ADC-resolution sweeps as PNGs into this folder")
    p.add_argument("--json", help="write the full report to this file")
    p.set_defaults(func=_cmd_energy)

    p = sub.add_parser("demo", help="RUN_NMF on the bundled default (camera crop, rank 4) in co-simulation "
                                    "(controller RTL, AFE model, host driver over AXI4-Lite) vs the float reference")
    p.add_argument("--out", default="out", help="folder for summary.json and panel.png (default out/)")
    p.add_argument("--backend", choices=("rtl", "model"), default="rtl",
                   help="rtl: co-simulation (default); model: the golden model, no simulator")
    p.add_argument("--sim", choices=("verilator", "icarus"), default="verilator",
                   help="simulator of the rtl backend (default verilator)")
    p.add_argument("--size", type=positive_int, default=64, help="side of the camera crop, 2 to 64 (default 64)")
    p.add_argument("--iterations", type=positive_int, default=2, help="RUN_NMF iterations (default 2)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("regmap", help="register map as markdown, JSON or a C header")
    p.add_argument("--format", choices=("md", "json", "c"), default="md", help="output format (default md)")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    _add_build_options(p)
    p.add_argument("--avg-max-log2", type=non_negative_int, default=8,
                   help="AVG_MAX_LOG2: most ADC samples averaged is 2**this (default 8)")
    p.set_defaults(func=_cmd_regmap)

    p = sub.add_parser("verilog", help="the controller's top-level Verilog (module anmf_controller)")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    _add_build_options(p)
    p.set_defaults(func=_cmd_verilog)

    p = sub.add_parser("synth", help="synthesize, place and route the controller for an FPGA (YoWASP); fmax and resources")
    p.add_argument("--target", required=True, help="ice40 (UP5K, smaller build) or ecp5 (ECP5-25k, default build)")
    p.add_argument("--json", help="write the report as JSON to this file")
    p.add_argument("--build-dir", help="build folder (default build/synth-TARGET)")
    p.add_argument("--seeds", default="1", help="nextpnr placement seeds (default 1): the build with the first, "
                                                "the same netlist placed and routed again with each other (as 1,2,3)")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("faults", help="fault-injection campaign: each fault with and without its feature (docs/faults.md)")
    p.add_argument("--backend", choices=("model", "rtl"), default="model",
                   help="model (golden model) or rtl (the controller RTL in co-simulation)")
    p.add_argument("--sim", choices=SIMS, default="verilator", help="simulator of the rtl backend (default verilator)")
    p.add_argument("--json", help="write the rows as JSON to this file")
    p.add_argument("--seed", type=non_negative_int, default=11, help="AFE seed: devices, converter errors, noise (default 11)")
    p.set_defaults(func=_cmd_faults)

    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        print(f"anmf: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
