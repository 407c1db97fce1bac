"""Energy and latency model (model/energy.py) and `anmf energy`."""
from __future__ import annotations

import json
import math
import re
from dataclasses import replace

import numpy as np
import pytest

from anmf.cli import main
from anmf.hdl.params import BuildParams
from anmf.model import energy as E
from anmf.model.afe import AnalogFrontEnd
from anmf.model.config import preset
from anmf.model.formats import ProgramSettings, fixed_from_factor, r_codes, window_codes
from anmf.model.golden import Error, GoldenController


def exact(message: str) -> str:
    return "^" + re.escape(message) + "$"


@pytest.fixture(scope="module")
def small() -> tuple[E.Workload, E.ChipActivity]:
    workload = E.parse_workload("24x20:3", iterations=3)
    R, mask = E.workload_matrix(workload, np.random.default_rng(0))
    return workload, E.measure_activity(workload, R, mask, seed=0)


# ---- the controller's cycles: the formula against the golden model (= the RTL, bit for bit)

def test_run_nmf_cycles_equal_the_golden_model_done_cycle() -> None:
    params = BuildParams()
    config = preset("rram-3bit")
    config = config.replace(adc=config.adc.replace(conversion_time_s=30e-9))
    afe = AnalogFrontEnd.from_build_params(config, params, deterministic=True)
    golden = GoldenController(params, afe)
    rng = np.random.default_rng(3)
    m = n = 8
    k = 2
    codes, _ = r_codes(rng.random((m, k)) @ rng.random((k, n)) + 0.05, params.r_bits)
    mantissa, col_exp = fixed_from_factor(rng.random((m, k)) + 0.2, params.mantissa_bits)
    golden.load_nmf(codes, np.ones((m, n), dtype=bool), mantissa, col_exp)
    settings = ProgramSettings(tolerance=6, amp_start=100, amp_step=5, amp_max=200, pulse_width=10,
                               pulse_budget=40, avg_log2=0, read_settle=16)
    base, span = window_codes(g_offset_s=config.circuit.g_offset_s, g_max_s=config.device.g_max_s,
                              full_scale_s=afe.read_full_scale_s, bits=afe.adc_bits)
    outcome = golden.run_nmf(m=m, n=n, k=k, iterations=1, settings=settings, dac_settle=3, analog_settle=20,
                             g_offset=base, g_span=span)
    assert outcome.error in (Error.NONE, Error.CELLS_FAILED) and outcome.solves > n + m
    # m = n: both half-steps have the same shape, so the totals can go in one slot (the formula is linear).
    cycles = E.run_nmf_cycles(f_rows=(m, n), counts=(n, m), k=k, iterations=1,
                              solve_rows=(m * outcome.solves, 0), solves=(outcome.solves, 0),
                              pulses=(outcome.pulse_count, 0), dac_settle=3, analog_settle=20,
                              adc_cycles=afe.adc_cycles, avg_log2=0, read_settle=16,
                              pulse_cycles=afe.pulse_cycles(settings.pulse_width))
    assert cycles == outcome.done_cycle, f"formula {cycles} vs golden {outcome.done_cycle}"


# ---- component models: units and monotonicity

def test_opamp_power_follows_gain_bandwidth() -> None:
    c = E.ChipConstants()
    p = E.opamp_power_w(10e6, c)
    # 2 pi 10 MHz 1 pF = 62.8 uS; / 15 = 4.19 uA; x 3 branches x 2.5 V = 31.4 uW
    assert p == pytest.approx(31.4e-6, rel=1e-3)
    assert E.opamp_power_w(20e6, c) == pytest.approx(2 * p)
    with pytest.raises(ValueError, match=exact("gbw_hz must be a finite number > 0; got 0.0")):
        E.opamp_power_w(0.0, c)


