"""fastmlp.datasets: the shipped digits, and the CSV / NPZ / IDX loaders on small
files written here, including every error they report (which must name the
file, and the line and column where that applies)."""
import gzip
import pickle
import struct
import subprocess
import sys

import numpy as np
import pytest

import fastmlp as fm
from fastmlp.datasets import DataError, Dataset, load_csv, load_digits, load_idx, load_npz, train_test_split


# --------------------------------------------------------------------------- digits
def test_digits_shape_values_and_classes():
    X, y = load_digits()
    assert X.shape == (1797, 64) and X.dtype == np.float32 and X.flags.c_contiguous
    assert y.shape == (1797,) and y.dtype == np.int64
    assert X.min() == 0 and X.max() == 16 and np.all(X == np.round(X))
    # class counts of the UCI test set as shipped with scikit-learn
    assert np.bincount(y).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    # first image (a zero), row 0 of scikit-learn's digits.csv.gz
    assert X[0, :16].tolist() == [0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0]
    assert y[:10].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    ds = load_digits(dtype="float64")
    assert ds.X.dtype == np.float64 and np.array_equal(ds.X, X)
    assert len(ds.feature_names) == 64 and ds.feature_names[9] == "pixel_1_1" and ds.target_name == "digit"
    assert fm.datasets is not None and "datasets" in fm.__all__


