"""Verilator lint of the generated controller: clean on the default build with only Amaranth's
waivers, and a real problem in a design is reported and fails the command. Ruff (pyflakes rules,
pyproject.toml) on the Python sources."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from anmf.hdl.controller import TOP_MODULE, verilog_text
from anmf.hdl.lint import WAIVERS, lint, main

BROKEN = """\
module broken(clk, a, spare_in, q);
  input clk;
  input [3:0] a;
  input spare_in;
  output reg [3:0] q;
  always @(*) if (a[0]) q = a;
endmodule
"""


def test_default_build_lints_clean_with_amaranths_waivers_only(tmp_path: Path, capsys) -> None:
    source = tmp_path / f"{TOP_MODULE}.v"
    source.write_text(verilog_text())
    report = lint(source)
    assert report.errors == [] and report.unwaived == [], "\n".join(map(str, report.unwaived))
    assert report.waived["UNUSEDSIGNAL"] > 0, "the alias waivers are exercised"
    assert main([str(source)]) == 0
    assert capsys.readouterr().out.startswith(f"{source}: clean (waived: ")


def test_every_waiver_names_a_rule_and_gives_a_reason() -> None:
    assert all(w.rule.isupper() and len(w.reason) > 40 for w in WAIVERS)
    assert {w.rule for w in WAIVERS} == {"DECLFILENAME", "PROCASSINIT", "CASEINCOMPLETE", "WIDTHEXPAND",
                                          "WIDTHTRUNC", "UNUSEDSIGNAL"}


def test_a_latch_and_an_unused_input_are_reported_and_fail(tmp_path: Path, capsys) -> None:
    source = tmp_path / "broken.v"
    source.write_text(BROKEN)
    report = lint(source)
    found = {(w.rule, w.signal) for w in report.unwaived}
    assert ("UNUSEDSIGNAL", "spare_in") in found, found
    assert any(rule == "LATCH" for rule, _ in found), found
    assert main([str(source)]) == 1
    assert "not waived" in capsys.readouterr().out


def test_missing_file_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path / "absent.v")]) == 2
    assert capsys.readouterr().err == f"lint: error: no such Verilog file: {tmp_path / 'absent.v'}\n"


ROOT = Path(__file__).resolve().parent.parent


def test_python_sources_pass_ruff_with_the_projects_rules(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "ruff", "check", "--no-cache"]
    done = subprocess.run([*command, "hdl", "model", "testbench", "src", "tests"], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    # The same rules find an unused import and an undefined name.
    (tmp_path / "bad.py").write_text("import os\n\n\ndef f():\n    return undefined_name\n")
    done = subprocess.run([*command, "--config", str(ROOT / "pyproject.toml"), str(tmp_path / "bad.py")],
                          capture_output=True, text=True)
    assert done.returncode == 1 and "F401" in done.stdout and "F821" in done.stdout, done.stdout
