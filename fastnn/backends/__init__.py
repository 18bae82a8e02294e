"""Backend registry: list, select and scope the array backends.

Choice order for a new layer or model: an explicit ``backend=`` argument, then the
innermost ``with fastnn.use_backend(...)``, then ``fastnn.set_backend(...)``, then the
``FASTNN_BACKEND`` environment variable, then ``"numpy"``.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import os
from collections.abc import Iterator

from fastnn.backends.base import Backend
from fastnn.errors import BackendUnavailableError

NAMES: tuple[str, ...] = ("numpy", "numba", "cupy")
ENV_VAR = "FASTNN_BACKEND"

_MODULES = {
    "numpy": "fastnn.backends.numpy_backend",
    "numba": "fastnn.backends.numba_backend",
    "cupy": "fastnn.backends.cupy_backend",
}
_instances: dict[str, Backend] = {}
_failures: dict[str, BackendUnavailableError] = {}
_default: str | None = None
_scoped: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "fastnn_backend", default=None
)


def _check_name(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"backend name must be a string, received {type(name).__name__}")
    key = name.strip().lower()
    if key not in NAMES:
        raise ValueError(f"unknown backend {name!r}; valid names: {', '.join(NAMES)}")
    return key


def get_backend(name: str | Backend | None = None) -> Backend:
    """The backend called ``name`` (default: the current one), created once and cached.

    Raises:
        ValueError: ``name`` is not one of ``numpy``, ``numba``, ``cupy``.
        BackendUnavailableError: the backend cannot run here; the message says why.
    """
    if isinstance(name, Backend):
        return name
    key = current_backend_name() if name is None else _check_name(name)
    if key in _instances:
        return _instances[key]
    if key in _failures:
        err = _failures[key]
        raise BackendUnavailableError(str(err)) from err.__cause__
    try:
        backend = importlib.import_module(_MODULES[key]).create()
    except BackendUnavailableError as exc:
        _failures[key] = exc
        raise
    _instances[key] = backend
    return backend


def is_available(name: str) -> bool:
    """Whether backend ``name`` can run on this machine."""
    try:
        get_backend(name)
    except BackendUnavailableError:
        return False
    return True


def available() -> list[str]:
    """Names of the backends that can run here, in the order numpy, numba, cupy."""
    return [name for name in NAMES if is_available(name)]


def unavailable_reason(name: str) -> str | None:
    """Why backend ``name`` cannot run here, or None when it can."""
    try:
        get_backend(name)
    except BackendUnavailableError as exc:
        return str(exc)
    return None


def current_backend_name() -> str:
    """The name new layers and models get when no backend is passed explicitly."""
    scoped = _scoped.get()
    if scoped is not None:
        return scoped
    if _default is not None:
        return _default
    env = os.environ.get(ENV_VAR)
    if env:
        try:
            return _check_name(env)
        except ValueError as exc:
            raise ValueError(f"{ENV_VAR}={env!r}: {exc}") from None
    return "numpy"


def current_backend() -> Backend:
    """The current default backend object."""
    return get_backend(None)


def set_backend(name: str) -> Backend:
    """Make ``name`` the process-wide default backend and return it."""
    global _default
    backend = get_backend(name)
    _default = backend.name
    return backend


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[Backend]:
    """Context manager: layers and models built inside default to backend ``name``."""
    backend = get_backend(name)
    token = _scoped.set(backend.name)
    try:
        yield backend
    finally:
        _scoped.reset(token)


__all__ = [
    "NAMES",
    "Backend",
    "BackendUnavailableError",
    "available",
    "current_backend",
    "current_backend_name",
    "get_backend",
    "is_available",
    "set_backend",
    "unavailable_reason",
    "use_backend",
]
