"""The register layer (validation, register file behaviour on the core side), the anmf register
map, and its exports (JSON, markdown, C header, host constants, `anmf regmap`)."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from amaranth.hdl import Fragment, Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from anmf.cli import main
from anmf.hdl.codes import ErrorCode, Opcode
from anmf.hdl.params import BuildParams
from anmf.hdl.regmap import (Access, CoreAccess, CounterField, Field, MemoryWindow, Register,
                             RegisterFile, RegisterMap, VectorWindow)
from anmf.hdl.registers import MAGIC, ControllerRegisters, build_register_map
from anmf.hdl.regmap_export import (FORMATS, HostRegisterMap, describe, host_constants, render, render_c_header,
                                    render_json, render_markdown)

REPO = Path(__file__).resolve().parent.parent
DEFAULT = host_constants(build_register_map())


# --- simulation helpers ----------------------------------------------------------------------------

def simulate(dut: Any, *testbenches: Callable, processes: tuple[Callable, ...] = ()) -> None:
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for testbench in testbenches:
        sim.add_testbench(testbench)
    for process in processes:
        sim.add_process(process)
    sim.run()


class BusMaster:
    """Drives the register bus: one access at a time, addr set the cycle before the strobe and
    held with the data until ack (the bus contract)."""

    def __init__(self, ctx: Any, bus: Any) -> None:
        self.ctx, self.bus = ctx, bus

    async def access(self, byte_addr: int, data: int | None = None, strb: int = 0xF,
                     timeout: int = 40) -> tuple[int, bool, int]:
        """(r_data, err, cycles from strobe to ack)."""
        ctx, bus = self.ctx, self.bus
        ctx.set(bus.addr, byte_addr // 4)
        await ctx.tick()  # the register file decodes the address in the cycle before the strobe
        strobe = bus.r_stb if data is None else bus.w_stb
        if data is not None:
            ctx.set(bus.w_data, data)
            ctx.set(bus.w_strb, strb)
        ctx.set(strobe, 1)
        await ctx.tick()
        ctx.set(strobe, 0)
        cycles = 1
        while not ctx.get(bus.ack):
            await ctx.tick()
            cycles += 1
            assert cycles < timeout, f"no ack {cycles} cycles after the strobe to 0x{byte_addr:X}"
        return ctx.get(bus.r_data), bool(ctx.get(bus.err)), cycles

    async def read(self, byte_addr: int) -> int:
        value, err, _ = await self.access(byte_addr)
        assert not err, f"read of 0x{byte_addr:X} refused"
        return value

    async def write(self, byte_addr: int, data: int, strb: int = 0xF) -> None:
        _, err, _ = await self.access(byte_addr, data, strb)
        assert not err, f"write of 0x{data:X} to 0x{byte_addr:X} refused"


# --- the layer's validation ------------------------------------------------------------------------

class _NoDoc(Register):
    value = Field(Access.RW, 4, "A value.")


class _Overlap(Register):
    """Two fields on the same bits."""

    low = Field(Access.RW, 8, "Low byte.")
    clash = Field(Access.RW, 4, "Overlaps low.", at=4)


class _TooWide(Register):
    """A field past bit 31."""

    first = Field(Access.RW, 30, "Most bits.")
    second = Field(Access.RW, 4, "Runs off the word.")


class _Reserved(Register):
    """A field named like another field's core port."""

    done = Field(Access.RW1C, 1, "A cause.")
    done_set = Field(Access.RW, 1, "Clashes with done's set port.")


class _Plain(Register):
    """Two read-write bytes."""

    a = Field(Access.RW, 8, "Byte a.")
    b = Field(Access.RW, 8, "Byte b.")


def _map_with(*entries: tuple[str, Any, int]) -> RegisterMap:
    regs = RegisterMap("T")
    for name, item, offset in entries:
        regs.add(name, item, offset=offset)
    return regs


def _memory(**overrides: Any) -> MemoryWindow:
    args: dict[str, Any] = dict(depth=8, span=8, fields={"code": (10, "A code.")}, access=Access.RW,
                                core=CoreAccess.READ, doc="A buffer.")
    args.update(overrides)
    return MemoryWindow(**args)


