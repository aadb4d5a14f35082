"""Activations and the Linear layer against the NumPy float64 reference."""
from __future__ import annotations

import numpy as np
import pytest

import fastmlp as fm
import reference as ref

BATCHES = [0, 1, 7, 31, 32, 33]
WIDTHS = [1, 3, 16, 17]
DTYPES = ["float64", "float32"]

# (id, layer factory, reference kind, reference kwargs)
ACTS = [
    ("relu", lambda: fm.ReLU(), "relu", {}),
    ("leaky_relu", lambda: fm.LeakyReLU(), "leaky_relu", {"negative_slope": 0.01}),
    ("leaky_relu_0.2", lambda: fm.LeakyReLU(0.2), "leaky_relu", {"negative_slope": 0.2}),
    ("leaky_relu_neg", lambda: fm.LeakyReLU(-0.5), "leaky_relu", {"negative_slope": -0.5}),
    ("sigmoid", lambda: fm.Sigmoid(), "sigmoid", {}),
    ("tanh", lambda: fm.Tanh(), "tanh", {}),
    ("gelu", lambda: fm.GELU(), "gelu", {}),
    ("softmax", lambda: fm.Softmax(), "softmax", {}),
    ("identity", lambda: fm.Identity(), "identity", {}),
]
ACT_IDS = [a[0] for a in ACTS]


def tol(dtype):
    """(rtol, atol) for comparing a result of the given dtype with the float64 reference."""
    return (1e-10, 1e-12) if dtype == "float64" else (1e-5, 1e-6)


def make_input(rng, batch, width, dtype):
    x = rng.normal(0.0, 2.5, size=(batch, width))
    if x.size:
        x.flat[:: 5] = 0.0  # exact zeros: the kinks of ReLU / LeakyReLU
    return x.astype(dtype)


# ---------------------------------------------------------------- activations

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("act", ACTS, ids=ACT_IDS)
def test_activation_forward_backward(act, batch, width, dtype):
    _, factory, kind, kw = act
    rng = np.random.default_rng(1000 * batch + width)
    x = make_input(rng, batch, width, dtype)
    dy = rng.normal(size=(batch, width)).astype(dtype)
    model = fm.Sequential(factory(), dtype=dtype)
    out = model(x)
    assert out.dtype == np.dtype(dtype)
    assert out.shape == (batch, width)
    rtol, atol = tol(dtype)
    np.testing.assert_allclose(out, ref.activation(kind, x, **kw), rtol=rtol, atol=atol)
    dx = model.backward(dy)
    assert dx.dtype == np.dtype(dtype)
    assert dx.shape == (batch, width)
    np.testing.assert_allclose(dx, ref.activation_backward(kind, x, dy, **kw), rtol=rtol, atol=atol)
    assert model.num_parameters() == 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS, ids=ACT_IDS)
def test_activation_one_sample_1d(act, dtype):
    _, factory, kind, kw = act
    x = np.array([-2.0, -0.5, 0.0, 0.7, 3.0], dtype=dtype)
    dy = np.array([0.3, -1.0, 2.0, 0.5, -0.25], dtype=dtype)
    model = fm.Sequential(factory(), dtype=dtype)
    out = model(x)
    assert out.shape == (5,)
    rtol, atol = tol(dtype)
    np.testing.assert_allclose(out, ref.activation(kind, x[None], **kw)[0], rtol=rtol, atol=atol)
    dx = model.backward(dy)
    assert dx.shape == (5,)
    np.testing.assert_allclose(dx, ref.activation_backward(kind, x[None], dy[None], **kw)[0], rtol=rtol, atol=atol)


