"""`anmf factorize/compress --backend rtl` (src/anmf/rtl_backend.py): the controller RTL in
Icarus with the analog model, through testbench/cosim_job.py. A problem that fits the
default array runs as one RUN_NMF command; a taller one runs host-driven and tiled."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from anmf.cli import main
from anmf.model.nmf import anls, initialize


@pytest.fixture(scope="module")
def crop() -> np.ndarray:
    from skimage import data

    return data.camera()[200:272, 200:208].astype(np.float64) / 255.0


@pytest.mark.parametrize("rows, mode", [(8, "run_nmf"), (72, "host_anls")])
def test_factorize_on_the_rtl(crop: np.ndarray, tmp_path: Path, capsys, rows: int, mode: str) -> None:
    R = crop[:rows]
    np.save(tmp_path / "R.npy", R)
    summary_file = tmp_path / "summary.json"
    assert main(["factorize", str(tmp_path / "R.npy"), "--rank", "2", "--iters", "1", "--backend", "rtl",
                 "--sim", "icarus", "--out", str(tmp_path), "--json", str(summary_file)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert f"on rtl (icarus, {mode})" in line
    summary = json.loads(summary_file.read_text())
    assert summary["mode"] == mode and summary["sim"] == "icarus" and summary["shape"] == [rows, 8]
    W, H = np.load(tmp_path / "W.npy"), np.load(tmp_path / "H.npy")
    assert W.shape == (rows, 2) and H.shape == (2, 8) and W.min() >= 0 and H.min() >= 0
    reference = anls(R, 2, iters=1, init=initialize(R, 2, "nndsvda", 0)).errors[-1]
    # rram-3bit with noise: within 1.5x the float reference plus 0.03, as the RUN_NMF bench.
    assert summary["rel_error"] <= 1.5 * reference + 0.03, (summary["rel_error"], reference)
    assert summary["cycles"] > 1000 and summary["counts"]["solves"] >= rows + 8
    if mode == "host_anls":   # 72 rows > 64: W was reduced before programming
        assert summary["counts"]["reductions"] >= 1


@pytest.mark.parametrize("extra, expected", [
    (["--afe", "my.toml"], "--afe 'my.toml' is not available on the rtl backend; accepted presets: ideal, "
                           "rram-3bit, pessimistic"),
    (["--method", "hals"], "--method hals is not available on the rtl backend; accepted: anls"),
])
def test_rtl_backend_refuses_what_it_cannot_run(crop: np.ndarray, tmp_path: Path, capsys, extra, expected) -> None:
    np.save(tmp_path / "R.npy", crop[:8])
    code = main(["factorize", str(tmp_path / "R.npy"), "--rank", "2", "--backend", "rtl", *extra])
    stderr = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(stderr) == 1 and expected in stderr[0], (code, stderr)


def test_compress_on_the_rtl(crop: np.ndarray, tmp_path: Path) -> None:
    from anmf.apps.compress import compress, write_figures

    image = crop[:8]
    result = compress(image, 2, backend="rtl", iters=1, sim="icarus")
    assert result.backend == "rtl" and result.afe == "rram-3bit" and result.value_bits == 9
    assert result.errors.shape == (1,) and result.rel_error == pytest.approx(result.errors[-1], rel=1e-9)
    assert result.rel_error <= 1.5 * result.float_rel_error + 0.03
    assert result.stats["cycles"] > 1000 and result.stats["solves"] >= 16
    panel, convergence = write_figures(result, image, tmp_path)
    assert panel.read_bytes()[:4] == b"\x89PNG" and convergence.read_bytes()[:4] == b"\x89PNG"
