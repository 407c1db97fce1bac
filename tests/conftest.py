"""Project-wide test set-up."""
from __future__ import annotations

import pytest
from threadpoolctl import threadpool_limits


@pytest.fixture(autouse=True, scope="session")
def _one_blas_thread():
    # OpenBLAS threads on small matrices are much slower on a busy 2-core machine.
    with threadpool_limits(1):
        yield
