"""fastnn: layers with explicit forward/backward on NumPy, Numba and CuPy backends."""

from fastnn import (
    activations,
    backends,
    callbacks,
    datasets,
    initializers,
    layers,
    losses,
    metrics,
    optimizers,
    regularizers,
    utils,
)
from fastnn._version import __version__
from fastnn.backends import (
    Backend,
    available,
    current_backend,
    get_backend,
    set_backend,
    use_backend,
)
from fastnn.callbacks import Callback, History
from fastnn.config import floatx, set_floatx
from fastnn.errors import BackendUnavailableError, DivergenceError, GradcheckError, NotBuiltError
from fastnn.gradcheck import GradcheckReport, gradcheck, numerical_gradient
from fastnn.layers import (
    Activation,
    Dense,
    Dropout,
    Flatten,
    Input,
    Layer,
    ReLU,
    Reshape,
    Sigmoid,
    Softmax,
    Step,
    Tanh,
)
from fastnn.losses import (
    CategoricalCrossentropy,
    Loss,
    MeanSquaredError,
    SoftmaxWithLoss,
    SparseCategoricalCrossentropy,
)
from fastnn.model import Sequential
from fastnn.optimizers import SGD, Adam, Optimizer
from fastnn.utils import set_seed, to_categorical

__all__ = [
    "SGD",
    "Activation",
    "Adam",
    "Backend",
    "BackendUnavailableError",
    "Callback",
    "CategoricalCrossentropy",
    "Dense",
    "DivergenceError",
    "Dropout",
    "Flatten",
    "GradcheckError",
    "GradcheckReport",
    "History",
    "Input",
    "Layer",
    "Loss",
    "MeanSquaredError",
    "NotBuiltError",
    "Optimizer",
    "ReLU",
    "Reshape",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "SoftmaxWithLoss",
    "SparseCategoricalCrossentropy",
    "Step",
    "Tanh",
    "__version__",
    "activations",
    "available",
    "backends",
    "callbacks",
    "current_backend",
    "datasets",
    "floatx",
    "get_backend",
    "gradcheck",
    "initializers",
    "layers",
    "losses",
    "metrics",
    "numerical_gradient",
    "optimizers",
    "regularizers",
    "set_backend",
    "set_floatx",
    "set_seed",
    "to_categorical",
    "use_backend",
    "utils",
]
