"""fastmlp.optim and its schedules against torch.optim itself, on the same
gradients, in float64 (1e-10). Skipped where torch is not installed; every
feature here is also covered against the NumPy references in test_optim.py
and test_schedules.py."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastmlp as fm  # noqa: E402
from reference_optim import pseudo_gradients  # noqa: E402
from test_optim import CASE_IDS, CASES, CONFIGS, SHAPES, assert_close  # noqa: E402
from test_schedules import PLATEAU, SCHEDULES, _metrics  # noqa: E402

STEPS = 60
TOL = 1e-10


@pytest.fixture(autouse=True)
def _torch_float64():
    """torch keeps scalar state (NAdam's mu_product, ASGD's eta) in the default dtype: float64 here."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def _torch_opt(name, params, **kw):
    return getattr(torch.optim, name)(params, foreach=False, **kw)


def _t(a):
    return torch.tensor(np.array(a, dtype=np.float64))


@pytest.mark.parametrize("name,cfg", CASES, ids=CASE_IDS)
def test_optimizer_matches_torch(name, cfg):
    rng = np.random.default_rng(40)
    params = [rng.normal(size=s) for s in SHAPES]
    tparams = [_t(p).requires_grad_(True) for p in params]
    opt = getattr(fm.optim, name)(params, **cfg)
    topt = _torch_opt(name, tparams, **cfg)
    grad_fn = pseudo_gradients(SHAPES, STEPS, seed=41)
    for t in range(STEPS):
        grads = grad_fn([tp.detach().numpy() for tp in tparams], t)
        for tp, g in zip(tparams, grads):
            tp.grad = _t(g)
        topt.step()
        opt.step(grads)
    for p, tp in zip(params, tparams):
        assert_close(p, tp.detach().numpy(), TOL)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_parameter_groups_and_lr_edits_match_torch(name):
    cfg = dict(CONFIGS[name][-1])
    lr = cfg.pop("lr")
    rng = np.random.default_rng(42)
    params = [rng.normal(size=s) for s in SHAPES]
    tparams = [_t(p).requires_grad_(True) for p in params]
    opt = getattr(fm.optim, name)([{"params": params[:1], "lr": lr}, {"params": params[1:], "lr": lr / 10}], **cfg)
    topt = _torch_opt(name, [{"params": tparams[:1], "lr": lr}, {"params": tparams[1:], "lr": lr / 10}], **cfg)
    grad_fn = pseudo_gradients(SHAPES, STEPS, seed=43)
    for t in range(STEPS):
        if t == 30:
            for g in (opt.param_groups[1], topt.param_groups[1]):
                g["lr"] = lr * 3
        grads = grad_fn([tp.detach().numpy() for tp in tparams], t)
        for tp, g in zip(tparams, grads):
            tp.grad = _t(g)
        topt.step()
        opt.step(grads)
    for p, tp in zip(params, tparams):
        assert_close(p, tp.detach().numpy(), TOL)


TRAIN = [("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
         ("Adagrad", dict(lr=0.05, lr_decay=0.01)), ("RMSprop", dict(lr=0.005, centered=True, momentum=0.3)),
         ("Adadelta", dict(lr=0.5)), ("Adam", dict(lr=0.01, amsgrad=True)), ("AdamW", dict(lr=0.01)),
         ("NAdam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)), ("RAdam", dict(lr=0.01)),
         ("Adamax", dict(lr=0.01, weight_decay=0.01)), ("ASGD", dict(lr=0.05, lambd=0.01, t0=5, weight_decay=1e-3))]


@pytest.mark.parametrize("name,cfg", TRAIN, ids=[n for n, _ in TRAIN])
def test_train_step_matches_torch_training_loop(name, cfg):
    m = fm.Sequential(fm.Linear(5, 16), fm.Tanh(), fm.Linear(16, 3), seed=44, dtype="float64")
    net = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).double()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in m.state_dict().items()})
    opt = getattr(fm.optim, name)(m.parameters(), **cfg)
    topt = _torch_opt(name, net.parameters(), **cfg)
    rng = np.random.default_rng(45)
    loss_fn, tloss_fn = fm.CrossEntropyLoss(), torch.nn.CrossEntropyLoss()
    for _ in range(25):
        x = rng.normal(size=(8, 5))
        y = rng.integers(0, 3, size=8)
        loss = m.train_step(x, y, loss_fn, opt)
        topt.zero_grad()
        tl = tloss_fn(net(torch.from_numpy(x)), torch.from_numpy(y))
        tl.backward()
        topt.step()
        assert loss == pytest.approx(tl.item(), rel=1e-10)
    for k, v in net.state_dict().items():
        assert_close(m.state_dict()[k], v.numpy(), TOL, k)


