"""The code-level AFE model (model/afe.py) answering a block's AFE port in amaranth.sim, with the
cocotb binding's timing: the Calibrator's bench (tests/test_calibrator.py) and the controller's
calibration bench (tests/test_controller_calibration.py)."""
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

    def __init__(self, afe: AnalogFrontEnd, port: Any, params: BuildParams, *,
                 hang_adc: bool = False) -> None:
        self.afe, self.port = afe, port
        self.outputs = [p.name for p in AFESignature(params).ports() if p.flow == wiring.Out]
        self.hang_adc = hang_adc
        self.cycle = 0
        self.conversions: list[tuple[int, dict[str, int]]] = []   # (cycle, controls)
        self.ldac_cycles: list[int] = []
        self.protocol_errors: list[str] = []

    async def process(self, ctx) -> None:
        afe, port = self.afe, self.port
        signals = [Value.cast(getattr(port, n)) for n in self.outputs]
        applied = tuple(0 for _ in CONTROLS)
        adc = ModelADC(afe, port, hang=self.hang_adc)
        prog_count = 0
        async for _clk, _rst, *values in ctx.tick().sample(*signals):
            s = dict(zip(self.outputs, values))
            cycle, self.cycle = self.cycle, self.cycle + 1
            t = cycle * afe.period_ps / PICOSECONDS_PER_SECOND
            controls = tuple(s[name] for name in CONTROLS)
            if controls != applied:
                afe.apply_controls(t, **dict(zip(CONTROLS, controls)))
                applied = controls
            if s["dac_we"] and s["dac_ldac"]:
                self.protocol_errors.append(f"cycle {cycle}: dac_we with dac_ldac")
            if s["dac_we"]:
                afe.write_dac(s["dac_addr"], s["dac_data"])
            if s["dac_ldac"]:
                afe.load_dacs(t)
                self.ldac_cycles.append(cycle)
            if s["adc_start"]:
                if not adc.idle:
                    self.protocol_errors.append(f"cycle {cycle}: adc_start while busy")
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
                    self.protocol_errors.append(f"cycle {cycle}: prog_fire during a pulse")
                afe.pulse(s["cell_row"], s["cell_col"], s["prog_polarity"], s["prog_amplitude"],
                          s["prog_width"], t)
                prog_count = afe.pulse_cycles(s["prog_width"]) - 1
                if prog_count == 0:
                    ctx.set(port.prog_done, 1)
