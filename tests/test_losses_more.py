"""NLLLoss, BCELoss, SmoothL1Loss, KLDivLoss, GaussianNLLLoss,
MultiLabelSoftMarginLoss, BCEWithLogitsLoss(weight) and reduction='none' for
every loss: values against independent NumPy references, gradients against
float64 central finite differences, PyTorch parity (optional), fit, errors."""
from __future__ import annotations

import numpy as np
import pytest

import fastmlp as fm

RNG = np.random.default_rng(20261201)
B, C = 7, 5
W = RNG.uniform(0.5, 2.0, C)  # per-class / per-column weights


def close(actual, expected, dtype="float64"):
    rtol = 1e-10 if dtype == "float64" else 1e-5
    expected = np.asarray(expected, np.float64)
    atol = rtol * max(float(np.abs(expected).max()) if expected.size else 1.0, 1e-300)
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=rtol, atol=atol)


def log_softmax(x):
    m = x.max(axis=1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))


def log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


# ---- independent NumPy references: (per-sample losses in PyTorch's 'none' shape, reduce(values, reduction))
def elementwise_reduce(v, reduction):
    return {"none": v, "sum": v.sum(), "mean": v.mean(), "batchmean": v.sum() / v.shape[0]}[reduction]


def ref_nll(x, y, weight=None, ignore_index=-100):
    w = np.ones(x.shape[1]) if weight is None else weight
    keep = y != ignore_index
    yy = np.where(keep, y, 0)
    wy = np.where(keep, w[yy], 0.0)
    v = -wy * x[np.arange(len(y)), yy]

    def reduce(v, reduction):
        return {"none": v, "sum": v.sum(), "mean": v.sum() / wy.sum()}[reduction]
    return v, reduce


def ref_bce(p, t, weight=None):
    w = np.ones(p.shape[1]) if weight is None else weight
    with np.errstate(divide="ignore"):
        v = -w * (t * np.maximum(np.log(p), -100) + (1 - t) * np.maximum(np.log(1 - p), -100))
    return v, elementwise_reduce


def ref_bce_logits(x, t, weight=None, pos_weight=None):
    w = np.ones(x.shape[1]) if weight is None else weight
    pw = np.ones(x.shape[1]) if pos_weight is None else pos_weight
    return -w * (pw * t * log_sigmoid(x) + (1 - t) * log_sigmoid(-x)), elementwise_reduce


def ref_multilabel(x, t, weight=None):
    v, _ = ref_bce_logits(x, t, weight)
    return v.mean(axis=1), elementwise_reduce


def ref_smooth_l1(x, t, beta=1.0):
    d = np.abs(x - t)
    v = d if beta == 0 else np.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta)
    return v, elementwise_reduce


def ref_kl(x, t, log_target=False):
    if log_target:
        return np.exp(t) * (t - x), elementwise_reduce
    return np.where(t > 0, t * np.log(np.where(t > 0, t, 1.0)), 0.0) - t * x, elementwise_reduce


def ref_gaussian(out, t, full=False, eps=1e-6):
    D = out.shape[1] // 2
    m, var = out[:, :D], np.maximum(out[:, D:], eps)
    v = 0.5 * (np.log(var) + (m - t) ** 2 / var) + (0.5 * np.log(2 * np.pi) if full else 0.0)
    return v, elementwise_reduce


def ref_mse(x, t):
    return (x - t) ** 2, elementwise_reduce


def ref_l1(x, t):
    return np.abs(x - t), elementwise_reduce


def ref_huber(x, t, delta=1.0):
    d = np.abs(x - t)
    return np.where(d < delta, 0.5 * d * d, delta * (d - 0.5 * delta)), elementwise_reduce


def ref_ce(x, y, weight=None, ignore_index=-100):
    return ref_nll(log_softmax(x), y, weight, ignore_index)


def ref_poisson(x, t):
    return np.exp(x) - t * x, elementwise_reduce


def labels(n=B, c=C, ignore=True):
    y = RNG.integers(0, c, n)
    if ignore and n > 2:
        y[1] = -100
    return y


def probs(shape):
    p = RNG.uniform(0.05, 1.0, shape)
    return p / p.sum(axis=1, keepdims=True)


