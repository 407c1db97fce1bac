"""RRAM 1T1R device model: pulse response, noise, drift, variation, stuck faults, write-verify.

One cell's conductance G lives between two soft bounds, a floor (RESET saturation) and a
ceiling (SET saturation). A SET or RESET pulse above its threshold voltage moves G toward
the bound of its polarity by a fraction of the remaining distance (exponential saturation,
so steps shrink near the bound). The programmable window [g_min_s, g_max_s] that holds the
``levels`` write-verify targets sits strictly inside the bounds. Every equation and the
source of every default value are in docs/model-device.md.

``DeviceArray`` is a vectorized array of such cells; ``write_verify`` is the behavioural
reference of the controller's write-verify programmer (the RTL follows it step by step).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._fields import integer as _integer
from ._fields import non_negative as _non_negative
from ._fields import positive as _positive
from ._fields import probability as _probability

__all__ = [
    "DeviceConfig",
    "DeviceArray",
    "ProgrammableArray",
    "WriteVerifyConfig",
    "WriteVerifyResult",
    "write_verify",
    "WriteVerifyStatistics",
    "write_verify_statistics",
    "SET",
    "RESET",
]

#: Pulse polarity that raises the conductance (filament growth).
SET = 1
#: Pulse polarity that lowers the conductance (filament rupture).
RESET = -1

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class DeviceConfig:
    """One RRAM 1T1R cell type. Defaults are the realistic ``rram-3bit`` preset.

    Units are in the names: ``_s`` siemens for conductances, ``_v`` volts, ``_s`` after
    ``width``/``t0`` seconds; ``_rel`` a relative standard deviation (0.01 = 1 %).
    """

    #: Lowest programmable level (S). Zuo et al. 2025: 8 levels over 0.5-35 uS.
    g_min_s: float = 0.5e-6
    #: Highest programmable level (S).
    g_max_s: float = 35e-6
    #: Number of write-verify levels, evenly spaced over [g_min_s, g_max_s] (3 bit).
    levels: int = 8
    #: RESET saturation bound of the soft-bounds pulse response (S). Assumption.
    g_floor_s: float = 0.1e-6
    #: SET saturation bound (set by the 1T1R transistor's compliance) (S). Assumption.
    g_ceiling_s: float = 50e-6
    #: SET pulses at or below this amplitude (V) do not move the cell. Assumption.
    set_threshold_v: float = 0.9
    #: RESET pulses at or below this amplitude (V) do not move the cell. Assumption.
    reset_threshold_v: float = 1.0
    #: Voltage scale of the exponential overdrive dependence (V). Assumption.
    overdrive_scale_v: float = 0.25
    #: SET strength k: a pulse of amplitude V and width w moves the fraction
    #: 1 - exp(-k (w / reference_width_s) (exp((V - set_threshold_v) / overdrive_scale_v) - 1))
    #: of the distance to the ceiling. Assumption (fitted to ~10-25 pulse write-verify).
    set_rate: float = 0.03
    #: RESET strength, same law toward the floor with reset_threshold_v.
    reset_rate: float = 0.03
    #: Pulse width the rates refer to (s).
    reference_width_s: float = 100e-9
    #: Cycle-to-cycle noise: relative std of each pulse's conductance step.
    cycle_noise_rel: float = 0.3
    #: Read noise: relative std of each read.
    read_noise_rel: float = 0.01
    #: Drift exponent nu of G(t) = G0 (t / t0)^-nu: mean over cells.
    drift_nu_mean: float = 0.005
    #: Drift exponent: std over cells (each cell's nu is drawn once, clipped at 0).
    drift_nu_std: float = 0.003
    #: Drift reference time t0 (s): the age a cell has right after it is programmed.
    drift_t0_s: float = 1.0
    #: Device-to-device variation: relative std (log-normal) of each cell's floor and ceiling.
    d2d_window_rel: float = 0.05
    #: Device-to-device variation: relative std (log-normal) of each cell's SET and RESET rate.
    d2d_rate_rel: float = 0.2
    #: Fraction of cells stuck at their ceiling (stuck-at-high / stuck-ON).
    stuck_high_rate: float = 0.002
    #: Fraction of cells stuck at their floor (stuck-at-low / stuck-OFF, e.g. never formed).
    stuck_low_rate: float = 0.005

    def __post_init__(self) -> None:
        for name in ("g_min_s", "g_max_s", "g_ceiling_s", "set_threshold_v", "reset_threshold_v",
                     "overdrive_scale_v", "set_rate", "reset_rate", "reference_width_s",
                     "drift_t0_s"):
            _positive(self, name)
        for name in ("g_floor_s", "cycle_noise_rel", "read_noise_rel", "drift_nu_mean",
                     "drift_nu_std", "d2d_window_rel", "d2d_rate_rel"):
            _non_negative(self, name)
        for name in ("stuck_high_rate", "stuck_low_rate"):
            _probability(self, name)
        _integer(self, "levels", 2)
        if not self.g_floor_s < self.g_min_s < self.g_max_s < self.g_ceiling_s:
            raise ValueError(
                "DeviceConfig needs g_floor_s < g_min_s < g_max_s < g_ceiling_s (the levels sit "
                f"strictly inside the soft bounds); got {self.g_floor_s!r}, {self.g_min_s!r}, "
                f"{self.g_max_s!r}, {self.g_ceiling_s!r}"
            )
        if self.stuck_high_rate + self.stuck_low_rate > 1.0:
            raise ValueError(
                "DeviceConfig.stuck_high_rate + stuck_low_rate must be <= 1; got "
                f"{self.stuck_high_rate!r} + {self.stuck_low_rate!r}"
            )

    @classmethod
    def ideal(cls) -> "DeviceConfig":
        """No noise, no variation, no faults, no drift: pulses act deterministically."""
        return cls(cycle_noise_rel=0.0, read_noise_rel=0.0, drift_nu_mean=0.0, drift_nu_std=0.0,
                   d2d_window_rel=0.0, d2d_rate_rel=0.0, stuck_high_rate=0.0, stuck_low_rate=0.0)

    @classmethod
    def pessimistic(cls) -> "DeviceConfig":
        """Worse than published on every count (noise, variation, drift, faults)."""
        return cls(cycle_noise_rel=0.6, read_noise_rel=0.03, drift_nu_mean=0.02,
                   drift_nu_std=0.01, d2d_window_rel=0.1, d2d_rate_rel=0.5,
                   stuck_high_rate=0.01, stuck_low_rate=0.02)

    def replace(self, **changes: Any) -> "DeviceConfig":
        return dataclasses.replace(self, **changes)

    def level_targets_s(self, levels: int | None = None) -> FloatArray:
        """The write-verify target conductances (S): ``levels`` (default: self.levels)
        evenly spaced from g_min_s to g_max_s inclusive."""
        count = self.levels if levels is None else levels
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 2:
            raise ValueError(f"levels must be an integer >= 2; got {count!r}")
        return np.linspace(self.g_min_s, self.g_max_s, int(count))

    @property
    def level_spacing_s(self) -> float:
        """Distance between neighbouring levels (S)."""
        return (self.g_max_s - self.g_min_s) / (self.levels - 1)


def _check_shape(shape: Any) -> tuple[int, int]:
    if (not isinstance(shape, tuple) or len(shape) != 2
            or any(isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1
                   for n in shape)):
        raise ValueError(f"shape must be a tuple of two integers >= 1 (rows, cols); got {shape!r}")
    return int(shape[0]), int(shape[1])


class DeviceArray:
    """A rows x cols array of RRAM cells, all operations vectorized.

    At construction every cell draws its own floor, ceiling, SET/RESET rate multipliers and
    drift exponent, and a stuck fault (stuck cells sit at their stuck value and never move).
    All randomness comes from ``rng``, so the same seed gives the same array and history.
    Cells start at g_min_s (a fresh array after forming and an erasing RESET: assumption).
    """

    def __init__(self, shape: tuple[int, int], config: DeviceConfig, rng: np.random.Generator):
        self._shape = _check_shape(shape)
        if not isinstance(config, DeviceConfig):
            raise ValueError(f"config must be a DeviceConfig; got {type(config).__name__}")
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng must be a numpy.random.Generator; got {type(rng).__name__}")
        self._config = config
        self._rng = rng
        c = config
        n = self._shape

        # Log-normal variation keeps every bound and rate positive.
        def lognormal(rel: float) -> FloatArray:
            return np.exp(rel * rng.standard_normal(n)) if rel > 0 else np.ones(n)

        self._floor = c.g_floor_s * lognormal(c.d2d_window_rel)
        self._ceiling = c.g_ceiling_s * lognormal(c.d2d_window_rel)
        self._set_rate = c.set_rate * lognormal(c.d2d_rate_rel)
        self._reset_rate = c.reset_rate * lognormal(c.d2d_rate_rel)
        if c.drift_nu_std > 0:
            self._nu = np.maximum(c.drift_nu_mean + c.drift_nu_std * rng.standard_normal(n), 0.0)
        else:
            self._nu = np.full(n, c.drift_nu_mean)

        # One uniform draw per cell decides its fault: [0, high) high, [high, high+low) low.
        fault_draw = rng.random(n)
        self._stuck_high = fault_draw < c.stuck_high_rate
        self._stuck_low = (~self._stuck_high) & (fault_draw < c.stuck_high_rate + c.stuck_low_rate)
        self._stuck = self._stuck_high | self._stuck_low
        self._stuck_value = np.where(self._stuck_high, self._ceiling,
                                     np.where(self._stuck_low, self._floor, np.nan))

        # Drift state: conductance right after the last programming, and the cell's age.
        self._g_programmed = np.clip(np.full(n, c.g_min_s), self._floor, self._ceiling)
        self._g_programmed[self._stuck] = self._stuck_value[self._stuck]
        self._age_s = np.full(n, c.drift_t0_s)
        self._g = self._g_programmed.copy()

    # ---- read-only state -------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    @property
    def config(self) -> DeviceConfig:
        return self._config

    @staticmethod
    def _read_only(array: NDArray[Any]) -> NDArray[Any]:
        view = array.view()
        view.flags.writeable = False
        return view

    @property
    def conductance_s(self) -> FloatArray:
        """True conductance of every cell now (S), a read-only view."""
        return self._read_only(self._g)

    @property
    def stuck_mask(self) -> NDArray[np.bool_]:
        """True where the cell is stuck (high or low)."""
        return self._read_only(self._stuck)

    @property
    def stuck_high_mask(self) -> NDArray[np.bool_]:
        return self._read_only(self._stuck_high)

    @property
    def stuck_low_mask(self) -> NDArray[np.bool_]:
        return self._read_only(self._stuck_low)

    @property
    def stuck_value(self) -> FloatArray:
        """Conductance (S) each stuck cell is pinned at (its ceiling if stuck high, its floor
        if stuck low); NaN for healthy cells."""
        return self._read_only(self._stuck_value)

    @property
    def floor_s(self) -> FloatArray:
        """Each cell's RESET saturation bound (S)."""
        return self._read_only(self._floor)

    @property
    def ceiling_s(self) -> FloatArray:
        """Each cell's SET saturation bound (S)."""
        return self._read_only(self._ceiling)

    @property
    def drift_nu(self) -> FloatArray:
        """Each cell's drift exponent."""
        return self._read_only(self._nu)

    # ---- operations ------------------------------------------------------------------

    def check_cells(self, rows: ArrayLike, cols: ArrayLike) -> tuple[NDArray[np.intp],
                                                                      NDArray[np.intp]]:
        """rows and cols broadcast together as index arrays, range-checked (ValueError)."""
        if type(rows) is int and type(cols) is int and 0 <= rows < self._shape[0] \
                and 0 <= cols < self._shape[1]:  # one cell (a read): no broadcasting
            return np.array(rows, dtype=np.intp), np.array(cols, dtype=np.intp)
        r, c = np.broadcast_arrays(np.asarray(rows), np.asarray(cols))
        for name, idx, limit in (("rows", r, self._shape[0]), ("cols", c, self._shape[1])):
            if idx.size and not np.issubdtype(idx.dtype, np.integer):
                raise ValueError(f"{name} must be integer indices; got dtype {idx.dtype}")
            if idx.size and (idx.min() < 0 or idx.max() >= limit):
                raise ValueError(f"{name} must be in [0, {limit - 1}]; got values from "
                                 f"{idx.min()} to {idx.max()}")
        return r.astype(np.intp), c.astype(np.intp)

    def _flat_cells(self, rows: ArrayLike,
                    cols: ArrayLike) -> tuple[NDArray[np.intp], tuple[int, ...]]:
        """Flat indices of the addressed cells, and the broadcast shape."""
        r, c = self.check_cells(rows, cols)
        return np.ravel_multi_index((r, c), self._shape).ravel(), r.shape

    def pulse(self, rows: ArrayLike, cols: ArrayLike, polarity: ArrayLike, amplitude_v: ArrayLike,
              width_s: ArrayLike) -> None:
        """Apply one programming pulse to each addressed cell (all arguments broadcast).

        polarity +1 (SET) raises G toward the cell's ceiling, -1 (RESET) lowers it toward its
        floor; amplitude_v is the pulse magnitude (V, >= 0), width_s its duration (s, > 0).
        Each (row, col) may appear once per call. Stuck cells do not move.
        """
        if self._one_valid_cell(rows, cols, polarity, amplitude_v, width_s):
            self._pulse_cell(rows, cols, polarity, amplitude_v, width_s)  # type: ignore[arg-type]
            return
        flat, shape = self._flat_cells(rows, cols)
        pol = np.broadcast_to(np.asarray(polarity), shape).ravel()
        amp = np.broadcast_to(np.asarray(amplitude_v, dtype=float), shape).ravel()
        width = np.broadcast_to(np.asarray(width_s, dtype=float), shape).ravel()
        if flat.size == 0:
            return
        if not np.all((pol == SET) | (pol == RESET)):
            raise ValueError(f"polarity must be +1 (SET) or -1 (RESET); got {np.unique(pol)!r}")
        if not np.all(np.isfinite(amp) & (amp >= 0)):
            raise ValueError("amplitude_v must be finite and >= 0 (V, the pulse magnitude)")
        if not np.all(np.isfinite(width) & (width > 0)):
            raise ValueError("width_s must be finite and > 0 (s)")
        if np.unique(flat).size != flat.size:
            raise ValueError("each (row, col) cell may be pulsed at most once per pulse() call")

        c = self._config
        is_set = pol == SET
        g = self._g.flat[flat]
        threshold = np.where(is_set, c.set_threshold_v, c.reset_threshold_v)
        overdrive = np.maximum(amp - threshold, 0.0)
        rate = np.where(is_set, self._set_rate.flat[flat], self._reset_rate.flat[flat])
        # Integrating dG/dt = k (bound - G) over the pulse: the moved fraction is 1 - exp(-k w).
        strength = rate * (width / c.reference_width_s) * np.expm1(overdrive / c.overdrive_scale_v)
        fraction = -np.expm1(-strength)
        distance = np.where(is_set, self._ceiling.flat[flat] - g, g - self._floor.flat[flat])
        step = fraction * distance
        if c.cycle_noise_rel > 0:
            step = step * (1.0 + c.cycle_noise_rel * self._rng.standard_normal(flat.size))
        g_new = np.clip(g + np.where(is_set, step, -step), self._floor.flat[flat],
                        self._ceiling.flat[flat])
        moved = (~self._stuck.flat[flat]) & (overdrive > 0)
        target = flat[moved]
        self._g.flat[target] = g_new[moved]
        self._g_programmed.flat[target] = g_new[moved]
        self._age_s.flat[target] = c.drift_t0_s

    def _one_valid_cell(self, row: Any, col: Any, polarity: Any, amplitude_v: Any,
                        width_s: Any) -> bool:
        """A pulse on one cell given as Python scalars, all valid: the scalar path applies.
        Anything else (arrays, invalid values) takes the array path, which raises the
        errors."""
        rows, cols = self._shape
        return (type(row) is int and type(col) is int and 0 <= row < rows and 0 <= col < cols
                and (polarity == SET or polarity == RESET) and type(polarity) is int
                and type(amplitude_v) in (int, float) and type(width_s) in (int, float)
                and math.isfinite(amplitude_v) and amplitude_v >= 0
                and math.isfinite(width_s) and width_s > 0)

    def _pulse_cell(self, row: int, col: int, polarity: int, amplitude_v: float,
                    width_s: float) -> None:
        """:meth:`pulse` on one cell with scalars (the programmer's one pulse per
        ``prog_fire``): the array path's arithmetic in the same order and with the same
        numpy functions (the same bits), and the same noise draw, without arrays."""
        c = self._config
        is_set = polarity == SET
        cell = (row, col)
        g = self._g[cell]
        floor, ceiling = self._floor[cell], self._ceiling[cell]
        threshold = c.set_threshold_v if is_set else c.reset_threshold_v
        overdrive = max(float(amplitude_v) - threshold, 0.0)
        rate = self._set_rate[cell] if is_set else self._reset_rate[cell]
        strength = rate * (float(width_s) / c.reference_width_s) \
            * np.expm1(np.float64(overdrive / c.overdrive_scale_v))
        fraction = -np.expm1(-strength)
        step = fraction * (ceiling - g if is_set else g - floor)
        if c.cycle_noise_rel > 0:
            step = step * (1.0 + c.cycle_noise_rel * self._rng.standard_normal())
        if self._stuck[cell] or not overdrive > 0:
            return
        g_new = min(max(g + (step if is_set else -step), floor), ceiling)
        self._g[cell] = g_new
        self._g_programmed[cell] = g_new
        self._age_s[cell] = c.drift_t0_s

    def read(self, rows: ArrayLike, cols: ArrayLike) -> FloatArray:
        """Measured conductance (S) of the addressed cells: G (1 + read_noise_rel * N(0, 1)),
        one independent draw per read, clipped at 0."""
        flat, shape = self._flat_cells(rows, cols)
        g = self._g.flat[flat]
        return self._with_read_noise(g).reshape(shape)

    def read_all(self) -> FloatArray:
        """Measured conductance (S) of every cell (one read each)."""
        return self._with_read_noise(self._g.copy())

    def read_noise_factors(self, shape: tuple[int, ...]) -> FloatArray:
        """Independent multiplicative read-noise factors max(1 + read_noise_rel N(0, 1), 0):
        what one read does to a conductance (exactly 1 with no read noise)."""
        rel = self._config.read_noise_rel
        if rel == 0:
            return np.ones(shape)
        if shape == ():  # one read (a READ_CELL conversion): the same draw, without arrays
            return np.maximum(1.0 + rel * self._rng.standard_normal(), 0.0)
        return np.maximum(1.0 + rel * self._rng.standard_normal(shape), 0.0)

    def _with_read_noise(self, g: FloatArray) -> FloatArray:
        if self._config.read_noise_rel == 0:
            return g
        return g * self.read_noise_factors(g.shape)

    def advance_time(self, seconds: float) -> None:
        """Let ``seconds`` pass: every healthy cell drifts as G = G0 (age / t0)^-nu."""
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) \
                or not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"seconds must be a finite number >= 0; got {seconds!r}")
        if seconds == 0:
            return
        self._age_s += seconds
        drifting = ~self._stuck
        factor = (self._age_s / self._config.drift_t0_s) ** (-self._nu)
        self._g[drifting] = (self._g_programmed * factor)[drifting]

    def set_conductance(self, values: ArrayLike) -> None:
        """Place every healthy cell at ``values`` (S, broadcast to the array shape) at once:
        the ideal programming path, and a test fixture. A cell cannot leave its own
        [floor, ceiling] window, so values are clipped into it; stuck cells keep their stuck
        value. The drift clock of each healthy cell restarts."""
        target = np.broadcast_to(np.asarray(values, dtype=float), self._shape)
        if not np.all(np.isfinite(target) & (target >= 0)):
            raise ValueError("set_conductance values must be finite and >= 0 (S)")
        healthy = ~self._stuck
        placed = np.clip(target, self._floor, self._ceiling)
        self._g[healthy] = placed[healthy]
        self._g_programmed[healthy] = placed[healthy]
        self._age_s[healthy] = self._config.drift_t0_s


