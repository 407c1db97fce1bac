"""Constrained-random verification of the controller with functional coverage (docs/coverage.md).

One cocotb test, :func:`random_commands`, runs a seeded stream of steps on the controller RTL
(``anmf_controller``) with the code-level AFE model bound to its AFE port:

* bus traffic: reads and writes of every register and window access class (testbench/
  coverage.py derives them from the register map), full-word and with byte lanes left out,
  plus unmapped addresses and window indices past the depth; every response is checked
  against the documented bus rules, every read against a shadow of what the bus wrote (and
  the constants, STATUS, counters and buffers the checks below predict);
* commands: every opcode and illegal ones, with configurations that are legal or break one
  validation check at random; a refusal is checked against the documented validation order
  (docs/controller.md, :func:`expected_refusal`), an accepted command against the golden
  model (model/golden.py: error, error_detail, done cycle, result words, fault map, counters);
* disturbances at random times: CONTROL.abort, CONTROL.soft_reset, a second start (BUSY), and
  an AFE that stops answering (the binding detached: the watchdog must end the command with
  ADC_TIMEOUT); the outcome is checked against the documented behaviour (ABORTED with
  ``done`` ROWS + 2 cycles after the abort, a forgotten command after a soft reset, STATUS and
  counters cleared, the AFE left in its safe state). Watchdog limits below the conversion or
  pulse time (golden-predicted ADC_TIMEOUT / PROGRAM_TIMEOUT) and a fresh ADC latency drawn
  at every re-synchronisation vary the AFE timing;
* aimed replays: a golden-checked run again from the same conductances, pulse noise and ADC
  latency, so that it goes through the same states at the same cycles, with an abort or soft
  reset strobed in the cycle of a state whose abort exit no run has taken yet (this one's or,
  with ``prior_coverage``, the earlier seeds' of a regression).

Every FSM state register is watched (one wake-up per change); a transition the RTL does not
contain fails the test. Coverage goes to cocotb-coverage and, at the end, to the JSON file the
environment names (merged across seeds by ``make regress``).

The runner passes ``ANMF_RANDOM_BENCH`` (JSON, :func:`bench_env`): ``params`` (BuildParams
fields), ``afe`` (AFE configuration dict), ``clock_hz``, ``steps``, ``coverage_json``,
``prior_coverage`` (a coverage file or None), ``max_replays`` (aimed replays of one command)
and, optionally, ``seed`` (else cocotb's random seed: ``COCOTB_RANDOM_SEED`` reproduces a run).

    python -m anmf.testbench.bench_random [--seeds N] [--first-seed S] [--sim icarus|verilator]
                                          [--steps K] [--goal 0.95] [--prior FILE]

runs N seeds (``make regress``), each directed by the merged coverage of the seeds before it
(``prior-SEED.json``: with ``--prior`` it reproduces that seed's run), prints each run, the
merged coverage report and whether the goal is met; exit 1 on a failing run or coverage below
the goal.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import ClockCycles, Event, RisingEdge, with_timeout

from anmf.hdl.afe import AFEMode
from anmf.hdl.codes import ErrorCode, Opcode
from anmf.hdl.controller import PROGRAMMER_OPCODES, SOLVE_OPCODES, Controller
from anmf.hdl.params import BuildParams
from anmf.hdl.regmap import MapEntry, Register, RegisterMap, VectorWindow
from anmf.hdl.registers import build_register_map
from anmf.model.afe import AnalogFrontEnd, Mode
from anmf.model.config import config_from_dict
from anmf.model.formats import ProgramSettings, exponent_word, mask_words
from anmf.model.golden import CalEnable, Error, GoldenController
from anmf.model.refinement import GAIN_BITS, GAIN_SHIFT_BITS, correction_gain
from anmf.testbench.afe_binding import AFEBinding, _value
from anmf.testbench.coverage import (BUS_BLOCK, IDLE_TARGET, READ, UNKNOWN_OPCODE_BIN, UNMAPPED, WINDOW_GAP,
                                     WRITE, WRITE_PARTIAL, CoverageModel, FSMModel, access_classes,
                                     covered, design_crosses, design_fsms, design_groups, design_points,
                                     expected_response, merge, merge_stats, read_json, read_stats, report,
                                     write_json)

__all__ = ["DEFAULT_OPTIONS", "bench_env", "expected_refusal", "RandomBench", "main"]

ENV = "ANMF_RANDOM_BENCH"
#: Small array, short conversions: a step costs a few hundred cycles.
DEFAULT_OPTIONS: dict[str, Any] = {
    "params": {"rows": 8, "cols": 4, "spare": 2, "avg_max_log2": 2},
    "afe": {"preset": "rram-3bit", "seed": 11, "adc": {"conversion_time_s": 200e-9}},
    "clock_hz": 100e6,
    "steps": 60,
    "coverage_json": None,
    "prior_coverage": None,
    "max_replays": 3,
}
WORD_MASK = 0xFFFF_FFFF
#: REFINE_B's fraction bits when the bench makes B = A x (testbench/bench_refine.py's format).
B_FRAC_BITS = 20
COMMAND_TIMEOUT_CYCLES = 400_000
#: ADC latencies (cycles from adc_start to adc_busy) drawn at each re-synchronisation.
ADC_LATENCIES = (1, 2, 3, 5)
#: Safe-exit states: an abort there (or in Idle/Done) has no effect (docs/controller.md).
NO_ABORT_STATES = ("Idle", "Done", "Safe-Zero-DAC", "Safe-LDAC")
#: Blocks that run other blocks, outermost first: the target an abort or soft reset is counted for.
OUTER_BLOCKS = ("anls", "refiner", "calibrator", "remap")
#: Where an abort (or soft reset) takes each command block from an abortable state: the
#: transition ``<state>-><exit>`` is what a replay aimed at ``state`` covers.
ABORT_EXITS = {"sequencer": "Safe-Zero-DAC", "programmer": "Safe-Zero-DAC", "calibrator": "Safe-Zero-DAC",
               "anls": "Done", "refiner": "Done", "remap": "Idle"}


def bench_env(**overrides: Any) -> dict[str, str]:
    """The runner's environment for this bench: DEFAULT_OPTIONS with ``overrides``."""
    return {ENV: json.dumps({**DEFAULT_OPTIONS, **overrides})}


def _options() -> dict[str, Any]:
    return {**DEFAULT_OPTIONS, **json.loads(os.environ.get(ENV, "{}"))}


def _now_ps() -> int:
    return round(get_sim_time("ps"))


# --- the reference model of command validation (docs/controller.md, "Checks, in this order") ---

def expected_refusal(fields: dict[str, dict[str, int]], row_mask: int, p: BuildParams,
                     offsets: dict[str, int]) -> tuple[ErrorCode, int]:
    """The refusal (or NONE, 0) of CONTROL.start for the register values ``fields`` (register ->
    field -> value) and ROW_MASK ``row_mask``, with no command running."""
    opcode = fields["COMMAND"]["opcode"]
    known = {op.value: op for op in Opcode}
    if opcode not in known:
        return ErrorCode.UNKNOWN_OPCODE, opcode
    op = known[opcode]
    if op is Opcode.NOP:
        return ErrorCode.NONE, 0
    if (op is Opcode.REFRESH and not p.spare_remap) or (op is Opcode.REFINE and not p.refinement):
        return ErrorCode.UNKNOWN_OPCODE, opcode
    solve, nmf, calibrate = op in SOLVE_OPCODES, op is Opcode.RUN_NMF, op is Opcode.CALIBRATE
    # REFINE takes the SOLVE checks, plus one: a COL_ENABLE with none of the COLS columns.
    refine = op is Opcode.REFINE
    solve = solve or refine
    cell = op in (Opcode.READ_CELL, Opcode.PROGRAM_CELL)
    # REFRESH takes PROGRAM_MATRIX's checks (it runs the same walk).
    matrix = op in (Opcode.PROGRAM_MATRIX, Opcode.REFRESH)
    program = op in (Opcode.PROGRAM_CELL, Opcode.PROGRAM_MATRIX, Opcode.REFRESH)
    command, size = fields["COMMAND"], fields["NMF_SIZE"]
    samples = fields["TIMING"]["adc_samples"]
    tolerance = fields["PROGRAM_TOLERANCE"]["codes"]
    base, span = fields["NMF_WINDOW_BASE"]["code"], fields["NMF_WINDOW_SPAN"]["codes"]
    checks = [
        (cell and (command["row"] >= p.rows or command["col"] >= p.total_cols), ErrorCode.BAD_DIMENSION, "COMMAND"),
        ((solve or matrix or calibrate) and row_mask == 0, ErrorCode.BAD_DIMENSION, "ROW_MASK"),
        ((solve or matrix or calibrate) and fields["COL_ENABLE"]["enable"] == 0, ErrorCode.BAD_DIMENSION,
         "COL_ENABLE"),
        (refine and fields["COL_ENABLE"]["enable"] & ((1 << p.cols) - 1) == 0, ErrorCode.BAD_DIMENSION, "COL_ENABLE"),
        (nmf and not (0 < size["m"] <= p.rows and 0 < size["n"] <= p.rows and 0 < size["k"] <= p.cols),
         ErrorCode.BAD_DIMENSION, "NMF_SIZE"),
        (nmf and fields["NMF_ITERATIONS"]["count"] == 0, ErrorCode.BAD_DIMENSION, "NMF_ITERATIONS"),
        (samples == 0 or samples & (samples - 1) or samples > 1 << p.avg_max_log2, ErrorCode.BAD_AVERAGING,
         "TIMING"),
        ((program or nmf) and not 0 < tolerance < 1 << p.adc_bits, ErrorCode.BAD_TOLERANCE, "PROGRAM_TOLERANCE"),
        (nmf and span == 0, ErrorCode.BAD_WINDOW, "NMF_WINDOW_SPAN"),
        (nmf and base + span > 1 << p.adc_bits, ErrorCode.BAD_WINDOW, "NMF_WINDOW_BASE"),
        (fields["WATCHDOG"]["cycles"] == 0, ErrorCode.BAD_TIMING, "WATCHDOG"),
        ((solve or nmf or calibrate) and fields["DAC_SETTLE"]["cycles"] == 0, ErrorCode.BAD_TIMING, "DAC_SETTLE"),
        ((solve or nmf or calibrate) and fields["ANALOG_SETTLE"]["cycles"] == 0, ErrorCode.BAD_TIMING,
         "ANALOG_SETTLE"),
        ((cell or matrix or nmf) and fields["READ_SETTLE"]["cycles"] == 0, ErrorCode.BAD_TIMING, "READ_SETTLE"),
        ((program or nmf) and fields["PROGRAM_PULSE"]["width"] == 0, ErrorCode.BAD_TIMING, "PROGRAM_PULSE"),
        (calibrate and fields["CAL_SETTLE"]["cycles"] == 0, ErrorCode.BAD_TIMING, "CAL_SETTLE"),
    ]
    for failed, error, register in checks:
        if failed:
            return error, offsets[register]
    return ErrorCode.NONE, 0


