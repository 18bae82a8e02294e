"""Numba overrides of ``lstm_sequence_forward`` / ``lstm_sequence_backward``: the whole LSTM
recurrence in one compiled loop.

Why. Per time step the layer used to make two Python-level op calls (a GEMM and the cell),
each with its argument checks: ~45 us of Python per step forward and backward, a third of
the LSTM benchmark's time (N=32, T=50, H=256), plus a thread-team launch per call.

How. One parallel region for the whole sequence, with no barrier inside it: the batch is
split between the threads (in whole micro-tiles of rows), and the rows of one sample never
depend on another's. Each thread runs every step for its rows: forward, ``hz = hs[s] @ U``
(the backend's GEMM micro-kernels, ``U`` packed once by ``prepare_rhs``, or here when given
as a plain array), then the fused cell; backward, ``dh = dz[s+1] @ U.T`` then the cell
backward. A per-step region split by hidden units would need a fork and a join per step,
and every join waits for the slower core (on a shared 2-core machine, often much slower).
Other activations than those of ``CODES``, and inputs the kernels do not take, go to the
reference loop of per-step ops.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange, types

from fastnn.kernels.cpu import gemm as _gemm
from fastnn.kernels.cpu.gemm import MR, gemm_block
from fastnn.kernels.cpu.jit import LazyKernel, array, copy_row
from fastnn.kernels.cpu.recurrent import (
    _codes,
    _kernel_ready,
    _no_partial_overlap,
    lstm_row_backward,
    lstm_row_forward,
)
from fastnn.kernels.cpu.threads import ftz_enter, ftz_exit
from fastnn.kernels.reference import recurrent as ref
from fastnn.kernels.registry import override


@numba.njit(inline="always")
def _row_range(t, nthreads, N):  # pragma: no cover  (compiled)
    """Rows ``[n0, n1)`` of thread ``t``: whole micro-tiles of ``MR`` rows where possible."""
    ntiles = (N + MR - 1) // MR
    n0 = min(N, (ntiles * t // nthreads) * MR)
    n1 = min(N, (ntiles * (t + 1) // nthreads) * MR)
    return n0, n1


def _lstm_seq_forward_kernel(xz, bp, hs, cs, gates, act_c, hz, bias, has_bias, nr, act, ract,
                             nthreads, in_place):
    T, N, G = xz.shape
    H = G // 4
    nb = (G + nr - 1) // nr
    hsf = hs.reshape(-1)
    hzf = hz.reshape(-1)
    for t in prange(nthreads):
        old = ftz_enter()
        tile = np.empty(MR * nr, dtype=hz.dtype)
        n0, n1 = _row_range(t, nthreads, N)
        rows = n1 - n0
        for s in range(T):
            if rows == 0:
                break
            gemm_block(hsf, (s * N + n0) * H, H, 1, rows, bp, 0, H, G, nr, hzf, n0 * G, G, 0,
                       0, (rows + MR - 1) // MR, 0, nb, tile)
            for n in range(n0, n1):
                if has_bias:
                    hzn = hz[n]
                    for j in range(G):
                        hzn[j] += bias[j]
                if not in_place:
                    copy_row(xz[s, n], gates[s, n])
                lstm_row_forward(gates[s, n], hz[n], cs[s, n], cs[s + 1, n], hs[s + 1, n],
                                 act_c[s, n], act, ract)
        ftz_exit(old)


def _lstm_seq_backward_kernel(seq, seq_mode, dh, dc, gates, cs, act_c, bp, dz, dbp, has_db, nr,
                              act, ract, nthreads, in_place):
    T, N, H = act_c.shape
    G = 4 * H
    nb = (H + nr - 1) // nr
    dzf = dz.reshape(-1)
    dhf = dh.reshape(-1)
    for t in prange(nthreads):
        old = ftz_enter()
        tile = np.empty(MR * nr, dtype=dh.dtype)
        n0, n1 = _row_range(t, nthreads, N)
        rows = n1 - n0
        for s in range(T - 1, -2, -1):
            if rows == 0:
                break
            if s < T - 1:  # dh of step s+1's input: dz[s+1] @ U.T, this thread's rows
                gemm_block(dzf, ((s + 1) * N + n0) * G, G, 1, rows, bp, 0, G, H, nr, dhf,
                           n0 * H, H, 0, 0, (rows + MR - 1) // MR, 0, nb, tile)
            if s < 0:
                break
            for n in range(n0, n1):
                dhn = dh[n]
                if seq_mode == 1:
                    for j in range(H):
                        dhn[j] += seq[s, n, j]
                elif seq_mode == 2:
                    for j in range(H):
                        dhn[j] += seq[n, s, j]
                if not in_place:
                    copy_row(gates[s, n], dz[s, n])
                lstm_row_backward(dhn, dc[n], dz[s, n], cs[s, n], act_c[s, n], act, ract)
                if has_db:  # partial bias gradient of this row's micro-tile (one thread's)
                    part = dbp[n // MR]
                    dzn = dz[s, n]
                    for j in range(G):
                        part[j] += dzn[j]
        ftz_exit(old)


def _forward_sig(T):
    r1, a2, r3, a3 = array(T, 1, True), array(T, 2), array(T, 3, True), array(T, 3)
    i = types.intp
    return (r3, r1, a3, a3, a3, a3, a2, r1, types.boolean, i, types.int64, types.int64, i,
            types.boolean)


def _backward_sig(T):
    r1, a2, r3, a3 = array(T, 1, True), array(T, 2), array(T, 3, True), array(T, 3)
    i = types.intp
    return (r3, i, a2, a2, r3, r3, r3, r1, a3, a2, types.boolean, i, types.int64, types.int64,
            i, types.boolean)


_seq_forward = LazyKernel(_lstm_seq_forward_kernel, _forward_sig)
_seq_backward = LazyKernel(_lstm_seq_backward_kernel, _backward_sig)


def _packed(P, dtype, shape):
    """The packed data of ``P`` (``prepare_rhs`` of a matrix, or the matrix itself, packed
    here) when it has this dtype and shape, else None."""
    if isinstance(P, _gemm.PackedMatrix):
        return P.data if P.dtype == dtype and P.shape == shape else None
    if isinstance(P, np.ndarray) and P.dtype == dtype and P.shape == shape:
        packed = _gemm.pack(P)
        return None if packed is None else packed.data
    return None


def _threads(N: int) -> int:
    """Threads of the recurrence: the batch splits in whole micro-tiles of rows."""
    return max(1, min(numba.get_num_threads(), -(-N // MR)))


@override("numba")
def lstm_sequence_forward(
    be, xz, U, hs, cs, gates, act_c,
    activation: str = "tanh", recurrent_activation: str = "sigmoid", b=None,
):
    """The LSTM recurrence over all steps (see the reference) in one compiled loop; the
    bias ``b``, if given, is added to each row of the step's ``hz`` while it is in cache,
    and with ``gates`` the very array ``xz`` each row's gates overwrite its inputs."""
    codes = _codes(activation, recurrent_activation)
    dt = getattr(xz, "dtype", None)
    shape = getattr(xz, "shape", ())
    fallback = (be, xz, U, hs, cs, gates, act_c, activation, recurrent_activation, b)
    if codes is None or dt not in (np.float32, np.float64) or len(shape) != 3:
        return ref.lstm_sequence_forward(*fallback)
    T, N, G = shape
    H = G // 4
    nr = _gemm.panel_width(dt)
    bp = _packed(U, dt, (H, G))
    ok = (
        bp is not None and G == 4 * H and N > 0 and T > 0
        and _kernel_ready(xz, dt, (T, N, G)) and _kernel_ready(hs, dt, (T + 1, N, H))
        and _kernel_ready(cs, dt, (T + 1, N, H)) and _kernel_ready(gates, dt, (T, N, G))
        and _kernel_ready(act_c, dt, (T, N, H))
        and (b is None or _kernel_ready(b, dt, (G,)))
        and _no_partial_overlap([hs, cs, gates, act_c],
                                [a for a in (xz, hs, cs, gates, act_c, b) if a is not None])
    )
    if not ok:
        return ref.lstm_sequence_forward(*fallback)
    hz = np.empty((N, G), dtype=dt)
    threads = _threads(N)
    bias = b if b is not None else hz[0]  # an unread stand-in of the right type
    _seq_forward.get(dt, threads > 1)(xz, bp, hs, cs, gates, act_c, hz, bias, b is not None,
                                      nr, *codes, threads, gates is xz)
    return hs


