"""The C++ side of data-parallel fit without MPI: train_epoch's comm hook driven by plain Python
reductions that play the other ranks (tests/test_mpi.py runs the real thing under mpiexec)."""
import numpy as np
import pytest

import fastmlp as fm
from fastmlp.distributed import N_STATS

FAILED, FAILED_RANK, DIVERGED, STOP, ROWS, WEIGHT_SUM, DENOMINATOR, LOSS, CORRECT = range(9)


def setup(seed=0):
    rng = np.random.default_rng(5)
    X, y = rng.normal(size=(23, 4)), rng.integers(0, 3, size=23)
    m = fm.Sequential(fm.Linear(4, 6), fm.Tanh(), fm.Linear(6, 3), seed=seed, dtype="float64")
    opt = fm.optim.Adam(m.parameters(), lr=0.01)
    opt._sync()
    return m, opt, X, y


def epoch(m, opt, X, y, batch, comm=None, spec=None):
    spec = spec or {"kind": "cross_entropy"}
    return m._core.train_epoch(X, y, spec, opt._core, batch, False, True, None, 1, comm=comm)


class Peers:
    """size - 1 other ranks that hold this rank's exact copy: their sums are this rank's times size."""

    def __init__(self, m, size, on_stats=None):
        self.stats, self.grads, self.size, self.on_stats, self.calls = np.zeros(N_STATS), m._core.flat_grads(), size, on_stats, []

    def reduce_stats(self):
        self.calls.append("stats")
        self.stats *= self.size
        if self.on_stats:
            self.on_stats(self.stats, len(self.calls))

    def reduce_grads(self):
        self.calls.append("grads")
        self.grads *= self.size

    def comm(self, steps, rank=0):
        return (self.stats, self.reduce_stats, self.reduce_grads, rank, steps)


@pytest.mark.parametrize("size", [1, 3])
def test_identical_ranks_take_the_single_process_steps(size):
    # every rank with the same rows: the global batch's mean gradient is one rank's
    m, opt, X, y = setup()
    ref, ref_opt, _, _ = setup()
    spec = {"kind": "cross_entropy", "sample_weight": np.linspace(0.5, 2, 23)}
    peers = Peers(m, size)
    st = epoch(m, opt, X, y, 5, peers.comm(5), spec)
    want = epoch(ref, ref_opt, X, y, 5, None, spec)
    np.testing.assert_allclose(m._core.flat_params(), ref._core.flat_params(), rtol=1e-12, atol=1e-14)
    assert st["loss"] == pytest.approx(want["loss"], rel=1e-12)
    assert st["samples"] == size * 23 and st["correct"] == size * want["correct"] and st["batches"] == 5
    assert peers.calls == ["stats", "grads"] * 5 + ["stats"]  # and one at the epoch's end


def test_steps_bound_the_epoch_and_are_checked():
    m, opt, X, y = setup()
    peers = Peers(m, 2)
    assert epoch(m, opt, X, y, 5, peers.comm(2))["batches"] == 2
    before = m._core.flat_params().copy()
    with pytest.raises(ValueError, match="comm steps"):
        epoch(m, opt, X, y, 5, peers.comm(6))
    with pytest.raises(ValueError, match="comm stats"):
        epoch(m, opt, X, y, 5, (np.zeros(3), peers.reduce_stats, peers.reduce_grads, 0, 2))
    np.testing.assert_array_equal(m._core.flat_params(), before)


def test_a_failed_peer_stops_this_rank_and_resets_the_epoch():
    m, opt, X, y = setup()
    before = m._core.flat_params().copy()

    def peer_fails_at_third_step(stats, call):
        if call == 5:  # stats, grads, stats, grads, stats: the third step
            stats[FAILED], stats[FAILED_RANK] = 1, 2  # rank 1
    peers = Peers(m, 2, peer_fails_at_third_step)
    with pytest.raises(RuntimeError, match="rank 1 failed at batch 3"):
        epoch(m, opt, X, y, 5, peers.comm(5))
    assert peers.calls == ["stats", "grads", "stats", "grads", "stats"]
    np.testing.assert_array_equal(m._core.flat_params(), before)


def test_a_local_failure_joins_the_next_reduction_with_its_flag():
    m, opt, X, y = setup()
    X = X.copy()
    X[12, 1] = np.nan  # the third batch of 5 rows
    before = m._core.flat_params().copy()
    seen = []
    peers = Peers(m, 1, lambda stats, call: seen.append(stats.copy()))
    with pytest.raises(ValueError, match="X"):
        epoch(m, opt, X, y, 5, peers.comm(5, rank=3))
    assert peers.calls == ["stats", "grads", "stats", "grads", "stats"]
    assert seen[-1][FAILED] == 1 and seen[-1][FAILED_RANK] == 4
    np.testing.assert_array_equal(m._core.flat_params(), before)


@pytest.mark.parametrize("flag, key", [(STOP, "stopped"), (DIVERGED, "diverged")])
def test_a_peer_stop_or_divergence_stops_every_rank_before_the_gradient_reduction(flag, key):
    m, opt, X, y = setup()

    def peer(stats, call):
        if call == 3:
            stats[flag] = 1
    peers = Peers(m, 2, peer)
    st = epoch(m, opt, X, y, 5, peers.comm(5))
    assert st[key] and st["batches"] == 1 and peers.calls == ["stats", "grads", "stats"]


def test_a_reduction_that_raises_propagates_and_changes_nothing():
    m, opt, X, y = setup()
    before = m._core.flat_params().copy()

    def broken():
        raise OSError("the network is down")
    peers = Peers(m, 2)
    with pytest.raises(OSError, match="network"):
        epoch(m, opt, X, y, 5, (peers.stats, peers.reduce_stats, broken, 0, 5))
    assert peers.calls == ["stats"]  # not joined again: the failure was the reduction's own
    np.testing.assert_array_equal(m._core.flat_params(), before)
