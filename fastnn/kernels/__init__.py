"""Array kernels: reference (any ``xp``), Numba CPU and CUDA versions of every hot op.

Kernels are plain functions on arrays. Each op has one reference version written
against the backend's ``xp``; the Numba and CUDA packages override some of them with
faster versions of the same name and signature. Backends pick which version serves
which op (see :mod:`fastnn.kernels.registry`).
"""
