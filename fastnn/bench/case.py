"""A benchmark case: one problem (op, shape, dtype) and the contenders that solve it.

Contenders are built lazily, one factory each, so that a case over 10 M parameters does not
hold every backend's copy at once before it runs, and so that pytest-benchmark can build
exactly one contender per test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def _no_sync() -> None:
    """A synchronize that does nothing (CPU code)."""


@dataclass
class Contender:
    """One implementation of a case, ready to call.

    Attributes:
        name: column label (``numpy``, ``numba``, ``cupy``, ``torch-cpu``,
            ``torch-cpu-fused``, ``torch-cuda``, ``numpy-sgemm``, ...).
        fn: one call of the timed work, data already in place.
        sync: waits for queued device work (``be.synchronize``, ``torch.cuda.synchronize``).
        threads: compute threads it uses (Numba threads, torch threads, 1 for NumPy code).
        device: where it runs, in words.
        info: extra facts recorded with its result (shapes, hyper-parameters).
    """

    name: str
    fn: Callable[[], Any]
    sync: Callable[[], None] = _no_sync
    threads: int = 1
    device: str = "cpu"
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Work:
    """What one call of a case does, to turn seconds into a throughput.

    ``unit`` is ``"samples"`` (samples/s), ``"bytes"`` (GB/s, the minimum memory traffic)
    or ``"flops"`` (GFLOP/s); ``amount`` is how many of them one call does.
    """

    amount: float
    unit: str

    def rate(self, seconds: float) -> float:
        """Throughput in the unit's display scale (samples/s, GB/s, GFLOP/s)."""
        if not seconds > 0:
            return float("nan")
        per_second = self.amount / seconds
        return per_second / 1e9 if self.unit in ("bytes", "flops") else per_second

    @property
    def label(self) -> str:
        """Display unit of :meth:`rate`."""
        return {"samples": "samples/s", "bytes": "GB/s", "flops": "GFLOP/s"}.get(
            self.unit, f"{self.unit}/s"
        )


@dataclass
class Case:
    """One benchmark problem and the factories of its contenders.

    Attributes:
        suite: ``ops``, ``mlp`` or ``gradient``.
        family: the problem without its size (``dense fwd+bwd 784->512 f32``): cases of one
            family differ only in ``size``, and are one line of the plot.
        size: the x value of the plot (rows, batch size or parameter count).
        work: what one call does (None: no throughput column).
        factories: contender name -> function building it (called once, when the case runs).
        unavailable: contender name -> why it cannot run (``not installed``), shown in
            the table instead of a time.
        info: shapes and dtype, recorded with every result of the case.
        gemm_flops: FLOPs of the matrix products of one call, when the case has a
            ``numpy-sgemm`` contender timing exactly those products.
    """

    suite: str
    family: str
    size: int
    work: Work | None
    factories: dict[str, Callable[[], Contender]] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    gemm_flops: float | None = None

    @property
    def name(self) -> str:
        """``family [size]``, unique within a suite."""
        return f"{self.family} [{self.size}]"


__all__ = ["Case", "Contender", "Work"]
