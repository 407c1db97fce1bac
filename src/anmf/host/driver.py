"""The host driver: one async API for the chip, whatever is behind it.

:class:`ChipDriver` is the API the host code (``anmf.host.anls``, the CLI, the benches) is
written against. Two backends implement it:

- :class:`RegisterDriver`: over the register map (docs/registers.md) through a
  :class:`~anmf.host.bus.RegisterBus`, on the RTL in cocotb today and on a board later;
- :class:`~anmf.host.model_backend.ModelDriver`: the golden model of the controller
  driving the code-level AFE model, no bus.

The base class validates every argument against the build's limits *before* a backend
touches anything, so both backends refuse the same things with the same messages. A command
that ends with an error in STATUS raises :class:`ChipError` (ErrorCode and detail); a
write-verify that leaves cells out of tolerance (CELLS_FAILED) is an expected outcome and is
reported in :class:`ProgramReport` instead. Every wait is bounded: a command that does not
end raises :class:`CommandTimeout`.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
from numpy.typing import ArrayLike, NDArray

from anmf.hdl.regmap_export import HostRegisterMap
from anmf.hdl.registers import REFINE_B_BITS, SOLVE_RETRY_BITS
from anmf.model import calibration as cal
from anmf.model.formats import (ProgramSettings, exponent_word, factor_from_fixed, mask_words,
                                word_exponent)
from anmf.model.golden import CalEnable, Error as ErrorCode
from anmf.model.refinement import GAIN_BITS, GAIN_SHIFT_BITS, HEADROOM_BITS, PASS_BITS

from .bus import BusError, InterruptLine, RegisterBus

__all__ = [
    "ChipDriver", "RegisterDriver", "ChipInfo", "Timing", "ProgramSettings", "SolveResult",
    "ProgramReport", "CellReading", "Status", "Counters", "ErrorCode", "ChipError",
    "CommandTimeout", "UnsupportedChip", "SOLVE_MODES", "ID_MAGIC", "SUPPORTED_MAJOR_VERSION",
    "NMFSettings", "NMFProgress", "NMFReport", "NMFFactors", "NMF_PHASES", "NMF_STEPS",
    "ProgressCallback", "RefineResult", "RefreshReport", "RemapState", "CalibrationReport", "Corrections",
]

#: What the ID register reads ("ANMF").
ID_MAGIC = 0x414E4D46
#: The register-map major version this driver knows (VERSION.major).
SUPPORTED_MAJOR_VERSION = 1
#: Opcodes :meth:`ChipDriver.solve` runs.
SOLVE_MODES = ("SOLVE", "SOLVE_FREE", "MVM")
#: NMF_PROGRESS.phase and .step by value (docs/anls-sequencer.md).
NMF_PHASES = ("IDLE", "PREPARE", "PROGRAM", "SOLVE", "COMMIT")
NMF_STEPS = ("H", "W")
#: Widths of NMF_ITERATIONS' fields (hdl/anls_sequencer.py ITERATION_BITS, RETRY_BITS).
_ITERATION_BITS, _RETRY_BITS = 16, 4


# ---- values the API exchanges ------------------------------------------------------------

@dataclass(frozen=True)
class ChipInfo:
    """Build parameters of a controller (what PARAMS_ARRAY / PARAMS_CONVERTERS read, plus
    the programming field widths of the register map) and its register-map version."""

    rows: int
    cols: int
    spare: int
    dac_bits: int
    adc_bits: int
    avg_max_log2: int
    timer_bits: int
    amp_bits: int
    width_bits: int
    pulse_budget_bits: int
    version: tuple[int, int] = (SUPPORTED_MAJOR_VERSION, 0)
    #: RUN_NMF: bits of an R code (NMF_R) and of a factor exponent (NMF_W_EXP, NMF_H_EXP).
    r_bits: int = 16
    exp_bits: int = 8

    @property
    def mantissa_bits(self) -> int:
        """Bits of a factor mantissa (NMF_W, NMF_H): ADC_BITS - 1."""
        return self.adc_bits - 1

    @property
    def total_cols(self) -> int:
        """Physical columns: COLS plus SPARE."""
        return self.cols + self.spare

    @property
    def max_timer(self) -> int:
        return 2 ** self.timer_bits - 1

    @classmethod
    def from_params(cls, params: Mapping[str, int] | Any,
                    version: tuple[int, int] = (SUPPORTED_MAJOR_VERSION, 0)) -> "ChipInfo":
        """From a register-map description's ``params`` (a dict) or a ``BuildParams``."""
        def get(name: str) -> int:
            value = params[name] if isinstance(params, Mapping) else getattr(params, name)
            return int(value)
        return cls(rows=get("rows"), cols=get("cols"), spare=get("spare"),
                   dac_bits=get("dac_bits"), adc_bits=get("adc_bits"),
                   avg_max_log2=get("avg_max_log2"), timer_bits=get("timer_bits"),
                   amp_bits=get("prog_amp_bits"), width_bits=get("prog_width_bits"),
                   pulse_budget_bits=get("pulse_budget_bits"), version=version,
                   r_bits=get("r_bits"), exp_bits=get("exp_bits"))


@dataclass(frozen=True)
class Timing:
    """Solve timing, all in controller clock cycles (TIMING, DAC_SETTLE, ANALOG_SETTLE,
    WATCHDOG). The watchdog also bounds the programmer's waits."""

    #: ADC conversions averaged per solve result: a power of two.
    adc_samples: int = 1
    #: Cycles from LDAC to closing the loop: cover the DAC's settling time, or the loop
    #: starts from unsettled inputs.
    dac_settle: int = 64
    #: Cycles from closing the loop to the first conversion: cover the slowest eigenvalue
    #: of the active set (docs/model-circuit.md, section 4).
    analog_settle: int = 100
    #: Bound on every wait for the AFE (one conversion, one pulse).
    watchdog: int = 4000
    #: SOLVE_RETRIES: a solve (SOLVE, SOLVE_FREE, MVM) with an over-range result runs again
    #: with the DAC input halved, at most this many times (0: no retry; docs/controller.md).
    #: :attr:`SolveResult.exponent` says how often the input was halved.
    solve_retries: int = 0


@dataclass(frozen=True)
class SolveResult:
    """One SOLVE / SOLVE_FREE / MVM: the averaged ADC code and over-range flag of each
    enabled physical column, in ascending column order."""

    columns: tuple[int, ...]
    codes: NDArray[np.int64]
    over_range: NDArray[np.bool_]
    #: SOLVE_EXPONENT: the over-range retries the results took; they are for the RHS codes'
    #: offsets from zero times 2**-exponent (docs/controller.md). 0 without retries.
    exponent: int = 0

    @property
    def any_over_range(self) -> bool:
        return bool(self.over_range.any())


@dataclass(frozen=True)
class ProgramReport:
    """One PROGRAM_MATRIX: pulses fired, cells failed, and the fault map of the programmed
    cells (rows x total_cols; cells outside the masks are False)."""

    error: ErrorCode          #: NONE or CELLS_FAILED
    pulses: int
    failed_cells: int
    fault_map: NDArray[np.bool_]
    rows: tuple[int, ...]
    columns: tuple[int, ...]

    @property
    def cells(self) -> int:
        return len(self.rows) * len(self.columns)


@dataclass(frozen=True)
class RefreshReport:
    """One REFRESH: what its walk found (REFRESH_RESULT, REFRESH_FAILED) and the pulses it fired
    (spare trials of the remap included)."""

    error: ErrorCode          #: NONE or CELLS_FAILED
    checked: int              #: cells verified
    reprogrammed: int         #: cells found out of tolerance and given pulses
    failed: int               #: cells left out of tolerance by the walk
    pulses: int


@dataclass(frozen=True)
class RemapState:
    """The transparent spare-column remap (REMAP_CONTROL, REMAP_MAP, REMAP_STATUS, REMAP_COUNT)."""

    enabled: bool
    #: Physical column of each logical column (identity: nothing moved).
    column_map: tuple[int, ...]
    spares_left: int
    count: int                #: columns moved since reset or soft_reset

    @property
    def remapped(self) -> dict[int, int]:
        """Logical columns below COLS that moved, with their physical spare."""
        return {c: p for c, p in enumerate(self.column_map) if p != c}


