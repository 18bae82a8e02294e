"""Data-parallel training (fastnn.distributed) under ``mpiexec -n 2``, plus its logic in-process.

The multi-process tests start ``mpiexec -n 2 python tests/test_distributed.py worker ...``:
this file is also the worker script (see ``_worker_main`` at the bottom). They skip, with
the reason, when mpi4py or mpiexec is missing; ``pip install '.[dev]'`` (CI) installs both.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
THIS = Path(__file__).resolve()

#: Seconds within which the job must end after a rank is killed (the issue's bound).
KILL_DEADLINE_S = 60.0
#: Relative weight difference allowed between 2 ranks x B/2 and 1 process x B (float64).
EQUIVALENCE_RTOL = 1e-10
#: Test accuracy points the distributed CLI run may differ from the single-process run.
ACCURACY_POINTS = 0.01

# Equivalence problem: 61 samples, global batch 15 -> 4 batches of 15 (8 + 7 per rank) and
# a last batch of 1 (rank 1 gets no sample); 4 epochs = 20 steps.
EQ_SAMPLES, EQ_FEATURES, EQ_CLASSES, EQ_BATCH, EQ_EPOCHS = 61, 8, 3, 15, 4


def _mpi_skip_reason() -> str | None:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return ("mpi4py is not installed (pip install '.[distributed]' or '.[dev]' brings "
                "mpi4py and the mpich wheel)")
    if shutil.which("mpiexec") is None:
        return "mpiexec is not on PATH (pip install mpich brings it)"
    return None


needs_mpi = pytest.mark.skipif(_mpi_skip_reason() is not None,
                               reason=_mpi_skip_reason() or "")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    # Two ranks share this machine's cores: one compute thread each.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "NUMBA_NUM_THREADS"):
        env[var] = "1"
    env.pop("FASTNN_BACKEND", None)
    return env


def _mpiexec(ranks: int, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    cmd = ["mpiexec", "-n", str(ranks), sys.executable, *args]
    return subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)


def _worker(ranks: int, mode: str, *args: str, timeout: float = 120.0):
    return _mpiexec(ranks, str(THIS), "worker", mode, *args, timeout=timeout)


def _explain(done: subprocess.CompletedProcess) -> str:
    return f"exit status {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"


# -- multi-process tests ---------------------------------------------------------------------
@needs_mpi
def test_two_ranks_equal_one_process(tmp_path: Path) -> None:
    """2 ranks with B/2 each end with the weights of 1 process with B (SGD, Adam; numpy, numba).

    Also with one bucket per layer (overlapped all-reduce) and with an L2 regularizer
    (no overlap), a short last batch of one sample and an odd global batch.
    """
    out = tmp_path / "equivalence.json"
    done = _worker(2, "equivalence", str(out))
    assert done.returncode == 0, _explain(done)
    results = json.loads(out.read_text())
    cases = {(r["backend"], r["optimizer"], r["variant"]) for r in results}
    for backend in ("numpy", "numba"):
        for opt in ("sgd", "adam"):
            assert (backend, opt, "buckets=1MiB") in cases, sorted(cases)
    assert (("numpy", "adam", "optimizer state from rank 0") in cases), sorted(cases)
    for r in results:
        label = f"{r['backend']}/{r['optimizer']}/{r['variant']}"
        assert r["steps"] == 20, label
        assert r["weights_rel"] <= EQUIVALENCE_RTOL, (label, r)
        assert r["loss_rel"] <= EQUIVALENCE_RTOL, (label, r)
        assert r["accuracy_diff"] == 0.0, (label, r)
        assert r["ranks_identical"], (label, r)
        assert r["moved"] > 1e-3, (label, r)  # the weights did change: a real comparison
        if r["variant"] == "bucket per layer":  # 3 buckets, each started by its layer's hook
            assert (r["buckets"], r["started_early"]) == (3, 3 * r["steps"]), (label, r)
        if r["variant"] == "l2 regularizer":  # penalty gradients come after: no overlap
            assert r["started_early"] == 0, (label, r)
        if r["variant"] == "optimizer state from rank 0":  # 5 steps alone + 15 together
            assert r["iterations"] == 20, (label, r)


@needs_mpi
def test_model_mismatch_detected_at_start(tmp_path: Path) -> None:
    """Rank 1 builds a wider hidden layer: every rank raises an error naming rank 1."""
    out = tmp_path / "mismatch.txt"
    done = _worker(2, "mismatch", str(out), timeout=60)
    assert done.returncode == 0, _explain(done)
    message = out.read_text()
    assert "differs across ranks" in message
    assert "ranks [1] differ from rank 0" in message
    assert "units" in message and "17" in message and "16" in message


@needs_mpi
def test_killed_rank_ends_job_and_checkpoint_resumes(tmp_path: Path) -> None:
    """SIGKILL of rank 1 mid-epoch: the job ends within 60 s with an error; the checkpoint
    rank 0 wrote loads and training resumes from it."""
    ckpt = tmp_path / "ckpt.npz"
    stamp = tmp_path / "killed_at.txt"
    start = time.monotonic()
    done = _worker(2, "kill", str(ckpt), str(stamp), timeout=KILL_DEADLINE_S + 60)
    ended = time.time()
    assert done.returncode != 0, _explain(done)
    assert stamp.exists(), _explain(done)
    killed_at = float(stamp.read_text())
    assert ended - killed_at < KILL_DEADLINE_S, (ended - killed_at, _explain(done))
    assert time.monotonic() - start < KILL_DEADLINE_S + 30
    text = done.stdout + done.stderr
    assert "Killed" in text or "BAD TERMINATION" in text or "signal 9" in text, _explain(done)

    import fastnn
    from fastnn import io

    epochs_done = io.saved_epoch(ckpt)
    assert epochs_done >= 2  # rank 1 died in the third epoch
    model = fastnn.load_model(ckpt)
    assert model.epochs_completed == epochs_done
    x, y = _kill_data()
    history = model.fit(x, y, batch_size=50, epochs=epochs_done + 1,
                        initial_epoch=epochs_done, verbose=0)
    assert history.epoch == [epochs_done]
    assert np.isfinite(history.history["loss"][0])


@needs_mpi
def test_exception_on_one_rank_aborts_every_rank(tmp_path: Path) -> None:
    """An exception inside fit on rank 1 only: the job ends (MPI_Abort), naming rank 1."""
    start = time.monotonic()
    done = _worker(2, "raise", timeout=KILL_DEADLINE_S + 30)
    assert done.returncode != 0, _explain(done)
    assert time.monotonic() - start < KILL_DEADLINE_S
    assert "rank 1 of 2 failed, aborting every rank" in done.stderr, _explain(done)
    assert "RuntimeError: injected failure on rank 1" in done.stderr, _explain(done)


def _cli(*args: str, ranks: int | None = None) -> subprocess.CompletedProcess:
    cli_args = ["-m", "fastnn", "train", "--dataset", "digits", *args]
    if ranks is None:
        return subprocess.run([sys.executable, *cli_args], cwd=REPO, env=_env(),
                              capture_output=True, text=True, timeout=120, check=False)
    return _mpiexec(ranks, *cli_args)


def _test_accuracy(stdout: str) -> float:
    lines = [line for line in stdout.splitlines() if line.startswith("test accuracy:")]
    assert len(lines) == 1, stdout
    return float(lines[0].split()[2])


@needs_mpi
def test_cli_distributed_matches_single_process_and_prints_once() -> None:
    """``mpiexec -n 2 python -m fastnn train --distributed``: same accuracy, one copy of output."""
    single = _cli()
    assert single.returncode == 0, _explain(single)
    dist = _cli("--distributed", ranks=2)
    assert dist.returncode == 0, _explain(dist)
    assert abs(_test_accuracy(dist.stdout) - _test_accuracy(single.stdout)) <= ACCURACY_POINTS
    assert _test_accuracy(dist.stdout) >= 0.95
    lines = dist.stdout.splitlines()
    assert sum(line.startswith("fastnn ") and "digits (" in line for line in lines) == 1, lines
    assert sum(line.startswith("epoch  1/") for line in lines) == 1, lines
    assert sum(line.startswith("epoch 30/30") for line in lines) == 1, lines
    assert dist.stdout.count("distributed: 2 ranks") == 1, dist.stdout


# -- in-process tests of the logic (no MPI) ----------------------------------------------------
class FakeComm:
    """A communicator of ``size`` ranks in one process: rank ``rank``'s view, sums scaled."""

    def __init__(self, rank: int = 0, size: int = 2, distinct_gather: bool = False) -> None:
        self.rank, self.size = rank, size
        self.distinct_gather = distinct_gather
        self.reduced: list[Any] = []
        self.comm_seconds = 0.0
        self.bytes_reduced = 0

    def iallreduce_(self, buf):
        from fastnn.distributed.comm import Pending

        self.reduced.append(buf.copy())
        buf *= self.size  # every rank contributed the same values
        return Pending()

    def allreduce_(self, buf):
        self.iallreduce_(buf).wait()

    def bcast_(self, buf, root=0):
        pass

    def allgather(self, obj):
        if self.distinct_gather:  # e.g. (host, GPU) of each rank: rank r has device r
            return [(obj[0], r) for r in range(self.size)]
        return [obj] * self.size

    def bcast_obj(self, obj, root=0):
        return obj

    def allreduce_scalars(self, values):
        return np.asarray(values, dtype=np.float64) * self.size

    def describe(self):
        return f"fake rank {self.rank} of {self.size}"


