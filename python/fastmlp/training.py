"""model.fit / train_step / predict / evaluate: argument checks and conversion here, the
epoch loop in C++ (one call per epoch, GIL released)."""
from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import numpy as np

from . import _core
from ._arrays import as_float_array, check_finite, check_int, check_number, check_precision
from .callbacks import Callback, History, _Callbacks, _epoch_line
from .nn.loss import BCEWithLogitsLoss, _ClassLoss, _Loss
from .optim import LBFGS, Optimizer
from .optim.lr_scheduler import CyclicLR, LRScheduler, OneCycleLR, ReduceLROnPlateau


def default_threads() -> int:
    """The threads of n_threads=None: the cores this process may run on, and
    inside a Dask worker at most the worker's threads (its share of the
    machine), so that fits running side by side do not oversubscribe the cores."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    distributed = sys.modules.get("distributed")  # imported in every Dask worker
    if distributed is not None:
        try:
            n = min(n, int(distributed.get_worker().state.nthreads))
        except (ValueError, AttributeError):  # not inside a worker
            pass
    return n


# Below this many multiply-adds in the largest layer's per-batch product, OpenBLAS's
# threads cost more than they bring (they synchronise by spinning, and on a busy
# machine a descheduled thread stalls the other: up to 100x slower, measured).
SMALL_WORK = 8_000_000


def auto_threads(model: Any, rows: int) -> int:
    """n_threads=None: every core, unless the per-batch products are small."""
    return default_threads() if rows * model._largest_product >= SMALL_WORK else 1


def chunks_batches(model: Any) -> bool:
    """Whether fit splits its batches into chunks (see batch_chunks): every model
    whose rows are independent in training. Dropout chunks too: its masks are a
    counter-based function of the batch's step and each element's place in the
    batch, so each chunk draws exactly the whole batch's mask for its rows.
    BatchNorm on batch statistics never does (a row's output depends on the whole
    batch): its products get the threads."""
    return bool(getattr(getattr(model, "_core", None), "rows_independent", True))


def batch_chunks(model: Any, rows: int) -> int:
    """The chunks fit splits a batch of `rows` rows of this model into: one below
    64 rows, two from 64, four or eight for big batches (chunks of 128 rows or
    more, 256 for models over 4 MiB, and at most 8 MiB of extra gradient
    buffers). A function of the batch and the model alone, never of the threads:
    each chunk runs single-threaded products on one of the pool's threads, its
    gradient goes to a buffer of its own, and the buffers are summed in a fixed
    tree, so fit gives the same bits for every n_threads. The big weights'
    gradients (65536 elements or more) are not counted in those buffers: where
    keeping them would allow fewer chunks, or the chunks are under 128 rows
    (``model._core.defers_grads(rows)``), each is one product over the whole
    batch after the chunks, split by its columns over the threads."""
    if not chunks_batches(model):
        return 1
    core = model._core
    return int(_core.batch_chunks(rows, core.n_params, np.dtype(model.dtype).itemsize, core.chunked_params))


def thread_plan(n_threads: int | None, model: Any = None, rows: int = 0, split: bool = False) -> tuple[int, int]:
    """(OpenBLAS threads, fastmlp threads) for a call. n_threads bounds both
    together. With split (fit on a model that chunks its batches), the chunks
    run on n_threads of fastmlp's threads (every core for None), each with
    single-threaded products: (1, n). Otherwise the products use the threads:
    n_threads, or for None every core, or one when the model's per-batch products
    are small."""
    chunked = split and model is not None and chunks_batches(model)
    if n_threads is None and model is not None and not chunked:
        return auto_threads(model, rows), 1
    n = default_threads() if n_threads is None else check_int(n_threads, "n_threads", low=1, high=4096)
    return (1, n) if chunked else (n, 1)


@contextmanager
def blas_threads(n_threads: int | None, model: Any = None, rows: int = 0, split: bool = False) -> Iterator[int]:
    """Set fastmlp's OpenBLAS threads for a call by thread_plan; yields the number
    of fastmlp's own threads (fit's workers)."""
    n, workers = thread_plan(n_threads, model, rows, split)
    before = _core.blas_get_num_threads()
    _core.blas_set_num_threads(n)
    try:
        yield workers
    finally:
        _core.blas_set_num_threads(before)


def _data(model: Any, X: Any, y: Any, loss_fn: _Loss, name: str,
          check_x: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """X and y checked and converted. check_x=False leaves X's finiteness to the
    C++ loop, which checks each batch as it gathers it (no extra pass over X)."""
    a = as_float_array(X, model.dtype, name)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (samples, features), got {a.ndim}-D; "
                         "reshape your data with X.reshape(-1, 1) for one feature or X.reshape(1, -1) for one sample")
    if a.shape[0] == 0:
        raise ValueError(f"{name} has 0 samples; at least one is needed")
    if check_x:
        check_finite(a, name)
    want = model.in_features
    if want is not None and a.shape[1] != want:
        raise ValueError(f"{name} has {a.shape[1]} features, but the model is expecting {want} features as input")
    n_y = np.shape(y)[0] if np.ndim(y) else -1
    if n_y != a.shape[0]:
        raise ValueError(f"Found input variables with inconsistent numbers of samples: [{a.shape[0]}, {n_y}]")
    t = loss_fn._target(y, (a.shape[0], model._core.out_features(a.shape[1])), model.dtype)
    check_finite(t, "y")
    return a, t


def check_sample_weight(sample_weight: Any, n: int, dtype: np.dtype) -> np.ndarray:
    """Per-sample weights as a (n,) array: finite, >= 0, not all zero."""
    w = as_float_array(sample_weight, dtype, "sample_weight")
    if w.ndim == 0:
        w = np.full(n, w, dtype=dtype)
    if w.shape != (n,):
        raise ValueError(f"sample_weight must have shape ({n},), got {w.shape}")
    check_finite(w, "sample_weight")
    if (w < 0).any():
        raise ValueError("sample_weight must be non-negative")
    if n and not w.any():
        raise ValueError("sample_weight must not be all zero")
    return w


CLIP_NONE = (float("inf"), float("inf"))


def clip_args(clip_grad_norm: Any, clip_grad_value: Any) -> tuple[float, float]:
    """(max norm, value) of the C++ loop's clipping, inf for None; each a number >= 0."""
    return tuple(float("inf") if v is None else check_number(v, name, low=0)  # type: ignore[return-value]
                 for v, name in ((clip_grad_norm, "clip_grad_norm"), (clip_grad_value, "clip_grad_value")))


