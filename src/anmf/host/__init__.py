"""Host side of the chip: an async driver API with a register backend (RTL in cocotb, a
board later) and a model backend (golden model + AFE model), and the host-driven ANLS.

docs/host-driver.md describes the API, the scaling and the scoreboards' tolerances.
"""
from .anls import AnalogScale, HostAnlsResult, check_problem, host_anls
from .bus import BusError, InterruptLine, RegisterBus
from .driver import (SOLVE_MODES, CalibrationReport, CellReading, ChipDriver, ChipError, ChipInfo,
                     CommandTimeout, Corrections, Counters, ErrorCode, ProgramReport, ProgramSettings,
                     RefreshReport, RegisterDriver, RemapState, SolveResult, Status, Timing, UnsupportedChip)
from .model_backend import ModelDriver

__all__ = [
    "AnalogScale", "HostAnlsResult", "check_problem", "host_anls", "BusError", "InterruptLine",
    "RegisterBus", "SOLVE_MODES", "CellReading", "ChipDriver", "ChipError", "ChipInfo",
    "CommandTimeout", "Counters", "ErrorCode", "ProgramReport", "ProgramSettings",
    "RefreshReport", "RegisterDriver", "RemapState", "SolveResult", "Status", "Timing", "UnsupportedChip", "ModelDriver",
    "CalibrationReport", "Corrections",
]
