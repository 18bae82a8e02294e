"""Run cases side by side and turn their timings into :class:`~fastnn.bench.results.Result` rows."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable

from fastnn.bench.case import Case, Contender
from fastnn.bench.results import Result, noise_note
from fastnn.bench.timing import SETTLE_S, TARGET_SAMPLE_S, measure_interleaved


def _one_line(exc: Exception, limit: int = 120) -> str:
    """The first line of an exception's message, at most ``limit`` characters."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _gemm_note(case: Case, name: str, median: float, sgemm_median: float | None) -> str:
    """``61.2 GFLOP/s GEMM, 91% of numpy-sgemm`` for a row of a case with a GEMM figure."""
    if case.gemm_flops is None or not median > 0:
        return ""
    rate = case.gemm_flops / median / 1e9
    if sgemm_median is None or name == "numpy-sgemm":
        return f"{rate:.3g} GFLOP/s GEMM"
    return f"{rate:.3g} GFLOP/s GEMM, {100.0 * sgemm_median / median:.0f}% of numpy-sgemm"


def run_case(
    case: Case,
    repeat: int,
    settle_s: float = SETTLE_S,
    target_sample_s: float = TARGET_SAMPLE_S,
) -> list[Result]:
    """Build every contender of ``case``, time them interleaved, return one row each.

    Each contender is built and called once first: one that fails (say, a fused torch
    optimizer this torch lacks on that device) gives a row whose note says why, instead of
    stopping the run; so does one named in ``case.unavailable``.
    """
    contenders: dict[str, Contender] = {}
    rows: list[Result] = []
    failed: dict[str, str] = dict(case.unavailable)
    for name, factory in case.factories.items():
        try:
            contender = factory()
            contender.fn()  # a trial call: a variant this peer lacks fails here
            contender.sync()
        except Exception as exc:  # one peer failing must not stop the other contenders
            failed[name] = f"failed: {type(exc).__name__}: {_one_line(exc)}"
            continue
        contenders[name] = contender
    timings = measure_interleaved(
        {name: (c.fn, c.sync) for name, c in contenders.items()},
        repeat=repeat, settle_s=settle_s, target_sample_s=target_sample_s,
    ) if contenders else {}
    sgemm = timings.get("numpy-sgemm")
    sgemm_median = sgemm.median if sgemm is not None else None
    for name, timing in timings.items():
        c = contenders[name]
        median = timing.median
        work = case.work
        throughput = work.rate(median) if work is not None else None
        unit = work.label if work is not None else ""
        if name == "numpy-sgemm" and case.gemm_flops is not None:
            throughput, unit = case.gemm_flops / median / 1e9, "GFLOP/s"
        note = noise_note(median, timing.q1, timing.q3,
                          _gemm_note(case, name, median, sgemm_median))
        rows.append(Result(
            suite=case.suite, case=case.name, family=case.family, size=case.size,
            backend=name, median_s=median, q1_s=timing.q1, q3_s=timing.q3,
            samples_s=list(timing.samples), inner=timing.inner, throughput=throughput,
            throughput_unit=unit, note=note,
            info={**case.info, **c.info, "threads": c.threads, "device": c.device},
        ))
    for name, reason in failed.items():
        rows.append(Result(suite=case.suite, case=case.name, family=case.family,
                           size=case.size, backend=name, median_s=None, note=reason,
                           info=dict(case.info)))
    contenders.clear()
    gc.collect()  # free this case's arrays before the next one allocates its own
    return rows


def run_cases(
    cases: Iterable[Case],
    repeat: int,
    settle_s: float = SETTLE_S,
    target_sample_s: float = TARGET_SAMPLE_S,
    progress: Callable[[str], None] | None = None,
) -> list[Result]:
    """:func:`run_case` over ``cases`` (built one at a time), rows in order."""
    rows: list[Result] = []
    for case in cases:
        if progress is not None:
            progress(case.name)
        rows.extend(run_case(case, repeat, settle_s, target_sample_s))
        del case
    return rows


__all__ = ["run_case", "run_cases"]
