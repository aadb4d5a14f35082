"""Optimizer steps on fastmlp's threads, by blocks of 4096 elements (cpp/optimizers.h,
optimizer_step_blocks): each element's update depends on that element alone, so the bits are the
one-thread step's for every n_threads -- in fit, train_step and opt.step, for every optimizer, with a
frozen layer and two parameter groups, on a model of several blocks whose tensors straddle them."""
import numpy as np
import pytest

import fastmlp as fm
from fastmlp import _core
from test_container import OPTIMIZERS


def net():
    # 40,000 + 200 + 40,000 + 200 + 600 + 3 parameters: tensors cut by block edges (every 4096)
    return fm.Sequential(fm.Linear(200, 200), fm.Tanh(), fm.Linear(200, 200), fm.ReLU(), fm.Linear(200, 3),
                         seed=3, dtype="float32")


def data(n=96):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 200)).astype(np.float32), rng.integers(0, 3, n)


def build(name, kw, frozen):
    m = net()
    if frozen:
        m[2].bias.requires_grad_(False)
    params = list(m.parameters())
    groups = [{"params": params[:2]}, {"params": params[2:], "lr": kw["lr"] / 2}]
    return m, getattr(fm.optim, name)(groups, **kw)


def weights(m):
    return [p.detach().copy() for p in m.parameters()]


@pytest.mark.parametrize("name,kw", OPTIMIZERS)
@pytest.mark.parametrize("frozen", [False, True])
def test_steps_give_the_same_bits_for_every_thread_count(name, kw, frozen):
    X, y = data()
    results = []
    for n_threads in (1, 2, 3, 8):
        m, opt = build(name, kw, frozen)
        m.fit(X, y, fm.CrossEntropyLoss(), opt, epochs=2, batch_size=32, n_threads=n_threads, verbose=0)
        before = _core.blas_get_num_threads()
        _core.blas_set_num_threads(n_threads)  # train_step's and opt.step's threads
        try:
            m.train_step(X[:16], y[:16], fm.CrossEntropyLoss(), opt)
            for p in m.parameters():
                if p.grad is not None:  # (None: the frozen bias)
                    p.grad[...] = 0.01
            opt.step()
        finally:
            _core.blas_set_num_threads(before)
        results.append(weights(m))
    for got in results[1:]:
        for a, b in zip(results[0], got):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(results[0][0], net()[0].weight.detach())  # the steps moved the weights