def _class_weights(class_weight: Any, t: np.ndarray, n: int, sample_weight: Any) -> np.ndarray:
    """Keras's class_weight as per-sample weights: each row's class weight (1 for a class not
    in the dict), times sample_weight if given. The class of a row: its label, for one-column
    targets the rounded value, else the argmax."""
    if not isinstance(class_weight, dict):
        raise TypeError(f"class_weight must be a dict {{class: weight}}, got {type(class_weight).__name__}")
    labels = t if t.ndim == 1 else np.rint(t[:, 0]).astype(np.int64) if t.shape[1] == 1 else t.argmax(axis=1)
    w = np.ones(n)
    for c, v in class_weight.items():
        c = check_int(c, "class_weight's class", low=0, high=2**62)
        w[labels == c] = check_number(v, f"class_weight[{c}]", low=0)
    if sample_weight is not None:
        w = w * check_sample_weight(sample_weight, n, np.dtype(np.float64))
    return w


METRICS = ("accuracy", "mae", "mse")


def _metrics(metrics: Any, classify: bool) -> tuple:
    """The error metrics of fit's metrics (Keras's names) that the C++ loop sums: a tuple of
    'mae', 'mse'. 'accuracy' is always logged for a classification loss."""
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    for name in names:
        if name not in METRICS:
            raise ValueError(f"unknown metric {name!r}; the metrics are {', '.join(METRICS)}")
    if "accuracy" in names and not classify:
        raise ValueError("the 'accuracy' metric needs a classification loss (CrossEntropyLoss, BCEWithLogitsLoss)")
    errors = tuple(n for n in ("mae", "mse") if n in names)
    if errors and classify:
        raise ValueError(f"{' and '.join(errors)} compare the model's outputs with the targets: they need a "
                         "regression loss (MSELoss, L1Loss, HuberLoss, ...), not a classification loss")
    return errors


