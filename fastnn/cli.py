"""The ``fastnn`` command line: ``fastnn train`` and ``fastnn info`` (and what others register).

Subcommands live in a registry, one function per subcommand, so other modules add their own
without editing this file::

    from fastnn import cli

    def _configure(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--repeat", type=int, default=5)

    def run_bench(args: argparse.Namespace) -> int:
        ...
        return 0

    cli.register_command("bench", run_bench, _configure, help="run the benchmarks")

and list the module in :data:`COMMAND_MODULES` so that it is imported when the parser is
built. Options of ``fastnn train`` that act around ``fit`` (plots, checkpoints, resuming,
distributed training) are added the same way with :func:`register_train_extension`.

Errors are reported as one line on stderr, ``fastnn: error: ...``, with a non-zero exit
status: 2 for a bad command line, 1 for anything that fails while running. Set the
environment variable ``FASTNN_DEBUG=1`` to get the Python traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np

from fastnn._version import __version__
from fastnn.callbacks import Callback

PROG = "fastnn"
DEBUG_ENV = "FASTNN_DEBUG"

# Exit statuses.
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# Defaults of ``fastnn train``: they reach >= 0.95 test accuracy on digits on every backend.
DEFAULT_DATASET = "digits"
DEFAULT_EPOCHS = 30
DEFAULT_BATCH_SIZE = 32
DEFAULT_OPTIMIZER = "adam"
DEFAULT_HIDDEN = "128,64"
DEFAULT_ACTIVATION = "relu"
DEFAULT_SEED = 0
DEFAULT_VALIDATION_SPLIT = 0.1
DATASETS = ("digits", "mnist")

# Seconds to wait for ``nvidia-smi`` in ``fastnn info``.
NVIDIA_SMI_TIMEOUT_S = 10.0


class CLIError(Exception):
    """A failure to report as one line on stderr with a non-zero exit status."""

    def __init__(self, message: str, status: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.status = status


# -- registries ---------------------------------------------------------------------------
@dataclass
class Command:
    """One subcommand: ``configure(parser)`` adds its options, ``run(args)`` returns a status."""

    name: str
    run: Callable[[argparse.Namespace], int]
    configure: Callable[[argparse.ArgumentParser], None] | None = None
    help: str = ""


@dataclass
class TrainExtension:
    """Options of ``fastnn train`` contributed by another module.

    ``configure(parser)`` adds options to the train parser; ``before_fit(args, model,
    fit_kwargs)`` may change the model or the keyword arguments of ``model.fit`` (add
    callbacks, set ``initial_epoch``, ...); ``after_fit(args, model, history)`` runs after
    training and evaluation.
    """

    name: str
    configure: Callable[[argparse.ArgumentParser], None] | None = None
    before_fit: Callable[[argparse.Namespace, Any, dict[str, Any]], None] | None = None
    after_fit: Callable[[argparse.Namespace, Any, Any], None] | None = None


COMMANDS: dict[str, Command] = {}
TRAIN_EXTENSIONS: dict[str, TrainExtension] = {}

#: Modules imported when the parser is built; each registers its commands or extensions.
COMMAND_MODULES: list[str] = ["fastnn.cli_checkpoint", "fastnn.cli_distributed",
                              "fastnn.cli_bench"]


def register_command(
    name: str,
    run: Callable[[argparse.Namespace], int],
    configure: Callable[[argparse.ArgumentParser], None] | None = None,
    help: str = "",
) -> Command:
    """Add subcommand ``name`` (``fastnn NAME ...``); a later registration replaces it."""
    command = Command(name=name, run=run, configure=configure, help=help)
    COMMANDS[name] = command
    return command


def register_train_extension(extension: TrainExtension) -> TrainExtension:
    """Add options and hooks to ``fastnn train`` (see :class:`TrainExtension`)."""
    TRAIN_EXTENSIONS[extension.name] = extension
    return extension


# -- argument parsing ---------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (no usage block)."""

    def error(self, message: str) -> NoReturn:
        """Print ``PROG: error: message`` on one line and exit with status 2."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer, received {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a non-negative integer, received {text!r}"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, received {text!r}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number in [0, 1), received {text!r}"
        ) from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), received {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, received {text!r}") from None
    if not np.isfinite(value) or value <= 0.0:
        raise argparse.ArgumentTypeError(f"expected a positive number, received {text!r}")
    return value


def parse_hidden(text: str) -> list[int]:
    """``"128,64"`` -> ``[128, 64]``; an empty string or ``"none"`` means no hidden layer.

    Raises:
        argparse.ArgumentTypeError: an entry is not a positive integer.
    """
    stripped = text.strip()
    if stripped == "" or stripped.lower() == "none":
        return []
    sizes = []
    for part in stripped.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated positive layer sizes such as 128,64, "
                f"received {text!r}"
            )
        sizes.append(int(part))
    return sizes


def build_parser() -> argparse.ArgumentParser:
    """The ``fastnn`` parser with one subparser per registered command."""
    for module in COMMAND_MODULES:
        importlib.import_module(module)
    parser = _Parser(
        prog=PROG,
        description="fastnn: train and inspect neural networks on NumPy, Numba and CuPy.",
    )
    parser.add_argument("--version", action="version", version=f"fastnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for command in COMMANDS.values():
        cmd_parser = sub.add_parser(command.name, help=command.help,
                                    description=command.help)
        if command.configure is not None:
            command.configure(cmd_parser)
        cmd_parser.set_defaults(_command=command)
    return parser


# -- fastnn train ---------------------------------------------------------------------------
def _configure_train(parser: argparse.ArgumentParser) -> None:
    from fastnn import optimizers
    from fastnn.backends import NAMES

    parser.add_argument("--dataset", choices=DATASETS, default=DEFAULT_DATASET,
                        help="digits: the 8x8 digits shipped with fastnn; mnist: IDX files "
                             "in --data-dir (default: %(default)s)")
    parser.add_argument("--data-dir", metavar="DIR", default=None,
                        help="folder with the four MNIST IDX files (raw or .gz), for "
                             "--dataset mnist")
    parser.add_argument("--backend", choices=NAMES, default=None,
                        help="array backend (default: $FASTNN_BACKEND, else numpy)")
    parser.add_argument("--epochs", type=_positive_int, default=DEFAULT_EPOCHS,
                        help="passes over the training data (default: %(default)s)")
    parser.add_argument("--batch-size", type=_positive_int, default=DEFAULT_BATCH_SIZE,
                        help="samples per training step (default: %(default)s)")
    parser.add_argument("--optimizer", choices=optimizers.names(), default=DEFAULT_OPTIMIZER,
                        help="optimizer (default: %(default)s)")
    parser.add_argument("--learning-rate", "--lr", type=_positive_float, default=None,
                        help="learning rate (default: the optimizer's, 0.001 for adam)")
    parser.add_argument("--hidden", type=parse_hidden, default=parse_hidden(DEFAULT_HIDDEN),
                        metavar="SIZES",
                        help=f"hidden layer sizes, comma-separated (default: {DEFAULT_HIDDEN}; "
                             "'none' for a linear softmax classifier)")
    parser.add_argument("--activation", default=DEFAULT_ACTIVATION,
                        help="activation of the hidden layers (default: %(default)s)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="float type of parameters and data (default: %(default)s)")
    parser.add_argument("--validation-split", type=_fraction, default=DEFAULT_VALIDATION_SPLIT,
                        help="share of the training data held out for validation "
                             "(default: %(default)s)")
    parser.add_argument("--seed", type=_non_negative_int, default=DEFAULT_SEED,
                        help="seed of the weights and the shuffling (default: %(default)s)")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="also print the model summary and a progress bar per epoch")
    parser.add_argument("--quiet", "-q", action="store_true",
                        help="print only the final test accuracy")
    for extension in TRAIN_EXTENSIONS.values():
        if extension.configure is not None:
            extension.configure(parser)


def _load_dataset(args: argparse.Namespace) -> tuple[Any, Any]:
    from fastnn import datasets

    if args.dataset == "digits":
        if args.data_dir is not None:
            raise CLIError("--data-dir is only used with --dataset mnist; the digits data "
                           "ships inside fastnn", EXIT_USAGE)
        return datasets.load_digits()
    if args.data_dir is None:
        raise CLIError("--dataset mnist needs --data-dir DIR, a folder holding "
                       "train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                       "t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (raw or .gz)",
                       EXIT_USAGE)
    return datasets.load_mnist(args.data_dir)


def build_classifier(
    n_features: int,
    n_classes: int,
    hidden: Sequence[int],
    activation: str,
    backend: Any,
    dtype: str,
    seed: int,
) -> Any:
    """An MLP ``n_features -> hidden... -> n_classes`` with a softmax output, not compiled."""
    from fastnn import Dense, Sequential

    model = Sequential(backend=backend, dtype=dtype, seed=seed, name="mlp")
    for i, units in enumerate(hidden):
        kwargs = {"input_dim": n_features} if i == 0 else {}
        model.add(Dense(units, activation=activation, **kwargs))
    out_kwargs = {"input_dim": n_features} if not hidden else {}
    model.add(Dense(n_classes, activation="softmax", **out_kwargs))
    return model


class EpochPrinter(Callback):
    """Prints one line per epoch: loss, accuracy, validation accuracy and time."""

    def __init__(self, epochs: int, stream: Any = None) -> None:
        super().__init__()
        self.epochs = epochs
        self.stream = stream

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Print the line of this epoch."""
        stream = self.stream if self.stream is not None else sys.stdout
        print(format_epoch(epoch, self.epochs, logs or {}), file=stream, flush=True)


