"""Callbacks with Keras names and hooks, the History record and progress output.

``fit`` calls every callback's hooks in this order: ``on_train_begin``, then per epoch
``on_epoch_begin``, ``on_train_batch_begin`` / ``on_train_batch_end`` per step, and
``on_epoch_end`` with the epoch's logs (``loss``, metrics, ``val_*``, ``time``), then
``on_train_end``. Setting ``model.stop_training = True`` ends training after the current
step or epoch, as in Keras.
"""

from __future__ import annotations

import csv
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


class Callback:
    """Base class: override any hook. ``self.model`` is set before training starts."""

    #: A callback with this set makes ``fit`` stop instead of raising on a non-finite loss.
    handles_divergence = False

    def __init__(self) -> None:
        self.model: Any = None
        self.params: dict[str, Any] = {}

    def set_model(self, model: Any) -> None:
        """Attach the model being trained."""
        self.model = model

    def set_params(self, params: dict[str, Any]) -> None:
        """Attach the training parameters (epochs, steps, verbose)."""
        self.params = params

    def on_train_begin(self, logs: dict | None = None) -> None:
        """Called once before the first epoch."""

    def on_train_end(self, logs: dict | None = None) -> None:
        """Called once after the last epoch."""

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        """Called at the start of every epoch (``epoch`` counts from 0)."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Called at the end of every epoch with that epoch's metrics."""

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        """Called before every training step."""

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        """Called after every training step with that batch's loss and metrics."""


class History(Callback):
    """Per-epoch lists of every logged value: ``history.history["loss"]``."""

    def __init__(self) -> None:
        super().__init__()
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []

    def on_train_begin(self, logs: dict | None = None) -> None:
        """Keep earlier epochs when training resumes on the same History."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Append this epoch's values."""
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))


class ProgressLogger(Callback):
    """Prints training progress: a bar per epoch (verbose=1) or one line (verbose=2).

    The bar shows the running mean of the loss and metrics over the epoch so far; at the
    end of the epoch one line with the epoch's logs is printed in both modes.

    Args:
        verbose: 1 for a tqdm bar and a line per epoch, 2 for the line only.
        stream: where to write (default ``sys.stdout``).
        refresh_every: steps between updates of the bar's numbers.
    """

    def __init__(self, verbose: int = 1, stream: Any = None, refresh_every: int = 10) -> None:
        super().__init__()
        self.verbose = verbose
        self.stream = stream
        self.refresh_every = max(1, int(refresh_every))
        self._bar: Any = None
        self._epoch = 0
        self._sums: dict[str, float] = {}
        self._seen = 0

    def _out(self):
        return self.stream if self.stream is not None else sys.stdout

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        """Open the progress bar of this epoch."""
        self._epoch = epoch
        self._sums = {}
        self._seen = 0
        if self.verbose == 1:
            self._bar = _make_bar(self.params.get("steps", 0), epoch,
                                  self.params.get("epochs", 0), self._out())

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        """Advance the bar and show the running loss and metrics."""
        if self._bar is None:
            return
        self._bar.update(1)
        if not logs:
            return
        m = int(logs.get("size", 1))
        self._seen += m
        for key, value in logs.items():
            if key not in ("size", "divergence"):
                self._sums[key] = self._sums.get(key, 0.0) + float(value) * m
        last = batch + 1 >= self.params.get("steps", 0)
        if batch % self.refresh_every == 0 or last:
            shown = {k: f"{v / max(self._seen, 1):.4f}" for k, v in self._sums.items()}
            self._bar.set_postfix(shown, refresh=False)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Close the bar and print the epoch's metrics."""
        self.close()
        if self.verbose in (1, 2):
            print(format_epoch_line(epoch, self.params.get("epochs", 0), logs or {}),
                  file=self._out(), flush=True)

    def close(self) -> None:
        """Close an open bar (also called when training stops on an exception)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def format_epoch_line(epoch: int, epochs: int, logs: dict[str, float]) -> str:
    """``Epoch 3/10 - loss: 0.1234 - accuracy: 0.9700 - 0.12s``."""
    parts = [f"Epoch {epoch + 1}/{epochs}"]
    for key, value in logs.items():
        if key == "time":
            continue
        parts.append(f"{key}: {value:.4g}" if key == "learning_rate" else f"{key}: {value:.4f}")
    if "time" in logs:
        parts.append(f"{logs['time']:.2f}s")
    return " - ".join(parts)


def _make_bar(total: int, epoch: int, epochs: int, stream: Any) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm missing: no bar, the epoch line still prints
        return None
    return tqdm(total=total, desc=f"Epoch {epoch + 1}/{epochs}", file=stream, leave=False,
                unit="step", dynamic_ncols=True)


class CallbackList:
    """Dispatches every hook to a list of callbacks (History and progress included)."""

    def __init__(
        self,
        callbacks: Sequence[Callback] | None,
        model: Any,
        history: History,
        verbose: int | str = 1,
        epochs: int = 0,
        steps: int = 0,
    ) -> None:
        verbose = _check_verbose(verbose)
        if isinstance(callbacks, Callback):
            callbacks = [callbacks]
        items = list(callbacks or [])
        for cb in items:
            if not isinstance(cb, Callback):
                raise TypeError(
                    f"callbacks must be Callback instances, received {type(cb).__name__}"
                )
        # History and the progress output come last so that they see what user callbacks
        # add to the epoch logs (``learning_rate`` from LearningRateScheduler, say).
        self.callbacks: list[Callback] = [*items, history]
        if verbose:
            self.callbacks.append(ProgressLogger(verbose))
        params = {"epochs": epochs, "steps": steps, "verbose": verbose}
        for cb in self.callbacks:
            cb.set_model(model)
            cb.set_params(params)

    def _call(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(*args)

    def on_train_begin(self, logs: dict | None = None) -> None:
        """Dispatch ``on_train_begin``."""
        self._call("on_train_begin", logs)

    def on_train_end(self, logs: dict | None = None) -> None:
        """Dispatch ``on_train_end``."""
        self._call("on_train_end", logs)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        """Dispatch ``on_epoch_begin``."""
        self._call("on_epoch_begin", epoch, logs)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Dispatch ``on_epoch_end``."""
        self._call("on_epoch_end", epoch, logs)

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        """Dispatch ``on_train_batch_begin``."""
        self._call("on_train_batch_begin", batch, logs)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        """Dispatch ``on_train_batch_end``."""
        self._call("on_train_batch_end", batch, logs)

    def close(self) -> None:
        """Release what callbacks hold open (progress bars, files) after an exception."""
        for cb in self.callbacks:
            close = getattr(cb, "close", None)
            if callable(close):
                close()


