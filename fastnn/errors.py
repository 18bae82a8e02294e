"""Exceptions raised by fastnn."""

from __future__ import annotations


class BackendUnavailableError(RuntimeError):
    """A backend was asked for that cannot run on this machine; the message says why."""


class GradcheckError(AssertionError):
    """Backpropagated and numerical gradients disagree; the message names where."""


class NotBuiltError(RuntimeError):
    """A layer or model was used before its parameters exist."""


class DivergenceError(FloatingPointError):
    """Training produced a non-finite loss, output or gradient."""
