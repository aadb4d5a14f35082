"""Dropout and AlphaDropout (torch.nn.modules.dropout; cpp/layers/dropout.cpp)."""
from __future__ import annotations

from .._arrays import check_number
from .module import Module

__all__ = ["Dropout", "AlphaDropout"]


class Dropout(Module):
    """Inverted dropout: in training, zero each element with probability p
    and scale the rest by 1/(1-p); identity in eval mode."""

    _kind = "dropout"
    _fields = {"p": (int, float)}

    def __init__(self, p: float = 0.5) -> None:
        self.p = check_number(p, "dropout probability p", low=0.0, high=1.0, high_open=True)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class AlphaDropout(Module):
    """Alpha dropout for SELU networks, as torch.nn.AlphaDropout: in training each element is
    dropped with probability p to alpha' = -1.7580993408473766 and the result is scaled and
    shifted (a * (...) + b) so that zero mean and unit variance are kept; identity in eval mode."""

    _kind = "alpha_dropout"
    _fields = {"p": (int, float)}

    def __init__(self, p: float = 0.5) -> None:
        self.p = check_number(p, "alpha dropout probability p", low=0.0, high=1.0)

    def extra_repr(self) -> str:
        return f"p={self.p}"
