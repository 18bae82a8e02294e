"""Conv2D, DepthwiseConv2D, SeparableConv2D, ZeroPadding2D and the im2col/col2im ops:
gradients, the adjoint identity, backend parity, PyTorch parity and errors."""

from __future__ import annotations

import numpy as np
import pytest

import fastnn
from fastnn import (
    Conv2D,
    Dense,
    DepthwiseConv2D,
    Flatten,
    SeparableConv2D,
    Sequential,
    ZeroPadding2D,
    gradcheck,
)
from fastnn.layers.conv import resolve_padding
from tests.conftest import assert_close

# (padding, strides, dilation_rate) combinations checked on every backend; "same" with an
# even kernel exercises the uneven (bottom/right heavier) split.
GEOMETRIES = [
    ("valid", 1, 1),
    ("same", 1, 1),
    ("same", 2, 1),
    ("valid", 2, 1),
    ("valid", 1, 2),
    ("same", 1, 2),
    (1, 2, 1),
    (((2, 0), (1, 1)), (1, 2), (2, 1)),
]
GEOMETRY_IDS = ["valid", "same", "same-s2", "valid-s2", "valid-d2", "same-d2", "pad1-s2",
                "asym-pad-s12-d21"]

# (N, C, H, W, kh, kw, stride, padding, dilation) raw op geometries for the adjoint test.
OP_GEOMETRIES = [
    (2, 3, 6, 5, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    (1, 2, 7, 8, 2, 3, (2, 3), (0, 1, 2, 0), (1, 2)),
    (2, 1, 9, 9, 3, 2, (3, 1), (2, 2, 0, 1), (2, 3)),
]


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.mark.parametrize("geo", OP_GEOMETRIES)
def test_col2im_is_the_adjoint_of_im2col(backend, geo):
    n, c, h, w, kh, kw, stride, padding, dilation = geo
    rng = _rng(0)
    x = backend.asarray(rng.standard_normal((n, c, h, w)))
    cols = backend.im2col(x, (kh, kw), stride, padding, dilation)
    y = backend.asarray(rng.standard_normal(cols.shape))
    back = backend.col2im(y, x.shape, (kh, kw), stride, padding, dilation)
    lhs = float((cols * y).sum())
    rhs = float((x * back).sum())
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs))


@pytest.mark.parametrize("geo", OP_GEOMETRIES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_im2col_col2im_match_reference(backend, reference, geo, dtype):
    n, c, h, w, kh, kw, stride, padding, dilation = geo
    rng = _rng(1)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    args = ((kh, kw), stride, padding, dilation)
    cols_ref = reference.im2col(x, *args)
    cols = backend.im2col(backend.asarray(x), *args)
    np.testing.assert_array_equal(backend.to_numpy(cols), cols_ref)
    y = rng.standard_normal(cols_ref.shape).astype(dtype)
    assert_close(backend.col2im(backend.asarray(y), x.shape, *args),
                 reference.col2im(y, x.shape, *args), dtype)


def test_im2col_layout_is_channel_major():
    be = fastnn.get_backend("numpy")
    x = np.arange(2 * 2 * 3 * 3, dtype=np.float64).reshape(2, 2, 3, 3)
    cols = be.im2col(x, (2, 2))
    # row (c, i, j), column (n, oh, ow): x[n, c, oh + i, ow + j]
    assert cols.shape == (2 * 2 * 2, 2 * 2 * 2)
    assert cols[(1 * 2 + 0) * 2 + 1, 1 * 4 + 1 * 2 + 0] == x[1, 1, 1, 1]


@pytest.mark.parametrize(("padding", "strides", "dilation"), GEOMETRIES, ids=GEOMETRY_IDS)
def test_conv2d_gradcheck(backend, padding, strides, dilation):
    layer = Conv2D(3, (3, 2), strides=strides, padding=padding, dilation_rate=dilation,
                   backend=backend)
    x = _rng(2).standard_normal((2, 2, 7, 6))
    assert gradcheck(layer, x).max_rel_error < 1e-6


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
def test_conv2d_gradcheck_with_activation_and_groups(backend, activation):
    layer = Conv2D(4, 3, padding="same", activation=activation, groups=2, backend=backend)
    x = _rng(3).standard_normal((2, 4, 5, 4))
    report = gradcheck(layer, x)
    assert [t.name for t in report.tensors] == ["input", "W", "b"]
    assert report.max_rel_error < 1e-6


def test_conv2d_without_bias_gradcheck(backend):
    layer = Conv2D(2, 1, use_bias=False, backend=backend)
    report = gradcheck(layer, _rng(4).standard_normal((3, 3, 2, 3)))
    assert [t.name for t in report.tensors] == ["input", "W"]


@pytest.mark.parametrize(("padding", "strides", "dilation"), GEOMETRIES, ids=GEOMETRY_IDS)
def test_depthwise_gradcheck(backend, padding, strides, dilation):
    layer = DepthwiseConv2D(3, strides=strides, padding=padding, dilation_rate=dilation,
                            depth_multiplier=2, backend=backend)
    x = _rng(5).standard_normal((2, 2, 7, 6))
    assert gradcheck(layer, x).max_rel_error < 1e-6


@pytest.mark.parametrize(("padding", "strides", "dilation"), GEOMETRIES[:4], ids=GEOMETRY_IDS[:4])
def test_separable_gradcheck(backend, padding, strides, dilation):
    layer = SeparableConv2D(3, 3, strides=strides, padding=padding, dilation_rate=dilation,
                            activation="tanh", backend=backend)
    x = _rng(6).standard_normal((2, 2, 6, 5))
    report = gradcheck(layer, x)
    assert [t.name for t in report.tensors] == ["input", "depthwise", "pointwise", "b"]
    assert report.max_rel_error < 1e-6


@pytest.mark.parametrize("padding", [1, (1, 2), ((2, 0), (0, 3))])
def test_zero_padding_gradcheck_and_values(backend, padding):
    layer = ZeroPadding2D(padding, backend=backend)
    x = _rng(7).standard_normal((2, 2, 3, 4))
    assert gradcheck(layer, x).passed
    top, bottom, left, right = resolve_padding(
        fastnn.layers.conv.normalize_padding(padding, "test"), (3, 4), (1, 1), (1, 1), (1, 1)
    )
    y = backend.to_numpy(layer.forward(backend.asarray(x.astype(np.float32))))
    expected = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right))).astype(np.float32)
    np.testing.assert_array_equal(y, expected)


