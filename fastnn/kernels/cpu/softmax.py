"""Numba overrides of softmax, log-softmax and the softmax backward pass (last axis).

Each kernel runs ``prange`` over blocks of whole rows; a row is read two or three times while
it is hot in cache. Row maxima use the vectorisable, NaN-propagating ``fast_max``, and exp the
vectorisable ``fast_exp``. Row sums add chunks of ``CHUNK`` items summed in the array's dtype
(full SIMD width) into a float64 total.

- ``_softmax_kernel``: max, then ``e = exp(x - max)`` stored and summed, then scaled by
  ``1 / sum``. With ``log`` set: ``out = (x - max) - log(sum(exp(x - max)))``.
- ``_softmax_backward_kernel``: ``s = sum(dy * y)`` then ``out = (dy - s) * y``.

Inputs the kernels do not take (not a C-contiguous float32/float64 ndarray, mixed dtypes,
0-d or empty arrays, an ``out`` partly overlapping an input) go to the reference op.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange, types

from fastnn.kernels.cpu.fastexp import fast_exp, fast_max
from fastnn.kernels.cpu.jit import (
    LazyKernel,
    array,
    cast_to,
    chunk_bounds,
    is_kernel_array,
    is_kernel_output,
    kernel_dtype,
    num_chunks,
    num_row_blocks,
)
from fastnn.kernels.cpu.threads import ftz_enter, ftz_exit
from fastnn.kernels.reference.softmax import log_softmax as _ref_log_softmax
from fastnn.kernels.reference.softmax import softmax as _ref_softmax
from fastnn.kernels.reference.softmax import softmax_backward as _ref_softmax_backward
from fastnn.kernels.registry import override


def _softmax_kernel(x, out, log, nblocks):
    rows, cols = x.shape
    for blk in prange(nblocks):
        old = ftz_enter()
        for i in range(blk * rows // nblocks, (blk + 1) * rows // nblocks):
            m = cast_to(-np.inf, x.dtype)
            for j in range(cols):
                m = fast_max(m, x[i, j])
            total = 0.0
            for c in range(num_chunks(cols)):
                lo, hi = chunk_bounds(c, cols)
                part = cast_to(0.0, x.dtype)
                if log:
                    for j in range(lo, hi):
                        part += fast_exp(x[i, j] - m)
                else:
                    for j in range(lo, hi):
                        e = fast_exp(x[i, j] - m)
                        out[i, j] = e
                        part += e
                total += part
            if log:
                log_total = cast_to(math.log(total), x.dtype)
                for j in range(cols):
                    out[i, j] = (x[i, j] - m) - log_total
            else:
                inv = cast_to(1.0 / total, x.dtype)
                for j in range(cols):
                    out[i, j] *= inv
        ftz_exit(old)


def _softmax_backward_kernel(dy, y, out, nblocks):
    rows, cols = dy.shape
    for blk in prange(nblocks):
        old = ftz_enter()
        for i in range(blk * rows // nblocks, (blk + 1) * rows // nblocks):
            total = 0.0
            for c in range(num_chunks(cols)):
                lo, hi = chunk_bounds(c, cols)
                part = cast_to(0.0, dy.dtype)
                for j in range(lo, hi):
                    part += dy[i, j] * y[i, j]
                total += part
            s = cast_to(total, dy.dtype)
            for j in range(cols):
                out[i, j] = (dy[i, j] - s) * y[i, j]
        ftz_exit(old)


_softmax = LazyKernel(
    _softmax_kernel,
    lambda T: (array(T, 2, True), array(T, 2), types.boolean, types.intp),
)
_softmax_backward = LazyKernel(
    _softmax_backward_kernel,
    lambda T: (array(T, 2, True), array(T, 2, True), array(T, 2), types.intp),
)


def _takes(x, out, *inputs) -> np.dtype | None:
    """The dtype to run the kernel in, or None when the reference must handle the call."""
    dt = kernel_dtype(x)
    if dt is None or x.ndim < 1 or x.size == 0:
        return None
    if out is not None and not is_kernel_output(out, dt, x.shape, x, *inputs):
        return None
    return dt


def _run_softmax(x, out, log: bool):
    dt = _takes(x, out)
    if dt is None:
        return None
    if out is None:
        out = np.empty_like(x)
    cols = x.shape[-1]
    x2 = x.reshape(-1, cols)
    nblocks = num_row_blocks(x2.shape[0], cols)
    _softmax.pick(dt, x.size)(x2, out.reshape(-1, cols), log, nblocks)
    return out


@override("numba")
def softmax(be, x, out=None):
    """Softmax along the last axis, shifted by the row maximum (fused parallel kernel)."""
    result = _run_softmax(x, out, False)
    return _ref_softmax(be, x, out) if result is None else result


@override("numba")
def softmax_backward(be, dy, y, out=None):
    """dx = y * (dy - sum(dy * y, axis=-1)) for y = softmax(x) (fused parallel kernel)."""
    dt = _takes(dy, out, y)
    if dt is None or not is_kernel_array(y, dt, dy.shape):
        return _ref_softmax_backward(be, dy, y, out)
    if out is None:
        out = np.empty_like(dy)
    cols = dy.shape[-1]
    dy2 = dy.reshape(-1, cols)
    rows = dy2.shape[0]
    nblocks = num_row_blocks(rows, cols)
    _softmax_backward.pick(dt, dy.size)(dy2, y.reshape(-1, cols), out.reshape(-1, cols), nblocks)
    return out


@override("numba")
def log_softmax(be, x, out=None):
    """log(softmax(x)) along the last axis, without forming softmax (fused parallel kernel)."""
    result = _run_softmax(x, out, True)
    return _ref_log_softmax(be, x, out) if result is None else result
