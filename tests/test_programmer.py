"""Write-verify programmer against the AFE stand-in: reads, convergence, ramp, stuck cells,
matrix walk, validation, watchdog and abort."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Module, Value
from amaranth.lib import memory, wiring
from amaranth.sim import Simulator

from afe_standin import AFEStandIn, driven_afe_members
from anmf.hdl.afe import AFEMode, ProgPolarity
from anmf.hdl.codes import ErrorCode
from anmf.hdl.params import BuildParams
from anmf.hdl.programmer import ProgrammerCommand, WriteVerifyProgrammer
from anmf.model import calibration as cal

SMALL = BuildParams(rows=16, cols=4)     # 6 physical columns, 96 cells
SET, RESET = ProgPolarity.SET, ProgPolarity.RESET
COMMAND_DEFAULTS = dict(command=ProgrammerCommand.PROGRAM_CELL, cell_row=0, cell_col=0,
                        row_mask=0, col_mask=0, tolerance=4, amp_start=8, amp_step=4,
                        amp_max=40, pulse_width=5, pulse_budget=20, avg_log2=0,
                        read_settle=2, watchdog_limit=60)


@dataclass
class Outcome:
    cycles: int
    error: ErrorCode
    read_code: int
    read_over_range: int
    pulse_count: int
    failed_count: int


class Bench:
    """Programmer + target/fault-map memories + AFE stand-in in one simulation."""

    def __init__(self, params: BuildParams, targets, fault_init: int = 1,
                 coefficient_words: list[int] | None = None, **standin):
        self.params = params
        self.dut = WriteVerifyProgrammer(params)
        self.targets = memory.Memory(shape=params.adc_bits, depth=params.cell_count,
                                     init=[int(t) for t in np.ravel(targets)])
        # The host's FAULT_MAP layout: one word per row, bit c = column c.
        self.faults = memory.Memory(shape=params.total_cols, depth=params.rows,
                                    init=[(2 ** params.total_cols - 1) * fault_init] * params.rows)
        m = Module()
        m.submodules.dut = self.dut
        m.submodules.targets = self.targets
        m.submodules.faults = self.faults
        wiring.connect(m, self.dut.target, self.targets.read_port())
        wiring.connect(m, self.dut.fault_map, self.faults.write_port(granularity=1))
        if coefficient_words is not None:
            # The ADC words served as the controller does (a read port at coeff_channel, read
            # in every cycle: the word follows the column one cycle later).
            coefficients = memory.Memory(shape=len(Value.cast(self.dut.coeff_word)),
                                         depth=len(coefficient_words), init=coefficient_words)
            m.submodules.coefficients = coefficients
            read = coefficients.read_port()
            m.d.comb += [read.addr.eq(self.dut.coeff_channel),
                         Value.cast(self.dut.coeff_word).eq(read.data)]
        self.afe = AFEStandIn(self.dut.afe, params, **standin)
        self.sim = Simulator(m)
        self.sim.add_clock(1e-8)
        self.sim.add_process(self.afe.process)

    def run(self, testbench) -> None:
        self.sim.add_testbench(testbench)
        self.sim.run()

    async def command(self, ctx, *, abort_at: int | None = None, max_cycles: int = 50_000,
                      **changes) -> Outcome:
        dut = self.dut
        for port, value in (COMMAND_DEFAULTS | changes).items():
            signal = getattr(dut, port)
            # a raw int may be outside an enum port's members (the unknown command)
            ctx.set(Value.cast(signal) if isinstance(value, int) else signal, value)
        # The operands are held from the cycle before the start (registered start checks).
        await ctx.tick()
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        cycles = 1
        while not ctx.get(dut.done):
            if abort_at == cycles:
                ctx.set(dut.abort, 1)
            await ctx.tick()
            ctx.set(dut.abort, 0)
            cycles += 1
            assert cycles < max_cycles, "no done: the programmer hangs"
        outcome = Outcome(cycles, ctx.get(dut.error), ctx.get(dut.read_code),
                          ctx.get(dut.read_over_range), ctx.get(dut.pulse_count),
                          ctx.get(dut.failed_count))
        await ctx.tick()
        assert not ctx.get(dut.busy)
        return outcome

    def fault_map(self, ctx) -> np.ndarray:
        words = [ctx.get(self.faults.data[row]) for row in range(self.params.rows)]
        return np.array([[(word >> col) & 1 for col in range(self.params.total_cols)]
                         for word in words])

    def assert_safe(self, ctx) -> None:
        assert driven_afe_members(ctx, self.dut.afe, self.params) == {}, \
            "AFE outputs not at their idle value after done"
        assert self.afe.dacs_at_zero_volts()


def reference_pulses(cell: int, target: int, *, tolerance, amp_start, amp_step, amp_max,
                     pulse_budget, divisor, stuck=False, full_scale=1023):
    """The write-verify algorithm on the stand-in's noise-free cell (an independent
    reference): returns the (polarity, amplitude) sequence and whether the cell failed."""
    pulses, last = [], None
    amplitude = 0
    while abs(cell - target) > tolerance:
        if len(pulses) == pulse_budget:
            return pulses, True
        polarity = SET if cell < target else RESET
        amplitude = min(amplitude + amp_step if polarity == last else amp_start, amp_max)
        pulses.append((polarity, amplitude))
        last = polarity
        if not stuck:
            step = amplitude // divisor
            cell = min(max(cell + (step if polarity == SET else -step), 0), full_scale)
    return pulses, False


def read_cycles(read_settle: int, avg_log2: int, adc_cycles: int) -> int:
    """One verify read: settle, the conversions back to back, Average, Compare (docs/solve-timing.md)."""
    return read_settle + 2 ** avg_log2 * (adc_cycles + 1) + 2


def cell_cycles(pulses: int, read: int, prog_latency: int) -> int:
    """Next-Cell, Fetch-Target, the reads and pulses, Record."""
    return 3 + (pulses + 1) * read + pulses * (1 + prog_latency)


def test_read_cell_averages_like_the_sequencer_and_touches_nothing():
    cells = np.random.default_rng(1).integers(100, 900, (SMALL.rows, SMALL.total_cols))
    bench = Bench(SMALL, np.zeros(SMALL.cell_count), cells=cells.copy(), noise_amplitude=6,
                  rng=np.random.default_rng(2))
    seen = []

    async def testbench(ctx):
        seen.append(await bench.command(ctx, command=ProgrammerCommand.READ_CELL,
                                        cell_row=9, cell_col=4, avg_log2=2, read_settle=5,
                                        tolerance=0))
        seen.append(bench.fault_map(ctx))
        bench.assert_safe(ctx)

    bench.run(testbench)
    outcome, faults = seen
    afe = bench.afe
    codes = [c.code for c in afe.conversions]
    assert len(codes) == 4 and {c.cell for c in afe.conversions} == {(9, 4)}
    assert {c.mode for c in afe.conversions} == {AFEMode.READ_CELL.value}
    assert outcome.read_code == (sum(codes) + 2) >> 2
    assert abs(outcome.read_code - cells[9, 4]) <= 6
    assert outcome.cycles == 3 + read_cycles(5, 2, adc_cycles=1 + 3)
    assert (outcome.error, outcome.pulse_count, outcome.read_over_range) == \
        (ErrorCode.NONE, 0, 0)
    assert afe.pulses == [] and faults.all(), "a read changed the fault map or pulsed"
    # the first conversion comes read_settle cycles after mode READ_CELL was set
    (enter, _), (leave, idle) = afe.mode_changes
    assert afe.conversions[0].cycle - enter == 5 and idle == AFEMode.IDLE.value
    assert afe.violations == []


def test_program_cell_converges_with_the_reference_pulse_sequence():
    cells = np.full((SMALL.rows, SMALL.total_cols), 500)
    cells[3, 2] = 100
    targets = np.zeros((SMALL.rows, SMALL.total_cols), dtype=int)
    targets[3, 2] = 200
    bench = Bench(SMALL, targets, cells=cells, pulse_divisor=4)
    seen = []

    async def testbench(ctx):
        seen.append(await bench.command(ctx, cell_row=3, cell_col=2))
        seen.append(bench.fault_map(ctx))
        bench.assert_safe(ctx)

    bench.run(testbench)
    outcome, faults = seen
    afe = bench.afe
    expected, failed = reference_pulses(100, 200, tolerance=4, amp_start=8, amp_step=4,
                                        amp_max=40, pulse_budget=20, divisor=4)
    assert not failed and len(expected) > 5
    assert [(p.polarity, p.amplitude) for p in afe.pulses] == expected
    assert {(p.row, p.col, p.width, p.mode) for p in afe.pulses} == \
        {(3, 2, 5, AFEMode.PROGRAM.value)}
    assert abs(int(afe.cells[3, 2]) - 200) <= 4
    assert outcome.error == ErrorCode.NONE
    assert (outcome.pulse_count, outcome.failed_count) == (len(expected), 0)
    # start cycle, the cell, the final Next-Cell; defaults: read_settle 2, 1 sample
    assert outcome.cycles == 1 + cell_cycles(len(expected), read_cycles(2, 0, 1 + 3), 3) + 1
    assert outcome.read_code == afe.cells[3, 2]
    assert faults[3, 2] == 0 and faults.sum() == faults.size - 1
    # one verify read after every pulse, plus the first
    assert len(afe.conversions) == len(expected) + 1
    assert afe.violations == []


@pytest.mark.parametrize("cell, target, ramp, divisor, expected", [
    # overshoot: SET 40 (+20), SET 60 (+30) passes the target, RESET restarts at 40 (-20)
    (100, 130, (40, 20, 100), 2, [(SET, 40), (SET, 60), (RESET, 40)]),
    # the ramp stops at amp_max: +1, +4, then +5 five times
    (100, 130, (10, 30, 50), 10, [(SET, 10), (SET, 40)] + [(SET, 50)] * 5),
    # amp_start above amp_max is capped too
    (300, 290, (90, 5, 60), 6, [(RESET, 60)]),
])
def test_amplitude_ramp_seen_on_the_afe_port(cell, target, ramp, divisor, expected):
    cells = np.zeros((SMALL.rows, SMALL.total_cols), dtype=int)
    cells[0, 5] = cell
    targets = np.zeros_like(cells)
    targets[0, 5] = target
    bench = Bench(SMALL, targets, cells=cells, pulse_divisor=divisor)
    seen = []

    async def testbench(ctx):
        amp_start, amp_step, amp_max = ramp
        seen.append(await bench.command(ctx, cell_row=0, cell_col=5, tolerance=3,
                                        amp_start=amp_start, amp_step=amp_step,
                                        amp_max=amp_max))

    bench.run(testbench)
    assert [(p.polarity, p.amplitude) for p in bench.afe.pulses] == expected
    assert seen[0].error == ErrorCode.NONE


def test_stuck_cell_fails_after_the_pulse_budget():
    cells = np.full((SMALL.rows, SMALL.total_cols), 100)
    targets = np.full_like(cells, 600)
    bench = Bench(SMALL, targets, fault_init=0, cells=cells, stuck=frozenset({(7, 1)}))
    seen = []

    async def testbench(ctx):
        seen.append(await bench.command(ctx, cell_row=7, cell_col=1, pulse_budget=6))
        seen.append(bench.fault_map(ctx))

    bench.run(testbench)
    outcome, faults = seen
    assert [(p.polarity, p.amplitude) for p in bench.afe.pulses] == \
        [(SET, a) for a in (8, 12, 16, 20, 24, 28)]
    assert (outcome.error, outcome.pulse_count, outcome.failed_count) == \
        (ErrorCode.CELLS_FAILED, 6, 1)
    assert faults[7, 1] == 1 and faults.sum() == 1
    assert len(bench.afe.conversions) == 7


def test_program_matrix_walks_enabled_cells_row_by_row():
    rng = np.random.default_rng(4)
    cells = rng.integers(0, 1024, (SMALL.rows, SMALL.total_cols))
    targets = rng.integers(100, 900, (SMALL.rows, SMALL.total_cols))
    rows, cols = [2, 5, 14], [0, 3]
    stuck = (5, 3)
    cells[stuck] = 0          # far from its target
    bench = Bench(SMALL, targets, cells=cells.copy(), stuck=frozenset({stuck}),
                  pulse_divisor=2)
    seen = []

    async def testbench(ctx):
        seen.append(await bench.command(
            ctx, command=ProgrammerCommand.PROGRAM_MATRIX, row_mask=sum(1 << r for r in rows),
            col_mask=sum(1 << c for c in cols), tolerance=5, amp_start=10, amp_step=10,
            amp_max=120, pulse_budget=30, avg_log2=1, read_settle=1))
        seen.append(bench.fault_map(ctx))
        bench.assert_safe(ctx)

    bench.run(testbench)
    outcome, faults = seen
    afe = bench.afe
    visited = list(dict.fromkeys(c.cell for c in afe.conversions))
    assert visited == [(r, c) for r in rows for c in cols]
    pulses_expected = 0
    for r in rows:
        for c in cols:
            pulses, failed = reference_pulses(
                int(cells[r, c]), int(targets[r, c]), tolerance=5, amp_start=10, amp_step=10,
                amp_max=120, pulse_budget=30, divisor=2, stuck=(r, c) == stuck)
            got = [(p.polarity, p.amplitude) for p in afe.pulses if (p.row, p.col) == (r, c)]
            assert got == pulses, f"cell {(r, c)}"
            assert faults[r, c] == int(failed) == int((r, c) == stuck)
            if (r, c) != stuck:
                assert abs(int(afe.cells[r, c]) - int(targets[r, c])) <= 5
            pulses_expected += len(pulses)
    enabled = np.zeros(faults.shape, dtype=bool)
    enabled[np.ix_(rows, cols)] = True
    assert faults[~enabled].all(), "a cell outside the masks was written"
    assert (outcome.error, outcome.pulse_count, outcome.failed_count) == \
        (ErrorCode.CELLS_FAILED, pulses_expected, 1)
    read = read_cycles(1, 1, 1 + 3)
    per_cell = [cell_cycles(sum(1 for p in afe.pulses if (p.row, p.col) == cell), read, 3)
                for cell in visited]
    assert outcome.cycles == 1 + sum(per_cell) + len(rows)   # one row-advance cycle per row
    assert afe.violations == []


# The band edges (210 +/- 10), also with the fastest read (no settling, quickest ADC): the
# verify bounds are registered in steps after the target fetch and must be ready by then.
@pytest.mark.parametrize("fast", [False, True], ids=["default-read", "fastest-read"])
@pytest.mark.parametrize("cell, failed", [(200, False), (220, False), (199, True), (221, True)])
def test_zero_pulse_budget_only_verifies(cell, failed, fast):
    cells = np.full((SMALL.rows, SMALL.total_cols), cell)
    timing = dict(adc_latency=1, adc_busy_cycles=1) if fast else {}
    bench = Bench(SMALL, np.full(cells.shape, 210), fault_init=0, cells=cells, **timing)
    seen = []

    async def testbench(ctx):
        seen.append(await bench.command(ctx, cell_row=1, cell_col=1, pulse_budget=0,
                                        tolerance=10, read_settle=0 if fast else 2))
        seen.append(bench.fault_map(ctx)[1, 1])

    bench.run(testbench)
    outcome, fault = seen
    assert bench.afe.pulses == []
    assert fault == int(failed)
    assert outcome.error == (ErrorCode.CELLS_FAILED if failed else ErrorCode.NONE)


BAD_COMMANDS = {
    "unknown-command": (dict(command=3), ErrorCode.UNKNOWN_OPCODE),
    "col-beyond-array": (dict(cell_col=6), ErrorCode.BAD_DIMENSION),
    "read-col-beyond-array": (dict(command=ProgrammerCommand.READ_CELL, cell_col=7),
                              ErrorCode.BAD_DIMENSION),
    "matrix-no-rows": (dict(command=ProgrammerCommand.PROGRAM_MATRIX, col_mask=1),
                       ErrorCode.BAD_DIMENSION),
    "matrix-no-cols": (dict(command=ProgrammerCommand.PROGRAM_MATRIX, row_mask=1),
                       ErrorCode.BAD_DIMENSION),
    "avg-too-large": (dict(avg_log2=9), ErrorCode.BAD_AVERAGING),
    "zero-tolerance": (dict(tolerance=0), ErrorCode.BAD_TOLERANCE),
    "tolerance-full-range": (dict(tolerance=1024), ErrorCode.BAD_TOLERANCE),
    "zero-watchdog": (dict(watchdog_limit=0), ErrorCode.BAD_TIMING),
    "zero-pulse-width": (dict(pulse_width=0), ErrorCode.BAD_TIMING),
    "priority": (dict(cell_col=6, tolerance=0, watchdog_limit=0), ErrorCode.BAD_DIMENSION),
}



def test_start_checks_see_the_operands_of_the_cycle_before_the_start():
    # Registered checks (docs/synthesis.md): a watchdog limit that is 0 the cycle before the
    # start is refused even when valid in the start cycle. Both drivers hold their operands.
    bench = Bench(SMALL, [100] * SMALL.cell_count)
    seen = []

    async def testbench(ctx):
        dut = bench.dut
        for port, value in (COMMAND_DEFAULTS | dict(command=ProgrammerCommand.READ_CELL)).items():
            ctx.set(getattr(dut, port), value)
        ctx.set(dut.watchdog_limit, 0)
        await ctx.tick()
        ctx.set(dut.watchdog_limit, 60)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        while not ctx.get(dut.done):
            await ctx.tick()
        seen.append(ErrorCode(ctx.get(dut.error)))

    bench.run(testbench)
    assert seen == [ErrorCode.BAD_TIMING]

def test_rerun_walks_the_last_starts_rows_and_settings_on_its_columns_unchecked():
    # The remap's spare trials (docs/synthesis.md I45): with `rerun` the start runs the last
    # command again on rerun_col_mask, with that command's rows and settings, whatever the
    # operand ports hold (here values every check refuses); without it those ports are checked.
    rng = np.random.default_rng(11)
    cells = rng.integers(0, 1024, (SMALL.rows, SMALL.total_cols))
    targets = rng.integers(100, 900, (SMALL.rows, SMALL.total_cols))
    rows = [1, 3]
    walk = dict(command=ProgrammerCommand.PROGRAM_MATRIX, row_mask=sum(1 << r for r in rows),
                col_mask=0b101, tolerance=5, amp_start=10, amp_step=10, amp_max=120,
                pulse_width=7, pulse_budget=30, avg_log2=1, read_settle=1)
    refused = dict(command=ProgrammerCommand.READ_CELL, row_mask=0, col_mask=0, tolerance=0,
                   amp_start=1, amp_step=1, amp_max=1, pulse_width=0, pulse_budget=0,
                   avg_log2=9, read_settle=0, watchdog_limit=0)
    bench = Bench(SMALL, targets, cells=cells.copy(), pulse_divisor=2)
    seen = {}

    async def testbench(ctx):
        afe = bench.afe
        seen["walk"] = await bench.command(ctx, **walk)
        seen["cells"] = afe.cells.copy()
        first_conversion, first_pulse = len(afe.conversions), len(afe.pulses)
        seen["rerun"] = await bench.command(ctx, **refused, rerun=1, rerun_col_mask=0b10010)
        seen["conversions"] = afe.conversions[first_conversion:]
        seen["pulses"] = afe.pulses[first_pulse:]
        seen["checked"] = await bench.command(ctx, **refused, rerun=0)

    bench.run(testbench)
    assert seen["walk"].error == ErrorCode.NONE
    rerun = seen["rerun"]
    assert rerun.error == ErrorCode.NONE, "a rerun skips the start checks"
    visited = list(dict.fromkeys(c.cell for c in seen["conversions"]))
    assert visited == [(r, c) for r in rows for c in (1, 4)]
    assert {c.mode for c in seen["conversions"]} == {AFEMode.READ_CELL.value}
    before = seen["cells"]
    for r in rows:
        for c in (1, 4):
            expected, _ = reference_pulses(
                int(before[r, c]), int(targets[r, c]), tolerance=5, amp_start=10, amp_step=10,
                amp_max=120, pulse_budget=30, divisor=2)
            got = [(p.polarity, p.amplitude) for p in seen["pulses"] if (p.row, p.col) == (r, c)]
            assert got == expected, f"cell {(r, c)}: the walk's settings"
    assert {p.width for p in seen["pulses"]} == {7}
    assert rerun.pulse_count == len(seen["pulses"]) > 0
    # Without rerun the same ports are checked: READ_CELL with avg_log2 9 is refused at once.
    assert (seen["checked"].cycles, seen["checked"].error) == (1, ErrorCode.BAD_AVERAGING)


@pytest.mark.parametrize("name", BAD_COMMANDS)
def test_bad_parameters_report_the_error_and_change_nothing(name):
    changes, error = BAD_COMMANDS[name]
    cells = np.full((SMALL.rows, SMALL.total_cols), 50)
    bench = Bench(SMALL, np.full(cells.shape, 80), cells=cells)
    seen = []

    async def testbench(ctx):
        first = await bench.command(ctx, cell_row=2, cell_col=2)
        before = (bench.fault_map(ctx), len(bench.afe.pulses), len(bench.afe.conversions),
                  len(bench.afe.dac_writes))
        outcome = await bench.command(ctx, **(dict(cell_row=2, cell_col=2) | changes))
        after = (bench.fault_map(ctx), len(bench.afe.pulses), len(bench.afe.conversions),
                 len(bench.afe.dac_writes))
        seen.extend([first, outcome, before, after])

    bench.run(testbench)
    first, outcome, before, after = seen
    assert first.error == ErrorCode.NONE and first.pulse_count > 0
    assert outcome.cycles == 1 and outcome.error == error
    assert (outcome.pulse_count, outcome.failed_count, outcome.read_code) == \
        (first.pulse_count, first.failed_count, first.read_code), "counters changed"
    assert np.array_equal(after[0], before[0]) and after[1:] == before[1:]


def test_over_range_samples_are_strobed_one_per_flagged_sample():
    script = [(1023, True), (500, False), (1023, True), (7, False)]
    bench = Bench(SMALL, np.zeros(SMALL.cell_count), script=script)
    strobes, seen = [], []

    async def count_strobes(ctx):
        async for _clk, _rst, strobe in ctx.tick().sample(bench.dut.over_range_sample):
            strobes.append(strobe)

    async def testbench(ctx):
        seen.append(await bench.command(ctx, command=ProgrammerCommand.READ_CELL,
                                        cell_row=1, cell_col=1, avg_log2=2))

    bench.sim.add_process(count_strobes)
    bench.run(testbench)
    (outcome,) = seen
    assert sum(strobes) == 2, "one strobe per sample flagged adc_ovr"
    assert (outcome.read_over_range, outcome.read_code) == (1, (1023 + 500 + 1023 + 7 + 2) >> 2)


def test_read_cell_ignores_the_program_only_checks():
    bench = Bench(SMALL, np.zeros(SMALL.cell_count), cells=np.full((16, 6), 77))
    seen = []

    async def testbench(ctx):
        seen.append(await bench.command(ctx, command=ProgrammerCommand.READ_CELL, tolerance=0,
                                        pulse_width=0, cell_row=15, cell_col=5))

    bench.run(testbench)
    assert (seen[0].error, seen[0].read_code) == (ErrorCode.NONE, 77)


@pytest.mark.parametrize("faults, error", [
    (dict(prog_fault="never_done"), ErrorCode.PROGRAM_TIMEOUT),
    (dict(adc_fault="never_busy"), ErrorCode.ADC_TIMEOUT),
    (dict(adc_fault="stuck_busy"), ErrorCode.ADC_TIMEOUT),
])
def test_watchdog_timeouts_recover_to_a_safe_state(faults, error):
    cells = np.full((SMALL.rows, SMALL.total_cols), 10)
    bench = Bench(SMALL, np.full(cells.shape, 400), cells=cells, **faults)
    seen = []

    async def testbench(ctx):
        seen.append(await bench.command(ctx, cell_row=4, cell_col=4, watchdog_limit=25))
        bench.assert_safe(ctx)
        seen.append(bench.fault_map(ctx)[4, 4])

    bench.run(testbench)
    outcome, fault = seen
    assert outcome.error == error
    assert fault == 1, "a timed-out cell must not be recorded as programmed"
    # the safe exit zeroes every DAC, then applies them
    assert [row for _, row, _ in bench.afe.dac_writes] == list(range(SMALL.rows))
    assert bench.afe.ldac_cycles == [bench.afe.dac_writes[-1][0] + 1]


def test_abort_from_every_cycle_exits_safely_then_programs_again():
    cells = np.full((SMALL.rows, SMALL.total_cols), 100)
    bench = Bench(SMALL, np.full(cells.shape, 700), fault_init=0, cells=cells,
                  stuck=frozenset({(6, 3)}), prog_latency=2)
    command = dict(cell_row=6, cell_col=3, pulse_budget=2, read_settle=1)
    seen = []

    async def testbench(ctx):
        full = await bench.command(ctx, **command)
        seen.append(full)
        for abort_at in range(1, full.cycles):
            outcome = await bench.command(ctx, abort_at=abort_at, **command)
            seen.append((abort_at, outcome))
            bench.assert_safe(ctx)
        seen.append(await bench.command(ctx, **command))

    bench.run(testbench)
    full, *aborted, final = seen
    assert full.error == ErrorCode.CELLS_FAILED and full.cycles > 20
    for abort_at, outcome in aborted:
        assert outcome.error == ErrorCode.ABORTED, f"abort at cycle {abort_at}"
        assert outcome.cycles == abort_at + SMALL.rows + 2, f"abort at cycle {abort_at}"
    assert final == full
    assert bench.afe.violations == []


def test_constructor_rejects_anything_but_build_params():
    with pytest.raises(TypeError, match=r"^params must be a BuildParams, got None$"):
        WriteVerifyProgrammer(None)


@pytest.mark.parametrize("params", [BuildParams(), BuildParams(rows=16, cols=4)],
                         ids=["default", "small"])
def test_converts_to_verilog(params):
    text = verilog.convert(WriteVerifyProgrammer(params), name="programmer")
    assert "module programmer" in text
    assert f"output [{params.prog_amp_bits - 1}:0] afe__prog_amplitude" in text
    assert "input afe__prog_done" in text


# A strong correction (offset +100 LSB, gain 1.9: raw 0 corrects to -651, raw 1023 to 1293, both
# clamps act) and the inverse of the 5 % error (+25.6 LSB, gain 1/1.05).
CORRECTIONS = [cal.Coefficient(100 * 16, round(1.9 * cal.GAIN_ONE), True),
               cal.Coefficient(410, round(cal.GAIN_ONE / 1.05), True)]


@pytest.mark.parametrize("coefficient", CORRECTIONS)
def test_reads_and_verify_decisions_go_through_the_channels_adc_word(coefficient):
    """With cal_adc the programmer's READ_CELL code, over-range flag, pass/fail decision and pulse
    polarity are those of the corrected code (``cal.correct_code``), also where the clamp acts
    and with tolerances reaching past the code range; the word is asked for the cell's column;
    the cycles are those of an uncorrected read. With cal_adc low the code is the raw one."""
    col = 2
    raw_codes = [0, 1, 100, 300, 450, 511, 512, 600, 700, 810, 1000, 1023]
    targets = [0, 1, 5, 300, 512, 900, 1022, 1023]
    cells = np.zeros((SMALL.rows, SMALL.total_cols), dtype=np.int64)
    bench = Bench(SMALL, np.zeros(SMALL.cell_count), cells=cells)
    word = cal.pack_coefficient(coefficient, adc_bits=SMALL.adc_bits, dac_bits=SMALL.dac_bits)

    def corrected(raw):
        return cal.correct_code(raw, coefficient, SMALL.adc_bits)

    async def testbench(ctx):
        dut = bench.dut
        ctx.set(Value.cast(dut.coeff_word), word)
        for enabled in (1, 0):
            ctx.set(dut.cal_adc, enabled)
            for raw in raw_codes:
                bench.afe.cells[3, col] = raw
                outcome = await bench.command(ctx, command=ProgrammerCommand.READ_CELL, cell_row=3,
                                              cell_col=col, avg_log2=1)
                assert ctx.get(dut.coeff_channel) == col
                code, clamped = corrected(raw) if enabled else (raw, False)
                assert (outcome.read_code, outcome.read_over_range) == (code, int(clamped)), (enabled, raw)
                assert outcome.cycles == 3 + read_cycles(2, 1, adc_cycles=1 + 3)
        ctx.set(dut.cal_adc, 1)
        for raw in raw_codes:
            code = corrected(raw)[0]
            for target in targets:
                for tolerance in (1, 40, 1023):
                    bench.afe.cells[0, col] = raw
                    ctx.set(bench.targets.data[col], target)   # cell (0, col)
                    pulses_before = len(bench.afe.pulses)
                    outcome = await bench.command(ctx, cell_row=0, cell_col=col, tolerance=tolerance,
                                                  pulse_budget=1, amp_step=0)
                    passes = abs(code - target) <= tolerance
                    assert outcome.pulse_count == (0 if passes else 1), (raw, code, target, tolerance)
                    if not passes:
                        wanted = SET if code < target else RESET
                        assert bench.afe.pulses[pulses_before].polarity == wanted, (raw, code, target)

    bench.run(testbench)


def test_calibrated_matrix_verify_uses_each_columns_word_with_the_fastest_read():
    """PROGRAM_MATRIX verify-only (pulse budget 0) with cal_adc over 4 x 4 cells whose columns
    have very different ADC words, served through a read port as in the controller, with the
    fastest read: each cell's pass/fail is that of its own column's corrected code
    (``cal.correct_code``) at the band edges 210 -/+ 10. offset * gain is registered per column
    apart from the product (docs/synthesis.md E53); a stale column's word fails this."""
    coefficients = [cal.Coefficient(100 * 16, round(1.9 * cal.GAIN_ONE), True),
                    cal.Coefficient(-60 * 16, round(0.6 * cal.GAIN_ONE), True),
                    cal.Coefficient(410, round(cal.GAIN_ONE / 1.05), True),
                    cal.Coefficient(-300 * 16 + 7, round(1.3 * cal.GAIN_ONE), True)]
    words = [cal.pack_coefficient(c, adc_bits=SMALL.adc_bits, dac_bits=SMALL.dac_bits)
             for c in coefficients] + [0] * (SMALL.total_cols - len(coefficients))
    edges = [199, 200, 220, 221]                # row i aims at edges[i]

    def corrected(raw, col):
        return cal.correct_code(raw, coefficients[col], SMALL.adc_bits)[0]

    cells = np.zeros((SMALL.rows, SMALL.total_cols), dtype=np.int64)
    expected = np.zeros((SMALL.rows, SMALL.total_cols), dtype=np.int64)
    for row, edge in enumerate(edges):
        for col in range(len(coefficients)):
            raw = min(range(2 ** SMALL.adc_bits), key=lambda r: abs(corrected(r, col) - edge))
            cells[row, col] = raw
            expected[row, col] = int(abs(corrected(raw, col) - 210) > 10)
    assert 0 < expected.sum() < 16, "both outcomes among the cells"
    # The same raw code would pass under one column's word and fail under another's.
    assert any(expected[row, col] != int(abs(corrected(int(cells[row, col]), other) - 210) > 10)
               for row in range(4) for col in range(4) for other in range(4))
    bench = Bench(SMALL, np.full(cells.shape, 210), fault_init=0, coefficient_words=words,
                  cells=cells, adc_latency=1, adc_busy_cycles=1)
    seen = []

    async def testbench(ctx):
        ctx.set(bench.dut.cal_adc, 1)
        seen.append(await bench.command(ctx, command=ProgrammerCommand.PROGRAM_MATRIX,
                                        row_mask=0b1111, col_mask=0b1111, pulse_budget=0,
                                        tolerance=10, read_settle=0))
        seen.append(bench.fault_map(ctx))

    bench.run(testbench)
    outcome, faults = seen
    assert bench.afe.pulses == []
    assert faults.tolist() == expected.tolist()
    assert outcome.failed_count == expected.sum()
