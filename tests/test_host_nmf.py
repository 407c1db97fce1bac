"""RUN_NMF from the host (src/anmf/host: ChipDriver's RUN_NMF methods, ModelDriver, and
``run_nmf`` of nmf_run.py) without a Verilog simulator: the model backend against the golden
model called directly (buffers, counts, done cycle, bit for bit), masks, progress, abort,
and the validation messages. The register backend runs in the cocotb bench
(tests/test_run_nmf_cocotb.py)."""
from __future__ import annotations

import asyncio
import re
from typing import Any

import numpy as np
import pytest

from anmf.hdl.params import BuildParams
from anmf.host import ErrorCode, ModelDriver, ProgramSettings, Timing
from anmf.host.driver import NMFProgress, NMFSettings
from anmf.host.nmf_run import check_nmf_inputs, fit_product_scale, run_nmf
from anmf.model.afe import AnalogFrontEnd
from anmf.model.config import config_from_dict
from anmf.model.formats import fixed_from_factor, r_codes, window_codes
from anmf.model.golden import GoldenController
from anmf.model.metrics import relative_error
from anmf.model.nmf import anls, initialize

SMALL = BuildParams(rows=16, cols=4, spare=1, avg_max_log2=2)
TIMING = Timing(adc_samples=1, dac_settle=16, analog_settle=100, watchdog=4000)
#: rram-3bit without IR drop, a 30 ns ADC (short runs), deterministic (bit-exact comparisons).
AFE_CONFIG = {"preset": "rram-3bit", "seed": 3, "adc": {"conversion_time_s": 30e-9},
              "crossbar": {"ir_drop": False}}


def exact(message: str) -> str:
    return "^" + re.escape(message) + "$"


def new_afe() -> AnalogFrontEnd:
    return AnalogFrontEnd.from_build_params(config_from_dict(AFE_CONFIG), SMALL,
                                            deterministic=True)


def window(afe: AnalogFrontEnd) -> tuple[int, int]:
    c = afe.config
    return window_codes(g_offset_s=c.circuit.g_offset_s, g_max_s=c.device.g_max_s,
                        full_scale_s=afe.read_full_scale_s, bits=afe.adc_bits)


def programming(afe: AnalogFrontEnd) -> ProgramSettings:
    return afe.program_settings(read_settle=16)


