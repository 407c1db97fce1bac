"""The analog front end at code level: what the controller's AFE port talks to.

One model answers both the cocotb binding (testbench/afe_binding.py, which calls it on
every strobe with the simulator's time) and the golden model (model/golden.py, which
calls it at the times the cycle formulas give). It owns a crossbar, the closed-loop NNLS
circuit, the row DACs and one ADC behind the column mux, and keeps the analog state
between calls: DAC outputs settling after ``dac_ldac``, the closed-loop transient after
``loop`` rises, the read chain settling after a cell is selected.

Time is explicit and in seconds, rounded to integer picoseconds
(``formats.to_picoseconds``) so that both callers present the model with exactly the
same time differences. Times must not go backwards.

How each signal is answered (docs/afe-interface.md, "How the model answers"):

- ``dac_we``: :meth:`write_dac` sets a row's input register. ``dac_ldac``:
  :meth:`load_dacs` moves every output from its present value toward its new one,
  exponentially, reaching the target exactly ``DACConfig.settle_time_s`` later (the time
  constant puts the error of a full-scale step at 1/2 LSB then).
- ``mode``, ``loop``, ``row_en``, ``col_en``, ``cell_row``/``cell_col``, ``cal_ref_sel``:
  :meth:`apply_controls` (or the single setters). In SOLVE / SOLVE_FREE with ``loop`` 1
  the circuit's exact transient runs from the present outputs (0 V when the loop was open:
  opening the loop resets the op-amp outputs). A change while the loop is closed (DACs,
  switches, conductances) restarts the transient from the outputs at that moment. The
  circuit's input is piecewise constant: the DAC outputs at the moment the loop closes
  (unsettled if the DACs still move) until the DACs have settled, then their final values.
  MVM with ``loop`` 1: each column's sense amplifier (the column op-amp with feedback
  conductance ``mvm_feedback_s``) settles first-order toward
  ``sum_i (G_ij - g_ref_j) v_i / mvm_feedback_s`` plus its offset times its noise gain.
- ``adc_start``: :meth:`convert` samples the selected analog value at that time (an early
  sample reads the unsettled transient) and converts it with the ADC's offset, gain error,
  INL/DNL and (unless deterministic) noise. The conversion lasts :attr:`adc_cycles`.
- READ_CELL: the read transimpedance maps the cell's measured conductance (IR drop and,
  unless deterministic, read noise included) to ``G / read_full_scale_s * v_max``, settling
  with ``read_settle_tau_s`` from the moment the cell was selected.
- ``prog_fire``: :meth:`pulse` applies one SET/RESET pulse of ``amplitude_code *
  amplitude_lsb_v`` volts and ``width_code * width_lsb_s`` seconds through the device
  model; ``prog_done`` follows :meth:`pulse_cycles` cycles later.
- CAL: ``cal_ref_sel`` picks a reference from :data:`CAL_REFERENCES` (exact fractions of the
  ADC's positive full scale) or the DAC loopback of row ``cell_row``.
"""
from __future__ import annotations

import math
from enum import IntEnum
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .circuit import NNLSCircuit, Solution
from .config import AFEConfig
from .converters import ADC, DAC
from .crossbar import Crossbar
from .device import RESET, SET, WriteVerifyConfig
from .formats import (PICOSECONDS_PER_SECOND, ProgramSettings, code_to_conductance,
                      conductance_to_code, quantity_to_code, to_picoseconds, tolerance_to_codes,
                      zero_code)

__all__ = ["AnalogFrontEnd", "Mode", "Polarity", "CAL_REFERENCES", "CAL_DAC_LOOPBACK",
           "CONTROL_NAMES", "deterministic_config", "BuildParamsLike"]

FloatArray = NDArray[np.float64]


class Mode(IntEnum):
    """``afe.mode`` values (the contract's ``anmf.hdl.afe.AFEMode``; model/ does not
    import hdl/, tests/test_afe_model.py checks the two agree)."""

    IDLE = 0
    SOLVE = 1
    SOLVE_FREE = 2
    MVM = 3
    READ_CELL = 4
    PROGRAM = 5
    CAL = 6


class Polarity(IntEnum):
    """``afe.prog_polarity`` values (``anmf.hdl.afe.ProgPolarity``)."""

    SET = 0    #: raise the conductance
    RESET = 1  #: lower the conductance


#: Marks the ``cal_ref_sel`` value that loops row ``cell_row``'s DAC output to the ADC.
CAL_DAC_LOOPBACK = "dac"
#: ``cal_ref_sel`` -> reference routed to the ADC in mode CAL: a fraction of the ADC's
#: positive full scale ``v_max_v`` (assumed exact: a bandgap-derived precision reference),
#: or the DAC loopback. Values beyond the table select ground (0 V).
CAL_REFERENCES: tuple[float | str, ...] = (0.0, 0.5, -0.5, 0.875, -0.875, CAL_DAC_LOOPBACK)

