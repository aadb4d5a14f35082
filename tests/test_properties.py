"""Property tests (hypothesis) over the public API.

Random shapes (0 included), source dtypes, memory layouts and values; the
properties (issue 5):

* valid input gives exactly (bit for bit) the result of its contiguous float
  copy, whatever its layout: C, Fortran, negative strides, zero strides
  (broadcast), strided views, read-only, memory-mapped, unaligned, non-native
  byte order, Python lists, and other numeric dtypes (ints, float16, longdouble);
* finite input gives finite output;
* invalid input raises a Python exception (ValueError/TypeError) with a clear
  message, and changes nothing: weights, gradients, optimizer state, counters
  and the caller's arrays are as before;
* the caller's arrays are never written to;
* model files: any damage gives ValueError (or, if the damage is harmless, a
  valid model), never another exception.

Examples per property: FASTMLP_PROPERTY_EXAMPLES (default 50); deadline off.
"""
from __future__ import annotations

import atexit
import copy
import io
import json
import os
import shutil
import tempfile
import threading
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import fastmlp as fm

N_EXAMPLES = int(os.environ.get("FASTMLP_PROPERTY_EXAMPLES", "50"))
PROPS = settings(max_examples=N_EXAMPLES, deadline=None, print_blob=True,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                        HealthCheck.filter_too_much])
FEW = settings(PROPS, max_examples=max(10, N_EXAMPLES // 2))

_TMP = tempfile.mkdtemp(prefix="fastmlp-props-")
atexit.register(shutil.rmtree, _TMP, True)
_counter = iter(range(10**9))

# --------------------------------------------------------------------------- arrays

NUMERIC_SOURCES = ["float64", "float32", "float16", "longdouble", "int8", "int16", "int32", "int64",
                   "uint8", "uint16", "uint32", "uint64", ">f8", ">f4", ">i4", "<i2"]
FLOAT_SOURCES = ["float64", "float32", "float16", "longdouble", ">f8", ">f4"]
LAYOUTS = ["c", "fortran", "reversed", "strided", "transposed", "broadcast_rows", "broadcast_cols",
           "readonly", "memmap", "memmap_readonly", "unaligned", "list"]

EDGE_VALUES = [0.0, -0.0, 1.0, -1.0, 1000.0, -1000.0, 1e-300, -1e-300, 1e-40, 0.5, 65504.0 / 100]


def _cast(values: np.ndarray, dtype: str) -> np.ndarray:
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return np.clip(np.round(values), max(info.min, -1000), min(info.max, 1000)).astype(dt)
    return values.astype(dt)


def _layout(a: np.ndarray, kind: str):
    """An array (or list) holding a's values (or, for broadcasts, values
    derived from them) in the given memory layout."""
    if kind == "c" or a.ndim == 0:
        return np.ascontiguousarray(a)
    if kind == "fortran":
        return np.asfortranarray(a)
    if kind == "reversed":
        flip = (slice(None, None, -1),) * a.ndim
        out = np.ascontiguousarray(a[flip])[flip]
        assert a.size <= 1 or any(s < 0 for s in out.strides)
        return out
    if kind == "strided":
        big = np.zeros(tuple(2 * s + 1 for s in a.shape), a.dtype)
        sl = tuple(slice(1, None, 2) for _ in a.shape)
        big[sl] = a
        return big[sl]
    if kind == "transposed":
        return np.ascontiguousarray(a.T).T
    if kind == "broadcast_rows":
        row = a[:1] if a.shape[0] else np.zeros((1,) + a.shape[1:], a.dtype)
        return np.broadcast_to(row, a.shape)
    if kind == "broadcast_cols":
        if a.ndim < 2:
            return np.broadcast_to(a[:1] if a.shape[0] else np.zeros(1, a.dtype), a.shape)
        col = a[:, :1] if a.shape[1] else np.zeros(a.shape[:1] + (1,), a.dtype)
        return np.broadcast_to(col, a.shape)
    if kind == "readonly":
        out = a.copy()
        out.setflags(write=False)
        return out
    if kind in ("memmap", "memmap_readonly"):
        if a.size == 0:
            return np.ascontiguousarray(a)
        path = os.path.join(_TMP, f"mm{next(_counter)}.bin")
        mm = np.memmap(path, dtype=a.dtype, mode="w+", shape=a.shape)
        mm[...] = a
        mm.flush()
        del mm
        return np.memmap(path, dtype=a.dtype, mode="r" if kind == "memmap_readonly" else "r+", shape=a.shape)
    if kind == "unaligned":
        buf = np.zeros(a.nbytes + 1, np.uint8)
        out = np.ndarray(a.shape, a.dtype, buffer=buf, offset=1)
        out[...] = a
        return out
    if kind == "list":
        return a.tolist()
    raise AssertionError(kind)


def _snapshot(x):
    """Exact contents of a caller's argument, to check it is never written."""
    if isinstance(x, np.ndarray):
        return ("ndarray", x.dtype.str, x.shape, np.array(x, copy=True).tobytes())
    if isinstance(x, (list, tuple)):
        return (type(x).__name__, tuple(_snapshot(v) for v in x))
    if isinstance(x, dict):
        return ("dict", tuple((k, _snapshot(v)) for k, v in x.items()))
    return ("value", repr(x))


def _assert_unchanged(x, snap, name="argument"):
    assert _snapshot(x) == snap, f"the caller's {name} was modified"


def _float_copy(x, dtype) -> np.ndarray:
    """The contiguous float copy the result must equal."""
    return np.array(np.asarray(x), dtype=dtype, order="C", copy=True)


@st.composite
def values(draw, shape, low=-1000.0, high=1000.0):
    n = int(np.prod(shape)) if shape else 1
    elems = st.one_of(st.floats(low, high, allow_nan=False, allow_infinity=False),
                      st.sampled_from([v for v in EDGE_VALUES if low <= v <= high]))
    return np.array(draw(st.lists(elems, min_size=n, max_size=n)), dtype=np.float64).reshape(shape)


@st.composite
def hostile_arrays(draw, shape, sources=NUMERIC_SOURCES, layouts=LAYOUTS, low=-1000.0, high=1000.0):
    """A valid numeric array of `shape` from any source dtype in any layout."""
    v = draw(values(shape, low, high))
    a = _cast(v, draw(st.sampled_from(sources)))
    layout = draw(st.sampled_from(layouts))
    if layout == "list" and 0 in shape:
        layout = "c"  # an empty list loses its shape
    return _layout(a, layout)


# --------------------------------------------------------------------------- models

def _act(name):
    return {"relu": fm.ReLU, "tanh": fm.Tanh, "sigmoid": fm.Sigmoid, "gelu": fm.GELU, "identity": fm.Identity,
            "leaky": lambda: fm.LeakyReLU(0.1), "softmax": fm.Softmax}[name]()


@st.composite
def models(draw, dtype=None, dropout=True, d_out_min=1):
    """(factory, d_in, d_out, dtype): factory() builds a fresh identical model."""
    dtype = dtype or draw(st.sampled_from(["float32", "float64"]))
    d_in = draw(st.integers(1, 6))
    plan, w = [], d_in
    for _ in range(draw(st.integers(0, 2))):
        h = draw(st.integers(1, 7))
        plan.append(("linear", w, h, draw(st.booleans()),
                     draw(st.sampled_from(["default", "xavier_uniform", "kaiming_normal", "normal"]))))
        plan.append(("act", draw(st.sampled_from(["relu", "tanh", "sigmoid", "gelu", "identity", "leaky", "softmax"]))))
        if dropout and draw(st.booleans()):
            plan.append(("dropout", draw(st.sampled_from([0.0, 0.2, 0.5, 0.9]))))
        w = h
    d_out = draw(st.integers(d_out_min, 4))
    plan.append(("linear", w, d_out, draw(st.booleans()), "default"))
    seed = draw(st.integers(0, 2**32))

    def make():
        layers = []
        for p in plan:
            if p[0] == "linear":
                layers.append(fm.Linear(p[1], p[2], bias=p[3], init=p[4]))
            elif p[0] == "act":
                layers.append(_act(p[1]))
            else:
                layers.append(fm.Dropout(p[1]))
        return fm.Sequential(*layers, seed=seed, dtype=dtype)

    return make, d_in, d_out, dtype


def _state(model, opt=None) -> dict:
    s = {"params": model._core.flat_params().copy(), "grads": model._core.flat_grads().copy(),
         "dropout_calls": int(model._core.dropout_calls), "epochs_done": int(model._core.epochs_done),
         "training": model.training}
    if opt is not None:
        s["opt"] = copy.deepcopy(opt.state_dict())
    return s


def _assert_same(a, b, path="state"):
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for k in a:
            _assert_same(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape, path
        assert a.tobytes() == b.tobytes(), f"{path} changed"
    elif isinstance(a, float) and np.isnan(a):
        assert isinstance(b, float) and np.isnan(b), path
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def _outcome(fn):
    try:
        return ("ok", fn())
    except Exception as e:  # noqa: BLE001 - compared below
        return ("error", type(e), str(e))


# --------------------------------------------------------------------------- valid input: layout never matters

@PROPS
@given(data=st.data())
def test_forward_predict_backward_equal_the_contiguous_float_copy(data):
    make, d_in, d_out, dtype = data.draw(models())
    n = data.draw(st.sampled_from([0, 1, 2, 3, 5, 7, 8, 9, 16, 17, 33]))
    one_sample = n == 1 and data.draw(st.booleans())
    X = data.draw(hostile_arrays((d_in,) if one_sample else (n, d_in)))
    Xc = _float_copy(X, dtype)
    snap = _snapshot(X)
    a, b = make(), make()

    a.eval(), b.eval()
    out_a, out_b = a(X), b(Xc)
    assert out_a.dtype == np.dtype(dtype) and out_a.shape == ((d_out,) if one_sample else (n, d_out))
    np.testing.assert_array_equal(out_a, out_b)
    assert np.isfinite(out_a).all()
    bs = data.draw(st.sampled_from([None, 1, 3, 64]))
    p_a, p_b = a.predict(X, batch_size=bs), b.predict(Xc, batch_size=bs)
    np.testing.assert_array_equal(p_a, p_b)
    np.testing.assert_allclose(p_a, out_a, rtol=1e-5 if dtype == "float32" else 1e-12,
                               atol=1e-5 if dtype == "float32" else 1e-12)

    # train mode (dropout draws from the model's stream) and backward
    a.train(), b.train()
    out_a, out_b = a(X), b(Xc)
    np.testing.assert_array_equal(out_a, out_b)
    assert np.isfinite(out_a).all()
    G = data.draw(hostile_arrays(out_a.shape))
    g_snap = _snapshot(G)
    dx_a, dx_b = a.backward(G), b.backward(_float_copy(G, dtype))
    np.testing.assert_array_equal(dx_a, dx_b)
    assert dx_a.shape == np.shape(Xc) and np.isfinite(dx_a).all()
    np.testing.assert_array_equal(a._core.flat_grads(), b._core.flat_grads())
    assert np.isfinite(a._core.flat_grads()).all()
    _assert_unchanged(X, snap, "X")
    _assert_unchanged(G, g_snap, "grad_output")


def _loss_cases(C):
    return ["mse", "l1", "huber", "poisson", "bce"] + (["ce_index", "ce_prob"] if C >= 2 else [])


@st.composite
def losses(draw, C):
    kind = draw(st.sampled_from(_loss_cases(C)))
    red = draw(st.sampled_from(["mean", "sum"]))
    if kind == "mse":
        return kind, fm.MSELoss(red)
    if kind == "l1":
        return kind, fm.L1Loss(red)
    if kind == "huber":
        return kind, fm.HuberLoss(red, delta=draw(st.sampled_from([0.5, 1.0, 30.0])))
    if kind == "poisson":
        return kind, fm.PoissonNLLLoss(reduction=red)
    if kind == "bce":
        pw = draw(st.none() | st.lists(st.floats(0.1, 10), min_size=C, max_size=C))
        return kind, fm.BCEWithLogitsLoss(red, pos_weight=pw)
    w = draw(st.none() | st.lists(st.floats(0.1, 10), min_size=C, max_size=C))
    return kind, fm.CrossEntropyLoss(weight=w, reduction=red, label_smoothing=draw(st.sampled_from([0.0, 0.1, 1.0])))


@PROPS
@given(data=st.data())
def test_losses_equal_the_contiguous_float_copy(data):
    C = data.draw(st.integers(1, 5))
    B = data.draw(st.sampled_from([0, 1, 2, 3, 7, 8, 9]))
    kind, loss = data.draw(losses(C))
    high = 20.0 if kind == "poisson" else 1000.0  # exp(input): stay finite as torch does
    X = data.draw(hostile_arrays((B, C), low=-high, high=high))
    if kind == "ce_index":
        T = _layout(_cast(np.array(data.draw(st.lists(st.integers(0, C - 1), min_size=B, max_size=B)), float),
                          data.draw(st.sampled_from(["int8", "uint8", "int16", "int32", "int64", "uint64", ">i4",
                                                     "float64", "float32"]))),
                    data.draw(st.sampled_from(LAYOUTS)) if B else "c")
        Tc = np.array(np.asarray(T), copy=True)
    else:
        # class probabilities must be floats (an integer (B, C) target is not a probability table)
        T = data.draw(hostile_arrays((B, C), sources=FLOAT_SOURCES if kind == "ce_prob" else NUMERIC_SOURCES,
                                     low=0.0 if kind == "poisson" else -1000.0))
    dtype = np.float32 if np.asarray(X).dtype == np.float32 else np.float64
    Xc = _float_copy(X, dtype)
    if kind != "ce_index":
        Tc = _float_copy(T, dtype)
    sx, stt = _snapshot(X), _snapshot(T)
    v1 = loss(X, T)
    g1 = loss.backward().copy()
    v2 = loss(Xc, Tc)
    g2 = loss.backward().copy()
    assert v1 == v2 or (np.isnan(v1) and np.isnan(v2)), (v1, v2)
    np.testing.assert_array_equal(g1, g2)
    assert g1.shape == (B, C)
    if B:
        assert np.isfinite(v1) and np.isfinite(g1).all()
    _assert_unchanged(X, sx, "input")
    _assert_unchanged(T, stt, "target")


@st.composite
def training_data(draw, d_in, d_out, classify, n=None):
    n = draw(st.integers(1, 40)) if n is None else n
    X = draw(hostile_arrays((n, d_in)))
    if classify:
        labels = np.array(draw(st.lists(st.integers(0, d_out - 1), min_size=n, max_size=n)), float)
        src = draw(st.sampled_from(["int8", "uint8", "int16", "int32", "int64", "uint32", ">i4", "float64"]))
        y = _layout(_cast(labels, src), draw(st.sampled_from(LAYOUTS)))
    else:
        y = draw(hostile_arrays((n,) if d_out == 1 and draw(st.booleans()) else (n, d_out)))
    return X, y


def _ref_target(y, classify, dtype):
    return np.array(np.asarray(y), copy=True) if classify else _float_copy(y, dtype)


@PROPS
@given(data=st.data())
def test_fit_evaluate_train_step_equal_the_contiguous_float_copy(data):
    classify = data.draw(st.booleans())
    make, d_in, d_out, dtype = data.draw(models(d_out_min=2 if classify else 1))
    X, y = data.draw(training_data(d_in, d_out, classify))
    n = np.shape(X)[0]
    sw = data.draw(st.none() | hostile_arrays((n,), sources=FLOAT_SOURCES + ["int32", "uint8"], low=1.0, high=10.0))
    val = data.draw(st.none() | training_data(d_in, d_out, classify))
    loss = fm.CrossEntropyLoss() if classify else fm.MSELoss()
    opt_name = data.draw(st.sampled_from(["Adam", "AdamW", "RMSprop", "Adagrad"]))
    kw = dict(epochs=data.draw(st.integers(1, 2)), batch_size=data.draw(st.integers(1, n + 3)),
              shuffle=data.draw(st.booleans()), verbose=0)
    snaps = [_snapshot(v) for v in (X, y, sw, val)]

    a, b = make(), make()
    oa = getattr(fm.optim, opt_name)(a.parameters(), lr=1e-2)
    ob = getattr(fm.optim, opt_name)(b.parameters(), lr=1e-2)
    ref = lambda v: None if v is None else _float_copy(v, dtype)  # noqa: E731
    val_ref = None if val is None else (_float_copy(val[0], dtype), _ref_target(val[1], classify, dtype))
    ra = _outcome(lambda: a.fit(X, y, loss, oa, sample_weight=sw, validation_data=val, **kw).history)
    rb = _outcome(lambda: b.fit(_float_copy(X, dtype), _ref_target(y, classify, dtype), loss, ob,
                                sample_weight=ref(sw), validation_data=val_ref, **kw).history)
    assert ra[0] == rb[0], (ra, rb)
    if ra[0] == "ok":
        for k in ra[1]:
            if k != "time":
                np.testing.assert_array_equal(ra[1][k], rb[1][k], err_msg=k)
        assert np.isfinite(ra[1]["loss"]).all()
    else:
        assert ra[1:] == rb[1:]
    _assert_same(_state(a, oa), _state(b, ob))
    assert np.isfinite(a._core.flat_params()).all()

    ea = a.evaluate(X, y, loss)
    eb = b.evaluate(_float_copy(X, dtype), _ref_target(y, classify, dtype), loss)
    assert ea == eb and np.isfinite(ea["loss"])

    la = a.train_step(X, y, loss, oa)
    lb = b.train_step(_float_copy(X, dtype), _ref_target(y, classify, dtype), loss, ob)
    assert la == lb and np.isfinite(la)
    _assert_same(_state(a, oa), _state(b, ob))
    for v, s in zip((X, y, sw, val), snaps):
        _assert_unchanged(v, s)


@PROPS
@given(data=st.data())
def test_optimizer_gradients_in_any_layout_equal_the_contiguous_copy(data):
    dtype = data.draw(st.sampled_from(["float32", "float64"]))
    shapes = data.draw(st.lists(st.sampled_from([(1,), (3,), (2, 3), (4, 1), (0,), (5, 2)]), min_size=1, max_size=3))
    name, kw = data.draw(st.sampled_from([
        ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)), ("SGD", dict(lr=0.1, weight_decay=0.1)),
        ("Adam", dict(lr=0.1, amsgrad=True)), ("AdamW", dict(lr=0.1)), ("RMSprop", dict(lr=0.01, centered=True)),
        ("Adagrad", dict(lr=0.1)), ("Adadelta", dict())]))
    init = [data.draw(values(s)).astype(dtype) for s in shapes]
    pa = [v.copy() for v in init]
    pb = [v.copy() for v in init]
    oa = getattr(fm.optim, name)(pa, **kw)
    ob = getattr(fm.optim, name)(pb, **kw)
    for _ in range(data.draw(st.integers(1, 3))):
        grads = [data.draw(hostile_arrays(s)) for s in shapes]
        snaps = [_snapshot(g) for g in grads]
        oa.step(grads)
        ob.step([_float_copy(g, dtype) for g in grads])
        for g, s in zip(grads, snaps):
            _assert_unchanged(g, s, "gradient")
    for x, y in zip(pa, pb):
        np.testing.assert_array_equal(x, y)
        assert np.isfinite(x).all()


@PROPS
@given(data=st.data())
def test_optimizer_refuses_parameters_it_cannot_update_in_place(data):
    dtype = data.draw(st.sampled_from(["float32", "float64"]))
    v = data.draw(values((4, 3))).astype(dtype)
    layout = data.draw(st.sampled_from(["fortran", "reversed", "strided", "broadcast_rows", "readonly",
                                        "memmap_readonly"]))
    p = _layout(v, layout)
    snap = _snapshot(p)
    with pytest.raises((ValueError, TypeError), match="C-contiguous|writable|read-only|writeable"):
        fm.optim.SGD([p], lr=0.1)
    _assert_unchanged(p, snap)


@PROPS
@given(data=st.data())
def test_init_writes_through_any_writable_view_exactly_like_a_contiguous_fill(data):
    dtype = data.draw(st.sampled_from(["float32", "float64"]))
    shape = data.draw(st.sampled_from([(3, 4), (1, 5), (6, 2), (2, 3, 2)]))
    fn, kw = data.draw(st.sampled_from([
        (fm.init.uniform_, dict(a=-2.0, b=3.0)), (fm.init.normal_, dict(mean=1.0, std=2.0)),
        (fm.init.xavier_uniform_, {}), (fm.init.xavier_normal_, dict(gain=2.0)),
        (fm.init.kaiming_uniform_, dict(a=0.1)), (fm.init.kaiming_normal_, dict(mode="fan_out")),
        (fm.init.ones_, None), (fm.init.zeros_, None)]))
    seed = data.draw(st.integers(0, 2**32))
    big = np.full(tuple(2 * s + 1 for s in shape), 7.0, dtype)
    kind = data.draw(st.sampled_from(["strided", "reversed", "fortran", "c"]))
    if kind == "strided":
        view = big[tuple(slice(1, None, 2) for _ in shape)]
    elif kind == "reversed":
        view = big[tuple(slice(2 * s - 1, None, -2) for s in shape)]
    elif kind == "fortran":
        view = np.asfortranarray(np.full(shape, 7.0, dtype))
    else:
        view = np.full(shape, 7.0, dtype)
    ref = np.full(shape, 7.0, dtype)
    outside = big.copy()
    if kw is None:
        r = fn(view)
        fn(ref)
    else:
        r = fn(view, **kw, seed=seed)
        fn(ref, **kw, seed=seed)
    assert r is view
    np.testing.assert_array_equal(view, ref)
    if kind in ("strided", "reversed"):
        mask = np.ones(big.shape, bool)
        mask[tuple(slice(1, None, 2) for _ in shape)] = False
        np.testing.assert_array_equal(big[mask], outside[mask])  # nothing written outside the view


@PROPS
@given(data=st.data())
def test_load_state_dict_from_any_layout_equals_the_contiguous_copy(data):
    make, d_in, d_out, dtype = data.draw(models(dropout=False))
    a, b = make(), make()
    src = {k: data.draw(hostile_arrays(v.shape, sources=NUMERIC_SOURCES, low=-3, high=3))
           for k, v in a.state_dict().items()}
    snaps = {k: _snapshot(v) for k, v in src.items()}
    a.load_state_dict(src)
    b.load_state_dict({k: _float_copy(v, dtype) for k, v in src.items()})
    _assert_same(_state(a), _state(b))
    for k, v in src.items():
        _assert_unchanged(v, snaps[k], k)


# --------------------------------------------------------------------------- invalid input: an exception, nothing changed

ENTRY_POINTS = ["forward", "predict", "fit", "evaluate", "train_step"]


@st.composite
def setup(draw, classify=None):
    classify = draw(st.booleans()) if classify is None else classify
    make, d_in, d_out, dtype = draw(models(d_out_min=2 if classify else 1))
    m = make()
    opt = fm.optim.Adam(m.parameters(), lr=1e-2)
    n = draw(st.integers(1, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2**32)))
    X = rng.uniform(-3, 3, (n, d_in))
    y = rng.integers(0, d_out, n) if classify else rng.uniform(-3, 3, (n, d_out))
    loss = fm.CrossEntropyLoss() if classify else fm.MSELoss()
    m.fit(X, y, loss, opt, epochs=1, batch_size=4, verbose=0)  # non-trivial optimizer state and counters
    if draw(st.booleans()):
        m.eval()
    return m, opt, X, y, loss, classify, d_in, d_out, dtype