def _bar(verbose: int, total: int, desc: str) -> Any:
    if not verbose:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="sample", unit_scale=True, leave=True, dynamic_ncols=True)


def fit(model: Any, X: Any, y: Any, loss_fn: _Loss, optimizer: Any, epochs: int = 1, batch_size: int = 32,
        shuffle: bool = True, validation_data: Sequence[Any] | None = None, scheduler: Any = None,
        callbacks: Sequence[Any] = (), verbose: int = 1, n_threads: int | None = None,
        sample_weight: Any = None, scheduler_interval: str | None = None, comm: Any = None,
        precision: str = "float32", clip_grad_norm: float | None = None, clip_grad_value: float | None = None,
        validation_split: float = 0.0, class_weight: dict | None = None, initial_epoch: int = 0,
        metrics: Sequence[str] = (), steps_per_epoch: int | None = None) -> History:
    """model.fit; comm is a fastmlp.distributed Session (data-parallel training) or None."""
    bf16 = check_precision(precision, model)
    if not isinstance(loss_fn, _Loss):
        raise TypeError(f"loss must be a fastmlp loss (e.g. fm.CrossEntropyLoss()), got {type(loss_fn).__name__}")
    epochs = check_int(epochs, "epochs", low=0, high=2**62)
    initial_epoch = check_int(initial_epoch, "initial_epoch", low=0, high=2**62)
    clip = clip_args(clip_grad_norm, clip_grad_value)
    batch_size = check_int(batch_size, "batch_size", low=1, high=2**62)
    if scheduler is not None and not isinstance(scheduler, LRScheduler):
        raise TypeError(f"scheduler must be a fastmlp.optim.lr_scheduler schedule, got {type(scheduler).__name__}")
    per_batch = _per_batch(scheduler, scheduler_interval, optimizer)
    for cb in callbacks:
        if not (isinstance(cb, Callback) or callable(cb)):
            raise TypeError(f"callbacks must be fastmlp Callbacks or callables f(epoch, logs), got {type(cb).__name__}")
    verbose = _verbosity(verbose)
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a fastmlp optimizer, got {type(optimizer).__name__}")
    full_batch = isinstance(optimizer, LBFGS)  # one step(closure) per epoch over the whole data set
    if full_batch:
        if {id(p) for p in model.parameters()} != {id(p) for p in optimizer.param_groups[0]["params"]}:
            raise ValueError("the optimizer must be built over this model's parameters (model.parameters())")
    else:
        core_opt = optimizer._core_for(model)
    if full_batch and clip != CLIP_NONE:
        raise ValueError("LBFGS steps with its own line search: clip_grad_norm and clip_grad_value need a "
                         "mini-batch optimizer")
    # X is checked batch by batch in C++ (by one pass here for full-batch L-BFGS)
    Xa, ta = _data(model, X, y, loss_fn, "X", check_x=epochs == 0 or full_batch)
    if class_weight is not None:
        sample_weight = _class_weights(class_weight, ta, Xa.shape[0], sample_weight)
    if validation_split:  # Keras: the last rows, before shuffling
        validation_split = check_number(validation_split, "validation_split", low=0, high=1, high_open=True)
        if validation_data is not None:
            raise ValueError("pass validation_data or validation_split, not both")
        n = Xa.shape[0]
        cut = int(n * (1.0 - validation_split))
        if cut in (0, n):
            raise ValueError(f"validation_split={validation_split} of {n} samples leaves no "
                             f"{'training' if cut == 0 else 'validation'} samples; use more data or another split")
        if sample_weight is not None:
            sample_weight = check_sample_weight(sample_weight, n, model.dtype)[:cut]
        validation_data = (Xa[cut:], ta[cut:])
        Xa, ta = Xa[:cut], ta[:cut]
    if isinstance(loss_fn, _ClassLoss) and ta.dtype == np.int64 and not loss_fn._counts_some(ta):
        raise ValueError("every label is ignore_index or has class weight 0: fit has nothing to learn from")
    val = None
    if validation_data is not None:
        if len(validation_data) != 2:
            raise ValueError("validation_data must be a pair (X_val, y_val)")
        val = _data(model, validation_data[0], validation_data[1], loss_fn, "X_val")
    classify = isinstance(loss_fn, (_ClassLoss, BCEWithLogitsLoss))
    errors = _metrics(metrics, classify)
    spec = loss_fn._spec(model.dtype)
    if sample_weight is not None:
        spec["sample_weight"] = check_sample_weight(sample_weight, Xa.shape[0], model.dtype)

    batch, n_rows, steps = batch_size, Xa.shape[0], -(-Xa.shape[0] // batch_size)
    pass_steps, cursor = steps, 0  # steps_per_epoch: batches per pass over the data, and the next one's index
    if steps_per_epoch is not None:
        steps = check_int(steps_per_epoch, "steps_per_epoch", low=1, high=2**62)
        if comm is not None or full_batch:
            raise ValueError("steps_per_epoch needs mini-batch training on one process (not comm, not LBFGS)")
        n_rows = min(steps * batch, n_rows) if steps <= pass_steps else steps * batch
    if comm is not None:  # this rank's share of the global batch; logs, validation and callbacks: rank 0's
        if full_batch:
            raise ValueError("LBFGS trains full-batch on one process: it cannot be used with comm")
        batch, steps, n_rows, n_threads = comm.begin(model, optimizer, Xa.shape[0], batch_size, epochs, n_threads)
        verbose, callbacks = (verbose, callbacks) if comm.rank == 0 else (0, ())
    _take_fit_lock(model)
    history = History()
    logs: dict[str, float] = {}
    was_training = model.training
    completed = False
    model._can_backward = False  # fit's steps replace the last forward
    try:
        calls = _Callbacks(callbacks, model, {"epochs": epochs, "steps": steps, "verbose": verbose,
                                              "optimizer": optimizer, "scheduler": scheduler})
        calls.train_begin()
        model.train()
        with blas_threads(n_threads, model, min(batch, Xa.shape[0]), split=not full_batch) as workers:
            for epoch in range(initial_epoch, epochs):  # Keras: counted from initial_epoch
                calls.epoch_begin(epoch)
                optimizer._sync()
                bar = _bar(verbose == 1, n_rows, f"epoch {epoch + 1}/{epochs}")
                if bar is None and verbose and epochs > 1:
                    print(f"Epoch {epoch + 1}/{epochs}")
                state = {"samples": 0}

                def progress(batches: int, samples: int, loss: float, bar: Any = bar, state: dict = state) -> None:
                    if bar is not None:
                        bar.update(samples - state["samples"])
                        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                    state["samples"] = samples

                t0 = time.perf_counter()
                undo = table = None
                try:
                    if per_batch:  # step the schedule for every batch of the epoch now; the loop applies the values
                        undo = _schedule_state(scheduler, optimizer)
                        table = _batch_table(scheduler, optimizer, steps)
                        optimizer.__dict__.pop("_pushed", None)  # the loop changes the C++ lrs: push them again
                    if full_batch:
                        st = _full_batch_epoch(model, Xa, ta, spec, optimizer, classify, bf16, errors)
                    else:
                        args = (Xa, ta, spec, core_opt, batch, bool(shuffle), classify, progress, workers, table,
                                bf16, *clip, bool(errors))
                        if steps_per_epoch is not None:
                            st, cursor = _cycle(model._core, args, pass_steps, cursor, steps)
                        elif comm is None:
                            st = model._core.train_epoch(*args)
                        else:
                            st = comm.train_epoch(model._core, args)
                except BaseException:  # Ctrl-C: the model keeps the last completed step (the schedule: the epoch's start)
                    if undo is not None:
                        _restore_schedule(scheduler, optimizer, undo)
                    if bar is not None:
                        bar.close()
                    raise
                if st["diverged"] and undo is not None:  # the model is back at the epoch's start: so is the schedule
                    _restore_schedule(scheduler, optimizer, undo)
                if st["diverged"]:
                    if bar is not None:
                        bar.close()
                    where = (f"the loss is not finite at epoch {epoch + 1}, batch {st['batches'] + 1}"
                             if st["batches"] < steps else
                             f"the weights became non-finite during epoch {epoch + 1} (by batch {st['batches']})")
                    where += (f"; the model and optimizer were reset to their state at the start of epoch {epoch + 1}"
                              if st["restored"] else "")
                    if calls.terminate_on_nan and st["restored"]:  # Keras's message; the model: the epoch's start
                        print(f"Batch {min(st['batches'], steps - 1)}: Invalid loss, terminating training")
                        break
                    raise FloatingPointError(f"training diverged: {where}. Try a lower learning rate, "
                                             "or standardize the inputs.")
                logs = {"loss": float(st["loss"])}
                if spec.get("l2"):  # the estimators' L2 penalty, apart from the loss
                    logs["l2_penalty"] = float(st["l2_penalty"])
                if classify and st["scored"]:  # rows with an ignored label are not scored
                    logs["accuracy"] = st["correct"] / st["scored"]
                entries = st["samples"] * ta.shape[1] if ta.ndim == 2 else 0
                for name in errors:  # the training outputs' errors, summed in the C++ loop
                    total = st["abs_err"] if name == "mae" else st["sq_err"]
                    logs[name] = total / entries if entries else float("nan")
                if val is not None and (comm is None or comm.rank == 0):
                    out = model._core.predict(val[0], max(batch_size, 1024), bf16)
                    logs["val_loss"] = loss_fn._value(out, val[1])
                    if classify:
                        logs["val_accuracy"] = _accuracy(model, out, val[1], loss_fn)
                    for name in errors:
                        d = out.astype(np.float64) - val[1]
                        logs["val_" + name] = float(np.mean(np.abs(d)) if name == "mae" else np.mean(d * d))
                # the lr the epoch (per batch: its last batch) stepped with
                logs["lr"] = float(table[0][-1, 0] if table is not None and len(table[0]) else
                                   optimizer.param_groups[0]["lr"])
                logs["time"] = time.perf_counter() - t0
                if bar is not None:
                    bar.update(n_rows - state["samples"])
                    bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items() if k not in ("lr", "time")})
                    bar.close()
                elif verbose:
                    print(_epoch_line(st["batches"], logs))
                if comm is not None:
                    logs = comm.share(logs)
                history._append(epoch, logs)
                if scheduler is not None and not per_batch:
                    if isinstance(scheduler, ReduceLROnPlateau):
                        scheduler.step(logs.get("val_loss", logs["loss"]))
                    else:
                        scheduler.step()
                stop = calls.epoch_end(epoch, logs)
                if comm is not None:
                    stop = comm.share(stop, then="sync" if stop or epoch + 1 == epochs else "epoch")
                if stop:
                    break
        completed = True
    finally:
        try:
            model.train(was_training)
            if epochs:  # the C++ loop wrote every gradient
                model._grads_set()
            if completed:  # as Keras: not after Ctrl-C or an error (the model keeps its last completed step)
                calls.train_end(logs)
        finally:
            model._fit_lock.release()
    return history


