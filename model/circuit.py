"""The closed-loop NNLS circuit: crossbar + op-amps in feedback + output clamps.

The fixed factor A (m x k, non-negative) sits in the crossbar as G = g_offset + g_unit A.
Row voltages v (the DAC outputs) drive the rows; k column op-amps in feedback through the
array settle to the least-squares solution, and a clamp on each op-amp output holds
x >= 0 ("clamped" mode) or not ("free" mode, for iterative refinement). x is read as the
op-amp output voltages, scaled so that with ideal parts x [V] solves A x ~ v [V].

Equations (derivation, topology and the source of every default: docs/model-circuit.md).
With M = G - g_ref (the offset-compensated matrix; g_ref,j = g_offset (1 + eps_j) is the
reference cell of column j, eps_j its mismatch), T_j = sum_i G_ij (column node
conductance), S_i = sum_j G_ij, row noise gain N_i = 1 + (S_i + g_unit) / g_f, row op-amp
offsets u, column op-amp offsets w, open-loop gain A0 and unity-gain frequency
omega = 2 pi GBW, the column outputs obey the projected linear flow

    dx/dt = kappa * (p - Q x),   x clipped to [lower, upper]
    Q = M^T M + diag(g_f T / A0)
    p = g_unit M^T v + g_f (M^T (N u) - T w)
    kappa_j = omega / (g_f T_j)

so the steady state is the solution of the box-constrained convex QP
min 1/2 x^T Q x - p^T x over lower <= x <= upper (lower = -clamp_v in clamped mode,
-rail_v in free mode; upper = rail_v). With ideal parts it is exactly NNLS (or least
squares). The transient is integrated exactly, phase by phase: between clamp/rail
events the free outputs follow a linear ODE solved by eigendecomposition.
"""
from __future__ import annotations

import bisect
import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.optimize
from numpy.typing import ArrayLike, NDArray

from .converters import _below_one, _non_negative, _positive
from .nnls import nnls_gram, nnls_gram_batched

__all__ = ["CircuitConfig", "NNLSCircuit", "Solution", "MaskedSolution", "Transient", "MODES"]

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

#: Solve modes: outputs clamped at 0 (NNLS), or free (least squares, for refinement).
MODES = ("clamped", "free")

#: Eigenvalues below this fraction of the largest count as zero (singular Gram matrix).
_RCOND = 1e-10
#: Relative size under which a value is rounding noise (bound tests, event tests).
_REL_TOL = 1e-12
#: Decay exponent after which a phase counts as settled for event search (e^-50).
_SETTLED_EXPONENT = 50.0
#: Share one loop matrix per row-enable pattern when there are at most 1/8 as many
#: patterns as right-hand sides (as the reference NMF groups mask patterns).
_PATTERNS_PER_RHS_TO_GROUP = 1 / 8
#: Time points per phase on which events are searched before root refinement.
_EVENT_GRID = 512


@dataclass(frozen=True)
class CircuitConfig:
    """Op-amps, clamps and offset compensation. Defaults: the realistic ``rram-3bit`` preset.

    Units in the names: ``_v`` volts, ``_s`` siemens, ``_hz`` hertz; ``_std`` and
    ``mismatch`` are standard deviations of per-op-amp / per-column draws.
    """

    #: Open-loop DC gain A0 of every op-amp (inf = ideal). Assumption: 80 dB, a two-stage
    #: CMOS op-amp.
    opamp_gain: float = 1.0e4
    #: Gain-bandwidth product (Hz); with the array it sets the loop time constant.
    #: Assumption: 10 MHz, integrated op-amp driving the array (gives ~100 ns solves,
    #: the order the published circuits report).
    gbw_hz: float = 10.0e6
    #: Input offset voltage of every op-amp, std (V). Assumption: typical CMOS op-amp.
    offset_std_v: float = 2.0e-3
    #: Output saturation: outputs stay within +-rail_v (V); inf = no rails. Set above the
    #: ADC range so that a saturated output reads as over-range.
    rail_v: float = 1.2
    #: Clamp level: in clamped mode outputs stay >= -clamp_v (V). 0 = exact clamp.
    #: Assumption: an active (in-loop) diode clamp leaves ~10 mV.
    clamp_v: float = 0.01
    #: Relative std of each column's offset-compensation reference conductance.
    #: Assumption: reference cells are RRAM cells write-verified to the HRS level.
    compensation_mismatch: float = 0.05
    #: Conductance of one unit of A (S); also the input branch conductance, so x is in the
    #: units of A x ~ v. Default: one step of the 8 levels over 0.5-35 uS (Zuo et al. 2025).
    g_unit_s: float = (35.0e-6 - 0.5e-6) / 7
    #: Conductance that stands for A = 0 (S), subtracted by the compensation (HRS level).
    g_offset_s: float = 0.5e-6
    #: Input branch conductance as a multiple of g_unit_s (the DAC drives each row through
    #: input_gain * g_unit_s): the closed-loop gain from v to x, so x [V] solves
    #: A x ~ input_gain * v. A gain above 1 lets small solutions use the ADC range.
    #: Assumption: 16 puts typical NMF solutions of a 64-row array in the ADC range
    #: (measured: docs/model-circuit.md); the controller halves inputs on over-range.
    input_gain: float = 16.0
    #: Row transimpedance amplifiers' feedback conductance (S). Equal to g_unit_s, the row
    #: outputs carry the residual in volts.
    row_feedback_s: float = (35.0e-6 - 0.5e-6) / 7

    def __post_init__(self) -> None:
        _positive(self, "opamp_gain", allow_inf=True)
        _positive(self, "gbw_hz")
        _non_negative(self, "offset_std_v")
        _positive(self, "rail_v", allow_inf=True)
        _non_negative(self, "clamp_v")
        _below_one(self, "compensation_mismatch")
        _positive(self, "g_unit_s")
        _positive(self, "input_gain")
        _non_negative(self, "g_offset_s")
        _positive(self, "row_feedback_s")
        if not self.clamp_v < self.rail_v:
            raise ValueError(
                f"CircuitConfig needs clamp_v < rail_v (the clamp acts inside the rails); got "
                f"clamp_v={self.clamp_v!r}, rail_v={self.rail_v!r}")

    @classmethod
    def ideal(cls) -> "CircuitConfig":
        """Infinite gain, no offsets, no mismatch, no rails, exact clamp (the GBW is kept,
        so transients keep their realistic time scale)."""
        return cls(opamp_gain=math.inf, offset_std_v=0.0, rail_v=math.inf, clamp_v=0.0,
                   compensation_mismatch=0.0, input_gain=1.0)

    @classmethod
    def pessimistic(cls) -> "CircuitConfig":
        """60 dB gain, slow op-amps, large offsets, a leaky clamp, poor compensation."""
        return cls(opamp_gain=1.0e3, gbw_hz=2.0e6, offset_std_v=5.0e-3, rail_v=1.1,
                   clamp_v=0.05, compensation_mismatch=0.15)

    def replace(self, **changes: Any) -> "CircuitConfig":
        return dataclasses.replace(self, **changes)

    def bounds_v(self, mode: str) -> tuple[float, float]:
        """(lower, upper) output limits in a mode."""
        _check_mode(mode)
        lower = 0.0 - self.clamp_v if mode == "clamped" else -self.rail_v
        return lower, self.rail_v


