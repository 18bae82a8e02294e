"""Numba overrides of the other optimizer updates (``torch.optim`` rules), one fused pass each,
and of the gradient-clipping helpers.

Each update reads every parameter-sized array once and writes the parameter and its state
once, in a ``prange`` over blocks of the flattened arrays; the scratch buffers ``tmp`` and
``tmp2`` of the reference versions are not needed and not touched. Hyper-parameters arrive as
float64 and are rounded to the parameter's dtype inside the kernel (``cast_to``), as NumPy does
with Python scalars, so float32 updates compute in float32. Scalars that depend only on the
step (bias corrections, NAdam's step sizes) are computed on the host, as in the reference.

- ``_adagrad_kernel``: accum += g^2; p -= clr * g / (sqrt(accum) + eps).
- ``_rmsprop_kernel``: sq = rho sq + (1 - rho) g^2; centered ga = rho ga + (1 - rho) g and
  avg = sqrt(sq - ga^2) + eps, else sqrt(sq) + eps; momentum buf = mom buf + g / avg.
- ``_adadelta_kernel``: sq = rho sq + (1 - rho) g^2; d = g / sqrt(sq + eps) *
  sqrt(acc + eps); acc = rho acc + (1 - rho) d^2; p -= lr d.
- ``_adamw_kernel``: p *= 1 - lr wd, then the Adam step (AMSGrad optional).
- ``_adamax_kernel``: u = max(b2 u, |g| + eps) (NaN-propagating); p -= clr m / u.
- ``_nadam_kernel``: denom = sqrt(v / (1 - b2^t)) + eps; p -= c1 g / denom + c2 m / denom.
- ``_clip_kernel``: out = clip(g * scale, -c, c); ``_sum_squares_kernel``: per-block float64
  partial sums of x^2.

(``g`` is ``grad + wd * p`` where the rule has an L2 term.) Block bounds are unsigned
(``uintp``): with signed indices Numba keeps its negative-index wraparound branch in the
inner loop, which stops LLVM from vectorising it (measured 13x slower on a 10M-element
scale). Subnormals are flushed inside the kernels (see ``threads``). Inputs the kernels do
not take (not C-contiguous float32/float64 ndarrays of one dtype and shape, overlapping
buffers, missing state) go to the reference.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange, types, uintp

from fastnn.kernels.cpu.fastexp import fast_max
from fastnn.kernels.cpu.jit import (
    LazyKernel,
    array,
    cast_to,
    is_kernel_array,
    kernel_dtype,
    num_blocks,
)
from fastnn.kernels.cpu.optimizers import state_dtype
from fastnn.kernels.cpu.threads import ftz_enter, ftz_exit
from fastnn.kernels.reference import optimizers as ref
from fastnn.kernels.registry import override

_F64 = types.float64


# -- kernels -----------------------------------------------------------------------------------
def _adagrad_kernel(p, g, acc, clr, eps, wd, nblocks):
    n = p.size
    clr_ = cast_to(clr, p.dtype)
    eps_ = cast_to(eps, p.dtype)
    wd_ = cast_to(wd, p.dtype)
    has_wd = wd != 0.0
    for blk in prange(nblocks):
        old = ftz_enter()
        for i in range(uintp(blk * n // nblocks), uintp((blk + 1) * n // nblocks)):
            gi = p[i] * wd_ + g[i] if has_wd else g[i]
            a = acc[i] + gi * gi
            acc[i] = a
            p[i] -= (gi / (math.sqrt(a) + eps_)) * clr_
        ftz_exit(old)


# RMSprop: one kernel per variant. With the variants as branches of one kernel, LLVM kept
# the loops scalar (measured 3-4x slower), so each variant gets its own straight loop.
def _rmsprop_plain_kernel(p, g, sq, ga, buf, lr, rho, eps, wd, momentum, nblocks):
    n = p.size
    lr_ = cast_to(lr, p.dtype)
    rho_ = cast_to(rho, p.dtype)
    c_ = cast_to(1.0 - rho, p.dtype)
    eps_ = cast_to(eps, p.dtype)
    wd_ = cast_to(wd, p.dtype)
    has_wd = wd != 0.0
    for blk in prange(nblocks):
        old = ftz_enter()
        for i in range(uintp(blk * n // nblocks), uintp((blk + 1) * n // nblocks)):
            gi = p[i] * wd_ + g[i] if has_wd else g[i]
            s = sq[i] * rho_ + (gi * gi) * c_
            sq[i] = s
            p[i] -= (gi / (math.sqrt(s) + eps_)) * lr_
        ftz_exit(old)


def _rmsprop_momentum_kernel(p, g, sq, ga, buf, lr, rho, eps, wd, momentum, nblocks):
    n = p.size
    lr_ = cast_to(lr, p.dtype)
    rho_ = cast_to(rho, p.dtype)
    c_ = cast_to(1.0 - rho, p.dtype)
    eps_ = cast_to(eps, p.dtype)
    wd_ = cast_to(wd, p.dtype)
    mom = cast_to(momentum, p.dtype)
    has_wd = wd != 0.0
    for blk in prange(nblocks):
        old = ftz_enter()
        for i in range(uintp(blk * n // nblocks), uintp((blk + 1) * n // nblocks)):
            gi = p[i] * wd_ + g[i] if has_wd else g[i]
            s = sq[i] * rho_ + (gi * gi) * c_
            sq[i] = s
            b = buf[i] * mom + gi / (math.sqrt(s) + eps_)
            buf[i] = b
            p[i] -= b * lr_
        ftz_exit(old)


def _rmsprop_centered_kernel(p, g, sq, ga, buf, lr, rho, eps, wd, momentum, nblocks):
    n = p.size
    lr_ = cast_to(lr, p.dtype)
    rho_ = cast_to(rho, p.dtype)
    c_ = cast_to(1.0 - rho, p.dtype)
    eps_ = cast_to(eps, p.dtype)
    wd_ = cast_to(wd, p.dtype)
    has_wd = wd != 0.0
    for blk in prange(nblocks):
        old = ftz_enter()
        for i in range(uintp(blk * n // nblocks), uintp((blk + 1) * n // nblocks)):
            gi = p[i] * wd_ + g[i] if has_wd else g[i]
            s = sq[i] * rho_ + (gi * gi) * c_
            sq[i] = s
            a = (ga[i] - gi) * rho_ + gi
            ga[i] = a
            p[i] -= (gi / (math.sqrt(s - a * a) + eps_)) * lr_
        ftz_exit(old)


def _rmsprop_centered_momentum_kernel(p, g, sq, ga, buf, lr, rho, eps, wd, momentum, nblocks):
    n = p.size
    lr_ = cast_to(lr, p.dtype)
    rho_ = cast_to(rho, p.dtype)
    c_ = cast_to(1.0 - rho, p.dtype)
    eps_ = cast_to(eps, p.dtype)
    wd_ = cast_to(wd, p.dtype)
    mom = cast_to(momentum, p.dtype)
    has_wd = wd != 0.0
    for blk in prange(nblocks):
        old = ftz_enter()
        for i in range(uintp(blk * n // nblocks), uintp((blk + 1) * n // nblocks)):
            gi = p[i] * wd_ + g[i] if has_wd else g[i]
            s = sq[i] * rho_ + (gi * gi) * c_
            sq[i] = s
            a = (ga[i] - gi) * rho_ + gi
            ga[i] = a
            b = buf[i] * mom + gi / (math.sqrt(s - a * a) + eps_)
            buf[i] = b
            p[i] -= b * lr_
        ftz_exit(old)


def _adadelta_kernel(p, g, sq, acc, lr, rho, eps, wd, nblocks):
    n = p.size
    lr_ = cast_to(lr, p.dtype)
    rho_ = cast_to(rho, p.dtype)
    c_ = cast_to(1.0 - rho, p.dtype)
    eps_ = cast_to(eps, p.dtype)
    wd_ = cast_to(wd, p.dtype)
    has_wd = wd != 0.0
    for blk in prange(nblocks):
        old = ftz_enter()
        for i in range(uintp(blk * n // nblocks), uintp((blk + 1) * n // nblocks)):
            gi = p[i] * wd_ + g[i] if has_wd else g[i]
            s = sq[i] * rho_ + (gi * gi) * c_
            sq[i] = s
            d = gi / math.sqrt(s + eps_) * math.sqrt(acc[i] + eps_)
            acc[i] = acc[i] * rho_ + (d * d) * c_
            p[i] -= d * lr_
        ftz_exit(old)


def _adamw_kernel(
    p, g, m, v, vmax, amsgrad, decay, step_size, inv_sqrt_bias2, beta1, beta2, eps, nblocks
):
    n = p.size
    decay_ = cast_to(decay, p.dtype)
    step_ = cast_to(step_size, p.dtype)
    rs2 = cast_to(inv_sqrt_bias2, p.dtype)
    b1 = cast_to(beta1, p.dtype)
    b2 = cast_to(beta2, p.dtype)
    c2 = cast_to(1.0 - beta2, p.dtype)
    eps_ = cast_to(eps, p.dtype)
    for blk in prange(nblocks):
        old = ftz_enter()
        lo = uintp(blk * n // nblocks)
        hi = uintp((blk + 1) * n // nblocks)
        if amsgrad:  # separate loops: a conditional store of vmax would stop vectorisation
            for i in range(lo, hi):
                gi = g[i]
                mi = (m[i] - gi) * b1 + gi
                vi = v[i] * b2 + (gi * gi) * c2
                m[i] = mi
                v[i] = vi
                vh = fast_max(vmax[i], vi)
                vmax[i] = vh
                p[i] = p[i] * decay_ - (mi / (math.sqrt(vh) * rs2 + eps_)) * step_
        else:
            for i in range(lo, hi):
                gi = g[i]
                mi = (m[i] - gi) * b1 + gi
                vi = v[i] * b2 + (gi * gi) * c2
                m[i] = mi
                v[i] = vi
                p[i] = p[i] * decay_ - (mi / (math.sqrt(vi) * rs2 + eps_)) * step_
        ftz_exit(old)


def _adamax_kernel(p, g, m, u, clr, beta1, beta2, eps, wd, nblocks):
    n = p.size
    clr_ = cast_to(clr, p.dtype)
    b1 = cast_to(beta1, p.dtype)
    b2 = cast_to(beta2, p.dtype)
    eps_ = cast_to(eps, p.dtype)
    wd_ = cast_to(wd, p.dtype)
    has_wd = wd != 0.0
    for blk in prange(nblocks):
        old = ftz_enter()
        for i in range(uintp(blk * n // nblocks), uintp((blk + 1) * n // nblocks)):
            gi = p[i] * wd_ + g[i] if has_wd else g[i]
            mi = (m[i] - gi) * b1 + gi
            m[i] = mi
            ui = fast_max(u[i] * b2, abs(gi) + eps_)
            u[i] = ui
            p[i] -= (mi / ui) * clr_
        ftz_exit(old)


def _nadam_kernel(p, g, m, v, decay, c1, c2, bias2, beta1, beta2, eps, wd, nblocks):
    n = p.size
    decay_ = cast_to(decay, p.dtype)
    c1_ = cast_to(c1, p.dtype)
    c2_ = cast_to(c2, p.dtype)
    bias2_ = cast_to(bias2, p.dtype)
    b1 = cast_to(beta1, p.dtype)
    b2 = cast_to(beta2, p.dtype)
    k2 = cast_to(1.0 - beta2, p.dtype)
    eps_ = cast_to(eps, p.dtype)
    wd_ = cast_to(wd, p.dtype)
    has_wd = wd != 0.0
    has_decay = decay != 1.0
    for blk in prange(nblocks):
        old = ftz_enter()
        for i in range(uintp(blk * n // nblocks), uintp((blk + 1) * n // nblocks)):
            pi = p[i] * decay_ if has_decay else p[i]
            gi = pi * wd_ + g[i] if has_wd else g[i]
            mi = (m[i] - gi) * b1 + gi
            vi = v[i] * b2 + (gi * gi) * k2
            m[i] = mi
            v[i] = vi
            denom = math.sqrt(vi / bias2_) + eps_
            p[i] = (pi - (gi / denom) * c1_) - (mi / denom) * c2_
        ftz_exit(old)


def _clip_kernel(g, out, scale, clip, has_clip, nblocks):
    n = g.size
    scale_ = cast_to(scale, g.dtype)
    hi = cast_to(clip, g.dtype)
    lo = -hi
    has_scale = scale != 1.0
    for blk in prange(nblocks):
        old = ftz_enter()
        for i in range(uintp(blk * n // nblocks), uintp((blk + 1) * n // nblocks)):
            x = g[i] * scale_ if has_scale else g[i]
            if has_clip:
                # NaN fails both tests and passes through, as with np.clip.
                if x > hi:
                    x = hi
                elif x < lo:
                    x = lo
            out[i] = x
        ftz_exit(old)


def _sum_squares_kernel(x, partial, nblocks):
    n = x.size
    for blk in prange(nblocks):
        acc = 0.0
        for i in range(uintp(blk * n // nblocks), uintp((blk + 1) * n // nblocks)):
            xi = np.float64(x[i])
            acc += xi * xi
        partial[blk] = acc


_adagrad = LazyKernel(
    _adagrad_kernel,
    lambda T: (array(T, 1), array(T, 1, True), array(T, 1), _F64, _F64, _F64, types.intp),
)
def _rmsprop_signature(T):
    return (
        array(T, 1), array(T, 1, True), array(T, 1), array(T, 1), array(T, 1),
        _F64, _F64, _F64, _F64, _F64, types.intp,
    )


#: (centered, momentum) -> kernel
_rmsprop = {
    (False, False): LazyKernel(_rmsprop_plain_kernel, _rmsprop_signature),
    (False, True): LazyKernel(_rmsprop_momentum_kernel, _rmsprop_signature),
    (True, False): LazyKernel(_rmsprop_centered_kernel, _rmsprop_signature),
    (True, True): LazyKernel(_rmsprop_centered_momentum_kernel, _rmsprop_signature),
}
_adadelta = LazyKernel(
    _adadelta_kernel,
    lambda T: (
        array(T, 1), array(T, 1, True), array(T, 1), array(T, 1), _F64, _F64, _F64, _F64,
        types.intp,
    ),
)
_adamw = LazyKernel(
    _adamw_kernel,
    lambda T: (
        array(T, 1), array(T, 1, True), array(T, 1), array(T, 1), array(T, 1), types.boolean,
        _F64, _F64, _F64, _F64, _F64, _F64, types.intp,
    ),
)
_adamax = LazyKernel(
    _adamax_kernel,
    lambda T: (
        array(T, 1), array(T, 1, True), array(T, 1), array(T, 1), _F64, _F64, _F64, _F64, _F64,
        types.intp,
    ),
)
_nadam = LazyKernel(
    _nadam_kernel,
    lambda T: (
        array(T, 1), array(T, 1, True), array(T, 1), array(T, 1), _F64, _F64, _F64, _F64,
        _F64, _F64, _F64, _F64, types.intp,
    ),
)
_clip = LazyKernel(
    _clip_kernel,
    lambda T: (array(T, 1, True), array(T, 1), _F64, _F64, types.boolean, types.intp),
)
_sum_squares = LazyKernel(
    _sum_squares_kernel, lambda T: (array(T, 1, True), array(_F64, 1), types.intp)
)


def _flat(a):
    return a.reshape(-1)


def _launch(kernel: LazyKernel, dt: np.dtype, n: int, *args, nblocks: int | None = None) -> None:
    """Call ``kernel``'s build for ``dt`` suited to ``n`` elements (serial for one block or
    inside :class:`~fastnn.kernels.cpu.jit.serial_kernels`, see :meth:`LazyKernel.pick`) with
    ``*args`` and the block count."""
    kernel.pick(dt, n)(*args, num_blocks(n) if nblocks is None else nblocks)


# -- overrides ------------------------------------------------------------------------------------
@override("numba")
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
    """One AdaGrad step (``torch.optim.Adagrad`` rule) as one fused parallel pass; see the
    reference version for the rule. ``tmp`` and ``tmp2`` are unused."""
    dt = state_dtype(param, grad, accum)
    if dt is None:
        ref.adagrad_update(be, param, grad, accum, tmp, tmp2, step, lr, lr_decay, eps,
                           weight_decay)
        return
    p = _flat(param)
    clr = float(lr) / (1.0 + (step - 1) * float(lr_decay))
    _launch(_adagrad, dt, p.size, p, _flat(grad), _flat(accum), clr, float(eps),
            float(weight_decay))


@override("numba")
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
    """One RMSprop step (``torch.optim.RMSprop`` rule, ``rho`` = torch's ``alpha``) as one
    fused parallel pass; see the reference version for the rule. ``tmp``/``tmp2`` unused."""
    state = [square_avg]
    if centered:
        state.append(grad_avg)
    if momentum:
        state.append(buf)
    dt = None if any(s is None for s in state) else state_dtype(param, grad, *state)
    if dt is None:
        ref.rmsprop_update(be, param, grad, square_avg, grad_avg, buf, tmp, tmp2, lr, rho, eps,
                           weight_decay, momentum, centered)
        return
    p = _flat(param)
    _launch(
        _rmsprop[bool(centered), bool(momentum)],
        dt,
        p.size,
        p,
        _flat(grad),
        _flat(square_avg),
        _flat(grad_avg) if centered else p,  # unused without centering
        _flat(buf) if momentum else p,  # unused without momentum
        float(lr),
        float(rho),
        float(eps),
        float(weight_decay),
        float(momentum),
    )


@override("numba")
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
    """One AdaDelta step (``torch.optim.Adadelta`` rule) as one fused parallel pass; see the
    reference version for the rule. ``tmp`` and ``tmp2`` are unused."""
    dt = state_dtype(param, grad, square_avg, acc_delta)
    if dt is None:
        ref.adadelta_update(be, param, grad, square_avg, acc_delta, tmp, tmp2, lr, rho, eps,
                            weight_decay)
        return
    p = _flat(param)
    _launch(_adadelta, dt, p.size, p, _flat(grad), _flat(square_avg), _flat(acc_delta),
            float(lr), float(rho), float(eps), float(weight_decay))


@override("numba")
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
    """One AdamW step (``torch.optim.AdamW`` rule: decoupled decay, then Adam) as one fused
    parallel pass; see the reference version for the rule. ``tmp`` is unused."""
    state = (m, v, vmax) if amsgrad else (m, v)
    dt = None if vmax is None and amsgrad else state_dtype(param, grad, *state)
    if dt is None:
        ref.adamw_update(be, param, grad, m, v, vmax, tmp, step, lr, beta1, beta2, eps,
                         weight_decay, amsgrad)
        return
    p = _flat(param)
    _launch(
        _adamw, dt,
        p.size,
        p,
        _flat(grad),
        _flat(m),
        _flat(v),
        _flat(vmax) if amsgrad else p,  # unused without amsgrad
        bool(amsgrad),
        1.0 - float(lr) * float(weight_decay),
        float(lr) / (1.0 - beta1**step),
        1.0 / (1.0 - beta2**step) ** 0.5,
        float(beta1),
        float(beta2),
        float(eps),
    )


@override("numba")
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
    """One Adamax step (``torch.optim.Adamax`` rule) as one fused parallel pass; see the
    reference version for the rule. ``tmp`` is unused."""
    dt = state_dtype(param, grad, m, u)
    if dt is None:
        ref.adamax_update(be, param, grad, m, u, tmp, step, lr, beta1, beta2, eps, weight_decay)
        return
    p = _flat(param)
    _launch(_adamax, dt, p.size, p, _flat(grad), _flat(m), _flat(u),
            float(lr) / (1.0 - beta1**step), float(beta1), float(beta2), float(eps),
            float(weight_decay))


@override("numba")
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
    """One NAdam step (``torch.optim.NAdam`` rule) as one fused parallel pass; see the
    reference version for the rule. ``tmp`` and ``tmp2`` are unused."""
    dt = state_dtype(param, grad, m, v)
    if dt is None:
        ref.nadam_update(be, param, grad, m, v, tmp, tmp2, step, lr, beta1, beta2, eps,
                         weight_decay, momentum_decay, mu_product, decoupled_weight_decay)
        return
    if mu_product is None:
        mu_product = ref.nadam_mu_product(step, beta1, momentum_decay)
    c1, c2 = ref.nadam_coefficients(step, lr, beta1, momentum_decay, mu_product)
    decoupled = bool(weight_decay) and decoupled_weight_decay
    p = _flat(param)
    _launch(
        _nadam, dt,
        p.size,
        p,
        _flat(grad),
        _flat(m),
        _flat(v),
        1.0 - float(lr) * float(weight_decay) if decoupled else 1.0,
        c1,
        c2,
        1.0 - beta2**step,
        float(beta1),
        float(beta2),
        float(eps),
        0.0 if decoupled else float(weight_decay),
    )


@override("numba")
def clip_gradient(be, grad, out, scale: float = 1.0, clip_value: float | None = None):
    """out = clip(grad * scale, -clip_value, clip_value) in one parallel pass; ``grad`` is
    not written unless ``out is grad``. Returns ``out``."""
    dt = kernel_dtype(grad)
    same = out is grad
    if (
        dt is None
        or not is_kernel_array(out, dt, grad.shape)
        or not out.flags.writeable
        or (not same and np.may_share_memory(out, grad))
    ):
        return ref.clip_gradient(be, grad, out, scale, clip_value)
    g = _flat(grad)
    has_clip = clip_value is not None
    _launch(_clip, dt, g.size, g, _flat(out), float(scale),
            float(clip_value) if has_clip else 0.0, has_clip)
    return out


@override("numba")
def sum_of_squares(be, x) -> float:
    """The sum of ``x**2`` over every element as a Python float, accumulated in float64 by
    parallel blocks."""
    dt = kernel_dtype(x)
    if dt is None:
        return ref.sum_of_squares(be, x)
    flat = _flat(x)
    nblocks = num_blocks(flat.size)
    partial = np.empty(nblocks, dtype=np.float64)
    _launch(_sum_squares, dt, flat.size, flat, partial, nblocks=nblocks)
    return float(partial.sum())