@pytest.mark.parametrize("size", [2, 3, 4])
@pytest.mark.parametrize("total", [1, 2, 7, 15, 16])
def test_shard_batch_splits_each_global_batch_in_order(size: int, total: int) -> None:
    """The ranks' parts concatenate to the global batch; weights m_r/B sum to 1."""
    from fastnn.distributed import DataParallel
    from fastnn.distributed.buckets import GradientBuckets

    idx = np.arange(100, 100 + total)
    parts, weights = [], []
    for rank in range(size):
        dp = DataParallel(comm=FakeComm(rank, size))
        dp.buckets = GradientBuckets([], dp.comm, np)
        parts.append(dp.shard_batch(idx))
        weights.append(dp._weight)
    assert np.array_equal(np.concatenate(parts), idx)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    assert sum(weights) == pytest.approx(1.0, abs=1e-15)
    assert weights == pytest.approx([s / total for s in sizes])


def test_only_rank_0_runs_printing_and_file_writing_callbacks(tmp_path: Path) -> None:
    """Rank 1 drops ModelCheckpoint, CSVLogger and chief_only callbacks, and goes silent."""
    from fastnn import CSVLogger, EarlyStopping, ModelCheckpoint
    from fastnn.callbacks import Callback
    from fastnn.distributed import DataParallel

    class Printer(Callback):
        chief_only = True

    stop = EarlyStopping(patience=2)
    given = [ModelCheckpoint(str(tmp_path / "c.npz")), CSVLogger(str(tmp_path / "log.csv")),
             stop, Printer()]
    kept, verbose = DataParallel(comm=FakeComm(1, 2)).configure_callbacks(given, 1)
    assert kept == [stop] and verbose == 0
    kept, verbose = DataParallel(comm=FakeComm(0, 2)).configure_callbacks(given, 1)
    assert kept == given and verbose == 1