EXTREME = [-1000.0, -80.0, -1.0, 0.0, 1.0, 80.0, 1000.0]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", [a for a in ACTS if a[0] != "softmax"], ids=[i for i in ACT_IDS if i != "softmax"])
def test_activation_extreme_inputs(act, dtype):
    _, factory, kind, kw = act
    x = np.array([EXTREME, EXTREME[::-1]], dtype=dtype)
    dy = np.ones_like(x)
    model = fm.Sequential(factory(), dtype=dtype)
    out = model(x)
    dx = model.backward(dy)
    assert np.isfinite(out).all() and np.isfinite(dx).all()
    rtol, atol = tol(dtype)
    np.testing.assert_allclose(out, ref.activation(kind, x, **kw), rtol=rtol, atol=atol)
    np.testing.assert_allclose(dx, ref.activation_backward(kind, x, dy, **kw), rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_extreme_limits_exact(dtype):
    x = np.array([[1000.0, -1000.0, 0.0]], dtype=dtype)
    dy = np.ones_like(x)
    s = fm.Sequential(fm.Sigmoid(), dtype=dtype)
    out = s(x)
    assert out[0, 0] == 1.0 and out[0, 1] == 0.0 and out[0, 2] == 0.5
    np.testing.assert_array_equal(s.backward(dy), [[0.0, 0.0, 0.25]])
    t = fm.Sequential(fm.Tanh(), dtype=dtype)
    np.testing.assert_array_equal(t(x), [[1.0, -1.0, 0.0]])
    np.testing.assert_array_equal(t.backward(dy), [[0.0, 0.0, 1.0]])
    g = fm.Sequential(fm.GELU(), dtype=dtype)
    np.testing.assert_array_equal(g(x), [[1000.0, 0.0, 0.0]])
    np.testing.assert_array_equal(g.backward(dy), [[1.0, 0.0, 0.5]])
    r = fm.Sequential(fm.ReLU(), dtype=dtype)
    np.testing.assert_array_equal(r(x), [[1000.0, 0.0, 0.0]])
    np.testing.assert_array_equal(r.backward(dy), [[1.0, 0.0, 0.0]])  # PyTorch: relu'(0) = 0
    lr = fm.Sequential(fm.LeakyReLU(0.1), dtype=dtype)
    np.testing.assert_allclose(lr(x), [[1000.0, -100.0, 0.0]], rtol=1e-7)
    np.testing.assert_allclose(lr.backward(dy), [[1.0, 0.1, 0.1]], rtol=1e-7)  # PyTorch: slope at 0


# ---------------------------------------------------------------- softmax specifics

@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_extreme_rows(dtype):
    x = np.array([[1000.0, -1000.0],
                  [-1000.0, 1000.0],
                  [1000.0, 1000.0],
                  [-1000.0, -1000.0],
                  [80.0, -80.0],
                  [0.0, 0.0]], dtype=dtype)
    m = fm.Sequential(fm.Softmax(), dtype=dtype)
    out = m(x)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out[0], [1.0, 0.0])
    np.testing.assert_array_equal(out[1], [0.0, 1.0])
    np.testing.assert_array_equal(out[2:4], [[0.5, 0.5], [0.5, 0.5]])
    np.testing.assert_array_equal(out[5], [0.5, 0.5])
    rtol, atol = tol(dtype)
    np.testing.assert_allclose(out, ref.softmax(x), rtol=rtol, atol=1e-30)
    dy = np.random.default_rng(0).normal(size=x.shape).astype(dtype)
    dx = m.backward(dy)
    assert np.isfinite(dx).all()
    np.testing.assert_allclose(dx, ref.softmax_backward(x, dy), rtol=rtol, atol=atol)
    # a saturated row has a zero Jacobian
    np.testing.assert_array_equal(dx[:2], 0.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_rows_sum_to_one_and_backward_is_jvp(dtype):
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(9, 6)) * 10).astype(dtype)
    m = fm.Sequential(fm.Softmax(), dtype=dtype)
    out = m(x)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=tol(dtype)[0] * 10)
    # the JVP of a constant vector is zero (rows of J sum to zero)
    np.testing.assert_allclose(m.backward(np.ones_like(x)), 0.0, atol=tol(dtype)[1])
    # JVP with a one-hot dy picks a column of the Jacobian
    m(x)
    for j in range(6):
        dy = np.zeros_like(x)
        dy[:, j] = 1.0
        dx = m.backward(dy, retain_graph=True)
        for r in range(x.shape[0]):
            J = ref.softmax_jacobian(ref.softmax(x[r:r + 1])[0])
            np.testing.assert_allclose(dx[r], J[j, :], rtol=tol(dtype)[0], atol=tol(dtype)[1])
    # not the elementwise s (1 - s) shortcut
    dy = rng.normal(size=x.shape).astype(dtype)
    s = ref.softmax(x)
    wrong = dy * s * (1 - s)
    assert np.abs(m.backward(dy) - wrong).max() > 1e-3


def test_softmax_width_one():
    m = fm.Sequential(fm.Softmax(), dtype="float64")
    np.testing.assert_array_equal(m(np.array([[5.0], [-1000.0], [0.0]])), [[1.0], [1.0], [1.0]])
    np.testing.assert_array_equal(m.backward(np.array([[3.0], [-2.0], [1.0]])), [[0.0], [0.0], [0.0]])


