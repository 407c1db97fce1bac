"""The simulation backend: :class:`ModelDriver` runs the host API on the golden model.

The golden model of the controller (``anmf.model.golden.GoldenController``) drives the
code-level AFE model (``anmf.model.afe.AnalogFrontEnd``) the way the RTL does, so the same
host code (``anmf.host.anls``) runs unchanged on the RTL in cocotb (:class:`RegisterDriver`)
and here, without a simulator. With a deterministic AFE and a DAC settle time that covers
the DAC's settling, both give the same codes bit for bit (tests/test_scenarios_cocotb.py).

Commands run back to back in the model's time (each starts in the cycle after the previous
one's ``done``): the model needs no bus, so it has no time between commands. Results do
not depend on that gap as long as ``Timing.dac_settle`` covers the DAC settling time.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
from numpy.typing import NDArray

from anmf.model.afe import AnalogFrontEnd, BuildParamsLike, Mode
from anmf.model.formats import ProgramSettings, unpack_result
from anmf.model.golden import GoldenController

from .driver import (NMF_STEPS, SUPPORTED_MAJOR_VERSION, CalibrationReport, CellReading, ChipDriver,
                     ChipError, ChipInfo, Corrections, Counters, ErrorCode, NMFFactors, NMFProgress,
                     NMFReport, NMFSettings, ProgramReport, ProgressCallback, RefreshReport, RemapState,
                     SolveResult, Status, Timing, UnsupportedChip, coefficient_entries, set_bits)

__all__ = ["ModelDriver"]

#: The register-map version the model stands for.
MODEL_VERSION = (SUPPORTED_MAJOR_VERSION, 1)


class _Aborted(Exception):
    """Raised by the tracker inside the golden model's RUN_NMF when ``abort_if`` says so."""