def test_buckets_pack_scale_and_unpack() -> None:
    """Separate gradient arrays: packed scaled by the weight, summed, copied back."""
    from fastnn.distributed.buckets import GradientBuckets

    rng = np.random.default_rng(0)
    layers = [object(), object(), object()]
    grads = [[rng.normal(size=(4, 3)), rng.normal(size=(3,))], [rng.normal(size=(5, 4))],
             [rng.normal(size=(2, 5))]]
    before = [[g.copy() for g in gs] for gs in grads]
    comm = FakeComm(0, 2)
    buckets = GradientBuckets(list(zip(layers, grads, strict=True)), comm, np,
                              bucket_bytes=100)
    assert [len(b.layer_ids) for b in buckets.buckets] == [1, 1, 1]
    # A lone array is reduced in place; two separate arrays are packed into a buffer.
    assert [b.zero_copy for b in buckets.buckets] == [False, True, True]
    buckets.begin(0.25)
    buckets.layer_done(layers[0])  # starts the first bucket during the "backward pass"
    assert len(comm.reduced) == 1
    np.testing.assert_array_equal(comm.reduced[0][:12], 0.25 * before[0][0].ravel())
    buckets.finish()
    assert len(comm.reduced) == 3
    for gs, bs in zip(grads, before, strict=True):
        for g, b in zip(gs, bs, strict=True):
            np.testing.assert_allclose(g, 0.5 * b, rtol=1e-15)  # 2 ranks x 0.25


