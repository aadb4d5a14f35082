#!/usr/bin/env python
"""Training and inference speed of fastmlp vs a NumPy loop, PyTorch CPU (float32 and bfloat16 autocast),
JAX, scikit-learn and ONNX Runtime (predict).

Run with the OpenBLAS workaround variables unset:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/train_speed.py

Everything runs in one process (the RSS measurement in a child process), on
synthetic float32 data from a seeded NumPy RNG (the neighbours and dropout-threads rows: the shipped
digits). Each peer runs only when installed. See bench/README.md.
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
if str(HERE) not in sys.path:  # bench/_peers.py, also when `fastmlp bench` loads this file by its path
    sys.path.insert(0, str(HERE))
from _peers import best_per_call, bf16_matmul_peak, ort_session, torch_epoch, torch_mlp  # noqa: E402
LR = 0.01
N_CLASSES = 10
EVAL_ROWS = 2000

# name: (layer widths, batch size, samples in full mode, samples in --quick mode)
CONFIGS = {
    "seed": ((784, 256, 10), 256, 60000, 8192),
    "small": ((64, 32, 10), 32, 20000, 4000),
    "large": ((784, 1024, 1024, 10), 512, 20000, 2048),
    "mid": ((256, 512, 512, 10), 128, 20000, 1024),
}
BF16_CONFIGS = ("large", "mid")  # also trained with fastmlp precision='bfloat16' and torch bfloat16 autocast
# issue 10's ResNet-style MLP: Linear 256->512, 3 residual blocks of Linear(512, 512)-BatchNorm1d-ReLU-
# Dropout(0.1), Linear 512->10; batch 256; samples in full mode, in --quick mode
RESMLP = {"in": 256, "width": 512, "blocks": 3, "p": 0.1, "out": 10, "batch": 256, "samples": 60000, "quick": 8192}
SECTION_CONFIGS = ("resmlp", "neighbours", "dropout-threads", "accuracy")  # --configs names that are sections, not CONFIGS rows
# the digits-like net of the neighbours and dropout-threads rows: 64-128-64-10 (ReLU), Adam(lr 1e-3), batch 200
# (scikit-learn's MLPClassifier defaults), epochs in full mode, in --quick mode
DIGITS = {"hidden": (128, 64), "batch": 200, "epochs": 60, "quick_epochs": 5, "dropout": 0.2}
BURST_S, QUIET_S = 0.3, 1.0
# accuracy: the synthetic task (seed net, make_data's teacher labels): train rows full / --quick, test rows, epochs
SYNTH = {"rows": 60000, "quick": 8192, "test": 10000, "epochs": 3, "quick_epochs": 1}  # neighbours: NumPy 512x512 products for BURST_S before fit, or sleep QUIET_S
PREDICT_ROWS = 60000
LATENCY_ROWS = (1, 256, 60000)  # predict latency of the seed model: calls per timed repeat, full / --quick
LATENCY_CALLS = {1: (2000, 300), 256: (50, 10), 60000: (1, 1)}
RSS_SHAPE = (60000, 784)
FRAMEWORKS = ("fastmlp", "numpy", "torch", "sklearn", "jax", "torch-bf16", "onnxruntime")
# every row of a training config, in table order (--frameworks jax gives jax-step and jax-scan)
COLORS = {"fastmlp": "C0", "fastmlp-bf16": "C6", "numpy": "C1", "torch": "C2", "torch-bf16": "C7",
          "sklearn": "C3", "jax-step": "C4", "jax-scan": "C5"}
BF16_ROWS = ("fastmlp-bf16", "torch-bf16")

# Targets of issue 3 (ratios from one run on the 2-core machine).
TARGETS = {
    "seed": {"numpy": 1.3, "torch": 2.5, "share": 0.70},
    "small": {"numpy": 5.0, "torch": 20.0},
    "large": {"numpy": 1.1, "torch": 2.0, "share": 0.80},
    "predict": {"share": 0.75},
    # issue 10: resmlp at least 2x faster than PyTorch, BatchNorm costing at most 15% over the same net without it
    "resmlp": {"torch": 2.0, "norm_overhead": 0.15},
    # issue 11: the recipe within 10% of the plain SGD seed row's time, and at least 2x faster than PyTorch's recipe
    "recipe": {"torch": 2.0, "over_seed": 0.10},
    "threads_speedup": 1.7,
}
# Targets of issue 12 (ratios from one run on the 2-core machine).
TARGETS12 = {
    "fastest": 1.0,  # float32, seed / small / mid / large: faster than every float32 peer
    "jax-scan": {"seed": 1.3, "mid": 1.3, "small": 1.3},
    "seed_share": 0.80,
    "bf16": {"large": {"torch-bf16": 1.25, "fastmlp": 1.5, "bf16_share": 0.70}, "mid": {"torch-bf16": 1.25}},
    "dropout_threads": 1.6,
    "neighbours": 1.15,  # at most this ratio of the quiet time
    "predict_vs_ort": 1.3,  # at each of LATENCY_ROWS
    "accuracy_points": 0.5,  # bfloat16 training's test accuracy at most this many percentage points below float32's
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


def best_interleaved(fns, repeats):
    """best_of for several functions run in turn (fns[0], fns[1], ..., repeated), so that a
    noisy moment of the machine hits all of them alike: [(best time, all times)] in fns' order."""
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            gc.collect()
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return [(min(ts), ts) for ts in times]


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


def fm_fit_epoch(model, X, y, loss_fn, opt, batch, n_threads, seed, threads_ctl, precision="float32"):
    if HAS_FIT:
        model.fit(X, y, loss_fn, opt, epochs=1, batch_size=batch, shuffle=True, verbose=0, n_threads=n_threads,
                  **({} if precision == "float32" else {"precision": precision}))
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


