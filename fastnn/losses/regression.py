"""Regression losses: squared, absolute, percentage, logarithmic, Huber, log-cosh, cosine.

Each per-sample loss is the mean over the features (Keras's mean over the last axis), except
cosine similarity, which is one value per row of the last axis. Where Keras clips with its
fuzz factor ``EPSILON = 1e-7`` the same clip is applied, and the gradient is zero through a
clipped entry.
"""

from __future__ import annotations

import math
from typing import Any

from fastnn.losses.base import ElementwiseLoss

#: Keras's fuzz factor (``keras.backend.epsilon()``).
EPSILON = 1e-7
#: Floor of the squared norm in Keras's ``l2_normalize`` (x / sqrt(max(sum x^2, 1e-12))).
L2_NORMALIZE_EPSILON = 1e-12
#: MAPE is reported in percent.
PERCENT = 100.0
_LOG2 = math.log(2.0)


class MeanSquaredError(ElementwiseLoss):
    """mean((pred - target)^2) over the features of a sample, then reduced over the batch."""

    keras_name = "mean_squared_error"

    def values_and_grad(self, pred, target):
        """(e^2, 2 e) for e = pred - target."""
        diff = pred - target
        return diff * diff, diff * 2.0


class MeanAbsoluteError(ElementwiseLoss):
    """mean(|pred - target|) over the features; the gradient is sign(pred - target) (0 at a
    tie, where |x| has a kink)."""

    keras_name = "mean_absolute_error"

    def values_and_grad(self, pred, target):
        """(|e|, sign(e))."""
        xp = self.backend.xp
        diff = pred - target
        return xp.abs(diff), xp.sign(diff)


class MeanAbsolutePercentageError(ElementwiseLoss):
    """100 * mean(|target - pred| / max(|target|, EPSILON)) over the features (Keras: targets
    near 0 are floored at EPSILON = 1e-7 in the denominator)."""

    keras_name = "mean_absolute_percentage_error"

    def values_and_grad(self, pred, target):
        """(100 |e| / d, 100 sign(e) / d) for d = max(|target|, EPSILON)."""
        xp = self.backend.xp
        scale = PERCENT / xp.maximum(xp.abs(target), EPSILON)
        diff = pred - target
        return xp.abs(diff) * scale, xp.sign(diff) * scale


class MeanSquaredLogarithmicError(ElementwiseLoss):
    """mean((log(max(pred, EPSILON) + 1) - log(max(target, EPSILON) + 1))^2) over the
    features, Keras's clipping at EPSILON = 1e-7 (zero gradient for pred below it)."""

    keras_name = "mean_squared_logarithmic_error"

    def values_and_grad(self, pred, target):
        """(d^2, 2 d / (max(pred, eps) + 1)) for d the difference of the logs."""
        xp = self.backend.xp
        p1 = xp.maximum(pred, EPSILON) + 1.0
        diff = xp.log(p1) - xp.log(xp.maximum(target, EPSILON) + 1.0)
        grad = diff * 2.0 / p1
        grad *= pred > EPSILON
        return diff * diff, grad


class Huber(ElementwiseLoss):
    """Huber loss, mean over the features of 0.5 e^2 for |e| <= delta and
    delta (|e| - delta / 2) beyond (e = pred - target).

    Args:
        delta: where the loss turns from quadratic to linear, > 0 (default 1.0, as Keras).
        reduction, name, backend: see :class:`fastnn.losses.Loss`.
    """

    keras_name = "huber"

    def __init__(self, delta: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        delta = float(delta)
        if not math.isfinite(delta) or delta <= 0:
            raise ValueError(f"Huber: delta must be a finite number > 0. Received: delta={delta}")
        self.delta = delta

    def describe(self) -> str:
        """``Huber(delta=1.0)``."""
        return f"Huber(delta={self.delta})"

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {**super().get_config(), "delta": self.delta}

    def values_and_grad(self, pred, target):
        """(huber(e), e clipped to [-delta, delta])."""
        xp = self.backend.xp
        d = self.delta
        diff = pred - target
        a = xp.abs(diff)
        quadratic = a <= d
        values = xp.where(quadratic, 0.5 * diff * diff, d * a - 0.5 * d * d)
        return values, xp.clip(diff, -d, d)


class LogCosh(ElementwiseLoss):
    """mean(log(cosh(pred - target))) over the features, computed as
    e + softplus(-2 e) - log 2 (Keras's form; never overflows). The gradient is tanh(e)."""

    keras_name = "log_cosh"

    def values_and_grad(self, pred, target):
        """(log cosh e, tanh e)."""
        xp = self.backend.xp
        diff = pred - target
        m = diff * -2.0
        softplus = xp.log1p(xp.exp(-xp.abs(m))) + xp.maximum(m, 0)
        return diff + softplus - _LOG2, xp.tanh(diff)


class CosineSimilarity(ElementwiseLoss):
    """-cos(target, pred) along the last axis: Keras's sign convention, so that minimising
    the loss maximises the similarity (-1 is a perfect match).

    Both vectors are normalised as in Keras's ``l2_normalize``: v / sqrt(max(sum v^2,
    1e-12)), so all-zero rows give a loss of 0 instead of NaN.
    """

    keras_name = "cosine_similarity"

    def values_and_grad(self, pred, target):
        """(-t_hat . p_hat per row, its gradient with respect to pred)."""
        xp = self.backend.xp
        pn = xp.sqrt(xp.maximum((pred * pred).sum(axis=-1, keepdims=True), L2_NORMALIZE_EPSILON))
        tn = xp.sqrt(
            xp.maximum((target * target).sum(axis=-1, keepdims=True), L2_NORMALIZE_EPSILON)
        )
        p_hat = pred / pn
        t_hat = target / tn
        cos = (t_hat * p_hat).sum(axis=-1, keepdims=True)
        # d(-t_hat . p / |p|) / dp = -(t_hat - cos p_hat) / |p| (the floor cuts the norm term).
        floored = (pred * pred).sum(axis=-1, keepdims=True) <= L2_NORMALIZE_EPSILON
        grad = -(t_hat - xp.where(floored, 0.0, cos) * p_hat) / pn
        return -cos[..., 0], grad.astype(pred.dtype, copy=False)
