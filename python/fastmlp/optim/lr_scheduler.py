"""Learning-rate schedules with torch.optim.lr_scheduler's rules, stepped
once per epoch; the arithmetic is in C++ (shared with model.fit)."""
from __future__ import annotations

from typing import Any

from .. import _core
from .._arrays import check_int, check_number
from .optimizer import Optimizer

__all__ = ["LRScheduler", "StepLR", "ExponentialLR", "CosineAnnealingLR", "ReduceLROnPlateau"]


class LRScheduler:
    _kind = ""

    def __init__(self, optimizer: Optimizer, config: dict) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not a fastmlp optimizer")
        self.optimizer = optimizer
        self._config = {"kind": self._kind, **config}
        self._state = tuple(_core.schedule_initial_state(self._config))
        for g in optimizer.param_groups:
            g.setdefault("initial_lr", g["lr"])
        self.base_lrs = [float(g["initial_lr"]) for g in optimizer.param_groups]
        self._last_lr = [float(g["lr"]) for g in optimizer.param_groups]

    @property
    def last_epoch(self) -> int:
        return int(self._state[0])

    def step(self, metrics: Any = None) -> None:
        """Advance one epoch and set each group's lr."""
        lrs = [float(g["lr"]) for g in self.optimizer.param_groups]
        metric = 0.0 if metrics is None else float(metrics)
        new, self._state = _core.schedule_step(self._config, self._state, lrs, self.base_lrs, metric)
        for g, lr in zip(self.optimizer.param_groups, new):
            g["lr"] = lr
        self._last_lr = list(new)

    def get_last_lr(self) -> list[float]:
        return list(self._last_lr)

    def state_dict(self) -> dict:
        return {"config": dict(self._config), "state": list(self._state), "base_lrs": list(self.base_lrs),
                "last_lr": list(self._last_lr)}

    def load_state_dict(self, state_dict: dict) -> None:
        self._config = dict(state_dict["config"])
        self._state = tuple(state_dict["state"])
        self.base_lrs = list(state_dict["base_lrs"])
        self._last_lr = list(state_dict["last_lr"])


class StepLR(LRScheduler):
    """lr *= gamma every step_size epochs."""

    _kind = "step"

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        super().__init__(optimizer, {"step_size": check_int(step_size, "step_size", low=1),
                                     "gamma": check_number(gamma, "gamma", low=0.0, low_open=True)})


class ExponentialLR(LRScheduler):
    """lr_t = lr_0 * gamma^t."""

    _kind = "exponential"

    def __init__(self, optimizer: Optimizer, gamma: float) -> None:
        super().__init__(optimizer, {"gamma": check_number(gamma, "gamma", low=0.0, low_open=True)})


class CosineAnnealingLR(LRScheduler):
    """lr follows half a cosine from the initial lr down to eta_min over T_max epochs."""

    _kind = "cosine"

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0) -> None:
        super().__init__(optimizer, {"T_max": check_int(T_max, "T_max", low=1),
                                     "eta_min": check_number(eta_min, "eta_min")})


class ReduceLROnPlateau(LRScheduler):
    """Multiply lr by factor when the metric passed to step() stops improving for patience epochs."""

    _kind = "plateau"

    def __init__(self, optimizer: Optimizer, mode: str = "min", factor: float = 0.1, patience: int = 10,
                 threshold: float = 1e-4, threshold_mode: str = "rel", cooldown: int = 0, min_lr: float = 0.0,
                 eps: float = 1e-8) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode {mode!r} is unknown: 'min' or 'max'")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold mode {threshold_mode!r} is unknown: 'rel' or 'abs'")
        super().__init__(optimizer, {
            "mode": mode, "factor": check_number(factor, "factor", low=0.0, high=1.0, high_open=True),
            "patience": check_int(patience, "patience", low=0),
            "threshold": check_number(threshold, "threshold", low=0.0), "threshold_mode": threshold_mode,
            "cooldown": check_int(cooldown, "cooldown", low=0), "min_lr": check_number(min_lr, "min_lr", low=0.0),
            "eps": check_number(eps, "eps", low=0.0)})

    def step(self, metrics: Any = None) -> None:  # type: ignore[override]
        if metrics is None:
            raise TypeError("ReduceLROnPlateau.step() needs the metric to watch, e.g. step(val_loss)")
        m = float(metrics)
        super().step(m)
