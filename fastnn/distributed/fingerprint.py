"""What every rank must agree on before training together, and a clear error when not."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from fastnn.distributed.comm import Communicator
from fastnn.distributed.env import DistributedError


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=lambda v: type(v).__name__)


def _layers(model: Any) -> list[Any]:
    seen: list[Any] = []

    def visit(layer: Any) -> None:
        seen.append(layer)
        for sub in layer.sublayers():
            visit(sub)

    for layer in model.layers:
        visit(layer)
    return seen


def model_signature(model: Any, **training: Any) -> list[str]:
    """One line per thing ranks must share: layers (config, shapes), optimizer, loss, data.

    Layer names are left out (automatic names depend on what else a process built).
    """
    lines = [f"model: {type(model).__name__}, dtype {model.dtype.name}, backend "
             f"{model.backend.name}, input shape {model.input_shape}"]
    for i, layer in enumerate(_layers(model)):
        config = {k: v for k, v in layer.get_config().items() if k != "name"}
        params = [(k, tuple(p.shape), str(p.dtype)) for k, p in layer.params.items()]
        states = [(k, tuple(s.shape)) for k, s in layer.states.items()]
        lines.append(f"layer {i}: {type(layer).__name__} {_json(config)} params {params} "
                     f"states {states} trainable {layer.trainable}")
    opt = model.optimizer
    if opt is not None:
        lines.append(f"optimizer: {type(opt).__name__} {_json(opt.get_config())}")
    if model.loss is not None:
        lines.append(f"loss: {model.loss.describe()} reduction {model.loss.reduction}")
    lines.append("fit: " + ", ".join(f"{k}={v}" for k, v in sorted(training.items())))
    return lines


def signature_digest(lines: Sequence[str]) -> str:
    """SHA-256 of the signature lines."""
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def check_same_model(comm: Communicator, lines: list[str], where: str = "DataParallel") -> None:
    """Raise the same DistributedError on every rank if any rank's signature differs.

    Every rank gathers every rank's digest (and lines), so all of them raise together:
    no rank is left waiting in a collective.
    """
    gathered = comm.allgather((signature_digest(lines), lines))
    reference_digest, reference = gathered[0]
    differing = [r for r, (digest, _) in enumerate(gathered) if digest != reference_digest]
    if not differing:
        return
    details = []
    for r in differing:
        other = gathered[r][1]
        for i in range(max(len(reference), len(other))):
            mine = reference[i] if i < len(reference) else "(nothing)"
            theirs = other[i] if i < len(other) else "(nothing)"
            if mine != theirs:
                details.append(f"rank 0 has '{mine}' where rank {r} has '{theirs}'")
                break
    agree = [r for r in range(len(gathered)) if r not in differing]
    raise DistributedError(
        f"{where}: the model definition differs across ranks, detected before training: "
        f"ranks {differing} differ from rank 0 (ranks {agree} agree); " + "; ".join(details)
        + ". Build the same model, optimizer, loss and data on every rank"
    )
