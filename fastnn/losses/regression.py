"""Regression losses."""

from __future__ import annotations

from fastnn.losses.base import Loss


def _feature_count(a) -> int:
    return int(a.size // a.shape[0])


class MeanSquaredError(Loss):
    """mean((pred - target)^2) over the features of a sample, then reduced over the batch."""

    keras_name = "mean_squared_error"

    def _forward(self, pred, target):
        diff = pred - target
        per_sample = (diff * diff).reshape(pred.shape[0], -1).mean(axis=1)
        self._cache = {"diff": diff}
        return self.reduce(per_sample)

    def _backward(self, dout):
        diff = self._cache["diff"]
        grad = diff * (2.0 / _feature_count(diff))
        return self.scale_grad(grad, dout)