@pytest.mark.parametrize("make, message", [
    (lambda: Field("RW", 4, "x"), "field access must be one of R, W, RW, RW1C, W1S (an Access member), not 'RW'"),
    (lambda: Field(Access.RW, 0, "x"), "field width must be an integer from 1 to 32, not 0"),
    (lambda: Field(Access.RW, 33, "x"), "field width must be an integer from 1 to 32, not 33"),
    (lambda: Field(Access.RW, True, "x"), "field width must be an integer from 1 to 32, not True"),
    (lambda: Field(Access.RW, 4, "x", reset=16), "field reset must be an integer from 0 to 15 (it has 4 bits), not 16"),
    (lambda: Field(Access.RW, 4, "x", reset=-1), "field reset must be an integer from 0 to 15 (it has 4 bits), not -1"),
    (lambda: Field(Access.RW, 4, "  "), "field doc must be a non-empty string"),
    (lambda: Field(Access.RW, 4, "x", at=32), "field position must be an integer from 0 to 31, not 32"),
    (lambda: Field(Access.RW, 4, "x", values=Opcode), "field values Opcode are 8 bits wide, the field is 4 bits wide; "
                                                      "they must match"),
    (lambda: Field(Access.RW, 8, "x", values=Opcode, reset=99), "field reset 99 is not a value of Opcode"),
    (lambda: Field(Access.RW, 8, "x", values=int), "field values must be an amaranth enum class with a shape, "
                                                   "not <class 'int'>"),
    (lambda: CounterField(32, "x", cleared_by="soft_reset"),
     "counter cleared_by must name a strobe as 'REGISTER.field', not 'soft_reset'"),
    (lambda: CounterField(8, "x", cleared_by="CONTROL.reset", increment_width=9),
     "counter increment_width must be an integer from 1 to 8, not 9"),
    (lambda: _NoDoc(), "register _NoDoc needs a docstring (or doc=) saying what it is for"),
    (lambda: _Overlap(), "field 'clash' of register _Overlap (bits 4 to 7) overlaps field 'low' (bits 0 to 7)"),
    (lambda: _TooWide(), "field 'second' of register _TooWide needs bits 30 to 33, past the 32-bit word"),
    (lambda: _Reserved(), "field name 'done_set' of register _Reserved is reserved for a core port of field 'done'"),
    (lambda: Register({}, doc="Empty."), "register Register has no fields"),
    (lambda: Register({"Bad": Field(Access.RW, 1, "x")}, doc="d"),
     "field name must be a lower-case identifier (a-z, 0-9, _), not 'Bad'"),
    (lambda: _memory(span=6), "window span must be a power of two >= the depth 8, not 6"),
    (lambda: _memory(span=4), "window span must be a power of two >= the depth 8, not 4"),
    (lambda: _memory(access=Access.W), "window access must be R or RW, not <Access.W: 'W'>"),
    (lambda: _memory(access=Access.R), "a window the bus only reads must be written by the core "
                                       "(core=WRITE or READ_WRITE)"),
    (lambda: _memory(core="read"), "window core access must be a CoreAccess member (read, write, read_write), "
                                   "not 'read'"),
    (lambda: _memory(core_write_granularity=1), "core_write_granularity needs a core write port "
                                                "(core=WRITE or READ_WRITE)"),
    (lambda: _memory(core=CoreAccess.WRITE, core_write_granularity=3),
     "core_write_granularity must divide the 10-bit element of a single-field window, not 3"),
    (lambda: _memory(core=CoreAccess.WRITE, core_read_ports=2),
     "core_read_ports above 1 needs a core read port (core=READ or READ_WRITE)"),
    (lambda: _memory(core_read_ports=0), "core_read_ports must be an integer from 1 to 8, not 0"),
    (lambda: _memory(init=1024), "window init must be an integer from 0 to 1023, not 1024"),
    (lambda: VectorWindow(bits=40, span=1, doc="v"), "window span must be a power of two >= the depth 2, not 1"),
    (lambda: VectorWindow(bits=4, span=1, doc="v", reset=16), "vector reset must fit in 4 bits, not 16"),
    (lambda: RegisterMap("lower"), "register map name must be an upper-case identifier, not 'lower'"),
    (lambda: _map_with(("a", _Plain(), 0)), "register and window names must be upper-case identifiers, not 'a'"),
    (lambda: _map_with(("A", _Plain(), 0), ("A", _Plain(), 4)), "name 'A' is already in the map"),
    (lambda: _map_with(("A", _Plain(), 2)), "offset of A must be a non-negative multiple of 4, not 2"),
    (lambda: _map_with(("A", _Plain(), 0), ("B", _Plain(), 0)), "B at 0x0..0x3 overlaps A at 0x0..0x3"),
    (lambda: _map_with(("BUF", _memory(), 0x10)), "window BUF at 0x10 must be aligned to its span of 0x20 bytes"),
    (lambda: _map_with(("A", _Plain(), 0x20), ("BUF", _memory(), 0x20)),
     "BUF at 0x20..0x3F overlaps A at 0x20..0x23"),
    (lambda: _map_with(("N", Register({"n": CounterField(8, "x", cleared_by="CONTROL.clear")}, doc="d"), 0)),
     "counter N.n is cleared by 'CONTROL.clear', which is not a 1-bit W1S field of a register placed before it"),
    (lambda: RegisterFile("map"), "register_map must be a RegisterMap, not 'map'"),
    (lambda: RegisterMap("EMPTY").addr_width, "register map EMPTY is empty"),
])
def test_layer_validation_messages(make: Callable[[], Any], message: str) -> None:
    with pytest.raises(ValueError) as info:
        make()
    assert str(info.value) == message


