"""A small register layer in the shape of amaranth-soc's ``csr``.

amaranth-soc is not installable from PyPI, so this is the part of it the controller needs:

* :class:`Field` and its variants (:class:`ConstField`, :class:`CounterField`) describe the bits
  of a register: access, width, reset value, doc, and optionally an enum of legal values;
* a :class:`Register` is a small class with a docstring whose class attributes are its fields
  (or whose ``__init__`` passes them, when they depend on build parameters);
* :class:`MemoryWindow` and :class:`VectorWindow` put buffers on the bus;
* a :class:`RegisterMap` places registers and windows at fixed byte offsets;
* :class:`RegisterFile` is the gateware: a generic register bus on one side
  (:class:`RegisterBusSignature`) and, on the core side, one port per field (values the core
  reads, strobes it reacts to, values it drives) and the buffers' memory ports.

The same declarations feed the exporters (``regmap_export``): markdown, JSON, C header and the
host's constants, so no bit position is written down twice.

Bus contract (all words 32 bits, addresses are word addresses on this bus):

* the master sets ``addr`` at least one cycle before it raises ``r_stb`` or ``w_stb`` for one
  cycle (with ``w_data``, ``w_strb`` for writes) and holds ``addr``/``w_data``/``w_strb`` stable
  until ``ack``: the slave decodes the address in the cycle before the strobe (a register stage;
  decode and read mux or write enables in one cycle are too deep for the iCE40, docs/synthesis.md);
* ``ack`` rises for one cycle, one or more cycles after the strobe; ``r_data`` is valid in that
  cycle; ``err`` in that cycle means the access was refused and had no effect;
* one access at a time: no new strobe before the previous ``ack``.
"""
from __future__ import annotations

import enum as py_enum
import inspect
import keyword
import re
from dataclasses import dataclass
from typing import Iterator, Mapping

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, Value
from amaranth.lib import data, wiring
from amaranth.lib import enum as hdl_enum
from amaranth.lib.memory import Memory, ReadPort, WritePort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

__all__ = [
    "DATA_WIDTH", "WORD_BYTES", "Access", "Field", "ConstField", "CounterField", "PlacedField",
    "Register", "MemoryWindow", "VectorWindow", "CoreAccess", "RegisterMap", "MapEntry",
    "RegisterBusSignature", "RegisterFile", "discard_unbuilt",
]

DATA_WIDTH = 32
WORD_BYTES = DATA_WIDTH // 8


class Access(py_enum.Enum):
    """How the bus may use a field. The core side sees the complement (see :class:`RegisterFile`)."""

    R = "R"        #: read-only: the core drives the value (or it is a build constant / counter)
    W = "W"        #: write-only: the core reads the last value written; the bus reads 0
    RW = "RW"      #: read-write: the core reads the last value written
    RW1C = "RW1C"  #: the core sets bits; the bus reads them and writes 1 to clear them
    W1S = "W1S"    #: write-1-to-strobe: each 1 written pulses the core-side bit for one cycle; reads 0

    @property
    def readable(self) -> bool:
        """The bus reads the field's value (W and W1S fields read as 0)."""
        return self in (Access.R, Access.RW, Access.RW1C)

    @property
    def writable(self) -> bool:
        """A bus write has an effect on the field."""
        return self is not Access.R


_FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_MAP_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
_ACCEPTED_ACCESS = ", ".join(a.value for a in Access)


def _check_int(value: object, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{what} must be an integer from {low} to {high}, not {value!r}")
    return value


class Field:
    """One bit field of a register.

    Parameters
    ----------
    access : Access
        What the bus may do with the field.
    width : int
        Bits, 1 to 32.
    doc : str
        What the field means, in the units the host uses.
    reset : int
        Value after reset (for R fields driven by the core: only documentation, the core drives it).
    at : int or None
        Bit position of the least significant bit; None places the field right after the previous
        one (or at bit 0).
    values : amaranth enum class or None
        The legal values; the core-side port then has this enum as its shape, and the docs list them.
    """

    def __init__(self, access: Access, width: int, doc: str, *, reset: int = 0, at: int | None = None,
                 values: type[hdl_enum.Enum] | None = None) -> None:
        if not isinstance(access, Access):
            raise ValueError(f"field access must be one of {_ACCEPTED_ACCESS} (an Access member), not {access!r}")
        _check_int(width, "field width", 1, DATA_WIDTH)
        if not isinstance(doc, str) or not doc.strip():
            raise ValueError("field doc must be a non-empty string")
        if isinstance(reset, bool) or not isinstance(reset, int) or not 0 <= reset < 1 << width:
            raise ValueError(f"field reset must be an integer from 0 to {(1 << width) - 1} "
                             f"(it has {width} bits), not {reset!r}")
        if at is not None:
            _check_int(at, "field position", 0, DATA_WIDTH - 1)
        if values is not None:
            if not (isinstance(values, type) and issubclass(values, py_enum.Enum)
                    and isinstance(values, hdl_enum.EnumType)):
                raise ValueError(f"field values must be an amaranth enum class with a shape, not {values!r}")
            enum_width = Shape.cast(values).width
            if enum_width != width:
                raise ValueError(f"field values {values.__name__} are {enum_width} bits wide, "
                                 f"the field is {width} bits wide; they must match")
            if reset not in {member.value for member in values}:
                raise ValueError(f"field reset {reset} is not a value of {values.__name__}")
        self.access = access
        self.width = width
        self.doc = inspect.cleandoc(doc)
        self.reset = reset
        self.at = at
        self.values = values

    @property
    def shape(self) -> Shape | type[hdl_enum.Enum]:
        """Shape of the core-side port."""
        return self.values if self.values is not None else Shape(self.width)

    @property
    def kind(self) -> str:
        """'field', 'constant' or 'counter': how the register file implements it."""
        return "field"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.access.value}, {self.width}, reset={self.reset})"


