"""The Numba backend's own GEMM (fastnn.kernels.cpu.gemm) against a float64 product."""

from __future__ import annotations

import numpy as np
import pytest

from fastnn.backends import available

pytestmark = pytest.mark.skipif(
    "numba" not in available(), reason="the GEMM kernel is part of the numba backend"
)

DTYPES = (np.float32, np.float64)
#: Relative error of a float32 / float64 dot product of a few hundred terms, with margin.
RTOL = {np.float32: 2e-5, np.float64: 1e-13}


@pytest.fixture(scope="module")
def G():
    from fastnn.kernels.cpu import gemm

    return gemm


def _operands(rng, m, k, n, dtype, layout_a, layout_b):
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    if layout_a == "F":
        a = np.ascontiguousarray(a.T).T
    if layout_b == "F":
        b = np.ascontiguousarray(b.T).T
    return a, b


def _check(actual, a, b, dtype, extra=None, what=""):
    expected = a.astype(np.float64) @ b.astype(np.float64)
    if extra is not None:
        expected = expected + extra
    scale = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64) + 1.0
    err = np.max(np.abs(actual - expected) / scale)
    assert err < RTOL[dtype], f"{what}: max scaled error {err:.2e}"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("layouts", ["CC", "CF", "FC", "FF"])
@pytest.mark.parametrize(
    "shape",
    [(6, 8, 32), (37, 70, 45), (1600 // 25, 128, 1024 // 8), (13, 300, 64), (100, 513, 97),
     (7, 1, 33), (9, 520, 96)],
    ids=lambda s: "x".join(map(str, s)),
)
def test_products_match_float64(G, dtype, layouts, shape):
    rng = np.random.default_rng(0)
    m, k, n = shape
    a, b = _operands(rng, m, k, n, dtype, *layouts)
    out = np.full((m, n), np.nan, dtype=dtype)  # beta = 0 must not read the old NaNs
    packed = G.pack(b)
    assert packed is not None
    assert G.gemm(a, packed, out)
    _check(out, a, b, dtype, what=f"{layouts} {shape}")
    # Accumulate on top of existing values.
    base = rng.standard_normal((m, n)).astype(dtype)
    acc = base.copy()
    assert G.gemm(a, packed, acc, accumulate=True)
    _check(acc, a, b, dtype, extra=base.astype(np.float64), what=f"{layouts} {shape} +=")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n", [70, 64], ids=["packed-per-call", "b-read-in-place"])
def test_every_path_for_b_gives_the_same_bits(G, dtype, n, monkeypatch):
    """b packed per call, prepared once, or (width a multiple of the panel) read in place:
    the same sums in the same order."""
    rng = np.random.default_rng(1)
    a, b = _operands(rng, 50, 300, n, dtype, "C", "C")
    outs = [np.empty((50, n), dtype) for _ in range(3)]
    assert G.gemm(a, b, outs[0])
    assert G.gemm(a, G.pack(b), outs[1])
    monkeypatch.setattr(G, "UNPACKED_MAX_ROWS", 0)
    assert G.gemm(a, b, outs[2])
    _check(outs[0], a, b, dtype, what=f"n={n}")
    for y in outs[1:]:
        np.testing.assert_array_equal(y, outs[0])


def test_result_does_not_depend_on_the_thread_count(G):
    """Each element is summed by one thread in one order: 1 or 2 threads, same bits."""
    import numba

    rng = np.random.default_rng(2)
    a, b = _operands(rng, 200, 300, 256, np.float32, "C", "C")
    outs = []
    old = numba.get_num_threads()
    try:
        for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(threads)
            y = np.empty((200, 256), np.float32)
            assert G.gemm(a, b, y)
            outs.append(y)
    finally:
        numba.set_num_threads(old)
    for y in outs[1:]:
        np.testing.assert_array_equal(y, outs[0])


def test_packed_reuse_and_snapshot(G):
    """A packed operand serves many products; it is a snapshot of b at packing time."""
    rng = np.random.default_rng(3)
    a, b = _operands(rng, 32, 64, 128, np.float64, "C", "C")
    packed = G.pack(b)
    first = np.empty((32, 128))
    second = np.empty((32, 128))
    G.gemm(a, packed, first)
    G.gemm(a, packed, second)
    np.testing.assert_array_equal(first, second)
    old = a @ b
    b *= 2.0
    G.gemm(a, packed, second)
    np.testing.assert_allclose(second, old, rtol=1e-13)


@pytest.mark.parametrize(
    "why, make",
    [
        ("int operands", lambda r: (np.ones((40, 40), np.int64), np.ones((40, 40), np.int64))),
        ("mixed dtypes", lambda r: (np.ones((40, 40), np.float32), np.ones((40, 40)))),
        ("strided a", lambda r: (np.ones((80, 40))[::2], np.ones((40, 40)))),
        ("inner mismatch", lambda r: (np.ones((40, 41)), np.ones((40, 40)))),
        ("tiny product", lambda r: (np.ones((5, 7)), np.ones((7, 3)))),
        ("3-D operand", lambda r: (np.ones((2, 40, 40)), np.ones((40, 40)))),
    ],
)
def test_declines_what_it_does_not_take(G, why, make):
    a, b = make(np.random.default_rng(0))
    out = np.full((a.shape[0], b.shape[-1]), 5.0)
    assert not G.takes(a, b), why
    assert not G.gemm(a, b, out), why
    assert np.all(out == 5.0), f"{why}: a declined call wrote its output"


def test_declines_bad_outputs(G):
    a = np.ones((40, 50), np.float32)
    b = np.ones((50, 64), np.float32)
    assert not G.gemm(a, b, np.empty((40, 64), np.float64))  # dtype
    assert not G.gemm(a, b, np.empty((40, 65), np.float32))  # shape
    assert not G.gemm(a, b, np.empty((64, 40), np.float32).T)  # not C-contiguous
    ro = np.empty((40, 64), np.float32)
    ro.flags.writeable = False
    assert not G.gemm(a, b, ro)


def test_overlapping_output_is_declined(G):
    buf = np.ones(64 * 64, np.float32)
    a = buf[: 40 * 64].reshape(40, 64)
    b = np.ones((64, 64), np.float32)
    out = buf[64:64 + 40 * 64].reshape(40, 64)  # shifted by one row: partial overlap
    before = out.copy()
    assert not G.gemm(a, b, out)
    np.testing.assert_array_equal(out, before)



def test_numba_matmul_op_uses_the_kernel_and_matches_numpy():
    from fastnn.backends import get_backend

    nb = get_backend("numba")
    ref = get_backend("numpy")
    rng = np.random.default_rng(4)
    a = rng.standard_normal((64, 200)).astype(np.float32)
    b = rng.standard_normal((200, 96)).astype(np.float32)
    expected = ref.matmul(a, b)
    got = nb.matmul(a, b)
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-5)
    prepared = nb.prepare_rhs(b)
    from fastnn.kernels.cpu.gemm import PackedMatrix

    assert isinstance(prepared, PackedMatrix)
    np.testing.assert_allclose(nb.matmul(a, prepared), expected, rtol=2e-5, atol=2e-5)
    # A prepared operand in a product the kernel does not take falls back to BLAS.
    a3 = rng.standard_normal((2, 64, 200)).astype(np.float32)
    np.testing.assert_allclose(nb.matmul(a3, prepared), ref.matmul(a3, b), rtol=2e-5, atol=2e-5)


def test_prepared_weight_falls_back_to_blas_in_linear():
    """``linear`` with a prepared weight and an input the GEMM does not take (float32 input,
    float64 weight) still computes through BLAS with the weight's source."""
    from fastnn.backends import get_backend

    nb = get_backend("numba")
    rng = np.random.default_rng(5)
    W = rng.standard_normal((40, 64))
    prepared = nb.prepare_rhs(W)
    x = rng.standard_normal((3, 40)).astype(np.float32)
    b = rng.standard_normal(64)
    np.testing.assert_allclose(nb.linear(x, prepared, b), x @ W + b, rtol=1e-6)