def _check_verbose(verbose: Any) -> int:
    if verbose == "auto":
        return 1
    if isinstance(verbose, bool) or not isinstance(verbose, (int, np.integer)) or (
        verbose not in (0, 1, 2)
    ):
        raise ValueError(f"verbose must be 0, 1, 2 or 'auto'. Received: verbose={verbose!r}")
    return int(verbose)


# -- monitoring helpers --------------------------------------------------------------------
_MAX_HINTS = ("acc", "auc", "precision", "recall", "f1")


def _resolve_mode(mode: str, monitor: str, where: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"{where}: mode must be 'auto', 'min' or 'max'. Received: mode={mode!r}")
    if mode != "auto":
        return mode
    base = monitor[4:] if monitor.startswith("val_") else monitor
    return "max" if any(hint in base for hint in _MAX_HINTS) else "min"


def _monitor_value(logs: dict | None, monitor: str, where: str) -> float:
    logs = logs or {}
    if monitor not in logs:
        available = ", ".join(k for k in logs if k != "time") or "none"
        hint = " (val_* metrics need validation_data or validation_split)" if (
            monitor.startswith("val_")) else ""
        raise ValueError(
            f"{where}: monitor {monitor!r} is not among the logged values ({available}){hint}"
        )
    return float(logs[monitor])


def _snapshot(model: Any) -> list[Any]:
    """Device copies of every parameter and state array, in a fixed order."""
    xp = model.backend.xp
    out = []
    for layer in model._all_layers():
        out.extend(xp.copy(p) for p in layer.params.values())
        out.extend(xp.copy(s) for s in getattr(layer, "states", {}).values())
    return out


def _restore(model: Any, arrays: list[Any]) -> None:
    targets = []
    for layer in model._all_layers():
        targets.extend(layer.params.values())
        targets.extend(getattr(layer, "states", {}).values())
    for dst, src in zip(targets, arrays, strict=True):
        dst[...] = src


def _set_lr(model: Any, lr: float, where: str) -> None:
    opt = model.optimizer
    if callable(opt.learning_rate):
        raise ValueError(f"{where}: the optimizer's learning rate is a schedule "
                         f"({opt.learning_rate!r}); use a float learning rate with this callback")
    if not math.isfinite(lr) or lr < 0:
        raise ValueError(f"{where}: the learning rate must be a finite number >= 0. "
                         f"Received: {lr!r}")
    opt.learning_rate = float(lr)


