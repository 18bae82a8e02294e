"""One training step of MLP 784-512-512-10 (float32, random data): fastnn and PyTorch eager.

Cases come from :mod:`fastnn.bench.mlp` (the ``fastnn bench --suite mlp`` builders): batch
sizes 1, 32, 128, 1024, SGD with momentum 0.9 and Adam; each fastnn backend steps through
``Sequential.train_on_batch`` (one step of ``fit``), torch through ``zero_grad``, forward,
backward, ``step`` (default and ``fused=True``), from the same initial weights. At B=1024
the ``numpy-sgemm`` contender times the step's matrix products alone (the FLOP-rate
reference of issue 7). Run::

    pytest bench/bench_mlp.py --benchmark-only
"""

from __future__ import annotations

import functools

import pytest

from fastnn.backends import NAMES, unavailable_reason
from fastnn.bench import mlp
from fastnn.bench.pedantic import contender_or_skip, run_contender
from fastnn.bench.peers import FUSED_SUFFIX, TORCH_CPU, TORCH_CUDA

DTYPE = "float32"
ROUNDS = 10
COMPARE = ["torch"]
SGEMM_BATCH = 1024
CONTENDERS = [*NAMES, TORCH_CPU, TORCH_CPU + FUSED_SUFFIX, TORCH_CUDA,
              TORCH_CUDA + FUSED_SUFFIX, mlp.SGEMM]


@functools.lru_cache(maxsize=1)
def _case(batch: int, optimizer: str):
    backends = [name for name in NAMES if unavailable_reason(name) is None]
    return mlp.mlp_case(batch, optimizer, backends, COMPARE, DTYPE,
                        sgemm=batch == SGEMM_BATCH)


@pytest.mark.parametrize("contender", CONTENDERS)
@pytest.mark.parametrize("batch", mlp.DEFAULT_BATCHES)
@pytest.mark.parametrize("optimizer", list(mlp.OPTIMIZERS))
def test_mlp_step(benchmark, optimizer, batch, contender):
    """One contender's training step at one batch size with one optimizer."""
    if contender == mlp.SGEMM and optimizer != next(iter(mlp.OPTIMIZERS)):
        pytest.skip("the sgemm reference does not depend on the optimizer: run once")
    case = _case(batch, optimizer)
    median = run_contender(benchmark, contender_or_skip(case, contender), ROUNDS, case=case)
    benchmark.extra_info["samples_per_s"] = batch / median if median > 0 else None
    if case.gemm_flops is not None:
        benchmark.extra_info["gemm_gflops_per_s"] = case.gemm_flops / median / 1e9