def _check_mode(mode: Any) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(repr(m) for m in MODES)}; got {mode!r}")
    return mode


def _enable_mask(mask: ArrayLike | None, size: int, name: str) -> BoolArray:
    if mask is None:
        return np.ones(size, dtype=bool)
    array = np.asarray(mask)
    if array.shape != (size,) or array.dtype != np.bool_:
        raise ValueError(f"{name} must be a bool array of shape ({size},); got {array.dtype} "
                         f"array of shape {array.shape}")
    if not array.any():
        raise ValueError(f"{name} must enable at least one line; got all False")
    return array


# --------------------------------------------------------------------------------------
# Steady state: the box-constrained QP, many right-hand sides at once.


def _pinv_solve(Q: FloatArray, P: FloatArray) -> FloatArray:
    """Minimum-norm solution of Q X = P for symmetric PSD Q (eigenvalues below
    _RCOND * max treated as zero): exact for regular Q, the limit for singular Q."""
    w, V = np.linalg.eigh(Q)
    top = w.max(initial=0.0)
    keep = w > _RCOND * top if top > 0.0 else np.zeros_like(w, dtype=bool)
    Vk = V[:, keep]
    return Vk @ ((Vk.T @ P) / w[keep][:, None])


def _box_qp_single(Q: FloatArray, p: FloatArray, lower: float, upper: float) -> FloatArray:
    """One column of the QP with both bounds (only for the rare rail-limited columns):
    bounded-variable least squares on a square-root factor of Q."""
    w, V = np.linalg.eigh(Q)
    keep = w > _RCOND * w.max()
    root = np.sqrt(w[keep])
    R = root[:, None] * V[:, keep].T
    d = (V[:, keep].T @ p) / root
    k = Q.shape[0]
    result = scipy.optimize.lsq_linear(R, d, bounds=(np.full(k, lower), np.full(k, upper)),
                                       method="bvls", tol=1e-14)
    return np.clip(result.x, lower, upper)


def _polish(Q: FloatArray, p: FloatArray, x: FloatArray, lower: float,
            upper: float) -> FloatArray:
    """Snap near-bound values onto the bound and re-solve the free ones exactly."""
    scale = max(np.abs(x).max(initial=0.0), 1.0)
    at_lower = x <= lower + 10 * _REL_TOL * scale
    at_upper = x >= upper - 10 * _REL_TOL * scale
    fixed = at_lower | at_upper
    out = np.where(at_lower, lower, np.where(at_upper, upper, x))
    free = ~fixed
    if free.any():
        rhs = p[free] - Q[np.ix_(free, fixed)] @ out[fixed]
        candidate = _pinv_solve(Q[np.ix_(free, free)], rhs[:, None])[:, 0]
        if np.all(candidate >= lower) and np.all(candidate <= upper):
            out[free] = candidate
    return out


def _solve_box_qp(Q: FloatArray, P: FloatArray, lower: float, upper: float) -> FloatArray:
    """min 1/2 x^T Q x - p^T x, lower <= x <= upper, for every column p of P.

    Lower-bounded problems go to the block-principal-pivoting NNLS (model/nnls.py) after
    the shift y = x - lower; the few columns that also reach the upper rail are redone
    one by one with both bounds.
    """
    if math.isinf(lower):
        X = _pinv_solve(Q, P)
    else:
        shift = Q.sum(axis=1) * lower
        X = nnls_gram(Q, P - shift[:, None]) + lower
    scale = max(np.abs(X).max(initial=0.0), 1.0)
    outside = np.any((X > upper + _REL_TOL * scale) | (X < lower - _REL_TOL * scale), axis=0)
    for j in np.flatnonzero(outside):
        X[:, j] = _polish(Q, P[:, j], _box_qp_single(Q, P[:, j], lower, upper), lower, upper)
    return X


def _solve_box_qp_batched(Qs: FloatArray, P: FloatArray, lower: float, upper: float) -> FloatArray:
    """:func:`_solve_box_qp` when column j of P has its own matrix Qs[j] (n, k, k)."""
    if math.isinf(lower):
        w, V = np.linalg.eigh(Qs)
        top = w.max(axis=1, initial=0.0)[:, None]
        keep = (w > _RCOND * top) & (top > 0.0)
        coeff = np.einsum("nki,kn->ni", V, P)
        coeff = np.where(keep, coeff / np.where(keep, w, 1.0), 0.0)
        X = np.einsum("nki,ni->kn", V, coeff)
    else:
        shift = Qs.sum(axis=2).T * lower
        X = nnls_gram_batched(Qs, P - shift) + lower
    return _finish_at_rails(Qs, P, X, lower, upper)


