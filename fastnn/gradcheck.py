"""Numerical differentiation and gradient checking of layers, models and losses."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fastnn.errors import GradcheckError

#: Central-difference step for float64 (truncation ~h^2, rounding ~1e-16 / h).
DEFAULT_EPS = 1e-6
#: A one-sided slope jump larger than this (relative) marks a kink, which is skipped.
KINK_TOL = 1e-3


def numerical_gradient(f: Callable[[], float], x: Any, eps: float = DEFAULT_EPS) -> Any:
    """Central-difference gradient of the scalar ``f()`` with respect to array ``x``.

    ``x`` is perturbed in place, one element at a time, and restored exactly; ``f`` takes
    no arguments and must read ``x`` (the book's ``numerical_gradient(f, x)`` with a
    closure). Works on NumPy and CuPy arrays. Returns an array shaped like ``x``.
    """
    grad, _ = _central_differences(f, x, eps, detect_kinks=False)
    return grad


def _central_differences(f, x, eps, detect_kinks):
    """Gradient by central differences and a boolean mask of kinked elements."""
    host_grad = np.zeros(x.shape, dtype=np.float64)
    kinks = np.zeros(x.shape, dtype=bool)
    flat = x.reshape(-1)
    if flat.base is None and x.size > 0 and not _shares_memory(flat, x):
        raise ValueError("numerical_gradient: x must be contiguous so it can be perturbed")
    f0 = float(f()) if detect_kinks else 0.0
    for i in range(x.size):
        original = flat[i].item()
        flat[i] = original + eps
        fp = float(f())
        flat[i] = original - eps
        fm = float(f())
        flat[i] = original
        idx = np.unravel_index(i, x.shape)
        host_grad[idx] = (fp - fm) / (2.0 * eps)
        if detect_kinks:
            right, left = (fp - f0) / eps, (f0 - fm) / eps
            kinks[idx] = abs(right - left) > KINK_TOL * max(1.0, abs(right), abs(left))
    return host_grad, kinks


def _shares_memory(a, b) -> bool:
    try:
        return bool(np.shares_memory(a, b))
    except TypeError:  # CuPy arrays: reshape of a contiguous array is a view
        return True


@dataclass
class TensorReport:
    """Agreement of one gradient tensor: analytic (backprop) against numerical."""

    name: str
    shape: tuple[int, ...]
    max_abs_error: float
    max_rel_error: float  # max |a - n| / max(max |n|, tiny): scale-relative
    worst_index: tuple[int, ...]
    analytic: float
    numerical: float
    skipped_kinks: int = 0
    passed: bool = True


@dataclass
class GradcheckReport:
    """Result of :func:`gradcheck`: one :class:`TensorReport` per checked tensor."""

    target: str
    tensors: list[TensorReport] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Whether every tensor agreed."""
        return all(t.passed for t in self.tensors)

    @property
    def max_rel_error(self) -> float:
        """Largest scale-relative error over all tensors."""
        return max((t.max_rel_error for t in self.tensors), default=0.0)

    def __str__(self) -> str:
        lines = [f"gradcheck of {self.target}: {'passed' if self.passed else 'FAILED'}"]
        for t in self.tensors:
            lines.append(
                f"  {t.name:<24} shape={t.shape!s:<14} max_abs={t.max_abs_error:.3e} "
                f"max_rel={t.max_rel_error:.3e} skipped_kinks={t.skipped_kinks}"
            )
        return "\n".join(lines)


def _as_f64(be, a, what):
    arr = a if be.is_array(a) else be.asarray(np.asarray(a))
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise TypeError(f"gradcheck: {what} must be a numeric array, received dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    host = be.to_numpy(arr)
    if not np.isfinite(host).all():
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(host))[0])
        raise ValueError(
            f"gradcheck: {what} contains a non-finite value {host[bad]} at index {bad}; "
            "gradients are only checked at finite points"
        )
    return be.xp.ascontiguousarray(arr)


