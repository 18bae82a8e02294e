"""Tests for fastnn.datasets: the shipped digits, the IDX reader and the MNIST loader."""

from __future__ import annotations

import gzip
import struct
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from fastnn.datasets import Split, TrainTestSplit, load_digits, load_idx, load_mnist
from fastnn.datasets import digits as digits_module
from fastnn.datasets.idx import IDX_DTYPES, MNIST_FILES

N_DIGITS = 1797
# Per-class counts of scikit-learn's load_digits(), classes 0..9.
DIGITS_CLASS_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
# sklearn.datasets.load_digits().images[0], a zero.
FIRST_DIGIT = [
    [0, 0, 5, 13, 9, 1, 0, 0],
    [0, 0, 13, 15, 10, 15, 5, 0],
    [0, 3, 15, 2, 0, 11, 8, 0],
    [0, 4, 12, 0, 0, 8, 8, 0],
    [0, 5, 8, 0, 0, 9, 8, 0],
    [0, 4, 11, 0, 1, 12, 7, 0],
    [0, 2, 14, 5, 10, 12, 0, 0],
    [0, 0, 6, 13, 10, 0, 0, 0],
]


# -- the shipped digits -------------------------------------------------------------------


def test_shipped_file_and_licence_are_package_data():
    data = resources.files("fastnn.datasets").joinpath("data")
    archive = data.joinpath("digits.npz")
    assert archive.is_file()
    assert archive.read_bytes()[:2] == b"PK"  # a zip (npz) archive
    assert len(archive.read_bytes()) < 100_000
    licence = data.joinpath("LICENSE-digits.txt").read_text(encoding="utf-8")
    for needed in ("CC BY 4.0", "Alpaydin", "Kaynak", "10.24432/C50P49", "BSD"):
        assert needed in licence
    assert digits_module.DIGITS_SHA256 in licence


def test_raw_data_matches_scikit_learn_copy():
    images, labels = digits_module._load_raw()
    assert images.shape == (N_DIGITS, 8, 8) and images.dtype == np.uint8
    assert labels.shape == (N_DIGITS,) and labels.dtype == np.uint8
    assert images.min() == 0 and images.max() == 16
    assert np.bincount(labels).tolist() == DIGITS_CLASS_COUNTS
    np.testing.assert_array_equal(images[0], FIRST_DIGIT)
    assert labels[:10].tolist() == list(range(10))
    assert not images.flags.writeable  # the cached copy is protected


def test_load_digits_defaults():
    data = load_digits()
    assert isinstance(data, TrainTestSplit) and isinstance(data.train, Split)
    (x_train, y_train), (x_test, y_test) = data
    assert x_train.shape == (1438, 64) and x_test.shape == (359, 64)
    assert y_train.shape == (1438,) and y_test.shape == (359,)
    assert x_train.dtype == np.float32 and x_test.dtype == np.float32
    assert y_train.dtype == np.int64 and y_test.dtype == np.int64
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    assert set(np.unique(y_train)) == set(range(10)) == set(np.unique(y_test))
    assert data.test.x is x_test and data.train.y is y_train


def test_split_is_a_partition_of_the_data():
    images, labels = digits_module._load_raw()
    (x_train, y_train), (x_test, y_test) = load_digits(normalize=False)
    rows = np.concatenate([x_train, x_test])
    ys = np.concatenate([y_train, y_test])
    # Same multiset of (image, label) rows as the original data.
    original = np.column_stack([images.reshape(N_DIGITS, 64), labels]).astype(np.int64)
    split = np.column_stack([rows, ys]).astype(np.int64)
    np.testing.assert_array_equal(np.unique(split, axis=0), np.unique(original, axis=0))
    assert len(split) == N_DIGITS


