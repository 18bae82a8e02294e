"""How fastnn's Numba kernels are compiled, cached and fed: the one shared dict of JIT flags.

Kernels are plain Python functions compiled lazily, once per dtype, with explicit signatures
(:class:`LazyKernel`): importing fastnn compiles nothing, a float32-only program never pays
for the float64 versions, and a call with an unexpected type raises ``TypeError`` instead of
compiling yet another variant. Each kernel has a parallel build and a serial one, for work of
at most :data:`BLOCK` items (:meth:`LazyKernel.pick`).

Kernel-writing helpers (callable from Numba code): :func:`block_bounds` and
:func:`chunk_bounds` give unsigned loop bounds (signed ones make Numba emit negative-index
wraparound that stops LLVM from vectorising the loop), :func:`cast_to` typed constants.
Wrapper helpers: :func:`kernel_dtype`, :func:`is_kernel_array`, :func:`is_kernel_output`
decide whether a kernel may take an argument (else the op falls back to the reference), and
:func:`num_blocks` / :func:`num_row_blocks` split the work.

On-disk cache. Compiled kernels are cached with Numba's cache format in the first usable
place among

1. ``$NUMBA_CACHE_DIR`` (Numba's own setting),
2. the package's ``fastnn/kernels/cpu/__pycache__``,
3. Numba's user-wide cache directory (``$XDG_CACHE_HOME/numba`` or ``~/.cache/numba``),

where "usable" means the directory can be created and a file written in it. When none is
usable (a read-only install with no writable home) or ``FASTNN_NUMBA_CACHE=0`` is set, the
kernels are compiled in memory only; an I/O error while reading or writing a cache entry
falls back to an in-memory compile too. A cache problem therefore never breaks ``import
fastnn`` or the first call of an op. Cache entries are stamped with a hash of every module in
this package, so editing one module (say the exp in ``fastexp.py``) invalidates the kernels of
the others that inline it; Numba's own stamp covers only the kernel's own file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
import numpy as np
from numba import types

log = logging.getLogger(__name__)

#: LLVM fast-math flags of the kernels. No ``nnan``/``ninf``: NaN and inf must propagate as in
#: the NumPy reference. ``reassoc`` lets LLVM vectorise sums; ``arcp``/``afn`` are harmless at
#: the tested tolerances (float32 rtol 1e-4, float64 rtol 1e-7).
FASTMATH: frozenset[str] = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})

#: Flags of math helpers compiled as their own functions (``fast_exp``): no ``reassoc`` (it
#: would undo the Cody-Waite range reduction of exp), no ``arcp`` (one more rounding in its
#: rational term). LLVM still inlines them into the kernels, keeping these flags.
HELPER_FASTMATH: frozenset[str] = frozenset({"nsz", "contract"})

#: JIT options of the scalar math helpers (``fast_exp``, the activation helpers): their own
#: fast-math flags, and NumPy's error model (Python's raises on a division by zero, and its
#: checks stop LLVM from vectorising the loops the helpers are inlined into).
def helper_jit_flags() -> dict[str, Any]:
    """A fresh dict of the JIT options of the scalar math helpers."""
    return {"fastmath": set(HELPER_FASTMATH), "error_model": "numpy"}


@numba.njit(inline="always", **helper_jit_flags())
def copy_row(src, dst):  # pragma: no cover  (compiled)
    """``dst[:] = src`` element by element, returning ``dst`` (callable from kernels).

    The kernels use it where an output may be its own input: they compute from a copy of
    the row, because the same row passed as input and output fails LLVM's runtime alias
    check and the scalar loop runs (measured: the LSTM backward row 0.39 against 0.13 ms for
    50 steps of 16 rows; elu in place 1262 against 196 us for 1024x1024 float32). A slice
    copy is no substitute: Numba cannot prove it overlap-free and makes a temporary.
    """
    for j in range(dst.shape[0]):
        dst[j] = src[j]
    return dst

#: The one shared dict of JIT flags of every fastnn Numba kernel. ``cache`` is a request:
#: whether a disk cache is used is decided by :func:`cache_dir`.
JIT_FLAGS: dict[str, Any] = {
    "parallel": True,
    "fastmath": set(FASTMATH),
    "nogil": True,
    "error_model": "numpy",
    "boundscheck": False,
    "cache": True,
}

#: Set to ``0`` to keep compiled kernels in memory only.
CACHE_ENV_VAR = "FASTNN_NUMBA_CACHE"

#: Elements one kernel block covers; each block sets flush-to-zero once (see ``threads``).
#: Work that fits in one block runs in the serial build of a kernel (no thread launch): a
#: launch costs ~1.5 us on an idle machine, but 0.1 ms and more when other processes (or a
#: spinning BLAS pool) keep the cores busy, while 64 Ki items take 5-30 us on one core.
BLOCK = 1 << 16

#: Inside :class:`serial_kernels`, work above this many items still runs the parallel build:
#: such a kernel (the optimizer pass over a model's parameters) lasts long enough that the
#: wait at its join is small against the time the second thread saves.
SERIAL_MODE_BLOCK = 1 << 19

_PACKAGE_DIR = Path(__file__).resolve().parent
_cache_dir_memo: list[str | None] = []
_memo_lock = threading.Lock()


# -- what a kernel accepts ---------------------------------------------------------------
def kernel_dtype(a: Any) -> np.dtype | None:
    """The dtype of ``a`` when a kernel can take it (aligned, C-contiguous float32/float64)."""
    if not isinstance(a, np.ndarray):
        return None
    dt = a.dtype
    if dt != np.float32 and dt != np.float64:
        return None
    flags = a.flags
    if not (flags.c_contiguous and flags.aligned):
        return None
    return dt


def is_kernel_array(a: Any, dtype: np.dtype, shape: tuple[int, ...] | None = None) -> bool:
    """Whether ``a`` is a C-contiguous aligned array of ``dtype`` (and ``shape``, if given)."""
    dt = kernel_dtype(a)
    # Test None first: ``None != np.dtype("float64")`` is False (np.dtype(None) is float64).
    if dt is None or dt != dtype:
        return False
    return shape is None or a.shape == shape


def is_kernel_output(
    a: Any, dtype: np.dtype, shape: tuple[int, ...], *inputs: np.ndarray | None
) -> bool:
    """Whether a kernel may write ``a``: writeable, right dtype and shape, and either the very
    same memory as each input or no overlap with it (partial overlap goes to the reference)."""
    if not isinstance(a, np.ndarray) or a.dtype != dtype or a.shape != shape:
        return False
    flags = a.flags
    if not (flags.c_contiguous and flags.aligned and flags.writeable):
        return False
    for x in inputs:
        if x is None or x is a or not np.may_share_memory(a, x):
            continue
        if not (a.ctypes.data == x.ctypes.data and a.shape == x.shape):
            return False
    return True


def kept_apart(written: list[np.ndarray], read: list[np.ndarray]) -> bool:
    """Whether no array of ``written`` shares memory with another of ``written`` or with
    one of ``read`` (a kernel that writes them in one pass needs that)."""
    arrays = [*written, *read]
    for i, a in enumerate(written):
        for b in arrays[i + 1:]:
            if np.may_share_memory(a, b):
                return False
    return True


def num_blocks(n: int, block: int | None = None) -> int:
    """How many ``prange`` blocks to split ``n`` items into: one when ``n`` fits in one block
    (see :meth:`LazyKernel.pick`), else a multiple of the thread count (so a static schedule
    balances), each of at most about ``block`` (default :data:`BLOCK`) items."""
    block = BLOCK if block is None else block
    if n <= block:
        return 1
    threads = numba.get_num_threads()
    per_thread = -(-n // (threads * block))
    return min(n, threads * per_thread)


def array(dtype: types.Type, ndim: int, readonly: bool = False) -> types.Array:
    """The Numba type of an aligned C-contiguous array (``readonly`` also accepts writeable
    arrays, so a kernel input declared read-only takes both)."""
    return types.Array(dtype, ndim, "C", readonly=readonly)


# -- on-disk cache -----------------------------------------------------------------------
def _usable_dir(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError:
        return False
    return True


def _subdir_name() -> str:
    digest = hashlib.sha1(str(_PACKAGE_DIR).encode()).hexdigest()
    return f"fastnn_cpu_{digest}"


def _candidate_dirs() -> list[Path]:
    candidates = []
    if numba.config.CACHE_DIR:
        candidates.append(Path(numba.config.CACHE_DIR) / _subdir_name())
    candidates.append(_PACKAGE_DIR / "__pycache__")
    try:
        from numba.misc.appdirs import AppDirs

        user = AppDirs(appname="numba", appauthor=False).user_cache_dir
        candidates.append(Path(user) / _subdir_name())
    except Exception:  # pragma: no cover - an old Numba without appdirs
        pass
    return candidates


def find_cache_dir() -> str | None:
    """Probe (uncached) for the directory the kernels would be cached in; None if none."""
    if os.environ.get(CACHE_ENV_VAR, "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    for path in _candidate_dirs():
        if _usable_dir(path):
            return str(path)
    return None


def cache_dir() -> str | None:
    """Where compiled kernels are cached on disk (decided once per process), or None."""
    with _memo_lock:
        if not _cache_dir_memo:
            _cache_dir_memo.append(find_cache_dir())
            log.debug("fastnn numba kernel cache: %s", _cache_dir_memo[0])
        return _cache_dir_memo[0]


def sources_stamp() -> str:
    """A hash of every module of this package: the freshness stamp of all cache entries."""
    h = hashlib.sha256()
    for path in sorted(_PACKAGE_DIR.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _make_function_cache_class(variant: str) -> type | None:
    """A Numba ``FunctionCache`` whose entries live in :func:`cache_dir`, are stamped with
    :func:`sources_stamp` and are named after ``variant`` (Numba's index key does not hold
    the compile flags, so the serial and parallel builds of one kernel need separate files);
    None when this Numba lacks the classes it builds on."""
    try:
        from numba.core import caching
    except ImportError:  # pragma: no cover
        return None
    base_locator = getattr(caching, "_CacheLocator", None)
    impl = getattr(caching, "CompileResultCacheImpl", None)
    function_cache = getattr(caching, "FunctionCache", None)
    if base_locator is None or impl is None or function_cache is None:  # pragma: no cover
        return None

    class KernelCacheLocator(base_locator):
        """Locates the cache of one build of one fastnn kernel."""

        def __init__(self, py_func: Callable, py_file: str, path: str) -> None:
            self._py_file = py_file
            self._lineno = py_func.__code__.co_firstlineno
            self._path = path

        def get_cache_path(self) -> str:
            return self._path

        def get_source_stamp(self) -> str:
            return sources_stamp()

        def get_disambiguator(self) -> str:
            return f"{self._lineno}-{variant}"

        @classmethod
        def from_function(cls, py_func: Callable, py_file: str):
            path = cache_dir()
            return None if path is None else cls(py_func, py_file, path)

    class KernelCacheImpl(impl):
        """Numba's compile-result cache with only the fastnn locator."""

        _locator_classes = [KernelCacheLocator]

    class KernelFunctionCache(function_cache):
        """Numba's function cache, located and stamped the fastnn way."""

        _impl_class = KernelCacheImpl

    return KernelFunctionCache