@dataclass(frozen=True)
class CellReading:
    """One READ_CELL: the averaged conductance code of the cell."""

    code: int
    over_range: bool


@dataclass(frozen=True)
class Status:
    """STATUS as the host reads it."""

    busy: bool
    done: bool
    error: ErrorCode
    detail: int


@dataclass(frozen=True)
class Counters:
    """The event counters (cleared by soft_reset)."""

    solves: int
    pulses: int
    over_range: int
    failed_cells: int
    #: RANGE_RETRY_COUNT: solves repeated with a halved input (:attr:`Timing.solve_retries`).
    range_retries: int = 0


@dataclass(frozen=True)
class RefineResult:
    """One REFINE (docs/refinement.md): X of every solution column and REFINE_STATUS.

    ``x_words`` are REFINE_X (unsigned, B units per A unit: ``B ~ (REFINE_A - a_offset) @
    x_words``); ``x`` is the same in the units of ``b`` before its scaling, ``x_words *
    2**-b_frac_bits`` (the ``b_frac_bits`` given to :meth:`ChipDriver.refine`)."""

    x_words: NDArray[np.int64]   #: (COLS,); columns outside col_enable are 0
    x: NDArray[np.float64]       #: (COLS,)
    passes_done: int             #: solves accumulated into X (pass 0 included)
    residual_msb: int            #: leading one of the last residual's peak max |B - A X|
    over_range: bool             #: a solve result of the run was over range (accepted clipped)


#: Which calibration corrections the solves apply (CAL_CONTROL's fields adc, dac, opamp; the
#: defaults are its reset values): the golden model's own record, one definition for both.
Corrections = CalEnable


@dataclass(frozen=True)
class CalibrationReport:
    """One CALIBRATE (docs/calibration.md)."""

    error: ErrorCode     #: NONE, or CAL_FAILED when some entries could not be measured
    #: Worst corrected residual of the ADC check references, in 1/16 ADC LSB (CAL_QUALITY).
    quality: int
    failed_count: int    #: entries stored as identity (CAL_FAILED)
    #: Every CAL_COEFF word decoded: ("adc", channel), ("dac", row), ("opamp", column).
    coefficients: dict[tuple[str, int], cal.Coefficient]

    @property
    def quality_lsb(self) -> float:
        """:attr:`quality` in ADC LSB."""
        return self.quality / 2 ** cal.FRAC_BITS


def coefficient_entries(words: Any, rows: int, total_cols: int, adc_bits: int,
                        dac_bits: int) -> dict[tuple[str, int], cal.Coefficient]:
    """CAL_COEFF's words (by index) decoded and named by what they correct."""
    def decode(address: int) -> cal.Coefficient:
        return cal.unpack_coefficient(int(words[address]), adc_bits=adc_bits, dac_bits=dac_bits)
    shape = dict(rows=rows, total_cols=total_cols)
    entries = {("adc", c): decode(cal.adc_address(c, **shape)) for c in range(total_cols)}
    entries.update({("dac", r): decode(cal.dac_address(r, **shape)) for r in range(rows)})
    entries.update({("opamp", c): decode(cal.opamp_address(c, **shape)) for c in range(total_cols)})
    return entries


class ChipError(RuntimeError):
    """A command ended with STATUS.error other than NONE."""

    def __init__(self, command: str, error: ErrorCode, detail: int):
        super().__init__(f"{command} ended with {error.name} (detail 0x{detail:X})")
        self.command = command
        self.error = error
        self.detail = detail


class CommandTimeout(TimeoutError):
    """A command did not end within the driver's bound (poll count or IRQ timeout); it may
    still run: :meth:`ChipDriver.abort` stops it."""

    def __init__(self, command: str, bound: str):
        super().__init__(f"{command} did not end within {bound}")
        self.command = command


class UnsupportedChip(RuntimeError):
    """identify() found a device this driver does not know (ID, major version, parameters)."""


@dataclass(frozen=True)
class NMFSettings:
    """RUN_NMF's operands besides the buffers (NMF_SIZE, NMF_ITERATIONS, NMF_WINDOW_BASE,
    NMF_WINDOW_SPAN); solve timing and write-verify come from :meth:`ChipDriver.configure`."""

    m: int                       #: rows of R and W
    n: int                       #: columns of R and H
    k: int                       #: rank
    iterations: int              #: ANLS iterations (an H-step then a W-step each)
    #: (base, span) TARGET codes of the conductance window (``formats.window_codes``).
    window: tuple[int, int]
    #: Solves of one right-hand side repeated with a halved input after an over-range result.
    range_retries: int = 8


@dataclass(frozen=True)
class NMFProgress:
    """NMF_PROGRESS: iterations completed, the half-step (H or W), its phase (IDLE, PREPARE,
    PROGRAM, SOLVE, COMMIT) and the right-hand sides it finished."""

    iteration: int
    step: str
    phase: str
    rhs_done: int


#: What :meth:`ChipDriver.wait_nmf` calls with each new progress reading.
ProgressCallback = Callable[[NMFProgress], None]


@dataclass(frozen=True)
class NMFReport:
    """How a RUN_NMF ended: STATUS, the last progress, the counters (cumulative since reset:
    the caller subtracts a reading taken before), RUN_NMF's over-range retries and unresolved
    right-hand sides, and the progress readings seen while waiting."""

    status: Status
    progress: NMFProgress
    counters: Counters
    retries: int
    unresolved: int
    readings: tuple[NMFProgress, ...] = ()

    @property
    def completed(self) -> bool:
        return self.status.error == ErrorCode.NONE


@dataclass(frozen=True)
class NMFFactors:
    """The NMF buffers as read back: mantissas and exponents, and the floats they stand for
    (``formats.factor_from_fixed``; ``R ~ K W H``, docs/anls-sequencer.md)."""

    w_mantissa: NDArray[np.int64]     #: (m, k)
    w_row_exp: NDArray[np.int64]      #: (m,)
    w_col_exp: NDArray[np.int64]      #: (k,)
    h_mantissa: NDArray[np.int64]     #: (k, n)
    h_comp_exp: NDArray[np.int64]     #: (k,) per component
    h_col_exp: NDArray[np.int64]      #: (n,) per column of H
    W: NDArray[np.float64]
    H: NDArray[np.float64]

    @classmethod
    def from_fixed(cls, w_mantissa: ArrayLike, w_row_exp: ArrayLike, w_col_exp: ArrayLike,
                   h_mantissa: ArrayLike, h_comp_exp: ArrayLike,
                   h_col_exp: ArrayLike) -> "NMFFactors":
        arrays = [np.asarray(a, dtype=np.int64) for a in
                  (w_mantissa, w_row_exp, w_col_exp, h_mantissa, h_comp_exp, h_col_exp)]
        W = factor_from_fixed(arrays[0], arrays[1], arrays[2])
        H = factor_from_fixed(arrays[3], arrays[4], arrays[5])
        return cls(*arrays, W=W, H=H)


# ---- validation helpers ------------------------------------------------------------------

def _is_int(value: Any) -> bool:
    return not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, np.integer))


def _check_range(name: str, value: Any, low: int, high: int, unit: str = "") -> int:
    if not _is_int(value) or not low <= value <= high:
        suffix = f" ({unit})" if unit else ""
        raise ValueError(f"{name} must be an integer from {low} to {high}{suffix}; got {value!r}")
    return int(value)


def _check_mask(name: str, value: Any, width: int, what: str) -> int:
    top = 2 ** width - 1
    if not _is_int(value) or not 1 <= value <= top:
        raise ValueError(f"{name} must be a bit mask with at least one of the {width} {what} set "
                         f"(1 to 0x{top:X}); got {value!r}")
    return int(value)


