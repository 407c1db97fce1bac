"""The ANLS sequencer (hdl/anls_sequencer.py) in amaranth.sim, driving a real SolveSequencer and
WriteVerifyProgrammer, with the code-level AFE model (model/afe.py) answering the AFE port:
RUN_NMF's buffers, counts and done cycle equal the golden model's bit for bit (masks, dead
components, skipped right-hand sides, over-range retries); refusals; EXPONENT_RANGE; abort in
every phase leaves the last committed half-step; timeouts; and RUN_NMF through the controller
over AXI4-Lite."""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Fragment, Module, Value
from amaranth.lib import memory, wiring
from amaranth.sim import Simulator

from anmf.hdl.afe import AFESignature
from anmf.hdl.anls_sequencer import (ANLSSequencer, NMFPhase, NMFStep, highest_set_index,
                                     program_command_signature, solve_command_signature)
from anmf.hdl.codes import ErrorCode, Opcode
from anmf.hdl.controller import Controller
from anmf.hdl.params import BuildParams
from anmf.hdl.programmer import WriteVerifyProgrammer
from anmf.hdl.registers import build_register_map
from anmf.hdl.regmap_export import host_constants
from anmf.hdl.solve_sequencer import SolveSequencer, result_layout
from anmf.model.afe import AnalogFrontEnd
from anmf.model.config import preset
from anmf.model.formats import (PICOSECONDS_PER_SECOND, ProgramSettings, exponent_word,
                                fixed_from_factor, mask_words, nmf_commit_cycles,
                                nmf_prepare_cycles, r_codes, window_codes, word_exponent)
from anmf.model.golden import Error, GoldenController

import test_controller as tc   # the controller bench and its helpers (module import: no test collected)
from model_afe import ModelAFE
from start_contract import start_after_operand_change

PARAMS = BuildParams(rows=8, cols=3, spare=1, avg_max_log2=2)


def exact(message: str) -> str:
    return "^" + re.escape(message) + "$"


def model_afe(params: BuildParams = PARAMS, *, input_gain: float | None = None,
              seed: int = 0) -> AnalogFrontEnd:
    """The rram-3bit AFE, deterministic, with a 30 ns ADC (4 cycles) to keep simulations short."""
    config = preset("rram-3bit").replace(seed=seed)
    config = config.replace(adc=config.adc.replace(conversion_time_s=30e-9))
    if input_gain is not None:
        config = config.replace(circuit=config.circuit.replace(input_gain=input_gain))
    return AnalogFrontEnd.from_build_params(config, params, deterministic=True)


class Harness(Elaboratable):
    """ANLSSequencer + SolveSequencer + WriteVerifyProgrammer around their buffers, the blocks'
    AFE outputs OR-ed onto one AFE port (as the controller does)."""

    def __init__(self, params: BuildParams, init: dict[str, list[int]], *,
                 transparent_target: bool = True) -> None:
        p = params
        self.params = params
        self.transparent_target = transparent_target  # as the register file's TARGET window
        self.anls = ANLSSequencer(p)
        self.seq = SolveSequencer(p)
        self.prog = WriteVerifyProgrammer(p)
        self.afe = AFESignature(p).flip().create()
        depth = {"r": p.rows * p.rows, "mask": ANLSSequencer.mask_depth(p), "w": p.rows * p.cols,
                 "h": p.cols * p.rows, "w_exp": p.rows + p.cols, "h_exp": p.rows + p.cols,
                 "target": p.cell_count, "fault_map": p.rows, "results": p.total_cols}
        shape = {"r": p.r_bits, "mask": 32, "w": p.mantissa_bits, "h": p.mantissa_bits,
                 "w_exp": p.exp_bits, "h_exp": p.exp_bits, "target": p.adc_bits,
                 "fault_map": p.total_cols, "results": result_layout(p)}
        self.memories = {name: memory.Memory(shape=shape[name], depth=depth[name],
                                             init=init.get(name, []))
                         for name in depth}

    def elaborate(self, platform) -> Module:
        m = Module()
        anls, seq, prog, mem = self.anls, self.seq, self.prog, self.memories
        m.submodules.anls, m.submodules.seq, m.submodules.prog = anls, seq, prog
        for name, memory_ in mem.items():
            m.submodules[name] = memory_
        wiring.connect(m, anls.r, mem["r"].read_port())
        wiring.connect(m, anls.mask, mem["mask"].read_port())
        for name in ("w", "h", "w_exp", "h_exp"):
            buffer = getattr(anls, name)
            wiring.connect(m, buffer.read, mem[name].read_port())
            wiring.connect(m, buffer.write, mem[name].write_port())
        target_write = mem["target"].write_port()
        wiring.connect(m, anls.target, target_write)
        wiring.connect(m, prog.target, mem["target"].read_port(
            transparent_for=(target_write,) if self.transparent_target else ()))
        wiring.connect(m, prog.fault_map, mem["fault_map"].write_port(granularity=1))
        wiring.connect(m, anls.rhs, seq.rhs)
        results = mem["results"].write_port()
        m.d.comb += [results.addr.eq(seq.result.addr), results.data.eq(seq.result.data),
                     results.en.eq(seq.result.en),
                     anls.result.addr.eq(seq.result.addr), anls.result.data.eq(seq.result.data),
                     anls.result.en.eq(seq.result.en)]
        for command, block, signature in ((anls.solve, seq, solve_command_signature(self.params)),
                                          (anls.program, prog,
                                           program_command_signature(self.params))):
            for name, member in signature.members.items():
                if member.flow == wiring.Out:
                    m.d.comb += getattr(block, name).eq(getattr(command, name))
                else:
                    m.d.comb += getattr(command, name).eq(getattr(block, name))
        for port in AFESignature(self.params).ports():
            outer = Value.cast(getattr(self.afe, port.name))
            members = [Value.cast(getattr(block.afe, port.name)) for block in (seq, prog)]
            if port.flow == wiring.Out:
                m.d.comb += outer.eq(members[0] | members[1])
            else:
                m.d.comb += [member.eq(outer) for member in members]
        return m


