"""The controller top level through its AXI4-Lite port and the AFE stand-in: a solve end to end,
the exact start-to-STATUS cycle count, write-verify, READ_CELL, every refused command, abort in
each phase, watchdog timeouts, soft reset, interrupts; elaboration and Verilog conversion."""
from __future__ import annotations

import gc
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from amaranth.hdl import Const, Fragment, Module, Signal, UnusedElaboratable, Value
from amaranth.sim import Simulator

from afe_standin import AFEStandIn, driven_afe_members
from anmf.cli import main as anmf_main
from anmf.hdl.afe import AFEMode, AFESignature
from anmf.hdl.axi4lite import Response
from anmf.hdl.codes import ErrorCode, Opcode
from anmf.hdl.controller import (REFUSAL_STATUS_DELAY, REGISTER_WRITE_SPACING, STATUS_DELAY, TOP_MODULE,
                                  Controller, at_least, saturate, verilog_text)
from anmf.hdl.params import BuildParams
from anmf.hdl.platforms import ICE40UP5KPlatform, PinnedController
from anmf.hdl.registers import build_register_map
from anmf.hdl.regmap_export import HostRegisterMap, host_constants
from anmf.hdl.solve_sequencer import solve_cycles
from axi_host import AxiLiteHost

SMALL = BuildParams(rows=16, cols=4)     # 6 physical columns
#: Register values every command accepts (tests change one at a time).
VALID_SETUP = {"TIMING": 1, "WATCHDOG": 60, "DAC_SETTLE": 2, "ANALOG_SETTLE": 3, "READ_SETTLE": 2,
               "PROGRAM_TOLERANCE": 4, "PROGRAM_PULSE": 5, "PROGRAM_PULSES": 20}


def mask(indices) -> int:
    return sum(1 << i for i in indices)


@dataclass
class Cycle:
    """What the monitor saw in one clock cycle."""

    start: int
    abort: int
    soft_reset: int
    busy: int
    done: int
    error: int
    irq: int
    mode: int


@dataclass
class Bench:
    """Controller + AFE stand-in + a cycle monitor; host helpers talk over AXI4-Lite only."""

    params: BuildParams = SMALL
    standin: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.dut = Controller(self.params)
        self.regs: HostRegisterMap = host_constants(build_register_map(self.params))
        self.afe = AFEStandIn(self.dut.afe, self.params, **self.standin)
        self.trace: list[Cycle] = []
        self.sim = Simulator(self.dut)
        self.sim.add_clock(1e-8)
        self.sim.add_process(self.afe.process)
        self.sim.add_process(self._monitor)

    async def _monitor(self, ctx) -> None:
        regs = self.dut.registers
        probes = (regs.control.start, regs.control.abort, regs.control.soft_reset, regs.status.busy,
                  regs.status.done, Value.cast(regs.status.error), self.dut.irq, Value.cast(self.dut.afe.mode))
        async for _clk, _rst, *values in ctx.tick().sample(*probes):
            self.trace.append(Cycle(*(int(v) for v in values)))

    def run(self, testbench) -> None:
        self.sim.add_testbench(testbench)
        self.sim.run()

    @property
    def cycle(self) -> int:
        return len(self.trace)

    def strobes(self, name: str) -> list[int]:
        return [i for i, c in enumerate(self.trace) if getattr(c, name)]

    def status_cycles(self, start: int) -> int:
        """Cycles from the start strobe in ``start`` to the first cycle showing done and not busy."""
        for i in range(start + 1, len(self.trace)):
            if self.trace[i].done and not self.trace[i].busy:
                return i - start
        raise AssertionError(f"no done after the start in cycle {start}")

    # --- host side (over the bus) ---------------------------------------------------------------

    def host(self, ctx) -> AxiLiteHost:
        return AxiLiteHost(ctx, self.dut.axil)

    async def write(self, ctx, name: str, value: int | None = None, **fields) -> None:
        reg = getattr(self.regs, name)
        word = value if value is not None else reg.pack(**fields)
        resp = await self.host(ctx).write(reg.offset, word)
        assert resp == Response.OKAY, f"write {name} = 0x{word:X} answered {resp}"

    async def read(self, ctx, name: str) -> dict[str, int]:
        reg = getattr(self.regs, name)
        word, resp = await self.host(ctx).read(reg.offset)
        assert resp == Response.OKAY, f"read {name} answered {resp}"
        return reg.unpack(word)

    async def write_words(self, ctx, window: str, values) -> None:
        info = getattr(self.regs, window)
        for index, value in enumerate(values):
            resp = await self.host(ctx).write(info.address(index), int(value))
            assert resp == Response.OKAY, f"write {window}[{index}] answered {resp}"

    async def read_words(self, ctx, window: str) -> list[int]:
        info = getattr(self.regs, window)
        words = []
        for index in range(info.depth):
            word, resp = await self.host(ctx).read(info.address(index))
            assert resp == Response.OKAY, f"read {window}[{index}] answered {resp}"
            words.append(word)
        return words

    async def setup(self, ctx, **values: int) -> None:
        """Write whole-word register values (ROW_MASK as a vector, COL_ENABLE as a mask)."""
        for name, value in (VALID_SETUP | values).items():
            if name == "ROW_MASK":
                words = [(value >> (32 * w)) & 0xFFFF_FFFF for w in range(self.regs.ROW_MASK.depth)]
                await self.write_words(ctx, "ROW_MASK", words)
            else:
                await self.write(ctx, name, value)

    async def start(self, ctx, opcode: Opcode | int, *, row: int = 0, col: int = 0) -> int:
        """Write COMMAND and CONTROL.start; returns the cycle of the start strobe."""
        await self.write(ctx, "COMMAND", self.regs.COMMAND.pack(opcode=int(getattr(opcode, "value", opcode)),
                                                                row=row, col=col))
        await self.write(ctx, "CONTROL", start=1)
        return self.strobes("start")[-1]

    async def wait_done(self, ctx, max_polls: int = 3000) -> dict[str, int]:
        for _ in range(max_polls):
            status = await self.read(ctx, "STATUS")
            if status["done"] and not status["busy"]:
                return status
        raise AssertionError(f"the command did not finish within {max_polls} STATUS polls")

    async def command(self, ctx, opcode: Opcode | int, **operands) -> tuple[dict[str, int], int]:
        """Run one command to its end; returns (STATUS, start-strobe cycle)."""
        start = await self.start(ctx, opcode, **operands)
        return await self.wait_done(ctx), start

    def assert_safe(self, ctx) -> None:
        assert driven_afe_members(ctx, self.dut.afe, self.params) == {}, "AFE outputs not idle"
        assert self.afe.dacs_at_zero_volts(), f"DACs not at 0 V: {self.afe.dac_output}"
        assert self.afe.violations == [], self.afe.violations


def linear_map(params: BuildParams, rhs, gain, gain_shift: int, row_mask: int, col: int) -> int:
    """The stand-in's noise-free column value, computed independently (clipped to the code range)."""
    rows = np.array([(row_mask >> r) & 1 for r in range(params.rows)], dtype=np.int64)
    value = int((np.asarray(rhs, dtype=np.int64) * rows) @ np.asarray(gain)[:, col]) >> gain_shift
    return min(max(value, 0), 2 ** params.adc_bits - 1)


