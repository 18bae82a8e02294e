"""The Numba backend: NumPy arrays, with JIT-compiled parallel kernels for the hot ops."""

from __future__ import annotations

import numpy as np

from fastnn.backends.base import Backend
from fastnn.errors import BackendUnavailableError


class NumbaBackend(Backend):
    """NumPy arrays; fused ``@njit(parallel=True)`` kernels override the hot ops."""

    name = "numba"
    xp = np

    def __init__(self) -> None:
        import numba

        from fastnn.kernels.cpu.fused_update import MAX_ROWS, MIN_COLS

        self._numba = numba
        self.fused_step_max_rows = MAX_ROWS
        self.fused_step_min_units = MIN_COLS
        self.device = f"cpu (numba {numba.__version__}, {numba.get_num_threads()} threads)"
        super().__init__()

    def num_threads(self) -> int:
        """Threads Numba's parallel kernels use (see ``fastnn.set_num_threads``)."""
        return int(self._numba.get_num_threads())


def create() -> NumbaBackend:
    """Build the Numba backend, or raise BackendUnavailableError saying why."""
    try:
        import numba  # noqa: F401
    except Exception as exc:  # ImportError, or a broken llvmlite raising anything
        raise BackendUnavailableError(
            f"backend 'numba' needs the numba package, which failed to import: {exc}. "
            "Install it with `pip install numba`, or use backend='numpy'"
        ) from exc
    import fastnn.kernels.cpu  # noqa: F401  (registers the Numba overrides)

    return NumbaBackend()
