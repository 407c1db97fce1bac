"""The AXI4-Lite slave in front of the anmf register file: handshakes under back-pressure, AW/W
ordering, responses, every register's documented access, buffer windows; plus one cocotb run on
Icarus with cocotbext-axi's AxiLiteMaster."""
from __future__ import annotations

import json
from typing import Any, Callable

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from anmf.hdl.axi4lite import AXI4LiteRegisterFile, AXI4LiteSignature, AXI4LiteSlave, Response
from anmf.hdl.params import BuildParams
from anmf.hdl.registers import ControllerRegisters, build_register_map
from anmf.hdl.regmap_export import describe, host_constants
from anmf.testbench.simulators import BUILD_ROOT, run_bench
from axi_host import AxiLiteHost

REGS = host_constants(build_register_map())


def simulate(dut: Any, *testbenches: Callable, processes: tuple[Callable, ...] = ()) -> None:
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for testbench in testbenches:
        sim.add_testbench(testbench)
    for process in processes:
        sim.add_process(process)
    sim.run()


def new_dut(params: BuildParams | None = None, **kwargs: Any) -> AXI4LiteRegisterFile:
    return AXI4LiteRegisterFile(ControllerRegisters(params), **kwargs)


# --- every register, as documented -----------------------------------------------------------------

def _expected_after_writing_ones(reg: Any) -> int:
    """What a read returns after writing 0xFFFFFFFF, by each field's access (core inputs held at 0)."""
    word = 0
    for f in reg.fields.values():
        if f.access in ("RW",):
            word |= f.mask
        elif f.access == "R":
            word |= f.reset << f.lsb
        # W1S, W read 0; RW1C bits are only set by the core: still 0
    return word


def test_every_register_has_its_documented_reset_and_access() -> None:
    dut = new_dut()
    checked: list[str] = []

    async def bench(ctx: Any) -> None:
        host = AxiLiteHost(ctx, dut.axil)
        for reg in REGS.registers.values():
            value, resp = await host.read(reg.offset)
            assert resp == Response.OKAY and value == reg.reset, \
                f"{reg.name}: reset read 0x{value:08X}, documented 0x{reg.reset:08X}"
            resp = await host.write(reg.offset, 0xFFFF_FFFF)
            expected = Response.OKAY if reg.writable else Response.SLVERR
            assert resp == expected, f"{reg.name}: write answered {resp}, expected {expected}"
            value, _ = await host.read(reg.offset)
            assert value == _expected_after_writing_ones(reg), \
                f"{reg.name} ({reg.access}): read 0x{value:08X} after writing ones"
            checked.append(reg.name)

    simulate(dut, bench)
    assert checked == list(REGS.registers), "every register was visited"


def test_w1c_clears_and_strobes_self_clear_through_axi() -> None:
    dut = new_dut()
    irq = REGS.IRQ_STATUS
    start_cycles: list[int] = []

    async def watch(ctx: Any) -> None:
        cycle = 0
        async for _, _, start in ctx.tick().sample(dut.control.start):
            if start:
                start_cycles.append(cycle)
            cycle += 1

    async def bench(ctx: Any) -> None:
        host = AxiLiteHost(ctx, dut.axil)
        for cause in ("done", "error", "over_range"):
            ctx.set(getattr(dut.irq_status, f"{cause}_set"), 1)
        await ctx.tick()
        for cause in ("done", "error", "over_range"):
            ctx.set(getattr(dut.irq_status, f"{cause}_set"), 0)
        assert (await host.read(irq.offset))[0] == irq.pack(done=1, error=1, over_range=1)
        assert await host.write(irq.offset, irq.pack(error=1)) == Response.OKAY
        assert (await host.read(irq.offset))[0] == irq.pack(done=1, over_range=1)
        assert await host.write(REGS.CONTROL.offset, REGS.CONTROL.pack(start=1), b_delay=3) == Response.OKAY
        for _ in range(6):
            await ctx.tick()
        assert (await host.read(REGS.CONTROL.offset))[0] == 0

    simulate(dut, bench, processes=(watch,))
    assert len(start_cycles) == 1, f"CONTROL.start must pulse exactly one cycle, was high in cycles {start_cycles}"


# --- handshakes -------------------------------------------------------------------------------------

