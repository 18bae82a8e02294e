"""A register-blocked GEMM for the Numba backend: ``c = a @ b`` in float32 and float64.

Why. NumPy's OpenBLAS picks its GEMM kernel from the CPU, and the environment can pin that
choice (``OPENBLAS_CORETYPE=Haswell`` on the machines these notes were measured on: AVX2
kernels on an AVX-512 CPU, about 230 GFLOP/s on two cores). The recurrent layers and the
MLP step spend most of their time in GEMMs, so the backend carries its own, compiled by
LLVM for the CPU it runs on.

How. The classic blocked scheme (Goto; BLIS): ``b`` is packed into panels of ``NR`` columns
by ``KC`` rows, contiguous in the order the micro-kernel reads them (a row-major ``b``
whose width is a multiple of ``NR`` is read in place instead, see
:data:`UNPACKED_MAX_ROWS`); ``a`` is read where it lies (row-major or column-major, so
``x.T @ dz`` needs no copy); the micro-kernel keeps an ``MR x NR`` block of ``c`` in
vector registers across the ``KC`` loop, one broadcast of ``a`` and ``NV`` fused
multiply-adds per row and step. The micro-kernel is written as LLVM IR (a Numba intrinsic)
because Numba has no vector types: written as Python loops, LLVM keeps the accumulators in
memory. Edge rows use a micro-kernel with fewer rows; edge columns go through a small tile
buffer. Work is split between threads by rows of ``c``, or by column panels when ``c`` has
few rows or is much wider than tall (:data:`COLUMN_SPLIT_RATIO`); a right-hand side used
many times (the recurrent weight of an RNN, once per time step) is packed once
(:func:`pack`). Every element of ``c`` is summed by one thread in one fixed order: results
do not depend on the thread count.

The wrapper (:func:`gemm`) returns False for what it does not take (other dtypes, strided
operands, overlapping output, tiny or vector-shaped products); the op then uses BLAS.
"""

from __future__ import annotations

import threading
from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from fastnn.kernels.cpu.jit import LazyKernel, array, helper_jit_flags

#: Rows of ``c`` per micro-tile, vectors per row (one vector = 64 bytes), ``a``/``b`` depth
#: per packed block, micro-tiles per row block of one thread (it stays in L2 while the
#: thread walks the column panels). Chosen by measurement on the AVX-512 machines of
#: PERF-NOTES: 6 x 2, 8 x 2 and 12 x 2 tiles ran alike in isolation (16 accumulators and 3
#: more registers of 32); 8 rows split the usual batches (32, 128) into whole tiles. KC 512
#: ran a little faster than 256 on the LSTM's K=1600 weight-gradient products.
MR = 8
NV = 2
KC = 512
MC_TILES = 16

#: A row-major ``b`` whose width is a multiple of the panel width is read in place (not
#: packed) when ``a`` has fewer rows than this. Measured (AMD EPYC, float32, best of 40): in
#: place wins where few rows share the copy (NN 128x784x512: 450-479 against 267-392
#: GFLOP/s packed), packing where many do and the packed panel stays in L1 (NN
#: 1600x128x1024, the LSTM's input projection: 450-485 against 375-386); at 1024 rows they
#: tie. Set to 0 to always pack (the tests run both).
UNPACKED_MAX_ROWS = 1024

#: ...unless its rows are at least this many bytes apart and ``a`` has
#: :data:`UNPACKED_WIDE_MAX_ROWS` rows or more: then every step down a column panel touches a
#: new page (and TLB entry) and packing wins. Measured (float32, best of 25): NN
#: 512x512x1024 1.38 ms in place against 1.09 packed, 512x1600x1024 4.47 against 3.78,
#: the LSTM's weight gradient TN 256x1600x1024 2.65 against 2.15; at 32 rows in place
#: still wins (0.29 against 0.38 ms for 32x1600x1024).
UNPACKED_MAX_STRIDE = 4096
UNPACKED_WIDE_MAX_ROWS = 64

#: Products smaller than this many multiply-adds go to BLAS: the packing and the call
#: overhead cost more than the faster kernel saves.
MIN_WORK = 1 << 16

#: Threads split the column panels of ``c`` (each reads all of ``a`` and half of ``b``)
#: rather than its rows (half of ``a``, all of ``b``) when ``c`` has more than this many
#: times as many columns as rows, so ``b`` is the larger operand. Measured (AMD EPYC, two
#: threads, interleaved A/B in one process): the LSTM benchmark's weight gradients (256 and
#: 128 rows by 1024 columns, K=1600) took the whole step from 11.93 to 11.22 ms, and the
#: MLP step at batch 128 from 1.85 to 1.73 ms; batches 32 and 1024 unchanged.
COLUMN_SPLIT_RATIO = 2

