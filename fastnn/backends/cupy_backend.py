"""The CuPy backend: arrays on an NVIDIA GPU, cuBLAS matmul and fused CUDA kernels."""

from __future__ import annotations

from typing import Any

import numpy as np

from fastnn.backends.base import Backend
from fastnn.errors import BackendUnavailableError


class CupyBackend(Backend):
    """CuPy arrays on the current CUDA device."""

    name = "cupy"

    def __init__(self, cupy: Any) -> None:
        self.xp = cupy
        self._cupy = cupy
        dev = cupy.cuda.Device()
        props = cupy.cuda.runtime.getDeviceProperties(dev.id)
        gpu = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        self.device = f"cuda:{dev.id} ({gpu})"
        super().__init__()

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        """``a`` copied to the GPU (no copy when it is already a CuPy array of ``dtype``)."""
        return self._cupy.asarray(a, dtype=dtype)

    def to_numpy(self, a: Any) -> np.ndarray:
        """``a`` copied to the host."""
        return self._cupy.asnumpy(a)

    def synchronize(self) -> None:
        """Wait for all work queued on the current device."""
        self._cupy.cuda.Device().synchronize()

    def uniform(self, shape: tuple[int, ...], dtype: Any = np.float64) -> Any:
        """Uniform [0, 1) numbers drawn on the GPU by CuPy's seeded generator."""
        return self._cupy.random.random_sample(shape).astype(dtype, copy=False)

    def seed(self, seed: int | None) -> None:
        """Reseed the host generator and CuPy's device generator."""
        super().seed(seed)
        self._cupy.random.seed(seed)


def probe_cupy() -> Any:
    """Import CuPy and check that a CUDA device answers; raise BackendUnavailableError."""
    try:
        import cupy
    except Exception as exc:
        raise BackendUnavailableError(
            f"backend 'cupy' needs the cupy package, which failed to import: {exc}. "
            "Install cupy-cuda12x or cupy-cuda13x (pip install 'fastnn-dl[cuda12]'), "
            "or use backend='numpy'"
        ) from exc
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError without a driver or device
        raise BackendUnavailableError(
            f"backend 'cupy' needs a CUDA GPU: CuPy could not query the driver ({exc}). "
            "Run on a machine with an NVIDIA GPU and driver, or use backend='numpy'"
        ) from exc
    if count < 1:
        raise BackendUnavailableError(
            "backend 'cupy' needs a CUDA GPU: the driver reports no device. "
            "Run on a machine with an NVIDIA GPU, or use backend='numpy'"
        )
    return cupy


def create() -> CupyBackend:
    """Build the CuPy backend, or raise BackendUnavailableError saying why."""
    cupy = probe_cupy()
    import fastnn.kernels.cuda  # noqa: F401  (registers the CUDA overrides)

    return CupyBackend(cupy)
