"""The anmf controller's register map: one declaration for the RTL, the docs and the host.

``docs/registers.md`` is generated from here (``anmf regmap --format md``); so are the JSON
description and the C header. Offsets are fixed for every build: each window reserves the
address space of the largest build (ROWS <= 1024, COLS + SPARE <= 32); indices past the
build's depth answer SLVERR.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

from amaranth.hdl import Cat, Module
from amaranth.lib.wiring import Out
from amaranth.utils import bits_for

from ..model import calibration as cal   # the coefficient word's one definition
from .anls_sequencer import ITERATION_BITS, RETRY_BITS, ANLSSequencer, NMFPhase, NMFStep
from .codes import ErrorCode, Opcode
from .params import BuildParams
from .refiner import GAIN_BITS, GAIN_SHIFT_BITS, HEADROOM_BITS, PASS_BITS
from .regmap import (Access, ConstField, CoreAccess, CounterField, Field, MemoryWindow, Register, RegisterFile,
                     RegisterMap, VectorWindow, discard_unbuilt)

__all__ = ["MAGIC", "VERSION", "MAX_ROWS", "MAX_COLUMNS", "build_register_map", "ControllerRegisters",
           "REFRESH_TICK_CYCLES"]

MAGIC = 0x414E4D46  #: "ANMF" in ASCII: the ID register, so a host knows it talks to this design
VERSION = (1, 3)    #: (major, minor) of the register map; major changes break host drivers
MAX_ROWS = 1024     #: rows the fixed window spans leave room for
MAX_COLUMNS = 32    #: COLS + SPARE: one fault-map word, one COL_ENABLE word


def _check_params(params: BuildParams) -> None:
    """What the register map needs beyond BuildParams' own checks."""
    if params.calibration and cal.word_bits(params.adc_bits, params.dac_bits) > 32:
        raise ValueError(f"calibration needs adc_bits and dac_bits of at most 10 (a 32-bit CAL_COEFF word), not "
                         f"{max(params.adc_bits, params.dac_bits)}; build with calibration=False")
    if params.rows > MAX_ROWS:
        raise ValueError(f"rows must be at most {MAX_ROWS} for the register map's fixed windows, not {params.rows}")
    if params.total_cols > MAX_COLUMNS:
        raise ValueError(f"cols + spare must be at most {MAX_COLUMNS} for the register map (one COL_ENABLE word, "
                         f"one FAULT_MAP word per row), not {params.cols} + {params.spare} = {params.total_cols}")
    if params.refinement and params.rows * params.cols > MAX_REFINE_CELLS:
        raise ValueError(f"rows * cols must be at most {MAX_REFINE_CELLS} for the REFINE_A window, not "
                         f"{params.rows} * {params.cols} = {params.rows * params.cols} (or build without refinement)")


def _fit(value: int, width: int) -> int:
    """A reset value clipped to a field's width (narrow builds get the largest value they hold)."""
    return min(value, (1 << width) - 1)


# --- identity ------------------------------------------------------------------------------

class Identity(Register):
    """Identifies the design: reads 0x414E4D46 ("ANMF")."""

    magic = ConstField(32, MAGIC, "Always 0x414E4D46.")


class Version(Register):
    """Register-map version: a host driver refuses a major version it does not know."""

    minor = ConstField(8, VERSION[1], "Additions that keep older drivers working.")
    major = ConstField(8, VERSION[0], "Changes that break older drivers.")


class ArrayParams(Register):
    """Array build parameters: the sizes every window and index check uses."""

    def __init__(self, params: BuildParams) -> None:
        super().__init__({
            "rows": ConstField(16, params.rows, "ROWS: crossbar rows (DACs, RHS entries, ROW_MASK bits)."),
            "cols": ConstField(8, params.cols, "COLS: solution columns in normal use."),
            "spare": ConstField(8, params.spare, "SPARE: spare columns for repair, numbered after the COLS columns."),
        })


class ConverterParams(Register):
    """Converter build parameters."""

    def __init__(self, params: BuildParams) -> None:
        super().__init__({
            "dac_bits": ConstField(8, params.dac_bits, "DAC_BITS: width of an RHS DAC code."),
            "adc_bits": ConstField(8, params.adc_bits, "ADC_BITS: width of a RESULTS / TARGET ADC code."),
            "avg_max_log2": ConstField(8, params.avg_max_log2,
                                       "AVG_MAX_LOG2: TIMING.adc_samples may be at most 2**AVG_MAX_LOG2."),
            "timer_bits": ConstField(8, params.timer_bits,
                                     "TIMER_BITS: width of the cycle counts DAC_SETTLE, ANALOG_SETTLE, WATCHDOG."),
        })


# --- commands ------------------------------------------------------------------------------

class Control(Register):
    """Starts, aborts and resets. Write 1 to act; the bits read as 0."""

    start = Field(Access.W1S, 1, "Execute COMMAND. While STATUS.busy the start is refused with "
                                 "STATUS.error = BUSY and the running command goes on.")
    abort = Field(Access.W1S, 1, "Stop the running command at its next safe point (a pulse is never cut "
                                 "short); it ends with STATUS.error = ABORTED.")
    soft_reset = Field(Access.W1S, 1, "Return the controller to idle, clear STATUS and the counters. A running "
                                      "command is aborted and forgotten: its safe exit still runs (STATUS.busy "
                                      "stays high until the DACs are back at 0 V), then nothing is reported. A "
                                      "start in the same write is ignored. IRQ_STATUS, configuration registers "
                                      "and buffers keep their contents.")