# --------------------------------------------------------------------------------------
# Write-verify


class ProgrammableArray(Protocol):
    """What write_verify needs: DeviceArray and model.crossbar.Crossbar both provide it."""

    @property
    def shape(self) -> tuple[int, int]: ...

    @property
    def conductance_s(self) -> FloatArray: ...

    def pulse(self, rows: ArrayLike, cols: ArrayLike, polarity: ArrayLike,
              amplitude_v: ArrayLike, width_s: ArrayLike, /) -> None: ...

    def read(self, rows: ArrayLike, cols: ArrayLike, /) -> FloatArray: ...


@dataclass(frozen=True)
class WriteVerifyConfig:
    """Parameters of the write-verify loop; defaults suit the ``rram-3bit`` device preset."""

    #: Accept a cell when |read - target| <= tolerance_s (S). About 1/10 of a level step.
    tolerance_s: float = 0.5e-6
    #: Pulse budget per cell; a cell still out of tolerance after that many pulses fails.
    max_pulses: int = 100
    #: First amplitude of a ramp (V); every ramp (and every polarity flip) starts here.
    amplitude_start_v: float = 1.0
    #: Amplitude increment between consecutive pulses of the same polarity (V).
    amplitude_step_v: float = 0.05
    #: Amplitude ceiling of the ramp (V).
    amplitude_max_v: float = 2.0
    #: Width of every pulse (s).
    width_s: float = 100e-9
    #: Reads averaged into each verify value (the ADC averaging of the controller).
    reads_per_verify: int = 1

    def __post_init__(self) -> None:
        _positive(self, "tolerance_s")
        _integer(self, "max_pulses", 1)
        _non_negative(self, "amplitude_start_v")
        _non_negative(self, "amplitude_step_v")
        _positive(self, "amplitude_max_v")
        _positive(self, "width_s")
        _integer(self, "reads_per_verify", 1)
        if self.amplitude_start_v > self.amplitude_max_v:
            raise ValueError(
                "WriteVerifyConfig.amplitude_start_v must be <= amplitude_max_v; got "
                f"{self.amplitude_start_v!r} > {self.amplitude_max_v!r}"
            )

    def replace(self, **changes: Any) -> "WriteVerifyConfig":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class WriteVerifyResult:
    """Outcome of write_verify, one entry per cell of the array."""

    #: True conductance after the loop (S).
    conductance_s: FloatArray
    #: The last verify read of each cell (S), the value the accept decision used.
    read_s: FloatArray
    #: Pulses applied to each cell (0 for cells already in tolerance or not enabled).
    pulses: NDArray[np.int64]
    #: True where an enabled cell was still out of tolerance when its budget ran out.
    failed: NDArray[np.bool_]
    #: The cells that took part.
    enabled: NDArray[np.bool_]


