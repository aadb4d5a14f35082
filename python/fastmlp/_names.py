"""The activation names that the estimators (``activation=``) and the CLI (``--activation``) accept:
one table, so that the two cannot drift apart. No scikit-learn import (the CLI runs without it)."""
from __future__ import annotations

from .nn import (CELU, ELU, GELU, SELU, Hardsigmoid, Hardswish, Hardtanh, Identity, LeakyReLU, LogSigmoid, Mish,
                 ReLU, ReLU6, Sigmoid, SiLU, Softplus, Softsign, Tanh)

# scikit-learn's four names, then torch.nn's parameter-free activations (default arguments) by their
# torch.nn.functional names
ACTIVATIONS: dict = {"identity": Identity, "logistic": Sigmoid, "tanh": Tanh, "relu": ReLU,
                     "leaky_relu": LeakyReLU, "elu": ELU, "selu": SELU, "celu": CELU, "silu": SiLU, "mish": Mish,
                     "gelu": GELU, "softplus": Softplus, "softsign": Softsign, "hardtanh": Hardtanh,
                     "relu6": ReLU6, "hardswish": Hardswish, "hardsigmoid": Hardsigmoid, "logsigmoid": LogSigmoid}
