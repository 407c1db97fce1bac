"""AFE interface definition, build parameters, watchdog and the shared RTL helpers."""

import random

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Fragment, Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from afe_standin import AFEStandIn
from anmf.hdl.afe import AFEMode, AFESignature, GroupedWalk, ProgPolarity, emit_safe_exit, lowest_set_index
from anmf.hdl.params import BuildParams
from anmf.hdl.watchdog import Watchdog

SMALL = BuildParams(rows=16, cols=4)


# -- build parameters ----------------------------------------------------------------------

def test_build_parameter_defaults_and_derived_widths():
    p = BuildParams()
    assert (p.rows, p.cols, p.spare, p.dac_bits, p.adc_bits, p.avg_max_log2) == \
        (64, 8, 2, 10, 10, 8)
    assert (p.total_cols, p.row_addr_bits, p.col_addr_bits) == (10, 6, 4)
    assert (p.cell_count, p.cell_addr_bits) == (640, 10)
    assert (p.avg_log2_bits, p.sum_bits, p.result_bits, p.tolerance_bits) == (4, 18, 11, 11)
    assert p.max_timer == 65535
    assert p.cell_address(3, 7) == 37
    # offset binary converters: 0 V is the mid code
    assert (p.dac_zero_code, BuildParams(dac_bits=1).dac_zero_code) == (512, 1)


@pytest.mark.parametrize("field, value, message", [
    ("rows", 1, "rows must be an integer from 2 to 1024, got 1"),
    ("rows", 2000, "rows must be an integer from 2 to 1024, got 2000"),
    ("cols", 1.0, "cols must be an integer from 2 to 64, got 1.0"),
    ("spare", -1, "spare must be an integer from 0 to 16, got -1"),
    ("dac_bits", True, "dac_bits must be an integer from 1 to 24, got True"),
    ("adc_bits", 0, "adc_bits must be an integer from 1 to 24, got 0"),
    ("avg_max_log2", 17, "avg_max_log2 must be an integer from 0 to 16, got 17"),
    ("timer_bits", 1, "timer_bits must be an integer from 2 to 32, got 1"),
    ("prog_amp_bits", 0, "prog_amp_bits must be an integer from 1 to 16, got 0"),
    ("prog_width_bits", "8", "prog_width_bits must be an integer from 1 to 16, got '8'"),
    ("pulse_budget_bits", 17, "pulse_budget_bits must be an integer from 1 to 16, got 17"),
    ("cal_ref_bits", 9, "cal_ref_bits must be an integer from 1 to 8, got 9"),
])
def test_build_parameters_are_validated_with_exact_messages(field, value, message):
    with pytest.raises(ValueError) as info:
        BuildParams(**{field: value})
    assert str(info.value) == message


def test_cell_address_rejects_cells_outside_the_array():
    with pytest.raises(ValueError, match=r"^row must be from 0 to 15, got 16$"):
        SMALL.cell_address(16, 0)
    with pytest.raises(ValueError, match=r"^col must be from 0 to 5, got -1$"):
        SMALL.cell_address(0, -1)


# -- the AFE signature -----------------------------------------------------------------------

EXPECTED_MEMBERS = [  # name, width, controller drives it
    ("dac_addr", 4, True), ("dac_data", 10, True), ("dac_we", 1, True), ("dac_ldac", 1, True),
    ("row_en", 16, True), ("col_en", 6, True), ("mode", 3, True), ("loop", 1, True),
    ("adc_mux", 3, True), ("adc_start", 1, True), ("adc_busy", 1, False),
    ("adc_data", 10, False), ("adc_ovr", 1, False), ("cell_row", 4, True),
    ("cell_col", 3, True), ("prog_polarity", 1, True), ("prog_amplitude", 8, True),
    ("prog_width", 8, True), ("prog_fire", 1, True), ("prog_done", 1, False),
    ("cal_ref_sel", 3, True),
]


def test_signature_enumerates_every_member_with_width_and_direction():
    ports = AFESignature(SMALL).ports()
    assert [(p.name, p.width, p.flow == wiring.Out) for p in ports] == EXPECTED_MEMBERS
    shapes = {p.name: p.shape for p in ports}
    assert shapes["mode"] is AFEMode and shapes["prog_polarity"] is ProgPolarity


