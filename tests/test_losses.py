"""Every loss: gradients (all reductions, sample weights), formulas, Keras clipping, names,
backend parity, and the Keras program of issue 5 with every loss and optimizer string."""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastnn
from fastnn import Dense, Sequential, gradcheck, losses
from fastnn.losses import Loss
from tests.conftest import assert_close

CANONICAL = sorted(losses._REGISTRY)
N, C = 4, 3
EPS = 1e-7


class WithWeights(Loss):
    """Test helper: ``inner`` evaluated with fixed sample weights (gradcheck has no
    sample_weight argument)."""

    def __init__(self, inner: Loss, weights: np.ndarray) -> None:
        super().__init__(reduction=inner.reduction, backend=inner.backend)
        self.inner = inner
        self.weights = weights

    def describe(self) -> str:
        return f"{self.inner.describe()} with sample_weight"

    def forward(self, pred, target, sample_weight=None):
        return self.inner.forward(pred, target, self.weights)

    def backward(self, dout=1.0):
        return self.inner.backward(dout)


def _inputs(name: str, seed: int = 0):
    """(pred, target) away from clip boundaries and kinks for loss ``name``."""
    rng = np.random.default_rng(seed)
    pred = rng.uniform(0.1, 0.9, (N, C))
    target = rng.uniform(0.1, 0.9, (N, C))
    if name in ("hinge", "squared_hinge"):
        target = rng.choice([-1.0, 1.0], (N, C))
        pred = rng.uniform(-2, 2, (N, C))
        pred = np.where(np.abs(1 - target * pred) < 0.1, pred + 0.3, pred)
    elif name in ("categorical_hinge", "categorical_crossentropy"):
        target = np.eye(C)[rng.integers(0, C, N)]
    elif name == "sparse_categorical_crossentropy":
        target = rng.integers(0, C, N)
    elif name == "binary_crossentropy":
        target = rng.integers(0, 2, (N, C)).astype(float)
    elif name in ("mean_absolute_error", "mean_absolute_percentage_error", "huber"):
        pred = target + rng.choice([-1, 1], (N, C)) * rng.uniform(0.2, 2.0, (N, C))
    elif name in ("cosine_similarity", "log_cosh"):
        pred = rng.standard_normal((N, C)) * 2
        target = rng.standard_normal((N, C))
    return pred, target


# -- gradients ---------------------------------------------------------------------------
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", CANONICAL)
def test_loss_gradcheck(backend, name, reduction, weighted):
    pred, target = _inputs(name)
    loss = losses.get(name, backend=backend)
    loss.reduction = reduction
    if weighted:
        loss = WithWeights(loss, backend.asarray(np.random.default_rng(1).uniform(0.5, 2, N)))
    assert gradcheck(loss, pred, target).max_rel_error < 1e-6


VARIANTS = [
    lambda be: losses.BinaryCrossentropy(from_logits=True, backend=be),
    lambda be: losses.BinaryCrossentropy(label_smoothing=0.2, backend=be),
    lambda be: losses.CategoricalCrossentropy(from_logits=True, backend=be),
    lambda be: losses.CategoricalCrossentropy(label_smoothing=0.1, backend=be),
    lambda be: losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1, backend=be),
    lambda be: losses.SparseCategoricalCrossentropy(from_logits=True, backend=be),
    lambda be: losses.SparseCategoricalCrossentropy(label_smoothing=0.1, backend=be),
    lambda be: losses.SparseCategoricalCrossentropy(
        from_logits=True, label_smoothing=0.3, backend=be
    ),
    lambda be: losses.Huber(delta=0.5, backend=be),
]


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("make", VARIANTS, ids=lambda f: "")
def test_loss_variant_gradcheck(backend, make, weighted):
    loss = make(backend)
    name = loss.keras_name
    pred, target = _inputs(name, seed=2)
    if getattr(loss, "from_logits", False):
        pred = np.random.default_rng(3).standard_normal((N, C)) * 3
    if weighted:
        loss = WithWeights(loss, backend.asarray(np.random.default_rng(4).uniform(0.5, 2, N)))
    assert gradcheck(loss, pred, target).max_rel_error < 1e-6


def test_gradcheck_on_3d_predictions(backend):
    rng = np.random.default_rng(5)
    for name in ("mse", "kld", "cosine_similarity", "categorical_hinge", "huber"):
        pred = rng.uniform(0.1, 0.9, (2, 3, 4))
        target = rng.uniform(0.1, 0.9, (2, 3, 4))
        assert gradcheck(losses.get(name, backend=backend), pred, target).passed, name


