"""Reference NMF (anmf.model.nmf) and metrics (anmf.model.metrics)."""
from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
from threadpoolctl import threadpool_limits
import scipy.optimize
from sklearn.datasets import load_digits
from sklearn.decomposition import NMF
from sklearn.decomposition._nmf import _initialize_nmf

from anmf.model import bench
from anmf.model.metrics import mae, psnr_db, relative_error, rmse
from anmf.model.nmf import NMFResult, anls, factorize, hals, initialize, mu


@pytest.fixture(autouse=True, scope="module")
def single_blas_thread():
    """On the shared 2-core machine a multi-threaded BLAS waiting for a busy core makes
    small products 100x slower; one thread keeps these tests fast and steady."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return load_digits().data  # 1797 x 64, values 0..16, bundled with scikit-learn


def _sklearn_error(R: np.ndarray, k: int, iters: int, solver: str, W0: np.ndarray, H0: np.ndarray) -> float:
    model = NMF(k, init="custom", solver=solver, max_iter=iters, tol=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: iteration cap reached, as asked
        W = model.fit_transform(R, W=W0.copy(), H=H0.copy())
    return float(np.linalg.norm(R - W @ model.components_) / np.linalg.norm(R))


def _low_rank(rng: np.random.Generator, m: int, n: int, k: int, noise: float = 0.0) -> np.ndarray:
    R = rng.random((m, k)) @ rng.random((k, n))
    return R + noise * rng.random((m, n))


# --- initialization -----------------------------------------------------------------


@pytest.mark.parametrize("method", ["nndsvd", "nndsvda"])
def test_nndsvd_inits_match_scikit_learn_exactly(method: str) -> None:
    """200 x 12 at k = 5: scikit-learn's randomized SVD samples 15 >= 12 directions, so it
    is exact and both sides see the same singular triplets."""
    R = np.random.default_rng(0).random((200, 12))
    W_ref, H_ref = _initialize_nmf(R, 5, init=method, random_state=0)
    W, H = initialize(R, 5, method)
    np.testing.assert_allclose(W, W_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(H, H_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", ["nndsvd", "nndsvda"])
def test_nndsvd_inits_match_scikit_learn_on_digits(digits: np.ndarray, method: str) -> None:
    """Exact SVD here, randomized (7 power iterations) there: agreement to ~1e-6."""
    W_ref, H_ref = _initialize_nmf(digits, 5, init=method, random_state=0)
    W, H = initialize(digits, 5, method)
    np.testing.assert_allclose(W, W_ref, rtol=0, atol=1e-5 * np.abs(W_ref).max())
    np.testing.assert_allclose(H, H_ref, rtol=0, atol=1e-5 * np.abs(H_ref).max())


def test_random_init_is_seeded_and_scaled() -> None:
    R = np.random.default_rng(1).random((300, 40)) * 4.0
    W, H = initialize(R, 6, "random", seed=3)
    W2, H2 = initialize(R, 6, "random", seed=np.random.default_rng(3))
    W3, _ = initialize(R, 6, "random", seed=4)
    assert np.array_equal(W, W2) and np.array_equal(H, H2), "same seed, same factors"
    assert not np.array_equal(W, W3), "another seed, other factors"
    assert W.shape == (300, 6) and H.shape == (6, 40) and W.min() >= 0 and H.min() >= 0
    # E|N(0,1)| = sqrt(2/pi): the entries average sqrt(mean(R)/k) * sqrt(2/pi).
    expected = np.sqrt(R.mean() / 6) * np.sqrt(2 / np.pi)
    assert abs(W.mean() / expected - 1) < 0.05 and abs(H.mean() / expected - 1) < 0.1


def test_masked_init_fills_missing_entries_with_the_observed_mean() -> None:
    rng = np.random.default_rng(2)
    R = rng.random((30, 20))
    mask = rng.random((30, 20)) < 0.7
    filled = np.where(mask, R, R[mask].mean())
    for method in ("nndsvd", "nndsvda"):
        W, H = initialize(np.where(mask, R, np.nan), 4, method, mask=mask)
        W_ref, H_ref = initialize(filled, 4, method)
        np.testing.assert_array_equal(W, W_ref)
        np.testing.assert_array_equal(H, H_ref)


# --- against scikit-learn on digits -----------------------------------------------------


@pytest.mark.parametrize("iters", [10, 30])
def test_anls_reaches_scikit_learn_cd_error_in_the_same_iterations(digits: np.ndarray, iters: int) -> None:
    W0, H0 = initialize(digits, 10, "nndsvda")
    ours = anls(digits, 10, iters=iters, init=(W0, H0))
    reference = _sklearn_error(digits, 10, iters, "cd", W0, H0)
    assert ours.error <= reference, f"ANLS {ours.error:.5f} vs scikit-learn cd {reference:.5f}"


def test_hals_is_scikit_learn_cd_with_the_other_update_order(digits: np.ndarray) -> None:
    """Our iterations update H then W (as the chip does), scikit-learn's W then H. On the
    transposed problem the sequences coincide, so the errors must agree to rounding; in
    the same orientation HALS must still reach scikit-learn's error within 0.5%."""
    W0, H0 = initialize(digits, 10, "nndsvda")
    ours = hals(digits, 10, iters=30, init=(W0, H0))
    same_order = _sklearn_error(digits.T, 10, 30, "cd", H0.T, W0.T)
    assert abs(ours.error - same_order) <= 1e-9 * same_order
    longer = hals(digits, 10, iters=100, init=(W0, H0))
    reference = _sklearn_error(digits, 10, 100, "cd", W0, H0)
    assert longer.error <= reference * 1.005, f"HALS {longer.error:.5f} vs scikit-learn cd {reference:.5f}"


