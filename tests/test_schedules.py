"""fastmlp.optim.lr_scheduler against the NumPy references of
torch.optim.lr_scheduler's recursive rules (tests/reference_optim.py)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import fastmlp as fm
from reference_optim import (CosineAnnealingLRRef, ExponentialLRRef, ReduceLROnPlateauRef, StepLRRef,
                             cosine_closed_form)

S = fm.optim.lr_scheduler
EPOCHS = 40
LRS = [0.1, 0.03, 1.5]  # three parameter groups


def _opt(lrs=LRS, cls=fm.optim.SGD, **kw):
    return cls([{"params": [np.zeros(2)], "lr": lr} for lr in lrs], **kw)


def _lrs(opt):
    return [g["lr"] for g in opt.param_groups]


def _close(a, b, rtol=1e-12):
    np.testing.assert_allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=rtol, atol=1e-300)


SCHEDULES = [
    ("StepLR", dict(step_size=3, gamma=0.5)),
    ("StepLR", dict(step_size=1, gamma=0.9)),
    ("StepLR", dict(step_size=7)),
    ("ExponentialLR", dict(gamma=0.9)),
    ("ExponentialLR", dict(gamma=1.05)),
    ("CosineAnnealingLR", dict(T_max=10)),
    ("CosineAnnealingLR", dict(T_max=7, eta_min=0.01)),
    ("CosineAnnealingLR", dict(T_max=1, eta_min=0.001)),
    ("CosineAnnealingLR", dict(T_max=40)),
]
REFS = {"StepLR": StepLRRef, "ExponentialLR": ExponentialLRRef, "CosineAnnealingLR": CosineAnnealingLRRef}


def _ids(cases):
    return [f"{n}-" + "-".join(f"{k}={v}" for k, v in kw.items()) for n, kw in cases]


@pytest.mark.parametrize("name,kw", SCHEDULES, ids=_ids(SCHEDULES))
def test_schedule_matches_reference(name, kw):
    opt = _opt()
    sched = getattr(S, name)(opt, **kw)
    ref = REFS[name](LRS, **kw)
    assert sched.last_epoch == 0
    assert sched.get_last_lr() == LRS
    assert _lrs(opt) == LRS
    seen = []
    for e in range(1, EPOCHS + 1):
        opt.step([np.zeros(2)] * 3)
        sched.step()
        expect = ref.step()
        assert sched.last_epoch == e
        _close(_lrs(opt), expect)
        _close(sched.get_last_lr(), expect)
        assert isinstance(sched.get_last_lr(), list)
        seen.append(_lrs(opt)[0])
    assert len(set(seen)) > 1 or name == "StepLR" and kw.get("step_size", 0) > EPOCHS


@pytest.mark.parametrize("name,kw", SCHEDULES, ids=_ids(SCHEDULES))
def test_schedule_closed_forms(name, kw):
    """Without edits the recursions follow torch's closed forms."""
    opt = _opt()
    sched = getattr(S, name)(opt, **kw)
    for e in range(1, EPOCHS + 1):
        sched.step()
        for lr0, lr in zip(LRS, _lrs(opt)):
            if name == "StepLR":
                expect = lr0 * kw.get("gamma", 0.1) ** (e // kw["step_size"])
            elif name == "ExponentialLR":
                expect = lr0 * kw["gamma"] ** e
            else:
                expect = cosine_closed_form(lr0, e, kw["T_max"], kw.get("eta_min", 0.0))
            assert lr == pytest.approx(expect, rel=1e-9, abs=1e-12), (e, lr0)


def test_cosine_reaches_eta_min_and_comes_back():
    opt = _opt([0.5])
    sched = S.CosineAnnealingLR(opt, T_max=5, eta_min=0.1)
    lrs = []
    for _ in range(10):
        sched.step()
        lrs.append(_lrs(opt)[0])
    assert lrs[4] == pytest.approx(0.1, abs=1e-12)       # epoch T_max
    assert lrs[9] == pytest.approx(0.5, rel=1e-12)       # epoch 2 T_max: back at the base lr
    assert all(a > b for a, b in zip(lrs[:4], lrs[1:5]))
    assert all(a < b for a, b in zip(lrs[4:9], lrs[5:10]))


@pytest.mark.parametrize("name,kw", SCHEDULES[::2], ids=_ids(SCHEDULES[::2]))
def test_recursive_form_follows_lr_edits(name, kw):
    """torch's chainable form applies to the group's current lr, so user edits persist."""
    opt = _opt()
    sched = getattr(S, name)(opt, **kw)
    ref = REFS[name](LRS, **kw)
    for e in range(1, EPOCHS + 1):
        if e in (5, 17):
            for i, g in enumerate(opt.param_groups):
                g["lr"] = g["lr"] * (0.5 + i)
            ref.lrs = [lr * (0.5 + i) for i, lr in enumerate(ref.lrs)]
        sched.step()
        _close(_lrs(opt), ref.step(), rtol=1e-11)


def test_chained_schedules_compose():
    opt = _opt([0.2, 0.4])
    s1 = S.ExponentialLR(opt, gamma=0.95)
    s2 = S.StepLR(opt, step_size=4, gamma=0.5)
    for e in range(1, 25):
        s1.step()
        s2.step()
        for lr0, lr in zip([0.2, 0.4], _lrs(opt)):
            assert lr == pytest.approx(lr0 * 0.95 ** e * 0.5 ** (e // 4), rel=1e-12)
    assert s2.get_last_lr() == _lrs(opt)


def test_base_lrs_come_from_initial_lr():
    opt = _opt([0.2])
    S.StepLR(opt, step_size=100)
    assert opt.param_groups[0]["initial_lr"] == 0.2
    opt.param_groups[0]["lr"] = 0.05
    sched = S.CosineAnnealingLR(opt, T_max=4)
    assert sched.base_lrs == [0.2]  # the first scheduler's initial_lr is kept, as in torch
    ref = CosineAnnealingLRRef([0.05], T_max=4)
    ref.base_lrs = [0.2]
    for _ in range(12):
        sched.step()
        _close(_lrs(opt), ref.step())


# --------------------------------------------------------------------------- the optimizer uses the lr

@pytest.mark.parametrize("name,kw", SCHEDULES[:6], ids=_ids(SCHEDULES[:6]))
def test_optimizer_steps_with_scheduled_lr(name, kw):
    xs = [np.zeros(3), np.zeros(2), np.zeros(1)]
    opt = fm.optim.SGD([{"params": [x], "lr": lr} for x, lr in zip(xs, LRS)])
    sched = getattr(S, name)(opt, **kw)
    ref = REFS[name](LRS, **kw)
    used = list(LRS)
    for _ in range(EPOCHS):
        before = [x.copy() for x in xs]
        opt.step([np.ones(3), np.ones(2), np.ones(1)])  # SGD with grad 1 moves by exactly -lr
        for x, b, lr in zip(xs, before, used):
            np.testing.assert_allclose(b - x, lr, rtol=1e-9)
        sched.step()
        used = ref.step()


def test_model_train_step_uses_scheduled_lr():
    m1 = fm.Sequential(fm.Linear(3, 2), seed=1, dtype="float64")
    m2 = fm.Sequential(fm.Linear(3, 2), seed=1, dtype="float64")
    o1 = fm.optim.Adam(m1.parameters(), lr=0.1)
    o2 = fm.optim.Adam(m2.parameters(), lr=0.1)
    s1 = S.StepLR(o1, step_size=2, gamma=0.3)
    x, y = np.random.default_rng(2).normal(size=(5, 3)), np.zeros((5, 2))
    loss = fm.MSELoss()
    ref = StepLRRef([0.1], step_size=2, gamma=0.3)
    for _ in range(8):
        m1.train_step(x, y, loss, o1)
        o2.zero_grad()
        out = m2(x)
        loss(out, y)
        m2.backward(loss.backward())
        o2.step()
        s1.step()
        o2.param_groups[0]["lr"] = ref.step()[0]
    for k, v in m1.state_dict().items():
        np.testing.assert_allclose(v, m2.state_dict()[k], rtol=1e-13, atol=1e-15)


# --------------------------------------------------------------------------- ReduceLROnPlateau

def _metrics(mode, n=EPOCHS, seed=0):
    """Improves, plateaus, jitters, improves a little, plateaus again; negated for mode='max'."""
    rng = np.random.default_rng(seed)
    m = list(np.linspace(1.0, 0.5, 8))
    m += [0.5] * 6
    m += list(0.5 + rng.normal(scale=0.02, size=8))
    m += list(np.linspace(0.49, 0.45, 6))
    m += [0.45 + 1e-6 * i for i in range(n - len(m))]
    m = m[:n]
    return [-v for v in m] if mode == "max" else m


PLATEAU = [dict(zip(k, v)) for k, v in (
    (("mode", "threshold_mode", "patience", "cooldown", "min_lr", "threshold"), vals)
    for vals in itertools.product(["min", "max"], ["rel", "abs"], [0, 2, 5], [0, 3], [0.0, 0.004], [1e-4, 0.05]))]


@pytest.mark.parametrize("kw", PLATEAU, ids=[str(i) for i in range(len(PLATEAU))])
def test_plateau_matches_reference(kw):
    opt = _opt([0.1, 0.01])
    sched = S.ReduceLROnPlateau(opt, factor=0.5, **kw)
    ref = ReduceLROnPlateauRef([0.1, 0.01], factor=0.5, **kw)
    for e, m in enumerate(_metrics(kw["mode"]), start=1):
        sched.step(m)
        expect = ref.step(m)
        assert _lrs(opt) == expect, e  # only multiplications by factor and max(): exact
        assert sched.get_last_lr() == expect
        assert sched.last_epoch == e


@pytest.mark.parametrize("eps", [1e-8, 0.0, 0.009])
def test_plateau_eps_and_min_lr(eps):
    """A reduction smaller than eps is skipped; min_lr floors the lr."""
    opt = _opt([0.1, 0.02])
    sched = S.ReduceLROnPlateau(opt, factor=0.5, patience=0, min_lr=0.011, eps=eps)
    ref = ReduceLROnPlateauRef([0.1, 0.02], factor=0.5, patience=0, min_lr=0.011, eps=eps)
    for m in [1.0] * 10:
        sched.step(m)
        assert _lrs(opt) == ref.step(m)
    assert min(_lrs(opt)) >= 0.011
    assert _lrs(opt)[0] == ref.lrs[0]


def test_plateau_defaults_and_numpy_metric():
    opt = _opt([1.0])
    sched = S.ReduceLROnPlateau(opt)
    ref = ReduceLROnPlateauRef([1.0])
    for m in [np.float32(3.0)] + [np.float64(3.0)] * 11 + [np.array(2.0)] * 15:
        sched.step(m)
        assert _lrs(opt) == ref.step(float(m))
    # patience 10: reduced after the 11 bad epochs following 3.0, and after the 11 following 2.0
    assert _lrs(opt) == [pytest.approx(0.01, rel=1e-14)]


def test_plateau_nan_metric_counts_as_bad():
    opt = _opt([1.0])
    sched = S.ReduceLROnPlateau(opt, patience=1)
    ref = ReduceLROnPlateauRef([1.0], patience=1)
    for m in [1.0, float("nan"), float("nan"), 0.5, float("nan")]:
        sched.step(m)
        assert _lrs(opt) == ref.step(m)
    assert _lrs(opt) == [pytest.approx(0.1)]


def test_plateau_needs_metric():
    sched = S.ReduceLROnPlateau(_opt([0.1]))
    with pytest.raises(TypeError, match="metric"):
        sched.step()
    assert sched.last_epoch == 0


# --------------------------------------------------------------------------- state

@pytest.mark.parametrize("name,kw", SCHEDULES[:6] + [("ReduceLROnPlateau", dict(patience=1, cooldown=2))],
                         ids=_ids(SCHEDULES[:6]) + ["plateau"])
def test_scheduler_state_dict_round_trip(name, kw):
    metrics = _metrics("min")
    opt = _opt()
    sched = getattr(S, name)(opt, **kw)
    for e in range(15):
        sched.step(metrics[e]) if name == "ReduceLROnPlateau" else sched.step()
    sd = sched.state_dict()
    opt2 = _opt(_lrs(opt))
    sched2 = getattr(S, name)(opt2, **kw)
    sched2.load_state_dict(sd)
    assert sched2.last_epoch == 15
    assert sched2.get_last_lr() == sched.get_last_lr()
    for e in range(15, EPOCHS):
        for s in (sched, sched2):
            s.step(metrics[e]) if name == "ReduceLROnPlateau" else s.step()
        assert _lrs(opt2) == _lrs(opt)


# --------------------------------------------------------------------------- bad arguments

@pytest.mark.parametrize("make,exc,match", [
    (lambda o: S.StepLR(o, step_size=0), ValueError, "step_size"),
    (lambda o: S.StepLR(o, step_size=-3), ValueError, "step_size"),
    (lambda o: S.StepLR(o, step_size=1.5), TypeError, "step_size"),
    (lambda o: S.StepLR(o, step_size=2, gamma=0.0), ValueError, "gamma"),
    (lambda o: S.StepLR(o, step_size=2, gamma=-0.5), ValueError, "gamma"),
    (lambda o: S.StepLR(o, step_size=2, gamma=float("nan")), ValueError, "gamma"),
    (lambda o: S.StepLR(o, step_size=2, gamma="0.1"), TypeError, "gamma"),
    (lambda o: S.ExponentialLR(o, gamma=0.0), ValueError, "gamma"),
    (lambda o: S.ExponentialLR(o, gamma=float("inf")), ValueError, "gamma"),
    (lambda o: S.CosineAnnealingLR(o, T_max=0), ValueError, "T_max"),
    (lambda o: S.CosineAnnealingLR(o, T_max=-1), ValueError, "T_max"),
    (lambda o: S.CosineAnnealingLR(o, T_max=10, eta_min=float("nan")), ValueError, "eta_min"),
    (lambda o: S.ReduceLROnPlateau(o, mode="lowest"), ValueError, "mode"),
    (lambda o: S.ReduceLROnPlateau(o, threshold_mode="relative"), ValueError, "threshold"),
    (lambda o: S.ReduceLROnPlateau(o, factor=1.0), ValueError, "factor"),
    (lambda o: S.ReduceLROnPlateau(o, factor=2.0), ValueError, "factor"),
    (lambda o: S.ReduceLROnPlateau(o, factor=-0.1), ValueError, "factor"),
    (lambda o: S.ReduceLROnPlateau(o, patience=-1), ValueError, "patience"),
    (lambda o: S.ReduceLROnPlateau(o, cooldown=-1), ValueError, "cooldown"),
    (lambda o: S.ReduceLROnPlateau(o, min_lr=-1e-3), ValueError, "min_lr"),
    (lambda o: S.ReduceLROnPlateau(o, threshold=-1e-3), ValueError, "threshold"),
    (lambda o: S.ReduceLROnPlateau(o, eps=-1.0), ValueError, "eps"),
    (lambda o: S.StepLR(object(), step_size=2), TypeError, "optimizer"),
    (lambda o: S.ExponentialLR([0.1], gamma=0.5), TypeError, "optimizer"),
])
def test_bad_arguments_raise(make, exc, match):
    opt = _opt([0.1])
    with pytest.raises(exc, match=match):
        make(opt)
    assert _lrs(opt) == [0.1]
    assert "initial_lr" not in opt.param_groups[0] or opt.param_groups[0]["initial_lr"] == 0.1