class Command(Register):
    """The command CONTROL.start executes, with its operands."""

    opcode = Field(Access.RW, 8, "What to do (Opcode). Unknown values end with STATUS.error = UNKNOWN_OPCODE.",
                   values=Opcode)
    row = Field(Access.RW, 12, "Cell row for READ_CELL and PROGRAM_CELL. Wider than the array so that a row "
                               ">= ROWS is refused (BAD_DIMENSION) instead of wrapping.", at=8)
    col = Field(Access.RW, 12, "Cell column (0 to COLS + SPARE - 1) for READ_CELL and PROGRAM_CELL; "
                               "a column >= COLS + SPARE is refused (BAD_DIMENSION).", at=20)


class Status(Register):
    """State of the controller, driven by the controller."""

    busy = Field(Access.R, 1, "A command runs.")
    done = Field(Access.R, 1, "The last command has finished (with or without error); cleared by the next start.")
    error = Field(Access.R, 8, "Outcome of the last command (ErrorCode); NONE on success.", at=8, values=ErrorCode)
    error_detail = Field(Access.R, 16, "What the error concerns. UNKNOWN_OPCODE, BUSY: the refused opcode. "
                                       "BAD_DIMENSION, BAD_AVERAGING, BAD_TOLERANCE, BAD_TIMING: the byte offset "
                                       "of the register (or window) holding the refused value. ADC_TIMEOUT: the "
                                       "column converted (solves) or the cell index row * (COLS + SPARE) + col "
                                       "(cell reads); PROGRAM_TIMEOUT: that cell index. CELLS_FAILED: cells "
                                       "failed by the command (saturates at 0xFFFF). Otherwise 0.", at=16)


class ColumnEnable(Register):
    """Solution columns in use: SOLVE, SOLVE_FREE, MVM and PROGRAM_MATRIX use only enabled columns."""

    def __init__(self, params: BuildParams) -> None:
        super().__init__({
            "enable": Field(Access.RW, params.total_cols,
                            "Bit c enables column c (COLS columns, then SPARE spares). A disabled column's "
                            "switch is open: unused rank, or a column replaced by a spare. Reset: the COLS "
                            "columns on, the spares off.",
                            reset=(1 << params.cols) - 1),
        })


class IrqEnable(Register):
    """Which IRQ_STATUS bits raise the interrupt line."""

    done = Field(Access.RW, 1, "Interrupt when IRQ_STATUS.done is set.")
    error = Field(Access.RW, 1, "Interrupt when IRQ_STATUS.error is set.")
    over_range = Field(Access.RW, 1, "Interrupt when IRQ_STATUS.over_range is set.")


class IrqStatus(Register):
    """Interrupt causes: set by the controller, cleared by writing 1. The line is high while
    any set bit is enabled in IRQ_ENABLE."""

    done = Field(Access.RW1C, 1, "A command has finished.")
    error = Field(Access.RW1C, 1, "A command has finished with STATUS.error other than NONE, or a start was "
                                  "refused with BUSY.")
    over_range = Field(Access.RW1C, 1, "An ADC reading was over range (see RESULTS.over_range, OVER_RANGE_COUNT).")


# --- timing --------------------------------------------------------------------------------

class Timing(Register):
    """ADC averaging per reading."""

    def __init__(self, params: BuildParams) -> None:
        most = 1 << params.avg_max_log2
        super().__init__({
            "adc_samples": Field(
                Access.RW, 32,
                f"ADC conversions averaged per reading: a sample count, a power of two from 1 to "
                f"2**AVG_MAX_LOG2 = {most}. The controller hands the exponent to the solve sequencer; 0, a count "
                f"that is not a power of two, or a count above {most} is refused with STATUS.error = BAD_AVERAGING. "
                f"All 32 bits are kept so that no value wraps into an accepted one.", reset=1),
        })


class Cycles(Register):
    """A cycle count of TIMER_BITS bits (the docstring comes from ``doc``)."""

    def __init__(self, params: BuildParams, *, doc: str, field_doc: str, reset: int) -> None:
        width = params.timer_bits
        super().__init__({"cycles": Field(Access.RW, width, f"{field_doc} {width} bits (TIMER_BITS); 0 is refused "
                                                            f"(BAD_TIMING).", reset=_fit(reset, width))}, doc=doc)


# --- programming ---------------------------------------------------------------------------

class ProgramTolerance(Register):
    """Write-verify acceptance window."""

    def __init__(self, params: BuildParams) -> None:
        super().__init__({"codes": Field(
            Access.RW, params.tolerance_bits,
            "A cell is programmed when |READ_CELL reading - TARGET code| <= codes (ADC codes). One bit wider than "
            "a code so that a tolerance beyond the code range arrives intact; 0 or beyond the range is refused "
            "(BAD_TOLERANCE).", reset=_fit(16, params.adc_bits))})


class ProgramPulses(Register):
    """Write-verify effort per cell."""

    def __init__(self, params: BuildParams) -> None:
        super().__init__({"max_pulses": Field(
            Access.RW, params.pulse_budget_bits,
            "Pulses per cell before it is marked failed in FAULT_MAP; 0 only verifies (a cell out of "
            "tolerance fails at once).",
            reset=_fit(32, params.pulse_budget_bits))})


