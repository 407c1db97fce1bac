"""Iterative refinement (mixed precision) of an analog NNLS solve: the arithmetic of the
Refiner block (hdl/refiner.py), its golden model, and the study behind its word widths.

The problem (docs/refinement.md): minimise ||B - A X|| over X >= 0, with

- ``A[i, j] = code[i, j] - a_offset``: the READ_CELL codes write-verify read back from the
  cells (``code``, ADC_BITS unsigned) minus the code of the conductance that stands for 0;
- ``B``: the right-hand side, signed integers (``b_bits``) in DAC steps times a host-chosen
  power of two;
- ``X``: the solution, unsigned integers (``x_bits``), in units of B per unit of A.

Pass 0 is a clamped SOLVE of B; every further pass computes the residual ``R = B - A X``
exactly in integers (one multiplier, sequential), scales it to the DAC range with a
power-of-two exponent, lets an inactive column whose gradient on that residual is positive
re-enter (the KKT condition of NNLS), runs SOLVE_FREE on the active set (columns with X > 0)
and adds the scaled correction to X (negative results clamp to 0 and leave the set). Everything
here is integer arithmetic the RTL implements bit for bit; :func:`golden_refine` runs it
against the AFE model through :class:`~anmf.model.golden.GoldenController` at the cycles
the Refiner would.

``python -m anmf.model.refinement`` prints the measured table (docs/refinement.md).
"""
from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import nnls as scipy_nnls

from .afe import AnalogFrontEnd, Mode
from .formats import PICOSECONDS_PER_SECOND, leading_one, to_picoseconds, unpack_result, zero_code
from .golden import Error, GoldenController

__all__ = ["RefineFormat", "RefineOutcome", "residual_words", "residual_exponent",
           "residual_dac_codes", "gradient_residual", "entry_scores", "entering_columns",
           "correction", "correction_gain", "golden_refine",
           "refine_problem", "relative_residual", "StudyRow", "study", "main"]

IntArray = NDArray[np.int64]

#: Width of the correction gain operand (unsigned) and of the pass count operand.
GAIN_BITS = 18
PASS_BITS = 4
GAIN_SHIFT_BITS = 6
HEADROOM_BITS = 2
#: Fraction bits below the DAC step of the residual the gradient sweep uses (R rounded to
#: 2**(e - GRADIENT_FRACTION_BITS)): its rounding moves a gradient by 2**-9 DAC steps per row.
GRADIENT_FRACTION_BITS = 8


def _check_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or not low <= value <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}; got {value!r}")
    return int(value)


@dataclass(frozen=True)
class RefineFormat:
    """Word widths of the Refiner's buffers (bits).

    x_bits
        X, unsigned: the solution accumulator (saturates at ``2**x_bits - 1``).
    b_bits
        B, two's complement: the right-hand side.
    """

    x_bits: int = 24
    b_bits: int = 32

    def __post_init__(self) -> None:
        _check_int("RefineFormat.x_bits", self.x_bits, 4, 40)
        _check_int("RefineFormat.b_bits", self.b_bits, 4, 48)

    def r_bits(self, *, adc_bits: int, cols: int) -> int:
        """Width of the residual (two's complement): holds B minus ``cols`` products of a
        signed (adc_bits + 1)-bit A entry and an x_bits X, so the exact sum never wraps."""
        product_bits = adc_bits + 1 + self.x_bits
        return max(self.b_bits, product_bits + max(1, (cols - 1).bit_length())) + 1


# --------------------------------------------------------------------------------------
# The arithmetic (vectorised; the RTL does the same per word)


def residual_words(b: ArrayLike, a_codes: ArrayLike, a_offset: int, x: ArrayLike) -> IntArray:
    """``R = B - (code - a_offset) X`` exactly (int64; the widths keep it below 2**62)."""
    a = np.asarray(a_codes, dtype=np.int64) - int(a_offset)
    return np.asarray(b, dtype=np.int64) - a @ np.asarray(x, dtype=np.int64)


def residual_exponent(peak: int, *, dac_bits: int, headroom: int) -> int:
    """``e = leading_one(peak) - (dac_bits - 2) + headroom``: R >> e uses the DAC's magnitude
    bits less ``headroom`` (``peak`` is the OR of the |R_i|, whose leading one is that of
    the largest |R_i|)."""
    return int(leading_one(int(peak))) - (dac_bits - 2) + headroom


