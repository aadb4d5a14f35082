"""BatchNorm1d, LayerNorm and RMSNorm (torch.nn.modules.batchnorm, torch.nn.modules.normalization;
cpp/layers/normalization.cpp)."""
from __future__ import annotations

from typing import Any

import numpy as np

from .._arrays import check_int, check_number
from .module import Module, Parameter

__all__ = ["BatchNorm1d", "LayerNorm", "RMSNorm"]


def _width(normalized_shape: Any, layer: str) -> int:
    """normalized_shape as the feature width: an int or a 1-tuple (inputs are (batch, features))."""
    if isinstance(normalized_shape, (tuple, list)):
        if len(normalized_shape) != 1:
            raise ValueError(f"{layer}: normalized_shape must be an int or a 1-tuple (the feature width of a "
                             f"(batch, features) input), got {tuple(normalized_shape)}")
        normalized_shape = normalized_shape[0]
    return check_int(normalized_shape, "normalized_shape", low=1, high=2**62)


class BatchNorm1d(Module):
    """Batch normalization over the batch of (batch, num_features) inputs, as torch.nn.BatchNorm1d: in
    training, each feature is normalized by the batch's mean and biased variance, and the running
    estimates are updated with the unbiased variance (momentum=None: their cumulative average); in
    eval mode the running estimates are used (the batch's statistics if track_running_stats=False).
    state_dict: weight, bias (affine), running_mean, running_var, num_batches_tracked (int64)."""

    _kind = "batch_norm"
    _fields = {"num_features": (int,), "eps": (int, float), "momentum": (int, float, type(None)),
               "affine": (bool,), "track_running_stats": (bool,)}

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True) -> None:
        self.num_features = check_int(num_features, "num_features", low=1, high=2**62)
        self.eps = check_number(eps, "eps", low=0.0, low_open=True)
        self.momentum = None if momentum is None else check_number(momentum, "momentum", low=0.0, high=1.0)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        self.weight: Parameter | None = None
        self.bias: Parameter | None = None
        self.running_mean: np.ndarray | None = None
        self.running_var: np.ndarray | None = None
        self.num_batches_tracked: np.ndarray | None = None

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class LayerNorm(Module):
    """Normalization of each row over its features, as torch.nn.LayerNorm(normalized_shape) for
    (batch, features) inputs: (x - mean) / sqrt(var + eps) * weight + bias (biased variance)."""

    _kind = "layer_norm"
    _fields = {"normalized_shape": (int,), "eps": (int, float), "elementwise_affine": (bool,), "bias": (bool,)}

    def __init__(self, normalized_shape: int | tuple[int], eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True) -> None:
        self.normalized_shape = (_width(normalized_shape, "LayerNorm"),)
        self.eps = check_number(eps, "eps", low=0.0)
        self.elementwise_affine = bool(elementwise_affine)
        self.bias_enabled = bool(bias)
        self.weight: Parameter | None = None
        self.bias: Parameter | None = None

    def _spec(self) -> dict:
        return {"kind": self._kind, "normalized_shape": self.normalized_shape[0], "eps": self.eps,
                "elementwise_affine": self.elementwise_affine, "bias": self.bias_enabled}

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class RMSNorm(Module):
    """x / sqrt(mean(x^2) + eps) * weight over each row's features, as torch.nn.RMSNorm; eps=None is
    the machine epsilon of the model's dtype (torch.finfo(dtype).eps)."""

    _kind = "rms_norm"
    _fields = {"normalized_shape": (int,), "eps": (int, float, type(None)), "elementwise_affine": (bool,)}

    def __init__(self, normalized_shape: int | tuple[int], eps: float | None = None,
                 elementwise_affine: bool = True) -> None:
        self.normalized_shape = (_width(normalized_shape, "RMSNorm"),)
        self.eps = None if eps is None else check_number(eps, "eps", low=0.0)
        self.elementwise_affine = bool(elementwise_affine)
        self.weight: Parameter | None = None

    def _spec(self) -> dict:
        return {"kind": self._kind, "normalized_shape": self.normalized_shape[0], "eps": self.eps,
                "elementwise_affine": self.elementwise_affine}

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
