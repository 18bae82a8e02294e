"""Sequential: a stack of layers with Keras's compile / fit / evaluate / predict."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from fastnn import losses as losses_mod
from fastnn import metrics as metrics_mod
from fastnn import optimizers as optimizers_mod
from fastnn.backends import Backend, get_backend
from fastnn.callbacks import Callback, CallbackList, History
from fastnn.config import resolve_float_dtype
from fastnn.distributed.strategy import NO_DISTRIBUTION
from fastnn.distributed.strategy import resolve as resolve_distribution
from fastnn.errors import DivergenceError, NotBuiltError
from fastnn.layers.activations import Activation
from fastnn.layers.base import Layer, shape_str
from fastnn.layers.dense import Dense
from fastnn.layers.masking import forward_with_masks
from fastnn.losses.crossentropy import (
    CategoricalCrossentropy,
    SparseCategoricalCrossentropy,
    prepare_labels,
)


class Sequential:
    """A linear stack of layers, trained with ``compile`` and ``fit`` (Keras names).

    It is also a layer-like object with the book's low-level API: ``forward(x)``,
    ``backward(dout)``, and ``params`` / ``grads`` dicts keyed ``"<layer>/<param>"``.

    Args:
        layers: layers to add in order.
        name: model name.
        backend: backend name or object (default: the current backend). Layers are moved
            to it when added, so one process can train the same architecture on several
            backends side by side.
        dtype: ``"float32"`` (default) or ``"float64"``; layers are cast to it.
        seed: seed for shuffling (default: drawn from the backend's generator at build).
    """

    is_model = True
    #: Hooks of distributed training (fastnn.distributed) set by ``fit``; no-ops by default.
    _distribution = NO_DISTRIBUTION

    def __init__(
        self,
        layers: Iterable[Layer] | None = None,
        name: str | None = None,
        backend: str | Backend | None = None,
        dtype: Any = None,
        seed: int | None = None,
    ) -> None:
        self.name = name or "sequential"
        self.backend: Backend = get_backend(backend)
        self.dtype = resolve_float_dtype(dtype, "Sequential")
        self._dtype_explicit = dtype is not None
        self.layers: list[Layer] = []
        self.seed = seed
        self.rng: np.random.Generator | None = None
        self.optimizer: optimizers_mod.Optimizer | None = None
        self.loss: losses_mod.Loss | None = None
        self.metric_names: list[str] = []
        self._metric_fns: list[tuple[str, Any]] = []
        self._metric_specs: list[str] = []
        self._fused: losses_mod.Loss | None = None  # from-logits twin of a softmax+CE loss
        self.compiled = False
        self.stop_training = False
        self.history: History | None = None
        self.input_shape: tuple[int, ...] | None = None
        # Why the last fit stopped early on a non-finite loss (TerminateOnNaN), else None.
        self.diverged: str | None = None
        # (epoch, batch) of the last applied optimizer step, for divergence messages.
        self._last_step: tuple[int, int] | None = None
        # Epochs trained so far (saved in checkpoints: resume with initial_epoch=this).
        self.epochs_completed = 0
        self._pending_epoch: tuple[int, dict] | None = None  # (epoch, logs) during on_epoch_end
        self._flat: _FlatStorage | None = None  # trainable parameters in one buffer
        #: Whether training steps may update Dense weights inside the backward pass where
        #: the optimizer has a fused op for it (same result; see :meth:`_backward_and_update`).
        self.fuse_updates = True
        for layer in layers or []:
            self.add(layer)

    # -- structure ----------------------------------------------------------------------
    def add(self, layer: Layer) -> None:
        """Append ``layer``; it is moved to the model's backend and dtype."""
        if not isinstance(layer, Layer):
            raise TypeError(
                f"Sequential.add: expected a Layer, received {type(layer).__name__}"
            )
        if not self.layers and not self._dtype_explicit:
            self.dtype = layer.dtype
        layer.to_backend(self.backend)
        if layer.dtype != self.dtype:
            layer.cast(self.dtype)
        if any(existing is layer for existing in self.layers):
            raise ValueError(f"Sequential.add: layer {layer.name!r} is already in the model")
        # Parameters, optimizer state and checkpoints are keyed "layer/param": a second layer
        # of the same name would share the first one's optimizer state (or not be trained).
        taken = {existing.name for existing in self._all_layers()}
        for sub in (layer, *_nested_layers(layer)):
            if sub.name in taken:
                raise ValueError(
                    f"Sequential.add: the model already has a layer named {sub.name!r}; "
                    f"{sub.describe()} needs a unique name (layers are keyed by name in "
                    "parameters, optimizer state and checkpoints): pass name=... when "
                    "creating it"
                )
            taken.add(sub.name)
        self.layers.append(layer)
        if self.input_shape is not None:
            self._build_from(len(self.layers) - 1)
        elif len(self.layers) == 1 and layer._declared_input_shape is not None:
            self.build(layer._declared_input_shape)
        if self.compiled:
            self._setup_fusion()

    @property
    def built(self) -> bool:
        """Whether every layer has parameters."""
        return bool(self.layers) and self.input_shape is not None and all(
            layer.built for layer in self.layers
        )

    def build(self, input_shape: Sequence[int]) -> None:
        """Build every layer for samples of ``input_shape`` (batch dimension excluded)."""
        if not self.layers:
            raise ValueError("Sequential.build: the model has no layers; add some first")
        self.input_shape = tuple(int(d) for d in input_shape)
        self._build_from(0)
        self._flat_storage()  # parameters move into one buffer before anyone holds them
        if self.rng is None:
            seed = self.seed
            if seed is None:
                seed = int(self.backend.rng.integers(0, 2**63 - 1))
            self.rng = np.random.default_rng(seed)

    def _build_from(self, start: int) -> None:
        shape = self.input_shape if start == 0 else self.layers[start - 1].output_shape
        for layer in self.layers[start:]:
            if not layer.built:
                layer.build(shape)
            elif layer.input_shape != tuple(shape):
                raise ValueError(
                    f"Sequential: {layer.describe()} ({layer.name}) was built for input "
                    f"{shape_str((None, *layer.input_shape))}, but the layer before it "
                    f"outputs {shape_str((None, *shape))}"
                )
            shape = layer.output_shape

    @property
    def output_shape(self) -> tuple[int, ...] | None:
        """Shape of one output sample, once built."""
        return self.layers[-1].output_shape if self.built else None

    def describe(self) -> str:
        """``Sequential(3 layers)``."""
        return f"Sequential({len(self.layers)} layers)"

    def __repr__(self) -> str:
        return f"<{self.describe()} name={self.name!r} backend={self.backend.name}>"

    # -- parameters -----------------------------------------------------------------------
    def named_parameters(self) -> list[tuple[str, Any, Any]]:
        """(``"layer/param"``, parameter, gradient) for every trainable parameter."""
        out = []
        for layer in self._all_layers():
            if not layer.trainable:
                continue
            for key, value in layer.params.items():
                out.append((f"{layer.name}/{key}", value, layer.grads[key]))
        return out

    def _all_layers(self) -> list[Layer]:
        seen: list[Layer] = []

        def visit(layer: Layer) -> None:
            seen.append(layer)
            for sub in layer.sublayers():
                visit(sub)

        for layer in self.layers:
            visit(layer)
        return seen

    @property
    def params(self) -> dict[str, Any]:
        """Trainable parameters keyed ``"layer/param"``."""
        return {name: p for name, p, _ in self.named_parameters()}

    @property
    def grads(self) -> dict[str, Any]:
        """Gradient buffers keyed like :attr:`params`."""
        return {name: g for name, _, g in self.named_parameters()}

    def count_params(self) -> int:
        """Number of scalar parameters (trainable or not)."""
        if not self.built:
            raise NotBuiltError(
                "Sequential.count_params: the model is not built; call build(input_shape), "
                "give the first layer input_shape/input_dim, or fit/predict once"
            )
        return sum(layer.count_params() for layer in self.layers)

    def zero_grads(self) -> None:
        """Zero every gradient buffer."""
        for layer in self._all_layers():
            layer.zero_grads()

    def cast(self, dtype: Any) -> None:
        """Cast every layer to ``dtype`` and make it the model's dtype."""
        self.dtype = resolve_float_dtype(dtype, "Sequential.cast")
        self._dtype_explicit = True
        for layer in self.layers:
            layer.cast(self.dtype)

    def get_weights(self) -> list[np.ndarray]:
        """Host copies of every parameter, layer by layer (Keras order)."""
        return [self.backend.to_numpy(p).copy() for layer in self.layers for p in
                _layer_arrays(layer)]

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Copy ``weights`` (as from :meth:`get_weights`) into the parameters in place."""
        targets = [p for layer in self.layers for p in _layer_arrays(layer)]
        if len(weights) != len(targets):
            raise ValueError(
                f"Sequential.set_weights: expected {len(targets)} arrays, received {len(weights)}"
            )
        for i, (dst, src) in enumerate(zip(targets, weights, strict=True)):
            src = np.asarray(src)
            if src.shape != dst.shape:
                raise ValueError(
                    f"Sequential.set_weights: array {i} has shape {src.shape}, expected {dst.shape}"
                )
            dst[...] = self.backend.asarray(src, dtype=dst.dtype)

    # -- low-level forward / backward -----------------------------------------------------
    def forward(self, x: Any, training: bool = False) -> Any:
        """Run every layer on batch ``x`` (a backend array of the model's dtype)."""
        if not self.built:
            if not self.layers:
                raise ValueError("Sequential.forward: the model has no layers")
            self.build(tuple(x.shape[1:]))
        # Masks of padded steps (Embedding(mask_zero=True), Masking) reach the layers
        # that take them (recurrent layers); see fastnn.layers.masking.
        return forward_with_masks(self.layers, x, training)

    def backward(self, dout: Any) -> Any:
        """Backpropagate ``dout`` through every layer; returns dL/dx (None if skipped)."""
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
            if dout is None:
                break
        return dout

    __call__ = forward

    # -- compile ------------------------------------------------------------------------------
    def compile(
        self,
        optimizer: str | optimizers_mod.Optimizer = "rmsprop",
        loss: str | losses_mod.Loss | None = None,
        metrics: Sequence[str] | None = None,
    ) -> None:
        """Set the optimizer, loss and metrics (objects or Keras strings).

        A final softmax (``Dense(..., activation="softmax")`` or a ``Softmax`` layer)
        followed by categorical or sparse categorical cross-entropy is trained through
        the fused softmax-cross-entropy kernel on the logits; its loss is the exact
        cross-entropy without Keras's 1e-7 clipping.
        """
        if loss is None:
            raise ValueError("Sequential.compile: a loss is required, e.g. loss='mse'")
        if isinstance(optimizer, str) and optimizer.strip().lower() == "rmsprop" and (
            "rmsprop" not in optimizers_mod.names()
        ):
            raise ValueError(
                "Sequential.compile: optimizer 'rmsprop' is not available in this version; "
                f"valid names: {', '.join(optimizers_mod.names())}"
            )
        opt = optimizers_mod.get(optimizer, backend=self.backend)
        if opt.backend is not self.backend:
            if opt.slots:
                raise ValueError(
                    f"Sequential.compile: optimizer holds state on backend '{opt.backend.name}', "
                    f"the model is on '{self.backend.name}'"
                )
            opt.backend = self.backend
        loss_obj = losses_mod.get(loss, backend=self.backend)
        loss_obj.backend = self.backend
        specs = list(metrics or [])
        if isinstance(metrics, str):
            specs = [metrics]
        for spec in specs:
            metrics_mod.resolve(spec, loss_obj.name, 2, False)  # validates the name early
        self.optimizer = opt
        self.loss = loss_obj
        self._metric_specs = specs
        self.compiled = True
        self._setup_fusion()

    def _setup_fusion(self) -> None:
        self._fused = None
        loss = self.loss
        if not self.layers or loss is None or loss.reduction == "none":
            return
        if not isinstance(loss, (CategoricalCrossentropy, SparseCategoricalCrossentropy)):
            return
        if loss.from_logits:
            return
        last = self.layers[-1]
        is_softmax_dense = isinstance(last, Dense) and last.activation == "softmax"
        is_softmax_layer = isinstance(last, Activation) and last.activation == "softmax" and (
            last.axis in (-1, 1)
        )
        if is_softmax_dense or is_softmax_layer:
            twin = type(loss)(from_logits=True, reduction=loss.reduction, backend=self.backend)
            twin.name = loss.name
            self._fused = twin

    # -- forward to the loss --------------------------------------------------------------
    def _forward_for_loss(self, x: Any, training: bool) -> Any:
        """Forward pass whose output feeds the training loss (logits when fused)."""
        if self._fused is None:
            return self.forward(x, training=training)
        last = self.layers[-1]
        if isinstance(last, Dense):
            last.emit_logits = True
            try:
                return self.forward(x, training=training)
            finally:
                last.emit_logits = False
        if not self.built:
            self.build(tuple(x.shape[1:]))
        return forward_with_masks(self.layers[:-1], x, training)

    def _backward_from_loss(self, dout: Any) -> Any:
        layers = self.layers
        if self._fused is not None and not isinstance(layers[-1], Dense):
            layers = layers[:-1]
        last = layers[-1] if layers else None
        if isinstance(last, Dense) and self._fused is not None:
            last.emit_logits = True
        try:
            for layer in reversed(layers):
                dout = layer.backward(dout)
                self._distribution.after_layer_backward(layer)  # may start an all-reduce
                if dout is None:
                    break
        finally:
            if isinstance(last, Dense):
                last.emit_logits = False
        return dout

    def _active_loss(self) -> losses_mod.Loss:
        return self._fused if self._fused is not None else self.loss

    # -- gradient-check hooks ---------------------------------------------------------------
    def prepare_targets(self, y: Any) -> Any:
        """Targets as backend arrays the loss accepts (labels stay integers)."""
        self._require_compiled("prepare_targets")
        return self._device_targets(self._host_targets(y, len(y)))

    def loss_value(self, x: Any, y: Any, training: bool = True) -> float:
        """The training loss (plus regularization) of batch (x, y)."""
        self._require_compiled("loss_value")
        out = self._forward_for_loss(x, training)
        return float(self._active_loss().forward(out, y)) + self._regularization_loss()

    def loss_gradients(self, x: Any, y: Any, dout: float = 1.0) -> Any:
        """Forward, loss and backward on (x, y); returns dL/dx, grads written in place."""
        self._require_compiled("loss_gradients")
        out = self._forward_for_loss(x, True)
        loss = self._active_loss()
        loss.forward(out, y)
        dx = self._backward_from_loss(loss.backward(dout))
        self._add_regularization_grads(dout)
        return dx

    def _regularization_loss(self) -> float:
        return float(sum(layer.regularization_loss() for layer in self._all_layers()))

    def _add_regularization_grads(self, scale: float = 1.0) -> None:
        for layer in self._all_layers():
            if layer.regularizers:
                layer.add_regularization_grads(scale)

    # -- data preparation ---------------------------------------------------------------
    def _require_compiled(self, where: str) -> None:
        if not self.compiled:
            raise RuntimeError(
                f"Sequential.{where}: the model must be compiled first: "
                "model.compile(optimizer='adam', loss='categorical_crossentropy')"
            )

    def _host_inputs(self, x: Any, where: str) -> np.ndarray:
        if self.backend.is_array(x) and self.backend.name == "cupy":
            x = self.backend.to_numpy(x)
        arr = np.asarray(x)
        if arr.dtype == object or arr.dtype.kind not in "biuf":
            raise TypeError(
                f"Sequential.{where}: x must be a numeric array, received dtype {arr.dtype}"
            )
        if arr.ndim < 2:
            raise ValueError(
                f"Sequential.{where}: x must have a batch axis and feature axes, received "
                f"shape {arr.shape}"
            )
        if arr.shape[0] == 0:
            raise ValueError(f"Sequential.{where}: x is empty (shape {arr.shape})")
        if self.built and tuple(arr.shape[1:]) != self.input_shape:
            first = self.layers[0]
            raise ValueError(
                f"Sequential.{where}: {first.describe()} ({first.name}) expected input of shape "
                f"{shape_str((None, *self.input_shape))}, received shape {arr.shape}"
            )
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            bad = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
            raise ValueError(
                f"Sequential.{where}: x contains a non-finite value ({arr[bad]}) at index {bad}"
            )
        return _cast_checked(arr, self.dtype, f"Sequential.{where}: x")

    def _targets_sparse(self) -> bool:
        loss = self._active_loss()
        return isinstance(loss, SparseCategoricalCrossentropy)

    def _host_targets(self, y: Any, n: int) -> np.ndarray:
        if self.backend.is_array(y) and self.backend.name == "cupy":
            y = self.backend.to_numpy(y)
        arr = np.asarray(y)
        if arr.dtype == object or arr.dtype.kind not in "biuf":
            raise TypeError(f"Sequential: y must be numeric, received dtype {arr.dtype}")
        if arr.ndim == 0 or arr.shape[0] != n:
            raise ValueError(
                f"Sequential: x and y must have the same number of samples, received "
                f"{n} inputs and {arr.shape[0] if arr.ndim else 0} targets"
            )
        if self._targets_sparse():
            classes = self.output_shape[-1] if self.built else None
            if classes is not None:
                dummy = np.empty((n, classes), dtype=self.dtype)
                labels = prepare_labels(get_backend("numpy"), dummy, arr,
                                        self.loss.describe())
                return np.ascontiguousarray(labels)
            return np.ascontiguousarray(arr.reshape(-1).astype(np.int64))
        if arr.ndim == 1 and self.built and self.output_shape == (1,):
            arr = arr.reshape(-1, 1)
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            bad = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
            raise ValueError(
                f"Sequential: y contains a non-finite value ({arr[bad]}) at index {bad}"
            )
        if self.built and tuple(arr.shape[1:]) != self.output_shape:
            raise ValueError(
                f"Sequential: targets of shape {arr.shape} do not match the model's output "
                f"shape {shape_str((None, *self.output_shape))}"
                + (" (integer labels need loss='sparse_categorical_crossentropy', or use "
                   "fastnn.utils.to_categorical)" if arr.ndim == 1 else "")
            )
        return _cast_checked(arr, self.dtype, "Sequential: y")

    def _device_targets(self, y_host: np.ndarray) -> Any:
        return self.backend.asarray(y_host)

    def _resolve_metrics(self, y_host: np.ndarray) -> None:
        sparse = y_host.dtype.kind in "iu" and self._targets_sparse()
        out_dim = self.output_shape[-1] if self.output_shape else 1
        self._metric_fns = []
        for spec in self._metric_specs:
            self._metric_fns.append(
                metrics_mod.resolve(spec, self.loss.name, out_dim, sparse)
            )
        self.metric_names = [name for name, _ in self._metric_fns]

    # -- training ---------------------------------------------------------------------------
    def fit(
        self,
        x: Any,
        y: Any,
        batch_size: int | None = 32,
        epochs: int = 1,
        verbose: int | str = 1,
        callbacks: Sequence[Callback] | None = None,
        validation_split: float = 0.0,
        validation_data: tuple[Any, Any] | None = None,
        shuffle: bool = True,
        initial_epoch: int = 0,
        seed: int | None = None,
        distributed: Any = None,
    ) -> History:
        """Train for ``epochs`` passes over (x, y) in minibatches; returns a History.

        Args:
            x: inputs, (N, ...) array-like.
            y: targets: (N, C) one-hot/values, or (N,) integer labels for sparse losses.
            batch_size: samples per step (None: 32; 1: online learning; N: full batch).
            epochs: index of the last epoch (Keras semantics with ``initial_epoch``).
            verbose: 0 silent, 1 progress bar, 2 one line per epoch.
            callbacks: Callback objects.
            validation_split: fraction of the last samples held out (before shuffling).
            validation_data: (x_val, y_val), evaluated after every epoch.
            shuffle: reshuffle the training samples every epoch.
            initial_epoch: epoch to start from (for resuming).
            seed: reseed the model's shuffling generator before training.
            distributed: True or a ``fastnn.distributed.DataParallel()`` to train on every
                MPI rank of ``mpiexec -n N`` (``batch_size`` is the global batch); None or
                False: this process alone. See ``docs/distributed.md``.

        Raises:
            RuntimeError: the model is not compiled.
            ValueError / TypeError: bad data, with the shapes or values at fault.
            DivergenceError: the loss became NaN/Inf; names epoch, batch and layer.
        """
        self._require_compiled("fit")
        batch_size = _check_batch_size(batch_size)
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise ValueError(f"Sequential.fit: epochs must be an integer >= 0. Received: "
                             f"epochs={epochs!r}")
        if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, (int, np.integer)) or (
            initial_epoch < 0
        ):
            raise ValueError("Sequential.fit: initial_epoch must be an integer >= 0. Received: "
                             f"initial_epoch={initial_epoch!r}")
        if not 0.0 <= float(validation_split) < 1.0:
            raise ValueError("Sequential.fit: validation_split must be in [0, 1). Received: "
                             f"validation_split={validation_split}")
        x_host = self._host_inputs(x, "fit")
        if not self.built:
            self.build(x_host.shape[1:])
        y_host = self._host_targets(y, x_host.shape[0])
        if validation_split and validation_data is None:
            n_val = int(math.floor(x_host.shape[0] * float(validation_split)))
            if n_val == 0 or n_val == x_host.shape[0]:
                raise ValueError(
                    f"Sequential.fit: validation_split={validation_split} leaves "
                    f"{x_host.shape[0] - n_val} training and {n_val} validation samples"
                )
            validation_data = (x_host[-n_val:], y_host[-n_val:])
            x_host, y_host = x_host[:-n_val], y_host[:-n_val]
        val = None
        if validation_data is not None:
            if len(validation_data) != 2:
                raise ValueError("Sequential.fit: validation_data must be a pair (x_val, y_val)")
            xv = self._host_inputs(validation_data[0], "fit(validation_data)")
            val = (xv, self._host_targets(validation_data[1], xv.shape[0]))
        self._resolve_metrics(y_host)
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        dist = self._distribution = resolve_distribution(distributed)
        dist.setup(self, n_samples=x_host.shape[0], batch_size=batch_size, epochs=epochs,
                   initial_epoch=initial_epoch, shuffle=shuffle)
        callbacks, verbose = dist.configure_callbacks(callbacks, verbose)

        history = History()
        cb = CallbackList(callbacks, model=self, history=history, verbose=verbose,
                          epochs=epochs, steps=math.ceil(x_host.shape[0] / batch_size))
        self.history = history
        self.stop_training = False
        self.diverged = None
        n = x_host.shape[0]
        self._set_training_mode(True)
        # Overflow is detected and reported by the divergence checks (DivergenceError naming
        # the layer), so NumPy's floating-point warnings are silenced while training.
        fp_guard = np.errstate(over="ignore", invalid="ignore", divide="ignore")
        fp_guard.__enter__()
        try:
            cb.on_train_begin()
            for epoch in range(initial_epoch, epochs):
                cb.on_epoch_begin(epoch)
                start = time.perf_counter()
                order = self.rng.permutation(n) if shuffle else np.arange(n)
                with self._step_threads():
                    totals = self._run_epoch(x_host, y_host, order, batch_size, epoch, cb)
                totals = dist.reduce_totals(totals)  # sums over every rank
                if self.diverged is not None:
                    break  # stopped by TerminateOnNaN: no epoch logs full of nan
                logs = {k: v / n for k, v in totals.items()}
                if val is not None:
                    self._set_training_mode(False)
                    val_logs = self._evaluate_host(val[0], val[1], batch_size)
                    self._set_training_mode(True)
                    logs.update({f"val_{k}": v for k, v in val_logs.items()})
                logs["time"] = time.perf_counter() - start
                self.epochs_completed = epoch + 1
                self._pending_epoch = (epoch, logs)
                cb.on_epoch_end(epoch, logs)
                self._pending_epoch = None
                if self.stop_training:
                    break
            cb.on_train_end()
        except BaseException as exc:
            dist.on_error(exc)  # distributed: aborts every rank rather than leave them waiting
            raise
        finally:
            fp_guard.__exit__(None, None, None)
            self._pending_epoch = None
            cb.close()  # progress bars left open by an exception
            self._set_training_mode(False)
            dist.teardown(self)
            self._distribution = NO_DISTRIBUTION
        return history

    def _set_training_mode(self, on: bool) -> None:
        for layer in self._all_layers():
            if on:
                layer.reuse_buffers = True
            else:
                layer.release_buffers()
        if self.layers:
            # The first layer's input gradient is never used while training.
            self.layers[0].need_input_grad = not on

    def _run_epoch(self, x_host, y_host, order, batch_size, epoch, cb) -> dict[str, float]:
        n = x_host.shape[0]
        be = self.backend
        loss_obj = self._active_loss()
        totals = {"loss": 0.0, **{name: 0.0 for name in self.metric_names}}
        xbuf = np.empty((min(batch_size, n), *x_host.shape[1:]), dtype=x_host.dtype)
        ybuf = np.empty((min(batch_size, n), *y_host.shape[1:]), dtype=y_host.dtype)
        for step, lo in enumerate(range(0, n, batch_size)):
            idx = self._distribution.shard_batch(order[lo:lo + batch_size])  # this rank's part
            m = idx.shape[0]
            if m == 0:  # distributed: no sample of a short last batch on this rank
                self._distribution.empty_step(self, epoch, step)
                continue
            # mode="clip" (the indices are valid): "raise" buffers ``out``, ~1.6x slower.
            xb_host = np.take(x_host, idx, axis=0, out=xbuf[:m], mode="clip")
            yb_host = np.take(y_host, idx, axis=0, out=ybuf[:m], mode="clip")
            cb.on_train_batch_begin(step)
            xb = be.asarray(xb_host)  # the one host-to-device transfer of this batch
            yb = be.asarray(yb_host)
            out = self._forward_for_loss(xb, True)
            loss = float(loss_obj.forward(out, yb))
            if self._regularization_present():
                loss += self._regularization_loss()
            loss = self._distribution.reduce_loss(loss)  # the global batch's loss
            if not math.isfinite(loss):
                if not self._handle_divergence(xb, epoch, step, loss, m, cb):
                    self._raise_divergence(xb, epoch, step, loss)
                break
            self._backward_and_update(loss_obj.backward(), m)
            self._last_step = (epoch, step)
            totals["loss"] += loss * m
            batch_logs = {"loss": loss, "size": m}
            for name, fn in self._metric_fns:
                value = float(fn(be.xp, out, yb).sum())
                totals[name] += value
                batch_logs[name] = value / m
            cb.on_train_batch_end(step, batch_logs)
            if self.stop_training:
                break
        # The epoch's last update may have blown up: stop now, not at the next fit.
        if self.diverged is None and not self._params_finite() and (
            not self._handle_divergence(None, epoch, step, None, 0, cb)
        ):
            self._raise_divergence(None, epoch, step, None)
        return totals

    def _regularization_present(self) -> bool:
        return any(layer.regularizers for layer in self._all_layers())

    def _step_threads(self) -> Any:
        """Context of the training steps on the numba backend: NumPy's BLAS runs one thread
        and the elementwise Numba kernels run single-threaded; the backend's own GEMM (which
        takes the large products) keeps every core.

        Why. A multi-threaded BLAS call among parallel Numba kernels leaves its idle workers
        spinning on the cores the next kernel needs, and each pool then waits on the other:
        measured here (2-core AMD EPYC, MLP 784-512-512-10 float32, SGD, batch 128) 6-7 k
        samples/s with BLAS's two threads, 65-89 k with one. And every parallel region ends
        in a join that waits for its slowest thread: with another busy process on the
        machine the elementwise kernels of a batch-1 step took 0.65-0.69 ms in parallel
        against 0.28-0.30 ms serially (0.25 against 0.31 ms on a quiet machine). The GEMMs
        are long enough for their joins not to dominate.
        """
        if self.backend.name != "numba":
            return contextlib.nullcontext()
        from fastnn.kernels.cpu.blas_threads import limit_blas_threads
        from fastnn.kernels.cpu.jit import serial_kernels

        stack = contextlib.ExitStack()
        stack.enter_context(limit_blas_threads(1))
        stack.enter_context(serial_kernels())
        return stack

    def _backward_and_update(self, dout: Any, rows: int) -> None:
        """Backward pass from the loss gradient ``dout`` of a batch of ``rows`` samples, then
        the optimizer step.

        Where nothing has to see the complete gradients before the update (no regularizer,
        no gradient clipping, no all-reduce), the batch is small enough
        (``backend.fused_step_max_rows``) and the optimizer has a fused op on this backend,
        the top-level Dense layers update their weights during the backward pass, in the
        pass that computes their gradients (:mod:`fastnn.optimizers.fused_step`), and the
        remaining parameters are updated after it. The gradients and the update are the same
        either way; at batch size 1 this saves a pass over every weight. (A backward pass that
        raises then leaves the step half applied: see :mod:`fastnn.optimizers.fused_step`.)
        """
        dense = self._fusable_dense(rows)
        step = self._begin_fused_step() if dense else None
        if step is None:
            self._backward_from_loss(dout)
            self._add_regularization_grads()
            self._distribution.reduce_gradients(self)  # distributed: global-batch gradients
            self._apply_gradients()
            return
        for layer in dense:
            layer.fused_step = step
        try:
            self._backward_from_loss(dout)
        finally:
            for layer in dense:
                layer.fused_step = None
        step.finish()

    def _fusable_dense(self, rows: int) -> list[Dense]:
        """The top-level trainable Dense layers whose updates a fused step would fuse at a
        batch of ``rows`` on this backend (wide enough for the fused op to pay)."""
        be = self.backend
        if rows > be.fused_step_max_rows:
            return []
        return [layer for layer in self.layers if isinstance(layer, Dense) and layer.trainable
                and layer.units >= be.fused_step_min_units]

    def _begin_fused_step(self) -> Any:
        """A FusedStep for this training step (whose batch :meth:`_fusable_dense` accepted),
        or None when the step must not be fused."""
        if (
            not self.fuse_updates
            or self._distribution is not NO_DISTRIBUTION
            or self._regularization_present()
        ):
            return None
        flat = self._flat_storage()
        if flat is None:
            return None
        return self.optimizer.begin_fused_step(flat.params, flat.grads, flat.layout)

    def _apply_gradients(self) -> None:
        """Let the optimizer apply the gradients, which must be complete (the one point
        between "gradients are final" and "parameters change", where distributed training
        all-reduces them first).

        Trainable parameters and gradients live in two flat buffers (:meth:`flat_gradients`),
        so the whole update is one fused optimizer call over one contiguous array.
        """
        flat = self._flat_storage()
        if flat is None:
            self.optimizer.update(self._param_list(), self._grad_list())
        else:
            self.optimizer.update_flat(flat.params, flat.grads, flat.layout)

    def flat_gradients(self) -> Any | None:
        """The 1-D buffer holding every trainable gradient, in :meth:`named_parameters`
        order (each ``layer.grads[key]`` is a view of it); None if the model is not built or
        its parameters cannot share one buffer (mixed dtypes, shared arrays).

        Reducing it in place (one all-reduce) updates every layer's gradient. Valid until
        the parameters are replaced (``cast``, a backend move, adding or freezing layers):
        call again after those.
        """
        flat = self._flat_storage()
        return None if flat is None else flat.grads

    def flat_parameters(self) -> Any | None:
        """The 1-D buffer holding every trainable parameter (see :meth:`flat_gradients`)."""
        flat = self._flat_storage()
        return None if flat is None else flat.params

    def _flat_storage(self) -> _FlatStorage | None:
        """The flat storage of the trainable parameters, (re)built when they changed."""
        if not self.built:
            return None
        entries = self._trainable_entries()
        flat = self._flat
        if flat is not None and flat.matches(entries):
            return flat
        self._flat = flat = _FlatStorage.build(self.backend.xp, entries)
        return flat

    def _trainable_entries(self) -> list[tuple[str, Layer, str]]:
        """(``"layer/param"``, layer, key) of every trainable parameter, in
        :meth:`named_parameters` order."""
        return [(f"{layer.name}/{key}", layer, key) for layer in self._all_layers()
                if layer.trainable for key in layer.params]

    def _param_list(self) -> dict[str, Any]:
        return {name: p for name, p, _ in self.named_parameters()}

    def _grad_list(self) -> dict[str, Any]:
        return {name: g for name, _, g in self.named_parameters()}

    def _params_finite(self) -> bool:
        # A sum is NaN or Inf when any term is, and needs no temporary (isfinite(p) would
        # allocate a parameter-sized mask every check). Finite values whose sum overflows
        # fall back to the exact, allocating test.
        xp = self.backend.xp
        for _, p, _ in self.named_parameters():
            if not math.isfinite(float(xp.sum(p))) and not bool(xp.isfinite(p).all()):
                return False
        return True

    def _handle_divergence(self, xb, epoch: int, step: int, loss: float | None, m: int,
                           cb) -> bool:
        """Let a callback such as TerminateOnNaN stop training; False if none handles it."""
        if not any(getattr(c, "handles_divergence", False) for c in cb.callbacks):
            return False
        self.diverged = self.divergence_message(xb, epoch, step, loss)
        self.stop_training = True
        nan = float("nan") if loss is None else loss
        cb.on_train_batch_end(step, {"loss": nan, "size": m, "divergence": self.diverged})
        return True

    def _raise_divergence(self, xb, epoch: int, step: int, loss: float | None) -> None:
        """Locate the first non-finite gradient, parameter or layer output and raise."""
        raise DivergenceError(self.divergence_message(xb, epoch, step, loss))

    def divergence_message(self, xb, epoch: int, step: int, loss: float | None) -> str:
        """Explain a non-finite loss at (epoch, step): which layer went non-finite first.

        ``loss`` None means the parameters were found non-finite after the step.

        Checks, in order: the parameters (a non-finite one was written by the previous
        optimizer step: the message names the layer whose gradient went non-finite first in
        that backward pass, or the update that overflowed), then re-runs the forward pass
        on batch ``xb`` and names the first layer whose output is non-finite.
        """
        xp = self.backend.xp
        head = f"training diverged at epoch {epoch + 1}, batch {step + 1}"
        head += ": parameters are non-finite after the step" if loss is None else (
            f": loss is {loss}")
        hint = "lower the learning rate, clip gradients or normalise the inputs"
        bad_params = [name for name, p, _ in self.named_parameters()
                      if not bool(xp.isfinite(p).all())]
        if bad_params:
            prev = self._last_step
            when = (f"the optimizer step of epoch {prev[0] + 1}, batch {prev[1] + 1}"
                    if prev is not None else "an earlier optimizer step")
            for layer in reversed(self._all_layers()):  # backward order: last layer first
                if not layer.trainable:
                    continue
                for key, g in layer.grads.items():
                    if not bool(xp.isfinite(g).all()):
                        return (f"{head}; the gradient of {layer.describe()} ({layer.name}) "
                                f"{key!r} became non-finite in the backward pass before "
                                f"{when}, which made parameter {layer.name}/{key} non-finite; "
                                f"{hint}")
            name = bad_params[0]
            grad = dict((n, g) for n, _, g in self.named_parameters())[name]
            gmax = float(xp.abs(grad).max()) if grad.size else 0.0
            lr = self.optimizer.current_learning_rate() if self.optimizer else float("nan")
            return (f"{head}; parameter {name!r} became non-finite in {when} although its "
                    f"gradient was finite (largest |gradient| {gmax:.3g}, learning rate "
                    f"{lr:.3g}): the update overflowed; {hint}")
        if xb is not None:
            h = xb
            for layer in self.layers:
                h = layer.forward(h, training=True)
                if not bool(xp.isfinite(h).all()):
                    big = max((float(xp.abs(p).max()) for p in layer.params.values()
                               if p.size), default=0.0)
                    extra = f" (largest |weight| {big:.3g})" if layer.params else ""
                    return (f"{head}; the output of {layer.describe()} ({layer.name}) became "
                            f"non-finite{extra}; {hint}")
            last = self.layers[-1]
            peak = float(xp.abs(h).max()) if h.size else 0.0
            return (f"{head}; every layer output is finite, but the loss "
                    f"({self.loss.describe()}) of the outputs of {last.describe()} "
                    f"({last.name}), up to {peak:.3g} in magnitude, overflowed; {hint}")
        return f"{head}; the loss ({self.loss.describe()}) is not finite; {hint}"

    # -- one training step ------------------------------------------------------------------
    def train_on_batch(self, x: Any, y: Any) -> float:
        """One training step on the batch (x, y), as one step of ``fit``; returns its loss.

        Forward, (fused) loss, backward and optimizer update (Keras's name). The layers'
        activation buffers are kept between calls, as between the steps of ``fit``, and
        reused only inside this call, so outputs of ``predict`` never alias them.

        Args:
            x: (B, ...) inputs.
            y: (B, C) targets, or (B,) integer labels for sparse losses.

        Raises:
            RuntimeError: the model is not compiled.
            DivergenceError: the loss is not finite (no update is applied).
        """
        self._require_compiled("train_on_batch")
        x_host = self._host_inputs(x, "train_on_batch")
        if not self.built:
            self.build(x_host.shape[1:])
        y_host = self._host_targets(y, x_host.shape[0])
        be = self.backend
        layers = self._all_layers()
        for layer in layers:
            layer.reuse_buffers = True
        first = self.layers[0]
        first.need_input_grad = False  # as in fit: the input gradient is never used
        try:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"), (
                self._step_threads()
            ):
                return self._train_step(be.asarray(x_host), be.asarray(y_host))
        finally:
            first.need_input_grad = True
            for layer in layers:
                layer.reuse_buffers = False  # buffers stay allocated for the next call

    def _train_step(self, xb: Any, yb: Any) -> float:
        """Forward, loss, backward and update on device batch (xb, yb); returns the loss."""
        loss_obj = self._active_loss()
        out = self._forward_for_loss(xb, True)
        loss = float(loss_obj.forward(out, yb))
        if self._regularization_present():
            loss += self._regularization_loss()
        if not math.isfinite(loss):
            raise DivergenceError(
                self.divergence_message(xb, self.epochs_completed, 0, loss)
            )
        self._backward_and_update(loss_obj.backward(), int(xb.shape[0]))
        return loss

    # -- evaluation / prediction --------------------------------------------------------
    def evaluate(
        self, x: Any, y: Any, batch_size: int | None = 32, verbose: int = 0,
        return_dict: bool = False,
    ) -> Any:
        """Loss and metrics on (x, y): a float, a list [loss, *metrics], or a dict."""
        self._require_compiled("evaluate")
        batch_size = _check_batch_size(batch_size)
        x_host = self._host_inputs(x, "evaluate")
        if not self.built:
            self.build(x_host.shape[1:])
        y_host = self._host_targets(y, x_host.shape[0])
        if not self._metric_fns and self._metric_specs:
            self._resolve_metrics(y_host)
        logs = self._evaluate_host(x_host, y_host, batch_size)
        if verbose:
            print(" - ".join(f"{k}: {v:.4f}" for k, v in logs.items()))
        if return_dict:
            return logs
        if not self.metric_names:
            return logs["loss"]
        return [logs["loss"], *[logs[name] for name in self.metric_names]]

    def _evaluate_host(self, x_host, y_host, batch_size) -> dict[str, float]:
        be = self.backend
        loss_obj = self._active_loss()
        n = x_host.shape[0]
        totals = {"loss": 0.0, **{name: 0.0 for name in self.metric_names}}
        for lo in range(0, n, batch_size):
            xb = be.asarray(x_host[lo:lo + batch_size])
            yb = be.asarray(y_host[lo:lo + batch_size])
            m = xb.shape[0]
            out = self._forward_for_loss(xb, False)
            totals["loss"] += float(loss_obj.forward(out, yb)) * m
            for name, fn in self._metric_fns:
                totals[name] += float(fn(be.xp, out, yb).sum())
        logs = {k: v / n for k, v in totals.items()}
        logs["loss"] += self._regularization_loss()
        return logs

    def predict(self, x: Any, batch_size: int | None = 32, verbose: int = 0) -> np.ndarray:
        """Model outputs for ``x`` as a NumPy array (probabilities for a softmax model)."""
        batch_size = _check_batch_size(batch_size)
        x_host = self._host_inputs(x, "predict")
        if not self.built:
            self.build(x_host.shape[1:])
        be = self.backend
        outs = []
        for lo in range(0, x_host.shape[0], batch_size):
            out = self.forward(be.asarray(x_host[lo:lo + batch_size]), training=False)
            outs.append(be.to_numpy(out))
        return np.concatenate(outs, axis=0)

    # -- saving ---------------------------------------------------------------------------
    def save(self, path: Any, include_optimizer: bool = True, format: str | None = None) -> None:
        """Save architecture, weights, optimizer and RNG states to ``.npz``/``.safetensors``.

        The write is atomic (temporary file, fsync, rename): an interrupted save leaves
        the previous file intact. Load with :func:`fastnn.load_model`.
        """
        from fastnn import io

        io.save_model(self, path, include_optimizer=include_optimizer, format=format)

    def save_weights(self, path: Any, format: str | None = None) -> None:
        """Save only the weights (and layer states such as BatchNorm statistics)."""
        from fastnn import io

        io.save_weights(self, path, format=format)

    def load_weights(self, path: Any) -> None:
        """Load weights saved by :meth:`save_weights` or :meth:`save` into this model.

        Every shape and dtype is checked first; the first mismatch is named in a ValueError.
        """
        from fastnn import io

        io.load_weights(self, path)

    # -- summary --------------------------------------------------------------------------
    def flops_per_sample(self) -> int | None:
        """Forward FLOPs for one sample (a multiply-add counts 2); None if a layer is unknown.

        A layer may define ``flops() -> int`` (per sample) to be counted exactly; Dense,
        convolution-like layers (with ``kernel_size`` and a ``W`` parameter) and
        parameter-free elementwise layers are estimated here.
        """
        self._require_built("flops_per_sample")
        counts = [layer_flops(layer) for layer in self.layers]
        return None if any(c is None for c in counts) else int(sum(counts))

    def activation_bytes_per_sample(self) -> int:
        """Bytes of layer outputs (kept for the backward pass) for one sample."""
        self._require_built("activation_bytes_per_sample")
        item = self.dtype.itemsize
        return int(sum(math.prod(layer.output_shape) * item for layer in self.layers))

    def _require_built(self, where: str) -> None:
        if not self.built:
            raise NotBuiltError(
                f"Sequential.{where}: the model is not built; call build(input_shape), give "
                "the first layer input_shape/input_dim, or fit/predict once"
            )

    def summary(self, print_fn=print, batch_sizes: Sequence[int] = (1, 32, 256)) -> str:
        """Print (and return) a table of layers, output shapes, parameters and FLOPs.

        Below the table: total parameters, forward FLOPs per sample (training costs about
        three times as much: forward + backward), and activation memory (layer outputs
        kept for the backward pass) for each of ``batch_sizes``.
        """
        rows = [("Layer (type)", "Output Shape", "Param #", "FLOPs/sample")]
        total = trainable = 0
        flops_total, flops_known = 0, True
        for layer in self.layers:
            shape = shape_str((None, *layer.output_shape)) if layer.built else "(unbuilt)"
            count = layer.count_params() if layer.built else 0
            flops = layer_flops(layer) if layer.built else None
            if flops is None:
                flops_known = False
            else:
                flops_total += flops
            total += count
            trainable += count if layer.trainable else 0
            rows.append((f"{layer.name} ({type(layer).__name__})", shape, f"{count:,}",
                         "?" if flops is None else _si(flops)))
        widths = [max(len(r[i]) for r in rows) + 2 for i in range(4)]
        rule = "=" * sum(widths)
        lines = [f'Model: "{self.name}" (backend: {self.backend.name}, dtype: {self.dtype.name})',
                 rule]
        for i, row in enumerate(rows):
            lines.append("".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
            lines.append(rule if i == 0 else "-" * sum(widths))
        lines[-1] = rule
        lines.append(f"Total params: {total:,} ({_bytes(total * self.dtype.itemsize)})")
        lines.append(f"Trainable params: {trainable:,}")
        lines.append(f"Non-trainable params: {total - trainable:,}")
        if self.built:
            more = "" if flops_known else " (+ layers marked ?)"
            lines.append(f"FLOPs per sample: {_si(flops_total)} forward{more}, "
                         f"about {_si(3 * flops_total)} per training step")
            per = self.activation_bytes_per_sample()
            sizes = ", ".join(f"batch {b}: {_bytes(per * b)}" for b in batch_sizes)
            lines.append(f"Activation memory: {_bytes(per)} per sample; {sizes}")
        text = "\n".join(lines)
        if print_fn is not None:
            print_fn(text)
        return text


class _FlatStorage:
    """Every trainable parameter (and its gradient) as a view of one flat buffer.

    Building it copies the current values in and rebinds ``layer.params[key]`` and
    ``layer.grads[key]`` to C-contiguous views (so the layers, saving and loading keep working
    on per-parameter arrays), after which one optimizer call updates every parameter. A layer
    attribute holding the same array object (``self.w = self.add_param(...)``) is rebound too;
    arrays kept anywhere else (lists, other objects) are not.

    Attributes:
        params: (P,) all trainable parameters.
        grads: (P,) their gradients.
        layout: (``"layer/param"``, parameter view, gradient view) in buffer order.
    """

    def __init__(self, params: Any, grads: Any, layout: list[tuple[str, Any, Any]]) -> None:
        self.params = params
        self.grads = grads
        self.layout = layout

    def __deepcopy__(self, memo: dict) -> None:
        # copy.deepcopy of a model copies every view into an array of its own, so copied
        # buffers would no longer hold the copied layers' parameters: the copy builds its own.
        return None

    def matches(self, entries: list[tuple[str, Layer, str]]) -> bool:
        """Whether ``entries`` are still exactly the parameters stored here."""
        if len(entries) != len(self.layout):
            return False
        for (name, layer, key), (flat_name, p, g) in zip(entries, self.layout, strict=True):
            if name != flat_name or layer.params[key] is not p or layer.grads[key] is not g:
                return False
        return True

    @classmethod
    def build(cls, xp: Any, entries: list[tuple[str, Layer, str]]) -> _FlatStorage | None:
        """Move the parameters of ``entries`` into flat buffers; None when they cannot
        share one (no parameters, mixed dtypes, or one array used by two entries)."""
        if not entries:
            return None
        arrays = [(layer.params[key], layer.grads[key]) for _, layer, key in entries]
        dtype = arrays[0][0].dtype
        seen: set[int] = set()
        for p, g in arrays:
            if p.dtype != dtype or g.dtype != dtype or p.shape != g.shape or (
                id(p) in seen or id(g) in seen
            ):
                return None
            seen.update((id(p), id(g)))
        total = sum(int(p.size) for p, _ in arrays)
        flat_p = xp.empty(total, dtype=dtype)
        flat_g = xp.empty(total, dtype=dtype)
        layout = []
        offset = 0
        for (name, layer, key), (p, g) in zip(entries, arrays, strict=True):
            size = int(p.size)
            pv = flat_p[offset:offset + size].reshape(p.shape)
            gv = flat_g[offset:offset + size].reshape(p.shape)
            pv[...] = p
            gv[...] = g
            layer.params[key] = pv
            layer.grads[key] = gv
            _rebind_attributes(layer, {id(p): (p, pv), id(g): (g, gv)})
            layout.append((name, pv, gv))
            offset += size
        return cls(flat_p, flat_g, layout)


def _rebind_attributes(layer: Layer, moved: dict[int, tuple[Any, Any]]) -> None:
    """Point attributes of ``layer`` that hold a moved array (``self.w = self.add_param(...)``
    in a custom layer) at its new view, so that the layer keeps using its trained parameter."""
    for attr, value in list(vars(layer).items()):
        old_new = moved.get(id(value))
        if old_new is not None and old_new[0] is value:
            setattr(layer, attr, old_new[1])


#: FLOPs per output element of parameter-free layers, by activation name (others: 1).
_ELEMENTWISE_FLOPS = {"softmax": 5, "log_softmax": 5, "sigmoid": 4, "tanh": 4, "gelu": 8,
                      "silu": 5, "swish": 5, "mish": 8, "elu": 3, "selu": 4, "softplus": 4}


#: Parameter-free layers that only reshape (no arithmetic).
_VIEW_LAYERS = ("Flatten", "Reshape", "Input")


def layer_flops(layer: Layer) -> int | None:
    """Forward FLOPs per sample of a built layer (multiply-add = 2), or None if unknown."""
    custom = getattr(layer, "flops", None)
    if callable(custom):
        return int(custom())
    out = layer.output_shape
    if out is None:
        return None
    elements = math.prod(out)
    if isinstance(layer, Dense):
        d_in = layer.input_shape[-1]
        positions = math.prod(out[:-1])
        act = 0 if layer.activation == "linear" else elements * _ELEMENTWISE_FLOPS.get(
            layer.activation, 1)
        return 2 * d_in * layer.units * positions + (elements if layer.use_bias else 0) + act
    if "W" in layer.params and hasattr(layer, "kernel_size") and len(out) >= 2:
        # Convolution-like, channels first: every weight is used once per output position.
        weights = int(layer.params["W"].size)
        positions = math.prod(out[1:])
        act = getattr(layer, "activation", None)
        act_flops = 0 if act in (None, "linear") or not isinstance(act, str) else (
            elements * _ELEMENTWISE_FLOPS.get(act, 1))
        return 2 * weights * positions + (elements if "b" in layer.params else 0) + act_flops
    if not layer.params:
        if type(layer).__name__ in _VIEW_LAYERS:
            return 0
        if isinstance(layer, Activation):
            return elements * _ELEMENTWISE_FLOPS.get(layer.activation, 1)
        pool = getattr(layer, "pool_size", None)
        if pool is not None:  # one comparison or addition per window element
            return elements * math.prod(pool if isinstance(pool, (tuple, list)) else (pool,))
        return elements
    return None


def _si(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)}"