@pytest.mark.parametrize("make, message", [
    (lambda: build_register_map(BuildParams(cols=30, spare=3)),
     "cols + spare must be at most 32 for the register map (one COL_ENABLE word, one FAULT_MAP word per row), "
     "not 30 + 3 = 33"),
    (lambda: ControllerRegisters(BuildParams(cols=24, spare=16)),
     "cols + spare must be at most 32 for the register map (one COL_ENABLE word, one FAULT_MAP word per row), "
     "not 24 + 16 = 40"),
    (lambda: ControllerRegisters({"rows": 64}), "params must be a BuildParams, not {'rows': 64}"),
    (lambda: ControllerRegisters(BuildParams(rows=0)), "rows must be an integer from 2 to 1024, got 0"),
    (lambda: ControllerRegisters(BuildParams(dac_bits=25)), "dac_bits must be an integer from 1 to 24, got 25"),
    (lambda: build_register_map(BuildParams(adc_bits=12)),
     "calibration needs adc_bits and dac_bits of at most 10 (a 32-bit CAL_COEFF word), not 12; build with "
     "calibration=False"),
])
def test_controller_register_parameters_are_validated(make: Callable[[], Any], message: str) -> None:
    with pytest.raises(ValueError) as info:
        make()
    assert str(info.value) == message


def test_fields_are_placed_in_order_or_at_their_position() -> None:
    status = build_register_map()["STATUS"].item
    positions = {name: (f.shift, f.width) for name, f in status.fields.items()}
    assert positions == {"busy": (0, 1), "done": (1, 1), "error": (8, 8), "error_detail": (16, 16)}
    assert status.access == "R" and not status.writable
    command = build_register_map()["COMMAND"].item
    assert command.access == "RW" and command.writable and command.reset == 0


# --- exports ---------------------------------------------------------------------------------------

def test_json_description_has_the_documented_schema() -> None:
    desc = json.loads(render_json(build_register_map()))
    assert set(desc["params"]) >= {"rows", "cols", "spare", "dac_bits", "adc_bits", "avg_max_log2"}
    assert desc["params"]["rows"] == 64 and desc["params"]["cols"] == 8 and desc["params"]["spare"] == 2
    for reg in desc["registers"]:
        assert {"name", "offset", "access", "doc", "fields"} <= set(reg), reg["name"]
        assert reg["doc"] and reg["fields"], reg["name"]
        for f in reg["fields"]:
            assert {"name", "bits", "access", "reset", "doc"} <= set(f), f"{reg['name']}.{f}"
            assert f["access"] in {"R", "W", "RW", "RW1C", "W1S"}
    names = {w["name"] for w in desc["windows"]}
    assert names == {"RESULTS", "ROW_MASK", "RHS", "FAULT_MAP", "TARGET",
                     "NMF_R", "NMF_MASK", "NMF_W", "NMF_H", "NMF_W_EXP", "NMF_H_EXP",
                     "REFINE_A", "REFINE_B", "REFINE_X", "REMAP_MAP",
                     "CAL_COEFF"}
    for win in desc["windows"]:
        assert {"name", "offset", "depth", "width", "access", "doc"} <= set(win), win["name"]
    by_name = {w["name"]: w for w in desc["windows"]}
    assert by_name["RHS"]["depth"] == 64 and by_name["RHS"]["width"] == 10
    assert by_name["RESULTS"]["depth"] == 10 and by_name["RESULTS"]["width"] == 11
    assert by_name["TARGET"]["depth"] == 64 * 10
    assert by_name["FAULT_MAP"]["depth"] == 64 and by_name["FAULT_MAP"]["width"] == 10
    assert by_name["ROW_MASK"]["depth"] == 2 and by_name["ROW_MASK"]["bits"] == 64
    status = next(r for r in desc["registers"] if r["name"] == "STATUS")
    error = next(f for f in status["fields"] if f["name"] == "error")
    assert {v["name"]: v["value"] for v in error["values"]} == {e.name: e.value for e in ErrorCode}


def test_required_registers_are_present() -> None:
    names = {r["name"] for r in describe(build_register_map())["registers"]}
    required = {"ID", "VERSION", "PARAMS_ARRAY", "PARAMS_CONVERTERS", "CONTROL", "COMMAND", "STATUS", "IRQ_ENABLE",
                "IRQ_STATUS", "TIMING", "DAC_SETTLE", "ANALOG_SETTLE", "WATCHDOG", "PROGRAM_TOLERANCE",
                "PROGRAM_PULSES", "PROGRAM_AMPLITUDE", "PROGRAM_AMPLITUDE_MAX", "PROGRAM_PULSE", "SOLVE_COUNT",
                "PULSE_COUNT", "OVER_RANGE_COUNT", "FAILED_CELL_COUNT", "COL_ENABLE"}
    assert required <= names, f"missing: {required - names}"
    assert "power of two" in DEFAULT.TIMING.adc_samples.doc and "BAD_AVERAGING" in DEFAULT.TIMING.adc_samples.doc