class ProgramAmplitude(Register):
    """Programming pulse amplitude ramp, in AFE amplitude codes: first pulse, then a step after each miss.

    Resets match the analog model's write-verify defaults at its 10 mV per code (1.0 V start,
    50 mV step, docs/number-formats.md): the SET/RESET thresholds (0.9 V, 1.0 V) are reachable."""

    def __init__(self, params: BuildParams) -> None:
        width = params.prog_amp_bits
        super().__init__({
            "start": Field(Access.RW, width, "Amplitude of a cell's first pulse.", reset=_fit(100, width)),
            "step": Field(Access.RW, width, "Added to the amplitude after each pulse that misses the target.",
                          reset=_fit(5, width), at=16),
        })


class ProgramAmplitudeMax(Register):
    """Ceiling of the programming pulse amplitude ramp."""

    def __init__(self, params: BuildParams) -> None:
        width = params.prog_amp_bits
        # 200 codes = 2.0 V in the analog model, its write-verify ceiling.
        super().__init__({"max": Field(Access.RW, width, "The amplitude never exceeds this code.",
                                       reset=_fit(200, width))})


class ProgramPulse(Register):
    """Programming pulse shape."""

    def __init__(self, params: BuildParams) -> None:
        width = params.prog_width_bits
        super().__init__({"width": Field(Access.RW, width, "Pulse width in cycles; 0 is refused (BAD_TIMING).",
                                         reset=_fit(10, width))})


# --- RUN_NMF -------------------------------------------------------------------------------

def _window_reset(params: BuildParams) -> tuple[int, int]:
    """NMF_WINDOW_BASE's and _SPAN's reset: the rram-3bit window, 0.5 uS (the circuit's offset conductance) to
    35 uS (g_max), read at a 40 uS full scale: codes 518 and 960 with 10 bits."""
    half = 1 << (params.adc_bits - 1)
    low, high = half + round(half * 0.5 / 40), half + round(half * 35 / 40)
    return low, high - low


class NMFSize(Register):
    """RUN_NMF problem size: R is m x n, W is m x k, H is k x n."""

    def __init__(self, params: BuildParams) -> None:
        super().__init__({
            "m": Field(Access.RW, 12, f"Rows of R and W, 1 to ROWS = {params.rows}. Wider than the array so that "
                                      f"a larger value is refused (BAD_DIMENSION) instead of wrapping.",
                       reset=params.rows),
            "n": Field(Access.RW, 12, f"Columns of R and H, 1 to ROWS = {params.rows}.", reset=params.rows, at=12),
            "k": Field(Access.RW, 8, f"Rank: columns of W, rows of H, 1 to COLS = {params.cols}.",
                       reset=params.cols, at=24),
        })


class NMFIterations(Register):
    """RUN_NMF iteration count and over-range retries."""

    count = Field(Access.RW, ITERATION_BITS, "Iterations (an H-step then a W-step each); 0 is refused "
                                             "(BAD_DIMENSION).", reset=1)
    range_retries = Field(Access.RW, RETRY_BITS, "Times a right-hand side whose solution is over range is solved "
                                                 "again with its input halved; after the last one the clipped "
                                                 "solution is kept (NMF_UNRESOLVED_COUNT).", reset=8, at=16)


class NMFWindowBase(Register):
    """Base of the conductance window a stored factor column is programmed into (TARGET codes): a zero
    entry gets this code, the circuit's offset conductance (the compensated zero). Reset: the rram-3bit
    window's, 0.5 uS at a 40 uS read full scale."""

    def __init__(self, params: BuildParams) -> None:
        base, _ = _window_reset(params)
        super().__init__({"code": Field(
            Access.RW, params.adc_bits + 1, "READ_CELL code of the offset conductance. One bit wider than a code "
                                            "so that a value beyond the code range arrives intact and is refused "
                                            "(BAD_WINDOW).", reset=base)})


class NMFWindowSpan(Register):
    """Width of the conductance window in TARGET codes: a column's largest entry gets a code in the upper
    half of [base, base + span). Reset: the rram-3bit window's, up to g_max = 35 uS."""

    def __init__(self, params: BuildParams) -> None:
        _, span = _window_reset(params)
        super().__init__({"codes": Field(
            Access.RW, params.adc_bits + 1, "Codes from the base to the top of the window (g_max); 0 is refused, "
                                            "and so is NMF_WINDOW_BASE + span > 2**ADC_BITS (BAD_WINDOW).",
            reset=span)})


class NMFProgress(Register):
    """Where RUN_NMF is, driven by the controller (docs/anls-sequencer.md)."""

    def __init__(self, params: BuildParams) -> None:
        super().__init__({
            "iteration": Field(Access.R, ITERATION_BITS, "Iterations completed by the last (or running) RUN_NMF."),
            "step": Field(Access.R, 1, "The half-step: H (solve H from W) or W.", values=NMFStep, at=16),
            "phase": Field(Access.R, 3, "What the half-step is doing; IDLE when no RUN_NMF runs.", values=NMFPhase,
                           at=17),
            "rhs_done": Field(Access.R, bits_for(params.rows), "Right-hand sides finished in this half-step "
                                                               "(columns of R in the H-step, rows in the W-step).",
                              at=20),
        })


class NMFIrq(Register):
    """RUN_NMF's progress interrupt, beside IRQ_STATUS / IRQ_ENABLE (whose causes stay as they are): the
    line is high while a set IRQ_STATUS bit is enabled in IRQ_ENABLE or progress and progress_enable are
    both set. RUN_NMF's end raises IRQ_STATUS.done like any command."""

    progress = Field(Access.RW1C, 1, "RUN_NMF completed an iteration (NMF_PROGRESS.iteration went up); write 1 "
                                     "to clear.")
    progress_enable = Field(Access.RW, 1, "Interrupt when progress is set.", at=8)


# --- REFINE and the over-range retry of host solves --------------------------------------------

