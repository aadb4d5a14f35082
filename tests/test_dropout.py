"""Dropout: inverted dropout in training, identity in eval mode."""
from __future__ import annotations

import math

import numpy as np
import pytest

import fastmlp as fm
import reference as ref

DTYPES = ["float64", "float32"]
N_ROWS, N_COLS = 500, 400  # 200 000 elements
N = N_ROWS * N_COLS


def dropout_model(p, seed=0, dtype="float32"):
    return fm.Sequential(fm.Dropout(p), seed=seed, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9])
def test_eval_mode_is_identity(p, dtype):
    m = dropout_model(p, dtype=dtype).eval()
    assert not m.training
    x = np.random.default_rng(0).normal(size=(33, 17)).astype(dtype)
    np.testing.assert_array_equal(m(x), x)
    dy = np.random.default_rng(1).normal(size=(33, 17)).astype(dtype)
    np.testing.assert_array_equal(m.backward(dy), dy)


@pytest.mark.parametrize("dtype", DTYPES)
def test_p_zero_is_identity_in_training(dtype):
    m = dropout_model(0.0, dtype=dtype)
    assert m.training
    x = np.random.default_rng(0).normal(size=(64, 31)).astype(dtype)
    np.testing.assert_array_equal(m(x), x)
    np.testing.assert_array_equal(m.backward(x * 2), x * 2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.1, 0.25, 0.5, 0.9])
def test_train_mode_rate_scale_and_mean(p, dtype):
    m = dropout_model(p, seed=123, dtype=dtype)
    x = np.ones((N_ROWS, N_COLS), dtype=dtype)
    out = m(x)
    dropped = out == 0
    rate = dropped.mean()
    # binomial: the drop rate is within 6 standard deviations of p
    assert abs(rate - p) < 6 * math.sqrt(p * (1 - p) / N), rate
    # every kept value is exactly x / (1 - p), rounded to the dtype
    kept = out[~dropped]
    np.testing.assert_allclose(kept, np.asarray(1.0 / (1.0 - p), dtype=dtype), rtol=1e-6 if dtype == "float32" else 1e-15)
    # the mean is kept: E[out] = 1, with std sqrt(p / (1 - p) / N)
    assert abs(out.mean(dtype=np.float64) - 1.0) < 6 * math.sqrt(p / (1 - p) / N)


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_train_mode_keeps_the_mean_of_random_inputs(p):
    rng = np.random.default_rng(5)
    x = rng.uniform(1.0, 3.0, size=(N_ROWS, N_COLS))
    m = dropout_model(p, seed=9, dtype="float64")
    out = m(x)
    mask = out != 0
    np.testing.assert_allclose(out[mask], x[mask] / (1 - p), rtol=1e-15)
    # Var(out) per element = E[x^2] p / (1 - p)
    sd = math.sqrt((x ** 2).mean() * p / (1 - p) / N)
    assert abs(out.mean() - x.mean()) < 6 * sd


def test_mask_is_not_structured():
    """Drop decisions look independent: per-column and per-row rates agree with p,
    and neighbours are uncorrelated."""
    p = 0.5
    out = dropout_model(p, seed=77, dtype="float32")(np.ones((N_ROWS, N_COLS), np.float32))
    d = (out == 0).astype(np.float64)
    col = d.mean(axis=0)
    row = d.mean(axis=1)
    assert np.abs(col - p).max() < 6 * math.sqrt(p * (1 - p) / N_ROWS)
    assert np.abs(row - p).max() < 6 * math.sqrt(p * (1 - p) / N_COLS)
    c = d - d.mean()
    corr = (c[:, 1:] * c[:, :-1]).mean() / c.var()
    assert abs(corr) < 6 / math.sqrt(N)
    corr_rows = (c[1:] * c[:-1]).mean() / c.var()
    assert abs(corr_rows) < 6 / math.sqrt(N)


