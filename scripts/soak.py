#!/usr/bin/env python
"""Soak test: many cycles of build / fit / predict / save / load / threads,
every result checked, resident memory tracked (issue 5). Every 10th cycle
also fits and pickles a scikit-learn estimator when scikit-learn is installed.

    python scripts/soak.py                 # 1000 cycles, a few minutes
    python scripts/soak.py --cycles 200    # quicker
    python scripts/soak.py --inject-leak 64   # self-check: leak 64 KiB a cycle, must FAIL

Each cycle builds a model (one of 40 architectures, so that after the warm-up
every size has been allocated before), trains it with fit and train_step,
and checks:
* predict equals an independent NumPy float64 forward of the state_dict;
* evaluate equals the loss recomputed in NumPy from the predictions;
* every loss and weight is finite;
* save + load (with the optimizer) gives identical weights, optimizer state
  and predictions; a pickle round trip (copy.deepcopy) too;
* 4 threads predicting on one model at once give the single-thread result;
  2 threads fitting two models at once give the sequential result;
* a hostile call (NaN input, wrong width) raises and changes nothing.
Resident memory (/proc/self/statm) is sampled after every cycle; after the
warm-up it must stay flat: the growth from the warm-up's end to the end, and
the least-squares slope times the remaining cycles, must stay under
--max-growth-mb. Exit status 1 on any failed check.
"""
from __future__ import annotations

import argparse
import copy
import gc
import math
import os
import sys
import tempfile
import threading
import time

import numpy as np

import fastmlp as fm

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


# --------------------------------------------------------------------------- NumPy reference

def ref_act(kind, x, slope=0.01):
    if kind == "relu":
        return np.maximum(x, 0)
    if kind == "tanh":
        return np.tanh(x)
    if kind == "sigmoid":
        return 1 / (1 + np.exp(-x))
    if kind == "leaky":
        return np.where(x > 0, x, slope * x)
    if kind == "gelu":
        from math import erf
        return 0.5 * x * (1 + np.vectorize(erf)(x / math.sqrt(2)))
    if kind == "identity":
        return x
    raise AssertionError(kind)


def ref_forward(plan, sd, X):
    """The eval-mode output of the model described by plan, from its state_dict, in float64."""
    h = np.asarray(X, np.float64)
    for i, p in enumerate(plan):
        if p[0] == "linear":
            h = h @ sd[f"{i}.weight"].astype(np.float64).T
            if f"{i}.bias" in sd:
                h = h + sd[f"{i}.bias"].astype(np.float64)
        elif p[0] == "act":
            h = ref_act(p[1], h)
    return h


def ref_loss(kind, out, y):
    out = out.astype(np.float64)
    if kind == "mse":
        return float(np.mean((out - y) ** 2))
    m = out.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(out - m).sum(axis=1, keepdims=True)))[:, 0]
    return float(np.mean(lse - out[np.arange(len(y)), y]))


# --------------------------------------------------------------------------- one cycle

def architecture(k):
    """The k-th of 40 architectures (fixed, so the warm-up sees every size)."""
    rng = np.random.default_rng(1000 + k % 40)
    dtype = ["float32", "float64"][k % 2]
    d_in = int(rng.integers(1, 17))
    plan, w = [], d_in
    for _ in range(int(rng.integers(1, 4))):
        h = int(rng.integers(1, 65))
        plan.append(("linear", w, h, bool(rng.integers(0, 2))))
        plan.append(("act", ["relu", "tanh", "sigmoid", "leaky", "gelu", "identity"][int(rng.integers(0, 6))]))
        if rng.random() < 0.3:
            plan.append(("dropout", float(rng.choice([0.1, 0.5]))))
        w = h
    d_out = int(rng.integers(2, 6))
    plan.append(("linear", w, d_out, True))
    task = ["classify", "regress"][int(rng.integers(0, 2))]
    opt_name = ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta"][int(rng.integers(0, 6))]
    n = int(rng.choice([1, 7, 64, 129, 300, 1000]))
    return dtype, d_in, d_out, plan, task, opt_name, n