def train_step(model: Any, x: Any, y: Any, loss_fn: _Loss, optimizer: Any, precision: str = "float32",
               clip_grad_norm: float | None = None, clip_grad_value: float | None = None) -> float:
    """Sequential.train_step: zero_grad + forward + loss + backward + optimizer.step in one C++ call."""
    bf16 = check_precision(precision, model)
    if not isinstance(loss_fn, _Loss):
        raise TypeError(f"loss_fn must be a fastmlp loss (e.g. fm.CrossEntropyLoss()), got {type(loss_fn).__name__}")
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a fastmlp optimizer, got {type(optimizer).__name__}")
    core_opt = optimizer._core_for(model)
    a = model._input(x)
    out_width = model._core.out_features(a.shape[1])
    t = loss_fn._target(y, (a.shape[0], out_width), model.dtype)
    check_finite(t, "target")
    if a.shape[0] == 0:
        raise ValueError("train_step got 0 samples: a step needs at least one")
    optimizer._sync()
    model._can_backward = False  # the step's own forward replaces the last one
    clip = clip_args(clip_grad_norm, clip_grad_value)
    loss = float(model._core.train_step(a, t, loss_fn._spec(model.dtype), core_opt, bf16, *clip))
    model._grads_set()
    return loss


def _verbosity(verbose: Any) -> int:
    """Keras's verbose: 0 silent, 1 a progress bar per epoch (tqdm; without it, as 2),
    2 one line per epoch; 'auto' is 1."""
    if verbose == "auto":
        return 1
    if isinstance(verbose, bool):
        return int(verbose)
    if not isinstance(verbose, (int, np.integer)) or verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 0, 1, 2 or 'auto', got {verbose!r}")
    return int(verbose)