def status_word(error: ErrorCode, detail: int = 0, *, done: int = 1, busy: int = 0) -> dict[str, int]:
    return {"busy": busy, "done": done, "error": error.value, "error_detail": detail}


# --- a solve end to end ---------------------------------------------------------------------------

SOLVES = {
    # name: (params, opcode, rows, cols, samples, dac_settle, analog_settle, adc latency, adc busy)
    "small-solve-avg4": (SMALL, Opcode.SOLVE, [0, 3, 7, 12], [1, 2, 5], 4, 3, 5, 1, 3),
    "small-mvm": (SMALL, Opcode.MVM, range(16), [0, 4], 1, 1, 1, 2, 2),
    "default-free-avg2": (BuildParams(), Opcode.SOLVE_FREE, range(0, 64, 3), [0, 9], 2, 4, 10, 3, 4),
}


@pytest.mark.parametrize("name", SOLVES)
def test_solve_over_the_bus_gives_the_averaged_linear_map_in_the_documented_cycles(name):
    params, opcode, rows, cols, samples, dac_settle, analog_settle, latency, busy = SOLVES[name]
    rng = np.random.default_rng(21)
    rhs = rng.integers(0, 2 ** params.dac_bits, params.rows)
    gain = rng.integers(0, 4, (params.rows, params.total_cols))
    noise = 3
    bench = Bench(params, dict(gain=gain, gain_shift=4, adc_latency=latency, adc_busy_cycles=busy,
                               noise_amplitude=noise, rng=np.random.default_rng(5)))
    seen = {}

    async def testbench(ctx):
        await bench.write_words(ctx, "RHS", rhs)
        await bench.setup(ctx, ROW_MASK=mask(rows), COL_ENABLE=mask(cols), TIMING=samples,
                          DAC_SETTLE=dac_settle, ANALOG_SETTLE=analog_settle, IRQ_ENABLE=0b001)
        before = await bench.read_words(ctx, "RESULTS")
        status, start = await bench.command(ctx, opcode)
        seen.update(status=status, start=start, before=before, irq=ctx.get(bench.dut.irq),
                    results=await bench.read_words(ctx, "RESULTS"),
                    solves=await bench.read(ctx, "SOLVE_COUNT"),
                    irq_status=await bench.read(ctx, "IRQ_STATUS"))
        bench.assert_safe(ctx)

    bench.run(testbench)
    assert seen["status"] == status_word(ErrorCode.NONE)
    expected_cycles = solve_cycles(rows=len(rows), cols=len(cols), avg_log2=samples.bit_length() - 1,
                                   dac_settle=dac_settle, analog_settle=analog_settle,
                                   adc_cycles=latency + busy) + STATUS_DELAY
    assert bench.status_cycles(seen["start"]) == expected_cycles, \
        f"start to STATUS.done: {bench.status_cycles(seen['start'])} cycles, documented {expected_cycles}"

    results = [bench.regs.RESULTS.unpack(word) for word in seen["results"]]
    conversions = bench.afe.conversions
    assert [c.mux for c in conversions] == [c for c in cols for _ in range(samples)]
    assert {c.mode for c in conversions} == {AFEMode[opcode.name].value}
    half = samples // 2
    for col in cols:
        codes = [c.code for c in conversions if c.mux == col]
        assert results[col]["code"] == (sum(codes) + half) // samples, f"column {col}: documented rounding"
        clean = linear_map(params, rhs, gain, 4, mask(rows), col)
        assert abs(results[col]["code"] - clean) <= noise, f"column {col}: {results[col]} vs map {clean}"
        assert results[col]["over_range"] == int(any(c.over_range for c in conversions if c.mux == col))
    untouched = [c for c in range(params.total_cols) if c not in cols]
    assert [seen["results"][c] for c in untouched] == [seen["before"][c] for c in untouched]
    assert seen["solves"] == {"count": 1}
    assert seen["irq_status"]["done"] == 1 and seen["irq_status"]["error"] == 0 and seen["irq"] == 1
    # DAC load of the enabled rows' RHS codes, then the zero-volt code back into them
    writes = [(row, code) for _, row, code in bench.afe.dac_writes]
    assert writes == [(r, int(rhs[r])) for r in rows] + [(r, params.dac_zero_code) for r in rows]


def test_nop_completes_in_the_next_cycle_and_touches_nothing():
    bench = Bench()
    seen = []

    async def testbench(ctx):
        status, start = await bench.command(ctx, Opcode.NOP)
        seen.extend([status, start])

    bench.run(testbench)
    status, start = seen
    assert status == status_word(ErrorCode.NONE)
    assert bench.status_cycles(start) == REFUSAL_STATUS_DELAY
    assert bench.afe.dac_writes == [] and bench.afe.conversions == []



def test_register_writes_are_spaced_so_the_registered_command_checks_see_the_current_registers():
    # The command checks are registered (hdl/controller.py): a start must come at least 2 cycles
    # after the last register write. The fastest master (AW, W, B ready held high) cannot do
    # better than REGISTER_WRITE_SPACING; and a SOLVE whose ROW_MASK was cleared, then set,
    # then COMMAND and CONTROL.start written back to back is accepted, one with the mask
    # cleared just before is refused.
    bench = Bench(SMALL, dict(gain=np.ones((16, 6), dtype=int), gain_shift=4))
    strobes: list[int] = []
    seen = {}
    bus = bench.dut.registers.register_file.bus

    async def watch(ctx):
        cycle = 0
        async for _clk, _rst, w_stb in ctx.tick().sample(bus.w_stb):
            if w_stb:
                strobes.append(cycle)
            cycle += 1

    async def testbench(ctx):
        axil = bench.dut.axil
        ctx.set(axil.awaddr, bench.regs.IRQ_ENABLE.offset)
        ctx.set(axil.wdata, 0)
        ctx.set(axil.wstrb, 0xF)
        ctx.set(axil.bready, 1)
        ctx.set(axil.awvalid, 1)
        ctx.set(axil.wvalid, 1)
        await ctx.tick().repeat(40)
        ctx.set(axil.awvalid, 0)
        ctx.set(axil.wvalid, 0)
        await ctx.tick().repeat(4)
        await bench.setup(ctx, COL_ENABLE=mask(range(4)))
        await bench.write_words(ctx, "ROW_MASK", [0])
        await bench.write_words(ctx, "ROW_MASK", [0xFFFF])
        seen["accepted"], _ = await bench.command(ctx, Opcode.SOLVE)
        await bench.write_words(ctx, "ROW_MASK", [0])
        seen["refused"], _ = await bench.command(ctx, Opcode.SOLVE)

    bench.sim.add_process(watch)
    bench.run(testbench)
    gaps = [b - a for a, b in zip(strobes, strobes[1:])]
    assert len(strobes) > 5 and min(gaps) == REGISTER_WRITE_SPACING >= 2, gaps
    assert seen["accepted"] == status_word(ErrorCode.NONE)
    assert seen["refused"] == status_word(ErrorCode.BAD_DIMENSION, bench.regs.ROW_MASK.offset)