def format_epoch(epoch: int, epochs: int, logs: dict[str, float]) -> str:
    """``epoch  3/30  loss 0.1234  accuracy 0.9700  val_accuracy 0.9650  time 0.02s``."""
    width = len(str(epochs))
    parts = [f"epoch {epoch + 1:>{width}}/{epochs}"]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        if key in logs:
            parts.append(f"{key} {logs[key]:.4f}")
    if "time" in logs:
        parts.append(f"time {logs['time']:.2f}s")
    return "  ".join(parts)


def run_train(args: argparse.Namespace) -> int:
    """``fastnn train``: fit an MLP on a data set, one line per epoch, then the test accuracy."""
    from fastnn import activations, optimizers
    from fastnn.backends import get_backend

    out = sys.stdout
    activation = activations.get(args.activation, where="--activation")
    backend = get_backend(args.backend)
    (x_train, y_train), (x_test, y_test) = _load_dataset(args)
    n_features = int(np.prod(x_train.shape[1:]))
    x_train = x_train.reshape(x_train.shape[0], n_features)
    x_test = x_test.reshape(x_test.shape[0], n_features)
    n_classes = int(max(y_train.max(), y_test.max())) + 1

    backend.seed(args.seed)
    model = build_classifier(n_features, n_classes, args.hidden, activation, backend,
                             args.dtype, args.seed)
    opt_kwargs = {} if args.learning_rate is None else {"learning_rate": args.learning_rate}
    optimizer = optimizers.get(args.optimizer, backend=backend)
    if opt_kwargs:
        optimizer = type(optimizer)(backend=backend, **opt_kwargs)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])

    layout = "-".join(str(d) for d in (n_features, *args.hidden, n_classes))
    if not args.quiet:
        print(
            f"fastnn {__version__}: {args.dataset} ({x_train.shape[0]} train, "
            f"{x_test.shape[0]} test samples), backend {backend.name} on {backend.device}, "
            f"MLP {layout} ({activation}, softmax), {optimizer.describe()}, "
            f"batch {args.batch_size}, {args.epochs} epochs, seed {args.seed}",
            file=out, flush=True,
        )
        if args.verbose:
            model.summary(print_fn=lambda text: print(text, file=out))

    # --verbose: fit's own progress bar and epoch line; otherwise one line per epoch.
    callbacks = [] if args.quiet or args.verbose else [EpochPrinter(args.epochs, out)]
    fit_kwargs: dict[str, Any] = {
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "validation_split": args.validation_split,
        "verbose": 1 if args.verbose and not args.quiet else 0,
        "callbacks": callbacks,
        "seed": args.seed,
    }
    for extension in TRAIN_EXTENSIONS.values():
        if extension.before_fit is not None:
            extension.before_fit(args, model, fit_kwargs)

    start = time.perf_counter()
    history = model.fit(x_train, y_train, **fit_kwargs)
    train_s = time.perf_counter() - start
    test_loss, test_accuracy = model.evaluate(x_test, y_test, batch_size=max(args.batch_size, 256))
    print(f"test accuracy: {test_accuracy:.4f} (test loss {test_loss:.4f}, "
          f"{x_test.shape[0]} samples; trained in {train_s:.2f}s on {backend.name})",
          file=out, flush=True)

    for extension in TRAIN_EXTENSIONS.values():
        if extension.after_fit is not None:
            extension.after_fit(args, model, history)
    return EXIT_OK


