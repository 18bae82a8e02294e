"""The Layer base class: the forward/backward/params/grads contract every layer follows."""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import numpy as np

from fastnn import initializers
from fastnn.backends import Backend, get_backend
from fastnn.config import resolve_float_dtype
from fastnn.errors import NotBuiltError

# The last number used in an automatic ``<snake>_<n>`` name, per snake-case class name.
_last_number: defaultdict[str, int] = defaultdict(int)
_NUMBERED_NAME = re.compile(r"(.+)_(\d+)")


def _snake_case(cls_name: str) -> str:
    """``Conv2D`` -> ``conv2d``, ``SimpleRNN`` -> ``simple_rnn`` (Keras's layer names)."""
    words = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", cls_name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", words).lower()


def _auto_name(cls_name: str) -> str:
    snake = _snake_case(cls_name)
    _last_number[snake] += 1
    return f"{snake}_{_last_number[snake]}"


def _claim_name(name: str) -> None:
    """Keep later automatic names clear of an explicit one such as ``dense_3`` (a layer
    loaded from a checkpoint), so that ``load_model(...)`` then ``add(Dense(3))`` does not
    produce a second ``dense_3``."""
    match = _NUMBERED_NAME.fullmatch(name) if isinstance(name, str) else None
    if match:
        snake, number = match.group(1), int(match.group(2))
        _last_number[snake] = max(_last_number[snake], number)


def shape_str(shape: tuple) -> str:
    """A shape as ``(None, 64)``-style text, None standing for the batch dimension."""
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + (
        ",)" if len(shape) == 1 else ")"
    )


