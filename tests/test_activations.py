"""Every activation: gradients, backend parity, formulas, numerical edge cases, names."""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastnn
from fastnn import Activation, Dense, gradcheck
from fastnn import activations as act_names
from fastnn.kernels.reference import activations as ref_act
from fastnn.layers import (
    ELU,
    GELU,
    SELU,
    HardSigmoid,
    HardSiLU,
    LeakyReLU,
    Linear,
    LogSoftmax,
    Mish,
    PReLU,
    ReLU6,
    SiLU,
    Softplus,
    Softsign,
    Swish,
)
from fastnn.layers.prelu import PReLU as PReLUDirect
from tests.conftest import assert_close

ALL = act_names.names()
ELEMENTWISE = [name for name in ALL if name not in act_names.ROW_ACTIVATIONS]
SMOOTH = [name for name in ALL if name != "step"]
# The brief's list, each of which must be a Keras string accepted by Dense(activation=...).
REQUIRED = [
    "step", "sigmoid", "relu", "leaky_relu", "elu", "selu", "gelu", "tanh", "softsign",
    "hard_sigmoid", "softplus", "swish", "silu", "mish", "linear", "softmax", "log_softmax",
]


def _x(shape, seed=0, scale=2.0):
    return np.random.default_rng(seed).standard_normal(shape) * scale


# -- gradients ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", SMOOTH)
def test_activation_layer_gradcheck(backend, name):
    report = gradcheck(Activation(name, backend=backend), _x((3, 5)))
    assert report.max_rel_error < 1e-6


@pytest.mark.parametrize("name", SMOOTH)
def test_dense_with_activation_gradcheck(backend, name):
    layer = Dense(4, activation=name, backend=backend)
    assert gradcheck(layer, _x((3, 5), seed=1)).max_rel_error < 1e-6


def test_step_has_zero_gradient(backend):
    layer = Activation("step", backend=backend, dtype="float64")
    x = _x((3, 4))
    y = layer.forward(backend.asarray(x))
    np.testing.assert_array_equal(backend.to_numpy(y), (x > 0).astype(float))
    dx = layer.backward(backend.asarray(np.ones_like(x)))
    np.testing.assert_array_equal(backend.to_numpy(dx), 0.0)


NAMED_LAYERS = [
    lambda be: LeakyReLU(backend=be),
    lambda be: LeakyReLU(alpha=0.05, backend=be),
    lambda be: LeakyReLU(negative_slope=1.5, backend=be),
    lambda be: ELU(backend=be),
    lambda be: ELU(alpha=0.4, backend=be),
    lambda be: SELU(backend=be),
    lambda be: GELU(backend=be),
    lambda be: GELU(approximate=True, backend=be),
    lambda be: Softsign(backend=be),
    lambda be: HardSigmoid(backend=be),
    lambda be: HardSiLU(backend=be),
    lambda be: Softplus(backend=be),
    lambda be: Swish(backend=be),
    lambda be: SiLU(backend=be),
    lambda be: Mish(backend=be),
    lambda be: ReLU6(backend=be),
    lambda be: Linear(backend=be),
    lambda be: LogSoftmax(backend=be),
]


@pytest.mark.parametrize("make", NAMED_LAYERS, ids=lambda f: "")
def test_named_layer_gradcheck(backend, make):
    layer = make(backend)
    assert gradcheck(layer, _x((3, 5), seed=2, scale=3.0)).max_rel_error < 1e-6


def test_log_softmax_along_axis_1_of_3d(backend):
    layer = LogSoftmax(axis=1, backend=backend)
    assert gradcheck(layer, _x((2, 3, 4), seed=3)).passed


@pytest.mark.parametrize("shared_axes", [None, [2]])
def test_prelu_gradcheck_input_and_slope(backend, shared_axes):
    layer = PReLU(alpha_initializer="random_uniform", shared_axes=shared_axes, backend=backend)
    report = gradcheck(layer, _x((3, 4, 5), seed=4))
    assert [t.name for t in report.tensors] == ["input", "alpha"]
    assert report.max_rel_error < 1e-6