def _solve_box_qp_shared(Q: FloatArray, P: FloatArray, lower: float, upper: float) -> FloatArray:
    """:func:`_solve_box_qp` with the rail-limited columns pivoted together (masked solves,
    where every over-range retry starts with many of them)."""
    if math.isinf(lower):
        X = _pinv_solve(Q, P)
    else:
        shift = Q.sum(axis=1) * lower
        X = nnls_gram(Q, P - shift[:, None]) + lower
    return _finish_at_rails(np.broadcast_to(Q, (P.shape[1],) + Q.shape), P, X, lower, upper)


def _finish_at_rails(Qs: FloatArray, P: FloatArray, X: FloatArray, lower: float, upper: float) -> FloatArray:
    """Redo the columns of X (solved without the upper rail) that leave the box: pivoted
    together, and the rare ones that do not converge one by one."""
    scale = max(np.abs(X).max(initial=0.0), 1.0)
    outside = np.flatnonzero(np.any((X > upper + _REL_TOL * scale) | (X < lower - _REL_TOL * scale), axis=0))
    if outside.size:
        X[:, outside], converged = _box_pivoting_batched(Qs[outside], P[:, outside], X[:, outside], lower, upper)
        for j in outside[~converged]:
            X[:, j] = _polish(Qs[j], P[:, j], _box_qp_single(Qs[j], P[:, j], lower, upper), lower, upper)
    return X


def _box_pivoting_batched(Qs: FloatArray, P: FloatArray, X0: FloatArray, lower: float,
                          upper: float) -> tuple[FloatArray, BoolArray]:
    """Block principal pivoting for the box QP, column j with its own Qs[j] (n, k, k).

    Each variable is free, at ``lower`` or at ``upper``. Free ones solve their block of
    Q x = p given the bound ones; a free value outside the box goes to that bound, a bound
    one whose gradient Q x - p points into the box is freed; all violators swap at once.
    Starts from X0 (the lower-bounded solution). Returns X (k, n) and which columns met
    the KKT conditions (to the tolerances of :func:`_solve_box_qp`) within the rounds.
    """
    n, k, _ = Qs.shape
    X = np.clip(X0, lower, upper)
    at_upper = X0 >= upper
    at_lower = ~at_upper & (X0 <= lower)
    done = np.zeros(n, dtype=bool)
    eye = np.eye(k, dtype=bool)
    p_scale = np.abs(P).max(axis=0) + np.abs(Qs).max(axis=(1, 2)) * max(abs(lower), abs(upper))
    for _ in range(3 * k + 10):
        todo = np.flatnonzero(~done)
        if todo.size == 0:
            break
        Q, p = Qs[todo], P[:, todo]
        free = ~(at_lower[:, todo] | at_upper[:, todo])
        bound_value = np.where(at_upper[:, todo], upper, lower)
        both_free = free.T[:, :, None] & free.T[:, None, :]
        system = np.where(both_free, Q, 0.0) + (eye[None] & (~free).T[:, :, None])
        rhs = np.where(free, p - np.einsum("nij,jn->in", Q, np.where(free, 0.0, bound_value)), bound_value)
        try:
            x = np.linalg.solve(system, rhs.T[:, :, None])[:, :, 0].T
        except np.linalg.LinAlgError:
            break   # a singular free block: leave these columns to the one-by-one path
        gradient = np.einsum("nij,jn->in", Q, x) - p
        x_tol = 10 * _REL_TOL * np.maximum(np.abs(x).max(axis=0), 1.0)
        g_tol = 1e-11 * (p_scale[todo] + np.abs(Q).max(axis=(1, 2)) * np.abs(x).sum(axis=0))
        to_lower = free & (x < lower - x_tol)
        to_upper = free & (x > upper + x_tol)
        release = (at_lower[:, todo] & (gradient < -g_tol)) | (at_upper[:, todo] & (gradient > g_tol))
        ok = ~(to_lower | to_upper | release).any(axis=0)
        X[:, todo] = np.where(free, x, bound_value)
        done[todo[ok]] = True
        at_lower[:, todo] = (at_lower[:, todo] & ~release) | to_lower
        at_upper[:, todo] = (at_upper[:, todo] & ~release) | to_upper
    return np.clip(X, lower, upper), done


# --------------------------------------------------------------------------------------
# Transient: exact piecewise-linear integration for one right-hand side.


@dataclass
class _Phase:
    """An interval with a fixed set of free outputs: x_free(tau) = basis @ z(tau),
    z_k(tau) = z0_k e^(-lam_k tau) + d_k (1 - e^(-lam_k tau)) / lam_k (tau from t_start)."""

    t_start: float
    x_start: FloatArray
    free: BoolArray
    basis: FloatArray
    lam: FloatArray
    z0: FloatArray
    d: FloatArray
    horizon: float
    t_end: float = math.inf

    def z(self, tau: FloatArray) -> FloatArray:
        tau = np.asarray(tau, dtype=np.float64)[None, :]
        lam = self.lam[:, None]
        safe = np.where(lam > 0.0, lam, 1.0)
        decay = np.where(lam > 0.0, np.exp(-safe * tau), 1.0)
        growth = np.where(lam > 0.0, -np.expm1(-safe * tau) / safe, tau)
        return self.z0[:, None] * decay + self.d[:, None] * growth

    def x_final(self) -> FloatArray:
        """The limit t -> infinity (zero modes of a final phase carry no drive)."""
        out = self.x_start.copy()
        if self.free.any():
            safe = np.where(self.lam > 0.0, self.lam, 1.0)
            out[self.free] = self.basis @ np.where(self.lam > 0.0, self.d / safe, self.z0)
        return out

    def x(self, tau: ArrayLike) -> FloatArray:
        """Outputs (k, len(tau)) at times tau after the phase start."""
        tau = np.atleast_1d(np.asarray(tau, dtype=np.float64))
        out = np.repeat(self.x_start[:, None], tau.size, axis=1)
        moving = tau > 0.0     # exactly x_start at the phase start, without rounding
        if self.free.any() and moving.any():
            out[np.ix_(self.free, moving)] = self.basis @ self.z(tau[moving])
        return out


