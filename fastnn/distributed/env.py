"""The MPI environment: is mpi4py there, which rank is this process, how many ranks run.

``import fastnn`` never imports mpi4py. This module imports it on first use (which calls
``MPI_Init``), so a plain ``python train.py`` is a world of one rank and the same script
under ``mpiexec -n 4`` is a world of four.
"""

from __future__ import annotations

import os
from typing import Any

#: Environment variables that MPI launchers (MPICH/Hydra, Open MPI, Slurm's PMI) set in
#: every rank; their presence means "started by mpiexec".
LAUNCHER_VARIABLES = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE",
                      "MPI_LOCALNRANKS", "HYDRA_CONTROL_FD")

INSTALL_HINT = ("install the 'distributed' extra: pip install 'fastnn-dl[distributed]' "
                "(mpi4py and the mpich wheel, which brings mpiexec)")


class DistributedError(RuntimeError):
    """Distributed training cannot start or continue; the message names the ranks at fault."""


class DistributedUnavailableError(DistributedError):
    """mpi4py (or an MPI library) is missing; the message says what to install."""


def launched_by_mpi() -> bool:
    """Whether this process was started by an MPI launcher such as ``mpiexec``."""
    return any(name in os.environ for name in LAUNCHER_VARIABLES)


def mpi_module() -> Any:
    """``mpi4py.MPI`` (initialising MPI on first call); a clear error if it is missing."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise DistributedUnavailableError(
            f"fastnn.distributed needs mpi4py and an MPI library: {INSTALL_HINT}"
        ) from exc
    return MPI


def mpi_available() -> bool:
    """Whether mpi4py can be imported here (does not initialise MPI)."""
    try:
        import importlib.util

        return importlib.util.find_spec("mpi4py") is not None
    except (ImportError, ValueError):
        return False


def rank() -> int:
    """This process's rank in ``MPI.COMM_WORLD`` (0 when not running under MPI)."""
    if not launched_by_mpi() and not _mpi_initialized():
        return 0
    return int(mpi_module().COMM_WORLD.Get_rank())


def world_size() -> int:
    """Number of ranks in ``MPI.COMM_WORLD`` (1 when not running under MPI)."""
    if not launched_by_mpi() and not _mpi_initialized():
        return 1
    return int(mpi_module().COMM_WORLD.Get_size())


def is_chief() -> bool:
    """Whether this is rank 0, the one that prints and writes files."""
    return rank() == 0


def _mpi_initialized() -> bool:
    import sys

    mpi = sys.modules.get("mpi4py.MPI")
    return mpi is not None and bool(mpi.Is_initialized())