def test_sgd_momentum_switched_on_later_matches_torch():
    x = np.random.default_rng(50).normal(size=5)
    tx = _t(x).requires_grad_(True)
    opt = fm.optim.SGD([x], lr=0.1, momentum=0.0, dampening=0.5)
    topt = _torch_opt("SGD", [tx], lr=0.1, momentum=0.0, dampening=0.5)
    grad_fn = pseudo_gradients([(5,)], 20, seed=51)
    for t in range(20):
        if t == 10:
            opt.param_groups[0]["momentum"] = topt.param_groups[0]["momentum"] = 0.9
        g = grad_fn([tx.detach().numpy()], t)
        tx.grad = _t(g[0])
        topt.step()
        opt.step(g)
    assert_close(x, tx.detach().numpy(), TOL)


@pytest.mark.parametrize("cfg", CONFIGS["ASGD"], ids=[str(i) for i in range(len(CONFIGS["ASGD"]))])
def test_asgd_100_steps_and_state_match_torch(cfg):
    rng = np.random.default_rng(52)
    params = [rng.normal(size=s) for s in SHAPES]
    tparams = [_t(p).requires_grad_(True) for p in params]
    opt, topt = fm.optim.ASGD(params, **cfg), _torch_opt("ASGD", tparams, **cfg)
    grad_fn = pseudo_gradients(SHAPES, 100, seed=53)
    for t in range(100):
        grads = grad_fn([tp.detach().numpy() for tp in tparams], t)
        for tp, g in zip(tparams, grads):
            tp.grad = _t(g)
        topt.step()
        opt.step(grads)
    for i, (p, tp) in enumerate(zip(params, tparams)):
        assert_close(p, tp.detach().numpy(), TOL)
        st, tst = opt.state_dict()["state"][i], topt.state[tp]
        assert_close(st["ax"], tst["ax"].numpy(), TOL)
        for k in ("step", "eta", "mu"):
            assert st[k] == pytest.approx(tst[k].item(), rel=TOL), k


def test_asgd_float32_matches_torch_float32():
    """torch's own float32 setup (eta and mu in float32 too): equal to float32 rounding."""
    torch.set_default_dtype(torch.float32)  # the autouse fixture restores it
    rng = np.random.default_rng(54)
    params = [rng.normal(size=s).astype(np.float32) for s in SHAPES]
    tparams = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    cfg = dict(lr=0.05, lambd=0.05, alpha=0.3, t0=10.0, weight_decay=0.1)
    opt, topt = fm.optim.ASGD(params, **cfg), _torch_opt("ASGD", tparams, **cfg)
    grad_fn = pseudo_gradients(SHAPES, 100, seed=55)
    for t in range(100):
        grads = [g.astype(np.float32) for g in grad_fn([tp.detach().numpy() for tp in tparams], t)]
        for tp, g in zip(tparams, grads):
            tp.grad = torch.tensor(g)
        topt.step()
        opt.step(grads)
    for i, (p, tp) in enumerate(zip(params, tparams)):
        assert_close(p, tp.detach().numpy(), 1e-5)
        assert_close(opt.state[id(p)]["ax"], topt.state[tp]["ax"].numpy(), 1e-5)
        assert opt.state[id(p)]["eta"] == topt.state[tp]["eta"].item()  # the same float32 value


# --------------------------------------------------------------------------- state_dict interchange

def _np_state(sd):
    """A torch optimizer state_dict with its tensors as NumPy arrays."""
    return {"state": {i: {k: (v.numpy() if torch.is_tensor(v) else v) for k, v in st.items()}
                      for i, st in sd["state"].items()},
            "param_groups": [dict(g) for g in sd["param_groups"]]}


