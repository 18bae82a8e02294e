"""CuPy-backend overrides of the convolution and pooling ops (CUDA kernels of
:mod:`fastnn.kernels.cuda.conv_sources`, GEMMs on cuBLAS through ``cupy.matmul``).

Same names, signatures and contracts as :mod:`fastnn.kernels.reference.conv`. The host code
validates before it launches: CuPy arrays on the current device, one float dtype (float32 or
float64), C-contiguous, non-empty, outputs of the right shape that do not overlap the inputs;
anything else goes to the reference version, which runs on CuPy through ``be.xp``. Kernel
arguments follow the C signatures exactly: geometry as ``numpy.int32``, element counts as
``numpy.int64``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fastnn.kernels.cuda.compile import get_kernel, multiprocessor_count
from fastnn.kernels.cuda.conv_sources import CONV, CONV_THREADS
from fastnn.kernels.cuda.sources import DTYPES
from fastnn.kernels.reference import conv as ref
from fastnn.kernels.registry import override

Pair = tuple[int, int]
Quad = tuple[int, int, int, int]

_FLOAT_DTYPES = frozenset(np.dtype(name) for name in DTYPES)
_MAX_GRID_X = 2**31 - 1
_BLOCKS_PER_SM = 32


def _device_arrays(be: Any, *arrays: Any) -> bool:
    """Whether every array is a non-empty C-contiguous float CuPy array on the current
    device, all of one dtype."""
    xp = be.xp
    device = xp.cuda.runtime.getDevice()
    dtype = None
    for a in arrays:
        if not isinstance(a, xp.ndarray):
            return False
        if a.dtype not in _FLOAT_DTYPES or not a.flags.c_contiguous or a.size == 0:
            return False
        if dtype is None:
            dtype = a.dtype
        elif a.dtype != dtype:
            return False
        if a.device.id != device:
            return False
    return True


def _disjoint(a: Any, *others: Any) -> bool:
    """Whether ``a`` shares no memory with any of ``others`` (None entries ignored)."""
    a0, a1 = a.data.ptr, a.data.ptr + a.nbytes
    for b in others:
        if b is None:
            continue
        b0, b1 = b.data.ptr, b.data.ptr + b.nbytes
        if a0 < b1 and b0 < a1:
            return False
    return True


def _out_ok(be: Any, out: Any, shape: tuple[int, ...], like: Any, *inputs: Any) -> bool:
    """Whether ``out`` is None or a kernel-ready buffer of ``shape`` disjoint from inputs."""
    if out is None:
        return True
    return (
        _device_arrays(be, out, like) and tuple(out.shape) == tuple(shape)
        and _disjoint(out, *inputs)
    )


def _index_ok(be: Any, a: Any, shape: tuple[int, ...]) -> bool:
    xp = be.xp
    return (
        isinstance(a, xp.ndarray) and a.dtype == np.int32 and a.flags.c_contiguous
        and tuple(a.shape) == tuple(shape) and a.device.id == xp.cuda.runtime.getDevice()
    )


def _launch(base: str, dtype: Any, total: int, args: tuple) -> None:
    blocks = -(-total // CONV_THREADS)
    blocks = max(1, min(blocks, multiprocessor_count() * _BLOCKS_PER_SM, _MAX_GRID_X))
    get_kernel(CONV, base, dtype)((blocks,), (CONV_THREADS,), args)


def _geometry(x_shape, kernel_size: Pair, stride: Pair, padding: Quad, dilation: Pair,
              out_hw: Pair) -> tuple:
    """The 14 int32 geometry arguments (n, c, h, w, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow)."""
    n, c, h, w = x_shape
    values = (n, c, h, w, *kernel_size, *stride, padding[0], padding[2], *dilation, *out_hw)
    return tuple(np.int32(v) for v in values)


def _fits_int32(*sizes: int) -> bool:
    return all(s < 2**31 for s in sizes)


@override("cupy")
def im2col(
    be, x, kernel_size: Pair, stride: Pair = (1, 1), padding: Quad = (0, 0, 0, 0),
    dilation: Pair = (1, 1), out=None,
):
    """CUDA unfold of ``x`` (N, C, H, W) into ``(C * kh * kw, N * OH * OW)``."""
    if not _device_arrays(be, x) or x.ndim != 4:
        return ref.im2col(be, x, kernel_size, stride, padding, dilation, out=out)
    n, c, h, w = x.shape
    oh, ow = ref.conv_output_hw((h, w), kernel_size, stride, padding, dilation)
    shape = (c * kernel_size[0] * kernel_size[1], n * oh * ow)
    if oh < 1 or ow < 1 or not _out_ok(be, out, shape, x, x) or not _fits_int32(x.size):
        return ref.im2col(be, x, kernel_size, stride, padding, dilation, out=out)
    cols = be.xp.empty(shape, dtype=x.dtype) if out is None else out
    geo = _geometry(x.shape, kernel_size, stride, padding, dilation, (oh, ow))
    _launch("fastnn_im2col", x.dtype, cols.size, (x, cols, *geo))
    return cols


@override("cupy")
def col2im(
    be, cols, x_shape: tuple[int, int, int, int], kernel_size: Pair, stride: Pair = (1, 1),
    padding: Quad = (0, 0, 0, 0), dilation: Pair = (1, 1), out=None,
):
    """CUDA fold (gather, no atomics) of columns onto an image of ``x_shape``."""
    n, c, h, w = x_shape
    oh, ow = ref.conv_output_hw((h, w), kernel_size, stride, padding, dilation)
    expected = (c * kernel_size[0] * kernel_size[1], n * oh * ow)
    ok = (
        _device_arrays(be, cols) and tuple(cols.shape) == expected and oh >= 1 and ow >= 1
        and _out_ok(be, out, tuple(x_shape), cols, cols) and _fits_int32(n * c * h * w)
    )
    if not ok:
        return ref.col2im(be, cols, x_shape, kernel_size, stride, padding, dilation, out=out)
    dx = be.xp.empty(tuple(x_shape), dtype=cols.dtype) if out is None else out
    geo = _geometry(x_shape, kernel_size, stride, padding, dilation, (oh, ow))
    _launch("fastnn_col2im", cols.dtype, dx.size, (cols, dx, *geo))
    return dx


@override("cupy")
def conv2d_forward(
    be, x, W, b=None, stride: Pair = (1, 1), padding: Quad = (0, 0, 0, 0),
    dilation: Pair = (1, 1), groups: int = 1, cols=None, rows=None, out=None,
):
    """CUDA im2col + cuBLAS GEMM + CUDA transpose-and-bias into NCHW."""
    args = (be, x, W, b, stride, padding, dilation, groups, cols, rows, out)
    arrays = (x, W) if b is None else (x, W, b)
    if not _device_arrays(be, *arrays) or x.ndim != 4 or W.ndim != 4:
        return ref.conv2d_forward(*args)
    n, c, h, w = x.shape
    f, cg, kh, kw = W.shape
    oh, ow = ref.conv_output_hw((h, w), (kh, kw), stride, padding, dilation)
    p = n * oh * ow
    if (
        oh < 1 or ow < 1 or not _out_ok(be, out, (n, f, oh, ow), x, x)
        or not _out_ok(be, rows, (f, p), x, x)
    ):
        return ref.conv2d_forward(*args)
    xp = be.xp
    cols = im2col(be, x, (kh, kw), stride, padding, dilation, out=cols)
    rows = xp.empty((f, p), dtype=x.dtype) if rows is None else rows
    ck = cg * kh * kw
    if groups == 1:
        xp.matmul(W.reshape(f, ck), cols, out=rows)
    else:
        xp.matmul(W.reshape(groups, f // groups, ck), cols.reshape(groups, ck, p),
                  out=rows.reshape(groups, f // groups, p))
    y = xp.empty((n, f, oh, ow), dtype=x.dtype) if out is None else out
    bias = rows if b is None else b  # any device pointer; unread when has_bias is 0
    _launch("fastnn_rows_to_nchw", x.dtype, y.size,
            (rows, bias, y, np.int64(n), np.int64(f), np.int64(oh * ow),
             np.int32(b is not None)))
    return y, cols


@override("cupy")
def conv2d_backward(
    be, dy, W, cols, x_shape: tuple[int, int, int, int], stride: Pair = (1, 1),
    padding: Quad = (0, 0, 0, 0), dilation: Pair = (1, 1), groups: int = 1, dW=None, db=None,
    dx=None, need_dx: bool = True, rows=None, dcols=None,
):
    """CUDA transpose of dy, cuBLAS GEMMs for dW and the columns' gradient, CUDA col2im."""
    args = (be, dy, W, cols, x_shape, stride, padding, dilation, groups, dW, db, dx, need_dx,
            rows, dcols)
    if not _device_arrays(be, dy, W, cols) or dy.ndim != 4 or cols.ndim != 2:
        return ref.conv2d_backward(*args)
    n, f, oh, ow = dy.shape
    _, cg, kh, kw = W.shape
    p = n * oh * ow
    ck = cg * kh * kw
    if not _out_ok(be, rows, (f, p), dy, dy):
        return ref.conv2d_backward(*args)
    xp = be.xp
    if db is not None:
        xp.sum(dy.reshape(n, f, oh * ow), axis=(0, 2), out=db)
    if dW is None and not need_dx:
        return None
    rows = xp.empty((f, p), dtype=dy.dtype) if rows is None else rows
    _launch("fastnn_nchw_to_rows", dy.dtype, dy.size,
            (dy, rows, np.int64(n), np.int64(f), np.int64(oh * ow)))
    if dW is not None:
        if groups == 1:
            xp.matmul(rows, cols.T, out=dW.reshape(f, ck))
        else:
            xp.matmul(rows.reshape(groups, f // groups, p),
                      cols.reshape(groups, ck, p).transpose(0, 2, 1),
                      out=dW.reshape(groups, f // groups, ck))
    if not need_dx:
        return None
    shape = (groups * ck, p)
    if dcols is None or not _out_ok(be, dcols, shape, dy, rows, cols):
        dcols = xp.empty(shape, dtype=dy.dtype)
    if groups == 1:
        xp.matmul(W.reshape(f, ck).T, rows, out=dcols)
    else:
        xp.matmul(W.reshape(groups, f // groups, ck).transpose(0, 2, 1),
                  rows.reshape(groups, f // groups, p), out=dcols.reshape(groups, ck, p))
    return col2im(be, dcols, x_shape, (kh, kw), stride, padding, dilation, out=dx)


@override("cupy")
def maxpool2d(
    be, x, pool_size: Pair, stride: Pair, padding: Quad = (0, 0, 0, 0), out=None, argmax=None,
):
    """CUDA max pooling; returns ``(y, argmax)`` with int32 window offsets."""
    if not _device_arrays(be, x) or x.ndim != 4:
        return ref.maxpool2d(be, x, pool_size, stride, padding, out=out, argmax=argmax)
    n, c, h, w = x.shape
    oh, ow = ref.conv_output_hw((h, w), pool_size, stride, padding, (1, 1))
    shape = (n, c, oh, ow)
    ok = (
        oh >= 1 and ow >= 1 and _out_ok(be, out, shape, x, x)
        and (argmax is None or _index_ok(be, argmax, shape)) and _fits_int32(x.size)
    )
    if not ok:
        return ref.maxpool2d(be, x, pool_size, stride, padding, out=out, argmax=argmax)
    xp = be.xp
    y = xp.empty(shape, dtype=x.dtype) if out is None else out
    arg = xp.empty(shape, dtype=xp.int32) if argmax is None else argmax
    geo = _geometry(x.shape, pool_size, stride, padding, (1, 1), (oh, ow))
    _launch("fastnn_maxpool_forward", x.dtype, y.size, (x, y, arg, *geo))
    return y, arg


@override("cupy")
def maxpool2d_backward(
    be, dy, argmax, x_shape: tuple[int, int, int, int], pool_size: Pair, stride: Pair,
    padding: Quad = (0, 0, 0, 0), out=None,
):
    """CUDA routing of each window's gradient to its argmax (gather, no atomics)."""
    ok = (
        _device_arrays(be, dy) and dy.ndim == 4 and _index_ok(be, argmax, tuple(dy.shape))
        and _out_ok(be, out, tuple(x_shape), dy, dy, argmax)
    )
    if not ok:
        return ref.maxpool2d_backward(be, dy, argmax, x_shape, pool_size, stride, padding, out)
    dx = be.xp.empty(tuple(x_shape), dtype=dy.dtype) if out is None else out
    geo = _geometry(x_shape, pool_size, stride, padding, (1, 1), tuple(dy.shape[2:]))
    _launch("fastnn_maxpool_backward", dy.dtype, dx.size, (dy, argmax, dx, *geo))
    return dx


@override("cupy")
def avgpool2d(be, x, pool_size: Pair, stride: Pair, padding: Quad = (0, 0, 0, 0), out=None):
    """CUDA average pooling (padding excluded from the count)."""
    if not _device_arrays(be, x) or x.ndim != 4:
        return ref.avgpool2d(be, x, pool_size, stride, padding, out=out)
    n, c, h, w = x.shape
    oh, ow = ref.conv_output_hw((h, w), pool_size, stride, padding, (1, 1))
    shape = (n, c, oh, ow)
    if oh < 1 or ow < 1 or not _out_ok(be, out, shape, x, x) or not _fits_int32(x.size):
        return ref.avgpool2d(be, x, pool_size, stride, padding, out=out)
    y = be.xp.empty(shape, dtype=x.dtype) if out is None else out
    geo = _geometry(x.shape, pool_size, stride, padding, (1, 1), (oh, ow))
    _launch("fastnn_avgpool_forward", x.dtype, y.size, (x, y, *geo))
    return y


@override("cupy")
def avgpool2d_backward(
    be, dy, x_shape: tuple[int, int, int, int], pool_size: Pair, stride: Pair,
    padding: Quad = (0, 0, 0, 0), out=None,
):
    """CUDA spreading of each window's mean gradient over its pixels (gather)."""
    if not _device_arrays(be, dy) or dy.ndim != 4 or not _out_ok(be, out, tuple(x_shape), dy,
                                                                  dy):
        return ref.avgpool2d_backward(be, dy, x_shape, pool_size, stride, padding, out=out)
    n, c, h, w = x_shape
    g = dy / ref.pool_counts(be.xp, (h, w), pool_size, stride, padding, dy.dtype)
    dx = be.xp.empty(tuple(x_shape), dtype=dy.dtype) if out is None else out
    geo = _geometry(x_shape, pool_size, stride, padding, (1, 1), tuple(dy.shape[2:]))
    _launch("fastnn_avgpool_backward", dy.dtype, dx.size, (g, dx, *geo))
    return dx
