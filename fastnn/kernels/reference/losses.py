"""Reference fused losses: softmax cross-entropy forward and backward in one op."""

from __future__ import annotations

from fastnn.kernels.registry import reference_op


@reference_op
def softmax_cross_entropy(be, logits, target, dx=None, scale: float | None = None):
    """Mean cross-entropy of softmax(logits) against ``target`` and its gradient.

    Args:
        logits: (N, C) scores.
        target: (N, C) probabilities (one-hot or soft labels).
        dx: optional (N, C) buffer for dL/dlogits = (softmax(logits) - target) * scale.
        scale: gradient scale, default 1/N (the gradient of the mean).

    Returns:
        (loss, dx): the mean loss as a Python float, and the gradient array.
    """
    xp = be.xp
    n = logits.shape[0]
    scale = 1.0 / n if scale is None else scale
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = xp.exp(shifted)
    s = e.sum(axis=1, keepdims=True)
    logp = shifted - xp.log(s)
    loss = -float((target * logp).sum()) / n
    dx = xp.divide(e, s, out=dx)
    dx -= target
    dx *= scale
    return loss, dx


@reference_op
def sparse_softmax_cross_entropy(be, logits, labels, dx=None, scale: float | None = None):
    """Like :func:`softmax_cross_entropy` with integer class ``labels`` of shape (N,)."""
    xp = be.xp
    n = logits.shape[0]
    scale = 1.0 / n if scale is None else scale
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = xp.exp(shifted)
    s = e.sum(axis=1, keepdims=True)
    rows = xp.arange(n)
    picked = shifted[rows, labels] - xp.log(s[:, 0])
    loss = -float(picked.sum()) / n
    dx = xp.divide(e, s, out=dx)
    dx[rows, labels] -= 1
    dx *= scale
    return loss, dx
