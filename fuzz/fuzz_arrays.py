"""Fuzz target: the array entry points (forward, backward, predict, fit,
evaluate, train_step, the losses, optimizer.step(grads), load_state_dict,
the initializers, and the scikit-learn estimators when scikit-learn is
installed) with arrays of any dtype, shape, layout and bit pattern.

Contract (issue 5):
* only ValueError/TypeError/MemoryError (FloatingPointError for a diverging
  fit or train_step, which then leaves weights and optimizer state as they
  were; KeyError for load_state_dict's key check) escape;
* a failed call changes nothing: parameters, gradients, optimizer state;
* the caller's arrays are never written to;
* NaN/inf in X, y or sample_weight is refused (ValueError), never computed on;
* a successful forward/predict equals the call on the contiguous float copy.
"""
from __future__ import annotations

import os
import sys
import warnings

import atheris
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import Findings, all_finite_numbers, instrument, draw_array, draw_shape, limit_memory, snapshot  # noqa: E402

import fastmlp as fm  # noqa: E402
import fastmlp.serialization  # noqa: E402,F401

instrument()

warnings.simplefilter("ignore")
findings = Findings("arrays")
try:
    import sklearn  # noqa: F401

    HAVE_SKLEARN = hasattr(fm, "MLPClassifier")
    if HAVE_SKLEARN:
        instrument(("fastmlp.estimators",))
except ImportError:
    HAVE_SKLEARN = False
LIMIT_GB = 4.0

ARCHS = [
    lambda: [fm.Linear(3, 4), fm.ReLU(), fm.Linear(4, 2)],
    lambda: [fm.Linear(2, 5), fm.Tanh(), fm.Dropout(0.5), fm.Linear(5, 3), fm.Softmax()],
    lambda: [fm.Linear(1, 1)],
    lambda: [fm.Sigmoid()],
    lambda: [fm.Linear(4, 3, bias=False), fm.GELU(), fm.Linear(3, 1)],
]
LOSSES = [lambda: fm.MSELoss(), lambda: fm.L1Loss(reduction="sum"), lambda: fm.HuberLoss(delta=0.5),
          lambda: fm.CrossEntropyLoss(), lambda: fm.CrossEntropyLoss(label_smoothing=0.1, weight=[1.0, 2.0]),
          lambda: fm.BCEWithLogitsLoss(), lambda: fm.PoissonNLLLoss()]
OPTS = ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta"]
ALLOWED = (ValueError, TypeError, MemoryError)


def state(m, opt=None):
    s = [m._core.flat_params().tobytes(), m._core.flat_grads().tobytes(), int(m._core.dropout_calls),
         int(m._core.epochs_done), m.training]
    if opt is not None:
        s += [opt._core.state(i).tobytes() for i in range(opt._core.n_groups)]
        s += [opt._core.get_step(i) for i in range(opt._core.n_groups)]
    return s


