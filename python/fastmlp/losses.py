"""Loss functions with PyTorch's definitions. Calling a loss returns the
scalar loss (a float); ``backward()`` then returns dL/d(input) of that call."""
from __future__ import annotations

from typing import Any

import numpy as np

from . import _core
from ._arrays import FLOAT_DTYPES, as_float_array, check_int, check_number, reject_masked

__all__ = ["MSELoss", "L1Loss", "HuberLoss", "CrossEntropyLoss", "BCEWithLogitsLoss", "PoissonNLLLoss"]


class _Loss:
    _kind = ""

    def __init__(self, reduction: str = "mean") -> None:
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        self.reduction = reduction
        self._grad: np.ndarray | None = None
        self._input_shape: tuple = ()

    def _spec(self, dtype: np.dtype) -> dict:
        return {"kind": self._kind, "reduction": self.reduction}

    def _target(self, target: Any, shape: tuple, dtype: np.dtype) -> np.ndarray:
        """The target as the kernel takes it, for an output of the given 2-D shape."""
        t = as_float_array(target, dtype, "target")
        if t.shape == shape:
            return t
        # a (B,) target for a (B, 1) output, or (N,) for a 1-D input seen as one row (1, N)
        if t.ndim == 1 and ((shape[1] == 1 and t.shape[0] == shape[0]) or (shape[0] == 1 and t.shape[0] == shape[1])):
            return t.reshape(shape)
        raise ValueError(f"target has shape {t.shape}, but the input has shape {shape}")

    def __call__(self, input: Any, target: Any) -> float:
        x = np.asarray(input)
        dtype = x.dtype if x.dtype in FLOAT_DTYPES else np.dtype(np.float64)
        a = as_float_array(x, dtype, "input")
        self._input_shape = a.shape
        if a.ndim == 1:  # one row, so per-class weights broadcast along it as in PyTorch
            a = a.reshape(1, -1)
        if a.ndim != 2:
            raise ValueError(f"input must be 1-D or 2-D (batch, features), got {a.ndim}-D")
        t = self._target(target, a.shape, dtype)
        fn = _core.loss_forward32 if dtype == np.float32 else _core.loss_forward64
        value, grad = fn(self._spec(dtype), a, t, True)
        self._grad = grad.reshape(self._input_shape)
        return float(value)

    forward = __call__

    def backward(self) -> np.ndarray:
        """dL/d(input) of the last call, shaped like that input."""
        if self._grad is None:
            raise RuntimeError("call the loss on (input, target) before backward()")
        return self._grad

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reduction={self.reduction!r})"


class MSELoss(_Loss):
    """mean((input - target)^2) over all elements (no 1/2)."""

    _kind = "mse"


class L1Loss(_Loss):
    """mean(|input - target|); gradient sign(input - target), 0 where equal."""

    _kind = "l1"


class HuberLoss(_Loss):
    """0.5 d^2 where |d| < delta, else delta (|d| - 0.5 delta)."""

    _kind = "huber"

    def __init__(self, reduction: str = "mean", delta: float = 1.0) -> None:
        super().__init__(reduction)
        self.delta = check_number(delta, "delta", low=0.0, low_open=True)

    def _spec(self, dtype: np.dtype) -> dict:
        return {**super()._spec(dtype), "delta": self.delta}


class PoissonNLLLoss(_Loss):
    """Poisson negative log-likelihood (full=False): exp(input) - target * input
    with log_input (the default), else input - target * log(input + eps)."""

    _kind = "poisson_nll"

    def __init__(self, log_input: bool = True, full: bool = False, eps: float = 1e-8, reduction: str = "mean") -> None:
        super().__init__(reduction)
        if full:
            raise ValueError("PoissonNLLLoss: full=True (the Stirling term) is not supported")
        self.log_input = bool(log_input)
        self.eps = check_number(eps, "eps", low=0.0, low_open=True)

    def _spec(self, dtype: np.dtype) -> dict:
        return {**super()._spec(dtype), "log_input": self.log_input, "eps": self.eps}


def _class_weights(w: Any, name: str, non_negative: bool = False) -> np.ndarray | None:
    if w is None:
        return None
    a = as_float_array(_numpy(w), np.dtype(np.float64), name)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of per-class weights")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinity")
    if non_negative and (a < 0).any():
        raise ValueError(f"{name} must be >= 0 (a negative class weight makes the loss unbounded; the mean's "
                         f"denominator can reach 0), got {a[a < 0][0]}")
    return a