# ---------------------------------------------------------------- Linear

LINEAR_SHAPES = [(1, 1), (3, 16), (17, 3), (16, 17), (33, 1)]


def linear_model(n_in, n_out, bias, dtype, rng):
    model = fm.Sequential(fm.Linear(n_in, n_out, bias=bias), seed=0, dtype=dtype)
    W = rng.normal(size=(n_out, n_in))
    sd = {"0.weight": W}
    b = None
    if bias:
        b = rng.normal(size=n_out)
        sd["0.bias"] = b
    model.load_state_dict(sd)
    # the model holds the values rounded to its dtype
    W = W.astype(dtype).astype(np.float64)
    b = None if b is None else b.astype(dtype).astype(np.float64)
    return model, W, b


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", LINEAR_SHAPES, ids=[f"{a}x{b}" for a, b in LINEAR_SHAPES])
@pytest.mark.parametrize("batch", BATCHES)
def test_linear_forward_backward(batch, shape, bias, dtype):
    n_in, n_out = shape
    rng = np.random.default_rng(batch * 100 + n_in)
    model, W, b = linear_model(n_in, n_out, bias, dtype, rng)
    assert [n for n, _ in model.named_parameters()] == (["0.weight", "0.bias"] if bias else ["0.weight"])
    x = rng.normal(size=(batch, n_in)).astype(dtype)
    dy = rng.normal(size=(batch, n_out)).astype(dtype)
    out = model(x)
    assert out.shape == (batch, n_out) and out.dtype == np.dtype(dtype)
    # float32 matrix products accumulate up to n_in terms of size O(1)
    rtol, atol = (1e-10, 1e-12) if dtype == "float64" else (1e-5, 1e-5)
    np.testing.assert_allclose(out, ref.linear_forward(x, W, b), rtol=rtol, atol=atol)
    model.zero_grad()
    dx = model.backward(dy)
    rdx, rdW, rdb = ref.linear_backward(x, W, dy)
    assert dx.shape == (batch, n_in)
    np.testing.assert_allclose(dx, rdx, rtol=rtol, atol=atol)
    np.testing.assert_allclose(model[0].weight.grad, rdW, rtol=rtol, atol=atol)
    if bias:
        np.testing.assert_allclose(model[0].bias.grad, rdb, rtol=rtol, atol=atol)
    if batch == 0:
        np.testing.assert_array_equal(model[0].weight.grad, 0.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_values_hand_computed(dtype):
    model = fm.Sequential(fm.Linear(2, 3), dtype=dtype, seed=0)
    model.load_state_dict({"0.weight": [[1.0, 2.0], [3.0, 4.0], [-1.0, 0.5]], "0.bias": [0.5, -1.0, 2.0]})
    out = model(np.array([[1.0, -1.0], [2.0, 0.0]], dtype=dtype))
    np.testing.assert_array_equal(out, [[-0.5, -2.0, 0.5], [2.5, 5.0, 0.0]])
    model.zero_grad()
    dx = model.backward(np.array([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]], dtype=dtype))
    np.testing.assert_array_equal(dx, [[-1.0, 3.0], [4.0, 3.5]])
    np.testing.assert_array_equal(model[0].weight.grad, [[1.0, -1.0], [2.0, 0.0], [0.0, -2.0]])
    np.testing.assert_array_equal(model[0].bias.grad, [1.0, 1.0, 1.0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_1d_input(dtype):
    rng = np.random.default_rng(7)
    model, W, b = linear_model(5, 4, True, dtype, rng)
    x = rng.normal(size=5).astype(dtype)
    out = model(x)
    assert out.shape == (4,)
    rtol, atol = (1e-10, 1e-12) if dtype == "float64" else (1e-5, 1e-5)
    np.testing.assert_allclose(out, ref.linear_forward(x[None], W, b)[0], rtol=rtol, atol=atol)
    dy = rng.normal(size=4).astype(dtype)
    model.zero_grad()
    dx = model.backward(dy)
    assert dx.shape == (5,)
    rdx, rdW, rdb = ref.linear_backward(x[None], W, dy[None])
    np.testing.assert_allclose(dx, rdx[0], rtol=rtol, atol=atol)
    np.testing.assert_allclose(model[0].weight.grad, rdW, rtol=rtol, atol=atol)
    np.testing.assert_allclose(model[0].bias.grad, rdb, rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_grads_accumulate_and_zero_grad(dtype):
    rng = np.random.default_rng(11)
    model, W, b = linear_model(6, 4, True, dtype, rng)
    x1, x2 = (rng.normal(size=(5, 6)).astype(dtype) for _ in range(2))
    d1, d2 = (rng.normal(size=(5, 4)).astype(dtype) for _ in range(2))
    model.zero_grad()
    model(x1)
    model.backward(d1)
    model(x2)
    model.backward(d2)
    _, gW1, gb1 = ref.linear_backward(x1, W, d1)
    _, gW2, gb2 = ref.linear_backward(x2, W, d2)
    rtol, atol = (1e-10, 1e-12) if dtype == "float64" else (1e-5, 1e-5)
    np.testing.assert_allclose(model[0].weight.grad, gW1 + gW2, rtol=rtol, atol=atol)
    np.testing.assert_allclose(model[0].bias.grad, gb1 + gb2, rtol=rtol, atol=atol)
    # two backward calls on the same forward (retain_graph) also add up
    model.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(model[0].weight.grad, 0.0)
    np.testing.assert_array_equal(model[0].bias.grad, 0.0)
    model.zero_grad()  # torch's default: set_to_none
    assert model[0].weight.grad is None and model[0].bias.grad is None
    model(x1)
    model.backward(d1, retain_graph=True)
    model.backward(d1)
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        model.backward(d1)
    np.testing.assert_allclose(model[0].weight.grad, 2 * gW1, rtol=rtol, atol=atol)
    np.testing.assert_allclose(model[0].bias.grad, 2 * gb1, rtol=rtol, atol=atol)
    # grads named_parameters exposes are the same buffers
    grads = {n: p.grad for n, p in model.named_parameters()}
    np.testing.assert_allclose(grads["0.weight"], 2 * gW1, rtol=rtol, atol=atol)
    model.zero_grad(set_to_none=False)
    for _, p in model.named_parameters():
        np.testing.assert_array_equal(p.grad, 0.0)
    # zero_grad does not touch the weights
    np.testing.assert_allclose(model[0].weight.data, W, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_activation_stack_vs_reference(dtype):
    rng = np.random.default_rng(5)
    kinds = ["linear", "tanh", "linear", ("leaky_relu", {"negative_slope": 0.2}), "linear", "softmax"]
    model = fm.Sequential(fm.Linear(7, 16), fm.Tanh(), fm.Linear(16, 17), fm.LeakyReLU(0.2),
                          fm.Linear(17, 3), fm.Softmax(), seed=3, dtype=dtype)
    sd = model.state_dict()
    net = ref.RefSequential.from_state(kinds, sd)
    x = rng.normal(size=(33, 7)).astype(dtype)
    dy = rng.normal(size=(33, 3)).astype(dtype)
    out = model(x)
    rtol, atol = (1e-10, 1e-12) if dtype == "float64" else (1e-4, 1e-5)
    np.testing.assert_allclose(out, net(x), rtol=rtol, atol=atol)
    model.zero_grad()
    dx = model.backward(dy)
    rdx, rgrads = net.backward(dy)
    np.testing.assert_allclose(dx, rdx, rtol=rtol, atol=atol)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, rgrads[name], rtol=rtol, atol=atol, err_msg=name)


def test_forward_does_not_alias_input_or_previous_output():
    model = fm.Sequential(fm.Tanh(), dtype="float64")
    x = np.linspace(-2, 2, 12).reshape(3, 4)
    x0 = x.copy()
    out1 = model(x)
    np.testing.assert_array_equal(x, x0)
    out1_copy = out1.copy()
    model(x * 2)
    np.testing.assert_array_equal(out1, out1_copy)
    np.testing.assert_allclose(out1, np.tanh(x0), rtol=1e-14)


def test_bad_inputs_raise():
    model = fm.Sequential(fm.Linear(3, 2), seed=0, dtype="float64")
    with pytest.raises(ValueError):
        model(np.zeros((2, 4)))
    with pytest.raises(ValueError):
        model(np.zeros((2, 3, 1)))
    model(np.zeros((2, 3)))
    with pytest.raises(ValueError):
        model.backward(np.zeros((2, 3)))
    with pytest.raises(ValueError):
        model.load_state_dict({"0.weight": np.zeros((3, 2)), "0.bias": np.zeros(2)})
    with pytest.raises(KeyError):
        model.load_state_dict({"0.weight": np.zeros((2, 3))})
    with pytest.raises(ValueError):
        fm.LeakyReLU(float("nan"))