@pytest.mark.parametrize("test_fraction", [0.05, 0.1, 0.2, 0.25, 1 / 3, 0.5, 0.9])
def test_split_is_stratified(test_fraction):
    (_, y_train), (_, y_test) = load_digits(test_fraction=test_fraction, seed=3)
    assert len(y_test) == int(np.floor(N_DIGITS * test_fraction + 0.5))
    assert len(y_train) + len(y_test) == N_DIGITS
    test_counts = np.bincount(y_test, minlength=10)
    exact = np.array(DIGITS_CLASS_COUNTS) * test_fraction
    assert np.all(test_counts >= np.floor(exact)) and np.all(test_counts <= np.ceil(exact))
    np.testing.assert_array_equal(
        test_counts + np.bincount(y_train, minlength=10), DIGITS_CLASS_COUNTS
    )


def test_split_is_shuffled_not_sorted_by_class():
    (_, y_train), (_, y_test) = load_digits()
    assert np.any(np.diff(y_train) < 0) and np.any(np.diff(y_test) < 0)
    assert not np.array_equal(y_train[:10], np.arange(10))


def test_same_seed_same_split_other_seed_other_split():
    a, b, c = load_digits(seed=7), load_digits(seed=7), load_digits(seed=8)
    for part_a, part_b in zip(a, b, strict=True):
        np.testing.assert_array_equal(part_a.x, part_b.x)
        np.testing.assert_array_equal(part_a.y, part_b.y)
    assert not np.array_equal(a.test.x, c.test.x)


def test_seed_none_still_gives_a_valid_split():
    (x_train, _), (x_test, _) = load_digits(seed=None)
    assert len(x_train) + len(x_test) == N_DIGITS


def test_zero_test_fraction_gives_empty_test_part():
    (x_train, y_train), (x_test, y_test) = load_digits(test_fraction=0.0)
    assert x_train.shape == (N_DIGITS, 64) and y_train.shape == (N_DIGITS,)
    assert x_test.shape == (0, 64) and y_test.shape == (0,) and y_test.dtype == np.int64


def test_normalize_and_flatten_options_agree():
    raw = load_digits(normalize=False, flatten=False, seed=1)
    norm = load_digits(normalize=True, flatten=True, seed=1)
    for r, n in zip(raw, norm, strict=True):
        assert r.x.dtype == np.uint8 and r.x.shape[1:] == (1, 8, 8)
        assert r.x.max() <= 16
        np.testing.assert_array_equal(r.x.reshape(len(r.x), 64) / np.float32(16), n.x)
        np.testing.assert_array_equal(r.y, n.y)
    x_nchw = load_digits(flatten=False, seed=1).train.x
    assert x_nchw.dtype == np.float32 and x_nchw.shape == (1438, 1, 8, 8)


def test_returned_arrays_are_fresh_copies():
    first = load_digits(normalize=False)
    first.train.x[...] = 99
    first.train.y[...] = -1
    second = load_digits(normalize=False)
    assert second.train.x.max() <= 16 and second.train.y.min() >= 0
    assert first.train.x.flags.writeable


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, float("nan"), True, "0.2", None])
def test_bad_test_fraction_is_rejected(bad):
    with pytest.raises(ValueError, match=r"Received: test_fraction="):
        load_digits(test_fraction=bad)


@pytest.mark.parametrize("bad", [-1, 1.5, "0", True])
def test_bad_seed_is_rejected(bad):
    with pytest.raises(ValueError, match=r"Received: seed="):
        load_digits(seed=bad)


def test_checksum_mismatch_is_an_error(monkeypatch):
    with pytest.raises(ValueError, match="SHA-256 mismatch"):
        digits_module._decode_digits(b"not the digits", "digits.npz")
    digits_module._load_raw.cache_clear()
    monkeypatch.setattr(digits_module, "DIGITS_SHA256", "0" * 64)
    try:
        with pytest.raises(ValueError, match=r"expected 0{64}, found [0-9a-f]{64}"):
            load_digits()
    finally:
        digits_module._load_raw.cache_clear()


# -- IDX files ------------------------------------------------------------------------------

