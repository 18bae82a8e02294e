"""Tests for fastnn.utils: to_categorical, set_seed/get_seed, batch_iterator."""

from __future__ import annotations

import random

import numpy as np
import pytest

import fastnn
from fastnn import backends, utils
from fastnn.utils import batch_iterator, get_seed, set_seed, to_categorical

# -- to_categorical -------------------------------------------------------------------------


def test_to_categorical_matches_keras_example():
    # The example in Keras' to_categorical docstring.
    out = to_categorical([0, 1, 2, 3], num_classes=4)
    np.testing.assert_array_equal(out, np.eye(4))
    assert out.dtype == np.float32


def test_to_categorical_infers_num_classes():
    out = to_categorical(np.array([2, 0, 4]))
    assert out.shape == (3, 5)
    assert out.argmax(axis=1).tolist() == [2, 0, 4]
    assert out.sum() == 3


def test_to_categorical_shapes():
    assert to_categorical(np.array([[1], [0]]), 3).shape == (2, 3)  # trailing 1 dropped
    assert to_categorical(np.zeros((2, 5), dtype=int), 3).shape == (2, 5, 3)
    assert to_categorical(np.zeros((4, 2, 1), dtype=int), 3).shape == (4, 2, 3)
    assert to_categorical(np.array([1]), 3).shape == (1, 3)
    scalar = to_categorical(2, 3)
    assert scalar.shape == (3,) and scalar.tolist() == [0, 0, 1]
    empty = to_categorical(np.array([], dtype=np.int64), 4)
    assert empty.shape == (0, 4)


@pytest.mark.parametrize("dtype", ["float32", "float64", np.int64, "uint8"])
def test_to_categorical_dtype(dtype):
    out = to_categorical([1, 0], 2, dtype=dtype)
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, [[0, 1], [1, 0]])


def test_to_categorical_accepts_whole_floats_bools_and_unsigned():
    np.testing.assert_array_equal(to_categorical([1.0, 0.0], 2), [[0, 1], [1, 0]])
    np.testing.assert_array_equal(to_categorical(np.array([True, False])), [[0, 1], [1, 0]])
    np.testing.assert_array_equal(to_categorical(np.array([1, 0], np.uint8)), [[0, 1], [1, 0]])


@pytest.mark.parametrize(
    "y, num_classes, pattern",
    [
        ([0, -1, 2], None, "non-negative, received label -1"),
        ([0, -1, 2], 3, "non-negative, received label -1"),
        ([0, 3, 1], 3, r"< num_classes=3, received label 3"),
        ([0.0, 1.5], None, r"whole numbers, received 1.5 at index \(1,\)"),
        ([0.0, np.nan], 2, "whole numbers, received nan"),
        (["a", "b"], None, "must be integers, received an array of dtype <U1"),
        ([], None, "cannot infer num_classes from empty labels"),
        ([0, 1], 0, r"Received: num_classes=0"),
        ([0, 1], 2.0, r"Received: num_classes=2.0"),
    ],
)
def test_to_categorical_errors(y, num_classes, pattern):
    with pytest.raises(ValueError, match=pattern):
        to_categorical(y, num_classes=num_classes)


# -- set_seed / get_seed --------------------------------------------------------------------


@pytest.fixture
def restore_global_rngs():
    """Put the global generators and fastnn's seed back as they were after the test."""
    py_state, np_state, saved_seed = random.getstate(), np.random.get_state(), utils._seed
    yield
    random.setstate(py_state)
    np.random.set_state(np_state)
    utils._seed = saved_seed
    for name in backends.available():
        backends.get_backend(name).seed(backends.base.DEFAULT_SEED)


def _draws() -> dict[str, list[float]]:
    out = {"random": [random.random() for _ in range(3)], "numpy": np.random.rand(3).tolist()}
    for name in backends.available():
        out[name] = backends.get_backend(name).rng.random(3).tolist()
    return out


def test_set_seed_makes_every_generator_repeat(restore_global_rngs):
    set_seed(123)
    first = _draws()
    set_seed(123)
    assert _draws() == first
    set_seed(124)
    assert _draws()["numpy"] != first["numpy"]
    assert set(first) == {"random", "numpy", *backends.available()}