class Transient:
    """The outputs of one solve after the loop closes at t = 0, integrated exactly.

    Between events the free outputs follow dx/dt = kappa (p - Q x) (a linear ODE, solved
    in the eigenbasis of diag(sqrt kappa) Q diag(sqrt kappa)); an event is an output
    reaching its clamp or rail, or a held output whose drive turns back inward.
    """

    def __init__(self, gram: FloatArray, drive: FloatArray, rates_per_s: FloatArray,
                 lower_v: float, upper_v: float, x0_v: FloatArray):
        self._Q = gram
        self._p = drive
        self._kappa = rates_per_s
        self._lower = lower_v
        self._upper = upper_v
        self._x0 = x0_v.astype(np.float64)
        scale = max(np.abs(drive).max(initial=0.0), np.abs(gram @ x0_v).max(initial=0.0))
        self._drive_tol = _REL_TOL * scale * rates_per_s.max()
        self._phases = self._integrate()
        self._starts = [phase.t_start for phase in self._phases]

    # ---- public -------------------------------------------------------------------

    @property
    def phases(self) -> int:
        """Number of constant-active-set intervals (events + 1)."""
        return len(self._phases)

    @property
    def event_times_s(self) -> FloatArray:
        """Times of the clamp/rail events."""
        return np.array([phase.t_start for phase in self._phases[1:]])

    @property
    def final_value(self) -> FloatArray:
        """The value the transient tends to (t -> infinity)."""
        return self._phases[-1].x_final()

    def state_at(self, t_s: ArrayLike) -> FloatArray:
        """Outputs (V) at time(s) t_s >= 0: shape (k,) for a scalar, (k, len(t)) for 1-D."""
        t = np.asarray(t_s, dtype=np.float64)
        if t.ndim > 1 or np.any(np.isnan(t)) or np.any(t < 0.0):
            raise ValueError("t_s must be a time >= 0 (s), or a 1-D array of them")
        if t.ndim == 0:
            # One time (an ADC sample): its phase by bisection, the same phase.x call as
            # below on the same one-element array (the same bits), without the grouping.
            phase = self._phases[bisect.bisect_right(self._starts, float(t)) - 1]
            return phase.x(np.atleast_1d(t) - phase.t_start)[:, 0]
        flat = np.atleast_1d(t)
        starts = np.array([phase.t_start for phase in self._phases])
        which = np.searchsorted(starts, flat, side="right") - 1
        out = np.empty((self._x0.size, flat.size))
        for index in np.unique(which):
            phase = self._phases[index]
            cols = which == index
            out[:, cols] = phase.x(flat[cols] - phase.t_start)
        return out[:, 0] if t.ndim == 0 else out

    def settle_time(self, tol: float, *, absolute: bool = False) -> float:
        """Time (s) after which max_j |x_j(t) - x_j(inf)| stays <= tol * |x(0) - x(inf)|_max
        (or <= tol volts with absolute=True)."""
        if not (isinstance(tol, (int, float)) and not isinstance(tol, bool) and tol > 0):
            raise ValueError(f"tol must be a number > 0; got {tol!r}")
        final = self.final_value
        band = tol if absolute else tol * np.abs(self._x0 - final).max()
        if np.abs(self._x0 - final).max() <= band:
            return 0.0

        for number in range(len(self._phases) - 1, -1, -1):
            phase = self._phases[number]
            if math.isinf(phase.t_end):
                slowest = phase.lam[phase.lam > 0].min(initial=math.inf)
                if math.isinf(slowest):
                    span = 0.0      # nothing moves any more: only the phase start counts
                else:
                    span = (math.log(np.abs(self._x0 - final).max() / band) + 10.0) / slowest
                    span = max(span, phase.horizon)
            else:
                span = phase.t_end - phase.t_start
            tau = _time_grid(span, phase.lam)

            def error(times: FloatArray, phase: _Phase = phase) -> FloatArray:
                return np.abs(phase.x(times) - final[:, None]).max(axis=0)

            outside = np.flatnonzero(error(tau) > band)
            if outside.size == 0:
                continue
            last = outside[-1]
            if last == tau.size - 1:
                # Still outside at the end: the final phase never gets inside (rounding
                # floor above the band), or an earlier phase ends just on the band.
                return math.inf if math.isinf(phase.t_end) else phase.t_end
            root = scipy.optimize.brentq(lambda s: error(np.array([s]))[0] - band,
                                         tau[last], tau[last + 1], xtol=1e-300, rtol=1e-13)
            return phase.t_start + root
        return 0.0

    # ---- integration --------------------------------------------------------------

    def _drive_of(self, x: FloatArray) -> FloatArray:
        return self._kappa * (self._p - self._Q @ x)

    def _make_phase(self, t_start: float, x: FloatArray, free: BoolArray) -> _Phase:
        held = ~free
        root = np.sqrt(self._kappa[free])
        S = root[:, None] * self._Q[np.ix_(free, free)] * root[None, :]
        lam, U = np.linalg.eigh(0.5 * (S + S.T))
        top = lam.max(initial=0.0)
        lam = np.where(lam > _RCOND * top, lam, 0.0)
        c = root * (self._p[free] - self._Q[np.ix_(free, held)] @ x[held])
        d = U.T @ c
        z0 = U.T @ (x[free] / root)
        positive = lam > 0.0
        horizon = _SETTLED_EXPONENT / lam[positive].min() if positive.any() else 0.0
        drifting = ~positive & (np.abs(d) > 1e-9 * np.linalg.norm(c))
        if drifting.any():
            # A singular direction with a drive along it: x runs off linearly until a
            # clamp or rail stops it.
            span = self._upper - self._lower
            if math.isinf(span):
                raise RuntimeError(
                    "the transient diverges: the Gram matrix is singular and the drive has a "
                    "component in its null space (ideal gain with offsets?), and no rail stops it")
            speed = np.abs(root[:, None] * U[:, drifting] * d[drifting]).max()
            horizon = max(horizon, 4.0 * span / speed)
        return _Phase(t_start, x.copy(), free.copy(), root[:, None] * U, lam, z0, d, horizon)

    def _integrate(self) -> list[_Phase]:
        lower, upper = self._lower, self._upper
        x = self._x0.copy()
        drive = self._drive_of(x)
        at_lower = (x <= lower) & (drive <= self._drive_tol)
        at_upper = (x >= upper) & (drive >= -self._drive_tol)
        free = ~(at_lower | at_upper)
        t = 0.0
        phases: list[_Phase] = []
        for _ in range(8 * x.size + 32):
            phase = self._make_phase(t, x, free)
            phases.append(phase)
            event = self._first_event(phase, at_upper)
            if event is None:
                return phases
            tau, index, kind = event
            phase.t_end = t + tau
            t = phase.t_end
            x = np.clip(phase.x(np.array([tau]))[:, 0], lower, upper)
            if kind == "release":
                free[index] = True
                at_upper[index] = False
            else:
                free[index] = False
                at_upper[index] = kind == "upper"
                x[index] = upper if kind == "upper" else lower
        raise RuntimeError(
            f"the transient did not reach a final active set after {len(phases)} clamp events")

    def _first_event(self, phase: _Phase, at_upper: BoolArray) -> tuple[float, int, str] | None:
        """(time after phase start, output index, kind) of the earliest event, or None."""
        if not phase.free.any():
            return None
        free_index = np.flatnonzero(phase.free)
        held_index = np.flatnonzero(~phase.free)
        tau = _time_grid(phase.horizon, phase.lam)
        X = phase.x(tau)
        scale = max(np.abs(X).max(), 1e-300)
        x_tol = _REL_TOL * scale

        # g >= 0 while no event; an event is a crossing of g to negative.
        functions: list[tuple[int, str]] = []
        values: list[FloatArray] = []
        for j in free_index:
            if not math.isinf(self._lower):
                functions.append((j, "lower"))
                values.append(X[j] - self._lower)
            if not math.isinf(self._upper):
                functions.append((j, "upper"))
                values.append(self._upper - X[j])
        if held_index.size:
            drives = self._kappa[held_index, None] * (
                self._p[held_index, None] - self._Q[held_index] @ X)
            for row, j in enumerate(held_index):
                sign = 1.0 if at_upper[j] else -1.0   # held at upper: release when drive < 0
                functions.append((j, "release"))
                values.append(sign * drives[row])
        if not functions:
            return None
        G = np.array(values)
        tolerance = np.array([self._drive_tol if kind == "release" else x_tol
                              for _, kind in functions])
        violated = G < -tolerance[:, None]
        violated[:, 0] = False
        if not violated.any():
            return None
        first = int(np.flatnonzero(violated.any(axis=0))[0])
        best: tuple[float, int, str] | None = None
        for row in np.flatnonzero(violated[:, first]):
            j, kind = functions[row]

            def g(s: float, j: int = j, kind: str = kind) -> float:
                x = phase.x(np.array([s]))[:, 0]
                if kind == "lower":
                    return float(x[j] - self._lower)
                if kind == "upper":
                    return float(self._upper - x[j])
                drive = self._kappa[j] * (self._p[j] - self._Q[j] @ x)
                return float(drive if at_upper[j] else -drive)

            a, b = tau[first - 1], tau[first]
            root = a if g(a) <= 0.0 else scipy.optimize.brentq(g, a, b, xtol=1e-300,
                                                                rtol=1e-14)
            if best is None or root < best[0]:
                best = (root, j, kind)
        return best