def _check_codes(name: str, values: ArrayLike, shape_text: str, bits: int,
                 shape_ok: Callable[[tuple[int, ...]], bool]) -> NDArray[np.int64]:
    array = np.asarray(values)
    top = 2 ** bits - 1
    if array.dtype.kind not in "iu" or not shape_ok(array.shape) or \
            (array.size and (array.min() < 0 or array.max() > top)):
        raise ValueError(f"{name} must be {shape_text} of integer codes from 0 to {top}; got "
                         f"{array.dtype} array of shape {array.shape}")
    return array.astype(np.int64)


def set_bits(mask: int) -> tuple[int, ...]:
    """Indices of the set bits of ``mask``, lowest first."""
    return tuple(i for i in range(mask.bit_length()) if mask >> i & 1)


# ---- the API -----------------------------------------------------------------------------

class ChipDriver(abc.ABC):
    """The chip as the host sees it. Methods validate their arguments against :attr:`info`
    (ValueError with what was wrong and what is accepted) before the backend acts."""

    def __init__(self, info: ChipInfo):
        self.info = info
        self.timing: Timing | None = None
        self.programming: ProgramSettings | None = None
        #: (m, n, k) of the last :meth:`load_nmf` (None: the buffers were not loaded here).
        self.nmf_shape: tuple[int, int, int] | None = None
        #: Cycles of the last RUN_NMF :meth:`wait_nmf` saw end, when the backend can tell
        #: (None otherwise, and after an abort).
        self.nmf_cycles: int | None = None

    # -- identification and configuration -------------------------------------------------

    @abc.abstractmethod
    async def identify(self) -> ChipInfo:
        """Read the identity and build parameters; refuses a device whose ID or major
        version this driver does not know (:class:`UnsupportedChip`)."""

    async def configure(self, *, timing: Timing | None = None,
                        programming: ProgramSettings | None = None) -> None:
        """Set solve timing and/or write-verify settings; both are checked before anything
        is written. Settings not given keep their previous value."""
        if timing is None and programming is None:
            raise ValueError("configure needs timing=Timing(...) and/or "
                             "programming=ProgramSettings(...)")
        if timing is not None:
            self.check_timing(timing)
        if programming is not None:
            self.check_programming(programming)
        await self._configure(timing, programming)
        if timing is not None:
            self.timing = timing
        if programming is not None:
            self.programming = programming

    def check_timing(self, timing: Timing) -> None:
        """Raise ValueError unless the controller accepts ``timing``."""
        if not isinstance(timing, Timing):
            raise ValueError(f"timing must be a Timing; got {type(timing).__name__}")
        info = self.info
        top = 2 ** info.avg_max_log2
        samples = timing.adc_samples
        if not _is_int(samples) or not 1 <= samples <= top or samples & (samples - 1):
            raise ValueError(f"Timing.adc_samples must be a power of two from 1 to {top}; got "
                             f"{samples!r}")
        for name in ("dac_settle", "analog_settle", "watchdog"):
            _check_range(f"Timing.{name}", getattr(timing, name), 1, info.max_timer, "cycles")
        _check_range("Timing.solve_retries", timing.solve_retries, 0, 2 ** SOLVE_RETRY_BITS - 1,
                     "retries")

    def check_programming(self, settings: ProgramSettings) -> None:
        """Raise ValueError unless the controller accepts ``settings``."""
        if not isinstance(settings, ProgramSettings):
            raise ValueError(f"programming must be a ProgramSettings; got "
                             f"{type(settings).__name__}")
        info = self.info
        limits = (("tolerance", 1, 2 ** info.adc_bits - 1, "ADC codes"),
                  ("amp_start", 0, 2 ** info.amp_bits - 1, "amplitude codes"),
                  ("amp_step", 0, 2 ** info.amp_bits - 1, "amplitude codes"),
                  ("amp_max", 1, 2 ** info.amp_bits - 1, "amplitude codes"),
                  ("pulse_width", 1, 2 ** info.width_bits - 1, "width codes"),
                  ("pulse_budget", 0, 2 ** info.pulse_budget_bits - 1, "pulses"),
                  ("avg_log2", 0, info.avg_max_log2, "log2 of the samples per read"),
                  ("read_settle", 1, info.max_timer, "cycles"))
        for name, low, high, unit in limits:
            _check_range(f"ProgramSettings.{name}", getattr(settings, name), low, high, unit)

    # -- commands ----------------------------------------------------------------------------

    async def write_targets(self, codes: ArrayLike, first_row: int = 0,
                            first_col: int = 0) -> None:
        """Write-verify targets (READ_CELL codes) of the r x c cells from (``first_row``,
        ``first_col``) on, ``codes`` of shape (r, c); other cells keep theirs."""
        info = self.info
        first_row = _check_range("first_row", first_row, 0, info.rows - 1)
        first_col = _check_range("first_col", first_col, 0, info.total_cols - 1)
        rows, cols = info.rows - first_row, info.total_cols - first_col
        array = _check_codes(
            "codes", codes, f"an (r, c) array with r <= {rows} (ROWS - first_row) and c <= "
            f"{cols} (COLS + SPARE - first_col)", info.adc_bits,
            lambda s: len(s) == 2 and 1 <= s[0] <= rows and 1 <= s[1] <= cols)
        await self._write_targets(array, first_row, first_col)

    async def program_matrix(self, row_mask: int, col_enable: int) -> ProgramReport:
        """PROGRAM_MATRIX of every enabled row x enabled column to its target (write-verify
        with the configured :class:`ProgramSettings`)."""
        row_mask = _check_mask("row_mask", row_mask, self.info.rows, "rows")
        col_enable = _check_mask("col_enable", col_enable, self.info.total_cols, "columns")
        self._need_programming("program_matrix")
        return await self._program_matrix(row_mask, col_enable)

    async def refresh(self, row_mask: int, col_enable: int) -> RefreshReport:
        """REFRESH: re-verify every enabled row x enabled column against its target and
        re-program (write-verify) those out of tolerance; with the remap enabled, a column left
        with failed cells moves to a spare like after PROGRAM_MATRIX."""
        row_mask = _check_mask("row_mask", row_mask, self.info.rows, "rows")
        col_enable = _check_mask("col_enable", col_enable, self.info.total_cols, "columns")
        self._need_programming("refresh")
        return await self._refresh(row_mask, col_enable)

    async def set_remap(self, enable: bool, *, clear: bool = False) -> None:
        """REMAP_CONTROL: switch the transparent spare-column remap on or off; ``clear`` first
        forgets the map (every column on its own, every spare free)."""
        if enable not in (True, False) or clear not in (True, False):
            raise ValueError(f"enable and clear must be True or False; got {enable!r}, {clear!r}")
        await self._set_remap(bool(enable), bool(clear))

    async def remap_state(self) -> RemapState:
        """The column map, spares left and remap count now."""
        return await self._remap_state()

    # REFRESH and remap hooks: not abstract (wrappers need not forward them); a backend
    # without them refuses.

    async def _refresh(self, row_mask: int, col_enable: int) -> RefreshReport:
        raise NotImplementedError(f"{type(self).__name__} does not implement REFRESH")

    async def _set_remap(self, enable: bool, clear: bool) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not implement the spare-column remap")

    async def _remap_state(self) -> RemapState:
        raise NotImplementedError(f"{type(self).__name__} does not implement the spare-column remap")

    async def solve(self, rhs_codes: ArrayLike, row_mask: int, col_enable: int,
                    mode: str = "SOLVE") -> SolveResult:
        """One solve: ``rhs_codes`` (ROWS DAC codes; entries of rows outside ``row_mask`` are
        not used) on the enabled rows, results of the enabled columns."""
        info = self.info
        rhs = _check_codes("rhs_codes", rhs_codes, f"a ({info.rows},) vector", info.dac_bits,
                           lambda s: s == (info.rows,))
        row_mask = _check_mask("row_mask", row_mask, info.rows, "rows")
        col_enable = _check_mask("col_enable", col_enable, info.total_cols, "columns")
        if mode not in SOLVE_MODES:
            raise ValueError(f"mode must be one of {', '.join(SOLVE_MODES)}; got {mode!r}")
        if self.timing is None:
            raise RuntimeError("solve needs the timing: call configure(timing=Timing(...)) first")
        return await self._solve(rhs, row_mask, col_enable, mode)

    async def refine(self, b: ArrayLike, *, passes: int, row_mask: int, col_enable: int,
                     a_offset: int, gain: int, gain_shift: int, headroom: int = 2,
                     b_frac_bits: int = 0, a_codes: ArrayLike | None = None) -> RefineResult:
        """REFINE (docs/refinement.md): minimise ||B - A X|| over X >= 0 with A = REFINE_A -
        ``a_offset`` on the enabled rows and solution columns, by ``passes`` + 1 analog solves
        at most. ``b``: ROWS words (32-bit two's complement, DAC steps times
        2**``b_frac_bits``; rows outside ``row_mask`` are not used); ``col_enable``: a mask of
        the COLS solution columns (REFINE uses no spare); ``gain``, ``gain_shift``: X steps per
        ADC step of a correction (``anmf.model.refinement.correction_gain``); ``a_codes``
        (ROWS x COLS READ_CELL codes) replaces REFINE_A first, else REFINE_A holds what
        write-verify read back. Solve timing and averaging: :meth:`configure`'s Timing."""
        info = self.info
        words = np.asarray(b)
        low, high = -2 ** (REFINE_B_BITS - 1), 2 ** (REFINE_B_BITS - 1) - 1
        if words.dtype.kind not in "iu" or words.shape != (info.rows,) or \
                (words.size and (words.min() < low or words.max() > high)):
            raise ValueError(f"b must be a ({info.rows},) vector of integers from {low} to {high} "
                             f"({REFINE_B_BITS}-bit two's complement); got {words.dtype} array of "
                             f"shape {words.shape}")
        passes = _check_range("passes", passes, 0, 2 ** PASS_BITS - 1, "passes after pass 0")
        row_mask = _check_mask("row_mask", row_mask, info.rows, "rows")
        col_enable = _check_mask("col_enable", col_enable, info.cols, "solution columns")
        a_offset = _check_range("a_offset", a_offset, 0, 2 ** info.adc_bits - 1, "ADC codes")
        gain = _check_range("gain", gain, 0, 2 ** GAIN_BITS - 1)
        gain_shift = _check_range("gain_shift", gain_shift, 0, 2 ** GAIN_SHIFT_BITS - 1)
        headroom = _check_range("headroom", headroom, 0, 2 ** HEADROOM_BITS - 1, "DAC bits")
        b_frac_bits = _check_range("b_frac_bits", b_frac_bits, 0, REFINE_B_BITS - 1, "bits")
        a = None if a_codes is None else _check_codes(
            "a_codes", a_codes, f"a ({info.rows}, {info.cols}) array (ROWS x COLS)",
            info.adc_bits, lambda s: s == (info.rows, info.cols))
        if self.timing is None:
            raise RuntimeError("refine needs the timing: call configure(timing=Timing(...)) first")
        x_words, passes_done, residual_msb, over_range = await self._refine(
            words.astype(np.int64), a, passes=passes, row_mask=row_mask, col_enable=col_enable,
            a_offset=a_offset, gain=gain, gain_shift=gain_shift, headroom=headroom)
        return RefineResult(x_words, x_words * 2.0 ** -b_frac_bits, passes_done, residual_msb,
                            over_range)

    async def _refine(self, b: NDArray[np.int64], a_codes: NDArray[np.int64] | None, *,
                      passes: int, row_mask: int, col_enable: int, a_offset: int, gain: int,
                      gain_shift: int, headroom: int) -> tuple[NDArray[np.int64], int, int, bool]:
        """REFINE's backend hook (arguments validated): (REFINE_X, passes_done, residual_msb,
        over_range). Not abstract, like RUN_NMF's: a backend without it refuses."""
        raise NotImplementedError(f"{type(self).__name__} does not implement REFINE")

    async def read_cell(self, row: int, col: int) -> CellReading:
        """READ_CELL of (row, col), averaged and settled as the programming settings say."""
        row = _check_range("row", row, 0, self.info.rows - 1)
        col = _check_range("col", col, 0, self.info.total_cols - 1)
        self._need_programming("read_cell")
        return await self._read_cell(row, col)

    @abc.abstractmethod
    async def status(self) -> Status:
        """STATUS now."""

    @abc.abstractmethod
    async def counters(self) -> Counters:
        """The event counters now."""

    @abc.abstractmethod
    async def abort(self) -> Status:
        """Stop a running command (it ends with ABORTED) and wait until the controller is
        idle; returns STATUS then. Nothing happens if no command runs."""

    @abc.abstractmethod
    async def soft_reset(self) -> Status:
        """CONTROL.soft_reset: abort and forget a running command, clear STATUS and the
        counters; waits until idle. Configuration and buffers are kept."""

    # -- CALIBRATE -----------------------------------------------------------------------------

    async def calibrate(self, row_mask: int, col_enable: int, *, cal_settle: int = 4) -> CalibrationReport:
        """CALIBRATE the DACs of ``row_mask``, the ADC channels and op-amps of ``col_enable``,
        with the configured timing (averaging, DAC and analog settling, watchdog) and
        ``cal_settle`` cycles per reference. Entries that could not be measured are reported
        (CAL_FAILED, :attr:`CalibrationReport.failed_count`), not raised."""
        info = self.info
        row_mask = _check_mask("row_mask", row_mask, info.rows, "rows")
        col_enable = _check_mask("col_enable", col_enable, info.total_cols, "columns")
        cal_settle = _check_range("cal_settle", cal_settle, 1, info.max_timer, "cycles")
        if self.timing is None:
            raise RuntimeError("calibrate needs the timing: call configure(timing=Timing(...)) first")
        return await self._calibrate(row_mask, col_enable, cal_settle)

    async def set_corrections(self, corrections: Corrections) -> None:
        """Which corrections the following solves apply (CAL_CONTROL)."""
        if not isinstance(corrections, Corrections):
            raise ValueError(f"corrections must be a Corrections; got {type(corrections).__name__}")
        await self._set_corrections(corrections)

    async def _calibrate(self, row_mask: int, col_enable: int, cal_settle: int) -> CalibrationReport:
        raise NotImplementedError(f"{type(self).__name__} does not implement CALIBRATE")

    async def _set_corrections(self, corrections: Corrections) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not implement CALIBRATE")

    # -- RUN_NMF -------------------------------------------------------------------------------

    def check_nmf_problem(self, r_codes: ArrayLike, observed: ArrayLike, w_mantissa: ArrayLike,
                          w_col_exp: ArrayLike, w_row_exp: ArrayLike | None = None
                          ) -> tuple[NDArray[np.int64], NDArray[np.bool_], NDArray[np.int64],
                                     NDArray[np.int64], NDArray[np.int64]]:
        """The operands of :meth:`load_nmf` as arrays, or ValueError naming what is wrong."""
        info = self.info
        rows, cols = info.rows, info.cols
        r = _check_codes("r_codes", r_codes, f"an (m, n) array with 1 <= m, n <= {rows} (ROWS)",
                         info.r_bits, lambda s: len(s) == 2 and 1 <= s[0] <= rows
                         and 1 <= s[1] <= rows)
        m, n = r.shape
        seen = np.asarray(observed)
        if seen.dtype != np.bool_ or seen.shape != (m, n):
            raise ValueError(f"observed must be a bool array of the shape of r_codes {(m, n)}; "
                             f"got {seen.dtype} array of shape {seen.shape}")
        mant = _check_codes("w_mantissa", w_mantissa, f"an (m, k) array with m = {m} (rows of "
                            f"r_codes) and 1 <= k <= {cols} (COLS)", info.mantissa_bits,
                            lambda s: len(s) == 2 and s[0] == m and 1 <= s[1] <= cols)
        k = mant.shape[1]
        low, high = -2 ** (info.exp_bits - 1), 2 ** (info.exp_bits - 1) - 1
        exponents = []
        for name, values, length in (("w_col_exp", w_col_exp, k),
                                     ("w_row_exp", np.zeros(m, dtype=np.int64)
                                      if w_row_exp is None else w_row_exp, m)):
            array = np.asarray(values)
            if array.dtype.kind not in "iu" or array.shape != (length,) or \
                    (array.size and (array.min() < low or array.max() > high)):
                raise ValueError(f"{name} must be {length} integer exponents from {low} to "
                                 f"{high} ({info.exp_bits} bits); got {array.dtype} array of "
                                 f"shape {array.shape}")
            exponents.append(array.astype(np.int64))
        return r, seen, mant, exponents[0], exponents[1]

    async def load_nmf(self, r_codes: ArrayLike, observed: ArrayLike, w_mantissa: ArrayLike,
                       w_col_exp: ArrayLike, w_row_exp: ArrayLike | None = None) -> None:
        """Fill RUN_NMF's buffers: R as codes (m, n; ``formats.r_codes``), the observed-entry
        map (m, n; False = missing), the initial W as mantissas (m, k) with one exponent per
        component (k,) and per row (m,; default 0) (``formats.fixed_from_factor``)."""
        problem = self.check_nmf_problem(r_codes, observed, w_mantissa, w_col_exp, w_row_exp)
        await self._load_nmf(*problem)
        self.nmf_shape = (*problem[0].shape, problem[2].shape[1])

    def check_nmf_settings(self, settings: NMFSettings) -> None:
        """Raise ValueError unless the controller accepts ``settings``."""
        if not isinstance(settings, NMFSettings):
            raise ValueError(f"settings must be an NMFSettings; got {type(settings).__name__}")
        info = self.info
        for name, high in (("m", info.rows), ("n", info.rows), ("k", info.cols),
                           ("iterations", 2 ** _ITERATION_BITS - 1),
                           ("range_retries", 2 ** _RETRY_BITS - 1)):
            _check_range(f"NMFSettings.{name}", getattr(settings, name),
                         0 if name == "range_retries" else 1, high)
        window = settings.window
        top = 2 ** info.adc_bits
        if not (isinstance(window, tuple) and len(window) == 2 and all(map(_is_int, window))
                and 0 <= window[0] and window[1] >= 1 and window[0] + window[1] <= top):
            raise ValueError(f"NMFSettings.window must be (base, span) codes with base >= 0, "
                             f"span >= 1 and base + span <= {top} (2**ADC_BITS); got {window!r}")
        if self.nmf_shape is not None and (settings.m, settings.n, settings.k) != self.nmf_shape:
            raise ValueError(f"NMFSettings (m, n, k) = {(settings.m, settings.n, settings.k)} "
                             f"differ from the loaded problem's {self.nmf_shape}")

    async def start_nmf(self, settings: NMFSettings) -> None:
        """Start RUN_NMF (it runs on its own: :meth:`wait_nmf` follows it, :meth:`abort`
        stops it). Needs :meth:`configure` (timing and programming) first."""
        self.check_nmf_settings(settings)
        self._need_programming("start_nmf")
        await self._start_nmf(settings)

    async def wait_nmf(self, on_progress: ProgressCallback | None = None, *,
                       abort_if: Callable[[NMFProgress], bool] | None = None,
                       interval_s: float = 20e-6) -> NMFReport:
        """Wait until RUN_NMF ends, calling ``on_progress`` with every new NMF_PROGRESS
        reading (read every ``interval_s`` of bus time, and at each progress interrupt);
        ``abort_if(progress)`` true aborts the run. Returns the report; an error other than
        ABORTED raises :class:`ChipError`."""
        if isinstance(interval_s, bool) or not isinstance(interval_s, (int, float)) \
                or not 0 < interval_s < float("inf"):
            raise ValueError(f"interval_s must be a finite time > 0 (s); got {interval_s!r}")
        report = await self._wait_nmf(on_progress, abort_if, float(interval_s))
        if report.status.error not in (ErrorCode.NONE, ErrorCode.ABORTED):
            raise ChipError("RUN_NMF", report.status.error, report.status.detail)
        return report

    async def read_nmf(self, m: int, n: int, k: int) -> NMFFactors:
        """W (m x k) and H (k x n) from the NMF buffers: mantissas, exponents and floats."""
        info = self.info
        m = _check_range("m", m, 1, info.rows)
        n = _check_range("n", n, 1, info.rows)
        k = _check_range("k", k, 1, info.cols)
        return await self._read_nmf(m, n, k)

    # RUN_NMF's backend hooks: not abstract, so that wrappers of the single-command API (the
    # scoreboards' CheckedDriver) need not forward them; a backend without them refuses.

    def _no_nmf(self) -> NotImplementedError:
        return NotImplementedError(f"{type(self).__name__} does not implement RUN_NMF")

    async def nmf_progress(self) -> NMFProgress:
        """NMF_PROGRESS now."""
        raise self._no_nmf()

    async def nmf_counts(self) -> tuple[int, int]:
        """NMF_RETRY_COUNT and NMF_UNRESOLVED_COUNT now (cleared by soft_reset)."""
        raise self._no_nmf()

    async def _load_nmf(self, r: NDArray[np.int64], observed: NDArray[np.bool_],
                        w_mantissa: NDArray[np.int64], w_col_exp: NDArray[np.int64],
                        w_row_exp: NDArray[np.int64]) -> None:
        raise self._no_nmf()

    async def _start_nmf(self, settings: NMFSettings) -> None:
        raise self._no_nmf()

    async def _wait_nmf(self, on_progress: ProgressCallback | None,
                        abort_if: Callable[[NMFProgress], bool] | None,
                        interval_s: float) -> NMFReport:
        raise self._no_nmf()

    async def _read_nmf(self, m: int, n: int, k: int) -> NMFFactors:
        raise self._no_nmf()

    def _need_programming(self, what: str) -> None:
        if self.programming is None or self.timing is None:
            raise RuntimeError(f"{what} needs the programming settings and the timing (for "
                               f"the watchdog): call configure(timing=Timing(...), "
                               f"programming=ProgramSettings(...)) first")

    # -- backend hooks (arguments already validated) -----------------------------------------

    @abc.abstractmethod
    async def _configure(self, timing: Timing | None,
                         programming: ProgramSettings | None) -> None: ...

    @abc.abstractmethod
    async def _write_targets(self, codes: NDArray[np.int64], first_row: int,
                             first_col: int) -> None: ...

    @abc.abstractmethod
    async def _program_matrix(self, row_mask: int, col_enable: int) -> ProgramReport: ...

    @abc.abstractmethod
    async def _solve(self, rhs: NDArray[np.int64], row_mask: int, col_enable: int,
                     mode: str) -> SolveResult: ...

    @abc.abstractmethod
    async def _read_cell(self, row: int, col: int) -> CellReading: ...


