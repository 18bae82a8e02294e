"""The base of the recurrent layers: sequence handling shared by SimpleRNN, LSTM and GRU.

A recurrent layer reads a batch ``x: (N, T, D)``. Its forward pass

1. puts the sequence time-major (reversed when ``go_backwards``) and projects every
   timestep at once with one GEMM, ``xz = x @ W + b: (T, N, G*H)`` for ``G`` gates (the
   unmasked LSTM leaves ``b`` out here and adds it in its recurrence, see
   :meth:`RNNBase._bias_in_recurrence`);
2. runs the recurrence, one GEMM ``h_prev @ U`` per step (``be.matmul``: BLAS, cuBLAS or
   the numba backend's own GEMM, ``U`` prepared once by ``be.prepare_rhs``) followed by the
   cell's fused gate math (a backend op: one Numba or CUDA kernel per step); the unmasked
   LSTM runs all steps as one op (``lstm_sequence_forward``/``_backward``: one compiled
   loop on numba);
3. returns the last hidden state ``(N, H)``, or all of them ``(N, T, H)`` with
   ``return_sequences``; with ``return_state`` a tuple ``(output, *final_states)``.

The backward pass is full backpropagation through time over the batch's ``T`` steps. With
``stateful=True`` the final states of one batch are the initial states of the next, and
the gradient stops at the batch boundary: feeding a long sequence window by window is
truncated BPTT. Masked steps (a boolean ``(N, T)`` mask from ``Embedding(mask_zero=True)``
or ``Masking``) leave the states unchanged and repeat the previous output, as in Keras.

Tuple outputs. With ``return_state=True`` :meth:`RNNBase.forward` returns a tuple and
:meth:`RNNBase.backward` takes a tuple (or list) of upstream gradients of the same length;
an entry may be ``None`` when that output does not reach the loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fastnn import activations, initializers
from fastnn.layers.base import Layer, shape_str


def _positive_int(value: Any, what: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{where}: {what} must be a positive integer. Received: {what}={value!r}")
    return int(value)


class RNNBase(Layer):
    """Shared machinery of SimpleRNN, LSTM and GRU (not used directly).

    Subclasses set ``gates`` (blocks of ``units`` columns in ``W`` and ``U``) and
    ``state_names``, and implement :meth:`_recurrence` and :meth:`_recurrence_backward`.

    Args:
        units: hidden size ``H``.
        activation: activation of the candidate / output (default ``"tanh"``).
        recurrent_activation: activation of the gates (default ``"sigmoid"``).
        use_bias: whether the layer has a bias.
        kernel_initializer: initializer of ``W: (D, G*H)``.
        recurrent_initializer: initializer of ``U: (H, G*H)``.
        bias_initializer: initializer of ``b``.
        return_sequences: return all hidden states ``(N, T, H)`` instead of the last.
        return_state: also return the final states (a tuple ``(output, *states)``).
        go_backwards: process the sequence backwards (the output sequence is reversed too).
        stateful: carry the final states of a batch over as the initial states of the
            next one (truncated BPTT); :meth:`reset_states` clears them.
        **kwargs: Layer arguments (name, backend, dtype, input_shape, trainable).
    """

    gates = 1
    state_names: tuple[str, ...] = ("h",)
    supports_masking = True

    def __init__(
        self,
        units: int,
        activation: str | None = "tanh",
        recurrent_activation: str | None = "sigmoid",
        use_bias: bool = True,
        kernel_initializer: Any = "glorot_uniform",
        recurrent_initializer: Any = "orthogonal",
        bias_initializer: Any = "zeros",
        return_sequences: bool = False,
        return_state: bool = False,
        go_backwards: bool = False,
        stateful: bool = False,
        **kwargs: Any,
    ) -> None:
        cls = type(self).__name__
        units = _positive_int(units, "units", cls)
        super().__init__(**kwargs)
        self.units = units
        self.activation = self._cell_activation(activation, "activation")
        self.recurrent_activation = self._cell_activation(
            recurrent_activation, "recurrent_activation"
        )
        self.use_bias = bool(use_bias)
        self.kernel_initializer = kernel_initializer
        self.recurrent_initializer = recurrent_initializer
        self.bias_initializer = bias_initializer
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.stateful = bool(stateful)
        self.carried_states: list[Any] | None = None  # (N, H) states kept when stateful
        self.initial_state_grads: list[Any] | None = None  # dL/d(initial states), set by backward
        self._xt = None  # (T, N, D) time-major (reversed if go_backwards) input
        # hs of the last forward when backward is to compute grads["U"] = hs[:T].T @ dxz
        # itself (see _recurrent_weight_grad); None otherwise.
        self._dU_from = None
        self._mask = None  # (T, N, 1) time-major mask as 0/1 floats, or None
        self._seq_shape = None  # (N, T, D) of the last input
        self._out_shapes: tuple[tuple[int, ...], ...] | None = None

    def _cell_activation(self, name: str | None, what: str) -> str:
        where = f"{type(self).__name__}({self.units})"
        act = activations.get(name, where=where)
        if act in activations.ROW_ACTIVATIONS or activations.uses_input(act):
            raise ValueError(
                f"{where}: {what} must be an elementwise activation whose derivative follows "
                f"from its output (tanh, sigmoid, relu, linear). Received: {what}={name!r}"
            )
        return act

    # -- identity / config ------------------------------------------------------------
    def describe(self) -> str:
        """``LSTM(64)``."""
        return f"{type(self).__name__}({self.units})"

    def get_config(self) -> dict:
        """Constructor arguments."""

        def init_name(init):
            return type(init).__name__ if isinstance(init, initializers.Initializer) else init

        return {
            **super().get_config(),
            "units": self.units,
            "activation": self.activation,
            "recurrent_activation": self.recurrent_activation,
            "use_bias": self.use_bias,
            "kernel_initializer": init_name(self.kernel_initializer),
            "recurrent_initializer": init_name(self.recurrent_initializer),
            "bias_initializer": init_name(self.bias_initializer),
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "go_backwards": self.go_backwards,
            "stateful": self.stateful,
        }

    # -- build ------------------------------------------------------------------------
    def build_params(self, input_shape):
        if len(input_shape) != 2:
            raise ValueError(
                f"{self.describe()}: expected sequences of shape (None, T, D), received sample "
                f"shape {shape_str((None, *input_shape))}"
            )
        d_in = input_shape[-1]
        gh = self.gates * self.units
        self.add_param("W", (d_in, gh), self.kernel_initializer, fan_in=d_in, fan_out=gh)
        self.add_param("U", (self.units, gh), self.recurrent_initializer)
        for key in ("W", "U"):  # an initializer may return a transposed (F-ordered) matrix
            self.params[key] = self.backend.xp.ascontiguousarray(self.params[key])
        if self.use_bias:
            self.build_bias()

    def build_bias(self) -> None:
        """Create ``b: (G*H,)`` (GRU with ``reset_after`` overrides)."""
        self.add_param("b", (self.gates * self.units,), self.bias_initializer)

    def compute_output_shape(self, input_shape):
        if self.return_sequences:
            return (input_shape[0], self.units)
        return (self.units,)

    def check_input_shape(self, shape, where):
        if len(shape) != 3 or shape[2] != self.input_shape[-1]:
            raise ValueError(
                f"{where}: expected input of shape (None, T, {self.input_shape[-1]}), received "
                f"shape {shape}"
            )

    # -- states -----------------------------------------------------------------------
    def reset_states(self, states: Sequence[Any] | None = None) -> None:
        """Clear the carried states of a stateful layer, or set them to ``states``."""
        if states is None:
            self.carried_states = None
            return
        self.carried_states = [self.backend.xp.array(s, dtype=self.dtype) for s in states]

    def _initial_states(self, n: int, initial_state: Sequence[Any] | None) -> list[Any]:
        xp = self.backend.xp
        where = f"{self.describe()}.forward"
        given = initial_state
        if given is None and self.stateful and self.carried_states is not None:
            given = self.carried_states
        if given is None:
            return [xp.zeros((n, self.units), dtype=self.dtype) for _ in self.state_names]
        if self.backend.is_array(given):
            given = [given]
        given = list(given)
        if len(given) != len(self.state_names):
            raise ValueError(
                f"{where}: expected {len(self.state_names)} initial states "
                f"({', '.join(self.state_names)}), received {len(given)}"
            )
        out = []
        for name, s in zip(self.state_names, given, strict=True):
            if tuple(s.shape) != (n, self.units):
                raise ValueError(
                    f"{where}: initial state {name!r} must have shape {(n, self.units)}, "
                    f"received shape {tuple(s.shape)} (a stateful layer needs the same batch "
                    "size every call; call reset_states() to change it)"
                )
            out.append(self.backend.asarray(s, dtype=self.dtype))
        return out

    # -- forward ----------------------------------------------------------------------
    def forward(
        self,
        x: Any,
        training: bool = False,
        mask: Any = None,
        initial_state: Sequence[Any] | None = None,
    ) -> Any:
        """Run the layer over batch ``x: (N, T, D)``.

        Args:
            x: input sequences.
            training: unused (no dropout); kept for the Layer contract.
            mask: optional ``(N, T)`` boolean mask; False marks padded steps.
            initial_state: optional list of ``(N, H)`` initial states (``[h]``, or
                ``[h, c]`` for LSTM); default zeros, or the carried states when stateful.

        Returns:
            ``(N, H)`` or ``(N, T, H)``; with ``return_state`` the tuple
            ``(output, *final_states)``.
        """
        self.check_input(x)
        be = self.backend
        xp = be.xp
        N, T, D = x.shape
        H = self.units
        xt = x.transpose(1, 0, 2)
        if self.go_backwards:
            xt = xt[::-1]
        xt = xp.ascontiguousarray(xt)
        self._xt = xt
        self._seq_shape = (N, T, D)
        self._mask = self._time_major_mask(mask, N, T)
        states0 = self._initial_states(N, initial_state)
        bias = None if self._bias_in_recurrence() else self.input_bias()
        xz = be.linear(
            xt.reshape(T * N, D), self.params["W"], bias,
            out=self.buffer("xz", (T * N, self.gates * H)),
        ).reshape(T, N, self.gates * H)
        hs = self._recurrence(xz, states0)
        finals = [s[T] for s in hs]
        if self.stateful:
            self.carried_states = [f.copy() for f in finals]
        if self.return_sequences:
            y = self.buffer("y", (N, T, H))
            y[...] = hs[0][1:].transpose(1, 0, 2)
        else:
            y = finals[0].copy()
        outputs = (y, *[f.copy() for f in finals]) if self.return_state else y
        if self.return_state:
            self._out_shapes = tuple(tuple(o.shape) for o in outputs)
        else:
            self._out_shapes = (tuple(y.shape),)
        self._out_shape_seen = self._out_shapes[0]
        return outputs

    def __call__(self, x: Any, training: bool = False, **kwargs: Any) -> Any:
        """Same as :meth:`forward`."""
        return self.forward(x, training=training, **kwargs)

    def compute_mask(self, x: Any, mask: Any = None) -> Any:
        """The mask of the output sequence (reversed with go_backwards), or None."""
        if mask is None or not self.return_sequences:
            return None
        return mask[:, ::-1] if self.go_backwards else mask

    def _bias_in_recurrence(self) -> bool:
        """Whether :meth:`_recurrence` adds the input bias itself (and
        :meth:`_recurrence_backward` writes its gradient), so that the input projection and
        the backward pass leave it out."""
        return False

    def input_bias(self) -> Any:
        """The bias added in the input projection (None without a bias)."""
        return self.params.get("b")

    def _time_major_mask(self, mask: Any, n: int, t: int) -> Any:
        if mask is None:
            return None
        xp = self.backend.xp
        m = self.backend.asarray(mask)
        if tuple(m.shape) != (n, t):
            raise ValueError(
                f"{self.describe()}.forward: expected a mask of shape {(n, t)} (batch, time), "
                f"received shape {tuple(m.shape)}"
            )
        m = (m != 0).T
        if self.go_backwards:
            m = m[::-1]
        return xp.ascontiguousarray(m[:, :, None].astype(self.dtype))

    def _apply_mask(self, s: int, new: Any, prev: Any) -> None:
        """Masked rows of step ``s`` keep ``prev``: new = prev + m * (new - prev)."""
        if self._mask is None:
            return
        new -= prev
        new *= self._mask[s]
        new += prev

    # -- backward ---------------------------------------------------------------------
    def check_dout(self, dout: Any) -> None:
        """Raise unless ``dout`` matches the last outputs (a tuple with return_state)."""
        where = f"{self.describe()}.backward"
        if self._out_shapes is None:
            raise RuntimeError(f"{where}: called before forward")
        if self.return_state:
            if not isinstance(dout, (tuple, list)) or len(dout) != len(self._out_shapes):
                raise TypeError(
                    f"{where}: the layer returns {len(self._out_shapes)} outputs (output and "
                    f"states {', '.join(self.state_names)}); expected a tuple of as many "
                    f"upstream gradients, received {type(dout).__name__}"
                )
            douts = list(dout)
        else:
            douts = [dout]
        for k, (d, shape) in enumerate(zip(douts, self._out_shapes, strict=True)):
            if d is None:
                continue
            if not self.backend.is_array(d):
                raise TypeError(
                    f"{where}: expected a {self.backend.xp.__name__}.ndarray for output {k}, "
                    f"received {type(d).__name__}"
                )
            if tuple(d.shape) != shape:
                raise ValueError(
                    f"{where}: expected dout of shape {shape} for output {k}, received shape "
                    f"{tuple(d.shape)}"
                )

    def backward(self, dout: Any) -> Any:
        """dL/dx ``(N, T, D)`` for upstream gradient ``dout`` (a tuple with return_state).

        Parameter gradients are written into ``grads``; the gradients with respect to the
        initial states go to :attr:`initial_state_grads`.
        """
        self.check_dout(dout)
        be = self.backend
        xp = be.xp
        N, T, D = self._seq_shape
        H = self.units
        douts = list(dout) if self.return_state else [dout]
        dy = douts[0]
        dfinal = [xp.zeros((N, H), dtype=self.dtype) for _ in self.state_names]
        for k, d in enumerate(douts[1:]):
            if d is not None:
                dfinal[k] += d
        dseq = None
        if dy is not None:
            if self.return_sequences:
                dseq = dy.transpose(1, 0, 2)  # (T, N, H) view, time-major
            else:
                dfinal[0] += dy
        dxz, dstates0 = self._recurrence_backward(dseq, dfinal)
        self.initial_state_grads = dstates0
        dxz2 = dxz.reshape(T * N, self.gates * H)
        x2 = self._xt.reshape(T * N, D)
        dx_buf = self.buffer("dxt", (T * N, D)) if self.need_input_grad else None
        hs_u, self._dU_from = self._dU_from, None
        if hs_u is not None:
            # dx first, while the recurrence's last rows of dxz are still in cache (measured
            # 0.3-0.4 ms less on the LSTM benchmark than dx last); then dxz is packed once
            # for both weight gradients.
            dx = be.matmul(dxz2, self.params["W"].T, out=dx_buf) if dx_buf is not None else None
            rhs = be.prepare_rhs(dxz2)
            be.matmul(hs_u[:T].reshape(T * N, H).T, rhs, out=self.grads["U"])
            be.matmul(x2.T, rhs, out=self.grads["W"])
        else:
            dx = be.linear_backward(dxz2, x2, self.params["W"], dW=self.grads["W"], db=None,
                                    dx=dx_buf, need_dx=self.need_input_grad)
        if not self._bias_in_recurrence():
            self._input_bias_grad(dxz2)
        if dx is None:
            return None
        dxt = dx.reshape(T, N, D)
        if self.go_backwards:
            dxt = dxt[::-1]
        out = self.buffer("dx", (N, T, D))
        out[...] = dxt.transpose(1, 0, 2)
        return out

    def _input_bias_grad(self, dxz2: Any) -> None:
        """Write the bias gradient from dL/dxz ``(T*N, G*H)``."""
        db = self.grads.get("b")
        if db is not None:
            self.backend.xp.sum(dxz2, axis=0, out=db)

    def _recurrent_weight_grad(self, hs: Any) -> None:
        """Have :meth:`backward` compute ``grads["U"] = hs[:T].T @ dxz`` (SimpleRNN and
        LSTM, whose recurrent product shares dL/dxz with the input weight's) together with
        ``grads["W"]``, from one packing of dxz."""
        self._dU_from = hs

    def _step_grad(self, s: int, dstate: Any, dseq: Any, out: Any) -> Any:
        """The gradient reaching the hidden state of step ``s`` (carried plus the output's),
        written into ``out``, never an alias of ``dstate``."""
        if dseq is None:
            out[...] = dstate
            return out
        return self.backend.xp.add(dstate, dseq[s], out=out)

    def _split_masked(self, s: int, grads: list[Any]) -> list[Any] | None:
        """For masked steps: keep m * g for the cell, return (1 - m) * g to carry over."""
        if self._mask is None:
            return None
        m = self._mask[s]
        carried = [g * (1 - m) for g in grads]
        for g in grads:
            g *= m
        return carried

    # -- subclass hooks ---------------------------------------------------------------
    def _recurrence(self, xz: Any, states0: list[Any]) -> list[Any]:  # pragma: no cover
        """Run all steps; return per-state arrays of shape (T + 1, N, H)."""
        raise NotImplementedError

    def _recurrence_backward(self, dseq, dfinal):  # pragma: no cover
        """BPTT over all steps; return dL/dxz (T, N, G*H) and dL/d(initial states)."""
        raise NotImplementedError
