"""`anmf compress`: NMF image compression on the reference and the chip model."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anmf.apps.compress import FLOAT_BITS, compress, load_image, storage_ratio, value_bits
from anmf.cli import main
from anmf.data import InputError
from anmf.model.config import preset
from anmf.model.converters import ADCConfig


@pytest.fixture(scope="module")
def small_png(tmp_path_factory) -> Path:
    from skimage import data

    pixels = data.camera()[180:228, 200:240]          # 48 x 40: the coat, the hand, the camera
    path = tmp_path_factory.mktemp("img") / "crop.png"
    Image.fromarray(pixels).save(path)
    return path


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _psnr_from_rel_error(path: Path, rel_error: float) -> float:
    R = np.asarray(Image.open(path), dtype=np.float64) / 255.0
    mse = (rel_error * np.linalg.norm(R)) ** 2 / R.size
    return -10.0 * math.log10(mse)


def _is_png(path: Path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    with Image.open(path) as image:
        return image.size


def test_reference_writes_panel_convergence_and_json(small_png: Path, tmp_path: Path, capsys) -> None:
    out, summary = tmp_path / "figs", tmp_path / "s.json"
    code, stdout, _ = run(["compress", str(small_png), "--rank", "6", "--iters", "8", "--out", str(out),
                           "--json", str(summary)], capsys)
    assert code == 0
    report = json.loads(summary.read_text())
    for key in ("psnr_db", "rel_error", "storage_ratio", "backend", "value_bits", "errors", "panel", "convergence"):
        assert key in report, f"JSON lacks {key!r}"
    assert report["backend"] == "reference" and report["value_bits"] == FLOAT_BITS
    assert report["storage_ratio"] == pytest.approx((48 + 40) * 6 * 32 / (48 * 40 * 8))
    assert report["psnr_db"] == pytest.approx(_psnr_from_rel_error(small_png, report["rel_error"]), rel=1e-9)
    assert len(report["errors"]) == 8 and report["errors"][-1] == pytest.approx(report["rel_error"])
    panel_width, panel_height = _is_png(out / "panel.png")
    assert panel_width > 2 * panel_height, "the panel should be a row of tiles"
    _is_png(out / "convergence.png")
    assert f"PSNR {report['psnr_db']:.2f} dB" in stdout and "32-bit float32" in stdout


def test_model_backend_reports_chip_and_float_from_the_same_start(small_png: Path, tmp_path: Path, capsys) -> None:
    summaries = {}
    for backend in ("reference", "model"):
        path = tmp_path / f"{backend}.json"
        code, stdout, _ = run(["compress", str(small_png), "--rank", "6", "--iters", "8", "--backend", backend,
                               "--out", str(tmp_path / backend), "--json", str(path)], capsys)
        assert code == 0
        summaries[backend] = json.loads(path.read_text())
    chip, ref = summaries["model"], summaries["reference"]
    # The float column of the model run is the reference run: same init, same iterations.
    assert chip["float_rel_error"] == pytest.approx(ref["rel_error"], rel=1e-12)
    assert chip["afe"] == "rram-3bit" and chip["value_bits"] == 9
    assert chip["storage_ratio"] == pytest.approx((48 + 40) * 6 * 9 / (48 * 40 * 8))
    assert chip["exponent_overhead_ratio"] == pytest.approx((48 + 40) * 8 / (48 * 40 * 8))
    assert chip["psnr_db"] == pytest.approx(_psnr_from_rel_error(small_png, chip["rel_error"]), rel=1e-9)
    assert ref["psnr_db"] - 3.0 < chip["psnr_db"] <= ref["psnr_db"] + 0.5, \
        f"chip {chip['psnr_db']:.2f} dB vs float {ref['psnr_db']:.2f} dB"
    assert chip["stats"]["solves"] >= 8 * (48 + 40)
    assert "float reference from the same start" in stdout
    _is_png(tmp_path / "model" / "panel.png")


def test_ideal_chip_compresses_like_the_reference() -> None:
    from skimage import data

    image = data.camera()[100:140, 300:332].astype(np.float64) / 255.0
    ref = compress(image, 4, backend="reference", iters=6)
    chip = compress(image, 4, backend="model", afe="ideal", iters=6)
    assert chip.rel_error == pytest.approx(ref.rel_error, rel=1e-6)
    np.testing.assert_allclose(chip.errors, ref.errors, rtol=1e-6)
    assert chip.value_bits == FLOAT_BITS and chip.exponent_overhead_ratio == 0.0


def test_value_bits_count_the_adc_codes_a_clamped_output_can_produce() -> None:
    rram = preset("rram-3bit")
    assert value_bits("reference") == 32
    assert value_bits("model", rram) == 9                           # +-1 V, 10 bits: codes 512..1023
    assert value_bits("model", rram.replace(adc=rram.adc.replace(bits=12))) == 11
    unipolar = rram.replace(adc=ADCConfig(bits=8, v_min_v=0.0, v_max_v=1.0))
    assert value_bits("model", unipolar) == 8
    assert value_bits("model", preset("ideal")) == 32               # unquantized: counted as float32


def test_storage_ratio_formula() -> None:
    assert storage_ratio((512, 512), 32, 32) == pytest.approx(0.5)
    assert storage_ratio((512, 512), 32, 9) == pytest.approx(1024 * 32 * 9 / (512 * 512 * 8))


def test_bundled_images_load_without_files() -> None:
    pixels, name = load_image("skimage:coins")
    assert name == "skimage:coins" and pixels.shape == (303, 384)
    assert 0.0 <= pixels.min() and pixels.max() <= 1.0


@pytest.mark.parametrize(
    ("image", "extra", "expected"),
    [
        ("matrix.npy", [], "compress takes an image; got '.npy' for"),
        ("skimage:astronautx", [], "unknown bundled image 'astronautx'; accepted: skimage:camera"),
        ("missing.png", [], "no such file"),
        ("png", ["--rank", "41"], "rank 41 is out of range for a 48x40 matrix; accepted: 1 to 40"),
        ("png", ["--backend", "model", "--afe", "nonsense"], "unknown AFE preset 'nonsense'"),
    ],
)
def test_user_errors_exit_2_with_one_line(small_png: Path, tmp_path: Path, capsys, image, extra, expected) -> None:
    source = str(small_png) if image == "png" else (image if image.startswith("skimage:") else str(tmp_path / image))
    if image == "matrix.npy":
        np.save(tmp_path / image, np.ones((4, 4)))
    rank = [] if "--rank" in extra else ["--rank", "2"]
    code, _, stderr = run(["compress", source, *rank, "--iters", "1", "--out", str(tmp_path / "o"), *extra], capsys)
    assert code == 2, f"expected exit 2, got {code}; stderr: {stderr!r}"
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], f"expected {expected!r} in {stderr!r}"


def test_compress_validates_its_arguments() -> None:
    with pytest.raises(InputError, match="unknown backend 'gpu'; accepted: reference, model"):
        compress(np.ones((4, 4)) / 2, 1, backend="gpu")
    with pytest.raises(InputError, match=r"the image must be a non-empty 2-D array of values in \[0, 1\]"):
        compress(np.full((4, 4), 2.0), 1)
    with pytest.raises(InputError, match="the image is all black"):
        compress(np.zeros((4, 4)), 1)
    with pytest.raises(InputError, match="iters must be an integer >= 1; got 0"):
        compress(np.ones((4, 4)) / 2, 1, iters=0)


def test_failed_row_policy_reaches_the_chip() -> None:
    from skimage import data

    image = data.camera()[100:132, 300:332].astype(np.float64) / 255.0
    faulty = preset("rram-3bit")
    faulty = faulty.replace(device=faulty.device.replace(stuck_high_rate=0.03))
    excluded = compress(image, 3, backend="model", iters=3, afe=faulty, failed_rows="exclude")
    kept = compress(image, 3, backend="model", iters=3, afe=faulty, failed_rows="keep")
    assert excluded.stats["failed_cells"] > 0 and excluded.stats["excluded_rows"] > 0
    assert kept.stats["failed_cells"] > 0 and kept.stats["excluded_rows"] == 0
    assert excluded.psnr_db > kept.psnr_db, f"exclude {excluded.psnr_db:.2f} dB vs keep {kept.psnr_db:.2f} dB"
    with pytest.raises(InputError, match="failed_rows must be one of 'keep', 'exclude'; got 'drop'"):
        compress(image, 3, backend="model", iters=1, failed_rows="drop")
