"""The backend registry: availability, selection, errors, and the op meta-test."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

import fastnn
from fastnn.backends import NAMES, get_backend, unavailable_reason
from fastnn.kernels.registry import REFERENCE_OPS, op_signature


def test_numpy_always_available():
    assert fastnn.available()[0] == "numpy"
    assert set(fastnn.available()) <= set(NAMES)


def test_unknown_backend_name():
    expected = "unknown backend 'torch'; valid names: numpy, numba, cupy"
    with pytest.raises(ValueError, match=expected):
        get_backend("torch")


def test_unavailable_backend_raises_promptly_with_reason():
    for name in NAMES:
        reason = unavailable_reason(name)
        if reason is None:
            continue
        start = time.perf_counter()
        with pytest.raises(fastnn.BackendUnavailableError) as info:
            get_backend(name)
        assert time.perf_counter() - start < 5.0
        assert name in str(info.value)
        assert "use backend='numpy'" in str(info.value)
        assert info.value.__cause__ is not None or "no device" in str(info.value)


def test_use_backend_scopes_and_restores():
    before = fastnn.current_backend().name
    with fastnn.use_backend("numpy") as be:
        assert be.name == "numpy"
        assert fastnn.current_backend() is be
    assert fastnn.current_backend().name == before


def test_env_var_selects_default():
    code = "import fastnn; print(fastnn.current_backend().name)"
    env = dict(os.environ, FASTNN_BACKEND="numpy")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "numpy"
    env["FASTNN_BACKEND"] = "nope"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode != 0
    assert "FASTNN_BACKEND='nope'" in out.stderr


def test_backend_interface(backend):
    assert backend.name in NAMES
    x = backend.asarray([[1.0, 2.0]], dtype=np.float32)
    assert backend.is_array(x)
    assert x.dtype == np.float32
    host = backend.to_numpy(x)
    assert isinstance(host, np.ndarray)
    np.testing.assert_array_equal(host, [[1.0, 2.0]])
    backend.synchronize()
    backend.seed(3)
    a = backend.rng.random(4)
    backend.seed(3)
    np.testing.assert_array_equal(a, backend.rng.random(4))


def test_every_backend_exposes_every_op_with_the_reference_signature(backend):
    """Meta-test: same op names everywhere, and overrides keep the reference signature."""
    assert set(backend.ops) == set(REFERENCE_OPS)
    for name, ref in REFERENCE_OPS.items():
        fn = backend.ops[name].func
        assert op_signature(fn) == op_signature(ref), (
            f"{backend.name} override of {name!r} has signature {op_signature(fn)}, "
            f"reference has {op_signature(ref)}"
        )


def test_import_with_numpy_alone(tmp_path):
    """With numba and cupy hidden, only 'numpy' is available and the others say why."""
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('numba', 'cupy', 'llvmlite'):\n"
        "            raise ImportError(f'No module named {name!r} (blocked by test)')\n"
        "sys.meta_path.insert(0, _Block())\n"
    )
    code = (
        "import fastnn\n"
        "print(fastnn.backends.available())\n"
        "for n in ('numba', 'cupy'):\n"
        "    try:\n"
        "        fastnn.get_backend(n)\n"
        "    except fastnn.BackendUnavailableError as e:\n"
        "        print(n, 'UNAVAILABLE', e)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.getcwd()]))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "['numpy']"
    assert any(
        line.startswith("numba UNAVAILABLE") and "pip install numba" in line for line in lines
    )
    assert any(line.startswith("cupy UNAVAILABLE") and "cupy" in line for line in lines)


def test_thread_control_is_reexported_without_importing_numba_eagerly():
    """``fastnn.set_num_threads`` exists, but ``import fastnn`` alone must not load Numba."""
    code = ("import sys, fastnn; assert 'numba' not in sys.modules; "
            "assert 'set_num_threads' in fastnn.__all__")
    subprocess.run([sys.executable, "-c", code], check=True)
    pytest.importorskip("numba")
    before = fastnn.get_num_threads()
    fastnn.set_num_threads(1)
    try:
        assert fastnn.get_num_threads() == 1
    finally:
        fastnn.set_num_threads(before)
