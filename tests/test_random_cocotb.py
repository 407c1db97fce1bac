"""Constrained-random verification with functional coverage (testbench/bench_random.py,
testbench/coverage.py): the coverage model's derivations and reports in Python, and a small
fixed-seed run of the random bench on Icarus and Verilator (every check passes, coverage of
the run above a floor). ``make regress`` runs many seeds and merges their coverage."""
from __future__ import annotations

import json

import pytest

from anmf.hdl.codes import ErrorCode, Opcode
from anmf.hdl.controller import Controller
from anmf.hdl.params import BuildParams
from anmf.hdl.registers import build_register_map
from anmf.hdl.solve_sequencer import SolveSequencer
from anmf.hdl.watchdog import Watchdog
from anmf.testbench import coverage
from anmf.testbench.bench_random import DEFAULT_OPTIONS, expected_refusal, main as regress_main, run_seed
from anmf.testbench.coverage import (READ, REQUIRED_FSM_BLOCKS, WRITE, WRITE_PARTIAL, CoverageModel,
                                     access_classes, covered, design_fsms, design_groups,
                                     expected_response, merge, read_json, read_stats, report, write_json)
from anmf.testbench.simulators import BUILD_ROOT, SIMULATORS

PARAMS = BuildParams(**DEFAULT_OPTIONS["params"])
#: The pytest subset: one fixed seed, a few steps per simulator.
#: Seed 2: REFINE, and host solves that retry, within the 24 steps.
SEED = 2
STEPS = 24
#: One aimed replay per command (make regress: up to three), to keep the subset's run time.
MAX_REPLAYS = 1
#: Share of the bins one such run covers at least (measured 285/384 = 0.74 on both simulators;
#: ``make regress`` closes the rest across seeds).
COVERAGE_FLOOR = 0.70


@pytest.fixture(scope="module")
def fsms():
    return design_fsms(Controller(PARAMS))


# --- bins derived from the design ------------------------------------------------------------------

def test_every_required_block_has_an_fsm_with_legal_transitions(fsms) -> None:
    blocks = {f.block: f for f in fsms}
    assert sorted(blocks) == sorted(REQUIRED_FSM_BLOCKS)
    sequencer = blocks["sequencer"]
    assert sequencer.init == "Idle" and sequencer.signal == "fsm_state"
    assert ("Idle", "Load-DAC") in sequencer.transitions and ("Done", "Idle") in sequencer.transitions
    assert ("Idle", "Convert-Wait") not in sequencer.transitions
    for fsm in fsms:
        assert all(a in fsm.states and b in fsm.states and a != b for a, b in fsm.transitions), fsm.block
        reached = {b for _, b in fsm.transitions} | {fsm.init}
        assert reached == set(fsm.states), f"{fsm.block}: states no transition enters: {set(fsm.states) - reached}"
    assert blocks["registers.axil_slave"].signal == "axil_fsm_state"


def test_state_names_and_missing_fsms_are_reported() -> None:
    fsm = design_fsms(SolveSequencer(PARAMS), required=())[0]
    assert fsm.block == "" and fsm.state_name(0) == "Idle"
    with pytest.raises(ValueError) as error:
        fsm.state_name(len(fsm.states))
    assert str(error.value) == f": state code {len(fsm.states)} is not one of the {len(fsm.states)} encoded states"
    with pytest.raises(ValueError) as error:
        design_fsms(SolveSequencer(PARAMS), required=("sequencer",))
    assert str(error.value) == "FSMs of the design: (top level); no FSM found in sequencer"
    with pytest.raises(ValueError) as error:
        design_fsms(Watchdog(8), required=("sequencer", "programmer"))
    assert str(error.value) == "FSMs of the design: none; no FSM found in sequencer, programmer"


def test_groups_follow_the_enums_and_the_register_map(fsms) -> None:
    groups = design_groups(fsms, build_register_map(PARAMS))
    assert groups["command.opcode"] == tuple(op.name for op in Opcode) + ("unknown",)
    assert groups["command.error"] == tuple(code.name for code in ErrorCode)
    classes = access_classes(build_register_map(PARAMS))
    labels = [c.label for c in classes]
    for label in ("register RW", "register W1S", "register RW1C", "register R-const", "register R-counter",
                  "window R", "window RW", "vector RW", "unmapped", "window-gap"):
        assert label in labels, label
    assert len(groups["bus.access"]) == sum(len(c.ops) for c in classes)
    assert groups["control.action_x_target"] == tuple(
        f"{a} @ {t}" for a in ("abort", "soft_reset")
        for t in ("idle", "sequencer", "programmer", "anls", "calibrator", "refiner", "remap"))
    assert groups["command.solve_retry"] == coverage.RETRY_OUTCOMES
    assert "command.solve_retry" not in design_groups(fsms, [e for e in build_register_map(PARAMS)
                                                           if e.name != "SOLVE_RETRIES"])
    for fsm in fsms:
        assert len(groups[f"fsm.{fsm.block}.transition"]) == len(fsm.transitions)