@dataclass
class Problem:
    """A RUN_NMF problem in buffer form, for the harness and the golden model alike."""

    params: BuildParams
    m: int
    n: int
    k: int
    r: np.ndarray                 # (m, n) codes
    observed: np.ndarray          # (m, n) bool
    w_mantissa: np.ndarray        # (m, k)
    w_col_exp: np.ndarray         # (k,)
    w_row_exp: np.ndarray | None = None

    def init(self) -> dict[str, list[int]]:
        p = self.params
        r = np.zeros((p.rows, p.rows), dtype=np.int64)
        r[:self.m, :self.n] = self.r
        w = np.zeros((p.rows, p.cols), dtype=np.int64)
        w[:self.m, :self.k] = self.w_mantissa
        w_exp = np.zeros(p.rows + p.cols, dtype=np.int64)
        if self.w_row_exp is not None:
            w_exp[:self.m] = self.w_row_exp
        w_exp[p.rows:p.rows + self.k] = self.w_col_exp
        return {"r": r.ravel().tolist(), "mask": mask_words(self.observed, p.rows).tolist(),
                "w": w.ravel().tolist(), "w_exp": exponent_word(w_exp, p.exp_bits).tolist()}

    def load(self, golden: GoldenController) -> None:
        golden.load_nmf(self.r, self.observed, self.w_mantissa, self.w_col_exp, self.w_row_exp)


def make_problem(params: BuildParams = PARAMS, *, m: int = 8, n: int = 8, k: int = 2,
                 seed: int = 1, missing: float = 0.15) -> Problem:
    rng = np.random.default_rng(seed)
    truth = rng.random((m, k)) @ rng.random((k, n))
    codes, _ = r_codes(truth, params.r_bits)
    observed = rng.random((m, n)) >= missing
    mantissa, col_exp = fixed_from_factor(rng.random((m, k)) + 0.2, params.mantissa_bits)
    return Problem(params, m, n, k, codes, observed, mantissa, col_exp)


@dataclass
class Run:
    """Operands of one RUN_NMF (the ANLS sequencer's ports and the golden model's arguments)."""

    iterations: int = 2
    range_retries: int = 8
    dac_settle: int = 3
    analog_settle: int = 20
    watchdog_limit: int = 200
    settings: ProgramSettings = field(default_factory=lambda: ProgramSettings(
        tolerance=6, amp_start=100, amp_step=5, amp_max=200, pulse_width=10, pulse_budget=40,
        avg_log2=0, read_settle=16))
    window: tuple[int, int] | None = None

    def window_for(self, afe: AnalogFrontEnd) -> tuple[int, int]:
        if self.window is not None:
            return self.window
        return window_codes(g_offset_s=afe.config.circuit.g_offset_s,
                            g_max_s=afe.config.device.g_max_s,
                            full_scale_s=afe.read_full_scale_s, bits=afe.adc_bits)

    def ports(self, problem: Problem, afe: AnalogFrontEnd) -> dict[str, int]:
        s = self.settings
        g_offset, g_span = self.window_for(afe)
        return dict(m=problem.m, n=problem.n, k=problem.k, iterations=self.iterations,
                    range_retries=self.range_retries, g_offset=g_offset, g_span=g_span,
                    avg_log2=s.avg_log2, dac_settle=self.dac_settle,
                    analog_settle=self.analog_settle, watchdog_limit=self.watchdog_limit,
                    tolerance=s.tolerance, amp_start=s.amp_start, amp_step=s.amp_step,
                    amp_max=s.amp_max, pulse_width=s.pulse_width, pulse_budget=s.pulse_budget,
                    read_settle=s.read_settle)

    def golden(self, golden: GoldenController, problem: Problem, start_s: float,
               **changes: Any) -> Any:
        g_offset, g_span = self.window_for(golden.afe)
        arguments = dict(m=problem.m, n=problem.n, k=problem.k, iterations=self.iterations,
                         settings=self.settings, dac_settle=self.dac_settle,
                         analog_settle=self.analog_settle, g_offset=g_offset, g_span=g_span,
                         range_retries=self.range_retries, watchdog_limit=self.watchdog_limit,
                         start_s=start_s)
        return golden.run_nmf(**(arguments | changes))


@dataclass
class Outcome:
    """What the RTL run left: buffers, status, strobes and cycles."""

    error: int
    detail: int
    start_cycle: int
    done_cycle: int
    buffers: dict[str, list[int]]
    retries: int
    unresolved: int
    iteration_done: int
    conversions: int
    pulses: int
    #: (cycle, step, phase, rhs_done, iteration) at each change of step, phase or rhs_done
    phases: list[tuple[int, int, int, int, int]]


def run_rtl(problem: Problem, run: Run, afe: AnalogFrontEnd, *, abort_when=None,
            hang_adc: bool = False, ports: dict[str, int] | None = None,
            max_cycles: int = 200_000, transparent_target: bool = True) -> Outcome:
    """Simulate RUN_NMF from the problem's buffers; ``abort_when(step, phase, cycle)`` raises
    abort for one cycle the first time it returns True."""
    params = problem.params
    dut = Harness(params, problem.init(), transparent_target=transparent_target)
    anls = dut.anls
    binding = ModelAFE(afe, dut.afe, params, probes={
        "start": anls.start, "done": anls.done, "retry": anls.retry,
        "unresolved": anls.unresolved, "iteration_done": anls.iteration_done}, hang_adc=hang_adc,
        strict=True)
    sim = Simulator(dut)
    sim.add_clock(afe.period_ps / PICOSECONDS_PER_SECOND)
    sim.add_process(binding.process)
    seen: dict[str, Any] = {}

    async def testbench(ctx):
        for name, value in (ports or run.ports(problem, afe)).items():
            ctx.set(getattr(anls, name), value)
        await ctx.tick()
        ctx.set(anls.start, 1)
        await ctx.tick()
        ctx.set(anls.start, 0)
        phases, aborted = [], abort_when is None
        for cycle in range(max_cycles):
            state = (ctx.get(anls.step).value, ctx.get(anls.phase).value, ctx.get(anls.rhs_done),
                     ctx.get(anls.iteration))
            if not phases or phases[-1][1:] != state:
                phases.append((cycle, *state))
            assert ctx.get(anls.busy), f"cycle {cycle}: busy low before done"
            if not aborted and abort_when(state[0], state[1], cycle):
                ctx.set(anls.abort, 1)
                await ctx.tick()
                ctx.set(anls.abort, 0)
                aborted = True
                continue
            if ctx.get(anls.done):
                break
            await ctx.tick()
        else:
            raise AssertionError(f"RUN_NMF did not finish in {max_cycles} cycles")
        seen.update(error=ctx.get(anls.error).value, detail=ctx.get(anls.error_detail),
                    phases=phases, busy_after=None)
        await ctx.tick()
        seen["busy_after"] = ctx.get(anls.busy)
        seen["buffers"] = {name: [int(ctx.get(mem.data[i])) if name != "results"
                                  else int(ctx.get(Value.cast(mem.data[i])))
                                  for i in range(mem.depth)]
                           for name, mem in dut.memories.items()}
        seen["afe_idle"] = {name: ctx.get(Value.cast(getattr(dut.afe, name)))
                            for name in ("mode", "loop", "row_en", "col_en")}
        seen["afe_idle"]["dacs_off_zero"] = int(any(afe.dac_codes != params.dac_zero_code))

    sim.add_testbench(testbench)
    sim.run()
    assert seen["busy_after"] == 0
    assert all(v == 0 for v in seen["afe_idle"].values()), seen["afe_idle"]
    start = binding.seen["start"][0]
    return Outcome(seen["error"], seen["detail"], start, binding.seen["done"][0] - start,
                   seen["buffers"], len(binding.seen["retry"]), len(binding.seen["unresolved"]),
                   len(binding.seen["iteration_done"]), len(binding.conversions),
                   len(binding.pulses), seen["phases"])


