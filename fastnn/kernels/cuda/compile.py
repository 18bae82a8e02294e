"""Compiling fastnn's CUDA sources: offline (no GPU needed) and at run time (on a GPU).

Offline, :func:`compile_source` turns a source into PTX and a cubin for a given
architecture, with the first compiler that works here:

1. ``nvrtc``: NVRTC through CuPy's bindings (``cupy.cuda.nvrtc``);
2. ``nvrtc-ctypes``: NVRTC loaded directly with :mod:`ctypes`, from the
   ``nvidia-cuda-nvrtc-cu12`` wheel (``site-packages/nvidia/cuda_nvrtc/lib``), from
   ``$CUDA_PATH``/``$CUDA_HOME``/``/usr/local/cuda``, or from the loader's search path;
3. ``nvcc``: the CUDA compiler driver, when it is on ``PATH``.

``FASTNN_CUDA_COMPILER`` (one of those names) forces a choice. None of them needs a GPU
or a driver. When none works, :class:`CudaCompilerUnavailableError` says what was tried
and why each failed; when the source is wrong, :class:`CudaCompileError` carries the
compiler's log.

At run time, :func:`get_kernel` builds one ``cupy.RawModule`` per (device, family,
dtype) the first time a kernel of it is asked for, and caches the module and its
functions; nothing is compiled on import.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fastnn.kernels.cuda.sources import KernelSource

# Options of every fastnn CUDA compile, at run time (cupy.RawModule) and offline.
RUNTIME_OPTIONS: tuple[str, ...] = ("-std=c++17",)
# Options CuPy adds by itself when RawModule compiles with NVRTC; the offline compile
# adds them too so that it checks what a GPU will compile.
CUPY_IMPLICIT_OPTIONS: tuple[str, ...] = ("-ftz=true", "--device-as-default-execution-space")
# NVRTC-only options that nvcc does not accept.
_NVRTC_ONLY_OPTIONS = ("--device-as-default-execution-space", "-default-device")

COMPILERS: tuple[str, ...] = ("nvrtc", "nvrtc-ctypes", "nvcc")
ENV_VAR = "FASTNN_CUDA_COMPILER"

_ENTRY_PATTERN = re.compile(r"\.entry\s+([A-Za-z_$][\w$]*)\s*\(")


class CudaCompilerUnavailableError(RuntimeError):
    """No CUDA compiler (NVRTC or nvcc) can run on this machine; the message says why."""


class CudaCompileError(RuntimeError):
    """A CUDA source failed to compile; ``log`` holds the compiler's output."""

    def __init__(self, message: str, log: str) -> None:
        super().__init__(f"{message}\n--- compiler log ---\n{log}")
        self.log = log


@dataclass(frozen=True)
class CompiledSource:
    """The result of compiling one source for one architecture.

    Attributes:
        compiler: which compiler produced it (one of :data:`COMPILERS`).
        arch: the real architecture compiled for (``"sm_90"``).
        ptx: the PTX text ("" when the compiler did not keep it).
        cubin: the ELF cubin with SASS for ``arch``.
        lowered_names: name expression -> symbol name in the binary.
        log: compiler messages (warnings); empty on a clean compile.
    """

    compiler: str
    arch: str
    ptx: str
    cubin: bytes
    lowered_names: dict[str, str] = field(default_factory=dict)
    log: str = ""

    def ptx_entries(self) -> set[str]:
        """Names of the kernel entry points declared in the PTX."""
        return set(_ENTRY_PATTERN.findall(self.ptx))

    def cubin_has_symbol(self, name: str) -> bool:
        """Whether the cubin's string tables hold the symbol ``name``."""
        pattern = rb"(?<![A-Za-z0-9_$])" + re.escape(name.encode()) + rb"\x00"
        return re.search(pattern, self.cubin) is not None


def offline_options() -> tuple[str, ...]:
    """The NVRTC options of an offline compile: what CuPy itself uses on a GPU."""
    return RUNTIME_OPTIONS + CUPY_IMPLICIT_OPTIONS