@pytest.mark.parametrize("aw_delay, w_delay", [(0, 0), (0, 4), (4, 0), (1, 2)])
def test_aw_and_w_in_any_order(aw_delay: int, w_delay: int) -> None:
    dut = new_dut()

    async def bench(ctx: Any) -> None:
        host = AxiLiteHost(ctx, dut.axil)
        resp = await host.write(REGS.WATCHDOG.offset, 4321, aw_delay=aw_delay, w_delay=w_delay)
        assert resp == Response.OKAY
        assert ctx.get(dut.watchdog.cycles) == 4321
        assert await host.read(REGS.WATCHDOG.offset) == (4321, Response.OKAY)

    simulate(dut, bench)


def test_back_pressure_on_b_and_r_holds_the_response() -> None:
    dut = new_dut()

    async def bench(ctx: Any) -> None:
        host = AxiLiteHost(ctx, dut.axil)
        assert await host.write(REGS.ANALOG_SETTLE.offset, 777, b_delay=7) == Response.OKAY
        assert await host.write(0x028, 1, b_delay=5) == Response.SLVERR
        assert await host.read(REGS.ANALOG_SETTLE.offset, r_delay=9) == (777, Response.OKAY)
        assert await host.read(0x02C, r_delay=3) == (0, Response.SLVERR)
        # While R waits for RREADY, a second AR waits too; it is taken after the R handshake.
        ctx.set(dut.axil.arvalid, 1)
        ctx.set(dut.axil.araddr, REGS.ID.offset)
        await ctx.tick()
        ctx.set(dut.axil.araddr, REGS.VERSION.offset)
        for _ in range(5):
            assert not ctx.get(dut.axil.arready), "ARREADY must stay low until the R handshake"
            await ctx.tick()
        assert ctx.get(dut.axil.rvalid) and ctx.get(dut.axil.rdata) == REGS.ID.reset
        ctx.set(dut.axil.rready, 1)
        await ctx.tick()
        ctx.set(dut.axil.rready, 0)
        while not ctx.get(dut.axil.arready):
            await ctx.tick()
        await ctx.tick()
        ctx.set(dut.axil.arvalid, 0)
        assert await host.response(dut.axil.rvalid, dut.axil.rready, (dut.axil.rresp, dut.axil.rdata), 0) == \
            (Response.OKAY, REGS.VERSION.reset)

    simulate(dut, bench)


def test_reads_and_writes_in_flight_together_both_complete() -> None:
    dut = new_dut()
    results: dict[str, Any] = {}

    async def writer(ctx: Any) -> None:
        host = AxiLiteHost(ctx, dut.axil)
        for value in (11, 22, 33):
            assert await host.write(REGS.DAC_SETTLE.offset, value, b_delay=1) == Response.OKAY
        results["written"] = True

    async def reader(ctx: Any) -> None:
        host = AxiLiteHost(ctx, dut.axil)
        results["reads"] = [await host.read(REGS.ID.offset, r_delay=2) for _ in range(4)]

    simulate(dut, writer, reader)
    assert results["written"]
    assert results["reads"] == [(REGS.ID.reset, Response.OKAY)] * 4


