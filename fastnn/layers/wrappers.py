"""Layer wrappers: Bidirectional (run a recurrent layer both ways) and TimeDistributed."""

from __future__ import annotations

import copy
from typing import Any

from fastnn.layers.base import Layer, shape_str
from fastnn.layers.recurrent_base import RNNBase

MERGE_MODES = ("concat", "sum", "mul", "ave", None)


def _layer_from(spec: Any, backend: Any) -> Any:
    """A layer, or one rebuilt from a saved ``{"class_name", "config"}`` entry (io)."""
    if isinstance(spec, dict):
        from fastnn import io

        return io.build_layer(spec, backend=backend)
    return spec


def _layer_entry(layer: Layer) -> dict:
    return {"class_name": type(layer).__name__, "config": layer.get_config()}


class _Wrapper(Layer):
    """Shared parts of the wrappers: sublayers, their parameters and gradients."""

    def sublayers(self) -> list[Layer]:
        """The wrapped layers."""
        raise NotImplementedError  # pragma: no cover

    def named_parameters(self) -> list[tuple[str, Any, Any]]:
        """(``"sublayer/param"``, parameter, gradient) of every wrapped layer."""
        return [
            (f"{sub.name}/{key}", sub.params[key], sub.grads[key])
            for sub in self.sublayers()
            for key in sub.params
        ]

    def count_params(self) -> int:
        """Scalar parameters of the wrapped layers."""
        super().count_params()
        return sum(sub.count_params() for sub in self.sublayers())

    def zero_grads(self) -> None:
        """Zero the gradient buffers of the wrapped layers."""
        for sub in self.sublayers():
            sub.zero_grads()


