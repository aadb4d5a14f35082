"""Fuzz target: model files that are valid archives with a mutated header
or mutated arrays (structured: the mutations get past the zip CRC check,
which stops most raw-byte mutations early).

Contract as fuzz_load.py: a valid model or ValueError; and a model that loads has
exactly the header's values and JSON types (seed, training, version, optimizer steps).
"""
from __future__ import annotations

import json
import os
import sys

import atheris
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import Findings, instrument, limit_memory  # noqa: E402

import fastmlp as fm  # noqa: E402
import fastmlp.serialization  # noqa: E402,F401

instrument()

findings = Findings("load_header")
LIMIT_GB = 2.0  # a header may declare a huge model: fail its allocation fast
TMP = "/dev/shm" if os.path.isdir("/dev/shm") else "/tmp"
PATH = os.path.join(TMP, f"fastmlp-fuzz-header-{os.getpid()}.npz")


def _bases():
    import tempfile

    import make_corpus

    d = tempfile.mkdtemp(dir=TMP)
    make_corpus.model_files(d)
    out = []
    for name in sorted(os.listdir(d)):
        with np.load(os.path.join(d, name)) as z:
            files = {k: z[k] for k in z.files}
        out.append((json.loads(files.pop("__fastmlp__").tobytes()), files))
        os.unlink(os.path.join(d, name))
    os.rmdir(d)
    return out


BASES = _bases()
ARRAY_DTYPES = ["<f4", "<f8", "<f2", "<i8", "<u1", "?", "<c16", ">f4", ">f8"]


def _value(fdp):
    k = fdp.ConsumeIntInRange(0, 12)
    if k == 0:
        return None
    if k == 1:
        return fdp.ConsumeBool()
    if k == 2:
        return fdp.ConsumeIntInRange(-3, 70000)
    if k == 3:
        return [2**31, 2**32, 2**40, 2**62, 2**63, 2**64, -2**63, 10**30][fdp.ConsumeIntInRange(0, 7)]
    if k == 4:
        return fdp.ConsumeRegularFloat()
    if k == 5:
        return [float("nan"), float("inf"), -float("inf"), 1e308, -0.0][fdp.ConsumeIntInRange(0, 4)]
    if k == 6:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 12))
    if k == 7:
        return [_value(fdp) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    if k == 8:
        return {fdp.ConsumeUnicodeNoSurrogates(4): _value(fdp) for _ in range(fdp.ConsumeIntInRange(0, 2))}
    if k == 9:
        return ["linear", "relu", "dropout", "leaky_relu", "softmax", "Adam", "SGD", "float16", "float64",
                "fastmlp", "Optimizer", "__class__", "param/0.weight"][fdp.ConsumeIntInRange(0, 12)]
    if k == 10:
        return {"kind": "linear", "in_features": fdp.ConsumeIntInRange(-1, 40000),
                "out_features": fdp.ConsumeIntInRange(-1, 40000), "bias": fdp.ConsumeBool()}
    if k == 11:
        return {"kind": ["dropout", "leaky_relu", "gelu", "softmax"][fdp.ConsumeIntInRange(0, 3)],
                "p": fdp.ConsumeRegularFloat(), "negative_slope": fdp.ConsumeRegularFloat()}
    return fdp.ConsumeIntInRange(-2**63, 2**63 - 1)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _mutate(fdp, header, files):
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        if fdp.ConsumeBool():
            paths = [p for p in _paths(header) if p]
            p = paths[fdp.ConsumeIntInRange(0, len(paths) - 1)]
            parent = header
            for k in p[:-1]:
                parent = parent[k]
            op = fdp.ConsumeIntInRange(0, 3)
            if op == 0 and isinstance(parent, dict):
                del parent[p[-1]]
            elif op == 1 and isinstance(parent, list):
                parent.insert(p[-1], _value(fdp))
            else:
                parent[p[-1]] = _value(fdp)
        elif files:
            keys = sorted(files)
            k = keys[fdp.ConsumeIntInRange(0, len(keys) - 1)]
            a = files[k]
            op = fdp.ConsumeIntInRange(0, 6)
            if op == 0 and a.size and a.dtype.kind in "fiub":
                b = a.astype(np.float64)
                b.flat[fdp.ConsumeIntInRange(0, a.size - 1)] = [np.nan, np.inf, -np.inf, 1e300][fdp.ConsumeIntInRange(0, 3)]
                files[k] = b.astype(a.dtype) if a.dtype.kind == "f" else b
            elif op == 1:
                shape = tuple(fdp.ConsumeIntInRange(0, 6) for _ in range(fdp.ConsumeIntInRange(0, 3)))
                files[k] = np.resize(a, shape)
            elif op == 2:
                files[k] = a.astype(ARRAY_DTYPES[fdp.ConsumeIntInRange(0, len(ARRAY_DTYPES) - 1)])
            elif op == 3:
                del files[k]
            elif op == 4:
                files[fdp.ConsumeUnicodeNoSurrogates(12) or "x"] = a
            elif op == 5:
                files[k] = np.asfortranarray(a.T) if a.ndim == 2 else a[::-1]
            else:
                files[k] = np.array([fdp.ConsumeUnicodeNoSurrogates(3)])


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    base = BASES[fdp.ConsumeIntInRange(0, len(BASES) - 1)]
    header, files = json.loads(json.dumps(base[0])), dict(base[1])
    with_opt = fdp.ConsumeBool()
    try:
        _mutate(fdp, header, files)
    except Exception:  # noqa: BLE001 - a mutation numpy cannot apply (str -> float, 0-d slicing): not a finding
        return
    try:
        blob = json.dumps(header).encode()
    except (TypeError, ValueError):
        return
    try:
        np.savez(PATH, __fastmlp__=np.frombuffer(blob, np.uint8), **{k: v for k, v in files.items() if k != "__fastmlp__"})
    except (TypeError, ValueError):  # a name numpy cannot store
        return
    try:
        r = fm.load(PATH, optimizer=with_opt)
    except ValueError as e:
        if not str(e):
            findings.record("empty-message", "ValueError without a message", data)
        return
    except Exception as e:  # noqa: BLE001
        findings.record(type(e).__name__, str(e), data)
        return
    m = r[0] if with_opt else r
    # what loads is exactly what the header says: no coercion of "false", "42", 1.9 or True
    exact = (type(header.get("seed")) is int and m.seed == header["seed"]
             and m.training is header.get("training", True) and type(header.get("version")) is int)
    if with_opt and r[1] is not None:
        steps = header["optimizer"]["steps"]
        exact = exact and all(type(s) is int and r[1]._core.get_step(i) == s for i, s in enumerate(steps))
    if not exact:
        findings.record("header-coerced", json.dumps(header)[:500], data)
    try:
        for name, p in m.named_parameters():
            if not np.isfinite(p.data).all():
                findings.record("non-finite-loaded", name, data)
        if with_opt and r[1] is not None:
            for st in r[1].state_dict()["state"].values():
                for v in st.values():
                    if isinstance(v, np.ndarray) and not np.isfinite(v).all():
                        findings.record("non-finite-optimizer-state", "", data)
        n_in = m.in_features if m.in_features is not None else 3
        if n_in <= 4096:
            m.predict(np.ones((2, n_in)))
    except Exception as e:  # noqa: BLE001
        findings.record("loaded-model-unusable-" + type(e).__name__, str(e), data)


if __name__ == "__main__":
    limit_memory(LIMIT_GB)
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
