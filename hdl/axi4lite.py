"""AXI4-Lite slave in front of a :class:`~.regmap.RegisterFile`.

Port names: the AXI signals are members of a nested signature ``axil``; Amaranth flattens them
to ``axil__awaddr``, ``axil__wdata``, ... in Verilog. cocotbext-axi binds them with no glue::

    AxiLiteMaster(AxiLiteBus.from_prefix(dut, "axil", bus_separator="__"), dut.clk, dut.rst)

Behaviour:

* AW and W are accepted independently (in either order or together) into one holding register
  each; AR likewise. One outstanding transaction per channel: AWREADY/WREADY stay low from
  acceptance until the B handshake, ARREADY until the R handshake.
* BVALID/RVALID, once high, stay high with stable BRESP/RDATA/RRESP until BREADY/RREADY.
* Reads and writes share the register bus; when both are waiting they alternate. The picked
  access is registered (address and direction): its address is on the register bus from the
  next cycle ("Decode", the register file decodes it, the register bus contract of
  :mod:`.regmap`) and the strobe follows one cycle later ("Strobe"). The register bus address is
  always a flip-flop (docs/synthesis.md, I13/I15).
* Responses: SLVERR when the register file refuses the access (unmapped address, read-only
  register or window, partial window write) or the address has bits set above the register
  map; OKAY otherwise. Never EXOKAY or DECERR.
* WSTRB goes to the register file (honoured per byte for registers, see :class:`~.regmap.RegisterFile`).
* The two low address bits are ignored (word accesses); AWPROT/ARPROT are not ports (ignored).
"""
from __future__ import annotations

from typing import Any

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import enum, wiring
from amaranth.lib.wiring import In, Out

from .regmap import DATA_WIDTH, WORD_BYTES, RegisterBusSignature, RegisterFile, _check_int, discard_unbuilt

__all__ = ["Response", "AXI4LiteSignature", "AXI4LiteSlave", "AXI4LiteRegisterFile"]


class Response(enum.Enum, shape=2):
    """BRESP / RRESP."""

    OKAY = 0b00
    EXOKAY = 0b01
    SLVERR = 0b10
    DECERR = 0b11


class AXI4LiteSignature(wiring.Signature):
    """AXI4-Lite with a 32-bit data bus, from the master's side (AWPROT/ARPROT left out)."""

    def __init__(self, *, addr_width: int) -> None:
        _check_int(addr_width, "AXI4-Lite address width", 3, 64)
        self._addr_width = addr_width
        super().__init__({
            "awaddr": Out(addr_width), "awvalid": Out(1), "awready": In(1),
            "wdata": Out(DATA_WIDTH), "wstrb": Out(WORD_BYTES), "wvalid": Out(1), "wready": In(1),
            "bresp": In(Response), "bvalid": In(1), "bready": Out(1),
            "araddr": Out(addr_width), "arvalid": Out(1), "arready": In(1),
            "rdata": In(DATA_WIDTH), "rresp": In(Response), "rvalid": In(1), "rready": Out(1),
        })

    @property
    def addr_width(self) -> int:
        return self._addr_width

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AXI4LiteSignature) and other.addr_width == self.addr_width

    def __repr__(self) -> str:
        return f"AXI4LiteSignature(addr_width={self.addr_width})"


