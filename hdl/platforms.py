"""Synthesis platforms for the controller: iCE40 UP5K (SG48) and ECP5-25k (CABGA381), and the
top-level wrapper that brings the controller's ports to package pins.

Neither package has enough pins for the controller's ports as they are (274 at the default
build: AXI4-Lite 128, AFE 145, irq 1; the ECP5-25k has 197 user I/O, the UP5K SG48 39), so the
wrapper puts what does not fit behind a **scan chain**: a boundary-scan style shift register on
four pins (``scan_sdi``, ``scan_sdo``, ``scan_shift``, ``scan_update``) clocked by the system
clock. ``scan_shift`` shifts one bit in from ``scan_sdi`` and one out to ``scan_sdo``;
``scan_update`` copies the shifted-in bits to the controller inputs they drive and captures the
controller outputs into the shift register. A host can run the AXI4-Lite bus through it (slowly);
on a real board the host would be an on-chip CPU or a bus bridge instead, and the AFE's wide
switch vectors would go to shift-register driven analog switches. Every controller port stays
live, so synthesis keeps all of the controller's logic.

Pin-outs (docs/synthesis.md):

* ECP5: AFE on direct pins (all of it), AXI4-Lite on the scan chain.
* iCE40 UP5K SG48: 36 usable pins (the RGB driver pins 39 to 41 are left out: open-drain
  only). The AFE strobes and handshakes and the DAC and ADC data buses are direct pins, the rest
  of the AFE and the AXI4-Lite bus are on the scan chain.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from amaranth.build import Clock, Pins, Resource
from amaranth.build.plat import Platform
from amaranth.hdl import Cat, Elaboratable, Module, Signal, Value
from amaranth.lib import io, wiring
from amaranth.vendor import LatticePlatform, SiliconBluePlatform

from .controller import TOP_MODULE, Controller
from .params import BuildParams
from .regmap import discard_unbuilt

__all__ = ["ICE40UP5KPlatform", "ECP5Platform", "SynthTarget", "TARGETS", "ICE40_PARAMS", "PinnedController", "ScanChain",
           "PinBudgetError", "controller_ports", "ICE40_DIRECT_AFE"]


class PinBudgetError(ValueError):
    """The direct ports and the scan chain need more pins than the package has."""


# iCE40UP5K SG48: every PIO except the RGB driver pins 39, 40, 41 (open-drain current sinks).
# Pin 35 is a global buffer input (G0): the clock; pin 37 the reset.
_ICE40_CLOCK_PIN = "35"
_ICE40_RESET_PIN = "37"
_ICE40_PINS = ("2 3 4 6 9 10 11 12 13 14 15 16 17 18 19 20 21 23 25 26 27 28 31 32 34 36 38 "
               "42 43 44 45 46 47 48").split()

# LFE5U-25F CABGA381: the PIOs of banks 0, 1, 2, 3, 6, 7 from the Trellis database (iodb.json);
# bank 8 (configuration SPI) is left out. G2 is a primary clock input (PCLKT6_0); F1 the reset.
_ECP5_CLOCK_PIN = "G2"
_ECP5_RESET_PIN = "F1"
_ECP5_PINS = (
    # bank 0
    "A6 A7 A8 A9 A10 A11 B6 B8 B9 B10 B11 C6 C7 C8 C10 C11 D6 D7 D8 D9 E6 E7 E8 E9 "
    # bank 1
    "A12 A13 A14 A16 A17 A18 A19 B12 B13 B15 B16 B17 B18 B19 B20 C12 C13 C14 C15 C16 C17 D11 D12 "
    "D13 D14 D15 D16 E11 E12 E13 E14 E15 "
    # bank 2
    "C18 C20 D17 D18 D19 D20 E16 E17 E18 E19 E20 F16 F17 F18 F19 F20 G16 G18 G19 G20 H16 H17 H18 "
    "H20 J16 J17 J18 J19 J20 K18 K19 K20 "
    # bank 3
    "L16 L17 L18 L19 L20 M17 M18 M19 M20 N16 N17 N18 N19 N20 P16 P17 P18 P19 P20 R16 R17 R18 R20 "
    "T17 T18 T19 T20 U16 U17 U18 U19 U20 "
    # bank 6 (G2 and F1: clock and reset)
    "G1 H1 H2 J1 J3 J4 J5 K1 K2 K3 K4 K5 L1 L2 L3 L4 L5 M1 M3 M4 N1 N2 N3 N4 N5 P1 P2 P3 P4 P5 "
    # bank 7
    "A2 A3 A4 A5 B1 B2 B3 B4 B5 C1 C2 C3 C4 C5 D1 D2 D3 D5 E1 E2 E3 E4 E5 F2 F3 F4 F5 G3 G5 H3 H4 "
    "H5").split()


class ICE40UP5KPlatform(SiliconBluePlatform):
    """iCE40UP5K in the SG48 package: the clock on pin 35 at ``clock_hz``, the reset (synchronous,
    active high) on pin 37; the other pins are
    handed out by :class:`PinnedController` (``user_pins``)."""

    device = "iCE40UP5K"
    package = "SG48"
    default_clk = "clk"
    default_rst = "rst"
    user_pins: tuple[str, ...] = tuple(_ICE40_PINS)
    resources: list[Resource] = []
    connectors: list[Any] = []

    def __init__(self, clock_hz: float) -> None:
        super().__init__(toolchain="IceStorm")
        self.add_resources([Resource("clk", 0, Pins(_ICE40_CLOCK_PIN, dir="i"), Clock(clock_hz)),
                            Resource("rst", 0, Pins(_ICE40_RESET_PIN, dir="i"))])


class ECP5Platform(LatticePlatform):
    """LFE5U-25F, CABGA381, speed grade 6: the clock on G2 at ``clock_hz``, the reset (synchronous, active
    high) on F1; the other pins are
    handed out by :class:`PinnedController` (``user_pins``)."""

    device = "LFE5U-25F"
    package = "BG381"
    speed = "6"
    default_clk = "clk"
    default_rst = "rst"
    user_pins: tuple[str, ...] = tuple(_ECP5_PINS)
    resources: list[Resource] = []
    connectors: list[Any] = []

    def __init__(self, clock_hz: float) -> None:
        super().__init__(toolchain="Trellis")
        self.add_resources([Resource("clk", 0, Pins(_ECP5_CLOCK_PIN, dir="i"), Clock(clock_hz)),
                            Resource("rst", 0, Pins(_ECP5_RESET_PIN, dir="i"))])


#: AFE members on direct pins on the iCE40: strobes, handshakes and the converter data buses.
ICE40_DIRECT_AFE: frozenset[str] = frozenset({
    "dac_we", "dac_ldac", "loop", "adc_start", "adc_busy", "adc_ovr", "prog_fire", "prog_done",
    "dac_data", "adc_data"})


@dataclass(frozen=True)
class SynthTarget:
    """A synthesis target: the platform, the build it is measured with, and its clock goal.

    ``direct_afe`` names the AFE members on direct pins (None: all of them); every other
    controller port goes on the scan chain.
    """

    name: str
    device: str
    make_platform: Callable[[float], Platform]
    params: BuildParams
    clock_mhz: float
    direct_afe: frozenset[str] | None = None
    synth_opts: str = ""  #: extra options of Yosys's synth_<family>

    def platform(self) -> Platform:
        return self.make_platform(self.clock_mhz * 1e6)


#: The iCE40 UP5K's build: 16 rows, 4 columns, 1 spare, without RUN_NMF (the host runs ANLS
#: with SOLVE and PROGRAM_MATRIX) and with 16-bit event counters: the full controller's fixed
#: logic alone is about 5.7k logic cells, more than the device's 5280 (docs/synthesis.md).
#: CALIBRATE and REFINE are left out too: each alone takes the build past 5280 (REFINE: 8131 LCs
#: with it, 4261 without).
ICE40_PARAMS = BuildParams(rows=16, cols=4, spare=1, counter_bits=16, run_nmf=False, calibration=False,
                           refinement=False)

#: The documented configurations (docs/synthesis.md): the default build on the ECP5-25k at
#: 100 MHz; the smaller ICE40_PARAMS on the UP5K at 40 MHz.
TARGETS: dict[str, SynthTarget] = {
    "ecp5": SynthTarget("ecp5", "LFE5U-25F-6BG381C", ECP5Platform, BuildParams(), 100.0),
    "ice40": SynthTarget("ice40", "iCE40UP5K-SG48", ICE40UP5KPlatform, ICE40_PARAMS, 40.0,
                         direct_afe=ICE40_DIRECT_AFE,
                         synth_opts="-dsp"),  # the UP5K's multipliers instead of logic cells
}


def controller_ports(controller: Controller) -> list[tuple[str, wiring.Flow, Value]]:
    """Every port of ``controller`` as (Verilog name, flow seen from the controller, value):
    ``Out`` members are driven by the controller."""
    ports = []
    for path, member, value in controller.signature.flatten(controller):
        ports.append(("__".join(str(part) for part in path), member.flow, Value.cast(value)))
    return ports


class ScanChain(Elaboratable):
    """Boundary-scan style access to ``inputs`` (driven from the chain) and ``outputs``
    (captured into it) over four pins; see the module doc.

    ``sdi``, ``shift``, ``update`` are inputs and ``sdo`` the output of the chain (1 bit each).
    The shift register is as long as the wider of the two sides.
    """

    def __init__(self, inputs: list[Value], outputs: list[Value]) -> None:
        self.inputs = inputs
        self.outputs = outputs
        self.sdi = Signal()
        self.sdo = Signal()
        self.shift = Signal()
        self.update = Signal()

    @property
    def length(self) -> int:
        return max(sum(len(v) for v in self.inputs), sum(len(v) for v in self.outputs), 1)

    def elaborate(self, platform: Any) -> Module:
        m = Module()
        chain = Signal(self.length)
        held = Signal(sum(len(v) for v in self.inputs))
        m.d.comb += [Cat(*self.inputs).eq(held), self.sdo.eq(chain[0])]
        with m.If(self.update):
            if self.inputs:
                m.d.sync += held.eq(chain)
            m.d.sync += chain.eq(Cat(*self.outputs))
        with m.Elif(self.shift):
            m.d.sync += chain.eq(Cat(chain[1:], self.sdi))
        return m


class PinnedController(Elaboratable):
    """The controller with its ports on package pins: direct pins for the AFE members named in
    ``direct_afe`` (None: all) and ``irq``, the scan chain for everything else.

    Raises :class:`PinBudgetError` (a ValueError) at construction when the pins needed exceed
    ``user_pins``.
    """

    SCAN_PINS = ("sdi", "sdo", "shift", "update")

    def __init__(self, params: BuildParams, user_pins: tuple[str, ...], *,
                 direct_afe: frozenset[str] | None = None) -> None:
        self.controller = Controller(params)
        self.user_pins = tuple(user_pins)
        self.direct: list[tuple[str, wiring.Flow, Value]] = []
        self.scanned: list[tuple[str, wiring.Flow, Value]] = []
        afe_names = {port.name for port in self.controller.afe.signature.ports()}
        if direct_afe is not None and not direct_afe <= afe_names:
            self.discard()
            raise ValueError(f"direct_afe names unknown AFE members {sorted(direct_afe - afe_names)}; "
                             f"accepted: {sorted(afe_names)}")
        for name, flow, value in controller_ports(self.controller):
            member = name.removeprefix("afe__")
            on_pins = name == "irq" or (name.startswith("afe__") and (direct_afe is None or member in direct_afe))
            (self.direct if on_pins else self.scanned).append((name, flow, value))
        needed = self.pins_needed
        if needed > len(self.user_pins):
            self.discard()
            raise PinBudgetError(f"the pin-out needs {needed} pins (direct ports and scan chain) but the "
                                 f"package has {len(self.user_pins)} besides the clock and the reset")

    def discard(self) -> None:
        """Mark this wrapper and the controller's blocks as deliberately never elaborated (a
        refused pin-out, or a pin count looked at without a build): no UnusedElaboratable warning."""
        discard_unbuilt(self)
        self.controller.discard()

    @property
    def pins_needed(self) -> int:
        return sum(len(value) for _, _, value in self.direct) + (len(self.SCAN_PINS) if self.scanned else 0)

    def resources(self) -> list[Resource]:
        """One resource per direct port (named after the Verilog port) and ``scan``."""
        free = iter(self.user_pins)
        resources = []
        for name, flow, value in self.direct:
            pins = " ".join(next(free) for _ in range(len(value)))
            resources.append(Resource(name, 0, Pins(pins, dir="o" if flow == wiring.Out else "i")))
        if self.scanned:
            for pin in self.SCAN_PINS:
                resources.append(Resource(f"scan_{pin}", 0, Pins(next(free), dir="o" if pin == "sdo" else "i")))
        return resources

    def elaborate(self, platform: Platform) -> Module:
        m = Module()
        m.submodules.controller = self.controller
        def pin_buffer(name: str, direction: str) -> io.Buffer:
            m.submodules[f"{name}_buffer"] = buffer = io.Buffer(direction, platform.request(name, 0, dir="-"))
            return buffer

        for name, flow, value in self.direct:
            if flow == wiring.Out:
                m.d.comb += pin_buffer(name, "o").o.eq(value)
            else:
                m.d.comb += value.eq(pin_buffer(name, "i").i)
        if self.scanned:
            scan = ScanChain(inputs=[v for _, flow, v in self.scanned if flow == wiring.In],
                             outputs=[v for _, flow, v in self.scanned if flow == wiring.Out])
            m.submodules.scan = scan
            for pin in self.SCAN_PINS:
                if pin == "sdo":
                    m.d.comb += pin_buffer(f"scan_{pin}", "o").o.eq(scan.sdo)
                else:
                    m.d.comb += getattr(scan, pin).eq(pin_buffer(f"scan_{pin}", "i").i)
        return m


TOP_NAME = TOP_MODULE + "_top"  #: module name of the synthesized top level
