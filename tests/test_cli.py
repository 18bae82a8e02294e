"""The ``fastnn`` command line: train, info, the subcommand registry and one-line errors."""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastnn
from fastnn import cli
from fastnn.backends import unavailable_reason

# The directory holding the fastnn package these tests import, for the subprocesses.
PACKAGE_ROOT = Path(fastnn.__file__).resolve().parents[1]
SUBPROCESS_TIMEOUT_S = 300

EPOCH_LINE = re.compile(
    r"^epoch +(\d+)/(\d+)  loss \d+\.\d{4}  accuracy \d\.\d{4}  val_loss \d+\.\d{4}  "
    r"val_accuracy \d\.\d{4}  time \d+\.\d\ds$"
)
FINAL_LINE = re.compile(r"^test accuracy: (\d\.\d{4}) \(test loss \d+\.\d{4}, (\d+) samples; ")


def run_fastnn(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m fastnn ARGS`` in a subprocess, importing the same fastnn as the tests."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(PACKAGE_ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    env.pop(cli.DEBUG_ENV, None)
    env.pop("FASTNN_BACKEND", None)
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "fastnn", *args], capture_output=True, text=True, env=env,
        timeout=SUBPROCESS_TIMEOUT_S, check=False,
    )


def assert_one_line_error(done: subprocess.CompletedProcess, *fragments: str) -> str:
    """Non-zero exit, exactly one line on stderr naming ``fragments``, no traceback."""
    assert done.returncode != 0, done
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    assert lines[0].startswith("fastnn"), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


# -- fastnn train ---------------------------------------------------------------------------
def test_train_subprocess_prints_epoch_lines_and_test_accuracy():
    done = run_fastnn("train", "--dataset", "digits", "--backend", "numpy", "--epochs", "2",
                      "--batch-size", "64", "--optimizer", "adam", "--hidden", "32,16")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"fastnn {fastnn.__version__}: digits (1438 train, 359 test")
    assert "MLP 64-32-16-10" in lines[0] and "backend numpy" in lines[0]
    epochs = [EPOCH_LINE.match(line) for line in lines[1:-1]]
    assert all(epochs), lines
    assert [m.group(1, 2) for m in epochs] == [("1", "2"), ("2", "2")]
    final = FINAL_LINE.match(lines[-1])
    assert final, lines[-1]
    assert final.group(2) == "359"
    assert 0.1 < float(final.group(1)) <= 1.0


def test_default_settings_reach_095_on_digits(backend, capsys):
    """The README's main job with its defaults (only the backend named): >= 0.95 on digits."""
    status = cli.main(["train", "--dataset", "digits", "--backend", backend.name])
    out = capsys.readouterr()
    assert status == 0, out.err
    lines = out.out.splitlines()
    assert sum(bool(EPOCH_LINE.match(line)) for line in lines) == cli.DEFAULT_EPOCHS
    final = FINAL_LINE.match(lines[-1])
    assert final, lines[-1]
    assert float(final.group(1)) >= 0.95, lines[-1]


def test_train_is_deterministic_for_a_seed(capsys):
    outputs = []
    for _ in range(2):
        assert cli.main(["train", "--epochs", "3", "--seed", "11", "--backend", "numpy"]) == 0
        text = capsys.readouterr().out
        outputs.append([re.sub(r"time \S+", "", line) for line in text.splitlines()[1:-1]])
        outputs[-1].append(text.splitlines()[-1].split(";")[0])
    assert outputs[0] == outputs[1]


def test_train_quiet_and_verbose(capsys):
    assert cli.main(["train", "--epochs", "1", "--quiet", "--backend", "numpy"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and FINAL_LINE.match(lines[0])
    assert cli.main(["train", "--epochs", "1", "-v", "--backend", "numpy", "--hidden", "none",
                     "--optimizer", "sgd", "--learning-rate", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "Total params: 650" in out  # the summary of a 64-10 softmax classifier
    assert "SGD(learning_rate=0.1)" in out
    assert FINAL_LINE.match(out.splitlines()[-1])


def _write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)


def test_train_mnist_reads_the_idx_files(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 120), ("t10k", 40)):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 40, (n, 28, 28))
        images[np.arange(n), labels, :] = 255  # a learnable stripe per class
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", images, compress=prefix == "train")
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", labels, compress=False)
    status = cli.main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path),
                       "--epochs", "3", "--hidden", "16", "--backend", "numpy"])
    out = capsys.readouterr().out.splitlines()
    assert status == 0
    assert "mnist (120 train, 40 test samples)" in out[0] and "MLP 784-16-10" in out[0]
    final = FINAL_LINE.match(out[-1])
    assert final and final.group(2) == "40"


