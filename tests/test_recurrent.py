"""SimpleRNN, LSTM, GRU: gradients (all outputs and states), backend parity, PyTorch parity,
masking, stateful truncated BPTT, and errors."""

from __future__ import annotations

import numpy as np
import pytest

import fastnn
from fastnn import GRU, LSTM, Dense, Embedding, Masking, Sequential, SimpleRNN, gradcheck
from fastnn.gradcheck import numerical_gradient
from tests.conftest import assert_close

N, T, D, H = 2, 3, 2, 3  # gradcheck shapes: tiny, so the suite stays fast

CELLS = {
    "simple_rnn": (SimpleRNN, {}),
    "lstm": (LSTM, {}),
    "gru": (GRU, {}),
    "gru_reset_before": (GRU, {"reset_after": False}),
}
OPTIONS = {
    "last": {},
    "sequences": {"return_sequences": True},
    "sequences_state": {"return_sequences": True, "return_state": True},
    "backwards_state": {"go_backwards": True, "return_state": True},
}


def _x(seed: int = 0, shape=(N, T, D)) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


def _with_mask(cls, fixed: np.ndarray):
    """A subclass of ``cls`` whose forward always uses the mask ``fixed`` (for gradcheck,
    which calls ``forward(x, training)``)."""

    class Masked(cls):
        def forward(self, x, training=False, mask=None, initial_state=None):
            m = self.backend.asarray(fixed)
            return super().forward(x, training, mask=m, initial_state=initial_state)

    return Masked


@pytest.mark.parametrize("option", sorted(OPTIONS))
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_gradcheck_every_cell_and_option(backend, cell, option):
    cls, kw = CELLS[cell]
    layer = cls(H, backend=backend, **kw, **OPTIONS[option])
    report = gradcheck(layer, _x(1))
    assert report.max_rel_error < 1e-6
    names = {t.name for t in report.tensors}
    assert names >= {"input", "W", "U", "b"}


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_gradcheck_other_activations_and_no_bias(backend, cell):
    cls, kw = CELLS[cell]
    layer = cls(H, activation="sigmoid", recurrent_activation="tanh", use_bias=False,
                return_sequences=True, return_state=True, backend=backend, **kw)
    report = gradcheck(layer, _x(2))
    assert report.max_rel_error < 1e-6
    assert "b" not in {t.name for t in report.tensors}


@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_gradcheck_with_mask(backend, cell, go_backwards):
    cls, kw = CELLS[cell]
    mask = np.array([[True, False, True], [True, True, False]])
    layer = _with_mask(cls, mask)(H, return_sequences=True, return_state=True,
                                  go_backwards=go_backwards, backend=backend, **kw)
    assert gradcheck(layer, _x(3)).max_rel_error < 1e-6


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_backend_matches_numpy_reference(backend, reference, cell, dtype):
    cls, kw = CELLS[cell]
    x = _x(4, (4, 5, 3)).astype(dtype)
    mask = np.ones((4, 5), bool)
    mask[1, 3:] = False
    dy = np.random.default_rng(5).standard_normal((4, 5, 6)).astype(dtype)
    dh = np.random.default_rng(6).standard_normal((4, 6)).astype(dtype)
    results = []
    for be in (reference, backend):
        layer = cls(6, return_sequences=True, return_state=True, backend=be, dtype=dtype, **kw)
        be.seed(0)
        outs = layer.forward(be.asarray(x), mask=be.asarray(mask))
        douts = (be.asarray(dy), *[be.asarray(dh) for _ in outs[1:]])
        dx = layer.backward(douts)
        results.append(([be.to_numpy(o) for o in outs], be.to_numpy(dx),
                        {k: be.to_numpy(g) for k, g in layer.grads.items()}))
    (ref_outs, ref_dx, ref_grads), (outs, dx, grads) = results
    for k, (a, b) in enumerate(zip(outs, ref_outs, strict=True)):
        assert_close(a, b, dtype, f"output {k}")
    assert_close(dx, ref_dx, dtype, "dx")
    for key in ref_grads:
        assert_close(grads[key], ref_grads[key], dtype, key)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("activation", "recurrent_activation"),
                         [("tanh", "sigmoid"), ("relu", "tanh"), ("linear", "sigmoid")])