def residual_dac_codes(r: ArrayLike, exponent: int, dac_bits: int) -> IntArray:
    """DAC codes of R at exponent e: ``zero + clamp(round(R / 2**e))`` (round half up for
    e > 0, exact left shift for e <= 0; clamped to the offset-binary range)."""
    words = np.asarray(r, dtype=np.int64)
    if exponent > 0:
        scaled = (words + (1 << (exponent - 1))) >> exponent
    else:
        scaled = words << -exponent
    top = 2 ** (dac_bits - 1)
    return zero_code(dac_bits) + np.clip(scaled, -top, top - 1)


def gradient_residual(r: ArrayLike, exponent: int) -> IntArray:
    """R in steps of ``2**exponent`` (round half up for exponent > 0, exact left shift
    otherwise), unclamped: the residual of the gradient sweep, at exponent
    ``e - GRADIENT_FRACTION_BITS`` (e: the DAC codes' exponent)."""
    words = np.asarray(r, dtype=np.int64)
    if exponent > 0:
        return (words + (1 << (exponent - 1))) >> exponent
    return words << -exponent


def entry_scores(a: ArrayLike, s: ArrayLike) -> IntArray:
    """Per column j: ``sum_i A_ij (2 s_i - sign(A_ij)) = 2 (A^T s)_j - sum_i |A_ij|``, with
    ``s`` the rounded residual (:func:`gradient_residual`) and ``A`` the read-back matrix
    (code - a_offset) of the same rows. Positive exactly when the gradient ``A_j^T s``
    exceeds ``sum_i |A_ij| / 2``, the most that rounding R (half a step per row) can move
    it: the column's gradient on R itself is positive then."""
    a = np.asarray(a, dtype=np.int64)
    s = np.asarray(s, dtype=np.int64)
    return (a * (2 * s[:, None] - np.sign(a))).sum(axis=0)


def entering_columns(a: ArrayLike, s: ArrayLike, candidates: int) -> int:
    """Mask of the ``candidates`` columns whose :func:`entry_scores` is positive: the inactive
    columns that re-enter the active set before a refinement pass's SOLVE_FREE."""
    scores = entry_scores(a, s)
    return sum(1 << j for j in _bits(candidates) if scores[j] > 0)


def correction(codes: ArrayLike, *, adc_bits: int, gain: int, msb: int, headroom: int,
               gain_shift: int) -> list[int]:
    """The X increment of each solved column: ``round((code - zero) * gain *
    2**(msb + headroom - gain_shift))`` (round half up; Python integers, as wide as the RTL's
    shifter)."""
    left = msb + headroom
    half = (1 << gain_shift) >> 1
    return [(((int(c) - zero_code(adc_bits)) * gain << left) + half) >> gain_shift
            for c in np.asarray(codes).ravel()]


def correction_gain(afe: AnalogFrontEnd, *, gain_bits: int = GAIN_BITS) -> tuple[int, int]:
    """(gain, gain_shift) that turn an ADC code of a solve into X steps for this AFE.

    The nominal loop: ADC volts = input_gain * argmin ||A_volts x - DAC volts|| with
    A = (G - g_offset) / g_unit; one unit of A is ``k = g_unit / (siemens per READ_CELL
    code)`` codes of the read-back matrix, so an output code is ``g = k * input_gain *
    dac_lsb / adc_lsb`` X steps per DAC step. ``gain = round(2**q / g)`` with the largest q
    that keeps it below ``2**gain_bits``; ``gain_shift = q + dac_bits - 2``."""
    config = afe.config
    adc, dac = config.adc, config.dac
    adc_lsb = (adc.v_max_v - adc.v_min_v) / 2 ** afe.adc_bits
    dac_lsb = (dac.v_max_v - dac.v_min_v) / 2 ** afe.dac_bits
    siemens_per_code = adc_lsb / adc.v_max_v * afe.read_full_scale_s
    loop_gain = (config.circuit.g_unit_s / siemens_per_code * config.circuit.input_gain
                 * dac_lsb / adc_lsb)
    q = math.floor(math.log2((2 ** gain_bits - 1) * loop_gain))
    while round(2 ** q / loop_gain) >= 2 ** gain_bits:
        q -= 1
    return round(2 ** q / loop_gain), q + afe.dac_bits - 2


# --------------------------------------------------------------------------------------
# Golden model of the Refiner (cycle-exact with hdl/refiner.py)