def _compare(name, analytic, numerical, kinks, rtol, atol) -> TensorReport:
    a = np.asarray(analytic, dtype=np.float64)
    n = np.asarray(numerical, dtype=np.float64)
    valid = ~kinks
    diff = np.where(valid, np.abs(a - n), 0.0)
    scale = max(float(np.abs(n[valid]).max()) if valid.any() else 0.0, 1e-30)
    worst = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.size else ()
    ok = bool(np.all(np.where(valid, np.abs(a - n) <= atol + rtol * np.abs(n), True)))
    return TensorReport(
        name=name,
        shape=tuple(a.shape),
        max_abs_error=float(diff.max()) if diff.size else 0.0,
        max_rel_error=float(diff.max()) / scale if diff.size else 0.0,
        worst_index=tuple(int(i) for i in worst),
        analytic=float(a[worst]) if diff.size else 0.0,
        numerical=float(n[worst]) if diff.size else 0.0,
        skipped_kinks=int(kinks.sum()),
        passed=ok,
    )


def gradcheck(
    target: Any,
    inputs: Any,
    target_values: Any = None,
    *,
    eps: float = DEFAULT_EPS,
    rtol: float = 1e-5,
    atol: float = 1e-7,
    seed: int = 0,
    check_inputs: bool = True,
    raise_on_failure: bool = True,
    max_kink_fraction: float = 0.1,
) -> GradcheckReport:
    """Check backprop gradients of a layer, model or loss against central differences.

    The target is deep-copied and cast to float64. For a layer (or a model used as a
    layer) the scalar checked is ``sum(forward(x) * g)`` with a random upstream gradient
    ``g``, so a backward that ignores its ``dout`` fails. For a loss, or a compiled model
    given ``target_values``, it is ``loss * g`` for a random scalar ``g``. The input
    gradient and every parameter gradient are compared; elements sitting on a kink (where
    left and right slopes differ, e.g. ReLU at 0) are detected and skipped.

    Args:
        target: a Layer, a Sequential model, or a Loss.
        inputs: input batch (for a loss: the predictions).
        target_values: targets for a loss or a compiled model.
        eps: central-difference step.
        rtol, atol: elementwise tolerance |a - n| <= atol + rtol * |n|.
        seed: seed of the random upstream gradient and of the target's backend RNG
            (reset before every forward pass, so dropout masks repeat).
        check_inputs: whether to check the gradient with respect to ``inputs``.
        raise_on_failure: raise GradcheckError on failure (else just report).
        max_kink_fraction: more skipped elements than this fraction is an error.

    Returns:
        A :class:`GradcheckReport` with max abs/rel errors per tensor.

    Raises:
        GradcheckError: a gradient disagrees; names the target, tensor, index and values.
        ValueError / TypeError: non-finite or non-numeric inputs.
    """
    from fastnn.layers.base import Layer
    from fastnn.losses.base import Loss

    if isinstance(target, Loss):
        return _check_loss(target, inputs, target_values, eps, rtol, atol, seed,
                           raise_on_failure, max_kink_fraction)
    is_model = bool(getattr(target, "is_model", False))
    if not isinstance(target, Layer) and not is_model:
        raise TypeError(
            f"gradcheck: expected a Layer, a model or a Loss, received {type(target).__name__}"
        )
    be = target.backend
    x = _as_f64(be, inputs, "input")
    subject = copy.deepcopy(target)
    if is_model:
        subject.cast(np.float64)
        if not subject.built:
            subject.build(tuple(x.shape[1:]))
    else:
        subject.cast(np.float64)
        subject.ensure_built(x)
    label = subject.describe() if hasattr(subject, "describe") else type(subject).__name__

    if is_model and target_values is not None:
        run = _model_loss_runner(subject, x, target_values, be, seed)
    else:
        run = _layer_runner(subject, x, be, seed)
    return _finish(label, run, subject, x, check_inputs, eps, rtol, atol, raise_on_failure,
                   max_kink_fraction)


def _named_params(subject):
    if hasattr(subject, "named_parameters"):
        return list(subject.named_parameters())
    return [(k, subject.params[k], subject.grads[k]) for k in subject.params]


