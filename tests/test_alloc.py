"""The numpy backend's training step allocates no parameter-sized temporaries (tracemalloc).

Issue 7: "no per-step allocation of parameter-sized temporaries in the training step",
tested by tracing allocations, not by timing. NumPy reports its array buffers to
``tracemalloc``, so the peak traced memory of a window is the largest set of arrays alive
at once inside it. After warm-up (buffers, optimizer state and scratch exist), a step may
allocate small things (Python objects, batch-sized arrays) but nothing with one element per
parameter of a weight matrix: the limit is half a byte per element of the smallest hidden
weight matrix, so even a boolean mask of it fails.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from fastnn import Dense, Sequential
from fastnn.callbacks import Callback
from fastnn.optimizers import SGD, Adam

D_IN, HIDDEN, CLASSES, BATCH = 256, 512, 10, 8
WARMUP_STEPS = 3
#: Bytes a window may peak at: half a byte per element of the smallest hidden W (256x512).
LIMIT = D_IN * HIDDEN // 2

OPTIMIZERS = {
    "sgd-momentum": lambda be: SGD(0.01, momentum=0.9, backend=be),
    "adam": lambda be: Adam(backend=be),
}


def _model(optimizer: str) -> Sequential:
    model = Sequential(backend="numpy", dtype="float32", seed=0)
    model.add(Dense(HIDDEN, activation="relu", input_dim=D_IN))
    model.add(Dense(HIDDEN, activation="relu"))
    model.add(Dense(CLASSES, activation="softmax"))
    model.compile(optimizer=OPTIMIZERS[optimizer](model.backend),
                  loss="sparse_categorical_crossentropy")
    return model


def _data(n: int = BATCH) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, D_IN)).astype(np.float32), rng.integers(0, CLASSES, n)


@pytest.fixture
def traced():
    """tracemalloc running for the test, stopped afterwards."""
    tracemalloc.start()
    yield
    tracemalloc.stop()


def _peak_above(start: int) -> int:
    return tracemalloc.get_traced_memory()[1] - start


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_train_on_batch_allocates_no_parameter_sized_temporary(traced, optimizer):
    model = _model(optimizer)
    x, y = _data()
    for _ in range(WARMUP_STEPS):
        model.train_on_batch(x, y)
    tracemalloc.reset_peak()
    start = tracemalloc.get_traced_memory()[0]
    model.train_on_batch(x, y)
    peak = _peak_above(start)
    assert peak < LIMIT, (
        f"one train_on_batch step ({optimizer}) peaked {peak} bytes above its start; a "
        f"parameter-sized temporary of W ({D_IN}x{HIDDEN}) is at least {LIMIT} bytes"
    )


class _StepPeaks(Callback):
    """Peak traced bytes of each step of fit (batch begin to batch end) and of the
    window between the last step and the epoch's end."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[int] = []
        self.epoch_end: list[int] = []
        self._start = 0

    def _open(self) -> None:
        tracemalloc.reset_peak()
        self._start = tracemalloc.get_traced_memory()[0]

    def on_train_batch_begin(self, batch, logs=None):
        """Open the window of one step."""
        self._open()

    def on_train_batch_end(self, batch, logs=None):
        """Close the step's window and open the one up to the epoch's end."""
        self.steps.append(_peak_above(self._start))
        self._open()

    def on_epoch_end(self, epoch, logs=None):
        """Close the window after the last step."""
        self.epoch_end.append(_peak_above(self._start))


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_fit_steps_allocate_no_parameter_sized_temporary(traced, optimizer):
    model = _model(optimizer)
    x, y = _data(4 * BATCH)
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)  # warm-up epoch
    peaks = _StepPeaks()
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[peaks])
    assert len(peaks.steps) == 4
    # The first step of every fit allocates the activation buffers (batch-sized) that the
    # end of the previous fit released: the steady state is the steps after it.
    steady = max(peaks.steps[1:])
    assert steady < LIMIT, (
        f"a step of fit ({optimizer}) peaked {steady} bytes; a parameter-sized "
        f"temporary of W ({D_IN}x{HIDDEN}) is at least {LIMIT} bytes"
    )


def test_fit_epoch_end_allocates_no_parameter_sized_temporary(traced):
    model = _model("sgd-momentum")
    x, y = _data(4 * BATCH)
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    peaks = _StepPeaks()
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[peaks])
    assert peaks.epoch_end[0] < LIMIT, (
        f"the end of the epoch after the last step peaked {peaks.epoch_end[0]} bytes"
    )
