"""Numba overrides of the recurrent ops: fused LSTM/GRU gate math and embedding scatter-add.

One kernel per timestep and direction does all the elementwise work of a cell: for the LSTM
forward pass it reads the input and recurrent pre-activations, applies the four gate
activations, updates the cell and writes ``h`` in one pass over ``(N, 4H)``; the backward
kernels likewise produce all gate gradients in one pass. The loop over a row's units is
what LLVM vectorises, with the vectorisable
:func:`~fastnn.kernels.cpu.fastexp.fast_exp` (no SVML here, PERF-NOTES); tanh is
``1 - 2 / (exp(2x) + 1)``. The matrix products are the layers' ``matmul`` calls (on this
backend the GEMM of ``gemm.py``, the recurrent weight packed once per sequence). An LSTM
without a mask runs its whole recurrence in ``recurrent_sequence.py`` instead of these
per-step kernels.

Gate activations handled: ``linear``, ``relu``, ``sigmoid``, ``tanh``; the usual pair
(``tanh``, ``sigmoid``) has its own branch-free loop. Other names, and inputs the kernels
do not take (not C-contiguous float32/float64 ndarrays of one dtype and matching shapes, or
outputs that partly overlap inputs), go to the reference op.

``embedding_backward`` splits the columns of ``dW`` over threads: each thread zeroes and
accumulates its own columns for every id, so repeated ids add up without races.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, types

from fastnn.kernels.cpu.fastexp import fast_exp
from fastnn.kernels.cpu.jit import (
    FASTMATH,
    LazyKernel,
    array,
    cast_to,
    copy_row,
    helper_jit_flags,
)
from fastnn.kernels.cpu.threads import ftz_enter, ftz_exit
from fastnn.kernels.reference import recurrent as ref
from fastnn.kernels.registry import override

_LINEAR, _RELU, _SIGMOID, _TANH = 0, 1, 2, 3

#: Activation name -> kernel code, for the gate activations these kernels implement.
CODES: dict[str, int] = {"linear": _LINEAR, "relu": _RELU, "sigmoid": _SIGMOID, "tanh": _TANH}

#: Whether the per-step cell kernels use Numba's thread pool. One step is small (N x H
#: units) and sits between two BLAS calls whose own threads are still spinning: measured
#: on 2 cores, a parallel region per step cost more than it saved (PERF-NOTES: pools fight).
CELL_PARALLEL = False

#: Columns of dW one thread of the embedding kernel owns, at least.
EMBEDDING_MIN_COLUMNS = 16

# error_model="numpy": no ZeroDivisionError branch in the divisions, so loops vectorise.
_helper = njit(**helper_jit_flags())

# The per-row cell functions take the kernels' fast-math flags (reassociation included): they
# hold no exp of their own (the activations they call keep the helpers' flags when inlined),
# and with the helpers' flags the default backward row ran 0.44 ms for 50 steps of 16 rows
# (H=256, float32) against 0.37 ms.
_row_helper = njit(fastmath=set(FASTMATH), error_model="numpy")


@_helper
def _sigmoid(v):
    one = cast_to(1.0, v)
    return one / (one + fast_exp(-v))


@_helper
def _tanh(v):
    """tanh(v) = 1 - 2 / (exp(2 v) + 1) from the vectorisable exp: exact limits -1 and 1
    (exp gives 0 or inf), absolute error a few ulp of 1, also near 0 (inside the tested
    tolerances)."""
    one = cast_to(1.0, v)
    two = cast_to(2.0, v)
    return one - two / (fast_exp(two * v) + one)


@_helper
def _act(code, v):
    if code == _SIGMOID:
        return _sigmoid(v)
    if code == _TANH:
        return _tanh(v)
    if code == _RELU:
        zero = cast_to(0.0, v)
        return zero if v < zero else v
    return v


@_helper
def _act_grad(code, y):
    """The derivative of the activation, from its output ``y``."""
    one = cast_to(1.0, y)
    if code == _SIGMOID:
        return (one - y) * y
    if code == _TANH:
        return one - y * y
    if code == _RELU:
        return one if y > cast_to(0.0, y) else cast_to(0.0, y)
    return one


# -- LSTM ------------------------------------------------------------------------------
# Each row is done in short loops over at most three arrays: one fused loop over seven
# arrays needs more runtime alias checks than LLVM will emit and stays scalar (measured 4x
# slower). The rows of one step (a few KiB) stay in L1 between the loops.
#
# The row functions work in place: the gates are written over the input pre-activations and
# the gradient over the gates, so that the sequence kernels need one (T, N, 4H) array where
# they had three (measured on the LSTM benchmark: 10.24 against 10.63 ms, fewer cache lines
# written back). Passing the same row as two arguments instead would fail LLVM's runtime
# alias checks and run the scalar loop.
@_row_helper
def lstm_row_forward(a, r, cp, cn, hn, ac, act, ract):
    """One sample's LSTM cell on row views (gates ``[i, f, g, o]``, callable from kernels):
    ``a`` holds ``x @ W`` (+ b) and is overwritten with the gates ``act(a + r)``;
    ``cn = f * cp + i * g``, ``ac = act(cn)``, ``hn = o * ac``.

    One loop over the units does all of a unit's work (measured: 9 us against 17 us for 16
    rows of H=256 done as six loops, float32; short loops cost their set-up each row).
    """
    H = cn.shape[0]
    if act == _TANH and ract == _SIGMOID:
        for j in range(H):
            i = _sigmoid(a[j] + r[j])
            f = _sigmoid(a[H + j] + r[H + j])
            gg = _tanh(a[2 * H + j] + r[2 * H + j])
            o = _sigmoid(a[3 * H + j] + r[3 * H + j])
            c = f * cp[j] + i * gg
            t = _tanh(c)
            a[j] = i
            a[H + j] = f
            a[2 * H + j] = gg
            a[3 * H + j] = o
            cn[j] = c
            ac[j] = t
            hn[j] = o * t
    else:
        for j in range(H):
            i = _act(ract, a[j] + r[j])
            f = _act(ract, a[H + j] + r[H + j])
            gg = _act(act, a[2 * H + j] + r[2 * H + j])
            o = _act(ract, a[3 * H + j] + r[3 * H + j])
            c = f * cp[j] + i * gg
            t = _act(act, c)
            a[j] = i
            a[H + j] = f
            a[2 * H + j] = gg
            a[3 * H + j] = o
            cn[j] = c
            ac[j] = t
            hn[j] = o * t


@_row_helper
def lstm_row_backward(dhn, dc, gd, cp, tc, act, ract):
    """Backward of :func:`lstm_row_forward` for one sample: ``gd`` holds the gates and is
    overwritten with the gradient with respect to the pre-activations, ``dc`` holds the
    gradient with respect to the new cell state and is overwritten with the one with
    respect to ``cp``; ``dhn`` is the gradient with respect to the new hidden state and
    ``tc`` the cell's ``act(cn)``.

    ``dc`` is one argument, read and written in place: as two arguments for the same row
    LLVM's runtime alias check fails and the scalar loop runs (measured: 0.39 against
    0.13 ms for 50 steps of 16 rows, H=256, float32).
    """
    H = tc.shape[0]
    if act == _TANH and ract == _SIGMOID:
        # The default pair with the derivatives written out: with the code tests of
        # _act_grad inside, the loop took 0.52 ms for 50 steps of 16 rows (H=256, float32)
        # against 0.44 ms.
        one = cast_to(1.0, tc.dtype)
        for j in range(H):
            i = gd[j]
            f = gd[H + j]
            gg = gd[2 * H + j]
            o = gd[3 * H + j]
            dhv = dhn[j]
            t = tc[j]
            dct = dhv * o * (one - t * t) + dc[j]
            gd[j] = dct * gg * ((one - i) * i)
            gd[H + j] = dct * cp[j] * ((one - f) * f)
            gd[2 * H + j] = dct * i * (one - gg * gg)
            gd[3 * H + j] = dhv * t * ((one - o) * o)
            dc[j] = dct * f
        return
    for j in range(H):
        i = gd[j]
        f = gd[H + j]
        gg = gd[2 * H + j]
        o = gd[3 * H + j]
        dhv = dhn[j]
        dct = dhv * o * _act_grad(act, tc[j]) + dc[j]
        gd[j] = dct * gg * _act_grad(ract, i)
        gd[H + j] = dct * cp[j] * _act_grad(ract, f)
        gd[2 * H + j] = dct * i * _act_grad(act, gg)
        gd[3 * H + j] = dhv * tc[j] * _act_grad(ract, o)
        dc[j] = dct * f


def _lstm_forward_kernel(xz, hz, c_prev, gates, c, h, act_c, act, ract, in_place):
    for n in prange(c.shape[0]):
        old = ftz_enter()
        if not in_place:
            copy_row(xz[n], gates[n])
        lstm_row_forward(gates[n], hz[n], c_prev[n], c[n], h[n], act_c[n], act, ract)
        ftz_exit(old)


def _lstm_backward_kernel(dh, dc, gates, c_prev, act_c, dz, dc_prev, act, ract, dz_in_place,
                          dc_in_place):
    for n in prange(act_c.shape[0]):
        old = ftz_enter()
        if not dz_in_place:
            copy_row(gates[n], dz[n])
        if not dc_in_place:
            copy_row(dc[n], dc_prev[n])
        lstm_row_backward(dh[n], dc_prev[n], dz[n], c_prev[n], act_c[n], act, ract)
        ftz_exit(old)


def _lstm_forward_sig(T):
    a2, r2 = array(T, 2), array(T, 2, True)
    return (r2, r2, r2, a2, a2, a2, a2, types.int64, types.int64, types.boolean)


def _lstm_backward_sig(T):
    a2, r2 = array(T, 2), array(T, 2, True)
    b = types.boolean
    return (r2, r2, r2, r2, r2, a2, a2, types.int64, types.int64, b, b)


_lstm_forward = LazyKernel(_lstm_forward_kernel, _lstm_forward_sig, parallel=CELL_PARALLEL)
_lstm_backward = LazyKernel(_lstm_backward_kernel, _lstm_backward_sig, parallel=CELL_PARALLEL)


# -- GRU (reset_after=True) ------------------------------------------------------------
def _gru_forward_kernel(xz, hz, h_prev, gates, h, act, ract):
    N, H = h.shape
    for n in prange(N):
        old = ftz_enter()
        g = gates[n]
        x = xz[n]
        r = hz[n]
        if ract == _SIGMOID:
            for k in range(2 * H):
                g[k] = _sigmoid(x[k] + r[k])
        else:
            for k in range(2 * H):
                g[k] = _act(ract, x[k] + r[k])
        if act == _TANH:
            for j in range(H):
                g[2 * H + j] = _tanh(x[2 * H + j] + g[H + j] * r[2 * H + j])
        else:
            for j in range(H):
                g[2 * H + j] = _act(act, x[2 * H + j] + g[H + j] * r[2 * H + j])
        hp = h_prev[n]
        hn = h[n]
        for j in range(H):
            hn[j] = g[2 * H + j] + g[j] * (hp[j] - g[2 * H + j])
        ftz_exit(old)


def _gru_backward_kernel(dh, gates, h_prev, hz, dxz, dhz, dh_prev, act, ract):
    N, H = dh.shape
    one = cast_to(1.0, dh.dtype)
    for n in prange(N):
        old = ftz_enter()
        for j in range(H):
            z = gates[n, j]
            r = gates[n, H + j]
            nn = gates[n, 2 * H + j]
            dhv = dh[n, j]
            dn = dhv * (one - z) * _act_grad(act, nn)
            dzz = dhv * (h_prev[n, j] - nn) * _act_grad(ract, z)
            dr = dn * hz[n, 2 * H + j] * _act_grad(ract, r)
            dxz[n, j] = dzz
            dxz[n, H + j] = dr
            dxz[n, 2 * H + j] = dn
            dhz[n, j] = dzz
            dhz[n, H + j] = dr
            dhz[n, 2 * H + j] = dn * r
            dh_prev[n, j] = dhv * z
        ftz_exit(old)


def _gru_forward_sig(T):
    a2, r2 = array(T, 2), array(T, 2, True)
    return (r2, r2, r2, a2, a2, types.int64, types.int64)


def _gru_backward_sig(T):
    a2, r2 = array(T, 2), array(T, 2, True)
    return (r2, r2, r2, r2, a2, a2, a2, types.int64, types.int64)


_gru_forward = LazyKernel(_gru_forward_kernel, _gru_forward_sig, parallel=CELL_PARALLEL)
_gru_backward = LazyKernel(_gru_backward_kernel, _gru_backward_sig, parallel=CELL_PARALLEL)


# -- embedding ---------------------------------------------------------------------------
def _embedding_backward_kernel(ids, dout, dW, nblocks):
    V, D = dW.shape
    M = ids.shape[0]
    for blk in prange(nblocks):
        lo = blk * D // nblocks
        hi = (blk + 1) * D // nblocks
        for v in range(V):
            for j in range(lo, hi):
                dW[v, j] = 0
        for k in range(M):
            row = ids[k]
            for j in range(lo, hi):
                dW[row, j] += dout[k, j]


def _embedding_backward_sig(T):
    return (array(types.intp, 1, True), array(T, 2, True), array(T, 2), types.intp)


_embedding_backward = LazyKernel(_embedding_backward_kernel, _embedding_backward_sig)


# -- validation --------------------------------------------------------------------------
def _codes(activation: str, recurrent_activation: str) -> tuple[int, int] | None:
    act = CODES.get(activation)
    ract = CODES.get(recurrent_activation)
    if act is None or ract is None:
        return None
    return act, ract


def _kernel_ready(a, dtype, shape=None) -> bool:
    """An aligned C-contiguous ndarray of ``dtype`` (and ``shape``, when given)."""
    if not isinstance(a, np.ndarray) or a.dtype != dtype:
        return False
    if not (a.flags.c_contiguous and a.flags.aligned):
        return False
    return shape is None or a.shape == tuple(shape)


def _fits(dtype, arrays_and_shapes) -> bool:
    return all(_kernel_ready(a, dtype, shape) for a, shape in arrays_and_shapes)


def _no_partial_overlap(outputs, inputs) -> bool:
    """Outputs must not overlap any input, except by being the very same array."""
    for out in outputs:
        if not out.flags.writeable:
            return False
        for x in inputs:
            if x is out:
                continue
            if np.may_share_memory(out, x):
                return False
    return True


# -- overrides -------------------------------------------------------------------------------
@override("numba")
def lstm_cell_forward(
    be, xz, hz, c_prev, gates, c, h, act_c,
    activation: str = "tanh", recurrent_activation: str = "sigmoid",
):
    """Fused LSTM step (see the reference op); one Numba kernel."""
    codes = _codes(activation, recurrent_activation)
    dt = getattr(c_prev, "dtype", None)
    shape = getattr(c_prev, "shape", ())
    if codes is None or dt not in (np.float32, np.float64) or len(shape) != 2:
        return ref.lstm_cell_forward(be, xz, hz, c_prev, gates, c, h, act_c,
                                     activation, recurrent_activation)
    N, H = shape
    g4 = (N, 4 * H)
    # Unless gates is xz, the kernel copies xz into gates before it reads hz: gates being hz
    # itself is left to the reference.
    ok = _fits(dt, [(xz, g4), (hz, g4), (c_prev, shape), (gates, g4), (c, shape), (h, shape),
                    (act_c, shape)]) and _no_partial_overlap(
        [gates, c, h, act_c], [xz, hz, c_prev]) and (gates is xz or gates is not hz)
    if not ok:
        return ref.lstm_cell_forward(be, xz, hz, c_prev, gates, c, h, act_c,
                                     activation, recurrent_activation)
    _lstm_forward[dt](xz, hz, c_prev, gates, c, h, act_c, *codes, gates is xz)
    return h


@override("numba")
def lstm_cell_backward(
    be, dh, dc, gates, c_prev, act_c, dz, dc_prev,
    activation: str = "tanh", recurrent_activation: str = "sigmoid",
):
    """Fused LSTM step backward (see the reference op); ``dc_prev`` may be ``dc`` and
    ``dz`` may be ``gates`` (in place)."""
    codes = _codes(activation, recurrent_activation)
    dt = getattr(act_c, "dtype", None)
    shape = getattr(act_c, "shape", ())
    if codes is None or dt not in (np.float32, np.float64) or len(shape) != 2:
        return ref.lstm_cell_backward(be, dh, dc, gates, c_prev, act_c, dz, dc_prev,
                                      activation, recurrent_activation)
    N, H = shape
    g4 = (N, 4 * H)
    # Unless dc_prev is dc, the kernel copies dc into dc_prev before it reads the other
    # inputs: dc_prev being one of them is left to the reference.
    ok = _fits(dt, [(dh, shape), (dc, shape), (gates, g4), (c_prev, shape), (act_c, shape),
                    (dz, g4), (dc_prev, shape)]) and _no_partial_overlap(
        [dz, dc_prev], [dh, dc, gates, c_prev, act_c]) and (
        dc_prev is dc or all(dc_prev is not a for a in (dh, c_prev, act_c)))
    if not ok:
        return ref.lstm_cell_backward(be, dh, dc, gates, c_prev, act_c, dz, dc_prev,
                                      activation, recurrent_activation)
    _lstm_backward[dt](dh, dc, gates, c_prev, act_c, dz, dc_prev, *codes, dz is gates,
                       dc_prev is dc)
    return dz


@override("numba")
def gru_cell_forward(
    be, xz, hz, h_prev, gates, h,
    activation: str = "tanh", recurrent_activation: str = "sigmoid",
):
    """Fused GRU step (reset_after=True; see the reference op); one Numba kernel."""
    codes = _codes(activation, recurrent_activation)
    dt = getattr(h_prev, "dtype", None)
    shape = getattr(h_prev, "shape", ())
    if codes is None or dt not in (np.float32, np.float64) or len(shape) != 2:
        return ref.gru_cell_forward(be, xz, hz, h_prev, gates, h,
                                    activation, recurrent_activation)
    N, H = shape
    g3 = (N, 3 * H)
    ok = _fits(dt, [(xz, g3), (hz, g3), (h_prev, shape), (gates, g3), (h, shape)]) and (
        _no_partial_overlap([gates, h], [xz, hz, h_prev]))
    if not ok:
        return ref.gru_cell_forward(be, xz, hz, h_prev, gates, h,
                                    activation, recurrent_activation)
    _gru_forward[dt](xz, hz, h_prev, gates, h, *codes)
    return h


@override("numba")
def gru_cell_backward(
    be, dh, gates, h_prev, hz, dxz, dhz, dh_prev,
    activation: str = "tanh", recurrent_activation: str = "sigmoid",
):
    """Fused GRU step backward (reset_after=True; see the reference op)."""
    codes = _codes(activation, recurrent_activation)
    dt = getattr(dh, "dtype", None)
    shape = getattr(dh, "shape", ())
    if codes is None or dt not in (np.float32, np.float64) or len(shape) != 2:
        return ref.gru_cell_backward(be, dh, gates, h_prev, hz, dxz, dhz, dh_prev,
                                     activation, recurrent_activation)
    N, H = shape
    g3 = (N, 3 * H)
    ok = _fits(dt, [(dh, shape), (gates, g3), (h_prev, shape), (hz, g3), (dxz, g3),
                    (dhz, g3), (dh_prev, shape)]) and _no_partial_overlap(
        [dxz, dhz, dh_prev], [dh, gates, h_prev, hz])
    if not ok:
        return ref.gru_cell_backward(be, dh, gates, h_prev, hz, dxz, dhz, dh_prev,
                                     activation, recurrent_activation)
    _gru_backward[dt](dh, gates, h_prev, hz, dxz, dhz, dh_prev, *codes)
    return dxz


@override("numba")
def embedding_backward(be, ids, dout, dW):
    """Scatter-add of ``dout`` rows into ``dW`` by ``ids`` (see the reference op)."""
    dt = getattr(dW, "dtype", None)
    ok = (
        dt in (np.float32, np.float64)
        and isinstance(ids, np.ndarray) and ids.ndim == 1 and ids.dtype == np.intp
        and ids.flags.c_contiguous
        and getattr(dW, "ndim", 0) == 2 and _kernel_ready(dW, dt)
        and _kernel_ready(dout, dt, (ids.shape[0], dW.shape[1])) and dW.flags.writeable
        and not np.may_share_memory(dW, dout)
    )
    if ok and ids.size:
        lo, hi = int(ids.min()), int(ids.max())
        ok = lo >= 0 and hi < dW.shape[0]
    if not ok:
        return ref.embedding_backward(be, ids, dout, dW)
    from numba import get_num_threads

    D = dW.shape[1]
    nblocks = max(1, min(get_num_threads(), D // EMBEDDING_MIN_COLUMNS))
    _embedding_backward[dt](ids, dout, dW, nblocks)
    return dW
