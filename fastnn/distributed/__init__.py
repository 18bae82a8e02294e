"""Data-parallel training across processes and machines on MPI (mpi4py), NCCL for GPUs.

Run a training script on N processes with ``mpiexec -n N python train.py`` and pass
``distributed=True`` (or a :class:`DataParallel`) to ``model.fit``; ``fastnn train
--distributed`` does the same from the command line. See ``docs/distributed.md``.

mpi4py is imported only when a distributed feature is used (install the ``distributed``
extra: ``pip install 'fastnn-dl[distributed]'``).
"""

from __future__ import annotations

from fastnn.distributed.buckets import DEFAULT_BUCKET_BYTES, GradientBuckets
from fastnn.distributed.comm import Communicator, LocalCommunicator, MPICommunicator
from fastnn.distributed.data_parallel import DataParallel
from fastnn.distributed.env import (
    DistributedError,
    DistributedUnavailableError,
    is_chief,
    launched_by_mpi,
    mpi_available,
    rank,
    world_size,
)
from fastnn.distributed.nccl import NCCLCommunicator, nccl_available, select_local_gpu
from fastnn.distributed.strategy import NO_DISTRIBUTION, Distribution


def init() -> Communicator:
    """Initialise MPI (if not yet) and return the world communicator of this job."""
    return MPICommunicator()


__all__ = [
    "DEFAULT_BUCKET_BYTES",
    "NO_DISTRIBUTION",
    "Communicator",
    "DataParallel",
    "Distribution",
    "DistributedError",
    "DistributedUnavailableError",
    "GradientBuckets",
    "LocalCommunicator",
    "MPICommunicator",
    "NCCLCommunicator",
    "init",
    "is_chief",
    "launched_by_mpi",
    "mpi_available",
    "nccl_available",
    "rank",
    "select_local_gpu",
    "world_size",
]
