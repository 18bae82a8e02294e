"""Reference convolution and pooling ops on NCHW arrays, written against ``be.xp``.

Geometry arguments arrive resolved, as tuples of ints:

- ``kernel_size`` / ``pool_size``: ``(kh, kw)``;
- ``stride``: ``(sh, sw)``; ``dilation``: ``(dh, dw)``;
- ``padding``: ``(top, bottom, left, right)`` zeros (or -inf for max pooling) around H and W.

The output size along H is ``(H + top + bottom - dh * (kh - 1) - 1) // sh + 1`` (W alike).

Column layout. ``im2col`` returns ``cols`` of shape ``(C * kh * kw, N * OH * OW)``: row
``(c * kh + i) * kw + j`` holds, for every output position ``(n, oh, ow)`` in C order, the
input pixel ``x[n, c, oh * sh + i * dh - top, ow * sw + j * dw - left]`` (0 in the padding).
Channels are the slowest index, so the rows of a channel group are contiguous (grouped and
depthwise convolutions slice them), and a forward convolution is the single GEMM
``W.reshape(F, -1) @ cols`` of shape ``(F, N * OH * OW)``. ``col2im`` is the exact adjoint
of ``im2col``: it sums every column entry back onto the pixel it was read from.

Max pooling routes the gradient of each window to its argmax; on ties the FIRST maximum in
row-major window order wins (the smallest ``i * pw + j``), like ``torch.nn.functional.max_pool2d``
on CPU; a NaN counts as the maximum (the first NaN wins). Average pooling divides by the
number of window elements that lie inside the image (padding excluded, Keras ``"same"``
semantics, ``count_include_pad=False`` in PyTorch).
"""

from __future__ import annotations

from fastnn.kernels.registry import reference_op

Pair = tuple[int, int]
Quad = tuple[int, int, int, int]


def conv_output_hw(
    hw: Pair, kernel_size: Pair, stride: Pair, padding: Quad, dilation: Pair
) -> Pair:
    """(OH, OW) of a convolution or pooling window sliding over an image of size ``hw``."""
    (h, w), (kh, kw), (sh, sw), (pt, pb, pl, pr), (dh, dw) = (
        hw, kernel_size, stride, padding, dilation
    )
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
    return oh, ow


def _window_slices(i: int, j: int, oh: int, ow: int, stride: Pair, dilation: Pair):
    """Slices of the padded image read by window offset (i, j) at every output position."""
    h0, w0 = i * dilation[0], j * dilation[1]
    return (
        slice(h0, h0 + stride[0] * (oh - 1) + 1, stride[0]),
        slice(w0, w0 + stride[1] * (ow - 1) + 1, stride[1]),
    )


def _pad(xp, x, padding: Quad, value: float = 0.0):
    pt, pb, pl, pr = padding
    if pt == pb == pl == pr == 0:
        return x
    n, c, h, w = x.shape
    out = xp.full((n, c, h + pt + pb, w + pl + pr), value, dtype=x.dtype)
    out[:, :, pt : pt + h, pl : pl + w] = x
    return out


def _new(xp, shape, dtype, out):
    return xp.empty(shape, dtype=dtype) if out is None else out


@reference_op
def im2col(
    be, x, kernel_size: Pair, stride: Pair = (1, 1), padding: Quad = (0, 0, 0, 0),
    dilation: Pair = (1, 1), out=None,
):
    """Unfold ``x`` (N, C, H, W) into columns ``(C * kh * kw, N * OH * OW)`` (module doc)."""
    xp = be.xp
    n, c, h, w = x.shape
    kh, kw = kernel_size
    oh, ow = conv_output_hw((h, w), kernel_size, stride, padding, dilation)
    cols = _new(xp, (c * kh * kw, n * oh * ow), x.dtype, out)
    cols6 = cols.reshape(c, kh, kw, n, oh, ow)
    xpad = _pad(xp, x, padding)
    for i in range(kh):
        for j in range(kw):
            si, sj = _window_slices(i, j, oh, ow, stride, dilation)
            cols6[:, i, j] = xpad[:, :, si, sj].transpose(1, 0, 2, 3)
    return cols


