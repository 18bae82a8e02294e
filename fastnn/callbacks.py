"""Callbacks with Keras names and hooks, the History record and progress output."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any


class Callback:
    """Base class: override any hook. ``self.model`` is set before training starts."""

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
    """Prints training progress: a bar per epoch (verbose=1) or one line (verbose=2)."""

    def __init__(self, verbose: int = 1, stream: Any = None) -> None:
        super().__init__()
        self.verbose = verbose
        self.stream = stream
        self._bar: Any = None
        self._epoch = 0

    def _out(self):
        return self.stream if self.stream is not None else sys.stdout

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        """Open the progress bar of this epoch."""
        self._epoch = epoch
        if self.verbose == 1:
            self._bar = _make_bar(self.params.get("steps", 0), epoch,
                                  self.params.get("epochs", 0), self._out())

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        """Advance the bar and show the running loss."""
        if self._bar is not None:
            self._bar.update(1)
            if logs and batch % 10 == 0:
                self._bar.set_postfix(loss=f"{logs['loss']:.4f}", refresh=False)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Close the bar and print the epoch's metrics."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.verbose in (1, 2):
            print(format_epoch_line(epoch, self.params.get("epochs", 0), logs or {}),
                  file=self._out(), flush=True)


def format_epoch_line(epoch: int, epochs: int, logs: dict[str, float]) -> str:
    """``Epoch 3/10 - loss: 0.1234 - accuracy: 0.9700 - 0.12s``."""
    parts = [f"Epoch {epoch + 1}/{epochs}"]
    for key, value in logs.items():
        if key == "time":
            continue
        parts.append(f"{key}: {value:.4f}")
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
        verbose = 1 if verbose == "auto" else int(verbose)
        items = list(callbacks or [])
        for cb in items:
            if not isinstance(cb, Callback):
                raise TypeError(
                    f"callbacks must be Callback instances, received {type(cb).__name__}"
                )
        self.callbacks: list[Callback] = [history, *items]
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