def _run_layer(be, layer, x, dy):
    y = layer.forward(be.asarray(x), training=True)
    dx = layer.backward(be.asarray(dy))
    return [be.to_numpy(y), be.to_numpy(dx)] + [be.to_numpy(g) for g in layer.grads.values()]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    "make",
    [
        lambda be: Conv2D(5, 3, padding="same", activation="relu", backend=be),
        lambda be: Conv2D(4, (2, 3), strides=(2, 1), dilation_rate=(1, 2), backend=be),
        lambda be: Conv2D(4, 3, groups=2, padding=1, backend=be),
        lambda be: DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2, backend=be),
        lambda be: SeparableConv2D(6, 3, padding="same", backend=be),
    ],
    ids=["same-relu", "stride-dilation", "groups", "depthwise", "separable"],
)
def test_backend_matches_numpy_reference(backend, reference, make, dtype):
    rng = _rng(8)
    x = rng.standard_normal((3, 4, 9, 8)).astype(dtype)
    ref_layer = make(reference)
    ref_layer.cast(dtype)
    ref_layer.build(x.shape[1:])
    layer = make(backend)
    layer.cast(dtype)
    layer.build(x.shape[1:])
    for key in ref_layer.params:
        layer.params[key][...] = backend.asarray(reference.to_numpy(ref_layer.params[key]))
    dy = rng.standard_normal((3, *ref_layer.output_shape)).astype(dtype)
    expected = _run_layer(reference, ref_layer, x, dy)
    actual = _run_layer(backend, layer, x, dy)
    for a, e in zip(actual, expected, strict=True):
        assert_close(a, e, dtype)


TORCH_CASES = [
    # (C, F, kernel, strides, padding, dilation, groups)
    (3, 4, 3, 1, "valid", 1, 1),
    (3, 4, 3, 1, "same", 1, 1),
    (2, 6, (3, 2), (2, 1), 1, (1, 2), 1),
    (4, 6, 3, 2, "same", 1, 2),
    (3, 6, 3, 1, 1, 2, 3),
]


