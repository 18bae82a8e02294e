"""Every op of every backend equals the NumPy reference, op by op.

Each reference op has a case below (a meta-test fails for an op without one, so a new op
cannot slip in untested). A case calls the op on the backend under test and on the reference
with identical inputs, then compares, per dtype tolerance (float32 rtol 1e-4, float64 rtol
1e-7): the results, and every array argument afterwards (so in-place ``out=`` buffers,
optimizer state and gradients written in place are compared too). Arguments named in
``const`` must come back unchanged (``dy``, ``grad``, ``target``, ...), and with ``finite``
every result must be finite (inputs as large as +-1e4). The Numba backend runs every case
twice: as is (small arrays take the serial build of a kernel) and with a tiny block size
(every kernel takes its parallel build, with many blocks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from fastnn.kernels.reference.activations import ACTIVATIONS
from fastnn.kernels.registry import load_reference_ops
from tests.conftest import assert_close

DTYPES = [np.float32, np.float64]
CASES: dict[str, Callable[[OpCheck], None]] = {}


def case(*names: str):
    """Register the decorated function as the test case of the ops ``names``."""

    def register(fn):
        for name in names:
            assert name not in CASES, name
            CASES[name] = fn
        return fn

    return register


# -- the runner ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Alias:
    """Pass the very same array object as the argument called ``name`` (in-place variants);
    the reference is called out of place (with a copy of that argument) and its result is what
    the in-place result must equal."""

    name: str


@dataclass(frozen=True)
class Strided:
    """A non-contiguous view ``base[index]`` (copied per backend, then sliced)."""

    base: np.ndarray
    index: Any


@dataclass(frozen=True)
class State:
    """An array kept between calls of one :class:`Session` (optimizer state)."""

    name: str


def _to_host(be, a):
    return be.to_numpy(a) if be.is_array(a) else a


def _compare(actual, expected, dtype, what: str) -> None:
    if expected is None:
        assert actual is None, f"{what}: expected None, received {type(actual).__name__}"
        return
    if isinstance(expected, tuple | list):
        assert isinstance(actual, tuple | list) and len(actual) == len(expected), what
        for k, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _compare(a, e, dtype, f"{what}[{k}]")
        return
    expected = np.asarray(expected)
    actual = np.asarray(actual)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if expected.dtype.kind in "biu":
        np.testing.assert_array_equal(actual, expected, err_msg=what)
        return
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    assert_close(actual, expected, dtype, what)


def _all_finite(value, what: str) -> None:
    if value is None:
        return
    if isinstance(value, tuple | list):
        for k, v in enumerate(value):
            _all_finite(v, f"{what}[{k}]")
        return
    arr = np.asarray(value)
    if arr.dtype.kind == "f":
        assert np.isfinite(arr).all(), f"{what}: non-finite values"


class Session:
    """Persistent per-backend copies of some arrays, for a sequence of calls."""

    def __init__(self, check: OpCheck, arrays: dict[str, np.ndarray]) -> None:
        self.check = check
        self.sides: dict[str, dict[str, Any]] = {"backend": {}, "reference": {}}
        self.private: set[str] = set()  # stored results: backend-specific, not compared
        for side, be in (("backend", check.be), ("reference", check.ref)):
            for name, a in arrays.items():
                self.sides[side][name] = check.send(be, a)

    def call(
        self,
        op: str,
        const: tuple[str, ...] | set[str] = (),
        finite: bool = False,
        skip: tuple[str, ...] = (),
        what: str = "",
        pick: Callable[[Any], Any] | None = None,
        store: dict[str, Callable[[Any], Any]] | None = None,
        **kwargs: Any,
    ) -> tuple[Any, Any]:
        """Call ``op`` on both backends with ``kwargs``; compare the results (or the part
        ``pick`` selects), the array arguments and the session's arrays afterwards (except
        those named in ``skip``), and check that the arguments named in ``const`` were not
        written. ``store`` keeps parts of each backend's own result as session arrays."""
        check = self.check
        label = f"{op}[{what}]" if what else op
        where = f"on {check.be.name}"
        # In-place outputs and the inputs they overwrite are checked through the result.
        aliased = {value.name for value in kwargs.values() if isinstance(value, Alias)}
        aliased |= {name for name, value in kwargs.items() if isinstance(value, Alias)}
        results: dict[str, Any] = {}
        after: dict[str, dict[str, np.ndarray]] = {}
        for side, be in (("backend", check.be), ("reference", check.ref)):
            args = self._arguments(side, be, kwargs)
            before = {name: np.array(_to_host(be, args[name]), copy=True) for name in const}
            result = getattr(be, op)(**args)
            for name, part in (store or {}).items():
                self.sides[side][name] = part(result)
                self.private.add(name)
            if side == "backend":
                self._check_in_place(be, args, kwargs, result, f"{label} {where}")
            results[side] = _host_tree(be, result)
            after[side] = {
                n: _to_host(be, a) for n, a in args.items() if be.is_array(a) and n not in aliased
            }
            after[side].update(
                {f"state {n}": _to_host(be, a) for n, a in self.sides[side].items()
                 if n not in self.private}
            )
            for name, value in before.items():
                np.testing.assert_array_equal(
                    _to_host(be, args[name]), value,
                    err_msg=f"{label} on {be.name} wrote its input {name!r}",
                )
        actual, expected = results["backend"], results["reference"]
        if pick is not None:
            actual, expected = pick(actual), pick(expected)
        _compare(actual, expected, check.dtype, f"{label} result {where}")
        for name, value in after["backend"].items():
            if name in skip or name.removeprefix("state ") in skip:
                continue
            _compare(value, after["reference"][name], check.dtype,
                     f"{label} argument {name!r} afterwards {where}")
        if finite:
            _all_finite(actual, f"{label} {where}")
            _all_finite(expected, f"{label} on the reference")
        return actual, expected

    @staticmethod
    def _check_in_place(be, args, kwargs, result, label: str) -> None:
        """An aliased output (``out=Alias("x")``) must be returned as the very same array."""
        returned = list(result) if isinstance(result, tuple | list) else [result]
        for name, value in kwargs.items():
            if isinstance(value, Alias):
                assert any(r is args[name] for r in returned), (
                    f"{label}: the in-place output {name}={value.name} was not returned"
                )

    def _arguments(self, side: str, be, kwargs: dict[str, Any]) -> dict[str, Any]:
        args: dict[str, Any] = {}
        for name, value in kwargs.items():
            if isinstance(value, State):
                args[name] = self.sides[side][value.name]
            elif isinstance(value, Strided):
                args[name] = self.check.send(be, value.base)[value.index]
            elif isinstance(value, np.ndarray):
                args[name] = self.check.send(be, value)
            else:
                args[name] = value
        for name, value in kwargs.items():
            if isinstance(value, Alias):
                # The reference computes out of place (into a copy of the aliased input):
                # the in-place result must equal that.
                target = args[value.name]
                args[name] = target if side == "backend" else target.copy()
        return args