def _time_grid(span: float, lam: FloatArray) -> FloatArray:
    """0 plus log-spaced times up to span, starting well before the fastest mode."""
    if span <= 0.0:
        return np.array([0.0])
    fastest = lam.max(initial=0.0)
    start = min(1e-3 / fastest if fastest > 0 else span * 1e-9, span * 1e-9)
    return np.concatenate([[0.0], np.geomspace(start, span, _EVENT_GRID)])


# --------------------------------------------------------------------------------------


class Solution:
    """One solve: steady state (batch), transient (per right-hand side), settle times.

    Arrays over solution columns have shape (cols,) for a 1-D v_in and (cols, nrhs) for a
    2-D one; disabled columns read 0 V and are never clamped or saturated.
    """

    def __init__(self, *, mode: str, cols: int, col_index: NDArray[np.int64], rows: int,
                 row_index: NDArray[np.int64], gram: FloatArray, drive: FloatArray,
                 rates_per_s: FloatArray, lower_v: float, upper_v: float, x0_v: FloatArray,
                 steady: FloatArray, row_output_v: FloatArray, rail_v: float, one_rhs: bool):
        self.mode = mode
        self._cols = cols
        self._col_index = col_index
        self._gram = gram
        self._drive = drive
        self._rates = rates_per_s
        self._lower = lower_v
        self._upper = upper_v
        self._x0 = x0_v
        self._one_rhs = one_rhs
        self._steady = steady
        self._transients: dict[int, Transient] = {}

        n = steady.shape[1]
        full = np.zeros((cols, n))
        full[col_index] = steady
        at_lower = np.zeros((cols, n), dtype=bool)
        at_lower[col_index] = steady <= lower_v
        at_upper = np.zeros((cols, n), dtype=bool)
        at_upper[col_index] = steady >= upper_v
        rows_full = np.zeros((rows, n))
        rows_full[row_index] = row_output_v

        #: Output voltages at the end of settling (V).
        self.steady_state: FloatArray = self._shape(full)
        #: Outputs held by their clamp (clamped mode only).
        self.clamped: BoolArray = self._shape(at_lower if mode == "clamped"
                                              else np.zeros_like(at_lower))
        #: Outputs at a rail (+rail, or -rail in free mode).
        self.saturated: BoolArray = self._shape(
            at_upper | (at_lower if mode == "free" else np.zeros_like(at_lower)))
        #: Row transimpedance amplifier outputs at steady state (V): the residual
        #: -(A x - v) plus offset terms; disabled rows 0.
        self.row_output_v: FloatArray = self._shape(rows_full)
        #: Row amplifiers whose linear output would exceed the rails (not clipped in the
        #: model: a diagnostic, see docs/model-circuit.md).
        self.row_saturated: BoolArray = np.abs(self.row_output_v) > rail_v

    def _shape(self, array: NDArray[Any]) -> NDArray[Any]:
        return array[:, 0] if self._one_rhs else array

    @property
    def nrhs(self) -> int:
        return self._steady.shape[1]

    def transient(self, rhs: int = 0) -> Transient:
        """The exact transient of right-hand side ``rhs`` (computed on first use)."""
        if isinstance(rhs, bool) or not isinstance(rhs, (int, np.integer)) \
                or not 0 <= rhs < self.nrhs:
            raise ValueError(f"rhs must be an integer from 0 to {self.nrhs - 1}; got {rhs!r}")
        rhs = int(rhs)
        if rhs not in self._transients:
            self._transients[rhs] = Transient(self._gram, self._drive[:, rhs], self._rates,
                                              self._lower, self._upper, self._x0[:, rhs])
        return self._transients[rhs]

    def state_at(self, t_s: ArrayLike) -> FloatArray:
        """Outputs (V) at time t_s after the loop closed: (cols,) / (cols, nrhs), with a
        trailing time axis when t_s is 1-D. Sampling early gives the unsettled value."""
        t = np.asarray(t_s, dtype=np.float64)
        shape = (self._cols, self.nrhs) + t.shape
        out = np.zeros(shape)
        for rhs in range(self.nrhs):
            out[self._col_index, rhs] = self.transient(rhs).state_at(t)
        return out[:, 0] if self._one_rhs else out

    def settle_time(self, tol: float, *, absolute: bool = False) -> float | FloatArray:
        """Measured from the transient: the time after which every output stays within
        tol of its final value, relative to the initial error (or tol volts with
        absolute=True). A float for one right-hand side, else one per column of v_in."""
        times = np.array([self.transient(j).settle_time(tol, absolute=absolute)
                          for j in range(self.nrhs)])
        return float(times[0]) if self._one_rhs else times

    @property
    def slowest_rate_per_s(self) -> float | FloatArray:
        """Smallest eigenvalue (1/s) of the loop matrix diag(kappa) Q restricted to the
        outputs that are free at steady state (the active-set Gram matrix of the
        published analysis, scaled by the op-amps' GBW); inf when every output is held."""
        free = (self._steady > self._lower) & (self._steady < self._upper)
        patterns, inverse = np.unique(free.T, axis=0, return_inverse=True)
        rates = np.empty(len(patterns))
        for number, pattern in enumerate(patterns):
            if not pattern.any():
                rates[number] = math.inf
                continue
            root = np.sqrt(self._rates[pattern])
            S = root[:, None] * self._gram[np.ix_(pattern, pattern)] * root[None, :]
            rates[number] = max(np.linalg.eigvalsh(0.5 * (S + S.T))[0], 0.0)
        per_rhs = rates[np.asarray(inverse).reshape(-1)]
        return float(per_rhs[0]) if self._one_rhs else per_rhs

    def settle_time_estimate(self, tol: float) -> float | FloatArray:
        """ln(1/tol) / lambda_min (s): the time the slowest free mode needs to decay by a
        factor tol. inf for a singular active set, 0 when every output is held."""
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0.0 < tol < 1.0:
            raise ValueError(f"tol must be a number in (0, 1); got {tol!r}")
        rate = np.asarray(self.slowest_rate_per_s, dtype=np.float64)
        with np.errstate(divide="ignore"):
            estimate = np.where(rate > 0.0, math.log(1.0 / tol) / np.where(rate > 0, rate, 1.0),
                                math.inf)
        return float(estimate) if self._one_rhs else estimate


