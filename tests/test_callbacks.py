"""Callbacks (Keras semantics) and progress output."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

import fastnn
from fastnn.callbacks import (
    CSVLogger,
    EarlyStopping,
    LambdaCallback,
    LearningRateScheduler,
    ModelCheckpoint,
    ReduceLROnPlateau,
    TerminateOnNaN,
)


def _data(n=64):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = (x[:, :1] * 0.5 - x[:, 1:2]).astype(np.float32)
    return x, y


def _model(lr=0.05):
    fastnn.get_backend("numpy").seed(1)
    model = fastnn.Sequential([fastnn.Dense(8, activation="tanh", input_dim=6), fastnn.Dense(1)],
                              backend="numpy", seed=2)
    model.compile(fastnn.SGD(lr), "mse", metrics=["mae"])
    return model


def _scripted(scores, snapshots):
    """Callback writing ``scores[epoch]`` as logs['score'] and recording the weights."""

    def on_epoch_end(epoch, logs):
        logs["score"] = scores[epoch]
        snapshots.append(fastnn.Sequential.get_weights(model_ref[0]))

    model_ref = []
    cb = LambdaCallback(on_epoch_end=on_epoch_end)
    return cb, model_ref


def _assert_weights(model, expected):
    for a, b in zip(model.get_weights(), expected, strict=True):
        assert np.array_equal(a, b)


def test_early_stopping_restores_best_weights_when_patience_runs_out():
    x, y = _data()
    model = _model()
    snapshots = []
    script, ref = _scripted([3.0, 1.0, 2.0, 2.5, 2.7, 0.5, 0.1, 0.1], snapshots)
    ref.append(model)
    stop = EarlyStopping(monitor="score", patience=2, restore_best_weights=True)
    hist = model.fit(x, y, epochs=8, batch_size=16, verbose=0, callbacks=[script, stop])
    assert hist.epoch == [0, 1, 2, 3]  # stopped after two epochs without improvement
    assert stop.stopped_epoch == 3 and stop.best_epoch == 1 and stop.best == 1.0
    assert not np.array_equal(snapshots[-1][0], snapshots[1][0])
    _assert_weights(model, snapshots[1])


def test_early_stopping_restores_best_weights_when_epochs_run_out():
    x, y = _data()
    model = _model()
    snapshots = []
    script, ref = _scripted([3.0, 1.0, 2.0], snapshots)
    ref.append(model)
    stop = EarlyStopping(monitor="score", patience=5, restore_best_weights=True)
    hist = model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[script, stop])
    assert hist.epoch == [0, 1, 2] and stop.stopped_epoch == 0
    _assert_weights(model, snapshots[1])


def test_early_stopping_without_restore_keeps_last_weights_and_respects_min_delta_and_mode():
    x, y = _data()
    model = _model()
    snapshots = []
    # mode max: 0.50 -> 0.505 is below min_delta 0.01, so it does not count.
    script, ref = _scripted([0.5, 0.505, 0.507, 0.9], snapshots)
    ref.append(model)
    stop = EarlyStopping(monitor="score", mode="max", min_delta=0.01, patience=2)
    hist = model.fit(x, y, epochs=4, batch_size=16, verbose=0, callbacks=[script, stop])
    assert hist.epoch == [0, 1, 2]
    _assert_weights(model, snapshots[-1])
    assert EarlyStopping(monitor="val_accuracy").mode == "max"
    assert EarlyStopping(monitor="val_loss").mode == "min"


def test_early_stopping_names_a_missing_monitor():
    x, y = _data()
    with pytest.raises(ValueError, match=r"monitor 'val_loss' is not among .*loss, mae.*"
                                         r"validation_data"):
        _model().fit(x, y, epochs=2, verbose=0, callbacks=[EarlyStopping()])


def test_model_checkpoint_formats_names_and_saves_best_only(tmp_path):
    x, y = _data()
    model = _model()
    every = ModelCheckpoint(tmp_path / "e{epoch:02d}-{val_loss:.4f}.npz", save_weights_only=True)
    snapshots = []
    script, ref = _scripted([5.0, 2.0, 3.0, 1.0, 4.0], snapshots)
    ref.append(model)
    best = ModelCheckpoint(tmp_path / "best.safetensors", monitor="score", save_best_only=True)
    hist = model.fit(x, y, epochs=5, batch_size=16, verbose=0, validation_split=0.25,
                     callbacks=[script, every, best])
    names = sorted(p.name for p in tmp_path.glob("e*.npz"))
    expected = [f"e{e + 1:02d}-{v:.4f}.npz" for e, v in enumerate(hist.history["val_loss"])]
    assert names == sorted(expected)
    loaded = fastnn.load_model(tmp_path / "best.safetensors")
    _assert_weights(loaded, snapshots[3])  # epoch 4 had the lowest score
    assert loaded.compiled and loaded.optimizer.iterations == 4 * 3  # 48 samples / 16
    weights_only = fastnn.load_model(tmp_path / expected[0])
    assert not weights_only.compiled


def test_model_checkpoint_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"\.npz or \.safetensors"):
        ModelCheckpoint(tmp_path / "m.h5")
    x, y = _data()
    cb = ModelCheckpoint(tmp_path / "m-{nope}.npz")
    with pytest.raises(ValueError, match="cannot format filepath"):
        _model().fit(x, y, epochs=1, verbose=0, callbacks=[cb])


def test_csv_logger_writes_rows_and_appends_on_resume(tmp_path):
    x, y = _data()
    path = tmp_path / "log.csv"
    model = _model()
    model.fit(x, y, epochs=2, verbose=0, callbacks=[CSVLogger(path)])
    model.fit(x, y, epochs=4, initial_epoch=2, verbose=0, callbacks=[CSVLogger(path, append=True)])
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    assert set(rows[0]) == {"epoch", "loss", "mae", "time"}
    assert all(math.isfinite(float(r["loss"])) for r in rows)


def test_learning_rate_scheduler_sets_and_logs_the_rate():
    x, y = _data()
    model = _model(lr=0.1)
    hist = model.fit(x, y, epochs=3, verbose=0,
                     callbacks=[LearningRateScheduler(lambda epoch, lr: lr * 0.5)])
    assert hist.history["learning_rate"] == pytest.approx([0.05, 0.025, 0.0125])
    assert model.optimizer.learning_rate == pytest.approx(0.0125)
    single_argument = LearningRateScheduler(lambda e: 0.01 * (e + 1))
    model.fit(x, y, epochs=2, verbose=0, callbacks=[single_argument])
    assert model.optimizer.learning_rate == pytest.approx(0.02)
    with pytest.raises(ValueError, match="finite number"):
        model.fit(x, y, epochs=1, verbose=0,
                  callbacks=[LearningRateScheduler(lambda e, lr: float("nan"))])


def test_reduce_lr_on_plateau_with_patience_and_cooldown():
    x, y = _data()
    model = _model(lr=1.0 / 8)
    snapshots = []
    script, ref = _scripted([1.0] * 8, snapshots)  # a plateau from the first epoch
    ref.append(model)
    plateau = ReduceLROnPlateau(monitor="score", factor=0.5, patience=2, cooldown=1,
                                min_lr=1.0 / 64)
    hist = model.fit(x, y, epochs=8, verbose=0, callbacks=[script, plateau])
    # Logged rate is the one used during each epoch.
    assert hist.epoch == list(range(8))
    assert model.optimizer.learning_rate == pytest.approx(1.0 / 64)
    with pytest.raises(ValueError, match="factor"):
        ReduceLROnPlateau(factor=1.0)


def test_reduce_lr_on_plateau_exact_sequence():
    x, y = _data()
    model = _model(lr=1.0)
    rates = []
    track = LambdaCallback(on_epoch_begin=lambda e, logs: rates.append(
        model.optimizer.learning_rate))
    snapshots = []
    script, ref = _scripted([1.0] * 7, snapshots)
    ref.append(model)
    plateau = ReduceLROnPlateau(monitor="score", factor=0.5, patience=2, cooldown=2)
    model.fit(x, y, epochs=7, verbose=0, callbacks=[track, script, plateau])
    # Epoch 0 sets the best; epochs 1, 2 wait -> reduce; epochs 3, 4 cool down (Keras counts
    # again in the epoch where the cooldown ends); epochs 4, 5 wait -> reduce.
    assert rates == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]


def test_terminate_on_nan_stops_and_says_where(capsys):
    x, y = _data()
    model = _model(lr=1e6)
    stop = TerminateOnNaN()
    hist = model.fit(x, y, epochs=20, batch_size=8, verbose=2, callbacks=[stop])
    out = capsys.readouterr().out
    assert model.diverged is not None and "Invalid loss, terminating training" in out
    assert "Dense(" in stop.message and "epoch" in stop.message
    assert len(hist.epoch) < 20
    assert all(math.isfinite(v) for vals in hist.history.values() for v in vals)
    assert "nan" not in out.split("Invalid loss")[0]  # no epoch line full of nan before it


def test_lambda_callback_hooks_are_called_in_order():
    x, y = _data(32)
    events = []
    cb = LambdaCallback(
        on_train_begin=lambda logs: events.append("train_begin"),
        on_epoch_begin=lambda e, logs: events.append(f"epoch_begin {e}"),
        on_batch_end=lambda b, logs: events.append(f"batch_end {b}"),
        on_epoch_end=lambda e, logs: events.append(f"epoch_end {e} {sorted(logs)}"),
        on_train_end=lambda logs: events.append("train_end"),
    )
    _model().fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[cb])
    assert events == [
        "train_begin",
        "epoch_begin 0", "batch_end 0", "batch_end 1", "epoch_end 0 ['loss', 'mae', 'time']",
        "epoch_begin 1", "batch_end 0", "batch_end 1", "epoch_end 1 ['loss', 'mae', 'time']",
        "train_end",
    ]
    with pytest.raises(TypeError, match="unknown hook"):
        LambdaCallback(on_everything=print)


def test_verbose_modes(capsys):
    x, y = _data()
    model = _model()
    model.fit(x, y, epochs=2, verbose=0)
    assert capsys.readouterr().out == ""
    model.fit(x, y, epochs=2, verbose=2, validation_split=0.25)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("Epoch 1/2 - loss: ") and " - val_mae: " in lines[0]
    model.fit(x, y, epochs=2, verbose=1)
    captured = capsys.readouterr()
    assert "Epoch 2/2 - loss: " in captured.out
    assert "step" in captured.out + captured.err  # the tqdm bar
    with pytest.raises(ValueError, match="verbose"):
        model.fit(x, y, epochs=1, verbose=3)


def test_callbacks_must_be_callback_instances():
    x, y = _data()
    with pytest.raises(TypeError, match="Callback instances"):
        _model().fit(x, y, epochs=1, verbose=0, callbacks=[print])


# -- plots of the history ------------------------------------------------------------------
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_plot_history_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    x, y = _data()
    hist = _model().fit(x, y, epochs=3, verbose=0, validation_split=0.25)
    path = fastnn.plot.history(hist, tmp_path / "curves.png", title="run")
    data = (tmp_path / "curves.png").read_bytes()
    assert path.endswith("curves.png") and data.startswith(PNG_MAGIC) and len(data) > 5000
    fastnn.plot.history({"loss": [1.0, 0.5], "val_loss": [1.2, 0.9]}, tmp_path / "d.png")
    assert (tmp_path / "d.png").read_bytes().startswith(PNG_MAGIC)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "d.png"]


def test_plot_history_rejects_empty_or_ragged_histories(tmp_path):
    pytest.importorskip("matplotlib")
    with pytest.raises(ValueError, match="empty"):
        fastnn.plot.history(fastnn.History(), tmp_path / "e.png")
    with pytest.raises(ValueError, match="different lengths"):
        fastnn.plot.history({"loss": [1.0, 2.0], "acc": [0.5]}, tmp_path / "r.png")
    with pytest.raises(TypeError, match="History"):
        fastnn.plot.history([1.0, 2.0], tmp_path / "l.png")


def test_plot_without_matplotlib_names_the_extra(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"fastnn-dl\[plot\]"):
        fastnn.plot.history({"loss": [1.0]}, tmp_path / "x.png")


def test_model_checkpoint_every_n_steps(tmp_path):
    x, y = _data()  # 64 samples, batch 16: 4 steps per epoch
    saves = []
    cb = ModelCheckpoint(tmp_path / "step.npz", save_freq=3)
    spy = LambdaCallback(on_batch_end=lambda b, logs: saves.append(
        fastnn.load_model(tmp_path / "step.npz").optimizer.iterations
        if (tmp_path / "step.npz").exists() else None))
    _model().fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[cb, spy])
    assert saves == [None, None, 3, 3, 3, 6, 6, 6]
    with pytest.raises(ValueError, match="save_freq"):
        ModelCheckpoint(tmp_path / "s.npz", save_freq=0)