@dataclass(frozen=True)
class RefineOutcome:
    """One REFINE run."""

    error: Error
    x: IntArray                  #: X by solution column (all COLS)
    passes_done: int             #: analog solves accumulated (pass 0 included)
    #: leading one of the peak |R| of every residual computed (-1: R = 0), the last one
    #: after the last pass; X after pass p gives peaks[p + 1].
    peaks: tuple[int, ...]
    over_range: bool             #: some solve result was over range
    done_cycle: int
    #: X after every pass (pass 0 first).
    history: tuple[IntArray, ...] = field(default_factory=tuple)


def refine_cycles_residual(rows: int, mac_cols: int) -> int:
    """Setup + MAC (rows x mac_cols, one per cycle) + 5 pipeline drain (operands, two
    multiply stages, accumulate, peak) + Scale."""
    return 1 + rows * mac_cols + 5 + 1


def refine_cycles_gradient(rows: int, candidates: int) -> int:
    """Gradient sweep (rows x candidates, one per cycle) + 5 pipeline drain (R's shifter,
    operands, two multiply stages, accumulate) + Check."""
    return rows * candidates + 5 + 1


def refine_cycles_accumulate(cols: int) -> int:
    """Accumulate (one column per cycle) + 6 pipeline drain (operands, two multiply stages,
    shift, add, the active bit)."""
    return cols + 6


def _bits(mask: int) -> list[int]:
    return [i for i in range(mask.bit_length()) if mask >> i & 1]


def golden_refine(golden: GoldenController, *, fmt: RefineFormat, b: ArrayLike,
                  a_codes: ArrayLike, a_offset: int, gain: int, gain_shift: int, passes: int,
                  row_mask: int, col_mask: int, headroom: int, avg_log2: int, dac_settle: int,
                  analog_settle: int, watchdog_limit: int | None = None,
                  start_s: float | None = None) -> RefineOutcome:
    """REFINE as hdl/refiner.py runs it, with the solves through ``golden.solve`` at the
    cycles the Refiner starts them (``start_s``: the Refiner's start cycle; default: the
    golden controller's next free cycle). ``b`` has ROWS entries, ``a_codes`` is ROWS x COLS."""
    p = golden.p
    rows, cols, adc_bits, dac_bits = p["rows"], p["cols"], p["adc_bits"], p["dac_bits"]
    b = np.asarray(b, dtype=np.int64)
    a_codes = np.asarray(a_codes, dtype=np.int64)
    if b.shape != (rows,) or a_codes.shape != (rows, cols):
        raise ValueError(f"b must have {rows} entries and a_codes shape {(rows, cols)}; got "
                         f"shapes {b.shape} and {a_codes.shape}")
    if b.size and (b.min() < -2 ** (fmt.b_bits - 1) or b.max() >= 2 ** (fmt.b_bits - 1)):
        raise ValueError(f"b must fit {fmt.b_bits}-bit two's complement; got {b.min()} .. "
                         f"{b.max()}")
    if a_codes.min() < 0 or a_codes.max() >= 2 ** adc_bits:
        raise ValueError(f"a_codes must be {adc_bits}-bit codes; got {a_codes.min()} .. "
                         f"{a_codes.max()}")
    _check_int("a_offset", a_offset, 0, 2 ** adc_bits - 1)
    _check_int("gain", gain, 0, 2 ** GAIN_BITS - 1)
    _check_int("gain_shift", gain_shift, 0, 2 ** GAIN_SHIFT_BITS - 1)
    _check_int("passes", passes, 0, 2 ** PASS_BITS - 1)
    _check_int("headroom", headroom, 0, 2 ** HEADROOM_BITS - 1)
    _check_int("row_mask", row_mask, 0, 2 ** rows - 1)
    _check_int("col_mask", col_mask, 0, 2 ** cols - 1)
    timer_top = 2 ** p["timer_bits"] - 1
    watchdog = timer_top if watchdog_limit is None else watchdog_limit
    start_ps = golden._next_start_ps if start_s is None else to_picoseconds(start_s, "start_s")
    period = golden.period_ps

    def at(cycle: int) -> float:
        return (start_ps + cycle * period) / PICOSECONDS_PER_SECOND

    def finish(error: Error, done: int, x: IntArray, passes_done: int, peaks: list[int],
               over: bool, history: list[IntArray]) -> RefineOutcome:
        golden._next_start_ps = start_ps + (done + 1) * period
        return RefineOutcome(error, x, passes_done, tuple(peaks), over, done, tuple(history))

    x = np.zeros(cols, dtype=np.int64)
    if row_mask == 0 or col_mask == 0:
        return finish(Error.BAD_DIMENSION, 1, x, 0, [], False, [])
    if avg_log2 > p["avg_max_log2"]:
        return finish(Error.BAD_AVERAGING, 1, x, 0, [], False, [])
    if watchdog == 0:
        return finish(Error.BAD_TIMING, 1, x, 0, [], False, [])

    used_rows = _bits(row_mask)
    x_top = 2 ** fmt.x_bits - 1
    active = 0
    peaks: list[int] = []
    history: list[IntArray] = []
    over = False
    passes_done = 0
    cycle = 1 + cols                     # Clear: one X word per cycle
    while True:
        mac_cols = len(_bits(active)) if active else 1
        cycle += refine_cycles_residual(len(used_rows), mac_cols)   # ends after Scale
        r = residual_words(b[used_rows], a_codes[used_rows], a_offset, x)
        peak = int(np.bitwise_or.reduce(np.abs(r)))
        msb = int(leading_one(peak))
        peaks.append(msb)
        if passes_done == passes + 1 or peak == 0:
            return finish(Error.NONE, cycle, x, passes_done, peaks, over, history)
        exponent = msb - (dac_bits - 2) + headroom
        codes = np.full(rows, golden.zero_code, dtype=np.int64)
        codes[used_rows] = residual_dac_codes(r, exponent, dac_bits)
        candidates = col_mask & ~active
        if passes_done and candidates:
            # Gradient sweep: inactive columns whose gradient on R is positive re-enter.
            fine = gradient_residual(r, exponent - GRADIENT_FRACTION_BITS)
            active |= entering_columns(a_codes[used_rows] - a_offset, fine, candidates)
            cycle += refine_cycles_gradient(len(used_rows), len(_bits(candidates)))
            if not active:
                return finish(Error.NONE, cycle, x, passes_done, peaks, over, history)
        golden.rhs[:] = codes
        solve_cols = col_mask if passes_done == 0 else active
        mode = Mode.SOLVE if passes_done == 0 else Mode.SOLVE_FREE
        solved = golden.solve(mode, row_mask=row_mask, col_mask=solve_cols, avg_log2=avg_log2,
                              dac_settle=dac_settle, analog_settle=analog_settle,
                              watchdog_limit=watchdog, start_s=at(cycle))
        cycle += solved.done_cycle + 1      # Solve-Start .. the Solve-Wait cycle seeing done
        if solved.error != Error.NONE:
            return finish(solved.error, cycle, x, passes_done, peaks, over, history)
        targets = _bits(solve_cols)
        words = [solved.words[j] for j in targets]
        codes_out = [unpack_result(w, adc_bits)[0] for w in words]
        over |= any(unpack_result(w, adc_bits)[1] for w in words)
        deltas = correction(codes_out, adc_bits=adc_bits, gain=gain, msb=msb,
                            headroom=headroom, gain_shift=gain_shift)
        for j, delta in zip(targets, deltas):
            x[j] = min(max(int(x[j]) + delta, 0), x_top)
            active = (active | 1 << j) if x[j] > 0 else (active & ~(1 << j))
        cycle += refine_cycles_accumulate(len(targets))
        passes_done += 1
        history.append(x.copy())