def _bytes(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"


def _nested_layers(layer: Layer) -> list[Layer]:
    """Every sublayer of ``layer``, depth first (not ``layer`` itself)."""
    out = []
    for sub in layer.sublayers():
        out.append(sub)
        out.extend(_nested_layers(sub))
    return out


def _layer_arrays(layer: Layer) -> list[Any]:
    arrays = list(layer.params.values())
    for sub in layer.sublayers():
        arrays.extend(_layer_arrays(sub))
    return arrays


def _cast_checked(arr: np.ndarray, dtype: np.dtype, what: str) -> np.ndarray:
    """``arr`` as a C-contiguous array of ``dtype``; ValueError if a value overflows it."""
    if arr.dtype.kind == "f" and arr.size and arr.dtype.itemsize > dtype.itemsize:
        limit = float(np.finfo(dtype).max)
        peak = float(np.abs(arr).max())
        if peak > limit:
            raise ValueError(
                f"{what} has values up to {peak:.3g}, beyond the {dtype.name} range "
                f"(±{limit:.3g}) of the model"
            )
    return np.ascontiguousarray(arr, dtype=dtype)


def _check_batch_size(batch_size: int | None) -> int:
    if batch_size is None:
        return 32
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or (
        batch_size < 1
    ):
        raise ValueError(
            f"batch_size must be a positive integer. Received: batch_size={batch_size!r}"
        )
    return int(batch_size)