@reference_op
def col2im(
    be, cols, x_shape: tuple[int, int, int, int], kernel_size: Pair, stride: Pair = (1, 1),
    padding: Quad = (0, 0, 0, 0), dilation: Pair = (1, 1), out=None,
):
    """Fold columns back onto an image of ``x_shape``, summing overlaps: the adjoint of im2col."""
    xp = be.xp
    n, c, h, w = x_shape
    kh, kw = kernel_size
    pt, pb, pl, pr = padding
    oh, ow = conv_output_hw((h, w), kernel_size, stride, padding, dilation)
    cols6 = cols.reshape(c, kh, kw, n, oh, ow)
    dpad = xp.zeros((n, c, h + pt + pb, w + pl + pr), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            si, sj = _window_slices(i, j, oh, ow, stride, dilation)
            dpad[:, :, si, sj] += cols6[:, i, j].transpose(1, 0, 2, 3)
    dx = _new(xp, (n, c, h, w), cols.dtype, out)
    dx[...] = dpad[:, :, pt : pt + h, pl : pl + w]
    return dx


@reference_op
def conv2d_forward(
    be, x, W, b=None, stride: Pair = (1, 1), padding: Quad = (0, 0, 0, 0),
    dilation: Pair = (1, 1), groups: int = 1, cols=None, rows=None, out=None,
):
    """y = conv2d(x, W) + b on NCHW input.

    Args:
        x: (N, C, H, W) input.
        W: (F, C // groups, kh, kw) filters, PyTorch layout.
        b: (F,) bias or None.
        stride, padding, dilation: resolved geometry (module doc).
        groups: input and output channels split into this many independent groups.
        cols: optional (C * kh * kw, N * OH * OW) buffer for the unfolded input.
        rows: optional (F, N * OH * OW) scratch buffer for the GEMM result.
        out: optional (N, F, OH, OW) output buffer.

    Returns:
        ``(y, cols)``: the output and what :func:`conv2d_backward` reads as ``cols``: the
        unfolded input, or, in implementations that do not keep batch-wide columns (the
        Numba depthwise and image-by-image paths), the input ``x`` itself.
    """
    xp = be.xp
    n, c, h, w = x.shape
    f, cg, kh, kw = W.shape
    oh, ow = conv_output_hw((h, w), (kh, kw), stride, padding, dilation)
    p = n * oh * ow
    cols = im2col(be, x, (kh, kw), stride, padding, dilation, out=cols)
    rows = _new(xp, (f, p), x.dtype, rows)
    xp.matmul(
        W.reshape(groups, f // groups, cg * kh * kw),
        cols.reshape(groups, cg * kh * kw, p),
        out=rows.reshape(groups, f // groups, p),
    )
    y = _new(xp, (n, f, oh, ow), x.dtype, out)
    y3 = y.reshape(n, f, oh * ow)
    y3[...] = rows.reshape(f, n, oh * ow).transpose(1, 0, 2)
    if b is not None:
        y3 += b[:, None]
    return y, cols


@reference_op
def conv2d_backward(
    be, dy, W, cols, x_shape: tuple[int, int, int, int], stride: Pair = (1, 1),
    padding: Quad = (0, 0, 0, 0), dilation: Pair = (1, 1), groups: int = 1, dW=None, db=None,
    dx=None, need_dx: bool = True, rows=None, dcols=None,
):
    """Gradients of :func:`conv2d_forward` given ``dy`` = dL/dy of shape (N, F, OH, OW).

    Writes dL/dW into ``dW`` (F, C // groups, kh, kw) and dL/db into ``db`` (F,) in place
    when given; ``cols`` is what the forward returned. ``rows`` (F, N * OH * OW) and
    ``dcols`` (C * kh * kw, N * OH * OW) are optional scratch buffers.

    Returns:
        dL/dx of shape ``x_shape`` (in ``dx`` if given), or None when ``need_dx`` is False.
    """
    xp = be.xp
    n, f, oh, ow = dy.shape
    _, cg, kh, kw = W.shape
    p = n * oh * ow
    ck = cg * kh * kw
    if cols is not None and cols.ndim == 4:
        # A direct implementation's forward saved the input itself: unfold it here.
        cols = im2col(be, cols, (kh, kw), stride, padding, dilation)
    dy3 = dy.reshape(n, f, oh * ow)
    if db is not None:
        xp.sum(dy3, axis=(0, 2), out=db)
    if dW is None and not need_dx:
        return None
    rows = _new(xp, (f, p), dy.dtype, rows)
    rows.reshape(f, n, oh * ow)[...] = dy3.transpose(1, 0, 2)
    rows_g = rows.reshape(groups, f // groups, p)
    if dW is not None:
        cols_g = cols.reshape(groups, ck, p)
        xp.matmul(rows_g, cols_g.transpose(0, 2, 1), out=dW.reshape(groups, f // groups, ck))
    if not need_dx:
        return None
    dcols = _new(xp, (groups * ck, p), dy.dtype, dcols)
    W_g = W.reshape(groups, f // groups, ck)
    xp.matmul(W_g.transpose(0, 2, 1), rows_g, out=dcols.reshape(groups, ck, p))
    return col2im(be, dcols, x_shape, (kh, kw), stride, padding, dilation, out=dx)


def _pool_windows(xp, x, pool_size, stride, padding, fill):
    """(kh * kw, N, C, OH, OW) stack of every window offset's view of the padded input."""
    n, c, h, w = x.shape
    oh, ow = conv_output_hw((h, w), pool_size, stride, padding, (1, 1))
    xpad = _pad(xp, x, padding, fill)
    views = []
    for i in range(pool_size[0]):
        for j in range(pool_size[1]):
            si, sj = _window_slices(i, j, oh, ow, stride, (1, 1))
            views.append(xpad[:, :, si, sj])
    return xp.stack(views), (oh, ow)


@reference_op
def maxpool2d(
    be, x, pool_size: Pair, stride: Pair, padding: Quad = (0, 0, 0, 0), out=None, argmax=None,
):
    """Max over each window of ``x`` (N, C, H, W); padding counts as -inf.

    Returns:
        ``(y, argmax)``: y (N, C, OH, OW), and int32 argmax of the same shape holding the
        window offset ``i * pw + j`` of the maximum (first maximum on ties, NaN wins).
    """
    xp = be.xp
    windows, (oh, ow) = _pool_windows(xp, x, pool_size, stride, padding, -xp.inf)
    n, c = x.shape[:2]
    arg = _new(xp, (n, c, oh, ow), xp.int32, argmax)
    arg[...] = xp.argmax(windows, axis=0)
    y = _new(xp, (n, c, oh, ow), x.dtype, out)
    y[...] = xp.take_along_axis(windows, arg[None].astype(xp.intp), axis=0)[0]
    return y, arg


@reference_op
def maxpool2d_backward(
    be, dy, argmax, x_shape: tuple[int, int, int, int], pool_size: Pair, stride: Pair,
    padding: Quad = (0, 0, 0, 0), out=None,
):
    """dL/dx of max pooling: each window's gradient goes to its argmax (see module doc)."""
    xp = be.xp
    n, c, h, w = x_shape
    pt, pb, pl, pr = padding
    oh, ow = dy.shape[2:]
    dpad = xp.zeros((n, c, h + pt + pb, w + pl + pr), dtype=dy.dtype)
    for i in range(pool_size[0]):
        for j in range(pool_size[1]):
            si, sj = _window_slices(i, j, oh, ow, stride, (1, 1))
            dpad[:, :, si, sj] += dy * (argmax == i * pool_size[1] + j)
    dx = _new(xp, x_shape, dy.dtype, out)
    dx[...] = dpad[:, :, pt : pt + h, pl : pl + w]
    return dx


def pool_counts(xp, hw: Pair, pool_size: Pair, stride: Pair, padding: Quad, dtype):
    """(OH, OW) array: how many elements of each pooling window lie inside the image."""
    oh, ow = conv_output_hw(hw, pool_size, stride, padding, (1, 1))
    counts = []
    for axis in range(2):
        start = xp.arange((oh, ow)[axis]) * stride[axis] - padding[2 * axis]
        lo = xp.maximum(start, 0)
        hi = xp.minimum(start + pool_size[axis], hw[axis])
        counts.append(xp.maximum(hi - lo, 0).astype(dtype))
    return counts[0][:, None] * counts[1][None, :]


@reference_op
def avgpool2d(be, x, pool_size: Pair, stride: Pair, padding: Quad = (0, 0, 0, 0), out=None):
    """Mean over each window of ``x`` (N, C, H, W), padding excluded from the count."""
    xp = be.xp
    windows, (oh, ow) = _pool_windows(xp, x, pool_size, stride, padding, 0.0)
    n, c = x.shape[:2]
    y = _new(xp, (n, c, oh, ow), x.dtype, out)
    xp.sum(windows, axis=0, out=y)
    y /= pool_counts(xp, x.shape[2:], pool_size, stride, padding, x.dtype)
    return y


@reference_op
def avgpool2d_backward(
    be, dy, x_shape: tuple[int, int, int, int], pool_size: Pair, stride: Pair,
    padding: Quad = (0, 0, 0, 0), out=None,
):
    """dL/dx of average pooling: each window's gradient spread evenly over its pixels."""
    xp = be.xp
    n, c, h, w = x_shape
    pt, pb, pl, pr = padding
    oh, ow = dy.shape[2:]
    g = dy / pool_counts(xp, (h, w), pool_size, stride, padding, dy.dtype)
    dpad = xp.zeros((n, c, h + pt + pb, w + pl + pr), dtype=dy.dtype)
    for i in range(pool_size[0]):
        for j in range(pool_size[1]):
            si, sj = _window_slices(i, j, oh, ow, stride, (1, 1))
            dpad[:, :, si, sj] += g
    dx = _new(xp, x_shape, dy.dtype, out)
    dx[...] = dpad[:, :, pt : pt + h, pl : pl + w]
    return dx
