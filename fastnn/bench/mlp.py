"""The ``mlp`` suite: one training step of an MLP 784-512-512-10, fastnn against PyTorch.

Each fastnn contender is a compiled ``Sequential`` (ReLU hidden layers, softmax output,
sparse categorical cross-entropy, so the fused softmax-cross-entropy path) stepped with
:meth:`fastnn.Sequential.train_on_batch`: the forward, loss, backward and optimizer update
that a step of ``fit`` runs, on host float32 data (random, made once). Unlike a step inside
``fit``, each call also validates its inputs (a finiteness pass over ``x``, the label range)
and, on cupy, copies the batch to the device, while PyTorch steps on tensors already in
place: the comparison is slightly in PyTorch's favour. PyTorch runs the same
network (``nn.Linear`` + ``ReLU``, ``cross_entropy`` on the logits) from the same initial
weights with the same hyper-parameters: ``zero_grad``, forward, backward, ``step``.

Optimizers: SGD with momentum 0.9 (lr 0.01) and Adam (lr 1e-3, eps 1e-8, PyTorch's
defaults); torch also runs ``fused=True``. At the largest batch (1024 by default) a
``numpy-sgemm`` contender times just the step's eight matrix products with
``np.matmul(..., out=)`` on the same layouts, and every row there reports its FLOP rate as
a percentage of that sgemm rate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from fastnn.bench import peers
from fastnn.bench.case import Case, Contender, Work
from fastnn.bench.peers import FUSED_SUFFIX, torch_devices, torch_sync

SEED = 0
LAYERS = (784, 512, 512, 10)
DEFAULT_BATCHES = (1, 32, 128, 1024)
SGEMM = "numpy-sgemm"

#: name -> (fastnn class, fastnn kwargs, torch class, torch kwargs).
OPTIMIZERS: dict[str, tuple[str, dict[str, Any], str, dict[str, Any]]] = {
    "sgd-momentum": ("SGD", {"learning_rate": 0.01, "momentum": 0.9},
                     "SGD", {"lr": 0.01, "momentum": 0.9}),
    "adam": ("Adam", {"learning_rate": 1e-3, "epsilon": 1e-8},
             "Adam", {"lr": 1e-3, "eps": 1e-8}),
}


def initial_weights(layers: tuple[int, ...] = LAYERS, dtype: str = "float32",
                    seed: int = SEED) -> list[np.ndarray]:
    """Glorot-uniform W (in, out) and zero b per layer, in ``get_weights`` order."""
    rng = np.random.default_rng(seed)
    weights = []
    for d_in, d_out in zip(layers[:-1], layers[1:], strict=True):
        limit = np.sqrt(6.0 / (d_in + d_out))
        weights.append(rng.uniform(-limit, limit, (d_in, d_out)).astype(dtype))
        weights.append(np.zeros(d_out, dtype=dtype))
    return weights


def step_gemm_flops(batch: int, layers: tuple[int, ...] = LAYERS) -> float:
    """FLOPs of the matrix products of one step: forward, dW per layer, dx except the first."""
    pairs = list(zip(layers[:-1], layers[1:], strict=True))
    forward = sum(2.0 * batch * a * b for a, b in pairs)
    dx = sum(2.0 * batch * a * b for a, b in pairs[1:])
    return 2 * forward + dx


def build_model(backend: Any, optimizer: str, dtype: str = "float32",
                layers: tuple[int, ...] = LAYERS) -> Any:
    """The compiled fastnn MLP with :func:`initial_weights`."""
    from fastnn import Dense, Sequential, optimizers

    model = Sequential(backend=backend, dtype=dtype, seed=SEED, name="bench_mlp")
    hidden = layers[1:-1]
    for i, units in enumerate(hidden):
        kwargs = {"input_dim": layers[0]} if i == 0 else {}
        model.add(Dense(units, activation="relu", **kwargs))
    model.add(Dense(layers[-1], activation="softmax"))
    cls_name, kwargs, _, _ = OPTIMIZERS[optimizer]
    opt = getattr(optimizers, cls_name)(backend=model.backend, **kwargs)
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
    model.set_weights(initial_weights(layers, dtype))
    return model


def make_data(batch: int, dtype: str = "float32",
              layers: tuple[int, ...] = LAYERS) -> tuple[np.ndarray, np.ndarray]:
    """Random inputs (batch, 784) and integer labels (batch,)."""
    rng = np.random.default_rng(SEED + batch)
    x = rng.standard_normal((batch, layers[0])).astype(dtype)
    y = rng.integers(0, layers[-1], batch).astype(np.int64)
    return x, y


def torch_step(torch: Any, device: str, optimizer: str, x: np.ndarray, y: np.ndarray,
               fused: bool = False, layers: tuple[int, ...] = LAYERS) -> Callable[[], Any]:
    """One PyTorch eager training step of the same MLP, same initial weights."""
    mods = []
    weights = initial_weights(layers, str(x.dtype))
    for i, (d_in, d_out) in enumerate(zip(layers[:-1], layers[1:], strict=True)):
        lin = torch.nn.Linear(d_in, d_out)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(weights[2 * i].T)))
            lin.bias.copy_(torch.from_numpy(weights[2 * i + 1]))
        mods.append(lin)
        if i < len(layers) - 2:
            mods.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*mods).to(device)
    _, _, cls_name, kwargs = OPTIMIZERS[optimizer]
    kwargs = dict(kwargs)
    if fused:
        kwargs["fused"] = True
    opt = getattr(torch.optim, cls_name)(net.parameters(), **kwargs)
    xt = torch.from_numpy(x).to(device)
    yt = torch.from_numpy(y).to(device)
    cross_entropy = torch.nn.functional.cross_entropy

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        cross_entropy(net(xt), yt).backward()
        opt.step()

    return step


def sgemm_step(batch: int, dtype: str = "float32",
               layers: tuple[int, ...] = LAYERS) -> Callable[[], None]:
    """The step's matrix products alone, ``np.matmul(..., out=)`` on the same layouts."""
    rng = np.random.default_rng(SEED)
    pairs = list(zip(layers[:-1], layers[1:], strict=True))
    acts = [rng.standard_normal((batch, a)).astype(dtype) for a, _ in pairs]
    douts = [rng.standard_normal((batch, b)).astype(dtype) for _, b in pairs]
    Ws = [rng.standard_normal((a, b)).astype(dtype) for a, b in pairs]
    zs = [np.empty((batch, b), dtype=dtype) for _, b in pairs]
    dWs = [np.empty((a, b), dtype=dtype) for a, b in pairs]
    dxs = [np.empty((batch, a), dtype=dtype) for a, _ in pairs]

    def step() -> None:
        for i in range(len(pairs)):
            np.matmul(acts[i], Ws[i], out=zs[i])
        for i in reversed(range(len(pairs))):
            np.matmul(acts[i].T, douts[i], out=dWs[i])
            if i > 0:
                np.matmul(douts[i], Ws[i].T, out=dxs[i])

    return step


