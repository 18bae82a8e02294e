"""Compute threads of the Numba kernels: how many, and flush-to-zero for denormals.

Thread count. :func:`set_num_threads` / :func:`get_num_threads` set and read the number of
threads Numba's parallel kernels use. Numba keeps this number per calling Python thread: a
new Python thread starts with all ``NUMBA_NUM_THREADS`` threads. BLAS (matmul) has its own
pool, sized by ``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS``.

Busy machines. Numba's default threading layer here is OpenMP (libgomp), whose threads
spin-wait at the end of a parallel region. When other processes, or an idle-spinning BLAS
pool, keep the cores busy, that spinning starves the other team thread and one kernel call
can stall for a whole scheduler time slice. Measured on a 2-core AVX-512 VM with ~7 other
runnable processes (softmax of 128x1000 float32, 2 threads): median 12 ms per call with the
default spin count, 0.11 ms with ``GOMP_SPINCOUNT=1000``, 0.06 ms with
``OMP_WAIT_POLICY=passive``, 0.1 ms single-threaded. fastnn does not change these process-wide
settings itself (they also apply to PyTorch's OpenMP pool in the same process); set one of
them in the environment before the first kernel runs, or ``set_num_threads(1)``, on a shared
machine. Work of at most ``jit.BLOCK`` items always runs single-threaded.

Inside a training step the same stall happens with no other process at all: BLAS (matmul,
OpenBLAS's own pthread pool) and the Numba kernels alternate, and each pool's idle threads
spin on the core the other pool needs. MLP 784-512-512-10 float32 at batch 128, SGD, 2
cores (AMD EPYC, measured with ``fit``): 11 k samples/s with libgomp's default waiting,
57-59 k with ``OMP_WAIT_POLICY=passive`` or one Numba thread. ``Sequential`` therefore runs
its training steps with BLAS held to one thread and the elementwise Numba kernels serial;
the large products go to the backend's own GEMM, which keeps every core; no OpenMP setting
changes.

Passive waiting is opt-in (``FASTNN_OMP_PASSIVE=1``): :func:`launch_threads` then sets
``OMP_WAIT_POLICY=passive`` just while Numba loads its threading library and restores the
environment right after. It is not the default because libgomp is shared by the whole
process: PyTorch imported afterwards binds to the same, already configured libgomp. Measured
(2-core AMD EPYC, torch 2.13, MLP step at batch 128, SGD): torch 48-49 k samples/s normally,
25 k when fastnn had started Numba's pool with passive waiting first. It does nothing when
the user set ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``, chose a threading layer other than
OpenMP, or when Numba's pool was already running.

Denormals. Adam's ``g**2`` and exp of very negative numbers produce subnormal floats, and
arithmetic on them is 10-100x slower on x86 (PERF-NOTES: NumPy Adam 25 % slower, ``sqrt``
2.5x). Every fastnn kernel therefore sets the MXCSR flush-to-zero (FTZ, bit 15) and
denormals-are-zero (DAZ, bit 6) bits at the start of each block of work, on whichever
thread runs it, and restores the thread's previous MXCSR at the end of the block
(:func:`ftz_enter` / :func:`ftz_exit`, two LLVM ``stmxcsr``/``ldmxcsr`` intrinsics). So:

- each compute thread computes with FTZ/DAZ on, whatever its pool or its age;
- no global side effect: NumPy code and user code on any thread keep IEEE subnormals;
- results differ from the NumPy reference only below the smallest normal number
  (1.2e-38 for float32, 2.2e-308 for float64), far inside the tested absolute tolerances.

On a CPU without MXCSR (not x86-64) the two helpers compile to nothing and subnormals are
kept: :data:`FLUSH_DENORMALS` says which applies.
"""

from __future__ import annotations

import os
import platform

import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

#: MXCSR flush-to-zero (bit 15) and denormals-are-zero (bit 6).
FTZ_DAZ_BITS = 0x8040

#: Whether the kernels flush subnormals here (x86-64: yes, by the MXCSR bits).
FLUSH_DENORMALS: bool = platform.machine().lower() in ("x86_64", "amd64", "x64")


#: Set to ``1`` to start Numba's OpenMP threads with passive waiting (see the module notes).
PASSIVE_ENV_VAR = "FASTNN_OMP_PASSIVE"

#: Environment variables by which a user chooses how OpenMP threads wait (theirs wins).
_USER_WAIT_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")

