"""The schedules beyond StepLR/ExponentialLR/CosineAnnealingLR/ReduceLROnPlateau:
300 steps against the closed forms of tests/reference_optim.py and against
torch.optim.lr_scheduler itself (lrs, momentum/beta1, state_dict loading), per-batch
stepping inside fit against an explicit loop (and torch's), and resuming from a
model file."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import fastmlp as fm
import reference_optim as R

S = fm.optim.lr_scheduler
STEPS = 300
LRS = [0.1, 0.03]


def _opt(cls=fm.optim.SGD, lrs=LRS, **kw):
    return cls([{"params": [np.zeros(2)], "lr": lr} for lr in lrs], **kw)


def _torch_opt(torch, cls="SGD", lrs=LRS, **kw):
    return getattr(torch.optim, cls)([{"params": [torch.zeros(2, requires_grad=True)], "lr": lr} for lr in lrs],
                                     **kw)


def _half(e):
    return 0.5 ** (e // 40)


def _mult(e):
    return 0.99 if e % 7 else 1.01


# (name, kwargs, optimizer class): every option of every schedule
CASES = [
    ("MultiStepLR", dict(milestones=[30, 80, 80, 200], gamma=0.5), "SGD"),
    ("MultiStepLR", dict(milestones=[1, 299]), "SGD"),
    ("ConstantLR", dict(), "SGD"),
    ("ConstantLR", dict(factor=0.5, total_iters=100), "SGD"),
    ("ConstantLR", dict(factor=1.0, total_iters=0), "SGD"),
    ("LinearLR", dict(), "SGD"),
    ("LinearLR", dict(start_factor=0.1, end_factor=0.7, total_iters=150), "SGD"),
    ("LinearLR", dict(start_factor=1.0, end_factor=0.0, total_iters=299), "SGD"),
    ("PolynomialLR", dict(), "SGD"),
    ("PolynomialLR", dict(total_iters=250, power=2.0), "SGD"),
    ("PolynomialLR", dict(total_iters=100, power=0.5), "SGD"),
    ("LambdaLR", dict(lr_lambda=_half), "SGD"),
    ("LambdaLR", dict(lr_lambda=[_half, lambda e: 1 / (1 + e)]), "SGD"),
    ("MultiplicativeLR", dict(lr_lambda=_mult), "SGD"),
    ("CosineAnnealingWarmRestarts", dict(T_0=10), "SGD"),
    ("CosineAnnealingWarmRestarts", dict(T_0=7, T_mult=2, eta_min=0.001), "SGD"),
    ("CosineAnnealingWarmRestarts", dict(T_0=1), "SGD"),
    ("CyclicLR", dict(base_lr=0.01, max_lr=0.1, step_size_up=20), "SGD"),
    ("CyclicLR", dict(base_lr=[0.01, 0.002], max_lr=[0.1, 0.05], step_size_up=13, step_size_down=31,
                      mode="triangular2", base_momentum=0.7, max_momentum=0.95), "SGD"),
    ("CyclicLR", dict(base_lr=0.01, max_lr=0.1, step_size_up=17, mode="exp_range", gamma=0.995), "Adam"),
    ("CyclicLR", dict(base_lr=0.01, max_lr=0.1, step_size_up=25, cycle_momentum=False), "Adagrad"),
    ("CyclicLR", dict(base_lr=0.01, max_lr=0.1, step_size_up=25, scale_fn=lambda x: 1 / x, scale_mode="cycle"),
     "RMSprop"),
    ("CyclicLR", dict(base_lr=0.01, max_lr=0.1, step_size_up=25, scale_fn=lambda x: 0.99 ** x,
                      scale_mode="iterations"), "NAdam"),
    ("OneCycleLR", dict(max_lr=0.5, total_steps=STEPS), "SGD"),
    ("OneCycleLR", dict(max_lr=[0.5, 0.2], epochs=6, steps_per_epoch=50, pct_start=0.25, anneal_strategy="linear",
                        div_factor=10.0, final_div_factor=100.0), "Adam"),
    ("OneCycleLR", dict(max_lr=0.5, total_steps=STEPS, three_phase=True, base_momentum=0.8, max_momentum=0.9),
     "RMSprop"),
    ("OneCycleLR", dict(max_lr=0.5, total_steps=STEPS, cycle_momentum=False), "Adagrad"),
    ("OneCycleLR", dict(max_lr=0.5, total_steps=STEPS, three_phase=True, anneal_strategy="linear"), "AdamW"),
]
IDS = [f"{n}-{i}" for i, (n, _, _) in enumerate(CASES)]
SGD_MOMENTUM = dict(momentum=0.9)


def _make(name, kw, cls, opt):
    return getattr(S, name)(opt, **kw)


def _opt_for(cls):
    return _opt(getattr(fm.optim, cls), **(SGD_MOMENTUM if cls == "SGD" else {}))


def _momenta(opt):
    """Each group's momentum or beta1 (0.0 for an optimizer with neither)."""
    return [g["betas"][0] if "betas" in g else g.get("momentum", 0.0) for g in opt.param_groups]


