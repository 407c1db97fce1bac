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

from typing import Any

import numpy as np
from numpy.typing import NDArray

from anmf.model.afe import AnalogFrontEnd, BuildParamsLike, Mode
from anmf.model.formats import ProgramSettings, unpack_result
from anmf.model.golden import GoldenController

from .driver import (SUPPORTED_MAJOR_VERSION, CellReading, ChipDriver, ChipError, ChipInfo,
                     Counters, ErrorCode, ProgramReport, SolveResult, Status, Timing, set_bits)

__all__ = ["ModelDriver"]

#: The register-map version the model stands for.
MODEL_VERSION = (SUPPORTED_MAJOR_VERSION, 1)


class ModelDriver(ChipDriver):
    """:class:`~anmf.host.driver.ChipDriver` on the golden model and an AFE model.

    Args:
        params: the build parameters (``anmf.hdl.params.BuildParams``).
        afe: the AFE model, built for ``params`` (``AnalogFrontEnd.from_build_params``).
    """

    def __init__(self, params: BuildParamsLike, afe: AnalogFrontEnd):
        self.golden = GoldenController(params, afe)
        super().__init__(ChipInfo.from_params(params, MODEL_VERSION))
        self.afe = afe
        self._status = Status(busy=False, done=False, error=ErrorCode.NONE, detail=0)
        self._counts = {"solves": 0, "pulses": 0, "over_range": 0, "failed_cells": 0}

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

    async def _program_matrix(self, row_mask: int, col_enable: int) -> ProgramReport:
        assert self.programming is not None and self.timing is not None
        outcome = self.golden.program_matrix(self.programming, row_mask=row_mask,
                                             col_mask=col_enable,
                                             watchdog_limit=self.timing.watchdog)
        self._count(pulses=outcome.pulse_count, failed_cells=outcome.failed_count,
                    over_range=outcome.over_range_samples)
        detail = min(outcome.failed_count, 0xFFFF) if outcome.error == ErrorCode.CELLS_FAILED \
            else self._timeout_detail(outcome)
        self._finish("PROGRAM_MATRIX", ErrorCode(outcome.error), detail,
                     raise_on=(ErrorCode.CELLS_FAILED,))
        rows, cols = set_bits(row_mask), set_bits(col_enable)
        fault_map = np.zeros((self.info.rows, self.info.total_cols), dtype=bool)
        fault_map[np.ix_(rows, cols)] = self.golden.fault_cells()[np.ix_(rows, cols)]
        return ProgramReport(ErrorCode(outcome.error), outcome.pulse_count,
                             outcome.failed_count, fault_map, rows, cols)

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
        outcome = self.golden.solve(Mode[mode], row_mask=row_mask, col_mask=col_enable,
                                    avg_log2=timing.adc_samples.bit_length() - 1,
                                    dac_settle=timing.dac_settle,
                                    analog_settle=timing.analog_settle,
                                    watchdog_limit=timing.watchdog)
        self._count(over_range=outcome.over_range_count,
                    solves=int(outcome.error == ErrorCode.NONE))
        cols = set_bits(col_enable)
        detail = cols[len(outcome.words)] if outcome.error == ErrorCode.ADC_TIMEOUT else 0
        self._finish(mode, ErrorCode(outcome.error), detail)
        unpacked = [unpack_result(outcome.words[c], self.info.adc_bits) for c in cols]
        return SolveResult(cols, np.array([code for code, _ in unpacked], dtype=np.int64),
                           np.array([over for _, over in unpacked], dtype=bool))

    async def _read_cell(self, row: int, col: int) -> CellReading:
        assert self.programming is not None and self.timing is not None
        s = self.programming
        outcome = self.golden.read_cell(row, col, avg_log2=s.avg_log2, read_settle=s.read_settle,
                                        watchdog_limit=self.timing.watchdog)
        self._count(over_range=outcome.over_range_samples)
        detail = row * self.info.total_cols + col if outcome.error == ErrorCode.ADC_TIMEOUT else 0
        self._finish("READ_CELL", ErrorCode(outcome.error), detail)
        return CellReading(outcome.code, outcome.over_range)

    async def status(self) -> Status:
        return self._status

    async def counters(self) -> Counters:
        return Counters(**self._counts)

    async def abort(self) -> Status:
        # Model commands run to their end inside one call: nothing is ever left running.
        return self._status

    async def soft_reset(self) -> Status:
        self._status = Status(busy=False, done=False, error=ErrorCode.NONE, detail=0)
        self._counts = dict.fromkeys(self._counts, 0)
        return self._status