_WV_DEFAULTS = WriteVerifyConfig()


def write_verify(array: ProgrammableArray, target_s: ArrayLike, *,
                 tolerance_s: float = _WV_DEFAULTS.tolerance_s,
                 max_pulses: int = _WV_DEFAULTS.max_pulses,
                 amplitude_start_v: float = _WV_DEFAULTS.amplitude_start_v,
                 amplitude_step_v: float = _WV_DEFAULTS.amplitude_step_v,
                 amplitude_max_v: float = _WV_DEFAULTS.amplitude_max_v,
                 width_s: float = _WV_DEFAULTS.width_s,
                 reads_per_verify: int = _WV_DEFAULTS.reads_per_verify,
                 enable: ArrayLike | None = None) -> WriteVerifyResult:
    """Program every enabled cell to its target with an incremental-amplitude loop.

    All cells advance together, one pulse per round. Per cell (docs/model-device.md gives
    the same steps for the RTL):

    1. read G (the mean of reads_per_verify reads); if |G - target| <= tolerance: done.
    2. if the cell has had max_pulses pulses: failed.
    3. polarity = SET if G < target else RESET. If it equals the previous pulse's polarity
       the amplitude grows by amplitude_step_v (capped at amplitude_max_v); otherwise (first
       pulse, or the polarity flipped after an overshoot) it restarts at amplitude_start_v.
    4. apply the pulse, count it, go to 1.

    The array's own random generator supplies all noise, so the same seed gives the same
    result. ``enable`` (bool, array shape) limits programming to some cells.
    """
    params = WriteVerifyConfig(tolerance_s=tolerance_s, max_pulses=max_pulses,
                               amplitude_start_v=amplitude_start_v,
                               amplitude_step_v=amplitude_step_v,
                               amplitude_max_v=amplitude_max_v, width_s=width_s,
                               reads_per_verify=reads_per_verify)
    shape = array.shape
    target = np.asarray(target_s, dtype=float)
    if target.shape != shape:
        raise ValueError(f"target_s must have the array's shape {shape}; got {target.shape}")
    if not np.all(np.isfinite(target) & (target >= 0)):
        raise ValueError("target_s must be finite and >= 0 (S)")
    if enable is None:
        enabled = np.ones(shape, dtype=bool)
    else:
        enabled = np.asarray(enable)
        if enabled.dtype != np.bool_ or enabled.shape != shape:
            raise ValueError(f"enable must be a bool array of shape {shape}; got "
                             f"{enabled.dtype} {enabled.shape}")

    def verify_read(r: NDArray[np.intp], c: NDArray[np.intp]) -> FloatArray:
        if params.reads_per_verify == 1:
            return array.read(r, c)
        return np.mean([array.read(r, c) for _ in range(params.reads_per_verify)], axis=0)

    rows, cols = np.nonzero(enabled)
    goal = target[rows, cols]
    pulses = np.zeros(rows.size, dtype=np.int64)
    last_polarity = np.zeros(rows.size, dtype=np.int64)  # 0: no pulse yet
    amplitude = np.zeros(rows.size)
    reading = verify_read(rows, cols)
    active = np.abs(reading - goal) > params.tolerance_s
    while True:
        todo = np.nonzero(active & (pulses < params.max_pulses))[0]
        if todo.size == 0:
            break
        polarity = np.where(reading[todo] < goal[todo], SET, RESET)
        same = polarity == last_polarity[todo]
        amplitude[todo] = np.where(
            same, np.minimum(amplitude[todo] + params.amplitude_step_v, params.amplitude_max_v),
            params.amplitude_start_v)
        last_polarity[todo] = polarity
        array.pulse(rows[todo], cols[todo], polarity, amplitude[todo], params.width_s)
        pulses[todo] += 1
        reading[todo] = verify_read(rows[todo], cols[todo])
        active[todo] = np.abs(reading[todo] - goal[todo]) > params.tolerance_s

    read_s = np.full(shape, np.nan)
    read_s[rows, cols] = reading
    pulse_map = np.zeros(shape, dtype=np.int64)
    pulse_map[rows, cols] = pulses
    failed = np.zeros(shape, dtype=bool)
    failed[rows, cols] = active
    return WriteVerifyResult(conductance_s=np.array(array.conductance_s, copy=True), read_s=read_s,
                             pulses=pulse_map, failed=failed, enabled=enabled.copy())