#: Widths of the Refiner's buffers in this controller (RefineFormat's defaults): B is one bus word.
REFINE_X_BITS = 24
REFINE_B_BITS = 32
#: SOLVE_RETRIES.limit is 4 bits: at most 15 halvings of the DAC input.
SOLVE_RETRY_BITS = 4
#: REFINE_A's span (words): the REFINE windows share 0xA000-0xFFFF, so ROWS x COLS <= 4096 with REFINE.
MAX_REFINE_CELLS = 4096


class RefineControl(Register):
    """REFINE's operands besides the correction gain (docs/refinement.md)."""

    def __init__(self, params: BuildParams) -> None:
        half = 1 << (params.adc_bits - 1)
        super().__init__({
            "passes": Field(Access.RW, PASS_BITS, "Refinement passes after the clamped pass 0: REFINE runs passes + 1 "
                                                  "solves at most.", reset=4),
            "headroom": Field(Access.RW, HEADROOM_BITS, "DAC bits the scaled residual leaves unused (2 measured "
                                                        "best).", reset=2, at=4),
            "a_offset": Field(Access.RW, params.adc_bits, "READ_CELL code of the conductance that stands for 0 "
                                                          "(A = REFINE_A - a_offset). Reset: the rram-3bit offset "
                                                          "conductance's code, as NMF_WINDOW_BASE.",
                              reset=half + round(half * 0.5 / 40), at=8),
        })


class RefineGain(Register):
    """REFINE's correction gain: X steps per ADC step of a correction = gain * 2**(msb + headroom - shift)
    (``anmf.model.refinement.correction_gain``). Reset: rram-3bit's (132972, 35)."""

    gain = Field(Access.RW, GAIN_BITS, "Gain mantissa (unsigned).", reset=132972)
    shift = Field(Access.RW, GAIN_SHIFT_BITS, "Gain shift.", reset=35, at=24)


class RefineStatus(Register):
    """Progress and outcome of the last (or running) REFINE, driven by the Refiner."""

    def __init__(self, params: BuildParams, r_bits: int) -> None:
        super().__init__({
            "passes_done": Field(Access.R, bits_for(2 ** PASS_BITS), "Solves accumulated into REFINE_X."),
            "residual_msb": Field(Access.R, bits_for(r_bits - 1), "Leading one of the last residual's peak "
                                                                  "max |B - A X| (0 also when it is 0).", at=8),
            "over_range": Field(Access.R, 1, "A solve result of the run was over range (it was accepted clipped; "
                                             "the next pass corrects it).", at=16),
        })


class SolveRetries(Register):
    """Over-range retry of SOLVE, SOLVE_FREE and MVM (docs/controller.md): a solve with an over-range result
    runs again with the DAC input halved (code zero + (code - zero) >> e after e retries)."""

    limit = Field(Access.RW, SOLVE_RETRY_BITS, "Retries at most; 0 (reset) turns the retry off. When the last one "
                                               "is still over range its clipped results are kept (RESULTS.over_range "
                                               "set, STATUS.error NONE).")


class SolveExponent(Register):
    """Input scale of the last SOLVE, SOLVE_FREE or MVM's results: RESULTS are for RHS * 2**-exponent."""

    exponent = Field(Access.R, SOLVE_RETRY_BITS, "Retries the results took (the DAC input was halved that often).")
# --- REFRESH and spare-column remap (built with params.spare_remap) -------------------------

#: Clock cycles per REFRESH_INTERVAL / REFRESH_ELAPSED tick (2**12).
REFRESH_TICK_CYCLES = 4096


class RemapControl(Register):
    """The transparent spare-column remap (docs/fault-handling.md)."""

    enable = Field(Access.RW, 1, "After a PROGRAM_MATRIX or REFRESH leaves failed cells in a column c < COLS, "
                                 "program a free spare with column c's targets and, if it passes, route logical "
                                 "column c to it from then on. Reset: 0 (off: failed cells end with CELLS_FAILED "
                                 "as without the remap).")
    clear = Field(Access.W1S, 1, "Forget the map (every column on its own physical column) and free every spare. "
                                 "Ignored while a command runs.", at=8)


class RemapStatus(Register):
    """State of the spare pool, driven by the controller."""

    def __init__(self, params: BuildParams) -> None:
        super().__init__({
            "spares_left": Field(Access.R, bits_for(params.spare),
                                 "Spare columns neither holding a remapped column nor found bad by a failed "
                                 "trial."),
        })


class ProgIrq(Register):
    """Interrupts of REFRESH's drift timer and of the remap, beside IRQ_STATUS / IRQ_ENABLE: the line is
    also high while a bit here and its enable are both set."""

    refresh_due = Field(Access.RW1C, 1, "REFRESH_ELAPSED reached REFRESH_INTERVAL: time for a REFRESH (the "
                                        "controller never starts one itself); write 1 to clear.")
    remap = Field(Access.RW1C, 1, "A column was remapped to a spare (REMAP_COUNT went up); write 1 to clear.")
    refresh_due_enable = Field(Access.RW, 1, "Interrupt when refresh_due is set.", at=8)
    remap_enable = Field(Access.RW, 1, "Interrupt when remap is set.")


class RefreshInterval(Register):
    """The drift interval: REFRESH is due this long after the last PROGRAM_MATRIX, REFRESH or RUN_NMF."""

    ticks = Field(Access.RW, 32, f"Interval in ticks of {REFRESH_TICK_CYCLES} clock cycles (41 us at 100 MHz; "
                                 f"the largest, 2**32 - 1, is about 49 hours). 0: never due. Reset: 0.")