class ConstField(Field):
    """A read-only field whose value is fixed at build time (identity, build parameters).

    It has no core-side port; the value shows in every export as the field's reset value.
    """

    def __init__(self, width: int, value: int, doc: str, *, at: int | None = None) -> None:
        super().__init__(Access.R, width, doc, reset=value, at=at)

    @property
    def kind(self) -> str:
        return "constant"


class CounterField(Field):
    """A read-only event counter kept inside the register file.

    The core adds ``<field>_inc`` (``increment_width`` bits; a 1-bit strobe by default) every
    cycle; the count saturates at its maximum (a wrapped counter would look small exactly when
    something went badly wrong) and is cleared by the W1S field named in ``cleared_by``
    (``"REGISTER.field"``); a clear wins over an increment in the same cycle. Both are registered
    before they act: the count shows an increment or a clear two cycles after the core's cycle.
    """

    def __init__(self, width: int, doc: str, *, cleared_by: str, increment_width: int = 1,
                 at: int | None = None) -> None:
        super().__init__(Access.R, width, doc, at=at)
        if not isinstance(cleared_by, str) or not re.fullmatch(r"[A-Z][A-Z0-9_]*\.[a-z][a-z0-9_]*", cleared_by):
            raise ValueError(f"counter cleared_by must name a strobe as 'REGISTER.field', not {cleared_by!r}")
        _check_int(increment_width, "counter increment_width", 1, width)
        self.cleared_by = cleared_by
        self.increment_width = increment_width

    @property
    def kind(self) -> str:
        return "counter"


@dataclass(frozen=True)
class PlacedField:
    """A field at its bit position inside a word."""

    name: str
    shift: int
    field: Field

    @property
    def width(self) -> int:
        return self.field.width

    @property
    def access(self) -> Access:
        return self.field.access

    @property
    def mask(self) -> int:
        """The field's bits within the word."""
        return ((1 << self.field.width) - 1) << self.shift

    @property
    def msb(self) -> int:
        return self.shift + self.field.width - 1


def _place(owner: str, fields: Mapping[str, Field]) -> dict[str, PlacedField]:
    """Give every field its bit position; reject overlaps and fields past the word."""
    if not fields:
        raise ValueError(f"{owner} has no fields")
    placed: dict[str, PlacedField] = {}
    next_bit = 0
    for name, field in fields.items():
        if not isinstance(name, str) or not _FIELD_NAME.match(name) or keyword.iskeyword(name):
            raise ValueError(f"field name must be a lower-case identifier (a-z, 0-9, _), not {name!r}")
        if not isinstance(field, Field):
            raise ValueError(f"field {name!r} of {owner} must be a Field, not {field!r}")
        shift = next_bit if field.at is None else field.at
        end = shift + field.width
        if end > DATA_WIDTH:
            raise ValueError(f"field {name!r} of {owner} needs bits {shift} to {end - 1}, "
                             f"past the {DATA_WIDTH}-bit word")
        for other in placed.values():
            if shift <= other.msb and other.shift <= end - 1:
                raise ValueError(f"field {name!r} of {owner} (bits {shift} to {end - 1}) overlaps field "
                                 f"{other.name!r} (bits {other.shift} to {other.msb})")
        placed[name] = PlacedField(name, shift, field)
        next_bit = end
    return placed


