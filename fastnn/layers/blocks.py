"""Composite layers for non-sequential architectures: residual (ResNet) and dense (DenseNet)
connectivity.

A composite layer owns sublayers, returns them from :meth:`~fastnn.layers.base.Layer.sublayers`
(so a model's ``params`` / ``grads``, optimizers, casting and buffer reuse reach them) and
runs them inside its own ``forward`` / ``backward``. A branch is a single layer or a list of
layers applied in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fastnn import activations
from fastnn.config import resolve_float_dtype
from fastnn.errors import NotBuiltError
from fastnn.layers.base import Layer, shape_str
from fastnn.layers.conv import check_image_shape

Branch = Layer | Sequence[Layer]


def _as_layers(branch: Branch, where: str, what: str) -> list[Layer]:
    """``branch`` as a list of layers; ``{"class_name", "config"}`` entries (as written by
    ``get_config``, e.g. in a saved model) are rebuilt into layers."""
    if isinstance(branch, dict):
        branch = [branch]
    layers = [branch] if isinstance(branch, Layer) else list(branch)
    for i, item in enumerate(layers):
        if isinstance(item, dict) and "class_name" in item:
            from fastnn.io import build_layer  # deferred: fastnn.io imports the layers

            layers[i] = build_layer(item)
    if not layers:
        raise ValueError(f"{where}: {what} must hold at least one layer, received none")
    for layer in layers:
        if not isinstance(layer, Layer):
            raise TypeError(f"{where}: {what} must hold Layers, received {type(layer).__name__}")
    return layers


class _Composite(Layer):
    """Base of layers made of sublayers: parameters, casting and buffers reach them."""

    def _children(self) -> list[Layer]:  # pragma: no cover - every subclass overrides
        return []

    def sublayers(self) -> list[Layer]:
        """The direct sublayers, in the order they run."""
        return list(self._children())

    def _adopt(self, layer: Layer) -> None:
        """Put ``layer`` on this layer's backend and dtype."""
        layer.to_backend(self.backend)
        if layer.dtype != self.dtype:
            layer.cast(self.dtype)

    def _run_chain(self, layers: list[Layer], x: Any, training: bool) -> Any:
        for layer in layers:
            x = layer.forward(x, training=training)
        return x

    def _back_chain(self, layers: list[Layer], dout: Any) -> Any:
        for layer in reversed(layers):
            dout = layer.backward(dout)
        return dout

    def _build_chain(self, layers: list[Layer], shape: tuple[int, ...]) -> tuple[int, ...]:
        for layer in layers:
            self._adopt(layer)
            if not layer.built:
                layer.build(shape)
            elif layer.input_shape != tuple(shape):
                raise ValueError(
                    f"{self.describe()}: {layer.describe()} ({layer.name}) was built for input "
                    f"{shape_str((None, *layer.input_shape))}, but receives "
                    f"{shape_str((None, *shape))}"
                )
            shape = layer.output_shape
        return tuple(shape)

    def named_parameters(self) -> list[tuple[str, Any, Any]]:
        """(``"layer/param"``, parameter, gradient) of this layer and every nested layer."""
        out = [(f"{self.name}/{k}", v, self.grads[k]) for k, v in self.params.items()]
        for sub in self.sublayers():
            if hasattr(sub, "named_parameters"):
                out += sub.named_parameters()
            else:
                out += [(f"{sub.name}/{k}", v, sub.grads[k]) for k, v in sub.params.items()]
        return out

    def count_params(self) -> int:
        """Scalar parameters of this layer and its sublayers."""
        if not self.built:
            raise NotBuiltError(
                f"{self.describe()}.count_params: layer is not built yet; call it on data or "
                "give input_shape"
            )
        own = int(sum(int(np.prod(p.shape)) for p in self.params.values()))
        return own + sum(sub.count_params() for sub in self.sublayers())

    def zero_grads(self) -> None:
        """Zero the gradient buffers of this layer and its sublayers."""
        super().zero_grads()
        for sub in self.sublayers():
            sub.zero_grads()

    def cast(self, dtype: Any) -> None:
        """Cast this layer and its sublayers to ``dtype``."""
        super().cast(dtype)
        dt = resolve_float_dtype(dtype, f"{self.describe()}.cast")
        for sub in self.sublayers():
            sub.cast(dt)

    def release_buffers(self) -> None:
        """Stop reusing buffers here and in every sublayer."""
        super().release_buffers()
        for sub in self.sublayers():
            sub.release_buffers()

    def get_config(self) -> dict:
        """Constructor arguments; sublayers as ``{"class_name", "config"}`` entries."""
        return {**super().get_config()}


