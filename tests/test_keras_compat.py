"""Keras-style scripts that run unchanged except for the import lines.

Each test body is written the way a Keras user writes a script; only the imports say
``fastnn`` instead of ``tensorflow.keras`` (``from tensorflow.keras.models import Sequential``,
``from tensorflow.keras.layers import Dense``, ``from tensorflow.keras.utils import
to_categorical``). The assertions after the script check what Keras would give.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastnn import Dense, Sequential, use_backend
from fastnn.datasets import load_digits
from fastnn.utils import to_categorical


@pytest.fixture
def keras_backend(backend):
    """Run the script with ``backend`` as the default, as a user would with FASTNN_BACKEND."""
    with use_backend(backend.name):
        yield backend


def test_keras_script_one_hot_classifier(keras_backend, capsys):
    # --- a Keras tutorial script, only the imports changed -------------------------------
    (x_train, y_train), (x_test, y_test) = load_digits()
    num_classes = 10
    y_train = to_categorical(y_train, num_classes)
    y_test = to_categorical(y_test, num_classes)

    model = Sequential()
    model.add(Dense(64, activation="relu", input_shape=(64,)))
    model.add(Dense(64, activation="relu"))
    model.add(Dense(num_classes, activation="softmax"))
    model.summary()

    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x_train, y_train, batch_size=32, epochs=12, validation_split=0.1,
                        verbose=0)
    score = model.evaluate(x_test, y_test, verbose=0)
    print("Test loss:", score[0])
    print("Test accuracy:", score[1])
    predicted = model.predict(x_test).argmax(1)
    # --------------------------------------------------------------------------------------
    assert model.backend is keras_backend
    assert "Total params: 8,970" in capsys.readouterr().out
    assert len(history.history["val_accuracy"]) == 12
    assert history.history["val_accuracy"][-1] > 0.9
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert score[1] > 0.9
    assert score[1] == pytest.approx(np.mean(predicted == y_test.argmax(1)), abs=1e-12)


def test_keras_script_sparse_labels_and_layer_list(keras_backend):
    # --- the Sequential([...]) form with integer labels ------------------------------------
    (x_train, y_train), (x_test, y_test) = load_digits()
    model = Sequential([
        Dense(32, activation="tanh", input_dim=64),
        Dense(10, activation="softmax"),
    ])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    history = model.fit(x_train, y_train, epochs=15, batch_size=16,
                        validation_data=(x_test, y_test), shuffle=True, verbose=0)
    test_loss, test_acc = model.evaluate(x_test, y_test, verbose=0)
    probabilities = model.predict(x_test[:5])
    # --------------------------------------------------------------------------------------
    assert {"accuracy", "loss", "val_accuracy", "val_loss"} <= set(history.history)
    assert history.history["val_loss"][-1] == pytest.approx(test_loss, rel=1e-5)
    assert test_acc > 0.85
    assert probabilities.shape == (5, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert model.count_params() == 64 * 32 + 32 + 32 * 10 + 10


def test_keras_script_regression_and_binary_output(keras_backend):
    # --- regression with mse/mae, then a single sigmoid unit with binary accuracy ----------
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(512, 3)).astype("float32")
    y = x @ np.array([[0.5], [-1.0], [2.0]], dtype="float32") + 0.25

    model = Sequential([Dense(16, activation="relu", input_shape=(3,)), Dense(1)])
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    history = model.fit(x, y, epochs=30, batch_size=32, verbose=0)
    mse, mae = model.evaluate(x, y, verbose=0)

    labels = (x.sum(axis=1) > 0).astype("float32")
    clf = Sequential()
    clf.add(Dense(8, activation="relu", input_dim=3))
    clf.add(Dense(1, activation="sigmoid"))
    clf.compile(optimizer="adam", loss="mean_squared_error", metrics=["accuracy"])
    clf.fit(x, labels, epochs=40, batch_size=32, verbose=0)
    _, binary_acc = clf.evaluate(x, labels, verbose=0)
    predicted = (clf.predict(x) > 0.5).astype("int32").ravel()
    # --------------------------------------------------------------------------------------
    assert history.history["loss"][-1] < 0.2 * history.history["loss"][0]
    assert {"loss", "mae"} <= set(history.history)
    assert mse < 0.05 and mae < 0.2
    assert binary_acc > 0.9
    assert binary_acc == pytest.approx(np.mean(predicted == labels), abs=1e-12)