def golden_for(problem: Problem, afe: AnalogFrontEnd) -> GoldenController:
    golden = GoldenController(problem.params, afe.twin())
    problem.load(golden)
    return golden


def run_rtl_and_golden(problem: Problem, run: Run, afe: AnalogFrontEnd) -> tuple[Outcome, Any, GoldenController]:
    """RUN_NMF on the RTL and on the golden model (its twin of ``afe``, started at the RTL's start
    time): (the RTL's outcome, the golden run, the golden controller with its buffers)."""
    golden = golden_for(problem, afe)
    rtl = run_rtl(problem, run, afe)
    return rtl, run.golden(golden, problem, afe.period_ps * rtl.start_cycle / PICOSECONDS_PER_SECOND), golden


def golden_buffers(golden: GoldenController) -> dict[str, list[int]]:
    p = golden.params
    return {"w": golden.nmf_w.ravel().tolist(), "h": golden.nmf_h.ravel().tolist(),
            "w_exp": exponent_word(golden.nmf_w_exp, p.exp_bits).tolist(),
            "h_exp": exponent_word(golden.nmf_h_exp, p.exp_bits).tolist(),
            "target": golden.targets.ravel().tolist(), "fault_map": golden.fault_map.tolist(),
            "results": golden.results.tolist()}


def assert_buffers_equal(rtl: dict[str, list[int]], golden: dict[str, list[int]]) -> None:
    for name, expected in golden.items():
        assert rtl[name] == expected, f"{name}: RTL {rtl[name]} golden {expected}"


# --- bit-exact against the golden model ----------------------------------------------------------

def test_run_nmf_buffers_equal_the_golden_models_bit_for_bit():
    problem = make_problem()
    problem.observed[:, 5] = False          # a column of R with nothing observed: skipped
    problem.r[3, :] = 0                     # a row of R all zero: skipped in the W-step
    run = Run(iterations=2)
    afe = model_afe()
    rtl, expected, golden = run_rtl_and_golden(problem, run, afe)
    assert (rtl.error, expected.error) == (ErrorCode.NONE.value, Error.NONE)
    assert_buffers_equal(rtl.buffers, golden_buffers(golden))
    assert rtl.done_cycle == expected.done_cycle
    assert (rtl.retries, rtl.unresolved, rtl.iteration_done) == \
        (expected.retries, expected.unresolved, 2)
    assert rtl.pulses == expected.pulse_count
    h = np.array(rtl.buffers["h"]).reshape(PARAMS.cols, PARAMS.rows)
    assert not h[:, 5].any(), "nothing observed in column 5: H[:, 5] = 0"
    w = np.array(rtl.buffers["w"]).reshape(PARAMS.rows, PARAMS.cols)
    assert not w[3].any(), "row 3 of R all zero: W[3, :] = 0"
    # Progress: H-step then W-step per iteration, each PREPARE, PROGRAM, SOLVE, COMMIT.
    order = [(step, phase) for _, step, phase, _, _ in rtl.phases]
    assert [key for i, key in enumerate(order) if i == 0 or key != order[i - 1]] == \
        [(NMFStep.H.value, NMFPhase.PREPARE.value), (NMFStep.H.value, NMFPhase.PROGRAM.value),
         (NMFStep.H.value, NMFPhase.SOLVE.value), (NMFStep.H.value, NMFPhase.COMMIT.value),
         (NMFStep.W.value, NMFPhase.PREPARE.value), (NMFStep.W.value, NMFPhase.PROGRAM.value),
         (NMFStep.W.value, NMFPhase.SOLVE.value), (NMFStep.W.value, NMFPhase.COMMIT.value)] * 2 + \
        [(NMFStep.H.value, NMFPhase.IDLE.value)]
    assert_phase_cycles(rtl, problem)
    assert rtl.phases[-1][3:] == (problem.m, 2), "rhs_done and iteration at the end"


def assert_phase_cycles(rtl: Outcome, problem: Problem) -> None:
    """PREPARE and COMMIT take the documented cycles; SOLVE ends with every RHS done."""
    starts = [(cycle, step, phase, done) for cycle, step, phase, done, _ in rtl.phases
              if done == 0 or phase != NMFPhase.SOLVE.value]
    for (cycle, step, phase, _), (next_cycle, *_rest) in zip(starts, starts[1:]):
        rows, count = (problem.m, problem.n) if step == NMFStep.H.value else (problem.n, problem.m)
        if phase == NMFPhase.PREPARE.value:
            assert next_cycle - cycle == nmf_prepare_cycles(rows=rows, k=problem.k)
        if phase == NMFPhase.COMMIT.value:
            assert next_cycle - cycle == nmf_commit_cycles(count=count, k=problem.k) + 1
    commits = [(step, done) for (_, _, before, _, _), (_, step, phase, done, _)
               in zip(rtl.phases, rtl.phases[1:])
               if before == NMFPhase.SOLVE.value and phase == NMFPhase.COMMIT.value]
    assert commits
    for step, done in commits:
        assert done == (problem.n if step == NMFStep.H.value else problem.m)