@override("numba")
def lstm_sequence_backward(
    be, dseq, dh, dc, gates, cs, act_c, Ut, dz,
    activation: str = "tanh", recurrent_activation: str = "sigmoid", db=None,
):
    """Backpropagation through time of the LSTM (see the reference) in one compiled loop.

    The bias gradient ``db`` is summed while each ``dz`` row is in cache, into one partial
    sum per micro-tile of rows (each tile belongs to one thread), added in tile order at the
    end: the result does not depend on the thread count. With ``dz`` the very array
    ``gates``, each row's gradient overwrites its gates."""
    codes = _codes(activation, recurrent_activation)
    dt = getattr(act_c, "dtype", None)
    shape = getattr(act_c, "shape", ())
    fallback = (be, dseq, dh, dc, gates, cs, act_c, Ut, dz, activation, recurrent_activation,
                db)
    if codes is None or dt not in (np.float32, np.float64) or len(shape) != 3:
        return ref.lstm_sequence_backward(*fallback)
    T, N, H = shape
    G = 4 * H
    nr = _gemm.panel_width(dt)
    bp = _packed(Ut, dt, (G, H))
    if dseq is None:
        seq, mode = np.zeros((1, 1, 1), dtype=dt), 0
    elif not isinstance(dseq, np.ndarray) or dseq.ndim != 3:
        seq, mode = None, -1
    elif _kernel_ready(dseq, dt, (T, N, H)):
        seq, mode = dseq, 1
    elif _kernel_ready(dseq.transpose(1, 0, 2), dt, (N, T, H)):
        seq, mode = dseq.transpose(1, 0, 2), 2  # the (N, T, H) batch-major original
    else:
        seq, mode = None, -1
    ok = (
        bp is not None and mode >= 0 and N > 0 and T > 0
        and _kernel_ready(dh, dt, (N, H)) and _kernel_ready(dc, dt, (N, H))
        and _kernel_ready(gates, dt, (T, N, G)) and _kernel_ready(cs, dt, (T + 1, N, H))
        and _kernel_ready(act_c, dt, (T, N, H)) and _kernel_ready(dz, dt, (T, N, G))
        and (db is None or _kernel_ready(db, dt, (G,)))
        and _no_partial_overlap(
            [a for a in (dh, dc, dz, db) if a is not None],
            [a for a in (seq, dh, dc, gates, cs, act_c, dz, db) if a is not None])
    )
    if not ok:
        return ref.lstm_sequence_backward(*fallback)
    threads = _threads(N)
    parts = np.zeros(((N + MR - 1) // MR if db is not None else 1, G), dtype=dt)
    _seq_backward.get(dt, threads > 1)(seq, mode, dh, dc, gates, cs, act_c, bp, dz, parts,
                                       db is not None, nr, *codes, threads, dz is gates)
    if db is not None:
        np.sum(parts, axis=0, out=db)
    return dz
