"""Peer code shared by the benchmark scripts (train_speed.py, bf16_speed.py, export_speed.py): the PyTorch
MLP and its training loop (float32 or bfloat16 autocast), the bfloat16 product peak, the ONNX Runtime
session of a fastmlp model, and a per-call timer. Each peer is imported by the caller, only when installed."""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np


def best_per_call(fn: Callable[[], Any], calls: int, repeats: int) -> float:
    """Seconds per call of fn: the best of `repeats` timed loops of `calls` calls, after one warm-up call."""
    fn()
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best


def torch_mlp(torch: Any, widths, init=None) -> Any:
    """nn.Sequential(Linear, ReLU, ..., Linear) of the given widths; init: [(W (out, in), b)] copied in."""
    nn = torch.nn
    lins = [nn.Linear(i, o) for i, o in zip(widths[:-1], widths[1:])]
    if init is not None:
        with torch.no_grad():
            for lin, (W, b) in zip(lins, init):
                lin.weight.copy_(torch.from_numpy(np.asarray(W)))
                lin.bias.copy_(torch.from_numpy(np.asarray(b)))
    return nn.Sequential(*[m for lin in lins for m in (lin, nn.ReLU())][:-1])


def torch_epoch(torch: Any, model: Any, opt: Any, loss_fn: Any, batches, bf16: bool = False) -> None:
    """The usual zero_grad / forward / loss / backward / step loop over (x, y) tensor batches; bf16: the
    forward and loss under torch.autocast('cpu', dtype=torch.bfloat16), as PyTorch's mixed precision does."""
    for xb, yb in batches:
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()


def bf16_matmul_peak(torch: Any, n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of the best of `repeats` n x n x n bfloat16 products through torch.matmul (oneDNN on CPU)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(torch.bfloat16)
    b = torch.randn(n, n, generator=g).to(torch.bfloat16)
    out = torch.empty(n, n, dtype=torch.bfloat16)
    return 2 * n ** 3 / best_per_call(lambda: torch.matmul(a, b, out=out), 1, repeats) / 1e9


def ort_session(model: Any, threads: int | None = None) -> tuple[Any, str]:
    """(ONNX Runtime InferenceSession of model's fm.onnx export on the CPU provider, ORT version); threads:
    intra-op threads (None: ORT's default, every core). Raises ImportError without onnx/onnxruntime."""
    import onnxruntime as ort

    import fastmlp.onnx as fm_onnx

    so = ort.SessionOptions()
    if threads is not None:
        so.intra_op_num_threads = threads
    proto = fm_onnx.to_model(model, fm_onnx.DEFAULT_OPSET)
    return ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"]), ort.__version__