def test_digits_does_not_import_sklearn():
    code = ("import sys, fastmlp.datasets as d; X, y = d.load_digits(); "
            "assert X.shape == (1797, 64); print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_digits_equal_sklearn():
    datasets = pytest.importorskip("sklearn.datasets")
    ref = datasets.load_digits()
    X, y = load_digits()
    assert np.array_equal(X, ref.data.astype(np.float32)) and np.array_equal(y, ref.target)


def test_digits_bad_dtype():
    with pytest.raises(ValueError, match="float32 or float64"):
        load_digits(dtype="int32")


# --------------------------------------------------------------------------- CSV
def write(path, text, gz=False):
    if gz:
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def test_csv_numeric_default_target_last(tmp_path):
    p = write(tmp_path / "a.csv", "a,b,c\n1,2,0\n3.5,-4e2,1\n\n5, 6 ,1\n")
    ds = load_csv(p)
    X, y = ds  # unpacks as a pair
    assert X.dtype == np.float32 and X.tolist() == [[1, 2], [3.5, -400], [5, 6]]
    assert y.dtype == np.int64 and y.tolist() == [0, 1, 1]
    assert ds.feature_names == ["a", "b"] and ds.target_name == "c" and ds.source == str(p)


@pytest.mark.parametrize("target,feat,ycol", [("b", ["a", "c"], 1), (0, ["b", "c"], 0), (-2, ["a", "c"], 1)])
def test_csv_target_by_name_or_index(tmp_path, target, feat, ycol):
    rows = np.array([[1, 2.5, 3], [4, 5.5, 6], [7, 8.5, 9]])
    p = write(tmp_path / "a.csv", "a,b,c\n" + "\n".join(",".join(f"{v:g}" for v in r) for r in rows) + "\n")
    ds = load_csv(p, target=target, dtype="float64")
    assert ds.feature_names == feat
    cols = [i for i in range(3) if i != ycol]
    assert ds.X.dtype == np.float64 and np.array_equal(ds.X, rows[:, cols])
    assert np.array_equal(ds.y, rows[:, ycol])
    assert ds.y.dtype == (np.float64 if ycol == 1 else np.int64)


def test_csv_no_target_and_feature_selection(tmp_path):
    p = write(tmp_path / "a.csv", "a,b,c,name\n1,2,3,x\n4,5,6,y\n")
    ds = load_csv(p, target=None, features=["c", "a"])
    assert ds.y is None and ds.target_name is None and ds.feature_names == ["c", "a"]
    assert ds.X.tolist() == [[3, 1], [6, 4]]
    ds = load_csv(p, target="name", features=[1])
    assert ds.X.tolist() == [[2], [5]] and ds.y.tolist() == ["x", "y"]


def test_csv_text_labels_quotes_bom_gzip_tabs(tmp_path):
    text = '\ufeff"first col"\tlabel\n"1.5"\tcat\n2\t"dog, big"\n'
    for gz in (False, True):
        p = write(tmp_path / f"t{gz}.tsv", text, gz=gz)
        ds = load_csv(p, target="label", delimiter="\t")
        assert ds.feature_names == ["first col"]
        assert ds.X.tolist() == [[1.5], [2.0]] and ds.y.tolist() == ["cat", "dog, big"]


def test_csv_fast_and_slow_paths_agree(tmp_path):
    rng = np.random.default_rng(0)
    A = rng.normal(size=(50, 4)) * 1000
    body = "\n".join(",".join(repr(float(v)) for v in r) for r in A)
    p1 = write(tmp_path / "num.csv", "w,x,y,z\n" + body + "\n")
    # the same numbers plus a text column: parsed by the csv-module path
    p2 = write(tmp_path / "txt.csv", "w,x,y,z,s\n" + "\n".join(
        ",".join(repr(float(v)) for v in r) + ",t" for r in A) + "\n")
    a = load_csv(p1, target=None, dtype="float64")
    b = load_csv(p2, target="s", dtype="float64")
    assert np.array_equal(a.X, A) and np.array_equal(b.X, A)


def csv_error(tmp_path, text, **kw):
    p = write(tmp_path / "bad.csv", text)
    with pytest.raises(DataError) as e:
        load_csv(p, **kw)
    msg = str(e.value)
    assert str(p) in msg and "\n" not in msg
    return msg


def test_csv_non_numeric_cell_names_line_and_column(tmp_path):
    msg = csv_error(tmp_path, "a,b,c\n1,2,3\n4,oops,6\n")
    assert "bad.csv:3:2" in msg and "'b'" in msg and "'oops' is not a number" in msg


def test_csv_line_numbers_count_blank_lines(tmp_path):
    msg = csv_error(tmp_path, "\na,b\n1,2\n\n3,x y\n", target=None)
    assert "bad.csv:5:2" in msg


@pytest.mark.parametrize("cell,what", [("", "empty cell"), ("nan", "not a finite number"),
                                       ("-inf", "not a finite number")])
def test_csv_missing_or_non_finite_cell(tmp_path, cell, what):
    msg = csv_error(tmp_path, f"a,b,c\n1,2,3\n4,5,6\n7,{cell},9\n")
    assert "bad.csv:4:2" in msg and what in msg


@pytest.mark.parametrize("row", ["1,2", "1,2,3,4"])
def test_csv_ragged_row(tmp_path, row):
    msg = csv_error(tmp_path, f"a,b,c\n1,2,3\n{row}\n")
    assert "bad.csv:3" in msg and f"{len(row.split(','))} fields" in msg and "3 columns" in msg


def test_csv_unknown_target_lists_columns(tmp_path):
    msg = csv_error(tmp_path, "alpha,beta,gamma\n1,2,3\n", target="delta")
    assert "'delta'" in msg and "'alpha', 'beta', 'gamma'" in msg


def test_csv_unknown_feature_and_index_out_of_range(tmp_path):
    assert "'zz'" in csv_error(tmp_path, "a,b\n1,2\n", features=["a", "zz"])
    assert "index 5" in csv_error(tmp_path, "a,b\n1,2\n", target=5)
    assert "both the target and a feature" in csv_error(tmp_path, "a,b\n1,2\n", target="a", features=["a"])


def test_csv_ambiguous_column_name(tmp_path):
    assert "ambiguous" in csv_error(tmp_path, "a,a,b\n1,2,3\n", target="a")


def test_csv_empty_target_cell(tmp_path):
    msg = csv_error(tmp_path, "a,b\n1,2\n3,\n")
    assert "bad.csv:3:2" in msg and "target" in msg


def test_csv_empty_file_and_header_only(tmp_path):
    assert "empty file" in csv_error(tmp_path, "")
    assert "empty file" in csv_error(tmp_path, "\n  \n")
    assert "no data rows" in csv_error(tmp_path, "a,b\n")
    assert "no feature columns" in csv_error(tmp_path, "a\n1\n")


def test_csv_missing_file_folder_and_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_csv(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="folder"):
        load_csv(tmp_path)
    p = write(tmp_path / "a.csv", "a,b\n1,2\n")
    with pytest.raises(ValueError, match="delimiter"):
        load_csv(p, delimiter=";;")
    with pytest.raises(TypeError):
        load_csv(p, target=1.5)
    with pytest.raises(TypeError):
        load_csv(12345)


def test_csv_not_utf8(tmp_path):
    p = tmp_path / "bin.csv"
    p.write_bytes(b"\xff\xfe\x00a,b\n")
    with pytest.raises(DataError, match="bin.csv.*UTF-8"):
        load_csv(p)


@pytest.mark.parametrize("damage", ["crc", "truncated", "bad_utf8_in_body"])
def test_csv_gz_damaged_after_the_header(tmp_path, damage):
    # the header reads fine; the failure comes while reading the body (found by fuzzing)
    text = b"a,b\n" + b"1,2\n" * 5000
    if damage == "bad_utf8_in_body":
        text += b"\xff\xfe,3\n"
    gz = bytearray(gzip.compress(text))
    if damage == "crc":
        gz[-8] ^= 0xFF  # the stored CRC-32
    elif damage == "truncated":
        gz = gz[:-12]
    p = tmp_path / "d.csv.gz"
    p.write_bytes(bytes(gz))
    with pytest.raises(DataError, match="d.csv.gz"):
        load_csv(p)


# --------------------------------------------------------------------------- NPZ
def test_npz_roundtrip_flatten_and_types(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(6, 2, 3))
    y = np.arange(6).reshape(6, 1)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    ds = load_npz(tmp_path / "d.npz")
    assert ds.X.shape == (6, 6) and ds.X.dtype == np.float32
    np.testing.assert_array_equal(ds.X, X.reshape(6, 6).astype(np.float32))
    assert ds.y.tolist() == list(range(6))  # (n, 1) -> (n,)
    np.savez(tmp_path / "s.npz", X=np.eye(2, dtype=np.uint8), y=np.array([b"a", b"b"]))
    s = load_npz(tmp_path / "s.npz", dtype="float64")
    assert s.X.dtype == np.float64 and s.y.tolist() == ["a", "b"]
    np.savez(tmp_path / "noy.npz", X=np.ones((3, 2)))
    assert load_npz(tmp_path / "noy.npz").y is None
    np.savez(tmp_path / "multi.npz", X=np.ones((3, 2)), y=np.ones((3, 2)))
    assert load_npz(tmp_path / "multi.npz").y.shape == (3, 2)


def npz_error(path):
    with pytest.raises(DataError) as e:
        load_npz(path)
    assert str(path) in str(e.value)
    return str(e.value)


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "k.npz", A=np.ones(3), B=np.ones(3))
    msg = npz_error(tmp_path / "k.npz")
    assert "'X'" in msg and "A, B" in msg
    np.save(tmp_path / "one.npy", np.ones((2, 2)))
    assert ".npy" in npz_error(tmp_path / "one.npy")
    (tmp_path / "junk.npz").write_bytes(b"this is not a zip file")
    assert "not a readable .npz" in npz_error(tmp_path / "junk.npz")
    np.savez(tmp_path / "obj.npz", X=np.array([{"a": 1}, None], dtype=object))
    assert "'X'" in npz_error(tmp_path / "obj.npz")
    np.savez(tmp_path / "len.npz", X=np.ones((4, 2)), y=np.ones(3))
    assert "3 rows but X has 4" in npz_error(tmp_path / "len.npz")
    np.savez(tmp_path / "1d.npz", X=np.ones(4))
    assert "2-D" in npz_error(tmp_path / "1d.npz")
    X = np.ones((3, 2))
    X[2, 1] = np.nan
    np.savez(tmp_path / "nan.npz", X=X)
    assert "X[2, 1]" in npz_error(tmp_path / "nan.npz")
    np.savez(tmp_path / "ynan.npz", X=np.ones((3, 2)), y=np.array([0.0, np.inf, 1.0]))
    assert "y[1]" in npz_error(tmp_path / "ynan.npz")
    np.savez(tmp_path / "txt.npz", X=np.array([["a", "b"]]))
    assert "numeric" in npz_error(tmp_path / "txt.npz")
    import zipfile

    with zipfile.ZipFile(tmp_path / "raw.npz", "w") as zf:  # a member 'X' that is not a .npy file (found by fuzzing)
        zf.writestr("X", b"\x00\x01 raw bytes")
    assert "'X' is not a NumPy array" in npz_error(tmp_path / "raw.npz")
    with pytest.raises(FileNotFoundError, match="absent.npz"):
        load_npz(tmp_path / "absent.npz")