def test_buckets_reduce_a_flat_gradient_buffer_in_place() -> None:
    """Gradients that are adjacent views of one flat buffer are reduced without a copy."""
    from fastnn.distributed.buckets import GradientBuckets, flat_view

    flat = np.arange(1.0, 18.0)
    a, b, c = flat[:12].reshape(4, 3), flat[12:15], flat[15:17]
    assert flat_view([a, b], np) is not None
    assert flat_view([a, c], np) is None  # a gap between them
    assert flat_view([np.ones(3), np.ones(3)], np) is None  # separate allocations
    layer_a, layer_b = object(), object()
    comm = FakeComm(0, 2)
    buckets = GradientBuckets([(layer_b, [c]), (layer_a, [a, b])], comm, np,
                              bucket_bytes=1 << 20)
    assert len(buckets.buckets) == 1 and buckets.buckets[0].zero_copy
    expected = flat[:17].copy()
    buckets.begin(0.5)
    buckets.finish()
    np.testing.assert_array_equal(flat[:17], expected)  # 2 ranks x 0.5 of the same values
    assert np.shares_memory(comm.reduced[0], flat) is False  # the fake copied what it saw


class _FakeStream:
    def __init__(self, ptr: int, log: list) -> None:
        self.ptr = ptr
        self.log = log

    def record(self):
        event = _FakeEvent(self.ptr)
        self.log.append(("record", self.ptr))
        return event

    def wait_event(self, event) -> None:
        self.log.append(("wait", self.ptr, event.stream_ptr))

    def synchronize(self) -> None:
        self.log.append(("sync", self.ptr))


class _FakeEvent:
    def __init__(self, stream_ptr: int) -> None:
        self.stream_ptr = stream_ptr
        self.done = True


class _FakeCupy:
    """What NCCLCommunicator uses of cupy: streams, events and the current device."""

    def __init__(self, device: int = 0) -> None:
        self.log: list = []
        compute = _FakeStream(7, self.log)
        log = self.log
        dev = device

        class _Cuda:
            @staticmethod
            def get_current_stream():
                return compute

            @staticmethod
            def Stream(non_blocking=False):
                return _FakeStream(99, log)

            @staticmethod
            def Device():
                return type("D", (), {"id": dev})()

        self.cuda = _Cuda


