"""Gradient clipping: fm.nn.utils.clip_grad_norm_ / clip_grad_value_ against a NumPy
reference (and torch), and fit / train_step's clipping inside the C++ loop against
an explicit NumPy training loop (and torch's loop with torch.nn.utils.clip_grad_norm_)."""
import math

import numpy as np
import pytest

import fastmlp as fm
from reference import RefSequential, mse_loss, tanh, tanh_backward  # noqa: F401
from reference_optim import DEFAULTS, UPDATES
from test_container import torch64  # noqa: F401  (torch with float64 scalar state: ASGD's eta)


def _model(dtype="float64", seed=3):
    return fm.Sequential(fm.Linear(5, 7), fm.Tanh(), fm.Linear(7, 2), seed=seed, dtype=dtype)


def _set_grads(m, rng, scale=1.0):
    grads = []
    for p in m.parameters():
        p.grad = rng.normal(size=p.shape) * scale
        grads.append(np.array(p.grad, dtype=np.float64))
    return grads


def _ref_norm(grads, ord):
    """The norm of all gradients flattened into one vector (equal to torch's norm of norms for ord != 0)."""
    a = np.abs(np.concatenate([g.ravel() for g in grads]))
    if ord == math.inf:
        return a.max()
    return (a ** ord).sum() ** (1 / ord)


@pytest.mark.parametrize("ord", [1.0, 2.0, math.inf, 0.5])
@pytest.mark.parametrize("max_norm", [0.3, 1e6])
def test_clip_grad_norm_matches_numpy(ord, max_norm):
    m = _model()
    grads = _set_grads(m, np.random.default_rng(1))
    total = fm.nn.utils.clip_grad_norm_(m.parameters(), max_norm, norm_type=ord)
    want = _ref_norm(grads, ord)
    assert isinstance(total, np.ndarray) and total.shape == () and total.dtype == np.float64
    assert float(total) == pytest.approx(want, rel=1e-12)
    coef = min(1.0, max_norm / (want + 1e-6))
    for p, g in zip(m.parameters(), grads):
        np.testing.assert_allclose(p.grad, g * coef, rtol=1e-12)
    if max_norm < want:  # clipped to max_norm
        assert _ref_norm([np.asarray(p.grad) for p in m.parameters()], ord) == pytest.approx(max_norm, rel=1e-5)


def test_clip_grad_norm_float32_skips_none_and_writes_into_the_model():
    m = _model("float32")
    grads = _set_grads(m, np.random.default_rng(2))
    first = list(m.parameters())[0]
    first.grad = None  # skipped, as torch's None grads
    total = fm.nn.utils.clip_grad_norm_(m.parameters(), 0.5)
    assert total.dtype == np.float32
    want = _ref_norm(grads[1:], 2)
    assert float(total) == pytest.approx(want, rel=1e-5)
    assert first.grad is None
    flat = m._core.parameters()  # the C++ gradient buffer holds the clipped values
    for (_, _, _, g), p in zip(flat[1:], list(m.parameters())[1:]):
        np.testing.assert_array_equal(g, p.grad)
    np.testing.assert_allclose(list(m.parameters())[1].grad, grads[1] * 0.5 / (want + 1e-6), rtol=1e-5)


def test_clip_grad_norm_no_grads_and_single_parameter():
    m = _model()
    m.zero_grad()
    assert float(fm.nn.utils.clip_grad_norm_(m.parameters(), 1.0)) == 0.0
    p = list(m.parameters())[2]
    p.grad = np.full(p.shape, 3.0)  # (2, 7): norm 3 sqrt(14)
    total = fm.nn.utils.clip_grad_norm_(p, 1.0)
    assert float(total) == pytest.approx(3 * math.sqrt(14), rel=1e-12)
    np.testing.assert_allclose(p.grad, 3.0 / (3 * math.sqrt(14) + 1e-6), rtol=1e-12)


def test_clip_grad_norm_nonfinite():
    m = _model()
    grads = _set_grads(m, np.random.default_rng(3))
    list(m.parameters())[0].grad[0, 0] = np.inf
    with pytest.raises(RuntimeError, match="non-finite"):
        fm.nn.utils.clip_grad_norm_(m.parameters(), 1.0, error_if_nonfinite=True)
    # a failed call changes nothing
    np.testing.assert_array_equal(list(m.parameters())[1].grad, grads[1])
    total = fm.nn.utils.clip_grad_norm_(m.parameters(), 1.0)  # torch: scaled by 1 / inf
    assert float(total) == math.inf
    assert np.isnan(list(m.parameters())[0].grad[0, 0])
    np.testing.assert_array_equal(list(m.parameters())[1].grad, 0.0)


@pytest.mark.parametrize("bad,err", [(dict(max_norm=float("nan")), ValueError), (dict(max_norm="1"), TypeError),
                                     (dict(max_norm=1.0, norm_type=float("nan")), ValueError),
                                     (dict(max_norm=1.0, foreach=3), TypeError)])