# -- Keras callbacks -----------------------------------------------------------------------
class EarlyStopping(Callback):
    """Stop training when a monitored value stops improving (Keras semantics).

    Args:
        monitor: logged value to watch (``"val_loss"``, ``"loss"``, ``"val_accuracy"``...).
        min_delta: smallest change that counts as an improvement.
        patience: epochs without improvement before stopping.
        verbose: 1 prints when stopping and restoring.
        mode: ``"min"``, ``"max"`` or ``"auto"`` (max for accuracy-like names).
        baseline: value the monitor must beat; the counter is reset only when it does.
        restore_best_weights: at the end of training, whether it stopped early or ran
            all epochs, put back the weights of the best epoch (states such as BatchNorm
            statistics included).
        start_from_epoch: epochs to wait before monitoring starts.

    Unlike Keras, which warns, a ``monitor`` missing from the logs raises ValueError at
    the first epoch end (a typo would otherwise silently disable early stopping).
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        min_delta: float = 0.0,
        patience: int = 0,
        verbose: int = 0,
        mode: str = "auto",
        baseline: float | None = None,
        restore_best_weights: bool = False,
        start_from_epoch: int = 0,
    ) -> None:
        super().__init__()
        if patience < 0:
            raise ValueError(f"EarlyStopping: patience must be >= 0. Received: {patience}")
        self.monitor = monitor
        self.min_delta = abs(float(min_delta))
        self.patience = int(patience)
        self.verbose = verbose
        self.mode = _resolve_mode(mode, monitor, "EarlyStopping")
        self.baseline = baseline
        self.restore_best_weights = bool(restore_best_weights)
        self.start_from_epoch = int(start_from_epoch)
        self._reset()

    def _reset(self) -> None:
        self.wait = 0
        self.stopped_epoch = 0
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_weights: list[Any] | None = None
        self.best_epoch = 0

    def _is_improvement(self, value: float, reference: float) -> bool:
        if self.mode == "min":
            return value + self.min_delta < reference
        return value - self.min_delta > reference

    def on_train_begin(self, logs: dict | None = None) -> None:
        """Reset the counters."""
        self._reset()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Track the best value; stop after ``patience`` epochs without improvement."""
        if epoch < self.start_from_epoch:
            return
        current = _monitor_value(logs, self.monitor, "EarlyStopping")
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = _snapshot(self.model)
        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = _snapshot(self.model)
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs: dict | None = None) -> None:
        """Restore the best weights (both when stopped early and after the last epoch)."""
        if self.stopped_epoch > 0 and self.verbose:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose:
                print("Restoring model weights from the end of the best epoch: "
                      f"{self.best_epoch + 1}.")
            _restore(self.model, self.best_weights)


