"""Numba CPU kernels. Importing this package registers the ``numba`` op overrides."""
