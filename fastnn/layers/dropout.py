"""Dropout: inverted dropout, active only while training."""

from __future__ import annotations

from typing import Any

from fastnn.layers.base import Layer


class Dropout(Layer):
    """Zeroes a fraction ``rate`` of the inputs while training and scales the rest by
    1 / (1 - rate) (inverted dropout), so inference is the identity.

    The mask is drawn from the layer's backend generator (seeded with
    ``fastnn.utils.set_seed`` or ``backend.seed``) and reused by ``backward``.

    Args:
        rate: fraction to drop, in [0, 1).
        noise_shape: shape of the mask, broadcast against the input (``None`` entries
            take the input's size), e.g. ``(None, C, 1, 1)`` to drop whole channels.
        **kwargs: Layer arguments.
    """

    def __init__(self, rate: float, noise_shape: tuple | None = None, **kwargs: Any) -> None:
        rate = float(rate)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"Dropout: rate must be in [0, 1). Received: rate={rate}")
        super().__init__(**kwargs)
        self.rate = rate
        self.noise_shape = tuple(noise_shape) if noise_shape is not None else None
        self._mask = None  # scaled keep-mask (0 or 1/(1-rate)), broadcastable to the input

    def describe(self) -> str:
        """``Dropout(0.5)``."""
        return f"Dropout({self.rate})"

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {**super().get_config(), "rate": self.rate, "noise_shape": self.noise_shape}

    def _mask_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if self.noise_shape is None:
            return shape
        if len(self.noise_shape) != len(shape):
            raise ValueError(
                f"{self.describe()}: noise_shape {self.noise_shape} has {len(self.noise_shape)} "
                f"axes, input shape {shape} has {len(shape)}"
            )
        return tuple(s if n is None else int(n) for n, s in zip(self.noise_shape, shape,
                                                                 strict=True))

    def _forward(self, x, training):
        if not training or self.rate == 0.0:
            self._mask = None
            return x
        be = self.backend
        keep = 1.0 - self.rate
        u = be.uniform(self._mask_shape(tuple(x.shape)), self.dtype)
        mask = (u < keep).astype(self.dtype)
        mask *= 1.0 / keep
        self._mask = mask
        return be.xp.multiply(x, mask, out=self.buffer("y", x.shape))

    def _backward(self, dout):
        if self._mask is None:
            return dout
        return self.backend.xp.multiply(dout, self._mask, out=self.buffer("dx", dout.shape))
