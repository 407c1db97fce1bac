"""The ANLS sequencer (hdl/anls_sequencer.py) in amaranth.sim, driving a real SolveSequencer and
WriteVerifyProgrammer, with the code-level AFE model (model/afe.py) answering the AFE port:
RUN_NMF's buffers, counts and done cycle equal the golden model's bit for bit (masks, dead
components, skipped right-hand sides, over-range retries); refusals; EXPONENT_RANGE; abort in
every phase leaves the last committed half-step; timeouts; and RUN_NMF through the controller
over AXI4-Lite."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module, Value
from amaranth.lib import memory, wiring
from amaranth.sim import Simulator

from anmf.hdl.afe import AFESignature
from anmf.hdl.anls_sequencer import (ANLSSequencer, NMFPhase, NMFStep, highest_set_index,
                                     program_command_signature, solve_command_signature)
from anmf.hdl.codes import ErrorCode
from anmf.hdl.params import BuildParams
from anmf.hdl.programmer import WriteVerifyProgrammer
from anmf.hdl.solve_sequencer import SolveSequencer, result_layout
from anmf.model.afe import AnalogFrontEnd
from anmf.model.config import preset
from anmf.model.formats import (PICOSECONDS_PER_SECOND, ProgramSettings, exponent_word,
                                fixed_from_factor, mask_words, r_codes, window_codes,
                                word_exponent)
from anmf.model.golden import Error, GoldenController

PARAMS = BuildParams(rows=8, cols=3, spare=1, avg_max_log2=2)
CONTROLS = ("mode", "loop", "row_en", "col_en", "cell_row", "cell_col", "cal_ref_sel")


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


class ModelAFE:
    """The AFE model answering an AFE port in amaranth.sim (one Python step per cycle), with the
    timing of the cocotb binding (testbench/afe_binding.py): every action at the start of its
    strobe cycle, the controls applied first; adc_busy rises L cycles after the start and falls
    B cycles later with the data; prog_done is high P cycles after the fire cycle."""

    def __init__(self, afe: AnalogFrontEnd, port: Any, params: BuildParams,
                 probes: dict[str, Any] | None = None, *, hang_adc: bool = False) -> None:
        self.afe, self.port, self.params = afe, port, params
        self.outputs = [p.name for p in AFESignature(params).ports() if p.flow == wiring.Out]
        self.probes = probes or {}
        self.hang_adc = hang_adc
        self.cycle = 0
        self.conversions = 0
        self.pulses = 0
        self.seen: dict[str, list[int]] = {name: [] for name in self.probes}

    def time_s(self, cycle: int) -> float:
        return cycle * self.afe.period_ps / PICOSECONDS_PER_SECOND

    async def process(self, ctx) -> None:
        afe, port = self.afe, self.port
        probe_names = list(self.probes)
        signals = [Value.cast(getattr(port, n)) for n in self.outputs] + \
            [Value.cast(v) for v in self.probes.values()]
        applied = tuple(0 for _ in CONTROLS)
        adc_count, adc_phase, answer = 0, "idle", (0, False)
        prog_count = 0
        async for _clk, _rst, *values in ctx.tick().sample(*signals):
            s = dict(zip(self.outputs, values[:len(self.outputs)]))
            for name, value in zip(probe_names, values[len(self.outputs):]):
                if value:
                    self.seen[name].append(self.cycle)
            cycle, self.cycle = self.cycle, self.cycle + 1
            t = self.time_s(cycle)
            controls = tuple(s[name] for name in CONTROLS)
            if controls != applied:
                afe.apply_controls(t, **dict(zip(CONTROLS, controls)))
                applied = controls
            if s["dac_we"]:
                afe.write_dac(s["dac_addr"], s["dac_data"])
            if s["dac_ldac"]:
                afe.load_dacs(t)
            if s["adc_start"]:
                assert adc_phase == "idle", f"cycle {cycle}: adc_start during a conversion"
                answer = afe.convert(s["adc_mux"], t)
                self.conversions += 1
                adc_phase, adc_count = "latency", afe.adc_latency_cycles
            if adc_phase == "latency":
                adc_count -= 1
                if adc_count == 0 and not self.hang_adc:
                    ctx.set(port.adc_busy, 1)
                    adc_phase, adc_count = "busy", afe.adc_busy_cycles
            elif adc_phase == "busy":
                adc_count -= 1
                if adc_count == 0:
                    ctx.set(port.adc_busy, 0)
                    ctx.set(port.adc_data, answer[0])
                    ctx.set(port.adc_ovr, int(answer[1]))
                    adc_phase = "idle"
            if prog_count:
                prog_count -= 1
                if prog_count == 0:
                    ctx.set(port.prog_done, 1)
            else:
                ctx.set(port.prog_done, 0)
            if s["prog_fire"]:
                assert prog_count == 0, f"cycle {cycle}: prog_fire during a pulse"
                afe.pulse(s["cell_row"], s["cell_col"], s["prog_polarity"], s["prog_amplitude"],
                          s["prog_width"], t)
                self.pulses += 1
                prog_count = afe.pulse_cycles(s["prog_width"]) - 1
                if prog_count == 0:
                    ctx.set(port.prog_done, 1)


class Harness(Elaboratable):
    """ANLSSequencer + SolveSequencer + WriteVerifyProgrammer around their buffers, the blocks'
    AFE outputs OR-ed onto one AFE port (as the controller does)."""

    def __init__(self, params: BuildParams, init: dict[str, list[int]]) -> None:
        p = params
        self.params = params
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
        wiring.connect(m, anls.target, mem["target"].write_port())
        wiring.connect(m, prog.target, mem["target"].read_port())
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
    phases: list[tuple[int, int, int]]   # (cycle, step, phase) at each change


def run_rtl(problem: Problem, run: Run, afe: AnalogFrontEnd, *, abort_when=None,
            hang_adc: bool = False, ports: dict[str, int] | None = None,
            max_cycles: int = 200_000) -> Outcome:
    """Simulate RUN_NMF from the problem's buffers; ``abort_when(step, phase, cycle)`` raises
    abort for one cycle the first time it returns True."""
    params = problem.params
    dut = Harness(params, problem.init())
    anls = dut.anls
    binding = ModelAFE(afe, dut.afe, params, probes={
        "start": anls.start, "done": anls.done, "retry": anls.retry,
        "unresolved": anls.unresolved, "iteration_done": anls.iteration_done}, hang_adc=hang_adc)
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
            state = (ctx.get(anls.step).value, ctx.get(anls.phase).value)
            if not phases or phases[-1][1:] != state:
                phases.append((cycle, *state))
            if not aborted and abort_when(*state, cycle):
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

    sim.add_testbench(testbench)
    sim.run()
    assert seen["busy_after"] == 0
    assert all(v == 0 for v in seen["afe_idle"].values()), seen["afe_idle"]
    start = binding.seen["start"][0]
    return Outcome(seen["error"], seen["detail"], start, binding.seen["done"][0] - start,
                   seen["buffers"], len(binding.seen["retry"]), len(binding.seen["unresolved"]),
                   len(binding.seen["iteration_done"]), binding.conversions, binding.pulses,
                   seen["phases"])


def golden_for(problem: Problem, afe: AnalogFrontEnd) -> GoldenController:
    golden = GoldenController(problem.params, afe.twin())
    problem.load(golden)
    return golden


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
    golden = golden_for(problem, afe)
    rtl = run_rtl(problem, run, afe)
    expected = run.golden(golden, problem, afe.period_ps * rtl.start_cycle / PICOSECONDS_PER_SECOND)
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
