"""Numba kernels of the convolution and pooling ops (the ``numba`` overrides).

Conv2D runs as im2col + GEMM. Below :data:`SERIAL_GEMM_MACS` multiply-adds (the digits
examples, small batches) everything runs in Numba on the calling thread: the unfold
(``im2col``), the GEMMs, the transposes between the GEMM's ``(F, N * OH * OW)`` rows and NCHW
(fused with the bias add and the bias gradient) and the fold (``col2im``), so no thread pool
is woken and none fights another. BLAS-sized convolutions go to the NumPy reference (strided
copies and one BLAS GEMM), which measured faster than Numba kernels between BLAS calls on two
cores. Depthwise convolutions (``groups == C``, one input channel per filter) skip the unfold
and run as direct loops. Pooling runs as direct loops over ``(n, c)`` planes. Each kernel has
a parallel and a serial build; :data:`SERIAL_WORK` picks one by size. Column layout, tie rule
and padding semantics are those of :mod:`fastnn.kernels.reference.conv`.

Each public wrapper checks dtypes, contiguity and shapes before a kernel runs; arrays a
kernel cannot take (other dtypes, overlapping outputs) go to the reference implementation
and inconsistent shapes raise ``ValueError``, so a bad argument never reaches compiled code.
"""

from __future__ import annotations

import numpy as np
from numba import prange, types
from numba.extending import register_jitable

from fastnn.kernels.cpu.jit import LazyKernel, array, cast_to, is_kernel_array, is_kernel_output
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


def _im2col_kernel(x, cols, geo):
    n_img, n_ch, h, w = x.shape
    kh, kw, sh, sw = geo[_KH], geo[_KW], geo[_SH], geo[_SW]
    pt, pl, dh, dw, oh, ow = geo[_PT], geo[_PL], geo[_DH], geo[_DW], geo[_OH], geo[_OW]
    k = kh * kw
    plane = oh * ow
    zero = cast_to(0.0, cols.dtype)
    for t in prange(n_ch * k * n_img):
        n = t % n_img
        r = t // n_img
        c = r // k
        i = (r % k) // kw
        j = r % kw
        off = j * dw - pl
        b0, b1 = _valid_range(off, sw, w, ow)
        for a in range(oh):
            ih = a * sh + i * dh - pt
            dst = n * plane + a * ow
            if ih < 0 or ih >= h:
                for b in range(ow):
                    cols[r, dst + b] = zero
                continue
            for b in range(b0):
                cols[r, dst + b] = zero
            if sw == 1:  # unit stride: a contiguous slice copy (no per-index wraparound)
                cols[r, dst + b0 : dst + b1] = x[n, c, ih, b0 + off : b1 + off]
            else:
                for b in range(b0, b1):
                    cols[r, dst + b] = x[n, c, ih, b * sw + off]
            for b in range(b1, ow):
                cols[r, dst + b] = zero


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
                    if sw == 1:
                        dx[n, c, ih, b0 + off : b1 + off] += cols[r, src + b0 : src + b1]
                    else:
                        for b in range(b0, b1):
                            dx[n, c, ih, b * sw + off] += cols[r, src + b]


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


def _avgpool_kernel(x, y, geo):
    n_img, n_ch, h, w = x.shape
    kh, kw, sh, sw = geo[_KH], geo[_KW], geo[_SH], geo[_SW]
    pt, pl, oh, ow = geo[_PT], geo[_PL], geo[_OH], geo[_OW]
    for t in prange(n_img * n_ch):
        n = t // n_ch
        c = t % n_ch
        for a in range(oh):
            i0 = max(a * sh - pt, 0)
            i1 = min(a * sh - pt + kh, h)
            for q in range(ow):
                j0 = max(q * sw - pl, 0)
                j1 = min(q * sw - pl + kw, w)
                total = cast_to(0.0, y.dtype)
                for ih in range(i0, i1):
                    for iw in range(j0, j1):
                        total += x[n, c, ih, iw]
                count = max((i1 - i0) * (j1 - j0), 1)
                y[n, c, a, q] = total / count


def _avgpool_backward_kernel(dy, dx, geo):
    n_img, n_ch, h, w = dx.shape
    kh, kw, sh, sw = geo[_KH], geo[_KW], geo[_SH], geo[_SW]
    pt, pl, oh, ow = geo[_PT], geo[_PL], geo[_OH], geo[_OW]
    for t in prange(n_img * n_ch):
        n = t // n_ch
        c = t % n_ch
        for ih in range(h):
            for iw in range(w):
                dx[n, c, ih, iw] = 0
        for a in range(oh):
            i0 = max(a * sh - pt, 0)
            i1 = min(a * sh - pt + kh, h)
            for q in range(ow):
                j0 = max(q * sw - pl, 0)
                j1 = min(q * sw - pl + kw, w)
                count = max((i1 - i0) * (j1 - j0), 1)
                g = dy[n, c, a, q] / count
                for ih in range(i0, i1):
                    for iw in range(j0, j1):
                        dx[n, c, ih, iw] += g


