"""model/refinement.py: the Refiner's integer arithmetic (residual, exponent, DAC codes,
correction), the correction gain, the relative residual, golden_refine's validation, and
the study on the AFE model (the 2**-12 target on a read-back-consistent problem; the floor
of a least-squares problem whose optimum has a residual)."""
from __future__ import annotations

import re

import numpy as np
import pytest

from anmf.model.golden import Error, GoldenController
from anmf.model.refinement import (RefineFormat, StudyParams, correction, correction_gain,
                                   entering_columns, entry_scores, golden_refine,
                                   gradient_residual, refine_problem, relative_residual,
                                   residual_dac_codes, residual_exponent, residual_words,
                                   study, study_afe)


def exact(message: str) -> str:
    return "^" + re.escape(message) + "$"


def test_residual_is_exact_integer_arithmetic():
    codes = np.array([[520, 600], [518, 700]])
    b = np.array([1000, -5])
    assert residual_words(b, codes, 518, [3, 2]).tolist() == [1000 - 2 * 3 - 82 * 2,
                                                              -5 - 0 - 182 * 2]


def test_exponent_and_dac_codes_round_half_up_and_clamp():
    # peak 2**20 + 1: leading one 20; 10-bit DAC, headroom 1: e = 20 - 8 + 1 = 13.
    assert residual_exponent(2 ** 20 + 1, dac_bits=10, headroom=1) == 13
    r = np.array([3 << 12, -(3 << 12), (2 ** 9) << 13, 5])
    # 3 * 2**12 / 2**13 = 1.5 -> 2; -1.5 -> -1 (half up); 512 clamps to 511; 5 -> 0.
    assert residual_dac_codes(r, 13, 10).tolist() == [514, 511, 1023, 512]
    # e <= 0 is an exact left shift; the most negative code is 0.
    assert residual_dac_codes([3, -512], -2, 10).tolist() == [524, 0]


def test_correction_rounds_half_up_with_the_documented_shift():
    # code 514: t = 2; 2 * 3 * 2**(5 + 1) = 384, >> 8 = 1.5 -> 2; code 511: -0.75 -> -1.
    assert correction([514, 511, 512], adc_bits=10, gain=3, msb=5, headroom=1,
                      gain_shift=8) == [2, -1, 0]


def test_entry_score_is_the_gradient_beyond_the_rounding_of_the_served_residual():
    a = np.array([[3, -2, 0, 1], [1, 4, 5, -1]])
    served = np.array([2, -1])
    # Column 0: 3 (4 - 1) + 1 (-2 - 1) = 6 = 2 (A^T s = 5) - (|3| + |1|); column 1: sign -1
    # gives -2 (4 + 1) + 4 (-2 - 1) = -22; column 2: A = 0 in
    # row 0 adds nothing (sign 0): 5 (-2 - 1) = -15; column 3: 1 (4 - 1) + -1 (-2 + 1) = 4.
    assert entry_scores(a, served).tolist() == [6, -2 * 5 + 4 * -3, -15, 4]
    assert 2 * (a.T @ served) - np.abs(a).sum(axis=0) == pytest.approx(entry_scores(a, served))
    # Only the candidates, and only a positive score (0 does not enter).
    assert entering_columns(a, served, 0b1111) == 0b1001
    assert entering_columns(a, served, 0b0110) == 0
    assert entering_columns(np.array([[1], [1]]), np.array([1, 0]), 1) == 0   # 2 - 2 = 0
    # The sweep's residual: R in steps of 2**exponent, round half up, no clamp.
    assert gradient_residual([3 << 12, -(3 << 12), 5 << 30], 13).tolist() == [2, -1, 5 << 17]
    assert gradient_residual([3, -512], -2).tolist() == [12, -2048]


def test_correction_gain_of_the_rram_3bit_afe():
    afe = study_afe(0)
    gain, gain_shift = correction_gain(afe)
    assert (gain, gain_shift) == (132972, 35)
    # g = 63.0857 codes per unit x input gain 16 x (DAC lsb / ADC lsb = 1) = 1009.4
    assert gain / 2 ** 27 == pytest.approx(1 / (63.0857 * 16), rel=1e-5)


