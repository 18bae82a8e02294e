"""Depthwise and depthwise-separable convolutions (MobileNets), NCHW."""

from __future__ import annotations

from typing import Any

from fastnn import activations
from fastnn.layers.base import Layer
from fastnn.layers.conv import (
    Pair,
    _ConvBase,
    _init_name,
    check_image_shape,
    normalize_padding,
    normalize_pair,
    padding_config,
    resolve_padding,
    window_output_hw,
)


def _check_multiplier(depth_multiplier: Any, where: str) -> int:
    if (
        isinstance(depth_multiplier, bool)
        or not isinstance(depth_multiplier, int)
        or depth_multiplier <= 0
    ):
        raise ValueError(
            f"{where}: depth_multiplier must be a positive integer. "
            f"Received: depth_multiplier={depth_multiplier!r}"
        )
    return depth_multiplier


class DepthwiseConv2D(_ConvBase):
    """Convolves each input channel with its own ``depth_multiplier`` filters.

    A grouped convolution with ``groups = C``: ``W`` has shape ``(C * M, 1, kh, kw)`` (output
    channel ``c * M + m`` reads input channel ``c`` only), equal to
    ``torch.nn.functional.conv2d(x, W, b, groups=C)``. The Numba backend runs it as direct
    loops, without im2col.

    Args:
        kernel_size: ``kh`` or ``(kh, kw)``.
        strides: int or pair.
        padding: ``"valid"``, ``"same"``, an int or a tuple (see :class:`Conv2D`).
        depth_multiplier: M, output channels per input channel.
        dilation_rate: int or pair.
        activation: elementwise activation name (None means linear).
        use_bias: whether to add ``b`` of shape ``(C * M,)``.
        depthwise_initializer: initializer of ``W`` (fan_in ``kh * kw``).
        bias_initializer: initializer of ``b``.
        **kwargs: Layer arguments (name, backend, dtype, input_shape, trainable).

    Shapes:
        input ``(N, C, H, W)``; output ``(N, C * M, OH, OW)``.
    """

    def __init__(
        self,
        kernel_size: int | Pair,
        strides: int | Pair = 1,
        padding: Any = "valid",
        depth_multiplier: int = 1,
        dilation_rate: int | Pair = 1,
        activation: str | None = None,
        use_bias: bool = True,
        depthwise_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        **kwargs: Any,
    ) -> None:
        self.depth_multiplier = _check_multiplier(depth_multiplier, "DepthwiseConv2D")
        super().__init__(kernel_size, strides, padding, dilation_rate, activation, use_bias,
                         **kwargs)
        self.depthwise_initializer = depthwise_initializer
        self.bias_initializer = bias_initializer

    def describe(self) -> str:
        """``DepthwiseConv2D((3, 3))``."""
        return f"DepthwiseConv2D({self.kernel_size})"

    def _out_channels(self, channels: int) -> int:
        return channels * self.depth_multiplier

    def build_params(self, input_shape):
        c, _, _ = check_image_shape(input_shape, self.describe())
        self._resolve_geometry(input_shape)
        self.groups = c
        kh, kw = self.kernel_size
        m = self.depth_multiplier
        self.add_param("W", (c * m, 1, kh, kw), self.depthwise_initializer,
                       fan_in=kh * kw, fan_out=kh * kw * m)
        if self.use_bias:
            self.add_param("b", (c * m,), self.bias_initializer)

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {
            **super().get_config(),
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": padding_config(self.padding),
            "depth_multiplier": self.depth_multiplier,
            "dilation_rate": self.dilation_rate,
            "activation": self.activation,
            "use_bias": self.use_bias,
            "depthwise_initializer": _init_name(self.depthwise_initializer),
            "bias_initializer": _init_name(self.bias_initializer),
        }