def test_unequal_sizes_dead_component_and_unresolved_over_range_agree_with_the_golden_model():
    problem = make_problem(m=6, n=8, k=3, seed=4, missing=0.0)
    problem.w_mantissa[:, 1] = 0             # component 1 dead from the start
    run = Run(iterations=1, range_retries=1, analog_settle=40)
    afe = model_afe(input_gain=64.0)         # large outputs: retries, some unresolved
    rtl, expected, golden = run_rtl_and_golden(problem, run, afe)
    assert expected.retries > 0 and expected.unresolved > 0, "the case must exercise both"
    assert rtl.error == ErrorCode.NONE.value and rtl.done_cycle == expected.done_cycle
    assert_buffers_equal(rtl.buffers, golden_buffers(golden))
    assert (rtl.retries, rtl.unresolved, rtl.pulses) == \
        (expected.retries, expected.unresolved, expected.pulse_count)
    h = np.array(rtl.buffers["h"]).reshape(PARAMS.cols, PARAMS.rows)
    assert not h[1].any() and word_exponent(rtl.buffers["h_exp"][PARAMS.rows + 1], 8) == 0
    faults = np.array(rtl.buffers["fault_map"])
    assert not (faults & 0b010).any(), "the dead column is not programmed"
    assert_phase_cycles(rtl, problem)


def test_the_walks_edges_one_rhs_full_rank_three_iterations_agree_with_the_golden_model():
    # The walks' end flags are kept a step ahead (docs/synthesis.md E40): a one-column R (one
    # right-hand side in the H-step, a one-row factor in the W-step), every row of the build and
    # the full rank, over three iterations, end each walk where the golden model's loops do.
    problem = make_problem(m=PARAMS.rows, n=1, k=PARAMS.cols, seed=6, missing=0.0)
    run = Run(iterations=3)
    afe = model_afe()
    rtl, expected, golden = run_rtl_and_golden(problem, run, afe)
    assert rtl.error == ErrorCode.NONE.value and rtl.done_cycle == expected.done_cycle
    assert rtl.iteration_done == 3 and rtl.pulses == expected.pulse_count
    assert_buffers_equal(rtl.buffers, golden_buffers(golden))
    assert_phase_cycles(rtl, problem)


@pytest.mark.parametrize("k, dead", [(1, ()), (2, (0,))], ids=["k1", "k2-first-dead"])
def test_the_last_target_write_meets_the_first_fetch_and_the_fetch_sees_it(k, dead):
    # The TARGET pipeline's last write lands in the programmer's first Fetch-Target cycle; with
    # a one-row factor whose first live column is its last, both are the same cell. The read
    # port is transparent (as the register file's): the RTL agrees with the golden model, which
    # writes every target before programming. Without transparency the fetch reads the stale
    # code (0 after reset) and programs the cell elsewhere: the check below sees it.
    problem = make_problem(m=1, n=4, k=k, seed=3, missing=0.0)
    for column in dead:
        problem.w_mantissa[:, column] = 0
    run = Run(iterations=1)
    afe = model_afe()
    rtl, expected, golden = run_rtl_and_golden(problem, run, afe)
    assert rtl.error == ErrorCode.NONE.value and rtl.done_cycle == expected.done_cycle
    assert rtl.pulses == expected.pulse_count
    assert_buffers_equal(rtl.buffers, golden_buffers(golden))
    stale = run_rtl(problem, run, model_afe(), transparent_target=False)
    assert (stale.pulses, stale.buffers["h"]) != (rtl.pulses, rtl.buffers["h"]), \
        "a non-transparent TARGET read must show the hazard this test guards against"


# --- refusals, exponent range, abort, timeout ------------------------------------------------------

REFUSALS = [
    ({"m": 0}, ErrorCode.BAD_DIMENSION),
    ({"n": PARAMS.rows + 1}, ErrorCode.BAD_DIMENSION),
    ({"k": PARAMS.cols + 1}, ErrorCode.BAD_DIMENSION),
    ({"iterations": 0}, ErrorCode.BAD_DIMENSION),
    ({"avg_log2": 3}, ErrorCode.BAD_AVERAGING),
    ({"tolerance": 1024}, ErrorCode.BAD_TOLERANCE),
    ({"g_span": 0}, ErrorCode.BAD_WINDOW),
    ({"g_offset": 600, "g_span": 425}, ErrorCode.BAD_WINDOW),
    ({"watchdog_limit": 0}, ErrorCode.BAD_TIMING),
    ({"pulse_width": 0}, ErrorCode.BAD_TIMING),
    ({"m": 0, "avg_log2": 3, "watchdog_limit": 0}, ErrorCode.BAD_DIMENSION),   # the order
]


def simulated_harness(problem: Problem) -> tuple[AnalogFrontEnd, Harness, Simulator]:
    """The model AFE, the harness loaded with ``problem`` and its simulator, the AFE model bound."""
    afe = model_afe()
    dut = Harness(PARAMS, problem.init())
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_process(ModelAFE(afe, dut.afe, PARAMS).process)
    return afe, dut, sim


def test_refused_starts_end_in_cycle_one_and_touch_nothing():
    problem = make_problem(m=4, n=4)
    afe = model_afe()
    dut = Harness(PARAMS, problem.init())
    anls = dut.anls
    binding = ModelAFE(afe, dut.afe, PARAMS, strict=True)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_process(binding.process)
    seen = []

    async def testbench(ctx):
        before = [int(ctx.get(dut.memories["w"].data[i])) for i in range(PARAMS.rows * PARAMS.cols)]
        for changes, _ in REFUSALS:
            for name, value in (Run().ports(problem, afe) | changes).items():
                ctx.set(getattr(anls, name), value)
            await ctx.tick()      # the operands are held from the cycle before the start
            ctx.set(anls.start, 1)
            await ctx.tick()
            ctx.set(anls.start, 0)
            seen.append((ctx.get(anls.done), ctx.get(anls.busy), ctx.get(anls.error)))
            await ctx.tick()
            assert not ctx.get(anls.busy)
        after = [int(ctx.get(dut.memories["w"].data[i])) for i in range(PARAMS.rows * PARAMS.cols)]
        assert after == before

    sim.add_testbench(testbench)
    sim.run()
    assert seen == [(1, 1, error) for _, error in REFUSALS]
    assert binding.conversions == binding.pulses == []


def test_start_checks_see_the_operands_of_the_cycle_before_the_start():
    # The checks are registered (docs/synthesis.md, E17): a tolerance that becomes 0 only in the
    # start cycle is not refused (the run starts; aborted here), one that is 0 the cycle before
    # and valid in the start cycle is. The controller holds the operands, so neither occurs there.
    problem = make_problem(m=4, n=4)
    afe, dut, sim = simulated_harness(problem)
    anls = dut.anls
    seen = []

    async def start_with(ctx, before: int, at_start: int) -> tuple[int, ErrorCode]:
        return await start_after_operand_change(ctx, anls, Run().ports(problem, afe), "tolerance", before, at_start)

    async def testbench(ctx):
        valid = Run().ports(problem, afe)["tolerance"]
        seen.append(await start_with(ctx, before=0, at_start=valid))
        seen.append(await start_with(ctx, before=valid, at_start=0))

    sim.add_testbench(testbench)
    sim.run()
    assert seen[0] == (1, ErrorCode.BAD_TOLERANCE), seen
    assert seen[1][1] == ErrorCode.ABORTED and seen[1][0] > 1, seen