# --------------------------------------------------------------------------------------
# The study: random well-conditioned problems on the AFE model


def relative_residual(a: ArrayLike, b: ArrayLike, x: ArrayLike) -> float:
    """The optimality residual on the active set F = {j: x_j > 0}:
    ``||A_F^T (b - A x)|| / ||A_F^T b||`` (0 when it is exact; independent of the scales of
    A and x). For NNLS this is the part of the KKT conditions refinement drives to 0."""
    a, b, x = (np.asarray(v, dtype=np.float64) for v in (a, b, x))
    free = x > 0
    if not free.any():
        return 1.0
    gradient = a[:, free].T @ (b - a @ x)
    return float(np.linalg.norm(gradient) / np.linalg.norm(a[:, free].T @ b))


#: The right-hand side kinds of :func:`refine_problem`.
PROBLEM_KINDS = ("read-back", "levels", "noisy")


@dataclass(frozen=True)
class RefineProblem:
    """A 16 x 8 problem in the Refiner's integer form, with what it came from."""

    levels: IntArray          #: intended 3-bit levels of A
    a_codes: IntArray         #: write-verify read-back codes
    a_offset: int
    b: IntArray               #: B words
    analog_a: NDArray[np.float64]   #: the matrix the circuit solves with, in code units


def refine_problem(afe: AnalogFrontEnd, golden: GoldenController, rng: np.random.Generator, *,
                   b_frac_bits: int, kind: str = "read-back", max_cond: float = 20.0,
                   fill: float = 0.8) -> RefineProblem:
    """Draw a well-conditioned problem (3-bit levels, cond <= max_cond), program it by
    write-verify through ``golden`` (the verified read codes become A) and form B from
    x_true in [0.1, 1), scaled so max |b| is ``fill`` of the DAC's magnitude range, times
    2**b_frac_bits. ``kind``: "read-back" b = A_read x_true (in the range of the matrix the
    controller knows: r* = 0); "levels" b = A_levels x_true (the intended 3-bit matrix: off
    the read-back range by the programming error); "noisy" levels plus a random 10 %
    component (a least-squares problem with a large optimal residual)."""
    if kind not in PROBLEM_KINDS:
        raise ValueError(f"kind must be one of {', '.join(PROBLEM_KINDS)}; got {kind!r}")
    rows, cols = golden.rows, golden.p["cols"]
    while True:
        levels = rng.integers(0, 8, (rows, cols))
        if np.linalg.cond(levels) <= max_cond:
            break
    circuit = afe.config.circuit
    targets = np.zeros((rows, golden.total_cols), dtype=np.int64)
    targets[:, :cols] = afe.conductance_code(circuit.g_offset_s + circuit.g_unit_s * levels)
    golden.load_targets(targets)
    outcome = golden.program_matrix(afe.program_settings(), row_mask=2 ** rows - 1,
                                    col_mask=2 ** cols - 1)
    a_codes = np.zeros((rows, cols), dtype=np.int64)
    for cell in outcome.cells:
        a_codes[cell.row, cell.col] = cell.read_code
    a_offset = int(afe.conductance_code(circuit.g_offset_s))
    x_true = rng.uniform(0.1, 1.0, cols)
    b_float = (a_codes - a_offset) @ x_true if kind == "read-back" else levels @ x_true
    if kind == "noisy":
        b_float = b_float + 0.1 * np.linalg.norm(b_float) / math.sqrt(rows) * \
            rng.standard_normal(rows)
    magnitude = 2 ** (afe.dac_bits - 1) - 1
    b_float *= fill * magnitude / np.abs(b_float).max()
    b = np.rint(b_float * 2.0 ** b_frac_bits).astype(np.int64)
    siemens_per_code = (2.0 / 2 ** afe.adc_bits) * afe.read_full_scale_s
    g = afe.crossbar.effective_conductance_s()[:, :cols]
    analog_a = (g - afe.circuit.reference_conductance_s[None, :cols]) / siemens_per_code
    return RefineProblem(levels, a_codes, a_offset, b, analog_a)