#: Below this many elements of work a kernel runs on the calling thread. Waking the thread
#: pool costs more than it saves on small tensors; worse, the pool's workers keep spinning
#: after a region and starve the BLAS threads of the GEMM that follows (measured on the
#: digits CNN, 2 cores: 10-30 ms per small matmul right after parallel kernels).
SERIAL_WORK = 1 << 20

#: GEMMs of fewer multiply-adds than this run in a serial Numba loop instead of BLAS, for the
#: same reason: a small BLAS call is quick alone but pays for waking (and fighting) the BLAS
#: thread pool right after Numba's parallel regions.
SERIAL_GEMM_MACS = 1 << 24


class _Kernel:
    """A kernel compiled twice, parallel and serial; :meth:`pick` chooses by work size."""

    def __init__(self, py_func, signature) -> None:
        self.parallel = LazyKernel(py_func, signature)
        self.serial = LazyKernel(py_func, signature, parallel=False)

    def pick(self, dtype, work: int):
        """The compiled function for ``dtype`` suited to ``work`` elements."""
        return (self.serial if work < SERIAL_WORK else self.parallel)[dtype]


_GEO = array(types.int64, 1, True)
_im2col = _Kernel(_im2col_kernel, lambda T: (array(T, 4, True), array(T, 2), _GEO))
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
_avgpool = _Kernel(_avgpool_kernel, lambda T: (array(T, 4, True), array(T, 4), _GEO))
_avgpool_backward = _Kernel(
    _avgpool_backward_kernel, lambda T: (array(T, 4, True), array(T, 4), _GEO)
)


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
    _im2col.pick(dt, cols.size)(x, cols, geo)
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
        # BLAS-sized GEMMs: the NumPy reference (strided copies + one BLAS call) is faster here
        # than Numba kernels between BLAS calls (see SERIAL_GEMM_MACS): 9 ms against 11.5 ms
        # (parallel kernels: 24 ms) for the N=32, 16->32, 28x28 benchmark on two cores.
        return ref.conv2d_forward(be, x, W, b, stride, padding, dilation, groups, cols, rows,
                                  out)
    cols = im2col(be, x, (kh, kw), stride, padding, dilation, out=cols)
    rows = _alloc(rows, (f, p), dt)
    if groups == 1:
        _mm(W.reshape(f, ck), cols, rows)
    else:
        np.matmul(
            W.reshape(groups, f // groups, ck), cols.reshape(groups, ck, p),
            out=rows.reshape(groups, f // groups, p),
        )
    _rows_to_nchw.pick(dt, rows.size)(rows, bias, y.reshape(n, f, oh * ow))
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
        or (dx is not None and not _ok_out(dx, dt, x_shape, dy))
        or not _ok_out(rows, dt, (f, p), dy)
    ):
        return ref.conv2d_backward(*args)
    dy3 = dy.reshape(n, f, oh * ow)
    geo = _geometry((kh, kw), stride, padding, dilation, (oh, ow))
    if cols.ndim == 4:
        # The depthwise forward saved the input itself: direct kernels, no columns.
        if not (groups == x_shape[1] and W.shape[1] == 1 and f % groups == 0):
            raise ValueError(
                f"conv2d_backward: received the saved input of shape {cols.shape}, which only "
                f"the depthwise path (groups == channels, W of shape (F, 1, kh, kw)) returns; "
                f"received groups={groups}, W of shape {W.shape}"
            )
        return _depthwise_backward(dy, W, cols, x_shape, geo, dW, db, dx, need_dx, dt)
    if not _small(f, ck, p):
        return ref.conv2d_backward(*args)  # BLAS-sized: see conv2d_forward
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
    _nchw_to_rows.pick(dt, rows.size)(dy3, rows, _empty_bias(dt) if db is None else db)
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
    if not _ok_out(dcols, dt, shape):
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
    return col2im(be, dcols, x_shape, (kh, kw), stride, padding, dilation, out=dx)


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
    _avgpool.pick(dt, x.size)(x, y, _geometry(pool_size, stride, padding, (1, 1), (oh, ow)))
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
    _avgpool_backward.pick(dt, dx.size)(dy, dx, geo)
    return dx
