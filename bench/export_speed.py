#!/usr/bin/env python
"""Predictions of the seed model (784-256-10, float32) through fastmlp, its ONNX export in ONNX Runtime and
its C export, side by side, for 1, 256 and 60000 rows.

Run with the OpenBLAS workaround variables unset, on an idle machine:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/export_speed.py

Each timed repeat makes enough calls to take a measurable time (1000 calls of one row, ...); the best repeat
of --repeats is reported as seconds per call. fastmlp's `model.predict` and ONNX Runtime use their default
threads (every core); the C file (`cc -O2 -std=c99`, loaded with ctypes) runs one row at a time on one
thread. The outputs are checked against model.predict. Writes bench/results/export_speed.json.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

import fastmlp as fm
from _peers import best_per_call, ort_session

HERE = Path(__file__).resolve().parent
ROWS = (1, 256, 60000)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out-dir", default=str(HERE / "results"))
    args = ap.parse_args(argv)
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if var in os.environ:
            print(f"warning: {var} is set: OpenBLAS may use a slower kernel (run with env -u {var})")

    model = fm.Sequential(fm.Linear(784, 256), fm.ReLU(), fm.Linear(256, 10), seed=0).eval()
    X = np.random.default_rng(0).standard_normal((max(ROWS), 784), dtype=np.float32)
    runners: dict = {"fastmlp": lambda x: model.predict(x)}
    work = Path(tempfile.mkdtemp(prefix="fastmlp-export-bench-"))
    try:
        try:
            sess, version = ort_session(model)
            runners[f"onnxruntime {version}"] = lambda x: sess.run(None, {"input": x})[0]
        except ImportError as e:
            print(f"onnxruntime skipped: {e}")
        cc = shutil.which("cc")
        if cc:
            fm.export_c(model, work / "seed.c", prefix="seed")
            subprocess.run([cc, "-O2", "-std=c99", "-shared", "-fPIC", str(work / "seed.c"), "-o",
                            str(work / "seed.so"), "-lm"], check=True)
            lib = ctypes.CDLL(str(work / "seed.so"))
            lib.seed_predict.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]

            def c_predict(x: np.ndarray) -> np.ndarray:
                y = np.empty((x.shape[0], 10), dtype=np.float32)
                lib.seed_predict(x.ctypes.data, x.shape[0], y.ctypes.data)
                return y

            runners["C (cc -O2 -std=c99)"] = c_predict
        else:
            print("C skipped: no cc")

        results: dict = {rows: {} for rows in ROWS}
        wants = {rows: model.predict(X[:rows]) for rows in ROWS}
        # one runner after the other, so that no runner's idle threads (ONNX Runtime's spin after a run)
        # compete with the next one's on the cores
        for name, run in runners.items():
            for rows in ROWS:
                x = np.ascontiguousarray(X[:rows])
                diff = float(np.abs(run(x) - wants[rows]).max())
                calls = max(1, 1000 // rows)
                s = best_per_call(lambda: run(x), calls, args.repeats if rows < 60000 else max(2, args.repeats // 2))
                results[rows][name] = {"s": s, "max_abs_diff_vs_predict": diff}
                print(f"{name:22s} {rows:6d} rows {s * 1e3:10.4f} ms  ({rows / s:12.0f} rows/s, "
                      f"max |diff| vs predict {diff:.1e})")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    meta = {"machine": platform.machine(), "processor": platform.processor(), "python": platform.python_version(),
            "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None, "repeats": args.repeats,
            "fastmlp": fm.__version__}
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "export_speed.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