class Register:
    """A 32-bit register: subclass it, write a docstring, and declare fields.

    Either as class attributes, in bit order::

        class Control(Register):
            \"\"\"Starts and stops commands.\"\"\"
            start = Field(Access.W1S, 1, "Execute COMMAND.")

    or, when the fields depend on build parameters, by passing them from ``__init__``::

        super().__init__({"enable": Field(Access.RW, columns, "...", reset=...)})
    """

    def __init__(self, fields: Mapping[str, Field] | None = None, *, doc: str | None = None) -> None:
        owner = f"register {type(self).__name__}"
        if fields is None:
            fields = {}
            for klass in reversed(type(self).__mro__):
                fields.update({k: v for k, v in vars(klass).items() if isinstance(v, Field)})
        doc = doc if doc is not None else type(self).__doc__
        if doc is None or not doc.strip() or (doc is Register.__doc__):
            raise ValueError(f"{owner} needs a docstring (or doc=) saying what it is for")
        self.doc = inspect.cleandoc(doc)
        self.fields = _place(owner, fields)
        for name in self.fields:
            for port in (f"{name}_inc", f"{name}_set"):
                if port in self.fields:
                    raise ValueError(f"field name {port!r} of {owner} is reserved for a core port of field {name!r}")

    @property
    def access(self) -> str:
        """The field accesses, joined with '/' when the fields differ (e.g. 'RW', 'R/RW')."""
        seen = [a.value for a in Access if any(f.access is a for f in self.fields.values())]
        return "/".join(seen)

    @property
    def writable(self) -> bool:
        """A bus write changes something; writes to other registers are refused (SLVERR)."""
        return any(f.access.writable for f in self.fields.values())

    @property
    def reset(self) -> int:
        """The word a read returns after reset (core-driven R fields counted at their documented reset)."""
        return sum(f.field.reset << f.shift for f in self.fields.values() if f.access.readable)

    def core_members(self) -> dict[str, wiring.Member]:
        """Core-side ports, seen from the register file.

        R: ``<f>`` In (the core drives it); W, RW: ``<f>`` Out (held value); W1S: ``<f>`` Out (one-cycle
        pulse per bit written 1); RW1C: ``<f>`` Out (current bits) and ``<f>_set`` In (bits to set);
        counters: ``<f>_inc`` In; constants: nothing.
        """
        members: dict[str, wiring.Member] = {}
        for name, placed in self.fields.items():
            field = placed.field
            if field.kind == "constant":
                continue
            if field.kind == "counter":
                members[f"{name}_inc"] = In(field.increment_width)  # type: ignore[attr-defined]
            elif field.access is Access.R:
                members[name] = In(field.shape)
            elif field.access in (Access.W, Access.RW):
                init = field.values(field.reset) if field.values is not None else field.reset
                members[name] = Out(field.shape, init=init)
            elif field.access is Access.W1S:
                members[name] = Out(field.width)
            else:  # RW1C
                members[name] = Out(field.width, init=field.reset)
                members[f"{name}_set"] = In(field.width)
        return members


class CoreAccess(py_enum.Enum):
    """What the core does with a memory window's buffer."""

    READ = "read"
    WRITE = "write"
    READ_WRITE = "read_write"