WITHOUT_NMF = BuildParams(rows=16, cols=4, spare=1, counter_bits=16, run_nmf=False)   # the iCE40's build


def test_a_build_without_run_nmf_refuses_it_unmaps_its_registers_and_still_solves():
    bench = Bench(WITHOUT_NMF, dict(gain=np.ones((16, 5), dtype=int), gain_shift=4))
    full = host_constants(build_register_map(BuildParams(rows=16, cols=4, spare=1)))
    seen = {}

    async def testbench(ctx):
        seen["refused"], seen["start"] = await bench.command(ctx, Opcode.RUN_NMF)
        seen["nmf_size"] = await bench.host(ctx).read(full.NMF_SIZE.offset)
        seen["nmf_w"] = await bench.host(ctx).write(full.NMF_W.address(0), 5)
        await bench.setup(ctx, ROW_MASK=mask(range(16)), COL_ENABLE=mask(range(4)))
        seen["solve"], _ = await bench.command(ctx, Opcode.SOLVE)
        seen["count"] = await bench.read(ctx, "SOLVE_COUNT")

    bench.run(testbench)
    assert seen["refused"] == status_word(ErrorCode.UNKNOWN_OPCODE, Opcode.RUN_NMF.value)
    assert seen["nmf_size"] == (0, Response.SLVERR) and seen["nmf_w"] == Response.SLVERR
    assert seen["solve"] == status_word(ErrorCode.NONE) and seen["count"] == {"count": 1}
    assert bench.dut.anls is None
    names = {entry.name for entry in build_register_map(WITHOUT_NMF)}
    assert not any(name.startswith("NMF_") for name in names)
    assert {"SOLVE_COUNT", "TARGET", "FAULT_MAP", "RESULTS"} <= names
    counter = build_register_map(WITHOUT_NMF)["SOLVE_COUNT"].item.fields["count"]
    assert counter.field.width == 16 and "saturates at 0xFFFF." in counter.field.doc
    assert build_register_map(WITHOUT_NMF).params["run_nmf"] == 0


def test_build_options_run_nmf_and_counter_bits_are_validated():
    for value, text in ((2, "2"), ("yes", "'yes'"), (None, "None")):
        with pytest.raises(ValueError) as info:
            BuildParams(run_nmf=value)
        assert str(info.value) == f"run_nmf must be True or False (or 1 or 0), got {text}"
    with pytest.raises(ValueError) as info:
        BuildParams(counter_bits=40)
    assert str(info.value) == "counter_bits must be an integer from 8 to 32, got 40"
    assert BuildParams(run_nmf=0).run_nmf is False and BuildParams().counter_bits == 32

# --- write-verify and READ_CELL -----------------------------------------------------------------------

def test_program_matrix_converges_records_faults_and_counts_over_the_bus():
    rng = np.random.default_rng(8)
    p = SMALL
    cells = rng.integers(0, 1024, (p.rows, p.total_cols))
    targets = rng.integers(200, 800, (p.rows, p.total_cols))
    rows, cols, stuck = [1, 6, 9], [0, 2, 5], (6, 2)
    cells[stuck] = 0
    bench = Bench(p, dict(cells=cells.copy(), stuck=frozenset({stuck}), pulse_divisor=2))
    fault_preload = [1 << 5] * p.rows   # column 5 marked bad everywhere by the host
    seen = {}

    async def testbench(ctx):
        await bench.write_words(ctx, "TARGET", targets.ravel())
        await bench.write_words(ctx, "FAULT_MAP", fault_preload)
        await bench.setup(ctx, ROW_MASK=mask(rows), COL_ENABLE=mask(cols), PROGRAM_TOLERANCE=6,
                          PROGRAM_PULSES=40, TIMING=2, IRQ_ENABLE=0b010)
        await bench.write(ctx, "PROGRAM_AMPLITUDE", start=10, step=10)
        await bench.write(ctx, "PROGRAM_AMPLITUDE_MAX", max=120)
        status, _ = await bench.command(ctx, Opcode.PROGRAM_MATRIX)
        seen.update(status=status, irq=ctx.get(bench.dut.irq),
                    faults=await bench.read_words(ctx, "FAULT_MAP"),
                    pulses=await bench.read(ctx, "PULSE_COUNT"),
                    failed=await bench.read(ctx, "FAILED_CELL_COUNT"),
                    solves=await bench.read(ctx, "SOLVE_COUNT"))
        bench.assert_safe(ctx)

    bench.run(testbench)
    afe = bench.afe
    assert seen["status"] == status_word(ErrorCode.CELLS_FAILED, 1)
    assert seen["irq"] == 1, "IRQ_ENABLE.error with an error outcome raises the line"
    visited = list(dict.fromkeys(c.cell for c in afe.conversions))
    assert visited == [(r, c) for r in rows for c in cols]
    for r, c in visited:
        if (r, c) != stuck:
            assert abs(int(afe.cells[r, c]) - int(targets[r, c])) <= 6, f"cell {(r, c)} not programmed"
    expected_faults = []
    for r in range(p.rows):
        word = fault_preload[r]
        if r in rows:
            for c in cols:   # every visited cell's bit is rewritten with its outcome
                word = (word & ~(1 << c)) | (int((r, c) == stuck) << c)
        expected_faults.append(word)
    assert seen["faults"] == expected_faults
    assert seen["pulses"] == {"count": len(afe.pulses)} and len(afe.pulses) > len(visited)
    assert seen["failed"] == {"count": 1} and seen["solves"] == {"count": 0}


def test_program_cell_and_read_cell_put_the_reading_in_results_at_the_column():
    p = SMALL
    cells = np.full((p.rows, p.total_cols), 300)
    targets = np.zeros((p.rows, p.total_cols), dtype=int)
    targets[11, 4] = 650
    bench = Bench(p, dict(cells=cells.copy(), pulse_divisor=1))
    seen = {}

    async def testbench(ctx):
        await bench.write_words(ctx, "TARGET", targets.ravel())
        await bench.setup(ctx, PROGRAM_TOLERANCE=3)
        # the stand-in moves a cell by amplitude / pulse_divisor codes: a ramp from 32 by 8
        await bench.write(ctx, "PROGRAM_AMPLITUDE", start=32, step=8)
        await bench.write(ctx, "PROGRAM_AMPLITUDE_MAX", max=255)
        status, _ = await bench.command(ctx, Opcode.PROGRAM_CELL, row=11, col=4)
        seen["program"] = status
        seen["results_after_program"] = await bench.read_words(ctx, "RESULTS")
        await bench.setup(ctx, TIMING=4)
        status, start = await bench.command(ctx, Opcode.READ_CELL, row=11, col=4)
        seen.update(read=status, start=start, results=await bench.read_words(ctx, "RESULTS"))
        bench.assert_safe(ctx)

    bench.run(testbench)
    assert seen["program"] == status_word(ErrorCode.NONE)
    assert seen["results_after_program"] == [0] * p.total_cols, "PROGRAM_CELL leaves RESULTS alone"
    assert abs(int(bench.afe.cells[11, 4]) - 650) <= 3
    assert seen["read"] == status_word(ErrorCode.NONE)
    reading = bench.regs.RESULTS.unpack(seen["results"][4])
    assert reading == {"code": int(bench.afe.cells[11, 4]), "over_range": 0}
    assert [w for i, w in enumerate(seen["results"]) if i != 4] == [0] * (p.total_cols - 1)
    reads = [c for c in bench.afe.conversions if c.cycle > seen["start"]]
    assert len(reads) == 4 and {c.cell for c in reads} == {(11, 4)}


