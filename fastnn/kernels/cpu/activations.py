"""Numba overrides of the elementwise activations and the fused bias + activation ops.

Handled activations: ``linear``, ``relu``, ``sigmoid``, ``tanh``, ``step`` (all of them need
only the output ``y`` in the backward pass). Other names go to the module registered for them
in :data:`EXTRA_ACTIVATIONS`, if any, else to the reference op. Any input the kernels do not
take (not a C-contiguous float32/float64 ndarray, mixed dtypes, an ``out`` that partly
overlaps an input, a ``b`` that is not a vector), goes to the reference op, which also gives
the reference's errors.

Kernels (``prange`` over blocks, one pass over memory each):

- ``_activation_forward_kernel``: ``out = act(x)`` on the flattened array.
- ``_activation_backward_kernel``: ``out = dy * act'(y)`` on the flattened arrays.
- ``_bias_activation_kernel``: ``out = act(z + b)`` by rows, the bias added on the fly.
- ``_bias_activation_backward_kernel``: ``dz = dy * act'(y)`` and the column sums of ``dz``
  in the same pass: each block accumulates its rows into its own float64 row of ``partial``
  (no races, no atomics), then the few partial rows are added into ``db``.

``sigmoid`` and ``tanh`` use the vectorisable :func:`~fastnn.kernels.cpu.fastexp.fast_exp`:
``sigmoid(x) = 1 / (1 + exp(-x))`` and, as in Cephes, ``tanh`` is a rational (float64) or
polynomial (float32) approximation for ``|x| < 0.625`` and ``1 - 2 / (exp(2|x|) + 1)`` beyond.
The float32 ``tanh`` forward (with or without bias) stays with the reference: NumPy's own SIMD
float32 tanh is 2.4x faster per core than this one (0.18 vs 0.42 ns per element, measured).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from fastnn.kernels.cpu.fastexp import fast_exp
from fastnn.kernels.cpu.jit import (
    LazyKernel,
    array,
    block_bounds,
    cast_to,
    helper_jit_flags,
    is_kernel_array,
    is_kernel_output,
    kernel_dtype,
    num_blocks,
    num_row_blocks,
)
from fastnn.kernels.cpu.threads import ftz_enter, ftz_exit
from fastnn.kernels.reference.activations import (
    activation_backward as _ref_activation_backward,
)
from fastnn.kernels.reference.activations import (
    activation_forward as _ref_activation_forward,
)
from fastnn.kernels.reference.activations import (
    bias_activation as _ref_bias_activation,
)
from fastnn.kernels.reference.activations import (
    bias_activation_backward as _ref_bias_activation_backward,
)
from fastnn.kernels.registry import override

_LINEAR, _RELU, _SIGMOID, _TANH, _STEP = 0, 1, 2, 3, 4

#: Activation name -> kernel code, for the activations these kernels implement.
CODES: dict[str, int] = {
    "linear": _LINEAR,
    "relu": _RELU,
    "sigmoid": _SIGMOID,
    "tanh": _TANH,
    "step": _STEP,
}

#: Further activations served by other modules: name -> their (activation_forward,
#: activation_backward, bias_activation, bias_activation_backward), with the ops' signatures.
#: The ops below hand a name they do not implement to this table, then to the reference.
EXTRA_ACTIVATIONS: dict[str, tuple[Callable[..., Any], ...]] = {}
_FWD, _BWD, _BIAS_FWD, _BIAS_BWD = 0, 1, 2, 3

#: Scalar helpers inlined into the kernels: NumPy's error model (no division-by-zero
#: checks, which would stop LLVM from vectorising the calling loop).
_helper = njit(**helper_jit_flags())

# Cephes tanh: below |x| = 0.625 a rational (float64) / polynomial (float32) approximation.
_TANH_SMALL = 0.625
_TP0, _TP1, _TP2 = -9.64399179425052238628e-1, -9.92877231001918586564e1, -1.61468768441708447952e3
_TQ0, _TQ1, _TQ2 = 1.12811678491632931402e2, 2.23548839060100448583e3, 4.84406305325125486048e3
_F32 = np.float32
_TS32 = (
    _F32(-5.70498872745e-3),
    _F32(2.06390887954e-2),
    _F32(-5.37397155531e-2),
    _F32(1.33314422036e-1),
    _F32(-3.33332819422e-1),
)
_TS0, _TS1, _TS2, _TS3, _TS4 = _TS32


def fast_tanh(x):
    """tanh(x) for a float32/float64 scalar; vectorisable inside Numba kernels."""
    return np.tanh(x)


@_helper
def _tanh_large(a):
    one = cast_to(1.0, a)
    two = cast_to(2.0, a)
    return one - two / (fast_exp(two * a) + one)


def _tanh64(x):
    a = abs(x)
    s = x * x
    small = x + x * s * (((_TP0 * s + _TP1) * s + _TP2) / (((s + _TQ0) * s + _TQ1) * s + _TQ2))
    large = _tanh_large(a)
    large = large if x >= 0.0 else -large
    return small if a < _TANH_SMALL else large


def _tanh32(x):
    a = abs(x)
    s = x * x
    small = ((((_TS0 * s + _TS1) * s + _TS2) * s + _TS3) * s + _TS4) * s * x + x
    large = _tanh_large(a)
    large = large if x >= _F32(0.0) else -large
    return small if a < _F32(_TANH_SMALL) else large


# Inlined at the Numba IR level: left to LLVM, this body is over its inlining threshold and
# the calling loop stays scalar (20 ns per element instead of 0.4). Inlined, the tanh
# arithmetic takes the calling kernel's fast-math flags; fast_exp keeps its own.
@overload(fast_tanh, inline="always")
def _fast_tanh_impl(x):
    if x == types.float32:
        return _tanh32
    if x == types.float64:
        return _tanh64
    return None


@_helper
def _relu(v):
    zero = cast_to(0.0, v)
    return zero if v < zero else v


@_helper
def _sigmoid(v):
    one = cast_to(1.0, v)
    return one / (one + fast_exp(-v))


@_helper
def _step(v):
    return cast_to(1.0, v) if v > cast_to(0.0, v) else cast_to(0.0, v)


@_helper
def _relu_grad(g, y):
    return g * (cast_to(1.0, y) if y > cast_to(0.0, y) else cast_to(0.0, y))


@_helper
def _sigmoid_grad(g, y):
    return (cast_to(1.0, y) - y) * y * g


@_helper
def _tanh_grad(g, y):
    return (cast_to(1.0, y) - y * y) * g


def _activation_forward_kernel(code, x, out, nblocks):
    n = x.size
    for blk in prange(nblocks):
        old = ftz_enter()
        lo, hi = block_bounds(blk, n, nblocks)
        if code == _RELU:
            for i in range(lo, hi):
                out[i] = _relu(x[i])
        elif code == _SIGMOID:
            for i in range(lo, hi):
                out[i] = _sigmoid(x[i])
        elif code == _TANH:
            for i in range(lo, hi):
                out[i] = fast_tanh(x[i])
        elif code == _STEP:
            for i in range(lo, hi):
                out[i] = _step(x[i])
        else:
            for i in range(lo, hi):
                out[i] = x[i]
        ftz_exit(old)


def _activation_backward_kernel(code, dy, y, out, nblocks):
    n = dy.size
    for blk in prange(nblocks):
        old = ftz_enter()
        lo, hi = block_bounds(blk, n, nblocks)
        if code == _RELU:
            for i in range(lo, hi):
                out[i] = _relu_grad(dy[i], y[i])
        elif code == _SIGMOID:
            for i in range(lo, hi):
                out[i] = _sigmoid_grad(dy[i], y[i])
        elif code == _TANH:
            for i in range(lo, hi):
                out[i] = _tanh_grad(dy[i], y[i])
        elif code == _STEP:
            zero = cast_to(0.0, out.dtype)
            for i in range(lo, hi):
                out[i] = zero
        else:
            for i in range(lo, hi):
                out[i] = dy[i]
        ftz_exit(old)


def _bias_activation_kernel(code, z, b, out, nblocks):
    rows, cols = z.shape
    ncols = np.uint64(cols)
    for blk in prange(nblocks):
        old = ftz_enter()
        r0, r1 = block_bounds(blk, rows, nblocks)
        for i in range(r0, r1):
            if code == _RELU:
                for j in range(ncols):
                    out[i, j] = _relu(z[i, j] + b[j])
            elif code == _SIGMOID:
                for j in range(ncols):
                    out[i, j] = _sigmoid(z[i, j] + b[j])
            elif code == _TANH:
                for j in range(ncols):
                    out[i, j] = fast_tanh(z[i, j] + b[j])
            elif code == _STEP:
                for j in range(ncols):
                    out[i, j] = _step(z[i, j] + b[j])
            else:
                for j in range(ncols):
                    out[i, j] = z[i, j] + b[j]
        ftz_exit(old)


def _bias_activation_backward_kernel(code, dy, y, dz, db, partial):
    rows, cols = dy.shape
    ncols = np.uint64(cols)
    nblocks = partial.shape[0]
    for blk in prange(nblocks):
        old = ftz_enter()
        for j in range(ncols):
            partial[blk, j] = 0.0
        r0, r1 = block_bounds(blk, rows, nblocks)
        for i in range(r0, r1):
            if code == _RELU:
                for j in range(ncols):
                    g = _relu_grad(dy[i, j], y[i, j])
                    dz[i, j] = g
                    partial[blk, j] += g
            elif code == _SIGMOID:
                for j in range(ncols):
                    g = _sigmoid_grad(dy[i, j], y[i, j])
                    dz[i, j] = g
                    partial[blk, j] += g
            elif code == _TANH:
                for j in range(ncols):
                    g = _tanh_grad(dy[i, j], y[i, j])
                    dz[i, j] = g
                    partial[blk, j] += g
            elif code == _STEP:
                zero = cast_to(0.0, dz.dtype)
                for j in range(ncols):
                    dz[i, j] = zero
            else:
                for j in range(ncols):
                    g = dy[i, j]
                    dz[i, j] = g
                    partial[blk, j] += g
        ftz_exit(old)
    for j in range(ncols):
        total = 0.0
        for blk in range(nblocks):
            total += partial[blk, j]
        db[j] = total


_act_forward = LazyKernel(
    _activation_forward_kernel,
    lambda T: (types.intp, array(T, 1, True), array(T, 1), types.intp),
)
_act_backward = LazyKernel(
    _activation_backward_kernel,
    lambda T: (types.intp, array(T, 1, True), array(T, 1, True), array(T, 1), types.intp),
)
_bias_act = LazyKernel(
    _bias_activation_kernel,
    lambda T: (types.intp, array(T, 2, True), array(T, 1, True), array(T, 2), types.intp),
)
_bias_act_backward = LazyKernel(
    _bias_activation_backward_kernel,
    lambda T: (
        types.intp,
        array(T, 2, True),
        array(T, 2, True),
        array(T, 2),
        array(T, 1),
        array(types.float64, 2),
    ),
)


def _flat(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1)


def _rows(a: np.ndarray, cols: int) -> np.ndarray:
    return a.reshape(-1, cols)


@override("numba")
def activation_forward(be, name: str, x, out=None, alpha: float = 0.0):
    """y = act(x) elementwise (fused parallel kernel); ``out`` may be ``x`` (in place)."""
    code = CODES.get(name)
    if code is None and name in EXTRA_ACTIVATIONS:
        return EXTRA_ACTIVATIONS[name][_FWD](be, name, x, out, alpha)
    dt = kernel_dtype(x)
    if (
        code is None
        or dt is None
        or (code == _TANH and dt == np.float32)
        or not (out is None or is_kernel_output(out, dt, x.shape, x))
    ):
        return _ref_activation_forward(be, name, x, out, alpha)
    if out is None:
        out = np.empty_like(x)
    elif code == _LINEAR and out is x:
        return out
    nblocks = num_blocks(x.size)
    _act_forward.pick(dt, x.size)(code, _flat(x), _flat(out), nblocks)
    return out


@override("numba")
def activation_backward(be, name: str, dy, x, y, out=None, alpha: float = 0.0):
    """dx = dy * act'(x), given input ``x`` and output ``y``; never writes ``dy``
    unless ``out is dy``."""
    code = CODES.get(name)
    if code is None and name in EXTRA_ACTIVATIONS:
        return EXTRA_ACTIVATIONS[name][_BWD](be, name, dy, x, y, out, alpha)
    dt = kernel_dtype(dy)
    if code is None or dt is None:
        return _ref_activation_backward(be, name, dy, x, y, out, alpha)
    needs_y = code not in (_LINEAR, _STEP)
    if needs_y and not is_kernel_array(y, dt, dy.shape):
        return _ref_activation_backward(be, name, dy, x, y, out, alpha)
    if out is not None and not is_kernel_output(out, dt, dy.shape, dy, y if needs_y else None):
        return _ref_activation_backward(be, name, dy, x, y, out, alpha)
    if out is None:
        out = np.empty_like(dy)
    elif code == _LINEAR and out is dy:
        return out
    y_in = y if needs_y else dy
    nblocks = num_blocks(dy.size)
    _act_backward.pick(dt, dy.size)(code, _flat(dy), _flat(y_in), _flat(out), nblocks)
    return out


@override("numba")
def bias_activation(be, name: str, z, b, out=None, alpha: float = 0.0):
    """y = act(z + b) with ``b`` broadcast over rows (``b`` may be None); ``out`` may be ``z``."""
    if b is None:
        return activation_forward(be, name, z, out, alpha)
    code = CODES.get(name)
    if code is None and name in EXTRA_ACTIVATIONS:
        return EXTRA_ACTIVATIONS[name][_BIAS_FWD](be, name, z, b, out, alpha)
    dt = kernel_dtype(z)
    if (
        code is None
        or dt is None
        or (code == _TANH and dt == np.float32)
        or z.ndim < 1
        or z.size == 0
        or not is_kernel_array(b, dt, (z.shape[-1],))
        or not (out is None or is_kernel_output(out, dt, z.shape, z, b))
    ):
        return _ref_bias_activation(be, name, z, b, out, alpha)
    if out is None:
        out = np.empty_like(z)
    cols = z.shape[-1]
    z2 = _rows(z, cols)
    rows = z2.shape[0]
    nblocks = num_row_blocks(rows, cols)
    _bias_act.pick(dt, z.size)(code, z2, b, _rows(out, cols), nblocks)
    return out


@override("numba")
def bias_activation_backward(be, name: str, dy, x, y, dz=None, db=None, alpha: float = 0.0):
    """dz = dy * act'(x) and, when ``db`` is given, db[...] = dz summed over rows, both in
    one parallel pass. ``x`` may be None (these activations need only ``y``). Returns ``dz``.
    """
    if db is None:
        return activation_backward(be, name, dy, x, y, dz, alpha)
    code = CODES.get(name)
    if code is None and name in EXTRA_ACTIVATIONS:
        return EXTRA_ACTIVATIONS[name][_BIAS_BWD](be, name, dy, x, y, dz, db, alpha)
    dt = kernel_dtype(dy)
    needs_y = code not in (_LINEAR, _STEP)
    if (
        code is None
        or dt is None
        or dy.ndim < 1
        or dy.size == 0
        or (needs_y and not is_kernel_array(y, dt, dy.shape))
        or not (dz is None or is_kernel_output(dz, dt, dy.shape, dy, y if needs_y else None))
        or not is_kernel_output(db, dt, (dy.shape[-1],), dy, y, dz)
    ):
        return _ref_bias_activation_backward(be, name, dy, x, y, dz, db, alpha)
    if dz is None:
        dz = np.empty_like(dy)
    cols = dy.shape[-1]
    dy2 = _rows(dy, cols)
    rows = dy2.shape[0]
    y2 = _rows(y, cols) if needs_y else dy2
    nblocks = num_row_blocks(rows, cols)
    partial = np.empty((nblocks, cols), dtype=np.float64)
    _bias_act_backward.pick(dt, dy.size)(code, dy2, y2, _rows(dz, cols), db, partial)
    return dz
