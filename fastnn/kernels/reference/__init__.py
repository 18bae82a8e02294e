"""Reference ops written against ``be.xp``: correct on NumPy and CuPy alike.

Importing this package registers every reference op.
"""

from fastnn.kernels.reference import (  # noqa: F401
    activations,
    conv,  # noqa: F401
    dense,
    fused_update,  # noqa: F401
    losses,
    normalization,  # noqa: F401
    optimizers,
    recurrent,  # noqa: F401
    softmax,
)
