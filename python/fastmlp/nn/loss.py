"""Loss functions with PyTorch's definitions. Calling a loss returns the
scalar loss (a float); ``backward()`` then returns dL/d(input) of that call."""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import _core
from .._arrays import FLOAT_DTYPES, as_float_array, check_int, check_number, reject_masked

__all__ = ["MSELoss", "L1Loss", "HuberLoss", "SmoothL1Loss", "CrossEntropyLoss", "NLLLoss", "BCEWithLogitsLoss",
           "BCELoss", "MultiLabelSoftMarginLoss", "PoissonNLLLoss", "GaussianNLLLoss", "KLDivLoss"]


class _Loss:
    """reduction 'none': a call returns the per-sample losses (PyTorch's shape) and
    ``backward(grad)`` takes their upstream gradient; fit, train_step and evaluate
    then use the mean of the per-sample losses (as a PyTorch loop calling .mean())."""

    _kind = ""
    _reductions: tuple = ("none", "mean", "sum")

    def __init__(self, reduction: str = "mean") -> None:
        if reduction not in self._reductions:
            raise ValueError(f"reduction must be one of {', '.join(map(repr, self._reductions))}, got {reduction!r}")
        self.reduction = reduction
        self._grad: np.ndarray | None = None
        self._input_shape: tuple = ()
        self._values_shape: tuple = ()

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

    def _run(self, input: Any, target: Any, reduction: str) -> Any:
        x = np.asarray(input)
        dtype = x.dtype if x.dtype in FLOAT_DTYPES else np.dtype(np.float64)
        a = as_float_array(x, dtype, "input")
        if a.ndim not in (1, 2):
            raise ValueError(f"input must be 1-D or 2-D (batch, features), got {a.ndim}-D")
        shape = a.shape
        if a.ndim == 1:  # one row, so per-class weights broadcast along it as in PyTorch
            a = a.reshape(1, -1)
        t = self._target(target, a.shape, dtype)
        fn = _core.loss_forward32 if dtype == np.float32 else _core.loss_forward64
        res = fn({**self._spec(dtype), "reduction": reduction}, a, t, True)
        self._input_shape = shape
        self._grad = res[1]
        if reduction != "none":
            return float(res[0])
        v = res[2]
        if len(shape) == 1:  # a 1-D input is one sample: its element losses, or one row loss
            v = v.reshape(v.shape[1:])
        self._values_shape = v.shape
        return v

    def __call__(self, input: Any, target: Any) -> Any:
        """The loss: a float, or with reduction 'none' the per-sample losses (an array)."""
        return self._run(input, target, self.reduction)

    forward = __call__

    def _value(self, input: Any, target: Any) -> float:
        """The loss as fit and evaluate report it: reduction 'none' gives the mean."""
        return float(self._run(input, target, "mean" if self.reduction == "none" else self.reduction))

    def backward(self, grad: Any = None) -> np.ndarray:
        """dL/d(input) of the last call, shaped like that input. ``grad`` is the
        upstream gradient: a number (default 1) for 'mean'/'sum', the per-sample
        array (the call's result's shape) for 'none'."""
        if self._grad is None:
            raise RuntimeError("call the loss on (input, target) before backward()")
        if self.reduction != "none":
            if grad is None:
                return self._grad.reshape(self._input_shape)
            return (self._grad * check_number(grad, "grad")).reshape(self._input_shape)
        if grad is None:
            raise RuntimeError("reduction='none' gives one loss per sample: backward(grad) needs their upstream "
                               f"gradient, an array of shape {self._values_shape}")
        g = as_float_array(_numpy(grad), self._grad.dtype, "grad")
        if g.shape != self._values_shape:
            raise ValueError(f"grad must have the per-sample losses' shape {self._values_shape}, got {g.shape}")
        g = g.reshape(self._grad.shape[0], -1)  # (B, 1) for row losses, else the values' (B, columns)
        if g.shape[1] * 2 == self._grad.shape[1] and isinstance(self, GaussianNLLLoss):
            g = np.concatenate([g, g], axis=1)  # the means' and the variances' columns
        return (self._grad * g).reshape(self._input_shape)

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