def test_set_seed_seeds_every_available_backend(restore_global_rngs, monkeypatch):
    seen = []
    for name in backends.available():
        be = fastnn.get_backend(name)
        monkeypatch.setattr(be, "seed", lambda s, name=name: seen.append((name, s)))
    set_seed(5)
    assert seen == [(name, 5) for name in backends.available()]


def test_get_seed_returns_last_seed(restore_global_rngs):
    set_seed(np.int64(42))
    assert get_seed() == 42 and type(get_seed()) is int
    set_seed(0)
    assert get_seed() == 0


@pytest.mark.parametrize("bad", [-1, 2**32, 1.0, "1", None, True])
def test_set_seed_rejects_bad_seeds(bad, restore_global_rngs):
    before = get_seed()
    with pytest.raises(ValueError, match="Received: seed="):
        set_seed(bad)
    assert get_seed() == before


# -- batch_iterator -------------------------------------------------------------------------


def test_batches_in_order_with_partial_last_batch():
    batches = list(batch_iterator(10, 4))
    assert [b.tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert all(b.dtype == np.int64 for b in batches)


@pytest.mark.parametrize("n, batch_size, sizes", [(8, 4, [4, 4]), (3, 10, [3]), (1, 1, [1])])
def test_batch_sizes(n, batch_size, sizes):
    assert [len(b) for b in batch_iterator(n, batch_size)] == sizes


def test_zero_samples_give_no_batches():
    assert list(batch_iterator(0, 4, shuffle=True, rng=0)) == []


def test_shuffled_batches_cover_every_index_once():
    batches = list(batch_iterator(103, 16, shuffle=True, rng=np.random.default_rng(0)))
    assert [len(b) for b in batches] == [16] * 6 + [7]
    order = np.concatenate(batches)
    assert sorted(order.tolist()) == list(range(103))
    assert not np.array_equal(order, np.arange(103))
    assert order.dtype == np.int64


def test_shuffle_is_reproducible():
    def order(rng):
        return np.concatenate(list(batch_iterator(50, 7, shuffle=True, rng=rng)))

    np.testing.assert_array_equal(order(3), order(3))
    np.testing.assert_array_equal(order(np.random.default_rng(3)), order(3))
    np.testing.assert_array_equal(order(np.random.RandomState(3)), order(np.random.RandomState(3)))
    assert not np.array_equal(order(3), order(4))


def test_shuffle_without_rng_follows_set_seed(restore_global_rngs):
    set_seed(9)
    first = np.concatenate(list(batch_iterator(30, 8, shuffle=True)))
    set_seed(9)
    second = np.concatenate(list(batch_iterator(30, 8, shuffle=True)))
    np.testing.assert_array_equal(first, second)


def test_rng_is_ignored_without_shuffle():
    batches = list(batch_iterator(5, 2, shuffle=False, rng=np.random.default_rng(0)))
    assert np.concatenate(batches).tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"n": 10, "batch_size": 0}, "Received: batch_size=0"),
        ({"n": 10, "batch_size": -3}, "Received: batch_size=-3"),
        ({"n": 10, "batch_size": 2.0}, "Received: batch_size=2.0"),
        ({"n": 10, "batch_size": True}, "Received: batch_size=True"),
        ({"n": -1, "batch_size": 2}, "Received: n=-1"),
        ({"n": 2.5, "batch_size": 2}, "Received: n=2.5"),
        ({"n": 10, "batch_size": 2, "shuffle": "yes"}, "Received: shuffle='yes'"),
        ({"n": 10, "batch_size": 2, "shuffle": True, "rng": "seed"}, "Received: rng='seed'"),
        ({"n": 10, "batch_size": 2, "shuffle": True, "rng": -1}, "Received: rng=-1"),
    ],
)
def test_batch_iterator_errors_at_call_time(kwargs, pattern):
    # Raised by the call itself, before any iteration.
    with pytest.raises(ValueError, match=pattern):
        batch_iterator(**kwargs)


def test_batch_iterator_accepts_numpy_integers():
    batches = list(batch_iterator(np.int64(5), np.int32(2)))
    assert [len(b) for b in batches] == [2, 2, 1]