class _FakeNccl:
    NCCL_SUM = "sum"
    NCCL_FLOAT32 = "f32"
    NCCL_FLOAT64 = "f64"
    NCCL_FLOAT16 = "f16"
    NCCL_INT32 = "i32"
    NCCL_INT64 = "i64"

    def __init__(self) -> None:
        self.calls: list = []
        outer = self

        class _Comm:
            def __init__(self, size, uid, rank) -> None:
                outer.calls.append(("init", size, uid, rank))

            def allReduce(self, send, recv, count, dtype, op, stream):
                outer.calls.append(("allReduce", send, recv, count, dtype, op, stream))

            def bcast(self, buf, count, dtype, root, stream):
                outer.calls.append(("bcast", buf, count, dtype, root, stream))

        self.NcclCommunicator = _Comm

    def get_unique_id(self):
        return (1, 2, 3)


class _DeviceArray:
    """A stand-in for a contiguous cupy array (address, size, dtype)."""

    __module__ = "cupy._core.core"

    def __init__(self, n: int, dtype: str, ptr: int) -> None:
        self.size = n
        self.dtype = np.dtype(dtype)
        self.nbytes = n * self.dtype.itemsize
        self.shape = (n,)
        self.strides = (self.dtype.itemsize,)
        self.flags = type("F", (), {"c_contiguous": True})()
        self.data = type("P", (), {"ptr": ptr})()


def test_nccl_communicator_queues_on_its_stream_without_host_sync() -> None:
    """Unique id from rank 0 over the host comm; in-place allReduce on the comm stream after
    an event of the compute stream; wait = a device-side stream dependency."""
    from fastnn.distributed.nccl import NCCLCommunicator

    nccl, cupy = _FakeNccl(), _FakeCupy()
    comm = NCCLCommunicator(FakeComm(0, 2, distinct_gather=True), nccl=nccl, cupy=cupy)
    assert nccl.calls[0] == ("init", 2, (1, 2, 3), 0)
    buf = _DeviceArray(10, "float32", ptr=4096)
    pending = comm.iallreduce_(buf)
    assert nccl.calls[-1] == ("allReduce", 4096, 4096, 10, "f32", "sum", 99)
    assert ("wait", 99, 7) in cupy.log  # comm stream waits for the compute stream's event
    pending.wait()
    assert cupy.log[-1] == ("wait", 7, 99)  # compute stream waits for the reduction
    assert ("sync", 7) not in cupy.log and ("sync", 99) not in cupy.log
    comm.bcast_(_DeviceArray(3, "float64", ptr=8192), root=0)
    assert nccl.calls[-1] == ("bcast", 8192, 3, "f64", 0, 7)
    with pytest.raises(ValueError, match="int8"):
        comm.iallreduce_(_DeviceArray(3, "int8", ptr=1))


def test_nccl_communicator_rejects_two_ranks_on_one_gpu() -> None:
    """Two ranks reporting the same host and device: a clear error naming them."""
    from fastnn.distributed import DistributedError
    from fastnn.distributed.nccl import NCCLCommunicator

    with pytest.raises(DistributedError, match=r"ranks \[0, 1\] use the same GPU"):
        NCCLCommunicator(FakeComm(0, 2), nccl=_FakeNccl(), cupy=_FakeCupy())


def test_fit_rejects_a_bad_distributed_argument() -> None:
    """``distributed`` must be a bool, None or a strategy."""
    from fastnn import Dense, Sequential

    model = Sequential([Dense(2, input_dim=3)], dtype="float64")
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(TypeError, match="distributed must be True"):
        model.fit(np.zeros((4, 3)), np.zeros((4, 2)), distributed="yes", verbose=0)


# -- the worker, run under mpiexec -------------------------------------------------------------
def _eq_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(EQ_SAMPLES, EQ_FEATURES))
    y = rng.integers(0, EQ_CLASSES, size=EQ_SAMPLES)
    return x, y


