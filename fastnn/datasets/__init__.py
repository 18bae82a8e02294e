"""Data sets: the 8x8 digits shipped inside fastnn, and MNIST-format IDX files on disk.

Every loader returns ``((x_train, y_train), (x_test, y_test))`` (a :class:`TrainTestSplit`
of :class:`Split` named tuples), images flattened or NCHW, labels int64. Nothing is
downloaded.
"""

from fastnn.datasets.digits import load_digits
from fastnn.datasets.idx import Split, TrainTestSplit, load_idx, load_mnist

__all__ = ["Split", "TrainTestSplit", "load_digits", "load_idx", "load_mnist"]
