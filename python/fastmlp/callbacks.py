"""Callbacks for model.fit, with Keras's names and semantics. Any callable
``f(epoch, logs) -> stop?`` works too; ``logs`` holds the epoch's History keys
('loss', 'val_loss', 'accuracy', 'val_accuracy', 'lr', 'time', ...)."""
from __future__ import annotations

import csv
import math
import os
import warnings
from typing import Any, Callable, Sequence

from ._arrays import check_int, check_number
from .optim.lr_scheduler import _to_file

__all__ = ["Callback", "CSVLogger", "EarlyStopping", "History", "LambdaCallback", "ModelCheckpoint",
           "ReduceLROnPlateau", "TerminateOnNaN"]


class Callback:
    """Base class, as keras.callbacks.Callback: fit calls ``set_model(model)`` and
    ``set_params(params)`` first (params: 'epochs', 'steps' (batches per epoch),
    'verbose', and fastmlp's 'optimizer' and 'scheduler' of the fit), then
    ``on_train_begin(logs)``, per epoch ``on_epoch_begin(epoch, logs)`` and
    ``on_epoch_end(epoch, logs)`` (logs: the History keys of the epoch; epochs count
    from 0), and ``on_train_end(logs)`` with the last epoch's logs when fit ends
    normally (not after Ctrl-C or an error). Callbacks run in list order. To stop
    training, set ``self.model.stop_training = True`` (Keras) or return True from
    on_epoch_end; the epoch finishes and its callbacks all run. There are no batch
    hooks: the batches run in C++."""

    model: Any = None
    params: dict = {}

    def set_model(self, model: Any) -> None:
        self.model = model

    def set_params(self, params: dict) -> None:
        self.params = params

    def on_train_begin(self, logs: dict | None = None) -> None:
        pass

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> bool | None:
        return None

    def on_train_end(self, logs: dict | None = None) -> None:
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
    Unlike Keras, ``best`` restarts at each fit, and a ``monitor`` missing from
    the logs raises KeyError (Keras warns). ``verbose`` > 0 prints Keras's
    messages at the end of fit ("Epoch 5: early stopping", "Restoring model
    weights from the end of the best epoch: 3.")."""

    def __init__(self, monitor: str = "val_loss", patience: int = 0, min_delta: float = 0.0,
                 restore_best_weights: bool = False, mode: str = "auto", baseline: float | None = None,
                 start_from_epoch: int = 0, verbose: int = 0) -> None:
        self.monitor = monitor
        self.patience = check_int(patience, "patience", low=0)
        self.min_delta = abs(check_number(min_delta, "min_delta"))
        self.restore_best_weights = bool(restore_best_weights)
        self.mode = _direction(monitor, mode)
        self.baseline = None if baseline is None else check_number(baseline, "baseline")
        self.start_from_epoch = check_int(start_from_epoch, "start_from_epoch", low=0)
        self.verbose = check_int(verbose, "verbose", low=0)
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = -1
        self.wait = 0
        self.stopped_epoch: int | None = None
        self._best_state: Any = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch, self.wait, self.stopped_epoch, self._best_state = -1, 0, None, None

    def _improved(self, value: float, reference: float) -> bool:
        if self.mode == "min":
            return value + self.min_delta < reference
        return value - self.min_delta > reference

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> bool:
        logs = logs or {}
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
            self.model.stop_training = True
            return True
        return False

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.stopped_epoch is not None and self.verbose > 0:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self._best_state is not None:
            if self.verbose > 0:
                print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
            self.model.load_state_dict(self._best_state)


def _direction(monitor: str, mode: str) -> str:
    """Keras's mode: 'min' or 'max'; 'auto' maximises names containing 'acc'."""
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    return ("max" if "acc" in monitor else "min") if mode == "auto" else mode


class ModelCheckpoint(Callback):
    """Save the model at the end of every epoch, as keras.callbacks.ModelCheckpoint:
    ``filepath`` is formatted with ``epoch`` (counted from 1) and the epoch's logs
    (``'ckpt-{epoch:02d}-{val_loss:.2f}.npz'``); missing folders are created. Each
    file is a fastmlp model file written atomically, with the fit's optimizer and
    its scheduler (unless the scheduler holds a Python function, which cannot be
    saved), so ``fm.load(path, optimizer=True, scheduler=True)`` resumes training
    bit-identically. ``save_best_only`` saves only when ``monitor`` beats the best
    value so far (strictly; ``mode`` as EarlyStopping's; the first best is
    ``initial_value_threshold`` if given), and warns and skips when the logs lack
    ``monitor``. ``save_weights_only`` leaves the optimizer and scheduler out (the
    file still holds the architecture: fastmlp has no weights-only format). Only
    ``save_freq='epoch'``: the batches run in C++. ``verbose`` prints Keras's messages."""

    def __init__(self, filepath: str | os.PathLike, monitor: str = "val_loss", verbose: int = 0,
                 save_best_only: bool = False, save_weights_only: bool = False, mode: str = "auto",
                 save_freq: str = "epoch", initial_value_threshold: float | None = None) -> None:
        if save_freq != "epoch":
            raise ValueError(f"save_freq must be 'epoch' (fastmlp runs the batches in C++, without per-batch "
                             f"callbacks), got {save_freq!r}")
        self.filepath = os.fspath(filepath)
        self.monitor = monitor
        self.verbose = check_int(verbose, "verbose", low=0)
        self.save_best_only = bool(save_best_only)
        self.save_weights_only = bool(save_weights_only)
        self.mode = _direction(monitor, mode)
        self.save_freq = save_freq
        self.initial_value_threshold = (None if initial_value_threshold is None else
                                        check_number(initial_value_threshold, "initial_value_threshold"))
        self.best = (self.initial_value_threshold if self.initial_value_threshold is not None else
                     math.inf if self.mode == "min" else -math.inf)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._scheduler = self.params.get("scheduler")
        if self._scheduler is not None:
            try:
                _to_file(self._scheduler)
            except ValueError:  # a LambdaLR & co.: checkpoint the model and optimizer only
                self._scheduler = None

    def _path(self, epoch: int, logs: dict) -> str:
        try:
            return self.filepath.format(epoch=epoch + 1, **logs)
        except (KeyError, IndexError, ValueError) as e:
            raise KeyError(f'Failed to format this callback filepath: "{self.filepath}". Reason: {e!r}') from None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        path = self._path(epoch, logs)
        if self.save_best_only:
            current = logs.get(self.monitor)
            if current is None:
                warnings.warn(f"Can save best model only with {self.monitor} available, skipping.", stacklevel=2)
                return
            better = current < self.best if self.mode == "min" else current > self.best
            if not better:
                if self.verbose > 0:
                    print(f"\nEpoch {epoch + 1}: {self.monitor} did not improve from {self.best:.5f}")
                return
            if self.verbose > 0:
                print(f"\nEpoch {epoch + 1}: {self.monitor} improved from {self.best:.5f} to {current:.5f}, "
                      f"saving model to {path}")
            self.best = float(current)
        elif self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: saving model to {path}")
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        if self.save_weights_only:
            self.model.save(path)
        else:
            self.model.save(path, optimizer=self.params.get("optimizer"), scheduler=self._scheduler)


class CSVLogger(Callback):
    """Stream each epoch's logs to a CSV file, as keras.callbacks.CSVLogger: a header
    ``epoch`` + the sorted log names of the first epoch, then one row per epoch
    (``epoch`` counted from 0; a name missing from a later epoch's logs is 'NA'),
    written and flushed as the epoch ends. ``append=True`` continues an existing
    file (its header is written only if the file is empty or new); otherwise the
    file is truncated when training begins. Rows use Keras's csv dialect (Excel's,
    with ``separator``; lines end in '\\r\\n'). Unlike Keras, no 'val_*' columns are
    added when the first epoch has none (fastmlp validates every epoch)."""

    def __init__(self, filename: str | os.PathLike, separator: str = ",", append: bool = False) -> None:
        self.filename = os.fspath(filename)
        self.sep = separator
        self.append = bool(append)
        self.keys: list[str] | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.keys = None
        self._header = True
        if self.append:
            if os.path.exists(self.filename):
                with open(self.filename, encoding="utf-8") as f:
                    self._header = not f.readline()
        else:
            open(self.filename, "w").close()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        if self.keys is None:
            self.keys = sorted(logs)
        dialect = type("_Dialect", (csv.excel,), {"delimiter": self.sep})
        # a file opened per row: each row is on disk when the epoch ends, and an
        # error or Ctrl-C leaves no open file behind
        with open(self.filename, "a", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["epoch", *self.keys], dialect=dialect)
            if self._header:
                writer.writeheader()
                self._header = False
            writer.writerow({"epoch": epoch, **{k: logs.get(k, "NA") for k in self.keys}})


class LambdaCallback(Callback):
    """A callback from functions, as keras.callbacks.LambdaCallback:
    ``on_epoch_begin(epoch, logs)``, ``on_epoch_end(epoch, logs)``,
    ``on_train_begin(logs)``, ``on_train_end(logs)`` (no batch hooks). What
    on_epoch_end returns passes through: True stops training."""

    def __init__(self, on_epoch_begin: Callable | None = None, on_epoch_end: Callable | None = None,
                 on_train_begin: Callable | None = None, on_train_end: Callable | None = None) -> None:
        for name, f in (("on_epoch_begin", on_epoch_begin), ("on_epoch_end", on_epoch_end),
                        ("on_train_begin", on_train_begin), ("on_train_end", on_train_end)):
            if f is not None:
                if not callable(f):
                    raise TypeError(f"{name} must be callable, got {type(f).__name__}")
                setattr(self, name, f)


class TerminateOnNaN(Callback):
    """Stop training when the loss becomes NaN or infinite, as
    keras.callbacks.TerminateOnNaN, printing Keras's "Batch 3: Invalid loss,
    terminating training" (the batch counted from 0 in its epoch). Without it,
    fit raises FloatingPointError there; with it, fit ends normally (on_train_end
    runs) with the model and optimizer as fastmlp leaves every divergence: reset to
    their state at the start of the diverging epoch (never NaN weights). That epoch
    is not in the History and its on_epoch_end does not run (its steps were undone).
    Full-batch L-BFGS, which cannot undo its step, still raises."""


class ReduceLROnPlateau(Callback):
    """Multiply every parameter group's lr by ``factor`` when ``monitor`` has not
    improved by more than ``min_delta`` for ``patience`` epochs, as
    keras.callbacks.ReduceLROnPlateau: after a reduction, ``cooldown`` epochs are
    not counted; a group's lr is reduced only while above ``min_lr``, and never
    below it. It acts on the fit's optimizer (``params['optimizer']``). ``verbose``
    prints Keras's "Epoch 5: ReduceLROnPlateau reducing learning rate to 0.01."
    (for the first group). A monitor missing from the logs warns and does
    nothing, as Keras. (fastmlp's torch-style schedule of the same name is
    fm.optim.lr_scheduler.ReduceLROnPlateau.)"""

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10, verbose: int = 0,
                 mode: str = "auto", min_delta: float = 1e-4, cooldown: int = 0, min_lr: float = 0.0) -> None:
        self.factor = check_number(factor, "factor")
        if self.factor >= 1.0:
            raise ValueError(f"ReduceLROnPlateau does not support a factor >= 1.0. Received factor={factor}")
        self.monitor = monitor
        self.patience = check_int(patience, "patience", low=0)
        self.verbose = check_int(verbose, "verbose", low=0)
        self.mode = _direction(monitor, mode)
        self.min_delta = check_number(min_delta, "min_delta")
        self.cooldown = check_int(cooldown, "cooldown", low=0)
        self.min_lr = check_number(min_lr, "min_lr", low=0.0)
        self._reset()

    def _reset(self) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.cooldown_counter = 0
        self.wait = 0

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._reset()

    def _improved(self, current: float) -> bool:
        if self.mode == "min":
            return current < self.best - self.min_delta
        return current > self.best + self.min_delta

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        current = logs.get(self.monitor)
        if current is None:
            warnings.warn(f"Learning rate reduction is conditioned on metric `{self.monitor}` which is not "
                          f"available. Available metrics are: {','.join(logs)}.", stacklevel=2)
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._improved(current):
            self.best, self.wait = current, 0
        elif self.cooldown_counter == 0:
            self.wait += 1
            if self.wait >= self.patience:
                groups = self.params["optimizer"].param_groups
                if any(g["lr"] > self.min_lr for g in groups):
                    for g in groups:
                        if g["lr"] > self.min_lr:
                            g["lr"] = max(g["lr"] * self.factor, self.min_lr)
                    if self.verbose > 0:
                        print(f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {groups[0]['lr']}.")
                    self.cooldown_counter, self.wait = self.cooldown, 0


def _epoch_line(steps: int, logs: dict) -> str:
    """Keras's verbose=2 line for an epoch: '32/32 - 1s - 20ms/step - accuracy: 0.9120 - loss: 0.2914'."""
    seconds = logs.get("time", 0.0)
    per_step = seconds / max(steps, 1)
    if per_step >= 1 or per_step == 0:
        pace = f"{per_step:.0f}s/step"
    elif per_step >= 1e-3:
        pace = f"{per_step * 1e3:.0f}ms/step"
    else:
        pace = f"{per_step * 1e6:.0f}us/step"
    line = f"{steps}/{steps} - {seconds:.0f}s - {pace}"
    for k in sorted(logs):
        if k not in ("lr", "time"):
            v = logs[k]
            line += f" - {k}: {v:.4f}" if v > 1e-3 else f" - {k}: {v:.4e}"
    return line


class _Callbacks:
    """fit's list of callbacks (Callback objects and plain callables), called in order."""

    def __init__(self, callbacks: Sequence[Any], model: Any, params: dict) -> None:
        self.items = list(callbacks)
        self.model = model
        self.terminate_on_nan = any(isinstance(cb, TerminateOnNaN) for cb in self.items)
        model.stop_training = False
        for cb in self.items:
            if isinstance(cb, Callback):
                cb.set_model(model)
                cb.set_params(params)

    def train_begin(self) -> None:
        for cb in self.items:
            if isinstance(cb, Callback):
                cb.on_train_begin({})

    def epoch_begin(self, epoch: int) -> None:
        for cb in self.items:
            if isinstance(cb, Callback):
                cb.on_epoch_begin(epoch, {})

    def epoch_end(self, epoch: int, logs: dict) -> bool:
        """Whether a callback asked to stop (returned True, or set model.stop_training)."""
        stop = False
        for cb in self.items:
            r = cb.on_epoch_end(epoch, logs) if isinstance(cb, Callback) else cb(epoch, logs)
            stop = stop or bool(r)
        return stop or bool(self.model.stop_training)

    def train_end(self, logs: dict) -> None:
        for cb in self.items:
            if isinstance(cb, Callback):
                cb.on_train_end(logs)
