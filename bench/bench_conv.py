"""Conv2D forward + backward on every available backend and on PyTorch eager CPU, one run.

Shapes: N=32, C=16 -> F=32, 28x28, 3x3 kernel, padding "same", stride 1, float32; a layer
step as in training (activation buffers reused, input gradient computed).

Run::

    python -m pytest bench/bench_conv.py --benchmark-only -p no:randomly -s

Each timed sample is preceded (untimed) by a 0.2 s sleep and one call, so that idle BLAS /
OpenMP workers of the previous library stop spinning before the sample (PERF-NOTES: thread
pools fight on two cores). Backends that cannot run here are skipped with their reason. With
``-s`` the numba / torch ratio of the medians is printed (and stored in ``extra_info``).
"""

from __future__ import annotations

import os
import platform
import time

import numpy as np
import pytest

import fastnn
from fastnn import Conv2D
from fastnn.backends import NAMES, unavailable_reason

N, C, F, H, W, K = 32, 16, 32, 28, 28, 3
DTYPE = "float32"
SETTLE_S = 0.2
ROUNDS = 30
GROUP = f"conv2d fwd+bwd N={N} C={C}->{F} {H}x{W} k={K} same {DTYPE}"

_medians: dict[str, float] = {}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _info(benchmark, backend: str, threads: int, device: str) -> None:
    benchmark.extra_info.update(
        backend=backend,
        dtype=DTYPE,
        threads=threads,
        device=device,
        cpu=_cpu_model(),
        input_shape=[N, C, H, W],
        weight_shape=[F, C, K, K],
        padding="same",
        openblas_coretype=os.environ.get("OPENBLAS_CORETYPE", ""),
    )


def _run(benchmark, name: str, step) -> None:
    step()  # warm-up: JIT compilation, first-touch of buffers, GPU module load
    step()

    def settle():
        time.sleep(SETTLE_S)
        step()
        return (), {}

    benchmark.pedantic(step, setup=settle, rounds=ROUNDS, iterations=1)
    _medians[name] = float(benchmark.stats.stats.median)
    if name in ("numba", "torch") and {"numba", "torch"} <= set(_medians):
        ratio = _medians["numba"] / _medians["torch"]
        benchmark.extra_info["numba_over_torch"] = round(ratio, 3)
        print(
            f"\nconv2d fwd+bwd medians on {_cpu_model()}: numba "
            f"{_medians['numba'] * 1e3:.2f} ms, torch {_medians['torch'] * 1e3:.2f} ms, "
            f"numba/torch = {ratio:.2f}"
        )


@pytest.fixture
def conv_data():
    """Host input, upstream gradient (float32), shared by every backend and by torch."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, C, H, W)).astype(DTYPE)
    dy = rng.standard_normal((N, F, H, W)).astype(DTYPE)
    return x, dy


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("backend_name", NAMES)
def test_conv2d_fastnn(benchmark, conv_data, backend_name):
    reason = unavailable_reason(backend_name)
    if reason is not None:
        pytest.skip(reason)
    be = fastnn.get_backend(backend_name)
    layer = Conv2D(F, K, padding="same", backend=be, dtype=DTYPE)
    layer.build((C, H, W))
    layer.reuse_buffers = True  # as inside Sequential.fit
    x = be.asarray(conv_data[0])
    dy = be.asarray(conv_data[1])

    def step():
        layer.forward(x, training=True)
        layer.backward(dy)
        be.synchronize()

    _info(benchmark, backend_name, be.num_threads(), be.device)
    _run(benchmark, backend_name, step)


@pytest.mark.benchmark(group=GROUP)
def test_conv2d_torch(benchmark, conv_data):
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(conv_data[0]).requires_grad_()
    dy = torch.from_numpy(conv_data[1])
    conv = torch.nn.Conv2d(C, F, K, padding=1)

    def step():
        x.grad = None
        conv.zero_grad(set_to_none=True)
        conv(x).backward(dy)

    _info(benchmark, "torch", torch.get_num_threads(), f"cpu (torch {torch.__version__})")
    _run(benchmark, "torch", step)