def _host_tree(be, value):
    if isinstance(value, tuple | list):
        return type(value)(_host_tree(be, v) for v in value)
    if be.is_array(value):
        return np.array(be.to_numpy(value), copy=True)
    return value


class OpCheck:
    """Inputs and the comparison of one backend against the reference, for one dtype."""

    def __init__(self, be, ref, dtype) -> None:
        self.be = be
        self.ref = ref
        self.dtype = np.dtype(dtype)
        self.rng = np.random.default_rng(1234)

    def send(self, be, a: np.ndarray):
        """A fresh copy of host array ``a`` on backend ``be``."""
        return be.asarray(np.array(a, copy=True))

    def data(self, *shape: int, scale: float = 1.0, low: float | None = None) -> np.ndarray:
        """Normal (or uniform [low, scale) when ``low`` is given) host data of the dtype."""
        if low is not None:
            a = self.rng.uniform(low, scale, size=shape)
        else:
            a = self.rng.standard_normal(shape) * scale
        return a.astype(self.dtype)

    def extreme(self, *shape: int) -> np.ndarray:
        """Values up to +-1e4, with both extremes present."""
        a = self.rng.uniform(-1e4, 1e4, size=shape)
        a.flat[0] = 1e4
        a.flat[-1] = -1e4
        return a.astype(self.dtype)

    def empty(self, *shape: int) -> np.ndarray:
        """An output buffer (filled with garbage-like values: ops must overwrite it)."""
        return np.full(shape, 7.25, dtype=self.dtype)

    def run(self, op: str, **kwargs: Any) -> tuple[Any, Any]:
        """One call of ``op`` on fresh copies of the inputs (see :meth:`Session.call`)."""
        return Session(self, {}).call(op, **kwargs)

    def session(self, **arrays: np.ndarray) -> Session:
        """Persistent per-backend arrays for several calls."""
        return Session(self, arrays)


# -- activations -----------------------------------------------------------------------------
#: Activations whose REFERENCE backward is wrong with ``out=dy``: it writes ``1 - y`` (sigmoid)
#: or ``y * y`` (tanh) into ``out`` before it reads ``dy``. Their in-place variants are not
#: run where the reference serves the op; test_reference_backward_in_place shows the bug.
def _alphas(name: str) -> list[float]:
    return [0.0, 0.1] if getattr(ACTIVATIONS[name], "default_alpha", 0.0) else [0.0]


def _forward_host(c: OpCheck, name: str, x: np.ndarray, alpha: float) -> np.ndarray:
    return np.asarray(c.ref.activation_forward(name, np.array(x, copy=True), alpha=alpha))


@case("activation_forward")
def _activation_forward(c: OpCheck) -> None:
    for name in ACTIVATIONS:
        for alpha in _alphas(name):
            for shape in [(7, 33), (2, 3, 5), (40,)]:
                x = c.data(*shape, scale=3.0)
                kw = {"name": name, "alpha": alpha, "what": f"{name} {shape} alpha={alpha}"}
                c.run("activation_forward", x=x, const={"x"}, **kw)
                c.run("activation_forward", x=x, out=c.empty(*shape), const={"x"}, **kw)
                c.run("activation_forward", x=x, out=Alias("x"), **kw)
            kw = {"name": name, "alpha": alpha}
            c.run("activation_forward", x=c.extreme(9, 17), finite=True, const={"x"},
                  what=f"{name} +-1e4", **kw)
            c.run("activation_forward", x=Strided(c.data(8, 20, scale=3.0), (slice(None),
                  slice(None, None, 2))), const={"x"}, what=f"{name} strided", **kw)


@case("activation_backward")
def _activation_backward(c: OpCheck) -> None:
    for name in ACTIVATIONS:
        for alpha in _alphas(name):
            for shape in [(7, 33), (2, 3, 5)]:
                x = c.data(*shape, scale=3.0)
                y = _forward_host(c, name, x, alpha)
                dy = c.data(*shape)
                kw = {"name": name, "alpha": alpha, "x": x, "y": y, "dy": dy,
                      "what": f"{name} {shape} alpha={alpha}"}
                c.run("activation_backward", const={"dy", "x", "y"}, **kw)
                c.run("activation_backward", out=c.empty(*shape), const={"dy", "x", "y"}, **kw)
                c.run("activation_backward", out=Alias("dy"), const={"x", "y"}, **kw)
            x = c.extreme(9, 17)
            y = _forward_host(c, name, x, alpha)
            c.run("activation_backward", name=name, alpha=alpha, x=x, y=y,
                  dy=c.extreme(9, 17) * 1e-3, finite=True, const={"dy", "x", "y"},
                  what=f"{name} +-1e4")
            x = c.data(6, 10, scale=3.0)
            y = _forward_host(c, name, x, alpha)
            c.run("activation_backward", name=name, alpha=alpha, x=x, y=y,
                  dy=Strided(c.data(6, 20), (slice(None), slice(None, None, 2))),
                  const={"dy", "x", "y"}, what=f"{name} strided dy")


