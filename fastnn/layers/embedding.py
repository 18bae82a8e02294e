"""Embedding: integer ids to dense vectors, with a scatter-add backward."""

from __future__ import annotations

from typing import Any

from fastnn import initializers
from fastnn.layers.base import Layer, shape_str


class Embedding(Layer):
    """Row lookup ``y[..., :] = W[ids[...], :]`` (Keras's ``Embedding``).

    The input holds integer ids in ``[0, input_dim)``: an integer array, or a float array
    of integral values (what a model makes of its inputs; ids are exact in float32 below
    2**24). The backward pass scatter-adds the upstream rows into ``grads["W"]``, summing
    the rows of repeated ids; ids have no gradient, so ``backward`` returns None.

    Args:
        input_dim: vocabulary size ``V``.
        output_dim: embedding size ``D``.
        embeddings_initializer: initializer of ``W: (V, D)`` (default U(-0.05, 0.05), as
            Keras's ``uniform``).
        mask_zero: id 0 is padding: :meth:`compute_mask` returns ``ids != 0`` for the
            layers after it (then ``input_dim`` counts the padding id too).
        input_length: length of the sequences, to build before the first call.
        **kwargs: Layer arguments (name, backend, dtype, input_shape, trainable).

    Shapes: ``ids: (N, ...)`` -> ``(N, ..., D)``.
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        embeddings_initializer: Any = "random_uniform",
        mask_zero: bool = False,
        input_length: int | None = None,
        **kwargs: Any,
    ) -> None:
        for what, value in (("input_dim", input_dim), ("output_dim", output_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(
                    f"Embedding: {what} must be a positive integer. Received: {what}={value!r}"
                )
        if input_length is not None and "input_shape" not in kwargs:
            kwargs["input_shape"] = (int(input_length),)
        super().__init__(**kwargs)
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.embeddings_initializer = embeddings_initializer
        self.mask_zero = bool(mask_zero)
        self._ids = None  # (M,) flattened integer ids of the last forward
        self._mask = None  # ids != 0 of the last forward (mask_zero only)

    def describe(self) -> str:
        """``Embedding(1000, 64)``."""
        return f"Embedding({self.input_dim}, {self.output_dim})"

    def get_config(self) -> dict:
        """Constructor arguments."""
        init = self.embeddings_initializer
        if isinstance(init, initializers.Initializer):
            init = {"class": type(init).__name__, **init.get_config()}
        return {
            **super().get_config(),
            "input_dim": self.input_dim,
            "output_dim": self.output_dim,
            "embeddings_initializer": init,
            "mask_zero": self.mask_zero,
        }

    def build_params(self, input_shape):
        self.add_param("W", (self.input_dim, self.output_dim), self.embeddings_initializer)

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.output_dim)

    # -- validation: integer ids instead of float features -------------------------------
    def check_input(self, x: Any) -> None:
        """Accept integer ids (int arrays, or floats holding integers) in [0, input_dim)."""
        where = f"{self.describe()}.forward"
        be = self.backend
        if not be.is_array(x):
            raise TypeError(
                f"{where}: expected a {be.xp.__name__}.ndarray of integer ids on backend "
                f"'{be.name}', received {type(x).__module__}.{type(x).__name__}"
            )
        if x.dtype.kind not in "iuf":
            raise TypeError(
                f"{where}: expected integer ids (an int array, or floats holding integers), "
                f"received dtype {x.dtype.name} with shape {tuple(x.shape)}"
            )
        if x.ndim < 1 or x.shape[0] == 0:
            raise ValueError(f"{where}: expected a non-empty batch, received shape {x.shape}")
        if x.size:
            xp = be.xp
            lo, hi = float(x.min()), float(x.max())
            if lo < 0 or hi >= self.input_dim:
                bad = lo if lo < 0 else hi
                raise ValueError(
                    f"{where}: ids must lie in [0, {self.input_dim}) (input_dim), received "
                    f"id {bad:g} in input of shape {tuple(x.shape)}"
                )
            if x.dtype.kind == "f" and bool(xp.any(x != xp.floor(x))):
                raise ValueError(
                    f"{where}: float ids must hold whole numbers, received a fractional value "
                    f"in input of shape {tuple(x.shape)}"
                )
        shape = tuple(int(d) for d in x.shape[1:])
        if not self.built:
            declared = self._declared_input_shape
            if declared is not None and shape != declared:
                raise ValueError(
                    f"{where}: expected input of shape {shape_str((None, *declared))}, "
                    f"received shape {tuple(x.shape)}"
                )
            self.build(shape)
            return
        if len(shape) != len(self.input_shape):
            raise ValueError(
                f"{where}: expected input of shape {shape_str((None, *self.input_shape))}, "
                f"received shape {tuple(x.shape)}"
            )

    # -- forward / backward ------------------------------------------------------------
    def _forward(self, x, training):
        xp = self.backend.xp
        ids = xp.ascontiguousarray(x.reshape(-1)).astype(xp.intp, copy=False)
        self._ids = ids
        out = self.buffer("y", (ids.shape[0], self.output_dim))
        xp.take(self.params["W"], ids, axis=0, out=out)
        self._mask = (x != 0) if self.mask_zero else None
        return out.reshape(*x.shape, self.output_dim)

    def _backward(self, dout):
        d2 = self.backend.xp.ascontiguousarray(dout.reshape(-1, self.output_dim))
        self.backend.embedding_backward(self._ids, d2, self.grads["W"])
        return None

    def compute_mask(self, x: Any, mask: Any = None) -> Any:
        """``x != 0`` with ``mask_zero`` (False marks padding), else None."""
        if not self.mask_zero:
            return None
        return x != 0
