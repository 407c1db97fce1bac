"""``make sim``: run the repository's cocotb benches without pytest.

    python -m anmf.testbench.sim [--sim icarus|verilator|all] [--test NAME[,NAME...]] [--waves]
                                 [--seed N] [--list]

NAME is a bench (``controller``, ``afe_binding-harness``...), a bench module
(``bench_controller`` or ``anmf.testbench.bench_controller``: every bench built from it) or a
cocotb test name (``solve_over_axi``: only that test). Without ``--test`` every bench runs.

The seed is printed first; ``COCOTB_RANDOM_SEED=<seed>`` (or ``--seed``) gives the same
random stimulus again (benches that draw from cocotb's seed: see docs/verification.md). Each
bench's JUnit file is printed and read back with ``get_results``; the exit status is 0 when
every selected test passed, 1 on any failure (a failing test, a build or simulator error, a
results file without tests), 2 for a bad argument or a missing simulator (never a skip).

Each bench is configured exactly as its pytest runner does it (``tests/test_<...>.py``): the
DUT's build parameters, the DUT itself where the test file defines it, and the environment
its cocotb module reads are taken from that file, so ``make sim`` runs what ``make test`` runs.
"""
from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import random
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Callable, Sequence

from anmf.cli import OneLineParser, non_negative_int
from anmf.testbench.simulators import (SIMULATORS, SimulatorMissing, build_dir_for, check_verilator_fst,
                                       prepare_environment, run_bench, waves_path, waves_requested)

__all__ = ["Bench", "BenchRun", "BENCHES", "benches", "Selection", "select", "bench_tests", "bench_suite",
           "results_summary", "main", "EXIT_FAILED", "EXIT_USAGE"]

EXIT_FAILED = 1
EXIT_USAGE = 2
REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
#: Largest seed cocotb's per-run seed is drawn from here (it accepts any int; 32 bits reads well).
SEED_LIMIT = 2 ** 32


@dataclass(frozen=True)
class BenchRun:
    """What ``run_bench`` needs besides the simulator: the elaborated DUT and the environment."""

    verilog: str
    toplevel: str
    extra_env: dict[str, str]


@dataclass(frozen=True)
class Bench:
    """One cocotb bench: a test module (or some of its tests) on one DUT, built under
    ``build/<build_name>-<sim>``."""

    name: str
    module: str                       #: dotted cocotb test module
    summary: str                      #: what it checks, one line
    prepare: Callable[[Path], BenchRun]  #: given the folder for side files (regmap.json...)

    @property
    def module_file(self) -> Path:
        spec = importlib.util.find_spec(self.module)
        if spec is None or spec.origin is None:
            raise ValueError(f"bench {self.name}: module {self.module} not found")
        return Path(spec.origin)

    @property
    def tests(self) -> tuple[str, ...]:
        """Every cocotb test of the module (any can be picked by name)."""
        return bench_tests(self.module_file)

    @property
    def suite(self) -> tuple[str, ...] | None:
        """What the whole bench runs: the module's ``SUITE_TESTS`` if it names some (as
        bench_scenarios does: tests kept for other uses stay out), else every test (None)."""
        return bench_suite(self.module_file)


def bench_suite(path: Path) -> tuple[str, ...] | None:
    """A bench module's ``SUITE_TESTS = ("test", ...)`` (read with ``ast``), or None."""
    for node in ast.parse(path.read_text(), filename=str(path)).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "SUITE_TESTS"
                                                for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    return None


