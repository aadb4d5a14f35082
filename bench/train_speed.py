#!/usr/bin/env python
"""Training and inference speed of fastmlp vs a NumPy loop, PyTorch CPU and scikit-learn.

Run with the OpenBLAS workaround variables unset:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/train_speed.py

Everything runs in one process (the RSS measurement in a child process), on
synthetic float32 data from a seeded NumPy RNG. See bench/README.md.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np

import fastmlp as fm

HERE = Path(__file__).resolve().parent
LR = 0.01
N_CLASSES = 10
EVAL_ROWS = 2000

# name: (layer widths, batch size, samples in full mode, samples in --quick mode)
CONFIGS = {
    "seed": ((784, 256, 10), 256, 60000, 8192),
    "small": ((64, 32, 10), 32, 20000, 4000),
    "large": ((784, 1024, 1024, 10), 512, 20000, 2048),
}
# issue 10's ResNet-style MLP: Linear 256->512, 3 residual blocks of Linear(512, 512)-BatchNorm1d-ReLU-
# Dropout(0.1), Linear 512->10; batch 256; samples in full mode, in --quick mode
RESMLP = {"in": 256, "width": 512, "blocks": 3, "p": 0.1, "out": 10, "batch": 256, "samples": 60000, "quick": 8192}
SECTION_CONFIGS = ("resmlp",)  # --configs names that are sections of their own, not CONFIGS rows
PREDICT_ROWS = 60000
RSS_SHAPE = (60000, 784)
FRAMEWORKS = ("fastmlp", "numpy", "torch", "sklearn")
COLORS = {"fastmlp": "C0", "numpy": "C1", "torch": "C2", "sklearn": "C3"}

# Targets of issue 3 (ratios from one run on the 2-core machine).
TARGETS = {
    "seed": {"numpy": 1.3, "torch": 2.5, "share": 0.70},
    "small": {"numpy": 5.0, "torch": 20.0},
    "large": {"numpy": 1.1, "torch": 2.0, "share": 0.80},
    "predict": {"share": 0.75},
    # issue 10: resmlp at least 2x faster than PyTorch, BatchNorm costing at most 15% over the same net without it
    "resmlp": {"torch": 2.0, "norm_overhead": 0.15},
    "threads_speedup": 1.7,
}

HAS_FIT = hasattr(fm.Sequential, "fit")
HAS_PREDICT = hasattr(fm.Sequential, "predict")


# --------------------------------------------------------------------------- helpers
def train_flops_per_sample(widths) -> int:
    """2*sum(in*out) forward + 2*sum(in*out) weight grads + 2*sum(in*out) input
    grads of every layer but the first."""
    prods = [a * b for a, b in zip(widths[:-1], widths[1:])]
    return 2 * sum(prods) + 2 * sum(prods) + 2 * sum(prods[1:])


def forward_flops_per_sample(widths) -> int:
    return 2 * sum(a * b for a, b in zip(widths[:-1], widths[1:]))


def make_data(n, d, seed):
    """Learnable synthetic classification data: labels of a random linear teacher."""
    rng = np.random.default_rng(seed)
    X = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, 8192):  # in place, in chunks: no float64 temporary of the whole array
        rng.standard_normal(out=X[s:s + 8192], dtype=np.float32)
    teacher = rng.standard_normal((d, N_CLASSES)).astype(np.float32)
    y = np.empty(n, dtype=np.int64)
    for s in range(0, n, 8192):
        y[s:s + 8192] = np.argmax(X[s:s + 8192] @ teacher, axis=1)
    return X, y


def torch_default_init(widths, seed):
    """nn.Linear's default: W, b ~ U(-1/sqrt(in), 1/sqrt(in)); W stored (out, in)."""
    rng = np.random.default_rng(seed)
    params = []
    for i, o in zip(widths[:-1], widths[1:]):
        k = 1.0 / np.sqrt(i)
        params.append((rng.uniform(-k, k, (o, i)).astype(np.float32), rng.uniform(-k, k, o).astype(np.float32)))
    return params


def np_forward(params, X):
    """params: [(W (out,in), b)] -> logits. ReLU between layers."""
    h = X
    for i, (W, b) in enumerate(params):
        h = h @ W.T
        h += b
        if i < len(params) - 1:
            np.maximum(h, 0, out=h)
    return h


def ce_loss(logits, y):
    z = logits.astype(np.float64)
    z -= z.max(1, keepdims=True)
    lse = np.log(np.exp(z).sum(1))
    return float(np.mean(lse - z[np.arange(len(y)), y]))


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), times


class Threads:
    """One thread count for every library in the process."""

    def __init__(self, n):
        self.n = n
        self._limiter = None
        try:
            import threadpoolctl
            self._limiter = threadpoolctl.threadpool_limits(limits=n)  # numpy's and fastmlp's OpenBLAS
        except ImportError:
            try:
                fm._core.blas_set_num_threads(n)
            except Exception:
                pass

    def limit(self, n):
        """Context manager bounding BLAS threads (used only by the stand-in fit path)."""
        try:
            import threadpoolctl
            return threadpoolctl.threadpool_limits(limits=n)
        except ImportError:
            import contextlib
            fm._core.blas_set_num_threads(n)
            return contextlib.nullcontext()


# --------------------------------------------------------------------------- fastmlp
def fm_model(widths, init_params=None):
    layers = []
    for k, (i, o) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(fm.Linear(i, o))
        if k < len(widths) - 2:
            layers.append(fm.ReLU())
    model = fm.Sequential(*layers, seed=0, dtype="float32")
    if init_params is not None:
        sd = {}
        for k, (W, b) in enumerate(init_params):
            sd[f"{2 * k}.weight"], sd[f"{2 * k}.bias"] = W, b
        model.load_state_dict(sd)
    return model


def fm_params(model):
    sd = model.state_dict()
    n = len([k for k in sd if k.endswith(".weight")])
    return [(np.asarray(sd[f"{2 * k}.weight"]), np.asarray(sd[f"{2 * k}.bias"])) for k in range(n)]


