"""The host's :class:`~anmf.host.bus.RegisterBus` and :class:`~anmf.host.bus.InterruptLine`
in a cocotb bench: word accesses on the DUT's ``axil__*`` ports and a wait on its ``irq``
output. With these, :class:`anmf.host.RegisterDriver` runs unchanged on the RTL.

Two masters drive the AXI4-Lite ports:

- ``"direct"`` (the default): this module drives the ports itself, one access at a time,
  and wakes Python twice per access (the response's VALID rising, then the handshake edge).
  It relies on the slave behaviour hdl/axi4lite.py documents: AWREADY/WREADY stay low from
  acceptance until the B handshake and ARREADY until the R handshake, so VALID may stay
  high until the response shows up without starting a second transfer. BREADY/RREADY are
  held high.
- ``"cocotbext-axi"``: cocotbext-axi's AxiLiteMaster (any AXI4-Lite slave; its channel
  coroutines wake on every clock edge of a transfer and it logs every access, which made it
  the costliest part of the scenarios' bus time). The bus bench (bench_bus.py) checks the
  slave with it under random stalls.
"""
from __future__ import annotations

from typing import Any

from cocotb.handle import SimHandleBase
from cocotb.triggers import RisingEdge, SimTimeoutError, with_timeout
from cocotbext.axi import AxiLiteBus, AxiLiteMaster, AxiResp

from anmf.host.bus import WORD_MASK, BusError

__all__ = ["AxiLiteRegisterBus", "IrqLine", "MASTERS"]

_WORD_BYTES = 4
_ALL_LANES = (1 << _WORD_BYTES) - 1
_PICOSECONDS_PER_SECOND = 10 ** 12
#: The accepted ``master`` names of :class:`AxiLiteRegisterBus`.
MASTERS = ("direct", "cocotbext-axi")


def _unsigned(handle: SimHandleBase) -> int:
    value = handle.value
    return value.to_unsigned() if hasattr(value, "to_unsigned") else int(value)


class AxiLiteRegisterBus:
    """Word reads and writes through an AXI4-Lite master; a response other than OKAY raises
    :class:`~anmf.host.bus.BusError` naming the address and the response.

    Args:
        dut: the cocotb handle of the top level.
        clock, reset: its clock and (active-high) reset.
        prefix: the AXI4-Lite port's name (``axil`` -> ``axil__awaddr`` ...).
        master: ``"direct"`` or ``"cocotbext-axi"`` (see the module doc).
    """

    def __init__(self, dut: Any, clock: SimHandleBase, reset: SimHandleBase, *,
                 prefix: str = "axil", master: str = "direct"):
        if master not in MASTERS:
            raise ValueError(f"master must be one of {', '.join(MASTERS)}; got {master!r}")
        self.master_kind = master
        self.clock = clock
        self.master: AxiLiteMaster | None = None
        self._busy = False
        if master == "cocotbext-axi":
            self.master = AxiLiteMaster(AxiLiteBus.from_prefix(dut, prefix, bus_separator="__"),
                                        clock, reset)
            return
        names = ("awaddr", "awvalid", "wdata", "wstrb", "wvalid", "bresp", "bvalid", "bready",
                 "araddr", "arvalid", "rdata", "rresp", "rvalid", "rready")
        try:
            self._ports = {name: getattr(dut, f"{prefix}__{name}") for name in names}
        except AttributeError as exc:
            raise ValueError(f"the DUT lacks an AXI4-Lite port of prefix {prefix!r}: {exc}") from None
        p = self._ports
        for name in ("awvalid", "wvalid", "arvalid"):
            p[name].value = 0
        p["bready"].value = 1
        p["rready"].value = 1
        p["wstrb"].value = _ALL_LANES

    @staticmethod
    def _check_address(addr: int) -> None:
        if isinstance(addr, bool) or not isinstance(addr, int) or addr < 0 or addr % _WORD_BYTES:
            raise ValueError(f"addr must be a word-aligned byte address >= 0; got {addr!r}")

    def _claim(self) -> None:
        if self._busy:
            raise RuntimeError("the direct AXI4-Lite master runs one access at a time; another "
                               "is in flight")
        self._busy = True

    async def read(self, addr: int) -> int:
        self._check_address(addr)
        if self.master is not None:
            response = await self.master.read(addr, _WORD_BYTES)
            resp, data = response.resp, int.from_bytes(response.data, "little")
        else:
            self._claim()
            p = self._ports
            try:
                p["araddr"].value = addr
                p["arvalid"].value = 1
                await RisingEdge(p["rvalid"])
                p["arvalid"].value = 0
                # RREADY is high: the next edge is the handshake; RDATA/RRESP hold through it
                # (read now, not in rvalid's callback, where Icarus may not have updated them).
                await RisingEdge(self.clock)
                resp, data = AxiResp(_unsigned(p["rresp"])), _unsigned(p["rdata"])
            finally:
                self._busy = False
        if resp != AxiResp.OKAY:
            raise BusError(f"AXI4-Lite read of 0x{addr:05X} answered {resp.name}",
                           address=addr, write=False)
        return data

    async def write(self, addr: int, value: int) -> None:
        self._check_address(addr)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= WORD_MASK:
            raise ValueError(f"value must be a 32-bit unsigned word (0 to 0x{WORD_MASK:X}); got "
                             f"{value!r}")
        if self.master is not None:
            response = await self.master.write(addr, value.to_bytes(_WORD_BYTES, "little"))
            resp = response.resp
        else:
            self._claim()
            p = self._ports
            try:
                p["awaddr"].value = addr
                p["wdata"].value = value
                p["awvalid"].value = 1
                p["wvalid"].value = 1
                await RisingEdge(p["bvalid"])
                p["awvalid"].value = 0
                p["wvalid"].value = 0
                await RisingEdge(self.clock)  # the B handshake (BREADY is high)
                resp = AxiResp(_unsigned(p["bresp"]))
            finally:
                self._busy = False
        if resp != AxiResp.OKAY:
            raise BusError(f"AXI4-Lite write of 0x{value:08X} to 0x{addr:05X} answered "
                           f"{resp.name}", address=addr, write=True)


class IrqLine:
    """The DUT's interrupt output: :meth:`wait_high` returns at its rising edge, or False
    after ``timeout_s`` of simulated time."""

    def __init__(self, signal: SimHandleBase):
        self.signal = signal

    async def wait_high(self, timeout_s: float) -> bool:
        if _unsigned(self.signal):
            return True
        try:
            await with_timeout(RisingEdge(self.signal),
                               round(timeout_s * _PICOSECONDS_PER_SECOND), "ps")
        except SimTimeoutError:
            return False
        return True