# name -> (make loss(reduction), input, target, reference(input, target))
def cases():
    x = RNG.normal(size=(B, C)) * 2
    t01 = RNG.uniform(size=(B, C))
    y = labels()
    lp = log_softmax(x)
    gauss_in = np.hstack([x[:, :2], RNG.uniform(0.2, 2.0, (B, 2))])
    return {
        "nll": (lambda r: fm.NLLLoss(reduction=r), lp, y, lambda a, b: ref_nll(a, b)),
        "nll_weight": (lambda r: fm.NLLLoss(weight=W, reduction=r), lp, y, lambda a, b: ref_nll(a, b, W)),
        "nll_ignore_3": (lambda r: fm.NLLLoss(weight=W, ignore_index=3, reduction=r), lp, np.where(y < 0, 3, y),
                         lambda a, b: ref_nll(a, b, W, 3)),
        "bce": (lambda r: fm.BCELoss(reduction=r), 1 / (1 + np.exp(-x)), t01, lambda a, b: ref_bce(a, b)),
        "bce_weight": (lambda r: fm.BCELoss(weight=W, reduction=r), 1 / (1 + np.exp(-x)), t01,
                       lambda a, b: ref_bce(a, b, W)),
        "bce_logits_weight": (lambda r: fm.BCEWithLogitsLoss(weight=W, pos_weight=W[::-1].copy(), reduction=r), x,
                              t01, lambda a, b: ref_bce_logits(a, b, W, W[::-1])),
        "multilabel": (lambda r: fm.MultiLabelSoftMarginLoss(reduction=r), x, (t01 > 0.5) * 1.0,
                       lambda a, b: ref_multilabel(a, b)),
        "multilabel_weight": (lambda r: fm.MultiLabelSoftMarginLoss(weight=W, reduction=r), x, (t01 > 0.5) * 1.0,
                              lambda a, b: ref_multilabel(a, b, W)),
        "smooth_l1": (lambda r: fm.SmoothL1Loss(reduction=r), x, t01, lambda a, b: ref_smooth_l1(a, b)),
        "smooth_l1_beta": (lambda r: fm.SmoothL1Loss(reduction=r, beta=0.3), x, t01,
                           lambda a, b: ref_smooth_l1(a, b, 0.3)),
        "smooth_l1_beta0": (lambda r: fm.SmoothL1Loss(reduction=r, beta=0.0), x, t01,
                            lambda a, b: ref_smooth_l1(a, b, 0.0)),
        "kl": (lambda r: fm.KLDivLoss(reduction=r), lp, probs((B, C)), lambda a, b: ref_kl(a, b)),
        "kl_log_target": (lambda r: fm.KLDivLoss(reduction=r, log_target=True), lp, log_softmax(-x),
                          lambda a, b: ref_kl(a, b, True)),
        "gaussian": (lambda r: fm.GaussianNLLLoss(reduction=r), gauss_in, t01[:, :2],
                     lambda a, b: ref_gaussian(a, b)),
        "gaussian_full": (lambda r: fm.GaussianNLLLoss(full=True, eps=0.1, reduction=r), gauss_in, t01[:, :2],
                          lambda a, b: ref_gaussian(a, b, True, 0.1)),
        "mse": (lambda r: fm.MSELoss(reduction=r), x, t01, ref_mse),
        "l1": (lambda r: fm.L1Loss(reduction=r), x, t01, ref_l1),
        "huber": (lambda r: fm.HuberLoss(reduction=r, delta=0.7), x, t01, lambda a, b: ref_huber(a, b, 0.7)),
        "cross_entropy": (lambda r: fm.CrossEntropyLoss(weight=W, reduction=r), x, y, lambda a, b: ref_ce(a, b, W)),
        "bce_logits": (lambda r: fm.BCEWithLogitsLoss(reduction=r), x, t01, lambda a, b: ref_bce_logits(a, b)),
        "poisson": (lambda r: fm.PoissonNLLLoss(reduction=r), x, t01, ref_poisson),
    }


CASES = cases()
KL_CASES = ("kl", "kl_log_target")


def reductions(name):
    return ["none", "mean", "sum"] + (["batchmean"] if name in KL_CASES else [])