class MaskedSolution:
    """Steady states of a batch of solves that differ in their row enables (one set of row
    switches per right-hand side); see :meth:`NNLSCircuit.solve_masked`.

    Arrays over solution columns have shape (cols, nrhs); disabled columns read 0 V.
    Transients are not kept: each right-hand side has its own loop matrix (use
    :meth:`NNLSCircuit.solve` with that right-hand side's ``row_enable`` for one).
    """

    def __init__(self, *, mode: str, cols: int, col_index: NDArray[np.int64], grams: FloatArray,
                 rates_per_s: FloatArray, lower_v: float, upper_v: float, steady: FloatArray):
        self.mode = mode
        self._grams = grams
        self._rates = rates_per_s
        self._lower = lower_v
        self._upper = upper_v
        self._steady = steady
        n = steady.shape[1]
        full = np.zeros((cols, n))
        full[col_index] = steady
        at_lower = np.zeros((cols, n), dtype=bool)
        at_lower[col_index] = steady <= lower_v
        at_upper = np.zeros((cols, n), dtype=bool)
        at_upper[col_index] = steady >= upper_v
        #: Output voltages at the end of settling (V).
        self.steady_state: FloatArray = full
        #: Outputs held by their clamp (clamped mode only).
        self.clamped: BoolArray = at_lower if mode == "clamped" else np.zeros_like(at_lower)
        #: Outputs at a rail (+rail, or -rail in free mode).
        self.saturated: BoolArray = at_upper | (at_lower if mode == "free" else np.zeros_like(at_lower))

    @property
    def nrhs(self) -> int:
        return self._steady.shape[1]

    @property
    def slowest_rate_per_s(self) -> FloatArray:
        """Per right-hand side, as :attr:`Solution.slowest_rate_per_s`: the smallest
        eigenvalue (1/s) of its loop matrix on the outputs free at steady state."""
        free = ((self._steady > self._lower) & (self._steady < self._upper)).T   # (n, k)
        root = np.sqrt(self._rates.T)
        S = root[:, :, None] * self._grams * root[:, None, :]
        S = 0.5 * (S + np.swapaxes(S, 1, 2))
        # Held outputs are decoupled with a diagonal above every eigenvalue (Gershgorin),
        # so the smallest eigenvalue is that of the free block.
        above = np.abs(S).sum(axis=2).max(axis=1, initial=0.0) + 1.0
        both_free = free[:, :, None] & free[:, None, :]
        S = np.where(both_free, S, 0.0)
        k = S.shape[1]
        S[:, np.arange(k), np.arange(k)] += np.where(free, 0.0, above[:, None])
        rates = np.maximum(np.linalg.eigvalsh(S)[:, 0], 0.0) if k else np.zeros(0)
        return np.where(free.any(axis=1), rates, math.inf)

    def settle_time_estimate(self, tol: float) -> FloatArray:
        """ln(1/tol) / lambda_min (s) per right-hand side, as :meth:`Solution.settle_time_estimate`."""
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0.0 < tol < 1.0:
            raise ValueError(f"tol must be a number in (0, 1); got {tol!r}")
        rate = self.slowest_rate_per_s
        with np.errstate(divide="ignore"):
            return np.where(rate > 0.0, math.log(1.0 / tol) / np.where(rate > 0, rate, 1.0), math.inf)


