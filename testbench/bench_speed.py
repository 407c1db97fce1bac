"""``make bench-sim``: simulated clock cycles per second on Icarus and Verilator.

    python -m anmf.testbench.bench_speed [--sim icarus|verilator|all] [--iters N]
                                         [--bare-cycles N] [--profile]

Four cocotb tests on the controller's Verilog of the host-driven scenarios
(testbench/bench_scenarios.py: its DEFAULT_OPTIONS build, one build per simulator):

- ``bare_rate``: the RTL clocked through reset and then only a final ``Timer`` (no Python in
  the loop): the simulator's own rate on this design;
- ``watched_idle_rate``: the same with the scenario bench attached but idle (AFE binding,
  AXI4-Lite master, irq line): what their registered edge and value-change callbacks cost
  while no Python runs;
- ``wakeup_cost``: the same RTL with Python woken at every rising clock edge, once by a
  simulator callback calling a plain function (how AFEBinding answers AFE events), once by a
  cocotb task awaiting the edge (how the bus master and the driver wait): the cost of one
  wake-up beyond the bare cycle, which bounds what a workload with that many events can reach;
- ``anls_rate``: the host-driven ANLS scenario: ``anmf.host.host_anls`` on the RTL through
  ``RegisterDriver`` over AXI4-Lite, the AFE model answering through ``AFEBinding``, as
  bench_scenarios' ``host_anls_matches_reference`` runs it (same bench, options and data)
  without its scoreboards and reference comparisons. Its cycles and wall time are split into
  bus transactions, waits for ``irq`` (commands running: the AFE binding's share, the bus
  idle) and the AFE model's own time inside those waits.

The ANLS runs twice: with the scenario's 200 ns ADC conversion and with the rram-3bit
model's own 1.2 us (fewer AFE events per simulated cycle).

Cycles come from the simulation time, wall seconds from ``time.perf_counter`` around the
measured stretch inside the simulator process (build and start-up excluded), CPU seconds from
``time.process_time`` around the same stretch: on a machine shared with other jobs the wall
time also counts the waits for a core, the CPU time does not (the simulator, cocotb and the
model run in the one process), so the CPU ratio is the steadier figure. ``--profile``
runs cProfile around the ANLS and prints the top functions (cumulative time).

This is a benchmark: it prints figures (and fails only if a cocotb test fails).
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Sequence

import cocotb
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import ClockCycles, RisingEdge, Timer

from anmf.cli import positive_int
from anmf.testbench.bench_scenarios import DEFAULT_OPTIONS, ENV_VAR

__all__ = ["Figures", "ModelTimer", "Stretch", "main", "format_table", "anls_rows"]

#: The rram-3bit model's own ADC conversion time (the scenarios shorten it to 200 ns).
PRESET_ADC_CONVERSION_S = 1.2e-6
DEFAULT_ITERS = 2
DEFAULT_BARE_CYCLES = {"icarus": 100_000, "verilator": 1_000_000}
PROFILE_FILE = "speed.prof"


class ModelTimer:
    """Wall time spent inside the AFE model's methods (the binding's calls pass through
    unchanged): what the model's numerics cost, apart from the event mechanics."""

    METHODS = ("apply_controls", "stage_controls", "write_dac", "load_dacs", "convert", "pulse")

    def __init__(self, afe: Any):
        self.seconds = 0.0
        for name in self.METHODS:
            setattr(afe, name, self._timed(getattr(afe, name)))

    def _timed(self, method: Any) -> Any:
        # perf_counter only: process_time is a system call (~1 us), and the model is called
        # tens of thousands of times.
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
        return timed


@dataclass
class Stretch:
    """Simulated cycles, wall and CPU seconds accumulated over measured stretches."""

    cycles: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0

    def add(self, cycles: int, wall_s: float, cpu_s: float) -> None:
        self.cycles += cycles
        self.wall_s += wall_s
        self.cpu_s += cpu_s


