"""Saving and loading: round trips, no pickle, checks that name the first mismatch, atomic
writes that survive SIGKILL."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest

import fastnn
from fastnn import io
from fastnn.layers.base import Layer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORMATS = ["npz", "safetensors"]


def _mlp(backend="numpy", dtype="float32", width=8, seed=3):
    fastnn.get_backend(backend).seed(seed)
    model = fastnn.Sequential(
        [
            fastnn.Dense(width, input_dim=5, kernel_initializer="he_normal"),
            fastnn.BatchNormalization(),
            fastnn.Activation("tanh"),
            fastnn.Dropout(0.1),
            fastnn.LayerNormalization(),
            fastnn.Dense(3, activation="softmax"),
        ],
        backend=backend,
        dtype=dtype,
    )
    model.compile(fastnn.Adam(0.01, amsgrad=True), "categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def _xy(n=40):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    y = fastnn.to_categorical(rng.integers(0, 3, n), 3)
    return x, y


def _all_arrays(model):
    out = {}
    for i, layer in enumerate(model._all_layers()):
        for key, value in {**layer.params, **layer.states}.items():
            out[f"{i}/{key}"] = model.backend.to_numpy(value)
    return out


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_restores_everything(backend, tmp_path, fmt):
    x, y = _xy()
    model = _mlp(backend.name)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    path = tmp_path / f"model.{fmt}"
    model.save(path)
    loaded = fastnn.load_model(path)
    assert loaded.backend is backend
    assert [type(a).__name__ for a in loaded.layers] == [type(a).__name__ for a in model.layers]
    assert [a.name for a in loaded.layers] == [a.name for a in model.layers]
    want, got = _all_arrays(model), _all_arrays(loaded)
    assert want.keys() == got.keys()
    for key in want:
        assert got[key].dtype == want[key].dtype
        assert np.array_equal(got[key], want[key]), key
    assert np.array_equal(loaded.predict(x), model.predict(x))
    opt, opt2 = model.optimizer, loaded.optimizer
    assert type(opt2) is type(opt) and opt2.get_config() == opt.get_config()
    assert opt2.iterations == opt.iterations == 10
    assert opt.slots.keys() == opt2.slots.keys()
    for name, slots in opt.slots.items():
        assert set(slots) == {"m", "v", "vmax"}
        for k, v in slots.items():
            assert np.array_equal(np.asarray(opt2.slots[name][k]), np.asarray(v))
    assert loaded.loss.get_config() == model.loss.get_config()
    assert loaded.evaluate(x, y) == pytest.approx(model.evaluate(x, y), rel=1e-6)
    assert loaded.rng.bit_generator.state == model.rng.bit_generator.state


@pytest.mark.parametrize("fmt", FORMATS)
def test_float64_model_and_weights_only(tmp_path, fmt):
    x, y = _xy()
    model = _mlp(dtype="float64")
    model.fit(x, y, epochs=1, verbose=0)
    model.save_weights(tmp_path / f"w.{fmt}")
    fresh = _mlp(dtype="float64", seed=99)
    assert not np.array_equal(fresh.get_weights()[0], model.get_weights()[0])
    fresh.load_weights(tmp_path / f"w.{fmt}")
    for a, b in zip(model.get_weights(), fresh.get_weights(), strict=True):
        assert a.dtype == np.float64 and np.array_equal(a, b)
    loaded = fastnn.load_model(tmp_path / f"w.{fmt}")  # weights-only: architecture, no optimizer
    assert not loaded.compiled
    assert np.array_equal(loaded.predict(x), model.predict(x))


def test_load_weights_names_the_first_shape_mismatch(tmp_path):
    model = _mlp(width=8)
    model.save_weights(tmp_path / "w.npz")
    other = _mlp(width=9)
    before = other.get_weights()
    with pytest.raises(ValueError, match=r"Dense\(9\).*'W' has shape \(5, 8\) in the file, "
                                         r"the model expects \(5, 9\)"):
        other.load_weights(tmp_path / "w.npz")
    for a, b in zip(before, other.get_weights(), strict=True):  # nothing was half-copied
        assert np.array_equal(a, b)


def test_load_weights_names_a_dtype_mismatch(tmp_path):
    _mlp(dtype="float64").save_weights(tmp_path / "w.safetensors")
    with pytest.raises(ValueError, match="has dtype float64 in the file, the model expects "
                                         "float32"):
        _mlp(dtype="float32").load_weights(tmp_path / "w.safetensors")


def test_load_weights_names_a_layer_class_mismatch(tmp_path):
    _mlp().save_weights(tmp_path / "w.npz")
    other = fastnn.Sequential([fastnn.Dense(8, input_dim=5), fastnn.Dense(3)])
    with pytest.raises(ValueError, match="holds 6 layers, the model has 2"):
        other.load_weights(tmp_path / "w.npz")


def test_npz_with_a_pickled_object_array_is_refused(tmp_path):
    model = _mlp()
    path = tmp_path / "evil.npz"
    model.save(path)
    with zipfile.ZipFile(path, "a") as zf, zf.open("extra.npy", "w") as f:
        np.lib.format.write_array(f, np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle|pickle|Object arrays"):
        fastnn.load_model(path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_corrupted_file_is_an_error_never_different_weights(tmp_path, fmt):
    model = _mlp()
    path = tmp_path / f"m.{fmt}"
    model.save(path)
    data = bytearray(path.read_bytes())
    # A byte inside the first weight matrix (the data sits after the header in both formats).
    w0 = model.get_weights()[0].tobytes()
    pos = bytes(data).find(w0[:16])
    assert pos > 0
    data[pos + 5] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupted|CRC"):
        fastnn.load_model(path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_and_foreign_files(tmp_path, fmt):
    path = tmp_path / f"m.{fmt}"
    _mlp().save(path)
    data = path.read_bytes()
    for cut in (0, 7, 100, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError):
            fastnn.load_model(path)
    foreign = tmp_path / "plain.npz"
    np.savez(foreign, a=np.zeros(3))
    with pytest.raises(ValueError, match="not a fastnn checkpoint"):
        fastnn.load_model(foreign)
    with pytest.raises(FileNotFoundError):
        fastnn.load_model(tmp_path / "missing.npz")


def test_bad_suffix_and_unbuilt_model(tmp_path):
    model = _mlp()
    with pytest.raises(ValueError, match=r"\.npz or \.safetensors"):
        model.save(tmp_path / "m.h5")
    unbuilt = fastnn.Sequential([fastnn.Dense(3)])
    with pytest.raises(ValueError, match="not built"):
        unbuilt.save(tmp_path / "m.npz")


def test_missing_safetensors_package_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    with pytest.raises(ImportError, match=r"fastnn-dl\[safetensors\]"):
        _mlp().save(tmp_path / "m.safetensors")


class Scale(Layer):
    """A user layer: y = x * s, one parameter per feature."""

    def __init__(self, init: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.init = init

    def get_config(self):
        return {**super().get_config(), "init": self.init}

    def build_params(self, input_shape):
        self.add_param("s", (input_shape[-1],), fastnn.initializers.Constant(self.init))

    def _forward(self, x, training):
        self._x = x
        return x * self.params["s"]

    def _backward(self, dout):
        self.grads["s"][...] = (dout * self._x).sum(axis=0)
        return dout * self.params["s"]


def test_user_layers_are_found_by_class_name_and_registry(tmp_path):
    model = fastnn.Sequential([fastnn.Dense(4, input_dim=3), Scale(2.5)])
    model.save(tmp_path / "m.npz")
    loaded = fastnn.load_model(tmp_path / "m.npz")
    assert isinstance(loaded.layers[1], Scale) and loaded.layers[1].init == 2.5
    io.register_layer(Scale, name="MyScale")
    assert io.get_layer_class("MyScale") is Scale
    with pytest.raises(ValueError, match="unknown layer class 'Nope'"):
        io.get_layer_class("Nope")


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "f.bin"
    io.atomic_write(path, lambda f: f.write(b"old"))

    def broken(f):
        f.write(b"partial")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        io.atomic_write(path, broken)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]


# A "zygote" process imports fastnn and builds a 25 MB model (weights + Adam slots) once,
# then forks one saver per round, so each of the 20 rounds costs a fork, not an import.
KILL_ZYGOTE = textwrap.dedent(
    """
    import os
    import sys
    import numpy as np
    import fastnn

    path = sys.argv[1]
    model = fastnn.Sequential([fastnn.Dense(1024, input_dim=1024), fastnn.Dense(1024),
                               fastnn.Dense(10)], backend="numpy")
    model.compile(fastnn.Adam(), "mse")
    model.fit(np.zeros((2, 1024), np.float32), np.zeros((2, 10), np.float32), verbose=0)
    print("ready", flush=True)
    for command in sys.stdin:
        start, log = command.split(maxsplit=1)
        pid = os.fork()
        if pid == 0:  # the saver: save versions start, start + 1, ... until killed
            fd = os.open(log.strip(), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            for version in range(int(start), int(start) + 1000):
                for _, p, _ in model.named_parameters():
                    p[...] = version
                for slots in model.optimizer.slots.values():
                    for s in slots.values():
                        s[...] = version
                model.optimizer.iterations = version
                model.save(path)
                os.write(fd, f"saved {version}\\n".encode())
            os._exit(0)
        print(f"pid {pid}", flush=True)
        os.waitpid(pid, 0)
        print("reaped", flush=True)
    """
)


def _check_version(model) -> int:
    version = model.optimizer.iterations
    for name, p, _ in model.named_parameters():
        assert (p == version).all(), f"{name} is not uniformly {version}"
        for s in model.optimizer.slots[name].values():
            assert (s == version).all()
    return version


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_sigkill_during_save_never_loses_the_previous_checkpoint(tmp_path, fmt):
    """A process saving a 25 MB checkpoint in a loop is SIGKILLed at random moments (20 to 60
    times); each time the file loads and holds the last completed save (or the one in
    flight)."""
    path = tmp_path / f"ckpt.{fmt}"
    log = tmp_path / "saved.log"
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1",
           "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    zygote = subprocess.Popen([sys.executable, "-c", KILL_ZYGOTE, str(path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    rnd = random.Random(8)
    previous = None
    kills_mid_save = 0
    try:
        assert zygote.stdout.readline().strip() == "ready"
        # At least 20 kills, and more (up to 60) until 3 of them hit a save in flight: the
        # share of kills that land mid-save depends on the machine's load.
        for round_ in range(60):
            if round_ >= 20 and kills_mid_save >= 3:
                break
            first = 1000 * (round_ + 1)
            zygote.stdin.write(f"{first} {log}\n")
            zygote.stdin.flush()
            pid = int(zygote.stdout.readline().split()[1])
            time.sleep(rnd.uniform(0.0, 0.3))
            os.kill(pid, signal.SIGKILL)
            assert zygote.stdout.readline().strip() == "reaped"
            saved = [int(line.split()[1]) for line in log.read_text().splitlines()]
            if previous is None and not path.exists():
                continue
            version = _check_version(fastnn.load_model(path))
            if saved:  # the last confirmed save, or the next one if its rename had happened
                assert version in (saved[-1], saved[-1] + 1), (version, saved)
            else:  # killed before the first save finished: the previous file, or that save
                assert version in (previous, first), (version, previous)
            leftovers = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
            kills_mid_save += bool(leftovers)
            previous = version
    finally:
        zygote.kill()
        zygote.communicate()  # reaps it and closes the pipes
    assert previous is not None
    assert kills_mid_save >= 3  # the test really interrupted saves in flight
    # The next save removes the temporary files that the killed processes left behind.
    fastnn.load_model(path).save(path)
    assert sorted(os.listdir(tmp_path)) == sorted([path.name, log.name])
