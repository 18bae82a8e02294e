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


def contender_or_skip(case: Case, name: str) -> Contender:
    """Build contender ``name`` of ``case`` and call it once, or ``pytest.skip`` saying why
    it cannot run here (backend unavailable, torch missing, no such device or variant,
    a failing trial call)."""
    import pytest

    from fastnn.backends import NAMES, unavailable_reason
    from fastnn.bench.peers import FUSED_SUFFIX, TORCH_CUDA

    reason = unavailable_reason(name) if name in NAMES else None
    if reason is not None:
        pytest.skip(reason)
    if name in case.unavailable:
        pytest.skip(f"{name}: {case.unavailable[name]}")
    if name not in case.factories:
        if name.startswith(TORCH_CUDA) and not any(
            n.startswith(TORCH_CUDA) for n in case.factories
        ):
            pytest.skip(f"{name}: torch sees no CUDA device here")
        if name.endswith(FUSED_SUFFIX):
            pytest.skip(f"{name}: torch has no fused=True variant for {case.name}")
        pytest.skip(f"{name} does not run {case.name}")
    try:
        contender = case.factories[name]()
        contender.fn()
        contender.sync()
    except Exception as exc:  # a peer lacking a variant on this device, say
        pytest.skip(f"{name} failed its trial call: {type(exc).__name__}: {exc}")
    return contender


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


__all__ = ["contender_or_skip", "record_info", "run_contender"]
