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
from numpy.typing import ArrayLike

__all__ = [
    "zero_code", "code_to_volts", "volts_to_code", "rounded_average", "pack_result",
    "unpack_result", "solve_cycles", "read_cycles", "cell_cycles", "conductance_to_code",
    "code_to_conductance", "tolerance_to_codes", "quantity_to_code", "ProgramSettings",
    "PICOSECONDS_PER_SECOND", "to_picoseconds",
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
    """Cycles of one programmer verify read: ``read_settle + 2**a (t_adc + 1) + 1``
    (settle, conversions, Compare)."""
    _check_int("read_settle", read_settle, 0)
    _check_int("avg_log2", avg_log2, 0)
    _check_int("adc_cycles", adc_cycles, 2)
    return read_settle + 2 ** avg_log2 * (adc_cycles + 1) + 1


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