def _cycle(core: Any, args: tuple, pass_steps: int, cursor: int, count: int) -> tuple[dict, int]:
    """An epoch of steps_per_epoch (count) batches from batch `cursor` of the current pass over the
    data, continuing into the next passes (each reshuffled); returns its stats and the next cursor."""
    progress, table = args[7], args[9]
    total: dict = {}
    done = 0
    while done < count:
        n = min(count - done, pass_steps - cursor)
        sub = None if table is None else (table[0][done:done + n], None if table[1] is None else table[1][done:done + n],
                                          table[2])
        b0, s0 = total.get("batches", 0), total.get("samples", 0)

        def offset(batches: int, samples: int, loss: float, b0: int = b0, s0: int = s0) -> None:
            progress(b0 + batches, s0 + samples, loss)

        st = core.train_epoch(*args[:7], offset, args[8], sub, *args[10:], first=cursor, count=n)
        for k in ("correct", "scored", "abs_err", "sq_err", "batches"):
            st[k] += total.get(k, 0)
        samples = s0 + st["samples"]
        for k in ("loss", "l2_penalty"):  # means weighted by the samples
            st[k] = (total.get(k, 0.0) * s0 + st[k] * st["samples"]) / samples if st["samples"] else total.get(k, st[k])
        st["samples"] = samples
        total = st
        if st["diverged"] or st["stopped"]:
            break
        cursor, done = (cursor + n) % pass_steps, done + n
    return total, cursor


