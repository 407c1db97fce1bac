"""AFE stand-in for the Amaranth-simulator unit tests of the controller blocks.

A ``sim.add_process`` coroutine that behaves like the AFE at the interface of
docs/afe-interface.md, with deterministic, checkable answers:

- DACs: input registers latched on ``dac_we``, outputs updated on ``dac_ldac``; both start
  at the zero-volt code ``params.dac_zero_code`` (offset binary), as a real AFE's DACs do;
- ADC in SOLVE/SOLVE_FREE/MVM: column c reads
  ``offset[c] + (sum_r row_en[r] * gain[r, c] * dac_out[r]) >> gain_shift`` (+ optional
  seeded noise), clipped to the code range with ``adc_ovr`` set when clipped;
  in READ_CELL the cell's code (+ noise). Or a script of (code, ovr) answers in order.
  ``adc_busy`` rises ``adc_latency`` cycles after the start strobe and stays high for
  ``adc_busy_cycles``; data is valid when it falls;
- programming: a SET pulse raises a cell by ``amplitude // pulse_divisor`` codes, RESET
  lowers it (clipped); stuck cells never move; ``prog_done`` pulses ``prog_latency`` cycles
  after ``prog_fire``;
- faults for the watchdog: the ADC never raising busy, or never dropping it; no prog_done.

It records what it saw (DAC writes, conversions, pulses) and protocol violations, so the
tests can check the sequencing itself and not only the results.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from amaranth.hdl import Value

from amaranth.lib import wiring

from anmf.hdl.afe import AFEMode, AFESignature, ProgPolarity
from anmf.hdl.params import BuildParams

__all__ = ["AFEStandIn", "Conversion", "Pulse", "ADC_FAULTS", "PROG_FAULTS",
           "driven_afe_members"]

ADC_FAULTS = ("none", "never_busy", "stuck_busy")
PROG_FAULTS = ("none", "never_done")
_ANALOG_MODES = (AFEMode.SOLVE.value, AFEMode.SOLVE_FREE.value, AFEMode.MVM.value)
_OUTPUTS = ("dac_addr", "dac_data", "dac_we", "dac_ldac", "row_en", "col_en", "mode", "loop",
            "adc_mux", "adc_start", "cell_row", "cell_col", "prog_polarity", "prog_amplitude",
            "prog_width", "prog_fire", "cal_ref_sel")


def driven_afe_members(ctx, afe, params: BuildParams) -> dict[str, int]:
    """Controller-driven AFE members that are not at their idle value 0 (testbench use);
    enumerated from the one AFE definition, as the cocotb binding does."""
    driven = {}
    for port in AFESignature(params).ports():
        if port.flow == wiring.Out:
            value = ctx.get(Value.cast(getattr(afe, port.name)))
            if value:
                driven[port.name] = value
    return driven


@dataclass(frozen=True)
class Conversion:
    """One ADC conversion as the stand-in saw its start strobe."""

    cycle: int                 #: cycle of the adc_start strobe
    mux: int
    mode: int
    loop: int
    row_en: int
    col_en: int
    cell: tuple[int, int]
    loop_cycles_before: int    #: cycles loop had been high before the start cycle
    code: int
    over_range: bool


@dataclass(frozen=True)
class Pulse:
    """One programming pulse as the stand-in saw its fire strobe."""

    cycle: int
    row: int
    col: int
    polarity: ProgPolarity
    amplitude: int
    width: int
    mode: int


@dataclass
class AFEStandIn:
    """Behavioural AFE bound to a block's ``afe`` port; add ``process`` with sim.add_process."""

    afe: object
    params: BuildParams
    adc_latency: int = 1
    adc_busy_cycles: int = 3
    gain: np.ndarray | None = None       #: rows x total_cols, integer
    gain_shift: int = 0
    offset: np.ndarray | None = None     #: total_cols, integer
    noise_amplitude: int = 0             #: uniform integer noise in [-a, a] per conversion
    rng: np.random.Generator | None = None
    script: list[tuple[int, bool]] | None = None   #: answers in order, overrides the maps
    cells: np.ndarray | None = None      #: rows x total_cols conductance codes
    stuck: frozenset[tuple[int, int]] = frozenset()
    pulse_divisor: int = 4
    prog_latency: int = 3
    adc_fault: str = "none"
    prog_fault: str = "none"

    # observations
    cycle: int = 0
    dac_input: np.ndarray = field(init=False)
    dac_output: np.ndarray = field(init=False)
    dac_writes: list[tuple[int, int, int]] = field(default_factory=list)  # (cycle, row, code)
    ldac_cycles: list[int] = field(default_factory=list)
    loop_rise_cycles: list[int] = field(default_factory=list)
    mode_changes: list[tuple[int, int]] = field(default_factory=list)  # (cycle, new mode)
    conversions: list[Conversion] = field(default_factory=list)
    pulses: list[Pulse] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.adc_fault not in ADC_FAULTS:
            raise ValueError(f"adc_fault must be one of {ADC_FAULTS}, got {self.adc_fault!r}")
        if self.prog_fault not in PROG_FAULTS:
            raise ValueError(f"prog_fault must be one of {PROG_FAULTS}, got {self.prog_fault!r}")
        if self.adc_latency < 1 or self.adc_busy_cycles < 1 or self.prog_latency < 1:
            raise ValueError("adc_latency, adc_busy_cycles and prog_latency must be >= 1")
        p = self.params
        if self.gain is None:
            self.gain = np.zeros((p.rows, p.total_cols), dtype=np.int64)
        if self.offset is None:
            self.offset = np.zeros(p.total_cols, dtype=np.int64)
        if self.cells is None:
            self.cells = np.zeros((p.rows, p.total_cols), dtype=np.int64)
        if self.noise_amplitude and self.rng is None:
            raise ValueError("noise_amplitude needs a seeded rng")
        self.dac_input = np.full(p.rows, p.dac_zero_code, dtype=np.int64)
        self.dac_output = np.full(p.rows, p.dac_zero_code, dtype=np.int64)
        self._script_pos = 0
        self._adc_phase = "idle"     # idle, latency, busy, hung
        self._adc_count = 0
        self._pending: tuple[int, bool] = (0, False)
        self._prog_count = 0         # edges until prog_done; 0 = no pulse in flight
        self._loop_cycles = 0
        self._mode = AFEMode.IDLE.value

    def dacs_at_zero_volts(self) -> bool:
        """Every DAC input register and output holds the zero-volt code (the safe state)."""
        zero = self.params.dac_zero_code
        return bool((self.dac_input == zero).all() and (self.dac_output == zero).all())

    @property
    def full_scale(self) -> int:
        return 2 ** self.params.adc_bits - 1

    def _clip(self, value: int) -> tuple[int, bool]:
        if value > self.full_scale:
            return self.full_scale, True
        if value < 0:
            return 0, True
        return int(value), False

    def _noise(self) -> int:
        if not self.noise_amplitude:
            return 0
        return int(self.rng.integers(-self.noise_amplitude, self.noise_amplitude + 1))

    def _rows_enabled(self, row_en: int) -> np.ndarray:
        bits = (row_en >> np.arange(self.params.rows, dtype=object)) & 1
        return np.asarray(bits, dtype=np.int64)

    def column_value(self, col: int, row_en: int) -> int:
        """Noise-free analog answer of column ``col`` for the current DAC outputs."""
        driven = self.dac_output * self._rows_enabled(row_en)
        return int(self.offset[col] + (int(driven @ self.gain[:, col]) >> self.gain_shift))

    def _sample(self, s: dict[str, int]) -> tuple[int, bool]:
        if self.script is not None:
            if self._script_pos >= len(self.script):
                self.violations.append(f"cycle {self.cycle}: conversion beyond the script")
                return 0, False
            code, over_range = self.script[self._script_pos]
            self._script_pos += 1
            return int(code), bool(over_range)
        mode = s["mode"]
        if mode in _ANALOG_MODES:
            if not (s["col_en"] >> s["adc_mux"]) & 1:
                return 0, False
            return self._clip(self.column_value(s["adc_mux"], s["row_en"]) + self._noise())
        if mode == AFEMode.READ_CELL.value:
            return self._clip(int(self.cells[s["cell_row"], s["cell_col"]]) + self._noise())
        return 0, False

    def _apply_pulse(self, pulse: Pulse) -> None:
        if (pulse.row, pulse.col) in self.stuck:
            return
        delta = pulse.amplitude // self.pulse_divisor
        if pulse.polarity == ProgPolarity.RESET:
            delta = -delta
        value = int(self.cells[pulse.row, pulse.col]) + delta
        self.cells[pulse.row, pulse.col] = min(max(value, 0), self.full_scale)

    async def process(self, ctx) -> None:
        afe = self.afe
        outputs = [Value.cast(getattr(afe, name)) for name in _OUTPUTS]
        pending_pulse: Pulse | None = None
        async for _clk, _rst, *values in ctx.tick().sample(*outputs):
            s = dict(zip(_OUTPUTS, values))
            cycle = self.cycle          # the cycle whose values were sampled at this edge
            self.cycle += 1

            if s["mode"] != self._mode:
                self._mode = s["mode"]
                self.mode_changes.append((cycle, s["mode"]))

            # DACs
            if s["dac_we"] and s["dac_ldac"]:
                self.violations.append(f"cycle {cycle}: dac_we and dac_ldac together")
            if s["dac_we"]:
                self.dac_input[s["dac_addr"]] = s["dac_data"]
                self.dac_writes.append((cycle, s["dac_addr"], s["dac_data"]))
            if s["dac_ldac"]:
                self.dac_output = self.dac_input.copy()
                self.ldac_cycles.append(cycle)
            if s["mode"] == AFEMode.IDLE.value and (s["loop"] or s["row_en"] or s["col_en"]):
                self.violations.append(f"cycle {cycle}: loop/switches set in mode IDLE")

            # ADC
            if s["adc_start"]:
                if self._adc_phase != "idle":
                    self.violations.append(f"cycle {cycle}: adc_start during a conversion")
                elif s["mode"] == AFEMode.IDLE.value:
                    self.violations.append(f"cycle {cycle}: adc_start in mode IDLE")
                else:
                    code, over_range = self._sample(s)
                    self.conversions.append(Conversion(
                        cycle, s["adc_mux"], s["mode"], s["loop"], s["row_en"], s["col_en"],
                        (s["cell_row"], s["cell_col"]), self._loop_cycles, code, over_range))
                    self._pending = (code, over_range)
                    self._adc_phase, self._adc_count = "latency", self.adc_latency
            if self._adc_phase == "latency":
                self._adc_count -= 1
                if self._adc_count == 0:
                    if self.adc_fault == "never_busy":
                        self._adc_phase = "hung"
                    else:
                        ctx.set(afe.adc_busy, 1)
                        self._adc_phase, self._adc_count = "busy", self.adc_busy_cycles
            elif self._adc_phase == "busy" and self.adc_fault != "stuck_busy":
                self._adc_count -= 1
                if self._adc_count == 0:
                    ctx.set(afe.adc_busy, 0)
                    ctx.set(afe.adc_data, self._pending[0])
                    ctx.set(afe.adc_ovr, int(self._pending[1]))
                    self._adc_phase = "idle"

            # loop bookkeeping (after the ADC, which counts the cycles before its start)
            if s["loop"]:
                if self._loop_cycles == 0:
                    self.loop_rise_cycles.append(cycle)
                self._loop_cycles += 1
            else:
                self._loop_cycles = 0

            # programming
            if self._prog_count:
                self._prog_count -= 1
                if self._prog_count == 0:
                    ctx.set(afe.prog_done, 1)
                    self._apply_pulse(pending_pulse)
                    pending_pulse = None
            else:
                ctx.set(afe.prog_done, 0)
            if s["prog_fire"]:
                pulse = Pulse(cycle, s["cell_row"], s["cell_col"],
                              ProgPolarity(s["prog_polarity"]), s["prog_amplitude"],
                              s["prog_width"], s["mode"])
                self.pulses.append(pulse)
                if s["mode"] != AFEMode.PROGRAM.value:
                    self.violations.append(f"cycle {cycle}: prog_fire outside mode PROGRAM")
                if pending_pulse is not None or self._prog_count:
                    self.violations.append(f"cycle {cycle}: prog_fire during a pulse")
                elif self.prog_fault == "none":
                    # prog_done is visible prog_latency cycles after the fire cycle.
                    self._prog_count = self.prog_latency - 1
                    if self._prog_count == 0:
                        ctx.set(afe.prog_done, 1)
                        self._apply_pulse(pulse)
                    else:
                        pending_pulse = pulse