def test_adc_energy_is_walden_at_low_and_thermal_at_high_resolution() -> None:
    c = E.ChipConstants()
    assert E.adc_energy_j(10, c) == pytest.approx(10e-15 * 2 ** 9.5)
    sndr = 6.02 * 15.5 + 1.76
    assert E.adc_energy_j(16, c) == pytest.approx(0.5 * 10 ** ((sndr - 175) / 10))
    energies = [E.adc_energy_j(b, c) for b in range(4, 18)]
    assert all(b > a for a, b in zip(energies, energies[1:]))
    assert E.adc_conversion_s(10, c) == pytest.approx(1.2e-6)   # ADCConfig: 12 cycles in 1.2 us
    with pytest.raises(ValueError, match=exact("bits must be an integer >= 1; got 0")):
        E.adc_energy_j(0, c)


def test_constants_are_validated() -> None:
    with pytest.raises(ValueError, match=exact("ChipConstants.clock_hz must be a finite number > 0; got -1.0")):
        E.ChipConstants(clock_hz=-1.0)
    with pytest.raises(ValueError, match=exact("ChipConstants.pulse_driver_efficiency must be in (0, 1]; got 2.0")):
        E.ChipConstants(pulse_driver_efficiency=2.0)


def test_anls_flops_by_hand() -> None:
    w = E.Workload("t", 4, 6, 2, iterations=1)
    flops, read = E.anls_flops(w, nnls_iterations=1)
    gram, rhs, nnls = 2 * 10 * 4, 2 * 2 * 24 * 2, 10 * (8 / 3 + 8)
    assert flops == pytest.approx(gram + rhs + nnls)
    assert read == 2 * 24 * 4


# ---- workloads and messages

def test_parse_workload() -> None:
    assert E.parse_workload("camera") == E.Workload("camera", 512, 512, 32, iterations=30)
    assert E.parse_workload("ml-100k", iterations=5).observed == 100_000
    w = E.parse_workload("300x200:7", iterations=4)
    assert (w.m, w.n, w.k, w.iterations, w.dense) == (300, 200, 7, 4, True)
    with pytest.raises(ValueError, match=exact("unknown workload 'cam'; accepted: camera, ml-100k or MxN:K "
                                               "(e.g. 256x256:8)")):
        E.parse_workload("cam")
    with pytest.raises(ValueError, match=exact("workload '8x8:9' needs M, N >= 1 and 1 <= K <= min(M, N)")):
        E.parse_workload("8x8:9")
    with pytest.raises(ValueError, match=exact("Workload.iterations must be an integer >= 1; got 0")):
        E.Workload("x", 4, 4, 2, iterations=0)
    with pytest.raises(ValueError, match=exact("Workload.observed must be in 1..m*n = 16; got 17")):
        E.Workload("x", 4, 4, 2, observed=17)


def test_workload_matrix_is_seeded_and_refuses_masked_workloads() -> None:
    w = E.parse_workload("10x12:2")
    a, mask = E.workload_matrix(w, np.random.default_rng(5))
    b, _ = E.workload_matrix(w, np.random.default_rng(5))
    assert mask is None and a.shape == (10, 12) and np.array_equal(a, b) and a.max() == 1.0 and a.min() >= 0
    with pytest.raises(ValueError, match=exact("workload 'ml-100k' has missing entries; load its ratings "
                                               "and pass R and mask")):
        E.workload_matrix(E.parse_workload("ml-100k"), np.random.default_rng(0))


# ---- activity and costs

def test_measured_activity_counts(small: tuple[E.Workload, E.ChipActivity]) -> None:
    w, act = small
    rhs = w.iterations * (w.m + w.n)
    assert act.solves == rhs + act.retries
    assert act.programmed_cells == w.iterations * (w.m + w.n) * w.k
    assert 1 < act.pulses_per_cell < 40
    assert 10e-9 < act.settle_mean_s < 10e-6 and 10e-9 < act.settle_max_s < 10e-6


def test_scenarios_order_and_parts_add_up(small: tuple[E.Workload, E.ChipActivity]) -> None:
    w, act = small
    costs = {name: E.chip_cost(w, act, architecture=arch) for name, arch in E.SCENARIOS.items()}
    for cost in costs.values():
        assert cost.time_s == pytest.approx(sum(cost.time_parts_s.values()))
        assert cost.energy_j == pytest.approx(sum(cost.energy_parts_j.values()))
    order = ["analog-only", "paper", "paper+write", "rtl"]
    times = [costs[name].time_s for name in order]
    assert times == sorted(times) and len(set(times)) == 4
    assert costs["paper"].energy_parts_j["programming"] == 0 < costs["paper+write"].energy_parts_j["programming"]
    # Fixed timer (rtl) waits the slowest solve, the paper scenario each solve's own time.
    assert costs["rtl"].notes["settle_s"] == act.settle_max_s
    assert costs["paper"].notes["settle_s"] == act.settle_mean_s


