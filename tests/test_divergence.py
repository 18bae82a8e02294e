"""Diverging runs stop with an error naming the epoch, the batch and the layer at fault."""

from __future__ import annotations

import re

import numpy as np
import pytest

import fastnn
from fastnn.layers.base import Layer


def _classification(n=128, d=20, classes=5):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, d)).astype(np.float32), rng.integers(0, classes, n)


def test_learning_rate_1e6_raises_naming_epoch_batch_and_layer(backend, capsys):
    x, y = _classification()
    backend.seed(0)
    model = fastnn.Sequential(
        [fastnn.Dense(64, activation="relu", input_dim=20), fastnn.Dense(64, activation="relu"),
         fastnn.Dense(5, activation="softmax")],
        backend=backend,
    )
    model.compile(fastnn.SGD(learning_rate=1e6), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    with pytest.raises(fastnn.DivergenceError) as info:
        model.fit(x, y, epochs=50, batch_size=16, verbose=2)
    msg = str(info.value)
    m = re.search(r"training diverged at epoch (\d+), batch (\d+)", msg)
    assert m, msg
    names = [layer.name for layer in model.layers]
    assert re.search(r"Dense\(\d+\) \((" + "|".join(names) + r")\)", msg), msg
    assert "learning rate" in msg
    assert "nan" not in capsys.readouterr().out  # never printed an epoch of nan


class NanGradient(Layer):
    """Identity whose backward returns NaN from training step ``at`` on."""

    def __init__(self, at: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.at = at
        self.calls = 0

    def get_config(self):
        return {**super().get_config(), "at": self.at}

    def _forward(self, x, training):
        return x

    def _backward(self, dout):
        self.calls += 1
        return dout * np.nan if self.calls > self.at else dout.copy()


def _nan_model(at):
    fastnn.get_backend("numpy").seed(0)
    model = fastnn.Sequential([fastnn.Dense(8, input_dim=4), NanGradient(at), fastnn.Dense(1)],
                              backend="numpy")
    model.layers[0].need_input_grad = True
    model.compile(fastnn.SGD(0.01), "mse")
    return model


def test_non_finite_gradient_is_named():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = rng.normal(size=(64, 1)).astype(np.float32)
    model = _nan_model(at=2)
    name = model.layers[0].name
    with pytest.raises(fastnn.DivergenceError, match=(
        rf"epoch 1, batch 4: loss is nan; the gradient of Dense\(8\) \({name}\) 'W' became "
        r"non-finite in the backward pass before the optimizer step of epoch 1, batch 3"
    )):
        model.fit(x, y, epochs=3, batch_size=16, verbose=0, shuffle=False)


def test_parameters_checked_at_the_end_of_every_epoch():
    """One step per epoch: the blow-up of the last step is caught in that same epoch."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 4)).astype(np.float32)
    y = rng.normal(size=(16, 1)).astype(np.float32)
    model = _nan_model(at=0)
    with pytest.raises(fastnn.DivergenceError, match=r"epoch 1, batch 1: parameters are "
                                                     r"non-finite after the step"):
        model.fit(x, y, epochs=5, batch_size=16, verbose=0)
    assert model.history.epoch == []


def test_overflowing_layer_output_is_named():
    x = np.full((8, 12), 3e38, dtype=np.float32)
    y = np.zeros((8, 1), dtype=np.float32)
    fastnn.get_backend("numpy").seed(0)
    model = fastnn.Sequential([fastnn.Dense(6, input_dim=12, kernel_initializer="ones"),
                               fastnn.Dense(1)], backend="numpy")
    model.compile("sgd", "mse")
    first = model.layers[0].name
    with pytest.raises(fastnn.DivergenceError,
                       match=rf"epoch 1, batch 1: loss is (nan|inf); the output of Dense\(6\) "
                             rf"\({first}\) became non-finite"):
        model.fit(x, y, epochs=1, verbose=0)


def test_overflowing_loss_is_named():
    x = np.full((8, 2), 1e20, dtype=np.float32)
    y = np.zeros((8, 1), dtype=np.float32)
    model = fastnn.Sequential([fastnn.Dense(1, input_dim=2, kernel_initializer="ones")],
                              backend="numpy")
    model.compile("sgd", "mse")
    with pytest.raises(fastnn.DivergenceError, match=r"every layer output is finite, but the "
                                                     r"loss \(MeanSquaredError\(\)\)"):
        model.fit(x, y, epochs=1, verbose=0)
