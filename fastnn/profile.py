"""Per-layer timing of a model's forward and backward passes: ``fastnn.utils.profile``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class LayerTiming:
    """Median seconds of one layer's forward and backward pass on the profiled batch."""

    name: str
    kind: str
    output_shape: tuple[int, ...]
    forward_s: float
    backward_s: float


@dataclass
class ProfileReport:
    """Per-layer timings; ``str(report)`` is a table, ``report.layers`` the rows."""

    backend: str
    batch_size: int
    repeats: int
    layers: list[LayerTiming] = field(default_factory=list)

    @property
    def forward_s(self) -> float:
        """Sum of the layers' forward medians."""
        return sum(t.forward_s for t in self.layers)

    @property
    def backward_s(self) -> float:
        """Sum of the layers' backward medians."""
        return sum(t.backward_s for t in self.layers)

    def __str__(self) -> str:
        rows = [("Layer (type)", "Output Shape", "Forward", "Backward", "Share")]
        total = self.forward_s + self.backward_s
        for t in self.layers:
            share = (t.forward_s + t.backward_s) / total if total > 0 else 0.0
            rows.append((f"{t.name} ({t.kind})", str((None, *t.output_shape)),
                         _ms(t.forward_s), _ms(t.backward_s), f"{share:6.1%}"))
        rows.append(("Total", "", _ms(self.forward_s), _ms(self.backward_s), "100.0%"))
        widths = [max(len(r[i]) for r in rows) + 2 for i in range(5)]
        lines = [f"Profile on backend {self.backend}, batch {self.batch_size}, median of "
                 f"{self.repeats} runs"]
        for i, row in enumerate(rows):
            if i in (1, len(rows) - 1):
                lines.append("-" * sum(widths))
            lines.append("".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
        return "\n".join(lines)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms"


def profile(model: Any, x: Any, repeats: int = 5, warmup: int = 1,
            print_fn: Any = print) -> ProfileReport:
    """Time every layer's forward and backward pass of ``model`` on the batch ``x``.

    Each layer runs in training mode on the previous layer's output; the backward pass
    starts from a random upstream gradient shaped like the model's output. Times are
    medians over ``repeats`` runs after ``warmup`` untimed runs, with the backend
    synchronised around every call (so GPU times are real).

    Args:
        model: a Sequential (built, or built from ``x``).
        x: a batch (N, ...), host array-like.
        repeats: timed runs per layer.
        warmup: untimed runs first (JIT compilation, buffer allocation).
        print_fn: called with the table (None: do not print).

    Returns:
        A :class:`ProfileReport`.
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"profile: repeats must be a positive integer. Received: {repeats!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"profile: warmup must be an integer >= 0. Received: {warmup!r}")
    be = model.backend
    x_host = model._host_inputs(x, "profile")
    if not model.built:
        model.build(x_host.shape[1:])
    layers = model.layers
    first_needs = layers[0].need_input_grad
    layers[0].need_input_grad = True
    fwd = {i: [] for i in range(len(layers))}
    bwd = {i: [] for i in range(len(layers))}
    rng = np.random.default_rng(0)
    try:
        for run in range(warmup + repeats):
            h = be.asarray(x_host)
            for i, layer in enumerate(layers):
                be.synchronize()
                t0 = time.perf_counter()
                h = layer.forward(h, training=True)
                be.synchronize()
                if run >= warmup:
                    fwd[i].append(time.perf_counter() - t0)
            d = be.asarray(rng.standard_normal(h.shape).astype(model.dtype))
            for i in range(len(layers) - 1, -1, -1):
                be.synchronize()
                t0 = time.perf_counter()
                d = layers[i].backward(d)
                be.synchronize()
                if run >= warmup:
                    bwd[i].append(time.perf_counter() - t0)
    finally:
        layers[0].need_input_grad = first_needs
        model.zero_grads()
    report = ProfileReport(be.name, int(x_host.shape[0]), repeats)
    for i, layer in enumerate(layers):
        report.layers.append(LayerTiming(layer.name, type(layer).__name__,
                                         tuple(layer.output_shape),
                                         float(np.median(fwd[i])), float(np.median(bwd[i]))))
    if print_fn is not None:
        print_fn(str(report))
    return report


__all__ = ["LayerTiming", "ProfileReport", "profile"]
