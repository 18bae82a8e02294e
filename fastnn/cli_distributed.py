"""``fastnn train --distributed``: data-parallel training on every rank of ``mpiexec -n N``.

Registered with :func:`fastnn.cli.register_train_extension`; the module is listed in
``fastnn.cli.COMMAND_MODULES``::

    mpiexec -n 2 fastnn train --dataset digits --distributed

``--batch-size`` stays the global batch (each of N ranks computes ``batch/N`` samples per
step), so the run trains the same model as ``fastnn train`` on one process. The option
takes effect while the command line is parsed: MPI starts, and the standard output of every
rank but 0 is discarded, so the header, epoch lines and test accuracy print once (errors
still reach standard error from every rank, prefixed by the failing rank). If a rank fails,
the whole job is aborted with ``MPI_Abort`` instead of leaving the others waiting.
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys
from typing import Any

from fastnn import cli

#: Set once ``fastnn train --distributed`` has finished on this rank.
_state: dict[str, Any] = {"comm": None, "done": False}


def _start(strategy_comm: Any = None) -> Any:
    """Initialise MPI once, silence stdout on ranks > 0, abort the job if a rank fails."""
    if _state["comm"] is not None:
        return _state["comm"]
    from fastnn.distributed.comm import MPICommunicator

    comm = strategy_comm if strategy_comm is not None else MPICommunicator()
    _state["comm"] = comm
    if comm.rank != 0:
        sys.stdout.flush()
        sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 (process-long)
    if comm.size > 1:
        atexit.register(_abort_unless_done)
    return comm


def _abort_unless_done() -> None:
    comm = _state["comm"]
    if comm is not None and not _state["done"]:
        print(f"fastnn train --distributed: rank {comm.rank} of {comm.size} stopped before "
              "finishing; aborting every rank", file=sys.stderr, flush=True)
        comm.abort(cli.EXIT_FAILURE)


class _DistributedAction(argparse.Action):
    """``--distributed``: sets the flag and starts MPI while the command line is parsed."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, True)
        _start()


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--distributed", action=_DistributedAction, nargs=0, default=False,
        help="data-parallel training on every MPI rank (run under mpiexec -n N; needs the "
             "'distributed' extra); --batch-size is the global batch",
    )


def _before_fit(args: argparse.Namespace, model: Any, fit_kwargs: dict[str, Any]) -> None:
    if not getattr(args, "distributed", False):
        return
    from fastnn.distributed import DataParallel

    comm = _start()
    fit_kwargs["distributed"] = DataParallel()  # NCCL for a CuPy model, else MPI
    if not getattr(args, "quiet", False):
        per_rank = args.batch_size / comm.size
        print(f"distributed: {comm.size} ranks ({comm.name}), global batch {args.batch_size} "
              f"({per_rank:g} samples per rank per step)", flush=True)


def _after_fit(args: argparse.Namespace, model: Any, history: Any) -> None:
    if getattr(args, "distributed", False):
        _state["done"] = True


cli.register_train_extension(cli.TrainExtension(
    name="distributed", configure=_configure, before_fit=_before_fit, after_fit=_after_fit,
))
