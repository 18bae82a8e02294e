"""Sequential's training API: metrics, learning modes, determinism, memory, errors, gradients."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import fastnn
from fastnn import Callback, Dense, Sequential
from fastnn.datasets import load_digits
from fastnn.utils import to_categorical
from tests.conftest import assert_close

N_CLASSES = 10
N_FEATURES = 64


@pytest.fixture(scope="module")
def digits():
    """A 400-sample slice of the digits training split and 100 test samples."""
    (x_train, y_train), (x_test, y_test) = load_digits()
    return x_train[:400], y_train[:400], x_test[:100], y_test[:100]


def _mlp(backend, hidden=(32,), out_activation="softmax", n_out=N_CLASSES, dtype=None,
         seed=0) -> Sequential:
    layers = [Dense(units, activation="relu") for units in hidden]
    layers.append(Dense(n_out, activation=out_activation))
    model = Sequential(layers, backend=backend, dtype=dtype, seed=seed)
    model.build((N_FEATURES,))
    return model


# -- accuracy the way Keras computes it ------------------------------------------------------
def _fixed_model(backend, n_out: int, activation: str) -> Sequential:
    model = Sequential([Dense(n_out, activation=activation, input_dim=6)], backend=backend)
    rng = np.random.default_rng(1)
    model.set_weights([rng.standard_normal((6, n_out)).astype(np.float32),
                       rng.standard_normal(n_out).astype(np.float32)])
    return model


def test_accuracy_one_hot_targets(backend):
    model = _fixed_model(backend, 4, "softmax")
    model.compile(optimizer="sgd", loss="categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(2)
    x = rng.standard_normal((50, 6)).astype(np.float32)
    labels = rng.integers(0, 4, 50)
    expected = float(np.mean(model.predict(x).argmax(1) == labels))
    loss, acc = model.evaluate(x, to_categorical(labels, 4))
    assert 0.0 < expected < 1.0
    assert acc == pytest.approx(expected, abs=1e-12)
    assert model.metric_names == ["accuracy"]


def test_accuracy_sparse_integer_targets(backend):
    model = _fixed_model(backend, 4, "softmax")
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    rng = np.random.default_rng(3)
    x = rng.standard_normal((50, 6)).astype(np.float32)
    labels = rng.integers(0, 4, 50)
    expected = float(np.mean(model.predict(x).argmax(1) == labels))
    assert 0.0 < expected < 1.0
    for y in (labels, labels.reshape(-1, 1)):  # (N,) and Keras's (N, 1) labels
        _, acc = model.evaluate(x, y)
        assert acc == pytest.approx(expected, abs=1e-12)


def test_accuracy_single_output_binary_targets(backend):
    model = _fixed_model(backend, 1, "sigmoid")
    model.compile(optimizer="sgd", loss="mse", metrics=["accuracy"])
    rng = np.random.default_rng(4)
    x = rng.standard_normal((60, 6)).astype(np.float32)
    y = rng.integers(0, 2, 60).astype(np.float32)
    probs = model.predict(x)
    assert probs.shape == (60, 1)
    expected = float(np.mean((probs[:, 0] > 0.5) == (y > 0.5)))  # Keras: threshold 0.5
    assert 0.0 < expected < 1.0
    for targets in (y, y.reshape(-1, 1)):
        _, acc = model.evaluate(x, targets)
        assert acc == pytest.approx(expected, abs=1e-12)


def test_history_holds_per_epoch_lists(backend, digits):
    x, y, x_test, y_test = digits
    model = _mlp(backend)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    history = model.fit(x, y, epochs=3, batch_size=64, validation_data=(x_test, y_test),
                        verbose=0)
    assert isinstance(history, fastnn.History)
    assert history.epoch == [0, 1, 2]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert len(history.history[key]) == 3, key
    # The last epoch's validation numbers are what evaluate reports on the same data.
    val_loss, val_acc = model.evaluate(x_test, y_test, batch_size=64)
    assert history.history["val_loss"][-1] == pytest.approx(val_loss, rel=1e-6)
    assert history.history["val_accuracy"][-1] == pytest.approx(val_acc, abs=1e-12)


# -- online, minibatch and full-batch learning -------------------------------------------------
@pytest.mark.parametrize(
    ("batch_size", "epochs", "optimizer", "learning_rate"),
    [(1, 1, fastnn.SGD, 0.05), (32, 3, fastnn.Adam, 0.01), (None, 20, fastnn.Adam, 0.01)],
    ids=["online", "minibatch", "full-batch"],
)
def test_learning_modes_decrease_the_loss(backend, digits, batch_size, epochs, optimizer,
                                          learning_rate):
    x, y, _, _ = digits
    x, y = x[:200], y[:200]
    if batch_size is None:
        batch_size = x.shape[0]
    optimizer = optimizer(learning_rate=learning_rate, backend=backend)
    model = _mlp(backend)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    before = model.evaluate(x, y)[0]
    history = model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0)
    after = model.evaluate(x, y)[0]
    steps = -(-x.shape[0] // batch_size) * epochs
    assert model.optimizer.iterations == steps
    assert after < 0.7 * before, (before, after)
    assert history.history["loss"][-1] < history.history["loss"][0] or epochs == 1


# -- determinism and backend agreement ---------------------------------------------------------
def _train_numpy_run(x, y, seed: int) -> list[np.ndarray]:
    fastnn.set_seed(seed)
    model = Sequential([Dense(32, activation="relu"), Dense(N_CLASSES, activation="softmax")],
                       backend="numpy")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    return model.get_weights()


def test_same_seed_gives_bit_identical_weights_on_numpy(digits):
    x, y, _, _ = digits
    first = _train_numpy_run(x, y, seed=7)
    second = _train_numpy_run(x, y, seed=7)
    other = _train_numpy_run(x, y, seed=8)
    assert len(first) == len(second) == 4
    for a, b in zip(first, second, strict=True):
        assert np.array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_fit_seed_argument_fixes_the_shuffling(digits):
    x, y, _, _ = digits
    runs = []
    for _ in range(2):
        model = _mlp("numpy", seed=None)
        model.set_weights([np.full_like(w, 0.01) for w in model.get_weights()])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        model.fit(x, y, batch_size=16, epochs=1, verbose=0, seed=3)
        runs.append(model.get_weights())
    for a, b in zip(*runs, strict=True):
        assert np.array_equal(a, b)


@pytest.mark.numba
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_numpy_and_numba_agree_after_one_epoch(digits, optimizer):
    reason = fastnn.backends.unavailable_reason("numba")
    if reason is not None:
        pytest.skip(reason)
    x, y, _, _ = digits
    start = _mlp("numpy", hidden=(48, 24)).get_weights()
    weights = {}
    for name in ("numpy", "numba"):
        model = _mlp(name, hidden=(48, 24), seed=5)
        model.set_weights(start)
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        model.fit(x, y, batch_size=32, epochs=1, verbose=0)
        weights[name] = model.get_weights()
    for i, (a, b) in enumerate(zip(weights["numpy"], weights["numba"], strict=True)):
        assert not np.array_equal(a, start[i])  # training did move the weights
        assert_close(b, a, np.float32, what=f"weight {i} ({optimizer})")


# -- the data path: one transfer per batch, no parameter-sized allocations -------------------
def test_one_host_to_device_transfer_per_batch(backend, digits, monkeypatch):
    x, y, _, _ = digits
    model = _mlp(backend)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, batch_size=50, epochs=1, verbose=0)  # warm-up
    calls = []
    original = backend.asarray

    def counting_asarray(a, dtype=None):
        calls.append(tuple(np.shape(a)))
        return original(a, dtype=dtype)

    monkeypatch.setattr(backend, "asarray", counting_asarray)
    model.fit(x, y, batch_size=50, epochs=1, verbose=0, shuffle=True)
    steps = x.shape[0] // 50
    # Per step one array of inputs and one of targets, each the batch: nothing else moves.
    assert len(calls) == 2 * steps, calls
    assert sorted(calls) == sorted([(50, N_FEATURES)] * steps + [(50,)] * steps)


@pytest.mark.parametrize("batch_size", [1, 32])
def test_no_parameter_sized_allocation_per_step(batch_size):
    """tracemalloc on the numpy backend: after warm-up a training epoch allocates less than the
    largest parameter, and a training step less than the smallest weight matrix."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, N_FEATURES)).astype(np.float32)
    y = rng.integers(0, N_CLASSES, 128)
    model = Sequential([Dense(512, activation="relu"), Dense(512, activation="relu"),
                        Dense(N_CLASSES, activation="softmax")], backend="numpy", seed=0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])

    class Probe(Callback):
        def __init__(self):
            super().__init__()
            self.epoch_peak = self.step_peak = 0
            self.tracing = False

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:  # epoch 0 is the warm-up: optimizer state, buffers, JIT
                tracemalloc.start()
                self.tracing = True
                self.epoch_base = tracemalloc.get_traced_memory()[0]

        def on_train_batch_begin(self, batch, logs=None):
            if self.tracing:
                self.step_base = tracemalloc.get_traced_memory()[0]
                tracemalloc.reset_peak()

        def on_train_batch_end(self, batch, logs=None):
            if self.tracing:
                peak = tracemalloc.get_traced_memory()[1]
                self.step_peak = max(self.step_peak, peak - self.step_base)
                self.epoch_peak = max(self.epoch_peak, peak - self.epoch_base)

        def on_epoch_end(self, epoch, logs=None):
            if self.tracing:
                self.tracing = False
                tracemalloc.stop()

    probe = Probe()
    model.fit(x, y, batch_size=batch_size, epochs=2, verbose=0, callbacks=[probe])
    weight_bytes = sorted(p.nbytes for p in model.params.values() if p.ndim == 2)
    largest = max(p.nbytes for p in model.params.values())
    assert probe.step_peak > 0
    assert probe.epoch_peak < largest, (probe.epoch_peak, largest)
    # The smallest weight matrix here is the 512x10 output layer (20 KB); the first layer's
    # 64x512 (128 KB) is the bound that any temporary weight-shaped array would break.
    assert probe.step_peak < weight_bytes[1], (probe.step_peak, weight_bytes)


