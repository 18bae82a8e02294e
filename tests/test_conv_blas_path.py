"""The Numba Conv2D paths of BLAS-sized convolutions (image by image on Python threads, or
batch-wide columns; flat-plane unfold/fold kernels) against the NumPy reference, and the
BLAS thread helpers of :mod:`fastnn.kernels.cpu.blas_threads`."""

from __future__ import annotations

import numpy as np
import pytest

import fastnn
from fastnn.backends import unavailable_reason
from fastnn.kernels.reference.conv import conv_output_hw
from tests.conftest import assert_close

# (N, C, H, W, F, kh, kw, stride, padding, dilation): the flat unit-stride path ("same",
# stride 1, even and odd kernels, dilation), and the row-by-row path (valid, strided).
CASES = [
    (3, 4, 9, 7, 5, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    (2, 3, 6, 8, 4, 2, 2, (1, 1), (0, 1, 0, 1), (1, 1)),
    (2, 2, 8, 8, 3, 3, 3, (1, 1), (2, 2, 2, 2), (2, 2)),
    (2, 3, 7, 9, 4, 3, 2, (1, 1), (0, 0, 0, 0), (1, 1)),
    (2, 3, 9, 8, 4, 3, 3, (2, 1), (1, 0, 2, 1), (1, 2)),
    (1, 2, 5, 5, 2, 5, 5, (1, 1), (3, 1, 0, 4), (1, 1)),
]


@pytest.fixture
def numba_be():
    """The numba backend, or a skip with its reason."""
    reason = unavailable_reason("numba")
    if reason is not None:
        pytest.skip(reason)
    return fastnn.get_backend("numba")


@pytest.fixture(params=[True, False], ids=["image-by-image", "batch-columns"])
def blas_sized(request, monkeypatch):
    """Route every convolution to the BLAS path, whatever its size, in either layout."""
    from fastnn.kernels.cpu import conv as cpu_conv

    monkeypatch.setattr(cpu_conv, "SERIAL_GEMM_MACS", 0)
    monkeypatch.setattr(cpu_conv, "IMAGE_BY_IMAGE", request.param)
    return cpu_conv


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("with_bias", [True, False])
def test_blas_path_matches_reference(numba_be, blas_sized, case, dtype, with_bias):
    n, c, h, w, f, kh, kw, stride, padding, dilation = case
    ref = fastnn.get_backend("numpy")
    rng = np.random.default_rng(7)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    W = rng.standard_normal((f, c, kh, kw)).astype(dtype)
    b = rng.standard_normal(f).astype(dtype) if with_bias else None
    geo = (stride, padding, dilation, 1)
    y_ref, cols_ref = ref.conv2d_forward(x, W, b, *geo)
    y, cols = numba_be.conv2d_forward(x, W, b, *geo)
    assert_close(y, y_ref, dtype, "forward")
    dy = rng.standard_normal(y_ref.shape).astype(dtype)
    grads = {}
    for name, be, saved in (("ref", ref, cols_ref), ("numba", numba_be, cols)):
        dW = np.empty_like(W)
        db = np.empty(f, dtype) if with_bias else None
        dx = be.conv2d_backward(dy, W, saved, x.shape, *geo, dW=dW, db=db)
        grads[name] = (dx, dW, db)
    for k, what in enumerate(("dx", "dW", "db")):
        if grads["ref"][k] is not None:
            assert_close(grads["numba"][k], grads["ref"][k], dtype, what)


def test_blas_path_buffers_and_no_input_grad(numba_be, blas_sized):
    """Given buffers are used; with need_dx=False only dW and db are written."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    W = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    geo = ((1, 1), (1, 1, 1, 1), (1, 1), 1)
    oh, ow = conv_output_hw((6, 6), (3, 3), *geo[:3])
    p = 2 * oh * ow
    cols = np.empty((27, p), np.float32)
    rows = np.empty((4, p), np.float32)
    out = np.empty((2, 4, oh, ow), np.float32)
    y, saved = numba_be.conv2d_forward(x, W, b, *geo, cols=cols, rows=rows, out=out)
    assert y is out and (saved is cols or saved is x)  # columns, or the input itself
    y_ref, _ = fastnn.get_backend("numpy").conv2d_forward(x, W, b, *geo)
    assert_close(y, y_ref, np.float32)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dW = np.empty_like(W)
    db = np.empty(4, np.float32)
    assert numba_be.conv2d_backward(dy, W, saved, x.shape, *geo, dW=dW, db=db,
                                    need_dx=False, rows=rows) is None
    dW_ref = np.empty_like(W)
    db_ref = np.empty(4, np.float32)
    fastnn.get_backend("numpy").conv2d_backward(dy, W, saved, x.shape, *geo, dW=dW_ref,
                                               db=db_ref, need_dx=False)
    assert_close(dW, dW_ref, np.float32, "dW")
    assert_close(db, db_ref, np.float32, "db")


def test_conv2d_layer_gradcheck_on_blas_path(numba_be, blas_sized):
    layer = fastnn.Conv2D(3, 3, padding="same", backend=numba_be, dtype="float64")
    layer.build((2, 5, 4))
    x = np.random.default_rng(0).standard_normal((2, 2, 5, 4))
    fastnn.gradcheck(layer, x)


def test_limit_blas_threads_restores_the_count():
    from fastnn.kernels.cpu import blas_threads

    before = blas_threads.blas_num_threads()
    with blas_threads.limit_blas_threads(1):
        if blas_threads.AVAILABLE:
            assert blas_threads.blas_num_threads() == 1
        with blas_threads.limit_blas_threads(1):
            pass
        a = np.ones((64, 64), np.float32)
        np.testing.assert_allclose(a @ a, np.full((64, 64), 64.0))
    assert blas_threads.blas_num_threads() == before


def test_parallel_items_hands_out_each_item_once_and_raises():
    from fastnn.kernels.cpu import blas_threads

    seen: list[tuple[int, int]] = []

    def body(worker, items):
        for i in items:
            seen.append((worker, i))

    used = blas_threads.parallel_items(body, 50)
    assert 1 <= used <= blas_threads.worker_count(50)
    assert sorted(i for _, i in seen) == list(range(50))
    assert {w for w, _ in seen} <= set(range(used))

    def failing(worker, items):
        for i in items:
            if i == 7:
                raise RuntimeError("item 7")

    before = blas_threads.blas_num_threads()
    with pytest.raises(RuntimeError, match="item 7"):
        blas_threads.parallel_items(failing, 20)
    assert blas_threads.blas_num_threads() == before