# --- the bus --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Access:
    """One bus access as classified against the register map."""

    address: int
    op: str                   #: READ, WRITE or WRITE_PARTIAL
    entry: MapEntry | None
    index: int                #: word index inside a window (0 for registers)
    label: str                #: the coverage access class


class Bus:
    """AXI4-Lite master driving the ports directly (one access at a time, any WSTRB), as
    testbench/axi_bus.py's direct master does; returns the response instead of raising."""

    def __init__(self, dut: Any):
        self.clock = dut.clk
        names = ("awaddr", "awvalid", "wdata", "wstrb", "wvalid", "bresp", "bvalid", "bready",
                 "araddr", "arvalid", "rdata", "rresp", "rvalid", "rready")
        self.p = {name: getattr(dut, f"axil__{name}") for name in names}
        for name in ("awvalid", "wvalid", "arvalid"):
            self.p[name].value = 0
        self.p["bready"].value = 1
        self.p["rready"].value = 1

    async def read(self, address: int) -> tuple[int, str]:
        p = self.p
        p["araddr"].value = address
        p["arvalid"].value = 1
        await RisingEdge(p["rvalid"])
        p["arvalid"].value = 0
        await RisingEdge(self.clock)
        return _value(p["rdata"]), ("OKAY", "EXOKAY", "SLVERR", "DECERR")[_value(p["rresp"])]

    async def write(self, address: int, value: int, strobe: int = 0xF) -> str:
        p = self.p
        p["awaddr"].value = address
        p["wdata"].value = value
        p["wstrb"].value = strobe
        p["awvalid"].value = 1
        p["wvalid"].value = 1
        await RisingEdge(p["bvalid"])
        p["awvalid"].value = 0
        p["wvalid"].value = 0
        await RisingEdge(self.clock)
        return ("OKAY", "EXOKAY", "SLVERR", "DECERR")[_value(p["bresp"])]


def _signed(word: int, bits: int) -> int:
    word &= (1 << bits) - 1
    return word - (1 << bits) if word >> (bits - 1) else word


def _lane_mask(strobe: int) -> int:
    return sum(0xFF << (8 * lane) for lane in range(4) if strobe >> lane & 1)


# --- the bench ------------------------------------------------------------------------------------

