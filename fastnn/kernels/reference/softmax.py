"""Reference softmax, log-softmax and their backward passes along the last axis."""

from __future__ import annotations

from fastnn.kernels.registry import reference_op


@reference_op
def softmax(be, x, out=None):
    """Softmax along the last axis, shifted by the row maximum for stability."""
    xp = be.xp
    out = xp.subtract(x, x.max(axis=-1, keepdims=True), out=out)
    xp.exp(out, out=out)
    out /= out.sum(axis=-1, keepdims=True)
    return out


@reference_op
def softmax_backward(be, dy, y, out=None):
    """dx = y * (dy - sum(dy * y, axis=-1)) for y = softmax(x)."""
    xp = be.xp
    s = (dy * y).sum(axis=-1, keepdims=True)
    out = xp.subtract(dy, s, out=out)
    out *= y
    return out


@reference_op
def log_softmax(be, x, out=None):
    """log(softmax(x)) along the last axis, computed without forming softmax."""
    xp = be.xp
    out = xp.subtract(x, x.max(axis=-1, keepdims=True), out=out)
    out -= xp.log(xp.exp(out).sum(axis=-1, keepdims=True))
    return out