class ModelCheckpoint(Callback):
    """Save the model (or its weights) during training, atomically.

    Args:
        filepath: ``.npz`` or ``.safetensors`` path, formatted with ``epoch`` (counting
            from 1) and the logs: ``"ckpt/model-{epoch:02d}-{val_loss:.3f}.npz"``.
        monitor: value compared by ``save_best_only``.
        verbose: 1 prints every save.
        save_best_only: save only when ``monitor`` improves (the file is replaced).
        save_weights_only: ``model.save_weights`` instead of ``model.save`` (the latter
            includes the optimizer and RNG states needed to resume).
        mode: ``"min"``, ``"max"`` or ``"auto"``.
        save_freq: ``"epoch"`` or a number of training steps between saves.
        initial_value_threshold: value the monitor must beat for the first save.
    """

    def __init__(
        self,
        filepath: str | os.PathLike,
        monitor: str = "val_loss",
        verbose: int = 0,
        save_best_only: bool = False,
        save_weights_only: bool = False,
        mode: str = "auto",
        save_freq: str | int = "epoch",
        initial_value_threshold: float | None = None,
    ) -> None:
        super().__init__()
        self.filepath = os.fspath(filepath)
        suffix = os.path.splitext(self.filepath)[1].lower()
        if suffix not in (".npz", ".safetensors"):
            raise ValueError("ModelCheckpoint: filepath must end in .npz or .safetensors. "
                             f"Received: filepath={self.filepath!r}")
        if save_freq != "epoch" and (
            isinstance(save_freq, bool) or not isinstance(save_freq, int) or save_freq < 1
        ):
            raise ValueError("ModelCheckpoint: save_freq must be 'epoch' or a positive integer. "
                             f"Received: save_freq={save_freq!r}")
        self.monitor = monitor
        self.verbose = verbose
        self.save_best_only = bool(save_best_only)
        self.save_weights_only = bool(save_weights_only)
        self.mode = _resolve_mode(mode, monitor, "ModelCheckpoint")
        self.save_freq = save_freq
        self.initial_value_threshold = initial_value_threshold
        self.best = initial_value_threshold if initial_value_threshold is not None else (
            math.inf if self.mode == "min" else -math.inf)
        self._epoch = 0
        self._batches = 0
        self.last_saved: str | None = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        """Remember the epoch for step-based saves."""
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        """Save every ``save_freq`` steps when it is an integer."""
        if self.save_freq == "epoch" or (logs and "divergence" in logs):
            return
        self._batches += 1
        if self._batches % self.save_freq == 0:
            self._save(self._epoch, logs)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Save at the end of the epoch (when ``save_freq="epoch"``)."""
        if self.save_freq == "epoch":
            self._save(epoch, logs)

    def _format(self, epoch: int, logs: dict | None) -> str:
        values = {k: v for k, v in (logs or {}).items() if k != "epoch"}
        try:
            return self.filepath.format(epoch=epoch + 1, **values)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"ModelCheckpoint: cannot format filepath {self.filepath!r} with epoch and "
                f"the logged values ({', '.join(values)}): {exc!r}"
            ) from None

    def _save(self, epoch: int, logs: dict | None) -> None:
        path = self._format(epoch, logs)
        if self.save_best_only:
            current = _monitor_value(logs, self.monitor, "ModelCheckpoint")
            better = current < self.best if self.mode == "min" else current > self.best
            if not better:
                if self.verbose:
                    print(f"Epoch {epoch + 1}: {self.monitor} did not improve from "
                          f"{self.best:.5f}")
                return
            if self.verbose:
                print(f"Epoch {epoch + 1}: {self.monitor} improved from {self.best:.5f} to "
                      f"{current:.5f}, saving model to {path}")
            self.best = current
        elif self.verbose:
            print(f"Epoch {epoch + 1}: saving model to {path}")
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)
        self.last_saved = path


class CSVLogger(Callback):
    """Write every epoch's logs as a row of a CSV file (flushed after every row).

    Args:
        filename: the CSV file.
        separator: field separator.
        append: append to an existing file (when resuming) instead of overwriting it.
    """

    def __init__(self, filename: str | os.PathLike, separator: str = ",",
                 append: bool = False) -> None:
        super().__init__()
        self.filename = os.fspath(filename)
        self.sep = separator
        self.append = bool(append)
        self.keys: list[str] | None = None
        self._file: Any = None
        self._writer: Any = None
        self._has_header = False

    def on_train_begin(self, logs: dict | None = None) -> None:
        """Open the file."""
        self.keys = None
        self._has_header = False
        if self.append and os.path.exists(self.filename):
            with open(self.filename, newline="") as f:
                first = f.readline()
            if first.strip():
                self._has_header = True
                self.keys = [k for k in first.strip().split(self.sep) if k != "epoch"]
        self._file = open(self.filename, "a" if self.append else "w", newline="")  # noqa: SIM115

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Write one row: the epoch (from 0, as Keras) and every logged value."""
        logs = dict(logs or {})
        if self.keys is None:
            self.keys = sorted(logs)
        if self._writer is None:
            self._writer = csv.DictWriter(self._file, fieldnames=["epoch", *self.keys],
                                          delimiter=self.sep, extrasaction="ignore")
            if not self._has_header:
                self._writer.writeheader()
        row = {"epoch": epoch, **{k: logs.get(k, "NA") for k in self.keys}}
        self._writer.writerow(row)
        self._file.flush()

    def on_train_end(self, logs: dict | None = None) -> None:
        """Close the file."""
        self.close()

    def close(self) -> None:
        """Close the file if open."""
        if self._file is not None:
            self._file.close()
        self._file = None
        self._writer = None