def test_mu_reaches_scikit_learn_mu_error(digits: np.ndarray) -> None:
    """MU is compared with scikit-learn's MU: it needs far more iterations than CD to
    reach CD's error, which no MU implementation does at equal iteration counts."""
    W0, H0 = initialize(digits, 10, "nndsvda")
    ours = mu(digits, 10, iters=50, init=(W0, H0))
    same_order = _sklearn_error(digits.T, 10, 50, "mu", H0.T, W0.T)
    reference = _sklearn_error(digits, 10, 50, "mu", W0, H0)
    assert abs(ours.error - same_order) <= 1e-6 * same_order
    assert ours.error <= reference * 1.002, f"MU {ours.error:.5f} vs scikit-learn mu {reference:.5f}"


# --- convergence behaviour -----------------------------------------------------------------


@pytest.mark.parametrize("masked", [False, True])
def test_anls_error_decreases_monotonically(masked: bool) -> None:
    rng = np.random.default_rng(3)
    R = _low_rank(rng, 60, 50, 6, noise=0.3)
    mask = rng.random(R.shape) < 0.6 if masked else None
    result = anls(R, 4, iters=25, init="random", seed=1, mask=mask)
    history = np.concatenate([[result.initial_error], result.errors])
    assert np.all(np.diff(history) <= 1e-12 * history[:-1]), f"error went up: {np.diff(history).max():.3g}"
    assert history[-1] < 0.5 * history[0]


def test_exactly_low_rank_matrix_is_recovered() -> None:
    """Sparse factors make the rank-3 NMF essentially unique, so the solvers converge fast
    (dense random factors leave flat valleys that take hundreds of iterations)."""
    rng = np.random.default_rng(1)
    W = np.where(rng.random((40, 3)) < 0.4, 0.0, rng.random((40, 3)))
    H = np.where(rng.random((3, 30)) < 0.4, 0.0, rng.random((3, 30)))
    R = W @ H
    for method in ("anls", "hals"):
        result = factorize(R, 3, method=method, iters=100)
        assert result.error < 1e-8, f"{method}: {result.error:.3g}"
        assert relative_error(R, result.W, result.H) == pytest.approx(result.error, rel=1e-6)


