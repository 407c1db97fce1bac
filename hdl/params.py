"""Build parameters of the controller RTL: the one structure every hdl block is built from.

All widths are in bits and all times in clock cycles. Every field is validated at
construction with an exact message; derived widths are properties so that blocks never
recompute them differently.
"""
from __future__ import annotations

from dataclasses import dataclass

from amaranth.utils import bits_for, ceil_log2

__all__ = ["BuildParams", "MAX_RANGE_RETRIES"]


# (field, lowest accepted, highest accepted). At least 2 rows and 2 columns keep every index
# at least one bit wide (and a 1-row NNLS is no use); the upper bounds keep the derived
# vectors (row_en, cell addresses, accumulators) at sizes a small FPGA can hold.
_INT_FIELDS: tuple[tuple[str, int, int], ...] = (
    ("rows", 2, 1024),
    ("cols", 2, 64),
    ("spare", 0, 16),
    ("dac_bits", 1, 24),
    ("adc_bits", 1, 24),
    ("avg_max_log2", 0, 16),
    ("timer_bits", 2, 32),
    ("prog_amp_bits", 1, 16),
    ("prog_width_bits", 1, 16),
    ("pulse_budget_bits", 1, 16),
    ("cal_ref_bits", 1, 8),
    ("r_bits", 1, 32),
    ("exp_bits", 4, 16),
    ("counter_bits", 8, 32),
)

#: RUN_NMF's over-range retries per right-hand side are a 4-bit register field: at most 15.
MAX_RANGE_RETRIES = 15


