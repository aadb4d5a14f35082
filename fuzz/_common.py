"""Shared helpers of the fuzz targets: resource limits, building hostile
arrays from fuzzer bytes, and recording findings without stopping the run.

A finding is an outcome the contract forbids (issue 5): an exception other
than the documented ones, a mutated input, a changed model after a failed
call, a result that differs from the contiguous-copy result, or a silently
accepted NaN/inf. Each distinct finding (exception type + message shape +
place) is written once to fuzz/findings/<target>/ with the input that
triggered it and a traceback; the run goes on. A native crash (segfault,
abort) stops the process and libFuzzer writes its crash-* file.
Set FASTMLP_FUZZ_STRICT=1 to raise on the first finding instead (to debug
one input: python fuzz/fuzz_x.py findings/x/<file>.bin).
"""
from __future__ import annotations

import hashlib
import os
import re
import resource
import sys
import traceback

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
STRICT = os.environ.get("FASTMLP_FUZZ_STRICT") == "1"


def limit_memory(gb: float = 6.0) -> None:
    """An address-space limit so a hostile size becomes a MemoryError, not a swapping machine."""
    if "asan" in os.environ.get("LD_PRELOAD", ""):
        return
    n = int(gb * (1 << 30))
    resource.setrlimit(resource.RLIMIT_AS, (n, n))


