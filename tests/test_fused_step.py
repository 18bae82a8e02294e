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
from fastnn.backends import unavailable_reason
from fastnn.layers import Dense
from fastnn.model import Sequential
from fastnn.optimizers import SGD, Adam
from fastnn.optimizers.fused_step import FusedStep
from tests.conftest import assert_close


def _numba_kernels():
    """The Numba module of the fused kernel; skips the test where numba cannot run (the
    module imports numba)."""
    reason = unavailable_reason("numba")
    if reason is not None:
        pytest.skip(reason)
    from fastnn.kernels.cpu import fused_update

    return fused_update


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
    """Numba, SGD, batch 1: the two wide Dense weights update in the backward pass; the
    5-unit one is below ``fused_step_min_units`` and updates after it, with the biases: one
    optimizer call per run of consecutive parameters left (b1 | b2, W3, b3). The numpy
    backend never fuses (its op is the unfused reference)."""
    fused_update = _numba_kernels()
    spy = _Spy(monkeypatch)
    model = _model("numba", SGD(learning_rate=0.05, momentum=0.9), dtype="float32")
    calls = []
    original = fused_update._linear_sgd.pick
    monkeypatch.setattr(fused_update._linear_sgd, "pick",
                        lambda dt, work: calls.append(work) or original(dt, work))
    updates = []
    original_update = SGD.update_one
    monkeypatch.setattr(SGD, "update_one", lambda opt, p, *a: updates.append(p.size)
                        or original_update(opt, p, *a))
    x, y = _data(1, "float32")
    model.train_on_batch(x, y)
    assert spy.started == 1
    assert spy.fused_weights == 2
    assert len(calls) == 2, "the two wide layers should run the fused kernel"
    assert updates == [96, 80 + 80 * 5 + 5], updates
    spy.started = 0
    model_np = _model("numpy", SGD(learning_rate=0.05, momentum=0.9), dtype="float32")
    model_np.train_on_batch(x, y)
    assert spy.started == 0


class _OwnRuleSGD(SGD):
    """A subclass with its own update rule, which the fused op does not implement."""

    def update_one(self, param, grad, slots, lr, tmp):
        """Plain SGD, written out."""
        param -= lr * grad


@pytest.mark.parametrize("case", ["regularizer", "clipnorm", "clipvalue", "global_clipnorm",
                                  "adam", "switched off", "large batch", "own rule",
                                  "narrow layers"])
def test_no_fused_step_where_the_gradients_must_be_complete(monkeypatch, case):
    """Regularization gradients, gradient clipping (which need every gradient before the
    update), an optimizer without a fused op or with its own update rule, ``fuse_updates =
    False``, a batch above ``fused_step_max_rows`` or no Dense layer of
    ``fused_step_min_units`` (where the one flat optimizer pass is faster): no FusedStep."""
    fused_update = _numba_kernels()
    spy = _Spy(monkeypatch)
    kwargs = {"kernel_regularizer": "l2"} if case == "regularizer" else {}
    if case in ("clipnorm", "clipvalue", "global_clipnorm"):
        opt = SGD(learning_rate=0.05, momentum=0.9, **{case: 1.0})
    elif case == "adam":
        opt = Adam()
    elif case == "own rule":
        opt = _OwnRuleSGD(learning_rate=0.05)
    else:
        opt = SGD(learning_rate=0.05, momentum=0.9)
    if case == "narrow layers":  # no Dense wide enough (fused_step_min_units) to pay
        be = fastnn.get_backend("numba")
        model = Sequential([Dense(8, activation="relu", input_dim=20), Dense(5)], backend=be,
                           dtype="float32")
        model.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
    else:
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


