"""Read MNIST-format IDX files, and the four MNIST (or Fashion-MNIST) files of a directory.

The IDX format (http://yann.lecun.com/exdb/mnist/): two zero bytes, a dtype code byte,
a byte with the number of dimensions, one big-endian uint32 per dimension, then the
values in big-endian row-major order.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

GZIP_MAGIC = b"\x1f\x8b"

# IDX dtype code -> big-endian NumPy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# The four files of MNIST, by role; each may also end in ".gz", and some copies spell
# ".idx3-ubyte" with a dot instead of the dash.
MNIST_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MNIST_MAX_VALUE = 255

_HEADER_BYTES = 4  # magic: 0, 0, dtype code, number of dimensions
_DIM_BYTES = 4


class Split(NamedTuple):
    """Inputs and labels of one part of a data set: ``x, y = split``."""

    x: np.ndarray
    y: np.ndarray


class TrainTestSplit(NamedTuple):
    """Train and test parts: ``(x_train, y_train), (x_test, y_test) = data``."""

    train: Split
    test: Split


def _prepare_images(
    images: np.ndarray, max_value: int, normalize: bool, flatten: bool
) -> np.ndarray:
    """``(N, H, W)`` integer images as ``(N, H*W)`` or NCHW ``(N, 1, H, W)``, a new array.

    With ``normalize`` the values are float32 divided by ``max_value`` (so in [0, 1]);
    without, they keep their integer dtype.
    """
    N, H, W = images.shape
    x = images.reshape(N, H * W) if flatten else images.reshape(N, 1, H, W)
    if normalize:
        return x.astype(np.float32) / np.float32(max_value)
    return x.copy()


def _missing_idx_message(path: Path) -> str:
    message = (
        f"IDX file not found: '{path}'. Expected an MNIST-format IDX file, raw or gzipped, "
        f"such as '{MNIST_FILES['train_images']}' or '{MNIST_FILES['train_images']}.gz'"
    )
    sibling = (
        path.with_name(path.name[:-3])
        if path.suffix == ".gz"
        else path.with_name(path.name + ".gz")
    )
    if sibling.is_file():
        message += f"; '{sibling}' exists, did you mean that file?"
    return message


def _read_maybe_gzip(path: Path) -> bytes:
    """The file's bytes, decompressed when they start with the gzip magic."""
    if not path.exists():
        raise FileNotFoundError(_missing_idx_message(path))
    data = path.read_bytes()
    if data[:2] != GZIP_MAGIC:
        # Also for a ".gz" name: some downloads arrive already decompressed.
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(
            f"'{path}': starts with the gzip magic 1f 8b but is not a valid gzip stream "
            f"({exc}); the file is probably truncated or damaged"
        ) from exc


def _parse_idx(data: bytes, path: Path | str) -> np.ndarray:
    """Decode the bytes of an IDX file into a native-endian, writable array."""
    if len(data) < _HEADER_BYTES:
        raise ValueError(
            f"'{path}': truncated IDX header: expected at least {_HEADER_BYTES} bytes, "
            f"found {len(data)}"
        )
    magic = data[:_HEADER_BYTES]
    if magic[0] != 0 or magic[1] != 0:
        raise ValueError(
            f"'{path}': not an IDX file: expected magic bytes 00 00 <dtype> <ndim>, "
            f"found {magic.hex(' ')}"
        )
    code, ndim = magic[2], magic[3]
    if code not in IDX_DTYPES:
        valid = ", ".join(f"0x{c:02x}" for c in IDX_DTYPES)
        raise ValueError(f"'{path}': unknown IDX dtype code 0x{code:02x}: expected one of {valid}")
    if ndim == 0:
        raise ValueError(f"'{path}': IDX header declares 0 dimensions: expected at least 1")
    header_len = _HEADER_BYTES + _DIM_BYTES * ndim
    if len(data) < header_len:
        raise ValueError(
            f"'{path}': truncated IDX header: {ndim} dimensions need {header_len} header "
            f"bytes, found {len(data)}"
        )
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=_HEADER_BYTES))
    dtype = IDX_DTYPES[code]
    count = 1
    for d in shape:
        count *= d
    expected = count * dtype.itemsize
    found = len(data) - header_len
    if found != expected:
        problem = "truncated IDX data" if found < expected else "IDX data has trailing bytes"
        raise ValueError(
            f"'{path}': {problem}: shape {shape} of {dtype.newbyteorder('=')} needs "
            f"{expected} bytes after the {header_len}-byte header, found {found}"
        )
    values = np.frombuffer(data, dtype, count=count, offset=header_len).reshape(shape)
    return values.astype(dtype.newbyteorder("="))  # a native-endian, writable copy


