"""Cross-entropy losses; with logits they run the fused softmax-cross-entropy op."""

from __future__ import annotations

from typing import Any

import numpy as np

from fastnn.losses.base import Loss

#: Keras's fuzz factor: probabilities are clipped to [EPSILON, 1 - EPSILON] before log.
EPSILON = 1e-7


class CategoricalCrossentropy(Loss):
    """-sum(target * log(p)) per sample, for one-hot or soft targets of shape (N, C).

    With ``from_logits=True`` the predictions are scores and the loss is computed by the
    fused softmax-cross-entropy kernel (forward and backward in one pass). Otherwise they
    are probabilities: as in Keras they are renormalised to sum to 1 along the last axis
    and clipped to ``[EPSILON, 1 - EPSILON]`` (EPSILON = 1e-7) before the log; clipped
    entries get zero gradient.

    Args:
        from_logits: whether predictions are unnormalised scores.
        reduction, name, backend: see :class:`fastnn.losses.Loss`.
    """

    keras_name = "categorical_crossentropy"

    def __init__(self, from_logits: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.from_logits = bool(from_logits)

    def describe(self) -> str:
        """``CategoricalCrossentropy(from_logits=True)``."""
        return f"{type(self).__name__}(from_logits={self.from_logits})"

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {**super().get_config(), "from_logits": self.from_logits}

    def check_pred(self, pred):
        super().check_pred(pred)
        if pred.ndim != 2:
            raise ValueError(
                f"{self.describe()}: expected predictions of shape (N, classes), received "
                f"shape {tuple(pred.shape)}"
            )

    def _forward(self, pred, target):
        be = self.backend
        if self.from_logits and self.reduction != "none":
            return _fused(self, be.softmax_cross_entropy, pred, target)
        xp = be.xp
        if self.from_logits:
            logp = be.log_softmax(pred)
            self._cache = {"p": xp.exp(logp), "target": target}
            return self.reduce(-(target * logp).sum(axis=1))
        s = pred.sum(axis=1, keepdims=True)
        q = pred / s
        c = xp.clip(q, EPSILON, 1.0 - EPSILON)
        self._cache = {"q": q, "c": c, "s": s, "target": target}
        return self.reduce(-(target * xp.log(c)).sum(axis=1))

    def _backward(self, dout):
        cache = self._cache
        if "dx" in cache:
            return _fused_backward(cache, dout)
        if "p" in cache:
            return self.scale_grad(cache["p"] - cache["target"], dout)
        return self.scale_grad(_clipped_probability_grad(cache), dout)


def _fused(loss: Loss, op, pred, target) -> float:
    """Run a fused softmax-cross-entropy op; cache dL/dpred already scaled by the reduction."""
    n = pred.shape[0]
    mean = loss.reduction == "mean"
    value, dx = op(pred, target, scale=1.0 / n if mean else 1.0)
    loss._cache = {"dx": dx}
    return value if mean else value * n


def _fused_backward(cache, dout) -> Any:
    """The cached fused gradient times ``dout`` (returned as is when ``dout`` is 1)."""
    dx = cache["dx"]
    d = float(dout)
    return dx if d == 1.0 else dx * d


def _clipped_probability_grad(cache) -> Any:
    """dL/dp for L = -sum(t log clip(p / sum(p))), zero through clipped entries."""
    q, c, s, t = cache["q"], cache["c"], cache["s"], cache["target"]
    inside = (q > EPSILON) & (q < 1.0 - EPSILON)
    g = -t / c * inside
    return (g - (g * q).sum(axis=1, keepdims=True)) / s


class SparseCategoricalCrossentropy(Loss):
    """Cross-entropy against integer class labels of shape (N,) (or (N, 1)).

    Same conventions as :class:`CategoricalCrossentropy`; labels must lie in
    ``[0, classes)`` and a label outside raises ValueError naming it.
    """

    keras_name = "sparse_categorical_crossentropy"

    def __init__(self, from_logits: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.from_logits = bool(from_logits)

    def describe(self) -> str:
        """``SparseCategoricalCrossentropy(from_logits=True)``."""
        return f"{type(self).__name__}(from_logits={self.from_logits})"

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {**super().get_config(), "from_logits": self.from_logits}

    def check_pred(self, pred):
        super().check_pred(pred)
        if pred.ndim != 2:
            raise ValueError(
                f"{self.describe()}: expected predictions of shape (N, classes), received "
                f"shape {tuple(pred.shape)}"
            )

    def prepare_target(self, pred, target):
        return prepare_labels(self.backend, pred, target, self.describe())

    def _forward(self, pred, labels):
        be = self.backend
        xp = be.xp
        n = pred.shape[0]
        if self.from_logits and self.reduction != "none":
            return _fused(self, be.sparse_softmax_cross_entropy, pred, labels)
        rows = xp.arange(n)
        if self.from_logits:
            logp = be.log_softmax(pred)
            self._cache = {"p": xp.exp(logp), "labels": labels}
            return self.reduce(-logp[rows, labels])
        s = pred.sum(axis=1, keepdims=True)
        q = pred / s
        c = xp.clip(q, EPSILON, 1.0 - EPSILON)
        target = xp.zeros_like(pred)
        target[rows, labels] = 1
        self._cache = {"q": q, "c": c, "s": s, "target": target}
        return self.reduce(-xp.log(c[rows, labels]))

    def _backward(self, dout):
        cache = self._cache
        if "dx" in cache:
            return _fused_backward(cache, dout)
        if "p" in cache:
            grad = cache["p"].copy()
            grad[self.backend.xp.arange(grad.shape[0]), cache["labels"]] -= 1
            return self.scale_grad(grad, dout)
        return self.scale_grad(_clipped_probability_grad(cache), dout)


def prepare_labels(be, pred, target, where: str) -> Any:
    """Integer labels (N,) on ``be`` checked against predictions (N, C); ValueError if not."""
    n, classes = pred.shape[0], pred.shape[-1]
    host = None
    if not be.is_array(target):
        host = np.asarray(target)
        if host.dtype == object:
            raise TypeError(f"{where}: labels must be numbers, received dtype object")
    arr = target if host is None else host
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr.reshape(-1)
    if arr.ndim != 1 or arr.shape[0] != n:
        received = tuple(target.shape if host is None else host.shape)
        raise ValueError(
            f"{where}: expected integer labels of shape ({n},) for predictions of shape "
            f"{tuple(pred.shape)}, received shape {received}"
        )
    if arr.dtype.kind == "f":
        if not bool((arr == arr.astype(np.int64)).all()):
            raise ValueError(f"{where}: labels must be whole numbers, received fractional values")
    elif arr.dtype.kind not in "iub":
        raise TypeError(f"{where}: labels must be integers, received dtype {arr.dtype.name}")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= classes:
        bad = lo if lo < 0 else hi
        raise ValueError(
            f"{where}: labels must lie in [0, {classes}) for {classes} classes, received label "
            f"{bad}"
        )
    xp = be.xp
    return xp.asarray(arr).astype(xp.int64, copy=False)


class SoftmaxWithLoss(Loss):
    """Softmax followed by cross-entropy, as one layer ("Deep Learning from Scratch").

    ``forward(x, t)`` takes scores ``x`` (N, C) and targets ``t`` that are one-hot (N, C)
    or integer labels (N,), and returns the mean loss; ``backward()`` returns
    dL/dx = (softmax(x) - t) / N from the fused kernel.
    """

    keras_name = "softmax_with_loss"

    def __init__(self, reduction: str = "mean", **kwargs: Any) -> None:
        if reduction == "none":
            raise ValueError("SoftmaxWithLoss: reduction must be 'mean' or 'sum'. Received: "
                             "reduction='none'")
        super().__init__(reduction=reduction, **kwargs)

    def prepare_target(self, pred, target):
        shape = getattr(target, "shape", np.shape(target))
        if tuple(shape) == tuple(pred.shape):
            return super().prepare_target(pred, target)
        return prepare_labels(self.backend, pred, target, self.describe())

    def _forward(self, pred, target):
        be = self.backend
        op = be.sparse_softmax_cross_entropy if target.ndim == 1 else be.softmax_cross_entropy
        return _fused(self, op, pred, target)

    def _backward(self, dout):
        return _fused_backward(self._cache, dout)