def test_over_range_samples_count_and_interrupt():
    # READ_CELL over 4 samples, two of them clipped; then a solve with one clipped sample
    script = [(1023, True), (1000, False), (1023, True), (990, False), (5, False), (1023, True)]
    bench = Bench(SMALL, dict(script=script))
    seen = {}

    async def testbench(ctx):
        await bench.setup(ctx, TIMING=4, IRQ_ENABLE=0b100)
        await bench.command(ctx, Opcode.READ_CELL, row=2, col=3)
        seen.update(irq=ctx.get(bench.dut.irq), count=await bench.read(ctx, "OVER_RANGE_COUNT"),
                    result=await bench.read_words(ctx, "RESULTS"))
        await bench.write(ctx, "IRQ_STATUS", over_range=1)
        seen["irq_cleared"] = ctx.get(bench.dut.irq)
        await bench.setup(ctx, TIMING=1, ROW_MASK=1, COL_ENABLE=0b11)
        status, _ = await bench.command(ctx, Opcode.SOLVE)
        seen.update(solve=status, count_after=await bench.read(ctx, "OVER_RANGE_COUNT"),
                    irq_after=ctx.get(bench.dut.irq), results_after=await bench.read_words(ctx, "RESULTS"))

    bench.run(testbench)
    assert seen["count"] == {"count": 2}
    assert bench.regs.RESULTS.unpack(seen["result"][3]) == {"code": (1023 + 1000 + 1023 + 990 + 2) >> 2,
                                                            "over_range": 1}
    assert (seen["irq"], seen["irq_cleared"]) == (1, 0)
    assert seen["solve"] == status_word(ErrorCode.NONE)
    assert seen["count_after"] == {"count": 3} and seen["irq_after"] == 1
    assert [bench.regs.RESULTS.unpack(w) for w in seen["results_after"][:2]] == \
        [{"code": 5, "over_range": 0}, {"code": 1023, "over_range": 1}]


# --- refused commands ---------------------------------------------------------------------------------

REGS = host_constants(build_register_map(SMALL))
BAD_COMMANDS = {
    # name: (register changes, opcode, row, col, error, detail)
    "opcode-16": ({}, 16, 0, 0, ErrorCode.UNKNOWN_OPCODE, 16),
    "opcode-255": ({}, 255, 0, 0, ErrorCode.UNKNOWN_OPCODE, 255),
    "read-row-past-array": ({}, Opcode.READ_CELL, 16, 0, ErrorCode.BAD_DIMENSION, REGS.COMMAND.offset),
    "read-row-4095": ({}, Opcode.READ_CELL, 4095, 0, ErrorCode.BAD_DIMENSION, REGS.COMMAND.offset),
    "program-col-past-array": ({}, Opcode.PROGRAM_CELL, 0, 6, ErrorCode.BAD_DIMENSION, REGS.COMMAND.offset),
    "program-col-4095": ({}, Opcode.PROGRAM_CELL, 0, 4095, ErrorCode.BAD_DIMENSION, REGS.COMMAND.offset),
    "solve-no-rows": ({"ROW_MASK": 0}, Opcode.SOLVE, 0, 0, ErrorCode.BAD_DIMENSION, REGS.ROW_MASK.offset),
    "mvm-no-cols": ({"COL_ENABLE": 0}, Opcode.MVM, 0, 0, ErrorCode.BAD_DIMENSION, REGS.COL_ENABLE.offset),
    "matrix-no-cols": ({"COL_ENABLE": 0}, Opcode.PROGRAM_MATRIX, 0, 0, ErrorCode.BAD_DIMENSION,
                       REGS.COL_ENABLE.offset),
    "samples-0": ({"TIMING": 0}, Opcode.SOLVE, 0, 0, ErrorCode.BAD_AVERAGING, REGS.TIMING.offset),
    "samples-3": ({"TIMING": 3}, Opcode.READ_CELL, 0, 0, ErrorCode.BAD_AVERAGING, REGS.TIMING.offset),
    "samples-512": ({"TIMING": 512}, Opcode.SOLVE_FREE, 0, 0, ErrorCode.BAD_AVERAGING, REGS.TIMING.offset),
    "samples-2**31": ({"TIMING": 1 << 31}, Opcode.PROGRAM_CELL, 0, 0, ErrorCode.BAD_AVERAGING,
                      REGS.TIMING.offset),
    "samples-2**32-1": ({"TIMING": 0xFFFF_FFFF}, Opcode.SOLVE, 0, 0, ErrorCode.BAD_AVERAGING, REGS.TIMING.offset),
    "tolerance-0": ({"PROGRAM_TOLERANCE": 0}, Opcode.PROGRAM_CELL, 0, 0, ErrorCode.BAD_TOLERANCE,
                    REGS.PROGRAM_TOLERANCE.offset),
    "tolerance-full-range": ({"PROGRAM_TOLERANCE": 1024}, Opcode.PROGRAM_MATRIX, 0, 0, ErrorCode.BAD_TOLERANCE,
                             REGS.PROGRAM_TOLERANCE.offset),
    "watchdog-0": ({"WATCHDOG": 0}, Opcode.READ_CELL, 0, 0, ErrorCode.BAD_TIMING, REGS.WATCHDOG.offset),
    "dac-settle-0": ({"DAC_SETTLE": 0}, Opcode.SOLVE, 0, 0, ErrorCode.BAD_TIMING, REGS.DAC_SETTLE.offset),
    "analog-settle-0": ({"ANALOG_SETTLE": 0}, Opcode.MVM, 0, 0, ErrorCode.BAD_TIMING, REGS.ANALOG_SETTLE.offset),
    "read-settle-0": ({"READ_SETTLE": 0}, Opcode.READ_CELL, 0, 0, ErrorCode.BAD_TIMING, REGS.READ_SETTLE.offset),
    "matrix-read-settle-0": ({"READ_SETTLE": 0}, Opcode.PROGRAM_MATRIX, 0, 0, ErrorCode.BAD_TIMING,
                             REGS.READ_SETTLE.offset),
    "pulse-width-0": ({"PROGRAM_PULSE": 0}, Opcode.PROGRAM_CELL, 0, 0, ErrorCode.BAD_TIMING,
                      REGS.PROGRAM_PULSE.offset),
    "order-dimension-first": ({"ROW_MASK": 0, "TIMING": 0, "WATCHDOG": 0}, Opcode.SOLVE, 0, 0,
                              ErrorCode.BAD_DIMENSION, REGS.ROW_MASK.offset),
    "order-averaging-before-timing": ({"TIMING": 6, "WATCHDOG": 0}, Opcode.READ_CELL, 0, 0,
                                      ErrorCode.BAD_AVERAGING, REGS.TIMING.offset),
}

