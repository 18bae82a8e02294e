"""The Loss base class: ``forward(pred, target) -> float`` and ``backward() -> dpred``."""

from __future__ import annotations

from typing import Any

import numpy as np

from fastnn.backends import Backend, get_backend

REDUCTIONS = ("mean", "sum", "none")
#: Keras's spellings of the reductions: ``sum_over_batch_size`` (and ``auto``) is ``mean``.
REDUCTION_ALIASES = {"sum_over_batch_size": "mean", "auto": "mean"}


class Loss:
    """Base of every loss.

    ``forward(pred, target, sample_weight=None)`` returns the reduced loss (a Python
    float, or for ``reduction="none"`` an array of per-sample losses) and caches what
    ``backward`` needs; ``backward(dout=1.0)`` returns dL/dpred scaled by ``dout``.

    A per-sample loss is first reduced over the features of the sample (each loss says
    how; most take the mean, as Keras does over the last axis). Per-sample losses are then
    multiplied by ``sample_weight`` (shape (N,), when given) and averaged over the batch
    (``"mean"``, Keras's ``sum_over_batch_size``: the weighted sum divided by N, not by the
    sum of the weights), summed (``"sum"``) or returned as they are (``"none"``).

    Args:
        reduction: ``"mean"`` (alias ``"sum_over_batch_size"``), ``"sum"`` or ``"none"``.
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
        reduction = REDUCTION_ALIASES.get(reduction, reduction)
        if reduction not in REDUCTIONS:
            raise ValueError(
                f"{type(self).__name__}: reduction must be one of {', '.join(REDUCTIONS)}. "
                f"Received: reduction={reduction!r}"
            )
        self.reduction = reduction
        self.name = name or self.keras_name
        self.backend: Backend = get_backend(backend)
        self._cache: dict[str, Any] = {}
        self._weights: Any = None  # (N,) sample weights of the last forward, or None

    def describe(self) -> str:
        """Short text naming the loss in error messages."""
        return f"{type(self).__name__}()"

    def __repr__(self) -> str:
        return f"<{self.describe()} reduction={self.reduction!r}>"

    def get_config(self) -> dict:
        """Constructor arguments, for saving."""
        return {"reduction": self.reduction, "name": self.name}

    def __call__(self, pred: Any, target: Any, sample_weight: Any = None) -> Any:
        """Same as :meth:`forward`."""
        return self.forward(pred, target, sample_weight)

    def forward(self, pred: Any, target: Any, sample_weight: Any = None) -> Any:
        """The reduced loss of ``pred`` against ``target``; caches for :meth:`backward`.

        Args:
            pred: (N, ...) predictions.
            target: targets shaped like ``pred`` (integer labels (N,) for sparse losses).
            sample_weight: optional (N,) (or (N, 1)) weights of the per-sample losses.
        """
        self.check_pred(pred)
        target = self.prepare_target(pred, target)
        self._weights = self.prepare_sample_weight(pred, sample_weight)
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
        if target.dtype.kind not in "biuf":  # complex, str, object: never cast silently
            raise TypeError(
                f"{self.describe()}: expected numeric targets, received dtype {target.dtype}"
            )
        if target.dtype != pred.dtype:
            target = target.astype(pred.dtype)
        if pred.ndim >= 2 and pred.shape[-1] == 1 and target.shape == pred.shape[:-1]:
            target = target.reshape(pred.shape)  # (N,) targets of an (N, 1) output, as in Keras
        if target.shape != pred.shape:
            raise ValueError(
                f"{self.describe()}: target shape {tuple(target.shape)} does not match "
                f"prediction shape {tuple(pred.shape)}"
            )
        return target

    def prepare_sample_weight(self, pred: Any, sample_weight: Any) -> Any:
        """``sample_weight`` as an (N,) backend array of ``pred``'s dtype, or None."""
        if sample_weight is None:
            return None
        be = self.backend
        w = sample_weight if be.is_array(sample_weight) else be.asarray(np.asarray(sample_weight))
        n = pred.shape[0]
        if w.ndim == 2 and w.shape[1] == 1:
            w = w.reshape(-1)
        if w.shape != (n,):
            raise ValueError(
                f"{self.describe()}: expected sample_weight of shape ({n},) for predictions of "
                f"shape {tuple(pred.shape)}, received shape {tuple(w.shape)}"
            )
        if w.dtype.kind not in "fiub":
            raise TypeError(
                f"{self.describe()}: sample_weight must be numeric, received {w.dtype.name}"
            )
        return w.astype(pred.dtype, copy=False)

    def check_pred(self, pred: Any) -> None:
        """Raise unless ``pred`` is a float array of this loss's backend with a batch axis."""
        be = self.backend
        if not be.is_array(pred):
            raise TypeError(
                f"{self.describe()}: expected predictions as a {be.xp.__name__}.ndarray on "
                f"backend '{be.name}', received {type(pred).__name__}"
            )
        if pred.dtype.kind != "f" or pred.dtype.itemsize < 4:
            raise TypeError(
                f"{self.describe()}: expected float32 or float64 predictions, received "
                f"{pred.dtype.name}"
            )
        if pred.ndim < 1 or pred.shape[0] == 0:
            raise ValueError(
                f"{self.describe()}: expected a non-empty batch, received shape {pred.shape}"
            )

    # -- reduction helpers --------------------------------------------------------------
    def reduce(self, per_sample: Any) -> Any:
        """Weight (by the sample weights) and reduce per-sample losses of shape (N,)."""
        if self._weights is not None:
            per_sample = per_sample * self._weights
        if self.reduction == "none":
            return per_sample
        total = float(per_sample.sum())
        return total / per_sample.shape[0] if self.reduction == "mean" else total

    def scale_grad(self, grad: Any, dout: Any) -> Any:
        """Turn per-sample gradients (rows of ``grad``) into gradients of the weighted,
        reduced loss times ``dout``, in place."""
        n = grad.shape[0]
        if self._weights is not None:
            grad *= self._weights.reshape((n,) + (1,) * (grad.ndim - 1))
        if self.reduction == "none":
            d = self.backend.xp.asarray(dout, dtype=grad.dtype)
            grad *= d if d.ndim == 0 else d.reshape((n,) + (1,) * (grad.ndim - 1))
            return grad
        grad *= float(dout) / n if self.reduction == "mean" else float(dout)
        return grad


class ElementwiseLoss(Loss):
    """A loss given by per-element (or per-row) values and their gradient.

    Subclasses implement ``values_and_grad(pred, target) -> (values, grad)``: ``values`` of
    shape ``pred.shape`` (an elementwise loss) or ``pred.shape[:-1]`` (a loss per row of the
    last axis, such as KL divergence or cosine similarity), and ``grad`` = d sum(values) /
    d pred of shape ``pred.shape``. The per-sample loss is the mean of ``values`` over the
    non-batch axes (Keras's mean over the last axis, then over any other axes).
    """

    def values_and_grad(self, pred: Any, target: Any) -> tuple[Any, Any]:  # pragma: no cover
        """(values, d sum(values) / d pred); see the class docstring."""
        raise NotImplementedError

    def _forward(self, pred, target):
        values, grad = self.values_and_grad(pred, target)
        n = pred.shape[0]
        count = max(1, values.size // n)
        self._cache = {"grad": grad, "count": count}
        return self.reduce(values.reshape(n, -1).sum(axis=1) / count)

    def _backward(self, dout):
        grad = self._cache["grad"] * (1.0 / self._cache["count"])
        return self.scale_grad(grad, dout)
