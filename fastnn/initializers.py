"""Weight initializers with Keras names; all draw from a seeded NumPy generator.

An initializer is called as ``init(shape, rng, fan_in=None, fan_out=None)`` and returns a
float64 NumPy array; the layer casts it to its dtype and moves it to its backend, so the
same seed gives the same weights on every backend.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

InitFn = Callable[..., np.ndarray]


def compute_fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) for Dense kernels (in, out) and conv kernels (out, in, *k)."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = int(np.prod(shape[2:]))
    return shape[1] * receptive, shape[0] * receptive


class Initializer:
    """Base class: subclasses implement ``sample(shape, rng, fan_in, fan_out)``."""

    def __call__(
        self,
        shape: tuple[int, ...],
        rng: np.random.Generator,
        fan_in: int | None = None,
        fan_out: int | None = None,
    ) -> np.ndarray:
        """Draw an array of ``shape`` (float64)."""
        default_in, default_out = compute_fans(tuple(shape))
        fan_in = default_in if fan_in is None else fan_in
        fan_out = default_out if fan_out is None else fan_out
        return np.asarray(self.sample(tuple(shape), rng, fan_in, fan_out), dtype=np.float64)

    def sample(self, shape, rng, fan_in, fan_out) -> np.ndarray:  # pragma: no cover
        """Draw the values; overridden by subclasses."""
        raise NotImplementedError

    def get_config(self) -> dict:
        """Constructor arguments, for saving."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class Zeros(Initializer):
    """All zeros."""

    def sample(self, shape, rng, fan_in, fan_out):
        """Zeros of ``shape``."""
        return np.zeros(shape)


class Ones(Initializer):
    """All ones."""

    def sample(self, shape, rng, fan_in, fan_out):
        """Ones of ``shape``."""
        return np.ones(shape)


class Constant(Initializer):
    """Every entry equal to ``value``."""

    def __init__(self, value: float = 0.0) -> None:
        self.value = float(value)

    def sample(self, shape, rng, fan_in, fan_out):
        """``value`` everywhere."""
        return np.full(shape, self.value)

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {"value": self.value}


class RandomNormal(Initializer):
    """Normal(mean, stddev)."""

    def __init__(self, mean: float = 0.0, stddev: float = 0.05) -> None:
        self.mean = float(mean)
        self.stddev = float(stddev)

    def sample(self, shape, rng, fan_in, fan_out):
        """Normal draws."""
        return rng.normal(self.mean, self.stddev, size=shape)

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {"mean": self.mean, "stddev": self.stddev}


class RandomUniform(Initializer):
    """Uniform(minval, maxval)."""

    def __init__(self, minval: float = -0.05, maxval: float = 0.05) -> None:
        self.minval = float(minval)
        self.maxval = float(maxval)

    def sample(self, shape, rng, fan_in, fan_out):
        """Uniform draws."""
        return rng.uniform(self.minval, self.maxval, size=shape)

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {"minval": self.minval, "maxval": self.maxval}


class VarianceScaling(Initializer):
    """Keras's variance scaling: variance = scale / fan, normal (truncated) or uniform.

    ``mode`` picks fan: ``fan_in``, ``fan_out`` or ``fan_avg``; ``distribution`` is
    ``truncated_normal`` (cut at 2 standard deviations, rescaled so the variance holds),
    ``untruncated_normal`` or ``uniform``.
    """

    # Standard deviation of a unit normal truncated to [-2, 2].
    TRUNCATED_STD = 0.87962566103423978

    def __init__(
        self, scale: float = 1.0, mode: str = "fan_in", distribution: str = "truncated_normal"
    ) -> None:
        if scale <= 0:
            raise ValueError(f"VarianceScaling: scale must be positive. Received: scale={scale}")
        if mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ValueError(
                f"VarianceScaling: mode must be fan_in, fan_out or fan_avg. Received: mode={mode!r}"
            )
        if distribution not in ("truncated_normal", "untruncated_normal", "uniform"):
            raise ValueError(
                "VarianceScaling: distribution must be truncated_normal, untruncated_normal or "
                f"uniform. Received: distribution={distribution!r}"
            )
        self.scale = float(scale)
        self.mode = mode
        self.distribution = distribution

    def sample(self, shape, rng, fan_in, fan_out):
        """Draws with variance scale / fan."""
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}
        variance = self.scale / max(1.0, fan[self.mode])
        if self.distribution == "uniform":
            limit = math.sqrt(3.0 * variance)
            return rng.uniform(-limit, limit, size=shape)
        if self.distribution == "untruncated_normal":
            return rng.normal(0.0, math.sqrt(variance), size=shape)
        std = math.sqrt(variance) / self.TRUNCATED_STD
        return truncated_normal(rng, shape, std)

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {"scale": self.scale, "mode": self.mode, "distribution": self.distribution}


