"""The adding problem (Hochreiter & Schmidhuber 1997): an LSTM must remember two marked
numbers across T = 50 steps and output their sum.

Each sequence has T steps of two features: a number drawn from U(0, 1) and a marker that is
1 at exactly two steps (one in each half) and 0 elsewhere. The target is the sum of the two
marked numbers. Always answering 1.0 (the mean) scores MSE = Var(U1 + U2) = 1/6 ~ 0.167:
a model that does better has to carry information through time.

Run: ``python examples/adding_problem.py --backend numba`` (about a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import time

# The matrix products of one step are tiny (50 x 32 by 32 x 128): BLAS threads cost more
# than they save, and idle ones spin against the compute threads (PERF-NOTES; measured here:
# 7 ms per training step with one BLAS thread, 30-140 ms with two on a busy 2-core machine).
# It must be set before NumPy loads OpenBLAS; an explicit setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import fastnn  # noqa: E402
from fastnn import LSTM, Dense, Sequential  # noqa: E402

#: MSE of always predicting the mean 1.0: Var(U(0,1) + U(0,1)) = 2/12.
TRIVIAL_MSE = 1.0 / 6.0


def make_adding_data(n: int, steps: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """``n`` sequences ``(n, steps, 2)`` and their targets ``(n, 1)``."""
    values = rng.random((n, steps))
    markers = np.zeros((n, steps))
    half = steps // 2
    first = rng.integers(0, half, size=n)
    second = rng.integers(half, steps, size=n)
    rows = np.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = np.stack([values, markers], axis=-1).astype(np.float32)
    y = (values[rows, first] + values[rows, second])[:, None].astype(np.float32)
    return x, y


def main(argv: list[str] | None = None) -> float:
    """Train, print the test MSE against the trivial baseline, and return the test MSE."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numba", choices=fastnn.backends.NAMES)
    parser.add_argument("--steps", type=int, default=50, help="sequence length T")
    parser.add_argument("--units", type=int, default=32)
    parser.add_argument("--train", type=int, default=6000, help="training sequences")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    fastnn.set_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    x_train, y_train = make_adding_data(args.train, args.steps, rng)
    x_test, y_test = make_adding_data(1000, args.steps, rng)
    model = Sequential([
        LSTM(args.units, input_shape=(args.steps, 2)),
        Dense(1),
    ], backend=args.backend)
    # Clipping the global gradient norm keeps the early, exploding steps of BPTT in check.
    model.compile(optimizer=fastnn.Adam(learning_rate=0.01, global_clipnorm=1.0), loss="mse")
    model.summary()
    start = time.perf_counter()
    model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs, verbose=2,
              seed=args.seed)
    elapsed = time.perf_counter() - start
    mse = float(model.evaluate(x_test, y_test, batch_size=500))
    baseline = float(np.mean((y_test - 1.0) ** 2))
    print(f"T = {args.steps}: test MSE {mse:.4f}; trivial baseline (always 1.0) "
          f"{baseline:.4f} (theory {TRIVIAL_MSE:.4f}); trained in {elapsed:.1f} s "
          f"on backend {args.backend}")
    return mse


if __name__ == "__main__":
    main()
