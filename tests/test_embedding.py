"""Embedding: lookup, scatter-add backward with repeated ids, masks, integer inputs, errors."""

from __future__ import annotations

import numpy as np
import pytest

from fastnn import Embedding, gradcheck
from tests.conftest import assert_close


def test_forward_is_a_row_lookup(backend):
    layer = Embedding(6, 4, backend=backend, dtype="float64")
    ids = np.array([[0, 5, 2], [2, 2, 1]])
    y = layer.forward(backend.asarray(ids))
    W = backend.to_numpy(layer.params["W"])
    assert y.shape == (2, 3, 4)
    assert layer.output_shape == (3, 4)
    np.testing.assert_array_equal(backend.to_numpy(y), W[ids])


@pytest.mark.parametrize("ids_dtype", ["int64", "int32", "float64"])
def test_gradcheck_of_the_weights(backend, ids_dtype):
    """ids cannot be perturbed: the weight gradient is checked, with repeated ids."""
    layer = Embedding(5, 3, backend=backend)
    ids = np.array([[1, 2, 1, 0], [3, 3, 3, 1]]).astype(ids_dtype)
    report = gradcheck(layer, ids, check_inputs=False)
    assert [t.name for t in report.tensors] == ["W"]
    assert report.max_rel_error < 1e-6


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_repeated_ids_accumulate_like_add_at(backend, dtype):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 7, size=(16, 9))
    ids[:, :4] = 3  # many repeats of one row
    dout = rng.standard_normal((16, 9, 40)).astype(dtype)
    layer = Embedding(7, 40, backend=backend, dtype=dtype)
    layer.forward(backend.asarray(ids))
    layer.grads["W"][...] = 123.0  # backward overwrites, never accumulates across calls
    assert layer.backward(backend.asarray(dout)) is None  # ids have no gradient
    expected = np.zeros((7, 40))
    np.add.at(expected, ids.reshape(-1), dout.reshape(-1, 40).astype(np.float64))
    assert_close(layer.grads["W"], expected.astype(dtype), dtype)


def test_embedding_backward_op_matches_reference(backend, reference):
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 50, size=1000).astype(np.intp)
    dout = rng.standard_normal((1000, 33))
    results = []
    for be in (reference, backend):
        dW = be.xp.empty((50, 33))
        be.embedding_backward(be.asarray(ids), be.asarray(dout), dW)
        results.append(be.to_numpy(dW))
    assert_close(results[1], results[0])


def test_mask_zero(backend):
    layer = Embedding(4, 2, mask_zero=True, backend=backend)
    ids = backend.asarray(np.array([[1, 3, 0, 0], [2, 0, 1, 0]]))
    layer.forward(ids)
    mask = backend.to_numpy(layer.compute_mask(ids))
    np.testing.assert_array_equal(mask, [[1, 1, 0, 0], [1, 0, 1, 0]])
    assert Embedding(4, 2, backend=backend).compute_mask(ids) is None


def test_errors_name_the_layer_and_the_values(backend):
    with pytest.raises(ValueError, match=r"Embedding: output_dim must be a positive integer"):
        Embedding(10, 0)
    layer = Embedding(5, 2, backend=backend)
    with pytest.raises(ValueError, match=r"Embedding\(5, 2\)\.forward: ids must lie in \[0, 5\)"
                                         r" \(input_dim\), received id 5"):
        layer.forward(backend.asarray(np.array([[1, 5]])))
    with pytest.raises(ValueError, match=r"received id -1"):
        layer.forward(backend.asarray(np.array([[-1, 2]])))
    with pytest.raises(ValueError, match=r"float ids must hold whole numbers"):
        layer.forward(backend.asarray(np.array([[1.5, 2.0]])))
    with pytest.raises(TypeError, match=r"expected integer ids"):
        layer.forward(backend.asarray(np.array([[True, False]])))
    with pytest.raises(TypeError, match=r"Embedding\(5, 2\)\.forward: expected a "):
        layer.forward([[1, 2]])