# -- errors -------------------------------------------------------------------------------------
def _compiled(backend, loss="sparse_categorical_crossentropy") -> Sequential:
    model = _mlp(backend)
    model.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
    return model


def test_fit_before_compile_says_what_to_do(backend, digits):
    x, y, _, _ = digits
    model = _mlp(backend)
    with pytest.raises(RuntimeError, match=r"Sequential\.fit: the model must be compiled first"):
        model.fit(x, y, verbose=0)
    with pytest.raises(RuntimeError, match=r"compile"):
        model.evaluate(x, y)


def test_x_y_length_mismatch_names_both_counts(backend, digits):
    x, y, _, _ = digits
    model = _compiled(backend)
    before = model.get_weights()
    with pytest.raises(ValueError, match=r"same number of samples.*400 inputs and 399 targets"):
        model.fit(x, y[:-1], verbose=0)
    _assert_untouched(model, before)


def test_sparse_labels_out_of_range_name_the_label_and_the_classes(backend, digits):
    x, y, _, _ = digits
    model = _compiled(backend)
    before = model.get_weights()
    bad = y.copy()
    bad[7] = N_CLASSES  # one past the last class
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\) for 10 classes, "
                                         r"received label 10"):
        model.fit(x, bad, verbose=0)
    bad[7] = -1
    with pytest.raises(ValueError, match=r"\[0, 10\).*received label -1"):
        model.fit(x, bad, verbose=0)
    _assert_untouched(model, before)


