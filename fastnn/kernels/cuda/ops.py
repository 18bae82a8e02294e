"""CuPy-backend overrides of the hot ops, launching fastnn's fused CUDA kernels.

Every op keeps the name and signature of its reference version in
:mod:`fastnn.kernels.reference` and its contract (``out=`` buffers written in place,
inputs such as ``dy`` or ``grad`` never written, the same return values). The host code
here validates before it launches: arrays must be CuPy arrays on the current device,
float32 or float64, C-contiguous, non-empty, of matching shapes and dtypes, and an output
may be one of the inputs (in place) but must not partly overlap one. Anything else (other
dtypes, strided views, broadcasting, activations without a kernel) goes to the reference
version, which runs on CuPy through ``be.xp``.

Kernel arguments match the C signatures in :mod:`fastnn.kernels.cuda.sources` exactly:
``T`` scalars are passed as ``numpy.float32``/``numpy.float64``, ``long long`` as
``numpy.int64`` and ``int`` as ``numpy.int32``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fastnn.kernels.cuda.compile import get_kernel, multiprocessor_count
from fastnn.kernels.cuda.sources import (
    ACTIVATION,
    ACTIVATION_CODES,
    ADAM_FLAGS,
    COLUMN_ROWS,
    COLUMN_TILE,
    DTYPES,
    ELEMENTWISE_THREADS,
    OPTIMIZER,
    ROW_MAX_THREADS,
    ROW_THREADS,
    SGD_FLAGS,
    SOFTMAX,
    KernelSource,
)
from fastnn.kernels.reference import activations as ref_act
from fastnn.kernels.reference import losses as ref_losses
from fastnn.kernels.reference import optimizers as ref_opt
from fastnn.kernels.reference import softmax as ref_softmax
from fastnn.kernels.registry import override

_FLOAT_DTYPES = frozenset(np.dtype(name) for name in DTYPES)
_MAX_GRID_X = 2**31 - 1
# Grid-stride elementwise kernels launch at most this many blocks per multiprocessor.
_BLOCKS_PER_SM = 32
# The column-sum kernels split rows into at most this many chunks (then sum the chunks).
_MAX_ROW_CHUNKS = 1024
# and give every chunk at least this many rows.
_MIN_CHUNK_ROWS = 64


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------


def _device_arrays(be: Any, *arrays: Any) -> bool:
    """Whether every array is a non-empty C-contiguous float32/float64 CuPy array on the
    current device, all of one dtype."""
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


def _span(a: Any) -> tuple[int, int]:
    start = a.data.ptr
    return start, start + a.nbytes


def _no_partial_overlap(*arrays: Any) -> bool:
    """Whether every two of ``arrays`` are either the same memory (same start, size and
    shape, hence in-place elementwise) or disjoint. None entries are ignored."""
    spans = [(a, _span(a)) for a in arrays if a is not None]
    for i, (a, (a0, a1)) in enumerate(spans):
        for b, (b0, b1) in spans[i + 1 :]:
            if a0 == b0 and a1 == b1 and a.shape == b.shape:
                continue
            if a0 < b1 and b0 < a1:
                return False
    return True


def _disjoint_from(a: Any, *others: Any) -> bool:
    """Whether ``a`` (None counts as disjoint) shares no memory with any of ``others``."""
    if a is None:
        return True
    a0, a1 = _span(a)
    for b in others:
        if b is None:
            continue
        b0, b1 = _span(b)
        if a0 < b1 and b0 < a1:
            return False
    return True


def _out_ok(be: Any, out: Any, like: Any) -> bool:
    """Whether ``out`` is None or a kernel-ready buffer shaped and typed like ``like``."""
    if out is None:
        return True
    return _device_arrays(be, out, like) and out.shape == like.shape


def _scalar(dtype: Any, value: float) -> Any:
    """``value`` as a NumPy scalar of ``dtype`` (the kernel's ``T``)."""
    return np.dtype(dtype).type(value)


# --------------------------------------------------------------------------------------
# Launch configuration
# --------------------------------------------------------------------------------------


def _elementwise_grid(n: int) -> int:
    """Blocks of a grid-stride elementwise launch over ``n`` elements."""
    blocks = -(-n // ELEMENTWISE_THREADS)
    return max(1, min(blocks, multiprocessor_count() * _BLOCKS_PER_SM, _MAX_GRID_X))


def _launch_elementwise(source: KernelSource, base: str, dtype: Any, n: int, args: tuple) -> None:
    kernel = get_kernel(source, base, dtype)
    kernel((_elementwise_grid(n),), (ELEMENTWISE_THREADS,), args)


def _row_block(cols: int) -> tuple[int, int]:
    """(threads per row, rows per block) of a row kernel for rows of ``cols`` elements:
    a power of two from 32 to ROW_MAX_THREADS per row, about ROW_THREADS per block."""
    tx = 32
    while tx < cols and tx < ROW_MAX_THREADS:
        tx *= 2
    ty = max(1, ROW_THREADS // tx)
    return tx, ty


def _launch_rows(base: str, dtype: Any, rows: int, cols: int, args: tuple) -> bool:
    """Launch row kernel ``base`` of the softmax family; False when the grid is too large."""
    tx, ty = _row_block(cols)
    blocks = -(-rows // ty)
    if blocks > _MAX_GRID_X:
        return False
    kernel = get_kernel(SOFTMAX, base, dtype)
    kernel((blocks,), (tx, ty), args)
    return True


def _row_chunks(rows: int, col_tiles: int) -> tuple[int, int]:
    """(rows per chunk, chunks) of a column-sum launch: enough blocks to fill the device."""
    target_blocks = multiprocessor_count() * 8
    chunks = -(-target_blocks // col_tiles)
    chunks = max(1, min(chunks, _MAX_ROW_CHUNKS, -(-rows // _MIN_CHUNK_ROWS)))
    rows_per_chunk = -(-rows // chunks)
    rows_per_chunk = -(-rows_per_chunk // COLUMN_ROWS) * COLUMN_ROWS
    chunks = -(-rows // rows_per_chunk)
    return rows_per_chunk, chunks


def _column_sums(
    be: Any, dy: Any, y: Any, dz: Any, db: Any, rows: int, cols: int, act: int
) -> None:
    """dz = dy * act'(y) and db[...] = column sums of dz, for (rows, cols) matrices.

    Rows are split into chunks summed by separate blocks (writing dz on the way); when
    there is more than one chunk, the (chunks, cols) partial sums are summed by a second,
    single-chunk pass.
    """
    dtype = dy.dtype
    col_tiles = -(-cols // COLUMN_TILE)
    rows_per_chunk, chunks = _row_chunks(rows, col_tiles)
    partial = db if chunks == 1 else be.xp.empty((chunks, cols), dtype=dtype)
    block = (COLUMN_TILE, COLUMN_ROWS)
    kernel = get_kernel(ACTIVATION, "fastnn_bias_activation_backward", dtype)
    args = (dy, y, dz, partial, np.int64(rows), np.int64(cols), np.int64(rows_per_chunk),
            np.int32(act))
    kernel((col_tiles, chunks), block, args)
    if chunks > 1:
        rows_per_chunk = -(-chunks // COLUMN_ROWS) * COLUMN_ROWS
        kernel = get_kernel(ACTIVATION, "fastnn_column_sum", dtype)
        args = (partial, db, np.int64(chunks), np.int64(cols), np.int64(rows_per_chunk))
        kernel((col_tiles, 1), block, args)


# --------------------------------------------------------------------------------------
# Activations
# --------------------------------------------------------------------------------------

#: Further activations served by other modules (activations_extra): name -> their
#: (activation_forward, activation_backward, bias_activation, bias_activation_backward),
#: with the ops' signatures. The ops below hand these names over before anything else.
EXTRA_ACTIVATIONS: dict[str, tuple[Any, ...]] = {}
_FWD, _BWD, _BIAS_FWD, _BIAS_BWD = 0, 1, 2, 3


@override("cupy")
def activation_forward(be, name: str, x, out=None, alpha: float = 0.0):
    """y = act(x) elementwise in one kernel; ``out`` may be ``x`` (in place)."""
    if name in EXTRA_ACTIVATIONS:
        return EXTRA_ACTIVATIONS[name][_FWD](be, name, x, out, alpha)
    code = ACTIVATION_CODES.get(name)
    # "linear" is a copy (or nothing): the reference does it with a memcpy.
    if (
        code is None
        or name == "linear"
        or not _device_arrays(be, x)
        or not _out_ok(be, out, x)
        or not _no_partial_overlap(x, out)
    ):
        return ref_act.activation_forward(be, name, x, out=out, alpha=alpha)
    if out is None:
        out = be.xp.empty_like(x)
    n = x.size
    args = (x, out, np.int64(n), np.int32(code))
    _launch_elementwise(ACTIVATION, "fastnn_activation_forward", x.dtype, n, args)
    return out


@override("cupy")
def activation_backward(be, name: str, dy, x, y, out=None, alpha: float = 0.0):
    """dx = dy * act'(y) elementwise in one kernel; never writes ``dy`` unless
    ``out is dy``."""
    if name in EXTRA_ACTIVATIONS:
        return EXTRA_ACTIVATIONS[name][_BWD](be, name, dy, x, y, out, alpha)
    code = ACTIVATION_CODES.get(name)
    if (
        code is None
        or name == "linear"
        or not _device_arrays(be, dy, y)
        or y.shape != dy.shape
        or not _out_ok(be, out, dy)
        or not _no_partial_overlap(dy, y, out)
    ):
        return ref_act.activation_backward(be, name, dy, x, y, out=out, alpha=alpha)
    if out is None:
        out = be.xp.empty_like(dy)
    n = dy.size
    args = (dy, y, out, np.int64(n), np.int32(code))
    _launch_elementwise(ACTIVATION, "fastnn_activation_backward", dy.dtype, n, args)
    return out


@override("cupy")
def bias_activation(be, name: str, z, b, out=None, alpha: float = 0.0):
    """y = act(z + b) in one kernel, ``b`` broadcast over rows; ``out`` may be ``z``."""
    if name in EXTRA_ACTIVATIONS:
        return EXTRA_ACTIVATIONS[name][_BIAS_FWD](be, name, z, b, out, alpha)
    if b is None:
        return activation_forward(be, name, z, out=out, alpha=alpha)
    code = ACTIVATION_CODES.get(name)
    if (
        code is None
        or not _device_arrays(be, z, b)
        or z.ndim < 1
        or b.shape != (z.shape[-1],)
        or not _out_ok(be, out, z)
        or not _no_partial_overlap(z, b, out)
    ):
        return ref_act.bias_activation(be, name, z, b, out=out, alpha=alpha)
    if out is None:
        out = be.xp.empty_like(z)
    n = z.size
    args = (z, b, out, np.int64(n), np.int64(z.shape[-1]), np.int32(code))
    _launch_elementwise(ACTIVATION, "fastnn_bias_activation", z.dtype, n, args)
    return out


@override("cupy")
def bias_activation_backward(be, name: str, dy, x, y, dz=None, db=None, alpha: float = 0.0):
    """dz = dy * act'(y) and, when ``db`` is given, db[...] = dz summed over rows, fused in
    one pass (plus a small pass over partial sums for tall inputs). Returns ``dz``."""
    if name in EXTRA_ACTIVATIONS:
        return EXTRA_ACTIVATIONS[name][_BIAS_BWD](be, name, dy, x, y, dz, db, alpha)
    code = ACTIVATION_CODES.get(name)
    # linear needs no y: the kernel then reads dy in its place.
    y_used = dy if name == "linear" else y
    if (
        code is None
        or not _device_arrays(be, dy, y_used)
        or dy.ndim < 1
        or y_used.shape != dy.shape
        or not _out_ok(be, dz, dy)
    ):
        return ref_act.bias_activation_backward(be, name, dy, x, y, dz=dz, db=db, alpha=alpha)
    cols = dy.shape[-1]
    if db is not None and not (_device_arrays(be, db, dy) and db.shape == (cols,)):
        return ref_act.bias_activation_backward(be, name, dy, x, y, dz=dz, db=db, alpha=alpha)
    # dz may be dy or y (in place); db must be apart from all of them.
    if not _no_partial_overlap(dy, y_used, dz) or not _disjoint_from(db, dy, y_used, dz):
        return ref_act.bias_activation_backward(be, name, dy, x, y, dz=dz, db=db, alpha=alpha)
    if dz is None:
        dz = be.xp.empty_like(dy)
    if db is None:
        n = dy.size
        args = (dy, y_used, dz, np.int64(n), np.int32(code))
        _launch_elementwise(ACTIVATION, "fastnn_activation_backward", dy.dtype, n, args)
        return dz
    _column_sums(be, dy, y_used, dz, db, dy.size // cols, cols, code)
    return dz


# --------------------------------------------------------------------------------------
# Softmax
# --------------------------------------------------------------------------------------


def _rows_ok(be: Any, x: Any) -> bool:
    return _device_arrays(be, x) and x.ndim >= 1


@override("cupy")
def softmax(be, x, out=None):
    """Softmax along the last axis in one row kernel (row max and sum reduced with warp
    shuffles and shared memory); ``out`` may be ``x``."""
    if not _rows_ok(be, x) or not _out_ok(be, out, x) or not _no_partial_overlap(x, out):
        return ref_softmax.softmax(be, x, out=out)
    result = be.xp.empty_like(x) if out is None else out
    cols = x.shape[-1]
    rows = x.size // cols
    if not _launch_rows("fastnn_softmax", x.dtype, rows, cols,
                        (x, result, np.int64(rows), np.int64(cols))):
        return ref_softmax.softmax(be, x, out=out)
    return result


@override("cupy")
def softmax_backward(be, dy, y, out=None):
    """dx = y * (dy - sum(dy * y, axis=-1)) in one row kernel; ``out`` may be ``dy``."""
    if (
        not _rows_ok(be, dy)
        or not _device_arrays(be, dy, y)
        or y.shape != dy.shape
        or not _out_ok(be, out, dy)
        or not _no_partial_overlap(dy, y, out)
    ):
        return ref_softmax.softmax_backward(be, dy, y, out=out)
    result = be.xp.empty_like(dy) if out is None else out
    cols = dy.shape[-1]
    rows = dy.size // cols
    if not _launch_rows("fastnn_softmax_backward", dy.dtype, rows, cols,
                        (dy, y, result, np.int64(rows), np.int64(cols))):
        return ref_softmax.softmax_backward(be, dy, y, out=out)
    return result


@override("cupy")
def log_softmax(be, x, out=None):
    """log(softmax(x)) along the last axis in one row kernel; ``out`` may be ``x``."""
    if not _rows_ok(be, x) or not _out_ok(be, out, x) or not _no_partial_overlap(x, out):
        return ref_softmax.log_softmax(be, x, out=out)
    result = be.xp.empty_like(x) if out is None else out
    cols = x.shape[-1]
    rows = x.size // cols
    if not _launch_rows("fastnn_log_softmax", x.dtype, rows, cols,
                        (x, result, np.int64(rows), np.int64(cols))):
        return ref_softmax.log_softmax(be, x, out=out)
    return result


# --------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------


@override("cupy")
def softmax_cross_entropy(be, logits, target, dx=None, scale: float | None = None):
    """Mean cross-entropy of softmax(logits) against ``target`` and its gradient, fused:
    the threads of each row reduce max and sum, then write dx and the row's loss; the row
    losses are then summed. Returns (loss as a Python float, dx)."""
    if (
        not _device_arrays(be, logits, target)
        or logits.ndim != 2
        or target.shape != logits.shape
        or not _out_ok(be, dx, logits)
        or not _no_partial_overlap(logits, target, dx)
    ):
        return ref_losses.softmax_cross_entropy(be, logits, target, dx=dx, scale=scale)
    n, c = logits.shape
    scale = 1.0 / n if scale is None else scale
    grad = be.xp.empty_like(logits) if dx is None else dx
    row_loss = be.xp.empty((n,), dtype=logits.dtype)
    args = (logits, target, grad, row_loss, np.int64(n), np.int64(c),
            _scalar(logits.dtype, scale))
    if not _launch_rows("fastnn_softmax_cross_entropy", logits.dtype, n, c, args):
        return ref_losses.softmax_cross_entropy(be, logits, target, dx=dx, scale=scale)
    loss = -float(row_loss.sum()) / n
    return loss, grad


@override("cupy")
def sparse_softmax_cross_entropy(be, logits, labels, dx=None, scale: float | None = None):
    """Like :func:`softmax_cross_entropy` with integer class ``labels`` of shape (N,).

    Negative labels count from the end, as in NumPy indexing; a label outside
    [-C, C) raises IndexError (after dx has been written).
    """
    xp = be.xp
    if (
        not _device_arrays(be, logits)
        or logits.ndim != 2
        or not isinstance(labels, xp.ndarray)
        or labels.dtype.kind not in "iu"
        or labels.shape != (logits.shape[0],)
        or labels.device.id != logits.device.id
        or not _out_ok(be, dx, logits)
        or not _no_partial_overlap(logits, dx)
    ):
        return ref_losses.sparse_softmax_cross_entropy(be, logits, labels, dx=dx, scale=scale)
    n, c = logits.shape
    scale = 1.0 / n if scale is None else scale
    labels64 = xp.ascontiguousarray(labels, dtype=xp.int64)
    grad = xp.empty_like(logits) if dx is None else dx
    row_loss = xp.empty((n,), dtype=logits.dtype)
    args = (logits, labels64, grad, row_loss, np.int64(n), np.int64(c),
            _scalar(logits.dtype, scale))
    if not _launch_rows("fastnn_sparse_softmax_cross_entropy", logits.dtype, n, c, args):
        return ref_losses.sparse_softmax_cross_entropy(be, logits, labels, dx=dx, scale=scale)
    loss = -float(row_loss.sum()) / n
    if not math.isfinite(loss):
        # The kernel marks rows with an out-of-range label with a NaN loss.
        bad = (labels64 < -c) | (labels64 >= c)
        if bool(bad.any()):
            lo, hi = int(labels64.min()), int(labels64.max())
            raise IndexError(
                f"sparse_softmax_cross_entropy: labels must be class indices in [0, {c}) "
                f"(or [-{c}, 0) counting from the end); received labels from {lo} to {hi}"
            )
    return loss, grad


# --------------------------------------------------------------------------------------
# Optimizers
# --------------------------------------------------------------------------------------


@override("cupy")
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
    """One SGD step, ``torch.optim.SGD`` rule, fused into one elementwise pass.

    See the reference version for the rule; ``tmp`` is not needed here.
    """
    arrays = (param, grad, buf) if momentum else (param, grad)
    if (
        not _device_arrays(be, *arrays)
        or any(a.shape != param.shape for a in arrays)
        or not _no_partial_overlap(*arrays)
    ):
        return ref_opt.sgd_update(
            be, param, grad, buf=buf, tmp=tmp, lr=lr, momentum=momentum, dampening=dampening,
            nesterov=nesterov, weight_decay=weight_decay, first_step=first_step,
        )
    flags = 0
    if weight_decay:
        flags |= SGD_FLAGS["weight_decay"]
    if momentum:
        flags |= SGD_FLAGS["momentum"]
        if first_step:
            flags |= SGD_FLAGS["first_step"]
        if nesterov:
            flags |= SGD_FLAGS["nesterov"]
    dtype = param.dtype
    n = param.size
    args = (
        param,
        grad,
        buf if momentum else param,  # unused by the kernel without momentum
        np.int64(n),
        _scalar(dtype, lr),
        _scalar(dtype, momentum),
        _scalar(dtype, 1.0 - dampening),
        _scalar(dtype, weight_decay),
        _scalar(dtype, lr * momentum),
        np.int32(flags),
    )
    _launch_elementwise(OPTIMIZER, "fastnn_sgd_update", dtype, n, args)
    return None


@override("cupy")
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
    """One Adam step, ``torch.optim.Adam`` rule, fused into one elementwise pass.

    See the reference version for the rule; ``tmp`` is not needed here.
    """
    arrays = (param, grad, m, v, vmax) if amsgrad else (param, grad, m, v)
    if (
        not _device_arrays(be, *arrays)
        or any(a.shape != param.shape for a in arrays)
        or not _no_partial_overlap(*arrays)
    ):
        return ref_opt.adam_update(
            be, param, grad, m, v, vmax=vmax, tmp=tmp, step=step, lr=lr, beta1=beta1,
            beta2=beta2, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
        )
    flags = 0
    if weight_decay:
        flags |= ADAM_FLAGS["weight_decay"]
    if amsgrad:
        flags |= ADAM_FLAGS["amsgrad"]
    # The same Python-float arithmetic as the reference, then rounded to T.
    bias1 = 1.0 - beta1**step
    bias2 = 1.0 - beta2**step
    dtype = param.dtype
    n = param.size
    args = (
        param,
        grad,
        m,
        v,
        vmax if amsgrad else v,  # unused by the kernel without amsgrad
        np.int64(n),
        _scalar(dtype, lr / bias1),
        _scalar(dtype, beta1),
        _scalar(dtype, beta2),
        _scalar(dtype, 1.0 - beta2),
        _scalar(dtype, 1.0 / bias2**0.5),
        _scalar(dtype, eps),
        _scalar(dtype, weight_decay),
        np.int32(flags),
    )
    _launch_elementwise(OPTIMIZER, "fastnn_adam_update", dtype, n, args)
    return None
