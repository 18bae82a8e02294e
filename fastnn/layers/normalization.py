"""Normalization layers: BatchNormalization, LayerNormalization, InstanceNormalization,
GroupNormalization.

All four standardise ``x`` over some axes, x_hat = (x - mean) / sqrt(var + eps) with the
biased variance, then apply a per-feature scale and shift, y = gamma * x_hat + beta.
They differ only in the axes the statistics are taken over.
"""

from __future__ import annotations

from typing import Any

from fastnn.layers.base import Layer


def _axis_index(axis: int, ndim: int, where: str) -> int:
    idx = axis if axis >= 0 else ndim + axis
    if not 0 < idx < ndim:
        raise ValueError(
            f"{where}: axis {axis} is not a feature axis of {ndim}-dimensional input "
            "(axis 0 is the batch)"
        )
    return idx


class _Normalization(Layer):
    """Shared math: statistics over ``reduce_axes``; gamma/beta over the feature axis."""

    def __init__(
        self,
        epsilon: float,
        center: bool,
        scale: bool,
        beta_initializer: Any,
        gamma_initializer: Any,
        **kwargs: Any,
    ) -> None:
        if epsilon <= 0:
            raise ValueError(f"{type(self).__name__}: epsilon must be > 0. "
                             f"Received: epsilon={epsilon}")
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)
        self.center = bool(center)
        self.scale = bool(scale)
        self.beta_initializer = beta_initializer
        self.gamma_initializer = gamma_initializer
        self._xhat = None  # normalized input, shape of x
        self._inv_std = None  # 1 / sqrt(var + eps), keepdims shape over the reduced axes
        self._reduce = ()  # axes the statistics were taken over in the last forward

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {**super().get_config(), "epsilon": self.epsilon, "center": self.center,
                "scale": self.scale}

    def _add_affine(self, shape: tuple[int, ...]) -> None:
        if self.scale:
            self.add_param("gamma", shape, self.gamma_initializer)
        if self.center:
            self.add_param("beta", shape, self.beta_initializer)

    def _param_view(self, key: str, ndim: int) -> Any:
        """gamma/beta reshaped to broadcast against an input of ``ndim`` dimensions."""
        p = self.params[key]
        return p.reshape(self._param_shape(ndim))

    def _param_shape(self, ndim: int) -> tuple[int, ...]:  # pragma: no cover
        raise NotImplementedError

    def _param_sum_axes(self, ndim: int) -> tuple[int, ...]:  # pragma: no cover
        raise NotImplementedError

    def _standardize(self, x, axes):
        xp = self.backend.xp
        mean = x.mean(axis=axes, keepdims=True)
        centered = x - mean
        var = (centered * centered).mean(axis=axes, keepdims=True)
        inv_std = 1.0 / xp.sqrt(var + self.epsilon)
        return centered * inv_std, inv_std, mean, var

    def _affine(self, xhat):
        y = xhat
        if self.scale:
            y = y * self._param_view("gamma", xhat.ndim)
        if self.center:
            y = y + self._param_view("beta", xhat.ndim)
        return y if (self.scale or self.center) else y.copy()

    def _affine_backward(self, dout):
        """Write dgamma/dbeta; return dL/dx_hat."""
        axes = self._param_sum_axes(dout.ndim)
        if self.center:
            self.grads["beta"][...] = dout.sum(axis=axes).reshape(self.grads["beta"].shape)
        if self.scale:
            self.grads["gamma"][...] = (dout * self._xhat).sum(axis=axes).reshape(
                self.grads["gamma"].shape)
            return dout * self._param_view("gamma", dout.ndim)
        return dout

    def _standardize_backward(self, dxhat, axes):
        """dL/dx for x_hat = (x - mean) * inv_std with statistics over ``axes``."""
        xhat = self._xhat
        m1 = dxhat.mean(axis=axes, keepdims=True)
        m2 = (dxhat * xhat).mean(axis=axes, keepdims=True)
        return (dxhat - m1 - xhat * m2) * self._inv_std


