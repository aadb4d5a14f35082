"""The plain MLP that the estimators and ``fastmlp train`` build: one table of activation names
(``activation=``, ``--activation``) and one layout of the hidden layers, so that the two cannot drift
apart. No scikit-learn import (the CLI runs without it)."""
from __future__ import annotations

from typing import Sequence

from .nn import (CELU, ELU, GELU, SELU, BatchNorm1d, Dropout, Hardsigmoid, Hardswish, Hardtanh, Identity, LayerNorm,
                 LeakyReLU, Linear, LogSigmoid, Mish, Module, ReLU, ReLU6, Residual, Sigmoid, SiLU, Softplus,
                 Softsign, Tanh)

# scikit-learn's four names, then torch.nn's parameter-free activations (default arguments) by their
# torch.nn.functional names
ACTIVATIONS: dict = {"identity": Identity, "logistic": Sigmoid, "tanh": Tanh, "relu": ReLU,
                     "leaky_relu": LeakyReLU, "elu": ELU, "selu": SELU, "celu": CELU, "silu": SiLU, "mish": Mish,
                     "gelu": GELU, "softplus": Softplus, "softsign": Softsign, "hardtanh": Hardtanh,
                     "relu6": ReLU6, "hardswish": Hardswish, "hardsigmoid": Hardsigmoid, "logsigmoid": LogSigmoid}
NORMALIZATIONS: dict = {"batch": BatchNorm1d, "layer": LayerNorm}


def residual_flags(hidden: Sequence[int], residual: bool) -> list:
    """Which hidden layers are residual blocks: with residual=True, hidden layer i > 0 whose input and
    output widths are equal (the first one projects the inputs and never is). ValueError if residual
    is asked for and no layer qualifies."""
    flags = [bool(residual) and i > 0 and hidden[i - 1] == hidden[i] for i in range(len(hidden))]
    if residual and not any(flags):
        raise ValueError(f"residual=True makes a hidden layer x + f(x) where its input and output widths are "
                         f"equal, but none of hidden_layer_sizes={tuple(hidden)} is: the first hidden layer "
                         "projects the inputs and is never residual, hidden layer i (i >= 1) is residual when "
                         "hidden_layer_sizes[i - 1] == hidden_layer_sizes[i] (e.g. (64, 64, 64) makes the "
                         "second and third residual)")
    return flags


def mlp_layers(units: Sequence[int], layout: Sequence[tuple], init: str = "default") -> list[Module]:
    """The layers of an MLP with widths units (inputs, hidden..., outputs) and one (activation name,
    dropout rate, normalization name or None, residual) per hidden layer: each hidden layer is
    Linear -> [BatchNorm1d | LayerNorm] -> activation -> [Dropout], a Residual of those where it is
    residual; then the output Linear. init: the Linears' initializer."""
    layers: list[Module] = []
    for i, (act, drop, norm, res) in enumerate(layout):
        unit: list[Module] = [Linear(units[i], units[i + 1], init=init)]
        if norm is not None:
            unit.append(NORMALIZATIONS[norm](units[i + 1]))
        unit.append(ACTIVATIONS[act]())
        if drop > 0:
            unit.append(Dropout(drop))
        layers += [Residual(*unit)] if res else unit
    return layers + [Linear(units[len(layout)], units[len(layout) + 1], init=init)]