def _take_fit_lock(model: Any) -> None:
    """Take the model's fit lock, or raise RuntimeError at once. A lock held by a fit of the parent
    process (copied by os.fork with the fit's thread left behind) is replaced, not waited for."""
    import threading

    if model._fit_lock.acquire(blocking=False):
        model._fit_owner = (os.getpid(), threading.get_ident())
        return
    pid, thread = getattr(model, "_fit_owner", (None, None))
    if pid is not None and pid != os.getpid():
        model._fit_lock = threading.Lock()
        return _take_fit_lock(model)
    if thread == threading.get_ident():
        raise RuntimeError("fit cannot be called from inside a running fit (a callback or a signal handler); "
                           "the model is already training in this thread")
    raise RuntimeError("this model is already training in another thread; wait for that fit to finish")


def _per_batch(scheduler: Any, interval: str | None, optimizer: Any) -> bool:
    """Whether fit steps the scheduler per batch. None: per batch for OneCycleLR and CyclicLR
    (schedules torch users step per batch), per epoch for the others; a composite of both
    kinds needs an explicit interval."""
    if interval not in (None, "epoch", "batch"):
        raise ValueError(f"scheduler_interval must be 'epoch', 'batch' or None, got {interval!r}")
    if scheduler is None:
        return False
    if scheduler.optimizer is not optimizer:
        raise ValueError("the scheduler must schedule the optimizer given to fit")
    leaves = scheduler._leaves()
    batchy = [isinstance(s, (OneCycleLR, CyclicLR)) for s in leaves]
    if interval is None:
        if any(batchy) and not all(batchy):
            raise ValueError(f"{type(scheduler).__name__} mixes per-batch schedules (OneCycleLR, CyclicLR) with "
                             "per-epoch ones: pass scheduler_interval='batch' or 'epoch'")
        interval = "batch" if all(batchy) else "epoch"
    if interval == "batch" and isinstance(scheduler, ReduceLROnPlateau):
        raise ValueError("ReduceLROnPlateau watches a metric per epoch: it cannot be stepped per batch")
    if interval == "batch" and isinstance(optimizer, LBFGS):
        raise ValueError("LBFGS trains full-batch: step its scheduler per epoch (scheduler_interval='epoch')")
    return interval == "batch"


