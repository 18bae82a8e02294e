"""Layers: the Layer base class and one module per family."""

from fastnn.layers.activations import Activation, ReLU, Sigmoid, Softmax, Step, Tanh
from fastnn.layers.base import Layer
from fastnn.layers.dense import Dense

__all__ = ["Activation", "Dense", "Layer", "ReLU", "Sigmoid", "Softmax", "Step", "Tanh"]
