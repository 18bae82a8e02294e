"""Optimizers: classes and Keras strings."""

from __future__ import annotations

from fastnn.optimizers.adadelta import Adadelta
from fastnn.optimizers.adagrad import Adagrad
from fastnn.optimizers.adam import Adam
from fastnn.optimizers.adamax import Adamax
from fastnn.optimizers.adamw import AdamW
from fastnn.optimizers.base import Optimizer
from fastnn.optimizers.nadam import Nadam
from fastnn.optimizers.rmsprop import RMSprop
from fastnn.optimizers.sgd import SGD

_REGISTRY: dict[str, type[Optimizer]] = {
    "sgd": SGD,
    "adagrad": Adagrad,
    "rmsprop": RMSprop,
    "adadelta": Adadelta,
    "adam": Adam,
    "adamw": AdamW,
    "adamax": Adamax,
    "nadam": Nadam,
}


def register(name: str, cls: type[Optimizer]) -> None:
    """Make ``cls`` available as the Keras string ``name``."""
    _REGISTRY[name.strip().lower()] = cls


def names() -> list[str]:
    """Every accepted optimizer string."""
    return sorted(_REGISTRY)


def get(identifier: str | Optimizer, backend=None) -> Optimizer:
    """An optimizer from a Keras string (any case, e.g. ``"adam"`` or ``"Adam"``) or an
    instance; ValueError listing the valid names for an unknown string."""
    if isinstance(identifier, Optimizer):
        return identifier
    if not isinstance(identifier, str):
        raise TypeError(
            "optimizer must be a name such as 'adam' or an Optimizer, received "
            f"{type(identifier).__name__}"
        )
    key = identifier.strip().lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown optimizer {identifier!r}; valid names: {', '.join(names())}")
    return _REGISTRY[key](backend=backend)


__all__ = [
    "SGD",
    "Adadelta",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "Nadam",
    "Optimizer",
    "RMSprop",
    "get",
    "names",
    "register",
]