_function_cache_classes: dict[str, type | None] = {}


def _attach_disk_cache(dispatcher: Any, py_func: Callable, variant: str) -> bool:
    """Give ``dispatcher`` the fastnn disk cache; False (and no cache) when unavailable."""
    if cache_dir() is None:
        return False
    with _memo_lock:
        if variant not in _function_cache_classes:
            _function_cache_classes[variant] = _make_function_cache_class(variant)
        cls = _function_cache_classes[variant]
    if cls is None:  # pragma: no cover - an unexpected Numba version
        return False
    try:
        dispatcher._cache = cls(py_func)
    except Exception as exc:  # no locator, or anything else: compile in memory
        log.debug("no disk cache for %s: %s", py_func.__qualname__, exc)
        return False
    return True


# -- lazily compiled kernels -------------------------------------------------------------
class LazyKernel:
    """A Python kernel compiled on first use for each dtype, with one explicit signature.

    ``kernel[np.float32]`` returns the compiled (parallel) function for float32 arrays,
    compiling it or loading it from the disk cache the first time. ``kernel.pick(dtype,
    work)`` returns the serial build (``parallel=False``, ``prange`` runs as ``range``) when
    the call touches at most :data:`BLOCK` items: launching the thread team costs about 1 us,
    several times the whole call for a small array.

    Args:
        py_func: the kernel source, written with ``prange`` and the helpers of this package.
        signature: maps the Numba scalar type (``float32`` or ``float64``) to the tuple of
            argument types.
        flags: overrides of :data:`JIT_FLAGS` for this kernel.
    """

    def __init__(
        self,
        py_func: Callable[..., Any],
        signature: Callable[[types.Float], tuple[types.Type, ...]],
        **flags: Any,
    ) -> None:
        self.py_func = py_func
        self.signature = signature
        self.flags = flags
        self.dispatchers: dict[tuple[np.dtype, bool], Any] = {}
        self._lock = threading.Lock()
        self.__name__ = py_func.__name__
        self.__doc__ = py_func.__doc__

    def __getitem__(self, dtype: Any) -> Callable[..., Any]:
        return self.get(dtype, True)

    def pick(self, dtype: Any, work: int) -> Callable[..., Any]:
        """The serial build when ``work`` (items the call touches) fits in one block (inside
        :func:`serial_kernels`, in :data:`SERIAL_MODE_BLOCK` items); else the parallel one."""
        return self.get(dtype, work > (SERIAL_MODE_BLOCK if _serial.depth else BLOCK))

    def get(self, dtype: Any, parallel: bool = True) -> Callable[..., Any]:
        """The build for ``dtype``, parallel or serial, compiled on first use."""
        key = (np.dtype(dtype), parallel)
        disp = self.dispatchers.get(key)
        if disp is None:
            with self._lock:
                disp = self.dispatchers.get(key)
                if disp is None:
                    disp = self._compile(*key)
                    self.dispatchers[key] = disp
        return disp

    def _compile(self, dt: np.dtype, parallel: bool) -> Any:
        scalar = numba.from_dtype(dt)
        sig = self.signature(scalar)
        options = {**JIT_FLAGS, **self.flags}
        options["parallel"] = bool(options["parallel"]) and parallel
        want_cache = bool(options.pop("cache"))
        disp = numba.njit(**options)(self.py_func)
        variant = "parallel" if options["parallel"] else "serial"
        if want_cache and _attach_disk_cache(disp, self.py_func, variant):
            try:
                disp.compile(sig)
            except Exception as exc:  # a broken cache entry or a failed write
                log.debug("cached compile of %s failed (%s); compiling in memory",
                          self.py_func.__qualname__, exc)
                disp = numba.njit(**options)(self.py_func)
                disp.compile(sig)
        else:
            disp.compile(sig)
        disp.disable_compile()
        return disp


