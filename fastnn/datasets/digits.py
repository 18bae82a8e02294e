"""The 8x8 handwritten digits shipped inside fastnn (UCI optdigits test set, 1797 samples).

Source and licence: ``fastnn/datasets/data/LICENSE-digits.txt`` (E. Alpaydin and
C. Kaynak, UCI Machine Learning Repository, CC BY 4.0).
"""

from __future__ import annotations

import functools
import hashlib
import io
import numbers
from importlib import resources

import numpy as np

from fastnn.datasets.idx import Split, TrainTestSplit, _prepare_images
from fastnn.utils import _check_int

DIGITS_FILE = "digits.npz"
DIGITS_SHA256 = "b3b9c8cc11d765ce4264d8748bf3edbafa5038d91c93cf713ddbd6ae8652b410"
DIGITS_SHAPE = (1797, 8, 8)
DIGITS_CLASSES = 10
DIGITS_MAX_VALUE = 16


def _data_file() -> resources.abc.Traversable:
    return resources.files("fastnn.datasets").joinpath("data").joinpath(DIGITS_FILE)


def _decode_digits(raw: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Check the SHA-256 of the archive bytes and return its (images, labels)."""
    digest = hashlib.sha256(raw).hexdigest()
    if digest != DIGITS_SHA256:
        raise ValueError(
            f"'{source}': SHA-256 mismatch: expected {DIGITS_SHA256}, found {digest}. "
            "The bundled digits data is damaged; reinstall fastnn-dl"
        )
    with np.load(io.BytesIO(raw), allow_pickle=False) as archive:
        images, labels = archive["images"], archive["labels"]
    if images.shape != DIGITS_SHAPE or labels.shape != DIGITS_SHAPE[:1]:
        raise ValueError(
            f"'{source}': expected images {DIGITS_SHAPE} and labels {DIGITS_SHAPE[:1]}, "
            f"found {images.shape} and {labels.shape}"
        )
    return images, labels


@functools.lru_cache(maxsize=1)
def _load_raw() -> tuple[np.ndarray, np.ndarray]:
    """The shipped uint8 images ``(1797, 8, 8)`` and labels ``(1797,)``, read once, read-only."""
    resource = _data_file()
    if not resource.is_file():
        raise FileNotFoundError(
            f"the digits data shipped with fastnn is missing: expected '{resource}'. "
            "The installation is incomplete; reinstall fastnn-dl"
        )
    images, labels = _decode_digits(resource.read_bytes(), str(resource))
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def _stratified_split(
    labels: np.ndarray, test_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled train and test indices with each class split in the same proportion.

    The test part has ``round(N * test_fraction)`` samples; each class gives
    ``floor(n_c * test_fraction)`` of them, and the classes with the largest
    remainders one more (largest-remainder rounding).
    """
    n = labels.shape[0]
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * test_fraction
    per_class = np.floor(exact).astype(np.int64)
    left = int(np.floor(n * test_fraction + 0.5)) - int(per_class.sum())
    by_remainder = np.argsort(-(exact - per_class), kind="stable")
    per_class[by_remainder[:left]] += 1

    train_parts, test_parts = [], []
    for c, n_test in zip(classes, per_class, strict=True):
        members = rng.permutation(np.flatnonzero(labels == c))
        test_parts.append(members[:n_test])
        train_parts.append(members[n_test:])
    train = rng.permutation(np.concatenate(train_parts))
    test = rng.permutation(np.concatenate(test_parts))
    return train, test


def load_digits(
    test_fraction: float = 0.2,
    seed: int | None = 0,
    normalize: bool = True,
    flatten: bool = True,
) -> TrainTestSplit:
    """The 8x8 handwritten digits (1797 samples, 10 classes), split into train and test.

    Read from the copy inside the package (no download, no scikit-learn), with its
    checksum verified. The split is stratified: each class is divided in the same
    proportion, and both parts come in shuffled order. The same ``seed`` always gives
    the same split.

    Args:
        test_fraction: share of the samples in the test part, in [0, 1); 0.2 gives
            1438 train and 359 test samples.
        seed: seed of the split and the shuffling; None draws a fresh, unrepeatable one.
        normalize: float32 pixels in [0, 1] (divided by 16); otherwise the raw uint8 0..16.
        flatten: images as ``(N, 64)`` rows; otherwise NCHW ``(N, 1, 8, 8)``.

    Returns:
        ``((x_train, y_train), (x_test, y_test))`` as a :class:`TrainTestSplit`:
        ``x_*`` of shape ``(N, 64)`` or ``(N, 1, 8, 8)``, ``y_*`` int64 class ids 0..9
        of shape ``(N,)``.

    Raises:
        ValueError: ``test_fraction`` outside [0, 1) or ``seed`` not a non-negative int;
            or the shipped file fails its checksum.
        FileNotFoundError: the shipped file is missing from the installation.
    """
    where = "load_digits"
    valid_fraction = (
        isinstance(test_fraction, (numbers.Real, np.floating))
        and not isinstance(test_fraction, (bool, np.bool_))
        and 0.0 <= test_fraction < 1.0
    )
    if not valid_fraction:
        raise ValueError(
            f"{where}: test_fraction must be a number in [0, 1). "
            f"Received: test_fraction={test_fraction!r}"
        )
    if seed is not None:
        seed = _check_int("seed", seed, 0, where)

    images, labels = _load_raw()
    rng = np.random.default_rng(seed)
    train_idx, test_idx = _stratified_split(labels, float(test_fraction), rng)

    parts = []
    for idx in (train_idx, test_idx):
        x = _prepare_images(images[idx], DIGITS_MAX_VALUE, normalize, flatten)
        parts.append(Split(x, labels[idx].astype(np.int64)))
    return TrainTestSplit(parts[0], parts[1])


__all__ = ["DIGITS_CLASSES", "DIGITS_SHA256", "load_digits"]
