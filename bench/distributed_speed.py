#!/usr/bin/env python
"""Data-parallel training speed over MPI: the seed config of train_speed.py (784-256-10,
global batch 256, 60000 synthetic samples) trained with fit(comm=MPI.COMM_WORLD).

Run under mpiexec with the OpenBLAS workaround variables unset, once per rank count:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE mpiexec -n 1 python bench/distributed_speed.py
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE mpiexec -n 2 python bench/distributed_speed.py

Rank r trains on rows r, r + size, ... of the data. Reported (by rank 0): the best epoch
time of --repeats epochs (after one warm-up epoch), the time of one step's allreduces
alone (the gradient buffer, 4 x parameters bytes in float32, and the 9 statistics), timed
over --allreduce-calls calls, and the load average before and after. The cost model that
extends it to N machines is in bench/README.md. Appends a JSON record to --out.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from mpi4py import MPI

import fastmlp as fm
from fastmlp.distributed import N_STATS

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from train_speed import CONFIGS, LR, fm_model, make_data, train_flops_per_sample  # noqa: E402


def allreduce_time(comm, n, dtype, calls):
    """Seconds per step of the two reductions fit makes: n values of dtype, then N_STATS doubles."""
    grads, stats = np.zeros(n, dtype=dtype), np.zeros(N_STATS)
    for _ in range(5):  # warm-up
        comm.Allreduce(MPI.IN_PLACE, stats)
        comm.Allreduce(MPI.IN_PLACE, grads)
    comm.Barrier()
    t0 = time.perf_counter()
    for _ in range(calls):
        comm.Allreduce(MPI.IN_PLACE, stats)
        comm.Allreduce(MPI.IN_PLACE, grads)
    return comm.allreduce(time.perf_counter() - t0, op=MPI.MAX) / calls


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="timed epochs (best reported)")
    ap.add_argument("--samples", type=int, default=CONFIGS["seed"][2])
    ap.add_argument("--threads", type=int, default=None, help="n_threads per rank (default: cores / local ranks)")
    ap.add_argument("--allreduce-calls", type=int, default=200)
    ap.add_argument("--out", default=str(HERE / "results" / "distributed_speed.json"))
    args = ap.parse_args(argv)
    comm = MPI.COMM_WORLD
    rank, size = comm.rank, comm.size
    load_before = os.getloadavg()
    widths, batch = CONFIGS["seed"][0], CONFIGS["seed"][1]
    X, y = make_data(args.samples, widths[0], seed=sum(map(ord, "seed")))  # train_speed.py's seed data
    Xs, ys = np.ascontiguousarray(X[rank::size]), np.ascontiguousarray(y[rank::size])
    del X, y
    model = fm_model(widths)
    loss_fn = fm.CrossEntropyLoss()
    opt = fm.optim.SGD(model.parameters(), lr=LR)
    fit = dict(batch_size=batch, shuffle=True, verbose=0, n_threads=args.threads, comm=comm)
    model.fit(Xs, ys, loss_fn, opt, epochs=1, **fit)  # warm-up
    times = []
    for _ in range(args.repeats):
        comm.Barrier()
        times.append(model.fit(Xs, ys, loss_fn, opt, epochs=1, **fit).history["time"][0])
    steps = -(-min(comm.allgather(len(Xs))) // (batch // size))
    n_params = sum(p.data.size for p in model.parameters())
    t_ar = allreduce_time(comm, n_params, np.float32, args.allreduce_calls)
    load_after = os.getloadavg()
    if rank != 0:
        return None
    best = min(times)
    rec = {
        "ranks": size, "threads_per_rank": args.threads, "samples": args.samples, "batch": batch,
        "rows_per_rank_and_step": batch // size, "steps_per_epoch": steps, "params": n_params,
        "allreduce_bytes_per_step": 4 * n_params, "s_per_epoch": best, "epoch_times": times,
        "s_per_step": best / steps, "allreduce_s_per_step": t_ar,
        "train_flops_per_sample": train_flops_per_sample(widths),
        "gflops": train_flops_per_sample(widths) * args.samples / best / 1e9,
        "loss": model.evaluate(Xs[:2000], ys[:2000], loss_fn)["loss"],
        "load_before": load_before, "load_after": load_after,
        "mpi": MPI.Get_library_version().splitlines()[0], "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    print(f"{size} rank(s) x {args.threads or 'auto'} threads: {best:.4f} s/epoch ({steps} steps, "
          f"{1e3 * best / steps:.3f} ms/step, {rec['gflops']:.1f} GFLOP/s), allreduce {1e3 * t_ar:.3f} ms/step "
          f"({4 * n_params} bytes), load {load_before[0]:.2f} -> {load_after[0]:.2f}")
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    runs = json.loads(path.read_text()) if path.exists() else []
    path.write_text(json.dumps(runs + [rec], indent=1) + "\n")
    return rec


if __name__ == "__main__":
    main()