@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_uses_the_forward_mask(dtype):
    p = 0.3
    rng = np.random.default_rng(0)
    m = dropout_model(p, seed=4, dtype=dtype)
    x = rng.uniform(0.5, 2.0, size=(65, 33)).astype(dtype)
    out1 = m(x)
    mask1 = out1 != 0
    dy = rng.normal(size=x.shape).astype(dtype)
    dx = m.backward(dy)
    expected = np.where(mask1, dy.astype(np.float64) / (1 - p), 0.0)
    np.testing.assert_allclose(dx, expected, rtol=1e-6 if dtype == "float32" else 1e-15)
    # a second forward draws a new mask, and the backward follows it
    out2 = m(x)
    mask2 = out2 != 0
    assert (mask1 != mask2).any()
    dx2 = m.backward(dy, retain_graph=True)
    np.testing.assert_array_equal(dx2 != 0, mask2 & (dy != 0))
    # the same mask is used by repeated backward calls (retain_graph, as in torch)
    np.testing.assert_array_equal(m.backward(dy), dx2)


def test_same_seed_same_masks_different_seed_different_masks():
    x = np.ones((64, 50), np.float32)
    a, b, c = dropout_model(0.5, seed=42), dropout_model(0.5, seed=42), dropout_model(0.5, seed=43)
    outs_a = [a(x) for _ in range(3)]
    outs_b = [b(x) for _ in range(3)]
    outs_c = [c(x) for _ in range(3)]
    for oa, ob in zip(outs_a, outs_b):
        np.testing.assert_array_equal(oa, ob)
    assert all((oa != oc).any() for oa, oc in zip(outs_a, outs_c))
    # consecutive calls draw fresh masks
    assert (outs_a[0] != outs_a[1]).any() and (outs_a[1] != outs_a[2]).any()


def test_manual_seed_makes_seedless_dropout_reproducible():
    x = np.ones((32, 32), np.float32)
    fm.manual_seed(2024)
    o1 = fm.Sequential(fm.Dropout(0.5))(x)
    fm.manual_seed(2024)
    o2 = fm.Sequential(fm.Dropout(0.5))(x)
    np.testing.assert_array_equal(o1, o2)
    assert (o1 == 0).any() and (o1 == 2).any()


def test_dropout_inside_network_matches_reference_with_its_mask():
    """Linear -> Dropout -> Linear in training: output and backward equal the
    reference network's with the mask the forward used."""
    p = 0.4
    rng = np.random.default_rng(3)
    model = fm.Sequential(fm.Linear(6, 6), fm.Dropout(p), fm.Linear(6, 6), seed=5, dtype="float64")
    # identity first layer; an invertible, well-conditioned second layer makes the mask recoverable
    W1, b1 = np.eye(6), np.zeros(6)
    W2 = np.eye(6) + 0.2 * rng.normal(size=(6, 6))
    b2 = rng.normal(size=6)
    model.load_state_dict({"0.weight": W1, "0.bias": b1, "2.weight": W2, "2.bias": b2})
    x = rng.uniform(1.0, 2.0, size=(40, 6))
    out = model(x)
    h = np.linalg.solve(W2, (out - b2).T).T  # = x * mask / (1 - p): entries 0 or >= 1/(1-p)
    mask = (np.abs(h) > 0.5).astype(np.float64)
    assert 0 < mask.mean() < 1
    np.testing.assert_allclose(h, x * mask / (1 - p), atol=1e-10)
    net = ref.RefSequential([("linear", (W1, b1)), ("dropout_mask", {"mask": mask, "p": p}), ("linear", (W2, b2))])
    np.testing.assert_allclose(out, net(x), rtol=1e-12, atol=1e-12)
    dy = rng.normal(size=(40, 6))
    model.zero_grad()
    dx = model.backward(dy)
    rdx, rg = net.backward(dy)
    np.testing.assert_allclose(dx, rdx, rtol=1e-12, atol=1e-13)
    for name, prm in model.named_parameters():
        np.testing.assert_allclose(prm.grad, rg[name], rtol=1e-12, atol=1e-13, err_msg=name)


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan"), float("inf")])
def test_bad_p_raises(p):
    with pytest.raises(ValueError):
        fm.Dropout(p)


@pytest.mark.parametrize("p", ["0.5", None])
def test_non_number_p_raises(p):
    with pytest.raises((TypeError, ValueError)):
        fm.Dropout(p)


def test_train_eval_switch():
    m = dropout_model(0.5, seed=1)
    x = np.ones((20, 20), np.float32)
    assert m.training
    assert (m(x) == 0).any()
    m.eval()
    np.testing.assert_array_equal(m(x), x)
    m.train()
    assert m.training and (m(x) == 0).any()
    assert m.train(False) is m and not m.training
