"""The `fastmlp` command, run for real in subprocesses (the installed console
script and `python -m fastmlp`) in a temporary folder, on files written here."""
import csv
import gzip
import importlib.util
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastmlp as fm
from fastmlp.datasets import load_digits


def console_script():
    here = Path(sys.executable).parent / "fastmlp"
    return str(here) if here.is_file() else shutil.which("fastmlp")


def run(args, cwd, script=False, env=None, timeout=120):
    if script:
        exe = console_script()
        assert exe, "the `fastmlp` console script is not installed (pip install -e .)"
        cmd = [exe, *args]
    else:
        cmd = [sys.executable, "-m", "fastmlp", *args]
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    full_env.pop("FASTMLP_TRACEBACK", None)
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)


def ok(proc):
    assert proc.returncode == 0, \
        f"exit {proc.returncode}\nstdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr
    return proc


def error(proc):
    """Exit code 2, one line on stderr, no traceback; returns that line."""
    assert proc.returncode == 2, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("fastmlp ") and "error:" in lines[0]
    return lines[0]


def metric(text, name):
    m = re.search(rf"test {name}: ([-0-9.e]+)", text)
    assert m, text
    return float(m.group(1))


def read_csv(path_or_text):
    text = Path(path_or_text).read_text() if isinstance(path_or_text, Path) else path_or_text
    rows = list(csv.reader(text.splitlines()))
    return rows[0], rows[1:]


def png_size(path):
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


