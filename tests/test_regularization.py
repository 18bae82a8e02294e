"""Regularizers, Dropout and the shape-only layers."""

from __future__ import annotations

import numpy as np
import pytest

import fastnn
from fastnn import Dense, Dropout, Flatten, Input, Reshape, Sequential, gradcheck, regularizers


@pytest.mark.parametrize(
    "reg, expected",
    [
        (regularizers.L1(0.1), 0.1 * 6.0),
        (regularizers.L2(0.1), 0.1 * 14.0),
        (regularizers.L1L2(l1=0.1, l2=0.2), 0.1 * 6.0 + 0.2 * 14.0),
    ],
)
def test_penalty_values(backend, reg, expected):
    w = backend.asarray(np.array([1.0, -2.0, 3.0]))
    assert reg.penalty(w) == pytest.approx(expected)


def test_penalty_gradient_matches_numerical(backend):
    reg = regularizers.L1L2(l1=0.3, l2=0.7)
    w = backend.asarray(np.array([[0.5, -1.5], [2.0, -0.25]]))
    grad = backend.xp.zeros_like(w)
    reg.add_gradient(w, grad, scale=2.0)
    numerical = fastnn.numerical_gradient(lambda: 2.0 * reg.penalty(w), w)
    np.testing.assert_allclose(backend.to_numpy(grad), numerical, rtol=1e-6)


def test_regularized_model_gradcheck_includes_penalty(backend):
    model = Sequential(
        [
            Dense(4, activation="tanh", input_dim=3, kernel_regularizer=regularizers.L2(0.05),
                  bias_regularizer="l1", bias_initializer=fastnn.initializers.Constant(0.3)),
            Dense(2, kernel_regularizer=regularizers.L1L2(0.01, 0.02)),
        ],
        backend=backend,
    )
    model.compile("sgd", "mse")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    report = gradcheck(model, x, y)
    assert report.max_rel_error < 1e-6
    # The penalty really is part of the loss: dropping it changes the value.
    plain = Sequential([Dense(4, activation="tanh", input_dim=3), Dense(2)], backend=backend)
    plain.compile("sgd", "mse")
    plain.set_weights(model.get_weights())
    xb = backend.asarray(x.astype(np.float32))
    yb = backend.asarray(y.astype(np.float32))
    assert model.loss_value(xb, yb) > plain.loss_value(xb, yb)


def test_unknown_regularizer_name():
    with pytest.raises(ValueError, match="unknown regularizer 'l3'; valid names"):
        Dense(2, kernel_regularizer="l3")


def test_negative_coefficient():
    with pytest.raises(ValueError, match="Received: l2=-1"):
        regularizers.L2(-1)


# -- Dropout ------------------------------------------------------------------------------


def test_dropout_is_identity_at_inference(backend):
    layer = Dropout(0.5, backend=backend)
    x = backend.asarray(np.ones((4, 5), dtype=np.float32))
    assert backend.to_numpy(layer.forward(x, training=False)).tolist() == np.ones((4, 5)).tolist()


def test_dropout_scales_kept_units_and_reuses_mask(backend):
    layer = Dropout(0.25, backend=backend, dtype="float64")
    backend.seed(3)
    x = backend.asarray(np.ones((200, 50)))
    y = backend.to_numpy(layer.forward(x, training=True))
    kept = y != 0
    np.testing.assert_allclose(y[kept], 1 / 0.75)
    assert abs(kept.mean() - 0.75) < 0.02
    dx = backend.to_numpy(layer.backward(backend.asarray(np.full((200, 50), 2.0))))
    np.testing.assert_allclose(dx, np.where(kept, 2.0 / 0.75, 0.0))


def test_dropout_seeded(backend):
    layer = Dropout(0.5, backend=backend)
    x = backend.asarray(np.ones((10, 10), dtype=np.float32))
    backend.seed(7)
    a = backend.to_numpy(layer.forward(x, training=True)).copy()
    backend.seed(7)
    b = backend.to_numpy(layer.forward(x, training=True))
    np.testing.assert_array_equal(a, b)


def test_dropout_gradcheck_and_noise_shape(backend):
    assert gradcheck(Dropout(0.4, backend=backend), np.random.rand(3, 4)).passed
    layer = Dropout(0.5, noise_shape=(None, 2, 1), backend=backend, dtype="float64")
    backend.seed(1)
    y = backend.to_numpy(layer.forward(backend.asarray(np.ones((3, 2, 6))), training=True))
    # the mask is shared along the last axis
    assert (y == y[:, :, :1]).all()
    assert gradcheck(Dropout(0.5, noise_shape=(None, 2, 1), backend=backend),
                     np.random.rand(3, 2, 6)).passed


@pytest.mark.parametrize("rate", [-0.1, 1.0, 2])
def test_dropout_bad_rate(rate):
    with pytest.raises(ValueError, match="Dropout: rate must be in"):
        Dropout(rate)


# -- shape layers -----------------------------------------------------------------------


def test_flatten_reshape_roundtrip_gradcheck(backend):
    x = np.random.default_rng(1).standard_normal((2, 3, 4))
    assert gradcheck(Flatten(backend=backend), x).passed
    assert gradcheck(Reshape((4, -1), backend=backend), x).passed
    layer = Reshape((1, 12), backend=backend, dtype="float64")
    assert layer.forward(backend.asarray(x)).shape == (2, 1, 12)


def test_reshape_errors():
    with pytest.raises(ValueError, match="at most one -1"):
        Reshape((-1, -1))
    layer = Reshape((5,), dtype="float64")
    with pytest.raises(ValueError, match=r"cannot reshape samples of shape \(3, 4\)"):
        layer.forward(np.zeros((2, 3, 4)))


def test_input_layer_builds_model():
    model = Sequential([Input((3, 4)), Flatten(), Dense(2)])
    assert model.built
    assert model.output_shape == (2,)
    assert model.count_params() == 12 * 2 + 2