def test_wrong_input_width_names_expected_and_received_shapes(backend, digits):
    x, y, _, _ = digits
    model = _compiled(backend)
    before = model.get_weights()
    with pytest.raises(ValueError, match=r"expected input of shape \(None, 64\), received "
                                         r"shape \(400, 63\)"):
        model.fit(x[:, :63], y, verbose=0)
    with pytest.raises(ValueError, match=r"\(None, 64\).*\(5, 65\)"):
        model.predict(np.zeros((5, 65), np.float32))
    _assert_untouched(model, before)


def test_one_hot_targets_of_the_wrong_width_are_rejected(backend, digits):
    x, y, _, _ = digits
    model = _compiled(backend, loss="categorical_crossentropy")
    with pytest.raises(ValueError, match=r"targets of shape \(400, 9\).*\(None, 10\)"):
        model.fit(x, to_categorical(y, N_CLASSES)[:, :9], verbose=0)
    with pytest.raises(ValueError, match=r"sparse_categorical_crossentropy|to_categorical"):
        model.fit(x, y, verbose=0)


def _assert_untouched(model: Sequential, before: list[np.ndarray]) -> None:
    assert model.optimizer.iterations == 0
    for a, b in zip(before, model.get_weights(), strict=True):
        assert np.array_equal(a, b)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"optimizer": "adamw2", "loss": "mse"},
         r"unknown optimizer 'adamw2'; valid names: .*adam"),
        ({"optimizer": "adam", "loss": "crossentropy"},
         r"unknown loss 'crossentropy'; valid names: .*categorical_crossentropy"),
        ({"optimizer": "adam", "loss": "mse", "metrics": ["acuracy"]},
         r"unknown metric 'acuracy'; valid names: .*accuracy"),
    ],
    ids=["optimizer", "loss", "metric"],
)
def test_unknown_strings_list_the_valid_names(kwargs, pattern):
    model = _mlp("numpy")
    with pytest.raises(ValueError, match=pattern):
        model.compile(**kwargs)
    assert not model.compiled