class _SerialState(threading.local):
    depth = 0


_serial = _SerialState()


class serial_kernels:  # noqa: N801  (used like a function: ``with serial_kernels():``)
    """Context manager: kernels called from this Python thread run their serial builds, but
    for work of more than :data:`SERIAL_MODE_BLOCK` items.

    Used by ``Sequential`` around its training steps (with NumPy's BLAS held to one thread,
    see ``Sequential._step_threads``): a step is a chain of short kernels, and each parallel
    region ends in a join that waits for its slowest thread, which on a shared machine (or
    next to BLAS's spinning pool) can be descheduled for a whole time slice. Long kernels
    (the optimizer's pass over all parameters) and the backend's GEMM (``gemm.py``) keep
    their threads. Nestable; the kernels' results do not depend on it.
    """

    def __enter__(self) -> serial_kernels:
        _serial.depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        _serial.depth -= 1


def cast_to(value: float, like: Any) -> Any:
    """``value`` as a scalar of the float type of ``like`` (a dtype, or a float scalar).

    In Numba code ``cast_to(1.0, x.dtype)`` or ``cast_to(1.0, v)`` is a constant of the
    array's float type; a bare ``1.0`` would promote float32 arithmetic to float64.
    """
    dt = like.dtype if isinstance(like, np.generic) else np.dtype(like)
    return dt.type(value)


