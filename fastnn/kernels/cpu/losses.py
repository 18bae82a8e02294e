"""Numba overrides of the fused softmax cross-entropy losses (forward and backward at once).

One kernel per loss, ``prange`` over blocks of rows; per row, while it is hot in cache:

1. ``m = max(x)`` (vectorised, NaN-propagating ``fast_max``);
2. ``e = exp(x - m)`` (vectorised ``fast_exp``) written to ``dx`` and summed, together with
   ``sum(t)`` and ``sum(t * (x - m))`` for the loss (soft targets);
3. ``loss_i = log(sum e) * sum(t) - sum(t * (x - m))``, i.e. ``-sum(t * log softmax(x))``;
4. ``dx = (e / sum e - t) * scale``.

The sparse version reads ``x[label] - m`` before step 2 (so ``dx`` may be ``logits``) and
subtracts 1 at the label. Row losses go to a float64 vector that is summed afterwards.
Row sums add chunks of ``CHUNK`` items summed in the array's dtype (full SIMD width) into
float64 totals.

Inputs the kernels do not take (not a C-contiguous 2-d float32/float64 ndarray, mixed dtypes,
an empty batch, non-integer labels, a ``dx`` overlapping the target) go to the reference op;
labels out of range go to the reference as well, which raises NumPy's ``IndexError``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange, types

from fastnn.kernels.cpu.fastexp import fast_exp, fast_max
from fastnn.kernels.cpu.jit import (
    LazyKernel,
    array,
    block_bounds,
    cast_to,
    chunk_bounds,
    is_kernel_array,
    is_kernel_output,
    kernel_dtype,
    num_chunks,
    num_row_blocks,
)
from fastnn.kernels.cpu.threads import ftz_enter, ftz_exit
from fastnn.kernels.reference.losses import softmax_cross_entropy as _ref_softmax_xent
from fastnn.kernels.reference.losses import (
    sparse_softmax_cross_entropy as _ref_sparse_softmax_xent,
)
from fastnn.kernels.registry import override


def _softmax_xent_kernel(x, t, dx, row_loss, scale, nblocks):
    rows, cols = x.shape
    ncols = np.uint64(cols)
    sc = cast_to(scale, x.dtype)
    for blk in prange(nblocks):
        old = ftz_enter()
        r0, r1 = block_bounds(blk, rows, nblocks)
        for i in range(r0, r1):
            m = cast_to(-np.inf, x.dtype)
            for j in range(ncols):
                m = fast_max(m, x[i, j])
            total = 0.0
            t_total = 0.0
            tx_total = 0.0
            for c in range(num_chunks(cols)):
                lo, hi = chunk_bounds(c, cols)
                e_part = cast_to(0.0, x.dtype)
                t_part = cast_to(0.0, x.dtype)
                tx_part = cast_to(0.0, x.dtype)
                for j in range(lo, hi):
                    shifted = x[i, j] - m
                    e = fast_exp(shifted)
                    dx[i, j] = e
                    e_part += e
                    t_part += t[i, j]
                    tx_part += t[i, j] * shifted
                total += e_part
                t_total += t_part
                tx_total += tx_part
            row_loss[i] = math.log(total) * t_total - tx_total
            inv = cast_to(1.0 / total, x.dtype)
            for j in range(ncols):
                dx[i, j] = (dx[i, j] * inv - t[i, j]) * sc
        ftz_exit(old)


def _sparse_softmax_xent_kernel(x, labels, dx, row_loss, scale, nblocks):
    rows, cols = x.shape
    ncols = np.uint64(cols)
    sc = cast_to(scale, x.dtype)
    one = cast_to(1.0, x.dtype)
    for blk in prange(nblocks):
        old = ftz_enter()
        r0, r1 = block_bounds(blk, rows, nblocks)
        for i in range(r0, r1):
            label = labels[i]
            m = cast_to(-np.inf, x.dtype)
            for j in range(ncols):
                m = fast_max(m, x[i, j])
            picked = x[i, label] - m
            total = 0.0
            for c in range(num_chunks(cols)):
                lo, hi = chunk_bounds(c, cols)
                part = cast_to(0.0, x.dtype)
                for j in range(lo, hi):
                    e = fast_exp(x[i, j] - m)
                    dx[i, j] = e
                    part += e
                total += part
            row_loss[i] = math.log(total) - picked
            inv = cast_to(1.0 / total, x.dtype)
            e_label = dx[i, label]
            for j in range(ncols):
                dx[i, j] = dx[i, j] * inv * sc
            dx[i, label] = (e_label * inv - one) * sc
        ftz_exit(old)


def _softmax_xent_small_kernel(x, t, dx, scale, nblocks):
    rows, cols = x.shape
    ncols = np.uint64(cols)
    sc = cast_to(scale, x.dtype)
    one = cast_to(1.0, x.dtype)
    xf = x.reshape(-1)
    tf = t.reshape(-1)
    df = dx.reshape(-1)
    total = 0.0
    for blk in prange(nblocks):
        old = ftz_enter()
        r0, r1 = block_bounds(blk, rows, nblocks)
        t_sums = np.empty(r1 - r0, dtype=x.dtype)
        tx_sums = np.empty(r1 - r0, dtype=x.dtype)
        for i in range(r0, r1):  # dx = x - max(x), sum(t), sum(t (x - max)); x is read here
            base = i * ncols  # only, so dx may be the logits themselves
            m = cast_to(-np.inf, x.dtype)
            for j in range(ncols):
                m = fast_max(m, xf[base + j])
            t_sum = cast_to(0.0, x.dtype)
            tx_sum = cast_to(0.0, x.dtype)
            for j in range(ncols):
                shifted = xf[base + j] - m
                t_sum += tf[base + j]
                tx_sum += tf[base + j] * shifted
                df[base + j] = shifted
            t_sums[i - r0] = t_sum
            tx_sums[i - r0] = tx_sum
        for k in range(r0 * ncols, r1 * ncols):  # one long loop: exp vectorises over rows
            df[k] = fast_exp(df[k])
        part = 0.0
        for i in range(r0, r1):  # sums, loss, gradient
            base = i * ncols
            e_sum = cast_to(0.0, x.dtype)
            for j in range(ncols):
                e_sum += df[base + j]
            part += math.log(e_sum) * t_sums[i - r0] - tx_sums[i - r0]
            inv = one / e_sum
            for j in range(ncols):
                df[base + j] = (df[base + j] * inv - tf[base + j]) * sc
        total += part
        ftz_exit(old)
    return total


def _sparse_softmax_xent_small_kernel(x, labels, dx, scale, nblocks):
    rows, cols = x.shape
    ncols = np.uint64(cols)
    sc = cast_to(scale, x.dtype)
    one = cast_to(1.0, x.dtype)
    xf = x.reshape(-1)
    df = dx.reshape(-1)
    total = 0.0
    bad = 0
    for blk in prange(nblocks):
        old = ftz_enter()
        r0, r1 = block_bounds(blk, rows, nblocks)
        picked = np.empty(r1 - r0, dtype=x.dtype)
        for i in range(r0, r1):  # row maxima, the picked logit; dx = x - max
            base = i * ncols
            m = cast_to(-np.inf, x.dtype)
            for j in range(ncols):
                m = fast_max(m, xf[base + j])
            for j in range(ncols):
                df[base + j] = xf[base + j] - m
            label = labels[i]
            if label < 0:
                label += cols  # NumPy's negative indices, as the reference
            if label < 0 or label >= cols:
                bad += 1
                label = 0
            picked[i - r0] = df[base + label]
        for k in range(r0 * ncols, r1 * ncols):  # one long loop: exp vectorises over rows
            df[k] = fast_exp(df[k])
        part = 0.0
        for i in range(r0, r1):  # sums, loss, gradient
            base = i * ncols
            e_sum = cast_to(0.0, x.dtype)
            for j in range(ncols):
                e_sum += df[base + j]
            part += math.log(e_sum) - picked[i - r0]
            inv = one / e_sum
            for j in range(ncols):
                df[base + j] = df[base + j] * inv * sc
            label = labels[i]
            if label < 0:
                label += cols
            if 0 <= label < cols:
                df[base + label] -= sc
        total += part
        ftz_exit(old)
    return total, bad


_softmax_xent_small = LazyKernel(
    _softmax_xent_small_kernel,
    lambda T: (array(T, 2, True), array(T, 2, True), array(T, 2), types.float64, types.intp),
)
_sparse_softmax_xent_small = LazyKernel(
    _sparse_softmax_xent_small_kernel,
    lambda T: (
        array(T, 2, True), array(types.intp, 1, True), array(T, 2), types.float64, types.intp
    ),
)

#: Up to this many classes the losses run the "small" kernels: per-row loops of a few items
#: do not vectorise, so the exp runs as one long loop over all rows of a block instead
#: (1024x10 float32 on one core: 15 us instead of 30 us).
SMALL_CLASSES = 32


_softmax_xent = LazyKernel(
    _softmax_xent_kernel,
    lambda T: (
        array(T, 2, True),
        array(T, 2, True),
        array(T, 2),
        array(types.float64, 1),
        types.float64,
        types.intp,
    ),
)
_sparse_softmax_xent = LazyKernel(
    _sparse_softmax_xent_kernel,
    lambda T: (
        array(T, 2, True),
        array(types.intp, 1, True),
        array(T, 2),
        array(types.float64, 1),
        types.float64,
        types.intp,
    ),
)


def _logits_dtype(logits, dx, *others) -> np.dtype | None:
    """The dtype to run in, or None when the reference must handle the call."""
    dt = kernel_dtype(logits)
    if dt is None or logits.ndim != 2 or logits.shape[0] == 0 or logits.shape[1] == 0:
        return None
    if dx is not None:
        if not is_kernel_output(dx, dt, logits.shape, logits):
            return None
        if any(o is not None and np.may_share_memory(dx, o) for o in others):
            return None
    return dt


def _int_labels(labels, n: int, c: int) -> np.ndarray | None:
    """``labels`` as a contiguous intp vector in [0, c), or None when the reference must
    handle them (wrong type or shape, or out of range: the reference raises IndexError)."""
    if not isinstance(labels, np.ndarray) or labels.shape != (n,):
        return None
    if labels.dtype.kind not in "iu":
        return None
    lo = int(labels.min())
    hi = int(labels.max())
    if lo < -c or hi >= c:
        return None
    out = np.ascontiguousarray(labels, dtype=np.intp)
    if lo < 0:
        out = np.where(out < 0, out + c, out)  # NumPy's negative indices, as the reference
    return out


@override("numba")
def softmax_cross_entropy(be, logits, target, dx=None, scale: float | None = None):
    """Mean cross-entropy of softmax(logits) against ``target`` and its gradient, in one
    fused parallel pass (see :func:`fastnn.kernels.reference.losses.softmax_cross_entropy`).

    Returns:
        (loss, dx): the mean loss as a Python float, and the gradient array.
    """
    dt = _logits_dtype(logits, dx, target)
    if dt is None or not is_kernel_array(target, dt, logits.shape):
        return _ref_softmax_xent(be, logits, target, dx, scale)
    n, c = logits.shape
    scale = 1.0 / n if scale is None else float(scale)
    if dx is None:
        dx = np.empty_like(logits)
    nblocks = num_row_blocks(n, c)
    if c <= SMALL_CLASSES:
        total = _softmax_xent_small.pick(dt, logits.size)(logits, target, dx, scale, nblocks)
        return float(total) / n, dx
    row_loss = np.empty(n, dtype=np.float64)
    _softmax_xent.pick(dt, logits.size)(logits, target, dx, row_loss, scale, nblocks)
    return float(row_loss.sum()) / n, dx


@override("numba")
def sparse_softmax_cross_entropy(be, logits, labels, dx=None, scale: float | None = None):
    """Like :func:`softmax_cross_entropy` with integer class ``labels`` of shape (N,)."""
    dt = _logits_dtype(logits, dx, labels)
    if dt is None:
        return _ref_sparse_softmax_xent(be, logits, labels, dx, scale)
    n, c = logits.shape
    if c <= SMALL_CLASSES and isinstance(labels, np.ndarray) and labels.shape == (n,) and (
        labels.dtype.kind in "iu"
    ):
        # The kernel checks the label range itself (no min/max passes over the labels).
        small_scale = 1.0 / n if scale is None else float(scale)
        out = np.empty_like(logits) if dx is None else dx
        int_labels = np.ascontiguousarray(labels, dtype=np.intp)
        nblocks = num_row_blocks(n, c)
        total, bad = _sparse_softmax_xent_small.pick(dt, logits.size)(
            logits, int_labels, out, small_scale, nblocks
        )
        if not bad:
            return float(total) / n, out
        return _ref_sparse_softmax_xent(be, logits, labels, dx, scale)  # raises IndexError
    int_labels = _int_labels(labels, n, c)
    if int_labels is None:
        return _ref_sparse_softmax_xent(be, logits, labels, dx, scale)
    scale = 1.0 / n if scale is None else float(scale)
    if dx is None:
        dx = np.empty_like(logits)
    row_loss = np.empty(n, dtype=np.float64)
    nblocks = num_row_blocks(n, c)
    _sparse_softmax_xent.pick(dt, logits.size)(logits, int_labels, dx, row_loss, scale, nblocks)
    return float(row_loss.sum()) / n, dx
