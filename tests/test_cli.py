"""The `anmf factorize` contract: outputs, JSON keys, and one-line errors with exit status 2."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from anmf.cli import main


@pytest.fixture
def lowrank(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    R = rng.random((20, 3)) @ rng.random((3, 15))
    path = tmp_path / "r.npy"
    np.save(path, R)
    return path


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_factorize_reference_writes_factors_and_json(lowrank: Path, tmp_path: Path, capsys) -> None:
    out, js = tmp_path / "o", tmp_path / "s.json"
    code, stdout, _ = run(["factorize", str(lowrank), "--rank", "3", "--iters", "200", "--out", str(out),
                           "--json", str(js)], capsys)
    assert code == 0
    W, H = np.load(out / "W.npy"), np.load(out / "H.npy")
    assert W.shape == (20, 3) and H.shape == (3, 15)
    assert W.min() >= 0 and H.min() >= 0
    summary = json.loads(js.read_text())
    for key in ("backend", "rank", "iters", "shape", "rel_error", "seconds"):
        assert key in summary, f"JSON summary lacks {key!r}: {summary}"
    assert summary["backend"] == "reference" and summary["shape"] == [20, 15]
    assert summary["rel_error"] < 1e-3, "an exactly rank-3 matrix should factorize almost exactly at rank 3"
    assert "relative error" in stdout


def test_image_input_reports_psnr(tmp_path: Path, capsys) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = (rng.random((16, 12)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "img.png")
    js = tmp_path / "s.json"
    code, _, _ = run(["factorize", str(tmp_path / "img.png"), "--rank", "4", "--iters", "5",
                      "--out", str(tmp_path / "o"), "--json", str(js)], capsys)
    assert code == 0
    summary = json.loads(js.read_text())
    assert summary["shape"] == [16, 12]
    assert np.isfinite(summary["psnr_db"]) and summary["psnr_db"] > 0


def _bad(tmp_path: Path, name: str, data) -> Path:
    path = tmp_path / name
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        np.save(path, data)
    return path


@pytest.mark.parametrize(
    "make, extra, expected",
    [
        (lambda p: _bad(p, "neg.npy", -np.ones((3, 3))), [], "negative entries"),
        (lambda p: _bad(p, "nan.npy", np.array([[1.0, np.nan], [1.0, 2.0]])), [], "NaN or infinite"),
        (lambda p: _bad(p, "inf.npy", np.array([[1.0, np.inf], [1.0, 2.0]])), [], "NaN or infinite"),
        (lambda p: _bad(p, "cube.npy", np.ones((2, 2, 2))), [], "is 3-D"),
        (lambda p: _bad(p, "empty.npy", np.ones((0, 4))), [], "is empty"),
        (lambda p: _bad(p, "junk.npy", b"not a numpy file"), [], "cannot read"),
        (lambda p: _bad(p, "junk.png", b"not an image"), [], "cannot read"),
        (lambda p: _bad(p, "data.txt", b"1,2\n3,4\n"), [], "unknown file type '.txt'"),
        (lambda p: p / "missing.npy", [], "no such file"),
        (lambda p: _bad(p, "ok.npy", np.ones((4, 5))), ["--rank", "5"], "rank 5 is out of range for a 4x5 matrix; accepted: 1 to 4"),
        (lambda p: _bad(p, "ok.npy", np.ones((4, 5))), ["--backend", "model", "--afe", "nonsense"], "unknown AFE preset 'nonsense'"),
        (lambda p: _bad(p, "ok.npy", np.ones((4, 5))), ["--backend", "model", "--method", "mu"], "not available on the model backend"),
    ],
)
def test_user_errors_exit_2_with_one_line(tmp_path: Path, capsys, make, extra, expected) -> None:
    path = make(tmp_path)
    rank = [] if "--rank" in extra else ["--rank", "2"]
    argv = ["factorize", str(path), *rank, "--iters", "2", "--out", str(tmp_path / "o"), *extra]
    code, stdout, stderr = run(argv, capsys)
    assert code == 2, f"expected exit 2, got {code}; stderr: {stderr!r}"
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one error line, got: {stderr!r}"
    assert expected in lines[0], f"expected {expected!r} in {lines[0]!r}"
    assert "Traceback" not in stderr


def test_bad_rank_value_is_a_usage_error(tmp_path: Path, capsys) -> None:
    path = _bad(tmp_path, "ok.npy", np.ones((4, 5)))
    with pytest.raises(SystemExit) as exc:
        main(["factorize", str(path), "--rank", "0"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "must be >= 1" in err[0]


def test_console_script_runs_without_traceback(tmp_path: Path) -> None:
    exe = shutil.which("anmf") or str(Path(__import__("sys").executable).parent / "anmf")
    bad = _bad(tmp_path, "neg.npy", -np.ones((3, 3)))
    proc = subprocess.run([exe, "factorize", str(bad), "--rank", "1"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("anmf: error:") and "Traceback" not in proc.stderr


def test_demo_writes_summary(tmp_path: Path, capsys) -> None:
    code, stdout, _ = run(["demo", "--backend", "model", "--size", "8", "--iterations", "1",
                           "--no-progress", "--out", str(tmp_path)], capsys)
    assert code == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    for key in ("rel_error_chip", "rel_error_reference", "cycles", "sim", "seconds", "shape"):
        assert key in summary, f"summary.json lacks {key!r}"
    assert summary["shape"] == [8, 8] and summary["sim"] == "model"
    assert "chip (golden model)" in stdout and (tmp_path / "panel.png").is_file()


def test_demo_refuses_a_crop_beyond_the_array(tmp_path: Path, capsys) -> None:
    code, _, err = run(["demo", "--backend", "model", "--size", "65", "--out", str(tmp_path)], capsys)
    assert code == 2 and "size must be an integer from 2 to 64; got 65" in err
