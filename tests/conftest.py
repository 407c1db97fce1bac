"""Project-wide test set-up."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from threadpoolctl import threadpool_limits

# `make test` runs pytest-xdist workers, one test file each at a time. Benches of different
# files share build folders by bench name (build/scenarios-icarus...), so each worker builds
# under its own root; set before any test module imports anmf.testbench.simulators.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if _WORKER and "ANMF_BUILD_ROOT" not in os.environ:
    os.environ["ANMF_BUILD_ROOT"] = str(Path(__file__).resolve().parent.parent / "build" / f"xdist-{_WORKER}")


@pytest.fixture(autouse=True, scope="session")
def _one_blas_thread():
    # OpenBLAS threads on small matrices are much slower on a busy 2-core machine.
    with threadpool_limits(1):
        yield


# Files that take minutes go first, so a parallel run does not end with one of them alone.
# Longest first (per-file totals of a parallel run with --durations, 2026-11-29).
_LONG_FILES = ("test_synth.py", "test_controller.py", "test_faults.py", "test_scenarios_cocotb.py",
               "test_column_remap.py", "test_afe_binding.py", "test_refine_cocotb.py", "test_rtl_backend.py",
               "test_random_cocotb.py", "test_bus_cocotb.py", "test_controller_cocotb.py", "test_lint.py",
               "test_demo.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: position for position, name in enumerate(_LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept
