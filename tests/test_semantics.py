"""PyTorch/Keras semantics that used to give silently wrong results: optimizer
state loading and hyperparameter types, zero_grad(set_to_none), in-place
Parameter arithmetic, backward bookkeeping, shared layers, ignore_index,
empty data, EarlyStopping, Ctrl-C with restore_best_weights, masked arrays."""
import copy

import numpy as np
import pytest

import fastmlp as fm


def data(n=120, d=5, k=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = rng.integers(0, k, size=n)
    return X, y


def net(seed=1, d=5, k=3, dtype="float64"):
    return fm.Sequential(fm.Linear(d, 8), fm.Tanh(), fm.Linear(8, k), seed=seed, dtype=dtype)


def weights(m):
    return np.concatenate([p.data.ravel() for p in m.parameters()])


def one_step(m, opt, X, y, loss=None):
    loss = loss or fm.CrossEntropyLoss()
    opt.zero_grad()
    loss(m(X), y)
    m.backward(loss.backward())
    opt.step()


def opt_snapshot(opt):
    return (copy.deepcopy([{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]),
            [np.array(opt._core.state(i)) for i in range(len(opt.param_groups))],
            [opt._core.get_step(i) for i in range(len(opt.param_groups))])


def assert_opt_unchanged(opt, snap):
    groups, states, steps = opt_snapshot(opt)
    assert groups == snap[0]
    for a, b in zip(states, snap[1]):
        np.testing.assert_array_equal(a, b)
    assert steps == snap[2]


# --------------------------------------------------------------------------- Optimizer.load_state_dict

def _adam_after_steps(n=3):
    X, y = data()
    m = net()
    opt = fm.optim.Adam(m.parameters(), lr=0.01)
    for _ in range(n):
        one_step(m, opt, X, y)
    return m, opt


def _bad_state_dicts():
    _, opt = _adam_after_steps()
    good = opt.state_dict()

    def edited(fn):
        sd = copy.deepcopy(good)
        fn(sd)
        return sd

    sgd_model = net()
    sgd = fm.optim.SGD(sgd_model.parameters(), lr=0.1, momentum=0.9)
    one_step(sgd_model, sgd, *data())
    return {
        "another optimizer": (sgd.state_dict(), "another optimizer"),
        "unknown option": (edited(lambda sd: sd["param_groups"][0].update(foo=1.0)), "foo"),
        "negative step": (edited(lambda sd: sd["state"][0].update(step=-1.0)), "step"),
        "huge step": (edited(lambda sd: (sd["param_groups"][0].update(lr=0.5), sd["state"][0].update(step=1e19))),
                      "step"),
        "fractional step": (edited(lambda sd: sd["state"][1].update(step=2.5)), "step"),
        "NaN exp_avg": (edited(lambda sd: sd["state"][0]["exp_avg"].__setitem__((0, 0), np.nan)), "NaN"),
        "negative exp_avg_sq": (edited(lambda sd: sd["state"][1]["exp_avg_sq"].__setitem__(0, -1.0)), "negative"),
        "wrong shape": (edited(lambda sd: sd["state"][0].update(exp_avg=np.zeros(3))), "shape"),
        "unknown state": (edited(lambda sd: sd["state"][0].update(momentum_buffer=np.zeros((8, 5)))), "momentum_buffer"),
        "bool lr": (edited(lambda sd: sd["param_groups"][0].update(lr=True)), "lr"),
        "NaN lr": (edited(lambda sd: sd["param_groups"][0].update(lr=float("nan"))), "lr"),
        "string eps": (edited(lambda sd: sd["param_groups"][0].update(eps="1e-8")), "eps"),
        "steps differ": (edited(lambda sd: sd["state"][1].update(step=7.0)), "different steps"),
        "unknown parameter": (edited(lambda sd: sd["state"].update({9: {"step": 1.0}})), "unknown parameter"),
    }


@pytest.mark.parametrize("case", list(_bad_state_dicts()))
def test_load_state_dict_refuses_bad_input_and_changes_nothing(case, tmp_path):
    sd, match = _bad_state_dicts()[case]
    m, opt = _adam_after_steps()
    snap = opt_snapshot(opt)
    with pytest.raises((ValueError, TypeError), match=match):
        opt.load_state_dict(sd)
    assert_opt_unchanged(opt, snap)
    # the optimizer still steps to finite weights and saves a file that loads
    one_step(m, opt, *data())
    assert np.isfinite(weights(m)).all()
    m.save(tmp_path / "m.npz", optimizer=opt)
    _, opt2 = fm.load(tmp_path / "m.npz", optimizer=True)
    assert type(opt2) is fm.optim.Adam


def test_load_state_dict_round_trip_continues_identically():
    X, y = data()
    m, opt = _adam_after_steps()
    sd = opt.state_dict()
    m2 = copy.deepcopy(m)
    opt2 = fm.optim.Adam(m2.parameters(), lr=0.5)
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["lr"] == 0.01
    for _ in range(2):
        one_step(m, opt, X, y)
        one_step(m2, opt2, X, y)
    np.testing.assert_array_equal(weights(m), weights(m2))


def test_an_empty_state_resets_the_moments():
    X, y = data()
    m, opt = _adam_after_steps()
    start = m.state_dict()
    opt.load_state_dict({"state": {}, "param_groups": opt.state_dict()["param_groups"]})
    assert opt._core.get_step(0) == 0
    assert not np.array(opt._core.state(0)).any()
    fresh = net()
    fresh.load_state_dict(start)
    fresh_opt = fm.optim.Adam(fresh.parameters(), lr=0.01)
    one_step(m, opt, X, y)
    one_step(fresh, fresh_opt, X, y)
    np.testing.assert_array_equal(weights(m), weights(fresh))


def test_adagrad_empty_state_restarts_at_the_initial_accumulator():
    x = np.ones(4)
    opt = fm.optim.Adagrad([x], lr=0.1, initial_accumulator_value=0.25)
    opt.step([np.full(4, 3.0)])
    sd = opt.state_dict()
    sd["state"] = {}
    opt.load_state_dict(sd)
    np.testing.assert_array_equal(opt.state[id(x)]["sum"], 0.25)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta"])
def test_a_torch_state_dict_loads_and_continues_as_torch(name):
    torch = pytest.importorskip("torch")
    kw = {"SGD": dict(lr=0.1, momentum=0.9, weight_decay=0.01), "Adam": dict(lr=0.01, amsgrad=True),
          "AdamW": dict(lr=0.01), "RMSprop": dict(lr=0.01, momentum=0.5, centered=True),
          "Adagrad": dict(lr=0.1), "Adadelta": dict(lr=1.0)}[name]
    X, y = data()
    tm = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
    topt = getattr(torch.optim, name)(tm.parameters(), **kw)
    tx, ty = torch.tensor(X), torch.tensor(y)

    def tstep():
        topt.zero_grad()
        torch.nn.functional.cross_entropy(tm(tx), ty).backward()
        topt.step()

    for _ in range(3):
        tstep()
    m = net()
    m.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    opt = getattr(fm.optim, name)(m.parameters(), lr=0.123)
    opt.load_state_dict(topt.state_dict())  # tensors, torch-only options, step as a float tensor
    assert opt.param_groups[0]["lr"] == kw["lr"]
    for _ in range(3):
        tstep()
        one_step(m, opt, X, y)
    ref = np.concatenate([p.detach().numpy().ravel() for p in tm.parameters()])
    np.testing.assert_allclose(weights(m), ref, rtol=1e-10, atol=1e-12)


def test_decoupled_weight_decay_loads_into_adam_as_torch():
    # torch 2.x: Adam has decoupled_weight_decay, and AdamW's state_dict turns it on
    torch = pytest.importorskip("torch")
    tm = torch.nn.Linear(5, 3).double()
    topt = torch.optim.AdamW(tm.parameters())
    tadam = torch.optim.Adam(tm.parameters())
    tadam.load_state_dict(topt.state_dict())
    m = fm.Sequential(fm.Linear(5, 3), dtype="float64")
    opt = fm.optim.Adam(m.parameters())
    opt.load_state_dict(topt.state_dict())
    assert opt.param_groups[0]["decoupled_weight_decay"] is tadam.param_groups[0]["decoupled_weight_decay"] is True


# --------------------------------------------------------------------------- hyperparameter types

def test_numpy_hyperparameters_become_python_numbers_and_save(tmp_path):
    X, y = data()
    m = net()
    opt = fm.optim.Adam(m.parameters(), lr=np.float32(0.01), betas=np.array([0.9, 0.99]), eps=np.float64(1e-7),
                        amsgrad=np.bool_(True))
    g = opt.param_groups[0]
    assert type(g["lr"]) is float and type(g["eps"]) is float and type(g["amsgrad"]) is bool
    assert type(g["betas"]) is tuple and all(type(b) is float for b in g["betas"])
    assert g["lr"] == float(np.float32(0.01))
    one_step(m, opt, X, y)
    opt.param_groups[0]["weight_decay"] = np.float32(0.5)  # an edit, seen at the next step or save
    m.save(tmp_path / "m.npz", optimizer=opt)
    assert type(opt.param_groups[0]["weight_decay"]) is float
    _, opt2 = fm.load(tmp_path / "m.npz", optimizer=True)
    assert opt2.param_groups[0]["weight_decay"] == 0.5 and opt2.param_groups[0]["lr"] == g["lr"]
    sd = opt.state_dict()
    sd["param_groups"][0]["lr"] = np.float16(0.5)
    opt.load_state_dict(sd)
    assert type(opt.param_groups[0]["lr"]) is float and opt.param_groups[0]["lr"] == 0.5


@pytest.mark.parametrize("bad, err", [(True, TypeError), ("0.1", TypeError), (float("nan"), ValueError),
                                      (np.array([0.1]), TypeError), (None, TypeError), (1 + 2j, TypeError)])
def test_non_numbers_are_refused_as_hyperparameters(bad, err):
    x = np.zeros(3)
    with pytest.raises(err, match="lr"):
        fm.optim.SGD([x], lr=bad)
    with pytest.raises(err, match="lr"):
        fm.optim.SGD([{"params": [x], "lr": bad}], lr=0.1)
    opt = fm.optim.SGD([x], lr=0.1)
    opt.param_groups[0]["lr"] = bad
    with pytest.raises(err, match="lr"):
        opt.step([np.ones(3)])
    np.testing.assert_array_equal(x, 0)
    with pytest.raises(TypeError, match="nesterov"):
        fm.optim.SGD([x], lr=0.1, momentum=0.9, nesterov=1)


# --------------------------------------------------------------------------- zero_grad(set_to_none)

def _torch_pair(name, kw):
    torch = pytest.importorskip("torch")
    tm = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
    m = net()
    m.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    return torch, tm, getattr(torch.optim, name)(tm.parameters(), **kw), m, getattr(fm.optim, name)(m.parameters(), **kw)


@pytest.mark.parametrize("name, kw", [("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.1)),
                                      ("Adam", dict(lr=0.01, weight_decay=0.1)),
                                      ("AdamW", dict(lr=0.01, weight_decay=0.1))])
def test_zero_grad_set_to_none_skips_the_parameters_as_torch(name, kw):
    X, y = data()
    torch, tm, topt, m, opt = _torch_pair(name, kw)
    tx, ty = torch.tensor(X), torch.tensor(y)
    loss = fm.CrossEntropyLoss()
    # backward+step, then steps with no backward since zero_grad (torch skips them), then backward+step again
    for backward in [True, False, False, True, False, True]:
        topt.zero_grad()
        opt.zero_grad()
        assert all(p.grad is None for p in m.parameters())
        if backward:
            torch.nn.functional.cross_entropy(tm(tx), ty).backward()
            loss(m(X), y)
            m.backward(loss.backward())
            assert all(p.grad is not None for p in m.parameters())
        topt.step()
        opt.step()
        ref = np.concatenate([p.detach().numpy().ravel() for p in tm.parameters()])
        np.testing.assert_allclose(weights(m), ref, rtol=1e-10, atol=1e-12)
    assert opt._core.get_step(0) == 3  # the skipped steps were not counted (Adam's bias correction)


def test_a_parameter_set_to_none_is_skipped_as_torch():
    # torch's way to freeze one parameter for a step: p.grad = None
    X, y = data()
    torch, tm, topt, m, opt = _torch_pair("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.1))
    tx, ty = torch.tensor(X), torch.tensor(y)
    loss = fm.CrossEntropyLoss()
    for t in range(4):
        topt.zero_grad()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(tm(tx), ty).backward()
        loss(m(X), y)
        m.backward(loss.backward())
        if t >= 1:
            tm[0].weight.grad = None
            m[0].weight.grad = None
            assert m[0].weight.grad is None and m[2].weight.grad is not None
        topt.step()
        opt.step()
        ref = np.concatenate([p.detach().numpy().ravel() for p in tm.parameters()])
        np.testing.assert_allclose(weights(m), ref, rtol=1e-10, atol=1e-12)


def test_zero_grad_defaults_and_set_to_false():
    m = net()
    X, y = data(n=4)
    out = m(X)
    m.backward(np.ones_like(out))
    m.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in m.parameters())
    m.zero_grad(set_to_none=True)
    assert all(p.grad is None for p in m.parameters())
    m.zero_grad(set_to_none=False)  # a None gradient stays None, as torch
    assert all(p.grad is None for p in m.parameters())
    # the next backward starts from zero, not from the old gradient
    out = m(X)
    m.backward(np.ones_like(out))
    g1 = [p.grad.copy() for p in m.parameters()]
    m.zero_grad()
    out = m(X)
    m.backward(np.ones_like(out))
    for p, g in zip(m.parameters(), g1):
        np.testing.assert_array_equal(p.grad, g)
    # a gradient can be assigned, as in torch
    m[0].bias.grad = np.ones(8)
    np.testing.assert_array_equal(m[0].bias.grad, 1)
    with pytest.raises(ValueError, match="shape"):
        m[0].bias.grad = np.ones(3)


def test_train_step_and_fit_leave_gradients_set():
    X, y = data()
    m = net()
    opt = fm.optim.SGD(m.parameters(), lr=0.1)
    opt.zero_grad()
    m.train_step(X, y, fm.CrossEntropyLoss(), opt)
    assert all(p.grad is not None for p in m.parameters())
    opt.zero_grad()
    m.fit(X, y, fm.CrossEntropyLoss(), opt, epochs=1, verbose=0)
    assert all(p.grad is not None for p in m.parameters())


# --------------------------------------------------------------------------- in-place Parameter arithmetic

def test_the_courses_sgd_loop_updates_the_model():
    X, y = data()
    m = net()
    loss = fm.CrossEntropyLoss()
    lr = 0.1
    w0 = [p.data.copy() for p in m.parameters()]
    loss(m(X), y)
    m.backward(loss.backward())
    grads = [p.grad.copy() for p in m.parameters()]
    for p in m.parameters():
        p -= lr * p.grad
        assert isinstance(p, fm.Parameter)
    for p, w, g in zip(m.parameters(), w0, grads):
        np.testing.assert_allclose(p.data, w - lr * g, rtol=1e-15)
    assert m[0].weight is list(m.parameters())[0]
    for op, ref in [("+=", np.add), ("*=", np.multiply), ("/=", np.divide), ("-=", np.subtract)]:
        p = m[2].bias
        before = p.data.copy()
        q = p
        exec(f"q {op} 2.0")
        assert q is p
        np.testing.assert_array_equal(m[2].bias.data, ref(before, 2.0))
    before = m[2].weight.data.copy()
    m[2].weight.data -= 0.5  # through .data
    np.testing.assert_array_equal(m[2].weight.data, before - 0.5)


def test_torch_style_in_place_methods():
    m = net()
    p = m[0].weight
    other = np.arange(40.0).reshape(8, 5)
    assert p.zero_() is p and not m.state_dict()["0.weight"].any()
    assert p.fill_(2.0) is p and (m.state_dict()["0.weight"] == 2).all()
    p.copy_(other)
    np.testing.assert_array_equal(m.state_dict()["0.weight"], other)
    p.add_(other, alpha=2)
    np.testing.assert_array_equal(m.state_dict()["0.weight"], 3 * other)
    p.sub_(other)
    np.testing.assert_array_equal(m.state_dict()["0.weight"], 2 * other)
    p.mul_(0.5).div_(2.0)
    np.testing.assert_array_equal(m.state_dict()["0.weight"], other / 2)
    assert np.shares_memory(p.detach(), p.data) and np.shares_memory(p.numpy(), p.data)
    assert not np.shares_memory(p.clone(), p.data) and p.requires_grad
    with pytest.raises(ValueError, match="shape"):
        p.copy_(np.zeros(3))
    # the gradient's zero_()
    out = m(np.ones((2, 5)))
    m.backward(np.ones_like(out))
    assert m[0].bias.grad.any()
    assert m[0].bias.grad.zero_() is not None and not m[0].bias.grad.any()
    # torch methods that do not exist name the NumPy way
    with pytest.raises(AttributeError, match=r"p\.grad\[\.\.\.\] = 0"):
        p.normal_()
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        p.nothing


# --------------------------------------------------------------------------- backward bookkeeping

def test_a_second_backward_of_the_same_forward_raises():
    m = net()
    X, _ = data(n=6)
    out = m(X)
    m.backward(np.ones_like(out))
    g = [p.grad.copy() for p in m.parameters()]
    with pytest.raises(RuntimeError, match="second time"):
        m.backward(np.ones_like(out))
    for p, gp in zip(m.parameters(), g):
        np.testing.assert_array_equal(p.grad, gp)  # not doubled
    out = m(X)
    m.backward(np.ones_like(out), retain_graph=True)
    m.backward(np.ones_like(out))
    for p, gp in zip(m.parameters(), g):
        np.testing.assert_allclose(p.grad, 3 * gp, rtol=1e-14)


def test_backward_checks_the_last_forwards_shape():
    m = net()
    X, y = data(n=6)
    m(X)
    m(X[:4])
    with pytest.raises(ValueError, match="shape"):
        m.backward(np.ones((6, 3)))  # the gradient of the first forward
    m.backward(np.ones((4, 3)))  # the last forward's is fine


def test_backward_after_train_step_raises():
    m = net()
    X, y = data(n=6)
    out = m(X)
    m.train_step(X, y, fm.CrossEntropyLoss(), fm.optim.SGD(m.parameters(), lr=0.1))
    with pytest.raises(RuntimeError, match="train_step"):
        m.backward(np.ones_like(out))


# --------------------------------------------------------------------------- layers in two models

def test_a_layer_cannot_be_in_two_models():
    m1 = net()
    w = m1.state_dict()
    with pytest.raises(ValueError, match="copy.deepcopy"):
        fm.Sequential(*m1)
    # m1 is untouched and its layers still point at its own buffers
    fm.init.zeros_(m1[0].weight)
    assert not m1.state_dict()["0.weight"].any()
    m1.load_state_dict(w)
    m2 = copy.deepcopy(m1)  # the way to an independent copy
    fm.init.zeros_(m2[0].weight)
    np.testing.assert_array_equal(m1.state_dict()["0.weight"], w["0.weight"])


def test_a_layer_cannot_appear_twice():
    lin = fm.Linear(4, 4)
    with pytest.raises(ValueError, match="appears twice"):
        fm.Sequential(lin, fm.ReLU(), lin)
    assert lin.weight is None
    relu = fm.ReLU()  # a layer without parameters may repeat, as in torch
    m = fm.Sequential(lin, relu, fm.Linear(4, 4), relu, seed=0)
    assert m(np.ones((1, 4))).shape == (1, 4)


# --------------------------------------------------------------------------- ignore_index and empty batches

def _ce_reference(out, y, ignore=-100):
    keep = y != ignore
    z = out[keep] - out[keep].max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -logp[np.arange(keep.sum()), y[keep]].mean(), (out[keep].argmax(axis=1) == y[keep]).mean()


def test_ignored_rows_are_not_scored_in_fit_evaluate_and_validation():
    X, y = data(n=200)
    y = y.copy()
    y[::2] = -100
    m = net()
    opt = fm.optim.SGD(m.parameters(), lr=0.0)  # lr 0: the model stays as it is, so the reference is exact
    ref_loss, ref_acc = _ce_reference(m.predict(X), y)
    h = m.fit(X, y, fm.CrossEntropyLoss(), opt, epochs=1, batch_size=1000, validation_data=(X, y), verbose=0)
    assert h.history["accuracy"][0] == pytest.approx(ref_acc, abs=1e-12)
    assert h.history["val_accuracy"][0] == pytest.approx(ref_acc, abs=1e-12)
    assert h.history["val_loss"][0] == pytest.approx(ref_loss, rel=1e-10)
    res = m.evaluate(X, y, fm.CrossEntropyLoss())
    assert res["accuracy"] == pytest.approx(ref_acc, abs=1e-12)
    assert res["loss"] == pytest.approx(ref_loss, rel=1e-10)
    # another ignore_index
    y7 = np.where(y == -100, 7, y)
    res = m.evaluate(X, y7, fm.CrossEntropyLoss(ignore_index=7))
    assert res["accuracy"] == pytest.approx(ref_acc, abs=1e-12)


@pytest.mark.parametrize("how", ["ignored labels", "zero class weights"])
@pytest.mark.parametrize("opt_name", ["SGD", "Adam"])
def test_a_batch_with_nothing_to_learn_is_skipped(how, opt_name):
    X, y = data(n=90)
    y = y.copy()
    if how == "ignored labels":
        y[30:60] = -100
        loss = fm.CrossEntropyLoss()
    else:
        y[30:60] = 2
        y[:30][y[:30] == 2] = 0
        y[60:][y[60:] == 2] = 1
        loss = fm.CrossEntropyLoss(weight=[1.0, 2.0, 0.0])
    keep = np.r_[0:30, 60:90]
    kw = dict(lr=0.1, momentum=0.9) if opt_name == "SGD" else dict(lr=0.01)
    m, m_ref = net(), net()
    opt = getattr(fm.optim, opt_name)(m.parameters(), **kw)
    opt_ref = getattr(fm.optim, opt_name)(m_ref.parameters(), **kw)
    m.fit(X, y, loss, opt, epochs=2, batch_size=30, shuffle=False, verbose=0)
    m_ref.fit(X[keep], y[keep], loss, opt_ref, epochs=2, batch_size=30, shuffle=False, verbose=0)
    np.testing.assert_array_equal(weights(m), weights(m_ref))
    # train_step on such a batch takes no step and returns torch's NaN loss
    before = weights(m)
    assert np.isnan(m.train_step(X[30:60], y[30:60], loss, opt))
    np.testing.assert_array_equal(weights(m), before)


def test_validation_data_is_checked_before_training():
    X, y = data()
    m = net()
    opt = fm.optim.Adam(m.parameters(), lr=0.01)
    before = weights(m)
    for bad in [(X[:5], np.array([0, 1, 2, 3, 0])), (X[:5, :4], y[:5]), (np.full((5, 5), np.nan), y[:5]),
                (X[:0], y[:0])]:
        with pytest.raises(ValueError):
            m.fit(X, y, fm.CrossEntropyLoss(), opt, epochs=1, validation_data=bad, verbose=0)
        np.testing.assert_array_equal(weights(m), before)
        assert m._core.epochs_done == 0


# --------------------------------------------------------------------------- empty data

def test_empty_data_is_refused_and_changes_nothing():
    X, y = data()
    m = net()
    opt = fm.optim.SGD(m.parameters(), lr=0.1)
    sched = fm.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0)
    before = weights(m)
    with pytest.raises(ValueError, match="0 samples"):
        m.fit(X[:0], y[:0], fm.CrossEntropyLoss(), opt, epochs=3, scheduler=sched, verbose=0)
    with pytest.raises(ValueError, match="0 samples"):
        m.train_step(X[:0], y[:0], fm.CrossEntropyLoss(), opt)
    with pytest.raises(ValueError, match="0 samples"):
        m.evaluate(X[:0], y[:0], fm.CrossEntropyLoss())
    np.testing.assert_array_equal(weights(m), before)
    assert m._core.epochs_done == 0 and opt.param_groups[0]["lr"] == 0.1
    assert m.predict(X[:0]).shape == (0, 3)  # predicting nothing is fine


# --------------------------------------------------------------------------- EarlyStopping (Keras)

def _epochs_run(values, **kw):
    """Epochs fit runs with EarlyStopping when the monitored value follows values."""
    X, y = data(n=10)
    m = net()
    es = fm.EarlyStopping(monitor="score", **kw)

    def score(epoch, logs):
        logs["score"] = values[epoch]

    h = m.fit(X, y, fm.CrossEntropyLoss(), fm.optim.SGD(m.parameters(), lr=0.0), epochs=len(values),
              callbacks=[score, es], verbose=0)
    return len(h.epoch), es


@pytest.mark.parametrize("patience, epochs", [(0, 2), (1, 2), (3, 4), (5, 6)])
def test_early_stopping_patience_is_keras(patience, epochs):
    # Keras's own example: a constant loss with patience 3 runs 4 epochs; epoch 0 never stops
    n, es = _epochs_run([1.0] * 10, patience=patience, mode="min")
    assert n == epochs and es.stopped_epoch == epochs - 1


def test_early_stopping_min_delta_mode_and_baseline_are_keras():
    # improvements smaller than min_delta do not count
    assert _epochs_run([1.0, 0.99, 0.98, 0.97, 0.96, 0.95], patience=2, min_delta=0.05, mode="min")[0] == 3
    assert _epochs_run([1.0, 0.9, 0.8, 0.7, 0.6, 0.5], patience=0, min_delta=0.05, mode="min")[0] == 6
    # mode max: a falling value is no improvement
    assert _epochs_run([0.5, 0.4, 0.3, 0.2, 0.1], patience=1, mode="max")[0] == 2
    # auto: names with 'acc' are maximised
    X, y = data(n=10)
    assert fm.EarlyStopping(monitor="val_accuracy").mode == "max"
    assert fm.EarlyStopping(monitor="val_loss").mode == "min"
    # a baseline not beaten: the wait is not restarted by the first epoch
    assert _epochs_run([1.0] * 6, patience=2, mode="min", baseline=0.5)[0] == 2
    # improving but above the baseline: the wait keeps growing, and the first epoch without
    # improvement stops (without the baseline, three more are waited for)
    assert _epochs_run([1.0, 0.9, 0.8, 0.8, 0.8, 0.8], patience=3, mode="min", baseline=0.5)[0] == 4
    assert _epochs_run([1.0, 0.9, 0.8, 0.8, 0.8, 0.8], patience=3, mode="min")[0] == 6
    # beating the baseline restarts the wait
    assert _epochs_run([0.4, 0.3, 0.2, 0.1, 0.05, 0.01], patience=1, mode="min", baseline=0.5)[0] == 6
    # start_from_epoch: epochs before it are not monitored
    assert _epochs_run([1.0] * 8, patience=1, mode="min", start_from_epoch=3)[0] == 5


def test_ctrl_c_keeps_the_last_step_even_with_restore_best_weights():
    X, y = data(n=2000)
    m = net()
    opt = fm.optim.Adam(m.parameters(), lr=1e-3)
    es = fm.EarlyStopping(monitor="score", patience=1000, restore_best_weights=True, mode="min")
    seen = {}

    def record(epoch, logs):  # the best epoch is the first; Ctrl-C comes in the third
        logs["score"] = float(epoch)
        seen[epoch] = weights(m)

    def interrupt(epoch, logs):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        m.fit(X, y, fm.CrossEntropyLoss(), opt, epochs=10, callbacks=[record, es, interrupt], verbose=0)
    assert es.best_epoch == 0
    np.testing.assert_array_equal(weights(m), seen[2])  # the last completed step, not the best epoch's weights
    one_step(m, opt, X, y)  # and the optimizer is consistent with it
    assert np.isfinite(weights(m)).all()


def test_restore_best_weights_at_a_normal_end():
    X, y = data(n=50)
    m = net()
    es = fm.EarlyStopping(monitor="score", patience=100, restore_best_weights=True, mode="min")
    seen = {}

    def score(epoch, logs):
        logs["score"] = [3.0, 1.0, 2.0, 2.5][epoch]
        seen[epoch] = weights(m)

    m.fit(X, y, fm.CrossEntropyLoss(), fm.optim.SGD(m.parameters(), lr=0.1), epochs=4,
          callbacks=[score, es], verbose=0)
    assert es.best_epoch == 1 and es.stopped_epoch is None
    np.testing.assert_array_equal(weights(m), seen[1])


# --------------------------------------------------------------------------- masked arrays, class weights

def test_masked_arrays_are_refused():
    X, y = data(n=20)
    Xm = np.ma.masked_array(X, mask=np.zeros_like(X, dtype=bool))
    Xm.mask[3, 2] = True
    ym = np.ma.masked_array(y, mask=np.arange(20) == 5)
    m = net()
    opt = fm.optim.SGD(m.parameters(), lr=0.1)
    before = weights(m)
    loss = fm.CrossEntropyLoss()
    calls = [lambda: m.fit(Xm, y, loss, opt, verbose=0), lambda: m.fit(X, ym, loss, opt, verbose=0),
             lambda: m.predict(Xm), lambda: m.evaluate(Xm, y, loss), lambda: m.evaluate(X, ym, loss),
             lambda: m.train_step(Xm, y, loss, opt), lambda: m.train_step(X, ym, loss, opt), lambda: m(Xm),
             lambda: fm.MSELoss()(np.zeros((20, 1)), np.ma.masked_array(np.zeros(20), mask=np.arange(20) == 1)),
             lambda: m.fit(X, y, loss, opt, validation_data=(Xm, y), verbose=0)]
    for call in calls:
        with pytest.raises(ValueError, match="masked"):
            call()
    np.testing.assert_array_equal(weights(m), before)
    # a masked array with nothing masked is just its data
    np.testing.assert_array_equal(m.predict(np.ma.masked_array(X)), m.predict(X))


@pytest.mark.parametrize("w, err", [([1.0, -0.5, 1.0], ValueError), ([1.0, np.nan, 1.0], ValueError),
                                    ([1.0, np.inf, 1.0], ValueError), (["a", "b", "c"], TypeError)])
def test_bad_class_weights_are_refused(w, err):
    with pytest.raises(err, match="weight"):
        fm.CrossEntropyLoss(weight=w)


def test_add_param_group_as_torch():
    torch = pytest.importorskip("torch")
    X, y = data()
    _, tm, _, m, _ = _torch_pair("Adam", {})
    topt = torch.optim.Adam(tm[0].parameters(), lr=0.01)
    opt = fm.optim.Adam([m[0].weight, m[0].bias], lr=0.01)
    tx, ty = torch.tensor(X), torch.tensor(y)
    loss = fm.CrossEntropyLoss()

    def steps(n):
        for _ in range(n):
            topt.zero_grad()
            opt.zero_grad()
            torch.nn.functional.cross_entropy(tm(tx), ty).backward()
            loss(m(X), y)
            m.backward(loss.backward())
            topt.step()
            opt.step()
        ref = np.concatenate([p.detach().numpy().ravel() for p in tm.parameters()])
        np.testing.assert_allclose(weights(m), ref, rtol=1e-10, atol=1e-12)

    steps(2)
    group0 = opt.param_groups[0]
    with pytest.raises(ValueError, match="more than one"):
        opt.add_param_group({"params": [m[0].weight]})
    with pytest.raises(ValueError, match="lr"):
        opt.add_param_group({"params": [m[2].weight], "lr": -1.0})
    assert len(opt.param_groups) == 1
    topt.add_param_group({"params": list(tm[2].parameters()), "lr": 0.05})
    opt.add_param_group({"params": [m[2].weight, m[2].bias], "lr": np.float64(0.05)})
    assert opt.param_groups[0] is group0 and type(opt.param_groups[1]["lr"]) is float
    assert opt.param_groups[1]["betas"] == (0.9, 0.999)
    steps(3)


@pytest.mark.parametrize("loss", [fm.CrossEntropyLoss(), fm.CrossEntropyLoss(weight=[1.0, 0.0, 1.0]),
                                  fm.CrossEntropyLoss(ignore_index=1, reduction="sum")])
def test_fit_refuses_data_with_nothing_to_learn(loss):
    X, _ = data(n=30)
    y = np.full(30, -100) if loss.weight is None and loss.ignore_index == -100 else np.ones(30, np.int64)
    m = net()
    before = weights(m)
    with pytest.raises(ValueError, match="nothing to learn"):
        m.fit(X, y, loss, fm.optim.SGD(m.parameters(), lr=0.1, weight_decay=0.1), verbose=0)
    np.testing.assert_array_equal(weights(m), before)
    assert m._core.epochs_done == 0
