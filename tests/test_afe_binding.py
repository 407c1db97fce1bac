"""Co-simulation: controller RTL against the AFE model through the cocotb binding, on
Icarus and Verilator, checked bit for bit against the golden model
(testbench/bench_afe_binding.py).

Two DUTs: the controller top level driven over AXI4-Lite, and
:class:`SolveProgramHarness`, the solve sequencer and the programmer side by side with
their block ports exposed (``seq_<port>`` / ``prog_<port>``; AFE outputs ORed as in the
controller; buffers as flat ports with the blocks' read latency), which also runs what
the controller refuses (ANALOG_SETTLE = 0: a sample in the cycle the loop closes).
"""
from __future__ import annotations

import json

import pytest
from amaranth.back import verilog
from amaranth.hdl import Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from anmf.hdl.afe import AFESignature
from anmf.hdl.controller import TOP_MODULE, verilog_text
from anmf.hdl.params import BuildParams
from anmf.hdl.programmer import WriteVerifyProgrammer
from anmf.hdl.solve_sequencer import SolveSequencer
from anmf.testbench.simulators import SIMULATORS, run_bench

#: Small array, short conversions: each cocotb run takes a few seconds.
PARAMS = BuildParams(rows=8, cols=4, spare=1, avg_max_log2=2)
BENCH = {
    "dut": "harness",
    "params": {"rows": 8, "cols": 4, "spare": 1, "avg_max_log2": 2},
    # rram-3bit (IR drop, offsets, gain errors, INL/DNL, finite gain, device variation,
    # stuck cells, pulse noise); a 200 ns conversion keeps the runs short.
    "afe": {"preset": "rram-3bit", "seed": 11, "adc": {"conversion_time_s": 200e-9}},
    "clock_hz": 100e6,
    "seed": 5,
}
#: Block ports that the harness turns into flat buffers instead of passing through.
_BUFFER_PORTS = ("afe", "rhs", "result", "target", "fault_map")
#: The solve sequencer's and the programmer's calibration ports: left undriven inside the harness
#: (not top-level inputs a simulator would leave at z), so cal_enable and cal_adc are 0 (no correction).
_CALIBRATION_PORTS = ("cal_enable", "coeff", "opamp_coeff", "cal_adc", "coeff_channel", "coeff_word")


class SolveProgramHarness(wiring.Component):
    """SolveSequencer and WriteVerifyProgrammer sharing one AFE port, with flat buffers:
    ``rhs`` (In, row r's DAC code at bits [r*DAC_BITS +: DAC_BITS]), ``targets`` (In, cell
    address a at [a*ADC_BITS +: ADC_BITS]), ``results`` (Out, column c's result word at
    [c*(ADC_BITS+1) +: ADC_BITS+1]), ``fault_map`` (Out, row r's word at
    [r*TOTAL_COLS +: TOTAL_COLS])."""

    def __init__(self, params: BuildParams):
        self._params = params
        self.sequencer = SolveSequencer(params)
        self.programmer = WriteVerifyProgrammer(params)
        members: dict[str, wiring.Member] = {}
        for prefix, block in self._blocks():
            for name, member in block.signature.members.items():
                if name not in _BUFFER_PORTS + _CALIBRATION_PORTS:
                    members[f"{prefix}_{name}"] = member
        p = params
        members.update({
            "rhs": In(p.rows * p.dac_bits),
            "targets": In(p.cell_count * p.adc_bits),
            "results": Out(p.total_cols * p.result_bits),
            "fault_map": Out(p.rows * p.total_cols),
            "afe": Out(AFESignature(p)),
        })
        super().__init__(members)

    def _blocks(self):
        return (("seq", self.sequencer), ("prog", self.programmer))

    def elaborate(self, platform) -> Module:
        p = self._params
        m = Module()
        m.submodules.sequencer = seq = self.sequencer
        m.submodules.programmer = prog = self.programmer
        for prefix, block in self._blocks():
            for name, member in block.signature.members.items():
                if name in _BUFFER_PORTS + _CALIBRATION_PORTS:
                    continue
                outer, inner = getattr(self, f"{prefix}_{name}"), getattr(block, name)
                if member.flow == In:
                    m.d.comb += inner.eq(outer)
                else:
                    m.d.comb += outer.eq(inner)
        for port in AFESignature(p).ports():
            outer = Value.cast(getattr(self.afe, port.name))
            seq_member = Value.cast(getattr(seq.afe, port.name))
            prog_member = Value.cast(getattr(prog.afe, port.name))
            if port.flow == wiring.Out:
                m.d.comb += outer.eq(seq_member | prog_member)
            else:
                m.d.comb += [seq_member.eq(outer), prog_member.eq(outer)]
        # Buffers with the 1-cycle read latency of a lib.memory read port.
        with m.If(seq.rhs.en):
            m.d.sync += seq.rhs.data.eq(self.rhs.word_select(seq.rhs.addr, p.dac_bits))
        with m.If(prog.target.en):
            m.d.sync += prog.target.data.eq(self.targets.word_select(prog.target.addr,
                                                                     p.adc_bits))
        results = Signal(p.total_cols * p.result_bits)
        with m.If(seq.result.en):
            m.d.sync += results.word_select(seq.result.addr, p.result_bits).eq(
                Value.cast(seq.result.data))
        fault_map = Signal(p.rows * p.total_cols)
        for row in range(p.rows):
            for col in range(p.total_cols):
                with m.If(prog.fault_map.en[col] & (prog.fault_map.addr == row)):
                    m.d.sync += fault_map[row * p.total_cols + col].eq(prog.fault_map.data[col])
        m.d.comb += [self.results.eq(results), self.fault_map.eq(fault_map)]
        return m


def test_harness_exposes_every_afe_member_and_block_port() -> None:
    text = verilog.convert(SolveProgramHarness(PARAMS), name="afe_binding_top")
    for port in AFESignature(PARAMS).ports():
        assert f" afe__{port.name};" in text, f"port afe__{port.name} missing"
    for name in ("seq_start", "seq_done", "seq_error", "prog_start", "prog_pulse_count", "rhs",
                 "targets", "results", "fault_map"):
        assert f" {name};" in text, f"port {name} missing"


@pytest.mark.parametrize("dut", ["harness", "controller"])
@pytest.mark.parametrize("sim", SIMULATORS)
def test_rtl_against_afe_model_equals_golden(sim: str, dut: str) -> None:
    if dut == "harness":
        toplevel = "afe_binding_harness"
        text = verilog.convert(SolveProgramHarness(PARAMS), name=toplevel)
    else:
        toplevel = TOP_MODULE
        text = verilog_text(PARAMS)
    results = run_bench(sim=sim, verilog=text, toplevel=toplevel,
                        test_module="anmf.testbench.bench_afe_binding", name=f"afe_binding-{dut}",
                        extra_env={"ANMF_AFE_BENCH": json.dumps({**BENCH, "dut": dut})})
    text = results.read_text()
    assert text.count("<testcase") == 3, f"expected 3 cocotb tests in {results}"
    assert "<failure" not in text and "<error" not in text, f"cocotb failures in {results}"
