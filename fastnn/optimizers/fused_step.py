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
:meth:`Optimizer.begin_fused_step`). Unlike the unfused step it is not all or nothing: when
the backward pass raises (an error in a layer, a KeyboardInterrupt), the weights of the layers
it has passed are already updated and the step counter has advanced.
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
        flat: ``(flat_param, flat_grad, flat_slots)``, the buffers the layout's arrays are
            consecutive views of (in layout order): :meth:`finish` updates each run of
            parameters no layer updated with one call over the matching slices.
    """

    def __init__(self, optimizer: Any, lr: float, layout: Sequence[tuple[Any, Any, Any]],
                 flat: tuple[Any, Any, dict[str, Any]]) -> None:
        self.optimizer = optimizer
        self.lr = lr
        self.layout = list(layout)
        self.flat = flat
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
        """Update every parameter of the layout that no layer updated during the backward:
        one call per run of consecutive such parameters (one call over the whole flat
        buffers when no layer updated any)."""
        opt = self.optimizer
        needs_scratch = opt._uses_reference_ops()
        flat_param, flat_grad, slots = self.flat
        runs: list[tuple[int, int]] = []
        offset = 0
        for key, param, _ in self.layout:
            size = int(param.size)
            if key not in self._done:
                if runs and runs[-1][1] == offset:
                    runs[-1] = (runs[-1][0], offset + size)
                else:
                    runs.append((offset, offset + size))
            offset += size
        for lo, hi in runs:
            p = flat_param[lo:hi]
            tmp = opt.scratch(p, 0) if needs_scratch else None
            opt.update_one(p, flat_grad[lo:hi], {name: buf[lo:hi] for name, buf in slots.items()},
                           self.lr, tmp)
        self._done.clear()
