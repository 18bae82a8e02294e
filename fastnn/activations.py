"""Activation names: Keras strings resolved to the elementwise kernels or softmax."""

from __future__ import annotations

from fastnn.kernels.reference.activations import ACTIVATIONS

# Activations that act on a whole row rather than elementwise.
ROW_ACTIVATIONS = ("softmax", "log_softmax")
_ALIASES = {"none": "linear", "identity": "linear"}


def names() -> list[str]:
    """Every activation name accepted by ``activation=`` and ``Activation(...)``."""
    return sorted([*ACTIVATIONS, *ROW_ACTIVATIONS])


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
