"""BLAS thread control and a fork-join runner for ops that call BLAS once per item.

Why. Every multi-threaded OpenBLAS call ends at a barrier where the caller waits for its
workers, and the idle workers then spin (``sched_yield``) for a long while. On this 2-core
machine, where other processes often hold one core, that costs twice: a worker that is not
scheduled stalls the call for a scheduler slice (the 1.2 ms GEMM of the Conv2D benchmark
measured a 12-16 ms median under such load), and a spinning worker shares a core with the
Numba pass that follows the GEMM (the unfold ran 3x slower right after a GEMM). For an op
made of many independent items (the images of a convolution) it is cheaper to give whole
items to Python threads (NumPy's GEMM and the Numba kernels release the GIL) and run each
item's GEMMs on ONE BLAS thread: one fork and one join per op, no BLAS barrier, no spinning
BLAS worker, and items handed out dynamically, so that a thread slowed by another process
takes fewer of them. Concurrent single-threaded OpenBLAS calls scale (measured: 400 GEMMs of
32x144x784 from two threads in 13.6 ms against 26.6 ms from one).

:func:`limit_blas_threads` sets the count for the duration of a block through OpenBLAS's own
``openblas_set_num_threads`` (looked up in the OpenBLAS library NumPy loaded, found in
``/proc/self/maps``; threadpoolctl is not needed). Where no such library is found (another
BLAS, another OS) it does nothing, :data:`AVAILABLE` is False and :func:`parallel_items`
runs every item on the calling thread, so that a BLAS we cannot limit never runs its own
threads under ours.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

#: (set, get) symbol pairs of the OpenBLAS builds NumPy ships or links, most likely first.
_SYMBOLS = (
    ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
    ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
    ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
    ("openblas_set_num_threads", "openblas_get_num_threads"),
)


def _find_openblas() -> tuple[Callable[[int], None], Callable[[], int]] | None:
    """The (set, get) thread-count functions of the OpenBLAS NumPy loaded, or None."""
    np.ones((2, 2)) @ np.ones((2, 2))  # make sure NumPy's BLAS is loaded
    try:
        with open("/proc/self/maps") as fh:
            paths = {line.split()[-1] for line in fh if "openblas" in line.lower()}
    except OSError:
        return None
    numpy_dir = os.path.dirname(np.__file__)
    # NumPy's own bundled copy (numpy.libs next to the package, or inside it) first, then
    # any other OpenBLAS in the process, in a fixed order. Not merely "under site-packages":
    # SciPy's wheels bundle another OpenBLAS (scipy.libs) with other symbol names.
    own = (numpy_dir + ".libs" + os.sep, numpy_dir + os.sep)
    for path in sorted(paths, key=lambda p: (not p.startswith(own), p)):
        if not os.path.isfile(path):
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for set_name, get_name in _SYMBOLS:
            if not (hasattr(lib, set_name) and hasattr(lib, get_name)):
                continue
            setter, getter = getattr(lib, set_name), getattr(lib, get_name)
            setter.argtypes, setter.restype = [ctypes.c_int], None
            getter.argtypes, getter.restype = [], ctypes.c_int
            if int(getter()) >= 1:
                return setter, getter
    return None


_FUNCS = _find_openblas()

#: Whether NumPy's BLAS thread count can be changed here (an OpenBLAS was found).
AVAILABLE: bool = _FUNCS is not None

_lock = threading.Lock()
_depth = 0
_saved = 0


def blas_num_threads() -> int | None:
    """NumPy's current OpenBLAS thread count, or None where it cannot be read."""
    return None if _FUNCS is None else int(_FUNCS[1]())


@contextmanager
def limit_blas_threads(n: int = 1) -> Iterator[None]:
    """Run the block with at most ``n`` OpenBLAS threads (a no-op without OpenBLAS).

    Nested or concurrent uses share one limit: the first entry sets it, the last exit
    restores the count found at the first entry.
    """
    global _depth, _saved
    if _FUNCS is None:
        yield
        return
    setter, getter = _FUNCS
    with _lock:
        if _depth == 0:
            _saved = int(getter())
            if _saved > n:
                setter(n)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and int(getter()) != _saved:
                setter(_saved)


_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_pid = 0
_pool_lock = threading.Lock()


def _executor(workers: int) -> ThreadPoolExecutor:
    """The shared pool of at least ``workers`` threads (recreated after a fork)."""
    global _pool, _pool_size, _pool_pid
    with _pool_lock:
        if _pool is None or _pool_size < workers or _pool_pid != os.getpid():
            # A replaced pool is not shut down: another Python thread may be submitting to
            # it right now. It only grows (to the largest worker count asked), so at most a
            # few idle threads are left behind.
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fastnn-items")
            _pool_size, _pool_pid = workers, os.getpid()
        return _pool


def worker_count(items: int) -> int:
    """Threads :func:`parallel_items` uses for ``items`` items: fastnn's compute threads
    (``fastnn.kernels.cpu.threads.get_num_threads``), at most one per item; 1 without an
    OpenBLAS whose threads can be limited."""
    from fastnn.kernels.cpu.threads import get_num_threads

    if not AVAILABLE:
        return 1
    return max(1, min(get_num_threads(), items))


def parallel_items(body: Callable[[int, Iterator[int]], None], items: int) -> int:
    """Call ``body(worker, item_iterator)`` once on each of :func:`worker_count` threads.

    The caller is worker 0. All workers share one iterator over ``range(items)``: each item
    goes to exactly one worker, whichever asks first. OpenBLAS runs single-threaded meanwhile
    (:func:`limit_blas_threads`), also when one worker does everything. ``body`` must
    release the GIL for its heavy work (NumPy GEMMs, ``nogil`` Numba kernels). The first
    exception of any worker is raised after all workers have finished.

    Returns:
        The number of workers used (``body`` saw indices ``0 .. workers - 1``).
    """
    workers = worker_count(items)
    source = iter(range(items))
    lock = threading.Lock()

    def take() -> Iterator[int]:
        while True:
            with lock:
                item = next(source, None)
            if item is None:
                return
            yield item

    error: BaseException | None = None
    with limit_blas_threads(1):
        if workers == 1:
            body(0, take())
            return 1
        futures = [_executor(workers - 1).submit(body, k, take()) for k in range(1, workers)]
        try:
            body(0, take())
        except BaseException as exc:  # wait for the other workers before re-raising
            error = exc
        for fut in futures:
            try:
                fut.result()
            except BaseException as exc:
                error = error or exc
    if error is not None:
        raise error
    return workers


__all__ = [
    "AVAILABLE",
    "blas_num_threads",
    "limit_blas_threads",
    "parallel_items",
    "worker_count",
]