def test_clip_grad_norm_bad_arguments(bad, err):
    m = _model()
    grads = _set_grads(m, np.random.default_rng(4))
    with pytest.raises(err):
        fm.nn.utils.clip_grad_norm_(m.parameters(), **bad)
    with pytest.raises(TypeError, match="Parameters"):
        fm.nn.utils.clip_grad_norm_([np.ones(3)], 1.0)
    for p, g in zip(m.parameters(), grads):
        np.testing.assert_array_equal(p.grad, g)


def test_clip_grad_value_matches_numpy():
    m = _model("float32")
    grads = _set_grads(m, np.random.default_rng(5))
    assert fm.nn.utils.clip_grad_value_(m.parameters(), 0.25) is None
    for p, g in zip(m.parameters(), grads):
        np.testing.assert_array_equal(p.grad, np.clip(g, -0.25, 0.25).astype(np.float32))
    with pytest.raises(ValueError, match="non-negative"):
        fm.nn.utils.clip_grad_value_(m.parameters(), -1.0)


def test_nn_utils_import_paths():
    from fastmlp.nn.utils import clip_grad_norm_, clip_grad_value_

    import fastmlp.nn.utils

    assert fm.nn.utils is fastmlp.nn.utils
    assert clip_grad_norm_ is fm.nn.utils.clip_grad_norm_ and clip_grad_value_ is fm.nn.utils.clip_grad_value_


# ---------------------------------------------------------------- fit / train_step against a NumPy loop

OPTS = {"SGD": dict(lr=0.1, momentum=0.9), "AdamW": dict(lr=0.05, weight_decay=0.1),
        "ASGD": dict(lr=0.1, lambd=0.01, t0=5.0, weight_decay=0.01)}


def _numpy_loop(m, X, Y, name, batch, steps, max_norm=math.inf, value=math.inf):
    """Plain NumPy: forward, MSE, backward, torch's clip_grad_norm_ / clip_grad_value_, the optimizer."""
    sd = {k: np.array(v, dtype=np.float64) for k, v in m.state_dict().items()}
    ref = RefSequential.from_state(["linear", "tanh", "linear"], sd)
    params = [ref.layers[0][1][0], ref.layers[0][1][1], ref.layers[2][1][0], ref.layers[2][1][1]]
    names = ["0.weight", "0.bias", "2.weight", "2.bias"]
    states = [{} for _ in params]
    cfg = {**DEFAULTS[name], **OPTS[name]}
    update = UPDATES[name]
    n = X.shape[0]
    for k in range(steps):
        s = (k * batch) % n
        xb, yb = X[s:s + batch], Y[s:s + batch]
        _, dy = mse_loss(ref(xb), yb)
        _, grads = ref.backward(dy)
        gs = [grads[nm] for nm in names]
        total = math.sqrt(sum((g * g).sum() for g in gs))
        coef = min(1.0, max_norm / (total + 1e-6))
        gs = [np.clip(g * coef, -value, value) for g in gs]
        for p, g, st in zip(params, gs, states):
            update(p, g, st, **cfg)
    return dict(zip(names, params))


@pytest.mark.parametrize("name", ["SGD", "AdamW", "ASGD"])
@pytest.mark.parametrize("clip", [dict(clip_grad_norm=0.5), dict(clip_grad_value=0.05),
                                  dict(clip_grad_norm=0.5, clip_grad_value=0.05)])