def _reference(name, kw, cls, e, gi):
    """(lr, momentum or None) of group gi after e steps, from the closed forms."""
    base = LRS[gi]

    def pick(v):
        return v[gi] if isinstance(v, list) else v

    if name == "MultiStepLR":
        return R.multistep_lr(base, e, kw["milestones"], kw.get("gamma", 0.1)), None
    if name == "ConstantLR":
        return R.constant_lr(base, e, **kw), None
    if name == "LinearLR":
        return R.linear_lr(base, e, **kw), None
    if name == "PolynomialLR":
        return R.polynomial_lr(base, e, **kw), None
    if name == "LambdaLR":
        return R.lambda_lr(base, e, pick(kw["lr_lambda"])), None
    if name == "MultiplicativeLR":
        return R.multiplicative_lr(base, e, kw["lr_lambda"]), None
    if name == "CosineAnnealingWarmRestarts":
        return R.warm_restarts_lr(base, e, **kw), None
    if name == "CyclicLR":
        if "scale_fn" in kw:
            return None, None  # a custom scale_fn: torch only
        args = {k: pick(v) for k, v in kw.items() if k != "cycle_momentum"}
        lr, m = R.cyclic_lr(e, **args)
        return lr, (m if kw.get("cycle_momentum", True) else None)
    if name == "OneCycleLR":
        args = {k: pick(v) for k, v in kw.items() if k not in ("cycle_momentum", "epochs", "steps_per_epoch")}
        args.setdefault("total_steps", kw.get("epochs", 0) * kw.get("steps_per_epoch", 0))
        lr, m = R.one_cycle_lr(e, **args)
        return lr, (m if kw.get("cycle_momentum", True) else None)
    raise AssertionError(name)


@pytest.mark.parametrize("name,kw,cls", CASES, ids=IDS)
def test_schedule_matches_closed_form(name, kw, cls):
    opt = _opt_for(cls)
    s = _make(name, kw, cls, opt)
    checked = 0
    for e in range(STEPS):
        if e:
            s.step()
        assert s.last_epoch == e
        for gi in range(len(LRS)):
            lr, m = _reference(name, kw, cls, e, gi)
            if lr is None:
                continue
            assert math.isclose(opt.param_groups[gi]["lr"], lr, rel_tol=1e-10, abs_tol=1e-15), (e, gi)
            assert math.isclose(s.get_last_lr()[gi], lr, rel_tol=1e-10, abs_tol=1e-15)
            if m is not None:
                assert math.isclose(_momenta(opt)[gi], m, rel_tol=1e-10), (e, gi)
            checked += 1
    assert checked or "scale_fn" in kw


@pytest.mark.parametrize("name,kw,cls", CASES, ids=IDS)
def test_schedule_matches_torch_and_loads_its_state(name, kw, cls):
    torch = pytest.importorskip("torch")
    opt, topt = _opt_for(cls), _torch_opt(torch, cls, **(SGD_MOMENTUM if cls == "SGD" else {}))
    s, ts = _make(name, kw, cls, opt), getattr(torch.optim.lr_scheduler, name)(topt, **kw)
    for e in range(STEPS):
        if e:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch: "lr_scheduler.step() before optimizer.step()"
                ts.step()
            s.step()
        assert s.last_epoch == ts.last_epoch
        np.testing.assert_allclose([g["lr"] for g in opt.param_groups], [g["lr"] for g in topt.param_groups],
                                   rtol=1e-13, atol=1e-300)
        np.testing.assert_allclose(s.get_last_lr(), ts.get_last_lr(), rtol=1e-13, atol=1e-300)
        assert _momenta(opt) == pytest.approx(_momenta(topt), rel=1e-13)
        if e == 150:  # torch's state_dicts load into a fresh optimizer and scheduler (built first, as in torch)
            opt2 = _opt_for(cls)
            s2 = _make(name, kw, cls, opt2)
            opt2.load_state_dict(_np_state(topt.state_dict()))
            s2.load_state_dict(ts.state_dict())
            assert s2.get_last_lr() == pytest.approx(ts.get_last_lr(), rel=1e-13)
    for _ in range(150, STEPS - 1):
        s2.step()
    assert s2.last_epoch == STEPS - 1
    np.testing.assert_allclose([g["lr"] for g in opt2.param_groups], [g["lr"] for g in topt.param_groups],
                               rtol=1e-13, atol=1e-300)
    assert _momenta(opt2) == pytest.approx(_momenta(topt), rel=1e-13)


