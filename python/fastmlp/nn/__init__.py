"""fastmlp.nn, laid out as torch.nn.modules: module.py (Parameter, Module, the registry of layer classes),
linear.py, activation.py, normalization.py, dropout.py, container.py (Sequential, Residual), loss.py, and
utils.py (torch.nn.utils's gradient clipping). Every name here is also fastmlp's: fm.Linear is fm.nn.Linear."""
from . import utils
from .activation import (CELU, ELU, GELU, Hardsigmoid, Hardswish, Hardtanh, LeakyReLU, LogSigmoid, LogSoftmax, Mish,
                         PReLU, ReLU, ReLU6, SELU, Sigmoid, SiLU, Softmax, Softplus, Softsign, Tanh)
from .container import Residual, Sequential
from .dropout import AlphaDropout, Dropout
from .linear import Flatten, Identity, Linear
from .loss import (BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, GaussianNLLLoss, HuberLoss, KLDivLoss, L1Loss,
                   MSELoss, MultiLabelSoftMarginLoss, NLLLoss, PoissonNLLLoss, SmoothL1Loss)
from .module import Module, Parameter
from .normalization import BatchNorm1d, LayerNorm, RMSNorm
# pickles made before nn.py became this package name these classes fastmlp.nn.Grad and fastmlp.nn._Block
from .container import _Block  # noqa: F401
from .module import Grad  # noqa: F401

__all__ = [
    "Module", "Parameter", "Linear", "Identity", "Flatten", "ReLU", "Sigmoid", "Tanh", "GELU", "Softmax",
    "LeakyReLU", "ELU", "CELU", "SELU", "SiLU", "Mish", "Softplus", "Softsign", "Hardtanh", "ReLU6", "Hardsigmoid",
    "Hardswish", "LogSigmoid", "LogSoftmax", "PReLU", "BatchNorm1d", "LayerNorm", "RMSNorm", "Dropout",
    "AlphaDropout", "Sequential", "Residual", "MSELoss", "L1Loss", "HuberLoss", "SmoothL1Loss", "CrossEntropyLoss",
    "NLLLoss", "BCEWithLogitsLoss", "BCELoss", "MultiLabelSoftMarginLoss", "PoissonNLLLoss", "GaussianNLLLoss",
    "KLDivLoss", "utils",
]
