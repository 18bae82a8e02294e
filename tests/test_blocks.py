"""Residual and DenseBlock composite layers: gradients of the whole block, nesting, models."""

from __future__ import annotations

import numpy as np
import pytest

from fastnn import (
    Activation,
    Conv2D,
    Dense,
    DenseBlock,
    Flatten,
    GlobalAveragePooling2D,
    MaxPooling2D,
    Residual,
    Sequential,
    gradcheck,
)


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def test_residual_identity_gradcheck(backend):
    block = Residual(
        [Conv2D(3, 3, padding="same", activation="tanh"), Conv2D(3, 3, padding="same")],
        activation="relu",
        backend=backend,
    )
    report = gradcheck(block, _x((2, 3, 5, 4)))
    names = [t.name for t in report.tensors]
    assert names[0] == "input" and len(names) == 5  # input + two (W, b) pairs
    assert report.max_rel_error < 1e-6


def test_residual_projection_gradcheck(backend):
    block = Residual(
        Conv2D(4, 3, strides=2, padding="same", activation="tanh"),
        shortcut=Conv2D(4, 1, strides=2),
        backend=backend,
    )
    x = _x((2, 2, 6, 5), 1)
    assert gradcheck(block, x).max_rel_error < 1e-6
    block.build(x.shape[1:])
    assert block.output_shape == (4, 3, 3)


def test_residual_output_is_branch_plus_input(backend):
    conv = Conv2D(2, 1, use_bias=False, kernel_initializer="zeros")
    block = Residual([conv], backend=backend, dtype="float64")
    x = _x((2, 2, 3, 3), 2)
    np.testing.assert_array_equal(backend.to_numpy(block.forward(backend.asarray(x))), x)


def test_dense_block_gradcheck(backend):
    block = DenseBlock(
        [
            Conv2D(2, 3, padding="same", activation="tanh"),
            [Conv2D(3, 1), Activation("tanh"), Conv2D(2, 3, padding="same")],
        ],
        backend=backend,
    )
    x = _x((2, 2, 4, 4), 3)
    report = gradcheck(block, x)
    assert len(report.tensors) == 1 + 2 * 3
    assert report.max_rel_error < 1e-6
    block.build(x.shape[1:])
    assert block.output_shape == (2 + 2 + 2, 4, 4)


def test_dense_block_concatenates_input_first(backend):
    block = DenseBlock([Conv2D(1, 1)], backend=backend, dtype="float64")
    x = _x((2, 3, 2, 2), 4)
    y = backend.to_numpy(block.forward(backend.asarray(x)))
    np.testing.assert_array_equal(y[:, :3], x)
    w = backend.to_numpy(block.units[0][0].params["W"]).reshape(1, 3)
    np.testing.assert_allclose(y[:, 3], np.einsum("oc,nchw->nhw", w, x), rtol=1e-12)


def test_nested_blocks_gradcheck(backend):
    inner = Residual([Conv2D(2, 3, padding="same", activation="tanh")])
    block = DenseBlock([inner, Conv2D(1, 3, padding="same")], backend=backend)
    report = gradcheck(block, _x((1, 2, 3, 3), 5))
    assert len(report.tensors) == 1 + 2 * 2
    assert report.passed


def test_blocks_in_a_model_train_and_expose_parameters(backend):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((24, 1, 6, 6)).astype(np.float32)
    y = rng.integers(0, 3, 24)
    model = Sequential(
        [
            Conv2D(4, 3, padding="same", activation="relu", input_shape=(1, 6, 6)),
            Residual([Conv2D(4, 3, padding="same", activation="relu"),
                      Conv2D(4, 3, padding="same")], activation="relu"),
            DenseBlock([Conv2D(2, 3, padding="same", activation="relu")] * 1),
            MaxPooling2D(2),
            GlobalAveragePooling2D(),
            Dense(3, activation="softmax"),
        ],
        backend=backend,
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    assert len(model.params) == 2 + 4 + 2 + 2
    expected = sum(int(np.prod(p.shape)) for p in model.params.values())
    assert model.count_params() == expected
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, batch_size=8, epochs=15, verbose=0)
    after = model.evaluate(x, y, verbose=0)
    first = before[0] if isinstance(before, (list, tuple)) else before
    last = after[0] if isinstance(after, (list, tuple)) else after
    assert last < first
    weights = model.get_weights()
    assert len(weights) == len(model.params)


def test_model_with_blocks_gradcheck_through_loss(backend):
    model = Sequential(
        [Residual([Conv2D(2, 3, padding="same", activation="tanh")]), Flatten(),
         Dense(2, activation="softmax")],
        backend=backend,
    )
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    assert gradcheck(model, _x((2, 2, 3, 3), 7), np.array([1, 0])).passed


def test_residual_shape_mismatch_is_explained():
    block = Residual([Conv2D(4, 3)])
    with pytest.raises(ValueError, match=r"branch outputs \(None, 4, 3, 3\) but the shortcut "
                                         r"outputs \(None, 2, 5, 5\); give a projection"):
        block.build((2, 5, 5))


def test_dense_block_unit_must_keep_spatial_size():
    with pytest.raises(ValueError, match="units must keep height and width"):
        DenseBlock([Conv2D(2, 3)]).build((1, 5, 5))


def test_block_arguments_are_checked():
    with pytest.raises(ValueError, match="branch must hold at least one layer"):
        Residual([])
    with pytest.raises(TypeError, match="branch must hold Layers"):
        Residual(["conv"])
    with pytest.raises(ValueError, match="units must be a non-empty list"):
        DenseBlock([])


def test_conv_model_with_blocks_round_trips_through_save_and_load(tmp_path):
    from fastnn import (
        DepthwiseConv2D,
        GlobalMaxPooling2D,
        SeparableConv2D,
        ZeroPadding2D,
    )
    from fastnn.io import load_model, save_model

    model = Sequential(
        [
            Conv2D(4, 3, padding=((1, 0), (0, 1)), activation="relu", input_shape=(1, 8, 8)),
            MaxPooling2D(2, padding="same"),
            DepthwiseConv2D(3, padding=1, depth_multiplier=2),
            SeparableConv2D(3, 3, padding="same"),
            Residual([Conv2D(3, 3, padding="same")], shortcut=Conv2D(3, 1), activation="relu"),
            DenseBlock([Conv2D(2, 3, padding="same"), [Conv2D(2, 1), Activation("relu")]]),
            ZeroPadding2D(1),
            GlobalMaxPooling2D(),
            Dense(2),
        ],
        backend="numpy",
    )
    path = tmp_path / "cnn.npz"
    save_model(model, str(path))
    loaded = load_model(str(path))
    x = _x((3, 1, 8, 8), 8).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