def _call(entry, m, opt, X, y, loss, **kw):
    if entry == "forward":
        return m(X)
    if entry == "predict":
        return m.predict(X, **kw)
    if entry == "fit":
        return m.fit(X, y, loss, opt, epochs=kw.pop("epochs", 1), batch_size=kw.pop("batch_size", 4), verbose=0, **kw)
    if entry == "evaluate":
        return m.evaluate(X, y, loss, **kw)
    if entry == "train_step":
        return m.train_step(X, y, loss, opt)
    raise AssertionError(entry)


def _expect_failure_changes_nothing(entry, m, opt, X, y, loss, excs, match, **kw):
    before = _state(m, opt)
    snaps = (_snapshot(X), _snapshot(y), {k: _snapshot(v) for k, v in kw.items()})
    with pytest.raises(excs, match=match):
        _call(entry, m, opt, X, y, loss, **kw)
    _assert_same(_state(m, opt), before)
    _assert_unchanged(X, snaps[0], "X")
    _assert_unchanged(y, snaps[1], "y")
    for k, v in kw.items():
        _assert_unchanged(v, snaps[2][k], k)


BAD_VALUES = [np.nan, np.inf, -np.inf]
KEEP_VALUES = [k for k in LAYOUTS if not k.startswith("broadcast")]  # layouts that keep every value