@case("bias_activation")
def _bias_activation(c: OpCheck) -> None:
    for name in ACTIVATIONS:
        for alpha in _alphas(name):
            for shape in [(7, 33), (2, 3, 5), (1, 16)]:
                z = c.data(*shape, scale=3.0)
                b = c.data(shape[-1])
                kw = {"name": name, "alpha": alpha, "z": z,
                      "what": f"{name} {shape} alpha={alpha}"}
                c.run("bias_activation", b=b, const={"z", "b"}, **kw)
                c.run("bias_activation", b=None, const={"z"}, **kw)
                c.run("bias_activation", b=b, out=c.empty(*shape), const={"z", "b"}, **kw)
                c.run("bias_activation", b=b, out=Alias("z"), const={"b"}, **kw)
            c.run("bias_activation", name=name, alpha=alpha, z=c.extreme(9, 17),
                  b=c.data(17), finite=True, what=f"{name} +-1e4")


@case("bias_activation_backward")
def _bias_activation_backward(c: OpCheck) -> None:
    for name in ACTIVATIONS:
        for alpha in _alphas(name):
            for shape in [(7, 33), (2, 3, 5), (1, 16), (300, 24)]:
                x = c.data(*shape, scale=3.0)
                y = _forward_host(c, name, x, alpha)
                dy = c.data(*shape)
                d = shape[-1]
                kw = {"name": name, "alpha": alpha, "x": x, "y": y, "dy": dy,
                      "what": f"{name} {shape} alpha={alpha}"}
                const = {"dy", "x", "y"}
                c.run("bias_activation_backward", const=const, **kw)
                c.run("bias_activation_backward", db=c.empty(d), const=const, **kw)
                c.run("bias_activation_backward", dz=c.empty(*shape), db=c.empty(d),
                      const=const, **kw)
                c.run("bias_activation_backward", dz=Alias("dy"), db=c.empty(d),
                      const={"x", "y"}, **kw)
            x = c.extreme(9, 17)
            c.run("bias_activation_backward", name=name, alpha=alpha, x=x,
                  y=_forward_host(c, name, x, alpha), dy=c.data(9, 17), db=c.empty(17),
                  finite=True, const={"dy", "x", "y"}, what=f"{name} +-1e4")


# -- dense -----------------------------------------------------------------------------------
@case("matmul")
def _matmul(c: OpCheck) -> None:
    a, b = c.data(5, 7), c.data(7, 3)
    c.run("matmul", a=a, b=b, const={"a", "b"})
    c.run("matmul", a=a, b=b, out=c.empty(5, 3), const={"a", "b"})
    c.run("matmul", a=c.data(2, 4, 6), b=c.data(2, 6, 3), const={"a", "b"}, what="batched")
    # Sizes the Numba backend's own GEMM takes: edge rows and columns, K over one block.
    for m, k, n in ((37, 70, 45), (13, 300, 64)):
        c.run("matmul", a=c.data(m, k), b=c.data(k, n), out=c.empty(m, n),
              const={"a", "b"}, what=f"{m}x{k}x{n}")


@case("prepare_rhs")
def _prepare_rhs(c: OpCheck) -> None:
    """A prepared right-hand side gives the plain product, call after call, in both layouts
    of ``b`` (the prepared form itself is backend-specific: not compared)."""
    for m, k, n in ((5, 7, 3), (37, 300, 45), (1, 256, 64)):
        a, b = c.data(m, k), c.data(k, n)
        expected = _to_host(c.ref, c.ref.matmul(c.send(c.ref, a), c.send(c.ref, b)))
        for layout in ("C", "F"):
            bb = c.send(c.be, b if layout == "C" else np.ascontiguousarray(b.T))
            prepared = c.be.prepare_rhs(bb if layout == "C" else bb.T)
            xa = c.send(c.be, a)
            for k_call in range(2):
                got = c.be.matmul(xa, prepared)
                _compare(_to_host(c.be, got), expected, c.dtype,
                         f"prepare_rhs {m}x{k}x{n} b {layout} call {k_call}")


@case("linear")
def _linear(c: OpCheck) -> None:
    for n in (1, 9):
        x, W, b = c.data(n, 7), c.data(7, 4), c.data(4)
        c.run("linear", x=x, W=W, b=b, const={"x", "W", "b"})
        c.run("linear", x=x, W=W, b=None, const={"x", "W"})
        c.run("linear", x=x, W=W, b=b, out=c.empty(n, 4), const={"x", "W", "b"})
    x, W, b = c.data(40, 70), c.data(70, 64), c.data(64)
    c.run("linear", x=x, W=W, b=b, const={"x", "W", "b"}, what="GEMM-sized")


@case("linear_backward")
def _linear_backward(c: OpCheck) -> None:
    for n in (1, 9):
        dz, x, W = c.data(n, 4), c.data(n, 7), c.data(7, 4)
        const = {"dz", "x", "W"}
        c.run("linear_backward", dz=dz, x=x, W=W, dW=c.empty(7, 4), db=c.empty(4), const=const,
              what=f"N={n}")
        c.run("linear_backward", dz=dz, x=x, W=W, dW=c.empty(7, 4), db=c.empty(4),
              dx=c.empty(n, 7), const=const, what=f"N={n} dx buffer")
        c.run("linear_backward", dz=dz, x=x, W=W, dW=c.empty(7, 4), need_dx=False,
              const=const, what=f"N={n} no dx")
    dz, x, W = c.data(40, 64), c.data(40, 70), c.data(70, 64)
    c.run("linear_backward", dz=dz, x=x, W=W, dW=c.empty(70, 64), db=c.empty(64),
          dx=c.empty(40, 70), const={"dz", "x", "W"}, what="GEMM-sized")