def test_cell_ops_match_reference(backend, reference, dtype, activation, recurrent_activation):
    rng = np.random.default_rng(7)
    n, h = 5, 7

    def arr(*shape):
        return rng.standard_normal(shape).astype(dtype)

    acts = (activation, recurrent_activation)
    # LSTM forward and backward
    xz, hz, c_prev = arr(n, 4 * h), arr(n, 4 * h), arr(n, h)
    outs = {}
    for name, be in (("ref", reference), ("be", backend)):
        gates, c, hh, act_c = (be.xp.empty((n, k * h), dtype) for k in (4, 1, 1, 1))
        be.lstm_cell_forward(be.asarray(xz), be.asarray(hz), be.asarray(c_prev), gates, c, hh,
                             act_c, *acts)
        dz = be.xp.empty((n, 4 * h), dtype)
        dc = be.asarray(arr(n, h) * 0 + 0.5)
        be.lstm_cell_backward(be.asarray(hh), dc, gates, be.asarray(c_prev), act_c, dz, dc,
                              *acts)
        outs[name] = [be.to_numpy(a) for a in (gates, c, hh, act_c, dz, dc)]
    for a, b in zip(outs["be"], outs["ref"], strict=True):
        assert_close(a, b, dtype)
    # GRU forward and backward
    xz, hz, h_prev, dh = arr(n, 3 * h), arr(n, 3 * h), arr(n, h), arr(n, h)
    for name, be in (("ref", reference), ("be", backend)):
        gates, hh = be.xp.empty((n, 3 * h), dtype), be.xp.empty((n, h), dtype)
        be.gru_cell_forward(be.asarray(xz), be.asarray(hz), be.asarray(h_prev), gates, hh, *acts)
        dxz, dhz = be.xp.empty((n, 3 * h), dtype), be.xp.empty((n, 3 * h), dtype)
        dhp = be.xp.empty((n, h), dtype)
        be.gru_cell_backward(be.asarray(dh), gates, be.asarray(h_prev), be.asarray(hz), dxz, dhz,
                             dhp, *acts)
        outs[name] = [be.to_numpy(a) for a in (gates, hh, dxz, dhz, dhp)]
    for a, b in zip(outs["be"], outs["ref"], strict=True):
        assert_close(a, b, dtype)


def test_cell_ops_take_strided_views(backend, reference):
    """Inputs the fused kernels do not take (a strided view) give the reference result."""
    rng = np.random.default_rng(8)
    n, h = 3, 4
    wide = rng.standard_normal((n, 8 * h))
    xz = wide[:, ::2]  # (n, 4h), not contiguous
    hz, c_prev = rng.standard_normal((n, 4 * h)), rng.standard_normal((n, h))
    outs = []
    for be in (reference, backend):
        gates, c, hh, act_c = (be.xp.empty((n, k * h)) for k in (4, 1, 1, 1))
        be.lstm_cell_forward(be.asarray(xz), be.asarray(hz), be.asarray(c_prev), gates, c, hh,
                             act_c)
        outs.append(be.to_numpy(hh))
    assert_close(outs[1], outs[0])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("activation", "recurrent_activation"),
                         [("tanh", "sigmoid"), ("relu", "tanh")])
