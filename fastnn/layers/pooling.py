"""Pooling layers on NCHW input: max, average, and their global versions."""

from __future__ import annotations

from typing import Any

import numpy as np

from fastnn.layers.base import Layer
from fastnn.layers.conv import (
    Pair,
    Quad,
    check_image_shape,
    normalize_padding,
    normalize_pair,
    padding_config,
    resolve_padding,
    window_output_hw,
)


class _Pooling2D(Layer):
    """Shared geometry of the windowed pooling layers."""

    def __init__(
        self,
        pool_size: int | Pair = 2,
        strides: int | Pair | None = None,
        padding: Any = "valid",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        where = type(self).__name__
        self.pool_size = normalize_pair(pool_size, "pool_size", where)
        self.strides = self.pool_size if strides is None else normalize_pair(
            strides, "strides", where
        )
        self.padding = normalize_padding(padding, where)
        if not isinstance(self.padding, str):
            pt, pb, pl, pr = self.padding
            kh, kw = self.pool_size
            if max(pt, pb) > kh // 2 or max(pl, pr) > kw // 2:
                raise ValueError(
                    f"{where}: explicit padding must be at most half the pool size "
                    f"{self.pool_size}. Received: padding={padding!r}"
                )
        self._pad: Quad = (0, 0, 0, 0)
        self._x_shape: tuple[int, ...] | None = None  # (N, C, H, W) of the last input

    def describe(self) -> str:
        """``MaxPooling2D((2, 2))``."""
        return f"{type(self).__name__}({self.pool_size})"

    def build_params(self, input_shape):
        c, h, w = check_image_shape(input_shape, self.describe())
        self._pad = resolve_padding(self.padding, (h, w), self.pool_size, self.strides, (1, 1))

    def compute_output_shape(self, input_shape):
        c, h, w = check_image_shape(input_shape, self.describe())
        pad = resolve_padding(self.padding, (h, w), self.pool_size, self.strides, (1, 1))
        oh, ow = window_output_hw(self.describe(), (h, w), self.pool_size, self.strides, pad,
                                  (1, 1))
        return (c, oh, ow)

    def _out_shape(self, n: int) -> tuple[int, int, int, int]:
        return (n, *self.output_shape)

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {
            **super().get_config(),
            "pool_size": self.pool_size,
            "strides": self.strides,
            "padding": padding_config(self.padding),
        }


class MaxPooling2D(_Pooling2D):
    """Maximum over each ``pool_size`` window (Keras ``MaxPooling2D``, NCHW).

    Backward routes each window's gradient to the position of its maximum. Ties: the FIRST
    maximum in row-major window order receives the whole gradient (PyTorch's CPU rule); a
    NaN counts as the maximum. Overlapping windows (stride < pool size) add up.

    Args:
        pool_size: window ``ph`` or ``(ph, pw)``.
        strides: step between windows (default: ``pool_size``).
        padding: ``"valid"``, ``"same"`` (Keras: output ``ceil(size / stride)``) or explicit
            padding (int or tuple, at most half the window), never selected as a maximum.
        **kwargs: Layer arguments (name, backend, dtype, input_shape).
    """

    def __init__(
        self,
        pool_size: int | Pair = 2,
        strides: int | Pair | None = None,
        padding: Any = "valid",
        **kwargs: Any,
    ) -> None:
        super().__init__(pool_size, strides, padding, **kwargs)
        self._argmax = None  # (N, C, OH, OW) int32 window offset of each maximum

    def _forward(self, x, training):
        shape = self._out_shape(x.shape[0])
        y, self._argmax = self.backend.maxpool2d(
            x, self.pool_size, self.strides, self._pad, out=self.buffer("y", shape),
            argmax=self.buffer("argmax", shape, dtype=np.int32),
        )
        self._x_shape = tuple(x.shape)
        return y

    def _backward(self, dout):
        if not self.need_input_grad:
            return None
        return self.backend.maxpool2d_backward(
            dout, self._argmax, self._x_shape, self.pool_size, self.strides, self._pad,
            out=self.buffer("dx", self._x_shape),
        )


class AveragePooling2D(_Pooling2D):
    """Mean over each ``pool_size`` window (Keras ``AveragePooling2D``, NCHW).

    Padded positions are excluded from the mean (Keras ``"same"`` semantics, PyTorch's
    ``count_include_pad=False``).

    Args:
        pool_size: window ``ph`` or ``(ph, pw)``.
        strides: step between windows (default: ``pool_size``).
        padding: ``"valid"``, ``"same"`` or explicit padding (int or tuple).
        **kwargs: Layer arguments (name, backend, dtype, input_shape).
    """

    def _forward(self, x, training):
        shape = self._out_shape(x.shape[0])
        self._x_shape = tuple(x.shape)
        return self.backend.avgpool2d(x, self.pool_size, self.strides, self._pad,
                                      out=self.buffer("y", shape))

    def _backward(self, dout):
        if not self.need_input_grad:
            return None
        return self.backend.avgpool2d_backward(
            dout, self._x_shape, self.pool_size, self.strides, self._pad,
            out=self.buffer("dx", self._x_shape),
        )


class _GlobalPooling2D(Layer):
    """Shared shape logic of the global pooling layers."""

    def __init__(self, keepdims: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.keepdims = bool(keepdims)
        self._x_shape: tuple[int, ...] | None = None  # (N, C, H, W) of the last input

    def describe(self) -> str:
        """``GlobalAveragePooling2D()``."""
        return f"{type(self).__name__}()"

    def compute_output_shape(self, input_shape):
        c, _, _ = check_image_shape(input_shape, self.describe())
        return (c, 1, 1) if self.keepdims else (c,)

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {**super().get_config(), "keepdims": self.keepdims}


class GlobalAveragePooling2D(_GlobalPooling2D):
    """Mean over H and W: (N, C, H, W) -> (N, C), or (N, C, 1, 1) with ``keepdims``.

    Args:
        keepdims: keep the spatial axes as size 1.
        **kwargs: Layer arguments (name, backend, dtype, input_shape).
    """

    def _forward(self, x, training):
        xp = self.backend.xp
        n, c = x.shape[:2]
        y = self.buffer("y", (n, c))
        xp.mean(x.reshape(n, c, -1), axis=2, out=y)
        self._x_shape = tuple(x.shape)
        return y.reshape(n, c, 1, 1) if self.keepdims else y

    def _backward(self, dout):
        if not self.need_input_grad:
            return None
        n, c, h, w = self._x_shape
        dx = self.buffer("dx", self._x_shape)
        dx[...] = dout.reshape(n, c, 1, 1)
        dx *= 1.0 / (h * w)
        return dx


class GlobalMaxPooling2D(_GlobalPooling2D):
    """Maximum over H and W: (N, C, H, W) -> (N, C), or (N, C, 1, 1) with ``keepdims``.

    Backward routes each channel's gradient to its maximum; ties go to the first maximum in
    row-major (H, W) order, and a NaN counts as the maximum.

    Args:
        keepdims: keep the spatial axes as size 1.
        **kwargs: Layer arguments (name, backend, dtype, input_shape).
    """

    def __init__(self, keepdims: bool = False, **kwargs: Any) -> None:
        super().__init__(keepdims, **kwargs)
        self._argmax = None  # (N * C,) flat spatial index of each maximum

    def _forward(self, x, training):
        xp = self.backend.xp
        n, c = x.shape[:2]
        flat = x.reshape(n * c, -1)
        self._argmax = xp.argmax(flat, axis=1)
        y = self.buffer("y", (n, c))
        y.reshape(-1)[...] = flat[xp.arange(n * c), self._argmax]
        self._x_shape = tuple(x.shape)
        return y.reshape(n, c, 1, 1) if self.keepdims else y

    def _backward(self, dout):
        if not self.need_input_grad:
            return None
        xp = self.backend.xp
        n, c, h, w = self._x_shape
        dx = self.buffer("dx", self._x_shape)
        dx[...] = 0
        dx.reshape(n * c, h * w)[xp.arange(n * c), self._argmax] = dout.reshape(-1)
        return dx