class Findings:
    def __init__(self, target: str) -> None:
        self.dir = os.path.join(os.environ.get("FASTMLP_FUZZ_FINDINGS", os.path.join(HERE, "findings")), target)
        os.makedirs(self.dir, exist_ok=True)
        self.seen = set(os.listdir(self.dir))

    def record(self, kind: str, detail: str, data: bytes) -> None:
        # one finding per exception kind and message shape: quoted text, numbers and hex words
        # normalised, and only the start of the message kept (zlib and zip errors vary in their tails)
        shape = re.sub(r"(['\"]).*?\1", "S", detail)
        shape = re.sub(r"\b(0x)?[0-9a-fA-F]*\d[0-9a-fA-F]*\b|\b[a-f]{4}\b", "N", shape)[:32]
        key = hashlib.sha1(f"{kind}|{shape}".encode()).hexdigest()[:12]
        name = f"{kind}-{key}"
        if STRICT:
            raise AssertionError(f"{kind}: {detail}")
        if name + ".txt" in self.seen:
            return
        self.seen.add(name + ".txt")
        with open(os.path.join(self.dir, name + ".bin"), "wb") as f:
            f.write(data)
        with open(os.path.join(self.dir, name + ".txt"), "w") as f:
            f.write(f"{kind}\n{detail}\n\n{traceback.format_exc()}")
        print(f"\n[finding] {kind}: {detail[:300]}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- hostile arrays from bytes

NUMERIC = ["<f8", "<f4", "<f2", ">f8", ">f4", "<g", "<i1", "<i2", "<i4", "<i8", "<u1", "<u2", "<u4", "<u8", ">i4"]
OTHER = ["?", "<c8", "<c16", "O", "<U3", "S4", "<M8[s]", "<m8[s]", "V8"]
LAYOUTS = ["c", "fortran", "reversed", "strided", "broadcast", "readonly", "unaligned", "list", "transposed"]


def layout(a: np.ndarray, kind: str):
    if a.ndim == 0 or kind == "c":
        return a
    if kind == "fortran":
        return np.asfortranarray(a)
    if kind == "reversed":
        flip = (slice(None, None, -1),) * a.ndim
        return np.ascontiguousarray(a[flip])[flip]
    if kind == "strided":
        big = np.zeros(tuple(2 * s + 1 for s in a.shape), a.dtype)
        sl = tuple(slice(1, None, 2) for _ in a.shape)
        big[sl] = a
        return big[sl]
    if kind == "broadcast":
        row = a[:1] if a.shape[0] else np.zeros((1,) + a.shape[1:], a.dtype)
        return np.broadcast_to(row, a.shape)
    if kind == "readonly":
        a = a.copy()
        a.setflags(write=False)
        return a
    if kind == "unaligned" and a.dtype.kind != "O":
        buf = np.zeros(a.nbytes + 1, np.uint8)
        out = np.ndarray(a.shape, a.dtype, buffer=buf, offset=1)
        out[...] = a
        return out
    if kind == "list" and a.size and a.dtype.kind in "fiub":
        return a.tolist()
    if kind == "transposed":
        return np.ascontiguousarray(a.T).T
    return a


def draw_shape(fdp, want=None, max_dim=6):
    """want: the shape a valid call needs; mostly kept, sometimes broken."""
    r = fdp.ConsumeIntInRange(0, 9)
    if want is not None and r < 7:
        return tuple(want)
    ndim = fdp.ConsumeIntInRange(0, 3)
    return tuple(fdp.ConsumeIntInRange(0, max_dim) for _ in range(ndim))


def draw_array(fdp, shape, numeric_bias=8, finite_bias=6):
    """An array of `shape`: usually a numeric dtype, with raw bit patterns
    (NaN, inf, subnormals, huge) or tame values; sometimes a dtype that is
    not real numbers."""
    n = int(np.prod(shape)) if shape else 1
    if fdp.ConsumeIntInRange(0, 9) < numeric_bias:
        dt = np.dtype(NUMERIC[fdp.ConsumeIntInRange(0, len(NUMERIC) - 1)])
        if fdp.ConsumeIntInRange(0, 9) < finite_bias:
            vals = np.array([fdp.ConsumeFloatInRange(-4.0, 4.0) for _ in range(min(n, 256))] + [0.0] * max(0, n - 256))
            a = vals.astype(dt) if dt.kind == "f" else np.round(vals).astype(dt)
            if dt.kind == "u":
                a = np.abs(np.round(vals)).astype(dt)
        else:
            raw = fdp.ConsumeBytes(n * dt.itemsize)
            raw += bytes(n * dt.itemsize - len(raw))
            a = np.frombuffer(raw, dtype=dt).copy()
        a = a.reshape(shape)
    else:
        dt = np.dtype(OTHER[fdp.ConsumeIntInRange(0, len(OTHER) - 1)])
        if dt.kind == "O":
            pool = [None, 1.5, "x", 2, [1], float("nan"), 10**30, b"ab", 1 + 2j]
            a = np.empty(n, object)
            for i in range(n):
                a[i] = pool[fdp.ConsumeIntInRange(0, len(pool) - 1)]
            a = a.reshape(shape)
        else:
            raw = fdp.ConsumeBytes(n * dt.itemsize)
            raw += bytes(n * dt.itemsize - len(raw))
            if dt.kind == "U":  # only valid code points: NumPy cannot build other str objects (SystemError)
                raw = (np.frombuffer(raw, "<u4") % 0xD800).astype("<u4").tobytes()
            a = np.frombuffer(raw, dtype=dt).copy().reshape(shape)
    return layout(a, LAYOUTS[fdp.ConsumeIntInRange(0, len(LAYOUTS) - 1)])


def snapshot(x):
    if isinstance(x, np.ndarray):
        if x.dtype.kind == "O":
            return ("O", x.shape, [repr(v) for v in x.ravel().tolist()])
        return (x.dtype.str, x.shape, np.array(x, copy=True).tobytes())
    if isinstance(x, (list, tuple)):
        return tuple(snapshot(v) for v in x)
    return repr(x)


def all_finite_numbers(x) -> bool:
    try:
        a = np.asarray(x)
    except Exception:  # noqa: BLE001
        return True
    if a.dtype.kind not in "fc":
        return True
    return bool(np.isfinite(a).all())


def instrument(prefixes=("fastmlp", "zipfile", "json", "numpy.lib.format", "numpy.lib._npyio_impl", "numpy.lib._format_impl")) -> int:
    """Coverage instrumentation of the loaded functions of these modules only.

    fastmlp is often installed in editable mode through a custom loader that
    atheris.instrument_imports cannot see through, and instrument_all takes
    ~15 s; this walks the loaded functions once (well under a second)."""
    import gc

    import atheris
    from atheris.instrument_bytecode import _is_instrumentable

    n = 0
    for obj in gc.get_objects():
        try:
            mod = getattr(obj, "__module__", None)
        except Exception:  # noqa: BLE001
            continue
        if isinstance(mod, str) and mod.startswith(tuple(prefixes)) and _is_instrumentable(obj):
            try:
                atheris.instrument_func(obj)
                n += 1
            except Exception:  # noqa: BLE001 - a function that cannot be patched stays uninstrumented
                pass
    return n