class Bidirectional(_Wrapper):
    """Runs a recurrent layer forwards and a copy of it backwards, merging the outputs.

    The backward copy has ``go_backwards`` flipped and its own weights (drawn at build);
    with ``return_sequences`` its output is reversed back in time before merging, so step
    ``t`` of the result sees the whole sequence.

    Args:
        layer: a SimpleRNN, LSTM or GRU (or its saved ``{"class_name", "config"}``).
        merge_mode: ``"concat"`` (default), ``"sum"``, ``"mul"``, ``"ave"``, or None for a
            tuple ``(forward_output, backward_output)``.
        backward_layer: an explicit backward layer (default: a copy of ``layer``).
        **kwargs: Layer arguments (name, backend, dtype, input_shape).

    With ``return_state`` the output is ``(merged, *forward_states, *backward_states)``
    and :meth:`backward` takes a tuple of as many gradients (entries may be None).
    """

    supports_masking = True

    def __init__(
        self,
        layer: RNNBase,
        merge_mode: str | None = "concat",
        backward_layer: RNNBase | None = None,
        **kwargs: Any,
    ) -> None:
        layer = _layer_from(layer, kwargs.get("backend"))
        if not isinstance(layer, RNNBase):
            raise TypeError(
                f"Bidirectional: expected a recurrent layer (SimpleRNN, LSTM, GRU), received "
                f"{type(layer).__name__}"
            )
        if merge_mode not in MERGE_MODES:
            raise ValueError(
                f"Bidirectional: merge_mode must be one of {MERGE_MODES}. Received: "
                f"merge_mode={merge_mode!r}"
            )
        kwargs.setdefault("backend", layer.backend)
        kwargs.setdefault("dtype", layer.dtype)
        super().__init__(**kwargs)
        if backward_layer is None:
            backward_layer = copy.deepcopy(layer)
            backward_layer.go_backwards = not layer.go_backwards
            backward_layer.name = f"{layer.name}_backward"
            if backward_layer.built:  # fresh weights, not a copy of the forward ones
                backward_layer.params.clear()
                backward_layer.grads.clear()
                backward_layer.build(layer.input_shape)
        elif backward_layer.go_backwards == layer.go_backwards:
            raise ValueError(
                "Bidirectional: backward_layer must have go_backwards opposite to layer's"
            )
        for attr in ("return_sequences", "return_state", "units"):
            if getattr(backward_layer, attr) != getattr(layer, attr):
                raise ValueError(
                    f"Bidirectional: layer and backward_layer must agree on {attr}; received "
                    f"{getattr(layer, attr)!r} and {getattr(backward_layer, attr)!r}"
                )
        self.forward_layer = layer
        self.backward_layer = backward_layer
        for sub in (layer, backward_layer):
            sub.to_backend(self.backend)
            if sub.dtype != self.dtype:
                sub.cast(self.dtype)
        self.merge_mode = merge_mode
        self.return_sequences = layer.return_sequences
        self.return_state = layer.return_state
        self._yf = None  # forward layer's main output, kept for merge_mode="mul"
        self._yb = None  # backward layer's main output (time-aligned), same
        self._n_states = len(layer.state_names)
        self._out_shapes: tuple[tuple[int, ...], ...] | None = None

    def describe(self) -> str:
        """``Bidirectional(LSTM(64))``."""
        return f"Bidirectional({self.forward_layer.describe()})"

    def get_config(self) -> dict:
        """Constructor arguments (the wrapped layers' configs nested)."""
        return {
            **super().get_config(),
            "layer": _layer_entry(self.forward_layer),
            "merge_mode": self.merge_mode,
        }

    def sublayers(self) -> list[Layer]:
        """The forward and the backward layer."""
        return [self.forward_layer, self.backward_layer]

    def build_params(self, input_shape):
        for sub in self.sublayers():
            if not sub.built:
                sub.build(input_shape)

    def compute_output_shape(self, input_shape):
        shape = self.forward_layer.compute_output_shape(input_shape)
        if self.merge_mode == "concat":
            return (*shape[:-1], 2 * shape[-1])
        return tuple(shape)

    def check_input_shape(self, shape, where):
        self.forward_layer.check_input_shape(shape, where)

    def compute_mask(self, x: Any, mask: Any = None) -> Any:
        """The input mask when returning sequences, else None."""
        return mask if self.return_sequences else None

    def forward(
        self, x: Any, training: bool = False, mask: Any = None,
        initial_state: list[Any] | None = None,
    ) -> Any:
        """Both directions over ``x: (N, T, D)``; see the class docstring for the output.

        ``initial_state`` lists the forward layer's states, then the backward layer's.
        """
        self.check_input(x)
        fwd, bwd = self.forward_layer, self.backward_layer
        init_f = init_b = None
        if initial_state is not None:
            k = self._n_states
            if len(initial_state) != 2 * k:
                raise ValueError(
                    f"{self.describe()}.forward: expected {2 * k} initial states (forward then "
                    f"backward), received {len(initial_state)}"
                )
            init_f, init_b = list(initial_state[:k]), list(initial_state[k:])
        for sub in (fwd, bwd):
            sub.need_input_grad = self.need_input_grad
        out_f = fwd.forward(x, training=training, mask=mask, initial_state=init_f)
        out_b = bwd.forward(x, training=training, mask=mask, initial_state=init_b)
        states: list[Any] = []
        if self.return_state:
            out_f, *states_f = out_f
            out_b, *states_b = out_b
            states = [*states_f, *states_b]
        if self.return_sequences:
            out_b = out_b[:, ::-1]
        self._yf, self._yb = out_f, out_b
        xp = self.backend.xp
        mode = self.merge_mode
        if mode == "concat":
            y = xp.concatenate([out_f, out_b], axis=-1)
        elif mode == "sum":
            y = out_f + out_b
        elif mode == "mul":
            y = out_f * out_b
        elif mode == "ave":
            y = (out_f + out_b) * 0.5
        else:
            y = (out_f, xp.ascontiguousarray(out_b))
        outputs = y if mode is not None else list(y)
        if self.return_state:
            result = (*outputs, *states) if mode is None else (outputs, *states)
        else:
            result = tuple(outputs) if mode is None else outputs
        parts = result if isinstance(result, tuple) else (result,)
        self._out_shapes = tuple(tuple(p.shape) for p in parts)
        self._out_shape_seen = self._out_shapes[0]
        return result

    def check_dout(self, dout: Any) -> None:
        """Raise unless ``dout`` matches the last outputs (a tuple when there are several)."""
        where = f"{self.describe()}.backward"
        if self._out_shapes is None:
            raise RuntimeError(f"{where}: called before forward")
        douts = list(dout) if isinstance(dout, (tuple, list)) else [dout]
        if len(douts) != len(self._out_shapes):
            raise ValueError(
                f"{where}: expected {len(self._out_shapes)} upstream gradients (one per "
                f"output), received {len(douts)}"
            )
        for k, (d, shape) in enumerate(zip(douts, self._out_shapes, strict=True)):
            if d is not None and tuple(d.shape) != shape:
                raise ValueError(
                    f"{where}: expected dout of shape {shape} for output {k}, received shape "
                    f"{tuple(d.shape)}"
                )

    def backward(self, dout: Any) -> Any:
        """dL/dx: the sum of both directions' input gradients."""
        self.check_dout(dout)
        douts = list(dout) if isinstance(dout, (tuple, list)) else [dout]
        mode = self.merge_mode
        n_main = 2 if mode is None else 1
        main, state_grads = douts[:n_main], douts[n_main:]
        if mode is None:
            d_f, d_b = main
        else:
            d = main[0]
            d_f, d_b = self._split_merged(d)
        if d_b is not None and self.return_sequences:
            d_b = d_b[:, ::-1]
        xp = self.backend.xp
        if d_b is not None:
            d_b = xp.ascontiguousarray(d_b)
        if d_f is not None:
            d_f = xp.ascontiguousarray(d_f)
        k = self._n_states
        fwd, bwd = self.forward_layer, self.backward_layer
        if self.return_state:
            dx_f = fwd.backward((d_f, *state_grads[:k]))
            dx_b = bwd.backward((d_b, *state_grads[k:]))
        else:
            dx_f = fwd.backward(self._zeros_if_none(d_f, self._yf))
            dx_b = bwd.backward(self._zeros_if_none(d_b, self._yb))
        if dx_f is None:
            return None
        return dx_f + dx_b

    def _zeros_if_none(self, d: Any, like: Any) -> Any:
        return self.backend.xp.zeros(like.shape, dtype=self.dtype) if d is None else d

    def _split_merged(self, d: Any) -> tuple[Any, Any]:
        if d is None:
            return None, None
        mode = self.merge_mode
        if mode == "concat":
            h = d.shape[-1] // 2
            return d[..., :h], d[..., h:]
        if mode == "sum":
            return d, d
        if mode == "ave":
            half = d * 0.5
            return half, half
        return d * self._yb, d * self._yf  # mul

    def reset_states(self) -> None:
        """Clear the carried states of both directions."""
        self.forward_layer.reset_states()
        self.backward_layer.reset_states()


