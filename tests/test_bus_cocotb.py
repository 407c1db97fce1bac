"""The AXI4-Lite register file under back-pressure, error responses and interleaved traffic
(testbench/bench_bus.py) on Icarus and Verilator; the register model it checks against; and
``make sim`` (testbench/sim.py): selection, seeds, waveforms, results and exit status."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from amaranth.back import verilog

from anmf.hdl.axi4lite import AXI4LiteRegisterFile
from anmf.hdl.params import BuildParams
from anmf.hdl.registers import ControllerRegisters, build_register_map
from anmf.hdl.regmap_export import describe
from anmf.testbench.bench_bus import (OKAY, SLVERR, STIMULUS_FILE, TARGET_WEIGHTS, RegisterModel,
                                      address_pools, draw_stimulus, pause_pattern)
from anmf.testbench.sim import (BENCHES, EXIT_FAILED, EXIT_USAGE, bench_suite, bench_tests, benches, main,
                                results_summary, select)
from anmf.testbench.simulators import SIMULATORS, build_dir_for, run_bench

#: Small windows keep the scans short; the offsets are those of every build.
PARAMS = BuildParams(rows=8, cols=3, spare=1)
TOPLEVEL = "bus_regs"
#: Fixed so that `make test` is repeatable; `make sim` draws a fresh one (printed).
SEED = 20_261_129
REPO = Path(__file__).resolve().parent.parent


def _description(params: BuildParams = PARAMS) -> dict[str, Any]:
    return describe(build_register_map(params))


@pytest.fixture
def model() -> RegisterModel:
    return RegisterModel(_description())


# --- the register model: docs/registers.md, access by access ----------------------------------------

def test_read_only_register_refuses_writes_and_keeps_its_value(model: RegisterModel) -> None:
    ident = model.registers["ID"]
    assert model.write(ident["offset"], 4, 0) == SLVERR
    assert model.read_word(ident["offset"]) == (ident["reset"], OKAY)
    status = model.registers["STATUS"]["offset"]
    model.core_drive("STATUS", "busy", 1)
    assert model.write(status, 4, 0) == SLVERR
    assert model.read_word(status) == (1, OKAY), "STATUS shows what the controller drives"


def test_rw1c_bits_clear_on_one_and_stay_on_zero(model: RegisterModel) -> None:
    irq = model.registers["IRQ_STATUS"]["offset"]
    for name in ("done", "error", "over_range"):
        model.core_set("IRQ_STATUS", name, 1)
    assert model.read_word(irq) == (0b111, OKAY)
    assert model.write(irq, 4, 0b010) == OKAY
    assert model.read_word(irq) == (0b101, OKAY)
    assert model.write(irq, 4, 0) == OKAY
    assert model.read_word(irq) == (0b101, OKAY), "writing 0 leaves RW1C bits alone"


def test_w1s_reads_zero_counts_pulses_and_soft_reset_clears_counters(model: RegisterModel) -> None:
    control = model.registers["CONTROL"]["offset"]
    count = model.registers["SOLVE_COUNT"]["offset"]
    model.core_increment("SOLVE_COUNT", "count", 5)
    assert model.write(control, 4, 0b001) == OKAY
    assert model.read_word(control) == (0, OKAY)
    assert model.pulses[("CONTROL", "start")] == 1 and model.pulses[("CONTROL", "soft_reset")] == 0
    assert model.read_word(count) == (5, OKAY)
    assert model.write(control, 4, 0b100) == OKAY
    assert model.read_word(count) == (0, OKAY), "CONTROL.soft_reset clears the counters"
    model.core_increment("SOLVE_COUNT", "count", 1 << 40)
    assert model.read_word(count) == (0xFFFF_FFFF, OKAY), "counters saturate"


def test_irq_line_follows_enabled_causes(model: RegisterModel) -> None:
    assert model.irq_line() == 0
    model.core_set("IRQ_STATUS", "error", 1)
    assert model.irq_line() == 0, "a cause not enabled"
    assert model.write(model.registers["IRQ_ENABLE"]["offset"], 4, 0b010) == OKAY
    assert model.irq_line() == 1
    assert model.write(model.registers["IRQ_STATUS"]["offset"], 4, 0b010) == OKAY
    assert model.irq_line() == 0, "cleared by writing 1"


def test_register_writes_honour_byte_strobes(model: RegisterModel) -> None:
    timing = model.registers["TIMING"]["offset"]
    assert model.write(timing, 4, 0x1122_3344) == OKAY
    assert model.write(timing + 1, 1, 0xAB) == OKAY
    assert model.read_word(timing) == (0x1122_AB44, OKAY)
    assert model.write(timing + 2, 2, 0xBEEF) == OKAY
    assert model.read(timing + 1, 3) == (bytes([0xAB, 0xEF, 0xBE]), OKAY)
    command = model.registers["COMMAND"]
    assert model.write(command["offset"], 4, 0xFFFF_FFFF) == OKAY
    assert model.read_word(command["offset"])[0] == 0xFFFF_FFFF  # opcode, row, col fill the word
    enable = model.registers["COL_ENABLE"]
    assert model.write(enable["offset"], 4, 0xFFFF_FFFF) == OKAY
    assert model.read_word(enable["offset"])[0] == (1 << PARAMS.total_cols) - 1, "bits past a field read 0"


def test_windows_depth_lanes_and_access(model: RegisterModel) -> None:
    rhs, results = model.windows["RHS"], model.windows["RESULTS"]
    last = rhs["offset"] + 4 * (rhs["depth"] - 1)
    assert model.write(last, 4, 0xFFFF_FFFF) == OKAY
    assert model.read_word(last) == ((1 << rhs["width"]) - 1, OKAY), "an element keeps its width"
    assert model.write(last, 1, 0x12) == SLVERR, "a write leaving out a lane with element bits"
    assert model.read_word(last)[0] == (1 << rhs["width"]) - 1, "a refused write changes nothing"
    assert model.write(last + 4, 4, 1) == SLVERR and model.read_word(last + 4) == (0, SLVERR)
    assert model.write(results["offset"], 4, 1) == SLVERR, "RESULTS is read-only"
    model.core_write_window("RESULTS", 0, 0x5A5, -1)
    assert model.read_word(results["offset"]) == (0x5A5, OKAY)
    row_mask = model.windows["ROW_MASK"]
    assert model.read_word(row_mask["offset"]) == ((1 << PARAMS.rows) - 1, OKAY)
    assert model.write(row_mask["offset"], 4, 0xFFFF_FF00) == OKAY
    assert model.read_word(row_mask["offset"]) == (0, OKAY), "vector bits past ROWS ignore writes"
    assert model.core_outputs()["row_mask"] == 0


def test_unmapped_gaps_answer_slverr_with_zero(model: RegisterModel) -> None:
    rhs = model.windows["RHS"]
    past_depth = rhs["offset"] + 4 * rhs["depth"]
    for address in (0x028, 0x02C, 0x058, 0x0FC, 0x180, past_depth, past_depth + 4 * 100):
        assert model.target(address).kind == "unmapped", hex(address)
        assert model.read_word(address) == (0, SLVERR)
        assert model.write(address, 4, 0xFFFF_FFFF) == SLVERR


@pytest.mark.parametrize("call, message", [
    (lambda m: m.target(-4), "address must be from 0 to 0x{:X}, not -4"),
    (lambda m: m.write(0x16, 4, 0), "an access must stay inside one word: 4 bytes at byte 2"),
    (lambda m: m.read(0x13, 2), "an access must stay inside one word: 2 bytes at byte 3"),
    (lambda m: RegisterModel({"registers": [], "windows": []}), "register map description lacks 'address_width'"),
])
def test_model_refuses_bad_arguments(model: RegisterModel, call: Any, message: str) -> None:
    with pytest.raises(ValueError) as info:
        call(model)
    assert str(info.value) == message.format((1 << model.address_width) - 1)


# --- stimulus ---------------------------------------------------------------------------------------------

def test_stimulus_is_a_function_of_the_seed_and_covers_every_target_kind(model: RegisterModel) -> None:
    avoid = frozenset({model.windows["FAULT_MAP"]["offset"] + 4 * 7})
    pools = address_pools(model, avoid)
    first = draw_stimulus(model, np.random.default_rng(5), 400, pools, avoid=avoid)
    again = draw_stimulus(model, np.random.default_rng(5), 400, pools, avoid=avoid)
    other = draw_stimulus(model, np.random.default_rng(6), 400, pools, avoid=avoid)
    assert first == again and first != other
    kinds = {model.target(op.address).kind for op in first}
    assert kinds == {"register", "memory", "vector", "unmapped"}, kinds
    assert not {op.address & ~3 for op in first} & avoid, "avoided addresses are never used"
    assert {op.length for op in first} == {1, 2, 3, 4} and any(op.write for op in first) \
        and any(not op.write for op in first)
    assert set(pools) | {"anywhere"} == set(TARGET_WEIGHTS)


def test_pause_pattern_bursts_and_rate() -> None:
    flags = [next(gen) for gen in [pause_pattern(np.random.default_rng(1), 0.3, 0)] for _ in range(4000)]
    assert 0.25 < np.mean(flags) < 0.35
    bursty = pause_pattern(np.random.default_rng(1), 0.3, 12)
    runs, current = [], 0
    for flag in (next(bursty) for _ in range(4000)):
        if flag:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    assert max(runs) >= 8, f"stalls of up to 12 cycles expected, longest {max(runs)}"


# --- the cocotb bench on both simulators --------------------------------------------------------------------

def _bus_run(sim: str, seed: int) -> Path:
    folder = build_dir_for("bus", sim, False)
    folder.mkdir(parents=True, exist_ok=True)
    description = folder / "regmap.json"
    description.write_text(json.dumps(_description()))
    dut = AXI4LiteRegisterFile(ControllerRegisters(PARAMS))
    return run_bench(sim=sim, verilog=verilog.convert(dut, name=TOPLEVEL), toplevel=TOPLEVEL,
                     test_module="anmf.testbench.bench_bus", name="bus", seed=seed,
                     extra_env={"ANMF_REGMAP_JSON": str(description)})


@pytest.mark.parametrize("sim", SIMULATORS)
def test_bus_bench(sim: str) -> None:
    results = _bus_run(sim, SEED)
    assert results_summary(results) == (1, 0), f"cocotb failures in {results} (seed {SEED})"
    stimulus = json.loads((results.parent / STIMULUS_FILE).read_text())
    registers = _description()["registers"]
    sweep = 2 * len(registers) + sum(f["access"] == "W1S" for r in registers for f in r["fields"])
    assert [len(phase["ops"]) for phase in stimulus] == [sweep + 60, 60, 60, 60]


# --- make sim -------------------------------------------------------------------------------------------------

def test_every_bench_module_in_testbench_is_registered() -> None:
    modules = {path.stem for path in (REPO / "testbench").glob("bench_*.py")}
    registered = {bench.module.rsplit(".", 1)[-1] for bench in benches()}
    # bench_speed is the `make bench-sim` benchmark (figures, no checks); bench_faults runs the
    # fault campaign's jobs (`anmf faults --backend rtl`, through cosim_job), no cocotb tests.
    assert modules - registered <= {"bench_speed", "bench_faults"}, f"benches `make sim` does not know: {modules - registered}"
    for bench in benches():
        assert bench.tests, f"no cocotb tests found in {bench.module}"


def test_bench_tests_and_suite_are_read_from_the_source(tmp_path: Path) -> None:
    assert bench_tests(REPO / "testbench" / "bench_controller.py") == (
        "solve_over_axi", "program_and_read_a_cell", "refused_accesses_and_commands", "remap_and_refresh",
        "calibrate_then_solve_equals_golden")
    assert bench_suite(REPO / "testbench" / "bench_controller.py") is None
    module = tmp_path / "bench_x.py"
    module.write_text("import cocotb\n\n@cocotb.test()\nasync def a(dut): ...\n\n@cocotb.test\n"
                      "async def b(dut): ...\n\nasync def helper(dut): ...\n\nSUITE_TESTS = ('b',)\n")
    assert bench_tests(module) == ("a", "b") and bench_suite(module) == ("b",)


def test_select_by_bench_module_and_test_name() -> None:
    assert [s.bench.name for s in select(None)] == [b.name for b in benches()]
    assert [s.bench.name for s in select(None, BENCHES[:2])] == [b.name for b in BENCHES[:2]]
    assert [(s.bench.name, s.testcases) for s in select("bench_afe_binding")] == \
        [("afe_binding-harness", None), ("afe_binding-controller", None)]
    assert [(s.bench.name, s.testcases) for s in select("solve_over_axi,bus")] == \
        [("bus", None), ("controller", ("solve_over_axi",))]
    assert [s.bench.name for s in select("anmf.testbench.bench_bus")] == ["bus"]


def test_select_refuses_unknown_names() -> None:
    with pytest.raises(ValueError) as info:
        select("no_such_bench")
    message = str(info.value)
    assert message.startswith("no bench, bench module or cocotb test named 'no_such_bench'; accepted: "
                              "afe_binding-controller, afe_binding-harness, axi_regs, bench_afe_binding")
    assert "solve_over_axi" in message


def test_results_summary_counts_failures_and_errors(tmp_path: Path) -> None:
    results = tmp_path / "results.xml"
    results.write_text(
        '<testsuites name="cocotb tests"><testsuite name="m" errors="1" failures="1" skipped="0" tests="3">'
        '<testcase classname="m" name="a"/><testcase classname="m" name="b"><failure/></testcase>'
        '<testcase classname="m" name="c"><error/></testcase></testsuite></testsuites>')
    assert results_summary(results) == (3, 2)
    with pytest.raises(RuntimeError, match="Results file .* not found"):
        results_summary(tmp_path / "missing.xml")


def _sim_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k not in ("COCOTB_RANDOM_SEED", "WAVES")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "anmf.testbench.sim", *args], capture_output=True,
                          text=True, env=full_env, cwd=REPO, timeout=300)


def test_sim_same_seed_same_stimulus_results_file_and_fst_waves() -> None:
    """Seed 123 twice (the second time with WAVES=1, in the waves build folder), then 124."""
    stimuli = []
    for seed, waves in ((123, False), (123, True), (124, False)):
        env = {"COCOTB_RANDOM_SEED": str(seed), **({"WAVES": "1"} if waves else {})}
        run = _sim_cli("--sim", "icarus", "--test", "bus", env=env)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        lines = [line for line in run.stdout.splitlines() if line.startswith("[anmf sim]")]
        assert lines[0] == f"[anmf sim] seed {seed} (reproduce: COCOTB_RANDOM_SEED={seed})"
        folder = build_dir_for("bus", "icarus", waves)
        results = folder / "results.xml"
        assert f"PASS bus on icarus: 1/1 passed, results {results}" in run.stdout
        assert results_summary(results) == (1, 0)
        if waves:
            fst = folder / f"{TOPLEVEL}.fst"
            assert f"waves {fst}" in run.stdout
            assert fst.stat().st_size > 1000 and fst.read_bytes()[0] == 0, "an FST file starts with a header block (0)"
        stimuli.append((folder / STIMULUS_FILE).read_text())
    assert stimuli[0] == stimuli[1], "the same seed must give the same stimulus (waves or not)"
    assert stimuli[0] != stimuli[2], "another seed must give other stimulus"


def test_sim_failing_bench_exits_non_zero() -> None:
    # cocotb's runner lets the environment win over the bench's settings: a register map of
    # another build makes the bench's model disagree with the DUT, a real failing cocotb test.
    wrong = build_dir_for("bus", "icarus", False) / "wrong-regmap.json"
    wrong.parent.mkdir(parents=True, exist_ok=True)
    wrong.write_text(json.dumps(_description(BuildParams(rows=4, cols=2, spare=1))))
    run = _sim_cli("--sim", "icarus", "--test", "random_traffic_under_back_pressure", "--seed", "7",
                   env={"ANMF_REGMAP_JSON": str(wrong)})
    assert run.returncode == EXIT_FAILED, run.stdout[-3000:]
    assert "FAIL bus on icarus (random_traffic_under_back_pressure): 0/1 passed" in run.stdout
    assert "reproduce with COCOTB_RANDOM_SEED=7" in run.stdout


def test_sim_missing_simulator_fails_loudly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["--sim", "icarus", "--test", "bus"]) == EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.err.startswith("anmf sim: error: Icarus Verilog is missing"), captured.err
    assert "[anmf sim] running" not in captured.out


def test_sim_usage_errors_exit_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--sim", "modelsim"])
    assert info.value.code == EXIT_USAGE and "invalid choice: 'modelsim'" in capsys.readouterr().err
    assert main(["--test", "nope"]) == EXIT_USAGE
    assert capsys.readouterr().err.startswith("anmf sim: error: no bench, bench module or cocotb test named 'nope'")
    monkeypatch.setenv("COCOTB_RANDOM_SEED", "x")
    assert main(["--list"]) == 0 and "random_traffic_under_back_pressure" in capsys.readouterr().out
    assert main(["--test", "bus"]) == EXIT_USAGE
    assert "COCOTB_RANDOM_SEED: 'x' is not an integer" in capsys.readouterr().err


# --- make bench-sim's table --------------------------------------------------------------------------------------

def test_bench_sim_table_divides_by_the_same_simulators_bare_rate() -> None:
    from anmf.testbench.bench_speed import BARE, Figures, anls_rows, format_table

    anls = {"cycles": 1000, "wall_s": 0.5, "bus": {"cycles": 100, "wall_s": 0.1},
            "irq": {"cycles": 900, "wall_s": 0.4}, "model_s": 0.1,
            "transactions": {"read": 3, "write": 7}}
    rows = [Figures("icarus", BARE, 4000, 1.0), *anls_rows("icarus", "x", anls),
            Figures("verilator", BARE, 8000, 1.0), *anls_rows("verilator", "x", anls)]
    lines = format_table(rows).splitlines()
    assert lines[0].split() == ["sim", "workload", "cycles", "wall", "s", "cycles/s", "ratio"]
    ratios = [float(line.split()[-1]) for line in lines[1:]]
    # icarus: 2000/4000, 1000/4000, 2250/4000, 3000/4000; verilator: the same over 8000.
    assert ratios == pytest.approx([1.0, 0.5, 0.25, 0.56, 0.75, 1.0, 0.25, 0.12, 0.28, 0.375], abs=0.006)
    assert "  AXI transactions (3 R + 7 W)" in lines[3]
