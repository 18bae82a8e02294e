"""Kullback-Leibler divergence and Poisson loss, with Keras's clipping conventions."""

from __future__ import annotations

from fastnn.losses.base import ElementwiseLoss

#: Keras's fuzz factor (``keras.backend.epsilon()``).
EPSILON = 1e-7


class KLDivergence(ElementwiseLoss):
    """sum(t * log(t / p)) along the last axis, with t and p clipped to [EPSILON, 1] first
    (Keras; EPSILON = 1e-7), so targets of exactly 0 or 1 and predictions of 0 stay finite.

    The gradient with respect to ``pred`` is -t / p inside the clip range and 0 where
    ``pred`` was clipped (below EPSILON or above 1).
    """

    keras_name = "kl_divergence"

    def values_and_grad(self, pred, target):
        """(per-row divergence, -t_c / p_c where p is not clipped)."""
        xp = self.backend.xp
        t = xp.clip(target, EPSILON, 1.0)
        p = xp.clip(pred, EPSILON, 1.0)
        values = (t * xp.log(t / p)).sum(axis=-1)
        grad = -t / p
        grad *= (pred > EPSILON) & (pred < 1.0)
        return values, grad


class Poisson(ElementwiseLoss):
    """mean(pred - t * log(pred + EPSILON)) over the features (Keras; EPSILON = 1e-7).

    Predictions are rates and must be > -EPSILON (a softplus or exponential output).
    """

    keras_name = "poisson"

    def values_and_grad(self, pred, target):
        """(p - t log(p + eps), 1 - t / (p + eps))."""
        xp = self.backend.xp
        shifted = pred + EPSILON
        return pred - target * xp.log(shifted), 1.0 - target / shifted