def bench_tests(path: Path) -> tuple[str, ...]:
    """Names of the ``@cocotb.test()`` coroutines in a bench module, in source order (read with
    ``ast``: no simulator needed)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = []
    for node in tree.body:
        if isinstance(node, ast.AsyncFunctionDef):
            for decorator in node.decorator_list:
                target = decorator.func if isinstance(decorator, ast.Call) else decorator
                if ast.unparse(target) in ("cocotb.test", "test"):
                    names.append(node.name)
    return tuple(names)


# --- the benches, configured from their pytest runners ----------------------------------------------

@cache
def _runner_module(name: str) -> ModuleType:
    """A pytest runner in tests/, imported by path (tests/ is not a package; its helpers, e.g.
    ``axi_host``, are imported by bare name, so tests/ goes on sys.path as pytest puts it)."""
    path = TESTS / f"{name}.py"
    if not path.is_file():
        raise ValueError(f"the bench's pytest runner {path} is missing")
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    spec = importlib.util.spec_from_file_location(f"_anmf_sim_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _regmap_env(folder: Path, params: object | None) -> dict[str, str]:
    """Write the register map's JSON description for ``params``; the env var benches read."""
    from anmf.hdl.registers import build_register_map
    from anmf.hdl.regmap_export import describe

    folder.mkdir(parents=True, exist_ok=True)
    description = folder / "regmap.json"
    description.write_text(json.dumps(describe(build_register_map(params))))  # type: ignore[arg-type]
    return {"ANMF_REGMAP_JSON": str(description)}


def _axi_regs(folder: Path) -> BenchRun:
    from amaranth.back import verilog

    runner = _runner_module("test_axi4lite")
    return BenchRun(verilog.convert(runner.new_dut(), name="axi_regs"), "axi_regs", _regmap_env(folder, None))


def _bus(folder: Path) -> BenchRun:
    from amaranth.back import verilog

    from anmf.hdl.axi4lite import AXI4LiteRegisterFile
    from anmf.hdl.registers import ControllerRegisters

    runner = _runner_module("test_bus_cocotb")
    dut = AXI4LiteRegisterFile(ControllerRegisters(runner.PARAMS))
    return BenchRun(verilog.convert(dut, name=runner.TOPLEVEL), runner.TOPLEVEL,
                    _regmap_env(folder, runner.PARAMS))


def _controller(folder: Path) -> BenchRun:
    from anmf.hdl.controller import TOP_MODULE, verilog_text

    runner = _runner_module("test_controller_cocotb")
    return BenchRun(verilog_text(runner.PARAMS), TOP_MODULE, _regmap_env(folder, runner.PARAMS))


def _afe_binding(dut: str) -> Callable[[Path], BenchRun]:
    def prepare(folder: Path) -> BenchRun:
        from amaranth.back import verilog

        from anmf.hdl.controller import TOP_MODULE, verilog_text

        runner = _runner_module("test_afe_binding")
        env = {"ANMF_AFE_BENCH": json.dumps({**runner.BENCH, "dut": dut})}
        if dut == "harness":
            toplevel = "afe_binding_harness"
            return BenchRun(verilog.convert(runner.SolveProgramHarness(runner.PARAMS), name=toplevel),
                            toplevel, env)
        return BenchRun(verilog_text(runner.PARAMS), TOP_MODULE, env)
    return prepare


def _scenarios(folder: Path) -> BenchRun:
    from anmf.hdl.controller import TOP_MODULE, verilog_text
    from anmf.testbench.bench_scenarios import scenario_env

    runner = _runner_module("test_scenarios_cocotb")
    return BenchRun(verilog_text(runner.PARAMS), TOP_MODULE, scenario_env())


def _run_nmf(folder: Path) -> BenchRun:
    from anmf.hdl.controller import TOP_MODULE, verilog_text
    from anmf.testbench.bench_run_nmf import run_nmf_env

    runner = _runner_module("test_run_nmf_cocotb")
    return BenchRun(verilog_text(runner.PARAMS), TOP_MODULE, run_nmf_env())


def _refine(folder: Path) -> BenchRun:
    from anmf.hdl.controller import TOP_MODULE, verilog_text
    from anmf.testbench.bench_refine import refine_env

    runner = _runner_module("test_refine_cocotb")
    return BenchRun(verilog_text(runner.PARAMS), TOP_MODULE, refine_env())


def _random(folder: Path) -> BenchRun:
    from anmf.hdl.controller import TOP_MODULE, verilog_text
    from anmf.testbench.bench_random import bench_env

    runner = _runner_module("test_random_cocotb")
    folder.mkdir(parents=True, exist_ok=True)
    return BenchRun(verilog_text(runner.PARAMS), TOP_MODULE,
                    bench_env(steps=runner.STEPS, coverage_json=str(folder / "coverage-sim.json")))


