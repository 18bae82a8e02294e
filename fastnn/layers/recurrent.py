"""Recurrent layers with Keras's arguments: SimpleRNN, LSTM and GRU.

Shapes: input ``(N, T, D)``; ``W: (D, G*H)`` (Keras's ``kernel``), ``U: (H, G*H)``
(``recurrent_kernel``), ``b: (G*H,)`` (``bias``; ``(2, 3H)`` for GRU with
``reset_after=True``). Gate blocks along the last axis are Keras's: LSTM ``[i, f, c, o]``,
GRU ``[z, r, h]``. See :mod:`fastnn.layers.recurrent_base` for the sequence handling
(``return_sequences``, ``return_state``, ``go_backwards``, ``stateful``, masks).
"""

from __future__ import annotations

from typing import Any

from fastnn.layers.recurrent_base import RNNBase

__all__ = ["GRU", "LSTM", "SimpleRNN"]


class SimpleRNN(RNNBase):
    """Fully connected recurrence ``h_t = activation(x_t @ W + h_{t-1} @ U + b)``.

    Args:
        units: hidden size ``H``.
        activation: default ``"tanh"``.
        **kwargs: the arguments of :class:`~fastnn.layers.recurrent_base.RNNBase`
            (``recurrent_activation`` is ignored).
    """

    gates = 1
    state_names = ("h",)

    def __init__(self, units: int, activation: str | None = "tanh", **kwargs: Any) -> None:
        kwargs.setdefault("recurrent_activation", "sigmoid")
        super().__init__(units, activation=activation, **kwargs)
        self._hs = None  # (T + 1, N, H) hidden states, hs[0] the initial one

    def _recurrence(self, xz, states0):
        be = self.backend
        T, N, _ = xz.shape
        H = self.units
        U = be.prepare_rhs(self.params["U"])  # packed once, used T times
        hs = self.buffer("hs", (T + 1, N, H))
        hs[0] = states0[0]
        for s in range(T):
            h = be.matmul(hs[s], U, out=hs[s + 1])
            h += xz[s]
            be.activation_forward(self.activation, h, out=h)
            self._apply_mask(s, h, hs[s])
        self._hs = hs
        return [hs]

    def _recurrence_backward(self, dseq, dfinal):
        be = self.backend
        hs = self._hs
        T1, N, H = hs.shape
        T = T1 - 1
        Ut = be.prepare_rhs(self.params["U"].T)  # packed once, used T times
        da = self.buffer("da", (T, N, H))
        gbuf = self.buffer("g", (N, H))
        dhbuf = self.buffer("dh", (N, H))
        dh = dfinal[0]
        for s in range(T - 1, -1, -1):
            g = self._step_grad(s, dh, dseq, gbuf)
            carried = self._split_masked(s, [g])
            be.activation_backward(self.activation, g, None, hs[s + 1], out=da[s])
            dh = be.matmul(da[s], Ut, out=dhbuf)
            if carried is not None:
                dh += carried[0]
        self._recurrent_weight_grad(hs)
        return da, [dh.copy()]