def normalize_arch(arch: str | int) -> str:
    """``"sm_90"`` from ``90``, ``"90"``, ``"sm_90"`` or ``"compute_90"``."""
    text = str(arch).strip().lower()
    for prefix in ("sm_", "compute_"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    if not re.fullmatch(r"\d{2,3}[a-z]?", text):
        raise ValueError(f"expected a CUDA architecture like 'sm_90' or 90, received {arch!r}")
    return f"sm_{text}"


# --------------------------------------------------------------------------------------
# NVRTC through CuPy's bindings
# --------------------------------------------------------------------------------------


def _wheel_nvrtc_dirs() -> list[str]:
    """``.../site-packages/nvidia/cuda_nvrtc/lib`` (and ``bin`` on Windows) of every
    ``nvidia`` namespace package directory on ``sys.path``."""
    dirs: list[str] = []
    roots = list(sys.path)
    try:
        import nvidia  # the namespace package of NVIDIA's pip wheels

        roots = [os.path.dirname(p) for p in nvidia.__path__] + roots
    except ImportError:
        pass
    for root in roots:
        for sub in ("lib", "bin"):
            candidate = os.path.join(root or ".", "nvidia", "cuda_nvrtc", sub)
            if os.path.isdir(candidate) and candidate not in dirs:
                dirs.append(candidate)
    return dirs


def _toolkit_dirs() -> list[str]:
    dirs = []
    for var in ("CUDA_PATH", "CUDA_HOME", "CUDA_ROOT"):
        root = os.environ.get(var)
        if root:
            dirs += [os.path.join(root, "lib64"), os.path.join(root, "lib"),
                     os.path.join(root, "bin")]
    dirs += ["/usr/local/cuda/lib64", "/usr/local/cuda/lib"]
    return [d for d in dirs if os.path.isdir(d)]


def nvrtc_library_candidates() -> list[str]:
    """Paths of NVRTC shared libraries found here, the pip wheel's first."""
    names = ("libnvrtc.so*", "nvrtc64_*.dll", "libnvrtc*.dylib")
    found: list[str] = []
    for directory in _wheel_nvrtc_dirs() + _toolkit_dirs():
        for pattern in names:
            for path in sorted(glob.glob(os.path.join(directory, pattern)), reverse=True):
                if "builtins" in os.path.basename(path) or "alt" in os.path.basename(path):
                    continue
                if path not in found:
                    found.append(path)
    system = ctypes.util.find_library("nvrtc")
    if system and system not in found:
        found.append(system)
    return found


def _load_nvrtc_library() -> ctypes.CDLL:
    """The first NVRTC library that loads, loaded globally so that later loads by soname
    (CuPy's) find it; raises OSError listing every attempt."""
    errors = []
    for path in nvrtc_library_candidates():
        try:
            return ctypes.CDLL(path, mode=getattr(ctypes, "RTLD_GLOBAL", 0))
        except OSError as exc:
            errors.append(f"{path}: {exc}")
    if not errors:
        raise OSError(
            "no NVRTC library found (looked in site-packages/nvidia/cuda_nvrtc/lib, "
            "$CUDA_PATH, $CUDA_HOME, /usr/local/cuda and the loader path); "
            "pip install nvidia-cuda-nvrtc-cu12"
        )
    raise OSError("no NVRTC library could be loaded: " + "; ".join(errors))


def _cupy_nvrtc() -> Any:
    """CuPy's NVRTC bindings, checked with a version query; preloads the wheel's library
    and retries once when the first query cannot find it."""
    from cupy.cuda import nvrtc

    try:
        nvrtc.getVersion()
    except Exception as first:
        try:
            _load_nvrtc_library()
            nvrtc.getVersion()
        except Exception as second:
            raise RuntimeError(f"{first}; after preloading the NVRTC library: {second}") from first
    return nvrtc


def _compile_cupy_nvrtc(
    code: str, arch: str, options: Sequence[str], name_expressions: Sequence[str], filename: str
) -> CompiledSource:
    nvrtc = _cupy_nvrtc()
    prog = nvrtc.createProgram(code, filename, [], [])
    try:
        for expr in name_expressions:
            nvrtc.addNameExpression(prog, expr)
        opts = [*options, f"-arch={arch}"]
        try:
            nvrtc.compileProgram(prog, opts)
        except nvrtc.NVRTCError as exc:
            raise CudaCompileError(
                f"NVRTC failed to compile {filename} for {arch} ({exc}); options {opts}",
                nvrtc.getProgramLog(prog),
            ) from exc
        log = nvrtc.getProgramLog(prog)
        lowered = {expr: nvrtc.getLoweredName(prog, expr) for expr in name_expressions}
        cubin = bytes(nvrtc.getCUBIN(prog))
        try:
            ptx = nvrtc.getPTX(prog)
        except nvrtc.NVRTCError:
            ptx = ""
    finally:
        nvrtc.destroyProgram(prog)
    ptx = ptx.decode() if isinstance(ptx, bytes) else ptx
    return CompiledSource("nvrtc", arch, ptx.rstrip("\x00"), cubin, lowered, log.strip("\x00\n"))


# --------------------------------------------------------------------------------------
# NVRTC through ctypes
# --------------------------------------------------------------------------------------


class _CtypesNvrtc:
    """A minimal ctypes binding of the NVRTC C API (the calls fastnn needs)."""

    def __init__(self) -> None:
        self.lib = _load_nvrtc_library()
        self.lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        self.lib.nvrtcGetErrorString.argtypes = [ctypes.c_int]
        self.version()

    def check(self, status: int, what: str) -> None:
        """Raise RuntimeError when an NVRTC call returned an error status."""
        if status != 0:
            msg = self.lib.nvrtcGetErrorString(status).decode()
            raise RuntimeError(f"{what} returned {msg} ({status})")

    def version(self) -> tuple[int, int]:
        """NVRTC's (major, minor) version."""
        major, minor = ctypes.c_int(), ctypes.c_int()
        self.check(self.lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "nvrtcVersion")
        return major.value, minor.value

    def _bytes(self, prog: ctypes.c_void_p, size_fn: str, get_fn: str) -> bytes:
        size = ctypes.c_size_t()
        self.check(getattr(self.lib, size_fn)(prog, ctypes.byref(size)), size_fn)
        buf = ctypes.create_string_buffer(size.value)
        self.check(getattr(self.lib, get_fn)(prog, buf), get_fn)
        return buf.raw

    def compile(
        self,
        code: str,
        arch: str,
        options: Sequence[str],
        name_expressions: Sequence[str],
        filename: str,
    ) -> CompiledSource:
        """Compile ``code`` for ``arch``; CudaCompileError with the log on failure."""
        lib = self.lib
        prog = ctypes.c_void_p()
        self.check(
            lib.nvrtcCreateProgram(
                ctypes.byref(prog), code.encode(), filename.encode(), 0, None, None
            ),
            "nvrtcCreateProgram",
        )
        try:
            for expr in name_expressions:
                status = lib.nvrtcAddNameExpression(prog, expr.encode())
                self.check(status, "nvrtcAddNameExpression")
            opts = [*options, f"-arch={arch}"]
            argv = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
            status = lib.nvrtcCompileProgram(prog, len(opts), argv)
            log = self._bytes(prog, "nvrtcGetProgramLogSize", "nvrtcGetProgramLog")
            log_text = log.rstrip(b"\x00").decode(errors="replace")
            if status != 0:
                msg = lib.nvrtcGetErrorString(status).decode()
                raise CudaCompileError(
                    f"NVRTC failed to compile {filename} for {arch} ({msg}); options {opts}",
                    log_text,
                )
            lowered = {}
            for expr in name_expressions:
                name = ctypes.c_char_p()
                self.check(
                    lib.nvrtcGetLoweredName(prog, expr.encode(), ctypes.byref(name)),
                    "nvrtcGetLoweredName",
                )
                lowered[expr] = name.value.decode()
            cubin = self._bytes(prog, "nvrtcGetCUBINSize", "nvrtcGetCUBIN")
            try:
                ptx = self._bytes(prog, "nvrtcGetPTXSize", "nvrtcGetPTX")
            except RuntimeError:
                ptx = b""
        finally:
            lib.nvrtcDestroyProgram(ctypes.byref(prog))
        ptx_text = ptx.rstrip(b"\x00").decode(errors="replace")
        return CompiledSource("nvrtc-ctypes", arch, ptx_text, cubin, lowered, log_text.strip())


_ctypes_nvrtc: _CtypesNvrtc | None = None


def _get_ctypes_nvrtc() -> _CtypesNvrtc:
    global _ctypes_nvrtc
    if _ctypes_nvrtc is None:
        _ctypes_nvrtc = _CtypesNvrtc()
    return _ctypes_nvrtc


def _compile_ctypes_nvrtc(
    code: str, arch: str, options: Sequence[str], name_expressions: Sequence[str], filename: str
) -> CompiledSource:
    return _get_ctypes_nvrtc().compile(code, arch, options, name_expressions, filename)


# --------------------------------------------------------------------------------------
# nvcc
# --------------------------------------------------------------------------------------


def _nvcc_path() -> str:
    path = shutil.which("nvcc")
    if path is None:
        cuda_root = os.environ.get("CUDA_PATH") or os.environ.get("CUDA_HOME") or "/usr/local/cuda"
        candidate = os.path.join(cuda_root, "bin", "nvcc")
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
        raise FileNotFoundError("nvcc is not on PATH (nor in $CUDA_PATH/bin or /usr/local/cuda)")
    return path


def _compile_nvcc(
    code: str, arch: str, options: Sequence[str], name_expressions: Sequence[str], filename: str
) -> CompiledSource:
    nvcc = _nvcc_path()
    opts = [o for o in options if o not in _NVRTC_ONLY_OPTIONS]
    for expr in name_expressions:
        # Template name expressions would need NVRTC's lowering; fastnn's kernels are extern "C".
        if not re.fullmatch(r"[A-Za-z_]\w*", expr):
            raise ValueError(f"nvcc fallback supports only extern \"C\" kernel names, got {expr!r}")
    with tempfile.TemporaryDirectory(prefix="fastnn_nvcc_") as tmp:
        src = os.path.join(tmp, filename)
        with open(src, "w") as f:
            f.write(code)
        outputs = {}
        logs = []
        for kind in ("cubin", "ptx"):
            out = os.path.join(tmp, f"kernels.{kind}")
            cmd = [nvcc, f"-arch={arch}", f"-{kind}", *opts, "-o", out, src]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise CudaCompileError(
                    f"nvcc failed to compile {filename} for {arch}: {' '.join(cmd)}",
                    proc.stdout + proc.stderr,
                )
            logs.append((proc.stdout + proc.stderr).strip())
            with open(out, "rb") as f:
                outputs[kind] = f.read()
    lowered = {expr: expr for expr in name_expressions}
    log = "\n".join(dict.fromkeys(entry for entry in logs if entry))
    return CompiledSource(
        "nvcc", arch, outputs["ptx"].decode(errors="replace"), outputs["cubin"], lowered, log
    )


# --------------------------------------------------------------------------------------
# Choosing a compiler
# --------------------------------------------------------------------------------------


def _probe_nvrtc() -> None:
    _cupy_nvrtc()


def _probe_nvcc() -> None:
    proc = subprocess.run([_nvcc_path(), "--version"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"nvcc --version failed: {proc.stderr.strip()}")


_PROBES: dict[str, Callable[[], Any]] = {
    "nvrtc": _probe_nvrtc,
    "nvrtc-ctypes": _get_ctypes_nvrtc,
    "nvcc": _probe_nvcc,
}
_COMPILE: dict[str, Callable[..., CompiledSource]] = {
    "nvrtc": _compile_cupy_nvrtc,
    "nvrtc-ctypes": _compile_ctypes_nvrtc,
    "nvcc": _compile_nvcc,
}
_probe_results: dict[str, str | None] = {}


def compiler_unavailable_reason(name: str) -> str | None:
    """Why compiler ``name`` cannot run here, or None when it can (probed once)."""
    if name not in _PROBES:
        raise ValueError(f"unknown CUDA compiler {name!r}; valid names: {', '.join(COMPILERS)}")
    if name not in _probe_results:
        try:
            _PROBES[name]()
        except Exception as exc:
            _probe_results[name] = f"{type(exc).__name__}: {exc}"
        else:
            _probe_results[name] = None
    return _probe_results[name]


def find_compiler() -> str:
    """The first usable compiler of :data:`COMPILERS` (or the one ``FASTNN_CUDA_COMPILER``
    names); raises CudaCompilerUnavailableError with every reason otherwise."""
    forced = os.environ.get(ENV_VAR)
    names = COMPILERS
    if forced:
        if forced not in COMPILERS:
            raise ValueError(f"{ENV_VAR}={forced!r}: valid names are {', '.join(COMPILERS)}")
        names = (forced,)
    reasons = []
    for name in names:
        reason = compiler_unavailable_reason(name)
        if reason is None:
            return name
        reasons.append(f"{name}: {reason}")
    raise CudaCompilerUnavailableError(
        "no CUDA compiler can run here. Tried " + "; ".join(reasons) + ". Install "
        "cupy-cuda12x and nvidia-cuda-nvrtc-cu12 (pip install 'fastnn-dl[dev]'), or put the "
        "CUDA toolkit's nvcc on PATH"
    )


def compile_source(
    code: str,
    arch: str | int = "sm_90",
    *,
    name_expressions: Sequence[str] = (),
    options: Sequence[str] | None = None,
    filename: str = "fastnn_kernels.cu",
    compiler: str | None = None,
) -> CompiledSource:
    """Compile CUDA C++ ``code`` to SASS for ``arch`` without a GPU.

    Args:
        code: the source text.
        arch: a real architecture (``"sm_80"``, ``90``).
        name_expressions: kernel names to resolve (``lowered_names`` of the result).
        options: compiler options, default :func:`offline_options`.
        filename: the name compiler messages refer to.
        compiler: one of :data:`COMPILERS`; default :func:`find_compiler`.

    Raises:
        CudaCompilerUnavailableError: no compiler can run here.
        CudaCompileError: the source does not compile; the message holds the log.
    """
    arch = normalize_arch(arch)
    name = compiler or find_compiler()
    reason = compiler_unavailable_reason(name)
    if reason is not None:
        raise CudaCompilerUnavailableError(f"CUDA compiler {name!r} cannot run here: {reason}")
    opts = tuple(offline_options() if options is None else options)
    return _COMPILE[name](code, arch, opts, tuple(name_expressions), filename)


def compile_kernel_source(
    source: KernelSource, dtype: Any, arch: str | int = "sm_90", *, compiler: str | None = None
) -> CompiledSource:
    """Compile one fastnn kernel family for ``dtype`` and ``arch``, as CuPy would on a GPU."""
    return compile_source(
        source.code(dtype),
        arch,
        name_expressions=source.kernel_names(dtype),
        filename=f"fastnn_{source.name}_{np.dtype(dtype).name}.cu",
        compiler=compiler,
    )


# --------------------------------------------------------------------------------------
# Run time (GPU): cached RawModules and kernels
# --------------------------------------------------------------------------------------

_lock = threading.Lock()
_modules: dict[tuple[int, str, str], Any] = {}
_kernels: dict[tuple[int, str, str, str], Any] = {}
_sm_counts: dict[int, int] = {}


def get_kernel(source: KernelSource, base: str, dtype: Any) -> Any:
    """The ``cupy.RawKernel`` of kernel ``base`` of ``source`` for ``dtype`` on the current
    device; its module is compiled on first use (CuPy caches the binary on disk)."""
    import cupy

    device = cupy.cuda.runtime.getDevice()
    dtype_name = np.dtype(dtype).name
    key = (device, source.name, dtype_name, base)
    kernel = _kernels.get(key)
    if kernel is not None:
        return kernel
    with _lock:
        kernel = _kernels.get(key)
        if kernel is None:
            module_key = (device, source.name, dtype_name)
            module = _modules.get(module_key)
            if module is None:
                module = cupy.RawModule(
                    code=source.code(dtype_name),
                    options=RUNTIME_OPTIONS,
                    name_expressions=list(source.kernel_names(dtype_name)),
                )
                _modules[module_key] = module
            kernel = module.get_function(source.kernel_name(base, dtype_name))
            _kernels[key] = kernel
    return kernel


def multiprocessor_count() -> int:
    """Streaming multiprocessors of the current device (cached per device)."""
    import cupy

    device = cupy.cuda.runtime.getDevice()
    count = _sm_counts.get(device)
    if count is None:
        runtime = cupy.cuda.runtime
        count = int(runtime.deviceGetAttribute(runtime.cudaDevAttrMultiProcessorCount, device))
        _sm_counts[device] = count
    return count
