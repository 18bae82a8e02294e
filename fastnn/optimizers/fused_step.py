"""A training step whose optimizer update is applied inside the backward pass.

At batch size 1 a Dense layer's weight gradient is an outer product as large as the weight;
writing it and having the optimizer read it back in a separate pass costs about as much as
the rest of the step. A :class:`FusedStep` lets a layer compute its weight gradient, its input
gradient and the weight's update in one pass (an op such as ``linear_backward_sgd``), then
applies the usual update to every parameter no layer updated. The result equals that of the
unfused step: the same gradients are written into ``grads`` and the same update rule runs.

It is only valid where nothing happens between "gradients complete" and "update": no
gradient clipping, no regularization gradients added after the backward pass, no all-reduce.
``Sequential`` checks those conditions before it starts one (see
:meth:`Optimizer.begin_fused_step`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class FusedStep:
    """One optimizer step applied parameter by parameter during a backward pass.

    Args:
        optimizer: the optimizer whose step this is (its step counter already advanced).
        lr: the step's learning rate.
        layout: ``(key, param, grad)`` of every parameter the step updates (the flat layout
            of ``Sequential``); the optimizer's ``slots[key]`` hold their state.
    """

    def __init__(self, optimizer: Any, lr: float,
                 layout: Sequence[tuple[Any, Any, Any]]) -> None:
        self.optimizer = optimizer
        self.lr = lr
        self.layout = list(layout)
        self._key_of = {id(param): key for key, param, _ in self.layout}
        self._done: set[Any] = set()

    def linear_backward(self, dz: Any, x: Any, W: Any, dW: Any, dx: Any = None,
                        need_dx: bool = True) -> Any:
        """The weight's part of a Dense backward (``dW`` written, dx returned as
        ``linear_backward`` does) with ``W``'s update applied in the same pass."""
        key = self._key_of.get(id(W))
        opt = self.optimizer
        if key is None or key in self._done:  # not a parameter of this step: gradients only
            return opt.backend.linear_backward(dz, x, W, dW=dW, db=None, dx=dx,
                                               need_dx=need_dx)
        dx = opt.fused_linear_backward(dz, x, W, dW, dx, need_dx, opt.slots[key], self.lr)
        self._done.add(key)
        return dx

    def finish(self) -> None:
        """Update every parameter of the layout that no layer updated during the backward."""
        opt = self.optimizer
        needs_scratch = opt._uses_reference_ops()
        for key, param, grad in self.layout:
            if key in self._done:
                continue
            tmp = opt.scratch(param, 0) if needs_scratch else None
            opt.update_one(param, grad, opt.slots[key], self.lr, tmp)
        self._done.clear()
