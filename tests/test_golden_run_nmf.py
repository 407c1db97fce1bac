"""RUN_NMF's number formats (model/formats.py) and the golden model's run_nmf
(model/golden.py): the integer arithmetic of the block floating point, its exact messages,
and what a run does (scaling, masks, dead components, skipped right-hand sides, over-range
retries, refusals, EXPONENT_RANGE, convergence). The bit-exact comparison with the RTL is
tests/test_anls_sequencer.py."""
from __future__ import annotations

import re

import numpy as np
import pytest
from scipy.optimize import nnls

from anmf.hdl.params import BuildParams
from anmf.model.afe import AnalogFrontEnd
from anmf.model.config import preset
from anmf.model.formats import (ProgramSettings, exponent_word,
                                factor_from_fixed, factor_peaks, factor_targets,
                                fixed_from_factor, leading_one, mask_from_words, mask_words,
                                next_component_exponent, nmf_commit_cycles, nmf_prepare_cycles,
                                nmf_product_scale, nmf_scan_cycles, r_codes, result_mantissa,
                                rhs_dac_codes, rhs_shift, window_codes, word_exponent)
from anmf.model.golden import Error, GoldenController
from anmf.model.nmf import anls

PARAMS = BuildParams(rows=16, cols=4, spare=1)


def exact(message: str) -> str:
    return "^" + re.escape(message) + "$"


def make_golden(name: str = "ideal", params: BuildParams = PARAMS, **circuit) -> GoldenController:
    config = preset(name)
    config = config.replace(adc=config.adc.replace(conversion_time_s=30e-9))
    if circuit:
        config = config.replace(circuit=config.circuit.replace(**circuit))
    afe = AnalogFrontEnd.from_build_params(config, params, deterministic=True)
    return GoldenController(params, afe)


def settings(**changes) -> ProgramSettings:
    base = dict(tolerance=6, amp_start=100, amp_step=5, amp_max=200, pulse_width=10,
                pulse_budget=40, avg_log2=0, read_settle=16)
    return ProgramSettings(**(base | changes))


def window(golden: GoldenController) -> tuple[int, int]:
    afe = golden.afe
    return window_codes(g_offset_s=afe.config.circuit.g_offset_s, g_max_s=afe.config.device.g_max_s,
                        full_scale_s=afe.read_full_scale_s, bits=afe.adc_bits)


def run(golden: GoldenController, m: int = 8, n: int = 8, k: int = 2, **changes):
    g_offset, g_span = window(golden)
    arguments = dict(m=m, n=n, k=k, iterations=1, settings=settings(), dac_settle=5,
                     analog_settle=2000, g_offset=g_offset, g_span=g_span)
    return golden.run_nmf(**(arguments | changes))


