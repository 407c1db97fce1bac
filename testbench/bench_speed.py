"""``make bench-sim``: simulated clock cycles per second on Icarus and Verilator.

    python -m anmf.testbench.bench_speed [--sim icarus|verilator|all] [--solves N]
                                         [--bare-cycles N] [--profile]

Three cocotb tests on the controller's Verilog (one build per simulator):

- ``bare_rate``: the RTL clocked through reset and then only a final ``Timer`` (no Python in
  the loop): the simulator's own rate on this design;
- ``watched_idle_rate``: the same with the AFE binding and the AXI master attached but idle:
  what their registered edge and value-change callbacks cost without any Python running;
- ``solve_loop_rate``: a host-driven SOLVE loop, the workload of a host-driven ANLS half-step
  without the host's arithmetic: per solve the host writes the RHS window over AXI4-Lite
  (cocotbext-axi), starts SOLVE, waits for ``irq``, clears it and reads the RESULTS window,
  while the code-level AFE model answers through ``AFEBinding`` (testbench/afe_binding.py).
  Its cycles and wall time are also split into the host's bus traffic and the solves
  themselves (CONTROL.start to ``irq``: the AFE binding's share, the AXI master idle).

The solve loop runs twice: with the rram-3bit model's ADC (1.2 us, 120 cycles) and with the
200 ns ADC of the co-simulation tests. The last row of each splits off the wall time spent
inside the AFE model's methods (an estimate of the binding's event mechanics alone).

Cycles come from the simulation time, wall seconds from ``time.perf_counter`` around the
measured stretch inside the simulator process (build and start-up excluded). ``--profile``
runs cProfile around the solve loop and prints the top functions (cumulative time).

This is a benchmark: it prints figures (and fails only if a cocotb test fails).
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import logging
import os
import pstats
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import ClockCycles, RisingEdge, Timer, with_timeout

__all__ = ["PARAMS", "AFE", "Figures", "ModelTimer", "main", "format_table", "loop_rows"]

#: A 16 x 4 (+1 spare) array with up to 4-sample averaging, as the co-simulation benches.
PARAMS = {"rows": 16, "cols": 4, "spare": 1, "avg_max_log2": 2}
#: The rram-3bit analog model; its ADC conversion takes 1.2 us (120 cycles at 100 MHz).
AFE = {"preset": "rram-3bit", "seed": 11}
#: The ADC conversion of the co-simulation tests (tests/test_afe_binding.py): 200 ns keeps
#: their runs short, and gives Python 6 times more events per simulated cycle.
TEST_ADC_CONVERSION_S = 200e-9
CLOCK_HZ = 100e6
#: Per solve: the DAC settles for the model's settle time, the loop for ANALOG_SETTLE's reset
#: value (200 cycles, 2 us); 4 ADC samples per column.
ANALOG_SETTLE, ADC_SAMPLES = 200, 4
DEFAULT_SOLVES = {"icarus": 12, "verilator": 60}
DEFAULT_BARE_CYCLES = {"icarus": 100_000, "verilator": 1_000_000}
PROFILE_FILE = "speed.prof"
COMMAND_TIMEOUT_US = 2000


class ModelTimer:
    """Wall time spent inside the AFE model's methods (the binding's calls pass through
    unchanged): what the model's numerics cost, apart from the event mechanics."""

    METHODS = ("apply_controls", "write_dac", "load_dacs", "convert", "pulse")

    def __init__(self, afe: Any):
        self.seconds = 0.0
        for name in self.METHODS:
            setattr(afe, name, self._timed(getattr(afe, name)))

    def _timed(self, method: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
        return timed


@dataclass
class Stretch:
    """Simulated cycles and wall seconds accumulated over measured stretches."""

    cycles: int = 0
    wall_s: float = 0.0

    def add(self, cycles: int, wall_s: float) -> None:
        self.cycles += cycles
        self.wall_s += wall_s


class _Clockwork:
    """Measures stretches in cycles of the DUT clock and seconds of wall time."""

    def __init__(self, period_ps: int):
        self.period_ps = period_ps

    def now(self) -> tuple[float, float]:
        return get_sim_time("ps"), time.perf_counter()

    def since(self, start: tuple[float, float]) -> tuple[int, float]:
        sim_ps, wall = self.now()
        return round(sim_ps - start[0]) // self.period_ps, wall - start[1]


def _config() -> dict[str, Any]:
    return json.loads(os.environ["ANMF_SPEED"])


def _save(name: str, figures: dict[str, Any]) -> None:
    """Add the test's figures to the runner's output file (``out`` in ANMF_SPEED)."""
    path = Path(_config()["out"])
    saved = json.loads(path.read_text()) if path.exists() else {}
    saved[name] = figures
    path.write_text(json.dumps(saved, indent=1))


@cocotb.test()
async def bare_rate(dut) -> None:
    """The RTL out of reset, clocked with no Python in the loop: one Timer to the end."""
    config = _config()
    period_ps = round(1e12 / CLOCK_HZ)
    Clock(dut.clk, period_ps, unit="ps").start()
    # Idle inputs: no host, no AFE answers.
    for name in ("afe__adc_busy", "afe__adc_data", "afe__adc_ovr", "afe__prog_done", "axil__awvalid",
                 "axil__wvalid", "axil__arvalid", "axil__bready", "axil__rready"):
        getattr(dut, name).value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    await RisingEdge(dut.clk)
    clock = _Clockwork(period_ps)
    start = clock.now()
    await Timer(config["bare_cycles"] * period_ps, unit="ps")
    cycles, wall_s = clock.since(start)
    assert cycles == config["bare_cycles"], f"{cycles} cycles simulated, {config['bare_cycles']} asked"
    _save("bare", {"cycles": cycles, "wall_s": wall_s})


@cocotb.test()
async def watched_idle_rate(dut) -> None:
    """The RTL idle with the AFE binding and the AXI master attached (their edge and
    value-change callbacks registered, no Python woken): the cost of watching alone."""
    from anmf.testbench.bench_afe_binding import Bench

    config = _config()
    bench = Bench(dut)
    await bench.start()
    clock = _Clockwork(bench.afe.period_ps)
    wakeups_before = len(bench.binding.conversions) + bench.binding.dac_writes
    start = clock.now()
    await Timer(config["bare_cycles"] * bench.afe.period_ps, unit="ps")
    cycles, wall_s = clock.since(start)
    assert len(bench.binding.conversions) + bench.binding.dac_writes == wakeups_before, \
        "the idle controller must not reach the AFE"
    _save("watched_idle", {"cycles": cycles, "wall_s": wall_s})


@cocotb.test()
async def solve_loop_rate(dut) -> None:
    """Host-driven SOLVEs over AXI4-Lite against the AFE model: total, host traffic, solves."""
    from anmf.model.afe import Mode
    from anmf.testbench.bench_afe_binding import Bench

    config = _config()
    bench = Bench(dut)
    await bench.start()
    driver, p = bench.driver, bench.params
    for interface in (driver.master.write_if, driver.master.read_if):
        interface.log.setLevel(logging.WARNING)  # an INFO line per access otherwise
    dac_settle = max(1, -(-round(bench.afe.config.dac.settle_time_s * 1e12) // bench.afe.period_ps))
    bench.place_levels()
    await driver.write_window("ROW_MASK", [(2 ** p.rows - 1 >> (32 * w)) & 0xFFFF_FFFF
                                           for w in range(driver.regs.ROW_MASK.depth)])
    await driver.set("COL_ENABLE", enable=2 ** p.total_cols - 1)
    await driver.set("TIMING", adc_samples=ADC_SAMPLES)
    await driver.set("DAC_SETTLE", cycles=dac_settle)
    await driver.set("ANALOG_SETTLE", cycles=ANALOG_SETTLE)
    await driver.set("COMMAND", opcode=Mode.SOLVE.name)
    rhs = [bench.rhs_for(bench.rng.uniform(0.0, 0.4, p.total_cols)) for _ in range(config["solves"])]

    clock = _Clockwork(bench.afe.period_ps)
    total, host, solves = Stretch(), Stretch(), Stretch()
    model = ModelTimer(bench.afe)
    profiler = cProfile.Profile() if config.get("profile") else None
    if profiler:
        profiler.enable()
    start = clock.now()
    words = []
    solve_model_s = 0.0
    for codes in rhs:
        mark = clock.now()
        await driver.write_window("RHS", codes)
        host.add(*clock.since(mark))
        mark, model_before = clock.now(), model.seconds
        await driver.set("CONTROL", start=1)
        if not int(dut.irq.value):
            await with_timeout(RisingEdge(dut.irq), COMMAND_TIMEOUT_US, "us")
        solves.add(*clock.since(mark))
        solve_model_s += model.seconds - model_before
        mark = clock.now()
        status = await driver.get("STATUS")
        await driver.set("IRQ_STATUS", done=1)
        words.append(await driver.read_window("RESULTS"))
        host.add(*clock.since(mark))
        assert status["error"] == 0, f"SOLVE ended with {status}"
    total.add(*clock.since(start))
    if profiler:
        profiler.disable()
        profiler.dump_stats(PROFILE_FILE)
    conversions = len(bench.binding.conversions)
    assert conversions == config["solves"] * p.total_cols * ADC_SAMPLES, \
        f"{conversions} conversions for {config['solves']} solves"
    assert len({tuple(w) for w in words}) > 1, "different RHS must give different results"
    assert not bench.binding.all_violations, bench.binding.all_violations
    _save("solve_loop", {"cycles": total.cycles, "wall_s": total.wall_s, "solves": config["solves"],
                         "host": vars(host), "solve": vars(solves), "solve_model_s": solve_model_s,
                         "conversions": conversions, "dac_writes": bench.binding.dac_writes,
                         "dac_settle": dac_settle, "adc_cycles": bench.afe.adc_busy_cycles})


# --- runner -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Figures:
    """One row of the table."""

    sim: str
    workload: str
    cycles: int
    wall_s: float

    @property
    def rate(self) -> float:
        return self.cycles / self.wall_s if self.wall_s > 0 else float("inf")


BARE = "bare RTL (final Timer only)"


def format_table(rows: Sequence[Figures]) -> str:
    """sim, workload, cycles, wall s, cycles/s, ratio to the same simulator's bare rate."""
    bare = {row.sim: row.rate for row in rows if row.workload == BARE}
    width = max(len(row.workload) for row in rows)
    lines = [f"{'sim':10} {'workload':{width}} {'cycles':>9} {'wall s':>7} {'cycles/s':>9} {'ratio':>6}"]
    for row in rows:
        ratio = f"{row.rate / bare[row.sim]:6.2f}" if row.sim in bare else f"{'-':>6}"
        lines.append(f"{row.sim:10} {row.workload:{width}} {row.cycles:9d} {row.wall_s:7.2f} "
                     f"{row.rate:9.0f} {ratio}")
    return "\n".join(lines)


def loop_rows(sim: str, label: str, loop: dict[str, Any]) -> list[Figures]:
    """The solve loop's rows: whole loop, host traffic, solves, solves without model time."""
    solve = loop["solve"]
    return [
        Figures(sim, f"SOLVE loop, {label}, {loop['solves']} solves", loop["cycles"], loop["wall_s"]),
        Figures(sim, "  host AXI traffic (RHS, STATUS, IRQ, RESULTS)", loop["host"]["cycles"],
                loop["host"]["wall_s"]),
        Figures(sim, "  solves: start to irq (AFE binding + model)", solve["cycles"], solve["wall_s"]),
        Figures(sim, "  solves less the AFE model's own time (estimate)", solve["cycles"],
                solve["wall_s"] - loop["solve_model_s"]),
    ]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    from anmf.hdl.controller import TOP_MODULE, verilog_text
    from anmf.hdl.params import BuildParams
    from anmf.testbench.sim import results_summary
    from anmf.testbench.simulators import SIMULATORS, SimulatorMissing, run_bench

    parser = argparse.ArgumentParser(prog="python -m anmf.testbench.bench_speed",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--sim", default="all", choices=[*SIMULATORS, "all"])
    parser.add_argument("--solves", type=_positive, default=None,
                        help=f"solves in the loop (default {DEFAULT_SOLVES})")
    parser.add_argument("--bare-cycles", type=_positive, default=None,
                        help=f"cycles of the bare run (default {DEFAULT_BARE_CYCLES})")
    parser.add_argument("--profile", action="store_true", help="cProfile the solve loop, print the top")
    args = parser.parse_args(argv)
    os.environ.pop("PYTEST_CURRENT_TEST", None)  # the runner would act as under pytest
    simulators = list(SIMULATORS) if args.sim == "all" else [args.sim]
    verilog = verilog_text(BuildParams(**PARAMS))
    # (label, AFE configuration, run the bare test too)
    workloads = (("ADC 1.2 us (rram-3bit)", AFE, True),
                 ("ADC 200 ns (as the tests)", {**AFE, "adc": {"conversion_time_s": TEST_ADC_CONVERSION_S}},
                  False))
    rows: list[Figures] = []
    for sim in simulators:
        for label, afe, with_bare in workloads:
            out = Path(tempfile.mkstemp(prefix=f"bench_speed-{sim}-", suffix=".json")[1])
            out.unlink()
            config = {"solves": args.solves or DEFAULT_SOLVES[sim], "out": str(out),
                      "bare_cycles": args.bare_cycles or DEFAULT_BARE_CYCLES[sim], "profile": args.profile}
            bench = {"dut": "controller", "params": PARAMS, "afe": afe, "clock_hz": CLOCK_HZ, "seed": 5}
            try:
                results = run_bench(sim=sim, verilog=verilog, toplevel=TOP_MODULE,
                                    test_module="anmf.testbench.bench_speed", name="bench_speed",
                                    testcase=None if with_bare else "solve_loop_rate",
                                    extra_env={"ANMF_SPEED": json.dumps(config),
                                               "ANMF_AFE_BENCH": json.dumps(bench)})
            except SimulatorMissing as exc:
                print(f"bench-sim: error: {exc}", file=sys.stderr)
                return 2
            tests, failed = results_summary(results)
            if failed or tests != (3 if with_bare else 1):
                print(f"bench-sim: {failed} of {tests} cocotb tests failed on {sim}: {results}",
                      file=sys.stderr)
                return 1
            figures = json.loads(out.read_text())
            out.unlink()
            if with_bare:
                rows.append(Figures(sim, BARE, figures["bare"]["cycles"], figures["bare"]["wall_s"]))
                rows.append(Figures(sim, "idle, AFE binding and AXI master attached",
                                    figures["watched_idle"]["cycles"], figures["watched_idle"]["wall_s"]))
            rows += loop_rows(sim, label, figures["solve_loop"])
            if args.profile:
                stream = io.StringIO()
                stats = pstats.Stats(str(results.parent / PROFILE_FILE), stream=stream)
                stats.sort_stats("cumulative").print_stats(30)
                print(f"--- {sim}, {label}: cProfile of the solve loop (cumulative) ---\n{stream.getvalue()}")
    print(f"\nbench-sim {time.strftime('%Y-%m-%d')}: controller rows={PARAMS['rows']} cols={PARAMS['cols']} "
          f"spare={PARAMS['spare']}, 100 MHz clock; per solve: {ADC_SAMPLES} samples x "
          f"{PARAMS['cols'] + PARAMS['spare']} columns, analog settle {ANALOG_SETTLE} cycles")
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
