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

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors on one line (exit 2) without the usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def _non_negative_int(text: str) -> int:
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
    if args.backend == "model" and args.method != "anls":
        raise InputError(f"--method {args.method} is not available on the model backend; accepted: anls (the chip runs ANLS)")

    start = time.perf_counter()
    if args.backend == "reference":
        from anmf.model.nmf import factorize

        result = factorize(R, rank, method=args.method, iters=args.iters, seed=args.seed)
        W, H = result.W, result.H
        afe_name = None
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
    if is_image:
        summary["psnr_db"] = float(psnr_db(R, W @ H, peak=1.0))
    line = (f"{args.input}: {R.shape[0]}x{R.shape[1]} rank {rank}, {args.method} on {args.backend}"
            + (f" ({afe_name})" if afe_name else "")
            + f", {args.iters} iterations: relative error {summary['rel_error']:.4f}")
    if is_image:
        line += f", PSNR {summary['psnr_db']:.2f} dB"
    print(line + f", {seconds:.2f} s; W and H written to {out}/")
    _write_json(args.json, summary)
    return 0


# --- demo --------------------------------------------------------------------------------

def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.out, seed=args.seed)
    return 0


# --- regmap ------------------------------------------------------------------------------

def _cmd_regmap(args: argparse.Namespace) -> int:
    from anmf.hdl.params import BuildParams
    from anmf.hdl.registers import build_register_map
    from anmf.hdl.regmap_export import render

    try:
        register_map = build_register_map(BuildParams(rows=args.rows, cols=args.cols, spare=args.spare,
                                                      dac_bits=args.dac_bits, adc_bits=args.adc_bits,
                                                      avg_max_log2=args.avg_max_log2))
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
                             adc_bits=args.adc_bits)
        text = verilog_text(params)
    except (TypeError, ValueError) as exc:
        raise InputError(str(exc)) from None
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="anmf", description="Hybrid analog/digital NMF: model, controller RTL, co-simulation.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("factorize", help="factorize a non-negative matrix R ~ W H")
    p.add_argument("input", help="matrix file: .npy, .csv, or an image (.png/.jpg, read as grayscale in [0, 1])")
    p.add_argument("--rank", "-k", type=_positive_int, required=True, help="factorization rank K")
    p.add_argument("--iters", type=_positive_int, default=50, help="outer iterations (default 50)")
    p.add_argument("--backend", choices=("reference", "model"), default="reference",
                   help="reference: float NMF; model: the functional chip model (DAC, circuit, ADC)")
    p.add_argument("--method", choices=("anls", "hals", "mu"), default="anls", help="reference algorithm (default anls)")
    p.add_argument("--afe", default="rram-3bit", help="AFE preset (ideal, rram-3bit, pessimistic) or a .toml file")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (initialization and analog noise)")
    p.add_argument("--out", default="out", help="folder for W.npy and H.npy (default out/)")
    p.add_argument("--json", help="write a JSON summary to this file")
    p.set_defaults(func=_cmd_factorize)

    p = sub.add_parser("demo", help="run the bundled default (camera crop) on the reference and the chip model")
    p.add_argument("--out", default="out", help="folder for summary.json (default out/)")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (default 0)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("regmap", help="register map as markdown, JSON or a C header")
    p.add_argument("--format", choices=("md", "json", "c"), default="md", help="output format (default md)")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    p.add_argument("--rows", type=_positive_int, default=64, help="ROWS build parameter (default 64)")
    p.add_argument("--cols", type=_positive_int, default=8, help="COLS build parameter (default 8)")
    p.add_argument("--spare", type=_non_negative_int, default=2, help="SPARE build parameter (default 2)")
    p.add_argument("--dac-bits", type=_positive_int, default=10, help="DAC_BITS build parameter (default 10)")
    p.add_argument("--adc-bits", type=_positive_int, default=10, help="ADC_BITS build parameter (default 10)")
    p.add_argument("--avg-max-log2", type=_non_negative_int, default=8,
                   help="AVG_MAX_LOG2: most ADC samples averaged is 2**this (default 8)")
    p.set_defaults(func=_cmd_regmap)

    p = sub.add_parser("verilog", help="the controller's top-level Verilog (module anmf_controller)")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    p.add_argument("--rows", type=_positive_int, default=64, help="ROWS build parameter (default 64)")
    p.add_argument("--cols", type=_positive_int, default=8, help="COLS build parameter (default 8)")
    p.add_argument("--spare", type=_non_negative_int, default=2, help="SPARE build parameter (default 2)")
    p.add_argument("--dac-bits", type=_positive_int, default=10, help="DAC_BITS build parameter (default 10)")
    p.add_argument("--adc-bits", type=_positive_int, default=10, help="ADC_BITS build parameter (default 10)")
    p.set_defaults(func=_cmd_verilog)

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
