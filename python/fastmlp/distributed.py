"""Data-parallel training over MPI (mpi4py: the 'mpi' extra).

Launched as ``mpiexec -n 4 python train.py``, where every rank runs::

    from mpi4py import MPI
    model.fit(X_shard, y_shard, loss, opt, batch_size=256, comm=MPI.COMM_WORLD)

Every rank starts from rank 0's weights and optimizer state (broadcast) and trains on its own shard.
``batch_size`` is the global batch and must be a multiple of the number of ranks:
each rank takes ``b = batch_size // size`` rows of its shard per step (rows
``[i*b, (i+1)*b)`` at step i with ``shuffle=False``; with shuffling, a
permutation of its shard from a stream derived from the model's seed, the epoch
and its rank; dropout masks likewise come from a stream of its own). Inside the C++ loop, each step sums over the ranks a few numbers
(rows, weights, the loss's denominator, loss, correct, status) and then the flat
gradient buffer, in place (one allreduce each, the GIL taken only for the call),
before the optimizer step: the step is that of the global batch, its loss the
mean over the global batch (with sample or class weights, over the global weight
sum). With the global batch split evenly the weights equal single-process
training on the same global batches (to ~1e-12 in float64).

Shards may differ in length: an epoch has as many steps as the shortest shard
allows (``min over ranks of ceil(len(shard) / b)``); the rows of longer shards
beyond them are left out of that epoch (with shuffling, different rows each
epoch). The epoch's loss and accuracy are global. Validation (on rank 0's
``validation_data``), the History, callbacks (early stopping, checkpoints) and
the decision to stop are rank 0's, shared with every rank; at the end every rank
gets rank 0's weights (e.g. EarlyStopping's restored best).

Failures stop every rank: a rank whose step raises (a NaN in its shard, a bad
label) raises its error and the others a RuntimeError naming it, a divergence
raises FloatingPointError on every rank, and Ctrl-C on one rank stops every rank
at the same step with KeyboardInterrupt; in each case the model is the same on
every rank. During the fit, Python's default SIGINT handler is replaced by one
that only records the interrupt: the rank shares it at its next collective call
(a step's reduction, or an exchange between epochs), so that a KeyboardInterrupt
never breaks into the middle of one (a handler of the user's own is left alone).
A rank that fails where the others cannot be told (an MPI error, or an interrupt
raised by a handler of the user's own inside the loop) aborts the whole job
(MPI_Abort) with a message, so that no rank waits forever.
"""
from __future__ import annotations

import functools
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Any, Sequence

import numpy as np

from . import training
from .callbacks import History

__all__ = ["fit", "Session"]

N_STATS = 12  # Collective::kStats in cpp/trainer.h


