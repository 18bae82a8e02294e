"""Pooling layers: gradients, the max-pool tie rule, backend parity, PyTorch parity, errors."""

from __future__ import annotations

import numpy as np
import pytest

from fastnn import (
    AveragePooling2D,
    GlobalAveragePooling2D,
    GlobalMaxPooling2D,
    MaxPooling2D,
    gradcheck,
)
from tests.conftest import assert_close

# (pool_size, strides, padding): overlapping, strided, "same" with an uneven split, explicit.
POOL_GEOMETRIES = [
    (2, None, "valid"),
    (3, 2, "valid"),
    (3, 2, "same"),
    ((2, 3), (1, 2), "same"),
    (3, 1, 1),
    ((3, 2), 2, (1, 0)),
]
POOL_IDS = ["2x2", "3x3-s2", "3x3-s2-same", "2x3-s12-same", "3x3-pad1", "3x2-s2-pad10"]


def _distinct(shape, seed):
    """Inputs with well separated values, so max pooling sits far from ties (kinks)."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    return (rng.permutation(n).reshape(shape) / n - 0.5) * 4.0


@pytest.mark.parametrize(("pool", "strides", "padding"), POOL_GEOMETRIES, ids=POOL_IDS)
@pytest.mark.parametrize("cls", [MaxPooling2D, AveragePooling2D])
def test_pooling_gradcheck(backend, cls, pool, strides, padding):
    layer = cls(pool, strides=strides, padding=padding, backend=backend)
    report = gradcheck(layer, _distinct((2, 2, 7, 6), 0))
    assert report.max_rel_error < 1e-6
    assert report.tensors[0].skipped_kinks == 0


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("cls", [GlobalAveragePooling2D, GlobalMaxPooling2D])
def test_global_pooling_gradcheck(backend, cls, keepdims):
    layer = cls(keepdims=keepdims, backend=backend)
    x = _distinct((2, 3, 4, 5), 1)
    assert gradcheck(layer, x).max_rel_error < 1e-6
    y = layer.forward(backend.asarray(x.astype(np.float32)))
    assert y.shape == ((2, 3, 1, 1) if keepdims else (2, 3))
    reduce = np.max if cls is GlobalMaxPooling2D else np.mean
    expected = reduce(x.astype(np.float32), axis=(2, 3), keepdims=keepdims)
    assert_close(y, expected, np.float32)


def test_max_pool_tie_goes_to_first_maximum(backend):
    layer = MaxPooling2D(2, strides=1, backend=backend, dtype="float64")
    x = np.array([[[[1.0, 3.0, 3.0], [3.0, 0.0, 3.0]]]])  # (1, 1, 2, 3)
    y = layer.forward(backend.asarray(x))
    np.testing.assert_array_equal(backend.to_numpy(y), [[[[3.0, 3.0]]]])
    dx = backend.to_numpy(layer.backward(backend.asarray(np.array([[[[10.0, 1.0]]]]))))
    # Window 0 holds 3 at (0, 1) and (1, 0): the first in row-major order wins.
    # Window 1 holds 3 at (0, 1), (0, 2) and (1, 2): again (0, 1).
    np.testing.assert_array_equal(dx, [[[[0.0, 11.0, 0.0], [0.0, 0.0, 0.0]]]])


def test_global_max_pool_tie_goes_to_first_maximum(backend):
    layer = GlobalMaxPooling2D(backend=backend, dtype="float64")
    x = np.array([[[[2.0, 5.0], [5.0, 1.0]]]])
    layer.forward(backend.asarray(x))
    dx = backend.to_numpy(layer.backward(backend.asarray(np.array([[4.0]]))))
    np.testing.assert_array_equal(dx, [[[[0.0, 4.0], [0.0, 0.0]]]])


def test_max_pool_propagates_nan(backend):
    layer = MaxPooling2D(2, backend=backend, dtype="float64")
    x = np.array([[[[1.0, np.nan], [7.0, 2.0]]]])
    y = backend.to_numpy(layer.forward(backend.asarray(x)))
    assert np.isnan(y).all()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("pool", "strides", "padding"), POOL_GEOMETRIES, ids=POOL_IDS)
def test_pooling_ops_match_numpy_reference(backend, reference, pool, strides, padding, dtype):
    rng = np.random.default_rng(2)
    # Rounded values create ties, so the tie rule must agree too.
    x = np.round(rng.standard_normal((3, 4, 9, 8)) * 2).astype(dtype)
    for cls in (MaxPooling2D, AveragePooling2D):
        outs = []
        for be in (reference, backend):
            layer = cls(pool, strides=strides, padding=padding, backend=be, dtype=dtype)
            y = layer.forward(be.asarray(x))
            dy = rng.standard_normal(y.shape).astype(dtype) if not outs else outs[0][2]
            dx = layer.backward(be.asarray(dy))
            outs.append((be.to_numpy(y), be.to_numpy(dx), dy))
        assert_close(outs[1][0], outs[0][0], dtype, what=f"{cls.__name__} forward")
        assert_close(outs[1][1], outs[0][1], dtype, what=f"{cls.__name__} backward")


TORCH_POOLS = [(2, 2, 0), (3, 2, 1), (3, 1, 1), ((2, 3), (2, 1), (1, 1))]


@pytest.mark.parametrize(("kernel", "stride", "pad"), TORCH_POOLS)
def test_pooling_matches_torch_float64(backend, kernel, stride, pad):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(3).standard_normal((2, 3, 7, 8))
    g = np.random.default_rng(4).standard_normal
    xt = torch.from_numpy(x)
    for cls, fn, extra in [
        (MaxPooling2D, torch.nn.functional.max_pool2d, {}),
        (AveragePooling2D, torch.nn.functional.avg_pool2d, {"count_include_pad": False}),
    ]:
        layer = cls(kernel, strides=stride, padding=pad, backend=backend, dtype="float64")
        y = layer.forward(backend.asarray(x))
        xg = xt.clone().requires_grad_()
        yt = fn(xg, kernel, stride, pad, **extra)
        np.testing.assert_allclose(backend.to_numpy(y), yt.detach().numpy(), rtol=1e-12,
                                   atol=1e-12)
        dy = g(tuple(yt.shape))
        yt.backward(torch.from_numpy(dy))
        dx = layer.backward(backend.asarray(dy))
        np.testing.assert_allclose(backend.to_numpy(dx), xg.grad.numpy(), rtol=1e-12,
                                   atol=1e-12)


def test_default_strides_equal_pool_size():
    layer = MaxPooling2D((2, 3))
    assert layer.strides == (2, 3)
    assert layer.compute_output_shape((1, 8, 9)) == (1, 4, 3)
    assert MaxPooling2D(3, strides=2, padding="same").compute_output_shape((2, 7, 8)) == (2, 4, 4)


def test_pooling_errors():
    with pytest.raises(ValueError, match="pool_size must be an integer >= 1"):
        MaxPooling2D(0)
    with pytest.raises(ValueError, match="at most half the pool size"):
        AveragePooling2D(2, padding=2)
    with pytest.raises(ValueError, match=r"MaxPooling2D\(\(2, 2\)\).forward: expected input of "
                                         r"shape \(None, 1, 4, 4\)"):
        layer = MaxPooling2D(2, input_shape=(1, 4, 4))
        layer.forward(np.zeros((2, 1, 5, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="does not fit input of size"):
        MaxPooling2D(3).forward(np.zeros((1, 1, 2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="expected NCHW input"):
        GlobalMaxPooling2D().forward(np.zeros((2, 4), dtype=np.float32))


def test_large_pooling_matches_reference(backend, reference):
    """A shape big enough for the multi-threaded pooling kernels (8 x 32 x 32 x 32)."""
    x = np.round(np.random.default_rng(5).standard_normal((8, 32, 32, 32)) * 3).astype("float32")
    dy = np.random.default_rng(6).standard_normal((8, 32, 16, 16)).astype("float32")
    for cls in (MaxPooling2D, AveragePooling2D):
        outs = []
        for be in (reference, backend):
            layer = cls(3, strides=2, padding="same", backend=be)
            y = layer.forward(be.asarray(x))
            dx = layer.backward(be.asarray(dy))
            outs.append((be.to_numpy(y), be.to_numpy(dx)))
        assert_close(outs[1][0], outs[0][0], np.float32, what=f"{cls.__name__} forward")
        assert_close(outs[1][1], outs[0][1], np.float32, what=f"{cls.__name__} backward")
