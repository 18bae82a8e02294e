"""Training metrics with Keras names, computed per batch and averaged over samples."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

#: Probability threshold of binary accuracy (Keras's default).
BINARY_THRESHOLD = 0.5


def categorical_accuracy(xp, pred, target) -> Any:
    """Per-sample 1/0: argmax of prediction equals argmax of one-hot target."""
    return (pred.argmax(axis=-1) == target.argmax(axis=-1)).astype(np.float64)


def sparse_categorical_accuracy(xp, pred, target) -> Any:
    """Per-sample 1/0: argmax of prediction equals the integer label."""
    return (pred.argmax(axis=-1) == target.reshape(-1)).astype(np.float64)


def binary_accuracy(xp, pred, target) -> Any:
    """Per-sample fraction of outputs on the right side of the 0.5 threshold."""
    hit = (pred > BINARY_THRESHOLD) == (target.reshape(pred.shape) > BINARY_THRESHOLD)
    return hit.reshape(hit.shape[0], -1).mean(axis=1)


def mean_absolute_error(xp, pred, target) -> Any:
    """Per-sample mean |pred - target|."""
    d = xp.abs(pred - target.reshape(pred.shape))
    return d.reshape(d.shape[0], -1).mean(axis=1)


def mean_squared_error(xp, pred, target) -> Any:
    """Per-sample mean (pred - target)^2."""
    d = pred - target.reshape(pred.shape)
    return (d * d).reshape(d.shape[0], -1).mean(axis=1)


MetricFn = Callable[[Any, Any, Any], Any]

_REGISTRY: dict[str, MetricFn] = {
    "categorical_accuracy": categorical_accuracy,
    "sparse_categorical_accuracy": sparse_categorical_accuracy,
    "binary_accuracy": binary_accuracy,
    "mean_absolute_error": mean_absolute_error,
    "mean_squared_error": mean_squared_error,
}
_ALIASES = {"mae": "mean_absolute_error", "mse": "mean_squared_error"}
_ACCURACY = ("accuracy", "acc")


def names() -> list[str]:
    """Accepted metric strings."""
    return sorted({*_REGISTRY, *_ALIASES, *_ACCURACY})


def resolve(identifier: str, loss_name: str, output_dim: int, target_is_sparse: bool):
    """(display name, function) for a metric string; ``accuracy`` picks the Keras variant.

    Like Keras, ``"accuracy"`` means binary accuracy for a single output, sparse
    categorical accuracy for integer labels, and categorical accuracy otherwise.
    """
    if not isinstance(identifier, str):
        raise TypeError(f"metrics must be names, received {type(identifier).__name__}")
    key = identifier.strip().lower()
    if key in _ACCURACY:
        if output_dim == 1 or "binary" in loss_name:
            return key, binary_accuracy
        if target_is_sparse or "sparse" in loss_name:
            return key, sparse_categorical_accuracy
        return key, categorical_accuracy
    full = _ALIASES.get(key, key)
    if full not in _REGISTRY:
        raise ValueError(f"unknown metric {identifier!r}; valid names: {', '.join(names())}")
    return key, _REGISTRY[full]
