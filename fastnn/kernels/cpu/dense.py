"""Numba overrides of the matrix ops: ``matmul``, ``prepare_rhs``, ``linear``,
``linear_backward``.

The GEMMs run in the backend's own kernel (:mod:`fastnn.kernels.cpu.gemm`) where it takes the
operands, else in BLAS (the reference). At batch size 1 the weight gradient
``dW = x.T @ dz`` is an outer product, which neither ``np.matmul`` (inner dimension 1 falls
off BLAS: 400 us for 784x512, PERF-NOTES) nor ``np.outer`` (a broadcast multiply, 73 us) does
at memory speed; ``_outer_kernel`` writes it row by row with the row loop vectorised (14 us,
float32 784x512, one core). Every other case, and any input the kernel does not take, goes to
the reference.
"""

from __future__ import annotations

import numpy as np
from numba import prange, types

from fastnn.kernels.cpu import gemm as _gemm
from fastnn.kernels.cpu.jit import (
    LazyKernel,
    array,
    block_bounds,
    is_kernel_array,
    is_kernel_output,
    kernel_dtype,
    num_row_blocks,
)
from fastnn.kernels.reference.dense import linear as _ref_linear
from fastnn.kernels.reference.dense import linear_backward as _ref_linear_backward
from fastnn.kernels.reference.dense import matmul as _ref_matmul
from fastnn.kernels.registry import override


def _outer_kernel(x, dz, dW, nblocks):
    rows, cols = dW.shape
    ncols = np.uint64(cols)
    for blk in prange(nblocks):
        r0, r1 = block_bounds(blk, rows, nblocks)
        for i in range(r0, r1):
            xi = x[i]
            for j in range(ncols):
                dW[i, j] = xi * dz[j]


_outer = LazyKernel(
    _outer_kernel,
    lambda T: (array(T, 1, True), array(T, 1, True), array(T, 2), types.intp),
)


def _product(a, b, out):
    """``a @ b`` into ``out`` (allocated when None) by the backend's GEMM, or None when the
    GEMM does not take the operands."""
    if not _gemm.takes(a, b):
        return None
    if out is None:
        out = np.empty((a.shape[0], b.shape[1]), dtype=a.dtype)
    return out if _gemm.gemm(a, b, out) else None


@override("numba")
def matmul(be, a, b, out=None):
    """a @ b: the backend's GEMM for 2-D float operands it takes (``b`` may come from
    ``prepare_rhs``), else BLAS."""
    y = _product(a, b, out)
    if y is not None:
        return y
    if isinstance(b, _gemm.PackedMatrix):
        b = b.source
    return _ref_matmul(be, a, b, out)


@override("numba")
def prepare_rhs(be, b):
    """``b`` packed into the GEMM's panels (see the reference), or ``b`` itself when the
    GEMM does not take it."""
    packed = _gemm.pack(b)
    return b if packed is None else packed


@override("numba")
def linear(be, x, W, b=None, out=None):
    """y = x @ W + b (see the reference) with the GEMM of this backend."""
    y = _product(x, W, out)
    if y is None:
        if isinstance(W, _gemm.PackedMatrix):
            W = W.source
        return _ref_linear(be, x, W, b, out)
    if b is not None:
        y += b
    return y


@override("numba")
def linear_backward(be, dz, x, W, dW=None, db=None, dx=None, need_dx: bool = True):
    """Gradients of y = x @ W + b given dz = dL/dy (see the reference): the GEMMs in this
    backend's kernel; at batch size 1 the weight gradient by a vectorised outer product."""
    dt = kernel_dtype(dz)
    if (
        dW is not None
        and dt is not None
        and dz.ndim == 2
        and dz.shape[0] == 1
        and is_kernel_array(x, dt)
        and x.ndim == 2
        and x.shape[0] == 1
        and is_kernel_output(dW, dt, (x.shape[1], dz.shape[1]), x, dz)
    ):
        rows, cols = dW.shape
        _outer.pick(dt, dW.size)(x[0], dz[0], dW, num_row_blocks(rows, cols))
        dW = None
    if (dW is not None and isinstance(x, np.ndarray) and x.ndim == 2
            and _gemm.gemm(x.T, dz, dW)):
        dW = None
    dx_done = None
    if need_dx and isinstance(W, np.ndarray) and W.ndim == 2:
        dx_done = _product(dz, W.T, dx)
    if dx_done is not None:
        _ref_linear_backward(be, dz, x, W, dW, db, None, need_dx=False)
        return dx_done
    return _ref_linear_backward(be, dz, x, W, dW, db, dx, need_dx)