@pytest.mark.parametrize("only_known_keys", [False, True], ids=["raw", "filtered"])
@pytest.mark.parametrize("name,cfg", TRAIN, ids=[n for n, _ in TRAIN])
def test_load_torch_state_dict_and_continue(name, cfg, only_known_keys):
    """load_state_dict takes torch's state_dict (tensors as NumPy arrays); 'filtered'
    drops torch's implementation options (foreach, fused, ...) from the groups first."""
    rng = np.random.default_rng(46)
    params = [rng.normal(size=s) for s in SHAPES]
    tparams = [_t(p).requires_grad_(True) for p in params]
    topt = _torch_opt(name, tparams, **cfg)
    grad_fn = pseudo_gradients(SHAPES, 40, seed=47)

    def torch_step(t):
        grads = grad_fn([tp.detach().numpy() for tp in tparams], t)
        for tp, g in zip(tparams, grads):
            tp.grad = _t(g)
        topt.step()
        return grads

    for t in range(20):
        torch_step(t)
    mine = [tp.detach().numpy().copy() for tp in tparams]
    other = {k: v for k, v in cfg.items() if k != "lr"}
    opt = getattr(fm.optim, name)(mine, lr=123.0, **other)
    sd = _np_state(topt.state_dict())
    if only_known_keys:
        sd["param_groups"] = [{k: v for k, v in g.items() if k in opt.defaults or k == "params"}
                              for g in sd["param_groups"]]
    opt.load_state_dict(sd)
    assert opt.param_groups[0]["lr"] == cfg["lr"]
    for t in range(20, 40):
        opt.step(torch_step(t))
    for p, tp in zip(mine, tparams):
        assert_close(p, tp.detach().numpy(), TOL)


@pytest.mark.parametrize("name,cfg", TRAIN, ids=[n for n, _ in TRAIN])
def test_torch_loads_fastmlp_state_dict_and_continues(name, cfg):
    rng = np.random.default_rng(48)
    params = [rng.normal(size=s) for s in SHAPES]
    opt = getattr(fm.optim, name)(params, **cfg)
    grad_fn = pseudo_gradients(SHAPES, 40, seed=49)
    for t in range(20):
        opt.step(grad_fn(params, t))
    sd = opt.state_dict()
    tparams = [_t(p).requires_grad_(True) for p in params]
    topt = _torch_opt(name, tparams, **cfg)
    state = {}
    for i, st in sd["state"].items():
        state[i] = {k: (torch.from_numpy(v.copy()) if isinstance(v, np.ndarray) else torch.tensor(float(v)))
                    for k, v in st.items()}
        if name == "SGD":
            state[i].pop("step")
    groups = [{**topt.param_groups[0], **{k: v for k, v in g.items() if k != "params"}, "params": g["params"]}
              for g in sd["param_groups"]]
    topt.load_state_dict({"state": state, "param_groups": groups})
    for t in range(20, 40):
        grads = grad_fn(params, t)
        for tp, g in zip(tparams, grads):
            tp.grad = _t(g)
        topt.step()
        opt.step(grads)
    for p, tp in zip(params, tparams):
        assert_close(p, tp.detach().numpy(), TOL)


# --------------------------------------------------------------------------- schedules

LRS = [0.1, 0.03, 1.5]


def _pair(lrs=LRS):
    opt = fm.optim.SGD([{"params": [np.zeros(2)], "lr": lr} for lr in lrs])
    topt = torch.optim.SGD([{"params": [torch.zeros(2, requires_grad=True)], "lr": lr} for lr in lrs])
    return opt, topt


def _lrs(o):
    return [g["lr"] for g in o.param_groups]


@pytest.mark.parametrize("name,kw", SCHEDULES, ids=[f"{n}-{kw}" for n, kw in SCHEDULES])
@pytest.mark.parametrize("edit", [False, True])
def test_schedule_matches_torch(name, kw, edit):
    opt, topt = _pair()
    s = getattr(fm.optim.lr_scheduler, name)(opt, **kw)
    ts = getattr(torch.optim.lr_scheduler, name)(topt, **kw)
    assert s.last_epoch == ts.last_epoch == 0
    for e in range(1, 301):  # 300 steps, as the other schedules' (test_schedules_more.py)
        if edit and e in (6, 19, 150):
            for o in (opt, topt):
                for i, g in enumerate(o.param_groups):
                    g["lr"] = g["lr"] * (0.5 + i)
        topt.step()
        ts.step()
        s.step()
        np.testing.assert_allclose(_lrs(opt), _lrs(topt), rtol=TOL, atol=1e-300)
        np.testing.assert_allclose(s.get_last_lr(), ts.get_last_lr(), rtol=TOL, atol=1e-300)
        assert s.last_epoch == ts.last_epoch == e


