"""Losses: classes, Keras strings and aliases.

Every loss takes ``reduction`` (``"mean"`` / ``"sum_over_batch_size"``, ``"sum"``,
``"none"``) and ``forward(pred, target, sample_weight=None)``. Keras's clipping epsilon,
where a loss clips, is ``EPSILON = 1e-7`` (stated in each class's docstring).

Accepted strings: the Keras function names (``"mean_squared_error"``, ...), their short
aliases (``"mse"``, ``"mae"``, ``"mape"``, ``"msle"``, ``"kld"``, ``"logcosh"``, ...), and the
class names in any case (``"MeanSquaredError"``, ``"KLDivergence"``).
"""

from __future__ import annotations

from fastnn.losses.base import REDUCTIONS, ElementwiseLoss, Loss
from fastnn.losses.crossentropy import (
    EPSILON,
    BinaryCrossentropy,
    CategoricalCrossentropy,
    SoftmaxWithLoss,
    SparseCategoricalCrossentropy,
)
from fastnn.losses.hinge import CategoricalHinge, Hinge, SquaredHinge
from fastnn.losses.probabilistic import KLDivergence, Poisson
from fastnn.losses.regression import (
    CosineSimilarity,
    Huber,
    LogCosh,
    MeanAbsoluteError,
    MeanAbsolutePercentageError,
    MeanSquaredError,
    MeanSquaredLogarithmicError,
)

_REGISTRY: dict[str, type[Loss]] = {
    "mean_squared_error": MeanSquaredError,
    "mean_absolute_error": MeanAbsoluteError,
    "mean_absolute_percentage_error": MeanAbsolutePercentageError,
    "mean_squared_logarithmic_error": MeanSquaredLogarithmicError,
    "hinge": Hinge,
    "squared_hinge": SquaredHinge,
    "categorical_hinge": CategoricalHinge,
    "binary_crossentropy": BinaryCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "kl_divergence": KLDivergence,
    "poisson": Poisson,
    "cosine_similarity": CosineSimilarity,
    "huber": Huber,
    "log_cosh": LogCosh,
}
#: Keras's short names and older spellings.
_ALIASES: dict[str, str] = {
    "mse": "mean_squared_error",
    "mae": "mean_absolute_error",
    "mape": "mean_absolute_percentage_error",
    "msle": "mean_squared_logarithmic_error",
    "kld": "kl_divergence",
    "kullback_leibler_divergence": "kl_divergence",
    "logcosh": "log_cosh",
    "huber_loss": "huber",
    "cosine_proximity": "cosine_similarity",
}


def register(name: str, cls: type[Loss], aliases: tuple[str, ...] = ()) -> None:
    """Make ``cls`` available as the Keras string ``name`` (and ``aliases``)."""
    _REGISTRY[name] = cls
    for alias in aliases:
        _ALIASES[alias] = name


def names() -> list[str]:
    """Every accepted loss string, aliases included (class names are accepted too)."""
    return sorted({*_REGISTRY, *_ALIASES})


def _class_names() -> dict[str, str]:
    """Lower-cased class names (``"meansquarederror"``) -> registry name."""
    return {cls.__name__.lower(): name for name, cls in _REGISTRY.items()}


def canonical_name(identifier: str) -> str:
    """The registry name that the string ``identifier`` stands for; ValueError if none."""
    key = identifier.strip().lower()
    key = _ALIASES.get(key, key)
    if key in _REGISTRY:
        return key
    by_class = _class_names().get(key.replace("_", ""))
    if by_class is not None:
        return by_class
    raise ValueError(f"unknown loss {identifier!r}; valid names: {', '.join(names())}")


def get(identifier: str | Loss | type[Loss], backend=None) -> Loss:
    """A loss from a Keras string, a Loss class or an instance; ValueError listing the
    valid names for an unknown string."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Loss):
        return identifier(backend=backend)
    if not isinstance(identifier, str):
        raise TypeError(
            f"loss must be a name such as 'mse' or a Loss, received {type(identifier).__name__}"
        )
    return _REGISTRY[canonical_name(identifier)](backend=backend)


# Keras-style class aliases.
MSE = MeanSquaredError
MAE = MeanAbsoluteError
MAPE = MeanAbsolutePercentageError
MSLE = MeanSquaredLogarithmicError
KLD = KLDivergence
KullbackLeiblerDivergence = KLDivergence
LogCoshError = LogCosh

__all__ = [
    "EPSILON",
    "KLD",
    "MAE",
    "MAPE",
    "MSE",
    "MSLE",
    "REDUCTIONS",
    "BinaryCrossentropy",
    "CategoricalCrossentropy",
    "CategoricalHinge",
    "CosineSimilarity",
    "ElementwiseLoss",
    "Hinge",
    "Huber",
    "KLDivergence",
    "KullbackLeiblerDivergence",
    "LogCosh",
    "LogCoshError",
    "Loss",
    "MeanAbsoluteError",
    "MeanAbsolutePercentageError",
    "MeanSquaredError",
    "MeanSquaredLogarithmicError",
    "Poisson",
    "SoftmaxWithLoss",
    "SparseCategoricalCrossentropy",
    "SquaredHinge",
    "canonical_name",
    "get",
    "names",
    "register",
]
