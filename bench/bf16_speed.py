"""Seconds per epoch of fit with precision='float32' and 'bfloat16', against PyTorch float32 and
torch.autocast('cpu', dtype=torch.bfloat16), on the large (784-1024-1024-10, batch 512) and mid
(256-512-512-10, batch 128) nets (ReLU, SGD with momentum, random data). Short runs: see bench/README.md.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/bf16_speed.py [--samples 4096] [--repeats 3]

--products instead times fastmlp's bfloat16 products alone (cpp/gemm_bf16.h through _core.gemm_bf16: the
operands' conversion to bfloat16 and the kernel) on the layer shapes of those nets' training steps, in
GFLOP/s, next to torch.matmul of bfloat16 tensors of the same shapes (no conversion). A build without the
product forms (before the outer-product kernel) times every shape as c = x w^T.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import fastmlp as fm
from _peers import torch_epoch, torch_mlp

CONFIGS = {"large": ([784, 1024, 1024, 10], 512), "mid": ([256, 512, 512, 10], 128)}


def product_shapes(sizes, batch):
    """(what, M, N, K, form) of a training step's products: y = x w^T (B, out, in), dw = dy^T x (out, in, B),
    dx = dy w (B, in, out; not for the first layer)"""
    out = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        out.append((f"y{i + 1}", batch, n_out, n_in, "nt"))
        out.append((f"dw{i + 1}", n_out, n_in, batch, "tn"))
        if i:
            out.append((f"dx{i + 1}", batch, n_in, n_out, "nn"))
    return out


def products(repeats: int, threads: int, with_torch: bool) -> None:
    from fastmlp import _core

    rng = np.random.default_rng(0)
    torch = None
    if with_torch:
        import torch
    for name, (sizes, batch) in CONFIGS.items():
        total = {"fastmlp": 0.0, "torch": 0.0}
        flops = 0
        for what, M, N, K, form in product_shapes(sizes, batch):
            # operands as the form takes them: nt x (M, K) w (N, K); nn x (M, K) w (K, N); tn x (K, M) w (K, N)
            x = rng.normal(size=(K, M) if form == "tn" else (M, K)).astype(np.float32)
            w = rng.normal(size=(N, K) if form == "nt" else (K, N)).astype(np.float32)
            inner = 20

            def call():
                try:
                    _core.gemm_bf16(x, w, None, "auto", threads, form, inner)
                except TypeError:  # an older build: c = x w^T only, one product a call
                    xs, ws = (np.ascontiguousarray(x.T) if form == "tn" else x), (w if form == "nt" else np.ascontiguousarray(w.T))
                    for _ in range(inner):
                        _core.gemm_bf16(xs, ws, None, "auto", threads)
            t = best_of(repeats, lambda warmup: call()) / inner
            row = f"  {name} {what:4s} {M:5d} x {N:5d} x {K:5d} ({form}): fastmlp {t * 1e3:7.3f} ms {2 * M * N * K / t / 1e9:5.0f} GFLOP/s"
            total["fastmlp"] += t
            flops += 2 * M * N * K
            if torch is not None:
                a = torch.from_numpy(rng.normal(size=(M, K)).astype(np.float32)).bfloat16()
                b = torch.from_numpy(rng.normal(size=(K, N)).astype(np.float32)).bfloat16()

                def tcall():
                    for _ in range(inner):
                        torch.matmul(a, b)
                tt = best_of(repeats, lambda warmup: tcall()) / inner
                total["torch"] += tt
                row += f"; torch.matmul {tt * 1e3:7.3f} ms {2 * M * N * K / tt / 1e9:5.0f} GFLOP/s"
            print(row, flush=True)
        print(f"{name} step's products: fastmlp {total['fastmlp'] * 1e3:.3f} ms ({flops / total['fastmlp'] / 1e9:.0f} GFLOP/s)"
              + (f", torch.matmul {total['torch'] * 1e3:.3f} ms ({flops / total['torch'] / 1e9:.0f} GFLOP/s)"
                 if torch is not None else ""), flush=True)


def best_of(repeats: int, epoch) -> float:
    epoch(warmup=True)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        epoch(warmup=False)
        times.append(time.perf_counter() - t)
    return min(times)


def fastmlp_time(sizes, batch, X, y, precision, repeats, threads):
    layers: list = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [fm.Linear(a, b), fm.ReLU()]
    m = fm.Sequential(*layers[:-1], seed=0, dtype="float32")
    opt = fm.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)

    def epoch(warmup):
        n = batch if warmup else len(X)
        m.fit(X[:n], y[:n], fm.CrossEntropyLoss(), opt, batch_size=batch, verbose=0, n_threads=threads,
              precision=precision)
    return best_of(repeats, epoch)


def torch_time(sizes, batch, X, y, bf16, repeats):
    import torch

    m = torch_mlp(torch, sizes)
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    Xt, yt, lf = torch.from_numpy(X), torch.from_numpy(y), torch.nn.CrossEntropyLoss()
    batches = [(Xt[s:s + batch], yt[s:s + batch]) for s in range(0, len(X), batch)]

    def epoch(warmup):
        torch_epoch(torch, m, opt, lf, batches[:1] if warmup else batches, bf16)
    return best_of(repeats, epoch)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--products", action="store_true", help="time the bfloat16 products alone (GFLOP/s)")
    a = p.parse_args()
    if not a.no_torch:
        import torch

        torch.set_num_threads(a.threads)
    fm._core.blas_set_num_threads(a.threads)
    print("AVX512_BF16:", fm._core.bf16_isa_available("avx512bf16"), "| fastmlp's bfloat16 path:", fm._core.bf16_auto_path())
    if a.products:
        return products(a.repeats, a.threads, not a.no_torch)
    for name, (sizes, batch) in CONFIGS.items():
        rng = np.random.default_rng(0)
        X = rng.normal(size=(a.samples, sizes[0])).astype(np.float32)
        y = rng.integers(0, 10, size=a.samples)
        r = {f"fastmlp {p}": fastmlp_time(sizes, batch, X, y, p, a.repeats, a.threads) for p in ("float32", "bfloat16")}
        if not a.no_torch:
            r.update({f"torch {k}": torch_time(sizes, batch, X, y, k == "bf16 autocast", a.repeats)
                      for k in ("float32", "bf16 autocast")})
        print(f"{name} {'-'.join(map(str, sizes))}, batch {batch}, {a.samples} samples, s/epoch:",
              ", ".join(f"{k} {v:.3f}" for k, v in r.items()), flush=True)


if __name__ == "__main__":
    main()