@st.composite
def poisoned(draw, a, dtype, float32_overflow=True):
    """a copy of a with one non-finite value (or, for float32 models, a finite
    float64 that overflows float32), in a random float source dtype and layout."""
    bad = draw(st.sampled_from(BAD_VALUES + ([1e39, -3e300] if float32_overflow and dtype == "float32" else [])))
    out = np.array(a, dtype=np.float64)
    idx = tuple(draw(st.integers(0, s - 1)) for s in out.shape)
    out[idx] = bad
    src = draw(st.sampled_from(["float64", ">f8", "longdouble"] + (["float32", "float16"] if not np.isfinite(bad) else [])))
    return _layout(out.astype(src), draw(st.sampled_from(KEEP_VALUES)))


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@FEW
@given(data=st.data())
def test_non_finite_X_is_rejected_before_any_work(entry, data):
    """NaN/inf in X: ValueError naming NaN/inf, and nothing changes (issue 5).
    The float64 value 1e39 is finite but becomes inf in a float32 model."""
    m, opt, X, y, loss, classify, d_in, d_out, dtype = data.draw(setup())
    Xb = data.draw(poisoned(X, dtype))
    _expect_failure_changes_nothing(entry, m, opt, Xb, y, loss, ValueError, "NaN|nan|inf|finite")