def _eq_model(backend: str, optimizer: str, regularized: bool) -> Any:
    from fastnn import Dense, Sequential

    reg = {"kernel_regularizer": "l2"} if regularized else {}
    model = Sequential([
        Dense(16, activation="tanh", input_dim=EQ_FEATURES, **reg),
        Dense(12, activation="tanh"),
        Dense(EQ_CLASSES, activation="softmax"),
    ], backend=backend, dtype="float64", seed=3)
    lr = 0.1 if optimizer == "sgd" else 0.01
    from fastnn import optimizers

    opt = optimizers.get(optimizer, backend=model.backend)
    opt = type(opt)(learning_rate=lr, backend=model.backend)
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    scale = max(float(np.max(np.abs(a))), 1e-300)
    return float(np.max(np.abs(a - b))) / scale


def _worker_equivalence(out: str) -> None:
    from fastnn.distributed import DataParallel

    x, y = _eq_data()
    results = []
    variants = [("buckets=1MiB", {}, False), ("bucket per layer", {"bucket_bytes": 1}, False),
                ("l2 regularizer", {"bucket_bytes": 1}, True)]
    for backend in ("numpy", "numba"):
        for optimizer in ("sgd", "adam"):
            for variant, kwargs, regularized in variants:
                if regularized and optimizer == "adam":
                    continue
                ref = _eq_model(backend, optimizer, regularized)
                start = ref.get_weights()
                h_ref = ref.fit(x, y, batch_size=EQ_BATCH, epochs=EQ_EPOCHS, verbose=0, seed=5)
                model = _eq_model(backend, optimizer, regularized)
                dp = DataParallel(**kwargs)
                if dp.rank == 1:  # rank 0's initial weights must win: start elsewhere
                    model.set_weights([w + 1.0 for w in start])
                else:
                    model.set_weights(start)
                h = model.fit(x, y, batch_size=EQ_BATCH, epochs=EQ_EPOCHS, verbose=0, seed=5,
                              distributed=dp)
                weights = model.get_weights()
                gathered = dp.comm.allgather([w.tobytes() for w in weights])
                results.append({
                    "backend": backend, "optimizer": optimizer, "variant": variant,
                    "steps": dp.steps,
                    "weights_rel": max(_rel(a, b) for a, b in zip(ref.get_weights(), weights,
                                                                  strict=True)),
                    "loss_rel": max(abs(a - b) / abs(a) for a, b in zip(
                        h_ref.history["loss"], h.history["loss"], strict=True)),
                    "accuracy_diff": max(abs(a - b) for a, b in zip(
                        h_ref.history["accuracy"], h.history["accuracy"], strict=True)),
                    "ranks_identical": all(g == gathered[0] for g in gathered),
                    "moved": max(float(np.max(np.abs(a - b)))
                                 for a, b in zip(start, weights, strict=True)),
                    "buckets": len(dp.buckets.buckets),
                    "started_early": dp.buckets.started_early,
                })
    results.append(_optimizer_state_case(x, y))
    if dp.rank == 0:
        Path(out).write_text(json.dumps(results, indent=1))


def _optimizer_state_case(x: np.ndarray, y: np.ndarray) -> dict:
    """Rank 0 trained 1 epoch alone (Adam moments, step count, shuffling generator);
    rank 1 has a fresh model: the distributed fit must continue from rank 0's state."""
    from fastnn.distributed import DataParallel

    ref = _eq_model("numpy", "adam", False)
    start = ref.get_weights()
    ref.fit(x, y, batch_size=EQ_BATCH, epochs=1, verbose=0, seed=5)
    h_ref = ref.fit(x, y, batch_size=EQ_BATCH, epochs=EQ_EPOCHS, initial_epoch=1, verbose=0)
    model = _eq_model("numpy", "adam", False)
    dp = DataParallel(bucket_bytes=1)
    if dp.rank == 0:
        model.set_weights(start)
        model.fit(x, y, batch_size=EQ_BATCH, epochs=1, verbose=0, seed=5)
    h = model.fit(x, y, batch_size=EQ_BATCH, epochs=EQ_EPOCHS, initial_epoch=1, verbose=0,
                  distributed=dp)
    weights = model.get_weights()
    gathered = dp.comm.allgather([w.tobytes() for w in weights])
    return {
        "backend": "numpy", "optimizer": "adam", "variant": "optimizer state from rank 0",
        "steps": dp.steps + 5, "iterations": model.optimizer.iterations,
        "weights_rel": max(_rel(a, b) for a, b in zip(ref.get_weights(), weights,
                                                      strict=True)),
        "loss_rel": max(abs(a - b) / abs(a) for a, b in zip(
            h_ref.history["loss"], h.history["loss"], strict=True)),
        "accuracy_diff": max(abs(a - b) for a, b in zip(
            h_ref.history["accuracy"], h.history["accuracy"], strict=True)),
        "ranks_identical": all(g == gathered[0] for g in gathered),
        "moved": max(float(np.max(np.abs(a - b))) for a, b in zip(start, weights, strict=True)),
    }


