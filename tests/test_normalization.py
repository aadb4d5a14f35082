"""BatchNorm1d, LayerNorm and RMSNorm (issue 10): forward and backward against NumPy
references written as explicit Jacobians, float64 central finite differences, PyTorch
parity (state_dict, running statistics over a fit, a Linear-BatchNorm-ReLU-Dropout net
trained with AdamW), buffers in save/load/pickle and the undo copies, edge sizes."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

import fastmlp as fm

DTYPES = ["float64", "float32"]
TOL = {"float64": 1e-10, "float32": 1e-5}


# ---------------------------------------------------------------- NumPy references
def ref_norm(x, axis, eps, center=True, w=None, b=None):
    """Normalize x (B, C) along axis (0: per column over the batch, 1: per row) in float64."""
    x = np.asarray(x, np.float64)
    m = x.mean(axis=axis, keepdims=True) if center else 0.0
    v = ((x - m) ** 2).mean(axis=axis, keepdims=True)
    y = (x - m) / np.sqrt(v + eps)
    return y * (1.0 if w is None else w) + (0.0 if b is None else b)


def ref_norm_backward(x, dy, axis, eps, center=True, w=None):
    """(dx, dw, db) through the explicit Jacobian of each normalized vector:
    d xhat / d x = invstd (I - 1/n (if center) - xhat xhat^T / n)."""
    x, dy = np.asarray(x, np.float64), np.asarray(dy, np.float64)
    xt, dyt = (x.T, dy.T) if axis == 0 else (x, dy)  # one normalized vector per row of xt
    wv = np.ones(xt.shape[1]) if w is None or axis == 0 else np.asarray(w, np.float64)
    dx = np.empty_like(xt)
    xhat = np.empty_like(xt)
    for i, (v, g) in enumerate(zip(xt, dyt)):
        n = v.size
        m = v.mean() if center else 0.0
        s = 1 / np.sqrt(((v - m) ** 2).mean() + eps)
        h = (v - m) * s
        J = s * (np.eye(n) - (1.0 / n if center else 0.0) - np.outer(h, h) / n)
        gw = g * (w[i] if (w is not None and axis == 0) else wv)
        dx[i] = J.T @ gw
        xhat[i] = h
    if axis == 0:
        dx, xhat = dx.T, xhat.T
    return dx, (dy * xhat).sum(0), dy.sum(0)


def net(*layers, dtype="float64", seed=0):
    return fm.Sequential(*layers, seed=seed, dtype=dtype)


def randomize(model, rng):
    for _, p in model.named_parameters():
        p.data = rng.normal(size=p.shape) * 0.5 + (1.0 if p.name.endswith("weight") and p.ndim == 1 else 0.0)


# ---------------------------------------------------------------- forward and backward
LAYERS = {
    "batch_norm": (lambda C: fm.BatchNorm1d(C), 0, True),
    "batch_norm_noaffine": (lambda C: fm.BatchNorm1d(C, affine=False), 0, True),
    "batch_norm_eps": (lambda C: fm.BatchNorm1d(C, eps=1e-2, momentum=None), 0, True),
    "layer_norm": (lambda C: fm.LayerNorm(C), 1, True),
    "layer_norm_nobias": (lambda C: fm.LayerNorm((C,), bias=False), 1, True),
    "layer_norm_noaffine": (lambda C: fm.LayerNorm(C, eps=1e-3, elementwise_affine=False), 1, True),
    "rms_norm": (lambda C: fm.RMSNorm(C, eps=1e-6), 1, False),
    "rms_norm_default_eps": (lambda C: fm.RMSNorm(C), 1, False),
    "rms_norm_noaffine": (lambda C: fm.RMSNorm([C], eps=1e-3, elementwise_affine=False), 1, False),
}


def layer_eps(layer, dtype):
    return np.finfo(dtype).eps if layer.eps is None else layer.eps


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(LAYERS))
@pytest.mark.parametrize("B,C", [(2, 1), (7, 5), (16, 9), (33, 17), (64, 63)])
def test_train_forward_backward_match_reference(name, B, C, dtype):
    make, axis, center = LAYERS[name]
    layer = make(C)
    m = net(layer, dtype=dtype)
    rng = np.random.default_rng(B * 100 + C)
    randomize(m, rng)
    x = rng.normal(size=(B, C)) * 3 + 1
    dy = rng.normal(size=(B, C))
    w = getattr(layer, "weight", None)
    b = getattr(layer, "bias", None)
    w = None if w is None else np.asarray(w, np.float64)
    b = None if b is None else np.asarray(b, np.float64)
    eps = layer_eps(layer, dtype)
    y = m(x.astype(dtype))
    np.testing.assert_allclose(y, ref_norm(x.astype(dtype), axis, eps, center, w, b), rtol=TOL[dtype],
                               atol=TOL[dtype] * 10)
    dx = m.backward(dy.astype(dtype))
    rdx, rdw, rdb = ref_norm_backward(x.astype(dtype), dy.astype(dtype), axis, eps, center, w)
    scale = np.abs(rdx).max() + 1
    np.testing.assert_allclose(dx, rdx, rtol=TOL[dtype], atol=TOL[dtype] * 10 * scale)
    if w is not None:
        np.testing.assert_allclose(layer.weight.grad, rdw, rtol=TOL[dtype], atol=TOL[dtype] * 10 * B)
    if b is not None:
        np.testing.assert_allclose(layer.bias.grad, rdb, rtol=TOL[dtype], atol=TOL[dtype] * 10 * B)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm_eval_uses_running_statistics(dtype):
    rng = np.random.default_rng(3)
    layer = fm.BatchNorm1d(6)
    m = net(layer, dtype=dtype)
    randomize(m, rng)
    layer.running_mean[...] = rng.normal(size=6)
    layer.running_var[...] = rng.uniform(0.5, 2, size=6)
    m.eval()
    x = rng.normal(size=(9, 6)).astype(dtype)
    w, b = np.asarray(layer.weight, np.float64), np.asarray(layer.bias, np.float64)
    rm, rv = layer.running_mean.astype(np.float64), layer.running_var.astype(np.float64)
    s = 1 / np.sqrt(rv + 1e-5)
    np.testing.assert_allclose(m(x), (x - rm) * s * w + b, rtol=TOL[dtype], atol=TOL[dtype])
    dy = rng.normal(size=(9, 6)).astype(dtype)
    np.testing.assert_allclose(m.backward(dy), dy * w * s, rtol=TOL[dtype], atol=TOL[dtype])
    np.testing.assert_allclose(layer.weight.grad, (dy * (x - rm) * s).sum(0), rtol=TOL[dtype], atol=TOL[dtype] * 10)
    np.testing.assert_allclose(layer.bias.grad, dy.sum(0), rtol=TOL[dtype], atol=TOL[dtype] * 10)
    before = layer.running_mean.copy(), layer.running_var.copy(), int(layer.num_batches_tracked)
    m.predict(x)
    m(x)
    assert int(layer.num_batches_tracked) == before[2]  # eval never updates the running statistics
    np.testing.assert_array_equal(layer.running_mean, before[0])
    # one training forward does, with the unbiased variance
    m.train()
    m(x)
    xd = x.astype(np.float64)
    np.testing.assert_allclose(layer.running_mean, 0.9 * before[0] + 0.1 * xd.mean(0), rtol=TOL[dtype])
    np.testing.assert_allclose(layer.running_var, 0.9 * before[1] + 0.1 * xd.var(0, ddof=1), rtol=TOL[dtype])
    assert int(layer.num_batches_tracked) == 1


def test_batchnorm_without_running_stats_uses_batch_statistics_in_eval():
    rng = np.random.default_rng(4)
    m = net(fm.BatchNorm1d(5, track_running_stats=False)).eval()
    assert list(m.state_dict()) == ["0.weight", "0.bias"]
    x = rng.normal(size=(8, 5))
    np.testing.assert_allclose(m(x), ref_norm(x, 0, 1e-5), atol=1e-12)
    dy = rng.normal(size=(8, 5))
    np.testing.assert_allclose(m.backward(dy), ref_norm_backward(x, dy, 0, 1e-5)[0], atol=1e-10)
    assert m.predict(x).shape == (8, 5)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        m.predict(x[:1])


def test_batchnorm_cumulative_momentum_none():
    rng = np.random.default_rng(5)
    layer = fm.BatchNorm1d(3, momentum=None)
    m = net(layer)
    xs = [rng.normal(size=(4 + i, 3)) * (i + 1) for i in range(5)]
    for x in xs:
        m(x)
    np.testing.assert_allclose(layer.running_mean, np.mean([x.mean(0) for x in xs], axis=0), rtol=1e-12)
    np.testing.assert_allclose(layer.running_var, np.mean([x.var(0, ddof=1) for x in xs], axis=0), rtol=1e-12)
    assert m.state_dict()["0.num_batches_tracked"] == 5


# ---------------------------------------------------------------- finite differences
def fd_check(m, x, dy, h=1e-6):
    """float64 central differences of L = sum(y * dy) for dx and every parameter gradient."""
    def loss():
        return float((m(x) * dy).sum())

    m.zero_grad()
    m(x)
    dx = m.backward(dy)
    num = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        up = loss()
        x[i] = old - h
        down = loss()
        x[i] = old
        num[i] = (up - down) / (2 * h)
    np.testing.assert_allclose(dx, num, rtol=1e-6, atol=1e-7)
    for name, p in m.named_parameters():
        g = p.grad.copy()
        num = np.zeros_like(g)
        for i in np.ndindex(g.shape):
            old = p.data[i]
            p.data[i] = old + h
            up = loss()
            p.data[i] = old - h
            down = loss()
            p.data[i] = old
            num[i] = (up - down) / (2 * h)
        np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_finite_differences(name, train):
    rng = np.random.default_rng(11)
    make, _, _ = LAYERS[name]
    m = net(fm.Linear(4, 5), make(5), fm.Tanh(), fm.Linear(5, 3))
    randomize(m, rng)
    bn = m[1]
    if isinstance(bn, fm.BatchNorm1d):
        bn.running_mean[...] = rng.normal(size=5)
        bn.running_var[...] = rng.uniform(0.5, 2, size=5)
    m.train(train)
    x = rng.normal(size=(6, 4))
    fd_check(m, x, rng.normal(size=(6, 3)))


# ---------------------------------------------------------------- stability
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["batch_norm", "layer_norm", "rms_norm"])
def test_constant_inputs_are_finite(name, dtype):
    make, axis, center = LAYERS[name]
    m = net(make(8), dtype=dtype)
    for c in (0.0, 3.0, -1e3, 1e6):
        x = np.full((16, 8), c, dtype=dtype)
        y = m(x)
        dx = m.backward(np.ones_like(y))
        assert np.isfinite(y).all() and np.isfinite(dx).all()
        if center:  # a constant is its mean: the output is the bias (0)
            np.testing.assert_allclose(y, 0, atol=1e-2 if dtype == "float32" else 1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["batch_norm", "layer_norm", "rms_norm"])
@pytest.mark.parametrize("offset,spread", [(1e3, 1.0), (-1e3, 10.0), (1e6, 1e6), (0.0, 1e6)])
def test_large_values(name, offset, spread, dtype):
    make, axis, center = LAYERS[name]
    m = net(make(10), dtype=dtype)
    rng = np.random.default_rng(2)
    x = (offset + spread * rng.normal(size=(32, 10))).astype(dtype)
    y = m(x)
    dy = rng.normal(size=y.shape).astype(dtype)
    dx = m.backward(dy)
    ref_y = ref_norm(x, axis, layer_eps(m[0], dtype), center)
    ref_dx = ref_norm_backward(x, dy, axis, layer_eps(m[0], dtype), center)[0]
    tol = 1e-9 if dtype == "float64" else 2e-3  # float32: an input near 1e3 is known to 6e-5
    np.testing.assert_allclose(y, ref_y, atol=tol * np.abs(ref_y).max())
    np.testing.assert_allclose(dx, ref_dx, atol=tol * np.abs(ref_dx).max())


# ---------------------------------------------------------------- edge sizes and bad arguments
@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_of_one_in_training_raises_as_torch_and_changes_nothing(dtype):
    m = net(fm.Linear(3, 4), fm.BatchNorm1d(4), fm.Linear(4, 2), dtype=dtype)
    x = np.ones((5, 3), dtype=dtype)
    m(x)
    before = m.state_dict()
    with pytest.raises(ValueError, match=r"Expected more than 1 value per channel when training, got input size \[1, 4\]"):
        m(x[:1])
    opt = fm.optim.SGD(m.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        m.train_step(x[:1], np.array([0]), fm.CrossEntropyLoss(), opt)
    after = m.state_dict()
    for k in before:
        np.testing.assert_array_equal(after[k], before[k])
    m.eval()
    assert m(x[:1]).shape == (1, 2)  # eval mode takes one row (running statistics)
    m.train()
    # a fit whose last batch has one row raises and rolls the epoch back, as torch's loop would raise
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        m.fit(np.ones((5, 3), dtype=dtype), np.zeros(5, dtype=np.int64), fm.CrossEntropyLoss(), opt,
              batch_size=2, shuffle=False, verbose=0)
    after = m.state_dict()
    for k in before:
        np.testing.assert_array_equal(after[k], before[k])


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_of_zero_rows_as_torch(dtype):
    # torch: an empty output, num_batches_tracked counts the batch, the statistics stay; zero gradients
    for layer in (fm.BatchNorm1d(4), fm.BatchNorm1d(4, momentum=None), fm.LayerNorm(4), fm.RMSNorm(4)):
        m = net(layer, dtype=dtype)
        before = m.state_dict()
        y = m(np.ones((0, 4), dtype=dtype))
        assert y.shape == (0, 4)
        assert m.backward(y).shape == (0, 4)
        for _, p in m.named_parameters():
            np.testing.assert_array_equal(p.grad, 0)
        after = m.state_dict()
        for k in before:
            if k.endswith("num_batches_tracked"):
                assert after[k] == before[k] + 1
            else:
                np.testing.assert_array_equal(after[k], before[k])


@pytest.mark.parametrize("make", [lambda n: fm.BatchNorm1d(n), lambda n: fm.LayerNorm(n), lambda n: fm.RMSNorm(n)])
def test_zero_features_refused(make):
    with pytest.raises(ValueError, match=">= 1"):
        make(0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="normalized_shape"):
        fm.LayerNorm((2, 3))
    with pytest.raises(TypeError):
        fm.RMSNorm(2.5)
    with pytest.raises(ValueError, match="eps"):
        fm.BatchNorm1d(3, eps=0)
    with pytest.raises(ValueError, match="momentum"):
        fm.BatchNorm1d(3, momentum=1.5)
    with pytest.raises(ValueError, match="BatchNorm1d expects 4 features but the previous layers give 3"):
        net(fm.Linear(2, 3), fm.BatchNorm1d(4))
    with pytest.raises(ValueError, match="LayerNorm normalizes 4 features but the previous layers give 3"):
        net(fm.Linear(2, 3), fm.LayerNorm(4))
    with pytest.raises(ValueError, match="input has 3 features, but the model expects 4"):
        net(fm.LayerNorm(4))(np.ones((2, 3)))
    m = net(fm.RMSNorm(4))
    assert m.in_features == 4


def test_rows_of_batchnorm_are_not_independent_so_fit_does_not_split():
    # with n_threads=2 a batch of >= 64 rows would be split; BatchNorm's statistics are the whole batch's
    rng = np.random.default_rng(8)
    X = rng.normal(size=(512, 6))
    y = rng.integers(0, 3, size=512)
    results = []
    for threads in (1, 2):
        m = net(fm.Linear(6, 16), fm.BatchNorm1d(16), fm.ReLU(), fm.Linear(16, 3), seed=4)
        opt = fm.optim.SGD(m.parameters(), lr=0.1)
        m.fit(X, y, fm.CrossEntropyLoss(), opt, epochs=2, batch_size=128, verbose=0, n_threads=threads)
        results.append(m.state_dict())
    for k in results[0]:
        np.testing.assert_array_equal(results[0][k], results[1][k])


# ---------------------------------------------------------------- state: files, pickle, snapshots
def trained_model(dtype="float64"):
    rng = np.random.default_rng(9)
    m = net(fm.Linear(5, 8), fm.BatchNorm1d(8), fm.ReLU(), fm.LayerNorm(8), fm.Linear(8, 4), fm.RMSNorm(4),
            fm.BatchNorm1d(4, momentum=None, affine=False), dtype=dtype, seed=1)
    opt = fm.optim.Adam(m.parameters(), lr=1e-2)
    X, y = rng.normal(size=(60, 5)), rng.normal(size=(60, 4))
    m.fit(X, y, fm.MSELoss(), opt, epochs=2, batch_size=16, verbose=0)
    return m, opt, X


@pytest.mark.parametrize("dtype", DTYPES)
def test_save_load_and_pickle_keep_the_buffers(tmp_path, dtype):
    m, opt, X = trained_model(dtype)
    sd = m.state_dict()
    assert sd["1.num_batches_tracked"].dtype == np.int64 and sd["1.num_batches_tracked"].shape == ()
    assert int(sd["1.num_batches_tracked"]) == 8 and int(sd["6.num_batches_tracked"]) == 8
    assert list(sd)[:7] == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
                            "1.num_batches_tracked"]
    m.eval()
    want = m.predict(X)
    m.save(tmp_path / "m.npz", optimizer=opt)
    m2, _ = fm.load(tmp_path / "m.npz", optimizer=True)
    m3 = pickle.loads(pickle.dumps(m))
    for other in (m2, m3):
        assert not other.training
        np.testing.assert_array_equal(other.predict(X), want)
        o = other.state_dict()
        assert list(o) == list(sd)
        for k in sd:
            np.testing.assert_array_equal(o[k], sd[k])
            assert o[k].dtype == sd[k].dtype
    names = np.load(tmp_path / "m.npz").files
    assert "buffer/1.running_mean" in names and "buffer/1.num_batches_tracked" in names
    assert "param/1.weight" in names


def test_file_with_missing_or_bad_buffer_is_refused(tmp_path):
    m, _, _ = trained_model()
    m.save(tmp_path / "m.npz")
    z = dict(np.load(tmp_path / "m.npz"))
    for change in ("drop", "shape", "fraction"):
        bad = dict(z)
        if change == "drop":
            del bad["buffer/1.running_var"]
        elif change == "shape":
            bad["buffer/1.running_var"] = np.ones(3)
        else:
            bad["buffer/1.num_batches_tracked"] = np.array(2.5)
        np.savez(tmp_path / "bad.npz", **bad)
        with pytest.raises(ValueError, match="running_var|num_batches_tracked"):
            fm.load(tmp_path / "bad.npz")


def test_load_state_dict_checks_buffers():
    m = net(fm.BatchNorm1d(3), dtype="float32")
    sd = m.state_dict()
    with pytest.raises(KeyError, match="0.running_mean"):
        m.load_state_dict({k: v for k, v in sd.items() if k != "0.running_mean"})
    for bad in (np.array(-1), np.array(2**24 + 1), np.array(1.5)):
        with pytest.raises(ValueError, match="num_batches_tracked"):
            m.load_state_dict({**sd, "0.num_batches_tracked": bad})
    with pytest.raises(ValueError, match="NaN"):
        m.load_state_dict({**sd, "0.running_var": np.array([1, np.nan, 1])})
    m.load_state_dict({**sd, "0.num_batches_tracked": np.array(2**24)})
    assert int(m.state_dict()["0.num_batches_tracked"]) == 2**24
    assert [n for n, _ in m.named_buffers()] == ["0.running_mean", "0.running_var", "0.num_batches_tracked"]
    assert len(list(m.buffers())) == 3


def test_diverged_epoch_rolls_the_running_statistics_back():
    rng = np.random.default_rng(12)
    m = net(fm.Linear(4, 6), fm.BatchNorm1d(6), fm.Linear(6, 1), seed=2)
    X, y = rng.normal(size=(64, 4)), rng.normal(size=(64, 1))
    opt = fm.optim.SGD(m.parameters(), lr=1e200)  # the first step makes the loss overflow
    before = m.state_dict()
    with pytest.raises(FloatingPointError, match="reset to their state at the start of epoch 1"):
        m.fit(X, y, fm.MSELoss(), opt, epochs=1, batch_size=8, shuffle=False, verbose=0)
    after = m.state_dict()
    for k in before:
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)


def test_failed_train_step_rolls_the_running_statistics_back():
    m = net(fm.Linear(2, 3), fm.BatchNorm1d(3), fm.Linear(3, 1))
    m[0].weight.data = np.full((3, 2), 1e300)  # the forward overflows: the loss is not finite
    before = m.state_dict()
    opt = fm.optim.SGD(m.parameters(), lr=0.1)
    with pytest.raises(FloatingPointError):
        m.train_step(np.array([[1.0, 2.0], [3.0, -4.0]]), np.zeros((2, 1)), fm.MSELoss(), opt)
    after = m.state_dict()
    for k in before:
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)


# ---------------------------------------------------------------- PyTorch parity
def torch_or_skip():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    return torch


def to_torch(torch, sd, dtype):
    return {k: torch.tensor(np.asarray(v)) if np.asarray(v).dtype == np.int64
            else torch.tensor(np.asarray(v, dtype=dtype)) for k, v in sd.items()}


def torch_layers(torch, dtype):
    nn = torch.nn
    fm_layers = [fm.Linear(5, 6), fm.BatchNorm1d(6), fm.ReLU(), fm.LayerNorm(6), fm.Linear(6, 6),
                 fm.RMSNorm(6), fm.BatchNorm1d(6, momentum=None, affine=False), fm.LayerNorm(6, bias=False),
                 fm.RMSNorm(6, eps=1e-3)]
    t = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.LayerNorm(6), nn.Linear(6, 6),
                      nn.RMSNorm(6), nn.BatchNorm1d(6, momentum=None, affine=False), nn.LayerNorm(6, bias=False),
                      nn.RMSNorm(6, eps=1e-3))
    return fm_layers, t.to(getattr(torch, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_parity_forward_backward_and_state_dict_both_ways(dtype):
    torch = torch_or_skip()
    fm_layers, t = torch_layers(torch, dtype)
    m = fm.Sequential(*fm_layers, seed=3, dtype=dtype)
    rng = np.random.default_rng(13)
    randomize(m, rng)
    assert list(m.state_dict()) == list(t.state_dict())
    t.load_state_dict(to_torch(torch, m.state_dict(), dtype))  # fastmlp -> torch
    x = rng.normal(size=(12, 5)).astype(dtype)
    for train in (True, True, False):
        m.train(train)
        t.train(train)
        m.zero_grad()
        t.zero_grad()
        xt = torch.tensor(x, requires_grad=True)
        yt = t(xt)
        y = m(x)
        dy = rng.normal(size=y.shape).astype(dtype)
        yt.backward(torch.tensor(dy))
        dx = m.backward(dy)
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=TOL[dtype], atol=TOL[dtype])
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=TOL[dtype], atol=TOL[dtype] * 10)
        for name, p in t.named_parameters():
            np.testing.assert_allclose(m._params[name].grad, p.grad.numpy(), rtol=TOL[dtype], atol=TOL[dtype] * 10,
                                       err_msg=name)
        tsd = t.state_dict()
        for k, v in m.state_dict().items():
            np.testing.assert_allclose(v, tsd[k].numpy(), rtol=TOL[dtype], atol=TOL[dtype], err_msg=k)
            assert v.dtype == tsd[k].numpy().dtype
    # torch -> fastmlp: a fresh model loads torch's state_dict (int64 counts included) and agrees
    m2 = fm.Sequential(*torch_layers(torch, dtype)[0], seed=99, dtype=dtype)
    m2.load_state_dict({k: v.numpy() for k, v in t.state_dict().items()})
    m2.eval()
    t.eval()
    np.testing.assert_allclose(m2.predict(x), t(torch.tensor(x)).detach().numpy(), rtol=TOL[dtype], atol=TOL[dtype])
    m2.load_state_dict(t.state_dict())  # tensors directly
    np.testing.assert_allclose(m2.predict(x), t(torch.tensor(x)).detach().numpy(), rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("momentum", [0.1, None, 0.5])
def test_torch_parity_running_statistics_over_30_fit_steps(momentum):
    torch = torch_or_skip()
    nn = torch.nn
    rng = np.random.default_rng(14)
    m = net(fm.Linear(6, 8), fm.BatchNorm1d(8, momentum=momentum), fm.ReLU(), fm.Linear(8, 3), seed=5)
    t = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8, momentum=momentum), nn.ReLU(), nn.Linear(8, 3)).double()
    t.load_state_dict(to_torch(torch, m.state_dict(), "float64"))
    X, y = rng.normal(size=(30 * 16, 6)) * 2 + 1, rng.integers(0, 3, size=30 * 16)
    opt = fm.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    m.fit(X, y, fm.CrossEntropyLoss(), opt, epochs=1, batch_size=16, shuffle=False, verbose=0)
    topt = torch.optim.SGD(t.parameters(), lr=0.1, momentum=0.9)
    for i in range(30):
        topt.zero_grad()
        loss = nn.functional.cross_entropy(t(torch.tensor(X[16 * i:16 * i + 16])), torch.tensor(y[16 * i:16 * i + 16]))
        loss.backward()
        topt.step()
    tsd = t.state_dict()
    assert int(m.state_dict()["1.num_batches_tracked"]) == 30
    for k, v in m.state_dict().items():
        np.testing.assert_allclose(v, tsd[k].numpy(), rtol=1e-10, atol=1e-12, err_msg=k)


def test_torch_parity_linear_batchnorm_relu_dropout_with_adamw():
    """A ResNet-style MLP block, Linear-BatchNorm-ReLU-Dropout(0.1), 30 AdamW steps from the same
    state_dict (no bias before a BatchNorm, as ResNets do: its gradient is rounding noise that
    Adam's normalization would amplify). Torch uses fastmlp's dropout masks: a model of Identity layers with the same seed
    and the Dropout at the same position draws the same mask (a function of seed, layer, call)."""
    torch = torch_or_skip()
    nn = torch.nn
    rng = np.random.default_rng(15)
    layers = [fm.Linear(10, 16, bias=False), fm.BatchNorm1d(16), fm.ReLU(), fm.Dropout(0.1),
              fm.Linear(16, 16, bias=False), fm.BatchNorm1d(16), fm.ReLU(), fm.Dropout(0.1), fm.Linear(16, 4)]
    m = net(*layers, seed=6)
    probes = {i: net(*([fm.Identity()] * i + [fm.Dropout(0.1)]), seed=6) for i in (3, 7)}
    t = nn.Sequential(nn.Linear(10, 16, bias=False), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.1),
                      nn.Linear(16, 16, bias=False), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.1),
                      nn.Linear(16, 4)).double()
    t.load_state_dict(to_torch(torch, m.state_dict(), "float64"))
    opt = fm.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.05)
    topt = torch.optim.AdamW(t.parameters(), lr=1e-2, weight_decay=0.05)
    loss_fn = fm.CrossEntropyLoss()
    for step in range(30):
        x, y = rng.normal(size=(32, 10)), rng.integers(0, 4, size=32)
        # a probe's output on ones is its Dropout's mask / (1 - p) for this call
        masks = {i: probe(np.ones((32, 16))) for i, probe in probes.items()}
        assert 0 < (masks[3] == 0).sum() < 32 * 16 * 0.3
        loss = m.train_step(x, y, loss_fn, opt)
        topt.zero_grad()
        h = torch.tensor(x)
        for i, mod in enumerate(t):
            h = h * torch.tensor(masks[i]) if i in masks else mod(h)
        tl = nn.functional.cross_entropy(h, torch.tensor(y))
        tl.backward()
        topt.step()
        assert abs(loss - tl.item()) < 1e-10
    tsd = t.state_dict()
    for k, v in m.state_dict().items():
        np.testing.assert_allclose(v, tsd[k].numpy(), rtol=1e-10, atol=1e-12, err_msg=k)


# ---------------------------------------------------------------- Residual(*layers): x + block(x)
def torch_residual(torch):
    from test_container import torch_residual as residual_class  # the torch module fm.Residual's names follow

    Residual = residual_class(torch)

    class MaskDropout(torch.nn.Module):  # multiplies by the mask fastmlp drew (set before each step)
        mask = None

        def forward(self, x):
            return x * self.mask if self.training else x

    return Residual, MaskDropout


def test_residual_state_dict_round_trip_with_torch_and_files(tmp_path):
    torch = torch_or_skip()
    nn = torch.nn
    TRes, _ = torch_residual(torch)
    m = net(fm.Linear(5, 8), fm.Residual(fm.Linear(8, 8), fm.BatchNorm1d(8), fm.ReLU(), fm.Residual(fm.LayerNorm(8))),
            fm.RMSNorm(8), fm.Linear(8, 2), seed=7)
    t = nn.Sequential(nn.Linear(5, 8), TRes(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.ReLU(), TRes(nn.LayerNorm(8))),
                      nn.RMSNorm(8), nn.Linear(8, 2)).double()
    assert list(m.state_dict()) == list(t.state_dict())
    assert m[1].block[1].running_var.shape == (8,) and m[1].block[3].block[0].weight.shape == (8,)
    rng = np.random.default_rng(16)
    randomize(m, rng)
    x = rng.normal(size=(10, 5))
    t.load_state_dict(to_torch(torch, m.state_dict(), "float64"))
    for train in (True, False):
        m.train(train)
        t.train(train)
        xt = torch.tensor(x, requires_grad=True)
        yt = t(xt)
        y = m(x)
        dy = rng.normal(size=y.shape)
        yt.backward(torch.tensor(dy))
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(m.backward(dy), xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    m2 = net(fm.Linear(5, 8), fm.Residual(fm.Linear(8, 8), fm.BatchNorm1d(8), fm.ReLU(),
                                          fm.Residual(fm.LayerNorm(8))), fm.RMSNorm(8), fm.Linear(8, 2), seed=1)
    m2.load_state_dict(t.state_dict())  # torch -> fastmlp
    m2.eval()
    np.testing.assert_allclose(m2.predict(x), t(torch.tensor(x)).detach().numpy(), rtol=1e-10, atol=1e-12)
    m2.save(tmp_path / "r.npz")
    for other in (fm.load(tmp_path / "r.npz"), pickle.loads(pickle.dumps(m2))):
        assert isinstance(other[1], fm.Residual) and isinstance(other[1].block[3], fm.Residual)
        np.testing.assert_array_equal(other.predict(x), m2.predict(x))
    with pytest.raises(ValueError, match="x \\+ f\\(x\\) needs f to keep the width"):
        net(fm.Linear(2, 3), fm.Residual(fm.Linear(3, 4)))
    with pytest.raises(TypeError, match="Residual: layer 0"):
        fm.Residual(3)


def test_torch_parity_resnet_mlp_with_adamw():
    """Linear, two residual blocks x + Dropout(ReLU(BatchNorm(Linear(x)))), Linear: 30 AdamW steps
    from the same state_dict equal torch's to 1e-10, with fastmlp's dropout masks (probes at the
    Dropouts' places in the engine's flat list: 0 Linear, 1 begin, 2-5 block, 6 end, 7 begin, ...)."""
    torch = torch_or_skip()
    nn = torch.nn
    TRes, MaskDropout = torch_residual(torch)
    rng = np.random.default_rng(17)

    def block():
        return fm.Residual(fm.Linear(16, 16, bias=False), fm.BatchNorm1d(16), fm.ReLU(), fm.Dropout(0.1))

    m = net(fm.Linear(10, 16), block(), block(), fm.Linear(16, 4), seed=8)
    probes = {i: net(*([fm.Identity()] * i + [fm.Dropout(0.1)]), seed=8) for i in (5, 11)}
    drops = [MaskDropout(), MaskDropout()]
    t = nn.Sequential(nn.Linear(10, 16),
                      TRes(nn.Linear(16, 16, bias=False), nn.BatchNorm1d(16), nn.ReLU(), drops[0]),
                      TRes(nn.Linear(16, 16, bias=False), nn.BatchNorm1d(16), nn.ReLU(), drops[1]),
                      nn.Linear(16, 4)).double()
    t.load_state_dict(to_torch(torch, m.state_dict(), "float64"))
    opt = fm.optim.AdamW(m.parameters(), lr=1e-2)
    topt = torch.optim.AdamW(t.parameters(), lr=1e-2)
    for step in range(30):
        x, y = rng.normal(size=(32, 10)), rng.integers(0, 4, size=32)
        for d, i in zip(drops, (5, 11)):
            d.mask = torch.tensor(probes[i](np.ones((32, 16))))
        loss = m.train_step(x, y, fm.CrossEntropyLoss(), opt)
        topt.zero_grad()
        tl = nn.functional.cross_entropy(t(torch.tensor(x)), torch.tensor(y))
        tl.backward()
        topt.step()
        assert abs(loss - tl.item()) < 1e-10
    tsd = t.state_dict()
    for k, v in m.state_dict().items():
        np.testing.assert_allclose(v, tsd[k].numpy(), rtol=1e-10, atol=1e-12, err_msg=k)
    m.eval()
    t.eval()
    x = rng.normal(size=(20, 10))
    np.testing.assert_allclose(m.predict(x), t(torch.tensor(x)).detach().numpy(), rtol=1e-10, atol=1e-12)


def test_file_with_a_badly_typed_layer_inside_a_residual_block_is_refused(tmp_path):
    import json

    m = net(fm.Residual(fm.LayerNorm(3), fm.Residual(fm.BatchNorm1d(3))))
    m.save(tmp_path / "m.npz")
    z = dict(np.load(tmp_path / "m.npz"))
    header = json.loads(z["__fastmlp__"].tobytes())
    assert header["layers"][0]["block"][1]["kind"] == "residual"
    header["layers"][0]["block"][1]["block"][0]["num_features"] = 3.0
    z["__fastmlp__"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    np.savez(tmp_path / "bad.npz", **z)
    with pytest.raises(ValueError, match=r"layers\[0\]\.block\[1\]\.block\[0\]\.num_features must be int"):
        fm.load(tmp_path / "bad.npz")


NORM_HOSTILE = [
    "fm.Sequential(fm.BatchNorm1d(2**62))",
    "fm.Sequential(fm.BatchNorm1d(2**62 - 1), dtype='float64')",
    "fm.Sequential(fm.LayerNorm(2**62))",
    "fm.Sequential(fm.RMSNorm(2**40))",
    "fm.Sequential(fm.Residual(fm.BatchNorm1d(2**40)))",
    "m = fm.Sequential(fm.BatchNorm1d(1)); m(np.broadcast_to(np.ones(1), (2**62, 1)))",
    "m = fm.Sequential(fm.LayerNorm(2**20)); m(np.ones((2**20, 2**20), dtype=np.float32))",
]


@pytest.mark.parametrize("code", NORM_HOSTILE, ids=[str(i) for i in range(len(NORM_HOSTILE))])
def test_giant_sizes_raise_not_crash(code):
    import subprocess
    import sys
    import textwrap

    src = textwrap.dedent("""
        import os, resource, sys
        import numpy as np
        import fastmlp as fm
        if "asan" not in os.environ.get("LD_PRELOAD", ""):  # AddressSanitizer needs its shadow memory
            resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))
        try:
            {body}
        except (MemoryError, ValueError) as e:
            print("RAISED", type(e).__name__, e)
            sys.exit(0)
        print("NO ERROR")
        sys.exit(4)
    """).format(body=code)
    r = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "RAISED" in r.stdout, f"exit code {r.returncode}:\n{r.stdout}{r.stderr}"


def test_train_and_eval_reach_the_layers_inside_residual_blocks():
    m = net(fm.Residual(fm.Residual(fm.BatchNorm1d(2)), fm.Dropout(0.5)))
    inner = m[0].block[0].block[0]
    m.eval()
    assert not m.training and not inner.training and not m[0].block[1].training
    x = np.array([[1.0, 2.0]])
    np.testing.assert_allclose(m(x), 2 * x + x / np.sqrt(1 + 1e-5), rtol=1e-12)  # x + (x + BN(x)), no dropout
    m.train()
    assert inner.training
