"""cocotb bench: the AXI4-Lite slave and the anmf register file, driven by cocotbext-axi's
AxiLiteMaster (a real bus-functional model).

The runner (tests/test_axi4lite.py) builds ``AXI4LiteRegisterFile(ControllerRegisters())`` and
passes the register map's JSON description in ``ANMF_REGMAP_JSON``: the bench takes every
offset and bit position from it, as a host driver would, and imports no Amaranth.
"""
from __future__ import annotations

import os
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiLiteBus, AxiLiteMaster, AxiResp

from anmf.hdl.regmap_export import HostRegisterMap


def _regs() -> HostRegisterMap:
    return HostRegisterMap.from_description(Path(os.environ["ANMF_REGMAP_JSON"]).read_text())


async def _start(dut) -> AxiLiteMaster:
    Clock(dut.clk, 10, unit="ns").start()
    for name in ("status__busy", "status__done", "status__error", "status__error_detail"):
        getattr(dut, name).value = 0
    dut.rst.value = 1
    # Amaranth flattens the `axil` signature to axil__awaddr, ...: bind with the "__" separator.
    master = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "axil", bus_separator="__"), dut.clk, dut.rst)
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)
    return master


async def _read(master: AxiLiteMaster, address: int) -> tuple[int, AxiResp]:
    response = await master.read(address, 4)
    return int.from_bytes(response.data, "little"), response.resp


async def _write(master: AxiLiteMaster, address: int, value: int) -> AxiResp:
    response = await master.write(address, value.to_bytes(4, "little"))
    return response.resp


@cocotb.test()
async def identity_registers_and_windows(dut) -> None:
    """Reset values, a read-write register, core-side ports, a buffer window, byte writes."""
    regs = _regs()
    master = await _start(dut)

    value, resp = await _read(master, regs.ID.offset)
    assert resp == AxiResp.OKAY and value == regs.ID.reset, f"ID read 0x{value:08X} ({resp})"
    value, _ = await _read(master, regs.PARAMS_ARRAY.offset)
    assert regs.PARAMS_ARRAY.unpack(value) == {k: regs.params[k] for k in ("rows", "cols", "spare")}, \
        f"PARAMS_ARRAY read {regs.PARAMS_ARRAY.unpack(value)}"

    word = regs.COMMAND.pack(opcode="PROGRAM_CELL", row=12, col=3)
    assert await _write(master, regs.COMMAND.offset, word) == AxiResp.OKAY
    value, _ = await _read(master, regs.COMMAND.offset)
    assert value == word, f"COMMAND read back 0x{value:08X}, wrote 0x{word:08X}"
    await RisingEdge(dut.clk)
    assert dut.command__opcode.value.to_unsigned() == regs.COMMAND.opcode.values["PROGRAM_CELL"]
    assert dut.command__row.value.to_unsigned() == 12 and dut.command__col.value.to_unsigned() == 3

    # One byte write (WSTRB = 0b0010) into TIMING.adc_samples leaves the other bytes alone.
    assert await _write(master, regs.TIMING.offset, 0x0000_0004) == AxiResp.OKAY
    response = await master.write(regs.TIMING.offset + 1, bytes([0x12]))
    assert response.resp == AxiResp.OKAY
    value, _ = await _read(master, regs.TIMING.offset)
    assert value == 0x0000_1204, f"TIMING after a byte write: 0x{value:08X}"

    # A value the core drives shows in STATUS.
    dut.status__busy.value = 1
    dut.status__error.value = regs.STATUS.error.values["ADC_TIMEOUT"]
    await RisingEdge(dut.clk)
    value, _ = await _read(master, regs.STATUS.offset)
    assert regs.STATUS.unpack(value)["busy"] == 1
    assert regs.STATUS.unpack(value)["error"] == regs.STATUS.error.values["ADC_TIMEOUT"]

    codes = [(37 * row + 5) % (1 << regs.RHS.code.width) for row in range(8)]
    for row, code in enumerate(codes):
        assert await _write(master, regs.RHS.address(row), code) == AxiResp.OKAY
    for row, code in enumerate(codes):
        value, resp = await _read(master, regs.RHS.address(row))
        assert resp == AxiResp.OKAY and value == code, f"RHS[{row}] read {value}, wrote {code}"


@cocotb.test()
async def refused_accesses_answer_slverr(dut) -> None:
    """Unmapped addresses and writes to read-only registers answer SLVERR and change nothing."""
    regs = _regs()
    master = await _start(dut)

    value, resp = await _read(master, 0x028)  # gap between IRQ_STATUS and TIMING
    assert resp == AxiResp.SLVERR and value == 0, f"unmapped read: {resp}, 0x{value:X}"
    value, resp = await _read(master, regs.RHS.offset + 4 * regs.RHS.depth)  # past the build's depth
    assert resp == AxiResp.SLVERR
    assert await _write(master, 0x028, 0xFFFF_FFFF) == AxiResp.SLVERR
    assert await _write(master, regs.ID.offset, 0) == AxiResp.SLVERR
    value, resp = await _read(master, regs.ID.offset)
    assert resp == AxiResp.OKAY and value == regs.ID.reset, "a refused write must not change ID"
    assert await _write(master, regs.RESULTS.address(0), 1) == AxiResp.SLVERR
    # The bus still works after errors.
    assert await _write(master, regs.WATCHDOG.offset, 1234) == AxiResp.OKAY
    value, resp = await _read(master, regs.WATCHDOG.offset)
    assert resp == AxiResp.OKAY and value == 1234
