"""The host's view of the chip's register bus: 32-bit words at byte addresses.

A :class:`RegisterBus` is all a :class:`~anmf.host.driver.RegisterDriver` needs: an AXI4-Lite
master in a cocotb bench (``anmf.testbench.axi_bus``), a PCIe/UART bridge to an FPGA board
later. An optional :class:`InterruptLine` lets the driver sleep until the controller's
``irq`` rises instead of polling STATUS. Nothing here imports cocotb.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["RegisterBus", "InterruptLine", "BusError", "WORD_MASK"]

#: Every register and window element is one 32-bit word.
WORD_MASK = 0xFFFF_FFFF


class BusError(RuntimeError):
    """The bus refused an access (AXI4-Lite SLVERR / DECERR): an unmapped address, a write
    to a read-only register, or a bridge fault. ``address`` and ``write`` say which access."""

    def __init__(self, message: str, *, address: int, write: bool):
        super().__init__(message)
        self.address = address
        self.write = write


@runtime_checkable
class RegisterBus(Protocol):
    """Word access to the controller's register map (docs/registers.md)."""

    async def read(self, addr: int) -> int:
        """The 32-bit word at byte address ``addr``; raises :class:`BusError` if refused."""
        ...

    async def write(self, addr: int, value: int) -> None:
        """Write the 32-bit ``value`` at byte address ``addr``; raises :class:`BusError` if
        refused."""
        ...


@runtime_checkable
class InterruptLine(Protocol):
    """The controller's level-sensitive ``irq`` output as the host sees it."""

    async def wait_high(self, timeout_s: float) -> bool:
        """Return True once the line is high (at once if it already is), False when
        ``timeout_s`` seconds of the bus's time passed first."""
        ...