#: Products of fewer multiply-adds run on the calling thread (about 40 us of work on one
#: AVX-512 core). A parallel region ends in a join that waits for its slowest thread; on a
#: shared machine a thread can be descheduled for a whole time slice, and a short product
#: split in two then takes milliseconds (measured: digits MLP epochs of 1.6 s instead of
#: 0.02 s with 260 k multiply-add products run in parallel).
PARALLEL_MIN_WORK = 1 << 23

#: Packing (a copy) uses the threads from this many elements of ``b`` on (~50 us of copying
#: on one core), for the same reason. The LSTM step's four packs (U, U.T, W, W.T) gained
#: about 0.2 ms per step from 2**19 to 2**17.
PARALLEL_MIN_PACK = 1 << 17


def lanes(dtype: np.dtype) -> int:
    """Elements of ``dtype`` in one 64-byte vector."""
    return 64 // np.dtype(dtype).itemsize


def panel_width(dtype: np.dtype) -> int:
    """Columns per packed panel of ``b`` (``NR``) for ``dtype``."""
    return NV * lanes(dtype)


def _make_micro_kernel(rows: int, unit_row_stride: bool) -> Any:
    """An intrinsic computing a ``rows x NR`` block: ``c[coff + i*ldc + j] (+)= sum_k
    a[aoff + i*sai + k*sak] * bp[boff + k*sbk + j]`` for ``k < kc`` (``sbk = NR`` in a
    packed panel, the row length for a row-major ``b`` read in place).

    With ``unit_row_stride`` the kernel assumes ``sai == 1`` (a column-major ``a``, such as
    ``x.T`` in a weight gradient): the rows are constant offsets from one pointer. With a
    runtime row stride LLVM keeps a pointer per row and, with the unrolled k loop, spills
    some of them to the stack.
    """

    @intrinsic
    def micro(typingctx, kc, a, aoff, sai, sak, bp, boff, sbk, c, coff, ldc, accumulate):
        sig = types.void(kc, a, aoff, sai, sak, bp, boff, sbk, c, coff, ldc, accumulate)

        def codegen(context, builder, sig, args):
            kc_, a_, aoff_, sai_, sak_, bp_, boff_, sbk_, c_, coff_, ldc_, acc_ = args
            dtype = sig.args[1].dtype
            scalar = context.get_value_type(dtype)
            width = 16 if dtype == types.float32 else 8
            vec = ir.VectorType(scalar, width)
            i64 = ir.IntType(64)
            i32 = ir.IntType(32)
            suffix = f"v{width}f{'32' if dtype == types.float32 else '64'}"
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vec, [vec, vec, vec]), f"llvm.fma.{suffix}"
            )

            def ptr(arr_type, value):
                return context.make_array(arr_type)(context, builder, value).data

            def const(v):
                return ir.Constant(i64, v)

            def as_i64(v):
                return builder.sext(v, i64) if v.type.width < 64 else v

            kc_, aoff_, sai_, sak_, boff_, sbk_, coff_, ldc_ = map(
                as_i64, (kc_, aoff_, sai_, sak_, boff_, sbk_, coff_, ldc_)
            )
            A = builder.gep(ptr(sig.args[1], a_), [aoff_])
            B = builder.gep(ptr(sig.args[5], bp_), [boff_])
            C = builder.gep(ptr(sig.args[8], c_), [coff_])
            undef = ir.Constant(vec, ir.Undefined)
            splat0 = ir.Constant(ir.VectorType(i32, width), [0] * width)
            zero = ir.Constant(vec, [0.0] * width)
            # Allocas of vectors: LLVM's SROA turns them into registers (phis of the k loop).
            accs = [[cgutils.alloca_once_value(builder, zero) for _ in range(NV)]
                    for _ in range(rows)]
            if unit_row_stride:
                row_ptrs = [builder.gep(A, [const(i)]) for i in range(rows)]
            else:
                row_ptrs = [builder.gep(A, [builder.mul(sai_, const(i))]) for i in range(rows)]
            with cgutils.for_range(builder, kc_) as loop:
                k = loop.index
                bk = builder.gep(B, [builder.mul(k, sbk_)])
                bvecs = [
                    builder.load(
                        builder.bitcast(builder.gep(bk, [const(width * j)]), vec.as_pointer()),
                        align=dtype.bitwidth // 8,
                    )
                    for j in range(NV)
                ]
                ka = builder.mul(k, sak_)
                for i in range(rows):
                    s = builder.load(builder.gep(row_ptrs[i], [ka]))
                    sv = builder.shuffle_vector(
                        builder.insert_element(undef, s, ir.Constant(i32, 0)), undef, splat0
                    )
                    for j in range(NV):
                        acc = builder.load(accs[i][j])
                        builder.store(builder.call(fma, [sv, bvecs[j], acc]), accs[i][j])
            add = builder.icmp_signed("!=", acc_, ir.Constant(acc_.type, 0))
            for i in range(rows):
                crow = builder.gep(C, [builder.mul(ldc_, const(i))])
                for j in range(NV):
                    p = builder.bitcast(builder.gep(crow, [const(width * j)]), vec.as_pointer())
                    total = builder.load(accs[i][j])
                    # select, not a multiply by 0: the old contents may be NaN (np.empty).
                    old = builder.load(p, align=dtype.bitwidth // 8)
                    builder.store(
                        builder.select(add, builder.fadd(old, total), total),
                        p, align=dtype.bitwidth // 8,
                    )
            return context.get_dummy_value()

        return sig, codegen

    return micro


_MICRO = tuple(_make_micro_kernel(r, False) for r in range(1, MR + 1))
_MICRO_UNIT = tuple(_make_micro_kernel(r, True) for r in range(1, MR + 1))
_M1, _M2, _M3, _M4, _M5, _M6, _M7, _M8 = _MICRO
_U1, _U2, _U3, _U4, _U5, _U6, _U7, _U8 = _MICRO_UNIT


@numba.njit(**helper_jit_flags())
def _micro(rows, kc, a, aoff, sai, sak, bp, boff, sbk, c, coff, ldc,
           accumulate):  # pragma: no cover  (compiled)
    """The micro-kernel for ``rows`` rows (the unit-row-stride build when ``sai == 1``)."""
    args = (kc, a, aoff, sai, sak, bp, boff, sbk, c, coff, ldc, accumulate)
    if rows == 8:
        if sai == 1:
            _U8(*args)
        else:
            _M8(*args)
    elif rows == 7:
        if sai == 1:
            _U7(*args)
        else:
            _M7(*args)
    elif rows == 6:
        if sai == 1:
            _U6(*args)
        else:
            _M6(*args)
    elif rows == 5:
        if sai == 1:
            _U5(*args)
        else:
            _M5(*args)
    elif rows == 4:
        if sai == 1:
            _U4(*args)
        else:
            _M4(*args)
    elif rows == 3:
        if sai == 1:
            _U3(*args)
        else:
            _M3(*args)
    elif rows == 2:
        if sai == 1:
            _U2(*args)
        else:
            _M2(*args)
    else:
        if sai == 1:
            _U1(*args)
        else:
            _M1(*args)


@numba.njit(**helper_jit_flags())
def gemm_block(a, abase, sai, sak, M, bp, ldb, K, N, nr, c, cbase, ldc, accumulate,
               ib0, ib1, jb0, jb1, tile):  # pragma: no cover  (compiled)
    """``c[rows, cols] (+)= a[rows, :] @ B[:, cols]`` for the row tiles ``[ib0, ib1)`` and
    the column panels ``[jb0, jb1)`` (one thread's share; callable from other kernels).

    ``a`` element (i, k) is ``a[abase + i*sai + k*sak]``; ``c`` element (i, j) is
    ``c[cbase + i*ldc + j]``. B is packed in ``bp`` when ``ldb`` is 0, else ``bp`` is a
    row-major B read in place, row stride ``ldb`` (then ``N`` must be a multiple of ``nr``).
    ``tile`` is ``MR * nr`` scratch for edge panels.
    """
    nb = (N + nr - 1) // nr
    for k0 in range(0, K, KC):
        kc = min(KC, K - k0)
        acc = 1 if (accumulate or k0 > 0) else 0
        for it0 in range(ib0, ib1, MC_TILES):
            it1 = min(ib1, it0 + MC_TILES)
            for jb in range(jb0, jb1):
                j0 = jb * nr
                if ldb == 0:
                    boff = k0 * nb * nr + jb * kc * nr
                    sbk = nr
                else:
                    boff = k0 * ldb + j0
                    sbk = ldb
                w = min(nr, N - j0)
                for ib in range(it0, it1):
                    r0 = ib * MR
                    h = min(MR, M - r0)
                    aoff = abase + r0 * sai + k0 * sak
                    coff = cbase + r0 * ldc + j0
                    if w == nr:
                        _micro(h, kc, a, aoff, sai, sak, bp, boff, sbk, c, coff, ldc, acc)
                    else:
                        _micro(h, kc, a, aoff, sai, sak, bp, boff, sbk, tile, 0, nr, 0)
                        for i in range(h):
                            row = coff + i * ldc
                            if acc:
                                for j in range(w):
                                    c[row + j] += tile[i * nr + j]
                            else:
                                for j in range(w):
                                    c[row + j] = tile[i * nr + j]


def _gemm_kernel(a, sai, sak, M, bp, ldb, K, N, nr, c, accumulate, nthreads, by_cols):
    # by_cols: split the column panels between the threads (when there are enough of them)
    nb = (N + nr - 1) // nr
    ntiles = (M + MR - 1) // MR
    for t in prange(nthreads):
        tile = np.empty(MR * nr, dtype=c.dtype)
        if nb < nthreads or (not by_cols and ntiles >= 4 * nthreads):
            ib0 = ntiles * t // nthreads
            ib1 = ntiles * (t + 1) // nthreads
            jb0 = 0
            jb1 = nb
        else:
            ib0 = 0
            ib1 = ntiles
            jb0 = nb * t // nthreads
            jb1 = nb * (t + 1) // nthreads
        gemm_block(a, 0, sai, sak, M, bp, ldb, K, N, nr, c, 0, N, accumulate,
                   ib0, ib1, jb0, jb1, tile)


def _pack_kernel(b, transposed, bp, nr):
    """Panels of ``B`` (``b`` itself, or ``b.T`` when ``transposed``), zero-padded to ``nr``."""
    if transposed:
        N, K = b.shape
    else:
        K, N = b.shape
    nb = (N + nr - 1) // nr
    nkb = (K + KC - 1) // KC
    for p in prange(nkb * nb):
        kb = p // nb
        jb = p - kb * nb
        k0 = kb * KC
        kc = min(KC, K - k0)
        base = k0 * nb * nr + jb * kc * nr
        j0 = jb * nr
        w = min(nr, N - j0)
        if transposed:
            for j in range(w):
                src = b[j0 + j, k0:k0 + kc]
                for k in range(kc):
                    bp[base + k * nr + j] = src[k]
        else:
            for k in range(kc):
                dst = base + k * nr
                bp[dst:dst + w] = b[k0 + k, j0:j0 + w]
        if w < nr:
            for k in range(kc):
                dst = base + k * nr
                bp[dst + w:dst + nr] = 0


_gemm = LazyKernel(
    _gemm_kernel,
    lambda T: (array(T, 1, True), types.intp, types.intp, types.intp, array(T, 1, True),
               types.intp, types.intp, types.intp, types.intp, array(T, 1), types.intp,
               types.intp, types.boolean),
)
_pack = LazyKernel(
    _pack_kernel,
    lambda T: (array(T, 2, True), types.boolean, array(T, 1), types.intp),
)


class PackedMatrix:
    """The right-hand side ``b`` of ``a @ b`` packed into panels for :func:`gemm`.

    A snapshot: it stays valid only while ``source`` is unchanged (pack again after an
    in-place update). ``shape`` and ``dtype`` are those of ``b``.
    """

    __slots__ = ("source", "data", "shape", "dtype")

    def __init__(self, source: np.ndarray, data: np.ndarray) -> None:
        self.source = source
        self.data = data
        self.shape = source.shape
        self.dtype = source.dtype

    @property
    def T(self) -> Any:  # noqa: N802  (mirrors ndarray.T for code that falls back)
        """The transposed source (for a caller that falls back to BLAS)."""
        return self.source.T


def _layout(x: Any, dtype: np.dtype) -> str | None:
    """'C' or 'F' for a 2-D aligned ``dtype`` array laid out that way, else None."""
    if not isinstance(x, np.ndarray) or x.dtype != dtype or x.ndim != 2:
        return None
    flags = x.flags
    if not flags.aligned:
        return None
    if flags.c_contiguous:
        return "C"
    if flags.f_contiguous:
        return "F"
    return None


def pack(b: np.ndarray, out: np.ndarray | None = None) -> PackedMatrix | None:
    """``b`` (K, N) packed for :func:`gemm`, or None when the GEMM does not take it.

    ``out`` may be a flat buffer of at least :func:`packed_size` elements to reuse (one that
    does not fit, is read-only or overlaps ``b`` is not used: a fresh buffer is allocated).
    """
    if not isinstance(b, np.ndarray):
        return None
    dt = b.dtype
    if dt != np.float32 and dt != np.float64:
        return None
    layout = _layout(b, dt)
    if layout is None:
        return None
    K, N = b.shape
    if K == 0 or N == 0:
        return None
    nr = panel_width(dt)
    size = packed_size(K, N, dt)
    if (
        not isinstance(out, np.ndarray) or out.dtype != dt or out.ndim != 1 or out.size < size
        or not (out.flags.c_contiguous and out.flags.aligned and out.flags.writeable)
        or np.may_share_memory(out, b)
    ):
        out = np.empty(size, dtype=dt)
    src = b if layout == "C" else b.T
    # Like the GEMM itself, packing keeps its threads inside serial_kernels (a training step).
    _pack.get(dt, size >= PARALLEL_MIN_PACK)(src, layout == "F", out, nr)
    return PackedMatrix(b, out)


def packed_size(K: int, N: int, dtype: np.dtype) -> int:
    """Elements of the packed form of a (K, N) matrix."""
    nr = panel_width(dtype)
    return -(-K // KC) * KC * -(-N // nr) * nr


def _overlaps(out: np.ndarray, *inputs: Any) -> bool:
    return any(x is not None and np.may_share_memory(out, x) for x in inputs)


#: One reusable packing buffer per dtype and thread (a fresh large buffer page-faults on
#: every call: PERF-NOTES, "fresh large temporaries"). Thread-local, so that a thread's
#: buffers are freed when it ends.
_scratch = threading.local()


def _scratch_buffer(size: int, dtype: np.dtype) -> np.ndarray:
    buffers = getattr(_scratch, "buffers", None)
    if buffers is None:
        buffers = _scratch.buffers = {}
    key = np.dtype(dtype)
    buf = buffers.get(key)
    if buf is None or buf.size < size:
        buf = np.empty(size, dtype=dtype)
        buffers[key] = buf
    return buf


def takes(a: Any, b: Any) -> bool:
    """Whether :func:`gemm` computes ``a @ b`` (given a suitable output) rather than
    leaving it to BLAS."""
    packed = isinstance(b, PackedMatrix)
    src = b.source if packed else b
    if not isinstance(a, np.ndarray) or not isinstance(src, np.ndarray):
        return False
    dt = a.dtype
    if (dt != np.float32 and dt != np.float64) or src.dtype != dt:
        return False
    if _layout(a, dt) is None or _layout(src, dt) is None or a.shape[1] != src.shape[0]:
        return False
    M, K = a.shape
    N = src.shape[1]
    if M == 0 or N == 0 or K == 0:
        return False
    nr = panel_width(dt)
    return packed or (M >= MR and nr <= N and M * N * K >= MIN_WORK)


def gemm(a: Any, b: Any, out: Any, accumulate: bool = False) -> bool:
    """``out = a @ b`` (or ``out += a @ b``) when the kernel takes the operands; returns
    whether it did (False: nothing was written, use BLAS).

    ``a`` (M, K) row- or column-major, ``b`` (K, N) an array in either layout or a
    :class:`PackedMatrix`, ``out`` (M, N) C-contiguous, not overlapping either.
    """
    if not takes(a, b):
        return False
    packed = b if isinstance(b, PackedMatrix) else None
    src = packed.source if packed is not None else b
    dt = a.dtype
    M, K = a.shape
    N = src.shape[1]
    if not (
        isinstance(out, np.ndarray) and out.dtype == dt and out.shape == (M, N)
        and out.flags.c_contiguous and out.flags.aligned and out.flags.writeable
    ):
        return False
    if _overlaps(out, a, src):
        return False
    nr = panel_width(dt)
    ldb = 0
    if packed is not None:
        bp = packed.data
    elif _layout(src, dt) == "C" and N % nr == 0 and M < UNPACKED_MAX_ROWS and (
        N * dt.itemsize < UNPACKED_MAX_STRIDE or M < UNPACKED_WIDE_MAX_ROWS
    ):
        bp, ldb = src.reshape(-1), N  # read in place: packing would cost more than it saves
    else:
        bp = pack(src, _scratch_buffer(packed_size(K, N, dt), dt)).data
    la = _layout(a, dt)
    af = a.reshape(-1) if la == "C" else a.T.reshape(-1)
    sai, sak = (K, 1) if la == "C" else (1, M)
    nthreads = numba.get_num_threads() if M * N * K >= PARALLEL_MIN_WORK else 1
    kernel = _gemm.get(dt, nthreads > 1)
    by_cols = N > COLUMN_SPLIT_RATIO * M
    kernel(af, sai, sak, M, bp, ldb, K, N, nr, out.reshape(-1), int(accumulate), nthreads,
           by_cols)
    return True