class LearningRateScheduler(Callback):
    """Set the learning rate at the start of every epoch from ``schedule(epoch, lr)``.

    Args:
        schedule: ``schedule(epoch, lr) -> new_lr`` (``epoch`` from 0), or ``schedule(epoch)``.
        verbose: 1 prints every change.
    """

    def __init__(self, schedule: Callable[..., float], verbose: int = 0) -> None:
        super().__init__()
        if not callable(schedule):
            raise TypeError(f"LearningRateScheduler: schedule must be callable, received "
                            f"{type(schedule).__name__}")
        self.schedule = schedule
        self.verbose = verbose

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        """Apply the schedule."""
        opt = self.model.optimizer
        current = opt.current_learning_rate()
        try:
            lr = self.schedule(epoch, current)
        except TypeError:  # schedule(epoch), the older Keras signature
            lr = self.schedule(epoch)
        if isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating, np.integer)):
            raise ValueError(f"LearningRateScheduler: the schedule must return a number, "
                             f"received {lr!r}")
        _set_lr(self.model, float(lr), "LearningRateScheduler")
        if self.verbose:
            print(f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to {lr}.")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Log the learning rate."""
        if logs is not None:
            logs["learning_rate"] = self.model.optimizer.current_learning_rate()


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when ``monitor`` stops improving.

    Args:
        monitor: logged value to watch.
        factor: new_lr = lr * factor, with 0 < factor < 1.
        patience: epochs without improvement before reducing.
        verbose: 1 prints every reduction.
        mode: ``"min"``, ``"max"`` or ``"auto"``.
        min_delta: smallest change that counts as an improvement.
        cooldown: epochs to wait after a reduction before counting again.
        min_lr: lower bound of the learning rate.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        factor: float = 0.1,
        patience: int = 10,
        verbose: int = 0,
        mode: str = "auto",
        min_delta: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 < factor < 1.0:
            raise ValueError(f"ReduceLROnPlateau: factor must be in (0, 1). Received: "
                             f"factor={factor}")
        self.monitor = monitor
        self.factor = float(factor)
        self.patience = int(patience)
        self.verbose = verbose
        self.mode = _resolve_mode(mode, monitor, "ReduceLROnPlateau")
        self.min_delta = abs(float(min_delta))
        self.cooldown = int(cooldown)
        self.min_lr = float(min_lr)
        self._reset()

    def _reset(self) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.wait = 0
        self.cooldown_counter = 0

    def _better(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_train_begin(self, logs: dict | None = None) -> None:
        """Reset the counters."""
        self._reset()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Reduce the learning rate after ``patience`` epochs on a plateau."""
        opt = self.model.optimizer
        current = _monitor_value(logs, self.monitor, "ReduceLROnPlateau")
        if logs is not None:
            logs["learning_rate"] = opt.current_learning_rate()
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._better(current):
            self.best = current
            self.wait = 0
            return
        if self.cooldown_counter > 0:
            return
        self.wait += 1
        if self.wait >= self.patience:
            old = opt.current_learning_rate()
            if old > self.min_lr:
                new = max(old * self.factor, self.min_lr)
                _set_lr(self.model, new, "ReduceLROnPlateau")
                if self.verbose:
                    print(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to "
                          f"{new}.")
                self.cooldown_counter = self.cooldown
                self.wait = 0


class TerminateOnNaN(Callback):
    """Stop training (instead of raising DivergenceError) when the loss becomes NaN/Inf.

    Prints where it went non-finite; the explanation is kept in ``model.diverged`` and in
    :attr:`message`. No update is applied with the non-finite loss.
    """

    handles_divergence = True

    def __init__(self, stream: Any = None) -> None:
        super().__init__()
        self.stream = stream
        self.message: str | None = None

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        """Stop when the batch loss is not finite."""
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(float(loss)):
            return
        reason = (logs or {}).get("divergence", "")
        self.message = f"Batch {batch}: Invalid loss, terminating training. {reason}".strip()
        print(self.message, file=self.stream if self.stream is not None else sys.stdout)
        self.model.stop_training = True


class LambdaCallback(Callback):
    """A callback from plain functions, e.g. ``LambdaCallback(on_epoch_end=lambda e, l: ...)``.

    Epoch hooks receive ``(epoch, logs)``, batch hooks ``(batch, logs)``, train hooks
    ``(logs)``. ``on_batch_begin`` / ``on_batch_end`` are accepted as Keras aliases.
    """

    _HOOKS = ("on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end",
              "on_train_batch_begin", "on_train_batch_end")

    def __init__(self, **hooks: Callable[..., Any]) -> None:
        super().__init__()
        aliases = {"on_batch_begin": "on_train_batch_begin",
                   "on_batch_end": "on_train_batch_end"}
        for key, fn in hooks.items():
            hook = aliases.get(key, key)
            if hook not in self._HOOKS:
                raise TypeError(f"LambdaCallback: unknown hook {key!r}; valid: "
                                f"{', '.join(self._HOOKS)}, on_batch_begin, on_batch_end")
            if fn is None:
                continue
            if not callable(fn):
                raise TypeError(f"LambdaCallback: {key} must be callable, received "
                                f"{type(fn).__name__}")
            setattr(self, hook, fn)


__all__ = [
    "CSVLogger",
    "Callback",
    "CallbackList",
    "EarlyStopping",
    "History",
    "LambdaCallback",
    "LearningRateScheduler",
    "ModelCheckpoint",
    "ProgressLogger",
    "ReduceLROnPlateau",
    "TerminateOnNaN",
]