@pytest.mark.parametrize("params", [BuildParams(), BuildParams(rows=1024, cols=30, spare=2, adc_bits=16, refinement=False, calibration=False),
                                    BuildParams(rows=2, cols=2, spare=0, timer_bits=32)])
def test_offsets_are_unique_aligned_and_fixed_across_builds(params: BuildParams) -> None:
    desc = describe(build_register_map(params))
    spans = sorted([(r["offset"], r["offset"] + 4, r["name"]) for r in desc["registers"]]
                   + [(w["offset"], w["offset"] + 4 * w["span"], w["name"]) for w in desc["windows"]])
    for (start, end, name), (next_start, _, next_name) in zip(spans, spans[1:]):
        assert end <= next_start, f"{name} overlaps {next_name}"
    for start, end, name in spans:
        assert start % 4 == 0 and start % (end - start) == 0, f"{name} at 0x{start:X} is not aligned to its span"
    default_offsets = {name: DEFAULT.registers.get(name, DEFAULT.windows.get(name)).offset
                       for _, _, name in spans}
    assert {name: start for start, _, name in spans} == default_offsets, "offsets must not depend on the build"
    for win in desc["windows"]:
        assert win["depth"] <= win["span"]


def test_markdown_in_docs_is_fresh() -> None:
    committed = (REPO / "docs" / "registers.md").read_text()
    assert committed == render_markdown(build_register_map()), \
        "docs/registers.md is stale: run `anmf regmap --format md -o docs/registers.md`"


def test_markdown_documents_every_register_window_and_opcode() -> None:
    text = render_markdown(build_register_map())
    for name in list(DEFAULT.registers) + list(DEFAULT.windows):
        assert f"### {name}\n" in text, name
    for op in Opcode:
        assert f"| {op.value} | {op.name} |" in text, op


def _static_asserts(desc: dict[str, Any]) -> str:
    """C11 static assertions that the header's values equal the JSON's."""
    checks: list[tuple[str, int]] = [(f"ANMF_PARAM_{k.upper()}", v) for k, v in desc["params"].items()]

    def fields(stem: str, items: list[dict[str, Any]]) -> None:
        for f in items:
            name = f"{stem}_{f['name'].upper()}"
            checks.extend([(f"{name}_SHIFT", f["lsb"]), (f"{name}_WIDTH", f["width"]),
                           (f"{name}_MASK", ((1 << f["width"]) - 1) << f["lsb"]), (f"{name}_RESET", f["reset"])])
            checks.extend((f"{name}_{v['name']}", v["value"]) for v in f.get("values", []))

    for reg in desc["registers"]:
        stem = f"ANMF_{reg['name']}"
        checks += [(f"{stem}_OFFSET", reg["offset"]), (f"{stem}_RESET", reg["reset"])]
        fields(stem, reg["fields"])
    for win in desc["windows"]:
        stem = f"ANMF_{win['name']}"
        checks += [(f"{stem}_OFFSET", win["offset"]), (f"{stem}_DEPTH", win["depth"]), (f"{stem}_SPAN", win["span"])]
        if win["kind"] == "memory":
            fields(stem, win["fields"])
    lines = ['#include "anmf_regs.h"']
    lines += [f'_Static_assert({name} == {value}u, "{name}");' for name, value in checks]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("params", [BuildParams(), BuildParams(rows=16, cols=4, spare=1, adc_bits=12, calibration=False)])
def test_c_header_compiles_and_matches_the_json(tmp_path: Path, params: BuildParams) -> None:
    compiler = shutil.which("cc") or shutil.which("gcc")
    assert compiler, "a C compiler (cc or gcc) is needed to check the generated header"
    register_map = build_register_map(params)
    (tmp_path / "anmf_regs.h").write_text(render_c_header(register_map))
    source = tmp_path / "check.c"
    source.write_text(_static_asserts(json.loads(render_json(register_map))))
    result = subprocess.run([compiler, "-std=c11", "-Wall", "-Wextra", "-Werror", "-fsyntax-only",
                             f"-I{tmp_path}", str(source)], capture_output=True, text=True)
    assert result.returncode == 0, f"header check failed:\n{result.stderr[:3000]}"


def test_render_rejects_unknown_format() -> None:
    with pytest.raises(ValueError) as info:
        render(build_register_map(), "yaml")
    assert str(info.value) == "unknown register map format 'yaml'; accepted: md, json, c"
    assert FORMATS == ("md", "json", "c")


