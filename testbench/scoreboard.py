"""Scoreboards of the co-simulation: every solve against float NNLS, every programmed cell
against its target, with tolerances derived from the AFE configuration (docs/host-driver.md,
"Scoreboard tolerances", gives the derivation).

- :class:`SolveScoreboard`: a solve's ADC readings x against ``x* = input_gain NNLS(A, v)``,
  where A is the matrix the cells hold as the circuit sees it (effective conductances, IR
  drop included, in units of g_unit above g_offset) and v the nominal volts of the DAC codes.
  The remaining errors (DAC, op-amp offsets, finite gain, compensation mismatch, clamp, ADC)
  are random draws the scoreboard does not know; it knows their configured sizes and bounds
  ``||x - x*||_2`` by a K-sigma budget.
- :class:`ProgramScoreboard`: each programmed cell's conductance, as a read sees it, within
  the write-verify tolerance plus the read chain's error budget, or flagged in the fault map.
- :class:`CheckedDriver`: a :class:`~anmf.host.driver.ChipDriver` that forwards to another
  one and hands every solve and PROGRAM_MATRIX to the scoreboards (a monitor around the
  driver, so host code such as ``host_anls`` is checked without knowing it).

Nothing here imports cocotb: the model-side tests use the same scoreboards.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from numpy.typing import NDArray

from anmf.host.anls import AnalogScale
from anmf.host.driver import (CellReading, ChipDriver, ChipInfo, Counters, ProgramReport,
                              ProgramSettings, SolveResult, Status, Timing, set_bits)
from anmf.model.config import AFEConfig
from anmf.model.nnls import nnls_gram

__all__ = ["SolveScoreboard", "SolveCheck", "ProgramScoreboard", "ProgramCheck",
           "CheckedDriver", "K_SIGMA", "Agreement", "agree_statistically", "AGREEMENT_SE"]

#: Random errors are bounded at K standard deviations (Gaussian tail e^(-K^2/2) ~ 4e-6 per
#: term for norms: Gaussian concentration of a Lipschitz function).
K_SIGMA = 5.0

FloatArray = NDArray[np.float64]
#: (row_enable, col_enable) bool masks -> effective conductances (S), rows x total_cols.
HeldConductance = Callable[[NDArray[np.bool_], NDArray[np.bool_]], FloatArray]


def _gaussian_norm_bound(matrix: FloatArray, k_sigma: float) -> float:
    """Bound on ||L d|| for d with independent N(0, 1) entries, L = ``matrix``: the mean is
    at most ||L||_F, and ||L d|| is ||L||_2-Lipschitz, so it exceeds ||L||_F + K ||L||_2
    with probability below exp(-K^2/2)."""
    if matrix.size == 0:
        return 0.0
    return float(np.linalg.norm(matrix) + k_sigma * np.linalg.norm(matrix, 2))


@dataclass(frozen=True)
class SolveCheck:
    """One solve's check: the error norm against its tolerance, and the parts of the budget
    (volts at the outputs)."""

    ok: bool
    error_v: float
    tolerance_v: float
    x_measured_v: FloatArray
    x_reference_v: FloatArray
    lambda_min: float
    budget: dict[str, float]
    over_range: bool

    def describe(self) -> str:
        return (f"|x - x*| = {1e3 * self.error_v:.2f} mV, tolerance {1e3 * self.tolerance_v:.2f} "
                f"mV (lambda_min {self.lambda_min:.3g})")


class SolveScoreboard:
    """Checks SOLVE results against float NNLS (module docstring; docs/host-driver.md).

    Args:
        config: the AFE configuration the chip is built with (its error sizes).
        scale: the host's nominal analog figures.
        info: the build (converter bits).
        k_sigma: K of the K-sigma bounds.
    """

    def __init__(self, config: AFEConfig, scale: AnalogScale, info: ChipInfo, *,
                 k_sigma: float = K_SIGMA):
        if not isinstance(config, AFEConfig):
            raise ValueError(f"config must be an AFEConfig; got {type(config).__name__}")
        if not isinstance(k_sigma, (int, float)) or isinstance(k_sigma, bool) or k_sigma <= 0:
            raise ValueError(f"k_sigma must be a number > 0; got {k_sigma!r}")
        self.config = config
        self.scale = scale
        self.info = info
        self.k = float(k_sigma)
        self.checks: list[SolveCheck] = []

    @property
    def failures(self) -> list[SolveCheck]:
        return [c for c in self.checks if not c.ok]

    def _loop_gram(self, a: FloatArray) -> FloatArray:
        """Q = A^T A plus the finite-gain ridge diag(g_f T / A0) (units of g_unit^2)."""
        circuit = self.config.circuit
        gram = a.T @ a
        if math.isfinite(circuit.opamp_gain):
            col_sum = a.sum(axis=0) + a.shape[0] * circuit.g_offset_s / circuit.g_unit_s
            feedback = circuit.row_feedback_s / circuit.g_unit_s
            gram = gram + np.diag(feedback * col_sum / circuit.opamp_gain)
        return gram

    def reference(self, a_held: FloatArray, v_in: FloatArray) -> FloatArray:
        """x* (V): float NNLS of ``A x ~ input_gain v`` with the circuit's two deterministic,
        configured departures from the ideal: the finite-gain ridge on the diagonal of the
        Gram matrix, and the clamp at -clamp_v instead of 0 (NNLS in y = x + clamp_v)."""
        a = np.asarray(a_held, dtype=np.float64)
        circuit = self.config.circuit
        gram = self._loop_gram(a)
        clamp = circuit.clamp_v
        drive = circuit.input_gain * (a.T @ v_in) + clamp * gram.sum(axis=1)
        return nnls_gram(gram, drive) - clamp

    def check(self, a_held: FloatArray, rhs_codes: NDArray[np.int64], result: SolveResult,
              samples: int = 1) -> SolveCheck:
        """Check one clamped SOLVE.

        Args:
            a_held: (N, C) held matrix of the enabled rows and columns, units of g_unit
                above g_offset.
            rhs_codes: (N,) the DAC codes of the enabled rows.
            result: the solve's readings (C enabled columns).
            samples: ADC samples averaged per reading (Timing.adc_samples).
        """
        a_held = np.asarray(a_held, dtype=np.float64)
        rows, cols = a_held.shape
        if result.codes.shape != (cols,) or np.shape(rhs_codes) != (rows,):
            raise ValueError(f"a_held is {a_held.shape}: rhs_codes must be ({rows},) and the "
                             f"result hold {cols} columns; got {np.shape(rhs_codes)} and "
                             f"{result.codes.shape}")
        info = self.info
        v = self.scale.dac_volts(rhs_codes, info.dac_bits)
        x_ref = self.reference(a_held, v)
        x_meas = self.scale.adc_volts(result.codes, info.adc_bits)
        gram = self._loop_gram(a_held)
        lam = float(np.linalg.eigvalsh(gram)[0])
        budget = self._budget(a_held, v, x_ref, gram) if lam > 0 else {"loop": math.inf}
        budget["adc"] = self._adc_budget(x_ref, samples)
        tolerance = budget["loop"] + budget["adc"]
        error = float(np.linalg.norm(x_meas - x_ref))
        over_range = result.any_over_range
        # An over-range reading is clipped: the host retries it with a halved input; it is
        # checked only for being a real over-range (x* beyond the ADC's range within the
        # tolerance), not for its value.
        if over_range:
            ok = bool(np.max(x_ref) + tolerance >= self.scale.adc_range_v[1] - self._adc_lsb())
        else:
            ok = error <= tolerance
        check = SolveCheck(ok, error, tolerance, x_meas, x_ref, lam, budget, over_range)
        self.checks.append(check)
        return check

    def _adc_lsb(self) -> float:
        low, high = self.scale.adc_range_v
        return (high - low) / 2 ** self.info.adc_bits

    def _budget(self, a: FloatArray, v: FloatArray, x: FloatArray,
                gram: FloatArray) -> dict[str, float]:
        """Bound on the loop's error ||x - x*|| from the random errors (docs/host-driver.md).

        Each error is a perturbation delta p of the QP's linear term. The clamped solution is
        piecewise linear in p: where the free set is F its Jacobian is J_F = E_F Q_FF^-1 E_F^T,
        so ||delta x|| <= max over F of ||J_F delta p||. Gaussian errors delta p = L d are
        bounded per F by ||J_F L||_F + K ||J_F L||_2; worst-case ones by their norm times
        ||J_F||. The budget is the largest total over all free sets."""
        k, circuit, dac = self.k, self.config.circuit, self.config.dac
        rows, cols = a.shape
        gain = circuit.input_gain
        feedback = circuit.row_feedback_s / circuit.g_unit_s    # g_f / g_unit
        kappa = circuit.g_offset_s / circuit.g_unit_s           # g_offset in units
        col_sum = a.sum(axis=0) + rows * kappa                   # T_j / g_unit
        noise_gain = 1.0 + (a.sum(axis=1) + cols * kappa + gain) / feedback   # N_i
        dac_lsb = (dac.v_max_v - dac.v_min_v) / 2 ** self.info.dac_bits
        s = circuit.compensation_mismatch
        residual_sum = float((a @ x - gain * v).sum())
        eps_norm = s * (math.sqrt(cols) + k)
        # Gaussian terms: delta p = L d, d ~ N(0, I).
        gaussian = {
            # DAC offset and gain error per row: gain A^T delta v.
            "dac": gain * a.T * np.sqrt(dac.offset_std_v ** 2
                                        + (dac.gain_error_std * v) ** 2)[None, :],
            # Row op-amp offsets through their noise gain: g_f/g_unit A^T (N u).
            "row_offsets": feedback * circuit.offset_std_v * a.T * noise_gain[None, :],
            # Column op-amp offsets: g_f/g_unit T w.
            "column_offsets": feedback * circuit.offset_std_v * np.diag(col_sum),
            # Compensation mismatch, first order: kappa (1^T r) eps + kappa (A^T 1)(eps^T x).
            "compensation": kappa * s * (residual_sum * np.eye(cols)
                                         + np.outer(a.sum(axis=0), x)),
        }
        # Worst-case terms: (norm of delta p, through A^T or not).
        dac_inl = gain * dac.inl_lsb * dac_lsb * math.sqrt(rows)          # through A^T
        second_order = kappa ** 2 * rows * eps_norm ** 2 * float(np.linalg.norm(x))
        # Independent Gaussian sources add as one stacked map (variances add), so one
        # K-sigma bound covers them all.
        stacked = np.hstack(list(gaussian.values()))
        worst_total, worst_free = -1.0, [0]
        for size in range(1, cols + 1):
            for free in itertools.combinations(range(cols), size):
                f = list(free)
                inverse = np.linalg.inv(gram[np.ix_(f, f)])
                total = (_gaussian_norm_bound(inverse @ stacked[f], k)
                         + dac_inl * float(np.linalg.norm(inverse @ a[:, f].T, 2))
                         + second_order * float(np.linalg.norm(inverse, 2)))
                if total > worst_total:
                    worst_total, worst_free = total, f
        # The parts of the worst free set's budget, for information.
        inverse = np.linalg.inv(gram[np.ix_(worst_free, worst_free)])
        parts = {name: _gaussian_norm_bound(inverse @ L[worst_free], k)
                 for name, L in gaussian.items()}
        parts["dac_inl"] = dac_inl * float(np.linalg.norm(inverse @ a[:, worst_free].T, 2))
        parts["compensation_2nd"] = second_order * float(np.linalg.norm(inverse, 2))
        return {**parts, "loop": worst_total}

    def _adc_budget(self, x: FloatArray, samples: int) -> float:
        """||ADC error||: per column quantization (and the rounding of an average), K sigma
        offset and gain error, INL, DNL, K sigma noise (averaged)."""
        k, adc = self.k, self.config.adc
        lsb = self._adc_lsb()
        quantization = 0.5 * lsb * (2 if samples > 1 else 1)
        per_column = (quantization + k * adc.offset_std_v + adc.inl_lsb * lsb
                      + 0.5 * adc.dnl_lsb * lsb + k * adc.noise_lsb * lsb / math.sqrt(samples)
                      + k * adc.gain_error_std * np.abs(x))
        return float(np.linalg.norm(per_column))


@dataclass(frozen=True)
class ProgramCheck:
    """One PROGRAM_MATRIX's check."""

    ok: bool
    cells: int
    flagged: int
    #: Cells out of tolerance but not flagged (row, col, code error): the failures.
    unflagged_misses: tuple[tuple[int, int, float], ...]
    tolerance_codes: float
    report: ProgramReport
    worst_unflagged_codes: float

    def describe(self) -> str:
        return (f"{self.cells} cells, {self.report.pulses} pulses, {self.flagged} flagged; "
                f"worst unflagged error {self.worst_unflagged_codes:.1f} codes (tolerance "
                f"{self.tolerance_codes:.1f})")


