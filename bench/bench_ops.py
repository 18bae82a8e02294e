"""Hot ops and optimizer updates: every backend and PyTorch eager, one benchmark each.

Cases come from :mod:`fastnn.bench.ops` (the ``fastnn bench --suite ops`` builders): Dense
784->512 forward + backward, ReLU / sigmoid forward + backward, softmax, fused
softmax-cross-entropy at 256x50000 and 1024x10, and one update of every optimizer on
10 M float32 parameters; torch's ``fused=True`` optimizers too. Run::

    pytest bench/bench_ops.py --benchmark-only

Each group is one case; contenders that cannot run here skip with their reason. Data are
made outside the timed call, Numba compiles in the warm-up, every round is preceded by a
0.2 s settle and an untimed call (see :mod:`fastnn.bench.pedantic`).
"""

from __future__ import annotations

import functools

import pytest

from fastnn.backends import NAMES, unavailable_reason
from fastnn.bench import ops
from fastnn.bench.pedantic import contender_or_skip, run_contender
from fastnn.bench.peers import FUSED_SUFFIX, TORCH_CPU, TORCH_CUDA

DTYPE = "float32"
ROUNDS = 10
PARAMS = 10_000_000
COMPARE = ["torch"]

#: case id -> builder of the case (backends, compare).
CASES = {
    "dense-128": lambda b: ops.dense_case(128, b, COMPARE, DTYPE),
    "dense-1024": lambda b: ops.dense_case(1024, b, COMPARE, DTYPE),
    "relu-1024": lambda b: ops.activation_case("relu", 1024, b, COMPARE, DTYPE),
    "sigmoid-1024": lambda b: ops.activation_case("sigmoid", 1024, b, COMPARE, DTYPE),
    "softmax-1024x1000": lambda b: ops.softmax_case(1024, b, COMPARE, DTYPE),
    "softmax-ce-256x50000": lambda b: ops.softmax_ce_case(50000, 256, b, COMPARE, DTYPE),
    "softmax-ce-1024x10": lambda b: ops.softmax_ce_case(10, 1024, b, COMPARE, DTYPE),
    **{
        f"{spec.name}-10M": functools.partial(
            lambda b, s: ops.optimizer_case(s, PARAMS, b, COMPARE, DTYPE), s=spec
        )
        for spec in ops.OPTIMIZERS
    },
}
CONTENDERS = [*NAMES, TORCH_CPU, TORCH_CPU + FUSED_SUFFIX, TORCH_CUDA, TORCH_CUDA + FUSED_SUFFIX]


@functools.lru_cache(maxsize=1)
def _case(case_id: str):
    """The case with its host data (one case cached: tests of a case run together)."""
    backends = [name for name in NAMES if unavailable_reason(name) is None]
    return CASES[case_id](backends)


@pytest.mark.parametrize("contender", CONTENDERS)
@pytest.mark.parametrize("case_id", list(CASES))
def test_op(benchmark, case_id, contender):
    """One contender of one ops case."""
    case = _case(case_id)
    run_contender(benchmark, contender_or_skip(case, contender), ROUNDS, case=case)