class LSTM(RNNBase):
    """Long short-term memory (Hochreiter & Schmidhuber 1997), Keras's formulation.

    ``a = x_t @ W + h_{t-1} @ U + b`` split into ``[i, f, c, o]``;
    ``i, f, o = recurrent_activation(...)``, ``g = activation(a_c)``,
    ``c_t = f * c_{t-1} + i * g``, ``h_t = o * activation(c_t)``. Equals
    ``torch.nn.LSTM`` (same gate order) with ``W = weight_ih.T``, ``U = weight_hh.T``,
    ``b = bias_ih + bias_hh``.

    Args:
        units: hidden size ``H``.
        unit_forget_bias: initialise the forget-gate bias to 1 (Keras's default).
        **kwargs: the arguments of :class:`~fastnn.layers.recurrent_base.RNNBase`.

    States: ``[h, c]``; with ``return_state`` the output is ``(output, h, c)``.
    """

    gates = 4
    state_names = ("h", "c")

    def __init__(self, units: int, unit_forget_bias: bool = True, **kwargs: Any) -> None:
        super().__init__(units, **kwargs)
        self.unit_forget_bias = bool(unit_forget_bias)
        self._hs = None  # (T + 1, N, H) hidden states
        self._cs = None  # (T + 1, N, H) cell states
        # (T, N, 4H) activated gates [i, f, g, o]: unmasked, the xz buffer they overwrote,
        # and None once backward has overwritten them with dL/dxz
        self._gates = None
        self._act_c = None  # (T, N, H) activation(c_t)

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {**super().get_config(), "unit_forget_bias": self.unit_forget_bias}

    def build_bias(self) -> None:
        """``b: (4H,)``, the forget block set to 1 with ``unit_forget_bias``."""
        b = self.add_param("b", (4 * self.units,), self.bias_initializer)
        if self.unit_forget_bias:
            b[self.units:2 * self.units] = 1

    def _bias_in_recurrence(self) -> bool:
        """Unmasked sequences run as one op, which adds the bias (and sums its gradient)
        while each row is in cache, saving two passes over (T, N, 4H)."""
        return self._mask is None

    def _recurrence(self, xz, states0):
        be = self.backend
        T, N, _ = xz.shape
        H = self.units
        U = be.prepare_rhs(self.params["U"])  # packed once, used T times
        hs = self.buffer("hs", (T + 1, N, H))
        cs = self.buffer("cs", (T + 1, N, H))
        # Unmasked, the gates overwrite xz (dead after this step) and, in backward, dL/dxz
        # overwrites the gates: one (T, N, 4H) array instead of three.
        gates = xz if self._mask is None else self.buffer("gates", (T, N, 4 * H))
        act_c = self.buffer("act_c", (T, N, H))
        hs[0] = states0[0]
        cs[0] = states0[1]
        if self._mask is None:  # the whole recurrence in one op (one compiled loop on numba)
            be.lstm_sequence_forward(xz, U, hs, cs, gates, act_c,
                                     self.activation, self.recurrent_activation,
                                     b=self.params.get("b"))
        else:
            hz = self.buffer("hz", (N, 4 * H))
            for s in range(T):
                be.matmul(hs[s], U, out=hz)
                be.lstm_cell_forward(
                    xz[s], hz, cs[s], gates[s], cs[s + 1], hs[s + 1], act_c[s],
                    self.activation, self.recurrent_activation,
                )
                self._apply_mask(s, hs[s + 1], hs[s])
                self._apply_mask(s, cs[s + 1], cs[s])
        self._hs, self._cs, self._gates, self._act_c = hs, cs, gates, act_c
        return [hs, cs]

    def _recurrence_backward(self, dseq, dfinal):
        be = self.backend
        hs, cs, gates, act_c = self._hs, self._cs, self._gates, self._act_c
        if gates is None:
            raise RuntimeError(
                f"{self.describe()}.backward: the gates of the last forward pass were "
                "overwritten by a previous backward pass; run forward again first"
            )
        T, N, H = act_c.shape
        Ut = be.prepare_rhs(self.params["U"].T)  # packed once, used T times
        dh, dc = dfinal  # fresh arrays, ours to overwrite
        if self._mask is None:  # the whole recurrence in one op (one compiled loop on numba)
            dz = be.lstm_sequence_backward(dseq, dh, dc, gates, cs, act_c, Ut, gates,
                                           self.activation, self.recurrent_activation,
                                           db=self.grads.get("b"))
            self._gates = None  # now dL/dxz
        else:
            dz = self.buffer("dz", (T, N, 4 * H))
            gbuf = self.buffer("g", (N, H))
            dhbuf = self.buffer("dh", (N, H))
            for s in range(T - 1, -1, -1):
                g = self._step_grad(s, dh, dseq, gbuf)
                carried = self._split_masked(s, [g, dc])
                be.lstm_cell_backward(
                    g, dc, gates[s], cs[s], act_c[s], dz[s], dc,
                    self.activation, self.recurrent_activation,
                )
                dh = be.matmul(dz[s], Ut, out=dhbuf)
                if carried is not None:
                    dh += carried[0]
                    dc += carried[1]
            dh = dh.copy()  # dhbuf is the layer's buffer
        self._recurrent_weight_grad(hs)
        return dz, [dh, dc]


