"""Numba override of ``linear_backward_sgd``: a Dense layer's weight gradient, input gradient
and SGD step in one pass over the weight.

For a few rows (batch size 1 in particular) the unfused backward writes the outer product
``dW`` (a pass over the weight), reads ``W`` for ``dx = dz @ W.T`` (a second) and the SGD
step reads ``W``, ``dW`` and the momentum buffer and writes ``W`` and the buffer (a third).
Here each row of ``W`` is read once into cache: its ``dx`` entries, its gradient row and its
step are computed while it is there. Rows are split between threads; each element is
computed by one thread in a fixed order, so the result does not depend on the thread count.
The step follows ``sgd_update``'s kernel expression for expression. Above :data:`MAX_ROWS`
rows of ``x`` (where the weight gradient is a GEMM worth its own kernel), below
:data:`MIN_COLS` columns of ``W`` and for inputs the kernel does not take, the unfused ops
run.
"""

from __future__ import annotations

import numpy as np
from numba import prange, types

from fastnn.kernels.cpu.jit import (
    LazyKernel,
    array,
    block_bounds,
    cast_to,
    is_kernel_array,
    is_kernel_output,
    kept_apart,
    kernel_dtype,
    num_row_blocks,
)
from fastnn.kernels.cpu.threads import ftz_enter, ftz_exit
from fastnn.kernels.registry import override

#: Most rows of ``x`` the fused kernel takes; larger batches run the GEMM path.
MAX_ROWS = 4

#: Fewest columns of ``W`` the fused kernel takes: it works row by row, and on rows this
#: short its loop overhead exceeds the pass it saves (512x10: 18 us fused, 10 us unfused).
MIN_COLS = 64


def _linear_sgd_kernel(x, dz, W, dW, buf, dx, need_dx, lr, momentum, damp, wd, nesterov,
                       first_step, nblocks):
    n = x.shape[0]
    rows, cols = W.shape
    ncols = np.uint64(cols)
    lr_ = cast_to(lr, W.dtype)
    mom = cast_to(momentum, W.dtype)
    damp_ = cast_to(damp, W.dtype)
    wd_ = cast_to(wd, W.dtype)
    zero = cast_to(0.0, W.dtype)
    has_wd = wd != 0.0
    for blk in prange(nblocks):
        old = ftz_enter()
        r0, r1 = block_bounds(blk, rows, nblocks)
        for i in range(r0, r1):
            w = W[i]
            g = dW[i]
            if need_dx:
                for s in range(n):
                    acc = zero
                    dzs = dz[s]
                    for j in range(ncols):
                        acc += w[j] * dzs[j]
                    dx[s, i] = acc
            xi = x[0, i]
            dz0 = dz[0]
            for j in range(ncols):
                g[j] = xi * dz0[j]
            for s in range(1, n):
                xs = x[s, i]
                dzs = dz[s]
                for j in range(ncols):
                    g[j] += xs * dzs[j]
            if momentum == 0.0:
                for j in range(ncols):
                    gj = g[j] + wd_ * w[j] if has_wd else g[j]
                    w[j] -= lr_ * gj
            else:
                b = buf[i]
                if first_step:
                    for j in range(ncols):
                        gj = g[j] + wd_ * w[j] if has_wd else g[j]
                        b[j] = gj
                        upd = gj + mom * gj if nesterov else gj
                        w[j] -= lr_ * upd
                else:
                    for j in range(ncols):
                        gj = g[j] + wd_ * w[j] if has_wd else g[j]
                        bj = mom * b[j] + damp_ * gj
                        b[j] = bj
                        upd = gj + mom * bj if nesterov else bj
                        w[j] -= lr_ * upd
        ftz_exit(old)


_linear_sgd = LazyKernel(
    _linear_sgd_kernel,
    lambda T: (
        array(T, 2, True),
        array(T, 2, True),
        array(T, 2),
        array(T, 2),
        array(T, 2),
        array(T, 2),
        types.boolean,
        types.float64,
        types.float64,
        types.float64,
        types.float64,
        types.boolean,
        types.boolean,
        types.intp,
    ),
)


def _fusable(dz, x, W, dW, buf, dx, need_dx: bool, momentum: float) -> np.dtype | None:
    """The dtype to run the fused kernel in, or None when it does not take these arrays."""
    dt = kernel_dtype(W)
    if dt is None or W.ndim != 2 or not W.flags.writeable:
        return None
    rows, cols = W.shape
    if cols < MIN_COLS or not (is_kernel_array(dz, dt) and dz.ndim == 2 and dz.shape[1] == cols):
        return None
    n = dz.shape[0]
    if not 1 <= n <= MAX_ROWS or not is_kernel_array(x, dt, (n, rows)):
        return None
    written = [W, dW]
    if not is_kernel_output(dW, dt, (rows, cols)):
        return None
    if momentum:
        if not is_kernel_output(buf, dt, (rows, cols)):
            return None
        written.append(buf)
    if need_dx and dx is not None:
        if not is_kernel_output(dx, dt, (n, rows)):
            return None
        written.append(dx)
    return dt if kept_apart(written, [dz, x]) else None


@override("numba")
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
    """The weight's backward and SGD step (see the reference) in one pass over ``W`` for up
    to :data:`MAX_ROWS` rows; else this backend's ``linear_backward`` and ``sgd_update``."""
    dt = _fusable(dz, x, W, dW, buf, dx, need_dx, momentum)
    if dt is None:
        dx = be.linear_backward(dz, x, W, dW=dW, db=None, dx=dx, need_dx=need_dx)
        be.sgd_update(W, dW, buf=buf, tmp=tmp, lr=lr, momentum=momentum,
                      dampening=dampening, nesterov=nesterov, weight_decay=weight_decay,
                      first_step=first_step)
        return dx
    rows, cols = W.shape
    if need_dx and dx is None:
        dx = np.empty((dz.shape[0], rows), dtype=dt)
    dx_arg = dx if need_dx else dW  # an unused stand-in of the right type
    # Work: the items of W, dW and buf the pass touches.
    _linear_sgd.pick(dt, 3 * W.size)(
        x, dz, W, dW, buf if momentum else dW, dx_arg, bool(need_dx), float(lr),
        float(momentum), 1.0 - float(dampening), float(weight_decay), bool(nesterov),
        bool(first_step), num_row_blocks(rows, cols),
    )
    return dx if need_dx else None