def test_unknown_activation_lists_the_valid_names():
    with pytest.raises(ValueError, match=r"Dense\(8\): unknown activation 'rleu'; valid names: "
                                         r".*relu"):
        Dense(8, activation="rleu")


def test_failed_fit_propagates_and_returns_no_history(digits):
    """A diverging fit raises; nothing returns a History that looks like a finished run."""
    x, y, _, _ = digits
    model = _mlp("numpy")
    model.compile(optimizer=fastnn.SGD(learning_rate=1e30),
                  loss="sparse_categorical_crossentropy")
    result = None
    with pytest.raises(fastnn.DivergenceError, match=r"training diverged at epoch 1"):
        result = model.fit(x * 1e3, y, epochs=5, batch_size=50, verbose=0)
    assert result is None
    assert len(model.history.history.get("loss", [])) == 0  # no epoch was recorded as done


# -- gradients: backprop against numerical differentiation (issue 3 acceptance) ---------------
def test_digits_mlp_backprop_matches_numerical_gradient(backend):
    """64-50-10 Dense/relu/softmax-cross-entropy in float64: relative error < 1e-6."""
    rng = np.random.default_rng(0)
    x_host = rng.standard_normal((12, N_FEATURES))
    labels = rng.integers(0, N_CLASSES, 12)
    model = Sequential([Dense(50, activation="relu", input_dim=N_FEATURES),
                        Dense(N_CLASSES, activation="softmax")], backend=backend, dtype="float64")
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x = backend.asarray(x_host)
    y = model.prepare_targets(labels)

    model.zero_grads()
    model.loss_gradients(x, y)
    analytic = {name: backend.to_numpy(g).copy() for name, g in model.grads.items()}
    assert len(analytic) == 4  # W and b of both layers

    for name, param in model.params.items():
        numeric = fastnn.numerical_gradient(lambda: model.loss_value(x, y), param)
        numeric = backend.to_numpy(numeric)
        scale = max(float(np.abs(numeric).max()), 1e-12)
        rel = float(np.abs(analytic[name] - numeric).max()) / scale
        assert rel < 1e-6, f"{name}: relative error {rel:.3e}"


def test_summary_and_count_params():
    model = Sequential([Dense(50, activation="relu", input_dim=N_FEATURES),
                        Dense(N_CLASSES, activation="softmax")], name="digits_mlp")
    expected = N_FEATURES * 50 + 50 + 50 * N_CLASSES + N_CLASSES
    assert model.count_params() == expected == 3760
    lines = []
    text = model.summary(print_fn=lines.append)
    assert lines == [text]
    assert "(None, 50)" in text and "(None, 10)" in text
    assert "3,250" in text and "510" in text and "Total params: 3,760" in text


def test_predict_in_batches_matches_one_forward(backend, digits):
    x, y, _, _ = digits
    model = _compiled(backend)
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    whole = backend.to_numpy(model.forward(backend.asarray(x[:37])))
    batched = model.predict(x[:37], batch_size=8)
    assert isinstance(batched, np.ndarray) and batched.shape == (37, N_CLASSES)
    assert_close(batched, whole, np.float32)
    assert np.allclose(batched.sum(axis=1), 1.0, atol=1e-5)