# -- formulas ----------------------------------------------------------------------------
def _per_sample(name, p, t):
    """Keras's definitions, written out in NumPy, one value per sample."""
    clip = np.clip
    if name == "hinge" or name == "squared_hinge":
        t = 2 * t - 1 if np.isin(t, (0, 1)).all() else t
    table = {
        "mean_squared_error": lambda: ((p - t) ** 2).mean(-1),
        "mean_absolute_error": lambda: np.abs(p - t).mean(-1),
        "mean_absolute_percentage_error": lambda: 100 * (
            np.abs(t - p) / np.maximum(np.abs(t), EPS)
        ).mean(-1),
        "mean_squared_logarithmic_error": lambda: (
            (np.log(np.maximum(p, EPS) + 1) - np.log(np.maximum(t, EPS) + 1)) ** 2
        ).mean(-1),
        "hinge": lambda: np.maximum(1 - t * p, 0).mean(-1),
        "squared_hinge": lambda: (np.maximum(1 - t * p, 0) ** 2).mean(-1),
        "categorical_hinge": lambda: np.maximum(
            ((1 - t) * p).max(-1) - (t * p).sum(-1) + 1, 0
        ),
        "binary_crossentropy": lambda: -(
            t * np.log(clip(p, EPS, 1 - EPS)) + (1 - t) * np.log(1 - clip(p, EPS, 1 - EPS))
        ).mean(-1),
        "categorical_crossentropy": lambda: -(
            t * np.log(clip(p / p.sum(-1, keepdims=True), EPS, 1 - EPS))
        ).sum(-1),
        "kl_divergence": lambda: (
            clip(t, EPS, 1) * np.log(clip(t, EPS, 1) / clip(p, EPS, 1))
        ).sum(-1),
        "poisson": lambda: (p - t * np.log(p + EPS)).mean(-1),
        "cosine_similarity": lambda: -(
            (t / np.linalg.norm(t, axis=-1, keepdims=True))
            * (p / np.linalg.norm(p, axis=-1, keepdims=True))
        ).sum(-1),
        "huber": lambda: np.where(
            np.abs(p - t) <= 1, 0.5 * (p - t) ** 2, np.abs(p - t) - 0.5
        ).mean(-1),
        "log_cosh": lambda: np.log(np.cosh(p - t)).mean(-1),
    }
    return table[name]()


@pytest.mark.parametrize("name", [n for n in CANONICAL if n != "sparse_categorical_crossentropy"])
def test_value_matches_keras_formula(backend, name):
    pred, target = _inputs(name, seed=6)
    want = _per_sample(name, pred, target)
    loss = losses.get(name, backend=backend)
    loss.reduction = "none"
    p, t = backend.asarray(pred), backend.asarray(target)
    assert_close(loss.forward(p, t), want, np.float64, what=name)
    loss.reduction = "sum"
    assert loss.forward(p, t) == pytest.approx(want.sum(), rel=1e-12)
    loss.reduction = "mean"
    assert loss.forward(p, t) == pytest.approx(want.mean(), rel=1e-12)
    w = np.array([0.0, 1.0, 2.0, 3.0])
    assert loss.forward(p, t, sample_weight=w) == pytest.approx((w * want).sum() / N, rel=1e-12)


@pytest.mark.torch
def test_values_match_torch(backend):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(7)
    p = rng.uniform(0.05, 0.95, (5, 4))
    t = rng.uniform(0.05, 0.95, (5, 4))
    z = rng.standard_normal((5, 4)) * 3
    labels = rng.integers(0, 4, 5)
    onehot = np.eye(4)[labels]
    tp, tt, tz = torch.tensor(p), torch.tensor(t), torch.tensor(z)
    cases = [
        (losses.MeanSquaredError(), p, t, F.mse_loss(tp, tt)),
        (losses.MeanAbsoluteError(), p, t, F.l1_loss(tp, tt)),
        (losses.Huber(delta=0.3), z, t, F.huber_loss(tz, tt, delta=0.3)),
        (losses.BinaryCrossentropy(), p, t, F.binary_cross_entropy(tp, tt)),
        (losses.BinaryCrossentropy(from_logits=True), z, t,
         F.binary_cross_entropy_with_logits(tz, tt)),
        (losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.2), z, onehot,
         F.cross_entropy(tz, torch.tensor(labels), label_smoothing=0.2)),
        (losses.SparseCategoricalCrossentropy(from_logits=True, label_smoothing=0.2), z, labels,
         F.cross_entropy(tz, torch.tensor(labels), label_smoothing=0.2)),
        (losses.KLDivergence(), p, t, F.kl_div(tp.log(), tt, reduction="batchmean")),
        (losses.Poisson(), p, t, F.poisson_nll_loss(tp, tt, log_input=False, eps=EPS)),
        (losses.CosineSimilarity(), z, t, -F.cosine_similarity(tz, tt).mean()),
    ]
    for loss, pred, target, want in cases:
        loss.backend = backend
        got = loss.forward(backend.asarray(pred), backend.asarray(target))
        assert got == pytest.approx(float(want), rel=1e-10), loss.describe()