# -- fastnn info ----------------------------------------------------------------------------
def _blas_info() -> tuple[str, str]:
    """(BLAS in use, its thread count) from threadpoolctl, else NumPy's build config."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        threadpool_info = None
    if threadpool_info is not None:
        pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
        if pools:
            names = ", ".join(
                f"{p.get('internal_api')} {p.get('version') or ''}".strip() for p in pools
            )
            threads = ", ".join(str(p.get("num_threads")) for p in pools)
            return names, f"{threads} (threadpoolctl)"
    name = "unknown"
    try:
        config = np.show_config(mode="dicts")
        blas = config.get("Build Dependencies", {}).get("blas", {})
        if blas.get("name"):
            name = f"{blas['name']} {blas.get('version', '')}".strip() + " (numpy build config)"
    except Exception:  # older NumPy without mode="dicts"
        pass
    for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(var):
            return name, f"{os.environ[var]} (from {var})"
    cpus = os.cpu_count() or 1
    return name, f"probably {cpus} (one per CPU; install threadpoolctl to read it)"


def _numba_threads() -> str:
    try:
        import numba
    except Exception as exc:
        return f"n/a (numba not importable: {exc})"
    return (f"{numba.get_num_threads()} (NUMBA_NUM_THREADS={numba.config.NUMBA_NUM_THREADS}, "
            f"threading layer {numba.config.THREADING_LAYER})")


def _gpu_name(cupy_device: str | None) -> str:
    if cupy_device is not None:
        return cupy_device
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "none found (no usable CuPy device, no nvidia-smi)"
    try:
        done = subprocess.run(
            [smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
            text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown (nvidia-smi failed: {exc})"
    names = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or not names:
        return "none found (nvidia-smi lists no GPU)"
    return ", ".join(names) + " (from nvidia-smi; the cupy backend cannot use it)"


def _one_line(text: str) -> str:
    return " / ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _numba_gemm() -> str:
    """The numba backend's own GEMM: tile shape and the CPU LLVM compiles it for."""
    from fastnn.backends import unavailable_reason

    reason = unavailable_reason("numba")
    if reason is not None:
        return f"n/a ({_one_line(reason)})"
    from llvmlite import binding

    from fastnn.kernels.cpu import gemm

    return (f"{gemm.MR}x{gemm.panel_width(np.float32)} float32 micro-kernel, "
            f"compiled for {binding.get_host_cpu_name()}")


