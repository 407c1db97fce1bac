"""Calibration arithmetic: the one integer definition the RTL (hdl/calibrator.py) mirrors, and
a transaction-level golden model of the CALIBRATE sequence.

What is measured (docs/calibration.md has the formats, the cycle formula and the figures):

- ADC, per channel c (physical column, ``adc_mux`` = c in mode CAL): the references
  +1/2 and -1/2 of full scale (``cal_ref_sel`` 1, 2) give offset and gain; then 0, +7/8 and
  -7/8 (sel 0, 3, 4) are read again through the fresh correction, and the worst distance
  from their ideal codes is the quality figure.
- DAC, per row r: the loopback (sel 5, ``cell_row`` = r) read through the corrected ADC of
  the loopback channel (the lowest calibrated column) at the codes zero -/+ 2^(DAC_BITS-2)
  (-/+ 1/2 of full scale) gives the row DAC's offset and gain.
- Op-amp output offset, per column: one zero-input solve (SOLVE_FREE, every calibrated row
  and column switched in, every DAC at the zero code) read through each column's corrected
  ADC.

Fixed point: averaged codes, offsets and deviations carry ``FRAC_BITS`` fractional bits
(units of 2^-FRAC_BITS LSB); gains are unsigned with ``GAIN_FRAC_BITS`` fractional bits.
Every shift right rounds half up (``round_shift``). Everything here is integer arithmetic on
Python ints, so the RTL's fixed widths only have to be wide enough (checked by the tests).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .formats import PICOSECONDS_PER_SECOND, rounded_average, to_picoseconds

if TYPE_CHECKING:  # the RTL imports this module for its constants: no analog model at import
    from .afe import AnalogFrontEnd, BuildParamsLike

__all__ = [
    "FRAC_BITS", "GAIN_FRAC_BITS", "GAIN_BITS", "GAIN_ONE", "QUOTIENT_BITS", "DIVIDE_CYCLES",
    "QUALITY_BITS", "REF_ZERO",
    "REF_PLUS_HALF", "REF_MINUS_HALF", "REF_PLUS_7_8", "REF_MINUS_7_8", "REF_DAC_LOOPBACK",
    "ADC_REFERENCE_ORDER", "CHECK_REFERENCES", "round_shift", "offset_bits", "word_bits",
    "memory_depth", "adc_address", "dac_address", "opamp_address", "averaged_q", "ideal_q",
    "deviation_q", "correct_deviation", "code_from_deviation", "correct_code",
    "two_point_coefficient", "rescale", "loopback_codes", "Coefficient", "IDENTITY",
    "pack_coefficient", "unpack_coefficient", "CalibrationSettings", "CalibrationOutcome",
    "calibration_cycles", "golden_calibration",
]

#: Fractional bits of averaged codes, offsets and deviations (1/16 LSB).
FRAC_BITS = 4
#: Fractional bits of a gain; a gain is GAIN_FRAC_BITS + 1 bits: 0 <= gain < 2.
GAIN_FRAC_BITS = 15
GAIN_BITS = GAIN_FRAC_BITS + 1
#: Gain 1.0.
GAIN_ONE = 1 << GAIN_FRAC_BITS
#: Bits of a gain quotient (one above GAIN_BITS so that an out-of-range gain is visible).
QUOTIENT_BITS = GAIN_FRAC_BITS + 2
#: Cycles of the RTL's restoring divider (one quotient bit per cycle).
DIVIDE_CYCLES = QUOTIENT_BITS
#: Width of the quality figure (2^-FRAC_BITS LSB); it saturates at 2^QUALITY_BITS - 1.
QUALITY_BITS = 16

#: ``cal_ref_sel`` values (model/afe.py CAL_REFERENCES).
REF_ZERO, REF_PLUS_HALF, REF_MINUS_HALF, REF_PLUS_7_8, REF_MINUS_7_8, REF_DAC_LOOPBACK = range(6)
#: Order of the ADC references per channel: the calibrating pair first, then the checks.
ADC_REFERENCE_ORDER = (REF_PLUS_HALF, REF_MINUS_HALF, REF_ZERO, REF_PLUS_7_8, REF_MINUS_7_8)
CHECK_REFERENCES = (REF_ZERO, REF_PLUS_7_8, REF_MINUS_7_8)
#: Ideal deviation from the zero code of each reference in eighths of the positive full scale
#: 2^(bits-1) LSB, i.e. in units of 2^(bits-4) LSB.
_REFERENCE_EIGHTHS = {REF_ZERO: 0, REF_PLUS_HALF: 4, REF_MINUS_HALF: -4, REF_PLUS_7_8: 7,
                      REF_MINUS_7_8: -7}


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low \
            or (high is not None and value > high):
        accepted = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"
        raise ValueError(f"{name} must be {accepted}; got {value!r}")
    return value


def round_shift(value: int, shift: int) -> int:
    """``value / 2**shift`` rounded half up (``(value + 2**(shift-1)) >> shift``, an arithmetic
    shift); ``value`` itself for shift 0 and ``value << -shift`` for a negative shift."""
    if shift <= 0:
        return value << -shift
    return (value + (1 << (shift - 1))) >> shift


# ---- formats and memory layout ---------------------------------------------------------

def offset_bits(adc_bits: int, dac_bits: int) -> int:
    """Width of a signed offset field: +-2^max(bits) LSB with FRAC_BITS fractional bits."""
    return max(_check_int("adc_bits", adc_bits, 2, 24), _check_int("dac_bits", dac_bits, 2, 24)) \
        + FRAC_BITS + 1


def word_bits(adc_bits: int, dac_bits: int) -> int:
    """Width of a calibration memory word: offset, gain, valid (32 for 10-bit converters)."""
    return offset_bits(adc_bits, dac_bits) + GAIN_BITS + 1


def memory_depth(rows: int, total_cols: int) -> int:
    """Words of the calibration memory: ADC channels, DAC rows, op-amp columns."""
    return 2 * total_cols + rows


def adc_address(channel: int, *, rows: int, total_cols: int) -> int:
    return _check_int("channel", channel, 0, total_cols - 1)


def dac_address(row: int, *, rows: int, total_cols: int) -> int:
    return total_cols + _check_int("row", row, 0, rows - 1)


def opamp_address(column: int, *, rows: int, total_cols: int) -> int:
    return total_cols + rows + _check_int("column", column, 0, total_cols - 1)


@dataclass(frozen=True)
class Coefficient:
    """One calibration memory word: ``offset`` (signed, 2^-FRAC_BITS LSB), ``gain``
    (unsigned, GAIN_FRAC_BITS fractional bits; 0 in op-amp words), ``valid``."""

    offset: int
    gain: int
    valid: bool


#: What an entry holds before calibration and after a failed measurement: a correction that
#: changes no code.
IDENTITY = Coefficient(0, GAIN_ONE, False)


def pack_coefficient(coefficient: Coefficient, *, adc_bits: int, dac_bits: int) -> int:
    """Word = offset (two's complement) in bits [OB-1:0], gain in [OB+GAIN_BITS-1:OB], valid
    in bit OB+GAIN_BITS, OB = ``offset_bits`` (``anmf.hdl.calibrator.coefficient_layout``)."""
    ob = offset_bits(adc_bits, dac_bits)
    _check_int("offset", coefficient.offset, -(1 << (ob - 1)), (1 << (ob - 1)) - 1)
    _check_int("gain", coefficient.gain, 0, (1 << GAIN_BITS) - 1)
    return (coefficient.offset & ((1 << ob) - 1)) | coefficient.gain << ob \
        | int(coefficient.valid) << (ob + GAIN_BITS)


def unpack_coefficient(word: int, *, adc_bits: int, dac_bits: int) -> Coefficient:
    """Inverse of :func:`pack_coefficient`."""
    ob = offset_bits(adc_bits, dac_bits)
    word = _check_int("word", word, 0, (1 << (ob + GAIN_BITS + 1)) - 1)
    raw = word & ((1 << ob) - 1)
    offset = raw - (1 << ob) if raw >> (ob - 1) else raw
    return Coefficient(offset, (word >> ob) & ((1 << GAIN_BITS) - 1), bool(word >> (ob + GAIN_BITS)))


# ---- arithmetic ------------------------------------------------------------------------

def averaged_q(total: int, avg_log2: int) -> int:
    """Mean of 2^avg_log2 samples summing to ``total``, with FRAC_BITS fractional bits:
    ``rounded_average(total << FRAC_BITS, avg_log2)`` (exact up to FRAC_BITS samples' worth)."""
    return rounded_average(total << FRAC_BITS, avg_log2)


def ideal_q(reference: int, bits: int) -> int:
    """Ideal deviation of a reference from the zero code (2^-FRAC_BITS LSB)."""
    return _REFERENCE_EIGHTHS[reference] << (bits - 4 + FRAC_BITS)


def deviation_q(value_q: int, bits: int) -> int:
    """A code (2^-FRAC_BITS LSB) as a signed deviation from the zero code 2^(bits-1)."""
    return value_q - (1 << (bits - 1 + FRAC_BITS))


def correct_deviation(deviation: int, coefficient: Coefficient) -> int:
    """``(deviation - offset) * gain`` with the gain's fraction rounded off: the corrected
    deviation (2^-FRAC_BITS LSB). The one multiply of both correction paths."""
    return round_shift((deviation - coefficient.offset) * coefficient.gain, GAIN_FRAC_BITS)


def code_from_deviation(deviation: int, bits: int) -> tuple[int, bool]:
    """The code zero + round(deviation), saturated to 0 .. 2^bits - 1, and whether it was."""
    code = (1 << (bits - 1)) + round_shift(deviation, FRAC_BITS)
    top = (1 << bits) - 1
    return min(max(code, 0), top), not 0 <= code <= top


def correct_code(code: int, coefficient: Coefficient, bits: int,
                 subtract: int = 0) -> tuple[int, bool]:
    """Corrected code and saturation flag of a ``bits``-bit ``code``.

    Readout path: an ADC code with its channel's coefficient, ``subtract`` = the column's
    op-amp offset (or 0). DAC path: the wanted DAC code with its row's coefficient gives the
    code to write. (``anmf.hdl.calibrator.CodeCorrection`` computes the same.)"""
    code = _check_int("code", code, 0, (1 << bits) - 1)
    deviation = (code - (1 << (bits - 1))) << FRAC_BITS
    return code_from_deviation(correct_deviation(deviation, coefficient) - subtract, bits)


def two_point_coefficient(high_q: int, low_q: int, span_log2: int, offset_width: int,
                          over_range: bool = False) -> Coefficient:
    """Offset and gain from the measured deviations of two points whose ideal deviations are
    +-2^(span_log2 - 1) (their ideal distance 2^span_log2 LSB):

        offset = round((high + low) / 2)
        gain   = round(2^(span_log2 + FRAC_BITS + GAIN_FRAC_BITS) / (high - low))

    The entry is :data:`IDENTITY` (not valid) when a sample was over range, when the measured
    distance is at most half the ideal one (gain 2 or more, or a negative slope), when the gain
    is below 1/2, or when the offset does not fit ``offset_width`` signed bits."""
    offset = round_shift(high_q + low_q, 1)
    distance = high_q - low_q
    numerator = 1 << (span_log2 + FRAC_BITS + GAIN_FRAC_BITS)
    if over_range or distance <= numerator >> (GAIN_FRAC_BITS + 1):
        return IDENTITY
    gain = (2 * numerator + distance) // (2 * distance)   # round half up
    limit = 1 << (offset_width - 1)
    if not GAIN_ONE >> 1 <= gain < GAIN_ONE << 1 or not -limit <= offset < limit:
        return IDENTITY
    return Coefficient(offset, gain, True)


def rescale(deviation: int, from_bits: int, to_bits: int) -> int:
    """A deviation in LSB of a ``from_bits`` converter in LSB of a ``to_bits`` one (both over
    the same voltage range), rounded half up."""
    return round_shift(deviation, from_bits - to_bits)


def loopback_codes(dac_bits: int) -> tuple[int, int]:
    """The DAC codes of the loopback: zero - 2^(bits-2) and zero + 2^(bits-2) (-/+ 1/2 FS)."""
    zero, quarter = 1 << (dac_bits - 1), 1 << (dac_bits - 2)
    return zero - quarter, zero + quarter


# ---- transaction-level golden model ----------------------------------------------------

@dataclass(frozen=True)
class CalibrationSettings:
    """Operands of CALIBRATE (the Calibrator's ports; all times in cycles).

    ``col_mask``: ADC channels / op-amp columns calibrated; ``row_mask``: DAC rows (and the
    rows switched in for the zero-input solve); ``avg_log2``: 2^avg_log2 samples per point;
    ``cal_settle``: cycles from a reference (or loopback row) change to the first conversion;
    ``dac_settle``: cycles from ``dac_ldac`` to the next step; ``analog_settle``: cycles from
    the loop closing to the first op-amp conversion."""

    col_mask: int
    row_mask: int
    avg_log2: int = 0
    cal_settle: int = 1
    dac_settle: int = 1
    analog_settle: int = 1


def _bits_of(mask: int) -> list[int]:
    return [i for i in range(mask.bit_length()) if mask >> i & 1]


def calibration_cycles(*, channels: int, rows: int, avg_log2: int, cal_settle: int,
                       dac_settle: int, analog_settle: int, adc_cycles: int) -> int:
    """Cycles from ``start`` to ``done`` of a completed CALIBRATE (docs/calibration.md):

        T = 1 + C (5 P + DIVIDE_CYCLES + 8) + N (2 (P + 4 + t_dac) + DIVIDE_CYCLES + 4)
              + t_dac + 1 + t_an + C (2^a (t_adc + 1) + 3)

    with P = 1 + t_cal + 2^a (t_adc + 1), the cycles of one measured point."""
    for name, value, low in (("channels", channels, 1), ("rows", rows, 1),
                             ("avg_log2", avg_log2, 0), ("cal_settle", cal_settle, 0),
                             ("dac_settle", dac_settle, 0), ("analog_settle", analog_settle, 0),
                             ("adc_cycles", adc_cycles, 2)):
        _check_int(name, value, low)
    conversions = (1 << avg_log2) * (adc_cycles + 1)
    point = 1 + cal_settle + conversions
    return (1 + channels * (5 * point + DIVIDE_CYCLES + 8)
            + rows * (2 * (point + 4 + dac_settle) + DIVIDE_CYCLES + 4)
            + dac_settle + 1 + analog_settle + channels * (conversions + 3))


@dataclass
class CalibrationOutcome:
    """What CALIBRATE left: the memory words by address, the quality figures, the done cycle."""

    words: dict[int, int]
    #: Worst |corrected - ideal| of the check references over all channels (2^-FRAC_BITS LSB).
    quality: int
    #: Entries stored as IDENTITY because their measurement failed.
    failed_count: int
    done_cycle: int
    #: Decoded entries: ("adc", c), ("dac", r), ("opamp", c) -> Coefficient.
    entries: dict[tuple[str, int], Coefficient] = field(default_factory=dict)


def golden_calibration(params: "BuildParamsLike", afe: "AnalogFrontEnd",
                       settings: CalibrationSettings, *,
                       start_s: float = 0.0) -> CalibrationOutcome:
    """CALIBRATE as the Calibrator runs it, driving ``afe`` at the cycles the RTL would (start
    in the cycle at ``start_s``). With a deterministic AFE the words and the done cycle equal
    the RTL's bit for bit (tests/test_calibrator.py)."""
    from .afe import AnalogFrontEnd, Mode
    if not isinstance(afe, AnalogFrontEnd):
        raise ValueError(f"afe must be an AnalogFrontEnd; got {type(afe).__name__}")
    if not isinstance(settings, CalibrationSettings):
        raise ValueError(f"settings must be a CalibrationSettings; got "
                         f"{type(settings).__name__}")
    rows, total_cols = params.rows, params.cols + params.spare
    adc_bits, dac_bits = params.adc_bits, params.dac_bits
    if (afe.rows, afe.total_cols, afe.adc_bits, afe.dac_bits) != \
            (rows, total_cols, adc_bits, dac_bits):
        raise ValueError("the AFE's size and converter widths differ from params; build it with "
                         "AnalogFrontEnd.from_build_params")
    _check_int("col_mask", settings.col_mask, 1, (1 << total_cols) - 1)
    _check_int("row_mask", settings.row_mask, 1, (1 << rows) - 1)
    a = settings.avg_log2
    ob = offset_bits(adc_bits, dac_bits)
    start_ps = to_picoseconds(start_s, "start_s")
    period = afe.period_ps
    t_adc = afe.adc_cycles
    dac_zero = 1 << (dac_bits - 1)
    controls = dict(mode=int(Mode.IDLE), loop=0, row_en=0, col_en=0, cell_row=0, cell_col=0,
                    cal_ref_sel=0)
    mux = 0

    def at(cycle: int) -> float:
        return (start_ps + cycle * period) / PICOSECONDS_PER_SECOND

    def drive(cycle: int, **changes: int) -> None:
        controls.update(changes)
        afe.apply_controls(at(cycle), **controls)

    def convert_point(first: int) -> tuple[int, bool, int]:
        """2^a conversions from cycle ``first``: (mean_q, any over-range, next cycle)."""
        total, over = 0, False
        for sample in range(1 << a):
            code, flag = afe.convert(mux, at(first + sample * (t_adc + 1)))
            total += code
            over |= flag
        return averaged_q(total, a), over, first + (1 << a) * (t_adc + 1)

    def measure(setup: int, **changes: int) -> tuple[int, bool, int]:
        drive(setup + 1, **changes)   # controls set in the setup cycle show from the next
        return convert_point(setup + 1 + settings.cal_settle)

    words: dict[int, int] = {}
    entries: dict[tuple[str, int], Coefficient] = {}

    def store(kind: str, index: int, address: int, coefficient: Coefficient) -> None:
        entries[(kind, index)] = coefficient
        words[address] = pack_coefficient(coefficient, adc_bits=adc_bits, dac_bits=dac_bits)

    channels = _bits_of(settings.col_mask)
    row_list = _bits_of(settings.row_mask)
    adc_coefficients: dict[int, Coefficient] = {}
    quality = 0
    cycle = 1
    for channel in channels:
        mux = channel
        high, over_high, cycle = measure(cycle, mode=int(Mode.CAL), cal_ref_sel=REF_PLUS_HALF)
        low, over_low, cycle = measure(cycle, cal_ref_sel=REF_MINUS_HALF)
        coefficient = two_point_coefficient(deviation_q(high, adc_bits),
                                            deviation_q(low, adc_bits), adc_bits - 1, ob,
                                            over_high or over_low)
        cycle += 1 + DIVIDE_CYCLES + 1   # offset, divide, store
        adc_coefficients[channel] = coefficient
        store("adc", channel, adc_address(channel, rows=rows, total_cols=total_cols),
              coefficient)
        for reference in CHECK_REFERENCES:
            value, _, cycle = measure(cycle, cal_ref_sel=reference)
            corrected = correct_deviation(deviation_q(value, adc_bits), coefficient)
            quality = max(quality, abs(corrected - ideal_q(reference, adc_bits)))
            cycle += 2   # correct (the registered multiply), check
    loopback = adc_coefficients[channels[0]]
    mux = channels[0]
    for row in row_list:
        measured = []
        for code in loopback_codes(dac_bits):
            afe.write_dac(row, code)               # Write
            afe.load_dacs(at(cycle + 1))           # LDAC
            value, over, cycle = measure(cycle + 2 + settings.dac_settle,
                                         cal_ref_sel=REF_DAC_LOOPBACK, cell_row=row)
            corrected = correct_deviation(deviation_q(value, adc_bits), loopback)
            measured.append((rescale(corrected, adc_bits, dac_bits), over))
            cycle += 2   # correct (the registered multiply), loopback point
        afe.write_dac(row, dac_zero)               # Write-Zero
        afe.load_dacs(at(cycle + 1))               # Zero-LDAC
        (low, over_low), (high, over_high) = measured
        coefficient = two_point_coefficient(high, low, dac_bits - 1, ob, over_low or over_high)
        cycle += 2 + 1 + DIVIDE_CYCLES + 1         # write, ldac, offset, divide, store
        store("dac", row, dac_address(row, rows=rows, total_cols=total_cols), coefficient)
    # Op-amp offsets: the last store cycle opens everything; the DACs settle at zero.
    drive(cycle, mode=int(Mode.IDLE), loop=0, row_en=0, col_en=0, cell_row=0, cal_ref_sel=0)
    cycle += settings.dac_settle
    drive(cycle + 1, mode=int(Mode.SOLVE_FREE), loop=1, row_en=settings.row_mask,
          col_en=settings.col_mask)                # Close
    cycle += 1 + settings.analog_settle
    for channel in channels:
        mux = channel
        value, over, cycle = convert_point(cycle + 1)   # after the Fetch cycle
        offset = correct_deviation(deviation_q(value, adc_bits), adc_coefficients[channel])
        limit = 1 << (ob - 1)
        valid = not over and -limit <= offset < limit
        coefficient = Coefficient(offset, 0, True) if valid else Coefficient(0, 0, False)
        store("opamp", channel, opamp_address(channel, rows=rows, total_cols=total_cols),
              coefficient)
        cycle += 2   # correct (the registered multiply), store
    drive(cycle, mode=int(Mode.IDLE), loop=0, row_en=0, col_en=0)   # Done: released
    failed = sum(not c.valid for c in entries.values())
    return CalibrationOutcome(words, min(quality, (1 << QUALITY_BITS) - 1), failed, cycle,
                              entries)
