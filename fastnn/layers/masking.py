"""Masking of padded timesteps: the Masking layer and how a model passes masks along.

The protocol (a small subset of Keras's):

- a layer that *produces* a mask has ``compute_mask(x, mask) -> (N, T) bool array or
  None``, called right after its forward pass with that pass's input ``x`` and the mask
  it received (``Embedding(mask_zero=True)``, ``Masking``, and the sequence layers below);
- a layer that *consumes* a mask sets ``supports_masking = True`` and accepts
  ``forward(x, training, mask=...)`` (``SimpleRNN``, ``LSTM``, ``GRU``, ``Bidirectional``,
  ``TimeDistributed``);
- any other layer drops the mask: the layers after it get none.

:func:`forward_with_masks` runs a stack of layers this way; ``Sequential`` uses it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastnn.layers.base import Layer


def layer_forward(layer: Layer, x: Any, training: bool, mask: Any) -> tuple[Any, Any]:
    """Run one layer with the mask protocol; return (output, the mask for the next layer)."""
    if mask is not None and getattr(layer, "supports_masking", False):
        y = layer.forward(x, training=training, mask=mask)
    else:
        y = layer.forward(x, training=training)
    compute = getattr(layer, "compute_mask", None)
    out_mask = compute(x, mask) if compute is not None else None
    return y, out_mask


def forward_with_masks(layers: Iterable[Layer], x: Any, training: bool = False) -> Any:
    """Run ``layers`` in order on ``x``, passing masks from producers to consumers."""
    mask = None
    for layer in layers:
        x, mask = layer_forward(layer, x, training, mask)
    return x


class Masking(Layer):
    """Marks timesteps whose features all equal ``mask_value`` as padding (Keras's Masking).

    The output is the input with masked steps zeroed; :meth:`compute_mask` gives the
    ``(N, T)`` mask (True = keep) to the recurrent layers after it.

    Args:
        mask_value: the padding value.
        **kwargs: Layer arguments (name, backend, dtype, input_shape).

    Shapes: ``(N, T, D)`` -> ``(N, T, D)``.
    """

    supports_masking = True

    def __init__(self, mask_value: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mask_value = float(mask_value)
        self._keep = None  # (N, T, 1) 0/1 floats of the last forward

    def describe(self) -> str:
        """``Masking(0.0)``."""
        return f"Masking({self.mask_value})"

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {**super().get_config(), "mask_value": self.mask_value}

    def build_params(self, input_shape):
        if len(input_shape) < 2:
            raise ValueError(
                f"{self.describe()}: expected sequences (None, T, D), received sample shape "
                f"{input_shape}"
            )

    def forward(self, x: Any, training: bool = False, mask: Any = None) -> Any:
        """Zero the padded steps of ``x``; an incoming ``mask`` is combined with it."""
        self.check_input(x)
        xp = self.backend.xp
        keep = xp.any(x != self.mask_value, axis=-1)
        if mask is not None:
            keep &= self.backend.asarray(mask).astype(bool)
        self._keep = keep[..., None].astype(self.dtype)
        y = xp.multiply(x, self._keep, out=self.buffer("y", x.shape))
        self._out_shape_seen = tuple(y.shape)
        return y

    def _backward(self, dout):
        return self.backend.xp.multiply(dout, self._keep, out=self.buffer("dx", dout.shape))

    def compute_mask(self, x: Any, mask: Any = None) -> Any:
        """The (N, T) mask of the last forward pass: True where a step is kept."""
        return self._keep[..., 0] != 0
