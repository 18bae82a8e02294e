"""Plots of training curves (needs matplotlib: ``pip install 'fastnn-dl[plot]'``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

#: Pixels per inch of the written PNG.
DPI = 100


def _require_matplotlib() -> Any:
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(
            "fastnn.plot needs matplotlib, which is an optional extra: "
            "pip install 'fastnn-dl[plot]' (or pip install matplotlib)"
        ) from exc
    return matplotlib, Figure, FigureCanvasAgg


def _curves(history: Any) -> tuple[list[int] | None, dict[str, list[float]]]:
    if hasattr(history, "history") and isinstance(history.history, Mapping):
        epochs = list(getattr(history, "epoch", []) or []) or None
        return epochs, dict(history.history)
    if isinstance(history, Mapping):
        return None, dict(history)
    raise TypeError(
        "plot.history: expected a History (from fit) or a dict of lists, received "
        f"{type(history).__name__}"
    )


def history(history: Any, path: str | os.PathLike, title: str | None = None) -> str:
    """Write a PNG of the loss and metric curves of a training run; returns the path.

    One panel per quantity: ``loss`` with ``val_loss``, each metric with its ``val_``
    twin, and the learning rate when it was logged. The x axis counts epochs from 1.

    Args:
        history: the :class:`~fastnn.History` returned by ``fit`` (or its ``.history``
            dict of equal-length lists).
        path: destination ``.png`` file (written atomically).
        title: figure title.

    Raises:
        ImportError: matplotlib is not installed (it is the ``plot`` extra).
        ValueError: the history is empty or its lists have different lengths.
    """
    _, Figure, FigureCanvasAgg = _require_matplotlib()
    from matplotlib.ticker import MaxNLocator
    epochs, curves = _curves(history)
    curves = {k: [float(v) for v in vals] for k, vals in curves.items() if k != "time"}
    if not curves or not any(curves.values()):
        raise ValueError("plot.history: the history is empty; train for at least one epoch")
    lengths = {len(v) for v in curves.values()}
    if len(lengths) != 1:
        raise ValueError(f"plot.history: the curves have different lengths {sorted(lengths)}")
    n = lengths.pop()
    xs = [e + 1 for e in epochs] if epochs and len(epochs) == n else list(range(1, n + 1))
    panels = [k for k in curves if not k.startswith("val_")]
    panels += [k[4:] for k in curves if k.startswith("val_") and k[4:] not in curves]
    panels.sort(key=lambda k: (k != "loss", k == "learning_rate"))  # loss first, lr last
    fig = Figure(figsize=(5 * len(panels), 4), dpi=DPI)
    FigureCanvasAgg(fig)
    for i, key in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        if key in curves:
            ax.plot(xs, curves[key], marker="o", markersize=3, label=key)
        if f"val_{key}" in curves:
            ax.plot(xs, curves[f"val_{key}"], marker="o", markersize=3, label=f"val_{key}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(key)
        if key in ("loss", "learning_rate") and all(
            v > 0 for k in (key, f"val_{key}") for v in curves.get(k, [])
        ):
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    from fastnn.io import atomic_write

    atomic_write(path, lambda f: fig.savefig(f, format="png"))
    return os.fspath(path)


__all__ = ["history"]
