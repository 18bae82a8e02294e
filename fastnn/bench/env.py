"""The machine a benchmark ran on: CPU, threads, BLAS, ``OPENBLAS_CORETYPE``, load.

Every figure is quoted with this header (PERF-NOTES: the same machine kind comes with an AMD
or an Intel CPU, and ``OPENBLAS_CORETYPE`` changes NumPy's GEMM kernel). The benchmark never
changes these settings; it only reports them.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

import numpy as np

#: Environment variables that change thread pools or kernels, reported when set.
THREAD_ENV_VARS = (
    "OPENBLAS_CORETYPE",
    "OPENBLAS_NUM_THREADS",
    "OPENBLAS_THREAD_TIMEOUT",
    "OMP_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "GOMP_SPINCOUNT",
    "MKL_NUM_THREADS",
    "NUMBA_NUM_THREADS",
    "NUMBA_THREADING_LAYER",
)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (else what ``platform`` knows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def load_average() -> str:
    """``0.61 0.21 0.07`` (1, 5, 15 minutes), or ``n/a``."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except (OSError, AttributeError):
        return "n/a"


def torch_info() -> dict[str, Any]:
    """Version, threads and CUDA device of PyTorch, or ``{"torch": "not installed"}``."""
    from fastnn.bench import peers

    torch, reason = peers.import_torch()
    if torch is None:
        return {"torch": reason}
    info: dict[str, Any] = {
        "torch": torch.__version__,
        "torch_threads": int(torch.get_num_threads()),
    }
    if torch.cuda.is_available():
        info["torch_cuda"] = torch.cuda.get_device_name(0)
    return info


def environment(backends: list[str] | None = None) -> dict[str, Any]:
    """Facts that qualify every figure of a run, as a flat dict of strings and numbers."""
    from fastnn import __version__
    from fastnn.cli import _blas_info, _numba_threads

    blas_name, blas_threads = _blas_info()
    env: dict[str, Any] = {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "load_average": load_average(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "fastnn": __version__,
        "blas": blas_name,
        "blas_threads": blas_threads,
        "numba_threads": _numba_threads(),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "(not set)"),
    }
    for var in THREAD_ENV_VARS[1:]:
        if os.environ.get(var):
            env[var] = os.environ[var]
    env.update(torch_info())
    if backends is not None:
        from fastnn.backends import get_backend

        env["backends"] = {name: get_backend(name).device for name in backends}
    env["argv"] = " ".join(sys.argv)
    return env


def format_header(env: dict[str, Any]) -> str:
    """The header printed above a benchmark table, one ``key: value`` per line."""
    lines = []
    for key, value in env.items():
        if key == "argv":
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {v}" for k, v in value.items())
        lines.append(f"{key}: {value}")
    return "\n".join(lines)


__all__ = ["THREAD_ENV_VARS", "cpu_model", "environment", "format_header", "load_average",
           "torch_info"]
