"""Fuzz target: fm.load on arbitrary bytes (model-file loader).

Contract: a file is either loaded into a valid model (finite parameters,
usable by predict) or refused with ValueError. Anything else -- another
exception, a hang, a crash -- is a finding. Seeds: valid files written by
make_corpus.py; libFuzzer mutates them.
"""
from __future__ import annotations

import os
import sys

import atheris
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import Findings, instrument, limit_memory  # noqa: E402

import fastmlp as fm  # noqa: E402
import fastmlp.serialization  # noqa: E402,F401

instrument()

findings = Findings("load")
LIMIT_GB = 2.0  # a header may declare a huge model: fail its allocation fast
PATH = os.path.join("/dev/shm" if os.path.isdir("/dev/shm") else "/tmp", f"fastmlp-fuzz-load-{os.getpid()}.npz")


def TestOneInput(data: bytes) -> None:
    with open(PATH, "wb") as f:
        f.write(data)
    with_opt = bool(data[-1] & 1) if data else False
    try:
        r = fm.load(PATH, optimizer=with_opt)
    except ValueError as e:
        if not str(e):
            findings.record("empty-message", "ValueError without a message", data)
        return
    except Exception as e:  # noqa: BLE001 - every other exception is a finding
        findings.record(type(e).__name__, str(e), data)
        return
    m = r[0] if with_opt else r
    try:
        for name, p in m.named_parameters():
            if not np.isfinite(p.data).all():
                findings.record("non-finite-loaded", name, data)
        n_in = m.in_features if m.in_features is not None else 3
        if n_in <= 4096:
            out = m.predict(np.ones((2, n_in)))
            assert out.shape[0] == 2
    except Exception as e:  # noqa: BLE001
        findings.record("loaded-model-unusable-" + type(e).__name__, str(e), data)


if __name__ == "__main__":
    limit_memory(LIMIT_GB)
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