class MemoryWindow:
    """A buffer on the bus: ``depth`` elements, one per 32-bit word, in an ``amaranth.lib.memory.Memory``.

    Parameters
    ----------
    depth : int
        Elements in the buffer.
    span : int
        Words of address space reserved (a power of two >= depth): fixed offsets for every build.
        Indices from depth to span - 1 are unmapped (SLVERR).
    fields : mapping of name to (width, doc)
        Bits of one element, packed from bit 0 in order.
    access : Access
        R (the bus only reads; the core writes) or RW (the bus writes and reads back).
    core : CoreAccess
        The core-side memory ports: ``read`` (a ReadPort signature) and/or ``write`` (a WritePort
        signature).
    core_write_granularity : int or None
        Bits per core-side write enable (1 lets the core set single bits of an element).
    core_read_transparent : bool
        The core-side read port returns the data written in the same cycle to the same index
        (by the core or the bus) instead of the old contents. Needs core=READ_WRITE.
    core_read_ports : int
        Core-side read ports: ``read``, then ``read_1``, ``read_2``... (one memory, several
        readers that look up different elements in the same cycle).
    init : int
        Every element's contents after reset (the element's bits as an integer).
    doc : str
        What the buffer holds and how elements are indexed.
    """

    def __init__(self, *, depth: int, span: int, fields: Mapping[str, tuple[int, str]], access: Access,
                 core: CoreAccess, doc: str, core_write_granularity: int | None = None,
                 core_read_transparent: bool = False, core_read_ports: int = 1, init: int = 0) -> None:
        _check_int(depth, "window depth", 1, 1 << 20)
        if isinstance(span, bool) or not isinstance(span, int) or span < depth or span & (span - 1):
            raise ValueError(f"window span must be a power of two >= the depth {depth}, not {span!r}")
        if access not in (Access.R, Access.RW):
            raise ValueError(f"window access must be R or RW, not {access!r}")
        if not isinstance(core, CoreAccess):
            raise ValueError(f"window core access must be a CoreAccess member (read, write, read_write), not {core!r}")
        if access is Access.R and core is CoreAccess.READ:
            raise ValueError("a window the bus only reads must be written by the core (core=WRITE or READ_WRITE)")
        if not isinstance(doc, str) or not doc.strip():
            raise ValueError("window doc must be a non-empty string")
        self.depth = depth
        self.span = span
        self.access = access
        self.core = core
        self.doc = inspect.cleandoc(doc)
        self.fields = _place("window element", {name: Field(access, width, text)
                                                for name, (width, text) in fields.items()})
        self.width = max(f.msb for f in self.fields.values()) + 1
        if core_write_granularity is not None:
            if core is CoreAccess.READ:
                raise ValueError("core_write_granularity needs a core write port (core=WRITE or READ_WRITE)")
            if len(self.fields) != 1 or isinstance(core_write_granularity, bool) or \
                    not isinstance(core_write_granularity, int) or core_write_granularity < 1 or \
                    self.width % core_write_granularity:
                raise ValueError(f"core_write_granularity must divide the {self.width}-bit element of a "
                                 f"single-field window, not {core_write_granularity!r}")
        self.core_write_granularity = core_write_granularity
        if not isinstance(core_read_transparent, bool):
            raise ValueError(f"core_read_transparent must be a bool, not {core_read_transparent!r}")
        if core_read_transparent and core is not CoreAccess.READ_WRITE:
            raise ValueError("core_read_transparent needs a core read and a core write port (core=READ_WRITE)")
        self.core_read_transparent = core_read_transparent
        _check_int(core_read_ports, "core_read_ports", 1, 8)
        if core_read_ports > 1 and not self.core_reads:
            raise ValueError("core_read_ports above 1 needs a core read port (core=READ or READ_WRITE)")
        self.core_read_ports = core_read_ports
        self.init = _check_int(init, "window init", 0, (1 << self.width) - 1)

    @property
    def addr_width(self) -> int:
        """Width of the memory's address (core-side ports)."""
        return ceil_log2(self.depth)

    @property
    def shape(self) -> int | data.Layout:
        """The element: an int width for one field, a layout (``.code``, ``.over_range``...) for several.

        Fields packed from bit 0 give a ``StructLayout``, so the ports compare equal to the blocks'
        own ``ReadPort``/``WritePort`` signatures and connect without glue.
        """
        if len(self.fields) == 1:
            return self.width
        return data.StructLayout({name: f.width for name, f in self.fields.items()})

    @property
    def core_reads(self) -> bool:
        return self.core in (CoreAccess.READ, CoreAccess.READ_WRITE)

    @property
    def core_writes(self) -> bool:
        return self.core in (CoreAccess.WRITE, CoreAccess.READ_WRITE)

    @property
    def read_port_names(self) -> tuple[str, ...]:
        """Names of the core-side read ports (none if the core does not read)."""
        if not self.core_reads:
            return ()
        return ("read",) + tuple(f"read_{index}" for index in range(1, self.core_read_ports))

    def core_members(self) -> dict[str, wiring.Member]:
        """``read``/``write``: memory port signatures as the memory itself presents them."""
        members: dict[str, wiring.Member] = {}
        if self.core_reads:
            for name in self.read_port_names:
                members[name] = Out(ReadPort.Signature(addr_width=self.addr_width, shape=self.shape))
        if self.core_writes:
            members["write"] = Out(WritePort.Signature(addr_width=self.addr_width, shape=self.shape,
                                                       granularity=self.core_write_granularity))
        return members