def _layer_runner(subject, x, be, seed):
    g_rng = np.random.default_rng(seed + 1)
    state = {}

    def forward():
        be.seed(seed)
        return subject.forward(x, training=True)

    y = forward()
    # A layer with several outputs (e.g. an RNN with return_state) returns a tuple; each
    # output gets its own random upstream gradient and backward takes the tuple.
    if isinstance(y, tuple):
        g = tuple(be.asarray(g_rng.standard_normal(o.shape)) for o in y)
    else:
        g = be.asarray(g_rng.standard_normal(y.shape))
    state["g"] = g

    def scalar() -> float:
        out = forward()
        if isinstance(out, tuple):
            return float(sum(float((o * gi).sum()) for o, gi in zip(out, g, strict=True)))
        return float((out * g).sum())

    def backprop():
        forward()
        if hasattr(subject, "zero_grads"):
            subject.zero_grads()
        if isinstance(g, tuple):
            return subject.backward(tuple(gi.copy() for gi in g))
        return subject.backward(g.copy())

    return scalar, backprop


def _model_loss_runner(model, x, y, be, seed):
    g = float(np.random.default_rng(seed + 1).uniform(0.5, 1.5))
    y_arr = model.prepare_targets(y) if hasattr(model, "prepare_targets") else y

    def scalar() -> float:
        be.seed(seed)
        return g * model.loss_value(x, y_arr, training=True)

    def backprop():
        be.seed(seed)
        model.zero_grads()
        return model.loss_gradients(x, y_arr, dout=g)

    return scalar, backprop


def _finish(label, run, subject, x, check_inputs, eps, rtol, atol, raise_on_failure,
            max_kink_fraction) -> GradcheckReport:
    scalar, backprop = run
    dx = backprop()
    report = GradcheckReport(label)
    tensors: list[tuple[str, Any, Any]] = []
    if check_inputs:
        if dx is None:
            raise GradcheckError(f"gradcheck of {label}: backward returned no input gradient")
        tensors.append(("input", x, dx))
    for name, p, grad in _named_params(subject):
        tensors.append((name, p, grad.copy()))
    be = subject.backend
    for name, arr, analytic in tensors:
        numerical, kinks = _central_differences(scalar, arr, eps, detect_kinks=True)
        t = _compare(name, be.to_numpy(analytic), numerical, kinks, rtol, atol)
        report.tensors.append(t)
        too_many_kinks = kinks.size > 0 and kinks.mean() > max_kink_fraction
        if raise_on_failure and too_many_kinks:
            raise GradcheckError(
                f"gradcheck of {label}: {int(kinks.sum())} of {kinks.size} elements of "
                f"{name!r} sit on kinks; choose inputs away from non-differentiable points"
            )
    if raise_on_failure and not report.passed:
        bad = next(t for t in report.tensors if not t.passed)
        raise GradcheckError(
            f"gradcheck of {label}: gradient of {bad.name!r} (shape {bad.shape}) disagrees at "
            f"index {bad.worst_index}: backprop {bad.analytic!r}, numerical {bad.numerical!r} "
            f"(max abs error {bad.max_abs_error:.3e}, rtol={rtol}, atol={atol})\n{report}"
        )
    return report


def _check_loss(loss, inputs, target_values, eps, rtol, atol, seed, raise_on_failure,
                max_kink_fraction) -> GradcheckReport:
    if target_values is None:
        raise TypeError("gradcheck of a loss needs target_values (the targets)")
    subject = copy.deepcopy(loss)
    be = subject.backend
    pred = _as_f64(be, inputs, "input")
    tgt = target_values
    if be.is_array(tgt) or np.asarray(tgt).dtype.kind == "f":
        tgt = _as_f64(be, tgt, "target")
    rng = np.random.default_rng(seed + 1)
    value = subject.forward(pred, tgt)
    if subject.reduction == "none":
        g = be.asarray(rng.standard_normal(np.shape(value)))

        def scalar() -> float:
            return float((subject.forward(pred, tgt) * g).sum())
    else:
        g = float(rng.uniform(0.5, 1.5))

        def scalar() -> float:
            return g * float(subject.forward(pred, tgt))

    def backprop():
        subject.forward(pred, tgt)
        return subject.backward(g)

    return _finish(subject.describe(), (scalar, backprop), _NoParams(be), pred, True, eps,
                   rtol, atol, raise_on_failure, max_kink_fraction)


class _NoParams:
    """Stand-in subject for losses: no parameters, only a backend."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.params: dict = {}
        self.grads: dict = {}
