"""Numba kernels of the further activations: leaky_relu, elu, selu, softplus, gelu (exact and
tanh approximation), silu/swish and mish, forward and backward, plain and fused with a bias.

These are not separate op overrides (there is one ``numba`` override per op name, in
:mod:`fastnn.kernels.cpu.activations`); that module's ops hand these names to the wrappers
here through its :data:`~fastnn.kernels.cpu.activations.EXTRA_ACTIVATIONS` table, filled by
:func:`register` when this module is imported. The wrappers have the ops' signatures and
send any input the kernels do not take (not a C-contiguous float32/float64 ndarray, mixed
dtypes, an ``out`` that partly overlaps an input, an empty array) to the reference op.

Two kernels serve the four ops (``prange`` over blocks of rows, one pass over memory each,
the activation chosen by an integer code outside the inner loops); arrays are viewed as
(rows, last axis):

- ``_forward_kernel``: ``out = act(z + b)`` (a zero bias for the plain op);
- ``_backward_kernel``: ``dz = dy * act'(s)`` and, in the same pass, per-block float64
  column sums of ``dz`` (summed into ``db`` when the op asks for it). ``s`` is the input
  ``x`` for gelu, gelu_tanh, silu and mish and the output ``y`` for the others (the
  reference's ``uses_input``, so a Dense layer may drop its pre-activation).

Two kernels rather than four halve the JIT compile time (about 10 s per kernel and dtype on
this 2-core machine, paid once: kernels are cached on disk).

Arithmetic is done in the array's dtype with vectorisable helpers (no libm calls, so LLVM
emits SIMD code): :func:`~fastnn.kernels.cpu.fastexp.fast_exp`, and here ``expm1`` (a Taylor
polynomial near 0) and ``log1p`` on [0, 1] (the atanh series). No tanh is needed:
``gelu_tanh`` uses ``0.5 (1 + tanh(u)) = sigmoid(2u)`` and ``mish`` uses
``tanh(softplus(x)) = q / (q + 2)`` with ``q = e^x (e^x + 2)``. The exact ``gelu`` works in
float64 with :func:`~fastnn.kernels.cpu.fasterf.fast_erfc` (libm's ``math.erfc`` kept the loop
scalar: forward 8.2 ms against 2.2 ms now for 1024x1024 float32 on two threads). Every formula
is overflow-free and finite for inputs of +-1e4 and beyond.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit, prange, types

from fastnn.kernels.cpu.fasterf import fast_erfc
from fastnn.kernels.cpu.fastexp import fast_exp
from fastnn.kernels.cpu.jit import (
    LazyKernel,
    array,
    cast_to,
    copy_row,
    helper_jit_flags,
    is_kernel_array,
    is_kernel_output,
    kernel_dtype,
    num_row_blocks,
)
from fastnn.kernels.cpu.threads import ftz_enter, ftz_exit
from fastnn.kernels.reference import activations as ref
from fastnn.kernels.reference.activations import (
    GELU_TANH_CUBIC,
    GELU_TANH_SCALE,
    SELU_ALPHA,
    SELU_SCALE,
    resolve_alpha,
)

_LEAKY_RELU, _ELU, _SELU, _SOFTPLUS, _GELU, _GELU_TANH, _SILU, _MISH = range(1, 9)

#: Activation name -> kernel code, for the activations these kernels implement.
CODES: dict[str, int] = {
    "leaky_relu": _LEAKY_RELU,
    "elu": _ELU,
    "selu": _SELU,
    "softplus": _SOFTPLUS,
    "gelu": _GELU,
    "gelu_tanh": _GELU_TANH,
    "silu": _SILU,
    "mish": _MISH,
}

_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SELU_NEG = SELU_SCALE * SELU_ALPHA
# tanh of the GELU approximation's argument is +-1 exactly beyond this |x|.
_GELU_TANH_CLAMP = 50.0
# phi(x) = exp(-x^2 / 2) is 0 beyond this |x|; clamping keeps x^2 finite.
_GELU_PDF_CLAMP = 40.0
# tanh(softplus(x)) is 1 to the last bit of float64 for x >= 20 (1 - t < 1e-17).
_MISH_CLAMP = 20.0
# expm1: Taylor polynomial on [-1/2, 0] (14 terms: truncation below 5e-17 relative),
# exp(v) - 1 below (no cancellation there).
_EXPM1_SPLIT = -0.5
_EXPM1_C = tuple(1.0 / math.factorial(k) for k in range(1, 15))
# log1p(u) for u in [0, 1] as 2 atanh(s), s = u / (2 + u) <= 1/3: 17 odd terms of the
# atanh series (truncation below 1e-17 relative).
_ATANH_C = tuple(1.0 / (2 * k + 1) for k in range(17))

# Inlined at Numba-IR level, so that LLVM sees one loop body it can vectorise.
# Inlined at Numba-IR level, so that LLVM sees one loop body it can vectorise (as calls, the
# polynomial helpers made elu, softplus and mish 30x slower).
_helper = njit(**helper_jit_flags(), inline="always")


@_helper
def _expm1_nonpos(v):
    """exp(v) - 1 for v <= 0, accurate near 0 (no libm call: vectorisable)."""
    one = cast_to(1.0, v)
    big = fast_exp(v) - one
    p = cast_to(_EXPM1_C[13], v)
    p = p * v + cast_to(_EXPM1_C[12], v)
    p = p * v + cast_to(_EXPM1_C[11], v)
    p = p * v + cast_to(_EXPM1_C[10], v)
    p = p * v + cast_to(_EXPM1_C[9], v)
    p = p * v + cast_to(_EXPM1_C[8], v)
    p = p * v + cast_to(_EXPM1_C[7], v)
    p = p * v + cast_to(_EXPM1_C[6], v)
    p = p * v + cast_to(_EXPM1_C[5], v)
    p = p * v + cast_to(_EXPM1_C[4], v)
    p = p * v + cast_to(_EXPM1_C[3], v)
    p = p * v + cast_to(_EXPM1_C[2], v)
    p = p * v + cast_to(_EXPM1_C[1], v)
    p = p * v + cast_to(_EXPM1_C[0], v)
    small = p * v
    return small if v > cast_to(_EXPM1_SPLIT, v) else big


@_helper
def _log1p_unit(u):
    """log(1 + u) for u in [0, 1] (no libm call: vectorisable)."""
    s = u / (cast_to(2.0, u) + u)
    s2 = s * s
    p = cast_to(_ATANH_C[16], u)
    p = p * s2 + cast_to(_ATANH_C[15], u)
    p = p * s2 + cast_to(_ATANH_C[14], u)
    p = p * s2 + cast_to(_ATANH_C[13], u)
    p = p * s2 + cast_to(_ATANH_C[12], u)
    p = p * s2 + cast_to(_ATANH_C[11], u)
    p = p * s2 + cast_to(_ATANH_C[10], u)
    p = p * s2 + cast_to(_ATANH_C[9], u)
    p = p * s2 + cast_to(_ATANH_C[8], u)
    p = p * s2 + cast_to(_ATANH_C[7], u)
    p = p * s2 + cast_to(_ATANH_C[6], u)
    p = p * s2 + cast_to(_ATANH_C[5], u)
    p = p * s2 + cast_to(_ATANH_C[4], u)
    p = p * s2 + cast_to(_ATANH_C[3], u)
    p = p * s2 + cast_to(_ATANH_C[2], u)
    p = p * s2 + cast_to(_ATANH_C[1], u)
    p = p * s2 + cast_to(_ATANH_C[0], u)
    return cast_to(2.0, u) * s * p


@_helper
def _sigmoid_parts(v):
    """(sigmoid(v), 1 - sigmoid(v)) from e = exp(-|v|) <= 1: never overflows."""
    one = cast_to(1.0, v)
    e = fast_exp(-abs(v))
    big = one / (one + e)
    small = e * big
    positive = v >= cast_to(0.0, v)
    sig = big if positive else small
    rest = small if positive else big
    return sig, rest


@_helper
def _softplus(v):
    return max(v, cast_to(0.0, v)) + _log1p_unit(fast_exp(-abs(v)))


@_helper
def _mish_q(v):
    """q = n (n + 2) with n = exp(min(v, 20)): tanh(softplus(v)) = q / (q + 2)."""
    n = fast_exp(min(v, cast_to(_MISH_CLAMP, v)))
    return n * (n + cast_to(2.0, v))


@_helper
def _gelu_tanh_u(v):
    """(c, u, u'): v clamped where the tanh saturates, u = sqrt(2/pi) (c + 0.044715 c^3),
    and du/dc."""
    c = min(max(v, cast_to(-_GELU_TANH_CLAMP, v)), cast_to(_GELU_TANH_CLAMP, v))
    c2 = c * c
    scale = cast_to(GELU_TANH_SCALE, v)
    u = scale * c * (cast_to(1.0, v) + cast_to(GELU_TANH_CUBIC, v) * c2)
    du = scale * (cast_to(1.0, v) + cast_to(3.0 * GELU_TANH_CUBIC, v) * c2)
    return c, u, du


# -- forward, one function per activation (the loops below pick one outside the loop) ------
@_helper
def _leaky_relu(v, a):
    return v if v > cast_to(0.0, v) else a * v


@_helper
def _elu(v, a):
    return v if v > cast_to(0.0, v) else a * _expm1_nonpos(min(v, cast_to(0.0, v)))


@_helper
def _selu(v, a):
    neg = cast_to(_SELU_NEG, v) * _expm1_nonpos(min(v, cast_to(0.0, v)))
    return cast_to(SELU_SCALE, v) * v if v > cast_to(0.0, v) else neg


@_helper
def _softplus_fwd(v, a):
    return _softplus(v)


@_helper
def _gelu(v, a):
    w = np.float64(v)
    return w * 0.5 * fast_erfc(-w * _SQRT_HALF)


@_helper
def _gelu_tanh(v, a):
    # 0.5 (1 + tanh(u)) = sigmoid(2 u): one exp, no cancellation.
    u = _gelu_tanh_u(v)[1]
    return v * _sigmoid_parts(cast_to(2.0, v) * u)[0]


@_helper
def _silu(v, a):
    return v * _sigmoid_parts(v)[0]


@_helper
def _mish(v, a):
    q = _mish_q(v)
    return v * (q / (q + cast_to(2.0, v)))


# -- derivatives from s: the output y (leaky_relu, elu, selu, softplus) or the input x ----
@_helper
def _leaky_relu_grad(s, a):
    return cast_to(1.0, s) if s > cast_to(0.0, s) else a


@_helper
def _elu_grad(s, a):
    return cast_to(1.0, s) if s > cast_to(0.0, s) else s + a


@_helper
def _selu_grad(s, a):
    return cast_to(SELU_SCALE, s) if s > cast_to(0.0, s) else s + cast_to(_SELU_NEG, s)


@_helper
def _softplus_grad(s, a):
    # sigmoid(x) = 1 - exp(-softplus(x)) = -expm1(-y)
    return -_expm1_nonpos(-s)


@_helper
def _gelu_grad(s, a):
    w = np.float64(s)
    c = min(max(w, -_GELU_PDF_CLAMP), _GELU_PDF_CLAMP)
    return 0.5 * fast_erfc(-w * _SQRT_HALF) + w * fast_exp(-0.5 * c * c) * _INV_SQRT_2PI


@_helper
def _gelu_tanh_grad(s, a):
    # d/dx x sigmoid(2 u) = sigmoid(2u) + 2 x sigmoid(2u) (1 - sigmoid(2u)) du/dx
    c, u, du = _gelu_tanh_u(s)
    sig, rest = _sigmoid_parts(cast_to(2.0, s) * u)
    return sig + cast_to(2.0, s) * c * sig * rest * du


@_helper
def _silu_grad(s, a):
    sig, rest = _sigmoid_parts(s)
    return sig * (cast_to(1.0, s) + s * rest)


@_helper
def _mish_grad(s, a):
    two = cast_to(2.0, s)
    q = _mish_q(s)
    d = q + two
    # 1 - tanh^2 = 4 (q + 1) / (q + 2)^2, without cancellation
    sech2 = cast_to(4.0, s) * (q + cast_to(1.0, s)) / (d * d)
    return q / d + s * sech2 * _sigmoid_parts(s)[0]


def _forward_kernel(code, z, b, out, alpha, nblocks, in_place):
    rows, cols = z.shape
    a = cast_to(alpha, z.dtype)
    for blk in prange(nblocks):
        old = ftz_enter()
        row = np.empty(cols if in_place else 0, dtype=z.dtype)
        for i in range(blk * rows // nblocks, (blk + 1) * rows // nblocks):
            # Row views indexed from 0: LLVM proves the accesses contiguous and vectorises
            # (indexing z[i, j] or a flat range(lo, hi) gave gathers/scatters, 5-10x slower).
            zr = z[i]
            outr = out[i]
            if in_place:  # see jit.copy_row
                zr = copy_row(zr, row)
            if code == _LEAKY_RELU:
                for j in range(cols):
                    outr[j] = _leaky_relu(zr[j] + b[j], a)
            elif code == _ELU:
                for j in range(cols):
                    outr[j] = _elu(zr[j] + b[j], a)
            elif code == _SELU:
                for j in range(cols):
                    outr[j] = _selu(zr[j] + b[j], a)
            elif code == _SOFTPLUS:
                for j in range(cols):
                    outr[j] = _softplus_fwd(zr[j] + b[j], a)
            elif code == _GELU:
                for j in range(cols):
                    outr[j] = _gelu(zr[j] + b[j], a)
            elif code == _GELU_TANH:
                for j in range(cols):
                    outr[j] = _gelu_tanh(zr[j] + b[j], a)
            elif code == _SILU:
                for j in range(cols):
                    outr[j] = _silu(zr[j] + b[j], a)
            elif code == _MISH:
                for j in range(cols):
                    outr[j] = _mish(zr[j] + b[j], a)
        ftz_exit(old)


def _backward_kernel(code, dy, s, dz, partial, alpha, dz_is_dy, dz_is_s):
    rows, cols = dy.shape
    nblocks = partial.shape[0]
    a = cast_to(alpha, dy.dtype)
    for blk in prange(nblocks):
        old = ftz_enter()
        acc = partial[blk]
        for j in range(cols):
            acc[j] = 0.0
        g_row = np.empty(cols if dz_is_dy else 0, dtype=dy.dtype)
        s_row = np.empty(cols if dz_is_s else 0, dtype=dy.dtype)
        for i in range(blk * rows // nblocks, (blk + 1) * rows // nblocks):
            gr = dy[i]
            sr = s[i]
            dzr = dz[i]
            if dz_is_dy:  # see jit.copy_row
                gr = copy_row(gr, g_row)
            if dz_is_s:
                sr = copy_row(sr, s_row)
            if code == _LEAKY_RELU:
                for j in range(cols):
                    g = gr[j] * _leaky_relu_grad(sr[j], a)
                    dzr[j] = g
                    acc[j] += g
            elif code == _ELU:
                for j in range(cols):
                    g = gr[j] * _elu_grad(sr[j], a)
                    dzr[j] = g
                    acc[j] += g
            elif code == _SELU:
                for j in range(cols):
                    g = gr[j] * _selu_grad(sr[j], a)
                    dzr[j] = g
                    acc[j] += g
            elif code == _SOFTPLUS:
                for j in range(cols):
                    g = gr[j] * _softplus_grad(sr[j], a)
                    dzr[j] = g
                    acc[j] += g
            elif code == _GELU:
                for j in range(cols):
                    g = gr[j] * _gelu_grad(sr[j], a)
                    dzr[j] = g
                    acc[j] += g
            elif code == _GELU_TANH:
                for j in range(cols):
                    g = gr[j] * _gelu_tanh_grad(sr[j], a)
                    dzr[j] = g
                    acc[j] += g
            elif code == _SILU:
                for j in range(cols):
                    g = gr[j] * _silu_grad(sr[j], a)
                    dzr[j] = g
                    acc[j] += g
            elif code == _MISH:
                for j in range(cols):
                    g = gr[j] * _mish_grad(sr[j], a)
                    dzr[j] = g
                    acc[j] += g
        ftz_exit(old)


_F64 = types.float64
# The inputs are typed writeable (never written) so that a row view of them and the copy of
# copy_row share one type; a read-only input is copied first (_writeable).
_forward = LazyKernel(
    _forward_kernel,
    lambda T: (types.intp, array(T, 2), array(T, 1, True), array(T, 2), _F64, types.intp,
               types.boolean),
)
_backward = LazyKernel(
    _backward_kernel,
    lambda T: (
        types.intp,
        array(T, 2),
        array(T, 2),
        array(T, 2),
        array(_F64, 2),
        _F64,
        types.boolean,
        types.boolean,
    ),
)


def _writeable(a: np.ndarray) -> np.ndarray:
    """``a``, or a copy when it is read-only (the kernels' inputs are typed writeable)."""
    return a if a.flags.writeable else a.copy()


def _grad_source(name: str, x: Any, y: Any) -> Any:
    """The array the backward reads: the input for gelu/silu/mish, else the output."""
    return x if ref.ACTIVATIONS[name].uses_input else y


def _as_rows(a: np.ndarray) -> np.ndarray:
    """``a`` as a (rows, last axis) view (a 1-D array is one row)."""
    return a.reshape(-1, a.shape[-1])


def _run_forward(name: str, code: int, z: np.ndarray, b: np.ndarray | None, out, alpha: float):
    dt = z.dtype
    if out is None:
        out = np.empty_like(z)
    z2 = _as_rows(z)
    rows, cols = z2.shape
    bias = np.zeros(cols, dtype=dt) if b is None else b
    a = resolve_alpha(name, alpha)
    in_place = np.may_share_memory(out, z)  # the very same memory: the wrappers checked
    _forward[dt](code, _writeable(z2), bias, _as_rows(out), a, num_row_blocks(rows, cols),
                 in_place)
    return out


def _run_backward(name: str, code: int, dy, s, dz, db, alpha: float):
    if dz is None:
        dz = np.empty_like(dy)
    dy2 = _as_rows(dy)
    rows, cols = dy2.shape
    partial = np.empty((num_row_blocks(rows, cols), cols), dtype=np.float64)
    a = resolve_alpha(name, alpha)
    # Same memory or none (the wrappers checked): in place when dz shares it.
    _backward[dy.dtype](code, _writeable(dy2), _writeable(_as_rows(s)), _as_rows(dz), partial,
                        a, np.may_share_memory(dz, dy), np.may_share_memory(dz, s))
    if db is not None:
        db[...] = partial.sum(axis=0)
    return dz


def activation_forward(be, name: str, x, out=None, alpha: float = 0.0):
    """y = act(x) elementwise in one parallel pass; ``out`` may be ``x`` (in place)."""
    code = CODES.get(name)
    dt = kernel_dtype(x)
    if (
        code is None
        or dt is None
        or x.ndim < 1
        or x.size == 0
        or not (out is None or is_kernel_output(out, dt, x.shape, x))
    ):
        return ref.activation_forward(be, name, x, out, alpha)
    return _run_forward(name, code, x, None, out, alpha)


def activation_backward(be, name: str, dy, x, y, out=None, alpha: float = 0.0):
    """dx = dy * act'(x) in one parallel pass; never writes ``dy`` unless ``out is dy``."""
    code = CODES.get(name)
    dt = kernel_dtype(dy)
    s = _grad_source(name, x, y) if code is not None else None
    if (
        code is None
        or dt is None
        or dy.ndim < 1
        or dy.size == 0
        or not is_kernel_array(s, dt, dy.shape)
        or not (out is None or is_kernel_output(out, dt, dy.shape, dy, s))
    ):
        return ref.activation_backward(be, name, dy, x, y, out, alpha)
    return _run_backward(name, code, dy, s, out, None, alpha)


def bias_activation(be, name: str, z, b, out=None, alpha: float = 0.0):
    """y = act(z + b), ``b`` broadcast over rows (may be None), in one parallel pass."""
    if b is None:
        return activation_forward(be, name, z, out, alpha)
    code = CODES.get(name)
    dt = kernel_dtype(z)
    if (
        code is None
        or dt is None
        or z.ndim < 1
        or z.size == 0
        or not is_kernel_array(b, dt, (z.shape[-1],))
        or not (out is None or is_kernel_output(out, dt, z.shape, z, b))
    ):
        return ref.bias_activation(be, name, z, b, out, alpha)
    return _run_forward(name, code, z, b, out, alpha)


def bias_activation_backward(be, name: str, dy, x, y, dz=None, db=None, alpha: float = 0.0):
    """dz = dy * act'(x) and, when ``db`` is given, db[...] = dz summed over rows, in one
    parallel pass. ``x`` may be None for the activations whose backward reads ``y``."""
    if db is None:
        return activation_backward(be, name, dy, x, y, dz, alpha)
    code = CODES.get(name)
    dt = kernel_dtype(dy)
    s = _grad_source(name, x, y) if code is not None else None
    if (
        code is None
        or dt is None
        or dy.ndim < 1
        or dy.size == 0
        or not is_kernel_array(s, dt, dy.shape)
        or not (dz is None or is_kernel_output(dz, dt, dy.shape, dy, s))
        or not is_kernel_output(db, dt, (dy.shape[-1],), dy, s, dz)
    ):
        return ref.bias_activation_backward(be, name, dy, x, y, dz, db, alpha)
    return _run_backward(name, code, dy, s, dz, db, alpha)


def register() -> None:
    """Hand this module's activations to the dispatch of the ``numba`` activation ops."""
    from fastnn.kernels.cpu import activations as cpu_activations

    table = getattr(cpu_activations, "EXTRA_ACTIVATIONS", None)
    if table is None:  # pragma: no cover - an activations module without the hook
        return
    for name in CODES:
        table[name] = (activation_forward, activation_backward, bias_activation,
                       bias_activation_backward)


register()
