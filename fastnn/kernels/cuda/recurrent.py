"""CuPy-backend overrides of the recurrent ops, launching the kernels of
:mod:`fastnn.kernels.cuda.recurrent_sources`.

Same contract as :mod:`fastnn.kernels.cuda.ops`: the names and signatures of the reference
ops in :mod:`fastnn.kernels.reference.recurrent`, inputs never written (except in place
where the reference allows it: ``gates`` may be ``xz``, ``dz`` may be ``gates`` and
``dc_prev`` may be ``dc``; each thread reads its unit's inputs before it writes), and
anything the kernels do not take (host arrays, other dtypes, strided views, partly
overlapping buffers, activations without a code) goes to the reference version, which runs
on CuPy through ``be.xp``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fastnn.kernels.cuda.ops import _device_arrays, _launch_elementwise, _no_partial_overlap
from fastnn.kernels.cuda.recurrent_sources import RECURRENT
from fastnn.kernels.cuda.sources import ACTIVATION_CODES
from fastnn.kernels.reference import recurrent as ref
from fastnn.kernels.registry import override

#: Gate activations the cell kernels implement (codes shared with the activation kernels).
CELL_ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh")


def _codes(activation: str, recurrent_activation: str) -> tuple[np.int32, np.int32] | None:
    if activation not in CELL_ACTIVATIONS or recurrent_activation not in CELL_ACTIVATIONS:
        return None
    return np.int32(ACTIVATION_CODES[activation]), np.int32(ACTIVATION_CODES[recurrent_activation])


def _shaped(arrays_and_shapes) -> bool:
    return all(tuple(a.shape) == shape for a, shape in arrays_and_shapes)


def _ready(be: Any, pairs, outputs, inputs) -> bool:
    """Kernel-ready arrays of the right shapes; outputs disjoint from the inputs they do not
    alias exactly (in place)."""
    arrays = [a for a, _ in pairs]
    if not _device_arrays(be, *arrays) or not _shaped(pairs):
        return False
    return all(_no_partial_overlap(out, x) for out in outputs for x in inputs) and (
        _no_partial_overlap(*outputs)
    )


@override("cupy")
def lstm_cell_forward(
    be, xz, hz, c_prev, gates, c, h, act_c,
    activation: str = "tanh", recurrent_activation: str = "sigmoid",
):
    """Fused LSTM step (see the reference op); one CUDA kernel."""
    codes = _codes(activation, recurrent_activation)
    shape = tuple(getattr(c_prev, "shape", ()))
    if codes is not None and len(shape) == 2:
        N, H = shape
        g4 = (N, 4 * H)
        pairs = [(xz, g4), (hz, g4), (c_prev, shape), (gates, g4), (c, shape), (h, shape),
                 (act_c, shape)]
        if _ready(be, pairs, [gates, c, h, act_c], [xz, hz, c_prev]):
            _launch_elementwise(
                RECURRENT, "fastnn_lstm_cell_forward", c_prev.dtype, N * H,
                (xz, hz, c_prev, gates, c, h, act_c, np.int64(N), np.int64(H), *codes),
            )
            return h
    return ref.lstm_cell_forward(be, xz, hz, c_prev, gates, c, h, act_c,
                                 activation, recurrent_activation)


@override("cupy")
def lstm_cell_backward(
    be, dh, dc, gates, c_prev, act_c, dz, dc_prev,
    activation: str = "tanh", recurrent_activation: str = "sigmoid",
):
    """Fused LSTM step backward (see the reference op); ``dc_prev`` may be ``dc`` and
    ``dz`` may be ``gates`` (in place)."""
    codes = _codes(activation, recurrent_activation)
    shape = tuple(getattr(act_c, "shape", ()))
    if codes is not None and len(shape) == 2:
        N, H = shape
        g4 = (N, 4 * H)
        pairs = [(dh, shape), (dc, shape), (gates, g4), (c_prev, shape), (act_c, shape),
                 (dz, g4), (dc_prev, shape)]
        if _ready(be, pairs, [dz, dc_prev], [dh, dc, gates, c_prev, act_c]):
            _launch_elementwise(
                RECURRENT, "fastnn_lstm_cell_backward", act_c.dtype, N * H,
                (dh, dc, gates, c_prev, act_c, dz, dc_prev, np.int64(N), np.int64(H), *codes),
            )
            return dz
    return ref.lstm_cell_backward(be, dh, dc, gates, c_prev, act_c, dz, dc_prev,
                                  activation, recurrent_activation)


@override("cupy")
def gru_cell_forward(
    be, xz, hz, h_prev, gates, h,
    activation: str = "tanh", recurrent_activation: str = "sigmoid",
):
    """Fused GRU step (reset_after=True; see the reference op); one CUDA kernel."""
    codes = _codes(activation, recurrent_activation)
    shape = tuple(getattr(h_prev, "shape", ()))
    if codes is not None and len(shape) == 2:
        N, H = shape
        g3 = (N, 3 * H)
        pairs = [(xz, g3), (hz, g3), (h_prev, shape), (gates, g3), (h, shape)]
        if _ready(be, pairs, [gates, h], [xz, hz, h_prev]):
            _launch_elementwise(
                RECURRENT, "fastnn_gru_cell_forward", h_prev.dtype, N * H,
                (xz, hz, h_prev, gates, h, np.int64(N), np.int64(H), *codes),
            )
            return h
    return ref.gru_cell_forward(be, xz, hz, h_prev, gates, h, activation, recurrent_activation)


@override("cupy")
def gru_cell_backward(
    be, dh, gates, h_prev, hz, dxz, dhz, dh_prev,
    activation: str = "tanh", recurrent_activation: str = "sigmoid",
):
    """Fused GRU step backward (reset_after=True; see the reference op)."""
    codes = _codes(activation, recurrent_activation)
    shape = tuple(getattr(dh, "shape", ()))
    if codes is not None and len(shape) == 2:
        N, H = shape
        g3 = (N, 3 * H)
        pairs = [(dh, shape), (gates, g3), (h_prev, shape), (hz, g3), (dxz, g3), (dhz, g3),
                 (dh_prev, shape)]
        if _ready(be, pairs, [dxz, dhz, dh_prev], [dh, gates, h_prev, hz]):
            _launch_elementwise(
                RECURRENT, "fastnn_gru_cell_backward", dh.dtype, N * H,
                (dh, gates, h_prev, hz, dxz, dhz, dh_prev, np.int64(N), np.int64(H), *codes),
            )
            return dxz
    return ref.gru_cell_backward(be, dh, gates, h_prev, hz, dxz, dhz, dh_prev,
                                 activation, recurrent_activation)


@override("cupy")
def embedding_backward(be, ids, dout, dW):
    """Scatter-add of ``dout`` rows into ``dW`` by ``ids`` with atomics (see the reference)."""
    xp = be.xp
    ok = (
        isinstance(ids, xp.ndarray) and ids.ndim == 1 and ids.dtype == np.int64
        and ids.flags.c_contiguous and getattr(dW, "ndim", 0) == 2
        and _device_arrays(be, dout, dW) and tuple(dout.shape) == (ids.shape[0], dW.shape[1])
        and _no_partial_overlap(dW, dout)
    )
    if not ok:
        return ref.embedding_backward(be, ids, dout, dW)
    dW.fill(0)
    _launch_elementwise(
        RECURRENT, "fastnn_embedding_backward", dW.dtype, int(dout.size),
        (ids, dout, dW, np.int64(ids.shape[0]), np.int64(dW.shape[1])),
    )
    return dW