def test_expected_responses_follow_the_documented_bus_rules() -> None:
    entries = {e.name: e for e in build_register_map(PARAMS)}
    assert expected_response(None, READ) == "SLVERR"
    assert expected_response(entries["ID"], READ) == "OKAY"
    assert expected_response(entries["ID"], WRITE) == "SLVERR"            # no writable field
    assert expected_response(entries["COMMAND"], WRITE_PARTIAL, strobe=0b0010) == "OKAY"
    assert expected_response(entries["RESULTS"], WRITE) == "SLVERR"       # read-only window
    rhs = entries["RHS"]                                                  # 10-bit elements: lanes 0, 1
    assert expected_response(rhs, WRITE_PARTIAL, strobe=0b0011) == "OKAY"
    assert expected_response(rhs, WRITE_PARTIAL, strobe=0b0001) == "SLVERR"
    assert expected_response(rhs, READ, index=rhs.item.depth) == "SLVERR"   # past the depth
    assert expected_response(entries["ROW_MASK"], WRITE_PARTIAL, strobe=0b0100) == "OKAY"
    with pytest.raises(ValueError) as error:
        expected_response(rhs, "poke")
    assert str(error.value) == "op must be one of read, write, write-partial; got 'poke'"


def test_refusals_follow_the_documented_order() -> None:
    offsets = {e.name: e.offset for e in build_register_map(PARAMS)}
    good = {"COMMAND": {"opcode": Opcode.PROGRAM_CELL.value, "row": 0, "col": 0},
            "NMF_SIZE": {"m": 1, "n": 1, "k": 1}, "TIMING": {"adc_samples": 2},
            "PROGRAM_TOLERANCE": {"codes": 4}, "NMF_WINDOW_BASE": {"code": 0},
            "NMF_WINDOW_SPAN": {"codes": 100}, "COL_ENABLE": {"enable": 1},
            "NMF_ITERATIONS": {"count": 1}, "WATCHDOG": {"cycles": 100}, "DAC_SETTLE": {"cycles": 1},
            "ANALOG_SETTLE": {"cycles": 1}, "READ_SETTLE": {"cycles": 1}, "PROGRAM_PULSE": {"width": 1}}

    def refusal(**changes):
        fields = {name: dict(values) for name, values in good.items()}
        for register, values in changes.items():
            fields[register].update(values)
        return expected_refusal(fields, 0b1, PARAMS, offsets)

    assert refusal() == (ErrorCode.NONE, 0)
    assert refusal(COMMAND={"opcode": 0x42}) == (ErrorCode.UNKNOWN_OPCODE, 0x42)
    # The cell index (check 3) goes before the averaging (check 8) and the watchdog (check 12).
    assert refusal(COMMAND={"row": PARAMS.rows}, TIMING={"adc_samples": 3}, WATCHDOG={"cycles": 0}) == \
        (ErrorCode.BAD_DIMENSION, offsets["COMMAND"])
    assert refusal(TIMING={"adc_samples": 3}, WATCHDOG={"cycles": 0}) == (ErrorCode.BAD_AVERAGING, offsets["TIMING"])
    assert refusal(PROGRAM_TOLERANCE={"codes": 1 << PARAMS.adc_bits}) == \
        (ErrorCode.BAD_TOLERANCE, offsets["PROGRAM_TOLERANCE"])
    assert refusal(COMMAND={"opcode": Opcode.RUN_NMF.value}, NMF_WINDOW_BASE={"code": 1 << PARAMS.adc_bits}) == \
        (ErrorCode.BAD_WINDOW, offsets["NMF_WINDOW_BASE"])
    # READ_CELL does not use the programming pulse; SOLVE does not use READ_SETTLE.
    assert refusal(COMMAND={"opcode": Opcode.READ_CELL.value}, PROGRAM_PULSE={"width": 0}) == (ErrorCode.NONE, 0)
    assert refusal(COMMAND={"opcode": Opcode.SOLVE.value}, READ_SETTLE={"cycles": 0}) == (ErrorCode.NONE, 0)
    assert refusal(COMMAND={"opcode": Opcode.NOP.value}, WATCHDOG={"cycles": 0}) == (ErrorCode.NONE, 0)
    # REFINE: the SOLVE checks, and COL_ENABLE must hold one of the COLS columns (spares only: refused).
    spares_only = ((1 << PARAMS.total_cols) - 1) & ~((1 << PARAMS.cols) - 1)
    assert refusal(COMMAND={"opcode": Opcode.REFINE.value}) == (ErrorCode.NONE, 0)
    assert refusal(COMMAND={"opcode": Opcode.SOLVE.value}, COL_ENABLE={"enable": spares_only}) == (ErrorCode.NONE, 0)
    assert refusal(COMMAND={"opcode": Opcode.REFINE.value}, COL_ENABLE={"enable": spares_only}) == \
        (ErrorCode.BAD_DIMENSION, offsets["COL_ENABLE"])
    assert refusal(COMMAND={"opcode": Opcode.REFINE.value}, DAC_SETTLE={"cycles": 0}, PROGRAM_PULSE={"width": 0}) == \
        (ErrorCode.BAD_TIMING, offsets["DAC_SETTLE"])
    without = BuildParams(**DEFAULT_OPTIONS["params"], refinement=False)
    assert expected_refusal({**good, "COMMAND": {"opcode": Opcode.REFINE.value, "row": 0, "col": 0}}, 0b1, without,
                            offsets) == (ErrorCode.UNKNOWN_OPCODE, Opcode.REFINE.value)


