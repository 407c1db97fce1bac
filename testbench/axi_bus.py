"""The host's :class:`~anmf.host.bus.RegisterBus` and :class:`~anmf.host.bus.InterruptLine`
in a cocotb bench: cocotbext-axi's AxiLiteMaster on the DUT's ``axil__*`` ports and a wait on
its ``irq`` output. With these, :class:`anmf.host.RegisterDriver` runs unchanged on the RTL.
"""
from __future__ import annotations

from typing import Any

from cocotb.handle import SimHandleBase
from cocotb.triggers import RisingEdge, SimTimeoutError, with_timeout
from cocotbext.axi import AxiLiteBus, AxiLiteMaster, AxiResp

from anmf.host.bus import WORD_MASK, BusError

__all__ = ["AxiLiteRegisterBus", "IrqLine"]

_WORD_BYTES = 4
_PICOSECONDS_PER_SECOND = 10 ** 12


class AxiLiteRegisterBus:
    """Word reads and writes through an AXI4-Lite master; a response other than OKAY raises
    :class:`~anmf.host.bus.BusError` naming the address and the response.

    Args:
        dut: the cocotb handle of the top level.
        clock, reset: its clock and (active-high) reset.
        prefix: the AXI4-Lite port's name (``axil`` -> ``axil__awaddr`` ...).
    """

    def __init__(self, dut: Any, clock: SimHandleBase, reset: SimHandleBase, *,
                 prefix: str = "axil"):
        self.master = AxiLiteMaster(AxiLiteBus.from_prefix(dut, prefix, bus_separator="__"),
                                    clock, reset)

    @staticmethod
    def _check_address(addr: int) -> None:
        if isinstance(addr, bool) or not isinstance(addr, int) or addr < 0 or addr % _WORD_BYTES:
            raise ValueError(f"addr must be a word-aligned byte address >= 0; got {addr!r}")

    async def read(self, addr: int) -> int:
        self._check_address(addr)
        response = await self.master.read(addr, _WORD_BYTES)
        if response.resp != AxiResp.OKAY:
            raise BusError(f"AXI4-Lite read of 0x{addr:05X} answered {response.resp.name}",
                           address=addr, write=False)
        return int.from_bytes(response.data, "little")

    async def write(self, addr: int, value: int) -> None:
        self._check_address(addr)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= WORD_MASK:
            raise ValueError(f"value must be a 32-bit unsigned word (0 to 0x{WORD_MASK:X}); got "
                             f"{value!r}")
        response = await self.master.write(addr, value.to_bytes(_WORD_BYTES, "little"))
        if response.resp != AxiResp.OKAY:
            raise BusError(f"AXI4-Lite write of 0x{value:08X} to 0x{addr:05X} answered "
                           f"{response.resp.name}", address=addr, write=True)


class IrqLine:
    """The DUT's interrupt output: :meth:`wait_high` returns at its rising edge, or False
    after ``timeout_s`` of simulated time."""

    def __init__(self, signal: SimHandleBase):
        self.signal = signal

    async def wait_high(self, timeout_s: float) -> bool:
        value = self.signal.value
        if int(value) if not hasattr(value, "to_unsigned") else value.to_unsigned():
            return True
        try:
            await with_timeout(RisingEdge(self.signal),
                               round(timeout_s * _PICOSECONDS_PER_SECOND), "ps")
        except SimTimeoutError:
            return False
        return True