# ---- over the register map ---------------------------------------------------------------

#: Registers and windows only the host writes: a write of the value already there is skipped
#: (the controller never changes them; soft reset keeps them).
_HOST_OWNED = ("COMMAND", "COL_ENABLE", "IRQ_ENABLE", "TIMING", "DAC_SETTLE", "ANALOG_SETTLE",
               "WATCHDOG", "PROGRAM_TOLERANCE", "PROGRAM_PULSES", "PROGRAM_AMPLITUDE",
               "PROGRAM_AMPLITUDE_MAX", "PROGRAM_PULSE", "READ_SETTLE", "ROW_MASK", "RHS",
               "TARGET", "NMF_SIZE", "NMF_ITERATIONS", "NMF_WINDOW_BASE", "NMF_WINDOW_SPAN",
               "NMF_R", "NMF_MASK", "SOLVE_RETRIES", "REFINE_CONTROL", "REFINE_GAIN", "REFINE_B")


class RegisterDriver(ChipDriver):
    """:class:`ChipDriver` over the register map.

    Args:
        bus: word access to the controller (:class:`~anmf.host.bus.RegisterBus`).
        regs: the register map's host view (offsets, fields, build parameters), e.g.
            ``HostRegisterMap.from_description(json_text)``.
        irq: the controller's interrupt line; with it the driver waits for IRQ_STATUS.done
            instead of polling STATUS.
        poll_limit: STATUS reads before a command counts as hung (without ``irq``).
        irq_timeout_s: bus time a command may take before it counts as hung (with ``irq``).
    """

    def __init__(self, bus: RegisterBus, regs: HostRegisterMap, *,
                 irq: InterruptLine | None = None, poll_limit: int = 100_000,
                 irq_timeout_s: float = 0.1):
        if not isinstance(bus, RegisterBus):
            raise ValueError(f"bus must implement RegisterBus (async read and write); got "
                             f"{type(bus).__name__}")
        if not isinstance(regs, HostRegisterMap):
            raise ValueError(f"regs must be a HostRegisterMap; got {type(regs).__name__}")
        if irq is not None and not isinstance(irq, InterruptLine):
            raise ValueError(f"irq must implement InterruptLine (async wait_high) or be None; "
                             f"got {type(irq).__name__}")
        _check_range("poll_limit", poll_limit, 1, 2 ** 31)
        if isinstance(irq_timeout_s, bool) or not isinstance(irq_timeout_s, (int, float)) \
                or not 0 < irq_timeout_s < float("inf"):
            raise ValueError(f"irq_timeout_s must be a finite time > 0 (s); got "
                             f"{irq_timeout_s!r}")
        super().__init__(ChipInfo.from_params(
            regs.params, (regs.VERSION.major.reset, regs.VERSION.minor.reset)))
        self.bus = bus
        self.regs = regs
        self.irq = irq
        self.poll_limit = int(poll_limit)
        self.irq_timeout_s = float(irq_timeout_s)
        self._host_owned = self._host_owned_ranges()
        #: Last value written to each host-owned address.
        self._shadow: dict[int, int] = {}
        self._irq_ready = False
        #: Bus transactions issued (reads, writes), for throughput figures.
        self.transactions = {"read": 0, "write": 0}
        #: The controller's clock in cycles, when the platform has one (a cocotb bench: the
        #: simulated time; a board: a free-running counter): RUN_NMF's cycles, from the start
        #: write to the end the host saw (up to one progress interval late), in nmf_cycles.
        self.cycle_counter: Callable[[], int] | None = None
        self._nmf_started: int | None = None

    def _host_owned_ranges(self) -> list[tuple[int, int]]:
        ranges = []
        for name in _HOST_OWNED:
            if not hasattr(self.regs, name):   # a build without the feature (RUN_NMF, REFINE)
                continue
            item = getattr(self.regs, name)
            depth = getattr(item, "depth", 1)
            ranges.append((item.offset, item.offset + 4 * depth))
        return ranges

    # -- bus access ------------------------------------------------------------------------

    async def _read(self, addr: int) -> int:
        self.transactions["read"] += 1
        return await self.bus.read(addr)

    async def _write(self, addr: int, value: int) -> None:
        owned = any(low <= addr < high for low, high in self._host_owned)
        if owned and self._shadow.get(addr) == value:
            return
        self.transactions["write"] += 1
        try:
            await self.bus.write(addr, value)
        except BusError:
            self._shadow.pop(addr, None)
            raise
        if owned:
            self._shadow[addr] = value

    async def _set(self, name: str, **fields: int | str) -> None:
        register = getattr(self.regs, name)
        await self._write(register.offset, register.pack(**fields))

    async def _get(self, name: str) -> dict[str, int]:
        register = getattr(self.regs, name)
        return register.unpack(await self._read(register.offset))

    def _error_code(self, value: int) -> ErrorCode:
        names = {v: k for k, v in self.regs.STATUS.error.values.items()}
        if value not in names:
            raise UnsupportedChip(f"STATUS.error = {value} is not in the register map's "
                                  f"ErrorCode values")
        return ErrorCode[names[value]]

    def _status(self, fields: Mapping[str, int]) -> Status:
        return Status(busy=bool(fields["busy"]), done=bool(fields["done"]),
                      error=self._error_code(fields["error"]), detail=fields["error_detail"])

    # -- identification and configuration ---------------------------------------------------

    async def identify(self) -> ChipInfo:
        regs = self.regs
        magic = (await self._get("ID"))["magic"]
        if magic != ID_MAGIC:
            raise UnsupportedChip(f"ID reads 0x{magic:08X}, not an ANMF controller "
                                  f"(0x{ID_MAGIC:08X})")
        version = await self._get("VERSION")
        major, minor = version["major"], version["minor"]
        if major != SUPPORTED_MAJOR_VERSION:
            raise UnsupportedChip(f"register map major version {major} is not supported by this "
                                  f"driver (it knows major version {SUPPORTED_MAJOR_VERSION})")
        found = {**await self._get("PARAMS_ARRAY"), **await self._get("PARAMS_CONVERTERS")}
        differ = {name: (value, regs.params[name]) for name, value in found.items()
                  if regs.params.get(name) != value}
        if differ:
            text = ", ".join(f"{name.upper()} {chip} (description {desc})"
                             for name, (chip, desc) in differ.items())
            raise UnsupportedChip(f"the chip's build parameters differ from the register-map "
                                  f"description: {text}")
        self.info = ChipInfo.from_params(regs.params, (major, minor))
        return self.info

    async def _configure(self, timing: Timing | None, programming: ProgramSettings | None) -> None:
        if timing is not None:
            await self._set("DAC_SETTLE", cycles=timing.dac_settle)
            await self._set("ANALOG_SETTLE", cycles=timing.analog_settle)
            await self._set("WATCHDOG", cycles=timing.watchdog)
            await self._set("SOLVE_RETRIES", limit=timing.solve_retries)
        if programming is not None:
            s = programming
            await self._set("PROGRAM_TOLERANCE", codes=s.tolerance)
            await self._set("PROGRAM_PULSES", max_pulses=s.pulse_budget)
            await self._set("PROGRAM_AMPLITUDE", start=s.amp_start, step=s.amp_step)
            await self._set("PROGRAM_AMPLITUDE_MAX", max=s.amp_max)
            await self._set("PROGRAM_PULSE", width=s.pulse_width)
            await self._set("READ_SETTLE", cycles=s.read_settle)

    # -- running a command -------------------------------------------------------------------

    async def _run(self, opcode: str, row: int = 0, col: int = 0) -> Status:
        """COMMAND, CONTROL.start, the bounded wait, STATUS."""
        if self.irq is not None and not self._irq_ready:
            # Stale causes (another host, a command before this driver) would hold the line.
            await self._set("IRQ_ENABLE", done=1)
            await self._set("IRQ_STATUS", done=1, error=1, over_range=1)
            self._irq_ready = True
        await self._set("COMMAND", opcode=opcode, row=row, col=col)
        await self._set("CONTROL", start=1)
        status = await self._wait_idle(opcode)
        if self.irq is not None:
            await self._set("IRQ_STATUS", done=1, error=1, over_range=1)
        return status

    async def _wait_idle(self, what: str) -> Status:
        if self.irq is not None:
            if not await self.irq.wait_high(self.irq_timeout_s):
                raise CommandTimeout(what, f"{self.irq_timeout_s} s (IRQ line)")
            status = self._status(await self._get("STATUS"))
            if status.busy:
                raise UnsupportedChip(f"{what}: the IRQ line rose while STATUS.busy is set")
            return status
        for _ in range(self.poll_limit):
            status = self._status(await self._get("STATUS"))
            if not status.busy and status.done:
                return status
        raise CommandTimeout(what, f"{self.poll_limit} STATUS reads")

    async def _write_row_mask(self, row_mask: int) -> None:
        window = self.regs.ROW_MASK
        for word in range(window.depth):
            await self._write(window.address(word), (row_mask >> (32 * word)) & 0xFFFF_FFFF)

    # -- commands ----------------------------------------------------------------------------

    async def _write_targets(self, codes: NDArray[np.int64], first_row: int,
                             first_col: int) -> None:
        window, stride = self.regs.TARGET, self.info.total_cols
        for (row, col), code in np.ndenumerate(codes):
            address = window.address((first_row + row) * stride + first_col + col)
            await self._write(address, int(code))

    async def _program_matrix(self, row_mask: int, col_enable: int) -> ProgramReport:
        assert self.programming is not None
        await self._set("TIMING", adc_samples=2 ** self.programming.avg_log2)
        await self._write_row_mask(row_mask)
        await self._set("COL_ENABLE", enable=col_enable)
        pulses_before = (await self._get("PULSE_COUNT"))["count"]
        failed_before = (await self._get("FAILED_CELL_COUNT"))["count"]
        status = await self._run("PROGRAM_MATRIX")
        if status.error not in (ErrorCode.NONE, ErrorCode.CELLS_FAILED):
            raise ChipError("PROGRAM_MATRIX", status.error, status.detail)
        pulses = (await self._get("PULSE_COUNT"))["count"] - pulses_before
        failed = (await self._get("FAILED_CELL_COUNT"))["count"] - failed_before
        rows, cols = set_bits(row_mask), set_bits(col_enable)
        fault_map = np.zeros((self.info.rows, self.info.total_cols), dtype=bool)
        window = self.regs.FAULT_MAP
        for row in rows:
            word = window.cells.get(await self._read(window.address(row)))
            fault_map[row, list(cols)] = [bool(word >> c & 1) for c in cols]
        return ProgramReport(status.error, pulses, failed, fault_map, rows, cols)

    async def _refresh(self, row_mask: int, col_enable: int) -> RefreshReport:
        self._need_remap_build("REFRESH")
        assert self.programming is not None
        await self._set("TIMING", adc_samples=2 ** self.programming.avg_log2)
        await self._write_row_mask(row_mask)
        await self._set("COL_ENABLE", enable=col_enable)
        pulses_before = (await self._get("PULSE_COUNT"))["count"]
        status = await self._run("REFRESH")
        if status.error not in (ErrorCode.NONE, ErrorCode.CELLS_FAILED):
            raise ChipError("REFRESH", status.error, status.detail)
        pulses = (await self._get("PULSE_COUNT"))["count"] - pulses_before
        result = await self._get("REFRESH_RESULT")
        failed = (await self._get("REFRESH_FAILED"))["cells"]
        return RefreshReport(status.error, result["checked"], result["reprogrammed"], failed, pulses)

    def _need_remap_build(self, what: str) -> None:
        if not self.regs.params.get("spare_remap", 0):
            raise NotImplementedError(f"{what}: this build has no REFRESH or spare-column remap "
                                      f"(SPARE_REMAP = 0)")

    async def _set_remap(self, enable: bool, clear: bool) -> None:
        self._need_remap_build("set_remap")
        if clear:
            await self._set("REMAP_CONTROL", enable=int(enable), clear=1)
        else:
            await self._set("REMAP_CONTROL", enable=int(enable))

    async def _remap_state(self) -> RemapState:
        self._need_remap_build("remap_state")
        window = self.regs.REMAP_MAP
        column_map = []
        for c in range(self.info.total_cols):
            column_map.append(window.physical.get(await self._read(window.address(c))))
        return RemapState(bool((await self._get("REMAP_CONTROL"))["enable"]), tuple(column_map),
                          (await self._get("REMAP_STATUS"))["spares_left"],
                          (await self._get("REMAP_COUNT"))["count"])

    async def _solve(self, rhs: NDArray[np.int64], row_mask: int, col_enable: int,
                     mode: str) -> SolveResult:
        assert self.timing is not None
        await self._set("TIMING", adc_samples=self.timing.adc_samples)
        window = self.regs.RHS
        for row in set_bits(row_mask):
            await self._write(window.address(row), int(rhs[row]))
        await self._write_row_mask(row_mask)
        await self._set("COL_ENABLE", enable=col_enable)
        status = await self._run(mode)
        if status.error != ErrorCode.NONE:
            raise ChipError(mode, status.error, status.detail)
        cols = set_bits(col_enable)
        results = self.regs.RESULTS
        words = [await self._read(results.address(c)) for c in cols]
        exponent = (await self._get("SOLVE_EXPONENT"))["exponent"]
        return SolveResult(cols, np.array([results.code.get(w) for w in words], dtype=np.int64),
                           np.array([bool(results.over_range.get(w)) for w in words]), exponent)

    async def _refine(self, b: NDArray[np.int64], a_codes: NDArray[np.int64] | None, *,
                      passes: int, row_mask: int, col_enable: int, a_offset: int, gain: int,
                      gain_shift: int, headroom: int) -> tuple[NDArray[np.int64], int, int, bool]:
        if not hasattr(self.regs, "REFINE_CONTROL"):
            raise UnsupportedChip("refine: the chip was built without REFINE (no REFINE_* "
                                  "registers)")
        assert self.timing is not None
        regs = self.regs
        await self._set("TIMING", adc_samples=self.timing.adc_samples)
        if a_codes is not None:
            await self._write_words("REFINE_A", np.arange(a_codes.size), a_codes.ravel())
        rows = np.array(set_bits(row_mask), dtype=np.int64)
        await self._write_words("REFINE_B", rows, b[rows] & 0xFFFF_FFFF)
        await self._write_row_mask(row_mask)
        await self._set("COL_ENABLE", enable=col_enable)
        await self._set("REFINE_CONTROL", passes=passes, headroom=headroom, a_offset=a_offset)
        await self._set("REFINE_GAIN", gain=gain, shift=gain_shift)
        status = await self._run("REFINE")
        if status.error != ErrorCode.NONE:
            raise ChipError("REFINE", status.error, status.detail)
        x = regs.REFINE_X.word.get(await self._read_words("REFINE_X", np.arange(self.info.cols)))
        refine_status = await self._get("REFINE_STATUS")
        return (np.asarray(x, dtype=np.int64), refine_status["passes_done"],
                refine_status["residual_msb"], bool(refine_status["over_range"]))

    async def _read_cell(self, row: int, col: int) -> CellReading:
        assert self.programming is not None
        await self._set("TIMING", adc_samples=2 ** self.programming.avg_log2)
        status = await self._run("READ_CELL", row=row, col=col)
        if status.error != ErrorCode.NONE:
            raise ChipError("READ_CELL", status.error, status.detail)
        results = self.regs.RESULTS
        word = await self._read(results.address(col))
        return CellReading(results.code.get(word), bool(results.over_range.get(word)))

    # -- CALIBRATE -----------------------------------------------------------------------------

    def _need_calibration(self) -> None:
        if "CAL_COEFF" not in self.regs.windows:
            raise UnsupportedChip("this build has no CALIBRATE (built with calibration=False)")

    async def _calibrate(self, row_mask: int, col_enable: int, cal_settle: int) -> CalibrationReport:
        self._need_calibration()
        assert self.timing is not None
        await self._set("TIMING", adc_samples=self.timing.adc_samples)
        await self._set("CAL_SETTLE", cycles=cal_settle)
        await self._write_row_mask(row_mask)
        await self._set("COL_ENABLE", enable=col_enable)
        status = await self._run("CALIBRATE")
        if status.error not in (ErrorCode.NONE, ErrorCode.CAL_FAILED):
            raise ChipError("CALIBRATE", status.error, status.detail)
        window = self.regs.windows["CAL_COEFF"]
        words = [await self._read(window.address(i)) for i in range(window.depth)]
        info = self.info
        return CalibrationReport(status.error, (await self._get("CAL_QUALITY"))["residual"],
                                 (await self._get("CAL_FAILED"))["count"],
                                 coefficient_entries(words, info.rows, info.total_cols, info.adc_bits,
                                                     info.dac_bits))

    async def _set_corrections(self, corrections: Corrections) -> None:
        self._need_calibration()
        await self._set("CAL_CONTROL", adc=int(corrections.adc), dac=int(corrections.dac),
                        opamp=int(corrections.opamp))

    # -- RUN_NMF -------------------------------------------------------------------------------

    async def _write_words(self, window_name: str, indices: NDArray[np.int64],
                           words: NDArray[np.int64]) -> None:
        window = self.regs.windows[window_name]
        for index, word in zip(indices.tolist(), words.tolist()):
            await self._write(window.address(index), word)

    async def _read_words(self, window_name: str, indices: NDArray[np.int64]) -> NDArray[np.int64]:
        window = self.regs.windows[window_name]
        return np.array([await self._read(window.address(i)) for i in indices.tolist()],
                        dtype=np.int64)

    def _nmf_indices(self, m: int, n: int, k: int) -> dict[str, NDArray[np.int64]]:
        """Window indices of R (i * ROWS + j), W (i * COLS + c), H (c * ROWS + j) and the
        exponents (rows, then ROWS + c)."""
        rows, cols = self.info.rows, self.info.cols
        return {"r": (np.arange(m)[:, None] * rows + np.arange(n)[None, :]).ravel(),
                "w": (np.arange(m)[:, None] * cols + np.arange(k)[None, :]).ravel(),
                "h": (np.arange(k)[:, None] * rows + np.arange(n)[None, :]).ravel(),
                "w_exp": np.concatenate([np.arange(m), rows + np.arange(k)]),
                "h_exp": np.concatenate([rows + np.arange(k), np.arange(n)])}

    async def _load_nmf(self, r: NDArray[np.int64], observed: NDArray[np.bool_],
                        w_mantissa: NDArray[np.int64], w_col_exp: NDArray[np.int64],
                        w_row_exp: NDArray[np.int64]) -> None:
        (m, n), k = r.shape, w_mantissa.shape[1]
        index = self._nmf_indices(m, n, k)
        mask = mask_words(observed, self.info.rows)
        await self._write_words("NMF_R", index["r"], r.ravel())
        await self._write_words("NMF_MASK", np.arange(mask.size), mask)
        await self._write_words("NMF_W", index["w"], w_mantissa.ravel())
        exponents = np.concatenate([w_row_exp, w_col_exp])
        await self._write_words("NMF_W_EXP", index["w_exp"],
                                np.asarray(exponent_word(exponents, self.info.exp_bits)))

    async def _start_nmf(self, settings: NMFSettings) -> None:
        assert self.programming is not None and self.timing is not None
        # RUN_NMF writes TARGET itself: forget what this driver wrote there.
        target = self.regs.TARGET
        end = target.offset + 4 * target.depth
        self._shadow = {a: v for a, v in self._shadow.items() if not target.offset <= a < end}
        # RUN_NMF's solves and verify reads both average TIMING.adc_samples samples.
        await self._set("TIMING", adc_samples=2 ** self.programming.avg_log2)
        await self._set("NMF_SIZE", m=settings.m, n=settings.n, k=settings.k)
        await self._set("NMF_ITERATIONS", count=settings.iterations,
                        range_retries=settings.range_retries)
        await self._set("NMF_WINDOW_BASE", code=settings.window[0])
        await self._set("NMF_WINDOW_SPAN", codes=settings.window[1])
        if self.irq is not None:
            await self._set("IRQ_ENABLE", done=1)
            await self._set("IRQ_STATUS", done=1, error=1, over_range=1)
            self._irq_ready = True
        # Clear a stale progress cause; with the IRQ line, each iteration wakes the host.
        await self._set("NMF_IRQ", progress=1, progress_enable=int(self.irq is not None))
        await self._set("COMMAND", opcode="RUN_NMF")
        self.nmf_cycles = None
        self._nmf_started = self.cycle_counter() if self.cycle_counter is not None else None
        await self._set("CONTROL", start=1)

    def _progress(self, fields: Mapping[str, int]) -> NMFProgress:
        return NMFProgress(iteration=fields["iteration"], step=NMF_STEPS[fields["step"]],
                           phase=NMF_PHASES[fields["phase"]], rhs_done=fields["rhs_done"])

    async def nmf_progress(self) -> NMFProgress:
        return self._progress(await self._get("NMF_PROGRESS"))

    async def nmf_counts(self) -> tuple[int, int]:
        return ((await self._get("NMF_RETRY_COUNT"))["count"],
                (await self._get("NMF_UNRESOLVED_COUNT"))["count"])

    async def _wait_nmf(self, on_progress: ProgressCallback | None,
                        abort_if: Callable[[NMFProgress], bool] | None,
                        interval_s: float) -> NMFReport:
        readings: list[NMFProgress] = []
        aborted = False
        # Bound: without the line, poll_limit rounds of reads; with it, irq_timeout_s of
        # quiet waits (each wake by a progress interrupt is at most one per iteration).
        quiet_limit = max(1, int(self.irq_timeout_s / interval_s))
        quiet = polls = 0
        while True:
            if self.irq is not None:
                woke = await self.irq.wait_high(interval_s)
                quiet = 0 if woke else quiet + 1
                if quiet > quiet_limit:
                    raise CommandTimeout("RUN_NMF", f"{self.irq_timeout_s} s (IRQ line)")
            else:
                polls += 1
                if polls > self.poll_limit:
                    raise CommandTimeout("RUN_NMF", f"{self.poll_limit} STATUS reads")
            status = self._status(await self._get("STATUS"))
            if status.done and not status.busy:
                break
            if self.irq is not None and woke:
                await self._set("NMF_IRQ", progress=1, progress_enable=1)
            progress = await self.nmf_progress()
            if not readings or progress != readings[-1]:
                readings.append(progress)
                if on_progress is not None:
                    on_progress(progress)
            if abort_if is not None and not aborted and abort_if(progress):
                await self._set("CONTROL", abort=1)
                aborted = True
        if self.irq is not None:
            await self._set("IRQ_STATUS", done=1, error=1, over_range=1)
        await self._set("NMF_IRQ", progress=1, progress_enable=0)
        progress = await self.nmf_progress()
        if not readings or progress != readings[-1]:
            readings.append(progress)
            if on_progress is not None:
                on_progress(progress)
        retries, unresolved = await self.nmf_counts()
        if self.cycle_counter is not None and self._nmf_started is not None:
            self.nmf_cycles = self.cycle_counter() - self._nmf_started if \
                status.error == ErrorCode.NONE else None
        return NMFReport(status, progress, await self.counters(), retries, unresolved,
                         tuple(readings))

    async def _read_nmf(self, m: int, n: int, k: int) -> NMFFactors:
        index = self._nmf_indices(m, n, k)
        regs, bits = self.regs, self.info.exp_bits
        w = regs.NMF_W.mantissa.get(await self._read_words("NMF_W", index["w"]))
        h = regs.NMF_H.mantissa.get(await self._read_words("NMF_H", index["h"]))
        w_exp = word_exponent(regs.NMF_W_EXP.exponent.get(
            await self._read_words("NMF_W_EXP", index["w_exp"])), bits)
        h_exp = word_exponent(regs.NMF_H_EXP.exponent.get(
            await self._read_words("NMF_H_EXP", index["h_exp"])), bits)
        return NMFFactors.from_fixed(w.reshape(m, k), w_exp[:m], w_exp[m:], h.reshape(k, n),
                                     h_exp[:k], h_exp[k:])

    async def status(self) -> Status:
        return self._status(await self._get("STATUS"))

    async def counters(self) -> Counters:
        values = [(await self._get(name))["count"] for name in
                  ("SOLVE_COUNT", "PULSE_COUNT", "OVER_RANGE_COUNT", "FAILED_CELL_COUNT",
                   "RANGE_RETRY_COUNT")]
        return Counters(*values)

    async def _until_not_busy(self, what: str) -> Status:
        for _ in range(self.poll_limit):
            status = self._status(await self._get("STATUS"))
            if not status.busy:
                return status
        raise CommandTimeout(what, f"{self.poll_limit} STATUS reads")

    async def abort(self) -> Status:
        await self._set("CONTROL", abort=1)
        status = await self._until_not_busy("abort")
        if self.irq is not None:
            await self._set("IRQ_STATUS", done=1, error=1, over_range=1)
        return status

    async def soft_reset(self) -> Status:
        await self._set("CONTROL", soft_reset=1)
        status = await self._until_not_busy("soft_reset")
        await self._set("IRQ_STATUS", done=1, error=1, over_range=1)
        return status
