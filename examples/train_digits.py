"""Train a small MLP on the 8x8 digits shipped with fastnn, Keras style.

Run: ``python examples/train_digits.py --backend numba --epochs 20``
"""

from __future__ import annotations

import argparse

import fastnn
from fastnn import Dense, Sequential
from fastnn.datasets import load_digits


def main() -> None:
    """Parse the options, train, and print the test accuracy."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy", choices=fastnn.backends.NAMES)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    fastnn.set_seed(args.seed)
    (x_train, y_train), (x_test, y_test) = load_digits()
    model = Sequential([
        Dense(128, activation="relu", input_shape=(64,)),
        Dense(64, activation="relu"),
        Dense(10, activation="softmax"),
    ], backend=args.backend)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.summary()
    history = model.fit(x_train, y_train, batch_size=32, epochs=args.epochs,
                        validation_split=0.1, verbose=2)
    loss, accuracy = model.evaluate(x_test, y_test)
    best = max(history.history["val_accuracy"])
    print(f"best validation accuracy: {best:.4f}")
    print(f"test accuracy: {accuracy:.4f} (test loss {loss:.4f})")


if __name__ == "__main__":
    main()