def _np_state(sd):
    return {"state": {k: {n: (v.numpy() if hasattr(v, "numpy") else v) for n, v in st.items()}
                      for k, st in sd["state"].items()}, "param_groups": sd["param_groups"]}


# --------------------------------------------------------------------------- composites

def _sequential(opt):
    return S.SequentialLR(opt, [S.LinearLR(opt, start_factor=0.1, total_iters=20),
                                S.CosineAnnealingLR(opt, T_max=100, eta_min=1e-4),
                                S.ExponentialLR(opt, gamma=0.99)], milestones=[20, 120])


def _chained(opt):
    return S.ChainedScheduler([S.ConstantLR(opt, factor=0.5, total_iters=30), S.ExponentialLR(opt, gamma=0.995),
                               S.MultiStepLR(opt, milestones=[100, 200])])


@pytest.mark.parametrize("make", [_sequential, _chained], ids=["SequentialLR", "ChainedScheduler"])
def test_composites_match_closed_forms_and_torch(make):
    opt = _opt()
    s = make(opt)
    for e in range(STEPS):
        if e:
            s.step()
        for gi, base in enumerate(LRS):
            if make is _sequential:
                ref = (R.linear_lr(base, e, 0.1, 1.0, 20) if e < 20 else
                       R.cosine_closed_form(base, e - 20, 100, 1e-4) if e < 120 else
                       base * 0.99 ** (e - 120))  # each scheduler restarts from base_lr at its milestone
            else:
                ref = R.constant_lr(base, e, 0.5, 30) * 0.995 ** e * R.multistep_lr(1.0, e, [100, 200])
            assert math.isclose(opt.param_groups[gi]["lr"], ref, rel_tol=1e-9), (e, gi)
    torch = pytest.importorskip("torch")
    tS = torch.optim.lr_scheduler
    topt = _torch_opt(torch)
    if make is _sequential:
        ts = tS.SequentialLR(topt, [tS.LinearLR(topt, start_factor=0.1, total_iters=20),
                                    tS.CosineAnnealingLR(topt, T_max=100, eta_min=1e-4),
                                    tS.ExponentialLR(topt, gamma=0.99)], milestones=[20, 120])
    else:
        ts = tS.ChainedScheduler([tS.ConstantLR(topt, factor=0.5, total_iters=30), tS.ExponentialLR(topt, gamma=0.995),
                                  tS.MultiStepLR(topt, milestones=[100, 200])])
    opt2 = _opt()
    s2 = make(opt2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for e in range(1, STEPS):
            ts.step()
            s2.step()
            np.testing.assert_allclose([g["lr"] for g in opt2.param_groups], [g["lr"] for g in topt.param_groups],
                                       rtol=1e-13)
            if e == 150:
                opt3 = _opt()
                s3 = make(opt3)
                opt3.load_state_dict(_np_state(topt.state_dict()))
                s3.load_state_dict(ts.state_dict())
        for _ in range(151, STEPS):
            s3.step()
    np.testing.assert_allclose([g["lr"] for g in opt3.param_groups], [g["lr"] for g in topt.param_groups], rtol=1e-13)


# --------------------------------------------------------------------------- step(epoch), bad arguments

def test_step_with_an_epoch_follows_torch_closed_form_and_warns():
    opt = _opt()
    s = S.StepLR(opt, step_size=2, gamma=0.5)
    with pytest.warns(UserWarning, match="epoch parameter"):
        s.step(5)
    assert s.last_epoch == 5
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 ** 2)
    with pytest.raises(TypeError):
        s.step(1.5)
    with pytest.raises(ValueError):
        s.step(-1)