@dataclass(frozen=True)
class BuildParams:
    """Build-time parameters shared by all hdl blocks.

    rows, cols, spare
        Crossbar rows (one DAC each), solution columns, and spare columns for repair.
        The AFE has ``cols + spare`` physical columns (``total_cols``).
    dac_bits, adc_bits
        Converter resolutions. Codes are offset binary over a bipolar range: code
        ``2**(bits-1)`` is 0 V (``dac_zero_code``), 0 the most negative and ``2**bits - 1``
        the most positive voltage (the analog model's converters: -1 V to +1 V,
        lsb = 2 V / 2**bits).
    avg_max_log2
        Largest ADC averaging exponent: up to ``2**avg_max_log2`` samples per result.
    timer_bits
        Width of every cycle-count input (settle times, read settle, watchdog limit).
    prog_amp_bits, prog_width_bits
        Width of the programming pulse amplitude code and pulse width.
    pulse_budget_bits
        Width of the per-cell pulse budget of the write-verify programmer.
    cal_ref_bits
        Width of the calibration reference selector.
    r_bits
        Width of an entry of R in RUN_NMF's R buffer (unsigned; docs/anls-sequencer.md).
    exp_bits
        Width of a RUN_NMF factor exponent (two's complement). It must hold the largest
        right-hand side exponent, ``r_bits - 1 + MAX_RANGE_RETRIES``.
    counter_bits
        Width of the event counters (SOLVE_COUNT, PULSE_COUNT, ...; they saturate at
        ``2**counter_bits - 1``). Narrower counters make a smaller build.
    run_nmf
        Build RUN_NMF: the ANLS sequencer and its registers and buffers (NMF_*). Without it
        the register map has no NMF_* entries, RUN_NMF is refused as UNKNOWN_OPCODE, and the
        host runs ANLS itself with SOLVE and PROGRAM_MATRIX (a smaller build: the iCE40's).
    calibration
        Build CALIBRATE: the calibrator, the calibration memory (CAL_COEFF) and the
        corrections in the solve path (docs/calibration.md). Without it the register map has
        no CAL_* entries and CALIBRATE is refused as UNKNOWN_OPCODE.
    refinement
        Build REFINE: the Refiner (iterative refinement, docs/refinement.md) and its
        registers and windows (REFINE_*). Without it REFINE is refused as UNKNOWN_OPCODE and
        the register map has no REFINE_* entries.
    spare_remap
        Build REFRESH and the transparent spare-column remap (hdl/column_remap.py, its
        REMAP_* / REFRESH_* registers and the REMAP_MAP window). Without it REFRESH is refused
        as UNKNOWN_OPCODE, the registers answer SLVERR and columns are never translated.
    """

    rows: int = 64
    cols: int = 8
    spare: int = 2
    dac_bits: int = 10
    adc_bits: int = 10
    avg_max_log2: int = 8
    timer_bits: int = 16
    prog_amp_bits: int = 8
    prog_width_bits: int = 8
    pulse_budget_bits: int = 8
    cal_ref_bits: int = 3
    r_bits: int = 16
    exp_bits: int = 8
    counter_bits: int = 32
    run_nmf: bool = True
    calibration: bool = True
    refinement: bool = True
    spare_remap: bool = True

    def __post_init__(self) -> None:
        for flag in ("run_nmf", "calibration", "refinement", "spare_remap"):
            value = getattr(self, flag)
            if value not in (True, False) or type(value) not in (bool, int):
                raise ValueError(f"{flag} must be True or False (or 1 or 0), got {value!r}")
            object.__setattr__(self, flag, bool(value))
        for name, low, high in _INT_FIELDS:
            value = getattr(self, name)
            if type(value) is not int or not low <= value <= high:
                raise ValueError(
                    f"{name} must be an integer from {low} to {high}, got {value!r}")
        if self.rhs_exp_max > 2 ** (self.exp_bits - 1) - 1:
            raise ValueError(
                f"exp_bits = {self.exp_bits} cannot hold the largest right-hand side exponent "
                f"r_bits - 1 + {MAX_RANGE_RETRIES} = {self.rhs_exp_max}; use at least "
                f"{(self.rhs_exp_max + 1).bit_length() + 1} bits")

    # -- derived sizes -------------------------------------------------------------------

    @property
    def total_cols(self) -> int:
        """Physical AFE columns: solution columns plus spares."""
        return self.cols + self.spare

    @property
    def dac_zero_code(self) -> int:
        """DAC code of 0 V (offset binary): what every block leaves in the DACs, the safe state."""
        return 1 << (self.dac_bits - 1)

    @property
    def row_addr_bits(self) -> int:
        """Width of a row index (dac_addr, cell_row); also the rhs buffer's address width."""
        return ceil_log2(self.rows)

    @property
    def col_addr_bits(self) -> int:
        """Width of a physical column index (adc_mux, cell_col, result buffer address)."""
        return ceil_log2(self.total_cols)

    @property
    def cell_count(self) -> int:
        """Cells of the array: rows x total_cols."""
        return self.rows * self.total_cols

    @property
    def cell_addr_bits(self) -> int:
        """Width of a cell address ``row * total_cols + col`` (target buffer, fault map)."""
        return ceil_log2(self.cell_count)

    @property
    def avg_log2_bits(self) -> int:
        """Width of the averaging exponent input; values above avg_max_log2 are rejected."""
        return bits_for(self.avg_max_log2)

    @property
    def sum_bits(self) -> int:
        """Width of the sample accumulator: 2**avg_max_log2 full-scale samples fit."""
        return self.adc_bits + self.avg_max_log2

    @property
    def result_bits(self) -> int:
        """Width of a stored result word: the ADC code plus the over-range flag."""
        return self.adc_bits + 1

    @property
    def tolerance_bits(self) -> int:
        """Width of the write-verify tolerance input: one bit wider than a code, so that a
        tolerance of a full code range or more arrives intact and can be rejected."""
        return self.adc_bits + 1

    @property
    def max_timer(self) -> int:
        """Largest value of a cycle-count input."""
        return 2 ** self.timer_bits - 1

    @property
    def mantissa_bits(self) -> int:
        """Width of a RUN_NMF factor mantissa: an ADC code above the zero code."""
        return self.adc_bits - 1

    @property
    def rhs_exp_max(self) -> int:
        """Largest RUN_NMF right-hand side exponent: the leading one of an r_bits entry plus
        every over-range retry."""
        return self.r_bits - 1 + MAX_RANGE_RETRIES

    def cell_address(self, row: int, col: int) -> int:
        """Row-major cell address used by the target buffer and the fault map."""
        if not 0 <= row < self.rows:
            raise ValueError(f"row must be from 0 to {self.rows - 1}, got {row!r}")
        if not 0 <= col < self.total_cols:
            raise ValueError(f"col must be from 0 to {self.total_cols - 1}, got {col!r}")
        return row * self.total_cols + col
