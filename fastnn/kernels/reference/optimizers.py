"""Reference in-place parameter updates with the ``torch.optim`` update rules.

Every update writes ``param`` (and its state) in place and never writes ``grad``.
``tmp`` is a scratch buffer shaped like ``param``; passing one keeps the update free of
parameter-sized allocations (one is allocated when it is None).
"""

from __future__ import annotations

from fastnn.kernels.registry import reference_op


def _effective_grad(xp, param, grad, weight_decay, tmp):
    """grad + weight_decay * param, written in ``tmp`` when weight decay is on, else ``grad``."""
    if not weight_decay:
        return grad
    xp.multiply(param, weight_decay, out=tmp)
    tmp += grad
    return tmp


@reference_op
def sgd_update(
    be,
    param,
    grad,
    buf=None,
    tmp=None,
    lr: float = 0.01,
    momentum: float = 0.0,
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    first_step: bool = False,
) -> None:
    """One SGD step, ``torch.optim.SGD`` rule.

    g = grad + wd * p; with momentum, buf = g on the first step, else
    buf = momentum * buf + (1 - dampening) * g, and g = g + momentum * buf (Nesterov)
    or g = buf; then p -= lr * g.
    """
    xp = be.xp
    if tmp is None:
        tmp = xp.empty_like(param)
    g = _effective_grad(xp, param, grad, weight_decay, tmp)
    if momentum:
        if first_step:
            buf[...] = g
        else:
            buf *= momentum
            if dampening:
                xp.multiply(g, 1.0 - dampening, out=tmp)
                buf += tmp
            else:
                buf += g
        if nesterov:
            # p -= lr * g + lr * momentum * buf, as two in-place passes through tmp.
            xp.multiply(g, lr, out=tmp)
            param -= tmp
            xp.multiply(buf, lr * momentum, out=tmp)
            param -= tmp
            return
        g = buf
    xp.multiply(g, lr, out=tmp)
    param -= tmp


@reference_op
def adam_update(
    be,
    param,
    grad,
    m,
    v,
    vmax=None,
    tmp=None,
    step: int = 1,
    lr: float = 0.001,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
) -> None:
    """One Adam step, ``torch.optim.Adam`` rule (``eps`` added outside the square root).

    g = grad + wd * p; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
    p -= lr / (1 - b1^t) * m / (sqrt(v_hat) / sqrt(1 - b2^t) + eps), where v_hat is v,
    or its running maximum ``vmax`` when ``amsgrad``.
    """
    xp = be.xp
    if tmp is None:
        tmp = xp.empty_like(param)
    g = _effective_grad(xp, param, grad, weight_decay, tmp)
    # m = b1 * (m - g) + g == b1 m + (1 - b1) g, with no temporary.
    m -= g
    m *= beta1
    m += g
    xp.multiply(g, g, out=tmp)
    tmp *= 1.0 - beta2
    v *= beta2
    v += tmp
    if amsgrad:
        xp.maximum(vmax, v, out=vmax)
        second = vmax
    else:
        second = v
    bias1 = 1.0 - beta1**step
    bias2 = 1.0 - beta2**step
    xp.sqrt(second, out=tmp)
    tmp *= 1.0 / bias2**0.5
    tmp += eps
    xp.divide(m, tmp, out=tmp)
    tmp *= lr / bias1
    param -= tmp
