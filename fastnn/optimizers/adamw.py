"""AdamW: Adam with decoupled weight decay."""

from __future__ import annotations

from typing import Any

from fastnn.optimizers.adam import Adam


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter, 2019) with the ``torch.optim.AdamW`` update rule.

    p *= 1 - lr * weight_decay (decoupled decay, applied before the moments), then the Adam
    step on the raw gradient: m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
    p -= lr / (1 - b1^t) * m / (sqrt(v_hat) / sqrt(1 - b2^t) + eps), with ``eps`` outside the
    square root (PyTorch's convention; Keras adds it to the uncorrected sqrt(v)) and v_hat
    the running maximum of v with ``amsgrad``. Keras's AdamW decays the same way
    (``p -= p * weight_decay * lr``).

    Defaults are Keras's: ``learning_rate=0.001``, ``weight_decay=0.004`` (torch: 0.01),
    ``epsilon=1e-7`` (torch: 1e-8), ``beta_1=0.9``, ``beta_2=0.999``.

    Args:
        learning_rate: step size or schedule (default 0.001).
        weight_decay: decoupled decay coefficient (default 0.004).
        beta_1: decay of the first moment (default 0.9).
        beta_2: decay of the second moment (default 0.999).
        epsilon: stability term (default 1e-7).
        amsgrad: use AMSGrad (default False).
        backend: backend of the parameters.
        **kwargs: ``clipnorm``, ``clipvalue``, ``global_clipnorm`` (see :class:`Optimizer`).
    """

    ops = ("adamw_update",)

    def __init__(
        self,
        learning_rate: Any = 0.001,
        weight_decay: float = 0.004,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        amsgrad: bool = False,
        backend: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            learning_rate=learning_rate,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            amsgrad=amsgrad,
            weight_decay=weight_decay,
            backend=backend,
            **kwargs,
        )

    def update_one(self, param, grad, slots, lr, tmp):
        """One AdamW step on ``param``."""
        self.backend.adamw_update(
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
