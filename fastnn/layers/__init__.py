"""Layers: the Layer base class and one module per family."""

from fastnn.layers.activations import (
    ELU,
    GELU,
    SELU,
    Activation,
    HardSigmoid,
    HardSiLU,
    LeakyReLU,
    Linear,
    LogSoftmax,
    Mish,
    ReLU,
    ReLU6,
    Sigmoid,
    SiLU,
    Softmax,
    Softplus,
    Softsign,
    Step,
    Swish,
    Tanh,
)
from fastnn.layers.base import Layer
from fastnn.layers.blocks import DenseBlock, Residual
from fastnn.layers.conv import Conv2D
from fastnn.layers.dense import Dense
from fastnn.layers.depthwise import DepthwiseConv2D, SeparableConv2D
from fastnn.layers.dropout import Dropout
from fastnn.layers.embedding import Embedding
from fastnn.layers.masking import Masking
from fastnn.layers.normalization import (
    BatchNormalization,
    GroupNormalization,
    InstanceNormalization,
    LayerNormalization,
)
from fastnn.layers.padding import ZeroPadding2D
from fastnn.layers.pooling import (
    AveragePooling2D,
    GlobalAveragePooling2D,
    GlobalMaxPooling2D,
    MaxPooling2D,
)
from fastnn.layers.prelu import PReLU
from fastnn.layers.recurrent import GRU, LSTM, SimpleRNN
from fastnn.layers.reshape import Flatten, Input, Reshape
from fastnn.layers.wrappers import Bidirectional, TimeDistributed

__all__ = [
    "GRU",
    "LSTM",
    "Bidirectional",
    "Embedding",
    "Masking",
    "SimpleRNN",
    "TimeDistributed",
    "AveragePooling2D",
    "Conv2D",
    "DenseBlock",
    "DepthwiseConv2D",
    "GlobalAveragePooling2D",
    "GlobalMaxPooling2D",
    "MaxPooling2D",
    "Residual",
    "SeparableConv2D",
    "ZeroPadding2D",
    "ELU",
    "GELU",
    "SELU",
    "HardSiLU",
    "HardSigmoid",
    "LeakyReLU",
    "Linear",
    "LogSoftmax",
    "Mish",
    "PReLU",
    "ReLU6",
    "SiLU",
    "Softplus",
    "Softsign",
    "Swish",
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