def truncated_normal(rng: np.random.Generator, shape, stddev: float, mean: float = 0.0):
    """Normal(mean, stddev) draws, redrawn until within two standard deviations."""
    out = rng.normal(0.0, 1.0, size=shape)
    bad = np.abs(out) > 2.0
    while bad.any():
        out[bad] = rng.normal(0.0, 1.0, size=int(bad.sum()))
        bad = np.abs(out) > 2.0
    return mean + stddev * out


class GlorotUniform(VarianceScaling):
    """Glorot/Xavier uniform: U(-l, l), l = sqrt(6 / (fan_in + fan_out))."""

    def __init__(self) -> None:
        super().__init__(1.0, "fan_avg", "uniform")

    def get_config(self) -> dict:
        """No arguments."""
        return {}


class GlorotNormal(VarianceScaling):
    """Glorot/Xavier normal: truncated normal with variance 2 / (fan_in + fan_out)."""

    def __init__(self) -> None:
        super().__init__(1.0, "fan_avg", "truncated_normal")

    def get_config(self) -> dict:
        """No arguments."""
        return {}


class HeNormal(VarianceScaling):
    """He normal: truncated normal with variance 2 / fan_in (for ReLU)."""

    def __init__(self) -> None:
        super().__init__(2.0, "fan_in", "truncated_normal")

    def get_config(self) -> dict:
        """No arguments."""
        return {}


class HeUniform(VarianceScaling):
    """He uniform: U(-l, l), l = sqrt(6 / fan_in)."""

    def __init__(self) -> None:
        super().__init__(2.0, "fan_in", "uniform")

    def get_config(self) -> dict:
        """No arguments."""
        return {}


_REGISTRY: dict[str, type[Initializer]] = {
    "zeros": Zeros,
    "ones": Ones,
    "constant": Constant,
    "random_normal": RandomNormal,
    "random_uniform": RandomUniform,
    "variance_scaling": VarianceScaling,
    "glorot_uniform": GlorotUniform,
    "glorot_normal": GlorotNormal,
    "he_normal": HeNormal,
    "he_uniform": HeUniform,
}
_ALIASES = {"xavier_uniform": "glorot_uniform", "xavier_normal": "glorot_normal"}


def register(name: str, cls: type[Initializer]) -> None:
    """Make ``cls`` available under the Keras-style string ``name``."""
    _REGISTRY[name] = cls


def get(identifier: str | Initializer | None, default: str = "glorot_uniform") -> Initializer:
    """An initializer from a Keras name or an instance; ValueError listing valid names."""
    if identifier is None:
        identifier = default
    if isinstance(identifier, Initializer):
        return identifier
    if isinstance(identifier, str):
        key = _ALIASES.get(identifier.lower(), identifier.lower())
        if key in _REGISTRY:
            return _REGISTRY[key]()
        valid = ", ".join(sorted(_REGISTRY))
        raise ValueError(f"unknown initializer {identifier!r}; valid names: {valid}")
    raise TypeError(
        f"initializer must be a name or an Initializer, received {type(identifier).__name__}"
    )
