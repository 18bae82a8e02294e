"""NAdam: Adam with Nesterov momentum, PyTorch's formulation."""

from __future__ import annotations

from typing import Any

from fastnn.kernels.reference.optimizers import nadam_mu_product
from fastnn.optimizers.base import Optimizer, check_fraction, check_nonnegative


class Nadam(Optimizer):
    """NAdam (Dozat, 2016) with the ``torch.optim.NAdam`` update rule.

    g = grad + weight_decay * p (or p *= 1 - lr * weight_decay when
    ``decoupled_weight_decay``); mu_t = b1 (1 - 0.5 * 0.96^(t * momentum_decay));
    m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; denom = sqrt(v / (1 - b2^t)) + eps;
    p -= lr (1 - mu_t) / (1 - prod_{i<=t} mu_i) * g / denom
       + lr mu_{t+1} / (1 - prod_{i<=t+1} mu_i) * m / denom.
    ``eps`` is added outside the square root (PyTorch's convention). Keras's Nadam uses the
    same momentum schedule with a fixed 0.004 and adds ``eps`` the same way; the products
    of mu are recomputed from ``iterations``, so a restored optimizer continues exactly.

    Defaults are Keras's: ``learning_rate=0.001`` (torch: 0.002), ``epsilon=1e-7``
    (torch: 1e-8), ``beta_1=0.9``, ``beta_2=0.999``; ``momentum_decay=0.004`` and
    ``decoupled_weight_decay`` are torch's arguments.

    Args:
        learning_rate: step size or schedule (default 0.001).
        beta_1: decay of the first moment (default 0.9).
        beta_2: decay of the second moment (default 0.999).
        epsilon: stability term (default 1e-7).
        momentum_decay: decay of the momentum schedule (default 0.004).
        weight_decay: weight decay coefficient (default 0).
        decoupled_weight_decay: decay the weights as AdamW does instead of adding an L2
            term to the gradient (default False).
        backend: backend of the parameters.
        **kwargs: ``clipnorm``, ``clipvalue``, ``global_clipnorm`` (see :class:`Optimizer`).
    """

    ops = ("nadam_update",)

    def __init__(
        self,
        learning_rate: Any = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        momentum_decay: float = 0.004,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        backend: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate, weight_decay, backend, **kwargs)
        name = type(self).__name__
        self.beta_1 = check_fraction(name, "beta_1", beta_1)
        self.beta_2 = check_fraction(name, "beta_2", beta_2)
        self.epsilon = check_nonnegative(name, "epsilon", epsilon)
        self.momentum_decay = check_nonnegative(name, "momentum_decay", momentum_decay)
        self.decoupled_weight_decay = bool(decoupled_weight_decay)
        self._mu_product = (0, 1.0)  # (step, mu_1 ... mu_step)

    def get_config(self) -> dict:
        """Hyper-parameters."""
        return {
            **super().get_config(),
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "epsilon": self.epsilon,
            "momentum_decay": self.momentum_decay,
            "decoupled_weight_decay": self.decoupled_weight_decay,
        }

    def create_slots(self, param):
        """First and second moments."""
        return {"m": self.zeros_like(param), "v": self.zeros_like(param)}

    def mu_product(self, step: int) -> float:
        """mu_1 ... mu_step, updated incrementally from the previous step when possible."""
        last, product = self._mu_product
        if step == last + 1:
            product *= self.beta_1 * (1.0 - 0.5 * 0.96 ** (step * self.momentum_decay))
        elif step != last:
            product = nadam_mu_product(step, self.beta_1, self.momentum_decay)
        self._mu_product = (step, product)
        return product

    def update_one(self, param, grad, slots, lr, tmp):
        """One NAdam step on ``param``."""
        step = self.iterations
        self.backend.nadam_update(
            param,
            grad,
            slots["m"],
            slots["v"],
            tmp=tmp,
            tmp2=None if tmp is None else self.scratch(param, 1),
            step=step,
            lr=lr,
            beta1=self.beta_1,
            beta2=self.beta_2,
            eps=self.epsilon,
            weight_decay=self.weight_decay,
            momentum_decay=self.momentum_decay,
            mu_product=self.mu_product(step),
            decoupled_weight_decay=self.decoupled_weight_decay,
        )
