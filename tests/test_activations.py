"""The modern activations (ELU ... Flatten) against independent NumPy references, float64 central
finite differences and (optional) PyTorch itself; fused == unfused; save/load/pickle; fit;
the estimators' activation names."""
from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from scipy.special import expit, log_softmax, softmax

import fastmlp as fm

DTYPES = ["float64", "float32"]
EXTREMES = [-1000.0, -30.0, -1e-8, 0.0, 1e-8, 30.0, 1000.0]
SELU_ALPHA, SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
GELU_K = math.sqrt(2.0 / math.pi)


def softplus(x):
    return np.logaddexp(0.0, x)


def erf(x):
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def gelu_tanh_inner(x):
    return GELU_K * (x + 0.044715 * x ** 3)


# name: (layer factory, forward(x), derivative(x)), both in float64 NumPy, written from the formulas
# in torch.nn's documentation. The derivatives take PyTorch's side at the kinks.
def _refs():
    def elu(a):
        return (lambda x: np.where(x > 0, x, a * np.expm1(np.minimum(x, 0))),
                lambda x: np.where(x > 0, 1.0, a * np.exp(np.minimum(x, 0))))

    def celu(a):
        return (lambda x: np.maximum(0, x) + np.minimum(0, a * np.expm1(np.minimum(x, 0) / a)),
                lambda x: np.where(x > 0, 1.0, np.exp(np.minimum(x, 0) / a)))

    def softplus_ref(beta, thr):
        return (lambda x: np.where(beta * x > thr, x, softplus(beta * x) / beta),
                lambda x: np.where(beta * x > thr, 1.0, expit(beta * x)))

    def hardtanh(lo, hi):
        return (lambda x: np.clip(x, lo, hi), lambda x: np.where((x > lo) & (x < hi), 1.0, 0.0))

    def mish_d(x):
        t = np.tanh(softplus(x))
        return t + x * expit(x) * (1 - t * t)

    def gelu_d(x):
        return 0.5 * (1 + erf(x / math.sqrt(2))) + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)

    def gelu_tanh(x):
        return 0.5 * x * (1 + np.tanh(gelu_tanh_inner(np.clip(x, -100, 100))))

    def gelu_tanh_d(x):
        x = np.clip(x, -100, 100)
        t = np.tanh(gelu_tanh_inner(x))
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * GELU_K * (1 + 3 * 0.044715 * x * x)

    e1, e05, c1, c05, c2 = elu(1.0), elu(0.5), celu(1.0), celu(0.5), celu(2.0)
    return {
        "elu": (fm.ELU, *e1),
        "elu_0.5": (lambda: fm.ELU(0.5), *e05),
        "celu": (fm.CELU, *c1),
        "celu_0.5": (lambda: fm.CELU(0.5), *c05),
        "celu_2": (lambda: fm.CELU(alpha=2.0), *c2),
        "selu": (fm.SELU, lambda x: SELU_SCALE * elu(SELU_ALPHA)[0](x), lambda x: SELU_SCALE * elu(SELU_ALPHA)[1](x)),
        "silu": (fm.SiLU, lambda x: x * expit(x), lambda x: expit(x) * (1 + x * (1 - expit(x)))),
        "mish": (fm.Mish, lambda x: x * np.tanh(softplus(x)), mish_d),
        "softplus": (fm.Softplus, *softplus_ref(1.0, 20.0)),
        "softplus_2_5": (lambda: fm.Softplus(beta=2.0, threshold=5.0), *softplus_ref(2.0, 5.0)),
        "softplus_0.5_100": (lambda: fm.Softplus(0.5, 100.0), *softplus_ref(0.5, 100.0)),
        "softsign": (fm.Softsign, lambda x: x / (1 + np.abs(x)), lambda x: 1 / (1 + np.abs(x)) ** 2),
        "hardtanh": (fm.Hardtanh, *hardtanh(-1.0, 1.0)),
        "hardtanh_-2_3": (lambda: fm.Hardtanh(-2.0, 3.0), *hardtanh(-2.0, 3.0)),
        "relu6": (fm.ReLU6, *hardtanh(0.0, 6.0)),
        "hardswish": (fm.Hardswish, lambda x: x * np.clip(x + 3, 0, 6) / 6,
                      lambda x: np.where(x <= -3, 0.0, np.where(x < 3, x / 3 + 0.5, 1.0))),
        "hardsigmoid": (fm.Hardsigmoid, lambda x: np.clip(x + 3, 0, 6) / 6,
                        lambda x: np.where((x > -3) & (x < 3), 1 / 6, 0.0)),
        "logsigmoid": (fm.LogSigmoid, lambda x: -softplus(-x), lambda x: expit(-x)),
        "gelu": (fm.GELU, lambda x: 0.5 * x * (1 + erf(x / math.sqrt(2))), gelu_d),
        "gelu_tanh": (lambda: fm.GELU(approximate="tanh"), gelu_tanh, gelu_tanh_d),
        "prelu": (fm.PReLU, lambda x: np.where(x > 0, x, 0.25 * x), lambda x: np.where(x > 0, 1.0, 0.25)),
        "prelu_-0.5": (lambda: fm.PReLU(init=-0.5), lambda x: np.where(x > 0, x, -0.5 * x),
                       lambda x: np.where(x > 0, 1.0, -0.5)),
    }


