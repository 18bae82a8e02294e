"""Learning-rate schedules: callables ``schedule(step) -> float`` usable as ``learning_rate=``.

An optimizer calls its schedule once per update with ``step`` = the number of updates done so
far (0 for the first), as Keras does with ``optimizer.iterations``. Names, arguments and
formulas follow ``keras.optimizers.schedules``; :class:`StepDecay` is PyTorch's ``StepLR``
counted in steps. Reduce-on-plateau, which needs the validation loss, is a callback
(``fastnn.callbacks.ReduceLROnPlateau``) that sets the optimizer's ``learning_rate``.

Every schedule has ``get_config()`` returning its constructor arguments, so
``type(s)(**s.get_config())`` rebuilds it (checkpoints rely on this).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence


class LearningRateSchedule:
    """Base of the schedules: ``schedule(step) -> float`` for integer ``step >= 0``."""

    def __call__(self, step: int) -> float:
        """The learning rate of update number ``step`` (counted from 0)."""
        step = int(step)
        if step < 0:
            raise ValueError(f"{type(self).__name__}: step must be >= 0. Received: step={step}")
        return float(self._value(step))

    def _value(self, step: int) -> float:
        raise NotImplementedError  # pragma: no cover

    def get_config(self) -> dict:
        """Constructor arguments."""
        raise NotImplementedError  # pragma: no cover

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _positive(owner: str, label: str, value: float) -> float:
    value = float(value)
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"{owner}: {label} must be a finite number > 0. Received: "
                         f"{label}={value}")
    return value


def _nonnegative(owner: str, label: str, value: float) -> float:
    value = float(value)
    if not value >= 0 or not math.isfinite(value):
        raise ValueError(f"{owner}: {label} must be a finite number >= 0. Received: "
                         f"{label}={value}")
    return value


class ExponentialDecay(LearningRateSchedule):
    """``initial_learning_rate * decay_rate ** (step / decay_steps)`` (Keras).

    With ``staircase`` the exponent is ``step // decay_steps`` (a step function).

    Args:
        initial_learning_rate: the rate at step 0.
        decay_steps: steps per factor of ``decay_rate``.
        decay_rate: the factor applied every ``decay_steps`` steps.
        staircase: decay at discrete intervals.
    """

    def __init__(self, initial_learning_rate: float, decay_steps: int, decay_rate: float,
                 staircase: bool = False) -> None:
        name = type(self).__name__
        self.initial_learning_rate = _nonnegative(name, "initial_learning_rate",
                                                  initial_learning_rate)
        self.decay_steps = _positive(name, "decay_steps", decay_steps)
        self.decay_rate = _nonnegative(name, "decay_rate", decay_rate)
        self.staircase = bool(staircase)

    def _value(self, step: int) -> float:
        p = step / self.decay_steps
        if self.staircase:
            p = math.floor(p)
        return self.initial_learning_rate * self.decay_rate**p

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "decay_rate": self.decay_rate,
                "staircase": self.staircase}


class StepDecay(LearningRateSchedule):
    """``initial_learning_rate * decay_rate ** (step // decay_steps)``: PyTorch's ``StepLR``
    (``step_size=decay_steps``, ``gamma=decay_rate``) stepped once per update, the same as
    ``ExponentialDecay(..., staircase=True)``.

    Args:
        initial_learning_rate: the rate at step 0.
        decay_steps: steps between two decays (torch's ``step_size``).
        decay_rate: multiplicative factor of each decay (torch's ``gamma``, default 0.1).
    """

    def __init__(self, initial_learning_rate: float, decay_steps: int,
                 decay_rate: float = 0.1) -> None:
        name = type(self).__name__
        self.initial_learning_rate = _nonnegative(name, "initial_learning_rate",
                                                  initial_learning_rate)
        if int(decay_steps) != decay_steps or decay_steps < 1:
            raise ValueError(f"{name}: decay_steps must be an integer >= 1. Received: "
                             f"decay_steps={decay_steps}")
        self.decay_steps = int(decay_steps)
        self.decay_rate = _nonnegative(name, "decay_rate", decay_rate)

    def _value(self, step: int) -> float:
        return self.initial_learning_rate * self.decay_rate ** (step // self.decay_steps)

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "decay_rate": self.decay_rate}


class InverseTimeDecay(LearningRateSchedule):
    """``initial_learning_rate / (1 + decay_rate * step / decay_steps)`` (Keras); with
    ``staircase`` the ratio ``step / decay_steps`` is floored.

    Args:
        initial_learning_rate: the rate at step 0.
        decay_steps: how often to apply the decay.
        decay_rate: the decay rate.
        staircase: decay at discrete intervals.
    """

    def __init__(self, initial_learning_rate: float, decay_steps: int, decay_rate: float,
                 staircase: bool = False) -> None:
        name = type(self).__name__
        self.initial_learning_rate = _nonnegative(name, "initial_learning_rate",
                                                  initial_learning_rate)
        self.decay_steps = _positive(name, "decay_steps", decay_steps)
        self.decay_rate = _nonnegative(name, "decay_rate", decay_rate)
        self.staircase = bool(staircase)

    def _value(self, step: int) -> float:
        p = step / self.decay_steps
        if self.staircase:
            p = math.floor(p)
        return self.initial_learning_rate / (1.0 + self.decay_rate * p)

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "decay_rate": self.decay_rate,
                "staircase": self.staircase}


class PolynomialDecay(LearningRateSchedule):
    """Polynomial decay from ``initial_learning_rate`` to ``end_learning_rate`` (Keras):
    ``(initial - end) * (1 - s / decay_steps) ** power + end`` with ``s = min(step,
    decay_steps)``; with ``cycle``, ``decay_steps`` is instead multiplied by
    ``ceil(step / decay_steps)`` (at least 1) so the decay restarts.

    Args:
        initial_learning_rate: the rate at step 0.
        decay_steps: steps to reach ``end_learning_rate``.
        end_learning_rate: the final rate (default 0.0001).
        power: exponent of the polynomial (default 1, linear).
        cycle: restart after ``decay_steps``.
    """

    def __init__(self, initial_learning_rate: float, decay_steps: int,
                 end_learning_rate: float = 0.0001, power: float = 1.0,
                 cycle: bool = False) -> None:
        name = type(self).__name__
        self.initial_learning_rate = _nonnegative(name, "initial_learning_rate",
                                                  initial_learning_rate)
        self.decay_steps = _positive(name, "decay_steps", decay_steps)
        self.end_learning_rate = _nonnegative(name, "end_learning_rate", end_learning_rate)
        self.power = _nonnegative(name, "power", power)
        self.cycle = bool(cycle)

    def _value(self, step: int) -> float:
        decay_steps = self.decay_steps
        if self.cycle:
            decay_steps = decay_steps * max(1.0, math.ceil(step / decay_steps))
            s = float(step)
        else:
            s = min(float(step), decay_steps)
        fraction = 1.0 - s / decay_steps
        span = self.initial_learning_rate - self.end_learning_rate
        return span * fraction**self.power + self.end_learning_rate

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "end_learning_rate": self.end_learning_rate,
                "power": self.power, "cycle": self.cycle}


class PiecewiseConstantDecay(LearningRateSchedule):
    """Constant pieces (Keras): ``values[0]`` while ``step <= boundaries[0]``, ``values[1]``
    while ``boundaries[0] < step <= boundaries[1]``, ..., ``values[-1]`` after the last.

    Args:
        boundaries: strictly increasing step numbers, one fewer than ``values``.
        values: the learning rate of each piece.
    """

    def __init__(self, boundaries: Sequence[int], values: Sequence[float]) -> None:
        name = type(self).__name__
        self.boundaries = [int(b) for b in boundaries]
        self.values = [_nonnegative(name, "values[i]", v) for v in values]
        if len(self.values) != len(self.boundaries) + 1:
            raise ValueError(
                f"{name}: values must have one more entry than boundaries. Received: "
                f"{len(self.boundaries)} boundaries and {len(self.values)} values"
            )
        if any(b >= c for b, c in zip(self.boundaries[:-1], self.boundaries[1:], strict=True)):
            raise ValueError(f"{name}: boundaries must be strictly increasing. Received: "
                             f"boundaries={self.boundaries}")

    def _value(self, step: int) -> float:
        return self.values[bisect.bisect_left(self.boundaries, step)]

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {"boundaries": list(self.boundaries), "values": list(self.values)}


class CosineDecay(LearningRateSchedule):
    """Cosine decay with optional linear warm-up (Keras 3 ``CosineDecay``; Loshchilov &
    Hutter, 2017, without restarts).

    Without warm-up (``warmup_target`` None): for ``s = min(step, decay_steps)``,
    ``initial_learning_rate * ((1 - alpha) * 0.5 * (1 + cos(pi * s / decay_steps)) + alpha)``.
    With warm-up: the rate rises linearly from ``initial_learning_rate`` to
    ``warmup_target`` over ``warmup_steps`` steps, then decays from ``warmup_target`` as above
    over the next ``decay_steps`` steps, and stays at ``alpha * warmup_target`` after.

    Args:
        initial_learning_rate: the rate at step 0.
        decay_steps: length of the cosine decay.
        alpha: the final rate as a fraction of the decayed-from rate (default 0).
        warmup_target: the rate reached at the end of the warm-up (None: no warm-up).
        warmup_steps: length of the warm-up (default 0).
    """

    def __init__(self, initial_learning_rate: float, decay_steps: int, alpha: float = 0.0,
                 warmup_target: float | None = None, warmup_steps: int = 0) -> None:
        name = type(self).__name__
        self.initial_learning_rate = _nonnegative(name, "initial_learning_rate",
                                                  initial_learning_rate)
        self.decay_steps = _positive(name, "decay_steps", decay_steps)
        self.alpha = _nonnegative(name, "alpha", alpha)
        self.warmup_target = (None if warmup_target is None
                              else _nonnegative(name, "warmup_target", warmup_target))
        self.warmup_steps = _nonnegative(name, "warmup_steps", warmup_steps)

    def _decay(self, s: float, start: float) -> float:
        cosine = 0.5 * (1.0 + math.cos(math.pi * s / self.decay_steps))
        return start * ((1.0 - self.alpha) * cosine + self.alpha)

    def _value(self, step: int) -> float:
        if self.warmup_target is None:
            return self._decay(min(float(step), self.decay_steps), self.initial_learning_rate)
        s = min(float(step), self.decay_steps + self.warmup_steps)
        if s < self.warmup_steps:
            rise = self.warmup_target - self.initial_learning_rate
            return rise * (s / self.warmup_steps) + self.initial_learning_rate
        return self._decay(s - self.warmup_steps, self.warmup_target)

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "alpha": self.alpha,
                "warmup_target": self.warmup_target, "warmup_steps": self.warmup_steps}


class CosineDecayRestarts(LearningRateSchedule):
    """Cosine decay with warm restarts (SGDR; Keras ``CosineDecayRestarts``).

    The first period lasts ``first_decay_steps``; each next one ``t_mul`` times longer and
    starts from ``m_mul`` times the previous peak. Within a period of completed fraction
    ``f``: ``peak * ((1 - alpha) * 0.5 * (1 + cos(pi f)) + alpha)``.

    Args:
        initial_learning_rate: the rate at step 0.
        first_decay_steps: length of the first period.
        t_mul: factor of each period's length (default 2).
        m_mul: factor of each period's initial rate (default 1).
        alpha: the minimum as a fraction of ``initial_learning_rate`` (default 0).
    """

    def __init__(self, initial_learning_rate: float, first_decay_steps: int, t_mul: float = 2.0,
                 m_mul: float = 1.0, alpha: float = 0.0) -> None:
        name = type(self).__name__
        self.initial_learning_rate = _nonnegative(name, "initial_learning_rate",
                                                  initial_learning_rate)
        self.first_decay_steps = _positive(name, "first_decay_steps", first_decay_steps)
        self.t_mul = _positive(name, "t_mul", t_mul)
        self.m_mul = _nonnegative(name, "m_mul", m_mul)
        self.alpha = _nonnegative(name, "alpha", alpha)

    def _value(self, step: int) -> float:
        fraction = step / self.first_decay_steps
        if self.t_mul == 1.0:
            restart = math.floor(fraction)
            fraction -= restart
        else:
            restart = math.floor(math.log(1.0 - fraction * (1.0 - self.t_mul))
                                 / math.log(self.t_mul))
            done = (1.0 - self.t_mul**restart) / (1.0 - self.t_mul)
            fraction = (fraction - done) / self.t_mul**restart
        cosine = 0.5 * self.m_mul**restart * (1.0 + math.cos(math.pi * fraction))
        return self.initial_learning_rate * ((1.0 - self.alpha) * cosine + self.alpha)

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {"initial_learning_rate": self.initial_learning_rate,
                "first_decay_steps": self.first_decay_steps, "t_mul": self.t_mul,
                "m_mul": self.m_mul, "alpha": self.alpha}


__all__ = [
    "CosineDecay",
    "CosineDecayRestarts",
    "ExponentialDecay",
    "InverseTimeDecay",
    "LearningRateSchedule",
    "PiecewiseConstantDecay",
    "PolynomialDecay",
    "StepDecay",
]