@pytest.mark.parametrize("case", TORCH_CASES)
def test_conv2d_matches_torch_float64(backend, case):
    torch = pytest.importorskip("torch")
    c, f, k, s, padding, d, groups = case
    layer = Conv2D(f, k, strides=s, padding=padding, dilation_rate=d, groups=groups,
                   dtype="float64", backend=backend)
    rng = _rng(9)
    x = rng.standard_normal((2, c, 9, 8))
    y = backend.to_numpy(layer.forward(backend.asarray(x)))
    pt, pb, pl, pr = layer._pad
    xt = torch.nn.functional.pad(torch.from_numpy(x), (pl, pr, pt, pb))
    yt = torch.nn.functional.conv2d(
        xt, torch.from_numpy(backend.to_numpy(layer.params["W"])),
        torch.from_numpy(backend.to_numpy(layer.params["b"])),
        stride=layer.strides, dilation=layer.dilation_rate, groups=groups,
    )
    np.testing.assert_allclose(y, yt.numpy(), rtol=1e-12, atol=1e-12)


def test_conv2d_backward_matches_torch_float64(backend):
    torch = pytest.importorskip("torch")
    layer = Conv2D(4, 3, strides=2, padding=1, dtype="float64", backend=backend)
    rng = _rng(10)
    x = rng.standard_normal((2, 3, 8, 7))
    y = layer.forward(backend.asarray(x))
    g = rng.standard_normal(tuple(y.shape))
    dx = backend.to_numpy(layer.backward(backend.asarray(g)))
    xt = torch.from_numpy(x).requires_grad_()
    wt = torch.from_numpy(backend.to_numpy(layer.params["W"])).requires_grad_()
    bt = torch.from_numpy(backend.to_numpy(layer.params["b"])).requires_grad_()
    torch.nn.functional.conv2d(xt, wt, bt, stride=2, padding=1).backward(torch.from_numpy(g))
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(backend.to_numpy(layer.grads["W"]), wt.grad.numpy(), rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_allclose(backend.to_numpy(layer.grads["b"]), bt.grad.numpy(), rtol=1e-12)


def test_separable_matches_torch_float64(backend):
    torch = pytest.importorskip("torch")
    layer = SeparableConv2D(5, 3, padding="same", depth_multiplier=2, dtype="float64",
                            backend=backend)
    x = _rng(11).standard_normal((2, 3, 6, 6))
    y = backend.to_numpy(layer.forward(backend.asarray(x)))
    p = {k: torch.from_numpy(backend.to_numpy(v)) for k, v in layer.params.items()}
    t = torch.nn.functional.conv2d(torch.from_numpy(x), p["depthwise"], padding=1, groups=3)
    yt = torch.nn.functional.conv2d(t, p["pointwise"], p["b"])
    np.testing.assert_allclose(y, yt.numpy(), rtol=1e-12, atol=1e-12)


def test_same_padding_follows_keras():
    # Output ceil(size / stride); the odd pixel of the padding goes to the bottom/right.
    assert resolve_padding("same", (7, 8), (3, 3), (2, 2), (1, 1)) == (1, 1, 0, 1)
    assert resolve_padding("same", (5, 5), (2, 4), (1, 1), (1, 1)) == (0, 1, 1, 2)
    assert Conv2D(2, 3, strides=2, padding="same").compute_output_shape((1, 7, 8)) == (2, 4, 4)


def test_conv_model_trains_with_buffer_reuse(backend):
    rng = _rng(12)
    x = rng.standard_normal((16, 1, 6, 6)).astype(np.float32)
    y = rng.integers(0, 3, 16)
    model = Sequential(
        [
            Conv2D(4, 3, padding="same", activation="relu", input_shape=(1, 6, 6)),
            DepthwiseConv2D(3, activation="relu"),
            SeparableConv2D(4, 3),
            Flatten(),
            Dense(3, activation="softmax"),
        ],
        backend=backend,
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    suffixes = sorted(name.split("/")[1] for name in model.params)
    # Conv2D W, b; DepthwiseConv2D W, b; SeparableConv2D depthwise, pointwise, b; Dense W, b.
    assert suffixes == ["W", "W", "W", "b", "b", "b", "b", "depthwise", "pointwise"]
    before = model.loss_value(backend.asarray(x), model.prepare_targets(y))
    model.fit(x, y, batch_size=8, epochs=20, verbose=0)
    after = model.loss_value(backend.asarray(x), model.prepare_targets(y))
    assert after < before


def test_conv_model_gradcheck_through_loss(backend):
    model = Sequential(
        [Conv2D(2, 2, activation="tanh"), Flatten(), Dense(3, activation="softmax")],
        backend=backend,
    )
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x = _rng(13).standard_normal((3, 2, 4, 3))
    assert gradcheck(model, x, np.array([0, 2, 1])).passed


# -- errors ----------------------------------------------------------------------------------


def test_wrong_input_shape_names_layer_and_shapes():
    layer = Conv2D(8, 3, input_shape=(3, 28, 28))
    with pytest.raises(ValueError, match=r"Conv2D\(8, \(3, 3\)\)\.forward: expected input of "
                                         r"shape \(None, 3, 28, 28\), received shape"):
        layer.forward(np.zeros((2, 1, 28, 28), dtype=np.float32))


def test_non_image_input_is_refused():
    with pytest.raises(ValueError, match=r"expected NCHW input.*received sample shape \(5,\)"):
        Conv2D(2, 3).forward(np.zeros((2, 5), dtype=np.float32))


def test_window_larger_than_input_is_refused():
    with pytest.raises(ValueError, match="does not fit input of size"):
        Conv2D(2, 5).forward(np.zeros((1, 1, 3, 3), dtype=np.float32))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"filters": 0, "kernel_size": 3}, "filters must be a positive integer"),
        ({"filters": 2, "kernel_size": 0}, "kernel_size must be an integer >= 1"),
        ({"filters": 2, "kernel_size": 3, "strides": (1, 2, 3)}, "strides must be"),
        ({"filters": 2, "kernel_size": 3, "padding": "full"}, "padding must be 'valid'"),
        ({"filters": 2, "kernel_size": 3, "padding": -1}, "padding must be"),
        ({"filters": 3, "kernel_size": 3, "groups": 2}, "divisible by groups"),
        ({"filters": 2, "kernel_size": 3, "activation": "softmax"}, "not supported on feature"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Conv2D(**kwargs)


def test_groups_must_divide_input_channels():
    with pytest.raises(ValueError, match="input channels must be divisible by groups=2"):
        Conv2D(4, 3, groups=2).build((3, 5, 5))


def test_bad_depth_multiplier():
    with pytest.raises(ValueError, match="depth_multiplier must be a positive integer"):
        DepthwiseConv2D(3, depth_multiplier=0)


def test_col2im_shape_mismatch_is_a_clear_error():
    be = fastnn.get_backend("numba") if "numba" in fastnn.available() else None
    if be is None:
        pytest.skip("numba backend unavailable")
    with pytest.raises(ValueError, match=r"col2im: expected columns of shape \(9, 18\)"):
        be.col2im(np.zeros((9, 7)), (2, 1, 3, 3), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1))


