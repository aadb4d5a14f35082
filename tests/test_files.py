"""Files: reading bounded by what the format declares (model files, .npz data), non-regular files refused
(FIFO, /dev/zero), binary CSV refused, atomic writes (mode, symlinks, interruption), strict model headers,
CSV fast/slow path agreement, IDX labels. Hangs and runaway allocations run in child interpreters
(tests/test_hostile.py's runner) under a memory limit and a timeout."""
from __future__ import annotations

import contextlib
import json
import os
import random
import select
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zipfile
import zlib

import numpy as np
import pytest

import fastmlp as fm
from fastmlp import datasets
from fastmlp.datasets import DataError, load_csv, load_idx, load_npz
from test_hostile import GB, run_child

CHUNK = bytes(1 << 24)


@contextlib.contextmanager
def _fast_zero_deflate():
    """zipfile's deflate made instant for CHUNK-sized writes of zeros: after a full flush a
    deflate block depends only on its input, so the compressed CHUNK is computed once."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(CHUNK) + c.flush(zlib.Z_FULL_FLUSH)

    class Compressor:
        def __init__(self):
            self.c = zlib.compressobj(9, zlib.DEFLATED, -15)

        def compress(self, data):
            return block if data is CHUNK else self.c.compress(data) + self.c.flush(zlib.Z_FULL_FLUSH)

        def flush(self):
            return self.c.flush()

    real = zipfile._get_compressor
    zipfile._get_compressor = lambda *a, **k: Compressor()
    try:
        yield
    finally:
        zipfile._get_compressor = real


def npy_header(dtype, shape):
    d = f"{{'descr': '{np.dtype(dtype).str}', 'fortran_order': False, 'shape': {tuple(shape)!r}, }}"
    d = d.ljust(117) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(d)) + d.encode()


def rewrite_with(path, members):
    """Copy the .npz at path, replacing or adding members {name: (prefix bytes, zero bytes after it)}."""
    with zipfile.ZipFile(path) as z:
        old = {n: z.read(n) for n in z.namelist()}
    with _fast_zero_deflate(), zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for n, b in old.items():
            if n not in members:
                z.writestr(n, b)
        for n, (prefix, zeros) in members.items():
            with z.open(n, "w", force_zip64=True) as m:
                m.write(prefix)
                for _ in range(zeros // len(CHUNK)):
                    m.write(CHUNK)


def model_file(path, **kw):
    m = fm.Sequential(fm.Linear(3, 2), seed=0)
    m.save(path, **kw)
    return m


def outcome(body, limit=1 * GB, timeout=90):
    res = run_child(body, limit=limit, timeout=timeout)
    assert res["outcome"] not in ("crash", "timeout"), res
    return res


# --------------------------------------------------------------------------- bounded reading
def test_model_file_with_a_huge_extra_member_is_refused_unread(tmp_path):
    """A 1 MB model file with an extra member of 1 GiB of deflated zeros: refused by its name, under a
    1 GB address-space limit (the old loader decompressed every member: MemoryError here, 15 s and
    3.2 GB for a 3 GiB member); `fastmlp info` and `predict` use the same path."""
    p = tmp_path / "m.npz"
    model_file(p)
    rewrite_with(p, {"junk.npy": (npy_header("u1", (1 << 30,)), 1 << 30)})
    assert p.stat().st_size < 4 << 20
    res = outcome(f"""
        from fastmlp.cli import main
        try:
            fm.load({str(p)!r})
        except ValueError as e:
            msg = str(e)
        rc = main(["info", {str(p)!r}])
        report(outcome="ok", message=msg, rc=rc)
        os._exit(0)  # this report is the last one
    """)
    assert res["outcome"] == "ok", res
    assert "unknown member 'junk.npy'" in res["message"] and res["rc"] == 2


@pytest.mark.parametrize("member,prefix,what", [
    ("param/0.weight.npy", npy_header("<f4", (2, 3)) + bytes(24), "the archive member holds"),
    ("__fastmlp__.npy", npy_header("u1", (1 << 30,)), "more than this reader accepts"),
])
def test_model_member_bigger_than_declared_is_refused_before_decompressing(tmp_path, member, prefix, what):
    p = tmp_path / "m.npz"
    model_file(p)
    rewrite_with(p, {member: (prefix, 1 << 30)})
    res = outcome(f"fm.load({str(p)!r})")
    assert res["outcome"] == "raised" and res["type"] == "ValueError" and what in res["message"], res


def test_npz_data_reads_only_x_and_y_and_refuses_members_bigger_than_declared(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, X=np.arange(6.0).reshape(3, 2), y=np.array([0, 1, 0]))
    rewrite_with(p, {"notes.npy": (npy_header("u1", (1 << 30,)), 1 << 30)})  # never decompressed
    q = tmp_path / "big.npz"
    np.savez(q, X=np.ones((2, 2)), y=np.array([0, 1]))
    rewrite_with(q, {"X.npy": (npy_header("<f8", (2, 2)) + bytes(32), 1 << 30)})
    res = outcome(f"""
        from fastmlp import datasets
        ds = datasets.load_npz({str(p)!r})
        assert ds.X.shape == (3, 2) and list(ds.y) == [0, 1, 0]
        datasets.load_npz({str(q)!r})
    """)
    assert res["outcome"] == "raised" and "DataError" in res["bases"], res
    assert "'X'" in res["message"] and "holds" in res["message"], res


# --------------------------------------------------------------------------- non-regular and binary files
def test_fifo_and_devices_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    res = outcome(f"""
        from fastmlp import datasets
        from fastmlp.cli import main
        f = {str(fifo)!r}
        out = {{}}
        calls = {{"load": lambda: fm.load(f), "load_csv": lambda: datasets.load_csv(f),
                  "load_npz": lambda: datasets.load_npz(f), "load_idx": lambda: datasets.load_idx(f),
                  "read_csv_header": lambda: datasets.read_csv_header(f),
                  "load_csv_dev_zero": lambda: datasets.load_csv("/dev/zero"),
                  "load_idx_dev_zero": lambda: datasets.load_idx("/dev/zero"),
                  "load_dev_zero": lambda: fm.load("/dev/zero")}}
        for name, call in calls.items():
            try:
                call()
                out[name] = "ok"
            except ValueError as e:
                out[name] = str(e)
        for args in (["train", "--data", f], ["info", f], ["predict", "--model", f, "--data", f]):
            out[args[0]] = main(args)
        report(outcome="ok", results=out)
        os._exit(0)
    """, timeout=60)
    assert res["outcome"] == "ok", res
    r = res["results"]
    for name in ("load", "load_csv", "load_npz", "load_idx", "read_csv_header"):
        assert "FIFO" in r[name] or "regular file" in r[name], (name, r[name])
    assert "regular file" in r["load_csv_dev_zero"] and "regular file" in r["load_idx_dev_zero"], r
    assert r["load_dev_zero"] != "ok"
    assert r["train"] == r["info"] == r["predict"] == 2


@pytest.mark.parametrize("text,line", [("a,b\n1,2\n3\x00,4\n", 3), ("a,\x00b\n1,2\n", 1), ("a,b\n\n\n1,2\x00\n", 4)])
def test_csv_with_a_nul_byte_is_refused_as_binary(tmp_path, text, line):
    p = tmp_path / "bin.csv"
    p.write_text(text)
    with pytest.raises(DataError, match=rf"bin.csv:{line}: a NUL byte"):
        load_csv(p)


# --------------------------------------------------------------------------- atomic writes
def test_save_keeps_the_mode_of_the_file_it_replaces(tmp_path):
    p = tmp_path / "m.npz"
    model_file(p)
    os.chmod(p, 0o600)
    model_file(p)
    assert p.stat().st_mode & 0o7777 == 0o600
    old = os.umask(0o027)
    try:
        model_file(tmp_path / "new.npz")
    finally:
        os.umask(old)
    assert (tmp_path / "new.npz").stat().st_mode & 0o7777 == 0o640  # as open() would create it


def test_save_writes_through_a_symlink(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "links").mkdir()
    target = tmp_path / "real" / "m.npz"
    link = tmp_path / "links" / "m.npz"
    fm.Sequential(fm.Linear(2, 2), seed=1).save(target)
    link.symlink_to(target)
    m = fm.Sequential(fm.Linear(3, 1), seed=2)
    m.save(link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert fm.load(target).in_features == 3
    assert sorted(os.listdir(tmp_path / "real")) == ["m.npz"] and sorted(os.listdir(tmp_path / "links")) == ["m.npz"]
    dangling = tmp_path / "links" / "later.npz"
    dangling.symlink_to(tmp_path / "real" / "later.npz")  # a link to a file that does not exist yet: created
    m.save(dangling)
    assert dangling.is_symlink() and fm.load(tmp_path / "real" / "later.npz").in_features == 3


def test_save_to_a_folder_is_refused(tmp_path):
    with pytest.raises(IsADirectoryError):
        model_file(tmp_path)
    assert os.listdir(tmp_path) == []


def test_ctrl_c_during_save_removes_the_temp_file_and_stays_a_keyboard_interrupt(tmp_path):
    """A child saves in a loop while this process sends SIGINT at random times (one at a time: the
    child acknowledges each). Every exception must be the KeyboardInterrupt itself, no temporary file
    may be left, and after every interrupt the file loads as one of the two models."""
    d = tmp_path / "out"
    d.mkdir()
    path, stop = d / "m.npz", tmp_path / "stop"
    child = textwrap.dedent(f"""
        import os, signal, sys
        import numpy as np, fastmlp as fm
        models = [fm.Sequential(fm.Linear(64, 64), fm.ReLU(), fm.Linear(64, 64), seed=s) for s in (1, 2)]
        ws = [m._core.flat_params().copy() for m in models]
        inside = [False]

        def on_sigint(sig, frame):
            if inside[0]:
                raise KeyboardInterrupt
            print("missed", flush=True)

        signal.signal(signal.SIGINT, on_sigint)
        models[0].save({str(path)!r})
        print("ready", flush=True)
        i = 0
        while not os.path.exists({str(stop)!r}):
            try:
                inside[0] = True
                models[i % 2].save({str(path)!r})
                inside[0] = False
                i += 1
            except BaseException as e:
                inside[0] = False
                w = fm.load({str(path)!r})._core.flat_params()
                intact = any(np.array_equal(w, x) for x in ws)
                print(type(e).__name__, "intact" if intact else "BROKEN", repr(e)[:200], flush=True)
        print("done", i, flush=True)
    """)
    p = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True, bufsize=1)
    rng = random.Random(0)
    lines = []
    try:
        assert p.stdout.readline().strip() == "ready"
        for _ in range(300):
            time.sleep(rng.uniform(0, 0.004))
            p.send_signal(signal.SIGINT)
            # an interrupt that Python itself swallows (raised inside a __del__) gets no answer
            if select.select([p.stdout], [], [], 5)[0]:
                lines.append(p.stdout.readline().strip())
        stop.touch()
        out, _ = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    lines += out.strip().splitlines()
    assert p.returncode == 0 and lines[-1].startswith("done"), (p.returncode, lines[-5:])
    hits = [ln for ln in lines[:-1] if ln != "missed"]
    assert len(hits) > 100, lines  # most signals arrive during a save
    assert all(ln.startswith("KeyboardInterrupt intact") for ln in hits), [ln for ln in hits if "Keyboard" not in ln
                                                                          or "BROKEN" in ln]
    assert os.listdir(d) == ["m.npz"]


# --------------------------------------------------------------------------- model headers
def _rewrite_header(src, dst, mutate):
    with np.load(src) as z:
        files = {k: z[k] for k in z.files}
    h = json.loads(files.pop("__fastmlp__").tobytes())
    mutate(h)
    np.savez(dst, __fastmlp__=np.frombuffer(json.dumps(h).encode(), np.uint8), **files)


def _set(path, value):
    def mutate(h):
        node = h
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
    return mutate


BAD_FIELDS = [
    (("training",), "false", "training"), (("training",), 1, "training"), (("training",), None, "training"),
    (("seed",), "42", "seed"), (("seed",), 1.9, "seed"), (("seed",), 42.0, "seed"), (("seed",), True, "seed"),
    (("seed",), 2**64, "seed"), (("seed",), -1, "seed"),
    (("version",), True, "version"), (("version",), 1.0, "version"), (("dtype",), ["float32"], "dtype"),
    (("dropout_calls",), 2**64, "dropout_calls"), (("epochs_done",), 1.0, "epochs_done"),
    (("epochs_done",), False, "epochs_done"),
    (("optimizer", "steps"), [2**63 - 1], "optimizer.steps[0]"), (("optimizer", "steps"), [True], "optimizer.steps[0]"),
    (("optimizer", "steps"), [1.0], "optimizer.steps[0]"), (("optimizer", "steps"), "1", "optimizer.steps"),
    (("optimizer", "momentum_ready"), [1], "optimizer.momentum_ready"),
    (("optimizer", "param_groups", 0, "lr"), "0.1", "optimizer.param_groups[0].lr"),
    (("optimizer", "param_groups", 0, "params"), [0], "optimizer.param_groups[0]"),
    (("optimizer", "class"), 7, "optimizer.class"), (("optimizer", "surprise"), 1, "optimizer"),
    (("layers", 0, "in_features"), True, "layers[0].in_features"),
    (("layers", 0, "in_features"), 3.0, "layers[0].in_features"),
    (("layers", 0, "bias"), "yes", "layers[0].bias"), (("layers", 0, "init", "name"), 5, "layers[0].init.name"),
    (("layers", 0, "init"), "default", "layers[0].init"), (("layers", 0, "weights"), 1, "layers[0]"),
    (("layers", 1), {"kind": "dropout", "p": "0.5"}, "layers[1].p"),
    (("layers", 1), {"kind": "relu", "inplace": True}, "layers[1]"),
    (("extra",), [], "extra"), (("surprise",), 1, "surprise"),
]


@pytest.mark.parametrize("path,value,field", BAD_FIELDS, ids=[f"{'.'.join(map(str, p))}={v!r}"[:40]
                                                              for p, v, _ in BAD_FIELDS])
def test_header_fields_have_exact_types_and_ranges(tmp_path, path, value, field):
    m = fm.Sequential(fm.Linear(3, 2), fm.ReLU(), fm.Linear(2, 2), seed=0)
    opt = fm.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    m.save(tmp_path / "src.npz", optimizer=opt)
    _rewrite_header(tmp_path / "src.npz", tmp_path / "bad.npz", _set(path, value))
    with pytest.raises(ValueError) as e:
        fm.load(tmp_path / "bad.npz", optimizer=True)
    assert field in str(e.value), str(e.value)


def test_header_limits_themselves_load(tmp_path):
    m = fm.Sequential(fm.Linear(3, 2), seed=2**64 - 1)
    opt = fm.optim.Adam(m.parameters())
    m.eval()
    m.save(tmp_path / "src.npz", optimizer=opt)
    _rewrite_header(tmp_path / "src.npz", tmp_path / "edge.npz", _set(("optimizer", "steps"), [2**63 - 2]))
    m2, opt2 = fm.load(tmp_path / "edge.npz", optimizer=True)
    assert m2.seed == 2**64 - 1 and m2.training is False and opt2._core.get_step(0) == 2**63 - 2


# --------------------------------------------------------------------------- CSV paths agree
def test_hash_is_no_comment_in_a_csv(tmp_path):
    p = tmp_path / "h.csv"
    p.write_text("a,b,y\n1,2,0\n#3,4,1\n5,6,1\n")
    with pytest.raises(DataError, match=r"h.csv:3:1: column 'a': '#3' is not a number"):
        load_csv(p)
    p.write_text("a,b,y\n1,2,0\n3,4,1#,77\n")
    with pytest.raises(DataError, match=r"h.csv:3: 4 fields"):
        load_csv(p)
    p.write_text("a,b,y\n1,2#x,0\n")
    with pytest.raises(DataError, match=r"h.csv:2:2: column 'b': '2#x' is not a number"):
        load_csv(p)


CELLS = ["1", " 2.5 ", "-.5", "+1e3", "1E-2", "7.", "0001", "-0", "\u00a03", "#3", "3#", "1_000", "\u0661", "0x10",
         "1d5", "1e", ".", "--1", "1.2.3", "True", "1j", "nan", "inf", "-Infinity", "1e500", "", "abc"]


@pytest.mark.parametrize("cell", CELLS, ids=[repr(c) for c in CELLS])
@pytest.mark.parametrize("column", ["feature", "target"])
def test_fast_and_slow_csv_paths_agree(tmp_path, cell, column):
    """load_csv (np.loadtxt first) and the cell-by-cell reader give the same array or the same error."""
    row = f"1,{cell},0" if column == "feature" else f"1,2,{cell}"
    p = tmp_path / "c.csv"
    p.write_text(f"a,b,y\n4,5,1\n{row}\n")
    names, header_line, body, t, feat = datasets._read_csv_text(str(p), -1, ",", None)

    def result(f):
        try:
            ds = f()
            return ("ok", ds.X.tolist(), None if ds.y is None else ds.y.tolist(), str(ds.y.dtype))
        except DataError as e:
            return ("error", str(e))

    dt = np.dtype(np.float32)
    slow = result(lambda: datasets._slow_csv(str(p), body, header_line, names, t, feat, ",", dt))
    try:
        fast = result(lambda: datasets._fast_csv(str(p), body, names, t, feat, ",", dt))
    except Exception:  # noqa: BLE001 - the fast path declines, the slow one decides
        fast = None
    if fast is not None:
        assert fast == slow
    assert result(lambda: load_csv(p)) == slow
    if column == "feature" and slow[0] == "error":
        assert "c.csv:3:2: column 'b'" in slow[1]


# --------------------------------------------------------------------------- IDX labels
def _idx(path, arr, code):
    arr = np.asarray(arr)
    path.write_bytes(bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", s) for s in arr.shape)
                     + arr.tobytes())
    return path


@pytest.mark.parametrize("dtype,code", [(">f4", 0x0D), (">f8", 0x0E)])
def test_idx_float_labels_must_be_finite_whole_numbers(tmp_path, dtype, code):
    img = _idx(tmp_path / "img", np.zeros((3, 2, 2), np.uint8), 0x08)
    good = load_idx(img, _idx(tmp_path / "good", np.array([0, 2, 1], dtype), code))
    assert good.y.dtype == np.int64 and good.y.tolist() == [0, 2, 1]
    for i, bad in enumerate(([0, np.nan, 1], [0, 1, np.inf], [0.5, 1, 2])):
        lab = _idx(tmp_path / f"bad{i}", np.array(bad, dtype), code)
        with pytest.raises(DataError, match="labels must be finite whole numbers"):
            load_idx(img, lab)