class BatchNormalization(_Normalization):
    """Batch normalization (Ioffe & Szegedy, 2015) with Keras's arguments and defaults.

    Training normalises with the batch's mean and biased variance over every axis but
    ``axis`` (the features: -1 for (N, D), 1 for NCHW images) and updates the running
    statistics: moving = momentum * moving + (1 - momentum) * batch. Inference uses the
    running statistics. The running statistics live in ``states`` (saved, not trained).

    Args:
        axis: feature axis (default -1; use 1 for NCHW).
        momentum: running-average momentum (default 0.99, Keras's).
        epsilon: added to the variance (default 1e-3, Keras's).
        center, scale: learn beta / gamma.
        **kwargs: Layer arguments.
    """

    def __init__(
        self,
        axis: int = -1,
        momentum: float = 0.99,
        epsilon: float = 1e-3,
        center: bool = True,
        scale: bool = True,
        beta_initializer: Any = "zeros",
        gamma_initializer: Any = "ones",
        moving_mean_initializer: Any = "zeros",
        moving_variance_initializer: Any = "ones",
        **kwargs: Any,
    ) -> None:
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"BatchNormalization: momentum must be in [0, 1]. "
                             f"Received: momentum={momentum}")
        super().__init__(epsilon, center, scale, beta_initializer, gamma_initializer, **kwargs)
        self.axis = int(axis)
        self.momentum = float(momentum)
        self.moving_mean_initializer = moving_mean_initializer
        self.moving_variance_initializer = moving_variance_initializer
        self._training = False

    def describe(self) -> str:
        """``BatchNormalization(axis=1)``."""
        return f"BatchNormalization(axis={self.axis})"

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {**super().get_config(), "axis": self.axis, "momentum": self.momentum}

    def build_params(self, input_shape):
        ndim = len(input_shape) + 1
        self._feat = _axis_index(self.axis, ndim, self.describe())
        features = input_shape[self._feat - 1]
        self._add_affine((features,))
        self.add_state("moving_mean", (features,), self.moving_mean_initializer)
        self.add_state("moving_variance", (features,), self.moving_variance_initializer)

    def _param_shape(self, ndim):
        shape = [1] * ndim
        shape[self._feat] = -1
        return tuple(shape)

    def _param_sum_axes(self, ndim):
        return tuple(a for a in range(ndim) if a != self._feat)

    def _channels_view(self, a):
        """``a`` as (A, C, B): batch-and-leading axes, features, trailing axes."""
        f = self._feat
        lead = 1
        for d in a.shape[:f]:
            lead *= d
        return a.reshape(lead, a.shape[f], -1)

    def _forward(self, x, training):
        self._training = bool(training)
        if training:
            be = self.backend
            x3 = self._channels_view(be.xp.ascontiguousarray(x))
            xhat3, inv_std, mean, var = be.norm_channels_forward(
                x3, self.epsilon, xhat=self.buffer("xhat", x3.shape))
            xhat = xhat3.reshape(x.shape)
            m = self.momentum
            mm, mv = self.states["moving_mean"], self.states["moving_variance"]
            mm *= m
            mm += (1.0 - m) * mean
            mv *= m
            mv += (1.0 - m) * var
        else:
            shape = self._param_shape(x.ndim)
            mean = self.states["moving_mean"].reshape(shape)
            inv_std = 1.0 / self.backend.xp.sqrt(
                self.states["moving_variance"].reshape(shape) + self.epsilon
            )
            xhat = (x - mean) * inv_std
        self._xhat, self._inv_std = xhat, inv_std
        return self._affine(xhat)

    def _backward(self, dout):
        dxhat = self._affine_backward(dout)
        if not self._training:
            return dxhat * self._inv_std
        be = self.backend
        d3 = self._channels_view(be.xp.ascontiguousarray(dxhat))
        dx = be.norm_channels_backward(d3, self._channels_view(self._xhat), self._inv_std,
                                       out=self.buffer("dx", d3.shape))
        return dx.reshape(dout.shape)


class LayerNormalization(_Normalization):
    """Layer normalization (Ba et al., 2016): statistics per sample over ``axis``.

    Args:
        axis: axis or axes normalised and scaled (default -1, the features).
        epsilon: added to the variance (default 1e-3, Keras's).
        center, scale: learn beta / gamma (shaped like the normalised axes).
        **kwargs: Layer arguments.
    """

    def __init__(
        self,
        axis: int | tuple[int, ...] = -1,
        epsilon: float = 1e-3,
        center: bool = True,
        scale: bool = True,
        beta_initializer: Any = "zeros",
        gamma_initializer: Any = "ones",
        **kwargs: Any,
    ) -> None:
        super().__init__(epsilon, center, scale, beta_initializer, gamma_initializer, **kwargs)
        self.axis = (int(axis),) if isinstance(axis, int) else tuple(int(a) for a in axis)

    def describe(self) -> str:
        """``LayerNormalization(axis=(-1,))``."""
        return f"LayerNormalization(axis={self.axis})"

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {**super().get_config(), "axis": list(self.axis)}

    def build_params(self, input_shape):
        ndim = len(input_shape) + 1
        self._axes = tuple(sorted(_axis_index(a, ndim, self.describe()) for a in self.axis))
        self._add_affine(tuple(input_shape[a - 1] for a in self._axes))

    def _param_shape(self, ndim):
        shape = [1] * ndim
        for a in self._axes:
            shape[a] = self.input_shape[a - 1]
        return tuple(shape)

    def _param_sum_axes(self, ndim):
        return tuple(a for a in range(ndim) if a not in self._axes)

    def _trailing(self, ndim: int) -> bool:
        return self._axes == tuple(range(ndim - len(self._axes), ndim))

    def _forward(self, x, training):
        be = self.backend
        if self._trailing(x.ndim):
            size = 1
            for a in self._axes:
                size *= x.shape[a]
            rows = be.xp.ascontiguousarray(x).reshape(-1, size)
            xhat, self._inv_std = be.norm_rows_forward(rows, self.epsilon,
                                                       xhat=self.buffer("xhat", rows.shape))
            self._xhat = xhat.reshape(x.shape)
        else:
            self._xhat, self._inv_std, _, _ = self._standardize(x, self._axes)
        return self._affine(self._xhat)

    def _backward(self, dout):
        dxhat = self._affine_backward(dout)
        if not self._trailing(dout.ndim):
            return self._standardize_backward(dxhat, self._axes)
        be = self.backend
        rows = be.xp.ascontiguousarray(dxhat).reshape(self._inv_std.shape[0], -1)
        dx = be.norm_rows_backward(rows, self._xhat.reshape(rows.shape), self._inv_std,
                                   out=self.buffer("dx", rows.shape))
        return dx.reshape(dout.shape)


