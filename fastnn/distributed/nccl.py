"""NCCL all-reduce for CuPy models: gradients are summed GPU to GPU, never through the host.

The NCCL communicator is created from a unique id that rank 0 draws and broadcasts over MPI
(``mpi4py``), the way NCCL's own MPI examples do. Each all-reduce is queued on a dedicated
CUDA stream after an event recorded on the compute stream (so it starts once the bucket's
gradients are written and runs while the earlier layers' backward kernels run); ``wait``
makes the compute stream wait for the reduction's event, again without blocking the host.

One GPU per rank: select it before building the model, e.g. with
:func:`fastnn.distributed.select_local_gpu`. Importing this module needs neither a GPU
nor the NCCL library; creating a communicator does.
"""

from __future__ import annotations

import socket
import warnings
from typing import Any

from fastnn.distributed.comm import Communicator, Pending
from fastnn.distributed.env import DistributedError, DistributedUnavailableError

NCCL_INSTALL_HINT = ("install NCCL for CuPy: pip install 'nvidia-nccl-cu12>=2.18' (CUDA 12) "
                     "or 'nvidia-nccl-cu13' (CUDA 13)")


def _import_nccl() -> Any:
    with warnings.catch_warnings():  # CuPy warns when libnccl cannot be loaded
        warnings.simplefilter("ignore")
        from cupy.cuda import nccl
    return nccl


def nccl_available() -> bool:
    """Whether CuPy can use the NCCL library here."""
    try:
        nccl = _import_nccl()
    except Exception:
        return False
    return bool(getattr(nccl, "available", False))


#: NCCL data type constant names by NumPy dtype name.
NCCL_DTYPES = {"float16": "NCCL_FLOAT16", "float32": "NCCL_FLOAT32",
               "float64": "NCCL_FLOAT64", "int32": "NCCL_INT32", "int64": "NCCL_INT64"}


class _NCCLPending(Pending):
    """An all-reduce queued on the communication stream."""

    def __init__(self, done: Any, compute_stream: Any) -> None:
        self._done = done
        self._compute = compute_stream
        self._waited = False

    def test(self) -> bool:
        return bool(self._done.done)

    def wait(self) -> None:
        if not self._waited:
            self._compute.wait_event(self._done)  # device-side dependency, host continues
            self._waited = True


class NCCLCommunicator(Communicator):
    """Array collectives through NCCL on CuPy arrays; object collectives through ``host``.

    Args:
        host: an MPI communicator (for the unique id, small objects and abort).
        nccl: the ``cupy.cuda.nccl`` module (injectable for tests).
        cupy: the ``cupy`` module (injectable for tests).
    """

    name = "nccl"

    def __init__(self, host: Communicator, nccl: Any = None, cupy: Any = None) -> None:
        super().__init__()
        if nccl is None:
            if not nccl_available():
                raise DistributedUnavailableError(
                    f"NCCLCommunicator: CuPy cannot load the NCCL library; {NCCL_INSTALL_HINT}"
                )
            nccl = _import_nccl()
        if cupy is None:
            import cupy
        self.host = host
        self.rank = host.rank
        self.size = host.size
        self._nccl = nccl
        self._cp = cupy
        device = int(cupy.cuda.Device().id)
        places = host.allgather((socket.gethostname(), device))
        shared = [r for r, place in enumerate(places) if places.count(place) > 1]
        if shared:
            raise DistributedError(
                f"NCCLCommunicator: ranks {shared} use the same GPU ({places[shared[0]][0]}, "
                "device "
                f"{places[shared[0]][1]}); give every rank its own GPU, e.g. call "
                "fastnn.distributed.select_local_gpu() before building the model"
            )
        uid = nccl.get_unique_id() if self.rank == 0 else None
        uid = host.bcast_obj(uid, root=0)
        self.comm = nccl.NcclCommunicator(self.size, uid, self.rank)
        self.stream = cupy.cuda.Stream(non_blocking=True)

    def _dtype(self, buf: Any) -> Any:
        name = NCCL_DTYPES.get(str(buf.dtype))
        if name is None:
            raise ValueError(f"NCCLCommunicator: dtype {buf.dtype} is not supported; "
                             f"expected one of {', '.join(NCCL_DTYPES)}")
        return getattr(self._nccl, name)

    def _check(self, buf: Any, where: str) -> None:
        if not hasattr(getattr(buf, "data", None), "ptr"):  # device memory has a pointer
            raise TypeError(f"NCCLCommunicator.{where}: expected a CuPy array, received "
                            f"{type(buf).__name__}")
        if not buf.flags.c_contiguous:
            raise ValueError(f"NCCLCommunicator.{where}: the buffer must be C-contiguous, "
                             f"received shape {buf.shape} with strides {buf.strides}")

    def iallreduce_(self, buf: Any) -> Pending:
        """Queue an in-place sum of ``buf`` on the communication stream."""
        self._check(buf, "iallreduce_")
        self.bytes_reduced += int(buf.nbytes)
        compute = self._cp.cuda.get_current_stream()
        ready = compute.record()
        self.stream.wait_event(ready)
        self.comm.allReduce(buf.data.ptr, buf.data.ptr, int(buf.size), self._dtype(buf),
                            self._nccl.NCCL_SUM, self.stream.ptr)
        return _NCCLPending(self.stream.record(), compute)

    def bcast_(self, buf: Any, root: int = 0) -> None:
        """Broadcast ``buf`` from ``root`` in place, on the compute stream."""
        self._check(buf, "bcast_")
        compute = self._cp.cuda.get_current_stream()
        self.comm.bcast(buf.data.ptr, int(buf.size), self._dtype(buf), int(root), compute.ptr)

    def allgather(self, obj: Any) -> list[Any]:
        """Through the host communicator."""
        return self.host.allgather(obj)

    def bcast_obj(self, obj: Any, root: int = 0) -> Any:
        """Through the host communicator."""
        return self.host.bcast_obj(obj, root=root)

    def allreduce_scalars(self, values: Any) -> Any:
        """Through the host communicator (host floats, no device copy)."""
        return self.host.allreduce_scalars(values)

    def barrier(self) -> None:
        """Host barrier after the GPU work queued so far."""
        self._cp.cuda.get_current_stream().synchronize()
        self.stream.synchronize()
        self.host.barrier()

    def abort(self, status: int = 1) -> None:
        """Abort every rank through MPI."""
        self.host.abort(status)

    @property
    def comm_seconds(self) -> float:  # type: ignore[override]
        """Host seconds in host-side calls (GPU reductions run asynchronously)."""
        return self.host.comm_seconds

    @comm_seconds.setter
    def comm_seconds(self, value: float) -> None:
        pass


def select_local_gpu() -> int:
    """Use GPU ``local rank % device count`` in this process; returns the device id.

    The local rank is this rank's index among the ranks on the same host (from
    ``MPI.COMM_TYPE_SHARED``). Call it before building a CuPy model.
    """
    import cupy

    from fastnn.distributed.env import mpi_module

    mpi = mpi_module()
    local = mpi.COMM_WORLD.Split_type(mpi.COMM_TYPE_SHARED)
    local_rank = int(local.Get_rank())
    local.Free()
    count = int(cupy.cuda.runtime.getDeviceCount())
    device = local_rank % count
    cupy.cuda.Device(device).use()
    return device
