"""ANLS run by the host: the outer loop in Python, every NNLS on the chip.

:func:`host_anls` alternates H-steps and W-steps as ``anmf.model.nmf.anls`` does, but each
half-step goes through a :class:`~anmf.host.driver.ChipDriver` (RTL or model): the stored
factor is programmed into the crossbar with PROGRAM_MATRIX, then every right-hand side is
one SOLVE. The scaling is the functional chip model's (model/chip.py, docs/model-chip.md):

1. Per-column block floating point of the stored factor A: ``A_s = A 2^-e_c`` with the
   smallest exponent that fits ``a_max = (g_max - g_offset) / g_unit``; cell targets are
   the READ_CELL codes of ``G = g_offset + A_s g_unit``. An all-zero column (a dead
   component) is switched off (COL_ENABLE bit 0) and its solution is 0.
2. Each right-hand side b gets its own exponent so that ``b 2^-e_b`` fits ``headroom``
   of the DAC's positive full scale (the DAC codes are its nominal codes), raised where
   the previous iterate predicts an output beyond ``output_target`` of the ADC range.
3. A result with an over-range column is solved again with the input halved (e_b + 1), at
   most ``max_range_retries`` times.
4. ``x = code volts`` (floored at 0: a clamped output may sit a diode drop below), and
   ``h_c = x_c 2^(e_b - e_c) / input_gain``.

Beyond the functional model: W and H^T keep separate cells when they fit (:func:`placement`),
and a factor column with failed cells moves to a spare column (docs/host-driver.md).

A problem larger than the array (m or n > ROWS, or k > COLS) is tiled as the functional
model tiles it (anmf.model.tiling, docs/tiling.md): the components are split into groups of
at most COLS (and s (s + 1) / 2 <= ROWS when the stored factor is taller than ROWS), updated
in turn within each half-step against the residual of the other groups (block coordinate
descent; signed inputs); a stored block taller than ROWS is replaced by its Caratheodory
row reduction M (<= s (s + 1) / 2 weighted rows of it, M^T M = F^T F) and each right-hand
side r by v = M G^+ F^T r, accumulated digitally over row blocks of ROWS rows. With ideal
parts each group solve is the exact NNLS of its block.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from anmf.model.afe import AnalogFrontEnd
from anmf.model.chip import INPUT_HEADROOM, column_exponents
from anmf.model.formats import code_to_volts, conductance_to_code, volts_to_code
from anmf.model.metrics import relative_error
from anmf.model.nmf import INITS, NMFResult, initialize
from anmf.model.tiling import block_gram_rhs, component_groups, group_size, reduce_rows

from .driver import ChipDriver, ChipInfo, ProgramReport, SolveResult

__all__ = ["AnalogScale", "HostAnlsResult", "host_anls", "check_problem", "placement"]


@dataclass(frozen=True)
class AnalogScale:
    """What the host knows of the analog side to map numbers to codes (a data sheet's
    figures, not a chip's individual errors): conductance scale, circuit gain, converter
    ranges, read-chain full scale."""

    g_unit_s: float            #: conductance of one unit of A
    g_offset_s: float          #: conductance standing for A = 0
    g_max_s: float             #: highest programmable conductance
    input_gain: float          #: x solves A x ~ input_gain v
    read_full_scale_s: float   #: conductance that reads as the ADC's positive full scale
    dac_range_v: tuple[float, float]
    adc_range_v: tuple[float, float]

    def __post_init__(self) -> None:
        for name in ("g_unit_s", "g_max_s", "input_gain", "read_full_scale_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not 0 < value < float("inf"):
                raise ValueError(f"AnalogScale.{name} must be a finite number > 0; got {value!r}")
        if not 0 <= self.g_offset_s < self.g_max_s:
            raise ValueError(f"AnalogScale needs 0 <= g_offset_s < g_max_s; got "
                             f"{self.g_offset_s!r} and {self.g_max_s!r}")
        for name in ("dac_range_v", "adc_range_v"):
            low, high = getattr(self, name)
            if not low < 0 < high:
                raise ValueError(f"AnalogScale.{name} must be a bipolar range (low < 0 < high); "
                                 f"got {(low, high)!r}")

    @classmethod
    def from_afe(cls, afe: AnalogFrontEnd) -> "AnalogScale":
        """The nominal figures of an AFE model's configuration."""
        c = afe.config
        return cls(g_unit_s=c.circuit.g_unit_s, g_offset_s=c.circuit.g_offset_s,
                   g_max_s=c.device.g_max_s, input_gain=c.circuit.input_gain,
                   read_full_scale_s=afe.read_full_scale_s,
                   dac_range_v=(c.dac.v_min_v, c.dac.v_max_v),
                   adc_range_v=(c.adc.v_min_v, c.adc.v_max_v))

    @property
    def a_max(self) -> float:
        """Largest stored factor value: g_max in units of g_unit above g_offset."""
        return (self.g_max_s - self.g_offset_s) / self.g_unit_s

    def conductance(self, scaled: ArrayLike) -> NDArray[np.float64]:
        """Conductance (S) standing for the scaled factor values (0 <= A_s <= a_max)."""
        return self.g_offset_s + np.asarray(scaled, dtype=np.float64) * self.g_unit_s

    def target_codes(self, scaled: ArrayLike, adc_bits: int) -> NDArray[np.int64]:
        """READ_CELL codes the write-verify programmer should reach for ``scaled``."""
        low, high = self.adc_range_v
        return np.asarray(conductance_to_code(self.conductance(scaled),
                                              full_scale_s=self.read_full_scale_s,
                                              bits=adc_bits, v_min_v=low, v_max_v=high))

    def dac_codes(self, volts: ArrayLike, dac_bits: int) -> NDArray[np.int64]:
        low, high = self.dac_range_v
        return np.asarray(volts_to_code(volts, dac_bits, low, high))

    def dac_volts(self, codes: ArrayLike, dac_bits: int) -> NDArray[np.float64]:
        low, high = self.dac_range_v
        return np.asarray(code_to_volts(np.asarray(codes), dac_bits, low, high))

    def adc_volts(self, codes: ArrayLike, adc_bits: int) -> NDArray[np.float64]:
        low, high = self.adc_range_v
        return np.asarray(code_to_volts(np.asarray(codes), adc_bits, low, high))


@dataclass(frozen=True)
class HostAnlsResult(NMFResult):
    """NMFResult plus what the chip did: ``stats`` (counts) and ``solve_codes`` (every
    solve's result codes, in order: what the RTL and the model must agree on)."""

    stats: dict[str, float] = field(default_factory=dict)
    solve_codes: tuple[NDArray[np.int64], ...] = ()
    program_reports: tuple[ProgramReport, ...] = ()


def check_problem(info: ChipInfo, shape: tuple[int, ...], k: int) -> bool:
    """Raise ValueError unless R (m, n) and rank k make a problem; returns True when it needs
    tiling (m or n > ROWS, or k > COLS), False when it fits one array."""
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"R must be a non-empty 2-D matrix (m, n); got shape {shape}")
    m, n = shape
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"rank k must be an integer >= 1 (and <= min(m, n)); got {k!r}")
    if k > min(m, n):
        raise ValueError(f"rank k = {k} exceeds min(m, n) = {min(m, n)} for R {m}x{n}")
    return bool(m > info.rows or n > info.rows or k > info.cols)


