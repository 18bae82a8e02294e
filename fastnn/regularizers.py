"""Weight penalties (Keras names): L1, L2 and L1L2, added to the loss and its gradient."""

from __future__ import annotations

from typing import Any


class Regularizer:
    """Base: ``penalty(w)`` is added to the loss, ``add_gradient(w, grad, scale)`` to dL/dw."""

    def penalty(self, w: Any) -> float:  # pragma: no cover
        """The penalty of weights ``w``."""
        raise NotImplementedError

    def add_gradient(self, w: Any, grad: Any, scale: float = 1.0) -> None:  # pragma: no cover
        """grad += scale * d penalty / dw, in place."""
        raise NotImplementedError

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class L1L2(Regularizer):
    """l1 * sum(|w|) + l2 * sum(w^2) (Keras: no factor 1/2 on the L2 term).

    The L1 subgradient at exactly 0 is taken as 0 (sign(0) = 0).
    """

    def __init__(self, l1: float = 0.0, l2: float = 0.0) -> None:
        for label, value in (("l1", l1), ("l2", l2)):
            if value < 0:
                raise ValueError(f"{type(self).__name__}: {label} must be >= 0. "
                                 f"Received: {label}={value}")
        self.l1 = float(l1)
        self.l2 = float(l2)

    def penalty(self, w: Any) -> float:
        """l1 * sum|w| + l2 * sum w^2."""
        total = 0.0
        if self.l1:
            total += self.l1 * float(abs(w).sum())
        if self.l2:
            total += self.l2 * float((w * w).sum())
        return total

    def add_gradient(self, w: Any, grad: Any, scale: float = 1.0) -> None:
        """grad += scale * (l1 * sign(w) + 2 * l2 * w)."""
        if self.l1:
            grad += (scale * self.l1) * (w > 0)
            grad -= (scale * self.l1) * (w < 0)
        if self.l2:
            grad += (2.0 * self.l2 * scale) * w

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {"l1": self.l1, "l2": self.l2}


class L1(L1L2):
    """l1 * sum(|w|)."""

    def __init__(self, l1: float = 0.01) -> None:
        super().__init__(l1=l1)

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {"l1": self.l1}


class L2(L1L2):
    """l2 * sum(w^2)."""

    def __init__(self, l2: float = 0.01) -> None:
        super().__init__(l2=l2)

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {"l2": self.l2}


_REGISTRY = {"l1": L1, "l2": L2, "l1_l2": L1L2, "l1l2": L1L2}


def get(identifier: str | Regularizer | None) -> Regularizer | None:
    """A regularizer from a Keras name ("l1", "l2", "l1_l2"), an instance, or None."""
    if identifier is None or isinstance(identifier, Regularizer):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _REGISTRY:
        return _REGISTRY[identifier.lower()]()
    if isinstance(identifier, str):
        raise ValueError(
            f"unknown regularizer {identifier!r}; valid names: {', '.join(sorted(_REGISTRY))}"
        )
    raise TypeError(
        f"regularizer must be a name or a Regularizer, received {type(identifier).__name__}"
    )
