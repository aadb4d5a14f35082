"""Loss values and gradients against the NumPy float64 reference and
against central finite differences of the library's own loss."""
from __future__ import annotations

import math

import numpy as np
import pytest

import fastmlp as fm
import reference as ref

DTYPES = ["float64", "float32"]
REDUCTIONS = ["mean", "sum"]
BATCHES = [1, 7, 32, 33]


def assert_close(actual, expected, dtype, what=""):
    """float64: 1e-10 relative; float32: 1e-5 relative (absolute floor scaled by the largest entry)."""
    expected = np.asarray(expected, dtype=np.float64)
    rtol = 1e-10 if dtype == "float64" else 1e-5
    scale = float(np.abs(expected).max()) if expected.size else 1.0
    atol = rtol * max(scale, 1e-300) * 0.1
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, rtol=rtol, atol=atol, err_msg=what)


def check_loss(loss_fn, x, t, ref_value, ref_grad, dtype):
    value = loss_fn(x, t)
    assert isinstance(value, float)
    assert math.isfinite(value)
    assert_close(value, ref_value, dtype, "loss value")
    g = loss_fn.backward()
    assert g.shape == np.shape(x)
    assert g.dtype == np.dtype(dtype)
    assert np.isfinite(g).all()
    assert_close(g, ref_grad, dtype, "loss gradient")
    return value, g


def check_fd(loss_fn, x, t, h=1e-6):
    """Library gradient vs central differences of the library's own float64 loss."""
    x = np.array(x, dtype=np.float64)
    loss_fn(x, t)
    g = loss_fn.backward().copy()
    fd = ref.central_diff(lambda: loss_fn(x, t), x, h)
    scale = max(float(np.abs(g).max()), 1e-3)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-7 * scale)


# ---------------------------------------------------------------- regression losses

