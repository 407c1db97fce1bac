"""Command opcodes and error codes: the one definition shared by the RTL, the register docs,
the host driver and the golden model."""
from __future__ import annotations

from amaranth.lib import enum

__all__ = ["Opcode", "ErrorCode"]


class Opcode(enum.Enum, shape=8):
    """Value written to the COMMAND register's opcode field; executed on CONTROL.start."""

    NOP = 0             #: does nothing; completes at once (a bus-side liveness check)
    SOLVE = 1           #: closed-loop NNLS solve, outputs clamped (x >= 0)
    SOLVE_FREE = 2      #: closed-loop unconstrained least-squares solve (refinement)
    MVM = 3             #: open-loop matrix-vector product
    READ_CELL = 4       #: read one cell's conductance through the ADC
    PROGRAM_CELL = 5    #: write-verify one cell to its target code
    PROGRAM_MATRIX = 6  #: write-verify every enabled cell from the target buffer
    RUN_NMF = 7         #: NMF_ITERATIONS rounds of ANLS on the NMF buffers (docs/anls-sequencer.md)
    CALIBRATE = 8       #: measure ADC/DAC offset and gain, op-amp offsets into CAL_COEFF (docs/calibration.md)
    REFINE = 9          #: iterative refinement of an NNLS solve on REFINE_A/B into REFINE_X (docs/refinement.md)
    REFRESH = 10        #: re-verify every enabled cell against TARGET, re-program the drifted ones


class ErrorCode(enum.Enum, shape=8):
    """STATUS.error; STATUS.error_detail gives the field or channel concerned."""

    NONE = 0
    UNKNOWN_OPCODE = 1   #: opcode not in Opcode
    BUSY = 2             #: start while a command runs (the running command goes on)
    BAD_DIMENSION = 3    #: rows/cols/cell index beyond the build parameters, or none enabled
    BAD_AVERAGING = 4    #: ADC averaging count zero, not a power of two, or above 2**AVG_MAX_LOG2
    BAD_TOLERANCE = 5    #: write-verify tolerance zero or beyond the code range
    BAD_TIMING = 6       #: a timing register zero where a non-zero value is required
    ADC_TIMEOUT = 7      #: the ADC stayed busy past the watchdog limit
    PROGRAM_TIMEOUT = 8  #: a programming pulse got no done past the watchdog limit
    ABORTED = 9          #: CONTROL.abort stopped the command
    CELLS_FAILED = 10    #: write-verify left cells out of tolerance (see fault map, counters)
    EXPONENT_RANGE = 11  #: RUN_NMF: a factor exponent would leave the EXP_BITS range (nothing committed)
    BAD_WINDOW = 12      #: RUN_NMF: NMF_WINDOW_SPAN 0 or the window beyond the ADC code range
    CAL_FAILED = 13      #: CALIBRATE stored identity for entries it could not measure (detail: how many)
