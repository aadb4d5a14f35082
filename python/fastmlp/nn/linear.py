"""Linear, Identity and Flatten (torch.nn.modules.linear, torch.nn.modules.flatten)."""
from __future__ import annotations

from typing import Any, Mapping

from .._arrays import check_int
from .module import Module, Parameter

__all__ = ["Linear", "Identity", "Flatten"]


_INIT_NAMES = ("default", "zeros", "ones", "uniform", "normal", "xavier_uniform", "xavier_normal",
               "kaiming_uniform", "kaiming_normal")


class Linear(Module):
    """y = x W^T + b with W (out_features, in_features), like torch.nn.Linear.

    ``init`` names the weight initializer ('default' is PyTorch's: W and b
    uniform in +-1/sqrt(in_features)); with any other init the bias starts at 0.
    """

    _kind = "linear"
    _fields = {"in_features": (int,), "out_features": (int,), "bias": (bool,), "init": (dict,)}

    def __init__(self, in_features: int, out_features: int, bias: bool = True, init: str = "default") -> None:
        self.in_features = check_int(in_features, "in_features", low=1, high=2**62)
        self.out_features = check_int(out_features, "out_features", low=1, high=2**62)
        self.bias_enabled = bool(bias)
        if init not in _INIT_NAMES:
            raise ValueError(f"unknown init {init!r}; expected one of {', '.join(_INIT_NAMES)}")
        self.init = init
        self.weight: Parameter | None = None
        self.bias: Parameter | None = None

    def _spec(self) -> dict:
        return {"kind": "linear", "in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias_enabled, "init": {"name": self.init}}

    @classmethod
    def _from_spec(cls, spec: Mapping[str, Any]) -> "Module":
        init = spec.get("init", {"name": "default"})
        if not (isinstance(init, Mapping) and set(init) == {"name"} and isinstance(init["name"], str)):
            raise ValueError(f"linear: init must be an object {{'name': ...}}, got {init!r}")
        return cls(spec["in_features"], spec["out_features"], bias=spec.get("bias", True), init=init["name"])

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias_enabled}"


class Identity(Module):
    _kind = "identity"


class Flatten(Module):
    """nn.Flatten(start_dim=1, end_dim=-1): the identity on (batch, features) inputs (so that torch
    models and checkpoints with a Flatten line up layer by layer)."""

    _kind = "flatten"
    _fields = {"start_dim": (int,), "end_dim": (int,)}

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        for name, v in (("start_dim", start_dim), ("end_dim", end_dim)):
            if isinstance(v, bool) or v not in (1, -1):
                raise ValueError(f"Flatten: only {name}=1 or -1 (the feature axis of a (batch, features) input) "
                                 f"is supported, got {v!r}")
        self.start_dim, self.end_dim = int(start_dim), int(end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
