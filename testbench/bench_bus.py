"""cocotb bench: the AXI4-Lite register file under back-pressure, error responses and
interleaved traffic, checked against a Python model of the documented access behaviour.

DUT: ``AXI4LiteRegisterFile(ControllerRegisters(params))`` (the runner, tests/test_bus_cocotb.py,
builds it and passes the register map's JSON description in ``ANMF_REGMAP_JSON``). The bench
takes every offset, field, access and reset value from that description, as a host driver
would: :class:`RegisterModel` is the documented behaviour (docs/registers.md), not a copy of
the RTL.

Pieces:

- stimulus: a sweep (every register written and read, every W1S bit alone) in the first
  phase, then random reads and writes (whole words and byte/half-word writes with their WSTRB,
  registers, window elements in and past their depth, unmapped gaps), drawn up front from a
  numpy Generator seeded with cocotb's per-test seed (``COCOTB_RANDOM_SEED`` reproduces a
  run); the list is written to ``bus_stimulus.json`` in the run folder;
- driver: cocotbext-axi's AxiLiteMaster, a writer and a reader task issuing concurrently (up
  to three operations queued per channel), with pause generators on AW/W/AR valid and on
  B/R ready (``set_pause_generator`` on the channel objects), phase by phase;
- monitor: the slave executes one access at a time and raises BVALID/RVALID when it is done,
  so the order of those rising edges is the order the register file saw the accesses; the
  monitor applies each to the model at that moment and checks BRESP, or RDATA/RRESP;
- checker: each issuing task compares what the master returned with the monitor's
  expectation; between phases the core side acts (RW1C sets, counter increments, STATUS,
  RESULTS and FAULT_MAP writes) and every register, window element and core-side port is
  compared with the model; W1S pulses are counted on the core side.

Only rising edges and the pause generators wake Python; no per-cycle polling.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.task import Task
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge
from cocotbext.axi import AxiLiteBus, AxiLiteMaster, AxiResp

__all__ = ["BusOp", "RegisterModel", "Target", "Phase", "PHASES", "address_pools", "draw_stimulus",
           "pause_pattern", "STIMULUS_FILE"]

WORD_BYTES = 4
WORD_MASK = 0xFFFF_FFFF
OKAY, SLVERR = int(AxiResp.OKAY), int(AxiResp.SLVERR)
#: Written next to results.xml (the simulator's working folder is the build folder).
STIMULUS_FILE = "bus_stimulus.json"
#: (byte offset in the word, length) of the writes and reads the bench issues; the first is a
#: whole word, the others give every contiguous WSTRB pattern cocotbext-axi produces.
ACCESS_SHAPES: tuple[tuple[int, int], ...] = ((0, 4), (0, 1), (1, 1), (2, 1), (3, 1), (0, 2), (1, 2),
                                               (2, 2), (0, 3), (1, 3))


# --- the documented register-file behaviour -----------------------------------------------------

@dataclass(frozen=True)
class Target:
    """What an address reaches: a register, a window element, or nothing (``kind`` "unmapped")."""

    kind: str                      #: "register", "memory", "vector" or "unmapped"
    name: str = ""
    index: int = 0                 #: window element (word) index


class RegisterModel:
    """The register file as docs/registers.md describes it, built from the JSON description.

    Bus side: :meth:`write` and :meth:`read` return the response (and data) a host must see.
    Core side: :meth:`core_drive` (R fields the controller drives), :meth:`core_set`
    (RW1C sets), :meth:`core_increment` (counters), :meth:`core_write_window` (RESULTS,
    FAULT_MAP); :meth:`core_outputs` is what the controller must see on its ports.
    """

    def __init__(self, description: Mapping[str, Any]):
        for key in ("registers", "windows", "address_width"):
            if key not in description:
                raise ValueError(f"register map description lacks {key!r}")
        self.address_width: int = description["address_width"]
        self.registers = {r["name"]: r for r in description["registers"]}
        self.windows = {w["name"]: w for w in description["windows"]}
        self._by_offset = {r["offset"]: r["name"] for r in description["registers"]}
        self.values: dict[tuple[str, str], int] = {}   # stored RW/W/RW1C fields, counters, core-driven R
        for reg in self.registers.values():
            for f in reg["fields"]:
                if f["kind"] != "constant":
                    self.values[(reg["name"], f["name"])] = 0 if f["kind"] == "counter" else f["reset"]
        self.elements: dict[str, list[int]] = {}
        for win in self.windows.values():
            if win["kind"] == "memory":
                self.elements[win["name"]] = [win["init"]] * win["depth"]
            else:
                self.elements[win["name"]] = [(win["reset"] >> (32 * w)) & WORD_MASK
                                              for w in range(win["depth"])]
        #: 1-bit W1S fields -> pulses a core must have seen.
        self.pulses: dict[tuple[str, str], int] = {
            (reg["name"], f["name"]): 0 for reg in self.registers.values() for f in reg["fields"]
            if f["access"] == "W1S" and f["width"] == 1}
        #: W1S strobe -> the counters it clears.
        self._cleared_by: dict[tuple[str, ...], list[tuple[str, str]]] = {}
        for reg in self.registers.values():
            for f in reg["fields"]:
                if f["kind"] == "counter":
                    strobe = tuple(f["cleared_by"].split("."))
                    self._cleared_by.setdefault(strobe, []).append((reg["name"], f["name"]))

    # ---- decoding --------------------------------------------------------------------------

    def target(self, address: int) -> Target:
        """Where ``address`` goes (the two low bits are ignored: word accesses)."""
        if not 0 <= address < 1 << self.address_width:
            raise ValueError(f"address must be from 0 to 0x{(1 << self.address_width) - 1:X}, "
                             f"not {address!r}")
        word_address = address - address % WORD_BYTES
        if word_address in self._by_offset:
            return Target("register", self._by_offset[word_address])
        for win in self.windows.values():
            start = win["offset"]
            if start <= word_address < start + WORD_BYTES * win["span"]:
                index = (word_address - start) // WORD_BYTES
                if index < win["depth"]:
                    return Target(win["kind"], win["name"], index)
                return Target("unmapped")   # past the build's depth
        return Target("unmapped")

    # ---- bus side --------------------------------------------------------------------------

    @staticmethod
    def lanes(address: int, length: int) -> tuple[int, int]:
        """(WSTRB, bit mask) of an access of ``length`` bytes at ``address`` within one word."""
        offset = address % WORD_BYTES
        if not 1 <= length <= WORD_BYTES - offset:
            raise ValueError(f"an access must stay inside one word: {length} bytes at byte {offset}")
        strobe = ((1 << length) - 1) << offset
        mask = sum(0xFF << (8 * lane) for lane in range(WORD_BYTES) if strobe >> lane & 1)
        return strobe, mask

    def write(self, address: int, length: int, data: int) -> int:
        """Apply a write of ``length`` bytes (``data``, little-endian) at ``address``; the response."""
        strobe, mask = self.lanes(address, length)
        written = (data << (8 * (address % WORD_BYTES))) & mask
        target = self.target(address)
        if target.kind == "unmapped":
            return SLVERR
        if target.kind == "register":
            reg = self.registers[target.name]
            if not reg["writable"]:
                return SLVERR
            for f in reg["fields"]:
                self._write_field(reg["name"], f, written, mask)
            return OKAY
        win = self.windows[target.name]
        if target.kind == "vector":
            low = 32 * target.index
            used = (1 << min(32, win["bits"] - low)) - 1   # bits past the vector ignore writes
            old = self.elements[win["name"]][target.index]
            self.elements[win["name"]][target.index] = ((old & ~mask) | written) & used
            return OKAY
        if win["access"] != "RW":
            return SLVERR
        needed = (1 << -(-win["width"] // 8)) - 1          # byte lanes holding element bits
        if strobe & needed != needed:
            return SLVERR
        self.elements[win["name"]][target.index] = written & ((1 << win["width"]) - 1)
        return OKAY

    def _write_field(self, reg: str, f: Mapping[str, Any], written: int, mask: int) -> None:
        width_mask = (1 << f["width"]) - 1
        bits = (written >> f["lsb"]) & width_mask
        lanes = (mask >> f["lsb"]) & width_mask
        key = (reg, f["name"])
        if f["access"] in ("RW", "W"):
            self.values[key] = (self.values[key] & ~lanes) | bits
        elif f["access"] == "RW1C":
            self.values[key] &= ~bits
        elif f["access"] == "W1S" and bits:
            if key in self.pulses:
                self.pulses[key] += 1
            for counter in self._cleared_by.get(key, []):
                self.values[counter] = 0

    def read_word(self, address: int) -> tuple[int, int]:
        """(word, response) of a read at ``address``; a refused read returns 0."""
        target = self.target(address)
        if target.kind == "unmapped":
            return 0, SLVERR
        if target.kind == "register":
            reg = self.registers[target.name]
            word = 0
            for f in reg["fields"]:
                if f["access"] in ("W", "W1S"):
                    continue
                value = f["reset"] if f["kind"] == "constant" else self.values[(reg["name"], f["name"])]
                word |= value << f["lsb"]
            return word, OKAY
        return self.elements[target.name][target.index], OKAY

    def read(self, address: int, length: int) -> tuple[bytes, int]:
        """The bytes a read of ``length`` bytes at ``address`` returns, and the response."""
        self.lanes(address, length)
        word, resp = self.read_word(address)
        offset = address % WORD_BYTES
        return word.to_bytes(WORD_BYTES, "little")[offset:offset + length], resp

    # ---- core side -------------------------------------------------------------------------

    def core_drive(self, reg: str, name: str, value: int) -> None:
        """A read-only field the controller drives now shows ``value``."""
        self.values[(reg, name)] = value

    def core_set(self, reg: str, name: str, bits: int) -> None:
        """The controller sets RW1C bits."""
        self.values[(reg, name)] |= bits

    def core_increment(self, reg: str, name: str, amount: int) -> None:
        """The controller adds ``amount`` to a counter (saturating, as documented)."""
        width = next(f["width"] for f in self.registers[reg]["fields"] if f["name"] == name)
        self.values[(reg, name)] = min(self.values[(reg, name)] + amount, (1 << width) - 1)

    def core_write_window(self, window: str, index: int, data: int, enable: int) -> None:
        """The controller writes the enabled bits of element ``index``."""
        old = self.elements[window][index]
        self.elements[window][index] = (old & ~enable) | (data & enable)

    def core_outputs(self) -> dict[str, int]:
        """Port name -> value for what the register file hands the controller: RW/W/RW1C fields
        (``<reg>__<field>``) and vector windows (``<window>``, the whole vector)."""
        outputs: dict[str, int] = {}
        for reg in self.registers.values():
            for f in reg["fields"]:
                if f["kind"] == "field" and f["access"] in ("RW", "W", "RW1C"):
                    outputs[f"{reg['name'].lower()}__{f['name']}"] = self.values[(reg["name"], f["name"])]
        for win in self.windows.values():
            if win["kind"] == "vector":
                outputs[win["name"].lower()] = sum(word << (32 * w)
                                                   for w, word in enumerate(self.elements[win["name"]]))
        return outputs

    def field_value(self, reg: str, name: str) -> int:
        return self.values[(reg, name)]

    def irq_line(self) -> int:
        """The interrupt output as docs/registers.md states it: high while a set IRQ_STATUS
        bit is enabled in IRQ_ENABLE, or (in maps with NMF_IRQ) progress and progress_enable
        are both set, or (in maps with PROG_IRQ) refresh_due or remap with its enable."""
        causes = [f["name"] for f in self.registers["IRQ_STATUS"]["fields"]]
        line = any(self.values[("IRQ_STATUS", c)] and self.values[("IRQ_ENABLE", c)] for c in causes)
        if "NMF_IRQ" in self.registers:
            line = line or bool(self.values[("NMF_IRQ", "progress")]
                                and self.values[("NMF_IRQ", "progress_enable")])
        if "PROG_IRQ" in self.registers:
            line = line or any(self.values[("PROG_IRQ", cause)] and self.values[("PROG_IRQ", f"{cause}_enable")]
                               for cause in ("refresh_due", "remap"))
        return int(line)


# --- stimulus -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class BusOp:
    """One AXI4-Lite access as the master issues it."""

    write: bool
    address: int      #: byte address (its low bits place a partial access in the word)
    length: int       #: bytes, within one word
    data: int = 0     #: write payload, ``length`` bytes little-endian


@dataclass(frozen=True)
class Phase:
    """A stretch of traffic with one back-pressure setting (pause probabilities per cycle)."""

    name: str
    operations: int
    valid_pause: float = 0.0     #: AW, W and AR valid held low
    ready_pause: float = 0.0     #: B and R ready held low
    stall_cycles: int = 0        #: > 0: pauses come in bursts of up to this many cycles


PHASES: tuple[Phase, ...] = (
    Phase("no back-pressure", 60),
    Phase("B and R ready back-pressure", 60, ready_pause=0.6),
    Phase("AW, W and AR valid gaps", 60, valid_pause=0.6),
    Phase("both, in long stalls", 60, valid_pause=0.3, ready_pause=0.3, stall_cycles=12),
)


#: Byte addresses below this are scanned for unmapped gaps between registers and windows.
GAP_SCAN_END = 0x4000


def address_pools(model: RegisterModel, avoid: frozenset[int] = frozenset()) -> dict[str, list[list[int]]]:
    """Word addresses by what they reach, in groups the stimulus picks uniformly before picking
    an address (so a one-word window is hit as often as a 32-word one): registers (one group
    each), registers with strobes or clear-on-write bits, writable and read-only window
    elements and indices past a window's depth (a group per window), unmapped gaps; without
    the addresses in ``avoid``."""
    registers = [[r["offset"]] for r in model.registers.values()]
    # Their effects reach other registers (counters cleared, IRQ line): worth extra traffic.
    strobes = [[r["offset"]] for r in model.registers.values()
               if any(f["access"] in ("W1S", "RW1C") for f in r["fields"])]
    elements, read_only, past_depth = [], [], []
    for win in model.windows.values():
        in_depth = [win["offset"] + WORD_BYTES * i for i in range(win["depth"])]
        (read_only if win["access"] == "R" else elements).append(in_depth)
        past = list(range(win["depth"], min(win["span"], win["depth"] + 4)))
        if win["span"] > win["depth"] + 4:
            past.append(win["span"] - 1)
        past_depth.append([win["offset"] + WORD_BYTES * i for i in past])
    gaps = [[a for a in range(0, min(GAP_SCAN_END, 1 << model.address_width), WORD_BYTES)
             if model.target(a).kind == "unmapped"]]
    pools = {"register": registers, "strobe": strobes, "element": elements, "read_only": read_only,
             "past_depth": past_depth, "gap": gaps}
    kept = {kind: [[a for a in group if a not in avoid] for group in groups] for kind, groups in pools.items()}
    return {kind: [group for group in groups if group] for kind, groups in kept.items()}


#: Kinds of target and how often the stimulus picks each ("anywhere": the whole address space).
TARGET_WEIGHTS: dict[str, float] = {"register": 0.36, "strobe": 0.06, "element": 0.28,
                                    "read_only": 0.06, "past_depth": 0.10, "gap": 0.08,
                                    "anywhere": 0.06}


def draw_stimulus(model: RegisterModel, rng: np.random.Generator, count: int,
                  pools: Mapping[str, list[list[int]]], *,
                  avoid: frozenset[int] = frozenset()) -> list[BusOp]:
    """``count`` random accesses (60 % writes) over the target kinds of :data:`TARGET_WEIGHTS`,
    from ``pools`` (:func:`address_pools`); word addresses in ``avoid`` are never used."""
    kinds = list(TARGET_WEIGHTS)
    weights = np.array(list(TARGET_WEIGHTS.values()))
    ops = []
    for _ in range(count):
        kind = kinds[rng.choice(len(kinds), p=weights / weights.sum())]
        if kind == "anywhere":
            while True:
                word = int(rng.integers(0, 1 << model.address_width)) & ~(WORD_BYTES - 1)
                if word not in avoid:
                    break
        else:
            groups = pools[kind]
            group = groups[int(rng.integers(0, len(groups)))]
            word = group[int(rng.integers(0, len(group)))]
        write = bool(rng.random() < 0.6)
        # Mostly whole words; partial accesses exercise WSTRB (writes) and byte extraction (reads).
        offset, length = ACCESS_SHAPES[0] if rng.random() < 0.7 else \
            ACCESS_SHAPES[int(rng.integers(1, len(ACCESS_SHAPES)))]
        data = int(rng.integers(0, 1 << (8 * length))) if write else 0
        ops.append(BusOp(write, word + offset, length, data))
    return ops


def sweep(model: RegisterModel, rng: np.random.Generator) -> list[BusOp]:
    """Every register written (random word) and read once, and every 1-bit W1S field written
    alone, in random order: what random traffic might miss for some seeds."""
    ops = []
    for reg in model.registers.values():
        ops.append(BusOp(True, reg["offset"], WORD_BYTES, int(rng.integers(0, 1 << 32))))
        ops.append(BusOp(False, reg["offset"], WORD_BYTES))
        ops.extend(BusOp(True, reg["offset"], WORD_BYTES, 1 << f["lsb"]) for f in reg["fields"]
                   if f["access"] == "W1S" and f["width"] == 1)
    return [ops[i] for i in rng.permutation(len(ops))]


def pause_pattern(rng: np.random.Generator, probability: float, stall_cycles: int) -> Iterator[bool]:
    """Per-cycle pause flags: independent draws, or bursts of 1..stall_cycles cycles."""
    while True:
        if rng.random() >= probability:
            yield False
        elif stall_cycles:
            for _ in range(int(rng.integers(1, stall_cycles + 1))):
                yield True
        else:
            yield True


# --- the bench --------------------------------------------------------------------------------

def _value(handle: Any) -> int:
    value = handle.value
    return value.to_unsigned() if hasattr(value, "to_unsigned") else int(value)


@dataclass
class ChannelLog:
    """Accesses in the order one channel issued them, and what the monitor expects of each."""

    issued: deque = field(default_factory=deque)          # BusOp, not yet executed
    expected: dict[int, tuple[bytes, int]] = field(default_factory=dict)  # op number -> (data, resp)
    executed: int = 0
    longest_hold: int = 0          #: cycles a response waited for ready, this phase


class BusBench:
    """Clock, reset, master, monitor and model; traffic phases and core-side actions."""

    def __init__(self, dut: Any):
        self.dut = dut
        description = json.loads(Path(os.environ["ANMF_REGMAP_JSON"]).read_text())
        self.model = RegisterModel(description)
        self.params = description["params"]
        self.rng = np.random.default_rng(cocotb.RANDOM_SEED)
        self.period_ps = 10_000
        self.writes, self.reads = ChannelLog(), ChannelLog()
        self.mismatches: list[str] = []
        self.pulses_seen = {key: 0 for key in self.model.pulses}
        self.stimulus: list[dict[str, Any]] = []
        self._last_execution = (-1, "")
        self.master: AxiLiteMaster | None = None
        self._pools: dict[str, list[list[int]]] | None = None

    def _port(self, name: str) -> Any:
        return getattr(self.dut, name)

    def _core_inputs(self) -> list[str]:
        """Every core-side input port of the register file (the bench drives them)."""
        names = []
        for reg in self.model.registers.values():
            prefix = reg["name"].lower()
            for f in reg["fields"]:
                if f["kind"] == "counter":
                    names.append(f"{prefix}__{f['name']}_inc")
                elif f["kind"] == "field" and f["access"] == "R":
                    names.append(f"{prefix}__{f['name']}")
                elif f["access"] == "RW1C":
                    names.append(f"{prefix}__{f['name']}_set")
        for win in self.model.windows.values():
            if win["kind"] != "memory":
                continue
            prefix = win["name"].lower()
            for port in ("write__addr", "write__data", "write__en", "read__addr", "read__en"):
                if hasattr(self.dut, f"{prefix}__{port}"):
                    names.append(f"{prefix}__{port}")
        return names

    async def start(self) -> None:
        dut = self.dut
        Clock(dut.clk, self.period_ps, unit="ps").start()
        for name in self._core_inputs():
            self._port(name).value = 0
        dut.rst.value = 1
        self.master = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "axil", bus_separator="__"), dut.clk, dut.rst)
        for interface in (self.master.write_if, self.master.read_if):
            interface.log.setLevel(logging.WARNING)  # one INFO line per access otherwise
        await ClockCycles(dut.clk, 3)
        dut.rst.value = 0
        await ClockCycles(dut.clk, 2)
        for coroutine in (self._monitor("bvalid", self.writes), self._monitor("rvalid", self.reads),
                          *(self._count_pulses(key) for key in self.model.pulses)):
            cocotb.start_soon(coroutine)

    # ---- monitor ---------------------------------------------------------------------------

    async def _monitor(self, valid_name: str, log: ChannelLog) -> None:
        """Each rising VALID is the next access of the channel, executed now."""
        valid = self._port(f"axil__{valid_name}")
        write = valid_name == "bvalid"
        while True:
            await RisingEdge(valid)
            await ReadOnly()
            now = round(get_sim_time("ps"))
            channel = "write" if write else "read"
            last_time, last_channel = self._last_execution
            if now == last_time and channel != last_channel:
                self.mismatches.append(f"t={now} ps: BVALID and RVALID rose together; the order of "
                                       f"execution is ambiguous")
            self._last_execution = (now, channel)
            if not log.issued:
                self.mismatches.append(f"t={now} ps: {valid_name} rose with no {channel} outstanding")
                continue
            number, op = log.executed, log.issued.popleft()
            log.executed += 1
            if write:
                resp = self.model.write(op.address, op.length, op.data)
                got = (b"", _value(self._port("axil__bresp")))
                expected = (b"", resp)
            else:
                word, resp = self.model.read_word(op.address)
                got_word = _value(self._port("axil__rdata"))
                got = (got_word.to_bytes(WORD_BYTES, "little"), _value(self._port("axil__rresp")))
                expected = (word.to_bytes(WORD_BYTES, "little"), resp)
            log.expected[number] = expected
            if got != expected:
                self.mismatches.append(f"t={now} ps: {channel} #{number} {op}: the bus answered "
                                       f"{self._show(got)}, the model {self._show(expected)}")
            start = now
            await FallingEdge(valid)
            log.longest_hold = max(log.longest_hold, round(get_sim_time("ps") - start) // self.period_ps)

    @staticmethod
    def _show(answer: tuple[bytes, int]) -> str:
        data, resp = answer
        text = AxiResp(resp).name
        return f"{text} 0x{int.from_bytes(data, 'little'):08X}" if data else text

    async def _count_pulses(self, key: tuple[str, str]) -> None:
        port = self._port(f"{key[0].lower()}__{key[1]}")
        while True:
            await RisingEdge(port)
            self.pulses_seen[key] += 1

    # ---- traffic ---------------------------------------------------------------------------

    def _set_pauses(self, phase: Phase) -> None:
        assert self.master is not None
        w, r = self.master.write_if, self.master.read_if
        channels = ((w.aw_channel, phase.valid_pause), (w.w_channel, phase.valid_pause),
                    (r.ar_channel, phase.valid_pause), (w.b_channel, phase.ready_pause),
                    (r.r_channel, phase.ready_pause))
        for channel, probability in channels:
            if probability:
                channel.set_pause_generator(pause_pattern(self.rng.spawn(1)[0], probability,
                                                          phase.stall_cycles))
            else:
                channel.clear_pause_generator()
                channel.pause = False

    async def _issue(self, ops: list[BusOp], log: ChannelLog, rng: np.random.Generator) -> None:
        """Issue ``ops`` in order, up to three queued at once, with random idle gaps."""
        assert self.master is not None
        pending: deque[tuple[int, BusOp, Task]] = deque()
        for op in ops:
            number = log.executed + len(log.issued)
            log.issued.append(op)
            if op.write:
                task = cocotb.start_soon(self.master.write(op.address, op.data.to_bytes(op.length, "little")))
            else:
                task = cocotb.start_soon(self.master.read(op.address, op.length))
            pending.append((number, op, task))
            if len(pending) >= int(rng.integers(1, 4)):
                while pending:
                    await self._check_returned(*pending.popleft(), log)
                gap = int(rng.integers(0, 4))
                if gap:
                    await ClockCycles(self.dut.clk, gap)
        while pending:
            await self._check_returned(*pending.popleft(), log)

    async def _check_returned(self, number: int, op: BusOp, task: Task, log: ChannelLog) -> None:
        """What the master handed back equals what the monitor expected at execution."""
        response = await task
        expected_data, expected_resp = log.expected[number]
        if op.write:
            got: tuple[bytes, int] = (b"", int(response.resp))
            want = (b"", expected_resp)
        else:
            offset = op.address % WORD_BYTES
            got = (bytes(response.data), int(response.resp))
            want = (expected_data[offset:offset + op.length], expected_resp)
        if got != want:
            self.mismatches.append(f"{'write' if op.write else 'read'} #{number} {op}: the master "
                                   f"returned {self._show(got)}, expected {self._show(want)}")

    async def run_phase(self, phase: Phase, *, avoid: frozenset[int], with_sweep: bool = False) -> None:
        if self._pools is None:
            self._pools = address_pools(self.model, avoid)
        ops = sweep(self.model, self.rng) if with_sweep else []
        ops += draw_stimulus(self.model, self.rng, phase.operations, self._pools, avoid=avoid)
        self.writes.longest_hold = self.reads.longest_hold = 0
        self.stimulus.append({"phase": phase.name, "ops": [asdict(op) for op in ops]})
        self._set_pauses(phase)
        writes = [op for op in ops if op.write]
        reads = [op for op in ops if not op.write]
        issue_rng = self.rng.spawn(2)
        writer = cocotb.start_soon(self._issue(writes, self.writes, issue_rng[0]))
        reader = cocotb.start_soon(self._issue(reads, self.reads, issue_rng[1]))
        await writer
        await reader
        self._set_pauses(Phase("idle", 0))

    # ---- core side -------------------------------------------------------------------------

    async def core_actions(self) -> None:
        """The controller's side acts while the bus is idle: RW1C sets, counter increments,
        STATUS values, RESULTS and FAULT_MAP writes."""
        dut, model, rng = self.dut, self.model, self.rng
        await RisingEdge(dut.clk)
        # Set and increment inputs are held for exactly one cycle (a counter adds every cycle).
        for reg in model.registers.values():
            prefix = reg["name"].lower()
            for f in reg["fields"]:
                port = f"{prefix}__{f['name']}"
                if f["kind"] == "field" and f["access"] == "R":
                    value = int(rng.integers(0, 1 << f["width"]))
                    self._port(port).value = value
                    model.core_drive(reg["name"], f["name"], value)
                elif f["access"] == "RW1C":
                    bits = int(rng.integers(0, 1 << f["width"]))
                    self._port(f"{port}_set").value = bits
                    model.core_set(reg["name"], f["name"], bits)
                elif f["kind"] == "counter":
                    amount = int(rng.integers(0, 1 << len(self._port(f"{port}_inc"))))
                    self._port(f"{port}_inc").value = amount
                    model.core_increment(reg["name"], f["name"], amount)
        await RisingEdge(dut.clk)
        for name in self._core_inputs():
            if name.endswith(("_set", "_inc")):
                self._port(name).value = 0
        for win in model.windows.values():
            if win["kind"] == "memory" and hasattr(dut, f"{win['name'].lower()}__write__en"):
                index = int(rng.integers(0, win["depth"]))
                data = int(rng.integers(0, 1 << win["width"]))
                lanes = len(self._port(f"{win['name'].lower()}__write__en"))
                await self._core_write(win["name"], index, data, (1 << lanes) - 1)
        await RisingEdge(dut.clk)

    async def _core_write(self, window: str, index: int, data: int, lanes: int) -> None:
        """One core-side write of the enabled write lanes of element ``index`` (a lane is
        width / len(en) bits: the whole element, bytes, or single bits)."""
        prefix = f"{window.lower()}__write__"
        en = self._port(prefix + "en")
        granularity = self.model.windows[window]["width"] // len(en)
        self._port(prefix + "addr").value = index
        self._port(prefix + "data").value = data
        en.value = lanes
        await RisingEdge(self.dut.clk)
        en.value = 0
        mask = sum(((1 << granularity) - 1) << (granularity * lane) for lane in range(len(en)) if lanes >> lane & 1)
        self.model.core_write_window(window, index, data, mask)

    async def core_writer(self, window: str, rows: list[int], writes: int,
                          rng: np.random.Generator) -> None:
        """The controller writing ``window`` (bit enables) during bus traffic, on rows the bus
        leaves alone: bus writes to the window must wait, not get lost."""
        win = self.model.windows[window]
        lanes = len(self._port(f"{window.lower()}__write__en"))
        for _ in range(writes):
            await ClockCycles(self.dut.clk, int(rng.integers(1, 6)))
            await self._core_write(window, int(rng.choice(rows)), int(rng.integers(0, 1 << win["width"])),
                                   int(rng.integers(1, 1 << lanes)))

    # ---- checks ----------------------------------------------------------------------------

    async def scan(self, label: str) -> None:
        """Read every register and window element (no back-pressure) and compare the core side."""
        assert self.master is not None
        for reg in self.model.registers.values():
            await self._scan_read(reg["offset"])
        for win in self.model.windows.values():
            for index in range(win["depth"]):
                await self._scan_read(win["offset"] + WORD_BYTES * index)
        await RisingEdge(self.dut.clk)
        await ReadOnly()
        for port, expected in self.model.core_outputs().items():
            got = _value(self._port(port))
            if got != expected:
                self.mismatches.append(f"{label}: core port {port} is 0x{got:X}, the model 0x{expected:X}")
        irq = self.model.irq_line()
        if _value(self.dut.irq) != irq:
            self.mismatches.append(f"{label}: irq is {_value(self.dut.irq)}, the documented line gives {irq}")
        if self.pulses_seen != self.model.pulses:
            self.mismatches.append(f"{label}: W1S pulses seen {self.pulses_seen}, written {self.model.pulses}")
        await RisingEdge(self.dut.clk)
        for window in ("RHS", "TARGET", "FAULT_MAP"):
            await self._check_core_reads(window, label)

    async def _scan_read(self, address: int) -> None:
        assert self.master is not None
        op = BusOp(False, address, WORD_BYTES)
        number = self.reads.executed + len(self.reads.issued)
        self.reads.issued.append(op)
        await self._check_returned(number, op, cocotb.start_soon(self.master.read(address, WORD_BYTES)), self.reads)

    async def _check_core_reads(self, window: str, label: str) -> None:
        """What the bus wrote is what the controller's read port returns (1-cycle latency)."""
        prefix = f"{window.lower()}__read__"
        if not hasattr(self.dut, prefix + "en"):
            return
        elements = self.model.elements[window]
        self._port(prefix + "en").value = 1
        for index, expected in enumerate(elements):
            self._port(prefix + "addr").value = index
            await RisingEdge(self.dut.clk)
            await ReadOnly()
            got = _value(self._port(prefix + "data"))
            if got != expected:
                self.mismatches.append(f"{label}: {window}[{index}] read port gives 0x{got:X}, "
                                       f"the model 0x{expected:X}")
            await RisingEdge(self.dut.clk)
        self._port(prefix + "en").value = 0

    def assert_clean(self, label: str) -> None:
        assert not self.mismatches, f"{label}: {len(self.mismatches)} mismatches, first: " + \
            "; ".join(self.mismatches[:5])

    def save_stimulus(self) -> str:
        """Write the stimulus next to results.xml; its SHA-256 (also logged)."""
        text = json.dumps(self.stimulus, indent=1)
        Path(STIMULUS_FILE).write_text(text)
        return hashlib.sha256(text.encode()).hexdigest()


