"""Process-wide defaults: the float type new layers use."""

from __future__ import annotations

import numpy as np

_FLOATX = np.dtype(np.float32)
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def floatx() -> np.dtype:
    """The default float dtype of new layers (float32 unless changed)."""
    return _FLOATX


def set_floatx(dtype: str | np.dtype) -> None:
    """Set the default float dtype of new layers: ``"float32"`` or ``"float64"``."""
    global _FLOATX
    _FLOATX = resolve_float_dtype(dtype, "set_floatx")


def resolve_float_dtype(dtype, where: str) -> np.dtype:
    """``dtype`` as float32/float64 (None -> floatx()); ValueError naming ``where`` otherwise."""
    if dtype is None:
        return _FLOATX
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{where}: dtype must be float32 or float64, received {dtype!r}") from None
    if dt not in FLOAT_DTYPES:
        raise ValueError(f"{where}: dtype must be float32 or float64, received {dt.name}")
    return dt