def fm_fit_epoch(model, X, y, loss_fn, opt, batch, n_threads, seed, threads_ctl):
    if HAS_FIT:
        model.fit(X, y, loss_fn, opt, epochs=1, batch_size=batch, shuffle=True, verbose=0, n_threads=n_threads)
        return
    # Stand-in until Sequential.fit exists: a Python loop of train_step calls.
    perm = np.random.default_rng(seed).permutation(len(X))
    with threads_ctl.limit(n_threads):
        for s in range(0, len(X), batch):
            idx = perm[s:s + batch]
            model.train_step(X[idx], y[idx], loss_fn, opt)


def fm_predict(model, X, n_threads, threads_ctl):
    if HAS_PREDICT:
        return model.predict(X, n_threads=n_threads)
    model.eval()  # stand-in: one forward call
    with threads_ctl.limit(n_threads):
        return model(X)


def fm_timed_epochs(model, batch, X, y, Xw, yw, repeats, n_threads, threads_ctl):
    """SGD(lr=LR) epochs of model on (X, y) after a warm-up on (Xw, yw): (best time, all times)."""
    loss_fn = fm.CrossEntropyLoss()
    opt = fm.optim.SGD(model.parameters(), lr=LR)
    fm_fit_epoch(model, Xw, yw, loss_fn, opt, batch, n_threads, 1, threads_ctl)  # warm-up
    counter = iter(range(2, 10 ** 6))
    return best_of(lambda: fm_fit_epoch(model, X, y, loss_fn, opt, batch, n_threads, next(counter),
                                        threads_ctl), repeats)


def bench_fastmlp(widths, batch, X, y, Xw, yw, init, repeats, n_threads, threads_ctl):
    model = fm_model(widths, init)
    t, times = fm_timed_epochs(model, batch, X, y, Xw, yw, repeats, n_threads, threads_ctl)
    return t, times, fm_params(model)


# --------------------------------------------------------------------------- numpy loop
def numpy_train_epoch(params, X, y, batch, lr, rng):
    """Plain NumPy mini-batch SGD: forward, softmax cross-entropy, backward, update.
    params: list of [W (in,out), b] float32 arrays updated in place."""
    n, L = len(X), len(params)
    perm = rng.permutation(n)
    for s in range(0, n, batch):
        idx = perm[s:s + batch]
        xb, yb = X[idx], y[idx]
        B = len(idx)
        acts = [xb]
        h = xb
        for i, (W, b) in enumerate(params):
            h = h @ W
            h += b
            if i < L - 1:
                np.maximum(h, 0, out=h)
            acts.append(h)
        # softmax + cross-entropy, gradient w.r.t. the logits
        p = h
        p -= p.max(axis=1, keepdims=True)
        np.exp(p, out=p)
        p /= p.sum(axis=1, keepdims=True)
        rows = np.arange(B)
        _loss = -np.log(p[rows, yb] + 1e-30).mean()  # noqa: F841 (computed like a real loop would)
        p[rows, yb] -= 1.0
        p *= np.float32(1.0 / B)
        d = p
        for i in range(L - 1, -1, -1):
            W, b = params[i]
            gW = acts[i].T @ d
            gb = d.sum(axis=0)
            if i > 0:
                d_prev = d @ W.T
                d_prev *= acts[i] > 0  # ReLU derivative from the layer's output
            W -= np.float32(lr) * gW
            b -= np.float32(lr) * gb
            if i > 0:
                d = d_prev


def bench_numpy(widths, batch, X, y, Xw, yw, init, repeats):
    params = [[np.ascontiguousarray(W.T), b.copy()] for W, b in init]
    rng = np.random.default_rng(1)
    numpy_train_epoch(params, Xw, yw, batch, LR, rng)
    t, times = best_of(lambda: numpy_train_epoch(params, X, y, batch, LR, rng), repeats)
    return t, times, [(W.T, b) for W, b in params]


# --------------------------------------------------------------------------- torch
def bench_torch(torch, widths, batch, X, y, Xw, yw, init, repeats):
    nn = torch.nn
    layers = []
    for k, (i, o) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(i, o))
        if k < len(widths) - 2:
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers)
    with torch.no_grad():
        for lin, (W, b) in zip([m for m in model if isinstance(m, nn.Linear)], init):
            lin.weight.copy_(torch.from_numpy(W))
            lin.bias.copy_(torch.from_numpy(b))
    t, times = torch_timed_epochs(torch, model, batch, X, y, Xw, yw, repeats)
    params = [(lin.weight.detach().numpy().copy(), lin.bias.detach().numpy().copy())
              for lin in model if isinstance(lin, nn.Linear)]
    return t, times, params


def torch_timed_epochs(torch, model, batch, X, y, Xw, yw, repeats):
    """The usual zero_grad / forward / loss / backward / SGD(lr=LR) step loop over pre-shuffled batches,
    after a warm-up epoch on (Xw, yw): (best time, all times)."""
    nn = torch.nn
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    model.train()

    def batches(Xa, ya, seed):  # pre-shuffled tensors, sliced into views (outside the timed epoch)
        perm = np.random.default_rng(seed).permutation(len(Xa))
        Xt, yt = torch.from_numpy(Xa[perm]), torch.from_numpy(ya[perm])
        return [(Xt[s:s + batch], yt[s:s + batch]) for s in range(0, len(Xa), batch)]

    def epoch(bl):
        for xb, yb in bl:
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()

    epoch(batches(Xw, yw, 1))
    times = []
    for r in range(repeats):
        bl = batches(X, y, 2 + r)
        gc.collect()
        t0 = time.perf_counter()
        epoch(bl)
        times.append(time.perf_counter() - t0)
        del bl
    return min(times), times