def test_an_exponent_out_of_range_ends_before_programming_with_the_component():
    problem = make_problem(m=4, n=4)
    problem.w_col_exp = problem.w_col_exp.copy()
    problem.w_col_exp[1] = 120               # H's exponent for component 1 would be below -128
    run = Run(iterations=1)
    afe = model_afe()
    rtl, expected, golden = run_rtl_and_golden(problem, run, afe)
    assert (rtl.error, rtl.detail) == (ErrorCode.EXPONENT_RANGE.value, 1)
    assert (expected.error, expected.detail) == (Error.EXPONENT_RANGE, 1)
    assert rtl.done_cycle == expected.done_cycle == 1 + nmf_prepare_cycles(rows=4, k=2) + 1
    assert rtl.pulses == rtl.conversions == 0
    assert rtl.buffers["h"] == [0] * (PARAMS.cols * PARAMS.rows)


def test_the_exponent_range_check_passes_exp_low_and_stops_one_below_as_the_golden():
    """E34's check (the new exponent's bits from the exp_bits-bit sign up all equal) at the edge:
    the smallest W column exponent that takes component 1's new exponent below exp_low (found
    by the RTL) is the golden model's edge too."""
    problem = make_problem(m=4, n=4)
    run = Run(iterations=1)
    afe = model_afe()

    def with_exponent(exponent: int) -> Problem:
        changed = replace(problem, w_col_exp=problem.w_col_exp.copy())
        changed.w_col_exp[1] = exponent
        return changed

    def rtl_error(exponent: int) -> int:
        entered = []

        def when(step, phase, cycle):   # abort 3 cycles into PROGRAM: a run past the check
            if (step, phase) == (NMFStep.H.value, NMFPhase.PROGRAM.value):
                entered.append(cycle)
            return len(entered) == 3
        return run_rtl(with_exponent(exponent), run, model_afe(), abort_when=when).error

    low, high = 0, 127          # in range at 0, out at 127 (below): bisect the edge
    assert (rtl_error(low), rtl_error(high)) == (ErrorCode.ABORTED.value, ErrorCode.EXPONENT_RANGE.value)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if rtl_error(middle) == ErrorCode.ABORTED.value else (low, middle)
    outside = run.golden(golden_for(with_exponent(high), afe), with_exponent(high), 0.0)
    assert (outside.error, outside.detail) == (Error.EXPONENT_RANGE, 1), high
    inside = run.golden(golden_for(with_exponent(low), afe), with_exponent(low), 0.0)
    assert inside.error != Error.EXPONENT_RANGE, low


def test_an_abort_anywhere_in_prepare_leaves_nothing_for_the_next_run():
    # Found by the random bench (make regress, seed 2): an abort in Scan-Fold's first cycle left
    # its second-cycle flag set, so the next RUN_NMF folded one cycle short. Abort in each cycle
    # of PREPARE, then run again to the exponent error: it must end in the fresh run's cycle.
    problem = make_problem(m=4, n=4)
    problem.w_col_exp = problem.w_col_exp.copy()
    problem.w_col_exp[1] = 120               # ends with EXPONENT_RANGE after PREPARE
    afe, dut, sim = simulated_harness(problem)
    anls = dut.anls
    fresh_done = 1 + nmf_prepare_cycles(rows=4, k=2) + 1
    seen = []

    async def run(ctx, abort_at: int | None) -> tuple[int, ErrorCode]:
        ctx.set(anls.start, 1)
        await ctx.tick()
        ctx.set(anls.start, 0)
        cycles = 1
        while not ctx.get(anls.done):
            ctx.set(anls.abort, cycles == abort_at)
            await ctx.tick()
            cycles += 1
        ctx.set(anls.abort, 0)
        error = ErrorCode(ctx.get(anls.error))
        await ctx.tick()
        return cycles, error

    async def testbench(ctx):
        for name, value in Run().ports(problem, afe).items():
            ctx.set(getattr(anls, name), value)
        await ctx.tick()
        for abort_at in range(1, fresh_done - 1):
            aborted = await run(ctx, abort_at)
            seen.append((abort_at, aborted, await run(ctx, None)))

    sim.add_testbench(testbench)
    sim.run()
    assert len(seen) == fresh_done - 2
    for abort_at, aborted, again in seen:
        assert aborted[1] == ErrorCode.ABORTED, (abort_at, aborted)
        assert again == (fresh_done, ErrorCode.EXPONENT_RANGE), (abort_at, again)

ABORTS = {
    # name: (step, phase, half-steps the buffers keep)
    "h-prepare": (NMFStep.H, NMFPhase.PREPARE, 0),
    "h-program": (NMFStep.H, NMFPhase.PROGRAM, 0),
    "h-solve": (NMFStep.H, NMFPhase.SOLVE, 0),
    "h-commit": (NMFStep.H, NMFPhase.COMMIT, 1),     # the commit completes first
    "w-solve": (NMFStep.W, NMFPhase.SOLVE, 1),
}


@pytest.mark.parametrize("name", ABORTS)
def test_abort_in_each_phase_leaves_the_last_committed_half_step(name):
    step, phase, committed = ABORTS[name]
    problem = make_problem(m=4, n=5, k=2, seed=3)
    run = Run(iterations=1, settings=replace(Run().settings, tolerance=12))   # fewer pulses
    afe = model_afe()
    abort_cycle = []

    def when(step_now, phase_now, cycle):
        # Abort a few cycles into the phase, so that a block is running when there is one.
        if (step_now, phase_now) == (step.value, phase.value):
            abort_cycle.append(cycle)
        return len(abort_cycle) == 3

    rtl = run_rtl(problem, run, afe, abort_when=when)
    assert rtl.error == ErrorCode.ABORTED.value
    golden = golden_for(problem, afe)
    run.golden(golden, problem, 0.0, stop_after=committed)
    expected = golden_buffers(golden)
    for buffer in ("w", "h", "w_exp", "h_exp"):
        assert rtl.buffers[buffer] == expected[buffer], buffer
    # A block aborted in cycle a has done by a + ROWS + 2; RUN_NMF's done follows a cycle later.
    latency = rtl.start_cycle + rtl.done_cycle - (abort_cycle[-1] + rtl.start_cycle)
    bound = PARAMS.rows + 3 if phase in (NMFPhase.PROGRAM, NMFPhase.SOLVE) else \
        nmf_commit_cycles(count=problem.n, k=problem.k) + 2
    assert latency <= bound + 2, f"abort took {latency} cycles"


