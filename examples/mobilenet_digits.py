"""Train a small MobileNet-style network on the 8x8 digits shipped with fastnn.

Run: ``python examples/mobilenet_digits.py --backend numba`` (or ``--backend numpy``). A
3x3 stem convolution, then depthwise-separable blocks (3x3 depthwise + 1x1 pointwise, as in
MobileNets), a residual separable block, global average pooling and a softmax classifier.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

try:
    import fastnn
except ImportError:  # run from a source checkout without installing: use the repository copy
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import fastnn
from fastnn import (
    Adam,
    Conv2D,
    Dense,
    DepthwiseConv2D,
    GlobalAveragePooling2D,
    Residual,
    SeparableConv2D,
    Sequential,
)
from fastnn.datasets import load_digits

#: Adam step size (the inputs are standardised with the training set's mean and std).
LEARNING_RATE = 3e-3


def build_model(backend: str, dtype: str = "float32") -> Sequential:
    """(N, 1, 8, 8) -> stem 16 -> dw/pw 32 (stride 2) -> residual separable -> dw/pw 64 -> 10."""
    init = "he_normal"
    return Sequential(
        [
            Conv2D(16, 3, padding="same", activation="relu", kernel_initializer=init,
                   input_shape=(1, 8, 8)),
            DepthwiseConv2D(3, padding="same", activation="relu", depthwise_initializer=init),
            Conv2D(32, 1, activation="relu", kernel_initializer=init),
            DepthwiseConv2D(3, strides=2, padding="same", activation="relu",
                            depthwise_initializer=init),
            Conv2D(64, 1, activation="relu", kernel_initializer=init),
            Residual(
                [SeparableConv2D(64, 3, padding="same", activation="relu",
                                 depthwise_initializer=init, pointwise_initializer=init),
                 SeparableConv2D(64, 3, padding="same", depthwise_initializer=init,
                                 pointwise_initializer=init)],
                activation="relu",
            ),
            GlobalAveragePooling2D(),
            Dense(10, activation="softmax"),
        ],
        backend=backend,
        dtype=dtype,
    )


def main() -> None:
    """Parse the options, train, and print the test accuracy."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy", choices=fastnn.backends.NAMES)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    fastnn.set_seed(args.seed)
    (x_train, y_train), (x_test, y_test) = load_digits(flatten=False)
    mean, std = float(x_train.mean()), float(x_train.std())
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    model = build_model(args.backend, args.dtype)
    model.compile(optimizer=Adam(learning_rate=LEARNING_RATE),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.summary()
    start = time.perf_counter()
    model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs, verbose=2,
              seed=args.seed)
    elapsed = time.perf_counter() - start
    loss, accuracy = model.evaluate(x_test, y_test)
    print(f"backend {args.backend}: trained {args.epochs} epochs in {elapsed:.1f} s")
    print(f"test accuracy: {accuracy:.4f} (test loss {loss:.4f})")


if __name__ == "__main__":
    main()