def test_costs_grow_with_work(small: tuple[E.Workload, E.ChipActivity]) -> None:
    w, act = small
    more = replace(act, solves=2 * act.solves, driven_rows=2 * act.driven_rows)
    assert E.chip_cost(w, more).energy_j > E.chip_cost(w, act).energy_j
    assert E.chip_cost(w, more).time_s > E.chip_cost(w, act).time_s
    big = E.Workload("b", 2 * w.m, 2 * w.n, w.k, iterations=w.iterations)
    assert E.gpu_cost(big).energy_j > E.gpu_cost(w).energy_j
    assert E.fpga_cost(big).time_s > E.fpga_cost(w).time_s
    assert E.gpu_cost(w, E.GPUSpec(batched=False)).time_s > E.gpu_cost(w).time_s
    rows = E.size_sweep(act, (64, 256, 1024), w.k, iterations=2)
    assert [r["chip_energy_j"] for r in rows] == sorted(r["chip_energy_j"] for r in rows)
    bits = E.adc_bits_sweep(w, act, (8, 12, 16))
    assert [r["adc_energy_share"] for r in bits] == sorted(r["adc_energy_share"] for r in bits)
    assert bits[0]["energy_ratio_vs_gpu"] > bits[-1]["energy_ratio_vs_gpu"]


def test_report_ratios(small: tuple[E.Workload, E.ChipActivity]) -> None:
    w, act = small
    report = E.energy_report(w, act, scenario="rtl", cpu_seconds=0.5)
    assert report["chip"]["time_s"] == report["scenarios"]["rtl"]["time_s"]
    assert report["speedup_vs_gpu"] == pytest.approx(report["gpu"]["time_s"] / report["chip"]["time_s"])
    assert report["energy_ratio_vs_gpu"] == pytest.approx(report["gpu"]["energy_j"] / report["chip"]["energy_j"])
    assert report["cpu"] == {"time_s": 0.5, "energy_j": 0.5 * E.CPU_POWER_W, "measured": True}
    with pytest.raises(ValueError, match=exact("unknown scenario 'best'; accepted: paper, paper+write, rtl, "
                                               "analog-only")):
        E.energy_report(w, act, scenario="best")


# ---- CLI

def test_cli_energy_json_and_plots(tmp_path, capsys) -> None:
    out = tmp_path / "e.json"
    assert main(["energy", "--workload", "16x12:2", "--iters", "2", "--json", str(out),
                 "--plots", str(tmp_path / "plots")]) == 0
    report = json.loads(out.read_text())
    for key in ("chip", "gpu", "fpga", "cpu"):
        assert report[key]["time_s"] > 0 and report[key]["energy_j"] > 0, key
    assert math.isclose(report["speedup_vs_gpu"], report["gpu"]["time_s"] / report["chip"]["time_s"])
    assert report["energy_ratio_vs_gpu"] > 0 and set(report["scenarios"]) == set(E.SCENARIOS)
    assert (tmp_path / "plots" / "energy_vs_size.png").stat().st_size > 1000
    assert (tmp_path / "plots" / "energy_vs_adc_bits.png").stat().st_size > 1000
    assert "speed-up vs GPU" in capsys.readouterr().out


def test_cli_energy_bad_workload(capsys) -> None:
    assert main(["energy", "--workload", "12by12"]) == 2
    assert capsys.readouterr().err == ("anmf: error: unknown workload '12by12'; accepted: camera, ml-100k "
                                       "or MxN:K (e.g. 256x256:8)\n")
    assert main(["energy", "--workload", "8x8:2", "--afe", "best"]) == 2
    assert "unknown AFE preset 'best'" in capsys.readouterr().err