def test_an_adc_that_never_answers_ends_in_adc_timeout_with_the_buffers_kept():
    problem = make_problem(m=4, n=4)
    run = Run(iterations=1, watchdog_limit=50)
    afe = model_afe()
    rtl = run_rtl(problem, run, afe, hang_adc=True)
    assert rtl.error == ErrorCode.ADC_TIMEOUT.value
    init = problem.init()
    assert rtl.buffers["w"] == init["w"] and rtl.buffers["w_exp"] == init["w_exp"]
    assert rtl.buffers["h"] == [0] * (PARAMS.cols * PARAMS.rows)
    # Prepare, the programmer's first read times out: its safe exit, then RUN_NMF's Done.
    assert rtl.done_cycle == 1 + nmf_prepare_cycles(rows=4, k=2) + \
        (3 + run.settings.read_settle + 50 + 1 + PARAMS.rows + 1) + 1


# --- parts ---------------------------------------------------------------------------------------

def test_highest_set_index_is_the_leading_one():
    from amaranth.hdl import Signal
    vector = Signal(11)
    index = Signal(4)
    m = Module()
    m.d.comb += index.eq(highest_set_index(vector))
    sim = Simulator(m)
    values = [0, 1, 2, 3, 5, 8, 1023, 1024, 2047, 0b10000000001]

    async def testbench(ctx):
        for value in values:
            ctx.set(vector, value)
            assert ctx.get(index) == max(value.bit_length() - 1, 0), value

    sim.add_testbench(testbench)
    sim.run()


def test_constructor_validates_its_parameters():
    with pytest.raises(TypeError, match=exact("params must be a BuildParams, got {'rows': 8}")):
        ANLSSequencer({"rows": 8})
    with pytest.raises(ValueError, match=exact("dac_bits must be at least 2 for RUN_NMF (a sign bit "
                                               "and a magnitude), got 1")):
        ANLSSequencer(BuildParams(dac_bits=1))
    sequencer = ANLSSequencer(PARAMS)
    assert sequencer.params is PARAMS and ANLSSequencer.mask_depth(PARAMS) == 2
    assert len(sequencer.r.addr) == 6 and len(sequencer.w.read.data) == PARAMS.adc_bits - 1
    Fragment.get(sequencer, None)   # elaborates


# --- RUN_NMF through the controller, over AXI4-Lite ------------------------------------------------

@dataclass
class NMFBench(tc.Bench):
    """test_controller's bench (AXI host helpers, cycle monitor), with the AFE model when ``model``
    is given instead of the stand-in."""

    model: AnalogFrontEnd | None = None

    def __post_init__(self) -> None:
        if self.model is None:
            super().__post_init__()
            return
        self.dut = Controller(self.params)
        self.regs = host_constants(build_register_map(self.params))
        self.afe = ModelAFE(self.model, self.dut.afe, self.params,
                            probes={"nmf_start": self.dut.anls.start}, strict=True)
        self.trace = []
        self.sim = Simulator(self.dut)
        self.sim.add_clock(self.model.period_ps / PICOSECONDS_PER_SECOND)
        self.sim.add_process(self.afe.process)
        self.sim.add_process(self._monitor)

    async def load(self, ctx, problem: Problem, run: Run, afe: AnalogFrontEnd | None = None) -> None:
        """The buffers and every register RUN_NMF uses."""
        init = problem.init()
        for window, key in (("NMF_R", "r"), ("NMF_MASK", "mask"), ("NMF_W", "w"), ("NMF_W_EXP", "w_exp")):
            await self.write_words(ctx, window, init[key])
        s = run.settings
        g_offset, g_span = run.window_for(afe) if afe is not None else run.window
        regs = self.regs
        await self.setup(ctx, TIMING=1 << s.avg_log2, WATCHDOG=run.watchdog_limit,
                         DAC_SETTLE=run.dac_settle, ANALOG_SETTLE=run.analog_settle,
                         READ_SETTLE=s.read_settle, PROGRAM_TOLERANCE=s.tolerance,
                         PROGRAM_PULSE=s.pulse_width, PROGRAM_PULSES=s.pulse_budget,
                         PROGRAM_AMPLITUDE=regs.PROGRAM_AMPLITUDE.pack(start=s.amp_start, step=s.amp_step),
                         PROGRAM_AMPLITUDE_MAX=s.amp_max,
                         NMF_SIZE=regs.NMF_SIZE.pack(m=problem.m, n=problem.n, k=problem.k),
                         NMF_ITERATIONS=regs.NMF_ITERATIONS.pack(count=run.iterations,
                                                                 range_retries=run.range_retries),
                         NMF_WINDOW_BASE=g_offset, NMF_WINDOW_SPAN=g_span)

    async def progress_until(self, ctx, step: NMFStep, phase: NMFPhase, max_polls: int = 5000) -> None:
        for _ in range(max_polls):
            progress = await self.read(ctx, "NMF_PROGRESS")
            if (progress["step"], progress["phase"]) == (step.value, phase.value):
                return
        raise AssertionError(f"RUN_NMF never reached {step.name} {phase.name}")


