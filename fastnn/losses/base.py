"""The Loss base class: ``forward(pred, target) -> float`` and ``backward() -> dpred``."""

from __future__ import annotations

from typing import Any

import numpy as np

from fastnn.backends import Backend, get_backend

REDUCTIONS = ("mean", "sum", "none")


class Loss:
    """Base of every loss.

    ``forward(pred, target)`` returns the reduced loss (a Python float, or for
    ``reduction="none"`` an array of per-sample losses) and caches what ``backward``
    needs; ``backward(dout=1.0)`` returns dL/dpred scaled by ``dout``.

    Per-sample losses are averaged over the batch (``"mean"``, Keras's
    ``sum_over_batch_size``), summed (``"sum"``) or returned as they are (``"none"``).

    Args:
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        name: display name.
        backend: backend name or object (default: inferred when first used by a model).
    """

    #: Keras-style identifier, e.g. ``"mean_squared_error"``.
    keras_name = "loss"

    def __init__(
        self,
        reduction: str = "mean",
        name: str | None = None,
        backend: str | Backend | None = None,
    ) -> None:
        if reduction not in REDUCTIONS:
            raise ValueError(
                f"{type(self).__name__}: reduction must be one of {', '.join(REDUCTIONS)}. "
                f"Received: reduction={reduction!r}"
            )
        self.reduction = reduction
        self.name = name or self.keras_name
        self.backend: Backend = get_backend(backend)
        self._cache: dict[str, Any] = {}

    def describe(self) -> str:
        """Short text naming the loss in error messages."""
        return f"{type(self).__name__}()"

    def __repr__(self) -> str:
        return f"<{self.describe()} reduction={self.reduction!r}>"

    def get_config(self) -> dict:
        """Constructor arguments, for saving."""
        return {"reduction": self.reduction, "name": self.name}

    def __call__(self, pred: Any, target: Any) -> Any:
        """Same as :meth:`forward`."""
        return self.forward(pred, target)

    def forward(self, pred: Any, target: Any) -> Any:
        """The reduced loss of ``pred`` against ``target``; caches for :meth:`backward`."""
        self.check_pred(pred)
        target = self.prepare_target(pred, target)
        return self._forward(pred, target)

    def backward(self, dout: Any = 1.0) -> Any:
        """dL/dpred, scaled by the upstream gradient ``dout`` (scalar or per-sample)."""
        if not self._cache:
            raise RuntimeError(f"{self.describe()}.backward: called before forward")
        return self._backward(dout)

    # -- subclass hooks -----------------------------------------------------------------
    def _forward(self, pred: Any, target: Any) -> Any:  # pragma: no cover
        raise NotImplementedError

    def _backward(self, dout: Any) -> Any:  # pragma: no cover
        raise NotImplementedError

    def prepare_target(self, pred: Any, target: Any) -> Any:
        """``target`` as a backend array that fits ``pred``; ValueError naming both shapes."""
        be = self.backend
        if not be.is_array(target):
            target = be.asarray(np.asarray(target))
        if target.dtype != pred.dtype:
            target = target.astype(pred.dtype)
        if target.shape != pred.shape:
            raise ValueError(
                f"{self.describe()}: target shape {tuple(target.shape)} does not match "
                f"prediction shape {tuple(pred.shape)}"
            )
        return target

    def check_pred(self, pred: Any) -> None:
        """Raise unless ``pred`` is a float array of this loss's backend with a batch axis."""
        be = self.backend
        if not be.is_array(pred):
            raise TypeError(
                f"{self.describe()}: expected predictions as a {be.xp.__name__}.ndarray on "
                f"backend '{be.name}', received {type(pred).__name__}"
            )
        if pred.dtype.kind != "f":
            raise TypeError(
                f"{self.describe()}: expected float predictions, received {pred.dtype.name}"
            )
        if pred.ndim < 1 or pred.shape[0] == 0:
            raise ValueError(
                f"{self.describe()}: expected a non-empty batch, received shape {pred.shape}"
            )

    # -- reduction helpers --------------------------------------------------------------
    def reduce(self, per_sample: Any) -> Any:
        """Apply the reduction to per-sample losses of shape (N,)."""
        if self.reduction == "none":
            return per_sample
        total = float(per_sample.sum())
        return total / per_sample.shape[0] if self.reduction == "mean" else total

    def scale_grad(self, grad: Any, dout: Any) -> Any:
        """Turn per-sample gradients (rows of ``grad``) into gradients of the reduced loss
        times ``dout``, in place."""
        n = grad.shape[0]
        if self.reduction == "none":
            d = self.backend.xp.asarray(dout, dtype=grad.dtype)
            grad *= d if d.ndim == 0 else d.reshape((n,) + (1,) * (grad.ndim - 1))
            return grad
        grad *= float(dout) / n if self.reduction == "mean" else float(dout)
        return grad
