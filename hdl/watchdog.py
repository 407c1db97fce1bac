"""Watchdog timer bounding every wait on the AFE (ADC busy, programming done).

The controller never trusts the analog side: a block restarts the watchdog in the cycle
it issues a strobe (adc_start, prog_fire) and gives up when ``expired`` rises before the
AFE answered.
"""
from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Watchdog"]


class Watchdog(wiring.Component):
    """Down-counter: ``expired`` is high from the ``limit``-th cycle after a restart.

    If ``restart`` is high in cycle s, ``expired`` is low in cycles s+1 .. s+limit-1 and
    high from cycle s+limit on, until the next restart. A waiting block checks the AFE's
    answer first and the watchdog second, so an answer arriving in cycle s+limit still
    counts: an AFE operation may take up to ``limit`` cycles. ``limit`` must be at least 1
    (blocks reject 0 with BAD_TIMING; 0 behaves like 1); ``limit`` is sampled in the
    restart cycle.
    """

    def __init__(self, width: int):
        if type(width) is not int or not 1 <= width <= 64:
            self._MustUse__silence = True  # a rejected object is no unused design to warn of
            raise ValueError(f"width must be an integer from 1 to 64, got {width!r}")
        self._width = width
        super().__init__({
            "limit": In(width),
            "restart": In(1),
            "expired": Out(1),
        })

    @property
    def width(self) -> int:
        return self._width

    def elaborate(self, platform) -> Module:
        m = Module()
        remaining = Signal(self._width)
        # expired is `remaining == 0` as a flip-flop set a cycle ahead (from `remaining <= 1`,
        # or the restart's `limit <= 1`): the wide zero test behind it was in front of the
        # blocks' error enables, the iCE40's critical path (docs/synthesis.md I46).
        expired = Signal(init=1)
        with m.If(self.restart):
            # Counting from limit - 1 puts the expiry exactly limit cycles after restart;
            # a limit of 0 (rejected by the blocks) must not wrap to the longest wait.
            m.d.sync += [remaining.eq(Mux(self.limit == 0, 0, self.limit - 1)),
                         expired.eq(self.limit[1:] == 0)]
        with m.Else():
            with m.If(remaining != 0):
                m.d.sync += remaining.eq(remaining - 1)
            m.d.sync += expired.eq(remaining[1:] == 0)
        m.d.comb += self.expired.eq(expired)
        return m
