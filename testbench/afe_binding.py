"""cocotb binding of the code-level AFE model (model/afe.py) to a DUT's AFE ports.

The signal list comes from the one AFE definition, ``AFESignature(params).ports()``
(Verilog ports ``<prefix>__<member>``); the binding refuses a signature with a member it
has no role for, so a new AFE member cannot be silently left undriven or unwatched.

Event-driven, and below cocotb's task scheduler: every event is a simulator (GPI)
callback that calls a plain function, at about a third of the cost of resuming a cocotb
task (bench_speed's ``wakeup_cost``: 2 to 3 us against 6 to 9 us of CPU beyond a bare
Verilator cycle of about 8 us; a scenario has tens of thousands of AFE events). The functions only read ports, call the model,
write answers as immediate deposits and register the next callback; they never await.

- each level control (mode, loop, switches, cell select, calibration select): a callback
  on its value changes stages the new value in the model
  (``AnalogFrontEnd.stage_controls``); the model applies the changes of one time step
  together, at that time, when it next needs them (a later change, or any call with a
  time);
- each strobe (``dac_we``, ``dac_ldac``, ``adc_start``, ``prog_fire``): a callback on its
  rising edge, then one in that time step's ReadOnly phase (after every value change of
  the step) that calls the model;
- an answer (``adc_busy`` rising and falling, ``prog_done`` rising and falling) and each
  further write of a ``dac_we`` burst: a timed callback 1 ps after the clock edge
  concerned: the RTL samples the answer at the following edge, as if it had been written
  right after that edge, and every value the edge produced has settled by then.

An exception in a callback (a model error) cannot propagate into the simulator: it is kept
and raised in the test by the binding's one task, which also removes every callback when
cocotb cancels it at the end of the test (:meth:`AFEBinding.stop` removes the watching
ones; answers under way complete).

Timing (docs/afe-interface.md): the model acts at the time the strobe rises (the start of
the strobe cycle s), with the controls as they are then (staged as they changed and applied
before the strobe's action, so a loop closing in the cycle of a conversion's start counts).
``adc_busy`` rises just after edge s+L and falls just after edge s+L+B, with
``adc_data``/``adc_ovr`` changing then; ``prog_done`` is high for the cycle P cycles after
the fire cycle. L, B and P come from the AFE model (``adc_latency_cycles``,
``adc_busy_cycles``, ``pulse_cycles``), so the golden model derives the same cycles.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import cocotb
import cocotb.simulator
from cocotb.handle import SimHandleBase, _GPISetAction
from cocotb.simtime import get_sim_time
from cocotb.triggers import Event, RisingEdge
from amaranth.lib import wiring

from anmf.hdl.afe import AFESignature
from anmf.hdl.params import BuildParams
from anmf.model.afe import AnalogFrontEnd
from anmf.model.formats import PICOSECONDS_PER_SECOND

__all__ = ["AFEBinding", "ConversionRecord", "PulseRecord", "STROBES", "ANSWERS", "CONTROLS"]

#: The GPI action of ``Immediate`` writes (applied at once, not at the next ReadWrite phase).
_NO_DELAY = _GPISetAction.NO_DELAY.value

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
        # The registered simulator callbacks by purpose (each fires once and is registered
        # again), what they raised, and the Event that hands an error to the test.
        self._callbacks: dict[str, Any] = {}
        self._errors: list[BaseException] = []
        self._error_seen = Event()
        self._watching = False
        self._converting = False
        self._pulsing = False
        # Picoseconds per simulator step, set by start() (None: ask cocotb's get_sim_time).
        self._steps_to_ps: int | None = None

    # ---- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Drive the answers to their idle value, check the clock period, start watching."""
        for name in ANSWERS:
            self.handles[name].value = 0
        precision = cocotb.simulator.get_precision()
        self._steps_to_ps = 10 ** (precision + 12) if precision >= -12 else None
        await RisingEdge(self.clock)
        first = get_sim_time("ps")
        await RisingEdge(self.clock)
        measured = round(get_sim_time("ps") - first)
        if measured != self.period_ps:
            raise ValueError(f"the DUT clock period is {measured} ps but the AFE model's "
                             f"clock_hz gives {self.period_ps} ps")
        # Every control as it is now, for the model from now on (changed or not).
        self.afe.stage_controls(self._now_s(), **{name: self._read(name) for name in CONTROLS})
        self._watching = True
        for name in CONTROLS:
            self._watch_control(name)
        for strobe in STROBES:
            self._watch_strobe(strobe)
        self._tasks.append(cocotb.start_soon(self._hold_callbacks()))

    def stop(self) -> None:
        """Stop watching (answers under way still complete)."""
        self._watching = False
        for key in [*CONTROLS, *STROBES]:
            self._drop(key)

    async def _hold_callbacks(self) -> None:
        """Raises a callback's error in the test; removes every callback when cocotb cancels
        this task at the end of the test."""
        try:
            await self._error_seen.wait()
            raise self._errors[0]
        finally:
            self._watching = False
            for key in list(self._callbacks):
                self._drop(key)

    def _drop(self, key: str) -> None:
        callback = self._callbacks.pop(key, None)
        if callback is not None:
            callback.deregister()

    def _register(self, key: str, callback: Any) -> None:
        self._callbacks[key] = callback

    def _fired(self, key: str) -> None:
        """A one-shot callback ran: forget its handle (it must not be deregistered)."""
        self._callbacks.pop(key, None)

    def _failed(self, exc: BaseException) -> None:
        self._errors.append(exc)
        self._error_seen.set()

    @property
    def all_violations(self) -> list[str]:
        """The binding's and the model's protocol violations."""
        return self.violations + self.afe.violations

    # ---- helpers -------------------------------------------------------------------------

    def _now_ps(self) -> int:
        if self._steps_to_ps is None:
            return round(get_sim_time("ps"))
        high, low = cocotb.simulator.get_sim_time()  # in simulator steps
        return (high << 32 | low) * self._steps_to_ps

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

    def _raw(self, name: str) -> Any:
        return self.handles[name]._handle

    def _after(self, key: str, delay_ps: int, func: Callable[..., None], *args: Any) -> None:
        self._register(key, cocotb.simulator.register_timed_callback(
            delay_ps, self._run, key, func, *args))

    def _in_read_only(self, key: str, func: Callable[..., None], *args: Any) -> None:
        self._register(key, cocotb.simulator.register_readonly_callback(
            self._run, key, func, *args))

    def _run(self, key: str, func: Callable[..., None], *args: Any) -> None:
        """Every callback goes through here: forget the fired handle, keep any error."""
        self._fired(key)
        try:
            func(*args)
        except Exception as exc:  # noqa: BLE001 - raised in the test by _hold_callbacks
            self._failed(exc)

    def _answer(self, name: str, value: int) -> None:
        """Drive an answer now: what ``handle.set(Immediate(value))`` does, without building
        cocotb's value objects (tens of thousands of answers per scenario)."""
        self.handles[name]._handle.set_signal_val_int(_NO_DELAY, value)

    # ---- level controls ------------------------------------------------------------------

    def _watch_control(self, name: str) -> None:
        raw = self._raw(name)
        self._register(name, cocotb.simulator.register_value_change_callback(
            raw, self._run, cocotb.simulator.VALUE_CHANGE, name, self._control_changed, name))

    def _control_changed(self, name: str) -> None:
        """Stage the new value in the model, watch for the next change."""
        if self._watching:
            self._watch_control(name)
        self.afe.stage_controls(self._now_s(), **{name: self._read(name)})

    # ---- strobes -------------------------------------------------------------------------

    def _watch_strobe(self, strobe: str) -> None:
        self._register(strobe, cocotb.simulator.register_value_change_callback(
            self._raw(strobe), self._run, cocotb.simulator.RISING, strobe, self._strobe_rose,
            strobe))

    def _strobe_rose(self, strobe: str) -> None:
        """Watch for the next rising edge; act in this time step's ReadOnly phase."""
        if self._watching:
            self._watch_strobe(strobe)
        act = {"dac_we": self._dac_write, "dac_ldac": self._dac_load,
               "adc_start": self._conversion, "prog_fire": self._pulse}[strobe]
        self._in_read_only(f"{strobe} read-only", act)

    def _dac_write(self, first: bool = True) -> None:
        """One write per cycle while ``dac_we`` stays high, each cycle's values read 1 ps after
        its edge (the first in the ReadOnly phase of the rising edge's time step)."""
        if not self._read("dac_we"):
            return
        if self._read("dac_ldac"):
            self.violations.append(f"t={self._now_ps()} ps: dac_we and dac_ldac in the same "
                                   f"cycle")
        self.afe.write_dac(self._read("dac_addr"), self._read("dac_data"))
        self.dac_writes += 1
        delay = self._after_edges_ps(1) if first else self.period_ps
        self._after("dac_we burst", delay, self._dac_write, False)

    def _dac_load(self) -> None:
        self.afe.load_dacs(self._now_s())

    def _conversion(self) -> None:
        now = self._now_ps()
        if self._converting:
            self.violations.append(f"t={now} ps: adc_start during a conversion")
            return
        mux = self._read("adc_mux")
        code, over_range = self.afe.convert(mux, now / PICOSECONDS_PER_SECOND)
        self.conversions.append(ConversionRecord(now, mux, self._read("mode"), code,
                                                 over_range))
        self._converting = True
        self._after("adc answer", self._after_edges_ps(self.afe.adc_latency_cycles),
                    self._busy_rises, code, over_range)

    def _busy_rises(self, code: int, over_range: bool) -> None:
        self._answer("adc_busy", 1)
        self._after("adc answer", self.afe.adc_busy_cycles * self.period_ps, self._busy_falls,
                    code, over_range)

    def _busy_falls(self, code: int, over_range: bool) -> None:
        self._answer("adc_busy", 0)
        self._answer("adc_data", code)
        self._answer("adc_ovr", int(over_range))
        self._converting = False

    def _pulse(self) -> None:
        now = self._now_ps()
        if self._pulsing:
            self.violations.append(f"t={now} ps: prog_fire during a pulse")
            return
        row, col = self._read("cell_row"), self._read("cell_col")
        polarity, amplitude, width = (self._read(name) for name in STROBES["prog_fire"])
        self.afe.pulse(row, col, polarity, amplitude, width, now / PICOSECONDS_PER_SECOND)
        cycles = self.afe.pulse_cycles(width)
        self.pulses.append(PulseRecord(now, row, col, polarity, amplitude, width, cycles))
        self._pulsing = True
        self._after("pulse answer", self._after_edges_ps(cycles), self._done_rises)

    def _done_rises(self) -> None:
        self._answer("prog_done", 1)
        self._after("pulse answer", self.period_ps, self._done_falls)

    def _done_falls(self) -> None:
        self._answer("prog_done", 0)
        self._pulsing = False
