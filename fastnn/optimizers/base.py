"""The Optimizer base class: in-place updates of parameter dicts, state keyed like them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from fastnn.backends import Backend, get_backend

ParamSet = Mapping[str, Any] | Sequence[Any]


def _items(params: ParamSet, what: str) -> list[tuple[Any, Any]]:
    if isinstance(params, Mapping):
        return list(params.items())
    if isinstance(params, (list, tuple)):
        return list(enumerate(params))
    raise TypeError(f"{what} must be a dict or a list of arrays, received {type(params).__name__}")


class Optimizer:
    """Base of every optimizer.

    ``update(params, grads)`` (the book's name; ``step`` is an alias) applies one step to
    every parameter in place. ``params`` and ``grads`` are dicts with the same keys (or
    lists of the same length); per-parameter state (``slots``) is keyed the same way and
    created on first use. Parameters are never rebound, so layers keep their arrays.

    Args:
        learning_rate: a float, or a callable ``schedule(step) -> float`` (``step`` counts
            from 0) such as the schedules in :mod:`fastnn.schedules`.
        weight_decay: L2 penalty coefficient added to the gradient (``torch.optim`` style).
        backend: backend of the parameters (default: the current backend; a model sets it).
    """

    def __init__(
        self,
        learning_rate: float | Callable[[int], float] = 0.01,
        weight_decay: float = 0.0,
        backend: str | Backend | None = None,
    ) -> None:
        if not callable(learning_rate):
            learning_rate = float(learning_rate)
            if not np.isfinite(learning_rate) or learning_rate < 0:
                raise ValueError(
                    f"{type(self).__name__}: learning_rate must be a finite number >= 0. "
                    f"Received: learning_rate={learning_rate}"
                )
        if weight_decay < 0:
            raise ValueError(
                f"{type(self).__name__}: weight_decay must be >= 0. "
                f"Received: weight_decay={weight_decay}"
            )
        self.learning_rate = learning_rate
        self.weight_decay = float(weight_decay)
        self.backend: Backend = get_backend(backend)
        self.iterations = 0
        self.slots: dict[Any, dict[str, Any]] = {}
        self._scratch = None  # one flat buffer, as large as the largest parameter

    # -- public API -------------------------------------------------------------------
    def current_learning_rate(self) -> float:
        """The learning rate the next step uses."""
        lr = self.learning_rate
        return float(lr(self.iterations)) if callable(lr) else float(lr)

    def update(self, params: ParamSet, grads: ParamSet) -> None:
        """Apply one optimisation step to every parameter in place."""
        p_items = _items(params, f"{type(self).__name__}.update: params")
        g_items = _items(grads, f"{type(self).__name__}.update: grads")
        if [k for k, _ in p_items] != [k for k, _ in g_items]:
            raise ValueError(
                f"{type(self).__name__}.update: params and grads must have the same keys, "
                f"received {[k for k, _ in p_items]} and {[k for k, _ in g_items]}"
            )
        for (key, p), (_, g) in zip(p_items, g_items, strict=True):
            if p.shape != g.shape:
                raise ValueError(
                    f"{type(self).__name__}.update: gradient {key!r} has shape {g.shape}, "
                    f"parameter has {p.shape}"
                )
        lr = self.current_learning_rate()
        self.iterations += 1
        for (key, p), (_, g) in zip(p_items, g_items, strict=True):
            slots = self.slots.get(key)
            if slots is None:
                slots = self.slots[key] = self.create_slots(p)
            self.update_one(p, g, slots, lr, self._tmp_like(p))

    step = update

    def get_config(self) -> dict:
        """Hyper-parameters, for saving."""
        lr = self.learning_rate
        return {
            "learning_rate": lr if not callable(lr) else getattr(lr, "get_config", lambda: None)(),
            "weight_decay": self.weight_decay,
        }

    def describe(self) -> str:
        """Short text for messages."""
        return f"{type(self).__name__}(learning_rate={self.learning_rate})"

    def __repr__(self) -> str:
        return f"<{self.describe()}>"

    # -- subclass hooks -----------------------------------------------------------------
    def create_slots(self, param: Any) -> dict[str, Any]:
        """Per-parameter state arrays, zero-initialised (none by default)."""
        return {}

    def update_one(self, param: Any, grad: Any, slots: dict[str, Any], lr: float, tmp: Any):
        """Update one parameter in place; ``tmp`` is scratch shaped like it."""
        raise NotImplementedError  # pragma: no cover

    # -- helpers ----------------------------------------------------------------------
    def zeros_like(self, param: Any) -> Any:
        """A zero array shaped like ``param`` on the optimizer's backend."""
        return self.backend.xp.zeros_like(param)

    def _tmp_like(self, param: Any) -> Any:
        size = int(param.size)
        buf = self._scratch
        if buf is None or buf.size < size or buf.dtype != param.dtype:
            buf = self._scratch = self.backend.xp.empty(max(size, 1), dtype=param.dtype)
        return buf[:size].reshape(param.shape)