# -- softmax ---------------------------------------------------------------------------------
@case("softmax", "log_softmax")
def _softmax(c: OpCheck) -> None:
    for op in ("softmax", "log_softmax"):
        for shape in [(6, 11), (2, 3, 7), (13,), (3, 1000)]:
            x = c.data(*shape, scale=4.0)
            c.run(op, x=x, const={"x"}, what=str(shape))
            c.run(op, x=x, out=c.empty(*shape), const={"x"}, what=f"{shape} out")
            c.run(op, x=x, out=Alias("x"), what=f"{shape} in place")
        c.run(op, x=c.extreme(5, 40), finite=True, const={"x"}, what="+-1e4")
        c.run(op, x=Strided(c.data(6, 22), (slice(None), slice(None, None, 2))),
              const={"x"}, what="strided")


@case("softmax_backward")
def _softmax_backward(c: OpCheck) -> None:
    for shape in [(6, 11), (2, 3, 7), (13,)]:
        y = np.asarray(c.ref.softmax(c.data(*shape, scale=2.0)))
        dy = c.data(*shape)
        c.run("softmax_backward", dy=dy, y=y, const={"dy", "y"}, what=str(shape))
        c.run("softmax_backward", dy=dy, y=y, out=c.empty(*shape), const={"dy", "y"},
              what=f"{shape} out")
        c.run("softmax_backward", dy=dy, y=y, out=Alias("dy"), const={"y"},
              what=f"{shape} in place")
    y = np.asarray(c.ref.softmax(c.extreme(5, 40)))
    c.run("softmax_backward", dy=c.extreme(5, 40), y=y, finite=True, const={"dy", "y"},
          what="+-1e4")


# -- losses ----------------------------------------------------------------------------------
def _one_hot(c: OpCheck, labels: np.ndarray, classes: int) -> np.ndarray:
    t = np.zeros((labels.size, classes), dtype=c.dtype)
    t[np.arange(labels.size), labels] = 1
    return t


@case("softmax_cross_entropy")
def _softmax_cross_entropy(c: OpCheck) -> None:
    for n, k in [(16, 10), (3, 1000), (1, 5)]:
        logits = c.data(n, k, scale=3.0)
        one_hot = _one_hot(c, c.rng.integers(0, k, n), k)
        soft = np.asarray(c.ref.softmax(c.data(n, k)))
        for tname, target in (("one-hot", one_hot), ("soft", soft)):
            what = f"{n}x{k} {tname}"
            kw = {"logits": logits, "target": target}
            c.run("softmax_cross_entropy", const={"logits", "target"}, what=what, **kw)
            c.run("softmax_cross_entropy", dx=c.empty(n, k), scale=0.5,
                  const={"logits", "target"}, what=f"{what} dx scale", **kw)
            c.run("softmax_cross_entropy", dx=Alias("logits"), const={"target"},
                  what=f"{what} dx=logits", **kw)
    k = 30
    c.run("softmax_cross_entropy", logits=c.extreme(8, k),
          target=_one_hot(c, c.rng.integers(0, k, 8), k), finite=True,
          const={"logits", "target"}, what="+-1e4")


@case("sparse_softmax_cross_entropy")
def _sparse_softmax_cross_entropy(c: OpCheck) -> None:
    for n, k in [(16, 10), (3, 1000), (1, 5)]:
        logits = c.data(n, k, scale=3.0)
        for label_dtype in (np.int64, np.int32):
            labels = c.rng.integers(0, k, n).astype(label_dtype)
            what = f"{n}x{k} {np.dtype(label_dtype).name}"
            kw = {"logits": logits, "labels": labels}
            c.run("sparse_softmax_cross_entropy", const={"logits", "labels"}, what=what, **kw)
            c.run("sparse_softmax_cross_entropy", dx=c.empty(n, k), scale=2.0,
                  const={"logits", "labels"}, what=f"{what} dx scale", **kw)
            c.run("sparse_softmax_cross_entropy", dx=Alias("logits"), const={"labels"},
                  what=f"{what} dx=logits", **kw)
    labels = np.array([0, -1, 3, -4], dtype=np.int64)
    c.run("sparse_softmax_cross_entropy", logits=c.data(4, 6), labels=labels,
          const={"logits", "labels"}, what="negative labels")
    c.run("sparse_softmax_cross_entropy", logits=c.extreme(8, 30),
          labels=c.rng.integers(0, 30, 8), finite=True, const={"logits", "labels"},
          what="+-1e4")


# -- optimizers ------------------------------------------------------------------------------
STEPS = 4

SGD_CONFIGS = [
    {"lr": 0.1},
    {"lr": 0.1, "weight_decay": 0.05},
    {"lr": 0.05, "momentum": 0.9},
    {"lr": 0.05, "momentum": 0.9, "nesterov": True},
    {"lr": 0.05, "momentum": 0.8, "dampening": 0.3},
    {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.1},
    {"lr": 0.05, "momentum": 0.7, "dampening": 0.5, "weight_decay": 0.01},
]


@case("sgd_update")
def _sgd_update(c: OpCheck) -> None:
    for config in SGD_CONFIGS:
        for shape in [(6, 8), (3,), (70000,)]:
            s = c.session(param=c.data(*shape), buf=c.empty(*shape), tmp=c.empty(*shape))
            for step in range(STEPS):
                grad = c.data(*shape)
                buf = State("buf") if config.get("momentum") else None
                tmp = State("tmp") if step % 2 else None
                s.call("sgd_update", param=State("param"), grad=grad, buf=buf, tmp=tmp,
                       first_step=step == 0, const={"grad"}, skip=("tmp",),
                       what=f"{config} {shape} step {step}", **config)