_CODES = {np.dtype(dt).newbyteorder("="): code for code, dt in IDX_DTYPES.items()}


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode ``array`` as an IDX file, independently of fastnn's reader."""
    array = np.asarray(array)
    code = _CODES[array.dtype.newbyteorder("=")]
    header = struct.pack(">BBBB", 0, 0, code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, compress: bool) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
def test_load_idx_roundtrip(tmp_path, dtype, compress):
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    if info is not None:
        array = rng.integers(info.min, info.max, size=(3, 4, 5), endpoint=True, dtype=dtype)
    else:
        array = rng.standard_normal((3, 4, 5)).astype(dtype)
    name = "data-idx3-ubyte" + (".gz" if compress else "")
    loaded = load_idx(write_idx(tmp_path / name, array, compress))
    assert loaded.dtype == np.dtype(dtype) and loaded.dtype.isnative
    assert loaded.shape == (3, 4, 5)
    np.testing.assert_array_equal(loaded, array)
    assert loaded.flags.writeable


def test_load_idx_reads_big_endian_values(tmp_path):
    # int16 0x0102 = 258 and -2, 1-D, written by hand.
    raw = bytes([0, 0, 0x0B, 1, 0, 0, 0, 2, 0x01, 0x02, 0xFF, 0xFE])
    path = tmp_path / "hand-written"
    path.write_bytes(raw)
    assert load_idx(path).tolist() == [258, -2]
    assert load_idx(str(path)).tolist() == [258, -2]


def test_load_idx_sniffs_gzip_regardless_of_name(tmp_path):
    labels = np.arange(10, dtype=np.uint8)
    no_suffix = write_idx(tmp_path / "labels-idx1-ubyte", labels, compress=True)
    np.testing.assert_array_equal(load_idx(no_suffix), labels)
    # A ".gz" name whose content was already decompressed (as some browsers do).
    gz_name_raw = write_idx(tmp_path / "labels2-idx1-ubyte.gz", labels, compress=False)
    np.testing.assert_array_equal(load_idx(gz_name_raw), labels)


def test_load_idx_missing_file(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    with pytest.raises(FileNotFoundError) as excinfo:
        load_idx(path)
    message = str(excinfo.value)
    assert str(path) in message and "train-images-idx3-ubyte.gz" in message
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((1, 2, 2), np.uint8), True)
    with pytest.raises(FileNotFoundError, match="did you mean"):
        load_idx(path)


def _expect_value_error(path: Path, *fragments: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        load_idx(path)
    message = str(excinfo.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message


def test_load_idx_bad_magic(tmp_path):
    path = tmp_path / "not-idx"
    path.write_bytes(b"PK\x03\x04 some zip file")
    _expect_value_error(path, "not an IDX file", "expected magic bytes 00 00", "50 4b 03 04")


def test_load_idx_unknown_dtype_code(tmp_path):
    path = tmp_path / "bad-code"
    path.write_bytes(bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 5]))
    _expect_value_error(path, "unknown IDX dtype code 0x07", "0x08")


def test_load_idx_zero_dimensions(tmp_path):
    path = tmp_path / "zero-dims"
    path.write_bytes(bytes([0, 0, 0x08, 0]))
    _expect_value_error(path, "0 dimensions")


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
def test_load_idx_truncated(tmp_path, compress):
    full = idx_bytes(np.ones((4, 3, 3), dtype=np.uint8))
    cases = {
        "tiny": (full[:3], "expected at least 4 bytes, found 3"),
        "header": (full[:10], "3 dimensions need 16 header bytes, found 10"),
        "data": (full[:-5], "truncated IDX data", "needs 36 bytes", "found 31"),
        "trailing": (full + b"\0\0", "trailing bytes", "needs 36 bytes", "found 38"),
    }
    for name, (data, *fragments) in cases.items():
        path = tmp_path / (name + (".gz" if compress else ""))
        path.write_bytes(gzip.compress(data) if compress else data)
        _expect_value_error(path, *fragments)


def test_load_idx_damaged_gzip(tmp_path):
    compressed = gzip.compress(idx_bytes(np.ones((50, 50), dtype=np.uint8)))
    path = tmp_path / "cut.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    _expect_value_error(path, "not a valid gzip stream")


