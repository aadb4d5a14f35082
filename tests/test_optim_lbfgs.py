"""LBFGS: torch.optim.LBFGS's algorithm (against torch itself where installed,
float64 1e-10), convergence on a quadratic against its exact minimizer, full-batch
fit, state_dict, pickle."""
from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

import fastmlp as fm


def _data(seed=0, n=40):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    y = rng.integers(0, 3, size=n)
    return X, y


def _model(seed=1):
    return fm.Sequential(fm.Linear(4, 8), fm.Tanh(), fm.Linear(8, 3), seed=seed, dtype="float64")


def _closure(model, opt, X, y, loss_fn, counter=None):
    def closure():
        if counter is not None:
            counter.append(1)
        opt.zero_grad()
        loss = loss_fn(model(X), y)
        model.backward(loss_fn.backward())
        return loss
    return closure


def test_quadratic_reaches_exact_minimizer():
    """On f(w) = 0.5 |A w - b|^2 (w the model's only weight), L-BFGS with the strong-Wolfe
    line search reaches np.linalg.lstsq's solution."""
    rng = np.random.default_rng(2)
    A, b = rng.normal(size=(30, 5)), rng.normal(size=30)
    model = fm.Sequential(fm.Linear(5, 1, bias=False), seed=0, dtype="float64")
    w = next(iter(model.parameters()))
    opt = fm.optim.LBFGS(model.parameters(), line_search_fn="strong_wolfe", max_iter=100, tolerance_grad=1e-12,
                         tolerance_change=1e-15)

    def closure():
        r = A @ w.data[0] - b
        w.grad[0] = A.T @ r
        return 0.5 * float(r @ r)

    opt.step(closure)
    np.testing.assert_allclose(w.data[0], np.linalg.lstsq(A, b, rcond=None)[0], rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
@pytest.mark.parametrize("history_size,max_iter", [(100, 20), (3, 7), (1, 1)])
def test_matches_torch_lbfgs(line_search_fn, history_size, max_iter):
    torch = pytest.importorskip("torch")
    X, _ = _data()
    y = np.sin(X[:, :3]) + 0.1 * X[:, 1:]  # a smooth regression: the trajectory stays well conditioned
    model = _model()
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
    net.load_state_dict({k: torch.tensor(v) for k, v in model.state_dict().items()})
    kw = dict(lr=0.5, history_size=history_size, max_iter=max_iter, line_search_fn=line_search_fn)
    opt = fm.optim.LBFGS(model.parameters(), **kw)
    topt = torch.optim.LBFGS(net.parameters(), **kw)
    loss_fn, tloss = fm.MSELoss(), torch.nn.MSELoss()
    Xt, yt = torch.tensor(X), torch.tensor(y)

    def tclosure():
        topt.zero_grad()
        loss = tloss(net(Xt), yt)
        loss.backward()
        return loss

    evals = []
    closure = _closure(model, opt, X, y, loss_fn, evals)
    for _ in range(4):
        ours, theirs = opt.step(closure), topt.step(tclosure)
        assert abs(ours - theirs.item()) <= 1e-10 * max(1.0, abs(ours))
    for k, v in net.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[k], v.numpy(), rtol=1e-10, atol=1e-10, err_msg=k)
    tstate = topt.state_dict()["state"][0]
    assert opt.state_dict()["state"][0]["func_evals"] == tstate["func_evals"] == len(evals)
    assert opt.state_dict()["state"][0]["n_iter"] == tstate["n_iter"]
    # torch's state loads into ours, and both continue identically
    opt2 = fm.optim.LBFGS(model.parameters(), **kw)
    opt2.load_state_dict(topt.state_dict())
    opt2.step(closure), topt.step(tclosure)
    for k, v in net.state_dict().items():  # after up to 100 iterations: the 1e-10 gap above grows a little
        np.testing.assert_allclose(model.state_dict()[k], v.numpy(), rtol=1e-8, atol=1e-8, err_msg=k)