# --------------------------------------------------------------------------------------
# Figures for the docs and the RTL budget: python -m anmf.model.device


@dataclass(frozen=True)
class WriteVerifyStatistics:
    """How write_verify does on an array whose column k is programmed to level k."""

    #: Healthy cells programmed.
    healthy_cells: int
    #: Healthy cells whose last verify read was within tolerance.
    verified_fraction: float
    #: Healthy cells whose true conductance is within tolerance (read noise can fool a verify).
    true_within_tolerance_fraction: float
    #: Pulse counts of the healthy cells whose target is not the starting level g_min_s.
    pulses_mean: float
    pulses_p50: float
    pulses_p90: float
    pulses_p99: float
    pulses_max: int
    #: Mean pulses and rms true error (S) per level.
    level_mean_pulses: tuple[float, ...]
    level_rms_error_s: tuple[float, ...]
    #: Stuck cells whose stuck value is out of tolerance of their target, and the fraction of
    #: those flagged failed (must be 1).
    stuck_out_of_tolerance: int
    stuck_out_of_tolerance_failed_fraction: float


def write_verify_statistics(config: DeviceConfig, params: WriteVerifyConfig = _WV_DEFAULTS,
                            cells_per_level: int = 2048, seed: int = 0) -> WriteVerifyStatistics:
    """Program cells_per_level cells to each level of ``config`` and summarize the result."""
    if isinstance(cells_per_level, bool) or not isinstance(cells_per_level, int) \
            or cells_per_level < 1:
        raise ValueError(f"cells_per_level must be an integer >= 1; got {cells_per_level!r}")
    levels = config.level_targets_s()
    array = DeviceArray((cells_per_level, levels.size), config, np.random.default_rng(seed))
    target = np.broadcast_to(levels, array.shape)
    result = write_verify(array, target, **dataclasses.asdict(params))
    healthy = ~np.asarray(array.stuck_mask)
    error = np.abs(result.conductance_s - target)
    moved = healthy & (target > levels[0])
    pulses = result.pulses[moved] if moved.any() else np.zeros(1, dtype=np.int64)
    far = np.asarray(array.stuck_mask) & (np.abs(array.stuck_value - target) > params.tolerance_s)
    return WriteVerifyStatistics(
        healthy_cells=int(healthy.sum()),
        verified_fraction=float(np.mean(~result.failed[healthy])),
        true_within_tolerance_fraction=float(np.mean(error[healthy] <= params.tolerance_s)),
        pulses_mean=float(pulses.mean()),
        pulses_p50=float(np.percentile(pulses, 50)),
        pulses_p90=float(np.percentile(pulses, 90)),
        pulses_p99=float(np.percentile(pulses, 99)),
        pulses_max=int(pulses.max()),
        level_mean_pulses=tuple(float(result.pulses[healthy[:, k], k].mean())
                                for k in range(levels.size)),
        level_rms_error_s=tuple(float(np.sqrt(np.mean(error[healthy[:, k], k] ** 2)))
                                for k in range(levels.size)),
        stuck_out_of_tolerance=int(far.sum()),
        stuck_out_of_tolerance_failed_fraction=float(result.failed[far].mean()) if far.any()
        else 1.0,
    )


