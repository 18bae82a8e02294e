"""Numba-specific tests: the vectorised exp, the disk cache and its fallbacks, threads and
flush-to-zero, and the fallbacks to the reference for inputs the kernels do not take."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import fastnn
from tests.conftest import assert_close

pytestmark = pytest.mark.numba

numba = pytest.importorskip("numba")

if fastnn.backends.unavailable_reason("numba") is not None:  # pragma: no cover
    pytest.skip(fastnn.backends.unavailable_reason("numba"), allow_module_level=True)

from fastnn.kernels.cpu import activations, fastexp, jit, threads  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def nb():
    """The Numba backend."""
    return fastnn.get_backend("numba")


@pytest.fixture
def ref():
    """The NumPy reference backend."""
    return fastnn.get_backend("numpy")


# -- fast_exp ------------------------------------------------------------------------------
def _ulp_error(actual: np.ndarray, exact: np.ndarray, dtype) -> np.ndarray:
    """|actual - exact| in units of the last place of the correctly rounded result."""
    rounded = exact.astype(dtype)
    return np.abs(actual.astype(np.float64) - exact) / np.spacing(rounded).astype(np.float64)


@pytest.mark.parametrize(
    ("dtype", "lo", "hi", "max_ulp"),
    [(np.float64, -708.0, 709.7, 2.0), (np.float32, -87.0, 88.7, 2.0)],
    ids=["float64", "float32"],
)
def test_fast_exp_accuracy(dtype, lo, hi, max_ulp):
    """Within 2 ulp of the correctly rounded exp over the whole normal-result range."""
    rng = np.random.default_rng(0)
    x = np.concatenate([
        np.linspace(lo, hi, 1_000_001),
        rng.uniform(-20.0, 20.0, 200_000),
        rng.uniform(-1e-3, 1e-3, 10_000),
        [0.0, -0.0, 1.0, -1.0, 0.5 * np.log(2.0)],
    ]).astype(dtype)
    got = fastexp.exp(x)
    # The reference: float64 exp of the float32 inputs rounds correctly to float32 (bar
    # double-rounding cases); for float64 inputs np.exp itself (< 1 ulp in glibc).
    exact = np.exp(x.astype(np.float64))
    err = _ulp_error(got, exact, dtype)
    worst = int(np.argmax(err))
    rel = np.max(np.abs(got.astype(np.float64) - exact) / exact)
    assert err[worst] <= max_ulp, (
        f"fast_exp({x[worst]!r}) = {got[worst]!r}, exp = {exact[worst]!r}: "
        f"{err[worst]:.2f} ulp (max rel error {rel:.3g})"
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_exp_extremes(dtype):
    """Very negative -> 0 (subnormal results flushed), overflow -> inf, NaN -> NaN, no NaN
    from any non-NaN input."""
    info = np.finfo(dtype)
    x = np.array(
        [-np.inf, -1e30, -1e4, -800.0, -746.0, -740.0, -104.0, -100.0, 89.0, 710.0, 1e4, 1e30,
         np.inf, info.max, -info.max, np.nan],
        dtype=dtype,
    )
    with np.errstate(over="ignore"):
        exact = np.exp(x.astype(np.float64)).astype(dtype)
    got = fastexp.exp(x)
    assert np.isnan(got[-1])
    assert not np.isnan(got[:-1]).any(), got
    assert np.array_equal(np.isinf(got), np.isinf(exact)), (got, exact)
    small = exact[:-1] < info.tiny
    assert (got[:-1][small] >= 0).all() and (got[:-1][small] <= info.tiny).all(), got
    assert (got[x < -1000] == 0).all()


def test_fast_erfc_accuracy_and_extremes():
    """fast_erfc (the exact GELU's) within 2e-12 relative of libm's erfc wherever erfc is a
    normal float64 (measured 9.2e-13, worst just below the series/fraction split at 2.5,
    where 1 - erf cancels), and exact limits: 1 at 0, 0 and 2 in the tails, NaN for NaN."""
    import math

    from fastnn.kernels.cpu.fasterf import ERF_SPLIT, fast_erfc

    @numba.njit(fastmath=set(jit.FASTMATH), error_model="numpy")  # the kernels' flags
    def apply(x, out):
        for i in range(x.shape[0]):
            out[i] = fast_erfc(x[i])

    rng = np.random.default_rng(3)
    x = np.concatenate([np.linspace(-30.0, 30.0, 300_001), rng.uniform(-6.0, 6.0, 100_000),
                        np.nextafter(ERF_SPLIT, [0.0, 9.0]), [0.0, -0.0, 1e-300, -1e-300]])
    got = np.empty_like(x)
    apply(x, got)
    exact = np.array([math.erfc(v) for v in x])
    normal = exact > np.finfo(np.float64).tiny
    rel = np.abs(got[normal] - exact[normal]) / exact[normal]
    worst = int(np.argmax(rel))
    assert rel[worst] < 2e-12, f"fast_erfc({x[normal][worst]!r}): relative error {rel[worst]:.3g}"
    assert (np.abs(got[~normal]) <= np.finfo(np.float64).tiny).all()
    special = np.array([0.0, 40.0, 1e300, np.inf, -40.0, -1e300, -np.inf, np.nan])
    out = np.empty_like(special)
    apply(special, out)
    assert out[0] == 1.0 and (out[1:4] == 0.0).all() and (out[4:7] == 2.0).all()
    assert np.isnan(out[7])


def test_fast_exp_flushes_subnormals_on_every_compute_thread():
    """Inside the kernels FTZ/DAZ is on, on whichever thread runs a block: results in the
    subnormal range are exactly 0 everywhere in a multi-block array."""
    n = jit.BLOCK * 4 * max(1, numba.get_num_threads())
    x = np.full(n, -740.0)  # exp(-740) = 4.2e-322, a float64 subnormal
    assert np.exp(x[0]) > 0
    assert (fastexp.exp(x) == 0).all()
    # ... and no global side effect: NumPy on this thread still produces subnormals.
    assert np.float64(1e-310) * 0.5 > 0
    assert np.exp(np.float64(-740.0)) > 0


def test_tanh_and_sigmoid_accuracy(nb):
    """The exp-based tanh and sigmoid of the kernels, against float64 NumPy."""
    x = np.concatenate([np.linspace(-40.0, 40.0, 400_001), np.linspace(-1e-3, 1e-3, 2001)])
    tanh = nb.activation_forward("tanh", x)
    np.testing.assert_allclose(tanh, np.tanh(x), rtol=4e-16 * 8, atol=0)
    sig = nb.activation_forward("sigmoid", x)
    exact = 1.0 / (1.0 + np.exp(-x))
    np.testing.assert_allclose(sig, exact, rtol=4e-16 * 8, atol=0)
    # float32 tanh forward is served by NumPy's own; fast_tanh (used by fused kernels) directly:
    x32 = x.astype(np.float32)
    tanh32 = np.empty_like(x32)
    activations._act_forward[np.float32](activations.CODES["tanh"], x32, tanh32, 4)
    np.testing.assert_allclose(tanh32, np.tanh(x32.astype(np.float64)), rtol=4e-7, atol=0)


# -- overrides, flags, signatures -----------------------------------------------------------
NUMBA_OPS = {
    "activation_forward", "activation_backward", "bias_activation", "bias_activation_backward",
    "softmax", "softmax_backward", "log_softmax", "softmax_cross_entropy",
    "sparse_softmax_cross_entropy", "sgd_update", "adam_update",
    "matmul", "linear", "linear_backward", "prepare_rhs",  # the backend's own GEMM
}


def test_overrides_registered(nb):
    for op in NUMBA_OPS:
        assert nb.op_sources[op] == "numba", op


def test_jit_flags_keep_nan_semantics():
    flags = jit.JIT_FLAGS["fastmath"]
    assert not {"nnan", "ninf", "fast"} & set(flags)
    assert "reassoc" not in jit.HELPER_FASTMATH


def test_one_signature_per_dtype(nb):
    """Kernels compile one explicit signature per dtype and refuse other types."""
    x = np.ones((3, 4), np.float32)
    nb.activation_forward("relu", x)
    disp = activations._act_forward[np.float32]
    assert len(disp.signatures) == 1
    with pytest.raises(TypeError):
        disp(1, np.ones(3, np.int64), np.ones(3, np.int64), 1)


# -- NaN and inf propagate as in the reference ---------------------------------------------
def test_nan_propagation_matches_reference(nb, ref):
    with np.errstate(invalid="ignore"):
        _nan_checks(nb, ref)


def _nan_checks(nb, ref):
    x = np.array([[1.0, np.nan, 2.0], [0.5, -1.0, 3.0], [np.inf, 0.0, 1.0]])
    for op in ("softmax", "log_softmax"):
        np.testing.assert_array_equal(np.isnan(getattr(nb, op)(x)), np.isnan(getattr(ref, op)(x)))
    for name in ("relu", "sigmoid", "tanh", "linear"):
        a, b = nb.activation_forward(name, x), ref.activation_forward(name, x)
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=name)
    t = np.eye(3)
    (la, da), (lb, db) = nb.softmax_cross_entropy(x, t), ref.softmax_cross_entropy(x, t)
    assert np.isnan(la) and np.isnan(lb)
    np.testing.assert_array_equal(np.isnan(da), np.isnan(db))
    p, q = np.ones(5), np.ones(5)
    g = np.array([1.0, np.nan, 0.0, 1.0, 2.0])
    nb.adam_update(p, g, np.zeros(5), np.zeros(5))
    ref.adam_update(q, g, np.zeros(5), np.zeros(5))
    np.testing.assert_array_equal(np.isnan(p), np.isnan(q))


# -- fallbacks to the reference --------------------------------------------------------------
def _layouts(a: np.ndarray):
    yield "F-order", np.asfortranarray(a)
    wide = np.zeros((a.shape[0], 2 * a.shape[1]), a.dtype)
    wide[:, ::2] = a
    yield "strided", wide[:, ::2]
    ro = a.copy()
    ro.flags.writeable = False
    yield "read-only", ro


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_contiguous_inputs_fall_back_correctly(nb, ref, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 9)).astype(dtype)
    b = rng.standard_normal(9).astype(dtype)
    t = ref.softmax(rng.standard_normal((6, 9)).astype(dtype))
    labels = rng.integers(0, 9, 6)
    for what, v in _layouts(x):
        for name in ("relu", "sigmoid", "tanh"):
            y = ref.activation_forward(name, x)
            assert_close(nb.activation_forward(name, v), y, dtype, f"{name} {what}")
            assert_close(nb.bias_activation(name, v, b), ref.bias_activation(name, x, b),
                         dtype, f"bias {name} {what}")
            assert_close(nb.activation_backward(name, v, x, y),
                         ref.activation_backward(name, x, x, y), dtype, f"bwd {name} {what}")
            db1, db2 = np.empty(9, dtype), np.empty(9, dtype)
            assert_close(nb.bias_activation_backward(name, v, None, y, db=db1),
                         ref.bias_activation_backward(name, x, None, y, db=db2), dtype, what)
            assert_close(db1, db2, dtype, f"db {name} {what}")
        assert_close(nb.softmax(v), ref.softmax(x), dtype, what)
        assert_close(nb.log_softmax(v), ref.log_softmax(x), dtype, what)
        la, da = nb.softmax_cross_entropy(v, t)
        lb, dbb = ref.softmax_cross_entropy(x, t)
        assert_close(la, lb, dtype, what)
        assert_close(da, dbb, dtype, what)
        la, da = nb.sparse_softmax_cross_entropy(v, labels)
        lb, dbb = ref.sparse_softmax_cross_entropy(x, labels)
        assert_close(la, lb, dtype, what)
        assert_close(da, dbb, dtype, what)


def test_strided_parameters_fall_back_correctly(nb, ref):
    rng = np.random.default_rng(1)
    base = rng.standard_normal((8, 10))
    g = rng.standard_normal((8, 5))
    p1, p2 = base.copy(), base.copy()
    m1, v1, m2, v2 = (np.zeros((8, 5)) for _ in range(4))
    for step in (1, 2):
        nb.adam_update(p1[:, ::2], g, m1, v1, step=step)
        ref.adam_update(p2[:, ::2], g, m2, v2, step=step)
        nb.sgd_update(p1[:, 1::2], g, lr=0.1)
        ref.sgd_update(p2[:, 1::2], g, lr=0.1)
    assert_close(p1, p2, np.float64, "strided param")


def test_mixed_dtypes_and_empty_arrays_fall_back(nb, ref):
    x32 = np.linspace(-2, 2, 12, dtype=np.float32).reshape(3, 4)
    out64 = np.empty((3, 4))
    assert_close(nb.activation_forward("tanh", x32, out=out64),
                 ref.activation_forward("tanh", x32, out=np.empty((3, 4))), np.float64)
    xi = np.arange(12).reshape(3, 4)
    np.testing.assert_array_equal(nb.activation_forward("relu", xi - 5),
                                  ref.activation_forward("relu", xi - 5))
    empty = np.zeros((0, 4), np.float32)
    assert nb.activation_forward("relu", empty).shape == (0, 4)
    assert nb.softmax(empty).shape == (0, 4)
    assert nb.bias_activation("relu", empty, np.zeros(4, np.float32)).shape == (0, 4)


def test_bad_arguments_raise_the_reference_errors(nb, ref):
    """A wrong shape, name or label never reaches compiled code: it gets the reference's
    error (so never a crash)."""
    x = np.ones((4, 5), np.float32)
    for be in (nb, ref):
        with pytest.raises(ValueError, match="unknown activation 'nope'"):
            be.activation_forward("nope", x)
        with pytest.raises(ValueError):
            be.activation_forward("relu", x, out=np.empty((5, 4), np.float32))
        with pytest.raises(ValueError):
            be.bias_activation("relu", x, np.ones(3, np.float32))
        with pytest.raises(ValueError):
            be.bias_activation_backward("relu", x, None, x, db=np.empty(3, np.float32))
        with pytest.raises(ValueError):
            be.softmax(x, out=np.empty((4, 4), np.float32))
        with pytest.raises(IndexError):
            be.sparse_softmax_cross_entropy(x, np.array([0, 1, 5, 2]))
        with pytest.raises(IndexError):
            be.sparse_softmax_cross_entropy(x, np.array([0, 1, -6, 2]))
        with pytest.raises((ValueError, IndexError)):
            be.sparse_softmax_cross_entropy(x, np.array([0, 1, 2]))
        with pytest.raises(ValueError):
            be.softmax_cross_entropy(x, np.ones((4, 3), np.float32))
        with pytest.raises(ValueError):
            be.adam_update(np.ones(5), np.ones(4), np.zeros(5), np.zeros(5))


def test_partially_overlapping_output_falls_back(nb, ref):
    buf = np.linspace(-3, 3, 40).reshape(4, 10)
    expected = buf.copy()
    ref.activation_forward("sigmoid", expected[:, :8], out=expected[:, 2:])
    got = buf.copy()
    nb.activation_forward("sigmoid", got[:, :8], out=got[:, 2:])
    assert_close(got, expected, np.float64)


# -- threads -------------------------------------------------------------------------------------
def test_set_num_threads(nb, ref):
    before = threads.get_num_threads()
    limit = numba.config.NUMBA_NUM_THREADS
    rng = np.random.default_rng(2)
    x = rng.standard_normal((257, 300))
    dy = rng.standard_normal((257, 300))
    y = ref.activation_forward("tanh", x)
    db_ref = np.empty(300)
    dz_ref = ref.bias_activation_backward("tanh", dy, x, y, db=db_ref)
    try:
        for n in range(1, limit + 1):
            threads.set_num_threads(n)
            assert threads.get_num_threads() == n
            assert nb.num_threads() == n
            db = np.empty(300)
            assert_close(nb.bias_activation_backward("tanh", dy, x, y, db=db), dz_ref)
            assert_close(db, db_ref, np.float64, f"db with {n} threads")
            assert_close(nb.softmax(x), ref.softmax(x), np.float64, f"{n} threads")
    finally:
        threads.set_num_threads(before)
    for bad in (0, limit + 1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="set_num_threads"):
            threads.set_num_threads(bad)


def test_ftz_daz_scoped_to_kernel_blocks():
    if not threads.FLUSH_DENORMALS:
        pytest.skip("no MXCSR on this CPU")

    @numba.njit
    def probe():
        outside = threads.read_mxcsr()
        old = threads.ftz_enter()
        inside = threads.read_mxcsr()
        threads.ftz_exit(old)
        return outside, inside, threads.read_mxcsr()

    outside, inside, restored = probe()
    assert inside & threads.FTZ_DAZ_BITS == threads.FTZ_DAZ_BITS
    assert restored == outside


# -- the disk cache --------------------------------------------------------------------------
def test_cache_dir_choices(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setattr(jit, "_candidate_dirs", lambda: [blocker / "x", blocker / "y"])
    assert jit.find_cache_dir() is None
    monkeypatch.setattr(jit, "_candidate_dirs", lambda: [blocker / "x", tmp_path / "ok"])
    assert jit.find_cache_dir() == str(tmp_path / "ok")
    monkeypatch.setenv(jit.CACHE_ENV_VAR, "0")
    assert jit.find_cache_dir() is None


def test_cache_dir_honours_numba_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path))
    monkeypatch.delenv(jit.CACHE_ENV_VAR, raising=False)
    assert jit.find_cache_dir().startswith(str(tmp_path))


def test_sources_stamp_covers_every_module(tmp_path, monkeypatch):
    pkg = tmp_path / "cpu"
    shutil.copytree(Path(jit.__file__).parent, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(jit, "_PACKAGE_DIR", pkg)
    stamp = jit.sources_stamp()
    with open(pkg / "fastexp.py", "a") as f:
        f.write("\n# edited\n")
    assert jit.sources_stamp() != stamp


_SCRIPT = textwrap.dedent(
    """
    import numpy as np
    import fastnn
    from fastnn.kernels.cpu import jit, softmax
    be = fastnn.get_backend("numba")
    x = np.linspace(-3, 3, 60, dtype=np.float32).reshape(5, 12)
    y = be.softmax(x)
    ref = fastnn.get_backend("numpy").softmax(x)
    assert np.allclose(y, ref, rtol=1e-5, atol=1e-7), (y, ref)
    disp = softmax._softmax[np.float32]
    print("CACHE_DIR", jit.cache_dir())
    print("HITS", sum(disp.stats.cache_hits.values()))
    print("FILE", fastnn.__file__)
    """
)


def _run_isolated(tmp_path: Path, env_extra: dict[str, str]) -> dict[str, str]:
    """Run _SCRIPT in a fresh interpreter on a copy of the package whose in-tree cache
    directory is blocked by a regular file (unwritable even for root)."""
    site = tmp_path / "site"
    if not site.exists():
        shutil.copytree(REPO / "fastnn", site / "fastnn",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (site / "fastnn" / "kernels" / "cpu" / "__pycache__").write_text("blocked")
    blocker = tmp_path / "home-is-a-file"
    blocker.write_text("blocked")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CACHE")}
    env.update({
        "PYTHONPATH": str(site),
        "HOME": str(blocker / "home"),
        "XDG_CACHE_HOME": str(blocker / "cache"),
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    env.pop(jit.CACHE_ENV_VAR, None)
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True,
                         text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    values = {}
    for line in out.stdout.splitlines():
        key, _, value = line.partition(" ")
        values[key] = value
    assert values["FILE"].startswith(str(site)), values
    return values


def test_unwritable_install_compiles_in_memory(tmp_path):
    """No writable cache location at all: import and first use still work, uncached."""
    values = _run_isolated(tmp_path, {})
    assert values["CACHE_DIR"] == "None"
    assert values["HITS"] == "0"


def test_numba_cache_dir_is_used_and_survives_corruption(tmp_path):
    cache = tmp_path / "numba-cache"
    first = _run_isolated(tmp_path, {"NUMBA_CACHE_DIR": str(cache)})
    assert first["CACHE_DIR"].startswith(str(cache))
    assert list(cache.rglob("*.nbi")), "nothing was cached"
    second = _run_isolated(tmp_path, {"NUMBA_CACHE_DIR": str(cache)})
    assert second["HITS"] == "1"
    for entry in cache.rglob("*.nbc"):
        entry.write_bytes(b"garbage")
    third = _run_isolated(tmp_path, {"NUMBA_CACHE_DIR": str(cache)})
    assert third["HITS"] == "0"
