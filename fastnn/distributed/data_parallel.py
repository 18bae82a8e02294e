"""DataParallel: every rank holds the whole model and trains on its share of each batch.

The Horovod / PyTorch DDP recipe on MPI:

1. at the start of ``fit``, check that every rank built the same model (a digest of the
   architecture, shapes, optimizer, loss and fit arguments, gathered from every rank), then
   broadcast rank 0's weights, layer states, optimizer state and shuffling generator;
2. every epoch, every rank draws the same permutation (the one a single process would
   draw) and each global batch of ``B`` indices is split into ``world_size`` consecutive
   parts (``B/2`` each on 2 ranks; the first ranks take one more when it does not divide);
3. the local gradient of rank ``r`` (of its mean loss over ``m_r`` samples) is scaled by
   ``m_r / B`` and summed across ranks: exactly the gradient of the global batch's mean
   loss, also for a short last batch (``reduction="sum"`` losses use weight 1);
4. gradients are summed in buckets with non-blocking in-place ``Iallreduce`` started as
   soon as the layers of a bucket have finished their backward pass;
5. the loss of each batch and the epoch's per-sample sums (loss, metrics) are summed
   across ranks, so every rank sees the same logs and takes the same decisions
   (early stopping, divergence); only rank 0 prints and runs the callbacks that write
   files.

A failure on one rank (an exception inside ``fit``) aborts the whole job with
``MPI_Abort`` after printing the error, so no rank waits forever in a collective.
"""

from __future__ import annotations

import math
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any

import numpy as np

from fastnn.distributed.buckets import DEFAULT_BUCKET_BYTES, GradientBuckets
from fastnn.distributed.comm import Communicator
from fastnn.distributed.env import DistributedError
from fastnn.distributed.fingerprint import check_same_model, model_signature
from fastnn.distributed.strategy import Distribution
from fastnn.errors import DivergenceError

#: Callback classes that write files or print: only rank 0 runs them.
CHIEF_ONLY_CALLBACKS = ("ModelCheckpoint", "CSVLogger", "ProgressLogger", "EpochPrinter")


