"""Gradient buckets: the gradients of consecutive layers reduced together, in backward order.

Layers finish their backward pass from the last to the first. A bucket holds the gradients
of a run of consecutive layers (in that order) totalling about ``bucket_bytes``; as soon as
the last layer of a bucket has finished its backward pass, the bucket's gradients are
scaled by this rank's weight, packed into one flat buffer and a non-blocking in-place
all-reduce (sum) starts, while the earlier layers are still computing. ``finish`` starts
whatever has not started, waits for every bucket and copies the sums back into the layers'
gradient arrays.

When the gradient arrays of a bucket are already adjacent views of one contiguous array
(a flat gradient buffer), that region is reduced in place and nothing is copied.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fastnn.distributed.comm import Communicator, Pending

#: Default bucket size in bytes: small enough that the last layers' bucket of an MLP
#: starts while the first layer is still in its backward pass.
DEFAULT_BUCKET_BYTES = 1 << 20


@dataclass
class Bucket:
    """The gradients of consecutive layers (backward order) and their flat buffer."""

    layer_ids: list[int]
    grads: list[Any]
    buffer: Any = None  # (total,) flat array: own storage or a view of a flat gradient buffer
    offsets: list[int] = field(default_factory=list)
    zero_copy: bool = False
    remaining: int = 0
    pending: Pending | None = None

    @property
    def nbytes(self) -> int:
        """Bytes reduced for this bucket."""
        return int(sum(g.nbytes for g in self.grads))


class GradientBuckets:
    """Buckets over ``groups`` and the all-reduce of one training step.

    Args:
        groups: ``(layer, gradient arrays)`` for every layer with trainable parameters, in
            backward order (last layer first).
        comm: the communicator that sums across ranks.
        xp: array module of the gradients (``numpy`` or ``cupy``).
        bucket_bytes: a bucket is closed once it holds at least this many bytes.
    """

    def __init__(
        self,
        groups: Sequence[tuple[Any, Sequence[Any]]],
        comm: Communicator,
        xp: Any,
        bucket_bytes: int = DEFAULT_BUCKET_BYTES,
    ) -> None:
        if int(bucket_bytes) < 1:
            raise ValueError(f"GradientBuckets: bucket_bytes must be >= 1. Received: "
                             f"bucket_bytes={bucket_bytes}")
        self.comm = comm
        self.xp = xp
        self.buckets: list[Bucket] = []
        self._bucket_of_layer: dict[int, Bucket] = {}
        current: Bucket | None = None
        for layer, grads in groups:
            grads = [g for g in grads if g.size]
            if not grads:
                continue
            if current is None:
                current = Bucket(layer_ids=[], grads=[])
                self.buckets.append(current)
            current.layer_ids.append(id(layer))
            current.grads.extend(grads)
            self._bucket_of_layer[id(layer)] = current
            if current.nbytes >= bucket_bytes:
                current = None
        for bucket in self.buckets:
            self._allocate(bucket)
        self._weight = 1.0
        #: Buckets whose all-reduce started during a backward pass (overlapped), in total.
        self.started_early = 0

    def _allocate(self, bucket: Bucket) -> None:
        dtypes = {g.dtype for g in bucket.grads}
        if len(dtypes) != 1:
            names = ", ".join(sorted(str(d) for d in dtypes))
            raise ValueError(f"GradientBuckets: gradients of one bucket must share a dtype, "
                             f"received {names}")
        view = flat_view(bucket.grads, self.xp)
        if view is not None:
            bucket.buffer = view
            bucket.zero_copy = True
            return
        total = sum(int(g.size) for g in bucket.grads)
        bucket.buffer = self.xp.empty((total,), dtype=bucket.grads[0].dtype)
        offset = 0
        for g in bucket.grads:
            bucket.offsets.append(offset)
            offset += int(g.size)

    @property
    def nbytes(self) -> int:
        """Bytes all-reduced per step."""
        return int(sum(b.nbytes for b in self.buckets))

    def begin(self, weight: float) -> None:
        """Start a step whose local gradients count with ``weight`` in the global sum."""
        self._weight = float(weight)
        for bucket in self.buckets:
            bucket.remaining = len(bucket.layer_ids)
            bucket.pending = None

    def layer_done(self, layer: Any) -> None:
        """``layer`` finished its backward pass: start its bucket if it is now complete."""
        bucket = self._bucket_of_layer.get(id(layer))
        if bucket is not None and bucket.pending is None:
            bucket.remaining -= 1
            if bucket.remaining <= 0:
                self._start(bucket)
                self.started_early += 1
        for other in self.buckets:  # MPI progresses inside MPI calls: poke in-flight ones
            if other.pending is not None and other is not bucket:
                other.pending.test()

    def _start(self, bucket: Bucket) -> None:
        xp = self.xp
        buf = bucket.buffer
        weight = self._weight
        if bucket.zero_copy:
            if weight != 1.0:
                buf *= weight
        else:
            for g, offset in zip(bucket.grads, bucket.offsets, strict=True):
                segment = buf[offset:offset + g.size]
                if weight == 1.0:
                    xp.copyto(segment, g.reshape(-1))
                else:
                    xp.multiply(g.reshape(-1), weight, out=segment)
        bucket.pending = self.comm.iallreduce_(buf)

    def finish(self) -> None:
        """Start the buckets not started yet, wait for all, write the sums into the grads."""
        for bucket in self.buckets:
            if bucket.pending is None:
                self._start(bucket)
        for bucket in self.buckets:
            bucket.pending.wait()
            if not bucket.zero_copy:
                buf = bucket.buffer
                for g, offset in zip(bucket.grads, bucket.offsets, strict=True):
                    self.xp.copyto(g, buf[offset:offset + g.size].reshape(g.shape))
            bucket.pending = None


def array_address(a: Any) -> int:
    """Address of the first element of a NumPy or CuPy array."""
    if isinstance(a, np.ndarray):
        return int(a.__array_interface__["data"][0])
    return int(a.data.ptr)


def _root(a: Any) -> Any:
    while getattr(a, "base", None) is not None and hasattr(a.base, "shape"):
        a = a.base
    return a


def flat_view(arrays: Sequence[Any], xp: Any) -> Any:
    """A 1-D view spanning ``arrays`` if they are adjacent C-contiguous views of one array.

    Returns None when they are not (separate allocations, gaps, mixed dtypes).
    """
    if not arrays:
        return None
    root = _root(arrays[0])
    dtype = arrays[0].dtype
    for a in arrays:
        if a.dtype != dtype or not a.flags.c_contiguous or _root(a) is not root:
            return None
    if root is arrays[0] and len(arrays) > 1:
        return None
    if not root.flags.c_contiguous or root.dtype != dtype:
        return None
    ordered = sorted(arrays, key=array_address)
    for before, after in zip(ordered, ordered[1:], strict=False):
        if array_address(before) + before.nbytes != array_address(after):
            return None
    start = (array_address(ordered[0]) - array_address(root)) // dtype.itemsize
    total = sum(int(a.size) for a in arrays)
    return root.reshape(-1)[start:start + total]