def converted_finite(x, dtype) -> bool:
    try:
        a = np.asarray(x)
        if a.dtype.kind not in "fiu":
            return True
        return bool(np.isfinite(a.astype(dtype)).all())
    except Exception:  # noqa: BLE001
        return True


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    arch = fdp.ConsumeIntInRange(0, len(ARCHS) - 1)
    dtype = ["float32", "float64"][fdp.ConsumeIntInRange(0, 1)]
    seed = fdp.ConsumeIntInRange(0, 1000)

    def make():
        return fm.Sequential(*ARCHS[arch](), seed=seed, dtype=dtype)

    m = make()
    if fdp.ConsumeBool():
        m.eval()
    d_in = m.in_features or fdp.ConsumeIntInRange(1, 4)
    d_out = m._core.out_features(d_in)
    n = fdp.ConsumeIntInRange(0, 9)
    entry = fdp.ConsumeIntInRange(0, 10 if HAVE_SKLEARN else 9)
    opt = getattr(fm.optim, OPTS[fdp.ConsumeIntInRange(0, len(OPTS) - 1)])(m.parameters(), lr=1e-2) \
        if m.num_parameters() else None
    args: list = []
    X = draw_array(fdp, draw_shape(fdp, (n, d_in)))
    args.append(X)
    classify = d_out >= 2 and fdp.ConsumeBool()
    loss = fm.CrossEntropyLoss() if classify else fm.MSELoss()
    y = draw_array(fdp, draw_shape(fdp, (n,) if classify else (n, d_out)))
    if classify and fdp.ConsumeBool():
        y = np.array([fdp.ConsumeIntInRange(-2, d_out + 1) for _ in range(n)], dtype=np.int64)
    before = state(m, opt)
    snaps = None
    where = ""
    try:
        if entry == 0:
            where = "forward"
            snaps = snapshot(args)
            out = m(X)
        elif entry == 1:
            where = "predict"
            bs = [None, 1, 3, 4096, 0, -1, 2**62][fdp.ConsumeIntInRange(0, 6)]
            snaps = snapshot(args)
            out = m.predict(X, batch_size=bs)
        elif entry in (2, 3, 4):
            where = ["fit", "evaluate", "train_step"][entry - 2]
            args.append(y)
            sw = draw_array(fdp, draw_shape(fdp, (n,))) if entry == 2 and fdp.ConsumeBool() else None
            args.append(sw)
            snaps = snapshot(args)
            if opt is None:
                return
            if entry == 2:
                out = m.fit(X, y, loss, opt, epochs=fdp.ConsumeIntInRange(0, 2),
                            batch_size=fdp.ConsumeIntInRange(1, 5), shuffle=fdp.ConsumeBool(), verbose=0,
                            sample_weight=sw)
            elif entry == 3:
                out = m.evaluate(X, y, loss)
            else:
                out = m.train_step(X, y, loss, opt)
        elif entry == 5:
            where = "backward"
            m(np.zeros((n, d_in)))
            before = state(m, opt)
            g = draw_array(fdp, draw_shape(fdp, (n, d_out)))
            args = [g]
            snaps = snapshot(args)
            out = m.backward(g)
        elif entry == 6:
            where = "loss"
            lf = LOSSES[fdp.ConsumeIntInRange(0, len(LOSSES) - 1)]()
            C = fdp.ConsumeIntInRange(1, 3)
            inp = draw_array(fdp, draw_shape(fdp, (n, C)))
            args = [inp, y if fdp.ConsumeBool() else draw_array(fdp, draw_shape(fdp, (n, C)))]
            snaps = snapshot(args)
            lf(*args)
            lf.backward()
            out = None
        elif entry == 7:
            where = "optimizer.step"
            p = [np.zeros(3, dtype), np.ones((2, 2), dtype)]
            o = getattr(fm.optim, OPTS[fdp.ConsumeIntInRange(0, len(OPTS) - 1)])(p, lr=0.1)
            p0 = [q.copy() for q in p]
            args = [draw_array(fdp, draw_shape(fdp, (3,))), draw_array(fdp, draw_shape(fdp, (2, 2)))]
            snaps = snapshot(args)
            try:
                o.step(args)
            except ALLOWED:
                if not all(np.array_equal(a, b) for a, b in zip(p, p0)):
                    findings.record("failed-step-changed-parameters", where, data)
                raise
            out = None
        elif entry == 8:
            where = "load_state_dict"
            sd = {k: draw_array(fdp, draw_shape(fdp, v.shape)) for k, v in m.state_dict().items()}
            args = list(sd.values())
            snaps = snapshot(args)
            m.load_state_dict(sd)
            out = None
        elif entry == 10:
            where = "estimator"
            est = (fm.MLPClassifier if classify else fm.MLPRegressor)(
                hidden_layer_sizes=(3,), max_iter=2, random_state=seed, dtype=dtype,
                solver=["adam", "sgd", "lbfgs"][fdp.ConsumeIntInRange(0, 2)])
            args.append(y)
            snaps = snapshot(args)
            est.fit(X, y)
            out = est.predict(X)
            if not (all_finite_numbers(X) and converted_finite(X, dtype)):
                findings.record("estimator-accepted-non-finite-X", "", data)
        else:
            where = "init"
            t = draw_array(fdp, draw_shape(fdp, (3, 4)))
            fn = [fm.init.uniform_, fm.init.normal_, fm.init.xavier_uniform_, fm.init.kaiming_normal_,
                  fm.init.zeros_][fdp.ConsumeIntInRange(0, 4)]
            writable_float = isinstance(t, np.ndarray) and t.dtype in (np.float32, np.float64) and t.flags.writeable
            t0 = snapshot(t)
            try:
                fn(t)
            except ALLOWED:
                if snapshot(t) != t0:
                    findings.record("failed-init-wrote", where, data)
                return
            if not writable_float:
                findings.record("init-accepted", f"{type(t).__name__} {getattr(t, 'dtype', '')}", data)
            return
    except ALLOWED + (FloatingPointError, KeyError) as e:
        if isinstance(e, FloatingPointError) and where not in ("fit", "train_step"):
            findings.record("FloatingPointError-outside-fit", f"{where}: {e}", data)
        if isinstance(e, FloatingPointError) and where == "train_step":  # the step was refused or undone
            if state(m, opt)[0] != before[0] or state(m, opt)[5:] != before[5:]:
                findings.record("diverged-train-step-changed-weights-or-optimizer", str(e), data)
            return
        if isinstance(e, KeyError) and where != "load_state_dict":
            findings.record("KeyError", f"{where}: {e}", data)
        if not str(e) and not isinstance(e, MemoryError):
            findings.record("empty-message", f"{where}: {type(e).__name__}", data)
        if snaps is not None and snapshot(args) != snaps:
            findings.record("input-mutated", where, data)
        if isinstance(e, FloatingPointError):
            if not np.isfinite(m._core.flat_params()).all():
                findings.record("non-finite-weights-after-divergence", where, data)
        elif state(m, opt) != before:
            findings.record("failed-call-changed-state", f"{where}: {type(e).__name__}: {e}", data)
        return
    except Exception as e:  # noqa: BLE001
        findings.record(type(e).__name__, f"{where}: {e}", data)
        return
    # ---- the call succeeded
    if snaps is not None and snapshot(args) != snaps:
        findings.record("input-mutated", where, data)
    if where in ("forward", "predict", "fit", "evaluate", "train_step"):
        bad = [i for i, a in enumerate(args[:3]) if a is not None and not (all_finite_numbers(a) and
               (i > 0 and classify or converted_finite(a, dtype)))]
        if bad:
            findings.record("accepted-non-finite", f"{where}: argument {bad[0]}", data)
    if where in ("forward", "predict"):
        try:
            Xc = np.array(np.asarray(X), dtype=dtype, order="C")
        except Exception:  # noqa: BLE001
            return
        m2 = make()
        m2.train(m.training)
        ref = m2(Xc) if where == "forward" else m2.predict(Xc, batch_size=bs)
        if not np.array_equal(out, ref, equal_nan=True):
            findings.record("layout-changes-result", f"{where} {type(X).__name__} {np.asarray(X).dtype}", data)
    if where == "fit" and all(all_finite_numbers(a) for a in args if a is not None):
        if not np.isfinite(m._core.flat_params()).all():
            findings.record("fit-returned-non-finite-weights", "", data)


if __name__ == "__main__":
    limit_memory(LIMIT_GB)
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