def main() -> None:
    presets = {"ideal": DeviceConfig.ideal(), "rram-3bit": DeviceConfig(),
               "pessimistic": DeviceConfig.pessimistic()}
    params = WriteVerifyConfig()
    print(f"write_verify defaults: {params}")
    for name, config in presets.items():
        stats = write_verify_statistics(config, params)
        print(f"\n{name}: {stats.healthy_cells} healthy cells, verified "
              f"{stats.verified_fraction:.4f}, true |G - target| <= tolerance "
              f"{stats.true_within_tolerance_fraction:.4f}")
        print(f"  pulses (targets above g_min): mean {stats.pulses_mean:.1f}, median "
              f"{stats.pulses_p50:.0f}, p90 {stats.pulses_p90:.0f}, p99 {stats.pulses_p99:.0f}, "
              f"max {stats.pulses_max}")
        print("  level uS    " + " ".join(f"{g * 1e6:6.2f}" for g in config.level_targets_s()))
        print("  pulses      " + " ".join(f"{p:6.1f}" for p in stats.level_mean_pulses))
        print("  rms err uS  " + " ".join(f"{e * 1e6:6.3f}" for e in stats.level_rms_error_s))
        print(f"  stuck cells out of tolerance: {stats.stuck_out_of_tolerance}, failed "
              f"{stats.stuck_out_of_tolerance_failed_fraction:.3f}")


if __name__ == "__main__":
    main()
