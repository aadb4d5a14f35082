"""cpp/vmath.h's vexp (the vectorizable e^x behind sigmoid and cross-entropy),
checked through the float64 Sigmoid: for x < 0 it is e^x / (1 + e^x), which is
e^x itself to the last bit once x < -37. Compared with the C library's exp
(through NumPy) over the whole double range, in every SIMD clone the machine
runs (the clone is chosen at load time; the scalar fallback computes the same
IEEE operations)."""
import math

import numpy as np
import pytest

import fastmlp as fm


def sigmoid64(x):
    # the engine's forward directly: the Python API refuses non-finite inputs
    s = fm.Sequential(fm.Sigmoid(), dtype="float64")
    return np.array(s._core.forward(np.ascontiguousarray(x, dtype=np.float64).reshape(-1, 1))).ravel()


def reference(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def test_exp_within_2_ulp_over_the_normal_range():
    x = np.concatenate([np.linspace(-708.39, -37, 400_001), -np.logspace(-300, np.log10(708.39), 20_001)])
    got, want = sigmoid64(x), reference(x)
    assert np.isfinite(got).all()
    np.testing.assert_array_max_ulp(got[x < -37], np.exp(x[x < -37]), maxulp=2)
    np.testing.assert_allclose(got, want, rtol=4e-16, atol=0)


def test_sigmoid_both_halves_and_odd_sizes():
    rng = np.random.default_rng(0)
    for n in (0, 1, 7, 8, 9, 15, 16, 17, 1023, 1025):
        x = rng.normal(scale=20, size=n)
        np.testing.assert_allclose(sigmoid64(x), reference(x), rtol=4e-16, atol=0)


@pytest.mark.parametrize("x, want", [
    (0.0, 0.5), (-0.0, 0.5), (np.inf, 1.0), (-np.inf, 0.0), (800.0, 1.0), (-800.0, 0.0),
    (-745.2, 0.0), (1e-300, 0.5), (-1e-300, 0.5), (40.0, 1.0),
])
def test_special_values(x, want):
    assert sigmoid64([x])[0] == want


def test_nan_propagates():
    assert np.isnan(sigmoid64([np.nan])[0])


def test_below_the_smallest_normal_is_zero_or_the_true_tiny_value():
    x = np.linspace(-745.2, -708.4, 1001)
    got = sigmoid64(x)
    assert (got >= 0).all() and (got <= np.exp(x) * (1 + 1e-12) + 5e-324).all()


# ---- vtanh (through vexpm1), behind the Tanh activation
def tanh64(x):
    s = fm.Sequential(fm.Tanh(), dtype="float64")
    return np.array(s._core.forward(np.ascontiguousarray(x, dtype=np.float64).reshape(-1, 1))).ravel()


def test_tanh_within_4_ulp_of_the_c_library():
    rng = np.random.default_rng(1)
    x = np.concatenate([np.linspace(-25, 25, 100_001), rng.normal(size=50_000) * np.exp2(-rng.integers(0, 60, 50_000)),
                        np.logspace(-310, 1, 5_001), -np.logspace(-310, 1, 5_001)])
    want = np.array([math.tanh(v) for v in x])
    np.testing.assert_array_max_ulp(tanh64(x), want, maxulp=4)


@pytest.mark.parametrize("x, want", [(0.0, 0.0), (np.inf, 1.0), (-np.inf, -1.0), (30.0, 1.0), (-400.0, -1.0),
                                     (1e-300, 1e-300), (-5e-324, -5e-324)])
def test_tanh_special_values(x, want):
    assert tanh64([x])[0] == want


def test_tanh_keeps_the_sign_of_zero_and_nan():
    y = tanh64([-0.0, np.nan])
    assert y[0] == 0 and np.signbit(y[0]) and np.isnan(y[1])


def test_float32_tanh_and_sigmoid_within_4_ulp():
    # the float versions (vexp(float), vtanh(float)): a shorter series on twice the lanes
    rng = np.random.default_rng(3)
    x = np.concatenate([np.linspace(-100, 100, 200_001), rng.normal(size=50_000) * np.exp2(-rng.integers(0, 40, 50_000)),
                        [0.0, -0.0, 1e-30, -1e-30, 87.0, -87.0, 88.7, -88.7, 89.0, -104.0]]).astype(np.float32)
    x64 = x.astype(np.float64)
    for layer, f in ((fm.Tanh(), np.tanh), (fm.Sigmoid(), lambda v: np.where(v >= 0, 1 / (1 + np.exp(-v)),
                                                                               np.exp(v) / (1 + np.exp(v))))):
        got = np.asarray(fm.Sequential(layer)._core.forward(x.reshape(-1, 1))).ravel()
        want = f(x64)
        normal = np.abs(want) >= np.finfo(np.float32).tiny  # below it the float result is flushed to 0
        np.testing.assert_array_max_ulp(got[normal], want[normal].astype(np.float32), maxulp=4)
        assert np.all(np.abs(got[~normal]) <= np.finfo(np.float32).tiny)
        assert np.isnan(fm.Sequential(layer)._core.forward(np.array([[np.nan]], np.float32))[0, 0])


# ---- vlog1p and verf (behind Softplus, LogSigmoid, Mish's neighbours and GELU), called directly
def vmath(name, x, dtype):
    y = np.array(x, dtype=dtype)  # a fresh C-contiguous copy, overwritten in place
    (fm._core.vmath64 if dtype == np.float64 else fm._core.vmath32)(name, y)
    return y


def ulps(got, want, dtype):
    """|got - want| in units of the last place of want (in dtype)."""
    want = want.astype(dtype)
    return np.abs(got.astype(np.float64) - want.astype(np.float64)) / np.spacing(np.abs(want)).astype(np.float64)


def test_log1p_within_1_ulp_of_the_c_library():
    rng = np.random.default_rng(4)
    x = np.concatenate([np.linspace(-0.999999, 4, 1_000_001), np.logspace(-310, 308, 20_001),
                        -np.logspace(-310, np.log10(0.999), 20_001), -1 + np.logspace(-16, -1, 5_001),
                        rng.normal(size=20_000) * np.exp2(-rng.integers(0, 60, 20_000))])
    x = x[x > -1]
    assert ulps(vmath("log1p", x, np.float64), np.log1p(x), np.float64).max() <= 1


def test_float32_log1p_within_1_ulp():
    rng = np.random.default_rng(5)
    x = np.concatenate([np.linspace(-0.9999, 4, 500_001), np.logspace(-44, 38, 20_001), -np.logspace(-44, np.log10(0.999), 5_001),
                        rng.normal(size=20_000) * np.exp2(-rng.integers(0, 30, 20_000))]).astype(np.float32)
    x = x[x > -1]
    want = np.log1p(x.astype(np.float64))  # correctly rounded to float32 but for double rounding
    assert ulps(vmath("log1p", x, np.float32), want, np.float32).max() <= 1


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_log1p_special_values(dtype):
    x = np.array([0.0, -0.0, -1.0, -1.5, -np.inf, np.inf, np.nan], dtype=dtype)
    y = vmath("log1p", x, dtype)
    assert y[0] == 0 and not np.signbit(y[0]) and y[1] == 0 and np.signbit(y[1])
    assert y[2] == -np.inf and np.isnan(y[3]) and np.isnan(y[4]) and y[5] == np.inf and np.isnan(y[6])


def test_erf_within_2_ulp_of_the_c_library_over_a_dense_grid():
    rng = np.random.default_rng(6)
    x = np.concatenate([np.linspace(-7, 7, 2_800_001), np.logspace(-310, 2, 20_001), -np.logspace(-310, 2, 20_001),
                        rng.normal(size=50_000) * np.exp2(-rng.integers(0, 60, 50_000)),
                        np.nextafter(1.0, [0.0, 2.0]), np.nextafter(6.0, [0.0, 7.0])])
    want = np.array([math.erf(v) for v in x])
    assert ulps(vmath("erf", x, np.float64), want, np.float64).max() <= 2


def test_float32_erf_within_1_ulp():
    x = np.concatenate([np.linspace(-5, 5, 1_000_001), np.logspace(-44, 1, 10_001),
                        -np.logspace(-44, 1, 10_001)]).astype(np.float32)
    want = np.array([math.erf(v) for v in x.astype(np.float64)])
    assert ulps(vmath("erf", x, np.float32), want, np.float32).max() <= 1


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_erf_special_values(dtype):
    y = vmath("erf", [0.0, -0.0, np.inf, -np.inf, 6.0, -6.0, 1e3, -1e30, np.nan], dtype)
    assert y[0] == 0 and not np.signbit(y[0]) and y[1] == 0 and np.signbit(y[1])
    np.testing.assert_array_equal(y[2:8], [1, -1, 1, -1, 1, -1])
    assert np.isnan(y[8])


def test_gelu_in_every_simd_clone_computes_what_the_scalar_erf_does():
    # the GELU layer's loop runs in the machine's widest clone; the binding above runs the scalar
    # code: IEEE operations without contraction give the same bits
    x = np.random.default_rng(7).normal(scale=3, size=10_001)
    got = np.asarray(fm.Sequential(fm.GELU(), dtype="float64")._core.forward(x.reshape(-1, 1))).ravel()
    np.testing.assert_array_equal(got, 0.5 * x * (1 + vmath("erf", x * 0.7071067811865476, np.float64)))


def test_unknown_vmath_function():
    with pytest.raises(ValueError, match="unknown vmath function"):
        vmath("sin", [1.0], np.float64)