def test_state_dict_pickle_and_deepcopy_continue_identically():
    X, y = _data(3)
    loss_fn = fm.CrossEntropyLoss()
    m1 = _model(4)
    o1 = fm.optim.LBFGS(m1.parameters(), history_size=5, max_iter=5)
    o1.step(_closure(m1, o1, X, y, loss_fn))
    m2 = _model(4)
    m2.load_state_dict(m1.state_dict())
    o2 = fm.optim.LBFGS(m2.parameters(), history_size=5, max_iter=5)
    o2.load_state_dict(o1.state_dict())
    o3 = pickle.loads(pickle.dumps(o1))
    o4 = copy.deepcopy(o1)
    assert o3.param_groups[0]["history_size"] == 5
    assert len(o3.state_dict()["state"][0]["old_dirs"]) == len(o1.state_dict()["state"][0]["old_dirs"]) > 0
    o1.step(_closure(m1, o1, X, y, loss_fn))
    o2.step(_closure(m2, o2, X, y, loss_fn))
    for k, v in m1.state_dict().items():
        np.testing.assert_array_equal(m2.state_dict()[k], v)
    for o in (o3, o4):  # the copies hold copies of the parameters
        assert o.state_dict()["state"][0]["n_iter"] == 5


def test_fit_is_full_batch_lbfgs():
    """fit(optimizer=LBFGS): one step(closure) per epoch on the whole data set, batch_size ignored."""
    X, y = _data(5, n=50)
    loss_fn = fm.CrossEntropyLoss()
    m1, m2 = _model(6), _model(6)
    o1 = fm.optim.LBFGS(m1.parameters(), max_iter=4)
    o2 = fm.optim.LBFGS(m2.parameters(), max_iter=4)
    h = m1.fit(X, y, loss_fn, o1, epochs=3, batch_size=7, verbose=0)
    losses = [o2.step(_closure(m2, o2, X, y, loss_fn)) for _ in range(3)]
    np.testing.assert_allclose(h.history["loss"], losses, rtol=1e-12)
    for k, v in m1.state_dict().items():
        np.testing.assert_allclose(m2.state_dict()[k], v, rtol=1e-12, atol=1e-14)
    assert h.history["loss"][-1] < h.history["loss"][0]


def test_bad_arguments():
    model = _model()
    with pytest.raises(ValueError, match="line_search_fn"):
        fm.optim.LBFGS(model.parameters(), line_search_fn="armijo")
    with pytest.raises(ValueError, match="parameter groups"):
        ps = list(model.parameters())
        fm.optim.LBFGS([{"params": ps[:2]}, {"params": ps[2:]}])
    with pytest.raises(TypeError, match="Parameters"):
        fm.optim.LBFGS([np.zeros(3)])
    opt = fm.optim.LBFGS(model.parameters())
    with pytest.raises(TypeError, match="closure"):
        opt.step()
    assert opt.param_groups[0]["max_eval"] == 25  # torch: max_iter * 5 // 4


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_model_file_round_trip_continues_identically(line_search_fn, tmp_path):
    X, y = _data(7)
    loss_fn = fm.CrossEntropyLoss()
    m1 = _model(8)
    o1 = fm.optim.LBFGS(m1.parameters(), history_size=4, max_iter=6, line_search_fn=line_search_fn)
    s1 = fm.optim.lr_scheduler.StepLR(o1, step_size=2, gamma=0.5)
    m1.fit(X, y, loss_fn, o1, epochs=2, scheduler=s1, verbose=0)
    m1.save(tmp_path / "m.npz", optimizer=o1, scheduler=s1)
    m2, o2, s2 = fm.load(tmp_path / "m.npz", optimizer=True, scheduler=True)
    assert isinstance(o2, fm.optim.LBFGS) and o2.param_groups[0]["history_size"] == 4
    h1 = m1.fit(X, y, loss_fn, o1, epochs=2, scheduler=s1, verbose=0)
    h2 = m2.fit(X, y, loss_fn, o2, epochs=2, scheduler=s2, verbose=0)
    assert h1.history["loss"] == h2.history["loss"] and h1.history["lr"] == h2.history["lr"]
    for k, v in m1.state_dict().items():
        np.testing.assert_array_equal(m2.state_dict()[k], v)