@pytest.mark.parametrize("make,exc,match", [
    (lambda o: S.MultiStepLR(o, milestones=[3, -1]), ValueError, "milestones"),
    (lambda o: S.ConstantLR(o, factor=1.5), ValueError, "factor"),
    (lambda o: S.LinearLR(o, start_factor=0.0), ValueError, "start_factor"),
    (lambda o: S.LinearLR(o, total_iters=0), ValueError, "total_iters"),
    (lambda o: S.PolynomialLR(o, total_iters=0), ValueError, "total_iters"),
    (lambda o: S.LambdaLR(o, lr_lambda=[_half, _half, _half]), ValueError, "lr_lambdas"),
    (lambda o: S.MultiplicativeLR(o, lr_lambda=3), TypeError, "function"),
    (lambda o: S.CosineAnnealingWarmRestarts(o, T_0=0), ValueError, "T_0"),
    (lambda o: S.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=0), ValueError, "T_mult"),
    (lambda o: S.CyclicLR(o, base_lr=0.01, max_lr=0.1, mode="square"), ValueError, "mode"),
    (lambda o: S.CyclicLR(o, base_lr=[0.01], max_lr=0.1), ValueError, "base_lr"),
    (lambda o: S.OneCycleLR(o, max_lr=0.1), ValueError, "total_steps"),
    (lambda o: S.OneCycleLR(o, max_lr=0.1, total_steps=10, pct_start=1.5), ValueError, "pct_start"),
    (lambda o: S.OneCycleLR(o, max_lr=0.1, total_steps=10, anneal_strategy="exp"), ValueError, "anneal_strategy"),
    (lambda o: S.SequentialLR(o, [S.StepLR(o, 3)], milestones=[4]), ValueError, "milestone"),
    (lambda o: S.ChainedScheduler([]), ValueError, "at least one"),
])
def test_bad_arguments_raise(make, exc, match):
    opt = _opt()
    with pytest.raises(exc, match=match):
        make(opt)
    assert [g["lr"] for g in opt.param_groups] == LRS


def test_cycle_momentum_needs_momentum_or_betas():
    with pytest.raises(ValueError, match="momentum"):
        S.OneCycleLR(_opt(fm.optim.Adagrad), max_lr=0.1, total_steps=10)
    with pytest.raises(ValueError, match="more steps|Tried to step"):
        s = S.OneCycleLR(_opt(), max_lr=0.1, total_steps=3)
        for _ in range(4):
            s.step()


# --------------------------------------------------------------------------- inside fit

def _net(seed=3, dtype="float64"):
    return fm.Sequential(fm.Linear(5, 8), fm.Tanh(), fm.Linear(8, 3), seed=seed, dtype=dtype)


def _xy(n=70, seed=4):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 5)), rng.integers(0, 3, size=n)


BATCH_CASES = [
    ("SGD", dict(lr=0.1, momentum=0.9), lambda o, nb: S.OneCycleLR(o, max_lr=0.5, total_steps=3 * nb)),
    ("Adam", dict(lr=0.01), lambda o, nb: S.CyclicLR(o, base_lr=0.001, max_lr=0.02, step_size_up=4,
                                                     mode="triangular2")),
    ("RMSprop", dict(lr=0.01, momentum=0.5), lambda o, nb: S.OneCycleLR(o, max_lr=0.05, total_steps=3 * nb,
                                                                        three_phase=True)),
    ("SGD", dict(lr=0.1), lambda o, nb: S.LambdaLR(o, lambda e: 1 / (1 + 0.3 * e))),
    ("NAdam", dict(lr=0.01), lambda o, nb: S.SequentialLR(o, [S.LinearLR(o, 0.2, total_iters=5),
                                                              S.CosineAnnealingWarmRestarts(o, T_0=4)], [5])),
    ("Adamax", dict(lr=0.01), lambda o, nb: S.ChainedScheduler([S.MultiplicativeLR(o, lambda e: 0.97),
                                                                 S.StepLR(o, step_size=3)])),
    ("ASGD", dict(lr=0.1, lambd=0.01, t0=4), lambda o, nb: S.SequentialLR(o, [S.LinearLR(o, 0.1, total_iters=nb),
                                                                            S.CosineAnnealingLR(o, T_max=2 * nb)],
                                                                         [nb])),
]


