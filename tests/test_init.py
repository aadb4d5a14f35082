"""fm.init.* against torch.nn.init's formulas, by sample statistics on large
arrays (tolerances from the sample size), and Linear's initial parameters."""
from __future__ import annotations

import math

import numpy as np
import pytest

import fastmlp as fm

DTYPES = ["float64", "float32"]
SHAPE = (300, 500)  # fan_in = 500, fan_out = 300 (non-square: a swapped fan shows)
FAN_IN, FAN_OUT = 500, 300
K = 6.0  # tolerance in standard errors


def gain(nonlinearity, param=None):
    """torch.nn.init.calculate_gain, from its documentation table."""
    if nonlinearity in ("linear", "conv1d", "conv2d", "conv3d", "sigmoid", "identity"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3.0
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1.0 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4.0
    raise ValueError(nonlinearity)


def check_uniform(a, lo, hi):
    """Samples of U(lo, hi): inside the bounds, reaching close to both, right mean, std and quartiles."""
    a = np.asarray(a, dtype=np.float64).ravel()
    n = a.size
    width = hi - lo
    assert a.min() >= lo and a.max() <= hi
    assert a.min() < lo + 20 * width / n and a.max() > hi - 20 * width / n
    sd = width / math.sqrt(12.0)
    assert abs(a.mean() - (lo + hi) / 2) < K * sd / math.sqrt(n)
    # Var of the sample std of a uniform: sd^2 (kurtosis - 1) / (4 n), kurtosis 9/5
    assert abs(a.std() - sd) < K * sd * math.sqrt(0.8 / (4 * n))
    frac = np.mean(a < lo + width / 4)
    assert abs(frac - 0.25) < K * math.sqrt(0.25 * 0.75 / n)


def check_normal(a, mean, std):
    """Samples of N(mean, std^2): mean, std and the one-sigma mass."""
    a = np.asarray(a, dtype=np.float64).ravel()
    n = a.size
    assert abs(a.mean() - mean) < K * std / math.sqrt(n)
    assert abs(a.std() - std) < K * std / math.sqrt(2 * n)
    p1 = math.erf(1 / math.sqrt(2))  # 0.6827
    frac = np.mean(np.abs(a - mean) < std)
    assert abs(frac - p1) < K * math.sqrt(p1 * (1 - p1) / n)
    # a normal, not a uniform of the same std: beyond 2 sigma there is ~4.55 % of the mass
    p2 = 1 - math.erf(2 / math.sqrt(2))
    frac2 = np.mean(np.abs(a - mean) > 2 * std)
    assert abs(frac2 - p2) < K * math.sqrt(p2 * (1 - p2) / n)


# ---------------------------------------------------------------- constant fills

@pytest.mark.parametrize("dtype", DTYPES)
def test_constant_fills(dtype):
    a = np.full((7, 3), 5.0, dtype=dtype)
    assert fm.init.zeros_(a) is a
    np.testing.assert_array_equal(a, 0.0)
    assert fm.init.ones_(a) is a
    np.testing.assert_array_equal(a, 1.0)
    assert fm.init.constant_(a, -2.5) is a
    np.testing.assert_array_equal(a, -2.5)
    b = np.zeros(11, dtype=dtype)  # 1-D is fine for the non-fan initializers
    fm.init.constant_(b, 0.125)
    np.testing.assert_array_equal(b, 0.125)


# ---------------------------------------------------------------- random fills

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lo,hi", [(0.0, 1.0), (-3.0, -1.0), (-0.05, 0.05)])
def test_uniform(lo, hi, dtype):
    a = np.zeros(SHAPE, dtype=dtype)
    assert fm.init.uniform_(a, lo, hi, seed=1) is a
    check_uniform(a, lo, hi)


def test_uniform_defaults_are_0_1():
    check_uniform(fm.init.uniform_(np.zeros(SHAPE), seed=3), 0.0, 1.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mean,std", [(0.0, 1.0), (3.0, 0.5), (-1.0, 2.0)])
def test_normal(mean, std, dtype):
    a = np.zeros(SHAPE, dtype=dtype)
    assert fm.init.normal_(a, mean, std, seed=2) is a
    check_normal(a, mean, std)


def test_normal_defaults_are_0_1():
    check_normal(fm.init.normal_(np.zeros(SHAPE), seed=4), 0.0, 1.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("g", [1.0, 5.0 / 3.0, 0.5])
def test_xavier_uniform(g, dtype):
    a = np.zeros(SHAPE, dtype=dtype)
    fm.init.xavier_uniform_(a, gain=g, seed=5)
    bound = g * math.sqrt(6.0 / (FAN_IN + FAN_OUT))
    check_uniform(a, -bound, bound)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("g", [1.0, math.sqrt(2.0)])
def test_xavier_normal(g, dtype):
    a = np.zeros(SHAPE, dtype=dtype)
    fm.init.xavier_normal_(a, gain=g, seed=6)
    check_normal(a, 0.0, g * math.sqrt(2.0 / (FAN_IN + FAN_OUT)))


KAIMING = [
    # (a, mode, nonlinearity)
    (0.0, "fan_in", "leaky_relu"),
    (0.0, "fan_out", "leaky_relu"),
    (0.2, "fan_in", "leaky_relu"),
    (0.0, "fan_in", "relu"),
    (0.0, "fan_out", "tanh"),
    (0.0, "fan_in", "linear"),
    (0.0, "fan_in", "selu"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("a,mode,nl", KAIMING)
def test_kaiming_uniform(a, mode, nl, dtype):
    t = np.zeros(SHAPE, dtype=dtype)
    fm.init.kaiming_uniform_(t, a=a, mode=mode, nonlinearity=nl, seed=7)
    fan = FAN_IN if mode == "fan_in" else FAN_OUT
    bound = gain(nl, a) * math.sqrt(3.0 / fan)
    check_uniform(t, -bound, bound)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("a,mode,nl", KAIMING)
def test_kaiming_normal(a, mode, nl, dtype):
    t = np.zeros(SHAPE, dtype=dtype)
    fm.init.kaiming_normal_(t, a=a, mode=mode, nonlinearity=nl, seed=8)
    fan = FAN_IN if mode == "fan_in" else FAN_OUT
    check_normal(t, 0.0, gain(nl, a) / math.sqrt(fan))


def test_kaiming_defaults():
    """torch defaults: a=0, mode='fan_in', nonlinearity='leaky_relu' -> gain sqrt(2)."""
    t = fm.init.kaiming_uniform_(np.zeros(SHAPE), seed=9)
    b = math.sqrt(2.0) * math.sqrt(3.0 / FAN_IN)
    check_uniform(t, -b, b)
    t = fm.init.kaiming_normal_(np.zeros(SHAPE), seed=10)
    check_normal(t, 0.0, math.sqrt(2.0) / math.sqrt(FAN_IN))


def test_fans_of_3d_tensor():
    """fan_in = size(1) * receptive field, fan_out = size(0) * receptive field."""
    t = np.zeros((40, 60, 50))
    fm.init.xavier_uniform_(t, seed=11)
    bound = math.sqrt(6.0 / (60 * 50 + 40 * 50))
    check_uniform(t, -bound, bound)
    fm.init.kaiming_normal_(t, mode="fan_out", nonlinearity="relu", seed=12)
    check_normal(t, 0.0, math.sqrt(2.0) / math.sqrt(40 * 50))


# ---------------------------------------------------------------- seeds, targets

@pytest.mark.parametrize("fn", [
    lambda t, s: fm.init.uniform_(t, -1, 1, seed=s),
    lambda t, s: fm.init.normal_(t, 0, 1, seed=s),
    lambda t, s: fm.init.xavier_uniform_(t, seed=s),
    lambda t, s: fm.init.xavier_normal_(t, seed=s),
    lambda t, s: fm.init.kaiming_uniform_(t, seed=s),
    lambda t, s: fm.init.kaiming_normal_(t, seed=s),
], ids=["uniform", "normal", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal"])
def test_seeds_reproduce_and_differ(fn):
    a, b, c = (np.zeros((20, 30)) for _ in range(3))
    fn(a, 123)
    fn(b, 123)
    fn(c, 124)
    np.testing.assert_array_equal(a, b)
    assert (a != c).mean() > 0.99
    assert len(np.unique(a)) == a.size  # no repeated draws


def test_global_seed_stream_for_init():
    fm.manual_seed(31)
    a = fm.init.normal_(np.zeros((10, 10)))
    b = fm.init.normal_(np.zeros((10, 10)))
    fm.manual_seed(31)
    a2 = fm.init.normal_(np.zeros((10, 10)))
    b2 = fm.init.normal_(np.zeros((10, 10)))
    np.testing.assert_array_equal(a, a2)
    np.testing.assert_array_equal(b, b2)
    assert (a != b).all()


def test_init_a_parameter_and_a_strided_view():
    model = fm.Sequential(fm.Linear(400, 300), seed=0, dtype="float64")
    w = model[0].weight
    assert fm.init.xavier_uniform_(w, seed=1) is w
    bound = math.sqrt(6.0 / (400 + 300))
    check_uniform(w.data, -bound, bound)
    np.testing.assert_array_equal(model.state_dict()["0.weight"], w.data)
    fm.init.zeros_(model[0].bias)
    np.testing.assert_array_equal(model.state_dict()["0.bias"], 0.0)
    # a strided view is filled through the view; the rest is untouched
    base = np.full((200, 600), 7.0)
    view = base[:, ::2]
    fm.init.uniform_(view, -1, 1, seed=2)
    np.testing.assert_array_equal(base[:, 1::2], 7.0)
    check_uniform(view, -1.0, 1.0)


def test_one_dimensional_tensors_raise_for_fan_inits():
    for fn in (fm.init.xavier_uniform_, fm.init.xavier_normal_, fm.init.kaiming_uniform_, fm.init.kaiming_normal_):
        with pytest.raises(ValueError):
            fn(np.zeros(10))
    model = fm.Sequential(fm.Linear(3, 4), seed=0)
    with pytest.raises(ValueError):
        fm.init.kaiming_uniform_(model[0].bias)
    with pytest.raises(ValueError):
        fm.init.xavier_normal_(np.zeros(()))


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        fm.init.kaiming_uniform_(np.zeros((3, 3)), mode="fan_avg")
    with pytest.raises(ValueError):
        fm.init.kaiming_normal_(np.zeros((3, 3)), nonlinearity="swish")
    with pytest.raises(ValueError):
        fm.init.uniform_(np.zeros(3), 1.0, 0.0)
    with pytest.raises(ValueError):
        fm.init.normal_(np.zeros(3), 0.0, -1.0)
    with pytest.raises(TypeError):
        fm.init.zeros_(np.zeros(3, dtype=np.int64))
    with pytest.raises(TypeError):
        fm.init.zeros_([0.0, 1.0])
    ro = np.zeros(3)
    ro.flags.writeable = False
    with pytest.raises(ValueError):
        fm.init.ones_(ro)
    np.testing.assert_array_equal(ro, 0.0)


# ---------------------------------------------------------------- calculate_gain

@pytest.mark.parametrize("nl,param,expected", [
    ("linear", None, 1.0), ("conv1d", None, 1.0), ("conv2d", None, 1.0), ("conv3d", None, 1.0),
    ("sigmoid", None, 1.0), ("identity", None, 1.0), ("tanh", None, 5.0 / 3.0), ("relu", None, math.sqrt(2.0)),
    ("leaky_relu", None, math.sqrt(2.0 / (1 + 0.01 ** 2))), ("leaky_relu", 0.2, math.sqrt(2.0 / 1.04)),
    ("leaky_relu", 0.0, math.sqrt(2.0)), ("leaky_relu", 1.0, 1.0), ("selu", None, 0.75),
])
def test_calculate_gain(nl, param, expected):
    assert fm.init.calculate_gain(nl, param) == pytest.approx(expected, rel=1e-15)
    assert gain(nl, param) == pytest.approx(expected, rel=1e-15)


def test_calculate_gain_unknown_raises():
    with pytest.raises(ValueError):
        fm.init.calculate_gain("swish")


# ---------------------------------------------------------------- Linear's initial parameters

@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_default_init(dtype):
    n_in, n_out = 400, 300
    model = fm.Sequential(fm.Linear(n_in, n_out), seed=3, dtype=dtype)
    bound = 1.0 / math.sqrt(n_in)
    W = model[0].weight.data
    b = model[0].bias.data
    assert W.shape == (n_out, n_in) and b.shape == (n_out,)
    check_uniform(W, -bound, bound)
    # bias: 300 draws of U(-bound, bound), also 1/sqrt(in_features) (not 1/sqrt(out))
    assert np.abs(b).max() <= bound
    assert np.abs(b).max() > 0.9 * bound  # P(all 300 inside 0.9 bound) = 0.9^300 ~ 2e-14
    sd = bound / math.sqrt(3.0)
    assert abs(b.std() - sd) < K * sd * math.sqrt(0.8 / (4 * n_out)) + 0.01 * sd
    assert abs(b.mean()) < K * sd / math.sqrt(n_out)


def test_linear_default_init_small_fan_in():
    model = fm.Sequential(fm.Linear(1, 2000), fm.Linear(2000, 1), seed=4, dtype="float64")
    check_uniform(model[0].weight.data, -1.0, 1.0)
    check_uniform(model[0].bias.data, -1.0, 1.0)
    b = 1 / math.sqrt(2000)
    assert np.abs(model[1].weight.data).max() <= b and np.abs(model[1].bias.data).max() <= b


@pytest.mark.parametrize("init,check", [
    ("xavier_uniform", lambda W, i, o: check_uniform(W, -math.sqrt(6 / (i + o)), math.sqrt(6 / (i + o)))),
    ("xavier_normal", lambda W, i, o: check_normal(W, 0.0, math.sqrt(2 / (i + o)))),
    ("kaiming_uniform", lambda W, i, o: check_uniform(W, -math.sqrt(6 / i), math.sqrt(6 / i))),
    ("kaiming_normal", lambda W, i, o: check_normal(W, 0.0, math.sqrt(2 / i))),
    ("uniform", lambda W, i, o: check_uniform(W, 0.0, 1.0)),
    ("normal", lambda W, i, o: check_normal(W, 0.0, 1.0)),
    ("zeros", lambda W, i, o: np.testing.assert_array_equal(W, 0.0)),
    ("ones", lambda W, i, o: np.testing.assert_array_equal(W, 1.0)),
])
def test_linear_named_init_and_zero_bias(init, check):
    n_in, n_out = 500, 300
    model = fm.Sequential(fm.Linear(n_in, n_out, init=init), seed=5, dtype="float64")
    check(model[0].weight.data, n_in, n_out)
    np.testing.assert_array_equal(model[0].bias.data, 0.0)


def test_linear_bad_init_name():
    with pytest.raises(ValueError):
        fm.Linear(3, 4, init="he")


def test_model_seed_reproduces_and_differs():
    a = fm.Sequential(fm.Linear(20, 30), fm.Tanh(), fm.Linear(30, 5), seed=7)
    b = fm.Sequential(fm.Linear(20, 30), fm.Tanh(), fm.Linear(30, 5), seed=7)
    c = fm.Sequential(fm.Linear(20, 30), fm.Tanh(), fm.Linear(30, 5), seed=8)
    for k in a.state_dict():
        np.testing.assert_array_equal(a.state_dict()[k], b.state_dict()[k])
        assert (a.state_dict()[k] != c.state_dict()[k]).all()


def test_manual_seed_makes_seedless_models_reproducible():
    def make():
        return fm.Sequential(fm.Linear(10, 8), fm.ReLU(), fm.Linear(8, 3))

    fm.manual_seed(1234)
    a1, a2 = make(), make()
    fm.manual_seed(1234)
    b1, b2 = make(), make()
    fm.manual_seed(1235)
    c1 = make()
    for k in a1.state_dict():
        np.testing.assert_array_equal(a1.state_dict()[k], b1.state_dict()[k])
        np.testing.assert_array_equal(a2.state_dict()[k], b2.state_dict()[k])
        assert (a1.state_dict()[k] != a2.state_dict()[k]).all()
        assert (a1.state_dict()[k] != c1.state_dict()[k]).all()
    assert fm.initial_seed() == 1235


def test_reset_parameters_redraws_from_seed():
    model = fm.Sequential(fm.Linear(6, 4), seed=21, dtype="float64")
    sd0 = model.state_dict()
    fm.init.zeros_(model[0].weight)
    model.reset_parameters()
    np.testing.assert_array_equal(model.state_dict()["0.weight"], sd0["0.weight"])
    model.reset_parameters(seed=22)
    assert (model.state_dict()["0.weight"] != sd0["0.weight"]).all()
    assert np.abs(model.state_dict()["0.weight"]).max() <= 1 / math.sqrt(6)