def placement(info: ChipInfo, shape: tuple[int, int], k: int,
              separate: bool = True) -> tuple[tuple[int, int], tuple[int, int]]:
    """Where W (m x k) and H^T (n x k) sit in the array: their first (row, column). With
    ``separate``, below each other when m + n <= ROWS, side by side when 2 k <= COLS, else
    (and without ``separate``) both at (0, 0)."""
    m, n = shape
    if separate and m + n <= info.rows:
        return (0, 0), (m, 0)
    if separate and 2 * k <= info.cols:
        return (0, 0), (0, k)
    return (0, 0), (0, 0)


def _initial(R: NDArray[np.float64], k: int, init: Any, seed: int) -> tuple[NDArray, NDArray]:
    if isinstance(init, str):
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; accepted: {', '.join(INITS)}, or a "
                             f"(W0, H0) pair")
        return initialize(R, k, init, seed)
    if not (isinstance(init, (tuple, list)) and len(init) == 2):
        raise ValueError(f"init must be one of {', '.join(INITS)} or a (W0, H0) pair; got "
                         f"{type(init).__name__}")
    m, n = R.shape
    factors = []
    for name, given, shape in (("W0", init[0], (m, k)), ("H0", init[1], (k, n))):
        array = np.array(given, dtype=np.float64)
        if array.shape != shape or not np.all(np.isfinite(array)) or np.any(array < 0):
            raise ValueError(f"init {name} must be a {shape} array of finite values >= 0; got "
                             f"shape {array.shape}")
        factors.append(array)
    return factors[0], factors[1]


