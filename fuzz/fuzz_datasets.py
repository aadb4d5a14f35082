"""Fuzz target: the data-file readers (fastmlp.datasets.load_csv, load_npz,
load_idx) on arbitrary bytes, plain or gzip-compressed.

Contract: a Dataset whose X is a finite 2-D float array (and y, if any, has
one entry per row), or DataError (a ValueError) naming the file; nothing else.
"""
from __future__ import annotations

import gzip
import os
import sys

import atheris
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import Findings, instrument, limit_memory  # noqa: E402

import fastmlp.datasets as ds  # noqa: E402

instrument(("fastmlp", "csv", "gzip", "zipfile", "numpy.lib.format", "numpy.lib._npyio_impl", "numpy.lib._format_impl"))

findings = Findings("datasets")
LIMIT_GB = 2.0
TMP = "/dev/shm" if os.path.isdir("/dev/shm") else "/tmp"
PATH = os.path.join(TMP, f"fastmlp-fuzz-data-{os.getpid()}")


def TestOneInput(data: bytes) -> None:
    if len(data) < 2:
        return
    which, flags, body = data[0] % 3, data[1], data[2:]
    if flags & 1:
        body = gzip.compress(body, compresslevel=1)
    with open(PATH, "wb") as f:
        f.write(body)
    try:
        if which == 0:
            d = ds.load_csv(PATH, target=[-1, 0, None][(flags >> 1) % 3], delimiter=",;\t"[(flags >> 3) % 3])
        elif which == 1:
            d = ds.load_npz(PATH)
        else:
            d = ds.load_idx(PATH)
    except ValueError as e:
        if not str(e):
            findings.record("empty-message", "ValueError without a message", data)
        return
    except Exception as e:  # noqa: BLE001
        findings.record(f"{['csv', 'npz', 'idx'][which]}-{type(e).__name__}", str(e), data)
        return
    X, y = d.X, d.y
    if not (isinstance(X, np.ndarray) and X.ndim == 2 and X.dtype.kind == "f" and np.isfinite(X).all()):
        findings.record("bad-X", f"{type(X).__name__} {getattr(X, 'shape', '')} {getattr(X, 'dtype', '')}", data)
    if y is not None and len(y) != len(X):
        findings.record("y-length", f"{len(y)} != {len(X)}", data)


if __name__ == "__main__":
    limit_memory(LIMIT_GB)
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