class GroupNormalization(_Normalization):
    """Group normalization (Wu & He, 2018) on channels-first input (N, C, ...).

    Channels are split into ``groups``; statistics are taken per sample and group over
    the group's channels and all spatial positions. gamma/beta are per channel.

    Args:
        groups: number of groups; must divide the channel count.
        epsilon: added to the variance (default 1e-3).
        center, scale: learn beta / gamma.
        **kwargs: Layer arguments.
    """

    def __init__(
        self,
        groups: int = 32,
        epsilon: float = 1e-3,
        center: bool = True,
        scale: bool = True,
        beta_initializer: Any = "zeros",
        gamma_initializer: Any = "ones",
        **kwargs: Any,
    ) -> None:
        if int(groups) < 1:
            raise ValueError(f"{type(self).__name__}: groups must be >= 1. Received: "
                             f"groups={groups}")
        super().__init__(epsilon, center, scale, beta_initializer, gamma_initializer, **kwargs)
        self.groups = int(groups)

    def describe(self) -> str:
        """``GroupNormalization(groups=4)``."""
        return f"{type(self).__name__}(groups={self.groups})"

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {**super().get_config(), "groups": self.groups}

    def build_params(self, input_shape):
        if len(input_shape) < 1:
            raise ValueError(f"{self.describe()}: expected input (N, C, ...), received sample "
                             f"shape {input_shape}")
        channels = input_shape[0]
        if channels % self.groups:
            raise ValueError(f"{self.describe()}: {channels} channels do not split into "
                             f"{self.groups} groups")
        self._add_affine((channels,))

    def _param_shape(self, ndim):
        return (1, -1) + (1,) * (ndim - 2)

    def _param_sum_axes(self, ndim):
        return (0, *range(2, ndim))

    def _forward(self, x, training):
        be = self.backend
        rows = be.xp.ascontiguousarray(x).reshape(x.shape[0] * self.groups, -1)
        xhat, self._inv_std = be.norm_rows_forward(rows, self.epsilon,
                                                   xhat=self.buffer("xhat", rows.shape))
        self._xhat = xhat.reshape(x.shape)
        return self._affine(self._xhat)

    def _backward(self, dout):
        be = self.backend
        dxhat = be.xp.ascontiguousarray(self._affine_backward(dout))
        rows = dxhat.reshape(self._inv_std.shape[0], -1)
        dx = be.norm_rows_backward(rows, self._xhat.reshape(rows.shape), self._inv_std,
                                   out=self.buffer("dx", rows.shape))
        return dx.reshape(dout.shape)


class InstanceNormalization(GroupNormalization):
    """Instance normalization (Ulyanov et al., 2016): statistics per sample and channel
    over the spatial axes of (N, C, ...) input — group normalization with one channel
    per group.

    Args:
        epsilon: added to the variance (default 1e-3).
        center, scale: learn per-channel beta / gamma.
        **kwargs: Layer arguments.
    """

    def __init__(self, epsilon: float = 1e-3, center: bool = True, scale: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(groups=1, epsilon=epsilon, center=center, scale=scale, **kwargs)

    def describe(self) -> str:
        """``InstanceNormalization()``."""
        return "InstanceNormalization()"

    def get_config(self) -> dict:
        """Constructor arguments."""
        config = super().get_config()
        config.pop("groups")
        return config

    def build_params(self, input_shape):
        if len(input_shape) < 2:
            raise ValueError(f"{self.describe()}: expected input (N, C, spatial...), received "
                             f"sample shape {input_shape}")
        self.groups = input_shape[0]
        super().build_params(input_shape)
