"""Activation names: Keras strings resolved to the elementwise kernels or softmax.

Conventions where Keras versions differ:

- ``leaky_relu``: the string uses ``keras.activations.leaky_relu``'s slope 0.2; the
  :class:`~fastnn.layers.LeakyReLU` layer defaults to 0.3 like Keras's layer.
- ``hard_sigmoid``: Keras 3's ``relu6(x + 3) / 6`` (slope 1/6), not Keras 2's ``0.2 x + 0.5``.
- ``gelu``: the exact erf form (Keras's default ``approximate=False``); ``gelu_tanh``
  (alias ``gelu_approximate``) is the tanh approximation.
- ``swish`` is ``silu`` and ``hard_swish`` is ``hard_silu``, as in Keras 3.
"""

from __future__ import annotations

from fastnn.kernels.reference.activations import ACTIVATIONS

# Activations that act on a whole row rather than elementwise.
ROW_ACTIVATIONS = ("softmax", "log_softmax")
#: Other accepted spellings (Keras's aliases among them) -> canonical name.
_ALIASES = {
    "none": "linear",
    "identity": "linear",
    "swish": "silu",
    "hard_swish": "hard_silu",
    "gelu_approximate": "gelu_tanh",
    "leakyrelu": "leaky_relu",
    "logsoftmax": "log_softmax",
    "hardsigmoid": "hard_sigmoid",
}


def names() -> list[str]:
    """Every canonical activation name accepted by ``activation=`` and ``Activation(...)``."""
    return sorted([*ACTIVATIONS, *ROW_ACTIVATIONS])


def aliases() -> dict[str, str]:
    """Accepted alternative spellings, mapped to their canonical names."""
    return dict(_ALIASES)


def get(identifier: str | None, where: str = "activation") -> str:
    """The canonical activation name for ``identifier`` (None means ``"linear"``).

    Raises:
        ValueError: unknown name; the message lists the valid names.
        TypeError: not a string or None.
    """
    if identifier is None:
        return "linear"
    if not isinstance(identifier, str):
        raise TypeError(
            f"{where}: activation must be a name such as 'relu', received "
            f"{type(identifier).__name__}"
        )
    key = identifier.strip().lower()
    key = _ALIASES.get(key, key)
    if key in ACTIVATIONS or key in ROW_ACTIVATIONS:
        return key
    raise ValueError(
        f"{where}: unknown activation {identifier!r}; valid names: {', '.join(names())}"
    )


def uses_input(name: str) -> bool:
    """Whether the backward pass of ``name`` needs the pre-activation input."""
    if name in ROW_ACTIVATIONS:
        return False
    return ACTIVATIONS[name].uses_input
