"""AdaGrad."""

from __future__ import annotations

from typing import Any

from fastnn.optimizers.base import Optimizer, check_nonnegative


class Adagrad(Optimizer):
    """AdaGrad (Duchi, Hazan & Singer, 2011) with the ``torch.optim.Adagrad`` update rule.

    g = grad + weight_decay * p; accum += g^2; clr = lr / (1 + (t - 1) * lr_decay);
    p -= clr * g / (sqrt(accum) + eps). ``eps`` is added outside the square root (PyTorch's
    convention; Keras computes g / sqrt(accum + eps)). ``accum`` starts at
    ``initial_accumulator_value``.

    Defaults are Keras's: ``learning_rate=0.001`` (torch: 0.01),
    ``initial_accumulator_value=0.1`` (torch: 0), ``epsilon=1e-7`` (torch: 1e-10).
    ``lr_decay`` is torch's argument (Keras has none).

    Args:
        learning_rate: step size or schedule (default 0.001).
        initial_accumulator_value: starting value of the sum of squares (default 0.1).
        epsilon: stability term (default 1e-7).
        lr_decay: learning-rate decay per step (default 0).
        weight_decay: L2 penalty added to the gradient (default 0).
        backend: backend of the parameters.
        **kwargs: ``clipnorm``, ``clipvalue``, ``global_clipnorm`` (see :class:`Optimizer`).
    """

    ops = ("adagrad_update",)

    def __init__(
        self,
        learning_rate: Any = 0.001,
        initial_accumulator_value: float = 0.1,
        epsilon: float = 1e-7,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        backend: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate, weight_decay, backend, **kwargs)
        name = type(self).__name__
        self.initial_accumulator_value = check_nonnegative(
            name, "initial_accumulator_value", initial_accumulator_value
        )
        self.epsilon = check_nonnegative(name, "epsilon", epsilon)
        self.lr_decay = check_nonnegative(name, "lr_decay", lr_decay)

    def get_config(self) -> dict:
        """Hyper-parameters."""
        return {
            **super().get_config(),
            "initial_accumulator_value": self.initial_accumulator_value,
            "epsilon": self.epsilon,
            "lr_decay": self.lr_decay,
        }

    def create_slots(self, param):
        """The running sum of squared gradients."""
        accum = self.zeros_like(param)
        if self.initial_accumulator_value:
            accum += self.initial_accumulator_value
        return {"accumulator": accum}

    def update_one(self, param, grad, slots, lr, tmp):
        """One AdaGrad step on ``param``."""
        tmp2 = self.scratch(param, 1) if tmp is not None and self.weight_decay else None
        self.backend.adagrad_update(
            param,
            grad,
            slots["accumulator"],
            tmp=tmp,
            tmp2=tmp2,
            step=self.iterations,
            lr=lr,
            lr_decay=self.lr_decay,
            eps=self.epsilon,
            weight_decay=self.weight_decay,
        )