class ProgramScoreboard:
    """Checks write-verify: every programmed cell within tolerance, or flagged.

    The verify read that accepted a cell had read noise and ADC errors; so the cell's
    conductance as an error-free read would see it (the effective conductance, IR drop
    included: what write-verify converges) lies within ``tolerance + budget`` codes of its
    target, the budget being K sigma of the read noise and ADC noise (averaged), K sigma of
    the ADC offset and gain error, INL, DNL, quantization and rounding, and half an LSB of
    read-chain settling (docs/host-driver.md).
    """

    def __init__(self, config: AFEConfig, scale: AnalogScale, info: ChipInfo, *,
                 k_sigma: float = K_SIGMA):
        self.config = config
        self.scale = scale
        self.info = info
        self.k = float(k_sigma)
        self.checks: list[ProgramCheck] = []

    @property
    def failures(self) -> list[ProgramCheck]:
        return [c for c in self.checks if not c.ok]

    def tolerance_codes(self, settings: ProgramSettings, target_codes: FloatArray) -> FloatArray:
        """Per cell: the write-verify tolerance plus the read chain's error budget (codes)."""
        c, k = self.config, self.k
        adc, device = c.adc, c.device
        low, high = self.scale.adc_range_v
        lsb = (high - low) / 2 ** self.info.adc_bits
        samples = 2 ** settings.avg_log2
        mid = 2 ** (self.info.adc_bits - 1)
        volts = (np.asarray(target_codes, dtype=np.float64) - mid) * lsb
        read_noise = device.read_noise_rel * np.abs(volts) / lsb     # codes, per sample
        noise = np.sqrt(read_noise ** 2 + adc.noise_lsb ** 2) / math.sqrt(samples)
        static = (k * adc.offset_std_v + k * adc.gain_error_std * np.abs(volts)) / lsb \
            + adc.inl_lsb + 0.5 * adc.dnl_lsb
        rounding = 0.5 + (0.5 if samples > 1 else 0.0) + 0.5   # quantization, average, settling
        return settings.tolerance + k * noise + static + rounding

    def check(self, report: ProgramReport, target_codes: NDArray[np.int64],
              read_conductance_s: FloatArray, settings: ProgramSettings) -> ProgramCheck:
        """``target_codes`` and ``read_conductance_s`` are rows x total_cols (the whole
        array); only the cells of the report's rows and columns are checked."""
        rows, cols = np.array(report.rows), np.array(report.columns)
        cells = np.ix_(rows, cols)
        low, high = self.scale.adc_range_v
        lsb = (high - low) / 2 ** self.info.adc_bits
        g = np.asarray(read_conductance_s, dtype=np.float64)[cells]
        # The code an error-free, unclipped read chain would give (not rounded).
        code = 2 ** (self.info.adc_bits - 1) + g / self.scale.read_full_scale_s * high / lsb
        target = np.asarray(target_codes)[cells].astype(np.float64)
        tolerance = self.tolerance_codes(settings, target)
        miss = np.abs(code - target) > tolerance
        flagged = report.fault_map[cells]
        unflagged = miss & ~flagged
        misses = tuple((int(rows[i]), int(cols[j]), float(code[i, j] - target[i, j]))
                       for i, j in zip(*np.nonzero(unflagged)))
        within = ~flagged
        worst = float(np.max(np.abs(code - target)[within])) if within.any() else 0.0
        counts_agree = int(flagged.sum()) == report.failed_cells
        check = ProgramCheck(not misses and counts_agree, int(rows.size * cols.size),
                             int(flagged.sum()), misses, float(np.max(tolerance)), report, worst)
        self.checks.append(check)
        return check


