"""Number formats and cycle formulas of the controller, written down once.

The golden model (model/golden.py), the code-level AFE model (model/afe.py), the cocotb
binding and the host all convert through these functions; docs/number-formats.md
documents them. The RTL implements the same arithmetic (hdl/solve_sequencer.py,
hdl/programmer.py); tests/test_golden.py checks that the cycle formulas here agree with
``anmf.hdl.solve_sequencer.solve_cycles`` (model/ does not import hdl/).

- Converter codes are offset binary over a bipolar range [v_min, v_max): with B bits,
  ``lsb = (v_max - v_min) / 2**B`` and code c stands for ``v_min + c * lsb``; code
  ``2**(B-1)`` is 0 V for a symmetric range.
- A result word is ``code | over_range << adc_bits``.
- An averaged reading of 2**a samples is ``(sum + 2**(a-1)) >> a`` (round half up), the sum
  itself for a = 0.
- Conductances travel as READ_CELL ADC codes of a read chain with full scale
  ``full_scale_s``: ``g -> g / full_scale_s * v_max`` volts, then the ADC's ideal code.
- Programming amplitudes and widths are unsigned codes times an LSB (volts, seconds).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "zero_code", "code_to_volts", "volts_to_code", "rounded_average", "pack_result",
    "unpack_result", "solve_cycles", "read_cycles", "cell_cycles", "conductance_to_code",
    "code_to_conductance", "tolerance_to_codes", "quantity_to_code", "ProgramSettings",
    "PICOSECONDS_PER_SECOND", "to_picoseconds",
    # RUN_NMF (docs/anls-sequencer.md)
    "MASK_WORD_BITS", "leading_one", "rhs_shift", "rhs_dac_codes", "result_mantissa",
    "factor_peaks", "factor_targets", "next_component_exponent", "window_codes",
    "exponent_word", "word_exponent", "fixed_from_factor", "factor_from_fixed", "r_codes",
    "mask_words", "mask_from_words", "nmf_product_scale", "nmf_prepare_cycles",
    "nmf_scan_cycles", "nmf_commit_cycles",
]

#: Time resolution of the AFE model and the golden model: times are integer picoseconds,
#: so that the cocotb binding (simulator steps) and the golden model (cycle counts)
#: present exactly the same time differences to the analog model.
PICOSECONDS_PER_SECOND = 10 ** 12


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low \
            or (high is not None and value > high):
        accepted = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"
        raise ValueError(f"{name} must be {accepted}; got {value!r}")
    return int(value)


def _check_range(v_min_v: float, v_max_v: float) -> None:
    if not (math.isfinite(v_min_v) and math.isfinite(v_max_v) and v_min_v < v_max_v):
        raise ValueError(f"the converter range needs finite v_min_v < v_max_v; got "
                         f"{v_min_v!r} and {v_max_v!r}")


def to_picoseconds(t_s: float, name: str = "t_s") -> int:
    """A time in seconds as integer picoseconds (rounded); must be finite and >= 0."""
    if isinstance(t_s, bool) or not isinstance(t_s, (int, float, np.integer, np.floating)) \
            or not math.isfinite(t_s) or t_s < 0:
        raise ValueError(f"{name} must be a finite time >= 0 (s); got {t_s!r}")
    return int(round(float(t_s) * PICOSECONDS_PER_SECOND))


# --------------------------------------------------------------------------------------
# Offset-binary converter codes


def zero_code(bits: int) -> int:
    """The code of 0 V in offset binary over a symmetric range: 2**(bits-1)."""
    return 1 << (_check_int("bits", bits, 1, 64) - 1)


def code_to_volts(code: ArrayLike, bits: int, v_min_v: float = -1.0,
                  v_max_v: float = 1.0) -> Any:
    """Nominal voltage of offset-binary ``code`` (scalar or array): v_min + code * lsb."""
    bits = _check_int("bits", bits, 1, 64)
    _check_range(v_min_v, v_max_v)
    codes = np.asarray(code)
    if codes.dtype.kind not in "iu" or (codes.size and (codes.min() < 0
                                                        or codes.max() > 2 ** bits - 1)):
        raise ValueError(f"code must be integers from 0 to {2 ** bits - 1}; got {code!r}")
    volts = v_min_v + codes * ((v_max_v - v_min_v) / 2 ** bits)
    return float(volts) if volts.ndim == 0 else volts


def volts_to_code(volts: ArrayLike, bits: int, v_min_v: float = -1.0,
                  v_max_v: float = 1.0) -> Any:
    """Nearest offset-binary code of ``volts`` (ideal converter), clipped to 0..2**bits-1."""
    bits = _check_int("bits", bits, 1, 64)
    _check_range(v_min_v, v_max_v)
    v = np.asarray(volts, dtype=np.float64)
    if not np.all(np.isfinite(v)):
        raise ValueError(f"volts must be finite; got {volts!r}")
    codes = np.clip(np.rint((v - v_min_v) / ((v_max_v - v_min_v) / 2 ** bits)), 0,
                    2 ** bits - 1).astype(np.int64)
    return int(codes) if codes.ndim == 0 else codes


# --------------------------------------------------------------------------------------
# Averaging and result words


def rounded_average(total: int, avg_log2: int) -> int:
    """``(total + 2**(avg_log2-1)) >> avg_log2`` (round half up); ``total`` for avg_log2 = 0.
    The solve sequencer and the programmer average 2**avg_log2 ADC samples this way."""
    total = _check_int("total", total, 0)
    avg_log2 = _check_int("avg_log2", avg_log2, 0)
    return (total + ((1 << avg_log2) >> 1)) >> avg_log2


def pack_result(code: int, over_range: bool | int, adc_bits: int) -> int:
    """A stored result word: ``code`` in bits [adc_bits-1:0], ``over_range`` in bit adc_bits
    (``anmf.hdl.solve_sequencer.result_layout``)."""
    adc_bits = _check_int("adc_bits", adc_bits, 1, 64)
    code = _check_int("code", code, 0, 2 ** adc_bits - 1)
    if over_range not in (0, 1):  # also accepts False/True
        raise ValueError(f"over_range must be 0 or 1; got {over_range!r}")
    return code | int(over_range) << adc_bits


def unpack_result(word: int, adc_bits: int) -> tuple[int, bool]:
    """(code, over_range) of a result word (inverse of :func:`pack_result`)."""
    adc_bits = _check_int("adc_bits", adc_bits, 1, 64)
    word = _check_int("word", word, 0, 2 ** (adc_bits + 1) - 1)
    return word & (2 ** adc_bits - 1), bool(word >> adc_bits)


# --------------------------------------------------------------------------------------
# Cycle formulas (docs/solve-timing.md)


def solve_cycles(*, rows: int, cols: int, avg_log2: int, dac_settle: int,
                 analog_settle: int, adc_cycles: int) -> int:
    """Cycles from a solve's ``start`` cycle to its ``done`` cycle:
    ``2 N + 4 + t_dac + t_an + C 2**a (t_adc + 1)``. ``rows``/``cols`` count the enabled
    rows and columns; ``adc_cycles`` is t_adc, the AFE's latency plus busy time."""
    for name, value, low in (("rows", rows, 1), ("cols", cols, 1), ("avg_log2", avg_log2, 0),
                             ("dac_settle", dac_settle, 0), ("analog_settle", analog_settle, 0),
                             ("adc_cycles", adc_cycles, 2)):
        _check_int(name, value, low)
    return 2 * rows + 4 + dac_settle + analog_settle + cols * 2 ** avg_log2 * (adc_cycles + 1)