def test_reductions_and_sample_weight(backend):
    pred, target = _inputs("mse", seed=8)
    p, t = backend.asarray(pred), backend.asarray(target)
    per = backend.to_numpy(losses.MeanSquaredError(reduction="none", backend=backend)(p, t))
    assert per.shape == (N,)
    keras_default = losses.MeanSquaredError(reduction="sum_over_batch_size", backend=backend)
    assert keras_default.reduction == "mean"
    assert keras_default(p, t) == pytest.approx(per.mean())
    assert losses.MeanSquaredError(reduction="sum", backend=backend)(p, t) == pytest.approx(
        per.sum())
    w = np.array([1.0, 0.0, 2.0, 0.5])
    weighted = losses.MeanSquaredError(reduction="none", backend=backend)(p, t, w)
    np.testing.assert_allclose(backend.to_numpy(weighted), per * w)
    with pytest.raises(ValueError, match=r"sample_weight of shape \(4,\).*received shape \(3,\)"):
        losses.MeanSquaredError(backend=backend)(p, t, np.ones(3))
    with pytest.raises(ValueError, match="reduction must be one of"):
        losses.Huber(reduction="avg")


def test_weighted_fused_cross_entropy_equals_unfused(backend):
    rng = np.random.default_rng(9)
    z = backend.asarray(rng.standard_normal((6, 5)))
    labels = rng.integers(0, 5, 6)
    loss = losses.SparseCategoricalCrossentropy(from_logits=True, backend=backend)
    fused = loss(z, labels)
    g_fused = backend.to_numpy(loss.backward()).copy()
    ones = loss(z, labels, sample_weight=np.ones(6))
    g_ones = backend.to_numpy(loss.backward())
    assert ones == pytest.approx(fused, rel=1e-12)
    np.testing.assert_allclose(g_ones, g_fused, rtol=1e-12)
    dense = losses.CategoricalCrossentropy(from_logits=True, backend=backend)
    w = rng.uniform(0, 2, 6)
    assert dense(z, np.eye(5)[labels], w) == pytest.approx(loss(z, labels, w), rel=1e-12)


def test_label_smoothing_sparse_equals_dense(backend):
    rng = np.random.default_rng(10)
    p = backend.asarray(rng.dirichlet(np.ones(4), 5))
    labels = rng.integers(0, 4, 5)
    sparse = losses.SparseCategoricalCrossentropy(label_smoothing=0.3, backend=backend)
    dense = losses.CategoricalCrossentropy(label_smoothing=0.3, backend=backend)
    assert sparse(p, labels) == pytest.approx(dense(p, np.eye(4)[labels]), rel=1e-12)
    np.testing.assert_allclose(backend.to_numpy(sparse.backward()),
                               backend.to_numpy(dense.backward()), rtol=1e-12)
    with pytest.raises(ValueError, match="label_smoothing must lie in"):
        losses.CategoricalCrossentropy(label_smoothing=1.5)


def test_hinge_converts_binary_labels(backend):
    p = backend.asarray(np.array([[0.3, -0.4], [2.0, -2.0]]))
    zero_one = losses.Hinge(backend=backend)(p, np.array([[1.0, 0.0], [0.0, 1.0]]))
    plus_minus = losses.Hinge(backend=backend)(p, np.array([[1.0, -1.0], [-1.0, 1.0]]))
    assert zero_one == pytest.approx(plus_minus)


