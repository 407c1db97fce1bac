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

from amaranth.hdl import Cat, Const, Module, Mux, Shape, ShapeLike, Signal, Value, ValueLike
from amaranth.lib import enum, wiring
from amaranth.utils import ceil_log2
from amaranth.lib.wiring import In, Out

from .params import BuildParams

__all__ = ["AFEMode", "ProgPolarity", "AFEPort", "AFESignature", "lowest_set_index",
           "at_most_one_set", "GroupedWalk",
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


def at_most_one_set(vector: ValueLike) -> Value:
    """Whether ``vector`` has at most one bit set, as a tree (any, two or more) of its halves:
    no carry chain (``v & (v - 1) == 0`` has one in front of its zero test, docs/synthesis.md E57)."""
    vector = Value.cast(vector)

    def any_many(bits: Value) -> tuple[Value, Value]:
        if len(bits) == 1:
            return bits[0], Const(0, 1)
        half = len(bits) // 2
        low_any, low_many = any_many(bits[:half])
        high_any, high_many = any_many(bits[half:])
        return low_any | high_any, low_many | high_many | (low_any & high_any)
    return ~any_many(vector)[1]


class GroupedWalk:
    """A walk over the set bits of a ``width``-bit mask, lowest first, one bit per :meth:`step`
    (the row walks: the next bit, whether none or at most one is left), with only short logic
    between registers (docs/synthesis.md E63).

    The mask is cut into groups of :data:`GROUP_BITS`: the walk keeps the bits after its current
    one in the current group (a step there is an 8-bit search) and, per group, the registered
    state at the first bit of the next non-empty group (a step into it is a mux of registers on
    the group register). :meth:`load` fills those tables from the mask; they stay until the next
    load. Emits into ``m``'s current context: call :meth:`load`, :meth:`restart` and
    :meth:`step` where those updates apply. One step past the last bit leaves the walk
    empty at index 0; after more steps only :meth:`load` or :meth:`restart` defines it again.

    ``index`` is the current bit (0 when none is left), ``empty`` whether none is left,
    ``last`` whether at most one is left (registers)."""

    GROUP_BITS = 8

    def __init__(self, m: Module, width: int, name: str):
        if width < 1:
            raise ValueError(f"walk width must be at least 1, not {width}")
        self._m = m
        self._group_bits = min(self.GROUP_BITS, 1 << ceil_log2(width))
        self._groups = -(-width // self._group_bits)
        self.index = Signal(max(1, ceil_log2(width)), name=f"{name}_index")
        self.empty = Signal(name=f"{name}_empty")
        self.last = Signal(name=f"{name}_last")
        # The current bit's group, the bits after it there, whether there are any, and whether
        # a non-empty group follows ("at most one left" from registers).
        self._group = Signal(max(1, ceil_log2(self._groups)), name=f"{name}_group")
        self._rest = Signal(self._group_bits, name=f"{name}_rest")
        self._more = Signal(name=f"{name}_more")
        self._later = Signal(name=f"{name}_later")

        def entry(kind: str) -> dict[str, Signal]:
            return {"index": Signal.like(self.index, name=f"{name}_{kind}_index"),
                    "group": Signal.like(self._group, name=f"{name}_{kind}_group"),
                    "rest": Signal.like(self._rest, name=f"{name}_{kind}_rest"),
                    "more": Signal(name=f"{name}_{kind}_more"),
                    "exists": Signal(name=f"{name}_{kind}_exists"),
                    "later": Signal(name=f"{name}_{kind}_later"),
                    "single": Signal(name=f"{name}_{kind}_single")}
        # Per group g, the walk's state at the first bit after group g; and at the mask's first.
        self._next_group = [entry(f"after{g}") for g in range(self._groups)]
        self._first = entry("first")

    @staticmethod
    def _without_lowest(bits: Value) -> Value:
        """``bits & (bits - 1)`` as each bit and any below it: no subtracter, which Yosys would
        share between the walk's step and the load's tables behind a mux of the FSM state."""
        return Cat(bits[i] & bits[:i].any() for i in range(len(bits)))

    @staticmethod
    def _select(values: list[Value], index: Value) -> Value:
        """``values[index]`` as a balanced tree of 2:1 muxes on the index bits."""
        level = list(values)
        for bit in index:
            if len(level) == 1:
                break
            level = [Mux(bit, level[min(i + 1, len(level) - 1)], level[i])
                     for i in range(0, len(level), 2)]
        return level[0]

    def _positions(self, slices: list[Value], groups: Value) -> dict[str, Value]:
        """The walk's state at the first bit in the groups set in ``groups`` (``slices``: the
        mask's groups); index 0 when there is none, as :func:`lowest_set_index`."""
        group = lowest_set_index(groups)[:len(self._group)]
        pick = lambda values: self._select(values, group)  # noqa: E731
        many = pick([~at_most_one_set(bits) for bits in slices])
        low = pick([lowest_set_index(bits)[:ceil_log2(self._group_bits)] for bits in slices])
        return {"index": Mux(groups.any(), Cat(low, group), 0),
                "group": group,
                "rest": pick([self._without_lowest(bits) for bits in slices]),
                "more": many,
                "exists": groups.any(),
                "later": ~at_most_one_set(groups),
                "single": ~groups.any() | (~many & at_most_one_set(groups))}

    def load(self, mask: ValueLike) -> None:
        """Walk ``mask`` from its first bit (in the next cycle), and keep its tables."""
        mask = Value.cast(mask)
        size = self._group_bits
        padded = Cat(mask, Const(0, self._groups * size - len(mask)))
        slices = [padded[g * size:(g + 1) * size] for g in range(self._groups)]
        occupied = Cat(bits.any() for bits in slices)
        first = self._positions(slices, occupied)
        for g, table in enumerate(self._next_group):
            after = Cat(Const(0, g + 1), occupied[g + 1:])[:self._groups]
            values = self._positions(slices, after)
            self._m.d.sync += [table[key].eq(values[key]) for key in table]
        self._m.d.sync += [self._first[key].eq(first[key]) for key in self._first]
        self._set(first)

    def _set(self, state: dict[str, Value]) -> None:
        self._m.d.sync += [self.index.eq(state["index"]), self._group.eq(state["group"]),
                           self._rest.eq(state["rest"]), self._more.eq(state["more"]),
                           self._later.eq(state["later"]), self.empty.eq(~state["exists"]),
                           self.last.eq(state["single"])]

    def restart(self) -> None:
        """Walk the loaded mask again from its first bit (in the next cycle), from registers."""
        self._set(self._first)

    def step(self) -> None:
        """Go to the next bit (in the next cycle): in the group, or the next group's first."""
        m, rest = self._m, self._rest
        after = {key: self._select([table[key] for table in self._next_group], self._group)
                 for key in self._first}
        m.d.sync += self.empty.eq(self.last)
        with m.If(self._more):
            m.d.sync += [self.index.eq(Cat(lowest_set_index(rest)[:ceil_log2(self._group_bits)],
                                           self._group)),
                         rest.eq(self._without_lowest(rest)),
                         self._more.eq(~at_most_one_set(rest)),
                         self.last.eq(at_most_one_set(rest) & ~self._later)]
        with m.Else():
            m.d.sync += [self.index.eq(after["index"]), self._group.eq(after["group"]),
                         rest.eq(after["rest"]), self._more.eq(after["more"]),
                         self._later.eq(after["later"]), self.last.eq(after["single"])]


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
