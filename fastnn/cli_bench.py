"""``fastnn bench``: run the benchmark suites and print the side-by-side table.

Examples::

    fastnn bench --suite mlp --compare torch
    fastnn bench --suite ops --backends numpy,numba --sizes 64,256,1024 --plot ops.png
    fastnn bench --suite gradient --json gradient.json

Every table comes with a header naming the CPU, the thread counts and ``OPENBLAS_CORETYPE``
(reported, never changed). Ratios are ``x BASE`` = how many times faster than BASE, measured
in the same process, interleaved.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

from fastnn import cli

SUITE_CHOICES = ("ops", "mlp", "gradient", "all")
DEFAULT_SUITE = "mlp"
DEFAULT_REPEAT = 7
PEERS = ("torch",)
_SUFFIXES = {"k": 1_000, "m": 1_000_000}


def parse_sizes(text: str) -> list[int]:
    """``"1,32,1k,10M"`` -> ``[1, 32, 1000, 10000000]``.

    Raises:
        argparse.ArgumentTypeError: an entry is not a positive integer (k/M suffix allowed).
    """
    sizes = []
    for part in text.split(","):
        part = part.strip()
        scale = _SUFFIXES.get(part[-1:].lower(), 1) if part else 1
        digits = part[:-1] if scale != 1 else part
        if not digits.isdigit() or int(digits) * scale < 1:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated positive integers such as 1,32,128 or 10M, "
                f"received {text!r}"
            )
        sizes.append(int(digits) * scale)
    return sizes


def _names(text: str, valid: tuple[str, ...], what: str) -> list[str]:
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in valid]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(bad) or repr(text)}; valid: {', '.join(valid)}"
        )
    return names


def _backends(text: str) -> list[str]:
    from fastnn.backends import NAMES

    return _names(text, NAMES, "backend")


def _peers(text: str) -> list[str]:
    return _names(text, PEERS, "peer")


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number >= 0, received {text!r}") from None
    if not value >= 0.0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, received {text!r}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    """Options of ``fastnn bench``."""
    parser.add_argument("--suite", choices=SUITE_CHOICES, default=DEFAULT_SUITE,
                        help="ops: hot ops and optimizer updates; mlp: one training step of "
                             "MLP 784-512-512-10; gradient: backprop vs numerical "
                             "differentiation (default: %(default)s)")
    parser.add_argument("--backends", type=_backends, default=None, metavar="NAMES",
                        help="comma-separated fastnn backends (default: every available one)")
    parser.add_argument("--sizes", type=parse_sizes, default=None, metavar="SIZES",
                        help="mlp: batch sizes (default 1,32,128,1024); ops: rows N of the "
                             "batch-shaped ops (default: each op's own); gradient: minibatch "
                             "sizes (default 100)")
    parser.add_argument("--params", type=parse_sizes, default=None, metavar="COUNTS",
                        help="ops: parameter counts of the optimizer updates (default 10M)")
    parser.add_argument("--compare", type=_peers, default=[], metavar="PEERS",
                        help="also run PyTorch eager (CPU, and CUDA when present) side by "
                             "side: --compare torch")
    parser.add_argument("--repeat", type=cli._positive_int, default=DEFAULT_REPEAT,
                        help="timed samples per contender (default: %(default)s)")
    parser.add_argument("--settle", type=_non_negative_float, default=None, metavar="SECONDS",
                        help="sleep before each timed sample so idle thread pools stop "
                             "spinning (default 0.2)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="dtype of the ops and mlp suites (gradient: always float64)")
    parser.add_argument("--sample", type=cli._positive_int, default=None,
                        help="gradient: coordinates differentiated numerically for "
                             "784-100-10, then extrapolated (default 500)")
    parser.add_argument("--steps", type=cli._non_negative_int, default=None,
                        help="gradient: SGD steps of the whole-training comparison "
                             "(default 20; 0 skips it)")
    parser.add_argument("--json", metavar="PATH", default=None,
                        help="also write the header and every result as JSON")
    parser.add_argument("--plot", metavar="PATH", default=None,
                        help="also write a PNG of time against size per backend, marking "
                             "where numba/cupy start to beat numpy (needs matplotlib)")
    parser.add_argument("--quiet", "-q", action="store_true",
                        help="no progress lines on stderr")


def _resolve_backends(requested: list[str] | None) -> list[str]:
    from fastnn.backends import available, unavailable_reason

    if requested is None:
        return available()
    for name in requested:
        reason = unavailable_reason(name)
        if reason is not None:
            raise cli.CLIError(f"--backends {name}: {reason}")
    return list(dict.fromkeys(requested))


def _check_plot_dependency() -> None:
    try:
        importlib.import_module("matplotlib")
    except ImportError as exc:
        raise cli.CLIError(
            f"--plot needs matplotlib, which failed to import ({exc}); install it with "
            "`pip install matplotlib`, or leave out --plot"
        ) from exc


def run_suite(suite: str, args: argparse.Namespace, backends: list[str],
              progress: Any) -> tuple[list[Any], list[str], dict[str, str]]:
    """Rows of one suite, the ratio baselines and the unavailable baselines."""
    from fastnn.bench import add_ratios, run_cases
    from fastnn.bench.peers import torch_baselines
    from fastnn.bench.timing import SETTLE_S

    settle = SETTLE_S if args.settle is None else args.settle
    if suite == "gradient":
        from fastnn.bench import gradient

        rows = gradient.gradient_results(
            backends, args.sizes, args.repeat,
            sample=args.sample or gradient.DEFAULT_SAMPLE,
            steps=gradient.DEFAULT_TRAIN_STEPS if args.steps is None else args.steps,
            settle_s=settle, progress=progress,
        )
        return rows, [gradient.BASELINE], {}
    if suite == "ops":
        from fastnn.bench.ops import ops_cases

        cases = ops_cases(backends, args.sizes, args.params, args.compare, args.dtype)
    else:
        from fastnn.bench.mlp import mlp_cases

        cases = mlp_cases(backends, args.sizes, args.compare, args.dtype)
    rows = run_cases(cases, args.repeat, settle, progress=progress)
    peer_names, missing = torch_baselines(args.compare)
    baselines = ["numpy", *peer_names]
    add_ratios(rows, baselines, missing)
    return rows, baselines, missing


def _crossover_lines(rows: list[Any]) -> list[str]:
    from fastnn.bench.plot import crossovers

    lines = []
    for (family, name), size in crossovers(rows).items():
        sizes = sorted({r.size for r in rows if r.family == family})
        if len(sizes) < 2:
            continue
        where = f"from size {size} on" if size is not None else "at no measured size"
        lines.append(f"crossover: {name} beats numpy on '{family}' {where}")
    return lines


def run_bench(args: argparse.Namespace) -> int:
    """``fastnn bench``: run the chosen suites, print header and tables, write JSON/PNG."""
    from fastnn.bench import format_table, write_json
    from fastnn.bench.env import environment, format_header

    if args.plot is not None:
        _check_plot_dependency()
    backends = _resolve_backends(args.backends)
    if not backends:
        raise cli.CLIError("no fastnn backend can run here; see `fastnn info`")
    out = sys.stdout

    def progress(text: str) -> None:
        if not args.quiet:
            print(f"running {text} ...", file=sys.stderr, flush=True)

    env = environment(backends)
    print(format_header(env), file=out)
    suites = ["ops", "mlp", "gradient"] if args.suite == "all" else [args.suite]
    all_rows = []
    for suite in suites:
        rows, baselines, _ = run_suite(suite, args, backends, progress)
        all_rows.extend(rows)
        print(f"\n== suite {suite} (median of {args.repeat} samples; x BASE = times faster "
              f"than BASE; load average now {env_load()}) ==", file=out)
        print(format_table(rows, baselines), file=out)
        for line in _crossover_lines(rows):
            print(line, file=out)
    out.flush()
    if args.json is not None:
        env["load_average_end"] = env_load()
        write_json(args.json, env, all_rows, command=sys.argv)
        print(f"wrote {args.json}", file=out)
    if args.plot is not None:
        from fastnn.bench.plot import plot_results

        plot_results(all_rows, args.plot, title=f"fastnn bench on {env['cpu']}")
        print(f"wrote {args.plot}", file=out)
    return cli.EXIT_OK


def env_load() -> str:
    """The load average now (1, 5, 15 minutes)."""
    from fastnn.bench.env import load_average

    return load_average()


cli.register_command(
    "bench", run_bench, configure,
    help="run the benchmark suites (ops, mlp, gradient) and print a side-by-side table",
)

__all__ = ["configure", "env_load", "parse_sizes", "run_bench", "run_suite"]