# -- Keras clipping and numerical edge cases ----------------------------------------------
def _finite(backend, loss, pred, target, dtype="float64"):
    loss.backend = backend
    p = backend.asarray(np.asarray(pred, dtype=dtype))
    value = loss(p, np.asarray(target, dtype=dtype))
    grad = backend.to_numpy(loss.backward())
    assert math.isfinite(value), loss.describe()
    assert np.isfinite(grad).all(), loss.describe()
    return value, grad


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bce_targets_and_predictions_of_exactly_0_and_1(backend, dtype):
    pred = [[0.0, 1.0, 0.0, 1.0, 0.5]]
    target = [[0.0, 1.0, 1.0, 0.0, 1.0]]
    value, grad = _finite(backend, losses.BinaryCrossentropy(), pred, target, dtype)
    # Keras: clip to [1e-7, 1 - 1e-7]; a confidently wrong prediction costs -log(1e-7).
    clip_hi = float(np.asarray(1 - EPS, dtype=dtype))
    want = (-math.log(clip_hi) * 2 - math.log(EPS) - math.log(1 - clip_hi) - math.log(0.5)) / 5
    assert value == pytest.approx(want, rel=1e-4 if dtype == "float32" else 1e-7)
    np.testing.assert_array_equal(grad[0, :4], 0.0)  # clipped entries pass no gradient


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bce_from_logits_finite_at_1e4(backend, dtype):
    pred = [[1e4, -1e4, 1e4, -1e4]]
    target = [[1.0, 0.0, 0.0, 1.0]]
    value, grad = _finite(backend, losses.BinaryCrossentropy(from_logits=True), pred, target,
                          dtype)
    assert value == pytest.approx(1e4 / 2, rel=1e-6)  # two right (0), two wrong (1e4 each)
    np.testing.assert_allclose(grad, [[0.0, 0.0, 0.25, -0.25]])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_kld_targets_of_exactly_0_and_1(backend, dtype):
    pred = [[0.0, 1.0, 0.5], [1.0, 0.0, 0.0]]
    target = [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
    value, _ = _finite(backend, losses.KLDivergence(), pred, target, dtype)
    # Row 2 matches exactly: eps log(eps / eps) = 0 and 1 log 1 = 0; row 1 likewise except
    # the eps * log(eps / 0.5) term of the target 0.
    want = (EPS * math.log(EPS / EPS) + EPS * math.log(EPS / 0.5)) / 2
    assert value == pytest.approx(want, rel=1e-3, abs=1e-12)


def test_kld_finite_for_predictions_of_1e4(backend):
    _finite(backend, losses.KLDivergence(), [[1e4, -1e4, 0.5]], [[0.2, 0.3, 0.5]])


def test_categorical_crossentropy_zero_probabilities_finite(backend):
    value, _ = _finite(backend, losses.CategoricalCrossentropy(), [[0.0, 1.0, 0.0]],
                       [[1.0, 0.0, 0.0]])
    assert value == pytest.approx(-math.log(EPS))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cross_entropy_from_logits_finite_at_1e4(backend, dtype):
    loss = losses.SparseCategoricalCrossentropy(from_logits=True, label_smoothing=0.1)
    loss.backend = backend
    z = backend.asarray(np.array([[1e4, -1e4, 0.0]], dtype=dtype))
    assert math.isfinite(loss(z, np.array([1])))
    assert np.isfinite(backend.to_numpy(loss.backward())).all()


@pytest.mark.parametrize("name", ["msle", "mape", "poisson", "cosine_similarity", "logcosh"])
def test_other_clipped_losses_finite_at_edges(backend, name):
    pred = [[0.0, 1.0, 1e4], [0.0, 0.0, 0.0]]
    target = [[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]
    _finite(backend, losses.get(name), pred, target)


# -- backends agree ------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", CANONICAL)
def test_backend_matches_numpy_reference(backend, reference, name, dtype):
    pred, target = _inputs(name, seed=11)
    if name != "sparse_categorical_crossentropy":
        target = target.astype(dtype)
    results = []
    for be in (reference, backend):
        loss = losses.get(name, backend=be)
        value = loss(be.asarray(pred.astype(dtype)), target)
        results.append((value, be.to_numpy(loss.backward())))
    assert results[1][0] == pytest.approx(results[0][0], rel=1e-4 if dtype == "float32" else 1e-7)
    assert results[1][1].dtype == np.dtype(dtype)
    assert_close(results[1][1], results[0][1], dtype, what=name)


# -- names ---------------------------------------------------------------------------------
KERAS_STRINGS = {
    "mse": losses.MeanSquaredError, "mean_squared_error": losses.MeanSquaredError,
    "MSE": losses.MeanSquaredError, "MeanSquaredError": losses.MeanSquaredError,
    "mae": losses.MeanAbsoluteError, "mean_absolute_error": losses.MeanAbsoluteError,
    "mape": losses.MeanAbsolutePercentageError,
    "mean_absolute_percentage_error": losses.MeanAbsolutePercentageError,
    "msle": losses.MeanSquaredLogarithmicError,
    "mean_squared_logarithmic_error": losses.MeanSquaredLogarithmicError,
    "hinge": losses.Hinge, "squared_hinge": losses.SquaredHinge,
    "categorical_hinge": losses.CategoricalHinge,
    "binary_crossentropy": losses.BinaryCrossentropy,
    "BinaryCrossentropy": losses.BinaryCrossentropy,
    "categorical_crossentropy": losses.CategoricalCrossentropy,
    "sparse_categorical_crossentropy": losses.SparseCategoricalCrossentropy,
    "kld": losses.KLDivergence, "KLD": losses.KLDivergence,
    "kl_divergence": losses.KLDivergence, "KLDivergence": losses.KLDivergence,
    "kullback_leibler_divergence": losses.KLDivergence,
    "poisson": losses.Poisson, "cosine_similarity": losses.CosineSimilarity,
    "huber": losses.Huber, "huber_loss": losses.Huber,
    "log_cosh": losses.LogCosh, "logcosh": losses.LogCosh, "LogCosh": losses.LogCosh,
}


@pytest.mark.parametrize("string", sorted(KERAS_STRINGS))
def test_keras_loss_strings(string):
    assert type(losses.get(string)) is KERAS_STRINGS[string]


def test_every_listed_name_resolves():
    for name in losses.names():
        assert isinstance(losses.get(name), Loss)


def test_unknown_loss_lists_valid_names():
    with pytest.raises(ValueError, match="unknown loss 'msee'; valid names: .*kld.*mse"):
        losses.get("msee")


def test_get_config_round_trip():
    for loss in (losses.Huber(delta=0.5), losses.BinaryCrossentropy(True, 0.1),
                 losses.CategoricalCrossentropy(label_smoothing=0.2, reduction="sum")):
        clone = type(loss)(**loss.get_config())
        assert clone.get_config() == loss.get_config()


# -- the Keras program of the issue ----------------------------------------------------------
def _regression_data(n=128, seed=12):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, 3)).astype(np.float32)
    y = 0.5 + 0.4 * np.sin(x @ np.array([1.5, -1.0, 0.7], dtype=np.float32))  # smooth, (0, 1)
    return x, y.astype(np.float32)