class _NMFTracker:
    """Follows the golden model's RUN_NMF through its program and solve calls: progress
    (the H-step or W-step, PROGRAM or SOLVE, right-hand sides solved), counts, over-range
    retries and unresolved right-hand sides exactly as the sequencer counts them, and
    ``abort_if`` between two blocks (where the RTL's abort also leaves whole factors)."""

    def __init__(self, settings: NMFSettings, on_progress: ProgressCallback | None,
                 abort_if: Callable[[NMFProgress], bool] | None):
        self.settings, self.on_progress, self.abort_if = settings, on_progress, abort_if
        self.programs = self.solves = self.pulses = self.failed = self.over_range = 0
        self.retries = self.unresolved = 0
        self._expect_retry = False
        self._attempts = 0
        self.progress = NMFProgress(0, "H", "IDLE", 0)
        self.readings: list[NMFProgress] = []

    @property
    def half_steps(self) -> int:
        """Half-steps committed so far (the running one is not)."""
        return max(self.programs - 1, 0)

    def report(self, progress: NMFProgress) -> None:
        if progress != self.progress or not self.readings:
            self.progress = progress
            self.readings.append(progress)
            if self.on_progress is not None:
                self.on_progress(progress)

    def _phase(self, phase: str, rhs_done: int) -> None:
        half_step = self.programs - 1
        self.report(NMFProgress(half_step // 2, NMF_STEPS[half_step % 2], phase, rhs_done))
        if self.abort_if is not None and self.abort_if(self.progress):
            raise _Aborted()

    def before_program(self) -> None:
        self.programs += 1
        self._expect_retry = False
        self._phase("PROGRAM", 0)

    def after_program(self, outcome: Any) -> None:
        self.pulses += outcome.pulse_count
        self.failed += outcome.failed_count
        self.over_range += outcome.over_range_samples

    def before_solve(self) -> None:
        self._phase("SOLVE", self.progress.rhs_done if self.progress.phase == "SOLVE" else 0)

    def after_solve(self, outcome: Any, adc_bits: int) -> None:
        self.solves += 1
        self.over_range += outcome.over_range_count
        over = any(unpack_result(word, adc_bits)[1] for word in outcome.words.values())
        rhs_done = self.progress.rhs_done
        if self._expect_retry:
            self.retries += 1
            self._attempts += 1
        else:
            self._attempts = 0
        retry = over and self._attempts < self.settings.range_retries
        self.unresolved += over and not retry
        self._expect_retry = retry
        if not retry:
            self._phase("SOLVE", rhs_done + 1)


class _SolveTally:
    """Counts the golden model's solves inside one host command (the over-range retry's runs,
    REFINE's passes) as SOLVE_COUNT and OVER_RANGE_COUNT count them, and keeps the last one."""

    def __init__(self) -> None:
        self.solves = self.over_range = 0
        self.last: Any = None

    def before_solve(self) -> None:
        return None

    def after_solve(self, outcome: Any, adc_bits: int) -> None:
        self.solves += int(outcome.error == ErrorCode.NONE)
        self.over_range += outcome.over_range_count
        self.last = outcome


class _ObservedGolden(GoldenController):
    """The golden model with an optional observer of RUN_NMF's programming and solves."""

    observer: _NMFTracker | _SolveTally | None = None

    def program_matrix(self, *args: Any, **kwargs: Any) -> Any:
        if self.observer is not None:
            self.observer.before_program()
        outcome = super().program_matrix(*args, **kwargs)
        if self.observer is not None:
            self.observer.after_program(outcome)
        return outcome

    def solve(self, *args: Any, **kwargs: Any) -> Any:
        if self.observer is not None:
            self.observer.before_solve()
        outcome = super().solve(*args, **kwargs)
        if self.observer is not None:
            self.observer.after_solve(outcome, self.p["adc_bits"])
        return outcome


class ModelDriver(ChipDriver):
    """:class:`~anmf.host.driver.ChipDriver` on the golden model and an AFE model.

    Args:
        params: the build parameters (``anmf.hdl.params.BuildParams``).
        afe: the AFE model, built for ``params`` (``AnalogFrontEnd.from_build_params``).
    """

    def __init__(self, params: BuildParamsLike, afe: AnalogFrontEnd):
        self.golden = _ObservedGolden(params, afe)
        #: The build has REFINE (BuildParams.refinement; a plain parameter mapping: yes).
        self.refinement = bool(getattr(params, "refinement", True))
        super().__init__(ChipInfo.from_params(params, MODEL_VERSION))
        self.afe = afe
        self._status = Status(busy=False, done=False, error=ErrorCode.NONE, detail=0)
        self._counts = {"solves": 0, "pulses": 0, "over_range": 0, "failed_cells": 0,
                        "range_retries": 0}
        self._nmf_counts = {"retries": 0, "unresolved": 0}
        self._nmf_progress = NMFProgress(0, "H", "IDLE", 0)
        self._pending_nmf: NMFSettings | None = None
        self._remap_count = 0

    async def identify(self) -> ChipInfo:
        return self.info

    async def _configure(self, timing: Timing | None, programming: ProgramSettings | None) -> None:
        # The model keeps the settings on the driver (self.timing, self.programming).
        return None

    def _finish(self, command: str, error: ErrorCode, detail: int, *,
                raise_on: tuple[ErrorCode, ...] = ()) -> None:
        self._status = Status(busy=False, done=True, error=error, detail=detail)
        if error != ErrorCode.NONE and error not in raise_on:
            raise ChipError(command, error, detail)

    def _count(self, **increments: int) -> None:
        for name, value in increments.items():
            self._counts[name] = min(self._counts[name] + value, 0xFFFF_FFFF)

    async def _write_targets(self, codes: NDArray[np.int64], first_row: int,
                             first_col: int) -> None:
        rows, cols = codes.shape
        self.golden.targets[first_row:first_row + rows, first_col:first_col + cols] = codes

    def _finish_walk(self, command: str, outcome: Any) -> None:
        """Counters, remaps and STATUS after a PROGRAM_MATRIX or REFRESH walk (and its trials)."""
        self._count(pulses=outcome.pulse_count,
                    failed_cells=sum(cell.failed for cell in outcome.cells),
                    over_range=outcome.over_range_samples)
        self._remap_count += len(outcome.remaps)
        detail = min(outcome.failed_count, 0xFFFF) if outcome.error == ErrorCode.CELLS_FAILED \
            else self._timeout_detail(outcome)
        self._finish(command, ErrorCode(outcome.error), detail, raise_on=(ErrorCode.CELLS_FAILED,))

    async def _program_matrix(self, row_mask: int, col_enable: int) -> ProgramReport:
        assert self.programming is not None and self.timing is not None
        # The host command: the walk, then the remap's spare trials when it is enabled.
        outcome = self.golden.program_command(self.programming, row_mask=row_mask,
                                              col_mask=col_enable,
                                              watchdog_limit=self.timing.watchdog)
        self._finish_walk("PROGRAM_MATRIX", outcome)
        rows, cols = set_bits(row_mask), set_bits(col_enable)
        fault_map = np.zeros((self.info.rows, self.info.total_cols), dtype=bool)
        fault_map[np.ix_(rows, cols)] = self.golden.fault_cells()[np.ix_(rows, cols)]
        return ProgramReport(ErrorCode(outcome.error), outcome.pulse_count,
                             outcome.failed_count, fault_map, rows, cols)

    async def _refresh(self, row_mask: int, col_enable: int) -> RefreshReport:
        assert self.programming is not None and self.timing is not None
        outcome = self.golden.refresh(self.programming, row_mask=row_mask, col_mask=col_enable,
                                      watchdog_limit=self.timing.watchdog)
        self._finish_walk("REFRESH", outcome)
        return RefreshReport(ErrorCode(outcome.error), outcome.checked, outcome.reprogrammed,
                             outcome.failed_count, outcome.pulse_count)

    async def _set_remap(self, enable: bool, clear: bool) -> None:
        if clear:
            self.golden.clear_remap()
        self.golden.remap_enabled = enable

    async def _remap_state(self) -> RemapState:
        g = self.golden
        return RemapState(g.remap_enabled, tuple(g.column_map), g.spares_left, self._remap_count)

    async def _calibrate(self, row_mask: int, col_enable: int, cal_settle: int) -> CalibrationReport:
        timing = self.timing
        assert timing is not None
        outcome = self.golden.calibrate(col_mask=col_enable, row_mask=row_mask,
                                        avg_log2=timing.adc_samples.bit_length() - 1,
                                        cal_settle=cal_settle, dac_settle=timing.dac_settle,
                                        analog_settle=timing.analog_settle,
                                        watchdog_limit=timing.watchdog)
        error = ErrorCode(outcome.error)
        self._finish("CALIBRATE", error, min(outcome.failed_count, 0xFFFF) if error == ErrorCode.CAL_FAILED else 0,
                     raise_on=(ErrorCode.CAL_FAILED,))
        info = self.info
        return CalibrationReport(error, outcome.quality, outcome.failed_count,
                                 coefficient_entries(self.golden.cal_words, info.rows, info.total_cols,
                                                     info.adc_bits, info.dac_bits))

    async def _set_corrections(self, corrections: Corrections) -> None:
        self.golden.cal_enable = corrections   # Corrections is the golden model's CalEnable

    def _timeout_detail(self, outcome: Any) -> int:
        """STATUS.error_detail of a programmer timeout: the cell being worked on."""
        if outcome.error not in (ErrorCode.PROGRAM_TIMEOUT, ErrorCode.ADC_TIMEOUT):
            return 0
        cell = outcome.cells[-1] if outcome.cells else None
        return 0 if cell is None else cell.row * self.info.total_cols + cell.col

    async def _solve(self, rhs: NDArray[np.int64], row_mask: int, col_enable: int,
                     mode: str) -> SolveResult:
        timing = self.timing
        assert timing is not None
        rows = list(set_bits(row_mask))
        # Only the enabled rows' RHS entries are written, as RegisterDriver does.
        self.golden.rhs[rows] = rhs[rows]
        tally = _SolveTally()
        self.golden.observer = tally
        try:
            outcome = self.golden.solve_with_retries(
                Mode[mode], retries=timing.solve_retries, row_mask=row_mask, col_mask=col_enable,
                avg_log2=timing.adc_samples.bit_length() - 1, dac_settle=timing.dac_settle,
                analog_settle=timing.analog_settle, watchdog_limit=timing.watchdog)
        finally:
            self.golden.observer = None
        self._count(over_range=outcome.over_range_count, solves=tally.solves,
                    range_retries=outcome.retries)
        cols = set_bits(col_enable)
        detail = cols[len(outcome.words)] if outcome.error == ErrorCode.ADC_TIMEOUT else 0
        self._finish(mode, ErrorCode(outcome.error), detail)
        unpacked = [unpack_result(outcome.words[c], self.info.adc_bits) for c in cols]
        return SolveResult(cols, np.array([code for code, _ in unpacked], dtype=np.int64),
                           np.array([over for _, over in unpacked], dtype=bool), outcome.exponent)

    async def _refine(self, b: NDArray[np.int64], a_codes: NDArray[np.int64] | None, *,
                      passes: int, row_mask: int, col_enable: int, a_offset: int, gain: int,
                      gain_shift: int, headroom: int) -> tuple[NDArray[np.int64], int, int, bool]:
        if not self.refinement:
            raise UnsupportedChip("refine: the chip was built without REFINE (no REFINE_* "
                                  "registers)")
        timing = self.timing
        assert timing is not None
        golden = self.golden
        if a_codes is not None:
            golden.refine_a[:] = a_codes
        rows = list(set_bits(row_mask))
        # Only the enabled rows' B words are written, as RegisterDriver does.
        golden.refine_b[rows] = b[rows]
        tally = _SolveTally()
        golden.observer = tally
        try:
            outcome = golden.refine(passes=passes, a_offset=a_offset, gain=gain,
                                    gain_shift=gain_shift, headroom=headroom, row_mask=row_mask,
                                    col_mask=col_enable,
                                    avg_log2=timing.adc_samples.bit_length() - 1,
                                    dac_settle=timing.dac_settle,
                                    analog_settle=timing.analog_settle,
                                    watchdog_limit=timing.watchdog)
        finally:
            golden.observer = None
        self._count(over_range=tally.over_range, solves=tally.solves)
        detail = 0
        if outcome.error == ErrorCode.ADC_TIMEOUT and tally.last is not None:
            # The column whose conversion timed out: the first one the failed solve lacks.
            solved = set_bits(col_enable) if outcome.passes_done == 0 else \
                tuple(j for j in range(self.info.cols) if outcome.x[j] > 0)
            detail = solved[len(tally.last.words)]
        self._finish("REFINE", ErrorCode(outcome.error), detail)
        return (golden.refine_x.copy(), outcome.passes_done, max(outcome.peaks[-1], 0)
                if outcome.peaks else 0, bool(outcome.over_range))

    async def _read_cell(self, row: int, col: int) -> CellReading:
        assert self.programming is not None and self.timing is not None
        s = self.programming
        outcome = self.golden.read_cell(row, col, avg_log2=s.avg_log2, read_settle=s.read_settle,
                                        watchdog_limit=self.timing.watchdog)
        self._count(over_range=outcome.over_range_samples)
        detail = row * self.info.total_cols + col if outcome.error == ErrorCode.ADC_TIMEOUT else 0
        self._finish("READ_CELL", ErrorCode(outcome.error), detail)
        return CellReading(outcome.code, outcome.over_range)

    # -- RUN_NMF -------------------------------------------------------------------------------

    async def _load_nmf(self, r: NDArray[np.int64], observed: NDArray[np.bool_],
                        w_mantissa: NDArray[np.int64], w_col_exp: NDArray[np.int64],
                        w_row_exp: NDArray[np.int64]) -> None:
        self.golden.load_nmf(r, observed, w_mantissa, w_col_exp, w_row_exp)

    async def _start_nmf(self, settings: NMFSettings) -> None:
        # The golden model runs RUN_NMF inside wait_nmf (it has no time of its own to run in).
        self._pending_nmf = settings
        self._status = Status(busy=True, done=False, error=ErrorCode.NONE, detail=0)

    async def nmf_progress(self) -> NMFProgress:
        return self._nmf_progress

    async def nmf_counts(self) -> tuple[int, int]:
        return self._nmf_counts["retries"], self._nmf_counts["unresolved"]

    async def _wait_nmf(self, on_progress: ProgressCallback | None,
                        abort_if: Callable[[NMFProgress], bool] | None,
                        interval_s: float) -> NMFReport:
        settings = self._pending_nmf
        if settings is None:
            raise RuntimeError("wait_nmf: no RUN_NMF was started (call start_nmf first)")
        self._pending_nmf = None
        assert self.programming is not None and self.timing is not None
        tracker = _NMFTracker(settings, on_progress, abort_if)
        self.golden.observer = tracker
        try:
            outcome = self.golden.run_nmf(
                m=settings.m, n=settings.n, k=settings.k, iterations=settings.iterations,
                settings=self.programming, dac_settle=self.timing.dac_settle,
                analog_settle=self.timing.analog_settle, g_offset=settings.window[0],
                g_span=settings.window[1], range_retries=settings.range_retries,
                watchdog_limit=self.timing.watchdog)
            error, detail = ErrorCode(outcome.error), outcome.detail
            self.nmf_cycles = outcome.done_cycle
            iterations = outcome.iterations
        except _Aborted:
            error, detail = ErrorCode.ABORTED, 0
            self.nmf_cycles = None
            iterations = tracker.half_steps // 2
        finally:
            self.golden.observer = None
        self._count(solves=tracker.solves, pulses=tracker.pulses,
                    over_range=tracker.over_range, failed_cells=tracker.failed)
        self._nmf_counts["retries"] += tracker.retries
        self._nmf_counts["unresolved"] += tracker.unresolved
        self._status = Status(busy=False, done=True, error=error, detail=detail)
        self._nmf_progress = NMFProgress(iteration=iterations, step="H", phase="IDLE",
                                         rhs_done=tracker.progress.rhs_done)
        tracker.report(self._nmf_progress)
        return NMFReport(self._status, self._nmf_progress, Counters(**self._counts),
                         self._nmf_counts["retries"], self._nmf_counts["unresolved"],
                         tuple(tracker.readings))

    async def _read_nmf(self, m: int, n: int, k: int) -> NMFFactors:
        g, rows = self.golden, self.info.rows
        return NMFFactors.from_fixed(g.nmf_w[:m, :k], g.nmf_w_exp[:m], g.nmf_w_exp[rows:rows + k],
                                     g.nmf_h[:k, :n], g.nmf_h_exp[rows:rows + k],
                                     g.nmf_h_exp[:n])

    async def status(self) -> Status:
        return self._status

    async def counters(self) -> Counters:
        return Counters(**self._counts)

    async def abort(self) -> Status:
        # Model commands run to their end inside one call; only a RUN_NMF started and not yet
        # waited for is pending: it ends ABORTED before touching anything (as the RTL's, in
        # PREPARE).
        if self._pending_nmf is not None:
            self._pending_nmf = None
            self._status = Status(busy=False, done=True, error=ErrorCode.ABORTED, detail=0)
        return self._status

    async def soft_reset(self) -> Status:
        self._status = Status(busy=False, done=False, error=ErrorCode.NONE, detail=0)
        self._counts = dict.fromkeys(self._counts, 0)
        self._nmf_counts = dict.fromkeys(self._nmf_counts, 0)
        self._remap_count = 0
        self._pending_nmf = None
        return self._status