def test_cli_regmap_writes_each_format_with_build_parameters(tmp_path: Path, capsys: Any) -> None:
    options = ["--rows", "16", "--cols", "4", "--spare", "1", "--dac-bits", "8", "--adc-bits", "12", "--no-calibration"]
    for fmt in FORMATS:
        out = tmp_path / f"regs.{fmt}"
        assert main(["regmap", "--format", fmt, "-o", str(out), *options]) == 0
        expected = render(build_register_map(BuildParams(rows=16, cols=4, spare=1, dac_bits=8, adc_bits=12,
                                                           calibration=False)), fmt)
        assert out.read_text() == expected
    desc = json.loads((tmp_path / "regs.json").read_text())
    assert {k: desc["params"][k] for k in ("rows", "cols", "spare", "dac_bits", "adc_bits")} == \
        {"rows": 16, "cols": 4, "spare": 1, "dac_bits": 8, "adc_bits": 12}
    assert main(["regmap", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"]["rows"] == 64


def test_cli_regmap_reports_bad_parameters_on_one_line(capsys: Any) -> None:
    assert main(["regmap", "--cols", "30", "--spare", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["anmf: error: cols + spare must be at most 32 for the register map (one COL_ENABLE word, "
                   "one FAULT_MAP word per row), not 30 + 3 = 33"]


# --- host constants --------------------------------------------------------------------------------

def test_host_constants_come_from_the_declarations() -> None:
    regs = DEFAULT
    assert regs.ID.offset == 0 and regs.ID.reset == MAGIC
    assert regs.CONTROL.start.mask == 1 << regs.CONTROL.start.lsb
    assert regs.COMMAND.pack(opcode="SOLVE", row=3, col=2) == \
        (Opcode.SOLVE.value << regs.COMMAND.opcode.lsb) | (3 << regs.COMMAND.row.lsb) | (2 << regs.COMMAND.col.lsb)
    assert regs.COMMAND.pack(opcode=Opcode.MVM) == Opcode.MVM.value
    word = regs.STATUS.pack(busy=1, error=ErrorCode.BAD_AVERAGING.value, error_detail=7)
    assert regs.STATUS.unpack(word) == {"busy": 1, "done": 0, "error": ErrorCode.BAD_AVERAGING.value,
                                        "error_detail": 7}
    assert regs.STATUS.error.values["ADC_TIMEOUT"] == ErrorCode.ADC_TIMEOUT.value
    assert regs.RHS.address(3) == regs.RHS.offset + 12
    assert regs.RESULTS.over_range.lsb == 10 and regs.RESULTS.code.width == 10
    assert regs.params["rows"] == 64
    from_json = HostRegisterMap.from_description(render_json(build_register_map()))
    assert from_json.TIMING.adc_samples == regs.TIMING.adc_samples
    assert from_json.TARGET.address(639) == regs.TARGET.offset + 639 * 4


@pytest.mark.parametrize("make, message", [
    (lambda: DEFAULT.COMMAND.row.put(4096), "COMMAND.row holds 12 bits (0 to 4095), not 4096"),
    (lambda: DEFAULT.COMMAND.opcode.put("FLY"), "COMMAND.opcode has no value named 'FLY'; accepted: NOP, SOLVE, "
                                                "SOLVE_FREE, MVM, READ_CELL, PROGRAM_CELL, PROGRAM_MATRIX, RUN_NMF, CALIBRATE, REFINE, REFRESH"),
    (lambda: DEFAULT.COMMAND.row.put("x"), "COMMAND.row has no value named 'x'; accepted: integers only"),
    (lambda: DEFAULT.RHS.address(64), "RHS index must be from 0 to 63, not 64"),
    (lambda: DEFAULT.COMMAND.nothing, "COMMAND has no field 'nothing'; fields: opcode, row, col"),
    (lambda: DEFAULT.NOTHING, "register map has no register or window 'NOTHING'"),
    (lambda: HostRegisterMap.from_description({"name": "X"}), "register map description lacks params, registers, "
                                                               "windows"),
])
def test_host_constants_reject_bad_use(make: Callable[[], Any], message: str) -> None:
    with pytest.raises((ValueError, AttributeError)) as info:
        make()
    assert str(info.value) == message


# --- register file: the core side ------------------------------------------------------------------

def test_strobes_pulse_one_cycle_and_read_as_zero() -> None:
    dut = ControllerRegisters()
    pulses: list[tuple[int, int, int]] = []

    async def watch(ctx: Any) -> None:
        async for _, _, start, abort, soft in ctx.tick().sample(dut.control.start, dut.control.abort,
                                                                 dut.control.soft_reset):
            pulses.append((start, abort, soft))

    async def bench(ctx: Any) -> None:
        bus = BusMaster(ctx, dut.bus)
        await bus.write(DEFAULT.CONTROL.offset, DEFAULT.CONTROL.pack(start=1, soft_reset=1))
        for _ in range(4):
            await ctx.tick()
        assert await bus.read(DEFAULT.CONTROL.offset) == 0

    simulate(dut, bench, processes=(watch,))
    assert [p for p in pulses if any(p)] == [(1, 0, 1)], f"one start+soft_reset pulse expected, saw {pulses}"


def test_rw_fields_drive_the_core_and_honour_byte_strobes() -> None:
    dut = ControllerRegisters()

    async def bench(ctx: Any) -> None:
        bus = BusMaster(ctx, dut.bus)
        assert ctx.get(dut.timing.adc_samples) == 1 and ctx.get(dut.dac_settle.cycles) == 16
        assert ctx.get(dut.command.opcode) == Opcode.NOP
        assert ctx.get(dut.col_enable.enable) == 0xFF, "COLS columns on, spares off after reset"
        await bus.write(DEFAULT.COMMAND.offset, DEFAULT.COMMAND.pack(opcode="READ_CELL", row=5, col=9))
        assert ctx.get(dut.command.opcode) == Opcode.READ_CELL
        assert (ctx.get(dut.command.row), ctx.get(dut.command.col)) == (5, 9)
        await bus.write(DEFAULT.TIMING.offset, 0x11223344)
        await bus.write(DEFAULT.TIMING.offset, 0xAABBCCDD, strb=0b0110)
        assert ctx.get(dut.timing.adc_samples) == 0x11BBCC44, "only byte lanes 1 and 2 change"
        await bus.write(DEFAULT.DAC_SETTLE.offset, 0xFFFF_FFFF)
        assert ctx.get(dut.dac_settle.cycles) == 0xFFFF, "bits past the 16-bit field are dropped"
        assert await bus.read(DEFAULT.DAC_SETTLE.offset) == 0xFFFF

    simulate(dut, bench)


def test_read_only_fields_show_what_the_core_drives_and_refuse_writes() -> None:
    dut = ControllerRegisters()

    async def bench(ctx: Any) -> None:
        bus = BusMaster(ctx, dut.bus)
        ctx.set(dut.status.busy, 1)
        ctx.set(dut.status.error, ErrorCode.CELLS_FAILED)
        ctx.set(dut.status.error_detail, 513)
        word = await bus.read(DEFAULT.STATUS.offset)
        assert DEFAULT.STATUS.unpack(word) == {"busy": 1, "done": 0, "error": ErrorCode.CELLS_FAILED.value,
                                               "error_detail": 513}
        _, err, _ = await bus.access(DEFAULT.STATUS.offset, 0)
        assert err, "a write to STATUS must be refused"
        assert await bus.read(DEFAULT.STATUS.offset) == word
        _, err, _ = await bus.access(DEFAULT.ID.offset, 0)
        assert err and await bus.read(DEFAULT.ID.offset) == MAGIC

    simulate(dut, bench)


def test_rw1c_bits_are_set_by_the_core_cleared_by_the_bus_and_drive_irq() -> None:
    dut = ControllerRegisters()
    irq = DEFAULT.IRQ_STATUS

    async def bench(ctx: Any) -> None:
        bus = BusMaster(ctx, dut.bus)
        ctx.set(dut.irq_status.done_set, 1)
        ctx.set(dut.irq_status.over_range_set, 1)
        await ctx.tick()
        ctx.set(dut.irq_status.done_set, 0)
        ctx.set(dut.irq_status.over_range_set, 0)
        assert await bus.read(irq.offset) == irq.pack(done=1, over_range=1)
        assert not ctx.get(dut.irq), "no cause enabled yet"
        await bus.write(DEFAULT.IRQ_ENABLE.offset, DEFAULT.IRQ_ENABLE.pack(over_range=1))
        assert ctx.get(dut.irq)
        await bus.write(irq.offset, irq.pack(over_range=1))
        assert await bus.read(irq.offset) == irq.pack(done=1), "writing 1 clears only that bit"
        assert not ctx.get(dut.irq)
        await bus.write(irq.offset, 0)
        assert await bus.read(irq.offset) == irq.pack(done=1), "writing 0 leaves bits alone"
        # The core sets done in the very cycle the bus clears it: the new event wins.
        ctx.set(dut.bus.addr, irq.offset // 4)
        await ctx.tick()  # the address a cycle before the strobe
        ctx.set(dut.bus.w_data, irq.pack(done=1))
        ctx.set(dut.bus.w_stb, 1)
        ctx.set(dut.irq_status.done_set, 1)
        await ctx.tick()
        ctx.set(dut.bus.w_stb, 0)
        ctx.set(dut.irq_status.done_set, 0)
        await ctx.tick()
        assert await bus.read(irq.offset) == irq.pack(done=1)

    simulate(dut, bench)


def test_counters_count_add_and_clear_on_soft_reset() -> None:
    dut = ControllerRegisters()

    async def bench(ctx: Any) -> None:
        bus = BusMaster(ctx, dut.bus)
        ctx.set(dut.solve_count.count_inc, 1)
        for _ in range(5):
            await ctx.tick()
        ctx.set(dut.solve_count.count_inc, 0)
        ctx.set(dut.over_range_count.count_inc, 300)  # a whole solve's over-range samples at once
        await ctx.tick()
        ctx.set(dut.over_range_count.count_inc, 0)
        assert await bus.read(DEFAULT.SOLVE_COUNT.offset) == 5
        assert await bus.read(DEFAULT.OVER_RANGE_COUNT.offset) == 300
        _, err, _ = await bus.access(DEFAULT.SOLVE_COUNT.offset, 0)
        assert err and await bus.read(DEFAULT.SOLVE_COUNT.offset) == 5, "counters are read-only"
        await bus.write(DEFAULT.CONTROL.offset, DEFAULT.CONTROL.pack(soft_reset=1))
        await ctx.tick()
        assert await bus.read(DEFAULT.SOLVE_COUNT.offset) == 0
        assert await bus.read(DEFAULT.OVER_RANGE_COUNT.offset) == 0

    simulate(dut, bench)


class _Clear(Register):
    """A strobe that clears the counter."""

    clear = Field(Access.W1S, 1, "Clear.")


def test_counter_saturates_instead_of_wrapping() -> None:
    regs = RegisterMap("SAT")
    regs.add("CTRL", _Clear(), offset=0)
    regs.add("EVENTS", Register({"n": CounterField(3, "Events.", cleared_by="CTRL.clear", increment_width=2)},
                                doc="A small counter."), offset=4)
    dut = RegisterFile(regs)

    async def bench(ctx: Any) -> None:
        bus = BusMaster(ctx, dut.bus)
        ctx.set(dut.events.n_inc, 3)
        await ctx.tick()
        await ctx.tick()
        assert await bus.read(4) == 6
        await ctx.tick()
        ctx.set(dut.events.n_inc, 0)
        assert await bus.read(4) == 7, "3-bit counter saturates at 7"
        await bus.write(0, 1)
        await ctx.tick()
        assert await bus.read(4) == 0

    simulate(dut, bench)


def test_counter_clear_wins_over_an_increment_in_its_cycle() -> None:
    # Increment and clear are registered in the register file; their order is the core's.
    regs = RegisterMap("CLR")
    regs.add("CTRL", _Clear(), offset=0)
    regs.add("EVENTS", Register({"n": CounterField(4, "Events.", cleared_by="CTRL.clear")},
                                doc="A small counter."), offset=4)
    dut = RegisterFile(regs)

    async def bench(ctx: Any) -> None:
        bus = BusMaster(ctx, dut.bus)
        ctx.set(dut.events.n_inc, 1)
        for _ in range(3):
            await ctx.tick()
        ctx.set(dut.events.n_inc, 0)
        assert await bus.read(4) == 3
        ctx.set(dut.bus.addr, 0)
        await ctx.tick()
        ctx.set(dut.bus.w_data, 1)
        ctx.set(dut.bus.w_stb, 1)
        await ctx.tick()
        ctx.set(dut.bus.w_stb, 0)
        assert ctx.get(dut.ctrl.clear), "the clear pulses the cycle after the write strobe"
        ctx.set(dut.events.n_inc, 1)   # an increment in the clear's cycle: dropped
        await ctx.tick()
        assert not ctx.get(dut.ctrl.clear)
        await ctx.tick()               # and one in the cycle after: counted
        ctx.set(dut.events.n_inc, 0)
        assert await bus.read(4) == 1

    simulate(dut, bench)


def test_memory_windows_connect_bus_and_core() -> None:
    dut = ControllerRegisters()
    rng = np.random.default_rng(5)
    rhs_codes = [int(v) for v in rng.integers(0, 1 << 10, 64)]

    async def core_read(ctx: Any, port: Any, addr: int) -> int:
        ctx.set(port.addr, addr)
        ctx.set(port.en, 1)
        await ctx.tick()
        return ctx.get(port.data)

    async def bench(ctx: Any) -> None:
        bus = BusMaster(ctx, dut.bus)
        for row, code in enumerate(rhs_codes):
            await bus.write(DEFAULT.RHS.address(row), code)
        for row in (0, 17, 63):
            assert await core_read(ctx, dut.rhs.read, row) == rhs_codes[row]
            assert await bus.read(DEFAULT.RHS.address(row)) == rhs_codes[row]
        await bus.write(DEFAULT.TARGET.address(639), 0x2AB)
        assert await core_read(ctx, dut.target.read, 639) == 0x2AB
        # The core writes a result; the bus reads it with the documented field positions.
        ctx.set(dut.results.write.addr, 9)
        ctx.set(dut.results.write.data.code, 1000)
        ctx.set(dut.results.write.data.over_range, 1)
        ctx.set(dut.results.write.en, 1)
        await ctx.tick()
        ctx.set(dut.results.write.en, 0)
        word = await bus.read(DEFAULT.RESULTS.address(9))
        assert DEFAULT.RESULTS.unpack(word) == {"code": 1000, "over_range": 1}
        _, err, _ = await bus.access(DEFAULT.RESULTS.address(9), 0)
        assert err, "RESULTS is read-only for the bus"
        assert await bus.read(DEFAULT.RESULTS.address(9)) == word
        # Past the depth, inside the reserved span: unmapped.
        value, err, _ = await bus.access(DEFAULT.RHS.offset + 64 * 4)
        assert err and value == 0
        # A window write must cover every byte lane of the element (10 bits: lanes 0 and 1).
        _, err, _ = await bus.access(DEFAULT.RHS.address(0), 0x3FF, strb=0b0001)
        assert err and await bus.read(DEFAULT.RHS.address(0)) == rhs_codes[0]
        _, err, _ = await bus.access(DEFAULT.RHS.address(0), 0x155, strb=0b0011)
        assert not err and await bus.read(DEFAULT.RHS.address(0)) == 0x155

    simulate(dut, bench)


def test_fault_map_bus_write_waits_for_the_core_and_both_land() -> None:
    dut = ControllerRegisters()
    fault = DEFAULT.FAULT_MAP

    async def bench(ctx: Any) -> None:
        bus = BusMaster(ctx, dut.bus)
        await bus.write(fault.address(4), 0b1000000001)
        # The core sets bit 2 of row 4 for three cycles running; the bus writes row 7 meanwhile.
        ctx.set(dut.bus.addr, fault.address(7) // 4)
        await ctx.tick()  # the address a cycle before the strobe
        ctx.set(dut.fault_map.write.addr, 4)
        ctx.set(dut.fault_map.write.data, 0x3FF)
        ctx.set(dut.fault_map.write.en, 1 << 2)
        ctx.set(dut.bus.w_data, 0b11)
        ctx.set(dut.bus.w_stb, 1)
        await ctx.tick()
        ctx.set(dut.bus.w_stb, 0)
        cycles = 1
        while not ctx.get(dut.bus.ack):
            if cycles == 3:
                ctx.set(dut.fault_map.write.en, 0)
            await ctx.tick()
            cycles += 1
            assert cycles < 20, "bus write never acknowledged"
        assert not ctx.get(dut.bus.err)
        assert cycles == 4, f"the bus write lands the cycle the core lets go; acked after {cycles} cycles"
        assert await bus.read(fault.address(4)) == 0b1000000101, "the core set one bit, the others stayed"
        assert await bus.read(fault.address(7)) == 0b11
        ctx.set(dut.fault_map.read.addr, 7)
        await ctx.tick()
        assert ctx.get(dut.fault_map.read.data) == 0b11

    simulate(dut, bench)


def test_row_mask_vector_is_seen_whole_by_the_core() -> None:
    dut = ControllerRegisters()
    mask = DEFAULT.ROW_MASK

    async def bench(ctx: Any) -> None:
        bus = BusMaster(ctx, dut.bus)
        assert ctx.get(dut.row_mask) == (1 << 64) - 1
        await bus.write(mask.address(1), 0x0000_0000, strb=0b1000)
        assert ctx.get(dut.row_mask) == (1 << 56) - 1, "only rows 56..63 (byte lane 3 of word 1) cleared"
        await bus.write(mask.address(0), 0x5555_5555)
        assert await bus.read(mask.address(0)) == 0x5555_5555
        assert ctx.get(dut.row_mask) & 0xFFFF_FFFF == 0x5555_5555
        value, err, _ = await bus.access(mask.offset + 2 * 4)
        assert err and value == 0, "word 2 is past 64 rows"

    simulate(dut, bench)


def test_unmapped_gap_answers_err_with_zero() -> None:
    dut = ControllerRegisters()

    async def bench(ctx: Any) -> None:
        bus = BusMaster(ctx, dut.bus)
        for addr in (0x028, 0x0FC, 0x180, 0x3000, 0x1_FFFC):
            value, err, cycles = await bus.access(addr)
            assert err and value == 0 and cycles == 1, f"0x{addr:X}"
            _, err, _ = await bus.access(addr, 0xFFFF_FFFF)
            assert err, f"write 0x{addr:X}"

    simulate(dut, bench)


def test_core_ports_connect_to_a_consumer_without_glue() -> None:
    """A block declaring the flipped memory port signatures connects with wiring.connect."""
    regs = ControllerRegisters()
    consumer = wiring.Signature({
        "rhs": wiring.In(regs.signature.members["rhs"].signature.members["read"].signature),
        "result": wiring.In(regs.signature.members["results"].signature.members["write"].signature),
    }).create()
    m = Module()
    m.submodules.regs = regs
    wiring.connect(m, regs.rhs.read, consumer.rhs)
    wiring.connect(m, regs.results.write, consumer.result)
    assert len(consumer.result.data.code) == 10 and len(consumer.result.data.over_range) == 1
    Fragment.get(m, None)  # elaborates: the connections are legal hardware
