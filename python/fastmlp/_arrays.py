"""Argument checking and NumPy conversion shared by the public API."""
from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import numpy.ma  # noqa: F401  now, not lazily on a first call: a signal handler that calls fastmlp while
# that first import runs (the hostile SIGALRM case) would otherwise re-enter numpy's lazy import and recurse

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def as_dtype(dtype: Any) -> np.dtype:
    """'float32' / 'float64' (or the NumPy types) as a np.dtype."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}") from None
    if dt not in FLOAT_DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return dt


def as_float_array(x: Any, dtype: np.dtype, name: str = "X") -> np.ndarray:
    """x as a C-contiguous array of dtype: a new array unless x already is one.

    Numbers (bool excluded) are converted; strings, objects, complex and
    other kinds raise a TypeError naming the argument.
    """
    reject_masked(x, name)
    a = x if isinstance(x, np.ndarray) else np.asarray(x)
    if a.dtype.kind not in "fiu":
        if a.dtype.kind == "b":
            raise TypeError(f"{name} is a boolean array; convert it to a float array first")
        raise TypeError(f"{name} must be an array of real numbers, got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=dtype)


def reject_masked(x: Any, name: str) -> None:
    """A masked array (numpy.ma) with masked entries raises: the mask cannot be
    honoured, and the hidden values would be used as data."""
    if isinstance(x, np.ma.MaskedArray) and np.ma.getmaskarray(x).any():
        raise ValueError(f"{name} is a masked array (numpy.ma), whose mask fastmlp cannot honour; pass "
                         f"{name}.filled(value), or drop the masked rows, e.g. x[~x.mask.any(axis=1)]")


def check_finite(a: np.ndarray, name: str = "X") -> None:
    if a.dtype.kind == "f" and a.size and not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinity")


def check_number(v: Any, name: str, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> float:
    """v as a finite float within [low, high] (open ends as asked), else ValueError."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(v).__name__}")
    f = float(v)
    bad = not np.isfinite(f)
    if low is not None:
        bad = bad or (f <= low if low_open else f < low)
    if high is not None:
        bad = bad or (f >= high if high_open else f > high)
    if bad:
        lo = "" if low is None else ("(" if low_open else "[") + f"{low}"
        hi = "" if high is None else f"{high}" + (")" if high_open else "]")
        rng = f" in {lo}, {hi}" if lo and hi else (f" >{'' if low_open else '='} {low}" if lo else "")
        raise ValueError(f"{name} must be a finite number{rng}, got {v}")
    return f


def check_int(v: Any, name: str, *, low: int | None = None, high: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(v).__name__}")
    i = int(v)
    if low is not None and i < low:
        raise ValueError(f"{name} must be >= {low}, got {i}")
    if high is not None and i > high:
        raise ValueError(f"{name} must be <= {high}, got {i}")
    return i


PRECISIONS = ("float32", "bfloat16")


def check_precision(precision: Any, model: Any) -> bool:
    """Whether the products run in bfloat16 (cpp/gemm_bf16.h); ValueError for anything but 'float32' (the
    model's own dtype) and 'bfloat16' (float32 models only)."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"precision must be 'float32' or 'bfloat16', got {precision!r}")
    if precision == "bfloat16" and model.dtype != np.float32:
        raise ValueError("precision='bfloat16' needs a float32 model (this one is float64): build it with "
                         "dtype='float32'")
    return precision == "bfloat16"
