"""The ``gradient`` suite: backpropagation against central-difference numerical gradients.

Three measurements, all in float64 (the precision numerical differentiation needs):

1. one full gradient of a 64-50-10 network (tanh hidden layer, softmax output: the
   classic two-layer net, with a smooth activation so that central differences see no
   kink) on a digits minibatch of 100: backprop time, numerical time
   (two loss evaluations per parameter), their ratio, and the largest scale-relative
   difference of the two gradients, ``max |a - n| / max |n|`` per tensor;
2. the same for 784-100-10 on random 784-feature inputs, where the numerical side is
   *sampled*: only ``sample`` coordinates (chosen at random over all parameters) are
   differentiated and timed, and the time is extrapolated to every parameter (the output
   says so, with the factor);
3. the whole-training comparison: the same 64-50-10 network, from the same initial weights,
   trained on digits for ``steps`` plain SGD steps (learning rate 0.5) of 100 samples, with
   numerical gradients and with backprop; the time ratio and the test-accuracy difference.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from fastnn.bench.results import Result, noise_note
from fastnn.bench.timing import SETTLE_S, TARGET_SAMPLE_S, measure_interleaved

DTYPE = "float64"
SEED = 0
DIGITS_LAYERS = (64, 50, 10)
WIDE_LAYERS = (784, 100, 10)
HIDDEN_ACTIVATION = "tanh"
DEFAULT_BATCH = 100
#: Coordinates differentiated numerically (then extrapolated) for the 784-100-10 network.
DEFAULT_SAMPLE = 500
DEFAULT_TRAIN_STEPS = 20
TRAIN_LEARNING_RATE = 0.5
#: Central-difference step (float64).
EPS = 1e-6
#: Samples of the long numerical timings (each is seconds long).
NUMERICAL_REPEAT = 3
BASELINE = "numerical"


def build_net(backend: Any, layers: tuple[int, ...], learning_rate: float = TRAIN_LEARNING_RATE,
              seed: int = SEED) -> Any:
    """A compiled float64 MLP ``layers`` (tanh hidden, softmax out) with seeded weights."""
    from fastnn import Dense, Sequential
    from fastnn.optimizers import SGD

    model = Sequential(backend=backend, dtype=DTYPE, seed=seed, name="gradient_net")
    for i, units in enumerate(layers[1:-1]):
        kwargs = {"input_dim": layers[0]} if i == 0 else {}
        model.add(Dense(units, activation=HIDDEN_ACTIVATION, **kwargs))
    model.add(Dense(layers[-1], activation="softmax"))
    model.compile(optimizer=SGD(learning_rate, backend=model.backend),
                  loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(seed)
    weights = []
    for d_in, d_out in zip(layers[:-1], layers[1:], strict=True):
        weights.append(rng.standard_normal((d_in, d_out)) * np.sqrt(1.0 / d_in))
        weights.append(np.zeros(d_out))
    model.set_weights(weights)
    return model


def numerical_gradients(model: Any, x: Any, y: Any, eps: float = EPS) -> list[Any]:
    """Central differences of the model's loss on (x, y) for every parameter (host arrays)."""
    from fastnn.gradcheck import numerical_gradient

    def loss() -> float:
        return model.loss_value(x, y)

    return [numerical_gradient(loss, p, eps) for _, p, _ in model.named_parameters()]


def sampled_coordinates(model: Any, count: int, seed: int = SEED) -> list[tuple[int, int]]:
    """``count`` distinct (parameter index, flat index) pairs drawn over all parameters."""
    sizes = [int(p.size) for _, p, _ in model.named_parameters()]
    total = sum(sizes)
    picks = np.sort(np.random.default_rng(seed).choice(total, size=min(count, total),
                                                       replace=False))
    starts = np.cumsum([0, *sizes])
    coords = []
    for flat in picks:
        k = int(np.searchsorted(starts, flat, side="right") - 1)
        coords.append((k, int(flat - starts[k])))
    return coords