BENCHES: tuple[Bench, ...] = (
    Bench("axi_regs", "anmf.testbench.bench_axi_regs",
          "AXI4-Lite slave + register file: reset values, windows, byte writes, SLVERR", _axi_regs),
    Bench("bus", "anmf.testbench.bench_bus",
          "register file under back-pressure and interleaved random traffic vs the documented access",
          _bus),
    Bench("controller", "anmf.testbench.bench_controller",
          "whole controller over AXI4-Lite with a linear AFE responder: SOLVE, PROGRAM/READ_CELL, refusals",
          _controller),
    Bench("afe_binding-harness", "anmf.testbench.bench_afe_binding",
          "solve sequencer + programmer against the AFE model, bit-exact vs the golden model",
          _afe_binding("harness")),
    Bench("afe_binding-controller", "anmf.testbench.bench_afe_binding",
          "controller over AXI4-Lite against the AFE model, bit-exact vs the golden model",
          _afe_binding("controller")),
    Bench("scenarios", "anmf.testbench.bench_scenarios",
          "host driver over AXI4-Lite on the controller with the AFE model, against the scoreboards "
          "and the float reference", _scenarios),
    Bench("run_nmf", "anmf.testbench.bench_run_nmf",
          "RUN_NMF from the host over AXI4-Lite: bit for bit vs the golden model, error vs float ANLS, abort",
          _run_nmf),
    Bench("refine", "anmf.testbench.bench_refine",
          "PROGRAM_MATRIX then REFINE, and the over-range retry of host solves, with the AFE model: bit for "
          "bit and cycle for cycle vs the golden model", _refine),
    Bench("random", "anmf.testbench.bench_random",
          "constrained-random commands, bus accesses, aborts and a silent AFE vs the golden model and "
          "the documented behaviour, with functional coverage (make regress: many seeds)", _random),
)


def benches() -> tuple[Bench, ...]:
    """The benches whose module is in this checkout (the scenarios come with the host driver)."""
    return tuple(b for b in BENCHES if importlib.util.find_spec(b.module) is not None)


# --- selection -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Selection:
    """A bench to run, and which of its cocotb tests (None: all)."""

    bench: Bench
    testcases: tuple[str, ...] | None = None


def select(names: str | None, registry: Sequence[Bench] | None = None) -> list[Selection]:
    """The benches (and tests) ``names`` asks for: comma-separated bench names, bench modules
    (dotted or bare) or cocotb test names; None or "" selects every bench of ``registry``
    (default: :func:`benches`)."""
    tokens = [n.strip() for n in (names or "").split(",") if n.strip()]
    registry = benches() if registry is None else registry
    if not tokens:
        return [Selection(bench) for bench in registry]
    whole: dict[str, Bench] = {}
    cases: dict[str, list[str]] = {}
    for name in tokens:
        matched = [b for b in registry if name in (b.name, b.module, b.module.rsplit(".", 1)[-1])]
        if matched:
            whole.update({b.name: b for b in matched})
            continue
        with_test = [b for b in registry if name in b.tests]
        if not with_test:
            accepted = sorted({b.name for b in registry} | {b.module.rsplit(".", 1)[-1] for b in registry})
            tests = sorted({t for b in registry for t in b.tests})
            raise ValueError(f"no bench, bench module or cocotb test named {name!r}; accepted: "
                             f"{', '.join(accepted)}, or a test: {', '.join(tests)}")
        for bench in with_test:
            cases.setdefault(bench.name, []).append(name)
    selected = []
    for bench in registry:  # registry order: cheap benches first
        if bench.name in whole:
            selected.append(Selection(bench))
        elif bench.name in cases:
            selected.append(Selection(bench, tuple(cases[bench.name])))
    return selected


def results_summary(results: Path) -> tuple[int, int]:
    """(tests, failed) in a cocotb JUnit file (cocotb's ``get_results``); a missing file raises
    RuntimeError (the simulation ended abnormally)."""
    from cocotb_tools.check_results import get_results

    return get_results(results)