def test_enumeration_matches_the_verilog_port_names():
    class Holder(wiring.Component):
        afe: Out(AFESignature(SMALL))

        def elaborate(self, platform):
            m = Module()
            dummy = Signal()
            m.d.sync += dummy.eq(self.afe.adc_busy)   # give the design a clock
            return m

    text = verilog.convert(Holder(), name="holder")
    for port in AFESignature(SMALL).ports():
        direction = "output" if port.flow == wiring.Out else "input"
        width = "" if port.width == 1 else f"[{port.width - 1}:0] "
        assert f"{direction} {width}afe__{port.name};" in text, port.name


def test_signature_equality_follows_the_parameters():
    assert AFESignature(SMALL) == AFESignature(BuildParams(rows=16, cols=4))
    assert AFESignature(SMALL) != AFESignature(BuildParams())
    assert AFESignature(SMALL).flip() == AFESignature(SMALL).flip()
    assert AFESignature(SMALL).params is SMALL
    with pytest.raises(TypeError, match=r"^params must be a BuildParams, got 'x'$"):
        AFESignature("x")


def test_controller_and_afe_sides_connect():
    class Controller(wiring.Component):
        afe: Out(AFESignature(SMALL))

        def elaborate(self, platform):
            return Module()

    class Front(wiring.Component):
        afe: In(AFESignature(SMALL))

        def elaborate(self, platform):
            return Module()

    m = Module()
    m.submodules.controller = controller = Controller()
    m.submodules.front = front = Front()
    wiring.connect(m, controller.afe, front.afe)   # raises if a member does not match
    Fragment.get(m, None)                          # and the connection elaborates
    assert len(AFESignature(SMALL).ports()) == len(EXPECTED_MEMBERS)


def test_idle_values_are_all_zero():
    assert AFEMode.IDLE.value == 0 and ProgPolarity.SET.value == 0
    interface = AFESignature(SMALL).create()
    inits = [Value.cast(getattr(interface, port.name)).init
             for port in AFESignature(SMALL).ports()]
    assert inits == [0] * len(EXPECTED_MEMBERS)
    assert [m.value for m in AFEMode] == list(range(7))


# -- helpers ---------------------------------------------------------------------------------

@pytest.mark.parametrize("width", [1, 5, 16, 64])
def test_lowest_set_index_picks_the_lowest_enabled_bit(width):
    vector = Signal(width)
    index = Signal(range(max(2, width)))
    m = Module()
    m.d.comb += index.eq(lowest_set_index(vector))
    rng = np.random.default_rng(width)
    values = [0, 1, 2 ** width - 1, 1 << (width - 1)] + \
        [int(v) for v in rng.integers(0, 2 ** min(width, 62), 20)]
    seen = []

    async def testbench(ctx):
        for value in values:
            ctx.set(vector, value)
            seen.append(ctx.get(index))

    sim = Simulator(m)
    sim.add_testbench(testbench)
    sim.run()
    expected = [(v & -v).bit_length() - 1 if v else 0 for v in values]
    assert seen == expected


@pytest.mark.parametrize("limit", [1, 2, 7])
def test_watchdog_expires_exactly_limit_cycles_after_restart(limit):
    dut = Watchdog(8)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    trace = []

    async def testbench(ctx):
        ctx.set(dut.limit, limit)
        for cycle in range(limit + 4):
            ctx.set(dut.restart, cycle == 1)     # restart in cycle 1
            trace.append(ctx.get(dut.expired))
            await ctx.tick()

    sim.add_testbench(testbench)
    sim.run()
    assert trace[2:] == [0] * (limit - 1) + [1] * 3   # high from cycle 1 + limit on


def test_watchdog_restart_rearms_and_zero_limit_does_not_wrap():
    dut = Watchdog(4)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    trace = []

    async def testbench(ctx):
        ctx.set(dut.limit, 3)
        ctx.set(dut.restart, 1)
        await ctx.tick()
        await ctx.tick()                  # restart again one cycle later
        ctx.set(dut.restart, 0)
        for _ in range(4):
            trace.append(ctx.get(dut.expired))
            await ctx.tick()
        ctx.set(dut.limit, 0)
        ctx.set(dut.restart, 1)
        await ctx.tick()
        ctx.set(dut.restart, 0)
        trace.append(ctx.get(dut.expired))

    sim.add_testbench(testbench)
    sim.run()
    assert trace == [0, 0, 1, 1, 1]


