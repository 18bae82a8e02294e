"""Dense: the fully connected (affine) layer, with a fused activation."""

from __future__ import annotations

from typing import Any

from fastnn import activations
from fastnn.layers.base import Layer


class Dense(Layer):
    """y = activation(x @ W + b), the Affine layer of "Deep Learning from Scratch".

    ``W`` has shape (in, units) as in the book; ``b`` has shape (units,). Inputs of more
    than two dimensions are transformed along their last axis. The bias add and an
    elementwise activation run as one fused op on backends that have one.

    Args:
        units: output features; a positive integer.
        activation: activation name (None means linear).
        use_bias: whether to add ``b``.
        kernel_initializer: initializer name or object for ``W``.
        bias_initializer: initializer name or object for ``b``.
        input_dim: input features, to build before the first call (Keras's ``input_dim``).
        kernel_regularizer: penalty on ``W`` ("l1", "l2", a Regularizer, or None).
        bias_regularizer: penalty on ``b``.
        **kwargs: Layer arguments (name, backend, dtype, input_shape, trainable).
    """

    def __init__(
        self,
        units: int,
        activation: str | None = None,
        use_bias: bool = True,
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        input_dim: int | None = None,
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(units, bool) or not isinstance(units, int) or units <= 0:
            raise ValueError(f"Dense: units must be a positive integer. Received: units={units!r}")
        if input_dim is not None and "input_shape" not in kwargs:
            kwargs["input_shape"] = (int(input_dim),)
        super().__init__(**kwargs)
        self.units = units
        self.activation = activations.get(activation, where=f"Dense({units})")
        self.use_bias = bool(use_bias)
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        self.set_regularizer("W", kernel_regularizer)
        self.set_regularizer("b", bias_regularizer)
        # Set by a model that fuses a final softmax into softmax-cross-entropy: forward
        # then returns the logits and backward treats the activation as linear.
        self.emit_logits = False
        # Set by a model for one training step that updates the weight during the backward
        # pass (a FusedStep, see fastnn.optimizers.fused_step); None otherwise.
        self.fused_step = None
        self._x = None  # (N, in) input, 2-D view
        self._z = None  # (N, units) pre-activation, kept only when the backward needs it
        self._y = None  # (N, units) output
        self._in_shape = None  # original input shape, for reshaping dx back

    def describe(self) -> str:
        """``Dense(64)``."""
        return f"Dense({self.units})"

    def get_config(self) -> dict:
        """Constructor arguments."""
        from fastnn.initializers import Initializer

        def init_name(init):
            return init if not isinstance(init, Initializer) else type(init).__name__

        return {
            **super().get_config(),
            "units": self.units,
            "activation": self.activation,
            "use_bias": self.use_bias,
            "kernel_initializer": init_name(self.kernel_initializer),
            "bias_initializer": init_name(self.bias_initializer),
        }

    def build_params(self, input_shape):
        if len(input_shape) < 1:
            raise ValueError(
                f"{self.describe()}: expected inputs with a feature axis, received sample "
                f"shape {input_shape}"
            )
        d_in = input_shape[-1]
        self.add_param("W", (d_in, self.units), self.kernel_initializer)
        if self.use_bias:
            self.add_param("b", (self.units,), self.bias_initializer)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def check_input_shape(self, shape, where):
        if len(shape) < 2 or shape[-1] != self.input_shape[-1] or shape[1:] != self.input_shape:
            raise ValueError(
                f"{where}: expected input with {self.input_shape[-1]} features, received "
                f"shape {shape}"
            )

    def _act(self) -> str:
        if self.emit_logits and self.activation == "softmax":
            return "linear"
        return self.activation

    def _forward(self, x, training):
        be = self.backend
        self._in_shape = x.shape
        x2 = x if x.ndim == 2 else x.reshape(-1, x.shape[-1])
        act = self._act()
        z = be.matmul(x2, self.params["W"], out=self.buffer("z", (x2.shape[0], self.units)))
        b = self.params.get("b")
        if act in activations.ROW_ACTIVATIONS:
            if b is not None:
                z += b
            op = be.softmax if act == "softmax" else be.log_softmax
            y = op(z)
            self._z = None
        elif activations.uses_input(act):
            if b is not None:
                z += b
            self._z = z
            y = be.activation_forward(act, z, out=self.buffer("y", z.shape))
        else:
            y = be.bias_activation(act, z, b, out=z)
            self._z = None
        self._x = x2
        self._y = y
        return y if x.ndim == 2 else y.reshape(*x.shape[:-1], self.units)

    def _backward(self, dout):
        be = self.backend
        dy = dout if dout.ndim == 2 else dout.reshape(-1, self.units)
        act = self._act()
        db = self.grads.get("b")
        if act == "softmax":
            dz = be.softmax_backward(dy, self._y, out=self.buffer("dz", dy.shape))
            if db is not None:
                be.xp.sum(dz, axis=0, out=db)
        elif act == "log_softmax":
            xp = be.xp
            dz = xp.exp(self._y)
            dz *= dy.sum(axis=-1, keepdims=True)
            xp.subtract(dy, dz, out=dz)
            if db is not None:
                xp.sum(dz, axis=0, out=db)
        else:
            dz = be.bias_activation_backward(
                act, dy, self._z, self._y, dz=self.buffer("dz", dy.shape), db=db
            )
        dx_buf = self.buffer("dx", self._x.shape) if self.need_input_grad else None
        if self.fused_step is not None:
            dx = self.fused_step.linear_backward(dz, self._x, self.params["W"],
                                                 self.grads["W"], dx_buf, self.need_input_grad)
        else:
            dx = be.linear_backward(dz, self._x, self.params["W"], dW=self.grads["W"], db=None,
                                    dx=dx_buf, need_dx=self.need_input_grad)
        if dx is None:
            return None
        return dx if len(self._in_shape) == 2 else dx.reshape(self._in_shape)
