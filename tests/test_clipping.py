"""Gradient clipping (Keras's clipnorm / clipvalue / global_clipnorm) on every backend.

The expected values are written here from the Keras formulas; an SGD step with learning rate 1
and no momentum turns the clipped gradient into the parameter change, so the tests read it
back from the parameters. The caller's gradient arrays must never change.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from fastnn import optimizers
from tests.conftest import assert_close


def _grads(dtype=np.float64):
    rng = np.random.default_rng(7)
    return {
        "big": (rng.normal(size=(6, 7)) * 3.0).astype(dtype),  # norm ~ 19
        "small": (rng.normal(size=5) * 0.01).astype(dtype),  # norm ~ 0.02
        "zero": np.zeros(4, dtype=dtype),
    }


def _applied(backend, dtype=np.float64, **clip):
    """The gradient SGD(lr=1) applied, per key, and the caller's gradients afterwards."""
    host = _grads(dtype)
    params = {k: backend.asarray(np.zeros_like(g)) for k, g in host.items()}
    grads = {k: backend.asarray(g.copy()) for k, g in host.items()}  # host stays pristine
    opt = optimizers.SGD(learning_rate=1.0, backend=backend, **clip)
    opt.update(params, grads)
    applied = {k: -backend.to_numpy(p) for k, p in params.items()}
    after = {k: backend.to_numpy(g) for k, g in grads.items()}
    return host, applied, after


def _keras_clip_by_norm(g, clip):
    norm = np.sqrt(np.sum(g.astype(np.float64) ** 2))
    return g * (clip / max(norm, clip))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clipnorm_clips_each_gradient_to_its_norm(backend, dtype):
    host, applied, after = _applied(backend, dtype, clipnorm=1.0)
    for k, g in host.items():
        assert_close(applied[k], _keras_clip_by_norm(g, 1.0), dtype, what=k)
        np.testing.assert_array_equal(after[k], g, err_msg=f"caller's gradient {k} changed")
    assert np.linalg.norm(applied["big"]) == pytest.approx(1.0, rel=1e-5)
    assert_close(applied["small"], host["small"], dtype, what="a small gradient is untouched")
    assert np.all(applied["zero"] == 0.0), "a zero gradient stays zero (no 0/0)"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_global_clipnorm_scales_every_gradient_by_one_factor(backend, dtype):
    host, applied, after = _applied(backend, dtype, global_clipnorm=2.0)
    total = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in host.values()))
    scale = 2.0 / max(total, 2.0)
    assert scale < 0.5, "the test needs a global norm well above the clip"
    for k, g in host.items():
        assert_close(applied[k], g * scale, dtype, what=k)
        np.testing.assert_array_equal(after[k], g)
    joint = math.sqrt(sum(float(np.sum(a.astype(np.float64) ** 2)) for a in applied.values()))
    assert joint == pytest.approx(2.0, rel=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clipvalue_clips_elementwise(backend, dtype):
    host, applied, after = _applied(backend, dtype, clipvalue=0.5)
    for k, g in host.items():
        assert_close(applied[k], np.clip(g, -0.5, 0.5), dtype, what=k)
        np.testing.assert_array_equal(after[k], g)
    assert np.max(np.abs(applied["big"])) == pytest.approx(0.5)


def test_clipnorm_and_clipvalue_apply_both_norm_first(backend):
    host, applied, _ = _applied(backend, clipnorm=5.0, clipvalue=0.3)
    for k, g in host.items():
        assert_close(applied[k], np.clip(_keras_clip_by_norm(g, 5.0), -0.3, 0.3), what=k)


def test_global_clipnorm_below_the_norm_changes_nothing(backend):
    host, applied, _ = _applied(backend, global_clipnorm=1e6)
    for k, g in host.items():
        np.testing.assert_array_equal(applied[k], g)


def test_clipping_composes_with_adam(backend, reference):
    """Adam with clipnorm equals Adam fed the clipped gradients (clip before the rule, before
    the weight decay is added, as clip_grad_norm_ then optimizer.step() in PyTorch)."""
    host = _grads()
    p0 = {k: np.linspace(-1.0, 1.0, g.size).reshape(g.shape) for k, g in host.items()}
    clipped_params = {k: backend.asarray(v) for k, v in p0.items()}
    opt = optimizers.Adam(learning_rate=0.1, weight_decay=0.1, clipnorm=1.0, backend=backend)
    plain_params = {k: v.copy() for k, v in p0.items()}
    plain = optimizers.Adam(learning_rate=0.1, weight_decay=0.1, backend=reference)
    for _ in range(3):
        opt.update(clipped_params, {k: backend.asarray(g) for k, g in host.items()})
        plain.update(plain_params, {k: _keras_clip_by_norm(g, 1.0) for k, g in host.items()})
    for k in host:
        assert_close(clipped_params[k], plain_params[k], what=k)


def test_non_finite_norm_gives_nan_instead_of_hiding_it(backend):
    params = [backend.asarray(np.zeros(3)), backend.asarray(np.zeros(2))]
    grads = [backend.asarray(np.array([1.0, np.inf, 0.0])), backend.asarray(np.ones(2))]
    opt = optimizers.SGD(learning_rate=1.0, global_clipnorm=1.0, backend=backend)
    opt.update(params, grads)
    assert np.all(np.isnan(backend.to_numpy(params[1])))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"clipnorm": 1.0, "global_clipnorm": 1.0},
         "SGD: only one of clipnorm and global_clipnorm can be set"),
        ({"clipnorm": -1.0}, "SGD: clipnorm must be a number > 0 or None"),
        ({"clipvalue": 0.0}, "SGD: clipvalue must be a number > 0 or None"),
        ({"global_clipnorm": float("nan")}, "SGD: global_clipnorm must be a number > 0"),
    ],
)
def test_invalid_clipping_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        optimizers.SGD(backend="numpy", **kwargs)