def _mixed_layers(kind: str) -> list:
    """Dense layers among other trainable layers, a frozen Dense, or a Dense on 3-D input
    (input: 36 features)."""
    from fastnn.layers import LSTM, BatchNormalization, Conv2D, Flatten, Reshape

    if kind == "conv-batchnorm":
        return [Reshape((1, 6, 6), input_shape=(36,)), Conv2D(4, 3, activation="relu"),
                Flatten(), Dense(72, activation="relu"), BatchNormalization(),
                Dense(5, activation="softmax")]
    if kind == "frozen-dense":
        return [Dense(96, activation="relu", input_dim=36),
                Dense(80, activation="tanh", trainable=False),
                Dense(70, activation="relu"), Dense(5, activation="softmax")]
    if kind == "dense-on-3d":
        return [Reshape((3, 12), input_shape=(36,)), Dense(64, activation="relu"),
                Dense(70, activation="tanh"), Flatten(), Dense(5, activation="softmax")]
    return [Reshape((3, 12), input_shape=(36,)), LSTM(16, return_sequences=True), Flatten(),
            Dense(70, activation="tanh"), Dense(5, activation="softmax")]


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("kind", ["conv-batchnorm", "frozen-dense", "dense-on-3d", "lstm"])
def test_fused_steps_equal_unfused_steps_among_other_layers(monkeypatch, kind, batch):
    """Numba, SGD with Nesterov momentum, weight decay and a learning-rate schedule: the
    trainable Dense layers update in the backward pass (not the frozen one, whose weight
    must not move), every other parameter after it; parameters, gradients, momentum buffers
    and the step counter equal those of unfused steps."""
    _numba_kernels()
    spy = _Spy(monkeypatch)
    models = []
    for fuse in (True, False):
        be = fastnn.get_backend("numba")
        be.seed(4)
        model = Sequential(_mixed_layers(kind), backend=be, dtype="float64")
        opt = SGD(learning_rate=lambda step: 0.05 / (1 + step), momentum=0.9, nesterov=True,
                  weight_decay=0.01)
        model.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
        model.fuse_updates = fuse
        models.append(model)
    fused, plain = models
    rng = np.random.default_rng(8)
    frozen = [layer for layer in fused.layers if not layer.trainable]
    frozen_before = [fused.backend.to_numpy(layer.params["W"]).copy() for layer in frozen]
    for step in range(4):
        x, y = rng.standard_normal((batch, 36)), rng.integers(0, 5, size=batch)
        for model in models:
            model.train_on_batch(x, y)
        got, want = _state(fused), _state(plain)
        assert got.keys() == want.keys()
        for key in want:
            assert_close(got[key], want[key], np.float64, f"{kind}: {key} after step {step}")
        assert fused.optimizer.iterations == plain.optimizer.iterations == step + 1
    for a, b in zip(fused.get_weights(), plain.get_weights(), strict=True):
        assert_close(a, b, np.float64, f"{kind}: weights")
    for layer, before in zip(frozen, frozen_before, strict=True):
        np.testing.assert_array_equal(fused.backend.to_numpy(layer.params["W"]), before)
    wide = fused.backend.fused_step_min_units
    fusable = sum(isinstance(layer, Dense) and layer.trainable and layer.units >= wide
                  for layer in fused.layers)
    assert spy.started == 4
    assert spy.fused_weights == 4 * fusable


def test_checkpoint_between_fused_steps_resumes_exactly(tmp_path):
    """Optimizer state saved after fused steps (momentum buffers that are views of the flat
    state) and loaded into a new model: the loaded model, stepping unfused, continues as the
    original does fused."""
    _numba_kernels()
    model = _model("numba", SGD(learning_rate=0.05, momentum=0.9, nesterov=True))
    for step in range(3):
        model.train_on_batch(*_data(1, seed=step))
    path = tmp_path / "fused.npz"
    model.save(path)
    loaded = fastnn.load_model(path, backend="numba")
    loaded.fuse_updates = False
    for step in range(3, 6):
        for m in (model, loaded):
            m.train_on_batch(*_data(1, seed=step))
    assert model.optimizer.iterations == loaded.optimizer.iterations == 6
    got, want = _state(model), _state(loaded)
    assert got.keys() == want.keys()
    for key in want:
        assert_close(got[key], want[key], np.float64, f"{key} after resuming")


def test_fused_kernel_does_not_depend_on_the_thread_count(monkeypatch):
    """Rows are split between threads, each element computed by one thread: 1 or 2
    threads give the same bits."""
    fused_update = _numba_kernels()
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
    fused_update = _numba_kernels()
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