@pytest.mark.parametrize("entry", ["fit", "evaluate", "train_step"])
@FEW
@given(data=st.data())
def test_non_finite_y_is_rejected_before_any_work(entry, data):
    m, opt, X, y, loss, classify, d_in, d_out, dtype = data.draw(setup(classify=data.draw(st.booleans())))
    if classify:  # NaN/inf as a class index
        yb = np.array(y, dtype=np.float64)
        yb[data.draw(st.integers(0, len(yb) - 1))] = data.draw(st.sampled_from(BAD_VALUES))
        match = "NaN|nan|inf|finite|whole numbers"
    else:
        yb = data.draw(poisoned(y, dtype))
        match = "NaN|nan|inf|finite"
    _expect_failure_changes_nothing(entry, m, opt, X, yb, loss, ValueError, match)


@pytest.mark.parametrize("where", ["sample_weight", "validation_X", "validation_y"])
@FEW
@given(data=st.data())
def test_non_finite_fit_arguments_are_rejected_before_any_work(where, data):
    m, opt, X, y, loss, classify, d_in, d_out, dtype = data.draw(setup(classify=False))
    if where == "sample_weight":
        kw = {"sample_weight": data.draw(poisoned(np.ones(len(X)), dtype, float32_overflow=False))}
    elif where == "validation_X":
        kw = {"validation_data": (data.draw(poisoned(X, dtype)), y)}
    else:
        kw = {"validation_data": (X, data.draw(poisoned(y, dtype)))}
    _expect_failure_changes_nothing("fit", m, opt, X, y, loss, ValueError, "NaN|nan|inf|finite", **kw)