class VectorWindow:
    """A bit vector in flip-flops, bus read-write, that the core sees whole (e.g. one enable per row).

    Word ``w`` holds bits ``32*w`` to ``32*w + 31``; bits past ``bits`` read 0 and ignore writes.
    """

    access = Access.RW

    def __init__(self, *, bits: int, span: int, doc: str, reset: int = 0) -> None:
        _check_int(bits, "vector bits", 1, 1 << 16)
        depth = -(-bits // DATA_WIDTH)
        if isinstance(span, bool) or not isinstance(span, int) or span < depth or span & (span - 1):
            raise ValueError(f"window span must be a power of two >= the depth {depth}, not {span!r}")
        if isinstance(reset, bool) or not isinstance(reset, int) or not 0 <= reset < 1 << bits:
            raise ValueError(f"vector reset must fit in {bits} bits, not {reset!r}")
        if not isinstance(doc, str) or not doc.strip():
            raise ValueError("window doc must be a non-empty string")
        self.bits = bits
        self.depth = depth
        self.span = span
        self.doc = inspect.cleandoc(doc)
        self.reset = reset
        self.width = DATA_WIDTH
        self.fields = {"bits": PlacedField("bits", 0, Field(Access.RW, min(bits, DATA_WIDTH),
                                                            "one bit per index, LSB first"))}

    def core_members(self) -> dict[str, wiring.Member]:
        return {"data": Out(self.bits, init=self.reset)}


Item = Register | MemoryWindow | VectorWindow


@dataclass(frozen=True)
class MapEntry:
    """A register or window at its byte offset."""

    name: str
    offset: int
    item: Item

    @property
    def span_words(self) -> int:
        return 1 if isinstance(self.item, Register) else self.item.span

    @property
    def end(self) -> int:
        """First byte offset past the entry."""
        return self.offset + self.span_words * WORD_BYTES

    @property
    def is_register(self) -> bool:
        return isinstance(self.item, Register)

    @property
    def port_name(self) -> str:
        """Name of the entry's core-side member on the register file."""
        return self.name.lower()


class RegisterMap:
    """Registers and windows at fixed byte offsets, plus the build parameters they were made for."""

    def __init__(self, name: str, params: Mapping[str, int] | None = None) -> None:
        if not isinstance(name, str) or not _MAP_NAME.match(name):
            raise ValueError(f"register map name must be an upper-case identifier, not {name!r}")
        self.name = name
        self.params = dict(params or {})
        self._entries: list[MapEntry] = []

    def add(self, name: str, item: Item, *, offset: int) -> MapEntry:
        """Place ``item`` at byte ``offset``; windows must be aligned to their span."""
        if not isinstance(name, str) or not _MAP_NAME.match(name):
            raise ValueError(f"register and window names must be upper-case identifiers, not {name!r}")
        if any(e.name == name for e in self._entries):
            raise ValueError(f"name {name!r} is already in the map")
        if not isinstance(item, (Register, MemoryWindow, VectorWindow)):
            raise ValueError(f"{name} must be a Register, MemoryWindow or VectorWindow, not {item!r}")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0 or offset % WORD_BYTES:
            raise ValueError(f"offset of {name} must be a non-negative multiple of {WORD_BYTES}, not {offset!r}")
        entry = MapEntry(name, offset, item)
        span_bytes = entry.span_words * WORD_BYTES
        if offset % span_bytes:
            raise ValueError(f"window {name} at 0x{offset:X} must be aligned to its span of 0x{span_bytes:X} bytes")
        for other in self._entries:
            if entry.offset < other.end and other.offset < entry.end:
                raise ValueError(f"{name} at 0x{entry.offset:X}..0x{entry.end - 1:X} overlaps {other.name} "
                                 f"at 0x{other.offset:X}..0x{other.end - 1:X}")
        if isinstance(item, Register):
            for placed in item.fields.values():
                if isinstance(placed.field, CounterField):
                    self._check_strobe(name, placed)
        self._entries.append(entry)
        self._entries.sort(key=lambda e: e.offset)
        return entry

    def _check_strobe(self, name: str, placed: PlacedField) -> None:
        target = placed.field.cleared_by  # type: ignore[attr-defined]
        reg_name, field_name = target.split(".")
        for entry in self._entries:
            if entry.name == reg_name and entry.is_register:
                field = entry.item.fields.get(field_name)  # type: ignore[union-attr]
                if field is not None and field.access is Access.W1S and field.width == 1:
                    return
        raise ValueError(f"counter {name}.{placed.name} is cleared by {target!r}, which is not a 1-bit W1S "
                         f"field of a register placed before it")

    def __iter__(self) -> Iterator[MapEntry]:
        return iter(self._entries)

    def __getitem__(self, name: str) -> MapEntry:
        for entry in self._entries:
            if entry.name == name:
                return entry
        raise KeyError(name)

    @property
    def registers(self) -> list[MapEntry]:
        return [e for e in self._entries if e.is_register]

    @property
    def windows(self) -> list[MapEntry]:
        return [e for e in self._entries if not e.is_register]

    @property
    def addr_width(self) -> int:
        """Word-address width of the bus that reaches every entry."""
        if not self._entries:
            raise ValueError(f"register map {self.name} is empty")
        return max(1, ceil_log2(max(e.end for e in self._entries) // WORD_BYTES))

    @property
    def byte_addr_width(self) -> int:
        return self.addr_width + ceil_log2(WORD_BYTES)


def discard_unbuilt(component: object) -> None:
    """Mark a component whose constructor is about to raise, so Amaranth does not warn that it was
    never elaborated (the same flag Amaranth sets on its own discarded objects)."""
    component._MustUse__silence = True  # type: ignore[attr-defined]


class RegisterBusSignature(wiring.Signature):
    """The internal register bus, from the master's side (see the module doc for the handshake)."""

    def __init__(self, *, addr_width: int) -> None:
        _check_int(addr_width, "register bus address width", 1, 30)
        self._addr_width = addr_width
        super().__init__({
            "addr": Out(addr_width),
            "r_stb": Out(1),
            "w_stb": Out(1),
            "w_data": Out(DATA_WIDTH),
            "w_strb": Out(WORD_BYTES, init=(1 << WORD_BYTES) - 1),
            "r_data": In(DATA_WIDTH),
            "ack": In(1),
            "err": In(1),
        })

    @property
    def addr_width(self) -> int:
        return self._addr_width

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RegisterBusSignature) and other.addr_width == self.addr_width

    def __repr__(self) -> str:
        return f"RegisterBusSignature(addr_width={self.addr_width})"


def _or_tree(values: list[Value]) -> Value:
    """The OR of ``values`` as a balanced tree (0 for none): ``functools.reduce`` builds a chain
    as deep as the list, which synthesis kept (14 LUT levels in front of the register file's read
    latch, the ECP5's critical path in one placement: docs/synthesis.md E39)."""
    if not values:
        return Const(0, DATA_WIDTH)
    while len(values) > 1:
        values = [values[i] | values[i + 1] if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values[0]


def _pattern(word_offset: int, span: int, addr_width: int) -> str:
    """Switch pattern matching every word address of a span-aligned entry."""
    low = ceil_log2(span)
    high = format(word_offset >> low, f"0{addr_width - low}b") if addr_width > low else ""
    return high + "-" * low


class RegisterFile(wiring.Component):
    """Gateware for a :class:`RegisterMap`.

    Members: ``bus`` (the register bus, slave side) and one member per register with core ports
    (named like the register, lower case) and per window, see :meth:`Register.core_members`,
    :meth:`MemoryWindow.core_members`, :meth:`VectorWindow.core_members`.

    Bus behaviour: reads and writes answer one cycle after the strobe, except a write to a window
    the core also writes, which waits while the core writes (the core wins; nothing is lost).
    The address decode is registered: ``addr`` must be on the bus from the cycle before the strobe
    (the bus contract in the module doc).
    ``err`` answers: an unmapped address (including window indices past the depth), a write to a
    register without writable fields or to a read-only window, and a window write whose ``w_strb``
    leaves out a byte lane holding element bits (no partial element updates). Register writes honour
    ``w_strb`` byte by byte. W1S pulses and RW1C clears happen the cycle after the strobe; an RW1C
    bit set by the core in the same cycle as the bus clears it stays set.
    """

    def __init__(self, register_map: RegisterMap, *, extra_members: Mapping[str, wiring.Member] | None = None) -> None:
        if not isinstance(register_map, RegisterMap):
            discard_unbuilt(self)
            raise ValueError(f"register_map must be a RegisterMap, not {register_map!r}")
        self.register_map = register_map
        members: dict[str, wiring.Member] = {"bus": In(RegisterBusSignature(addr_width=register_map.addr_width))}
        for entry in register_map:
            core = entry.item.core_members()
            if not core:
                continue
            if isinstance(entry.item, VectorWindow):
                members[entry.port_name] = core["data"]
            else:
                members[entry.port_name] = Out(wiring.Signature(core))
        for name, member in (extra_members or {}).items():
            if name in members:
                discard_unbuilt(self)
                raise ValueError(f"extra member {name!r} collides with a register or window port")
            members[name] = member
        super().__init__(members)

    def _strobe(self, target: str) -> Value:
        reg_name, field_name = target.split(".")
        return getattr(getattr(self, self.register_map[reg_name].port_name), field_name)

    def elaborate(self, platform: object) -> Module:
        m = Module()
        bus = self.bus
        addr_width = self.register_map.addr_width
        lane_mask = Cat(bus.w_strb[lane].replicate(8) for lane in range(WORD_BYTES))
        written = bus.w_data & lane_mask

        read_word = Signal(DATA_WIDTH)   # comb: the addressed register/vector word
        # (selected word, select) per register and vector: ORed, not a priority chain of muxes,
        # since the selects are one-hot (the address decode); a chain is too deep for 100 MHz.
        read_terms: list[tuple[Value, Value]] = []
        hit = Signal()                   # comb: the address is mapped (an OR of the registered selects)
        refused_write = Signal()         # comb: a write the target does not accept
        # (select & refusal) per target, ORed like read_terms (one-hot selects): a chain of
        # overriding assignments, one per target, was the iCE40's critical path (docs/synthesis.md I24).
        refusal_terms: list[Value] = []
        stall = Signal()                 # comb: the write must wait for a core-side port
        read_latch = Signal(DATA_WIDTH)
        read_from = Signal(range(len(self.register_map.windows) + 1))  # 0: read_latch, k: k-th memory
        ack = Signal()
        err = Signal()
        counters = {(e.name, name): Signal(f.width, name=f"{e.port_name}_{name}")
                    for e in self.register_map.registers
                    for name, f in e.item.fields.items() if f.field.kind == "counter"}  # type: ignore[union-attr]

        # Address decode only; everything else is built outside the switch so that core-side
        # connections do not depend on the bus address. Registered every cycle: the master sets
        # the address a cycle before the strobe, so the strobe's cycle starts from flip-flops
        # (one-hot selects of the mapped entries, window indices within the depth, and hit).
        in_span = {e.name: Signal(name=f"{e.port_name}_in_span") for e in self.register_map}
        with m.Switch(bus.addr):
            for entry in self.register_map:
                with m.Case(_pattern(entry.offset // WORD_BYTES, entry.span_words, addr_width)):
                    m.d.comb += in_span[entry.name].eq(1)
        selected = {e.name: Signal(name=f"{e.port_name}_selected") for e in self.register_map}
        for entry in self.register_map:
            mapped = in_span[entry.name]
            depth = None if entry.is_register else entry.item.depth  # type: ignore[union-attr]
            if depth is not None and depth < entry.span_words:  # indices past the depth are unmapped
                mapped = mapped & (bus.addr[:ceil_log2(entry.span_words)] < depth)
            m.d.sync += selected[entry.name].eq(mapped)
        # The OR of the selects after their registers, not of the decode before them: the decode
        # and the OR in one cycle were near the iCE40's critical path (docs/synthesis.md I32).
        m.d.comb += hit.eq(Cat(selected.values()).any())

        with m.If(bus.r_stb):
            # Registers answer from read_latch; a memory window below points read_from at its port.
            m.d.sync += [read_latch.eq(read_word), read_from.eq(0)]  # 0 when nothing is selected

        memory_reads: list[tuple[int, Value]] = []
        pending_writes: list[tuple[Signal, Value]] = []  # (pending flag, core busy)
        for entry in self.register_map:
            sel = selected[entry.name]
            if entry.is_register:
                self._elaborate_register(m, entry, sel, read_terms, refusal_terms, counters)
            elif isinstance(entry.item, VectorWindow):
                self._elaborate_vector(m, entry, sel, read_terms, written, lane_mask)
            else:
                source = len(memory_reads) + 1
                data_out, pending = self._elaborate_memory(m, entry, sel, source, read_from,
                                                           refusal_terms, stall)
                memory_reads.append((source, data_out))
                if pending is not None:
                    pending_writes.append(pending)

        m.d.comb += refused_write.eq(Cat(refusal_terms).any() if refusal_terms else 0)
        m.d.comb += read_word.eq(_or_tree([Mux(select, word, 0) for word, select in read_terms]))
        m.d.sync += [ack.eq(0), err.eq(0)]
        with m.If((bus.r_stb | bus.w_stb) & ~stall):
            m.d.sync += [ack.eq(1), err.eq(~hit | (bus.w_stb & refused_write))]
        for pending, core_busy in pending_writes:
            # A stalled window write answers once its port is free (never an error: it was checked).
            with m.If(pending & ~core_busy):
                m.d.sync += [pending.eq(0), ack.eq(1)]

        m.d.comb += [bus.ack.eq(ack), bus.err.eq(err), bus.r_data.eq(read_latch)]
        for source, data_out in memory_reads:
            with m.If(read_from == source):
                m.d.comb += bus.r_data.eq(data_out)
        return m

    # --- registers ---------------------------------------------------------------------------

    def _elaborate_register(self, m: Module, entry: MapEntry, sel: Signal, read_terms: list[tuple[Value, Value]],
                            refusal_terms: list[Value], counters: dict[tuple[str, str], Signal]) -> None:
        """Read mux, and what a bus write and the core do to each field."""
        register: Register = entry.item  # type: ignore[assignment]
        bus = self.bus
        lane_mask = Cat(bus.w_strb[lane].replicate(8) for lane in range(WORD_BYTES))
        written = bus.w_data & lane_mask
        write = Signal(name=f"{entry.port_name}_written")
        if register.writable:  # a refused write must not reach the fields
            m.d.comb += write.eq(bus.w_stb & sel)
        if not register.writable:
            refusal_terms.append(sel)
        ports = getattr(self, entry.port_name, None)
        readable: list[tuple[int, Value]] = []   # (lowest bit, value) of the readable fields
        for name, placed in register.fields.items():
            field = placed.field
            bits = slice(placed.shift, placed.msb + 1)
            if field.kind == "constant":
                value: Value | None = Const(field.reset, field.width)
            elif field.kind == "counter":
                value = count = counters[(entry.name, name)]
                # Increment and clear registered first: the core's logic behind an increment and
                # the saturating add are too deep for one iCE40 cycle (docs/synthesis.md I11).
                # The count follows both one cycle later; the clear still wins.
                increment = Signal(field.increment_width, name=f"{entry.port_name}_{name}_increment")
                clear = Signal(name=f"{entry.port_name}_{name}_clear")
                m.d.sync += [increment.eq(getattr(ports, f"{name}_inc")),
                             clear.eq(self._strobe(field.cleared_by))]  # type: ignore[attr-defined]
                total = count + increment  # one bit wider: overflow shows
                with m.If(clear):
                    m.d.sync += count.eq(0)
                with m.Else():
                    m.d.sync += count.eq(Mux(total[field.width], (1 << field.width) - 1, total))
            elif field.access in (Access.W, Access.RW):
                storage = Value.cast(getattr(ports, name))
                value = storage if field.access.readable else None
                with m.If(write):
                    m.d.sync += storage.eq((storage & ~lane_mask[bits]) | written[bits])
            elif field.access is Access.W1S:
                value = None
                m.d.sync += getattr(ports, name).eq(Mux(write, written[bits], 0))
            elif field.access is Access.RW1C:
                value = storage = getattr(ports, name)
                clear = Mux(write, written[bits], 0)
                m.d.sync += storage.eq((storage & ~clear) | getattr(ports, f"{name}_set"))
            else:  # R, driven by the core
                value = Value.cast(getattr(ports, name))
            if value is not None:
                readable.append((placed.shift, Value.cast(value)[:placed.msb + 1 - placed.shift]))
        # The word as an expression (no named signal: a register of constants would leave it unused).
        parts: list[Value] = []
        position = 0
        for shift, value in sorted(readable, key=lambda item: item[0]):
            if shift > position:
                parts.append(Const(0, shift - position))
            parts.append(value)
            position = shift + len(value)
        if position < DATA_WIDTH:
            parts.append(Const(0, DATA_WIDTH - position))
        read_terms.append((Cat(*parts), sel))

    # --- vector windows ----------------------------------------------------------------------

    def _elaborate_vector(self, m: Module, entry: MapEntry, sel: Signal, read_terms: list[tuple[Value, Value]],
                          written: Value, lane_mask: Value) -> None:
        vector: VectorWindow = entry.item  # type: ignore[assignment]
        bus = self.bus
        storage = getattr(self, entry.port_name)
        index = bus.addr[:ceil_log2(vector.span)] if vector.span > 1 else Const(0, 1)
        selected_word = Signal(DATA_WIDTH, name=f"{entry.port_name}_read_word")
        read_terms.append((selected_word, sel))
        with m.If(sel):
            with m.Switch(index):
                for word in range(vector.depth):
                    low, high = word * DATA_WIDTH, min((word + 1) * DATA_WIDTH, vector.bits)
                    with m.Case(word):
                        m.d.comb += selected_word.eq(storage[low:high])
                        with m.If(bus.w_stb):
                            width = high - low
                            m.d.sync += storage[low:high].eq((storage[low:high] & ~lane_mask[:width])
                                                             | written[:width])

    # --- memory windows ----------------------------------------------------------------------

    def _elaborate_memory(self, m: Module, entry: MapEntry, sel: Signal, source: int, read_from: Signal,
                          refusal_terms: list[Value], stall: Signal) -> tuple[Value, tuple[Signal, Value] | None]:
        window: MemoryWindow = entry.item  # type: ignore[assignment]
        bus = self.bus
        name = entry.port_name
        element = data.Const(window.shape, window.init) if isinstance(window.shape, data.Layout) else window.init
        init = [element] * window.depth if window.init else []
        memory = Memory(shape=window.shape, depth=window.depth, init=init)
        m.submodules[f"{name}_memory"] = memory
        ports = getattr(self, name)
        index = bus.addr[:ceil_log2(window.span)] if window.span > 1 else Const(0, 1)
        mapped = sel  # the registered decode includes the index check
        # A partial write would need a read-modify-write of the element: refuse it instead.
        lanes_ok = bus.w_strb[:-(-window.width // 8)].all()
        bus_writable = window.access is Access.RW

        # The bus port reads at the address of every cycle: the address is on the bus a cycle
        # before the strobe (bus contract), so the strobe's cycle has the word and registers it.
        # The answer then comes from a flip-flop, not from the block RAM's clock-to-out and the
        # window mux behind it (too deep for 100 MHz on the ECP5, docs/synthesis.md E14).
        bus_read = memory.read_port()
        bus_word = Signal(window.width, name=f"{name}_bus_word")
        m.d.comb += [bus_read.addr.eq(index), bus_read.en.eq(1)]
        refusal_terms.append(mapped & ~lanes_ok if bus_writable else mapped)
        with m.If(mapped):
            with m.If(bus.r_stb):
                m.d.sync += [read_from.eq(source), bus_word.eq(Value.cast(bus_read.data))]

        pending_info: tuple[Signal, Value] | None = None
        writers: list[WritePort] = []  # every port that writes the memory
        bus_write_now = Signal(name=f"{name}_bus_write")
        m.d.comb += bus_write_now.eq(bus.w_stb & mapped & lanes_ok if bus_writable else 0)
        if bus_writable and window.core_writes:
            # One write port shared by bus and core: the core wins, the bus write waits (held by the master).
            port = memory.write_port(granularity=window.core_write_granularity)
            core_busy = ports.write.en.any()
            pending = Signal(name=f"{name}_write_pending")
            do_bus_write = (bus_write_now | pending) & ~core_busy
            with m.If(bus_write_now & core_busy):
                m.d.comb += stall.eq(1)
                m.d.sync += pending.eq(1)
            m.d.comb += [
                port.addr.eq(Mux(core_busy, ports.write.addr, index)),
                Value.cast(port.data).eq(Mux(core_busy, Value.cast(ports.write.data), bus.w_data[:window.width])),
                port.en.eq(Mux(core_busy, ports.write.en, do_bus_write.replicate(len(port.en)))),
            ]
            pending_info = (pending, core_busy)
            writers.append(port)
        else:
            if bus_writable:
                port = memory.write_port()
                m.d.comb += [port.addr.eq(index), Value.cast(port.data).eq(bus.w_data[:window.width]),
                             port.en.eq(bus_write_now)]
                writers.append(port)
            if window.core_writes:
                core_port = memory.write_port(granularity=window.core_write_granularity)
                wiring.connect(m, wiring.flipped(ports.write), core_port)
                writers.append(core_port)
        if window.core_reads:
            transparent_for = tuple(writers) if window.core_read_transparent else ()
            for read_name in window.read_port_names:
                wiring.connect(m, wiring.flipped(getattr(ports, read_name)),
                               memory.read_port(transparent_for=transparent_for))
        return bus_word, pending_info