class RefreshElapsed(Register):
    """Time since the last matrix programming, driven by the controller."""

    ticks = Field(Access.R, 32, f"Ticks of {REFRESH_TICK_CYCLES} cycles since the last PROGRAM_MATRIX, REFRESH "
                                f"or RUN_NMF ended (0 until the first; saturates).")


class RefreshResult(Register):
    """What the last REFRESH found (its own walk; not the spare trials behind it)."""

    checked = Field(Access.R, 16, "Cells verified (enabled rows x enabled columns).")
    reprogrammed = Field(Access.R, 16, "Cells found out of tolerance and given pulses.", at=16)


class RefreshFailed(Register):
    """Cells the last REFRESH left out of tolerance (also in FAULT_MAP, FAILED_CELL_COUNT)."""

    cells = Field(Access.R, 16, "Failed cells of the last REFRESH's walk.")
# --- CALIBRATE -----------------------------------------------------------------------------

class CalControl(Register):
    """Which calibration corrections the solves apply (docs/calibration.md). Each bit is latched when a
    solve starts. With the reset contents of CAL_COEFF (identity words) a correction changes nothing."""

    adc = Field(Access.RW, 1, "Correct every solve result (SOLVE, SOLVE_FREE, MVM, and RUN_NMF's solves) with "
                              "its channel's ADC word. Reset 1.", reset=1)
    dac = Field(Access.RW, 1, "Correct every right-hand side code with its row's DAC word on the way to the "
                              "DAC. Reset 1.", reset=1)
    opamp = Field(Access.RW, 1, "Subtract the column's op-amp offset word from SOLVE and SOLVE_FREE results "
                                "(not MVM). Reset 0: the offsets are measured with the matrix programmed at "
                                "CALIBRATE time and hold for that matrix only.", at=2)


class CalQuality(Register):
    """Outcome of the last CALIBRATE: the worst corrected residual of the ADC check references."""

    residual = Field(Access.R, 16, "Worst |corrected reading - ideal| over the channels and the 0, +7/8 and "
                                   "-7/8 full-scale references, in 1/16 ADC LSB; saturates at 0xFFFF.")


class CalFailed(Register):
    """Outcome of the last CALIBRATE: entries stored as identity because their measurement failed."""

    def __init__(self, params: BuildParams) -> None:
        depth = cal.memory_depth(params.rows, params.total_cols)
        super().__init__({"count": Field(Access.R, bits_for(depth), "Entries of CAL_COEFF the last CALIBRATE could not "
                                                       "measure (over range, gain outside 1/2 to 2, offset "
                                                       "too large); CALIBRATE then ends with CAL_FAILED.")})


def _add_cal_registers(regs: RegisterMap, params: BuildParams) -> None:
    """CALIBRATE's registers and its coefficient window (built with ``params.calibration`` only)."""
    regs.add("CAL_SETTLE", Cycles(params, doc="Calibration reference settling time.", reset=4,
                                  field_doc="Cycles from selecting a reference (or a loopback row) to the first "
                                            "conversion of CALIBRATE."), offset=0x090)
    regs.add("CAL_CONTROL", CalControl(), offset=0x094)
    regs.add("CAL_QUALITY", CalQuality(), offset=0x098)
    regs.add("CAL_FAILED", CalFailed(params), offset=0x09C)
    ob = cal.offset_bits(params.adc_bits, params.dac_bits)
    identity = cal.pack_coefficient(cal.IDENTITY, adc_bits=params.adc_bits, dac_bits=params.dac_bits)
    total = params.total_cols
    regs.add("CAL_COEFF", MemoryWindow(
        depth=cal.memory_depth(params.rows, total), span=2 * MAX_ROWS, access=Access.R,
        core=CoreAccess.READ_WRITE, core_read_ports=3, init=identity,
        fields={"offset": (ob, f"Signed offset ({ob}-bit two's complement), 1/16 LSB of its converter (op-amp "
                               f"words: ADC LSB)."),
                "gain": (cal.GAIN_BITS, "Gain, 1.0 = 0x8000 (15 fractional bits); op-amp words 0."),
                "valid": (1, "The entry was measured; 0: identity (offset 0, gain 1.0), the reset contents.")},
        doc=f"Calibration coefficients, written by CALIBRATE: ADC channel c at index c, DAC row r at index "
            f"COLS + SPARE + r, op-amp column c at index COLS + SPARE + ROWS + c "
            f"({cal.memory_depth(params.rows, total)} words in this build). Reset: every word identity."),
        offset=0x8000)


# --- counters ------------------------------------------------------------------------------

def _counter(params: BuildParams, doc: str, increment_width: int = 1) -> Register:
    top = (1 << params.counter_bits) - 1
    return Register({"count": CounterField(params.counter_bits, f"Events since reset or CONTROL.soft_reset; "
                                                                 f"saturates at 0x{top:X}.",
                                           cleared_by="CONTROL.soft_reset", increment_width=increment_width)},
                    doc=doc)


# --- the map -------------------------------------------------------------------------------

