"""CUDA kernels for the CuPy backend. Importing this package registers the ``cupy`` overrides.

- :mod:`~fastnn.kernels.cuda.sources`: the CUDA C++ text of every kernel (float32 and
  float64 from one template source);
- :mod:`~fastnn.kernels.cuda.compile`: NVRTC/nvcc compilation without a GPU (used by the
  tests) and the lazily built, cached ``cupy.RawModule`` kernels used on a GPU;
- :mod:`~fastnn.kernels.cuda.ops`: the ``@override("cupy")`` ops that launch them.

Importing needs neither a GPU nor CuPy: kernels are compiled on their first launch.
Matrix products stay on cuBLAS through ``cupy.matmul`` (the reference ops).
"""

# Importing each module registers its cupy overrides (and its kernel family, if any).
from fastnn.kernels.cuda import (  # noqa: F401
    activations_extra,
    conv_ops,
    ops,
    optimizers_extra,
    recurrent,
)
