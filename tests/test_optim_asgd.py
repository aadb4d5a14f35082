"""ASGD beyond the shared optimizer grids (test_optim.py, test_optim_api.py and the torch
parity file run it through every test they run on the others): 100 steps of every option
with its state (ax, eta, mu) against the NumPy reference, the average ax against the plain
mean of the iterates, eta made from the lr of each step (edits and schedules before the
first step included), fit == an explicit train_step loop with schedules and clipping, a
saved fit resuming bit for bit, and the errors."""
from __future__ import annotations

import copy

import numpy as np
import pytest

import fastmlp as fm
from reference_optim import RefOptimizer, pseudo_gradients
from test_optim import CONFIGS, RTOL, SHAPES, _initial, assert_close

S = fm.optim.lr_scheduler
STEPS = 100
ASGD_CASES = CONFIGS["ASGD"]
ASGD_IDS = ["-".join(f"{k}={v}" for k, v in c.items() if k != "lr") for c in ASGD_CASES]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cfg", ASGD_CASES, ids=ASGD_IDS)
def test_100_steps_and_state_match_reference(cfg, dtype):
    params = _initial(SHAPES, dtype, seed=60)
    ref = RefOptimizer("ASGD", params, **cfg)
    opt = fm.optim.ASGD(params, **cfg)
    grad_fn = pseudo_gradients(SHAPES, STEPS, seed=61)
    for t in range(STEPS):
        grads = [g.astype(dtype) for g in grad_fn(ref.params, t)]
        opt.step(grads)
        ref.step(grads)
    sd = opt.state_dict()["state"]
    for i, (p, r) in enumerate(zip(params, ref.params)):
        rs = ref.state[0][i]
        assert_close(p, r, RTOL[dtype], f"param {i}")
        assert_close(sd[i]["ax"], rs["ax"], RTOL[dtype], f"ax {i}")
        assert sd[i]["step"] == STEPS
        assert sd[i]["eta"] == pytest.approx(rs["eta"], rel=RTOL[dtype])
        assert sd[i]["mu"] == pytest.approx(rs["mu"], rel=RTOL[dtype])
        assert sd[i]["ax"] is not opt.state[id(p)]["ax"] and np.shares_memory(opt.state[id(p)]["ax"],
                                                                               opt._core.state(0))
    if cfg["t0"] < STEPS:  # the average really started: ax is not the last iterate
        assert not np.allclose(sd[0]["ax"], params[0], rtol=1e-3)
    else:
        np.testing.assert_array_equal(sd[0]["ax"], params[0])


@pytest.mark.parametrize("t0", [0.0, 5.0, 37.0])
def test_ax_is_the_mean_of_the_iterates_since_t0(t0):
    """Step t averages with mu = 1 / max(1, t - 1 - t0): after step t >= t0 + 2, ax is the
    mean of the iterates of steps t0 + 2 .. t; before, the last iterate."""
    x = np.random.default_rng(62).normal(size=6)
    opt = fm.optim.ASGD([x], lr=0.05, lambd=0.01, t0=t0)
    grad_fn = pseudo_gradients([(6,)], 60, seed=63)
    iterates = []
    for t in range(60):
        opt.step(grad_fn([x], t))
        iterates.append(x.copy())
        start = int(t0) + 2  # 1-based step of the first averaged iterate
        want = np.mean(iterates[start - 1:], axis=0) if t + 1 >= start else x
        np.testing.assert_allclose(opt.state[id(x)]["ax"], want, rtol=1e-12, atol=1e-14)


