"""torch.optim's API around the update rules: named_parameters(), add_param_group,
the torch-only flags, decoupled_weight_decay, pickling and deepcopy, and the
optimizer state through model.save / fm.load (NAdam's mu_product included)."""
from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

import fastmlp as fm
from reference_optim import RefOptimizer, pseudo_gradients
from test_optim import CONFIGS, assert_close

NAMES = list(CONFIGS)


def _model(seed=1):
    return fm.Sequential(fm.Linear(3, 4), fm.Tanh(), fm.Linear(4, 2), seed=seed, dtype="float64")


def _steps(model, opt, n, seed=2):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        x = rng.normal(size=(5, 3))
        opt.zero_grad()
        model.backward(model(x) - 1.0)
        opt.step()


@pytest.mark.parametrize("name", NAMES)
def test_named_parameters_are_accepted_and_named(name):
    m1, m2 = _model(), _model()
    o1 = getattr(fm.optim, name)(m1.named_parameters(), **CONFIGS[name][-1])
    o2 = getattr(fm.optim, name)(m2.parameters(), **CONFIGS[name][-1])
    assert o1.param_groups[0]["param_names"] == [n for n, _ in m1.named_parameters()]
    assert o1.state_dict()["param_groups"][0]["param_names"] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    _steps(m1, o1, 5)
    _steps(m2, o2, 5)
    for k, v in m1.state_dict().items():
        np.testing.assert_array_equal(m2.state_dict()[k], v)
    with pytest.raises(ValueError, match="names"):
        getattr(fm.optim, name)([("a", np.zeros(2)), np.zeros(3)])
    # named groups survive pickling and model files
    m3 = _model()
    named = list(m3.named_parameters())
    o3 = getattr(fm.optim, name)([{"params": named[:2]}, {"params": named[2:], "lr": 0.01}])
    assert pickle.loads(pickle.dumps(o3)).param_groups[1]["param_names"] == ["2.weight", "2.bias"]
    with pytest.raises(ValueError, match="with/without names"):
        o3.add_param_group({"params": [np.zeros(2)]})


@pytest.mark.parametrize("name", NAMES)
def test_add_param_group_keeps_the_state_of_the_others(name):
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=4), rng.normal(size=3)
    ra, rb = a.copy(), b.copy()
    cfg = CONFIGS[name][-1]
    opt = getattr(fm.optim, name)([a], **cfg)
    ref = RefOptimizer(name, [ra], **cfg)
    grads = pseudo_gradients([(4,), (3,)], 40, seed=4)
    for t in range(20):
        g = grads([ref.params[0], rb], t)
        opt.step([g[0]])
        ref.step([g[0]])
    opt.add_param_group({"params": [b], "lr": cfg["lr"] / 2})
    ref2 = RefOptimizer(name, [{"params": [rb], "lr": cfg["lr"] / 2}], **cfg)
    assert len(opt.param_groups) == 2 and opt.param_groups[1]["lr"] == cfg["lr"] / 2
    for t in range(20, 40):
        g = grads([ref.params[0], ref2.params[0]], t)
        opt.step(g)
        ref.step([g[0]])
        ref2.step([g[1]])
    assert_close(a, ref.params[0], 1e-10)
    assert_close(b, ref2.params[0], 1e-10)
    with pytest.raises(ValueError, match="more than one"):
        opt.add_param_group({"params": [a]})
    assert len(opt.param_groups) == 2


@pytest.mark.parametrize("name", NAMES)
def test_torch_only_flags_are_accepted_and_change_nothing(name):
    import inspect

    flags = {k: False for k in ("foreach", "fused", "capturable", "differentiable")
             if k in inspect.signature(getattr(fm.optim, name)).parameters}
    assert "foreach" in flags and "differentiable" in flags
    m1, m2 = _model(), _model()
    o1 = getattr(fm.optim, name)(m1.parameters(), **CONFIGS[name][-1], **flags)
    o2 = getattr(fm.optim, name)(m2.parameters(), **CONFIGS[name][-1])
    for k in flags:
        assert k in o1.param_groups[0]
    _steps(m1, o1, 5)
    _steps(m2, o2, 5)
    for k, v in m1.state_dict().items():
        np.testing.assert_array_equal(m2.state_dict()[k], v)
    with pytest.raises(TypeError, match="foreach"):
        getattr(fm.optim, name)(m1.parameters(), foreach="yes")


