"""``fastnn train`` options around ``fit``: ``--checkpoint DIR [--resume]`` and ``--plot PNG``.

Registered with :func:`fastnn.cli.register_train_extension`; the module is listed in
``fastnn.cli.COMMAND_MODULES``.

- ``--checkpoint DIR`` saves ``DIR/checkpoint.npz`` atomically after every epoch: weights,
  optimizer state, random generator states and the history so far.
- ``--resume`` (with ``--checkpoint``) continues from that file: same command, same or more
  ``--epochs``; on the NumPy backend the result is bit-identical to an uninterrupted run.
- ``--plot PNG`` writes the loss and accuracy curves (needs matplotlib, the ``plot`` extra).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from fastnn import cli
from fastnn.callbacks import History, ModelCheckpoint

#: File name of the checkpoint inside ``--checkpoint DIR``.
CHECKPOINT_NAME = "checkpoint.npz"


def checkpoint_path(directory: str) -> str:
    """Path of the checkpoint file kept in ``directory``."""
    return os.path.join(directory, CHECKPOINT_NAME)


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", metavar="DIR", default=None,
                        help=f"save DIR/{CHECKPOINT_NAME} (atomically) after every epoch")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the checkpoint in --checkpoint DIR, if there is one")
    parser.add_argument("--plot", metavar="PNG", default=None,
                        help="write the loss/accuracy curves to this PNG (needs matplotlib)")


def _before_fit(args: argparse.Namespace, model: Any, fit_kwargs: dict[str, Any]) -> None:
    from fastnn import io

    args._previous_history = None
    if args.resume and not args.checkpoint:
        raise cli.CLIError("--resume needs --checkpoint DIR (where the checkpoint is)",
                           status=cli.EXIT_USAGE)
    if args.plot:
        from fastnn.plot import _require_matplotlib

        try:
            _require_matplotlib()
        except ImportError as exc:
            raise cli.CLIError(str(exc)) from None
    if not args.checkpoint:
        return
    os.makedirs(args.checkpoint, exist_ok=True)
    path = checkpoint_path(args.checkpoint)
    quiet = getattr(args, "quiet", False)
    if args.resume and os.path.exists(path):
        try:
            done = io.restore(model, path)
        except (ValueError, OSError) as exc:
            raise cli.CLIError(f"cannot resume from {path}: {exc}") from None
        args._previous_history = model.history
        fit_kwargs["initial_epoch"] = done
        fit_kwargs["seed"] = None  # keep the restored shuffling generator
        if not quiet:
            print(f"resuming from {path}: {done} epochs done", file=sys.stdout, flush=True)
    elif args.resume and not quiet:
        print(f"no checkpoint in {args.checkpoint}: starting from scratch", flush=True)
    fit_kwargs["callbacks"] = [*fit_kwargs.get("callbacks", []), ModelCheckpoint(path)]


def _merged(previous: History | None, history: History) -> History:
    if previous is None or not previous.epoch:
        return history
    merged = History()
    merged.epoch = [*previous.epoch, *history.epoch]
    for key in {*previous.history, *history.history}:
        before = previous.history.get(key, [float("nan")] * len(previous.epoch))
        after = history.history.get(key, [float("nan")] * len(history.epoch))
        merged.history[key] = [*before, *after]
    return merged


def _after_fit(args: argparse.Namespace, model: Any, history: Any) -> None:
    if not args.plot:
        return
    from fastnn import plot

    full = _merged(getattr(args, "_previous_history", None), history)
    if not full.epoch:
        return
    plot.history(full, args.plot, title=f"fastnn train {getattr(args, 'dataset', '')}".strip())
    if not getattr(args, "quiet", False):
        print(f"training curves written to {args.plot}", flush=True)


cli.register_train_extension(cli.TrainExtension(
    name="checkpoint-plot", configure=_configure, before_fit=_before_fit, after_fit=_after_fit,
))