def read_cycles(*, read_settle: int, avg_log2: int, adc_cycles: int) -> int:
    """Cycles of one programmer verify read: ``read_settle + 2**a (t_adc + 1) + 2``
    (settle, conversions, Average, Compare)."""
    _check_int("read_settle", read_settle, 0)
    _check_int("avg_log2", avg_log2, 0)
    _check_int("adc_cycles", adc_cycles, 2)
    return read_settle + 2 ** avg_log2 * (adc_cycles + 1) + 2


def cell_cycles(*, pulses: int, read_settle: int, avg_log2: int, adc_cycles: int,
                pulse_cycles: int) -> int:
    """Cycles the programmer spends on a cell that gets ``pulses`` pulses:
    ``3 + (p + 1) R + p (1 + t_prog)`` (Next-Cell, Fetch-Target, Record; reads; pulses)."""
    _check_int("pulses", pulses, 0)
    _check_int("pulse_cycles", pulse_cycles, 1)
    read = read_cycles(read_settle=read_settle, avg_log2=avg_log2, adc_cycles=adc_cycles)
    return 3 + (pulses + 1) * read + pulses * (1 + pulse_cycles)


# --------------------------------------------------------------------------------------
# Conductance, tolerance, amplitude and width codes


def _check_full_scale(full_scale_s: float) -> None:
    if isinstance(full_scale_s, bool) or not isinstance(full_scale_s, (int, float)) \
            or not math.isfinite(full_scale_s) or full_scale_s <= 0:
        raise ValueError(f"full_scale_s must be a finite conductance > 0 (S); got "
                         f"{full_scale_s!r}")


