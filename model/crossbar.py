"""RRAM crossbar: ROWS x (COLS + SPARE) cells of a DeviceArray, with wire IR drop.

Geometry (docs/model-device.md): each row line is driven from its column-0 end, each column
line ends in a virtual-ground sense node at its row-0 end, and every wire segment between
neighbouring cells, or to the driver or the sense node, has resistance r_wire. With IR drop
on, the array is solved as the linear resistive network it is (nodal analysis, sparse LU).
The result is the exact port transfer matrix, so it includes the currents that neighbouring
cells add to the shared wires. A per-cell series-resistance correction
G / (1 + G R_path) leaves those out, and they dominate when many rows conduct. By
superposition the matrix does not depend on the input: column currents = G_eff^T v for any v.
"""
from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sparse
import scipy.sparse.linalg as sparse_linalg
from numpy.typing import ArrayLike, NDArray

from ._fields import boolean as _boolean
from ._fields import integer as _integer
from ._fields import non_negative as _non_negative
from ._fields import positive as _positive
from .device import DeviceArray, DeviceConfig, FloatArray

__all__ = ["CrossbarConfig", "Crossbar", "port_conductance_s", "series_conductance_s"]

#: Leakage to ground on every wire node (S). It keeps the nodal matrix regular when a
#: floating line sits behind zero-conductance cells; at 1e-12 S no current changes measurably.
NODE_LEAKAGE_S = 1e-12
#: Enable patterns whose IR-drop port matrix is kept (per conductance state).
PORT_CACHE_SIZE = 8


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
    #: Model the wire resistance (exact nodal solve) in reads and MVMs.
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
        """Thin, resistive wires (about three times the assumed realistic value)."""
        return cls(wire_resistance_ohm=5.0, ir_drop=True)

    def replace(self, **changes: Any) -> "CrossbarConfig":
        return dataclasses.replace(self, **changes)

    @property
    def total_cols(self) -> int:
        """Physical columns: cols + spare."""
        return self.cols + self.spare


def port_conductance_s(g_s: FloatArray, wire_resistance_ohm: float,
                       row_enable: NDArray[np.bool_], col_enable: NDArray[np.bool_]) -> FloatArray:
    """Exact effective conductance matrix (S) of a crossbar with resistive wires.

    Entry (i, j) is the current into column j's virtual ground per volt on row i's driver,
    with every other enabled row driver at 0 V. Column currents are therefore result^T v for
    any drive v (superposition). A disabled row has its word line off: its cells' access
    transistors are open, so its cells leave the network (no sneak path through a masked
    row). Disabled columns float (no sense node) and read 0. Node numbering: row-line node (i, j) is i*C + j, column-line
    node (i, j) is R*C + i*C + j. Row drivers attach at j = 0, sense nodes at i = 0, each
    through one wire segment.
    """
    rows, cols = g_s.shape
    out = np.zeros((rows, cols))
    if not row_enable.any() or not col_enable.any():
        return out
    g_s = np.where(row_enable[:, None], g_s, 0.0)  # 1T1R: word line off, cells open
    if wire_resistance_ohm == 0.0:
        return np.where(row_enable[:, None] & col_enable[None, :], g_s, 0.0)
    g_wire = 1.0 / wire_resistance_ohm
    n = rows * cols
    row_node = np.arange(n).reshape(rows, cols)
    col_node = n + row_node
    # Two-terminal branches (a, b, conductance): cells, row-wire and column-wire segments.
    a = np.concatenate([row_node.ravel(), row_node[:, 1:].ravel(), col_node[1:, :].ravel()])
    b = np.concatenate([col_node.ravel(), row_node[:, :-1].ravel(), col_node[:-1, :].ravel()])
    g = np.concatenate([g_s.ravel(), np.full(rows * (cols - 1), g_wire),
                        np.full((rows - 1) * cols, g_wire)])
    diagonal = np.full(2 * n, NODE_LEAKAGE_S)
    np.add.at(diagonal, a, g)
    np.add.at(diagonal, b, g)
    # Enabled drivers and sense nodes are ideal voltage sources behind one wire segment.
    diagonal[row_node[row_enable, 0]] += g_wire
    diagonal[col_node[0, col_enable]] += g_wire
    index = np.arange(2 * n)
    matrix = sparse.csc_matrix(
        (np.concatenate([diagonal, -g, -g]),
         (np.concatenate([index, a, b]), np.concatenate([index, b, a]))),
        shape=(2 * n, 2 * n))
    driven = np.nonzero(row_enable)[0]
    excitation = np.zeros((2 * n, driven.size))
    excitation[row_node[driven, 0], np.arange(driven.size)] = g_wire  # 1 V behind g_wire
    voltages = sparse_linalg.splu(matrix).solve(excitation)
    sensed = np.nonzero(col_enable)[0]
    out[np.ix_(driven, sensed)] = (g_wire * voltages[col_node[0, sensed], :]).T
    return out


