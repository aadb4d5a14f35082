"""Seconds per epoch of fit with precision='float32' and 'bfloat16', against PyTorch float32 and
torch.autocast('cpu', dtype=torch.bfloat16), on the large (784-1024-1024-10, batch 512) and mid
(256-512-512-10, batch 128) nets (ReLU, SGD with momentum, random data). Short runs: see bench/README.md.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/bf16_speed.py [--samples 4096] [--repeats 3]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import fastmlp as fm
from _peers import torch_epoch, torch_mlp

CONFIGS = {"large": ([784, 1024, 1024, 10], 512), "mid": ([256, 512, 512, 10], 128)}


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
    a = p.parse_args()
    if not a.no_torch:
        import torch

        torch.set_num_threads(a.threads)
    print("AVX512_BF16:", fm._core.bf16_isa_available("avx512bf16"))
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