class Session:
    """One fit over an mpi4py communicator: the collective calls every rank
    makes in the same order. ``expect`` is the kind of the next one ('sync': an
    exchange in Python, 'epoch': train_epoch's reductions), so that a rank that
    fails can join the others where they wait, or abort when it cannot."""

    def __init__(self, comm: Any) -> None:
        try:
            from mpi4py import MPI
        except ImportError as e:  # pragma: no cover - the test extra installs it
            raise ImportError("fit(comm=...) needs mpi4py: pip install 'fastmlp[mpi]'") from e
        if not isinstance(comm, MPI.Comm) or comm == MPI.COMM_NULL:
            raise TypeError(f"comm must be an mpi4py communicator such as MPI.COMM_WORLD, got {type(comm).__name__}")
        if comm.Is_inter():
            raise TypeError("comm must be an intracommunicator")
        self.MPI, self.comm = MPI, comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.stats = np.zeros(N_STATS)
        self.expect = "sync"
        self.coordinated = False  # the exception being raised is raised by every rank
        self.steps = 0
        self.shift = 0  # this rank's offset of the dropout stream during the fit
        self.interrupt = np.zeros(1)  # set by the deferred SIGINT handler; read by the C++ loop at every reduction

    @contextmanager
    def deferred_interrupts(self) -> Any:
        """Python's default SIGINT handler replaced by one that only records Ctrl-C (on the main thread;
        another handler, or a fit in another thread, is left as it is)."""
        if threading.current_thread() is not threading.main_thread() or \
                signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            yield
            return
        previous = signal.signal(signal.SIGINT, lambda signum, frame: self.interrupt.fill(1.0))
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _exchange(self, value: Any, error: str | None = None) -> list:
        """Every rank's value; if a rank sends an error, every rank raises."""
        got = self.comm.allgather((error, value, bool(self.interrupt[0])))
        bad = [(r, e) for r, (e, _, _) in enumerate(got) if e is not None]
        if bad:
            self.coordinated = True
            if error is None:
                r, e = bad[0]
                raise RuntimeError(f"rank {r} failed ({e}); every rank stopped")
        if error is None and any(i for _, _, i in got):  # a Ctrl-C recorded since the last collective call
            self._interrupted()
        return [v for _, v, _ in got]

    def _interrupted(self) -> None:
        """KeyboardInterrupt on every rank (each stopped at the same point)."""
        self.coordinated = True
        if self.interrupt[0]:
            raise KeyboardInterrupt
        raise KeyboardInterrupt("training was interrupted on another rank; every rank stopped at the same step")

    def _agree(self, ok: bool, message: str) -> None:
        """Raise ValueError(message) on every rank (the condition is the same on all)."""
        if not ok:
            self.coordinated = True
            raise ValueError(message)

    def begin(self, model: Any, optimizer: Any, n: int, batch_size: int, epochs: int,
              n_threads: int | None) -> tuple[int, int, int, int | None]:
        """Check that the ranks agree, broadcast rank 0's weights and optimizer state; returns (rows per
        rank and step, steps per epoch, global rows per epoch, n_threads)."""
        info = self._exchange((n, batch_size, epochs, model._core.n_params, np.dtype(model.dtype).str))
        self._agree(all(i[1:] == info[0][1:] for i in info),
                    "every rank must call fit with the same batch_size and epochs on the same architecture and dtype; "
                    f"got (rows, batch_size, epochs, n_params, dtype) = {info}")
        self._agree(batch_size % self.size == 0,
                    f"batch_size ({batch_size}) is the global batch: it must be a multiple of the number of ranks "
                    f"({self.size})")
        sizes = [i[0] for i in info]
        self._agree(min(sizes) > 0, f"every rank needs a non-empty shard; the shards have {sizes} rows")
        b = batch_size // self.size
        self.steps = min(-(-k // b) for k in sizes)
        n_rows = sum(min(k, self.steps * b) for k in sizes)
        self.comm.Bcast(model._core.flat_params(), root=0)
        model._core.epochs_done = self.comm.bcast(model._core.epochs_done, root=0)
        # each rank its own dropout masks: rank 0's stream, shifted by rank * 2^48 forward passes
        self.shift = self.rank << 48
        model._core.dropout_calls = self.comm.bcast(model._core.dropout_calls, root=0) + self.shift
        state = self.comm.bcast(optimizer.state_dict() if self.rank == 0 else None, root=0)
        if self.rank != 0:
            optimizer.load_state_dict(state)
        if n_threads is None:  # the cores of this machine shared among its ranks
            local = self.comm.Split_type(self.MPI.COMM_TYPE_SHARED)
            n_threads = max(1, training.default_threads() // local.Get_size())
            local.Free()
        self.expect = "epoch" if epochs else "sync"
        return b, self.steps, n_rows, n_threads

    def train_epoch(self, core: Any, args: tuple) -> dict:
        """core.train_epoch(*args) with the reductions over the ranks."""
        MPI = self.MPI
        reduce_stats = functools.partial(self.comm.Allreduce, MPI.IN_PLACE, self.stats)
        reduce_grads = functools.partial(self.comm.Allreduce, MPI.IN_PLACE, core.flat_grads())  # zero-copy
        try:
            st = core.train_epoch(*args, comm=(self.stats, reduce_stats, reduce_grads, self.rank, self.steps,
                                               self.interrupt))
        except MPI.Exception:  # a reduction itself failed: the other ranks cannot be told (failed() aborts)
            raise
        except BaseException:  # the C++ loop stops every rank at the same step
            self.coordinated = True
            raise
        self.expect = "sync"
        if st["stopped"] or st["diverged"]:  # every rank raises (fit raises FloatingPointError)
            self.coordinated = True
        if st["stopped"]:  # Ctrl-C on a rank, shared at a step's reduction
            self._interrupted()
        return st

    def share(self, value: Any, then: str = "sync") -> Any:
        """Rank 0's value, on every rank; then: the next collective ('epoch' for another epoch)."""
        v = self._exchange(value)[0]
        self.expect = then
        return v

    def failed(self, exc: BaseException) -> None:
        """An exception on this rank: make sure the others do not wait for it."""
        if self.coordinated:
            return
        if self.expect == "sync":  # the others wait in (or are bound for) the same exchange
            self._exchange(None, error=f"{type(exc).__name__}: {exc}")
            return
        sys.stderr.write(f"fastmlp.distributed: rank {self.rank} raised {type(exc).__name__}: {exc} while the other "
                         "ranks train; aborting every rank (MPI_Abort) so that none waits forever\n")
        sys.stderr.flush()
        self.comm.Abort(1)

    def finish(self, model: Any) -> None:
        """The end of a fit: every rank gets rank 0's weights."""
        self._exchange(None)
        self.comm.Bcast(model._core.flat_params(), root=0)


def fit(model: Any, X: Any, y: Any, loss_fn: Any, optimizer: Any, epochs: int = 1, batch_size: int = 32,
        shuffle: bool = True, validation_data: Sequence[Any] | None = None, scheduler: Any = None,
        callbacks: Sequence[Any] = (), verbose: int = 1, n_threads: int | None = None,
        sample_weight: Any = None, scheduler_interval: str | None = None, comm: Any = None,
        precision: str = "float32", **options: Any) -> History:
    """model.fit(..., comm=comm) on this rank's shard X, y (see the module's doc); options:
    training.fit's (clipping, class_weight, ...)."""
    session = Session(comm)
    with session.deferred_interrupts():
        try:
            history = training.fit(model, X, y, loss_fn, optimizer, epochs=epochs, batch_size=batch_size,
                                   shuffle=shuffle, validation_data=validation_data, scheduler=scheduler,
                                   callbacks=callbacks, verbose=verbose, n_threads=n_threads,
                                   sample_weight=sample_weight, scheduler_interval=scheduler_interval, comm=session,
                                   precision=precision, **options)
        except BaseException as e:
            session.failed(e)
            raise
        finally:  # rank 0's stream position again (every rank made as many forward passes)
            model._core.dropout_calls -= session.shift
        session.finish(model)  # (its exchange raises KeyboardInterrupt everywhere after a late Ctrl-C)
    return history
