"""The element-wise activations, Softmax, LogSoftmax and PReLU (torch.nn.modules.activation);
the engine fuses them into the preceding Linear's product (cpp/layers/activations.cpp)."""
from __future__ import annotations

from .._arrays import check_int, check_number
from .module import Module, Parameter

__all__ = ["ReLU", "Sigmoid", "Tanh", "GELU", "Softmax", "LeakyReLU", "ELU", "CELU", "SELU", "SiLU", "Mish",
           "Softplus", "Softsign", "Hardtanh", "ReLU6", "Hardsigmoid", "Hardswish", "LogSigmoid", "LogSoftmax",
           "PReLU"]


class _Activation(Module):
    pass


class ReLU(_Activation):
    _kind = "relu"


class Sigmoid(_Activation):
    _kind = "sigmoid"


class Tanh(_Activation):
    _kind = "tanh"


class GELU(_Activation):
    """GELU: x * Phi(x) (approximate='none', PyTorch's default: the erf form) or
    x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))) (approximate='tanh')."""

    _kind = "gelu"
    _fields = {"approximate": (str,)}

    def __init__(self, approximate: str = "none") -> None:
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class Softmax(_Activation):
    """Softmax over the features of each row (dim=-1 / dim=1 of a batch)."""

    _kind = "softmax"

    def __init__(self, dim: int | None = -1) -> None:
        if dim not in (-1, 1, None):
            raise ValueError(f"Softmax: only dim=-1 (the feature axis of a (batch, features) input) is supported, got {dim}")
        self.dim = -1


class LeakyReLU(_Activation):
    _kind = "leaky_relu"
    _fields = {"negative_slope": (int, float)}

    def __init__(self, negative_slope: float = 0.01) -> None:
        self.negative_slope = check_number(negative_slope, "negative_slope")

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


# ---- the modern activations (torch.nn's names, arguments, defaults and formulas)
class ELU(_Activation):
    """x if x > 0 else alpha * (e^x - 1)."""

    _kind = "elu"
    _fields = {"alpha": (int, float)}

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = check_number(alpha, "ELU alpha")

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class CELU(_Activation):
    """max(0, x) + min(0, alpha * (e^(x/alpha) - 1)); alpha must not be 0."""

    _kind = "celu"
    _fields = {"alpha": (int, float)}

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = check_number(alpha, "CELU alpha")
        if self.alpha == 0:
            raise ValueError("CELU: alpha must not be 0")

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class SELU(_Activation):
    """scale * ELU(x, alpha) with scale = 1.0507009873554805, alpha = 1.6732632423543772."""

    _kind = "selu"


class SiLU(_Activation):
    """x * sigmoid(x) (also called swish)."""

    _kind = "silu"


class Mish(_Activation):
    """x * tanh(softplus(x))."""

    _kind = "mish"


class Softplus(_Activation):
    """log(1 + e^(beta x)) / beta, and x where beta * x > threshold."""

    _kind = "softplus"
    _fields = {"beta": (int, float), "threshold": (int, float)}

    def __init__(self, beta: float = 1.0, threshold: float = 20.0) -> None:
        self.beta = check_number(beta, "Softplus beta")
        if self.beta == 0:
            raise ValueError("Softplus: beta must not be 0")
        self.threshold = check_number(threshold, "Softplus threshold")

    def extra_repr(self) -> str:
        return f"beta={self.beta}, threshold={self.threshold}"


class Softsign(_Activation):
    """x / (1 + |x|)."""

    _kind = "softsign"


class Hardtanh(_Activation):
    """x clamped to [min_val, max_val] (gradient 0 at and beyond the ends)."""

    _kind = "hardtanh"
    _fields = {"min_val": (int, float), "max_val": (int, float)}

    def __init__(self, min_val: float = -1.0, max_val: float = 1.0) -> None:
        self.min_val = check_number(min_val, "Hardtanh min_val")
        self.max_val = check_number(max_val, "Hardtanh max_val")
        if not self.min_val < self.max_val:
            raise ValueError(f"Hardtanh: min_val ({self.min_val}) must be less than max_val ({self.max_val})")

    def extra_repr(self) -> str:
        return f"min_val={self.min_val}, max_val={self.max_val}"


class ReLU6(_Activation):
    """min(max(x, 0), 6), i.e. Hardtanh(0, 6)."""

    _kind = "relu6"


class Hardsigmoid(_Activation):
    """min(max(x + 3, 0), 6) / 6."""

    _kind = "hardsigmoid"


class Hardswish(_Activation):
    """x * min(max(x + 3, 0), 6) / 6."""

    _kind = "hardswish"


class LogSigmoid(_Activation):
    """log(sigmoid(x)) = -softplus(-x)."""

    _kind = "logsigmoid"


class LogSoftmax(_Activation):
    """log(softmax(x)) over the features of each row (dim=1 / dim=-1 of a batch)."""

    _kind = "log_softmax"

    def __init__(self, dim: int = 1) -> None:
        if isinstance(dim, bool) or dim not in (1, -1):
            raise ValueError(f"LogSoftmax: only dim=1 or dim=-1 (the feature axis of a (batch, features) input) "
                             f"is supported, got {dim!r}")
        self.dim = 1


class PReLU(Module):
    """x if x > 0 else a * x with a learnable ``weight`` a of shape (num_parameters,): one weight
    for every feature (num_parameters=1) or one per feature (num_parameters = the input width),
    each starting at ``init``."""

    _kind = "prelu"
    _fields = {"num_parameters": (int,), "init": (int, float)}

    def __init__(self, num_parameters: int = 1, init: float = 0.25) -> None:
        self.num_parameters = check_int(num_parameters, "PReLU num_parameters", low=1, high=2**62)
        self.init = check_number(init, "PReLU init")
        self.weight: Parameter | None = None

    def extra_repr(self) -> str:
        return f"num_parameters={self.num_parameters}"