def low_rank(m: int, n: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    codes, _ = r_codes(rng.random((m, k)) @ rng.random((k, n)), PARAMS.r_bits)
    mantissa, col_exp = fixed_from_factor(rng.random((m, k)) + 0.2, PARAMS.mantissa_bits)
    return codes, (mantissa, col_exp)


# ---- number formats -------------------------------------------------------------------------

def test_leading_one_is_the_highest_set_bit():
    values = np.array([0, 1, 2, 3, 4, 255, 256, 2 ** 40, 2 ** 52 + 1])
    assert leading_one(values).tolist() == [-1, 0, 1, 1, 2, 7, 8, 40, 52]
    assert leading_one(5) == 2
    with pytest.raises(ValueError, match=exact("values must be integers >= 0; got [-1]")):
        leading_one([-1])
    with pytest.raises(ValueError, match=exact("values must be below 2**53; got 9007199254740992")):
        leading_one(2 ** 53)


def test_rhs_codes_put_the_peak_in_the_upper_half_of_the_positive_dac_range():
    entries = np.array([0, 1, 300, 511, 1000])
    shift = rhs_shift(1000)
    assert shift == 9 and rhs_shift(1000, retries=2) == 11
    codes = rhs_dac_codes(entries, shift, 10)
    assert codes.tolist() == [512, 512, 512 + (300 << 8 >> 9), 512 + 255, 512 + 500]
    assert 512 + 256 <= codes.max() <= 1023, "the peak uses the upper half of the positive range"
    # One retry halves every magnitude (rounded down).
    assert (rhs_dac_codes(entries, shift + 1, 10) - 512).tolist() == [0, 0, 75, 127, 250]
    # A small R is shifted up: exponents below the headroom are left shifts.
    assert rhs_dac_codes([3, 2], rhs_shift(3), 10).tolist() == [512 + 384, 512 + 256]
    with pytest.raises(ValueError, match=exact("shift 8 is below the leading one of the largest "
                                               "entry (9): the codes would leave the DAC range")):
        rhs_dac_codes(entries, 8, 10)
    with pytest.raises(ValueError, match=exact("peak must be an integer >= 1; got 0")):
        rhs_shift(0)
    with pytest.raises(ValueError, match=exact("dac_bits must be an integer from 2 to 24; got 1")):
        rhs_dac_codes(entries, 9, 1)


def test_result_mantissa_is_the_code_above_zero_floored_at_zero():
    assert result_mantissa(np.array([0, 500, 512, 513, 1023]), 10).tolist() == [0, 0, 0, 1, 511]
    with pytest.raises(ValueError, match=exact("codes must be below 2**10; got [1024]")):
        result_mantissa([1024], 10)


def test_factor_peaks_targets_and_the_next_exponent():
    mantissa = np.array([[3, 0, 0], [200, 0, 1], [511, 0, 0]])
    row_exp = np.array([9, 0, -1])
    msb, live = factor_peaks(mantissa, row_exp)
    # column 0: max(1 + 9, 7 + 0, 8 - 1) = 10; column 1 dead; column 2: leading one 0.
    assert msb.tolist() == [10, 0, 0] and live.tolist() == [True, False, True]
    targets = factor_targets(mantissa, row_exp, msb, g_offset=518, g_span=442)
    # (3 << 9) = 1536 is column 0's largest value: (3 * 442) >> (10 + 1 - 9) = 331.
    assert targets[:, 0].tolist() == [518 + 331, 518 + (200 * 442 >> 11), 518 + (511 * 442 >> 12)]
    assert targets[:, 1].tolist() == [518] * 3, "zero entries sit at g_offset"
    assert targets[:, 2].tolist() == [518, 518 + 221, 518]
    values = mantissa * np.exp2(row_exp)[:, None]
    largest = targets[values[:, 0].argmax(), 0]
    assert 518 + 221 <= largest < 518 + 442, "the largest entry in the upper half of the window"
    assert next_component_exponent(np.array([5, 0, -3]), msb, 10).tolist() == [-24, -9, -6]
    with pytest.raises(ValueError, match=exact("mantissa must be (rows, k) and row_exp (rows,); got "
                                               "shapes (3, 3) and (2,)")):
        factor_peaks(mantissa, [0, 0])
    with pytest.raises(ValueError, match=exact("g_span must be an integer >= 1; got 0")):
        factor_targets(mantissa, row_exp, msb, g_offset=518, g_span=0)


def test_exponent_words_are_twos_complement():
    exponents = np.array([-128, -1, 0, 5, 127])
    words = exponent_word(exponents, 8)
    assert words.tolist() == [128, 255, 0, 5, 127]
    assert word_exponent(words, 8).tolist() == exponents.tolist()
    with pytest.raises(ValueError, match=exact("exponent must be from -128 to 127 (8 bits); got 128")):
        exponent_word(128, 8)


def test_fixed_point_factors_round_trip_within_one_mantissa_lsb():
    rng = np.random.default_rng(4)
    factor = rng.random((6, 3)) * np.array([1e-3, 1.0, 1e4])
    factor[:, 1] = 0.0
    mantissa, col_exp = fixed_from_factor(factor, 9)
    assert mantissa.max(axis=0).tolist()[0] >= 256 and mantissa.max() <= 511
    assert col_exp[1] == 0 and not mantissa[:, 1].any()
    back = factor_from_fixed(mantissa, np.zeros(6, dtype=np.int64), col_exp)
    assert np.all(back <= factor) and np.all(factor - back <= np.exp2(col_exp)[None, :])
    with pytest.raises(ValueError, match=exact("factor must be a 2-D array of finite values >= 0; "
                                               "got [-1.0]")):
        fixed_from_factor([-1.0], 9)


def test_mask_words_hold_one_bit_per_entry_at_i_rows_plus_j():
    observed = np.zeros((3, 5), dtype=bool)
    observed[0, 0] = observed[1, 4] = observed[2, 1] = True
    words = mask_words(observed, 6)      # 36 entries: two words
    assert words.tolist() == [1 | 1 << 10 | 1 << 13, 0]
    full = mask_from_words(words, 6)
    assert full[:3, :5].tolist() == observed.tolist() and not full[3:].any()
    with pytest.raises(ValueError, match=exact("words must be 2 integers from 0 to 2**32 - 1; got [1]")):
        mask_from_words([1], 6)


def test_window_codes_and_r_codes():
    assert window_codes(g_offset_s=0.5e-6, g_max_s=35e-6, full_scale_s=40e-6, bits=10) == (518, 442)
    with pytest.raises(ValueError, match=exact("the window needs 0 <= g_offset_s < g_max_s; got "
                                               "3e-05 and 2e-05")):
        window_codes(g_offset_s=30e-6, g_max_s=20e-6, full_scale_s=40e-6, bits=10)
    codes, scale = r_codes(np.array([[0.0, 0.5], [2.0, 1.0]]), 4)
    assert codes.tolist() == [[0, 4], [15, 8]] and scale == 2.0 / 15


def test_phase_cycle_formulas():
    assert nmf_prepare_cycles(rows=8, k=3) == 2 * 8 * 3 + 3 + 2
    assert nmf_scan_cycles(rows=8) == 12
    assert nmf_commit_cycles(count=5, k=2) == 5 * 2 + 1 + 2
    with pytest.raises(ValueError, match=exact("k must be an integer >= 1; got 0")):
        nmf_prepare_cycles(rows=8, k=0)


def test_build_parameters_must_hold_the_largest_rhs_exponent():
    assert BuildParams().rhs_exp_max == 16 - 1 + 15 and BuildParams().mantissa_bits == 9
    with pytest.raises(ValueError, match=exact("exp_bits = 5 cannot hold the largest right-hand side "
                                               "exponent r_bits - 1 + 15 = 30; use at least 6 bits")):
        BuildParams(exp_bits=5)


# ---- the golden model's RUN_NMF ---------------------------------------------------------------

def test_an_h_step_gives_the_nnls_solution_divided_by_the_product_scale():
    golden = make_golden("ideal")
    m, n, k = 12, 10, 3
    codes, (mantissa, col_exp) = low_rank(m, n, k)
    golden.load_nmf(codes, np.ones((m, n), dtype=bool), mantissa, col_exp)
    outcome = run(golden, m, n, k, stop_after=1)
    assert outcome.error == Error.ABORTED and outcome.half_steps == 1
    assert outcome.solves == n and outcome.failed_cells == 0
    _, h = golden.nmf_factors(m, n, k)
    w = factor_from_fixed(mantissa, np.zeros(m, dtype=np.int64), col_exp)
    reference = np.stack([nnls(w, codes[:, j].astype(float))[0] for j in range(n)], axis=1)
    afe = golden.afe
    scale = nmf_product_scale(g_span=window(golden)[1], full_scale_s=afe.read_full_scale_s,
                              g_unit_s=afe.config.circuit.g_unit_s,
                              input_gain=afe.config.circuit.input_gain,
                              adc_lsb_v=2 / 1024, dac_lsb_v=2 / 1024)
    assert np.abs(h * scale - reference).max() <= 0.03 * reference.max()


def test_run_nmf_converges_like_the_reference_anls():
    golden = make_golden("ideal")
    m, n, k = 12, 10, 3
    codes, (mantissa, col_exp) = low_rank(m, n, k, seed=2)
    golden.load_nmf(codes, np.ones((m, n), dtype=bool), mantissa, col_exp)
    outcome = run(golden, m, n, k, iterations=4)
    assert outcome.error == Error.NONE and outcome.iterations == 4 and outcome.half_steps == 8
    w, h = golden.nmf_factors(m, n, k)
    fit = float((codes * (w @ h)).sum() / ((w @ h) ** 2).sum())   # the product scale K
    chip_error = np.linalg.norm(codes - fit * w @ h) / np.linalg.norm(codes)
    w0 = factor_from_fixed(mantissa, np.zeros(m, dtype=np.int64), col_exp)
    reference = anls(codes.astype(float), k, iters=4, init=(w0, np.ones((k, n)))).error
    assert chip_error <= reference + 0.01, (chip_error, reference)


def test_missing_entries_are_left_out_of_each_least_squares_problem():
    golden = make_golden("ideal")
    m, n, k = 10, 8, 2
    codes, (mantissa, col_exp) = low_rank(m, n, k, seed=5)
    observed = np.random.default_rng(6).random((m, n)) > 0.3
    corrupted = codes.copy()
    corrupted[~observed] = 2 ** PARAMS.r_bits - 1     # missing entries hold garbage
    golden.load_nmf(corrupted, observed, mantissa, col_exp)
    run(golden, m, n, k, stop_after=1)
    _, h = golden.nmf_factors(m, n, k)
    w = factor_from_fixed(mantissa, np.zeros(m, dtype=np.int64), col_exp)
    for j in range(n):
        rows = observed[:, j]
        reference = nnls(w[rows], codes[rows, j].astype(float))[0]
        fit = h[:, j] @ reference / max(h[:, j] @ h[:, j], 1e-30)
        assert np.allclose(h[:, j] * fit, reference, atol=0.03 * reference.max()), j


def test_dead_components_unobserved_and_zero_right_hand_sides_give_zeros_without_a_solve():
    golden = make_golden("ideal")
    m, n, k = 8, 6, 3
    codes, (mantissa, col_exp) = low_rank(m, n, k, seed=7)
    mantissa[:, 1] = 0                       # component 1 is dead
    observed = np.ones((m, n), dtype=bool)
    observed[:, 2] = False                   # nothing observed in column 2
    codes[:, 4] = 0                          # column 4 all zero
    golden.results[:] = 1234                 # untouched by skipped solves
    golden.load_nmf(codes, observed, mantissa, col_exp)
    outcome = run(golden, m, n, k, stop_after=1)
    assert outcome.solves == n - 2 + outcome.retries
    assert not golden.nmf_h[1, :n].any(), "a dead component solves to zero"
    assert not golden.nmf_h[:, 2].any() and not golden.nmf_h[:, 4].any()
    assert golden.nmf_h_exp[2] == 0 and golden.nmf_h_exp[4] == 0
    assert golden.nmf_h_exp[PARAMS.rows + 1] == 0, "a dead component's exponent is 0"
    assert golden.fault_cells()[:m, 1].sum() == 0 and golden.results[1] == 1234, \
        "the dead column is neither programmed nor converted"


def test_an_all_zero_factor_programs_and_solves_nothing():
    golden = make_golden("ideal")
    codes, (mantissa, col_exp) = low_rank(8, 6, 2)
    golden.load_nmf(codes, np.ones((8, 6), dtype=bool), np.zeros_like(mantissa), col_exp)
    golden.nmf_h[:] = 99
    outcome = run(golden, 8, 6, 2, iterations=1)
    assert (outcome.error, outcome.solves, outcome.pulse_count) == (Error.NONE, 0, 0)
    assert not golden.nmf_h[:2, :6].any() and not golden.nmf_w[:8, :2].any()
    # Prepare, one Program-Start cycle, per RHS a scan and a cleared row, commit, per half-step.
    h_step = nmf_prepare_cycles(rows=8, k=2) + 1 + 6 * (nmf_scan_cycles(rows=8) + 2 + 1) + \
        nmf_commit_cycles(count=6, k=2) + 1
    w_step = nmf_prepare_cycles(rows=6, k=2) + 1 + 8 * (nmf_scan_cycles(rows=6) + 2 + 1) + \
        nmf_commit_cycles(count=8, k=2) + 1
    assert outcome.done_cycle == 1 + h_step + w_step


def test_over_range_halves_the_input_until_it_fits_and_counts_the_retries():
    golden = make_golden("rram-3bit", input_gain=64.0)
    m, n, k = 8, 6, 2
    codes, (mantissa, col_exp) = low_rank(m, n, k, seed=9)
    golden.load_nmf(codes, np.ones((m, n), dtype=bool), mantissa, col_exp)
    outcome = run(golden, m, n, k, stop_after=1, analog_settle=300)
    assert outcome.retries > 0 and outcome.unresolved == 0
    assert outcome.solves == n + outcome.retries
    shifts = golden.nmf_h_exp[:n]
    assert np.all(shifts >= leading_one(codes.max(axis=0))), "retries only raise the exponent"
    assert shifts.sum() - leading_one(codes.max(axis=0)).sum() == outcome.retries
    # With no retries allowed the over-range solutions stay, counted as unresolved.
    golden = make_golden("rram-3bit", input_gain=64.0)
    golden.load_nmf(codes, np.ones((m, n), dtype=bool), mantissa, col_exp)
    capped = run(golden, m, n, k, stop_after=1, analog_settle=300, range_retries=0)
    assert capped.retries == 0 and capped.unresolved > 0 and capped.solves == n


@pytest.mark.parametrize("changes, error", [
    ({"m": 0}, Error.BAD_DIMENSION),
    ({"n": 17}, Error.BAD_DIMENSION),
    ({"k": 5}, Error.BAD_DIMENSION),
    ({"iterations": 0}, Error.BAD_DIMENSION),
    ({"settings": settings(avg_log2=9)}, Error.BAD_AVERAGING),
    ({"settings": settings(tolerance=0)}, Error.BAD_TOLERANCE),
    ({"g_span": 0}, Error.BAD_WINDOW),
    ({"g_offset": 600, "g_span": 425}, Error.BAD_WINDOW),
    ({"watchdog_limit": 0}, Error.BAD_TIMING),
    ({"settings": settings(pulse_width=0)}, Error.BAD_TIMING),
])
def test_refused_runs_end_in_cycle_one_and_touch_nothing(changes, error):
    golden = make_golden("ideal")
    codes, (mantissa, col_exp) = low_rank(8, 8, 2)
    golden.load_nmf(codes, np.ones((8, 8), dtype=bool), mantissa, col_exp)
    before = [a.copy() for a in (golden.nmf_w, golden.nmf_h, golden.nmf_w_exp, golden.targets)]
    outcome = run(golden, **changes)
    assert (outcome.error, outcome.done_cycle, outcome.solves, outcome.pulse_count) == (error, 1, 0, 0)
    after = (golden.nmf_w, golden.nmf_h, golden.nmf_w_exp, golden.targets)
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_an_exponent_beyond_the_range_stops_before_programming():
    golden = make_golden("ideal")
    codes, (mantissa, col_exp) = low_rank(8, 8, 2)
    col_exp[1] = 120        # column 1's next exponent: -(10 - 2) - 1 - 120 - 8 = -137 < -128
    golden.load_nmf(codes, np.ones((8, 8), dtype=bool), mantissa, col_exp)
    outcome = run(golden, 8, 8, 2)
    assert (outcome.error, outcome.detail, outcome.pulse_count, outcome.half_steps) == \
        (Error.EXPONENT_RANGE, 1, 0, 0)
    assert outcome.done_cycle == 1 + nmf_prepare_cycles(rows=8, k=2) + 1
    assert not golden.nmf_h.any()


def test_the_host_rhs_buffer_is_kept_and_operands_are_checked():
    golden = make_golden("ideal")
    codes, (mantissa, col_exp) = low_rank(8, 8, 2)
    golden.load_nmf(codes, np.ones((8, 8), dtype=bool), mantissa, col_exp)
    golden.rhs[:] = 700
    run(golden, 8, 8, 2, stop_after=1)
    assert (golden.rhs == 700).all()
    with pytest.raises(ValueError, match=exact("k must be an integer from 0 to 7 (a 3-bit port); got 8")):
        run(golden, 8, 8, 8)
    with pytest.raises(ValueError, match=exact("observed must be a bool array of shape (8, 8); got "
                                               "int64 array of shape (8, 8)")):
        golden.load_nmf(codes, np.ones((8, 8), dtype=np.int64), mantissa, col_exp)


def test_same_seed_same_run():
    outcomes = []
    for _ in range(2):
        golden = make_golden("rram-3bit")
        codes, (mantissa, col_exp) = low_rank(8, 6, 2, seed=11)
        golden.load_nmf(codes, np.ones((8, 6), dtype=bool), mantissa, col_exp)
        outcomes.append((run(golden, 8, 6, 2, analog_settle=100), golden.nmf_w.copy(),
                         golden.nmf_h.copy()))
    assert outcomes[0][0] == outcomes[1][0]
    assert np.array_equal(outcomes[0][1], outcomes[1][1]) and np.array_equal(outcomes[0][2],
                                                                             outcomes[1][2])