class _Clockwork:
    """Measures stretches in cycles of the DUT clock and seconds of wall and CPU time."""

    def __init__(self, period_ps: int):
        self.period_ps = period_ps

    def now(self) -> tuple[float, float, float]:
        return get_sim_time("ps"), time.perf_counter(), time.process_time()

    def since(self, start: tuple[float, float, float]) -> tuple[int, float, float]:
        sim_ps, wall, cpu = self.now()
        return round(sim_ps - start[0]) // self.period_ps, wall - start[1], cpu - start[2]


def _config() -> dict[str, Any]:
    return json.loads(os.environ["ANMF_SPEED"])


def _save(name: str, figures: dict[str, Any]) -> None:
    """Add the test's figures to the runner's output file (``out`` in ANMF_SPEED)."""
    path = Path(_config()["out"])
    saved = json.loads(path.read_text()) if path.exists() else {}
    saved[name] = figures
    path.write_text(json.dumps(saved, indent=1))


def _timed_async(method: Callable[..., Awaitable[Any]], clock: _Clockwork,
                 stretch: Stretch) -> Callable[..., Awaitable[Any]]:
    """``method`` with its simulated cycles and wall time added to ``stretch``."""
    async def timed(*args: Any, **kwargs: Any) -> Any:
        mark = clock.now()
        try:
            return await method(*args, **kwargs)
        finally:
            stretch.add(*clock.since(mark))
    return timed


@cocotb.test()
async def bare_rate(dut) -> None:
    """The RTL out of reset, clocked with no Python in the loop: one Timer to the end."""

    config = _config()
    options = json.loads(os.environ[ENV_VAR]) if ENV_VAR in os.environ else DEFAULT_OPTIONS
    period_ps = round(1e12 / float(options["clock_hz"]))
    Clock(dut.clk, period_ps, unit="ps", impl="gpi").start()
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
    cycles, wall_s, cpu_s = clock.since(start)
    assert cycles == config["bare_cycles"], f"{cycles} cycles simulated, {config['bare_cycles']} asked"
    _save("bare", {"cycles": cycles, "wall_s": wall_s, "cpu_s": cpu_s})


@cocotb.test()
async def watched_idle_rate(dut) -> None:
    """The RTL idle with the scenario bench attached (AFE binding, AXI master, irq line; its
    callbacks registered, no Python woken): the cost of watching alone."""
    from anmf.testbench.bench_scenarios import ScenarioBench

    config = _config()
    bench = ScenarioBench(dut)
    await bench.start()
    clock = _Clockwork(bench.afe.period_ps)
    answered = len(bench.binding.conversions) + len(bench.binding.pulses) + bench.binding.dac_writes
    start = clock.now()
    await Timer(config["bare_cycles"] * bench.afe.period_ps, unit="ps")
    cycles, wall_s, cpu_s = clock.since(start)
    assert len(bench.binding.conversions) + len(bench.binding.pulses) + bench.binding.dac_writes \
        == answered, "the idle controller must not reach the AFE"
    _save("watched_idle", {"cycles": cycles, "wall_s": wall_s, "cpu_s": cpu_s})