def fm_timed_epochs(model, batch, X, y, Xw, yw, repeats, n_threads, threads_ctl, precision="float32"):
    """SGD(lr=LR) epochs of model on (X, y) after a warm-up on (Xw, yw): (best time, all times)."""
    loss_fn = fm.CrossEntropyLoss()
    opt = fm.optim.SGD(model.parameters(), lr=LR)
    fm_fit_epoch(model, Xw, yw, loss_fn, opt, batch, n_threads, 1, threads_ctl, precision)  # warm-up
    counter = iter(range(2, 10 ** 6))
    return best_of(lambda: fm_fit_epoch(model, X, y, loss_fn, opt, batch, n_threads, next(counter),
                                        threads_ctl, precision), repeats)


def bench_fastmlp(widths, batch, X, y, Xw, yw, init, repeats, n_threads, threads_ctl, precision="float32"):
    model = fm_model(widths, init)
    t, times = fm_timed_epochs(model, batch, X, y, Xw, yw, repeats, n_threads, threads_ctl, precision)
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
def fastmlp_bf16_peak(n, repeats, threads):
    """GFLOP/s of the best of `repeats` n x n x n bfloat16 products through fastmlp's kernel (the operands'
    conversion included) on `threads` threads."""
    x = np.random.default_rng(0).normal(size=(n, n)).astype(np.float32)
    return 2 * n ** 3 / best_per_call(lambda: fm._core.gemm_bf16(x, x, None, "auto", threads), 1, repeats) / 1e9


def bench_torch(torch, widths, batch, X, y, Xw, yw, init, repeats, bf16=False):
    model = torch_mlp(torch, widths, init)
    t, times = torch_timed_epochs(torch, model, batch, X, y, Xw, yw, repeats, bf16)
    params = [(lin.weight.detach().numpy().copy(), lin.bias.detach().numpy().copy())
              for lin in model if isinstance(lin, torch.nn.Linear)]
    return t, times, params


def torch_timed_epochs(torch, model, batch, X, y, Xw, yw, repeats, bf16=False):
    """The usual zero_grad / forward / loss / backward / SGD(lr=LR) step loop over pre-shuffled batches
    (bf16: under torch.autocast('cpu', dtype=torch.bfloat16)), after a warm-up epoch on (Xw, yw):
    (best time, all times)."""
    loss_fn = torch.nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    model.train()

    def batches(Xa, ya, seed):  # pre-shuffled tensors, sliced into views (outside the timed epoch)
        perm = np.random.default_rng(seed).permutation(len(Xa))
        Xt, yt = torch.from_numpy(Xa[perm]), torch.from_numpy(ya[perm])
        return [(Xt[s:s + batch], yt[s:s + batch]) for s in range(0, len(Xa), batch)]

    torch_epoch(torch, model, opt, loss_fn, batches(Xw, yw, 1), bf16)
    times = []
    for r in range(repeats):
        bl = batches(X, y, 2 + r)
        gc.collect()
        t0 = time.perf_counter()
        torch_epoch(torch, model, opt, loss_fn, bl, bf16)
        times.append(time.perf_counter() - t0)
        del bl
    return min(times), times


# --------------------------------------------------------------------------- jax
def bench_jax(jax, widths, batch, X, y, init, repeats, scan):
    """The same net and SGD(lr=LR) in JAX (float32), from the same weights, over batches pre-shuffled outside
    the timed epoch. scan=False: a jit-compiled step called per batch from Python; scan=True: the whole epoch
    one jit-compiled function (lax.scan over the full batches, then the step on the last partial batch).
    Compiled before timing, on the timed shapes. (best time, all times, [(W (out, in), b)])."""
    jnp = jax.numpy

    def loss(params, xb, yb):
        h = xb
        for k, (W, b) in enumerate(params):
            h = h @ W + b  # W is (in, out)
            if k < len(params) - 1:
                h = jax.nn.relu(h)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(h), yb[:, None], axis=1))

    def step(params, xb, yb):
        return jax.tree_util.tree_map(lambda p, g: p - LR * g, params, jax.grad(loss)(params, xb, yb))

    def epoch(params, xs, ys, xr, yr):  # xs is (batches, batch, in); xr, yr: the last partial batch
        params, _ = jax.lax.scan(lambda p, b: (step(p, *b), None), params, (xs, ys))
        return step(params, xr, yr) if xr.shape[0] else params

    step_jit, epoch_jit = jax.jit(step), jax.jit(epoch)
    n, full = len(X), len(X) // batch * batch

    def data(seed):  # device arrays of the shuffled epoch
        perm = np.random.default_rng(seed).permutation(n)
        Xp, yp = X[perm], y[perm]
        if scan:
            return (jnp.asarray(Xp[:full].reshape(-1, batch, X.shape[1])), jnp.asarray(yp[:full].reshape(-1, batch)),
                    jnp.asarray(Xp[full:]), jnp.asarray(yp[full:]))
        return [(jnp.asarray(Xp[s:s + batch]), jnp.asarray(yp[s:s + batch])) for s in range(0, n, batch)]

    def run(params, d):
        if scan:
            return epoch_jit(params, *d)
        for xb, yb in d:
            params = step_jit(params, xb, yb)
        return params

    params = [(jnp.asarray(np.ascontiguousarray(W.T)), jnp.asarray(b)) for W, b in init]
    d = data(1)
    jax.block_until_ready(run(params, d if scan else [d[0], d[-1]]))  # compile every timed shape
    times = []
    for r in range(repeats):
        d = data(2 + r)
        gc.collect()
        t0 = time.perf_counter()
        params = jax.block_until_ready(run(params, d))
        times.append(time.perf_counter() - t0)
        del d
    return min(times), times, [(np.asarray(W).T, np.asarray(b)) for W, b in params]


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

    # the net with and without its BatchNorm layers, epochs taken in turn (the overhead is their ratio)
    nonorm = fm_resmlp(norm=False)
    nonorm.load_state_dict({k: init[k] for k in nonorm.state_dict()})  # its keys are the Linears' of the full net
    loss_fn, pair = fm.CrossEntropyLoss(), []
    for m in (model, nonorm):
        opt = fm.optim.SGD(m.parameters(), lr=LR)
        fm_fit_epoch(m, Xw, yw, loss_fn, opt, batch, n_threads, 1, threads_ctl)  # warm-up
        pair.append(lambda m=m, opt=opt: fm_fit_epoch(m, X, y, loss_fn, opt, batch, n_threads, 2, threads_ctl))
    timed = dict(zip(("fastmlp", "fastmlp_nonorm"), best_interleaved(pair, repeats)))

    def fm_run(name, m):
        t, times = timed[name]
        return t, times, ce_loss(m.predict(ev_X), ev_y)

    def torch_run():
        tm = torch_resmlp(torch)
        tm.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in init.items()})
        t, times = torch_timed_epochs(torch, tm, batch, X, y, Xw, yw, repeats)
        tm.eval()
        with torch.no_grad():
            return t, times, ce_loss(tm(torch.from_numpy(ev_X)).numpy(), ev_y)

    runs = [("fastmlp", lambda: fm_run("fastmlp", model))]
    if torch is not None and "torch" in frameworks:
        runs.append(("torch", torch_run))
    runs.append(("fastmlp_nonorm", lambda: fm_run("fastmlp_nonorm", nonorm)))
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