def build_register_map(params: BuildParams | None = None) -> RegisterMap:
    """The anmf register map for ``params`` (the default build if None)."""
    params = params if params is not None else BuildParams()
    if not isinstance(params, BuildParams):
        raise ValueError(f"params must be a BuildParams, not {params!r}")
    _check_params(params)
    # Every parameter as an integer (run_nmf: 1 or 0), for the docs and the host's constants.
    regs = RegisterMap("ANMF", {name: int(value) for name, value in asdict(params).items()})
    regs.add("ID", Identity(), offset=0x000)
    regs.add("VERSION", Version(), offset=0x004)
    regs.add("PARAMS_ARRAY", ArrayParams(params), offset=0x008)
    regs.add("PARAMS_CONVERTERS", ConverterParams(params), offset=0x00C)
    regs.add("CONTROL", Control(), offset=0x010)
    regs.add("COMMAND", Command(), offset=0x014)
    regs.add("STATUS", Status(), offset=0x018)
    regs.add("COL_ENABLE", ColumnEnable(params), offset=0x01C)
    regs.add("IRQ_ENABLE", IrqEnable(), offset=0x020)
    regs.add("IRQ_STATUS", IrqStatus(), offset=0x024)
    regs.add("TIMING", Timing(params), offset=0x030)
    regs.add("DAC_SETTLE", Cycles(params, doc="DAC settling time.", reset=16,
                                  field_doc="Cycles from LDAC to a settled DAC output."), offset=0x034)
    regs.add("ANALOG_SETTLE", Cycles(params, doc="Closed-loop settling time before the first conversion.", reset=200,
                                     field_doc="Cycles from closing the loop to the first ADC start: long enough "
                                               "for the slowest eigenvalue of the active set."), offset=0x038)
    regs.add("WATCHDOG", Cycles(params, doc="Bound on every wait for the analog side (it is never trusted to answer).",
                                reset=16384,
                                field_doc="Cycles an ADC conversion or a programming pulse may take before the "
                                          "command ends with ADC_TIMEOUT or PROGRAM_TIMEOUT."), offset=0x03C)
    regs.add("READ_SETTLE", Cycles(params, doc="Cell read settling time (READ_CELL and write-verify reads).",
                                   reset=16, field_doc="Cycles from connecting a cell to the ADC to its first "
                                                       "conversion."), offset=0x054)
    regs.add("PROGRAM_TOLERANCE", ProgramTolerance(params), offset=0x040)
    regs.add("PROGRAM_PULSES", ProgramPulses(params), offset=0x044)
    regs.add("PROGRAM_AMPLITUDE", ProgramAmplitude(params), offset=0x048)
    regs.add("PROGRAM_AMPLITUDE_MAX", ProgramAmplitudeMax(params), offset=0x04C)
    regs.add("PROGRAM_PULSE", ProgramPulse(params), offset=0x050)
    regs.add("SOLVE_COUNT", _counter(params, "SOLVE, SOLVE_FREE and MVM commands completed without error."), offset=0x060)
    regs.add("PULSE_COUNT", _counter(params, "Programming pulses fired."), offset=0x064)
    regs.add("OVER_RANGE_COUNT", _counter(params, "ADC samples flagged over range (solves and cell reads); a solve's samples "
                                          "are added at once when it ends.",
                                          increment_width=bits_for(params.total_cols << params.avg_max_log2)),
             offset=0x068)
    regs.add("FAILED_CELL_COUNT", _counter(params, "Cells write-verify left out of tolerance (also set in FAULT_MAP)."),
             offset=0x06C)
    if params.run_nmf:
        _add_nmf_registers(regs, params)
    regs.add("SOLVE_RETRIES", SolveRetries(), offset=0x0C0)
    regs.add("SOLVE_EXPONENT", SolveExponent(), offset=0x0C4)
    regs.add("RANGE_RETRY_COUNT", _counter(params, "SOLVE, SOLVE_FREE and MVM runs repeated with a halved input "
                                           "after an over-range result (SOLVE_RETRIES)."), offset=0x0C8)
    if params.refinement:
        _add_refine_registers(regs, params)
    if params.spare_remap:
        _add_remap_registers(regs, params)
    if params.calibration:
        _add_cal_registers(regs, params)

    regs.add("RESULTS", MemoryWindow(
        depth=params.total_cols, span=MAX_COLUMNS, access=Access.R, core=CoreAccess.WRITE,
        fields={"code": (params.adc_bits, f"Averaged ADC code, offset binary: {1 << (params.adc_bits - 1)} "
                                          f"(2**(ADC_BITS-1)) is 0 V."),
                "over_range": (1, "A conversion behind this reading was over range: the code is clipped.")},
        doc="Readings of the last SOLVE, SOLVE_FREE or MVM (column c at index c, COLS + SPARE entries) or "
            "READ_CELL (at index COMMAND.col)."), offset=0x100)
    regs.add("ROW_MASK", VectorWindow(
        bits=params.rows, span=MAX_ROWS // 32, reset=(1 << params.rows) - 1,
        doc="Rows in use: bit r of the vector (word r // 32, bit r % 32) connects row r. 0 leaves the row "
            "open: a missing entry of R, or an unused row. PROGRAM_MATRIX skips masked rows. Reset: all rows."),
        offset=0x200)
    regs.add("RHS", MemoryWindow(
        depth=params.rows, span=MAX_ROWS, access=Access.RW, core=CoreAccess.READ,
        fields={"code": (params.dac_bits, f"DAC code, offset binary: {params.dac_zero_code} (2**(DAC_BITS-1)) is "
                                          f"0 V, 0 the most negative voltage.")},
        doc="Right-hand side: row r's DAC code at index r; loaded into the row DACs by the next solve."),
        offset=0x1000)
    regs.add("FAULT_MAP", MemoryWindow(
        depth=params.rows, span=MAX_ROWS, access=Access.RW, core=CoreAccess.READ_WRITE,
        core_write_granularity=1,
        fields={"cells": (params.total_cols, "Bit c set: cell (row, c) is faulty.")},
        doc="One word per row: bit c marks cell (row, c) as failed or known bad. Write-verify writes the bit of "
            "each cell it programs (1 failed, 0 within tolerance) and leaves the others; the host may write to "
            "preload known faults or clear the map (a write waits while the controller writes the same map)."),
        offset=0x2000)
    regs.add("TARGET", MemoryWindow(
        depth=params.rows * params.total_cols, span=MAX_ROWS * MAX_COLUMNS, access=Access.RW,
        core=CoreAccess.READ_WRITE, core_read_transparent=True,  # RUN_NMF's last write meets the first fetch
        fields={"code": (params.adc_bits, "READ_CELL reading (ADC code) the cell should give.")},
        doc="Write-verify targets: cell (row, col) at index row * (COLS + SPARE) + col. RUN_NMF writes the targets "
            "of each factor it programs here (rows 0 to m - 1 or n - 1, columns 0 to k - 1)."), offset=0x20000)

    if params.run_nmf:
        _add_nmf_windows(regs, params)
    if params.refinement:
        _add_refine_windows(regs, params)
    if params.spare_remap:
        regs.add("REMAP_MAP", MemoryWindow(
            depth=params.total_cols, span=MAX_COLUMNS, access=Access.R, core=CoreAccess.WRITE,
            fields={"physical": (8, "Physical column logical column c uses."),
                    "remapped": (1, "Column c has been moved: physical differs from c.")},
            doc="The column map: entry c for logical column c (the column the host addresses in COL_ENABLE, "
                "COMMAND.col, RESULTS, TARGET). It follows the map within COLS + SPARE cycles of a change (after "
                "reset too)."), offset=0x10000)
    return regs


