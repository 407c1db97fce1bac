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
from anmf.model.formats import ProgramSettings
from anmf.model.golden import Error as ErrorCode

from .bus import BusError, InterruptLine, RegisterBus

__all__ = [
    "ChipDriver", "RegisterDriver", "ChipInfo", "Timing", "ProgramSettings", "SolveResult",
    "ProgramReport", "CellReading", "Status", "Counters", "ErrorCode", "ChipError",
    "CommandTimeout", "UnsupportedChip", "SOLVE_MODES", "ID_MAGIC", "SUPPORTED_MAJOR_VERSION",
]

#: What the ID register reads ("ANMF").
ID_MAGIC = 0x414E4D46
#: The register-map major version this driver knows (VERSION.major).
SUPPORTED_MAJOR_VERSION = 1
#: Opcodes :meth:`ChipDriver.solve` runs.
SOLVE_MODES = ("SOLVE", "SOLVE_FREE", "MVM")


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
                   pulse_budget_bits=get("pulse_budget_bits"), version=version)


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


@dataclass(frozen=True)
class SolveResult:
    """One SOLVE / SOLVE_FREE / MVM: the averaged ADC code and over-range flag of each
    enabled physical column, in ascending column order."""

    columns: tuple[int, ...]
    codes: NDArray[np.int64]
    over_range: NDArray[np.bool_]

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
               "TARGET")


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

    def _host_owned_ranges(self) -> list[tuple[int, int]]:
        ranges = []
        for name in _HOST_OWNED:
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
        return SolveResult(cols, np.array([results.code.get(w) for w in words], dtype=np.int64),
                           np.array([bool(results.over_range.get(w)) for w in words]))

    async def _read_cell(self, row: int, col: int) -> CellReading:
        assert self.programming is not None
        await self._set("TIMING", adc_samples=2 ** self.programming.avg_log2)
        status = await self._run("READ_CELL", row=row, col=col)
        if status.error != ErrorCode.NONE:
            raise ChipError("READ_CELL", status.error, status.detail)
        results = self.regs.RESULTS
        word = await self._read(results.address(col))
        return CellReading(results.code.get(word), bool(results.over_range.get(word)))

    async def status(self) -> Status:
        return self._status(await self._get("STATUS"))

    async def counters(self) -> Counters:
        values = [(await self._get(name))["count"] for name in
                  ("SOLVE_COUNT", "PULSE_COUNT", "OVER_RANGE_COUNT", "FAILED_CELL_COUNT")]
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