# --- sampling, export, merge, report ----------------------------------------------------------------

def test_sampling_rejects_values_outside_the_bins() -> None:
    model = CoverageModel({"unit.colour": ("red", "green")}, {"unit.a": ("x", "y"), "unit.b": ("1", "2")},
                          {"unit.a_x_b": ("unit.a", "unit.b")})
    model.sample("unit.colour", "red")
    model.sample("unit.colour", "red")
    model.sample_cross("unit.a_x_b", "y", "1")
    assert model.hits() == {"unit.colour": {"red": 2, "green": 0},
                            "unit.a_x_b": {"x @ 1": 0, "x @ 2": 0, "y @ 1": 1, "y @ 2": 0}}
    with pytest.raises(ValueError) as error:
        model.sample("unit.colour", "blue")
    assert str(error.value) == "'blue' is not a bin of unit.colour (bins: red, green)"
    with pytest.raises(ValueError) as error:
        model.sample("unit.shape", "round")
    assert str(error.value) == "no coverage group 'unit.shape'; groups: unit.colour"
    with pytest.raises(ValueError) as error:
        CoverageModel({"unit.colour": ("red",)})
    assert str(error.value) == "cover point anmf.unit.colour exists already: one CoverageModel per process"


def test_merge_adds_hits_and_the_report_applies_the_goal(tmp_path) -> None:
    first = {"g": {"a": 1, "b": 0}, "h": {"c": 0}}
    second = {"g": {"a": 2, "b": 0}, "h": {"c": 5}}
    merged = merge([first, second])
    assert merged == {"g": {"a": 3, "b": 0}, "h": {"c": 5}}
    assert covered(merged) == (2, 3)
    text = report(merged, goal=0.95)
    assert "uncovered: b" in text and text.splitlines()[-1].endswith("66.7% < 95%: FAIL")
    assert report(merged, goal=0.5).splitlines()[-1].endswith(">= 50%: PASS")
    paths = [tmp_path / "1.json", tmp_path / "2.json"]
    write_json(paths[0], first, seeds=[1], stats={"golden-checked commands": 3})
    write_json(paths[1], second, seeds=[2], stats={"golden-checked commands": 4})
    assert read_json(paths[0]) == (first, [1], 1) and read_stats(paths[1]) == {"golden-checked commands": 4}
    out = tmp_path / "merged.json"
    assert coverage.main([str(p) for p in paths] + ["--goal", "0.6", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["stats"] == {"golden-checked commands": 7}
    assert coverage.main([str(p) for p in paths]) == 1          # 2/3 < 0.95
    (tmp_path / "bad.json").write_text("[]")
    assert coverage.main([str(tmp_path / "bad.json")]) == 2


def test_regress_refuses_zero_seeds(capsys) -> None:
    assert regress_main(["--seeds", "0"]) == 2
    assert capsys.readouterr().err == "bench_random: error: --seeds and --steps must be at least 1\n"


# --- the bench on both simulators ---------------------------------------------------------------------

@pytest.mark.parametrize("sim", SIMULATORS)
def test_random_bench_passes_and_covers(sim: str) -> None:
    passed, path = run_seed(sim, SEED, STEPS, BUILD_ROOT / f"random-{sim}", max_replays=MAX_REPLAYS)
    assert passed, f"random bench failed on {sim} (seed {SEED}); log and results in {path.parent}"
    hits, seeds, _runs = read_json(path)
    assert seeds == [SEED]
    hit, total = covered(hits)
    assert hit / total >= COVERAGE_FLOOR, f"{hit}/{total} bins covered on {sim}\n{report(hits)}"
    stats = read_stats(path)
    for kind, least in (("golden-checked commands", 5), ("refusals", 2), ("aborts of a running command", 1),
                        ("aimed disturbances that hit their state", 1)):
        assert stats.get(kind, 0) >= least, f"{kind}: {stats.get(kind, 0)} < {least} ({stats})"