def refine_r_bits(params: BuildParams) -> int:
    """Width of the Refiner's residual words in this controller (``Refiner.r_bits``)."""
    product_bits = params.adc_bits + 1 + REFINE_X_BITS
    return max(REFINE_B_BITS, product_bits + max(1, (params.cols - 1).bit_length())) + 1


def _add_refine_registers(regs: RegisterMap, params: BuildParams) -> None:
    """REFINE's registers (built with ``params.refinement`` only)."""
    regs.add("REFINE_CONTROL", RefineControl(params), offset=0x0B0)
    regs.add("REFINE_GAIN", RefineGain(), offset=0x0B4)
    regs.add("REFINE_STATUS", RefineStatus(params, refine_r_bits(params)), offset=0x0B8)


def _add_refine_windows(regs: RegisterMap, params: BuildParams) -> None:
    """REFINE's buffers (built with ``params.refinement`` only)."""
    regs.add("REFINE_B", MemoryWindow(
        depth=params.rows, span=MAX_ROWS, access=Access.RW, core=CoreAccess.READ,
        fields={"word": (REFINE_B_BITS, "B_i, two's complement: DAC steps times 2**f (the host's f).")},
        doc="REFINE's right-hand side B, row i at index i (rows outside ROW_MASK are not used)."), offset=0xA000)
    regs.add("REFINE_X", MemoryWindow(
        depth=params.cols, span=MAX_COLUMNS, access=Access.R, core=CoreAccess.READ_WRITE,
        fields={"word": (REFINE_X_BITS, "X_j, unsigned, in B units per A unit; saturates at 2**24 - 1.")},
        doc="REFINE's solution X, column j at index j (cleared by each REFINE)."), offset=0xB000)
    regs.add("REFINE_A", MemoryWindow(
        depth=params.rows * params.cols, span=MAX_REFINE_CELLS, access=Access.RW, core=CoreAccess.READ_WRITE,
        fields={"code": (params.adc_bits, "READ_CELL code of cell (i, j).")},
        doc="REFINE's matrix: cell (i, j) (j < COLS) at index i * COLS + j. Write-verify (PROGRAM_CELL, "
            "PROGRAM_MATRIX, RUN_NMF's programming) stores each cell's final verify reading here; the host may "
            "write it too (a write waits while write-verify stores)."), offset=0xC000)


def _add_remap_registers(regs: RegisterMap, params: BuildParams) -> None:
    """REFRESH's and the remap's registers (built with ``params.spare_remap`` only)."""
    regs.add("REMAP_CONTROL", RemapControl(), offset=0x0D0)
    regs.add("REMAP_STATUS", RemapStatus(params), offset=0x0D4)
    regs.add("REMAP_COUNT", _counter(params, "Columns moved to a spare by the remap."), offset=0x0D8)
    regs.add("PROG_IRQ", ProgIrq(), offset=0x0DC)
    regs.add("REFRESH_INTERVAL", RefreshInterval(), offset=0x0E0)
    regs.add("REFRESH_ELAPSED", RefreshElapsed(), offset=0x0E4)
    regs.add("REFRESH_RESULT", RefreshResult(), offset=0x0E8)
    regs.add("REFRESH_FAILED", RefreshFailed(), offset=0x0EC)


def _add_nmf_registers(regs: RegisterMap, params: BuildParams) -> None:
    """RUN_NMF's registers (built with ``params.run_nmf`` only)."""
    regs.add("NMF_SIZE", NMFSize(params), offset=0x070)
    regs.add("NMF_ITERATIONS", NMFIterations(), offset=0x074)
    regs.add("NMF_WINDOW_BASE", NMFWindowBase(params), offset=0x078)
    regs.add("NMF_WINDOW_SPAN", NMFWindowSpan(params), offset=0x07C)
    regs.add("NMF_PROGRESS", NMFProgress(params), offset=0x080)
    regs.add("NMF_IRQ", NMFIrq(), offset=0x084)
    regs.add("NMF_RETRY_COUNT", _counter(params, "RUN_NMF solves repeated with a halved input after an over-range solution."),
             offset=0x088)
    regs.add("NMF_UNRESOLVED_COUNT", _counter(params, "RUN_NMF right-hand sides still over range after the last retry (the "
                                              "clipped solution was kept)."), offset=0x08C)


