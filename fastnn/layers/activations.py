"""Activation layers: ``Activation(name)`` and one named class per activation (Keras names).

Parametrised ones: ``LeakyReLU(alpha=0.3)`` (Keras's layer default), ``ELU(alpha=1.0)``,
``GELU(approximate=False)``, ``Softmax(axis)``, ``LogSoftmax(axis)``; ``PReLU`` (a learned
slope) lives in :mod:`fastnn.layers.prelu`.
"""

from __future__ import annotations

import math
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
        # Parameter of leaky_relu / elu passed to the ops; 0.0 means the Keras default.
        self.alpha = 0.0
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
            y = be.activation_forward(
                self.activation, x, out=self.buffer("y", x.shape), alpha=self.alpha
            )
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
        return be.activation_backward(
            self.activation, dout, self._x, self._y, out=out, alpha=self.alpha
        )


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


class _NamedActivation(Activation):
    """An :class:`Activation` with a fixed name and no constructor arguments of its own."""

    activation_name = "linear"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(self.activation_name, **kwargs)

    def get_config(self) -> dict:
        """Constructor arguments."""
        return Layer.get_config(self)

    def describe(self) -> str:
        """``ReLU()``."""
        return f"{type(self).__name__}()"


class ReLU(_NamedActivation):
    """max(x, 0)."""

    activation_name = "relu"


class ReLU6(_NamedActivation):
    """min(max(x, 0), 6)."""

    activation_name = "relu6"


class Sigmoid(_NamedActivation):
    """1 / (1 + exp(-x)), computed without overflow."""

    activation_name = "sigmoid"


class Tanh(_NamedActivation):
    """Hyperbolic tangent."""

    activation_name = "tanh"


class Linear(_NamedActivation):
    """The identity: y = x (Keras's ``linear`` activation)."""

    activation_name = "linear"


class Step(_NamedActivation):
    """Heaviside step: 1 where x > 0 else 0. Its gradient is zero almost everywhere; backward
    returns zeros (the step function cannot be trained through)."""

    activation_name = "step"


class SELU(_NamedActivation):
    """Scaled ELU: scale * (x if x > 0 else alpha * (exp(x) - 1)), with Keras's constants
    alpha = 1.6732632423543772, scale = 1.0507009873554805."""

    activation_name = "selu"


class Softsign(_NamedActivation):
    """x / (1 + |x|)."""

    activation_name = "softsign"


class HardSigmoid(_NamedActivation):
    """Keras 3's hard sigmoid relu6(x + 3) / 6 = clip(x / 6 + 1/2, 0, 1) (slope 1/6)."""

    activation_name = "hard_sigmoid"


class Softplus(_NamedActivation):
    """log(1 + exp(x)), computed as max(x, 0) + log1p(exp(-|x|)) (never overflows)."""

    activation_name = "softplus"


class SiLU(_NamedActivation):
    """x * sigmoid(x) (Keras's ``silu``, also called ``swish``)."""

    activation_name = "silu"


class Swish(SiLU):
    """x * sigmoid(x): the same function as :class:`SiLU`."""


class HardSiLU(_NamedActivation):
    """x * hard_sigmoid(x) (Keras's ``hard_silu`` / ``hard_swish``)."""

    activation_name = "hard_silu"


class Mish(_NamedActivation):
    """x * tanh(softplus(x)) (Misra 2019)."""

    activation_name = "mish"


class LeakyReLU(Activation):
    """x if x > 0 else alpha * x.

    Args:
        alpha: slope for x <= 0, >= 0. Default 0.3, the default of Keras's ``LeakyReLU``
            layer (Keras 2 and 3); the string ``"leaky_relu"`` uses 0.2 like
            ``keras.activations.leaky_relu``.
        negative_slope: Keras 3's name for ``alpha`` (give one of the two).
        **kwargs: Layer arguments.
    """

    def __init__(
        self, alpha: float = 0.3, negative_slope: float | None = None, **kwargs: Any
    ) -> None:
        if negative_slope is not None:
            alpha = negative_slope
        alpha = _checked_parameter("LeakyReLU", "alpha", alpha)
        # A slope of exactly 0 is relu (the ops read alpha=0.0 as "the default slope").
        super().__init__("relu" if alpha == 0.0 else "leaky_relu", **kwargs)
        self.alpha = alpha

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {**Layer.get_config(self), "alpha": self.alpha}

    def describe(self) -> str:
        """``LeakyReLU(alpha=0.3)``."""
        return f"LeakyReLU(alpha={self.alpha})"


class ELU(Activation):
    """x if x > 0 else alpha * (exp(x) - 1).

    Args:
        alpha: saturation value for negative inputs, >= 0 (default 1.0, as in Keras;
            0 gives relu).
        **kwargs: Layer arguments.
    """

    def __init__(self, alpha: float = 1.0, **kwargs: Any) -> None:
        alpha = _checked_parameter("ELU", "alpha", alpha)
        super().__init__("relu" if alpha == 0.0 else "elu", **kwargs)
        self.alpha = alpha

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {**Layer.get_config(self), "alpha": self.alpha}

    def describe(self) -> str:
        """``ELU(alpha=1.0)``."""
        return f"ELU(alpha={self.alpha})"


class GELU(Activation):
    """Gaussian error linear unit x * Phi(x) (Hendrycks and Gimpel 2016).

    Args:
        approximate: False (default, as in Keras) for the exact erf form; True for
            0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))).
        **kwargs: Layer arguments.
    """

    def __init__(self, approximate: bool = False, **kwargs: Any) -> None:
        self.approximate = bool(approximate)
        super().__init__("gelu_tanh" if self.approximate else "gelu", **kwargs)

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {**Layer.get_config(self), "approximate": self.approximate}

    def describe(self) -> str:
        """``GELU(approximate=False)``."""
        return f"GELU(approximate={self.approximate})"


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


class LogSoftmax(Activation):
    """log(softmax(x)) along ``axis`` (default the last), computed without forming softmax
    (finite for any finite input)."""

    def __init__(self, axis: int = -1, **kwargs: Any) -> None:
        super().__init__("log_softmax", axis=axis, **kwargs)

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {**Layer.get_config(self), "axis": self.axis}

    def describe(self) -> str:
        """``LogSoftmax(axis=-1)``."""
        return f"LogSoftmax(axis={self.axis})"


def _checked_parameter(layer: str, key: str, value: Any) -> float:
    """``value`` as a float; TypeError/ValueError naming the layer unless finite and >= 0."""
    if isinstance(value, bool):
        raise TypeError(f"{layer}: {key} must be a number. Received: {key}={value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{layer}: {key} must be a number. Received: {key}={value!r}") from None
    if not math.isfinite(v) or v < 0:
        raise ValueError(
            f"{layer}: {key} must be a finite number >= 0. Received: {key}={value!r}"
        )
    return v
