"""Data sets and file loaders.

- :func:`load_digits`: the 8x8 handwritten digits shipped with fastmlp (1797 images, 10 classes).
- :func:`load_csv`: a delimited text file with a header row (optionally gzip-compressed).
- :func:`load_npz`: a NumPy ``.npz`` archive with arrays ``X`` (and ``y``).
- :func:`load_idx`: MNIST / Fashion-MNIST IDX files (``.gz`` or raw).
- :func:`train_test_split`: a seeded random (optionally stratified) split.

Every loader returns a :class:`Dataset`, a pair ``(X, y)`` that also carries
``feature_names`` and ``target_name``, so ``X, y = load_csv(path)`` works.
``X`` is a C-contiguous 2-D float array (float32 by default). A file that cannot
be used raises :class:`DataError` (a ValueError) whose message names the file
and, where it applies, the line and column; a missing file raises
FileNotFoundError naming it. NumPy is the only dependency.
"""
from __future__ import annotations

import csv
import gzip
import io
import math
import os
import re
import stat
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence, TextIO

import numpy as np

from ._files import NpyMembers, open_regular

__all__ = ["DataError", "Dataset", "load_digits", "load_csv", "load_npz", "load_idx", "train_test_split"]

_DATA_DIR = Path(__file__).resolve().parent / "data"
_GZIP_MAGIC = b"\x1f\x8b"


class DataError(ValueError):
    """A data file that cannot be used; the message names the file (and the line and column)."""


class Dataset(tuple[Any, ...]):
    """A pair ``(X, y)`` with metadata: ``feature_names`` (list of str, or None),
    ``target_name`` (str or None) and ``source`` (where it came from).
    ``y`` is None when the data has no target."""

    feature_names: list[str] | None
    target_name: str | None
    source: str | None
    # set by the CSV reader's slow path only: the file line of every target value and the
    # target's 1-based column, for error messages about the target (fastmlp train --task regress)
    _target_lines: list[int] | None = None
    _target_column: int | None = None

    def __new__(cls, X: np.ndarray, y: np.ndarray | None, feature_names: Sequence[str] | None = None,
                target_name: str | None = None, source: str | None = None) -> "Dataset":
        self = tuple.__new__(cls, (X, y))
        self.feature_names = None if feature_names is None else [str(n) for n in feature_names]
        self.target_name = target_name
        self.source = source
        return self

    def __getnewargs__(self) -> tuple:  # type: ignore[override]
        return (self[0], self[1], self.feature_names, self.target_name, self.source)

    @property
    def X(self) -> np.ndarray:
        return self[0]

    @property
    def y(self) -> np.ndarray | None:
        return self[1]

    def __repr__(self) -> str:
        y = "None" if self[1] is None else f"{self[1].dtype}{self[1].shape}"
        return f"Dataset(X={self[0].dtype}{self[0].shape}, y={y}, source={self.source!r})"


# --------------------------------------------------------------------------- helpers
def _path(path: Any) -> str:
    try:
        p = os.fspath(path)
    except TypeError:
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}") from None
    try:
        mode = os.stat(p).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"{p}: no such file") from None
    if stat.S_ISDIR(mode):
        raise DataError(f"{p}: is a folder, not a file")
    if not stat.S_ISREG(mode):  # a FIFO would block the reader, /dev/zero would fill the memory
        raise DataError(f"{p}: not a regular file (a FIFO, device or socket); give a data file")
    return p


def _is_gzip(path: str) -> bool:
    with open_regular(path) as f:
        return f.read(2) == _GZIP_MAGIC


class _GzipReader(gzip.GzipFile):
    """A GzipFile that closes the file it reads from."""

    def __init__(self, raw: Any) -> None:
        super().__init__(fileobj=raw, mode="rb")
        self._raw = raw

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._raw.close()


def _open_binary(path: str) -> Any:
    """path opened for reading (regular files only), decompressed if it starts with the gzip magic."""
    raw = open_regular(path)
    try:
        gz = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        return _GzipReader(raw) if gz else raw
    except BaseException:
        raw.close()
        raise


