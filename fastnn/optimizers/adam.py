"""Adam and its AMSGrad variant."""

from __future__ import annotations

from typing import Any

from fastnn.optimizers.base import Optimizer


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with the ``torch.optim.Adam`` update rule.

    g = grad + weight_decay * p; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
    p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps). ``eps`` is added
    outside the square root, to the bias-corrected sqrt(v) (PyTorch's convention; Keras
    adds it to the uncorrected sqrt(v)). With ``amsgrad`` the running maximum of v is
    used (Reddi et al., 2018).

    Args:
        learning_rate: step size (default 0.001, Keras's and torch's).
        beta_1: decay of the first moment (default 0.9).
        beta_2: decay of the second moment (default 0.999).
        epsilon: stability term (default 1e-7, Keras's default; PyTorch's is 1e-8).
        amsgrad: use AMSGrad (default False).
        weight_decay: L2 penalty added to the gradient (default 0).
        backend: backend of the parameters.
        **kwargs: ``clipnorm``, ``clipvalue``, ``global_clipnorm`` (see :class:`Optimizer`).
    """

    ops = ("adam_update",)

    def __init__(
        self,
        learning_rate: Any = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        amsgrad: bool = False,
        weight_decay: float = 0.0,
        backend: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate, weight_decay, backend, **kwargs)
        for label, beta in (("beta_1", beta_1), ("beta_2", beta_2)):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Adam: {label} must be in [0, 1). Received: {label}={beta}")
        if epsilon < 0:
            raise ValueError(f"Adam: epsilon must be >= 0. Received: epsilon={epsilon}")
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)
        self.amsgrad = bool(amsgrad)

    def get_config(self) -> dict:
        """Hyper-parameters."""
        return {
            **super().get_config(),
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "epsilon": self.epsilon,
            "amsgrad": self.amsgrad,
        }

    def create_slots(self, param):
        """First and second moments (and their running maximum for AMSGrad)."""
        slots = {"m": self.zeros_like(param), "v": self.zeros_like(param)}
        if self.amsgrad:
            slots["vmax"] = self.zeros_like(param)
        return slots

    def update_one(self, param, grad, slots, lr, tmp):
        """One Adam step on ``param``."""
        self.backend.adam_update(
            param,
            grad,
            slots["m"],
            slots["v"],
            vmax=slots.get("vmax"),
            tmp=tmp,
            step=self.iterations,
            lr=lr,
            beta1=self.beta_1,
            beta2=self.beta_2,
            eps=self.epsilon,
            weight_decay=self.weight_decay,
            amsgrad=self.amsgrad,
        )
