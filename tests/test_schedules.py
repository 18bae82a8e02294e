"""Learning-rate schedules: Keras formulas, PyTorch schedulers as oracles, and their use as an
optimizer's ``learning_rate``."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fastnn import optimizers, schedules

STEPS = np.arange(0, 40)


def test_exponential_decay():
    s = schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    np.testing.assert_allclose([s(t) for t in STEPS], 0.1 * 0.5 ** (STEPS / 10), rtol=1e-15)
    stairs = schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5, staircase=True)
    assert [stairs(t) for t in (0, 9, 10, 19, 20)] == [0.1, 0.1, 0.05, 0.05, 0.025]


def test_step_decay_equals_staircase_exponential_decay():
    s = schedules.StepDecay(0.3, decay_steps=7, decay_rate=0.2)
    e = schedules.ExponentialDecay(0.3, decay_steps=7, decay_rate=0.2, staircase=True)
    np.testing.assert_allclose([s(t) for t in STEPS], [e(t) for t in STEPS], rtol=1e-15)
    assert s(6) == 0.3 and s(7) == pytest.approx(0.06)


def test_inverse_time_and_polynomial_decay():
    inv = schedules.InverseTimeDecay(0.5, decay_steps=4, decay_rate=2.0)
    np.testing.assert_allclose([inv(t) for t in STEPS], 0.5 / (1 + 2.0 * STEPS / 4), rtol=1e-15)
    poly = schedules.PolynomialDecay(1.0, decay_steps=10, end_learning_rate=0.1, power=2.0)
    expected = 0.9 * (1 - np.minimum(STEPS, 10) / 10) ** 2 + 0.1
    np.testing.assert_allclose([poly(t) for t in STEPS], expected, rtol=1e-15)
    cyc = schedules.PolynomialDecay(1.0, decay_steps=10, end_learning_rate=0.0, cycle=True)
    assert cyc(0) == 1.0 and cyc(10) == 0.0 and cyc(15) == pytest.approx(0.25)


def test_piecewise_constant_decay_follows_keras_boundaries():
    s = schedules.PiecewiseConstantDecay([3, 6], [1.0, 0.5, 0.1])
    assert [s(t) for t in range(9)] == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.1, 0.1]


def test_cosine_decay_without_warmup():
    s = schedules.CosineDecay(0.2, decay_steps=20, alpha=0.1)
    t = np.minimum(STEPS, 20)
    expected = 0.2 * (0.9 * 0.5 * (1 + np.cos(np.pi * t / 20)) + 0.1)
    np.testing.assert_allclose([s(int(x)) for x in STEPS], expected, rtol=1e-14)
    assert s(0) == 0.2 and s(20) == pytest.approx(0.02) and s(100) == pytest.approx(0.02)


def test_cosine_decay_with_linear_warmup():
    s = schedules.CosineDecay(0.0, decay_steps=10, alpha=0.1, warmup_target=1.0, warmup_steps=5)
    np.testing.assert_allclose([s(t) for t in range(6)], [0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert s(10) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert s(15) == pytest.approx(0.1) and s(1000) == pytest.approx(0.1)


def test_cosine_decay_restarts_periods():
    s = schedules.CosineDecayRestarts(1.0, first_decay_steps=4, t_mul=2.0, m_mul=0.5)
    assert s(0) == 1.0 and s(2) == pytest.approx(0.5)
    assert s(4) == pytest.approx(0.5), "second period starts at m_mul * the first peak"
    assert s(8) == pytest.approx(0.25)  # halfway through the 8-step second period
    assert s(12) == pytest.approx(0.25), "third period starts after 4 + 8 steps"


@pytest.mark.torch
def test_schedules_match_torch_schedulers():
    torch = pytest.importorskip("torch")

    def torch_rates(make, n=40, lr=0.1):
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
        sched = make(opt)
        rates = []
        for _ in range(n):
            rates.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return np.array(rates)

    lr_sched = torch.optim.lr_scheduler
    cases = [
        (schedules.StepDecay(0.1, decay_steps=6, decay_rate=0.3),
         lambda o: lr_sched.StepLR(o, step_size=6, gamma=0.3)),
        (schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.9),
         lambda o: lr_sched.ExponentialLR(o, gamma=0.9)),
        (schedules.CosineDecay(0.1, decay_steps=25, alpha=0.05),
         lambda o: lr_sched.CosineAnnealingLR(o, T_max=25, eta_min=0.005)),
    ]
    for ours, make in cases:
        expected = torch_rates(make)
        # torch's cosine rises again after T_max (no clamp): compare its first period only.
        n = 26 if isinstance(ours, schedules.CosineDecay) else len(expected)
        np.testing.assert_allclose([ours(t) for t in range(n)], expected[:n], rtol=1e-9,
                                   err_msg=repr(ours))


ALL = [
    schedules.ExponentialDecay(0.1, 10, 0.5, staircase=True),
    schedules.StepDecay(0.1, 10, 0.5),
    schedules.InverseTimeDecay(0.1, 10, 0.5),
    schedules.PolynomialDecay(0.1, 10, 0.01, power=0.5, cycle=True),
    schedules.PiecewiseConstantDecay([10, 20], [0.1, 0.01, 0.001]),
    schedules.CosineDecay(0.0, 10, alpha=0.1, warmup_target=0.1, warmup_steps=3),
    schedules.CosineDecayRestarts(0.1, 5, t_mul=1.0, m_mul=0.9, alpha=0.01),
]


@pytest.mark.parametrize("schedule", ALL, ids=lambda s: type(s).__name__)
def test_config_round_trip(schedule):
    rebuilt = type(schedule)(**schedule.get_config())
    assert [rebuilt(t) for t in range(30)] == [schedule(t) for t in range(30)]
    assert type(schedule).__name__ in repr(schedule)


@pytest.mark.parametrize("name", ["SGD", "Adam", "Nadam", "RMSprop"])
def test_schedule_as_learning_rate(backend, name):
    """The optimizer calls the schedule with its step count, from 0: with the same schedule,
    feeding the scheduled rates one by one as floats gives the same parameters."""
    sched = schedules.CosineDecay(0.0, decay_steps=6, warmup_target=0.2, warmup_steps=2)
    grads = [backend.asarray(np.linspace(-1, 1, 7) * (k + 1)) for k in range(5)]
    p_sched = backend.asarray(np.ones(7))
    p_float = backend.asarray(np.ones(7))
    opt_sched = getattr(optimizers, name)(learning_rate=sched, backend=backend)
    opt_float = getattr(optimizers, name)(learning_rate=1.0, backend=backend)
    for step, g in enumerate(grads):
        assert opt_sched.current_learning_rate() == sched(step)
        opt_float.learning_rate = sched(step)
        opt_sched.update([p_sched], [g])
        opt_float.update([p_float], [g])
    np.testing.assert_array_equal(backend.to_numpy(p_sched), backend.to_numpy(p_float))
    assert opt_sched.get_config()["learning_rate"] == sched.get_config()


def test_first_step_of_warmup_from_zero_leaves_sgd_parameters():
    sched = schedules.CosineDecay(0.0, decay_steps=4, warmup_target=1.0, warmup_steps=2)
    p = np.ones(3)
    opt = optimizers.SGD(learning_rate=sched, backend="numpy")
    opt.update([p], [np.ones(3)])
    np.testing.assert_array_equal(p, 1.0)
    opt.update([p], [np.ones(3)])
    np.testing.assert_allclose(p, 0.5)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: schedules.ExponentialDecay(0.1, 0, 0.5),
         "ExponentialDecay: decay_steps must be a finite number > 0"),
        (lambda: schedules.StepDecay(0.1, 2.5), "StepDecay: decay_steps must be an integer"),
        (lambda: schedules.CosineDecay(-0.1, 10),
         "CosineDecay: initial_learning_rate must be a finite number >= 0"),
        (lambda: schedules.PiecewiseConstantDecay([1, 2], [0.1]),
         "PiecewiseConstantDecay: values must have one more entry than boundaries"),
        (lambda: schedules.PiecewiseConstantDecay([2, 1], [0.1, 0.2, 0.3]),
         "PiecewiseConstantDecay: boundaries must be strictly increasing"),
        (lambda: schedules.StepDecay(0.1, 3)(-1), "StepDecay: step must be >= 0"),
    ],
)
def test_invalid_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()