def test_fit_clipping_matches_numpy_loop(name, clip):
    rng = np.random.default_rng(6)
    X, Y = rng.normal(size=(60, 5)) * 3, rng.normal(size=(60, 2)) * 3
    m = _model()
    want = _numpy_loop(m, X, Y, name, 10, 30, clip.get("clip_grad_norm", math.inf),
                       clip.get("clip_grad_value", math.inf))
    unclipped = _numpy_loop(m, X, Y, name, 10, 30)
    opt = getattr(fm.optim, name)(m.parameters(), **OPTS[name])
    m.fit(X, Y, fm.MSELoss(), opt, epochs=5, batch_size=10, shuffle=False, verbose=0, n_threads=1, **clip)
    for k, v in want.items():
        np.testing.assert_allclose(m.state_dict()[k], v, rtol=1e-10, atol=1e-12, err_msg=k)
    assert not np.allclose(want["0.weight"], unclipped["0.weight"], rtol=1e-3)  # the clipping mattered


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-10), ("float32", 1e-4)])
def test_train_step_clipping_matches_numpy_loop(dtype, tol):
    rng = np.random.default_rng(7)
    X, Y = rng.normal(size=(40, 5)) * 3, rng.normal(size=(40, 2)) * 3
    m = _model(dtype)
    want = _numpy_loop(m, X, Y, "SGD", 8, 10, max_norm=0.3, value=0.02)
    opt = fm.optim.SGD(m.parameters(), **OPTS["SGD"])
    for k in range(10):
        s = (k * 8) % 40
        m.train_step(X[s:s + 8], Y[s:s + 8], fm.MSELoss(), opt, clip_grad_norm=0.3, clip_grad_value=0.02)
    for k, v in want.items():
        np.testing.assert_allclose(m.state_dict()[k], v, rtol=tol, atol=tol * 1e-2, err_msg=k)


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-10), ("float32", 1e-4)])
def test_fit_clipping_on_two_threads_clips_the_summed_gradient(dtype, tol):
    """With the batch split into chunks on two threads, the clipping applies once, to the sum."""
    rng = np.random.default_rng(8)
    X, Y = rng.normal(size=(256, 5)) * 3, rng.normal(size=(256, 2)) * 3
    from fastmlp.training import thread_plan

    m1, m2 = _model(dtype), _model(dtype)
    assert thread_plan(2, m2, 128, split=True) == (1, 2)
    for m, n in ((m1, 1), (m2, 2)):
        opt = fm.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        m.fit(X, Y, fm.MSELoss(), opt, epochs=3, batch_size=128, verbose=0, n_threads=n, clip_grad_norm=0.2)
    want = _numpy_loop(_model(dtype), X, Y, "SGD", 128, 6, max_norm=0.2) if dtype == "float64" else None
    for k, v in m1.state_dict().items():
        np.testing.assert_allclose(m2.state_dict()[k], v, rtol=tol, atol=tol * 1e-2, err_msg=k)
    if want is None:
        return
    m3 = _model(dtype)  # unshuffled against the NumPy loop
    m3.fit(X, Y, fm.MSELoss(), fm.optim.SGD(m3.parameters(), lr=0.1, momentum=0.9), epochs=3, batch_size=128,
           shuffle=False, verbose=0, n_threads=2, clip_grad_norm=0.2)
    for k, v in want.items():
        np.testing.assert_allclose(m3.state_dict()[k], v, rtol=tol, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("bad", [dict(clip_grad_norm=-1.0), dict(clip_grad_value=float("nan")),
                                 dict(clip_grad_norm="a")])
def test_fit_and_train_step_refuse_bad_clipping(bad):
    m = _model()
    before = m.state_dict()
    opt = fm.optim.SGD(m.parameters(), lr=0.1)
    X, Y = np.ones((4, 5)), np.ones((4, 2))
    with pytest.raises((ValueError, TypeError), match="clip_grad"):
        m.fit(X, Y, fm.MSELoss(), opt, verbose=0, **bad)
    with pytest.raises((ValueError, TypeError), match="clip_grad"):
        m.train_step(X, Y, fm.MSELoss(), opt, **bad)
    for k, v in before.items():
        np.testing.assert_array_equal(m.state_dict()[k], v)


def test_fit_clip_zero_norm_stops_learning():
    """max_norm=0 (as torch) zeroes every gradient: SGD without decay leaves the weights."""
    m = _model()
    before = m.state_dict()
    rng = np.random.default_rng(9)
    m.fit(rng.normal(size=(20, 5)), rng.normal(size=(20, 2)), fm.MSELoss(), fm.optim.SGD(m.parameters(), lr=0.1),
          epochs=2, batch_size=5, verbose=0, clip_grad_norm=0.0)
    for k, v in before.items():
        np.testing.assert_array_equal(m.state_dict()[k], v)


# ---------------------------------------------------------------- against torch itself

def test_clip_utils_match_torch():
    torch = pytest.importorskip("torch")
    for ord in (1.0, 2.0, math.inf, 0.5):
        m = _model()
        grads = _set_grads(m, np.random.default_rng(10))
        ts = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
        for t, g in zip(ts, grads):
            t.grad = torch.from_numpy(g.copy())
        want = torch.nn.utils.clip_grad_norm_(ts, 0.7, norm_type=ord)
        got = fm.nn.utils.clip_grad_norm_(m.parameters(), 0.7, norm_type=ord)
        assert float(got) == pytest.approx(want.item(), rel=1e-12)
        for p, t in zip(m.parameters(), ts):
            np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-12)
        torch.nn.utils.clip_grad_value_(ts, 0.01)
        fm.nn.utils.clip_grad_value_(m.parameters(), 0.01)
        for p, t in zip(m.parameters(), ts):  # (the norm clipping's last bit may differ)
            np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize("name", ["SGD", "AdamW", "ASGD"])
def test_fit_clipping_matches_torch_loop(name, torch64):
    torch = torch64
    rng = np.random.default_rng(11)
    X, Y = rng.normal(size=(60, 5)) * 3, rng.normal(size=(60, 2)) * 3
    m = _model()
    net = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 2)).double()
    net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in m.state_dict().items()})
    topt = getattr(torch.optim, name)(net.parameters(), foreach=False, **OPTS[name])
    for k in range(30):
        s = (k * 10) % 60
        topt.zero_grad()
        torch.nn.functional.mse_loss(net(torch.from_numpy(X[s:s + 10])), torch.from_numpy(Y[s:s + 10])).backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 0.5)
        topt.step()
    opt = getattr(fm.optim, name)(m.parameters(), **OPTS[name])
    m.fit(X, Y, fm.MSELoss(), opt, epochs=5, batch_size=10, shuffle=False, verbose=0, n_threads=1, clip_grad_norm=0.5)
    for k, v in net.state_dict().items():
        np.testing.assert_allclose(m.state_dict()[k], v.numpy(), rtol=1e-10, atol=1e-12, err_msg=k)
