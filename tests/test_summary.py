"""model.summary() with FLOPs and activation memory; fastnn.utils.profile."""

from __future__ import annotations

import numpy as np
import pytest

import fastnn
from fastnn.layers.base import Layer


def _mlp():
    return fastnn.Sequential(
        [fastnn.Dense(512, activation="relu", input_dim=784), fastnn.Dropout(0.2),
         fastnn.Dense(10, activation="softmax")],
        backend="numpy",
    )


def test_flops_and_activation_memory_by_hand():
    model = _mlp()
    # Dense 784->512: 2*784*512 multiply-adds, 512 bias adds, 512 ReLUs; Dropout: 512;
    # Dense 512->10: 2*512*10 + 10 bias + 5*10 for the softmax.
    want = (2 * 784 * 512 + 512 + 512) + 512 + (2 * 512 * 10 + 10 + 5 * 10)
    assert model.flops_per_sample() == want
    assert model.activation_bytes_per_sample() == (512 + 512 + 10) * 4
    text = model.summary(print_fn=None, batch_sizes=(1, 1024))
    assert "FLOPs per sample: 814.65 k forward" in text
    assert "Activation memory: 4.04 KiB per sample; batch 1: 4.04 KiB, batch 1024: 4.04 MiB" \
        in text
    assert "Total params: 407,050 (1.55 MiB)" in text
    assert "dense" in text and "803.84 k" in text


def test_summary_prints_and_float64_doubles_memory(capsys):
    model = _mlp()
    model.cast("float64")
    model.summary()
    out = capsys.readouterr().out
    assert 'Model: "sequential"' in out and "dtype: float64" in out
    assert model.activation_bytes_per_sample() == (512 + 512 + 10) * 8


class Opaque(Layer):
    """A layer with parameters whose cost the summary cannot know."""

    def build_params(self, input_shape):
        self.add_param("w", (input_shape[-1],), "ones")

    def _forward(self, x, training):
        return x * self.params["w"]

    def _backward(self, dout):
        return dout * self.params["w"]


class Counted(Opaque):
    """The same, declaring its cost."""

    def flops(self):
        return 7 * self.input_shape[-1]


def test_unknown_layers_show_a_question_mark_and_layers_can_declare_flops():
    model = fastnn.Sequential([fastnn.Dense(4, input_dim=3), Opaque()], backend="numpy")
    assert model.flops_per_sample() is None
    text = model.summary(print_fn=None)
    assert "?" in text and "(+ layers marked ?)" in text
    counted = fastnn.Sequential([fastnn.Dense(4, input_dim=3), Counted()], backend="numpy")
    assert counted.flops_per_sample() == 2 * 3 * 4 + 4 + 28


def test_unbuilt_model_raises_a_clear_error():
    model = fastnn.Sequential([fastnn.Dense(4)])
    with pytest.raises(fastnn.NotBuiltError, match="not built"):
        model.flops_per_sample()
    assert "(unbuilt)" in model.summary(print_fn=None)


def test_profile_reports_every_layer(backend, capsys):
    model = fastnn.Sequential(
        [fastnn.Dense(32, activation="relu", input_dim=16), fastnn.Dense(4, activation="softmax")],
        backend=backend,
    )
    x = np.random.default_rng(0).normal(size=(64, 16))
    before = model.get_weights()
    report = fastnn.utils.profile(model, x, repeats=3)
    assert [t.name for t in report.layers] == [layer.name for layer in model.layers]
    assert all(t.forward_s > 0 and t.backward_s > 0 for t in report.layers)
    assert report.batch_size == 64 and report.backend == backend.name
    out = capsys.readouterr().out
    assert "Forward" in out and "Backward" in out and model.layers[0].name in out
    for a, b in zip(before, model.get_weights(), strict=True):  # profiling trains nothing
        assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="repeats"):
        fastnn.utils.profile(model, x, repeats=0)


def test_convolution_pooling_and_flatten_flops_by_hand():
    model = fastnn.Sequential(
        [fastnn.layers.Conv2D(8, 3, activation="relu", input_shape=(1, 28, 28)),
         fastnn.layers.MaxPooling2D(2), fastnn.Flatten(), fastnn.Dense(10, activation="softmax")],
        backend="numpy",
    )
    conv_out = 8 * 26 * 26
    conv = 2 * (8 * 1 * 3 * 3) * (26 * 26) + conv_out + conv_out  # MACs, bias, ReLU
    pool = (8 * 13 * 13) * 4  # one comparison per element of each 2x2 window
    dense = 2 * 1352 * 10 + 10 + 5 * 10
    assert [fastnn.model.layer_flops(layer) for layer in model.layers] == [conv, pool, 0, dense]
    assert model.activation_bytes_per_sample() == (conv_out + 1352 + 1352 + 10) * 4
