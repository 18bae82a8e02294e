"""AdaDelta."""

from __future__ import annotations

from typing import Any

from fastnn.optimizers.base import Optimizer, check_fraction, check_nonnegative


class Adadelta(Optimizer):
    """AdaDelta (Zeiler, 2012) with the ``torch.optim.Adadelta`` update rule.

    g = grad + weight_decay * p; sq = rho sq + (1 - rho) g^2;
    delta = sqrt(acc_delta + eps) / sqrt(sq + eps) * g;
    acc_delta = rho acc_delta + (1 - rho) delta^2; p -= lr * delta.
    ``eps`` is added inside both square roots (PyTorch and Keras agree here).

    Defaults are Keras's: ``learning_rate=0.001`` (torch: 1.0, the paper's "no learning
    rate"), ``rho=0.95`` (torch: 0.9), ``epsilon=1e-7`` (torch: 1e-6).

    Args:
        learning_rate: scale of the update or schedule (default 0.001).
        rho: decay of the running averages (default 0.95).
        epsilon: stability term (default 1e-7).
        weight_decay: L2 penalty added to the gradient (default 0).
        backend: backend of the parameters.
        **kwargs: ``clipnorm``, ``clipvalue``, ``global_clipnorm`` (see :class:`Optimizer`).
    """

    ops = ("adadelta_update",)

    def __init__(
        self,
        learning_rate: Any = 0.001,
        rho: float = 0.95,
        epsilon: float = 1e-7,
        weight_decay: float = 0.0,
        backend: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate, weight_decay, backend, **kwargs)
        name = type(self).__name__
        self.rho = check_fraction(name, "rho", rho, closed_top=True)
        self.epsilon = check_nonnegative(name, "epsilon", epsilon)

    def get_config(self) -> dict:
        """Hyper-parameters."""
        return {**super().get_config(), "rho": self.rho, "epsilon": self.epsilon}

    def create_slots(self, param):
        """Running means of g^2 and of the squared updates."""
        return {"square_avg": self.zeros_like(param), "acc_delta": self.zeros_like(param)}

    def update_one(self, param, grad, slots, lr, tmp):
        """One AdaDelta step on ``param``."""
        self.backend.adadelta_update(
            param,
            grad,
            slots["square_avg"],
            slots["acc_delta"],
            tmp=tmp,
            tmp2=None if tmp is None else self.scratch(param, 1),
            lr=lr,
            rho=self.rho,
            eps=self.epsilon,
            weight_decay=self.weight_decay,
        )