@dataclass(frozen=True)
class StudyRow:
    seed: int
    eta: tuple[float, ...]          #: relative residual (read-back A) after each pass
    error_read: float               #: final ||x - x*_read|| / ||x*_read||
    error_analog: float             #: final ||x - x*_analog|| / ||x*_analog||
    over_range: bool
    passes_done: int
    done_cycle: int


@dataclass(frozen=True)
class StudyParams:
    """The build parameters the study's golden controller needs (model/ does not import
    hdl/; ``anmf.hdl.params.BuildParams(rows=16, cols=8, spare=0, avg_max_log2=4)`` has the
    same values)."""

    rows: int = 16
    cols: int = 8
    spare: int = 0
    dac_bits: int = 10
    adc_bits: int = 10
    avg_max_log2: int = 4
    timer_bits: int = 16
    prog_amp_bits: int = 8
    prog_width_bits: int = 8
    pulse_budget_bits: int = 8
    cal_ref_bits: int = 3


def study_afe(seed: int, *, deterministic: bool = True,
              params: StudyParams = StudyParams()) -> AnalogFrontEnd:
    """The rram-3bit AFE (10-bit DAC and ADC) of one study seed."""
    from .config import preset
    config = preset("rram-3bit").replace(seed=seed)
    return AnalogFrontEnd(config, rows=params.rows, cols=params.cols, spare=params.spare,
                          dac_bits=params.dac_bits, adc_bits=params.adc_bits,
                          amp_bits=params.prog_amp_bits, width_bits=params.prog_width_bits,
                          cal_ref_bits=params.cal_ref_bits, deterministic=deterministic)


