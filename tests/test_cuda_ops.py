"""The CUDA kernels of the cupy backend against the NumPy reference (needs a GPU).

Every test runs on the ``cupy`` backend only and is skipped, with the backend's own
reason, where it cannot run. Inputs are made on the host, copied to both backends, and
the results compared under the per-dtype tolerance table; every test also checks that
inputs the op must not write (``dy``, ``grad``, ``target``, ...) are unchanged and that
``out=`` buffers are the ones returned.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import assert_close

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.parametrize("backend", ["cupy"], indirect=True),
]

CUDA_OPS = [
    "activation_forward",
    "activation_backward",
    "bias_activation",
    "bias_activation_backward",
    "softmax",
    "softmax_backward",
    "log_softmax",
    "softmax_cross_entropy",
    "sparse_softmax_cross_entropy",
    "sgd_update",
    "adam_update",
]
CUBLAS_OPS = ["matmul", "linear", "linear_backward"]
KERNEL_ACTIVATIONS = ["relu", "sigmoid", "tanh", "linear"]
DTYPES = [np.float32, np.float64]
# Row lengths around the thread-per-row steps (32 .. 512) and past them.
ROW_SHAPES = [(1, 1), (4, 10), (3, 33), (5, 64), (2, 1000), (3, 3000), (2, 3, 17), (300, 7)]


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _pair(backend, reference, host: np.ndarray):
    """``host`` on the backend under test and on the reference."""
    return backend.asarray(host), reference.asarray(host.copy())


def _unchanged(backend, arr, host: np.ndarray, what: str) -> None:
    np.testing.assert_array_equal(backend.to_numpy(arr), host, err_msg=f"{what} was written")


def test_cuda_ops_serve_the_hot_ops(backend):
    for name in CUDA_OPS:
        assert backend.op_sources[name] == "cupy", name
    for name in CUBLAS_OPS:
        assert backend.op_sources[name] == "reference", name


# -- activations -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", KERNEL_ACTIVATIONS)
@pytest.mark.parametrize("shape", [(1,), (7, 33), (2, 3, 1000), (70001,)])
@pytest.mark.parametrize("mode", ["new", "out", "inplace"])
def test_activation_forward(backend, reference, dtype, name, shape, mode):
    host = (_rng(1).standard_normal(shape) * 3).astype(dtype)
    x, x_ref = _pair(backend, reference, host)
    expected = reference.activation_forward(name, x_ref)
    if mode == "new":
        y = backend.activation_forward(name, x)
        _unchanged(backend, x, host, "x")
    elif mode == "out":
        out = backend.xp.empty_like(x)
        y = backend.activation_forward(name, x, out=out)
        assert y is out
        _unchanged(backend, x, host, "x")
    else:
        y = backend.activation_forward(name, x, out=x)
        assert y is x
    assert y.dtype == dtype and y.shape == shape
    assert_close(y, expected, dtype, what=f"{name} forward {shape} {mode}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", KERNEL_ACTIVATIONS)
@pytest.mark.parametrize("shape", [(1,), (7, 33), (2, 3, 1000)])
@pytest.mark.parametrize("mode", ["new", "out", "into_dy"])
def test_activation_backward(backend, reference, dtype, name, shape, mode):
    rng = _rng(2)
    x_host = (rng.standard_normal(shape) * 3).astype(dtype)
    dy_host = rng.standard_normal(shape).astype(dtype)
    y_host = reference.to_numpy(reference.activation_forward(name, x_host.copy()))
    x, x_ref = _pair(backend, reference, x_host)
    y, y_ref = _pair(backend, reference, y_host)
    dy, dy_ref = _pair(backend, reference, dy_host)
    expected = reference.activation_backward(name, dy_ref, x_ref, y_ref)
    if mode == "new":
        dx = backend.activation_backward(name, dy, x, y)
        _unchanged(backend, dy, dy_host, "dy")
    elif mode == "out":
        out = backend.xp.empty_like(dy)
        dx = backend.activation_backward(name, dy, x, y, out=out)
        assert dx is out
        _unchanged(backend, dy, dy_host, "dy")
    else:
        dx = backend.activation_backward(name, dy, x, y, out=dy)
        assert dx is dy
    _unchanged(backend, y, y_host, "y")
    assert_close(dx, expected, dtype, what=f"{name} backward {shape} {mode}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", KERNEL_ACTIVATIONS)
@pytest.mark.parametrize("shape", [(1, 1), (7, 33), (2, 3, 5), (1000, 10)])
@pytest.mark.parametrize("inplace", [False, True])
def test_bias_activation(backend, reference, dtype, name, shape, inplace):
    rng = _rng(3)
    z_host = rng.standard_normal(shape).astype(dtype)
    b_host = rng.standard_normal(shape[-1]).astype(dtype)
    z, z_ref = _pair(backend, reference, z_host)
    b, b_ref = _pair(backend, reference, b_host)
    expected = reference.bias_activation(name, z_ref, b_ref)
    if inplace:
        y = backend.bias_activation(name, z, b, out=z)
        assert y is z
    else:
        y = backend.bias_activation(name, z, b)
        _unchanged(backend, z, z_host, "z")
    _unchanged(backend, b, b_host, "b")
    assert_close(y, expected, dtype, what=f"{name} bias_activation {shape}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", KERNEL_ACTIVATIONS)
@pytest.mark.parametrize(
    "shape", [(5,), (1, 1), (7, 33), (64, 100), (2, 50, 3), (20000, 3), (4097, 129)]
)
@pytest.mark.parametrize("mode", ["db", "db_into_dy", "no_db"])
def test_bias_activation_backward(backend, reference, dtype, name, shape, mode):
    rng = _rng(4)
    x_host = rng.standard_normal(shape).astype(dtype)
    dy_host = rng.standard_normal(shape).astype(dtype)
    y_host = reference.to_numpy(reference.activation_forward(name, x_host.copy()))
    y, y_ref = _pair(backend, reference, y_host)
    dy, dy_ref = _pair(backend, reference, dy_host)
    cols = shape[-1]
    want_db = mode != "no_db"
    db_ref = reference.xp.zeros(cols, dtype=dtype) if want_db else None
    db = backend.xp.full(cols, np.nan, dtype=dtype) if want_db else None
    dz_expected = reference.bias_activation_backward(name, dy_ref, None, y_ref, db=db_ref)
    if mode == "db_into_dy":
        dz = backend.bias_activation_backward(name, dy, None, y, dz=dy, db=db)
        assert dz is dy
    else:
        dz = backend.bias_activation_backward(name, dy, None, y, db=db)
        _unchanged(backend, dy, dy_host, "dy")
    _unchanged(backend, y, y_host, "y")
    assert_close(dz, dz_expected, dtype, what=f"{name} dz {shape}")
    if want_db:
        # Column sums of many rows: allow for the different summation order.
        rows = dy_host.size // cols
        np.testing.assert_allclose(
            backend.to_numpy(db), reference.to_numpy(db_ref),
            rtol=1e-4 if dtype == np.float32 else 1e-9,
            atol=(1e-5 if dtype == np.float32 else 1e-11) * max(1.0, np.sqrt(rows)),
            err_msg=f"{name} db {shape}",
        )


def test_bias_activation_backward_linear_needs_no_y(backend, reference):
    host = _rng(5).standard_normal((9, 4))
    dy, dy_ref = _pair(backend, reference, host)
    db = backend.xp.zeros(4)
    dz = backend.bias_activation_backward("linear", dy, None, None, db=db)
    assert_close(dz, host)
    assert_close(db, host.sum(axis=0))


# -- softmax -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ROW_SHAPES)
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
@pytest.mark.parametrize("inplace", [False, True])
def test_softmax_forward(backend, reference, dtype, shape, op, inplace):
    host = (_rng(6).standard_normal(shape) * 5).astype(dtype)
    host[..., 0] += 40  # a large logit: the max shift must keep exp finite
    x, x_ref = _pair(backend, reference, host)
    expected = getattr(reference, op)(x_ref)
    if inplace:
        y = getattr(backend, op)(x, out=x)
        assert y is x
    else:
        y = getattr(backend, op)(x)
        _unchanged(backend, x, host, "x")
    assert y.shape == shape and y.dtype == dtype
    assert_close(y, expected, dtype, what=f"{op} {shape}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ROW_SHAPES)
def test_softmax_backward(backend, reference, dtype, shape):
    rng = _rng(7)
    y_host = reference.to_numpy(reference.softmax(rng.standard_normal(shape).astype(dtype)))
    dy_host = rng.standard_normal(shape).astype(dtype)
    y, y_ref = _pair(backend, reference, y_host)
    dy, dy_ref = _pair(backend, reference, dy_host)
    expected = reference.softmax_backward(dy_ref, y_ref)
    dx = backend.softmax_backward(dy, y)
    _unchanged(backend, dy, dy_host, "dy")
    _unchanged(backend, y, y_host, "y")
    assert_close(dx, expected, dtype, what=f"softmax_backward {shape}")
    dx2 = backend.softmax_backward(dy, y, out=dy)
    assert dx2 is dy
    assert_close(dx2, expected, dtype, what=f"softmax_backward in place {shape}")


def test_softmax_handles_infinities_like_the_reference(backend, reference):
    host = np.array([[0.0, -np.inf, 1.0], [np.inf, 0.0, 0.0], [-np.inf, -np.inf, -np.inf]])
    x, x_ref = _pair(backend, reference, host)
    with np.errstate(invalid="ignore"):
        expected = reference.to_numpy(reference.softmax(x_ref))
    got = backend.to_numpy(backend.softmax(x))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-12)


# -- losses ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (8, 10), (3, 1000), (257, 33), (2, 5000)])
@pytest.mark.parametrize("scale", [None, 0.5])
@pytest.mark.parametrize("mode", ["new", "out", "into_logits"])
def test_softmax_cross_entropy(backend, reference, dtype, shape, scale, mode):
    rng = _rng(8)
    logits_host = (rng.standard_normal(shape) * 4).astype(dtype)
    target_host = rng.random(shape).astype(dtype)
    target_host /= target_host.sum(axis=1, keepdims=True)
    logits, logits_ref = _pair(backend, reference, logits_host)
    target, target_ref = _pair(backend, reference, target_host)
    loss_ref, dx_ref = reference.softmax_cross_entropy(logits_ref, target_ref, scale=scale)
    if mode == "new":
        loss, dx = backend.softmax_cross_entropy(logits, target, scale=scale)
        _unchanged(backend, logits, logits_host, "logits")
    elif mode == "out":
        buf = backend.xp.empty_like(logits)
        loss, dx = backend.softmax_cross_entropy(logits, target, dx=buf, scale=scale)
        assert dx is buf
        _unchanged(backend, logits, logits_host, "logits")
    else:
        loss, dx = backend.softmax_cross_entropy(logits, target, dx=logits, scale=scale)
        assert dx is logits
    _unchanged(backend, target, target_host, "target")
    assert isinstance(loss, float)
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-5 if dtype == np.float32 else 1e-10)
    assert_close(dx, dx_ref, dtype, what=f"softmax_cross_entropy dx {shape} {mode}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("label_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("shape", [(1, 1), (8, 10), (3, 1000), (257, 33), (2, 5000)])
@pytest.mark.parametrize("mode", ["new", "into_logits"])
def test_sparse_softmax_cross_entropy(backend, reference, dtype, label_dtype, shape, mode):
    rng = _rng(9)
    n, c = shape
    logits_host = (rng.standard_normal(shape) * 4).astype(dtype)
    labels_host = rng.integers(-c, c, size=n).astype(label_dtype)  # negatives count from the end
    logits, logits_ref = _pair(backend, reference, logits_host)
    labels, labels_ref = _pair(backend, reference, labels_host)
    loss_ref, dx_ref = reference.sparse_softmax_cross_entropy(logits_ref, labels_ref)
    if mode == "new":
        loss, dx = backend.sparse_softmax_cross_entropy(logits, labels)
        _unchanged(backend, logits, logits_host, "logits")
    else:
        loss, dx = backend.sparse_softmax_cross_entropy(logits, labels, dx=logits)
        assert dx is logits
    _unchanged(backend, labels, labels_host, "labels")
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-5 if dtype == np.float32 else 1e-10)
    assert_close(dx, dx_ref, dtype, what=f"sparse_softmax_cross_entropy dx {shape}")


def test_sparse_softmax_cross_entropy_rejects_out_of_range_labels(backend):
    logits = backend.asarray(np.zeros((3, 4), dtype=np.float32))
    labels = backend.asarray(np.array([0, 4, 1]))
    with pytest.raises(IndexError, match=r"labels must be class indices in \[0, 4\)"):
        backend.sparse_softmax_cross_entropy(logits, labels)


# -- optimizers --------------------------------------------------------------------------

SGD_SETTINGS = [
    {},
    {"weight_decay": 0.01},
    {"momentum": 0.9},
    {"momentum": 0.9, "dampening": 0.1, "weight_decay": 0.001},
    {"momentum": 0.9, "nesterov": True},
    {"momentum": 0.5, "nesterov": True, "weight_decay": 0.1, "lr": 0.3},
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("settings", SGD_SETTINGS, ids=str)
@pytest.mark.parametrize("shape", [(1,), (33, 7), (100003,)])
def test_sgd_update(backend, reference, dtype, settings, shape):
    rng = _rng(10)
    p_host = rng.standard_normal(shape).astype(dtype)
    p, p_ref = _pair(backend, reference, p_host)
    buf = backend.xp.zeros(shape, dtype=dtype)
    buf_ref = reference.xp.zeros(shape, dtype=dtype)
    for step in range(3):
        g_host = rng.standard_normal(shape).astype(dtype)
        g, g_ref = _pair(backend, reference, g_host)
        kwargs = dict(settings, first_step=step == 0)
        assert backend.sgd_update(p, g, buf=buf, **kwargs) is None
        reference.sgd_update(p_ref, g_ref, buf=buf_ref, **kwargs)
        _unchanged(backend, g, g_host, "grad")
    assert_close(p, p_ref, dtype, what=f"sgd param {settings}")
    if settings.get("momentum"):
        assert_close(buf, buf_ref, dtype, what=f"sgd buf {settings}")


ADAM_SETTINGS = [
    {},
    {"weight_decay": 0.01},
    {"amsgrad": True},
    {"amsgrad": True, "weight_decay": 0.1, "lr": 0.01, "beta1": 0.5, "beta2": 0.9, "eps": 1e-6},
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("settings", ADAM_SETTINGS, ids=str)
@pytest.mark.parametrize("shape", [(1,), (33, 7), (100003,)])
def test_adam_update(backend, reference, dtype, settings, shape):
    rng = _rng(11)
    p_host = rng.standard_normal(shape).astype(dtype)
    p, p_ref = _pair(backend, reference, p_host)
    state = [backend.xp.zeros(shape, dtype=dtype) for _ in range(3)]
    state_ref = [reference.xp.zeros(shape, dtype=dtype) for _ in range(3)]
    for step in range(1, 4):
        g_host = rng.standard_normal(shape).astype(dtype)
        g, g_ref = _pair(backend, reference, g_host)
        assert backend.adam_update(p, g, *state, step=step, **settings) is None
        reference.adam_update(p_ref, g_ref, *state_ref, step=step, **settings)
        _unchanged(backend, g, g_host, "grad")
    assert_close(p, p_ref, dtype, what=f"adam param {settings}")
    for key, got, want in zip(("m", "v", "vmax"), state, state_ref, strict=True):
        if key == "vmax" and not settings.get("amsgrad"):
            continue
        assert_close(got, want, dtype, what=f"adam {key} {settings}")


# -- fallbacks ---------------------------------------------------------------------------


def test_strided_and_half_inputs_fall_back_to_the_reference(backend, reference):
    host = _rng(12).standard_normal((6, 10))
    x, x_ref = _pair(backend, reference, host)
    assert_close(backend.softmax(x[:, ::2]), reference.softmax(x_ref[:, ::2]))
    assert_close(
        backend.activation_forward("tanh", x.T), reference.activation_forward("tanh", x_ref.T)
    )
    half = backend.asarray(host.astype(np.float16))
    got = backend.to_numpy(backend.activation_forward("sigmoid", half))
    assert got.dtype == np.float16
    np.testing.assert_allclose(got, 1 / (1 + np.exp(-host)), rtol=2e-3, atol=1e-3)
    step = backend.activation_forward("step", x)
    assert_close(step, (host > 0).astype(np.float64))