class Layer:
    """Base of every layer.

    The low-level API of "Deep Learning from Scratch": ``forward(x, training)`` returns the
    output, ``backward(dout)`` returns dL/dx and writes dL/dparam into ``grads`` in place.
    ``params`` and ``grads`` are dicts with the same keys; gradient buffers are allocated
    once at build time, so references held by an optimizer stay valid.

    Subclasses implement ``build_params(input_shape)``, ``compute_output_shape``,
    ``_forward(x, training)`` and ``_backward(dout)``; the base class builds lazily from the
    first input, validates inputs and names the layer in every error.

    Args:
        name: layer name (default: class name in snake case with a counter).
        backend: backend name or object (default: the current backend).
        dtype: ``"float32"`` (default) or ``"float64"``.
        input_shape: shape of one sample, to build before the first call.
        trainable: whether optimizers update this layer's parameters.
    """

    def __init__(
        self,
        *,
        name: str | None = None,
        backend: str | Backend | None = None,
        dtype: Any = None,
        input_shape: tuple[int, ...] | None = None,
        trainable: bool = True,
    ) -> None:
        if name:
            _claim_name(name)
        self.name = name or _auto_name(type(self).__name__)
        self.backend: Backend = get_backend(backend)
        self.dtype = resolve_float_dtype(dtype, f"{type(self).__name__}")
        self.params: dict[str, Any] = {}
        self.grads: dict[str, Any] = {}
        # Non-trainable arrays that are part of the model (e.g. BatchNorm running stats):
        # saved and loaded with the weights, never touched by optimizers.
        self.states: dict[str, Any] = {}
        self.trainable = trainable
        self.built = False
        self.input_shape: tuple[int, ...] | None = None
        self.output_shape: tuple[int, ...] | None = None
        self._declared_input_shape = tuple(input_shape) if input_shape is not None else None
        # When a model trains, layers may reuse activation buffers between steps.
        self.reuse_buffers = False
        self._buffers: dict[str, Any] = {}
        self._out_shape_seen: tuple[int, ...] | None = None  # shape of the last forward output
        # Layers that come first need no input gradient; a model clears this to skip dx.
        self.need_input_grad = True
        # Weight penalties by parameter key (see fastnn.regularizers).
        self.regularizers: dict[str, Any] = {}

    # -- identity ---------------------------------------------------------------------
    def describe(self) -> str:
        """Short text naming the layer in error messages, e.g. ``Dense(64)``."""
        return f"{type(self).__name__}()"

    def __repr__(self) -> str:
        return f"<{self.describe()} name={self.name!r} backend={self.backend.name}>"

    # -- build ------------------------------------------------------------------------
    def build(self, input_shape: tuple[int, ...]) -> None:
        """Create parameters for samples of ``input_shape`` (batch dimension excluded)."""
        input_shape = tuple(int(d) for d in input_shape)
        self.input_shape = input_shape
        self.build_params(input_shape)
        self.output_shape = tuple(self.compute_output_shape(input_shape))
        self.built = True

    def build_params(self, input_shape: tuple[int, ...]) -> None:
        """Allocate parameters with :meth:`add_param`; parameter-free layers do nothing."""

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of one output sample for one input sample of ``input_shape``."""
        return tuple(input_shape)

    def add_param(
        self,
        key: str,
        shape: tuple[int, ...],
        initializer: Any = "zeros",
        fan_in: int | None = None,
        fan_out: int | None = None,
    ) -> Any:
        """Create parameter ``key`` from ``initializer`` and its zeroed gradient buffer."""
        init = initializers.get(initializer)
        host = init(tuple(shape), self.backend.rng, fan_in, fan_out)
        # C order whatever the initializer returns (Orthogonal gives Fortran order): the
        # kernels and the flat parameter buffer of a model take C-contiguous arrays.
        host = np.ascontiguousarray(host, dtype=self.dtype)
        value = self.backend.asarray(host, dtype=self.dtype)
        self.params[key] = value
        self.grads[key] = self.backend.xp.zeros_like(value)
        return value

    def add_state(self, key: str, shape: tuple[int, ...], initializer: Any = "zeros") -> Any:
        """Create non-trainable array ``key`` (saved with the weights, no gradient)."""
        init = initializers.get(initializer)
        host = init(tuple(shape), self.backend.rng).astype(self.dtype)
        value = self.backend.asarray(host, dtype=self.dtype)
        self.states[key] = value
        return value

    def ensure_built(self, x: Any) -> None:
        """Build from the shape of ``x`` (a batch) unless already built."""
        if not self.built:
            self.build(tuple(x.shape[1:]))

    # -- the forward / backward contract ----------------------------------------------
    def forward(self, x: Any, training: bool = False) -> Any:
        """Output for input batch ``x``; caches what backward needs."""
        self.check_input(x)
        if not x.flags.c_contiguous:  # kernels index C-ordered memory: copy other layouts
            x = self.backend.xp.ascontiguousarray(x)
        y = self._forward(x, training)
        self._out_shape_seen = tuple(y.shape)
        return y

    def backward(self, dout: Any) -> Any:
        """dL/dx for upstream gradient ``dout``; writes dL/dparam into ``grads``."""
        self.check_dout(dout)
        if not dout.flags.c_contiguous:  # a C-ordered copy; the caller's dout is never touched
            dout = self.backend.xp.ascontiguousarray(dout)
        return self._backward(dout)

    def __call__(self, x: Any, training: bool = False) -> Any:
        """Same as :meth:`forward`."""
        return self.forward(x, training=training)

    def _forward(self, x: Any, training: bool) -> Any:  # pragma: no cover
        raise NotImplementedError(f"{type(self).__name__} does not implement _forward")

    def _backward(self, dout: Any) -> Any:  # pragma: no cover
        raise NotImplementedError(f"{type(self).__name__} does not implement _backward")

    # -- validation -------------------------------------------------------------------
    def check_input(self, x: Any) -> None:
        """Raise a clear TypeError/ValueError unless ``x`` fits this layer; build lazily."""
        where = f"{self.describe()}.forward"
        if not self.backend.is_array(x):
            kind = type(x).__module__ + "." + type(x).__name__
            raise TypeError(
                f"{where}: expected a {self.backend.xp.__name__}.ndarray on backend "
                f"'{self.backend.name}', received {kind}; convert with "
                f"layer.backend.asarray(x, dtype='{self.dtype.name}')"
            )
        if x.dtype != self.dtype:
            raise TypeError(
                f"{where}: expected {self.dtype.name} input (the layer's dtype), received "
                f"{x.dtype.name} with shape {tuple(x.shape)}; "
                f"cast with x.astype('{self.dtype.name}')"
            )
        if x.ndim < 1 or x.shape[0] == 0:
            raise ValueError(f"{where}: expected a non-empty batch, received shape {x.shape}")
        if not self.built:
            declared = self._declared_input_shape
            if declared is not None and tuple(x.shape[1:]) != declared:
                raise ValueError(
                    f"{where}: expected input of shape {shape_str((None, *declared))}, "
                    f"received shape {tuple(x.shape)}"
                )
            self.build(tuple(x.shape[1:]) if declared is None else declared)
            return
        self.check_input_shape(tuple(x.shape), where)

    def check_input_shape(self, shape: tuple[int, ...], where: str) -> None:
        """Raise ValueError unless a batch of ``shape`` matches the built input shape."""
        if shape[1:] != self.input_shape:
            raise ValueError(
                f"{where}: expected input of shape {shape_str((None, *self.input_shape))}, "
                f"received shape {shape}"
            )

    def check_dout(self, dout: Any) -> None:
        """Raise unless ``dout`` is shaped like the last forward output."""
        where = f"{self.describe()}.backward"
        if self._out_shape_seen is None:
            raise RuntimeError(f"{where}: called before forward")
        if not self.backend.is_array(dout):
            raise TypeError(
                f"{where}: expected a {self.backend.xp.__name__}.ndarray, received "
                f"{type(dout).__name__}"
            )
        if tuple(dout.shape) != self._out_shape_seen:
            raise ValueError(
                f"{where}: expected dout of shape {self._out_shape_seen} (the last output), "
                f"received shape {tuple(dout.shape)}"
            )

    # -- buffers ----------------------------------------------------------------------
    def buffer(self, key: str, shape: tuple[int, ...], dtype: Any = None) -> Any:
        """An uninitialised array of ``shape``: fresh, or reused between training steps."""
        dtype = self.dtype if dtype is None else dtype
        if not self.reuse_buffers:
            return self.backend.xp.empty(shape, dtype=dtype)
        buf = self._buffers.get(key)
        if buf is None or buf.shape != tuple(shape) or buf.dtype != dtype:
            buf = self.backend.xp.empty(shape, dtype=dtype)
            self._buffers[key] = buf
        return buf

    def release_buffers(self) -> None:
        """Drop reused buffers and stop reusing (outputs become fresh arrays again)."""
        self.reuse_buffers = False
        self._buffers.clear()

    # -- parameters -------------------------------------------------------------------
    def count_params(self) -> int:
        """Number of scalar parameters."""
        if not self.built:
            raise NotBuiltError(
                f"{self.describe()}.count_params: layer is not built yet; call it on data or "
                "give input_shape"
            )
        return int(sum(int(np.prod(p.shape)) for p in self.params.values()))

    def zero_grads(self) -> None:
        """Set every gradient buffer to zero in place."""
        for g in self.grads.values():
            g[...] = 0

    def cast(self, dtype: Any) -> None:
        """Convert parameters and gradient buffers to ``dtype`` (float32/float64) in place."""
        dt = resolve_float_dtype(dtype, f"{self.describe()}.cast")
        self.dtype = dt
        for key in list(self.params):
            self.params[key] = self.params[key].astype(dt)
            self.grads[key] = self.grads[key].astype(dt)
        for key in list(self.states):
            self.states[key] = self.states[key].astype(dt)
        self._buffers.clear()
        for sub in self.sublayers():
            sub.cast(dt)

    def to_backend(self, backend: str | Backend) -> None:
        """Move this layer (parameters and gradient buffers) to another backend."""
        new = get_backend(backend)
        old = self.backend
        if new is old:
            return
        for key in list(self.params):
            self.params[key] = new.asarray(old.to_numpy(self.params[key]), dtype=self.dtype)
            self.grads[key] = new.xp.zeros_like(self.params[key])
        for key in list(self.states):
            self.states[key] = new.asarray(old.to_numpy(self.states[key]), dtype=self.dtype)
        self.backend = new
        self._buffers.clear()
        for sub in self.sublayers():
            sub.to_backend(new)

    def sublayers(self) -> list[Layer]:
        """Layers nested inside this one (composite layers override)."""
        return []

    def get_config(self) -> dict:
        """Constructor arguments that rebuild this layer (for saving)."""
        return {"name": self.name, "dtype": self.dtype.name, "trainable": self.trainable}

    def set_regularizer(self, key: str, regularizer: Any) -> None:
        """Attach a weight penalty (name or Regularizer, None for none) to parameter ``key``."""
        from fastnn import regularizers

        reg = regularizers.get(regularizer)
        if reg is None:
            self.regularizers.pop(key, None)
        else:
            self.regularizers[key] = reg

    def regularization_loss(self) -> float:
        """Sum of the weight penalties of this layer's parameters (0 without regularizers)."""
        return float(sum(reg.penalty(self.params[key]) for key, reg in self.regularizers.items()
                         if key in self.params))

    def add_regularization_grads(self, scale: float = 1.0) -> None:
        """Add ``scale`` times the penalties' gradients to ``grads`` in place."""
        for key, reg in self.regularizers.items():
            if key in self.params:
                reg.add_gradient(self.params[key], self.grads[key], scale)