def conductance_to_code(g_s: ArrayLike, *, full_scale_s: float, bits: int,
                        v_min_v: float = -1.0, v_max_v: float = 1.0) -> Any:
    """READ_CELL code of conductance ``g_s`` through an ideal read chain: the read
    transimpedance maps ``full_scale_s`` to ``v_max_v`` (0 S to 0 V, the mid code), then
    the ADC's ideal code. Target codes of the write-verify programmer are such codes."""
    _check_full_scale(full_scale_s)
    g = np.asarray(g_s, dtype=np.float64)
    if not np.all(np.isfinite(g)) or np.any(g < 0):
        raise ValueError(f"g_s must be finite conductances >= 0 (S); got {g_s!r}")
    return volts_to_code(g / full_scale_s * v_max_v, bits, v_min_v, v_max_v)


def code_to_conductance(code: ArrayLike, *, full_scale_s: float, bits: int,
                        v_min_v: float = -1.0, v_max_v: float = 1.0) -> Any:
    """Conductance (S) a READ_CELL code stands for (inverse of :func:`conductance_to_code`;
    codes below 0 V give negative values, which a host clips)."""
    _check_full_scale(full_scale_s)
    return code_to_volts(code, bits, v_min_v, v_max_v) / v_max_v * full_scale_s


def tolerance_to_codes(tolerance_s: float, *, full_scale_s: float, bits: int,
                       v_min_v: float = -1.0, v_max_v: float = 1.0) -> int:
    """A write-verify tolerance (S) in READ_CELL code steps, rounded, at least 1."""
    _check_full_scale(full_scale_s)
    if isinstance(tolerance_s, bool) or not isinstance(tolerance_s, (int, float)) \
            or not math.isfinite(tolerance_s) or tolerance_s <= 0:
        raise ValueError(f"tolerance_s must be a finite conductance > 0 (S); got "
                         f"{tolerance_s!r}")
    bits = _check_int("bits", bits, 1, 64)
    siemens_per_code = (v_max_v - v_min_v) / 2 ** bits / v_max_v * full_scale_s
    return max(1, int(round(tolerance_s / siemens_per_code)))


