"""Cross-entropy losses; with logits they run the fused softmax-cross-entropy op."""

from __future__ import annotations

from typing import Any

import numpy as np

from fastnn.losses.base import ElementwiseLoss, Loss

#: Keras's fuzz factor: probabilities are clipped to [EPSILON, 1 - EPSILON] before log.
EPSILON = 1e-7


class _LogitsAndSmoothing:
    """``from_logits`` and ``label_smoothing`` arguments shared by the cross-entropies."""

    def __init__(
        self, from_logits: bool = False, label_smoothing: float = 0.0, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.from_logits = bool(from_logits)
        self.label_smoothing = check_label_smoothing(type(self).__name__, label_smoothing)

    def describe(self) -> str:
        """``CategoricalCrossentropy(from_logits=True)``."""
        extra = f", label_smoothing={self.label_smoothing}" if self.label_smoothing else ""
        return f"{type(self).__name__}(from_logits={self.from_logits}{extra})"

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {
            **super().get_config(),
            "from_logits": self.from_logits,
            "label_smoothing": self.label_smoothing,
        }


class CategoricalCrossentropy(_LogitsAndSmoothing, Loss):
    """-sum(target * log(p)) per sample, for one-hot or soft targets of shape (N, C).

    With ``from_logits=True`` the predictions are scores and the loss is computed by the
    fused softmax-cross-entropy kernel (forward and backward in one pass; with sample
    weights or ``reduction="none"`` by log-softmax instead). Otherwise they are
    probabilities: as in Keras they are renormalised to sum to 1 along the last axis and
    clipped to ``[EPSILON, 1 - EPSILON]`` (EPSILON = 1e-7) before the log; clipped entries
    get zero gradient.

    Args:
        from_logits: whether predictions are unnormalised scores.
        label_smoothing: in [0, 1]; targets become ``t (1 - s) + s / C`` for C classes
            (Keras's definition).
        reduction, name, backend: see :class:`fastnn.losses.Loss`.
    """

    keras_name = "categorical_crossentropy"

    def check_pred(self, pred):
        super().check_pred(pred)
        if pred.ndim != 2:
            raise ValueError(
                f"{self.describe()}: expected predictions of shape (N, classes), received "
                f"shape {tuple(pred.shape)}"
            )

    def _forward(self, pred, target):
        if self.label_smoothing:
            target = smooth_labels(target, self.label_smoothing)
        return _dense_forward(self, pred, target)

    def _backward(self, dout):
        return _dense_backward(self, dout)


def check_label_smoothing(where: str, value: float) -> float:
    """``value`` as a float in [0, 1]; ValueError naming ``where`` otherwise."""
    v = float(value)
    if not 0.0 <= v <= 1.0:
        raise ValueError(
            f"{where}: label_smoothing must lie in [0, 1]. Received: label_smoothing={value!r}"
        )
    return v


def smooth_labels(target: Any, smoothing: float) -> Any:
    """Keras's label smoothing along the last axis: t (1 - s) + s / C."""
    return target * (1.0 - smoothing) + smoothing / target.shape[-1]


def _dense_forward(loss: Loss, pred, target) -> Any:
    """Categorical cross-entropy of (N, C) predictions against (N, C) targets."""
    be = loss.backend
    if loss.from_logits and loss.reduction != "none" and loss._weights is None:
        return _fused(loss, be.softmax_cross_entropy, pred, target)
    xp = be.xp
    if loss.from_logits:
        logp = be.log_softmax(pred)
        loss._cache = {"p": xp.exp(logp), "target": target}
        return loss.reduce(-(target * logp).sum(axis=1))
    s = pred.sum(axis=1, keepdims=True)
    q = pred / s
    c = xp.clip(q, EPSILON, 1.0 - EPSILON)
    loss._cache = {"q": q, "c": c, "s": s, "target": target}
    return loss.reduce(-(target * xp.log(c)).sum(axis=1))


def _dense_backward(loss: Loss, dout) -> Any:
    """dL/dpred of :func:`_dense_forward`, scaled by the reduction, weights and ``dout``."""
    cache = loss._cache
    if "dx" in cache:
        return _fused_backward(cache, dout)
    if "p" in cache:
        return loss.scale_grad(cache["p"] - cache["target"], dout)
    return loss.scale_grad(_clipped_probability_grad(cache), dout)


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


class SparseCategoricalCrossentropy(_LogitsAndSmoothing, Loss):
    """Cross-entropy against integer class labels of shape (N,) (or (N, 1)).

    Same conventions as :class:`CategoricalCrossentropy`; labels must lie in
    ``[0, classes)`` and a label outside raises ValueError naming it. With
    ``label_smoothing`` s > 0 the one-hot target of each label becomes
    ``onehot (1 - s) + s / C`` (then the dense cross-entropy is used).
    """

    keras_name = "sparse_categorical_crossentropy"

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
        if self.label_smoothing:
            target = xp.zeros_like(pred)
            target[xp.arange(n), labels] = 1
            return _dense_forward(self, pred, smooth_labels(target, self.label_smoothing))
        if self.from_logits and self.reduction != "none" and self._weights is None:
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
        if "target" in cache:
            return _dense_backward(self, dout)
        if "p" in cache:
            grad = cache["p"].copy()
            grad[self.backend.xp.arange(grad.shape[0]), cache["labels"]] -= 1
            return self.scale_grad(grad, dout)
        return self.scale_grad(_clipped_probability_grad(cache), dout)


#: Largest magnitude a float label may have (so the cast to int64 is exact and warning-free).
LABEL_LIMIT = 2.0**62


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
        mod = np if host is not None else be.xp
        if not bool((mod.abs(arr) < LABEL_LIMIT).all()):  # also False for NaN
            raise ValueError(f"{where}: labels must be finite whole numbers below 2**62, "
                             f"received {arr[~(mod.abs(arr) < LABEL_LIMIT)][0]}")
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
        if self._weights is not None:
            raise ValueError(
                "SoftmaxWithLoss: sample_weight is not supported; use "
                "CategoricalCrossentropy(from_logits=True) or "
                "SparseCategoricalCrossentropy(from_logits=True)"
            )
        be = self.backend
        op = be.sparse_softmax_cross_entropy if target.ndim == 1 else be.softmax_cross_entropy
        return _fused(self, op, pred, target)

    def _backward(self, dout):
        return _fused_backward(self._cache, dout)


class BinaryCrossentropy(_LogitsAndSmoothing, ElementwiseLoss):
    """-mean(t log p + (1 - t) log(1 - p)) over the features, for targets in [0, 1].

    Probabilities (the default) are clipped to ``[EPSILON, 1 - EPSILON]`` (EPSILON = 1e-7,
    Keras's convention) before the logs, so predictions and targets of exactly 0 or 1 give a
    finite loss; clipped entries get zero gradient. With ``from_logits=True`` the loss is
    computed from scores z as ``max(z, 0) - z t + log1p(exp(-|z|))``, finite for any finite
    z, with gradient ``sigmoid(z) - t``.

    Args:
        from_logits: whether predictions are scores rather than probabilities.
        label_smoothing: in [0, 1]; targets become ``t (1 - s) + s / 2`` (Keras).
        reduction, name, backend: see :class:`fastnn.losses.Loss`.
    """

    keras_name = "binary_crossentropy"

    def values_and_grad(self, pred, target):
        """(elementwise cross-entropy, its derivative with respect to pred)."""
        xp = self.backend.xp
        t = target
        if self.label_smoothing:
            t = t * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        if self.from_logits:
            values = xp.log1p(xp.exp(-xp.abs(pred)))
            values += xp.maximum(pred, 0)
            values -= pred * t
            sig = xp.tanh(pred * 0.5)
            sig += 1
            sig *= 0.5
            return values, sig - t
        c = xp.clip(pred, EPSILON, 1.0 - EPSILON)
        one_minus = 1.0 - c
        values = -(t * xp.log(c) + (1.0 - t) * xp.log(one_minus))
        grad = (c - t) / (c * one_minus)
        grad *= (pred > EPSILON) & (pred < 1.0 - EPSILON)
        return values, grad