def _float_dtype(dtype: Any) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dt}")
    return dt


def _as_target(values: np.ndarray) -> np.ndarray:
    """Numeric target: int64 when every value is a whole number, else float64."""
    v = np.asarray(values, dtype=np.float64)
    if v.size and np.all(v == np.round(v)) and np.all(np.abs(v) < 2**53):
        return v.astype(np.int64)
    return v


def _column_list(names: Sequence[str], limit: int = 12) -> str:
    shown = [repr(n) for n in names]
    if len(shown) > limit:
        shown = shown[:limit - 2] + ["...", shown[-1]]
    return ", ".join(shown) + f" ({len(names)} columns)"


# --------------------------------------------------------------------------- digits
def load_digits(dtype: Any = np.float32) -> Dataset:
    """The 8x8 handwritten digits (UCI, as shipped with scikit-learn): X of shape
    (1797, 64) with pixel values 0..16, y int64 digits 0..9. No download."""
    dt = _float_dtype(dtype)
    path = _DATA_DIR / "digits.csv.gz"
    with gzip.open(path, "rt") as f:
        a = np.loadtxt(f, delimiter=",", dtype=np.float64, ndmin=2)
    X = np.ascontiguousarray(a[:, :-1], dtype=dt)
    y = a[:, -1].astype(np.int64)
    names = [f"pixel_{r}_{c}" for r in range(8) for c in range(8)]
    return Dataset(X, y, names, "digit", source="digits (shipped with fastmlp)")


# --------------------------------------------------------------------------- CSV
def _open_text(path: str) -> TextIO:
    return io.TextIOWrapper(_open_binary(path), encoding="utf-8-sig", newline="")


def read_csv_header(path: Any, delimiter: str = ",") -> list[str]:
    """The column names of a CSV file's header row."""
    p = _path(path)
    with _open_text(p) as f:
        return _header(p, f, delimiter)[0]