@case("linear_backward_sgd")
def _linear_backward_sgd(c: OpCheck) -> None:
    # (N, D_in, D_out): 64 columns and up to 4 rows take Numba's fused kernel; 4 columns
    # and 6 rows its unfused fallback.
    for n, d_in, d_out in [(1, 9, 64), (3, 5, 80), (1, 7, 4), (6, 5, 64)]:
        for config in SGD_CONFIGS:
            s = c.session(W=c.data(d_in, d_out), buf=c.empty(d_in, d_out),
                          tmp=c.empty(d_in, d_out))
            for step in range(STEPS):
                need_dx = step != 1
                buf = State("buf") if config.get("momentum") else None
                dx = c.empty(n, d_in) if step == 2 else None
                s.call("linear_backward_sgd", dz=c.data(n, d_out), x=c.data(n, d_in),
                       W=State("W"), dW=c.empty(d_in, d_out), buf=buf,
                       tmp=State("tmp") if step % 2 else None, dx=dx, need_dx=need_dx,
                       first_step=step == 0, const={"dz", "x"}, skip=("tmp",),
                       what=f"N={n} {d_in}x{d_out} {config} step {step}", **config)


ADAM_CONFIGS = [
    {},
    {"lr": 0.01, "weight_decay": 0.1},
    {"lr": 0.01, "amsgrad": True},
    {"lr": 0.02, "beta1": 0.8, "beta2": 0.99, "eps": 1e-6, "weight_decay": 0.05,
     "amsgrad": True},
]


@case("adam_update")
def _adam_update(c: OpCheck) -> None:
    for config in ADAM_CONFIGS:
        for shape in [(6, 8), (3,), (70000,)]:
            s = c.session(param=c.data(*shape), m=np.zeros(shape, c.dtype),
                          v=np.zeros(shape, c.dtype), vmax=np.zeros(shape, c.dtype),
                          tmp=c.empty(*shape))
            for step in range(1, STEPS + 1):
                grad = c.data(*shape) * (1e-3 if step == 3 else 1.0)
                vmax = State("vmax") if config.get("amsgrad") else None
                tmp = State("tmp") if step % 2 else None
                s.call("adam_update", param=State("param"), grad=grad, m=State("m"),
                       v=State("v"), vmax=vmax, tmp=tmp, step=step, const={"grad"},
                       skip=("tmp",), what=f"{config} {shape} step {step}", **config)


def _run_steps(c: OpCheck, op: str, shape: tuple[int, ...], state: dict[str, np.ndarray],
               config: dict[str, Any], uses_step: bool = True) -> None:
    """``STEPS`` calls of optimizer ``op`` with fresh gradients, state kept per backend;
    ``tmp``/``tmp2`` scratch buffers alternate between given and None."""
    s = c.session(param=c.data(*shape), tmp=c.empty(*shape), tmp2=c.empty(*shape),
                  **{name: a.copy() for name, a in state.items()})
    scratch = [name for name in ("tmp", "tmp2") if name in _op_params(op)]
    for step in range(1, STEPS + 1):
        grad = c.data(*shape) * (1e-3 if step == 3 else 1.0)
        kwargs = {name: State(name) for name in state}
        kwargs.update({name: State(name) if step % 2 else None for name in scratch})
        if uses_step:
            kwargs["step"] = step
        s.call(op, param=State("param"), grad=grad, const={"grad"}, skip=("tmp", "tmp2"),
               what=f"{config} {shape} step {step}", **kwargs, **config)


def _op_params(op: str) -> set[str]:
    import inspect

    return set(inspect.signature(load_reference_ops()[op]).parameters)


def _zeros(c: OpCheck, shape, *names: str, fill: float = 0.0) -> dict[str, np.ndarray]:
    return {name: np.full(shape, fill, dtype=c.dtype) for name in names}


@case("adagrad_update")
def _adagrad_update(c: OpCheck) -> None:
    for config in ({"lr": 0.1}, {"lr": 0.1, "lr_decay": 0.01, "weight_decay": 0.05}):
        for shape in [(6, 8), (70000,)]:
            _run_steps(c, "adagrad_update", shape, _zeros(c, shape, "accum", fill=0.1), config)


@case("rmsprop_update")
def _rmsprop_update(c: OpCheck) -> None:
    configs = [{}, {"centered": True}, {"momentum": 0.8, "weight_decay": 0.05},
               {"centered": True, "momentum": 0.7, "rho": 0.9, "eps": 1e-6}]
    for config in configs:
        for shape in [(6, 8), (70000,)]:
            names = ["square_avg"]
            if config.get("centered"):
                names.append("grad_avg")
            if config.get("momentum"):
                names.append("buf")
            _run_steps(c, "rmsprop_update", shape, _zeros(c, shape, *names), config,
                       uses_step=False)


@case("adadelta_update")
def _adadelta_update(c: OpCheck) -> None:
    for config in ({}, {"lr": 0.5, "rho": 0.95, "eps": 1e-4, "weight_decay": 0.1}):
        for shape in [(6, 8), (70000,)]:
            _run_steps(c, "adadelta_update", shape,
                       _zeros(c, shape, "square_avg", "acc_delta"), config, uses_step=False)


@case("adamw_update")
def _adamw_update(c: OpCheck) -> None:
    for config in ({}, {"lr": 0.01, "amsgrad": True}, {"weight_decay": 0.0}):
        for shape in [(6, 8), (70000,)]:
            names = ["m", "v", "vmax"] if config.get("amsgrad") else ["m", "v"]
            _run_steps(c, "adamw_update", shape, _zeros(c, shape, *names), config)