def _add_nmf_windows(regs: RegisterMap, params: BuildParams) -> None:
    """RUN_NMF's buffers (built with ``params.run_nmf`` only)."""
    mantissa = params.mantissa_bits
    exponent_doc = (f"Signed exponent, {params.exp_bits}-bit two's complement. Index i < ROWS: the exponent of "
                    f"right-hand side i (a row of W, a column of H); index ROWS + c: component c's.")
    regs.add("NMF_W_EXP", MemoryWindow(
        depth=params.rows + params.cols, span=2 * MAX_ROWS, access=Access.RW, core=CoreAccess.READ_WRITE,
        fields={"exponent": (params.exp_bits, exponent_doc)},
        doc="Exponents of W: W[i, c] = NMF_W[i * COLS + c] * 2**(NMF_W_EXP[i] + NMF_W_EXP[ROWS + c]). The host "
            "writes the initial ones (row exponents usually 0); RUN_NMF replaces rows 0 to m - 1 and components 0 "
            "to k - 1 when a W-step commits."), offset=0x4000)
    regs.add("NMF_H_EXP", MemoryWindow(
        depth=params.rows + params.cols, span=2 * MAX_ROWS, access=Access.RW, core=CoreAccess.READ_WRITE,
        fields={"exponent": (params.exp_bits, exponent_doc)},
        doc="Exponents of H: H[c, j] = NMF_H[c * ROWS + j] * 2**(NMF_H_EXP[ROWS + c] + NMF_H_EXP[j]); replaced "
            "when an H-step commits."), offset=0x6000)
    regs.add("NMF_W", MemoryWindow(
        depth=params.rows * params.cols, span=MAX_ROWS * MAX_COLUMNS, access=Access.RW, core=CoreAccess.READ_WRITE,
        fields={"mantissa": (mantissa, "Unsigned mantissa (ADC_BITS - 1 bits): a solve's code above the zero "
                                       "code.")},
        doc="W (m x k) mantissas: entry (i, c) at index i * COLS + c. The host writes the initial W; RUN_NMF "
            "starts with an H-step from it and replaces W when each W-step commits."), offset=0x40000)
    regs.add("NMF_H", MemoryWindow(
        depth=params.cols * params.rows, span=MAX_ROWS * MAX_COLUMNS, access=Access.RW, core=CoreAccess.READ_WRITE,
        fields={"mantissa": (mantissa, "Unsigned mantissa (ADC_BITS - 1 bits).")},
        doc="H (k x n) mantissas: entry (c, j) at index c * ROWS + j; replaced when each H-step commits."),
        offset=0x60000)
    regs.add("NMF_MASK", MemoryWindow(
        depth=ANLSSequencer.mask_depth(params), span=MAX_ROWS * MAX_ROWS // 32, access=Access.RW,
        core=CoreAccess.READ,
        fields={"bits": (32, "Bit b of word w: entry with index 32 w + b observed.")},
        doc="Observed entries of R, one bit each: entry (i, j) is bit (i * ROWS + j) % 32 of word (i * ROWS + j) "
            "// 32. A 0 leaves the entry out of both least-squares problems it belongs to (its row is "
            "disconnected). Clear after reset: write it before RUN_NMF."), offset=0x80000)
    regs.add("NMF_R", MemoryWindow(
        depth=params.rows * params.rows, span=MAX_ROWS * MAX_ROWS, access=Access.RW, core=CoreAccess.READ,
        fields={"code": (params.r_bits, "Unsigned entry of R (R_BITS bits); the host scales R into this range.")},
        doc="R (m x n): entry (i, j) at index i * ROWS + j. Each right-hand side gets its own power-of-two "
            "scale on the way to the DACs (docs/anls-sequencer.md)."), offset=0x400000)


class ControllerRegisters(RegisterFile):
    """The anmf register file: the generic register bus in front, and on the core side one port per
    field, the buffers' memory ports, and ``irq`` (any IRQ_STATUS bit enabled in IRQ_ENABLE).

    ``params`` are the shared build parameters (:class:`~.params.BuildParams`, defaults ROWS=64,
    COLS=8, SPARE=2, DAC_BITS=10, ADC_BITS=10); the register map also needs ROWS <= 1024 and
    COLS + SPARE <= 32.
    """

    def __init__(self, params: BuildParams | None = None) -> None:
        self.params = params if params is not None else BuildParams()
        try:
            register_map = build_register_map(self.params)
        except ValueError:
            discard_unbuilt(self)
            raise
        super().__init__(register_map, extra_members={"irq": Out(1)})

    def elaborate(self, platform: Any) -> Module:
        m = super().elaborate(platform)
        causes = ("done", "error", "over_range")
        pending = Cat(getattr(self.irq_status, c) for c in causes)
        enabled = Cat(getattr(self.irq_enable, c) for c in causes)
        irq = (pending & enabled).any()
        if self.params.run_nmf:
            irq |= self.nmf_irq.progress & self.nmf_irq.progress_enable
        if self.params.spare_remap:
            irq |= (self.prog_irq.refresh_due & self.prog_irq.refresh_due_enable) | \
                   (self.prog_irq.remap & self.prog_irq.remap_enable)
        m.d.comb += self.irq.eq(irq)
        return m