@pytest.mark.parametrize("cls,okw,make", BATCH_CASES, ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(BATCH_CASES)])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_per_batch_fit_equals_explicit_loop(cls, okw, make, dtype):
    """fit(scheduler_interval='batch') == train_step + scheduler.step() per batch, bit for bit."""
    X, y = _xy()
    X = X.astype(dtype)
    nb = -(-len(X) // 16)
    loss_fn = fm.CrossEntropyLoss()
    m1, m2 = _net(dtype=dtype), _net(dtype=dtype)
    o1, o2 = getattr(fm.optim, cls)(m1.parameters(), **okw), getattr(fm.optim, cls)(m2.parameters(), **okw)
    s1, s2 = make(o1, nb), make(o2, nb)
    h = m1.fit(X, y, loss_fn, o1, epochs=3, batch_size=16, shuffle=False, scheduler=s1, scheduler_interval="batch",
               verbose=0)
    lrs = []
    for _ in range(3):
        for i in range(0, len(X), 16):
            lrs.append(o2.param_groups[0]["lr"])
            m2.train_step(X[i:i + 16], y[i:i + 16], loss_fn, o2)
            s2.step()
    for k, v in m1.state_dict().items():
        np.testing.assert_array_equal(m2.state_dict()[k], v, err_msg=k)
    assert s1.state_dict() == s2.state_dict()
    assert [g["lr"] for g in o1.param_groups] == [g["lr"] for g in o2.param_groups]
    assert len(set(lrs)) > 3  # the lr really changed from batch to batch
    assert len(h.history["lr"]) == 3


@pytest.mark.parametrize("sched", ["onecycle", "cyclic-adam"])
def test_per_batch_fit_matches_torch_training_loop(sched):
    torch = pytest.importorskip("torch")
    X, y = _xy(64)
    model = _net()
    net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
    net.load_state_dict({k: torch.tensor(v) for k, v in model.state_dict().items()})
    if sched == "onecycle":
        opt, topt = fm.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), torch.optim.SGD(
            net.parameters(), lr=0.1, momentum=0.9)
        s = S.OneCycleLR(opt, max_lr=0.4, total_steps=16)
        ts = torch.optim.lr_scheduler.OneCycleLR(topt, max_lr=0.4, total_steps=16)
    else:
        opt, topt = fm.optim.Adam(model.parameters(), lr=0.01), torch.optim.Adam(net.parameters(), lr=0.01)
        s = S.CyclicLR(opt, base_lr=0.001, max_lr=0.05, step_size_up=3, mode="exp_range", gamma=0.9)
        ts = torch.optim.lr_scheduler.CyclicLR(topt, base_lr=0.001, max_lr=0.05, step_size_up=3, mode="exp_range",
                                               gamma=0.9)
    model.fit(X, y, fm.CrossEntropyLoss(), opt, epochs=4, batch_size=16, shuffle=False, scheduler=s, verbose=0)
    Xt, yt = torch.tensor(X), torch.tensor(y)
    for _ in range(4):
        for i in range(0, 64, 16):
            topt.zero_grad()
            torch.nn.functional.cross_entropy(net(Xt[i:i + 16]), yt[i:i + 16]).backward()
            topt.step()
            ts.step()
    for k, v in net.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[k], v.detach().numpy(), rtol=1e-10, atol=1e-12, err_msg=k)
    np.testing.assert_allclose(s.get_last_lr(), ts.get_last_lr(), rtol=1e-13)


CLASSIC = [("StepLR", dict(step_size=30, gamma=0.5), "SGD"), ("ExponentialLR", dict(gamma=0.99), "Adam"),
           ("CosineAnnealingLR", dict(T_max=100, eta_min=1e-3), "SGD")]