REFS = _refs()
NAMES = list(REFS)
# where each one bends: finite differences stay away from these points
KINKS = {"hardtanh": (-1, 1), "hardtanh_-2_3": (-2, 3), "relu6": (0, 6), "hardswish": (-3, 3),
         "hardsigmoid": (-3, 3), "prelu": (0,), "prelu_-0.5": (0,), "softplus_2_5": (2.5,)}


def inputs(dtype, rows=5, cols=13, seed=0):
    """Random values of several scales, the extremes, the kinks, and both sides of zero."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 4, size=rows * cols)
    special = EXTREMES + [-3.0, 3.0, -1.0, 1.0, 6.0, -2.0, 2.5, -6.0, 5.0, 10.0, -10.0, 20.0, 19.9, 40.0, 200.0]
    k = min(len(special), x.size)
    x[:k] = special[:k]
    return x.reshape(rows, cols).astype(dtype)


def model_of(name, dtype, *before):
    return fm.Sequential(*before, REFS[name][0](), dtype=dtype, seed=0)


def tol(dtype):
    return dict(rtol=1e-10, atol=1e-12) if dtype == "float64" else dict(rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_forward_and_backward_match_the_numpy_reference(name, dtype):
    _, f, d = REFS[name]
    for rows, cols in [(5, 13), (1, 1), (3, 7), (2, 33), (1, 1023), (4, 1025), (64, 17)]:
        x = inputs(dtype, rows, cols, seed=rows * cols)
        dy = np.random.default_rng(1).normal(size=x.shape).astype(dtype)
        m = model_of(name, dtype)
        y = m(x)
        dx = m.backward(dy)
        assert y.dtype == dx.dtype == np.dtype(dtype)
        assert np.isfinite(y).all() and np.isfinite(dx).all()
        x64 = x.astype(np.float64)
        np.testing.assert_allclose(y, f(x64), **tol(dtype))
        np.testing.assert_allclose(dx, d(x64) * dy.astype(np.float64), **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES + ["log_softmax"])
def test_empty_batch(name, dtype):
    m = fm.Sequential(fm.LogSoftmax() if name == "log_softmax" else REFS[name][0](), dtype=dtype)
    x = np.zeros((0, 5), dtype=dtype)
    assert m(x).shape == (0, 5)
    assert m.backward(x).shape == (0, 5)


@pytest.mark.parametrize("name", NAMES)
def test_backward_matches_central_finite_differences(name):
    _, f, _ = REFS[name]
    rng = np.random.default_rng(3)
    x = rng.normal(0, 3, size=(6, 11))
    for k in KINKS.get(name, ()):
        x[np.abs(x - k) < 1e-3] += 1e-2  # keep the differences off the kinks
    dy = rng.normal(size=x.shape)
    m = model_of(name, "float64")
    m(x)
    dx = m.backward(dy)
    h = 1e-6  # element-wise: every element's difference at once
    num = (m(x + h) - m(x - h)) / (2 * h) * dy
    np.testing.assert_allclose(dx, num, rtol=1e-6, atol=1e-8)


# ---- LogSoftmax (row-wise)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,cols", [(1, 1), (3, 7), (5, 13), (2, 1025), (33, 2)])
def test_log_softmax_matches_scipy(rows, cols, dtype):
    x = inputs(dtype, rows, cols, seed=cols)
    dy = np.random.default_rng(2).normal(size=x.shape).astype(dtype)
    m = fm.Sequential(fm.LogSoftmax(), dtype=dtype)
    y, dx = m(x), None
    dx = m.backward(dy)
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    np.testing.assert_allclose(y, log_softmax(x64, axis=1), **tol(dtype))
    want = dy64 - softmax(x64, axis=1) * dy64.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(dx, want, **tol(dtype))
    np.testing.assert_allclose(np.exp(y.astype(np.float64)).sum(axis=1), 1.0, rtol=1e-5 if dtype == "float32" else 1e-12)


def test_log_softmax_backward_matches_finite_differences():
    rng = np.random.default_rng(4)
    x, dy = rng.normal(size=(3, 6)), rng.normal(size=(3, 6))
    m = fm.Sequential(fm.LogSoftmax(dim=-1), dtype="float64")
    m(x)
    dx = m.backward(dy)
    num = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        e = np.zeros_like(x)
        e[idx] = 1e-6
        num[idx] = ((m(x + e) - m(x - e)) * dy).sum() / 2e-6
    np.testing.assert_allclose(dx, num, rtol=1e-6, atol=1e-9)


def test_log_softmax_is_stable_at_the_extremes():
    x = np.array([[-1000.0, 0.0, 1000.0], [1000.0, 1000.0, -1000.0]])
    y = fm.Sequential(fm.LogSoftmax(), dtype="float64")(x)
    np.testing.assert_allclose(y, [[-2000.0, -1000.0, 0.0], [-math.log(2), -math.log(2), -2000 - math.log(2)]],
                               rtol=1e-15)
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y, log_softmax(x, axis=1), rtol=1e-15)


# ---- PReLU: its weight's gradient
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num", [1, 6])
def test_prelu_weight_gradient_and_shape(num, dtype):
    m = fm.Sequential(fm.Linear(4, 6), fm.PReLU(num_parameters=num, init=0.1), fm.Linear(6, 2), dtype=dtype, seed=1)
    assert m.state_dict()["1.weight"].shape == (num,)
    np.testing.assert_array_equal(m[1].weight.data, np.full(num, 0.1, dtype=dtype))
    w = np.linspace(-0.5, 0.7, num).astype(dtype)
    m[1].weight.data = w
    p = fm.Sequential(fm.PReLU(num, 0.1), dtype=dtype)
    p[0].weight.data = w
    x = inputs(dtype, 7, 6)
    dy = np.random.default_rng(0).normal(size=x.shape).astype(dtype)
    y = p(x)
    dx = p.backward(dy)
    x64, dy64, w64 = x.astype(np.float64), dy.astype(np.float64), w.astype(np.float64)
    np.testing.assert_allclose(y, np.where(x64 > 0, x64, w64 * x64), **tol(dtype))
    np.testing.assert_allclose(dx, np.where(x64 > 0, dy64, w64 * dy64), **tol(dtype))
    gw = np.where(x64 > 0, 0.0, x64 * dy64).sum(axis=0)
    np.testing.assert_allclose(p[0].weight.grad, gw.sum(keepdims=True) if num == 1 else gw,
                               rtol=1e-10 if dtype == "float64" else 1e-5, atol=1e-9 if dtype == "float64" else 1e-4)


def test_prelu_weight_gradient_matches_finite_differences():
    rng = np.random.default_rng(7)
    m = fm.Sequential(fm.Linear(3, 5), fm.PReLU(5), fm.Linear(5, 2), dtype="float64", seed=2)
    m[1].weight.data = rng.normal(size=5)
    x, dy = rng.normal(size=(9, 3)), rng.normal(size=(9, 2))
    m.zero_grad()
    m(x)
    m.backward(dy)
    g = m[1].weight.grad.copy()
    w0 = m[1].weight.data.copy()
    for j in range(5):
        vals = []
        for s in (1, -1):
            w = w0.copy()
            w[j] += s * 1e-6
            m[1].weight.data = w
            vals.append((m(x) * dy).sum())
        np.testing.assert_allclose(g[j], (vals[0] - vals[1]) / 2e-6, rtol=1e-6, atol=1e-9)


def test_prelu_checks_its_width():
    with pytest.raises(ValueError, match="num_parameters=6 but its input has 5 features"):
        fm.Sequential(fm.Linear(3, 5), fm.PReLU(6))
    m = fm.Sequential(fm.PReLU(4))
    assert m.in_features == 4
    with pytest.raises(ValueError, match="features"):
        m(np.zeros((2, 3), dtype=np.float32))
    assert fm.Sequential(fm.PReLU(1))(np.zeros((2, 3), dtype=np.float32)).shape == (2, 3)


# ---- fused into the preceding Linear == applied on its own
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES + ["log_softmax"])
def test_fused_equals_unfused(name, dtype):
    """A Linear followed by the activation runs bias + activation in one pass (its epilogue); with an
    Identity in between, the activation runs on its own over the same pre-activations. The two do
    the same operations in the same order, so everything agrees to the last bit."""
    act = (lambda: fm.LogSoftmax()) if name == "log_softmax" else REFS[name][0]
    rng = np.random.default_rng(5)
    x = rng.normal(0, 3, size=(37, 5)).astype(dtype)
    x[0] = [1000, -1000, 30, -30, 0]
    dy = rng.normal(size=(37, 7)).astype(dtype)
    outs = []
    for extra in ([], [fm.Identity()]):
        m = fm.Sequential(fm.Linear(5, 7), *extra, act(), dtype=dtype, seed=3)
        y = m(x)
        dx = m.backward(dy)
        outs.append((y, dx, m[0].weight.grad.copy(), m[0].bias.grad.copy()))
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_on_a_dense_grid_matches_math_erf(approximate, dtype):
    """GELU's vectorized loops (verf / the sigmoid form) over a dense grid out to +-1000, on its own
    and fused into a Linear, against math.erf / math.tanh evaluated per element in float64."""
    x64 = np.concatenate([np.linspace(-1000, 1000, 20001), np.linspace(-10, 10, 40001),
                          np.linspace(-0.01, 0.01, 2001), [-0.0, 5e-324, -1e-300]])
    x = x64.astype(dtype)
    xr = x.astype(np.float64)
    if approximate == "none":
        cdf = 0.5 * (1 + np.array([math.erf(v / math.sqrt(2)) for v in xr]))
        y_ref = xr * cdf
        d_ref = cdf + xr * np.exp(-0.5 * xr * xr) / math.sqrt(2 * math.pi)
    else:
        xc = np.clip(xr, -100, 100)
        t = np.array([math.tanh(v) for v in gelu_tanh_inner(xc)])
        y_ref = 0.5 * xr * (1 + t)
        d_ref = 0.5 * (1 + t) + 0.5 * xc * (1 - t * t) * GELU_K * (1 + 3 * 0.044715 * xc * xc)
    dy = np.full((x.size, 1), 0.75, dtype=dtype)
    for before in ([], [fm.Linear(1, 1)]):
        m = fm.Sequential(*before, fm.GELU(approximate=approximate), dtype=dtype)
        if before:  # the identity Linear: GELU runs as its epilogue
            m.load_state_dict({"0.weight": np.ones((1, 1)), "0.bias": np.zeros(1)})
        y = m(x.reshape(-1, 1))
        dx = m.backward(dy)
        assert np.isfinite(y).all() and np.isfinite(dx).all()
        np.testing.assert_allclose(y[:, 0], y_ref, **tol(dtype))
        np.testing.assert_allclose(dx[:, 0], 0.75 * d_ref, **tol(dtype))


# ---- AlphaDropout
ALPHA = 1.7580993408473766


def alpha_coefficients(p):
    a = 1.0 / math.sqrt((ALPHA * ALPHA * p + 1) * (1 - p))
    return a, a * ALPHA * p, a * ALPHA * p - a * ALPHA  # scale, shift of the kept, value of the dropped


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.05, 0.2, 0.5, 0.9])
def test_alpha_dropout_formula_rate_and_self_normalization(p, dtype):
    n_rows, n_cols = 400, 500
    m = fm.Sequential(fm.AlphaDropout(p), seed=11, dtype=dtype)
    x = np.random.default_rng(0).normal(size=(n_rows, n_cols)).astype(dtype)
    x[np.abs(x + ALPHA) < 1e-3] = 0.0  # there a kept value would equal the dropped one
    y = m(x)
    a, b, dropped_value = alpha_coefficients(p)
    x64 = x.astype(np.float64)
    kept = np.abs(y - (a * x64 + b)) <= 1e-5 * (1 + np.abs(y))
    dropped = np.abs(y - dropped_value) <= 1e-6 * (1 + abs(dropped_value))
    assert (kept | dropped).all()
    n = y.size
    rate = (~kept).mean()
    assert abs(rate - p) < 6 * math.sqrt(p * (1 - p) / n), rate
    # zero mean and unit variance are kept (the point of alpha dropout, for SELU networks)
    assert abs(y.mean(dtype=np.float64)) < 0.02 and abs(y.var(dtype=np.float64) - 1) < 0.03
    dy = np.random.default_rng(1).normal(size=x.shape).astype(dtype)
    dx = m.backward(dy)
    np.testing.assert_allclose(dx, np.where(kept, a * dy.astype(np.float64), 0.0), **tol(dtype))


def test_alpha_dropout_eval_p0_p1_and_reproducibility():
    x = np.random.default_rng(0).normal(size=(33, 17))
    m = fm.Sequential(fm.AlphaDropout(0.3), seed=5, dtype="float64")
    y1 = m(x)
    assert not np.array_equal(y1, x)
    m2 = fm.Sequential(fm.AlphaDropout(0.3), seed=5, dtype="float64")
    np.testing.assert_array_equal(m2(x), y1)  # the model's stream, like Dropout
    assert not np.array_equal(m(x), y1)  # a new mask on every forward
    np.testing.assert_array_equal(m.eval()(x), x)
    np.testing.assert_array_equal(m.backward(x), x)
    np.testing.assert_array_equal(fm.Sequential(fm.AlphaDropout(0.0), dtype="float64")(x), x)
    z = fm.Sequential(fm.AlphaDropout(1.0), dtype="float64")
    np.testing.assert_array_equal(z(x), np.zeros_like(x))  # as torch: everything dropped, to 0
    np.testing.assert_array_equal(z.backward(x), np.zeros_like(x))


def test_alpha_dropout_pickles_its_stream_and_fits():
    X = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    y = X @ np.array([1.0, -2.0, 0.5, 0.0], dtype=np.float32)
    m = fm.Sequential(fm.Linear(4, 16), fm.SELU(), fm.AlphaDropout(0.1), fm.Linear(16, 1), seed=0)
    m.fit(X, y.reshape(-1, 1), fm.MSELoss(), fm.optim.Adam(m.parameters(), lr=1e-2), epochs=3, verbose=0)
    c = pickle.loads(pickle.dumps(m))
    np.testing.assert_array_equal(c(X), m(X))  # training mode: the same next mask
    np.testing.assert_array_equal(c.eval()(X), m.eval()(X))


# ---- Flatten
def test_flatten_is_the_identity_and_lines_up_with_torch_indices():
    x = np.random.default_rng(0).normal(size=(5, 4))
    m = fm.Sequential(fm.Flatten(), fm.Linear(4, 3), fm.Flatten(1, -1), dtype="float64", seed=0)
    assert list(m.state_dict()) == ["1.weight", "1.bias"]
    w, b = m[1].weight.data, m[1].bias.data
    np.testing.assert_allclose(m(x), x @ w.T + b, rtol=1e-14)
    dy = np.ones((5, 3))
    np.testing.assert_allclose(m.backward(dy), dy @ w, rtol=1e-14)
    np.testing.assert_array_equal(fm.Sequential(fm.Flatten(), dtype="float64")(x), x)


# ---- argument checks
@pytest.mark.parametrize("make, match", [
    (lambda: fm.PReLU(0), "num_parameters"),
    (lambda: fm.PReLU(2.5), "integer"),
    (lambda: fm.PReLU(init=float("nan")), "init"),
    (lambda: fm.Hardtanh(1.0, 1.0), "min_val"),
    (lambda: fm.Hardtanh(2.0, -1.0), "min_val"),
    (lambda: fm.AlphaDropout(1.5), "alpha dropout probability"),
    (lambda: fm.AlphaDropout(-0.1), "alpha dropout probability"),
    (lambda: fm.GELU(approximate="erf"), "approximate"),
    (lambda: fm.LogSoftmax(dim=0), "dim"),
    (lambda: fm.LogSoftmax(dim=None), "dim"),
    (lambda: fm.CELU(0.0), "alpha"),
    (lambda: fm.Softplus(beta=0), "beta"),
    (lambda: fm.ELU(alpha="1"), "alpha"),
    (lambda: fm.Softplus(threshold=float("inf")), "threshold"),
    (lambda: fm.Flatten(start_dim=0), "start_dim"),
    (lambda: fm.Flatten(end_dim=2), "end_dim"),
])
def test_bad_arguments_raise_clear_errors(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


@pytest.mark.parametrize("spec, match", [
    ({"kind": "hardtanh", "min_val": 1.0, "max_val": 0.0}, "min_val"),
    ({"kind": "gelu", "approximate": "fast"}, "approximate"),
    ({"kind": "prelu", "num_parameters": 0}, "num_parameters"),
    ({"kind": "alpha_dropout", "p": 2.0}, "probability"),
    ({"kind": "celu", "alpha": 0.0}, "alpha"),
])
def test_the_engine_refuses_bad_specs_too(spec, match):
    with pytest.raises(ValueError, match=match):
        fm._core.check_layers([spec])


# ---- save, load, pickle
def every_layer():
    return [fm.Linear(5, 8), fm.ELU(0.5), fm.Linear(8, 8), fm.CELU(2.0), fm.SELU(), fm.AlphaDropout(0.2),
            fm.SiLU(), fm.Mish(), fm.Softplus(2.0, 5.0), fm.Softsign(), fm.Hardtanh(-2.0, 3.0), fm.ReLU6(),
            fm.Hardswish(), fm.Hardsigmoid(), fm.LogSigmoid(), fm.GELU("tanh"), fm.PReLU(8, 0.3), fm.Flatten(),
            fm.Linear(8, 4), fm.PReLU(), fm.GELU(), fm.LogSoftmax()]


@pytest.mark.parametrize("dtype", DTYPES)
def test_save_load_and_pickle_round_trips(tmp_path, dtype):
    m = fm.Sequential(*every_layer(), dtype=dtype, seed=4).eval()
    m[16].weight.data = np.linspace(-1, 1, 8)
    x = np.random.default_rng(0).normal(size=(9, 5)).astype(dtype)
    want = m(x)
    assert np.isfinite(want).all()
    path = tmp_path / "m.npz"
    m.save(path)
    for c in (fm.load(path), pickle.loads(pickle.dumps(m))):
        assert repr(c) == repr(m)
        assert [layer._spec() for layer in c] == [layer._spec() for layer in m]
        np.testing.assert_array_equal(c.eval()(x), want)
        for k, v in m.state_dict().items():
            np.testing.assert_array_equal(c.state_dict()[k], v)
    assert m[1].alpha == 0.5 and m[8].beta == 2.0 and m[8].threshold == 5.0 and m[15].approximate == "tanh"


def test_an_old_gelu_spec_without_approximate_loads():
    layer = fm.nn.module._layer_from_spec({"kind": "gelu"})
    assert isinstance(layer, fm.GELU) and layer.approximate == "none"


# ---- training
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES + ["log_softmax"])
def test_fit_and_train_step_work_with_each(name, dtype):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(128, 3)).astype(dtype)
    y = (X[:, 0] - X[:, 1] > 0).astype(np.int64)
    act = fm.LogSoftmax if name == "log_softmax" else REFS[name][0]
    m = fm.Sequential(fm.Linear(3, 16), act(), fm.Linear(16, 2), dtype=dtype, seed=1)
    opt = fm.optim.Adam(m.parameters(), lr=3e-2)
    loss = fm.CrossEntropyLoss()
    first = m.evaluate(X, y, loss)["loss"]
    h = m.fit(X, y, loss, opt, epochs=15, batch_size=32, verbose=0)
    assert np.isfinite(h.history["loss"]).all()
    assert m.evaluate(X, y, loss)["loss"] < first
    assert np.isfinite(m.train_step(X[:8], y[:8], loss, opt))
    assert m.predict(X).shape == (128, 2)


def test_fit_with_threads_splits_batches_and_agrees():
    """Element-wise activations and PReLU keep rows independent: fit may split batches over threads."""
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(256, 6)), rng.normal(size=(256, 2))
    sds = []
    for n_threads in (1, 2):
        m = fm.Sequential(fm.Linear(6, 32), fm.PReLU(32), fm.Linear(32, 32), fm.Mish(), fm.Linear(32, 2),
                          dtype="float64", seed=2)
        m.fit(X, Y, fm.MSELoss(), fm.optim.SGD(m.parameters(), lr=1e-2), epochs=2, batch_size=128, verbose=0,
              n_threads=n_threads)
        sds.append(m.state_dict())
    for k in sds[0]:
        np.testing.assert_allclose(sds[0][k], sds[1][k], rtol=1e-10, atol=1e-12)


# ---- the estimators' names
ESTIMATOR_NAMES = ["leaky_relu", "elu", "selu", "celu", "silu", "mish", "gelu", "softplus", "softsign", "hardtanh",
                   "relu6", "hardswish", "hardsigmoid", "logsigmoid"]


@pytest.mark.parametrize("name", ESTIMATOR_NAMES)
def test_estimators_accept_each_name(name):
    pytest.importorskip("sklearn")
    from sklearn.datasets import make_classification, make_regression

    X, y = make_classification(n_samples=120, n_features=5, random_state=0)
    clf = fm.MLPClassifier(hidden_layer_sizes=(8, 6), activation=name, max_iter=300,
                            learning_rate_init=1e-2, random_state=0).fit(X, y)
    assert clf.predict(X).shape == (120,) and clf.score(X, y) > 0.6
    assert type(clf._model[1]).__name__.lower().replace("_", "") == name.replace("_", "")
    Xr, yr = make_regression(n_samples=80, n_features=4, random_state=0)
    reg = fm.MLPRegressor(hidden_layer_sizes=(7,), activation=name, max_iter=20,
                          random_state=0).fit(Xr, yr)
    assert reg.predict(Xr).shape == (80,)
    mixed = fm.MLPRegressor(hidden_layer_sizes=(5, 5), activation=[name, "tanh"], max_iter=5, random_state=0)
    assert np.isfinite(mixed.fit(Xr, yr).predict(Xr)).all()
    clf2 = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(clf2.predict(X), clf.predict(X))


def test_estimators_refuse_unknown_names():
    pytest.importorskip("sklearn")
    X, y = np.zeros((4, 2)), np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="activation"):
        fm.MLPClassifier(activation="swish2").fit(X, y)
    with pytest.raises(ValueError, match="activation"):
        fm.MLPClassifier(hidden_layer_sizes=(3,), activation=["prelu"]).fit(X, y)


def test_everything_is_exported():
    for name in ["ELU", "CELU", "SELU", "SiLU", "Mish", "Softplus", "Softsign", "Hardtanh", "ReLU6", "Hardswish",
                 "Hardsigmoid", "PReLU", "LogSoftmax", "LogSigmoid", "GELU", "AlphaDropout", "Flatten"]:
        assert name in fm.__all__ and hasattr(fm, name)


# ---- PyTorch itself (optional)
TORCH_LAYERS = {
    "elu": "ELU()", "elu_0.5": "ELU(0.5)", "celu": "CELU()", "celu_0.5": "CELU(0.5)", "celu_2": "CELU(alpha=2.0)",
    "selu": "SELU()", "silu": "SiLU()", "mish": "Mish()", "softplus": "Softplus()",
    "softplus_2_5": "Softplus(beta=2.0, threshold=5.0)", "softplus_0.5_100": "Softplus(0.5, 100.0)",
    "softsign": "Softsign()", "hardtanh": "Hardtanh()", "hardtanh_-2_3": "Hardtanh(-2.0, 3.0)", "relu6": "ReLU6()",
    "hardswish": "Hardswish()", "hardsigmoid": "Hardsigmoid()", "logsigmoid": "LogSigmoid()", "gelu": "GELU()",
    "gelu_tanh": "GELU(approximate='tanh')", "prelu": "PReLU()", "prelu_-0.5": "PReLU(init=-0.5)",
}
# Where PyTorch itself rounds: its float64 Hardsigmoid backward multiplies by 1/6 rounded to float32
# (a 3e-8 relative difference), and its CELU backward divides by alpha rounded to float32 (exact for
# the alphas tested here). Elsewhere 1e-12 relative, plus 1e-13 absolute for results that both
# compute by a cancellation (GELU's 1 + erf(x / sqrt 2) for x << 0, Softsign's autograd at +-1000).
TORCH_RTOL = {"hardsigmoid": 1e-7}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(TORCH_LAYERS))
def test_matches_torch(name, dtype):
    torch = pytest.importorskip("torch")
    tdt = torch.float64 if dtype == "float64" else torch.float32
    x = inputs(dtype, 6, 21, seed=9)
    dy = np.random.default_rng(2).normal(size=x.shape).astype(dtype)
    m = model_of(name, dtype)
    y = m(x)
    dx = m.backward(dy)
    t = torch.tensor(x, requires_grad=True)
    layer = eval("torch.nn." + TORCH_LAYERS[name]).to(tdt)
    ty = layer(t)
    ty.backward(torch.tensor(dy))
    rtol = TORCH_RTOL.get(name, 1e-12) if dtype == "float64" else 1e-5
    atol = 1e-13 if dtype == "float64" else 1e-6
    ty, tdx = ty.detach().numpy(), t.grad.numpy()
    assert np.isfinite(y).all() and np.isfinite(dx).all()
    # torch's Softplus overflows where threshold lets e^(beta x) overflow (float32, threshold 100); we do not
    ok = np.isfinite(ty) & np.isfinite(tdx)
    assert ok.all() or name == "softplus_0.5_100"
    np.testing.assert_allclose(y[ok], ty[ok], rtol=1e-12 if dtype == "float64" else 1e-5, atol=atol)
    np.testing.assert_allclose(dx[ok], tdx[ok], rtol=rtol, atol=atol)
    if name.startswith("prelu"):
        m2 = fm.Sequential(REFS[name][0](), dtype=dtype)
        m2(x)
        m2.zero_grad()
        m2.backward(dy)
        np.testing.assert_allclose(m2[0].weight.grad, layer.weight.grad.numpy(), rtol=1e-12 if dtype == "float64" else 1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_softmax_matches_torch(dtype):
    torch = pytest.importorskip("torch")
    x = inputs(dtype, 6, 9, seed=1)
    dy = np.random.default_rng(2).normal(size=x.shape).astype(dtype)
    m = fm.Sequential(fm.LogSoftmax(dim=1), dtype=dtype)
    y, dx = m(x), m.backward(dy)
    t = torch.tensor(x, requires_grad=True)
    ty = torch.nn.LogSoftmax(dim=1)(t)
    ty.backward(torch.tensor(dy))
    tl = dict(rtol=1e-12, atol=1e-12) if dtype == "float64" else dict(rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(y, ty.detach().numpy(), **tl)
    np.testing.assert_allclose(dx, t.grad.numpy(), **tl)


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_torch_state_dict_with_prelu_loads_and_gives_the_same_outputs(dtype):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    tdt = torch.float64 if dtype == "float64" else torch.float32
    tm = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 6), torch.nn.PReLU(6, init=0.2),
                             torch.nn.Linear(6, 5), torch.nn.PReLU(), torch.nn.Linear(5, 3), torch.nn.SELU(),
                             torch.nn.AlphaDropout(0.1), torch.nn.Mish(), torch.nn.LogSoftmax(dim=1)).to(tdt).eval()
    with torch.no_grad():
        tm[2].weight.uniform_(-1, 1)
        tm[4].weight.fill_(-0.7)
    m = fm.Sequential(fm.Flatten(), fm.Linear(4, 6), fm.PReLU(6, init=0.2), fm.Linear(6, 5), fm.PReLU(),
                      fm.Linear(5, 3), fm.SELU(), fm.AlphaDropout(0.1), fm.Mish(), fm.LogSoftmax(dim=1),
                      dtype=dtype).eval()
    sd = tm.state_dict()
    assert list(sd) == list(m.state_dict())
    m.load_state_dict(sd)
    x = np.random.default_rng(0).normal(size=(11, 4)).astype(dtype)
    want = tm(torch.tensor(x)).detach().numpy()
    np.testing.assert_allclose(m(x), want, rtol=1e-12 if dtype == "float64" else 1e-5,
                               atol=1e-13 if dtype == "float64" else 1e-6)


def test_alpha_dropout_matches_torch_given_the_mask():
    """torch draws its own mask; given the mask we drew, its formula gives the same values."""
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).normal(size=(50, 40))
    y = fm.Sequential(fm.AlphaDropout(0.3), seed=1, dtype="float64")(x)
    a, b, dropped_value = alpha_coefficients(0.3)
    keep = np.abs(y - dropped_value) > 1e-12
    # ATen's _dropout_impl for alpha dropout: noise in {0, 1}; b = (noise - 1) * alpha * a + alpha * a * p
    noise = torch.tensor(keep.astype(np.float64))
    tb = noise.add(-1).mul(ALPHA * a).add(ALPHA * a * 0.3)
    want = (torch.tensor(x) * noise.mul(a)).add(tb).numpy()
    np.testing.assert_allclose(y, want, rtol=1e-15, atol=1e-15)
    t = torch.nn.functional.alpha_dropout(torch.tensor(x), 0.3, True).numpy()  # torch's own mask
    t_kept = np.abs(t - (a * x + b)) <= 1e-12
    np.testing.assert_allclose(t[~t_kept], dropped_value, rtol=1e-15)
    assert abs((~t_kept).mean() - 0.3) < 0.05


# ---- every layer of issue 10 in one network
def _every_layer_net(make, dtype):
    """One network with every new layer (make: fastmlp or torch.nn namespace, Residual class). The
    order keeps the values moderate; both frameworks name the tensors alike."""
    nn, Residual = make
    return [nn.Flatten(), nn.Linear(6, 8), nn.BatchNorm1d(8), nn.PReLU(8, init=0.2), nn.Linear(8, 8),
            Residual(nn.Linear(8, 8), nn.LayerNorm(8), nn.ELU(0.5), nn.CELU(2.0), nn.Dropout(0.2)),
            nn.RMSNorm(8), nn.SELU(), nn.AlphaDropout(0.1), nn.SiLU(), nn.Mish(), nn.Softplus(2.0, 5.0),
            nn.Softsign(), nn.Linear(8, 8), nn.Hardtanh(-2.0, 3.0), nn.ReLU6(), nn.Hardswish(), nn.Hardsigmoid(),
            nn.LogSigmoid(), nn.GELU(), nn.GELU(approximate="tanh"), nn.PReLU(),
            Residual(nn.Linear(8, 8), nn.BatchNorm1d(8), Residual(nn.Tanh())), nn.Linear(8, 5),
            nn.LogSoftmax(dim=1)]


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_torch_state_dict_with_every_new_layer_loads_gives_the_same_outputs_and_back(dtype):
    torch = pytest.importorskip("torch")
    from test_container import torch_residual

    TResidual = torch_residual(torch)
    tdt = torch.float64 if dtype == "float64" else torch.float32
    torch.manual_seed(1)
    tm = torch.nn.Sequential(*_every_layer_net((torch.nn, TResidual), dtype)).to(tdt).eval()
    with torch.no_grad():  # every tensor away from its initial value, running statistics included
        for k, v in tm.state_dict().items():
            if v.is_floating_point():
                v.copy_(torch.rand_like(v) * 0.5 + 0.75 if k.endswith(("running_var", "weight")) and v.ndim == 1
                        else v + 0.1 * torch.randn_like(v))
            else:
                v.fill_(7)
    m = fm.Sequential(*_every_layer_net((fm, fm.Residual), dtype), dtype=dtype).eval()
    assert list(m.state_dict()) == list(tm.state_dict())
    m.load_state_dict(tm.state_dict())
    x = np.random.default_rng(0).normal(size=(13, 6)).astype(dtype)
    tol = dict(rtol=1e-11, atol=1e-12) if dtype == "float64" else dict(rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        np.testing.assert_allclose(m.predict(x), tm(torch.tensor(x)).numpy(), **tol)
    # and back: fastmlp's (changed) state into a fresh torch module gives fastmlp's outputs
    for v in m.parameters():
        v.data[...] = v.data * 0.9
    back = torch.nn.Sequential(*_every_layer_net((torch.nn, TResidual), dtype)).to(tdt).eval()
    back.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in m.state_dict().items()})
    assert int(back[2].num_batches_tracked) == 7
    with torch.no_grad():
        np.testing.assert_allclose(back(torch.tensor(x)).numpy(), m.predict(x), **tol)


def test_every_new_layer_backward_matches_finite_differences_in_training():
    """float64 central differences of sum(y * dy) through the network of every new layer in training
    mode (batch statistics, dropout masks: the same masks for every evaluation, by resetting the
    model's dropout call counter), for the input gradient and every parameter gradient."""
    m = fm.Sequential(*_every_layer_net((fm, fm.Residual), "float64"), dtype="float64", seed=3)
    rng = np.random.default_rng(5)
    for p in m.parameters():
        p.data[...] = p.data + 0.1 * rng.normal(size=p.data.shape)
    x, dy = rng.normal(size=(7, 6)), rng.normal(size=(7, 5))

    def f(z):
        m._core.dropout_calls = 0
        return float((m(z) * dy).sum())

    f(x)  # the same dropout masks as the evaluations below
    m._core.dropout_calls = 0
    m(x)
    m.zero_grad()
    dx = m.backward(dy)
    grads = {k: p.grad.copy() for k, p in m.named_parameters()}
    h = 1e-6
    num = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        e = np.zeros_like(x)
        e[idx] = h
        num[idx] = (f(x + e) - f(x - e)) / (2 * h)
    np.testing.assert_allclose(dx, num, rtol=1e-5, atol=1e-7)
    for k, p in m.named_parameters():
        flat = p.data.reshape(-1)
        g = np.zeros(flat.size)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + h
            up = f(x)
            flat[i] = old - h
            down = f(x)
            flat[i] = old
            g[i] = (up - down) / (2 * h)
        np.testing.assert_allclose(grads[k].reshape(-1), g, rtol=1e-5, atol=1e-7, err_msg=k)