# --------------------------------------------------------------------------- IDX
IDX_CODES = {np.dtype(">u1"): 0x08, np.dtype(">i1"): 0x09, np.dtype(">i2"): 0x0B, np.dtype(">i4"): 0x0C,
             np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


def idx_bytes(arr, dtype=">u1"):
    arr = np.asarray(arr).astype(dtype)
    head = bytes([0, 0, IDX_CODES[np.dtype(dtype)], arr.ndim]) + b"".join(struct.pack(">I", s) for s in arr.shape)
    return head + arr.tobytes()


def write_idx(path, arr, dtype=">u1", gz=False):
    data = idx_bytes(arr, dtype)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize("gz", [False, True])
def test_idx_images_and_labels(tmp_path, gz):
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, size=(7, 3, 4))
    lab = rng.integers(0, 10, size=7)
    ip = write_idx(tmp_path / "img", img, gz=gz)
    lp = write_idx(tmp_path / "lab", lab, gz=gz)
    ds = load_idx(ip, lp)
    assert ds.X.shape == (7, 12) and ds.X.dtype == np.float32
    np.testing.assert_allclose(ds.X, img.reshape(7, 12) / 255, rtol=1e-6)
    assert ds.y.dtype == np.int64 and np.array_equal(ds.y, lab)
    assert ds.feature_names[5] == "pixel_1_1" and ds.target_name == "label"
    raw = load_idx(ip, normalize=False, dtype="float64")
    assert raw.y is None and np.array_equal(raw.X, img.reshape(7, 12))


