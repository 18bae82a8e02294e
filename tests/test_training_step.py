"""The fast training step: flat parameter storage, one fused optimizer call over it, serial
kernels inside training steps, and no parameter-sized temporaries per step."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import fastnn
from fastnn import optimizers
from fastnn.layers import Dense
from fastnn.layers.base import Layer

# Every optimizer with settings that exercise its state (and weight decay where it has it).
OPTIMIZER_CASES = [
    ("SGD", {"learning_rate": 0.05}),
    ("SGD", {"learning_rate": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    ("Adam", {"learning_rate": 0.01}),
    ("Adam", {"learning_rate": 0.01, "amsgrad": True, "weight_decay": 0.1}),
    ("AdamW", {"learning_rate": 0.01, "weight_decay": 0.05}),
    ("Adamax", {"learning_rate": 0.02}),
    ("Nadam", {"learning_rate": 0.01}),
    ("RMSprop", {"learning_rate": 0.003, "momentum": 0.5, "centered": True}),
    ("Adagrad", {"learning_rate": 0.05, "initial_accumulator_value": 0.1}),
    ("Adadelta", {"learning_rate": 1.0}),
    ("SGD", {"learning_rate": 0.05, "momentum": 0.9, "global_clipnorm": 0.5}),
    ("Adam", {"learning_rate": 0.01, "clipvalue": 0.01}),
    ("Adam", {"learning_rate": 0.01, "clipnorm": 0.1}),  # per-parameter norm: falls back
]
CASE_IDS = [f"{name}-{i}" for i, (name, _) in enumerate(OPTIMIZER_CASES)]


def _mlp(backend, dtype="float64", seed=0, **kwargs) -> fastnn.Sequential:
    backend.seed(seed)
    return fastnn.Sequential(
        [Dense(8, activation="relu", input_dim=5), Dense(4, activation="softmax")],
        backend=backend, dtype=dtype, seed=seed, **kwargs,
    )


def _data(n=32, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5))
    y = np.eye(4)[rng.integers(0, 4, n)]
    return x, y


# -- flat storage ---------------------------------------------------------------------------
def test_parameters_live_in_one_flat_buffer(backend):
    model = _mlp(backend)
    model.build((5,))
    flat_p, flat_g = model.flat_parameters(), model.flat_gradients()
    named = model.named_parameters()
    assert flat_p.ndim == 1 and flat_p.size == sum(p.size for _, p, _ in named)
    offset = 0
    for name, p, g in named:
        assert p.flags.c_contiguous and g.flags.c_contiguous, name
        assert np.shares_memory(p, flat_p) and np.shares_memory(g, flat_g), name
        np.testing.assert_array_equal(backend.to_numpy(flat_p[offset:offset + p.size]),
                                      backend.to_numpy(p).ravel())
        offset += p.size
    # Writing the flat gradient is writing every layer's gradient (one all-reduce suffices).
    flat_g[...] = 2.0
    for name, _, g in named:
        assert float(g.min()) == float(g.max()) == 2.0, name


def test_flat_storage_follows_cast_freeze_and_new_layers(backend):
    model = _mlp(backend)
    model.build((5,))
    before = model.flat_parameters()
    model.cast("float32")
    flat = model.flat_parameters()
    assert flat is not before and flat.dtype == np.float32
    model.layers[0].trainable = False
    flat = model.flat_parameters()
    assert flat.size == sum(p.size for p in model.layers[1].params.values())
    assert not any(np.shares_memory(p, flat) for p in model.layers[0].params.values())
    model.add(Dense(2))
    flat = model.flat_parameters()
    added = model.layers[-1]
    assert flat.size == sum(p.size for layer in model.layers[1:] for p in layer.params.values())
    assert all(np.shares_memory(p, flat) for p in added.params.values())
    assert all(np.shares_memory(g, model.flat_gradients()) for g in added.grads.values())


@pytest.mark.parametrize("case", OPTIMIZER_CASES, ids=CASE_IDS)
def test_fit_with_flat_update_equals_per_parameter_updates(backend, case):
    """fit (one optimizer call over the flat buffer) gives bit for bit the parameters that
    per-parameter updates give, and the state stays keyed by parameter."""
    cls_name, kwargs = case
    x, y = _data()
    fast = _mlp(backend)
    fast.compile(getattr(optimizers, cls_name)(**kwargs), "categorical_crossentropy")
    fast.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)

    slow = _mlp(backend)
    opt = getattr(optimizers, cls_name)(**kwargs)
    slow.compile(opt, "categorical_crossentropy")
    slow._apply_gradients = lambda: opt.update(slow._param_list(), slow._grad_list())
    slow.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)

    for (name, p_fast, _), (_, p_slow, _) in zip(fast.named_parameters(),
                                                  slow.named_parameters(), strict=True):
        np.testing.assert_array_equal(backend.to_numpy(p_fast), backend.to_numpy(p_slow),
                                      err_msg=f"{cls_name} {kwargs}: {name}")
    assert fast.optimizer.iterations == opt.iterations == 8
    fast_keys = [name for name, _, _ in fast.named_parameters()]
    slow_keys = [name for name, _, _ in slow.named_parameters()]
    assert sorted(fast.optimizer.slots) == sorted(fast_keys)  # state keyed by parameter
    for fast_key, slow_key in zip(fast_keys, slow_keys, strict=True):
        fast_slots, slow_slots = fast.optimizer.slots[fast_key], opt.slots[slow_key]
        assert sorted(fast_slots) == sorted(slow_slots)
        for slot, value in slow_slots.items():
            np.testing.assert_array_equal(backend.to_numpy(fast_slots[slot]),
                                          backend.to_numpy(value), err_msg=f"{slow_key}/{slot}")


def test_restored_optimizer_state_is_copied_into_the_flat_state(backend):
    x, y = _data()
    model = _mlp(backend)
    model.compile(optimizers.Adam(0.01), "categorical_crossentropy")
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    opt = model.optimizer
    # Replace the state by separate arrays (as loading a checkpoint does).
    saved = {k: {s: backend.xp.array(v) for s, v in slots.items()} for k, slots in
             opt.slots.items()}
    opt.slots.clear()
    opt.slots.update({k: {s: v.copy() for s, v in slots.items()} for k, slots in
                      saved.items()})
    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)

    reference = _mlp(backend)
    reference.compile(optimizers.Adam(0.01), "categorical_crossentropy")
    reference.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    reference.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    for (name, p, _), (_, q, _) in zip(model.named_parameters(),
                                        reference.named_parameters(), strict=True):
        np.testing.assert_array_equal(backend.to_numpy(p), backend.to_numpy(q), err_msg=name)


def test_update_flat_rejects_nothing_the_dict_update_accepts(reference):
    """update_flat over hand-made views equals update over the same arrays as a dict."""
    rng = np.random.default_rng(0)
    shapes = [(3, 4), (4,), (2, 2, 2)]
    total = sum(int(np.prod(s)) for s in shapes)
    flat_p, flat_g = rng.normal(size=total), rng.normal(size=total)
    layout, offset = [], 0
    for i, shape in enumerate(shapes):
        size = int(np.prod(shape))
        layout.append((f"p{i}", flat_p[offset:offset + size].reshape(shape),
                       flat_g[offset:offset + size].reshape(shape)))
        offset += size
    params = {k: p.copy() for k, p, _ in layout}
    grads = {k: g.copy() for k, _, g in layout}
    flat_opt = optimizers.Adam(0.1, backend=reference)
    dict_opt = optimizers.Adam(0.1, backend=reference)
    for _ in range(3):
        flat_opt.update_flat(flat_p, flat_g, layout)
        dict_opt.update(params, grads)
    for key, p, _ in layout:
        np.testing.assert_array_equal(p, params[key])
        np.testing.assert_array_equal(flat_opt.slots[key]["m"], dict_opt.slots[key]["m"])


def test_orthogonal_parameters_are_c_contiguous():
    class Square(Layer):
        def build_params(self, input_shape):
            self.add_param("W", (6, 4), "orthogonal")

    layer = Square(backend="numpy", dtype="float64")
    layer.build((6,))
    assert layer.params["W"].flags.c_contiguous
    assert layer.grads["W"].flags.c_contiguous


# -- no per-step allocation of parameter-sized temporaries ----------------------------------
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_training_step_allocates_no_parameter_sized_temporaries(backend, opt):
    units = 256  # W2 is 64 Ki parameters (256 KiB); a batch of 2 needs a few KiB
    backend.seed(0)
    model = fastnn.Sequential(
        [Dense(units, activation="relu", input_dim=16), Dense(units, activation="relu"),
         Dense(4, activation="softmax")], backend=backend, dtype="float32", seed=0)
    optimizer = optimizers.SGD(0.01, momentum=0.9) if opt == "sgd" else optimizers.Adam()
    model.compile(optimizer, "categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 16)).astype(np.float32)
    y = np.eye(4, dtype=np.float32)[[0, 3]]
    for _ in range(2):  # warm up: buffers, state, compiled kernels
        model.train_on_batch(x, y)
    largest = max(p.nbytes for _, p, _ in model.named_parameters())  # W2: 256 KiB
    tracemalloc.start()
    try:
        for _ in range(3):
            model.train_on_batch(x, y)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < largest // 8, (
        f"{backend.name}/{opt}: a training step allocated {peak} bytes at peak; the "
        f"largest parameter has {largest}")


# -- kernels --------------------------------------------------------------------------------
def test_is_kernel_array_rejects_strided_arrays_of_the_right_dtype():
    pytest.importorskip("numba")
    from fastnn.kernels.cpu import jit

    strided = np.ones((4, 6))[:, ::2]
    assert not jit.is_kernel_array(strided, np.dtype(np.float64))
    assert not jit.is_kernel_array(strided, np.float64)
    assert not jit.is_kernel_array([1.0, 2.0], np.dtype(np.float64))
    assert jit.is_kernel_array(np.ones(3), np.dtype(np.float64), (3,))
    assert not jit.is_kernel_array(np.ones(3, np.float32), np.dtype(np.float64))


def test_serial_kernels_pick_the_serial_build_and_nest():
    pytest.importorskip("numba")
    from fastnn.kernels.cpu import jit
    from fastnn.kernels.cpu import optimizers as cpu_optimizers

    kernel = cpu_optimizers._sgd
    big = jit.BLOCK * 4
    huge = jit.SERIAL_MODE_BLOCK + 1  # long enough to keep its threads in serial mode
    assert big <= jit.SERIAL_MODE_BLOCK
    assert kernel.pick(np.float64, big) is kernel.get(np.float64, True)
    with jit.serial_kernels():
        with jit.serial_kernels():
            assert kernel.pick(np.float64, big) is kernel.get(np.float64, False)
            assert kernel.pick(np.float64, huge) is kernel.get(np.float64, True)
        assert kernel.pick(np.float64, big) is kernel.get(np.float64, False)
    assert kernel.pick(np.float64, big) is kernel.get(np.float64, True)


def test_serial_and_parallel_optimizer_kernels_agree():
    pytest.importorskip("numba")
    from fastnn.kernels.cpu import jit

    nb = fastnn.get_backend("numba")
    n = jit.BLOCK * 3 + 17
    rng = np.random.default_rng(0)
    p0, g = rng.normal(size=n).astype(np.float32), rng.normal(size=n).astype(np.float32)
    results = []
    for serial in (False, True):
        p, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
        if serial:
            with jit.serial_kernels():
                nb.adam_update(p, g, m, v, step=1, lr=0.01)
        else:
            nb.adam_update(p, g, m, v, step=1, lr=0.01)
        results.append(p)
    np.testing.assert_array_equal(results[0], results[1])


def test_thread_pool_launch_is_recorded():
    pytest.importorskip("numba")
    fastnn.get_backend("numba")
    from fastnn.kernels.cpu import threads

    assert isinstance(threads.launch_note, str) and "numba's thread pool" in threads.launch_note


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 2), (37, 10), (3000, 32), (5, 33)])
def test_numba_softmax_cross_entropy_equals_reference_around_the_small_class_path(
    reference, dtype, shape
):
    """Up to SMALL_CLASSES classes the losses run the small-class kernels (33: the general
    ones); both equal the reference, dense and sparse, with dx aliasing the logits."""
    pytest.importorskip("numba")
    from conftest import assert_close

    nb = fastnn.get_backend("numba")
    n, c = shape
    rng = np.random.default_rng(0)
    x = (rng.normal(size=shape) * 20).astype(dtype)
    labels = rng.integers(-c, c, n)  # negative labels index from the end, as in NumPy
    target = np.eye(c, dtype=dtype)[labels]
    loss_ref, dx_ref = reference.softmax_cross_entropy(x, target)
    aliased = x.copy()
    for loss, dx in (nb.softmax_cross_entropy(x, target),
                     nb.softmax_cross_entropy(aliased, target, dx=aliased),
                     nb.sparse_softmax_cross_entropy(x, labels)):
        assert_close(loss, loss_ref, dtype)
        assert_close(dx, dx_ref, dtype)
    with pytest.raises(IndexError):
        nb.sparse_softmax_cross_entropy(x, np.full(n, c))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch", [1, 3])
def test_numba_linear_backward_equals_reference(reference, dtype, batch):
    """Batch 1 writes dW with the outer-product kernel; larger batches use BLAS."""
    pytest.importorskip("numba")
    from conftest import assert_close

    nb = fastnn.get_backend("numba")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, 37)).astype(dtype)
    dz = rng.normal(size=(batch, 19)).astype(dtype)
    W = rng.normal(size=(37, 19)).astype(dtype)
    outs = []
    for be in (nb, reference):
        dW, db = np.full_like(W, np.nan), np.full(19, np.nan, dtype)
        dx = be.linear_backward(dz, x, W, dW=dW, db=db)
        outs.append((dW, db, dx))
    for got, want, what in zip(outs[0], outs[1], ("dW", "db", "dx"), strict=True):
        assert_close(got, want, dtype, what)
    assert nb.linear_backward(dz, x, W, dW=np.empty_like(W), need_dx=False) is None
