"""Hostile calls, each in its own child interpreter: a segfault, an abort or
a runaway allocation fails one test instead of killing the run (issue 5).

Every child runs under an address-space limit (RLIMIT_AS, except under
AddressSanitizer, which needs its shadow memory), so "allocate it and see"
becomes a MemoryError instead of swapping the machine. A child reports its
outcome as one JSON line; a missing line or a negative exit code (a signal)
is a crash. The children run two at a time.

Complements tests/test_errors.py (constructor arguments and giant layer
sizes): here the array entry points, the low-level C++ hooks, model files,
threads and faults.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

GB = 1 << 30
UNDER_ASAN = "asan" in os.environ.get("LD_PRELOAD", "")

PRELUDE = """
import json, os, resource, sys
if {limit} and "asan" not in os.environ.get("LD_PRELOAD", ""):
    resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
import numpy as np
import fastmlp as fm

def report(**kw):
    print("@@RESULT@@" + json.dumps(kw), flush=True)

def net(dtype="float64", seed=0):
    return fm.Sequential(fm.Linear(3, 4), fm.ReLU(), fm.Linear(4, 2), seed=seed, dtype=dtype)

def weights(m):
    return m._core.flat_params().copy()

try:
{body}
except BaseException as e:
    report(outcome="raised", type=type(e).__name__, bases=[c.__name__ for c in type(e).__mro__], message=str(e)[:2000])
    sys.exit(0)
