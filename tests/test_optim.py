"""fastmlp.optim against the NumPy float64 references of torch.optim's rules
(tests/reference_optim.py): every option combination, plain arrays and model
parameters, parameter groups, hyperparameter edits, zero_grad, state_dict
round trips and model.train_step."""
from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest

import fastmlp as fm
from reference_optim import DEFAULTS, RefOptimizer, pseudo_gradients

STEPS = 60
RTOL = {"float64": 1e-10, "float32": 1e-5}
SHAPES = [(4, 3), (5,), (1,)]


def assert_close(actual, ref, rtol, what="", scale=1.0):
    """Relative tolerance rtol, with an absolute floor of rtol * scale (the
    size of the values the trajectory went through) for entries near 0."""
    actual = np.asarray(actual, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert actual.shape == ref.shape, what
    assert np.isfinite(actual).all(), what
    scale = max(float(np.abs(ref).max()) if ref.size else 0.0, scale)
    np.testing.assert_allclose(actual, ref, rtol=rtol, atol=rtol * scale, err_msg=what)


# --------------------------------------------------------------------------- option grids

def _grid(**axes):
    keys = list(axes)
    return [dict(zip(keys, vals)) for vals in itertools.product(*axes.values())]


def _sgd_valid(c):
    return not c["nesterov"] or (c["momentum"] > 0 and c["dampening"] == 0)


SGD_ALL = _grid(lr=[0.05], momentum=[0.0, 0.9], dampening=[0.0, 0.3], nesterov=[False, True],
                weight_decay=[0.0, 0.1], maximize=[False, True])
CONFIGS = {
    "SGD": [c for c in SGD_ALL if _sgd_valid(c)],
    "Adagrad": _grid(lr=[0.1], lr_decay=[0.0, 0.05], weight_decay=[0.0, 0.1], initial_accumulator_value=[0.0, 0.5],
                     eps=[1e-10, 1e-3], maximize=[False, True]),
    "RMSprop": _grid(lr=[0.01], alpha=[0.99, 0.5], eps=[1e-8, 1e-2], weight_decay=[0.0, 0.1], momentum=[0.0, 0.9],
                     centered=[False, True], maximize=[False, True]),
    "Adadelta": _grid(lr=[1.0, 0.3], rho=[0.9, 0.5], eps=[1e-6, 1e-3], weight_decay=[0.0, 0.1],
                      maximize=[False, True]),
    "Adam": _grid(lr=[0.05], betas=[(0.9, 0.999), (0.5, 0.9), (0.0, 0.0)], eps=[1e-8, 1e-3],
                  weight_decay=[0.0, 0.1], amsgrad=[False, True], maximize=[False, True]),
    "AdamW": _grid(lr=[0.05], betas=[(0.9, 0.999), (0.5, 0.9), (0.0, 0.0)], eps=[1e-8, 1e-3],
                   weight_decay=[0.0, 0.1], amsgrad=[False, True], maximize=[False, True]),
    "NAdam": _grid(lr=[0.05], betas=[(0.9, 0.999), (0.5, 0.9)], eps=[1e-8, 1e-3], weight_decay=[0.0, 0.1],
                   momentum_decay=[4e-3, 0.1], decoupled_weight_decay=[False, True], maximize=[False, True]),
    # betas (0.5, 0.9): rectified from step 3 (rho_inf = 19); (0.9, 0.999): from step 6; (0, 0): never
    "RAdam": _grid(lr=[0.05], betas=[(0.9, 0.999), (0.5, 0.9), (0.0, 0.0)], eps=[1e-8, 1e-3],
                   weight_decay=[0.0, 0.1], decoupled_weight_decay=[False, True], maximize=[False, True]),
    "Adamax": _grid(lr=[0.05], betas=[(0.9, 0.999), (0.5, 0.9), (0.0, 0.0)], eps=[1e-8, 1e-3],
                    weight_decay=[0.0, 0.1], maximize=[False, True]),
    # t0=10: the average ax starts at step 11; lambd=0.05: eta decays visibly over the run
    "ASGD": _grid(lr=[0.05], lambd=[1e-4, 0.05], alpha=[0.75, 0.3], t0=[1e6, 10.0], weight_decay=[0.0, 0.1],
                  maximize=[False, True]),
}
CONFIGS["Adam"] += [dict(c, decoupled_weight_decay=True) for c in CONFIGS["Adam"] if c["weight_decay"]]
CASES = [(name, cfg) for name, cfgs in CONFIGS.items() for cfg in cfgs]
CASE_IDS = [name + "-" + "-".join(f"{k}={v}" for k, v in cfg.items() if k != "lr" or name == "Adadelta")
            for name, cfg in CASES]
INVALID_SGD = [c for c in SGD_ALL if not _sgd_valid(c)]


def _opt_class(name):
    return getattr(fm.optim, name)


def _initial(shapes, dtype, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=s).astype(dtype) for s in shapes]


