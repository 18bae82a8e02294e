"""Numba kernels of the convolution and pooling ops (the ``numba`` overrides).

Conv2D runs as im2col + GEMM. Three regimes:

- BLAS-sized, ungrouped (the N=32, 16->32, 28x28 benchmark): image by image
  (:func:`_image_forward` / :func:`_image_backward`). Python threads take images from a
  shared counter; each unfolds its image into a per-thread column buffer that stays in the
  cache (C*kh*kw x OH*OW) and runs the image's GEMMs on ONE BLAS thread, writing the NCHW
  output (or dx[n]) directly: no batch-sized column matrix, no transpose pass, no BLAS
  barrier and no spinning BLAS worker next to a Numba pass (see
  :mod:`fastnn.kernels.cpu.blas_threads`). The forward returns the input itself as what
  the backward reads; the backward unfolds each image again (8 us per image, cheaper than
  writing and re-reading a 14 MB column matrix). :data:`IMAGE_BY_IMAGE` = False selects the
  batch-wide layout below with BLAS GEMMs instead.
- Below :data:`SERIAL_GEMM_MACS` multiply-adds (the digits examples, small batches): one
  batch-wide unfold, serial Numba GEMM loops on the calling thread (no pool is woken, none
  fights another), and a Numba pass between the GEMM's ``(F, N * OH * OW)`` rows and NCHW
  fused with the bias add (forward) or the bias gradient (backward).
- Grouped (not depthwise) convolutions of BLAS size use the NumPy reference; depthwise ones
  (``groups == C``, one input channel per filter) skip the unfold and run as direct loops.

Unfold and fold work on whole ``(image, channel)`` planes. For unit-stride windows whose
output is as wide as the input (``padding="same"``, stride 1) each window offset is ONE
long shifted copy (or add) of the flat plane followed by a few zero writes at the row edges,
instead of a short loop per output row (3x3 over 28x28: 8 us per image instead of 80 us).
Pooling runs as direct loops over ``(n, c)`` planes. Each kernel has a parallel and a serial
build; :data:`SERIAL_WORK` picks one by size. Column layout, tie rule and padding semantics
are those of :mod:`fastnn.kernels.reference.conv`.

Each public wrapper checks dtypes, contiguity and shapes before a kernel runs; arrays a
kernel cannot take (other dtypes, overlapping outputs) go to the reference implementation
and inconsistent shapes raise ``ValueError``, so a bad argument never reaches compiled code.
"""

from __future__ import annotations

import threading

import numba
import numpy as np
from numba import njit, prange, types
from numba.extending import register_jitable

from fastnn.kernels.cpu.blas_threads import parallel_items
from fastnn.kernels.cpu.jit import (
    LazyKernel,
    array,
    cast_to,
    helper_jit_flags,
    is_kernel_array,
    is_kernel_output,
)
from fastnn.kernels.reference import conv as ref
from fastnn.kernels.registry import override

Pair = tuple[int, int]
Quad = tuple[int, int, int, int]

# Positions of the geometry vector every kernel takes.
_KH, _KW, _SH, _SW, _PT, _PL, _DH, _DW, _OH, _OW = range(10)


def _geometry(kernel_size: Pair, stride: Pair, padding: Quad, dilation: Pair, out_hw: Pair):
    """The int64 geometry vector (kh, kw, sh, sw, top, left, dh, dw, OH, OW)."""
    return np.array(
        [*kernel_size, *stride, padding[0], padding[2], *dilation, *out_hw], dtype=np.int64
    )


# -- kernels -----------------------------------------------------------------------------
@register_jitable(inline="always")
def _valid_range(off, step, size, count):
    """Output indices b in [b0, b1) whose input index b * step + off lies in [0, size)."""
    b0 = 0
    if off < 0:
        b0 = (-off + step - 1) // step
    b1 = 0
    if size - 1 - off >= 0:
        b1 = (size - 1 - off) // step + 1
    if b1 > count:
        b1 = count
    if b0 > b1:
        b0 = b1
    return b0, b1


def _col2im_kernel(cols, dx, geo):
    n_img, n_ch, h, w = dx.shape
    kh, kw, sh, sw = geo[_KH], geo[_KW], geo[_SH], geo[_SW]
    pt, pl, dh, dw, oh, ow = geo[_PT], geo[_PL], geo[_DH], geo[_DW], geo[_OH], geo[_OW]
    plane = oh * ow
    for t in prange(n_img * n_ch):
        n = t // n_ch
        c = t % n_ch
        for ih in range(h):
            for iw in range(w):
                dx[n, c, ih, iw] = 0
        for i in range(kh):
            for j in range(kw):
                r = (c * kh + i) * kw + j
                off = j * dw - pl
                b0, b1 = _valid_range(off, sw, w, ow)
                for a in range(oh):
                    ih = a * sh + i * dh - pt
                    if ih < 0 or ih >= h:
                        continue
                    src = n * plane + a * ow
                    if sw == 1:  # element loop: a slice ``+=`` builds temporaries
                        for b in range(b0, b1):
                            dx[n, c, ih, b + off] += cols[r, src + b]
                    else:
                        for b in range(b0, b1):
                            dx[n, c, ih, b * sw + off] += cols[r, src + b]


@register_jitable
def _flat_shift(di, dj, h, w, oh):
    """For a unit-stride window offset with OW == W: output rows [a0, a1) read input rows
    a + di inside the image, and the flat output positions [lo, hi) read the flat input plane
    at q + di * w + dj inside [0, h * w) (the columns that wrap around a row edge included)."""
    a0 = max(-di, 0)
    a1 = min(h - di, oh)
    if a0 > a1:
        a0 = a1
    shift = di * w + dj
    lo = max(a0 * w, -shift)
    hi = min(a1 * w, h * w - shift)
    if lo > hi:
        lo = hi
    return a0, a1, shift, lo, hi


@register_jitable
def _copy(dst, src, count):
    """dst[:count] = src[:count]; indices from 0 so that LLVM drops the wraparound checks."""
    for q in range(count):
        dst[q] = src[q]


@register_jitable
def _add(dst, src, count):
    """dst[:count] += src[:count]."""
    for q in range(count):
        dst[q] += src[q]