report(outcome="ok")
"""


class Case:
    def __init__(self, id, body, raises=None, match=None, limit=6 * GB, timeout=180):
        """raises: exception names that are acceptable (None: must complete);
        match: regex the message must contain (for the first name only if a dict)."""
        self.id, self.body, self.raises, self.match, self.limit, self.timeout = id, body, raises, match, limit, timeout


def run_child(body, limit=6 * GB, timeout=180, env=None):
    src = PRELUDE.format(limit=int(limit), body=textwrap.indent(textwrap.dedent(body).strip("\n"), "    "))
    for attempt in range(3):
        try:
            r = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True, timeout=timeout,
                               env=None if env is None else {**os.environ, **env})
            break
        except subprocess.TimeoutExpired as e:
            return {"outcome": "timeout", "output": str(e.stdout)[-2000:]}
        except OSError:  # the spawn itself failed (seen under ASan: EFAULT from vfork): try again
            if attempt == 2:
                raise
            time.sleep(1)
    res = None
    for line in r.stdout.splitlines():
        if line.startswith("@@RESULT@@"):
            res = json.loads(line[len("@@RESULT@@"):])
    if res is None or r.returncode != 0:
        return {"outcome": "crash", "returncode": r.returncode, "output": (r.stdout + r.stderr)[-3000:]}
    res["stderr"] = r.stderr[-3000:]
    return res


def check(case, res):
    assert res["outcome"] not in ("crash", "timeout"), f"{case.id}: the child {res['outcome']}ed:\n{res}"
    if case.raises is None:
        assert res["outcome"] == "ok", f"{case.id}: expected completion, got {res}"
        return
    assert res["outcome"] == "raised", f"{case.id}: expected one of {case.raises}, but nothing was raised"
    allowed = case.raises if isinstance(case.raises, (list, tuple)) else [case.raises]
    # a subclass of an allowed exception (e.g. datasets.DataError, a ValueError) is allowed
    assert set(res.get("bases", [res["type"]])) & set(allowed), \
        f"{case.id}: expected one of {allowed}, got {res['type']}: {res['message']}"
    if case.match and "MemoryError" not in res.get("bases", [res["type"]]):
        import re
        assert re.search(case.match, res["message"]), \
            f"{case.id}: unclear message for {res['type']}: {res['message']!r} (expected /{case.match}/)"


VALUE = ["ValueError"]
VALUE_OR_MEMORY = ["ValueError", "MemoryError"]
CLEAR = ["ValueError", "TypeError"]

CASES = [
    # ------------------------------------------------------------------ sizes whose products overflow
    Case("linear_2^62x4_wraps_to_0", "fm.Sequential(fm.Linear(2**62, 4))", VALUE_OR_MEMORY, "overflow|size|large"),
    Case("linear_4x2^62", "fm.Sequential(fm.Linear(4, 2**62), dtype='float64')", VALUE_OR_MEMORY, "overflow|size|large"),
    Case("linear_2^32x2^32_wraps_to_0", "fm.Sequential(fm.Linear(2**32, 2**32))", VALUE_OR_MEMORY, "overflow|size|large"),
    Case("linear_2^61x8_wraps_to_0", "fm.Sequential(fm.Linear(2**61, 8), dtype='float64')", VALUE_OR_MEMORY,
         "overflow|size|large"),
    Case("two_layers_sum_overflows",
         "fm.Sequential(fm.Linear(2**31, 2**31), fm.ReLU(), fm.Linear(2**31, 2**31), dtype='float64')",
         VALUE_OR_MEMORY, "overflow|size|large"),
    Case("linear_fits_arithmetic_not_memory", "fm.Sequential(fm.Linear(2**31, 2))", VALUE_OR_MEMORY, "memory|size|large"),
    Case("forward_broadcast_2^33_rows",
         "m = net('float32'); m(np.broadcast_to(np.ones(3, np.float32), (2**33, 3)))", VALUE_OR_MEMORY, "memory|size"),
    Case("predict_broadcast_2^40_rows", "net().predict(np.broadcast_to(np.ones(3), (2**40, 3)))",
         VALUE_OR_MEMORY, "memory|size"),
    Case("fit_broadcast_2^40_rows", """
        m = net()
        m.fit(np.broadcast_to(np.ones(3), (2**40, 3)), np.broadcast_to(np.ones(2), (2**40, 2)), fm.MSELoss(),
              fm.optim.SGD(m.parameters(), lr=0.1), verbose=0)
        """, VALUE_OR_MEMORY, "memory|size"),
    Case("evaluate_broadcast_2^40_rows", """
        net().evaluate(np.broadcast_to(np.ones(3), (2**40, 3)), np.zeros(2**40, np.int8), fm.CrossEntropyLoss())
        """, VALUE_OR_MEMORY, "memory|size"),
    Case("activation_model_2^33_columns",
         "fm.Sequential(fm.Tanh(), dtype='float32')(np.broadcast_to(np.ones(1, np.float32), (1, 2**33)))",
         VALUE_OR_MEMORY, "memory|size"),
    Case("loss_on_broadcast_2^31_square",
         "fm.MSELoss()(np.broadcast_to(np.ones(1), (2**31, 2**31)), np.broadcast_to(np.ones(1), (2**31, 2**31)))",
         VALUE_OR_MEMORY, "memory|size"),
    Case("output_2^40_elements",
         "m = fm.Sequential(fm.Linear(1, 2**20), dtype='float32'); m.predict(np.ones((2**20, 1), np.float32))",
         VALUE_OR_MEMORY, "memory|size"),
    Case("fit_workspace_bad_alloc_while_gil_released", """
        # 2**24 classes: parameters fit, the batch's activations (256 GB) do not: the allocation fails
        # inside the C++ epoch (GIL released); it must come back as MemoryError and change nothing
        m = fm.Sequential(fm.Linear(1, 2**24), dtype='float32', seed=0)
        opt = fm.optim.SGD(m.parameters(), lr=0.1)
        before = weights(m)
        try:
            m.fit(np.ones((4096, 1), np.float32), np.zeros(4096, np.int64), fm.CrossEntropyLoss(), opt,
                  batch_size=4096, verbose=0)
            raise AssertionError("no MemoryError")
        except MemoryError:
            pass
        assert np.array_equal(weights(m), before)
        assert opt.state_dict()["state"][0]["step"] == 0
        out = m.predict(np.ones((2, 1), np.float32))   # still usable
        assert out.shape == (2, 2**24) and np.isfinite(out).all()
        """, None, limit=3 * GB),
    # ------------------------------------------------------------------ integer arguments beyond C's range
    Case("predict_batch_size_2^63", "net().predict(np.ones((5, 3)), batch_size=2**63)", CLEAR, "batch_size"),
    Case("fit_batch_size_2^63", """
        m = net(); m.fit(np.ones((5, 3)), np.ones((5, 2)), fm.MSELoss(), fm.optim.SGD(m.parameters()), batch_size=2**63,
                         verbose=0)
        """, CLEAR, "batch_size"),
    Case("predict_n_threads_2^40", "net().predict(np.ones((5, 3)), n_threads=2**40)", CLEAR, "n_threads"),
    Case("predict_n_threads_million_is_correct_or_refused", """
        m = net(); X = np.random.default_rng(0).normal(size=(50, 3))
        try:
            out = m.predict(X, n_threads=10**6)
        except ValueError as e:
            assert "n_threads" in str(e), e
        else:
            assert np.array_equal(out, m.predict(X, n_threads=1))
        """),
    Case("cross_entropy_ignore_index_2^70", """
        fm.CrossEntropyLoss(ignore_index=2**70)(np.ones((2, 3)), np.array([0, 1]))
        """, CLEAR, "ignore_index"),
    Case("uint64_label_wrapping_to_ignore_index", """
        # 2**64 - 100 is not -100: it is out of range and must not be silently ignored
        fm.CrossEntropyLoss()(np.ones((2, 3)), np.array([0, 2**64 - 100], dtype=np.uint64))
        """, VALUE, "out of bounds|out of range"),
    Case("uint64_label_2^63", """
        m = net(); m.fit(np.ones((2, 3)), np.array([0, 2**63], dtype=np.uint64), fm.CrossEntropyLoss(),
                         fm.optim.SGD(m.parameters()), verbose=0)
        """, VALUE, r"out of bounds|out of range"),
    Case("float_label_1e20_is_reported_as_itself", """
        fm.CrossEntropyLoss()(np.ones((2, 3)), np.array([0.0, 1e20]))
        """, VALUE, r"^(?!.*-9223372036854775808).*(1e\+20|100000000000000000000|whole|out of bounds)"),
    # ------------------------------------------------------------------ scalars are not samples
    Case("scalar_forward_1_feature", "fm.Sequential(fm.Linear(1, 2))(3.0)", VALUE, "0-D|scalar|dimension|2-D"),
    Case("scalar_forward_3_features", "net()(3.0)", VALUE, "0-D|scalar|dimension|2-D"),
    Case("scalar_predict_1_feature", "fm.Sequential(fm.Linear(1, 2)).predict(np.float64(3.0))", VALUE,
         "0-D|scalar|dimension|2-D"),
    Case("scalar_train_step_1_feature", """
        m = fm.Sequential(fm.Linear(1, 1)); m.train_step(3.0, 1.0, fm.MSELoss(), fm.optim.SGD(m.parameters()))
        """, VALUE, "0-D|scalar|dimension|2-D"),
    Case("scalar_fit", "m = net(); m.fit(3.0, 1.0, fm.MSELoss(), fm.optim.SGD(m.parameters()), verbose=0)", VALUE,
         "0-D|scalar|dimension|2-D"),
    # ------------------------------------------------------------------ the C++ side checks what Python passes
    # (model._core.loss_and_grad is the documented low-level hook of the estimators; the others are what the
    # Python layer calls: each must validate sizes itself instead of reading past a buffer)
    Case("core_loss_and_grad_target_rows", "net()._core.loss_and_grad(np.ones((100, 3)), np.ones((2, 2)), {'kind': 'mse'})",
         CLEAR, "target|shape|rows"),
    Case("core_loss_and_grad_target_columns",
         "net()._core.loss_and_grad(np.ones((2, 3)), np.ones((2, 1)), {'kind': 'mse'})", CLEAR, "target|shape"),
    Case("core_loss_and_grad_labels_short", """
        net()._core.loss_and_grad(np.ones((100, 3)), np.zeros(1, np.int64), {'kind': 'cross_entropy'})
        """, CLEAR, "target|label|shape|rows"),
    Case("core_loss_and_grad_sample_weight_short", """
        net()._core.loss_and_grad(np.ones((100, 3)), np.ones((100, 2)), {'kind': 'mse', 'sample_weight': np.ones(1)})
        """, CLEAR, "sample_weight"),
    Case("core_loss_and_grad_class_weight_short", """
        net()._core.loss_and_grad(np.ones((2, 3)), np.array([0, 1], np.int64),
                                  {'kind': 'cross_entropy', 'weight': np.ones(1)})
        """, CLEAR, "weight"),
    Case("core_loss_and_grad_pos_weight_short", """
        net()._core.loss_and_grad(np.ones((2, 3)), np.ones((2, 2)), {'kind': 'bce_with_logits', 'pos_weight': np.ones(1)})
        """, CLEAR, "pos_weight"),
    Case("core_train_step_target_rows", """
        m = net(); opt = fm.optim.SGD(m.parameters(), lr=0.1)
        m._core.train_step(np.ones((100, 3)), np.ones((2, 2)), {'kind': 'mse'}, opt._core)
        """, CLEAR, "target|shape|rows"),
    Case("core_train_epoch_target_rows", """
        m = net(); opt = fm.optim.SGD(m.parameters(), lr=0.1)
        m._core.train_epoch(np.ones((1000, 3)), np.ones((2, 2)), {'kind': 'mse'}, opt._core, 7, True, False, None, 1)
        """, CLEAR, "target|shape|rows|samples"),
    Case("core_loss_forward_target_rows",
         "fm._core.loss_forward64({'kind': 'mse'}, np.ones((100, 2)), np.ones((1, 2)), True)", CLEAR, "target|shape"),
    Case("core_count_correct_labels_short",
         "fm._core.count_correct64(np.ones((100, 2)), np.zeros(1, np.int64), -100)", CLEAR, "target|label|shape"),
    Case("core_count_correct_labels_out_of_range",
         "fm._core.count_correct64(np.ones((2, 2)), np.array([0, 10**9], np.int64), -100)", CLEAR, "bounds|range|label|target"),
    Case("core_forward_wrong_dtype", "net()._core.forward(np.ones((2, 3), np.float32))", ["TypeError"], "float64"),
    Case("core_forward_not_contiguous", "net()._core.forward(np.ones((2, 6))[:, ::2])", CLEAR, "contiguous"),
    Case("core_predict_wrong_width", "net()._core.predict(np.ones((2, 5)), 4)", CLEAR, "features"),
    # ------------------------------------------------------------------ model files
    Case("load_header_declares_huge_layer", """
        import json
        m = fm.Sequential(fm.Linear(3, 2), seed=0); m.save("f.npz")
        with np.load("f.npz") as z:
            files = {k: z[k] for k in z.files}
        h = json.loads(files["__fastmlp__"].tobytes())
        h["layers"][0]["in_features"] = h["layers"][0]["out_features"] = 60000   # 3.6e9 weights, arrays stay (2, 3)
        files["__fastmlp__"] = np.frombuffer(json.dumps(h).encode(), np.uint8)
        np.savez("f.npz", **files)
        fm.load("f.npz")
        """, VALUE, "shape|size|mismatch|corrupted"),
    Case("load_checks_shapes_before_allocating_the_declared_model", """
        # 20000 x 20000 float32 = 1.6 GB: under a 1 GB limit only a loader that checks first succeeds in refusing
        import json
        m = fm.Sequential(fm.Linear(3, 2), seed=0); m.save("f.npz")
        with np.load("f.npz") as z:
            files = {k: z[k] for k in z.files}
        h = json.loads(files["__fastmlp__"].tobytes())
        h["layers"][0]["in_features"] = h["layers"][0]["out_features"] = 20000
        files["__fastmlp__"] = np.frombuffer(json.dumps(h).encode(), np.uint8)
        np.savez("f.npz", **files)
        fm.load("f.npz")
        """, VALUE, "shape|size|mismatch|corrupted", limit=1 * GB),
    Case("load_npy_declaring_2^40_elements", """
        import io, struct, zipfile
        m = fm.Sequential(fm.Linear(3, 2), seed=0); m.save("f.npz")
        with zipfile.ZipFile("f.npz") as z:
            members = {n: z.read(n) for n in z.namelist()}
        d = ("{'descr': '<f4', 'fortran_order': False, 'shape': (%d, 3), }" % 2**40).ljust(117) + "\\n"
        members["param/0.weight.npy"] = b"\\x93NUMPY\\x01\\x00" + struct.pack("<H", len(d)) + d.encode() + bytes(24)
        with zipfile.ZipFile("f.npz", "w") as z:
            for n, b in members.items():
                z.writestr(n, b)
        fm.load("f.npz")
        """, VALUE, "fastmlp|corrupted|readable|shape"),
    Case("load_zip_needs_newer_version", """
        m = fm.Sequential(fm.Linear(3, 2), seed=0); m.save("f.npz")
        b = bytearray(open("f.npz", "rb").read()); i = b.find(b"PK\\x01\\x02"); b[i + 6] = 64
        open("f.npz", "wb").write(b); fm.load("f.npz")
        """, VALUE, "fastmlp|corrupted|readable"),
    Case("load_zip_unknown_compression", """
        import struct
        m = fm.Sequential(fm.Linear(3, 2), seed=0); m.save("f.npz")
        b = bytearray(open("f.npz", "rb").read()); i = b.find(b"PK\\x01\\x02"); b[i + 10:i + 12] = struct.pack("<H", 99)
        open("f.npz", "wb").write(b); fm.load("f.npz")
        """, VALUE, "fastmlp|corrupted|readable"),
    Case("load_zip_encrypted_flag", """
        m = fm.Sequential(fm.Linear(3, 2), seed=0); m.save("f.npz")
        b = bytearray(open("f.npz", "rb").read()); i = b.find(b"PK\\x01\\x02"); b[i + 8] |= 1
        open("f.npz", "wb").write(b); fm.load("f.npz")
        """, VALUE, "fastmlp|corrupted|readable"),
    Case("load_deeply_nested_json_header", """
        np.savez("f.npz", __fastmlp__=np.frombuffer(b"[" * 100000 + b"]" * 100000, np.uint8))
        fm.load("f.npz")
        """, VALUE, "fastmlp|corrupted|header"),
    Case("load_header_member_without_npy_suffix", """
        import zipfile
        with zipfile.ZipFile("f.npz", "w") as z:
            z.writestr("__fastmlp__", "{}")   # numpy returns raw bytes for a member that is not a .npy
        fm.load("f.npz")
        """, VALUE, "fastmlp|corrupted|header|readable"),
    Case("load_seed_infinity", """
        np.savez("f.npz", __fastmlp__=np.frombuffer(b'{"format": "fastmlp", "version": 1, "layers": [], '
                                                   b'"dtype": "float32", "seed": Infinity}', np.uint8))
        fm.load("f.npz")
        """, VALUE, "seed|corrupted"),
    Case("load_npy_header_that_does_not_parse", """
        import zipfile
        fm.Sequential(fm.Linear(3, 2), seed=0).save("g.npz")
        with zipfile.ZipFile("g.npz") as z:
            members = {n: z.read(n) for n in z.namelist()}
        members["param/0.weight.npy"] = members["param/0.weight.npy"].replace(b"'shape': (2, 3)", b"'shape': (2, 3")
        with zipfile.ZipFile("f.npz", "w") as z:
            for n, b in members.items():
                z.writestr(n, b)
        fm.load("f.npz")
        """, VALUE, "fastmlp|corrupted|readable"),
    Case("load_directory", "import tempfile; fm.load(tempfile.mkdtemp())", ["ValueError", "IsADirectoryError"]),
    Case("optimizer_state_that_overflowed_still_round_trips", """
        # Adam's exp_avg_sq overflows (as in torch) while the weights stay finite: what save writes, load must
        # read back (or save must refuse before writing)
        m = fm.Sequential(fm.Linear(3, 2), seed=0, dtype="float32"); opt = fm.optim.Adam(m.parameters(), lr=0.1)
        m.train_step(np.full((2, 3), 1e19, np.float32), np.zeros((2, 2), np.float32), fm.MSELoss(), opt)
        assert np.isfinite(weights(m)).all()
        try:
            m.save("f.npz", optimizer=opt)
        except ValueError:
            assert not os.path.exists("f.npz")
        else:
            m2, opt2 = fm.load("f.npz", optimizer=True)
            assert np.array_equal(weights(m2), weights(m))
        """),
    # ------------------------------------------------------------------ the command line and the data loaders
    Case("cli_damaged_model_files_exit_2_with_one_line", """
        import io, contextlib, struct
        from fastmlp.cli import main
        m = fm.Sequential(fm.Linear(3, 2), seed=0); m.save("good.npz")
        good = open("good.npz", "rb").read()
        cd = good.find(b"PK\\x01\\x02")
        variants = {"empty": b"", "text": b"hello\\n", "truncated": good[:len(good) // 2],
                    "zip_version": good[:cd + 6] + b"\\x40" + good[cd + 7:],
                    "zip_method": good[:cd + 10] + struct.pack("<H", 99) + good[cd + 12:],
                    "zip_encrypted": good[:cd + 8] + bytes([good[cd + 8] | 1]) + good[cd + 9:]}
        open("x.csv", "w").write("a,b,c\\n1,2,3\\n")
        bad = []
        for name, blob in variants.items():
            open(name + ".npz", "wb").write(blob)
            for argv in (["info", name + ".npz"], ["predict", "--model", name + ".npz", "--data", "x.csv"]):
                err = io.StringIO()
                try:
                    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                        rc = main(argv)
                except BaseException as e:
                    bad.append(f"{argv}: {type(e).__name__}: {e}")
                    continue
                if rc != 2 or len(err.getvalue().strip().splitlines()) != 1:
                    bad.append(f"{argv}: exit {rc}, stderr {err.getvalue()!r}")
        assert not bad, "\\n".join(bad)
        """),
    Case("load_idx_gzip_bomb_is_refused_by_its_header", """
        # a 3 MB .gz whose header declares 10 x 28 x 28 bytes but inflates to 700 MB: the loader must
        # check the header's size instead of reading everything (under a 1 GB address-space limit)
        import gzip, struct
        from fastmlp import datasets
        with gzip.open("bomb.gz", "wb", compresslevel=1) as f:
            f.write(b"\\x00\\x00\\x08\\x03" + struct.pack(">III", 10, 28, 28))
            for _ in range(700):
                f.write(bytes(1 << 20))
        datasets.load_idx("bomb.gz")
        """, VALUE, "bomb.gz|IDX|trailing|bytes", limit=1 * GB),
    Case("load_idx_zero_sized_images_with_a_huge_dimension", """
        # 16 bytes: 1 image of 10**9 x 0 pixels; must be refused (or read) at once, not loop over 10**9 rows
        import struct
        from fastmlp import datasets
        open("h.idx", "wb").write(b"\\x00\\x00\\x08\\x03" + struct.pack(">III", 1, 10**9, 0))
        try:
            d = datasets.load_idx("h.idx")
        except ValueError as e:
            assert "h.idx" in str(e), e
        else:
            assert d.X.shape[0] == 1
        """, timeout=20),
    Case("load_csv_value_beyond_float32_is_not_inf", """
        # 1e39 is a finite number in the file but infinity in float32: an error naming the cell, or finite X
        from fastmlp import datasets
        open("big.csv", "w").write("a,y\\n1e39,0\\n2,1\\n")
        try:
            d = datasets.load_csv("big.csv")
        except ValueError as e:
            assert "big.csv" in str(e), e
        else:
            assert np.isfinite(d.X).all(), d.X
        """),
    Case("datasets_damaged_files_raise_data_error", """
        # every damaged data file is a DataError (a ValueError naming the file), never a zip/zlib/tokenize error
        import gzip, io, struct
        from fastmlp import datasets
        buf = io.BytesIO(); np.savez(buf, X=np.ones((2, 2)), y=np.array([0, 1])); good = buf.getvalue()
        cd = good.find(b"PK\\x01\\x02")
        csv_gz = bytearray(gzip.compress(b"a,b\\n" + b"1,2\\n" * 200)); csv_gz[13] ^= 0xFF
        files = {
            "npz_not_zip.npz": b"PK\\x03\\x04garbage",
            "npz_zip_version.npz": good[:cd + 6] + b"\\x40" + good[cd + 7:],
            "npz_truncated.npz": good[:len(good) // 2],
            "npz_flipped.npz": good[:60] + bytes(b ^ 0xFF for b in good[60:90]) + good[90:],
            "idx_dims_beyond_index.idx": b"\\x00\\x00\\x08\\x03" + struct.pack(">III", 2**31, 2**31, 2**31),
            "idx_declares_1TB.idx": b"\\x00\\x00\\x08\\x03" + struct.pack(">III", 2**20, 2**10, 2**10),
            "csv_bad_deflate.csv": bytes(csv_gz),
        }
        bad = []
        for name, blob in files.items():
            open(name, "wb").write(blob)
            reader = {"npz": datasets.load_npz, "idx": datasets.load_idx, "csv": datasets.load_csv}[name[:3]]
            try:
                reader(name)
                bad.append(f"{name}: accepted")
            except ValueError as e:
                if name not in str(e):
                    bad.append(f"{name}: the message does not name the file: {e}")
            except Exception as e:
                bad.append(f"{name}: {type(e).__name__}: {e}")
        assert not bad, "\\n".join(bad)
        """),
    # ------------------------------------------------------------------ faults during training
    Case("train_step_never_leaves_non_finite_weights_silently", """
        # finite data, a loss that overflows (or a step that does): either an error that changes nothing, or
        # finite weights -- never NaN/inf weights returned silently (as fit guarantees)
        for X, Y, lr in [(np.full((2, 3), 1e200), np.zeros((2, 2)), 0.1),
                         (np.full((4, 3), 10.0), np.full((4, 2), -100.0), 1e308)]:
            m = net(); opt = fm.optim.SGD(m.parameters(), lr=lr)
            for _ in range(3):
                before = weights(m)
                try:
                    m.train_step(X, Y, fm.MSELoss(), opt)
                except (FloatingPointError, ValueError) as e:
                    assert "finite" in str(e) or "diverge" in str(e), e
                    assert np.array_equal(weights(m), before)
                    break
                assert np.isfinite(weights(m)).all(), "train_step returned with non-finite weights"
        """),
    Case("divergence_in_a_later_epoch_leaves_finite_consistent_state", """
        import re
        rng = np.random.default_rng(0)
        X = rng.normal(size=(64, 3)); Y = rng.normal(size=(64, 2))
        for lr in (1e300, 1e200, 1e30):
            m = net(); opt = fm.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
            seen = {}
            def grow(epoch, logs):   # a schedule gone wrong: the lr explodes after the second epoch
                seen[epoch] = opt.state_dict()["state"][0]["step"]
                if epoch == 1:
                    opt.param_groups[0]["lr"] = lr
            try:
                m.fit(X, Y, fm.MSELoss(), opt, epochs=50, batch_size=16, verbose=0, callbacks=[grow])
                raise AssertionError("no FloatingPointError")
            except FloatingPointError as e:
                msg = str(e)
            found = re.search(r"epoch (\\d+).*batch (\\d+)", msg)
            assert found and "learning rate" in msg, msg
            epoch, batch = int(found.group(1)), int(found.group(2))
            assert epoch >= 3, msg
            w = weights(m)
            assert np.isfinite(w).all()
            sd = opt.state_dict()["state"]
            assert all(np.isfinite(v).all() for st in sd.values() for v in st.values() if isinstance(v, np.ndarray))
            # the optimizer's step count matches the weights kept: the start of that epoch, or before that batch
            assert sd[0]["step"] in (seen[epoch - 2], seen[epoch - 2] + batch - 1), (msg, sd[0]["step"], seen)
            # following the error's advice (a lower learning rate) must work: nothing was lost
            opt.param_groups[0]["lr"] = 1e-3
            try:
                m.fit(X, Y, fm.MSELoss(), opt, epochs=1, verbose=0)
            except FloatingPointError as e:
                raise AssertionError(f"lr={lr}: after '{msg}' the kept weights (max |w| = {np.abs(w).max():.3g}) "
                                     f"cannot be trained with a lower learning rate: {e}")
            assert np.isfinite(weights(m)).all()
        """),
    Case("exception_in_a_callback_releases_the_fit", """
        m = net(); opt = fm.optim.SGD(m.parameters(), lr=0.1)
        X = np.ones((8, 3)); Y = np.zeros((8, 2))
        def boom(epoch, logs):
            raise KeyError("user callback failed")
        try:
            m.fit(X, Y, fm.MSELoss(), opt, epochs=3, verbose=0, callbacks=[boom])
            raise AssertionError("callback exception swallowed")
        except KeyError:
            pass
        assert m.training
        h = m.fit(X, Y, fm.MSELoss(), opt, epochs=2, verbose=0)   # the fit lock was released
        assert len(h.history["loss"]) == 2 and np.isfinite(h.history["loss"]).all()
        """),
    Case("refused_second_fit_leaves_its_optimizer_untouched", """
        import threading
        rng = np.random.default_rng(0)
        X = rng.normal(size=(20000, 3)).astype(np.float32); y = rng.integers(0, 2, 20000)
        m = net("float32"); opt = fm.optim.SGD(m.parameters(), lr=1e-3)
        opt2 = fm.optim.Adam(m.parameters(), lr=1e-3)
        started, release, errors = threading.Event(), threading.Event(), []
        def cb(epoch, logs):
            started.set(); return release.is_set()
        def run():
            try:
                m.fit(X, y, fm.CrossEntropyLoss(), opt, epochs=10**6, batch_size=4, verbose=0, callbacks=[cb])
            except BaseException as e:
                errors.append(e)
        t = threading.Thread(target=run); t.start()
        assert started.wait(60)
        sd = opt2.state_dict()
        for _ in range(5):
            try:
                m.fit(X[:10], y[:10], fm.CrossEntropyLoss(), opt2, epochs=1, verbose=0)
                raise AssertionError("second fit accepted")
            except RuntimeError as e:
                assert "already training" in str(e), e
        release.set(); t.join()
        assert not errors, errors
        assert opt2.state_dict()["state"][0]["step"] == sd["state"][0]["step"] == 0
        assert np.array_equal(opt2.state_dict()["state"][0]["exp_avg"], sd["state"][0]["exp_avg"])
        """),
    Case("predict_while_fitting_in_another_thread", """
        import threading
        rng = np.random.default_rng(0)
        X = rng.normal(size=(5000, 3)); y = rng.integers(0, 2, 5000)
        m = net(); opt = fm.optim.Adam(m.parameters(), lr=1e-3)
        done = threading.Event()
        def run():
            try:
                m.fit(X, y, fm.CrossEntropyLoss(), opt, epochs=3, batch_size=8, verbose=0)
            finally:
                done.set()
        t = threading.Thread(target=run); t.start()
        n = 0
        while not done.is_set() or n < 5:
            out = m.predict(X[:500]); n += 1
            assert out.shape == (500, 2) and np.isfinite(out).all()
        t.join()
        np.testing.assert_allclose(m.predict(X[:500]), m(X[:500]), rtol=1e-12, atol=1e-12)
        """),
    Case("eight_threads_predict_forward_evaluate_at_once", """
        import threading
        rng = np.random.default_rng(1)
        for dtype in ("float32", "float64"):
            m = fm.Sequential(fm.Linear(10, 64), fm.GELU(), fm.Dropout(0.5), fm.Linear(64, 5), seed=3, dtype=dtype).eval()
            Xs = [rng.normal(size=(int(rng.integers(1, 3000)), 10)) for _ in range(8)]
            ys = [rng.integers(0, 5, len(x)) for x in Xs]
            ref = [(m.predict(x, batch_size=97), m(x), m.evaluate(x, y, fm.CrossEntropyLoss())) for x, y in zip(Xs, ys)]
            got = [None] * 8
            barrier = threading.Barrier(8)
            def work(i):
                barrier.wait()
                for _ in range(3):
                    got[i] = (m.predict(Xs[i], batch_size=97), m(Xs[i]), m.evaluate(Xs[i], ys[i], fm.CrossEntropyLoss()))
            ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]
            [t.start() for t in ts]; [t.join() for t in ts]
            for r, g in zip(ref, got):
                assert np.array_equal(r[0], g[0]) and np.array_equal(r[1], g[1]) and r[2] == g[2]
        """),
    Case("two_thread_fit_after_fork_and_concurrent_fits", """
        # fit's second thread lives with the model: a forked child has the model but not the
        # thread, and must start its own; two models fitting at once each have their own
        import threading
        rng = np.random.default_rng(0)
        X = rng.normal(size=(2000, 3)); y = rng.integers(0, 2, 2000)
        m = net(); opt = fm.optim.Adam(m.parameters(), lr=1e-3)
        m.fit(X, y, fm.CrossEntropyLoss(), opt, batch_size=200, verbose=0, n_threads=2)
        pid = os.fork()
        if pid == 0:
            try:
                m.fit(X, y, fm.CrossEntropyLoss(), opt, batch_size=200, verbose=0, n_threads=2)
                os._exit(0 if np.isfinite(weights(m)).all() else 3)
            except BaseException:
                os._exit(4)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
        m.fit(X, y, fm.CrossEntropyLoss(), opt, batch_size=200, verbose=0, n_threads=2)
        ms = [net(seed=i) for i in range(4)]
        ts = [threading.Thread(target=lambda k=k: k.fit(X, y, fm.CrossEntropyLoss(), fm.optim.SGD(k.parameters(), lr=0.1),
                                                          epochs=3, batch_size=100, verbose=0, n_threads=2)) for k in ms]
        [t.start() for t in ts]; [t.join() for t in ts]
        ref = net(seed=0)
        ref.fit(X, y, fm.CrossEntropyLoss(), fm.optim.SGD(ref.parameters(), lr=0.1), epochs=3, batch_size=100, verbose=0,
                n_threads=2)
        assert np.array_equal(weights(ref), weights(ms[0]))
        """, timeout=120),
    Case("save_is_atomic_for_a_concurrent_reader", """
        import threading
        a, b = net(seed=1), net(seed=2)
        wa, wb = weights(a), weights(b)
        a.save("m.npz")
        stop, bad, loads = threading.Event(), [], [0]
        def reader():
            while not stop.is_set():
                try:
                    w = weights(fm.load("m.npz"))
                except Exception as e:
                    bad.append(repr(e)); return
                if not (np.array_equal(w, wa) or np.array_equal(w, wb)):
                    bad.append("a mixture of two models"); return
                loads[0] += 1
        t = threading.Thread(target=reader); t.start()
        for i in range(150):
            (a if i % 2 else b).save("m.npz")
        stop.set(); t.join()
        assert not bad, bad
        assert loads[0] > 0
        assert sorted(os.listdir(".")) == ["m.npz"], os.listdir(".")   # no temporary file left
        """),
    # ------------------------------------------------------------------ allocation failures keep workspaces whole
    Case("workspace_is_sized_by_the_batch_not_rows_times_width_seen", """
        # 100000 rows of width 1, then 1 row of width 10**6: the workspace needs 10**6 elements per buffer,
        # not 100000 x 10**6 (that raised MemoryError, and the next call then crashed)
        m = fm.Sequential(fm.Tanh(), dtype="float32")
        for x in (np.full((100000, 1), 0.5, np.float32), np.full((1, 10**6), -0.25, np.float32),
                  np.full((100000, 1), 2.0, np.float32), np.full((3, 7), 1.5, np.float32)):
            out = m(x)
            np.testing.assert_allclose(out, np.tanh(x.astype(np.float64)), rtol=1e-6)
            np.testing.assert_allclose(m.backward(np.ones_like(x)), 1 - np.tanh(x.astype(np.float64)) ** 2, rtol=1e-5)
        """, limit=1 * GB),
    Case("memory_error_inside_forward_leaves_the_workspace_consistent", """
        # (1, 2**27) float32 is 512 MiB: the input and output fit under 3 GiB, the workspace's four buffers do
        # not. The allocation fails part way (some buffers already grown); the sizes must not be committed.
        m = fm.Sequential(fm.Tanh(), dtype="float32")
        small = np.full((1000, 1), 0.5, np.float32)
        m(small)
        try:
            m(np.ones((1, 2**27), np.float32))
        except MemoryError:
            pass
        try:
            m.backward(np.ones((1000, 1), np.float32))
            raise AssertionError("backward after a failed forward was accepted")
        except RuntimeError as e:
            assert "forward" in str(e) and "failed" in str(e), e
        for x in (small, np.full((7, 3), -1.0, np.float32)):
            np.testing.assert_allclose(m(x), np.tanh(x.astype(np.float64)), rtol=1e-6)
            np.testing.assert_allclose(m.backward(np.ones_like(x)), 1 - np.tanh(x.astype(np.float64)) ** 2, rtol=1e-5)
        """, limit=3 * GB),
    Case("backward_after_a_forward_that_ran_out_of_memory_raises", """
        # the hidden layer's (2**20, 1000) activations (4 GiB) do not fit under 3 GiB; backward must then
        # refuse (the buffers the last good forward left may be gone), and the model must work afterwards
        m = fm.Sequential(fm.Linear(10, 1000), fm.ReLU(), fm.Linear(1000, 1), dtype="float32", seed=0)
        x = np.random.default_rng(0).normal(size=(10, 10)).astype(np.float32)
        m(x)
        try:
            m(np.ones((2**20, 10), np.float32))
            raise AssertionError("no MemoryError")
        except MemoryError:
            pass
        try:
            m.backward(np.ones((10, 1), np.float32))
            raise AssertionError("backward after a failed forward was accepted")
        except RuntimeError as e:
            assert "failed" in str(e), e
        assert all((p.grad == 0).all() for p in m.parameters())
        ref = fm.Sequential(fm.Linear(10, 1000), fm.ReLU(), fm.Linear(1000, 1), dtype="float32", seed=0)
        assert np.array_equal(m(x), ref(x))
        assert np.array_equal(m.backward(np.ones((10, 1), np.float32)), ref.backward(np.ones((10, 1), np.float32)))
        """, limit=3 * GB),
    # ------------------------------------------------------------------ re-entrant calls, fork, threads during fit
    Case("signal_handler_calling_the_model_during_fit", """
        # the handler runs inside fit's progress callback, on the thread that holds the model: it used to
        # deadlock. Now the model is between two steps there, and the calls work (a nested fit is refused).
        import signal
        rng = np.random.default_rng(0)
        X = rng.normal(size=(50000, 3)); y = rng.integers(0, 2, 50000)
        m = net(); opt = fm.optim.SGD(m.parameters(), lr=1e-3)
        opt2 = fm.optim.SGD(m.parameters(), lr=1e-3)
        calls, nested = [], []
        def handler(signum, frame):
            out = m(X[:4])
            assert out.shape == (4, 2) and np.isfinite(out).all()
            calls.append(m.train_step(X[:8], y[:8], fm.CrossEntropyLoss(), opt2))
            m(X[:8]); m.backward(np.ones((8, 2)))  # a backward needs its own forward
            sd = m.state_dict(); m.load_state_dict(sd)
            m.save("h.npz", optimizer=opt)
            if len(calls) == 3:
                m.reset_parameters(5)
            try:
                m.fit(X[:10], y[:10], fm.CrossEntropyLoss(), opt2, verbose=0)
            except RuntimeError as e:
                nested.append(str(e))
            # one-shot, re-armed when the handler is done: on a loaded machine the handler can take longer
            # than the interval, and a periodic timer would nest handlers until the recursion limit
            signal.setitimer(signal.ITIMER_REAL, 0.15)
        signal.signal(signal.SIGALRM, handler)
        signal.setitimer(signal.ITIMER_REAL, 0.15)
        m.fit(X, y, fm.CrossEntropyLoss(), opt, epochs=10**6, batch_size=8, verbose=0,
              callbacks=[lambda epoch, logs: len(calls) >= 6])
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        assert len(calls) >= 6 and np.isfinite(calls).all(), calls
        assert nested and all("already training" in s for s in nested), nested
        assert np.isfinite(weights(m)).all()
        m2, _ = fm.load("h.npz", optimizer=True)
        assert np.isfinite(weights(m2)).all()
        """, timeout=120),
    Case("fork_while_another_thread_fits", """
        # the child has no copy of the fitting thread: its model must be usable (it was blocked forever in
        # m(x), and fit was refused as "already training in another thread")
        import threading, time
        rng = np.random.default_rng(0)
        X = rng.normal(size=(20000, 3)); y = rng.integers(0, 2, 20000)
        for n_threads in (1, 2):
            m = net(); opt = fm.optim.Adam(m.parameters(), lr=1e-3)
            started, stop = threading.Event(), threading.Event()
            def cb(epoch, logs):
                started.set(); return stop.is_set()
            t = threading.Thread(target=lambda: m.fit(X, y, fm.CrossEntropyLoss(), opt, epochs=10**6, batch_size=100,
                                                      verbose=0, callbacks=[cb], n_threads=n_threads))
            t.start()
            try:
                assert started.wait(60)
                time.sleep(0.05)
                pid = os.fork()
            except BaseException:
                stop.set(); t.join(); raise
            if pid == 0:
                try:
                    assert np.isfinite(weights(m)).all()
                    out = m(X[:5]); assert out.shape == (5, 2) and np.isfinite(out).all()
                    m.fit(X[:500], y[:500], fm.CrossEntropyLoss(), opt, epochs=2, verbose=0, n_threads=n_threads)
                    assert np.array_equal(m.predict(X[:50]), m.eval()(X[:50]))  # eval mode: one product for both
                    m.save("child.npz", optimizer=opt); fm.load("child.npz", optimizer=True)
                    os._exit(0)
                except BaseException as e:
                    print("child:", repr(e), flush=True)
                    os._exit(3)
            deadline = time.time() + 60
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                if time.time() > deadline:
                    os.kill(pid, 9); os.waitpid(pid, 0); stop.set(); t.join()
                    raise AssertionError("the forked child hangs")
                time.sleep(0.05)
            stop.set(); t.join()
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
        """, timeout=150),
    Case("save_state_dict_step_during_fit_in_another_thread_are_consistent", """
        # L1 loss far from its target: every step (fit's, opt.step's, train_step's) moves the weight and the
        # bias by exactly +lr, so a consistent state has w = w0 + steps * lr. Checkpoints once mixed weights
        # and step counts of different steps, and concurrent opt.step calls lost steps.
        import threading
        lr = 1e-3
        m = fm.Sequential(fm.Linear(1, 1), dtype="float64", seed=0)
        w0 = weights(m)
        opt = fm.optim.SGD(m.parameters(), lr=lr)
        X = np.ones((1000, 1)); Y = np.full((1000, 1), 1e7)
        stop, cb_saves = threading.Event(), []
        def cb(epoch, logs):   # fit's own callback, same thread: saving between epochs works
            m.save("cb.npz", optimizer=opt); cb_saves.append(epoch)
            return stop.is_set()
        t = threading.Thread(target=lambda: m.fit(X, Y, fm.L1Loss(), opt, epochs=10**6, batch_size=1, verbose=0,
                                                  callbacks=[cb]))
        t.start()
        while opt.state_dict()["state"][0]["step"] == 0:   # fit's first step done: .grad holds its gradient
            pass
        def consistent(w, steps, what):
            k = (w - w0) / lr
            assert np.allclose(k, steps, atol=0.01), f"{what}: weights of step {k} with step count {steps}"
        extra = 0
        try:
            for i in range(300):
                m.save("m.npz", optimizer=opt)
                m2, o2 = fm.load("m.npz", optimizer=True)
                consistent(weights(m2), o2.state_dict()["state"][0]["step"], f"checkpoint {i}")
                out = m.predict(np.ones((400, 1)), batch_size=1)   # 400 chunks: one set of weights for all
                assert (out == out[0]).all(), "predict mixed the weights of several steps"
                if i % 3 == 0:
                    opt.step(); extra += 1
                elif i % 3 == 1:
                    m.train_step(X[:1], Y[:1], fm.L1Loss(), opt); extra += 1
        finally:
            stop.set(); t.join()
        steps = opt.state_dict()["state"][0]["step"]
        consistent(weights(m), steps, "the end")
        assert cb_saves and extra == 200
        m3, o3 = fm.load("cb.npz", optimizer=True)
        consistent(weights(m3), o3.state_dict()["state"][0]["step"], "the callback's checkpoint")
        """, timeout=150),
]


_pool = ThreadPoolExecutor(max_workers=2)
_futures: dict = {}
_lock = threading.Lock()


def _result(case):
    with _lock:
        if not _futures:  # start every child at once, two at a time, on the first request
            for c in CASES:
                _futures[c.id] = _pool.submit(_run_in_tmp, c)
    return _futures[case.id].result()


def _run_in_tmp(case):
    import tempfile

    with tempfile.TemporaryDirectory(prefix="fastmlp-hostile-") as d:
        body = f"os.chdir({d!r})\n" + textwrap.dedent(case.body).strip("\n")
        return run_child(body, case.limit, case.timeout)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_call(case):
    check(case, _result(case))


def test_the_runner_detects_crashes_and_wrong_outcomes():
    """The harness itself: a segfault, an unexpected completion and a wrong
    exception type are all failures (a test that cannot fail is a defect)."""
    # (under AddressSanitizer this deliberate segfault is reported on the child's stderr, not in the
    # sanitizer run's report files, so that it is not counted as a finding)
    asan = {"ASAN_OPTIONS": os.environ["ASAN_OPTIONS"] + ":log_path=stderr"} if "ASAN_OPTIONS" in os.environ else None
    crash = run_child("import ctypes; ctypes.string_at(0)", env=asan)
    assert crash["outcome"] == "crash"
    with pytest.raises(AssertionError, match="crash"):
        check(Case("segv", ""), crash)
    with pytest.raises(AssertionError, match="nothing was raised"):
        check(Case("x", "", VALUE), run_child("pass"))
    with pytest.raises(AssertionError, match="expected one of"):
        check(Case("x", "", VALUE), run_child("raise KeyError('k')"))
    with pytest.raises(AssertionError, match="unclear message"):
        check(Case("x", "", VALUE, "batch_size"), run_child("raise ValueError('bad')"))
    if not UNDER_ASAN:
        big = run_child("bytearray(8 << 30)", limit=1 * GB)
        assert big["outcome"] == "raised" and big["type"] == "MemoryError"


def test_interrupted_save_never_destroys_the_previous_file(tmp_path):
    """A process killed (SIGKILL) in the middle of save: the file on disk is
    the complete old model or the complete new one, never a partial file."""
    path = tmp_path / "m.npz"
    writer = textwrap.dedent(f"""
        import numpy as np, fastmlp as fm, sys
        models = [fm.Sequential(fm.Linear(300, 300), fm.ReLU(), fm.Linear(300, 300), seed=s) for s in (1, 2)]
        models[0].save({str(path)!r})
        print("ready", flush=True)
        i = 0
        while True:
            models[i % 2].save({str(path)!r}); i += 1
    """)
    check_code = f"""
        ws = [weights(fm.Sequential(fm.Linear(300, 300), fm.ReLU(), fm.Linear(300, 300), seed=s)) for s in (1, 2)]
        w = weights(fm.load({str(path)!r}))
        assert any(np.array_equal(w, x) for x in ws), "the file holds neither model"
    """
    for delay in (0.05, 0.13, 0.31, 0.47):
        p = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True)
        try:
            assert p.stdout.readline().strip() == "ready"
            time.sleep(delay)
        finally:
            p.send_signal(signal.SIGKILL)
            p.wait()
        res = run_child(check_code)
        assert res["outcome"] == "ok", res


def test_no_lazy_numpy_import_on_fastmlp_call_paths():
    """A signal handler that calls fastmlp while numpy lazily imports numpy.ma for fastmlp's first masked-array
    check re-entered numpy's lazy attribute and recursed to a RecursionError (the SIGALRM case above, about
    one run in four on a loaded machine). numpy.ma is imported with fastmlp, so no call path imports it."""
    out = subprocess.run([sys.executable, "-c", "import sys, fastmlp; print('numpy.ma' in sys.modules)"],
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "True", out.stderr[-2000:]
