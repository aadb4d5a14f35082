"""Layers, losses, init gains and state_dict exchange against PyTorch (skipped without torch)."""
from __future__ import annotations

import math

import numpy as np
import pytest

import fastmlp as fm

torch = pytest.importorskip("torch")
F = torch.nn.functional

DTYPES = ["float64", "float32"]
TORCH_DTYPE = {"float64": torch.float64, "float32": torch.float32}


def tol(dtype):
    return dict(rtol=1e-10, atol=1e-12) if dtype == "float64" else dict(rtol=1e-5, atol=1e-6)


def t_(a, dtype, grad=False):
    return torch.tensor(np.asarray(a), dtype=TORCH_DTYPE[dtype], requires_grad=grad)


ACTS = [
    ("relu", fm.ReLU, torch.nn.ReLU, {}),
    ("leaky_relu", fm.LeakyReLU, torch.nn.LeakyReLU, {}),
    ("leaky_relu_0.2", lambda: fm.LeakyReLU(0.2), lambda: torch.nn.LeakyReLU(0.2), {}),
    ("sigmoid", fm.Sigmoid, torch.nn.Sigmoid, {}),
    ("tanh", fm.Tanh, torch.nn.Tanh, {}),
    ("gelu", fm.GELU, torch.nn.GELU, {}),
    ("softmax", fm.Softmax, lambda: torch.nn.Softmax(dim=-1), {}),
    ("identity", fm.Identity, torch.nn.Identity, {}),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,width", [(1, 1), (7, 3), (33, 17), (32, 16)])
@pytest.mark.parametrize("act", ACTS, ids=[a[0] for a in ACTS])
def test_activation_matches_torch(act, batch, width, dtype):
    _, fm_layer, torch_layer, _ = act
    rng = np.random.default_rng(batch + width)
    x = (rng.normal(0, 3, size=(batch, width))).astype(dtype)
    x.flat[::4] = 0.0
    if x.size > 6:
        x.flat[1:7] = [1000.0, -1000.0, 80.0, -80.0, 20.0, -20.0]
    dy = rng.normal(size=(batch, width)).astype(dtype)
    model = fm.Sequential(fm_layer(), dtype=dtype)
    out = model(x)
    dx = model.backward(dy)
    tx = t_(x, dtype, grad=True)
    tout = torch_layer()(tx)
    tout.backward(t_(dy, dtype))
    np.testing.assert_allclose(out, tout.detach().numpy(), **tol(dtype))
    np.testing.assert_allclose(dx, tx.grad.numpy(), **tol(dtype))


# ---------------------------------------------------------------- losses

def torch_loss_and_grad(fn, x, dtype):
    tx = t_(x, dtype, grad=True)
    L = fn(tx)
    L.backward()
    return float(L.detach()), tx.grad.numpy()


def compare_loss(fm_loss, torch_fn, x, t, dtype):
    v = fm_loss(x, t)
    g = fm_loss.backward()
    tv, tg = torch_loss_and_grad(torch_fn, x, dtype)
    r = tol(dtype)
    assert v == pytest.approx(tv, rel=r["rtol"], abs=r["atol"])
    np.testing.assert_allclose(g, tg, rtol=r["rtol"], atol=r["atol"] * max(1.0, float(np.abs(tg).max())))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (33, 17), (11,)])
def test_regression_losses_match_torch(shape, reduction, dtype):
    rng = np.random.default_rng(len(shape) * 10 + shape[0])
    x = rng.normal(0, 2, size=shape).astype(dtype)
    t = rng.normal(0, 2, size=shape).astype(dtype)
    tt = t_(t, dtype)
    compare_loss(fm.MSELoss(reduction), lambda a: F.mse_loss(a, tt, reduction=reduction), x, t, dtype)
    compare_loss(fm.L1Loss(reduction), lambda a: F.l1_loss(a, tt, reduction=reduction), x, t, dtype)
    for delta in (1.0, 0.3, 2.5):
        compare_loss(fm.HuberLoss(reduction, delta=delta),
                     lambda a: F.huber_loss(a, tt, reduction=reduction, delta=delta), x, t, dtype)


CE_INDEX = [
    dict(),
    dict(weight=True),
    dict(label_smoothing=0.15),
    dict(weight=True, label_smoothing=0.3),
    dict(ignore_index=-100),
    dict(ignore_index=1, weight=True, label_smoothing=0.1),
    dict(label_smoothing=1.0),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("batch,C", [(1, 3), (7, 2), (33, 17), (32, 5)])
@pytest.mark.parametrize("cfg", CE_INDEX, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()) or "plain")
def test_cross_entropy_index_matches_torch(cfg, batch, C, reduction, dtype):
    rng = np.random.default_rng(batch * 3 + C)
    x = rng.normal(0, 3, size=(batch, C)).astype(dtype)
    if batch > 3:
        x[3, :2] = [1000.0, -1000.0]
    y = rng.integers(0, C, size=batch)
    kw = {k: v for k, v in cfg.items() if k != "weight"}
    if "ignore_index" in cfg and batch > 1:
        y[::3] = cfg["ignore_index"]
        y[1] = 0
    if (y == cfg.get("ignore_index", -100)).all():
        y[0] = 0  # 'mean' over no sample is 0/0
    w = rng.uniform(0.3, 3.0, size=C) if cfg.get("weight") else None
    tw = None if w is None else t_(w, dtype)
    ty = torch.tensor(y)
    compare_loss(fm.CrossEntropyLoss(weight=w, reduction=reduction, **kw),
                 lambda a: F.cross_entropy(a, ty, weight=tw, reduction=reduction, **kw), x, y, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_prob_matches_torch(weighted, smoothing, reduction, dtype):
    rng = np.random.default_rng(17)
    x = rng.normal(0, 3, size=(9, 5)).astype(dtype)
    x[0, :2] = [1000.0, -1000.0]
    t = rng.dirichlet(np.ones(5), size=9).astype(dtype)
    w = rng.uniform(0.3, 3.0, size=5) if weighted else None
    tw = None if w is None else t_(w, dtype)
    tt = t_(t, dtype)
    compare_loss(fm.CrossEntropyLoss(weight=w, reduction=reduction, label_smoothing=smoothing),
                 lambda a: F.cross_entropy(a, tt, weight=tw, reduction=reduction, label_smoothing=smoothing),
                 x, t, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_1d_matches_torch(dtype):
    x = np.array([0.3, -2.0, 1.5], dtype=dtype)
    compare_loss(fm.CrossEntropyLoss(label_smoothing=0.1),
                 lambda a: F.cross_entropy(a, torch.tensor(2), label_smoothing=0.1), x, 2, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("pos_weight", [False, True])
@pytest.mark.parametrize("batch,width", [(1, 1), (7, 3), (33, 17)])
def test_bce_with_logits_matches_torch(batch, width, pos_weight, reduction, dtype):
    rng = np.random.default_rng(batch + 100 * width)
    x = rng.normal(0, 3, size=(batch, width)).astype(dtype)
    if x.size > 4:
        x.flat[:4] = [1000.0, -1000.0, 80.0, -80.0]
    t = rng.uniform(size=(batch, width)).astype(dtype)
    t[::2] = np.round(t[::2])
    pw = rng.uniform(0.3, 4.0, size=width) if pos_weight else None
    tpw = None if pw is None else t_(pw, dtype)
    tt = t_(t, dtype)
    compare_loss(fm.BCEWithLogitsLoss(reduction, pos_weight=pw),
                 lambda a: F.binary_cross_entropy_with_logits(a, tt, reduction=reduction, pos_weight=tpw),
                 x, t, dtype)


# ---------------------------------------------------------------- init gains

@pytest.mark.parametrize("nl,param", [("linear", None), ("sigmoid", None), ("tanh", None), ("relu", None),
                                      ("leaky_relu", None), ("leaky_relu", 0.2), ("leaky_relu", 0.0),
                                      ("selu", None), ("conv2d", None)])
def test_calculate_gain_matches_torch(nl, param):
    assert fm.init.calculate_gain(nl, param) == pytest.approx(torch.nn.init.calculate_gain(nl, param), rel=1e-15)


def test_linear_default_init_bound_matches_torch():
    """torch.nn.Linear's kaiming_uniform_(a=sqrt(5)) weight bound equals 1/sqrt(in)."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(400, 300)
    bound = 1 / math.sqrt(400)
    m = fm.Sequential(fm.Linear(400, 300), seed=0)
    for tp, fp in ((lin.weight, m[0].weight), (lin.bias, m[0].bias)):
        tw = tp.detach().numpy()
        assert np.abs(tw).max() <= bound and np.abs(fp.data).max() <= bound
        n = tw.size
        # same distribution: the stds agree within sampling error
        assert abs(tw.std() - fp.data.std()) < 8 * (bound / math.sqrt(3)) * math.sqrt(0.8 / (4 * n)) * math.sqrt(2)


# ---------------------------------------------------------------- state_dict exchange

def torch_net(dtype):
    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Linear(7, 16), torch.nn.Tanh(), torch.nn.Linear(16, 9), torch.nn.GELU(),
                              torch.nn.Linear(9, 9, bias=False), torch.nn.LeakyReLU(0.1), torch.nn.Linear(9, 4),
                              torch.nn.Sigmoid(), torch.nn.Linear(4, 3), torch.nn.Softmax(dim=-1))
    return net.to(TORCH_DTYPE[dtype])


def fm_net(dtype, seed=11):
    return fm.Sequential(fm.Linear(7, 16), fm.Tanh(), fm.Linear(16, 9), fm.GELU(), fm.Linear(9, 9, bias=False),
                         fm.LeakyReLU(0.1), fm.Linear(9, 4), fm.Sigmoid(), fm.Linear(4, 3), fm.Softmax(),
                         seed=seed, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_state_dict_into_fastmlp(dtype):
    net = torch_net(dtype)
    model = fm_net(dtype)
    sd = net.state_dict()
    assert list(sd.keys()) == list(model.state_dict().keys())
    model.load_state_dict({k: v.detach().numpy() for k, v in sd.items()})
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, sd[k].numpy())
    # torch tensors are accepted directly too
    model2 = fm_net(dtype, seed=12)
    model2.load_state_dict(sd)
    x = np.random.default_rng(0).normal(size=(33, 7)).astype(dtype)
    out = model(x)
    np.testing.assert_array_equal(out, model2(x))
    tx = t_(x, dtype, grad=True)
    tout = net(tx)
    np.testing.assert_allclose(out, tout.detach().numpy(), **tol(dtype))
    # and the same gradients for the same loss
    y = np.random.default_rng(1).integers(0, 3, size=33)
    ce = fm.CrossEntropyLoss()
    ce(out, y)
    model.zero_grad()
    dx = model.backward(ce.backward())
    F.cross_entropy(tout, torch.tensor(y)).backward()
    r = dict(rtol=1e-9, atol=1e-12) if dtype == "float64" else dict(rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(dx, tx.grad.numpy(), **r)
    tparams = dict(net.named_parameters())
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, tparams[name].grad.numpy(), err_msg=name, **r)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fastmlp_state_dict_into_torch(dtype):
    model = fm_net(dtype, seed=5)
    net = torch_net(dtype)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), model.state_dict()[k])
    x = np.random.default_rng(2).normal(size=(1, 7)).astype(dtype)
    with torch.no_grad():
        tout = net(t_(x, dtype)).numpy()
    np.testing.assert_allclose(model(x), tout, **tol(dtype))
    x1 = x[0]
    np.testing.assert_allclose(model(x1), tout[0], **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_with_logits_1d_pos_weight_matches_torch(dtype):
    x = np.array([1.0, -2.0, 3.0, 0.5], dtype=dtype)
    t = np.array([1.0, 0.0, 1.0, 0.0], dtype=dtype)
    pw = np.array([2.0, 3.0, 4.0, 5.0])
    tt, tpw = t_(t, dtype), t_(pw, dtype)
    compare_loss(fm.BCEWithLogitsLoss(pos_weight=pw),
                 lambda a: F.binary_cross_entropy_with_logits(a, tt, pos_weight=tpw), x, t, dtype)