def test_every_method_returns_a_complete_result() -> None:
    R = _low_rank(np.random.default_rng(5), 20, 15, 3, noise=0.1)
    for method in ("anls", "hals", "mu"):
        result = factorize(R, 3, method=method, iters=7)
        assert isinstance(result, NMFResult) and result.method == method
        assert result.W.shape == (20, 3) and result.H.shape == (3, 15)
        assert result.W.min() >= 0 and result.H.min() >= 0
        assert result.iterations == 7 and result.errors.shape == (7,) and result.seconds > 0
        assert result.errors[-1] < result.initial_error
    zero = anls(R, 3, iters=0)
    assert zero.iterations == 0 and zero.error == zero.initial_error


def test_factorize_dispatches_to_the_same_solver() -> None:
    R = _low_rank(np.random.default_rng(6), 25, 20, 4, noise=0.2)
    for method, solver in (("anls", anls), ("hals", hals), ("mu", mu)):
        a = factorize(R, 3, method=method, iters=5, init="random", seed=9)
        b = solver(R, 3, iters=5, init="random", seed=9)
        np.testing.assert_array_equal(a.W, b.W)
        np.testing.assert_array_equal(a.H, b.H)


def test_callback_sees_every_iteration_and_can_stop() -> None:
    R = _low_rank(np.random.default_rng(7), 20, 20, 3, noise=0.1)
    seen: list[tuple[int, float]] = []

    def callback(iteration: int, W: np.ndarray, H: np.ndarray, error: float) -> bool:
        assert error == pytest.approx(relative_error(R, W, H), rel=1e-12)
        seen.append((iteration, error))
        return iteration == 3

    result = anls(R, 3, iters=10, callback=callback)
    assert [i for i, _ in seen] == [1, 2, 3]
    assert result.iterations == 3 and result.errors.tolist() == [e for _, e in seen]


# --- masked factorization ----------------------------------------------------------------