class NNLSCircuit:
    """The analog solver of one array: ``rows`` row amplifiers and DAC inputs, ``cols``
    column op-amps with output clamps. Per-op-amp offsets and per-column compensation
    mismatch are drawn once, here, from ``rng``."""

    def __init__(self, config: CircuitConfig, rows: int, cols: int, rng: np.random.Generator):
        if not isinstance(config, CircuitConfig):
            raise ValueError(f"NNLSCircuit needs a CircuitConfig; got {type(config).__name__}")
        for name, value in (("rows", rows), ("cols", cols)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"NNLSCircuit {name} must be an integer >= 1; got {value!r}")
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"NNLSCircuit needs a numpy.random.Generator; got "
                             f"{type(rng).__name__}")
        self.config = config
        self.rows = int(rows)
        self.cols = int(cols)
        #: Input offset of each row transimpedance amplifier (V).
        self.row_offset_v: FloatArray = rng.normal(0.0, config.offset_std_v, self.rows)
        #: Input offset of each column op-amp (V).
        self.column_offset_v: FloatArray = rng.normal(0.0, config.offset_std_v, self.cols)
        #: Each column's compensation reference conductance, g_offset (1 + eps_j) (S).
        self.reference_conductance_s: FloatArray = config.g_offset_s * (
            1.0 + rng.normal(0.0, config.compensation_mismatch, self.cols))

    def _check_conductances(self, G_s: ArrayLike) -> FloatArray:
        G = np.asarray(G_s, dtype=np.float64)
        if G.shape != (self.rows, self.cols):
            raise ValueError(f"G_s must have shape ({self.rows}, {self.cols}); got {G.shape}")
        if not np.all(np.isfinite(G)) or np.any(G < 0.0):
            raise ValueError("G_s must hold finite conductances >= 0 (S)")
        return G

    def solve(self, G_s: ArrayLike, v_in: ArrayLike, row_enable: ArrayLike | None = None,
              col_enable: ArrayLike | None = None, mode: str = "clamped",
              x0_v: ArrayLike | None = None) -> Solution:
        """Close the loop with crossbar conductances G_s and row voltages v_in.

        Args:
            G_s: (rows, cols) conductances (S) as the array holds them (with g_offset).
            v_in: (rows,) or (rows, nrhs) row input voltages (V), e.g. DAC outputs.
            row_enable: (rows,) bool; a disabled row is disconnected (a missing entry).
            col_enable: (cols,) bool; a disabled column is disconnected, its output held
                at 0 V.
            mode: "clamped" (x >= -clamp_v: NNLS) or "free" (least squares).
            x0_v: outputs when the loop closes (default 0 V), within the mode's bounds.
        """
        c = self.config
        mode = _check_mode(mode)
        G = self._check_conductances(G_s)
        v = np.asarray(v_in, dtype=np.float64)
        one_rhs = v.ndim == 1
        if v.ndim not in (1, 2) or v.shape[0] != self.rows:
            raise ValueError(f"v_in must have shape ({self.rows},) or ({self.rows}, nrhs); got "
                             f"{v.shape}")
        if not np.all(np.isfinite(v)):
            raise ValueError("v_in must be finite (V)")
        V = v[:, None] if one_rhs else v
        rows_on = np.flatnonzero(_enable_mask(row_enable, self.rows, "row_enable"))
        cols_on = np.flatnonzero(_enable_mask(col_enable, self.cols, "col_enable"))
        lower, upper = c.bounds_v(mode)
        X0 = self._initial_state(x0_v, V.shape[1], cols_on, lower, upper, one_rhs)

        g, g_f = c.g_unit_s, c.row_feedback_s
        g_in = c.input_gain * g
        G_on = G[np.ix_(rows_on, cols_on)]
        T = G_on.sum(axis=0)
        if np.any(T <= 0.0):
            raise ValueError("every enabled column needs a non-zero conductance on an enabled "
                             "row (its summing node would float)")
        M = G_on - self.reference_conductance_s[cols_on][None, :]
        noise_gain = 1.0 + (G_on.sum(axis=1) + g_in) / g_f
        row_offset_out = noise_gain * self.row_offset_v[rows_on]
        V_on = V[rows_on]

        # Gram form in units of A (divided by g_unit^2) keeps the numbers near 1.
        gram = (M.T @ M + np.diag(g_f * T / c.opamp_gain)) / g**2
        gram = 0.5 * (gram + gram.T)
        offset_drive = g_f * (M.T @ row_offset_out - T * self.column_offset_v[cols_on])
        drive = (g_in * (M.T @ V_on) + offset_drive[:, None]) / g**2
        rates = 2.0 * math.pi * c.gbw_hz * g**2 / (g_f * T)

        steady = _solve_box_qp(gram, drive, lower, upper)
        row_out = -(M @ steady - g_in * V_on) / g_f + row_offset_out[:, None]
        return Solution(mode=mode, cols=self.cols, col_index=cols_on, rows=self.rows,
                        row_index=rows_on, gram=gram, drive=drive, rates_per_s=rates,
                        lower_v=lower, upper_v=upper, x0_v=X0, steady=steady,
                        row_output_v=row_out, rail_v=c.rail_v, one_rhs=one_rhs)

    def solve_masked(self, G_s: ArrayLike, v_in: ArrayLike, row_enable: ArrayLike,
                     col_enable: ArrayLike | None = None, mode: str = "clamped") -> MaskedSolution:
        """Steady states of one solve per column of ``v_in``, each with its own row enables.

        The same physics as :meth:`solve` (column j equals ``solve(G_s, v_in[:, j],
        row_enable=row_enable[:, j], ...)``), batched: a missing entry of R disconnects its
        row for that right-hand side only, so every right-hand side has its own loop matrix
        ``Q_j = M^T diag(r_j) M + diag(g_f T_j / A0)``, ``T_j = G^T r_j``. Right-hand sides
        with the same enables share one (the controller sets the row switches once per
        group); when the patterns are many, all Q_j come from one product
        ``R^T (M (x) M)`` and are solved together.

        Args:
            G_s: (rows, cols) conductances (S).
            v_in: (rows, nrhs) row input voltages (V); values on disabled rows are ignored.
            row_enable: (rows, nrhs) bool, each column with at least one True.
            col_enable: (cols,) bool, as in :meth:`solve`.
            mode: "clamped" or "free".
        """
        c = self.config
        mode = _check_mode(mode)
        G = self._check_conductances(G_s)
        V = np.asarray(v_in, dtype=np.float64)
        if V.ndim != 2 or V.shape[0] != self.rows:
            raise ValueError(f"v_in must have shape ({self.rows}, nrhs); got {V.shape}")
        enable = np.asarray(row_enable)
        if enable.dtype != np.bool_ or enable.shape != V.shape:
            raise ValueError(f"row_enable must be a bool array of shape {V.shape} like v_in; got "
                             f"{enable.dtype} array of shape {enable.shape}")
        if V.shape[1] and not enable.any(axis=0).all():
            raise ValueError(f"row_enable must enable at least one row per right-hand side; column "
                             f"{int(np.flatnonzero(~enable.any(axis=0))[0])} is all False")
        V = np.where(enable, V, 0.0)   # a disabled row's input goes nowhere
        if not np.all(np.isfinite(V)):
            raise ValueError("v_in must be finite (V)")
        cols_on = np.flatnonzero(_enable_mask(col_enable, self.cols, "col_enable"))
        lower, upper = c.bounds_v(mode)

        g, g_f = c.g_unit_s, c.row_feedback_s
        g_in = c.input_gain * g
        G_on = G[:, cols_on]
        weight = enable.astype(np.float64)
        T = G_on.T @ weight                                          # (k, nrhs)
        if np.any(T <= 0.0):
            raise ValueError("every enabled column needs a non-zero conductance on an enabled "
                             "row (its summing node would float)")
        M = G_on - self.reference_conductance_s[cols_on][None, :]
        noise_gain = 1.0 + (G_on.sum(axis=1) + g_in) / g_f
        row_offset_out = noise_gain * self.row_offset_v
        offset_drive = g_f * (M.T @ (weight * row_offset_out[:, None])
                              - T * self.column_offset_v[cols_on][:, None])
        drive = (g_in * (M.T @ V) + offset_drive) / g**2
        rates = 2.0 * math.pi * c.gbw_hz * g**2 / (g_f * T)

        k, n = cols_on.size, V.shape[1]
        _, first, group = np.unique(np.packbits(enable, axis=0).T, axis=0, return_index=True,
                                    return_inverse=True)
        group = group.reshape(-1)
        outer = (M[:, :, None] * M[:, None, :]).reshape(self.rows, k * k)
        pattern_grams = (weight[:, first].T @ outer).reshape(first.size, k, k)
        pattern_grams[:, np.arange(k), np.arange(k)] += g_f * T[:, first].T / c.opamp_gain
        pattern_grams = 0.5 * (pattern_grams + np.swapaxes(pattern_grams, 1, 2)) / g**2
        grams = pattern_grams[group]
        if first.size <= _PATTERNS_PER_RHS_TO_GROUP * n:
            steady = np.empty((k, n))
            for number in range(first.size):
                members = np.flatnonzero(group == number)
                steady[:, members] = _solve_box_qp_shared(pattern_grams[number], drive[:, members], lower, upper)
        else:
            steady = _solve_box_qp_batched(grams, drive, lower, upper)
        return MaskedSolution(mode=mode, cols=self.cols, col_index=cols_on, grams=grams,
                              rates_per_s=rates, lower_v=lower, upper_v=upper, steady=steady)

    def _initial_state(self, x0_v: ArrayLike | None, nrhs: int, cols_on: NDArray[np.int64],
                       lower: float, upper: float, one_rhs: bool) -> FloatArray:
        if x0_v is None:
            return np.zeros((cols_on.size, nrhs))
        x0 = np.asarray(x0_v, dtype=np.float64)
        expected = (self.cols,) if one_rhs else (self.cols, nrhs)
        if x0.shape != expected:
            raise ValueError(f"x0_v must have shape {expected}; got {x0.shape}")
        if not np.all(np.isfinite(x0)) or np.any(x0 < lower) or np.any(x0 > upper):
            raise ValueError(f"x0_v must lie within the mode's output bounds [{lower}, {upper}] V")
        x0 = x0[:, None] if one_rhs else x0
        return x0[cols_on]
