"""The code-level AFE model (model/afe.py) answering a block's AFE port in amaranth.sim, with the
cocotb binding's timing: the benches of the Calibrator, the Refiner, the ANLS sequencer and the
column remap (tests/test_calibrator.py, test_refiner.py, test_anls_sequencer.py,
test_column_remap.py) and the controller's benches with the model behind the AFE port
(test_controller_calibration.py, test_refine_controller.py)."""
from __future__ import annotations

from typing import Any

from amaranth.hdl import Value
from amaranth.lib import wiring

from anmf.hdl.afe import AFESignature
from anmf.hdl.params import BuildParams
from anmf.model.afe import AnalogFrontEnd
from anmf.model.formats import PICOSECONDS_PER_SECOND
from model_adc import ModelADC

CONTROLS = ("mode", "loop", "row_en", "col_en", "cell_row", "cell_col", "cal_ref_sel")


class ModelAFE:
    """The AFE model answering an AFE port in amaranth.sim, with the cocotb binding's timing
    (testbench/afe_binding.py): every action at the start of its strobe cycle, controls first;
    adc_busy rises L cycles after the start and falls B cycles later with the data; prog_done is
    high P cycles after the fire cycle."""

    def __init__(self, afe: AnalogFrontEnd, port: Any, params: BuildParams,
                 probes: dict[str, Any] | None = None, *, hang_adc: bool = False,
                 strict: bool = False) -> None:
        """``probes``: extra signals (name: signal) whose high cycles are kept in ``seen[name]``;
        ``hang_adc``: adc_busy never rises (the watchdog tests); ``strict``: a protocol error
        raises AssertionError at once instead of only being kept in ``protocol_errors``."""
        self.afe, self.port = afe, port
        self.outputs = [p.name for p in AFESignature(params).ports() if p.flow == wiring.Out]
        self.probes = dict(probes or {})
        self.hang_adc, self.strict = hang_adc, strict
        self.cycle = 0
        self.conversions: list[tuple[int, dict[str, int]]] = []   # (cycle, controls)
        self.ldac_cycles: list[int] = []
        self.pulses: list[int] = []                                # prog_fire cycles
        self.seen: dict[str, list[int]] = {name: [] for name in self.probes}
        self.protocol_errors: list[str] = []

    def time_s(self, cycle: int) -> float:
        """The model's time (s) at the start of ``cycle``."""
        return cycle * self.afe.period_ps / PICOSECONDS_PER_SECOND

    def _protocol_error(self, message: str) -> None:
        self.protocol_errors.append(message)
        if self.strict:
            raise AssertionError(message)

    async def process(self, ctx) -> None:
        afe, port = self.afe, self.port
        probe_names = list(self.probes)
        signals = [Value.cast(getattr(port, n)) for n in self.outputs] + \
            [Value.cast(v) for v in self.probes.values()]
        applied = tuple(0 for _ in CONTROLS)
        adc = ModelADC(afe, port, hang=self.hang_adc)
        prog_count = 0
        async for _clk, _rst, *values in ctx.tick().sample(*signals):
            s = dict(zip(self.outputs, values[:len(self.outputs)]))
            cycle, self.cycle = self.cycle, self.cycle + 1
            for name, value in zip(probe_names, values[len(self.outputs):]):
                if value:
                    self.seen[name].append(cycle)
            t = self.time_s(cycle)
            controls = tuple(s[name] for name in CONTROLS)
            if controls != applied:
                afe.apply_controls(t, **dict(zip(CONTROLS, controls)))
                applied = controls
            if s["dac_we"] and s["dac_ldac"]:
                self._protocol_error(f"cycle {cycle}: dac_we with dac_ldac")
            if s["dac_we"]:
                afe.write_dac(s["dac_addr"], s["dac_data"])
            if s["dac_ldac"]:
                afe.load_dacs(t)
                self.ldac_cycles.append(cycle)
            if s["adc_start"]:
                if not adc.idle:
                    self._protocol_error(f"cycle {cycle}: adc_start while busy")
                adc.start(s["adc_mux"], t)
                self.conversions.append((cycle, dict(zip(CONTROLS, controls),
                                                     adc_mux=s["adc_mux"])))
            adc.tick(ctx)
            # prog_done is high P cycles after the fire cycle (the cocotb binding's pulse timing).
            if prog_count:
                prog_count -= 1
                if prog_count == 0:
                    ctx.set(port.prog_done, 1)
            else:
                ctx.set(port.prog_done, 0)
            if s["prog_fire"]:
                if prog_count:
                    self._protocol_error(f"cycle {cycle}: prog_fire during a pulse")
                afe.pulse(s["cell_row"], s["cell_col"], s["prog_polarity"], s["prog_amplitude"],
                          s["prog_width"], t)
                self.pulses.append(cycle)
                prog_count = afe.pulse_cycles(s["prog_width"]) - 1
                if prog_count == 0:
                    ctx.set(port.prog_done, 1)