def test_every_optimizer_takes_the_keras_clipping_arguments():
    for name in optimizers.names():
        opt = optimizers._REGISTRY[name](clipnorm=1.0, clipvalue=2.0, backend="numpy")
        config = opt.get_config()
        assert (config["clipnorm"], config["clipvalue"], config["global_clipnorm"]) == (
            1.0, 2.0, None)


# -- the two backend ops behind clipping ----------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_gradient_op_equals_reference(backend, reference, dtype):
    rng = np.random.default_rng(11)
    g_host = (rng.normal(size=(33, 17)) * 2.0).astype(dtype)
    g_host[0, 0] = np.nan  # NaN passes through, as with np.clip
    for scale, clip in [(0.25, None), (1.0, 0.7), (3.0, 1.5)]:
        g = backend.asarray(g_host.copy())
        out = backend.xp.empty_like(g)
        result = backend.clip_gradient(g, out, scale=scale, clip_value=clip)
        assert result is out
        expected = reference.clip_gradient(g_host, np.empty_like(g_host), scale, clip)
        assert_close(out, expected, dtype, what=f"scale={scale}, clip={clip}")
        np.testing.assert_array_equal(backend.to_numpy(g), g_host)
    g = backend.asarray(g_host.copy())
    backend.clip_gradient(g, g, scale=0.5, clip_value=0.2)  # in place when out is grad
    assert_close(g, np.clip(g_host * dtype(0.5), -0.2, 0.2), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sum_of_squares_op(backend, dtype):
    rng = np.random.default_rng(12)
    x_host = rng.normal(size=(301, 7)).astype(dtype)
    expected = float(np.sum(x_host.astype(np.float64) ** 2))
    value = backend.sum_of_squares(backend.asarray(x_host))
    assert isinstance(value, float)
    assert value == pytest.approx(expected, rel=1e-5 if dtype == np.float32 else 1e-12)
    strided = backend.asarray(x_host)[:, ::2]
    assert backend.sum_of_squares(strided) == pytest.approx(
        float(np.sum(x_host[:, ::2].astype(np.float64) ** 2)), rel=1e-5)