def test_run_nmf_over_the_bus_equals_the_golden_model_with_counters_progress_and_interrupts():
    problem = make_problem(m=6, n=5, k=2, seed=8, missing=0.2)
    run = Run(iterations=1)
    afe = model_afe()
    bench = NMFBench(PARAMS, model=afe)
    regs = bench.regs
    seen: dict[str, Any] = {}

    async def testbench(ctx):
        await bench.load(ctx, problem, run, afe)
        await bench.write_words(ctx, "RHS", [700] * PARAMS.rows)
        await bench.write(ctx, "NMF_IRQ", regs.NMF_IRQ.pack(progress_enable=1))
        await bench.write(ctx, "IRQ_ENABLE", 0)
        start = await bench.start(ctx, Opcode.RUN_NMF)
        progress = []
        while True:
            status = await bench.read(ctx, "STATUS")
            if status["done"] and not status["busy"]:
                break
            progress.append(await bench.read(ctx, "NMF_PROGRESS"))
        seen.update(status=status, start=start, progress=progress, irq=ctx.get(bench.dut.irq))
        for name in ("NMF_PROGRESS", "NMF_IRQ", "IRQ_STATUS", "SOLVE_COUNT", "PULSE_COUNT", "OVER_RANGE_COUNT",
                     "FAILED_CELL_COUNT", "NMF_RETRY_COUNT", "NMF_UNRESOLVED_COUNT"):
            seen[name] = await bench.read(ctx, name)
        for window in ("NMF_W", "NMF_H", "NMF_W_EXP", "NMF_H_EXP", "TARGET", "FAULT_MAP", "RESULTS", "RHS"):
            seen[window] = await bench.read_words(ctx, window)
        await bench.write(ctx, "NMF_IRQ", regs.NMF_IRQ.pack(progress=1, progress_enable=1))
        seen["irq_cleared"] = ctx.get(bench.dut.irq)

    bench.run(testbench)
    golden = golden_for(problem, afe)
    expected = run.golden(golden, problem,
                          afe.period_ps * bench.afe.seen["nmf_start"][0] / PICOSECONDS_PER_SECOND)
    assert seen["status"] == tc.status_word(ErrorCode.NONE)
    assert bench.status_cycles(seen["start"]) == expected.done_cycle + tc.STATUS_DELAY
    words = golden_buffers(golden)
    for window, key in (("NMF_W", "w"), ("NMF_H", "h"), ("NMF_W_EXP", "w_exp"), ("NMF_H_EXP", "h_exp"),
                        ("TARGET", "target"), ("FAULT_MAP", "fault_map"), ("RESULTS", "results")):
        assert seen[window] == words[key], window
    assert seen["RHS"] == [700] * PARAMS.rows, "RUN_NMF leaves the host's RHS buffer alone"
    assert seen["SOLVE_COUNT"]["count"] == expected.solves > 0
    assert seen["PULSE_COUNT"]["count"] == expected.pulse_count > 0
    assert seen["OVER_RANGE_COUNT"]["count"] == expected.over_range_samples
    assert seen["FAILED_CELL_COUNT"]["count"] == expected.failed_cells
    assert seen["NMF_RETRY_COUNT"]["count"] == expected.retries
    assert seen["NMF_UNRESOLVED_COUNT"]["count"] == expected.unresolved
    assert seen["NMF_PROGRESS"] == {"iteration": 1, "step": NMFStep.H.value, "phase": NMFPhase.IDLE.value,
                                    "rhs_done": problem.m}
    phases = {(p["step"], p["phase"]) for p in seen["progress"]}
    assert {(NMFStep.H.value, NMFPhase.SOLVE.value), (NMFStep.W.value, NMFPhase.PROGRAM.value)} <= phases
    assert max(p["rhs_done"] for p in seen["progress"]) >= problem.n - 1
    assert seen["NMF_IRQ"]["progress"] == 1 and seen["irq"] == 1, "the iteration raised the progress interrupt"
    assert seen["IRQ_STATUS"]["done"] == 1 and seen["irq_cleared"] == 0


def test_run_nmf_over_the_bus_solves_right_hand_sides_observed_last_as_the_golden_model():
    # The controller registers the solve sequencer's row mask, and the sequencer checks it (and
    # whether it has one row) as it was the cycle before its start; RUN_NMF's mask gets its last
    # entry in Scan-Last, so RHS-Hold keeps it two cycles ahead of Solve-Start (docs/synthesis.md
    # E46). Right-hand sides observed only in their last entry, or in it and one more, are the
    # ones a mask a cycle late would refuse (BAD_DIMENSION) or walk as a single row.
    problem = make_problem(m=6, n=5, k=2, seed=9, missing=0.0)
    observed = np.ones((problem.m, problem.n), dtype=bool)
    observed[:, 0] = np.arange(problem.m) == problem.m - 1          # H-step RHS 0: last entry only
    observed[:, 1] = np.isin(np.arange(problem.m), (2, problem.m - 1))
    observed[0] = np.arange(problem.n) == problem.n - 1             # W-step RHS 0: last entry only
    observed[1] = np.isin(np.arange(problem.n), (3, problem.n - 1))
    problem.observed = observed
    run = Run(iterations=1)
    afe = model_afe()
    bench = NMFBench(PARAMS, model=afe)
    seen: dict[str, Any] = {}

    async def testbench(ctx):
        await bench.load(ctx, problem, run, afe)
        start = await bench.start(ctx, Opcode.RUN_NMF)
        seen.update(status=await bench.wait_done(ctx), start=start)
        for window in ("NMF_W", "NMF_H", "NMF_W_EXP", "NMF_H_EXP"):
            seen[window] = await bench.read_words(ctx, window)

    bench.run(testbench)
    golden = golden_for(problem, afe)
    expected = run.golden(golden, problem,
                          afe.period_ps * bench.afe.seen["nmf_start"][0] / PICOSECONDS_PER_SECOND)
    assert expected.error == Error.NONE
    assert seen["status"] == tc.status_word(ErrorCode.NONE)
    assert bench.status_cycles(seen["start"]) == expected.done_cycle + tc.STATUS_DELAY
    words = golden_buffers(golden)
    for window, key in (("NMF_W", "w"), ("NMF_H", "h"), ("NMF_W_EXP", "w_exp"), ("NMF_H_EXP", "h_exp")):
        assert seen[window] == words[key], window
    h = np.array(seen["NMF_H"]).reshape(PARAMS.cols, PARAMS.rows)
    assert h[:problem.k, 0].any(), "the H-step solved the right-hand side observed in its last entry"