def sampled_numerical(model: Any, x: Any, y: Any, coords: list[tuple[int, int]],
                      eps: float = EPS) -> np.ndarray:
    """Central differences of the loss for the given coordinates only."""
    params = [p.reshape(-1) for _, p, _ in model.named_parameters()]
    out = np.empty(len(coords))
    for j, (k, i) in enumerate(coords):
        flat = params[k]
        original = flat[i].item()
        flat[i] = original + eps
        fp = model.loss_value(x, y)
        flat[i] = original - eps
        fm = model.loss_value(x, y)
        flat[i] = original
        out[j] = (fp - fm) / (2.0 * eps)
    return out


def analytic_gradients(model: Any, x: Any, y: Any) -> list[np.ndarray]:
    """Backprop gradients of the loss on (x, y), host copies, parameter order."""
    model.zero_grads()
    model.loss_gradients(x, y)
    be = model.backend
    return [be.to_numpy(g).astype(np.float64, copy=True) for _, _, g in model.named_parameters()]


def max_relative_difference(analytic: list[np.ndarray], numerical: list[np.ndarray]) -> float:
    """Largest over tensors of ``max |a - n| / max |n|`` (scale-relative, as gradcheck)."""
    worst = 0.0
    for a, n in zip(analytic, numerical, strict=True):
        a, n = np.asarray(a, dtype=np.float64), np.asarray(n, dtype=np.float64)
        scale = max(float(np.abs(n).max()) if n.size else 0.0, np.finfo(np.float64).tiny)
        worst = max(worst, float(np.abs(a - n).max()) / scale if n.size else 0.0)
    return worst


def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from fastnn.datasets import load_digits

    (x_train, y_train), (x_test, y_test) = load_digits(seed=SEED)
    return (x_train.astype(DTYPE), y_train, x_test.astype(DTYPE), y_test)


def digits_problem(backend: Any, batch: int = DEFAULT_BATCH) -> tuple[Any, Any, Any]:
    """(64-50-10 model, x (batch, 64), labels) on the first ``batch`` digits, float64."""
    x_train, y_train, _, _ = _digits()
    model = build_net(backend, DIGITS_LAYERS)
    return model, model.backend.asarray(x_train[:batch]), model.prepare_targets(
        y_train[:batch])


def wide_problem(backend: Any, batch: int = DEFAULT_BATCH) -> tuple[Any, Any, Any]:
    """(784-100-10 model, random x (batch, 784) in [0, 1), random labels), float64."""
    rng = np.random.default_rng(SEED)
    model = build_net(backend, WIDE_LAYERS)
    x = model.backend.asarray(rng.random((batch, WIDE_LAYERS[0])))
    return model, x, model.prepare_targets(rng.integers(0, WIDE_LAYERS[-1], batch))


def _row(case: str, family: str, size: int, backend: str, median: float, q1: float, q3: float,
         samples: list[float], note: str, info: dict[str, Any],
         ratios: dict[str, float | str] | None = None) -> Result:
    return Result(suite="gradient", case=case, family=family, size=size, backend=backend,
                  median_s=median, q1_s=q1, q3_s=q3, samples_s=samples,
                  note=noise_note(median, q1, q3, note), info=info, ratios=ratios or {})


def full_gradient_rows(backend_name: str, batch: int, repeat: int, settle_s: float,
                       target_sample_s: float) -> list[Result]:
    """Backprop vs full numerical gradient of 64-50-10 on a digits minibatch."""
    from fastnn.backends import get_backend

    be = get_backend(backend_name)
    model, x, y = digits_problem(be, batch)
    analytic = analytic_gradients(model, x, y)
    numerical = numerical_gradients(model, x, y)
    diff = max_relative_difference(analytic, numerical)
    timings = _timed_pair(model, x, y, be, repeat, settle_s, target_sample_s)
    bp, num = timings["backprop"], timings["numerical"]
    layout = "-".join(str(d) for d in DIGITS_LAYERS)
    family = f"gradient {layout} digits {DTYPE}"
    case = f"{family} [{batch}]"
    n_params = sum(int(p.size) for _, p, _ in model.named_parameters())
    info = {"dtype": DTYPE, "layers": list(DIGITS_LAYERS), "batch": batch, "params": n_params,
            "eps": EPS, "threads": be.num_threads(), "device": be.device}
    ratio = num.median / bp.median
    return [
        _row(case, family, batch, f"{backend_name}/backprop", bp.median, bp.q1, bp.q3,
             bp.samples, f"max rel diff {diff:.2e}; backprop {ratio:,.0f}x faster", info,
             {BASELINE: ratio}),
        _row(case, family, batch, f"{backend_name}/numerical", num.median, num.q1, num.q3,
             num.samples, f"{2 * n_params} loss evaluations", info, {BASELINE: 1.0}),
    ]