def study(seeds: Sequence[int], *, passes: int = 4, fmt: RefineFormat = RefineFormat(),
          b_frac_bits: int = 20, kind: str = "read-back", headroom: int = 2,
          avg_log2: int = 0, deterministic: bool = True,
          analog_settle: int = 100) -> list[StudyRow]:
    """Run :func:`golden_refine` on one 16 x 8 problem per seed (rram-3bit, 10-bit
    converters; ``deterministic`` False adds the ADC's and the reads' noise) and measure the
    relative residual (read-back A) after every pass and the final errors against the
    read-back and the analog problems' NNLS solutions."""
    params = StudyParams()
    rows_out = []
    for seed in seeds:
        afe = study_afe(seed, deterministic=deterministic, params=params)
        golden = GoldenController(params, afe)
        rng = np.random.default_rng(seed)
        problem = refine_problem(afe, golden, rng, b_frac_bits=b_frac_bits, kind=kind)
        gain, gain_shift = correction_gain(afe)
        outcome = golden_refine(golden, fmt=fmt, b=problem.b, a_codes=problem.a_codes,
                                a_offset=problem.a_offset, gain=gain, gain_shift=gain_shift,
                                passes=passes, row_mask=2 ** params.rows - 1,
                                col_mask=2 ** params.cols - 1, headroom=headroom,
                                avg_log2=avg_log2, dac_settle=5, analog_settle=analog_settle)
        a_read = (problem.a_codes - problem.a_offset).astype(np.float64)
        b = problem.b.astype(np.float64)
        eta = tuple(relative_residual(a_read, b, x) for x in outcome.history)
        x = outcome.x.astype(np.float64)
        x_read = scipy_nnls(a_read, b)[0]
        x_analog = scipy_nnls(problem.analog_a, b)[0]
        rows_out.append(StudyRow(
            seed, eta, float(np.linalg.norm(x - x_read) / np.linalg.norm(x_read)),
            float(np.linalg.norm(x - x_analog) / np.linalg.norm(x_analog)),
            outcome.over_range, outcome.passes_done, outcome.done_cycle))
    return rows_out


def format_table(rows: Sequence[StudyRow], title: str) -> str:
    """The study rows as a text table, eta as log2."""
    passes = max(len(r.eta) for r in rows)
    head = " | ".join(["seed"] + [f"pass {p}" for p in range(passes)] +
                      ["err vs read-back", "err vs analog", "over-range", "cycles"])
    lines = [title, head]
    for r in rows:
        cells = [f"{r.seed:4d}"] + [f"{math.log2(e):6.1f}" if e > 0 else "  exact"
                                    for e in r.eta] + ["      "] * (passes - len(r.eta))
        cells += [f"{r.error_read:.1e}", f"{r.error_analog:.1e}", "yes" if r.over_range
                  else "no", f"{r.done_cycle}"]
        lines.append(" | ".join(cells))
    worst = [max(r.eta[p] for r in rows if len(r.eta) > p) for p in range(passes)]
    lines.append("worst log2(eta) per pass: " + ", ".join(f"{math.log2(w):.1f}" if w > 0
                                                         else "exact" for w in worst))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m anmf.model.refinement",
                                     description="Iterative refinement study (16 x 8, "
                                     "rram-3bit, 10-bit converters).")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--passes", type=int, default=4)
    parser.add_argument("--headroom", type=int, default=2)
    parser.add_argument("--x-bits", type=int, default=24)
    parser.add_argument("--b-frac-bits", type=int, default=20)
    parser.add_argument("--avg-log2", type=int, default=0)
    parser.add_argument("--noise", action="store_true", help="ADC and read noise on")
    parser.add_argument("--kind", choices=PROBLEM_KINDS, default="read-back",
                        help="right-hand side: in the read-back matrix's range, from the "
                        "intended levels, or levels plus 10 %% noise")
    args = parser.parse_args(argv)
    started = time.time()
    rows = study(range(args.seeds), passes=args.passes, headroom=args.headroom,
                 fmt=RefineFormat(x_bits=args.x_bits), b_frac_bits=args.b_frac_bits,
                 kind=args.kind, avg_log2=args.avg_log2,
                 deterministic=not args.noise)
    title = (f"eta = ||A_F^T (B - A X)|| / ||A_F^T B|| (read-back A), log2, after each pass; "
             f"x_bits={args.x_bits}, b_frac_bits={args.b_frac_bits}, headroom={args.headroom}, "
             f"avg={2 ** args.avg_log2}, noise={'on' if args.noise else 'off'}, "
             f"b {args.kind}")
    print(format_table(rows, title))
    print(f"({time.time() - started:.1f} s)")


if __name__ == "__main__":
    main()
