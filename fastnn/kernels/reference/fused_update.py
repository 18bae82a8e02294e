"""Reference ops that fuse a layer's weight gradient with the optimizer step on the weight.

At batch size 1 the weight gradient of a Dense layer is an outer product as large as the
weight, and the SGD step reads it back at once: fusing the two saves a pass over the weight
(see ``Sequential``'s fused steps). The reference runs the two ops in turn, so the result is
by definition that of the unfused step.
"""

from __future__ import annotations

from fastnn.kernels.reference.dense import linear_backward
from fastnn.kernels.reference.optimizers import sgd_update
from fastnn.kernels.registry import reference_op


@reference_op
def linear_backward_sgd(
    be,
    dz,
    x,
    W,
    dW,
    buf=None,
    tmp=None,
    dx=None,
    need_dx: bool = True,
    lr: float = 0.01,
    momentum: float = 0.0,
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    first_step: bool = False,
):
    """The weight's part of the backward of y = x @ W + b, then one SGD step on ``W``.

    Writes dW = x.T @ dz, returns dx = dz @ W.T computed with ``W`` before the step (None
    when ``need_dx`` is False), then updates ``W`` (and its momentum buffer ``buf``) as
    :func:`sgd_update` does with gradient ``dW``. ``tmp`` is scratch shaped like ``W``.

    Shapes: dz (N, D_out), x (N, D_in), W, dW, buf and tmp (D_in, D_out), dx (N, D_in).
    """
    dx = linear_backward(be, dz, x, W, dW, None, dx, need_dx)
    sgd_update(be, W, dW, buf, tmp, lr, momentum, dampening, nesterov, weight_decay,
               first_step)
    return dx