@case("adamax_update")
def _adamax_update(c: OpCheck) -> None:
    for config in ({}, {"lr": 0.01, "weight_decay": 0.05}):
        for shape in [(6, 8), (70000,)]:
            _run_steps(c, "adamax_update", shape, _zeros(c, shape, "m", "u"), config)


@case("nadam_update")
def _nadam_update(c: OpCheck) -> None:
    configs = [{}, {"weight_decay": 0.05}, {"weight_decay": 0.05, "decoupled_weight_decay": True}]
    for config in configs:
        for shape in [(6, 8), (70000,)]:
            _run_steps(c, "nadam_update", shape, _zeros(c, shape, "m", "v"), config)


@case("clip_gradient")
def _clip_gradient(c: OpCheck) -> None:
    for shape in [(6, 8), (70000,)]:
        grad = c.data(*shape)
        for scale, clip in [(1.0, None), (0.5, None), (1.0, 0.3), (2.0, 0.5)]:
            kw = {"grad": grad, "scale": scale, "clip_value": clip,
                  "what": f"{shape} scale={scale} clip={clip}"}
            c.run("clip_gradient", out=c.empty(*shape), const={"grad"}, **kw)
            c.run("clip_gradient", out=Alias("grad"), **kw)


@case("sum_of_squares")
def _sum_of_squares(c: OpCheck) -> None:
    for shape in [(6, 8), (70000,), (2, 3, 4)]:
        c.run("sum_of_squares", x=c.data(*shape), const={"x"}, what=str(shape))
    c.run("sum_of_squares", x=Strided(c.data(6, 10), (slice(None), slice(None, None, 2))),
          const={"x"}, what="strided")


