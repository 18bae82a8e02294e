"""fastnn: layers with explicit forward/backward on NumPy, Numba and CuPy backends."""

from fastnn import backends
from fastnn._version import __version__
from fastnn.backends import (
    Backend,
    available,
    current_backend,
    get_backend,
    set_backend,
    use_backend,
)
from fastnn.errors import BackendUnavailableError, DivergenceError, GradcheckError, NotBuiltError

__all__ = [
    "Backend",
    "BackendUnavailableError",
    "DivergenceError",
    "GradcheckError",
    "NotBuiltError",
    "__version__",
    "available",
    "backends",
    "current_backend",
    "get_backend",
    "set_backend",
    "use_backend",
]
