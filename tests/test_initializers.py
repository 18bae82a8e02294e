"""Initializers: empirical moments against the formulas, seeding, names, use in layers."""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastnn
from fastnn import Dense, initializers

SHAPE = (400, 300)  # (fan_in, fan_out) of a Dense kernel: 120 000 draws
FAN_IN, FAN_OUT = SHAPE
# Variance of a unit normal truncated to [-2, 2].
TRUNC_VAR = 0.7737413161
# Relative tolerance of an empirical variance over 120 000 draws (std of the estimate is
# about sqrt(2 / 120000) = 0.4 % for a normal; 3 % is more than 5 sigma).
VAR_RTOL = 0.03

EXPECTED_VARIANCE = {
    "random_normal": 0.05**2,
    "random_uniform": (0.1**2) / 12,
    "truncated_normal": 0.05**2 * TRUNC_VAR,
    "glorot_normal": 2.0 / (FAN_IN + FAN_OUT),
    "glorot_uniform": 2.0 / (FAN_IN + FAN_OUT),
    "he_normal": 2.0 / FAN_IN,
    "he_uniform": 2.0 / FAN_IN,
    "lecun_normal": 1.0 / FAN_IN,
    "lecun_uniform": 1.0 / FAN_IN,
}


@pytest.mark.parametrize("name", sorted(EXPECTED_VARIANCE))
def test_empirical_variance_matches_formula(name):
    w = initializers.get(name)(SHAPE, np.random.default_rng(0))
    assert w.shape == SHAPE and w.dtype == np.float64
    assert abs(w.mean()) < 4 * math.sqrt(EXPECTED_VARIANCE[name] / w.size)
    assert w.var() == pytest.approx(EXPECTED_VARIANCE[name], rel=VAR_RTOL)


def test_orthogonal_variance_matches_formula():
    # Unit-norm columns of length rows: sum of squares = cols, variance = gain^2 / rows
    # (the QR of a 400 x 300 matrix is slow with contended BLAS threads: a smaller shape).
    rows, cols = 120, 90
    w = initializers.Orthogonal(gain=1.5)((rows, cols), np.random.default_rng(0))
    assert (w * w).mean() == pytest.approx(1.5**2 / rows, rel=1e-12)
    assert w.var() == pytest.approx(1.5**2 / rows, rel=VAR_RTOL)


@pytest.mark.parametrize("name,limit", [
    ("glorot_uniform", math.sqrt(6 / (FAN_IN + FAN_OUT))),
    ("he_uniform", math.sqrt(6 / FAN_IN)),
    ("lecun_uniform", math.sqrt(3 / FAN_IN)),
    ("random_uniform", 0.05),
])
def test_uniform_limits(name, limit):
    w = initializers.get(name)(SHAPE, np.random.default_rng(1))
    assert np.abs(w).max() <= limit
    assert np.abs(w).max() > 0.99 * limit


@pytest.mark.parametrize("name,std", [
    ("truncated_normal", 0.05),
    ("glorot_normal", math.sqrt(2 / (FAN_IN + FAN_OUT)) / math.sqrt(TRUNC_VAR)),
    ("he_normal", math.sqrt(2 / FAN_IN) / math.sqrt(TRUNC_VAR)),
    ("lecun_normal", math.sqrt(1 / FAN_IN) / math.sqrt(TRUNC_VAR)),
])
def test_truncated_at_two_standard_deviations(name, std):
    w = initializers.get(name)(SHAPE, np.random.default_rng(2))
    assert np.abs(w).max() <= 2 * std
    assert np.abs(w).max() > 1.99 * std


def test_he_normal_on_conv_kernel_uses_receptive_field():
    shape = (64, 16, 3, 3)  # (out, in, kh, kw): fan_in = 16 * 9
    w = initializers.get("he_normal")(shape, np.random.default_rng(3))
    assert w.var() == pytest.approx(2.0 / (16 * 9), rel=VAR_RTOL)


