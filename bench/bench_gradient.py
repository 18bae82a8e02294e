"""Backpropagation against central-difference numerical differentiation (float64).

Cases come from :mod:`fastnn.bench.gradient` (the ``fastnn bench --suite gradient``
builders): one full gradient of 64-50-10 on a digits minibatch of 100 by backprop and by
numerical differentiation, per backend; 784-100-10 by backprop and numerically over a
random sample of coordinates (the time of the sample only; ``extra_info`` gives the factor
to extrapolate); the whole-training comparison on digits. Every test first checks that the
two gradients agree. Run::

    pytest bench/bench_gradient.py --benchmark-only
"""

from __future__ import annotations

import pytest

import fastnn
from fastnn.backends import NAMES, unavailable_reason
from fastnn.bench import gradient
from fastnn.bench.case import Contender
from fastnn.bench.pedantic import run_contender

BATCH = 100
SAMPLE = 500
BACKPROP_ROUNDS = 10
NUMERICAL_ROUNDS = 3
TRAIN_STEPS = 10
#: Largest scale-relative difference of backprop and central differences in float64.
AGREEMENT = 1e-6


def _backend(name: str):
    reason = unavailable_reason(name)
    if reason is not None:
        pytest.skip(reason)
    return fastnn.get_backend(name)


def _contender(name: str, fn, be, **info) -> Contender:
    return Contender(name, fn, be.synchronize, be.num_threads(), be.device,
                     info={"dtype": gradient.DTYPE, "batch": BATCH, **info})


@pytest.mark.parametrize("method", ["backprop", "numerical"])
@pytest.mark.parametrize("backend_name", NAMES)
def test_gradient_digits(benchmark, backend_name, method):
    """One full gradient of 64-50-10 on 100 digits."""
    be = _backend(backend_name)
    model, x, y = gradient.digits_problem(be, BATCH)
    diff = gradient.max_relative_difference(gradient.analytic_gradients(model, x, y),
                                            gradient.numerical_gradients(model, x, y))
    assert diff < AGREEMENT, f"backprop and numerical gradients differ by {diff:.3e}"
    if method == "backprop":
        fn, rounds = (lambda: model.loss_gradients(x, y)), BACKPROP_ROUNDS
    else:
        fn, rounds = (lambda: gradient.numerical_gradients(model, x, y)), NUMERICAL_ROUNDS
    benchmark.group = f"gradient 64-50-10 digits batch {BATCH} float64"
    contender = _contender(f"{backend_name}/{method}", fn, be,
                           layers=list(gradient.DIGITS_LAYERS), max_rel_diff=diff)
    run_contender(benchmark, contender, rounds, warmup=1 if method == "numerical" else 2)


@pytest.mark.parametrize("method", ["backprop", "numerical-sampled"])
def test_gradient_wide(benchmark, method):
    """784-100-10 on numpy: backprop, or numerical over SAMPLE coordinates (not extrapolated:
    multiply by ``extra_info['extrapolation_factor']``)."""
    be = _backend("numpy")
    model, x, y = gradient.wide_problem(be, BATCH)
    coords = gradient.sampled_coordinates(model, SAMPLE)
    n_params = sum(int(p.size) for _, p, _ in model.named_parameters())
    analytic = gradient.analytic_gradients(model, x, y)
    picked = [analytic[k].reshape(-1)[i] for k, i in coords]
    numerical = gradient.sampled_numerical(model, x, y, coords)
    diff = gradient.max_relative_difference([picked], [numerical])
    assert diff < AGREEMENT, f"backprop and numerical gradients differ by {diff:.3e}"
    if method == "backprop":
        fn, rounds = (lambda: model.loss_gradients(x, y)), BACKPROP_ROUNDS
    else:
        fn, rounds = (lambda: gradient.sampled_numerical(model, x, y, coords)), NUMERICAL_ROUNDS
    benchmark.group = f"gradient 784-100-10 random batch {BATCH} float64"
    contender = _contender(f"numpy/{method}", fn, be, layers=list(gradient.WIDE_LAYERS),
                           max_rel_diff=diff, sampled_coordinates=len(coords),
                           extrapolation_factor=n_params / len(coords))
    run_contender(benchmark, contender, rounds, warmup=1)


def test_training_comparison(benchmark):
    """Train 64-50-10 on digits with numerical gradients and with backprop, same steps."""
    _backend("numpy")
    rows = benchmark.pedantic(gradient.training_rows, args=("numpy", BATCH, TRAIN_STEPS),
                              rounds=1, iterations=1)
    bp, num = rows
    benchmark.group = "training comparison 64-50-10 digits"
    benchmark.extra_info.update(
        backend="numpy", dtype=gradient.DTYPE, batch=BATCH, steps=TRAIN_STEPS,
        backprop_s=bp.median_s, numerical_s=num.median_s,
        time_ratio=num.median_s / bp.median_s,
        accuracy_backprop=bp.info["test_accuracy"], accuracy_numerical=num.info["test_accuracy"],
        threads=bp.info["threads"],
    )
    assert abs(bp.info["test_accuracy"] - num.info["test_accuracy"]) < 0.05