def test_lstm_ops_in_place_equal_out_of_place(backend, dtype, activation,
                                              recurrent_activation):
    """The LSTM ops may write the gates over xz and dL/dxz over the gates (the layer's
    unmasked path does): the same bits as out of place on the same backend (test_ops
    compares the out-of-place ops with the reference)."""
    rng = np.random.default_rng(11)
    t, n, h = 4, 9, 32  # N=9: a partial micro-tile of rows on the numba kernels
    acts = (activation, recurrent_activation)

    def arr(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(dtype)

    xz, U, b = arr(t, n, 4 * h), arr(h, 4 * h, scale=0.3), arr(4 * h)
    h0, c0, dseq, dh, dc = arr(n, h), arr(n, h), arr(t, n, h), arr(n, h), arr(n, h)
    cell_xz, cell_hz, c_prev = arr(n, 4 * h), arr(n, 4 * h), arr(n, h)
    be, xp = backend, backend.xp
    Ud, Utd, bd = be.asarray(U), be.asarray(U.T.copy()), be.asarray(b)
    outs = {}
    for in_place in (False, True):
        hs, cs = xp.empty((t + 1, n, h), dtype), xp.empty((t + 1, n, h), dtype)
        hs[0], cs[0] = be.asarray(h0), be.asarray(c0)
        act_c = xp.empty((t, n, h), dtype)
        xzd = be.asarray(xz.copy())  # a copy: on numpy asarray returns the host array
        gates = xzd if in_place else xp.empty_like(xzd)
        be.lstm_sequence_forward(xzd, Ud, hs, cs, gates, act_c, *acts, b=bd)
        got = {"gates": be.to_numpy(gates).copy(), "hs": hs, "cs": cs, "act_c": act_c}
        dz = gates if in_place else xp.empty_like(gates)
        dhd, dcd, db = be.asarray(dh.copy()), be.asarray(dc.copy()), xp.empty((4 * h,), dtype)
        assert be.lstm_sequence_backward(be.asarray(dseq), dhd, dcd, gates, cs, act_c, Utd, dz,
                                         *acts, db=db) is dz
        got.update(dz=dz, dh=dhd, dc=dcd, db=db)
        # the single-step ops, in place the same way (and dc_prev = dc)
        g = be.asarray(cell_xz.copy())
        c, hh, ac = (xp.empty((n, h), dtype) for _ in range(3))
        g_out = g if in_place else xp.empty_like(g)
        be.lstm_cell_forward(g, be.asarray(cell_hz), be.asarray(c_prev), g_out, c, hh, ac,
                             *acts)
        got["cell_gates"] = be.to_numpy(g_out).copy()
        dz1 = g_out if in_place else xp.empty_like(g_out)
        dc1 = be.asarray(dc.copy())
        dc_prev = dc1 if in_place else xp.empty_like(dc1)
        assert be.lstm_cell_backward(hh, dc1, g_out, be.asarray(c_prev), ac, dz1, dc_prev,
                                     *acts) is dz1
        got.update(cell_h=hh, cell_dz=dz1, cell_dc_prev=dc_prev)
        outs[in_place] = {k: be.to_numpy(v) for k, v in got.items()}
    for key, want in outs[False].items():
        np.testing.assert_array_equal(outs[True][key], want, err_msg=key)


@pytest.mark.parametrize("alias", ["gates=xz", "gates=hz", "c=c_prev", "h=c_prev",
                                   "dz=gates", "dc_prev=dc", "dc_prev=c_prev",
                                   "dc_prev=act_c", "dc_prev=dh"])
def test_lstm_cell_ops_with_an_output_that_is_an_input(backend, reference, alias):
    """An output passed as the very same array as an input (which the ops' overlap checks
    accept) gives the out-of-place result: the inputs are read before they are written."""
    rng = np.random.default_rng(13)
    n, h = 5, 16
    out_name, in_name = alias.split("=")
    fwd = out_name in ("gates", "c", "h")
    xz, hz = rng.standard_normal((n, 4 * h)), rng.standard_normal((n, 4 * h))
    c_prev = rng.standard_normal((n, h))
    gates = np.concatenate([1 / (1 + np.exp(-rng.standard_normal((n, 3 * h)))),
                            np.tanh(rng.standard_normal((n, h)))], axis=1)
    ins = {"xz": xz, "hz": hz, "c_prev": c_prev, "gates": gates,
           "dh": rng.standard_normal((n, h)), "dc": rng.standard_normal((n, h)),
           "act_c": np.tanh(rng.standard_normal((n, h)))}
    op = "lstm_cell_forward" if fwd else "lstm_cell_backward"
    names = (("xz", "hz", "c_prev", "gates", "c", "h", "act_c") if fwd
             else ("dh", "dc", "gates", "c_prev", "act_c", "dz", "dc_prev"))
    outputs = ("gates", "c", "h", "act_c") if fwd else ("dz", "dc_prev")
    shapes = {"gates": (n, 4 * h), "dz": (n, 4 * h)}

    def call(be, aliased: bool):
        args = {k: be.asarray(ins[k].copy()) for k in names if k not in outputs}
        for k in outputs:
            args[k] = be.xp.empty(shapes.get(k, (n, h)))
        if aliased:
            args[out_name] = args[in_name] = be.asarray(ins[in_name].copy())
        getattr(be, op)(*(args[k] for k in names))
        return {k: be.to_numpy(args[k]) for k in outputs}

    want = call(reference, aliased=False)
    got = call(backend, aliased=True)
    for k in outputs:
        assert_close(got[k], want[k], np.float64, f"{alias}: {k}")


def test_reference_lstm_cell_backward_in_place_through_a_view(reference):
    """The reference cell backward is right when dz is another view of the gates' memory
    (the layer's reference path passes gates[s] and dz[s] of one array)."""
    rng = np.random.default_rng(12)
    n, h = 3, 5
    gates = 1 / (1 + np.exp(-rng.standard_normal((n, 4 * h))))
    c_prev, act_c, dh = (rng.standard_normal((n, h)) for _ in range(3))
    dc = rng.standard_normal((n, h))
    want = reference.lstm_cell_backward(dh, dc.copy(), gates, c_prev, act_c,
                                        np.empty_like(gates), np.empty((n, h)))
    buf = gates.copy()
    got = reference.lstm_cell_backward(dh, dc.copy(), buf[:], c_prev, act_c, buf[...],
                                       np.empty((n, h)))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
    np.testing.assert_allclose(buf, want, rtol=1e-12, atol=0)


def test_lstm_backward_twice_after_one_forward_says_so(backend):
    """Unmasked, backward overwrites the saved gates with dL/dxz: a second backward
    without a forward raises instead of returning wrong gradients."""
    layer = LSTM(H, return_sequences=True, backend=backend, dtype="float64")
    x = backend.asarray(_x(2))
    y = layer.forward(x)
    dy = backend.asarray(np.ones(y.shape))
    layer.backward(dy)
    with pytest.raises(RuntimeError, match="run forward again"):
        layer.backward(dy)
    layer.forward(x)
    layer.backward(dy)


# -- PyTorch parity ------------------------------------------------------------------------


def _torch_pair(cls, backend):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    n_in, units = 3, 4
    if cls is LSTM:
        net = torch.nn.LSTM(n_in, units, batch_first=True).double()
    else:
        net = torch.nn.GRU(n_in, units, batch_first=True).double()
    layer = cls(units, return_sequences=True, return_state=True, backend=backend,
                dtype="float64")
    layer.build((5, n_in))
    w_ih, w_hh = net.weight_ih_l0.detach().numpy(), net.weight_hh_l0.detach().numpy()
    b_ih, b_hh = net.bias_ih_l0.detach().numpy(), net.bias_hh_l0.detach().numpy()
    be = backend
    if cls is LSTM:  # same gate order [i, f, g, o]
        layer.params["W"][...] = be.asarray(w_ih.T)
        layer.params["U"][...] = be.asarray(w_hh.T)
        layer.params["b"][...] = be.asarray(b_ih + b_hh)
    else:  # torch [r, z, n] -> Keras [z, r, h]

        def perm(w):
            return np.concatenate([w[units:2 * units], w[:units], w[2 * units:]], axis=0)

        layer.params["W"][...] = be.asarray(perm(w_ih).T)
        layer.params["U"][...] = be.asarray(perm(w_hh).T)
        layer.params["b"][...] = be.asarray(np.stack([perm(b_ih), perm(b_hh)]))
    return torch, net, layer


@pytest.mark.torch
@pytest.mark.parametrize("cls", [LSTM, GRU], ids=["lstm", "gru"])
def test_matches_torch_forward_and_backward(backend, cls):
    torch, net, layer = _torch_pair(cls, backend)
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 5, 3))
    dy = rng.standard_normal((2, 5, 4))
    xt = torch.from_numpy(x).requires_grad_(True)
    out = net(xt)
    y_t = out[0]
    states_t = out[1] if cls is LSTM else (out[1],)
    outs = layer.forward(backend.asarray(x))
    assert_close(outs[0], y_t.detach().numpy(), np.float64, "output sequence")
    for k, s in enumerate(states_t):
        assert_close(outs[1 + k], s[0].detach().numpy(), np.float64, f"state {k}")
    # gradients through the sequence output and the final states
    ds = [rng.standard_normal((2, 4)) for _ in states_t]
    loss = (y_t * torch.from_numpy(dy)).sum()
    loss = loss + sum((s[0] * torch.from_numpy(d)).sum() for s, d in zip(states_t, ds,
                                                                          strict=True))
    loss.backward()
    dx = layer.backward((backend.asarray(dy), *[backend.asarray(d) for d in ds]))
    assert_close(dx, xt.grad.numpy(), np.float64, "dx")
    dU = backend.to_numpy(layer.grads["U"])
    if cls is LSTM:
        assert_close(dU, net.weight_hh_l0.grad.numpy().T, np.float64, "dU")
    else:
        g = net.weight_hh_l0.grad.numpy()
        assert_close(dU[:, :4], g[4:8].T, np.float64, "dU_z")
        assert_close(dU[:, 4:8], g[:4].T, np.float64, "dU_r")