@pytest.mark.parametrize("dtype", [">i1", ">i2", ">i4", ">f4", ">f8"])
def test_idx_other_types(tmp_path, dtype):
    arr = np.arange(-6, 6).reshape(3, 4) * (1.5 if "f" in dtype else 1)
    ds = load_idx(write_idx(tmp_path / "x", arr, dtype), normalize=True, dtype="float64")
    assert np.array_equal(ds.X, arr)  # only unsigned bytes are scaled to [0, 1]


def idx_error(*paths):
    with pytest.raises(DataError) as e:
        load_idx(*paths)
    return str(e.value)


def test_idx_errors(tmp_path):
    img = np.zeros((5, 2, 2))
    ip = write_idx(tmp_path / "img", img)
    lp = write_idx(tmp_path / "lab", np.zeros(5))
    short = write_idx(tmp_path / "short-lab", np.zeros(4))
    msg = idx_error(ip, short)
    assert "4 labels" in msg and "5 images" in msg and str(short) in msg and str(ip) in msg
    msg = idx_error(lp)
    assert str(lp) in msg and "1-D" in msg and "0x00000803" in msg
    msg = idx_error(ip, ip)
    assert "3-D" in msg and "0x00000801" in msg
    (tmp_path / "text").write_text("hello world")
    msg = idx_error(tmp_path / "text")
    assert "not an IDX file" in msg and "0x68656C6C" in msg
    (tmp_path / "tiny").write_bytes(b"\0\0")
    assert "not an IDX file" in idx_error(tmp_path / "tiny")
    (tmp_path / "code").write_bytes(bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 0]))
    assert "type code 0x07" in idx_error(tmp_path / "code")
    (tmp_path / "zero").write_bytes(bytes([0, 0, 0x08, 0]))
    assert "0 dimensions" in idx_error(tmp_path / "zero")
    (tmp_path / "head").write_bytes(bytes([0, 0, 0x08, 3, 0, 0, 0, 5]))
    assert "truncated IDX header" in idx_error(tmp_path / "head")
    data = idx_bytes(img)
    (tmp_path / "trunc").write_bytes(data[:-3])
    msg = idx_error(tmp_path / "trunc")
    assert "5 x 2 x 2" in msg and "truncated" in msg
    (tmp_path / "trail").write_bytes(data + b"xx")
    assert "trailing bytes" in idx_error(tmp_path / "trail")
    (tmp_path / "bad.gz").write_bytes(gzip.compress(data)[:-10])
    assert str(tmp_path / "bad.gz") in idx_error(tmp_path / "bad.gz")
    with pytest.raises(FileNotFoundError, match="missing-labels"):
        load_idx(ip, tmp_path / "missing-labels")