def test_relative_residual_is_zero_at_the_optimum_and_scale_free():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 7, (16, 8))
    x = rng.uniform(0.1, 1, 8)
    b = a @ x + 0.1 * rng.standard_normal(16)
    optimum = np.linalg.lstsq(a, b, rcond=None)[0]
    assert relative_residual(a, b, optimum) < 1e-12
    assert relative_residual(a, b, 1.01 * optimum) == \
        pytest.approx(relative_residual(3 * a, b, 1.01 * optimum / 3))
    assert relative_residual(a, b, np.zeros(8)) == 1.0


def test_refine_format_validation_and_residual_width():
    with pytest.raises(ValueError, match=exact("RefineFormat.x_bits must be an integer from 4 to "
                                               "40; got 3")):
        RefineFormat(x_bits=3)
    with pytest.raises(ValueError, match=exact("RefineFormat.b_bits must be an integer from 4 to "
                                               "48; got 49")):
        RefineFormat(b_bits=49)
    # B 32 bits; products 11 + 24 bits, 8 columns: 3 more bits; one sign bit of headroom.
    assert RefineFormat().r_bits(adc_bits=10, cols=8) == 39


def test_golden_refine_validation_messages():
    golden = GoldenController(StudyParams(), study_afe(0))
    good = dict(fmt=RefineFormat(), b=np.zeros(16, dtype=np.int64),
                a_codes=np.full((16, 8), 518), a_offset=518, gain=1, gain_shift=0, passes=1,
                row_mask=1, col_mask=1, headroom=0, avg_log2=0, dac_settle=1, analog_settle=1)
    with pytest.raises(ValueError, match=exact("b must have 16 entries and a_codes shape (16, 8); "
                                               "got shapes (3,) and (16, 8)")):
        golden_refine(golden, **(good | {"b": np.zeros(3)}))
    with pytest.raises(ValueError, match=exact("passes must be an integer from 0 to 15; got 16")):
        golden_refine(golden, **(good | {"passes": 16}))
    with pytest.raises(ValueError, match=exact("b must fit 32-bit two's complement; got 0 .. "
                                               "2147483648")):
        golden_refine(golden, **(good | {"b": np.array([2 ** 31] + [0] * 15)}))
    with pytest.raises(ValueError, match=exact("kind must be one of read-back, levels, noisy; got "
                                               "'other'")):
        refine_problem(study_afe(0), golden, np.random.default_rng(0), b_frac_bits=20,
                       kind="other")
    refused = golden_refine(golden, **(good | {"row_mask": 0}))
    assert (refused.error, refused.done_cycle, refused.passes_done) == (Error.BAD_DIMENSION, 1, 0)


def test_study_meets_the_target_on_a_read_back_consistent_problem():
    (row,) = study([0], passes=3, headroom=2)
    # Measured (python -m anmf.model.refinement --headroom 2, seed 0): 2**-6.6, -10.9, -15.0,
    # -18.3
    assert row.eta[0] > 2 ** -8, "pass 0 alone is at analog precision"
    assert row.eta[2] < 2 ** -12 and row.eta[3] < row.eta[1]
    assert row.error_read < 1e-4, "converges to the read-back problem's solution"
    assert row.error_analog > 1e-3, "which differs from the analog matrix's by the read quantization"
    assert row.passes_done == 4


def test_study_floor_when_the_optimum_has_a_residual():
    # b from the intended levels: the read-back matrix misses it by the programming error, so
    # the corrections' fixed point solves A_analog^T (b - A_read x) = 0, not the read-back
    # normal equations: the relative residual stalls far above 2**-12.
    (row,) = study([3], passes=3, headroom=2, kind="levels")
    assert min(row.eta) > 2 ** -12, row.eta
    assert row.error_read > 1e-3