def test_eta_is_made_from_the_lr_of_each_step():
    """The first step uses the lr set before it (as torch creates the state then); every later
    step uses the eta the previous one made from its lr: a schedule acts one step later."""
    x0 = np.array([1.0, -2.0, 0.5])
    g = np.array([0.3, 0.1, -0.7])
    x = x0.copy()
    opt = fm.optim.ASGD([x], lr=0.1, lambd=0.5, alpha=0.75)
    opt.param_groups[0]["lr"] = 0.02
    opt.step([g])
    np.testing.assert_allclose(x, x0 * (1 - 0.5 * 0.02) - 0.02 * g, rtol=1e-15)
    eta = 0.02 / (1 + 0.5 * 0.02 * 1) ** 0.75
    assert opt.state[id(x)]["eta"] == pytest.approx(eta, rel=1e-15)
    opt.param_groups[0]["lr"] = 0.3  # used for the eta the next step makes, not by the next step
    x1 = x.copy()
    opt.step([g])
    np.testing.assert_allclose(x, x1 * (1 - 0.5 * eta) - eta * g, rtol=1e-15)
    assert opt.state[id(x)]["eta"] == pytest.approx(0.3 / (1 + 0.5 * 0.3 * 2) ** 0.75, rel=1e-15)
    # a schedule built before the first step: its first lr is the first step's eta
    y = x0.copy()
    o2 = fm.optim.ASGD([y], lr=0.1, lambd=0.5)
    S.LinearLR(o2, start_factor=0.25, total_iters=4)
    o2.step([g])
    np.testing.assert_allclose(y, x0 * (1 - 0.5 * 0.025) - 0.025 * g, rtol=1e-15)


def test_float32_keeps_eta_and_mu_in_float32():
    """As torch keeps them in its default dtype (float32)."""
    x = np.ones(3, dtype=np.float32)
    opt = fm.optim.ASGD([x], lr=0.1, lambd=0.3, t0=0.0)
    for _ in range(3):
        opt.step([np.ones(3, dtype=np.float32)])
    st = opt.state_dict()["state"][0]
    assert st["eta"] == float(np.float32(0.1 / (1 + 0.3 * 0.1 * 3) ** 0.75)) != 0.1 / (1 + 0.3 * 0.1 * 3) ** 0.75
    assert st["mu"] == float(np.float32(1 / 3))


def test_mu_underflowing_float32_keeps_the_average():
    """t0 = -1e46: 1 / (t - t0) is 0 in float32 (torch's mu then freezes ax at the first iterate);
    here mu stays above 0, the mark of a parameter not stepped yet, so ax is not reset either."""
    x = np.ones(3, dtype=np.float32)
    opt = fm.optim.ASGD([x], lr=0.1, t0=-1e46)
    opt.step([np.ones(3, dtype=np.float32)])
    first = x.copy()
    for _ in range(3):
        opt.step([np.ones(3, dtype=np.float32)])
    assert not np.array_equal(x, first)
    np.testing.assert_array_equal(opt.state[id(x)]["ax"], first)
    assert 0 < opt.state_dict()["state"][0]["mu"] < 1e-44


def test_fresh_and_added_groups_start_at_their_lr():
    """A group added later (and an unstepped optimizer's state_dict) starts as torch's first step."""
    a, b = np.ones(2), np.full(3, 2.0)
    opt = fm.optim.ASGD([a], lr=0.1, t0=0.0)
    assert opt.state_dict()["state"][0] == {"step": 0.0, "ax": pytest.approx(np.zeros(2)), "eta": 0.1, "mu": 1.0}
    for _ in range(3):
        opt.step([np.ones(2)])
    opt.add_param_group({"params": [b], "lr": 0.01})
    st = opt.state_dict()["state"]
    assert st[1]["eta"] == 0.01 and st[1]["mu"] == 1.0
    opt.step([np.ones(2), np.ones(3)])
    np.testing.assert_allclose(b, 2.0 * (1 - 1e-4 * 0.01) - 0.01, rtol=1e-15)
    np.testing.assert_array_equal(opt.state[id(b)]["ax"], b)  # its first step: ax = p
    # an unstepped state_dict loads as unstepped (the lr set at the load is the first eta)
    c = np.ones(2)
    fresh = fm.optim.ASGD([np.ones(2)], lr=0.5).state_dict()
    o3 = fm.optim.ASGD([c], lr=0.5)
    o3.load_state_dict(fresh)
    o3.param_groups[0]["lr"] = 0.2
    o3.step([np.ones(2)])
    np.testing.assert_allclose(c, 1 - 1e-4 * 0.2 - 0.2, rtol=1e-15)


# --------------------------------------------------------------------------- inside fit