# -- masking -----------------------------------------------------------------------------


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_masked_steps_equal_the_unpadded_sequence(backend, cell):
    cls, kw = CELLS[cell]
    layer = cls(4, return_state=True, backend=backend, dtype="float64", **kw)
    x = _x(10, (2, 5, 3))
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    out, *states = layer.forward(backend.asarray(x), mask=backend.asarray(mask))
    short, *short_states = layer.forward(backend.asarray(x[:1, :3].copy()))
    assert_close(backend.to_numpy(out)[:1], short)
    for s, s_short in zip(states, short_states, strict=True):
        assert_close(backend.to_numpy(s)[:1], s_short)


def test_sequential_passes_the_embedding_mask(backend):
    ids = np.array([[3, 1, 2, 0, 0], [1, 2, 3, 4, 2]])
    model = Sequential([Embedding(5, 3, mask_zero=True), LSTM(4)], backend=backend,
                       dtype="float64")
    y = backend.to_numpy(model.forward(backend.asarray(ids)))
    emb, lstm = model.layers
    short = lstm.forward(emb.forward(backend.asarray(ids[:1, :3])))
    assert_close(y[:1], short)
    # gradients of the embedding and the LSTM with the mask in place
    assert gradcheck(model, ids, check_inputs=False).max_rel_error < 1e-6


