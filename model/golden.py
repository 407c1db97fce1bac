"""Golden model of the controller's digital arithmetic, at transaction level.

For each command, :class:`GoldenController` takes the digital steps the RTL takes
(hdl/solve_sequencer.py, hdl/programmer.py) and calls the code-level AFE model
(model/afe.py) at the simulated times the RTL would, derived from the cycle formulas of
docs/solve-timing.md. With a deterministic AFE (noise off; offsets, gain errors,
quantization and finite gain on) it gives the RTL's result words, fault map and counters
bit for bit: tests/test_afe_binding.py compares them on Icarus and Verilator.

The buffers mirror the controller's: ``rhs`` (DAC codes by row), ``targets`` (READ_CELL
codes by cell), ``results`` (result words by logical column), ``fault_map`` (one
``total_cols``-bit word per row), and RUN_NMF's ``nmf_r``, ``nmf_mask``, ``nmf_w``,
``nmf_h``, ``nmf_w_exp``, ``nmf_h_exp`` (docs/anls-sequencer.md). The host fills ``rhs``,
``targets`` and the NMF inputs and reads the others, as it does over the register map.

Times: cycle k of a command started at ``start_s`` is ``start_s + k / clock_hz`` (cycle 0
is the ``start`` cycle). Without ``start_s`` a command starts in the first cycle the RTL
would accept it, right after the previous one.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Iterator

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import calibration as cal
from .afe import AnalogFrontEnd, BuildParamsLike, Mode, Polarity
from .formats import (PICOSECONDS_PER_SECOND, ProgramSettings, factor_from_fixed, factor_peaks,
                      factor_targets, leading_one, mask_from_words, next_component_exponent,
                      nmf_commit_cycles, nmf_prepare_cycles, nmf_scan_cycles, pack_result,
                      result_mantissa, rhs_dac_codes, rounded_average, to_picoseconds,
                      unpack_result, zero_code)

__all__ = ["GoldenController", "Error", "SolveOutcome", "CellOutcome", "ProgramOutcome",
           "ReadOutcome", "SOLVE_MODES", "NMFOutcome", "RetrySolveOutcome", "CalEnable", "CalibrateOutcome",
           "STATUS_DELAY"]

#: Cycles from a command's done cycle to STATUS.done = 1, the first cycle a start is accepted
#: again (``anmf.hdl.controller.STATUS_DELAY``; tests/test_golden.py checks the two agree).
STATUS_DELAY = 2

#: AFE modes the solve sequencer runs (SOLVE, SOLVE_FREE, MVM).
SOLVE_MODES: tuple[Mode, ...] = (Mode.SOLVE, Mode.SOLVE_FREE, Mode.MVM)


class Error(IntEnum):
    """The controller's error codes (``anmf.hdl.codes.ErrorCode``; tests/test_golden.py
    checks the two agree)."""

    NONE = 0
    UNKNOWN_OPCODE = 1
    BUSY = 2
    BAD_DIMENSION = 3
    BAD_AVERAGING = 4
    BAD_TOLERANCE = 5
    BAD_TIMING = 6
    ADC_TIMEOUT = 7
    PROGRAM_TIMEOUT = 8
    ABORTED = 9
    CELLS_FAILED = 10
    EXPONENT_RANGE = 11
    BAD_WINDOW = 12
    CAL_FAILED = 13


@dataclass(frozen=True)
class SolveOutcome:
    """One SOLVE / SOLVE_FREE / MVM."""

    error: Error
    #: Result words this command wrote, by logical column (``results`` holds all).
    words: dict[int, int]
    #: Samples flagged ``adc_ovr``.
    over_range_count: int
    #: Cycle of ``done``, counted from the ``start`` cycle.
    done_cycle: int


@dataclass(frozen=True)
class RetrySolveOutcome:
    """A host SOLVE / SOLVE_FREE / MVM with the over-range retry (SOLVE_RETRIES)."""

    error: Error
    words: dict[int, int]      #: the last run's result words, by physical column
    over_range_count: int      #: samples flagged adc_ovr over all runs
    done_cycle: int            #: the last run's done, counted from the first run's start
    exponent: int              #: SOLVE_EXPONENT: retries taken (inputs scaled by 2**-exponent)
    retries: int               #: RANGE_RETRY_COUNT's increment (= exponent)


@dataclass(frozen=True)
class CellOutcome:
    """What write-verify did to one cell."""

    row: int
    col: int
    target: int
    pulses: int
    read_code: int   #: the last verify read (averaged code)
    failed: bool


@dataclass(frozen=True)
class ProgramOutcome:
    """One PROGRAM_CELL / PROGRAM_MATRIX."""

    error: Error
    cells: tuple[CellOutcome, ...]
    pulse_count: int
    failed_count: int
    over_range_samples: int
    done_cycle: int
    #: Host PROGRAM_MATRIX / REFRESH with the remap (:meth:`GoldenController.program_command`):
    #: the (logical, physical spare) moves kept, in order; ``cells``, ``pulse_count`` and
    #: ``over_range_samples`` then include the spare trials, ``failed_count`` is the walk's.
    remaps: tuple[tuple[int, int], ...] = ()
    #: ADC_TIMEOUT / PROGRAM_TIMEOUT: the cell index ``row * total_cols + physical column`` of
    #: the cell being worked on (STATUS.error_detail); otherwise 0.
    timeout_cell: int = 0
    #: Cells the walk verified, and those of them that got at least one pulse.
    checked: int = 0
    reprogrammed: int = 0


@dataclass(frozen=True)
class ReadOutcome:
    """One READ_CELL."""

    error: Error
    code: int
    over_range: bool
    over_range_samples: int
    done_cycle: int


@dataclass(frozen=True)
class NMFOutcome:
    """One RUN_NMF."""

    error: Error
    #: EXPONENT_RANGE: the lowest component whose exponent left the range; otherwise 0.
    detail: int
    #: Iterations completed (both half-steps committed).
    iterations: int
    #: Half-steps committed (2 per iteration; an odd count means the H-step of the next).
    half_steps: int
    solves: int                #: analog solves started (over-range retries included)
    retries: int               #: over-range retries
    unresolved: int            #: right-hand sides still over range after the last retry
    pulse_count: int
    failed_cells: int          #: cells write-verify left out of tolerance, over all programmings
    over_range_samples: int    #: samples flagged adc_ovr (solves and verify reads)
    done_cycle: int


@dataclass(frozen=True)
class CalEnable:
    """Which corrections the solves apply (CAL_CONTROL; its reset values)."""

    adc: bool = True     #: solve results through their channel's ADC word
    dac: bool = True     #: right-hand side codes through their row's DAC word
    opamp: bool = False  #: the column's op-amp offset off SOLVE / SOLVE_FREE results


@dataclass(frozen=True)
class CalibrateOutcome:
    """One CALIBRATE."""

    error: Error
    quality: int        #: worst check residual, 2^-4 ADC LSB (CAL_QUALITY)
    failed_count: int   #: entries stored as identity (CAL_FAILED)
    done_cycle: int


class _Timeout(Exception):
    """The watchdog expired in cycle ``cycle`` (internal control flow)."""

    def __init__(self, error: Error, cycle: int):
        super().__init__(error.name)
        self.error = error
        self.cycle = cycle


def _param(params: Any, name: str) -> int:
    value = getattr(params, name, None)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"params.{name} must be a non-negative integer (a BuildParams); got "
                         f"{value!r}")
    return value


class GoldenController:
    """Transaction-level model of the controller (solve sequencer and write-verify
    programmer) driving ``afe``.

    Args:
        params: build parameters (``anmf.hdl.params.BuildParams`` or alike); ``afe`` must
            have the same array size and converter widths.
        afe: the AFE model it drives (a twin of the one bound to the RTL).
        clock_hz: controller clock (default: the AFE's, which must agree).
    """

    def __init__(self, params: BuildParamsLike, afe: AnalogFrontEnd,
                 clock_hz: float | None = None):
        if not isinstance(afe, AnalogFrontEnd):
            raise ValueError(f"afe must be an AnalogFrontEnd; got {type(afe).__name__}")
        names = ("rows", "cols", "spare", "dac_bits", "adc_bits", "avg_max_log2", "timer_bits",
                 "prog_amp_bits", "prog_width_bits", "pulse_budget_bits")
        self.p = {name: _param(params, name) for name in names}
        for name, mine in (("rows", afe.rows), ("cols", afe.cols), ("spare", afe.spare),
                           ("dac_bits", afe.dac_bits), ("adc_bits", afe.adc_bits),
                           ("prog_amp_bits", afe.amp_bits), ("prog_width_bits", afe.width_bits)):
            if self.p[name] != mine:
                raise ValueError(f"params.{name} = {self.p[name]} but the AFE has {mine}; build "
                                 f"the AFE with AnalogFrontEnd.from_build_params")
        if clock_hz is not None and clock_hz != afe.clock_hz:
            raise ValueError(f"clock_hz = {clock_hz!r} differs from the AFE's clock_hz = "
                             f"{afe.clock_hz!r}")
        self.params = params
        self.afe = afe
        self.rows = self.p["rows"]
        self.total_cols = self.p["cols"] + self.p["spare"]
        self.period_ps = afe.period_ps
        self.zero_code = zero_code(self.p["dac_bits"])
        #: RHS buffer: DAC code by row.
        self.rhs = np.full(self.rows, self.zero_code, dtype=np.int64)
        #: TARGET buffer: READ_CELL code by (row, logical column).
        self.targets = np.zeros((self.rows, self.total_cols), dtype=np.int64)
        #: RESULTS buffer: result word by logical column (``column_map`` gives the physical).
        self.results = np.zeros(self.total_cols, dtype=np.int64)
        #: FAULT_MAP buffer: one word per row, bit c = physical column c failed.
        self.fault_map = np.zeros(self.rows, dtype=np.int64)
        #: Column map, logical -> physical (hdl/column_remap.py); spares taken by the remap
        #: (holding a column or found bad); the remap's enable (REMAP_CONTROL.enable).
        self.column_map = list(range(self.total_cols))
        self.spares_taken: set[int] = set()
        self.remap_enabled = False
        #: The programmer's last averaged read (every Average updates it).
        self.read_code = 0
        self.read_over_range = False
        self._next_start_ps = 0
        #: CAL_COEFF: packed coefficient words (reset: identity); CAL_CONTROL's enables.
        self.cal_words = np.full(cal.memory_depth(self.rows, self.total_cols),
                                 cal.pack_coefficient(cal.IDENTITY, adc_bits=self.p["adc_bits"],
                                                      dac_bits=self.p["dac_bits"]), dtype=np.int64)
        self.cal_enable = CalEnable()
        self.cal_quality = 0
        self.cal_failed_count = 0
        # RUN_NMF buffers, in the layouts of the NMF_* windows (docs/anls-sequencer.md).
        cols = self.p["cols"]
        #: NMF_R: R codes, entry (i, j) of R at [i, j] (rows x rows).
        self.nmf_r = np.zeros((self.rows, self.rows), dtype=np.int64)
        #: NMF_MASK as a map: True = entry observed (rows x rows); all missing after reset.
        self.nmf_mask = np.zeros((self.rows, self.rows), dtype=bool)
        #: NMF_W: W mantissas (rows x cols); NMF_H: H mantissas (cols x rows).
        self.nmf_w = np.zeros((self.rows, cols), dtype=np.int64)
        self.nmf_h = np.zeros((cols, self.rows), dtype=np.int64)
        #: NMF_W_EXP / NMF_H_EXP as signed exponents: [0, rows) per right-hand side (W's
        #: rows, H's columns), [rows, rows + cols) per component.
        self.nmf_w_exp = np.zeros(self.rows + cols, dtype=np.int64)
        self.nmf_h_exp = np.zeros(self.rows + cols, dtype=np.int64)
        # REFINE buffers (docs/refinement.md): REFINE_A (rows x cols READ_CELL codes, the last
        # verify read of each programmed cell), REFINE_B (signed words), REFINE_X (unsigned).
        self.refine_a = np.zeros((self.rows, cols), dtype=np.int64)
        self.refine_b = np.zeros(self.rows, dtype=np.int64)
        self.refine_x = np.zeros(cols, dtype=np.int64)

    # ---- time --------------------------------------------------------------------------

    def _begin(self, start_s: float | None) -> int:
        start_ps = self._next_start_ps if start_s is None else to_picoseconds(start_s, "start_s")
        return start_ps

    def _end(self, start_ps: int, done_cycle: int) -> None:
        # The next start is accepted from the cycle STATUS shows done (the controller refuses
        # one before with BUSY).
        self._next_start_ps = start_ps + (done_cycle + STATUS_DELAY) * self.period_ps

    def _clock(self, start_ps: int):
        period = self.period_ps

        def at(cycle: int) -> float:
            return (start_ps + cycle * period) / PICOSECONDS_PER_SECOND
        return at

    # ---- operand checks (port widths) --------------------------------------------------

    @staticmethod
    def _operand(name: str, value: Any, bits: int) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
                or not 0 <= value < 2 ** bits:
            raise ValueError(f"{name} must be an integer from 0 to {2 ** bits - 1} (a "
                             f"{bits}-bit port); got {value!r}")
        return int(value)

    @staticmethod
    def _set_bits(mask: int) -> Iterator[int]:
        index = 0
        while mask:
            if mask & 1:
                yield index
            mask >>= 1
            index += 1

    def _physical_mask(self, mask: int) -> int:
        return sum(1 << self.column_map[c] for c in self._set_bits(mask))

    def clear_remap(self) -> None:
        """REMAP_CONTROL.clear: every column on its own physical column, every spare free."""
        self.column_map = list(range(self.total_cols))
        self.spares_taken = set()

    @property
    def spares_left(self) -> int:
        return self.p["spare"] - len(self.spares_taken)

    def _start_error(self, row_mask: int, col_mask: int, avg_log2: int, watchdog: int) -> Error:
        """The start checks the solve sequencer and the calibrator share, in their order."""
        if row_mask == 0 or col_mask == 0:
            return Error.BAD_DIMENSION
        if avg_log2 > self.p["avg_max_log2"]:
            return Error.BAD_AVERAGING
        if watchdog == 0:
            return Error.BAD_TIMING
        return Error.NONE

    def _safe_exit(self, at, cycle: int) -> int:
        """The safe exit from ``cycle`` on: AFE idle, the zero code written to every DAC,
        then ldac; returns the done cycle."""
        self.afe.apply_controls(at(cycle), mode=Mode.IDLE, loop=0, row_en=0, col_en=0)
        for row in range(self.rows):
            self.afe.write_dac(row, self.zero_code)
        self.afe.load_dacs(at(cycle + self.rows))
        return cycle + self.rows + 1

    # ---- SOLVE / SOLVE_FREE / MVM ------------------------------------------------------

    def solve(self, mode: Mode | int, *, row_mask: int, col_mask: int, avg_log2: int,
              dac_settle: int, analog_settle: int, watchdog_limit: int | None = None,
              start_s: float | None = None) -> SolveOutcome:
        """One solve from the ``rhs`` buffer into ``results``, as the solve sequencer runs
        it (docs/solve-timing.md); ``watchdog_limit`` defaults to the largest timer value."""
        p = self.p
        timer_bits = p["timer_bits"]
        mode = self._operand("mode", int(mode), 3)
        row_mask = self._operand("row_mask", row_mask, self.rows)
        col_mask = self._operand("col_mask", col_mask, self.total_cols)
        avg_log2 = self._operand("avg_log2", avg_log2, max(1, p["avg_max_log2"].bit_length()))
        dac_settle = self._operand("dac_settle", dac_settle, timer_bits)
        analog_settle = self._operand("analog_settle", analog_settle, timer_bits)
        watchdog = self._operand("watchdog_limit", 2 ** timer_bits - 1
                                 if watchdog_limit is None else watchdog_limit, timer_bits)
        start_ps = self._begin(start_s)
        at = self._clock(start_ps)

        error = Error.UNKNOWN_OPCODE if mode not in SOLVE_MODES else \
            self._start_error(row_mask, col_mask, avg_log2, watchdog)
        if error != Error.NONE:
            self._end(start_ps, 1)
            return SolveOutcome(error, {}, 0, 1)

        afe = self.afe
        rows = list(self._set_bits(row_mask))
        cols = list(self._set_bits(col_mask))
        n = len(rows)
        # Load-DAC: the write of the k-th enabled row is in cycle k + 2; Load-LDAC in N + 2.
        for row in rows:
            afe.write_dac(row, self._dac_code(row, int(self.rhs[row])))
        afe.load_dacs(at(n + 2))
        # Settle-DAC; the loop closes in the first Settle-Analog (or Convert-Start) cycle.
        cycle = n + 3 + dac_settle
        afe.apply_controls(at(cycle), mode=mode, loop=1, row_en=row_mask,
                           col_en=self._physical_mask(col_mask))
        cycle += analog_settle
        t_adc = afe.adc_cycles
        words: dict[int, int] = {}
        over_range_count = 0
        try:
            for col in cols:
                total, over_range = 0, False
                for _ in range(2 ** avg_log2):
                    code, over = afe.convert(self.column_map[col], at(cycle))
                    if t_adc > watchdog:
                        raise _Timeout(Error.ADC_TIMEOUT, cycle + watchdog)
                    total += code
                    over_range |= over
                    over_range_count += over
                    cycle += t_adc + 1
                code, clipped = self._corrected_result(col, rounded_average(total, avg_log2), mode)
                word = pack_result(code, over_range or clipped, p["adc_bits"])
                words[col] = word
                self.results[col] = word
        except _Timeout as timeout:
            done = self._safe_exit(at, timeout.cycle + 1)
            self._end(start_ps, done)
            return SolveOutcome(timeout.error, words, over_range_count, done)
        # Zero-DAC: the release cycle, then the zero code to each enabled row; Zero-LDAC.
        afe.apply_controls(at(cycle), mode=Mode.IDLE, loop=0, row_en=0, col_en=0)
        for row in rows:
            afe.write_dac(row, self.zero_code)
        afe.load_dacs(at(cycle + n))
        done = cycle + n + 1
        self._end(start_ps, done)
        return SolveOutcome(Error.NONE, words, over_range_count, done)

    def solve_with_retries(self, mode: Mode | int, *, retries: int, row_mask: int, col_mask: int,
                           avg_log2: int, dac_settle: int, analog_settle: int,
                           watchdog_limit: int | None = None,
                           start_s: float | None = None) -> RetrySolveOutcome:
        """A host solve with the controller's over-range retry (docs/controller.md): while a
        run's results are over range and fewer than ``retries`` (SOLVE_RETRIES.limit) retries
        were taken, run again from the cycle after its done with the ``rhs`` codes scaled to
        ``zero + ((code - zero) >> e)``, e the retry count; the last run's results stand."""
        retries = self._operand("retries", retries, 4)
        host_rhs = self.rhs.copy()
        start_ps = self._begin(start_s)
        cycle, over_range_count, exponent = 0, 0, 0
        try:
            while True:
                self.rhs[:] = self.zero_code + ((host_rhs - self.zero_code) >> exponent)
                run = self.solve(mode, row_mask=row_mask, col_mask=col_mask, avg_log2=avg_log2,
                                 dac_settle=dac_settle, analog_settle=analog_settle,
                                 watchdog_limit=watchdog_limit,
                                 start_s=(start_ps + cycle * self.period_ps) / PICOSECONDS_PER_SECOND)
                over_range_count += run.over_range_count
                if run.error != Error.NONE or run.over_range_count == 0 or exponent == retries:
                    break
                exponent += 1
                cycle += run.done_cycle + 1
        finally:
            self.rhs[:] = host_rhs
        return RetrySolveOutcome(run.error, run.words, over_range_count, cycle + run.done_cycle,
                                 exponent, exponent)

    # ---- REFINE ------------------------------------------------------------------------

    def refine(self, *, passes: int, a_offset: int, gain: int, gain_shift: int, headroom: int,
               row_mask: int, col_mask: int, avg_log2: int, dac_settle: int, analog_settle: int,
               watchdog_limit: int | None = None, start_s: float | None = None):
        """REFINE on ``refine_a`` and ``refine_b`` into ``refine_x``, as the controller's
        Refiner runs it (``anmf.model.refinement.golden_refine`` with the controller's
        formats: X 24 bits, B 32 bits); ``col_mask`` has COLS bits. The RHS buffer keeps its
        contents (the Refiner serves the DACs itself); RESULTS gets each solve's words."""
        from .refinement import RefineFormat, golden_refine   # refinement imports this module
        host_rhs = self.rhs.copy()
        try:
            outcome = golden_refine(self, fmt=RefineFormat(x_bits=24, b_bits=32), b=self.refine_b,
                                    a_codes=self.refine_a, a_offset=a_offset, gain=gain,
                                    gain_shift=gain_shift, passes=passes, row_mask=row_mask,
                                    col_mask=col_mask, headroom=headroom, avg_log2=avg_log2,
                                    dac_settle=dac_settle, analog_settle=analog_settle,
                                    watchdog_limit=watchdog_limit, start_s=start_s)
        finally:
            self.rhs[:] = host_rhs
        if outcome.error == Error.NONE or outcome.passes_done or outcome.peaks:
            self.refine_x[:] = outcome.x
        return outcome

    # ---- calibration ---------------------------------------------------------------------

    def _coefficient(self, address: int) -> cal.Coefficient:
        return cal.unpack_coefficient(int(self.cal_words[address]), adc_bits=self.p["adc_bits"],
                                      dac_bits=self.p["dac_bits"])

    def _dac_code(self, row: int, wanted: int) -> int:
        """The code the solve sequencer writes into row ``row``'s DAC for RHS code ``wanted``."""
        if not self.cal_enable.dac:
            return wanted
        word = self._coefficient(cal.dac_address(row, rows=self.rows, total_cols=self.total_cols))
        return cal.correct_code(wanted, word, self.p["dac_bits"])[0]

    def _corrected_result(self, col: int, code: int, mode: int) -> tuple[int, bool]:
        """A solve's averaged ``code`` of column ``col`` through the readout correction:
        (result code, clamped)."""
        shape = dict(rows=self.rows, total_cols=self.total_cols)
        word = self._coefficient(cal.adc_address(col, **shape)) if self.cal_enable.adc \
            else cal.IDENTITY
        subtract = 0
        if self.cal_enable.opamp and mode != Mode.MVM:
            subtract = self._coefficient(cal.opamp_address(col, **shape)).offset
        return cal.correct_code(code, word, self.p["adc_bits"], subtract)

    def calibrate(self, *, col_mask: int, row_mask: int, avg_log2: int, cal_settle: int,
                  dac_settle: int, analog_settle: int, watchdog_limit: int | None = None,
                  start_s: float | None = None) -> CalibrateOutcome:
        """CALIBRATE as the calibrator runs it (``anmf.model.calibration.golden_calibration``):
        the coefficient words into ``cal_words``, ``cal_quality`` and ``cal_failed_count``
        updated. A watchdog below the ADC's cycles times the first conversion out (ADC_TIMEOUT,
        then the safe exit), as in the RTL."""
        p = self.p
        timer_bits = p["timer_bits"]
        col_mask = self._operand("col_mask", col_mask, self.total_cols)
        row_mask = self._operand("row_mask", row_mask, self.rows)
        avg_log2 = self._operand("avg_log2", avg_log2, max(1, p["avg_max_log2"].bit_length()))
        for name, value in (("cal_settle", cal_settle), ("dac_settle", dac_settle),
                            ("analog_settle", analog_settle)):
            self._operand(name, value, timer_bits)
        watchdog = self._operand("watchdog_limit", 2 ** timer_bits - 1
                                 if watchdog_limit is None else watchdog_limit, timer_bits)
        start_ps = self._begin(start_s)
        error = self._start_error(row_mask, col_mask, avg_log2, watchdog)
        if error != Error.NONE:
            self._end(start_ps, 1)
            return CalibrateOutcome(error, self.cal_quality, self.cal_failed_count, 1)
        self.cal_quality = self.cal_failed_count = 0   # cleared at start, as the calibrator does
        if self.afe.adc_cycles > watchdog:
            # The first conversion (channel 0's +1/2 FS point, after Setup and cal_settle) times out.
            at = self._clock(start_ps)
            channel = next(self._set_bits(col_mask))
            self.afe.apply_controls(at(2), mode=Mode.CAL, loop=0, row_en=0, col_en=0,
                                    cal_ref_sel=cal.REF_PLUS_HALF)
            first = 2 + cal_settle
            self.afe.convert(channel, at(first))
            done = self._safe_exit(at, first + watchdog + 1)
            self._end(start_ps, done)
            return CalibrateOutcome(Error.ADC_TIMEOUT, 0, 0, done)
        settings = cal.CalibrationSettings(col_mask=col_mask, row_mask=row_mask,
                                           avg_log2=avg_log2, cal_settle=cal_settle,
                                           dac_settle=dac_settle, analog_settle=analog_settle)
        outcome = cal.golden_calibration(self.params, self.afe, settings,
                                         start_s=start_ps / PICOSECONDS_PER_SECOND)
        for address, word in outcome.words.items():
            self.cal_words[address] = word
        self.cal_quality, self.cal_failed_count = outcome.quality, outcome.failed_count
        self._end(start_ps, outcome.done_cycle)
        return CalibrateOutcome(Error.CAL_FAILED if outcome.failed_count else Error.NONE,
                                outcome.quality, outcome.failed_count, outcome.done_cycle)

    # ---- READ_CELL / PROGRAM_CELL / PROGRAM_MATRIX -------------------------------------

    def read_cell(self, row: int, col: int, *, avg_log2: int, read_settle: int,
                  watchdog_limit: int | None = None, start_s: float | None = None) -> ReadOutcome:
        """READ_CELL of (row, col): the averaged conductance code, also written to
        ``results[col]`` (as the controller writes RESULTS[COMMAND.col]) when it succeeds."""
        settings = ProgramSettings(tolerance=1, amp_start=0, amp_step=0, amp_max=0,
                                   pulse_width=1, pulse_budget=0, avg_log2=avg_log2,
                                   read_settle=read_settle)
        outcome, over_range_samples = self._program("read", row, col, None, None, settings,
                                                    watchdog_limit, start_s)
        if outcome.error != Error.NONE:
            return ReadOutcome(outcome.error, 0, False, over_range_samples, outcome.done_cycle)
        self.results[col] = pack_result(self.read_code, self.read_over_range, self.p["adc_bits"])
        return ReadOutcome(outcome.error, self.read_code, self.read_over_range,
                           over_range_samples, outcome.done_cycle)

    def program_cell(self, row: int, col: int, settings: ProgramSettings, *,
                     watchdog_limit: int | None = None,
                     start_s: float | None = None) -> ProgramOutcome:
        """PROGRAM_CELL: write-verify (row, col) to ``targets[row, col]``."""
        return self._program("cell", row, col, None, None, settings, watchdog_limit, start_s)[0]

    def program_matrix(self, settings: ProgramSettings, *, row_mask: int, col_mask: int,
                       watchdog_limit: int | None = None,
                       start_s: float | None = None) -> ProgramOutcome:
        """PROGRAM_MATRIX: write-verify every enabled row x enabled column, row by row."""
        return self._program("matrix", 0, 0, row_mask, col_mask, settings, watchdog_limit,
                             start_s)[0]

    def _program(self, command: str, row: int, col: int, row_mask: int | None,
                 col_mask: int | None, settings: ProgramSettings, watchdog_limit: int | None,
                 start_s: float | None) -> tuple[ProgramOutcome, int]:
        p = self.p
        if not isinstance(settings, ProgramSettings):
            raise ValueError(f"settings must be a ProgramSettings; got {type(settings).__name__}")
        timer_bits = p["timer_bits"]
        s = settings
        self._operand("tolerance", s.tolerance, p["adc_bits"] + 1)
        for name, bits in (("amp_start", p["prog_amp_bits"]), ("amp_step", p["prog_amp_bits"]),
                           ("amp_max", p["prog_amp_bits"]),
                           ("pulse_width", p["prog_width_bits"]),
                           ("pulse_budget", p["pulse_budget_bits"]),
                           ("avg_log2", max(1, p["avg_max_log2"].bit_length())),
                           ("read_settle", timer_bits)):
            self._operand(name, getattr(s, name), bits)
        watchdog = self._operand("watchdog_limit", 2 ** timer_bits - 1
                                 if watchdog_limit is None else watchdog_limit, timer_bits)
        single = command in ("read", "cell")
        if single:
            # cell_row / cell_col ports are exactly wide enough for the array's indices.
            self._operand("row", row, max(1, (self.rows - 1).bit_length()))
            self._operand("col", col, max(1, (self.total_cols - 1).bit_length()))
            bad_dimension = row >= self.rows or col >= self.total_cols
            rows, cols = [row], [col]
        else:
            row_mask = self._operand("row_mask", row_mask, self.rows)
            col_mask = self._operand("col_mask", col_mask, self.total_cols)
            bad_dimension = row_mask == 0 or col_mask == 0
            rows, cols = list(self._set_bits(row_mask)), list(self._set_bits(col_mask))
        programs = command != "read"
        start_ps = self._begin(start_s)
        at = self._clock(start_ps)

        if bad_dimension:
            error = Error.BAD_DIMENSION
        elif s.avg_log2 > p["avg_max_log2"]:
            error = Error.BAD_AVERAGING
        elif programs and not 0 < s.tolerance < 2 ** p["adc_bits"]:
            error = Error.BAD_TOLERANCE
        elif watchdog == 0 or (programs and s.pulse_width == 0):
            error = Error.BAD_TIMING
        else:
            error = Error.NONE
        if error != Error.NONE:
            self._end(start_ps, 1)
            return ProgramOutcome(error, (), 0, 0, 0, 1), 0

        afe = self.afe
        t_adc = afe.adc_cycles
        samples = 2 ** s.avg_log2
        state = {"over_range_samples": 0, "pulse_count": 0, "failed_count": 0}
        cells: list[CellOutcome] = []

        def verify_read(r: int, c: int, cycle: int) -> tuple[int, int]:
            """Read-Settle, Read-Start/Read-Wait per sample; returns (corrected average,
            Compare cycle)."""
            adc_word = self._coefficient(cal.adc_address(c, rows=self.rows, total_cols=self.total_cols)) \
                if self.cal_enable.adc else cal.IDENTITY
            c = self.column_map[c]
            afe.apply_controls(at(cycle), mode=Mode.READ_CELL, loop=0, row_en=0, col_en=0,
                               cell_row=r, cell_col=c)
            cycle += s.read_settle
            total, over_range = 0, False
            for _ in range(samples):
                code, over = afe.convert(c, at(cycle))
                if t_adc > watchdog:
                    raise _Timeout(Error.ADC_TIMEOUT, cycle + watchdog)
                total += code
                over_range |= over
                state["over_range_samples"] += over
                cycle += t_adc + 1
            # Average: mode back to IDLE; Compare decides on the corrected code (the
            # logical column's ADC word with CAL_CONTROL.adc) and updates read_code with it.
            average, clamped = cal.correct_code(rounded_average(total, s.avg_log2), adc_word,
                                                p["adc_bits"])
            afe.apply_controls(at(cycle), mode=Mode.IDLE, loop=0, row_en=0, col_en=0)
            self.read_code, self.read_over_range = average, over_range or clamped
            return average, cycle + 1

        cycle = 1  # Next-Cell
        try:
            for r in rows:
                for c in cols:
                    cycle += 2  # Next-Cell, Fetch-Target
                    target = int(self.targets[r, c]) if programs else 0
                    pulses, pulsed, polarity, amplitude = 0, False, Polarity.SET, 0
                    while True:
                        average, cycle = verify_read(r, c, cycle)
                        if not programs:
                            done = cycle + 1
                            self._end(start_ps, done)
                            return ProgramOutcome(Error.NONE, (), 0, 0,
                                                  state["over_range_samples"], done), \
                                state["over_range_samples"]
                        if abs(average - target) <= s.tolerance:
                            failed = False
                            break
                        if pulses == s.pulse_budget:
                            failed = True
                            break
                        wanted = Polarity.SET if average < target else Polarity.RESET
                        if pulsed and wanted == polarity:
                            amplitude = min(amplitude + s.amp_step, s.amp_max)
                        else:
                            amplitude = min(s.amp_start, s.amp_max)
                        polarity, pulsed = wanted, True
                        cycle += 1  # Compare; Fire follows
                        physical = self.column_map[c]
                        afe.apply_controls(at(cycle), mode=Mode.PROGRAM, loop=0, row_en=0,
                                           col_en=0, cell_row=r, cell_col=physical)
                        afe.pulse(r, physical, polarity, amplitude, s.pulse_width, at(cycle))
                        pulses += 1
                        state["pulse_count"] += 1
                        pulse_cycles = afe.pulse_cycles(s.pulse_width)
                        if pulse_cycles > watchdog:
                            raise _Timeout(Error.PROGRAM_TIMEOUT, cycle + watchdog)
                        cycle += 1 + pulse_cycles  # Fire, Pulse-Wait; prog_done in the last
                    cycle += 1  # Compare; Record follows
                    bit = 1 << self.column_map[c]   # FAULT_MAP is physical
                    self.fault_map[r] = (int(self.fault_map[r]) & ~bit) | (bit if failed else 0)
                    state["failed_count"] += failed
                    cells.append(CellOutcome(r, c, target, pulses, average, failed))
                    if c < self.p["cols"]:
                        self.refine_a[r, c] = average   # REFINE_A keeps the final verify read
                    cycle += 1  # Record
                cycle += 1  # Next-Cell: the row is finished
        except _Timeout as timeout:
            done = self._safe_exit(at, timeout.cycle + 1)
            self._end(start_ps, done)
            return ProgramOutcome(timeout.error, tuple(cells), state["pulse_count"],
                                  state["failed_count"], state["over_range_samples"], done,
                                  timeout_cell=r * self.total_cols + self.column_map[c]), \
                state["over_range_samples"]
        done = cycle
        self._end(start_ps, done)
        error = Error.CELLS_FAILED if state["failed_count"] else Error.NONE
        return ProgramOutcome(error, tuple(cells), state["pulse_count"], state["failed_count"],
                              state["over_range_samples"], done, checked=len(cells),
                              reprogrammed=sum(cell.pulses > 0 for cell in cells)), \
            state["over_range_samples"]

    # ---- host PROGRAM_MATRIX / REFRESH: the walk, then the spare-column remap ------------

    def refresh(self, settings: ProgramSettings, *, row_mask: int, col_mask: int,
                watchdog_limit: int | None = None,
                start_s: float | None = None) -> ProgramOutcome:
        """REFRESH: the same walk as PROGRAM_MATRIX (every enabled cell read against its target,
        pulses only for those out of tolerance), then the remap like PROGRAM_MATRIX."""
        return self.program_command(settings, row_mask=row_mask, col_mask=col_mask,
                                    watchdog_limit=watchdog_limit, start_s=start_s)

    def program_command(self, settings: ProgramSettings, *, row_mask: int, col_mask: int,
                        watchdog_limit: int | None = None,
                        start_s: float | None = None) -> ProgramOutcome:
        """A host PROGRAM_MATRIX (or REFRESH): :meth:`program_matrix`'s walk and, with
        ``remap_enabled``, the spare trials of hdl/column_remap.py: per failed column j < COLS
        (lowest first) and free spare s (lowest first), the trial starts 3 cycles after the
        previous done (Choose, Hold, Start) and walks column j with the map swapped (j on s);
        it keeps the swap if it passes, marks s taken either way. ``done_cycle`` is the last
        trial's done, counted from the walk's start."""
        start_ps = self._begin(start_s)
        self._next_start_ps = start_ps
        walk = self.program_matrix(settings, row_mask=row_mask, col_mask=col_mask,
                                   watchdog_limit=watchdog_limit)
        cols = self.p["cols"]
        main = (1 << cols) - 1
        failed_cols = sum(1 << col for col in {cell.col for cell in walk.cells if cell.failed})

        def free_spares() -> list[int]:
            return [c for c in range(cols, self.total_cols) if c not in self.spares_taken]

        if not (self.remap_enabled and walk.error == Error.CELLS_FAILED
                and failed_cols & main and free_spares()):
            return walk
        cells, pulses, over = list(walk.cells), walk.pulse_count, walk.over_range_samples
        pending, remaps, done, error = failed_cols, [], walk.done_cycle, walk.error
        while True:
            j = next(self._set_bits(pending & main))
            spare = free_spares()[0]
            was = self.column_map[j]
            self.column_map[j], self.column_map[spare] = spare, was
            self._next_start_ps = start_ps + (done + 3) * self.period_ps
            trial = self.program_matrix(settings, row_mask=row_mask, col_mask=1 << j,
                                        watchdog_limit=watchdog_limit)
            cells += trial.cells
            pulses += trial.pulse_count
            over += trial.over_range_samples
            done += 3 + trial.done_cycle
            if trial.error in (Error.NONE, Error.CELLS_FAILED):
                self.spares_taken.add(spare)
            if trial.error == Error.NONE:
                pending &= ~(1 << j)
                remaps.append((j, spare))
            else:
                self.column_map[j], self.column_map[spare] = was, spare
                if trial.error != Error.CELLS_FAILED:
                    error = trial.error
                    break
            if not (pending & main and free_spares()):
                error = Error.CELLS_FAILED if pending else Error.NONE
                break
        self._end(start_ps, done)
        return ProgramOutcome(error, tuple(cells), pulses, walk.failed_count, over, done,
                              remaps=tuple(remaps), checked=walk.checked,
                              reprogrammed=walk.reprogrammed, timeout_cell=trial.timeout_cell)

    # ---- RUN_NMF -----------------------------------------------------------------------

    def run_nmf(self, *, m: int, n: int, k: int, iterations: int, settings: ProgramSettings,
                dac_settle: int, analog_settle: int, g_offset: int, g_span: int,
                range_retries: int = 8, watchdog_limit: int | None = None,
                start_s: float | None = None, stop_after: int | None = None) -> NMFOutcome:
        """RUN_NMF as the ANLS sequencer runs it (docs/anls-sequencer.md): per iteration the
        H-step (program W, solve every column of R) and the W-step (program H^T, solve every
        row), each committed to the NMF buffers at its end. The solves and the programming
        go through :meth:`solve` and :meth:`program_matrix` at the cycles the sequencer
        starts them, so a deterministic AFE gives the RTL's buffers bit for bit. ``settings``
        gives the programmer's operands and the averaging both blocks use (TIMING).
        ``stop_after`` ends the run after that many committed half-steps (the state an abort
        in the next half-step leaves), with error ABORTED."""
        p = self.p
        rows, cols = self.rows, p["cols"]
        exp_bits = _param(self.params, "exp_bits")
        timer_bits = p["timer_bits"]
        if not isinstance(settings, ProgramSettings):
            raise ValueError(f"settings must be a ProgramSettings; got {type(settings).__name__}")
        size_bits = (rows + 1).bit_length()
        m = self._operand("m", m, size_bits)
        n = self._operand("n", n, size_bits)
        k = self._operand("k", k, (cols + 1).bit_length())
        iterations = self._operand("iterations", iterations, 16)
        range_retries = self._operand("range_retries", range_retries, 4)
        g_offset = self._operand("g_offset", g_offset, p["adc_bits"])
        g_span = self._operand("g_span", g_span, p["adc_bits"] + 1)
        dac_settle = self._operand("dac_settle", dac_settle, timer_bits)
        analog_settle = self._operand("analog_settle", analog_settle, timer_bits)
        watchdog = self._operand("watchdog_limit", 2 ** timer_bits - 1
                                 if watchdog_limit is None else watchdog_limit, timer_bits)
        s = settings
        self._operand("tolerance", s.tolerance, p["adc_bits"] + 1)
        self._operand("avg_log2", s.avg_log2, max(1, p["avg_max_log2"].bit_length()))
        self._operand("pulse_width", s.pulse_width, p["prog_width_bits"])
        start_ps = self._begin(start_s)
        at = self._clock(start_ps)

        if not (0 < m <= rows and 0 < n <= rows and 0 < k <= cols and iterations > 0):
            error = Error.BAD_DIMENSION
        elif s.avg_log2 > p["avg_max_log2"]:
            error = Error.BAD_AVERAGING
        elif not 0 < s.tolerance < 2 ** p["adc_bits"]:
            error = Error.BAD_TOLERANCE
        elif g_span == 0 or g_offset + g_span > 2 ** p["adc_bits"]:
            error = Error.BAD_WINDOW
        elif watchdog == 0 or s.pulse_width == 0:
            error = Error.BAD_TIMING
        else:
            error = Error.NONE
        tally = {"solves": 0, "retries": 0, "unresolved": 0, "pulse_count": 0,
                 "failed_cells": 0, "over_range_samples": 0}

        def outcome(error: Error, done: int, half_steps: int, detail: int = 0) -> NMFOutcome:
            self._end(start_ps, done)
            return NMFOutcome(error, detail, half_steps // 2, half_steps, done_cycle=done,
                              **tally)

        if error != Error.NONE:
            return outcome(error, 1, 0)

        host_rhs = self.rhs.copy()   # RUN_NMF drives the DACs itself; RHS keeps its contents
        exp_low, exp_high = -2 ** (exp_bits - 1), 2 ** (exp_bits - 1) - 1
        dac_bits = p["dac_bits"]
        cycle = 1
        try:
            for half_step in range(2 * iterations):
                if stop_after is not None and half_step == stop_after:
                    return outcome(Error.ABORTED, cycle, half_step)
                h_step = half_step % 2 == 0
                # The stored factor F (f_rows x k) and the factor this half-step solves for.
                if h_step:
                    f_rows, count = m, n
                    mantissa, f_exp = self.nmf_w[:m, :k], self.nmf_w_exp
                else:
                    f_rows, count = n, m
                    mantissa, f_exp = self.nmf_h[:k, :n].T, self.nmf_h_exp
                row_exp, col_exp = f_exp[:f_rows], f_exp[rows:rows + k]
                msb, live = factor_peaks(mantissa, row_exp)
                new_col_exp = np.where(live, next_component_exponent(col_exp, msb, dac_bits), 0)
                self.targets[:f_rows, :k] = factor_targets(mantissa, row_exp, msb,
                                                           g_offset=g_offset, g_span=g_span)
                cycle += nmf_prepare_cycles(rows=f_rows, k=k)
                # Program-Start
                bad = np.flatnonzero(live & ((new_col_exp < exp_low) | (new_col_exp > exp_high)))
                if bad.size:
                    return outcome(Error.EXPONENT_RANGE, cycle + 1, half_step, int(bad[0]))
                live_mask = sum(1 << int(c) for c in np.flatnonzero(live))
                if live_mask:
                    programmed = self.program_matrix(settings, row_mask=(1 << f_rows) - 1,
                                                     col_mask=live_mask, watchdog_limit=watchdog,
                                                     start_s=at(cycle))
                    tally["pulse_count"] += programmed.pulse_count
                    tally["failed_cells"] += programmed.failed_count
                    tally["over_range_samples"] += programmed.over_range_samples
                    cycle += programmed.done_cycle + 1
                    if programmed.error not in (Error.NONE, Error.CELLS_FAILED):
                        return outcome(programmed.error, cycle, half_step)
                else:
                    cycle += 1
                solved = np.zeros((count, k), dtype=np.int64)
                solved_exp = np.zeros(count, dtype=np.int64)
                for t in range(count):
                    entries = self.nmf_r[:m, t] if h_step else self.nmf_r[t, :n]
                    seen = self.nmf_mask[:m, t] if h_step else self.nmf_mask[t, :n]
                    peak = int(entries[seen].max(initial=0))
                    cycle += nmf_scan_cycles(rows=f_rows)
                    if peak == 0 or not live_mask:
                        cycle += k + 1   # Clear-Row, RHS-Next
                        continue
                    shift, retries = leading_one(peak), 0
                    row_mask = sum(1 << int(u) for u in np.flatnonzero(seen))
                    while True:
                        self.rhs[:f_rows][seen] = rhs_dac_codes(entries[seen], shift, dac_bits)
                        solve = self.solve(Mode.SOLVE, row_mask=row_mask, col_mask=live_mask,
                                           avg_log2=s.avg_log2, dac_settle=dac_settle,
                                           analog_settle=analog_settle, watchdog_limit=watchdog,
                                           start_s=at(cycle))
                        tally["solves"] += 1
                        tally["over_range_samples"] += solve.over_range_count
                        cycle += solve.done_cycle + 1
                        if solve.error != Error.NONE:
                            return outcome(solve.error, cycle, half_step)
                        over = False
                        for col, word in solve.words.items():
                            code, flagged = unpack_result(word, p["adc_bits"])
                            solved[t, col] = result_mantissa(code, p["adc_bits"])
                            over |= flagged
                        if over and retries < range_retries:
                            retries += 1
                            shift += 1
                            tally["retries"] += 1
                            continue
                        tally["unresolved"] += over
                        solved_exp[t] = shift
                        break
                    cycle += 1   # RHS-Next
                # Commit: dead components get zero mantissas and exponent 0.
                solved[:, ~live] = 0
                if h_step:
                    self.nmf_h[:k, :n], out_exp = solved.T, self.nmf_h_exp
                else:
                    self.nmf_w[:m, :k], out_exp = solved, self.nmf_w_exp
                out_exp[:count] = solved_exp
                out_exp[rows:rows + k] = new_col_exp
                cycle += nmf_commit_cycles(count=count, k=k) + 1   # and Half-Done
        finally:
            self.rhs[:] = host_rhs
        return outcome(Error.NONE, cycle, 2 * iterations)

    def load_nmf(self, r: ArrayLike, observed: ArrayLike, w_mantissa: ArrayLike,
                 w_col_exp: ArrayLike, w_row_exp: ArrayLike | None = None) -> None:
        """Fill the RUN_NMF buffers as a host does: R codes (m, n), the observed-entry map
        (m, n), W's mantissas (m, k) and exponents (per component; per row, default 0)."""
        codes, seen, mant = np.asarray(r), np.asarray(observed), np.asarray(w_mantissa)
        m, n = codes.shape if codes.ndim == 2 else (0, 0)
        k = mant.shape[1] if mant.ndim == 2 else 0
        top_r = 2 ** _param(self.params, "r_bits") - 1
        top_mant = 2 ** (self.p["adc_bits"] - 1) - 1
        if not (0 < m <= self.rows and 0 < n <= self.rows) or codes.dtype.kind not in "iu" \
                or codes.min() < 0 or codes.max() > top_r:
            raise ValueError(f"r must be an (m, n) array of integer codes from 0 to {top_r}, "
                             f"m, n <= {self.rows}; got {codes.dtype} array of shape {codes.shape}")
        if seen.shape != (m, n) or seen.dtype != np.bool_:
            raise ValueError(f"observed must be a bool array of shape {(m, n)}; got "
                             f"{seen.dtype} array of shape {seen.shape}")
        if mant.shape[:1] != (m,) or not 0 < k <= self.p["cols"] or mant.dtype.kind not in "iu" \
                or mant.min() < 0 or mant.max() > top_mant:
            raise ValueError(f"w_mantissa must be an (m, k) array of integers from 0 to "
                             f"{top_mant}, k <= {self.p['cols']}; got {mant.dtype} array of "
                             f"shape {mant.shape}")
        row_exp = np.zeros(m, dtype=np.int64) if w_row_exp is None else np.asarray(w_row_exp)
        col_exp = np.asarray(w_col_exp)
        if col_exp.shape != (k,) or row_exp.shape != (m,):
            raise ValueError(f"w_col_exp must have {k} entries and w_row_exp {m}; got shapes "
                             f"{col_exp.shape} and {row_exp.shape}")
        self.nmf_r[:m, :n] = codes
        self.nmf_mask[:m, :n] = seen
        self.nmf_w[:m, :k] = mant
        self.nmf_w_exp[:m] = row_exp
        self.nmf_w_exp[self.rows:self.rows + k] = col_exp

    def load_nmf_mask_words(self, words: ArrayLike) -> None:
        """Fill the observed-entry map from MASK window words."""
        self.nmf_mask[:] = mask_from_words(words, self.rows)

    def nmf_factors(self, m: int, n: int, k: int) -> tuple[NDArray[np.float64],
                                                            NDArray[np.float64]]:
        """(W, H) as the buffers hold them: ``W[i, c] = w[i, c] 2**(row_exp[i] + col_exp[c])``,
        ``H[c, j] = h[c, j] 2**(col_exp[c] + row_exp[j])``; K times their product approximates
        R (``formats.nmf_product_scale``)."""
        rows = self.rows
        w = factor_from_fixed(self.nmf_w[:m, :k], self.nmf_w_exp[:m],
                              self.nmf_w_exp[rows:rows + k])
        h = factor_from_fixed(self.nmf_h[:k, :n], self.nmf_h_exp[rows:rows + k],
                              self.nmf_h_exp[:n])
        return w, h

    # ---- host helpers ------------------------------------------------------------------

    def load_rhs(self, codes: ArrayLike) -> None:
        """Fill the RHS buffer (DAC codes, one per row)."""
        array = np.asarray(codes)
        top = 2 ** self.p["dac_bits"] - 1
        if array.shape != (self.rows,) or array.dtype.kind not in "iu" or \
                (array.size and (array.min() < 0 or array.max() > top)):
            raise ValueError(f"rhs must be {self.rows} integer codes from 0 to {top}; got "
                             f"{array.dtype} array of shape {array.shape}")
        self.rhs[:] = array

    def load_targets(self, codes: ArrayLike) -> None:
        """Fill the TARGET buffer (READ_CELL codes, rows x total_cols)."""
        array = np.asarray(codes)
        top = 2 ** self.p["adc_bits"] - 1
        shape = (self.rows, self.total_cols)
        if array.shape != shape or array.dtype.kind not in "iu" or \
                (array.size and (array.min() < 0 or array.max() > top)):
            raise ValueError(f"targets must be a {shape} array of integer codes from 0 to {top}; "
                             f"got {array.dtype} array of shape {array.shape}")
        self.targets[:] = array

    def fault_cells(self) -> NDArray[np.bool_]:
        """The fault map as a (rows, total_cols) bool array."""
        return ((self.fault_map[:, None] >> np.arange(self.total_cols)[None, :]) & 1).astype(bool)
