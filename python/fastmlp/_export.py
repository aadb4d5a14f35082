"""What the exporters (fastmlp.onnx, fastmlp.c_export) share: checking the model
and the optional input/output scaling."""
from __future__ import annotations

from typing import Any

import numpy as np

from .nn.container import Sequential


def check_model(model: Any) -> None:
    """A fastmlp Sequential with finite parameters, or TypeError/ValueError."""
    if not isinstance(model, Sequential):
        raise TypeError(f"expected a fastmlp Sequential model, got {type(model).__name__}")
    for name, p in model.named_parameters():
        if not np.isfinite(p.data).all():
            raise ValueError(f"cannot export: {name} contains NaN or infinity")


def widths(model: Any) -> tuple[int | None, int | None]:
    """(in_features, out_features) of model; None where any width works."""
    outs = [layer.out_features for layer in model if hasattr(layer, "out_features")]
    n_in = model.in_features
    return n_in, (outs[-1] if outs else n_in)


def check_scaling(scaling: Any, width: int | None, what: str) -> tuple[np.ndarray, np.ndarray] | None:
    """scaling as (mean, std), float64 arrays of the given width (scalars are
    broadcast), finite with std != 0; None stays None."""
    if scaling is None:
        return None
    try:
        mean, std = scaling
    except (TypeError, ValueError):
        raise TypeError(f"{what} must be a pair (mean, std), got {type(scaling).__name__}") from None
    if width is None:
        raise ValueError(f"{what} needs a model with a fixed width (a Linear layer)")
    out = []
    for name, v in (("mean", mean), ("std", std)):
        a = np.asarray(v, dtype=np.float64)
        if a.ndim > 1 or (a.ndim == 1 and a.shape[0] != width):
            raise ValueError(f"{what}: {name} must have {width} values (one per feature), got shape {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"{what}: {name} contains NaN or infinity")
        out.append(np.broadcast_to(a, (width,)).copy())
    if not (out[1] != 0).all():
        raise ValueError(f"{what}: std contains 0")
    return out[0], out[1]