ALL = [(n, r) for n in CASES for r in reductions(n)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name,reduction", ALL)
def test_value_against_numpy(name, reduction, dtype):
    make, x, t, ref = CASES[name]
    v, reduce = ref(x, t)
    expected = reduce(v, reduction)
    tt = t.astype(dtype) if t.dtype.kind == "f" else t
    got = make(reduction)(x.astype(dtype), tt)
    if reduction == "none":
        assert isinstance(got, np.ndarray) and got.shape == np.shape(expected) and got.dtype == np.dtype(dtype)
    else:
        assert isinstance(got, float)
    close(got, expected, dtype)


def numeric_grad(f, x, h=1e-6):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        g[i] = (f(xp) - f(xm)) / (2 * h)
    return g


@pytest.mark.parametrize("name,reduction", ALL)
def test_gradient_against_finite_differences(name, reduction):
    make, x, t, _ = CASES[name]
    loss = make(reduction)
    up = RNG.normal(size=np.shape(loss(x, t))) if reduction == "none" else None

    def scalar(z):
        v = make(reduction)(z, t)
        return float(np.sum(up * v)) if up is not None else v

    loss(x, t)
    g = loss.backward(up) if up is not None else loss.backward()
    assert g.shape == x.shape
    # the smooth losses to 1e-7 relative; |d| and max(.) kinks are away from the sample points
    np.testing.assert_allclose(g, numeric_grad(scalar, x), rtol=1e-6, atol=1e-8)


def test_backward_scalar_grad_scales():
    loss = fm.SmoothL1Loss()
    make, x, t, _ = CASES["smooth_l1"]
    loss(x, t)
    g = loss.backward().copy()
    close(loss.backward(2.5), 2.5 * g)


def test_one_dimensional_input_none_shapes():
    x = RNG.normal(size=C)
    assert fm.MSELoss(reduction="none")(x, np.zeros(C)).shape == (C,)
    v = fm.NLLLoss(reduction="none")(log_softmax(x[None])[0], np.int64(2))
    assert np.shape(v) == ()
    close(v, -log_softmax(x[None])[0, 2])


def test_bce_extremes_are_clamped_as_torch():
    p = np.array([[0.0, 1.0, 0.0, 1.0]])
    t = np.array([[0.0, 1.0, 1.0, 0.0]])
    loss = fm.BCELoss(reduction="none")
    close(loss(p, t), [[0.0, 0.0, 100.0, 100.0]])
    g = loss.backward(np.ones((1, 4)))
    assert np.isfinite(g).all()
    close(g, [[0.0, 0.0, -1 / np.float64(np.float32(1e-12)), 1 / np.float64(np.float32(1e-12))]])


@pytest.mark.parametrize("name", ["bce_logits_weight", "multilabel", "nll_weight", "smooth_l1", "kl_log_target",
                                  "cross_entropy"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_stable_at_plus_minus_1000(name, dtype):
    make, x, t, _ = CASES[name]
    big = np.where(RNG.uniform(size=x.shape) < 0.5, -1000.0, 1000.0).astype(dtype)
    if name == "nll_weight":
        big = -np.abs(big)  # log-probabilities
    if name == "kl_log_target":
        t = np.full(x.shape, -np.log(C))
    for reduction in ("none", "mean", "sum"):
        loss = make(reduction)
        v = loss(big, t.astype(dtype) if t.dtype.kind == "f" else t)
        up = np.ones(np.shape(v)) if reduction == "none" else None
        g = loss.backward(up) if up is not None else loss.backward()
        assert np.isfinite(v).all() and np.isfinite(g).all()


def test_gaussian_variance_clamp_passes_the_gradient_through():
    loss = fm.GaussianNLLLoss(eps=0.1, reduction="sum")
    out = np.array([[0.5, 0.01]])  # var 0.01 is clamped to 0.1
    loss(out, np.array([0.0]))
    close(loss.backward(), [[0.5 / 0.1, 0.5 * (1 / 0.1 - 0.25 / 0.01)]])


def test_nll_all_ignored_mean_is_nan():
    loss = fm.NLLLoss()
    assert np.isnan(loss(np.zeros((2, 3)), np.array([-100, -100])))
    assert (loss.backward() == 0).all()


# ---- PyTorch parity
def torch_cases():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    tw = torch.tensor(W)
    return torch, {
        "nll": lambda r: nn.NLLLoss(reduction=r),
        "nll_weight": lambda r: nn.NLLLoss(weight=tw, reduction=r),
        "nll_ignore_3": lambda r: nn.NLLLoss(weight=tw, ignore_index=3, reduction=r),
        "bce": lambda r: nn.BCELoss(reduction=r),
        "bce_weight": lambda r: nn.BCELoss(weight=tw, reduction=r),
        "bce_logits_weight": lambda r: nn.BCEWithLogitsLoss(weight=tw, pos_weight=torch.tensor(W[::-1].copy()),
                                                            reduction=r),
        "multilabel": lambda r: nn.MultiLabelSoftMarginLoss(reduction=r),
        "multilabel_weight": lambda r: nn.MultiLabelSoftMarginLoss(weight=tw, reduction=r),
        "smooth_l1": lambda r: nn.SmoothL1Loss(reduction=r),
        "smooth_l1_beta": lambda r: nn.SmoothL1Loss(reduction=r, beta=0.3),
        "smooth_l1_beta0": lambda r: nn.SmoothL1Loss(reduction=r, beta=0.0),
        "kl": lambda r: nn.KLDivLoss(reduction=r),
        "kl_log_target": lambda r: nn.KLDivLoss(reduction=r, log_target=True),
        "gaussian": lambda r: nn.GaussianNLLLoss(reduction=r),
        "gaussian_full": lambda r: nn.GaussianNLLLoss(full=True, eps=0.1, reduction=r),
        "mse": lambda r: nn.MSELoss(reduction=r),
        "l1": lambda r: nn.L1Loss(reduction=r),
        "huber": lambda r: nn.HuberLoss(reduction=r, delta=0.7),
        "cross_entropy": lambda r: nn.CrossEntropyLoss(weight=tw, reduction=r),
        "bce_logits": lambda r: nn.BCEWithLogitsLoss(reduction=r),
        "poisson": lambda r: nn.PoissonNLLLoss(reduction=r),
    }


def torch_close(a, b):
    np.testing.assert_allclose(np.asarray(a, np.float64), b, rtol=1e-12, atol=1e-12 * max(1.0, np.abs(b).max()))


@pytest.mark.parametrize("extreme", [False, True])
@pytest.mark.parametrize("name,reduction", ALL)
def test_torch_parity(name, reduction, extreme):
    torch, tcases = torch_cases()
    make, x, t, _ = CASES[name]
    if extreme:  # logits at +-1000 where they are logits; probabilities at 0 and 1; log-probabilities at -1000
        sign = np.where(RNG.uniform(size=x.shape) < 0.5, -1.0, 1.0)
        if name.startswith(("bce_logits", "multilabel", "cross_entropy", "smooth_l1", "mse", "l1", "huber")):
            x = 1000.0 * sign
        elif name.startswith("bce"):
            x = (sign > 0) * 1.0
        elif name.startswith(("nll", "kl")):
            x = np.where(sign > 0, -1000.0, 0.0)
        elif name.startswith("gaussian"):  # means at +-1000, variances huge or below eps (clamped)
            D = x.shape[1] // 2
            x = np.hstack([1000.0 * sign[:, :D], np.where(sign[:, D:] > 0, 1e3, 1e-9)])
        else:  # poisson on log-rates: exp(-1000) underflows to 0, exp(50) is large but finite
            x = np.where(sign > 0, 50.0, -1000.0)
    ours = make(reduction)
    v = ours(x, t)
    up = RNG.normal(size=np.shape(v)) if reduction == "none" else None
    g = ours.backward(up) if up is not None else ours.backward()
    if name.startswith("gaussian"):
        D = x.shape[1] // 2
        X, V = torch.tensor(x[:, :D], requires_grad=True), torch.tensor(x[:, D:], requires_grad=True)
        tv = tcases[name](reduction)(X, torch.tensor(t), V)
    else:
        X = torch.tensor(x, requires_grad=True)
        tv = tcases[name](reduction)(X, torch.tensor(t))
    tv.backward(torch.tensor(up) if up is not None else None)
    tg = np.hstack([X.grad.numpy(), V.grad.numpy()]) if name.startswith("gaussian") else X.grad.numpy()
    torch_close(v, tv.detach().numpy())
    torch_close(g, tg)


# ---- training with each loss
def fit_problem(name):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(96, 4))
    z = X @ rng.normal(size=(4, 3))
    if name in ("nll", "cross_entropy_none"):
        return X, z.argmax(axis=1), 3, []
    if name in ("bce", "multilabel"):
        return X, (z > 0) * 1.0, 3, [fm.Sigmoid()] if name == "bce" else []
    if name == "kl":
        p = np.exp(log_softmax(z))
        return X, p, 3, []
    if name == "gaussian":  # Sigmoid keeps the variances > 0 (and the means in (0, 1), as the targets)
        return X, 1 / (1 + np.exp(-z[:, :2])), 4, [fm.Sigmoid()]
    return X, z, 3, []


FIT = {
    "nll": fm.NLLLoss(), "bce": fm.BCELoss(), "multilabel": fm.MultiLabelSoftMarginLoss(weight=[1.0, 2.0, 0.5]),
    "smooth_l1": fm.SmoothL1Loss(beta=0.5), "kl": fm.KLDivLoss(reduction="batchmean"),
    "gaussian": fm.GaussianNLLLoss(), "mse_none": fm.MSELoss(reduction="none"),
    "cross_entropy_none": fm.CrossEntropyLoss(reduction="none"),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(FIT))
def test_fit_trains(name, dtype):
    X, y, out, tail = fit_problem(name)
    fm.manual_seed(0)
    model = fm.Sequential(fm.Linear(4, 16), fm.Tanh(), fm.Linear(16, out), *tail, dtype=dtype)
    loss = FIT[name]
    opt = fm.optim.Adam(model.parameters(), lr=0.01)
    before = model.evaluate(X, y, loss)
    hist = model.fit(X, y, loss, opt, epochs=30, batch_size=16, verbose=0)
    losses = hist.history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    after = model.evaluate(X, y, loss)
    assert after["loss"] < before["loss"] - 0.1 * abs(before["loss"])
    if name in ("nll", "cross_entropy_none"):  # (NLLLoss on raw scores is unbounded below: accuracy says it learnt)
        assert after["accuracy"] > 0.8


@pytest.mark.parametrize("name", ["multilabel", "kl", "gaussian", "nll", "bce"])
def test_fit_split_across_threads_matches_one_thread(name):
    """Batches split across threads add each part's 'sum' over the whole batch's
    'mean' denominator: that denominator must be each loss's own."""
    X, y, out, tail = fit_problem(name)
    X, y = np.vstack([X] * 2), np.concatenate([y] * 2)  # 192 rows, batches of 96 split in two
    params = []
    for threads in (1, 2):
        fm.manual_seed(3)
        model = fm.Sequential(fm.Linear(4, 8), fm.Tanh(), fm.Linear(8, out), *tail, dtype="float64")
        hist = model.fit(X, y, FIT[name], fm.optim.SGD(model.parameters(), lr=0.1), epochs=2, batch_size=96,
                         shuffle=False, verbose=0, n_threads=threads)
        params.append((hist.history["loss"], [np.array(p) for p in model.parameters()]))
    np.testing.assert_allclose(params[0][0], params[1][0], rtol=1e-12)
    for a, b in zip(params[0][1], params[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)


def test_train_step_with_none_uses_the_mean():
    X, y, _, _ = fit_problem("mse_none")
    fm.manual_seed(1)
    a = fm.Sequential(fm.Linear(4, 3))
    fm.manual_seed(1)
    b = fm.Sequential(fm.Linear(4, 3))
    la = a.train_step(X[:8], y[:8], fm.MSELoss(reduction="none"), fm.optim.SGD(a.parameters(), lr=0.1))
    lb = b.train_step(X[:8], y[:8], fm.MSELoss(), fm.optim.SGD(b.parameters(), lr=0.1))
    assert la == lb
    for pa, pb in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(np.asarray(pa), np.asarray(pb))


# ---- bad arguments
@pytest.mark.parametrize("cls", [fm.NLLLoss, fm.BCELoss, fm.SmoothL1Loss, fm.KLDivLoss, fm.GaussianNLLLoss,
                                 fm.MultiLabelSoftMarginLoss, fm.MSELoss, fm.CrossEntropyLoss])
def test_unknown_reduction(cls):
    with pytest.raises(ValueError, match="reduction must be one of"):
        cls(reduction="avg")


@pytest.mark.parametrize("cls", [fm.MSELoss, fm.NLLLoss, fm.CrossEntropyLoss, fm.BCELoss])
def test_batchmean_is_kl_only(cls):
    with pytest.raises(ValueError, match="reduction must be one of"):
        cls(reduction="batchmean")


@pytest.mark.parametrize("cls", [fm.NLLLoss, fm.BCELoss, fm.MultiLabelSoftMarginLoss, fm.BCEWithLogitsLoss])
def test_negative_weight(cls):
    with pytest.raises(ValueError, match="must be >= 0"):
        cls(weight=[1.0, -1.0, 1.0])


@pytest.mark.parametrize("p", [-0.1, 1.5, np.nan])
def test_bce_probability_outside_unit_interval(p):
    loss = fm.BCELoss()
    x = np.full((2, 3), 0.5)
    x[1, 2] = p
    with pytest.raises(ValueError, match="between 0 and 1"):
        loss(x, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="target should be between 0 and 1"):
        loss(np.full((2, 3), 0.5), np.full((2, 3), 2.0))


def test_failed_call_keeps_the_last_gradient():
    loss = fm.BCELoss()
    loss(np.full((2, 3), 0.25), np.zeros((2, 3)))
    g = loss.backward().copy()
    with pytest.raises(ValueError):
        loss(np.full((2, 3), 2.0), np.zeros((2, 3)))
    np.testing.assert_array_equal(loss.backward(), g)


def test_wrong_shapes():
    with pytest.raises(ValueError, match="weight has 3 entries"):
        fm.BCELoss(weight=[1.0, 1.0, 1.0])(np.full((2, 4), 0.5), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="even number of columns"):
        fm.GaussianNLLLoss()(np.ones((2, 3)), np.zeros((2, 1)))
    with pytest.raises(ValueError, match="target has shape"):
        fm.GaussianNLLLoss()(np.ones((2, 4)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="var has negative"):
        fm.GaussianNLLLoss()(np.array([[0.0, -1.0]]), np.zeros((1, 1)))
    with pytest.raises(TypeError, match="class-index targets"):
        fm.NLLLoss()(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="out of bounds"):
        fm.NLLLoss()(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match="beta"):
        fm.SmoothL1Loss(beta=-1.0)
    with pytest.raises(ValueError, match="eps"):
        fm.GaussianNLLLoss(eps=0.0)
    loss = fm.MSELoss(reduction="none")
    loss(np.zeros((2, 3)), np.ones((2, 3)))
    with pytest.raises(RuntimeError, match="needs their upstream"):
        loss.backward()
    with pytest.raises(ValueError, match="grad must have"):
        loss.backward(np.ones(3))


def test_in_all():
    for name in ("NLLLoss", "BCELoss", "SmoothL1Loss", "KLDivLoss", "GaussianNLLLoss", "MultiLabelSoftMarginLoss"):
        assert name in fm.__all__ and name in fm.nn.loss.__all__


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("loss,width", [(fm.BCELoss(), 2), (fm.GaussianNLLLoss(), 2)])
def test_fit_and_train_step_on_outputs_out_of_range_raise(loss, width, threads):
    X = np.random.default_rng(0).normal(size=(192, 4))
    y = (X[:, :width // 2 if isinstance(loss, fm.GaussianNLLLoss) else width] > 0) * 1.0
    model = fm.Sequential(fm.Linear(4, 8), fm.Linear(8, width), dtype="float64")  # no Sigmoid: outputs < 0
    before = [np.array(p) for p in model.parameters()]
    with pytest.raises(ValueError, match="between 0 and 1|var has negative"):
        model.train_step(X, y, loss, fm.optim.SGD(model.parameters(), lr=0.1))
    for a, b in zip(before, model.parameters()):
        np.testing.assert_array_equal(a, np.asarray(b))
    with pytest.raises(ValueError, match="between 0 and 1|var has negative"):
        model.fit(X, y, loss, fm.optim.SGD(model.parameters(), lr=0.1), batch_size=96, verbose=0, n_threads=threads)
