"""Reference ops of the recurrent layers: embedding scatter-add and the fused cell math.

The layers do the matrix products themselves (one GEMM for the input projection of all
timesteps, one ``be.matmul`` per step for the recurrence); the cell ops here are the
elementwise gate math of one timestep, forward and backward, which the Numba and CUDA
backends fuse into one kernel. ``lstm_sequence_forward``/``_backward`` run the whole
unmasked LSTM recurrence (per-step GEMM and cell) as one op: here a loop over the per-step
ops, on numba one compiled loop. Gate activations are named elementwise activations whose
backward needs only the output (``tanh``, ``sigmoid``, ``relu``, ``linear``).

Gate layouts follow Keras: LSTM ``[i, f, c, o]`` along the last axis (``c`` is the
candidate cell, often called ``g``), GRU ``[z, r, h]``.
"""

from __future__ import annotations

from fastnn.kernels.reference.activations import get_activation_fns
from fastnn.kernels.registry import reference_op


def _act(be, name, x, out):
    return get_activation_fns(name).forward(be.xp, x, out, 0.0)


def _act_grad(be, name, dy, y, out):
    return get_activation_fns(name).backward(be.xp, dy, None, y, out, 0.0)


@reference_op
def embedding_backward(be, ids, dout, dW):
    """dW[...] = 0, then dW[ids[k]] += dout[k] for every k (repeated ids accumulate).

    Args:
        ids: (M,) integer row indices in ``[0, V)``.
        dout: (M, D) upstream gradient rows.
        dW: (V, D) gradient buffer, overwritten.

    Returns:
        ``dW``.
    """
    xp = be.xp
    dW[...] = 0
    if xp.__name__ == "numpy":
        xp.add.at(dW, ids, dout)
    else:  # CuPy: ufunc.at is missing in some versions; cupyx.scatter_add is not.
        import cupyx

        cupyx.scatter_add(dW, ids, dout)
    return dW


@reference_op
def lstm_cell_forward(
    be, xz, hz, c_prev, gates, c, h, act_c,
    activation: str = "tanh", recurrent_activation: str = "sigmoid",
):
    """One LSTM step after the matrix products.

    ``a = xz + hz``; ``i, f, o = recurrent_activation(a_i, a_f, a_o)``,
    ``g = activation(a_c)``; ``c = f * c_prev + i * g``; ``h = o * activation(c)``.

    Args:
        xz: (N, 4H) input part ``x_t @ W + b``.
        hz: (N, 4H) recurrent part ``h_prev @ U`` (may be overwritten as scratch).
        c_prev: (N, H) previous cell state.
        gates: (N, 4H) output: the activated gates ``[i, f, g, o]``; may be ``xz`` (in
            place).
        c: (N, H) output: the new cell state.
        h: (N, H) output: the new hidden state.
        act_c: (N, H) output: ``activation(c)``, kept for the backward pass.
        activation: cell/candidate activation name.
        recurrent_activation: gate activation name.

    Returns:
        ``h``.
    """
    xp = be.xp
    H = c.shape[1]
    xp.add(xz, hz, out=gates)
    for lo, hi, name in ((0, 2 * H, recurrent_activation), (2 * H, 3 * H, activation),
                         (3 * H, 4 * H, recurrent_activation)):
        view = gates[:, lo:hi]
        _act(be, name, view, view)
    i, f, g, o = gates[:, :H], gates[:, H:2 * H], gates[:, 2 * H:3 * H], gates[:, 3 * H:]
    xp.multiply(f, c_prev, out=c)
    c += i * g
    _act(be, activation, c, act_c)
    xp.multiply(o, act_c, out=h)
    return h


@reference_op
def lstm_cell_backward(
    be, dh, dc, gates, c_prev, act_c, dz, dc_prev,
    activation: str = "tanh", recurrent_activation: str = "sigmoid",
):
    """Backward of :func:`lstm_cell_forward` for one step.

    Args:
        dh: (N, H) gradient with respect to ``h`` (never written).
        dc: (N, H) gradient with respect to ``c`` from the later step (may be ``dc_prev``).
        gates, c_prev, act_c: as saved by the forward step.
        dz: (N, 4H) output: gradient with respect to the pre-activations ``a``; may be
            ``gates`` (in place).
        dc_prev: (N, H) output: gradient with respect to ``c_prev``.
        activation, recurrent_activation: as in the forward step.

    Returns:
        ``dz``.
    """
    H = act_c.shape[1]
    if be.xp.may_share_memory(dz, gates):  # the blocks below read gates after writing dz
        gates = gates.copy()
    i, f, g, o = gates[:, :H], gates[:, H:2 * H], gates[:, 2 * H:3 * H], gates[:, 3 * H:]
    dc_total = _act_grad(be, activation, dh * o, act_c, None)
    dc_total += dc
    _act_grad(be, recurrent_activation, dh * act_c, o, dz[:, 3 * H:])
    _act_grad(be, recurrent_activation, dc_total * g, i, dz[:, :H])
    _act_grad(be, recurrent_activation, dc_total * c_prev, f, dz[:, H:2 * H])
    _act_grad(be, activation, dc_total * i, g, dz[:, 2 * H:3 * H])
    be.xp.multiply(dc_total, f, out=dc_prev)
    return dz