def test_masking_layer_feeds_the_mask(backend):
    x = _x(11, (2, 4, 3))
    x[0, 2:] = 0.0
    model = Sequential([Masking(0.0), GRU(3, return_sequences=True)], backend=backend,
                       dtype="float64")
    y = backend.to_numpy(model.forward(backend.asarray(x)))
    np.testing.assert_allclose(y[0, 2], y[0, 1])  # masked steps repeat the last output
    np.testing.assert_allclose(y[0, 3], y[0, 1])
    assert gradcheck(model, x, check_inputs=False).passed


# -- states, stateful training and truncated BPTT --------------------------------------


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_initial_state_gradients(backend, cell):
    cls, kw = CELLS[cell]
    layer = cls(H, return_sequences=True, backend=backend, dtype="float64", **kw)
    x = backend.asarray(_x(12))
    n_states = len(layer.state_names)
    init = [backend.asarray(_x(13 + k, (N, H))) for k in range(n_states)]
    g = backend.asarray(_x(20, (N, T, H)))
    layer.forward(x, initial_state=init)
    layer.backward(g)
    for k in range(n_states):

        def f():
            return float((layer.forward(x, initial_state=init) * g).sum())

        num = numerical_gradient(f, init[k])
        layer.forward(x, initial_state=init)
        layer.backward(g)
        assert_close(layer.initial_state_grads[k], num, np.float64, f"state {k}")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_stateful_windows_equal_one_long_sequence_and_truncate_the_gradient(backend, cell):
    cls, kw = CELLS[cell]
    x = _x(14, (2, 6, 3))
    full = cls(4, return_sequences=True, backend=backend, dtype="float64", **kw)
    y_full = backend.to_numpy(full.forward(backend.asarray(x)))
    stateful = cls(4, return_sequences=True, stateful=True, backend=backend, dtype="float64",
                   **kw)
    stateful.build((3, 3))
    for key in full.params:
        stateful.params[key][...] = full.params[key]
    y1 = stateful.forward(backend.asarray(x[:, :3].copy()))
    carried = [s.copy() for s in stateful.carried_states]
    y2 = stateful.forward(backend.asarray(x[:, 3:].copy()))
    assert_close(np.concatenate([backend.to_numpy(y1), backend.to_numpy(y2)], axis=1), y_full)
    # Truncated BPTT: the second window's gradient treats the carried states as constants.
    g = backend.asarray(_x(15, (2, 3, 4)))
    stateful.backward(g)
    plain = cls(4, return_sequences=True, backend=backend, dtype="float64", **kw)
    plain.build((3, 3))
    for key in full.params:
        plain.params[key][...] = full.params[key]
    plain.forward(backend.asarray(x[:, 3:].copy()), initial_state=carried)
    plain.backward(g)
    for key in plain.grads:
        assert_close(stateful.grads[key], plain.grads[key], np.float64, key)
    stateful.reset_states()
    y_again = stateful.forward(backend.asarray(x[:, :3].copy()))
    assert_close(y_again, y_full[:, :3])


