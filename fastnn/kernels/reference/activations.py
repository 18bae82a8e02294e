"""Reference elementwise activations, forward and backward, by name.

``ACTIVATIONS`` maps a name to its forward ``f(xp, x, out, alpha)`` and backward
``g(xp, dy, x, y, out, alpha)``. A backward gets both the input ``x`` and the output
``y``; ``uses_input`` marks the activations whose backward reads ``x`` (the others need
only ``y``, so a layer may overwrite its pre-activation in place).

``alpha`` is the one parameter of the parametrised activations (the negative slope of
``leaky_relu``, the saturation of ``elu``). The ops take ``alpha=0.0`` by default, and
``0.0`` selects the activation's Keras default (:func:`resolve_alpha`): ``leaky_relu`` 0.2
(``keras.activations.leaky_relu``; the ``LeakyReLU`` layer passes its own 0.3) and ``elu``
1.0. An alpha of exactly 0 would turn both into ``relu``, which is what the layers map it to.

Every function here is written against ``xp`` and stays finite, without floating-point
warnings, for inputs as large as +-1e4 (and much larger).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

from fastnn.kernels.registry import reference_op


class ActivationFns(NamedTuple):
    """Forward and backward of one elementwise activation.

    ``default_alpha`` is the alpha that ``alpha=0.0`` stands for (0.0: no parameter).
    """

    forward: Callable[..., Any]
    backward: Callable[..., Any]
    uses_input: bool
    default_alpha: float = 0.0


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
    if out is dy:  # dy is read before it is overwritten; costs one temporary
        return xp.multiply(dy, y * (1 - y), out=out)
    out = xp.subtract(1, y, out=out)
    out *= y
    out *= dy
    return out


def _tanh_fwd(xp, x, out, alpha):
    return xp.tanh(x, out=out)


def _tanh_bwd(xp, dy, x, y, out, alpha):
    if out is dy:  # dy is read before it is overwritten; costs one temporary
        return xp.multiply(dy, 1 - y * y, out=out)
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


# -- constants of the parametrised activations ---------------------------------------------
#: SELU's alpha and scale (Klambauer et al. 2017, the values Keras uses).
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
#: GELU tanh approximation: 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))).
GELU_TANH_SCALE = math.sqrt(2.0 / math.pi)
GELU_TANH_CUBIC = 0.044715
#: hard_sigmoid, Keras 3 definition relu6(x + 3) / 6 = clip(x / 6 + 1/2, 0, 1) (Keras 2 used
#: slope 0.2: clip(0.2 x + 0.5, 0, 1)).
HARD_SIGMOID_SLOPE = 1.0 / 6.0
HARD_SIGMOID_OFFSET = 0.5
#: The cap of relu6.
RELU6_CAP = 6.0
#: Keras defaults that ``alpha=0.0`` stands for.
LEAKY_RELU_ALPHA = 0.2
ELU_ALPHA = 1.0

_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_INV_SQRT_PI = 1.0 / math.sqrt(math.pi)
# erf/erfc: the power series below _ERF_SPLIT, the continued fraction above (both accurate to
# a few ulp of float64 with these term counts, measured against math.erf / math.erfc).
_ERF_SPLIT = 2.5
_ERF_SERIES_TERMS = 40
_ERFC_CF_TERMS = 30
# Beyond this |x| erfc(x) is 0 in float64 and exp(-x^2) underflows: clamp to keep x^2 finite.
_ERF_CLAMP = 40.0
# tanh(GELU_TANH_SCALE * (x + GELU_TANH_CUBIC x^3)) is +-1 exactly for |x| beyond this.
_GELU_TANH_CLAMP = 50.0


def resolve_alpha(name: str, alpha: float) -> float:
    """The alpha that activation ``name`` uses for the op argument ``alpha`` (0.0: default)."""
    if alpha == 0.0:
        fns = ACTIVATIONS.get(name)
        return fns.default_alpha if fns is not None else 0.0
    return float(alpha)


def _store(xp, result, out):
    """``result`` written into ``out`` (when given) and returned."""
    if out is None:
        return result
    out[...] = result
    return out


def _erfc(xp, x):
    """Complementary error function, elementwise, accurate to ~1e-13 relative in float64.

    NumPy has no erf; this one is a positive-term power series of erf for |x| < 2.5
    (``erf x = 2/sqrt(pi) exp(-x^2) sum 2^k x^(2k+1) / (2k+1)!!``) and Laplace's continued
    fraction of erfc for |x| >= 2.5. Both branches are evaluated on clamped inputs, so no
    overflow or division by zero can occur.
    """
    a = xp.abs(x)
    small = xp.minimum(a, _ERF_SPLIT)
    x2 = small * small
    term = small.copy()
    total = small.copy()
    for k in range(1, _ERF_SERIES_TERMS):
        term *= x2 * (2.0 / (2 * k + 1))
        total += term
    erf_small = total * xp.exp(-x2) * (2.0 * _INV_SQRT_PI)
    large = xp.clip(a, _ERF_SPLIT, _ERF_CLAMP)
    frac = large.copy()
    for k in range(_ERFC_CF_TERMS, 0, -1):
        frac = large + (0.5 * k) / frac
    erfc_large = xp.exp(-large * large) * _INV_SQRT_PI / frac
    erfc_abs = xp.where(a < _ERF_SPLIT, 1.0 - erf_small, erfc_large)
    # erfc(-a) = 2 - erfc(a); NaN falls through both comparisons and stays NaN.
    result = xp.where(x < 0, 2.0 - erfc_abs, erfc_abs)
    return xp.where(xp.isnan(x), x, result).astype(x.dtype, copy=False)


def _normal_cdf(xp, x):
    """Phi(x) = P(Z <= x) for a standard normal Z, accurate in both tails."""
    return _erfc(xp, x * -_SQRT_HALF) * 0.5


def _normal_pdf(xp, x):
    """phi(x) = exp(-x^2 / 2) / sqrt(2 pi), with x clamped so x^2 never overflows."""
    c = xp.clip(x, -_ERF_CLAMP, _ERF_CLAMP)
    return xp.exp(c * c * -0.5) * _INV_SQRT_2PI


def _softplus(xp, x):
    """log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)): never overflows."""
    r = xp.exp(-xp.abs(x))
    xp.log1p(r, out=r)
    r += xp.maximum(x, 0)
    return r


# -- relu family ---------------------------------------------------------------------------
# No xp.where in the hot paths: with NumPy 2.4 it is 20x slower than arithmetic (measured
# 4 ms vs 0.2 ms on 1M float32 elements here).
def _mask(xp, cond, dtype):
    """The boolean array ``cond`` as 0.0 / 1.0 of ``dtype``."""
    return cond.astype(dtype)


def _leaky_relu_fwd(xp, x, out, alpha):
    a = resolve_alpha("leaky_relu", alpha)
    scaled = x * a
    # x > 0: x >= a x exactly when a <= 1; x < 0: the other way round.
    if a <= 1.0:
        return xp.maximum(x, scaled, out=out)
    return xp.minimum(x, scaled, out=out)


def _leaky_relu_bwd(xp, dy, x, y, out, alpha):
    # With alpha >= 0, y > 0 exactly where x > 0: slope 1 there, alpha elsewhere.
    a = resolve_alpha("leaky_relu", alpha)
    slope = _mask(xp, y > 0, dy.dtype)
    slope *= 1.0 - a
    slope += a
    return xp.multiply(dy, slope, out=out)


def _relu6_fwd(xp, x, out, alpha):
    out = xp.maximum(x, 0, out=out)
    return xp.minimum(out, RELU6_CAP, out=out)


def _relu6_bwd(xp, dy, x, y, out, alpha):
    return xp.multiply(dy, (y > 0) & (y < RELU6_CAP), out=out)


def _elu_fwd(xp, x, out, alpha):
    a = resolve_alpha("elu", alpha)
    neg = xp.expm1(xp.minimum(x, 0))  # 0 where x > 0
    neg *= a
    out = xp.maximum(x, 0, out=out)
    out += neg
    return out


def _elu_bwd(xp, dy, x, y, out, alpha):
    # For x <= 0: d/dx alpha (exp(x) - 1) = alpha exp(x) = y + alpha; 1 for x > 0.
    a = resolve_alpha("elu", alpha)
    slope = xp.minimum(y, 0)
    slope += a
    step = _mask(xp, y > 0, dy.dtype)
    step *= 1.0 - a
    slope += step
    return xp.multiply(dy, slope, out=out)


def _selu_fwd(xp, x, out, alpha):
    neg = xp.expm1(xp.minimum(x, 0))
    neg *= SELU_ALPHA
    out = xp.maximum(x, 0, out=out)
    out += neg
    out *= SELU_SCALE
    return out


def _selu_bwd(xp, dy, x, y, out, alpha):
    # scale for x > 0; for x <= 0: scale alpha exp(x) = y + scale alpha.
    slope = xp.minimum(y, 0)
    slope += SELU_SCALE * SELU_ALPHA
    step = _mask(xp, y > 0, dy.dtype)
    step *= SELU_SCALE - SELU_SCALE * SELU_ALPHA
    slope += step
    return xp.multiply(dy, slope, out=out)


# -- smooth relu-likes --------------------------------------------------------------------
def _gelu_fwd(xp, x, out, alpha):
    return _store(xp, x * _normal_cdf(xp, x), out)


def _gelu_bwd(xp, dy, x, y, out, alpha):
    g = _normal_pdf(xp, x)
    g *= x
    g += _normal_cdf(xp, x)
    g *= dy
    return _store(xp, g, out)


def _gelu_tanh_parts(xp, x):
    """(c, t): x clamped where the tanh saturates, and tanh(sqrt(2/pi) (c + 0.044715 c^3))."""
    c = xp.clip(x, -_GELU_TANH_CLAMP, _GELU_TANH_CLAMP)
    t = c * c
    t *= GELU_TANH_CUBIC
    t += 1
    t *= c
    t *= GELU_TANH_SCALE
    xp.tanh(t, out=t)
    return c, t


def _gelu_tanh_fwd(xp, x, out, alpha):
    _, t = _gelu_tanh_parts(xp, x)
    t += 1
    t *= 0.5
    return _store(xp, x * t, out)


def _gelu_tanh_bwd(xp, dy, x, y, out, alpha):
    c, t = _gelu_tanh_parts(xp, x)
    # d/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)
    inner = c * c
    inner *= 3.0 * GELU_TANH_CUBIC
    inner += 1
    inner *= (1 - t * t) * (0.5 * GELU_TANH_SCALE)
    inner *= c
    t += 1
    t *= 0.5
    t += inner
    t *= dy
    return _store(xp, t, out)


def _silu_fwd(xp, x, out, alpha):
    s = _sigmoid_fwd(xp, x, None, alpha)
    s *= x
    return _store(xp, s, out)


def _silu_bwd(xp, dy, x, y, out, alpha):
    # d/dx x s(x) = s (1 + x (1 - s))
    s = _sigmoid_fwd(xp, x, None, alpha)
    g = 1 - s
    g *= x
    g += 1
    g *= s
    g *= dy
    return _store(xp, g, out)


def _hard_silu_fwd(xp, x, out, alpha):
    h = _hard_sigmoid_fwd(xp, x, None, alpha)
    h *= x
    return _store(xp, h, out)


def _hard_silu_bwd(xp, dy, x, y, out, alpha):
    h = _hard_sigmoid_fwd(xp, x, None, alpha)
    inside = (h > 0) & (h < 1)
    g = x * inside
    g *= HARD_SIGMOID_SLOPE
    g += h
    g *= dy
    return _store(xp, g, out)


def _mish_fwd(xp, x, out, alpha):
    t = xp.tanh(_softplus(xp, x))
    t *= x
    return _store(xp, t, out)


def _mish_bwd(xp, dy, x, y, out, alpha):
    # d/dx x tanh(sp(x)) = tanh(sp) + x (1 - tanh(sp)^2) sigmoid(x)
    t = xp.tanh(_softplus(xp, x))
    g = 1 - t * t
    g *= x
    g *= _sigmoid_fwd(xp, x, None, alpha)
    g += t
    g *= dy
    return _store(xp, g, out)


def _softplus_fwd(xp, x, out, alpha):
    return _store(xp, _softplus(xp, x), out)


def _softplus_bwd(xp, dy, x, y, out, alpha):
    # sigmoid(x) = 1 - exp(-softplus(x)) = -expm1(-y): exact in both tails.
    g = xp.expm1(-y)
    g *= dy
    return xp.negative(g, out=out)


# -- squashing ----------------------------------------------------------------------------
def _softsign_fwd(xp, x, out, alpha):
    d = xp.abs(x)
    d += 1
    return xp.divide(x, d, out=out)


def _softsign_bwd(xp, dy, x, y, out, alpha):
    # 1 / (1 + |x|)^2, from x: (1 - |y|)^2 would lose digits as |y| nears 1.
    # Divided twice rather than by d * d, which overflows for |x| > 1e154.
    d = xp.abs(x)
    d += 1
    out = xp.divide(dy, d, out=out)
    return xp.divide(out, d, out=out)


def _hard_sigmoid_fwd(xp, x, out, alpha):
    out = xp.multiply(x, HARD_SIGMOID_SLOPE, out=out)
    out += HARD_SIGMOID_OFFSET
    return xp.clip(out, 0, 1, out=out)


def _hard_sigmoid_bwd(xp, dy, x, y, out, alpha):
    out = xp.multiply(dy, (y > 0) & (y < 1), out=out)
    out *= HARD_SIGMOID_SLOPE
    return out


ACTIVATIONS: dict[str, ActivationFns] = {
    "linear": ActivationFns(_linear_fwd, _linear_bwd, False),
    "relu": ActivationFns(_relu_fwd, _relu_bwd, False),
    "sigmoid": ActivationFns(_sigmoid_fwd, _sigmoid_bwd, False),
    "tanh": ActivationFns(_tanh_fwd, _tanh_bwd, False),
    "step": ActivationFns(_step_fwd, _step_bwd, False),
    "leaky_relu": ActivationFns(_leaky_relu_fwd, _leaky_relu_bwd, False, LEAKY_RELU_ALPHA),
    "relu6": ActivationFns(_relu6_fwd, _relu6_bwd, False),
    "elu": ActivationFns(_elu_fwd, _elu_bwd, False, ELU_ALPHA),
    "selu": ActivationFns(_selu_fwd, _selu_bwd, False),
    "gelu": ActivationFns(_gelu_fwd, _gelu_bwd, True),
    "gelu_tanh": ActivationFns(_gelu_tanh_fwd, _gelu_tanh_bwd, True),
    "silu": ActivationFns(_silu_fwd, _silu_bwd, True),
    "hard_silu": ActivationFns(_hard_silu_fwd, _hard_silu_bwd, True),
    "mish": ActivationFns(_mish_fwd, _mish_bwd, True),
    "softplus": ActivationFns(_softplus_fwd, _softplus_bwd, False),
    "softsign": ActivationFns(_softsign_fwd, _softsign_bwd, True),
    "hard_sigmoid": ActivationFns(_hard_sigmoid_fwd, _hard_sigmoid_bwd, False),
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
