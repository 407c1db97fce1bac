"""Solve sequencer against the AFE stand-in: results, averaging, over-range, exact cycle
count, validation, watchdog and abort."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Module
from amaranth.lib import memory, wiring
from amaranth.sim import Simulator

from afe_standin import AFEStandIn, driven_afe_members
from anmf.hdl.afe import AFEMode
from anmf.hdl.codes import ErrorCode
from anmf.hdl.params import BuildParams
from anmf.hdl.solve_sequencer import SolveSequencer, result_layout, solve_cycles

SMALL = BuildParams(rows=16, cols=4)     # 6 physical columns
SENTINEL = {"code": 0x2AA, "over_range": 1}


def mask(indices) -> int:
    return sum(1 << i for i in indices)


@dataclass
class Outcome:
    cycles: int          # done cycle minus start cycle
    error: ErrorCode


class Bench:
    """Sequencer + rhs/result memories + AFE stand-in in one simulation."""

    def __init__(self, params: BuildParams, rhs, coefficient_words: list[dict] | None = None,
                 **standin):
        self.params = params
        self.dut = SolveSequencer(params)
        layout = result_layout(params)
        self.rhs = memory.Memory(shape=params.dac_bits, depth=params.rows, init=[int(v) for v in rhs])
        self.results = memory.Memory(shape=layout, depth=params.total_cols,
                                     init=[layout.const(SENTINEL)] * params.total_cols)
        m = Module()
        m.submodules.dut = self.dut
        m.submodules.rhs = self.rhs
        m.submodules.results = self.results
        wiring.connect(m, self.dut.rhs, self.rhs.read_port())
        wiring.connect(m, self.dut.result, self.results.write_port())
        if coefficient_words is not None:
            # The calibration memory as the controller has it (two read ports).
            words = memory.Memory(shape=self.dut.coeff.data.shape(), depth=len(coefficient_words),
                                  init=coefficient_words)
            m.submodules.coefficients = words
            wiring.connect(m, self.dut.coeff, words.read_port())
            wiring.connect(m, self.dut.opamp_coeff, words.read_port())
        self.afe = AFEStandIn(self.dut.afe, params, **standin)
        self.sim = Simulator(m)
        self.sim.add_clock(1e-8)
        self.sim.add_process(self.afe.process)

    def run(self, testbench) -> None:
        self.sim.add_testbench(testbench)
        self.sim.run()

    async def solve(self, ctx, *, row_mask: int, col_mask: int, mode=AFEMode.SOLVE,
                    avg_log2: int = 0, dac_settle: int = 2, analog_settle: int = 3,
                    watchdog_limit: int = 100, abort_at: int | None = None,
                    max_cycles: int = 20_000) -> Outcome:
        dut = self.dut
        for port, value in (("mode", mode), ("row_mask", row_mask), ("col_mask", col_mask),
                            ("avg_log2", avg_log2), ("dac_settle", dac_settle),
                            ("analog_settle", analog_settle),
                            ("watchdog_limit", watchdog_limit)):
            ctx.set(getattr(dut, port), value)
        # The operands are held from the cycle before the start (the start checks are
        # registered, docs/solve-timing.md).
        await ctx.tick()
        ctx.set(dut.start, 1)
        if abort_at == 0:
            ctx.set(dut.abort, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        ctx.set(dut.abort, 0)
        cycles = 1
        while not ctx.get(dut.done):
            assert ctx.get(dut.busy), f"busy low before done at cycle {cycles}"
            if abort_at == cycles:
                ctx.set(dut.abort, 1)
            await ctx.tick()
            ctx.set(dut.abort, 0)
            cycles += 1
            assert cycles < max_cycles, "no done: the sequencer hangs"
        error = ctx.get(dut.error)
        await ctx.tick()
        assert not ctx.get(dut.busy), "busy still high the cycle after done"
        return Outcome(cycles, error)

    def result(self, ctx, col: int) -> tuple[int, int]:
        word = ctx.get(self.results.data[col])
        return word.code, word.over_range

    def assert_safe(self, ctx) -> None:
        assert driven_afe_members(ctx, self.dut.afe, self.params) == {}, \
            "AFE outputs not at their idle value after done"
        assert self.afe.dacs_at_zero_volts(), \
            f"DACs not at the zero-volt code: outputs {self.afe.dac_output}"


def expected_codes(params, rhs, gain, gain_shift, offset, row_mask, cols) -> list[tuple[int, int]]:
    """Independent noise-free expectation: the linear map on the masked rhs, clipped."""
    enabled = np.array([(row_mask >> r) & 1 for r in range(params.rows)], dtype=np.int64)
    raw = offset + ((np.asarray(rhs, dtype=np.int64) * enabled) @ gain >> gain_shift)
    full = 2 ** params.adc_bits - 1
    return [(int(min(max(raw[c], 0), full)), int(raw[c] > full or raw[c] < 0)) for c in cols]


CONFIGS = {
    # name: (params, rows, cols, avg_log2, dac_settle, analog_settle, latency, busy, mode)
    "small-basic": (SMALL, [0, 3, 7], [1, 4], 0, 2, 3, 1, 3, AFEMode.SOLVE),
    "small-avg4-zero-settle": (SMALL, [2, 5, 11, 15], [0, 2, 5], 2, 0, 0, 2, 4, AFEMode.MVM),
    "small-all-free": (SMALL, range(16), range(6), 1, 5, 1, 1, 1, AFEMode.SOLVE_FREE),
    "default-all": (BuildParams(), range(64), range(10), 0, 4, 10, 3, 7, AFEMode.SOLVE),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_solve_results_sequencing_and_exact_cycle_count(name):
    params, rows, cols, avg_log2, dac_settle, analog_settle, latency, busy, mode = CONFIGS[name]
    rng = np.random.default_rng(7)
    rhs = rng.integers(0, 256, params.rows)
    gain = rng.integers(0, 4, (params.rows, params.total_cols))
    offset = rng.integers(0, 20, params.total_cols)
    gain_shift = 4 if params.rows <= 16 else 6
    bench = Bench(params, rhs, adc_latency=latency, adc_busy_cycles=busy, gain=gain,
                  gain_shift=gain_shift, offset=offset)
    row_mask, col_mask = mask(rows), mask(cols)
    outcomes = []

    async def testbench(ctx):
        outcomes.append(await bench.solve(
            ctx, mode=mode, row_mask=row_mask, col_mask=col_mask, avg_log2=avg_log2,
            dac_settle=dac_settle, analog_settle=analog_settle))
        bench.assert_safe(ctx)
        outcomes.append([bench.result(ctx, c) for c in range(params.total_cols)])

    bench.run(testbench)
    outcome, stored = outcomes
    afe = bench.afe
    assert outcome.error == ErrorCode.NONE
    expected_cycles = solve_cycles(rows=len(rows), cols=len(cols), avg_log2=avg_log2,
                                   dac_settle=dac_settle, analog_settle=analog_settle,
                                   adc_cycles=latency + busy)
    assert outcome.cycles == expected_cycles, \
        f"solve took {outcome.cycles} cycles, formula says {expected_cycles}"

    # Results: enabled columns hold the linear map of the masked rhs; others untouched.
    expected = expected_codes(params, rhs, gain, gain_shift, offset, row_mask, cols)
    assert [stored[c] for c in cols] == expected
    untouched = [c for c in range(params.total_cols) if c not in cols]
    assert all(stored[c] == (SENTINEL["code"], 1) for c in untouched)

    # DAC load: enabled rows only, ascending, one per cycle, their rhs codes; then 0 V.
    load = afe.dac_writes[:len(rows)]
    assert [(r, code) for _, r, code in load] == [(r, int(rhs[r])) for r in rows]
    assert [cycle for cycle, _, _ in load] == list(range(load[0][0], load[0][0] + len(rows)))
    assert [(r, code) for _, r, code in afe.dac_writes[len(rows):]] == \
        [(r, params.dac_zero_code) for r in rows]
    load_ldac, zero_ldac = afe.ldac_cycles
    assert load_ldac == load[-1][0] + 1

    # Settling: loop closes dac_settle cycles after the ldac cycle, first conversion
    # analog_settle cycles after that; conversions back to back; mux/switches/mode right.
    (loop_rise,) = afe.loop_rise_cycles
    assert loop_rise - load_ldac - 1 == dac_settle
    conversions = afe.conversions
    assert len(conversions) == len(cols) * 2 ** avg_log2
    assert conversions[0].cycle - loop_rise == analog_settle
    assert [c.cycle - conversions[0].cycle for c in conversions] == \
        [k * (latency + busy + 1) for k in range(len(conversions))]
    assert [c.mux for c in conversions] == [c for c in cols for _ in range(2 ** avg_log2)]
    assert {(c.mode, c.loop, c.row_en, c.col_en) for c in conversions} == \
        {(mode.value, 1, row_mask, col_mask)}
    assert afe.violations == []


def test_cycle_formula_by_hand_and_argument_checks():
    # 2*3 + 4 + 2 + 3 + (2 columns * 2 samples) * (4 + 1)
    assert solve_cycles(rows=3, cols=2, avg_log2=1, dac_settle=2, analog_settle=3,
                        adc_cycles=4) == 35
    with pytest.raises(ValueError, match=r"^rows must be an integer >= 1, got 0$"):
        solve_cycles(rows=0, cols=2, avg_log2=1, dac_settle=2, analog_settle=3, adc_cycles=4)
    with pytest.raises(ValueError, match=r"^adc_cycles must be an integer >= 2, got 1$"):
        solve_cycles(rows=1, cols=2, avg_log2=1, dac_settle=2, analog_settle=3, adc_cycles=1)


def run_script(avg_log2: int, cols, script) -> tuple[list[tuple[int, int]], int]:
    """One solve whose ADC answers come from ``script``: (stored results, over-range count)."""
    bench = Bench(SMALL, [0] * SMALL.rows, script=script)
    results = []

    async def testbench(ctx):
        results.append(await bench.solve(ctx, row_mask=1, col_mask=mask(cols),
                                         avg_log2=avg_log2))
        results.append([bench.result(ctx, c) for c in cols])
        results.append(ctx.get(bench.dut.over_range_count))

    bench.run(testbench)
    outcome, stored, count = results
    assert outcome.error == ErrorCode.NONE
    assert bench.afe.violations == []
    return stored, count


@pytest.mark.parametrize("avg_log2, samples, expected", [
    (0, [7], 7),
    (1, [3, 4], 4),            # 3.5 rounds up
    (1, [2, 2], 2),
    (2, [0, 0, 0, 1], 0),      # 0.25 rounds down
    (2, [0, 0, 0, 2], 1),      # 0.5 rounds up
    (2, [1, 1, 1, 2], 1),      # 1.25
    (2, [1, 2, 2, 2], 2),      # 1.75
    (3, [1023] * 8, 1023),     # full scale stays in range
])
def test_averaging_is_round_half_up_of_the_sum(avg_log2, samples, expected):
    stored, count = run_script(avg_log2, [2], [(s, False) for s in samples])
    assert stored == [(expected, 0)]
    assert count == 0


def test_over_range_flag_is_ored_over_samples_and_counted():
    script = ([(100, False), (1023, True), (100, False), (100, False)]     # column 0: one ovr
              + [(5, False)] * 4                                         # column 1: clean
              + [(0, True), (0, True), (0, False), (1, False)])          # column 3: two ovr
    stored, count = run_script(2, [0, 1, 3], script)
    assert stored == [((100 * 3 + 1023 + 2) >> 2, 1), (5, 0), (0, 1)]
    assert count == 3


def test_noisy_averaging_matches_the_golden_rounding():
    rng = np.random.default_rng(11)
    gain = rng.integers(0, 4, (SMALL.rows, SMALL.total_cols))
    bench = Bench(SMALL, rng.integers(0, 256, SMALL.rows), gain=gain, gain_shift=4,
                  offset=np.full(SMALL.total_cols, 40), noise_amplitude=9,
                  rng=np.random.default_rng(3))
    cols = [0, 1, 2, 3, 4, 5]
    stored = []

    async def testbench(ctx):
        outcome = await bench.solve(ctx, row_mask=0xFFFF, col_mask=mask(cols), avg_log2=3)
        assert outcome.error == ErrorCode.NONE
        stored.extend(bench.result(ctx, c) for c in cols)

    bench.run(testbench)
    samples = np.array([c.code for c in bench.afe.conversions]).reshape(len(cols), 8)
    golden = (samples.sum(axis=1) + 4) >> 3
    assert [code for code, _ in stored] == golden.tolist()
    assert len(set(samples[0])) > 1, "noise did not vary the samples: test proves nothing"


def test_clipped_columns_flag_over_range():
    gain = np.zeros((SMALL.rows, SMALL.total_cols), dtype=np.int64)
    gain[:, 0] = 50      # far above full scale
    gain[:, 1] = 1       # 8 rows x 200 = 1600, also above full scale (1023)
    bench = Bench(SMALL, [200] * SMALL.rows, gain=gain, gain_shift=0)
    stored = []

    async def testbench(ctx):
        await bench.solve(ctx, row_mask=0xFF, col_mask=0b11, avg_log2=1)
        stored.extend([bench.result(ctx, 0), bench.result(ctx, 1),
                       ctx.get(bench.dut.over_range_count)])

    bench.run(testbench)
    assert stored == [(1023, 1), (1023, 1), 4]


BAD_COMMANDS = {
    "idle-mode": (dict(mode=AFEMode.IDLE), ErrorCode.UNKNOWN_OPCODE),
    "read-cell-mode": (dict(mode=AFEMode.READ_CELL), ErrorCode.UNKNOWN_OPCODE),
    "no-rows": (dict(row_mask=0), ErrorCode.BAD_DIMENSION),
    "no-cols": (dict(col_mask=0), ErrorCode.BAD_DIMENSION),
    "avg-too-large": (dict(avg_log2=9), ErrorCode.BAD_AVERAGING),
    "zero-watchdog": (dict(watchdog_limit=0), ErrorCode.BAD_TIMING),
    "priority": (dict(mode=AFEMode.CAL, row_mask=0, avg_log2=15), ErrorCode.UNKNOWN_OPCODE),
}


@pytest.mark.parametrize("name", BAD_COMMANDS)
def test_bad_parameters_report_the_error_and_change_nothing(name):
    changes, error = BAD_COMMANDS[name]
    params = BuildParams(rows=16, cols=4, avg_max_log2=8)
    gain = np.full((params.rows, params.total_cols), 9)
    bench = Bench(params, [100] * params.rows, gain=gain)
    seen = []

    async def testbench(ctx):
        # A valid solve first, so there are counters and results that must survive.
        first = await bench.solve(ctx, row_mask=0b11, col_mask=0b1)
        count = ctx.get(bench.dut.over_range_count)
        before = ([bench.result(ctx, c) for c in range(params.total_cols)],
                  len(bench.afe.dac_writes), len(bench.afe.conversions),
                  len(bench.afe.ldac_cycles))
        command = dict(row_mask=0b11, col_mask=0b1) | changes
        outcome = await bench.solve(ctx, **command)
        after = ([bench.result(ctx, c) for c in range(params.total_cols)],
                 len(bench.afe.dac_writes), len(bench.afe.conversions),
                 len(bench.afe.ldac_cycles))
        seen.extend([first, count, outcome, before, after, ctx.get(bench.dut.over_range_count)])
        bench.assert_safe(ctx)

    bench.run(testbench)
    first, count, outcome, before, after, count_after = seen
    assert first.error == ErrorCode.NONE and count == 1
    assert outcome == Outcome(cycles=1, error=error)
    assert after == before, "a rejected command touched the AFE or the results"
    assert count_after == count



def test_start_checks_see_the_operands_of_the_cycle_before_the_start():
    # The checks are registered (docs/synthesis.md, E8): a column mask that becomes 0 only in
    # the start cycle is not refused, one that is 0 the cycle before and valid in the start
    # cycle is. Both drivers hold their operands, so neither case occurs in the controller.
    bench = Bench(SMALL, [100] * SMALL.rows)
    seen = []

    async def start_with(ctx, before: int, at_start: int) -> ErrorCode:
        dut = bench.dut
        for port, value in (("mode", AFEMode.SOLVE), ("row_mask", 1), ("avg_log2", 0),
                            ("dac_settle", 2), ("analog_settle", 3), ("watchdog_limit", 100)):
            ctx.set(getattr(dut, port), value)
        ctx.set(dut.col_mask, before)
        await ctx.tick()
        ctx.set(dut.col_mask, at_start)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        while not ctx.get(dut.done):
            await ctx.tick()
        error = ErrorCode(ctx.get(dut.error))
        await ctx.tick()
        return error

    async def testbench(ctx):
        seen.append(await start_with(ctx, before=0, at_start=1))
        seen.append(await start_with(ctx, before=1, at_start=0))

    bench.run(testbench)
    assert seen[0] == ErrorCode.BAD_DIMENSION
    assert seen[1] == ErrorCode.NONE

@pytest.mark.parametrize("fault", ["never_busy", "stuck_busy"])
def test_adc_watchdog_timeout_recovers_to_a_safe_state(fault):
    bench = Bench(SMALL, [300] * SMALL.rows, adc_fault=fault,
                  gain=np.ones((SMALL.rows, SMALL.total_cols), dtype=np.int64))
    seen = []
    limit = 20

    async def testbench(ctx):
        seen.append(await bench.solve(ctx, row_mask=0b111, col_mask=0b11,
                                      watchdog_limit=limit))
        bench.assert_safe(ctx)

    bench.run(testbench)
    (outcome,) = seen
    assert outcome.error == ErrorCode.ADC_TIMEOUT
    # operands in cycle 0, start in cycle 1, load 3 rows (4 cycles), ldac, 2 + 3 settle
    # cycles, then the strobe (first_conversion counts from the start)
    first_conversion = 1 + (3 + 1) + 1 + 2 + 3
    assert [c.cycle - 1 for c in bench.afe.conversions] == [first_conversion]
    # timeout seen limit cycles after the strobe, then rows zero writes, ldac, done
    assert outcome.cycles == first_conversion + limit + SMALL.rows + 2
    assert bench.afe.ldac_cycles[-1] == bench.afe.dac_writes[-1][0] + 1
    assert [row for _, row, _ in bench.afe.dac_writes[-SMALL.rows:]] == list(range(SMALL.rows))


@pytest.mark.parametrize("adc_cycles, error", [(12, ErrorCode.NONE),
                                               (13, ErrorCode.ADC_TIMEOUT)])
def test_watchdog_limit_is_the_longest_accepted_conversion(adc_cycles, error):
    bench = Bench(SMALL, [1] * SMALL.rows, adc_latency=2, adc_busy_cycles=adc_cycles - 2)
    seen = []

    async def testbench(ctx):
        seen.append(await bench.solve(ctx, row_mask=1, col_mask=1, watchdog_limit=12))
        bench.assert_safe(ctx)

    bench.run(testbench)
    assert seen[0].error == error


def test_abort_from_every_cycle_of_a_solve_exits_safely_then_solves_again():
    rng = np.random.default_rng(5)
    rhs = rng.integers(0, 256, SMALL.rows)
    gain = rng.integers(0, 4, (SMALL.rows, SMALL.total_cols))
    bench = Bench(SMALL, rhs, gain=gain, gain_shift=3, adc_latency=1, adc_busy_cycles=2)
    command = dict(row_mask=0b1011, col_mask=0b100010, avg_log2=1, dac_settle=2,
                   analog_settle=2)
    total = solve_cycles(rows=3, cols=2, avg_log2=1, dac_settle=2, analog_settle=2,
                         adc_cycles=3)
    seen = []

    async def testbench(ctx):
        for abort_at in range(1, total):   # every busy cycle before the done cycle
            outcome = await bench.solve(ctx, abort_at=abort_at, **command)
            seen.append((abort_at, outcome.error, outcome.cycles))
            bench.assert_safe(ctx)
            assert not ctx.get(bench.dut.busy)
        final = await bench.solve(ctx, **command)
        seen.append(("final", final.error, final.cycles))
        seen.append([bench.result(ctx, c) for c in (1, 5)])

    bench.run(testbench)
    *aborted, final, stored = seen
    for abort_at, error, cycles in aborted:
        assert error == ErrorCode.ABORTED, f"abort at cycle {abort_at} gave {error}"
        # the safe exit starts the cycle after the abort: rows zero writes, ldac, done
        assert cycles == abort_at + SMALL.rows + 2, f"abort at cycle {abort_at}"
    assert final[1:] == (ErrorCode.NONE, total)
    assert stored == expected_codes(SMALL, rhs, gain, 3, np.zeros(6, dtype=np.int64),
                                    0b1011, [1, 5])
    assert bench.afe.violations == []


def test_abort_in_the_start_cycle_is_ignored():
    bench = Bench(SMALL, [1] * SMALL.rows)
    seen = []

    async def testbench(ctx):
        seen.append(await bench.solve(ctx, row_mask=1, col_mask=1, abort_at=0))

    bench.run(testbench)
    assert seen[0].error == ErrorCode.NONE


def test_constructor_rejects_anything_but_build_params():
    with pytest.raises(TypeError, match=r"^params must be a BuildParams, got 64$"):
        SolveSequencer(64)


@pytest.mark.parametrize("params", [BuildParams(), BuildParams(rows=16, cols=4)],
                         ids=["default", "small"])
def test_converts_to_verilog(params):
    text = verilog.convert(SolveSequencer(params), name="solve_sequencer")
    assert "module solve_sequencer" in text
    assert f"output [{params.rows - 1}:0] afe__row_en" in text
    assert "input afe__adc_busy" in text


def test_readout_code_equals_the_model_correction_with_the_offset_and_the_clamp():
    """Stage 2 of the corrected readout (E37: one rounding add with the op-amp offset folded
    into its constant, the clamp as a sign-extension test) equals model.calibration.correct_code,
    saturating both ways."""
    from amaranth.hdl import Signal, signed
    from anmf.hdl.solve_sequencer import readout_code, readout_rounding
    from anmf.model import calibration as cal
    bits = 10
    ob = cal.offset_bits(bits, bits)
    product = Signal(signed(60))
    subtract = Signal(signed(ob))
    code, saturated = readout_code(product, readout_rounding(subtract), bits)
    m = Module()
    code_out, saturated_out = Signal(bits), Signal()
    m.d.comb += [code_out.eq(code), saturated_out.eq(saturated)]
    rng = np.random.default_rng(5)
    cases = [(int(rng.integers(0, 2 ** bits)),
              cal.Coefficient(int(rng.integers(-800, 800)), int(rng.integers(2 ** 14, 2 ** 16)), True),
              int(rng.integers(-2 ** (ob - 1), 2 ** (ob - 1)))) for _ in range(400)]
    cases += [(0, cal.Coefficient(2 ** (ob - 1) - 1, 2 ** 16 - 1, True), 2 ** (ob - 1) - 1),   # extremes
              (2 ** bits - 1, cal.Coefficient(-2 ** (ob - 1), 2 ** 16 - 1, True), -2 ** (ob - 1)),
              (2 ** bits - 1, cal.IDENTITY, 0), (0, cal.IDENTITY, 0), (2 ** (bits - 1), cal.IDENTITY, 24)]
    seen = []

    async def testbench(ctx):
        for value, coefficient, offset in cases:
            deviation = (value - (1 << (bits - 1))) << cal.FRAC_BITS
            ctx.set(product, (deviation - coefficient.offset) * coefficient.gain)
            ctx.set(subtract, offset)
            seen.append((ctx.get(code_out), bool(ctx.get(saturated_out))))

    sim = Simulator(m)
    sim.add_testbench(testbench)
    sim.run()
    expected = [cal.correct_code(value, coefficient, bits, offset) for value, coefficient, offset in cases]
    assert seen == expected
    assert {code for code, flag in expected if flag} == {0, 2 ** bits - 1}, "saturates both ways"
    assert expected[-3:] == [(2 ** bits - 1, False), (0, False), (2 ** (bits - 1) - 1, False)]


@pytest.mark.parametrize("mode", [AFEMode.SOLVE, AFEMode.MVM])
def test_corrected_readout_uses_each_columns_words_with_the_fastest_conversions(mode):
    """cal_enable.adc and .opamp with very different words per column, the fastest ADC and no
    averaging (columns back to back): each result is model.calibration.correct_code of its
    own column's raw code with its own ADC word and (SOLVE only) op-amp offset. The product
    and offset * gain are registered apart (docs/synthesis.md E56); a stale word fails this."""
    from anmf.hdl.calibrator import calibration_memory_depth
    from anmf.model import calibration as cal
    params = SMALL
    bits = params.adc_bits
    adc_words = [cal.Coefficient(100 * 16, round(1.9 * cal.GAIN_ONE), True),
                 cal.Coefficient(-60 * 16, round(0.6 * cal.GAIN_ONE), True),
                 cal.Coefficient(410, round(cal.GAIN_ONE / 1.05), True),
                 cal.Coefficient(-300 * 16 + 7, round(1.3 * cal.GAIN_ONE), True),
                 cal.Coefficient(5, round(1.7 * cal.GAIN_ONE), True),
                 cal.Coefficient(-9, round(0.8 * cal.GAIN_ONE), True)]
    opamp_offsets = [37, -250, 0, 1000, -3, 77]

    def pack(coefficient):
        return {"offset": coefficient.offset, "gain": coefficient.gain,
                "valid": int(coefficient.valid)}
    depth = calibration_memory_depth(params)
    words = [pack(cal.IDENTITY)] * depth
    for col, coefficient in enumerate(adc_words):
        words[col] = pack(coefficient)
        words[params.total_cols + params.rows + col] = pack(cal.Coefficient(opamp_offsets[col], 0, True))
    rng = np.random.default_rng(56)
    rhs = rng.integers(0, 256, params.rows)
    gain = rng.integers(0, 4, (params.rows, params.total_cols))
    offset = rng.integers(0, 300, params.total_cols)
    bench = Bench(params, rhs, coefficient_words=words, adc_latency=1, adc_busy_cycles=1,
                  gain=gain, gain_shift=4, offset=offset)
    cols = range(params.total_cols)
    row_mask, col_mask = mask(range(params.rows)), mask(cols)
    seen = []

    async def testbench(ctx):
        ctx.set(bench.dut.cal_enable, {"adc": 1, "dac": 0, "opamp": 1})
        seen.append(await bench.solve(ctx, mode=mode, row_mask=row_mask, col_mask=col_mask,
                                      dac_settle=0, analog_settle=0))
        seen.append([bench.result(ctx, c) for c in cols])

    bench.run(testbench)
    outcome, stored = seen
    assert outcome.error == ErrorCode.NONE
    raw = expected_codes(params, rhs, gain, 4, offset, row_mask, cols)
    expected = []
    for col, (code, over) in enumerate(raw):
        subtract = opamp_offsets[col] if mode != AFEMode.MVM else 0
        corrected, clamped = cal.correct_code(code, adc_words[col], bits, subtract)
        expected.append((corrected, int(over or clamped)))
    assert stored == expected
    assert len({code for code, _ in expected}) == len(expected), "distinct results"