def build(plan, dtype, seed):
    layers = []
    for p in plan:
        if p[0] == "linear":
            layers.append(fm.Linear(p[1], p[2], bias=p[3]))
        elif p[0] == "act":
            layers.append({"relu": fm.ReLU, "tanh": fm.Tanh, "sigmoid": fm.Sigmoid, "gelu": fm.GELU,
                           "identity": fm.Identity}.get(p[1], lambda: fm.LeakyReLU(0.01))())
        else:
            layers.append(fm.Dropout(p[1]))
    return fm.Sequential(*layers, seed=seed, dtype=dtype)


def make_opt(name, model):
    kw = {"SGD": dict(lr=0.01, momentum=0.9), "Adadelta": dict(lr=1.0)}.get(name, dict(lr=1e-2))
    return getattr(fm.optim, name)(model.parameters(), **kw)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def close(a, b, dtype, what):
    tol = 2e-4 if dtype == "float32" else 1e-9
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=what)


def cycle(i, tmpdir, leak_kb, leaks):
    dtype, d_in, d_out, plan, task, opt_name, n = architecture(i)
    rng = np.random.default_rng(i)
    X = rng.normal(size=(n, d_in)).astype(dtype)
    if task == "classify":
        y = rng.integers(0, d_out, n)
        loss, lkind = fm.CrossEntropyLoss(), "ce"
    else:
        y = rng.normal(size=(n, d_out)).astype(dtype)
        loss, lkind = fm.MSELoss(), "mse"
    X_before, y_before = X.copy(), y.copy()

    # build, fit
    m = build(plan, dtype, seed=i)
    opt = make_opt(opt_name, m)
    h = m.fit(X, y, loss, opt, epochs=2, batch_size=int(rng.integers(1, 65)), verbose=0, n_threads=1)
    check(np.isfinite(h.history["loss"]).all(), "fit loss not finite")
    params = m._core.flat_params()
    check(np.isfinite(params).all(), "weights not finite after fit")
    lv = m.train_step(X, y, loss, opt)
    check(np.isfinite(lv), "train_step loss not finite")
    check(np.array_equal(X, X_before) and np.array_equal(y, y_before), "the caller's data was modified")

    # predict against the NumPy reference; evaluate against the loss of the predictions
    P = m.predict(X)
    sd = m.state_dict()
    close(P, ref_forward(plan, sd, X), dtype, "predict != NumPy reference")
    ev = m.evaluate(X, y, loss)
    close(ev["loss"], ref_loss(lkind, P, y), dtype, "evaluate != NumPy loss of predict")

    # threads: 4 predicts on one model at once
    out = [None] * 4

    def work(k):
        out[k] = m.predict(X, batch_size=16 + k)

    ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for k in range(4):
        check(np.array_equal(out[k], m.predict(X, batch_size=16 + k)), "concurrent predict differs")

    # threads: 2 models fitted at once == fitted one after the other
    pair = [build(plan, dtype, seed=i + 7) for _ in range(4)]
    opts = [make_opt(opt_name, p) for p in pair]
    fit_kw = dict(epochs=1, batch_size=8, verbose=0, n_threads=1)
    ts = [threading.Thread(target=pair[k].fit, args=(X, y, loss, opts[k]), kwargs=fit_kw) for k in (0, 1)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for k in (2, 3):
        pair[k].fit(X, y, loss, opts[k], **fit_kw)
    for k in (0, 1):
        close(pair[k]._core.flat_params(), pair[k + 2]._core.flat_params(), dtype, "concurrent fit differs")

    # save / load with the optimizer; pickle round trip
    path = os.path.join(tmpdir, f"m{i % 3}.npz")
    m.save(path, optimizer=opt)
    m2, opt2 = fm.load(path, optimizer=True)
    check(np.array_equal(m2._core.flat_params(), params), "loaded weights differ")
    for gi in range(opt._core.n_groups):
        check(np.array_equal(opt2._core.state(gi), opt._core.state(gi)), "loaded optimizer state differs")
    check(np.array_equal(m2.predict(X), P), "loaded model predicts differently")
    m3 = copy.deepcopy(m)
    check(np.array_equal(m3.predict(X), P), "deep-copied model predicts differently")

    # hostile calls: an exception, nothing changed
    bad = X.copy()
    bad[0, 0] = np.nan
    w0 = params.copy()
    for call in (lambda: m.predict(bad), lambda: m.fit(bad, y, loss, opt, verbose=0),
                 lambda: m.predict(np.ones((2, d_in + 1)))):
        try:
            call()
        except ValueError:
            pass
        else:
            raise AssertionError("a hostile call was accepted")
    check(np.array_equal(m._core.flat_params(), w0), "a failed call changed the weights")

    # every 10th cycle: a scikit-learn estimator (if scikit-learn is installed) fitted, pickled, restored
    if i % 10 == 0 and fm_estimators_available():
        import pickle
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = (fm.MLPClassifier if task == "classify" else fm.MLPRegressor)(
                hidden_layer_sizes=(8,), max_iter=3, random_state=i, dtype=dtype)
            est.fit(X, y if task == "classify" else y[:, 0])
        pe = est.predict(X)
        check(np.array_equal(pickle.loads(pickle.dumps(est)).predict(X), pe), "unpickled estimator differs")
        check(task == "classify" or np.isfinite(pe).all(), "estimator predictions not finite")

    if leak_kb:
        leaks.append(np.ones(leak_kb * 1024 // 8))


def fm_estimators_available() -> bool:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return False
    return hasattr(fm, "MLPClassifier")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=None, help="cycles before the memory baseline (default: 15%%, >= 40)")
    ap.add_argument("--max-growth-mb", type=float, default=8.0)
    ap.add_argument("--inject-leak", type=int, default=0, metavar="KB", help="leak KB per cycle (self-check)")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args()
    warm = a.warmup if a.warmup is not None else max(40, a.cycles * 15 // 100)
    if a.cycles <= warm + 10:
        ap.error(f"--cycles must exceed the warm-up ({warm}) by more than 10")
    leaks: list = []
    rss = []
    t0 = time.time()
    failures = 0
    with tempfile.TemporaryDirectory(prefix="fastmlp-soak-") as d:
        for i in range(a.cycles):
            try:
                cycle(i, d, a.inject_leak, leaks)
            except Exception as e:  # noqa: BLE001 - count and report every failed check
                failures += 1
                print(f"cycle {i}: FAILED {type(e).__name__}: {str(e)[:300]}", file=sys.stderr)
            gc.collect()
            rss.append(rss_mb())
            if not a.quiet and (i + 1) % 100 == 0:
                print(f"cycle {i + 1}/{a.cycles}: RSS {rss[-1]:.1f} MB, {time.time() - t0:.0f} s", flush=True)
    secs = time.time() - t0
    base = float(np.median(rss[warm - 10:warm]))
    end = float(np.median(rss[-10:]))
    xs = np.arange(warm, a.cycles)
    slope = float(np.polyfit(xs, np.array(rss[warm:]), 1)[0])  # MB per cycle
    projected = slope * (a.cycles - warm)
    growth_ok = (end - base) <= a.max_growth_mb and projected <= a.max_growth_mb
    print(f"fastmlp soak: {a.cycles} cycles in {secs:.0f} s ({secs / a.cycles * 1000:.0f} ms/cycle), "
          f"{failures} failed cycle(s)")
    print(f"  RSS: {rss[0]:.1f} MB after cycle 1, {base:.1f} MB after the {warm}-cycle warm-up, "
          f"{end:.1f} MB at the end (growth {end - base:+.2f} MB; trend {slope * 1024:+.2f} KB/cycle, "
          f"{projected:+.2f} MB over {a.cycles - warm} cycles; limit {a.max_growth_mb} MB)")
    print("  memory flat: " + ("yes" if growth_ok else "NO"))
    return 0 if failures == 0 and growth_ok else 1


if __name__ == "__main__":
    sys.exit(main())