def _layer_entry(layer: Layer) -> dict:
    return {"class_name": type(layer).__name__, "config": layer.get_config()}


class Residual(_Composite):
    """y = activation(branch(x) + shortcut(x)): a ResNet residual block.

    Args:
        branch: the residual function F, a layer or a list of layers run in order.
        shortcut: a projection layer (e.g. ``Conv2D(F, 1, strides=2)``) when F changes the
            shape; None means the identity.
        activation: elementwise activation applied after the sum (None means linear).
        **kwargs: Layer arguments (name, backend, dtype, input_shape, trainable).

    Raises:
        ValueError: at build, when the branch and the shortcut produce different shapes.
    """

    def __init__(
        self,
        branch: Branch,
        shortcut: Layer | None = None,
        activation: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.branch = _as_layers(branch, "Residual", "branch")
        if isinstance(shortcut, dict):
            shortcut = _as_layers(shortcut, "Residual", "shortcut")[0]
        if shortcut is not None and not isinstance(shortcut, Layer):
            raise TypeError(f"Residual: shortcut must be a Layer or None, received "
                            f"{type(shortcut).__name__}")
        self.shortcut = shortcut
        act = activations.get(activation, where="Residual")
        if act in activations.ROW_ACTIVATIONS:
            raise ValueError(f"Residual: activation {act!r} is not supported; use an "
                             "elementwise activation")
        self.activation = act
        self._z = None  # branch(x) + shortcut(x), kept when the activation needs it
        self._y = None  # output

    def describe(self) -> str:
        """``Residual(2 layers, projection)``."""
        kind = "identity" if self.shortcut is None else "projection"
        return f"Residual({len(self.branch)} layers, {kind})"

    def _children(self) -> list[Layer]:
        return [*self.branch, *([self.shortcut] if self.shortcut is not None else [])]

    def build_params(self, input_shape):
        out = self._build_chain(self.branch, tuple(input_shape))
        skip = tuple(input_shape)
        if self.shortcut is not None:
            skip = self._build_chain([self.shortcut], skip)
        if out != skip:
            raise ValueError(
                f"{self.describe()}: the branch outputs {shape_str((None, *out))} but the "
                f"shortcut outputs {shape_str((None, *skip))}; give a projection shortcut "
                "(e.g. Conv2D(filters, 1, strides=...)) or keep the shape"
            )
        self._branch_shape = out

    def compute_output_shape(self, input_shape):
        return self._branch_shape

    def _forward(self, x, training):
        be = self.backend
        h = self._run_chain(self.branch, x, training)
        s = x if self.shortcut is None else self.shortcut.forward(x, training=training)
        z = be.xp.add(h, s, out=self.buffer("z", h.shape))
        act = self.activation
        if act == "linear":
            y, self._z = z, None
        elif activations.uses_input(act):
            self._z = z
            y = be.activation_forward(act, z, out=self.buffer("y", z.shape))
        else:
            y, self._z = be.activation_forward(act, z, out=z), None
        self._y = y
        return y

    def _backward(self, dout):
        be = self.backend
        act = self.activation
        if act == "linear":
            dz = dout
        else:
            dz = be.activation_backward(act, dout, self._z, self._y,
                                        out=self.buffer("dz", dout.shape))
        dx_branch = self._back_chain(self.branch, dz)
        ds = dz if self.shortcut is None else self.shortcut.backward(dz)
        return be.xp.add(dx_branch, ds, out=self.buffer("dx", dx_branch.shape))

    def get_config(self) -> dict:
        """Constructor arguments (sublayers as class name and config)."""
        return {
            **super().get_config(),
            "branch": [_layer_entry(layer) for layer in self.branch],
            "shortcut": None if self.shortcut is None else _layer_entry(self.shortcut),
            "activation": self.activation,
        }


class DenseBlock(_Composite):
    """DenseNet connectivity: every unit sees the concatenation of all earlier feature maps.

    With input ``x0`` and units ``H_1 .. H_L``, ``x_i = concat(x_{i-1}, H_i(x_{i-1}))`` along
    channels, and the output is ``x_L`` (the input followed by every unit's new maps). Each
    unit must keep the height and width (``padding="same"``, stride 1).

    Args:
        units: the units H_i; each is a layer or a list of layers (e.g. BN-ReLU-Conv).
        **kwargs: Layer arguments (name, backend, dtype, input_shape, trainable).

    Shapes:
        input ``(N, C0, H, W)``; output ``(N, C0 + g_1 + ... + g_L, H, W)``.
    """

    def __init__(self, units: Sequence[Branch], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(units, Layer) or not list(units):
            raise ValueError("DenseBlock: units must be a non-empty list of layers or lists "
                             "of layers")
        self.units = [_as_layers(u, "DenseBlock", "each unit") for u in units]
        self._offsets: list[int] = []  # channels entering unit i
        self._growth: list[int] = []  # channels unit i adds
        self._inputs: list[Any] = []  # contiguous input of each unit, set by forward

    def describe(self) -> str:
        """``DenseBlock(3 units)``."""
        return f"DenseBlock({len(self.units)} units)"

    def _children(self) -> list[Layer]:
        return [layer for unit in self.units for layer in unit]

    def build_params(self, input_shape):
        c, h, w = check_image_shape(input_shape, self.describe())
        self._offsets, self._growth = [], []
        channels = c
        for i, unit in enumerate(self.units):
            out = self._build_chain(unit, (channels, h, w))
            if len(out) != 3 or out[1:] != (h, w):
                raise ValueError(
                    f"{self.describe()}: unit {i} maps {shape_str((None, channels, h, w))} to "
                    f"{shape_str((None, *out))}; units must keep height and width "
                    "(padding='same', strides=1)"
                )
            self._offsets.append(channels)
            self._growth.append(out[0])
            channels += out[0]
        self._channels = channels

    def compute_output_shape(self, input_shape):
        _, h, w = check_image_shape(input_shape, self.describe())
        return (self._channels, h, w)

    def _forward(self, x, training):
        xp = self.backend.xp
        n, c0 = x.shape[:2]
        y = self.buffer("y", (n, *self.output_shape))
        y[:, :c0] = x
        self._inputs = []
        for i, unit in enumerate(self.units):
            start, grow = self._offsets[i], self._growth[i]
            inp = x if i == 0 else xp.ascontiguousarray(y[:, :start])
            self._inputs.append(inp)
            y[:, start : start + grow] = self._run_chain(unit, inp, training)
        return y

    def _backward(self, dout):
        xp = self.backend.xp
        g = self.buffer("dcat", dout.shape)
        g[...] = dout
        for i in reversed(range(len(self.units))):
            start, grow = self._offsets[i], self._growth[i]
            d_unit = xp.ascontiguousarray(g[:, start : start + grow])
            g[:, :start] += self._back_chain(self.units[i], d_unit)
        return xp.ascontiguousarray(g[:, : self._offsets[0]])

    def get_config(self) -> dict:
        """Constructor arguments (units as lists of class name and config)."""
        return {
            **super().get_config(),
            "units": [[_layer_entry(layer) for layer in unit] for unit in self.units],
        }
