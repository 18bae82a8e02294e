"""RMSprop, plain, centered and with momentum."""

from __future__ import annotations

from typing import Any

from fastnn.optimizers.base import Optimizer, check_fraction, check_nonnegative


class RMSprop(Optimizer):
    """RMSprop (Tieleman & Hinton, 2012) with the ``torch.optim.RMSprop`` update rule.

    g = grad + weight_decay * p; sq = rho sq + (1 - rho) g^2; with ``centered``,
    ga = rho ga + (1 - rho) g and avg = sqrt(sq - ga^2) + eps (Graves, 2013), else
    avg = sqrt(sq) + eps; with momentum, buf = momentum buf + g / avg and p -= lr buf,
    else p -= lr g / avg. ``eps`` is added outside the square root (PyTorch's convention;
    Keras computes g / sqrt(sq + eps)). Keras's ``rho`` is torch's ``alpha``.

    Defaults are Keras's: ``learning_rate=0.001`` (torch: 0.01), ``rho=0.9``
    (torch ``alpha=0.99``), ``epsilon=1e-7`` (torch: 1e-8), ``momentum=0``,
    ``centered=False``.

    Args:
        learning_rate: step size or schedule (default 0.001).
        rho: decay of the running averages (default 0.9).
        momentum: momentum factor (default 0).
        epsilon: stability term (default 1e-7).
        centered: normalise by the estimated variance instead of the second moment.
        weight_decay: L2 penalty added to the gradient (default 0).
        backend: backend of the parameters.
        **kwargs: ``clipnorm``, ``clipvalue``, ``global_clipnorm`` (see :class:`Optimizer`).
    """

    ops = ("rmsprop_update",)

    def __init__(
        self,
        learning_rate: Any = 0.001,
        rho: float = 0.9,
        momentum: float = 0.0,
        epsilon: float = 1e-7,
        centered: bool = False,
        weight_decay: float = 0.0,
        backend: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate, weight_decay, backend, **kwargs)
        name = type(self).__name__
        self.rho = check_fraction(name, "rho", rho, closed_top=True)
        self.momentum = check_nonnegative(name, "momentum", momentum)
        self.epsilon = check_nonnegative(name, "epsilon", epsilon)
        self.centered = bool(centered)

    def get_config(self) -> dict:
        """Hyper-parameters."""
        return {
            **super().get_config(),
            "rho": self.rho,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "centered": self.centered,
        }

    def create_slots(self, param):
        """Running mean of g^2 (and of g when centered; the momentum buffer if any)."""
        slots = {"square_avg": self.zeros_like(param)}
        if self.centered:
            slots["grad_avg"] = self.zeros_like(param)
        if self.momentum:
            slots["momentum"] = self.zeros_like(param)
        return slots

    def update_one(self, param, grad, slots, lr, tmp):
        """One RMSprop step on ``param``."""
        tmp2 = self.scratch(param, 1) if tmp is not None and self.weight_decay else None
        self.backend.rmsprop_update(
            param,
            grad,
            slots["square_avg"],
            grad_avg=slots.get("grad_avg"),
            buf=slots.get("momentum"),
            tmp=tmp,
            tmp2=tmp2,
            lr=lr,
            rho=self.rho,
            eps=self.epsilon,
            weight_decay=self.weight_decay,
            momentum=self.momentum,
            centered=self.centered,
        )
