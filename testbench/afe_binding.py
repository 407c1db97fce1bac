"""cocotb binding of the code-level AFE model (model/afe.py) to a DUT's AFE ports.

The signal list comes from the one AFE definition, ``AFESignature(params).ports()``
(Verilog ports ``<prefix>__<member>``); the binding refuses a signature with a member it
has no role for, so a new AFE member cannot be silently left undriven or unwatched.

Event-driven, and as few Python wake-ups as the port's events allow (each costs tens of
microseconds in cocotb, more than the RTL's own cycles):

- each strobe (``dac_we``, ``dac_ldac``, ``adc_start``, ``prog_fire``) has a coroutine
  waiting on its rising edge, then on that time step's ReadOnly phase;
- each level control (mode, loop, switches, cell select, calibration select) has a
  persistent simulator callback on its value changes (a GPI callback calling a plain
  function, below cocotb's task scheduler: a fifth of a task wake-up's cost, and these are
  the most frequent events) that only stages the new value in the model
  (``AnalogFrontEnd.stage_controls``): the model applies the changes of one time step
  together, at that time, when it next needs them (a later change, or any call with a
  time; a strobe calls the model in its ReadOnly phase, after every change of its step);
- an answer (``adc_busy`` rising and falling, ``prog_done`` rising and falling) and each
  further write of a ``dac_we`` burst is one Timer to 1 ps after the clock edge concerned:
  the RTL samples the answer at the following edge, as if it had been written right after
  that edge, and every value the edge produced has settled by then.

Timing (docs/afe-interface.md): the model acts at the time the strobe rises (the start of
the strobe cycle s), with the controls as they are then (staged as they changed and applied
before the strobe's action, so a loop closing in the cycle of a conversion's start counts). ``adc_busy`` rises just after edge s+L and falls just after edge s+L+B, with
``adc_data``/``adc_ovr`` changing then; ``prog_done`` is high for the cycle P cycles after
the fire cycle. L, B and P come from the AFE model (``adc_latency_cycles``,
``adc_busy_cycles``, ``pulse_cycles``), so the golden model derives the same cycles.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import cocotb
import cocotb.simulator
from cocotb.handle import SimHandleBase
from cocotb.simtime import get_sim_time
from cocotb.triggers import Event, ReadOnly, RisingEdge, Timer
from amaranth.lib import wiring

from anmf.hdl.afe import AFESignature
from anmf.hdl.params import BuildParams
from anmf.model.afe import AnalogFrontEnd
from anmf.model.formats import PICOSECONDS_PER_SECOND

__all__ = ["AFEBinding", "ConversionRecord", "PulseRecord", "STROBES", "ANSWERS", "CONTROLS"]

#: Strobe member -> the members it carries (sampled in the strobe cycle).
STROBES: dict[str, tuple[str, ...]] = {
    "dac_we": ("dac_addr", "dac_data"),
    "dac_ldac": (),
    "adc_start": ("adc_mux",),
    "prog_fire": ("prog_polarity", "prog_amplitude", "prog_width"),
}
#: Members the AFE drives.
ANSWERS: tuple[str, ...] = ("adc_busy", "adc_data", "adc_ovr", "prog_done")
#: Level controls, in the keyword names of ``AnalogFrontEnd.apply_controls``.
CONTROLS: tuple[str, ...] = ("mode", "loop", "row_en", "col_en", "cell_row", "cell_col",
                             "cal_ref_sel")


@dataclass(frozen=True)
class ConversionRecord:
    """One ADC conversion as the binding answered it."""

    time_ps: int
    mux: int
    mode: int
    code: int
    over_range: bool


@dataclass(frozen=True)
class PulseRecord:
    """One programming pulse as the binding applied it."""

    time_ps: int
    row: int
    col: int
    polarity: int
    amplitude: int
    width: int
    done_cycles: int


def _value(handle: SimHandleBase) -> int:
    """A port's value as an unsigned int; X/Z (before reset) reads as 0.

    Reads the simulator's bit string directly when the handle has one (cocotb 2's
    ``LogicArray`` built by ``handle.value`` costs several microseconds per read, and the
    binding reads tens of thousands of values per scenario)."""
    raw = getattr(handle, "_handle", None)
    if raw is not None and hasattr(raw, "get_signal_val_binstr"):
        try:
            return int(raw.get_signal_val_binstr(), 2)
        except ValueError:
            return 0
    value = handle.value
    try:
        return value.to_unsigned() if hasattr(value, "to_unsigned") else int(value)
    except ValueError:
        return 0


class _Delays:
    """Timer triggers by duration (ps), built once and reused: building a Timer costs more
    than awaiting it. One instance per coroutine: a trigger awaited by two coroutines at
    once would fire for both at the first one's time."""

    def __init__(self) -> None:
        self._timers: dict[int, Timer] = {}

    def __call__(self, picoseconds: int) -> Timer:
        timer = self._timers.get(picoseconds)
        if timer is None:
            timer = self._timers[picoseconds] = Timer(picoseconds, unit="ps")
        return timer


