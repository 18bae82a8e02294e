"""Bad input everywhere (hypothesis): every outcome is a correct result or a ValueError /
TypeError with a message, never a crash, a stray warning or a silently wrong answer.

Inputs thrown at layers, losses, ``fit``, ``predict`` and save/load: random shapes, dtypes
(ints, bool, float16, complex, object), NaN/Inf, empty batches, non-contiguous and
Fortran-ordered arrays, lists instead of arrays. "Correct" means equal to the NumPy
reference backend run on a clean C-contiguous copy of the same data.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import fastnn
from fastnn import layers as L  # noqa: N812
from fastnn.backends import available

BACKENDS = [name for name in ("numpy", "numba", "cupy") if name in available()]
# CI runs a fixed (derandomized) set of examples; FASTNN_HYPOTHESIS_SCALE=10 runs ten times
# as many, freshly random, for a deeper search.
SCALE = int(os.environ.get("FASTNN_HYPOTHESIS_SCALE", "1"))
SETTINGS = settings(max_examples=12 * SCALE, deadline=None, derandomize=SCALE == 1,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# Layer properties run for 20 layers x every backend: fewer examples each.
LAYER_SETTINGS = settings(SETTINGS, max_examples=6 * SCALE)
OK_ERRORS = (ValueError, TypeError)
BAD_DTYPES = ["int8", "int32", "int64", "uint8", "bool", "float16", "complex64", "complex128",
              "object"]

# name -> (factory, sample shape without the batch axis)
LAYERS = {
    "Dense": (lambda: L.Dense(3, activation="relu"), (4,)),
    "Dense-3d-softmax": (lambda: L.Dense(3, activation="softmax"), (2, 4)),
    "Softmax": (lambda: L.Softmax(), (5,)),
    "Sigmoid": (lambda: L.Sigmoid(), (2, 3)),
    "GELU": (lambda: L.GELU(), (4,)),
    "LeakyReLU": (lambda: L.LeakyReLU(), (4,)),
    "PReLU": (lambda: L.PReLU(alpha_initializer="ones"), (4,)),
    "Dropout": (lambda: L.Dropout(0.5), (4,)),
    "Flatten": (lambda: L.Flatten(), (2, 3)),
    "Reshape": (lambda: L.Reshape((2, 2)), (4,)),
    "BatchNormalization": (lambda: L.BatchNormalization(), (4,)),
    "LayerNormalization": (lambda: L.LayerNormalization(), (4,)),
    "Conv2D": (lambda: L.Conv2D(2, 3, padding="same"), (2, 5, 5)),
    "MaxPooling2D": (lambda: L.MaxPooling2D(2), (2, 4, 4)),
    "AveragePooling2D": (lambda: L.AveragePooling2D(2), (1, 4, 4)),
    "GlobalAveragePooling2D": (lambda: L.GlobalAveragePooling2D(), (2, 3, 3)),
    "DepthwiseConv2D": (lambda: L.DepthwiseConv2D(3), (2, 5, 5)),
    "SimpleRNN": (lambda: L.SimpleRNN(3), (3, 2)),
    "LSTM": (lambda: L.LSTM(3), (3, 2)),
    "GRU": (lambda: L.GRU(3), (3, 2)),
}


RECURRENT = ("SimpleRNN", "LSTM", "GRU")


def _make(name: str, backend: str, dtype: str = "float64"):
    """The layer built on ``backend`` and its NumPy twin with the same parameters."""
    factory, shape = LAYERS[name]
    layer = factory()
    layer.to_backend(backend)
    layer.cast(dtype)
    layer.build(shape)
    ref = factory()
    ref.to_backend("numpy")
    ref.cast(dtype)
    ref.build(shape)
    be = fastnn.get_backend(backend)
    for src, dst in ((layer, ref),):
        for key, value in src.params.items():
            dst.params[key][...] = be.to_numpy(value)
        for key, value in src.states.items():
            dst.states[key][...] = be.to_numpy(value)
    return layer, ref, shape


def _layout(arr: np.ndarray, how: str) -> np.ndarray:
    """The same values as ``arr`` in memory layout ``how``."""
    if how == "C":
        return np.ascontiguousarray(arr)
    if how == "F":
        return np.asfortranarray(arr)
    # strided: every other element of a twice-as-large buffer along the last axis
    big = np.zeros((*arr.shape[:-1], arr.shape[-1] * 2), dtype=arr.dtype)
    big[..., ::2] = arr
    return big[..., ::2]


def _host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def _close(actual, expected, what: str) -> None:
    np.testing.assert_allclose(_host(actual), _host(expected), rtol=1e-6, atol=1e-9,
                               err_msg=what, equal_nan=True)


layouts = st.sampled_from(["C", "F", "strided"])


# -- layers ------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(LAYERS))
@LAYER_SETTINGS
@given(n=st.integers(1, 4), x_layout=layouts, d_layout=layouts, seed=st.integers(0, 2**16))
def test_layer_any_memory_layout_gives_the_reference_result(backend, name, n, x_layout,
                                                            d_layout, seed):
    layer, ref, shape = _make(name, backend)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *shape))
    be = fastnn.get_backend(backend)
    xb = be.asarray(_layout(x, x_layout)) if backend == "cupy" else _layout(x, x_layout)
    y = layer.forward(xb, training=False)
    want = ref.forward(x, training=False)
    _close(y, want, f"{name} forward, {x_layout} input")
    dout = rng.normal(size=want.shape)
    db = be.asarray(_layout(dout, d_layout)) if backend == "cupy" else _layout(dout, d_layout)
    # training-mode forward for the backward pass (Dropout: same mask on both sides)
    be.seed(seed)
    layer.forward(xb, training=True)
    fastnn.get_backend("numpy").seed(seed)
    ref.forward(x, training=True)
    dx = layer.backward(db)
    dx_want = ref.backward(dout)
    if name != "Dropout" or backend == "numpy":
        _close(dx, dx_want, f"{name} backward, {d_layout} dout")
        for key in ref.grads:
            _close(layer.grads[key], ref.grads[key], f"{name} grad {key}")
    assert np.array_equal(_host(db), dout), f"{name}.backward modified dout"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(LAYERS))
@LAYER_SETTINGS
@given(dtype=st.sampled_from([*BAD_DTYPES, "float32", "list"]), n=st.integers(1, 3))
def test_layer_wrong_dtype_or_container_is_a_clear_error(backend, name, dtype, n):
    layer, _, shape = _make(name, backend)
    x = np.ones((n, *shape))
    bad = x.tolist() if dtype == "list" else x.astype(dtype)
    with pytest.raises(OK_ERRORS, match=r"\w+\(.*\)\.forward: expected"):
        layer.forward(bad)


shapes = st.lists(st.integers(0, 5), min_size=0, max_size=5).map(tuple)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(LAYERS))
@LAYER_SETTINGS
@given(bad_shape=shapes)
def test_layer_wrong_shape_or_empty_batch_is_a_clear_error(backend, name, bad_shape):
    layer, ref, shape = _make(name, backend)
    assume(bad_shape[1:] != shape or (bad_shape and bad_shape[0] == 0))
    if name in RECURRENT:  # any sequence length is valid
        assume(not (len(bad_shape) == 3 and bad_shape[0] > 0 and bad_shape[2] == shape[1]))
    x = np.ones(bad_shape)
    be = fastnn.get_backend(backend)
    with pytest.raises(OK_ERRORS, match=r"expected .*(shape|batch|features)"):
        layer.forward(be.asarray(x))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(LAYERS))
@LAYER_SETTINGS
@given(n=st.integers(2, 5), data=st.data())
def test_layer_nan_inf_in_one_sample_never_corrupts_the_others(backend, name, n, data):
    layer, ref, shape = _make(name, backend)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    x = rng.normal(size=(n, *shape))
    bad_row = data.draw(st.integers(0, n - 1))
    flat = x[bad_row].reshape(-1)
    flat[data.draw(st.integers(0, flat.size - 1))] = data.draw(
        st.sampled_from([np.nan, np.inf, -np.inf]))
    x[bad_row] = flat.reshape(shape)
    be = fastnn.get_backend(backend)
    with np.errstate(all="ignore"):
        y = _host(layer.forward(be.asarray(x), training=False))
        clean = np.delete(x, bad_row, axis=0)
        want = ref.forward(clean, training=False)
    assert y.shape == (n, *want.shape[1:])
    _close(np.delete(y, bad_row, axis=0), want, f"{name}: clean samples beside a NaN/Inf one")


def test_embedding_rejects_bad_indices():
    layer = L.Embedding(5, 2, backend="numpy")
    assert layer.forward(np.array([[0, 4]])).shape == (1, 2, 2)
    for bad in (np.array([[5]]), np.array([[-1]]), np.array([[0.5]]), np.array([[1j]]),
                np.array([[1]], dtype=object), [[1, 2]], np.zeros((0, 2), dtype=int)):
        with pytest.raises(OK_ERRORS):
            layer.forward(bad)


# -- losses ------------------------------------------------------------------------------
def _loss_case(name: str, rng, n: int, c: int):
    """(loss, pred, target) with valid values for loss ``name``."""
    logits = rng.normal(size=(n, c))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = rng.integers(0, c, n)
    onehot = np.eye(c)[labels]
    if name == "mse":
        return fastnn.losses.get("mse"), logits, rng.normal(size=(n, c))
    if name == "cce":
        return fastnn.CategoricalCrossentropy(), probs, onehot
    if name == "cce-logits":
        return fastnn.CategoricalCrossentropy(from_logits=True), logits, onehot
    if name == "sparse":
        return fastnn.SparseCategoricalCrossentropy(), probs, labels
    if name == "sparse-logits":
        return fastnn.SparseCategoricalCrossentropy(from_logits=True), logits, labels
    if name == "softmax-with-loss":
        return fastnn.SoftmaxWithLoss(), logits, labels
    return fastnn.losses.get(name), probs, onehot


LOSSES = ["mse", "cce", "cce-logits", "sparse", "sparse-logits", "softmax-with-loss", "huber",
          "mae", "kl_divergence", "hinge", "binary_crossentropy", "poisson", "log_cosh"]


@pytest.mark.parametrize("name", LOSSES)
@SETTINGS
@given(n=st.integers(1, 4), c=st.integers(2, 4), layout=layouts, t_layout=layouts,
       as_list=st.booleans(), seed=st.integers(0, 2**16))
def test_loss_layouts_and_list_targets_give_the_reference_result(name, n, c, layout, t_layout,
                                                                 as_list, seed):
    loss, pred, target = _loss_case(name, np.random.default_rng(seed), n, c)
    ref, _, _ = _loss_case(name, np.random.default_rng(seed), n, c)
    want = ref.forward(pred.copy(), target.copy())
    want_grad = ref.backward()
    t = target.tolist() if as_list else (_layout(target, t_layout) if target.ndim > 1
                                         else target)
    got = loss.forward(_layout(pred, layout), t)
    assert got == pytest.approx(want, rel=1e-12, abs=1e-12)
    _close(loss.backward(), want_grad, f"{name} gradient")


@pytest.mark.parametrize("name", LOSSES)
@SETTINGS
@given(which=st.sampled_from(["pred", "target"]), dtype=st.sampled_from(
    ["complex128", "object", "str", "list-pred", "float16"]), seed=st.integers(0, 99))
def test_loss_bad_dtypes_are_clear_errors(name, which, dtype, seed):
    loss, pred, target = _loss_case(name, np.random.default_rng(seed), 3, 3)
    if which == "pred":
        if dtype == "list-pred":
            pred = pred.tolist()
        elif dtype == "str":
            pred = pred.astype(str)
        else:
            pred = pred.astype(dtype)
    else:
        if dtype in ("list-pred", "float16"):
            return  # lists and float16 targets are valid: converted
        target = target.astype(str) if dtype == "str" else target.astype(dtype)
        if dtype == "object":
            target[0] = "x" if target.ndim == 1 else target[0]
    with pytest.raises(OK_ERRORS, match=r"\w+"):
        loss.forward(pred, target)


@pytest.mark.parametrize("name", LOSSES)
@SETTINGS
@given(pred_shape=shapes, target_shape=shapes)
def test_loss_shape_mismatch_and_empty_batches_are_clear_errors(name, pred_shape, target_shape):
    loss, pred, target = _loss_case(name, np.random.default_rng(0), 3, 3)
    assume(pred_shape != pred.shape or target_shape != target.shape)
    bad_pred = np.full(pred_shape, 0.25)
    bad_target = np.zeros(target_shape, dtype=target.dtype)
    try:
        value = loss.forward(bad_pred, bad_target)
    except OK_ERRORS as exc:
        assert str(exc)
        return
    # Accepted: only when the shapes really fit (same batch, the loss's own rules).
    assert bad_pred.ndim >= 1 and bad_pred.shape[0] > 0
    assert np.isfinite(value) or np.isnan(value)
    assert np.shape(loss.backward()) == bad_pred.shape


@pytest.mark.parametrize("name", ["sparse", "sparse-logits", "softmax-with-loss"])
@given(label=st.sampled_from([-1, 3, 7, 0.5, 2**40]))
@SETTINGS
def test_out_of_range_labels_are_named(name, label):
    loss, pred, target = _loss_case(name, np.random.default_rng(0), 3, 3)
    target = target.astype(np.float64 if isinstance(label, float) else np.int64)
    target[1] = label
    with pytest.raises(ValueError, match="label|whole"):
        loss.forward(pred, target)


# -- fit / predict / evaluate ------------------------------------------------------------
def _model(backend: str):
    fastnn.get_backend(backend).seed(0)
    model = fastnn.Sequential([L.Dense(5, activation="relu", input_dim=3),
                               L.Dense(2, activation="softmax")], backend=backend, seed=0)
    model.compile(fastnn.SGD(0.1), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(n=st.integers(1, 9), layout=layouts, kind=st.sampled_from(
    ["float64", "float32", "float16", "int64", "uint8", "bool", "list"]), seed=st.integers(0, 99))
def test_predict_and_fit_accept_any_numeric_layout(backend, n, layout, kind, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)) * 3
    if kind in ("int64", "uint8", "bool"):
        x = np.abs(x).astype(kind)
    elif kind in ("float32", "float16"):
        x = x.astype(kind)
    clean = np.ascontiguousarray(x, dtype=np.float32)
    arg = x.tolist() if kind == "list" else _layout(x, layout)
    model = _model(backend)
    _close(model.predict(arg), model.predict(clean), "predict on a re-laid-out x")
    y = rng.integers(0, 2, n)
    twin = _model(backend)
    y_arg = y.tolist() if kind == "list" else y
    h1 = model.fit(arg, y_arg, epochs=2, batch_size=4, verbose=0)
    h2 = twin.fit(clean, y, epochs=2, batch_size=4, verbose=0)
    for key in ("loss", "accuracy"):
        assert h1.history[key] == h2.history[key]
    for a, b in zip(model.get_weights(), twin.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(
    case=st.sampled_from(["complex", "object", "str", "nan", "inf", "empty", "features",
                          "ndim1", "scalar", "ragged", "huge", "none", "y-count", "y-label",
                          "y-nan", "y-complex", "y-object", "batch0", "batch-float"]),
    n=st.integers(1, 6),
)
def test_fit_predict_evaluate_bad_data_are_clear_errors(backend, case, n):
    x = np.ones((n, 3))
    y = np.zeros(n, dtype=np.int64)
    batch = 4
    if case == "complex":
        x = x.astype(complex)
    elif case == "object":
        x = x.astype(object)
    elif case == "str":
        x = x.astype(str)
    elif case in ("nan", "inf"):
        x[n - 1, 1] = np.nan if case == "nan" else -np.inf
    elif case == "empty":
        x, y = x[:0], y[:0]
    elif case == "features":
        x = np.ones((n, 4))
    elif case == "ndim1":
        x = np.ones(3)
    elif case == "scalar":
        x = 1.0
    elif case == "ragged":
        x = [[1.0, 2.0, 3.0], [1.0]]
    elif case == "huge":
        x[0, 0] = 1e300
    elif case == "none":
        x = None
    elif case == "y-count":
        y = np.zeros(n + 1, dtype=np.int64)
    elif case == "y-label":
        y[0] = 2
    elif case == "y-nan":
        y = y.astype(float)
        y[0] = np.nan
    elif case == "y-complex":
        y = y.astype(complex)
    elif case == "y-object":
        y = y.astype(object)
    elif case == "batch0":
        batch = 0
    elif case == "batch-float":
        batch = 2.5
    model = _model(backend)
    before = model.get_weights()
    with pytest.raises(OK_ERRORS, match=r"\w"):
        model.fit(x, y, epochs=1, batch_size=batch, verbose=0)
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # nothing was trained on bad data
    if not case.startswith("y-"):
        with pytest.raises(OK_ERRORS, match=r"\w"):
            model.predict(x, batch_size=batch)
    with pytest.raises(OK_ERRORS, match=r"\w"):
        model.evaluate(x, y, batch_size=batch)


# -- save / load -------------------------------------------------------------------------
@st.composite
def architectures(draw):
    widths = draw(st.lists(st.integers(1, 6), min_size=1, max_size=3))
    acts = draw(st.lists(st.sampled_from([None, "relu", "tanh", "sigmoid"]), min_size=3,
                         max_size=3))
    extras = draw(st.lists(st.sampled_from(["none", "bn", "ln", "dropout"]), min_size=3,
                           max_size=3))
    return widths, acts, extras


def _arch_model(arch, d_in, dtype):
    widths, acts, extras = arch
    model = fastnn.Sequential(backend="numpy", dtype=dtype)
    for i, w in enumerate(widths):
        model.add(L.Dense(w, activation=acts[i], input_dim=d_in if i == 0 else None))
        extra = {"bn": L.BatchNormalization, "ln": L.LayerNormalization,
                 "dropout": lambda: L.Dropout(0.25)}.get(extras[i])
        if extra is not None:
            model.add(extra())
    model.compile(fastnn.Adam(0.01), "mse")
    return model


@SETTINGS
@given(arch=architectures(), d_in=st.integers(1, 4), dtype=st.sampled_from(["float32",
                                                                           "float64"]),
       fmt=st.sampled_from(["npz", "safetensors"]), seed=st.integers(0, 99))
def test_save_load_round_trip_of_random_models(tmp_path_factory, arch, d_in, dtype, fmt, seed):
    rng = np.random.default_rng(seed)
    model = _arch_model(arch, d_in, dtype)
    x = rng.normal(size=(6, d_in))
    y = rng.normal(size=(6, arch[0][-1]))
    model.fit(x, y, epochs=1, batch_size=3, verbose=0)
    path = tmp_path_factory.mktemp("rt") / f"m.{fmt}"
    model.save(path)
    loaded = fastnn.load_model(path)
    for a, b in zip(model.get_weights(), loaded.get_weights(), strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


@pytest.fixture(scope="module")
def saved_files(tmp_path_factory):
    x = np.random.default_rng(0).normal(size=(6, 3))
    model = _arch_model(([4, 2], ["relu", None, None], ["bn", "none", "none"]), 3, "float32")
    model.fit(x, np.zeros((6, 2)), epochs=1, verbose=0)
    out = {}
    for fmt in ("npz", "safetensors"):
        path = tmp_path_factory.mktemp("saved") / f"m.{fmt}"
        model.save(path)
        out[fmt] = (path.read_bytes(), model.get_weights())
    out["model"] = model
    return out


@pytest.mark.parametrize("fmt", ["npz", "safetensors"])
@settings(SETTINGS, max_examples=60 * SCALE)
@given(data=st.data())
def test_damaged_files_load_identically_or_raise(saved_files, tmp_path_factory, fmt, data):
    raw, weights = saved_files[fmt]
    damaged = bytearray(raw)
    how = data.draw(st.sampled_from(["flip", "truncate", "zero-run", "append"]))
    if how == "flip":
        pos = data.draw(st.integers(0, len(damaged) - 1))
        damaged[pos] ^= data.draw(st.integers(1, 255))
    elif how == "truncate":
        damaged = damaged[: data.draw(st.integers(0, len(damaged) - 1))]
    elif how == "zero-run":
        pos = data.draw(st.integers(0, len(damaged) - 1))
        damaged[pos:pos + 16] = bytes(len(damaged[pos:pos + 16]))
    else:
        damaged += data.draw(st.binary(min_size=1, max_size=64))
    path = tmp_path_factory.mktemp("bad") / f"m.{fmt}"
    path.write_bytes(bytes(damaged))
    try:
        loaded = fastnn.load_model(path)
    except ValueError as exc:
        assert str(exc)
        return
    model = saved_files["model"]
    for a, b in zip(weights, loaded.get_weights(), strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b), "damaged file loaded other weights"
    assert [layer.get_config() for layer in loaded.layers] == [
        layer.get_config() for layer in model.layers]
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    assert loaded.optimizer.iterations == model.optimizer.iterations
    assert loaded.rng.bit_generator.state == model.rng.bit_generator.state