def _timed_pair(model, x, y, be, repeat, settle_s, target_sample_s):
    """Backprop (many samples) and numerical (at most NUMERICAL_REPEAT, one call each)."""
    bp = measure_interleaved({"backprop": (lambda: model.loss_gradients(x, y), be.synchronize)},
                             repeat=repeat, settle_s=settle_s, target_sample_s=target_sample_s)
    num = measure_interleaved(
        {"numerical": (lambda: numerical_gradients(model, x, y), be.synchronize)},
        repeat=min(repeat, NUMERICAL_REPEAT), warmup=0, settle_s=settle_s, target_sample_s=0.0,
    )
    return {**bp, **num}


def sampled_gradient_rows(backend_name: str, batch: int, sample: int, repeat: int,
                          settle_s: float, target_sample_s: float) -> list[Result]:
    """Backprop vs numerical for 784-100-10, numerical sampled and extrapolated."""
    from fastnn.backends import get_backend

    be = get_backend(backend_name)
    model, x, y = wide_problem(be, batch)
    coords = sampled_coordinates(model, sample)
    n_params = sum(int(p.size) for _, p, _ in model.named_parameters())
    scale = n_params / len(coords)
    analytic = analytic_gradients(model, x, y)
    picked = np.array([analytic[k].reshape(-1)[i] for k, i in coords])
    numerical = sampled_numerical(model, x, y, coords)
    diff = max_relative_difference([picked], [numerical])
    bp = measure_interleaved({"bp": (lambda: model.loss_gradients(x, y), be.synchronize)},
                             repeat=repeat, settle_s=settle_s,
                             target_sample_s=target_sample_s)["bp"]
    num = measure_interleaved(
        {"num": (lambda: sampled_numerical(model, x, y, coords), be.synchronize)},
        repeat=min(repeat, NUMERICAL_REPEAT), warmup=0, settle_s=settle_s, target_sample_s=0.0,
    )["num"]
    extrapolated = [s * scale for s in num.samples]
    median = num.median * scale
    layout = "-".join(str(d) for d in WIDE_LAYERS)
    family = f"gradient {layout} random {DTYPE}"
    case = f"{family} [{batch}]"
    info = {"dtype": DTYPE, "layers": list(WIDE_LAYERS), "batch": batch, "params": n_params,
            "sampled_coordinates": len(coords), "extrapolation_factor": scale, "eps": EPS,
            "threads": be.num_threads(), "device": be.device}
    ratio = median / bp.median
    return [
        _row(case, family, batch, f"{backend_name}/backprop", bp.median, bp.q1, bp.q3,
             bp.samples, f"max rel diff {diff:.2e} on the sampled coordinates; backprop "
             f"{ratio:,.0f}x faster", info, {BASELINE: ratio}),
        _row(case, family, batch, f"{backend_name}/numerical", median, num.q1 * scale,
             num.q3 * scale, extrapolated,
             f"SAMPLED: {len(coords)} of {n_params} coordinates timed, time extrapolated "
             f"x{scale:.1f}", info, {BASELINE: 1.0}),
    ]