def _net(dtype="float64", seed=64):
    return fm.Sequential(fm.Linear(5, 8), fm.Tanh(), fm.Linear(8, 3), seed=seed, dtype=dtype)


def _xy(n=70, seed=65):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 5)) * 2, rng.integers(0, 3, size=n)


OPTS = dict(lr=0.2, lambd=0.01, alpha=0.6, t0=6.0, weight_decay=0.01)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("interval", ["epoch", "batch"])
def test_fit_equals_train_step_loop_with_schedule_and_clipping(interval, dtype):
    X, y = _xy()
    X = X.astype(dtype)
    loss_fn = fm.CrossEntropyLoss()
    m1, m2 = _net(dtype), _net(dtype)
    o1, o2 = fm.optim.ASGD(m1.parameters(), **OPTS), fm.optim.ASGD(m2.parameters(), **OPTS)
    make = (lambda o: S.StepLR(o, step_size=1, gamma=0.7)) if interval == "epoch" else (
        lambda o: S.OneCycleLR(o, max_lr=0.5, total_steps=15, cycle_momentum=False))
    s1, s2 = make(o1), make(o2)
    m1.fit(X, y, loss_fn, o1, epochs=3, batch_size=16, shuffle=False, scheduler=s1, scheduler_interval=interval,
           clip_grad_norm=0.5, verbose=0)
    for _ in range(3):
        for i in range(0, len(X), 16):
            m2.train_step(X[i:i + 16], y[i:i + 16], loss_fn, o2, clip_grad_norm=0.5)
            if interval == "batch":
                s2.step()
        if interval == "epoch":
            s2.step()
    for k, v in m1.state_dict().items():
        np.testing.assert_array_equal(m2.state_dict()[k], v, err_msg=k)
    sd1, sd2 = o1.state_dict(), o2.state_dict()
    for i in sd1["state"]:
        for k in ("ax", "eta", "mu", "step"):
            np.testing.assert_array_equal(sd1["state"][i][k], sd2["state"][i][k])
    assert sd1["state"][0]["step"] == 15 and sd1["state"][0]["mu"] < 1  # the average started


def test_fit_on_two_threads_equals_one():
    from fastmlp.training import thread_plan

    X, y = _xy(256)
    assert thread_plan(2, _net(), 128, split=True) == (1, 2)  # each batch's chunks on two threads
    ms = []
    for n in (1, 2):
        m = _net()
        m.fit(X, y, fm.CrossEntropyLoss(), fm.optim.ASGD(m.parameters(), **OPTS), epochs=2, batch_size=128,
              shuffle=False, verbose=0, n_threads=n)
        ms.append(m.state_dict())
    for k, v in ms[0].items():
        np.testing.assert_allclose(ms[1][k], v, rtol=1e-12, atol=1e-14, err_msg=k)


def test_saved_fit_resumes_bit_identically(tmp_path):
    X, y = _xy(90)
    loss_fn = fm.CrossEntropyLoss()

    def build():
        m = _net(seed=66)
        o = fm.optim.ASGD(m.parameters(), **OPTS)
        return m, o, S.CosineAnnealingLR(o, T_max=30)

    kw = dict(batch_size=16, scheduler_interval="batch", verbose=0)
    m1, o1, s1 = build()
    h1 = m1.fit(X, y, loss_fn, o1, epochs=4, scheduler=s1, **kw)
    m2, o2, s2 = build()
    m2.fit(X, y, loss_fn, o2, epochs=2, scheduler=s2, **kw)
    m2.save(tmp_path / "m.npz", optimizer=o2, scheduler=s2)
    m3, o3, s3 = fm.load(tmp_path / "m.npz", optimizer=True, scheduler=True)
    assert type(o3) is fm.optim.ASGD and o3.param_groups[0]["t0"] == 6.0
    h3 = m3.fit(X, y, loss_fn, o3, epochs=2, scheduler=s3, **kw)
    for k, v in m1.state_dict().items():
        np.testing.assert_array_equal(m3.state_dict()[k], v, err_msg=k)
    assert h3.history["loss"] == h1.history["loss"][2:]
    for i, st in o1.state_dict()["state"].items():
        np.testing.assert_array_equal(o3.state_dict()["state"][i]["ax"], st["ax"])
        assert o3.state_dict()["state"][i]["eta"] == st["eta"]