#: Two error distributions agree when their means differ by at most this many combined
#: standard errors (two-sided, ~0.3 % false alarms for normal means).
AGREEMENT_SE = 3.0


@dataclass(frozen=True)
class Agreement:
    """Whether two samples of a figure (e.g. host_anls relative errors over AFE seeds) agree:
    ``|mean_a - mean_b| <= n_se * sqrt(se_a^2 + se_b^2)``, se = std / sqrt(n)."""

    agree: bool
    z: float          #: the mean difference in combined standard errors
    mean_a: float
    mean_b: float
    se_a: float
    se_b: float

    def describe(self) -> str:
        return (f"means {self.mean_a:.5f} +- {self.se_a:.5f} and {self.mean_b:.5f} +- "
                f"{self.se_b:.5f}: {self.z:.2f} standard errors apart")


def agree_statistically(a: NDArray[np.float64] | list[float],
                        b: NDArray[np.float64] | list[float], *,
                        n_se: float = AGREEMENT_SE) -> Agreement:
    """The statistical agreement of two backends whose noise draws differ (a chip on a board
    against the model, or two runs with different noise seeds): each gives one figure per
    seed; they agree when the means are within ``n_se`` combined standard errors."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1 or a.size < 2 or b.size < 2:
        raise ValueError(f"agree_statistically needs two 1-D samples of at least 2 values; got "
                         f"shapes {a.shape} and {b.shape}")
    se_a = float(a.std(ddof=1) / math.sqrt(a.size))
    se_b = float(b.std(ddof=1) / math.sqrt(b.size))
    spread = math.hypot(se_a, se_b)
    difference = abs(float(a.mean() - b.mean()))
    z = difference / spread if spread > 0 else (0.0 if difference == 0 else math.inf)
    return Agreement(z <= n_se, z, float(a.mean()), float(b.mean()), se_a, se_b)


class CheckedDriver(ChipDriver):
    """Forwards every call to ``inner`` and checks solves and PROGRAM_MATRIX results.

    Args:
        inner: the driver under test (RegisterDriver on the RTL, or ModelDriver).
        held: effective conductances (S) of the array for given row/column enables: the
            testbench's view of the AFE model (``afe.crossbar.effective_conductance_s``).
        solves, programs: the scoreboards (None: that kind is not checked).
    """

    def __init__(self, inner: ChipDriver, held: HeldConductance, *,
                 solves: SolveScoreboard | None, programs: ProgramScoreboard | None):
        super().__init__(inner.info)
        self.inner = inner
        self.held = held
        self.solves = solves
        self.programs = programs
        self.targets = np.zeros((inner.info.rows, inner.info.total_cols), dtype=np.int64)
        g_unit = None if solves is None else solves.config.circuit.g_unit_s
        g_offset = None if solves is None else solves.config.circuit.g_offset_s
        self._units = (g_unit, g_offset)

    async def identify(self) -> ChipInfo:
        self.info = await self.inner.identify()
        return self.info

    async def _configure(self, timing: Timing | None, programming: ProgramSettings | None) -> None:
        await self.inner.configure(timing=timing, programming=programming)

    async def _write_targets(self, codes: NDArray[np.int64], first_row: int,
                             first_col: int) -> None:
        await self.inner.write_targets(codes, first_row, first_col)
        rows, cols = codes.shape
        self.targets[first_row:first_row + rows, first_col:first_col + cols] = codes

    def _masks(self, row_mask: int, col_enable: int) -> tuple[NDArray, NDArray]:
        rows = np.zeros(self.info.rows, dtype=bool)
        rows[list(set_bits(row_mask))] = True
        cols = np.zeros(self.info.total_cols, dtype=bool)
        cols[list(set_bits(col_enable))] = True
        return rows, cols

    async def _program_matrix(self, row_mask: int, col_enable: int) -> ProgramReport:
        report = await self.inner.program_matrix(row_mask, col_enable)
        if self.programs is not None:
            assert self.programming is not None
            every = np.ones(self.info.rows, dtype=bool), np.ones(self.info.total_cols, dtype=bool)
            self.programs.check(report, self.targets, self.held(*every), self.programming)
        return report

    async def _solve(self, rhs: NDArray[np.int64], row_mask: int, col_enable: int,
                     mode: str) -> SolveResult:
        result = await self.inner.solve(rhs, row_mask, col_enable, mode)
        if self.solves is not None and mode == "SOLVE":
            assert self.timing is not None
            rows_on, cols_on = self._masks(row_mask, col_enable)
            g_unit, g_offset = self._units
            g = self.held(rows_on, cols_on)[np.ix_(rows_on, cols_on)]
            self.solves.check((g - g_offset) / g_unit, rhs[rows_on], result,
                              self.timing.adc_samples)
        return result

    async def _read_cell(self, row: int, col: int) -> CellReading:
        return await self.inner.read_cell(row, col)

    async def status(self) -> Status:
        return await self.inner.status()

    async def counters(self) -> Counters:
        return await self.inner.counters()

    async def abort(self) -> Status:
        return await self.inner.abort()

    async def soft_reset(self) -> Status:
        return await self.inner.soft_reset()