#: Registers and windows a refused command must leave as they were.
UNCHANGED_REGISTERS = ("COMMAND", "COL_ENABLE", "IRQ_ENABLE", "TIMING", "DAC_SETTLE", "ANALOG_SETTLE",
                       "WATCHDOG", "READ_SETTLE", "PROGRAM_TOLERANCE", "PROGRAM_PULSES", "PROGRAM_AMPLITUDE",
                       "PROGRAM_AMPLITUDE_MAX", "PROGRAM_PULSE", "SOLVE_COUNT", "PULSE_COUNT",
                       "OVER_RANGE_COUNT", "FAILED_CELL_COUNT")


async def snapshot(bench: Bench, ctx) -> dict[str, Any]:
    state: dict[str, Any] = {name: await bench.read(ctx, name) for name in UNCHANGED_REGISTERS}
    for window in ("RESULTS", "FAULT_MAP", "ROW_MASK"):
        state[window] = await bench.read_words(ctx, window)
    afe = bench.afe
    state["afe"] = (len(afe.dac_writes), len(afe.ldac_cycles), len(afe.conversions), len(afe.pulses),
                    len(afe.mode_changes))
    return state


@pytest.mark.parametrize("name", BAD_COMMANDS)
def test_refused_command_sets_error_and_detail_and_changes_nothing_else(name):
    changes, opcode, row, col, error, detail = BAD_COMMANDS[name]
    p = SMALL
    cells = np.full((p.rows, p.total_cols), 100)
    bench = Bench(p, dict(cells=cells, gain=np.ones((p.rows, p.total_cols), dtype=np.int64), prog_latency=2))
    seen = {}

    async def testbench(ctx):
        # Leave something behind to be kept: a result, a counted solve, a pulse and a fault bit.
        await bench.setup(ctx, ROW_MASK=0b11, COL_ENABLE=0b10, IRQ_ENABLE=0b111)
        await bench.command(ctx, Opcode.SOLVE)
        await bench.setup(ctx, PROGRAM_PULSES=1)
        first, _ = await bench.command(ctx, Opcode.PROGRAM_CELL, row=3, col=1)
        await bench.write(ctx, "IRQ_STATUS", 0b111)
        await bench.setup(ctx, **changes)
        await bench.write(ctx, "COMMAND", REGS.COMMAND.pack(opcode=getattr(opcode, "value", opcode), row=row, col=col))
        before = await snapshot(bench, ctx)
        await bench.write(ctx, "CONTROL", start=1)
        seen.update(first=first, start=bench.strobes("start")[-1], status=await bench.read(ctx, "STATUS"),
                    irq_status=await bench.read(ctx, "IRQ_STATUS"), before=before,
                    after=await snapshot(bench, ctx))

    bench.run(testbench)
    assert seen["first"]["error"] == ErrorCode.CELLS_FAILED.value, "the set-up left a fault bit and pulses"
    assert seen["status"] == status_word(error, detail)
    assert bench.status_cycles(seen["start"]) == REFUSAL_STATUS_DELAY
    assert seen["irq_status"] == {"done": 1, "error": 1, "over_range": 0}
    assert seen["after"] == seen["before"], "a refused command changed registers, buffers or the AFE"


def test_start_while_busy_is_refused_and_the_running_command_goes_on():
    p = SMALL
    gain = np.ones((p.rows, p.total_cols), dtype=np.int64)
    bench = Bench(p, dict(gain=gain, adc_busy_cycles=20))
    rhs = np.arange(p.rows) + 10
    seen = {}

    async def testbench(ctx):
        await bench.write_words(ctx, "RHS", rhs)
        await bench.setup(ctx, ROW_MASK=0b111, COL_ENABLE=0b1, DAC_SETTLE=20, IRQ_ENABLE=0b010)
        start = await bench.start(ctx, Opcode.SOLVE)
        await bench.write(ctx, "COMMAND", REGS.COMMAND.pack(opcode="READ_CELL", row=1, col=1))
        await bench.write(ctx, "CONTROL", start=1)
        seen["refused"] = await bench.read(ctx, "STATUS")
        seen["irq_refused"] = (await bench.read(ctx, "IRQ_STATUS"), ctx.get(bench.dut.irq))
        seen["final"] = await bench.wait_done(ctx)
        seen.update(start=start, results=await bench.read_words(ctx, "RESULTS"),
                    solves=await bench.read(ctx, "SOLVE_COUNT"))

    bench.run(testbench)
    assert seen["refused"] == status_word(ErrorCode.BUSY, Opcode.READ_CELL.value, done=0, busy=1)
    assert seen["irq_refused"] == ({"done": 0, "error": 1, "over_range": 0}, 1)
    assert seen["final"] == status_word(ErrorCode.NONE)
    assert bench.status_cycles(seen["start"]) == solve_cycles(
        rows=3, cols=1, avg_log2=0, dac_settle=20, analog_settle=3, adc_cycles=21) + STATUS_DELAY
    assert bench.regs.RESULTS.unpack(seen["results"][0])["code"] == int(rhs[:3].sum())
    assert seen["solves"] == {"count": 1}
    assert {c.mode for c in bench.afe.conversions} == {AFEMode.SOLVE.value}, "the READ_CELL never ran"


