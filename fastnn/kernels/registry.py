"""The op registry: reference ops and per-backend overrides, keyed by op name.

Every op is a function ``op(be, *args, **kwargs)`` whose first argument is the backend
that calls it (it gives the op ``be.xp`` and the backend's scratch helpers). The
reference version is registered with :func:`reference_op`; a backend-specific version
with :func:`override`, under the same name and with the same signature.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

REFERENCE_OPS: dict[str, Callable[..., Any]] = {}
OVERRIDES: dict[str, dict[str, Callable[..., Any]]] = {"numpy": {}, "numba": {}, "cupy": {}}


def reference_op(fn: F) -> F:
    """Register ``fn`` as the reference implementation of the op named like it."""
    name = fn.__name__
    if name in REFERENCE_OPS:
        raise ValueError(f"reference op {name!r} registered twice")
    REFERENCE_OPS[name] = fn
    return fn


def override(backend: str, name: str | None = None) -> Callable[[F], F]:
    """Register ``fn`` as ``backend``'s version of an op (default: the function's name)."""

    def register(fn: F) -> F:
        op_name = name or fn.__name__
        table = OVERRIDES.setdefault(backend, {})
        if op_name in table:
            raise ValueError(f"{backend} override of op {op_name!r} registered twice")
        table[op_name] = fn
        return fn

    return register


def op_signature(fn: Callable[..., Any]) -> inspect.Signature:
    """The signature of an op without its leading backend argument."""
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())[1:]
    return sig.replace(parameters=params)


def load_reference_ops() -> dict[str, Callable[..., Any]]:
    """Import every reference kernel module and return the op table."""
    from fastnn.kernels import reference  # noqa: F401  (registers on import)

    return REFERENCE_OPS
