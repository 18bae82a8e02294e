"""PReLU: a leaky ReLU whose negative slope is a learned parameter."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastnn.layers.base import Layer, shape_str


class PReLU(Layer):
    """y = x if x > 0 else alpha * x, with ``alpha`` learned (He et al. 2015), Keras-style.

    ``alpha`` has the shape of one sample, except along ``shared_axes`` where it has size 1
    and is shared (e.g. ``shared_axes=[2, 3]`` for one slope per channel of NCHW images).

    Args:
        alpha_initializer: initializer of ``alpha`` (Keras's default ``"zeros"``: the layer
            starts as a ReLU).
        shared_axes: axes (1-based, the batch axis being 0) along which ``alpha`` is shared.
        **kwargs: Layer arguments (name, backend, dtype, input_shape, trainable).

    Shapes:
        x: (N, *S); params ``alpha``: S with shared axes set to 1; y: like x.
    """

    def __init__(
        self,
        alpha_initializer: Any = "zeros",
        shared_axes: int | Sequence[int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.alpha_initializer = alpha_initializer
        if shared_axes is None:
            axes: tuple[int, ...] = ()
        elif isinstance(shared_axes, int):
            axes = (shared_axes,)
        else:
            axes = tuple(int(a) for a in shared_axes)
        self.shared_axes = axes
        self._x = None  # (N, *S) input, set by forward
        self._sum_axes: tuple[int, ...] = ()  # axes of dy * min(x, 0) summed into dalpha

    def describe(self) -> str:
        """``PReLU(shared_axes=(2, 3))``."""
        return f"PReLU(shared_axes={self.shared_axes})"

    def get_config(self) -> dict:
        """Constructor arguments."""
        init = self.alpha_initializer
        return {
            **super().get_config(),
            "alpha_initializer": init if isinstance(init, str) else type(init).__name__,
            "shared_axes": list(self.shared_axes),
        }

    def build_params(self, input_shape):
        ndim = len(input_shape)
        for axis in self.shared_axes:
            if not 1 <= axis <= ndim:
                raise ValueError(
                    f"{self.describe()}: shared_axes must lie in [1, {ndim}] for inputs of shape "
                    f"{shape_str((None, *input_shape))}. Received: shared_axes={self.shared_axes}"
                )
        shape = tuple(1 if i + 1 in self.shared_axes else d for i, d in enumerate(input_shape))
        self.add_param("alpha", shape, self.alpha_initializer)
        self._sum_axes = (0, *sorted(self.shared_axes))

    def _forward(self, x, training):
        xp = self.backend.xp
        alpha = self.params["alpha"]
        y = self.buffer("y", x.shape)
        xp.minimum(x, 0, out=y)
        y *= alpha
        y += xp.maximum(x, 0)
        self._x = x
        return y

    def _backward(self, dout):
        xp = self.backend.xp
        x = self._x
        neg = xp.minimum(x, 0)
        neg *= dout
        self.grads["alpha"][...] = neg.sum(axis=self._sum_axes, keepdims=True)[0]
        dx = self.buffer("dx", dout.shape)
        dx[...] = xp.where(x > 0, dout, dout * self.params["alpha"])
        return dx
