"""Bad arguments raise ValueError/TypeError with a message naming the
problem, and a failed call changes nothing. The most hostile calls (giant
sizes) run in a child interpreter so that a crash fails one test instead of
killing pytest."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastmlp as fm

NAN, INF = float("nan"), float("inf")


def _x():
    return np.zeros(3)


# --------------------------------------------------------------------------- constructors

CONSTRUCTOR_ERRORS = [
    # optimizers: learning rate
    (lambda: fm.optim.SGD([_x()], lr=-0.1), ValueError, "lr|learning rate"),
    (lambda: fm.optim.SGD([_x()], lr=NAN), ValueError, "lr|learning rate"),
    (lambda: fm.optim.Adam([_x()], lr=INF), ValueError, "lr|learning rate"),
    (lambda: fm.optim.Adam([_x()], lr=-1e-3), ValueError, "lr|learning rate"),
    (lambda: fm.optim.RMSprop([_x()], lr=NAN), ValueError, "lr|learning rate"),
    (lambda: fm.optim.Adagrad([_x()], lr=-1.0), ValueError, "lr|learning rate"),
    (lambda: fm.optim.Adadelta([_x()], lr=-1.0), ValueError, "lr|learning rate"),
    (lambda: fm.optim.AdamW([_x()], lr=NAN), ValueError, "lr|learning rate"),
    (lambda: fm.optim.Adam([_x()], lr="0.1"), TypeError, "lr"),
    (lambda: fm.optim.Adam([_x()], lr=None), TypeError, "lr"),
    # betas
    (lambda: fm.optim.Adam([_x()], betas=(1.0, 0.999)), ValueError, "beta"),
    (lambda: fm.optim.Adam([_x()], betas=(0.9, 1.0)), ValueError, "beta"),
    (lambda: fm.optim.Adam([_x()], betas=(-0.1, 0.999)), ValueError, "beta"),
    (lambda: fm.optim.AdamW([_x()], betas=(0.9, -1e-9)), ValueError, "beta"),
    (lambda: fm.optim.AdamW([_x()], betas=(NAN, 0.9)), ValueError, "beta"),
    (lambda: fm.optim.Adam([_x()], betas=(0.9, 0.9, 0.9)), ValueError, "betas"),
    (lambda: fm.optim.Adam([_x()], betas=0.9), TypeError, "betas"),
    # eps, weight decay, momentum, others
    (lambda: fm.optim.Adam([_x()], eps=-1e-8), ValueError, "eps"),
    (lambda: fm.optim.RMSprop([_x()], eps=-1.0), ValueError, "eps"),
    (lambda: fm.optim.Adagrad([_x()], eps=NAN), ValueError, "eps"),
    (lambda: fm.optim.Adadelta([_x()], eps=-1e-6), ValueError, "eps"),
    (lambda: fm.optim.SGD([_x()], weight_decay=-0.1), ValueError, "weight_decay"),
    (lambda: fm.optim.Adam([_x()], weight_decay=NAN), ValueError, "weight_decay"),
    (lambda: fm.optim.SGD([_x()], momentum=-0.5), ValueError, "momentum"),
    (lambda: fm.optim.RMSprop([_x()], momentum=-0.5), ValueError, "momentum"),
    (lambda: fm.optim.SGD([_x()], momentum=0.0, nesterov=True), ValueError, "[Nn]esterov"),
    (lambda: fm.optim.SGD([_x()], momentum=0.9, dampening=0.1, nesterov=True), ValueError, "[Nn]esterov"),
    (lambda: fm.optim.SGD([_x()], momentum=0.9, nesterov="yes"), TypeError, "nesterov"),
    (lambda: fm.optim.Adam([_x()], amsgrad=1), TypeError, "amsgrad"),
    (lambda: fm.optim.RMSprop([_x()], alpha=-0.1), ValueError, "alpha"),
    (lambda: fm.optim.RMSprop([_x()], alpha=1.5), ValueError, "alpha"),
    (lambda: fm.optim.Adadelta([_x()], rho=1.5), ValueError, "rho"),
    (lambda: fm.optim.Adadelta([_x()], rho=-0.5), ValueError, "rho"),
    (lambda: fm.optim.Adagrad([_x()], lr_decay=-1.0), ValueError, "lr_decay"),
    (lambda: fm.optim.Adagrad([_x()], initial_accumulator_value=-1.0), ValueError, "initial_accumulator_value"),
    (lambda: fm.optim.SGD([1.0, 2.0]), TypeError, "Parameters or NumPy arrays"),
    (lambda: fm.optim.SGD([np.zeros(3, dtype=np.int32)]), TypeError, "float32 or float64"),
    (lambda: fm.optim.SGD([np.zeros(3, dtype=complex)]), TypeError, "float32 or float64"),
    (lambda: fm.optim.SGD([np.zeros(3, dtype=bool)]), TypeError, "float32 or float64"),
    (lambda: fm.optim.SGD([]), ValueError, "empty"),
    (lambda: fm.optim.SGD([{"lr": 0.1}]), TypeError, "params"),
    # dropout
    (lambda: fm.Dropout(1.0), ValueError, "dropout probability"),
    (lambda: fm.Dropout(1.5), ValueError, "dropout probability"),
    (lambda: fm.Dropout(-0.1), ValueError, "dropout probability"),
    (lambda: fm.Dropout(NAN), ValueError, "dropout probability"),
    (lambda: fm.Dropout("0.5"), TypeError, "dropout probability"),
    # Linear
    (lambda: fm.Linear(3, 4, init="he"), ValueError, "unknown init 'he'"),
    (lambda: fm.Linear(3, 4, init=None), ValueError, "unknown init"),
    (lambda: fm.Linear(0, 4), ValueError, "in_features"),
    (lambda: fm.Linear(-3, 4), ValueError, "in_features"),
    (lambda: fm.Linear(3, 0), ValueError, "out_features"),
    (lambda: fm.Linear(3, -1), ValueError, "out_features"),
    (lambda: fm.Linear(3.0, 4), TypeError, "in_features"),
    (lambda: fm.Linear(3, "4"), TypeError, "out_features"),
    (lambda: fm.Linear(True, 4), TypeError, "in_features"),
    # Sequential
    (lambda: fm.Sequential(fm.Linear(3, 4), fm.Linear(5, 2)), ValueError, "5 input features.*4"),
    (lambda: fm.Sequential(fm.Linear(3, 4), fm.ReLU(), fm.Dropout(0.1), fm.Linear(3, 2)), ValueError, "layer 3"),
    (lambda: fm.Sequential(fm.Linear(3, 4), 5), TypeError, "layer 1"),
    (lambda: fm.Sequential(fm.Linear(3, 4), dtype="int32"), ValueError, "dtype"),
    (lambda: fm.Sequential(fm.Linear(3, 4), dtype="float16"), ValueError, "dtype"),
    (lambda: fm.Sequential(fm.Linear(3, 4), dtype="complex128"), ValueError, "dtype"),
    (lambda: fm.Sequential(fm.Linear(3, 4), seed=-1), ValueError, "seed"),
    (lambda: fm.Sequential(fm.Linear(3, 4), seed=1.5), TypeError, "seed"),
    # losses
    (lambda: fm.MSELoss(reduction="avg"), ValueError, "reduction"),
    (lambda: fm.MSELoss(reduction="None"), ValueError, "reduction"),
    (lambda: fm.L1Loss(reduction="SUM"), ValueError, "reduction"),
    (lambda: fm.HuberLoss(reduction="median"), ValueError, "reduction"),
    (lambda: fm.CrossEntropyLoss(reduction="batchmean"), ValueError, "reduction"),
    (lambda: fm.BCEWithLogitsLoss(reduction=None), ValueError, "reduction"),
    (lambda: fm.HuberLoss(delta=0.0), ValueError, "delta"),
    (lambda: fm.CrossEntropyLoss(label_smoothing=1.5), ValueError, "label_smoothing"),
]


@pytest.mark.parametrize("make,exc,match", CONSTRUCTOR_ERRORS, ids=[str(i) for i in range(len(CONSTRUCTOR_ERRORS))])
def test_bad_constructor_arguments(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_valid_edge_values_are_accepted():
    """The boundaries that torch accepts are accepted (the error tests above are not vacuous)."""
    x = _x()
    fm.optim.SGD([x], lr=0.0)
    fm.optim.Adam([x], betas=(0.0, 0.0), eps=0.0)
    fm.optim.RMSprop([x], alpha=0.0)
    fm.optim.RMSprop([x], alpha=1.0)
    fm.optim.Adadelta([x], rho=1.0)
    fm.Dropout(0.0)
    fm.Dropout(0.999)
    fm.Linear(1, 1)
    fm.Sequential(fm.Linear(3, 4), fm.Linear(4, 2))


# --------------------------------------------------------------------------- calls on a model

def _model():
    return fm.Sequential(fm.Linear(3, 4), fm.ReLU(), fm.Linear(4, 2), seed=0, dtype="float64")


def _snap(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


def _unchanged(model, before):
    after = model.state_dict()
    assert list(after) == list(before)
    for k in before:
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)


FORWARD_ERRORS = [
    (np.ones((2, 5)), ValueError, "5 features.*expects 3"),
    (np.ones(5), ValueError, "5 features.*expects 3"),
    (np.ones((2, 2)), ValueError, "2 features.*expects 3"),
    (np.ones((2, 3, 1)), ValueError, "1-D.*2-D|3-D"),
    (np.array([["a", "b", "c"]]), TypeError, "real numbers"),
    ([["1", "2", "3"]], TypeError, "real numbers"),
    (np.ones((2, 3), dtype=complex), TypeError, "real numbers"),
    (np.ones((2, 3), dtype=bool), TypeError, "boolean"),
    (np.array([[1, None, 2]], dtype=object), TypeError, "real numbers"),
]


@pytest.mark.parametrize("x,exc,match", FORWARD_ERRORS, ids=[str(i) for i in range(len(FORWARD_ERRORS))])
def test_forward_bad_input(x, exc, match):
    m = _model()
    before = _snap(m)
    good = np.random.default_rng(1).normal(size=(2, 3))
    y0 = m(good)
    with pytest.raises(exc, match=match):
        m(x)
    _unchanged(m, before)
    np.testing.assert_array_equal(m(good), y0)


def test_backward_before_forward():
    m = _model()
    before = _snap(m)
    with pytest.raises(ValueError, match="forward"):
        m.backward(np.ones((2, 2)))
    _unchanged(m, before)
    for p in m.parameters():
        np.testing.assert_array_equal(p.grad, 0)


@pytest.mark.parametrize("g,exc,match", [
    (np.ones((2, 3)), ValueError, r"shape \(2, 3\).*\(2, 2\)"),
    (np.ones((3, 2)), ValueError, r"shape \(3, 2\).*\(2, 2\)"),
    (np.ones((1, 2)), ValueError, "shape"),
    (np.ones(4), ValueError, "shape|2-D"),
    (np.array([["a", "b"]] * 2), TypeError, "real numbers"),
    (np.ones((2, 2), dtype=complex), TypeError, "real numbers"),
    (np.ones((2, 2), dtype=bool), TypeError, "boolean"),
])
def test_backward_bad_gradient(g, exc, match):
    m = _model()
    x = np.random.default_rng(2).normal(size=(2, 3))
    m(x)
    before = _snap(m)
    with pytest.raises(exc, match=match):
        m.backward(g)
    _unchanged(m, before)
    for p in m.parameters():
        np.testing.assert_array_equal(p.grad, 0)
    # the model still back-propagates the last forward correctly afterwards
    dx = m.backward(np.ones((2, 2)))
    assert dx.shape == (2, 3)


def test_failed_forward_does_not_disturb_the_previous_one():
    """A forward that fails validation must not change what backward refers to."""
    m = _model()
    x = np.random.default_rng(3).normal(size=(1, 3))
    m(x)
    with pytest.raises(ValueError):
        m(np.ones(5))             # a 1-D input of the wrong width
    dx = m.backward(np.ones((1, 2)))
    assert dx.shape == (1, 3)     # still the 2-D batch of the successful forward

    m2 = _model()
    m2(np.ones(3))                # one 1-D sample
    with pytest.raises(ValueError):
        m2(np.ones((2, 5)))
    dx = m2.backward(np.ones(2))  # dL/dout of that 1-D sample
    assert dx.shape == (3,)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_loss_bad_targets(reduction):
    loss = fm.MSELoss(reduction=reduction)
    with pytest.raises(ValueError, match="shape"):
        loss(np.ones((2, 2)), np.ones((3, 2)))
    with pytest.raises(TypeError, match="target"):
        loss(np.ones((2, 2)), np.array([["a", "b"]] * 2))
    with pytest.raises(TypeError, match="input"):
        loss(np.array([["a", "b"]] * 2), np.ones((2, 2)))
    ce = fm.CrossEntropyLoss(reduction=reduction)
    with pytest.raises(ValueError, match="out of bounds"):
        ce(np.ones((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match="whole numbers"):
        ce(np.ones((2, 3)), np.array([0.5, 1.0]))


# --------------------------------------------------------------------------- optimizer and train_step failures change nothing

@pytest.mark.parametrize("key,value,exc", [
    ("lr", NAN, ValueError), ("lr", -1.0, ValueError), ("eps", -1.0, ValueError),
    ("betas", (1.0, 0.9), ValueError), ("weight_decay", INF, ValueError),
    ("lr", "0.1", TypeError), ("lr", None, TypeError), ("betas", 0.9, TypeError), ("amsgrad", "yes", TypeError),
])
def test_bad_param_group_edit_fails_step_and_changes_nothing(key, value, exc):
    x = np.ones(3)
    opt = fm.optim.Adam([x], lr=0.1)
    opt.step([np.ones(3)])
    after_one = x.copy()
    opt.param_groups[0][key] = value
    with pytest.raises(exc, match={"lr": "lr|learning rate", "betas": "beta"}.get(key, key)):
        opt.step([np.ones(3)])
    np.testing.assert_array_equal(x, after_one)
    m = _model()
    before = _snap(m)
    mopt = fm.optim.Adam(m.parameters(), lr=0.1)
    mopt.param_groups[0][key] = value
    with pytest.raises(exc, match={"lr": "lr|learning rate", "betas": "beta"}.get(key, key)):
        m.train_step(np.ones((2, 3)), np.ones((2, 2)), fm.MSELoss(), mopt)
    _unchanged(m, before)


@pytest.mark.parametrize("case", ["target_shape", "target_str", "x_width", "ce_out_of_bounds", "x_complex"])
def test_train_step_bad_data_changes_nothing(case):
    m = _model()
    opt = fm.optim.Adam(m.parameters(), lr=0.1)
    x, y, loss = np.ones((2, 3)), np.ones((2, 2)), fm.MSELoss()
    if case == "target_shape":
        y, exc = np.ones((3, 2)), ValueError
    elif case == "target_str":
        y, exc = np.array([["a", "b"]] * 2), TypeError
    elif case == "x_width":
        x, exc = np.ones((2, 4)), ValueError
    elif case == "ce_out_of_bounds":
        y, loss, exc = np.array([0, 5]), fm.CrossEntropyLoss(), ValueError
    else:
        x, exc = np.ones((2, 3), dtype=complex), TypeError
    before = _snap(m)
    with pytest.raises(exc):
        m.train_step(x, y, loss, opt)
    _unchanged(m, before)
    assert opt.state_dict()["state"][0]["step"] == 0
    # and a good step afterwards behaves as the first step
    m.train_step(np.ones((2, 3)), np.ones((2, 2)), fm.MSELoss(), opt)
    assert opt.state_dict()["state"][0]["step"] == 1


def test_train_step_bad_loss_or_optimizer_objects():
    m = _model()
    before = _snap(m)
    x, y = np.ones((2, 3)), np.ones((2, 2))
    with pytest.raises(TypeError, match="loss"):
        m.train_step(x, y, lambda a, b: 0.0, fm.optim.SGD(m.parameters(), lr=0.1))
    with pytest.raises(TypeError, match="optimizer"):
        m.train_step(x, y, fm.MSELoss(), None)
    _unchanged(m, before)


def test_train_step_with_another_models_optimizer_raises():
    m, other = _model(), fm.Sequential(fm.Linear(3, 4), fm.ReLU(), fm.Linear(4, 2), seed=1, dtype="float64")
    opt = fm.optim.SGD(other.parameters(), lr=0.1)
    before, before_other = _snap(m), _snap(other)
    with pytest.raises(ValueError, match="optimizer"):
        m.train_step(np.ones((2, 3)), np.ones((2, 2)), fm.MSELoss(), opt)
    _unchanged(m, before)
    _unchanged(other, before_other)


def test_bad_step_gradients_change_nothing():
    x, y = np.ones(3), np.ones(2)
    opt = fm.optim.SGD([x, y], lr=0.1, momentum=0.9)
    for grads, exc in [([np.ones(3)], ValueError), ([np.ones(3), np.ones(3)], ValueError),
                       ([np.ones(3), np.array(["a", "b"])], TypeError),
                       ([np.ones(3), np.ones(2, dtype=complex)], TypeError)]:
        with pytest.raises(exc, match="grad"):
            opt.step(grads)
        np.testing.assert_array_equal(x, 1.0)
        np.testing.assert_array_equal(y, 1.0)
        assert opt.state_dict()["state"][0]["step"] == 0


# --------------------------------------------------------------------------- hostile calls in a child interpreter

def _run_child(code, timeout=120):
    src = textwrap.dedent("""
        import sys
        import numpy as np
        import fastmlp as fm
        try:
        {body}
        except (MemoryError, ValueError) as e:
            print("RAISED", type(e).__name__, str(e)[:200])
            sys.exit(0)
        except BaseException as e:
            print("WRONG", type(e).__name__, str(e)[:200])
            sys.exit(3)
        print("NO ERROR")
        sys.exit(4)
    """).format(body=textwrap.indent(textwrap.dedent(code), "    "))
    r = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stdout + r.stderr


HOSTILE = [
    "fm.Sequential(fm.Linear(2**40, 2**40))",
    "fm.Sequential(fm.Linear(2**40, 2**40), dtype='float64')",
    "fm.Sequential(fm.Linear(2**31, 2**31), dtype='float64')",
    "fm.Sequential(fm.Linear(2**62, 2**62))",
    "fm.Sequential(fm.Linear(2**63 - 1, 2))",
    "fm.Sequential(fm.Linear(2, 2**63 - 1))",
    "fm.Sequential(fm.Linear(2**64, 2))",
    "fm.Sequential(fm.Linear(2**100, 3))",
    "fm.Sequential(fm.Linear(2**20, 2**20))",
    "fm.Sequential(fm.Linear(3, 2**33))",
    "fm.Sequential(fm.Linear(2**20, 2**20), fm.ReLU(), fm.Linear(2**20, 2**20))",
    "m = fm.Sequential(fm.Linear(3, 2)); m(np.broadcast_to(np.ones(3), (2**40, 3)))",
    "m = fm.Sequential(fm.Linear(3, 2**20)); m(np.ones((2**20, 3), dtype=np.float32))",
    "m = fm.Sequential(fm.Tanh()); m(np.broadcast_to(np.ones(1), (2**62, 1)))",
    "fm.optim.Adam([np.broadcast_to(np.ones(1), (2**40,))])",
    """
    import json, os, tempfile
    d = tempfile.mkdtemp()
    p = os.path.join(d, 'big.npz')
    header = {"format": "fastmlp", "version": 1, "dtype": "float32", "seed": 0, "training": False,
              "dropout_calls": 0, "layers": [{"kind": "linear", "in_features": 2**40, "out_features": 2**40,
              "bias": True, "init": {"name": "default"}}], "optimizer": None, "extra": {}}
    np.savez(p, __fastmlp__=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8))
    fm.load(p)
    """,
]


@pytest.mark.parametrize("code", HOSTILE, ids=[str(i) for i in range(len(HOSTILE))])
def test_hostile_sizes_raise_not_crash(code):
    rc, out = _run_child(code)
    assert rc == 0 and "RAISED" in out, f"exit code {rc}, output:\n{out}"


# --------------------------------------------------------------------------- predict: a non-finite X row

def _predict_nets():
    """(name, model, precision): a Linear first (float32, float64; narrow, wide and wider than the batch, so
    that the packed and the inner-product products read X, split by rows or by columns), and models whose first layer is not a
    Linear or whose products run in bfloat16 (X checked in a pass of its own)."""
    nets = []
    for dtype in ("float32", "float64"):
        for width in (10, 96, 1024):
            nets.append((f"linear{width}-{dtype}", fm.Sequential(fm.Linear(100, width), fm.ReLU(), fm.Linear(width, 3),
                                                                  seed=0, dtype=dtype), "float32"))
        nets.append((f"layernorm-{dtype}", fm.Sequential(fm.LayerNorm(100), fm.Linear(100, 3), seed=0, dtype=dtype),
                     "float32"))
    nets.append(("bfloat16", fm.Sequential(fm.Linear(100, 96), fm.Tanh(), fm.Linear(96, 3), seed=0, dtype="float32"),
                 "bfloat16"))
    return nets


@pytest.mark.parametrize("name,model,precision", _predict_nets(), ids=[n[0] for n in _predict_nets()])
@pytest.mark.parametrize("rows", [1, 47, 48, 3001])
def test_predict_names_the_first_non_finite_row_and_then_predicts(name, model, precision, rows):
    """predict checks every element of X (as its first product reads it, or in a pass of its own): a NaN or
    an infinity anywhere -- first or last element, a row in the middle, on either side of a chunk or a
    thread's share -- is named by its first row, on any thread count and chunk size, and the next good call
    gives what a call before it gave."""
    model.eval()
    dtype = model.dtype
    rng = np.random.default_rng(rows)
    X = rng.standard_normal((rows, 100)).astype(dtype)
    want = model.predict(X, precision=precision)
    n = X.size  # flat positions: the ends, and both sides of a split of X in 2, 3, 4 or 8
    flat = {0, n - 1, n // 2 + 37} | {n * k // p + d for p in (2, 3, 4, 8) for k in range(1, p) for d in (-1, 0)}
    for r, c in sorted({divmod(f, 100) for f in flat if 0 <= f < n}):
        for bad in (np.nan, np.inf, -np.inf):
            Xb = X.copy()
            Xb[r, c] = bad
            if r + 1 < rows:
                Xb[r + 1, 99 - c] = np.nan  # a later one too: the first is named
            for n_threads in (1, 2):
                for batch_size in (None, 64, 1000):
                    with pytest.raises(ValueError, match=rf"X contains NaN or infinity \(row {r}\)"):
                        model.predict(Xb, batch_size=batch_size, n_threads=n_threads, precision=precision)
    np.testing.assert_array_equal(model.predict(X, n_threads=2, precision=precision), want)
    np.testing.assert_array_equal(model.predict(X, n_threads=1, batch_size=7, precision=precision), want)
