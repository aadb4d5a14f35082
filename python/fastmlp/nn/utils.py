"""fastmlp.nn.utils: torch.nn.utils's gradient clipping over Parameters' .grad
(NumPy views of the model's gradient buffer, so clipping writes into the model).
Between model.backward and optimizer.step; fit and train_step clip inside the
C++ loop instead (``clip_grad_norm=``, ``clip_grad_value=``)."""
from __future__ import annotations

import math
import numbers
from typing import Any, Iterable

import numpy as np


__all__ = ["clip_grad_norm_", "clip_grad_value_"]


def _grads(parameters: Any) -> list[np.ndarray]:
    """The gradients of parameters (one Parameter or an iterable of them), None grads left out."""
    params = [parameters] if hasattr(parameters, "grad") else list(parameters)
    for p in params:
        if not hasattr(p, "grad"):
            raise TypeError(f"parameters must be fastmlp Parameters (e.g. model.parameters()), got {type(p).__name__}")
    return [p.grad for p in params if p.grad is not None]


def _norm(a: np.ndarray, ord: float) -> float:
    """torch.linalg.vector_norm(a, ord) of the flattened a, in float64."""
    x = np.abs(np.asarray(a, dtype=np.float64)).ravel()
    if ord == math.inf:
        return float(x.max()) if x.size else 0.0
    if ord == -math.inf:
        return float(x.min()) if x.size else math.inf
    if ord == 0:
        return float(np.count_nonzero(x))
    return float(np.sum(x ** ord) ** (1.0 / ord))


def _real(v: Any, name: str) -> float:
    """v as a float, infinities allowed (torch's max_norm=inf, norm_type=inf), NaN refused."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(v).__name__}")
    if math.isnan(v):
        raise ValueError(f"{name} must not be NaN")
    return float(v)


def _foreach(foreach: Any) -> None:
    if foreach is not None and not isinstance(foreach, bool):
        raise TypeError(f"foreach must be None or a bool, got {type(foreach).__name__}")


def clip_grad_norm_(parameters: Iterable[Any] | Any, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False, foreach: bool | None = None) -> np.ndarray:
    """Scale the gradients of parameters in place so that their total norm (the
    norm_type norm of the per-parameter norms, as if all gradients were one
    vector) is at most max_norm: each is multiplied by
    min(1, max_norm / (total_norm + 1e-6)), torch's formula. Parameters whose
    .grad is None are skipped. Returns the total norm before clipping as a 0-d
    array of the gradients' dtype (0 when there is no gradient). With
    error_if_nonfinite, a NaN or infinite total norm raises RuntimeError and
    changes nothing; otherwise the gradients are scaled by it (as torch).
    foreach is accepted for torch compatibility (NumPy has one implementation)."""
    max_norm, norm_type = _real(max_norm, "max_norm"), _real(norm_type, "norm_type")
    _foreach(foreach)
    grads = _grads(parameters)
    if not grads:
        return np.asarray(0.0, dtype=np.float32)
    dtype = np.result_type(*grads)
    total = _norm(np.array([_norm(g, norm_type) for g in grads]), norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, so it "
                           "cannot be clipped. To disable this error and scale the gradients by the non-finite norm "
                           "anyway, set `error_if_nonfinite=False`")
    coef = max_norm / (total + 1e-6) if math.isfinite(total) else math.nan if math.isnan(total) else 0.0
    if not coef >= 1.0:  # NaN too, as torch's clamp(max=1.0)
        with np.errstate(invalid="ignore"):  # inf * 0, as torch: silently NaN
            for g in grads:
                g *= g.dtype.type(coef)
    return np.asarray(total, dtype=dtype)


def clip_grad_value_(parameters: Iterable[Any] | Any, clip_value: float, foreach: bool | None = None) -> None:
    """Clamp every element of the parameters' gradients to [-clip_value,
    clip_value] in place (None grads skipped), as torch.nn.utils.clip_grad_value_."""
    clip_value = _real(clip_value, "clip_value")
    _foreach(foreach)
    if clip_value < 0:
        raise ValueError(f"clip_value must be a non-negative number, got {clip_value}")
    for g in _grads(parameters):
        np.clip(g, -clip_value, clip_value, out=g)