def problem(m: int = 8, n: int = 8, k: int = 2, seed: int = 1,
            missing: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    R = rng.uniform(0.1, 1.0, (m, k)) @ rng.uniform(0.1, 1.0, (k, n))
    observed = rng.random((m, n)) >= missing
    return R, observed


async def configured(afe: AnalogFrontEnd) -> ModelDriver:
    driver = ModelDriver(SMALL, afe)
    await driver.configure(timing=TIMING, programming=programming(afe))
    return driver


def golden_run(R: np.ndarray, observed: np.ndarray, k: int, iterations: int,
               **changes: Any) -> tuple[GoldenController, Any]:
    """The golden model called directly with the buffers run_nmf loads."""
    afe = new_afe()
    golden = GoldenController(SMALL, afe)
    codes, _ = r_codes(np.where(observed, R, 0.0), SMALL.r_bits)
    W0 = initialize(np.where(observed, R, 0.0), k, "nndsvda", 0, mask=observed)[0]
    mantissa, col_exp = fixed_from_factor(W0, SMALL.mantissa_bits)
    golden.load_nmf(codes, observed, mantissa, col_exp)
    base, span = window(afe)
    outcome = golden.run_nmf(m=R.shape[0], n=R.shape[1], k=k, iterations=iterations,
                             settings=programming(afe), dac_settle=TIMING.dac_settle,
                             analog_settle=TIMING.analog_settle, g_offset=base, g_span=span,
                             watchdog_limit=TIMING.watchdog, **changes)
    return golden, outcome


def assert_buffers_equal(driver: ModelDriver, golden: GoldenController) -> None:
    mine = driver.golden
    for name in ("nmf_w", "nmf_h", "nmf_w_exp", "nmf_h_exp", "targets", "fault_map"):
        assert np.array_equal(getattr(mine, name), getattr(golden, name)), name


@pytest.mark.parametrize("missing", [0.0, 0.15])
def test_model_backend_matches_the_golden_models_run_nmf_bit_for_bit(missing: float) -> None:
    R, observed = problem(missing=missing)
    if missing:
        observed[:, 3] = False   # a fully missing column: its H column is not solved (0)
    afe = new_afe()
    seen: list[NMFProgress] = []

    async def main() -> Any:
        driver = await configured(afe)
        result = await run_nmf(driver, R, 2, 2, mask=observed, window=window(afe),
                               on_progress=seen.append)
        return driver, result

    driver, result = asyncio.run(main())
    golden, expected = golden_run(R, observed, 2, 2)
    assert expected.error == ErrorCode.NONE and result.completed
    assert_buffers_equal(driver, golden)
    W, H = golden.nmf_factors(8, 8, 2)
    assert np.array_equal(result.factors.W, W) and np.array_equal(result.factors.H, H)
    assert result.cycles == expected.done_cycle
    assert result.counts == {"solves": expected.solves, "pulses": expected.pulse_count,
                             "over_range": expected.over_range_samples,
                             "failed_cells": expected.failed_cells,
                             "retries": expected.retries, "unresolved": expected.unresolved}
    assert result.report.progress == NMFProgress(2, "H", "IDLE", seen[-1].rhs_done)
    phases = [(p.iteration, p.step, p.phase) for p in seen]
    for step in ((0, "H", "PROGRAM"), (0, "H", "SOLVE"), (0, "W", "PROGRAM"), (1, "W", "SOLVE")):
        assert step in phases, f"{step} not reported: {phases}"
    if missing:
        assert np.all(result.factors.h_mantissa[:, 3] == 0), "a missing column gets H = 0"
        assert np.all(result.H[:, 3] == 0)
    # The product, with K fitted, approximates R about as well as float ANLS from the same W0.
    assert result.error < result.initial_error
    reference = anls(np.where(observed, R, 0.0), 2, iters=2, mask=observed,
                     init=initialize(np.where(observed, R, 0.0), 2, "nndsvda", 0, mask=observed))
    assert result.error < max(2.0 * reference.error, 0.08), (result.error, reference.error)
    assert result.error == pytest.approx(relative_error(R, result.W, result.H, mask=observed))


def test_abort_after_the_first_h_step_keeps_whole_factors() -> None:
    R, observed = problem(seed=4)
    afe = new_afe()

    async def main() -> Any:
        driver = await configured(afe)
        result = await run_nmf(driver, R, 2, 2, window=window(afe),
                               abort_if=lambda p: (p.step, p.phase) == ("W", "SOLVE"))
        return driver, result

    driver, result = asyncio.run(main())
    golden, expected = golden_run(R, observed, 2, 2, stop_after=1)
    assert result.report.status.error == ErrorCode.ABORTED and not result.completed
    assert result.cycles is None
    assert expected.half_steps == 1
    # H is the first H-step's, W still the initial one: both whole.
    for name in ("nmf_w", "nmf_h", "nmf_w_exp", "nmf_h_exp"):
        assert np.array_equal(getattr(driver.golden, name), getattr(golden, name)), name
    assert result.report.progress.iteration == 0


def test_model_abort_before_waiting_cancels_the_run() -> None:
    R, observed = problem()
    afe = new_afe()

    async def main() -> Any:
        driver = await configured(afe)
        codes, _ = r_codes(R, SMALL.r_bits)
        mantissa, col_exp = fixed_from_factor(np.ones((8, 2)), SMALL.mantissa_bits)
        await driver.load_nmf(codes, observed, mantissa, col_exp)
        await driver.start_nmf(NMFSettings(8, 8, 2, 1, window(afe)))
        assert (await driver.status()).busy
        status = await driver.abort()
        with pytest.raises(RuntimeError, match=exact(
                "wait_nmf: no RUN_NMF was started (call start_nmf first)")):
            await driver.wait_nmf()
        return driver, status

    driver, status = asyncio.run(main())
    assert status.error == ErrorCode.ABORTED and not status.busy
    assert not driver.golden.nmf_h.any(), "nothing ran"


def test_fit_product_scale_is_the_least_squares_factor_on_observed_entries() -> None:
    product = np.array([[1.0, 2.0], [3.0, 4.0]])
    observed = np.array([[True, True], [True, False]])
    R = 2.5 * product
    R[1, 1] = 100.0   # missing: ignored
    assert fit_product_scale(R, product, observed) == pytest.approx(2.5)
    assert fit_product_scale(R, np.zeros((2, 2)), observed) == 1.0


# ---- validation --------------------------------------------------------------------------

BAD_INPUTS = [
    ("R too tall", dict(R=np.ones((17, 4))),
     "R must be an (m, n) matrix with 1 <= m, n <= 16 (ROWS); got shape (17, 4)"),
    ("R 1-D", dict(R=np.ones(4)),
     "R must be an (m, n) matrix with 1 <= m, n <= 16 (ROWS); got shape (4,)"),
    ("mask shape", dict(mask=np.ones((4, 3), dtype=bool)),
     "mask must be a bool array of R's shape (4, 4); got bool array of shape (4, 3)"),
    ("mask dtype", dict(mask=np.ones((4, 4))),
     "mask must be a bool array of R's shape (4, 4); got float64 array of shape (4, 4)"),
    ("negative", dict(R=-np.ones((4, 4))),
     "R must hold finite values >= 0 on its observed entries"),
    ("all zero", dict(R=np.zeros((4, 4))),
     "R is zero on every observed entry: nothing to factorize"),
    ("k beyond cols", dict(k=5),
     "k must be an integer from 1 to 4 (COLS = 4 and min(m, n) = 4); got 5"),
    ("k zero", dict(k=0), "k must be an integer from 1 to 4 (COLS = 4 and min(m, n) = 4); got 0"),
    ("iterations", dict(iterations=0), "iterations must be an integer from 1 to 65535; got 0"),
    ("window", dict(window=(1000, 100)),
     "NMFSettings.window must be (base, span) codes with base >= 0, span >= 1 and base + span "
     "<= 1024 (2**ADC_BITS); got (1000, 100)"),
    ("init name", dict(init="svd"),
     "unknown init 'svd'; accepted: nndsvda, nndsvd, random, a W0 (4, 2) or a (W0, H0) pair"),
    ("init shape", dict(init=np.ones((4, 3))),
     "init W0 must be an (4, 2) array of finite values >= 0; got shape (4, 3)"),
]


@pytest.mark.parametrize("name, change, message", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_run_nmf_refuses_bad_inputs_before_touching_the_chip(name: str, change: dict[str, Any],
                                                             message: str) -> None:
    afe = new_afe()
    arguments = dict(R=np.ones((4, 4)), k=2, iterations=1, mask=None, window=(518, 442),
                     init="nndsvda")
    arguments.update(change)

    async def main() -> ModelDriver:
        driver = await configured(afe)
        with pytest.raises(ValueError, match=exact(message)):
            await run_nmf(driver, arguments.pop("R"), arguments.pop("k"),
                          arguments.pop("iterations"), **arguments)
        return driver

    driver = asyncio.run(main())
    assert not driver.golden.nmf_r.any() and driver.nmf_shape is None, "nothing was loaded"


def test_load_and_start_validate_the_buffers_and_settings() -> None:
    afe = new_afe()
    codes = np.ones((4, 4), dtype=np.int64)
    seen = np.ones((4, 4), dtype=bool)
    mantissa = np.ones((4, 2), dtype=np.int64)

    async def main() -> None:
        driver = ModelDriver(SMALL, afe)
        with pytest.raises(ValueError, match=exact(
                "r_codes must be an (m, n) array with 1 <= m, n <= 16 (ROWS) of integer codes "
                "from 0 to 65535; got int64 array of shape (4, 17)")):
            await driver.load_nmf(np.ones((4, 17), dtype=np.int64), seen, mantissa, [0, 0])
        with pytest.raises(ValueError, match=exact(
                "observed must be a bool array of the shape of r_codes (4, 4); got int64 array "
                "of shape (4, 4)")):
            await driver.load_nmf(codes, codes, mantissa, [0, 0])
        with pytest.raises(ValueError, match=exact(
                "w_mantissa must be an (m, k) array with m = 4 (rows of r_codes) and 1 <= k <= 4 "
                "(COLS) of integer codes from 0 to 511; got int64 array of shape (4, 2)")):
            await driver.load_nmf(codes, seen, 512 * mantissa, [0, 0])
        with pytest.raises(ValueError, match=exact(
                "w_col_exp must be 2 integer exponents from -128 to 127 (8 bits); got int64 "
                "array of shape (2,)")):
            await driver.load_nmf(codes, seen, mantissa, [0, 200])
        with pytest.raises(ValueError, match=exact(
                "w_row_exp must be 4 integer exponents from -128 to 127 (8 bits); got int64 "
                "array of shape (3,)")):
            await driver.load_nmf(codes, seen, mantissa, [0, 0], [0, 0, 0])
        with pytest.raises(ValueError, match=exact(
                "NMFSettings.k must be an integer from 1 to 4; got 5")):
            await driver.start_nmf(NMFSettings(4, 4, 5, 1, (518, 442)))
        with pytest.raises(ValueError, match=exact(
                "NMFSettings.range_retries must be an integer from 0 to 15; got 16")):
            await driver.start_nmf(NMFSettings(4, 4, 2, 1, (518, 442), range_retries=16))
        with pytest.raises(RuntimeError, match=exact(
                "start_nmf needs the programming settings and the timing (for the watchdog): "
                "call configure(timing=Timing(...), programming=ProgramSettings(...)) first")):
            await driver.start_nmf(NMFSettings(4, 4, 2, 1, (518, 442)))
        await driver.load_nmf(codes, seen, mantissa, [0, 0])
        await driver.configure(timing=TIMING, programming=programming(afe))
        with pytest.raises(ValueError, match=exact(
                "NMFSettings (m, n, k) = (4, 4, 1) differ from the loaded problem's (4, 4, 2)")):
            await driver.start_nmf(NMFSettings(4, 4, 1, 1, (518, 442)))
        with pytest.raises(ValueError, match=exact("interval_s must be a finite time > 0 (s); "
                                                   "got 0")):
            await driver.wait_nmf(interval_s=0)
        with pytest.raises(ValueError, match=exact("k must be an integer from 1 to 4; got 0")):
            await driver.read_nmf(4, 4, 0)

    asyncio.run(main())


def test_check_nmf_inputs_zeroes_missing_entries() -> None:
    R = np.array([[1.0, np.nan], [2.0, 3.0]])
    observed = np.array([[True, False], [True, True]])
    matrix, mask = check_nmf_inputs(R, 1, 1, observed, rows=4, cols=2)
    assert np.array_equal(matrix, [[1.0, 0.0], [2.0, 3.0]])
    assert np.array_equal(mask, observed)