def load_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (raw or gzip-compressed) into a NumPy array.

    Compression is detected from the content (the gzip magic bytes), so a file named
    ``.gz`` that was already decompressed is read too.

    Args:
        path: the file, e.g. ``"mnist/train-images-idx3-ubyte.gz"``.

    Returns:
        Array with the shape and dtype of the file's header, native byte order: MNIST
        images give uint8 ``(N, 28, 28)``, labels uint8 ``(N,)``.

    Raises:
        FileNotFoundError: ``path`` does not exist; the message names it and the
            expected file names.
        ValueError: the file is not a valid IDX file (bad magic, unknown dtype code,
            truncated or too long) or a damaged gzip stream; the message names the file
            and what was expected against what was found.
    """
    path = Path(path)
    return _parse_idx(_read_maybe_gzip(path), path)


def _find_mnist_file(directory: Path, name: str) -> Path | None:
    dotted = name.replace("-idx", ".idx")
    for candidate in (name, name + ".gz", dotted, dotted + ".gz"):
        if (directory / candidate).is_file():
            return directory / candidate
    return None


def _missing_mnist_message(directory: Path, missing: list[str]) -> str:
    present = sorted(p.name for p in directory.iterdir())
    shown = ", ".join(present[:10]) + (", ..." if len(present) > 10 else "")
    return (
        f"MNIST files missing in '{directory}': {', '.join(missing)} "
        f"(each raw or with a .gz suffix). Expected all of: {', '.join(MNIST_FILES.values())}. "
        f"Found: {shown or 'nothing'}"
    )


def _check_mnist_pair(images: np.ndarray, labels: np.ndarray, paths: tuple[Path, Path]) -> None:
    if images.ndim != 3:
        raise ValueError(
            f"'{paths[0]}': expected images of shape (N, H, W), found shape {images.shape}"
        )
    if labels.ndim != 1:
        raise ValueError(f"'{paths[1]}': expected labels of shape (N,), found {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"'{paths[0]}' holds {images.shape[0]} images but '{paths[1]}' holds "
            f"{labels.shape[0]} labels: expected the same number"
        )


def load_mnist(
    directory: str | os.PathLike[str], normalize: bool = True, flatten: bool = True
) -> TrainTestSplit:
    """Load MNIST (or Fashion-MNIST, same file names) from the four IDX files in ``directory``.

    Looks for ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each raw or ``.gz``.
    Nothing is downloaded.

    Args:
        directory: the folder holding the files.
        normalize: float32 pixels in [0, 1] (divided by 255); otherwise the raw uint8.
        flatten: images as ``(N, H*W)`` rows; otherwise NCHW ``(N, 1, H, W)``.

    Returns:
        ``((x_train, y_train), (x_test, y_test))`` as a :class:`TrainTestSplit`; for MNIST
        ``x_train`` is ``(60000, 784)`` (or ``(60000, 1, 28, 28)``), ``y_train`` int64
        ``(60000,)``, and the test part has 10000 samples.

    Raises:
        FileNotFoundError: ``directory`` does not exist, or some of the files are
            missing; the message lists which.
        ValueError: a file is not valid IDX, or images and labels do not match.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"MNIST directory not found: '{directory}'. Expected a folder holding "
            f"{', '.join(MNIST_FILES.values())} (each raw or with a .gz suffix)"
        )
    found = {role: _find_mnist_file(directory, name) for role, name in MNIST_FILES.items()}
    missing = [MNIST_FILES[role] for role, path in found.items() if path is None]
    if missing:
        raise FileNotFoundError(_missing_mnist_message(directory, missing))

    parts = []
    for prefix in ("train", "test"):
        image_path, label_path = found[f"{prefix}_images"], found[f"{prefix}_labels"]
        assert image_path is not None and label_path is not None  # checked above
        images, labels = load_idx(image_path), load_idx(label_path)
        _check_mnist_pair(images, labels, (image_path, label_path))
        x = _prepare_images(images, MNIST_MAX_VALUE, normalize, flatten)
        parts.append(Split(x, labels.astype(np.int64)))
    return TrainTestSplit(parts[0], parts[1])


__all__ = ["IDX_DTYPES", "MNIST_FILES", "Split", "TrainTestSplit", "load_idx", "load_mnist"]
