"""Losses: classes, Keras strings and aliases."""

from __future__ import annotations

from fastnn.losses.base import Loss
from fastnn.losses.crossentropy import (
    EPSILON,
    CategoricalCrossentropy,
    SoftmaxWithLoss,
    SparseCategoricalCrossentropy,
)
from fastnn.losses.regression import MeanSquaredError

_REGISTRY: dict[str, type[Loss]] = {
    "mean_squared_error": MeanSquaredError,
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
}
_ALIASES: dict[str, str] = {
    "mse": "mean_squared_error",
    "meansquarederror": "mean_squared_error",
    "categoricalcrossentropy": "categorical_crossentropy",
    "sparsecategoricalcrossentropy": "sparse_categorical_crossentropy",
}


def register(name: str, cls: type[Loss], aliases: tuple[str, ...] = ()) -> None:
    """Make ``cls`` available as the Keras string ``name`` (and ``aliases``)."""
    _REGISTRY[name] = cls
    for alias in aliases:
        _ALIASES[alias] = name


def names() -> list[str]:
    """Every accepted loss string, aliases included."""
    return sorted({*_REGISTRY, *_ALIASES})


def get(identifier: str | Loss, backend=None) -> Loss:
    """A loss from a Keras string or an instance; ValueError listing the valid names."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Loss):
        return identifier(backend=backend)
    if not isinstance(identifier, str):
        raise TypeError(
            f"loss must be a name such as 'mse' or a Loss, received {type(identifier).__name__}"
        )
    key = identifier.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise ValueError(f"unknown loss {identifier!r}; valid names: {', '.join(names())}")
    return _REGISTRY[key](backend=backend)


__all__ = [
    "EPSILON",
    "CategoricalCrossentropy",
    "Loss",
    "MeanSquaredError",
    "SoftmaxWithLoss",
    "SparseCategoricalCrossentropy",
    "get",
    "names",
    "register",
]