def test_trains_in_a_model(reference):
    """A masked sequence classifier fits a toy task (the last real id, mod 2); the other
    backends compute the same gradients (tests above), so the reference trains here."""
    backend = reference
    rng = np.random.default_rng(16)
    ids = rng.integers(1, 6, size=(64, 6))
    lengths = rng.integers(3, 7, size=64)
    for i, n in enumerate(lengths):
        ids[i, n:] = 0
    labels = ids[np.arange(64), lengths - 1] % 2
    model = Sequential([Embedding(6, 8, mask_zero=True), GRU(16), Dense(2, activation="softmax")],
                       backend=backend)
    model.compile(optimizer=fastnn.Adam(learning_rate=0.02), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    history = model.fit(ids, labels, batch_size=16, epochs=30, verbose=0, seed=0)
    assert history.history["loss"][-1] < 0.3 * history.history["loss"][0]


# -- errors ------------------------------------------------------------------------------


def test_errors_name_the_layer_and_the_shapes(backend):
    with pytest.raises(ValueError, match=r"LSTM: units must be a positive integer. Received: "):
        LSTM(0)
    with pytest.raises(ValueError, match=r"GRU\(4\): activation must be an elementwise"):
        GRU(4, activation="softmax")
    layer = LSTM(4, backend=backend, dtype="float64")
    layer.forward(backend.asarray(_x(17, (2, 3, 5))))
    with pytest.raises(ValueError, match=r"LSTM\(4\)\.forward: expected input of shape "
                                         r"\(None, T, 5\), received shape \(2, 3, 6\)"):
        layer.forward(backend.asarray(_x(17, (2, 3, 6))))
    with pytest.raises(ValueError, match=r"expected a mask of shape \(2, 3\)"):
        layer.forward(backend.asarray(_x(17, (2, 3, 5))), mask=backend.asarray(np.ones((2, 4))))
    with pytest.raises(ValueError, match=r"initial state 'c' must have shape \(2, 4\)"):
        layer.forward(backend.asarray(_x(17, (2, 3, 5))),
                      initial_state=[backend.xp.zeros((2, 4)), backend.xp.zeros((3, 4))])
    stated = LSTM(4, return_state=True, backend=backend, dtype="float64")
    stated.forward(backend.asarray(_x(17, (2, 3, 5))))
    with pytest.raises(TypeError, match=r"returns 3 outputs"):
        stated.backward(backend.xp.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"expected dout of shape \(2, 4\) for output 2"):
        stated.backward((None, None, backend.xp.zeros((2, 5))))