def _bad_dtype_arrays(shape):
    """(array, must_raise): arrays of dtypes that are not real numbers. Booleans,
    numeric strings and objects holding numbers may be converted explicitly
    instead (then the result must equal that of the float conversion)."""
    n = int(np.prod(shape))
    return st.sampled_from([
        (np.zeros(shape, complex), True),
        (np.ones(shape, complex) * 1j, True),
        (np.full(shape, "abc"), True),
        (np.full(shape, b"\x00\x00\x80\x3f"), True),  # bytes are never reinterpreted
        (np.full(shape, "1.5"), False),
        (np.ones(shape, bool), False),
        (np.array([None] * n, dtype=object).reshape(shape), True),
        (np.array([1.5] * n, dtype=object).reshape(shape), False),
        (np.array(["x"] * n, dtype=object).reshape(shape), True),
        (np.zeros(shape, "datetime64[s]"), True),
        (np.zeros(shape, "timedelta64[s]"), True),
        (np.zeros(shape, "V8"), True),
        (np.zeros(shape[:-1], [(f"f{i}", "f8") for i in range(shape[-1])]), True),
    ])


def _clone(m, opt):
    m2 = copy.deepcopy(m)
    m2._core.flat_grads()[...] = m._core.flat_grads()
    opt2 = fm.optim.Adam(m2.parameters(), lr=1e-2)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    _assert_same(_state(m2, opt2), _state(m, opt))
    return m2, opt2


def _same_result(r1, r2):
    if isinstance(r1, fm.History):
        r1, r2 = ({k: v for k, v in r.history.items() if k != "time"} for r in (r1, r2))
    _assert_same(r1, r2, "result")


def _raises_or_converts(entry, m, opt, X, y, loss, X_conv, y_conv):
    """Arrays that may be converted explicitly (booleans, numeric strings,
    objects holding numbers): either a TypeError/ValueError that changes
    nothing, or exactly the result of the explicit float conversion."""
    m2, opt2 = _clone(m, opt)
    before = _state(m, opt)
    snaps = (_snapshot(X), _snapshot(y))
    r = _outcome(lambda: _call(entry, m, opt, X, y, loss))
    if r[0] == "error":
        assert issubclass(r[1], (ValueError, TypeError)) and r[2], r
        _assert_same(_state(m, opt), before)
    else:
        _same_result(r[1], _call(entry, m2, opt2, X_conv, y_conv, loss))
        _assert_same(_state(m, opt), _state(m2, opt2))
    _assert_unchanged(X, snaps[0], "X")
    _assert_unchanged(y, snaps[1], "y")


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@PROPS
@given(data=st.data())
def test_malformed_X_raises_a_clear_error_and_changes_nothing(entry, data):
    m, opt, X, y, loss, classify, d_in, d_out, dtype = data.draw(setup())
    n = X.shape[0]
    defect = data.draw(st.sampled_from(["features", "ndim3", "dtype", "empty_features"]))
    if defect == "features":
        k = data.draw(st.integers(1, 4).filter(lambda k: k != d_in))
        Xb = data.draw(hostile_arrays((n, k)))
        match = rf"{k} features.*expect\w* {d_in}"
    elif defect == "empty_features":
        Xb = np.zeros((n, 0))
        match = rf"0 features.*expect\w* {d_in}"
    elif defect == "ndim3":
        Xb = data.draw(hostile_arrays(data.draw(st.sampled_from([(n, d_in, 1), (1, n, d_in), (n, 1, d_in)]))))
        match = "3-D|2-D|dimension|ndim"
    else:
        Xb, must_raise = data.draw(_bad_dtype_arrays((n, d_in)))
        if not must_raise:
            _raises_or_converts(entry, m, opt, Xb, y, loss, np.asarray(Xb).astype(np.float64), y)
            return
        match = "real numbers|dtype|boolean|complex|float|numeric"
    _expect_failure_changes_nothing(entry, m, opt, Xb, y, loss, (ValueError, TypeError), match)


@pytest.mark.parametrize("entry", ["fit", "evaluate", "train_step"])
@PROPS
@given(data=st.data())
def test_malformed_y_raises_a_clear_error_and_changes_nothing(entry, data):
    m, opt, X, y, loss, classify, d_in, d_out, dtype = data.draw(setup())
    n = X.shape[0]
    defects = ["length", "ndim3", "dtype"] + (["label_high", "label_negative", "label_fraction", "label_string"]
                                              if classify else ["columns"])
    defect = data.draw(st.sampled_from(defects))
    match = None
    if defect == "length":
        k = data.draw(st.integers(0, n + 3).filter(lambda k: k != n))
        yb = np.resize(np.asarray(y), (k,) + np.shape(y)[1:])
        match = "inconsistent numbers of samples" if entry != "train_step" else "shape"
    elif defect == "ndim3":
        yb = np.asarray(y, dtype=float).reshape(np.shape(y) + (1,) * (3 - np.ndim(y)))
        match = "shape|dimension|-D"
    elif defect == "columns":
        k = data.draw(st.integers(2, 6).filter(lambda k: k != d_out))
        yb = np.zeros((n, k))
        match = "shape"
    elif defect == "label_high":
        yb = np.array(y).copy()
        yb[data.draw(st.integers(0, n - 1))] = data.draw(st.integers(d_out, 2**62))
        match = "out of bounds|out of range"
    elif defect == "label_negative":
        yb = np.array(y).copy()
        yb[data.draw(st.integers(0, n - 1))] = data.draw(st.integers(-2**62, -1).filter(lambda v: v != -100))
        match = "out of bounds|out of range"
    elif defect == "label_fraction":
        yb = np.array(y, dtype=float)
        yb[data.draw(st.integers(0, n - 1))] += data.draw(st.sampled_from([0.5, 0.25, 1e-3]))
        match = "whole numbers|integer|Unknown label type"
    elif defect == "label_string":
        yb = np.array([f"class{v}" for v in y])
    else:
        yb, must_raise = data.draw(_bad_dtype_arrays(np.shape(y) if np.ndim(y) == 2 else (n, 1)))
        if np.ndim(y) == 1:
            yb = yb.reshape(n)
        if not must_raise:
            _raises_or_converts(entry, m, opt, X, yb, loss, X, np.asarray(yb).astype(np.float64))
            return
    _expect_failure_changes_nothing(entry, m, opt, X, yb, loss, (ValueError, TypeError), match)


