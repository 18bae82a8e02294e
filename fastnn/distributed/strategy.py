"""The hooks ``Sequential.fit`` calls around each step, and their single-process default.

``fit(..., distributed=None)`` uses :data:`NO_DISTRIBUTION`, whose hooks do nothing, so the
training loop has one code path. :class:`fastnn.distributed.DataParallel` overrides them.

The order of the calls in one epoch::

    setup(model, ...)                        # once per fit, before the first epoch
    for each global batch idx (B indices):
        idx = shard_batch(idx)               # this rank's part (maybe empty)
        if len(idx) == 0: empty_step(model); continue
        forward; loss = reduce_loss(loss)    # the global batch's loss on every rank
        backward, calling after_layer_backward(layer) after each layer
        reduce_gradients(model)              # grads now hold the global-batch gradient
        optimizer update
    totals = reduce_totals(totals)           # per-sample sums over every rank
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class Distribution:
    """Training on one process: every hook is the identity or does nothing."""

    #: Number of processes training together, and this one's index.
    world_size = 1
    rank = 0

    @property
    def is_chief(self) -> bool:
        """Whether this process prints progress and writes files (rank 0)."""
        return self.rank == 0

    def setup(self, model: Any, *, n_samples: int, batch_size: int, epochs: int,
              initial_epoch: int, shuffle: bool) -> None:
        """Prepare ``model`` before the first epoch of a fit."""

    def configure_callbacks(self, callbacks: Sequence[Any] | None,
                            verbose: int | str) -> tuple[list[Any], int | str]:
        """The callbacks and verbosity this rank runs with."""
        return list(callbacks or []), verbose

    def shard_batch(self, idx: Any) -> Any:
        """This rank's share of the global batch ``idx`` (indices into the data)."""
        return idx

    def reduce_loss(self, loss: float) -> float:
        """The loss of the global batch, from this rank's loss on its share."""
        return loss

    def after_layer_backward(self, layer: Any) -> None:
        """``layer`` has finished its backward pass (its gradients are final)."""

    def reduce_gradients(self, model: Any) -> None:
        """Make the model's gradients those of the global batch."""

    def empty_step(self, model: Any, epoch: int, step: int) -> None:
        """Take part in a step in which this rank has no sample."""

    def reduce_totals(self, totals: dict[str, float]) -> dict[str, float]:
        """Per-sample sums of the epoch (loss, metrics) over every rank."""
        return totals

    def on_error(self, exc: BaseException) -> None:
        """``fit`` is failing with ``exc`` on this rank (then it re-raises)."""

    def teardown(self, model: Any) -> None:
        """``fit`` has ended."""


#: The single-process default.
NO_DISTRIBUTION = Distribution()


def resolve(distributed: Any) -> Distribution:
    """``fit``'s ``distributed`` argument as a Distribution.

    None or False: single process; True: ``DataParallel()`` on ``MPI.COMM_WORLD``; a
    Distribution: itself.
    """
    if distributed is None or distributed is False:
        return NO_DISTRIBUTION
    if distributed is True:
        from fastnn.distributed.data_parallel import DataParallel

        return DataParallel()
    if isinstance(distributed, Distribution):
        return distributed
    raise TypeError(
        "Sequential.fit: distributed must be True, False, None or a strategy such as "
        f"fastnn.distributed.DataParallel(). Received: distributed={distributed!r}"
    )