_MOMENTUM_KEYS = ("lr", "momentum", "betas")


def _schedule_state(scheduler: Any, optimizer: Any) -> tuple:
    import copy

    return (copy.deepcopy(scheduler.state_dict()),
            [{k: g[k] for k in g if k in _MOMENTUM_KEYS} for g in optimizer.param_groups])


def _restore_schedule(scheduler: Any, optimizer: Any, undo: tuple) -> None:
    scheduler.load_state_dict(undo[0])
    for g, saved in zip(optimizer.param_groups, undo[1]):
        g.update(saved)


def _batch_table(scheduler: Any, optimizer: Any, batches: int) -> tuple:
    """Step the schedule once per batch, recording what each batch steps with: the lrs
    (batches, groups) and the momentum (SGD, RMSprop) or beta1 (Adam family) of each group.
    The optimizer's own check runs on each group with its smallest and its largest recorded
    values (every constraint on these is an interval)."""
    groups = optimizer.param_groups
    beta1 = "betas" in optimizer.defaults
    key = "betas" if beta1 else "momentum" if "momentum" in optimizer.defaults else None
    lr = np.empty((batches, len(groups)))
    mom = np.empty((batches, len(groups))) if key else None
    for b in range(batches):
        for i, g in enumerate(groups):
            lr[b, i] = g["lr"]
            if mom is not None:
                mom[b, i] = g["betas"][0] if beta1 else g["momentum"]
        scheduler.step()
    if batches:
        for i, g in enumerate(groups):
            for pick in (np.argmin, np.argmax):
                b = int(pick(lr[:, i]))
                trial = {**g, "lr": float(lr[b, i]) if np.isfinite(lr[:, i]).all() else float("nan")}
                if mom is not None:
                    m = float(mom[int(pick(mom[:, i])), i]) if np.isfinite(mom[:, i]).all() else float("nan")
                    trial[key] = (m, *g["betas"][1:]) if beta1 else m
                optimizer._checked(trial, {"lr", key})
    return lr, mom, beta1