# --------------------------------------------------------------------------- errors

@pytest.mark.parametrize("kw,exc,match", [
    (dict(lr=-0.1), ValueError, "lr"), (dict(lambd=-1e-4), ValueError, "lambd"),
    (dict(weight_decay=-0.1), ValueError, "weight_decay"), (dict(alpha=float("nan")), ValueError, "alpha"),
    (dict(t0=float("inf")), ValueError, "t0"), (dict(lambd="a"), TypeError, "lambd"),
    (dict(maximize=1), TypeError, "maximize"), (dict(capturable="no"), TypeError, "capturable"),
])
def test_bad_hyperparameters_raise(kw, exc, match):
    with pytest.raises(exc, match=match):
        fm.optim.ASGD([np.zeros(3)], **kw)
    x = np.ones(3)
    opt = fm.optim.ASGD([x], lr=0.1)
    opt.step([np.ones(3)])
    before, sd = x.copy(), opt.state_dict()
    key = next(iter(kw))
    if key not in ("maximize", "capturable"):  # (booleans are checked when set, as the others')
        opt.param_groups[0][key] = kw[key]
        with pytest.raises(exc, match=match):
            opt.step([np.ones(3)])
        np.testing.assert_array_equal(x, before)
        opt.param_groups[0][key] = sd["param_groups"][0][key]
        opt.step([np.ones(3)])
        assert not np.array_equal(x, before)


@pytest.mark.parametrize("key,value,match", [
    ("eta", -0.1, "eta"), ("eta", float("nan"), "eta"), ("mu", 0.0, "mu"), ("mu", 1.5, "mu"),
    ("mu", np.ones(3), "one number"), ("ax", np.ones(4), "shape"), ("ax", np.full(3, np.inf), "NaN or inf"),
])
def test_bad_state_dict_raises_and_changes_nothing(key, value, match):
    x = np.ones(3)
    opt = fm.optim.ASGD([x], lr=0.1, t0=0.0)
    for _ in range(3):
        opt.step([np.ones(3)])
    good = opt.state_dict()
    bad = copy.deepcopy(good)
    bad["state"][0][key] = value
    bad["param_groups"][0]["lr"] = 0.5
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(bad)
    after = opt.state_dict()
    assert after["param_groups"][0]["lr"] == 0.1
    for k in ("eta", "mu", "step"):
        assert after["state"][0][k] == good["state"][0][k]
    np.testing.assert_array_equal(after["state"][0]["ax"], good["state"][0]["ax"])


def test_estimators_have_no_asgd_solver():
    """The estimators' solvers are scikit-learn's names: ASGD is not one of them."""
    with pytest.raises(ValueError, match="solver"):
        fm.MLPClassifier(solver="asgd").fit(np.zeros((4, 2)), [0, 1, 0, 1])


def test_a_diverged_epoch_restores_ax_eta_and_mu():
    """fit's reset to the epoch's start (a loss that overflowed) covers ASGD's whole state."""
    X, y = _xy(32)
    m = _net("float32")
    opt = fm.optim.ASGD(m.parameters(), lr=0.1, lambd=0.0, t0=0.0)
    m.fit(X.astype(np.float32), y, fm.CrossEntropyLoss(), opt, epochs=1, batch_size=8, verbose=0)
    before, weights = opt.state_dict(), m.state_dict()
    assert before["state"][0]["mu"] < 1  # the average is on
    opt.param_groups[0]["lr"] = 3e38  # the eta of the epoch's later steps: the loss overflows float32
    with pytest.raises(FloatingPointError, match="reset"):
        m.fit(X.astype(np.float32), y, fm.CrossEntropyLoss(), opt, epochs=1, batch_size=2, verbose=0)
    after = opt.state_dict()
    for i, st in before["state"].items():
        for k in ("step", "eta", "mu"):
            assert after["state"][i][k] == st[k], k
        np.testing.assert_array_equal(after["state"][i]["ax"], st["ax"])
    for k, v in weights.items():
        np.testing.assert_array_equal(m.state_dict()[k], v)