class _HalfSteps:
    """One run's half-steps, with its counters and trace."""

    def __init__(self, driver: ChipDriver, scale: AnalogScale, max_range_retries: int,
                 headroom: float, output_target: float | None, repair: bool):
        self.driver = driver
        self.repair = repair
        #: Per factor placement (its corner): factor column -> the spare column replacing it.
        self.repairs: dict[tuple[int, int], dict[int, int]] = {}
        self.info = driver.info
        self.scale = scale
        self.retries = max_range_retries
        self.headroom = headroom
        self.output_target = output_target
        self.stats: dict[str, float] = dict.fromkeys(
            ("programs", "programmed_cells", "pulses", "failed_cells", "solves",
             "over_range_retries", "unresolved_over_range", "zero_rhs_skipped", "reductions",
             "digital_macs"), 0)
        self.solve_codes: list[NDArray[np.int64]] = []
        self.reports: list[ProgramReport] = []

    def _input_exponents(self, B: NDArray[np.float64], X_previous: NDArray[np.float64],
                         a_exponent: NDArray[np.int64]) -> NDArray[np.int64]:
        """Per right-hand side: fit the DAC (headroom), and keep the output the previous
        iterate predicts below ``output_target`` of the ADC range (fewer over-range
        retries; the prediction only ever lowers the input)."""
        scale = self.scale
        exponent = column_exponents(np.abs(B), self.headroom * scale.dac_range_v[1])
        if self.output_target is None:
            return exponent
        # x_c [V] = h_c input_gain 2^(e_c - e_b): the largest predicted output per column.
        predicted = (X_previous * np.exp2(a_exponent)[:, None] * scale.input_gain).max(axis=0)
        limit = self.output_target * scale.adc_range_v[1]
        needed = np.zeros_like(exponent)
        positive = predicted > 0
        needed[positive] = np.ceil(np.log2(predicted[positive] / limit)).astype(np.int64)
        return np.maximum(exponent, needed)

    async def _program(self, codes: NDArray[np.int64], first_row: int, first_col: int,
                       row_mask: int, col_enable: int) -> ProgramReport:
        await self.driver.write_targets(codes, first_row, first_col)
        report = await self.driver.program_matrix(row_mask, col_enable)
        self.reports.append(report)
        self.stats["programs"] += 1
        self.stats["programmed_cells"] += report.cells
        self.stats["pulses"] += report.pulses
        self.stats["failed_cells"] += report.failed_cells
        return report

    async def _place(self, A: NDArray[np.float64], corner: tuple[int, int],
                     live: NDArray[np.bool_]) -> NDArray[np.int64]:
        """Program the scaled factor into its cells; returns the physical column of each
        factor column (a spare where a column was repaired)."""
        info, scale = self.info, self.scale
        p, k = A.shape
        first_row, first_col = corner
        rows = slice(first_row, first_row + p)
        row_mask = ((1 << p) - 1) << first_row
        codes = scale.target_codes(A, info.adc_bits)
        physical = first_col + np.arange(k)
        repaired = self.repairs.setdefault(corner, {})
        # Columns already known faulty are not programmed again (their stuck cells would
        # take the whole pulse budget each time): their spare is.
        own = [c for c in np.flatnonzero(live) if c not in repaired]
        if own:
            report = await self._program(codes[:, own[0]:own[-1] + 1], first_row,
                                         first_col + own[0], row_mask,
                                         sum(1 << int(physical[c]) for c in own))
            faults = report.fault_map[rows, physical].sum(axis=0)
            # Spares are time-shared between the placements of W and H^T: a spare both need
            # is reprogrammed for each half-step (measured: cheaper in accuracy than leaving
            # a stuck column in use, docs/host-driver.md).
            spares = [info.cols + s for s in range(info.spare)
                      if info.cols + s not in repaired.values()]
            for c in sorted(own, key=lambda c: -faults[c]):
                if not faults[c] or not spares:
                    break
                repaired[int(c)] = spares.pop(0)
        for c, spare in repaired.items():
            if live[c]:
                await self._program(codes[:, c:c + 1], first_row, spare, row_mask, 1 << spare)
                physical[c] = spare
        return physical

    async def solve_all(self, A: NDArray[np.float64], B: NDArray[np.float64],
                        corner: tuple[int, int],
                        X_previous: NDArray[np.float64]) -> NDArray[np.float64]:
        """X (k x q): for every column b of B (p x q) the chip's NNLS solution of A x ~ b,
        with A programmed into the p x k cells from ``corner`` (first row, first column)."""
        info, scale = self.info, self.scale
        p, k = A.shape
        X = np.zeros((k, B.shape[1]))
        live = A.max(axis=0) > 0
        if not live.any():
            return X
        exponent = column_exponents(A, scale.a_max)
        scaled = np.clip(A * np.exp2(-exponent), 0.0, scale.a_max)
        physical = await self._place(scaled, corner, live) if self.repair \
            else await self._place_plain(scaled, corner, live)
        first_row = corner[0]
        row_mask = ((1 << p) - 1) << first_row
        col_enable = sum(1 << int(physical[c]) for c in np.flatnonzero(live))
        # SolveResult lists the enabled physical columns in ascending order.
        slot = np.argsort(np.argsort(physical[live]))
        exp_b = self._input_exponents(B, X_previous, exponent)
        rhs = np.full(info.rows, 1 << (info.dac_bits - 1), dtype=np.int64)
        rows = slice(first_row, first_row + p)
        for j in range(B.shape[1]):
            b = B[:, j]
            if not b.any():
                self.stats["zero_rhs_skipped"] += 1  # x = 0 is the exact solution
                continue
            result, e_b = await self._solve_with_retries(rhs, rows, b, int(exp_b[j]), row_mask,
                                                         col_enable)
            volts = np.maximum(scale.adc_volts(result.codes[slot], info.adc_bits), 0.0)
            X[live, j] = volts * np.exp2(e_b - exponent[live]) / scale.input_gain
        return X

    async def solve_tiled(self, A: NDArray[np.float64], B: NDArray[np.float64],
                          X_previous: NDArray[np.float64],
                          x_start: NDArray[np.float64] | None) -> NDArray[np.float64]:
        """X (k x q) for a stored factor A (p x k) beyond the array: component groups in turn
        against the others' residual (starting from ``x_start``, 0 if None), each block
        programmed directly when p <= ROWS, else through its row reduction."""
        info = self.info
        p, k = A.shape
        size = info.cols if p <= info.rows else group_size(info.rows, info.cols)
        groups = component_groups(k, size)
        q = B.shape[1]
        X = np.zeros((k, q)) if x_start is None or len(groups) == 1 else x_start.copy()
        for group in groups:
            others = np.setdiff1d(np.arange(k), group)
            residual = B
            if others.size and X[others].any():
                residual = B - A[:, others] @ X[others]   # signed: the DAC range is bipolar
                self.stats["digital_macs"] += p * others.size * q
            block = A[:, group]
            if p <= info.rows:
                X[group] = await self.solve_all(block, residual, (0, 0), X_previous[group])
                continue
            if not block.any():
                X[group] = 0.0   # a dead group: every component switched off
                continue
            reduction = reduce_rows(block)
            V = reduction.drive(block_gram_rhs(block, residual, info.rows))
            self.stats["reductions"] += 1
            self.stats["digital_macs"] += (p + reduction.matrix.shape[0]) * group.size * q
            X[group] = await self.solve_all(reduction.matrix, V, (0, 0), X_previous[group])
        return X

    async def _place_plain(self, A: NDArray[np.float64], corner: tuple[int, int],
                           live: NDArray[np.bool_]) -> NDArray[np.int64]:
        """Program the scaled factor into its cells, faults or not."""
        p, k = A.shape
        first_row, first_col = corner
        physical = first_col + np.arange(k)
        await self._program(self.scale.target_codes(A, self.info.adc_bits), first_row,
                            first_col, ((1 << p) - 1) << first_row,
                            sum(1 << int(physical[c]) for c in np.flatnonzero(live)))
        return physical

    async def _solve_with_retries(self, rhs: NDArray[np.int64], rows: slice,
                                  b: NDArray[np.float64], e_b: int, row_mask: int,
                                  col_enable: int) -> tuple[SolveResult, int]:
        """The solve of b, halving the input on over-range; returns it and its exponent."""
        dac_bits = self.info.dac_bits
        for halvings in range(self.retries + 1):
            rhs[rows] = self.scale.dac_codes(b * np.exp2(-(e_b + halvings)), dac_bits)
            result = await self.driver.solve(rhs, row_mask, col_enable, "SOLVE")
            self.stats["solves"] += 1
            self.solve_codes.append(result.codes)
            if not result.any_over_range:
                return result, e_b + halvings
            if halvings < self.retries:
                self.stats["over_range_retries"] += 1
        self.stats["unresolved_over_range"] += 1
        return result, e_b + self.retries


