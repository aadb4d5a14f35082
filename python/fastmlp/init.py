"""In-place initializers with torch.nn.init's definitions.

Each takes a model Parameter or a writable float NumPy array, fills it
(the random ones from ``seed``, or from the global stream, fm.manual_seed)
and returns it.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import _core, _random
from ._arrays import FLOAT_DTYPES, check_number
from .nn import Parameter

__all__ = ["calculate_gain", "zeros_", "ones_", "constant_", "uniform_", "normal_", "xavier_uniform_",
           "xavier_normal_", "kaiming_uniform_", "kaiming_normal_"]


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for a nonlinearity, as torch.nn.init.calculate_gain."""
    if param is None:
        param = 0.01 if nonlinearity == "leaky_relu" else 0.0
    return float(_core.calculate_gain(nonlinearity, float(param)))


def _fans(shape: tuple) -> tuple[int, int]:
    if len(shape) < 2:
        raise ValueError("Fan in and fan out can not be computed for tensor with fewer than 2 dimensions")
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return int(shape[1]) * receptive, int(shape[0]) * receptive


def _fill(tensor: Any, spec: dict, seed: int | None, need_fans: bool = False) -> Any:
    arr = tensor.data if isinstance(tensor, Parameter) else tensor
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"expected a Parameter or a NumPy array, got {type(tensor).__name__}")
    if arr.dtype not in FLOAT_DTYPES:
        raise TypeError(f"can only initialise float32/float64 arrays, got {arr.dtype}")
    if not arr.flags.writeable:
        raise ValueError("the array is read-only")
    fan_in, fan_out = _fans(arr.shape) if need_fans else (0, 0)
    seed = _random.next_seed() if seed is None else _random.check_seed(seed)
    fill = _core.init_fill32 if arr.dtype == np.float32 else _core.init_fill64
    if arr.flags.c_contiguous:
        fill(arr, spec, fan_in, fan_out, seed)
    else:  # strided view: fill a contiguous copy, then write it through the view
        tmp = np.empty(arr.shape, arr.dtype)
        fill(tmp, spec, fan_in, fan_out, seed)
        arr[...] = tmp
    return tensor


def zeros_(tensor: Any) -> Any:
    return _fill(tensor, {"name": "zeros"}, 0)


def ones_(tensor: Any) -> Any:
    return _fill(tensor, {"name": "ones"}, 0)


def constant_(tensor: Any, val: float) -> Any:
    return _fill(tensor, {"name": "constant", "a": check_number(val, "val")}, 0)


def uniform_(tensor: Any, a: float = 0.0, b: float = 1.0, *, seed: int | None = None) -> Any:
    a, b = check_number(a, "a"), check_number(b, "b")
    if a > b:
        raise ValueError(f"uniform_ expects a <= b, got a={a}, b={b}")
    return _fill(tensor, {"name": "uniform", "a": a, "b": b}, seed)


def normal_(tensor: Any, mean: float = 0.0, std: float = 1.0, *, seed: int | None = None) -> Any:
    return _fill(tensor, {"name": "normal", "a": check_number(mean, "mean"), "b": check_number(std, "std", low=0.0)}, seed)


def xavier_uniform_(tensor: Any, gain: float = 1.0, *, seed: int | None = None) -> Any:
    """U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out))."""
    return _fill(tensor, {"name": "xavier_uniform", "gain": check_number(gain, "gain")}, seed, need_fans=True)


def xavier_normal_(tensor: Any, gain: float = 1.0, *, seed: int | None = None) -> Any:
    """N(0, std^2) with std = gain * sqrt(2 / (fan_in + fan_out))."""
    return _fill(tensor, {"name": "xavier_normal", "gain": check_number(gain, "gain")}, seed, need_fans=True)


def _kaiming(name: str, tensor: Any, a: float, mode: str, nonlinearity: str, seed: int | None) -> Any:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"Mode {mode} not supported, please use one of fan_in, fan_out")
    calculate_gain(nonlinearity, a)  # validates the name
    return _fill(tensor, {"name": name, "kaiming_a": check_number(a, "a"), "mode": mode,
                          "nonlinearity": nonlinearity}, seed, need_fans=True)


def kaiming_uniform_(tensor: Any, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu", *,
                     seed: int | None = None) -> Any:
    """U(-b, b) with b = gain * sqrt(3 / fan)."""
    return _kaiming("kaiming_uniform", tensor, a, mode, nonlinearity, seed)


def kaiming_normal_(tensor: Any, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu", *,
                    seed: int | None = None) -> Any:
    """N(0, std^2) with std = gain / sqrt(fan)."""
    return _kaiming("kaiming_normal", tensor, a, mode, nonlinearity, seed)


del math
