"""Benchmark results: one row per (case, contender), ratios to baselines, table and JSON."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: What a ratio cell says when the baseline could not run.
NOT_INSTALLED = "not installed"
#: A row whose inter-quartile range exceeds this share of its median is flagged NOISY
#: (another process competed for the cores: rerun it on a quiet machine).
NOISY_IQR = 0.5


def noise_note(median: float, q1: float, q3: float, note: str = "") -> str:
    """``note``, with ``NOISY: IQR > 50% of median`` appended when the spread is that wide."""
    if median > 0 and (q3 - q1) > NOISY_IQR * median:
        return "; ".join(filter(None, [note, f"NOISY: IQR > {NOISY_IQR:.0%} of median"]))
    return note


@dataclass
class Result:
    """One contender's timing on one case.

    Attributes:
        suite: ``ops``, ``mlp`` or ``gradient``.
        case: the case name (family and size).
        family: the case without its size (one line of the plot).
        size: x value of the plot.
        backend: the contender (``numpy``, ``numba``, ``torch-cpu``, ...).
        median_s, q1_s, q3_s: seconds per call (None when it did not run).
        samples_s: every sample, seconds per call.
        inner: calls per sample.
        throughput: in ``throughput_unit`` (None when the case has no work figure).
        ratios: baseline -> how many times faster than the baseline this row is
            (baseline median / this median), or a string such as ``"not installed"``.
        note: free text (extrapolations, agreement of gradients, % of the sgemm rate).
        info: dtype, shapes, threads, device, hyper-parameters.
    """

    suite: str
    case: str
    family: str
    size: int
    backend: str
    median_s: float | None
    q1_s: float | None = None
    q3_s: float | None = None
    samples_s: list[float] = field(default_factory=list)
    inner: int = 1
    throughput: float | None = None
    throughput_unit: str = ""
    ratios: dict[str, float | str] = field(default_factory=dict)
    note: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def iqr_s(self) -> float | None:
        """Inter-quartile range in seconds (None when it did not run)."""
        if self.q1_s is None or self.q3_s is None:
            return None
        return self.q3_s - self.q1_s

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields, ``iqr_s`` included."""
        data = asdict(self)
        data["iqr_s"] = self.iqr_s
        return data


def add_ratios(results: list[Result], baselines: list[str],
               unavailable: dict[str, str] | None = None) -> None:
    """Fill ``ratios[b]`` of every row with (baseline median / row median) per case.

    A baseline that did not run in a case leaves the cell empty; one named in
    ``unavailable`` (name -> reason, e.g. torch "not installed") writes the reason.
    """
    unavailable = unavailable or {}
    by_case: dict[str, dict[str, Result]] = {}
    for row in results:
        by_case.setdefault(row.case, {})[row.backend] = row
    for row in results:
        for base in baselines:
            if base in unavailable:
                row.ratios[base] = unavailable[base]
                continue
            ref = by_case[row.case].get(base)
            if ref is None or ref.median_s is None or row.median_s is None:
                continue
            if row.median_s > 0:
                row.ratios[base] = ref.median_s / row.median_s


def format_seconds(seconds: float | None) -> str:
    """``1.23 ms`` / ``456 us`` / ``2.50 s``; ``-`` for None."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "-"
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} us"


def format_rate(value: float | None, unit: str) -> str:
    """``12.3k samples/s``; ``-`` for None."""
    if value is None or math.isnan(value):
        return "-"
    if unit == "samples/s" and value >= 1e3:
        return f"{value / 1e3:.3g}k {unit}"
    return f"{value:.3g} {unit}"


def _ratio_cell(value: float | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if value >= 100:
        return f"{value:,.0f}x"
    return f"{value:.2f}x"


def format_table(results: list[Result], baselines: list[str]) -> str:
    """The results as an aligned text table, one line per row.

    Columns: case, backend, median, IQR, throughput, one ``x BASE`` column per baseline
    (how many times faster than BASE), note.
    """
    used = [b for b in baselines if any(b in r.ratios for r in results)]
    head = ["case", "backend", "median", "IQR", "throughput", *[f"x {b}" for b in used], "note"]
    rows = [head]
    for r in results:
        ran = r.median_s is not None
        short = len(r.note) <= len(NOT_INSTALLED)  # a reason short enough for the cell
        rows.append([
            r.case,
            r.backend,
            format_seconds(r.median_s) if ran else (r.note if short and r.note else "-"),
            format_seconds(r.iqr_s),
            format_rate(r.throughput, r.throughput_unit),
            *[_ratio_cell(r.ratios.get(b)) for b in used],
            r.note if ran or not short else "",
        ])
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = []
    for i, row in enumerate(rows):
        cells = [cell.ljust(widths[j]) if j in (0, 1, len(head) - 1) else cell.rjust(widths[j])
                 for j, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("-" * len(lines[0]))
    return "\n".join(lines)


def write_json(path: str | Path, header: dict[str, Any], results: list[Result],
               command: list[str] | None = None) -> None:
    """Write ``{"header", "command", "results"}`` to ``path`` (UTF-8, indented)."""
    data = {
        "header": header,
        "command": command or [],
        "results": [r.to_dict() for r in results],
    }
    Path(path).write_text(json.dumps(data, indent=2, default=_jsonable) + "\n", encoding="utf-8")


def _jsonable(value: Any) -> Any:
    """Fallback for NumPy scalars and tuples inside ``info``."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return str(value)


__all__ = [
    "NOISY_IQR",
    "NOT_INSTALLED",
    "Result",
    "add_ratios",
    "format_rate",
    "format_seconds",
    "format_table",
    "noise_note",
    "write_json",
]
