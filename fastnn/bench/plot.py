"""Time against size per backend, with the crossover where Numba / CuPy start to beat NumPy.

matplotlib is optional: :func:`plot_results` raises ImportError with the install command
when it is missing; :func:`crossovers` needs nothing.
"""

from __future__ import annotations

import math
from pathlib import Path

from fastnn.bench.results import Result

#: Backends whose crossover against the NumPy baseline is marked.
CHALLENGERS = ("numba", "cupy")
BASELINE = "numpy"
#: Subplots per row of the figure.
COLUMNS = 3
PANEL_INCHES = (5.0, 3.6)
DPI = 100


def _by_family(results: list[Result]) -> dict[str, dict[str, dict[int, float]]]:
    """family -> backend -> size -> median seconds (rows that ran only)."""
    table: dict[str, dict[str, dict[int, float]]] = {}
    for r in results:
        if r.median_s is None:
            continue
        table.setdefault(r.family, {}).setdefault(r.backend, {})[r.size] = r.median_s
    return table


def crossovers(results: list[Result]) -> dict[tuple[str, str], int | None]:
    """(family, challenger) -> the smallest size from which it beats NumPy at every larger
    size measured, or None when it never does (families where both ran only)."""
    out: dict[tuple[str, str], int | None] = {}
    for family, lines in _by_family(results).items():
        base = lines.get(BASELINE)
        if base is None:
            continue
        for name in CHALLENGERS:
            line = lines.get(name)
            if line is None:
                continue
            sizes = sorted(s for s in line if s in base)
            if not sizes:
                continue
            start = None
            for size in reversed(sizes):
                if line[size] < base[size]:
                    start = size
                else:
                    break
            out[(family, name)] = start
    return out


def plot_results(results: list[Result], path: str | Path, title: str = "") -> Path:
    """Write a PNG: one panel per case family, median time against size, one line per
    backend, a dashed vertical line where Numba / CuPy start to beat NumPy.

    Raises:
        ImportError: matplotlib is not installed (the message says how to install it).
        ValueError: no result has a time to plot.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            f"--plot needs matplotlib, which failed to import ({exc}); install it with "
            "`pip install matplotlib` (or `pip install fastnn-dl[plot]`)"
        ) from exc
    families = _by_family(results)
    if not families:
        raise ValueError("plot_results: no result has a time to plot")
    cross = crossovers(results)
    rows = math.ceil(len(families) / COLUMNS)
    cols = min(COLUMNS, len(families))
    fig, axes = plt.subplots(rows, cols, squeeze=False,
                             figsize=(PANEL_INCHES[0] * cols, PANEL_INCHES[1] * rows))
    for ax, (family, lines) in zip(axes.flat, families.items(), strict=False):
        for backend, points in lines.items():
            sizes = sorted(points)
            ax.plot(sizes, [points[s] * 1e3 for s in sizes], marker="o", label=backend)
        for name in CHALLENGERS:
            size = cross.get((family, name))
            if size is not None:
                ax.axvline(size, linestyle="--", linewidth=1, color="gray")
                ax.annotate(f"{name} < numpy from {size}", (size, 0.95),
                            xycoords=("data", "axes fraction"), fontsize=7, rotation=90,
                            va="top", ha="right")
        all_sizes = {s for points in lines.values() for s in points}
        if len(all_sizes) > 1 and max(all_sizes) / max(min(all_sizes), 1) >= 10:
            ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(family, fontsize=8)
        ax.set_xlabel("size")
        ax.set_ylabel("median ms per call")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(families):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
    return out


__all__ = ["BASELINE", "CHALLENGERS", "crossovers", "plot_results"]
