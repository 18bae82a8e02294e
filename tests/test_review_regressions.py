"""Regressions found in review: a deep-copied model keeps training, the image-by-image
Conv2D backward sums dW/db independently of the thread split, and the OpenBLAS whose thread
count fastnn limits is NumPy's even when SciPy loaded its own."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import fastnn
from fastnn import optimizers
from fastnn.backends import unavailable_reason
from fastnn.layers import Dense
from tests.conftest import parallel_build_only

REPO = Path(__file__).resolve().parents[1]


def test_deep_copied_model_trains_like_the_original(backend):
    """copy.deepcopy of a trained model: its parameters live in its own flat buffer and the
    copy continues exactly as the original (it used to stop learning silently)."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 3)), rng.normal(size=(16, 2))
    backend.seed(0)
    model = fastnn.Sequential([Dense(4, activation="tanh", input_dim=3), Dense(2)],
                              backend=backend, dtype="float64", seed=0)
    model.compile(optimizers.Adam(0.01), "mse")
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    clone = copy.deepcopy(model)
    before = clone.get_weights()
    for m in (model, clone):
        m.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    after = clone.get_weights()
    assert all(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    for a, b in zip(model.get_weights(), after, strict=True):
        np.testing.assert_array_equal(a, b)
    for name, p, g in clone.named_parameters():
        assert np.shares_memory(p, clone.flat_parameters()), name
        assert np.shares_memory(g, clone.flat_gradients()), name
        assert not np.shares_memory(p, model.flat_parameters()), name


def _split_runner(groups_of):
    """A stand-in for parallel_items that hands the items to workers as ``groups_of`` says,
    one worker after the other."""

    def run(body, items):
        groups = groups_of(list(range(items)))
        for worker, group in enumerate(groups):
            body(worker, iter(group))
        return len(groups)

    return run


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_image_by_image_conv_gradients_do_not_depend_on_the_thread_split(monkeypatch, dtype):
    reason = unavailable_reason("numba")
    if reason is not None:
        pytest.skip(reason)
    from fastnn.kernels.cpu import conv as cpu_conv

    be = fastnn.get_backend("numba")
    monkeypatch.setattr(cpu_conv, "SERIAL_GEMM_MACS", 0)  # every size takes the BLAS path
    monkeypatch.setattr(cpu_conv, "IMAGE_BY_IMAGE", True)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((11, 3, 9, 8)).astype(dtype)
    W = rng.standard_normal((5, 3, 3, 3)).astype(dtype)
    y, saved = be.conv2d_forward(x, W, None, (1, 1), (1, 1, 1, 1))
    assert saved.ndim == 4  # the image-by-image path
    dy = rng.standard_normal(y.shape).astype(dtype)
    splits = {
        "one worker": lambda items: [items],
        "alternating": lambda items: [items[0::2], items[1::2]],
        "reversed halves": lambda items: [items[len(items) // 2:], items[:len(items) // 2]],
    }
    results = {}
    for name, split in splits.items():
        monkeypatch.setattr(cpu_conv, "parallel_items", _split_runner(split))
        dW, db = np.empty_like(W), np.empty(5, dtype)
        dx = be.conv2d_backward(dy, W, saved, x.shape, (1, 1), (1, 1, 1, 1), dW=dW, db=db)
        results[name] = (dW, db, dx)
    first = results["one worker"]
    for name, got in results.items():
        for what, a, b in zip(("dW", "db", "dx"), first, got, strict=True):
            np.testing.assert_array_equal(a, b, err_msg=f"{what} with split {name!r}")
    ref = fastnn.get_backend("numpy")
    _, cols = ref.conv2d_forward(x, W, None, (1, 1), (1, 1, 1, 1))
    dW_ref, db_ref = np.empty_like(W), np.empty(5, dtype)
    ref.conv2d_backward(dy, W, cols, x.shape, (1, 1), (1, 1, 1, 1), dW=dW_ref, db=db_ref)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(first[0], dW_ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(first[1], db_ref, rtol=tol, atol=tol)


def test_blas_limit_reaches_numpys_openblas_when_scipy_loaded_its_own():
    """With SciPy's bundled OpenBLAS loaded first, limit_blas_threads must still set NumPy's
    (it picked whichever came first in a set: SciPy's for most hash seeds)."""
    pytest.importorskip("scipy.linalg")
    pytest.importorskip("numba")
    script = textwrap.dedent("""
        import ctypes, os, sys
        import numpy as np
        import scipy.linalg  # noqa: F401  (loads scipy.libs/libscipy_openblas*.so)
        np.ones((2, 2)) @ np.ones((2, 2))
        own = os.path.dirname(np.__file__) + ".libs" + os.sep
        libs = sorted({line.split()[-1] for line in open("/proc/self/maps")
                       if line.split()[-1].startswith(own) and "openblas" in line.lower()})
        scipy_libs = [line for line in open("/proc/self/maps") if "scipy.libs" in line
                      and "openblas" in line.lower()]
        if len(libs) != 1 or not scipy_libs:
            print("SKIP"); sys.exit(0)
        lib = ctypes.CDLL(libs[0])
        names = [n for n in ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_",
                             "scipy_openblas_get_num_threads", "openblas_get_num_threads")
                 if hasattr(lib, n)]
        get = getattr(lib, names[0])
        get.restype = ctypes.c_int
        getattr(lib, names[0].replace("get", "set"))(2)
        from fastnn.kernels.cpu import blas_threads
        with blas_threads.limit_blas_threads(1):
            inside = get()
        print(inside, get())
    """)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": root}
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                             text=True, timeout=120, check=True).stdout.split()
        if out == ["SKIP"]:
            pytest.skip("NumPy's OpenBLAS is not a bundled numpy.libs copy, or SciPy has none")
        assert out == ["1", "2"], f"PYTHONHASHSEED={seed}: NumPy's OpenBLAS threads " \
                                  f"inside/after the limit: {out}"


def test_data_parallel_reduces_the_gradients_of_a_layer_set_changed_during_fit():
    """A callback freezes a layer between two steps: the model's flat buffers are rebuilt,
    and the all-reduce must follow (it kept reducing the old buffers, so every later step
    applied this rank's unreduced gradient)."""
    from fastnn.callbacks import Callback
    from fastnn.distributed import DataParallel
    from tests.test_distributed import FakeComm

    class FreezeFirstAtEpoch1(Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                self.model.layers[0].trainable = False

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(9, 3)), rng.normal(size=(9, 2))

    def model():
        be = fastnn.get_backend("numpy")
        be.seed(0)
        m = fastnn.Sequential([Dense(4, activation="tanh", input_dim=3), Dense(2)],
                              backend=be, dtype="float64", seed=0)
        m.compile(optimizers.SGD(0.1), "mse")
        return m

    # Batches of 3 on "rank 0 of 2": 2 samples here, weight 2/3, so the fake's sum over two
    # identical ranks (4/3 of the local gradient) differs from the unreduced gradient.
    fit = {"batch_size": 3, "shuffle": False, "verbose": 0}
    inside = model()
    inside.fit(x, y, epochs=2, callbacks=[FreezeFirstAtEpoch1()],
               distributed=DataParallel(comm=FakeComm(0, 2), check_model=False), **fit)
    between = model()
    between.fit(x, y, epochs=1,
                distributed=DataParallel(comm=FakeComm(0, 2), check_model=False), **fit)
    between.layers[0].trainable = False
    between.fit(x, y, epochs=2, initial_epoch=1,
                distributed=DataParallel(comm=FakeComm(0, 2), check_model=False), **fit)
    for a, b in zip(inside.get_weights(), between.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_layers_with_the_name_of_a_layer_already_in_the_model_are_rejected():
    """Parameters and optimizer state are keyed "layer/param": two layers named alike used
    to share one optimizer state in the flat update (or, per parameter, leave one untrained);
    e.g. load_model then add(Dense(...)) in a fresh process repeats an auto name."""
    from fastnn.layers import Residual

    model = fastnn.Sequential([Dense(3, name="d", input_dim=3)], backend="numpy")
    with pytest.raises(ValueError, match=r"already has a layer named 'd'.*Dense\(2\)"):
        model.add(Dense(2, name="d"))
    with pytest.raises(ValueError, match="already has a layer named 'd'"):
        model.add(Residual([Dense(3, name="d")]))  # a nested name counts too
    assert [layer.name for layer in model.layers] == ["d"]
    model.add(Dense(2, name="e"))
    assert [name for name, _, _ in model.named_parameters()] == ["d/W", "d/b", "e/W", "e/b"]


def test_custom_layer_keeping_the_array_add_param_returned_still_trains(backend):
    """``self.w = self.add_param(...)`` (add_param returns the array): the model moves the
    parameter into its flat buffer at build; the layer's attribute must follow, or the
    forward pass keeps using the untrained initial array while the optimizer trains another."""
    from fastnn.layers.base import Layer

    class Scale(Layer):
        def build_params(self, input_shape):
            self.w = self.add_param("w", input_shape, "ones")

        def _forward(self, x, training):
            self._x = x
            return x * self.w

        def _backward(self, dout):
            self.grads["w"][...] = (dout * self._x).sum(axis=0)
            return dout * self.w

    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3))
    y = x @ np.array([[3.0], [-2.0], [0.5]])
    backend.seed(0)
    model = fastnn.Sequential([Scale(input_shape=(3,)), Dense(1)], backend=backend,
                              dtype="float64", seed=0)
    model.compile(optimizers.SGD(0.05), "mse")
    model.fit(x, y, batch_size=8, epochs=3, verbose=0)
    scale = model.layers[0]
    assert scale.w is scale.params["w"]
    w = backend.to_numpy(scale.params["w"])
    assert not np.allclose(w, 1.0)  # trained
    dense_w, dense_b = (backend.to_numpy(a) for a in model.layers[1].params.values())
    np.testing.assert_allclose(model.predict(x), (x * w) @ dense_w + dense_b, rtol=1e-12)


def test_load_model_then_add_gets_a_fresh_automatic_name(tmp_path):
    """In a fresh process, loading a model whose layers are named ``dense_1``, ``dense_2``
    and then adding ``Dense(...)`` must not repeat one of those names."""
    path = tmp_path / "model.npz"
    code = f"""
import numpy as np, fastnn
from fastnn import Dense
m = fastnn.Sequential([Dense(4, input_dim=3), Dense(2)], backend="numpy")
m.compile(optimizer="sgd", loss="mse")
m.save({str(path)!r})
"""
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    code = f"""
import fastnn
from fastnn import Dense
m = fastnn.load_model({str(path)!r})
m.add(Dense(1))
print(",".join(layer.name for layer in m.layers))
"""
    done = subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO,
                          capture_output=True, text=True)
    assert done.stdout.strip() == "dense_1,dense_2,dense_3"


@pytest.mark.parametrize("strided_dy", [False, True], ids=["dy-contiguous", "dy-strided"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numba_lstm_sequence_ops_match_numpy_with_the_batch_split(dtype, strided_dy):
    """The unmasked LSTM runs its recurrence as one op (lstm_sequence_forward/backward); on
    numba the batch is split between threads in whole 8-row tiles. N=19: three tiles, the last
    partial (two threads on a 2-core machine); H=20: a partial GEMM panel in float32. The
    upstream gradient arrives batch-major (read through the (T, N, H) view) or strided (the
    per-step fallback). No earlier test reached this path with more than one tile."""
    reason = unavailable_reason("numba")
    if reason is not None:
        pytest.skip(reason)
    from tests.conftest import assert_close

    n, t, d, h = 19, 4, 3, 20
    rng = np.random.default_rng(11)
    x = rng.standard_normal((n, t, d)).astype(dtype)
    dy = rng.standard_normal((n, t, 2 * h) if strided_dy else (n, t, h)).astype(dtype)
    dy = dy[:, :, ::2] if strided_dy else dy
    dstates = [rng.standard_normal((n, h)).astype(dtype) for _ in range(2)]
    params = None
    results = []
    for name in ("numpy", "numba"):
        layer = fastnn.LSTM(h, return_sequences=True, return_state=True, go_backwards=True,
                            backend=name, dtype=dtype)
        layer.build((t, d))
        if params is None:
            params = {k: rng.standard_normal(v.shape).astype(dtype) * 0.3
                      for k, v in layer.params.items()}
        for k, v in params.items():
            layer.params[k][...] = v
        outs = layer.forward(x)
        dx = layer.backward((dy, *dstates))
        results.append(([o.copy() for o in outs], dx.copy(),
                         {k: g.copy() for k, g in layer.grads.items()},
                         [s.copy() for s in layer.initial_state_grads]))
    (ref_outs, ref_dx, ref_grads, ref_ds0), (outs, dx, grads, ds0) = results
    for k, (a, b) in enumerate(zip(outs, ref_outs, strict=True)):
        assert_close(a, b, dtype, f"output {k}")
    assert_close(dx, ref_dx, dtype, "dx")
    for key in ref_grads:
        assert_close(grads[key], ref_grads[key], dtype, key)
    for k, (a, b) in enumerate(zip(ds0, ref_ds0, strict=True)):
        assert_close(a, b, dtype, f"initial state gradient {k}")


def test_numba_lstm_sequence_bias_gradient_does_not_depend_on_the_thread_count(monkeypatch):
    """lstm_sequence_backward sums the bias gradient inside its threads, one partial sum
    per 8-row tile added in tile order: 1 or 2 threads give the same bits (and the
    forward with its in-kernel bias too)."""
    reason = unavailable_reason("numba")
    if reason is not None:
        pytest.skip(reason)
    import numba

    from fastnn.kernels.cpu import recurrent_sequence

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one Numba thread on this machine: nothing to compare")
    parallel_build_only(monkeypatch, recurrent_sequence._seq_forward,
                        recurrent_sequence._seq_backward)
    be = fastnn.get_backend("numba")
    t, n, h = 5, 27, 32
    rng = np.random.default_rng(12)
    xz = rng.standard_normal((t, n, 4 * h)).astype(np.float32)
    U = (rng.standard_normal((h, 4 * h)) * 0.3).astype(np.float32)
    b = rng.standard_normal(4 * h).astype(np.float32)
    dseq = rng.standard_normal((t, n, h)).astype(np.float32)
    # The same buffers for both thread counts: only the thread count changes between runs.
    hs = np.zeros((t + 1, n, h), np.float32)
    cs = np.zeros((t + 1, n, h), np.float32)
    gates = np.empty((t, n, 4 * h), np.float32)
    act_c = np.empty((t, n, h), np.float32)
    dh, dc = np.empty((n, h), np.float32), np.empty((n, h), np.float32)
    dz, db = np.empty((t, n, 4 * h), np.float32), np.empty(4 * h, np.float32)
    Ut = np.ascontiguousarray(U.T)
    results = []
    old = numba.get_num_threads()
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            be.lstm_sequence_forward(xz, U, hs, cs, gates, act_c, b=b)
            dh[...], dc[...] = 1.0, 0.0
            be.lstm_sequence_backward(dseq, dh, dc, gates, cs, act_c, Ut, dz, db=db)
            results.append([a.copy() for a in (hs, cs, dz, db, dh, dc)])
    finally:
        numba.set_num_threads(old)
    for a, c in zip(*results, strict=True):
        np.testing.assert_array_equal(a, c)


def test_numba_training_steps_hold_blas_to_one_thread_and_restore_it():
    """On numba, fit runs its steps with NumPy's OpenBLAS held to one thread and the
    elementwise kernels serial (Sequential._step_threads), and restores both afterwards."""
    reason = unavailable_reason("numba")
    if reason is not None:
        pytest.skip(reason)
    from fastnn.callbacks import Callback
    from fastnn.kernels.cpu import blas_threads, jit

    if not blas_threads.AVAILABLE:
        pytest.skip("no OpenBLAS whose thread count can be set")
    seen = []

    class Record(Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append((blas_threads.blas_num_threads(), jit._serial.depth))

    setter = blas_threads._FUNCS[0]
    before = blas_threads.blas_num_threads()
    setter(2)  # a count above one, so that holding it to one is observable
    try:
        if blas_threads.blas_num_threads() != 2:
            pytest.skip("this OpenBLAS cannot run two threads")
        rng = np.random.default_rng(0)
        x, y = rng.normal(size=(16, 3)), rng.normal(size=(16, 2))
        model = fastnn.Sequential([Dense(4, input_dim=3), Dense(2)], backend="numba", seed=0)
        model.compile(optimizers.SGD(0.01), "mse")
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[Record()])
        after = (blas_threads.blas_num_threads(), jit._serial.depth)
    finally:
        setter(before)
    assert seen and all(s == (1, 1) for s in seen), seen
    assert after == (2, 0)


def test_fused_step_tests_run_where_numba_is_missing():
    """tests/test_fused_step.py imported the Numba kernel module at its top: where numba is
    not installed (``import fastnn`` works without it) the whole pytest run stopped with a
    collection error. Run with numba hidden, the file passes, its Numba cases skipped."""
    code = textwrap.dedent("""
        import sys
        sys.modules["numba"] = None  # `import numba` now fails, as where it is not installed
        import pytest
        sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "tests/test_fused_step.py"]))
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "skipped" in done.stdout