@reference_op
def lstm_sequence_forward(
    be, xz, U, hs, cs, gates, act_c,
    activation: str = "tanh", recurrent_activation: str = "sigmoid", b=None,
):
    """The LSTM recurrence over all ``T`` steps (no mask): for each step ``s``,
    ``hz = hs[s] @ U (+ b)`` and :func:`lstm_cell_forward` into ``hs[s + 1]``, ``cs[s + 1]``.

    Args:
        xz: (T, N, 4H) input parts ``x_t @ W``, bias included unless ``b`` is given.
        U: (H, 4H) recurrent weight, or ``prepare_rhs(U)``.
        hs, cs: (T + 1, N, H) hidden and cell states; ``hs[0]``, ``cs[0]`` are the initial
            states (read), the rest is written.
        gates: (T, N, 4H) output, the activated gates of every step; may be ``xz`` itself
            (the gates overwrite the inputs).
        act_c: (T, N, H) output, ``activation(c)`` of every step.
        activation, recurrent_activation: as in :func:`lstm_cell_forward`.
        b: optional (4H,) bias added at every step (so that ``xz`` need not carry it).

    Returns:
        ``hs``.
    """
    T, N, G = xz.shape
    hz = be.xp.empty((N, G), dtype=xz.dtype)
    for s in range(T):
        be.matmul(hs[s], U, out=hz)
        if b is not None:
            hz += b
        be.lstm_cell_forward(xz[s], hz, cs[s], gates[s], cs[s + 1], hs[s + 1], act_c[s],
                             activation, recurrent_activation)
    return hs


@reference_op
def lstm_sequence_backward(
    be, dseq, dh, dc, gates, cs, act_c, Ut, dz,
    activation: str = "tanh", recurrent_activation: str = "sigmoid", db=None,
):
    """Backpropagation through time of :func:`lstm_sequence_forward` (no mask).

    Args:
        dseq: (T, N, H) gradient with respect to every step's output (any strides), or None
            when only the final state receives a gradient.
        dh, dc: (N, H) gradients with respect to the final ``h`` and ``c``; overwritten with
            the gradients with respect to the initial states.
        gates, cs, act_c: as written by the forward pass (``cs`` with its ``T + 1`` states).
        Ut: the transposed recurrent weight (4H, H), or ``prepare_rhs(U.T)``.
        dz: (T, N, 4H) output, the gradient with respect to every step's pre-activations;
            may be ``gates`` itself (the gradients overwrite the gates).
        activation, recurrent_activation: as in the forward pass.
        db: optional (4H,) output, the bias gradient: ``dz`` summed over steps and samples.

    Returns:
        ``dz``.
    """
    xp = be.xp
    T, N, H = act_c.shape
    g = xp.empty((N, H), dtype=dh.dtype)
    for s in range(T - 1, -1, -1):
        if dseq is None:
            g[...] = dh
        else:
            xp.add(dh, dseq[s], out=g)
        be.lstm_cell_backward(g, dc, gates[s], cs[s], act_c[s], dz[s], dc,
                              activation, recurrent_activation)
        be.matmul(dz[s], Ut, out=dh)
    if db is not None:
        xp.sum(dz.reshape(T * N, 4 * H), axis=0, out=db)
    return dz


@reference_op
def gru_cell_forward(
    be, xz, hz, h_prev, gates, h,
    activation: str = "tanh", recurrent_activation: str = "sigmoid",
):
    """One GRU step (``reset_after=True``, Keras's default and PyTorch's formulation).

    ``z = ra(xz_z + hz_z)``, ``r = ra(xz_r + hz_r)``, ``n = act(xz_h + r * hz_h)``,
    ``h = z * h_prev + (1 - z) * n``.

    Args:
        xz: (N, 3H) input part ``x_t @ W + b_input``.
        hz: (N, 3H) recurrent part ``h_prev @ U + b_recurrent`` (never written; the
            backward pass needs its ``h`` block).
        h_prev: (N, H) previous hidden state.
        gates: (N, 3H) output: ``[z, r, n]`` after activation.
        h: (N, H) output: the new hidden state.
        activation, recurrent_activation: activation names.

    Returns:
        ``h``.
    """
    xp = be.xp
    H = h.shape[1]
    zr = gates[:, :2 * H]
    xp.add(xz[:, :2 * H], hz[:, :2 * H], out=zr)
    _act(be, recurrent_activation, zr, zr)
    z, r, n = gates[:, :H], gates[:, H:2 * H], gates[:, 2 * H:]
    xp.multiply(r, hz[:, 2 * H:], out=n)
    n += xz[:, 2 * H:]
    _act(be, activation, n, n)
    # h = n + z * (h_prev - n)
    xp.subtract(h_prev, n, out=h)
    h *= z
    h += n
    return h


@reference_op
def gru_cell_backward(
    be, dh, gates, h_prev, hz, dxz, dhz, dh_prev,
    activation: str = "tanh", recurrent_activation: str = "sigmoid",
):
    """Backward of :func:`gru_cell_forward` for one step.

    Args:
        dh: (N, H) gradient with respect to ``h`` (never written).
        gates, h_prev, hz: as in the forward step.
        dxz: (N, 3H) output: gradient with respect to ``xz``.
        dhz: (N, 3H) output: gradient with respect to ``hz``.
        dh_prev: (N, H) output: the direct part ``dh * z`` of the gradient with respect to
            ``h_prev`` (the layer adds ``dhz @ U.T``).
        activation, recurrent_activation: as in the forward step.

    Returns:
        ``dxz``.
    """
    xp = be.xp
    H = dh.shape[1]
    z, r, n = gates[:, :H], gates[:, H:2 * H], gates[:, 2 * H:]
    dn = _act_grad(be, activation, dh * (1 - z), n, dxz[:, 2 * H:])
    _act_grad(be, recurrent_activation, dh * (h_prev - n), z, dxz[:, :H])
    _act_grad(be, recurrent_activation, dn * hz[:, 2 * H:], r, dxz[:, H:2 * H])
    dhz[:, :2 * H] = dxz[:, :2 * H]
    xp.multiply(dn, r, out=dhz[:, 2 * H:])
    xp.multiply(dh, z, out=dh_prev)
    return dxz