def mlp_case(batch: int, optimizer: str, backends: list[str], compare: list[str],
             dtype: str = "float32", sgemm: bool = False) -> Case:
    """One training step at ``batch`` with ``optimizer`` (``sgd-momentum`` or ``adam``);
    ``sgemm`` adds the numpy-sgemm reference of the step's matrix products."""
    from fastnn.backends import get_backend

    x, y = make_data(batch, dtype)
    layout = "-".join(str(d) for d in LAYERS)
    gemm = step_gemm_flops(batch)
    case = Case("mlp", f"mlp {layout} {optimizer} {dtype}", batch, Work(batch, "samples"),
                info={"dtype": dtype, "layers": list(LAYERS), "batch": batch,
                      "optimizer": OPTIMIZERS[optimizer][1],
                      "torch_optimizer": OPTIMIZERS[optimizer][3],
                      "gemm_flops_per_step": gemm})

    def fastnn_factory(name: str) -> Callable[[], Contender]:
        def build() -> Contender:
            be = get_backend(name)
            model = build_model(be, optimizer, dtype)

            def step() -> None:
                model.train_on_batch(x, y)

            return Contender(name, step, be.synchronize, be.num_threads(), be.device)

        return build

    for name in backends:
        case.factories[name] = fastnn_factory(name)
    if sgemm:
        case.gemm_flops = gemm
        case.factories[SGEMM] = lambda: Contender(SGEMM, sgemm_step(batch, dtype))
    if "torch" in compare:
        torch, reason = peers.import_torch()
        if torch is None:
            case.unavailable["torch-cpu"] = reason
        else:
            for label, device in torch_devices(torch):
                for fused in (False, True):
                    name = label + (FUSED_SUFFIX if fused else "")
                    case.factories[name] = _torch_factory(torch, device, name, optimizer, x, y,
                                                          fused)
    return case


def _torch_factory(torch: Any, device: str, name: str, optimizer: str, x: np.ndarray,
                   y: np.ndarray, fused: bool) -> Callable[[], Contender]:
    def build() -> Contender:
        threads = int(torch.get_num_threads()) if device == "cpu" else 0
        return Contender(name, torch_step(torch, device, optimizer, x, y, fused),
                         torch_sync(torch, device), threads,
                         f"{device} (torch {torch.__version__})")

    return build


def mlp_cases(
    backends: list[str],
    sizes: list[int] | None = None,
    compare: list[str] | None = None,
    dtype: str = "float32",
) -> Iterator[Case]:
    """Every case of the mlp suite: each batch size with SGD-momentum, then with Adam.

    The largest batch size also runs the numpy-sgemm reference (B=1024 by default).
    """
    batches = list(sizes or DEFAULT_BATCHES)
    for optimizer in OPTIMIZERS:
        for batch in batches:
            yield mlp_case(batch, optimizer, backends, compare or [], dtype,
                           sgemm=batch == max(batches))


__all__ = [
    "DEFAULT_BATCHES",
    "LAYERS",
    "OPTIMIZERS",
    "SGEMM",
    "build_model",
    "initial_weights",
    "make_data",
    "mlp_case",
    "mlp_cases",
    "sgemm_step",
    "step_gemm_flops",
    "torch_step",
]