def _numpy(v: Any) -> Any:
    """A torch tensor as a NumPy array; anything else unchanged."""
    return v.detach().cpu().numpy() if hasattr(v, "detach") else v


class CrossEntropyLoss(_Loss):
    """Softmax cross-entropy on logits (log-sum-exp, never log(0)).

    The target is either class indices (batch,) of an integer dtype, or class
    probabilities (batch, classes) of a float dtype. ``weight`` (classes,),
    ``ignore_index`` and ``label_smoothing`` behave as in PyTorch.
    """

    _kind = "cross_entropy"

    def __init__(self, weight: Any = None, ignore_index: int = -100, reduction: str = "mean",
                 label_smoothing: float = 0.0) -> None:
        super().__init__(reduction)
        self.weight = _class_weights(weight, "weight", non_negative=True)
        self.ignore_index = check_int(ignore_index, "ignore_index", low=-2**63, high=2**63 - 1)
        self.label_smoothing = check_number(label_smoothing, "label_smoothing", low=0.0, high=1.0)

    def _spec(self, dtype: np.dtype) -> dict:
        return {**super()._spec(dtype), "label_smoothing": self.label_smoothing, "ignore_index": self.ignore_index,
                "weight": None if self.weight is None else self.weight.astype(dtype)}

    def _counts_some(self, labels: np.ndarray) -> bool:
        """Whether some row of (checked) class-index labels counts in the loss:
        a label that is not ignore_index, with a class weight above 0."""
        kept = labels[labels != self.ignore_index]
        return bool(kept.size) and (self.weight is None or bool(self.weight[kept].any()))

    def _target(self, target: Any, shape: tuple, dtype: np.dtype) -> np.ndarray:
        B, C = shape
        if self.weight is not None and self.weight.shape[0] != C:
            raise ValueError(f"weight has {self.weight.shape[0]} entries, but the input has {C} classes")
        reject_masked(target, "target")
        t = np.asarray(target)
        if t.ndim == 0:
            t = t.reshape(1)
        if t.dtype.kind in "iu" or (t.dtype.kind == "f" and t.ndim == 1):
            if t.dtype.kind == "f":
                if not np.isfinite(t).all() or not (t == np.round(t)).all():
                    raise ValueError("class-index targets must be whole numbers")
            # out-of-range values are reported as given, before any cast could wrap them
            big = (t >= C) & (t != self.ignore_index) if t.dtype.kind == "u" else (np.abs(t) >= 2**62)
            if t.size and big.any():
                raise ValueError(f"target {t[big][0]!r} is out of bounds for {C} classes")
            if t.ndim != 1 or t.shape[0] != B:
                raise ValueError(f"class-index target must have shape ({B},), got {t.shape}")
            labels = np.ascontiguousarray(t, dtype=np.int64)
            bad = (labels != self.ignore_index) & ((labels < 0) | (labels >= C))
            if bad.any():
                raise ValueError(f"target {labels[bad][0]} is out of bounds for {C} classes")
            return labels
        if t.dtype.kind == "f":
            if t.shape != (B, C):
                raise ValueError(f"class-probability target must have shape ({B}, {C}), got {t.shape}")
            return as_float_array(t, dtype, "target")
        raise TypeError(f"target must be class indices (integers) or class probabilities (floats), got {t.dtype}")


class BCEWithLogitsLoss(_Loss):
    """Sigmoid + binary cross-entropy on logits, computed stably;
    ``pos_weight`` (classes,) weighs the positive term as in PyTorch."""

    _kind = "bce_with_logits"
    def __init__(self, reduction: str = "mean", pos_weight: Any = None) -> None:
        super().__init__(reduction)
        self.pos_weight = _class_weights(pos_weight, "pos_weight")

    def _spec(self, dtype: np.dtype) -> dict:
        return {**super()._spec(dtype), "pos_weight": None if self.pos_weight is None else self.pos_weight.astype(dtype)}

    def _target(self, target: Any, shape: tuple, dtype: np.dtype) -> np.ndarray:
        if self.pos_weight is not None and self.pos_weight.shape[0] != shape[1]:
            raise ValueError(f"pos_weight has {self.pos_weight.shape[0]} entries, but the input has {shape[1]} columns")
        return super()._target(target, shape, dtype)