@PROPS
@given(data=st.data())
def test_bad_fit_and_predict_arguments_change_nothing(data):
    m, opt, X, y, loss, classify, d_in, d_out, dtype = data.draw(setup())
    entry, kw, match = data.draw(st.sampled_from([
        ("fit", {"epochs": -1}, "epochs"), ("fit", {"epochs": 1.5}, "epochs"), ("fit", {"epochs": "2"}, "epochs"),
        ("fit", {"batch_size": 0}, "batch_size"), ("fit", {"batch_size": -8}, "batch_size"),
        ("fit", {"batch_size": 2.0}, "batch_size"), ("fit", {"batch_size": None}, "batch_size"),
        ("fit", {"n_threads": 0}, "n_threads"), ("fit", {"n_threads": -1}, "n_threads"),
        ("fit", {"validation_data": (X,)}, "pair|validation"), ("fit", {"validation_data": (X, y, y)}, "pair|validation"),
        ("fit", {"sample_weight": -np.ones(len(X))}, "sample_weight"),
        ("fit", {"sample_weight": np.zeros(len(X))}, "sample_weight"),
        ("fit", {"sample_weight": np.ones(len(X) + 1)}, "sample_weight"),
        ("fit", {"sample_weight": np.ones((len(X), 2))}, "sample_weight"),
        ("fit", {"sample_weight": np.full(len(X), "w")}, "sample_weight"),
        ("fit", {"scheduler": "cosine"}, "scheduler"),
        ("fit", {"callbacks": [3]}, "callbacks"),
        ("predict", {"batch_size": 0}, "batch_size"), ("predict", {"batch_size": -1}, "batch_size"),
        ("predict", {"batch_size": 1.5}, "batch_size"), ("predict", {"n_threads": 0}, "n_threads"),
        ("evaluate", {"batch_size": 0}, "batch_size"),
    ]))
    _expect_failure_changes_nothing(entry, m, opt, X, y, loss, (ValueError, TypeError), match, **kw)


@PROPS
@given(data=st.data())
def test_bad_hyperparameters_at_construction_or_fit_change_nothing(data):
    m, opt, X, y, loss, classify, d_in, d_out, dtype = data.draw(setup())
    before = _state(m, opt)
    make_bad, match = data.draw(st.sampled_from([
        (lambda: fm.optim.Adam(m.parameters(), lr=0.0 - 1e-9), "lr|learning rate"),
        (lambda: fm.optim.SGD(m.parameters(), lr=float("nan")), "lr|learning rate"),
        (lambda: fm.optim.Adam(m.parameters(), betas=(0.9, 1.0)), "beta"),
        (lambda: fm.optim.Adam(m.parameters(), betas=(1.0 + 1e-9, 0.9)), "beta"),
        (lambda: fm.optim.Adam(m.parameters(), eps=-1e-8), "eps"),
        (lambda: fm.optim.RMSprop(m.parameters(), alpha=float("inf")), "alpha"),
        (lambda: fm.Dropout(1.0), "dropout"),
        (lambda: fm.Dropout(-1e-9), "dropout"),
        (lambda: fm.Linear(0, 3), "in_features"),
        (lambda: fm.Linear(3, -2), "out_features"),
        (lambda: fm.Linear(3, 2, init="glorot"), "init"),
        (lambda: fm.HuberLoss(delta=-1.0), "delta"),
        (lambda: fm.CrossEntropyLoss(label_smoothing=-0.1), "label_smoothing"),
        (lambda: fm.MSELoss(reduction="elementwise_mean"), "reduction"),
        (lambda: fm.optim.lr_scheduler.StepLR(opt, step_size=0), "step_size"),
        (lambda: fm.optim.lr_scheduler.ExponentialLR(opt, gamma=-0.5), "gamma"),
        (lambda: fm.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=1.0), "factor"),
    ]))
    with pytest.raises((ValueError, TypeError), match=match):
        make_bad()
    _assert_same(_state(m, opt), before)
    # a hyperparameter edited to a bad value in param_groups fails the next fit and changes nothing
    key, bad = data.draw(st.sampled_from([("lr", -0.1), ("lr", float("nan")), ("betas", (0.9, 1.5)),
                                          ("eps", -1.0), ("weight_decay", float("inf"))]))
    good = opt.param_groups[0][key]
    opt.param_groups[0][key] = bad
    with pytest.raises((ValueError, TypeError), match="lr|learning rate|beta|eps|weight_decay"):
        m.fit(X, y, loss, opt, epochs=1, verbose=0)
    opt.param_groups[0][key] = good
    _assert_same(_state(m, opt), before)


# --------------------------------------------------------------------------- threads

@FEW
@given(data=st.data())
def test_concurrent_predict_forward_evaluate_equal_sequential_results(data):
    make, d_in, d_out, dtype = data.draw(models(d_out_min=2))
    m = make()
    m.eval()
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32)))
    Xs = [rng.uniform(-5, 5, (int(rng.integers(0, 300)), d_in)) for _ in range(6)]
    ys = [rng.integers(0, d_out, len(x)) for x in Xs]
    ref_p = [m.predict(x) for x in Xs]
    ref_f = [m(x) for x in Xs]
    ref_e = [m.evaluate(x, y, fm.CrossEntropyLoss()) if len(x) else None for x, y in zip(Xs, ys)]
    out: dict = {}
    barrier = threading.Barrier(len(Xs))

    def work(i):
        barrier.wait()
        for _ in range(3):
            out[i] = (m.predict(Xs[i], batch_size=int(7 + i)), m(Xs[i]),
                      m.evaluate(Xs[i], ys[i], fm.CrossEntropyLoss()) if len(Xs[i]) else None)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(len(Xs))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for i in range(len(Xs)):
        np.testing.assert_array_equal(out[i][0], ref_p[i])
        np.testing.assert_array_equal(out[i][1], ref_f[i])
        assert out[i][2] == ref_e[i]


# --------------------------------------------------------------------------- model files

def _saved_file(tmpdir, with_opt, dtype, seed):
    m = fm.Sequential(fm.Linear(3, 4), fm.Tanh(), fm.Dropout(0.1), fm.Linear(4, 2), seed=seed, dtype=dtype)
    opt = fm.optim.Adam(m.parameters(), lr=1e-2) if with_opt else None
    if opt is not None:
        m.train_step(np.ones((2, 3)), np.zeros((2, 2)), fm.MSELoss(), opt)
    path = os.path.join(tmpdir, f"m{next(_counter)}.npz")
    m.save(path, optimizer=opt)
    return path, m


def _check_loaded(path, with_opt):
    """A file loads to a valid model (finite, consistent), or raises ValueError."""
    try:
        r = fm.load(path, optimizer=with_opt)
    except ValueError as e:
        assert str(e), "empty error message"
        return None
    m = r[0] if with_opt else r
    assert isinstance(m, fm.Sequential)
    for _, p in m.named_parameters():
        assert np.isfinite(p.data).all()
    if m.in_features is not None:
        out = m.predict(np.ones((2, m.in_features)))
        assert np.isfinite(out).all()
    return m


