"""Reference standardisation ops behind the normalization layers.

Two canonical layouts cover every layer:

- rows: ``x`` of shape (R, M), statistics per row (layer, group and instance norm);
- channels: ``x`` of shape (A, C, B), statistics per channel C over A and B (batch norm,
  where A is the batch and B the spatial positions).

Forward ops return x_hat = (x - mean) * inv_std with the biased variance and
``inv_std = 1 / sqrt(var + eps)``; backward ops take dL/dx_hat and return dL/dx =
(dxhat - mean(dxhat) - x_hat * mean(dxhat * x_hat)) * inv_std.
"""

from __future__ import annotations

from fastnn.kernels.registry import reference_op


@reference_op
def norm_rows_forward(be, x, eps: float, xhat=None):
    """Standardise each row of x (R, M): returns (xhat (R, M), inv_std (R,))."""
    xp = be.xp
    mean = x.mean(axis=1, keepdims=True)
    xhat = xp.subtract(x, mean, out=xhat)
    var = (xhat * xhat).mean(axis=1, keepdims=True)
    inv_std = 1.0 / xp.sqrt(var + eps)
    xhat *= inv_std
    return xhat, inv_std.reshape(-1)


@reference_op
def norm_rows_backward(be, dxhat, xhat, inv_std, out=None):
    """dL/dx for row standardisation, given dL/dxhat (R, M) and inv_std (R,)."""
    xp = be.xp
    m1 = dxhat.mean(axis=1, keepdims=True)
    m2 = (dxhat * xhat).mean(axis=1, keepdims=True)
    out = xp.multiply(xhat, m2, out=out)
    xp.subtract(dxhat, out, out=out)
    out -= m1
    out *= inv_std.reshape(-1, 1)
    return out


@reference_op
def norm_channels_forward(be, x, eps: float, xhat=None):
    """Standardise x (A, C, B) per channel: returns (xhat, inv_std (C,), mean (C,), var (C,))."""
    xp = be.xp
    mean = x.mean(axis=(0, 2), keepdims=True)
    xhat = xp.subtract(x, mean, out=xhat)
    var = (xhat * xhat).mean(axis=(0, 2), keepdims=True)
    inv_std = 1.0 / xp.sqrt(var + eps)
    xhat *= inv_std
    return xhat, inv_std.reshape(-1), mean.reshape(-1), var.reshape(-1)


@reference_op
def norm_channels_backward(be, dxhat, xhat, inv_std, out=None):
    """dL/dx for per-channel standardisation of (A, C, B), given dL/dxhat and inv_std (C,)."""
    xp = be.xp
    m1 = dxhat.mean(axis=(0, 2), keepdims=True)
    m2 = (dxhat * xhat).mean(axis=(0, 2), keepdims=True)
    out = xp.multiply(xhat, m2, out=out)
    xp.subtract(dxhat, out, out=out)
    out -= m1
    out *= inv_std.reshape(1, -1, 1)
    return out