# -- fastnn info ----------------------------------------------------------------------------
def test_info_lists_version_backends_threads_blas_and_gpu():
    done = run_fastnn("info", env_extra={"OPENBLAS_CORETYPE": "Haswell"})
    assert done.returncode == 0, done.stderr
    rows = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in done.stdout.splitlines())
    assert rows["fastnn"].startswith(fastnn.__version__)
    for name in ("numpy", "numba", "cupy"):
        value = rows[f"backend {name}"]
        reason = unavailable_reason(name)
        if reason is None:
            assert value.startswith("available: "), value
        else:
            assert value.startswith("unavailable: "), value
            assert reason.splitlines()[0] in value
    assert rows["backend numpy"] == "available: cpu"
    assert re.match(r"\d+ ", rows["numba threads"]) or "n/a" in rows["numba threads"]
    assert rows["blas"] and rows["blas threads"]
    if unavailable_reason("numba") is None:
        assert re.match(r"\d+x\d+ float32 micro-kernel, compiled for \S+", rows["numba gemm"])
    else:
        assert rows["numba gemm"].startswith("n/a")
    assert rows["OPENBLAS_CORETYPE"] == "Haswell"
    assert rows["gpu"]


# -- errors: one line, non-zero exit, no traceback ------------------------------------------
@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["train", "--backend", "tpu"], ["--backend", "invalid choice: 'tpu'", "numpy"]),
        (["train", "--epochs", "0"], ["--epochs", "positive integer", "'0'"]),
        (["train", "--hidden", "64,x"], ["--hidden", "128,64", "'64,x'"]),
        (["train", "--dataset", "mnist"], ["--dataset mnist needs --data-dir"]),
        (["train", "--optimizer", "adagrad2"], ["--optimizer", "'adagrad2'"]),
        (["frobnicate"], ["invalid choice: 'frobnicate'"]),
    ],
    ids=["backend", "epochs", "hidden", "mnist-without-dir", "optimizer", "command"],
)
def test_usage_errors_are_one_line_with_status_2(args, fragments):
    done = run_fastnn(*args)
    assert done.returncode == 2
    assert_one_line_error(done, *fragments)


def test_missing_mnist_directory_is_one_line(tmp_path):
    missing = tmp_path / "no-such-dir"
    done = run_fastnn("train", "--dataset", "mnist", "--data-dir", str(missing))
    assert done.returncode == 1
    assert_one_line_error(done, "MNIST directory not found", str(missing))


def test_incomplete_mnist_directory_names_the_missing_files(tmp_path, capsys):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"")
    status = cli.main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert status == 1
    assert "\n" not in err
    assert "t10k-labels-idx1-ubyte" in err and "train-labels-idx1-ubyte" in err


def test_unavailable_backend_is_one_line_with_the_reason():
    reason = unavailable_reason("cupy")
    if reason is None:
        pytest.skip("the cupy backend is available here")
    done = run_fastnn("train", "--backend", "cupy", "--epochs", "1")
    assert done.returncode == 1
    assert_one_line_error(done, "backend 'cupy'")


def test_bad_activation_and_bad_environment_are_one_line():
    done = run_fastnn("train", "--activation", "rleu", "--epochs", "1")
    assert_one_line_error(done, "--activation", "unknown activation 'rleu'", "relu")
    done = run_fastnn("train", "--epochs", "1", env_extra={"FASTNN_BACKEND": "tpu"})
    assert_one_line_error(done, "FASTNN_BACKEND='tpu'")


def test_no_command_prints_usage_and_fails():
    done = run_fastnn()
    assert done.returncode == 2
    assert "usage: fastnn" in done.stderr and "train" in done.stderr and "info" in done.stderr
    assert "Traceback" not in done.stderr


def test_version_flag():
    done = run_fastnn("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"fastnn {fastnn.__version__}"


def test_internal_errors_are_one_line_unless_debugging(monkeypatch, capsys):
    def broken(args):
        raise KeyError("boom")

    monkeypatch.setitem(cli.COMMANDS, "broken", cli.Command("broken", broken))
    assert cli.main(["broken"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error KeyError" in err and cli.DEBUG_ENV in err
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(KeyError):
        cli.main(["broken"])


# -- the registries other modules extend ------------------------------------------------------
def test_registered_commands_and_train_extensions_are_used(monkeypatch, capsys):
    seen = {}

    def configure(parser):
        parser.add_argument("--times", type=int, default=1)

    def run_hello(args):
        print("hello " * args.times)
        return 0

    monkeypatch.setattr(cli, "COMMANDS", dict(cli.COMMANDS))
    monkeypatch.setattr(cli, "TRAIN_EXTENSIONS", {})
    cli.register_command("hello", run_hello, configure, help="say hello")

    def add_flag(parser):
        parser.add_argument("--stop-after", type=int, default=None)

    def before_fit(args, model, fit_kwargs):
        seen["model"] = model
        fit_kwargs["epochs"] = args.stop_after

    def after_fit(args, model, history):
        seen["epochs"] = len(history.history["loss"])

    cli.register_train_extension(cli.TrainExtension("stopper", add_flag, before_fit, after_fit))
    assert cli.main(["hello", "--times", "2"]) == 0
    assert capsys.readouterr().out.strip() == "hello hello"
    assert cli.main(["train", "--epochs", "5", "--stop-after", "2", "--quiet"]) == 0
    assert seen["epochs"] == 2
    assert isinstance(seen["model"], fastnn.Sequential)


def test_parse_hidden():
    assert cli.parse_hidden("128,64") == [128, 64]
    assert cli.parse_hidden(" 32 ") == [32]
    assert cli.parse_hidden("none") == [] == cli.parse_hidden("")
    for bad in ("0", "12,,3", "-4", "1.5"):
        with pytest.raises(Exception, match="positive layer sizes"):
            cli.parse_hidden(bad)