@PROPS
@given(data=st.data())
def test_damaged_model_files_raise_value_error(data):
    with_opt = data.draw(st.booleans())
    path, m = _saved_file(_TMP, with_opt, data.draw(st.sampled_from(["float32", "float64"])), data.draw(st.integers(0, 99)))
    blob = bytearray(open(path, "rb").read())
    kind = data.draw(st.sampled_from(["truncate", "flip", "insert", "delete", "splice"]))
    if kind == "truncate":
        blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
    elif kind == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(blob) - 1))
            blob[i] ^= data.draw(st.integers(1, 255))
    elif kind == "insert":
        i = data.draw(st.integers(0, len(blob)))
        blob[i:i] = data.draw(st.binary(min_size=1, max_size=64))
    elif kind == "delete":
        i = data.draw(st.integers(0, len(blob) - 1))
        del blob[i:i + data.draw(st.integers(1, 64))]
    else:
        i = data.draw(st.integers(0, len(blob) - 1))
        chunk = data.draw(st.binary(min_size=1, max_size=64))
        blob[i:i + len(chunk)] = chunk
    with open(path, "wb") as f:
        f.write(bytes(blob))
    _check_loaded(path, with_opt)


def _json_values():
    return st.one_of(st.none(), st.booleans(), st.integers(-5, 2**16), st.sampled_from([2**62, 2**63, 2**64, -2**63]),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                     st.lists(st.integers(-2, 5), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


@PROPS
@given(data=st.data())
def test_corrupted_header_fields_and_arrays_raise_value_error(data):
    with_opt = data.draw(st.booleans())
    path, _ = _saved_file(_TMP, with_opt, data.draw(st.sampled_from(["float32", "float64"])), 0)
    with np.load(path) as z:
        files = {k: z[k] for k in z.files}
    header = json.loads(files.pop("__fastmlp__").tobytes())
    for _ in range(data.draw(st.integers(1, 3))):
        target = data.draw(st.sampled_from(["header", "array"]))
        if target == "header":
            paths = [p for p in _paths(header) if p]
            p = data.draw(st.sampled_from(paths))
            parent = header
            for k in p[:-1]:
                parent = parent[k]
            if data.draw(st.booleans()) and isinstance(parent, dict):
                del parent[p[-1]]
            else:
                parent[p[-1]] = data.draw(_json_values())
        else:
            k = data.draw(st.sampled_from(sorted(files)))
            a = files[k]
            change = data.draw(st.sampled_from(["nan", "shape", "dtype", "drop", "extra", "empty"]))
            if change == "nan" and a.size:
                a = a.astype(np.float64).copy()
                a.flat[data.draw(st.integers(0, a.size - 1))] = data.draw(st.sampled_from(BAD_VALUES))
                files[k] = a.astype(files[k].dtype)
            elif change == "shape":
                files[k] = np.resize(a, (a.size + data.draw(st.integers(1, 3)),))
            elif change == "dtype":
                files[k] = a.astype(data.draw(st.sampled_from(["int64", "float16", "complex128", "uint8", "bool"])))
            elif change == "drop":
                del files[k]
            elif change == "extra":
                files["param/9.weight"] = np.ones((2, 2))
            else:
                files[k] = np.zeros((0,), a.dtype)
    files["__fastmlp__"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    np.savez(path, **files)
    _check_loaded(path, with_opt)


@FEW
@given(data=st.data())
def test_save_load_round_trip_is_exact(data):
    make, d_in, d_out, dtype = data.draw(models())
    m = make()
    opt = fm.optim.Adam(m.parameters(), lr=1e-2)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32)))
    X = rng.uniform(-3, 3, (data.draw(st.integers(1, 20)), d_in))
    m.fit(X, rng.uniform(-1, 1, (len(X), d_out)), fm.MSELoss(), opt, epochs=1, batch_size=5, verbose=0)
    path = os.path.join(_TMP, f"rt{next(_counter)}.npz")
    m.save(path, optimizer=opt)
    m2, opt2 = fm.load(path, optimizer=True)
    s1, s2 = _state(m2, opt2), _state(m, opt)
    del s1["grads"], s2["grads"]  # gradients are not part of a model file
    _assert_same(s1, s2)
    np.testing.assert_array_equal(m2.predict(X), m.predict(X))


def test_file_like_garbage_never_reaches_pickle(tmp_path):
    """A file whose header is a pickled object array is refused without unpickling."""
    marker = tmp_path / "executed"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        arr = np.array([Evil()], dtype=object)
        inner = io.BytesIO()
        np.save(inner, arr, allow_pickle=True)
        z.writestr("__fastmlp__.npy", inner.getvalue())
    p = tmp_path / "evil.npz"
    p.write_bytes(buf.getvalue())
    with pytest.raises(ValueError):
        fm.load(p)
    assert not marker.exists()


# --------------------------------------------------------------------------- scikit-learn estimators

def _sklearn():
    return pytest.importorskip("sklearn")


@st.composite
def estimators(draw):
    classify = draw(st.booleans())
    cls = fm.MLPClassifier if classify else fm.MLPRegressor
    kw = dict(hidden_layer_sizes=tuple(draw(st.lists(st.integers(1, 6), min_size=1, max_size=2))),
              solver=draw(st.sampled_from(["adam", "sgd", "lbfgs"])), max_iter=draw(st.integers(1, 3)),
              batch_size=draw(st.sampled_from(["auto", 1, 4])), random_state=draw(st.integers(0, 2**31)),
              dtype=draw(st.sampled_from(["float32", "float64"])), shuffle=draw(st.booleans()))
    return classify, _Factory(cls, kw)


class _Factory:
    def __init__(self, cls, kw):
        self.cls, self.kw = cls, kw

    def __call__(self, **over):
        return self.cls(**{**self.kw, **over})

    def __repr__(self):
        return f"{self.cls.__name__}({', '.join(f'{k}={v!r}' for k, v in self.kw.items())})"


@st.composite
def estimator_data(draw, classify, n=None, d=None, scale=100.0):
    n = draw(st.integers(2, 25)) if n is None else n
    d = draw(st.integers(1, 5)) if d is None else d
    X = draw(hostile_arrays((n, d), low=-scale, high=scale))
    if classify:
        k = draw(st.integers(2, 3))
        labels = np.array([i % k for i in range(n)], float)  # every class present
        labels = labels[np.argsort(draw(st.permutations(range(n))))]
        y = _layout(_cast(labels, draw(st.sampled_from(["int8", "uint8", "int32", "int64", ">i4", "float64"]))),
                    draw(st.sampled_from(LAYOUTS)))
    else:
        y = draw(hostile_arrays((n,) if draw(st.booleans()) else (n, draw(st.integers(1, 2))), low=-scale, high=scale))
    return X, y


def _fitted_state(est) -> dict:
    s = {k: copy.deepcopy(getattr(est, k)) for k in ("coefs_", "intercepts_", "n_iter_", "loss_curve_", "t_",
                                                     "n_features_in_", "classes_", "loss_") if hasattr(est, k)}
    for k in ("coefs_", "intercepts_"):
        s[k] = [np.array(a, copy=True) for a in s[k]]
    return s


def _quiet():
    import warnings

    from sklearn.exceptions import ConvergenceWarning, DataConversionWarning

    w = warnings.catch_warnings()
    w.__enter__()
    warnings.simplefilter("ignore", ConvergenceWarning)
    warnings.simplefilter("ignore", DataConversionWarning)
    return w


