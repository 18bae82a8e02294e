"""Reference elementwise activations, forward and backward, by name.

``ACTIVATIONS`` maps a name to its forward ``f(xp, x, out, alpha)`` and backward
``g(xp, dy, x, y, out, alpha)``. A backward gets both the input ``x`` and the output
``y``; ``USES_INPUT`` lists the activations whose backward reads ``x`` (the others need
only ``y``, so a layer may overwrite its pre-activation in place).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from fastnn.kernels.registry import reference_op


class ActivationFns(NamedTuple):
    """Forward and backward of one elementwise activation."""

    forward: Callable[..., Any]
    backward: Callable[..., Any]
    uses_input: bool


def _linear_fwd(xp, x, out, alpha):
    if out is None:
        return x.copy()
    if out is not x:
        out[...] = x
    return out


def _linear_bwd(xp, dy, x, y, out, alpha):
    if out is None:
        return dy.copy()
    if out is not dy:
        out[...] = dy
    return out


def _relu_fwd(xp, x, out, alpha):
    return xp.maximum(x, 0, out=out)


def _relu_bwd(xp, dy, x, y, out, alpha):
    # Multiplying by a boolean mask is much faster than a masked write (PERF-NOTES).
    return xp.multiply(dy, y > 0, out=out)


def _sigmoid_fwd(xp, x, out, alpha):
    # 0.5 * (1 + tanh(x / 2)) never overflows, unlike 1 / (1 + exp(-x)).
    out = xp.multiply(x, 0.5, out=out)
    xp.tanh(out, out=out)
    out += 1
    out *= 0.5
    return out


def _sigmoid_bwd(xp, dy, x, y, out, alpha):
    out = xp.subtract(1, y, out=out)
    out *= y
    out *= dy
    return out


def _tanh_fwd(xp, x, out, alpha):
    return xp.tanh(x, out=out)


def _tanh_bwd(xp, dy, x, y, out, alpha):
    out = xp.multiply(y, y, out=out)
    xp.subtract(1, out, out=out)
    out *= dy
    return out


def _step_fwd(xp, x, out, alpha):
    mask = x > 0
    if out is None:
        return mask.astype(x.dtype)
    out[...] = mask
    return out


def _step_bwd(xp, dy, x, y, out, alpha):
    # The step function is flat almost everywhere: its derivative is zero (documented).
    if out is None:
        return xp.zeros_like(dy)
    out[...] = 0
    return out


ACTIVATIONS: dict[str, ActivationFns] = {
    "linear": ActivationFns(_linear_fwd, _linear_bwd, False),
    "relu": ActivationFns(_relu_fwd, _relu_bwd, False),
    "sigmoid": ActivationFns(_sigmoid_fwd, _sigmoid_bwd, False),
    "tanh": ActivationFns(_tanh_fwd, _tanh_bwd, False),
    "step": ActivationFns(_step_fwd, _step_bwd, False),
}


def get_activation_fns(name: str) -> ActivationFns:
    """The reference functions of activation ``name``; ValueError listing valid names."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        valid = ", ".join(sorted(ACTIVATIONS))
        raise ValueError(f"unknown activation {name!r}; valid names: {valid}") from None


@reference_op
def activation_forward(be, name: str, x, out=None, alpha: float = 0.0):
    """y = act(x) elementwise; ``out`` may be ``x`` (in place)."""
    return get_activation_fns(name).forward(be.xp, x, out, alpha)


@reference_op
def activation_backward(be, name: str, dy, x, y, out=None, alpha: float = 0.0):
    """dx = dy * act'(x), given input ``x`` and output ``y``; never writes ``dy``
    unless ``out is dy``."""
    return get_activation_fns(name).backward(be.xp, dy, x, y, out, alpha)


@reference_op
def bias_activation(be, name: str, z, b, out=None, alpha: float = 0.0):
    """y = act(z + b) with ``b`` broadcast over rows (``b`` may be None); ``out`` may be ``z``."""
    if b is not None:
        z = be.xp.add(z, b, out=out)
        out = z
    return get_activation_fns(name).forward(be.xp, z, out, alpha)


@reference_op
def bias_activation_backward(be, name: str, dy, x, y, dz=None, db=None, alpha: float = 0.0):
    """dz = dy * act'(x) and, when ``db`` is given, db[...] = dz summed over rows.

    ``x`` is the pre-activation (may be None for activations that need only ``y``).
    Returns ``dz``.
    """
    dz = get_activation_fns(name).backward(be.xp, dy, x, y, dz, alpha)
    if db is not None:
        be.xp.sum(dz.reshape(-1, dz.shape[-1]), axis=0, out=db)
    return dz
