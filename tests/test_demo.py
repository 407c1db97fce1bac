"""`anmf demo` end to end on a small crop (src/anmf/demo.py): the co-simulation pipeline
(host job over AXI4-Lite on the RTL in Icarus, through testbench/cosim_job.py) and the model
backend (no simulator) write summary.json and the PNG panel with sane values, and agree."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from anmf.demo import run_demo

KEYS = ("rel_error_chip", "rel_error_reference", "psnr_db_chip", "psnr_db_reference", "cycles",
        "chip_seconds", "sim", "seconds", "counts", "status", "shape", "rank", "iterations")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_summary(folder: Path, sim: str, size: int) -> dict:
    summary = json.loads((folder / "summary.json").read_text())
    missing = [key for key in KEYS if key not in summary]
    assert not missing, f"summary.json lacks {missing}"
    assert summary["sim"] == sim and summary["shape"] == [size, size]
    assert summary["status"] == "NONE"
    reference = summary["rel_error_reference"]
    assert 0 < reference < 1
    # rram-3bit: within 1.5x the float reference plus 0.03 (tests/test_run_nmf_cocotb.py's bound).
    assert 0 < summary["rel_error_chip"] <= 1.5 * reference + 0.03, summary
    assert summary["psnr_db_chip"] > 10 and summary["psnr_db_reference"] > 10
    assert summary["cycles"] > 1000 and summary["chip_seconds"] == pytest.approx(
        summary["cycles"] / summary["clock_hz"])
    assert summary["counts"]["solves"] >= 2 * size and summary["counts"]["pulses"] > 0
    assert summary["seconds"] > 0
    assert (folder / "panel.png").read_bytes()[:8] == PNG_SIGNATURE
    return summary


def test_demo_rtl_on_icarus_and_the_model_backend_agree(tmp_path: Path, capsys) -> None:
    rtl = run_demo(tmp_path / "rtl", backend="rtl", sim="icarus", size=8, rank=2, iterations=1,
                   progress=True)
    printed = capsys.readouterr().out
    assert "RTL in icarus" in printed and "reference ANLS (float64)" in printed
    assert check_summary(tmp_path / "rtl", "icarus", 8) == rtl
    model = run_demo(tmp_path / "model", backend="model", size=8, rank=2, iterations=1,
                     progress=False)
    check_summary(tmp_path / "model", "model", 8)
    # The same host code, AFE seed and noise draws: the same factors on both backends.
    assert rtl["rel_error_chip"] == model["rel_error_chip"]
    assert rtl["counts"] == model["counts"]
    # The RTL's count runs to the end the host saw (progress reads every 50 us at most).
    assert model["cycles"] <= rtl["cycles"] <= model["cycles"] + 5000 + 100


@pytest.mark.parametrize("change, message", [
    (dict(backend="fpga"), "unknown backend 'fpga'; accepted: rtl, model"),
    (dict(size=65), "size must be an integer from 2 to 64; got 65"),
])
def test_demo_refuses_bad_options(tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        run_demo(tmp_path, **change)
    assert not (tmp_path / "summary.json").exists()