@register_jitable
def _fill(dst, value):
    for q in range(dst.shape[0]):
        dst[q] = value


@register_jitable
def _unfold_plane(src, cols, c, col0, geo, h, w):
    """Write the rows ``(c * kh + i) * kw + j`` of ``cols``, columns [col0, col0 + OH * OW),
    from the flat input plane ``src`` (H * W,) of channel ``c`` of one image."""
    kh, kw, sh, sw = geo[_KH], geo[_KW], geo[_SH], geo[_SW]
    pt, pl, dh, dw, oh, ow = geo[_PT], geo[_PL], geo[_DH], geo[_DW], geo[_OH], geo[_OW]
    zero = cast_to(0.0, cols.dtype)
    plane = oh * ow
    flat = sh == 1 and sw == 1 and ow == w
    for i in range(kh):
        for j in range(kw):
            row = cols[(c * kh + i) * kw + j, col0 : col0 + plane]
            di = i * dh - pt
            dj = j * dw - pl
            b0, b1 = _valid_range(dj, sw, w, ow)
            if flat:
                # One long shifted copy of the plane, then zero what lies in the padding.
                a0, a1, shift, lo, hi = _flat_shift(di, dj, h, w, oh)
                _fill(row[:lo], zero)
                _copy(row[lo:hi], src[lo + shift : hi + shift], hi - lo)
                _fill(row[hi:], zero)
                for a in range(a0, a1):
                    for b in range(b0):
                        row[a * ow + b] = zero
                    for b in range(b1, ow):
                        row[a * ow + b] = zero
                continue
            for a in range(oh):
                ih = a * sh + di
                line = row[a * ow : (a + 1) * ow]
                if ih < 0 or ih >= h:
                    _fill(line, zero)
                    continue
                _fill(line[:b0], zero)
                s0 = ih * w + dj
                if sw == 1:
                    _copy(line[b0:b1], src[s0 + b0 : s0 + b1], b1 - b0)
                else:
                    for b in range(b0, b1):
                        line[b] = src[s0 + b * sw]
                _fill(line[b1:], zero)


@register_jitable
def _fold_plane(cols, dst, c, col0, geo, h, w):
    """dst (H * W,) = the fold of the rows of channel ``c`` of ``cols``, columns
    [col0, col0 + OH * OW). The entries that im2col reads from the padding are zeroed in
    ``cols`` on the way (it is scratch here), which lets unit-stride rows fold as one long
    shifted add."""
    kh, kw, sh, sw = geo[_KH], geo[_KW], geo[_SH], geo[_SW]
    pt, pl, dh, dw, oh, ow = geo[_PT], geo[_PL], geo[_DH], geo[_DW], geo[_OH], geo[_OW]
    zero = cast_to(0.0, cols.dtype)
    plane = oh * ow
    flat = sh == 1 and sw == 1 and ow == w
    _fill(dst, zero)
    for i in range(kh):
        for j in range(kw):
            row = cols[(c * kh + i) * kw + j, col0 : col0 + plane]
            di = i * dh - pt
            dj = j * dw - pl
            b0, b1 = _valid_range(dj, sw, w, ow)
            if flat:
                a0, a1, shift, lo, hi = _flat_shift(di, dj, h, w, oh)
                for a in range(a0, a1):
                    for b in range(b0):
                        row[a * ow + b] = zero
                    for b in range(b1, ow):
                        row[a * ow + b] = zero
                _add(dst[lo + shift : hi + shift], row[lo:hi], hi - lo)
                continue
            for a in range(oh):
                ih = a * sh + di
                if ih < 0 or ih >= h:
                    continue
                s0 = ih * w + dj
                if sw == 1:
                    _add(dst[s0 + b0 : s0 + b1], row[a * ow + b0 : a * ow + b1], b1 - b0)
                else:
                    for b in range(b0, b1):
                        dst[s0 + b * sw] += row[a * ow + b]