# --- command line ----------------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m anmf.testbench.sim", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sim", default="icarus", choices=[*SIMULATORS, "all"],
                        help="simulator (default icarus; all: each in turn)")
    parser.add_argument("--test", default=None,
                        help="bench, bench module or cocotb test name(s), comma-separated (default: all)")
    parser.add_argument("--waves", action="store_true",
                        help="write FST waveforms into the build folder (also WAVES=1)")
    parser.add_argument("--seed", type=non_negative_int, default=None,
                        help="cocotb random seed (default: COCOTB_RANDOM_SEED, else a fresh one)")
    parser.add_argument("--list", action="store_true", help="list the benches and their tests, run nothing")
    return parser


def _print(text: str) -> None:
    print(f"[anmf sim] {text}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        selection = select(args.test)
        waves = waves_requested(args.waves)
    except ValueError as exc:
        print(f"anmf sim: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.list:
        for bench in benches():
            suite = f" (whole bench: {', '.join(bench.suite)})" if bench.suite else ""
            print(f"{bench.name:24} {bench.module}\n{'':24} {bench.summary}\n{'':24} tests: "
                  f"{', '.join(bench.tests)}{suite}")
        return 0
    simulators = list(SIMULATORS) if args.sim == "all" else [args.sim]
    try:
        for sim in simulators:  # before any build: a missing simulator is the first thing said
            prepare_environment(sim)
        if waves and "verilator" in simulators:
            check_verilator_fst()
    except SimulatorMissing as exc:
        print(f"anmf sim: error: {exc}", file=sys.stderr)
        return EXIT_USAGE

    env_seed = os.environ.get("COCOTB_RANDOM_SEED", "").strip()
    if args.seed is not None:
        seed = args.seed
    elif env_seed:
        try:
            seed = non_negative_int(env_seed)
        except argparse.ArgumentTypeError as exc:
            print(f"anmf sim: error: COCOTB_RANDOM_SEED: {exc}", file=sys.stderr)
            return EXIT_USAGE
    else:
        seed = random.SystemRandom().randrange(SEED_LIMIT)
    # cocotb's runner lets the environment win over its seed argument: keep them equal.
    os.environ["COCOTB_RANDOM_SEED"] = str(seed)
    # Under pytest the runner names results after the test and exits on failures; this is not
    # pytest, even when a test starts it.
    os.environ.pop("PYTEST_CURRENT_TEST", None)
    _print(f"seed {seed} (reproduce: COCOTB_RANDOM_SEED={seed})")

    outcomes: list[tuple[str, str, str]] = []   # (PASS/FAIL, label, detail)
    for sim in simulators:
        for chosen in selection:
            bench = chosen.bench
            label = f"{bench.name} on {sim}" + (f" ({', '.join(chosen.testcases)})" if chosen.testcases else "")
            _print(f"running {label}")
            folder = build_dir_for(bench.name, sim, waves)
            testcases = chosen.testcases or bench.suite
            try:
                run = bench.prepare(folder)
                results = run_bench(sim=sim, verilog=run.verilog, toplevel=run.toplevel,
                                    test_module=bench.module, name=bench.name,
                                    testcase=list(testcases) if testcases else None,
                                    seed=seed, extra_env=run.extra_env, waves=waves)
                tests, failed = results_summary(results)
            except (Exception, SystemExit) as exc:
                # The configuration, the build or the simulator failed (the runner raises or
                # exits); a results file left in the folder is from an earlier run: not read.
                outcomes.append(("FAIL", label, f"not run to the end: {type(exc).__name__}: {exc}"))
                _print(f"FAIL {label}: {outcomes[-1][2]}")
                continue
            detail = f"{tests - failed}/{tests} passed, results {results}"
            if waves:
                detail += f", waves {waves_path(folder, run.toplevel)}"
            ok = tests > 0 and failed == 0
            outcomes.append(("PASS" if ok else "FAIL", label, detail if tests else f"no tests ran, {detail}"))
            _print(f"{'PASS' if ok else 'FAIL'} {label}: {detail}")

    _print(f"summary (seed {seed}):")
    for status, label, detail in outcomes:
        _print(f"  {status} {label}: {detail}")
    failed_runs = sum(status != "PASS" for status, _, _ in outcomes)
    if failed_runs:
        _print(f"{failed_runs} of {len(outcomes)} runs failed; reproduce with COCOTB_RANDOM_SEED={seed}")
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