class SeparableConv2D(Layer):
    """Depthwise convolution followed by a pointwise 1x1 convolution (MobileNets, Xception).

    Parameters: ``depthwise`` ``(C * M, 1, kh, kw)``, ``pointwise`` ``(filters, C * M, 1, 1)``
    and ``b`` ``(filters,)``; the bias and the activation come after the pointwise step, as
    in Keras. Equal to ``conv2d(conv2d(x, depthwise, groups=C), pointwise) + b``.

    Args:
        filters: output channels.
        kernel_size: depthwise window, ``kh`` or ``(kh, kw)``.
        strides: depthwise stride, int or pair.
        padding: depthwise padding (see :class:`Conv2D`).
        depth_multiplier: M, depthwise outputs per input channel.
        dilation_rate: depthwise dilation.
        activation: elementwise activation name (None means linear).
        use_bias: whether to add ``b``.
        depthwise_initializer, pointwise_initializer, bias_initializer: initializers.
        **kwargs: Layer arguments (name, backend, dtype, input_shape, trainable).

    Shapes:
        input ``(N, C, H, W)``; output ``(N, filters, OH, OW)``.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int | Pair,
        strides: int | Pair = 1,
        padding: Any = "valid",
        depth_multiplier: int = 1,
        dilation_rate: int | Pair = 1,
        activation: str | None = None,
        use_bias: bool = True,
        depthwise_initializer: Any = "glorot_uniform",
        pointwise_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        **kwargs: Any,
    ) -> None:
        where = "SeparableConv2D"
        if isinstance(filters, bool) or not isinstance(filters, int) or filters <= 0:
            raise ValueError(
                f"{where}: filters must be a positive integer. Received: filters={filters!r}"
            )
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = normalize_pair(kernel_size, "kernel_size", where)
        self.strides = normalize_pair(strides, "strides", where)
        self.dilation_rate = normalize_pair(dilation_rate, "dilation_rate", where)
        self.padding = normalize_padding(padding, where)
        self.depth_multiplier = _check_multiplier(depth_multiplier, where)
        act = activations.get(activation, where=where)
        if act in activations.ROW_ACTIVATIONS:
            raise ValueError(f"{where}: activation {act!r} is not supported on feature maps")
        self.activation = act
        self.use_bias = bool(use_bias)
        self.depthwise_initializer = depthwise_initializer
        self.pointwise_initializer = pointwise_initializer
        self.bias_initializer = bias_initializer
        self._pad = (0, 0, 0, 0)
        self._x_shape = None  # (N, C, H, W) of the last input
        self._saved_dw = None  # what the depthwise conv2d_forward saved
        self._t = None  # (N, C * M, OH, OW) depthwise output
        self._saved_pw = None  # what the pointwise conv2d_forward saved
        self._z = None  # (N, F, OH, OW) pre-activation when the activation needs it
        self._y = None  # (N, F, OH, OW) output

    def describe(self) -> str:
        """``SeparableConv2D(32, (3, 3))``."""
        return f"SeparableConv2D({self.filters}, {self.kernel_size})"

    def build_params(self, input_shape):
        c, h, w = check_image_shape(input_shape, self.describe())
        self._pad = resolve_padding(self.padding, (h, w), self.kernel_size, self.strides,
                                    self.dilation_rate)
        kh, kw = self.kernel_size
        m = self.depth_multiplier
        self.add_param("depthwise", (c * m, 1, kh, kw), self.depthwise_initializer,
                       fan_in=kh * kw, fan_out=kh * kw * m)
        self.add_param("pointwise", (self.filters, c * m, 1, 1), self.pointwise_initializer)
        if self.use_bias:
            self.add_param("b", (self.filters,), self.bias_initializer)

    def compute_output_shape(self, input_shape):
        c, h, w = check_image_shape(input_shape, self.describe())
        pad = resolve_padding(self.padding, (h, w), self.kernel_size, self.strides,
                              self.dilation_rate)
        oh, ow = window_output_hw(self.describe(), (h, w), self.kernel_size, self.strides, pad,
                                  self.dilation_rate)
        return (self.filters, oh, ow)

    def _forward(self, x, training):
        be = self.backend
        n, c = x.shape[:2]
        kh, kw = self.kernel_size
        cm = c * self.depth_multiplier
        f, oh, ow = self.output_shape
        p = n * oh * ow
        t, self._saved_dw = be.conv2d_forward(
            x, self.params["depthwise"], None, self.strides, self._pad, self.dilation_rate, c,
            cols=self.buffer("cols_dw", (c * kh * kw, p)), rows=self.buffer("rows_dw", (cm, p)),
            out=self.buffer("t", (n, cm, oh, ow)),
        )
        z, self._saved_pw = be.conv2d_forward(
            t, self.params["pointwise"], self.params.get("b"), (1, 1), (0, 0, 0, 0), (1, 1), 1,
            cols=self.buffer("cols_pw", (cm, p)), rows=self.buffer("rows_pw", (f, p)),
            out=self.buffer("z", (n, f, oh, ow)),
        )
        act = self.activation
        if act == "linear":
            y, self._z = z, None
        elif activations.uses_input(act):
            self._z = z
            y = be.activation_forward(act, z, out=self.buffer("y", z.shape))
        else:
            y, self._z = be.activation_forward(act, z, out=z), None
        self._x_shape = tuple(x.shape)
        self._t = t
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
        n, f, oh, ow = dz.shape
        c = self._x_shape[1]
        cm = c * self.depth_multiplier
        kh, kw = self.kernel_size
        p = n * oh * ow
        dt = be.conv2d_backward(
            dz, self.params["pointwise"], self._saved_pw, self._t.shape, (1, 1), (0, 0, 0, 0),
            (1, 1), 1, dW=self.grads["pointwise"], db=self.grads.get("b"),
            dx=self.buffer("dt", self._t.shape), need_dx=True,
            rows=self.buffer("rows_pw", (f, p)), dcols=self.buffer("dcols_pw", (cm, p)),
        )
        need_dx = self.need_input_grad
        return be.conv2d_backward(
            dt, self.params["depthwise"], self._saved_dw, self._x_shape, self.strides,
            self._pad, self.dilation_rate, c, dW=self.grads["depthwise"], db=None,
            dx=self.buffer("dx", self._x_shape) if need_dx else None, need_dx=need_dx,
            rows=self.buffer("rows_dw", (cm, p)),
            dcols=self.buffer("dcols_dw", (c * kh * kw, p)) if need_dx else None,
        )

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": padding_config(self.padding),
            "depth_multiplier": self.depth_multiplier,
            "dilation_rate": self.dilation_rate,
            "activation": self.activation,
            "use_bias": self.use_bias,
            "depthwise_initializer": _init_name(self.depthwise_initializer),
            "pointwise_initializer": _init_name(self.pointwise_initializer),
            "bias_initializer": _init_name(self.bias_initializer),
        }