class AFEBinding:
    """The AFE model ``afe`` answering the DUT's AFE ports.

    Args:
        dut: the cocotb handle of the top level.
        afe: the model (its clock must be the DUT clock's: the ADC and pulse cycle counts
            come from it).
        params: the DUT's build parameters (the port list is ``AFESignature(params).ports()``).
        clock: the controller clock signal.
        prefix: the AFE port's name on the top level (``afe`` -> ``afe__dac_we`` ...).
    """

    def __init__(self, dut: Any, afe: AnalogFrontEnd, params: BuildParams, *,
                 clock: SimHandleBase, prefix: str = "afe"):
        if not isinstance(afe, AnalogFrontEnd):
            raise ValueError(f"afe must be an AnalogFrontEnd; got {type(afe).__name__}")
        if not isinstance(params, BuildParams):
            raise ValueError(f"params must be a BuildParams; got {type(params).__name__}")
        ports = AFESignature(params).ports()
        known = set(STROBES) | {m for carried in STROBES.values() for m in carried} \
            | set(ANSWERS) | set(CONTROLS)
        names = {port.name for port in ports}
        unhandled = sorted(names - known)
        if unhandled:
            raise ValueError(f"AFE members without a role in the binding: {', '.join(unhandled)}; "
                             f"give each one in STROBES, ANSWERS or CONTROLS")
        missing = sorted(known - names)
        if missing:
            raise ValueError(f"the binding expects AFE members the signature lacks: "
                             f"{', '.join(missing)}")
        for port in ports:
            driven_by_afe = port.flow == wiring.In
            if driven_by_afe != (port.name in ANSWERS):
                raise ValueError(f"AFE member {port.name} flows {port.flow}, which does not "
                                 f"match its role in the binding")
        self.afe = afe
        self.clock = clock
        self.handles: dict[str, SimHandleBase] = {}
        for port in ports:
            verilog_name = f"{prefix}__{port.name}"
            try:
                handle = getattr(dut, verilog_name)
            except AttributeError:
                raise ValueError(f"the DUT has no port {verilog_name}") from None
            if len(handle) != port.width:
                raise ValueError(f"port {verilog_name} is {len(handle)} bits wide; the AFE "
                                 f"signature says {port.width}")
            self.handles[port.name] = handle
        self.period_ps = afe.period_ps
        if self.period_ps % 2:
            raise ValueError(f"the clock period must be an even number of picoseconds; got "
                             f"{self.period_ps} ps")
        #: What the binding answered, in order.
        self.conversions: list[ConversionRecord] = []
        self.pulses: list[PulseRecord] = []
        self.dac_writes = 0
        #: Protocol violations seen by the binding (the model's are in ``afe.violations``).
        self.violations: list[str] = []
        self._tasks: list[cocotb.task.Task[None]] = []
        # The control watchers' simulator callbacks (re-registered as each one fires), and
        # what they raised (a callback cannot raise into the test; the strobes re-raise it).
        self._control_callbacks: dict[str, Any] = {}
        self._callback_errors: list[BaseException] = []

    # ---- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Drive the answers to their idle value, check the clock period, start watching."""
        for name in ANSWERS:
            self.handles[name].value = 0
        await RisingEdge(self.clock)
        first = get_sim_time("ps")
        await RisingEdge(self.clock)
        measured = round(get_sim_time("ps") - first)
        if measured != self.period_ps:
            raise ValueError(f"the DUT clock period is {measured} ps but the AFE model's "
                             f"clock_hz gives {self.period_ps} ps")
        # Every control as it is now, for the model from now on (changed or not).
        self.afe.stage_controls(self._now_s(), **{name: self._read(name) for name in CONTROLS})
        for name in CONTROLS:
            self._watch_control(name)
        for coroutine in (self._keep_control_callbacks(), self._dac_writes(), self._dac_loads(),
                          self._conversions(), self._programming()):
            self._tasks.append(cocotb.start_soon(coroutine))

    def stop(self) -> None:
        """Stop watching (answers under way still complete)."""
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        self._drop_control_callbacks()

    async def _keep_control_callbacks(self) -> None:
        """Holds the control callbacks for the life of the test: cocotb cancels this task
        when the test ends (or :meth:`stop` does), which removes them."""
        try:
            await Event().wait()
        finally:
            self._drop_control_callbacks()

    def _drop_control_callbacks(self) -> None:
        for callback in self._control_callbacks.values():
            callback.deregister()
        self._control_callbacks.clear()

    @property
    def all_violations(self) -> list[str]:
        """The binding's and the model's protocol violations."""
        return self.violations + self.afe.violations

    # ---- helpers -------------------------------------------------------------------------

    def _now_ps(self) -> int:
        return round(get_sim_time("ps"))

    def _now_s(self) -> float:
        return self._now_ps() / PICOSECONDS_PER_SECOND

    def _read(self, name: str) -> int:
        return _value(self.handles[name])

    def sync(self) -> None:
        """Give the model the control changes staged so far (the model applies them itself
        before any call with a later time; a caller inspecting its state between events may
        call this)."""
        self.afe.commit_controls()

    def _after_edges_ps(self, count: int) -> int:
        """From an edge time, the delay to 1 ps after the ``count``-th following edge."""
        return count * self.period_ps + 1

    # ---- coroutines ----------------------------------------------------------------------

    def _watch_control(self, name: str) -> None:
        """(Re-)registers control ``name``'s value-change callback."""
        raw = self.handles[name]._handle
        self._control_callbacks[name] = cocotb.simulator.register_value_change_callback(
            raw, self._control_changed, cocotb.simulator.VALUE_CHANGE, name, raw)

    def _control_changed(self, name: str, raw: Any) -> None:
        """A control's value changed: stage it in the model (no writes, no awaits: this runs
        outside cocotb's scheduler)."""
        try:
            try:
                value = int(raw.get_signal_val_binstr(), 2)
            except ValueError:
                value = 0  # X/Z
            self.afe.stage_controls(self._now_s(), **{name: value})
        except Exception as exc:  # noqa: BLE001 - handed to the next strobe
            self._callback_errors.append(exc)
        if name in self._control_callbacks:  # not dropped meanwhile
            self._watch_control(name)

    def _raise_callback_error(self) -> None:
        if self._callback_errors:
            raise self._callback_errors[0]

    async def _dac_writes(self) -> None:
        we, ldac = self.handles["dac_we"], self.handles["dac_ldac"]
        addr, data = self.handles["dac_addr"], self.handles["dac_data"]
        delays = _Delays()
        while True:
            await RisingEdge(we)
            await ReadOnly()
            # A burst: one write per cycle while dac_we stays high, each cycle's values read
            # 1 ps after its edge.
            wait_ps = self._after_edges_ps(1)
            while _value(we):
                if _value(ldac):
                    self.violations.append(f"t={self._now_ps()} ps: dac_we and dac_ldac in "
                                           f"the same cycle")
                self.afe.write_dac(_value(addr), _value(data))
                self.dac_writes += 1
                await delays(wait_ps)
                wait_ps = self.period_ps

    async def _dac_loads(self) -> None:
        ldac = self.handles["dac_ldac"]
        while True:
            await RisingEdge(ldac)
            await ReadOnly()
            self._raise_callback_error()
            self.afe.load_dacs(self._now_s())

    async def _conversions(self) -> None:
        start = self.handles["adc_start"]
        delays = _Delays()
        answer: cocotb.task.Task[None] | None = None
        while True:
            await RisingEdge(start)
            await ReadOnly()
            self._raise_callback_error()
            if answer is not None and not answer.done():
                self.violations.append(f"t={self._now_ps()} ps: adc_start during a conversion")
                continue
            now = self._now_ps()
            mux = self._read("adc_mux")
            code, over_range = self.afe.convert(mux, now / PICOSECONDS_PER_SECOND)
            self.conversions.append(ConversionRecord(now, mux, self._read("mode"), code,
                                                     over_range))
            answer = cocotb.start_soon(self._answer_conversion(code, over_range, delays))

    async def _answer_conversion(self, code: int, over_range: bool,
                                 delays: Callable[[int], Timer]) -> None:
        busy, data, ovr = (self.handles[name] for name in ("adc_busy", "adc_data", "adc_ovr"))
        await delays(self._after_edges_ps(self.afe.adc_latency_cycles))
        busy.value = 1
        await delays(self.afe.adc_busy_cycles * self.period_ps)
        busy.value = 0
        data.value = code
        ovr.value = int(over_range)

    async def _programming(self) -> None:
        fire = self.handles["prog_fire"]
        delays = _Delays()
        answer: cocotb.task.Task[None] | None = None
        while True:
            await RisingEdge(fire)
            await ReadOnly()
            self._raise_callback_error()
            if answer is not None and not answer.done():
                self.violations.append(f"t={self._now_ps()} ps: prog_fire during a pulse")
                continue
            now = self._now_ps()
            row, col = self._read("cell_row"), self._read("cell_col")
            polarity, amplitude, width = (self._read(name) for name in STROBES["prog_fire"])
            self.afe.pulse(row, col, polarity, amplitude, width, now / PICOSECONDS_PER_SECOND)
            cycles = self.afe.pulse_cycles(width)
            self.pulses.append(PulseRecord(now, row, col, polarity, amplitude, width, cycles))
            answer = cocotb.start_soon(self._answer_pulse(cycles, delays))

    async def _answer_pulse(self, cycles: int, delays: Callable[[int], Timer]) -> None:
        done = self.handles["prog_done"]
        await delays(self._after_edges_ps(cycles))
        done.value = 1
        await delays(self.period_ps)
        done.value = 0