class GRU(RNNBase):
    """Gated recurrent unit (Cho et al. 2014), Keras's formulation.

    With ``reset_after=True`` (Keras's default, and PyTorch's ``nn.GRU``):
    ``hz = h_{t-1} @ U + b_rec``, ``z = ra(xz_z + hz_z)``, ``r = ra(xz_r + hz_r)``,
    ``n = activation(xz_h + r * hz_h)``, ``h_t = z * h_{t-1} + (1 - z) * n``, where
    ``xz = x_t @ W + b_in`` and ``b = [b_in, b_rec]: (2, 3H)``. With ``reset_after=False``
    (the original formulation) ``n = activation(xz_h + (r * h_{t-1}) @ U_h)`` and
    ``b: (3H,)``. PyTorch's gate order is ``[r, z, n]``: swap the first two blocks.

    Args:
        units: hidden size ``H``.
        reset_after: apply the reset gate after the recurrent matrix product.
        **kwargs: the arguments of :class:`~fastnn.layers.recurrent_base.RNNBase`.
    """

    gates = 3
    state_names = ("h",)

    def __init__(self, units: int, reset_after: bool = True, **kwargs: Any) -> None:
        super().__init__(units, **kwargs)
        self.reset_after = bool(reset_after)
        self._hs = None  # (T + 1, N, H) hidden states
        self._gates = None  # (T, N, 3H) activated [z, r, n]
        self._hz = None  # (T, N, 3H) h_{t-1} @ U + b_rec (reset_after=True)
        self._rh = None  # (T, N, H) r * h_{t-1} (reset_after=False)

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {**super().get_config(), "reset_after": self.reset_after}

    def build_bias(self) -> None:
        """``b: (2, 3H)`` (input and recurrent bias) with reset_after, else ``(3H,)``."""
        shape = (2, 3 * self.units) if self.reset_after else (3 * self.units,)
        self.add_param("b", shape, self.bias_initializer)

    def input_bias(self):
        """``b[0]`` with reset_after, else ``b``."""
        b = self.params.get("b")
        if b is None or not self.reset_after:
            return b
        return b[0]

    def _input_bias_grad(self, dxz2):
        db = self.grads.get("b")
        if db is None:
            return
        self.backend.xp.sum(dxz2, axis=0, out=db[0] if self.reset_after else db)

    def _recurrence(self, xz, states0):
        T, N, _ = xz.shape
        H = self.units
        hs = self.buffer("hs", (T + 1, N, H))
        gates = self.buffer("gates", (T, N, 3 * H))
        hs[0] = states0[0]
        if self.reset_after:
            self._forward_reset_after(xz, hs, gates)
        else:
            self._forward_reset_before(xz, hs, gates)
        self._hs, self._gates = hs, gates
        return [hs]

    def _forward_reset_after(self, xz, hs, gates):
        be = self.backend
        T, N, _ = xz.shape
        U = be.prepare_rhs(self.params["U"])  # packed once, used T times
        b = self.params.get("b")
        b_rec = None if b is None else b[1]
        hz = self.buffer("hz", (T, N, 3 * self.units))
        for s in range(T):
            be.linear(hs[s], U, b_rec, out=hz[s])
            be.gru_cell_forward(
                xz[s], hz[s], hs[s], gates[s], hs[s + 1],
                self.activation, self.recurrent_activation,
            )
            self._apply_mask(s, hs[s + 1], hs[s])
        self._hz = hz

    def _forward_reset_before(self, xz, hs, gates):
        # The activation ops get contiguous scratch rows, not strided views of ``gates``.
        be = self.backend
        xp = be.xp
        T, N, _ = xz.shape
        H = self.units
        U = self.params["U"]
        rh = self.buffer("rh", (T, N, H))
        zr = self.buffer("zr", (N, 2 * H))
        n = self.buffer("n", (N, H))
        for s in range(T):
            xp.matmul(hs[s], U[:, :2 * H], out=zr)
            zr += xz[s][:, :2 * H]
            be.activation_forward(self.recurrent_activation, zr, out=zr)
            gates[s][:, :2 * H] = zr
            z, r = gates[s][:, :H], gates[s][:, H:2 * H]
            xp.multiply(r, hs[s], out=rh[s])
            xp.matmul(rh[s], U[:, 2 * H:], out=n)
            n += xz[s][:, 2 * H:]
            be.activation_forward(self.activation, n, out=n)
            gates[s][:, 2 * H:] = n
            h = xp.subtract(hs[s], n, out=hs[s + 1])
            h *= z
            h += n
            self._apply_mask(s, h, hs[s])
        self._rh = rh

    def _recurrence_backward(self, dseq, dfinal):
        if self.reset_after:
            return self._backward_reset_after(dseq, dfinal)
        return self._backward_reset_before(dseq, dfinal)

    def _backward_reset_after(self, dseq, dfinal):
        be = self.backend
        xp = be.xp
        hs, gates, hz = self._hs, self._gates, self._hz
        T, N, H3 = gates.shape
        H = H3 // 3
        Ut = be.prepare_rhs(self.params["U"].T)  # packed once, used T times
        dxz = self.buffer("dxz", (T, N, H3))
        dhz = self.buffer("dhz", (T, N, H3))
        gbuf = self.buffer("g", (N, H))
        dhbuf = self.buffer("dh", (N, H))
        direct = self.buffer("direct", (N, H))
        dh = dfinal[0]
        for s in range(T - 1, -1, -1):
            g = self._step_grad(s, dh, dseq, gbuf)
            carried = self._split_masked(s, [g])
            be.gru_cell_backward(
                g, gates[s], hs[s], hz[s], dxz[s], dhz[s], direct,
                self.activation, self.recurrent_activation,
            )
            dh = be.matmul(dhz[s], Ut, out=dhbuf)
            dh += direct
            if carried is not None:
                dh += carried[0]
        dhz2 = dhz.reshape(T * N, H3)
        be.matmul(hs[:T].reshape(T * N, H).T, dhz2, out=self.grads["U"])
        db = self.grads.get("b")
        if db is not None:
            xp.sum(dhz2, axis=0, out=db[1])
        return dxz, [dh.copy()]

    def _backward_reset_before(self, dseq, dfinal):
        be = self.backend
        xp = be.xp
        hs, gates, rh = self._hs, self._gates, self._rh
        T, N, H3 = gates.shape
        H = H3 // 3
        U = self.params["U"]
        ract, act = self.recurrent_activation, self.activation
        dxz = self.buffer("dxz", (T, N, H3))
        gbuf = self.buffer("g", (N, H))
        dhbuf = self.buffer("dh", (N, H))
        drh = self.buffer("drh", (N, H))
        part = self.buffer("part", (N, H))
        for_act = self.buffer("for_act", (N, H))
        dh = dfinal[0]
        for s in range(T - 1, -1, -1):
            g = self._step_grad(s, dh, dseq, gbuf)
            carried = self._split_masked(s, [g])
            z = xp.ascontiguousarray(gates[s][:, :H])
            r = xp.ascontiguousarray(gates[s][:, H:2 * H])
            n = xp.ascontiguousarray(gates[s][:, 2 * H:])
            d = dxz[s]
            xp.multiply(g, 1 - z, out=for_act)
            d[:, 2 * H:] = be.activation_backward(act, for_act, None, n, out=part)
            xp.matmul(d[:, 2 * H:], U[:, 2 * H:].T, out=drh)
            xp.multiply(g, hs[s] - n, out=for_act)
            d[:, :H] = be.activation_backward(ract, for_act, None, z, out=part)
            xp.multiply(drh, hs[s], out=for_act)
            d[:, H:2 * H] = be.activation_backward(ract, for_act, None, r, out=part)
            dh = xp.matmul(d[:, :2 * H], U[:, :2 * H].T, out=dhbuf)
            dh += g * z
            dh += drh * r
            if carried is not None:
                dh += carried[0]
        dxz2 = dxz.reshape(T * N, H3)
        dU = self.grads["U"]
        dU[:, :2 * H] = hs[:T].reshape(T * N, H).T @ dxz2[:, :2 * H]
        dU[:, 2 * H:] = rh.reshape(T * N, H).T @ dxz2[:, 2 * H:]
        return dxz, [dh.copy()]