class RandomBench:
    """Clock, reset, AFE model and golden twin, FSM monitors, coverage, shadow registers."""

    def __init__(self, dut: Any, options: dict[str, Any], seed: int):
        self.dut = dut
        self.options = options
        self.p = p = BuildParams(**options["params"])
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.map: RegisterMap = build_register_map(p)
        self.entries = {e.name: e for e in self.map}
        self.offsets = {e.name: e.offset for e in self.map}
        self.classes = {c.label: c for c in access_classes(self.map)}
        self.fsms: tuple[FSMModel, ...] = design_fsms(Controller(p))
        fsms = self.fsms
        self.coverage = CoverageModel(design_groups(fsms, self.map), design_points(fsms), design_crosses(fsms))
        self.config = config_from_dict(options["afe"])
        self.period_ps = round(1e12 / options["clock_hz"])
        self.failures: list[str] = []
        self.bus = Bus(dut)
        # Shadow of what the bus wrote: register words, ROW_MASK, RHS, TARGET, FAULT_MAP.
        self.words = {e.name: e.item.reset for e in self.map if e.is_register}
        vector = self.entries["ROW_MASK"].item
        self.row_mask_words = [(vector.reset >> (32 * w)) & WORD_MASK for w in range(vector.depth)]
        self.recent: list[tuple[int, str, str, int, str]] = []   # the last writes, for messages
        self.status = {"busy": 0, "done": 0, "error": 0, "error_detail": 0}
        self.counters = {e.name: 0 for e in self.map if e.is_register and
                         any(f.field.kind == "counter" for f in e.item.fields.values())}
        self.handles: dict[str, Any] = {}
        self.state: dict[str, str] = {}
        self.entered: dict[tuple[str, str], int] = {}   # (block, state) -> time (ps) last entered
        self.history: dict[str, list[tuple[int, str]]] = {}   # block -> (time entered, state), recent
        self.idle = Event()
        self.command_blocks = tuple(f.block for f in fsms if f.block != BUS_BLOCK)
        self.afe: AnalogFrontEnd | None = None
        self.binding: AFEBinding | None = None
        self.golden: GoldenController | None = None
        self.durations: dict[str, int] = {}
        #: (block, state, time in ps) of every FSM change while a command runs.
        self.trace: list[tuple[str, str, int]] = []
        #: Cycles from a CONTROL write's call (at a clock edge) to its strobe.
        self.write_latency = 0
        #: The NMF buffers of the RTL equal the golden model's (False after a disturbed RUN_NMF).
        self.nmf_synced = False
        #: What was checked, by kind (exported with the coverage; the runner asserts on it).
        self.stats: Counter[str] = Counter()
        self._last_start_ps = 0
        #: Hits of the runs before this one (``make regress`` passes the merged coverage of the
        #: seeds so far): aimed replays go for abort transitions none of them covered.
        prior = options.get("prior_coverage")
        self.prior_hits = read_json(Path(prior))[0] if prior else {}
        #: Cycles from a start strobe to the earliest abort strobe the bus can give (two CONTROL
        #: writes back to back; measured at every disturbed run).
        self.min_aim_offset = 5
        #: The ADC latency a re-synchronisation keeps (between the replays of one command), or None.
        self.keep_latency: int | None = None
        self.adc_latency = 0
        #: The command being configured is a repair scenario (configure).
        self.repair = False

    # ---- checks ---------------------------------------------------------------------------

    def check(self, ok: bool, message: str) -> None:
        """Record a failed check (the test fails at the end with all of them; the first few
        are logged as they happen)."""
        if not ok:
            self.failures.append(message)
            if len(self.failures) <= 20:
                cocotb.log.error("check failed: %s", message)

    # ---- life cycle -----------------------------------------------------------------------

    async def start(self) -> None:
        dut = self.dut
        Clock(dut.clk, self.period_ps, unit="ps", impl="gpi").start(start_high=False)
        dut.rst.value = 1
        for name in ("adc_busy", "adc_data", "adc_ovr", "prog_done"):
            getattr(dut, f"afe__{name}").value = 0
        await ClockCycles(dut.clk, 3)
        dut.rst.value = 0
        await ClockCycles(dut.clk, 2)
        for fsm in self.fsms:
            handle = dut
            try:
                for name in fsm.path:
                    handle = getattr(handle, name)
                handle = getattr(handle, fsm.signal)
            except AttributeError:
                raise AssertionError(f"FSM state register {'.'.join(fsm.path + (fsm.signal,))} is not visible "
                                     f"in the simulator: the coverage of block {fsm.block} cannot be sampled")
            self.handles[fsm.block] = handle
            cocotb.start_soon(self._watch(fsm, handle))
        await self.resync(first=True)

    def _all_idle(self) -> bool:
        return all(self.state.get(b) == "Idle" for b in self.command_blocks)

    async def _watch(self, fsm: FSMModel, handle: Any) -> None:
        legal = set(fsm.transitions)
        previous = fsm.state_name(_value(handle))
        self.state[fsm.block] = previous
        history = self.history[fsm.block] = [(_now_ps(), previous)]
        self.coverage.sample(f"fsm.{fsm.block}.state", previous)
        change = handle.value_change
        while True:
            await change
            code = _value(handle)
            try:
                name = fsm.state_name(code)
            except ValueError as exc:
                self.check(False, str(exc))
                continue
            if name == previous:
                continue
            self.coverage.sample(f"fsm.{fsm.block}.state", name)
            if (previous, name) in legal:
                self.coverage.sample(f"fsm.{fsm.block}.transition", f"{previous}->{name}")
            else:
                self.check(False, f"{fsm.block}: transition {previous} -> {name} is not in the RTL")
            previous = name
            self.state[fsm.block] = name
            now = _now_ps()
            self.entered[(fsm.block, name)] = now
            self.trace.append((fsm.block, name, now))
            history.append((now, name))
            if len(history) > 4096:
                del history[:2048]
            if self._all_idle():
                self.idle.set()
            else:
                self.idle.clear()

    def states_at(self, time_ps: int) -> dict[str, str]:
        """Every block's state in the clock cycle that starts at ``time_ps`` (from the
        monitors' history: a state entered at an edge holds from that edge on)."""
        found = {}
        for block, history in self.history.items():
            found[block] = next((state for t, state in reversed(history) if t <= time_ps), history[0][1])
        return found

    async def resync(self, first: bool = False) -> None:
        """A fresh AFE model and golden twin with the bound model's conductances (after a
        command the golden model could not follow), a new ADC latency, the golden buffers
        from the RTL, the counters read back."""
        latency = int(self.rng.choice(ADC_LATENCIES))
        if self.keep_latency is not None:
            latency = self.keep_latency
        self.adc_latency = latency
        afe = AnalogFrontEnd.from_build_params(self.config, self.p, clock_hz=self.options["clock_hz"],
                                               deterministic=True, adc_latency_cycles=latency)
        if self.binding is not None:
            self.binding.stop()
        g = np.asarray(self.afe.crossbar.conductance_s).copy() if self.afe is not None else None
        if g is None:
            levels = afe.config.device.level_targets_s()
            g = levels[self.rng.integers(1, levels.size, (self.p.rows, self.p.total_cols))]
        golden = GoldenController(self.p, afe.twin())
        now = _now_ps() / 1e12
        afe.set_conductances(g, now)
        golden.afe.set_conductances(g, now)
        self.afe, self.golden = afe, golden
        self.binding = AFEBinding(self.dut, afe, self.p, clock=self.dut.clk)
        await self.binding.start()
        golden.rhs[:] = [await self.read_window_word("RHS", i) for i in range(self.p.rows)]
        golden.targets[:] = np.reshape([await self.read_window_word("TARGET", i)
                                        for i in range(self.p.cell_count)], golden.targets.shape)
        golden.results[:] = [await self.read_window_word("RESULTS", i) for i in range(self.p.total_cols)]
        golden.fault_map[:] = [await self.read_window_word("FAULT_MAP", i) for i in range(self.p.rows)]
        if self.p.spare_remap:
            await self._resync_remap(golden)
        if "REFINE_A" in self.offsets:    # an interrupted REFINE leaves a partial X
            golden.refine_a.reshape(-1)[:] = [await self.read_window_word("REFINE_A", i)
                                             for i in range(golden.refine_a.size)]
            golden.refine_b[:] = [_signed(await self.read_window_word("REFINE_B", i), 32)
                                  for i in range(golden.refine_b.size)]
            golden.refine_x[:] = [await self.read_window_word("REFINE_X", i) for i in range(golden.refine_x.size)]
        if "CAL_COEFF" in self.offsets:   # an interrupted CALIBRATE stores some words
            golden.cal_words[:] = [await self.read_window_word("CAL_COEFF", i) for i in range(len(golden.cal_words))]
        for name in self.counters:
            self.counters[name] = await self.read_field(name, "count")
        self.nmf_synced = False

    async def _resync_remap(self, golden: GoldenController) -> None:
        """The golden model's column map, remap enable and taken spares from the RTL. A spare a
        failed trial took is not visible in REMAP_MAP: the lowest free ones stand for those
        (exact: a trial takes the lowest free spare and only a clear frees one, so the taken
        spares are always the lowest ones)."""
        p = self.p
        golden.column_map = [(await self.read_window_word("REMAP_MAP", c)) & 0xFF for c in range(p.total_cols)]
        golden.remap_enabled = bool(self.words["REMAP_CONTROL"] & 1)
        held = {phys for logical, phys in enumerate(golden.column_map) if phys != logical and phys >= p.cols}
        left = await self.read_field("REMAP_STATUS", "spares_left")
        free = [s for s in range(p.cols, p.total_cols) if s not in held]
        golden.spares_taken = held | set(free[:len(free) - left])

    # ---- bus with classification, response check and shadow ------------------------------

    def classify(self, address: int, op: str) -> Access:
        for entry in self.map:
            if entry.offset <= address < entry.end:
                index = (address - entry.offset) // 4
                if not entry.is_register and index >= entry.item.depth:
                    return Access(address, op, entry, index, WINDOW_GAP)
                label = next(c.label for c in self.classes.values() if entry in c.entries)
                return Access(address, op, entry, index, label)
        return Access(address, op, None, 0, UNMAPPED)

    def _sample_access(self, access: Access) -> None:
        op = access.op if access.label not in (UNMAPPED, WINDOW_GAP) or access.op == READ else WRITE
        self.coverage.sample("bus.access", f"{access.label}: {op}")

    async def read(self, address: int) -> int:
        access = self.classify(address, READ)
        self._sample_access(access)
        value, resp = await self.bus.read(address)
        gap_ok = access.entry is not None and access.label != WINDOW_GAP
        self.check(resp == expected_response(access.entry if gap_ok else None, READ),
                   f"read 0x{address:X} ({access.label}) answered {resp}")
        return value

    async def write(self, address: int, value: int, strobe: int = 0xF) -> str:
        op = WRITE if strobe == 0xF else WRITE_PARTIAL
        access = self.classify(address, op)
        self._sample_access(access)
        resp = await self.bus.write(address, value, strobe)
        self.recent = (self.recent + [(_now_ps(), hex(address), hex(value), strobe, resp)])[-12:]
        mapped = access.entry if access.label not in (UNMAPPED, WINDOW_GAP) else None
        expected = expected_response(mapped, op, index=access.index, strobe=strobe)
        self.check(resp == expected, f"write 0x{value:08X} strobe {strobe:04b} to 0x{address:X} "
                                     f"({access.label}) answered {resp}, documented {expected}")
        if expected == "OKAY" and mapped is not None:
            self._shadow_write(mapped, access.index, value, _lane_mask(strobe))
        return resp

    def _shadow_write(self, entry: MapEntry, index: int, value: int, lanes: int) -> None:
        item = entry.item
        if isinstance(item, Register):
            keep = sum(f.mask for f in item.fields.values() if f.access.value in ("RW", "W"))
            old = self.words[entry.name]
            self.words[entry.name] = (old & ~(keep & lanes)) | (value & keep & lanes)
            if entry.name == "REMAP_CONTROL":
                # The golden model follows the enable; a clear while idle (the bench writes
                # between commands) forgets its map as the RTL does.
                self.golden.remap_enabled = bool(self.words[entry.name] & 1)
                if value & lanes & item.fields["clear"].mask:
                    self.golden.clear_remap()
        elif isinstance(item, VectorWindow):
            bits_here = min(32, max(0, item.bits - 32 * index))
            keep = ((1 << bits_here) - 1) & lanes
            self.row_mask_words[index] = (self.row_mask_words[index] & ~keep) | (value & keep)
        elif entry.name in ("RHS", "TARGET", "FAULT_MAP", "REFINE_A"):
            buffer = {"RHS": self.golden.rhs, "TARGET": self.golden.targets.reshape(-1),
                      "FAULT_MAP": self.golden.fault_map, "REFINE_A": self.golden.refine_a.reshape(-1)}[entry.name]
            buffer[index] = value & ((1 << item.width) - 1)
        elif entry.name == "REFINE_B":
            self.golden.refine_b[index] = _signed(value, item.width)

    def field(self, register: str, name: str) -> int:
        placed = self.entries[register].item.fields[name]
        return (self.words[register] >> placed.shift) & ((1 << placed.width) - 1)

    def fields(self) -> dict[str, dict[str, int]]:
        return {name: {f: self.field(name, f) for f in self.entries[name].item.fields} for name in self.words}

    def pack(self, register: str, **values: int) -> int:
        item = self.entries[register].item
        word = 0
        for name, value in values.items():
            placed = item.fields[name]
            word |= (value & ((1 << placed.width) - 1)) << placed.shift
        return word

    async def set(self, register: str, **values: int) -> None:
        """Write the named fields, the others keeping their shadow value."""
        word = self.words[register]
        for name, value in values.items():
            placed = self.entries[register].item.fields[name]
            word = (word & ~placed.mask) | ((value << placed.shift) & placed.mask)
        await self.write(self.offsets[register], word)

    async def read_field(self, register: str, name: str) -> int:
        placed = self.entries[register].item.fields[name]
        return (await self.read(self.offsets[register]) >> placed.shift) & ((1 << placed.width) - 1)

    async def read_window_word(self, window: str, index: int) -> int:
        return await self.read(self.offsets[window] + 4 * index)

    @property
    def row_mask(self) -> int:
        return sum(w << (32 * i) for i, w in enumerate(self.row_mask_words)) & ((1 << self.p.rows) - 1)

    async def read_status(self) -> dict[str, int]:
        word = await self.read(self.offsets["STATUS"])
        item = self.entries["STATUS"].item
        return {n: (word >> f.shift) & ((1 << f.width) - 1) for n, f in item.fields.items()}

    # ---- random bus traffic ----------------------------------------------------------------

    def _predicted_read(self, entry: MapEntry, index: int) -> tuple[int, int]:
        """(value, mask of predicted bits) of a read."""
        item = entry.item
        if isinstance(item, Register):
            value = mask = 0
            for name, placed in item.fields.items():
                kind, access = placed.field.kind, placed.access.value
                if kind == "constant":
                    value |= placed.field.reset << placed.shift
                elif kind == "counter":
                    value |= (self.counters[entry.name] & ((1 << placed.width) - 1)) << placed.shift
                elif access in ("W", "W1S"):
                    pass
                elif access == "RW":
                    value |= self.words[entry.name] & placed.mask
                elif entry.name == "STATUS":
                    value |= self.status[name] << placed.shift
                else:
                    continue
                mask |= placed.mask
            return value, mask
        if isinstance(item, VectorWindow):
            return self.row_mask_words[index], WORD_MASK
        golden = self.golden
        buffers = {"RHS": golden.rhs, "TARGET": golden.targets.reshape(-1), "RESULTS": golden.results,
                   "FAULT_MAP": golden.fault_map, "CAL_COEFF": golden.cal_words,
                   "REFINE_A": golden.refine_a.reshape(-1), "REFINE_B": golden.refine_b, "REFINE_X": golden.refine_x}
        if entry.name in buffers:
            return int(buffers[entry.name][index]) & WORD_MASK, WORD_MASK
        return 0, 0

    def _config_value(self, register: str) -> int:
        """A constrained random word for a configuration register (short timings, legal-ish
        counts), random bits for the others."""
        r = self.rng
        p = self.p
        small = lambda low, high: int(r.integers(low, high + 1))  # noqa: E731
        choices = {
            "TIMING": lambda: self.pack("TIMING", adc_samples=int(r.choice([1, 1, 2, 4, 0, 3, 1 << (p.avg_max_log2 + 1)]))),
            "DAC_SETTLE": lambda: self.pack("DAC_SETTLE", cycles=small(0, 40)),
            "ANALOG_SETTLE": lambda: self.pack("ANALOG_SETTLE", cycles=small(0, 40)),
            "READ_SETTLE": lambda: self.pack("READ_SETTLE", cycles=small(0, 30)),
            "WATCHDOG": lambda: self.pack("WATCHDOG", cycles=int(r.choice([0, small(1, 12), 4000, 4000]))),
            "PROGRAM_PULSES": lambda: self.pack("PROGRAM_PULSES", max_pulses=small(0, 10)),
            "PROGRAM_PULSE": lambda: self.pack("PROGRAM_PULSE", width=small(0, 8)),
            "PROGRAM_TOLERANCE": lambda: self.pack("PROGRAM_TOLERANCE", codes=int(r.choice([0, small(1, 40), 1 << p.adc_bits]))),
            "NMF_ITERATIONS": lambda: self.pack("NMF_ITERATIONS", count=small(0, 2), range_retries=small(0, 3)),
            "NMF_SIZE": lambda: self.pack("NMF_SIZE", m=small(0, p.rows + 1), n=small(0, p.rows + 1), k=small(0, p.cols + 1)),
            "CAL_SETTLE": lambda: self.pack("CAL_SETTLE", cycles=small(0, 8)),
        }
        make = choices.get(register)
        return make() if make is not None else int(r.integers(0, 1 << 32))

    async def random_access(self) -> None:
        """One access of a random class and operation: response and readback checked."""
        r = self.rng
        label = str(r.choice(list(self.classes)))
        cls = self.classes[label]
        op = str(r.choice(cls.ops))
        if label == UNMAPPED:
            while True:
                address = int(r.integers(0, 1 << (self.map.byte_addr_width - 2))) * 4
                if self.classify(address, READ).label == UNMAPPED:
                    break
            if op == READ:
                await self.read(address)
            else:
                await self.write(address, int(r.integers(0, 1 << 32)))
            return
        entry = cls.entries[int(r.integers(0, len(cls.entries)))]
        item = entry.item
        if label == WINDOW_GAP:
            index = int(r.integers(item.depth, item.span))
        else:
            index = 0 if entry.is_register else int(r.integers(0, item.depth))
        address = entry.offset + 4 * index
        if op == READ:
            value = await self.read(address)
            expected, mask = self._predicted_read(entry, index) if label != WINDOW_GAP else (0, 0)
            self.check(value & mask == expected & mask,
                       f"read {entry.name}[{index}] = 0x{value:08X}, expected 0x{expected & mask:08X} in mask "
                       f"0x{mask:08X}")
            return
        strobe = 0xF if op == WRITE else int(r.choice([1, 2, 3, 4, 6, 8, 12, 7, 14]))
        if label == WINDOW_GAP:
            value = int(r.integers(0, 1 << 32))
        elif entry.name == "CONTROL":
            value = 0     # a zero write strobes nothing (the command steps write the ones)
        elif entry.is_register:
            value = self._config_value(entry.name)
        elif entry.name.startswith("NMF_") and item.access.writable:
            # The NMF buffers stay at their reset contents (the golden model's): a write here
            # uses a strobe the bus refuses, which changes nothing.
            strobe = 0
            op = WRITE_PARTIAL
            value = int(r.integers(0, 1 << 32))
        elif entry.name == "RHS":
            value = int(r.integers(0, 1 << self.p.dac_bits))
        elif entry.name == "TARGET":
            value = int(r.integers(0, 1 << self.p.adc_bits))
        else:
            value = int(r.integers(0, 1 << 32))
        await self.write(address, value, strobe)

    # ---- commands -------------------------------------------------------------------------

    async def configure(self, opcode: Opcode | int, break_one: bool) -> None:
        """Legal values for the registers ``opcode`` uses; with ``break_one``, one of them
        illegal (zero, out of range)."""
        r = self.rng
        p = self.p
        small = lambda low, high: int(r.integers(low, high + 1))  # noqa: E731
        values: dict[str, dict[str, int]] = {
            "TIMING": {"adc_samples": 1 << small(0, p.avg_max_log2)},
            "WATCHDOG": {"cycles": 4000},
            "DAC_SETTLE": {"cycles": small(1, 30)},
            "ANALOG_SETTLE": {"cycles": small(1, 30)},
            "READ_SETTLE": {"cycles": small(1, 20)},
            "PROGRAM_TOLERANCE": {"codes": small(2, 40)},
            "PROGRAM_PULSES": {"max_pulses": small(0, 10)},
            "PROGRAM_AMPLITUDE": {"start": small(4, 40), "step": small(1, 12)},
            "PROGRAM_AMPLITUDE_MAX": {"max": small(40, (1 << p.prog_amp_bits) - 1)},
            "PROGRAM_PULSE": {"width": small(1, 6)},
            "COL_ENABLE": {"enable": small(1, (1 << p.total_cols) - 1)},
            "NMF_SIZE": {"m": small(1, 3), "n": small(1, 3), "k": small(1, 2)},
            "NMF_ITERATIONS": {"count": 1, "range_retries": small(0, 2)},
            "NMF_WINDOW_BASE": {"code": small(0, 100)},
            "NMF_WINDOW_SPAN": {"codes": small(100, 900)},
        }
        if "CAL_SETTLE" in self.offsets:
            values["CAL_SETTLE"] = {"cycles": small(1, 6)}
        breaks = {
            "TIMING": {"adc_samples": int(r.choice([0, 3, 1 << (p.avg_max_log2 + 1)]))},
            "WATCHDOG": {"cycles": 0}, "DAC_SETTLE": {"cycles": 0}, "ANALOG_SETTLE": {"cycles": 0},
            "READ_SETTLE": {"cycles": 0}, "PROGRAM_PULSE": {"width": 0},
            "PROGRAM_TOLERANCE": {"codes": int(r.choice([0, 1 << p.adc_bits]))},
            "COL_ENABLE": {"enable": 0},
            "NMF_SIZE": {"m": int(r.choice([0, p.rows + 1])), "n": 1, "k": 1},
            "NMF_ITERATIONS": {"count": 0},
            "NMF_WINDOW_SPAN": {"codes": 0},
            "NMF_WINDOW_BASE": {"code": (1 << p.adc_bits) - 50},
        }
        if "CAL_SETTLE" in self.offsets:
            breaks["CAL_SETTLE"] = {"cycles": 0}
        if "SOLVE_RETRIES" in self.offsets:   # the over-range retry of host solves
            values["SOLVE_RETRIES"] = {"limit": int(r.choice([0, 1, 1, 2, 3, (1 << 4) - 1]))}
        refine = opcode == Opcode.REFINE.value and "REFINE_CONTROL" in self.offsets
        if refine:
            a_offset = int(self.afe.conductance_code(self.config.circuit.g_offset_s))
            gain, shift = correction_gain(self.afe)
            if r.random() < 0.15:
                gain, shift = small(0, (1 << GAIN_BITS) - 1), small(0, (1 << GAIN_SHIFT_BITS) - 1)
            values["REFINE_CONTROL"] = {"passes": small(0, 3), "headroom": small(0, 3),
                                        "a_offset": a_offset if r.random() < 0.85 else small(0, (1 << p.adc_bits) - 1)}
            values["REFINE_GAIN"] = {"gain": gain, "shift": shift}
            # Only spare columns enabled: legal for SOLVE, refused for REFINE.
            breaks["COL_ENABLE"] = {"enable": int(r.choice([0, ((1 << p.total_cols) - 1) & ~((1 << p.cols) - 1)]))}
        # Timeouts: a watchdog below the conversion time, or between it and the pulse time.
        timeout = r.random()
        if opcode in (Opcode.PROGRAM_CELL.value, Opcode.PROGRAM_MATRIX.value, Opcode.REFRESH.value) and timeout < 0.25:
            timeout = 0.1     # the pulse timeout, more often where a pulse can happen
        if timeout < 0.08:
            values["WATCHDOG"] = {"cycles": small(1, max(1, self.afe.adc_cycles - 1))}
        elif timeout < 0.16:
            # A pulse longer than a conversion, the watchdog between the two.
            adc = self.afe.adc_cycles
            widths = [w for w in range(1, 1 << p.prog_width_bits) if self.afe.pulse_cycles(w) > adc + 1][:20]
            if widths:
                width = widths[int(r.integers(0, len(widths)))]
                values["PROGRAM_PULSE"] = {"width": width}
                values["WATCHDOG"] = {"cycles": small(adc, self.afe.pulse_cycles(width) - 1)}
        if opcode == Opcode.CALIBRATE.value and r.random() < 0.2:
            # A DAC settling too short for the loopback points, one sample each: the DAC gains
            # come out of range, stored as identity (CAL_FAILED).
            values.update({"DAC_SETTLE": {"cycles": small(1, 2)}, "TIMING": {"adc_samples": 1}})
        # A repair scenario now and then: a walk with the remap on (from a cleared map, see
        # command_step), new targets everywhere and a pulse budget too small to reach them, so
        # that main columns fail and the spare trials run (and fail: the next spare's trial).
        walk = opcode in (Opcode.PROGRAM_MATRIX.value, Opcode.REFRESH.value) and "REMAP_CONTROL" in self.offsets
        self.repair = walk and not break_one and r.random() < 0.25
        if self.repair:
            values.update({"PROGRAM_PULSES": {"max_pulses": small(0, 2)}, "PROGRAM_TOLERANCE": {"codes": small(2, 6)},
                           "COL_ENABLE": {"enable": small(1, (1 << p.cols) - 1)}, "WATCHDOG": {"cycles": 4000}})
        if break_one:
            name = str(r.choice(list(breaks)))
            values[name] = breaks[name]
        for name, fields in values.items():
            await self.set(name, **fields)
        if r.random() < 0.9 or break_one is False:
            mask = small(1, (1 << p.rows) - 1) if not (break_one and r.random() < 0.15) else 0
            await self.write(self.offsets["ROW_MASK"], mask)
        if r.random() < 0.5:
            # Large inputs, or all at the ends of the range: over range at low conductances,
            # resolved by the retry or not.
            reach = float(r.choice([1 / 3, 1 / 3, 1.0, 2.0, 4.0]))
            for row in range(p.rows):
                await self.write(self.offsets["RHS"] + 4 * row, self._rhs_code(reach))
        if walk:
            await self.set("REMAP_CONTROL", enable=int(self.repair or r.random() < 0.6))
        if refine:
            await self._refine_operands(values["REFINE_CONTROL"]["a_offset"])
        if r.random() < 0.4 or self.repair:
            levels = self.afe.config.device.level_targets_s()
            count = p.cell_count if self.repair else small(1, p.cell_count)
            for index in r.choice(p.cell_count, size=count, replace=False):
                code = int(self.afe.conductance_code(levels[int(r.integers(0, levels.size))]))
                await self.write(self.offsets["TARGET"] + 4 * int(index), code)
        row = small(0, p.rows - 1) if r.random() > 0.1 else p.rows + small(0, 3)
        col = small(0, p.total_cols - 1) if r.random() > 0.1 else p.total_cols + small(0, 3)
        await self.set("COMMAND", opcode=int(opcode), row=row, col=col)

    def _rhs_code(self, reach: float = 1 / 3) -> int:
        """A DAC code zero +- reach x zero (reach 2: mostly clipped to the ends)."""
        zero = 1 << (self.p.dac_bits - 1)
        span = int(zero * reach)
        return int(np.clip(zero + self.rng.integers(-span, span), 0, (1 << self.p.dac_bits) - 1))

    async def _refine_operands(self, a_offset: int) -> None:
        """REFINE_A (sometimes host-written; else what write-verify stored) and REFINE_B: mostly
        B = A x for a random x >= 0 scaled to 0.8 of the DAC range (docs/refinement.md's
        format, B_FRAC_BITS fraction bits), else random words or zero (R = 0 at once)."""
        r, p, golden = self.rng, self.p, self.golden
        if r.random() < 0.3:
            levels = self.afe.config.device.level_targets_s()
            for index in range(golden.refine_a.size):
                code = int(self.afe.conductance_code(levels[int(r.integers(0, levels.size))]))
                await self.write(self.offsets["REFINE_A"] + 4 * index, code)
        choice = r.random()
        if choice < 0.75:
            a_read = (golden.refine_a - a_offset).astype(np.float64)
            b_float = a_read @ r.uniform(0.0, 1.0, p.cols)
            peak = np.abs(b_float).max()
            b = np.rint(b_float * (0.8 * (2 ** (p.dac_bits - 1) - 1) / peak if peak else 0.0) * 2.0 ** B_FRAC_BITS)
        elif choice < 0.9:
            b = r.integers(-(1 << 28), 1 << 28, p.rows)
        else:
            b = np.zeros(p.rows)
        for row in range(p.rows):
            await self.write(self.offsets["REFINE_B"] + 4 * row, int(b[row]) & WORD_MASK)

    async def _counters(self) -> dict[str, int]:
        return {name: await self.read_field(name, "count") for name in self.counters}

    async def start_command(self) -> int:
        """CONTROL.start; returns the time (ps) of the start strobe (cycle 0)."""
        seen: dict[str, int] = {}

        async def strobe() -> None:
            await RisingEdge(self.dut.control__start)
            seen["t"] = _now_ps()
        watcher = cocotb.start_soon(strobe())
        called = _now_ps()
        self.trace.clear()
        await self.set("CONTROL", start=1)
        self.check(watcher.done(), "CONTROL.start strobe not seen")
        self.write_latency = (seen.get("t", called) - called) // self.period_ps
        return seen.get("t", _now_ps())

    async def wait_idle(self) -> None:
        """Until every block is idle and the controller is not busy: between two runs of a host
        solve's retry, or between a PROGRAM_MATRIX walk and the remap's spare trials, every FSM
        is idle for a cycle while the command goes on (STATUS.busy stays set)."""
        await ClockCycles(self.dut.clk, 2)
        deadline = _now_ps() + COMMAND_TIMEOUT_CYCLES * self.period_ps
        while not (self._all_idle() and not _value(self.dut.status__busy)):
            if _now_ps() >= deadline:
                raise AssertionError(f"the command did not end in {COMMAND_TIMEOUT_CYCLES} cycles ({self.state})")
            if self._all_idle():
                await ClockCycles(self.dut.clk, 1)
            else:
                self.idle.clear()
                await with_timeout(self.idle.wait(), deadline - _now_ps(), "ps")

    def _cycles(self, start_ps: int, block: str, state: str = "Done") -> int:
        return (self.entered.get((block, state), start_ps) - start_ps) // self.period_ps

    async def load_nmf(self) -> None:
        """A small random NMF problem in the NMF buffers of the RTL (over the bus) and of the
        golden model: R codes, mask (mostly observed), W mantissas and exponents (now and then
        at the edge of the exponent range, for EXPONENT_RANGE)."""
        r, p, golden = self.rng, self.p, self.golden
        rows, cols = p.rows, p.cols
        codes = np.zeros((rows, rows), dtype=np.int64)
        observed = np.zeros((rows, rows), dtype=bool)
        m, n = 3, 3
        codes[:m, :n] = r.integers(0, 1 << p.r_bits, (m, n))
        observed[:m, :n] = r.random((m, n)) < 0.85
        mantissa = np.zeros((rows, cols), dtype=np.int64)
        if r.random() < 0.9:   # else W = 0: no live component, nothing to program
            mantissa[:m, :] = r.integers(0, 1 << (p.adc_bits - 1), (m, cols))
        exps = np.zeros(rows + cols, dtype=np.int64)
        top = (1 << (p.exp_bits - 1)) - 1
        exps[rows:] = r.integers(-3, 4, cols) if r.random() < 0.8 else r.choice([-top - 1, top], cols)
        golden.nmf_r[:] = codes
        golden.nmf_mask[:] = observed
        golden.nmf_w[:] = mantissa
        golden.nmf_w_exp[:] = exps
        golden.nmf_h[:] = 0        # RUN_NMF starts with an H-step: H only has to agree
        golden.nmf_h_exp[:] = 0
        writes = [("NMF_R", codes.reshape(-1)), ("NMF_MASK", mask_words(observed, rows)),
                  ("NMF_W", mantissa.reshape(-1)), ("NMF_W_EXP", exponent_word(exps, p.exp_bits)),
                  ("NMF_H", golden.nmf_h.reshape(-1)), ("NMF_H_EXP", golden.nmf_h_exp)]
        for window, words in writes:
            for index, word in enumerate(words):
                await self.write(self.offsets[window] + 4 * index, int(word))
        self.nmf_synced = True
        self._nmf_writes = writes
        self._nmf_arrays = (codes, observed, mantissa, exps)

    async def reload_nmf(self) -> None:
        """The last NMF problem again, in the RTL and the golden model (for a replay)."""
        golden = self.golden
        codes, observed, mantissa, exps = self._nmf_arrays
        golden.nmf_r[:], golden.nmf_mask[:], golden.nmf_w[:], golden.nmf_w_exp[:] = codes, observed, mantissa, exps
        golden.nmf_h[:] = 0
        golden.nmf_h_exp[:] = 0
        for window, words in self._nmf_writes:
            for index, word in enumerate(words):
                await self.write(self.offsets[window] + 4 * index, int(word))

    async def command_step(self) -> None:
        """A random command on a random configuration: refused, golden-checked, or disturbed;
        after a golden-checked one, sometimes its replay with an abort or soft reset aimed at
        a state its trace went through."""
        r = self.rng
        if r.random() < 0.07:
            opcode: int = int(r.choice([o for o in range(8, 256) if o not in {op.value for op in Opcode}]))
        else:
            # RUN_NMF twice as often: its FSM is the largest and its runs the most varied.
            # REFINE too: the Refiner's FSM has an abort exit from nearly every state.
            weights = np.array([2.0 if o in (Opcode.RUN_NMF, Opcode.REFINE) else 1.0 for o in Opcode])
            opcode = int(r.choice([o.value for o in Opcode], p=weights / weights.sum()))
        op = {o.value: o for o in Opcode}.get(opcode)
        await self.configure(opcode, break_one=r.random() < 0.3)
        if op is Opcode.RUN_NMF and (not self.nmf_synced or r.random() < 0.5):
            await self.load_nmf()
        fields = self.fields()
        self.coverage.sample("command.opcode", op.name if op else UNKNOWN_OPCODE_BIN)
        refusal, detail = expected_refusal(fields, self.row_mask, self.p, self.offsets)
        if refusal != ErrorCode.NONE or op is Opcode.NOP:
            await self.refused(opcode, fields, refusal, detail)
            return
        disturbance = str(r.choice(["none"] * 5 + ["abort", "soft_reset", "busy", "mute"]))
        offset = None
        if disturbance in ("abort", "soft_reset"):
            offset = int(r.integers(0, max(2, self.durations.get(op.name, 300))))
        # A walk with the remap on starts, half of the time (always in a repair scenario), from
        # a cleared map: its replay can then clear it again and take the same spare trials (the
        # remap's short states get aimed at).
        walk = op in (Opcode.PROGRAM_MATRIX, Opcode.REFRESH) and self.p.spare_remap
        cleared = walk and bool(self.words["REMAP_CONTROL"] & 1) and (self.repair or r.random() < 0.5)
        if cleared:
            await self.set("REMAP_CONTROL", clear=1)
        conductances = np.asarray(self.afe.crossbar.conductance_s).copy()
        # The pulses' noise comes from the AFE model's generator in pulse order: a replay restores it.
        noise_state = self.afe.rng.bit_generator.state
        checked = await self.run(op, fields, disturbance, offset)
        # Always for the commands whose blocks have short states to aim at (the ANLS sequencer,
        # the Refiner, the calibrator, the remap's spare trials).
        trials = cleared and any(b == "remap" for b, _, _ in self.trace)
        if checked and self.trace and (op in (Opcode.RUN_NMF, Opcode.REFINE, Opcode.CALIBRATE) or trials
                                       or r.random() < 0.5):
            if op is Opcode.RUN_NMF and not self.nmf_synced:
                return
            await self.replay(op, fields, conductances, noise_state, walk=walk, cleared=cleared)

    async def replay(self, op: Opcode, fields: dict[str, dict[str, int]], conductances: np.ndarray,
                     noise_state: dict[str, Any], *, walk: bool, cleared: bool) -> None:
        """Replays of the golden-checked run just made, from the same conductances, pulse noise,
        ADC latency (and NMF problem, and cleared map), so that each goes through the same states
        at the same cycles, with an abort or soft reset aimed at one of them. Coverage-directed:
        a state whose abort exit (``ABORT_EXITS``) no run has taken yet (this one or the runs
        before, ``prior_coverage``) and that the bus can reach (not before ``min_aim_offset``);
        up to ``max_replays`` (an option) while such states are left. Without one, a single
        replay aims at a block (the command's own first), then, 85% of the time, a state with an
        outgoing transition not seen yet."""
        r = self.rng
        start_ps = self._last_start_ps
        path = [(b, st, (t - start_ps) // self.period_ps) for b, st, t in self.trace
                if b != BUS_BLOCK and st != "Idle"]
        if walk and not cleared:   # the map the run started from is gone: no spare trials again
            path = [step for step in path if step[0] != "remap"] or path
        own = self._block_of(op)
        self.keep_latency = self.adc_latency
        try:
            for attempt in range(int(self.options["max_replays"])):
                reachable = [step for step in path if step[2] >= self.min_aim_offset]
                hits = merge([self.prior_hits, self.coverage.hits()])
                open_exits = sorted({(b, st) for b, st, _ in reachable
                                     if hits.get(f"fsm.{b}.transition", {}).get(f"{st}->{ABORT_EXITS.get(b)}") == 0})
                if open_exits:
                    block, state = open_exits[int(r.integers(0, len(open_exits)))]
                    self.stats["replays aimed at an open abort exit"] += 1
                elif attempt:
                    break
                else:
                    block, state = self._fallback_target(reachable or path, hits, own)
                cycles = [c for b, st, c in (reachable or path) if (b, st) == (block, state)]
                offset = cycles[int(r.integers(0, len(cycles)))]
                if op is Opcode.RUN_NMF:
                    await self.reload_nmf()
                if cleared:
                    await self.set("REMAP_CONTROL", clear=1)
                now = _now_ps() / 1e12
                self.afe.set_conductances(conductances, now)
                self.golden.afe.set_conductances(conductances, now)
                self.afe.rng.bit_generator.state = noise_state
                self.stats["replays"] += 1
                await self.run(op, fields, str(r.choice(["abort", "abort", "soft_reset"])), max(0, offset),
                               aim=(block, state))
        finally:
            self.keep_latency = None

    def _fallback_target(self, path: list[tuple[str, str, int]], hits: dict[str, dict[str, int]],
                         own: str) -> tuple[str, str]:
        """A block (the command's own first), then, 85% of the time, a state of ``path`` with an
        outgoing transition not seen yet."""
        r = self.rng
        targets = sorted({(b, st) for b, st, _ in path})
        open_targets = [(b, st) for b, st in targets
                        if any(n == 0 and name.startswith(f"{st}->")
                               for name, n in hits[f"fsm.{b}.transition"].items())]
        if open_targets and r.random() < 0.85:
            targets = open_targets
        blocks = sorted({b for b, _ in targets})
        block = own if own in blocks and r.random() < 0.6 else blocks[int(r.integers(0, len(blocks)))]
        states = [st for b, st in targets if b == block]
        return block, states[int(r.integers(0, len(states)))]

    async def refused(self, opcode: int, fields: dict[str, dict[str, int]], refusal: ErrorCode, detail: int) -> None:
        await self.write(self.offsets["IRQ_STATUS"], 0x7)          # clear done/error/over_range
        before = await self._counters()
        await self.start_command()
        status = await self.read_status()
        expected = {"busy": 0, "done": 1, "error": refusal.value, "error_detail": detail}
        self.check(status == expected, f"opcode {opcode} with {fields}: STATUS {status}, expected {expected}")
        self.check(await self._counters() == before, "a refused command changed a counter")
        irq = await self.read(self.offsets["IRQ_STATUS"])
        self.check(irq & 0b11 == (0b01 if refusal == ErrorCode.NONE else 0b11),
                   f"IRQ_STATUS 0b{irq:03b} after opcode {opcode} ({refusal.name})")
        self.coverage.sample("command.error", refusal.name)
        self.stats["refusals" if refusal != ErrorCode.NONE else "nops"] += 1
        self.status = expected

    async def run(self, op: Opcode, fields: dict[str, dict[str, int]], disturbance: str,
                  offset: int | None, aim: tuple[str, str] | None = None) -> bool:
        """Run an accepted command with ``disturbance`` ("none", "abort", "soft_reset", "busy",
        "mute"; abort and soft reset strobed ``offset`` cycles after the start strobe) and check
        it; True when it was checked against the golden model."""
        r, p = self.rng, self.p
        await self.write(self.offsets["IRQ_STATUS"], 0x7)
        irq_before = await self.read(self.offsets["IRQ_STATUS"])
        before = await self._counters()
        if disturbance == "mute":
            self.binding.stop()
        start_ps = await self.start_command()
        self._last_start_ps = start_ps
        snapshot: dict[str, str] = {}
        action_ps = 0
        if disturbance in ("abort", "soft_reset"):
            assert offset is not None
            elapsed = (_now_ps() - start_ps) // self.period_ps
            self.min_aim_offset = self.write_latency + elapsed
            wait = offset - self.write_latency - elapsed
            if wait > 0:
                await ClockCycles(self.dut.clk, wait)
            strobe_name = f"control__{disturbance}"

            async def at_strobe() -> None:
                nonlocal action_ps
                await RisingEdge(getattr(self.dut, strobe_name))
                action_ps = _now_ps()
            watcher = cocotb.start_soon(at_strobe())
            await self.set("CONTROL", **{disturbance: 1})
            self.check(watcher.done(), f"CONTROL.{disturbance} strobe not seen")
            snapshot.update(self.states_at(action_ps))
            if aim is not None:
                self.stats["aimed disturbances"] += 1
                self.stats["aimed disturbances that hit their state"] += snapshot.get(aim[0]) == aim[1]
                cocotb.log.info("%s %s aimed at %s in cycle %d: strobe in cycle %d, %s there", op.name, disturbance,
                                aim, offset, (action_ps - start_ps) // self.period_ps, snapshot.get(aim[0]))
            running = [b for b in self.command_blocks if snapshot.get(b, "Idle") != "Idle"]
            # The outermost block that runs (the ANLS sequencer, the Refiner, the calibrator and
            # the remap run the others).
            target = next((b for b in OUTER_BLOCKS if b in running), running[0] if running else IDLE_TARGET)
            self.coverage.sample_cross("control.action_x_target", disturbance, target)
        elif disturbance == "busy":
            await ClockCycles(self.dut.clk, int(r.integers(0, 40)))
            seen: dict[str, int] = {}

            async def second_start() -> None:
                await RisingEdge(self.dut.control__start)
                seen["t"] = _now_ps()
            watcher = cocotb.start_soon(second_start())
            await self.set("CONTROL", start=1)
            self.check(watcher.done(), "second CONTROL.start strobe not seen")
            block = self._block_of(op)
            state = self.states_at(seen.get("t", 0))[block]
            status = await self.read_status()
            if state == "Idle":
                # The command had ended: the second start ran it again (checked by outcome only).
                disturbance = "restart"
            elif status["busy"]:
                self.check(status["error"] == ErrorCode.BUSY.value and status["error_detail"] == op.value,
                           f"a start while {op.name} runs: STATUS {status}, expected BUSY with detail {op.value}")
                self.coverage.sample("command.error", "BUSY")
                self.stats["busy refusals"] += 1
        await self.wait_idle()
        status = await self.read_status()
        cocotb.log.info("%s %s offset %s: STATUS %s, states %s", op.name, disturbance, offset, status, self.state)
        counters = await self._counters()
        self.durations[op.name] = (_now_ps() - start_ps) // self.period_ps
        self.check(status["busy"] == 0, f"{op.name}: busy after every block is idle: {status}")
        if status["error"] in {e.value for e in ErrorCode}:
            self.coverage.sample("command.error", ErrorCode(status["error"]).name)
        self.check(_value(self.dut.afe__mode) == AFEMode.IDLE.value and _value(self.dut.afe__loop) == 0,
                   f"{op.name}: the AFE is not left idle with the loop open")
        if disturbance in ("none", "busy"):
            if disturbance == "busy":
                irq = await self.read(self.offsets["IRQ_STATUS"])
                self.check(irq & 0b10 == 0b10, f"{op.name}: IRQ_STATUS 0b{irq:03b} after a refused second start "
                                               f"(error expected)")
            await self._check_with_golden(op, fields, start_ps, status, before, counters)
            self.stats["golden-checked commands"] += 1
            return True
        if disturbance == "restart":
            self.check(status["done"] == 1, f"{op.name} started again after its end: STATUS {status}")
            self.stats["second starts after the end"] += 1
        elif disturbance == "mute":
            # A command that reaches the AFE times out; RUN_NMF may end before (EXPONENT_RANGE,
            # or nothing to program or solve).
            # (REFINE with R = 0 ends before its first solve.)
            used_afe = any(b not in (BUS_BLOCK, "anls", "refiner") for b, _, _ in self.trace)
            allowed = [ErrorCode.ADC_TIMEOUT.value] if used_afe else [ErrorCode.NONE.value, ErrorCode.EXPONENT_RANGE.value]
            self.check(status["done"] == 1 and status["error"] in allowed,
                       f"{op.name} with a silent AFE: STATUS {status}, expected "
                       f"{' or '.join(ErrorCode(a).name for a in allowed)}")
            self.stats["silent-AFE timeouts"] += 1
        elif disturbance == "abort":
            self._check_abort(op, snapshot, action_ps, status)
            self.check((self.afe.dac_codes == p.dac_zero_code).all(), f"{op.name} aborted: DACs not at zero")
        else:
            ran = any(snapshot.get(b, "Idle") != "Idle" for b in self.command_blocks)
            if ran:
                self.check(status == {"busy": 0, "done": 0, "error": 0, "error_detail": 0},
                           f"{op.name} soft-reset in {snapshot}: STATUS {status}, expected all clear")
                self.check(all(v == 0 for v in counters.values()),
                           f"{op.name} soft-reset: counters {counters}, expected all 0 (cleared, the "
                           f"forgotten command not counted)")
                # done/error: the forgotten command's outcome is not reported (over_range may be
                # set by samples taken before the reset).
                irq = await self.read(self.offsets["IRQ_STATUS"])
                self.check(irq & 0b11 == irq_before & 0b11,
                           f"{op.name} soft-reset: IRQ_STATUS 0b{irq:03b}, was 0b{irq_before:03b} (a forgotten "
                           f"command reports no outcome)")
                self.stats["soft resets of a running command"] += 1
        self.status = status
        await self.resync()
        return False

    def _sample_retry(self, limit: int, exponent: int, over_range_count: int, words: dict[int, int]) -> None:
        """The over-range retry's outcome of a golden-checked host solve (coverage.RETRY_OUTCOMES)."""
        if limit == 0:
            outcome = "off-over-range" if over_range_count else None
        elif exponent == 0:
            outcome = "in-range" if not over_range_count else None
        else:
            last_over = any(int(w) >> self.p.adc_bits & 1 for w in words.values())
            outcome = "exhausted" if exponent == limit and last_over else "resolved"
        if outcome is not None:
            self.coverage.sample("command.solve_retry", outcome)
            self.stats[f"host solves, retry {outcome}"] += 1

    @staticmethod
    def _block_of(op: Opcode) -> str:
        if op is Opcode.CALIBRATE:
            return "calibrator"
        if op is Opcode.REFINE:
            return "refiner"
        return "anls" if op is Opcode.RUN_NMF else ("sequencer" if op in SOLVE_OPCODES else "programmer")

    def _check_abort(self, op: Opcode, snapshot: dict[str, str], action_ps: int, status: dict[str, int]) -> None:
        block = self._block_of(op)
        state = snapshot.get(block, "Idle")
        subs = [snapshot.get(b, "Idle") for b in self.command_blocks if b != block]
        # RUN_NMF ends as its block ends when that is already leaving; the Refiner takes an abort
        # in its solve's done cycle (ABORTED) but not in a timeout's safe exit.
        leaving = NO_ABORT_STATES[2:] + (("Done",) if op is Opcode.RUN_NMF else ())
        if state in NO_ABORT_STATES or (op in (Opcode.RUN_NMF, Opcode.REFINE) and any(s in leaving for s in subs)):
            self.check(status["done"] == 1 and status["busy"] == 0, f"{op.name}: abort in {state}: STATUS {status}")
            return
        self.check(status == {"busy": 0, "done": 1, "error": ErrorCode.ABORTED.value, "error_detail": 0},
                   f"{op.name} aborted in {block} state {state}: STATUS {status}, expected ABORTED")
        self.stats["aborts of a running command"] += 1
        if op is Opcode.REFINE:
            # In its own states the Refiner is done in the next cycle; in a solve, one cycle after
            # the solve sequencer's safe exit (ROWS + 2).
            cycles = (self.entered.get((block, "Done"), 0) - action_ps) // self.period_ps
            solving = snapshot.get("sequencer", "Idle") not in ("Idle", "Done")   # in Done the Refiner takes it
            expected = self.p.rows + 3 if solving else 1
            self.check(cycles == expected, f"REFINE aborted in {state} (sequencer {snapshot.get('sequencer')}): done "
                                           f"{cycles} cycles after the abort, expected {expected}")
        elif op is not Opcode.RUN_NMF:
            cycles = (self.entered.get((block, "Done"), 0) - action_ps) // self.period_ps
            self.check(cycles == self.p.rows + 2,
                       f"{op.name} aborted in {state}: done {cycles} cycles after the abort, documented ROWS + 2 = "
                       f"{self.p.rows + 2}")

    async def _check_with_golden(self, op: Opcode, fields: dict[str, dict[str, int]], start_ps: int,
                                 status: dict[str, int], before: dict[str, int], after: dict[str, int]) -> None:
        p, golden = self.p, self.golden
        start_s = start_ps / 1e12
        avg_log2 = fields["TIMING"]["adc_samples"].bit_length() - 1
        watchdog = fields["WATCHDOG"]["cycles"]
        delta = {name: after[name] - before[name] for name in after}
        col_mask = fields["COL_ENABLE"]["enable"] & ((1 << p.total_cols) - 1)
        enabled_cols = [c for c in range(p.total_cols) if col_mask >> c & 1]
        settings = ProgramSettings(
            tolerance=fields["PROGRAM_TOLERANCE"]["codes"], amp_start=fields["PROGRAM_AMPLITUDE"]["start"],
            amp_step=fields["PROGRAM_AMPLITUDE"]["step"], amp_max=fields["PROGRAM_AMPLITUDE_MAX"]["max"],
            pulse_width=fields["PROGRAM_PULSE"]["width"], pulse_budget=fields["PROGRAM_PULSES"]["max_pulses"],
            avg_log2=avg_log2, read_settle=fields["READ_SETTLE"]["cycles"])
        row, col = fields["COMMAND"]["row"], fields["COMMAND"]["col"]
        detail = 0
        if "CAL_CONTROL" in fields:   # the corrections the solves apply (the host may have changed them)
            control = fields["CAL_CONTROL"]
            golden.cal_enable = CalEnable(adc=bool(control["adc"]), dac=bool(control["dac"]),
                                          opamp=bool(control["opamp"]))
        if op is Opcode.CALIBRATE:
            exp = golden.calibrate(col_mask=col_mask, row_mask=self.row_mask, avg_log2=avg_log2,
                                   cal_settle=fields["CAL_SETTLE"]["cycles"], dac_settle=fields["DAC_SETTLE"]["cycles"],
                                   analog_settle=fields["ANALOG_SETTLE"]["cycles"], watchdog_limit=watchdog,
                                   start_s=start_s)
            block, error, done = "calibrator", exp.error, exp.done_cycle
            detail = enabled_cols[0] if error == Error.ADC_TIMEOUT else (
                min(exp.failed_count, 0xFFFF) if error == Error.CAL_FAILED else 0)
            words = [await self.read_window_word("CAL_COEFF", i) for i in range(len(golden.cal_words))]
            self.check(words == [int(w) for w in golden.cal_words],
                       f"CALIBRATE: CAL_COEFF {words}, golden {[int(w) for w in golden.cal_words]}")
            outcome = (await self.read_field("CAL_QUALITY", "residual"), await self.read_field("CAL_FAILED", "count"))
            self.check(outcome == (exp.quality, exp.failed_count),
                       f"CALIBRATE: quality, failed {outcome}, golden {exp.quality}, {exp.failed_count}")
        elif op in SOLVE_OPCODES:
            limit = fields["SOLVE_RETRIES"]["limit"] if "SOLVE_RETRIES" in fields else 0
            exp = golden.solve_with_retries(Mode[op.name], retries=limit, row_mask=self.row_mask, col_mask=col_mask,
                                            avg_log2=avg_log2, dac_settle=fields["DAC_SETTLE"]["cycles"],
                                            analog_settle=fields["ANALOG_SETTLE"]["cycles"],
                                            watchdog_limit=watchdog, start_s=start_s)
            block, error, done = "sequencer", exp.error, exp.done_cycle
            if error == Error.ADC_TIMEOUT:
                detail = golden.column_map[enabled_cols[len(exp.words)]]   # the physical column
            self.check(delta["OVER_RANGE_COUNT"] == exp.over_range_count,
                       f"{op.name}: over-range count +{delta['OVER_RANGE_COUNT']}, golden {exp.over_range_count}")
            runs = exp.retries + (error == Error.NONE)
            self.check(delta["SOLVE_COUNT"] == runs, f"{op.name}: SOLVE_COUNT +{delta['SOLVE_COUNT']}, golden {runs}")
            if "SOLVE_RETRIES" in fields:
                exponent = await self.read_field("SOLVE_EXPONENT", "exponent")
                self.check((exponent, delta["RANGE_RETRY_COUNT"]) == (exp.exponent, exp.retries),
                           f"{op.name} (SOLVE_RETRIES {limit}): SOLVE_EXPONENT {exponent}, RANGE_RETRY_COUNT "
                           f"+{delta['RANGE_RETRY_COUNT']}; golden {exp.exponent}, {exp.retries}")
                self._sample_retry(limit, exp.exponent, exp.over_range_count, exp.words)
        elif op is Opcode.REFINE:
            control, gain = fields["REFINE_CONTROL"], fields["REFINE_GAIN"]
            refine_cols = col_mask & ((1 << p.cols) - 1)
            exp = golden.refine(passes=control["passes"], a_offset=control["a_offset"], gain=gain["gain"],
                                gain_shift=gain["shift"], headroom=control["headroom"], row_mask=self.row_mask,
                                col_mask=refine_cols, avg_log2=avg_log2, dac_settle=fields["DAC_SETTLE"]["cycles"],
                                analog_settle=fields["ANALOG_SETTLE"]["cycles"], watchdog_limit=watchdog,
                                start_s=start_s)
            block, error, done = "refiner", exp.error, exp.done_cycle
            if error == Error.ADC_TIMEOUT:
                # Only a watchdog below the conversion time times out: the first conversion.
                detail = golden.column_map[(refine_cols & -refine_cols).bit_length() - 1]
            x = [await self.read_window_word("REFINE_X", j) for j in range(p.cols)]
            self.check(x == [int(v) for v in golden.refine_x], f"REFINE ({error.name}): REFINE_X {x}, golden "
                                                                 f"{golden.refine_x.tolist()}")
            got = {n: await self.read_field("REFINE_STATUS", n) for n in ("passes_done", "residual_msb", "over_range")}
            want = {"passes_done": exp.passes_done, "residual_msb": max(exp.peaks[-1], 0) if exp.peaks else 0,
                    "over_range": int(exp.over_range)}
            self.check(got == want, f"REFINE ({error.name}): REFINE_STATUS {got}, golden {want}")
            self.check(delta["SOLVE_COUNT"] == exp.passes_done,
                       f"REFINE: SOLVE_COUNT +{delta['SOLVE_COUNT']}, golden passes {exp.passes_done}")
            self.stats["refine passes"] += exp.passes_done
        elif op is Opcode.READ_CELL:
            exp = golden.read_cell(row, col, avg_log2=avg_log2, read_settle=fields["READ_SETTLE"]["cycles"],
                                   watchdog_limit=watchdog, start_s=start_s)
            block, error, done = "programmer", exp.error, exp.done_cycle
            if error == Error.ADC_TIMEOUT:
                detail = row * p.total_cols + golden.column_map[col]
        elif op in (Opcode.PROGRAM_CELL, Opcode.PROGRAM_MATRIX, Opcode.REFRESH):
            if op is Opcode.PROGRAM_CELL:
                exp = golden.program_cell(row, col, settings, watchdog_limit=watchdog, start_s=start_s)
            else:
                # The host command: the walk, then the remap's spare trials when enabled.
                run_command = golden.refresh if op is Opcode.REFRESH else golden.program_command
                exp = run_command(settings, row_mask=self.row_mask, col_mask=col_mask, watchdog_limit=watchdog,
                                  start_s=start_s)
            block, error, done = "programmer", exp.error, exp.done_cycle
            if error in (Error.ADC_TIMEOUT, Error.PROGRAM_TIMEOUT):
                detail = exp.timeout_cell
            elif error == Error.CELLS_FAILED:
                detail = min(exp.failed_count, 0xFFFF)
            failed_cells = sum(cell.failed for cell in exp.cells)
            self.check((delta["PULSE_COUNT"], delta["FAILED_CELL_COUNT"]) == (exp.pulse_count, failed_cells),
                       f"{op.name}: pulses, failed +{delta['PULSE_COUNT']}, +{delta['FAILED_CELL_COUNT']}; golden "
                       f"{exp.pulse_count}, {failed_cells}")
            if "REMAP_COUNT" in delta:
                self.check(delta["REMAP_COUNT"] == len(exp.remaps),
                           f"{op.name}: REMAP_COUNT +{delta['REMAP_COUNT']}, golden remaps {exp.remaps}")
                if exp.remaps:
                    self.stats["spare remaps"] += len(exp.remaps)
            if op is Opcode.REFRESH and error in (Error.NONE, Error.CELLS_FAILED):
                result = {n: await self.read_field("REFRESH_RESULT", n) for n in ("checked", "reprogrammed")}
                self.check(result == {"checked": exp.checked, "reprogrammed": exp.reprogrammed},
                           f"REFRESH: REFRESH_RESULT {result}, golden {exp.checked}, {exp.reprogrammed}")
        else:
            assert op is Opcode.RUN_NMF
            exp = golden.run_nmf(m=fields["NMF_SIZE"]["m"], n=fields["NMF_SIZE"]["n"], k=fields["NMF_SIZE"]["k"],
                                 iterations=fields["NMF_ITERATIONS"]["count"], settings=settings,
                                 dac_settle=fields["DAC_SETTLE"]["cycles"],
                                 analog_settle=fields["ANALOG_SETTLE"]["cycles"],
                                 g_offset=fields["NMF_WINDOW_BASE"]["code"],
                                 g_span=fields["NMF_WINDOW_SPAN"]["codes"],
                                 range_retries=fields["NMF_ITERATIONS"]["range_retries"],
                                 watchdog_limit=watchdog, start_s=start_s)
            block, error, done = "anls", exp.error, exp.done_cycle
            detail = None if error in (Error.ADC_TIMEOUT, Error.PROGRAM_TIMEOUT, Error.CELLS_FAILED) else exp.detail
            self.check(delta["PULSE_COUNT"] == exp.pulse_count,
                       f"RUN_NMF: pulses +{delta['PULSE_COUNT']}, golden {exp.pulse_count}")
        got = {"busy": status["busy"], "done": status["done"], "error": status["error"]}
        self.check(got == {"busy": 0, "done": 1, "error": int(error)},
                   f"{op.name}: STATUS {status}, golden error {error.name}")
        if detail is not None:
            self.check(status["error_detail"] == detail,
                       f"{op.name} ({error.name}): error_detail {status['error_detail']}, expected {detail}")
        cycles = self._cycles(start_ps, block)
        self.check(cycles == done, f"{op.name}: {block} done in cycle {cycles}, golden {done}")
        results = [await self.read_window_word("RESULTS", i) for i in range(p.total_cols)]
        self.check(results == [int(w) for w in golden.results],
                   f"{op.name}: RESULTS {results}, golden {list(golden.results)}")
        if p.spare_remap:
            column_map = [(await self.read_window_word("REMAP_MAP", c)) & 0xFF for c in range(p.total_cols)]
            self.check(column_map == golden.column_map, f"{op.name}: REMAP_MAP {column_map}, golden {golden.column_map}")
        if op in PROGRAMMER_OPCODES or op in (Opcode.RUN_NMF, Opcode.REFRESH):
            fault_map = [await self.read_window_word("FAULT_MAP", i) for i in range(p.rows)]
            self.check(fault_map == [int(w) for w in golden.fault_map],
                       f"{op.name}: FAULT_MAP {fault_map}, golden {list(golden.fault_map)}")
            if "REFINE_A" in self.offsets:   # write-verify's final reads
                words = [await self.read_window_word("REFINE_A", i) for i in range(golden.refine_a.size)]
                self.check(words == golden.refine_a.reshape(-1).tolist(),
                           f"{op.name}: REFINE_A {words}, golden {golden.refine_a.reshape(-1).tolist()}")
            conductance_equal = np.array_equal(self.afe.crossbar.conductance_s, golden.afe.crossbar.conductance_s)
            self.check(conductance_equal, f"{op.name}: the bound AFE's conductances differ from the golden twin's")
        if op is Opcode.RUN_NMF:
            exp_words = {"NMF_W_EXP": exponent_word(golden.nmf_w_exp, p.exp_bits),
                         "NMF_H_EXP": exponent_word(golden.nmf_h_exp, p.exp_bits)}
            for window, expected in (("NMF_W", golden.nmf_w.reshape(-1)), ("NMF_H", golden.nmf_h.reshape(-1)),
                                     *exp_words.items()):
                words = [await self.read_window_word(window, i) for i in range(len(expected))]
                self.check(words == [int(w) for w in expected],
                           f"RUN_NMF ({error.name}): {window} {words}, golden {[int(w) for w in expected]}")
            target = [await self.read_window_word("TARGET", i) for i in range(p.cell_count)]
            self.check(target == [int(t) for t in golden.targets.reshape(-1)],
                       f"RUN_NMF: TARGET {target}, golden {golden.targets.reshape(-1).tolist()}")
        self.check(not self.binding.all_violations, f"AFE protocol: {self.binding.all_violations}")
        self.binding.violations.clear()
        self.afe.violations.clear()
        self.status = status
        self.counters = after

    async def idle_control(self) -> None:
        """An abort or a soft reset with nothing running."""
        action = str(self.rng.choice(["abort", "soft_reset"]))
        before = await self.read_status()
        self.check(self._all_idle() and not before["busy"], f"idle {action}: a command runs ({self.state}, {before}), writes {self.recent}")
        await self.set("CONTROL", **{action: 1})
        self.coverage.sample_cross("control.action_x_target", action, IDLE_TARGET)
        status = await self.read_status()
        if action == "abort":
            self.check(status == before, f"abort while idle changed STATUS {before} to {status}")
        else:
            self.check(status == {"busy": 0, "done": 0, "error": 0, "error_detail": 0},
                       f"soft reset: STATUS {status}, expected all clear (states {self.state}, last trace "
                       f"{self.trace[-6:]}, now {_now_ps()})")
            counters = await self._counters()
            self.check(all(v == 0 for v in counters.values()), f"soft reset: counters {counters}, expected 0")
            self.counters = counters
        self.status = status


def _seed() -> int:
    options = _options()
    if options.get("seed") is not None:
        return int(options["seed"])
    return int(getattr(cocotb, "RANDOM_SEED", 0) or os.environ.get("COCOTB_RANDOM_SEED", 0))


@cocotb.test()
async def random_commands(dut) -> None:
    """A seeded random stream of bus accesses, commands and disturbances; every check passes."""
    options = _options()
    seed = _seed()
    bench = RandomBench(dut, options, seed)
    cocotb.log.info("random bench: seed %d, %d steps", seed, options["steps"])
    try:
        await bench.start()
        for step in range(options["steps"]):
            for _ in range(int(bench.rng.integers(1, 5))):
                await bench.random_access()
            if bench.rng.random() < 0.08:
                await bench.idle_control()
            await bench.command_step()
        hits = bench.coverage.hits()
    finally:
        path = options.get("coverage_json")
        if path:
            write_json(Path(path), bench.coverage.hits(), seeds=[seed], stats=dict(bench.stats))
    hit, total = covered(hits)
    cocotb.log.info("checked: %s", dict(bench.stats))
    cocotb.log.info("coverage of this run: %d/%d bins\n%s", hit, total, report(hits))
    assert not bench.failures, f"{len(bench.failures)} checks failed (seed {seed}); first: {bench.failures[:5]}"


# --- make regress ---------------------------------------------------------------------------------

def run_seed(sim: str, seed: int, steps: int, folder: Path, prior: Path | None = None,
             max_replays: int = DEFAULT_OPTIONS["max_replays"]) -> tuple[bool, Path]:
    """One cocotb run of the bench with ``seed`` (its aimed replays directed by the coverage file
    ``prior``, if given; at most ``max_replays`` per command); (passed, coverage JSON)."""
    from anmf.hdl.controller import TOP_MODULE, verilog_text
    from anmf.testbench.sim import results_summary
    from anmf.testbench.simulators import run_bench

    folder.mkdir(parents=True, exist_ok=True)
    coverage_json = folder / f"coverage-{seed}.json"
    coverage_json.unlink(missing_ok=True)
    params = BuildParams(**DEFAULT_OPTIONS["params"])
    results = run_bench(sim=sim, verilog=verilog_text(params), toplevel=TOP_MODULE,
                        test_module="anmf.testbench.bench_random", name="random", seed=seed,
                        extra_env=bench_env(steps=steps, coverage_json=str(coverage_json), seed=seed,
                                            prior_coverage=str(prior) if prior is not None else None,
                                            max_replays=max_replays))
    tests, failed = results_summary(results)
    return tests > 0 and failed == 0 and coverage_json.is_file(), coverage_json


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m anmf.testbench.bench_random",
                                     description="constrained-random regression with merged coverage")
    parser.add_argument("--seeds", type=int, default=10, help="number of seeds (default 10)")
    parser.add_argument("--first-seed", type=int, default=1, help="first seed (default 1)")
    parser.add_argument("--sim", default="icarus", choices=["icarus", "verilator"])
    parser.add_argument("--steps", type=int, default=DEFAULT_OPTIONS["steps"], help="steps per seed")
    parser.add_argument("--goal", type=float, default=0.95, help="covered share required (default 0.95)")
    parser.add_argument("--prior", type=Path, default=None,
                        help="coverage file directing the first seed's aimed replays (to reproduce a seed of a "
                             "regression: its prior-SEED.json)")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.steps < 1:
        print("bench_random: error: --seeds and --steps must be at least 1", file=sys.stderr)
        return 2
    os.environ.pop("PYTEST_CURRENT_TEST", None)
    os.environ.pop("COCOTB_RANDOM_SEED", None)
    from anmf.testbench.simulators import BUILD_ROOT

    folder = BUILD_ROOT / f"random-{args.sim}"
    files, failed = [], []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        # Each seed aims its replays at what the seeds before it left open: it gets their merged
        # coverage (kept as prior-SEED.json, which reproduces the run with --prior).
        prior = args.prior
        if files:
            prior = folder / f"prior-{seed}.json"
            write_json(prior, merge(read_json(f)[0] for f in files), seeds=[s for f in files for s in read_json(f)[1]],
                       runs=len(files))
        try:
            ok, path = run_seed(args.sim, seed, args.steps, folder, prior)
        except (Exception, SystemExit) as exc:
            ok, path = False, folder / f"coverage-{seed}.json"
            print(f"[regress] seed {seed}: not run to the end: {type(exc).__name__}: {exc}", flush=True)
        if path.is_file():
            files.append(path)
        if not ok:
            failed.append(seed)
        status = "PASS" if ok else "FAIL"
        print(f"[regress] seed {seed} on {args.sim}: {status}"
              + (f", {covered(read_json(path)[0])[0]}/{covered(read_json(path)[0])[1]} bins" if path.is_file() else ""),
              flush=True)
    if not files:
        print("[regress] no coverage collected", flush=True)
        return 1
    hits = merge(read_json(f)[0] for f in files)
    merged = folder / "coverage-merged.json"
    stats = merge_stats(read_stats(f) for f in files)
    write_json(merged, hits, seeds=[s for f in files for s in read_json(f)[1]], runs=len(files), stats=stats)
    print(f"[regress] checked: {stats}")
    print(f"[regress] merged coverage of {len(files)} runs ({merged}):")
    print(report(hits, goal=args.goal), flush=True)
    if failed:
        print(f"[regress] failing seeds: {failed} (reproduce: python -m anmf.testbench.bench_random "
              f"--seeds 1 --first-seed SEED --sim {args.sim} --prior {folder}/prior-SEED.json, no --prior for the "
              f"first seed)")
    hit, total = covered(hits)
    return 0 if not failed and hit / total >= args.goal else 1


if __name__ == "__main__":
    sys.exit(main())