class _ClassLoss(_Loss):
    """A loss on class-index targets (batch,) with PyTorch's ``weight`` (classes,) and ``ignore_index``."""

    def __init__(self, weight: Any = None, ignore_index: int = -100, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.weight = _class_weights(weight, "weight", non_negative=True)
        self.ignore_index = check_int(ignore_index, "ignore_index", low=-2**63, high=2**63 - 1)

    def _spec(self, dtype: np.dtype) -> dict:
        return {**super()._spec(dtype), "ignore_index": self.ignore_index,
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
        if t.dtype == np.int64 and t.shape == (B,) and (t.view(np.uint64) < C).all():
            # every label a class, the usual batch (a negative label is huge as uint64): nothing to report
            return np.ascontiguousarray(t)
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


class CrossEntropyLoss(_ClassLoss):
    """Softmax cross-entropy on logits (log-sum-exp, never log(0)).

    The target is either class indices (batch,) of an integer dtype, or class
    probabilities (batch, classes) of a float dtype. ``weight`` (classes,),
    ``ignore_index`` and ``label_smoothing`` behave as in PyTorch.
    """

    _kind = "cross_entropy"

    def __init__(self, weight: Any = None, ignore_index: int = -100, reduction: str = "mean",
                 label_smoothing: float = 0.0) -> None:
        super().__init__(weight, ignore_index, reduction)
        self.label_smoothing = check_number(label_smoothing, "label_smoothing", low=0.0, high=1.0)

    def _spec(self, dtype: np.dtype) -> dict:
        return {**super()._spec(dtype), "label_smoothing": self.label_smoothing}


class NLLLoss(_ClassLoss):
    """Negative log-likelihood of class indices on log-probabilities (e.g. after
    LogSoftmax): -weight[y] input[y] per row; 'mean' divides by the sum of the
    non-ignored rows' weight[y], as PyTorch."""

    _kind = "nll"

    def _target(self, target: Any, shape: tuple, dtype: np.dtype) -> np.ndarray:
        t = super()._target(target, shape, dtype)
        if t.dtype != np.int64:
            raise TypeError("NLLLoss needs class-index targets (integers), not class probabilities")
        return t


class _ColumnWeighted(_Loss):
    """An element-wise loss with PyTorch's ``weight``, here one weight per column:
    (columns,) or (1, columns), broadcast along the batch. 'mean' stays the plain
    mean of weight * loss over the elements, as PyTorch."""

    def __init__(self, weight: Any = None, reduction: str = "mean") -> None:
        super().__init__(reduction)
        w = _numpy(weight)
        if w is not None and np.ndim(w) == 2 and np.shape(w)[0] == 1:
            w = np.asarray(w)[0]
        self.weight = _class_weights(w, "weight", non_negative=True)

    def _spec(self, dtype: np.dtype) -> dict:
        return {**super()._spec(dtype), "weight": None if self.weight is None else self.weight.astype(dtype)}

    def _target(self, target: Any, shape: tuple, dtype: np.dtype) -> np.ndarray:
        for name in ("weight", "pos_weight"):
            w = getattr(self, name, None)
            if w is not None and w.shape[0] != shape[1]:
                raise ValueError(f"{name} has {w.shape[0]} entries, but the input has {shape[1]} columns "
                                 "(one weight per column, broadcast along the batch)")
        return super()._target(target, shape, dtype)


class BCEWithLogitsLoss(_ColumnWeighted):
    """Sigmoid + binary cross-entropy on logits, computed stably;
    ``pos_weight`` (classes,) weighs the positive term and ``weight`` (classes,)
    each column's loss, as in PyTorch."""

    _kind = "bce_with_logits"

    def __init__(self, weight: Any = None, reduction: str = "mean", pos_weight: Any = None) -> None:
        if isinstance(weight, str):  # the former signature BCEWithLogitsLoss(reduction, pos_weight)
            weight, reduction = None, weight
        super().__init__(weight, reduction)
        self.pos_weight = _class_weights(pos_weight, "pos_weight")

    def _spec(self, dtype: np.dtype) -> dict:
        return {**super()._spec(dtype), "pos_weight": None if self.pos_weight is None else self.pos_weight.astype(dtype)}


class BCELoss(_ColumnWeighted):
    """Binary cross-entropy on probabilities in [0, 1] (e.g. after Sigmoid), the
    logs clamped at -100 as PyTorch; input or target outside [0, 1] raise."""

    _kind = "bce"


class MultiLabelSoftMarginLoss(_ColumnWeighted):
    """Multi-label one-versus-all loss on logits: each row's loss is the mean over
    its C columns of weight * binary cross-entropy with logits; 'none' gives (batch,)."""

    _kind = "multilabel_soft_margin"


class SmoothL1Loss(_Loss):
    """0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta (beta=0: L1Loss)."""

    _kind = "smooth_l1"

    def __init__(self, reduction: str = "mean", beta: float = 1.0) -> None:
        super().__init__(reduction)
        self.beta = check_number(beta, "beta", low=0.0)

    def _spec(self, dtype: np.dtype) -> dict:
        return {**super()._spec(dtype), "beta": self.beta}


class KLDivLoss(_Loss):
    """Kullback-Leibler divergence target * (log(target) - input) on log-probability
    input (target * ... as log-probabilities too with ``log_target``). 'mean' is
    over all elements as PyTorch's; 'batchmean' divides the sum by the batch size
    (the divergence's true value)."""

    _kind = "kl_div"
    _reductions = ("none", "batchmean", "mean", "sum")

    def __init__(self, reduction: str = "mean", log_target: bool = False) -> None:
        super().__init__(reduction)
        self.log_target = bool(log_target)

    def _spec(self, dtype: np.dtype) -> dict:
        return {**super()._spec(dtype), "log_target": self.log_target}


class GaussianNLLLoss(_Loss):
    """Gaussian negative log-likelihood 0.5 (log var + (input - target)^2 / var)
    (+ 0.5 log(2 pi) with ``full``), var clamped below at ``eps`` as PyTorch.

    PyTorch's forward(input, target, var) takes the variance apart; here it is
    the second half of the input's columns, so a model trained by fit(X, y)
    predicts both: input (batch, 2D) = [means, variances], target (batch, D).
    The variances must be >= 0 (e.g. a final Sigmoid, or Softplus); a negative
    one raises. 'none' gives (batch, D); backward gives (batch, 2D). A target of
    the input's shape (batch, 2D) is taken as already widened: its last D
    columns are ignored."""

    _kind = "gaussian_nll"

    def __init__(self, *, full: bool = False, eps: float = 1e-6, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.full = bool(full)
        self.eps = check_number(eps, "eps", low=0.0, low_open=True)

    def _spec(self, dtype: np.dtype) -> dict:
        return {**super()._spec(dtype), "full": self.full, "eps": self.eps}

    def _target(self, target: Any, shape: tuple, dtype: np.dtype) -> np.ndarray:
        B, C = shape
        if C % 2:
            raise ValueError(f"GaussianNLLLoss: the input needs an even number of columns, the means then the "
                             f"variances, got {C}")
        t = as_float_array(target, dtype, "target")
        if t.shape == shape:  # already widened (fit converts y once, then evaluates on it)
            return t
        t = super()._target(t, (B, C // 2), dtype)
        padded = np.zeros(shape, dtype)  # the kernel reads the first C/2 columns
        padded[:, :C // 2] = t
        return padded
