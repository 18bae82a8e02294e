"""Small helpers shared by models and scripts: one-hot labels, seeding, minibatch indices."""

from __future__ import annotations

import numbers
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from fastnn import backends

# Largest seed accepted: NumPy's legacy global generator takes seeds in [0, 2**32).
MAX_SEED = 2**32 - 1

_seed: int | None = None  # the value of the last set_seed call; read it with get_seed()


def _check_int(name: str, value: Any, minimum: int, where: str) -> int:
    """``value`` as a Python int, or a ValueError that says what was received."""
    is_int = isinstance(value, (numbers.Integral, np.integer)) and not isinstance(
        value, (bool, np.bool_)
    )
    if not is_int or int(value) < minimum:
        if minimum == 1:
            kind = "a positive integer"
        elif minimum == 0:
            kind = "a non-negative integer"
        else:
            kind = f"an integer >= {minimum}"
        raise ValueError(f"{where}: {name} must be {kind}. Received: {name}={value!r}")
    return int(value)


def to_categorical(
    y: ArrayLike, num_classes: int | None = None, dtype: DTypeLike = "float32"
) -> np.ndarray:
    """One-hot encode integer class labels (Keras semantics).

    A trailing axis of length 1 is dropped first, as in Keras: labels of shape ``(N, 1)``
    give ``(N, num_classes)``. Works on host (NumPy) data.

    Args:
        y: class ids, any shape ``S``: integers, booleans, or floats holding whole numbers.
        num_classes: number of classes ``C``; default ``max(y) + 1``.
        dtype: dtype of the result.

    Returns:
        ``(*S, C)`` array, 1 at each label's class and 0 elsewhere.

    Raises:
        ValueError: non-numeric or non-whole labels, a negative label, a label
            ``>= num_classes``, an invalid ``num_classes``, or empty ``y`` without
            ``num_classes``.
    """
    where = "to_categorical"
    labels = np.asarray(y)
    if labels.dtype.kind not in "biuf":
        raise ValueError(
            f"{where}: labels must be integers, received an array of dtype {labels.dtype}"
        )
    if labels.dtype.kind == "f":
        whole = np.isfinite(labels) & (labels == np.floor(labels))
        if not whole.all():
            bad = tuple(int(i) for i in np.argwhere(~whole)[0])
            value = labels[bad].item()
            raise ValueError(
                f"{where}: labels must be whole numbers, received {value!r} at index {bad}"
            )
    shape = labels.shape
    if len(shape) > 1 and shape[-1] == 1:
        shape = shape[:-1]
    flat = labels.reshape(-1).astype(np.int64)

    if num_classes is None:
        if flat.size == 0:
            raise ValueError(f"{where}: cannot infer num_classes from empty labels; pass it")
        num_classes = int(flat.max()) + 1
    num_classes = _check_int("num_classes", num_classes, 1, where)
    if flat.size:
        if flat.min() < 0:
            raise ValueError(
                f"{where}: labels must be non-negative, received label {int(flat.min())}"
            )
        if flat.max() >= num_classes:
            raise ValueError(
                f"{where}: labels must be < num_classes={num_classes}, "
                f"received label {int(flat.max())}"
            )

    out = np.zeros((flat.size, num_classes), dtype=dtype)
    out[np.arange(flat.size), flat] = 1
    return out.reshape(shape + (num_classes,))


def set_seed(seed: int) -> None:
    """Seed every usable fastnn backend, NumPy's legacy global RNG and Python's ``random``.

    The seed is kept and returned by :func:`get_seed`. Backends that cannot run on this
    machine are skipped.

    Args:
        seed: an integer in ``[0, 2**32)``.

    Raises:
        ValueError: ``seed`` is not an integer in that range.
    """
    global _seed
    seed = _check_int("seed", seed, 0, "set_seed")
    if seed > MAX_SEED:
        raise ValueError(f"set_seed: seed must be < 2**32. Received: seed={seed}")
    random.seed(seed)
    np.random.seed(seed)
    for name in backends.available():
        backends.get_backend(name).seed(seed)
    _seed = seed


def get_seed() -> int | None:
    """The seed of the last :func:`set_seed` call, or None if it was never called."""
    return _seed


def batch_iterator(
    n: int,
    batch_size: int,
    shuffle: bool = False,
    rng: np.random.Generator | np.random.RandomState | int | None = None,
) -> Iterator[np.ndarray]:
    """Index arrays of the minibatches of ``n`` samples, the last partial batch included.

    Arguments are checked when this is called, not when iteration starts; the shuffled
    order is drawn then too.

    Args:
        n: number of samples ``N`` (0 yields nothing).
        batch_size: samples per batch ``B``.
        shuffle: visit the samples in a random order instead of ``0..N-1``.
        rng: where the order comes from when ``shuffle``: a NumPy ``Generator`` or
            ``RandomState``, an int seed for a new ``Generator``, or None for NumPy's
            legacy global RNG (which :func:`set_seed` seeds).

    Yields:
        int64 arrays of shape ``(B,)`` (the last one ``(N mod B,)`` when that is not 0);
        together they hold each of ``0..N-1`` exactly once.

    Raises:
        ValueError: ``n`` is not a non-negative integer, ``batch_size`` not a positive
            integer, ``shuffle`` not a bool, or ``rng`` of another kind.
    """
    where = "batch_iterator"
    n = _check_int("n", n, 0, where)
    batch_size = _check_int("batch_size", batch_size, 1, where)
    if not isinstance(shuffle, (bool, np.bool_)):
        raise ValueError(f"{where}: shuffle must be True or False. Received: shuffle={shuffle!r}")
    if not shuffle:
        order = np.arange(n, dtype=np.int64)
    elif rng is None:
        order = np.random.permutation(n).astype(np.int64, copy=False)
    elif isinstance(rng, (np.random.Generator, np.random.RandomState)):
        order = rng.permutation(n).astype(np.int64, copy=False)
    elif isinstance(rng, (numbers.Integral, np.integer)) and not isinstance(rng, (bool, np.bool_)):
        seed = _check_int("rng", rng, 0, where)
        order = np.random.default_rng(seed).permutation(n).astype(np.int64, copy=False)
    else:
        raise ValueError(
            f"{where}: rng must be a numpy Generator or RandomState, an int seed or None. "
            f"Received: rng={rng!r}"
        )
    return _batches(order, batch_size)


def _batches(order: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, order.shape[0], batch_size):
        yield order[start : start + batch_size]


__all__ = ["batch_iterator", "get_seed", "set_seed", "to_categorical"]


def profile(model: Any, x: Any, repeats: int = 5, warmup: int = 1, print_fn: Any = print) -> Any:
    """Per-layer forward/backward times of ``model`` on batch ``x`` (see fastnn.profile)."""
    from fastnn.profile import profile as _profile

    return _profile(model, x, repeats=repeats, warmup=warmup, print_fn=print_fn)


__all__ += ["profile"]