def test_the_busy_flag_follows_the_blocks_running_state_in_every_cycle_of_random_traffic():
    """The BUSY check and STATUS.busy read a flip-flop (set by an accepted start, cleared when
    the outcome reaches STATUS) instead of the OR of the blocks' states: it is that OR of this
    cycle or of the cycle before (the finishing cycle's outcome is on its way to STATUS), and
    STATUS.done rises in the cycle it falls unless a soft reset forgot the command. Random
    commands of every opcode, starts while busy, aborts and soft resets, every cycle."""
    p = SMALL
    rng = np.random.default_rng(7)
    bench = Bench(p, dict(gain=np.ones((p.rows, p.total_cols), dtype=np.int64), adc_busy_cycles=3,
                          prog_latency=4))
    mismatches: list[tuple[int, int, int, int]] = []
    silent_ends: list[int] = []
    busy_cycles = []

    async def compare(ctx) -> None:
        dut = bench.dut
        probes = (dut.running_flag, dut.registers.status.busy, dut.blocks_running, dut.registers.status.done,
                  dut.registers.control.soft_reset)
        was_running = was_busy = 0
        soft_reset_since_start = False
        async for _clk, _rst, flag, busy, running, done, soft_reset in ctx.tick().sample(*probes):
            if not flag == busy == (running | was_running):
                mismatches.append((bench.cycle, int(flag), int(busy), int(running)))
            if was_busy and not busy and not done and not soft_reset_since_start:
                silent_ends.append(bench.cycle)
            if busy and not was_busy:
                soft_reset_since_start = False
            soft_reset_since_start |= bool(soft_reset)
            was_running, was_busy = int(running), int(busy)
            busy_cycles.append(int(busy))

    opcodes = [op.value for op in Opcode] + [15]
    regs = bench.regs
    refusals = set()
    outcomes: dict[int, set[int]] = {}

    async def testbench(ctx):
        await bench.write_words(ctx, "RHS", rng.integers(0, 100, p.rows))
        await bench.write_words(ctx, "TARGET", rng.integers(300, 700, p.rows * p.total_cols))
        await bench.setup(ctx, ROW_MASK=0b1011, COL_ENABLE=0b11, CAL_SETTLE=2, NMF_ITERATIONS=1,
                          NMF_SIZE=regs.NMF_SIZE.pack(m=2, n=2, k=1), NMF_WINDOW_SPAN=500,
                          PROGRAM_PULSES=3)
        for opcode in rng.permutation(opcodes * 4):
            opcode = int(opcode)
            await bench.start(ctx, opcode)
            action = rng.integers(0, 4)
            for _ in range(int(rng.integers(0, 6))):
                await ctx.tick()
            if action == 0:
                await bench.write(ctx, "CONTROL", start=1)       # refused BUSY if still running
                refusals.add((await bench.read(ctx, "STATUS"))["error"])
            elif action == 1:
                await bench.write(ctx, "CONTROL", abort=1)
            elif action == 2:
                await bench.write(ctx, "CONTROL", soft_reset=1)
            if action != 2:
                outcomes.setdefault(opcode, set()).add((await bench.wait_done(ctx))["error"])
            for _ in range(400):
                if not (await bench.read(ctx, "STATUS"))["busy"]:
                    break

    bench.sim.add_process(compare)
    bench.run(testbench)
    assert mismatches == [], f"flag, STATUS.busy, blocks' OR (now or before) differ at (cycle, flag, busy, " \
        f"blocks): {mismatches[:5]}"
    assert silent_ends == [], f"STATUS.busy fell without STATUS.done in cycles {silent_ends[:5]}"
    assert sum(busy_cycles) > 200 and busy_cycles.count(0) > 200, "the traffic ran commands"
    assert ErrorCode.BUSY.value in refusals, "a start while busy was tried"
    refused = {ErrorCode.UNKNOWN_OPCODE.value, ErrorCode.BUSY.value, ErrorCode.BAD_DIMENSION.value,
               ErrorCode.BAD_AVERAGING.value, ErrorCode.BAD_TOLERANCE.value, ErrorCode.BAD_TIMING.value,
               ErrorCode.BAD_WINDOW.value}
    ran = {opcode for opcode, errors in outcomes.items() if errors - refused}
    assert ran == {op.value for op in Opcode}, f"opcodes that ran: {sorted(ran)}"


# --- abort, timeouts, soft reset ----------------------------------------------------------------------

ABORT_SOLVE = dict(rows=16, cols=2, samples=2, dac_settle=30, analog_settle=30, latency=1, busy=8)


def solve_phases(rows, cols, samples, dac_settle, analog_settle, latency, busy) -> dict[str, range]:
    """Cycles of each sequencer phase after a start in cycle 0 (docs/solve-timing.md)."""
    convert = cols * samples * (latency + busy + 1)
    load_end = rows + 1
    phases = {"Load-DAC": range(1, load_end + 1)}
    settle_dac = range(load_end + 2, load_end + 2 + dac_settle)
    settle_analog = range(settle_dac.stop, settle_dac.stop + analog_settle)
    converting = range(settle_analog.stop, settle_analog.stop + convert)
    phases.update({"Settle-DAC": settle_dac, "Settle-Analog": settle_analog, "Convert": converting,
                   "Zero-DAC": range(converting.stop, converting.stop + rows)})
    return phases


PHASES = solve_phases(**ABORT_SOLVE)
# Abort writes aimed at the middle of each phase; the test checks where the strobe landed.
ABORT_TARGETS = {
    "Load-DAC": ("solve", PHASES["Load-DAC"]),
    "Settle-DAC": ("solve", PHASES["Settle-DAC"]),
    "Settle-Analog": ("solve", PHASES["Settle-Analog"]),
    "Convert": ("solve", PHASES["Convert"]),
    "Zero-DAC": ("solve", PHASES["Zero-DAC"]),
    "cell-read": ("program", AFEMode.READ_CELL),
    "pulse": ("program", AFEMode.PROGRAM),
}


@pytest.mark.parametrize("phase", ABORT_TARGETS)
def test_abort_in_each_phase_exits_safely_and_the_next_command_runs(phase):
    kind, where = ABORT_TARGETS[phase]
    p = SMALL
    a = ABORT_SOLVE
    cells = np.full((p.rows, p.total_cols), 100)
    targets = np.full((p.rows, p.total_cols), 900)
    bench = Bench(p, dict(gain=np.ones((p.rows, p.total_cols), dtype=np.int64), cells=cells,
                          adc_latency=a["latency"], adc_busy_cycles=a["busy"], prog_latency=30))
    seen = {}

    async def testbench(ctx):
        await bench.write_words(ctx, "TARGET", targets.ravel())
        await bench.setup(ctx, ROW_MASK=mask(range(a["rows"])), COL_ENABLE=mask(range(a["cols"])),
                          TIMING=a["samples"], DAC_SETTLE=a["dac_settle"], ANALOG_SETTLE=a["analog_settle"],
                          READ_SETTLE=40, WATCHDOG=100, IRQ_ENABLE=0)
        if kind == "solve":
            start = await bench.start(ctx, Opcode.SOLVE)
            aim = start + (where.start + where.stop) // 2 - 2      # the write lands 2 cycles later
            while bench.cycle < aim:
                await ctx.tick()
        else:
            start = await bench.start(ctx, Opcode.PROGRAM_CELL, row=5, col=2)
            delay = 20 if where == AFEMode.READ_CELL else 0
            while (where == AFEMode.PROGRAM and not bench.afe.pulses) or bench.cycle < start + delay:
                await ctx.tick()
        await bench.write(ctx, "CONTROL", abort=1)
        seen["aborted"] = await bench.wait_done(ctx)
        seen["abort"] = bench.strobes("abort")[-1]
        seen["start"] = start
        bench.assert_safe(ctx)
        status, _ = await bench.command(ctx, Opcode.READ_CELL, row=0, col=0)
        seen["next"] = status
        bench.assert_safe(ctx)

    bench.run(testbench)
    start, abort = seen["start"], seen["abort"]
    if kind == "solve":
        assert abort - start in where, f"abort landed in cycle {abort - start}, not in {phase} {where}"
    else:
        assert bench.trace[abort].mode == where.value, f"abort landed in mode {bench.trace[abort].mode}"
    assert seen["aborted"] == status_word(ErrorCode.ABORTED)
    assert bench.status_cycles(start) == abort - start + p.rows + 2 + STATUS_DELAY
    assert seen["next"] == status_word(ErrorCode.NONE)
    safe_exit = [code for cycle, _, code in bench.afe.dac_writes if abort < cycle <= abort + p.rows]
    assert safe_exit == [p.dac_zero_code] * p.rows, "the safe exit writes 0 V into every DAC"


