"""Stochastic gradient descent with momentum and Nesterov momentum."""

from __future__ import annotations

from typing import Any

from fastnn.optimizers.base import Optimizer


class SGD(Optimizer):
    """SGD with the ``torch.optim.SGD`` update rule.

    g = grad + weight_decay * p; with momentum m: buf = g on the first step, then
    buf = m * buf + (1 - dampening) * g; g = g + m * buf if ``nesterov`` else buf;
    p -= lr * g.

    Defaults: ``learning_rate=0.01`` (Keras; torch's is 0.001), ``momentum=0``,
    ``nesterov=False``, ``dampening=0`` (torch's argument; Keras has none).

    Args:
        learning_rate: step size (default 0.01, Keras's default).
        momentum: momentum factor (default 0).
        nesterov: Nesterov momentum (needs momentum > 0 and dampening 0).
        weight_decay: L2 penalty added to the gradient (default 0).
        dampening: dampening of the momentum (default 0).
        backend: backend of the parameters.
        **kwargs: ``clipnorm``, ``clipvalue``, ``global_clipnorm`` (see :class:`Optimizer`).
    """

    ops = ("sgd_update",)
    fused_linear_op = "linear_backward_sgd"

    def __init__(
        self,
        learning_rate: Any = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        dampening: float = 0.0,
        backend: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate, weight_decay, backend, **kwargs)
        if not momentum >= 0.0:
            raise ValueError(f"SGD: momentum must be >= 0. Received: momentum={momentum}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(
                "SGD: Nesterov momentum needs momentum > 0 and dampening = 0. Received: "
                f"momentum={momentum}, dampening={dampening}"
            )
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.dampening = float(dampening)

    def get_config(self) -> dict:
        """Hyper-parameters."""
        return {
            **super().get_config(),
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "dampening": self.dampening,
        }

    def create_slots(self, param):
        """The momentum buffer (when momentum > 0)."""
        return {"momentum": self.zeros_like(param)} if self.momentum else {}

    def update_one(self, param, grad, slots, lr, tmp):
        """One SGD step on ``param``."""
        self.backend.sgd_update(param, grad, tmp=tmp, **self._rule(slots, lr))

    def fused_linear_backward(self, dz, x, W, dW, dx, need_dx, slots, lr):
        """A Dense layer's weight backward and SGD step on ``W`` in one op."""
        tmp = self.scratch(W, 0) if self._uses_reference_ops() else None
        return self.backend.linear_backward_sgd(dz, x, W, dW, tmp=tmp, dx=dx, need_dx=need_dx,
                                                **self._rule(slots, lr))

    def _rule(self, slots: dict, lr: float) -> dict:
        """The keyword arguments of this step's rule, shared by both update ops."""
        return {
            "buf": slots.get("momentum"),
            "lr": lr,
            "momentum": self.momentum,
            "dampening": self.dampening,
            "nesterov": self.nesterov,
            "weight_decay": self.weight_decay,
            "first_step": self.iterations == 1,
        }