REG = [
    ("mse", lambda r: fm.MSELoss(reduction=r), lambda x, t, r: ref.mse_loss(x, t, r)),
    ("l1", lambda r: fm.L1Loss(reduction=r), lambda x, t, r: ref.l1_loss(x, t, r)),
    ("huber", lambda r: fm.HuberLoss(reduction=r), lambda x, t, r: ref.huber_loss(x, t, r)),
    ("huber_d0.5", lambda r: fm.HuberLoss(reduction=r, delta=0.5), lambda x, t, r: ref.huber_loss(x, t, r, 0.5)),
    ("huber_d2.5", lambda r: fm.HuberLoss(reduction=r, delta=2.5), lambda x, t, r: ref.huber_loss(x, t, r, 2.5)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("width", [1, 3, 17])
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("loss", REG, ids=[r[0] for r in REG])
def test_regression_loss(loss, batch, width, reduction, dtype):
    _, make, reference = loss
    rng = np.random.default_rng(batch * 31 + width)
    x = rng.normal(0, 2, size=(batch, width)).astype(dtype)
    t = rng.normal(0, 2, size=(batch, width)).astype(dtype)
    v, gr = reference(x, t, reduction)
    check_loss(make(reduction), x, t, v, gr, dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("loss", REG, ids=[r[0] for r in REG])
def test_regression_loss_finite_differences(loss, reduction):
    _, make, _ = loss
    rng = np.random.default_rng(2)
    x = rng.normal(0, 2, size=(7, 3))
    t = rng.normal(0, 2, size=(7, 3))
    check_fd(make(reduction), x, t)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("loss", REG, ids=[r[0] for r in REG])
def test_regression_loss_1d_input(loss, reduction, dtype):
    _, make, reference = loss
    rng = np.random.default_rng(4)
    x = rng.normal(0, 2, size=11).astype(dtype)
    t = rng.normal(0, 2, size=11).astype(dtype)
    v, gr = reference(x, t, reduction)
    _, g = check_loss(make(reduction), x, t, v, gr, dtype)
    assert g.shape == (11,)


@pytest.mark.parametrize("dtype", DTYPES)
def test_regression_hand_values(dtype):
    x = np.array([[1.0, -2.0], [3.0, 0.5]], dtype=dtype)
    t = np.array([[0.0, 0.0], [1.0, 0.5]], dtype=dtype)
    mse = fm.MSELoss()
    assert mse(x, t) == pytest.approx((1 + 4 + 4 + 0) / 4, rel=1e-7)
    np.testing.assert_allclose(mse.backward(), [[0.5, -1.0], [1.0, 0.0]], rtol=1e-7)
    l1 = fm.L1Loss(reduction="sum")
    assert l1(x, t) == pytest.approx(5.0, rel=1e-7)
    np.testing.assert_array_equal(l1.backward(), [[1.0, -1.0], [1.0, 0.0]])  # sign(0) = 0
    hub = fm.HuberLoss(reduction="sum", delta=1.0)
    assert hub(x, t) == pytest.approx(0.5 + 1.5 + 1.5 + 0.0, rel=1e-7)
    np.testing.assert_array_equal(hub.backward(), [[1.0, -1.0], [1.0, 0.0]])


def test_huber_at_delta_boundary():
    x = np.array([1.0, -1.0, 2.0, -2.0])
    t = np.zeros(4)
    h = fm.HuberLoss(reduction="sum", delta=1.0)
    assert h(x, t) == pytest.approx(0.5 + 0.5 + 1.5 + 1.5, rel=1e-12)
    np.testing.assert_allclose(h.backward(), [1.0, -1.0, 1.0, -1.0], rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", REG, ids=[r[0] for r in REG])
def test_regression_extreme_values(loss, dtype):
    _, make, reference = loss
    x = np.array([[1000.0, -1000.0, 80.0], [-80.0, 0.0, 1000.0]], dtype=dtype)
    t = np.array([[-1000.0, 1000.0, 0.0], [80.0, 0.0, 1000.0]], dtype=dtype)
    for reduction in REDUCTIONS:
        v, gr = reference(x, t, reduction)
        check_loss(make(reduction), x, t, v, gr, dtype)


# ---------------------------------------------------------------- cross-entropy, index targets

CE_CONFIGS = [
    # (id, kwargs, use weight)
    ("plain", {}, False),
    ("weight", {}, True),
    ("smooth", {"label_smoothing": 0.1}, False),
    ("smooth_weight", {"label_smoothing": 0.25}, True),
    ("smooth_one", {"label_smoothing": 1.0}, False),
    ("ignore_default", {"_ignore": -100}, False),
    ("ignore_class1_weight_smooth", {"_ignore": 1, "label_smoothing": 0.2}, True),
]


def ce_case(rng, batch, C, cfg, dtype):
    kw = dict(cfg[1])
    ignore = kw.pop("_ignore", None)
    x = rng.normal(0, 3, size=(batch, C)).astype(dtype)
    y = rng.integers(0, C, size=batch)
    if ignore is not None:
        kw["ignore_index"] = ignore
        y[::3] = ignore
        if batch > 1:
            y[1] = 0  # keep at least one sample
    weight = rng.uniform(0.2, 3.0, size=C) if cfg[2] else None
    return x, y, weight, kw


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("C", [1, 2, 3, 17])
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("cfg", CE_CONFIGS, ids=[c[0] for c in CE_CONFIGS])
def test_cross_entropy_index(cfg, batch, C, reduction, dtype):
    rng = np.random.default_rng(batch * 100 + C)
    x, y, weight, kw = ce_case(rng, batch, C, cfg, dtype)
    ignore = kw.get("ignore_index", -100)
    if reduction == "mean" and not (y != ignore).any():
        y[0] = 0  # 'mean' over no sample is 0/0
    v, gr = ref.cross_entropy_index(x, y, weight, ignore_index=ignore, reduction=reduction,
                                    label_smoothing=kw.get("label_smoothing", 0.0))
    loss = fm.CrossEntropyLoss(weight=weight, reduction=reduction, **kw)
    check_loss(loss, x, y, v, gr, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C", [1023, 2048, 2049, 4500])
@pytest.mark.parametrize("cfg", CE_CONFIGS, ids=[c[0] for c in CE_CONFIGS])
def test_cross_entropy_index_wide_rows(cfg, C, dtype):
    # the kernel takes 2048 logits at a time: several rows per tile, one row per tile, rows in chunks
    rng = np.random.default_rng(C)
    x, y, weight, kw = ce_case(rng, 7, C, cfg, dtype)
    x = x * 4
    ignore = kw.get("ignore_index", -100)
    y[0] = C - 1
    v, gr = ref.cross_entropy_index(x, y, weight, ignore_index=ignore, reduction="mean",
                                    label_smoothing=kw.get("label_smoothing", 0.0))
    check_loss(fm.CrossEntropyLoss(weight=weight, **kw), x, y, v, gr, dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("cfg", CE_CONFIGS, ids=[c[0] for c in CE_CONFIGS])
def test_cross_entropy_index_finite_differences(cfg, reduction):
    rng = np.random.default_rng(9)
    x, y, weight, kw = ce_case(rng, 7, 4, cfg, "float64")
    check_fd(fm.CrossEntropyLoss(weight=weight, reduction=reduction, **kw), x, y)


def test_cross_entropy_hand_value():
    # -log softmax([0, ln 3])[1] = -log(3/4)
    x = np.array([[0.0, math.log(3.0)]])
    ce = fm.CrossEntropyLoss()
    assert ce(x, np.array([1])) == pytest.approx(-math.log(0.75), rel=1e-12)
    np.testing.assert_allclose(ce.backward(), [[0.25, -0.25]], rtol=1e-12)


def test_cross_entropy_ignored_samples_have_zero_grad_and_do_not_count():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 3))
    y = np.array([0, -100, 2, -100, 1])
    ce = fm.CrossEntropyLoss()
    full = ce(x, y)
    g = ce.backward()
    np.testing.assert_array_equal(g[[1, 3]], 0.0)
    sub = fm.CrossEntropyLoss()(x[[0, 2, 4]], y[[0, 2, 4]])
    assert full == pytest.approx(sub, rel=1e-12)


def test_cross_entropy_weighted_mean_normalises_by_weights():
    x = np.array([[2.0, 0.0], [0.0, 1.0]])
    y = np.array([0, 1])
    w = np.array([1.0, 3.0])
    lp = ref.log_softmax(x)
    expected = -(1.0 * lp[0, 0] + 3.0 * lp[1, 1]) / 4.0
    assert fm.CrossEntropyLoss(weight=w)(x, y) == pytest.approx(expected, rel=1e-12)
    assert fm.CrossEntropyLoss(weight=w, reduction="sum")(x, y) == pytest.approx(expected * 4.0, rel=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_extreme_logits(smoothing, reduction, dtype):
    x = np.array([[1000.0, -1000.0, 0.0],
                  [-1000.0, 1000.0, 0.0],
                  [1000.0, 1000.0, -1000.0],
                  [-1000.0, -1000.0, -1000.0]], dtype=dtype)
    y = np.array([1, 1, 2, 0])
    v, gr = ref.cross_entropy_index(x, y, reduction=reduction, label_smoothing=smoothing)
    loss = fm.CrossEntropyLoss(reduction=reduction, label_smoothing=smoothing)
    value, _ = check_loss(loss, x, y, v, gr, dtype)
    # two wrong-class rows cost ~2000 each: no clipping of log(0)
    assert value > (3000.0 if reduction == "sum" else 750.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_1d_input_is_one_sample(dtype):
    x = np.array([0.5, -1.0, 2.0, 0.0], dtype=dtype)
    v, gr = ref.cross_entropy_index(x[None], np.array([2]))
    ce = fm.CrossEntropyLoss()
    value = ce(x, 2)
    assert_close(value, v, dtype)
    g = ce.backward()
    assert g.shape == (4,)
    assert_close(g, gr[0], dtype)


def test_cross_entropy_float_whole_number_labels_are_indices():
    x = np.random.default_rng(0).normal(size=(4, 3))
    a = fm.CrossEntropyLoss()(x, np.array([0, 2, 1, 1]))
    b = fm.CrossEntropyLoss()(x, np.array([0.0, 2.0, 1.0, 1.0]))
    assert a == b


# ---------------------------------------------------------------- cross-entropy, probability targets

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", [0.0, 0.3])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("batch,C", [(1, 2), (7, 3), (33, 17), (32, 1)])
def test_cross_entropy_prob_targets(batch, C, weighted, smoothing, reduction, dtype):
    rng = np.random.default_rng(batch + C)
    x = rng.normal(0, 3, size=(batch, C)).astype(dtype)
    t = rng.dirichlet(np.ones(C), size=batch).astype(dtype)
    w = rng.uniform(0.2, 3.0, size=C) if weighted else None
    v, gr = ref.cross_entropy_prob(x, t, w, reduction=reduction, label_smoothing=smoothing)
    loss = fm.CrossEntropyLoss(weight=w, reduction=reduction, label_smoothing=smoothing)
    check_loss(loss, x, t, v, gr, dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_prob_targets_unnormalised_and_fd(reduction):
    rng = np.random.default_rng(5)
    x = rng.normal(0, 2, size=(6, 4))
    t = rng.uniform(0, 2, size=(6, 4))  # rows do not sum to one
    w = rng.uniform(0.5, 2, size=4)
    v, gr = ref.cross_entropy_prob(x, t, w, reduction=reduction, label_smoothing=0.1)
    loss = fm.CrossEntropyLoss(weight=w, reduction=reduction, label_smoothing=0.1)
    check_loss(loss, x, t, v, gr, "float64")
    check_fd(loss, x, t)


def test_cross_entropy_one_hot_prob_equals_index():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(9, 5))
    y = rng.integers(0, 5, size=9)
    onehot = np.eye(5)[y]
    for s in (0.0, 0.2):
        a = fm.CrossEntropyLoss(label_smoothing=s)
        b = fm.CrossEntropyLoss(label_smoothing=s)
        assert a(x, y) == pytest.approx(b(x, onehot), rel=1e-12)
        np.testing.assert_allclose(a.backward(), b.backward(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_prob_extreme_logits(dtype):
    x = np.array([[1000.0, -1000.0], [-1000.0, 1000.0]], dtype=dtype)
    t = np.array([[0.0, 1.0], [0.5, 0.5]], dtype=dtype)
    v, gr = ref.cross_entropy_prob(x, t)
    check_loss(fm.CrossEntropyLoss(), x, t, v, gr, dtype)


# ---------------------------------------------------------------- BCE with logits

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("pos_weight", [False, True])
@pytest.mark.parametrize("width", [1, 3, 17])
@pytest.mark.parametrize("batch", BATCHES)
def test_bce_with_logits(batch, width, pos_weight, reduction, dtype):
    rng = np.random.default_rng(batch * 7 + width)
    x = rng.normal(0, 3, size=(batch, width)).astype(dtype)
    t = rng.uniform(0, 1, size=(batch, width)).astype(dtype)
    t[::2] = np.round(t[::2])  # hard and soft labels
    pw = rng.uniform(0.3, 4.0, size=width) if pos_weight else None
    v, gr = ref.bce_with_logits(x, t, reduction, pw)
    check_loss(fm.BCEWithLogitsLoss(reduction=reduction, pos_weight=pw), x, t, v, gr, dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("pos_weight", [None, [0.5, 2.0, 3.0]])
def test_bce_with_logits_finite_differences(reduction, pos_weight):
    rng = np.random.default_rng(8)
    x = rng.normal(0, 2, size=(5, 3))
    t = rng.uniform(0, 1, size=(5, 3))
    check_fd(fm.BCEWithLogitsLoss(reduction=reduction, pos_weight=pos_weight), x, t)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_with_logits_extreme(reduction, dtype):
    x = np.array([[1000.0, -1000.0, 1000.0, -1000.0, 80.0, -80.0, 0.0]], dtype=dtype)
    t = np.array([[1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0]], dtype=dtype)
    pw = np.array([1.0, 2.0, 3.0, 0.5, 1.5, 2.0, 1.0])
    for p in (None, pw):
        v, gr = ref.bce_with_logits(x, t, reduction, p)
        value, g = check_loss(fm.BCEWithLogitsLoss(reduction=reduction, pos_weight=p), x, t, v, gr, dtype)
    n = 1.0 if reduction == "sum" else 7.0
    # confident and right: 0; confident and wrong: |x|
    assert value == pytest.approx((0 + 0 + 1000 + 0.5 * 1000 + 80 + 2 * 80 + math.log(2)) / n, rel=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_with_logits_1d(dtype):
    x = np.array([1.0, -2.0, 3.0, 0.0], dtype=dtype)
    t = np.array([1.0, 0.0, 0.0, 1.0], dtype=dtype)
    v, gr = ref.bce_with_logits(x, t, "mean")
    _, g = check_loss(fm.BCEWithLogitsLoss(), x, t, v, gr, dtype)
    assert g.shape == (4,)


# ---------------------------------------------------------------- calls, empty batches, errors

def test_backward_is_of_the_last_call():
    rng = np.random.default_rng(0)
    x1, x2, t = rng.normal(size=(3, 4, 2))
    mse = fm.MSELoss()
    mse(x1, t)
    mse(x2, t)
    np.testing.assert_allclose(mse.backward(), ref.mse_loss(x2, t)[1], rtol=1e-12)
    with pytest.raises(RuntimeError):
        fm.MSELoss().backward()


def test_loss_does_not_modify_inputs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 3))
    x0 = x.copy()
    fm.CrossEntropyLoss(label_smoothing=0.1)(x, np.array([0, 1, 2, 1]))
    np.testing.assert_array_equal(x, x0)


def test_empty_batch_like_torch():
    # torch: 'sum' over nothing is 0; 'mean' over nothing is nan (0/0)
    for make, t in [(fm.MSELoss, np.zeros((0, 3))), (fm.L1Loss, np.zeros((0, 3))),
                    (fm.BCEWithLogitsLoss, np.zeros((0, 3))), (fm.CrossEntropyLoss, np.zeros(0, dtype=np.int64))]:
        s = make(reduction="sum")
        assert s(np.zeros((0, 3)), t) == 0.0
        assert s.backward().shape == (0, 3)
        assert math.isnan(make(reduction="mean")(np.zeros((0, 3)), t))


def test_cross_entropy_bad_targets():
    x = np.zeros((3, 4))
    ce = fm.CrossEntropyLoss()
    for y in ([0, 1, 4], [0, -1, 2], [0, 1, 1000]):
        with pytest.raises(ValueError):
            ce(x, np.array(y))
    with pytest.raises(ValueError):
        ce(x, np.array([0, 1]))  # wrong batch
    with pytest.raises(ValueError):
        ce(x, np.array([[0], [1], [2]]))  # 2-D integer labels
    with pytest.raises(ValueError):
        ce(x, np.array([0.5, 1.0, 2.0]))  # not whole numbers
    with pytest.raises(ValueError):
        ce(x, np.full((3, 5), 0.2))  # probabilities of the wrong width
    with pytest.raises(ValueError):
        ce(x, np.full((2, 4), 0.25))  # probabilities of the wrong batch
    with pytest.raises(ValueError):
        fm.CrossEntropyLoss(weight=[1.0, 2.0, 3.0])(x, np.array([0, 1, 2]))  # weight width
    with pytest.raises(ValueError):
        fm.CrossEntropyLoss(weight=[[1.0, 2.0, 3.0, 4.0]])
    with pytest.raises(ValueError):
        fm.CrossEntropyLoss(label_smoothing=1.5)
    with pytest.raises(ValueError):
        fm.CrossEntropyLoss(label_smoothing=-0.1)
    with pytest.raises(ValueError):
        ce(np.zeros((2, 3, 4)), np.array([0, 1]))
    # a label equal to ignore_index is fine even when out of range
    assert math.isfinite(fm.CrossEntropyLoss(ignore_index=7)(x, np.array([0, 7, 3])))


def test_regression_and_bce_bad_targets():
    x = np.zeros((3, 4))
    for loss in (fm.MSELoss(), fm.L1Loss(), fm.HuberLoss(), fm.BCEWithLogitsLoss()):
        with pytest.raises(ValueError):
            loss(x, np.zeros((3, 5)))
        with pytest.raises(ValueError):
            loss(x, np.zeros((4, 4)))
        with pytest.raises(ValueError):
            loss(x, np.zeros((4, 3)))  # transposed
    with pytest.raises(ValueError):
        fm.BCEWithLogitsLoss(pos_weight=[1.0, 2.0])(x, np.zeros((3, 4)))
    with pytest.raises(ValueError):
        fm.MSELoss(reduction="bogus")
    with pytest.raises(ValueError):
        fm.HuberLoss(delta=0.0)
    with pytest.raises(ValueError):
        fm.HuberLoss(delta=-1.0)


@pytest.mark.parametrize("make", [fm.MSELoss, fm.L1Loss, fm.HuberLoss, fm.BCEWithLogitsLoss])
def test_flat_target_for_wide_input_raises(make):
    # a (B*C,) target for a (B, C>1) input is a shape error (PyTorch refuses to broadcast it);
    # only a (B,) target for a (B, 1) input may be taken as a column
    x = np.zeros((3, 4))
    with pytest.raises(ValueError):
        make()(x, np.zeros(12))


@pytest.mark.parametrize("make", [fm.MSELoss, fm.L1Loss, fm.HuberLoss, fm.BCEWithLogitsLoss])
def test_column_target_for_column_input(make):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 1))
    t = rng.uniform(size=5)
    a, b = make(), make()
    assert a(x, t) == b(x, t[:, None])
    np.testing.assert_array_equal(a.backward(), b.backward())


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_with_logits_1d_pos_weight_broadcasts_over_the_last_axis(dtype):
    # PyTorch broadcasts pos_weight against the input's last dimension; for a 1-D input
    # of N logits a pos_weight of N entries weighs each element
    x = np.array([1.0, -2.0, 3.0, 0.5], dtype=dtype)
    t = np.array([1.0, 0.0, 1.0, 0.0], dtype=dtype)
    pw = np.array([2.0, 3.0, 4.0, 5.0])
    v, gr = ref.bce_with_logits(x, t, "mean", pw)
    check_loss(fm.BCEWithLogitsLoss(pos_weight=pw), x, t, v, gr, dtype)


def test_cross_entropy_other_negative_ignore_index():
    x = np.array([[1.0, 2.0, 3.0], [0.0, 1.0, 0.0], [2.0, -1.0, 0.5]])
    y = np.array([-1, 2, 0])
    v, gr = ref.cross_entropy_index(x, y, ignore_index=-1, label_smoothing=0.1)
    check_loss(fm.CrossEntropyLoss(ignore_index=-1, label_smoothing=0.1), x, y, v, gr, "float64")
    with pytest.raises(ValueError):
        fm.CrossEntropyLoss()(x, y)  # -1 is out of range when it is not the ignore_index


# ---- the estimators' extension keys: scikit-learn's log-loss clipping (value only)
def test_log_clip_caps_the_reported_log_loss_not_the_gradient():
    eps = np.finfo(np.float64).eps
    x = np.array([[1000.0, 0.0], [0.0, 1000.0], [3.0, -1.0]])
    y = np.array([1, 1, 0])
    plain, g_plain = fm._core.loss_forward64({"kind": "cross_entropy"}, x, y, True)
    clipped, g_clip = fm._core.loss_forward64({"kind": "cross_entropy", "log_clip": eps}, x, y, True)
    # row 0: -log p_y = 1000, capped at -log(eps); row 1: p_y = 1, raised to -log(1 - eps); row 2 unchanged
    row2 = np.logaddexp(3.0, -1.0) - 3.0
    assert plain == pytest.approx((1000 + 0 + row2) / 3, rel=1e-12)
    assert clipped == pytest.approx((-np.log(eps) - np.log1p(-eps) + row2) / 3, rel=1e-12)
    np.testing.assert_array_equal(g_clip, g_plain)
    t = np.array([[1.0], [0.0]])
    xb = np.array([[-800.0], [800.0]])  # both certain and wrong: sigma clipped to eps / 1 - eps
    v, _ = fm._core.loss_forward64({"kind": "bce_with_logits", "log_clip": eps}, xb, t, True)
    assert v == pytest.approx(-np.log(eps), rel=1e-12)


@pytest.mark.parametrize("key, value", [("log_clip", 0.7), ("log_clip", -1.0), ("l2", -1.0), ("l2", np.inf)])
def test_extension_keys_are_checked(key, value):
    with pytest.raises(ValueError, match=key):
        fm._core.loss_forward64({"kind": "cross_entropy", key: value}, np.zeros((2, 3)), np.zeros(2, np.int64), True)