NMF_REFUSALS = {
    # name: (register writes, error, detail register)
    "m-beyond-rows": ({"NMF_SIZE": {"m": PARAMS.rows + 1, "n": 4, "k": 2}}, ErrorCode.BAD_DIMENSION, "NMF_SIZE"),
    "k-zero": ({"NMF_SIZE": {"m": 4, "n": 4, "k": 0}}, ErrorCode.BAD_DIMENSION, "NMF_SIZE"),
    "k-beyond-cols": ({"NMF_SIZE": {"m": 4, "n": 4, "k": PARAMS.cols + 1}}, ErrorCode.BAD_DIMENSION, "NMF_SIZE"),
    "n-wraps-not": ({"NMF_SIZE": {"m": 4, "n": 4096 - 4, "k": 2}}, ErrorCode.BAD_DIMENSION, "NMF_SIZE"),
    "iterations-zero": ({"NMF_ITERATIONS": {"count": 0}}, ErrorCode.BAD_DIMENSION, "NMF_ITERATIONS"),
    "averaging": ({"TIMING": 3}, ErrorCode.BAD_AVERAGING, "TIMING"),
    "tolerance": ({"PROGRAM_TOLERANCE": 0}, ErrorCode.BAD_TOLERANCE, "PROGRAM_TOLERANCE"),
    "window-empty": ({"NMF_WINDOW_SPAN": 0}, ErrorCode.BAD_WINDOW, "NMF_WINDOW_SPAN"),
    "window-past-codes": ({"NMF_WINDOW_BASE": 1000, "NMF_WINDOW_SPAN": 25}, ErrorCode.BAD_WINDOW,
                          "NMF_WINDOW_BASE"),
    "window-base-beyond": ({"NMF_WINDOW_BASE": 2047}, ErrorCode.BAD_WINDOW, "NMF_WINDOW_BASE"),
    "watchdog": ({"WATCHDOG": 0}, ErrorCode.BAD_TIMING, "WATCHDOG"),
    "dac-settle": ({"DAC_SETTLE": 0}, ErrorCode.BAD_TIMING, "DAC_SETTLE"),
    "analog-settle": ({"ANALOG_SETTLE": 0}, ErrorCode.BAD_TIMING, "ANALOG_SETTLE"),
    "read-settle": ({"READ_SETTLE": 0}, ErrorCode.BAD_TIMING, "READ_SETTLE"),
    "pulse-width": ({"PROGRAM_PULSE": 0}, ErrorCode.BAD_TIMING, "PROGRAM_PULSE"),
    # ROW_MASK and COL_ENABLE are not RUN_NMF's: an NMF check is the one reported.
    "masks-not-used": ({"ROW_MASK": 0, "COL_ENABLE": 0, "NMF_ITERATIONS": {"count": 0}}, ErrorCode.BAD_DIMENSION,
                       "NMF_ITERATIONS"),
}


def test_refused_run_nmf_reports_the_register_and_changes_nothing():
    bench = tc.Bench(PARAMS)
    regs = bench.regs
    good = {"NMF_SIZE": {"m": 4, "n": 4, "k": 2}, "NMF_ITERATIONS": {"count": 1, "range_retries": 8},
            "NMF_WINDOW_BASE": 518, "NMF_WINDOW_SPAN": 442}
    seen = {}

    async def testbench(ctx):
        for name, (changes, _, _) in NMF_REFUSALS.items():
            values = {key: getattr(regs, key).pack(**fields) if isinstance(fields, dict) else fields
                      for key, fields in (good | changes).items()}
            await bench.setup(ctx, **values)
            status, start = await bench.command(ctx, Opcode.RUN_NMF)
            seen[name] = (status, bench.status_cycles(start))

    bench.run(testbench)
    for name, (_, error, register) in NMF_REFUSALS.items():
        assert seen[name] == (tc.status_word(error, getattr(regs, register).offset), tc.REFUSAL_STATUS_DELAY), name
    assert bench.afe.dac_writes == [] and bench.afe.conversions == [] and bench.afe.pulses == []


def test_abort_and_soft_reset_during_run_nmf_over_the_bus():
    p = PARAMS
    problem = make_problem(m=4, n=4, k=2, seed=2)
    run = Run(iterations=2, range_retries=0, window=(518, 442),
              settings=replace(Run().settings, pulse_budget=3))
    rng = np.random.default_rng(3)
    # The stand-in's solve reads offset + (gain-weighted DAC codes >> 5): positive, in range.
    bench = tc.Bench(p, dict(cells=np.full((p.rows, p.total_cols), 700), pulse_divisor=4,
                             gain=rng.integers(0, 3, (p.rows, p.total_cols)), gain_shift=5,
                             offset=np.full(p.total_cols, 600)))
    seen = {}

    async def testbench(ctx):
        await NMFBench.load(bench, ctx, problem, run)
        await bench.write(ctx, "NMF_IRQ", bench.regs.NMF_IRQ.pack(progress_enable=1))
        await bench.start(ctx, Opcode.RUN_NMF)
        await NMFBench.progress_until(bench, ctx, NMFStep.W, NMFPhase.SOLVE)
        await bench.write(ctx, "CONTROL", abort=1)
        seen["aborted"] = await bench.wait_done(ctx)
        seen["progress"] = await bench.read(ctx, "NMF_PROGRESS")
        seen["irq"] = await bench.read(ctx, "NMF_IRQ")
        for window in ("NMF_W", "NMF_W_EXP"):
            seen[window] = await bench.read_words(ctx, window)
        seen["h_written"] = any(await bench.read_words(ctx, "NMF_H"))
        bench.assert_safe(ctx)
        # Soft reset while RUN_NMF programs: nothing reported, busy until the safe exit is over.
        await bench.write(ctx, "IRQ_STATUS", 0b111)
        await bench.start(ctx, Opcode.RUN_NMF)
        await NMFBench.progress_until(bench, ctx, NMFStep.H, NMFPhase.PROGRAM)
        await bench.write(ctx, "CONTROL", soft_reset=1)
        seen["reset"] = await bench.read(ctx, "STATUS")
        while (await bench.read(ctx, "STATUS"))["busy"]:
            pass
        seen["after_reset"] = (await bench.read(ctx, "STATUS"), await bench.read(ctx, "IRQ_STATUS"),
                               await bench.read(ctx, "NMF_RETRY_COUNT"), await bench.read(ctx, "PULSE_COUNT"))
        bench.assert_safe(ctx)
        seen["nop"], _ = await bench.command(ctx, Opcode.NOP)

    bench.run(testbench)
    assert seen["aborted"] == tc.status_word(ErrorCode.ABORTED)
    assert seen["progress"]["iteration"] == 0 and seen["progress"]["phase"] == NMFPhase.IDLE.value
    assert seen["irq"]["progress"] == 0, "no iteration completed"
    init = problem.init()
    assert seen["NMF_W"] == init["w"] and seen["NMF_W_EXP"] == init["w_exp"], \
        "aborted in the W-step: W keeps its values"
    assert seen["h_written"], "the H-step before it committed"
    assert seen["reset"]["busy"] == 1 and seen["reset"]["done"] == 0
    status, irq_status, retries, pulses = seen["after_reset"]
    assert status == tc.status_word(ErrorCode.NONE, done=0)
    assert irq_status == {"done": 0, "error": 0, "over_range": 0}
    assert retries == {"count": 0} and pulses["count"] == 0, "counters cleared, nothing counted after"
    assert seen["nop"] == tc.status_word(ErrorCode.NONE)
