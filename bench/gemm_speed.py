"""fastmlp's forward product (cpp/gemm.h) against OpenBLAS's sgemm/dgemm on the
layer shapes of bench/train_speed.py, and predict of the seed model.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/gemm_speed.py [--repeats 7]

Both sides include the bias add and are timed in alternation (one call of each per
repeat), so that outside load hits them alike; each is the best of --repeats. At one
thread the time is the calling thread's CPU time (time.thread_time), which a busy
machine disturbs less than wall time; at two threads it is wall time. The load
average is printed first: compare ratios of runs made at the same load."""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
from threadpoolctl import threadpool_info

import fastmlp as fm
from fastmlp import _core

# (in, out) of the seed and large configs' layers, and the batches each is timed at
SEED, LARGE = [(784, 256), (256, 10)], [(784, 1024), (1024, 1024), (1024, 10)]
CASES = [(np.float32, SEED, [1, 32, 256, 60000]), (np.float32, LARGE, [1, 32, 256, 512]),
         (np.float64, SEED, [1, 32, 256, 60000])]


def best(fn, repeats: int, clock=time.perf_counter) -> float:
    return best_pair(fn, fn, repeats, clock)[0]


def best_pair(f, g, repeats: int, clock=time.perf_counter) -> tuple[float, float]:
    """The best times of f and of g over `repeats` alternating calls (after one warm-up call each)."""
    f(), g()
    tf, tg = [], []
    for _ in range(repeats):
        for fn, ts in ((f, tf), (g, tg)):
            t = clock()
            fn()
            ts.append(clock() - t)
    return min(tf), min(tg)


def products(rng: np.random.Generator, repeats: int) -> None:
    blas = [(i.get("internal_api"), i.get("architecture")) for i in threadpool_info() if "scipy_openblas.so" in i["filepath"]]
    isa = next(i for i in ("avx512", "avx2", "reference") if _core.gemm_isa_available(i))
    print(f"fastmlp kernel: {isa}; fastmlp's OpenBLAS core: {_core.blas_core_name()} (threadpoolctl: {blas})")
    print("load average (1, 5, 15 min): " + ", ".join(f"{a:.1f}" for a in os.getloadavg()))
    print("times: thread CPU time at 1 thread, wall time at 2")
    print(f"{'dtype':8} {'batch':>6} {'in':>5} {'out':>5} {'thr':>3} {'fastmlp us':>11} {'OpenBLAS us':>11} {'OB/fm':>6}")
    for dtype, shapes, batches in CASES:
        f = _core.dense_forward32 if dtype == np.float32 else _core.dense_forward64
        for batch in batches:
            for n_in, n_out in shapes:
                x = rng.normal(size=(batch, n_in)).astype(dtype)
                w = rng.normal(size=(n_out, n_in)).astype(dtype)
                b = rng.normal(size=n_out).astype(dtype)
                reps = repeats if batch < 60000 else max(2, repeats // 3)
                for threads in (1, 2):
                    clock = time.thread_time if threads == 1 else time.perf_counter
                    ours, theirs = best_pair(lambda: f(x, w, b, "auto", threads),
                                             lambda: f(x, w, b, "openblas", threads), reps, clock)
                    print(f"{np.dtype(dtype).name:8} {batch:6} {n_in:5} {n_out:5} {threads:3} {ours * 1e6:11.1f} "
                          f"{theirs * 1e6:11.1f} {theirs / ours:6.2f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--predict-only", action="store_true", help="only time predict (e.g. on an older build)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    if not args.predict_only:
        products(rng, args.repeats)
    m = fm.Sequential(fm.Linear(784, 256), fm.ReLU(), fm.Linear(256, 10), seed=0).eval()
    print(f"fastmlp from {fm.__file__}")
    for rows in (1, 256, 60000):
        X = rng.normal(size=(rows, 784)).astype(np.float32)
        for threads in (1, 2):
            t = best(lambda: m.predict(X, n_threads=threads), args.repeats)
            print(f"predict seed model, {rows:5} rows, {threads} threads: {t * 1e6:10.1f} us", flush=True)


if __name__ == "__main__":
    main()
