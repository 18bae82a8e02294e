"""The Numba backend's own GEMM (fastnn.kernels.cpu.gemm) against a float64 product."""

from __future__ import annotations

import numpy as np
import pytest

from fastnn.backends import available
from tests.conftest import parallel_build_only

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


@pytest.mark.parametrize(("m", "n", "dtype", "packs"), [
    (40, 1024, np.float32, False),  # few rows: read in place
    (80, 1024, np.float32, True),  # rows a page apart, many rows: packed
    (80, 512, np.float32, False),  # rows 2 KiB apart: read in place
    (80, 512, np.float64, True),
])
def test_wide_row_major_b_is_packed_for_many_rows(G, m, n, dtype, packs, monkeypatch):
    """A row-major b whose rows lie a page or more apart is packed once a has
    UNPACKED_WIDE_MAX_ROWS rows (each step down a panel would touch a new page); either
    way the sums are the same bits."""
    rng = np.random.default_rng(2)
    a, b = _operands(rng, m, 96, n, dtype, "C", "C")
    calls = []
    original = G.pack
    monkeypatch.setattr(G, "pack", lambda src, out=None: calls.append(1) or original(src, out))
    out = np.empty((m, n), dtype)
    assert G.gemm(a, b, out)
    assert bool(calls) == packs
    want = np.empty_like(out)
    assert G.gemm(a, original(b), want)
    np.testing.assert_array_equal(out, want)


def test_result_does_not_depend_on_the_thread_count(G, monkeypatch):
    """Each element is summed by one thread in one order: 1 or 2 threads, same bits."""
    import numba

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one Numba thread on this machine: nothing to compare")
    parallel_build_only(monkeypatch, G._gemm)

    rng = np.random.default_rng(2)
    # 200 x 256: the threads split the rows of c; 72 x 512 (wider than COLUMN_SPLIT_RATIO
    # times its rows): they split its column panels.
    for m, n in ((200, 256), (72, 512)):
        assert (n > G.COLUMN_SPLIT_RATIO * m) == (m == 72)
        a, b = _operands(rng, m, 300, n, np.float32, "C", "C")
        c0 = rng.standard_normal((m, n)).astype(np.float32)
        outs, sums = [], []
        old = numba.get_num_threads()
        try:
            for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
                numba.set_num_threads(threads)
                y = np.empty((m, n), np.float32)
                assert G.gemm(a, b, y)
                outs.append(y)
                acc = c0.copy()  # accumulate: an element done twice would be added twice
                assert G.gemm(a, b, acc, accumulate=True)
                sums.append(acc)
        finally:
            numba.set_num_threads(old)
        for y, acc in zip(outs[1:], sums[1:], strict=True):
            np.testing.assert_array_equal(y, outs[0])
            np.testing.assert_array_equal(acc, sums[0])
        _check(outs[0], a, b, np.float32, what=f"{m}x300x{n}")
        _check(sums[0], a, b, np.float32, extra=c0, what=f"{m}x300x{n} accumulate")


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



def test_numba_matmul_op_uses_the_kernel_and_matches_numpy(G, monkeypatch):
    from fastnn.backends import get_backend

    nb = get_backend("numba")
    ref = get_backend("numpy")
    rng = np.random.default_rng(4)
    a = rng.standard_normal((64, 200)).astype(np.float32)
    b = rng.standard_normal((200, 96)).astype(np.float32)
    expected = ref.matmul(a, b)
    ran = []
    real_gemm = G.gemm

    def spy(*args, **kwargs):
        done = real_gemm(*args, **kwargs)
        ran.append(done)
        return done

    monkeypatch.setattr(G, "gemm", spy)
    got = nb.matmul(a, b)
    assert ran == [True], "the kernel, not BLAS, must compute this product"
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


def test_packing_scratch_is_released_when_its_thread_ends(G):
    """The per-thread buffer that ``gemm`` packs b into belongs to the thread: it is freed
    when the thread ends (a module dict keyed by thread id kept one buffer per thread that
    ever ran a product, for the life of the process)."""
    import gc
    import threading
    import weakref

    refs = []

    def work():
        rng = np.random.default_rng(6)
        a, b = _operands(rng, 16, 64, 70, np.float32, "C", "C")  # width 70: packed per call
        out = np.empty((16, 70), np.float32)
        assert G.gemm(a, b, out)
        _check(out, a, b, np.float32, what="in a thread")
        refs.append(weakref.ref(G._scratch_buffer(1, np.float32)))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    gc.collect()
    assert len(refs) == 1
    assert refs[0]() is None, "the finished thread's packing buffer is still alive"


@pytest.mark.parametrize("why", ["2-D", "read-only", "overlaps b"])
def test_pack_allocates_instead_of_using_an_unsuitable_buffer(G, why):
    """``pack(b, out)`` reuses ``out`` only where it can write it (flat, writeable, apart
    from ``b``); else it packs into a fresh buffer, as for a wrong dtype or size (a 2-D or
    read-only buffer used to raise Numba's "No matching definition")."""
    rng = np.random.default_rng(7)
    size = G.packed_size(48, 64, np.float32)
    if why == "overlaps b":
        out = np.zeros(size + 48 * 64, np.float32)
        b = out[size // 2:size // 2 + 48 * 64].reshape(48, 64)
        b[...] = rng.standard_normal((48, 64))
    else:
        b = rng.standard_normal((48, 64)).astype(np.float32)
        out = np.zeros(size, np.float32)
        if why == "2-D":
            out = out.reshape(-1, 64)
        else:
            out.flags.writeable = False
    expected_b = b.copy()
    packed = G.pack(b, out)
    assert packed is not None and packed.data is not out
    a = rng.standard_normal((16, 48)).astype(np.float32)
    y = np.empty((16, 64), np.float32)
    assert G.gemm(a, packed, y)
    _check(y, a, expected_b, np.float32, what=why)


@pytest.mark.parametrize(
    "shape", [(8, 600, 261), (37, 1100, 70), (200, 70, 45), (64, 40, 128)],
    ids=["column-split", "column-split-deep", "row-split-edges", "row-split-in-place"],
)
def test_threaded_splits_give_the_serial_bits(G, shape, monkeypatch):
    """Every split of the work between threads (by rows of c, or by column panels when c has
    few rows; edge panels; K over one block) sums each element as the serial build does.
    Products this small run serially by default (PARALLEL_MIN_WORK), so the threshold is
    lowered here: no other test reached these splits with more than one thread."""
    import numba

    if numba.get_num_threads() < 2:
        pytest.skip("one Numba thread: nothing to split")
    rng = np.random.default_rng(8)
    m, k, n = shape
    a, b = _operands(rng, m, k, n, np.float32, "C", "C")
    outs = []
    for threshold in (1 << 62, 0):
        monkeypatch.setattr(G, "PARALLEL_MIN_WORK", threshold)
        y = np.full((m, n), np.nan, np.float32)
        assert G.gemm(a, b, y)
        outs.append(y)
    _check(outs[1], a, b, np.float32, what=f"{shape} threaded")
    np.testing.assert_array_equal(outs[1], outs[0])
