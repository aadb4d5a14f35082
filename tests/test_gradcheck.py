"""Whole-network backward in float64: against central finite differences of the
library's own forward + loss, and against the NumPy reference network."""
from __future__ import annotations

import numpy as np
import pytest

import fastmlp as fm
import reference as ref

H = 1e-6


def _layers(spec):
    """spec: list of (kind, args) -> (fastmlp layers, reference kinds)."""
    layers, kinds = [], []
    for kind, args in spec:
        if kind == "linear":
            layers.append(fm.Linear(*args))
            kinds.append("linear")
        elif kind == "leaky_relu":
            layers.append(fm.LeakyReLU(args))
            kinds.append(("leaky_relu", {"negative_slope": args}))
        else:
            layers.append({"relu": fm.ReLU, "sigmoid": fm.Sigmoid, "tanh": fm.Tanh, "gelu": fm.GELU,
                           "softmax": fm.Softmax, "identity": fm.Identity}[kind]())
            kinds.append(kind)
    return layers, kinds


def _targets(rng, loss_name, batch, n_out):
    if loss_name in ("mse", "l1", "huber"):
        return rng.normal(size=(batch, n_out))
    if loss_name == "bce":
        return rng.uniform(size=(batch, n_out))
    if loss_name == "ce_index":
        y = rng.integers(0, n_out, size=batch)
        if batch > 2:
            y[2] = -100
        return y
    if loss_name == "ce_prob":
        return rng.dirichlet(np.ones(n_out), size=batch)
    raise AssertionError(loss_name)


def _losses(loss_name, reduction, n_out, rng):
    """(fastmlp loss, reference loss function (out, t) -> (value, grad))."""
    if loss_name == "mse":
        return fm.MSELoss(reduction), lambda o, t: ref.mse_loss(o, t, reduction)
    if loss_name == "l1":
        return fm.L1Loss(reduction), lambda o, t: ref.l1_loss(o, t, reduction)
    if loss_name == "huber":
        return fm.HuberLoss(reduction, delta=0.7), lambda o, t: ref.huber_loss(o, t, reduction, 0.7)
    if loss_name == "bce":
        pw = rng.uniform(0.5, 2.0, size=n_out)
        return (fm.BCEWithLogitsLoss(reduction, pos_weight=pw),
                lambda o, t: ref.bce_with_logits(o, t, reduction, pw))
    if loss_name == "ce_index":
        w = rng.uniform(0.5, 2.0, size=n_out)
        return (fm.CrossEntropyLoss(weight=w, reduction=reduction, label_smoothing=0.1),
                lambda o, t: ref.cross_entropy_index(o, t, w, -100, reduction, 0.1))
    if loss_name == "ce_prob":
        return (fm.CrossEntropyLoss(reduction=reduction, label_smoothing=0.2),
                lambda o, t: ref.cross_entropy_prob(o, t, None, reduction, 0.2))
    raise AssertionError(loss_name)


NETS = {
    "tanh_mse": ([("linear", (4, 5)), ("tanh", None), ("linear", (5, 3))], "mse"),
    "sigmoid_gelu_ce": ([("linear", (5, 8)), ("sigmoid", None), ("linear", (8, 6)), ("gelu", None),
                         ("linear", (6, 4))], "ce_index"),
    "leaky_relu_bce": ([("linear", (3, 7)), ("leaky_relu", 0.1), ("linear", (7, 7)), ("relu", None),
                        ("linear", (7, 2))], "bce"),
    "softmax_hidden_huber": ([("linear", (6, 5)), ("softmax", None), ("linear", (5, 3))], "huber"),
    "softmax_out_l1": ([("linear", (4, 6)), ("gelu", None), ("linear", (6, 5)), ("softmax", None)], "l1"),
    "nobias_tanh_ceprob": ([("linear", (5, 4, False)), ("tanh", None), ("linear", (4, 4))], "ce_prob"),
    "identity_mse": ([("linear", (3, 3)), ("identity", None), ("linear", (3, 2))], "mse"),
    "deep_mix_ce": ([("linear", (4, 9)), ("gelu", None), ("linear", (9, 9)), ("leaky_relu", 0.01),
                     ("linear", (9, 9)), ("sigmoid", None), ("linear", (9, 9)), ("tanh", None),
                     ("linear", (9, 3))], "ce_index"),
}