def test_the_bus_address_is_set_the_cycle_before_each_strobe() -> None:
    # The register file decodes the address in the cycle before the strobe (regmap's bus contract),
    # also when the slave alternates reads and writes to different registers.
    dut = new_dut()
    bus = dut.register_file.bus
    strobes: list[tuple[int, int, str]] = []   # (address before, address at, kind) per strobe

    async def writer(ctx: Any) -> None:
        host = AxiLiteHost(ctx, dut.axil)
        for value in (11, 22, 33):
            assert await host.write(REGS.DAC_SETTLE.offset, value) == Response.OKAY

    async def reader(ctx: Any) -> None:
        host = AxiLiteHost(ctx, dut.axil)
        for _ in range(3):
            assert await host.read(REGS.ID.offset) == (REGS.ID.reset, Response.OKAY)

    async def monitor(ctx: Any) -> None:
        previous = 0
        async for _clk, _rst, addr, r_stb, w_stb in ctx.tick().sample(bus.addr, bus.r_stb, bus.w_stb):
            if r_stb or w_stb:
                strobes.append((previous, addr, "read" if r_stb else "write"))
            previous = addr

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(writer)
    sim.add_testbench(reader)
    sim.add_testbench(monitor, background=True)
    sim.run()
    assert sorted(kind for _, _, kind in strobes) == ["read"] * 3 + ["write"] * 3
    assert {kind for before, at, kind in strobes if before != at} == set(), strobes
    assert {at for _, at, kind in strobes if kind == "write"} == {REGS.DAC_SETTLE.offset // 4}


def test_addresses_above_the_map_answer_slverr_without_aliasing() -> None:
    dut = new_dut(addr_width=32)

    async def bench(ctx: Any) -> None:
        host = AxiLiteHost(ctx, dut.axil)
        assert await host.write(REGS.WATCHDOG.offset, 99) == Response.OKAY
        alias = (1 << 20) | REGS.WATCHDOG.offset
        assert await host.read(alias) == (0, Response.SLVERR)
        assert await host.write(alias, 5) == Response.SLVERR
        assert await host.read(REGS.WATCHDOG.offset) == (99, Response.OKAY)

    simulate(dut, bench)


# --- windows ------------------------------------------------------------------------------------------

def test_buffer_windows_read_back_what_was_written() -> None:
    params = BuildParams(rows=8, cols=3, spare=1)
    regs = host_constants(build_register_map(params))
    dut = new_dut(params)
    rng = np.random.default_rng(11)
    rhs = [int(v) for v in rng.integers(0, 1 << 10, regs.RHS.depth)]
    target = [int(v) for v in rng.integers(0, 1 << 10, regs.TARGET.depth)]
    faults = [int(v) for v in rng.integers(0, 1 << 4, regs.FAULT_MAP.depth)]

    async def bench(ctx: Any) -> None:
        host = AxiLiteHost(ctx, dut.axil)
        for window, values in (("RHS", rhs), ("TARGET", target), ("FAULT_MAP", faults)):
            info = getattr(regs, window)
            for index, value in enumerate(values):
                assert await host.write(info.address(index), value) == Response.OKAY
            read = [(await host.read(info.address(index)))[0] for index in range(info.depth)]
            assert read == values, f"{window} read back {read}, wrote {values}"
        assert await host.write(regs.ROW_MASK.address(0), 0b1010_0101) == Response.OKAY
        assert await host.read(regs.ROW_MASK.address(0)) == (0b1010_0101, Response.OKAY)
        assert ctx.get(dut.row_mask) == 0b1010_0101
        assert await host.read(regs.TARGET.offset + 4 * regs.TARGET.depth) == (0, Response.SLVERR)

    simulate(dut, bench)


# --- construction -----------------------------------------------------------------------------------

@pytest.mark.parametrize("make, message", [
    (lambda: AXI4LiteSignature(addr_width=2), "AXI4-Lite address width must be an integer from 3 to 64, not 2"),
    (lambda: AXI4LiteSlave(bus_addr_width=0), "bus_addr_width must be an integer from 1 to 30, not 0"),
    (lambda: AXI4LiteSlave(bus_addr_width=16, addr_width=17),
     "addr_width must be an integer from 18 (the register bus plus 2 byte bits) to 64, not 17"),
    (lambda: AXI4LiteRegisterFile("regs"), "register_file must be a RegisterFile, not 'regs'"),
])
def test_construction_is_validated(make: Callable[[], Any], message: str) -> None:
    with pytest.raises(ValueError) as info:
        make()
    assert str(info.value) == message


def test_verilog_ports_bind_by_prefix() -> None:
    """cocotbext-axi's from_prefix(dut, "axil", bus_separator="__") expects axil__<signal>."""
    text = verilog.convert(new_dut(), name="axi_regs")
    for signal in ("awaddr", "awvalid", "awready", "wdata", "wstrb", "wvalid", "wready", "bresp", "bvalid",
                   "bready", "araddr", "arvalid", "arready", "rdata", "rresp", "rvalid", "rready"):
        assert f" axil__{signal};" in text, f"port axil__{signal} missing"


# --- cocotb with a real AXI4-Lite BFM -----------------------------------------------------------------

def test_cocotb_axilite_master_on_icarus() -> None:
    name = "axi_regs"
    build_dir = BUILD_ROOT / f"{name}-icarus"
    build_dir.mkdir(parents=True, exist_ok=True)
    description = build_dir / "regmap.json"
    description.write_text(json.dumps(describe(build_register_map())))
    results = run_bench(sim="icarus", verilog=verilog.convert(new_dut(), name=name), toplevel=name,
                        test_module="anmf.testbench.bench_axi_regs", name=name,
                        extra_env={"ANMF_REGMAP_JSON": str(description)})
    text = results.read_text()
    assert text.count("<testcase") == 2, f"expected 2 cocotb tests in {results}"
    assert "<failure" not in text and "<error" not in text, f"cocotb failures in {results}"