@cocotb.test()
async def wakeup_cost(dut) -> None:
    """What one Python wake-up costs on top of the RTL: the clock's rising edges, a tenth of
    the bare run's cycles, once each answered by a simulator callback calling a plain
    function (how AFEBinding handles AFE events) and once by a cocotb task awaiting
    ``RisingEdge`` (how a coroutine testbench, the bus master, the driver wait)."""
    import cocotb.simulator

    config = _config()
    options = json.loads(os.environ[ENV_VAR]) if ENV_VAR in os.environ else DEFAULT_OPTIONS
    period_ps = round(1e12 / float(options["clock_hz"]))
    Clock(dut.clk, period_ps, unit="ps", impl="gpi").start()
    cycles = max(1, config["bare_cycles"] // 10)
    clock = _Clockwork(period_ps)
    raw = dut.clk._handle
    seen = [0]
    callback: list[Any] = [None]

    def on_edge() -> None:
        seen[0] += 1
        callback[0] = cocotb.simulator.register_value_change_callback(
            raw, on_edge, cocotb.simulator.RISING)

    await RisingEdge(dut.clk)
    start = clock.now()
    on_edge()
    seen[0] = 0
    await Timer(cycles * period_ps, unit="ps")
    callback[0].deregister()
    callback_figures = clock.since(start)
    assert abs(seen[0] - cycles) <= 1, f"{seen[0]} callbacks in {cycles} cycles"
    await RisingEdge(dut.clk)
    start = clock.now()
    for _ in range(cycles):
        await RisingEdge(dut.clk)
    task_figures = clock.since(start)
    _save("wakeups", {"callback": dict(zip(("cycles", "wall_s", "cpu_s"), callback_figures)),
                      "task": dict(zip(("cycles", "wall_s", "cpu_s"), task_figures))})


@cocotb.test()
async def anls_rate(dut) -> None:
    """host_anls over AXI4-Lite on the RTL against the AFE model, measured in parts."""
    from anmf.host import host_anls
    from anmf.model.nmf import initialize
    from anmf.testbench.bench_scenarios import ScenarioBench, anls_problem

    config = _config()
    bench = ScenarioBench(dut)
    await bench.start()
    o = {**bench.options["anls"], "iters": config["iters"]}
    R = anls_problem(o["problem"], o["size"], o["rank"], bench.options["seed"])
    W0, H0 = initialize(R, o["rank"], "nndsvda", 0)

    clock = _Clockwork(bench.afe.period_ps)
    total, bus, irq = Stretch(), Stretch(), Stretch()
    driver = bench.driver   # without the scoreboards: their float NNLS is not the workload
    driver.bus.read = _timed_async(driver.bus.read, clock, bus)
    driver.bus.write = _timed_async(driver.bus.write, clock, bus)
    driver.irq.wait_high = _timed_async(driver.irq.wait_high, clock, irq)
    model = ModelTimer(bench.afe)
    profiler = cProfile.Profile() if config.get("profile") else None
    if profiler:
        profiler.enable()
    start = clock.now()
    result = await host_anls(driver, R, o["rank"], o["iters"], scale=bench.scale, init=(W0, H0))
    total.add(*clock.since(start))
    if profiler:
        profiler.disable()
        profiler.dump_stats(PROFILE_FILE)
    assert result.stats["solves"] > 0 and result.stats["programs"] > 0, result.stats
    assert not bench.binding.all_violations, bench.binding.all_violations
    cocotb.log.info("ANLS %s: %d cycles in %.2f s; bus %s, irq waits %s, model %.2f s", o,
                    total.cycles, total.wall_s, vars(bus), vars(irq), model.seconds)
    _save("anls", {"cycles": total.cycles, "wall_s": total.wall_s, "cpu_s": total.cpu_s,
                   "bus": vars(bus), "irq": vars(irq),
                   "model_s": model.seconds, "problem": f"{o['problem']} {o['size']}x{o['size']} "
                   f"k={o['rank']}, {o['iters']} iterations", "stats": result.stats,
                   "transactions": dict(driver.transactions),
                   "conversions": len(bench.binding.conversions), "pulses": len(bench.binding.pulses),
                   "adc_conversion_s": bench.afe.conversion_time_s})


# --- runner -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Figures:
    """One row of the table."""

    sim: str
    workload: str
    cycles: int
    wall_s: float
    cpu_s: float | None = None  # None: not measured

    @property
    def rate(self) -> float:
        return self.cycles / self.wall_s if self.wall_s > 0 else float("inf")

    @property
    def cpu_rate(self) -> float | None:
        if self.cpu_s is None:
            return None
        return self.cycles / self.cpu_s if self.cpu_s > 0 else float("inf")


BARE = "bare RTL (final Timer only)"


def format_table(rows: Sequence[Figures]) -> str:
    """sim, workload, cycles, wall s, cycles/s, ratio to the same simulator's bare rate; when
    every row has its CPU time, also CPU s and the ratio of the CPU rates."""
    bare = {row.sim: row for row in rows if row.workload == BARE}
    with_cpu = all(row.cpu_s is not None for row in rows)
    width = max(len(row.workload) for row in rows)
    lines = [f"{'sim':10} {'workload':{width}} {'cycles':>9} {'wall s':>7} {'cycles/s':>9} {'ratio':>6}"
             + (f" {'cpu s':>6} {'ratio (cpu)':>11}" if with_cpu else "")]
    for row in rows:
        base = bare.get(row.sim)
        line = (f"{row.sim:10} {row.workload:{width}} {row.cycles:9d} {row.wall_s:7.2f} "
                f"{row.rate:9.0f} " + (f"{row.rate / base.rate:6.2f}" if base else f"{'-':>6}"))
        if with_cpu:
            assert row.cpu_rate is not None
            cpu_ratio = f"{row.cpu_rate / base.cpu_rate:11.2f}" if base and base.cpu_rate \
                else f"{'-':>11}"
            line += f" {row.cpu_s:6.2f} {cpu_ratio}"
        lines.append(line)
    return "\n".join(lines)


def anls_rows(sim: str, label: str, anls: dict[str, Any]) -> list[Figures]:
    """The ANLS rows: whole run, bus transactions, irq waits, irq waits less model time (its
    CPU share estimated as its wall time times the run's CPU/wall)."""
    irq = anls["irq"]
    cpu_s = anls.get("cpu_s")
    model_cpu_s = None if cpu_s is None else \
        anls["model_s"] * cpu_s / anls["wall_s"] if anls["wall_s"] > 0 else 0.0
    irq_cpu_s = irq.get("cpu_s")
    transactions = anls["transactions"]
    return [
        Figures(sim, f"host ANLS, {label}", anls["cycles"], anls["wall_s"], cpu_s),
        Figures(sim, f"  AXI transactions ({transactions['read']} R + {transactions['write']} W)",
                anls["bus"]["cycles"], anls["bus"]["wall_s"], anls["bus"].get("cpu_s")),
        Figures(sim, "  irq waits: commands run (AFE binding + model)", irq["cycles"], irq["wall_s"],
                irq_cpu_s),
        Figures(sim, "  irq waits less the AFE model's time (estimate)", irq["cycles"],
                irq["wall_s"] - anls["model_s"],
                None if irq_cpu_s is None or model_cpu_s is None else irq_cpu_s - model_cpu_s),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    from anmf.hdl.controller import TOP_MODULE, verilog_text
    from anmf.hdl.params import BuildParams
    from anmf.testbench.bench_scenarios import DEFAULT_OPTIONS, scenario_env
    from anmf.testbench.sim import results_summary
    from anmf.testbench.simulators import SIMULATORS, SimulatorMissing, run_bench

    parser = argparse.ArgumentParser(prog="python -m anmf.testbench.bench_speed",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--sim", default="all", choices=[*SIMULATORS, "all"])
    parser.add_argument("--iters", type=positive_int, default=DEFAULT_ITERS,
                        help=f"ANLS iterations (default {DEFAULT_ITERS})")
    parser.add_argument("--bare-cycles", type=positive_int, default=None,
                        help=f"cycles of the bare and idle runs (default {DEFAULT_BARE_CYCLES})")
    parser.add_argument("--profile", action="store_true", help="cProfile the ANLS, print the top")
    args = parser.parse_args(argv)
    os.environ.pop("PYTEST_CURRENT_TEST", None)  # the runner would act as under pytest
    simulators = list(SIMULATORS) if args.sim == "all" else [args.sim]
    verilog = verilog_text(BuildParams(**DEFAULT_OPTIONS["params"]))
    scenario_adc = DEFAULT_OPTIONS["afe"]["adc"]["conversion_time_s"]
    # (label, scenario options, also the bare and idle tests)
    workloads = ((f"ADC {scenario_adc * 1e9:.0f} ns (the scenario's)", {}, True),
                 (f"ADC {PRESET_ADC_CONVERSION_S * 1e6:.1f} us (rram-3bit's)",
                  {"afe": {**DEFAULT_OPTIONS["afe"], "adc": {"conversion_time_s": PRESET_ADC_CONVERSION_S}}},
                  False))
    rows: list[Figures] = []
    notes: list[str] = []
    for sim in simulators:
        for label, options, with_bare in workloads:
            handle, name = tempfile.mkstemp(prefix=f"bench_speed-{sim}-", suffix=".json")
            os.close(handle)
            out = Path(name)
            out.unlink()
            config = {"iters": args.iters, "out": str(out), "profile": args.profile,
                      "bare_cycles": args.bare_cycles or DEFAULT_BARE_CYCLES[sim]}
            try:
                results = run_bench(sim=sim, verilog=verilog, toplevel=TOP_MODULE,
                                    test_module="anmf.testbench.bench_speed", name="bench_speed",
                                    testcase=None if with_bare else "anls_rate",
                                    extra_env={"ANMF_SPEED": json.dumps(config), **scenario_env(**options)})
            except SimulatorMissing as exc:
                print(f"bench-sim: error: {exc}", file=sys.stderr)
                return 2
            tests, failed = results_summary(results)
            if failed or tests != (4 if with_bare else 1):
                print(f"bench-sim: {failed} of {tests} cocotb tests failed on {sim}: {results}",
                      file=sys.stderr)
                return 1
            figures = json.loads(out.read_text())
            out.unlink()
            if with_bare:
                rows.append(Figures(sim, BARE, figures["bare"]["cycles"], figures["bare"]["wall_s"],
                                    figures["bare"]["cpu_s"]))
                idle = figures["watched_idle"]
                rows.append(Figures(sim, "idle, scenario bench attached (no Python runs)",
                                    idle["cycles"], idle["wall_s"], idle["cpu_s"]))
                bare = rows[-2]
                for kind, waker in (("callback", "simulator callback"), ("task", "cocotb task")):
                    run = figures["wakeups"][kind]
                    rows.append(Figures(sim, f"a {waker} at every rising edge", run["cycles"],
                                        run["wall_s"], run["cpu_s"]))
                    extra_us = [1e6 * (spent - run["cycles"] / rate) / run["cycles"] for spent, rate
                                in ((run["wall_s"], bare.rate), (run["cpu_s"], bare.cpu_rate))]
                    notes.append(f"{sim}: one wake-up by a {waker} costs {extra_us[0]:.1f} us wall, "
                                 f"{extra_us[1]:.1f} us CPU beyond the bare RTL's cycle")
            anls = figures["anls"]
            rows += anls_rows(sim, label, anls)
            host_s = anls["wall_s"] - anls["bus"]["wall_s"] - anls["irq"]["wall_s"]
            notes.append(f"{sim}, {label}: {anls['problem']}; {anls['stats']['solves']} solves, "
                         f"{anls['stats']['programs']} programs ({anls['pulses']} pulses), "
                         f"{anls['conversions']} conversions; host arithmetic between bus accesses "
                         f"{host_s:.2f} s wall; AFE model {anls['model_s']:.2f} s wall")
            if args.profile:
                stream = io.StringIO()
                stats = pstats.Stats(str(results.parent / PROFILE_FILE), stream=stream)
                stats.sort_stats("cumulative").print_stats(30)
                print(f"--- {sim}, {label}: cProfile of the ANLS (cumulative) ---\n{stream.getvalue()}")
    params = DEFAULT_OPTIONS["params"]
    print(f"\nbench-sim {time.strftime('%Y-%m-%d')}: controller rows={params['rows']} cols={params['cols']} "
          f"spare={params['spare']} (the scenarios' build), {DEFAULT_OPTIONS['clock_hz'] / 1e6:.0f} MHz clock")
    print(format_table(rows))
    print("\n".join(notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
