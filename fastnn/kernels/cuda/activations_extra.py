"""CuPy launchers of the further activations (leaky_relu, elu, selu, softplus, gelu,
gelu_tanh, silu, mish), the kernels of :mod:`fastnn.kernels.cuda.activations_extra_sources`.

There is one ``cupy`` override per op, in :mod:`fastnn.kernels.cuda.ops`; its activation ops
hand these names to the functions here through its ``EXTRA_ACTIVATIONS`` table, filled by
:func:`register` on import. The functions have the ops' signatures and contract (``out=``
written in place, may be an input; ``dy`` never written) and send anything the kernels do not
take (host arrays, other dtypes, strided views, partly overlapping buffers) to the reference
op, which runs on CuPy through ``be.xp``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fastnn.kernels.cuda.activations_extra_sources import (
    ACTIVATION_EXTRA,
    ACTIVATION_EXTRA_CODES,
)
from fastnn.kernels.cuda.compile import get_kernel
from fastnn.kernels.cuda.ops import (
    _device_arrays,
    _disjoint_from,
    _launch_elementwise,
    _no_partial_overlap,
    _out_ok,
    _row_chunks,
    _scalar,
)
from fastnn.kernels.cuda.sources import ACTIVATION, COLUMN_ROWS, COLUMN_TILE
from fastnn.kernels.reference import activations as ref
from fastnn.kernels.reference.activations import resolve_alpha


def _grad_source(name: str, x: Any, y: Any) -> Any:
    """The array the backward reads: the input for gelu/silu/mish, else the output."""
    return x if ref.ACTIVATIONS[name].uses_input else y


def activation_forward(be, name: str, x, out=None, alpha: float = 0.0):
    """y = act(x) elementwise in one kernel; ``out`` may be ``x`` (in place)."""
    code = ACTIVATION_EXTRA_CODES.get(name)
    if (
        code is None
        or not _device_arrays(be, x)
        or not _out_ok(be, out, x)
        or not _no_partial_overlap(x, out)
    ):
        return ref.activation_forward(be, name, x, out=out, alpha=alpha)
    if out is None:
        out = be.xp.empty_like(x)
    n = x.size
    a = _scalar(x.dtype, resolve_alpha(name, alpha))
    args = (x, out, np.int64(n), np.int32(code), a)
    _launch_elementwise(ACTIVATION_EXTRA, "fastnn_activation_extra_forward", x.dtype, n, args)
    return out


def activation_backward(be, name: str, dy, x, y, out=None, alpha: float = 0.0):
    """dx = dy * act'(x) in one kernel; never writes ``dy`` unless ``out is dy``."""
    code = ACTIVATION_EXTRA_CODES.get(name)
    s = _grad_source(name, x, y) if code is not None else None
    if (
        code is None
        or s is None
        or not _device_arrays(be, dy, s)
        or s.shape != dy.shape
        or not _out_ok(be, out, dy)
        or not _no_partial_overlap(dy, s, out)
    ):
        return ref.activation_backward(be, name, dy, x, y, out=out, alpha=alpha)
    if out is None:
        out = be.xp.empty_like(dy)
    n = dy.size
    a = _scalar(dy.dtype, resolve_alpha(name, alpha))
    args = (dy, s, out, np.int64(n), np.int32(code), a)
    _launch_elementwise(ACTIVATION_EXTRA, "fastnn_activation_extra_backward", dy.dtype, n, args)
    return out


def bias_activation(be, name: str, z, b, out=None, alpha: float = 0.0):
    """y = act(z + b) in one kernel, ``b`` broadcast over rows; ``out`` may be ``z``."""
    if b is None:
        return activation_forward(be, name, z, out=out, alpha=alpha)
    code = ACTIVATION_EXTRA_CODES.get(name)
    if (
        code is None
        or not _device_arrays(be, z, b)
        or z.ndim < 1
        or b.shape != (z.shape[-1],)
        or not _out_ok(be, out, z)
        or not _no_partial_overlap(z, b, out)
    ):
        return ref.bias_activation(be, name, z, b, out=out, alpha=alpha)
    if out is None:
        out = be.xp.empty_like(z)
    n = z.size
    a = _scalar(z.dtype, resolve_alpha(name, alpha))
    args = (z, b, out, np.int64(n), np.int64(z.shape[-1]), np.int32(code), a)
    _launch_elementwise(ACTIVATION_EXTRA, "fastnn_bias_activation_extra", z.dtype, n, args)
    return out


def bias_activation_backward(be, name: str, dy, x, y, dz=None, db=None, alpha: float = 0.0):
    """dz = dy * act'(x) and, when ``db`` is given, db[...] = dz summed over rows, fused in
    one pass (plus a small pass over partial sums for tall inputs). Returns ``dz``."""
    if db is None:
        return activation_backward(be, name, dy, x, y, out=dz, alpha=alpha)
    code = ACTIVATION_EXTRA_CODES.get(name)
    s = _grad_source(name, x, y) if code is not None else None
    cols = dy.shape[-1] if dy.ndim >= 1 else 0
    if (
        code is None
        or s is None
        or not _device_arrays(be, dy, s, db)
        or dy.ndim < 1
        or s.shape != dy.shape
        or db.shape != (cols,)
        or not _out_ok(be, dz, dy)
        or not _no_partial_overlap(dy, s, dz)
        or not _disjoint_from(db, dy, s, dz)
    ):
        return ref.bias_activation_backward(be, name, dy, x, y, dz=dz, db=db, alpha=alpha)
    if dz is None:
        dz = be.xp.empty_like(dy)
    dtype = dy.dtype
    rows = dy.size // cols
    col_tiles = -(-cols // COLUMN_TILE)
    rows_per_chunk, chunks = _row_chunks(rows, col_tiles)
    partial = db if chunks == 1 else be.xp.empty((chunks, cols), dtype=dtype)
    block = (COLUMN_TILE, COLUMN_ROWS)
    kernel = get_kernel(ACTIVATION_EXTRA, "fastnn_bias_activation_extra_backward", dtype)
    a = _scalar(dtype, resolve_alpha(name, alpha))
    kernel((col_tiles, chunks), block, (dy, s, dz, partial, np.int64(rows), np.int64(cols),
                                        np.int64(rows_per_chunk), np.int32(code), a))
    if chunks > 1:
        # The (chunks, cols) partial sums, summed by the activation family's column-sum kernel.
        per_chunk = -(-chunks // COLUMN_ROWS) * COLUMN_ROWS
        total = get_kernel(ACTIVATION, "fastnn_column_sum", dtype)
        total((col_tiles, 1), block,
              (partial, db, np.int64(chunks), np.int64(cols), np.int64(per_chunk)))
    return dz


def register() -> None:
    """Hand this module's activations to the dispatch of the ``cupy`` activation ops."""
    from fastnn.kernels.cuda import ops

    table = getattr(ops, "EXTRA_ACTIVATIONS", None)
    if table is None:  # pragma: no cover - an ops module without the hook
        return
    for name in ACTIVATION_EXTRA_CODES:
        table[name] = (activation_forward, activation_backward, bias_activation,
                       bias_activation_backward)


register()
