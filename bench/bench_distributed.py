"""Step time and communication share of data-parallel training, at 1 and N ranks.

Not a pytest-benchmark suite: it runs under MPI, one process per rank::

    python bench/bench_distributed.py                      # 1 process, no MPI job
    mpiexec -n 1 python bench/bench_distributed.py
    mpiexec -n 2 python bench/bench_distributed.py

The model is the MLP 784-512-512-10 (ReLU, softmax, Adam, float32) on random MNIST-shaped
data; every global batch size in ``--batch`` is timed. Each rank gets ``cores / ranks``
BLAS and Numba threads (unless OMP/OPENBLAS/NUMBA_NUM_THREADS are set), so 1 rank and 2
ranks use the same cores. Rank 0 prints one row per batch size:

- ``step ms``: median wall time of one training step (the global batch) over the timed steps;
- ``samples/s``: global batch / step time;
- ``comm ms``: time per step inside MPI calls (starting, progressing and waiting for the
  gradient all-reduces, plus the loss all-reduce) -- the communication share is
  ``comm ms / step ms``;
- ``exposed ms``: time per step spent in ``reduce_gradients`` waiting for the sums after
  the backward pass (communication not hidden behind computation);
- ``MB/step``: gradient bytes all-reduced per step.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

_RANKS = int(os.environ.get("PMI_SIZE", os.environ.get("OMPI_COMM_WORLD_SIZE", "1")))
_THREADS = str(max(1, (os.cpu_count() or 1) // _RANKS))
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, _THREADS)

import numpy as np  # noqa: E402  (thread counts must be set first)

#: Layer sizes of the benchmarked MLP.
MLP = (784, 512, 512, 10)
WARMUP_STEPS = 3
TIMED_STEPS = 15


def build(backend: str, dtype: str):
    """The MLP 784-512-512-10, compiled with Adam and sparse cross-entropy."""
    from fastnn import Dense, Sequential

    model = Sequential(backend=backend, dtype=dtype, seed=0, name="mlp")
    model.add(Dense(MLP[1], activation="relu", input_dim=MLP[0]))
    for units in MLP[2:-1]:
        model.add(Dense(units, activation="relu"))
    model.add(Dense(MLP[-1], activation="softmax"))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


class StepTimer:
    """Callback recording the wall time of every training step."""

    def __init__(self) -> None:
        from fastnn.callbacks import Callback

        outer = self
        self.times: list[float] = []
        self.comm: list[float] = []
        self.exposed: list[float] = []
        self.strategy = None

        class _Hook(Callback):
            def on_train_batch_begin(self, batch, logs=None):
                outer._start = time.perf_counter()
                outer._comm0 = outer._comm_now()
                outer._wait0 = outer._wait_now()

            def on_train_batch_end(self, batch, logs=None):
                outer.times.append(time.perf_counter() - outer._start)
                outer.comm.append(outer._comm_now() - outer._comm0)
                outer.exposed.append(outer._wait_now() - outer._wait0)

        self.callback = _Hook()

    def _comm_now(self) -> float:
        return self.strategy.comm_seconds if self.strategy is not None else 0.0

    def _wait_now(self) -> float:
        return self.strategy.reduce_seconds if self.strategy is not None else 0.0


def run_one(batch: int, backend: str, dtype: str, distributed: bool,
            strategy_kwargs: dict | None = None) -> dict:
    """Time ``TIMED_STEPS`` steps of global batch ``batch``; returns medians per step."""
    from fastnn.distributed import DataParallel

    model = build(backend, dtype)
    steps = WARMUP_STEPS + TIMED_STEPS
    rng = np.random.default_rng(0)
    x = rng.random((batch * steps, MLP[0]), dtype=np.float32)
    y = rng.integers(0, MLP[-1], size=batch * steps)
    timer = StepTimer()
    strategy = DataParallel(**(strategy_kwargs or {})) if distributed else None
    timer.strategy = strategy
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=True,
              callbacks=[timer.callback], distributed=strategy)
    sl = slice(WARMUP_STEPS, None)
    grad_bytes = strategy.buckets.nbytes if strategy is not None else 0
    return {
        "step_s": float(np.median(timer.times[sl])),
        "comm_s": float(np.median(timer.comm[sl])),
        "exposed_s": float(np.median(timer.exposed[sl])),
        "grad_bytes": grad_bytes,
        "buckets": len(strategy.buckets.buckets) if strategy is not None else 0,
    }


def allreduce_table(comm, repeats: int = 30) -> list[tuple[int, float]]:
    """Median seconds of an in-place float32 Allreduce for sizes 4 kB .. 16 MB."""
    rows = []
    for nbytes in (4_000, 40_000, 400_000, 2_680_000, 16_000_000):
        buf = np.ones(nbytes // 4, dtype=np.float32)
        times = []
        for _ in range(repeats):
            comm.barrier()
            start = time.perf_counter()
            comm.allreduce_(buf)
            times.append(time.perf_counter() - start)
        rows.append((nbytes, float(np.median(times))))
    return rows


def main(argv: list[str] | None = None) -> int:
    """Parse options, time every batch size, print the table on rank 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[128, 1024],
                        help="global batch sizes (default: 128 1024)")
    parser.add_argument("--backend", default="numpy", help="numpy or numba (default: numpy)")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--local", action="store_true",
                        help="train without DataParallel (the single-process baseline)")
    parser.add_argument("--bucket-mb", type=float, default=None,
                        help="all-reduce bucket size in MB (default: DataParallel's, 1 MiB)")
    parser.add_argument("--allreduce", action="store_true",
                        help="time only MPI Allreduce of 4 kB .. 16 MB (the cost model's data)")
    parser.add_argument("--no-overlap", action="store_true",
                        help="start every all-reduce after the backward pass")
    args = parser.parse_args(argv)
    kwargs: dict = {"overlap": not args.no_overlap}
    if args.bucket_mb is not None:
        kwargs["bucket_bytes"] = max(1, int(args.bucket_mb * 1e6))

    distributed = not args.local
    rank, size = 0, 1
    if distributed:
        from fastnn.distributed import MPICommunicator

        comm = MPICommunicator()
        rank, size = comm.rank, comm.size
    if args.allreduce:
        if not distributed:
            parser.error("--allreduce needs MPI (drop --local)")
        table = allreduce_table(comm)
        if rank == 0:
            print(f"MPI Allreduce (sum, in place, float32) on {size} rank(s):")
            for nbytes, seconds in table:
                print(f"{nbytes / 1e6:>8.3f} MB {1e3 * seconds:>8.3f} ms "
                      f"{nbytes / seconds / 1e9:>6.2f} GB/s")
        return 0
    rows = [(b, run_one(b, args.backend, args.dtype, distributed, kwargs)) for b in args.batch]
    if rank != 0:
        return 0
    from fastnn.cli import _cpu_model

    mode = (f"DataParallel, {size} rank(s), buckets {args.bucket_mb or 1.05} MB, overlap "
            f"{'off' if args.no_overlap else 'on'}" if distributed else "no DataParallel (local)")
    print(f"MLP {'-'.join(map(str, MLP))}, {args.backend}, {args.dtype}, Adam; {mode}; "
          f"{os.environ['OPENBLAS_NUM_THREADS']} thread(s) per rank; {_cpu_model()}")
    print(f"{'batch':>6} {'step ms':>9} {'samples/s':>10} {'comm ms':>8} {'comm %':>7} "
          f"{'exposed ms':>10} {'MB/step':>8}")
    for batch, r in rows:
        share = 100.0 * r["comm_s"] / r["step_s"] if r["step_s"] else 0.0
        print(f"{batch:>6} {1e3 * r['step_s']:>9.2f} {batch / r['step_s']:>10.0f} "
              f"{1e3 * r['comm_s']:>8.2f} {share:>6.1f}% {1e3 * r['exposed_s']:>10.2f} "
              f"{r['grad_bytes'] / 1e6:>8.2f}")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
