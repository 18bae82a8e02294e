"""ZeroPadding2D: zeros around the height and width of NCHW images."""

from __future__ import annotations

from typing import Any

from fastnn.layers.base import Layer
from fastnn.layers.conv import check_image_shape, normalize_padding


class ZeroPadding2D(Layer):
    """Adds rows and columns of zeros around each image (Keras ``ZeroPadding2D``, NCHW).

    Args:
        padding: an int (all sides), ``(ph, pw)`` (symmetric per axis) or
            ``((top, bottom), (left, right))``.
        **kwargs: Layer arguments (name, backend, dtype, input_shape).

    Shapes:
        input ``(N, C, H, W)``; output ``(N, C, H + top + bottom, W + left + right)``.
    """

    def __init__(self, padding: Any = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        spec = normalize_padding(padding, "ZeroPadding2D") if not isinstance(padding, str) else None
        if spec is None:
            raise ValueError(
                "ZeroPadding2D: padding must be an int or a tuple of sizes. "
                f"Received: padding={padding!r}"
            )
        self.padding = spec
        self._x_shape: tuple[int, ...] | None = None  # (N, C, H, W) of the last input

    def describe(self) -> str:
        """``ZeroPadding2D(((1, 1), (1, 1)))``."""
        pt, pb, pl, pr = self.padding
        return f"ZeroPadding2D((({pt}, {pb}), ({pl}, {pr})))"

    def compute_output_shape(self, input_shape):
        c, h, w = check_image_shape(input_shape, self.describe())
        pt, pb, pl, pr = self.padding
        return (c, h + pt + pb, w + pl + pr)

    def _forward(self, x, training):
        n = x.shape[0]
        _, h, w = self.input_shape
        pt, _, pl, _ = self.padding
        y = self.buffer("y", (n, *self.output_shape))
        y[...] = 0
        y[:, :, pt : pt + h, pl : pl + w] = x
        self._x_shape = tuple(x.shape)
        return y

    def _backward(self, dout):
        if not self.need_input_grad:
            return None
        _, h, w = self.input_shape
        pt, _, pl, _ = self.padding
        dx = self.buffer("dx", self._x_shape)
        dx[...] = dout[:, :, pt : pt + h, pl : pl + w]
        return dx

    def get_config(self) -> dict:
        """Constructor arguments."""
        pt, pb, pl, pr = self.padding
        return {**super().get_config(), "padding": ((pt, pb), (pl, pr))}