def run_info(args: argparse.Namespace) -> int:
    """``fastnn info``: version, backends, threads, BLAS and GPU of this machine."""
    from fastnn.backends import NAMES, current_backend_name, get_backend, unavailable_reason
    from fastnn.bench.env import cpu_model

    rows: list[tuple[str, str]] = [
        ("fastnn", f"{__version__} (distribution fastnn-dl)"),
        ("python", f"{platform.python_version()} ({sys.executable})"),
        ("numpy", np.__version__),
        ("platform", platform.platform()),
        ("cpu", f"{cpu_model()}, {os.cpu_count()} logical CPUs"),
    ]
    cupy_device = None
    for name in NAMES:
        reason = unavailable_reason(name)
        if reason is None:
            device = get_backend(name).device
            rows.append((f"backend {name}", f"available: {device}"))
            if name == "cupy":
                cupy_device = device
        else:
            rows.append((f"backend {name}", f"unavailable: {_one_line(reason)}"))
    try:
        default = current_backend_name()
    except ValueError as exc:
        default = f"invalid ({_one_line(exc)})"
    rows.append(("default backend", default))
    rows.append(("numba threads", _numba_threads()))
    rows.append(("numba gemm", _numba_gemm()))
    blas_name, blas_threads = _blas_info()
    rows.append(("blas", blas_name))
    rows.append(("blas threads", blas_threads))
    rows.append(("OPENBLAS_CORETYPE", os.environ.get("OPENBLAS_CORETYPE", "(not set)")))
    rows.append(("gpu", _gpu_name(cupy_device)))
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return EXIT_OK


register_command(
    "train", run_train, _configure_train,
    help="train an MLP classifier and print one line per epoch and the test accuracy",
)
register_command("info", run_info, None,
                 help="print the version, backends, threads, BLAS and GPU of this machine")


# -- entry point ----------------------------------------------------------------------------
def _report(message: str) -> None:
    print(f"{PROG}: error: {_one_line(message)}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``fastnn`` command line; returns the exit status."""
    debug = bool(os.environ.get(DEBUG_ENV))
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        command = getattr(args, "_command", None)
        if command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        return int(command.run(args) or EXIT_OK)
    except KeyboardInterrupt:
        if debug:
            raise
        _report("interrupted")
        return EXIT_INTERRUPTED
    except CLIError as exc:
        if debug:
            raise
        _report(str(exc))
        return exc.status
    except (ValueError, TypeError, OSError, RuntimeError, ArithmeticError, ImportError) as exc:
        # BackendUnavailableError, NotBuiltError are RuntimeErrors; DivergenceError is a
        # FloatingPointError; FileNotFoundError an OSError: all end as one line.
        if debug:
            raise
        _report(str(exc) or type(exc).__name__)
        return EXIT_FAILURE
    except Exception as exc:  # a bug in fastnn: still one line, the traceback on request
        if debug:
            raise
        _report(f"internal error {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 to see "
                "the traceback, and please report it)")
        return EXIT_FAILURE


__all__ = [
    "COMMANDS",
    "COMMAND_MODULES",
    "TRAIN_EXTENSIONS",
    "CLIError",
    "Command",
    "EpochPrinter",
    "TrainExtension",
    "build_classifier",
    "build_parser",
    "format_epoch",
    "main",
    "parse_hidden",
    "register_command",
    "register_train_extension",
    "run_info",
    "run_train",
]
