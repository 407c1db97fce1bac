"""The AFE model's ADC at the AFE port, one step per cycle, for the Amaranth-simulator
benches that put the code-level model (model/afe.py) behind a block's AFE port (through
tests/model_afe.py's ModelAFE), with the cocotb binding's timing: the value is sampled at
the start strobe, ``adc_busy`` rises ``adc_latency_cycles`` later, falls ``adc_busy_cycles``
after that with the data."""
from __future__ import annotations

from typing import Any


class ModelADC:
    """``hang``: busy never rises (an AFE that stops answering, for the watchdog tests)."""

    def __init__(self, afe: Any, port: Any, *, hang: bool = False) -> None:
        self.afe, self.port, self.hang = afe, port, hang
        self.phase, self.count, self.answer = "idle", 0, (0, False)

    @property
    def idle(self) -> bool:
        return self.phase == "idle"

    def start(self, mux: int, t_s: float) -> None:
        """The start strobe at ``t_s``: convert now, answer later."""
        self.answer = self.afe.convert(mux, t_s)
        self.phase, self.count = "latency", self.afe.adc_latency_cycles

    def tick(self, ctx: Any) -> None:
        """One clock cycle (after a ``start`` in the same cycle, if any)."""
        port = self.port
        if self.phase == "latency":
            self.count -= 1
            if self.count == 0 and not self.hang:
                ctx.set(port.adc_busy, 1)
                self.phase, self.count = "busy", self.afe.adc_busy_cycles
        elif self.phase == "busy":
            self.count -= 1
            if self.count == 0:
                ctx.set(port.adc_busy, 0)
                ctx.set(port.adc_data, self.answer[0])
                ctx.set(port.adc_ovr, int(self.answer[1]))
                self.phase = "idle"
