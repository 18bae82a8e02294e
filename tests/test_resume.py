"""Resuming: 4 epochs straight equal 2 epochs + save + load in a new process + 2 epochs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastnn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _data():
    rng = np.random.default_rng(123)
    x = rng.normal(size=(150, 12)).astype(np.float32)
    y = rng.integers(0, 4, size=150)
    return x, y


def _model(optimizer):
    fastnn.get_backend("numpy").seed(7)
    model = fastnn.Sequential(
        [
            fastnn.Dense(24, input_dim=12),
            fastnn.BatchNormalization(),
            fastnn.ReLU(),
            fastnn.Dropout(0.3),
            fastnn.Dense(4, activation="softmax"),
        ],
        backend="numpy",
        seed=11,
    )
    model.compile(optimizer, "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    import fastnn

    ckpt, data, out = sys.argv[1:4]
    d = np.load(data, allow_pickle=False)
    model = fastnn.load_model(ckpt)
    assert model.backend.name == "numpy"
    start = fastnn.io.saved_epoch(ckpt)
    model.fit(d["x"], d["y"], batch_size=16, epochs=4, initial_epoch=start, verbose=0,
              validation_split=0.2)
    model.save_weights(out)
    """
)


@pytest.mark.parametrize("fmt", ["npz", "safetensors"])
@pytest.mark.parametrize(
    "make_opt",
    [lambda: fastnn.Adam(learning_rate=0.01), lambda: fastnn.SGD(0.05, momentum=0.9)],
    ids=["adam", "sgd-momentum"],
)
def test_resume_in_new_process_is_bit_identical(tmp_path, fmt, make_opt):
    x, y = _data()
    straight = _model(make_opt())
    straight.fit(x, y, batch_size=16, epochs=4, verbose=0, validation_split=0.2)

    first = _model(make_opt())
    first.fit(x, y, batch_size=16, epochs=2, verbose=0, validation_split=0.2)
    ckpt = tmp_path / f"ckpt.{fmt}"
    first.save(ckpt)
    del first
    data = tmp_path / "data.npz"
    np.savez(data, x=x, y=y)
    out = tmp_path / f"resumed.{fmt}"
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(ckpt), str(data), str(out)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr

    resumed = _model(make_opt())
    resumed.load_weights(out)
    want = straight.get_weights()
    got = resumed.get_weights()
    assert len(want) == len(got)
    for i, (a, b) in enumerate(zip(want, got, strict=True)):
        assert a.dtype == b.dtype
        assert np.array_equal(a, b), f"array {i} differs by {np.abs(a - b).max()}"
    for layer_s, layer_r in zip(straight.layers, resumed.layers, strict=True):
        for key, value in layer_s.states.items():  # BatchNorm running statistics
            assert np.array_equal(value, layer_r.states[key]), key


def test_resume_in_same_process_keeps_optimizer_and_rng_state(tmp_path):
    x, y = _data()
    straight = _model(fastnn.Adam(learning_rate=0.01))
    straight.fit(x, y, batch_size=16, epochs=3, verbose=0)
    first = _model(fastnn.Adam(learning_rate=0.01))
    first.fit(x, y, batch_size=16, epochs=1, verbose=0)
    first.save(tmp_path / "one.npz")
    fastnn.get_backend("numpy").seed(999)  # disturb the backend generator: load restores it
    again = fastnn.load_model(tmp_path / "one.npz")
    assert again.optimizer.iterations == first.optimizer.iterations
    assert again.history.epoch == [0]
    again.fit(x, y, batch_size=16, epochs=3, initial_epoch=1, verbose=0)
    for a, b in zip(straight.get_weights(), again.get_weights(), strict=True):
        assert np.array_equal(a, b)


def test_initial_epoch_must_be_a_non_negative_integer():
    x, y = _data()
    model = _model("adam")
    with pytest.raises(ValueError, match="initial_epoch"):
        model.fit(x, y, epochs=2, initial_epoch=-1, verbose=0)


def test_restore_into_a_model_built_by_code(tmp_path):
    x, y = _data()
    straight = _model(fastnn.Adam(learning_rate=0.01))
    straight.fit(x, y, batch_size=16, epochs=3, verbose=0)
    first = _model(fastnn.Adam(learning_rate=0.01))
    first.fit(x, y, batch_size=16, epochs=2, verbose=0)
    first.save(tmp_path / "two.safetensors")
    fresh = _model(fastnn.Adam(learning_rate=0.01))
    fresh.fit(x[:20], y[:20], epochs=1, verbose=0)  # some other state, to be overwritten
    done = fastnn.io.restore(fresh, tmp_path / "two.safetensors")
    assert done == 2
    fresh.fit(x, y, batch_size=16, epochs=3, initial_epoch=done, verbose=0)
    for a, b in zip(straight.get_weights(), fresh.get_weights(), strict=True):
        assert np.array_equal(a, b)
    wrong = _model(fastnn.SGD(0.1))
    with pytest.raises(ValueError, match="optimizer is Adam, the model uses SGD"):
        fastnn.io.restore(wrong, tmp_path / "two.safetensors")


def _cli(*args, env):
    proc = subprocess.run([sys.executable, "-m", "fastnn", "train", "--epochs", *args],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_cli_checkpoint_resume_and_plot(tmp_path):
    pytest.importorskip("matplotlib")
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    straight, split = tmp_path / "straight", tmp_path / "split"
    _cli("4", "--checkpoint", str(straight), "-q", env=env)
    _cli("2", "--checkpoint", str(split), env=env)
    out = _cli("4", "--checkpoint", str(split), "--resume", "--plot", str(tmp_path / "c.png"),
               env=env)
    assert "resuming from" in out and "2 epochs done" in out and "epoch 3/4" in out
    assert "epoch 1/4" not in out
    a = fastnn.load_model(straight / "checkpoint.npz")
    b = fastnn.load_model(split / "checkpoint.npz")
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        assert np.array_equal(wa, wb)
    assert b.history.epoch == [0, 1, 2, 3] and a.optimizer.iterations == b.optimizer.iterations
    assert (tmp_path / "c.png").read_bytes().startswith(b"\x89PNG")
    proc = subprocess.run([sys.executable, "-m", "fastnn", "train", "--resume"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "--resume needs --checkpoint" in proc.stderr
