"""Shared fixtures: every test that takes ``backend`` runs once per backend.

Backends that cannot run here are skipped with the backend's own reason, never passed.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastnn
from fastnn.backends import NAMES, unavailable_reason

# Relative tolerances for "equals the NumPy reference", by dtype.
RTOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-7}
ATOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-10}

_MARKS = {"numpy": (), "numba": (pytest.mark.numba,), "cupy": (pytest.mark.gpu,)}


def _backend_params():
    return [pytest.param(name, marks=_MARKS[name], id=name) for name in NAMES]


@pytest.fixture(params=_backend_params())
def backend(request) -> fastnn.Backend:
    """A backend object; skips with the reason when it cannot run on this machine."""
    reason = unavailable_reason(request.param)
    if reason is not None:
        pytest.skip(reason)
    be = fastnn.get_backend(request.param)
    be.seed(0)
    return be


@pytest.fixture
def reference() -> fastnn.Backend:
    """The NumPy reference backend."""
    return fastnn.get_backend("numpy")


def assert_close(actual, expected, dtype=np.float64, what: str = "") -> None:
    """assert_allclose with the per-dtype tolerance table, on host copies."""
    dt = np.dtype(dtype)
    np.testing.assert_allclose(
        np.asarray(_host(actual)), np.asarray(_host(expected)), rtol=RTOL[dt], atol=ATOL[dt],
        err_msg=what,
    )


def parallel_build_only(monkeypatch, *kernels) -> None:
    """Have each Numba ``LazyKernel`` run its parallel build even with one thread.

    Thread-count tests compare the bits of 1 and 2 threads. With one thread the kernels
    would run their serial build, a separate compile, and Numba's in-memory compile and its
    disk cache can round fast-math code differently (seen: the LSTM backward compiled in
    memory and loaded from the cache differed in the last bits). Which build comes from
    where depends on the test order, so such a test would compare compiles, not thread
    counts.
    """
    for kernel in kernels:
        get = kernel.get
        monkeypatch.setattr(kernel, "get", lambda dtype, parallel=True, _get=get: _get(dtype))


def _host(a):
    if hasattr(a, "get"):
        return a.get()
    return a
