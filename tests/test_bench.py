"""``fastnn bench`` and the instruments of fastnn.bench, on tiny sizes (seconds, not minutes)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from fastnn import cli
from fastnn.bench import timing
from fastnn.bench.plot import crossovers
from fastnn.bench.results import NOT_INSTALLED, Result, add_ratios, format_table
from fastnn.cli_bench import parse_sizes

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = ["--repeat", "1", "--settle", "0", "-q"]


def _run(argv, capsys) -> tuple[int, str, str]:
    status = cli.main(["bench", *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _json(path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


# -- parsing ----------------------------------------------------------------------------------
def test_parser_reads_every_option(tmp_path):
    args = cli.build_parser().parse_args([
        "bench", "--suite", "ops", "--backends", "numpy,numba", "--sizes", "1,32,2k",
        "--params", "10M", "--compare", "torch", "--repeat", "3", "--settle", "0.1",
        "--json", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.png"),
    ])
    assert args.suite == "ops"
    assert args.backends == ["numpy", "numba"]
    assert args.sizes == [1, 32, 2000]
    assert args.params == [10_000_000]
    assert args.compare == ["torch"]
    assert (args.repeat, args.settle) == (3, 0.1)


@pytest.mark.parametrize("argv, needle", [
    (["--suite", "nope"], "invalid choice"),
    (["--backends", "numpy,tpu"], "unknown backend tpu"),
    (["--sizes", "1,-3"], "positive integers"),
    (["--compare", "jax"], "unknown peer jax"),
    (["--repeat", "0"], "positive integer"),
])
def test_bad_options_are_usage_errors(capsys, argv, needle):
    with pytest.raises(SystemExit) as info:
        cli.main(["bench", *argv])
    assert info.value.code == cli.EXIT_USAGE
    assert needle in capsys.readouterr().err


def test_parse_sizes_suffixes():
    assert parse_sizes("1, 10k,3M") == [1, 10_000, 3_000_000]


def test_python_dash_m_fastnn_bench_help():
    done = subprocess.run([sys.executable, "-m", "fastnn", "bench", "--help"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "--suite" in done.stdout and "--compare" in done.stdout


# -- the sampler ------------------------------------------------------------------------------
def test_measure_syncs_after_every_timed_call_and_keeps_every_sample():
    calls = {"fn": 0, "sync": 0}

    def fn():
        calls["fn"] += 1

    def sync():
        calls["sync"] += 1

    result = timing.measure(fn, sync, repeat=5, warmup=2, settle_s=0.0, target_sample_s=0.0)
    assert len(result.samples) == 5 and result.inner == 1
    # 2 warm-up calls + per sample (1 untimed + 1 timed): every call is followed by sync.
    assert calls["fn"] == calls["sync"] == 2 + 5 * 2
    assert result.q1 <= result.median <= result.q3


def test_timing_statistics():
    t = timing.Timing(samples=[4.0, 1.0, 3.0, 2.0, 5.0])
    assert t.median == 3.0
    assert (t.q1, t.q3, t.iqr) == (2.0, 4.0, 2.0)
    assert math.isnan(timing.Timing().median)


# -- suites -----------------------------------------------------------------------------------
def test_ops_suite_tiny_prints_table_and_json(capsys, tmp_path):
    out_json = tmp_path / "ops.json"
    status, out, _ = _run(["--suite", "ops", "--backends", "numpy", "--sizes", "4",
                           "--params", "1000", "--json", str(out_json), *TINY], capsys)
    assert status == 0
    assert "OPENBLAS_CORETYPE" in out and "cpu:" in out
    for family in ("dense fwd+bwd 784->512", "softmax-CE fwd+bwd x50000", "relu fwd+bwd",
                   "adam update", "sgd-momentum update"):
        assert family in out
    data = _json(out_json)
    assert {"cpu", "OPENBLAS_CORETYPE", "numba_threads", "load_average"} <= set(data["header"])
    rows = data["results"]
    assert rows and all(r["suite"] == "ops" and r["backend"] == "numpy" for r in rows)
    for row in rows:
        assert row["median_s"] > 0 and row["iqr_s"] >= 0
        assert row["throughput"] > 0 and row["throughput_unit"] in ("GB/s", "GFLOP/s")
        assert row["ratios"]["numpy"] == pytest.approx(1.0)
        assert row["info"]["dtype"] == "float32"


def test_mlp_suite_tiny_has_sgemm_reference(capsys, tmp_path):
    out_json = tmp_path / "mlp.json"
    status, out, _ = _run(["--suite", "mlp", "--backends", "numpy", "--sizes", "1,4",
                           "--json", str(out_json), *TINY], capsys)
    assert status == 0
    assert "mlp 784-512-512-10 sgd-momentum" in out and "mlp 784-512-512-10 adam" in out
    rows = _json(out_json)["results"]
    assert {r["size"] for r in rows} == {1, 4}
    sgemm = [r for r in rows if r["backend"] == "numpy-sgemm"]
    assert sgemm and all(r["size"] == 4 and r["throughput_unit"] == "GFLOP/s" for r in sgemm)
    big = [r for r in rows if r["backend"] == "numpy" and r["size"] == 4]
    assert all("% of numpy-sgemm" in r["note"] for r in big)
    assert all(r["throughput_unit"] == "samples/s" for r in big)


def test_gradient_suite_tiny_gradients_agree(capsys, tmp_path):
    out_json = tmp_path / "gradient.json"
    status, out, _ = _run(["--suite", "gradient", "--backends", "numpy", "--sizes", "5",
                           "--sample", "20", "--steps", "1", "--json", str(out_json), *TINY],
                          capsys)
    assert status == 0
    assert "SAMPLED: 20 of 79510 coordinates" in out
    rows = _json(out_json)["results"]
    backprop = [r for r in rows if r["backend"] == "numpy/backprop"]
    assert len(backprop) == 3  # 64-50-10, 784-100-10 sampled, the training comparison
    for row in backprop:
        assert row["ratios"]["numerical"] > 1.0  # backprop is faster
    for row in backprop[:2]:
        diff = float(row["note"].split("max rel diff ")[1].split()[0].rstrip(";"))
        assert diff < 1e-6
    training = [r for r in rows if r["family"].startswith("training")]
    accs = [r["info"]["test_accuracy"] for r in training]
    assert len(accs) == 2 and accs[0] == pytest.approx(accs[1], abs=0.01)


def test_torch_absent_says_not_installed(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    out_json = tmp_path / "mlp.json"
    status, out, _ = _run(["--suite", "mlp", "--backends", "numpy", "--sizes", "2",
                           "--compare", "torch", "--json", str(out_json), *TINY], capsys)
    assert status == 0
    assert NOT_INSTALLED in out
    data = _json(out_json)
    assert data["header"]["torch"] == NOT_INSTALLED
    numpy_rows = [r for r in data["results"] if r["backend"] == "numpy"]
    assert numpy_rows and all(r["ratios"]["torch-cpu"] == NOT_INSTALLED for r in numpy_rows)


def test_torch_compare_runs_side_by_side(capsys, tmp_path):
    pytest.importorskip("torch")
    out_json = tmp_path / "ops.json"
    status, _, _ = _run(["--suite", "mlp", "--backends", "numpy", "--sizes", "2",
                         "--compare", "torch", "--json", str(out_json), *TINY], capsys)
    assert status == 0
    rows = _json(out_json)["results"]
    names = {r["backend"] for r in rows}
    assert {"numpy", "torch-cpu", "torch-cpu-fused"} <= names
    numpy_row = next(r for r in rows if r["backend"] == "numpy")
    assert numpy_row["ratios"]["torch-cpu"] > 0


def test_plot_writes_png(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "ops.png"
    status, out, _ = _run(["--suite", "mlp", "--backends", "numpy", "--sizes", "1,2",
                           "--plot", str(png), *TINY], capsys)
    assert status == 0 and f"wrote {png}" in out
    assert png.read_bytes()[:8] == PNG_MAGIC


def test_plot_without_matplotlib_is_a_clear_error(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    status, _, err = _run(["--suite", "mlp", "--backends", "numpy", "--sizes", "1",
                           "--plot", str(tmp_path / "x.png"), *TINY], capsys)
    assert status == cli.EXIT_FAILURE
    assert "--plot needs matplotlib" in err and "pip install matplotlib" in err


# -- results ----------------------------------------------------------------------------------
def _row(backend: str, size: int, median: float) -> Result:
    return Result(suite="ops", case=f"f [{size}]", family="f", size=size, backend=backend,
                  median_s=median, q1_s=median, q3_s=median)


def test_crossover_is_where_the_challenger_stays_faster():
    rows = [_row("numpy", s, m) for s, m in ((1, 1.0), (10, 2.0), (100, 4.0), (1000, 8.0))]
    rows += [_row("numba", s, m) for s, m in ((1, 3.0), (10, 1.0), (100, 5.0), (1000, 2.0))]
    assert crossovers(rows) == {("f", "numba"): 1000}
    rows += [_row("cupy", s, 9.0) for s in (1, 10, 100, 1000)]
    assert crossovers(rows)[("f", "cupy")] is None


def test_ratios_and_table():
    rows = [_row("numpy", 8, 2.0), _row("numba", 8, 0.5)]
    add_ratios(rows, ["numpy", "torch-cpu"], {"torch-cpu": NOT_INSTALLED})
    assert rows[1].ratios == {"numpy": 4.0, "torch-cpu": NOT_INSTALLED}
    table = format_table(rows, ["numpy", "torch-cpu"])
    assert "x numpy" in table and "4.00x" in table and NOT_INSTALLED in table


def test_a_failing_contender_becomes_a_row_not_a_crash():
    from fastnn.bench.case import Case, Contender, Work
    from fastnn.bench.runner import run_case

    def broken():
        raise RuntimeError("fused=True is not supported on this device\nsecond line")

    case = Case("ops", "toy", 3, Work(3, "samples"),
                factories={"ok": lambda: Contender("ok", lambda: None),
                           "bad": lambda: Contender("bad", broken)},
                unavailable={"torch-cpu": NOT_INSTALLED})
    rows = {r.backend: r for r in run_case(case, repeat=2, settle_s=0.0, target_sample_s=0.0)}
    assert rows["ok"].median_s is not None and len(rows["ok"].samples_s) == 2
    assert rows["bad"].median_s is None
    assert rows["bad"].note == "failed: RuntimeError: fused=True is not supported on this device"
    assert rows["torch-cpu"].note == NOT_INSTALLED
    table = format_table(list(rows.values()), [])
    assert "failed: RuntimeError" in table and NOT_INSTALLED in table


@pytest.mark.parametrize("optimizer", ["sgd-momentum", "adam"])
def test_train_on_batch_is_one_step_of_fit(optimizer):
    """The mlp suite times train_on_batch: it must do exactly what one step of fit does."""
    import numpy as np

    from fastnn.bench import mlp

    layers = (12, 16, 16, 3)
    x = np.random.default_rng(1).standard_normal((6, layers[0])).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2])
    stepped = mlp.build_model("numpy", optimizer, layers=layers)
    fitted = mlp.build_model("numpy", optimizer, layers=layers)
    losses = [stepped.train_on_batch(x, y) for _ in range(3)]
    history = fitted.fit(x, y, batch_size=6, epochs=3, shuffle=False, verbose=0)
    np.testing.assert_allclose(losses, history.history["loss"], rtol=1e-6)
    for a, b in zip(stepped.get_weights(), fitted.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # The step's reused buffers never alias predict's outputs: batch by batch == at once.
    np.testing.assert_allclose(stepped.predict(x, batch_size=2),
                               stepped.predict(x, batch_size=6), rtol=1e-6)


def test_noisy_rows_are_flagged():
    from fastnn.bench.results import noise_note

    assert noise_note(1.0, 0.9, 1.2, "x") == "x"
    assert noise_note(1.0, 0.5, 1.6, "x") == "x; NOISY: IQR > 50% of median"
    assert noise_note(1.0, 0.5, 1.6) == "NOISY: IQR > 50% of median"
