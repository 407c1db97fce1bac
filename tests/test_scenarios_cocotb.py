"""Co-simulation scenarios on Icarus and Verilator (testbench/bench_scenarios.py): the host
driver over AXI4-Lite on the controller RTL with the AFE model bound to it, checked by the
scoreboards against float NNLS and the write-verify tolerance, host-driven ANLS against the
float reference ANLS, and bit for bit against the same host code on ModelDriver.

One simulator run per simulator executes every scenario (SUITE_TESTS), so the simulator and
Python start once; the assertion names the cocotb tests that failed."""
from __future__ import annotations

import xml.etree.ElementTree as ElementTree

import pytest

from anmf.hdl.controller import TOP_MODULE, verilog_text
from anmf.hdl.params import BuildParams
from anmf.testbench.bench_scenarios import DEFAULT_OPTIONS, SUITE_TESTS, scenario_env
from anmf.testbench.simulators import SIMULATORS, run_bench

PARAMS = BuildParams(**DEFAULT_OPTIONS["params"])


@pytest.mark.parametrize("sim", SIMULATORS)
def test_scenarios(sim: str) -> None:
    results = run_bench(sim=sim, verilog=verilog_text(PARAMS), toplevel=TOP_MODULE,
                        test_module="anmf.testbench.bench_scenarios", name="scenarios",
                        testcase=list(SUITE_TESTS), extra_env=scenario_env())
    cases = ElementTree.parse(results).getroot().iter("testcase")
    outcome = {case.get("name"): [child.tag for child in case
                                  if child.tag in ("failure", "error")] for case in cases}
    assert sorted(outcome) == sorted(SUITE_TESTS), f"cocotb ran {sorted(outcome)}"
    failed = [name for name, problems in outcome.items() if problems]
    assert not failed, f"cocotb scenarios failed: {failed} (log: {results.parent})"