#: What :func:`launch_threads` did: None before it ran, else a short description.
launch_note: str | None = None


def _pool_started() -> bool:
    from numba.np.ufunc import parallel

    return bool(getattr(parallel, "_is_initialized", True))


def launch_threads() -> str:
    """Start Numba's thread pool (once), with passive OpenMP waiting where appropriate.

    Returns a short note of what was done (also kept in :data:`launch_note`).
    """
    global launch_note
    if launch_note is not None:
        return launch_note
    layer = str(numba.config.THREADING_LAYER).lower()
    opted_out = os.environ.get(PASSIVE_ENV_VAR, "0").strip().lower() not in ("1", "true", "yes")
    user_set = [v for v in _USER_WAIT_VARS if v in os.environ]
    if _pool_started():
        note = "numba's thread pool was already running; its wait policy is unchanged"
    elif opted_out or user_set or layer not in ("default", "safe", "threadsafe", "omp"):
        reason = (f"{PASSIVE_ENV_VAR} not set to 1" if opted_out else
                  f"{user_set[0]} is set" if user_set else f"threading layer {layer!r}")
        numba.get_num_threads()  # starts the pool
        note = f"numba's thread pool started as configured ({reason})"
    else:
        os.environ["OMP_WAIT_POLICY"] = "passive"
        try:
            numba.get_num_threads()  # loads the threading library: libgomp reads its env now
        finally:
            del os.environ["OMP_WAIT_POLICY"]
        note = "numba's thread pool started with OMP_WAIT_POLICY=passive (libgomp)"
    launch_note = note
    return note


def set_num_threads(n: int) -> None:
    """Use ``n`` threads in the Numba kernels called from this Python thread.

    Raises:
        ValueError: ``n`` is not an integer in ``[1, NUMBA_NUM_THREADS]``.
    """
    limit = int(numba.config.NUMBA_NUM_THREADS)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= limit:
        raise ValueError(
            f"set_num_threads: expected an integer 1 <= n <= {limit} (NUMBA_NUM_THREADS), "
            f"received n={n!r}"
        )
    numba.set_num_threads(n)


def get_num_threads() -> int:
    """Threads the Numba kernels called from this Python thread use."""
    return int(numba.get_num_threads())


def _mxcsr_slot(builder):
    """An i32 stack slot and the ``i8*`` to it that stmxcsr/ldmxcsr take."""
    slot = cgutils.alloca_once(builder, ir.IntType(32))
    return slot, builder.bitcast(slot, ir.IntType(8).as_pointer())


def _mxcsr_call(builder, name, ptr):
    fnty = ir.FunctionType(ir.VoidType(), [ptr.type])
    fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.x86.sse.{name}")
    builder.call(fn, [ptr])


@intrinsic
def read_mxcsr(typingctx):
    """This thread's MXCSR register (0 where there is none); for tests."""

    def codegen(context, builder, signature, args):
        if not FLUSH_DENORMALS:
            return ir.Constant(ir.IntType(64), 0)
        slot, ptr = _mxcsr_slot(builder)
        _mxcsr_call(builder, "stmxcsr", ptr)
        return builder.zext(builder.load(slot), ir.IntType(64))

    return types.int64(), codegen


@intrinsic
def ftz_enter(typingctx):
    """Turn FTZ and DAZ on for this thread; returns the previous MXCSR for :func:`ftz_exit`."""

    def codegen(context, builder, signature, args):
        if not FLUSH_DENORMALS:
            return ir.Constant(ir.IntType(64), 0)
        slot, ptr = _mxcsr_slot(builder)
        _mxcsr_call(builder, "stmxcsr", ptr)
        old = builder.load(slot)
        builder.store(builder.or_(old, ir.Constant(ir.IntType(32), FTZ_DAZ_BITS)), slot)
        _mxcsr_call(builder, "ldmxcsr", ptr)
        return builder.zext(old, ir.IntType(64))

    return types.int64(), codegen


@intrinsic
def ftz_exit(typingctx, old):
    """Restore the MXCSR value :func:`ftz_enter` returned."""
    if old != types.int64:
        return None

    def codegen(context, builder, signature, args):
        if FLUSH_DENORMALS:
            slot, ptr = _mxcsr_slot(builder)
            builder.store(builder.trunc(args[0], ir.IntType(32)), slot)
            _mxcsr_call(builder, "ldmxcsr", ptr)
        return context.get_dummy_value()

    return types.void(old), codegen