class DataParallel(Distribution):
    """Synchronous data-parallel training over MPI ranks (NCCL for the CuPy backend).

    Use it as ``model.fit(x, y, batch_size=B, distributed=DataParallel())`` (or
    ``distributed=True``) in a script started with ``mpiexec -n N python script.py``.
    Every rank passes the whole data set; ``B`` is the global batch size, each rank
    computes ``B / N`` samples of every step, and the result equals training on one
    process with batch ``B`` (up to floating-point summation order).

    Args:
        comm: a :class:`~fastnn.distributed.comm.Communicator` (default: NCCL for a CuPy
            model when available, else MPI on ``MPI.COMM_WORLD``).
        bucket_bytes: gradient bytes per all-reduce bucket.
        overlap: start each bucket's all-reduce during the backward pass (else all
            buckets start after it).
        check_model: gather a digest of the model definition at the start of ``fit`` and
            raise if ranks differ.
        chief_only_callbacks: names of callback classes only rank 0 runs (those that
            print or write files); a callback with ``chief_only = True`` is treated alike.
    """

    def __init__(
        self,
        comm: Communicator | None = None,
        bucket_bytes: int = DEFAULT_BUCKET_BYTES,
        overlap: bool = True,
        check_model: bool = True,
        chief_only_callbacks: Sequence[str] = CHIEF_ONLY_CALLBACKS,
    ) -> None:
        if int(bucket_bytes) < 1:
            raise ValueError(f"DataParallel: bucket_bytes must be >= 1. Received: "
                             f"bucket_bytes={bucket_bytes}")
        self._comm = comm
        self.bucket_bytes = int(bucket_bytes)
        self.overlap = bool(overlap)
        self.check_model = bool(check_model)
        self.chief_only_callbacks = tuple(chief_only_callbacks)
        self.buckets: GradientBuckets | None = None
        self._alone = False
        self._weight = 1.0
        self._sum_reduction = False
        self._overlapping = False
        self._in_step = False
        self._model: Any = None  # the model being trained (between setup and teardown)
        self._groups: list[tuple[Any, list[Any]]] = []  # what the buckets reduce
        self.steps = 0
        self.reduce_seconds = 0.0  # time in reduce_gradients (waiting for the sums)

    # -- the group --------------------------------------------------------------------------
    @property
    def comm(self) -> Communicator:
        """The communicator (MPI on ``COMM_WORLD`` unless one was given or set up)."""
        if self._comm is None:
            from fastnn.distributed.comm import MPICommunicator

            self._comm = MPICommunicator()
        return self._comm

    @property
    def world_size(self) -> int:  # type: ignore[override]
        """Number of ranks."""
        return self.comm.size

    @property
    def rank(self) -> int:  # type: ignore[override]
        """This process's rank."""
        return self.comm.rank

    def describe(self) -> str:
        """``DataParallel(mpi rank 0 of 2)``."""
        return f"DataParallel({self.comm.describe()})"

    def _communicator_for(self, backend: Any) -> Communicator:
        if self._comm is None and backend.name == "cupy":
            from fastnn.distributed.nccl import NCCLCommunicator, nccl_available

            if nccl_available():
                from fastnn.distributed.comm import MPICommunicator

                self._comm = NCCLCommunicator(MPICommunicator())
        return self.comm

    # -- fit hooks ------------------------------------------------------------------------
    def setup(self, model: Any, *, n_samples: int, batch_size: int, epochs: int,
              initial_epoch: int, shuffle: bool) -> None:
        """Check the model on every rank, broadcast rank 0's state, build the buckets."""
        comm = self._communicator_for(model.backend)
        loss = model.loss
        self._sum_reduction = loss.reduction != "mean"
        regularized = any(layer.regularizers for layer in _layers(model))
        if self._sum_reduction and regularized:
            raise DistributedError(
                f"DataParallel: a loss with reduction={loss.reduction!r} together with weight "
                "regularizers is not supported (the penalty would count once per rank); use "
                "reduction='mean'"
            )
        if self.check_model:
            lines = model_signature(model, samples=n_samples, batch_size=batch_size,
                                    epochs=epochs, initial_epoch=initial_epoch,
                                    shuffle=shuffle, world_size=comm.size)
            check_same_model(comm, lines, "DataParallel")
        self.broadcast_state(model)
        flat = getattr(model, "flat_gradients", None)
        if callable(flat):  # gradients as views of one flat buffer: buckets reduce in place
            flat()
        self._model = model
        self._build_buckets()
        # Regularization gradients are added after the backward pass: with regularizers
        # every bucket starts after them (no overlap).
        self._overlapping = self.overlap and not regularized and comm.size > 1
        self._in_step = False
        self._alone = comm.size == 1  # a world of one: nothing to reduce

    def _build_buckets(self) -> None:
        model = self._model
        self._groups = _gradient_groups(model)
        self.buckets = GradientBuckets(self._groups, self.comm, model.backend.xp,
                                       self.bucket_bytes)

    def _buckets_stale(self) -> bool:
        """Whether the model's trainable gradient arrays are no longer those the buckets
        reduce: a layer was frozen or unfrozen, or the model's flat buffers were rebuilt
        (``Sequential`` rebinds ``layer.grads`` to views of new buffers then)."""
        current = _gradient_groups(self._model)
        if len(current) != len(self._groups):
            return True
        for (layer, grads), (old_layer, old_grads) in zip(current, self._groups, strict=True):
            if layer is not old_layer or len(grads) != len(old_grads) or any(
                g is not h for g, h in zip(grads, old_grads, strict=True)
            ):
                return True
        return False

    def broadcast_state(self, model: Any) -> None:
        """Copy rank 0's weights, layer states, optimizer state and shuffling generator."""
        comm = self.comm
        for layer in _layers(model):
            for value in (*layer.params.values(), *layer.states.values()):
                comm.bcast_(value, root=0)
        opt = model.optimizer
        if opt is not None:
            names = [name for name, _, _ in model.named_parameters()]
            params = [p for _, p, _ in model.named_parameters()]
            desc = None
            if comm.rank == 0:
                desc = {
                    "scalars": {k: v for k, v in vars(opt).items()
                                if isinstance(v, (int, float, tuple)) and _plain(v)},
                    "slots": [(i, sorted(opt.slots[name])) for i, name in enumerate(names)
                              if name in opt.slots],
                }
            desc = comm.bcast_obj(desc, root=0)
            for key, value in desc["scalars"].items():
                setattr(opt, key, value)
            kept = set()
            for i, slot_names in desc["slots"]:
                name = names[i]
                slots = opt.slots.get(name)
                if slots is None or sorted(slots) != slot_names:
                    slots = opt.slots[name] = opt.create_slots(params[i])
                for slot in slot_names:
                    comm.bcast_(slots[slot], root=0)
                kept.add(name)
            for name in list(opt.slots):
                if name not in kept:
                    del opt.slots[name]
        if model.rng is not None:
            state = comm.bcast_obj(model.rng.bit_generator.state, root=0)
            model.rng.bit_generator.state = state

    def configure_callbacks(self, callbacks: Sequence[Any] | None,
                            verbose: int | str) -> tuple[list[Any], int | str]:
        """Rank 0 keeps everything; other ranks drop printing and file-writing callbacks."""
        callbacks = list(callbacks or [])
        if self.is_chief:
            return callbacks, verbose
        kept = [c for c in callbacks if not getattr(c, "chief_only", False)
                and type(c).__name__ not in self.chief_only_callbacks]
        return kept, 0

    def shard_batch(self, idx: Any) -> Any:
        """Consecutive part ``rank`` of ``world_size`` of the global batch ``idx``."""
        size, rank = self.comm.size, self.comm.rank
        total = int(idx.shape[0])
        base, extra = divmod(total, size)
        count = base + (1 if rank < extra else 0)
        start = rank * base + min(rank, extra)
        self._weight = 1.0 if self._sum_reduction else count / total
        self._in_step = not self._alone
        if self._in_step:
            if self._model is not None and self._buckets_stale():
                self._build_buckets()  # e.g. a callback froze a layer between two steps
            self.buckets.begin(self._weight)
        return idx[start:start + count]

    def reduce_loss(self, loss: float) -> float:
        """Weighted sum of the ranks' losses: the global batch's loss, on every rank."""
        if self._alone:
            return loss
        return float(self.comm.allreduce_scalars([self._weight * loss])[0])

    def after_layer_backward(self, layer: Any) -> None:
        """Start the all-reduce of the bucket that ``layer`` completes."""
        if self._in_step and self._overlapping:
            self.buckets.layer_done(layer)

    def reduce_gradients(self, model: Any) -> None:
        """Finish every bucket's all-reduce: grads become the global-batch gradient."""
        self.steps += 1
        if self._alone:
            return
        start = time.perf_counter()
        self.buckets.finish()
        self.reduce_seconds += time.perf_counter() - start
        self._in_step = False

    def empty_step(self, model: Any, epoch: int, step: int) -> None:
        """No sample here this step (a last batch shorter than the world): contribute zero."""
        loss = self.reduce_loss(0.0)
        if not math.isfinite(loss):
            raise DivergenceError(
                f"training diverged at epoch {epoch + 1}, batch {step + 1}: loss is {loss} "
                f"(rank {self.rank} had no sample of this batch; see rank 0's message)"
            )
        model.zero_grads()
        self.reduce_gradients(model)
        apply = getattr(model, "_apply_gradients", None)
        if callable(apply):
            apply()
        else:
            model.optimizer.update(model._param_list(), model._grad_list())

    def reduce_totals(self, totals: dict[str, float]) -> dict[str, float]:
        """Sum the epoch's per-sample sums over the ranks."""
        keys = list(totals)
        sums = self.comm.allreduce_scalars([totals[k] for k in keys])
        return {k: float(v) for k, v in zip(keys, sums, strict=True)}

    def on_error(self, exc: BaseException) -> None:
        """Print the error with this rank's number and abort every rank (no hang)."""
        if self.comm.size <= 1:
            return
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        print(f"fastnn.distributed: rank {self.rank} of {self.world_size} failed, aborting "
              f"every rank:\n{text}", file=sys.stderr, flush=True)
        self.comm.abort(1)

    def teardown(self, model: Any) -> None:
        """Leave no step open."""
        self._in_step = False
        self._model = None

    @property
    def comm_seconds(self) -> float:
        """Seconds spent inside communication calls since this strategy was created."""
        return self.comm.comm_seconds


def _plain(value: Any) -> bool:
    if isinstance(value, tuple):
        return all(isinstance(v, (int, float, np.integer, np.floating)) for v in value)
    return True


def _gradient_groups(model: Any) -> list[tuple[Any, list[Any]]]:
    """(layer, trainable gradient arrays of it and its sublayers), last layer first."""
    groups = []
    for layer in reversed(model.layers):
        grads = [g for sub in _layers_of(layer) if sub.trainable for g in sub.grads.values()]
        groups.append((layer, grads))
    return groups


def _layers_of(layer: Any) -> list[Any]:
    out = [layer]
    for sub in layer.sublayers():
        out.extend(_layers_of(sub))
    return out


def _layers(model: Any) -> list[Any]:
    out: list[Any] = []
    for layer in model.layers:
        out.extend(_layers_of(layer))
    return out
