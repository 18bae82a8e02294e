"""CuPy-backend overrides of the optimizer updates beyond SGD and Adam and of gradient clipping,
launching the fused kernels of :mod:`fastnn.kernels.cuda.optimizers_extra_sources`.

Same contract as :mod:`fastnn.kernels.cuda.ops`: the names and signatures of the reference ops,
``grad`` never written, and anything the kernels do not take (host arrays, other dtypes,
strided views, partly overlapping buffers, missing state) goes to the reference version, which
runs on CuPy through ``be.xp``. One launch per parameter, one pass over its memory; the scratch
buffers ``tmp``/``tmp2`` are not needed. ``sum_of_squares`` stays with the reference
(``xp.vdot``, one cuBLAS dot).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fastnn.kernels.cuda.ops import (
    _device_arrays,
    _launch_elementwise,
    _no_partial_overlap,
    _scalar,
)
from fastnn.kernels.cuda.optimizers_extra_sources import (
    ADAMW_FLAGS,
    CLIP_FLAGS,
    NADAM_FLAGS,
    OPTIMIZER_EXTRA,
    RMSPROP_FLAGS,
    WEIGHT_DECAY_FLAG,
)
from fastnn.kernels.cuda.sources import DTYPES
from fastnn.kernels.reference import optimizers as ref
from fastnn.kernels.registry import override

_KERNEL_DTYPES = frozenset(DTYPES)


def _ready(be: Any, param: Any, grad: Any, *state: Any) -> bool:
    """Whether the kernels can take these arrays: CuPy, one float dtype, C-contiguous, one
    shape, and no two of them partly overlapping (state given as None is refused)."""
    arrays = (param, grad, *state)
    if any(a is None for a in arrays) or not _device_arrays(be, *arrays):
        return False
    if param.dtype.name not in _KERNEL_DTYPES:
        return False
    return all(a.shape == param.shape for a in arrays) and _no_partial_overlap(*arrays)


def _wd_flag(weight_decay: float) -> int:
    return WEIGHT_DECAY_FLAG if weight_decay else 0


@override("cupy")
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
    """One AdaGrad step (``torch.optim.Adagrad`` rule) in one elementwise kernel."""
    if not _ready(be, param, grad, accum):
        ref.adagrad_update(be, param, grad, accum, tmp, tmp2, step, lr, lr_decay, eps,
                           weight_decay)
        return
    dt, n = param.dtype, param.size
    clr = float(lr) / (1.0 + (step - 1) * float(lr_decay))
    args = (param, grad, accum, np.int64(n), _scalar(dt, clr), _scalar(dt, eps),
            _scalar(dt, weight_decay), np.int32(_wd_flag(weight_decay)))
    _launch_elementwise(OPTIMIZER_EXTRA, "fastnn_adagrad_update", dt, n, args)


@override("cupy")
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
    """One RMSprop step (``torch.optim.RMSprop`` rule) in one elementwise kernel."""
    state = [square_avg]
    if centered:
        state.append(grad_avg)
    if momentum:
        state.append(buf)
    if not _ready(be, param, grad, *state):
        ref.rmsprop_update(be, param, grad, square_avg, grad_avg, buf, tmp, tmp2, lr, rho, eps,
                           weight_decay, momentum, centered)
        return
    flags = 0
    if weight_decay:
        flags |= RMSPROP_FLAGS["weight_decay"]
    if centered:
        flags |= RMSPROP_FLAGS["centered"]
    if momentum:
        flags |= RMSPROP_FLAGS["momentum"]
    dt, n = param.dtype, param.size
    args = (
        param,
        grad,
        square_avg,
        grad_avg if centered else square_avg,  # unused by the kernel without centering
        buf if momentum else square_avg,  # unused by the kernel without momentum
        np.int64(n),
        _scalar(dt, lr),
        _scalar(dt, rho),
        _scalar(dt, 1.0 - rho),
        _scalar(dt, eps),
        _scalar(dt, weight_decay),
        _scalar(dt, momentum),
        np.int32(flags),
    )
    _launch_elementwise(OPTIMIZER_EXTRA, "fastnn_rmsprop_update", dt, n, args)


@override("cupy")
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
    """One AdaDelta step (``torch.optim.Adadelta`` rule) in one elementwise kernel."""
    if not _ready(be, param, grad, square_avg, acc_delta):
        ref.adadelta_update(be, param, grad, square_avg, acc_delta, tmp, tmp2, lr, rho, eps,
                            weight_decay)
        return
    dt, n = param.dtype, param.size
    args = (param, grad, square_avg, acc_delta, np.int64(n), _scalar(dt, lr), _scalar(dt, rho),
            _scalar(dt, 1.0 - rho), _scalar(dt, eps), _scalar(dt, weight_decay),
            np.int32(_wd_flag(weight_decay)))
    _launch_elementwise(OPTIMIZER_EXTRA, "fastnn_adadelta_update", dt, n, args)


@override("cupy")
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
    """One AdamW step (``torch.optim.AdamW`` rule) in one elementwise kernel."""
    state = (m, v, vmax) if amsgrad else (m, v)
    if not _ready(be, param, grad, *state):
        ref.adamw_update(be, param, grad, m, v, vmax, tmp, step, lr, beta1, beta2, eps,
                         weight_decay, amsgrad)
        return
    flags = 0
    if weight_decay:
        flags |= ADAMW_FLAGS["decay"]
    if amsgrad:
        flags |= ADAMW_FLAGS["amsgrad"]
    dt, n = param.dtype, param.size
    args = (
        param,
        grad,
        m,
        v,
        vmax if amsgrad else v,  # unused by the kernel without amsgrad
        np.int64(n),
        _scalar(dt, 1.0 - lr * weight_decay),
        _scalar(dt, lr / (1.0 - beta1**step)),
        _scalar(dt, beta1),
        _scalar(dt, beta2),
        _scalar(dt, 1.0 - beta2),
        _scalar(dt, 1.0 / (1.0 - beta2**step) ** 0.5),
        _scalar(dt, eps),
        np.int32(flags),
    )
    _launch_elementwise(OPTIMIZER_EXTRA, "fastnn_adamw_update", dt, n, args)


@override("cupy")
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
    """One Adamax step (``torch.optim.Adamax`` rule) in one elementwise kernel."""
    if not _ready(be, param, grad, m, u):
        ref.adamax_update(be, param, grad, m, u, tmp, step, lr, beta1, beta2, eps, weight_decay)
        return
    dt, n = param.dtype, param.size
    args = (param, grad, m, u, np.int64(n), _scalar(dt, lr / (1.0 - beta1**step)),
            _scalar(dt, beta1), _scalar(dt, beta2), _scalar(dt, eps), _scalar(dt, weight_decay),
            np.int32(_wd_flag(weight_decay)))
    _launch_elementwise(OPTIMIZER_EXTRA, "fastnn_adamax_update", dt, n, args)


@override("cupy")
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
    """One NAdam step (``torch.optim.NAdam`` rule) in one elementwise kernel."""
    if not _ready(be, param, grad, m, v):
        ref.nadam_update(be, param, grad, m, v, tmp, tmp2, step, lr, beta1, beta2, eps,
                         weight_decay, momentum_decay, mu_product, decoupled_weight_decay)
        return
    if mu_product is None:
        mu_product = ref.nadam_mu_product(step, beta1, momentum_decay)
    c1, c2 = ref.nadam_coefficients(step, lr, beta1, momentum_decay, mu_product)
    flags = 0
    if weight_decay:
        flags |= NADAM_FLAGS["decoupled" if decoupled_weight_decay else "weight_decay"]
    dt, n = param.dtype, param.size
    args = (
        param,
        grad,
        m,
        v,
        np.int64(n),
        _scalar(dt, 1.0 - lr * weight_decay),
        _scalar(dt, c1),
        _scalar(dt, c2),
        _scalar(dt, 1.0 - beta2**step),
        _scalar(dt, beta1),
        _scalar(dt, beta2),
        _scalar(dt, 1.0 - beta2),
        _scalar(dt, eps),
        _scalar(dt, weight_decay),
        np.int32(flags),
    )
    _launch_elementwise(OPTIMIZER_EXTRA, "fastnn_nadam_update", dt, n, args)


@override("cupy")
def clip_gradient(be, grad, out, scale: float = 1.0, clip_value: float | None = None):
    """out = clip(grad * scale, -clip_value, clip_value) in one elementwise kernel; ``grad``
    is not written unless ``out is grad``. Returns ``out``."""
    if not _ready(be, grad, out):
        return ref.clip_gradient(be, grad, out, scale, clip_value)
    flags = 0
    if scale != 1.0:
        flags |= CLIP_FLAGS["scale"]
    if clip_value is not None:
        flags |= CLIP_FLAGS["clip"]
    dt, n = grad.dtype, grad.size
    args = (grad, out, np.int64(n), _scalar(dt, scale),
            _scalar(dt, 0.0 if clip_value is None else clip_value), np.int32(flags))
    _launch_elementwise(OPTIMIZER_EXTRA, "fastnn_clip_gradient", dt, n, args)
    return out
