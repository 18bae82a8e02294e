"""The sampler: median and inter-quartile range of a function's time per call.

Rules every fastnn timing follows (see PERF-NOTES, "Thread pools fight"):

- warm-up calls run before any timed one (Numba compiles, buffers are first touched, GPU
  modules load);
- each timed call ends with the contender's ``synchronize`` (a no-op on CPU backends, a
  device sync on CuPy / torch CUDA), so queued device work is inside the timing;
- before each timed sample the sampler sleeps ``settle_s`` (idle BLAS/OpenMP workers of the
  previous library spin ~0.1 s and steal the cores) and makes one untimed call;
- a sample is ``inner`` back-to-back calls, ``inner`` chosen once so that a sample lasts
  about ``target_sample_s`` (one call of 0.3 ms is below the timer's useful resolution on a
  busy VM); the sample's value is its time divided by ``inner``;
- contenders of one case are sampled interleaved (round robin), so slow drifts of the
  machine hit every contender alike and their ratio is measured side by side.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

#: Seconds slept before each timed sample (PERF-NOTES: idle pools spin ~0.1 s).
SETTLE_S = 0.2
#: Wanted duration of one timed sample, in seconds.
TARGET_SAMPLE_S = 0.02
#: Most calls in one timed sample.
MAX_INNER = 1000
#: Untimed calls before the first sample.
WARMUP_CALLS = 2


def _no_sync() -> None:
    """A synchronize that does nothing (CPU code)."""


@dataclass
class Timing:
    """Seconds per call of one contender: every sample and its summary statistics."""

    samples: list[float] = field(default_factory=list)
    inner: int = 1

    @property
    def median(self) -> float:
        """Median seconds per call."""
        return float(statistics.median(self.samples)) if self.samples else math.nan

    @property
    def q1(self) -> float:
        """First quartile of the samples (seconds per call)."""
        return _quantile(self.samples, 0.25)

    @property
    def q3(self) -> float:
        """Third quartile of the samples (seconds per call)."""
        return _quantile(self.samples, 0.75)

    @property
    def iqr(self) -> float:
        """Inter-quartile range q3 - q1 (seconds per call)."""
        return self.q3 - self.q1


def _quantile(values: list[float], q: float) -> float:
    """Linear-interpolation quantile (NumPy's default); nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _timed(fn: Callable[[], object], sync: Callable[[], None], inner: int) -> float:
    """Seconds for ``inner`` calls, each followed by ``sync``."""
    start = time.perf_counter()
    for _ in range(inner):
        fn()
        sync()
    return time.perf_counter() - start


def calibrate(
    fn: Callable[[], object],
    sync: Callable[[], None] | None = None,
    target_sample_s: float = TARGET_SAMPLE_S,
    max_inner: int = MAX_INNER,
) -> int:
    """Calls per sample so that one sample lasts about ``target_sample_s`` (at least 1;
    exactly 1, without a trial call, when ``target_sample_s`` <= 0)."""
    if target_sample_s <= 0:
        return 1
    sync = sync or _no_sync
    one = _timed(fn, sync, 1)
    if one <= 0.0:
        return max_inner
    return int(max(1, min(max_inner, math.ceil(target_sample_s / one))))


def take_sample(
    fn: Callable[[], object],
    sync: Callable[[], None] | None = None,
    inner: int = 1,
    settle_s: float = SETTLE_S,
) -> float:
    """One timed sample: sleep ``settle_s``, one untimed call, then ``inner`` timed calls.

    Returns:
        Seconds per call.
    """
    sync = sync or _no_sync
    if settle_s > 0:
        time.sleep(settle_s)
    fn()
    sync()
    return _timed(fn, sync, inner) / inner


def measure(
    fn: Callable[[], object],
    sync: Callable[[], None] | None = None,
    repeat: int = 7,
    warmup: int = WARMUP_CALLS,
    settle_s: float = SETTLE_S,
    target_sample_s: float = TARGET_SAMPLE_S,
) -> Timing:
    """Time ``fn`` alone: ``warmup`` untimed calls, then ``repeat`` samples."""
    return measure_interleaved({"fn": (fn, sync)}, repeat, warmup, settle_s,
                               target_sample_s)["fn"]


def measure_interleaved(
    contenders: Mapping[str, tuple[Callable[[], object], Callable[[], None] | None]],
    repeat: int = 7,
    warmup: int = WARMUP_CALLS,
    settle_s: float = SETTLE_S,
    target_sample_s: float = TARGET_SAMPLE_S,
) -> dict[str, Timing]:
    """Time several contenders side by side, one sample of each per round.

    Args:
        contenders: name -> (function of no arguments, synchronize or None).
        repeat: samples per contender (rounds).
        warmup: untimed calls of each contender before calibration.
        settle_s: seconds slept before every sample.
        target_sample_s: wanted duration of one sample.

    Returns:
        name -> :class:`Timing`, in the order of ``contenders``.

    Raises:
        ValueError: ``repeat`` < 1 or ``warmup`` < 0.
    """
    if repeat < 1:
        raise ValueError(f"measure: repeat must be >= 1, received repeat={repeat}")
    if warmup < 0:
        raise ValueError(f"measure: warmup must be >= 0, received warmup={warmup}")
    timings: dict[str, Timing] = {}
    for name, (fn, sync) in contenders.items():
        sync = sync or _no_sync
        for _ in range(warmup):
            fn()
            sync()
        timings[name] = Timing(inner=calibrate(fn, sync, target_sample_s))
    for _ in range(repeat):
        for name, (fn, sync) in contenders.items():
            timing = timings[name]
            timing.samples.append(take_sample(fn, sync, timing.inner, settle_s))
    return timings


__all__ = [
    "MAX_INNER",
    "SETTLE_S",
    "TARGET_SAMPLE_S",
    "WARMUP_CALLS",
    "Timing",
    "calibrate",
    "measure",
    "measure_interleaved",
    "take_sample",
]
