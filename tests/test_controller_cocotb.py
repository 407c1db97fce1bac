"""The whole controller's Verilog under cocotb on Icarus and Verilator: cocotbext-axi as the host,
an event-driven AFE responder (testbench/bench_controller.py)."""
from __future__ import annotations

import json

import pytest

from anmf.hdl.controller import TOP_MODULE, verilog_text
from anmf.hdl.params import BuildParams
from anmf.hdl.registers import build_register_map
from anmf.hdl.regmap_export import describe
from anmf.testbench.simulators import BUILD_ROOT, SIMULATORS, run_bench

PARAMS = BuildParams(rows=16, cols=4)
BENCH_TESTS = 5   # bench_controller.py: 4 + calibrate_then_solve_equals_golden


@pytest.mark.parametrize("sim", SIMULATORS)
def test_controller_bench(sim: str) -> None:
    name = "controller"
    build_dir = BUILD_ROOT / f"{name}-{sim}"
    build_dir.mkdir(parents=True, exist_ok=True)
    description = build_dir / "regmap.json"
    description.write_text(json.dumps(describe(build_register_map(PARAMS))))
    results = run_bench(sim=sim, verilog=verilog_text(PARAMS), toplevel=TOP_MODULE,
                        test_module="anmf.testbench.bench_controller", name=name,
                        extra_env={"ANMF_REGMAP_JSON": str(description)})
    text = results.read_text()
    assert text.count("<testcase") == BENCH_TESTS, f"expected {BENCH_TESTS} cocotb tests in {results}"
    assert "<failure" not in text and "<error" not in text, f"cocotb failures in {results}"
