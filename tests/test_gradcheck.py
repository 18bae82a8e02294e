"""The gradient-checking API itself: it must pass correct layers and catch broken ones."""

from __future__ import annotations

import numpy as np
import pytest

import fastnn
from fastnn import Dense, GradcheckError, gradcheck, numerical_gradient
from fastnn.layers.base import Layer


def test_numerical_gradient_of_a_known_function(backend):
    xp = backend.xp
    x = backend.asarray(np.array([[0.3, -1.2], [2.0, 0.5]]))
    grad = numerical_gradient(lambda: float((x**3).sum() + xp.sin(x).sum()), x)
    expected = 3 * backend.to_numpy(x) ** 2 + np.cos(backend.to_numpy(x))
    np.testing.assert_allclose(grad, expected, rtol=1e-8, atol=1e-9)
    # x is restored exactly after perturbation
    np.testing.assert_array_equal(backend.to_numpy(x), [[0.3, -1.2], [2.0, 0.5]])


class _ForgetsDout(Layer):
    """A broken layer: its backward ignores the upstream gradient (returns ones * w)."""

    def build_params(self, input_shape):
        self.add_param("w", (1,), "ones")

    def _forward(self, x, training):
        return x * self.params["w"]

    def _backward(self, dout):
        self.grads["w"][...] = self._last_x_sum
        return self.backend.xp.ones_like(dout) * self.params["w"]

    def forward(self, x, training=False):
        self._last_x_sum = float(x.sum()) if self.built else 0.0
        y = super().forward(x, training)
        self._last_x_sum = float(x.sum())
        return y


def test_gradcheck_catches_a_backward_that_ignores_dout(backend):
    layer = _ForgetsDout(backend=backend, dtype="float64")
    x = np.random.default_rng(0).standard_normal((3, 4))
    with pytest.raises(GradcheckError) as info:
        gradcheck(layer, x)
    msg = str(info.value)
    assert "_ForgetsDout" in msg and "disagrees at index" in msg
    assert "backprop" in msg and "numerical" in msg


def test_gradcheck_report_lists_every_tensor(backend):
    layer = Dense(3, activation="tanh", backend=backend)
    report = gradcheck(layer, np.random.default_rng(1).standard_normal((2, 4)))
    assert [t.name for t in report.tensors] == ["input", "W", "b"]
    assert report.passed
    assert report.max_rel_error < 1e-6
    assert "gradcheck of Dense(3): passed" in str(report)


def test_gradcheck_works_on_a_float32_layer_by_casting_a_copy(backend):
    layer = Dense(3, activation="sigmoid", backend=backend)  # float32
    x = np.random.default_rng(2).standard_normal((2, 4)).astype(np.float32)
    report = gradcheck(layer, x)
    assert report.max_rel_error < 1e-6
    assert layer.dtype == np.float32  # the original layer is untouched


def test_gradcheck_rejects_nan_input(backend):
    x = np.ones((2, 3))
    x[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"non-finite value nan at index \(1, 2\)"):
        gradcheck(Dense(2, backend=backend), x)


def test_gradcheck_rejects_non_numeric_input():
    with pytest.raises(TypeError, match="numeric"):
        gradcheck(Dense(2), np.array([["a", "b"]]))


def test_gradcheck_skips_relu_kinks_instead_of_failing(backend):
    # Inputs exactly at the ReLU kink: left and right slopes differ there.
    layer = fastnn.ReLU(backend=backend)
    x = np.array([[0.0, 1.0, -1.0, 0.5]])
    report = gradcheck(layer, x, max_kink_fraction=0.5)
    assert report.tensors[0].skipped_kinks == 1
    assert report.passed


def test_gradcheck_of_a_loss_needs_targets():
    with pytest.raises(TypeError, match="target_values"):
        gradcheck(fastnn.MeanSquaredError(), np.ones((2, 2)))


def test_gradcheck_rejects_other_objects():
    with pytest.raises(TypeError, match="expected a Layer, a model or a Loss"):
        gradcheck(object(), np.ones((2, 2)))