def series_conductance_s(g_s: FloatArray, wire_resistance_ohm: float) -> FloatArray:
    """Per-cell first-order estimate G / (1 + G R_path), R_path(i, j) = r_wire (i + j + 2).

    This is each cell's wire path to its driver and sense node taken alone, as if no other
    cell conducted. It is a lower bound on the loss. ``port_conductance_s`` is exact; the
    doc compares the two.
    """
    rows, cols = g_s.shape
    path = wire_resistance_ohm * (np.arange(rows)[:, None] + np.arange(cols)[None, :] + 2.0)
    return g_s / (1.0 + g_s * path)


class Crossbar:
    """The RRAM crossbar the analog front end computes with.

    ``rng`` seeds the DeviceArray (variation, faults, pulse and read noise): the same seed
    gives the same crossbar and the same history.
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
        # Port matrices of the last few enable patterns (a solve alternates between a few
        # switch settings), valid for the conductances in _cached_g: any change drops them.
        self._cached_g: FloatArray | None = None
        self._port_g_by_enables: OrderedDict[tuple[bytes, bytes], FloatArray] = OrderedDict()

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

    def effective_conductance_s(self, row_enable: ArrayLike | None = None,
                                col_enable: ArrayLike | None = None) -> FloatArray:
        """The conductance matrix the periphery sees (S, rows x (cols + spare)).

        With IR drop this is the exact port transfer matrix of the resistive network
        (``port_conductance_s``) for the given connected rows and columns (default: all):
        an MVM's column currents are result^T v for any v. Without IR drop it is G, zeroed
        on disabled rows and columns.
        """
        rows, total_cols = self.shape
        row_on = self._enable_mask(row_enable, rows, "row_enable")
        col_on = self._enable_mask(col_enable, total_cols, "col_enable")
        g = np.asarray(self.devices.conductance_s)
        if not self._config.ir_drop:
            return np.where(row_on[:, None] & col_on[None, :], g, 0.0)
        if self._cached_g is None or not np.array_equal(self._cached_g, g):
            self._port_g_by_enables.clear()
            self._cached_g = g.copy()
        key = (row_on.tobytes(), col_on.tobytes())
        port_g = self._port_g_by_enables.get(key)
        if port_g is None:
            port_g = port_conductance_s(g, self._config.wire_resistance_ohm, row_on, col_on)
            self._port_g_by_enables[key] = port_g
            if len(self._port_g_by_enables) > PORT_CACHE_SIZE:
                self._port_g_by_enables.popitem(last=False)
        else:
            self._port_g_by_enables.move_to_end(key)
        return port_g.copy()

    # ---- operations ------------------------------------------------------------------

    def pulse(self, row: ArrayLike, col: ArrayLike, polarity: ArrayLike, amplitude_v: ArrayLike,
              width_s: ArrayLike) -> None:
        """One programming pulse per addressed cell (scalars or broadcast index arrays);
        polarity +1 SET, -1 RESET. The wire drop on a pulse is neglected (programming
        currents flow through one cell only)."""
        self.devices.pulse(row, col, polarity, amplitude_v, width_s)

    def read(self, rows: ArrayLike, cols: ArrayLike) -> FloatArray:
        """Measured conductances (S) of the addressed cells, one read each.

        A read drives one row at read_voltage_v, with the other rows at 0 V and every
        column at virtual ground, and divides the column current by read_voltage_v. So it
        returns the effective conductance times (1 + read noise).
        """
        if not self._config.ir_drop and type(rows) is int and type(cols) is int \
                and 0 <= rows < self.shape[0] and 0 <= cols < self.shape[1]:
            # One cell without IR drop (a READ_CELL conversion, write-verify's common case): the
            # same value and noise draw without building the whole effective matrix.
            return self.devices.conductance_s[rows, cols] * self.devices.read_noise_factors(())
        r, c = self.devices.check_cells(rows, cols)
        return self.effective_conductance_s()[r, c] * self.devices.read_noise_factors(r.shape)

    def read_cell(self, row: int, col: int) -> float:
        """Measured conductance (S) of one cell (see ``read``)."""
        return float(self.read(row, col))

    def read_current_a(self, row: int, col: int) -> float:
        """Read current (A) of one cell at read_voltage_v."""
        return self._config.read_voltage_v * self.read_cell(row, col)

    def mvm(self, v_rows: ArrayLike, row_enable: ArrayLike | None = None,
            col_enable: ArrayLike | None = None) -> FloatArray:
        """Open-loop product: the column currents (A) into the virtual-ground columns.

        I_j = sum_i G_eff,ij (1 + read noise_ij) v_i over the enabled rows. Disabled rows
        are disconnected (they drive nothing), disabled columns read 0. Each call draws
        fresh read noise. Row voltages must stay below the switching thresholds.
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
        seen = self.effective_conductance_s(row_on, col_on)
        seen = seen * self.devices.read_noise_factors(seen.shape)
        return seen.T @ np.where(row_on, v, 0.0)

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