def bench_recipe_fastmlp(widths, batch, X, y, init, n_threads, epochs):
    """Best epoch of the recipe, and best epoch of plain SGD(lr=LR) on the same net taken in
    turn with it (the recipe's target is its time over plain SGD's): (recipe s, SGD s, params)."""
    from fastmlp.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

    model, plain = fm_model(widths, init), fm_model(widths, init)
    opt = fm.optim.AdamW(model.parameters(), **RECIPE_OPT)
    sgd = fm.optim.SGD(plain.parameters(), lr=LR)
    steps = -(-len(X) // batch)
    sched = SequentialLR(opt, [LinearLR(opt, start_factor=0.01, total_iters=steps),
                               CosineAnnealingLR(opt, T_max=steps * (epochs - 1))], milestones=[steps])
    loss_fn = fm.CrossEntropyLoss()

    def recipe_epoch():
        model.fit(X, y, loss_fn, opt, epochs=1, batch_size=batch, verbose=0, n_threads=n_threads,
                  scheduler=sched, scheduler_interval="batch", clip_grad_norm=1.0)

    def sgd_epoch():
        plain.fit(X, y, loss_fn, sgd, epochs=1, batch_size=batch, verbose=0, n_threads=n_threads)

    (t, _), (t_sgd, _) = best_interleaved([recipe_epoch, sgd_epoch], epochs)
    return t, t_sgd, fm_params(model)


def bench_recipe_torch(torch, widths, batch, X, y, init, epochs):
    nn = torch.nn
    model = torch_mlp(torch, widths, init)
    lins = [m for m in model if isinstance(m, nn.Linear)]
    opt = torch.optim.AdamW(model.parameters(), **RECIPE_OPT)
    steps = -(-len(X) // batch)
    sl = torch.optim.lr_scheduler
    sched = sl.SequentialLR(opt, [sl.LinearLR(opt, start_factor=0.01, total_iters=steps),
                                  sl.CosineAnnealingLR(opt, T_max=steps * (epochs - 1))], milestones=[steps])
    loss_fn = nn.CrossEntropyLoss()
    times = []
    for epoch in range(epochs):
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
        times.append(time.perf_counter() - t0)
    return min(times), [(lin.weight.detach().numpy().copy(), lin.bias.detach().numpy().copy()) for lin in lins]


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


# --------------------------------------------------------------------------- the digits-like rows
def digits_data():
    d = fm.datasets.load_digits()
    return d.X / np.float32(16.0), d.y  # pixels 0..16 scaled to 0..1


def digits_net(widths, dropout=0.0):
    """A new ReLU net of these widths (seed 0: the same weights every time), Dropout(dropout) after each hidden ReLU."""
    layers = []
    for i, o in zip(widths[:-2], widths[1:-1]):
        layers += [fm.Linear(i, o), fm.ReLU(), *([fm.Dropout(dropout)] if dropout else [])]
    return fm.Sequential(*layers, fm.Linear(widths[-2], widths[-1]), seed=0, dtype="float32")


def adam_fit(model, X, y, epochs, batch, n_threads, precision="float32"):
    """Seconds of model.fit with Adam(lr 1e-3) (scikit-learn's MLPClassifier defaults)."""
    opt = fm.optim.Adam(model.parameters(), lr=1e-3)
    gc.collect()
    t0 = time.perf_counter()
    model.fit(X, y, fm.CrossEntropyLoss(), opt, epochs=epochs, batch_size=batch, shuffle=True, verbose=0,
              n_threads=n_threads, **({} if precision == "float32" else {"precision": precision}))
    return time.perf_counter() - t0


def digits_fit_time(X, y, epochs, n_threads, dropout=0.0):
    """Seconds of one fit of a new digits-like net (DIGITS; Dropout(dropout) after each hidden ReLU)."""
    model = digits_net((X.shape[1], *DIGITS["hidden"], N_CLASSES), dropout)
    return adam_fit(model, X, y, epochs, DIGITS["batch"], n_threads)


def bench_accuracy(tasks, n_threads):
    """Held-out accuracy of the same net (same initial weights, same shuffles) trained with precision='float32'
    and 'bfloat16', each predicting in its training precision. tasks: {name: (widths, batch, epochs, X, y,
    X_test, y_test)}."""
    out = {}
    for name, (widths, batch, epochs, X, y, Xt, yt) in tasks.items():
        r = out[name] = {"layers": list(widths), "train_rows": len(X), "test_rows": len(Xt), "epochs": epochs}
        for precision in ("float32", "bfloat16"):
            model = digits_net(widths)
            r[f"{precision}_fit_s"] = adam_fit(model, X, y, epochs, batch, n_threads, precision)
            pred = np.argmax(model.predict(Xt, n_threads=n_threads, **(
                {} if precision == "float32" else {"precision": precision})), axis=1)
            r[f"{precision}_accuracy"] = float(np.mean(pred == yt))
        r["drop_points"] = 100 * (r["float32_accuracy"] - r["bfloat16_accuracy"])  # percentage points lost
        print(f"  accuracy {name}: float32 {100 * r['float32_accuracy']:.2f}%, bfloat16 "
              f"{100 * r['bfloat16_accuracy']:.2f}%")
    return out


def numpy_burst(seconds):
    """NumPy (float64) 512x512 matrix products for `seconds`, on NumPy's own BLAS threads."""
    a = np.random.default_rng(0).standard_normal((512, 512))
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        np.dot(a, a)


def bench_neighbours(X, y, epochs, repeats, n_threads):
    """The digits-like fit right after BURST_S of NumPy products vs after a quiet QUIET_S sleep, interleaved."""
    digits_fit_time(X, y, 2, n_threads)  # warm-up
    times = {"quiet": [], "after_numpy": []}
    for _ in range(repeats):
        time.sleep(QUIET_S)
        times["quiet"].append(digits_fit_time(X, y, epochs, n_threads))
        numpy_burst(BURST_S)
        times["after_numpy"].append(digits_fit_time(X, y, epochs, n_threads))
    q, b = min(times["quiet"]), min(times["after_numpy"])
    return {"epochs": epochs, "burst_s": BURST_S, "quiet_s": QUIET_S, "quiet_s_best": q, "after_numpy_s_best": b,
            "quiet_times": times["quiet"], "after_numpy_times": times["after_numpy"], "ratio": b / q}


def bench_dropout_threads(X, y, epochs, repeats):
    """The digits-like net with Dropout(DIGITS['dropout']), fit with n_threads=1 and 2, interleaved."""
    p = DIGITS["dropout"]
    digits_fit_time(X, y, 2, 2, p)  # warm-up
    times = {1: [], 2: []}
    for _ in range(repeats):
        for nt in times:
            times[nt].append(digits_fit_time(X, y, epochs, nt, p))
    return {"epochs": epochs, "dropout": p, "threads_1_s": min(times[1]), "threads_2_s": min(times[2]),
            "threads_1_times": times[1], "threads_2_times": times[2], "speedup": min(times[1]) / min(times[2])}


# --------------------------------------------------------------------------- predict latency
def bench_latency(model, tm, torch, sess, X, threads, quick, repeats):
    """Microseconds per call of the seed model's predict at LATENCY_ROWS rows: fastmlp model.predict, ONNX
    Runtime (sess, None: skipped) and torch (tm under inference_mode; None: skipped), one runner after the
    other (no runner's idle threads spin while the next one runs), best of `repeats` loops of calls."""
    runners = {"fastmlp": lambda x: model.predict(x, n_threads=threads)}
    if sess is not None:
        runners["onnxruntime"] = lambda x: sess.run(None, {"input": x})[0]
    if tm is not None:
        def torch_pred(x):
            with torch.inference_mode():
                return tm(torch.from_numpy(x)).numpy()
        runners["torch"] = torch_pred
    inputs = {rows: np.ascontiguousarray(X[:rows]) for rows in LATENCY_ROWS}
    want = {rows: model.predict(x, n_threads=threads) for rows, x in inputs.items()}
    out = {"rows": list(LATENCY_ROWS), "results": {}, "speedup": {}}
    for fw, run in runners.items():
        r = out["results"][fw] = {}
        for rows, x in inputs.items():
            calls = LATENCY_CALLS[rows][1 if quick else 0]
            s = best_per_call(lambda: run(x), calls, repeats if rows < 60000 else 1 if quick else max(2, repeats // 2))
            r[str(rows)] = {"us_per_call": s * 1e6, "calls": calls,
                            "max_abs_diff_vs_fastmlp": float(np.max(np.abs(run(x) - want[rows])))}
            print(f"  predict {rows:>5} rows {fw:<12} {s * 1e6:12.1f} us/call")
    f = out["results"]["fastmlp"]
    for fw, r in out["results"].items():
        if fw != "fastmlp":
            out["speedup"][fw] = {k: v["us_per_call"] / f[k]["us_per_call"] for k, v in r.items()}
    return out


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
    hdr = f"{'config':<8} {'framework':<12} {'s/epoch':>9} {'samples/s':>10} {'GFLOP/s':>8} {'%peak':>6} " \
          f"{'fastmlp x':>10} {'loss':>7}"
    print(hdr)
    print("-" * len(hdr))
    rows = list(res["configs"].items()) + [(k, res[k]) for k in ("recipe", "resmlp") if res.get(k)]
    for name, c in rows:
        for fw, r in c["results"].items():
            label = {"fastmlp_nonorm": "no-norm"}.get(fw, fw)  # resmlp: fastmlp on the network without BatchNorm1d
            if "error" in r:
                print(f"{name:<8} {label:<12} error: {r['error'][:60]}")
                continue
            sp = f"{c['speedup'][fw]:.2f}x" if fw in c["speedup"] else "-"
            print(f"{name:<8} {label:<12} {r['s_per_epoch']:>9.4f} {fmt_rate(r['samples_per_s']):>10} "
                  f"{r['gflops']:>8.1f} {100 * r['gflops'] / peak:>5.0f}% {sp:>10} {r['loss']:>7.4f}")
    p = res.get("predict")
    if p:
        for fw, r in p["results"].items():
            sp = "-" if fw == "fastmlp" else f"{p['speedup'][fw]:.2f}x"
            print(f"{'predict':<8} {fw:<12} {r['s']:>9.4f} {fmt_rate(r['samples_per_s']):>10} "
                  f"{r['gflops']:>8.1f} {100 * r['gflops'] / peak:>5.0f}% {sp:>10} {'':>7}")
    print(f"(sgemm peak {peak:.0f} GFLOP/s; 'fastmlp x' = peer time / fastmlp time; "
          f"loss = cross-entropy of the trained model on {EVAL_ROWS} training rows; torch-bf16 is compared with "
          "fastmlp-bf16, the other rows with fastmlp float32; resmlp no-norm = fastmlp on the same network without "
          "its BatchNorm1d layers)")


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
    rc = res.get("recipe")
    if rc and "torch" in rc["speedup"]:
        v, want = rc["speedup"]["torch"], TARGETS["recipe"]["torch"]
        lines.append(("recipe: vs torch's recipe", f"{v:.2f}x", f">= {want}x", v >= want))
    if rc and "s_per_epoch" in rc["results"]["fastmlp"] and "sgd_s_per_epoch" in rc:
        v = rc["results"]["fastmlp"]["s_per_epoch"] / rc["sgd_s_per_epoch"] - 1.0
        want = TARGETS["recipe"]["over_seed"]
        lines.append(("recipe: time over plain SGD on the seed net, epochs in turn", f"{100 * v:+.0f}%", f"<= +{100 * want:.0f}%",
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
    out = [{"issue": 10 if a.startswith("resmlp") else 11 if a.startswith("recipe") else 3, "target": a, "value": b, "wanted": c, "met": d}
           for a, b, c, d in lines]
    return out + [{"issue": 12, "target": a, "value": b, "wanted": c, "met": d} for a, b, c, d in targets12(res)]


def targets12(res):
    """Issue 12's table: (target, value, wanted, met) for every row this run measured."""
    T, lines = TARGETS12, []

    def ratio(label, v, want, at_most=False):
        lines.append((label, f"{v:.2f}x", f"{'<=' if at_most else '>='} {want}x", v <= want if at_most else v >= want))

    for name in ("seed", "large", "mid", "small"):
        c = res["configs"].get(name)
        if not c or "s_per_epoch" not in c["results"].get("fastmlp", {}):
            continue
        peers = {fw: v for fw, v in c["speedup"].items() if fw not in BF16_ROWS}
        if peers:
            fw = min(peers, key=peers.get)
            ratio(f"{name}, float32: vs the fastest peer ({fw})", peers[fw], T["fastest"])
        if "jax-scan" in c["speedup"] and name in T["jax-scan"]:
            ratio(f"{name}, float32: vs jax-scan", c["speedup"]["jax-scan"], T["jax-scan"][name])
        if name == "seed":
            v = c["results"]["fastmlp"]["share_of_peak"]
            lines.append(("seed, float32: share of sgemm peak", f"{100 * v:.0f}%", f">= {100 * T['seed_share']:.0f}%",
                          v >= T["seed_share"]))
        want = T["bf16"].get(name, {})
        if "torch-bf16" in c["speedup"] and "torch-bf16" in want:
            ratio(f"{name}, bfloat16: vs torch-bf16", c["speedup"]["torch-bf16"], want["torch-bf16"])
        if "bf16_speedup" in c and "fastmlp" in want:
            ratio(f"{name}, bfloat16: vs fastmlp float32", c["bf16_speedup"], want["fastmlp"])
        v = c["results"].get("fastmlp-bf16", {}).get("share_of_bf16_peak")
        if v is not None and "bf16_share" in want:
            lines.append((f"{name}, bfloat16: share of the bfloat16 product peak", f"{100 * v:.0f}%",
                          f">= {100 * want['bf16_share']:.0f}%", v >= want["bf16_share"]))
    d = res.get("dropout_threads")
    if d:
        ratio("digits-like, dropout 0.2: 2 threads vs 1", d["speedup"], T["dropout_threads"])
    nb = res.get("neighbours")
    if nb:
        ratio("neighbours: fit after NumPy products / after a quiet second", nb["ratio"], T["neighbours"], at_most=True)
    lat = res.get("predict", {}).get("latency", {})
    for rows, v in lat.get("speedup", {}).get("onnxruntime", {}).items():
        ratio(f"predict, seed model, {rows} rows: vs ONNX Runtime", v, T["predict_vs_ort"])
    for name, a in res.get("accuracy", {}).items():
        lines.append((f"accuracy, {name}: float32 - bfloat16 test accuracy", f"{a['drop_points']:+.2f} points",
                      f"<= {T['accuracy_points']} points", a["drop_points"] <= T["accuracy_points"]))
    return lines


def print_issue12(res):
    """Issue 12's rows that are not in the epoch table: bfloat16 shares, predict latency, the digits-like rows."""
    bp = res.get("bf16_peak")
    for name in BF16_CONFIGS:
        c = res["configs"].get(name, {})
        r = c.get("results", {}).get("fastmlp-bf16", {})
        if "s_per_epoch" in r and bp:
            want = TARGETS12["bf16"][name].get("fastmlp")
            print(f"{name} bfloat16 (fastmlp): {r['gflops']:.0f} GFLOP/s = {100 * r['share_of_bf16_peak']:.0f}% of the "
                  f"bfloat16 product peak ({bp['peak_gflops']:.0f} GFLOP/s, 2048^3); float32 time / "
                  f"bfloat16 time {c.get('bf16_speedup', float('nan')):.2f}x" + (f" (target >= {want}x)" if want else ""))
    lat = res.get("predict", {}).get("latency")
    if lat:
        fws = list(lat["results"])
        print("predict latency, seed model, us per call: " + ", ".join(
            f"{rows} rows: " + " / ".join(f"{fw} {lat['results'][fw][str(rows)]['us_per_call']:.1f}" for fw in fws)
            for rows in lat["rows"]))
        for fw, sp in lat["speedup"].items():
            want = f" (target >= {TARGETS12['predict_vs_ort']}x)" if fw == "onnxruntime" else ""
            print(f"  {fw} time / fastmlp time: " + ", ".join(f"{k} rows {v:.2f}x" for k, v in sp.items()) + want)
    nb = res.get("neighbours")
    if nb:
        print(f"neighbours (digits-like, {nb['epochs']} epochs): after {nb['burst_s']} s of NumPy products "
              f"{1e3 * nb['after_numpy_s_best']:.1f} ms, after {nb['quiet_s']} s quiet {1e3 * nb['quiet_s_best']:.1f} ms "
              f"-> {nb['ratio']:.2f}x (target <= {TARGETS12['neighbours']}x)")
    for name, a in res.get("accuracy", {}).items():
        print(f"accuracy {name} ({a['train_rows']} training rows, {a['epochs']} epochs, {a['test_rows']} test rows): "
              f"float32 {100 * a['float32_accuracy']:.2f}%, bfloat16 {100 * a['bfloat16_accuracy']:.2f}% -> "
              f"{a['drop_points']:+.2f} points lost (target <= {TARGETS12['accuracy_points']})")
    d = res.get("dropout_threads")
    if d:
        print(f"dropout-threads (digits-like, Dropout({d['dropout']}), {d['epochs']} epochs): 1 thread "
              f"{1e3 * d['threads_1_s']:.1f} ms, 2 threads {1e3 * d['threads_2_s']:.1f} ms -> {d['speedup']:.2f}x "
              f"(target >= {TARGETS12['dropout_threads']}x)")


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
    peers = [fw for fw in COLORS if any(fw in res["configs"][n]["speedup"] for n in names)]
    w = 0.8 / max(1, len(peers))
    for k, fw in enumerate(peers):
        vals = [res["configs"][n]["speedup"].get(fw, 0.0) for n in names]
        bars = ax1.bar(np.arange(len(names)) + k * w - 0.4 + w / 2, vals, w, label=f"vs {fw}", color=COLORS[fw])
        ax1.bar_label(bars, fmt="%.1f", fontsize=8)
    ax1.axhline(1.0, color="k", lw=0.8)
    ax1.set_yscale("log")  # ratios from well below 1 to hundreds
    ax1.set_xticks(np.arange(len(names)), names)
    ax1.set_ylabel("fastmlp speed-up (x)")
    ax1.set_title("Training: fastmlp speed-up vs peers (one epoch)")
    ax1.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=3)
    groups = names + (["predict"] if res.get("predict") else [])
    fws = [fw for fw in COLORS if any(
        fw in (res["configs"][g]["results"] if g in res["configs"] else res["predict"]["results"]) for g in groups)]
    w = 0.8 / max(1, len(fws))
    for k, fw in enumerate(fws):
        vals = []
        for g in groups:
            r = (res["configs"][g]["results"] if g in res["configs"] else res["predict"]["results"]).get(fw, {})
            vals.append(r.get("gflops", 0.0))
        ax2.bar(np.arange(len(groups)) + k * w - 0.4 + w / 2, vals, w, label=fw, color=COLORS[fw])
    ax2.axhline(res["sgemm"]["peak_gflops"], color="r", ls="--", lw=1, label="sgemm peak")
    if res.get("bf16_peak"):
        ax2.axhline(res["bf16_peak"]["peak_gflops"], color="m", ls=":", lw=1, label="bf16 product peak")
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
    all_configs = ",".join([*CONFIGS, *SECTION_CONFIGS])
    ap.add_argument("--configs", default=all_configs, help="comma-separated subset of " + all_configs)
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
    if "torch" in frameworks or "torch-bf16" in frameworks:
        try:
            import torch
            torch.set_num_threads(threads)
        except ImportError:
            print("PyTorch is not installed: skipping torch, torch-bf16 and the bfloat16 product peak")
    torch32 = torch if "torch" in frameworks else None  # the float32 torch rows
    jax = None
    if "jax" in frameworks:
        try:
            import jax
            import jax.numpy  # noqa: F401
        except ImportError:
            print("JAX is not installed: skipping jax-step and jax-scan")
    has_ort = False
    if "onnxruntime" in frameworks:
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
            has_ort = True
        except ImportError as e:
            print(f"ONNX Runtime (or onnx) is not installed: skipping its predict rows ({e})")
    has_sklearn = False
    if "sklearn" in frameworks:
        try:
            import sklearn.neural_network  # noqa: F401
            has_sklearn = True
        except ImportError:
            print("scikit-learn is not installed: skipping it")
    threads_ctl = Threads(threads)

    meta = {"python": sys.version.split()[0], "numpy": np.__version__, "fastmlp": fm.__version__,
            "torch": getattr(torch, "__version__", None), "jax": getattr(jax, "__version__", None),
            "onnxruntime": __import__("onnxruntime").__version__ if has_ort else None,
            "cpu": cpu_name(), "threads": threads,
            "quick": args.quick, "repeats": repeats, "lr": LR, "fastmlp_fit_api": HAS_FIT and HAS_PREDICT,
            "openblas_env_set": env_warn, "blas": blas_info(), "command": " ".join(["python"] + sys.argv)}  # no machine paths in results
    if has_sklearn:
        import sklearn
        meta["sklearn"] = sklearn.__version__
    print(f"fastmlp {fm.__version__} | numpy {np.__version__} | torch {meta['torch']} | jax {meta['jax']} | "
          f"onnxruntime {meta['onnxruntime']} | sklearn {meta.get('sklearn')} | {meta['cpu']} | {threads} threads | "
          f"repeats {repeats}"
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
          f"fastmlp Linear forward {res['sgemm']['fastmlp_linear_gflops']:.0f} GFLOP/s -> peak {peak:.0f} GFLOP/s")
    bf16_hardware = bool(fm._core.bf16_isa_available("avx512bf16"))
    res["meta"]["avx512bf16"] = bf16_hardware
    # fastmlp's bfloat16 path here (gemm_bf16.h): AMX tiles, VDPBF16PS, or the emulation on AVX-512F, AVX2 or
    # scalar registers
    bf16_path = fm._core.bf16_auto_path()
    res["meta"]["fastmlp_bf16_path"] = bf16_path
    # rows timed on 2 batches and scaled: the scalar emulations (fastmlp's twin, oneDNN's fallback)
    scaled_rows = {r for r, slow in (("fastmlp-bf16", bf16_path == "emulation"), ("torch-bf16", not bf16_hardware)) if slow}
    if scaled_rows:
        print(f"this CPU has no AVX512_BF16: {', '.join(sorted(scaled_rows))} run(s) emulated, timed on 2 batches and scaled")
    # the bfloat16 product peak: the faster of PyTorch's (oneDNN) and fastmlp's own 2048^3 bfloat16 product
    # on this CPU. Without AVX512_BF16 oneDNN falls back to about 1 GFLOP/s: torch is then timed once at 1024^3.
    n_torch = 2048 if bf16_hardware else 1024
    fast_bf16 = fastmlp_bf16_peak(2048, 3 if args.quick else 10, threads)
    res["bf16_peak"] = {"fastmlp_bf16_gflops": fast_bf16, "matrix": 2048, "avx512bf16": bf16_hardware}
    if torch is not None:
        res["bf16_peak"]["torch_bf16_gflops"] = bf16_matmul_peak(
            torch, n_torch, (3 if args.quick else 10) if bf16_hardware else 1)
        res["bf16_peak"]["torch_matrix"] = n_torch
    bf16_peak = max(fast_bf16, res["bf16_peak"].get("torch_bf16_gflops", 0.0))
    res["bf16_peak"]["peak_gflops"] = bf16_peak
    print(f"bfloat16 products: fastmlp 2048^3 {fast_bf16:.0f} GFLOP/s ({bf16_path})" + (
        f", torch.matmul {n_torch}^3 {res['bf16_peak']['torch_bf16_gflops']:.0f} GFLOP/s" if torch is not None else "")
        + f" -> bfloat16 peak {bf16_peak:.0f} GFLOP/s")
    print()

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
        bf16 = name in BF16_CONFIGS
        # a scalar emulation (fastmlp's twin without AVX-512 or AVX2, oneDNN's fallback without AVX512_BF16)
        # is 100x slower and no measure of the library's bf16 speed: warmed up and timed once on 2 batches,
        # the time scaled to the epoch (marked "emulated")
        def bf16_data(row):  # the runner's (X, y, Xw, yw, init, repeats)
            if row not in scaled_rows:
                return X, y, Xw, yw, init, repeats
            return X[:2 * batch], y[:2 * batch], X[:2 * batch], y[:2 * batch], init, 1
        # (row, --frameworks name, runner)
        runners = [("fastmlp", "fastmlp", lambda: bench_fastmlp(widths, batch, X, y, Xw, yw, init, repeats, threads,
                                                                threads_ctl))]
        if bf16:
            runners.append(("fastmlp-bf16", "fastmlp", lambda: bench_fastmlp(
                widths, batch, *bf16_data("fastmlp-bf16"), threads, threads_ctl, precision="bfloat16")))
        runners.append(("numpy", "numpy", lambda: bench_numpy(widths, batch, X, y, Xw, yw, init, repeats)))
        if torch is not None:
            runners.append(("torch", "torch", lambda: bench_torch(torch, widths, batch, X, y, Xw, yw, init, repeats)))
            if bf16:
                runners.append(("torch-bf16", "torch-bf16", lambda: bench_torch(
                    torch, widths, batch, *bf16_data("torch-bf16"), bf16=True)))
        if has_sklearn:
            runners.append(("sklearn", "sklearn", lambda: bench_sklearn(widths, batch, X, y, Xw, yw, init, repeats)))
        if jax is not None:
            runners += [(f"jax-{mode}", "jax", lambda scan=(mode == "scan"): bench_jax(jax, widths, batch, X, y, init,
                                                                                       repeats, scan))
                        for mode in ("step", "scan")]
        for fw, framework, run in runners:
            if framework not in frameworks:
                continue
            t_row = time.perf_counter()
            try:
                t, times, params = run()
                scale = n / (2 * batch) if fw in scaled_rows else 1.0
                t, times = t * scale, [v * scale for v in times]
            except Exception as e:  # report, keep benchmarking the others
                c["results"][fw] = {"error": f"{type(e).__name__}: {e}"}
                print(f"  {name}/{fw}: error {type(e).__name__}: {e}")
                continue
            gfl = flops / t / 1e9
            c["results"][fw] = {"s_per_epoch": t, "times": times, "samples_per_s": n / t, "gflops": gfl,
                                "share_of_peak": gfl / peak, "loss": ce_loss(np_forward(params, ev_X), ev_y),
                                "wall_s": time.perf_counter() - t_row}  # with warm-up and compilation
            if fw in BF16_ROWS and bf16_peak:
                c["results"][fw]["share_of_bf16_peak"] = gfl / bf16_peak
            if fw in scaled_rows:
                c["results"][fw]["emulated"] = True
                c["results"][fw]["timed_rows"] = 2 * batch
            print(f"  {name:<6} {fw:<12} {t:.4f} s/epoch" + (
                f" (emulated: {2 * batch} rows timed, scaled)" if fw in scaled_rows else ""))
        # speedup: the peer's time over fastmlp's at the same precision (torch-bf16 over fastmlp-bf16)
        for fw, r in c["results"].items():
            ref = c["results"].get("fastmlp-bf16" if fw == "torch-bf16" else "fastmlp", {})
            if not fw.startswith("fastmlp") and "s_per_epoch" in r and "s_per_epoch" in ref:
                c["speedup"][fw] = r["s_per_epoch"] / ref["s_per_epoch"]
        if "s_per_epoch" in c["results"].get("fastmlp-bf16", {}) and "s_per_epoch" in c["results"]["fastmlp"]:
            c["bf16_speedup"] = c["results"]["fastmlp"]["s_per_epoch"] / c["results"]["fastmlp-bf16"]["s_per_epoch"]
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
    rc["epochs"] = epochs = max(RECIPE_EPOCHS, repeats)

    def fm_recipe():
        t, rc["sgd_s_per_epoch"], params = bench_recipe_fastmlp(widths, batch, X, y, init, threads, epochs)
        return t, params

    recipe_runs = [("fastmlp", fm_recipe)]
    if torch32 is not None:
        recipe_runs.append(("torch", lambda: bench_recipe_torch(torch, widths, batch, X, y, init, epochs)))
    for fw, run in recipe_runs:
        try:
            t, params = run()
        except Exception as e:  # report, keep benchmarking
            rc["results"][fw] = {"error": f"{type(e).__name__}: {e}"}
            continue
        rc["results"][fw] = {"s_per_epoch": t, "samples_per_s": n / t, "gflops": flops / t / 1e9,
                             "share_of_peak": flops / t / 1e9 / peak,
                             "loss": ce_loss(np_forward(params, X[:EVAL_ROWS]), y[:EVAL_ROWS])}
        print(f"  recipe {fw:<8} {t:.4f} s/epoch" + (f" (plain SGD in turn with it: {rc['sgd_s_per_epoch']:.4f})"
                                                      if fw == "fastmlp" else ""))
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
    tm = None
    if torch32 is not None:
        tm = torch_mlp(torch, widths, init).eval()
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
    sess = None
    if has_ort:
        try:
            sess, _ = ort_session(model, threads)
        except Exception as e:  # report, keep benchmarking the others
            print(f"  ONNX Runtime session failed: {type(e).__name__}: {e}")
    p["latency"] = bench_latency(model, tm, torch, sess, X, threads, args.quick, max(3, repeats + 2))
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
    # ---- the digits-like rows: fit right after NumPy products vs after a quiet second; dropout at 1 vs 2 threads
    if "neighbours" in configs or "dropout-threads" in configs:
        Xd, yd = digits_data()
        epochs = DIGITS["quick_epochs"] if args.quick else DIGITS["epochs"]
        if "neighbours" in configs:
            res["neighbours"] = bench_neighbours(Xd, yd, epochs, repeats, threads)
            nb = res["neighbours"]
            print(f"  neighbours: fit after {BURST_S} s of NumPy products {1e3 * nb['after_numpy_s_best']:.1f} ms, "
                  f"after {QUIET_S} s quiet {1e3 * nb['quiet_s_best']:.1f} ms")
        if "dropout-threads" in configs:
            if default_threads() >= 2:
                res["dropout_threads"] = bench_dropout_threads(Xd, yd, epochs, repeats)
                d = res["dropout_threads"]
                print(f"  dropout-threads: 1 thread {1e3 * d['threads_1_s']:.1f} ms, 2 threads "
                      f"{1e3 * d['threads_2_s']:.1f} ms")
            else:
                print("  dropout-threads skipped: this process may use only one core")
        sections["digits"] = time.perf_counter() - t_section
        t_section = time.perf_counter()
    if "accuracy" in configs:  # ---- bfloat16 training against float32: the digits and a synthetic 60000-row task
        Xd, yd = digits_data()
        perm = np.random.default_rng(0).permutation(len(Xd))
        cut = len(Xd) * 3 // 4  # 75/25 split, as scikit-learn's train_test_split
        n = SYNTH["quick"] if args.quick else SYNTH["rows"]
        Xs, ys = make_data(n + SYNTH["test"], CONFIGS["seed"][0][0], seed=12)
        tasks = {"digits": ((Xd.shape[1], *DIGITS["hidden"], N_CLASSES), DIGITS["batch"],
                            DIGITS["quick_epochs"] if args.quick else DIGITS["epochs"],
                            Xd[perm[:cut]], yd[perm[:cut]], Xd[perm[cut:]], yd[perm[cut:]]),
                 "synthetic": (CONFIGS["seed"][0], CONFIGS["seed"][1], SYNTH["quick_epochs" if args.quick else "epochs"],
                               Xs[:n], ys[:n], Xs[n:], ys[n:])}
        res["accuracy"] = bench_accuracy(tasks, threads)
        del Xs, ys, tasks
        gc.collect()
        sections["accuracy"] = time.perf_counter() - t_section
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
    print_issue12(res)
    print("\nissue 3, issue 10 (resmlp), issue 11 (recipe) and issue 12 targets:")
    for tgt in res["targets"]:
        print(f"  [{'met' if tgt['met'] else 'MISSED'}] issue {tgt['issue']}, {tgt['target']}: {tgt['value']} "
              f"(wanted {tgt['wanted']})")
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
