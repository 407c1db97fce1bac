"""RUN_NMF from the host in co-simulation on Icarus and Verilator (testbench/bench_run_nmf.py):
run_nmf over AXI4-Lite on the controller RTL with the AFE model bound to it, bit for bit
against the golden model (buffers, counters, done cycle), the relative error against the float
reference ANLS, and an abort that leaves whole factors.

The bench uses the scenarios' build (the same Verilog): it shares their build folder, so the
Verilator model is compiled once for both."""
from __future__ import annotations

import xml.etree.ElementTree as ElementTree

import pytest

from anmf.hdl.controller import TOP_MODULE, verilog_text
from anmf.hdl.params import BuildParams
from anmf.testbench.bench_run_nmf import SUITE_TESTS, run_nmf_env
from anmf.testbench.bench_scenarios import DEFAULT_OPTIONS
from anmf.testbench.simulators import SIMULATORS, run_bench

PARAMS = BuildParams(**DEFAULT_OPTIONS["params"])


@pytest.mark.parametrize("sim", SIMULATORS)
def test_run_nmf(sim: str) -> None:
    results = run_bench(sim=sim, verilog=verilog_text(PARAMS), toplevel=TOP_MODULE,
                        test_module="anmf.testbench.bench_run_nmf", name="scenarios",
                        testcase=list(SUITE_TESTS), extra_env=run_nmf_env())
    cases = ElementTree.parse(results).getroot().iter("testcase")
    outcome = {case.get("name"): [child.tag for child in case
                                  if child.tag in ("failure", "error")] for case in cases}
    assert sorted(outcome) == sorted(SUITE_TESTS), f"cocotb ran {sorted(outcome)}"
    failed = [name for name, problems in outcome.items() if problems]
    assert not failed, f"cocotb RUN_NMF tests failed: {failed} (log: {results.parent})"
