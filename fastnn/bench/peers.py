"""PyTorch as an optional benchmark peer: guarded import, devices, synchronisation.

torch is never a fastnn dependency. Without it every torch column of a table says
``not installed``; tests simulate that by patching :func:`import_torch`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from fastnn.bench.results import NOT_INSTALLED

#: Contender names of PyTorch, by device and variant.
TORCH_CPU = "torch-cpu"
TORCH_CUDA = "torch-cuda"
FUSED_SUFFIX = "-fused"


def import_torch() -> tuple[Any | None, str]:
    """``(torch, "")``, or ``(None, "not installed")`` when it cannot be imported."""
    try:
        return importlib.import_module("torch"), ""
    except ImportError:
        return None, NOT_INSTALLED


def torch_devices(torch: Any) -> list[tuple[str, str]]:
    """``[("torch-cpu", "cpu"), ("torch-cuda", "cuda")]``, CUDA only when present."""
    devices = [(TORCH_CPU, "cpu")]
    if torch.cuda.is_available():
        devices.append((TORCH_CUDA, "cuda"))
    return devices


def torch_sync(torch: Any, device: str) -> Callable[[], None]:
    """A function that waits for the device's queued work (nothing to wait for on CPU)."""
    if device == "cuda":
        return torch.cuda.synchronize

    def no_sync() -> None:
        """CPU work is done when the call returns."""

    return no_sync


def torch_baselines(compare: list[str]) -> tuple[list[str], dict[str, str]]:
    """Ratio baselines a run with ``--compare`` gets, and those that cannot run (reason).

    Returns:
        (baseline names in column order, name -> reason for the missing ones).
    """
    if "torch" not in compare:
        return [], {}
    names = [TORCH_CPU, TORCH_CPU + FUSED_SUFFIX]
    torch, reason = import_torch()
    if torch is None:
        return names, dict.fromkeys(names, reason)
    return names, {}


__all__ = [
    "FUSED_SUFFIX",
    "TORCH_CPU",
    "TORCH_CUDA",
    "import_torch",
    "torch_baselines",
    "torch_devices",
    "torch_sync",
]