def _worker_mismatch(out: str) -> None:
    from fastnn import Dense, Sequential
    from fastnn.distributed import DataParallel, DistributedError

    dp = DataParallel()
    hidden = 17 if dp.rank == 1 else 16
    model = Sequential([Dense(hidden, activation="relu", input_dim=4), Dense(2)],
                       dtype="float64", seed=0)
    model.compile(optimizer="sgd", loss="mse")
    try:
        model.fit(np.zeros((8, 4)), np.zeros((8, 2)), batch_size=4, verbose=0, distributed=dp)
    except DistributedError as exc:
        if dp.rank == 0:
            Path(out).write_text(str(exc))
        return
    sys.exit(3)  # no error: the test fails on the missing file / exit status


def _kill_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, 20)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0).astype(np.int64)
    return x, y


def _worker_kill(ckpt: str, stamp: str) -> None:
    from fastnn import Dense, LambdaCallback, ModelCheckpoint, Sequential
    from fastnn.distributed import DataParallel

    dp = DataParallel()
    model = Sequential([Dense(64, activation="relu", input_dim=20),
                        Dense(3, activation="softmax")], seed=0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    epoch_now = [0]

    def on_batch(batch: int, logs: Any = None) -> None:
        if dp.rank == 1 and epoch_now[0] == 2 and batch == 5:
            Path(stamp).write_text(repr(time.time()))
            os.kill(os.getpid(), signal.SIGKILL)

    callbacks = [ModelCheckpoint(ckpt),  # rank 0 only: DataParallel drops it elsewhere
                 LambdaCallback(on_epoch_begin=lambda e, logs=None: epoch_now.__setitem__(0, e),
                                on_train_batch_begin=on_batch)]
    x, y = _kill_data()
    model.fit(x, y, batch_size=50, epochs=10_000, verbose=0, callbacks=callbacks,
              distributed=dp)


def _worker_raise() -> None:
    from fastnn import Dense, LambdaCallback, Sequential
    from fastnn.distributed import DataParallel

    dp = DataParallel()

    def on_batch(batch: int, logs: Any = None) -> None:
        if dp.rank == 1 and batch == 3:
            raise RuntimeError("injected failure on rank 1")

    model = Sequential([Dense(8, activation="relu", input_dim=20), Dense(3)], seed=0)
    model.compile(optimizer="sgd", loss="mse")
    x, _ = _kill_data()
    model.fit(x, x[:, :3], batch_size=50, epochs=10_000, verbose=0, distributed=dp,
              callbacks=[LambdaCallback(on_train_batch_begin=on_batch)])


def _worker_main(argv: list[str]) -> None:
    mode, args = argv[0], argv[1:]
    {"equivalence": _worker_equivalence, "mismatch": _worker_mismatch,
     "kill": _worker_kill, "raise": _worker_raise}[mode](*args)


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "worker":
    _worker_main(sys.argv[2:])