@pytest.mark.parametrize("name,kw,cls", CASES + CLASSIC, ids=IDS + [n for n, _, _ in CLASSIC])
def test_per_batch_fit_lr_trace_matches_torch(name, kw, cls):
    """Stepped inside fit (13 batches x 23 epochs = 299 steps): the lr of each epoch's last
    batch (History's 'lr') and every group's lr and momentum after the fit are torch's."""
    torch = pytest.importorskip("torch")
    m = fm.Sequential(fm.Linear(2, 1), seed=0, dtype="float64")
    okw = SGD_MOMENTUM if cls == "SGD" else {}
    opt = getattr(fm.optim, cls)([{"params": [m[0].weight], "lr": LRS[0]}, {"params": [m[0].bias], "lr": LRS[1]}],
                                 **okw)
    topt = _torch_opt(torch, cls, **okw)
    s, ts = _make(name, kw, cls, opt), getattr(torch.optim.lr_scheduler, name)(topt, **kw)
    rng = np.random.default_rng(12)
    h = m.fit(rng.normal(size=(13, 2)) * 0.1, rng.normal(size=(13, 1)) * 0.1, fm.MSELoss(), opt, epochs=23,
              batch_size=1, shuffle=False, scheduler=s, scheduler_interval="batch", verbose=0)
    trace = []
    for _ in range(299):
        trace.append(topt.param_groups[0]["lr"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch: "lr_scheduler.step() before optimizer.step()"
            ts.step()
    np.testing.assert_allclose(h.history["lr"], trace[12::13], rtol=1e-13, atol=1e-300)
    assert s.last_epoch == ts.last_epoch == 299
    np.testing.assert_allclose([g["lr"] for g in opt.param_groups], [g["lr"] for g in topt.param_groups],
                               rtol=1e-13, atol=1e-300)
    assert _momenta(opt) == pytest.approx(_momenta(topt), rel=1e-13)


def test_default_interval_and_ambiguous_composite():
    X, y = _xy()
    m = _net()
    o = fm.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    s = S.OneCycleLR(o, max_lr=0.3, total_steps=100)
    m.fit(X, y, fm.CrossEntropyLoss(), o, epochs=2, batch_size=10, scheduler=s, verbose=0)
    assert s.last_epoch == 14  # per batch by default: 7 batches x 2 epochs
    e = S.StepLR(o, step_size=1)
    m.fit(X, y, fm.CrossEntropyLoss(), o, epochs=2, batch_size=10, scheduler=e, verbose=0)
    assert e.last_epoch == 2
    mixed = S.SequentialLR(o, [S.LinearLR(o), S.OneCycleLR(o, max_lr=0.3, total_steps=100)], milestones=[5])
    with pytest.raises(ValueError, match="scheduler_interval"):
        m.fit(X, y, fm.CrossEntropyLoss(), o, epochs=1, scheduler=mixed, verbose=0)
    with pytest.raises(ValueError, match="per batch"):
        m.fit(X, y, fm.CrossEntropyLoss(), o, epochs=1, scheduler=S.ReduceLROnPlateau(o),
              scheduler_interval="batch", verbose=0)
    with pytest.raises(ValueError, match="scheduler_interval"):
        m.fit(X, y, fm.CrossEntropyLoss(), o, epochs=1, scheduler=e, scheduler_interval="step", verbose=0)


def test_per_batch_schedule_past_its_end_raises_and_changes_nothing():
    X, y = _xy()
    m = _net()
    o = fm.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    s = S.OneCycleLR(o, max_lr=0.3, total_steps=10)  # fewer than one epoch's 7 batches x 2
    m.fit(X, y, fm.CrossEntropyLoss(), o, epochs=1, batch_size=10, scheduler=s, verbose=0)
    before = (m.state_dict(), s.last_epoch, o.param_groups[0]["lr"])
    with pytest.raises(ValueError, match="total steps"):
        m.fit(X, y, fm.CrossEntropyLoss(), o, epochs=1, batch_size=10, scheduler=s, verbose=0)
    for k, v in before[0].items():
        np.testing.assert_array_equal(m.state_dict()[k], v)
    assert (s.last_epoch, o.param_groups[0]["lr"]) == before[1:]


def test_diverged_epoch_rolls_the_schedule_back():
    X, y = _xy()
    y = np.random.default_rng(5).normal(size=(len(X), 3))
    m = _net()
    o = fm.optim.SGD(m.parameters(), lr=0.1)
    s = S.LambdaLR(o, lambda e: 1.0 if e < 3 else 1e20)
    m.fit(X, y, fm.MSELoss(), o, epochs=1, batch_size=70, scheduler=s, scheduler_interval="batch", verbose=0)
    assert s.last_epoch == 1
    before = m.state_dict()
    with pytest.raises(FloatingPointError, match="diverged"):
        m.fit(X, y, fm.MSELoss(), o, epochs=3, batch_size=10, scheduler=s, scheduler_interval="batch", verbose=0)
    assert s.last_epoch == 8 and o.param_groups[0]["lr"] == 1e20 * 0.1  # the first epoch's 7 steps, kept
    with pytest.raises(ValueError, match="learning rate|lr"):  # a NaN lr in the table: nothing runs
        m.fit(X, y, fm.MSELoss(), o, epochs=1, batch_size=10, scheduler=S.LambdaLR(o, lambda e: math.nan),
              scheduler_interval="batch", verbose=0)
    del before


# --------------------------------------------------------------------------- model files

@pytest.mark.parametrize("kind", ["onecycle-batch", "step-epoch", "sequential-batch", "plateau", "cyclic-adam"])
def test_save_load_resume_is_bit_identical(kind, tmp_path):
    X, y = _xy(90)
    Xv, yv = _xy(30, seed=9)
    loss_fn = fm.CrossEntropyLoss()
    nb = -(-90 // 16)

    def build():
        m = _net(7)
        if kind == "cyclic-adam":
            o = fm.optim.Adam(m.parameters(), lr=0.01)
            return m, o, S.CyclicLR(o, base_lr=0.001, max_lr=0.02, step_size_up=5)
        o = fm.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        s = {"onecycle-batch": lambda: S.OneCycleLR(o, max_lr=0.5, total_steps=5 * nb),
             "step-epoch": lambda: S.MultiStepLR(o, milestones=[1, 3, 3]),
             "sequential-batch": lambda: S.SequentialLR(o, [S.LinearLR(o, total_iters=8),
                                                            S.CosineAnnealingWarmRestarts(o, T_0=6, T_mult=2)], [8]),
             "plateau": lambda: S.ReduceLROnPlateau(o, patience=0, factor=0.5)}[kind]()
        return m, o, s

    interval = "batch" if kind.endswith("batch") or kind == "cyclic-adam" else "epoch"
    kw = dict(batch_size=16, validation_data=(Xv, yv), scheduler_interval=interval, verbose=0)
    m1, o1, s1 = build()
    h1 = m1.fit(X, y, loss_fn, o1, epochs=5, scheduler=s1, **kw)
    m2, o2, s2 = build()
    m2.fit(X, y, loss_fn, o2, epochs=2, scheduler=s2, **kw)
    m2.save(tmp_path / "m.npz", optimizer=o2, scheduler=s2)
    m3, o3, s3 = fm.load(tmp_path / "m.npz", optimizer=True, scheduler=True)
    assert type(s3) is type(s2) and s3.optimizer is o3
    h3 = m3.fit(X, y, loss_fn, o3, epochs=3, scheduler=s3, **kw)
    for k, v in m1.state_dict().items():
        np.testing.assert_array_equal(m3.state_dict()[k], v, err_msg=k)
    assert h3.history["loss"] == h1.history["loss"][2:]
    assert h3.history["lr"] == h1.history["lr"][2:]
    assert s3.get_last_lr() == s1.get_last_lr() and s3.last_epoch == s1.last_epoch


def test_saving_a_lambda_schedule_raises_and_writes_nothing(tmp_path):
    m = _net()
    o = fm.optim.SGD(m.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="Python function"):
        m.save(tmp_path / "m.npz", optimizer=o, scheduler=S.LambdaLR(o, _half))
    with pytest.raises(ValueError, match="optimizer"):
        m.save(tmp_path / "m.npz", scheduler=S.StepLR(o, 2))
    assert not list(tmp_path.iterdir())
    m.save(tmp_path / "m.npz", optimizer=o)
    assert fm.load(tmp_path / "m.npz", optimizer=True, scheduler=True)[2] is None


@pytest.mark.parametrize("name,kw,cls", [c for c in CASES if "lambda" not in repr(c[1])],
                         ids=[i for c, i in zip(CASES, IDS) if "lambda" not in repr(c[1])])
def test_pickled_optimizer_and_schedule_continue_identically(name, kw, cls):
    """A (optimizer, scheduler) pair pickles together (the copy schedules the copied optimizer)."""
    import pickle

    opt = _opt_for(cls)
    s = _make(name, kw, cls, opt)
    for _ in range(40):
        s.step()
    opt2, s2 = pickle.loads(pickle.dumps((opt, s)))
    assert s2.optimizer is opt2 and s2.state_dict() == s.state_dict()
    for _ in range(40):
        s.step()
        s2.step()
        assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]
        assert _momenta(opt2) == _momenta(opt)
    assert s2.get_last_lr() == s.get_last_lr()