def test_abort_while_idle_changes_nothing():
    bench = Bench()
    seen = []

    async def testbench(ctx):
        await bench.setup(ctx, TIMING=0)
        await bench.command(ctx, Opcode.SOLVE)
        before = await bench.read(ctx, "STATUS")
        await bench.write(ctx, "CONTROL", abort=1)
        for _ in range(SMALL.rows + 4):
            await ctx.tick()
        seen.extend([before, await bench.read(ctx, "STATUS")])

    bench.run(testbench)
    assert seen[0] == seen[1] == status_word(ErrorCode.BAD_AVERAGING, REGS.TIMING.offset)
    assert bench.afe.dac_writes == []


TIMEOUTS = {
    # name: (opcode, row, col, stand-in fault, error, detail)
    "solve-adc-never-busy": (Opcode.SOLVE, 0, 0, dict(adc_fault="never_busy"), ErrorCode.ADC_TIMEOUT, 2),
    "read-adc-stuck-busy": (Opcode.READ_CELL, 9, 5, dict(adc_fault="stuck_busy"), ErrorCode.ADC_TIMEOUT,
                            9 * 6 + 5),
    "program-no-done": (Opcode.PROGRAM_CELL, 13, 1, dict(prog_fault="never_done"), ErrorCode.PROGRAM_TIMEOUT,
                        13 * 6 + 1),
}


@pytest.mark.parametrize("name", TIMEOUTS)
def test_watchdog_timeout_reports_the_column_or_cell_and_recovers(name):
    opcode, row, col, fault, error, detail = TIMEOUTS[name]
    p = SMALL
    limit = 25
    targets = np.full((p.rows, p.total_cols), 700)
    bench = Bench(p, dict(cells=np.full((p.rows, p.total_cols), 100), **fault))
    seen = {}

    async def testbench(ctx):
        await bench.write_words(ctx, "TARGET", targets.ravel())
        await bench.setup(ctx, ROW_MASK=0b1001, COL_ENABLE=0b1100, WATCHDOG=limit)
        status, start = await bench.command(ctx, opcode, row=row, col=col)
        seen.update(status=status, start=start)
        bench.assert_safe(ctx)

    bench.run(testbench)
    assert seen["status"] == status_word(error, detail)
    strobe = bench.afe.pulses[-1].cycle if error == ErrorCode.PROGRAM_TIMEOUT else bench.afe.conversions[-1].cycle
    # the watchdog gives up `limit` cycles after the strobe; then the safe exit and STATUS
    assert bench.status_cycles(seen["start"]) == strobe - seen["start"] + limit + p.rows + 2 + STATUS_DELAY


def test_soft_reset_while_idle_and_while_running():
    p = SMALL
    bench = Bench(p, dict(gain=np.ones((p.rows, p.total_cols), dtype=np.int64), adc_busy_cycles=30))
    seen = {}

    async def testbench(ctx):
        await bench.write_words(ctx, "RHS", [2000 % 1024] * p.rows)   # a sum over range: counted
        await bench.setup(ctx, ROW_MASK=mask(range(16)), COL_ENABLE=0b11, WATCHDOG=100, IRQ_ENABLE=0b111)
        await bench.command(ctx, Opcode.SOLVE)
        await bench.setup(ctx, TIMING=0)
        await bench.command(ctx, Opcode.SOLVE)             # refused: STATUS shows an error
        seen["before"] = {name: await bench.read(ctx, name)
                          for name in ("STATUS", "SOLVE_COUNT", "OVER_RANGE_COUNT")}
        results = await bench.read_words(ctx, "RESULTS")
        await bench.setup(ctx, TIMING=2)
        conversions = len(bench.afe.conversions)
        await bench.write(ctx, "CONTROL", soft_reset=1, start=1)   # the start is ignored
        seen["idle_reset"] = {name: await bench.read(ctx, name)
                              for name in ("STATUS", "SOLVE_COUNT", "OVER_RANGE_COUNT", "TIMING", "IRQ_STATUS")}
        seen["results_kept"] = await bench.read_words(ctx, "RESULTS") == results
        seen["started"] = len(bench.afe.conversions) > conversions

        await bench.setup(ctx, TIMING=1)
        await bench.write(ctx, "IRQ_STATUS", 0b111)
        await bench.start(ctx, Opcode.SOLVE)
        while not bench.afe.conversions[3:]:   # the first (over-range) sample is in, the second under way
            await ctx.tick()
        await bench.write(ctx, "CONTROL", soft_reset=1)
        seen["resetting"] = await bench.read(ctx, "STATUS")
        for _ in range(100):
            if not (await bench.read(ctx, "STATUS"))["busy"]:
                break
        seen["after"] = {name: await bench.read(ctx, name)
                         for name in ("STATUS", "SOLVE_COUNT", "OVER_RANGE_COUNT", "IRQ_STATUS")}
        seen["irq"] = ctx.get(bench.dut.irq)
        bench.assert_safe(ctx)
        status, _ = await bench.command(ctx, Opcode.SOLVE)
        seen["next"] = (status, await bench.read(ctx, "SOLVE_COUNT"))

    bench.run(testbench)
    assert seen["before"]["STATUS"]["error"] == ErrorCode.BAD_AVERAGING.value
    assert seen["before"]["SOLVE_COUNT"] == {"count": 1} and seen["before"]["OVER_RANGE_COUNT"]["count"] == 2
    idle = seen["idle_reset"]
    assert idle["STATUS"] == status_word(ErrorCode.NONE, done=0)
    assert idle["SOLVE_COUNT"] == idle["OVER_RANGE_COUNT"] == {"count": 0}
    assert idle["TIMING"] == {"adc_samples": 2}, "configuration registers keep their contents"
    assert not seen["started"], "a start written together with soft_reset must not run"
    assert idle["IRQ_STATUS"] == {"done": 1, "error": 1, "over_range": 1}, "IRQ_STATUS is the host's to clear"
    assert seen["results_kept"]
    assert seen["resetting"] == status_word(ErrorCode.NONE, done=0, busy=1), "the safe exit still runs"
    after = seen["after"]
    assert after["STATUS"] == status_word(ErrorCode.NONE, done=0), "the aborted command is forgotten"
    assert after["SOLVE_COUNT"] == after["OVER_RANGE_COUNT"] == {"count": 0}
    assert after["IRQ_STATUS"] == {"done": 0, "error": 0, "over_range": 0} and seen["irq"] == 0
    assert seen["next"] == (status_word(ErrorCode.NONE), {"count": 1})