class TimeDistributed(_Wrapper):
    """Applies a layer to every timestep: ``(N, T, ...) -> (N, T, ...)``.

    The batch and time axes are merged, so the wrapped layer sees one batch of ``N * T``
    samples (one GEMM for a Dense layer). A mask passes through unchanged.

    Args:
        layer: the layer applied to each step (or its saved ``{"class_name", "config"}``).
        **kwargs: Layer arguments (name, backend, dtype, input_shape).
    """

    supports_masking = True

    def __init__(self, layer: Layer, **kwargs: Any) -> None:
        layer = _layer_from(layer, kwargs.get("backend"))
        if not isinstance(layer, Layer):
            raise TypeError(
                f"TimeDistributed: expected a Layer, received {type(layer).__name__}"
            )
        kwargs.setdefault("backend", layer.backend)
        kwargs.setdefault("dtype", layer.dtype)
        super().__init__(**kwargs)
        self.layer = layer
        layer.to_backend(self.backend)
        if layer.dtype != self.dtype:
            layer.cast(self.dtype)
        self._nt = None  # (N, T) of the last forward

    def describe(self) -> str:
        """``TimeDistributed(Dense(10))``."""
        return f"TimeDistributed({self.layer.describe()})"

    def get_config(self) -> dict:
        """Constructor arguments (the wrapped layer's config nested)."""
        return {
            **super().get_config(),
            "layer": _layer_entry(self.layer),
        }

    def sublayers(self) -> list[Layer]:
        """The wrapped layer."""
        return [self.layer]

    def build_params(self, input_shape):
        if len(input_shape) < 2:
            raise ValueError(
                f"{self.describe()}: expected inputs (None, T, ...), received sample shape "
                f"{shape_str((None, *input_shape))}"
            )
        if not self.layer.built:
            self.layer.build(input_shape[1:])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.layer.compute_output_shape(input_shape[1:]))

    def check_input_shape(self, shape, where):
        if len(shape) < 3 or tuple(shape[2:]) != tuple(self.input_shape[1:]):
            raise ValueError(
                f"{where}: expected input of shape (None, T, "
                f"{', '.join(str(d) for d in self.input_shape[1:])}), received shape {shape}"
            )

    def compute_mask(self, x: Any, mask: Any = None) -> Any:
        """The input mask, unchanged."""
        return mask

    def forward(self, x: Any, training: bool = False, mask: Any = None) -> Any:
        """The wrapped layer on every step of ``x: (N, T, ...)``."""
        self.check_input(x)
        N, T = x.shape[:2]
        self._nt = (N, T)
        self.layer.need_input_grad = self.need_input_grad
        flat = self.backend.xp.ascontiguousarray(x).reshape(N * T, *x.shape[2:])
        y = self.layer.forward(flat, training=training)
        y = y.reshape(N, T, *y.shape[1:])
        self._out_shape_seen = tuple(y.shape)
        return y

    def _backward(self, dout):
        N, T = self._nt
        flat = self.backend.xp.ascontiguousarray(dout).reshape(N * T, *dout.shape[2:])
        dx = self.layer.backward(flat)
        if dx is None:
            return None
        return dx.reshape(N, T, *dx.shape[1:])
