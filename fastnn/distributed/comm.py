"""Communicators: the few collectives data-parallel training needs, on MPI or on nothing.

A communicator sums arrays in place across ranks (blocking or not), broadcasts arrays and
small Python objects from a root, gathers small objects from every rank, and aborts the
whole job. :class:`MPICommunicator` serves host (NumPy) arrays through mpi4py;
:class:`fastnn.distributed.nccl.NCCLCommunicator` serves CuPy arrays through NCCL.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np


class Pending:
    """A started in-place all-reduce; ``wait()`` blocks until its buffer holds the sum."""

    def test(self) -> bool:
        """Let the reduction progress; True once it is complete."""
        return True

    def wait(self) -> None:
        """Block until the reduction is complete."""


class Communicator:
    """Collectives over a group of ``size`` ranks; this process is ``rank``.

    Subclasses implement the array collectives; the timers ``comm_seconds`` (time spent
    inside communication calls) and ``bytes_reduced`` feed the benchmark.
    """

    rank: int = 0
    size: int = 1
    name = "local"

    def __init__(self) -> None:
        self.comm_seconds = 0.0
        self.bytes_reduced = 0

    # -- arrays ---------------------------------------------------------------------------
    def allreduce_(self, buf: Any) -> None:
        """Sum the contiguous array ``buf`` across ranks, in place, blocking."""
        self.iallreduce_(buf).wait()

    def iallreduce_(self, buf: Any) -> Pending:
        """Start summing ``buf`` across ranks in place; the result is there after ``wait()``."""
        return Pending()

    def bcast_(self, buf: Any, root: int = 0) -> None:
        """Overwrite ``buf`` on every rank with the root's ``buf``, in place."""

    # -- small Python objects ---------------------------------------------------------------
    def allgather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (small, picklable objects)."""
        return [obj]

    def bcast_obj(self, obj: Any, root: int = 0) -> Any:
        """The root's ``obj`` on every rank."""
        return obj

    def allreduce_scalars(self, values: Any) -> np.ndarray:
        """Sum a short float64 vector across ranks (blocking); returns the sums."""
        return np.asarray(values, dtype=np.float64).copy()

    def barrier(self) -> None:
        """Wait until every rank has called ``barrier``."""

    def abort(self, status: int = 1) -> None:
        """End every rank of the job now with exit ``status``."""
        sys.exit(status)

    def describe(self) -> str:
        """``mpi rank 0 of 2``."""
        return f"{self.name} rank {self.rank} of {self.size}"


class LocalCommunicator(Communicator):
    """A world of one rank: every collective is the identity."""


class _MPIPending(Pending):
    def __init__(self, comm: MPICommunicator, request: Any) -> None:
        self._comm = comm
        self._request = request
        self._done = False

    def test(self) -> bool:
        if self._done:
            return True
        start = time.perf_counter()
        self._done = bool(self._request.Test())
        self._comm.comm_seconds += time.perf_counter() - start
        return self._done

    def wait(self) -> None:
        if self._done:
            return
        start = time.perf_counter()
        self._request.Wait()
        self._done = True
        self._comm.comm_seconds += time.perf_counter() - start


class _StagedPending(Pending):
    """Device array reduced through a host copy (MPI without NCCL): done on creation."""


class MPICommunicator(Communicator):
    """Collectives through mpi4py on host arrays (``MPI.COMM_WORLD`` by default).

    Device (CuPy) arrays are copied to the host, reduced and copied back: correct, but with
    a host round trip; use :class:`~fastnn.distributed.nccl.NCCLCommunicator` on GPUs.

    Args:
        comm: an ``mpi4py.MPI.Comm`` (default: ``COMM_WORLD``).
    """

    name = "mpi"

    def __init__(self, comm: Any = None) -> None:
        super().__init__()
        from fastnn.distributed.env import mpi_module

        self.MPI = mpi_module()
        self.comm = comm if comm is not None else self.MPI.COMM_WORLD
        self.rank = int(self.comm.Get_rank())
        self.size = int(self.comm.Get_size())

    def iallreduce_(self, buf: Any) -> Pending:
        """Start an in-place ``Iallreduce`` (sum) of ``buf``."""
        self.bytes_reduced += int(buf.nbytes)
        start = time.perf_counter()
        if not isinstance(buf, np.ndarray):  # device array: stage through the host
            host = _to_host(buf)
            self.comm.Allreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM)
            buf[...] = _like(buf, host)
            self.comm_seconds += time.perf_counter() - start
            return _StagedPending()
        _require_contiguous(buf, "MPICommunicator.iallreduce_")
        request = self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        self.comm_seconds += time.perf_counter() - start
        return _MPIPending(self, request)

    def allreduce_(self, buf: Any) -> None:
        """Blocking in-place ``Allreduce`` (sum) of ``buf``."""
        if not isinstance(buf, np.ndarray):
            self.iallreduce_(buf).wait()
            return
        _require_contiguous(buf, "MPICommunicator.allreduce_")
        self.bytes_reduced += int(buf.nbytes)
        start = time.perf_counter()
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        self.comm_seconds += time.perf_counter() - start

    def bcast_(self, buf: Any, root: int = 0) -> None:
        """In-place ``Bcast`` of ``buf`` from ``root``."""
        start = time.perf_counter()
        if not isinstance(buf, np.ndarray):
            host = _to_host(buf)
            self.comm.Bcast(host, root=root)
            buf[...] = _like(buf, host)
        else:
            _require_contiguous(buf, "MPICommunicator.bcast_")
            self.comm.Bcast(buf, root=root)
        self.comm_seconds += time.perf_counter() - start

    def allgather(self, obj: Any) -> list[Any]:
        """``comm.allgather`` of a picklable object."""
        return list(self.comm.allgather(obj))

    def bcast_obj(self, obj: Any, root: int = 0) -> Any:
        """``comm.bcast`` of a picklable object."""
        return self.comm.bcast(obj, root=root)

    def allreduce_scalars(self, values: Any) -> np.ndarray:
        """Blocking sum of a short float64 vector."""
        buf = np.array(values, dtype=np.float64)
        start = time.perf_counter()
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        self.comm_seconds += time.perf_counter() - start
        return buf

    def barrier(self) -> None:
        """``comm.Barrier()``."""
        self.comm.Barrier()

    def abort(self, status: int = 1) -> None:
        """``comm.Abort(status)``: the launcher ends every rank."""
        sys.stdout.flush()
        sys.stderr.flush()
        self.comm.Abort(status)


def _require_contiguous(buf: np.ndarray, where: str) -> None:
    if not buf.flags.c_contiguous:
        raise ValueError(f"{where}: the buffer must be C-contiguous, received an array of "
                         f"shape {buf.shape} with strides {buf.strides}")


def _to_host(buf: Any) -> np.ndarray:
    get = getattr(buf, "get", None)
    return np.ascontiguousarray(get() if get is not None else np.asarray(buf))


def _like(buf: Any, host: np.ndarray) -> Any:
    module = type(buf).__module__.split(".")[0]
    if module == "cupy":
        import cupy

        return cupy.asarray(host)
    return host