def test_interrupt_line_follows_status_and_enable():
    bench = Bench()
    seen = []

    async def step(ctx, what: str) -> None:
        seen.append((what, await bench.read(ctx, "IRQ_STATUS"), ctx.get(bench.dut.irq)))

    async def testbench(ctx):
        await bench.command(ctx, Opcode.NOP)
        await step(ctx, "nop, nothing enabled")
        await bench.write(ctx, "IRQ_ENABLE", error=1, over_range=1)
        await step(ctx, "done not enabled")
        await bench.write(ctx, "IRQ_ENABLE", done=1)
        await step(ctx, "done enabled")
        await bench.write(ctx, "IRQ_STATUS", done=1)
        await step(ctx, "done cleared")
        _, start = await bench.command(ctx, Opcode.NOP)
        seen.append(("line around the nop", bench.trace[start].irq, bench.trace[start + REFUSAL_STATUS_DELAY].irq))
        await bench.write(ctx, "IRQ_ENABLE", error=1)
        await bench.write(ctx, "IRQ_STATUS", done=1)
        await bench.command(ctx, 255)
        await step(ctx, "unknown opcode")
        await bench.write(ctx, "IRQ_STATUS", error=1)
        await step(ctx, "error cleared")

    bench.run(testbench)
    assert seen == [
        ("nop, nothing enabled", {"done": 1, "error": 0, "over_range": 0}, 0),
        ("done not enabled", {"done": 1, "error": 0, "over_range": 0}, 0),
        ("done enabled", {"done": 1, "error": 0, "over_range": 0}, 1),
        ("done cleared", {"done": 0, "error": 0, "over_range": 0}, 0),
        ("line around the nop", 0, 1),      # the line rises with STATUS.done
        ("unknown opcode", {"done": 1, "error": 1, "over_range": 0}, 1),
        ("error cleared", {"done": 1, "error": 0, "over_range": 0}, 0),
    ]


# --- construction, elaboration, Verilog --------------------------------------------------------------

def test_saturate_clamps_instead_of_wrapping():
    wide = Signal(12)
    narrow = Signal(4)
    m = Module()
    m.d.comb += narrow.eq(saturate(wide, 4))
    assert saturate(Const(3, 4), 4).shape().width == 4, "no change when it already fits"
    seen = []

    async def testbench(ctx):
        for value in (0, 9, 15, 16, 17, 4095):
            ctx.set(wide, value)
            seen.append(ctx.get(narrow))

    sim = Simulator(m)
    sim.add_testbench(testbench)
    sim.run()
    assert seen == [0, 9, 15, 15, 15, 15]


def test_at_least_equals_the_compare_for_every_value():
    """The bit test a power-of-two bound becomes (and the compare for other bounds, and a bound
    past the value's width) against ``>=`` for every 6-bit value."""
    value = Signal(6)
    bounds = (1, 4, 5, 16, 32, 64, 128)
    outputs = [Signal(name=f"at_least_{bound}") for bound in bounds]
    m = Module()
    m.d.comb += [output.eq(at_least(value, bound)) for output, bound in zip(outputs, bounds)]
    wrong = []

    async def testbench(ctx):
        for number in range(64):
            ctx.set(value, number)
            wrong.extend((number, bound) for output, bound in zip(outputs, bounds)
                         if ctx.get(output) != (number >= bound))

    sim = Simulator(m)
    sim.add_testbench(testbench)
    sim.run()
    assert wrong == [], f"(value, bound) pairs where at_least differs from >=: {wrong[:5]}"


def test_constructor_validates_its_parameters():
    with pytest.raises(TypeError) as info:
        Controller({"rows": 16})
    assert str(info.value) == "params must be a BuildParams, got {'rows': 16}"
    with pytest.raises(ValueError) as info:
        Controller(BuildParams(cols=30, spare=3))
    assert str(info.value) == ("cols + spare must be at most 32 for the register map (one COL_ENABLE word, "
                               "one FAULT_MAP word per row), not 30 + 3 = 33")


def unused_elaboratable_warnings(make) -> list[str]:
    """The UnusedElaboratable warnings of the objects ``make()`` leaves behind (it may raise a
    ValueError), once garbage-collected, with Amaranth's warning armed as after any elaboration."""
    Fragment.get(Module(), None)   # Amaranth stays silent about unused objects until something elaborates
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            make()
        except ValueError:
            pass
        gc.collect()
    return [str(w.message) for w in caught if w.category is UnusedElaboratable]


def test_refused_or_discarded_controllers_warn_of_no_unused_block():
    # A controller built and dropped warns (the check can fail) ...
    assert any("ColumnRemap" in message for message in unused_elaboratable_warnings(lambda: Controller(SMALL)))
    # ... one refused by a late block (the Refiner) or by a pin-out, or discarded, does not.
    assert unused_elaboratable_warnings(
        lambda: Controller(BuildParams(dac_bits=1, run_nmf=False, calibration=False))) == []
    assert unused_elaboratable_warnings(lambda: PinnedController(BuildParams(), ICE40UP5KPlatform.user_pins)) == []
    assert unused_elaboratable_warnings(lambda: Controller(SMALL).discard()) == []


@pytest.mark.parametrize("params", [BuildParams(), SMALL], ids=["default", "rows16-cols4"])
def test_converts_to_verilog_with_the_bus_afe_and_irq_ports(params):
    text = verilog_text(params)
    assert f"module {TOP_MODULE}(" in text
    for port in ("axil__awaddr", "axil__rdata", "axil__bresp", "irq", "clk", "rst"):
        assert f" {port};" in text, f"port {port} missing"
    for port in AFESignature(params).members:
        assert f" afe__{port};" in text, f"AFE port afe__{port} missing"
    assert f"output [{params.rows - 1}:0] afe__row_en;" in text
    assert "/work" not in text and str(Path.cwd()) not in text and "src =" not in text, \
        "emit_src=False: no source paths in the Verilog"


def test_anmf_verilog_writes_the_top_level_and_refuses_bad_parameters(tmp_path, capsys):
    out = tmp_path / "rtl" / "ctrl.v"
    assert anmf_main(["verilog", "-o", str(out), "--rows", "16", "--cols", "4"]) == 0
    assert out.read_text() == verilog_text(SMALL)
    assert anmf_main(["verilog", "--cols", "31", "--spare", "2"]) == 2
    err = capsys.readouterr().err
    assert err == ("anmf: error: cols + spare must be at most 32 for the register map (one COL_ENABLE word, "
                   "one FAULT_MAP word per row), not 31 + 2 = 33\n")
    assert anmf_main(["verilog", "--dac-bits", "30"]) == 2
    assert capsys.readouterr().err == "anmf: error: dac_bits must be an integer from 1 to 24, got 30\n"
    assert anmf_main(["verilog", "--adc-bits", "12"]) == 2
    assert capsys.readouterr().err == ("anmf: error: calibration needs adc_bits and dac_bits of at most 10 (a "
                                       "32-bit CAL_COEFF word), not 12; build with calibration=False\n")
    assert anmf_main(["verilog", "-o", str(out), "--rows", "16", "--cols", "4", "--adc-bits", "12",
                      "--no-calibration"]) == 0
    assert out.read_text() == verilog_text(BuildParams(rows=16, cols=4, adc_bits=12, calibration=False))