#: The level controls, in the keyword names of :meth:`AnalogFrontEnd.apply_controls`.
CONTROL_NAMES = ("mode", "loop", "row_en", "col_en", "cell_row", "cell_col", "cal_ref_sel")
_CONTROL_SET = frozenset(CONTROL_NAMES)
# Members by value and as module constants: Enum calls and class attribute lookups cost
# microseconds, and these run on every AFE event.
_MODES = tuple(Mode)
_READ_CELL, _PROGRAM = Mode.READ_CELL, Mode.PROGRAM
_POLARITIES = tuple(Polarity)
_POLARITY_SET = Polarity.SET
_LOOP_MODES = (Mode.SOLVE, Mode.SOLVE_FREE)
_ANALOG_MODES = (Mode.SOLVE, Mode.SOLVE_FREE, Mode.MVM)


class BuildParamsLike(Protocol):
    """The build parameters the AFE and the golden model need (``anmf.hdl.params.BuildParams``
    has them; model/ does not import hdl/)."""

    rows: int
    cols: int
    spare: int
    dac_bits: int
    adc_bits: int
    prog_amp_bits: int
    prog_width_bits: int
    cal_ref_bits: int


def deterministic_config(afe: AFEConfig) -> AFEConfig:
    """``afe`` with every per-conversion and per-read noise off (ADC noise, device read
    noise). Offsets, gain errors, INL/DNL, quantization, finite gain, IR drop, device
    variation, stuck cells and the programming (cycle-to-cycle) noise stay: the pulses'
    noise is drawn from the seeded generator in pulse order, so two models built from the
    same configuration and given the same pulses stay identical."""
    if not isinstance(afe, AFEConfig):
        raise ValueError(f"afe must be an AFEConfig; got {type(afe).__name__}")
    return afe.replace(device=afe.device.replace(read_noise_rel=0.0),
                       adc=afe.adc.replace(noise_lsb=0.0))


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    if type(value) is int and low <= value and (high is None or value <= high):
        return value  # the common case, checked without the general path's isinstance calls
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low \
            or (high is not None and value > high):
        accepted = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"
        raise ValueError(f"AnalogFrontEnd {name} must be {accepted}; got {value!r}")
    return int(value)


def _check_positive(name: str, value: Any, *, allow_zero: bool = False) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) \
        and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        accepted = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"AnalogFrontEnd {name} must be a finite number {accepted}; got "
                         f"{value!r}")
    return float(value)


class _LoopSegment:
    """Closed-loop outputs from t_start_ps on: one circuit Solution (cached)."""

    def __init__(self, t_start_ps: int, solution: Solution):
        self.t_start_ps = t_start_ps
        self.solution = solution

    def outputs(self, t_ps: int) -> FloatArray:
        return self.solution.state_at((t_ps - self.t_start_ps) / PICOSECONDS_PER_SECOND)


class _SenseSegment:
    """MVM sense outputs from t_start_ps on: first-order settling per column."""

    def __init__(self, t_start_ps: int, start_v: FloatArray, final_v: FloatArray,
                 tau_s: FloatArray):
        self.t_start_ps = t_start_ps
        self.start_v = start_v
        self.final_v = final_v
        self.tau_s = tau_s

    def outputs(self, t_ps: int) -> FloatArray:
        elapsed = (t_ps - self.t_start_ps) / PICOSECONDS_PER_SECOND
        return self.final_v + (self.start_v - self.final_v) * np.exp(-elapsed / self.tau_s)