async def host_anls(driver: ChipDriver, R: ArrayLike, k: int, iters: int, *,
                    scale: AnalogScale, init: str | tuple[ArrayLike, ArrayLike] = "nndsvda",
                    seed: int = 0, max_range_retries: int = 8,
                    headroom: float = INPUT_HEADROOM, output_target: float | None = 0.95,
                    reuse_cells: bool = True, repair: bool = True) -> HostAnlsResult:
    """ANLS on the chip behind ``driver`` (configured: timing and programming settings).

    Args:
        driver: RegisterDriver (RTL, board) or ModelDriver.
        R: (m, n) non-negative data; beyond ROWS it is tiled (module docstring).
        k: rank, 1 <= k <= min(m, n); beyond COLS it is split into component groups.
        iters: outer iterations, each an H-step then a W-step.
        scale: the analog side's nominal figures (:meth:`AnalogScale.from_afe`).
        init: "nndsvda", "nndsvd", "random" or (W0, H0), as in ``anmf.model.nmf.anls``.
        seed: seed of the "random" initialization.
        max_range_retries: input halvings after an over-range result.
        headroom: fraction of the DAC's positive full scale a right-hand side is scaled to.
        output_target: fraction of the ADC's positive full scale the previous iterate's
            prediction of the largest output may reach (a lower input otherwise); None
            scales from the right-hand side alone, as model/chip.py does.
        reuse_cells: keep W and H^T in separate cells when they fit (:func:`placement`), so
            that each half-step reprograms cells that hold the previous iterate of the same
            factor (write-verify skips the cells already within tolerance, and most others
            need few pulses); otherwise both share the same cells.
        repair: after PROGRAM_MATRIX, move each factor column with failed cells (fault map)
            to a spare column, most failures first, while this factor has spares left; a
            repaired column is not programmed again (its stuck cells would take the whole
            pulse budget each time), its spare is, every half-step (W and H^T may share a
            spare).
    """
    start = time.perf_counter()
    if not isinstance(driver, ChipDriver):
        raise ValueError(f"driver must be a ChipDriver; got {type(driver).__name__}")
    if not isinstance(scale, AnalogScale):
        raise ValueError(f"scale must be an AnalogScale; got {type(scale).__name__}")
    R = np.asarray(R, dtype=np.float64)
    tiled = check_problem(driver.info, R.shape, k)
    if not np.all(np.isfinite(R)) or np.any(R < 0) or not R.any():
        raise ValueError("R must hold finite values >= 0, at least one of them positive")
    if isinstance(iters, bool) or not isinstance(iters, (int, np.integer)) or iters < 0:
        raise ValueError(f"iters must be an integer >= 0; got {iters!r}")
    if isinstance(max_range_retries, bool) or not isinstance(max_range_retries, int) \
            or not 0 <= max_range_retries <= 16:
        raise ValueError(f"max_range_retries must be an integer from 0 to 16; got "
                         f"{max_range_retries!r}")
    if isinstance(headroom, bool) or not isinstance(headroom, (int, float)) \
            or not 0 < headroom <= 1:
        raise ValueError(f"headroom must be a number in (0, 1]; got {headroom!r}")
    if output_target is not None and (isinstance(output_target, bool) or not isinstance(
            output_target, (int, float)) or not 0 < output_target <= 1):
        raise ValueError(f"output_target must be a number in (0, 1] or None; got "
                         f"{output_target!r}")
    for name, flag in (("reuse_cells", reuse_cells), ("repair", repair)):
        if not isinstance(flag, bool):
            raise ValueError(f"{name} must be True or False; got {flag!r}")
    if driver.timing is None or driver.programming is None:
        raise RuntimeError("host_anls needs a configured driver: call driver.configure("
                           "timing=..., programming=...) first")
    W, H = _initial(R, int(k), init, seed)
    w_corner, h_corner = placement(driver.info, R.shape, int(k), reuse_cells)
    steps = _HalfSteps(driver, scale, max_range_retries, float(headroom), output_target,
                       repair)
    initial_error = relative_error(R, W, H)
    errors = []
    for iteration in range(int(iters)):
        if tiled:
            # The group sweeps start from the iterate fitted to the other factor; the initial
            # H is not fitted to W, so the first H-step starts from 0 (as model/chip.py).
            H = await steps.solve_tiled(W, R, H, H if iteration else None)
            W = (await steps.solve_tiled(H.T, R.T, W.T, W.T)).T
        else:
            H = await steps.solve_all(W, R, w_corner, H)
            W = (await steps.solve_all(H.T, R.T, h_corner, W.T)).T
        errors.append(relative_error(R, W, H))
    return HostAnlsResult(W=W, H=H, errors=np.array(errors), initial_error=initial_error,
                          iterations=int(iters), seconds=time.perf_counter() - start,
                          method="host-anls", stats=steps.stats,
                          solve_codes=tuple(steps.solve_codes),
                          program_reports=tuple(steps.reports))
