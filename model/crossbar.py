"""RRAM crossbar: ROWS x (COLS + SPARE) cells of a DeviceArray plus first-order wire IR drop.

Geometry (docs/model-device.md): each row line is driven from its column-0 end, each column
line ends in a virtual-ground sense node at its row-0 end. Cell (i, j) reaches its driver
through j + 1 row-wire segments and its sense node through i + 1 column-wire segments, so
its series wire resistance is R_path(i, j) = r_wire (i + j + 2) and the conductance the
periphery sees is G_eff = G / (1 + G R_path). This first-order model neglects the current
that neighbouring cells add to the shared wires (see the doc for when that matters).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .device import (DeviceArray, DeviceConfig, FloatArray, _boolean, _integer, _non_negative,
                     _positive)

__all__ = ["CrossbarConfig", "Crossbar"]


@dataclass(frozen=True)
class CrossbarConfig:
    """Array size, wiring and read bias. Defaults are the realistic ``rram-3bit`` preset."""

    #: Rows (inputs driven by the row DACs).
    rows: int = 64
    #: Solution columns (the factor rank k the array holds).
    cols: int = 8
    #: Spare columns for repairing columns with stuck cells.
    spare: int = 2
    #: Resistance of one wire segment between neighbouring cells (ohm). Assumption for a
    #: 40 nm 1T1R array on lower metal: about 1-2 ohm per cell pitch.
    wire_resistance_ohm: float = 1.5
    #: Apply the first-order IR-drop correction to reads and MVMs.
    ir_drop: bool = True
    #: Row bias of a cell read (V); read current = read_voltage_v * G.
    read_voltage_v: float = 0.2

    def __post_init__(self) -> None:
        _integer(self, "rows", 1)
        _integer(self, "cols", 1)
        _integer(self, "spare", 0)
        _non_negative(self, "wire_resistance_ohm")
        _boolean(self, "ir_drop")
        _positive(self, "read_voltage_v")

    @classmethod
    def ideal(cls) -> "CrossbarConfig":
        """Zero-resistance wires, no IR drop."""
        return cls(wire_resistance_ohm=0.0, ir_drop=False)

    @classmethod
    def pessimistic(cls) -> "CrossbarConfig":
        """Thin, resistive wires (several times the assumed realistic value)."""
        return cls(wire_resistance_ohm=5.0, ir_drop=True)

    def replace(self, **changes: Any) -> "CrossbarConfig":
        return dataclasses.replace(self, **changes)

    @property
    def total_cols(self) -> int:
        """Physical columns: cols + spare."""
        return self.cols + self.spare


class Crossbar:
    """The RRAM crossbar the analog front end computes with.

    ``rng`` seeds the DeviceArray (variation, faults, pulse and read noise): same seed, same
    crossbar and same history.
    """

    def __init__(self, config: CrossbarConfig, device: DeviceConfig, rng: np.random.Generator):
        if not isinstance(config, CrossbarConfig):
            raise ValueError(f"config must be a CrossbarConfig; got {type(config).__name__}")
        if not isinstance(device, DeviceConfig):
            raise ValueError(f"device must be a DeviceConfig; got {type(device).__name__}")
        lowest_threshold = min(device.set_threshold_v, device.reset_threshold_v)
        if config.read_voltage_v >= lowest_threshold:
            raise ValueError(
                f"CrossbarConfig.read_voltage_v ({config.read_voltage_v} V) must be below the "
                f"device's SET and RESET thresholds ({device.set_threshold_v} V, "
                f"{device.reset_threshold_v} V) so that reads do not program cells"
            )
        self._config = config
        self._device_config = device
        self.devices = DeviceArray((config.rows, config.total_cols), device, rng)
        rows = np.arange(config.rows)[:, None]
        cols = np.arange(config.total_cols)[None, :]
        self._path_resistance = config.wire_resistance_ohm * (rows + cols + 2.0)

    # ---- state -----------------------------------------------------------------------

    @property
    def config(self) -> CrossbarConfig:
        return self._config

    @property
    def device_config(self) -> DeviceConfig:
        return self._device_config

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols + spare)."""
        return self.devices.shape

    @property
    def conductance_s(self) -> FloatArray:
        """True conductance of every cell (S), read-only."""
        return self.devices.conductance_s

    @property
    def stuck_mask(self) -> NDArray[np.bool_]:
        return self.devices.stuck_mask

    @property
    def path_resistance_ohm(self) -> FloatArray:
        """Series wire resistance between each cell and its driver + sense node (ohm)."""
        view = self._path_resistance.view()
        view.flags.writeable = False
        return view

    def _ir_factor(self, g: FloatArray, path: FloatArray) -> FloatArray:
        """G_eff / G for conductances g behind wire resistances path."""
        if not self._config.ir_drop:
            return np.ones_like(g)
        return 1.0 / (1.0 + g * path)

    def effective_conductance_s(self) -> FloatArray:
        """Conductance (S) the periphery sees: G / (1 + G R_path) with IR drop, else G."""
        g = np.array(self.devices.conductance_s, copy=True)
        return g * self._ir_factor(g, self._path_resistance)

    # ---- operations ------------------------------------------------------------------

    def pulse(self, row: ArrayLike, col: ArrayLike, polarity: ArrayLike, amplitude_v: ArrayLike,
              width_s: ArrayLike) -> None:
        """One programming pulse per addressed cell (scalars or broadcast index arrays);
        polarity +1 SET, -1 RESET. The wire drop on a pulse (< 1 %) is neglected."""
        self.devices.pulse(row, col, polarity, amplitude_v, width_s)

    def read(self, rows: ArrayLike, cols: ArrayLike) -> FloatArray:
        """Measured conductances (S) of the addressed cells: the read current at
        read_voltage_v divided by read_voltage_v, so IR drop and read noise included."""
        measured = self.devices.read(rows, cols)
        r, c = np.broadcast_arrays(np.asarray(rows), np.asarray(cols))
        g_true = np.asarray(self.devices.conductance_s)[r, c]
        return measured * self._ir_factor(g_true, self._path_resistance[r, c])

    def read_cell(self, row: int, col: int) -> float:
        """Measured conductance (S) of one cell (see ``read``)."""
        return float(self.read(row, col))

    def read_current_a(self, row: int, col: int) -> float:
        """Read current (A) of one cell at read_voltage_v."""
        return self._config.read_voltage_v * self.read_cell(row, col)

    def mvm(self, v_rows: ArrayLike, row_enable: ArrayLike | None = None,
            col_enable: ArrayLike | None = None) -> FloatArray:
        """Open-loop product: column currents (A) into virtual-ground columns,
        I_j = col_en_j * sum_i G_eff,ij (1 + read noise) row_en_i v_i.

        Disabled rows are disconnected (drive nothing); disabled columns read 0. Each call
        draws fresh read noise. Row voltages must stay below the switching thresholds.
        """
        rows, total_cols = self.shape
        v = np.asarray(v_rows, dtype=float)
        if v.shape != (rows,):
            raise ValueError(f"v_rows must have shape ({rows},); got {v.shape}")
        if not np.all(np.isfinite(v)):
            raise ValueError("v_rows must be finite (V)")
        limit = min(self._device_config.set_threshold_v, self._device_config.reset_threshold_v)
        if np.any(np.abs(v) >= limit):
            raise ValueError(f"|v_rows| must stay below {limit} V (the lowest switching "
                             f"threshold) so that an MVM does not program cells; got "
                             f"max {np.abs(v).max()} V")
        row_on = self._enable_mask(row_enable, rows, "row_enable")
        col_on = self._enable_mask(col_enable, total_cols, "col_enable")
        g_true = np.asarray(self.devices.conductance_s)
        g_seen = self.devices.read_all() * self._ir_factor(g_true, self._path_resistance)
        currents = g_seen.T @ np.where(row_on, v, 0.0)
        return np.where(col_on, currents, 0.0)

    @staticmethod
    def _enable_mask(mask: ArrayLike | None, size: int, name: str) -> NDArray[np.bool_]:
        if mask is None:
            return np.ones(size, dtype=bool)
        array = np.asarray(mask)
        if array.dtype != np.bool_ or array.shape != (size,):
            raise ValueError(f"{name} must be a bool array of shape ({size},); got "
                             f"{array.dtype} {array.shape}")
        return array

    def set_conductance(self, values: ArrayLike) -> None:
        """Ideal programming path: place every healthy cell at ``values`` (S)."""
        self.devices.set_conductance(values)

    def advance_time(self, seconds: float) -> None:
        """Let time pass (conductance drift)."""
        self.devices.advance_time(seconds)
