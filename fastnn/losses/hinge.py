"""Hinge losses for maximum-margin classification (Keras definitions)."""

from __future__ import annotations

from typing import Any

from fastnn.losses.base import ElementwiseLoss


def hinge_labels(xp: Any, target: Any) -> Any:
    """Targets in {-1, 1}: as in Keras, targets that are all 0 or 1 become 2 t - 1."""
    if bool(((target == 0) | (target == 1)).all()):
        return target * 2.0 - 1.0
    return target


class Hinge(ElementwiseLoss):
    """mean(max(1 - t * pred, 0)) over the features, for targets t in {-1, 1} (targets in
    {0, 1} are converted, like Keras). The gradient at the kink t * pred = 1 is taken as 0."""

    keras_name = "hinge"

    def values_and_grad(self, pred, target):
        """(max(1 - t p, 0), -t where the margin is violated)."""
        xp = self.backend.xp
        t = hinge_labels(xp, target)
        margin = 1.0 - t * pred
        active = margin > 0
        return xp.maximum(margin, 0.0), -t * active


class SquaredHinge(ElementwiseLoss):
    """mean(max(1 - t * pred, 0)^2) over the features, targets as in :class:`Hinge`."""

    keras_name = "squared_hinge"

    def values_and_grad(self, pred, target):
        """(max(1 - t p, 0)^2, -2 t max(1 - t p, 0))."""
        xp = self.backend.xp
        t = hinge_labels(xp, target)
        margin = xp.maximum(1.0 - t * pred, 0.0)
        return margin * margin, -2.0 * t * margin


class CategoricalHinge(ElementwiseLoss):
    """max(neg - pos + 1, 0) per row, with pos = sum(t * pred) and neg = max((1 - t) * pred)
    along the last axis (Keras's definition, for one-hot targets)."""

    keras_name = "categorical_hinge"

    def values_and_grad(self, pred, target):
        """(per-row hinge, its gradient: -t plus (1 - t) at the arg max of neg)."""
        xp = self.backend.xp
        pos = (target * pred).sum(axis=-1)
        wrong = (1.0 - target) * pred
        neg = wrong.max(axis=-1)
        margin = neg - pos + 1.0
        active = (margin > 0)[..., None]
        top = wrong.argmax(axis=-1)[..., None]
        onehot = xp.arange(pred.shape[-1]) == top
        grad = (1.0 - target) * onehot - target
        grad *= active
        return xp.maximum(margin, 0.0), grad