@pytest.mark.parametrize("shape", [(6, 4), (4, 6), (3, 2, 5)])
@pytest.mark.parametrize("gain", [1.0, 0.5])
def test_orthogonal_is_orthogonal(shape, gain):
    w = initializers.Orthogonal(gain=gain)(shape, np.random.default_rng(4))
    m = w.reshape(-1, shape[-1])
    small = min(m.shape)
    gram = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T
    np.testing.assert_allclose(gram, gain**2 * np.eye(small), atol=1e-12)


def test_constant_zeros_ones_identity():
    rng = np.random.default_rng(5)
    np.testing.assert_array_equal(initializers.get("zeros")((2, 3), rng), 0.0)
    np.testing.assert_array_equal(initializers.get("ones")((2, 3), rng), 1.0)
    np.testing.assert_array_equal(initializers.Constant(0.7)((2, 3), rng), 0.7)
    np.testing.assert_array_equal(initializers.Identity(2.0)((2, 3), rng), 2.0 * np.eye(2, 3))


SEEDED = [
    initializers.RandomNormal, initializers.RandomUniform, initializers.TruncatedNormal,
    initializers.GlorotNormal, initializers.GlorotUniform, initializers.HeNormal,
    initializers.HeUniform, initializers.LecunNormal, initializers.LecunUniform,
    initializers.Orthogonal,
]


@pytest.mark.parametrize("cls", SEEDED, ids=lambda c: c.__name__)
def test_seeded(cls):
    a = cls(seed=7)((5, 4), np.random.default_rng(100))
    b = cls(seed=7)((5, 4), np.random.default_rng(200))
    c = cls(seed=8)((5, 4), np.random.default_rng(100))
    np.testing.assert_array_equal(a, b)  # the own seed wins over the generator passed in
    assert not np.array_equal(a, c)
    unseeded = cls()
    d = unseeded((5, 4), np.random.default_rng(9))
    e = unseeded((5, 4), np.random.default_rng(9))
    np.testing.assert_array_equal(d, e)
    assert cls(seed=7).get_config()["seed"] == 7


def test_same_seed_gives_same_weights_on_every_backend():
    weights = []
    for name in fastnn.available():
        fastnn.set_seed(11)
        layer = Dense(5, kernel_initializer="lecun_normal", backend=name, input_shape=(3,))
        layer.build((3,))
        weights.append(fastnn.get_backend(name).to_numpy(layer.params["W"]))
    for w in weights[1:]:
        np.testing.assert_array_equal(w, weights[0])


KERAS_NAMES = {
    "zeros": initializers.Zeros, "ones": initializers.Ones, "constant": initializers.Constant,
    "random_normal": initializers.RandomNormal, "random_uniform": initializers.RandomUniform,
    "truncated_normal": initializers.TruncatedNormal,
    "glorot_normal": initializers.GlorotNormal, "glorot_uniform": initializers.GlorotUniform,
    "he_normal": initializers.HeNormal, "he_uniform": initializers.HeUniform,
    "lecun_normal": initializers.LecunNormal, "lecun_uniform": initializers.LecunUniform,
    "orthogonal": initializers.Orthogonal, "identity": initializers.Identity,
    "GlorotUniform": initializers.GlorotUniform, "TruncatedNormal": initializers.TruncatedNormal,
    "LecunNormal": initializers.LecunNormal, "xavier_uniform": initializers.GlorotUniform,
}


@pytest.mark.parametrize("name", sorted(KERAS_NAMES))
def test_keras_names(name):
    assert type(initializers.get(name)) is KERAS_NAMES[name]


def test_every_listed_name_works_in_dense(backend):
    for name in initializers.names():
        layer = Dense(4, kernel_initializer=name, backend=backend, input_shape=(4,))
        layer.build((4,))
        assert np.isfinite(backend.to_numpy(layer.params["W"])).all(), name


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown initializer 'he_norm'; valid names: .*lecun"):
        initializers.get("he_norm")


def test_bad_arguments():
    with pytest.raises(ValueError, match="stddev must be"):
        initializers.TruncatedNormal(stddev=0)
    with pytest.raises(ValueError, match="minval must be below maxval"):
        initializers.RandomUniform(1.0, 0.0)
    with pytest.raises(ValueError, match="Orthogonal: needs a shape of at least 2"):
        initializers.Orthogonal()((5,), np.random.default_rng(0))