@pytest.mark.parametrize(
    "make",
    [
        lambda be: Conv2D(32, 3, padding="same", activation="relu", backend=be),
        lambda be: DepthwiseConv2D(3, padding="same", depth_multiplier=2, backend=be),
    ],
    ids=["conv", "depthwise"],
)
def test_large_shapes_match_reference(backend, reference, make):
    """Shapes big enough for the multi-threaded kernels and the BLAS GEMMs (the small test
    shapes run the serial ones): N=8, C=16, 16x16."""
    dtype = "float32"
    rng = _rng(14)
    x = rng.standard_normal((8, 16, 16, 16)).astype(dtype)
    layers = []
    for be in (reference, backend):
        layer = make(be)
        layer.build(x.shape[1:])
        layers.append(layer)
    for key in layers[0].params:
        layers[1].params[key][...] = backend.asarray(layers[0].params[key])
    dy = rng.standard_normal((8, *layers[0].output_shape)).astype(dtype)
    expected = _run_layer(reference, layers[0], x, dy)
    actual = _run_layer(backend, layers[1], x, dy)
    for a, e in zip(actual, expected, strict=True):
        # Sums of up to 8*16*16 float32 products: compare at the scale of the values.
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4 * float(np.abs(e).max()))


def test_large_im2col_col2im_match_reference(backend, reference):
    """Unfold and fold at a size that runs the multi-threaded kernels (cols of 288 x 2048)."""
    x = _rng(15).standard_normal((8, 32, 16, 16)).astype("float32")
    args = ((3, 3), (1, 1), (1, 1, 1, 1), (1, 1))
    cols = reference.im2col(x, *args)
    np.testing.assert_array_equal(backend.to_numpy(backend.im2col(backend.asarray(x), *args)),
                                  cols)
    assert_close(backend.col2im(backend.asarray(cols), x.shape, *args),
                 reference.col2im(cols, x.shape, *args), np.float32)