def _im2col_fast_kernel(x, cols, geo):
    """cols (C * kh * kw, N * OH * OW) = im2col(x), parallel over (image, channel) planes."""
    n_img, n_ch, h, w = x.shape
    plane = geo[_OH] * geo[_OW]
    xf = x.reshape(n_img * n_ch, h * w)
    for t in prange(n_img * n_ch):
        _unfold_plane(xf[t], cols, t % n_ch, (t // n_ch) * plane, geo, h, w)


def _col2im_scratch_kernel(cols, dx, geo):
    """dx = col2im(cols), parallel over (image, channel) planes; ``cols`` is overwritten in
    its padding entries (see _fold_plane)."""
    n_img, n_ch, h, w = dx.shape
    plane = geo[_OH] * geo[_OW]
    df = dx.reshape(n_img * n_ch, h * w)
    for t in prange(n_img * n_ch):
        _fold_plane(cols, df[t], t % n_ch, (t // n_ch) * plane, geo, h, w)


def _im2col_image_kernel(x, n, cols, geo):
    """cols (C * kh * kw, OH * OW) = the unfold of image ``n`` of x, on the calling thread."""
    n_img, n_ch, h, w = x.shape
    xf = x.reshape(n_img * n_ch, h * w)
    for c in range(n_ch):
        _unfold_plane(xf[n * n_ch + c], cols, c, 0, geo, h, w)


def _col2im_image_kernel(cols, n, dx, geo):
    """dx[n] = the fold of one image's columns (C * kh * kw, OH * OW), on the calling
    thread; ``cols`` is scratch (see _fold_plane)."""
    n_img, n_ch, h, w = dx.shape
    df = dx.reshape(n_img * n_ch, h * w)
    for c in range(n_ch):
        _fold_plane(cols, df[n * n_ch + c], c, 0, geo, h, w)


def _rows_to_nchw_kernel(rows, bias, y):
    n_img, n_f, plane = y.shape
    has_bias = bias.shape[0] > 0
    for t in prange(n_img * n_f):
        n = t // n_f
        f = t % n_f
        b = bias[f] if has_bias else cast_to(0.0, y.dtype)
        src = n * plane
        for p in range(plane):
            y[n, f, p] = rows[f, src + p] + b


def _nchw_to_rows_kernel(dy, rows, db):
    n_img, n_f, plane = dy.shape
    want_db = db.shape[0] > 0
    for f in prange(n_f):
        total = 0.0
        for n in range(n_img):
            dst = n * plane
            for p in range(plane):
                v = dy[n, f, p]
                rows[f, dst + p] = v
                total += v
        if want_db:
            db[f] = total


def _bias_grad_kernel(dy, db):
    n_img, n_f, plane = dy.shape
    for f in prange(n_f):
        total = 0.0
        for n in range(n_img):
            for p in range(plane):
                total += dy[n, f, p]
        db[f] = total


def _depthwise_forward_kernel(x, wt, bias, y, geo):
    n_img, n_ch, h, w = x.shape
    n_f = wt.shape[0]
    mult = n_f // n_ch
    kh, kw, sh, sw = geo[_KH], geo[_KW], geo[_SH], geo[_SW]
    pt, pl, dh, dw, oh, ow = geo[_PT], geo[_PL], geo[_DH], geo[_DW], geo[_OH], geo[_OW]
    has_bias = bias.shape[0] > 0
    for t in prange(n_img * n_f):
        n = t // n_f
        f = t % n_f
        c = f // mult
        b = bias[f] if has_bias else cast_to(0.0, y.dtype)
        for a in range(oh):
            for q in range(ow):
                y[n, f, a, q] = b
        for i in range(kh):
            for j in range(kw):
                wv = wt[f, 0, i, j]
                off = j * dw - pl
                b0, b1 = _valid_range(off, sw, w, ow)
                for a in range(oh):
                    ih = a * sh + i * dh - pt
                    if ih < 0 or ih >= h:
                        continue
                    for q in range(b0, b1):
                        y[n, f, a, q] += wv * x[n, c, ih, q * sw + off]


def _depthwise_weight_grad_kernel(x, dy, dw_out, geo):
    n_img, n_ch, h, w = x.shape
    n_f = dy.shape[1]
    mult = n_f // n_ch
    kh, kw, sh, sw = geo[_KH], geo[_KW], geo[_SH], geo[_SW]
    pt, pl, dh, dw, oh, ow = geo[_PT], geo[_PL], geo[_DH], geo[_DW], geo[_OH], geo[_OW]
    for t in prange(n_f * kh * kw):
        f = t // (kh * kw)
        i = (t // kw) % kh
        j = t % kw
        c = f // mult
        off = j * dw - pl
        b0, b1 = _valid_range(off, sw, w, ow)
        total = 0.0
        for n in range(n_img):
            for a in range(oh):
                ih = a * sh + i * dh - pt
                if ih < 0 or ih >= h:
                    continue
                for q in range(b0, b1):
                    total += dy[n, f, a, q] * x[n, c, ih, q * sw + off]
        dw_out[f, 0, i, j] = total


def _depthwise_input_grad_kernel(dy, wt, dx, geo):
    n_img, n_ch, h, w = dx.shape
    n_f = dy.shape[1]
    mult = n_f // n_ch
    kh, kw, sh, sw = geo[_KH], geo[_KW], geo[_SH], geo[_SW]
    pt, pl, dh, dw, oh, ow = geo[_PT], geo[_PL], geo[_DH], geo[_DW], geo[_OH], geo[_OW]
    for t in prange(n_img * n_ch):
        n = t // n_ch
        c = t % n_ch
        for ih in range(h):
            for iw in range(w):
                dx[n, c, ih, iw] = 0
        for m in range(mult):
            f = c * mult + m
            for i in range(kh):
                for j in range(kw):
                    wv = wt[f, 0, i, j]
                    off = j * dw - pl
                    b0, b1 = _valid_range(off, sw, w, ow)
                    for a in range(oh):
                        ih = a * sh + i * dh - pt
                        if ih < 0 or ih >= h:
                            continue
                        for q in range(b0, b1):
                            dx[n, c, ih, q * sw + off] += wv * dy[n, f, a, q]


def _gemm_nn_kernel(a, b, c):
    """c = a @ b for a (M, K), b (K, N): rows of b streamed, the inner loop vectorises."""
    m, k_dim = a.shape
    n = b.shape[1]
    for i in prange(m):
        for j in range(n):
            c[i, j] = 0
        for k in range(k_dim):
            aik = a[i, k]
            for j in range(n):
                c[i, j] += aik * b[k, j]


def _gemm_tn_kernel(a, b, c):
    """c = a.T @ b for a (K, M), b (K, N)."""
    k_dim, m = a.shape
    n = b.shape[1]
    for i in prange(m):
        for j in range(n):
            c[i, j] = 0
        for k in range(k_dim):
            aki = a[k, i]
            for j in range(n):
                c[i, j] += aki * b[k, j]


def _gemm_nt_kernel(a, b, c):
    """c = a @ b.T for a (M, K), b (N, K): dot products of contiguous rows."""
    m, k_dim = a.shape
    n = b.shape[0]
    for i in prange(m):
        for j in range(n):
            total = cast_to(0.0, c.dtype)
            for k in range(k_dim):
                total += a[i, k] * b[j, k]
            c[i, j] = total


def _maxpool_kernel(x, y, arg, geo):
    n_img, n_ch, h, w = x.shape
    kh, kw, sh, sw = geo[_KH], geo[_KW], geo[_SH], geo[_SW]
    pt, pl, oh, ow = geo[_PT], geo[_PL], geo[_OH], geo[_OW]
    for t in prange(n_img * n_ch):
        n = t // n_ch
        c = t % n_ch
        for a in range(oh):
            for q in range(ow):
                best = -np.inf
                best_k = -1
                for i in range(kh):
                    ih = a * sh + i - pt
                    if ih < 0 or ih >= h:
                        continue
                    for j in range(kw):
                        iw = q * sw + j - pl
                        if iw < 0 or iw >= w:
                            continue
                        v = x[n, c, ih, iw]
                        if best_k < 0 or v > best or (v != v and best == best):
                            best = v
                            best_k = i * kw + j
                y[n, c, a, q] = best
                arg[n, c, a, q] = best_k


def _maxpool_backward_kernel(dy, arg, dx, geo):
    n_img, n_ch, h, w = dx.shape
    kw, sh, sw = geo[_KW], geo[_SH], geo[_SW]
    pt, pl, oh, ow = geo[_PT], geo[_PL], geo[_OH], geo[_OW]
    for t in prange(n_img * n_ch):
        n = t // n_ch
        c = t % n_ch
        for ih in range(h):
            for iw in range(w):
                dx[n, c, ih, iw] = 0
        for a in range(oh):
            for q in range(ow):
                k = arg[n, c, a, q]
                if k < 0:
                    continue
                ih = a * sh + k // kw - pt
                iw = q * sw + k % kw - pl
                dx[n, c, ih, iw] += dy[n, c, a, q]


# Average pooling works on row views of one (image, channel) plane: the window's input rows
# are summed into one row (contiguous, vectorised), then the outputs whose windows lie inside
# the row take their kw columns in kw strided passes (the loop over outputs innermost, so it
# vectorises too); the few edge outputs are summed one by one. Element-by-element indexing
# of the 4-D arrays inside the window loops ran 2.3x slower than the NumPy reference
# (32x32x28x28 float32, 2x2, forward + backward).
@njit(**helper_jit_flags())
def _interior(n_out, k, s, pad, n_in):  # pragma: no cover  (compiled)
    """Outputs ``[q0, q1)`` whose windows ``[q*s - pad, q*s - pad + k)`` lie in ``[0, n_in)``."""
    q0 = min((pad + s - 1) // s, n_out)
    q1 = max(min((n_in + pad - k) // s + 1, n_out), q0)
    return q0, q1


def _avgpool_kernel(x, y, geo, nblocks):
    n_img, n_ch, h, w = x.shape
    kh, kw, sh, sw = geo[_KH], geo[_KW], geo[_SH], geo[_SW]
    pt, pl, oh, ow = geo[_PT], geo[_PL], geo[_OH], geo[_OW]
    planes = n_img * n_ch
    q0, q1 = _interior(ow, kw, sw, pl, w)
    for blk in prange(nblocks):
        rows = np.empty(w, dtype=y.dtype)
        for t in range(blk * planes // nblocks, (blk + 1) * planes // nblocks):
            plane = x[t // n_ch, t % n_ch]
            yplane = y[t // n_ch, t % n_ch]
            for a in range(oh):
                i0 = max(a * sh - pt, 0)
                i1 = min(a * sh - pt + kh, h)
                for iw in range(w):
                    rows[iw] = 0
                for ih in range(i0, i1):
                    xr = plane[ih]
                    for iw in range(w):
                        rows[iw] += xr[iw]
                yr = yplane[a]
                for q in range(q0, q1):
                    yr[q] = 0
                for dj in range(kw):
                    off = dj - pl
                    for q in range(q0, q1):
                        yr[q] += rows[q * sw + off]
                count = cast_to(max((i1 - i0) * kw, 1), y.dtype)
                for q in range(q0, q1):
                    yr[q] /= count
                for lo, hi in ((0, q0), (q1, ow)):  # the edges, window cut by the border
                    for q in range(lo, hi):
                        j0 = max(q * sw - pl, 0)
                        j1 = min(q * sw - pl + kw, w)
                        total = cast_to(0.0, y.dtype)
                        for iw in range(j0, j1):
                            total += rows[iw]
                        yr[q] = total / max((i1 - i0) * (j1 - j0), 1)


def _avgpool_backward_kernel(dy, dx, geo, nblocks):
    n_img, n_ch, h, w = dx.shape
    kh, kw, sh, sw = geo[_KH], geo[_KW], geo[_SH], geo[_SW]
    pt, pl, oh, ow = geo[_PT], geo[_PL], geo[_OH], geo[_OW]
    planes = n_img * n_ch
    for blk in prange(nblocks):
        spread = np.empty(w, dtype=dx.dtype)
        for t in range(blk * planes // nblocks, (blk + 1) * planes // nblocks):
            gplane = dy[t // n_ch, t % n_ch]
            dplane = dx[t // n_ch, t % n_ch]
            for ih in range(h):
                dr = dplane[ih]
                for iw in range(w):
                    dr[iw] = 0
            for a in range(oh):
                i0 = max(a * sh - pt, 0)
                i1 = min(a * sh - pt + kh, h)
                # One output row's gradients spread over the input columns, then added to
                # each of its window's input rows.
                for iw in range(w):
                    spread[iw] = 0
                gr = gplane[a]
                for q in range(ow):
                    j0 = max(q * sw - pl, 0)
                    j1 = min(q * sw - pl + kw, w)
                    g = gr[q] / max((i1 - i0) * (j1 - j0), 1)
                    for iw in range(j0, j1):
                        spread[iw] += g
                for ih in range(i0, i1):
                    dr = dplane[ih]
                    for iw in range(w):
                        dr[iw] += spread[iw]


#: Below this many elements of work a kernel runs on the calling thread. Waking the thread
#: pool costs more than it saves on small tensors; worse, the pool's workers keep spinning
#: after a region and starve the BLAS threads of the GEMM that follows (measured on the
#: digits CNN, 2 cores: 10-30 ms per small matmul right after parallel kernels).
SERIAL_WORK = 1 << 20

#: GEMMs of fewer multiply-adds than this run in a serial Numba loop instead of BLAS, for the
#: same reason: a small BLAS call is quick alone but pays for waking (and fighting) the BLAS
#: thread pool right after Numba's parallel regions.
SERIAL_GEMM_MACS = 1 << 24


def _plane_blocks(planes: int) -> int:
    """Blocks of (image, channel) planes for the pooling kernels: one per thread."""
    return max(1, min(planes, numba.get_num_threads()))


class _Kernel:
    """A kernel compiled twice, parallel and serial; :meth:`pick` chooses by work size."""

    def __init__(self, py_func, signature) -> None:
        self.parallel = LazyKernel(py_func, signature)
        self.serial = LazyKernel(py_func, signature, parallel=False)

    def pick(self, dtype, work: int):
        """The compiled function for ``dtype`` suited to ``work`` elements."""
        return (self.serial if work < SERIAL_WORK else self.parallel)[dtype]


_GEO = array(types.int64, 1, True)
_col2im = _Kernel(_col2im_kernel, lambda T: (array(T, 2, True), array(T, 4), _GEO))
_rows_to_nchw = _Kernel(
    _rows_to_nchw_kernel, lambda T: (array(T, 2, True), array(T, 1, True), array(T, 3))
)
_nchw_to_rows = _Kernel(
    _nchw_to_rows_kernel, lambda T: (array(T, 3, True), array(T, 2), array(T, 1))
)
_bias_grad = _Kernel(_bias_grad_kernel, lambda T: (array(T, 3, True), array(T, 1)))
_dw_forward = _Kernel(
    _depthwise_forward_kernel,
    lambda T: (array(T, 4, True), array(T, 4, True), array(T, 1, True), array(T, 4), _GEO),
)
_dw_weight_grad = _Kernel(
    _depthwise_weight_grad_kernel,
    lambda T: (array(T, 4, True), array(T, 4, True), array(T, 4), _GEO),
)
_dw_input_grad = _Kernel(
    _depthwise_input_grad_kernel,
    lambda T: (array(T, 4, True), array(T, 4, True), array(T, 4), _GEO),
)
_im2col_fast = _Kernel(_im2col_fast_kernel, lambda T: (array(T, 4, True), array(T, 2), _GEO))
_im2col_image = LazyKernel(
    _im2col_image_kernel, lambda T: (array(T, 4, True), types.int64, array(T, 2), _GEO),
    parallel=False,
)
_col2im_image = LazyKernel(
    _col2im_image_kernel, lambda T: (array(T, 2), types.int64, array(T, 4), _GEO),
    parallel=False,
)
_col2im_scratch = _Kernel(_col2im_scratch_kernel, lambda T: (array(T, 2), array(T, 4), _GEO))
_GEMM_SIG = lambda T: (array(T, 2, True), array(T, 2, True), array(T, 2))  # noqa: E731
_gemm_nn = LazyKernel(_gemm_nn_kernel, _GEMM_SIG, parallel=False)
_gemm_tn = LazyKernel(_gemm_tn_kernel, _GEMM_SIG, parallel=False)
_gemm_nt = LazyKernel(_gemm_nt_kernel, _GEMM_SIG, parallel=False)
_maxpool = _Kernel(
    _maxpool_kernel, lambda T: (array(T, 4, True), array(T, 4), array(types.int32, 4), _GEO)
)
_maxpool_backward = _Kernel(
    _maxpool_backward_kernel,
    lambda T: (array(T, 4, True), array(types.int32, 4, True), array(T, 4), _GEO),
)
_avgpool = _Kernel(
    _avgpool_kernel, lambda T: (array(T, 4, True), array(T, 4), _GEO, types.intp)
)
_avgpool_backward = _Kernel(
    _avgpool_backward_kernel, lambda T: (array(T, 4, True), array(T, 4), _GEO, types.intp)
)


#: Whether BLAS-sized ungrouped convolutions run image by image on Python threads with
#: single-threaded BLAS (:func:`_image_forward`); else as one batch-wide unfold, three
#: multi-threaded BLAS GEMMs and layout passes.
IMAGE_BY_IMAGE = True

#: Whether the layout kernels between BLAS calls run on the calling thread only. OpenBLAS's
#: idle workers spin for a while after each GEMM; a Numba parallel region right after one
#: waits for a core that a spinning worker holds (PERF-NOTES: pools fight), and these passes
#: are memory-bound anyway.
SERIAL_BETWEEN_BLAS = True


def _layout(kernel: _Kernel, dt, work: int, blas: bool):
    """The build of a layout kernel for a convolution whose GEMMs do (``blas``) or do not
    go to BLAS."""
    if blas and SERIAL_BETWEEN_BLAS:
        return kernel.serial[dt]
    return kernel.pick(dt, work)


# -- validation helpers ------------------------------------------------------------------
def _float_dtype(x) -> np.dtype | None:
    if isinstance(x, np.ndarray) and x.dtype in (np.float32, np.float64):
        return x.dtype
    return None


def _ok_out(out, dtype, shape, *inputs) -> bool:
    return out is None or is_kernel_output(out, dtype, tuple(shape), *inputs)


def _alloc(out, shape, dtype):
    return np.empty(shape, dtype=dtype) if out is None else out


def _empty_bias(dtype) -> np.ndarray:
    return np.empty(0, dtype=dtype)


def _small(m: int, k: int, n: int) -> bool:
    return m * k * n < SERIAL_GEMM_MACS


def _mm(a, b, out):
    """out = a @ b (all C-contiguous 2-D)."""
    if _small(a.shape[0], a.shape[1], b.shape[1]):
        _gemm_nn[out.dtype](a, b, out)
    else:
        np.matmul(a, b, out=out)


def _mm_tn(a, b, out):
    """out = a.T @ b (a, b C-contiguous 2-D)."""
    if _small(a.shape[1], a.shape[0], b.shape[1]):
        _gemm_tn[out.dtype](a, b, out)
    else:
        np.matmul(a.T, b, out=out)


def _mm_nt(a, b, out):
    """out = a @ b.T (a, b C-contiguous 2-D)."""
    if _small(a.shape[0], a.shape[1], b.shape[0]):
        _gemm_nt[out.dtype](a, b, out)
    else:
        np.matmul(a, b.T, out=out)


# -- image by image: BLAS-sized ungrouped convolutions --------------------------------------
_tls = threading.local()


def _scratch(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """A buffer private to the calling thread, kept between calls (no page faults)."""
    store = getattr(_tls, "buffers", None)
    if store is None:
        store = _tls.buffers = {}
    key = (name, np.dtype(dtype))
    buf = store.get(key)
    if buf is None or buf.shape != shape:
        buf = store[key] = np.empty(shape, dtype=dtype)
    return buf


def _image_forward(x, W, b, y, geo, dt) -> None:
    """y[n] = W (F, C*kh*kw) @ unfold(x[n]) + b, image by image, images spread over threads.

    One image's columns (C*kh*kw, OH*OW; 451 KiB for the benchmark) live in a per-thread
    buffer that stays in the cache, and the GEMM writes the image's NCHW output directly: no
    batch-sized column matrix, no transpose pass. Each thread runs its GEMMs on one BLAS
    thread (:func:`~fastnn.kernels.cpu.blas_threads.parallel_items`)."""
    n, f = x.shape[0], W.shape[0]
    ck = W.size // f
    plane = y.shape[2] * y.shape[3]
    w2 = W.reshape(f, ck)
    b2 = None if b is None else b.reshape(f, 1)
    y3 = y.reshape(n, f, plane)
    unfold = _im2col_image[dt]

    def body(worker: int, items) -> None:
        cols = _scratch("cols", (ck, plane), dt)
        for i in items:
            unfold(x, i, cols, geo)
            yi = y3[i]
            np.matmul(w2, cols, out=yi)
            if b2 is not None:
                yi += b2

    parallel_items(body, n)


#: The image-by-image backward sums dW and db over this many fixed runs of consecutive
#: images (at most one per image), each run in image order, then over the runs in order:
#: threads take whole runs, so the sums do not depend on which thread took which images
#: (results are identical from run to run and for any thread count).
GRAD_CHUNKS = 8


def _image_backward(dy, W, x, geo, dW, db, dx, need_dx, dt) -> None:
    """The backward of :func:`_image_forward`, image by image: the columns are unfolded again
    from the saved input (cheaper than keeping a batch-sized column matrix), dW and db are
    summed per run of images (:data:`GRAD_CHUNKS`) and then over the runs, and each image's
    column gradient is folded into dx[n] while it is still in the cache."""
    n, f = dy.shape[:2]
    ck = W.size // f
    plane = dy.shape[2] * dy.shape[3]
    w2t = W.reshape(f, ck).T
    dy3 = dy.reshape(n, f, plane)
    unfold, fold = _im2col_image[dt], _col2im_image[dt]
    chunks = min(n, GRAD_CHUNKS)
    acc_w = np.zeros((chunks, f, ck), dtype=dt) if dW is not None else None
    acc_b = np.zeros((chunks, f), dtype=dt) if db is not None else None

    def body(worker: int, items) -> None:
        cols = _scratch("cols", (ck, plane), dt)
        dcols = _scratch("dcols", (ck, plane), dt)
        tmp_w = _scratch("dw", (f, ck), dt)
        tmp_b = _scratch("db", (f,), dt)
        for chunk in items:
            for i in range(chunk * n // chunks, (chunk + 1) * n // chunks):
                dyi = dy3[i]
                if acc_b is not None:
                    np.add.reduce(dyi, axis=1, out=tmp_b)
                    acc_b[chunk] += tmp_b
                if acc_w is not None:
                    unfold(x, i, cols, geo)
                    np.matmul(dyi, cols.T, out=tmp_w)
                    acc_w[chunk] += tmp_w
                if need_dx:
                    np.matmul(w2t, dyi, out=dcols)
                    fold(dcols, i, dx, geo)

    parallel_items(body, chunks)
    if acc_w is not None:
        np.sum(acc_w, axis=0, out=dW.reshape(f, ck))
    if acc_b is not None:
        np.sum(acc_b, axis=0, out=db)


# -- overrides ---------------------------------------------------------------------------
@override("numba")
def im2col(
    be, x, kernel_size: Pair, stride: Pair = (1, 1), padding: Quad = (0, 0, 0, 0),
    dilation: Pair = (1, 1), out=None,
):
    """Parallel Numba unfold of ``x`` (N, C, H, W) into ``(C * kh * kw, N * OH * OW)``."""
    dt = _float_dtype(x)
    if dt is None or x.ndim != 4 or not is_kernel_array(x, dt):
        return ref.im2col(be, x, kernel_size, stride, padding, dilation, out=out)
    n, c, h, w = x.shape
    oh, ow = ref.conv_output_hw((h, w), kernel_size, stride, padding, dilation)
    shape = (c * kernel_size[0] * kernel_size[1], n * oh * ow)
    if oh < 1 or ow < 1 or not _ok_out(out, dt, shape, x):
        return ref.im2col(be, x, kernel_size, stride, padding, dilation, out=out)
    cols = _alloc(out, shape, dt)
    geo = _geometry(kernel_size, stride, padding, dilation, (oh, ow))
    _im2col_fast.pick(dt, cols.size)(x, cols, geo)
    return cols


@override("numba")
def col2im(
    be, cols, x_shape: tuple[int, int, int, int], kernel_size: Pair, stride: Pair = (1, 1),
    padding: Quad = (0, 0, 0, 0), dilation: Pair = (1, 1), out=None,
):
    """Parallel Numba fold of columns onto an image of ``x_shape`` (the adjoint of im2col)."""
    dt = _float_dtype(cols)
    n, c, h, w = x_shape
    oh, ow = ref.conv_output_hw((h, w), kernel_size, stride, padding, dilation)
    expected = (c * kernel_size[0] * kernel_size[1], n * oh * ow)
    if dt is None or oh < 1 or ow < 1 or not is_kernel_array(cols, dt, expected):
        if cols.shape != expected:
            raise ValueError(
                f"col2im: expected columns of shape {expected} for x_shape {tuple(x_shape)}, "
                f"received shape {cols.shape}"
            )
        return ref.col2im(be, cols, x_shape, kernel_size, stride, padding, dilation, out=out)
    if not _ok_out(out, dt, x_shape, cols):
        return ref.col2im(be, cols, x_shape, kernel_size, stride, padding, dilation, out=out)
    dx = _alloc(out, tuple(x_shape), dt)
    geo = _geometry(kernel_size, stride, padding, dilation, (oh, ow))
    _col2im.pick(dt, cols.size)(cols, dx, geo)
    return dx


def _is_depthwise(x, W, groups: int) -> bool:
    return groups == x.shape[1] and W.shape[1] == 1 and groups > 1


def _conv_kernel_args_ok(x, W, b, dt) -> bool:
    if dt is None or x.ndim != 4 or W.ndim != 4 or not is_kernel_array(x, dt):
        return False
    if not is_kernel_array(W, dt):
        return False
    return b is None or is_kernel_array(b, dt, (W.shape[0],))


@override("numba")
def conv2d_forward(
    be, x, W, b=None, stride: Pair = (1, 1), padding: Quad = (0, 0, 0, 0),
    dilation: Pair = (1, 1), groups: int = 1, cols=None, rows=None, out=None,
):
    """im2col (Numba) + GEMM (BLAS) + fused transpose and bias (Numba); depthwise direct."""
    dt = _float_dtype(x)
    if dt is not None and not x.flags.c_contiguous:
        x = np.ascontiguousarray(x)
    if not _conv_kernel_args_ok(x, W, b, dt):
        return ref.conv2d_forward(be, x, W, b, stride, padding, dilation, groups, cols, rows, out)
    n, c, h, w = x.shape
    f, cg, kh, kw = W.shape
    oh, ow = ref.conv_output_hw((h, w), (kh, kw), stride, padding, dilation)
    p = n * oh * ow
    if not _ok_out(out, dt, (n, f, oh, ow), x) or not _ok_out(rows, dt, (f, p)):
        return ref.conv2d_forward(be, x, W, b, stride, padding, dilation, groups, cols, rows, out)
    bias = _empty_bias(dt) if b is None else b
    y = _alloc(out, (n, f, oh, ow), dt)
    geo = _geometry((kh, kw), stride, padding, dilation, (oh, ow))
    if _is_depthwise(x, W, groups):
        _dw_forward.pick(dt, y.size * W[0].size)(x, W, bias, y, geo)
        return y, x  # the direct backward reads the input itself
    ck = cg * kh * kw
    if not _small(f, ck, p):
        if groups == 1 and IMAGE_BY_IMAGE:
            # BLAS-sized: image by image, images spread over threads (see _image_forward).
            _image_forward(x, W, b, y, geo, dt)
            return y, x  # the backward unfolds the saved input again, image by image
        if groups != 1:
            return ref.conv2d_forward(be, x, W, b, stride, padding, dilation, groups, cols,
                                      rows, out)
    blas = not _small(f, ck, p)
    if cols is None or not is_kernel_output(cols, dt, (groups * ck, p), x):
        cols = np.empty((groups * ck, p), dtype=dt)
    rows = _alloc(rows, (f, p), dt)
    _layout(_im2col_fast, dt, cols.size, blas)(x, cols, geo)
    if groups == 1:
        _mm(W.reshape(f, ck), cols, rows)
    else:
        np.matmul(
            W.reshape(groups, f // groups, ck), cols.reshape(groups, ck, p),
            out=rows.reshape(groups, f // groups, p),
        )
    _layout(_rows_to_nchw, dt, rows.size, blas)(rows, bias, y.reshape(n, f, oh * ow))
    return y, cols


def _depthwise_backward(dy, W, x, x_shape, geo, dW, db, dx, need_dx, dt):
    if tuple(x.shape) != tuple(x_shape) or not is_kernel_array(x, dt):
        raise ValueError(
            f"conv2d_backward: the saved input has shape {x.shape}, expected {tuple(x_shape)}"
        )
    dy3 = dy.reshape(dy.shape[0], dy.shape[1], -1)
    if db is not None:
        _bias_grad.pick(dt, dy3.size)(dy3, db)
    if dW is not None:
        _dw_weight_grad.pick(dt, dy.size * W[0].size)(x, dy, dW, geo)
    if not need_dx:
        return None
    dx = _alloc(dx, tuple(x_shape), dt)
    _dw_input_grad.pick(dt, dy.size * W[0].size)(dy, W, dx, geo)
    return dx


@override("numba")
def conv2d_backward(
    be, dy, W, cols, x_shape: tuple[int, int, int, int], stride: Pair = (1, 1),
    padding: Quad = (0, 0, 0, 0), dilation: Pair = (1, 1), groups: int = 1, dW=None, db=None,
    dx=None, need_dx: bool = True, rows=None, dcols=None,
):
    """Fused transpose and bias gradient (Numba) + GEMMs (BLAS) + col2im (Numba)."""
    dt = _float_dtype(dy)
    if dt is not None and not dy.flags.c_contiguous:
        dy = np.ascontiguousarray(dy)
    args = (be, dy, W, cols, x_shape, stride, padding, dilation, groups, dW, db, dx, need_dx,
            rows, dcols)
    if dt is None or dy.ndim != 4 or not is_kernel_array(dy, dt) or not is_kernel_array(W, dt):
        return ref.conv2d_backward(*args)
    n, f, oh, ow = dy.shape
    _, cg, kh, kw = W.shape
    p = n * oh * ow
    ck = cg * kh * kw
    if (
        (dW is not None and not _ok_out(dW, dt, W.shape, dy, W))
        or (db is not None and not _ok_out(db, dt, (f,), dy))
        or (dx is not None and not _ok_out(dx, dt, x_shape, dy, cols))
        or not _ok_out(rows, dt, (f, p), dy)
    ):
        return ref.conv2d_backward(*args)
    dy3 = dy.reshape(n, f, oh * ow)
    geo = _geometry((kh, kw), stride, padding, dilation, (oh, ow))
    if cols.ndim == 4:
        # The forward saved the input itself: the depthwise path (direct kernels, no columns)
        # or the per-image path of BLAS-sized convolutions (columns unfolded again).
        if groups > 1 and groups == x_shape[1] and W.shape[1] == 1 and f % groups == 0:
            return _depthwise_backward(dy, W, cols, x_shape, geo, dW, db, dx, need_dx, dt)
        if groups != 1:
            raise ValueError(
                f"conv2d_backward: received the saved input of shape {cols.shape}, which only "
                f"the depthwise path (groups == channels, W of shape (F, 1, kh, kw)) and the "
                f"image-by-image path (groups == 1) return; received groups={groups}, W of "
                f"shape {W.shape}"
            )
        if tuple(cols.shape) != tuple(x_shape) or not is_kernel_array(cols, dt):
            raise ValueError(
                f"conv2d_backward: the saved input has shape {cols.shape} and dtype "
                f"{cols.dtype}, expected {tuple(x_shape)} {dt.name}"
            )
        dx = _alloc(dx, tuple(x_shape), dt) if need_dx else None
        _image_backward(dy, W, cols, geo, dW, db, dx, need_dx, dt)
        return dx
    if groups != 1 and not _small(f, ck, p):
        return ref.conv2d_backward(*args)  # BLAS-sized grouped: see conv2d_forward
    if not is_kernel_array(cols, dt, (groups * ck, p)):
        raise ValueError(
            f"conv2d_backward: expected the forward's columns of shape {(groups * ck, p)} and "
            f"dtype {dt.name}, received {getattr(cols, 'shape', None)} "
            f"{getattr(cols, 'dtype', type(cols).__name__)}"
        )
    if dW is None and not need_dx:
        if db is not None:
            _bias_grad.pick(dt, dy3.size)(dy3, db)
        return None
    rows = _alloc(rows, (f, p), dt)
    blas = not _small(f, ck, p)
    bias_out = _empty_bias(dt) if db is None else db
    _layout(_nchw_to_rows, dt, rows.size, blas)(dy3, rows, bias_out)
    if dW is not None:
        if groups == 1:
            _mm_nt(rows, cols, dW.reshape(f, ck))
        else:
            np.matmul(
                rows.reshape(groups, f // groups, p),
                cols.reshape(groups, ck, p).transpose(0, 2, 1),
                out=dW.reshape(groups, f // groups, ck),
            )
    if not need_dx:
        return None
    shape = (groups * ck, p)
    if dcols is not None and not is_kernel_output(dcols, dt, shape, dy, W, cols, rows, dx):
        dcols = None
    dcols = _alloc(dcols, shape, dt)
    if groups == 1:
        _mm_tn(W.reshape(f, ck), rows, dcols)
    else:
        np.matmul(
            W.reshape(groups, f // groups, ck).transpose(0, 2, 1),
            rows.reshape(groups, f // groups, p),
            out=dcols.reshape(groups, ck, p),
        )
    # dcols is this op's scratch: the fold may zero its padding entries (_fold_plane).
    dx = _alloc(dx, tuple(x_shape), dt)
    _layout(_col2im_scratch, dt, dcols.size, blas)(dcols, dx, geo)
    return dx


def _is_index_array(a, shape) -> bool:
    return (
        isinstance(a, np.ndarray) and a.dtype == np.int32 and a.flags.c_contiguous
        and a.flags.aligned and a.shape == shape
    )


def _pool_input_ok(x, dt) -> bool:
    return dt is not None and x.ndim == 4 and is_kernel_array(x, dt)


@override("numba")
def maxpool2d(
    be, x, pool_size: Pair, stride: Pair, padding: Quad = (0, 0, 0, 0), out=None, argmax=None,
):
    """Parallel Numba max pooling over (n, c) planes; returns ``(y, argmax)``."""
    dt = _float_dtype(x)
    if not _pool_input_ok(x, dt):
        return ref.maxpool2d(be, x, pool_size, stride, padding, out=out, argmax=argmax)
    n, c, h, w = x.shape
    oh, ow = ref.conv_output_hw((h, w), pool_size, stride, padding, (1, 1))
    shape = (n, c, oh, ow)
    arg_ok = argmax is None or (_is_index_array(argmax, shape) and argmax.flags.writeable)
    if oh < 1 or ow < 1 or not _ok_out(out, dt, shape, x) or not arg_ok:
        return ref.maxpool2d(be, x, pool_size, stride, padding, out=out, argmax=argmax)
    y = _alloc(out, shape, dt)
    arg = _alloc(argmax, shape, np.int32)
    _maxpool.pick(dt, x.size)(x, y, arg, _geometry(pool_size, stride, padding, (1, 1), (oh, ow)))
    return y, arg


@override("numba")
def maxpool2d_backward(
    be, dy, argmax, x_shape: tuple[int, int, int, int], pool_size: Pair, stride: Pair,
    padding: Quad = (0, 0, 0, 0), out=None,
):
    """Parallel Numba routing of each window's gradient to its argmax."""
    dt = _float_dtype(dy)
    ok = (
        _pool_input_ok(dy, dt)
        and _is_index_array(argmax, tuple(dy.shape))
        and _ok_out(out, dt, tuple(x_shape), dy)
    )
    if not ok:
        return ref.maxpool2d_backward(be, dy, argmax, x_shape, pool_size, stride, padding, out)
    window = pool_size[0] * pool_size[1]
    if argmax.size and (int(argmax.min()) < -1 or int(argmax.max()) >= window):
        raise ValueError(
            f"maxpool2d_backward: argmax values must lie in [0, {window}) for pool size "
            f"{tuple(pool_size)}, received [{int(argmax.min())}, {int(argmax.max())}]"
        )
    dx = _alloc(out, tuple(x_shape), dt)
    geo = _geometry(pool_size, stride, padding, (1, 1), tuple(dy.shape[2:]))
    _maxpool_backward.pick(dt, dx.size)(dy, argmax, dx, geo)
    return dx


@override("numba")
def avgpool2d(be, x, pool_size: Pair, stride: Pair, padding: Quad = (0, 0, 0, 0), out=None):
    """Parallel Numba average pooling (padding excluded from the count)."""
    dt = _float_dtype(x)
    if not _pool_input_ok(x, dt):
        return ref.avgpool2d(be, x, pool_size, stride, padding, out=out)
    n, c, h, w = x.shape
    oh, ow = ref.conv_output_hw((h, w), pool_size, stride, padding, (1, 1))
    if oh < 1 or ow < 1 or not _ok_out(out, dt, (n, c, oh, ow), x):
        return ref.avgpool2d(be, x, pool_size, stride, padding, out=out)
    y = _alloc(out, (n, c, oh, ow), dt)
    _avgpool.pick(dt, x.size)(x, y, _geometry(pool_size, stride, padding, (1, 1), (oh, ow)),
                              _plane_blocks(n * c))
    return y


@override("numba")
def avgpool2d_backward(
    be, dy, x_shape: tuple[int, int, int, int], pool_size: Pair, stride: Pair,
    padding: Quad = (0, 0, 0, 0), out=None,
):
    """Parallel Numba spreading of each window's gradient over its pixels."""
    dt = _float_dtype(dy)
    if not _pool_input_ok(dy, dt) or not _ok_out(out, dt, tuple(x_shape), dy):
        return ref.avgpool2d_backward(be, dy, x_shape, pool_size, stride, padding, out=out)
    dx = _alloc(out, tuple(x_shape), dt)
    geo = _geometry(pool_size, stride, padding, (1, 1), tuple(dy.shape[2:]))
    _avgpool_backward.pick(dt, dx.size)(dy, dx, geo, _plane_blocks(x_shape[0] * x_shape[1]))
    return dx