# --------------------------------------------------------------------------- split and Dataset
def test_train_test_split_sizes_disjoint_seeded():
    X = np.arange(20).reshape(10, 2)
    y = np.arange(10)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, seed=3)
    assert len(yte) == 3 and len(ytr) == 7  # ceil(0.25 * 10)
    assert sorted(np.concatenate([ytr, yte]).tolist()) == list(range(10))
    assert np.array_equal(Xtr[:, 0] // 2, ytr) and np.array_equal(Xte[:, 0] // 2, yte)
    again = train_test_split(X, y, test_size=0.25, seed=3)
    assert np.array_equal(again[3], yte)
    others = {tuple(train_test_split(X, y, test_size=0.25, seed=s)[3]) for s in range(6)}
    assert len(others) > 1
    a, b = train_test_split(X, test_size=4, seed=0)
    assert a.shape == (6, 2) and b.shape == (4, 2)


def test_train_test_split_stratified():
    y = np.array([0] * 40 + [1] * 10 + [2] * 20)
    X = np.arange(len(y))
    _, _, ytr, yte = train_test_split(X, y, test_size=0.2, seed=0, stratify=y)
    assert np.bincount(yte).tolist() == [8, 2, 4] and np.bincount(ytr).tolist() == [32, 8, 16]


@pytest.mark.parametrize("size", [0.0, 1.0, 0, 10, -1, True, "half"])
def test_train_test_split_bad_size(size):
    with pytest.raises((ValueError, TypeError)):
        train_test_split(np.zeros((10, 2)), np.zeros(10), test_size=size)


def test_train_test_split_length_mismatch():
    with pytest.raises(ValueError, match="10 rows but y has 9"):
        train_test_split(np.zeros((10, 2)), np.zeros(9))


def test_dataset_pickles_and_repr():
    ds = Dataset(np.ones((2, 3), np.float32), np.array([0, 1]), ["a", "b", "c"], "t", "src")
    back = pickle.loads(pickle.dumps(ds))
    assert isinstance(back, Dataset) and back.feature_names == ["a", "b", "c"] and back.target_name == "t"
    assert np.array_equal(back.X, ds.X) and np.array_equal(back.y, ds.y)
    assert "float32(2, 3)" in repr(ds)