@cocotb.test()
async def random_traffic_under_back_pressure(dut) -> None:
    """Concurrent random reads and writes in four back-pressure phases, every answer checked
    against the documented behaviour; the core side acts and is checked between phases."""
    bench = BusBench(dut)
    await bench.start()
    cocotb.log.info("bus bench seed %d", cocotb.RANDOM_SEED)
    fault_map = bench.model.windows["FAULT_MAP"]
    core_rows = list(range(fault_map["depth"] // 2, fault_map["depth"]))  # the controller's rows
    avoid = frozenset(fault_map["offset"] + WORD_BYTES * row for row in core_rows)
    await bench.scan("after reset")
    bench.assert_clean("after reset")
    for number, phase in enumerate(PHASES):
        writer = cocotb.start_soon(bench.core_writer("FAULT_MAP", core_rows, 6, bench.rng.spawn(1)[0]))
        await bench.run_phase(phase, avoid=avoid, with_sweep=number == 0)
        await writer
        await bench.core_actions()
        await bench.scan(phase.name)
        bench.assert_clean(phase.name)
        cocotb.log.info("%s: %d accesses checked; longest B hold %d cycles, R hold %d cycles",
                        phase.name, len(bench.stimulus[-1]["ops"]), bench.writes.longest_hold,
                        bench.reads.longest_hold)
        if phase.ready_pause:
            assert bench.writes.longest_hold > 1 and bench.reads.longest_hold > 1, \
                f"{phase.name}: no response waited for ready (B {bench.writes.longest_hold}, " \
                f"R {bench.reads.longest_hold} cycles)"
    digest = bench.save_stimulus()
    cocotb.log.info("stimulus: %d accesses, sha256 %s", sum(len(p["ops"]) for p in bench.stimulus), digest)
    responses = [resp for log in (bench.writes, bench.reads) for _, resp in log.expected.values()]
    assert OKAY in responses and SLVERR in responses, "the traffic must include OKAY and SLVERR answers"
    assert all(bench.model.pulses.values()), f"every W1S strobe must fire: {bench.model.pulses}"
