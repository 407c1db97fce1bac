"""The functional chip model: ANLS where every NNLS goes through the DACs, the closed-loop
circuit and the ADCs of a configured analog front end.

One H-step (the W-step is the same with H^T and R^T):

1. Block floating point for the stored factor: ``A_s = A * 2**-e_A`` with the smallest
   power-of-two exponent that fits ``max(A_s) <= a_max = (g_max - g_offset) / g_unit``;
   the cells are programmed to ``G = g_offset + A_s * g_unit`` (write-verify through the
   device model, or exactly with ``exact_programming``).
2. Each right-hand side ``b_j`` gets its own exponent ``e_j`` so that ``b_j * 2**-e_j``
   fits the DAC's positive full scale; the DAC turns it into row voltages with its
   offsets, gain errors and INL.
3. The circuit settles (its steady state, with finite gain, offsets, clamp, rails and
   compensation mismatch) on the crossbar's effective conductances (IR drop included).
4. The ADC converts every output. A column with an over-range sample is solved again
   with its input halved (``e_j + 1``), at most ``max_range_retries`` times (the
   controller's over-range auto-scaling). ``x_j * 2**(e_j - e_A)`` is the solution.

Array size (docs/tiling.md): by default the model has one ``rows`` x ``cols`` crossbar (the
default build's 64 x 8) and tiles what does not fit: a stored factor taller than the array
is replaced by its Caratheodory row reduction (``anmf.model.tiling``), ranks beyond one
group of components are solved group by group (block coordinate descent), masked
right-hand sides per observation pattern; inputs are also lowered where the previous
solution predicts an output beyond ``OUTPUT_TARGET`` of the ADC range. ``rows=None,
cols=None`` is the single-array mode: one crossbar of m x k cells sized to each problem.

Missing entries and the ridge (docs/applications.md, section 3): ``mask`` opens the row
switch of an unobserved entry for that right-hand side only (the batched
``NNLSCircuit.solve_masked``); ``ridge`` adds k ridge rows to the array (row c holds
sqrt(ridge) in column c and is tied to 0 V), so the loop solves [A; sqrt(ridge) I] x ~
[b; 0]; ``failed_rows="exclude"`` switches out data rows holding a cell write-verify
could not program. The ideal preset equals ``anls(mask=, ridge=)`` to 1e-6.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np

from .circuit import NNLSCircuit
from .config import AFEConfig, resolve_afe
from .converters import ADC, DAC
from .crossbar import Crossbar
from .device import write_verify
from .metrics import relative_error
from .nmf import Callback, NMFResult, initialize
from .tiling import (DEFAULT_ARRAY_COLS, DEFAULT_ARRAY_ROWS, block_gram_rhs, component_groups,
                     group_size, mask_patterns, reduce_rows)

__all__ = ["ChipModel", "SolveStats", "ChipNMFResult"]

#: Fraction of the DAC's positive full scale a right-hand side is scaled to.
INPUT_HEADROOM = 0.9
#: Fraction of the ADC's positive full scale a predicted output may reach (tiling mode; the
#: host driver's default ``output_target``).
OUTPUT_TARGET = 0.95
#: What a solve does with a row that holds a cell write-verify could not program (a stuck
#: cell, mostly): "keep" solves with whatever the cell holds; "exclude" opens that row's
#: switch, so its entries count as missing for that half-step (the masked solve).
FAILED_ROW_POLICIES = ("keep", "exclude")


@dataclass
class SolveStats:
    """Counters over the solves of one model instance (what the controller's counters count)."""

    solves: int = 0
    over_range_retries: int = 0
    unresolved_over_range: int = 0
    programmed_cells: int = 0
    pulses: int = 0
    failed_cells: int = 0
    #: Rows switched out of the loop because a cell on them failed write-verify
    #: (``failed_rows="exclude"``), counted once per programming.
    excluded_rows: int = 0
    analog_settle_s: float = 0.0
    #: Array programmings (one per stored block: factor, group, reduced matrix, mask pattern).
    programs: int = 0
    #: Caratheodory row reductions of a stored block taller than the array (docs/tiling.md).
    reductions: int = 0
    #: Digital multiply-accumulates of the tiling: F^T r over row blocks, the reduced
    #: inputs M G^+ c, and the other groups' share of the residual (k > cols).
    digital_macs: int = 0

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ChipNMFResult(NMFResult):
    """NMFResult plus the analog counters of the run."""

    stats: dict[str, float] = field(default_factory=dict)


def column_exponents(A: np.ndarray, limit: float) -> np.ndarray:
    """Per column, the smallest integer e with max(A[:, c]) * 2**-e <= limit (0 for a zero
    column): block floating point with one power-of-two exponent per column."""
    peaks = A.max(axis=0, initial=0.0)
    exponent = np.zeros(A.shape[1], dtype=np.int64)
    nonzero = peaks > 0
    exponent[nonzero] = np.ceil(np.log2(peaks[nonzero] / limit)).astype(np.int64)
    return exponent


class ChipModel:
    """ANLS through the analog front end ``afe`` (a preset name, TOML path or AFEConfig)."""

    def __init__(self, afe: AFEConfig | str = "rram-3bit", *, max_range_retries: int = 8,
                 failed_rows: str = "keep", rows: int | None = DEFAULT_ARRAY_ROWS,
                 cols: int | None = DEFAULT_ARRAY_COLS, group_sweeps: int = 1):
        """``rows`` x ``cols`` is one crossbar (default: the default build's 64 x 8): a
        problem taller or wider than it is tiled (docs/tiling.md). ``rows=None,
        cols=None`` is the single-array mode: one crossbar sized to each problem.
        ``group_sweeps``: block-coordinate sweeps over the component groups per half-step
        when k exceeds what one solve takes."""
        self.afe = resolve_afe(afe)
        if (rows is None) != (cols is None):
            raise ValueError(f"rows and cols must both be integers >= 1 (one crossbar) or both None "
                             f"(single-array mode); got rows={rows!r}, cols={cols!r}")
        for name, value in (("rows", rows), ("cols", cols), ("group_sweeps", group_sweeps)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                                      or value < 1):
                raise ValueError(f"{name} must be an integer >= 1{' or None' if name != 'group_sweeps' else ''}; "
                                 f"got {value!r}")
        self.rows = None if rows is None else int(rows)
        self.cols = None if cols is None else int(cols)
        self.group_sweeps = int(group_sweeps)
        self._silicon: NNLSCircuit | None = None
        if not isinstance(max_range_retries, int) or max_range_retries < 0:
            raise ValueError(f"max_range_retries must be an integer >= 0; got {max_range_retries!r}")
        if failed_rows not in FAILED_ROW_POLICIES:
            raise ValueError(f"failed_rows must be one of {', '.join(repr(p) for p in FAILED_ROW_POLICIES)}; "
                             f"got {failed_rows!r}")
        self.max_range_retries = max_range_retries
        self.failed_rows = failed_rows
        self.rng = np.random.default_rng(self.afe.seed)
        self.stats = SolveStats()
        circuit = self.afe.circuit
        self.a_max = (self.afe.device.g_max_s - circuit.g_offset_s) / circuit.g_unit_s
        if self.a_max <= 0:
            raise ValueError("the device's g_max_s must exceed the circuit's g_offset_s")
        # One set of converters per chip: channels are drawn once, like silicon.
        self._dac: DAC | None = None
        self._adc: ADC | None = None

    # -- converters sized on first use (per-channel errors are drawn once) ----------------
    @property
    def tiled(self) -> bool:
        """True when problems are mapped onto a fixed rows x cols crossbar (tiling mode)."""
        return self.rows is not None

    def _converters(self, rows: int, cols: int) -> tuple[DAC, ADC]:
        if self.rows is not None and self.cols is not None:
            rows, cols = self.rows, self.cols   # the physical array's converters
        if self._dac is None or self._dac.channels < rows:
            self._dac = DAC(rows, self.afe.dac, self.rng)
        if self._adc is None or self._adc.channels < cols:
            self._adc = ADC(cols, self.afe.adc, self.rng)
        return self._dac, self._adc

    def program(self, A: np.ndarray) -> tuple[Crossbar, np.ndarray]:
        """Program A (m x k, >= 0) into a fresh crossbar; returns it and the per-column
        exponents e_c (A_s[:, c] = A[:, c] * 2**-e_c, max(A_s[:, c]) <= a_max)."""
        crossbar, exponent, _ = self._program(A)
        return crossbar, exponent

    def _program(self, A: np.ndarray) -> tuple[Crossbar, np.ndarray, np.ndarray]:
        """:meth:`program`, plus the (m, k) cells write-verify reported as failed."""
        A = np.asarray(A, dtype=np.float64)
        m, k = A.shape
        exponent = column_exponents(A, self.a_max)
        scaled = np.clip(A * np.exp2(-exponent), 0.0, self.a_max)
        circuit = self.afe.circuit
        target = circuit.g_offset_s + scaled * circuit.g_unit_s
        physical = self.afe.crossbar
        # The exact nodal IR-drop solve is done for arrays that fit the configured crossbar;
        # a larger (unphysical, untiled) array is modelled without wire resistance.
        fits = m <= physical.rows and k <= physical.cols + physical.spare
        self.ir_drop_modelled = bool(physical.ir_drop and fits)
        crossbar = Crossbar(physical.replace(rows=m, cols=k, spare=0, ir_drop=self.ir_drop_modelled),
                            self.afe.device, self.rng)
        failed = np.zeros((m, k), dtype=bool)
        if self.afe.exact_programming:
            crossbar.set_conductance(target)
        else:
            p = self.afe.programming
            result = write_verify(crossbar, target, tolerance_s=p.tolerance_s, max_pulses=p.max_pulses,
                                  amplitude_start_v=p.amplitude_start_v, amplitude_step_v=p.amplitude_step_v,
                                  amplitude_max_v=p.amplitude_max_v, width_s=p.width_s,
                                  reads_per_verify=p.reads_per_verify)
            self.stats.pulses += int(result.pulses.sum())
            self.stats.failed_cells += int(result.failed.sum())
            failed = np.asarray(result.failed, dtype=bool)
        self.stats.programmed_cells += m * k
        self.stats.programs += 1
        return crossbar, exponent, failed

    def solve(self, A: np.ndarray, B: np.ndarray, *, mode: str = "clamped", mask: np.ndarray | None = None,
              ridge: float = 0.0, x0: np.ndarray | None = None,
              previous: np.ndarray | None = None) -> np.ndarray:
        """X (k x n) with each column the analog solution of min ||A x - b_j||, x >= 0.

        Args:
            A: (m, k) stored factor, >= 0.
            B: (m, n) right-hand sides; entries outside ``mask`` are ignored.
            mode: "clamped" (NNLS) or "free" (least squares).
            mask: optional (m, n) bool, True where b_j is observed: row i is switched into
                the loop for right-hand side j only where ``mask[i, j]``. A right-hand side
                with no observed entry is not solved and reads 0. With
                ``failed_rows="exclude"`` data rows holding a failed cell are switched out too.
            ridge: >= 0, adds ``ridge * ||x||^2`` to every problem through k extra
                "ridge rows" of the array (row c holds sqrt(ridge) in column c, zero
                elsewhere, and is tied to 0 V): [A; sqrt(ridge) I] x ~ [b; 0].
            x0: optional (k, n) previous solution, >= 0: the start of the block-coordinate
                sweeps when k needs more than one component group (tiling mode; zeros
                otherwise). Ignored when one group holds all components.
            previous: optional (k, n) previous solution, >= 0 (tiling mode): each input is
                lowered where it predicts an output above ``OUTPUT_TARGET`` of the ADC range,
                as the host driver does (fewer over-range retries).

        In tiling mode (``rows``/``cols`` set) a block taller than the array is replaced by
        its Caratheodory row reduction and k beyond one group is solved group by group
        (docs/tiling.md); in single-array mode one crossbar holds the whole problem.
        """
        A = np.asarray(A, dtype=np.float64)
        B = np.asarray(B, dtype=np.float64)
        if A.ndim != 2 or B.ndim != 2 or A.shape[0] != B.shape[0]:
            raise ValueError(f"A (m, k) and B (m, n) must share m; got {A.shape} and {B.shape}")
        ridge = _check_ridge(ridge)
        m, k = A.shape
        if mode not in ("clamped", "free"):
            raise ValueError(f"mode must be one of 'clamped', 'free'; got {mode!r}")
        if mask is not None:
            mask = np.asarray(mask)
            if mask.dtype != np.bool_ or mask.shape != B.shape:
                raise ValueError(f"mask must be a bool array of shape {B.shape} like B (True = observed); "
                                 f"got dtype {mask.dtype}, shape {mask.shape}")
            B = np.where(mask, B, 0.0)
        x0, previous = (None if a is None else _check_solution(a, name, (k, B.shape[1]))
                        for a, name in ((x0, "x0"), (previous, "previous")))
        if self.tiled:
            return self._solve_tiled(A, B, mode, mask, ridge, x0, previous)
        return self._solve_array(A, B, mode, mask, ridge)

    def _solve_array(self, A: np.ndarray, B: np.ndarray, mode: str, mask: np.ndarray | None, ridge: float,
                     exclude_failed: bool = True, previous: np.ndarray | None = None) -> np.ndarray:
        """One crossbar holds [A; sqrt(ridge) I]; masked entries switch their rows out."""
        m, k = A.shape
        if ridge > 0.0:
            A = np.vstack([A, np.sqrt(ridge) * np.eye(k)])
            B = np.vstack([B, np.zeros((k, B.shape[1]))])
            if mask is not None:
                mask = np.vstack([mask, np.ones((k, B.shape[1]), dtype=bool)])
        crossbar, exp_a, failed = self._program(A)
        live = A[:m].max(axis=0, initial=0.0) > 0
        if exclude_failed and self.failed_rows == "exclude" and failed[:m].any():
            # Only data rows are switched out: a failed ridge cell over-regularizes one
            # half-step, while dropping its row would leave sparse columns unregularized.
            bad = failed.any(axis=1)
            bad[m:] = False
            self.stats.excluded_rows += int(bad.sum())
            mask = (~bad)[:, None] & (mask if mask is not None else True)
            mask = np.broadcast_to(mask, B.shape)
        if mask is None:
            return self._solve_programmed(crossbar, exp_a, B, mode, live_columns=live, grounded_rows=A.shape[0] - m,
                                          previous=previous)
        B = np.where(mask, B, 0.0)   # input exponents from the rows actually driven
        X = np.zeros((k, B.shape[1]))
        observed = mask[:m].any(axis=0)
        if observed.any():
            X[:, observed] = self._solve_programmed(
                crossbar, exp_a, B[:, observed], mode, live_columns=live, grounded_rows=A.shape[0] - m,
                row_enable=mask[:, observed], previous=None if previous is None else previous[:, observed])
        return X

    # -- tiling mode (docs/tiling.md) -----------------------------------------------------
    def _solve_tiled(self, A: np.ndarray, B: np.ndarray, mode: str, mask: np.ndarray | None, ridge: float,
                     x0: np.ndarray | None, previous: np.ndarray | None) -> np.ndarray:
        """Components in groups the array takes; with several groups, block coordinate
        descent: each group solves against the residual of the others (signed inputs)."""
        assert self.rows is not None and self.cols is not None
        m, k = A.shape
        if m + (k if ridge > 0.0 else 0) <= self.rows and k <= self.cols:
            return self._solve_array(A, B, mode, mask, ridge, previous=previous)
        # A group whose stored block is too tall is reduced to <= s (s + 1) / 2 rows.
        size = self.cols if m + (self.cols if ridge > 0.0 else 0) <= self.rows \
            else group_size(self.rows, self.cols)
        groups = component_groups(k, size)
        n = B.shape[1]
        X = np.zeros((k, n)) if x0 is None or len(groups) == 1 else np.maximum(x0, 0.0).copy()
        sweeps = 1 if len(groups) == 1 else self.group_sweeps
        for _ in range(sweeps):
            for group in groups:
                others = np.setdiff1d(np.arange(k), group)
                residual = B
                if others.size and X[others].any():
                    residual = B - A[:, others] @ X[others]
                    self.stats.digital_macs += m * others.size * n
                    if mask is not None:
                        residual = np.where(mask, residual, 0.0)
                X[group] = self._solve_group(A[:, group], residual, mode, mask, ridge,
                                             None if previous is None else previous[group])
        return X

    def _solve_group(self, A: np.ndarray, B: np.ndarray, mode: str, mask: np.ndarray | None,
                     ridge: float, previous: np.ndarray | None) -> np.ndarray:
        """X (s x n) for one group of s <= cols components: programmed directly when the
        block fits the rows, else through its row reduction; masked right-hand sides per
        observation pattern (each pattern its own block)."""
        assert self.rows is not None
        m, s = A.shape
        extra = s if ridge > 0.0 else 0
        if m + extra <= self.rows:
            return self._solve_array(A, B, mode, mask, ridge, previous=previous)
        if mask is None:
            return self._solve_reduced(A, B, mode, ridge, previous)
        X = np.zeros((s, B.shape[1]))
        patterns, pattern_of = mask_patterns(mask)
        for number in range(patterns.shape[1]):
            observed = patterns[:, number]
            members = np.flatnonzero(pattern_of == number)
            count = int(observed.sum())
            if count == 0:
                continue   # nothing observed: not solved, reads 0 (as in the single array)
            block, rhs = A[observed], B[observed][:, members]
            guess = None if previous is None else previous[:, members]
            if count + extra <= self.rows:
                X[:, members] = self._solve_array(block, rhs, mode, None, ridge, previous=guess)
            else:
                X[:, members] = self._solve_reduced(block, rhs, mode, ridge, guess)
        return X

    def _solve_reduced(self, A: np.ndarray, B: np.ndarray, mode: str, ridge: float,
                       previous: np.ndarray | None) -> np.ndarray:
        """Program M (M^T M = F^T F, F = [A; sqrt(ridge) I]) and drive v = M G^+ F^T b."""
        assert self.rows is not None
        m, s = A.shape
        F = np.vstack([A, np.sqrt(ridge) * np.eye(s)]) if ridge > 0.0 else A
        if not F.any():
            return np.zeros((s, B.shape[1]))   # every component of the group is dead
        reduction = reduce_rows(F)
        self.stats.reductions += 1
        # The ridge rows' right-hand side is 0: only the data rows enter F^T b.
        C = block_gram_rhs(A, B, self.rows)
        V = reduction.drive(C)
        self.stats.digital_macs += (m + reduction.matrix.shape[0]) * s * B.shape[1]
        # Rows of M are weighted mixtures of data and ridge rows: all are driven, none
        # switched out for a failed cell (that would change the Gram matrix).
        return self._solve_array(reduction.matrix, V, mode, None, 0.0, exclude_failed=False, previous=previous)

    def _solve_programmed(self, crossbar: Crossbar, exp_a: np.ndarray, B: np.ndarray, mode: str,
                          live_columns: np.ndarray, grounded_rows: int = 0,
                          row_enable: np.ndarray | None = None,
                          previous: np.ndarray | None = None) -> np.ndarray:
        m, k = crossbar.shape
        n = B.shape[1]
        dac, adc = self._converters(m, k)
        circuit = self._circuit(m, k)
        # A factor column that is all zero stands for a dead component: its op-amp is switched
        # off (col_enable 0) and its output is 0, instead of amplifying the compensation error.
        col_on = live_columns
        if not col_on.any():
            return np.zeros((k, n))
        G = crossbar.effective_conductance_s()
        full_scale = INPUT_HEADROOM * max(dac.config.v_max_v, 0.0)
        if full_scale <= 0:
            raise ValueError("the DAC range must include positive voltages to drive non-negative inputs")
        exp_b = column_exponents(np.abs(B), full_scale)
        if previous is not None:
            # x_c [V] = h_c input_gain 2^(e_c - e_b): raise e_b where the previous solution
            # predicts an output beyond OUTPUT_TARGET of the ADC range (only ever lowers v).
            predicted = (previous * np.exp2(exp_a)[:, None] * self.afe.circuit.input_gain).max(axis=0)
            limit = OUTPUT_TARGET * adc.config.v_max_v
            positive = predicted > 0
            needed = np.zeros_like(exp_b)
            needed[positive] = np.ceil(np.log2(predicted[positive] / limit)).astype(np.int64)
            exp_b = np.maximum(exp_b, needed)
        row_channels = np.arange(m)[:, None]
        col_channels = np.arange(k)[:, None]
        settle_tol = 2.0 ** -(adc.bits or 24)
        X = np.zeros((k, n))
        todo = np.arange(n)
        # Clamped outputs may sit a diode drop below 0 V; the digital side floors them at 0.
        floor = 0.0 if mode == "clamped" else -np.inf
        for attempt in range(self.max_range_retries + 1):
            codes = dac.code_for(B[:, todo] * np.exp2(-exp_b[todo]))
            volts = dac.voltage(codes, channels=row_channels)
            if grounded_rows:
                volts[m - grounded_rows:] = 0.0   # ridge rows are tied to ground, not driven
            if row_enable is None:
                solution = circuit.solve(G, volts, col_enable=col_on, mode=mode)
            else:
                solution = circuit.solve_masked(G, volts, row_enable[:, todo], col_enable=col_on, mode=mode)
            self.stats.solves += todo.size
            settle = np.asarray(solution.settle_time_estimate(settle_tol))
            self.stats.analog_settle_s += float(settle[np.isfinite(settle)].sum())
            x_codes, over = adc.convert(solution.steady_state, channels=col_channels)
            # A switched-off column is not read: its result is 0 (not the ADC's offset).
            x_volts = np.where(col_on[:, None], np.maximum(adc.voltage_of(x_codes), floor), 0.0)
            bad = over.any(axis=0)
            good = ~bad
            X[:, todo[good]] = x_volts[:, good] * self._unscale(exp_b[todo[good]], exp_a)
            if not bad.any():
                return X
            if attempt == self.max_range_retries:
                self.stats.unresolved_over_range += int(bad.sum())
                X[:, todo[bad]] = x_volts[:, bad] * self._unscale(exp_b[todo[bad]], exp_a)
                return X
            self.stats.over_range_retries += int(bad.sum())
            todo = todo[bad]
            exp_b[todo] += 1
        return X

    def _unscale(self, exp_b: np.ndarray, exp_a: np.ndarray) -> np.ndarray:
        # A_s x = gain * v with A_s = A diag(2^-e_c), v = b 2^-e_b  =>  h_c = x_c 2^(e_b - e_c) / gain
        return np.exp2(exp_b[None, :] - exp_a[:, None]) / self.afe.circuit.input_gain

    def _circuit(self, m: int, k: int) -> NNLSCircuit:
        if self.rows is not None and self.cols is not None:
            # Tiling mode: one physical array, drawn once; a block of m x k cells uses its
            # first m row amplifiers and first k column op-amps.
            if m > self.rows or k > self.cols:
                raise RuntimeError(f"internal: a {m}x{k} block does not fit the {self.rows}x{self.cols} array")
            if self._silicon is None:
                self._silicon = NNLSCircuit(self.afe.circuit, self.rows, self.cols, self.rng)
            view = copy.copy(self._silicon)
            view.rows, view.cols = m, k
            view.row_offset_v = self._silicon.row_offset_v[:m]
            view.column_offset_v = self._silicon.column_offset_v[:k]
            view.reference_conductance_s = self._silicon.reference_conductance_s[:k]
            return view
        # Single-array mode: offsets and compensation references are drawn once per array
        # size, like silicon.
        cache = self.__dict__.setdefault("_circuit_cache", {})
        if (m, k) not in cache:
            cache[(m, k)] = NNLSCircuit(self.afe.circuit, m, k, self.rng)
        return cache[(m, k)]

    def factorize(self, R: np.ndarray, k: int, *, iters: int, seed: int = 0,
                  init: str | tuple[np.ndarray, np.ndarray] = "nndsvda", mask: np.ndarray | None = None,
                  ridge: float = 0.0, callback: Callback | None = None) -> ChipNMFResult:
        """ANLS on the chip: H-step then W-step per iteration, every NNLS analog.

        ``mask`` (bool, True = observed) and ``ridge`` mean what they mean in
        :func:`anmf.model.nmf.anls`: missing entries switch their rows out of the loop
        for that right-hand side (the H-step uses ``mask``, the W-step ``mask.T``), and
        the ridge is realised by the ridge rows of :meth:`solve`. ``callback(iteration,
        W, H, error)`` runs after every iteration; returning True stops early.
        """
        start = time.perf_counter()
        R = np.asarray(R, dtype=np.float64)
        ridge = _check_ridge(ridge)
        if callback is not None and not callable(callback):
            raise ValueError(f"callback must be callable or None; got {type(callback).__name__}")
        if mask is not None:
            mask = np.asarray(mask)
            if mask.dtype != np.bool_ or mask.shape != R.shape:
                raise ValueError(f"mask must be a bool array of shape {R.shape} like R (True = observed); "
                                 f"got dtype {mask.dtype}, shape {mask.shape}")
            if mask.all():
                mask = None
            else:
                R = np.where(mask, R, 0.0)
        if isinstance(init, tuple):
            W, H = (np.array(a, dtype=np.float64) for a in init)
        else:
            W, H = initialize(R, k, init, seed, mask=mask)
        maskT = None if mask is None else np.ascontiguousarray(mask.T)
        initial_error = relative_error(R, W, H, mask)
        errors = []
        for iteration in range(1, iters + 1):
            # x0 starts the group sweeps when k is tiled (block coordinate descent) from the
            # iterate that matches the other factor. The initial H is not fitted to W
            # (NNDSVDa's W H overshoots camera by 17x): the first H-step starts from 0.
            # ``previous`` predicts the outputs to scale the inputs (tiling mode).
            H = self.solve(W, R, mask=mask, ridge=ridge, x0=H if iteration > 1 else None, previous=H)
            W = self.solve(H.T, R.T, mask=maskT, ridge=ridge, x0=W.T, previous=W.T).T
            errors.append(relative_error(R, W, H, mask))
            if callback is not None and callback(iteration, W, H, errors[-1]) is True:
                break
        return ChipNMFResult(W=W, H=H, errors=np.array(errors), initial_error=initial_error,
                             iterations=len(errors), seconds=time.perf_counter() - start, method="anls",
                             stats=self.stats.as_dict())


def _check_solution(value: np.ndarray, name: str, shape: tuple[int, int]) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.shape != shape or not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be a finite array of shape {shape} (k, n); got shape {array.shape}")
    return array


def _check_ridge(ridge: float) -> float:
    if isinstance(ridge, bool) or not isinstance(ridge, (int, float, np.floating, np.integer)) or not (
        np.isfinite(ridge) and ridge >= 0
    ):
        raise ValueError(f"ridge must be a finite number >= 0; got {ridge!r}")
    return float(ridge)

def gain_sweep(gains: tuple[float, ...] = (1.0, 4.0, 16.0, 64.0), *, iters: int = 10, rank: int = 4,
               afe: str = "rram-3bit") -> list[dict[str, float]]:
    """Relative error of the chip model against the circuit's input gain on the camera crop
    (rows/cols 200-263, /255): the figures behind CircuitConfig.input_gain's default."""
    from skimage import data

    from .config import preset
    from .nmf import anls

    R = data.camera()[200:264, 200:264].astype(np.float64) / 255.0
    reference = anls(R, rank, iters=iters).error
    rows = []
    for gain in gains:
        config = preset(afe)
        config = config.replace(circuit=config.circuit.replace(input_gain=gain))
        chip = ChipModel(config)
        # The last H-step's outputs in volts before any over-range halving: how much of the
        # ADC range a first attempt uses (the median over right-hand sides of max |x|).
        result = chip.factorize(R, rank, iters=iters)
        exponent = column_exponents(result.W, chip.a_max)
        volts = (result.H * np.exp2(exponent)[:, None]) * gain * np.exp2(-column_exponents(R, INPUT_HEADROOM))
        rows.append({"input_gain": gain, "rel_error": result.error, "reference": reference,
                     "adc_range_used": float(np.percentile(np.abs(volts).max(axis=0), 50) / chip.afe.adc.v_max_v),
                     "over_range_retries": result.stats["over_range_retries"]})
    return rows


if __name__ == "__main__":
    print("input_gain  rel_error  reference  first-attempt |x|max / ADC full scale  over-range retries")
    for row in gain_sweep():
        print(f"{row['input_gain']:>10.0f}  {row['rel_error']:>9.4f}  {row['reference']:>9.4f}  "
              f"{row['adc_range_used']:>38.3f}  {row['over_range_retries']:>18.0f}")
