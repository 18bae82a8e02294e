"""A vectorisable exp (and max) for Numba kernels.

This llvmlite has no SVML, so ``math.exp`` in a Numba loop stays a scalar libm call (3x
slower than NumPy's exp, PERF-NOTES). :func:`fast_exp` is written with arithmetic LLVM can
vectorise (AVX-512 here), in the style of Cephes ``exp``/``expf``:

1. Clamp ``x`` to the range where the result is finite and non-zero; NaN is patched through.
2. Range reduction: ``n = floor(x log2(e) + 1/2)``, ``r = x - n ln2`` with ln2 split in two
   parts (Cody-Waite), so ``|r| <= ln2 / 2`` exactly enough.
3. ``exp(r)``: Cephes' Pade form ``1 + 2 r P(r^2) / (Q(r^2) - r P(r^2))`` for float64, its
   degree-7 polynomial for float32.
4. Scale by ``2**n`` built from exponent bits, as ``2**(n//2) * 2**(n - n//2)`` so that
   results in the subnormal range round correctly and large inputs overflow to ``inf``.

Measured against ``np.exp`` (tests/test_numba_kernels.py): within 2 ulp for float64 and 1 ulp
for float32 over the whole finite range; ``exp(x)`` is exactly 0 below about -745 (float64)
or -104 (float32), ``inf`` above the overflow threshold, and NaN for NaN.

The helpers here are compiled with :data:`~fastnn.kernels.cpu.jit.HELPER_FASTMATH` (no
``reassoc``: it would fold the two-part ln2 back into one and lose ~10 bits).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from fastnn.kernels.cpu.jit import (
    LazyKernel,
    array,
    block_bounds,
    helper_jit_flags,
    num_blocks,
)
from fastnn.kernels.cpu.threads import ftz_enter, ftz_exit

_F32 = np.float32

# float32 (Cephes expf): clamp range, log2(e), ln2 = C1 + C2, polynomial of exp(r) - 1 - r.
_HI32 = _F32(89.0)
_LO32 = _F32(-104.0)
_LOG2E32 = _F32(1.44269504088896341)
_HALF32 = _F32(0.5)
_ONE32 = _F32(1.0)
_ZERO32 = _F32(0.0)
_C1_32 = _F32(0.693359375)
_C2_32 = _F32(-2.12194440e-4)
_P0_32 = _F32(1.9875691500e-4)
_P1_32 = _F32(1.3981999507e-3)
_P2_32 = _F32(8.3334519073e-3)
_P3_32 = _F32(4.1665795894e-2)
_P4_32 = _F32(1.6666665459e-1)
_P5_32 = _F32(5.0000001201e-1)

# float64 (Cephes exp): clamp range, log2(e), ln2 = C1 + C2, Pade coefficients.
_HI64 = 710.0
_LO64 = -746.0
_LOG2E64 = 1.4426950408889634
_C1_64 = 6.93145751953125e-1
_C2_64 = 1.42860682030941723212e-6
_P0_64 = 1.26177193074810590878e-4
_P1_64 = 3.02994407707441961300e-2
_P2_64 = 9.99999999999999999910e-1
_Q0_64 = 3.00198505138664455042e-6
_Q1_64 = 2.52448340349684104192e-3
_Q2_64 = 2.27265548208155028766e-1
_Q3_64 = 2.00000000000000000009e0


@intrinsic
def _pow2(typingctx, n):
    """2.0**n for an integer-valued float ``n`` in the normal exponent range, from its bits."""
    if n == types.float32:
        int_type, float_type, bias, shift = ir.IntType(32), ir.FloatType(), 127, 23
    elif n == types.float64:
        int_type, float_type, bias, shift = ir.IntType(64), ir.DoubleType(), 1023, 52
    else:
        return None

    def codegen(context, builder, signature, args):
        k = builder.fptosi(args[0], int_type)
        k = builder.add(k, ir.Constant(int_type, bias))
        k = builder.shl(k, ir.Constant(int_type, shift))
        return builder.bitcast(k, float_type)

    return n(n), codegen


@intrinsic
def fast_max(typingctx, a, b):
    """max(a, b) that propagates NaN like ``np.maximum`` and, unlike ``a if a > b else b``,
    lets LLVM vectorise a max-reduction without ``nnan`` (``llvm.maximum``)."""
    if a != b or a not in (types.float32, types.float64):
        return None
    suffix = "f32" if a == types.float32 else "f64"

    def codegen(context, builder, signature, args):
        lty = args[0].type
        fnty = ir.FunctionType(lty, [lty, lty])
        fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.maximum.{suffix}")
        return builder.call(fn, args)

    return a(a, b), codegen


def fast_exp(x: Any) -> Any:
    """exp(x) for a float32 or float64 scalar; vectorisable inside Numba kernels.

    Called from Python it is ``np.exp``.
    """
    return np.exp(x)


def _exp32(x):
    t = x
    if t > _HI32:
        t = _HI32
    if t < _LO32:
        t = _LO32
    if t != t:
        t = _ZERO32
    fn = np.floor(t * _LOG2E32 + _HALF32)
    r = t - fn * _C1_32
    r = r - fn * _C2_32
    p = ((((_P0_32 * r + _P1_32) * r + _P2_32) * r + _P3_32) * r + _P4_32) * r + _P5_32
    p = p * (r * r) + r + _ONE32
    half = np.floor(fn * _HALF32)
    y = p * _pow2(half) * _pow2(fn - half)
    if x != x:
        y = x
    return y


def _exp64(x):
    t = x
    if t > _HI64:
        t = _HI64
    if t < _LO64:
        t = _LO64
    if t != t:
        t = 0.0
    fn = np.floor(t * _LOG2E64 + 0.5)
    r = t - fn * _C1_64
    r = r - fn * _C2_64
    rr = r * r
    px = r * ((_P0_64 * rr + _P1_64) * rr + _P2_64)
    qx = ((_Q0_64 * rr + _Q1_64) * rr + _Q2_64) * rr + _Q3_64
    p = 1.0 + 2.0 * (px / (qx - px))
    half = np.floor(fn * 0.5)
    y = p * _pow2(half) * _pow2(fn - half)
    if x != x:
        y = x
    return y


@overload(fast_exp, jit_options=helper_jit_flags())
def _fast_exp_impl(x):
    if x == types.float32:
        return _exp32
    if x == types.float64:
        return _exp64
    return None


def _exp_kernel(x, out, nblocks):
    n = x.size
    for blk in prange(nblocks):
        old = ftz_enter()
        lo, hi = block_bounds(blk, n, nblocks)
        for i in range(lo, hi):
            out[i] = fast_exp(x[i])
        ftz_exit(old)


_exp = LazyKernel(_exp_kernel, lambda T: (array(T, 1, True), array(T, 1), types.intp))


def exp(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Elementwise :func:`fast_exp` of a float32/float64 array (parallel); for tests and
    benchmarks of the exp itself. Other dtypes or layouts go to ``np.exp``."""
    dt = x.dtype if isinstance(x, np.ndarray) else None
    if dt not in (np.float32, np.float64) or not x.flags.c_contiguous:
        return np.exp(x, out=out)
    if out is None:
        out = np.empty_like(x)
    elif out.shape != x.shape or out.dtype != dt or not out.flags.c_contiguous:
        return np.exp(x, out=out)
    flat = x.reshape(-1)
    nblocks = num_blocks(flat.size)
    _exp.pick(dt, flat.size)(flat, out.reshape(-1), nblocks)
    return out