def test_adam_decoupled_weight_decay_is_adamw():
    m1, m2 = _model(), _model()
    o1 = fm.optim.Adam(m1.parameters(), lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)
    o2 = fm.optim.AdamW(m2.parameters(), lr=0.01, weight_decay=0.1)
    assert o2.param_groups[0]["decoupled_weight_decay"] is True
    _steps(m1, o1, 10)
    _steps(m2, o2, 10)
    for k, v in m1.state_dict().items():
        np.testing.assert_array_equal(m2.state_dict()[k], v)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_optimizer_pickles_and_deepcopies(name, how):
    rng = np.random.default_rng(5)
    params = [rng.normal(size=(3, 2)), rng.normal(size=4)]
    opt = getattr(fm.optim, name)(params, **CONFIGS[name][-1])
    grads = pseudo_gradients([(3, 2), (4,)], 30, seed=6)
    for t in range(15):
        opt.step(grads(params, t))
    twin = pickle.loads(pickle.dumps(opt)) if how == "pickle" else copy.deepcopy(opt)
    tparams = [p for g in twin.param_groups for p in g["params"]]
    assert all(np.array_equal(p, q) for p, q in zip(params, tparams))
    assert not any(np.shares_memory(p, q) for p, q in zip(params, tparams))
    for t in range(15, 30):
        g = grads(params, t)
        opt.step(g)
        twin.step(g)
    for p, q in zip(params, tparams):
        np.testing.assert_array_equal(p, q)


@pytest.mark.parametrize("name", NAMES)
def test_model_file_round_trip_continues_identically(name, tmp_path):
    m1 = _model()
    o1 = getattr(fm.optim, name)(m1.parameters(), **CONFIGS[name][-1])
    _steps(m1, o1, 7)
    m1.save(tmp_path / "m.npz", optimizer=o1)
    m2, o2 = fm.load(tmp_path / "m.npz", optimizer=True)
    assert type(o2) is type(o1)
    _steps(m1, o1, 7, seed=8)
    _steps(m2, o2, 7, seed=8)
    for k, v in m1.state_dict().items():
        np.testing.assert_array_equal(m2.state_dict()[k], v)


def test_nadam_mu_product_in_state_dict_and_from_torch():
    torch = pytest.importorskip("torch")
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        x = np.array([1.0, -2.0, 0.5])
        tx = torch.tensor(x.copy(), requires_grad=True)
        topt = torch.optim.NAdam([tx], lr=0.05, momentum_decay=0.1)
        for t in range(10):
            tx.grad = torch.tensor(np.sin(tx.detach().numpy() * (t + 1)))
            topt.step()
        opt = fm.optim.NAdam([x], lr=0.05, momentum_decay=0.1)
        x[...] = tx.detach().numpy()
        opt.load_state_dict(topt.state_dict())
        assert opt.state_dict()["state"][0]["mu_product"] == pytest.approx(
            float(topt.state_dict()["state"][0]["mu_product"]), rel=1e-15)
        for t in range(10, 20):
            tx.grad = torch.tensor(np.sin(tx.detach().numpy() * (t + 1)))
            g = np.sin(x * (t + 1))
            topt.step()
            opt.step([g])
        np.testing.assert_allclose(x, tx.detach().numpy(), rtol=1e-12)
    finally:
        torch.set_default_dtype(before)


@pytest.mark.parametrize("name", ["SGD", "NAdam", "Adamax"])
def test_optimizer_over_parameters_pickles(name):
    """An optimizer over a model's Parameters pickles with copies of them (as a torch
    optimizer's deepcopy holds copies of its tensors); the copy steps on its own .grad."""
    m = _model()
    opt = getattr(fm.optim, name)(m.parameters(), **CONFIGS[name][-1])
    _steps(m, opt, 5)
    twin = pickle.loads(pickle.dumps(opt))
    mine, theirs = opt.param_groups[0]["params"], twin.param_groups[0]["params"]
    for p, q in zip(mine, theirs):
        np.testing.assert_array_equal(p.data, q.data)
        q.grad[...] = p.grad
    opt.step()
    twin.step()
    for p, q in zip(mine, theirs):
        np.testing.assert_array_equal(p.data, q.data)


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
@pytest.mark.parametrize("order", ["model first", "optimizer first", "dict"])
def test_a_model_and_its_optimizer_copied_together_stay_together(how, order):
    """As torch: pickling or deep-copying a model with its optimizer (a tuple, a checkpoint dict) gives an
    optimizer over the copied model's own Parameters, so the copy trains exactly as the original would. They
    once came back apart (the copy's optimizer stepped arrays of its own and the copied model never changed)."""
    m = _model()
    opt = fm.optim.Adam(m.parameters(), lr=0.01)
    _steps(m, opt, 3)
    pack = {"model first": (m, opt), "optimizer first": (opt, m), "dict": {"optimizer": opt, "model": m}}[order]
    twin = pickle.loads(pickle.dumps(pack)) if how == "pickle" else copy.deepcopy(pack)
    m2, o2 = (twin["model"], twin["optimizer"]) if order == "dict" else \
        (twin[0], twin[1]) if order == "model first" else (twin[1], twin[0])
    assert all(a is b for a, b in zip(m2.parameters(), o2.param_groups[0]["params"]))
    assert not any(np.shares_memory(p.data, q.data) for p, q in zip(m.parameters(), m2.parameters()))
    _steps(m, opt, 4, seed=9)
    _steps(m2, o2, 4, seed=9)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(m2.state_dict()[k], v)