# -- recurrent -------------------------------------------------------------------------------
@case("embedding_backward")
def _embedding_backward(c: OpCheck) -> None:
    for m, v, d in [(7, 5, 3), (300, 50, 16)]:
        ids = c.rng.integers(0, v, m)
        ids[: m // 3] = ids[0]  # repeated ids accumulate
        c.run("embedding_backward", ids=ids, dout=c.data(m, d), dW=c.empty(v, d),
              const={"ids", "dout"}, what=f"M={m} V={v} D={d}")


RNN_ACTIVATIONS = [("tanh", "sigmoid"), ("relu", "sigmoid"), ("tanh", "tanh")]


@case("lstm_cell_forward", "lstm_cell_backward")
def _lstm_cell(c: OpCheck) -> None:
    n, h = 5, 7
    for act, rec in RNN_ACTIVATIONS:
        names = {"activation": act, "recurrent_activation": rec}
        s = c.session(gates=c.empty(n, 4 * h), c=c.empty(n, h), h=c.empty(n, h),
                      act_c=c.empty(n, h), dz=c.empty(n, 4 * h), dc_prev=c.empty(n, h))
        c_prev = c.data(n, h)
        s.call("lstm_cell_forward", xz=c.data(n, 4 * h), hz=c.data(n, 4 * h), c_prev=c_prev,
               gates=State("gates"), c=State("c"), h=State("h"), act_c=State("act_c"),
               const={"xz", "c_prev"}, skip=("hz",), what=f"{act}/{rec}", **names)
        kw = {"dh": c.data(n, h), "gates": State("gates"), "c_prev": c_prev,
              "act_c": State("act_c"), "dz": State("dz"), "dc_prev": State("dc_prev")}
        s.call("lstm_cell_backward", dc=c.data(n, h), const={"dh", "dc", "c_prev"},
               what=f"{act}/{rec}", **kw, **names)
        s.call("lstm_cell_backward", dc=State("dc_prev"), const={"dh", "c_prev"},
               what=f"{act}/{rec} dc=dc_prev", **kw, **names)


@case("lstm_sequence_forward", "lstm_sequence_backward")
def _lstm_sequence(c: OpCheck) -> None:
    # H = 32: whole GEMM panels of the Numba backend's fused loop; H = 7: a partial panel.
    for t, n, h in ((4, 7, 32), (3, 5, 7)):
        for act, rec in RNN_ACTIVATIONS:
            names = {"activation": act, "recurrent_activation": rec}
            hs, cs = c.empty(t + 1, n, h), c.empty(t + 1, n, h)
            hs[0], cs[0] = c.data(n, h), c.data(n, h)
            s = c.session(hs=hs, cs=cs, gates=c.empty(t, n, 4 * h), act_c=c.empty(t, n, h),
                          dz=c.empty(t, n, 4 * h))
            for b in (None, c.data(4 * h)):
                s.call("lstm_sequence_forward", xz=c.data(t, n, 4 * h),
                       U=c.data(h, 4 * h, scale=0.3), hs=State("hs"), cs=State("cs"),
                       gates=State("gates"), act_c=State("act_c"), b=b, const={"xz", "U", "b"},
                       what=f"T={t} N={n} H={h} {act}/{rec} bias={b is not None}", **names)
            for dseq, db in ((c.data(t, n, h), None), (None, c.empty(4 * h)),
                             (c.data(t, n, h), c.empty(4 * h))):
                s.call("lstm_sequence_backward", dseq=dseq, dh=c.data(n, h), dc=c.data(n, h),
                       gates=State("gates"), cs=State("cs"), act_c=State("act_c"),
                       Ut=c.data(4 * h, h, scale=0.3), dz=State("dz"), db=db,
                       const={"dseq", "gates", "cs", "act_c", "Ut"},
                       what=f"T={t} N={n} H={h} {act}/{rec} dseq={dseq is not None} "
                            f"db={db is not None}", **names)


@case("gru_cell_forward", "gru_cell_backward")
def _gru_cell(c: OpCheck) -> None:
    n, h = 5, 7
    for act, rec in RNN_ACTIVATIONS:
        names = {"activation": act, "recurrent_activation": rec}
        s = c.session(gates=c.empty(n, 3 * h), h=c.empty(n, h), dxz=c.empty(n, 3 * h),
                      dhz=c.empty(n, 3 * h), dh_prev=c.empty(n, h))
        h_prev, hz = c.data(n, h), c.data(n, 3 * h)
        s.call("gru_cell_forward", xz=c.data(n, 3 * h), hz=hz, h_prev=h_prev,
               gates=State("gates"), h=State("h"), const={"xz", "hz", "h_prev"},
               what=f"{act}/{rec}", **names)
        s.call("gru_cell_backward", dh=c.data(n, h), gates=State("gates"), h_prev=h_prev,
               hz=hz, dxz=State("dxz"), dhz=State("dhz"), dh_prev=State("dh_prev"),
               const={"dh", "h_prev", "hz"}, what=f"{act}/{rec}", **names)


# -- convolution and pooling -----------------------------------------------------------------
# conv2d_forward returns, besides y, what conv2d_backward reads as ``cols``: backend-specific
# (the unfolded input, or the input itself on a direct path), so it is kept per backend and
# not compared.
CONV_GEOMETRIES = [
    # kernel, stride, padding (top, bottom, left, right), dilation
    ((3, 3), (1, 1), (0, 0, 0, 0), (1, 1)),
    ((3, 2), (2, 1), (1, 2, 0, 1), (1, 1)),
    ((2, 2), (1, 2), (1, 1, 1, 1), (2, 1)),
]


def _out_hw(hw, kernel, stride, padding, dilation):
    from fastnn.kernels.reference.conv import conv_output_hw

    return conv_output_hw(hw, kernel, stride, padding, dilation)


@case("im2col", "col2im")
def _im2col_col2im(c: OpCheck) -> None:
    n, ch, hh, ww = 2, 3, 7, 6
    for kernel, stride, padding, dilation in CONV_GEOMETRIES:
        geo = {"kernel_size": kernel, "stride": stride, "padding": padding,
               "dilation": dilation}
        oh, ow = _out_hw((hh, ww), kernel, stride, padding, dilation)
        shape = (ch * kernel[0] * kernel[1], n * oh * ow)
        x = c.data(n, ch, hh, ww)
        c.run("im2col", x=x, const={"x"}, what=str(geo), **geo)
        c.run("im2col", x=x, out=c.empty(*shape), const={"x"}, what=f"{geo} out", **geo)
        cols = c.data(*shape)
        c.run("col2im", cols=cols, x_shape=(n, ch, hh, ww), const={"cols"}, what=str(geo), **geo)
        c.run("col2im", cols=cols, x_shape=(n, ch, hh, ww), out=c.empty(n, ch, hh, ww),
              const={"cols"}, what=f"{geo} out", **geo)


@case("conv2d_forward", "conv2d_backward")
def _conv2d(c: OpCheck) -> None:
    n, ch, hh, ww = 2, 4, 7, 6
    for kernel, stride, padding, dilation in CONV_GEOMETRIES:
        for groups, f in [(1, 6), (2, 6), (4, 4), (4, 8)]:
            geo = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
            what = f"k={kernel} {geo} F={f}"
            oh, ow = _out_hw((hh, ww), kernel, stride, padding, dilation)
            W = c.data(f, ch // groups, *kernel)
            for bias in (c.data(f), None):
                s = c.session()
                s.call("conv2d_forward", x=c.data(n, ch, hh, ww), W=W, b=bias,
                       const={"x", "W", "b"} if bias is not None else {"x", "W"},
                       pick=lambda r: r[0], store={"cols": lambda r: r[1]}, what=what, **geo)
                s.call("conv2d_backward", dy=c.data(n, f, oh, ow), W=W, cols=State("cols"),
                       x_shape=(n, ch, hh, ww), dW=c.empty(*W.shape), db=c.empty(f),
                       const={"dy", "W"}, skip=("cols",), what=what, **geo)
                s.call("conv2d_backward", dy=c.data(n, f, oh, ow), W=W, cols=State("cols"),
                       x_shape=(n, ch, hh, ww), dW=c.empty(*W.shape), need_dx=False,
                       const={"dy", "W"}, skip=("cols",), what=f"{what} no dx", **geo)
            s = c.session()
            s.call("conv2d_forward", x=c.data(n, ch, hh, ww), W=W, b=c.data(f),
                   out=c.empty(n, f, oh, ow), pick=lambda r: r[0],
                   store={"cols": lambda r: r[1]}, skip=("cols", "rows"), what=f"{what} out",
                   **geo)
            s.call("conv2d_backward", dy=c.data(n, f, oh, ow), W=W, cols=State("cols"),
                   x_shape=(n, ch, hh, ww), dx=c.empty(n, ch, hh, ww), const={"dy", "W"},
                   skip=("cols",), what=f"{what} dx buffer", **geo)


POOL_GEOMETRIES = [
    ((2, 2), (2, 2), (0, 0, 0, 0)),
    ((3, 3), (2, 2), (1, 1, 1, 1)),
    ((2, 3), (1, 2), (0, 1, 1, 0)),
]


@case("maxpool2d", "maxpool2d_backward")
def _maxpool2d(c: OpCheck) -> None:
    n, ch, hh, ww = 2, 3, 7, 6
    for pool, stride, padding in POOL_GEOMETRIES:
        geo = {"pool_size": pool, "stride": stride, "padding": padding}
        oh, ow = _out_hw((hh, ww), pool, stride, padding, (1, 1))
        x = c.data(n, ch, hh, ww)
        c.run("maxpool2d", x=x, const={"x"}, what=str(geo), **geo)
        c.run("maxpool2d", x=x, out=c.empty(n, ch, oh, ow),
              argmax=np.zeros((n, ch, oh, ow), np.int32), const={"x"}, what=f"{geo} out",
              **geo)
        _, argmax = c.ref.maxpool2d(np.array(x), **geo)
        argmax = np.asarray(argmax)
        dy = c.data(n, ch, oh, ow)
        c.run("maxpool2d_backward", dy=dy, argmax=argmax, x_shape=(n, ch, hh, ww),
              const={"dy", "argmax"}, what=str(geo), **geo)
        c.run("maxpool2d_backward", dy=dy, argmax=argmax, x_shape=(n, ch, hh, ww),
              out=c.empty(n, ch, hh, ww), const={"dy", "argmax"}, what=f"{geo} out", **geo)


@case("avgpool2d", "avgpool2d_backward")
def _avgpool2d(c: OpCheck) -> None:
    n, ch, hh, ww = 2, 3, 7, 6
    for pool, stride, padding in POOL_GEOMETRIES:
        geo = {"pool_size": pool, "stride": stride, "padding": padding}
        oh, ow = _out_hw((hh, ww), pool, stride, padding, (1, 1))
        x = c.data(n, ch, hh, ww)
        c.run("avgpool2d", x=x, const={"x"}, what=str(geo), **geo)
        c.run("avgpool2d", x=x, out=c.empty(n, ch, oh, ow), const={"x"}, what=f"{geo} out",
              **geo)
        dy = c.data(n, ch, oh, ow)
        c.run("avgpool2d_backward", dy=dy, x_shape=(n, ch, hh, ww), const={"dy"},
              what=str(geo), **geo)
        c.run("avgpool2d_backward", dy=dy, x_shape=(n, ch, hh, ww), out=c.empty(n, ch, hh, ww),
              const={"dy"}, what=f"{geo} out", **geo)
    # 2**20 elements: the numba kernels' parallel builds, planes split between threads.
    n, ch, hh, ww = 4, 64, 64, 64
    for pool, stride, padding in POOL_GEOMETRIES[:2]:
        geo = {"pool_size": pool, "stride": stride, "padding": padding}
        oh, ow = _out_hw((hh, ww), pool, stride, padding, (1, 1))
        c.run("avgpool2d", x=c.data(n, ch, hh, ww), const={"x"}, what=f"{geo} large", **geo)
        c.run("avgpool2d_backward", dy=c.data(n, ch, oh, ow), x_shape=(n, ch, hh, ww),
              const={"dy"}, what=f"{geo} large", **geo)


# -- normalization ---------------------------------------------------------------------------
@case("norm_rows_forward", "norm_rows_backward")
def _norm_rows(c: OpCheck) -> None:
    for r, m in [(6, 10), (3, 700)]:
        x = c.data(r, m, scale=2.0) + 1.5
        c.run("norm_rows_forward", x=x, eps=1e-5, const={"x"}, what=f"{r}x{m}")
        c.run("norm_rows_forward", x=x, eps=1e-3, xhat=c.empty(r, m), const={"x"},
              what=f"{r}x{m} xhat buffer")
        xhat, inv_std = (np.asarray(a) for a in c.ref.norm_rows_forward(x, 1e-5))
        dxhat = c.data(r, m)
        const = {"dxhat", "xhat", "inv_std"}
        kw = {"dxhat": dxhat, "xhat": xhat, "inv_std": inv_std}
        c.run("norm_rows_backward", const=const, what=f"{r}x{m}", **kw)
        c.run("norm_rows_backward", out=c.empty(r, m), const=const, what=f"{r}x{m} out", **kw)


@case("norm_channels_forward", "norm_channels_backward")
def _norm_channels(c: OpCheck) -> None:
    for shape in [(4, 3, 5), (2, 6, 300)]:
        x = c.data(*shape, scale=2.0) - 0.5
        c.run("norm_channels_forward", x=x, eps=1e-5, const={"x"}, what=str(shape))
        c.run("norm_channels_forward", x=x, eps=1e-3, xhat=c.empty(*shape), const={"x"},
              what=f"{shape} xhat buffer")
        xhat, inv_std = (np.asarray(a) for a in c.ref.norm_channels_forward(x, 1e-5)[:2])
        dxhat = c.data(*shape)
        const = {"dxhat", "xhat", "inv_std"}
        kw = {"dxhat": dxhat, "xhat": xhat, "inv_std": inv_std}
        c.run("norm_channels_backward", const=const, what=str(shape), **kw)
        c.run("norm_channels_backward", out=c.empty(*shape), const=const,
              what=f"{shape} out", **kw)


# -- the tests -------------------------------------------------------------------------------
def test_every_reference_op_has_a_case():
    """A new reference op must come with a case here (or it is untested on the backends)."""
    missing = sorted(set(load_reference_ops()) - set(CASES))
    assert not missing, f"reference ops without a case in tests/test_ops.py: {missing}"


@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_reference_backward_in_place(reference, name):
    """The reference contract: ``out=dy`` gives the same dx as a fresh output."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 6))
    y = reference.activation_forward(name, x)
    dy = rng.standard_normal((4, 6))
    expected = reference.activation_backward(name, dy.copy(), x, y)
    dy_in_place = dy.copy()
    actual = reference.activation_backward(name, dy_in_place, x, y, out=dy_in_place)
    assert_close(actual, expected, np.float64, f"{name} backward with out=dy")


def _case_params():
    return [pytest.param(name, id=name) for name in sorted(CASES)]


#: Block size that makes the Numba kernels take their parallel build even for these small
#: test arrays (by default, work of at most ``jit.BLOCK`` items runs the serial build).
TINY_BLOCK = 16


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("op", _case_params())
def test_op_matches_reference(backend, reference, op, dtype, monkeypatch):
    if op not in load_reference_ops():
        pytest.skip(f"no reference op {op!r} in this build")
    CASES[op](OpCheck(backend, reference, dtype))
    if backend.name == "numba":
        from fastnn.kernels.cpu import jit

        monkeypatch.setattr(jit, "BLOCK", TINY_BLOCK)
        CASES[op](OpCheck(backend, reference, dtype))
