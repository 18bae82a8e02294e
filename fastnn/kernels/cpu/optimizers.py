"""Numba overrides of the in-place optimizer updates (``torch.optim`` rules), one fused pass.

Each update reads every parameter-sized array once and writes the parameter and its state
once, in a ``prange`` over blocks of the flattened arrays; ``tmp`` is not needed and not
touched. Hyper-parameters are rounded to the parameter's dtype first, as NumPy does with
Python scalars, so float32 updates compute in float32.

- ``_sgd_kernel``: ``g = grad + wd * p``; with momentum ``buf = g`` on the first step, else
  ``buf = momentum * buf + (1 - dampening) * g``; Nesterov uses ``g + momentum * buf``;
  then ``p -= lr * update``.
- ``_adam_kernel``: ``g = grad + wd * p``; ``m = b1 m + (1 - b1) g``;
  ``v = b2 v + (1 - b2) g^2``; ``v_hat = max(vmax, v)`` (stored back) with ``amsgrad``, else
  ``v``; ``p -= lr / (1 - b1^t) * m / (sqrt(v_hat) / sqrt(1 - b2^t) + eps)``.

Subnormals (``g^2`` underflows in late training) are flushed inside the kernels (see
``threads``). Inputs the kernels do not take (not C-contiguous float32/float64 ndarrays of one
dtype and shape, overlapping state buffers, a missing ``buf``/``vmax``) go to the reference.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange, types

from fastnn.kernels.cpu.fastexp import fast_max
from fastnn.kernels.cpu.jit import (
    LazyKernel,
    array,
    block_bounds,
    cast_to,
    is_kernel_array,
    kept_apart,
    kernel_dtype,
    num_blocks,
)
from fastnn.kernels.cpu.threads import ftz_enter, ftz_exit
from fastnn.kernels.reference.optimizers import adam_update as _ref_adam_update
from fastnn.kernels.reference.optimizers import sgd_update as _ref_sgd_update
from fastnn.kernels.registry import override


def _sgd_kernel(p, g, buf, lr, momentum, damp, wd, nesterov, first_step, nblocks):
    n = p.size
    lr_ = cast_to(lr, p.dtype)
    mom = cast_to(momentum, p.dtype)
    damp_ = cast_to(damp, p.dtype)
    wd_ = cast_to(wd, p.dtype)
    has_wd = wd != 0.0
    for blk in prange(nblocks):
        old = ftz_enter()
        lo, hi = block_bounds(blk, n, nblocks)
        if momentum == 0.0:
            for i in range(lo, hi):
                gi = g[i] + wd_ * p[i] if has_wd else g[i]
                p[i] -= lr_ * gi
        elif first_step:
            for i in range(lo, hi):
                gi = g[i] + wd_ * p[i] if has_wd else g[i]
                buf[i] = gi
                upd = gi + mom * gi if nesterov else gi
                p[i] -= lr_ * upd
        else:
            for i in range(lo, hi):
                gi = g[i] + wd_ * p[i] if has_wd else g[i]
                b = mom * buf[i] + damp_ * gi
                buf[i] = b
                upd = gi + mom * b if nesterov else b
                p[i] -= lr_ * upd
        ftz_exit(old)


def _adam_kernel(
    p, g, m, v, vmax, amsgrad, step_size, inv_sqrt_bias2, beta1, beta2, eps, wd, nblocks
):
    n = p.size
    step_ = cast_to(step_size, p.dtype)
    rs2 = cast_to(inv_sqrt_bias2, p.dtype)
    b1 = cast_to(beta1, p.dtype)
    b2 = cast_to(beta2, p.dtype)
    c1 = cast_to(1.0 - beta1, p.dtype)
    c2 = cast_to(1.0 - beta2, p.dtype)
    eps_ = cast_to(eps, p.dtype)
    wd_ = cast_to(wd, p.dtype)
    has_wd = wd != 0.0
    for blk in prange(nblocks):
        old = ftz_enter()
        lo, hi = block_bounds(blk, n, nblocks)
        if amsgrad:
            for i in range(lo, hi):
                gi = g[i] + wd_ * p[i] if has_wd else g[i]
                mi = b1 * m[i] + c1 * gi
                vi = b2 * v[i] + c2 * (gi * gi)
                m[i] = mi
                v[i] = vi
                vh = fast_max(vmax[i], vi)
                vmax[i] = vh
                p[i] -= mi / (math.sqrt(vh) * rs2 + eps_) * step_
        else:
            for i in range(lo, hi):
                gi = g[i] + wd_ * p[i] if has_wd else g[i]
                mi = b1 * m[i] + c1 * gi
                vi = b2 * v[i] + c2 * (gi * gi)
                m[i] = mi
                v[i] = vi
                p[i] -= mi / (math.sqrt(vi) * rs2 + eps_) * step_
        ftz_exit(old)


_sgd = LazyKernel(
    _sgd_kernel,
    lambda T: (
        array(T, 1),
        array(T, 1, True),
        array(T, 1),
        types.float64,
        types.float64,
        types.float64,
        types.float64,
        types.boolean,
        types.boolean,
        types.intp,
    ),
)
_adam = LazyKernel(
    _adam_kernel,
    lambda T: (
        array(T, 1),
        array(T, 1, True),
        array(T, 1),
        array(T, 1),
        array(T, 1),
        types.boolean,
        types.float64,
        types.float64,
        types.float64,
        types.float64,
        types.float64,
        types.float64,
        types.intp,
    ),
)


def state_dtype(param, grad, *state) -> np.dtype | None:
    """The dtype to run in when ``param``, ``grad`` and the ``state`` buffers can go to a
    kernel: one dtype and shape, C-contiguous, writeable, written buffers not overlapping
    anything else; else None."""
    dt = kernel_dtype(param)
    if dt is None or not param.flags.writeable:
        return None
    if not is_kernel_array(grad, dt, param.shape):
        return None
    written = [param]
    for s in state:
        if not is_kernel_array(s, dt, param.shape) or not s.flags.writeable:
            return None
        written.append(s)
    return dt if kept_apart(written, [grad]) else None


@override("numba")
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
    """One SGD step, ``torch.optim.SGD`` rule, as one fused parallel pass.

    g = grad + wd * p; with momentum, buf = g on the first step, else
    buf = momentum * buf + (1 - dampening) * g, and g = g + momentum * buf (Nesterov)
    or g = buf; then p -= lr * g. ``tmp`` is accepted for the reference's sake and unused.
    """
    state = (buf,) if momentum else ()
    dt = state_dtype(param, grad, *state)
    if dt is None:
        _ref_sgd_update(
            be, param, grad, buf, tmp, lr, momentum, dampening, nesterov, weight_decay,
            first_step,
        )
        return
    p = param.reshape(-1)
    nblocks = num_blocks(p.size)
    _sgd.pick(dt, p.size)(
        p,
        grad.reshape(-1),
        buf.reshape(-1) if momentum else p,
        float(lr),
        float(momentum),
        1.0 - float(dampening),
        float(weight_decay),
        bool(nesterov),
        bool(first_step),
        nblocks,
    )


@override("numba")
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
    """One Adam step, ``torch.optim.Adam`` rule (``eps`` added outside the square root), as
    one fused parallel pass.

    g = grad + wd * p; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
    p -= lr / (1 - b1^t) * m / (sqrt(v_hat) / sqrt(1 - b2^t) + eps), where v_hat is v,
    or its running maximum ``vmax`` when ``amsgrad``. ``tmp`` is unused.
    """
    state = (m, v, vmax) if amsgrad else (m, v)
    dt = state_dtype(param, grad, *state)
    if dt is None:
        _ref_adam_update(
            be, param, grad, m, v, vmax, tmp, step, lr, beta1, beta2, eps, weight_decay,
            amsgrad,
        )
        return
    bias1 = 1.0 - beta1**step
    bias2 = 1.0 - beta2**step
    p = param.reshape(-1)
    nblocks = num_blocks(p.size)
    _adam.pick(dt, p.size)(
        p,
        grad.reshape(-1),
        m.reshape(-1),
        v.reshape(-1),
        vmax.reshape(-1) if amsgrad else p,
        bool(amsgrad),
        float(lr) / bias1,
        1.0 / bias2**0.5,
        float(beta1),
        float(beta2),
        float(eps),
        float(weight_decay),
        nblocks,
    )
