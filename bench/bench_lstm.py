"""LSTM forward + backward (N=32, T=50, D=128, H=256, float32): fastnn per backend, and
PyTorch's ``nn.LSTM`` eager on the CPU in the same run.

Two ways to run it:

- ``pytest bench/bench_lstm.py --benchmark-only`` (pytest-benchmark, group ``lstm-fwd-bwd``);
- ``python bench/bench_lstm.py [--repeats 15]``: interleaved rounds, medians and the ratio
  of every contender to torch, with the CPU model, thread counts and BLAS settings.

Every timed call is one training step of the layer alone: forward over the whole sequence
(``return_sequences=True``) and backward from a fixed upstream gradient, parameter
gradients included. Thread pools fight on small machines (PERF-NOTES): before each timed
sample the harness sleeps ``SETTLE_S`` and makes one untimed call of the same contender.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import pytest

import fastnn
from fastnn.backends import NAMES, unavailable_reason

N, T, D, H = 32, 50, 128, 256
DTYPE = "float32"
SETTLE_S = 0.2  # idle BLAS/OpenMP workers spin ~0.1 s after a call
SEED = 0


def make_data() -> tuple[np.ndarray, np.ndarray]:
    """Input (N, T, D) and upstream gradient (N, T, H), float32."""
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((N, T, D)).astype(DTYPE)
    dy = rng.standard_normal((N, T, H)).astype(DTYPE)
    return x, dy


def fastnn_step(backend_name: str, x: np.ndarray, dy: np.ndarray) -> Callable[[], None]:
    """One LSTM forward + backward on ``backend_name``, data already on the device."""
    be = fastnn.get_backend(backend_name)
    layer = fastnn.LSTM(H, return_sequences=True, backend=be, dtype=DTYPE)
    layer.reuse_buffers = True  # as inside Sequential.fit
    xd, dyd = be.asarray(x), be.asarray(dy)

    def run() -> None:
        layer.forward(xd, training=True)
        layer.backward(dyd)
        be.synchronize()

    run()  # JIT / kernel compilation outside the timings
    return run


def torch_step(x: np.ndarray, dy: np.ndarray) -> Callable[[], None]:
    """One ``torch.nn.LSTM`` forward + backward, eager, CPU."""
    import torch

    torch.manual_seed(SEED)
    net = torch.nn.LSTM(D, H, batch_first=True)
    xt = torch.from_numpy(x).requires_grad_(True)
    dyt = torch.from_numpy(dy)

    def run() -> None:
        net.zero_grad(set_to_none=True)
        xt.grad = None
        y, _ = net(xt)
        y.backward(dyt)

    run()
    return run


def settle(run: Callable[[], None]) -> None:
    """Let the other pools go idle, then warm this contender's own."""
    time.sleep(SETTLE_S)
    run()


def machine_info() -> dict[str, str]:
    """CPU model, thread counts and BLAS settings, for the report."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": str(os.cpu_count())}
    try:
        import numba

        info["numba_threads"] = str(numba.get_num_threads())
    except ImportError:
        pass
    try:
        import torch

        info["torch"] = f"{torch.__version__}, {torch.get_num_threads()} threads"
    except ImportError:
        pass
    info["OPENBLAS_CORETYPE"] = os.environ.get("OPENBLAS_CORETYPE", "(unset)")
    return info


# -- pytest-benchmark suite ------------------------------------------------------------------


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    """The benchmark's input and upstream gradient."""
    return make_data()


def _extra(benchmark, contender: str) -> None:
    benchmark.extra_info.update(
        {"contender": contender, "dtype": DTYPE, "shape": f"N={N} T={T} D={D} H={H}",
         **machine_info()}
    )


@pytest.mark.benchmark(group="lstm-fwd-bwd")
@pytest.mark.parametrize("backend_name", NAMES)
def test_fastnn_lstm_fwd_bwd(benchmark, data, backend_name):
    reason = unavailable_reason(backend_name)
    if reason is not None:
        pytest.skip(reason)
    run = fastnn_step(backend_name, *data)
    _extra(benchmark, f"fastnn-{backend_name}")
    benchmark.pedantic(run, setup=lambda: settle(run), rounds=10, iterations=1)


@pytest.mark.benchmark(group="lstm-fwd-bwd")
def test_torch_lstm_fwd_bwd(benchmark, data):
    pytest.importorskip("torch")
    run = torch_step(*data)
    _extra(benchmark, "torch-eager-cpu")
    benchmark.pedantic(run, setup=lambda: settle(run), rounds=10, iterations=1)


# -- script: interleaved medians and ratios --------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Time every available contender in interleaved rounds; print and return medians (s)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed samples per contender")
    args = parser.parse_args(argv)
    x, dy = make_data()
    contenders: dict[str, Callable[[], None]] = {}
    for name in NAMES:
        reason = unavailable_reason(name)
        if reason is None:
            contenders[f"fastnn-{name}"] = fastnn_step(name, x, dy)
        else:
            print(f"skip fastnn-{name}: {reason}")
    try:
        contenders["torch-eager-cpu"] = torch_step(x, dy)
    except ImportError:
        print("skip torch: not installed")
    samples: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(args.repeats):
        for name, run in contenders.items():
            settle(run)
            start = time.perf_counter()
            run()
            samples[name].append(time.perf_counter() - start)
    medians = {k: statistics.median(v) for k, v in samples.items()}
    print(f"LSTM forward+backward, N={N} T={T} D={D} H={H} {DTYPE}, "
          f"median of {args.repeats} interleaved samples")
    for key, value in machine_info().items():
        print(f"  {key}: {value}")
    torch_time = medians.get("torch-eager-cpu")
    for name, med in medians.items():
        spread = f"{min(samples[name]) * 1e3:.1f}-{max(samples[name]) * 1e3:.1f}"
        line = f"  {name:<18} {med * 1e3:8.2f} ms  (range {spread} ms)"
        if torch_time is not None and name != "torch-eager-cpu":
            line += f"  speed vs torch: {torch_time / med:.2f}x"
        print(line)
    return medians


if __name__ == "__main__":
    main()