def test_prelu_forward_and_learned_slope_shape(backend):
    layer = PReLU(alpha_initializer=fastnn.initializers.Constant(0.25), shared_axes=[2, 3],
                  backend=backend, dtype="float64")
    x = _x((2, 3, 4, 4), seed=5)
    y = backend.to_numpy(layer.forward(backend.asarray(x)))
    assert layer.params["alpha"].shape == (3, 1, 1)
    np.testing.assert_allclose(y, np.where(x > 0, x, 0.25 * x))
    assert PReLUDirect is PReLU
    with pytest.raises(ValueError, match="shared_axes"):
        PReLU(shared_axes=[4], backend=backend).forward(backend.asarray(x.astype(np.float32)))


def test_prelu_trains_in_a_model(backend):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((64, 3)).astype(np.float32)
    y = np.where(x[:, :1] > 0, x[:, :1], 0.5 * x[:, :1])
    model = fastnn.Sequential(backend=backend)
    model.add(Dense(1, input_dim=3, kernel_initializer="ones", use_bias=False))
    model.add(PReLU())
    model.compile("adam", loss="mse")
    before = model.layers[1].params["alpha"].copy()
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert not np.allclose(backend.to_numpy(model.layers[1].params["alpha"]),
                           backend.to_numpy(before))


# -- backends agree with the reference ------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_ops_match_numpy_reference(backend, reference, name, dtype):
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((33, 17)) * 4).astype(dtype)
    x[0, :7] = [0.0, 1e4, -1e4, 50.0, -50.0, 3.0, np.nan]  # NaN must propagate, as in NumPy
    dy = rng.standard_normal(x.shape).astype(dtype)
    b = rng.standard_normal(x.shape[1]).astype(dtype)
    results = []
    for be in (reference, backend):
        xa, dya, ba = be.asarray(x), be.asarray(dy), be.asarray(b)
        y = be.activation_forward(name, xa)
        dx = be.activation_backward(name, dya, xa, y)
        z = xa + ba
        yb = be.bias_activation(name, z.copy(), ba)
        db = be.xp.zeros_like(ba)
        dz = be.bias_activation_backward(name, dya, z, yb, db=db)
        results.append([be.to_numpy(a) for a in (y, dx, yb, dz, db)])
    for what, want, got in zip(("y", "dx", "bias y", "dz", "db"), *results, strict=True):
        assert got.dtype == np.dtype(dtype), what
        assert_close(got, want, dtype, what=f"{name} {what} on {backend.name}")


@pytest.mark.parametrize("name", ["leaky_relu", "elu"])
def test_ops_match_reference_with_alpha(backend, reference, name):
    x = _x((8, 9), seed=8)
    dy = _x((8, 9), seed=9)
    out = []
    for be in (reference, backend):
        y = be.activation_forward(name, be.asarray(x), alpha=0.7)
        dx = be.activation_backward(name, be.asarray(dy), be.asarray(x), y, alpha=0.7)
        out.append((be.to_numpy(y), be.to_numpy(dx)))
    neg = 0.7 * x if name == "leaky_relu" else 0.7 * np.expm1(np.minimum(x, 0))
    np.testing.assert_allclose(out[0][0], np.where(x > 0, x, neg))
    for want, got in zip(out[0], out[1], strict=True):
        assert_close(got, want, np.float64)


# -- formulas ----------------------------------------------------------------------------
def _np_formula(name, x):
    sig = 1 / (1 + np.exp(-x))
    phi = np.array([0.5 * math.erfc(-v / math.sqrt(2)) for v in x.ravel()]).reshape(x.shape)
    c = math.sqrt(2 / math.pi)
    softplus = np.log1p(np.exp(x))
    table = {
        "linear": x,
        "relu": np.maximum(x, 0),
        "relu6": np.clip(x, 0, 6),
        "sigmoid": sig,
        "tanh": np.tanh(x),
        "leaky_relu": np.where(x > 0, x, 0.2 * x),
        "elu": np.where(x > 0, x, np.expm1(x)),
        "selu": 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * np.expm1(x)),
        "gelu": x * phi,
        "gelu_tanh": 0.5 * x * (1 + np.tanh(c * (x + 0.044715 * x**3))),
        "silu": x * sig,
        "hard_silu": x * np.clip(x / 6 + 0.5, 0, 1),
        "mish": x * np.tanh(softplus),
        "softplus": softplus,
        "softsign": x / (1 + np.abs(x)),
        "hard_sigmoid": np.clip(x / 6 + 0.5, 0, 1),
        "step": (x > 0).astype(float),
    }
    return table[name]


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_forward_matches_textbook_formula(reference, name):
    x = np.linspace(-6, 6, 97)
    got = reference.activation_forward(name, x)
    np.testing.assert_allclose(got, _np_formula(name, x), rtol=1e-12, atol=1e-14)