@contextmanager
def _reading(p: str) -> Iterator[None]:
    """Decoding and decompression failures while reading p become DataError."""
    try:
        yield
    except UnicodeDecodeError as e:
        raise DataError(f"{p}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile (a damaged .gz) is an OSError
        raise DataError(f"{p}: cannot read ({e})") from None


def _header(p: str, f: Any, delimiter: str) -> tuple[list[str], int]:
    line_no = 0
    with _reading(p):
        for line in f:
            line_no += 1
            if "\0" in line:
                raise DataError(f"{p}:{line_no}: a NUL byte: a binary file, not CSV text")
            if line.strip():
                names = [n.strip() for n in next(csv.reader([line], delimiter=delimiter))]
                return names, line_no
    raise DataError(f"{p}: empty file; expected a header row of column names")


def _resolve(p: str, names: list[str], col: Any, what: str) -> int:
    n = len(names)
    if isinstance(col, (bool, np.bool_)):
        raise TypeError(f"{what} must be a column name or index, got {col!r}")
    if isinstance(col, (int, np.integer)):
        i = int(col)
        if not -n <= i < n:
            raise DataError(f"{p}: {what} column index {i} is out of range; the file has {n} columns")
        return i % n
    if isinstance(col, str):
        hits = [i for i, name in enumerate(names) if name == col]
        if not hits:
            raise DataError(f"{p}: no column named {col!r}; the columns are {_column_list(names)}")
        if len(hits) > 1:
            raise DataError(f"{p}: column name {col!r} is ambiguous: columns {', '.join(str(h + 1) for h in hits)} "
                            "have it")
        return hits[0]
    raise TypeError(f"{what} must be a column name or index, got {type(col).__name__}")


def load_csv(path: Any, target: Any = -1, delimiter: str = ",", features: Sequence[Any] | None = None,
             dtype: Any = np.float32) -> Dataset:
    """Read a delimited text file whose first non-empty line is a header row.

    target: the target column, by name or index (default -1, the last column);
    None for a file without a target (then ``y`` is None). features: the
    feature columns by name or index, in the order wanted (default: every column
    but the target; other columns are ignored). Feature cells must be finite
    numbers. A numeric target becomes int64 when all its values are whole
    numbers, else float64; a target with text values stays text (class labels).
    Files starting with the gzip magic bytes are decompressed.
    """
    p = _path(path)
    dt = _float_dtype(dtype)
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise ValueError(f"delimiter must be a single character, got {delimiter!r}")
    try:
        names, header_line, body, t, feat = _read_csv_text(p, target, delimiter, features)
    except (EOFError, zlib.error, UnicodeDecodeError) as e:  # e.g. a damaged .gz
        raise DataError(f"{p}: cannot read ({type(e).__name__}: {e})") from None
    try:
        ds = _fast_csv(p, body, names, t, feat, delimiter, dt)
    except Exception:  # any doubt (text cell, ragged row, warning...): the slow path decides and reports
        ds = _slow_csv(p, body, header_line, names, t, feat, delimiter, dt)
    bad = ~np.isfinite(ds.X)
    if bad.any():  # a finite number in the file that the dtype cannot hold (1e39 in float32)
        r, c = np.argwhere(bad)[0]
        raise DataError(f"{p}: data row {r + 1}, column {names[feat[c]]!r}: the value does not fit in {dt.name}")
    return ds


def _read_csv_text(p: str, target: Any, delimiter: str,
                   features: Sequence[Any] | None) -> tuple[list[str], int, str, int | None, list[int]]:
    """(column names, header line number, the text after the header, target index, feature indices)."""
    with _open_text(p) as f:
        names, header_line = _header(p, f, delimiter)
        ncols = len(names)
        t = None if target is None else _resolve(p, names, target, "target")
        if features is None:
            feat = [i for i in range(ncols) if i != t]
        else:
            if isinstance(features, (str, int)):
                raise TypeError("features must be a list of column names or indices")
            feat = [_resolve(p, names, c, "feature") for c in features]
            if t is not None and t in feat:
                raise DataError(f"{p}: column {names[t]!r} is both the target and a feature")
        if not feat:
            raise DataError(f"{p}: no feature columns (the header has only {_column_list(names)})")
        with _reading(p):
            body = f.read()
    nul = body.find("\0")
    if nul >= 0:
        raise DataError(f"{p}:{header_line + 1 + body.count(chr(10), 0, nul)}: a NUL byte: a binary file, not CSV text")
    return names, header_line, body, t, feat


# what both CSV paths read as a number: np.loadtxt's syntax (Python's float() also takes '1_000' and
# non-ASCII digits, which loadtxt refuses: the slow path refuses them too, so that the paths agree)
_NUMBER = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?|inf|infinity|nan)", re.IGNORECASE | re.ASCII)


def _number(s: str) -> float | None:
    return float(s) if _NUMBER.fullmatch(s) else None


