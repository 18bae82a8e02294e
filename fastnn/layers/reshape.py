"""Plumbing layers that only change shapes: Flatten, Reshape, and the Input marker."""

from __future__ import annotations

from typing import Any

import numpy as np

from fastnn.layers.base import Layer, shape_str


class Flatten(Layer):
    """(N, d1, d2, ...) -> (N, d1 * d2 * ...); a view when the input is contiguous."""

    def compute_output_shape(self, input_shape):
        return (int(np.prod(input_shape)) if input_shape else 1,)

    def describe(self) -> str:
        """``Flatten()``."""
        return "Flatten()"

    def _forward(self, x, training):
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def _backward(self, dout):
        return dout.reshape(self._shape)


class Reshape(Layer):
    """Reshape each sample to ``target_shape`` (one entry may be -1), batch axis kept."""

    def __init__(self, target_shape: tuple[int, ...], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        target = tuple(int(d) for d in target_shape)
        if sum(d == -1 for d in target) > 1 or any(d == 0 or d < -1 for d in target):
            raise ValueError(
                f"Reshape: target_shape may hold positive sizes and at most one -1. "
                f"Received: target_shape={target_shape}"
            )
        self.target_shape = target

    def describe(self) -> str:
        """``Reshape((1, 8, 8))``."""
        return f"Reshape({self.target_shape})"

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {**super().get_config(), "target_shape": list(self.target_shape)}

    def compute_output_shape(self, input_shape):
        size = int(np.prod(input_shape))
        known = int(np.prod([d for d in self.target_shape if d != -1]))
        target = self.target_shape
        if -1 in target:
            if size % known:
                raise ValueError(
                    f"{self.describe()}: cannot reshape samples of shape {input_shape} "
                    f"({size} values) to {target}"
                )
            target = tuple(size // known if d == -1 else d for d in target)
        if int(np.prod(target)) != size:
            raise ValueError(
                f"{self.describe()}: cannot reshape samples of shape {input_shape} "
                f"({size} values) to {target} ({int(np.prod(target))} values)"
            )
        return target

    def _forward(self, x, training):
        self._shape = x.shape
        return x.reshape((x.shape[0], *self.output_shape))

    def _backward(self, dout):
        return dout.reshape(self._shape)


class Input(Layer):
    """Declares the sample shape of a Sequential model (Keras's ``Input(shape=...)``).

    It is the identity; as the first layer it lets the model build at once.
    """

    def __init__(self, shape: tuple[int, ...], **kwargs: Any) -> None:
        shape = tuple(int(d) for d in shape)
        if any(d <= 0 for d in shape):
            raise ValueError(f"Input: shape must hold positive sizes. Received: shape={shape}")
        super().__init__(input_shape=shape, **kwargs)
        self.shape = shape

    def describe(self) -> str:
        """``Input(shape=(64,))``."""
        return f"Input(shape={shape_str(self.shape)})"

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {**super().get_config(), "shape": list(self.shape)}

    def _forward(self, x, training):
        return x

    def _backward(self, dout):
        return dout