def _masks(rng: np.random.Generator, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    random = rng.random(shape) < 0.5
    # Whole rows and columns missing: few distinct patterns, the grouped path.
    blocks = np.ones(shape, dtype=bool)
    blocks[::4] = False
    blocks[:, ::5] = False
    return {"random": random, "blocks": blocks}


@pytest.mark.parametrize("method", ["anls", "hals", "mu"])
@pytest.mark.parametrize("pattern", ["random", "blocks"])
def test_masked_entries_do_not_influence_the_result(method: str, pattern: str) -> None:
    rng = np.random.default_rng(8)
    R = _low_rank(rng, 40, 30, 4, noise=0.2)
    mask = _masks(rng, R.shape)[pattern]
    other = np.where(mask, R, 1e6 * rng.random(R.shape))
    other[~mask & (rng.random(R.shape) < 0.5)] = np.nan
    for init in ("nndsvda", "random"):
        a = factorize(R, 3, method=method, iters=8, mask=mask, ridge=0.01, init=init)
        b = factorize(other, 3, method=method, iters=8, mask=mask, ridge=0.01, init=init)
        np.testing.assert_array_equal(a.W, b.W)
        np.testing.assert_array_equal(a.H, b.H)
        np.testing.assert_array_equal(a.errors, b.errors)


@pytest.mark.parametrize("pattern", ["random", "blocks"])
@pytest.mark.parametrize("ridge", [0.0, 0.5])
def test_masked_anls_solves_each_observed_subproblem_exactly(pattern: str, ridge: float) -> None:
    """One iteration from (W0, H0): H = per-column NNLS on the observed rows given W0, then
    W = per-row NNLS on the observed columns given H; ridge as extra rows sqrt(ridge) I."""
    rng = np.random.default_rng(9)
    R = _low_rank(rng, 30, 24, 4, noise=0.3)
    mask = _masks(rng, R.shape)[pattern]
    W0, H0 = initialize(R, 3, "random", seed=2, mask=mask)
    result = anls(R, 3, iters=1, init=(W0, H0), mask=mask, ridge=ridge)

    def reference(F: np.ndarray, b: np.ndarray) -> np.ndarray:
        return scipy.optimize.nnls(np.vstack([F, np.sqrt(ridge) * np.eye(3)]), np.concatenate([b, np.zeros(3)]))[0]

    for j in range(R.shape[1]):
        rows = mask[:, j]
        if rows.any():
            np.testing.assert_allclose(result.H[:, j], reference(W0[rows], R[rows, j]), rtol=1e-7, atol=1e-9)
        else:
            assert np.all(result.H[:, j] == 0), "an unobserved column has nothing to fit"
    for i in range(R.shape[0]):
        cols = mask[i]
        if cols.any():
            np.testing.assert_allclose(result.W[i], reference(result.H[:, cols].T, R[i, cols]), rtol=1e-7, atol=1e-9)


def test_all_true_mask_equals_no_mask() -> None:
    R = _low_rank(np.random.default_rng(10), 20, 15, 3, noise=0.1)
    a = anls(R, 3, iters=5, mask=np.ones(R.shape, dtype=bool))
    b = anls(R, 3, iters=5)
    np.testing.assert_array_equal(a.W, b.W)
    np.testing.assert_array_equal(a.H, b.H)


def test_masked_anls_on_movielens_sized_data_is_fast() -> None:
    """943 x 1682 with 100k observed ratings (MovieLens-100K's shape), rank 5."""
    rng = np.random.default_rng(11)
    m, n = 943, 1682
    mask = np.zeros(m * n, dtype=bool)
    mask[rng.choice(m * n, size=100_000, replace=False)] = True
    mask = mask.reshape(m, n)
    R = np.where(mask, rng.integers(1, 6, size=(m, n)).astype(float), np.nan)
    stamps: list[float] = []
    result = anls(R, 5, iters=3, mask=mask, ridge=0.1, callback=lambda *_: stamps.append(time.perf_counter()))
    per_iteration = float(np.diff(stamps).mean())
    assert per_iteration < 2.0, f"{per_iteration:.2f} s per iteration"
    assert result.errors[-1] < result.initial_error


# --- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"R": np.ones(4)}, r"R is 1-D with shape \(4,\); accepted: a 2-D matrix \(m, n\)"),
        ({"R": np.ones((0, 3))}, r"R is empty \(shape \(0, 3\)\); accepted: a matrix with at least one row and column"),
        ({"R": np.array([[1.0, np.nan], [1.0, 1.0]])},
         r"R has 1 NaN or infinite entries; accepted: finite values >= 0 \(mark missing entries False in mask\)"),
        ({"R": np.array([[1.0, np.inf], [np.nan, 1.0]]), "mask": np.array([[True, True], [False, True]])},
         r"R has 1 NaN or infinite observed entries; accepted: finite values >= 0 \(mark missing entries False in mask\)"),
        ({"R": np.array([[1.0, -2.0], [1.0, 1.0]])}, r"R has 1 negative entries \(min -2\); accepted: values >= 0"),
        ({"R": np.zeros((3, 3))}, r"R is zero on every entry; accepted: a matrix with a positive entry"),
        ({"k": 0}, r"rank 0 is out of range for a 4x3 matrix; accepted: an integer from 1 to 3"),
        ({"k": 4}, r"rank 4 is out of range for a 4x3 matrix; accepted: an integer from 1 to 3"),
        ({"k": 2.0}, r"rank 2.0 is out of range for a 4x3 matrix; accepted: an integer from 1 to 3"),
        ({"method": "als"}, r"unknown method 'als'; accepted: anls, hals, mu"),
        ({"init": "svd"}, r"unknown init 'svd'; accepted: nndsvda, nndsvd, random, or a \(W0, H0\) pair"),
        ({"init": (np.ones((4, 3)), np.ones((2, 3)))},
         r"init W0 must have shape \(4, 2\) for R 4x3 at rank 2; got \(4, 3\)"),
        ({"init": (np.ones((4, 2)), -np.ones((2, 3)))}, r"init H0 must hold finite values >= 0"),
        ({"mask": np.ones((4, 3))},
         r"mask must be a bool array of shape \(4, 3\) like R \(True = observed\); got dtype float64, shape \(4, 3\)"),
        ({"mask": np.zeros((4, 3), dtype=bool)}, r"mask has no True entry; accepted: at least one observed entry"),
        ({"ridge": -1.0}, r"ridge must be a finite number >= 0; got -1.0"),
        ({"iters": -1}, r"iters must be a non-negative integer; got -1"),
        ({"seed": -5}, r"seed must be a non-negative integer or a numpy Generator; got -5"),
        ({"callback": 3}, r"callback must be callable or None; got int"),
    ],
)
def test_validation_messages(kwargs: dict, message: str) -> None:
    arguments = {"R": np.ones((4, 3)), "k": 2, "iters": 2, "method": "anls", **kwargs}
    R, k = arguments.pop("R"), arguments.pop("k")
    with pytest.raises(ValueError, match=f"^{message}$"):
        factorize(R, k, **arguments)