# --------------------------------------------------------------------------- the resmlp row
def fm_resmlp(norm=True):
    """RESMLP in fastmlp (norm=False: the same network without its BatchNorm1d layers)."""
    w, p = RESMLP["width"], RESMLP["p"]

    def block():
        return fm.Residual(fm.Linear(w, w), *([fm.BatchNorm1d(w)] if norm else []), fm.ReLU(), fm.Dropout(p))

    return fm.Sequential(fm.Linear(RESMLP["in"], w), *[block() for _ in range(RESMLP["blocks"])],
                         fm.Linear(w, RESMLP["out"]), seed=0, dtype="float32")


def torch_resmlp(torch):
    """RESMLP written the obvious torch way: a Residual module whose forward is x + self.block(x)."""
    nn = torch.nn

    class Residual(nn.Module):
        def __init__(self, *layers):
            super().__init__()
            self.block = nn.Sequential(*layers)

        def forward(self, x):
            return x + self.block(x)

    w = RESMLP["width"]
    blocks = [Residual(nn.Linear(w, w), nn.BatchNorm1d(w), nn.ReLU(), nn.Dropout(RESMLP["p"]))
              for _ in range(RESMLP["blocks"])]
    return nn.Sequential(nn.Linear(RESMLP["in"], w), *blocks, nn.Linear(w, RESMLP["out"]))


def resmlp_widths():
    return (RESMLP["in"], *[RESMLP["width"]] * (RESMLP["blocks"] + 1), RESMLP["out"])


def bench_resmlp(torch, n, repeats, n_threads, threads_ctl, frameworks, peak):
    """One epoch of RESMLP (SGD, as the other rows): fastmlp, PyTorch from the same state_dict, and
    fastmlp on the same network without the BatchNorm1d layers (same Linear weights)."""
    batch = RESMLP["batch"]
    X, y = make_data(n, RESMLP["in"], seed=10)
    Xw, yw = X[:8 * batch], y[:8 * batch]
    ev_X, ev_y = X[:EVAL_ROWS], y[:EVAL_ROWS]
    flops = train_flops_per_sample(resmlp_widths()) * n
    model = fm_resmlp()
    init = model.state_dict()
    out = {"layers": "Linear 256-512, 3 x Residual(Linear 512-512, BatchNorm1d, ReLU, Dropout 0.1), Linear 512-10",
           "batch_size": batch, "samples": n, "train_flops_per_epoch": flops,
           "init_loss": ce_loss(model.predict(ev_X), ev_y), "results": {}, "speedup": {}}

    def fm_run(m):
        t, times = fm_timed_epochs(m, batch, X, y, Xw, yw, repeats, n_threads, threads_ctl)
        return t, times, ce_loss(m.predict(ev_X), ev_y)

    def nonorm_run():
        m = fm_resmlp(norm=False)
        m.load_state_dict({k: init[k] for k in m.state_dict()})  # its keys are the Linears' of the full net
        return fm_run(m)

    def torch_run():
        tm = torch_resmlp(torch)
        tm.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in init.items()})
        t, times = torch_timed_epochs(torch, tm, batch, X, y, Xw, yw, repeats)
        tm.eval()
        with torch.no_grad():
            return t, times, ce_loss(tm(torch.from_numpy(ev_X)).numpy(), ev_y)

    runs = [("fastmlp", lambda: fm_run(model))]
    if torch is not None and "torch" in frameworks:
        runs.append(("torch", torch_run))
    runs.append(("fastmlp_nonorm", nonorm_run))
    for fw, run in runs:
        try:
            t, times, loss = run()
        except Exception as e:  # report, keep benchmarking
            out["results"][fw] = {"error": f"{type(e).__name__}: {e}"}
            print(f"  resmlp {fw}: error {type(e).__name__}: {e}")
            continue
        gfl = flops / t / 1e9
        out["results"][fw] = {"s_per_epoch": t, "times": times, "samples_per_s": n / t, "gflops": gfl,
                              "share_of_peak": gfl / peak, "loss": loss}
        print(f"  resmlp {fw:<14} {t:.4f} s/epoch")
    f = out["results"]["fastmlp"]
    if "s_per_epoch" in f:
        for fw, r in out["results"].items():
            if fw != "fastmlp" and "s_per_epoch" in r:
                out["speedup"][fw] = r["s_per_epoch"] / f["s_per_epoch"]
        if "fastmlp_nonorm" in out["speedup"]:
            out["norm_overhead"] = 1.0 / out["speedup"]["fastmlp_nonorm"] - 1.0  # time with / without - 1
    return out


# --------------------------------------------------------------------------- the recipe row
# A modern recipe on the seed network: AdamW, a linear warmup over the first epoch then
# cosine decay, both stepped per batch, and gradient clipping at total 2-norm 1.0.
RECIPE_EPOCHS = 3
RECIPE_OPT = dict(lr=1e-3, weight_decay=1e-2)


