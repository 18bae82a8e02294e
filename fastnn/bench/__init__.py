"""fastnn's benchmark instruments: the sampler, the case builders of each suite, results.

Modules, one concept each:

- :mod:`~fastnn.bench.timing`: the sampler (warm-up, synchronize, settle, median + IQR);
- :mod:`~fastnn.bench.case`: a case and its contenders;
- :mod:`~fastnn.bench.ops`, :mod:`~fastnn.bench.mlp`, :mod:`~fastnn.bench.gradient`: the
  suites' case builders;
- :mod:`~fastnn.bench.peers`: PyTorch as an optional peer;
- :mod:`~fastnn.bench.runner`: runs cases side by side into results;
- :mod:`~fastnn.bench.results`: result rows, ratios, the table and JSON;
- :mod:`~fastnn.bench.env`: the machine header (CPU, threads, ``OPENBLAS_CORETYPE``);
- :mod:`~fastnn.bench.plot`: the PNG of time against size.

The ``fastnn bench`` command (:mod:`fastnn.cli_bench`) and the pytest-benchmark suites in
``bench/`` are built on these.
"""

from __future__ import annotations

from fastnn.bench.case import Case, Contender, Work
from fastnn.bench.results import Result, add_ratios, format_table, write_json
from fastnn.bench.runner import run_case, run_cases
from fastnn.bench.timing import Timing, measure, measure_interleaved

#: The suites of ``fastnn bench --suite``.
SUITES = ("ops", "mlp", "gradient")

__all__ = [
    "SUITES",
    "Case",
    "Contender",
    "Result",
    "Timing",
    "Work",
    "add_ratios",
    "format_table",
    "measure",
    "measure_interleaved",
    "run_case",
    "run_cases",
    "write_json",
]