def test_watchdog_expired_equals_the_counter_model_every_cycle():
    # `expired` is a flip-flop set a cycle ahead (docs/synthesis.md I46): it must equal the
    # counter's `remaining == 0` in every cycle, for restarts at any time and limits 0, 1, 2, ...
    rng = random.Random(7)
    dut = Watchdog(4)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    mismatches = []

    async def testbench(ctx):
        remaining = 0
        for cycle in range(600):
            restart, limit = rng.random() < 0.15, rng.choice([0, 1, 2, 3, 5, 15])
            ctx.set(dut.restart, restart)
            ctx.set(dut.limit, limit)
            if ctx.get(dut.expired) != (remaining == 0):
                mismatches.append((cycle, remaining))
            await ctx.tick()
            remaining = max(limit - 1, 0) if restart else max(remaining - 1, 0)

    sim.add_testbench(testbench)
    sim.run()
    assert mismatches == []


def test_watchdog_width_is_validated():
    with pytest.raises(ValueError, match=r"^width must be an integer from 1 to 64, got 0$"):
        Watchdog(0)


def test_safe_exit_zeroes_every_dac_then_loads_them():
    class Exiter(wiring.Component):
        afe: Out(AFESignature(SMALL))
        go: In(1)
        finished: Out(1)

        def elaborate(self, platform):
            m = Module()
            with m.FSM():
                with m.State("Idle"):
                    with m.If(self.go):
                        m.next = "Safe-Zero-DAC"
                emit_safe_exit(m, self.afe, SMALL, then="Finished")
                with m.State("Finished"):
                    m.d.comb += self.finished.eq(1)
            return m

    dut = Exiter()
    afe = AFEStandIn(dut.afe, SMALL)
    afe.dac_input[:] = 5
    afe.dac_output[:] = 5
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_process(afe.process)
    cycles = []

    async def testbench(ctx):
        ctx.set(dut.go, 1)
        await ctx.tick()
        ctx.set(dut.go, 0)
        count = 1
        while not ctx.get(dut.finished):
            await ctx.tick()
            count += 1
        cycles.append(count)

    sim.add_testbench(testbench)
    sim.run()
    assert cycles == [SMALL.rows + 2]
    zero = SMALL.dac_zero_code
    assert zero == 512, "offset binary: 0 V is code 2**(DAC_BITS-1)"
    assert [(row, code) for _, row, code in afe.dac_writes] == [(r, zero) for r in range(16)]
    assert afe.ldac_cycles == [SMALL.rows + 1]
    assert afe.dacs_at_zero_volts()


@pytest.mark.parametrize("width", [BuildParams().timer_bits, SMALL.timer_bits, 4])
def test_watchdog_converts_to_verilog(width):
    text = verilog.convert(Watchdog(width), name="watchdog")
    assert f"input [{width - 1}:0] limit;" in text and "output expired;" in text


def test_grouped_walk_width_must_be_positive():
    with pytest.raises(ValueError, match=r"^walk width must be at least 1, not 0$"):
        GroupedWalk(Module(), 0, "walk")


@pytest.mark.parametrize("width", [1, 5, 8, 20, 64])
def test_grouped_walk_visits_every_set_bit_in_order_then_is_empty(width):
    # load in cycle 0, then one step per cycle up to one past the last bit, then the same from
    # a restart: index, empty and last as the set bits left say, every cycle.
    m = Module()
    walk = GroupedWalk(m, width, "walk")
    mask, load, restart = Signal(width), Signal(), Signal()
    with m.If(load):
        walk.load(mask)
    with m.Elif(restart):
        walk.restart()
    with m.Else():
        walk.step()
    rng = random.Random(width)
    masks = [0, 1 << (width - 1), (1 << width) - 1] + [rng.getrandbits(width) for _ in range(6)]

    async def bench(ctx):
        for value in masks:
            rows = [bit for bit in range(width) if value >> bit & 1]
            for start in ("load", "restart"):
                ctx.set(mask, value if start == "load" else 0)   # restart: from the loaded tables
                ctx.set(load, start == "load")
                ctx.set(restart, start == "restart")
                await ctx.tick()
                ctx.set(load, 0)
                ctx.set(restart, 0)
                for left in [rows[i:] for i in range(len(rows) + 1)]:
                    assert ctx.get(walk.index) == (left[0] if left else 0)
                    assert ctx.get(walk.empty) == (not left)
                    assert ctx.get(walk.last) == (len(left) <= 1)
                    await ctx.tick()

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