def test_initialize_rejects_unknown_method() -> None:
    with pytest.raises(ValueError, match=r"^unknown init 'pca'; accepted: nndsvda, nndsvd, random, or a \(W0, H0\) pair$"):
        initialize(np.ones((3, 3)), 2, "pca")


# --- bench-model ---------------------------------------------------------------------------


def test_bench_rows_accept_an_extra_solver_and_judge_the_reference(digits: np.ndarray, monkeypatch) -> None:
    case = bench.BenchCase(R=digits[:300] / 16.0, rank=5, iters=10, repeats=1)

    def extra_row(case: bench.BenchCase) -> dict:
        result = factorize(case.R, case.rank, method="anls", iters=1)
        return {"name": "one-iteration ANLS", "seconds": result.seconds, "rel_error": result.error, "psnr_db": 0.0}

    monkeypatch.setattr(bench, "ROW_FUNCTIONS", [*bench.ROW_FUNCTIONS, extra_row])
    rows = bench.bench_rows(case)
    names = [row["name"] for row in rows]
    assert names == [bench.SKLEARN_ROW, bench.REFERENCE_ROW, "reference HALS", "reference MU",
                     "chip model (ideal)", "chip model (rram-3bit)", "one-iteration ANLS"]
    assert all(row["seconds"] > 0 and 0 < row["rel_error"] < 1 for row in rows)
    passed, text = bench.verdict(rows)
    assert passed and text.startswith("PASS: reference ANLS error") and "time ratio" in text
    assert "one-iteration ANLS" in bench.format_table(rows)
    iterations, seconds, reached = bench.anls_to_reach(case, rows[0]["rel_error"])
    assert reached and 1 <= iterations <= case.iters and seconds > 0

    monkeypatch.setattr(bench, "ROW_FUNCTIONS", [lambda case: {"name": "incomplete"}])
    with pytest.raises(ValueError, match=r"^bench row from <lambda> lacks seconds, rel_error, psnr_db; "
                                         r"accepted: a dict with name, seconds, rel_error, psnr_db$"):
        bench.bench_rows(case)