def _keras_program(optimizer, loss, backend=None):
    model = Sequential(backend=backend)
    model.add(Dense(1024, input_dim=3, activation="tanh"))
    model.add(Dense(1, activation="softplus"))
    model.compile(optimizer, loss=loss, metrics=["accuracy"])
    return model


def test_issue_keras_program_adamax_kld_loss_decreases(backend):
    if "adamax" not in fastnn.optimizers.names():
        pytest.skip("optimizer 'adamax' is not available yet")
    fastnn.set_seed(0)
    x, y = _regression_data()
    model = _keras_program("adamax", "kld", backend=backend)
    history = model.fit(x, y, epochs=20, batch_size=32, verbose=0)
    loss = history.history["loss"]
    assert len(loss) == 20 and all(math.isfinite(v) for v in loss)
    assert loss[-1] < loss[0]
    assert "accuracy" in history.history


@pytest.mark.parametrize("loss", losses.names())
def test_issue_program_runs_with_every_loss_string(loss):
    x, y = _regression_data(n=64)
    if losses.canonical_name(loss) == "sparse_categorical_crossentropy":
        y = np.zeros(len(x), dtype=np.int64)  # one output unit: class 0 of 1
    model = _keras_program("adam", loss)
    history = model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    assert all(math.isfinite(v) for v in history.history["loss"])


@pytest.mark.parametrize("optimizer", fastnn.optimizers.names())
def test_issue_program_runs_with_every_optimizer_string(optimizer):
    x, y = _regression_data(n=64)
    model = _keras_program(optimizer, "kld")
    history = model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    assert all(math.isfinite(v) for v in history.history["loss"])


def test_target_shapes(backend):
    pred = backend.asarray(np.array([[0.2], [0.7]]))
    loss = losses.MeanSquaredError(backend=backend)
    assert loss(pred, np.array([0.0, 1.0])) == pytest.approx((0.04 + 0.09) / 2)  # (N,) for (N, 1)
    with pytest.raises(ValueError, match=r"target shape \(3,\) does not match prediction shape"):
        loss(pred, np.zeros(3))
