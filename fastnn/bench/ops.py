"""The ``ops`` suite: one case per hot op and size, every backend and PyTorch side by side.

Cases (float32 by default; ``rows`` is the batch dimension N):

- ``dense fwd+bwd 784->512``: a ``Dense(512)`` layer forward and backward (dW, db, dx), as
  in training (buffers reused), GFLOP/s of its three matrix products;
- ``relu`` / ``sigmoid fwd+bwd xD``: the activation ops on (N, 512);
- ``softmax x1000``: row softmax of (N, 1000);
- ``softmax-CE fwd+bwd xC``: the fused sparse softmax-cross-entropy (loss and dL/dlogits)
  at C = 50000 (N = 256) and C = 10 (N = 1024);
- ``OPT update``: one step of every optimizer on one float32 tensor of ``params`` elements
  (10 M by default), through the Optimizer object a model uses; throughput is the minimum
  memory traffic (parameter, gradient and state read, parameter and state written).

PyTorch runs the same shapes, data, initial weights and hyper-parameters: eager ops with
autograd for the layer cases, ``torch.optim`` single-tensor defaults and ``fused=True``
variants (where torch has them) for the optimizers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fastnn.bench import peers
from fastnn.bench.case import Case, Contender, Work
from fastnn.bench.peers import FUSED_SUFFIX, torch_devices, torch_sync

SEED = 0
DENSE_IN, DENSE_OUT = 784, 512
ACT_WIDTH = 512
SOFTMAX_WIDTH = 1000
DEFAULT_DENSE_ROWS = (128, 1024)
DEFAULT_ACT_ROWS = (1024,)
DEFAULT_SOFTMAX_ROWS = (1024,)
#: (classes, default rows) of the softmax-cross-entropy cases (issue 7's two shapes).
SOFTMAX_CE_SHAPES = ((50000, 256), (10, 1024))
DEFAULT_PARAMS = (10_000_000,)
ACTIVATIONS = ("relu", "sigmoid")


@dataclass(frozen=True)
class OptimizerSpec:
    """One optimizer with matching fastnn and torch hyper-parameters.

    ``streams`` counts parameter-sized arrays read or written per step (traffic).
    """

    name: str
    fastnn_class: str
    fastnn_kwargs: dict[str, Any]
    torch_class: str
    torch_kwargs: dict[str, Any]
    streams: int
    torch_fused: bool = False
    notes: str = field(default="")


#: Hyper-parameters chosen so that both libraries apply the same update rule.
OPTIMIZERS: tuple[OptimizerSpec, ...] = (
    OptimizerSpec("sgd", "SGD", {"learning_rate": 0.01}, "SGD", {"lr": 0.01}, 3, True),
    OptimizerSpec("sgd-momentum", "SGD", {"learning_rate": 0.01, "momentum": 0.9},
                  "SGD", {"lr": 0.01, "momentum": 0.9}, 5, True),
    OptimizerSpec("adam", "Adam", {"learning_rate": 1e-3, "epsilon": 1e-8},
                  "Adam", {"lr": 1e-3, "eps": 1e-8}, 7, True),
    OptimizerSpec("adamw", "AdamW", {"learning_rate": 1e-3, "weight_decay": 0.01,
                                     "epsilon": 1e-8},
                  "AdamW", {"lr": 1e-3, "weight_decay": 0.01, "eps": 1e-8}, 7, True),
    OptimizerSpec("rmsprop", "RMSprop", {"learning_rate": 1e-3, "rho": 0.99, "epsilon": 1e-8},
                  "RMSprop", {"lr": 1e-3, "alpha": 0.99, "eps": 1e-8}, 5),
    OptimizerSpec("adagrad", "Adagrad", {"learning_rate": 0.01,
                                         "initial_accumulator_value": 0.0, "epsilon": 1e-10},
                  "Adagrad", {"lr": 0.01, "initial_accumulator_value": 0.0, "eps": 1e-10},
                  5, True),
    OptimizerSpec("adadelta", "Adadelta", {"learning_rate": 1.0, "rho": 0.9, "epsilon": 1e-6},
                  "Adadelta", {"lr": 1.0, "rho": 0.9, "eps": 1e-6}, 7),
    OptimizerSpec("adamax", "Adamax", {"learning_rate": 2e-3, "epsilon": 1e-8},
                  "Adamax", {"lr": 2e-3, "eps": 1e-8}, 7),
    OptimizerSpec("nadam", "Nadam", {"learning_rate": 2e-3, "epsilon": 1e-8,
                                     "momentum_decay": 4e-3},
                  "NAdam", {"lr": 2e-3, "eps": 1e-8, "momentum_decay": 4e-3}, 7),
)


def _rng() -> np.random.Generator:
    return np.random.default_rng(SEED)


def _fastnn_contender(name: str, fn: Callable[[], Any], be: Any, **info: Any) -> Contender:
    return Contender(name=name, fn=fn, sync=be.synchronize, threads=be.num_threads(),
                     device=be.device, info=info)


def _torch_contender(name: str, fn: Callable[[], Any], torch: Any, device: str,
                     **info: Any) -> Contender:
    threads = int(torch.get_num_threads()) if device == "cpu" else 0
    return Contender(name=name, fn=fn, sync=torch_sync(torch, device), threads=threads,
                     device=f"{device} (torch {torch.__version__})", info=info)


def _add_torch(case: Case, compare: list[str], make: Callable[[Any, str], Callable[[], Any]],
               fused: Callable[[Any, str], Callable[[], Any]] | None = None) -> None:
    """Add a torch contender per device (and a fused variant) to ``case``."""
    if "torch" not in compare:
        return
    torch, reason = peers.import_torch()
    if torch is None:
        case.unavailable["torch-cpu"] = reason
        return
    for label, device in torch_devices(torch):
        case.factories[label] = _torch_factory(torch, device, label, make)
        if fused is not None:
            flabel = label + FUSED_SUFFIX
            case.factories[flabel] = _torch_factory(torch, device, flabel, fused)


def _torch_factory(torch: Any, device: str, label: str,
                   make: Callable[[Any, str], Callable[[], Any]]) -> Callable[[], Contender]:
    def build() -> Contender:
        return _torch_contender(label, make(torch, device), torch, device)

    return build


# -- dense ------------------------------------------------------------------------------------
def dense_case(rows: int, backends: list[str], compare: list[str], dtype: str) -> Case:
    """Dense(784 -> 512) forward + backward on (rows, 784)."""
    from fastnn import Dense
    from fastnn.backends import get_backend

    rng = _rng()
    x = rng.standard_normal((rows, DENSE_IN)).astype(dtype)
    dy = rng.standard_normal((rows, DENSE_OUT)).astype(dtype)
    limit = np.sqrt(6.0 / (DENSE_IN + DENSE_OUT))
    W = rng.uniform(-limit, limit, (DENSE_IN, DENSE_OUT)).astype(dtype)
    b = np.zeros(DENSE_OUT, dtype=dtype)
    flops = 3 * 2.0 * rows * DENSE_IN * DENSE_OUT
    case = Case("ops", f"dense fwd+bwd {DENSE_IN}->{DENSE_OUT} {dtype}", rows,
                Work(flops, "flops"),
                info={"dtype": dtype, "x": [rows, DENSE_IN], "W": [DENSE_IN, DENSE_OUT]})

    def fastnn_factory(name: str) -> Callable[[], Contender]:
        def build() -> Contender:
            be = get_backend(name)
            layer = Dense(DENSE_OUT, backend=be, dtype=dtype)
            layer.build((DENSE_IN,))
            layer.reuse_buffers = True  # as inside Sequential.fit
            layer.params["W"][...] = be.asarray(W)
            layer.params["b"][...] = be.asarray(b)
            xd, dyd = be.asarray(x), be.asarray(dy)

            def step() -> None:
                layer.forward(xd, training=True)
                layer.backward(dyd)

            return _fastnn_contender(name, step, be)

        return build

    for name in backends:
        case.factories[name] = fastnn_factory(name)

    def torch_make(torch: Any, device: str) -> Callable[[], Any]:
        lin = torch.nn.Linear(DENSE_IN, DENSE_OUT).to(device)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(W.T)))
            lin.bias.copy_(torch.from_numpy(b))
        xt = torch.from_numpy(x).to(device).requires_grad_(True)
        dyt = torch.from_numpy(dy).to(device)

        def step() -> None:
            xt.grad = None
            lin.zero_grad(set_to_none=True)
            lin(xt).backward(dyt)

        return step

    _add_torch(case, compare, torch_make)
    return case


# -- activations ------------------------------------------------------------------------------
def activation_case(act: str, rows: int, backends: list[str], compare: list[str],
                    dtype: str) -> Case:
    """Activation ``act`` forward + backward on (rows, 512)."""
    from fastnn.backends import get_backend

    rng = _rng()
    x = rng.standard_normal((rows, ACT_WIDTH)).astype(dtype)
    dy = rng.standard_normal((rows, ACT_WIDTH)).astype(dtype)
    item = np.dtype(dtype).itemsize
    case = Case("ops", f"{act} fwd+bwd x{ACT_WIDTH} {dtype}", rows,
                Work(5.0 * rows * ACT_WIDTH * item, "bytes"),
                info={"dtype": dtype, "x": [rows, ACT_WIDTH], "activation": act})

    def fastnn_factory(name: str) -> Callable[[], Contender]:
        def build() -> Contender:
            be = get_backend(name)
            xd, dyd = be.asarray(x), be.asarray(dy)
            y = be.xp.empty_like(xd)
            dx = be.xp.empty_like(xd)

            def step() -> None:
                be.activation_forward(act, xd, out=y)
                be.activation_backward(act, dyd, xd, y, out=dx)

            return _fastnn_contender(name, step, be)

        return build

    for name in backends:
        case.factories[name] = fastnn_factory(name)

    def torch_make(torch: Any, device: str) -> Callable[[], Any]:
        fn = getattr(torch, act)
        xt = torch.from_numpy(x).to(device).requires_grad_(True)
        dyt = torch.from_numpy(dy).to(device)

        def step() -> None:
            xt.grad = None
            fn(xt).backward(dyt)

        return step

    _add_torch(case, compare, torch_make)
    return case


# -- softmax and softmax-cross-entropy ---------------------------------------------------------
def softmax_case(rows: int, backends: list[str], compare: list[str], dtype: str) -> Case:
    """Row softmax of (rows, 1000), forward only."""
    from fastnn.backends import get_backend

    x = _rng().standard_normal((rows, SOFTMAX_WIDTH)).astype(dtype)
    item = np.dtype(dtype).itemsize
    case = Case("ops", f"softmax x{SOFTMAX_WIDTH} {dtype}", rows,
                Work(2.0 * rows * SOFTMAX_WIDTH * item, "bytes"),
                info={"dtype": dtype, "x": [rows, SOFTMAX_WIDTH]})

    def fastnn_factory(name: str) -> Callable[[], Contender]:
        def build() -> Contender:
            be = get_backend(name)
            xd = be.asarray(x)
            y = be.xp.empty_like(xd)
            return _fastnn_contender(name, lambda: be.softmax(xd, out=y), be)

        return build

    for name in backends:
        case.factories[name] = fastnn_factory(name)

    def torch_make(torch: Any, device: str) -> Callable[[], Any]:
        xt = torch.from_numpy(x).to(device)
        return lambda: torch.softmax(xt, dim=1)

    _add_torch(case, compare, torch_make)
    return case


def softmax_ce_case(classes: int, rows: int, backends: list[str], compare: list[str],
                    dtype: str) -> Case:
    """Fused sparse softmax-cross-entropy, loss and dL/dlogits, on (rows, classes)."""
    from fastnn.backends import get_backend

    rng = _rng()
    logits = rng.standard_normal((rows, classes)).astype(dtype)
    labels = rng.integers(0, classes, rows).astype(np.int64)
    item = np.dtype(dtype).itemsize
    case = Case("ops", f"softmax-CE fwd+bwd x{classes} {dtype}", rows,
                Work(2.0 * rows * classes * item, "bytes"),
                info={"dtype": dtype, "logits": [rows, classes], "labels": "int64"})

    def fastnn_factory(name: str) -> Callable[[], Contender]:
        def build() -> Contender:
            be = get_backend(name)
            xd, yd = be.asarray(logits), be.asarray(labels)
            dx = be.xp.empty_like(xd)
            return _fastnn_contender(
                name, lambda: be.sparse_softmax_cross_entropy(xd, yd, dx=dx), be
            )

        return build

    for name in backends:
        case.factories[name] = fastnn_factory(name)

    def torch_make(torch: Any, device: str) -> Callable[[], Any]:
        xt = torch.from_numpy(logits).to(device).requires_grad_(True)
        yt = torch.from_numpy(labels).to(device)
        cross_entropy = torch.nn.functional.cross_entropy

        def step() -> None:
            xt.grad = None
            cross_entropy(xt, yt).backward()

        return step

    _add_torch(case, compare, torch_make)
    return case


# -- optimizers --------------------------------------------------------------------------------
def optimizer_case(spec: OptimizerSpec, params: int, backends: list[str], compare: list[str],
                   dtype: str) -> Case:
    """One ``spec`` optimizer step on a single tensor of ``params`` elements."""
    from fastnn import optimizers
    from fastnn.backends import get_backend

    rng = _rng()
    p0 = rng.standard_normal(params, dtype=np.float32).astype(dtype, copy=False)
    g0 = (rng.standard_normal(params, dtype=np.float32) * 1e-2).astype(dtype, copy=False)
    item = np.dtype(dtype).itemsize
    case = Case("ops", f"{spec.name} update {dtype}", params,
                Work(float(spec.streams) * params * item, "bytes"),
                info={"dtype": dtype, "params": params, "fastnn": spec.fastnn_kwargs,
                      "torch": spec.torch_kwargs})

    def fastnn_factory(name: str) -> Callable[[], Contender]:
        def build() -> Contender:
            be = get_backend(name)
            cls = getattr(optimizers, spec.fastnn_class)
            opt = cls(backend=be, **spec.fastnn_kwargs)
            p = be.asarray(p0.copy())
            g = be.asarray(g0)
            plist, glist = [p], [g]
            return _fastnn_contender(name, lambda: opt.update(plist, glist), be)

        return build

    for name in backends:
        case.factories[name] = fastnn_factory(name)

    def torch_factory(fused: bool) -> Callable[[Any, str], Callable[[], Any]]:
        def make(torch: Any, device: str) -> Callable[[], Any]:
            p = torch.nn.Parameter(torch.from_numpy(p0.copy()).to(device))
            p.grad = torch.from_numpy(g0).to(device)
            cls = getattr(torch.optim, spec.torch_class)
            kwargs = dict(spec.torch_kwargs)
            if fused:
                kwargs["fused"] = True
            opt = cls([p], **kwargs)
            return opt.step

        return make

    _add_torch(case, compare, torch_factory(False),
               torch_factory(True) if spec.torch_fused else None)
    return case


def ops_cases(
    backends: list[str],
    sizes: list[int] | None = None,
    params: list[int] | None = None,
    compare: list[str] | None = None,
    dtype: str = "float32",
) -> Iterator[Case]:
    """Every case of the ops suite, built one at a time (each holds its own data).

    Args:
        backends: fastnn backends to run.
        sizes: rows N of every batch-shaped op (default: each op's own sizes).
        params: parameter counts of the optimizer cases (default 10 M).
        compare: peers, e.g. ``["torch"]``.
        dtype: float dtype of every case.
    """
    compare = compare or []
    for rows in sizes or DEFAULT_DENSE_ROWS:
        yield dense_case(rows, backends, compare, dtype)
    for act in ACTIVATIONS:
        for rows in sizes or DEFAULT_ACT_ROWS:
            yield activation_case(act, rows, backends, compare, dtype)
    for rows in sizes or DEFAULT_SOFTMAX_ROWS:
        yield softmax_case(rows, backends, compare, dtype)
    for classes, default_rows in SOFTMAX_CE_SHAPES:
        for rows in sizes or (default_rows,):
            yield softmax_ce_case(classes, rows, backends, compare, dtype)
    for spec in OPTIMIZERS:
        for count in params or DEFAULT_PARAMS:
            yield optimizer_case(spec, count, backends, compare, dtype)


__all__ = [
    "OPTIMIZERS",
    "OptimizerSpec",
    "activation_case",
    "dense_case",
    "ops_cases",
    "optimizer_case",
    "softmax_case",
    "softmax_ce_case",
]
