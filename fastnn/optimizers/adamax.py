"""Adamax: Adam with the infinity norm."""

from __future__ import annotations

from typing import Any

from fastnn.optimizers.base import Optimizer, check_fraction, check_nonnegative


class Adamax(Optimizer):
    """Adamax (Kingma & Ba, 2015, section 7.1) with the ``torch.optim.Adamax`` update rule.

    g = grad + weight_decay * p; m = b1 m + (1 - b1) g; u = max(b2 u, |g| + eps);
    p -= lr / (1 - b1^t) * m / u. ``eps`` is added to |g| inside the maximum (PyTorch's
    convention; Keras computes u = max(b2 u, |g|) and divides by u + eps).

    Defaults are Keras's: ``learning_rate=0.001`` (torch: 0.002), ``epsilon=1e-7``
    (torch: 1e-8), ``beta_1=0.9``, ``beta_2=0.999``.

    Args:
        learning_rate: step size or schedule (default 0.001).
        beta_1: decay of the first moment (default 0.9).
        beta_2: decay of the infinity norm (default 0.999).
        epsilon: stability term (default 1e-7).
        weight_decay: L2 penalty added to the gradient (default 0).
        backend: backend of the parameters.
        **kwargs: ``clipnorm``, ``clipvalue``, ``global_clipnorm`` (see :class:`Optimizer`).
    """

    ops = ("adamax_update",)

    def __init__(
        self,
        learning_rate: Any = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        weight_decay: float = 0.0,
        backend: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate, weight_decay, backend, **kwargs)
        name = type(self).__name__
        self.beta_1 = check_fraction(name, "beta_1", beta_1)
        self.beta_2 = check_fraction(name, "beta_2", beta_2)
        self.epsilon = check_nonnegative(name, "epsilon", epsilon)

    def get_config(self) -> dict:
        """Hyper-parameters."""
        return {
            **super().get_config(),
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "epsilon": self.epsilon,
        }

    def create_slots(self, param):
        """First moment and exponentially weighted infinity norm."""
        return {"m": self.zeros_like(param), "u": self.zeros_like(param)}

    def update_one(self, param, grad, slots, lr, tmp):
        """One Adamax step on ``param``."""
        self.backend.adamax_update(
            param,
            grad,
            slots["m"],
            slots["u"],
            tmp=tmp,
            step=self.iterations,
            lr=lr,
            beta1=self.beta_1,
            beta2=self.beta_2,
            eps=self.epsilon,
            weight_decay=self.weight_decay,
        )
