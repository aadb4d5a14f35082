"""The global seed: fastmlp.manual_seed, like torch.manual_seed.

Every call that needs randomness without an explicit seed (a Sequential
built with seed=None, fm.init.* without seed=) draws a fresh 64-bit seed from
this stream, so a program that calls manual_seed(s) first is reproducible.
"""
from __future__ import annotations

_MASK = (1 << 64) - 1
_DEFAULT_SEED = 67280421310721  # torch's default initial seed
_state = {"seed": _DEFAULT_SEED, "counter": 0}


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def check_seed(seed: object, name: str = "seed") -> int:
    """Return seed as an int in [0, 2**64), or raise a ValueError/TypeError."""
    import numbers

    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(seed).__name__}")
    seed = int(seed)
    if seed < 0 or seed > _MASK:
        raise ValueError(f"{name} must be in [0, 2**64), got {seed}")
    return seed


def manual_seed(seed: int) -> None:
    """Seed the global stream fastmlp draws default seeds from."""
    _state["seed"] = check_seed(seed)
    _state["counter"] = 0


def initial_seed() -> int:
    """The seed last given to manual_seed (or the default one)."""
    return _state["seed"]


def next_seed() -> int:
    """A fresh 64-bit seed from the global stream."""
    _state["counter"] += 1
    return _splitmix64(_splitmix64(_state["seed"]) ^ _state["counter"])