def build(net_name, reduction, batch, seed=0):
    spec, loss_name = NETS[net_name]
    rng = np.random.default_rng(seed)
    layers, kinds = _layers(spec)
    model = fm.Sequential(*layers, seed=seed + 1, dtype="float64")
    # Move every parameter away from the default small init so the nonlinearities are exercised.
    sd = {k: rng.normal(0, 0.8, size=v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict(sd)
    n_in = spec[0][1][0]
    n_out = [a for k, a in spec if k == "linear"][-1][1]
    x = rng.normal(0, 1.5, size=(batch, n_in))
    t = _targets(rng, loss_name, batch, n_out)
    loss_fn, ref_loss = _losses(loss_name, reduction, n_out, rng)
    net = ref.RefSequential.from_state(kinds, model.state_dict())
    # no ReLU/LeakyReLU/L1 kink may sit within the finite-difference step
    net(x)
    for (kind, _), h in zip(net.layers, net._inputs):
        if kind in ("relu", "leaky_relu"):
            assert np.abs(h).min() > 100 * H
    if loss_name == "l1":
        assert np.abs(net(x) - t).min() > 100 * H
    return model, loss_fn, ref_loss, net, x, t


def loss_value(model, loss_fn, x, t):
    return loss_fn(model(x), t)


def library_grads(model, loss_fn, x, t):
    model.zero_grad()
    out = model(x)
    L = loss_fn(out, t)
    dx = model.backward(loss_fn.backward())
    return L, dx, {n: p.grad.copy() for n, p in model.named_parameters()}


def assert_fd_close(g, fd, what):
    scale = max(float(np.abs(fd).max()), 1e-6)
    np.testing.assert_allclose(g, fd, rtol=1e-7, atol=1e-7 * scale, err_msg=what)


CASES = [(n, r, b) for n in NETS for r, b in [("mean", 7), ("sum", 1), ("mean", 33)]]


@pytest.mark.parametrize("net_name,reduction,batch", CASES, ids=[f"{n}-{r}-{b}" for n, r, b in CASES])
def test_network_vs_finite_differences(net_name, reduction, batch):
    model, loss_fn, _, _, x, t = build(net_name, reduction, batch)
    _, dx, grads = library_grads(model, loss_fn, x, t)
    for name, p in model.named_parameters():
        data = p.data
        assert data.dtype == np.float64 and data.flags.c_contiguous
        fd = ref.central_diff(lambda: loss_value(model, loss_fn, x, t), data, H)
        assert_fd_close(grads[name], fd, name)
    fdx = ref.central_diff(lambda: loss_value(model, loss_fn, x, t), x, H)
    assert_fd_close(dx, fdx, "dX")


@pytest.mark.parametrize("net_name,reduction,batch", CASES, ids=[f"{n}-{r}-{b}" for n, r, b in CASES])
def test_network_vs_reference(net_name, reduction, batch):
    model, loss_fn, ref_loss, net, x, t = build(net_name, reduction, batch)
    L, dx, grads = library_grads(model, loss_fn, x, t)
    out = net(x)
    np.testing.assert_allclose(model(x), out, rtol=1e-10, atol=1e-12)
    rL, rg = ref_loss(out, t)
    assert L == pytest.approx(rL, rel=1e-10)
    rdx, rgrads = net.backward(rg)
    assert set(rgrads) == set(grads)
    np.testing.assert_allclose(dx, rdx, rtol=1e-10, atol=1e-12 * max(1.0, np.abs(rdx).max()))
    for name, g in grads.items():
        np.testing.assert_allclose(g, rgrads[name], rtol=1e-10, atol=1e-12 * max(1.0, np.abs(rgrads[name]).max()),
                                   err_msg=name)


def test_float32_network_vs_reference():
    """The same check in float32 against the float64 reference (relative 1e-4 through a 5-layer net)."""
    model64, loss_fn, ref_loss, net, x, t = build("sigmoid_gelu_ce", "mean", 33)
    spec, _ = NETS["sigmoid_gelu_ce"]
    layers, kinds = _layers(spec)
    model = fm.Sequential(*layers, seed=0, dtype="float32")
    model.load_state_dict(model64.state_dict())
    net = ref.RefSequential.from_state(kinds, model.state_dict())
    x32 = x.astype(np.float32)
    out = model(x32)
    rout = net(x32)
    np.testing.assert_allclose(out, rout, rtol=1e-5, atol=1e-5)
    L = loss_fn(out, t)
    rL, rg = ref_loss(rout, t)
    assert L == pytest.approx(rL, rel=1e-5)
    model.zero_grad()
    dx = model.backward(loss_fn.backward())
    rdx, rgrads = net.backward(rg)
    np.testing.assert_allclose(dx, rdx, rtol=1e-4, atol=1e-5 * np.abs(rdx).max())
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, rgrads[name], rtol=1e-4, atol=1e-5 * np.abs(rgrads[name]).max(),
                                   err_msg=name)


def test_eval_dropout_network_gradient_is_dropout_free():
    """Dropout in eval mode is the identity, also for the backward."""
    layers = [fm.Linear(4, 6), fm.Tanh(), fm.Dropout(0.5), fm.Linear(6, 3)]
    model = fm.Sequential(*layers, seed=2, dtype="float64").eval()
    net = ref.RefSequential.from_state(["linear", "tanh", "identity", "linear"], model.state_dict())
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 4))
    t = rng.normal(size=(5, 3))
    mse = fm.MSELoss()
    L, dx, grads = library_grads(model, mse, x, t)
    rL, rg = ref.mse_loss(net(x), t)
    assert L == pytest.approx(rL, rel=1e-10)
    rdx, rgrads = net.backward(rg)
    np.testing.assert_allclose(dx, rdx, rtol=1e-10, atol=1e-13)
    for name, g in grads.items():
        np.testing.assert_allclose(g, rgrads[name], rtol=1e-10, atol=1e-13)
