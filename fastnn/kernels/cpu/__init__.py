"""Numba CPU kernels. Importing this package registers the ``numba`` op overrides.

Modules: ``jit`` (the shared JIT flags, lazy per-dtype compilation, the on-disk cache),
``threads`` (thread count, flush-to-zero), ``fastexp`` (a vectorisable exp), and one module
of overrides per family of reference ops: ``activations``, ``softmax``, ``losses``,
``optimizers``, ``dense``. ``gemm`` is the backend's own register-blocked matrix product, which
``dense`` uses for ``matmul``, ``linear`` and ``linear_backward`` (BLAS keeps what it does not
take); ``dense`` also writes the batch-1 outer product.
"""

from fastnn.kernels.cpu import (  # noqa: F401
    activations,
    activations_extra,  # noqa: F401  (leaky_relu, elu, gelu, ... kernels)
    conv,  # noqa: F401
    dense,  # noqa: F401  (linear_backward at batch size 1)
    fused_update,  # noqa: F401  (a Dense layer's backward and SGD step in one pass)
    losses,
    optimizers,
    optimizers_extra,  # noqa: F401
    recurrent,  # noqa: F401
    recurrent_sequence,  # noqa: F401  (the whole LSTM recurrence in one loop)
    softmax,
)
from fastnn.kernels.cpu.threads import get_num_threads, launch_threads, set_num_threads

launch_threads()

__all__ = ["get_num_threads", "set_num_threads"]