@PROPS
@given(data=st.data())
def test_estimators_fit_and_predict_equal_the_contiguous_float_copy(data):
    _sklearn()
    classify, make = data.draw(estimators())
    X, y = data.draw(estimator_data(classify))
    n = np.shape(X)[0]
    sw = data.draw(st.none() | hostile_arrays((n,), sources=FLOAT_SOURCES + ["int32"], low=1.0, high=5.0))
    snaps = [_snapshot(v) for v in (X, y, sw)]
    w = _quiet()
    try:
        a, b = make(), make()
        ra = _outcome(lambda: a.fit(X, y, sample_weight=sw))
        rb = _outcome(lambda: b.fit(_float_copy(X, np.float64), np.array(np.asarray(y), copy=True),
                                    sample_weight=None if sw is None else _float_copy(sw, np.float64)))
    finally:
        w.__exit__(None, None, None)
    assert ra[0] == rb[0], (ra, rb)
    if ra[0] == "error":  # plain SGD on unscaled data can diverge (as scikit-learn's): the same error for both
        assert ra[1:] == rb[1:], (ra, rb)
        assert issubclass(ra[1], ValueError) and "non-finite" in ra[2], ra
        return
    _assert_same(_fitted_state(a), _fitted_state(b))
    for c in a.coefs_ + a.intercepts_:
        assert np.isfinite(c).all()
    Xp = data.draw(hostile_arrays((data.draw(st.integers(1, 9)), np.shape(X)[1]), low=-100.0, high=100.0))  # sklearn: >= 1 sample
    pa, pb = a.predict(Xp), b.predict(_float_copy(Xp, np.float64))
    np.testing.assert_array_equal(pa, pb)
    if not classify:
        assert np.isfinite(pa).all()
    else:
        np.testing.assert_array_equal(a.predict_proba(Xp), b.predict_proba(_float_copy(Xp, np.float64)))
    for v, s in zip((X, y, sw), snaps):
        _assert_unchanged(v, s)


@PROPS
@given(data=st.data())
def test_estimators_reject_invalid_input_and_a_failed_call_changes_nothing(data):
    _sklearn()
    from sklearn.exceptions import NotFittedError

    classify, make = data.draw(estimators())
    X, y = data.draw(estimator_data(classify, scale=3.0))  # tame data: the first fit must succeed
    X, y = np.asarray(X, float), np.asarray(y)
    n, d = X.shape
    w = _quiet()
    try:
        est = make().fit(X, y)
    except ValueError as e:  # the valid baseline itself may legitimately diverge (e.g. sgd, batch 1, |x| ~ 80)
        assume("non-finite" not in str(e))
        raise
    finally:
        w.__exit__(None, None, None)
    before = _fitted_state(est)
    p_before = est.predict(X)
    bad = data.draw(st.sampled_from([
        "fit_nan_X", "fit_inf_X", "fit_nan_y", "fit_nan_sw", "fit_1d_X", "fit_3d_X", "fit_0_samples", "fit_0_features",
        "fit_lengths", "fit_complex", "fit_object_none", "fit_strings", "fit_bad_param", "fit_continuous_labels",
        "predict_features", "predict_nan", "predict_1d", "predict_3d", "predict_complex", "unfitted"]))
    nan = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    Xb = X.copy()
    Xb[data.draw(st.integers(0, n - 1)), data.draw(st.integers(0, d - 1))] = nan
    match = None
    if bad == "fit_bad_param":
        param, value = data.draw(st.sampled_from([
            ("hidden_layer_sizes", (0,)), ("hidden_layer_sizes", (-3, 2)), ("learning_rate_init", 0.0),
            ("learning_rate_init", -1.0), ("batch_size", 0), ("max_iter", 0), ("alpha", -1.0), ("solver", "newton"),
            ("activation", "swish"), ("beta_1", 1.0), ("beta_2", -0.1), ("epsilon", 0.0), ("momentum", 1.5),
            ("validation_fraction", 1.0), ("n_iter_no_change", 0), ("tol", -1.0), ("dropout", 1.0),
            ("dtype", "float16"), ("learning_rate", "cyclic")]))
        call, match = (lambda: est.set_params(**{param: value}).fit(X, y)), None
    else:
        call = {
            "fit_nan_X": lambda: est.fit(Xb, y),
            "fit_inf_X": lambda: est.fit(np.where(np.isnan(Xb), np.inf, Xb), y),
            "fit_nan_y": lambda: est.fit(X, np.where(np.arange(n) == 0, nan, np.asarray(y, float).T).T),
            "fit_nan_sw": lambda: est.fit(X, y, sample_weight=np.where(np.arange(n) == 0, nan, 1.0)),
            "fit_1d_X": lambda: est.fit(X[:, 0], y),
            "fit_3d_X": lambda: est.fit(X[:, :, None], y),
            "fit_0_samples": lambda: est.fit(X[:0], y[:0]),
            "fit_0_features": lambda: est.fit(X[:, :0], y),
            "fit_lengths": lambda: est.fit(X, y[:-1]),
            "fit_complex": lambda: est.fit(X + 1j, y),
            "fit_object_none": lambda: est.fit(np.array([[None] * d] * n, dtype=object), y),
            "fit_strings": lambda: est.fit(np.full((n, d), "abc"), y),
            "fit_continuous_labels": lambda: est.fit(X, np.linspace(0.1, 0.9, n)),
            "predict_features": lambda: est.predict(np.ones((2, d + 1))),
            "predict_nan": lambda: est.predict(Xb),
            "predict_1d": lambda: est.predict(X[0]),
            "predict_3d": lambda: est.predict(X[:, :, None]),
            "predict_complex": lambda: est.predict(X + 1j),
            "unfitted": lambda: make().predict(X),
        }[bad]
        match = {"fit_nan_X": "NaN|infinity", "fit_inf_X": "NaN|infinity", "fit_nan_y": "NaN|infinity|Unknown label",
                 "fit_nan_sw": "NaN|infinity|finite", "fit_1d_X": "Reshape your data", "fit_3d_X": "dim",
                 "fit_0_samples": "0 sample", "fit_0_features": "0 feature",
                 "fit_lengths": "inconsistent numbers of samples", "fit_complex": "[Cc]omplex",
                 "fit_continuous_labels": "Unknown label type",
                 "predict_features": rf"X has {d + 1} features, but \w+ is expecting {d} features",
                 "predict_nan": "NaN|infinity", "predict_1d": "Reshape your data", "predict_complex": "[Cc]omplex",
                 "unfitted": "not fitted"}.get(bad)
        if bad == "fit_continuous_labels" and not classify:
            return  # a regressor takes continuous targets
    with pytest.raises((ValueError, TypeError, NotFittedError), match=match):
        call()
    _assert_same(_fitted_state(est), before)
    np.testing.assert_array_equal(est.predict(X), p_before)