def _fast_csv(p: str, body: str, names: list[str], t: int | None, feat: list[int], delimiter: str,
              dt: np.dtype) -> Dataset:
    """np.loadtxt on clean, all-numeric files (fast); anything else raises and
    the slow path finds and reports the exact cell."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "input contained no data" etc. -> slow path
        a = np.loadtxt(io.StringIO(body), delimiter=delimiter, dtype=np.float64, ndmin=2, quotechar='"',
                       comments=None)  # '#' is no comment in a CSV: a cell '#3' is an error
    if a.shape[0] == 0 or a.shape[1] != len(names) or not np.isfinite(a).all():
        raise ValueError("slow path")
    X = np.ascontiguousarray(a[:, feat], dtype=dt)
    y = None if t is None else _as_target(a[:, t])
    return Dataset(X, y, [names[i] for i in feat], None if t is None else names[t], source=p)


def _slow_csv(p: str, body: str, header_line: int, names: list[str], t: int | None, feat: list[int],
              delimiter: str, dt: np.dtype) -> Dataset:
    ncols = len(names)
    rows: list[list[float]] = []
    targets: list[str] = []
    target_lines: list[int] = []
    reader = csv.reader(io.StringIO(body), delimiter=delimiter)
    try:
        for row in reader:
            line = header_line + reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if len(row) != ncols:
                raise DataError(f"{p}:{line}: {len(row)} fields, but the header has {ncols} columns "
                                f"(ragged row)")
            vals = []
            for c in feat:
                s = row[c].strip()
                where = f"{p}:{line}:{c + 1}: column {names[c]!r}"
                if not s:
                    raise DataError(f"{where}: empty cell (missing value)")
                v = _number(s)
                if v is None:
                    raise DataError(f"{where}: {s!r} is not a number")
                if not math.isfinite(v):
                    raise DataError(f"{where}: {s!r} is not a finite number")
                vals.append(v)
            rows.append(vals)
            if t is not None:
                s = row[t].strip()
                if not s:
                    raise DataError(f"{p}:{line}:{t + 1}: target column {names[t]!r}: empty cell (missing value)")
                targets.append(s)
                target_lines.append(line)
    except csv.Error as e:
        raise DataError(f"{p}:{header_line + reader.line_num}: malformed CSV ({e})") from None
    if not rows:
        raise DataError(f"{p}: no data rows after the header")
    X = np.array(rows, dtype=dt).reshape(len(rows), len(feat))
    y = None
    if t is not None:
        parsed = [_number(s) for s in targets]
        if all(v is not None and math.isfinite(v) for v in parsed):
            y = _as_target(np.array(parsed, dtype=np.float64))
        else:
            y = np.array(targets)  # text class labels
    ds = Dataset(X, y, [names[i] for i in feat], None if t is None else names[t], source=p)
    ds._target_lines = target_lines  # for error messages about the target (fastmlp train --task regress)
    ds._target_column = None if t is None else t + 1
    return ds


# --------------------------------------------------------------------------- NPZ
def load_npz(path: Any, dtype: Any = np.float32) -> Dataset:
    """Read an ``.npz`` archive (np.savez) holding ``X`` (samples, features...) and
    optionally ``y``. X with more than 2 dimensions (images) is flattened per
    sample. Object arrays are refused (no pickle is ever loaded)."""
    p = _path(path)
    dt = _float_dtype(dtype)
    with open_regular(p) as f:
        if f.read(6) == b"\x93NUMPY":
            raise DataError(f"{p}: a single .npy array, not an .npz archive; save with np.savez(path, X=X, y=y)")
    try:
        z = NpyMembers(p)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as e:  # a damaged file fails in many ways inside zipfile: all mean "not readable"
        raise DataError(f"{p}: not a readable .npz archive ({type(e).__name__}: {e})") from None
    with z:  # only X and y are read (other members are never decompressed), each checked before it is
        keys = list(z.names)

        def get(k: str, kinds: str) -> np.ndarray:
            try:
                return z.read(k, max_bytes=_MAX_IDX_BYTES, kinds=kinds)
            except MemoryError:
                raise
            except Exception as e:  # damaged member: zip, zlib, npy-header errors of every kind
                msg = str(e).removeprefix(f"{p}: ")
                raise DataError(f"{p}: array {k!r} cannot be read ({msg})" if not msg.startswith(repr(k))
                                else f"{p}: {msg}") from None

        if "X" not in keys:
            raise DataError(f"{p}: no array named 'X' (the archive has: {', '.join(keys) or 'nothing'}); "
                            "save with np.savez(path, X=X, y=y)")
        X = get("X", "biufUS")  # text and objects are refused below with a clear message
        y = get("y", "biufUS") if "y" in keys else None
    if X.dtype.kind not in "biuf":
        raise DataError(f"{p}: X must be numeric, got dtype {X.dtype}")
    if X.ndim < 2:
        raise DataError(f"{p}: X must be 2-D (samples, features), got shape {X.shape}")
    n = X.shape[0]
    X = np.ascontiguousarray(X.reshape(n, -1), dtype=dt)
    if X.size and not np.isfinite(X).all():
        i, j = np.argwhere(~np.isfinite(X))[0]
        raise DataError(f"{p}: X[{i}, {j}] is {X[i, j]}; X must be finite")
    if y is not None:
        if y.ndim == 0 or y.shape[0] != n:
            raise DataError(f"{p}: y has {y.shape[0] if y.ndim else 'no'} rows but X has {n}")
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.dtype.kind == "f":
            if not np.isfinite(y).all():
                i = int(np.argwhere(~np.isfinite(y.reshape(n, -1)))[0][0])
                raise DataError(f"{p}: y[{i}] is not finite")
        elif y.dtype.kind not in "biuUS":
            raise DataError(f"{p}: y must be numbers or strings, got dtype {y.dtype}")
        if y.dtype.kind == "S":
            y = y.astype(str)
    return Dataset(X, y, None, None if y is None else "y", source=p)


# --------------------------------------------------------------------------- IDX
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


_MAX_IDX_BYTES = 1 << 34  # 16 GiB: far above MNIST (47 MB), far below a forged header


def _read_idx(p: str) -> np.ndarray:
    # Read the header first and then exactly the bytes it declares, so that a
    # compressed file never inflates beyond its declared size (a gzip bomb).
    try:
        with _open_binary(p) as f:
            magic = f.read(4)
            if len(magic) < 4 or magic[0] != 0 or magic[1] != 0:
                value = int.from_bytes(magic.ljust(4, b"\0"), "big")
                raise DataError(f"{p}: not an IDX file (magic number 0x{value:08X}; expected 0x00000803 for images "
                                "or 0x00000801 for labels)")
            code, ndim = magic[2], magic[3]
            if code not in _IDX_TYPES:
                raise DataError(f"{p}: IDX data type code 0x{code:02X} is not one of "
                                f"{', '.join(f'0x{c:02X}' for c in _IDX_TYPES)}")
            if ndim == 0:
                raise DataError(f"{p}: IDX file with 0 dimensions")
            raw_dims = f.read(4 * ndim)
            if len(raw_dims) < 4 * ndim:
                raise DataError(f"{p}: truncated IDX header ({4 + len(raw_dims)} bytes, {4 + 4 * ndim} needed "
                                f"for {ndim} dimensions)")
            dims = tuple(int.from_bytes(raw_dims[4 * i:4 * i + 4], "big") for i in range(ndim))
            dtype = np.dtype(_IDX_TYPES[code])
            want = math.prod(dims) * dtype.itemsize
            if not _is_gzip(p) and want > os.path.getsize(p) - 4 - 4 * ndim:
                raise DataError(f"{p}: the header says {' x '.join(map(str, dims))} values ({want} bytes of data) "
                                "but the file is smaller (truncated)")
            if want > _MAX_IDX_BYTES:
                raise DataError(f"{p}: the header declares {want} bytes of data, more than this reader "
                                f"accepts ({_MAX_IDX_BYTES})")
            data = f.read(want)
            extra = f.read(1)
    except (OSError, EOFError, zlib.error, OverflowError, MemoryError) as e:  # e.g. a truncated .gz
        if isinstance(e, (FileNotFoundError, IsADirectoryError, PermissionError)):
            raise
        raise DataError(f"{p}: cannot read ({type(e).__name__}: {e})") from None
    if len(data) != want or extra:
        have = "fewer" if len(data) < want else "more"
        raise DataError(f"{p}: the header says {' x '.join(map(str, dims))} values ({want} bytes of data) but the "
                        f"file has {have} bytes of data ({'truncated' if len(data) < want else 'trailing bytes'})")
    return np.frombuffer(data, dtype=dtype).reshape(dims)


def load_idx(images_path: Any, labels_path: Any = None, normalize: bool = True, dtype: Any = np.float32) -> Dataset:
    """Read MNIST / Fashion-MNIST IDX files (gzip-compressed or raw, detected
    from the content). images: magic 0x00000803 (n, rows, cols), any IDX type
    with 2 or more dimensions works; each sample is flattened. labels: a 1-D
    IDX file (magic 0x00000801) with one label per image. With normalize=True
    (default) unsigned-byte pixels are divided by 255 (values in [0, 1])."""
    ip = _path(images_path)
    dt = _float_dtype(dtype)
    img = _read_idx(ip)
    if img.ndim < 2:
        raise DataError(f"{ip}: a 1-D IDX file (labels?); expected images with 2 or more dimensions "
                        "(magic 0x00000803)")
    n = img.shape[0]
    if img.size == 0 and math.prod(img.shape[1:]) == 0:
        raise DataError(f"{ip}: the images have 0 pixels ({' x '.join(map(str, img.shape[1:]))})")
    X = np.ascontiguousarray(img.reshape(n, -1), dtype=dt)
    if normalize and img.dtype == np.uint8:
        X /= 255
    if img.dtype.kind == "f" and not np.isfinite(X).all():
        raise DataError(f"{ip}: the images contain non-finite values")
    if img.ndim == 3:
        h, w = img.shape[1], img.shape[2]
        names = [f"pixel_{r}_{c}" for r in range(h) for c in range(w)]
    else:
        names = [f"x{j}" for j in range(X.shape[1])]
    y = None
    if labels_path is not None:
        lp = _path(labels_path)
        lab = _read_idx(lp)
        if lab.ndim != 1:
            raise DataError(f"{lp}: a {lab.ndim}-D IDX file (images?) given as labels; expected a 1-D label file "
                            "(magic 0x00000801)")
        if lab.shape[0] != n:
            raise DataError(f"{lp}: {lab.shape[0]} labels do not match the {n} images in {ip}")
        if lab.dtype.kind == "f":  # class labels stored as floats: each must be a whole number
            bad = ~np.isfinite(lab) | (lab != np.round(lab)) | (np.abs(lab) >= 2**53)
            if bad.any():
                i = int(np.argmax(bad))
                raise DataError(f"{lp}: label {i} is {lab[i]}; labels must be finite whole numbers")
        y = lab.astype(np.int64)
    return Dataset(X, y, names, None if y is None else "label", source=ip)


# --------------------------------------------------------------------------- split
def train_test_split(X: Any, y: Any = None, test_size: float | int = 0.2, seed: int | None = 0,
                     stratify: Any = None) -> tuple:
    """Seeded random split into (X_train, X_test, y_train, y_test), or
    (X_train, X_test) without y, as sklearn.model_selection.train_test_split.

    test_size: a fraction in (0, 1) (the test set gets ceil(test_size * n) rows)
    or a number of rows. stratify: labels (e.g. y) whose class proportions both
    parts keep (each class contributes round(test_size * count) test rows)."""
    X = np.asarray(X)
    n = X.shape[0] if X.ndim else 0
    if y is not None and (np.ndim(y) == 0 or len(y) != n):
        raise ValueError(f"X has {n} rows but y has {len(y) if np.ndim(y) else 'no'} rows")
    if isinstance(test_size, (bool, np.bool_)):
        raise TypeError("test_size must be a fraction in (0, 1) or a number of rows")
    if isinstance(test_size, (int, np.integer)):
        n_test = int(test_size)
        frac = n_test / n if n else 0.0
    elif isinstance(test_size, (float, np.floating)) and 0.0 < test_size < 1.0:
        frac = float(test_size)
        n_test = math.ceil(frac * n)
    else:
        raise ValueError(f"test_size must be a fraction in (0, 1) or a number of rows, got {test_size!r}")
    if not 0 < n_test < n:
        raise ValueError(f"test_size={test_size!r} leaves an empty part: {n} samples, {n_test} for the test set")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    if stratify is None:
        test, train = perm[:n_test], perm[n_test:]
    else:
        labels = np.asarray(stratify)
        if labels.shape[:1] != (n,):
            raise ValueError(f"stratify must have {n} labels, got shape {labels.shape}")
        _, codes = np.unique(labels[perm], return_inverse=True, axis=0 if labels.ndim > 1 else None)
        codes = codes.reshape(-1)
        is_test = np.zeros(n, dtype=bool)
        for c in range(codes.max() + 1 if n else 0):
            members = np.flatnonzero(codes == c)
            is_test[members[:int(round(frac * len(members)))]] = True
        if not 0 < is_test.sum() < n:
            raise ValueError(f"test_size={test_size!r} with stratify leaves an empty part")
        test, train = perm[is_test], perm[~is_test]
    if y is None:
        return X[train], X[test]
    ya = np.asarray(y)
    return X[train], X[test], ya[train], ya[test]
