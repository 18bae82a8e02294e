"""Normalization layers: gradients, running statistics, torch oracle."""

from __future__ import annotations

import numpy as np
import pytest

from fastnn import (
    BatchNormalization,
    GroupNormalization,
    InstanceNormalization,
    LayerNormalization,
    gradcheck,
)
from tests.conftest import assert_close

RNG = np.random.default_rng(0)

CASES = [
    ("bn_2d", lambda be: BatchNormalization(backend=be), (5, 3)),
    ("bn_nchw", lambda be: BatchNormalization(axis=1, backend=be), (3, 2, 2, 3)),
    ("bn_noaffine", lambda be: BatchNormalization(center=False, scale=False, backend=be), (4, 3)),
    ("ln", lambda be: LayerNormalization(backend=be), (3, 5)),
    ("ln_multi", lambda be: LayerNormalization(axis=(1, 2), backend=be), (2, 3, 4)),
    ("gn", lambda be: GroupNormalization(groups=2, backend=be), (2, 4, 3)),
    ("in", lambda be: InstanceNormalization(backend=be), (2, 3, 2, 2)),
]


def _with_random_affine(layer, shape, be):
    """Build and give gamma/beta non-trivial values so their gradients matter."""
    layer.forward(be.asarray(np.zeros(shape, dtype=layer.dtype) + 0.5), training=False)
    for key in ("gamma", "beta"):
        if key in layer.params:
            p = layer.params[key]
            p[...] = be.asarray(RNG.uniform(0.5, 1.5, p.shape).astype(p.dtype))
    return layer


@pytest.mark.parametrize("name, make, shape", CASES, ids=[c[0] for c in CASES])
def test_normalization_gradcheck(backend, name, make, shape):
    layer = _with_random_affine(make(backend), shape, backend)
    x = RNG.standard_normal(shape) * 2.0 + 1.0
    assert gradcheck(layer, x).max_rel_error < 1e-6


@pytest.mark.parametrize("name, make, shape", CASES, ids=[c[0] for c in CASES])
def test_normalization_matches_numpy(backend, reference, name, make, shape):
    x = RNG.standard_normal(shape).astype(np.float32)
    dy = RNG.standard_normal(shape).astype(np.float32)
    outs = []
    for be in (reference, backend):
        layer = make(be)
        y = layer.forward(be.asarray(x), training=True)
        dx = layer.backward(be.asarray(dy))
        outs.append([be.to_numpy(y), be.to_numpy(dx)])
    for ref, got in zip(*outs, strict=True):
        assert_close(got, ref, np.float32)


def test_batchnorm_running_statistics_and_inference(backend):
    layer = BatchNormalization(momentum=0.5, backend=backend, dtype="float64")
    x = np.array([[1.0, 10.0], [3.0, 30.0]])
    y = backend.to_numpy(layer.forward(backend.asarray(x), training=True))
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=1e-12)
    mm = backend.to_numpy(layer.states["moving_mean"])
    mv = backend.to_numpy(layer.states["moving_variance"])
    np.testing.assert_allclose(mm, 0.5 * 0 + 0.5 * x.mean(axis=0))
    np.testing.assert_allclose(mv, 0.5 * 1 + 0.5 * x.var(axis=0))
    y_inf = backend.to_numpy(layer.forward(backend.asarray(x), training=False))
    np.testing.assert_allclose(y_inf, (x - mm) / np.sqrt(mv + 1e-3))
    # inference backward is the plain scaling
    dx = backend.to_numpy(layer.backward(backend.asarray(np.ones_like(x))))
    np.testing.assert_allclose(dx, np.ones_like(x) / np.sqrt(mv + 1e-3))


def test_batchnorm_matches_torch_training_output():
    torch = pytest.importorskip("torch")
    x = RNG.standard_normal((4, 3, 2, 2))
    layer = BatchNormalization(axis=1, epsilon=1e-5, dtype="float64")
    y = layer.forward(x, training=True)
    ref = torch.nn.functional.batch_norm(torch.from_numpy(x), None, None, training=True,
                                         eps=1e-5)
    np.testing.assert_allclose(y, ref.numpy(), rtol=1e-10, atol=1e-12)


def test_layer_group_instance_norm_match_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = RNG.standard_normal((2, 4, 3, 3))
    t = torch.from_numpy(x)
    ln = LayerNormalization(axis=(1, 2, 3), epsilon=1e-5, dtype="float64")
    np.testing.assert_allclose(ln.forward(x), F.layer_norm(t, (4, 3, 3), eps=1e-5).numpy(),
                               rtol=1e-10, atol=1e-12)
    gn = GroupNormalization(groups=2, epsilon=1e-5, dtype="float64")
    np.testing.assert_allclose(gn.forward(x), F.group_norm(t, 2, eps=1e-5).numpy(),
                               rtol=1e-10, atol=1e-12)
    inorm = InstanceNormalization(epsilon=1e-5, dtype="float64")
    np.testing.assert_allclose(inorm.forward(x), F.instance_norm(t, eps=1e-5).numpy(),
                               rtol=1e-10, atol=1e-12)


def test_errors():
    with pytest.raises(ValueError, match="4 channels do not split into 3 groups"):
        GroupNormalization(groups=3, dtype="float64").forward(np.zeros((2, 4, 2)))
    with pytest.raises(ValueError, match="axis 5 is not a feature axis"):
        BatchNormalization(axis=5, dtype="float64").forward(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="momentum must be in"):
        BatchNormalization(momentum=1.5)
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        LayerNormalization(epsilon=0)
