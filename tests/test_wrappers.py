"""Bidirectional and TimeDistributed wrappers, and the Masking layer."""

from __future__ import annotations

import numpy as np
import pytest

from fastnn import (
    GRU,
    LSTM,
    Bidirectional,
    Dense,
    Masking,
    Sequential,
    SimpleRNN,
    TimeDistributed,
    gradcheck,
)
from tests.conftest import assert_close


def _x(seed: int = 0, shape=(2, 3, 2)) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


@pytest.mark.parametrize(
    ("merge_mode", "return_sequences"),
    [("concat", True), ("sum", True), ("mul", True), ("ave", True), (None, True),
     ("concat", False), ("mul", False)],
)
def test_bidirectional_gradcheck(backend, merge_mode, return_sequences):
    layer = Bidirectional(LSTM(3, return_sequences=return_sequences, backend=backend),
                          merge_mode=merge_mode)
    report = gradcheck(layer, _x(1))
    assert report.max_rel_error < 1e-6
    names = {t.name for t in report.tensors}
    fwd, bwd = layer.forward_layer.name, layer.backward_layer.name
    assert {f"{fwd}/W", f"{fwd}/U", f"{bwd}/W", f"{bwd}/U", "input"} <= names


@pytest.mark.parametrize("cls", [SimpleRNN, GRU, LSTM], ids=["simple_rnn", "gru", "lstm"])
def test_bidirectional_return_state_gradcheck(backend, cls):
    layer = Bidirectional(cls(3, return_sequences=True, return_state=True, backend=backend),
                          merge_mode="sum")
    out = layer.forward(backend.asarray(_x(2).astype(np.float32)))
    assert len(out) == 1 + 2 * len(layer.forward_layer.state_names)
    assert gradcheck(layer, _x(2)).max_rel_error < 1e-6


def test_bidirectional_concat_equals_two_runs(backend):
    x = _x(3, (2, 4, 3))
    bi = Bidirectional(GRU(5, return_sequences=True, backend=backend, dtype="float64"))
    y = backend.to_numpy(bi.forward(backend.asarray(x)))
    assert y.shape == (2, 4, 10) and bi.output_shape == (4, 10)
    fwd, bwd = bi.forward_layer, bi.backward_layer
    assert bwd.go_backwards and not fwd.go_backwards
    assert not np.allclose(backend.to_numpy(fwd.params["W"]), backend.to_numpy(bwd.params["W"]))
    y_f = backend.to_numpy(fwd.forward(backend.asarray(x)))
    # the backward layer run on the time-reversed input, re-reversed
    plain = GRU(5, return_sequences=True, backend=backend, dtype="float64")
    plain.build((4, 3))
    for key in plain.params:
        plain.params[key][...] = bwd.params[key]
    y_b = backend.to_numpy(plain.forward(backend.asarray(x[:, ::-1].copy())))[:, ::-1]
    assert_close(y, np.concatenate([y_f, y_b], axis=-1))


def test_bidirectional_with_mask_in_a_model(backend):
    x = _x(4, (2, 4, 3))
    x[1, 3:] = 0.0
    model = Sequential([Masking(), Bidirectional(LSTM(3, return_sequences=True)),
                        TimeDistributed(Dense(2))], backend=backend, dtype="float64")
    y = model.forward(backend.asarray(x))
    assert y.shape == (2, 4, 2)
    assert gradcheck(model, x, check_inputs=False).max_rel_error < 1e-6


def test_time_distributed_dense(backend):
    layer = TimeDistributed(Dense(4, activation="tanh", backend=backend))
    x = _x(5, (2, 3, 5))
    report = gradcheck(layer, x)
    assert report.max_rel_error < 1e-6
    assert {t.name for t in report.tensors} >= {"input", f"{layer.layer.name}/W"}
    y = layer.forward(backend.asarray(x.astype(np.float32)))
    dense_y = layer.layer.forward(backend.asarray(x.reshape(6, 5).astype(np.float32)))
    assert_close(y, backend.to_numpy(dense_y).reshape(2, 3, 4), np.float32)
    assert layer.output_shape == (3, 4)
    assert layer.count_params() == 5 * 4 + 4


def test_masking_layer(backend):
    x = _x(6, (2, 3, 2))
    x[0, 1] = 0.0
    layer = Masking(0.0, backend=backend, dtype="float64")
    y = backend.to_numpy(layer.forward(backend.asarray(x)))
    np.testing.assert_array_equal(backend.to_numpy(layer.compute_mask(None)),
                                  [[True, False, True], [True, True, True]])
    np.testing.assert_array_equal(y, x)
    dout = _x(7, (2, 3, 2))
    dx = backend.to_numpy(layer.backward(backend.asarray(dout)))
    expected = dout.copy()
    expected[0, 1] = 0.0
    np.testing.assert_array_equal(dx, expected)


def test_wrapper_errors(backend):
    with pytest.raises(TypeError, match=r"Bidirectional: expected a recurrent layer"):
        Bidirectional(Dense(3))
    with pytest.raises(ValueError, match=r"merge_mode must be one of"):
        Bidirectional(LSTM(3), merge_mode="max")
    with pytest.raises(TypeError, match=r"TimeDistributed: expected a Layer"):
        TimeDistributed("dense")
    layer = TimeDistributed(Dense(2, backend=backend, dtype="float64"))
    layer.forward(backend.asarray(_x(8, (2, 3, 4))))
    with pytest.raises(ValueError, match=r"TimeDistributed\(Dense\(2\)\)\.forward: expected "
                                         r"input of shape \(None, T, 4\)"):
        layer.forward(backend.asarray(_x(8, (2, 3, 5))))


def test_save_and_load_a_recurrent_model(tmp_path):
    from fastnn import Embedding, io

    model = Sequential([Embedding(10, 4, mask_zero=True),
                        Bidirectional(GRU(5, return_sequences=True)),
                        TimeDistributed(Dense(3))], backend="numpy", dtype="float64")
    model.compile(optimizer="adam", loss="mse")
    x = np.array([[1, 2, 0], [3, 4, 5]])
    y = model.predict(x)
    path = tmp_path / "model.npz"
    io.save_model(model, path)
    again = io.load_model(path)
    np.testing.assert_array_equal(again.predict(x), y)
