"""Reference ops written against ``be.xp``: correct on NumPy and CuPy alike.

Importing this package registers every reference op.
"""

from fastnn.kernels.reference import activations, dense, losses, optimizers, softmax  # noqa: F401