class AXI4LiteSlave(wiring.Component):
    """Bridges AXI4-Lite (``axil``) to the register bus (``bus``), see the module doc.

    Parameters
    ----------
    bus_addr_width : int
        Word-address width of the register bus (``RegisterMap.addr_width``).
    addr_width : int or None
        AXI byte-address width; default ``bus_addr_width + 2``. Wider addresses with a bit set above
        the register bus answer SLVERR without reaching it.
    """

    def __init__(self, *, bus_addr_width: int, addr_width: int | None = None) -> None:
        word_bits = WORD_BYTES.bit_length() - 1
        try:
            _check_int(bus_addr_width, "bus_addr_width", 1, 30)
            if addr_width is None:
                addr_width = bus_addr_width + word_bits
            if isinstance(addr_width, bool) or not isinstance(addr_width, int) or \
                    not bus_addr_width + word_bits <= addr_width <= 64:
                raise ValueError(f"addr_width must be an integer from {bus_addr_width + word_bits} (the register "
                                 f"bus plus {word_bits} byte bits) to 64, not {addr_width!r}")
        except ValueError:
            discard_unbuilt(self)
            raise
        self._word_bits = word_bits
        super().__init__({
            "axil": In(AXI4LiteSignature(addr_width=addr_width)),
            "bus": Out(RegisterBusSignature(addr_width=bus_addr_width)),
        })

    def elaborate(self, platform: Any) -> Module:
        m = Module()
        axil, bus = self.axil, self.bus
        bus_bits = len(bus.addr)
        low, high = self._word_bits, self._word_bits + bus_bits

        aw_full, w_full, ar_full = Signal(), Signal(), Signal()
        aw_addr = Signal.like(axil.awaddr)
        ar_addr = Signal.like(axil.araddr)
        w_data = Signal(DATA_WIDTH)
        w_strb = Signal(WORD_BYTES)
        bvalid, rvalid = Signal(), Signal()
        bresp, rresp = Signal(Response), Signal(Response)
        rdata = Signal(DATA_WIDTH)
        prefer_read = Signal()  # fairness: alternate when both channels wait

        m.d.comb += [
            axil.awready.eq(~aw_full), axil.wready.eq(~w_full), axil.arready.eq(~ar_full),
            axil.bvalid.eq(bvalid), axil.bresp.eq(bresp),
            axil.rvalid.eq(rvalid), axil.rresp.eq(rresp), axil.rdata.eq(rdata),
        ]
        with m.If(axil.awvalid & ~aw_full):
            m.d.sync += [aw_full.eq(1), aw_addr.eq(axil.awaddr)]
        with m.If(axil.wvalid & ~w_full):
            m.d.sync += [w_full.eq(1), w_data.eq(axil.wdata), w_strb.eq(axil.wstrb)]
        with m.If(axil.arvalid & ~ar_full):
            m.d.sync += [ar_full.eq(1), ar_addr.eq(axil.araddr)]
        with m.If(bvalid & axil.bready):
            m.d.sync += [bvalid.eq(0), aw_full.eq(0), w_full.eq(0)]
        with m.If(rvalid & axil.rready):
            m.d.sync += [rvalid.eq(0), ar_full.eq(0)]

        write_waiting = aw_full & w_full & ~bvalid
        read_waiting = ar_full & ~rvalid
        aw_outside = aw_addr[high:].any() if len(aw_addr) > high else 0
        ar_outside = ar_addr[high:].any() if len(ar_addr) > high else 0
        # The picked channel and its word address are registered ("Decode"), then strobed
        # ("Strobe"): the register file decodes a register, not the arbitration (the pick in front
        # of the decode was too deep for the iCE40, docs/synthesis.md I3, I13). Each access takes
        # two cycles more than the register file's.
        writing = Signal()                  # the access in Strobe/Write is a write
        bus_addr = Signal.like(bus.addr)
        m.d.comb += [bus.addr.eq(bus_addr), bus.w_data.eq(w_data), bus.w_strb.eq(w_strb)]

        with m.FSM(name="axil_fsm"):
            with m.State("Idle"):
                pick_write = write_waiting & (~read_waiting | ~prefer_read)
                with m.If(pick_write):
                    m.d.sync += prefer_read.eq(1)
                    with m.If(aw_outside):
                        m.d.sync += [bvalid.eq(1), bresp.eq(Response.SLVERR)]
                    with m.Else():
                        m.d.sync += [writing.eq(1), bus_addr.eq(aw_addr[low:high])]
                        m.next = "Decode"
                with m.Elif(read_waiting):
                    m.d.sync += prefer_read.eq(0)
                    with m.If(ar_outside):
                        m.d.sync += [rvalid.eq(1), rresp.eq(Response.SLVERR), rdata.eq(0)]
                    with m.Else():
                        m.d.sync += [writing.eq(0), bus_addr.eq(ar_addr[low:high])]
                        m.next = "Decode"
            with m.State("Decode"):
                # bus_addr is on the bus: the register file registers its decode in this cycle.
                m.next = "Strobe"
            with m.State("Strobe"):
                m.d.comb += [bus.w_stb.eq(writing), bus.r_stb.eq(~writing)]
                with m.If(writing):
                    m.next = "Write"
                with m.Else():
                    m.next = "Read"
            with m.State("Write"):
                with m.If(bus.ack):
                    m.d.sync += [bvalid.eq(1), bresp.eq(Mux(bus.err, Response.SLVERR, Response.OKAY))]
                    m.next = "Idle"
            with m.State("Read"):
                with m.If(bus.ack):
                    m.d.sync += [rvalid.eq(1), rdata.eq(bus.r_data),
                                 rresp.eq(Mux(bus.err, Response.SLVERR, Response.OKAY))]
                    m.next = "Idle"
        return m


class AXI4LiteRegisterFile(wiring.Component):
    """An AXI4-Lite slave and the register file behind it, as one block.

    Members: ``axil`` (AXI4-Lite, slave side) and every core-side member of ``register_file``
    (same names, forwarded), so a controller connects to it exactly as to the register file.
    """

    def __init__(self, register_file: RegisterFile, *, addr_width: int | None = None) -> None:
        if not isinstance(register_file, RegisterFile):
            discard_unbuilt(self)
            raise ValueError(f"register_file must be a RegisterFile, not {register_file!r}")
        self.register_file = register_file
        self._slave = AXI4LiteSlave(bus_addr_width=register_file.register_map.addr_width, addr_width=addr_width)
        members = {"axil": self._slave.signature.members["axil"]}
        members.update({name: member for name, member in register_file.signature.members.items() if name != "bus"})
        super().__init__(members)

    def elaborate(self, platform: Any) -> Module:
        m = Module()
        m.submodules.axil_slave = slave = self._slave
        m.submodules.register_file = regs = self.register_file
        wiring.connect(m, wiring.flipped(self.axil), slave.axil)
        wiring.connect(m, slave.bus, regs.bus)
        for name, member in self.signature.members.items():
            if name == "axil":
                continue
            outer, inner = getattr(self, name), getattr(regs, name)
            if member.is_signature:
                wiring.connect(m, wiring.flipped(outer), inner)
            elif member.flow == Out:
                m.d.comb += outer.eq(inner)
            else:
                m.d.comb += inner.eq(outer)
        return m