def test_grids_are_nontrivial():
    assert len(CONFIGS["SGD"]) == 20 and len(INVALID_SGD) == 12
    assert sum(len(v) for v in CONFIGS.values()) == 20 + 32 + 64 + 32 + (48 + 24) + 48 + 64 + 48 + 24 + 32


# --------------------------------------------------------------------------- plain arrays

@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name,cfg", CASES, ids=CASE_IDS)
def test_plain_arrays_match_reference(name, cfg, dtype):
    params = _initial(SHAPES, dtype)
    ref = RefOptimizer(name, [p.astype(np.float64) for p in params], **cfg)
    opt = _opt_class(name)(params, **cfg)
    grad_fn = pseudo_gradients(SHAPES, STEPS, seed=2)
    start = [p.copy() for p in params]
    for t in range(STEPS):
        grads = [g.astype(dtype) for g in grad_fn(ref.params, t)]
        opt.step(grads)
        ref.step(grads)
        for p in params:
            assert p.dtype == np.dtype(dtype)
    for i, (p, r) in enumerate(zip(params, ref.params)):
        assert_close(p, r, RTOL[dtype], f"param {i}")
    # the trajectory really moved
    assert max(float(np.abs(p.astype(np.float64) - s).max()) for p, s in zip(params, start)) > 1e-3


# --------------------------------------------------------------------------- model parameters

