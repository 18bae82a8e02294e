"""Dense and the core activation layers: gradients, backend parity, errors."""

from __future__ import annotations

import numpy as np
import pytest

import fastnn
from fastnn import Activation, Dense, gradcheck
from tests.conftest import assert_close

CORE_ACTIVATIONS = ["linear", "relu", "sigmoid", "tanh", "softmax", "log_softmax"]


@pytest.mark.parametrize("activation", CORE_ACTIVATIONS)
@pytest.mark.parametrize("use_bias", [True, False])
def test_dense_gradcheck(backend, activation, use_bias):
    layer = Dense(4, activation=activation, use_bias=use_bias, backend=backend)
    x = np.random.default_rng(0).standard_normal((3, 5))
    report = gradcheck(layer, x)
    assert report.max_rel_error < 1e-6


def test_dense_on_3d_input_acts_on_last_axis(backend):
    layer = Dense(3, activation="relu", backend=backend)
    report = gradcheck(layer, np.random.default_rng(1).standard_normal((2, 4, 5)))
    assert report.passed
    assert not layer.built  # gradcheck built and checked a copy, not the original
    y = layer.forward(backend.asarray(np.ones((2, 4, 5), dtype=np.float32)))
    assert y.shape == (2, 4, 3)


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh", "softmax", "step", "linear"])
def test_activation_layer_gradcheck(backend, activation):
    layer = Activation(activation, backend=backend)
    x = np.random.default_rng(2).standard_normal((3, 6))
    if activation == "step":
        # The step function has zero gradient almost everywhere: documented, and checked.
        layer = Activation("step", backend=backend, dtype="float64")
        y = layer.forward(backend.asarray(x))
        np.testing.assert_array_equal(backend.to_numpy(y), (x > 0).astype(float))
        dx = layer.backward(backend.asarray(np.ones_like(x)))
        np.testing.assert_array_equal(backend.to_numpy(dx), 0.0)
        return
    assert gradcheck(layer, x).max_rel_error < 1e-6


def test_softmax_along_axis_1_of_3d(backend):
    layer = fastnn.Softmax(axis=1, backend=backend)
    assert gradcheck(layer, np.random.default_rng(3).standard_normal((2, 3, 4))).passed


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("activation", CORE_ACTIVATIONS)
def test_dense_matches_numpy_reference(backend, reference, activation, dtype):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((7, 5)).astype(dtype)
    dy = rng.standard_normal((7, 4)).astype(dtype)
    results = []
    for be in (reference, backend):
        be.seed(11)
        layer = Dense(4, activation=activation, backend=be, dtype=dtype)
        y = layer.forward(be.asarray(x), training=True)
        dx = layer.backward(be.asarray(dy))
        results.append([be.to_numpy(a) for a in (y, dx, layer.grads["W"], layer.grads["b"])])
    for name, ref, got in zip(["y", "dx", "dW", "db"], *results, strict=True):
        assert_close(got, ref, dtype, what=f"{backend.name} {activation} {name}")


def test_backward_does_not_modify_dout(backend):
    layer = Dense(3, activation="relu", backend=backend, dtype="float64")
    x = backend.asarray(np.random.default_rng(5).standard_normal((4, 2)))
    layer.forward(x)
    dout = backend.asarray(np.random.default_rng(6).standard_normal((4, 3)))
    before = backend.to_numpy(dout).copy()
    layer.backward(dout)
    np.testing.assert_array_equal(backend.to_numpy(dout), before)


def test_gradients_written_in_place(backend):
    layer = Dense(3, backend=backend, dtype="float64")
    x = backend.asarray(np.ones((2, 4)))
    layer.forward(x)
    grad_ref = layer.grads["W"]
    layer.backward(backend.asarray(np.ones((2, 3))))
    assert layer.grads["W"] is grad_ref
    np.testing.assert_allclose(backend.to_numpy(grad_ref), 2.0)


# -- errors -----------------------------------------------------------------------------


def test_wrong_feature_count_names_layer_and_shapes():
    layer = Dense(64, input_dim=128)
    x = np.zeros((32, 100), dtype=np.float32)
    with pytest.raises(ValueError) as info:
        layer.forward(x)
    assert str(info.value) == (
        "Dense(64).forward: expected input of shape (None, 128), received shape (32, 100)"
    )
    layer.forward(np.zeros((2, 128), dtype=np.float32))
    with pytest.raises(ValueError, match=r"Dense\(64\).forward: expected input with 128 "
                                         r"features, received shape \(32, 100\)"):
        layer.forward(x)


def test_wrong_dtype_names_layer():
    layer = Dense(4)
    with pytest.raises(TypeError, match=r"Dense\(4\).forward: expected float32 input .* "
                                        r"received float64 with shape \(2, 3\)"):
        layer.forward(np.zeros((2, 3)))
    with pytest.raises(TypeError, match="expected float32 input"):
        layer.forward(np.zeros((2, 3), dtype=np.int64))


def test_list_input_is_a_clear_type_error():
    with pytest.raises(TypeError, match=r"Dense\(4\).forward: expected a numpy.ndarray"):
        Dense(4).forward([[1.0, 2.0]])


def test_unknown_activation_lists_valid_names():
    with pytest.raises(ValueError) as info:
        Dense(4, activation="relu6x")
    msg = str(info.value)
    assert "Dense(4): unknown activation 'relu6x'; valid names:" in msg
    assert "relu" in msg and "softmax" in msg


@pytest.mark.parametrize("units", [0, -3, 2.5, "8", True])
def test_bad_units(units):
    with pytest.raises(ValueError, match=r"Received: units="):
        Dense(units)


def test_backward_before_forward():
    with pytest.raises(RuntimeError, match="called before forward"):
        Dense(2).backward(np.zeros((1, 2), dtype=np.float32))


def test_backward_shape_mismatch():
    layer = Dense(2)
    layer.forward(np.zeros((3, 4), dtype=np.float32))
    with pytest.raises(ValueError, match=r"expected dout of shape \(3, 2\)"):
        layer.backward(np.zeros((3, 3), dtype=np.float32))


def test_bad_dtype_argument():
    with pytest.raises(ValueError, match="dtype must be float32 or float64, received int32"):
        Dense(2, dtype="int32")
