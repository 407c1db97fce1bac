"""REFINE and the over-range retry of host solves in co-simulation on Icarus and Verilator
(testbench/bench_refine.py): the host driver over AXI4-Lite on the controller RTL with the
deterministic rram-3bit AFE model bound to it, bit for bit and cycle for cycle against the
golden model.

The bench uses the scenarios' build (the same Verilog): it shares their build folder, so the
Verilator model is compiled once for both."""
from __future__ import annotations

import xml.etree.ElementTree as ElementTree

import pytest

from anmf.hdl.controller import TOP_MODULE, verilog_text
from anmf.hdl.params import BuildParams
from anmf.testbench.bench_refine import SUITE_TESTS, refine_env
from anmf.testbench.bench_scenarios import DEFAULT_OPTIONS
from anmf.testbench.simulators import SIMULATORS, run_bench

PARAMS = BuildParams(**DEFAULT_OPTIONS["params"])


@pytest.mark.parametrize("sim", SIMULATORS)
def test_refine(sim: str) -> None:
    results = run_bench(sim=sim, verilog=verilog_text(PARAMS), toplevel=TOP_MODULE,
                        test_module="anmf.testbench.bench_refine", name="scenarios",
                        testcase=list(SUITE_TESTS), extra_env=refine_env())
    cases = ElementTree.parse(results).getroot().iter("testcase")
    outcome = {case.get("name"): [child.tag for child in case
                                  if child.tag in ("failure", "error")] for case in cases}
    assert sorted(outcome) == sorted(SUITE_TESTS), f"cocotb ran {sorted(outcome)}"
    failed = [name for name, problems in outcome.items() if problems]
    assert not failed, f"cocotb REFINE tests failed: {failed} (log: {results.parent})"
