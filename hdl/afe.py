"""The AFE interface: the one definition of the ports between the controller and the
analog front end (DACs, switches, closed-loop circuit, ADC, programming pulser, calibration).

The RTL ports (``afe: Out(AFESignature(params))`` in every block) and the cocotb binding are
both derived from :class:`AFESignature`; :meth:`AFESignature.ports` enumerates its members
with widths and directions. docs/afe-interface.md gives the semantics and timing.

Idle convention: every controller-driven member is 0 while a block is idle (mode IDLE,
loop open, strobes low, switches open, DAC bus quiet), so the controller may combine the
blocks' AFE outputs by OR-ing them (or muxing on ``busy``) without extra gating. (The DACs
themselves are left at the zero-volt code ``BuildParams.dac_zero_code``, not at code 0: the
codes are offset binary.)
"""
from __future__ import annotations

from typing import NamedTuple

from amaranth.hdl import Const, Module, Mux, Shape, ShapeLike, Signal, Value, ValueLike
from amaranth.lib import enum, wiring
from amaranth.utils import ceil_log2
from amaranth.lib.wiring import In, Out

from .params import BuildParams

__all__ = ["AFEMode", "ProgPolarity", "AFEPort", "AFESignature", "lowest_set_index",
           "emit_safe_exit", "SAFE_EXIT_STATE"]


class AFEMode(enum.Enum, shape=3):
    """Configuration of the analog core; IDLE (0) is the safe state."""

    IDLE = 0        #: everything disconnected; the reset and idle value
    SOLVE = 1       #: closed-loop NNLS, outputs clamped (x >= 0)
    SOLVE_FREE = 2  #: closed-loop unconstrained least squares (refinement)
    MVM = 3         #: open loop: column sense amplifiers read W^T v
    READ_CELL = 4   #: read voltage on cell_row, cell_col's current to the ADC
    PROGRAM = 5     #: pulser connected to (cell_row, cell_col)
    CAL = 6         #: the reference chosen by cal_ref_sel routed to the ADC


class ProgPolarity(enum.Enum, shape=1):
    """Direction of a programming pulse."""

    SET = 0    #: raise the conductance
    RESET = 1  #: lower the conductance


class AFEPort(NamedTuple):
    """One member of the AFE interface, as the RTL port and the cocotb binding see it."""

    name: str            #: member name; the Verilog port is ``<prefix>__<name>``
    width: int           #: bits
    flow: wiring.Flow    #: Out = driven by the controller, In = driven by the AFE
    shape: ShapeLike     #: Amaranth shape (an enum class for mode and prog_polarity)


class AFESignature(wiring.Signature):
    """AFE port of a controller block (the controller side drives the Out members).

    DAC: ``dac_addr``, ``dac_data``, ``dac_we`` write a row DAC's input register;
    ``dac_ldac`` copies all input registers to the outputs at once.
    Switches: ``row_en`` (one bit per row), ``col_en`` (one bit per physical column).
    Mode: ``mode`` (:class:`AFEMode`), ``loop`` (start the analog operation).
    ADC: ``adc_mux`` (physical column), ``adc_start`` (strobe), ``adc_busy``, ``adc_data``,
    ``adc_ovr`` (In).
    Cell select: ``cell_row``, ``cell_col`` (READ_CELL and PROGRAM).
    Programming: ``prog_polarity``, ``prog_amplitude``, ``prog_width``, ``prog_fire``
    (strobe), ``prog_done`` (In, strobe).
    Calibration: ``cal_ref_sel``.
    """

    def __init__(self, params: BuildParams):
        if not isinstance(params, BuildParams):
            raise TypeError(f"params must be a BuildParams, got {params!r}")
        self._params = params
        super().__init__({
            # DAC group
            "dac_addr": Out(params.row_addr_bits),
            "dac_data": Out(params.dac_bits),
            "dac_we": Out(1),
            "dac_ldac": Out(1),
            # switches
            "row_en": Out(params.rows),
            "col_en": Out(params.total_cols),
            # mode
            "mode": Out(AFEMode),
            "loop": Out(1),
            # ADC group
            "adc_mux": Out(params.col_addr_bits),
            "adc_start": Out(1),
            "adc_busy": In(1),
            "adc_data": In(params.adc_bits),
            "adc_ovr": In(1),
            # cell select
            "cell_row": Out(params.row_addr_bits),
            "cell_col": Out(params.col_addr_bits),
            # programming
            "prog_polarity": Out(ProgPolarity),
            "prog_amplitude": Out(params.prog_amp_bits),
            "prog_width": Out(params.prog_width_bits),
            "prog_fire": Out(1),
            "prog_done": In(1),
            # calibration
            "cal_ref_sel": Out(params.cal_ref_bits),
        })

    @property
    def params(self) -> BuildParams:
        return self._params

    def __eq__(self, other: object) -> bool:
        other_unflipped = other.flip() if type(other) is wiring.FlippedSignature else other
        return type(other_unflipped) is AFESignature and other_unflipped.params == self.params

    def __repr__(self) -> str:
        return f"AFESignature({self._params!r})"

    def ports(self) -> tuple[AFEPort, ...]:
        """Every member with its width and direction, in declaration order (controller view).

        Flows are those of this signature as written (Out = controller drives); the AFE
        model drives exactly the In members.
        """
        result = []
        for path, member in self.members.flatten():
            name = "__".join(str(part) for part in path)
            result.append(AFEPort(name, Shape.cast(member.shape).width, member.flow,
                                  member.shape))
        return tuple(result)


def lowest_set_index(vector: ValueLike) -> Value:
    """Index of the lowest set bit of ``vector`` (0 when none is set): picks the next
    enabled row or column from a mask of those not yet visited, at no cycle cost.

    A binary tree of muxes: log2(width) levels, not a width-long priority chain."""
    vector = Value.cast(vector)

    def lowest(bits: Value) -> tuple[Value, Value]:
        if len(bits) == 1:
            return bits[0], Const(0, 1)
        half = 1 << (ceil_log2(len(bits)) - 1)
        low_any, low_index = lowest(bits[:half])
        high_any, high_index = lowest(bits[half:])
        return low_any | high_any, Mux(low_any, low_index, high_index + half)

    any_set, index = lowest(vector)
    return Mux(any_set, index, 0)


SAFE_EXIT_STATE = "Safe-Zero-DAC"


def emit_safe_exit(m: Module, afe: wiring.PureInterface, params: BuildParams, *,
                   then: str) -> None:
    """Add the safe-exit states to the FSM being built in ``m`` (call inside ``m.FSM()``).

    Entering :data:`SAFE_EXIT_STATE` writes the zero-volt code ``params.dac_zero_code`` into
    every row DAC (all of them: an abort may come after a partial load), then pulses
    ``dac_ldac``, then goes to ``then``. Mode,
    loop, switches and strobes stay at their idle value 0 throughout, so the loop is open
    and the AFE idle from the first safe-exit cycle. Lasts ``rows + 1`` cycles.
    """
    zero_row = Signal(range(params.rows), name="safe_exit_row")
    with m.State(SAFE_EXIT_STATE):
        m.d.comb += [afe.dac_we.eq(1), afe.dac_addr.eq(zero_row),
                     afe.dac_data.eq(params.dac_zero_code)]
        m.d.sync += zero_row.eq(zero_row + 1)
        with m.If(zero_row == params.rows - 1):
            m.d.sync += zero_row.eq(0)
            m.next = "Safe-LDAC"
    with m.State("Safe-LDAC"):
        m.d.comb += afe.dac_ldac.eq(1)
        m.next = then
