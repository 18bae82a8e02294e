"""Conv2D on NCHW input (im2col + GEMM reference, Numba and CUDA kernels), and the helpers
that every windowed layer (convolutions, pooling, padding) shares to read its geometry."""

from __future__ import annotations

from typing import Any

from fastnn import activations
from fastnn.kernels.reference.conv import conv_output_hw
from fastnn.layers.base import Layer

Pair = tuple[int, int]
Quad = tuple[int, int, int, int]

#: Padding names accepted by ``padding=`` (besides integers and tuples).
PADDING_MODES = ("valid", "same")


# -- argument normalisation ---------------------------------------------------------------
def normalize_pair(value: Any, name: str, where: str, minimum: int = 1) -> Pair:
    """``value`` (an int or a pair of ints, each >= ``minimum``) as a pair ``(h, w)``.

    Raises:
        ValueError: anything else; the message names ``where`` and the argument.
    """
    items = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
    try:
        pair = tuple(items)
    except TypeError:
        pair = ()
    ok = len(pair) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in pair
    )
    if not ok:
        raise ValueError(
            f"{where}: {name} must be an integer >= {minimum} or a pair of them. "
            f"Received: {name}={value!r}"
        )
    return (int(pair[0]), int(pair[1]))


def normalize_padding(padding: Any, where: str) -> str | Quad:
    """``"valid"``, ``"same"``, or explicit zero padding as ``(top, bottom, left, right)``.

    Accepts an int (all sides), a pair ``(h, w)`` (symmetric per axis) or
    ``((top, bottom), (left, right))``.

    Raises:
        ValueError: an unknown name or negative / malformed sizes.
    """
    if isinstance(padding, str):
        key = padding.strip().lower()
        if key in PADDING_MODES:
            return key
        raise ValueError(
            f"{where}: padding must be 'valid', 'same', an int or a tuple. "
            f"Received: padding={padding!r}"
        )

    def is_size(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    if is_size(padding):
        return (padding, padding, padding, padding)
    if isinstance(padding, (tuple, list)) and len(padding) == 2:
        if all(is_size(v) for v in padding):
            ph, pw = padding
            return (ph, ph, pw, pw)
        if all(isinstance(v, (tuple, list)) and len(v) == 2 for v in padding):
            flat = (*padding[0], *padding[1])
            if all(is_size(v) for v in flat):
                return tuple(int(v) for v in flat)  # type: ignore[return-value]
    raise ValueError(
        f"{where}: padding must be 'valid', 'same', an int >= 0, a pair (h, w) or "
        f"((top, bottom), (left, right)). Received: padding={padding!r}"
    )


def padding_config(padding: str | Quad) -> Any:
    """A normalised padding spec as ``get_config`` stores it (accepted by the constructors)."""
    if isinstance(padding, str):
        return padding
    top, bottom, left, right = padding
    return ((top, bottom), (left, right))


def resolve_padding(
    padding: str | Quad, hw: Pair, kernel_size: Pair, stride: Pair, dilation: Pair
) -> Quad:
    """Explicit ``(top, bottom, left, right)`` for a normalised padding spec.

    ``"same"`` follows Keras/TensorFlow: the output has ``ceil(size / stride)`` positions and
    the odd pixel of an uneven total padding goes to the bottom / right.
    """
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        pads = []
        for size, k, s, d in zip(hw, kernel_size, stride, dilation, strict=True):
            out = -(-size // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            pads += [total // 2, total - total // 2]
        return tuple(pads)  # type: ignore[return-value]
    return tuple(padding)  # type: ignore[return-value]


def check_image_shape(input_shape: tuple[int, ...], where: str) -> tuple[int, int, int]:
    """``(C, H, W)`` from a sample shape, or a ValueError saying NCHW input is expected."""
    if len(input_shape) != 3:
        raise ValueError(
            f"{where}: expected NCHW input, i.e. samples of shape (channels, height, width); "
            f"received sample shape {tuple(input_shape)}"
        )
    c, h, w = input_shape
    return int(c), int(h), int(w)


def window_output_hw(
    where: str, hw: Pair, kernel_size: Pair, stride: Pair, padding: Quad, dilation: Pair
) -> Pair:
    """(OH, OW) of a window layer, or a ValueError when the window does not fit."""
    oh, ow = conv_output_hw(hw, kernel_size, stride, padding, dilation)
    if oh < 1 or ow < 1:
        span = tuple(d * (k - 1) + 1 for k, d in zip(kernel_size, dilation, strict=True))
        raise ValueError(
            f"{where}: the window (span {span} with dilation) does not fit input of size "
            f"{tuple(hw)} with padding {tuple(padding)}; use padding='same' or a larger input"
        )
    return oh, ow


def _init_name(init: Any) -> Any:
    from fastnn.initializers import Initializer

    return type(init).__name__ if isinstance(init, Initializer) else init


# -- convolution layers ---------------------------------------------------------------------
class _ConvBase(Layer):
    """Shared forward/backward of the convolutions that run through ``conv2d_forward``:
    parameters ``W`` (F, C // groups, kh, kw) and ``b`` (F,), an optional fused activation."""

    def __init__(
        self,
        kernel_size: int | Pair,
        strides: int | Pair,
        padding: Any,
        dilation_rate: int | Pair,
        activation: str | None,
        use_bias: bool,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        where = self.describe_class()
        self.kernel_size = normalize_pair(kernel_size, "kernel_size", where)
        self.strides = normalize_pair(strides, "strides", where)
        self.dilation_rate = normalize_pair(dilation_rate, "dilation_rate", where)
        self.padding = normalize_padding(padding, where)
        act = activations.get(activation, where=where)
        if act in activations.ROW_ACTIVATIONS:
            raise ValueError(
                f"{where}: activation {act!r} acts on whole rows and is not supported on "
                "feature maps; add an Activation layer after a Flatten instead"
            )
        self.activation = act
        self.use_bias = bool(use_bias)
        self.groups = 1
        self._pad: Quad = (0, 0, 0, 0)  # resolved at build
        self._cols = None  # what conv2d_forward saved for the backward (columns or input)
        self._x_shape: tuple[int, ...] | None = None  # (N, C, H, W) of the last input
        self._z = None  # (N, F, OH, OW) pre-activation, kept when the activation needs it
        self._y = None  # (N, F, OH, OW) output

    def describe_class(self) -> str:
        """Name used in errors raised while the constructor runs."""
        return type(self).__name__

    def _weight_shape(self, channels: int) -> tuple[int, int, int, int]:  # pragma: no cover
        raise NotImplementedError

    def _out_channels(self, channels: int) -> int:  # pragma: no cover
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        where = self.describe()
        c, h, w = check_image_shape(input_shape, where)
        pad = resolve_padding(self.padding, (h, w), self.kernel_size, self.strides,
                              self.dilation_rate)
        oh, ow = window_output_hw(where, (h, w), self.kernel_size, self.strides, pad,
                                  self.dilation_rate)
        return (self._out_channels(c), oh, ow)

    def _resolve_geometry(self, input_shape) -> None:
        c, h, w = check_image_shape(input_shape, self.describe())
        self._pad = resolve_padding(self.padding, (h, w), self.kernel_size, self.strides,
                                    self.dilation_rate)
        self.compute_output_shape(input_shape)  # raises when the window does not fit

    def _forward(self, x, training):
        be = self.backend
        n = x.shape[0]
        f, cg, kh, kw = self.params["W"].shape
        out_c, oh, ow = self.output_shape
        p = n * oh * ow
        z, cols = be.conv2d_forward(
            x, self.params["W"], self.params.get("b"), self.strides, self._pad,
            self.dilation_rate, self.groups,
            cols=self.buffer("cols", (x.shape[1] * kh * kw, p)),
            rows=self.buffer("rows", (f, p)),
            out=self.buffer("z", (n, out_c, oh, ow)),
        )
        act = self.activation
        if act == "linear":
            y, self._z = z, None
        elif activations.uses_input(act):
            self._z = z
            y = be.activation_forward(act, z, out=self.buffer("y", z.shape))
        else:
            y, self._z = be.activation_forward(act, z, out=z), None
        self._cols = cols
        self._x_shape = tuple(x.shape)
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
        kh, kw = self.kernel_size
        p = n * oh * ow
        need_dx = self.need_input_grad
        return be.conv2d_backward(
            dz, self.params["W"], self._cols, self._x_shape, self.strides, self._pad,
            self.dilation_rate, self.groups,
            dW=self.grads["W"], db=self.grads.get("b"),
            dx=self.buffer("dx", self._x_shape) if need_dx else None,
            need_dx=need_dx,
            rows=self.buffer("rows", (f, p)),
            dcols=self.buffer("dcols", (self._x_shape[1] * kh * kw, p)) if need_dx else None,
        )


class Conv2D(_ConvBase):
    """2-D convolution over NCHW images: y = activation(conv(x, W) + b).

    ``W`` has PyTorch's layout ``(filters, channels // groups, kh, kw)`` and ``b`` shape
    ``(filters,)``; like every deep-learning "convolution" it is a cross-correlation (the
    kernel is not flipped), so it equals ``torch.nn.functional.conv2d``. It runs as im2col +
    one GEMM (:mod:`fastnn.kernels.reference.conv`), with Numba and CUDA kernels for the
    unfold, fold and layout passes.

    Args:
        filters: output channels F.
        kernel_size: ``kh`` (square) or ``(kh, kw)``.
        strides: step between windows, int or pair.
        padding: ``"valid"`` (none), ``"same"`` (output ``ceil(size / stride)``, Keras
            rules), an int, ``(ph, pw)`` or ``((top, bottom), (left, right))`` zeros.
        dilation_rate: spacing between kernel taps, int or pair.
        activation: elementwise activation name (None means linear).
        use_bias: whether to add ``b``.
        kernel_initializer: initializer of ``W`` (fans from ``(F, C // groups, kh, kw)``).
        bias_initializer: initializer of ``b``.
        groups: split channels into independent groups (C and F divisible by it).
        **kwargs: Layer arguments (name, backend, dtype, input_shape, trainable).

    Shapes:
        input ``(N, C, H, W)``; output ``(N, filters, OH, OW)`` with
        ``OH = (H + top + bottom - dh * (kh - 1) - 1) // sh + 1``.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int | Pair,
        strides: int | Pair = 1,
        padding: Any = "valid",
        dilation_rate: int | Pair = 1,
        activation: str | None = None,
        use_bias: bool = True,
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        groups: int = 1,
        **kwargs: Any,
    ) -> None:
        if isinstance(filters, bool) or not isinstance(filters, int) or filters <= 0:
            raise ValueError(
                f"Conv2D: filters must be a positive integer. Received: filters={filters!r}"
            )
        if isinstance(groups, bool) or not isinstance(groups, int) or groups <= 0:
            raise ValueError(f"Conv2D: groups must be a positive integer. Received: "
                             f"groups={groups!r}")
        if filters % groups:
            raise ValueError(
                f"Conv2D: filters must be divisible by groups. Received: filters={filters}, "
                f"groups={groups}"
            )
        self.filters = filters
        super().__init__(kernel_size, strides, padding, dilation_rate, activation, use_bias,
                         **kwargs)
        self.groups = groups
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer

    def describe(self) -> str:
        """``Conv2D(32, (3, 3))``."""
        return f"Conv2D({self.filters}, {self.kernel_size})"

    def _out_channels(self, channels: int) -> int:
        return self.filters

    def build_params(self, input_shape):
        c, _, _ = check_image_shape(input_shape, self.describe())
        if c % self.groups:
            raise ValueError(
                f"{self.describe()}: input channels must be divisible by groups={self.groups}; "
                f"received sample shape {tuple(input_shape)}"
            )
        self._resolve_geometry(input_shape)
        kh, kw = self.kernel_size
        self.add_param("W", (self.filters, c // self.groups, kh, kw), self.kernel_initializer)
        if self.use_bias:
            self.add_param("b", (self.filters,), self.bias_initializer)

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": padding_config(self.padding),
            "dilation_rate": self.dilation_rate,
            "activation": self.activation,
            "use_bias": self.use_bias,
            "kernel_initializer": _init_name(self.kernel_initializer),
            "bias_initializer": _init_name(self.bias_initializer),
            "groups": self.groups,
        }