# -- MNIST directories ----------------------------------------------------------------------


def make_mnist(directory: Path, compress: dict[str, bool], n_train: int = 6, n_test: int = 3):
    """Write tiny synthetic MNIST files (5x4 images); return the arrays written."""
    rng = np.random.default_rng(1)
    arrays = {
        "train_images": rng.integers(0, 256, size=(n_train, 5, 4), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, size=n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, size=(n_test, 5, 4), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, size=n_test, dtype=np.uint8),
    }
    for role, array in arrays.items():
        name = MNIST_FILES[role] + (".gz" if compress[role] else "")
        write_idx(directory / name, array, compress[role])
    return arrays


ALL_RAW = dict.fromkeys(MNIST_FILES, False)
ALL_GZ = dict.fromkeys(MNIST_FILES, True)
MIXED = {"train_images": True, "train_labels": False, "test_images": False, "test_labels": True}


@pytest.mark.parametrize("compress", [ALL_RAW, ALL_GZ, MIXED], ids=["raw", "gz", "mixed"])
def test_load_mnist(tmp_path, compress):
    arrays = make_mnist(tmp_path, compress)
    data = load_mnist(tmp_path)
    (x_train, y_train), (x_test, y_test) = data
    assert isinstance(data, TrainTestSplit)
    assert x_train.shape == (6, 20) and x_test.shape == (3, 20)
    assert x_train.dtype == np.float32 and x_train.min() >= 0.0 and x_train.max() <= 1.0
    assert y_train.dtype == np.int64 and y_test.dtype == np.int64
    np.testing.assert_array_equal(x_train, arrays["train_images"].reshape(6, 20) / np.float32(255))
    np.testing.assert_array_equal(y_test, arrays["test_labels"])


def test_load_mnist_raw_nchw(tmp_path):
    arrays = make_mnist(tmp_path, ALL_GZ)
    (x_train, _), (x_test, _) = load_mnist(str(tmp_path), normalize=False, flatten=False)
    assert x_train.dtype == np.uint8 and x_train.shape == (6, 1, 5, 4)
    np.testing.assert_array_equal(x_test[:, 0], arrays["test_images"])


def test_load_mnist_accepts_dotted_names(tmp_path):
    arrays = make_mnist(tmp_path, ALL_RAW)
    for name in MNIST_FILES.values():
        (tmp_path / name).rename(tmp_path / name.replace("-idx", ".idx"))
    np.testing.assert_array_equal(load_mnist(tmp_path).train.y, arrays["train_labels"])


def test_load_mnist_lists_missing_files(tmp_path):
    make_mnist(tmp_path, ALL_GZ)
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError) as excinfo:
        load_mnist(tmp_path)
    message = str(excinfo.value)
    assert "missing" in message and str(tmp_path) in message
    missing_part = message.split("Expected")[0]
    assert "t10k-images-idx3-ubyte" in missing_part
    assert "train-labels-idx1-ubyte" in missing_part
    assert "train-images-idx3-ubyte" not in missing_part
    assert "Found: t10k-labels-idx1-ubyte.gz, train-images-idx3-ubyte.gz" in message


def test_load_mnist_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="MNIST directory not found"):
        load_mnist(tmp_path / "nowhere")


def test_load_mnist_count_mismatch(tmp_path):
    make_mnist(tmp_path, ALL_RAW)
    write_idx(tmp_path / MNIST_FILES["test_labels"], np.zeros(5, np.uint8), compress=False)
    with pytest.raises(ValueError, match="holds 3 images but .* holds 5 labels"):
        load_mnist(tmp_path)


def test_load_mnist_wrong_rank(tmp_path):
    make_mnist(tmp_path, ALL_RAW)
    write_idx(tmp_path / MNIST_FILES["train_images"], np.zeros((6, 20), np.uint8), False)
    with pytest.raises(ValueError, match=r"expected images of shape \(N, H, W\)"):
        load_mnist(tmp_path)
