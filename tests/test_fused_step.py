"""Training steps that update Dense weights inside the backward pass (``FusedStep``).

The fused step must be invisible: the same gradients in ``grads``, the same parameters and
optimizer state after every step as the unfused step (``model.fuse_updates = False``), on
every backend; it must run where it pays (SGD on the Numba backend at batch sizes up to
``MAX_ROWS``) and never where something has to see the complete gradients first.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastnn
from fastnn.kernels.cpu import fused_update
from fastnn.layers import Dense
from fastnn.model import Sequential
from fastnn.optimizers import SGD, Adam
from fastnn.optimizers.fused_step import FusedStep
from tests.conftest import assert_close


def _model(backend, optimizer, dtype="float64", seed=3, **dense_kwargs) -> Sequential:
    be = fastnn.get_backend(backend)
    be.seed(seed)
    model = Sequential(
        [Dense(96, activation="relu", input_dim=20, **dense_kwargs),
         Dense(80, activation="tanh", **dense_kwargs),
         Dense(5, activation="softmax")],
        backend=be, dtype=dtype,
    )
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    return model


def _data(n: int, dtype="float64", seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 20)).astype(dtype), rng.integers(0, 5, size=n)


def _state(model: Sequential) -> dict[str, np.ndarray]:
    """Every parameter, gradient and optimizer slot, as host arrays keyed by position."""
    be = model.backend
    out = {}
    for k, (name, p, g) in enumerate(model.named_parameters()):
        out[f"param {k}"] = be.to_numpy(p).copy()
        out[f"grad {k}"] = be.to_numpy(g).copy()
        for slot, value in model.optimizer.slots.get(name, {}).items():
            out[f"{slot} {k}"] = be.to_numpy(value).copy()
    return out


class _Spy:
    """Counts the FusedSteps a model starts and the weights they update in the backward."""

    def __init__(self, monkeypatch) -> None:
        self.started = 0
        self.fused_weights = 0
        spy = self
        original = FusedStep.linear_backward

        def linear_backward(step, dz, x, W, dW, dx=None, need_dx=True):
            spy.fused_weights += 1
            return original(step, dz, x, W, dW, dx, need_dx)

        original_init = FusedStep.__init__

        def init(step, *args, **kwargs):
            spy.started += 1
            original_init(step, *args, **kwargs)

        monkeypatch.setattr(FusedStep, "linear_backward", linear_backward)
        monkeypatch.setattr(FusedStep, "__init__", init)


OPTIMIZERS = {
    "momentum": lambda: SGD(learning_rate=0.05, momentum=0.9),
    "nesterov-wd": lambda: SGD(learning_rate=0.05, momentum=0.9, nesterov=True,
                               weight_decay=0.01),
    "plain": lambda: SGD(learning_rate=0.1),
    "dampening": lambda: SGD(learning_rate=0.05, momentum=0.8, dampening=0.3),
}


@pytest.mark.parametrize("batch", [1, 3, 7])
@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
def test_fused_steps_equal_unfused_steps(backend, opt, batch):
    """Five train_on_batch steps, fused and not: same parameters, gradients and momentum
    buffers after each step (float64, the per-dtype tolerance)."""
    fused = _model(backend, OPTIMIZERS[opt]())
    plain = _model(backend, OPTIMIZERS[opt]())
    plain.fuse_updates = False
    for step in range(5):
        x, y = _data(batch, seed=step)
        loss_f = fused.train_on_batch(x, y)
        loss_p = plain.train_on_batch(x, y)
        assert_close(loss_f, loss_p, np.float64, f"loss at step {step}")
        got, want = _state(fused), _state(plain)
        assert got.keys() == want.keys()
        for key in want:
            assert_close(got[key], want[key], np.float64, f"{key} after step {step}")


def test_fused_step_runs_where_it_pays(monkeypatch):
    """Numba, SGD, batch 1: the two wide Dense weights update in the backward pass (the
    5-column one is below MIN_COLS and takes the op's unfused path, still inside the step);
    the numpy backend never fuses (its op is the unfused reference)."""
    spy = _Spy(monkeypatch)
    model = _model("numba", SGD(learning_rate=0.05, momentum=0.9), dtype="float32")
    calls = []
    original = fused_update._linear_sgd.pick
    monkeypatch.setattr(fused_update._linear_sgd, "pick",
                        lambda dt, work: calls.append(work) or original(dt, work))
    x, y = _data(1, "float32")
    model.train_on_batch(x, y)
    assert spy.started == 1
    assert spy.fused_weights == 3
    assert len(calls) == 2, "the two wide layers should run the fused kernel"
    spy.started = 0
    model_np = _model("numpy", SGD(learning_rate=0.05, momentum=0.9), dtype="float32")
    model_np.train_on_batch(x, y)
    assert spy.started == 0


@pytest.mark.parametrize("case", ["regularizer", "clipnorm", "clipvalue", "global_clipnorm",
                                  "adam", "switched off", "large batch"])
def test_no_fused_step_where_the_gradients_must_be_complete(monkeypatch, case):
    """Regularization gradients, gradient clipping (which need every gradient before the
    update), an optimizer without a fused op, ``fuse_updates = False``, or a batch above
    ``fused_step_max_rows`` (where the one flat optimizer pass is faster): no FusedStep."""
    spy = _Spy(monkeypatch)
    kwargs = {"kernel_regularizer": "l2"} if case == "regularizer" else {}
    if case in ("clipnorm", "clipvalue", "global_clipnorm"):
        opt = SGD(learning_rate=0.05, momentum=0.9, **{case: 1.0})
    elif case == "adam":
        opt = Adam()
    else:
        opt = SGD(learning_rate=0.05, momentum=0.9)
    model = _model("numba", opt, dtype="float32", **kwargs)
    if case == "switched off":
        model.fuse_updates = False
    batch = fused_update.MAX_ROWS + 1 if case == "large batch" else 1
    assert model.backend.fused_step_max_rows == fused_update.MAX_ROWS
    x, y = _data(batch, "float32")
    model.train_on_batch(x, y)
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
    assert spy.started == 0 and spy.fused_weights == 0


def test_fit_with_fused_steps_equals_fit_without(backend):
    """A whole fit at batch size 1 (shuffling, metrics, several epochs) gives the same
    weights and history fused and unfused."""
    x, y = _data(24)
    results = []
    for fuse in (True, False):
        model = _model(backend, SGD(learning_rate=0.02, momentum=0.9))
        model.fuse_updates = fuse
        hist = model.fit(x, y, batch_size=1, epochs=2, verbose=0, shuffle=True)
        results.append((model.get_weights(), hist.history["loss"]))
    (w_f, loss_f), (w_p, loss_p) = results
    for a, b in zip(w_f, w_p, strict=True):
        assert_close(a, b, np.float64, "weights after fit")
    assert_close(np.array(loss_f), np.array(loss_p), np.float64, "epoch losses")


def test_fused_kernel_does_not_depend_on_the_thread_count(monkeypatch):
    """Rows are split between threads, each element computed by one thread: 1 or 2
    threads give the same bits."""
    import numba

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one Numba thread on this machine: nothing to compare")
    be = fastnn.get_backend("numba")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 300)).astype(np.float32)
    dz = rng.standard_normal((2, 128)).astype(np.float32)
    W0 = rng.standard_normal((300, 128)).astype(np.float32)
    buf0 = rng.standard_normal((300, 128)).astype(np.float32)
    monkeypatch.setattr(fused_update, "num_row_blocks", lambda rows, cols: 6)
    # The same buffers for both thread counts: only the thread count changes between runs.
    W, buf, dW, dx = np.empty_like(W0), np.empty_like(W0), np.empty_like(W0), np.empty((2, 300),
                                                                                       np.float32)
    results = []
    old = numba.get_num_threads()
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            W[...], buf[...] = W0, buf0
            be.linear_backward_sgd(dz, x, W, dW, buf=buf, dx=dx, lr=0.1, momentum=0.9)
            results.append([a.copy() for a in (W, buf, dW, dx)])
    finally:
        numba.set_num_threads(old)
    for a, b in zip(*results, strict=True):
        np.testing.assert_array_equal(a, b)


def test_fused_kernel_refuses_overlapping_outputs():
    """dW written over W (the same memory) is not something the fused pass can do: the op
    falls back to the unfused ops, whose result it then equals."""
    be = fastnn.get_backend("numba")
    ref = fastnn.get_backend("numpy")
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 40))
    dz = rng.standard_normal((1, 64))
    W0 = rng.standard_normal((40, 64))
    for W_be, side in ((W0.copy(), be), (W0.copy(), ref)):
        dx = side.linear_backward_sgd(dz, x, W_be, W_be, lr=0.1)
        if side is be:
            got = (W_be, dx)
        else:
            want = (W_be, dx)
    for a, b in zip(got, want, strict=True):
        assert_close(a, b, np.float64, "aliased dW")
    assert not fused_update._fusable(dz, x, W0, W0, None, None, True, 0.0)