def test_chained_schedules_match_torch():
    opt, topt = _pair()
    s = [fm.optim.lr_scheduler.ExponentialLR(opt, gamma=0.95),
         fm.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=9, eta_min=0.001)]
    ts = [torch.optim.lr_scheduler.ExponentialLR(topt, gamma=0.95),
          torch.optim.lr_scheduler.CosineAnnealingLR(topt, T_max=9, eta_min=0.001)]
    for _ in range(30):
        topt.step()
        for a, b in zip(s, ts):
            a.step()
            b.step()
        np.testing.assert_allclose(_lrs(opt), _lrs(topt), rtol=TOL)


@pytest.mark.parametrize("kw", PLATEAU, ids=[str(i) for i in range(len(PLATEAU))])
def test_plateau_matches_torch(kw):
    opt, topt = _pair([0.1, 0.01])
    s = fm.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, **kw)
    ts = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, factor=0.5, **kw)
    for e, m in enumerate(_metrics(kw["mode"]), start=1):
        topt.step()
        s.step(m)
        ts.step(m)
        assert _lrs(opt) == _lrs(topt), e
        assert s.get_last_lr() == ts.get_last_lr()
        assert s.last_epoch == ts.last_epoch


@pytest.mark.parametrize("eps,min_lr", list(itertools.product([1e-8, 0.0, 0.009], [0.0, 0.011])))
def test_plateau_eps_min_lr_match_torch(eps, min_lr):
    opt, topt = _pair([0.1, 0.02])
    s = fm.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0, min_lr=min_lr, eps=eps)
    ts = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, factor=0.5, patience=0, min_lr=min_lr, eps=eps)
    for _ in range(12):
        topt.step()
        s.step(1.0)
        ts.step(1.0)
        assert _lrs(opt) == _lrs(topt)


def test_reference_grids_are_used():
    """Guard: the grids imported from the NumPy tests are non-empty."""
    assert len(CASES) > 200 and len(SCHEDULES) >= 9 and len(PLATEAU) >= 96


@pytest.mark.parametrize("name,kw", SCHEDULES, ids=[f"{n}-{kw}" for n, kw in SCHEDULES])
def test_torch_schedule_state_dict_loads_and_continues(name, kw):
    opt, topt = _pair()
    ts = getattr(torch.optim.lr_scheduler, name)(topt, **kw)
    for _ in range(13):
        topt.step()
        ts.step()
    opt.load_state_dict({"state": {}, "param_groups": [dict(g, params=[i]) for i, g in enumerate(
        {k: v for k, v in g.items() if k != "params"} for g in topt.state_dict()["param_groups"])]})
    s = getattr(fm.optim.lr_scheduler, name)(opt, **kw)  # built, then loaded (as in torch)
    s.load_state_dict(ts.state_dict())
    assert s.last_epoch == ts.last_epoch == 13
    for _ in range(20):
        topt.step()
        ts.step()
        s.step()
        np.testing.assert_allclose(_lrs(opt), _lrs(topt), rtol=TOL, atol=1e-300)
        np.testing.assert_allclose(s.get_last_lr(), ts.get_last_lr(), rtol=TOL, atol=1e-300)


def test_torch_plateau_state_dict_loads_and_continues():
    kw = dict(factor=0.5, patience=2, cooldown=1, threshold=0.05)
    opt, topt = _pair([0.1, 0.01])
    ts = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **kw)
    metrics = _metrics("min")
    for m in metrics[:15]:
        topt.step()
        ts.step(m)
    s = fm.optim.lr_scheduler.ReduceLROnPlateau(opt, **kw)
    for g, tg in zip(opt.param_groups, topt.param_groups):
        g["lr"] = tg["lr"]
    s.load_state_dict(ts.state_dict())
    for m in metrics[15:]:
        topt.step()
        ts.step(m)
        s.step(m)
        assert _lrs(opt) == _lrs(topt)
    assert min(_lrs(opt)) < 0.01  # the plateau lowered it after the load too


def _signature(f):
    import inspect

    return [(k, p.kind, p.default) for k, p in inspect.signature(f).parameters.items()]


@pytest.mark.parametrize("name", [n for n in fm.optim.__all__ if n not in ("Optimizer", "lr_scheduler")] +
                         [f"lr_scheduler.{n}" for n in fm.optim.lr_scheduler.__all__])
def test_signatures_are_torchs(name):
    """Every optimizer and schedule takes torch's arguments, in torch's order, with its defaults."""
    mine, theirs = fm.optim, torch.optim
    for part in name.split("."):
        mine, theirs = getattr(mine, part), getattr(theirs, part)
    assert _signature(mine) == _signature(theirs)
