"""Run one contender of a case under pytest-benchmark, with fastnn's timing rules.

Used by the suites in ``bench/``: warm-up calls first (Numba compiles, GPU modules load),
then ``benchmark.pedantic`` with a setup that sleeps ``settle_s`` and makes one untimed call
before every round (idle thread pools stop spinning), the timed call ending with the
contender's ``sync``. ``extra_info`` records backend, dtype, shapes, threads, device, CPU and
``OPENBLAS_CORETYPE``.
"""

from __future__ import annotations

import os
import time
from typing import Any

from fastnn.bench.case import Case, Contender
from fastnn.bench.env import cpu_model
from fastnn.bench.timing import SETTLE_S, WARMUP_CALLS


def record_info(benchmark: Any, case: Case | None, contender: Contender,
                **extra: Any) -> None:
    """Fill ``benchmark.extra_info`` with the facts of this case and contender."""
    info = dict(case.info) if case is not None else {}
    info.update(contender.info)
    info.update(
        backend=contender.name,
        threads=contender.threads,
        device=contender.device,
        cpu=cpu_model(),
        openblas_coretype=os.environ.get("OPENBLAS_CORETYPE", "(not set)"),
    )
    if case is not None:
        info.update(case=case.name, size=case.size)
    info.update(extra)
    benchmark.extra_info.update(info)


def run_contender(benchmark: Any, contender: Contender, rounds: int,
                  settle_s: float = SETTLE_S, case: Case | None = None,
                  warmup: int = WARMUP_CALLS) -> float:
    """Warm up, then time ``rounds`` single calls; returns the median seconds per call."""
    fn, sync = contender.fn, contender.sync
    for _ in range(warmup):
        fn()
        sync()

    def timed() -> None:
        fn()
        sync()

    def settle() -> tuple[tuple, dict]:
        if settle_s > 0:
            time.sleep(settle_s)
        fn()
        sync()
        return (), {}

    if case is not None:
        benchmark.group = case.name
    record_info(benchmark, case, contender)
    benchmark.pedantic(timed, setup=settle, rounds=rounds, iterations=1)
    return float(benchmark.stats.stats.median)


__all__ = ["record_info", "run_contender"]
