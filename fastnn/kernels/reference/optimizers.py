"""Reference in-place parameter updates with the ``torch.optim`` update rules.

Every update writes ``param`` (and its state) in place and never writes ``grad``.
``tmp`` (and ``tmp2`` where an update needs a second one) is a scratch buffer shaped like
``param``; passing them keeps the update free of parameter-sized allocations (one is
allocated when it is None and needed). Each rule is the single-tensor ``torch.optim``
implementation, written as a sequence of in-place array operations; scalars that depend
only on the step (bias corrections, step sizes) are computed once on the host, as
``torch.optim`` does.
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


def _scratch(xp, param, buf):
    return xp.empty_like(param) if buf is None else buf


def _other(g, tmp, tmp2):
    """The scratch buffer not holding the effective gradient ``g``."""
    return tmp2 if g is tmp else tmp


@reference_op
def adagrad_update(
    be,
    param,
    grad,
    accum,
    tmp=None,
    tmp2=None,
    step: int = 1,
    lr: float = 0.01,
    lr_decay: float = 0.0,
    eps: float = 1e-10,
    weight_decay: float = 0.0,
) -> None:
    """One AdaGrad step, ``torch.optim.Adagrad`` rule (``eps`` outside the square root).

    g = grad + wd * p; accum += g^2; clr = lr / (1 + (t - 1) * lr_decay);
    p -= clr * g / (sqrt(accum) + eps). ``tmp2`` is needed only with weight decay.
    """
    xp = be.xp
    tmp = _scratch(xp, param, tmp)
    g = _effective_grad(xp, param, grad, weight_decay, tmp)
    s = _scratch(xp, param, tmp2) if g is tmp else tmp
    xp.multiply(g, g, out=s)
    accum += s
    xp.sqrt(accum, out=s)
    s += eps
    xp.divide(g, s, out=s)
    s *= lr / (1.0 + (step - 1) * lr_decay)
    param -= s


@reference_op
def rmsprop_update(
    be,
    param,
    grad,
    square_avg,
    grad_avg=None,
    buf=None,
    tmp=None,
    tmp2=None,
    lr: float = 0.01,
    rho: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    centered: bool = False,
) -> None:
    """One RMSprop step, ``torch.optim.RMSprop`` rule (``rho`` is torch's ``alpha``).

    g = grad + wd * p; sq = rho sq + (1 - rho) g^2; centered: ga = rho ga + (1 - rho) g and
    avg = sqrt(sq - ga^2) + eps, else avg = sqrt(sq) + eps (``eps`` outside the root);
    momentum > 0: buf = momentum buf + g / avg, p -= lr buf; else p -= lr g / avg.
    ``grad_avg`` is used only when ``centered``, ``buf`` only with momentum.
    """
    xp = be.xp
    tmp = _scratch(xp, param, tmp)
    g = _effective_grad(xp, param, grad, weight_decay, tmp)
    s = _scratch(xp, param, tmp2) if g is tmp else tmp
    xp.multiply(g, g, out=s)
    s *= 1.0 - rho
    square_avg *= rho
    square_avg += s
    if centered:
        # ga = rho * (ga - g) + g == rho ga + (1 - rho) g, with no temporary.
        grad_avg -= g
        grad_avg *= rho
        grad_avg += g
        xp.multiply(grad_avg, grad_avg, out=s)
        xp.subtract(square_avg, s, out=s)
        xp.sqrt(s, out=s)
    else:
        xp.sqrt(square_avg, out=s)
    s += eps
    xp.divide(g, s, out=s)
    if momentum:
        buf *= momentum
        buf += s
        xp.multiply(buf, lr, out=s)
    else:
        s *= lr
    param -= s


@reference_op
def adadelta_update(
    be,
    param,
    grad,
    square_avg,
    acc_delta,
    tmp=None,
    tmp2=None,
    lr: float = 1.0,
    rho: float = 0.9,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
) -> None:
    """One AdaDelta step, ``torch.optim.Adadelta`` rule (``eps`` inside both roots).

    g = grad + wd * p; sq = rho sq + (1 - rho) g^2;
    delta = sqrt(acc_delta + eps) / sqrt(sq + eps) * g;
    acc_delta = rho acc_delta + (1 - rho) delta^2; p -= lr * delta.
    """
    xp = be.xp
    tmp = _scratch(xp, param, tmp)
    tmp2 = _scratch(xp, param, tmp2)
    g = _effective_grad(xp, param, grad, weight_decay, tmp)
    s = _other(g, tmp, tmp2)
    xp.multiply(g, g, out=s)
    s *= 1.0 - rho
    square_avg *= rho
    square_avg += s
    # d = g / std in the buffer that held g (or tmp), then d *= sqrt(acc_delta + eps).
    xp.add(square_avg, eps, out=s)
    xp.sqrt(s, out=s)
    d = tmp
    xp.divide(g, s, out=d)
    xp.add(acc_delta, eps, out=tmp2)
    xp.sqrt(tmp2, out=tmp2)
    d *= tmp2
    xp.multiply(d, d, out=tmp2)
    tmp2 *= 1.0 - rho
    acc_delta *= rho
    acc_delta += tmp2
    d *= lr
    param -= d


@reference_op
def adamw_update(
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
    weight_decay: float = 0.01,
    amsgrad: bool = False,
) -> None:
    """One AdamW step, ``torch.optim.AdamW`` rule: decoupled weight decay, then Adam.

    p *= 1 - lr * wd; then the Adam step of :func:`adam_update` on ``grad`` (no L2 term).
    """
    if weight_decay:
        param *= 1.0 - lr * weight_decay
    adam_update(be, param, grad, m, v, vmax=vmax, tmp=tmp, step=step, lr=lr, beta1=beta1,
                beta2=beta2, eps=eps, weight_decay=0.0, amsgrad=amsgrad)


@reference_op
def adamax_update(
    be,
    param,
    grad,
    m,
    u,
    tmp=None,
    step: int = 1,
    lr: float = 0.002,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
) -> None:
    """One Adamax step, ``torch.optim.Adamax`` rule (``eps`` inside the maximum).

    g = grad + wd * p; m = b1 m + (1 - b1) g; u = max(b2 u, |g| + eps);
    p -= lr / (1 - b1^t) * m / u.
    """
    xp = be.xp
    tmp = _scratch(xp, param, tmp)
    g = _effective_grad(xp, param, grad, weight_decay, tmp)
    m -= g
    m *= beta1
    m += g
    xp.abs(g, out=tmp)  # g is no longer needed: tmp may hold it
    tmp += eps
    u *= beta2
    xp.maximum(u, tmp, out=u)
    xp.divide(m, u, out=tmp)
    tmp *= lr / (1.0 - beta1**step)
    param -= tmp


def nadam_coefficients(
    step: int, lr: float, beta1: float, momentum_decay: float, mu_product: float
) -> tuple[float, float]:
    """The two step sizes of NAdam step ``step`` (``torch.optim.NAdam``).

    With mu_t = b1 (1 - 0.5 * 0.96^(t * momentum_decay)) and ``mu_product`` the product
    mu_1 ... mu_t, returns lr (1 - mu_t) / (1 - mu_product) and
    lr mu_{t+1} / (1 - mu_product mu_{t+1}).
    """
    mu = beta1 * (1.0 - 0.5 * 0.96 ** (step * momentum_decay))
    mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((step + 1) * momentum_decay))
    return lr * (1.0 - mu) / (1.0 - mu_product), lr * mu_next / (1.0 - mu_product * mu_next)


def nadam_mu_product(step: int, beta1: float, momentum_decay: float) -> float:
    """mu_1 mu_2 ... mu_step of NAdam, multiplied in order as ``torch.optim.NAdam`` does."""
    product = 1.0
    for t in range(1, step + 1):
        product *= beta1 * (1.0 - 0.5 * 0.96 ** (t * momentum_decay))
    return product


@reference_op
def nadam_update(
    be,
    param,
    grad,
    m,
    v,
    tmp=None,
    tmp2=None,
    step: int = 1,
    lr: float = 0.002,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum_decay: float = 0.004,
    mu_product: float | None = None,
    decoupled_weight_decay: bool = False,
) -> None:
    """One NAdam step, ``torch.optim.NAdam`` rule (Dozat 2016, with torch's momentum decay).

    g = grad + wd * p (or p *= 1 - lr wd when ``decoupled_weight_decay``);
    m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; denom = sqrt(v / (1 - b2^t)) + eps;
    p -= c1 g / denom + c2 m / denom with the step sizes of :func:`nadam_coefficients`.
    ``mu_product`` is mu_1 ... mu_t (computed from ``step`` when None).
    """
    xp = be.xp
    if mu_product is None:
        mu_product = nadam_mu_product(step, beta1, momentum_decay)
    c1, c2 = nadam_coefficients(step, lr, beta1, momentum_decay, mu_product)
    tmp = _scratch(xp, param, tmp)
    tmp2 = _scratch(xp, param, tmp2)
    if weight_decay and decoupled_weight_decay:
        param *= 1.0 - lr * weight_decay
        g = grad
    else:
        g = _effective_grad(xp, param, grad, weight_decay, tmp)
    m -= g
    m *= beta1
    m += g
    s = _other(g, tmp, tmp2)
    xp.multiply(g, g, out=s)
    s *= 1.0 - beta2
    v *= beta2
    v += s
    xp.divide(v, 1.0 - beta2**step, out=s)
    xp.sqrt(s, out=s)
    s += eps
    d = _other(s, tmp, tmp2)  # the buffer that holds g, or the free one
    xp.divide(g, s, out=d)
    d *= c1
    param -= d
    xp.divide(m, s, out=d)
    d *= c2
    param -= d


@reference_op
def clip_gradient(be, grad, out, scale: float = 1.0, clip_value: float | None = None):
    """out = clip(grad * scale, -clip_value, clip_value) (no clip when ``clip_value`` is
    None); ``grad`` is not written unless ``out is grad``. Returns ``out``."""
    xp = be.xp
    if scale != 1.0:
        xp.multiply(grad, scale, out=out)
    elif out is not grad:
        out[...] = grad
    if clip_value is not None:
        xp.clip(out, -clip_value, clip_value, out=out)
    return out


@reference_op
def sum_of_squares(be, x) -> float:
    """The sum of ``x**2`` over every element, as a Python float (no temporary array for a
    contiguous ``x``)."""
    flat = x.reshape(-1)
    return float(be.xp.vdot(flat, flat))
