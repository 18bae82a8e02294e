"""The Backend object: an array module, a device, a seeded generator and the hot ops."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from types import ModuleType
from typing import Any

import numpy as np

from fastnn.kernels.registry import OVERRIDES, load_reference_ops

DEFAULT_SEED = 0


class Backend:
    """One array backend.

    Attributes:
        name: ``"numpy"``, ``"numba"`` or ``"cupy"``.
        xp: the array module (``numpy`` or ``cupy``) for ordinary array code.
        device: a human-readable device description.
        ops: the op table, name -> implementation bound to this backend. Every op is
            also an attribute: ``be.softmax(x)``.
        fused_step_max_rows: the largest batch for which a training step applies Dense
            weight updates inside the backward pass (``linear_backward_sgd``); 0: never.
        fused_step_min_units: the fewest units of a Dense layer whose update that pays for.
    """

    name: str = "base"
    xp: ModuleType = np
    device: str = "cpu"
    fused_step_max_rows: int = 0
    fused_step_min_units: int = 1

    def __init__(self) -> None:
        self.ops: dict[str, Callable[..., Any]] = {}
        self.op_sources: dict[str, str] = {}
        overrides = OVERRIDES.get(self.name, {})
        for op_name, ref in load_reference_ops().items():
            fn = overrides.get(op_name, ref)
            self.op_sources[op_name] = self.name if op_name in overrides else "reference"
            bound = partial(fn, self)
            self.ops[op_name] = bound
            setattr(self, op_name, bound)
        self.seed(DEFAULT_SEED)

    # -- arrays -----------------------------------------------------------------------
    def asarray(self, a: Any, dtype: Any = None) -> Any:
        """``a`` as an array of this backend (copied to the device if needed)."""
        return self.xp.asarray(a, dtype=dtype)

    def to_numpy(self, a: Any) -> np.ndarray:
        """``a`` as a NumPy array on the host."""
        return np.asarray(a)

    def is_array(self, a: Any) -> bool:
        """Whether ``a`` is an array of this backend's kind."""
        return isinstance(a, self.xp.ndarray)

    def synchronize(self) -> None:
        """Wait for queued device work to finish (no-op on CPU backends)."""

    # -- randomness -------------------------------------------------------------------
    def seed(self, seed: int | None) -> None:
        """Reseed this backend's generators (host and, for GPUs, device)."""
        self.rng = np.random.default_rng(seed)

    def uniform(self, shape: tuple[int, ...], dtype: Any = np.float64) -> Any:
        """Uniform [0, 1) numbers of ``shape`` from this backend's seeded generator."""
        dt = np.dtype(dtype)
        if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
            dt = np.dtype(np.float64)
        return self.rng.random(shape, dtype=dt)

    # -- misc -------------------------------------------------------------------------
    def num_threads(self) -> int:
        """Threads this backend computes with (1 for the NumPy reference, BLAS aside)."""
        return 1

    def __repr__(self) -> str:
        return f"<fastnn backend {self.name!r} on {self.device}>"

    def __deepcopy__(self, memo: dict) -> Backend:
        # Backends are process-wide singletons holding compiled kernels: never copied.
        return self

    def __reduce__(self):  # pragma: no cover - pickling is never used for models
        from fastnn.backends import get_backend

        return (get_backend, (self.name,))
