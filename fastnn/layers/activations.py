"""Activation layers: ``Activation(name)`` and the named classes ReLU, Sigmoid, ..."""

from __future__ import annotations

from functools import partial
from typing import Any

from fastnn import activations
from fastnn.layers.base import Layer


class Activation(Layer):
    """Applies an activation by name (``"relu"``, ``"softmax"``, ...), Keras-style.

    Args:
        activation: a name from :func:`fastnn.activations.names`.
        axis: axis of ``softmax`` / ``log_softmax`` (default the last).
        **kwargs: Layer arguments (name, backend, dtype, input_shape).
    """

    def __init__(self, activation: str, axis: int = -1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.activation = activations.get(activation, where=type(self).__name__)
        self.axis = int(axis)
        self._x = None  # input batch, kept when the backward needs it
        self._y = None  # output batch, same shape as the input

    def describe(self) -> str:
        """``Activation('relu')``."""
        return f"{type(self).__name__}({self.activation!r})"

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {**super().get_config(), "activation": self.activation, "axis": self.axis}

    def _forward(self, x, training):
        be = self.backend
        if self.activation in activations.ROW_ACTIVATIONS:
            op = be.softmax if self.activation == "softmax" else be.log_softmax
            y = _along_axis(be.xp, op, self.axis, x)
        else:
            y = be.activation_forward(self.activation, x, out=self.buffer("y", x.shape))
            if activations.uses_input(self.activation):
                self._x = x
        self._y = y
        return y

    def _backward(self, dout):
        be = self.backend
        if self.activation == "softmax":
            return _along_axis(be.xp, be.softmax_backward, self.axis, dout, self._y)
        if self.activation == "log_softmax":
            op = partial(_log_softmax_backward, be.xp)
            return _along_axis(be.xp, op, self.axis, dout, self._y)
        out = self.buffer("dx", dout.shape)
        return be.activation_backward(self.activation, dout, self._x, self._y, out=out)


def _log_softmax_backward(xp, dy, y):
    """dx = dy - softmax(x) * sum(dy) for y = log_softmax(x), along the last axis."""
    p = xp.exp(y)
    p *= dy.sum(axis=-1, keepdims=True)
    return xp.subtract(dy, p, out=p)


def _along_axis(xp, op, axis, *arrays):
    """Apply the last-axis op ``op(*arrays)`` along ``axis`` (moved last, then back)."""
    if axis in (-1, arrays[0].ndim - 1):
        return op(*arrays)
    moved = [xp.ascontiguousarray(xp.moveaxis(a, axis, -1)) for a in arrays]
    return xp.ascontiguousarray(xp.moveaxis(op(*moved), -1, axis))


class ReLU(Activation):
    """max(x, 0)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("relu", **kwargs)

    def get_config(self) -> dict:
        """Constructor arguments."""
        return Layer.get_config(self)

    def describe(self) -> str:
        """``ReLU()``."""
        return "ReLU()"


class Sigmoid(Activation):
    """1 / (1 + exp(-x)), computed without overflow."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("sigmoid", **kwargs)

    def get_config(self) -> dict:
        """Constructor arguments."""
        return Layer.get_config(self)

    def describe(self) -> str:
        """``Sigmoid()``."""
        return "Sigmoid()"


class Tanh(Activation):
    """Hyperbolic tangent."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("tanh", **kwargs)

    def get_config(self) -> dict:
        """Constructor arguments."""
        return Layer.get_config(self)

    def describe(self) -> str:
        """``Tanh()``."""
        return "Tanh()"


class Step(Activation):
    """Heaviside step: 1 where x > 0 else 0. Its gradient is zero almost everywhere; backward
    returns zeros (the step function cannot be trained through)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("step", **kwargs)

    def get_config(self) -> dict:
        """Constructor arguments."""
        return Layer.get_config(self)

    def describe(self) -> str:
        """``Step()``."""
        return "Step()"


class Softmax(Activation):
    """exp(x) / sum(exp(x)) along ``axis`` (default the last)."""

    def __init__(self, axis: int = -1, **kwargs: Any) -> None:
        super().__init__("softmax", axis=axis, **kwargs)

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {**Layer.get_config(self), "axis": self.axis}

    def describe(self) -> str:
        """``Softmax(axis=-1)``."""
        return f"Softmax(axis={self.axis})"