def test_erf_accurate_to_float64(reference):
    x = np.linspace(-26, 26, 4001)
    want = np.array([math.erfc(v) for v in x])
    got = ref_act._erfc(np, x)
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=0)


# torch's float64 hardsigmoid/hardswish backward use 1/6 rounded to float32 (rel. error 3e-8).
TORCH_SINGLE_PRECISION_SLOPE = ("hard_sigmoid", "hard_silu")
TORCH_FUNCS = {
    "relu": lambda F, t: F.relu(t),
    "relu6": lambda F, t: F.relu6(t),
    "sigmoid": lambda F, t: F.sigmoid(t),
    "tanh": lambda F, t: F.tanh(t),
    "leaky_relu": lambda F, t: F.leaky_relu(t, 0.2),
    "elu": lambda F, t: F.elu(t),
    "selu": lambda F, t: F.selu(t),
    "gelu": lambda F, t: F.gelu(t),
    "gelu_tanh": lambda F, t: F.gelu(t, approximate="tanh"),
    "silu": lambda F, t: F.silu(t),
    "hard_silu": lambda F, t: F.hardswish(t),
    "mish": lambda F, t: F.mish(t),
    "softplus": lambda F, t: F.softplus(t, threshold=1000),
    "softsign": lambda F, t: F.softsign(t),
    "hard_sigmoid": lambda F, t: F.hardsigmoid(t),
}


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(TORCH_FUNCS))
def test_forward_and_backward_match_torch(backend, name):
    torch = pytest.importorskip("torch")
    x = _x((6, 7), seed=10, scale=3.0)
    dy = _x((6, 7), seed=11)
    t = torch.tensor(x, requires_grad=True)
    ty = TORCH_FUNCS[name](torch.nn.functional, t)
    ty.backward(torch.tensor(dy))
    xa = backend.asarray(x)
    y = backend.activation_forward(name, xa)
    dx = backend.activation_backward(name, backend.asarray(dy), xa, y)
    np.testing.assert_allclose(backend.to_numpy(y), ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    if name in TORCH_SINGLE_PRECISION_SLOPE:
        return  # checked by gradcheck and the formula test instead
    np.testing.assert_allclose(backend.to_numpy(dx), t.grad.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.torch
def test_log_softmax_matches_torch(backend):
    torch = pytest.importorskip("torch")
    x = _x((4, 6), seed=12)
    y = backend.to_numpy(LogSoftmax(backend=backend, dtype="float64")(backend.asarray(x)))
    want = torch.log_softmax(torch.tensor(x), dim=-1).numpy()
    np.testing.assert_allclose(y, want, rtol=1e-12)


def test_keras_conventions_stated():
    """LeakyReLU layer 0.3, 'leaky_relu' string 0.2, hard_sigmoid slope 1/6, gelu exact."""
    x = np.array([[-10.0, -3.0, -1.0, 1.0, 2.9]])
    be = fastnn.get_backend("numpy")
    layer = LeakyReLU(dtype="float64", backend=be)
    np.testing.assert_allclose(layer(x), np.where(x > 0, x, 0.3 * x))
    dense_like = Activation("leaky_relu", dtype="float64", backend=be)
    np.testing.assert_allclose(dense_like(x), np.where(x > 0, x, 0.2 * x))
    np.testing.assert_allclose(Activation("hard_sigmoid", dtype="float64")(x),
                               [[0.0, 0.0, 1 / 3, 2 / 3, 2.9 / 6 + 0.5]])
    assert GELU().activation == "gelu" and GELU(approximate=True).activation == "gelu_tanh"
    assert LeakyReLU(alpha=0.0).activation == "relu" and ELU(alpha=0.0).activation == "relu"


# -- numerical edge cases ---------------------------------------------------------------
BIG = np.array([[-1e4, -1e3, -30.0, 0.0, 30.0, 1e3, 1e4]])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sigmoid_finite_at_1e4(backend, dtype):
    layer = Activation("sigmoid", backend=backend, dtype=dtype)
    y = layer(backend.asarray(BIG.astype(dtype)))
    dx = layer.backward(backend.asarray(np.ones_like(BIG, dtype=dtype)))
    y, dx = backend.to_numpy(y), backend.to_numpy(dx)
    assert np.isfinite(y).all() and np.isfinite(dx).all()
    assert y[0, 0] == 0.0 and y[0, -1] == 1.0 and y[0, 3] == 0.5


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softplus_finite_at_1e4(backend, dtype):
    layer = Softplus(backend=backend, dtype=dtype)
    y = backend.to_numpy(layer(backend.asarray(BIG.astype(dtype))))
    dx = backend.to_numpy(layer.backward(backend.asarray(np.ones_like(BIG, dtype=dtype))))
    assert np.isfinite(y).all() and np.isfinite(dx).all()
    assert y[0, 0] == 0.0 and y[0, -1] == np.float32(1e4)
    np.testing.assert_allclose(y[0, 3], math.log(2), rtol=1e-6)
    np.testing.assert_array_equal(dx[0, [0, -1]], [0.0, 1.0])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_log_softmax_finite_at_1e4(backend, dtype):
    x = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]], dtype=dtype)
    layer = LogSoftmax(backend=backend, dtype=dtype)
    y = backend.to_numpy(layer(backend.asarray(x)))
    dx = backend.to_numpy(layer.backward(backend.asarray(np.ones_like(x))))
    assert np.isfinite(y).all() and np.isfinite(dx).all()
    assert_close(y[0], [0.0, -2e4, -1e4], dtype)
    assert_close(y[1], [-math.log(3)] * 3, dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_every_activation_finite_at_1e4(backend, name, dtype):
    x = backend.asarray(BIG.astype(dtype))
    y = backend.activation_forward(name, x)
    dx = backend.activation_backward(name, backend.xp.ones_like(x), x, y)
    assert np.isfinite(backend.to_numpy(y)).all(), name
    assert np.isfinite(backend.to_numpy(dx)).all(), name


# -- names -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", REQUIRED + ["hard_swish", "gelu_approximate", "relu6", None])
def test_every_keras_string_works_in_dense(name):
    model = fastnn.Sequential()
    model.add(Dense(3, input_dim=2, activation=name))
    y = model.predict(np.ones((4, 2), dtype=np.float32), verbose=0)
    assert y.shape == (4, 3) and np.isfinite(y).all()


def test_unknown_activation_lists_valid_names():
    with pytest.raises(ValueError, match="valid names: .*gelu.*mish.*softplus"):
        Dense(3, activation="swishy")
    with pytest.raises(ValueError, match="valid names"):
        Activation("relu7")


@pytest.mark.parametrize("bad", [-0.1, float("nan"), "x"])
def test_leaky_relu_rejects_bad_alpha(bad):
    with pytest.raises((ValueError, TypeError), match="LeakyReLU: alpha"):
        LeakyReLU(alpha=bad)


def test_get_config_round_trip():
    for layer in (LeakyReLU(alpha=0.1), ELU(alpha=0.5), GELU(approximate=True), Softplus(),
                  LogSoftmax(axis=1), PReLU(shared_axes=[1])):
        cfg = layer.get_config()
        cfg.pop("name")
        clone = type(layer)(**cfg)
        assert clone.describe() == layer.describe()


# -- the fused kernels of the further activations -------------------------------------------
KERNEL_NAMES = ["leaky_relu", "elu", "selu", "softplus", "gelu", "gelu_tanh", "silu", "mish"]


def _numba_extra():
    pytest.importorskip("numba")
    if not fastnn.backends.is_available("numba"):
        pytest.skip("the numba backend is unavailable here")
    from fastnn.kernels.cpu import activations as cpu_act
    from fastnn.kernels.cpu import activations_extra

    return cpu_act, activations_extra


@pytest.mark.numba
def test_numba_kernels_are_hooked_into_the_activation_ops():
    cpu_act, extra = _numba_extra()
    assert sorted(extra.CODES) == sorted(KERNEL_NAMES)
    for name in KERNEL_NAMES:
        assert cpu_act.EXTRA_ACTIVATIONS[name][0] is extra.activation_forward


@pytest.mark.numba
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_numba_kernels_in_place_and_fallbacks(reference, name, dtype):
    _, extra = _numba_extra()
    be = fastnn.get_backend("numba")
    rng = np.random.default_rng(13)
    x = (rng.standard_normal((9, 10)) * 3).astype(dtype)
    dy = rng.standard_normal((9, 10)).astype(dtype)
    want_y = reference.activation_forward(name, x)
    want_dx = reference.activation_backward(name, dy, x, want_y)
    inplace = x.copy()
    y = extra.activation_forward(be, name, inplace, out=inplace)
    assert y is inplace
    assert_close(y, want_y, dtype)
    g = dy.copy()
    dx = extra.activation_backward(be, name, g, x, want_y, out=g)
    assert dx is g
    assert_close(dx, want_dx, dtype)
    # A strided view is not a kernel array: the reference answers, with the same values.
    wide = np.repeat(x, 2, axis=1)[:, ::2]
    assert_close(extra.activation_forward(be, name, wide), want_y, dtype)
    db = np.zeros(10, dtype=dtype)
    dz = extra.bias_activation_backward(be, name, dy, x, want_y, db=db)
    assert_close(dz, want_dx, dtype)
    assert_close(db, want_dx.sum(axis=0), dtype)


@pytest.mark.numba
@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_numba_kernels_in_place_give_the_out_of_place_bits(name):
    """In place (out = z with a bias, dz = dy, dz = the array the backward reads), and with
    read-only inputs, the kernels read each row from a copy (see jit.copy_row): the very bits
    of the out-of-place call, over several row blocks."""
    _, extra = _numba_extra()
    be = fastnn.get_backend("numba")
    rng = np.random.default_rng(14)
    z = (rng.standard_normal((300, 700)) * 3).astype(np.float32)
    b = rng.standard_normal(700).astype(np.float32)
    dy = rng.standard_normal((300, 700)).astype(np.float32)
    want = extra.bias_activation(be, name, z, b, out=np.empty_like(z))
    got = z.copy()
    assert extra.bias_activation(be, name, got, b, out=got) is got
    np.testing.assert_array_equal(got, want)
    frozen = z.copy()
    frozen.flags.writeable = False
    np.testing.assert_array_equal(extra.bias_activation(be, name, frozen, b), want)
    reads_input = name in ("gelu", "gelu_tanh", "silu", "mish")
    s = z if reads_input else want  # the array the backward reads
    db_want, db_got = np.empty(700, np.float32), np.empty(700, np.float32)
    dz_want = extra.bias_activation_backward(be, name, dy, z, want, dz=np.empty_like(dy),
                                             db=db_want)
    g = dy.copy()
    assert extra.bias_activation_backward(be, name, g, z, want, dz=g, db=db_got) is g
    np.testing.assert_array_equal(g, dz_want)
    np.testing.assert_array_equal(db_got, db_want)
    s2 = s.copy()
    x_arg, y_arg = (s2, want) if reads_input else (z, s2)
    assert extra.activation_backward(be, name, dy, x_arg, y_arg, out=s2) is s2
    np.testing.assert_array_equal(s2, dz_want)


def test_cuda_family_is_registered_for_the_compile_test():
    from fastnn.kernels.cuda import activations_extra_sources as cuda_extra
    from fastnn.kernels.cuda import sources

    assert sources.SOURCES["activation_extra"] is cuda_extra.ACTIVATION_EXTRA
    assert sorted(cuda_extra.ACTIVATION_EXTRA_CODES) == sorted(KERNEL_NAMES)
    code = cuda_extra.ACTIVATION_EXTRA.code("float32")
    for name in KERNEL_NAMES:
        assert f"case FASTNN_ACTX_{name.upper()}:" in code
