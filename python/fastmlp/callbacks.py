"""Callbacks for model.fit. Any callable ``f(epoch, logs) -> stop?`` works
too; ``logs`` holds the epoch's 'loss', 'val_loss', 'accuracy', 'lr', ...."""
from __future__ import annotations

import math
from typing import Any

from ._arrays import check_int, check_number

__all__ = ["Callback", "EarlyStopping", "History"]


class Callback:
    """Base class: override any of the hooks. on_epoch_end returning True stops
    training. on_train_end runs when fit ends normally (as in Keras: not after
    Ctrl-C or an error)."""

    model: Any = None

    def on_train_begin(self, model: Any) -> None:
        self.model = model

    def on_epoch_end(self, epoch: int, logs: dict) -> bool | None:
        return None

    def on_train_end(self) -> None:
        pass


class History:
    """What fit returns: ``history`` maps each log name to its per-epoch values."""

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []

    def _append(self, epoch: int, logs: dict) -> None:
        self.epoch.append(epoch)
        for k, v in logs.items():
            self.history.setdefault(k, []).append(v)

    def __repr__(self) -> str:
        return f"History(epochs={len(self.epoch)}, keys={sorted(self.history)})"


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for
    ``patience`` epochs, exactly as keras.callbacks.EarlyStopping: with a
    constant loss and patience=3, fit runs 4 epochs. ``mode`` 'auto' maximises
    names containing 'acc' and minimises the rest; with a ``baseline``, the
    wait restarts only on epochs that beat both the best value and the
    baseline; epochs before ``start_from_epoch`` are not monitored. With
    ``restore_best_weights`` the weights of the best epoch are loaded when fit
    ends normally (early stop or last epoch; not after Ctrl-C or an error).
    Unlike Keras, ``best`` restarts at each fit."""

    def __init__(self, monitor: str = "val_loss", patience: int = 0, min_delta: float = 0.0,
                 restore_best_weights: bool = False, mode: str = "auto", baseline: float | None = None,
                 start_from_epoch: int = 0) -> None:
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        self.monitor = monitor
        self.patience = check_int(patience, "patience", low=0)
        self.min_delta = abs(check_number(min_delta, "min_delta"))
        self.restore_best_weights = bool(restore_best_weights)
        self.mode = ("max" if "acc" in monitor else "min") if mode == "auto" else mode
        self.baseline = None if baseline is None else check_number(baseline, "baseline")
        self.start_from_epoch = check_int(start_from_epoch, "start_from_epoch", low=0)
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = -1
        self.wait = 0
        self.stopped_epoch: int | None = None
        self._best_state: Any = None

    def on_train_begin(self, model: Any) -> None:
        super().on_train_begin(model)
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch, self.wait, self.stopped_epoch, self._best_state = -1, 0, None, None

    def _improved(self, value: float, reference: float) -> bool:
        if self.mode == "min":
            return value + self.min_delta < reference
        return value - self.min_delta > reference

    def on_epoch_end(self, epoch: int, logs: dict) -> bool:
        if self.monitor not in logs:
            raise KeyError(f"EarlyStopping monitors {self.monitor!r}, but the logs have only {sorted(logs)} "
                           "(val_* needs validation_data)")
        if epoch < self.start_from_epoch:
            return False
        value = float(logs[self.monitor])
        if self.restore_best_weights and self._best_state is None:  # until one improves: these weights
            self._best_state, self.best_epoch = self.model.state_dict(), epoch
        self.wait += 1
        if self._improved(value, self.best):
            self.best, self.best_epoch = value, epoch
            if self.restore_best_weights:
                self._best_state = self.model.state_dict()
            if self.baseline is None or self._improved(value, self.baseline):
                self.wait = 0
            return False
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            return True
        return False

    def on_train_end(self) -> None:
        if self.restore_best_weights and self._best_state is not None:
            self.model.load_state_dict(self._best_state)
