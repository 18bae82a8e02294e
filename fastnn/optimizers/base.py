"""The Optimizer base class: in-place updates of parameter dicts, state keyed like them.

Gradient clipping (Keras's ``clipnorm``, ``clipvalue`` and ``global_clipnorm``) happens here,
before the update rule of the subclass and before its ``weight_decay`` is added (the order of
``torch.nn.utils.clip_grad_norm_`` followed by ``optimizer.step()``). The caller's gradient
arrays are never written: a clipped gradient is written into one scratch buffer owned by the
optimizer (allocated once, as large as the largest parameter, and reused), from which the
update reads.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from fastnn.backends import Backend, get_backend
from fastnn.optimizers.fused_step import FusedStep

ParamSet = Mapping[str, Any] | Sequence[Any]
LearningRate = float | Callable[[int], float]


def _items(params: ParamSet, what: str) -> list[tuple[Any, Any]]:
    if isinstance(params, Mapping):
        return list(params.items())
    if isinstance(params, (list, tuple)):
        return list(enumerate(params))
    raise TypeError(f"{what} must be a dict or a list of arrays, received {type(params).__name__}")


def _check_clip(owner: str, label: str, value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    if not value > 0.0 or math.isnan(value):
        raise ValueError(f"{owner}: {label} must be a number > 0 or None. Received: "
                         f"{label}={value}")
    return value


class Optimizer:
    """Base of every optimizer.

    ``update(params, grads)`` (the book's name; ``step`` is an alias) applies one step to
    every parameter in place. ``params`` and ``grads`` are dicts with the same keys (or
    lists of the same length); per-parameter state (``slots``) is keyed the same way and
    created on first use. Parameters are never rebound, so layers keep their arrays.

    Gradient clipping, as in Keras (the caller's gradients are never modified):

    - ``clipnorm``: each gradient ``g`` becomes ``g * clipnorm / max(||g||, clipnorm)``;
    - ``global_clipnorm``: every gradient is scaled by ``clipnorm / max(N, clipnorm)`` where
      ``N`` is the L2 norm of all gradients together (``clip_by_global_norm``); PyTorch's
      ``clip_grad_norm_`` divides by ``N + 1e-6`` instead of ``N``;
    - ``clipvalue``: each element is clipped to ``[-clipvalue, clipvalue]``.

    ``clipnorm`` and ``global_clipnorm`` exclude each other (Keras raises too). Keras ignores
    ``clipvalue`` when a norm clip is set; fastnn applies both, the norm scaling first. A
    non-finite norm gives NaN gradients, so divergence shows instead of being hidden.

    Args:
        learning_rate: a float, or a callable ``schedule(step) -> float`` (``step`` counts
            from 0) such as the schedules in :mod:`fastnn.schedules`. Settable at any time
            (``opt.learning_rate = 1e-4``), e.g. by a ReduceLROnPlateau callback.
        weight_decay: L2 penalty coefficient added to the gradient (``torch.optim`` style;
            AdamW uses it as decoupled decay).
        backend: backend of the parameters (default: the current backend; a model sets it).
        clipnorm: clip each gradient to this L2 norm (None: off).
        clipvalue: clip each gradient element to ``[-clipvalue, clipvalue]`` (None: off).
        global_clipnorm: clip all gradients together to this global L2 norm (None: off).
    """

    #: Backend ops the update rule calls; their scratch buffers are allocated only when one
    #: of them is served by the reference version (fused kernels need none).
    ops: tuple[str, ...] = ()

    #: Whether the update rule is elementwise (so one call over a flat buffer of all
    #: parameters equals one call per parameter): :meth:`update_flat` relies on it.
    elementwise: bool = True

    #: The backend op that fuses a Dense layer's weight gradient with this rule's update of
    #: the weight (None: the rule has none; see :meth:`begin_fused_step`).
    fused_linear_op: str | None = None

    def __init__(
        self,
        learning_rate: LearningRate = 0.01,
        weight_decay: float = 0.0,
        backend: str | Backend | None = None,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
        global_clipnorm: float | None = None,
    ) -> None:
        name = type(self).__name__
        if not weight_decay >= 0:
            raise ValueError(
                f"{name}: weight_decay must be >= 0. Received: weight_decay={weight_decay}"
            )
        self.learning_rate = learning_rate
        self.weight_decay = float(weight_decay)
        self.clipnorm = _check_clip(name, "clipnorm", clipnorm)
        self.clipvalue = _check_clip(name, "clipvalue", clipvalue)
        self.global_clipnorm = _check_clip(name, "global_clipnorm", global_clipnorm)
        if self.clipnorm is not None and self.global_clipnorm is not None:
            raise ValueError(
                f"{name}: only one of clipnorm and global_clipnorm can be set. Received: "
                f"clipnorm={clipnorm}, global_clipnorm={global_clipnorm}"
            )
        self.backend: Backend = get_backend(backend)
        self.iterations = 0
        self.slots: dict[Any, dict[str, Any]] = {}
        self._scratch: list[Any] = []  # flat buffers, each as large as the largest parameter
        self._clip_buffer = None  # flat buffer for a clipped gradient
        # (flat parameter, flat state buffers by slot name, per-key views) of update_flat.
        self._flat_state: tuple[Any, dict[str, Any], list[dict[str, Any]]] | None = None

    # -- learning rate ----------------------------------------------------------------
    @property
    def learning_rate(self) -> LearningRate:
        """The learning rate: a float or a schedule ``f(step) -> float``; settable."""
        return self._learning_rate

    @learning_rate.setter
    def learning_rate(self, value: LearningRate) -> None:
        if not callable(value):
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise TypeError(
                    f"{type(self).__name__}: learning_rate must be a number or a schedule "
                    f"callable(step) -> float. Received: learning_rate={value!r}"
                ) from None
            if not np.isfinite(value) or value < 0:
                raise ValueError(
                    f"{type(self).__name__}: learning_rate must be a finite number >= 0. "
                    f"Received: learning_rate={value}"
                )
        self._learning_rate = value

    def current_learning_rate(self) -> float:
        """The learning rate the next step uses."""
        lr = self._learning_rate
        return float(lr(self.iterations)) if callable(lr) else float(lr)

    # -- public API -------------------------------------------------------------------
    def update(self, params: ParamSet, grads: ParamSet) -> None:
        """Apply one optimisation step to every parameter in place."""
        name = type(self).__name__
        p_items = _items(params, f"{name}.update: params")
        g_items = _items(grads, f"{name}.update: grads")
        if [k for k, _ in p_items] != [k for k, _ in g_items]:
            raise ValueError(
                f"{name}.update: params and grads must have the same keys, "
                f"received {[k for k, _ in p_items]} and {[k for k, _ in g_items]}"
            )
        for (key, p), (_, g) in zip(p_items, g_items, strict=True):
            if p.shape != g.shape:
                raise ValueError(
                    f"{name}.update: gradient {key!r} has shape {g.shape}, "
                    f"parameter has {p.shape}"
                )
        global_scale = self._global_clip_scale([g for _, g in g_items])
        lr = self.current_learning_rate()
        self.iterations += 1
        needs_scratch = self._uses_reference_ops()
        for (key, p), (_, g) in zip(p_items, g_items, strict=True):
            slots = self.slots.get(key)
            if slots is None:
                slots = self.slots[key] = self.create_slots(p)
            g = self._clipped(g, global_scale)
            tmp = self.scratch(p, 0) if needs_scratch else None
            self.update_one(p, g, slots, lr, tmp)

    step = update

    def update_flat(
        self, flat_param: Any, flat_grad: Any, layout: Sequence[tuple[Any, Any, Any]]
    ) -> None:
        """One step on parameters stored as views of one flat buffer: one fused kernel call.

        ``flat_param`` and ``flat_grad`` are 1-D arrays; ``layout`` lists ``(key, param,
        grad)`` where ``param`` and ``grad`` are C-contiguous views of consecutive regions of
        them, in order, covering them exactly (as built by ``Sequential``). The state of every
        key becomes views of flat state buffers as well (state restored from a file or from
        per-parameter updates is copied in first), so ``slots`` stays keyed like the
        parameters. The result equals :meth:`update` on the same dicts, element for element:
        every update rule here is elementwise. Falls back to :meth:`update` when the rule is
        not (:attr:`elementwise` False) or ``clipnorm`` (a norm per parameter) is set.
        """
        if not self.elementwise or self.clipnorm is not None:
            self.update({k: p for k, p, _ in layout}, {k: g for k, _, g in layout})
            return
        slots = self._flat_slots_for(flat_param, layout)
        # The norm is summed per parameter, in order, exactly as update() sums it.
        global_scale = self._global_clip_scale([g for _, _, g in layout])
        lr = self.current_learning_rate()
        self.iterations += 1
        grad = self._clipped(flat_grad, global_scale)
        tmp = self.scratch(flat_param, 0) if self._uses_reference_ops() else None
        self.update_one(flat_param, grad, slots, lr, tmp)

    def begin_fused_step(
        self, flat_param: Any, flat_grad: Any, layout: Sequence[tuple[Any, Any, Any]]
    ) -> FusedStep | None:
        """Start a step whose updates layers apply during the backward pass (see
        :mod:`fastnn.optimizers.fused_step`), or None where this optimizer has no fused op on
        its backend, clips gradients (clipping needs every gradient first), or is a subclass
        whose update rule (``update_one``) is not the one the fused op implements.

        Takes the arguments of :meth:`update_flat` (the gradients are written during the
        backward pass) and, like it, advances the step counter; the caller must then run the
        backward pass and :meth:`FusedStep.finish`.
        """
        op = self.fused_linear_op
        if (
            op is None
            or not _same_definer(type(self), "update_one", "fused_linear_backward")
            or not self.elementwise
            or self.clipnorm is not None
            or self.clipvalue is not None
            or self.global_clipnorm is not None
            or self.backend.op_sources.get(op, "reference") == "reference"
        ):
            return None
        buffers = self._flat_slots_for(flat_param, layout)
        lr = self.current_learning_rate()
        self.iterations += 1
        return FusedStep(self, lr, layout, (flat_param, flat_grad, buffers))

    def fused_linear_backward(self, dz: Any, x: Any, W: Any, dW: Any, dx: Any, need_dx: bool,
                              slots: dict[str, Any], lr: float) -> Any:
        """A Dense layer's weight backward fused with this rule's update of ``W`` (the op
        :attr:`fused_linear_op`); subclasses that name one implement it."""
        raise NotImplementedError  # pragma: no cover

    def _flat_slots_for(self, flat_param: Any, layout: Sequence[tuple[Any, Any, Any]]) -> dict:
        """Flat state buffers for ``flat_param``, with ``slots[key]`` their views (kept when
        they already are, else rebuilt and filled from the existing per-key state)."""
        flat = self._flat_state
        if flat is not None and flat[0] is flat_param and all(
            self.slots.get(key) is views for (key, _, _), views in zip(layout, flat[2],
                                                                          strict=True)
        ):
            return flat[1]
        buffers = self.create_slots(flat_param)
        per_key = []
        offset = 0
        for key, param, _ in layout:
            size = int(param.size)
            views = {name: buf[offset:offset + size].reshape(param.shape)
                     for name, buf in buffers.items()}
            for name, old in (self.slots.get(key) or {}).items():
                if name in views and old.shape == param.shape:
                    views[name][...] = old
            self.slots[key] = views
            per_key.append(views)
            offset += size
        self._flat_state = (flat_param, buffers, per_key)
        return buffers

    def get_config(self) -> dict:
        """Hyper-parameters, for saving (the keyword arguments of the constructor)."""
        lr = self._learning_rate
        return {
            "learning_rate": lr if not callable(lr) else getattr(lr, "get_config", lambda: None)(),
            "weight_decay": self.weight_decay,
            "clipnorm": self.clipnorm,
            "clipvalue": self.clipvalue,
            "global_clipnorm": self.global_clipnorm,
        }

    def describe(self) -> str:
        """Short text for messages."""
        return f"{type(self).__name__}(learning_rate={self._learning_rate})"

    def __repr__(self) -> str:
        return f"<{self.describe()}>"

    # -- subclass hooks -----------------------------------------------------------------
    def create_slots(self, param: Any) -> dict[str, Any]:
        """Per-parameter state arrays, zero-initialised (none by default)."""
        return {}

    def update_one(self, param: Any, grad: Any, slots: dict[str, Any], lr: float, tmp: Any):
        """Update one parameter in place; ``tmp`` is scratch shaped like it (None when the
        backend's fused kernels serve every op in :attr:`ops`)."""
        raise NotImplementedError  # pragma: no cover

    # -- helpers ----------------------------------------------------------------------
    def zeros_like(self, param: Any) -> Any:
        """A zero array shaped like ``param`` on the optimizer's backend."""
        return self.backend.xp.zeros_like(param)

    def scratch(self, param: Any, index: int = 0) -> Any:
        """Scratch buffer ``index`` shaped like ``param``: a view of a flat buffer allocated
        once (as large as the largest parameter seen) and reused by every step."""
        while len(self._scratch) <= index:
            self._scratch.append(None)
        buf = self._scratch[index]
        buf = self._scratch[index] = self._fit(buf, param)
        return buf[: param.size].reshape(param.shape)

    def needs_scratch(self) -> bool:
        """Whether the update ops need scratch buffers on this backend."""
        return self._uses_reference_ops()

    def _fit(self, buf: Any, like: Any) -> Any:
        size = int(like.size)
        if buf is None or buf.size < size or buf.dtype != like.dtype:
            buf = self.backend.xp.empty(max(size, 1), dtype=like.dtype)
        return buf

    def _uses_reference_ops(self) -> bool:
        sources = self.backend.op_sources
        return not self.ops or any(sources.get(op, "reference") == "reference" for op in self.ops)

    # -- clipping ---------------------------------------------------------------------
    def _global_clip_scale(self, grads: list[Any]) -> float | None:
        """The factor every gradient is scaled by under ``global_clipnorm`` (None: off)."""
        if self.global_clipnorm is None:
            return None
        total = 0.0
        for g in grads:
            total += self.backend.sum_of_squares(g)
        return self._norm_scale(math.sqrt(total), self.global_clipnorm)

    @staticmethod
    def _norm_scale(norm: float, clip: float) -> float:
        if not math.isfinite(norm):
            return math.nan
        return clip / max(norm, clip)

    def _clipped(self, grad: Any, global_scale: float | None) -> Any:
        """``grad`` itself, or its clipped copy in the optimizer's clip buffer."""
        scale = 1.0
        if global_scale is not None:
            scale = global_scale
        elif self.clipnorm is not None:
            norm = math.sqrt(self.backend.sum_of_squares(grad))
            scale = self._norm_scale(norm, self.clipnorm)
        if scale == 1.0 and self.clipvalue is None:
            return grad
        self._clip_buffer = self._fit(self._clip_buffer, grad)
        out = self._clip_buffer[: grad.size].reshape(grad.shape)
        self.backend.clip_gradient(grad, out, scale=scale, clip_value=self.clipvalue)
        return out


def _same_definer(cls: type, *names: str) -> bool:
    """Whether one class of ``cls``'s MRO defines every attribute of ``names`` (a subclass
    overriding only one of them breaks the pairing)."""
    owners = {next((c for c in cls.__mro__ if name in c.__dict__), None) for name in names}
    return len(owners) == 1 and None not in owners


def check_fraction(owner: str, label: str, value: float, closed_top: bool = False) -> float:
    """``value`` as a float in [0, 1) (or [0, 1] when ``closed_top``); ValueError naming
    the optimizer and the argument otherwise."""
    value = float(value)
    ok = 0.0 <= value <= 1.0 if closed_top else 0.0 <= value < 1.0
    if not ok:
        interval = "[0, 1]" if closed_top else "[0, 1)"
        raise ValueError(f"{owner}: {label} must be in {interval}. Received: {label}={value}")
    return value


def check_nonnegative(owner: str, label: str, value: float) -> float:
    """``value`` as a float >= 0; ValueError naming the optimizer and argument otherwise."""
    value = float(value)
    if not value >= 0.0:
        raise ValueError(f"{owner}: {label} must be >= 0. Received: {label}={value}")
    return value
