"""Weight initializers with Keras names; all draw from a seeded NumPy generator.

An initializer is called as ``init(shape, rng, fan_in=None, fan_out=None)`` and returns a
float64 NumPy array; the layer casts it to its dtype and moves it to its backend, so the
same seed gives the same weights on every backend.

Random initializers draw from ``rng`` (the layer's backend generator, seeded with
``fastnn.set_seed``) unless they were given their own ``seed=``: then, as in Keras 3, every
call returns the same values.

Variances (fan_in / fan_out from :func:`compute_fans`; truncated normals are cut at two
standard deviations and, in the variance-scaling family, rescaled so the variance holds):

===================  ==========================================
``glorot_normal``    2 / (fan_in + fan_out)
``glorot_uniform``   U(-l, l), l = sqrt(6 / (fan_in + fan_out))
``he_normal``        2 / fan_in
``he_uniform``       U(-l, l), l = sqrt(6 / fan_in)
``lecun_normal``     1 / fan_in
``lecun_uniform``    U(-l, l), l = sqrt(3 / fan_in)
``truncated_normal`` stddev 0.05 before truncation (Keras; 0.88 x that after)
``orthogonal``       gain * an orthogonal matrix (Saxe et al. 2014)
===================  ==========================================
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

    #: Own seed of a random initializer (None: draw from the generator passed in).
    seed: int | None = None

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
        if self.seed is not None:
            rng = np.random.default_rng(self.seed)
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

    def __init__(self, mean: float = 0.0, stddev: float = 0.05, seed: int | None = None) -> None:
        self.mean = float(mean)
        self.stddev = _positive("RandomNormal", "stddev", stddev)
        self.seed = seed

    def sample(self, shape, rng, fan_in, fan_out):
        """Normal draws."""
        return rng.normal(self.mean, self.stddev, size=shape)

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


class RandomUniform(Initializer):
    """Uniform(minval, maxval)."""

    def __init__(
        self, minval: float = -0.05, maxval: float = 0.05, seed: int | None = None
    ) -> None:
        if not float(minval) < float(maxval):
            raise ValueError(
                f"RandomUniform: minval must be below maxval. Received: minval={minval}, "
                f"maxval={maxval}"
            )
        self.minval = float(minval)
        self.maxval = float(maxval)
        self.seed = seed

    def sample(self, shape, rng, fan_in, fan_out):
        """Uniform draws."""
        return rng.uniform(self.minval, self.maxval, size=shape)

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {"minval": self.minval, "maxval": self.maxval, "seed": self.seed}


class VarianceScaling(Initializer):
    """Keras's variance scaling: variance = scale / fan, normal (truncated) or uniform.

    ``mode`` picks fan: ``fan_in``, ``fan_out`` or ``fan_avg``; ``distribution`` is
    ``truncated_normal`` (cut at 2 standard deviations, rescaled so the variance holds),
    ``untruncated_normal`` or ``uniform``.
    """

    # Standard deviation of a unit normal truncated to [-2, 2].
    TRUNCATED_STD = 0.87962566103423978

    def __init__(
        self,
        scale: float = 1.0,
        mode: str = "fan_in",
        distribution: str = "truncated_normal",
        seed: int | None = None,
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
        self.seed = seed

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
        return {
            "scale": self.scale,
            "mode": self.mode,
            "distribution": self.distribution,
            "seed": self.seed,
        }


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

    def __init__(self, seed: int | None = None) -> None:
        super().__init__(1.0, "fan_avg", "uniform", seed=seed)

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {"seed": self.seed}


class GlorotNormal(VarianceScaling):
    """Glorot/Xavier normal: truncated normal with variance 2 / (fan_in + fan_out)."""

    def __init__(self, seed: int | None = None) -> None:
        super().__init__(1.0, "fan_avg", "truncated_normal", seed=seed)

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {"seed": self.seed}


class HeNormal(VarianceScaling):
    """He normal: truncated normal with variance 2 / fan_in (for ReLU)."""

    def __init__(self, seed: int | None = None) -> None:
        super().__init__(2.0, "fan_in", "truncated_normal", seed=seed)

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {"seed": self.seed}


class HeUniform(VarianceScaling):
    """He uniform: U(-l, l), l = sqrt(6 / fan_in)."""

    def __init__(self, seed: int | None = None) -> None:
        super().__init__(2.0, "fan_in", "uniform", seed=seed)

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {"seed": self.seed}


class LecunNormal(VarianceScaling):
    """LeCun normal: truncated normal with variance 1 / fan_in (for SELU networks)."""

    def __init__(self, seed: int | None = None) -> None:
        super().__init__(1.0, "fan_in", "truncated_normal", seed=seed)

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {"seed": self.seed}


class LecunUniform(VarianceScaling):
    """LeCun uniform: U(-l, l), l = sqrt(3 / fan_in)."""

    def __init__(self, seed: int | None = None) -> None:
        super().__init__(1.0, "fan_in", "uniform", seed=seed)

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {"seed": self.seed}


class TruncatedNormal(Initializer):
    """Normal(mean, stddev) redrawn outside [mean - 2 stddev, mean + 2 stddev] (Keras).

    ``stddev`` is that of the normal before truncation; the draws' standard deviation is
    about 0.88 * stddev.
    """

    def __init__(self, mean: float = 0.0, stddev: float = 0.05, seed: int | None = None) -> None:
        self.mean = float(mean)
        self.stddev = _positive("TruncatedNormal", "stddev", stddev)
        self.seed = seed

    def sample(self, shape, rng, fan_in, fan_out):
        """Truncated normal draws."""
        return truncated_normal(rng, shape, self.stddev, self.mean)

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


class Orthogonal(Initializer):
    """A (semi-)orthogonal matrix times ``gain`` (Saxe et al. 2014), Keras's recipe.

    The shape is flattened to (prod(shape[:-1]), shape[-1]); a standard normal matrix of
    that shape is factored by QR, Q's columns are multiplied by the signs of R's diagonal
    (so the result is uniformly distributed), and rows or columns are orthonormal,
    whichever are fewer.

    Args:
        gain: multiplier of the orthogonal matrix.
        seed: own seed (see the module docstring).
    """

    def __init__(self, gain: float = 1.0, seed: int | None = None) -> None:
        self.gain = float(gain)
        self.seed = seed

    def sample(self, shape, rng, fan_in, fan_out):
        """Orthogonal draws."""
        if len(shape) < 2:
            raise ValueError(
                f"Orthogonal: needs a shape of at least 2 dimensions, received shape {shape}"
            )
        rows = int(np.prod(shape[:-1]))
        cols = int(shape[-1])
        a = rng.standard_normal((max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(a)
        q *= np.sign(np.diag(r))
        if rows < cols:
            q = q.T
        return self.gain * q.reshape(shape)

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {"gain": self.gain, "seed": self.seed}


class Identity(Initializer):
    """``gain`` times the identity matrix (2-D shapes only; rectangular ones get ones on the
    main diagonal)."""

    def __init__(self, gain: float = 1.0) -> None:
        self.gain = float(gain)

    def sample(self, shape, rng, fan_in, fan_out):
        """gain * eye."""
        if len(shape) != 2:
            raise ValueError(f"Identity: needs a 2-D shape, received shape {shape}")
        return self.gain * np.eye(shape[0], shape[1])

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {"gain": self.gain}


def _positive(where: str, key: str, value: float) -> float:
    """``value`` as a float; ValueError naming ``where`` unless finite and > 0."""
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{where}: {key} must be a finite number > 0. Received: {key}={value!r}")
    return v


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
    "lecun_normal": LecunNormal,
    "lecun_uniform": LecunUniform,
    "truncated_normal": TruncatedNormal,
    "orthogonal": Orthogonal,
    "identity": Identity,
}
#: Other accepted spellings (Keras's among them).
_ALIASES = {
    "xavier_uniform": "glorot_uniform",
    "xavier_normal": "glorot_normal",
    "zero": "zeros",
    "one": "ones",
    "normal": "random_normal",
    "uniform": "random_uniform",
}


def register(name: str, cls: type[Initializer]) -> None:
    """Make ``cls`` available under the Keras-style string ``name``."""
    _REGISTRY[name] = cls


def names() -> list[str]:
    """Every accepted initializer string (class names in any case are accepted too)."""
    return sorted({*_REGISTRY, *_ALIASES})


def get(identifier: str | Initializer | None, default: str = "glorot_uniform") -> Initializer:
    """An initializer from a Keras name or an instance; ValueError listing valid names."""
    if identifier is None:
        identifier = default
    if isinstance(identifier, Initializer):
        return identifier
    if isinstance(identifier, str):
        key = identifier.strip().lower()
        key = _ALIASES.get(key, key)
        if key not in _REGISTRY:
            # Keras class names in any case: "GlorotUniform", "HeNormal", ...
            by_class = {cls.__name__.lower(): name for name, cls in _REGISTRY.items()}
            key = by_class.get(key.replace("_", ""), key)
        if key in _REGISTRY:
            return _REGISTRY[key]()
        valid = ", ".join(names())
        raise ValueError(f"unknown initializer {identifier!r}; valid names: {valid}")
    raise TypeError(
        f"initializer must be a name or an Initializer, received {type(identifier).__name__}"
    )