def bench_recipe_fastmlp(widths, batch, X, y, init, n_threads):
    from fastmlp.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

    model = fm_model(widths, init)
    opt = fm.optim.AdamW(model.parameters(), **RECIPE_OPT)
    steps = -(-len(X) // batch)
    sched = SequentialLR(opt, [LinearLR(opt, start_factor=0.01, total_iters=steps),
                               CosineAnnealingLR(opt, T_max=steps * (RECIPE_EPOCHS - 1))], milestones=[steps])
    gc.collect()
    t0 = time.perf_counter()
    model.fit(X, y, fm.CrossEntropyLoss(), opt, epochs=RECIPE_EPOCHS, batch_size=batch, verbose=0,
              n_threads=n_threads, scheduler=sched, scheduler_interval="batch", clip_grad_norm=1.0)
    return (time.perf_counter() - t0) / RECIPE_EPOCHS, fm_params(model)


def bench_recipe_torch(torch, widths, batch, X, y, init):
    nn = torch.nn
    lins = [nn.Linear(i, o) for i, o in zip(widths[:-1], widths[1:])]
    model = nn.Sequential(*[m for lin in lins for m in (lin, nn.ReLU())][:-1])
    with torch.no_grad():
        for lin, (W, b) in zip(lins, init):
            lin.weight.copy_(torch.from_numpy(W))
            lin.bias.copy_(torch.from_numpy(b))
    opt = torch.optim.AdamW(model.parameters(), **RECIPE_OPT)
    steps = -(-len(X) // batch)
    sl = torch.optim.lr_scheduler
    sched = sl.SequentialLR(opt, [sl.LinearLR(opt, start_factor=0.01, total_iters=steps),
                                  sl.CosineAnnealingLR(opt, T_max=steps * (RECIPE_EPOCHS - 1))], milestones=[steps])
    loss_fn = nn.CrossEntropyLoss()
    total = 0.0
    for epoch in range(RECIPE_EPOCHS):
        perm = np.random.default_rng(epoch).permutation(len(X))  # shuffled outside the timed loop
        Xt, yt = torch.from_numpy(X[perm]), torch.from_numpy(y[perm])
        gc.collect()
        t0 = time.perf_counter()
        for s in range(0, len(X), batch):
            opt.zero_grad()
            loss_fn(model(Xt[s:s + batch]), yt[s:s + batch]).backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
        total += time.perf_counter() - t0
    return total / RECIPE_EPOCHS, [(lin.weight.detach().numpy().copy(), lin.bias.detach().numpy().copy())
                                   for lin in lins]


# --------------------------------------------------------------------------- sklearn
def bench_sklearn(widths, batch, X, y, Xw, yw, init, repeats):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=tuple(widths[1:-1]), activation="relu", solver="sgd", alpha=0.0,
                        batch_size=batch, learning_rate="constant", learning_rate_init=LR, momentum=0.0,
                        nesterovs_momentum=False, shuffle=True, random_state=0, max_iter=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.partial_fit(Xw, yw, classes=np.arange(N_CLASSES))  # warm-up, initializes the layers
        for k, (W, b) in enumerate(init):  # same starting weights as the others
            clf.coefs_[k][...] = W.T
            clf.intercepts_[k][...] = b
        t, times = best_of(lambda: clf.partial_fit(X, y), repeats)  # one epoch per call
    return t, times, [(W.T, b) for W, b in zip(clf.coefs_, clf.intercepts_)]


# --------------------------------------------------------------------------- sgemm peak
def sgemm_peak(repeats, threads_ctl):
    n = 2048
    rng = np.random.default_rng(0)
    A = rng.standard_normal((n, n), dtype=np.float32)
    B = rng.standard_normal((n, n), dtype=np.float32)
    C = np.empty((n, n), dtype=np.float32)
    np.matmul(A, B, out=C)
    t, _ = best_of(lambda: np.matmul(A, B, out=C), repeats)
    numpy_gflops = 2 * n ** 3 / t / 1e9
    # fastmlp's own OpenBLAS through a bias-free Linear forward on a big batch.
    model = fm.Sequential(fm.Linear(n, n, bias=False), seed=0, dtype="float32")
    model.eval()
    Xb = rng.standard_normal((2 * n, n), dtype=np.float32)
    fm_predict(model, Xb, threads_ctl.n, threads_ctl)
    t2, _ = best_of(lambda: fm_predict(model, Xb, threads_ctl.n, threads_ctl), repeats)
    fm_gflops = 2 * (2 * n) * n * n / t2 / 1e9
    return {"numpy_sgemm_gflops": numpy_gflops, "fastmlp_linear_gflops": fm_gflops,
            "peak_gflops": max(numpy_gflops, fm_gflops), "matrix": n}


# --------------------------------------------------------------------------- RSS child
RSS_CHILD = textwrap.dedent("""
    import gc, json, resource, sys, time
    sys.path.insert(0, {bench_dir!r})
    import numpy as np
    import train_speed as ts

    def status():  # current and peak RSS of this process, KiB (Linux)
        d = {{}}
        try:
            for line in open("/proc/self/status"):
                if line.startswith(("VmRSS:", "VmHWM:")):
                    d[line.split(":")[0]] = int(line.split()[1])
        except OSError:
            pass
        return d

    n, d, threads = {n}, {d}, {threads}
    X, y = ts.make_data(n, d, 7)
    model = ts.fm_model((d, 256, 10))
    loss_fn = ts.fm.CrossEntropyLoss()
    opt = ts.fm.optim.SGD(model.parameters(), lr=ts.LR)
    threads_ctl = ts.Threads(threads)
    gc.collect()
    try:  # reset the peak RSS (VmHWM) to the current RSS (Linux >= 4.0) so that earlier peaks cannot hide fit's
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        hwm_reset = True
    except OSError:
        hwm_reset = False
    s0, before = status(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    ts.fm_fit_epoch(model, X, y, loss_fn, opt, 256, threads, 0, threads_ctl)
    dt = time.perf_counter() - t0
    s1, after = status(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({{"maxrss_before_kib": before, "maxrss_after_kib": after, "vmrss_before_kib": s0.get("VmRSS"),
                      "vmhwm_before_kib": s0.get("VmHWM"), "vmhwm_after_kib": s1.get("VmHWM"),
                      "fit_s": dt, "array_bytes": X.nbytes, "hwm_reset": hwm_reset}}))
""")


def rss_growth(threads):
    n, d = RSS_SHAPE
    code = RSS_CHILD.format(bench_dir=str(HERE), n=n, d=d, threads=threads)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        return {"error": out.stderr.strip()[-2000:]}
    r = json.loads(out.stdout.strip().splitlines()[-1])
    if r["hwm_reset"] and r["vmhwm_after_kib"] is not None:
        # ru_maxrss cannot be used alone here: Linux carries the parent's RSS at spawn time over exec
        # into the child's ru_maxrss (signal->maxrss), which clear_refs does not reset and which can
        # exceed everything the child does. VmHWM after the reset is the peak during fit.
        growth, r["method"] = (r["vmhwm_after_kib"] - r["vmrss_before_kib"]) * 1024, "VmHWM reset"
    else:
        growth, r["method"] = (r["maxrss_after_kib"] - r["maxrss_before_kib"]) * 1024, "ru_maxrss (lower bound)"
    limit = 0.10 * r["array_bytes"] + 64 * 2 ** 20
    r.update({"shape": [n, d], "growth_bytes": growth, "limit_bytes": limit, "ok": growth < limit})
    return r


# --------------------------------------------------------------------------- environment
def blas_info():
    info = {"fastmlp_blas": None, "threadpoolctl": None}
    try:
        info["fastmlp_blas"] = fm._core.blas_config()
    except Exception:
        pass
    try:
        import threadpoolctl
        info["threadpoolctl"] = [{**{k: p.get(k) for k in ("internal_api", "architecture", "version", "num_threads",
                                                            "threading_layer")},
                                  "library": os.path.basename(p.get("filepath") or "")}  # no machine paths
                                 for p in threadpoolctl.threadpool_info()]
    except ImportError:
        pass
    return info


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def default_threads():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# --------------------------------------------------------------------------- report
def fmt_rate(x):
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.1f}k"


def print_table(res):
    peak = res["sgemm"]["peak_gflops"]
    hdr = f"{'config':<8} {'framework':<9} {'s/epoch':>9} {'samples/s':>10} {'GFLOP/s':>8} {'%peak':>6} " \
          f"{'fastmlp x':>10} {'loss':>7}"
    print(hdr)
    print("-" * len(hdr))
    for name, c in res["configs"].items():
        fmt = c["results"].get("fastmlp")
        for fw, r in c["results"].items():
            if "error" in r:
                print(f"{name:<8} {fw:<9} error: {r['error'][:60]}")
                continue
            sp = "-" if fw == "fastmlp" or not fmt or "error" in fmt else f"{c['speedup'][fw]:.2f}x"
            print(f"{name:<8} {fw:<9} {r['s_per_epoch']:>9.4f} {fmt_rate(r['samples_per_s']):>10} "
                  f"{r['gflops']:>8.1f} {100 * r['gflops'] / peak:>5.0f}% {sp:>10} {r['loss']:>7.4f}")
    rc = res.get("recipe")
    for fw, r in (rc["results"] if rc else {}).items():
        if "error" in r:
            print(f"{'recipe':<8} {fw:<9} error: {r['error'][:60]}")
            continue
        sp = f"{rc['speedup'][fw]:.2f}x" if fw in rc["speedup"] else "-"
        print(f"{'recipe':<8} {fw:<9} {r['s_per_epoch']:>9.4f} {fmt_rate(r['samples_per_s']):>10} "
              f"{r['gflops']:>8.1f} {100 * r['gflops'] / peak:>5.0f}% {sp:>10} {r['loss']:>7.4f}")
    rm = res.get("resmlp")
    for fw, r in (rm["results"] if rm else {}).items():
        label = {"fastmlp_nonorm": "no-norm"}.get(fw, fw)  # fastmlp on the network without BatchNorm1d
        if "error" in r:
            print(f"{'resmlp':<8} {label:<9} error: {r['error'][:60]}")
            continue
        sp = f"{rm['speedup'][fw]:.2f}x" if fw in rm["speedup"] else "-"
        print(f"{'resmlp':<8} {label:<9} {r['s_per_epoch']:>9.4f} {fmt_rate(r['samples_per_s']):>10} "
              f"{r['gflops']:>8.1f} {100 * r['gflops'] / peak:>5.0f}% {sp:>10} {r['loss']:>7.4f}")
    p = res.get("predict")
    if p:
        for fw, r in p["results"].items():
            sp = "-" if fw == "fastmlp" else f"{p['speedup'][fw]:.2f}x"
            print(f"{'predict':<8} {fw:<9} {r['s']:>9.4f} {fmt_rate(r['samples_per_s']):>10} "
                  f"{r['gflops']:>8.1f} {100 * r['gflops'] / peak:>5.0f}% {sp:>10} {'':>7}")
    print(f"(sgemm peak {peak:.0f} GFLOP/s; 'fastmlp x' = peer time / fastmlp time; "
          f"loss = cross-entropy of the trained model on {EVAL_ROWS} training rows; resmlp no-norm = fastmlp "
          "on the same network without its BatchNorm1d layers)")


def check_targets(res):
    lines = []
    for name in ("seed", "small", "large"):
        c = res["configs"].get(name)
        if not c or "error" in c["results"].get("fastmlp", {"error": 1}):
            continue
        for peer in ("numpy", "torch"):
            if peer in c["speedup"] and peer in TARGETS[name]:
                v, want = c["speedup"][peer], TARGETS[name][peer]
                lines.append((f"{name}: vs {peer}", f"{v:.2f}x", f">= {want}x", v >= want))
        if "share" in TARGETS[name]:
            v, want = c["results"]["fastmlp"]["share_of_peak"], TARGETS[name]["share"]
            lines.append((f"{name}: share of sgemm peak", f"{100 * v:.0f}%", f">= {100 * want:.0f}%", v >= want))
    rm = res.get("resmlp")
    if rm and "torch" in rm["speedup"]:
        v, want = rm["speedup"]["torch"], TARGETS["resmlp"]["torch"]
        lines.append(("resmlp: vs torch", f"{v:.2f}x", f">= {want}x", v >= want))
    if rm and "norm_overhead" in rm:
        v, want = rm["norm_overhead"], TARGETS["resmlp"]["norm_overhead"]
        lines.append(("resmlp: time with BatchNorm over without", f"{100 * v:+.0f}%", f"<= +{100 * want:.0f}%",
                      v <= want))
    p = res.get("predict")
    if p and "fastmlp" in p["results"]:
        v, want = p["results"]["fastmlp"]["share_of_peak"], TARGETS["predict"]["share"]
        lines.append(("predict: share of sgemm peak", f"{100 * v:.0f}%", f">= {100 * want:.0f}%", v >= want))
    s = res.get("threads_scaling")
    if s and "speedup" in s:
        lines.append(("large: 2 threads vs 1", f"{s['speedup']:.2f}x", f">= {TARGETS['threads_speedup']}x",
                      s["speedup"] >= TARGETS["threads_speedup"]))
    r = res.get("rss")
    if r and "growth_bytes" in r:
        lines.append(("fit peak RSS growth (60000x784)", f"{r['growth_bytes'] / 2 ** 20:.0f} MiB",
                      f"< {r['limit_bytes'] / 2 ** 20:.0f} MiB", r["ok"]))
    return [{"target": a, "value": b, "wanted": c, "met": d} for a, b, c, d in lines]


def plot(res, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: skipping the PNG chart")
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    names = list(res["configs"])
    peers = [fw for fw in FRAMEWORKS[1:] if any(fw in res["configs"][n]["speedup"] for n in names)]
    w = 0.8 / max(1, len(peers))
    for k, fw in enumerate(peers):
        vals = [res["configs"][n]["speedup"].get(fw, 0.0) for n in names]
        bars = ax1.bar(np.arange(len(names)) + k * w - 0.4 + w / 2, vals, w, label=f"vs {fw}", color=COLORS[fw])
        ax1.bar_label(bars, fmt="%.1f", fontsize=8)
    ax1.axhline(1.0, color="k", lw=0.8)
    ax1.set_xticks(np.arange(len(names)), names)
    ax1.set_ylabel("fastmlp speed-up (x)")
    ax1.set_title("Training: fastmlp speed-up vs peers (one epoch)")
    ax1.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=3)
    groups = names + (["predict"] if res.get("predict") else [])
    fws = [fw for fw in FRAMEWORKS if any(
        fw in (res["configs"][g]["results"] if g in res["configs"] else res["predict"]["results"]) for g in groups)]
    w = 0.8 / max(1, len(fws))
    for k, fw in enumerate(fws):
        vals = []
        for g in groups:
            r = (res["configs"][g]["results"] if g in res["configs"] else res["predict"]["results"]).get(fw, {})
            vals.append(r.get("gflops", 0.0))
        ax2.bar(np.arange(len(groups)) + k * w - 0.4 + w / 2, vals, w, label=fw, color=COLORS[fw])
    ax2.axhline(res["sgemm"]["peak_gflops"], color="r", ls="--", lw=1, label="sgemm peak")
    ax2.set_xticks(np.arange(len(groups)), groups)
    ax2.set_ylabel("GFLOP/s")
    ax2.set_title("Throughput")
    ax2.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=5)
    fig.suptitle(f"fastmlp benchmark, {res['meta']['cpu']}, {res['meta']['threads']} threads"
                 + (" (--quick)" if res["meta"]["quick"] else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


# --------------------------------------------------------------------------- main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples and repeats (under a minute)")
    ap.add_argument("--repeats", type=int, default=None, help="timed epochs per framework, best kept (5; 2 with --quick)")
    ap.add_argument("--configs", default="seed,small,large,resmlp",
                    help="comma-separated subset of seed,small,large,resmlp")
    ap.add_argument("--frameworks", default=",".join(FRAMEWORKS), help="comma-separated subset of " + ",".join(FRAMEWORKS))
    ap.add_argument("--threads", type=int, default=None, help="threads for every library (default: all usable cores)")
    ap.add_argument("--out-dir", default=str(HERE / "results"), help="where train_speed.json/.png go")
    args = ap.parse_args(argv)

    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    bad = [c for c in configs if c not in CONFIGS and c not in SECTION_CONFIGS]
    if bad:
        ap.error(f"unknown config(s) {bad}; choose from {[*CONFIGS, *SECTION_CONFIGS]}")
    frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    bad = [f for f in frameworks if f not in FRAMEWORKS]
    if bad or "fastmlp" not in frameworks:
        ap.error(f"frameworks must include fastmlp and be among {list(FRAMEWORKS)}")
    repeats = args.repeats or (2 if args.quick else 5)
    if repeats < 1:
        ap.error("--repeats must be >= 1")
    threads = args.threads or default_threads()
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    env_warn = [v for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if os.environ.get(v)]
    for v in env_warn:
        print(f"WARNING: {v}={os.environ[v]} is set; the benchmark must run with it unset:\n"
              f"  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE {sys.executable} bench/train_speed.py")
    if not (HAS_FIT and HAS_PREDICT):
        print("NOTE: fastmlp has no Sequential.fit/predict yet: timing a stand-in Python loop of train_step "
              "calls and a plain forward call instead.")

    torch = None
    if "torch" in frameworks:
        try:
            import torch
            torch.set_num_threads(threads)
        except ImportError:
            print("PyTorch is not installed: skipping it")
    has_sklearn = False
    if "sklearn" in frameworks:
        try:
            import sklearn.neural_network  # noqa: F401
            has_sklearn = True
        except ImportError:
            print("scikit-learn is not installed: skipping it")
    threads_ctl = Threads(threads)

    meta = {"python": sys.version.split()[0], "numpy": np.__version__, "fastmlp": fm.__version__,
            "torch": getattr(torch, "__version__", None), "cpu": cpu_name(), "threads": threads,
            "quick": args.quick, "repeats": repeats, "lr": LR, "fastmlp_fit_api": HAS_FIT and HAS_PREDICT,
            "openblas_env_set": env_warn, "blas": blas_info(), "command": " ".join(["python"] + sys.argv)}  # no machine paths in results
    if has_sklearn:
        import sklearn
        meta["sklearn"] = sklearn.__version__
    print(f"fastmlp {fm.__version__} | numpy {np.__version__} | torch {meta['torch']} | "
          f"sklearn {meta.get('sklearn')} | {meta['cpu']} | {threads} threads | repeats {repeats}"
          + (" | --quick" if args.quick else ""))
    print(f"fastmlp BLAS: {meta['blas']['fastmlp_blas']}")
    for p in meta["blas"]["threadpoolctl"] or []:
        print(f"  threadpoolctl: {p['internal_api']} {p['version']} {p['architecture']} "
              f"threads={p['num_threads']} {p['library']}")
    if meta["blas"]["threadpoolctl"] is None:
        print("  (threadpoolctl not installed: no per-library BLAS report)")

    t_start = t_section = time.perf_counter()
    sections = {}
    res = {"meta": meta}
    res["sgemm"] = sgemm_peak(3 if args.quick else 10, threads_ctl)
    peak = res["sgemm"]["peak_gflops"]
    print(f"sgemm 2048^3: numpy {res['sgemm']['numpy_sgemm_gflops']:.0f} GFLOP/s, "
          f"fastmlp Linear forward {res['sgemm']['fastmlp_linear_gflops']:.0f} GFLOP/s -> peak {peak:.0f} GFLOP/s\n")

    sections['sgemm'] = time.perf_counter() - t_section
    t_section = time.perf_counter()
    res["configs"] = {}
    for name in [c for c in configs if c in CONFIGS]:
        widths, batch, n_full, n_quick = CONFIGS[name]
        n = n_quick if args.quick else n_full
        X, y = make_data(n, widths[0], seed=sum(map(ord, name)))
        Xw, yw = X[:min(n, 8 * batch)], y[:min(n, 8 * batch)]
        init = torch_default_init(widths, seed=42)
        ev_X, ev_y = X[:EVAL_ROWS], y[:EVAL_ROWS]
        flops = train_flops_per_sample(widths) * n
        c = {"layers": list(widths), "batch_size": batch, "samples": n, "train_flops_per_epoch": flops,
             "init_loss": ce_loss(np_forward(init, ev_X), ev_y), "results": {}, "speedup": {}}
        runners = [("fastmlp", lambda: bench_fastmlp(widths, batch, X, y, Xw, yw, init, repeats, threads,
                                                     threads_ctl)),
                   ("numpy", lambda: bench_numpy(widths, batch, X, y, Xw, yw, init, repeats))]
        if torch is not None:
            runners.append(("torch", lambda: bench_torch(torch, widths, batch, X, y, Xw, yw, init, repeats)))
        if has_sklearn:
            runners.append(("sklearn", lambda: bench_sklearn(widths, batch, X, y, Xw, yw, init, repeats)))
        for fw, run in runners:
            if fw not in frameworks:
                continue
            try:
                t, times, params = run()
            except Exception as e:  # report, keep benchmarking the others
                c["results"][fw] = {"error": f"{type(e).__name__}: {e}"}
                print(f"  {name}/{fw}: error {type(e).__name__}: {e}")
                continue
            gfl = flops / t / 1e9
            c["results"][fw] = {"s_per_epoch": t, "times": times, "samples_per_s": n / t, "gflops": gfl,
                                "share_of_peak": gfl / peak, "loss": ce_loss(np_forward(params, ev_X), ev_y)}
            print(f"  {name:<6} {fw:<8} {t:.4f} s/epoch")
        f = c["results"].get("fastmlp", {})
        if "s_per_epoch" in f:
            for fw, r in c["results"].items():
                if fw != "fastmlp" and "s_per_epoch" in r:
                    c["speedup"][fw] = r["s_per_epoch"] / f["s_per_epoch"]
        res["configs"][name] = c
        del X, y, Xw, yw
        gc.collect()

    sections['configs'] = time.perf_counter() - t_section
    t_section = time.perf_counter()
    if "resmlp" in configs:  # ---- issue 10's ResNet-style MLP with BatchNorm, and without it
        res["resmlp"] = bench_resmlp(torch, RESMLP["quick"] if args.quick else RESMLP["samples"], repeats, threads,
                                     threads_ctl, frameworks, peak)
        gc.collect()
        sections["resmlp"] = time.perf_counter() - t_section
        t_section = time.perf_counter()
    # ---- the recipe row: AdamW + warmup/cosine per batch + clip_grad_norm=1.0 on the seed network
    widths, batch, n_full, n_quick = CONFIGS["seed"]
    n = n_quick if args.quick else n_full
    X, y = make_data(n, widths[0], seed=7)
    init = torch_default_init(widths, seed=45)
    flops = train_flops_per_sample(widths) * n
    rc = {"layers": list(widths), "batch_size": batch, "samples": n, "epochs": RECIPE_EPOCHS,
          "train_flops_per_epoch": flops, "init_loss": ce_loss(np_forward(init, X[:EVAL_ROWS]), y[:EVAL_ROWS]),
          "results": {}, "speedup": {}}
    recipe_runs = [("fastmlp", lambda: bench_recipe_fastmlp(widths, batch, X, y, init, threads))]
    if torch is not None:
        recipe_runs.append(("torch", lambda: bench_recipe_torch(torch, widths, batch, X, y, init)))
    for fw, run in recipe_runs:
        try:
            t, params = run()
        except Exception as e:  # report, keep benchmarking
            rc["results"][fw] = {"error": f"{type(e).__name__}: {e}"}
            continue
        rc["results"][fw] = {"s_per_epoch": t, "samples_per_s": n / t, "gflops": flops / t / 1e9,
                             "share_of_peak": flops / t / 1e9 / peak,
                             "loss": ce_loss(np_forward(params, X[:EVAL_ROWS]), y[:EVAL_ROWS])}
        print(f"  recipe {fw:<8} {t:.4f} s/epoch")
    if "s_per_epoch" in rc["results"]["fastmlp"] and "s_per_epoch" in rc["results"].get("torch", {}):
        rc["speedup"]["torch"] = rc["results"]["torch"]["s_per_epoch"] / rc["results"]["fastmlp"]["s_per_epoch"]
    res["recipe"] = rc
    del X, y
    gc.collect()
    sections['recipe'] = time.perf_counter() - t_section
    t_section = time.perf_counter()
    # ---- predict throughput on the seed model
    widths = CONFIGS["seed"][0]
    n = PREDICT_ROWS
    X, _ = make_data(n, widths[0], seed=99)
    init = torch_default_init(widths, seed=43)
    flops = forward_flops_per_sample(widths) * n
    p = {"layers": list(widths), "rows": n, "flops": flops, "results": {}, "speedup": {}}
    model = fm_model(widths, init)
    model.eval()
    ref = np_forward(init, X)
    out = fm_predict(model, X, threads, threads_ctl)
    t, times = best_of(lambda: fm_predict(model, X, threads, threads_ctl), repeats + 1)
    p["results"]["fastmlp"] = {"s": t, "times": times,
                               "max_abs_diff_vs_numpy": float(np.max(np.abs(np.asarray(out) - ref)))}
    t, times = best_of(lambda: np_forward(init, X), repeats + 1)
    p["results"]["numpy"] = {"s": t, "times": times}
    if torch is not None:
        tm = torch.nn.Sequential(torch.nn.Linear(widths[0], widths[1]), torch.nn.ReLU(),
                                 torch.nn.Linear(widths[1], widths[2]))
        with torch.no_grad():
            for lin, (W, b) in zip([tm[0], tm[2]], init):
                lin.weight.copy_(torch.from_numpy(W))
                lin.bias.copy_(torch.from_numpy(b))
        tm.eval()
        Xt = torch.from_numpy(X)

        def torch_pred():
            with torch.inference_mode():
                return tm(Xt).numpy()
        torch_pred()
        t, times = best_of(torch_pred, repeats + 1)
        p["results"]["torch"] = {"s": t, "times": times}
    for fw, r in p["results"].items():
        r.update({"samples_per_s": n / r["s"], "gflops": flops / r["s"] / 1e9, "share_of_peak": flops / r["s"] / 1e9 / peak})
        if fw != "fastmlp":
            p["speedup"][fw] = r["s"] / p["results"]["fastmlp"]["s"]
    res["predict"] = p
    del X, ref, out
    gc.collect()

    sections['predict'] = time.perf_counter() - t_section
    t_section = time.perf_counter()
    # ---- threads scaling: large config, n_threads=1 vs 2
    if default_threads() >= 2:
        widths, batch, n_full, n_quick = CONFIGS["large"]
        n = n_quick if args.quick else n_full
        X, y = make_data(n, widths[0], seed=5)
        init = torch_default_init(widths, seed=44)
        s = {"config": "large", "samples": n}
        # Two models, epochs interleaved 1, 2, 1, 2, ... so that load from other processes hits both alike.
        runs = {}
        for nt in (1, 2):
            model = fm_model(widths, init)
            loss_fn = fm.CrossEntropyLoss()
            opt = fm.optim.SGD(model.parameters(), lr=LR)
            fm_fit_epoch(model, X[:4 * batch], y[:4 * batch], loss_fn, opt, batch, nt, 1, threads_ctl)  # warm-up
            runs[nt] = (model, loss_fn, opt, [])
        for r in range(repeats):
            for nt, (model, loss_fn, opt, times) in runs.items():
                gc.collect()
                t0 = time.perf_counter()
                fm_fit_epoch(model, X, y, loss_fn, opt, batch, nt, 2 + r, threads_ctl)
                times.append(time.perf_counter() - t0)
        for nt, run in runs.items():
            s[f"threads_{nt}_s"], s[f"threads_{nt}_times"] = min(run[3]), run[3]
        del runs
        s["speedup"] = s["threads_1_s"] / s["threads_2_s"]
        res["threads_scaling"] = s
        threads_ctl = Threads(threads)  # restore the global limit
        del X, y
        gc.collect()

    sections['threads_scaling'] = time.perf_counter() - t_section
    t_section = time.perf_counter()
    # ---- peak RSS growth of fit, in a child process
    res["rss"] = rss_growth(threads)
    sections["rss"] = time.perf_counter() - t_section
    res["meta"]["section_s"] = sections

    res["targets"] = check_targets(res)
    res["meta"]["wall_s"] = time.perf_counter() - t_start

    print()
    print_table(res)
    print()
    s = res.get("threads_scaling")
    if s:
        print(f"threads scaling (large, fastmlp): 1 thread {s['threads_1_s']:.4f} s, 2 threads "
              f"{s['threads_2_s']:.4f} s -> {s['speedup']:.2f}x")
    r = res["rss"]
    if "growth_bytes" in r:
        print(f"fit peak RSS growth on a {r['shape'][0]}x{r['shape'][1]} float32 array "
              f"({r['array_bytes'] / 2 ** 20:.0f} MiB): {r['growth_bytes'] / 2 ** 20:.1f} MiB "
              f"(limit 10% of the array + 64 MiB = {r['limit_bytes'] / 2 ** 20:.0f} MiB)"
              + f" [{r['method']}]")
    else:
        print(f"RSS child failed: {r.get('error')}")
    print(f"predict max |fastmlp - numpy| = {res['predict']['results']['fastmlp']['max_abs_diff_vs_numpy']:.2e}")
    print("\nissue 3 and issue 10 (resmlp) targets:")
    for tgt in res["targets"]:
        print(f"  [{'met' if tgt['met'] else 'MISSED'}] {tgt['target']}: {tgt['value']} (wanted {tgt['wanted']})")
    if env_warn:
        print("\nWARNING: OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE set: these numbers are not representative.")

    json_path = out_dir / "train_speed.json"
    json_path.write_text(json.dumps(res, indent=2))
    png = plot(res, out_dir / "train_speed.png")
    print(f"\nwrote {json_path}" + (f" and {png}" if png else "") + f" in {res['meta']['wall_s']:.1f} s ("
          + ", ".join(f"{k} {v:.1f}" for k, v in sections.items()) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