def quantity_to_code(value: float, *, lsb: float, bits: int, name: str) -> int:
    """``round(value / lsb)`` as an unsigned ``bits``-bit code (programming amplitude in
    volts or width in seconds); a value beyond the code range is an error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")
    code = int(round(value / lsb))
    top = 2 ** _check_int("bits", bits, 1, 64) - 1
    if code > top:
        raise ValueError(f"{name} = {value!r} needs code {code}, beyond the {bits}-bit "
                         f"maximum {top} (LSB {lsb!r})")
    return code


@dataclass(frozen=True)
class ProgramSettings:
    """The write-verify programmer's operands, in codes and cycles (what the host writes
    into PROGRAM_TOLERANCE, PROGRAM_PULSES, PROGRAM_AMPLITUDE(_MAX), PROGRAM_PULSE,
    TIMING and READ_SETTLE)."""

    tolerance: int       #: accept |read code - target code| <= tolerance
    amp_start: int       #: amplitude code of a ramp's first pulse
    amp_step: int        #: amplitude code increment between pulses of one polarity
    amp_max: int         #: amplitude code ceiling
    pulse_width: int     #: width code of every pulse
    pulse_budget: int    #: pulses per cell before it fails
    avg_log2: int        #: 2**avg_log2 ADC samples per verify read
    read_settle: int     #: cycles between selecting a cell and its first conversion

    def __post_init__(self) -> None:
        for name in ("tolerance", "amp_start", "amp_step", "amp_max", "pulse_width",
                     "pulse_budget", "avg_log2", "read_settle"):
            _check_int(f"ProgramSettings.{name}", getattr(self, name), 0)


# --------------------------------------------------------------------------------------
# RUN_NMF: the factors, R and the mask (docs/anls-sequencer.md). Everything is integer so
# that the ANLS sequencer (hdl/anls_sequencer.py) and the golden model agree bit for bit.

#: Bits per MASK word: entry (i, j) of R is bit (i * rows + j) % 32 of word (i * rows + j) // 32.
MASK_WORD_BITS = 32


def _int_array(name: str, values: ArrayLike, low: int | None = 0) -> NDArray[np.int64]:
    array = np.asarray(values)
    if array.dtype.kind not in "iu" or (low is not None and array.size and array.min() < low):
        accepted = "integers" if low is None else f"integers >= {low}"
        raise ValueError(f"{name} must be {accepted}; got {values!r}")
    return array.astype(np.int64)


def _shift_right(values: NDArray[np.int64], shift: NDArray[np.int64]) -> NDArray[np.int64]:
    """``values >> shift`` for non-negative shifts of any size (numpy's is undefined past 63)."""
    return np.where(shift >= 63, 0, values >> np.minimum(shift, 62))


def leading_one(values: ArrayLike) -> Any:
    """Index of the highest set bit of each non-negative integer (-1 for 0): the RTL's
    leading-one detector. Exact below 2**53."""
    array = _int_array("values", values)
    if array.size and array.max() >= 2 ** 53:
        raise ValueError(f"values must be below 2**53; got {values!r}")
    result = np.frexp(array.astype(np.float64))[1].astype(np.int64) - 1
    result = np.where(array == 0, -1, result)
    return int(result) if result.ndim == 0 else result


def rhs_shift(peak: int, retries: int = 0) -> int:
    """The right-hand side exponent p of a column (or row) of R whose largest observed entry
    is ``peak`` (> 0): the leading one of the peak, plus one per over-range retry."""
    peak = _check_int("peak", peak, 1)
    return leading_one(peak) + _check_int("retries", retries, 0)


def rhs_dac_codes(entries: ArrayLike, shift: int, dac_bits: int) -> Any:
    """DAC codes of R entries at right-hand side exponent ``shift``:
    ``zero_code + ((r << (dac_bits - 2)) >> shift)`` (offset binary, 0 V and up). With
    ``shift >= leading_one(max(entries))`` every code stays below ``2**dac_bits``."""
    dac_bits = _check_int("dac_bits", dac_bits, 2, 24)
    shift = _check_int("shift", shift, 0)
    r = _int_array("entries", entries)
    if r.size and r.max() >= 2 ** 40:
        raise ValueError(f"entries must be below 2**40; got {entries!r}")
    magnitude = _shift_right(r << (dac_bits - 2), np.full(r.shape, shift, dtype=np.int64))
    if magnitude.size and magnitude.max() >= 2 ** (dac_bits - 1):
        raise ValueError(f"shift {shift} is below the leading one of the largest entry "
                         f"({leading_one(int(r.max()))}): the codes would leave the DAC range")
    codes = zero_code(dac_bits) + magnitude
    return int(codes) if codes.ndim == 0 else codes


def result_mantissa(codes: ArrayLike, adc_bits: int) -> Any:
    """A factor entry's mantissa from a clamped solve's ADC code: code minus the zero code,
    floored at 0 (the diode lets an output sit slightly below 0 V). adc_bits - 1 bits."""
    adc_bits = _check_int("adc_bits", adc_bits, 2, 24)
    c = _int_array("codes", codes)
    if c.size and c.max() >= 2 ** adc_bits:
        raise ValueError(f"codes must be below 2**{adc_bits}; got {codes!r}")
    mantissa = np.maximum(c - zero_code(adc_bits), 0)
    return int(mantissa) if mantissa.ndim == 0 else mantissa


def _check_factor(mantissa: ArrayLike, row_exp: ArrayLike) -> tuple[NDArray[np.int64],
                                                                     NDArray[np.int64]]:
    mant = _int_array("mantissa", mantissa)
    rho = _int_array("row_exp", row_exp, low=None)
    if mant.ndim != 2 or rho.shape != (mant.shape[0],):
        raise ValueError(f"mantissa must be (rows, k) and row_exp (rows,); got shapes "
                         f"{mant.shape} and {rho.shape}")
    return mant, rho


def factor_peaks(mantissa: ArrayLike, row_exp: ArrayLike) -> tuple[NDArray[np.int64],
                                                                    NDArray[np.bool_]]:
    """Per column c of a stored factor ``F[i, c] = mantissa[i, c] 2**(row_exp[i] + col_exp[c])``:
    ``msb[c] = max over nonzero entries of leading_one(mantissa[i, c]) + row_exp[i]`` (the
    column maximum's leading one, up to the shared col_exp) and ``live[c]`` (some entry is
    nonzero). A dead column gets msb 0."""
    mant, rho = _check_factor(mantissa, row_exp)
    ones = leading_one(mant) + rho[:, None]
    candidates = np.where(mant > 0, ones, np.iinfo(np.int64).min)
    live = (mant > 0).any(axis=0)
    msb = np.where(live, candidates.max(axis=0, initial=np.iinfo(np.int64).min), 0)
    return msb.astype(np.int64), live


def factor_targets(mantissa: ArrayLike, row_exp: ArrayLike, msb: ArrayLike, *, g_offset: int,
                   g_span: int) -> NDArray[np.int64]:
    """TARGET codes of a stored factor's cells: ``g_offset + ((mantissa * g_span) >> s)`` with
    ``s = msb[c] + 1 - row_exp[i]``. The column maximum lands in the upper half of the
    window ``[g_offset, g_offset + g_span)``; a zero entry sits at ``g_offset``."""
    mant, rho = _check_factor(mantissa, row_exp)
    peaks = _int_array("msb", msb, low=None)
    if peaks.shape != (mant.shape[1],):
        raise ValueError(f"msb must have one entry per column ({mant.shape[1]}); got shape "
                         f"{peaks.shape}")
    g_offset = _check_int("g_offset", g_offset, 0)
    g_span = _check_int("g_span", g_span, 1)
    shift = np.maximum(peaks[None, :] + 1 - rho[:, None], 0)
    return g_offset + _shift_right(mant * g_span, shift)


def next_component_exponent(col_exp: ArrayLike, msb: ArrayLike, dac_bits: int) -> Any:
    """col_exp of the factor a half-step solves, per component c, from the programmed
    factor's ``col_exp[c]`` and ``msb[c]``: ``-(dac_bits - 2) - 1 - col_exp[c] - msb[c]``."""
    dac_bits = _check_int("dac_bits", dac_bits, 2, 24)
    gamma = _int_array("col_exp", col_exp, low=None)
    peaks = _int_array("msb", msb, low=None)
    result = -(dac_bits - 2) - 1 - gamma - peaks
    return int(result) if result.ndim == 0 else result


def window_codes(*, g_offset_s: float, g_max_s: float, full_scale_s: float, bits: int,
                 v_min_v: float = -1.0, v_max_v: float = 1.0) -> tuple[int, int]:
    """(g_offset, g_span) for NMF_WINDOW_BASE and NMF_WINDOW_SPAN: the READ_CELL code of the circuit's offset
    conductance and the codes from there to the device's g_max."""
    if not (isinstance(g_offset_s, (int, float)) and isinstance(g_max_s, (int, float))
            and 0 <= g_offset_s < g_max_s):
        raise ValueError(f"the window needs 0 <= g_offset_s < g_max_s; got {g_offset_s!r} "
                         f"and {g_max_s!r}")
    low, high = (conductance_to_code(g, full_scale_s=full_scale_s, bits=bits, v_min_v=v_min_v,
                                     v_max_v=v_max_v) for g in (g_offset_s, g_max_s))
    if high <= low:
        raise ValueError(f"the window {g_offset_s!r} to {g_max_s!r} S is narrower than one "
                         f"code of the read chain")
    return low, high - low


def exponent_word(exponent: ArrayLike, exp_bits: int) -> Any:
    """A signed exponent as its exp_bits-bit two's complement word (NMF_W_EXP, NMF_H_EXP)."""
    exp_bits = _check_int("exp_bits", exp_bits, 2, 32)
    e = _int_array("exponent", exponent, low=None)
    low, high = -2 ** (exp_bits - 1), 2 ** (exp_bits - 1) - 1
    if e.size and (e.min() < low or e.max() > high):
        raise ValueError(f"exponent must be from {low} to {high} ({exp_bits} bits); got "
                         f"{exponent!r}")
    word = e & (2 ** exp_bits - 1)
    return int(word) if word.ndim == 0 else word


def word_exponent(word: ArrayLike, exp_bits: int) -> Any:
    """The signed exponent an exp_bits-bit word holds (inverse of :func:`exponent_word`)."""
    exp_bits = _check_int("exp_bits", exp_bits, 2, 32)
    w = _int_array("word", word)
    if w.size and w.max() >= 2 ** exp_bits:
        raise ValueError(f"word must be below 2**{exp_bits}; got {word!r}")
    e = np.where(w >= 2 ** (exp_bits - 1), w - 2 ** exp_bits, w)
    return int(e) if e.ndim == 0 else e


def fixed_from_factor(factor: ArrayLike, mant_bits: int) -> tuple[NDArray[np.int64],
                                                                 NDArray[np.int64]]:
    """A non-negative float factor (rows, k) as (mantissa, col_exp) with row exponents 0:
    per column the exponent that puts the largest entry's leading one at bit mant_bits - 1,
    mantissas rounded down (a zero column: exponent 0, mantissas 0)."""
    mant_bits = _check_int("mant_bits", mant_bits, 1, 52)
    f = np.asarray(factor, dtype=np.float64)
    if f.ndim != 2 or not np.all(np.isfinite(f)) or (f.size and f.min() < 0):
        raise ValueError(f"factor must be a 2-D array of finite values >= 0; got {factor!r}")
    peaks = f.max(axis=0, initial=0.0)
    exponent = np.zeros(f.shape[1], dtype=np.int64)
    live = peaks > 0
    exponent[live] = np.frexp(peaks[live])[1] - mant_bits
    mantissa = np.floor(np.ldexp(f, -exponent[None, :])).astype(np.int64)
    return np.minimum(mantissa, 2 ** mant_bits - 1), exponent


def factor_from_fixed(mantissa: ArrayLike, row_exp: ArrayLike,
                      col_exp: ArrayLike) -> NDArray[np.float64]:
    """``mantissa[i, c] * 2**(row_exp[i] + col_exp[c])`` as floats. W is (m, k) with its
    per-row and per-component exponents; H is (k, n) with its per-component (rows) and
    per-column exponents."""
    mant, rho = _check_factor(mantissa, row_exp)
    gamma = _int_array("col_exp", col_exp, low=None)
    if gamma.shape != (mant.shape[1],):
        raise ValueError(f"col_exp must have one entry per column ({mant.shape[1]}); got shape "
                         f"{gamma.shape}")
    return np.ldexp(mant.astype(np.float64), rho[:, None] + gamma[None, :])


def r_codes(matrix: ArrayLike, r_bits: int) -> tuple[NDArray[np.int64], float]:
    """A non-negative float R as unsigned r_bits-bit codes, rounded, with the scale that
    turns codes back into R (``matrix ~ codes * scale``); the largest entry gets the top code."""
    r_bits = _check_int("r_bits", r_bits, 1, 40)
    r = np.asarray(matrix, dtype=np.float64)
    if not np.all(np.isfinite(r)) or (r.size and r.min() < 0):
        raise ValueError(f"matrix must hold finite values >= 0; got {matrix!r}")
    peak = float(r.max(initial=0.0))
    if peak == 0:
        return np.zeros(r.shape, dtype=np.int64), 1.0
    top = 2 ** r_bits - 1
    return np.rint(r / peak * top).astype(np.int64), peak / top


def mask_words(observed: ArrayLike, rows: int) -> NDArray[np.int64]:
    """MASK window words of an observed-entry map (m, n) <= (rows, rows): entry (i, j) is bit
    index i * rows + j; the window holds ceil(rows * rows / 32) words."""
    rows = _check_int("rows", rows, 1)
    seen = np.asarray(observed)
    if seen.dtype != np.bool_ or seen.ndim != 2 or seen.shape[0] > rows or seen.shape[1] > rows:
        raise ValueError(f"observed must be a bool array of at most ({rows}, {rows}); got "
                         f"{seen.dtype} array of shape {seen.shape}")
    bits = np.zeros((rows, rows), dtype=bool)
    bits[:seen.shape[0], :seen.shape[1]] = seen
    flat = np.zeros(-(-rows * rows // MASK_WORD_BITS) * MASK_WORD_BITS, dtype=bool)
    flat[:rows * rows] = bits.ravel()
    packed = np.packbits(flat, bitorder="little").reshape(-1, MASK_WORD_BITS // 8)
    return packed.astype(np.int64) @ (256 ** np.arange(MASK_WORD_BITS // 8, dtype=np.int64))


def mask_from_words(words: ArrayLike, rows: int) -> NDArray[np.bool_]:
    """The (rows, rows) observed-entry map the MASK words hold (inverse of :func:`mask_words`)."""
    rows = _check_int("rows", rows, 1)
    w = _int_array("words", words)
    depth = -(-rows * rows // MASK_WORD_BITS)
    if w.shape != (depth,) or (w.size and w.max() >= 2 ** MASK_WORD_BITS):
        raise ValueError(f"words must be {depth} integers from 0 to 2**32 - 1; got {words!r}")
    octets = ((w[:, None] >> (8 * np.arange(MASK_WORD_BITS // 8))) & 0xFF).astype(np.uint8)
    bits = np.unpackbits(octets.ravel(), bitorder="little").astype(bool)
    return bits[:rows * rows].reshape(rows, rows)


def nmf_product_scale(*, g_span: int, full_scale_s: float, g_unit_s: float, input_gain: float,
                      adc_lsb_v: float, dac_lsb_v: float, adc_v_max_v: float = 1.0) -> float:
    """K, the nominal factor between the R codes and the stored factors' product after
    RUN_NMF (``R ~ K W H``): the window's full value ``kappa = g_span * siemens_per_code /
    g_unit_s`` times ``adc_lsb / (input_gain * dac_lsb)``. Each solve returns its solution
    divided by K; the host multiplies H by K."""
    for name, value in (("full_scale_s", full_scale_s), ("g_unit_s", g_unit_s),
                        ("input_gain", input_gain), ("adc_lsb_v", adc_lsb_v),
                        ("dac_lsb_v", dac_lsb_v), ("adc_v_max_v", adc_v_max_v)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a finite number > 0; got {value!r}")
    g_span = _check_int("g_span", g_span, 1)
    siemens_per_code = adc_lsb_v / adc_v_max_v * full_scale_s
    kappa = g_span * siemens_per_code / g_unit_s
    return kappa * adc_lsb_v / (input_gain * dac_lsb_v)


def nmf_prepare_cycles(*, rows: int, k: int) -> int:
    """Cycles of a half-step's preparation: scan the stored factor (rows x k reads), two
    cycles folding the last word (registered, then its leading one: docs/synthesis.md E24), read
    its k component exponents, write rows x k TARGET codes: ``2 rows k + k + 2``."""
    _check_int("rows", rows, 1)
    _check_int("k", k, 1)
    return 2 * rows * k + k + 2


def nmf_scan_cycles(*, rows: int) -> int:
    """Cycles from the first read of a right-hand side to the solve's start (or the
    cleared row): ``rows`` reads, one cycle registering the last entry, one folding it, one
    holding the final row mask (the controller registers the solve sequencer's operands), one
    decision cycle: ``rows + 4``."""
    return _check_int("rows", rows, 1) + 4


def nmf_commit_cycles(*, count: int, k: int) -> int:
    """Cycles of a half-step's commit: ``count`` x k mantissas, one drain cycle, k component
    exponents."""
    _check_int("count", count, 1)
    _check_int("k", k, 1)
    return count * k + 1 + k
