"""Layers: the Layer base class and one module per family."""

from fastnn.layers.activations import Activation, ReLU, Sigmoid, Softmax, Step, Tanh
from fastnn.layers.base import Layer
from fastnn.layers.dense import Dense
from fastnn.layers.dropout import Dropout
from fastnn.layers.normalization import (
    BatchNormalization,
    GroupNormalization,
    InstanceNormalization,
    LayerNormalization,
)
from fastnn.layers.reshape import Flatten, Input, Reshape

__all__ = [
    "Activation",
    "BatchNormalization",
    "Dense",
    "Dropout",
    "Flatten",
    "GroupNormalization",
    "Input",
    "InstanceNormalization",
    "Layer",
    "LayerNormalization",
    "ReLU",
    "Reshape",
    "Sigmoid",
    "Softmax",
    "Step",
    "Tanh",
]