class AnalogFrontEnd:
    """The AFE of one ``rows`` x (``cols`` + ``spare``) array at the level of the AFE port.

    Args:
        afe: the analog configuration (preset or TOML); the build parameters below override
            its crossbar size and converter resolutions.
        rows, cols, spare, dac_bits, adc_bits: build parameters (``BuildParams``).
        amp_bits, width_bits, cal_ref_bits: widths of ``prog_amplitude``, ``prog_width``,
            ``cal_ref_sel``.
        clock_hz: controller clock; turns the ADC conversion time and pulse durations into
            cycles (:attr:`adc_cycles`, :meth:`pulse_cycles`).
        deterministic: turn the per-conversion and per-read noise off
            (:func:`deterministic_config`).
        amplitude_lsb_v, width_lsb_s: volts / seconds per ``prog_amplitude`` / ``prog_width``
            code. 10 mV and 10 ns put WriteVerifyConfig's defaults (1.0 V start, 0.05 V step,
            2.0 V ceiling, 100 ns) at codes 100, 5, 200, 10.
        pulse_overhead_s: driver and switch time added to a pulse before ``prog_done``.
        read_full_scale_s: conductance that reads as ``v_max`` (default 8/7 of the device's
            g_max: g_max reads at 7/8 of the positive full scale, code 960 of 10 bits).
        read_settle_tau_s: time constant of the read chain after a cell is selected.
        mvm_feedback_s: feedback conductance of the MVM sense amplifiers (default
            rows * (g_max - g_offset): every row at +1 V on every cell at g_max reads +1 V).
        adc_latency_cycles: cycles from ``adc_start`` to ``adc_busy`` rising (L >= 1).
        rng: the generator of every random draw (default ``default_rng(afe.seed)``). Draw
            order: crossbar devices, circuit offsets, DACs, ADC; then pulses and reads.
    """

    def __init__(self, afe: AFEConfig, *, rows: int, cols: int, spare: int, dac_bits: int,
                 adc_bits: int, amp_bits: int = 8, width_bits: int = 8, cal_ref_bits: int = 3,
                 clock_hz: float = 100e6, deterministic: bool = False,
                 amplitude_lsb_v: float = 0.01, width_lsb_s: float = 10e-9,
                 pulse_overhead_s: float = 20e-9, read_full_scale_s: float | None = None,
                 read_settle_tau_s: float = 20e-9, mvm_feedback_s: float | None = None,
                 adc_latency_cycles: int = 1, rng: np.random.Generator | None = None):
        if not isinstance(afe, AFEConfig):
            raise ValueError(f"AnalogFrontEnd needs an AFEConfig; got {type(afe).__name__}")
        self.rows = _check_int("rows", rows, 1)
        self.cols = _check_int("cols", cols, 1)
        self.spare = _check_int("spare", spare, 0)
        self.total_cols = self.cols + self.spare
        self.dac_bits = _check_int("dac_bits", dac_bits, 1, 16)
        self.adc_bits = _check_int("adc_bits", adc_bits, 1, 16)
        self.amp_bits = _check_int("amp_bits", amp_bits, 1, 32)
        self.width_bits = _check_int("width_bits", width_bits, 1, 32)
        self.cal_ref_bits = _check_int("cal_ref_bits", cal_ref_bits, 1, 16)
        self.clock_hz = _check_positive("clock_hz", clock_hz)
        if not isinstance(deterministic, bool):
            raise ValueError(f"AnalogFrontEnd deterministic must be True or False; got "
                             f"{deterministic!r}")
        self.deterministic = deterministic
        self.amplitude_lsb_v = _check_positive("amplitude_lsb_v", amplitude_lsb_v)
        self.width_lsb_s = _check_positive("width_lsb_s", width_lsb_s)
        self.pulse_overhead_s = _check_positive("pulse_overhead_s", pulse_overhead_s,
                                                allow_zero=True)
        self.read_settle_tau_s = _check_positive("read_settle_tau_s", read_settle_tau_s,
                                                 allow_zero=True)
        self.adc_latency_cycles = _check_int("adc_latency_cycles", adc_latency_cycles, 1)
        if rng is not None and not isinstance(rng, np.random.Generator):
            raise ValueError(f"AnalogFrontEnd rng must be a numpy.random.Generator or None; "
                             f"got {type(rng).__name__}")
        self.period_ps = round(PICOSECONDS_PER_SECOND / self.clock_hz)
        if self.period_ps < 2:
            raise ValueError(f"AnalogFrontEnd clock_hz must give a period of at least 2 ps; "
                             f"got {clock_hz!r}")

        self._source_config = afe
        config = deterministic_config(afe) if deterministic else afe
        adc = config.adc
        config = config.replace(
            crossbar=config.crossbar.replace(rows=self.rows, cols=self.cols, spare=self.spare),
            dac=config.dac.replace(bits=self.dac_bits),
            adc=adc.replace(bits=self.adc_bits,
                            conversion_cycles=max(adc.conversion_cycles, self.adc_bits)))
        self.config = config
        device, circuit = config.device, config.circuit
        self.read_full_scale_s = (_check_positive("read_full_scale_s", read_full_scale_s)
                                  if read_full_scale_s is not None else device.g_max_s * 8 / 7)
        default_feedback = self.rows * (device.g_max_s - circuit.g_offset_s)
        self.mvm_feedback_s = (_check_positive("mvm_feedback_s", mvm_feedback_s)
                               if mvm_feedback_s is not None else default_feedback)
        if self.mvm_feedback_s <= 0:
            raise ValueError("AnalogFrontEnd needs the device's g_max_s above the circuit's "
                             "g_offset_s for the default mvm_feedback_s")

        self._rng_given = rng is not None
        self.rng = rng if rng is not None else np.random.default_rng(config.seed)
        self.crossbar = Crossbar(config.crossbar, device, self.rng)
        self.circuit = NNLSCircuit(circuit, self.rows, self.total_cols, self.rng)
        self.dac = DAC(self.rows, config.dac, self.rng)
        self.adc = ADC(1, config.adc, self.rng)

        #: Protocol violations seen (a pulse outside PROGRAM, a bad mux, ...).
        self.violations: list[str] = []
        self._last_ps = 0
        # DACs: input registers and the output transition of the last ldac.
        self._dac_input = np.full(self.rows, zero_code(self.dac_bits), dtype=np.int64)
        self._dac_to_v = self.dac.voltage(self._dac_input)
        self._dac_from_v = self._dac_to_v.copy()
        self._dac_ldac_ps: int | None = None
        settle = config.dac.settle_time_s
        self._dac_settle_ps = to_picoseconds(settle)
        self._dac_tau_s = settle / math.log(2.0 ** (self.dac_bits + 1)) if settle > 0 else 0.0
        # Controls as last applied.
        self._mode = Mode.IDLE
        self._loop = False
        self._row_en = np.zeros(self.rows, dtype=bool)
        self._col_en = np.zeros(self.total_cols, dtype=bool)
        # The port bit vectors of _row_en / _col_en: an unchanged vector needs no new mask.
        self._row_bits = 0
        self._col_bits = 0
        # Staged control changes (stage_controls): the time (ps) and every control's value
        # then; None when nothing is staged.
        self._staged_ps: int | None = None
        self._staged_controls: dict[str, int] = {}
        self._cell = (0, 0)
        self._cal_ref = 0
        self._select_ps = 0
        # Closed-loop / sense state.
        self._segment: _LoopSegment | _SenseSegment | None = None
        self._break_ps: int | None = None

    # ---- construction from build parameters -----------------------------------------

    @classmethod
    def from_build_params(cls, afe: AFEConfig, params: BuildParamsLike,
                          **options: Any) -> "AnalogFrontEnd":
        """The AFE for a controller built with ``params`` (``anmf.hdl.params.BuildParams``)."""
        return cls(afe, rows=params.rows, cols=params.cols, spare=params.spare,
                   dac_bits=params.dac_bits, adc_bits=params.adc_bits,
                   amp_bits=params.prog_amp_bits, width_bits=params.prog_width_bits,
                   cal_ref_bits=params.cal_ref_bits, **options)

    # ---- time ------------------------------------------------------------------------

    def _time(self, t_s: float) -> int:
        if self._staged_ps is not None:
            self.commit_controls()  # staged changes happened before this call's time
        t_ps = to_picoseconds(t_s)
        if t_ps < self._last_ps:
            raise ValueError(f"AnalogFrontEnd time must not go backwards: got {t_s!r} s after "
                             f"{self._last_ps / PICOSECONDS_PER_SECOND!r} s")
        self._last_ps = t_ps
        return t_ps

    # ---- timing in controller cycles ---------------------------------------------------

    def _cycles(self, duration_ps: int) -> int:
        return max(1, -(-duration_ps // self.period_ps))

    @property
    def conversion_time_s(self) -> float:
        """Time of one ADC conversion (s), from the ADC configuration."""
        return self.config.adc.conversion_time_s

    @property
    def adc_busy_cycles(self) -> int:
        """B: cycles ``adc_busy`` stays high, ceil(conversion time / clock period), >= 1."""
        return self._cycles(to_picoseconds(self.conversion_time_s))

    @property
    def adc_cycles(self) -> int:
        """t_adc = L + B: cycles from ``adc_start`` to the first cycle with busy low again."""
        return self.adc_latency_cycles + self.adc_busy_cycles

    def pulse_duration_s(self, width_code: int) -> float:
        """Pulse width plus driver overhead (s): the time from ``prog_fire`` to its end."""
        width_code = _check_int("width_code", width_code, 0, 2 ** self.width_bits - 1)
        return width_code * self.width_lsb_s + self.pulse_overhead_s

    def pulse_cycles(self, width_code: int) -> int:
        """P: cycles from ``prog_fire`` to ``prog_done`` (the pulse has ended), >= 1."""
        return self._cycles(to_picoseconds(self.pulse_duration_s(width_code)))

    # ---- host-side number formats ------------------------------------------------------

    def conductance_code(self, g_s: ArrayLike) -> Any:
        """READ_CELL code of conductance ``g_s`` (ideal read chain): target codes for the
        programmer."""
        adc = self.config.adc
        return conductance_to_code(g_s, full_scale_s=self.read_full_scale_s,
                                   bits=self.adc_bits, v_min_v=adc.v_min_v, v_max_v=adc.v_max_v)

    def code_conductance(self, code: ArrayLike) -> Any:
        """Conductance (S) a READ_CELL code stands for."""
        adc = self.config.adc
        return code_to_conductance(code, full_scale_s=self.read_full_scale_s,
                                   bits=self.adc_bits, v_min_v=adc.v_min_v, v_max_v=adc.v_max_v)

    def program_settings(self, config: WriteVerifyConfig | None = None, *,
                         read_settle: int = 16) -> ProgramSettings:
        """The programmer operands (codes, cycles) for a write-verify configuration
        (default: this AFE's ``programming`` section). ``reads_per_verify`` must be a power
        of two (it becomes the ADC averaging)."""
        wv = self.config.programming if config is None else config
        if not isinstance(wv, WriteVerifyConfig):
            raise ValueError(f"config must be a WriteVerifyConfig; got {type(wv).__name__}")
        reads = wv.reads_per_verify
        if reads & (reads - 1):
            raise ValueError(f"WriteVerifyConfig.reads_per_verify must be a power of two for "
                             f"the controller's averaging; got {reads}")
        adc = self.config.adc
        budget_top = 2 ** 16 - 1
        if wv.max_pulses > budget_top:
            raise ValueError(f"WriteVerifyConfig.max_pulses must be <= {budget_top}; got "
                             f"{wv.max_pulses}")
        return ProgramSettings(
            tolerance=tolerance_to_codes(wv.tolerance_s, full_scale_s=self.read_full_scale_s,
                                         bits=self.adc_bits, v_min_v=adc.v_min_v,
                                         v_max_v=adc.v_max_v),
            amp_start=quantity_to_code(wv.amplitude_start_v, lsb=self.amplitude_lsb_v,
                                       bits=self.amp_bits, name="amplitude_start_v"),
            amp_step=quantity_to_code(wv.amplitude_step_v, lsb=self.amplitude_lsb_v,
                                      bits=self.amp_bits, name="amplitude_step_v"),
            amp_max=quantity_to_code(wv.amplitude_max_v, lsb=self.amplitude_lsb_v,
                                     bits=self.amp_bits, name="amplitude_max_v"),
            pulse_width=quantity_to_code(wv.width_s, lsb=self.width_lsb_s,
                                         bits=self.width_bits, name="width_s"),
            pulse_budget=wv.max_pulses, avg_log2=reads.bit_length() - 1,
            read_settle=read_settle)

    # ---- controls ----------------------------------------------------------------------

    @staticmethod
    def _mask(bits: int, size: int, name: str) -> NDArray[np.bool_]:
        """A port bit vector as a bool array (bit i -> entry i)."""
        bits = _check_int(name, bits, 0, 2 ** size - 1)
        octets = np.frombuffer(bits.to_bytes((size + 7) // 8, "little"), dtype=np.uint8)
        return np.unpackbits(octets, bitorder="little")[:size].astype(bool)

    def stage_controls(self, t_s: float, **changes: int) -> None:
        """Control changes at ``t_s`` (keywords of :meth:`apply_controls`, the others keep
        their values), applied together as one :meth:`apply_controls` at ``t_s`` when the
        model next needs them: at a call with a later time (this one included), a query of
        the analog state, or :meth:`commit_controls`. The cocotb binding stages each port
        change as it sees it, without waiting for the end of the time step in which more
        controls may change. Values are checked when applied."""
        if not _CONTROL_SET.issuperset(changes):
            raise ValueError(f"unknown AFE controls {sorted(set(changes) - _CONTROL_SET)}; "
                             f"accepted: {', '.join(CONTROL_NAMES)}")
        t_ps = to_picoseconds(t_s)
        if self._staged_ps is not None and self._staged_ps != t_ps:
            self.commit_controls()
        if t_ps < self._last_ps:
            raise ValueError(f"AnalogFrontEnd time must not go backwards: got {t_s!r} s after "
                             f"{self._last_ps / PICOSECONDS_PER_SECOND!r} s")
        if self._staged_ps is None:
            self._staged_controls = self._controls_now()
            self._staged_ps = t_ps
        self._staged_controls.update(changes)

    def commit_controls(self) -> None:
        """Apply the staged control changes (:meth:`stage_controls`) now, at their time."""
        if self._staged_ps is None:
            return
        t_ps, self._staged_ps = self._staged_ps, None
        self._last_ps = t_ps  # staging checked that it does not go backwards
        self._apply_controls_ps(t_ps, **self._staged_controls)

    def _controls_now(self) -> dict[str, int]:
        """The applied controls as port values (apply_controls' keywords)."""
        return dict(mode=int(self._mode), loop=int(self._loop), row_en=self._row_bits,
                    col_en=self._col_bits, cell_row=self._cell[0], cell_col=self._cell[1],
                    cal_ref_sel=self._cal_ref)

    def apply_controls(self, t_s: float, *, mode: int, loop: int, row_en: int, col_en: int,
                       cell_row: int = 0, cell_col: int = 0, cal_ref_sel: int = 0) -> None:
        """The controller-driven level signals as they are from time ``t_s`` on (values as
        on the port: ``row_en``/``col_en`` bit vectors). Unchanged values change nothing, so
        the binding may call this on every event."""
        self._apply_controls_ps(self._time(t_s), mode=mode, loop=loop, row_en=row_en,
                                col_en=col_en, cell_row=cell_row, cell_col=cell_col,
                                cal_ref_sel=cal_ref_sel)

    def _apply_controls_ps(self, t_ps: int, *, mode: int, loop: int, row_en: int, col_en: int,
                           cell_row: int, cell_col: int, cal_ref_sel: int) -> None:
        new_mode = _MODES[_check_int("mode", mode, 0, len(_MODES) - 1)]
        new_loop = bool(_check_int("loop", loop, 0, 1))
        row_bits = _check_int("row_en", row_en, 0, 2 ** self.rows - 1)
        col_bits = _check_int("col_en", col_en, 0, 2 ** self.total_cols - 1)
        rows_changed, cols_changed = row_bits != self._row_bits, col_bits != self._col_bits
        new_rows = self._mask(row_bits, self.rows, "row_en") if rows_changed else self._row_en
        new_cols = self._mask(col_bits, self.total_cols, "col_en") if cols_changed \
            else self._col_en
        _check_int("cell_row", cell_row, 0, self.rows - 1)
        _check_int("cell_col", cell_col, 0, self.total_cols - 1)
        self._cal_ref = _check_int("cal_ref_sel", cal_ref_sel, 0, 2 ** self.cal_ref_bits - 1)
        new_cell = (int(cell_row), int(cell_col))
        if new_mode is _READ_CELL and (self._mode is not _READ_CELL or new_cell != self._cell):
            self._select_ps = t_ps
        self._cell = new_cell
        if new_mode is not self._mode or new_loop != self._loop or rows_changed or cols_changed:
            self._reconfigure(t_ps, new_mode, new_loop, new_rows, new_cols, int(row_bits),
                              int(col_bits))

    def set_switches(self, row_en: int, col_en: int, t_s: float) -> None:
        """``row_en``/``col_en`` bit vectors from ``t_s`` on."""
        self._change_controls(t_s, row_en=row_en, col_en=col_en)

    def set_mode(self, mode: int, t_s: float) -> None:
        """``mode`` (:class:`Mode`) from ``t_s`` on."""
        self._change_controls(t_s, mode=mode)

    def close_loop(self, t_s: float) -> None:
        """``loop`` rises: the transient starts from 0 V (the loop was open)."""
        self._change_controls(t_s, loop=1)

    def open_loop(self, t_s: float) -> None:
        """``loop`` falls: the outputs return to 0 V."""
        self._change_controls(t_s, loop=0)

    def select_cell(self, row: int, col: int, t_s: float) -> None:
        """``cell_row``/``cell_col`` from ``t_s`` on (READ_CELL, PROGRAM, DAC loopback)."""
        self._change_controls(t_s, cell_row=row, cell_col=col)

    def _change_controls(self, t_s: float, **changes: int) -> None:
        """apply_controls with ``changes`` and every other control as it is."""
        self.commit_controls()
        self.apply_controls(t_s, **{**self._controls_now(), **changes})

    @property
    def mode(self) -> Mode:
        self.commit_controls()
        return self._mode

    @property
    def loop_closed(self) -> bool:
        self.commit_controls()
        return self._loop

    # ---- analog state ------------------------------------------------------------------

    def _active(self) -> bool:
        return (self._mode in _ANALOG_MODES and self._loop and self._row_bits != 0
                and self._col_bits != 0)

    def _advance(self, t_ps: int) -> None:
        """Cross the moment the DACs finish settling, if it lies before t_ps: the circuit's
        input steps from the frozen unsettled values to the final ones there."""
        if self._break_ps is not None and self._segment is not None and t_ps >= self._break_ps:
            at = self._break_ps
            self._rebuild(at, self._segment.outputs(at))

    def _outputs_now(self, t_ps: int) -> FloatArray:
        self._advance(t_ps)
        if self._segment is None:
            return np.zeros(self.total_cols)
        return self._segment.outputs(t_ps)

    def _reconfigure(self, t_ps: int, mode: Mode, loop: bool, row_en: NDArray[np.bool_],
                     col_en: NDArray[np.bool_], row_bits: int, col_bits: int) -> None:
        """Apply a change at t_ps; a loop that stays closed keeps its present outputs."""
        was_active = self._active()
        present = self._outputs_now(t_ps) if was_active else None
        self._mode, self._loop, self._row_en, self._col_en = mode, loop, row_en, col_en
        self._row_bits, self._col_bits = row_bits, col_bits
        if not self._active():
            self._segment = None  # what _rebuild does when nothing analog runs
            self._break_ps = None
            return
        self._rebuild(t_ps, present if was_active else np.zeros(self.total_cols))

    def _rebuild(self, t_ps: int, start_v: FloatArray) -> None:
        self._segment = None
        self._break_ps = None
        if not self._active():
            return
        settled_ps = (self._dac_ldac_ps + self._dac_settle_ps
                      if self._dac_ldac_ps is not None else 0)
        v_in = self._dac_voltage(t_ps)  # frozen at the segment start until the DACs settle
        if t_ps < settled_ps:
            self._break_ps = settled_ps
        start = np.where(self._col_en, start_v, 0.0)
        g = self.crossbar.effective_conductance_s(self._row_en, self._col_en)
        if self._mode in _LOOP_MODES:
            circuit_mode = "clamped" if self._mode == Mode.SOLVE else "free"
            lower, upper = self.circuit.config.bounds_v(circuit_mode)
            solution = self.circuit.solve(g, v_in, self._row_en, self._col_en, circuit_mode,
                                          x0_v=np.clip(start, lower, upper))
            self._segment = _LoopSegment(t_ps, solution)
        else:
            final, tau = self._sense_outputs(g, v_in)
            self._segment = _SenseSegment(t_ps, start, final, tau)

    def _sense_outputs(self, g: FloatArray, v_in: FloatArray) -> tuple[FloatArray, FloatArray]:
        """MVM: final outputs and time constants of the column sense amplifiers."""
        c = self.circuit.config
        g = g * self.crossbar.devices.read_noise_factors(g.shape)
        rows_on = self._row_en[:, None]
        product = ((g - self.circuit.reference_conductance_s[None, :]) * rows_on).T @ v_in
        node = (g * rows_on).sum(axis=0)
        noise_gain = 1.0 + node / self.mvm_feedback_s
        ideal = product / self.mvm_feedback_s + self.circuit.column_offset_v * noise_gain
        finite_gain = 1.0 / (1.0 + noise_gain / c.opamp_gain)
        final = np.clip(ideal * finite_gain, -c.rail_v, c.rail_v)
        final = np.where(self._col_en, final, 0.0)
        tau = noise_gain / (2.0 * math.pi * c.gbw_hz)
        return final, tau

    def solution(self) -> Solution | None:
        """The cached circuit Solution of the closed loop (None when the loop is not closed
        in SOLVE / SOLVE_FREE)."""
        self.commit_controls()
        return self._segment.solution if isinstance(self._segment, _LoopSegment) else None

    # ---- DACs --------------------------------------------------------------------------

    def write_dac(self, addr: int, code: int) -> None:
        """``dac_we``: row ``addr``'s input register := ``code`` (outputs unchanged)."""
        addr = _check_int("dac_addr", addr, 0, self.rows - 1)
        self._dac_input[addr] = _check_int("dac_data", code, 0, 2 ** self.dac_bits - 1)

    def load_dacs(self, t_s: float) -> None:
        """``dac_ldac``: every output starts moving to its input register's voltage."""
        t_ps = self._time(t_s)
        was_active = self._active()
        present = self._outputs_now(t_ps) if was_active else np.zeros(self.total_cols)
        self._dac_from_v = self._dac_voltage(t_ps)
        self._dac_to_v = self.dac.voltage(self._dac_input)
        self._dac_ldac_ps = t_ps
        if was_active:
            self._rebuild(t_ps, present)

    @property
    def dac_codes(self) -> NDArray[np.int64]:
        """The DAC input registers (a copy)."""
        return self._dac_input.copy()

    def _dac_voltage(self, t_ps: int) -> FloatArray:
        if self._dac_ldac_ps is None or t_ps >= self._dac_ldac_ps + self._dac_settle_ps:
            return self._dac_to_v.copy()
        elapsed = (t_ps - self._dac_ldac_ps) / PICOSECONDS_PER_SECOND
        return self._dac_to_v + (self._dac_from_v - self._dac_to_v) * math.exp(
            -elapsed / self._dac_tau_s)

    def dac_output_v(self, t_s: float) -> FloatArray:
        """Every row DAC's output (V) at ``t_s``."""
        return self._dac_voltage(self._time(t_s))

    # ---- ADC ---------------------------------------------------------------------------

    def analog_input_v(self, mux: int, t_s: float) -> float:
        """The voltage the ADC samples at ``t_s`` in the present mode (one read-noise draw
        in READ_CELL unless deterministic)."""
        return self._input_v(mux, self._time(t_s))

    def _input_v(self, mux: int, t_ps: int) -> float:
        mode = self._mode
        if mode in _ANALOG_MODES:
            if not 0 <= mux < self.total_cols:
                self.violations.append(f"t={t_ps} ps: adc_mux {mux} beyond the "
                                       f"{self.total_cols} columns")
                return 0.0
            return float(self._outputs_now(t_ps)[mux])
        if mode == Mode.READ_CELL:
            row, col = self._cell
            final = self._read_voltage(self.crossbar.read(row, col))
            if self.read_settle_tau_s == 0:
                return final
            elapsed = (t_ps - self._select_ps) / PICOSECONDS_PER_SECOND
            return final * -math.expm1(-elapsed / self.read_settle_tau_s)
        if mode == Mode.CAL:
            reference = (CAL_REFERENCES[self._cal_ref] if self._cal_ref < len(CAL_REFERENCES)
                         else 0.0)
            if reference == CAL_DAC_LOOPBACK:
                return float(self._dac_voltage(t_ps)[self._cell[0]])
            return float(reference) * self.config.adc.v_max_v
        return 0.0  # IDLE, PROGRAM: the ADC input is grounded

    def _read_voltage(self, g_s: FloatArray) -> float:
        return float(g_s) / self.read_full_scale_s * self.config.adc.v_max_v

    def _convert_voltage(self, v: float) -> tuple[int, bool]:
        code, over = self.adc.convert_one(v)
        return int(code), over

    def convert(self, mux: int, t_s: float) -> tuple[int, bool]:
        """``adc_start`` at ``t_s``: (code, over_range) of the value sampled then."""
        mux = _check_int("adc_mux", mux, 0)
        return self._convert_voltage(self._input_v(mux, self._time(t_s)))

    def read_cell(self, row: int, col: int, t_s: float, *,
                  selected_s: float | None = None) -> tuple[int, bool]:
        """A READ_CELL conversion of (row, col) at ``t_s`` without touching the controls:
        the read chain selected at ``selected_s`` (default: long before, fully settled)."""
        row = _check_int("row", row, 0, self.rows - 1)
        col = _check_int("col", col, 0, self.total_cols - 1)
        t_ps = self._time(t_s)
        v = self._read_voltage(self.crossbar.read(row, col))
        if selected_s is not None and self.read_settle_tau_s > 0:
            elapsed = (t_ps - to_picoseconds(selected_s, "selected_s")) / PICOSECONDS_PER_SECOND
            if elapsed < 0:
                raise ValueError(f"selected_s must not be after t_s; got {selected_s!r} > "
                                 f"{t_s!r}")
            v *= -math.expm1(-elapsed / self.read_settle_tau_s)
        return self._convert_voltage(v)

    # ---- programming -------------------------------------------------------------------

    def pulse(self, row: int, col: int, polarity: int, amplitude_code: int, width_code: int,
              t_s: float) -> float:
        """``prog_fire`` at ``t_s``: one pulse on (row, col); returns the time it ends (s),
        after which ``prog_done`` is due. Outside mode PROGRAM the pulse is not applied
        (recorded in :attr:`violations`)."""
        row = _check_int("cell_row", row, 0, self.rows - 1)
        col = _check_int("cell_col", col, 0, self.total_cols - 1)
        polarity = _POLARITIES[_check_int("prog_polarity", polarity, 0, 1)]
        amplitude_code = _check_int("prog_amplitude", amplitude_code, 0, 2 ** self.amp_bits - 1)
        width_code = _check_int("prog_width", width_code, 0, 2 ** self.width_bits - 1)
        t_ps = self._time(t_s)
        if self._mode is not _PROGRAM:
            self.violations.append(f"t={t_ps} ps: prog_fire in mode {self._mode.name}")
        elif width_code > 0:
            self.crossbar.pulse(row, col, SET if polarity is _POLARITY_SET else RESET,
                                amplitude_code * self.amplitude_lsb_v,
                                width_code * self.width_lsb_s)
            self._conductances_changed(t_ps)
        return t_ps / PICOSECONDS_PER_SECOND + self.pulse_duration_s(width_code)

    def set_conductances(self, g_s: ArrayLike, t_s: float) -> None:
        """Place every healthy cell at ``g_s`` (S) at ``t_s``: the oracle programming path
        (``Crossbar.set_conductance``) for tests and the ``ideal`` preset."""
        t_ps = self._time(t_s)
        self.crossbar.set_conductance(g_s)
        self._conductances_changed(t_ps)

    def _conductances_changed(self, t_ps: int) -> None:
        if self._active():
            self._rebuild(t_ps, self._outputs_now(t_ps))

    def twin(self, **changes: Any) -> "AnalogFrontEnd":
        """A new AFE built like this one (same configuration, seed and options, with
        ``changes``), in its power-up state: the golden model's copy of the AFE a bench
        binds to the RTL. Only for an AFE whose generator came from the configuration's
        seed (no ``rng`` passed in)."""
        if self._rng_given:
            raise ValueError("twin() needs an AFE built from its configuration's seed; this one "
                             "was given an rng")
        options = dict(rows=self.rows, cols=self.cols, spare=self.spare, dac_bits=self.dac_bits,
                       adc_bits=self.adc_bits, amp_bits=self.amp_bits, width_bits=self.width_bits,
                       cal_ref_bits=self.cal_ref_bits, clock_hz=self.clock_hz,
                       deterministic=self.deterministic, amplitude_lsb_v=self.amplitude_lsb_v,
                       width_lsb_s=self.width_lsb_s, pulse_overhead_s=self.pulse_overhead_s,
                       read_full_scale_s=self.read_full_scale_s,
                       read_settle_tau_s=self.read_settle_tau_s,
                       mvm_feedback_s=self.mvm_feedback_s,
                       adc_latency_cycles=self.adc_latency_cycles)
        unknown = set(changes) - set(options)
        if unknown:
            raise ValueError(f"unknown AnalogFrontEnd options {sorted(unknown)}; accepted: "
                             f"{', '.join(options)}")
        options.update(changes)
        return AnalogFrontEnd(self._source_config, **options)