def _model(dtype, seed=3):
    return fm.Sequential(fm.Linear(3, 4), fm.Tanh(), fm.Linear(4, 2), seed=seed, dtype=dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name,cfg", CASES, ids=CASE_IDS)
def test_model_parameters_match_reference(name, cfg, dtype):
    model = _model(dtype)
    params = list(model.parameters())
    shapes = [p.shape for p in params]
    ref = RefOptimizer(name, [p.data.astype(np.float64) for p in params], **cfg)
    opt = _opt_class(name)(model.parameters(), **cfg)
    grad_fn = pseudo_gradients(shapes, STEPS, seed=4)
    for t in range(STEPS):
        grads = [g.astype(dtype) for g in grad_fn(ref.params, t)]
        for p, g in zip(params, grads):
            p.grad[...] = g
        opt.step()
        ref.step(grads)
    for (n, p), r in zip(model.named_parameters(), ref.params):
        assert_close(p.data, r, RTOL[dtype], n)
    assert_close(model.state_dict()["2.weight"], ref.params[2], RTOL[dtype])


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_model_backward_grads_drive_step(name, dtype):
    """opt.step() uses the .grad accumulated by model.backward."""
    model = _model(dtype, seed=5)
    cfg = CONFIGS[name][-1]  # every option switched on
    params = list(model.parameters())
    ref = RefOptimizer(name, [p.data.astype(np.float64) for p in params], **cfg)
    opt = _opt_class(name)(model.parameters(), **cfg)
    rng = np.random.default_rng(6)
    x = rng.normal(size=(7, 3)).astype(dtype)
    for _ in range(20):
        opt.zero_grad()
        out = model(x)
        model.backward(np.ones_like(out) * 0.1 + out)  # d/dout of 0.5|out|^2 + 0.1 sum(out)
        grads = [p.grad.copy() for p in params]
        assert any(np.abs(g).max() > 0 for g in grads)
        opt.step()
        ref.step(grads)
        for p, r in zip(params, ref.params):
            assert_close(p.data, r, RTOL[dtype])
            # keep the reference on fastmlp's trajectory (forward rounding differs)
            r[...] = p.data


# --------------------------------------------------------------------------- invalid combinations

@pytest.mark.parametrize("cfg", INVALID_SGD, ids=[str(i) for i in range(len(INVALID_SGD))])
def test_nesterov_needs_momentum_and_zero_dampening(cfg):
    x = np.zeros(3)
    with pytest.raises(ValueError, match="[Nn]esterov"):
        fm.optim.SGD([x], **cfg)
    model = _model("float64")
    with pytest.raises(ValueError, match="[Nn]esterov"):
        fm.optim.SGD(model.parameters(), **cfg)


def test_invalid_nesterov_via_param_group_edit_is_rejected_at_step():
    x = np.ones(3)
    opt = fm.optim.SGD([x], lr=0.1, momentum=0.9, nesterov=True)
    opt.param_groups[0]["momentum"] = 0.0
    with pytest.raises(ValueError, match="[Nn]esterov"):
        opt.step([np.ones(3)])
    np.testing.assert_array_equal(x, np.ones(3))



def test_every_edit_after_a_push_is_seen():
    # _sync pushes only the groups whose values changed: an in-place edit of a betas list, a value
    # set back to an earlier one, and an invalid value set after a valid push must all be seen
    x = np.ones(3)
    opt, ref = fm.optim.Adam([x], lr=0.1), RefOptimizer("Adam", [x], lr=0.1, betas=(0.9, 0.999))
    betas = opt.param_groups[0]["betas"] = [0.9, 0.999]  # a list the test mutates in place
    for t, edit in enumerate([None, ("betas0", 0.5), ("lr", 0.01), ("lr", 0.1), ("betas0", 0.9)]):
        if edit:
            k, v = edit
            if k == "betas0":
                betas[0] = v  # the same list object, mutated
                ref.param_groups[0]["betas"] = (v, 0.999)
            else:
                opt.param_groups[0][k] = ref.param_groups[0][k] = v
        g = np.full(3, 0.5 + t)
        opt.step([g])
        ref.step([g])
        assert_close(x, ref.params[0], 1e-12)
    before = x.copy()
    opt.param_groups[0]["lr"] = -1.0
    with pytest.raises(ValueError, match="lr"):
        opt.step([np.ones(3)])
    np.testing.assert_array_equal(x, before)


# --------------------------------------------------------------------------- groups and edits

GROUP_OPTIONS = {
    "SGD": ({"lr": 0.1}, {"lr": 0.01, "momentum": 0.5}, dict(momentum=0.9, nesterov=False)),
    "Adagrad": ({"lr": 0.2}, {"lr": 0.02, "lr_decay": 0.1}, dict(weight_decay=0.1)),
    "RMSprop": ({"lr": 0.02}, {"lr": 0.002, "centered": True}, dict(momentum=0.5)),
    "Adadelta": ({"lr": 1.0}, {"lr": 0.1, "rho": 0.5}, dict(weight_decay=0.05)),
    "Adam": ({"lr": 0.05}, {"lr": 0.005, "amsgrad": True}, dict(betas=(0.8, 0.99))),
    "AdamW": ({"lr": 0.05}, {"lr": 0.005, "weight_decay": 0.3}, dict(betas=(0.8, 0.99))),
    "NAdam": ({"lr": 0.05}, {"lr": 0.005, "momentum_decay": 0.1}, dict(betas=(0.8, 0.99), weight_decay=0.1)),
    "RAdam": ({"lr": 0.05}, {"lr": 0.005, "decoupled_weight_decay": True}, dict(betas=(0.5, 0.9), weight_decay=0.1)),
    "Adamax": ({"lr": 0.05}, {"lr": 0.005, "weight_decay": 0.3}, dict(betas=(0.8, 0.99))),
    "ASGD": ({"lr": 0.05}, {"lr": 0.005, "t0": 5.0}, dict(lambd=0.01, weight_decay=0.1)),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_parameter_groups_plain_arrays(name, dtype):
    g0, g1, common = GROUP_OPTIONS[name]
    params = _initial(SHAPES, dtype, seed=7)
    groups = [{"params": [params[0]], **g0}, {"params": [params[1], params[2]], **g1}]
    ref = RefOptimizer(name, [{"params": [params[0]], **g0}, {"params": [params[1], params[2]], **g1}], **common)
    opt = _opt_class(name)(groups, **common)
    assert len(opt.param_groups) == 2
    assert opt.param_groups[0]["lr"] == g0["lr"] and opt.param_groups[1]["lr"] == g1["lr"]
    for k, v in common.items():
        assert opt.param_groups[0][k] == v
    grad_fn = pseudo_gradients(SHAPES, STEPS, seed=8)
    for t in range(STEPS):
        grads = [g.astype(dtype) for g in grad_fn(ref.params, t)]
        opt.step(grads)
        ref.step(grads)
    for p, r in zip(params, ref.params):
        assert_close(p, r, RTOL[dtype])


@pytest.mark.parametrize("name", list(CONFIGS))
def test_parameter_groups_model_weights_and_biases_split(name):
    """Weights in one group and biases in another (non-adjacent runs of one buffer)."""
    g0, g1, common = GROUP_OPTIONS[name]
    model = _model("float64", seed=9)
    named = dict(model.named_parameters())
    w = [named["0.weight"], named["2.weight"]]
    b = [named["0.bias"], named["2.bias"]]
    opt = _opt_class(name)([{"params": w, **g0}, {"params": b, **g1}], **common)
    ref = RefOptimizer(name, [{"params": [p.data for p in w], **g0}, {"params": [p.data for p in b], **g1}],
                       **common)
    order = w + b
    grad_fn = pseudo_gradients([p.shape for p in order], 30, seed=10)
    for t in range(30):
        grads = grad_fn(ref.params, t)
        for p, g in zip(order, grads):
            p.grad[...] = g
        opt.step()
        ref.step(grads)
    for p, r in zip(order, ref.params):
        assert_close(p.data, r, 1e-10, p.name)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_lr_edit_takes_effect(name, dtype):
    cfg = dict(CONFIGS[name][0])
    params = _initial(SHAPES, dtype, seed=11)
    ref = RefOptimizer(name, params, **cfg)
    opt = _opt_class(name)(params, **cfg)
    grad_fn = pseudo_gradients(SHAPES, STEPS, seed=12)
    for t in range(STEPS):
        if t == 20:
            opt.param_groups[0]["lr"] = cfg["lr"] * 0.1
            ref.param_groups[0]["lr"] = cfg["lr"] * 0.1
        if t == 40:
            opt.param_groups[0]["lr"] = 0.0
            ref.param_groups[0]["lr"] = 0.0
        if t == 40 + (name == "ASGD"):  # ASGD steps with the eta its previous step made from the lr then
            frozen = [p.copy() for p in params]
        grads = [g.astype(dtype) for g in grad_fn(ref.params, t)]
        opt.step(grads)
        ref.step(grads)
        if t == 25:
            for p, r in zip(params, ref.params):
                assert_close(p, r, RTOL[dtype])
    for p, r in zip(params, ref.params):
        assert_close(p, r, RTOL[dtype])
    # lr = 0 freezes the parameters (AdamW's decay factor 1 - lr * wd is 1 too)
    for p, f in zip(params, frozen):
        np.testing.assert_array_equal(p, f)


def test_lr_edit_takes_effect_on_model_parameters():
    model = _model("float64", seed=13)
    p0 = model.state_dict()
    opt = fm.optim.SGD(model.parameters(), lr=0.1)
    for p in model.parameters():
        p.grad[...] = 1.0
    opt.step()
    opt.param_groups[0]["lr"] = 0.25
    opt.step()
    for k, v in model.state_dict().items():
        np.testing.assert_allclose(v, p0[k] - 0.35, rtol=0, atol=1e-15)


@pytest.mark.parametrize("name", ["SGD", "RMSprop", "Adam", "AdamW", "Adagrad", "Adadelta", "NAdam", "RAdam",
                                  "Adamax", "ASGD"])
def test_other_hyperparameter_edits_take_effect(name):
    edits = {"SGD": {"momentum": 0.3, "weight_decay": 0.2, "dampening": 0.5},
             "RMSprop": {"alpha": 0.7, "momentum": 0.2, "eps": 1e-3},
             "Adam": {"betas": (0.5, 0.8), "weight_decay": 0.2, "eps": 1e-3},
             "AdamW": {"betas": (0.5, 0.8), "weight_decay": 0.2},
             "Adagrad": {"lr_decay": 0.3, "eps": 1e-2},
             "Adadelta": {"rho": 0.5, "eps": 1e-3},
             "NAdam": {"momentum_decay": 0.2, "weight_decay": 0.1, "decoupled_weight_decay": True},
             "RAdam": {"betas": (0.5, 0.8), "weight_decay": 0.2, "decoupled_weight_decay": True},
             "Adamax": {"betas": (0.5, 0.8), "weight_decay": 0.2, "eps": 1e-3},
             "ASGD": {"lambd": 0.05, "alpha": 0.5, "t0": 25.0, "weight_decay": 0.2}}[name]
    start = {"SGD": {"momentum": 0.9}, "RMSprop": {"momentum": 0.9}}.get(name, {})
    params = _initial(SHAPES, "float64", seed=14)
    ref = RefOptimizer(name, params, **start)
    opt = _opt_class(name)(params, **start)
    grad_fn = pseudo_gradients(SHAPES, 40, seed=15)
    for t in range(40):
        if t == 20:
            opt.param_groups[0].update(edits)
            ref.param_groups[0].update(edits)
        grads = grad_fn(ref.params, t)
        opt.step(grads)
        ref.step(grads)
    for p, r in zip(params, ref.params):
        assert_close(p, r, 1e-10)


def test_defaults_are_torchs():
    x = np.zeros(2)
    for name, d in DEFAULTS.items():
        opt = _opt_class(name)([x])
        g = opt.param_groups[0]
        for k, v in d.items():
            assert g[k] == v, (name, k)
        assert opt.defaults["lr"] == d["lr"]


# --------------------------------------------------------------------------- step() API

def test_step_with_single_array_and_shapes():
    x = np.array([1.0, -2.0, 3.0])
    opt = fm.optim.SGD([x], lr=0.5)
    opt.step(np.array([1.0, 1.0, 1.0]))  # a lone gradient array for a lone parameter
    np.testing.assert_array_equal(x, [0.5, -2.5, 2.5])
    opt.step([[2.0, 0.0, -2.0]])          # lists are converted
    np.testing.assert_array_equal(x, [-0.5, -2.5, 3.5])
    with pytest.raises(ValueError, match="gradients"):
        opt.step([np.ones(3), np.ones(3)])
    with pytest.raises(ValueError, match="shape"):
        opt.step([np.ones(4)])
    with pytest.raises(ValueError, match="shape"):
        opt.step([np.ones((3, 1))])
    with pytest.raises(TypeError):
        opt.step([np.array(["a", "b", "c"])])
    np.testing.assert_array_equal(x, [-0.5, -2.5, 3.5])


def test_plain_arrays_need_grads():
    x = np.ones(3)
    opt = fm.optim.Adam([x])
    with pytest.raises(ValueError, match="grad"):
        opt.step()
    np.testing.assert_array_equal(x, np.ones(3))


def test_step_closure_is_called_and_returned():
    model = _model("float64", seed=16)
    opt = fm.optim.SGD(model.parameters(), lr=0.1)
    before = model.state_dict()
    x = np.ones((2, 3))

    def closure():
        opt.zero_grad()
        out = model(x)
        model.backward(out)
        return float(0.5 * (out ** 2).sum())

    loss = opt.step(closure)
    assert loss == pytest.approx(0.5 * float((_model("float64", seed=16)(x) ** 2).sum()), rel=1e-12)
    after = model.state_dict()
    assert any(not np.array_equal(before[k], after[k]) for k in before)


def test_step_updates_in_place_and_keeps_views():
    model = _model("float32", seed=17)
    w = model[0].weight
    view = w.data
    opt = fm.optim.SGD(model.parameters(), lr=1.0)
    w.grad[...] = 1.0
    old = view.copy()
    opt.step()
    np.testing.assert_array_equal(view, old - 1.0)
    np.testing.assert_array_equal(model.state_dict()["0.weight"], old - 1.0)


def test_non_contiguous_or_readonly_params_rejected():
    a = np.zeros((4, 4))[:, ::2]
    with pytest.raises(ValueError, match="contiguous"):
        fm.optim.SGD([a], lr=0.1)
    b = np.zeros(3)
    b.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        fm.optim.SGD([b], lr=0.1)
    with pytest.raises(TypeError):
        fm.optim.SGD([np.zeros(3, dtype=np.int64)], lr=0.1)
    with pytest.raises(TypeError, match="dtype"):
        fm.optim.SGD([np.zeros(3), np.zeros(3, dtype=np.float32)], lr=0.1)
    with pytest.raises(ValueError, match="empty"):
        fm.optim.SGD([], lr=0.1)
    x = np.zeros(3)
    with pytest.raises(ValueError, match="more than one"):
        fm.optim.SGD([{"params": [x]}, {"params": [x]}], lr=0.1)
    with pytest.raises(TypeError, match="unknown option"):
        fm.optim.SGD([{"params": [np.zeros(2)], "betas": (0.9, 0.9)}], lr=0.1)


# --------------------------------------------------------------------------- zero_grad

def test_zero_grad_zeroes_only_own_parameters():
    model = _model("float64", seed=18)
    x = np.random.default_rng(19).normal(size=(5, 3))
    out = model(x)
    model.backward(np.ones_like(out))
    grads = {n: p.grad.copy() for n, p in model.named_parameters()}
    assert all(np.abs(g).max() > 0 for g in grads.values())
    opt = fm.optim.SGD([model[2].weight, model[2].bias], lr=0.1)
    opt.zero_grad(set_to_none=False)
    for n, p in model.named_parameters():
        if n.startswith("2."):
            np.testing.assert_array_equal(p.grad, 0)
        else:
            np.testing.assert_array_equal(p.grad, grads[n])
    opt.zero_grad()  # torch's default: set_to_none
    for n, p in model.named_parameters():
        assert (p.grad is None) == n.startswith("2.")
    # a step after zero_grad (no new grads) with plain SGD leaves the parameters unchanged
    before = model.state_dict()
    opt.step()
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_backward_accumulates_until_zero_grad():
    model = _model("float64", seed=20)
    opt = fm.optim.SGD(model.parameters(), lr=0.1)
    x = np.random.default_rng(21).normal(size=(4, 3))
    out = model(x)
    model.backward(np.ones_like(out))
    g1 = [p.grad.copy() for p in model.parameters()]
    out = model(x)
    model.backward(np.ones_like(out))
    for p, g in zip(model.parameters(), g1):
        np.testing.assert_allclose(p.grad, 2 * g, rtol=1e-14, atol=1e-15)
    opt.zero_grad()
    out = model(x)
    model.backward(np.ones_like(out))
    for p, g in zip(model.parameters(), g1):
        np.testing.assert_allclose(p.grad, g, rtol=1e-14, atol=1e-15)


# --------------------------------------------------------------------------- state_dict

STATE_NAMES = {"SGD": ["momentum_buffer"], "Adagrad": ["sum"],
               "RMSprop": ["square_avg", "momentum_buffer", "grad_avg"], "Adadelta": ["square_avg", "acc_delta"],
               "Adam": ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"],
               "AdamW": ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"], "NAdam": ["exp_avg", "exp_avg_sq"],
               "RAdam": ["exp_avg", "exp_avg_sq"], "Adamax": ["exp_avg", "exp_inf"], "ASGD": ["ax"]}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_state_dict_round_trip_continues_exactly(name, dtype):
    cfg = CONFIGS[name][-1]
    params = _initial(SHAPES, dtype, seed=22)
    grad_fn = pseudo_gradients(SHAPES, STEPS, seed=23)
    ref = RefOptimizer(name, params, **cfg)
    opt = _opt_class(name)(params, **cfg)
    for t in range(30):
        grads = [g.astype(dtype) for g in grad_fn(ref.params, t)]
        opt.step(grads)
        ref.step(grads)
    sd = opt.state_dict()
    # the layout is torch's: {'state': {i: {'step', buffers}}, 'param_groups': [{..., 'params': [i...]}]}
    assert sorted(sd) == ["param_groups", "state"]
    assert sorted(sd["state"]) == [0, 1, 2]
    assert sd["param_groups"][0]["params"] == [0, 1, 2]
    assert sd["param_groups"][0]["lr"] == cfg["lr"]
    for i, shape in enumerate(SHAPES):
        st = sd["state"][i]
        assert float(st["step"]) == 30
        for k in STATE_NAMES[name]:
            assert st[k].shape == shape
            rs = ref.state[0][i]
            if k in rs:
                assert_close(st[k], rs[k], RTOL[dtype], k)
    # state_dict() holds copies
    sd_copy = copy.deepcopy(sd)
    for st in sd["state"].values():
        for k, v in st.items():
            if isinstance(v, np.ndarray):
                v[...] = 123.0
    sd = sd_copy
    # continue the original, remembering the gradients of the second half
    twin = [p.copy() for p in params]
    second_half = []
    for t in range(30, STEPS):
        grads = [g.astype(dtype) for g in grad_fn(ref.params, t)]
        second_half.append(grads)
        opt.step(grads)
        ref.step(grads)
    for p, r in zip(params, ref.params):
        assert_close(p, r, RTOL[dtype])
    # a fresh optimizer (other lr) on copies of the parameters at step 30, loaded from sd,
    # replays the second half bit for bit
    other = dict(cfg)
    other["lr"] = cfg["lr"] * 7
    opt2 = _opt_class(name)(twin, **other)
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["lr"] == cfg["lr"]
    for grads in second_half:
        opt2.step(grads)
    for p, q in zip(params, twin):
        np.testing.assert_array_equal(p, q)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_state_dict_round_trip_on_model(name):
    cfg = CONFIGS[name][-1]
    m1, m2 = _model("float64", seed=24), _model("float64", seed=24)
    o1 = _opt_class(name)(m1.parameters(), **cfg)
    rng = np.random.default_rng(25)
    xs = [rng.normal(size=(6, 3)) for _ in range(20)]

    def run(model, opt, x):
        opt.zero_grad()
        out = model(x)
        model.backward(out - 1.0)
        opt.step()

    for x in xs[:10]:
        run(m1, o1, x)
    m2.load_state_dict(m1.state_dict())
    o2 = _opt_class(name)(m2.parameters())
    o2.load_state_dict(o1.state_dict())
    for x in xs[10:]:
        run(m1, o1, x)
        run(m2, o2, x)
    for k, v in m1.state_dict().items():
        np.testing.assert_array_equal(m2.state_dict()[k], v)


def test_load_state_dict_rejects_mismatch_and_changes_nothing():
    x, y = np.ones(3), np.ones(2)
    opt = fm.optim.Adam([x, y], lr=0.1)
    opt.step([np.ones(3), np.ones(2)])
    good = opt.state_dict()
    other = fm.optim.Adam([{"params": [np.ones(3)]}, {"params": [np.ones(2)]}], lr=0.1)
    with pytest.raises(ValueError, match="parameter groups"):
        opt.load_state_dict(other.state_dict())
    short = fm.optim.Adam([np.ones(3)], lr=0.1).state_dict()
    with pytest.raises(ValueError, match="size"):
        opt.load_state_dict(short)
    bad = copy.deepcopy(good)
    bad["state"][1]["exp_avg"] = np.ones(5)
    bad["param_groups"][0]["lr"] = 0.5
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict(bad)
    bad = copy.deepcopy(good)
    bad["param_groups"][0]["lr"] = -1.0
    with pytest.raises(ValueError, match="learning rate|lr"):
        opt.load_state_dict(bad)
    after = opt.state_dict()
    assert after["param_groups"][0]["lr"] == 0.1
    for i in (0, 1):
        for k in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_array_equal(after["state"][i][k], good["state"][i][k])
        assert after["state"][i]["step"] == good["state"][i]["step"]


def test_state_property_gives_live_views():
    x = np.zeros(3)
    opt = fm.optim.SGD([x], lr=0.1, momentum=0.9)
    opt.step([np.array([1.0, 2.0, 3.0])])
    st = opt.state[id(x)]
    np.testing.assert_array_equal(st["momentum_buffer"], [1.0, 2.0, 3.0])
    model = _model("float64", seed=26)
    opt = fm.optim.Adam(model.parameters(), lr=0.1)
    for p in model.parameters():
        p.grad[...] = 2.0
    opt.step()
    st = opt.state[model[0].weight]
    assert st["step"] == 1
    np.testing.assert_allclose(st["exp_avg"], 0.2, rtol=1e-15)
    np.testing.assert_allclose(st["exp_avg_sq"], 0.004, rtol=1e-12)


# --------------------------------------------------------------------------- train_step

def _explicit_step(model, x, y, loss_fn, opt):
    opt.zero_grad()
    out = model(x)
    loss = loss_fn(out, y)
    model.backward(loss_fn.backward())
    opt.step()
    return loss


TRAIN_CASES = [("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.01)), ("SGD", dict(lr=0.05)),
               ("Adam", dict(lr=0.01)), ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
               ("AdamW", dict(lr=0.01)), ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5))]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("loss_name", ["mse", "ce"])
@pytest.mark.parametrize("name,cfg", TRAIN_CASES)
def test_train_step_equals_explicit_sequence(name, cfg, loss_name, dtype):
    def make():
        return fm.Sequential(fm.Linear(5, 8), fm.ReLU(), fm.Linear(8, 6), fm.Tanh(), fm.Linear(6, 3),
                             seed=27, dtype=dtype)

    m1, m2 = make(), make()
    o1 = _opt_class(name)(m1.parameters(), **cfg)
    o2 = _opt_class(name)(m2.parameters(), **cfg)
    rng = np.random.default_rng(28)
    loss_fn = fm.MSELoss() if loss_name == "mse" else fm.CrossEntropyLoss()
    tol = 1e-12 if dtype == "float64" else 1e-6
    losses = []
    for i in range(15):
        B = [1, 7, 16, 31, 8][i % 5]
        x = rng.normal(size=(B, 5)).astype(dtype)
        y = rng.normal(size=(B, 3)).astype(dtype) if loss_name == "mse" else rng.integers(0, 3, size=B)
        # stale gradients must not leak into train_step (it zeroes them first)
        for p in m1.parameters():
            p.grad[...] = 5.0
        l1 = m1.train_step(x, y, loss_fn, o1)
        l2 = _explicit_step(m2, x, y, loss_fn, o2)
        assert isinstance(l1, float)
        assert l1 == pytest.approx(l2, rel=tol, abs=tol)
        losses.append(l1)
        for k, v in m1.state_dict().items():
            np.testing.assert_allclose(v, m2.state_dict()[k], rtol=tol, atol=tol, err_msg=k)
        for p1, p2 in zip(m1.parameters(), m2.parameters()):
            np.testing.assert_allclose(p1.grad, p2.grad, rtol=tol, atol=tol)
    assert len(set(losses)) > 1


def test_train_step_keeps_eval_mode_and_matches_train_mode_sequence():
    m1 = fm.Sequential(fm.Linear(4, 5), fm.Sigmoid(), fm.Linear(5, 2), seed=29, dtype="float64")
    m2 = fm.Sequential(fm.Linear(4, 5), fm.Sigmoid(), fm.Linear(5, 2), seed=29, dtype="float64")
    m1.eval()
    o1, o2 = fm.optim.Adam(m1.parameters(), lr=0.01), fm.optim.Adam(m2.parameters(), lr=0.01)
    x = np.random.default_rng(30).normal(size=(9, 4))
    y = np.zeros((9, 2))
    loss_fn = fm.MSELoss()
    for _ in range(5):
        l1 = m1.train_step(x, y, loss_fn, o1)
        l2 = _explicit_step(m2, x, y, loss_fn, o2)
        assert l1 == pytest.approx(l2, rel=1e-13)
    assert m1.training is False
    for k, v in m1.state_dict().items():
        np.testing.assert_allclose(v, m2.state_dict()[k], rtol=1e-13, atol=1e-15)


def test_train_step_uses_scheduled_and_edited_lr():
    m1 = _model("float64", seed=31)
    m2 = _model("float64", seed=31)
    o1, o2 = fm.optim.SGD(m1.parameters(), lr=0.1), fm.optim.SGD(m2.parameters(), lr=0.1)
    x = np.random.default_rng(32).normal(size=(4, 3))
    y = np.zeros((4, 2))
    loss_fn = fm.MSELoss()
    for lr in (0.1, 0.5, 0.0, 0.02):
        o1.param_groups[0]["lr"] = lr
        o2.param_groups[0]["lr"] = lr
        m1.train_step(x, y, loss_fn, o1)
        _explicit_step(m2, x, y, loss_fn, o2)
    for k, v in m1.state_dict().items():
        np.testing.assert_allclose(v, m2.state_dict()[k], rtol=1e-13, atol=1e-15)


def test_train_step_rejects_optimizer_of_other_dtype_or_plain_arrays():
    m = _model("float64", seed=33)
    x, y = np.ones((2, 3)), np.ones((2, 2))
    before = m.state_dict()
    with pytest.raises(TypeError, match="float32|float64"):
        m.train_step(x, y, fm.MSELoss(), fm.optim.SGD(_model("float32").parameters(), lr=0.1))
    with pytest.raises(ValueError, match="optimizer"):
        m.train_step(x, y, fm.MSELoss(), fm.optim.SGD([np.zeros(3)], lr=0.1))
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


@pytest.mark.parametrize("dampening", [0.0, 0.5])
def test_sgd_state_dict_in_torch_layout_without_step(dampening):
    """torch's SGD state has only 'momentum_buffer' (no 'step'): loading it must keep
    the buffer, so the next step is buf = momentum buf + (1 - dampening) d, not buf = d."""
    rng = np.random.default_rng(34)
    x = rng.normal(size=4)
    buf = rng.normal(size=4)
    opt = fm.optim.SGD([x.copy()], lr=0.1, momentum=0.9, dampening=dampening)
    target = opt.param_groups[0]["params"][0]
    opt.load_state_dict({"state": {0: {"momentum_buffer": buf.copy()}},
                         "param_groups": [{"lr": 0.1, "momentum": 0.9, "dampening": dampening, "weight_decay": 0.0,
                                           "nesterov": False, "maximize": False, "params": [0]}]})
    ref = RefOptimizer("SGD", [x], lr=0.1, momentum=0.9, dampening=dampening)
    ref.state[0][0]["momentum_buffer"] = buf.copy()
    grad_fn = pseudo_gradients([(4,)], 5, seed=35)
    for t in range(5):
        g = grad_fn(ref.params, t)
        opt.step(g)
        ref.step(g)
    assert_close(target, ref.params[0], 1e-12)
    assert_close(opt.state[id(target)]["momentum_buffer"], ref.state[0][0]["momentum_buffer"], 1e-12)


def test_sgd_momentum_switched_on_later_starts_buffer_at_grad():
    """torch keeps no momentum buffer while momentum is 0; when momentum is switched on,
    the first momentum step sets buf = d (no dampening), as on a fresh optimizer."""
    x = np.random.default_rng(36).normal(size=5)
    opt = fm.optim.SGD([x], lr=0.1, momentum=0.0, dampening=0.5)
    ref = RefOptimizer("SGD", [x], lr=0.1, momentum=0.0, dampening=0.5)
    grad_fn = pseudo_gradients([(5,)], 20, seed=37)
    for t in range(20):
        if t == 10:
            opt.param_groups[0]["momentum"] = 0.9
            ref.param_groups[0]["momentum"] = 0.9
        g = grad_fn(ref.params, t)
        opt.step(g)
        ref.step(g)
    assert_close(x, ref.params[0], 1e-12)