def test_bench_main_prints_the_table_and_the_verdict(capsys) -> None:
    assert bench.main(["--rank", "4", "--iters", "3", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "camera 512x512 /255, rank 4, 3 iterations" in out and "1 BLAS thread(s)" in out
    assert bench.REFERENCE_ROW in out and bench.SKLEARN_ROW in out
    assert "PASS: reference ANLS error" in out


@pytest.mark.parametrize("header", ["", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"])
def test_movielens_figures_from_a_ratings_file(tmp_path, header: str) -> None:
    """Both MovieLens layouts (u.data, RecBole's .inter with a header) on a small
    synthetic rank-2 rating matrix: the hold-out RMSE beats predicting the mean."""
    rng = np.random.default_rng(12)
    users, items = np.meshgrid(np.arange(1, 41), np.arange(101, 131), indexing="ij")
    taste = rng.random((40, 2)) @ rng.random((2, 30))
    ratings = np.clip(np.round(1 + 4 * taste / taste.max()), 1, 5)
    keep = rng.random(users.shape) < 0.6
    lines = [f"{u}\t{i}\t{r:g}\t88125{j:04d}" for j, (u, i, r) in enumerate(zip(users[keep], items[keep], ratings[keep]))]
    path = tmp_path / "ratings.tsv"
    path.write_text(header + "\n".join(lines) + "\n")
    user_index, item_index, values = bench.load_ratings(str(path))
    assert values.size == keep.sum() and user_index.max() == 39 and item_index.max() == 29
    figures = bench.movielens_figures(str(path), rank=2, ridge=0.1, iters=20)
    assert figures["shape"] == (40, 30) and figures["ratings"] == keep.sum()
    held_out = ratings[keep][np.random.default_rng(0).random(values.size) < 0.2]
    assert figures["test_rmse"] < rmse(held_out, np.full(held_out.size, values.mean()))
    assert figures["seconds_per_iteration"] > 0


# --- metrics ------------------------------------------------------------------------------


def test_metrics_values() -> None:
    R = np.array([[1.0, 2.0], [3.0, 4.0]])
    W = np.array([[1.0], [2.0]])
    H = np.array([[1.0, 2.0]])
    # R - W H = [[0, 0], [1, 0]]: ||.|| = 1, ||R|| = sqrt(30).
    assert relative_error(R, W, H) == pytest.approx(1 / np.sqrt(30))
    mask = np.array([[True, True], [False, True]])
    assert relative_error(np.where(mask, R, np.nan), W, H, mask=mask) == 0.0
    assert psnr_db(np.zeros(4), np.full(4, 0.1)) == pytest.approx(20.0)
    assert psnr_db(np.zeros(4), np.full(4, 2.0), peak=4.0) == pytest.approx(20 * np.log10(2.0))
    assert psnr_db(R, R) == float("inf")
    assert rmse([1.0, 2.0], [2.0, 4.0]) == pytest.approx(np.sqrt(2.5))
    assert mae([1.0, 2.0], [2.0, 4.0]) == pytest.approx(1.5)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: relative_error(np.ones((2, 2)), np.ones((2, 1)), np.ones((2, 2))),
         r"shapes do not chain: R \(2, 2\), W \(2, 1\), H \(2, 2\); accepted: R \(m, n\), W \(m, k\), H \(k, n\)"),
        (lambda: relative_error(np.zeros((2, 2)), np.ones((2, 1)), np.ones((1, 2))),
         "relative error is undefined: R is zero on every observed entry"),
        (lambda: relative_error(np.ones((2, 2)), np.ones((2, 1)), np.ones((1, 2)), mask=np.ones((2, 2))),
         r"mask must be a bool array of shape \(2, 2\) like R \(True = observed\); got dtype float64, shape \(2, 2\)"),
        (lambda: relative_error(np.full((2, 2), np.nan), np.ones((2, 1)), np.ones((1, 2))),
         "R contains NaN or inf; accepted: finite values"),
        (lambda: psnr_db(np.ones(3), np.ones(4)), r"R and R_hat must have the same shape; got \(3,\) and \(4,\)"),
        (lambda: psnr_db(np.ones(3), np.ones(3), peak=0.0), "peak must be a finite number > 0; got 0.0"),
        (lambda: rmse([], []), "y is empty; accepted: at least one value"),
        (lambda: mae([1.0], [np.inf]), "y_hat contains NaN or inf; accepted: finite values"),
    ],
)
def test_metric_validation_messages(call, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        call()