def _accuracy(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    probs = model.predict(x, batch_size=len(x))
    return float((probs.argmax(axis=1) == y).mean())


def training_rows(backend_name: str, batch: int, steps: int) -> list[Result]:
    """Train 64-50-10 on digits with numerical gradients and with backprop, same steps."""
    from fastnn.backends import get_backend

    be = get_backend(backend_name)
    x_train, y_train, x_test, y_test = _digits()
    order = np.random.default_rng(SEED).permutation(len(x_train))
    batches = []
    for s in range(steps):
        idx = np.take(order, np.arange(s * batch, (s + 1) * batch), mode="wrap")
        batches.append((x_train[idx], y_train[idx]))
    results = {}
    for method in ("backprop", "numerical"):
        model = build_net(be, DIGITS_LAYERS)
        device_batches = [(be.asarray(xb), model.prepare_targets(yb)) for xb, yb in batches]
        start = time.perf_counter()
        for xb, yb in device_batches:
            if method == "backprop":
                model.loss_gradients(xb, yb)
            else:
                for (_, _, g), num in zip(model.named_parameters(),
                                          numerical_gradients(model, xb, yb), strict=True):
                    g[...] = be.asarray(num)
            model.optimizer.update(model._param_list(), model._grad_list())
        be.synchronize()
        seconds = time.perf_counter() - start
        results[method] = (seconds, _accuracy(model, x_test, y_test))
    (t_bp, acc_bp), (t_num, acc_num) = results["backprop"], results["numerical"]
    layout = "-".join(str(d) for d in DIGITS_LAYERS)
    family = f"training {layout} digits {steps} steps {DTYPE}"
    case = f"{family} [{batch}]"
    info = {"dtype": DTYPE, "layers": list(DIGITS_LAYERS), "batch": batch, "steps": steps,
            "optimizer": {"SGD": {"learning_rate": TRAIN_LEARNING_RATE}},
            "test_samples": len(x_test), "threads": be.num_threads(), "device": be.device}
    ratio = t_num / t_bp
    diff_points = 100.0 * (acc_bp - acc_num)
    return [
        _row(case, family, batch, f"{backend_name}/backprop", t_bp, t_bp, t_bp, [t_bp],
             f"test accuracy {100 * acc_bp:.2f}%; {ratio:,.0f}x faster; accuracy "
             f"{diff_points:+.2f} points vs numerical", {**info, "test_accuracy": acc_bp},
             {BASELINE: ratio}),
        _row(case, family, batch, f"{backend_name}/numerical", t_num, t_num, t_num, [t_num],
             f"test accuracy {100 * acc_num:.2f}% (one run each)",
             {**info, "test_accuracy": acc_num}, {BASELINE: 1.0}),
    ]


def gradient_results(
    backends: list[str],
    sizes: list[int] | None = None,
    repeat: int = 7,
    sample: int = DEFAULT_SAMPLE,
    steps: int = DEFAULT_TRAIN_STEPS,
    settle_s: float = SETTLE_S,
    target_sample_s: float = TARGET_SAMPLE_S,
    progress: Any = None,
) -> list[Result]:
    """Every row of the gradient suite; the training comparison runs on the first backend.

    Args:
        backends: fastnn backends (each gets the two per-gradient comparisons).
        sizes: minibatch sizes (default 100).
        repeat: samples of the backprop timings (numerical: at most 3).
        sample: coordinates differentiated numerically for 784-100-10.
        steps: SGD steps of the training comparison (0: skip it).
    """
    rows: list[Result] = []
    for batch in sizes or (DEFAULT_BATCH,):
        for name in backends:
            if progress is not None:
                progress(f"gradient {name} batch {batch}")
            rows += full_gradient_rows(name, batch, repeat, settle_s, target_sample_s)
            rows += sampled_gradient_rows(name, batch, sample, repeat, settle_s,
                                          target_sample_s)
        if steps > 0 and backends:
            if progress is not None:
                progress(f"training comparison {backends[0]} batch {batch}")
            rows += training_rows(backends[0], batch, steps)
    return rows


__all__ = [
    "DEFAULT_SAMPLE",
    "DEFAULT_TRAIN_STEPS",
    "DIGITS_LAYERS",
    "WIDE_LAYERS",
    "analytic_gradients",
    "build_net",
    "digits_problem",
    "full_gradient_rows",
    "gradient_results",
    "max_relative_difference",
    "numerical_gradients",
    "sampled_coordinates",
    "sampled_gradient_rows",
    "training_rows",
    "wide_problem",
]