def _register_cast_to() -> None:
    from numba.extending import overload

    @overload(cast_to)
    def _cast_to_impl(value, like):
        kind = like.dtype if isinstance(like, types.DType) else like
        if kind == types.float32:
            return lambda value, like: np.float32(value)
        if kind == types.float64:
            return lambda value, like: np.float64(value)
        return None


_register_cast_to()


def block_bounds(blk: int, n: int, nblocks: int) -> tuple[int, int]:
    """``[lo, hi)`` of block ``blk`` of ``nblocks`` even blocks over ``n`` items (callable from
    Numba code). They are unsigned: a loop ``for i in range(lo, hi)`` then indexes without
    Numba's negative-index wraparound, which otherwise stops LLVM from vectorising it."""
    return np.uint64(blk * n // nblocks), np.uint64((blk + 1) * n // nblocks)


#: Items summed in the array's own dtype before the partial sum is added to a float64 total:
#: float32 sums vectorise at full width yet stay accurate (``chunk_bounds``).
CHUNK = 2048


def num_chunks(n: int) -> int:
    """How many :data:`CHUNK`-sized chunks cover ``n`` items (callable from Numba code)."""
    return (n + CHUNK - 1) // CHUNK


def chunk_bounds(c: int, n: int) -> tuple[int, int]:
    """``[lo, hi)`` of chunk ``c`` of :data:`CHUNK` items over ``n`` (unsigned, see
    :func:`block_bounds`; callable from Numba code)."""
    return np.uint64(c * CHUNK), np.uint64(min(c * CHUNK + CHUNK, n))


def _register_bounds() -> None:
    from numba.extending import overload

    @overload(block_bounds)
    def _block_bounds_impl(blk, n, nblocks):
        def impl(blk, n, nblocks):
            return np.uint64(blk * n // nblocks), np.uint64((blk + 1) * n // nblocks)

        return impl

    @overload(num_chunks)
    def _num_chunks_impl(n):
        return lambda n: (n + CHUNK - 1) // CHUNK

    @overload(chunk_bounds)
    def _chunk_bounds_impl(c, n):
        def impl(c, n):
            return np.uint64(c * CHUNK), np.uint64(min(c * CHUNK + CHUNK, n))

        return impl


_register_bounds()


def num_row_blocks(rows: int, cols: int, block: int | None = None) -> int:
    """:func:`num_blocks` for a kernel whose blocks are whole rows of ``cols`` items."""
    return max(1, min(rows, num_blocks(rows * max(cols, 1), block)))