def _full_batch_epoch(model: Any, Xa: np.ndarray, ta: np.ndarray, spec: dict, optimizer: Any,
                      classify: bool, bf16: bool, errors: tuple = ()) -> dict:
    """One L-BFGS step(closure) over the whole data set (the closure: loss and
    gradients of every row in one C++ call); the epoch's loss is the one at its start,
    its accuracy and errors those of the outputs after the step."""
    def closure() -> float:
        return float(model._core.loss_and_grad(Xa, ta, spec, bf16))

    loss = float(optimizer.step(closure))
    n = Xa.shape[0]
    weights_ok = all(np.isfinite(p.data).all() for p in model.parameters())
    correct = scored = 0
    if classify and n and weights_ok:
        fn = _core.count_correct32 if model.dtype == np.float32 else _core.count_correct64
        correct, scored = fn(model._core.predict(Xa, 4096, bf16), ta, spec.get("ignore_index", -100))
    d = model._core.predict(Xa, 4096, bf16).astype(np.float64) - ta if errors and weights_ok else np.full(1, np.nan)
    return {"loss": loss, "l2_penalty": 0.0, "samples": n, "correct": correct, "scored": scored, "batches": 1,
            "abs_err": float(np.abs(d).sum()), "sq_err": float((d * d).sum()),
            "diverged": not (np.isfinite(loss) and weights_ok), "restored": False}


def _accuracy(model: Any, out: np.ndarray, t: np.ndarray, loss_fn: _Loss) -> float:
    """The share of rows whose prediction is right; rows with an ignored label are not scored."""
    fn = _core.count_correct32 if model.dtype == np.float32 else _core.count_correct64
    correct, scored = fn(out, t, getattr(loss_fn, "ignore_index", -100))
    return correct / scored if scored else float("nan")


def _forward_chunks(model: Any, a: np.ndarray, batch_size: int | None, n_threads: int | None,
                    bf16: bool = False) -> np.ndarray:
    """Eval-mode output of the 2-D array a (C-contiguous, the model's dtype; C++ checks the rest), in
    chunks of batch_size rows (default 4096)."""
    chunk = 4096 if batch_size is None else check_int(batch_size, "batch_size", low=1, high=2**62)
    threads, _ = thread_plan(n_threads, model, min(chunk, a.shape[0]))
    return model._core.predict(a, chunk, bf16, threads)  # the threads set (and restored) in C++


# the dtype objects C++ accepts as they are: numpy's own, not an equal copy (an unpickled array's dtype)
_BUILTIN = {np.dtype(np.float32): np.dtype(np.float32), np.dtype(np.float64): np.dtype(np.float64)}


def predict(model: Any, X: Any, batch_size: int | None = None, n_threads: int | None = None,
            precision: str = "float32") -> np.ndarray:
    if (type(X) is np.ndarray and X.dtype is _BUILTIN.get(model.dtype) and X.flags.c_contiguous and 1 <= X.ndim <= 2
            and precision == "float32"):
        # the lean path of a ready array: no conversion, the checks in C++
        out = _forward_chunks(model, X if X.ndim == 2 else X.reshape(1, -1), batch_size, n_threads)
        return out if X.ndim == 2 else out[0]
    bf16 = check_precision(precision, model)
    one = np.ndim(X) == 1
    a = model._input(X, check=False)  # finiteness: checked chunk by chunk in C++
    out = _forward_chunks(model, a, batch_size, n_threads, bf16)
    return out[0] if one else out


def evaluate(model: Any, X: Any, y: Any, loss_fn: _Loss, batch_size: int | None = None,
             n_threads: int | None = None, precision: str = "float32") -> dict:
    bf16 = check_precision(precision, model)
    a, t = _data(model, X, y, loss_fn, "X", check_x=False)  # X's finiteness: checked chunk by chunk in C++
    out = _forward_chunks(model, a, batch_size, n_threads, bf16)
    res = {"loss": loss_fn._value(out, t)}
    if isinstance(loss_fn, (_ClassLoss, BCEWithLogitsLoss)):
        res["accuracy"] = _accuracy(model, out, t, loss_fn)
    return res