# --------------------------------------------------------------------------- data files
def write_rows(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def blobs(n=300, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    label = np.where(X[:, 0] + X[:, 1] > 0, "yes", "no")
    return X, label


def idx_file(path, arr, gz):
    arr = np.asarray(arr, dtype=np.uint8)
    data = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", s) for s in arr.shape) + arr.tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def images(n=150, seed=0):
    """3 classes of 5x5 'images': class k has a bright row k."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    img = rng.integers(0, 80, size=(n, 5, 5))
    for k in range(3):
        img[y == k, k, :] += 170
    return img, y


# --------------------------------------------------------------------------- default run: digits
@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("digits")
    proc = run(["train"], cwd, script=True)
    return cwd, proc


def test_train_without_arguments(digits_run):
    cwd, proc = digits_run
    ok(proc)
    assert metric(proc.stdout, "accuracy") > 0.9
    assert "epoch 20/20" in proc.stderr  # the progress bar of the last epoch
    assert (cwd / "fastmlp-model.npz").is_file()
    w, h = png_size(cwd / "fastmlp-curves.png")
    assert w >= 400 and h >= 200
    plt_image = pytest.importorskip("matplotlib.image")
    pixels = plt_image.imread(cwd / "fastmlp-curves.png")
    assert pixels.shape[:2] == (h, w) and pixels.std() > 0.01  # something is drawn


def test_default_model_file_contents(digits_run):
    cwd, proc = digits_run
    ok(proc)
    model = fm.load(cwd / "fastmlp-model.npz")
    ex = model._file_extra
    assert ex["task"] == "classify" and ex["classes"] == list(range(10))
    assert len(ex["feature_names"]) == 64 and len(ex["scaler"]["mean"]) == 64
    assert len(ex["history"]["loss"]) == 20 and ex["history"]["loss"][-1] < ex["history"]["loss"][0]
    assert ex["test"]["accuracy"] == pytest.approx(metric(proc.stdout, "accuracy"), abs=1e-4)
    X, y = load_digits()
    mean, std = np.array(ex["scaler"]["mean"]), np.array(ex["scaler"]["std"])
    np.testing.assert_allclose(mean, X.mean(0), atol=0.6)  # fitted on the 72% training part
    pred = np.argmax(model.predict(((X - mean) / std).astype(np.float32)), axis=1)
    assert np.mean(pred == y) > 0.95


def test_info(digits_run):
    cwd, _ = digits_run
    out = ok(run(["info", "fastmlp-model.npz"], cwd)).stdout
    assert "Linear(in_features=64, out_features=128, bias=True)" in out
    assert "parameters: 9,610 (float32)" in out  # 64*128+128 + 128*10+10
    assert "task: classify, 10 classes" in out and "test: accuracy" in out and "adam" in out


def test_predict_csv_columns_by_name(digits_run, tmp_path):
    cwd, _ = digits_run
    X, y = load_digits()
    rng = np.random.default_rng(0)
    rows = rng.choice(len(y), 120, replace=False)
    names = load_digits().feature_names
    order = rng.permutation(64)  # columns in another order, plus the target column first
    write_rows(tmp_path / "new.csv", ["digit"] + [names[j] for j in order],
               [[int(y[i])] + [int(X[i, j]) for j in order] for i in rows])
    proc = ok(run(["predict", "--model", str(cwd / "fastmlp-model.npz"), "--data", "new.csv"], tmp_path))
    header, body = read_csv(proc.stdout)
    assert header == ["digit"] and len(body) == 120
    labels = np.array([int(r[0]) for r in body])
    # the same as applying the saved model and scaler here
    model = fm.load(cwd / "fastmlp-model.npz")
    sc = model._file_extra["scaler"]
    ref = np.argmax(model.predict(((X[rows] - sc["mean"]) / np.array(sc["std"])).astype(np.float32)), axis=1)
    assert np.array_equal(labels, ref) and np.mean(labels == y[rows]) > 0.9
    acc = float(re.search(r"accuracy on new.csv: ([0-9.]+)", proc.stderr).group(1))
    assert acc == pytest.approx(np.mean(labels == y[rows]), abs=1e-4)

    ok(run(["predict", "--model", str(cwd / "fastmlp-model.npz"), "--data", "new.csv", "--out", "p.csv",
            "--proba"], tmp_path))
    header, body = read_csv(tmp_path / "p.csv")
    assert header == ["digit"] + [f"p_{k}" for k in range(10)] and len(body) == 120
    P = np.array([[float(v) for v in r[1:]] for r in body])
    np.testing.assert_allclose(P.sum(1), 1, atol=1e-6)
    assert np.array_equal(P.argmax(1), labels) and [int(r[0]) for r in body] == labels.tolist()


# --------------------------------------------------------------------------- CSV, NPZ, IDX
def test_csv_classification_text_labels(tmp_path):
    X, label = blobs()
    write_rows(tmp_path / "train.csv", ["f1", "label", "f2", "f3"],
               [[f"{a:.6f}", lab, f"{b:.6f}", f"{c:.6f}"] for (a, b, c), lab in zip(X, label)])
    args = ["train", "--data", "train.csv", "--target", "label", "--hidden", "16,8", "--activation", "tanh",
            "--dropout", "0.1", "--epochs", "40", "--batch-size", "16", "--optimizer", "sgd", "--lr", "0.1",
            "--momentum", "0.9", "--val-split", "0.1", "--seed", "1", "--out", "m.npz", "--plot", "c.png"]
    proc = ok(run(args, tmp_path))
    assert "classify (text target): 2 classes: no, yes" in proc.stdout
    assert metric(proc.stdout, "accuracy") > 0.85
    png_size(tmp_path / "c.png")
    model = fm.load(tmp_path / "m.npz")
    assert model._file_extra["classes"] == ["no", "yes"] and model._file_extra["feature_names"] == ["f1", "f2", "f3"]
    assert [type(layer).__name__ for layer in model] == ["Linear", "Tanh", "Dropout", "Linear", "Tanh", "Dropout",
                                                         "Linear"]
    # same seed, same model
    ok(run(args[:-4] + ["--out", "m2.npz", "--no-plot"], tmp_path))
    again = fm.load(tmp_path / "m2.npz").state_dict()
    assert all(np.array_equal(v, again[k]) for k, v in model.state_dict().items())
    # predict on new rows without the label column, columns in another order
    Xn, ln = blobs(60, seed=5)
    write_rows(tmp_path / "new.csv", ["f3", "f2", "f1"], [[c, b, a] for a, b, c in Xn])
    proc = ok(run(["predict", "--model", "m.npz", "--data", "new.csv", "--out", "pred.csv"], tmp_path))
    header, body = read_csv(tmp_path / "pred.csv")
    assert header == ["label"] and len(body) == 60 and {r[0] for r in body} <= {"yes", "no"}
    assert np.mean(np.array([r[0] for r in body]) == ln) > 0.85
    assert "wrote 60 predictions to pred.csv" in proc.stderr


def test_csv_regression_and_predict(tmp_path):
    rng = np.random.default_rng(3)
    shift, scale = np.array([50.0, -3.0, 0.0]), np.array([10.0, 0.1, 200.0])  # features on different scales

    def make(n):
        Z = rng.normal(size=(n, 3))
        return Z * scale + shift, 30 * Z[:, 0] - 20 * Z[:, 1] + 5 * Z[:, 2] ** 2 + 1000

    X, y = make(400)
    write_rows(tmp_path / "reg.csv", ["a", "b", "c", "price"], [[*map(float, x), float(t)] for x, t in zip(X, y)])
    proc = ok(run(["train", "--data", "reg.csv", "--epochs", "60", "--hidden", "64", "--lr", "3e-3",
                   "--out", "r.npz", "--plot", "r.png"], tmp_path))
    assert "task: regress" in proc.stdout
    r2 = float(re.search(r"R\^2: ([-0-9.]+)", proc.stdout).group(1))
    assert r2 > 0.95 and metric(proc.stdout, "RMSE") < 0.25 * y.std()
    ex = fm.load(tmp_path / "r.npz")._file_extra
    assert ex["task"] == "regress" and ex["target_scaler"]["mean"][0] == pytest.approx(1000, abs=10)
    Xn, yn = make(50)
    write_rows(tmp_path / "new.csv", ["a", "b", "c"], Xn.tolist())
    header, body = read_csv(ok(run(["predict", "--model", "r.npz", "--data", "new.csv"], tmp_path)).stdout)
    pred = np.array([float(r[0]) for r in body])
    assert header == ["price"] and len(pred) == 50
    assert np.sqrt(np.mean((pred - yn) ** 2)) < 0.3 * yn.std()  # in the target's units, not standardized


def test_integer_target_forced_to_regression(tmp_path):
    rng = np.random.default_rng(4)
    X = rng.normal(size=(200, 2))
    y = np.round(3 * X[:, 0] + 10).astype(int)
    write_rows(tmp_path / "d.csv", ["x1", "x2", "count"], [[*map(float, x), int(t)] for x, t in zip(X, y)])
    proc = ok(run(["train", "--data", "d.csv", "--task", "regress", "--no-standardize", "--epochs", "5",
                   "--no-plot", "-q"], tmp_path))
    assert "task: regress (--task)" in proc.stdout and "features not standardized" in proc.stdout
    assert not (tmp_path / "fastmlp-curves.png").exists()
    ex = fm.load(tmp_path / "fastmlp-model.npz")._file_extra
    assert ex["scaler"] is None and ex["target_scaler"] is None and ex["task"] == "regress"


def test_separate_test_file_and_early_stopping(tmp_path):
    X, label = blobs(240, seed=7)
    header = ["f1", "f2", "f3", "label"]
    write_rows(tmp_path / "train.csv", header, [[*map(float, x), lab] for x, lab in zip(X[:200], label[:200])])
    write_rows(tmp_path / "test.csv", header, [[*map(float, x), lab] for x, lab in zip(X[200:], label[200:])])
    proc = ok(run(["train", "--data", "train.csv", "--test-data", "test.csv", "--epochs", "200", "--patience", "3",
                   "--lr", "0.05", "--no-plot", "-q"], tmp_path))
    assert "40 test" in proc.stdout and metric(proc.stdout, "accuracy") > 0.85
    ex = fm.load(tmp_path / "fastmlp-model.npz")._file_extra
    assert ex["data"]["test"] == 40 and ex["data"]["train"] == 180  # 10% of 200 for validation
    assert ex["training"]["epochs_run"] < 200  # stopped early
    write_rows(tmp_path / "odd.csv", header, [[0.0, 0.0, 0.0, "maybe"]])
    line = error(run(["train", "--data", "train.csv", "--test-data", "odd.csv"], tmp_path))
    assert "odd.csv" in line and "'maybe'" in line


def test_npz_train_and_predict(tmp_path):
    img, y = images(200, seed=1)
    np.savez(tmp_path / "d.npz", X=img.reshape(200, -1).astype(np.float64), y=y)
    proc = ok(run(["train", "--data", "d.npz", "--epochs", "15", "--hidden", "32", "--out", "n.npz",
                   "--no-plot", "--dtype", "float64"], tmp_path))
    assert metric(proc.stdout, "accuracy") > 0.9
    assert fm.load(tmp_path / "n.npz").dtype == np.float64
    proc = ok(run(["predict", "--model", "n.npz", "--data", "d.npz"], tmp_path))
    header, body = read_csv(proc.stdout)
    assert header == ["y"] and np.mean(np.array([int(r[0]) for r in body]) == y) > 0.9
    assert "accuracy on d.npz" in proc.stderr


@pytest.mark.parametrize("gz", [True, False])
def test_idx_train_and_predict(tmp_path, gz):
    img, y = images(180, seed=2)
    sfx = ".gz" if gz else ""
    idx_file(tmp_path / f"train-images-idx3-ubyte{sfx}", img, gz)
    idx_file(tmp_path / f"train-labels-idx1-ubyte{sfx}", y, gz)
    proc = ok(run(["train", "--data", f"train-images-idx3-ubyte{sfx}", "--labels", f"train-labels-idx1-ubyte{sfx}",
                   "--hidden", "32", "--epochs", "10", "--out", "i.npz", "--no-plot"], tmp_path, script=gz))
    assert "180 samples, 25 features" in proc.stdout and metric(proc.stdout, "accuracy") > 0.9
    proc = ok(run(["predict", "--model", "i.npz", "--data", f"train-images-idx3-ubyte{sfx}", "--labels",
                   f"train-labels-idx1-ubyte{sfx}", "--out", "p.csv"], tmp_path))
    header, body = read_csv(tmp_path / "p.csv")
    assert header == ["label"] and len(body) == 180
    assert float(re.search(r"accuracy on \S+: ([0-9.]+)", proc.stderr).group(1)) > 0.9


# --------------------------------------------------------------------------- errors
@pytest.fixture
def files(tmp_path):
    write_rows(tmp_path / "good.csv", ["alpha", "beta", "gamma"], [[i, i % 3, i % 2] for i in range(30)])
    (tmp_path / "bad.csv").write_text("alpha,beta,gamma\n1,2,0\n3,4,1\n5,abc,0\n")
    (tmp_path / "ragged.csv").write_text("alpha,beta,gamma\n1,2,0\n3,4\n")
    img, y = images(20)
    idx_file(tmp_path / "img.gz", img, True)
    idx_file(tmp_path / "lab.gz", y[:19], True)
    return tmp_path


@pytest.mark.parametrize("args,expected", [
    (["train", "--data", "missing.csv"], ["missing.csv", "no such file"]),
    (["train", "--data", "good.csv", "--target", "delta"], ["good.csv", "'delta'", "'alpha', 'beta', 'gamma'"]),
    (["train", "--data", "bad.csv"], ["bad.csv:4:2", "'beta'", "'abc' is not a number"]),
    (["train", "--data", "ragged.csv"], ["ragged.csv:3", "2 fields", "3 columns"]),
    (["train", "--data", "img.gz", "--labels", "lab.gz"], ["lab.gz", "19 labels", "20 images in img.gz"]),
    (["train", "--data", "img.gz"], ["img.gz", "--labels"]),
    (["train", "--data", "good.csv", "--labels", "lab.gz"], ["--labels", "good.csv"]),
    (["train", "--data", "lab.gz", "--labels", "lab.gz"], ["lab.gz", "1-D"]),
    (["predict", "--model", "nomodel.npz", "--data", "good.csv"], ["nomodel.npz", "no such file"]),
    (["predict", "--model", "good.csv", "--data", "good.csv"], ["good.csv", "not a fastmlp model file"]),
    (["info", "bad.csv"], ["bad.csv", "not a fastmlp model file"]),
])
def test_errors_exit_2_naming_the_file(files, args, expected):
    line = error(run(args, files))
    for s in expected:
        assert s in line, (s, line)


def test_error_regress_on_text_target_names_cell(tmp_path):
    write_rows(tmp_path / "t.csv", ["x", "kind"], [[1, "a"], [2, "b"]])
    line = error(run(["train", "--data", "t.csv", "--task", "regress"], tmp_path, script=True))
    assert "t.csv:2:2" in line and "'kind'" in line and "'a' is not a number" in line


def test_error_predict_missing_column(tmp_path):
    write_rows(tmp_path / "d.csv", ["a", "b", "c", "y"], [[i, i * 2 % 5, i % 7, i % 2] for i in range(40)])
    ok(run(["train", "--data", "d.csv", "--epochs", "1", "--no-plot", "-q", "--out", "m.npz"], tmp_path))
    write_rows(tmp_path / "new.csv", ["a", "c"], [[1, 2]])
    line = error(run(["predict", "--model", "m.npz", "--data", "new.csv"], tmp_path))
    assert "new.csv" in line and "'b'" in line
    write_rows(tmp_path / "other.csv", ["p", "q", "r"], [[1, 2, 3], [4, 5, 6]])  # other names, same count
    proc = ok(run(["predict", "--model", "m.npz", "--data", "other.csv"], tmp_path))
    assert "warning" in proc.stderr and "in order" in proc.stderr and len(read_csv(proc.stdout)[1]) == 2
    write_rows(tmp_path / "wide.csv", ["p", "q", "r", "s", "t"], [[1, 2, 3, 4, 5]])
    line = error(run(["predict", "--model", "m.npz", "--data", "wide.csv"], tmp_path))
    assert "wide.csv" in line and "'a'" in line


def test_bad_options_are_usage_errors(tmp_path):
    for args in (["train", "--hidden", "12,x"], ["train", "--epochs", "0"], ["train", "--val-split", "1.5"],
                 ["frobnicate"], [], ["train", "--bogus"]):
        proc = run(args, tmp_path)
        assert proc.returncode == 2 and "usage: fastmlp" in proc.stderr and "Traceback" not in proc.stderr, args


def test_help_and_version(tmp_path):
    out = ok(run(["--help"], tmp_path)).stdout
    assert all(c in out for c in ("train", "predict", "info", "bench"))
    assert ok(run(["--version"], tmp_path, script=True)).stdout.strip() == f"fastmlp {fm.__version__}"


def test_bench_dispatch_and_missing_script(tmp_path):
    fake = tmp_path / "fake_bench.py"
    fake.write_text("def main(argv=None):\n    print('BENCH', argv)\n    return 0\n")
    proc = ok(run(["bench", "--quick", "--configs", "small"], tmp_path, env={"FASTMLP_BENCH": str(fake)}))
    assert f"BENCH ['--quick', '--configs', 'small', '--out-dir', {str(tmp_path)!r}]" in proc.stdout
    proc = ok(run(["bench", "--out-dir", "elsewhere"], tmp_path, env={"FASTMLP_BENCH": str(fake)}))
    assert "BENCH ['--out-dir', 'elsewhere']" in proc.stdout
    line = error(run(["bench"], tmp_path, env={"FASTMLP_BENCH": str(tmp_path / "none.py")}))
    assert "bench/train_speed.py" in line and "none.py" in line


def test_bench_script_found_in_checkout():
    from fastmlp import cli

    script = cli._bench_script()
    repo_bench = Path(__file__).resolve().parents[1] / "bench" / "train_speed.py"
    if not Path(fm.__file__).resolve().is_relative_to(Path(__file__).resolve().parents[1]):
        pytest.skip("fastmlp is not installed from this checkout (editable)")
    assert script == repo_bench and script.is_file()


# --------------------------------------------------------------------------- outputs
@pytest.fixture
def small(tmp_path):
    X, label = blobs(60)
    write_rows(tmp_path / "d.csv", ["a", "b", "c", "label"], [[*x, lab] for x, lab in zip(X, label)])
    np.savez(tmp_path / "d.npz", X=X, y=(label == "yes").astype(np.int64))
    ok(run(["train", "--data", "d.csv", "--epochs", "1", "--hidden", "4", "-q", "--no-plot", "--out", "m.npz"],
           tmp_path))
    return tmp_path


def test_outputs_never_overwrite_an_input(small):
    (small / "link.npz").symlink_to(small / "d.npz")
    before = {p.name: p.read_bytes() for p in small.iterdir() if p.is_file()}
    for args in (["train", "--data", "d.npz", "--out", "d.npz", "--no-plot"],
                 ["train", "--data", "d.npz", "--out", "link.npz", "--no-plot"],
                 ["train", "--data", "d.csv", "--out", "new.npz", "--plot", "d.csv"],
                 ["train", "--data", "d.csv", "--test-data", "d.npz", "--out", "d.npz"],
                 ["predict", "--model", "m.npz", "--data", "d.csv", "--out", "m.npz"],
                 ["predict", "--model", "m.npz", "--data", "d.csv", "--out", "d.csv"]):
        line = error(run(args, small))
        assert "is the input file" in line and "refusing to overwrite" in line, (args, line)
    line = error(run(["train", "--data", "d.csv", "--out", "x.png", "--plot", "x.png"], small))
    assert "same file" in line
    assert {p.name: p.read_bytes() for p in small.iterdir() if p.is_file()} == before
    assert not (small / "new.npz").exists() and (small / "link.npz").is_symlink()


@pytest.mark.parametrize("args,expected", [
    (["--out", "missing/m.npz"], "does not exist"),
    (["--out", "sub"], "is a folder"),
    (["--plot", "missing/c.png"], "does not exist"),
    (["--plot", "sub"], "is a folder"),
    (["--plot", "curves.xyz"], "'xyz'"),
])
def test_unwritable_outputs_are_refused_before_training(small, args, expected):
    pytest.importorskip("matplotlib") if "--plot" in args else None
    (small / "sub").mkdir()
    proc = run(["train", "--data", "d.csv", "--epochs", "1", "-q", *args], small)
    line = error(proc)
    assert expected in line and "trained" not in proc.stdout and "data:" not in proc.stdout, (line, proc.stdout)
    proc = run(["predict", "--model", "m.npz", "--data", "d.csv", *args], small)
    if args[0] == "--out":
        assert expected in error(proc)


def _fail_fsync_of(monkeypatch, name_part):
    """os.fsync raises ENOSPC (a full disk) for the files whose name contains name_part."""
    import errno

    real = os.fsync

    def fsync(fd):
        if name_part in os.path.basename(os.readlink(f"/proc/self/fd/{fd}")):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to tell the files apart")
def test_a_full_disk_keeps_the_previous_outputs(small, monkeypatch, capsys):
    from fastmlp import cli

    (small / "p.csv").write_text("previous\n")
    (small / "m.npz").rename(small / "model.npz")
    (small / "old.npz").write_bytes(b"old model")
    (small / "c.png").write_bytes(b"old plot")
    _fail_fsync_of(monkeypatch, "p.csv.")
    assert cli.main(["predict", "--model", str(small / "model.npz"), "--data", str(small / "d.csv"),
                     "--out", str(small / "p.csv")]) == 2
    assert "No space left" in capsys.readouterr().err
    _fail_fsync_of(monkeypatch, "old.npz.")
    assert cli.main(["train", "--data", str(small / "d.csv"), "--epochs", "1", "-q", "--no-plot",
                     "--out", str(small / "old.npz")]) == 2
    if importlib.util.find_spec("matplotlib"):
        _fail_fsync_of(monkeypatch, "c.png.")
        assert cli.main(["train", "--data", str(small / "d.csv"), "--epochs", "1", "-q",
                         "--out", str(small / "new.npz"), "--plot", str(small / "c.png")]) == 2
        assert fm.load(small / "new.npz").in_features == 3  # the model was written before the plot failed
    assert (small / "p.csv").read_text() == "previous\n"
    assert (small / "old.npz").read_bytes() == b"old model" and (small / "c.png").read_bytes() == b"old plot"
    assert not [p.name for p in small.iterdir() if p.name.endswith(".tmp")]


def test_predict_output_is_replaced_whole(small):
    (small / "p.csv").write_text("x\n" * 1000)
    ok(run(["predict", "--model", "m.npz", "--data", "d.csv", "--out", "p.csv"], small))
    header, body = read_csv(small / "p.csv")
    assert header == ["label"] and len(body) == 60


def test_bench_never_runs_a_file_beside_an_installed_package(tmp_path):
    """An installed copy of fastmlp (site-packages/fastmlp) must not run lib/bench/train_speed.py, which
    is where '<package>/../../bench' points from there."""
    site = tmp_path / "lib" / "site-packages"
    shutil.copytree(Path(fm.__file__).parent, site / "fastmlp", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "lib" / "bench").mkdir()
    (tmp_path / "lib" / "bench" / "train_speed.py").write_text("def main(argv=None):\n    print('PLANTED')\n")
    proc = run(["bench", "--quick"], tmp_path, env={"PYTHONPATH": str(site), "FASTMLP_BENCH": ""})
    line = error(proc)
    assert "PLANTED" not in proc.stdout and "source checkout" in line


# --------------------------------------------------------------------------- architecture options
def test_activation_choices_are_the_estimators_names(tmp_path, monkeypatch, capsys):
    from fastmlp import _mlp, cli

    assert set(cli.ACTIVATIONS) == set(_mlp.ACTIVATIONS) | {"sigmoid"}
    monkeypatch.chdir(tmp_path)
    X, label = blobs(60)
    np.savez("d.npz", X=X, y=(label == "yes").astype(np.int64))
    for name in cli.ACTIVATIONS:
        assert cli.main(["train", "--data", "d.npz", "--epochs", "1", "--hidden", "4,3", "--activation", name,
                         "-q", "--no-plot", "--out", f"{name}.npz"]) == 0, name
        model = fm.load(f"{name}.npz")
        act = _mlp.ACTIVATIONS[cli.ACTIVATION_ALIASES.get(name, name)]
        assert [type(m) for m in model] == [fm.Linear, act, fm.Linear, act, fm.Linear], name
        assert model._file_extra["training"]["activation"] == name
    capsys.readouterr()
    with pytest.raises(SystemExit):
        cli.main(["train", "--activation", "swish"])
    assert "invalid choice: 'swish'" in capsys.readouterr().err


@pytest.mark.parametrize("norm, norm_cls", [("batch", fm.BatchNorm1d), ("layer", fm.LayerNorm)])
def test_normalization_and_residual_train_info_predict(tmp_path, norm, norm_cls):
    X, label = blobs(200)
    write_rows(tmp_path / "d.csv", ["a", "b", "c", "label"], [[*x, lab] for x, lab in zip(X, label)])
    proc = ok(run(["train", "--data", "d.csv", "--hidden", "16,16,8", "--normalization", norm, "--residual",
                   "--dropout", "0.1", "--epochs", "30", "--batch-size", "16", "--no-plot", "-q", "--out", "m.npz"],
                  tmp_path))
    assert f"model: 3-16-16-8-2 relu, dropout 0.1, {norm} norm, residual" in proc.stdout
    assert metric(proc.stdout, "accuracy") > 0.85
    model = fm.load(tmp_path / "m.npz")
    block = [fm.Linear, norm_cls, fm.ReLU, fm.Dropout]
    assert [type(m) for m in model] == block + [fm.Residual] + block + [fm.Linear]
    assert [type(m) for m in model[4].block] == block and model[4].block[0].in_features == 16
    assert model._file_extra["training"]["normalization"] == norm and model._file_extra["training"]["residual"]
    info = ok(run(["info", "m.npz"], tmp_path)).stdout
    assert f"normalization {norm}, residual yes" in info
    ok(run(["predict", "--model", "m.npz", "--data", "d.csv", "--out", "p.csv"], tmp_path))
    plain = ok(run(["train", "--data", "d.csv", "--epochs", "1", "--hidden", "4", "--no-plot", "-q", "--out",
                    "plain.npz"], tmp_path))
    assert "norm" not in plain.stdout.split("model:")[1].split("\n")[0]
    assert "normalization none, residual no" in ok(run(["info", "plain.npz"], tmp_path)).stdout


def test_normalization_and_residual_errors(tmp_path):
    X, label = blobs(61)
    write_rows(tmp_path / "d.csv", ["a", "b", "c", "label"], [[*x, lab] for x, lab in zip(X, label)])
    base = ["train", "--data", "d.csv", "--epochs", "1", "--no-plot", "-q", "--test-split", "0", "--val-split", "0"]
    line = error(run(base + ["--hidden", "16,8", "--residual"], tmp_path))
    assert "--residual" in line and "--hidden 16,8" in line and "e.g. --hidden 64,64,64" in line
    line = error(run(base + ["--normalization", "batch", "--batch-size", "20"], tmp_path))
    assert "61 training samples in batches of 20 leave a batch of 1 sample" in line and "--batch-size" in line
    ok(run(base + ["--normalization", "layer", "--batch-size", "20"], tmp_path))  # LayerNorm: any batch
    proc = run(base + ["--normalization", "group"], tmp_path)
    assert proc.returncode == 2 and "invalid choice: 'group'" in proc.stderr


# --------------------------------------------------------------------------- optimizers
@pytest.mark.parametrize("name", ["adam", "adamw", "nadam", "radam", "adamax", "sgd", "asgd", "rmsprop", "adagrad",
                                  "adadelta"])
def test_every_optimizer_name_builds_its_class_with_torchs_default_lr(name):
    import argparse
    import inspect

    from fastmlp import cli

    model = fm.Sequential(fm.Linear(3, 2))
    args = argparse.Namespace(optimizer=name, lr=None, weight_decay=None, momentum=0)
    opt = cli._build_optimizer(model, args)
    assert type(opt).__name__.lower() == name
    torch_default = inspect.signature(type(opt)).parameters["lr"].default
    assert opt.param_groups[0]["lr"] == (1e-2 if name == "sgd" else torch_default)  # the CLI's sgd default: 1e-2
    assert name in cli.OPTIMIZERS


def test_train_with_a_new_optimizer_name(tmp_path):
    X, label = blobs()
    write_rows(tmp_path / "train.csv", ["f1", "f2", "f3", "label"],
               [[f"{a:.6f}", f"{b:.6f}", f"{c:.6f}", lab] for (a, b, c), lab in zip(X, label)])
    proc = ok(run(["train", "--data", "train.csv", "--target", "label", "--hidden", "8", "--epochs", "30",
                   "--optimizer", "nadam", "--out", "m.npz", "--no-plot"], tmp_path))
    assert "nadam lr=0.002" in proc.stdout and metric(proc.stdout, "accuracy") > 0.85
