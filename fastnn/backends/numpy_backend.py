"""The NumPy reference backend: every op is the reference version."""

from __future__ import annotations

import numpy as np

from fastnn.backends.base import Backend


class NumpyBackend(Backend):
    """Plain vectorised NumPy; matmul through the BLAS NumPy was built with."""

    name = "numpy"
    xp = np
    device = "cpu"


def create() -> NumpyBackend:
    """Build the NumPy backend (always available)."""
    return NumpyBackend()
