"""Numba override of ``linear_backward`` for a batch of one sample.

The GEMMs of a Dense layer stay with BLAS. At batch size 1 the weight gradient
``dW = x.T @ dz`` is an outer product, which neither ``np.matmul`` (inner dimension 1 falls
off BLAS: 400 us for 784x512, PERF-NOTES) nor ``np.outer`` (a broadcast multiply, 73 us) does
at memory speed; ``_outer_kernel`` writes it row by row with the row loop vectorised (14 us,
float32 784x512, one core). Every other case, and any input the kernel does not take, goes to
the reference.
"""

from __future__ import annotations

import numpy as np
from numba import prange, types

from fastnn.kernels.cpu.jit import (
    LazyKernel,
    array,
    block_bounds,
    is_kernel_array,
    is_kernel_output,
    kernel_dtype,
    num_row_blocks,
)
from fastnn.kernels.reference.dense import linear_backward as _ref_linear_backward
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


@override("numba")
def linear_backward(be, dz, x, W, dW=None, db=None, dx=None, need_dx: bool = True):
    """Gradients of y = x @ W + b given dz = dL/dy (see the reference); at batch size 1 the
    weight gradient is written by a vectorised outer-product kernel."""
    dt = kernel_dtype(dz)
    if (
        dW is None
        or dt is None
        or dz.ndim != 2
        or dz.shape[0] != 1
        or not is_kernel_array(x, dt)
        or x.ndim != 2
        or x.shape[0] != 1
        or not is_kernel_output(dW, dt, (x.shape[1], dz.shape[1]), x, dz)
    ):
        return _ref_linear_backward(be, dz, x, W, dW, db, dx, need_dx)
    rows, cols = dW.shape
    _outer.pick(dt, dW.size)(x[0], dz[0], dW, num_row_blocks(rows, cols))
    return _ref_linear_backward(be, dz, x, W, None, db, dx, need_dx)
