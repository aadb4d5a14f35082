"""The ``fastmlp`` command: train an MLP on a file (or the shipped digits), predict, inspect, benchmark.

    fastmlp train                                   # digits shipped with fastmlp: model + curves in this folder
    fastmlp train --data data.csv --target label --hidden 256,128 --epochs 20
    fastmlp train --data train-images-idx3-ubyte.gz --labels train-labels-idx1-ubyte.gz
    fastmlp predict --model fastmlp-model.npz --data new.csv --out preds.csv
    fastmlp info fastmlp-model.npz
    fastmlp export fastmlp-model.npz --format onnx --out model.onnx     # or --format c --out model.c
    fastmlp bench --quick

Errors print one line on stderr (naming the file, line and column) and exit with code 2.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import importlib.util
import math
import os
import re
import sys
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ._mlp import ACTIVATIONS as _ACTIVATIONS

if TYPE_CHECKING:
    from .datasets import Dataset

EXIT_ERROR = 2
DEFAULT_MODEL = "fastmlp-model.npz"
DEFAULT_PLOT = "fastmlp-curves.png"
ACTIVATIONS = (*_ACTIVATIONS, "sigmoid")  # the estimators' names; 'sigmoid' is kept as another name of 'logistic'
ACTIVATION_ALIASES = {"sigmoid": "logistic"}
NORMALIZATIONS = ("none", "batch", "layer")
# --optimizer NAME: the fm.optim class whose lowercased name it is (LBFGS: full-batch, not offered)
OPTIMIZERS = ("adam", "adamw", "nadam", "radam", "adamax", "sgd", "asgd", "rmsprop", "adagrad", "adadelta")
LR_OVERRIDES = {"sgd": 1e-2}  # the CLI's default where it differs from the class's (torch's) default lr
MAX_AUTO_CLASSES = 50  # an integer-valued target with at most this many distinct values is a classification


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def _err(msg: str) -> None:
    print(msg, file=sys.stderr)


# --------------------------------------------------------------------------- argument parsing
def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}")
    return v


def _fraction(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {s!r}") from None
    if not 0.0 <= v < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {s!r}")
    return v


def _positive_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {s!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {s!r}")
    return v


def _hidden(s: str) -> list[int]:
    s = s.strip()
    if s in ("", "0", "none"):
        return []
    try:
        sizes = [int(part) for part in s.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer widths like 256,128, got {s!r}") from None
    if any(v < 1 for v in sizes):
        raise argparse.ArgumentTypeError(f"layer widths must be positive, got {s!r}")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="fastmlp", description="Train and use fast multilayer perceptrons (fastmlp).",
                                epilog="Run 'fastmlp train' with no arguments for a demo on the shipped digits.")
    p.add_argument("--version", action="version", version=f"fastmlp {__version__}")
    sub = p.add_subparsers(dest="command", metavar="{train,predict,info,export,bench}")
    sub.required = True

    t = sub.add_parser("train", help="train an MLP on a data file (default: the shipped 8x8 digits)",
                       description="Train an MLP, print the test score, write the model file and a PNG of the "
                                   "loss/accuracy curves. Without --data: the 8x8 handwritten digits shipped with "
                                   "fastmlp.")
    d = t.add_argument_group("data")
    d.add_argument("--data", metavar="FILE", help="CSV with a header row, .npz with X and y, or IDX images "
                                                 "(MNIST format, .gz or raw)")
    d.add_argument("--target", metavar="COL", help="CSV target column: a name, or a 0-based index "
                                                  "(negative from the end); default: the last column")
    d.add_argument("--labels", metavar="FILE", help="IDX label file that goes with IDX images in --data")
    d.add_argument("--delimiter", default=None, help="CSV delimiter (default ',', or tab for .tsv files)")
    d.add_argument("--test-data", metavar="FILE", help="separate test set (same format as --data); "
                                                      "default: hold out --test-split of --data")
    d.add_argument("--test-labels", metavar="FILE", help="IDX label file that goes with --test-data")
    d.add_argument("--test-split", type=_fraction, default=0.2, metavar="F",
                   help="fraction held out as the test set (default 0.2; 0: no test set)")
    d.add_argument("--val-split", type=_fraction, default=0.1, metavar="F",
                   help="fraction of the training part used for validation curves (default 0.1; 0: none)")
    d.add_argument("--task", choices=("classify", "regress"), help="default: classify when the target is text "
                   f"or whole numbers with at most {MAX_AUTO_CLASSES} distinct values, else regress")
    d.add_argument("--no-standardize", dest="standardize", action="store_false",
                   help="do not standardize features (and regression targets) to mean 0, std 1")
    m = t.add_argument_group("model and training")
    m.add_argument("--hidden", type=_hidden, default=[128], metavar="W1,W2,...",
                   help="hidden layer widths (default 128; '' or 0: a linear model)")
    m.add_argument("--activation", choices=ACTIVATIONS, default="relu", metavar="NAME",
                   help="hidden activation, the estimators' names: " + ", ".join(ACTIVATIONS) + " (default relu)")
    m.add_argument("--dropout", type=_fraction, default=0.0, metavar="P", help="dropout after each hidden layer")
    m.add_argument("--normalization", choices=NORMALIZATIONS, default="none",
                   help="BatchNorm1d or LayerNorm between each hidden Linear and its activation (default none)")
    m.add_argument("--residual", action="store_true",
                   help="make every hidden layer whose input width equals its output width a residual block "
                        "x + f(x) (the first hidden layer projects the inputs and never is)")
    m.add_argument("--optimizer", choices=OPTIMIZERS, default="adam", help="default adam")
    m.add_argument("--lr", type=_positive_float, default=None,
                   help="learning rate (default: 1e-3 for adam/adamw/rmsprop, 1e-2 for sgd/adagrad, 1 for adadelta)")
    m.add_argument("--momentum", type=float, default=0.0, help="momentum for sgd and rmsprop (default 0)")
    m.add_argument("--weight-decay", type=float, default=None, help="L2 penalty (default: the optimizer's)")
    m.add_argument("--epochs", type=_positive_int, default=20, help="default 20")
    m.add_argument("--batch-size", type=_positive_int, default=32, help="default 32")
    m.add_argument("--patience", type=_positive_int, default=None,
                   help="stop when the validation loss has not improved for this many epochs (keeps the best)")
    m.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    m.add_argument("--seed", type=int, default=0, help="seed of the splits, initialization and shuffling (default 0)")
    m.add_argument("--threads", type=_positive_int, default=None, help="CPU threads (default: all)")
    o = t.add_argument_group("output")
    o.add_argument("--out", default=DEFAULT_MODEL, metavar="FILE", help=f"model file (default {DEFAULT_MODEL})")
    o.add_argument("--plot", default=DEFAULT_PLOT, metavar="FILE",
                   help=f"PNG of the training curves (default {DEFAULT_PLOT})")
    o.add_argument("--no-plot", dest="plot", action="store_const", const=None, help="write no plot")
    o.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    t.set_defaults(func=cmd_train)

    pr = sub.add_parser("predict", help="predict with a model written by 'fastmlp train'",
                        description="Apply a trained model (with its saved feature scaling) to a data file and "
                                    "write one prediction per row (class labels or values) as CSV.")
    pr.add_argument("--model", required=True, metavar="FILE", help="model file from 'fastmlp train'")
    pr.add_argument("--data", required=True, metavar="FILE", help="CSV (columns matched by name), .npz or IDX")
    pr.add_argument("--labels", metavar="FILE", help="IDX labels for IDX images (reports the accuracy)")
    pr.add_argument("--delimiter", default=None, help="CSV delimiter (default ',', or tab for .tsv files)")
    pr.add_argument("--out", metavar="FILE", help="CSV file to write (default: standard output)")
    pr.add_argument("--proba", action="store_true", help="also write the class probabilities")
    pr.add_argument("--threads", type=_positive_int, default=None)
    pr.set_defaults(func=cmd_predict)

    i = sub.add_parser("info", help="describe a model file", description="Layers, parameter count, dtype and "
                                                                           "the training summary of a model file.")
    i.add_argument("model", metavar="MODEL", help="model file (.npz)")
    i.set_defaults(func=cmd_info)

    e = sub.add_parser("export", help="write a model file as ONNX or as one C source file",
                       description="Write the model as an ONNX graph (needs the 'onnx' extra) or as one C99 source "
                                   "file with <prefix>_predict(const float *x, int n, float *y). A model from "
                                   "'fastmlp train' keeps its saved scaling: the export takes raw features (and "
                                   "gives regression targets in their units); a classifier outputs the logits of "
                                   "its classes in the order 'fastmlp info' lists.")
    e.add_argument("model", metavar="MODEL", help="model file (.npz)")
    e.add_argument("--format", required=True, choices=("onnx", "c"))
    e.add_argument("--out", required=True, metavar="PATH", help="file to write (.onnx or .c)")
    e.add_argument("--opset", type=_positive_int, default=None, help="ONNX opset (default 17)")
    e.add_argument("--prefix", default="fastmlp", help="C: prefix of the function names (default fastmlp)")
    e.set_defaults(func=cmd_export)

    b = sub.add_parser("bench", help="run the training-speed benchmark (bench/train_speed.py of a source checkout)",
                       description="Run bench/train_speed.py from the fastmlp source tree (the FASTMLP_BENCH "
                                   "environment variable may name the script). It writes train_speed.json and "
                                   "train_speed.png into the current folder (or --out-dir DIR). Other options "
                                   "(--configs, --frameworks, --repeats, --threads) are passed on to it.")
    b.add_argument("--quick", action="store_true", help="fewer samples and repeats (under a minute)")
    b.set_defaults(func=cmd_bench)
    return p


# --------------------------------------------------------------------------- outputs
def _plot_format(path: str) -> str:
    """The image format of a --plot file, from its extension (png without one); checked before training."""
    from matplotlib.backend_bases import FigureCanvasBase

    fmt = os.path.splitext(path)[1][1:].lower() or "png"
    if fmt not in FigureCanvasBase.get_supported_filetypes():
        raise CLIError(f"--plot {path}: matplotlib cannot write {fmt!r} files "
                       f"(use .png, .pdf or .svg)")
    return fmt


def _check_outputs(outputs: Sequence[tuple[str, str]], inputs: Sequence[str | None]) -> None:
    """Before any work: each output (option, path) is not a folder, its folder exists and is writable,
    and it is neither an input file nor another output (the outputs are written atomically, at the end)."""
    seen: dict[str, str] = {}
    for opt, out in outputs:
        real = os.path.realpath(out)
        if os.path.isdir(real):
            raise CLIError(f"{opt} {out}: is a folder, not a file")
        folder = os.path.dirname(real)
        if not os.path.isdir(folder):
            raise CLIError(f"{opt} {out}: the folder {folder} does not exist")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise CLIError(f"{opt} {out}: the folder {folder} is not writable")
        for inp in inputs:
            if inp is not None and (os.path.realpath(inp) == real
                                    or (os.path.exists(out) and os.path.exists(inp) and os.path.samefile(out, inp))):
                raise CLIError(f"{opt} {out} is the input file {inp}: refusing to overwrite it")
        if real in seen:
            raise CLIError(f"{opt} {out} and {seen[real]} are the same file")
        seen[real] = f"{opt} {out}"


# --------------------------------------------------------------------------- data
def _sniff(path: str) -> str:
    """'idx', 'npz' or 'csv', from the file's first bytes (gzip is looked into)."""
    from .datasets import _IDX_TYPES, _GzipReader, _open_binary, _path

    _path(path)
    try:
        with _open_binary(path) as f:
            head = f.read(4)
            gz = isinstance(f, _GzipReader)
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise CLIError(f"{path}: damaged gzip file ({e})") from None
    if not gz and (head[:4] == b"PK\x03\x04" or path.lower().endswith(".npz")):
        return "npz"
    if len(head) == 4 and head[0] == 0 and head[1] == 0 and head[2] in _IDX_TYPES and head[3] > 0:
        return "idx"
    if path.lower().endswith((".idx", "-ubyte", "-ubyte.gz")):
        return "idx"  # let load_idx explain what is wrong with it
    return "csv"


def _delimiter(args: argparse.Namespace, path: str) -> str:
    if args.delimiter is not None:
        d = args.delimiter.replace("\\t", "\t")
        if len(d) != 1:
            raise CLIError(f"--delimiter must be one character, got {args.delimiter!r}")
        return d
    return "\t" if path.lower().endswith((".tsv", ".tsv.gz", ".tab")) else ","


def _csv_target(path: str, names: list[str], target: str | None) -> Any:
    if target is None:
        return -1
    if target in names:
        return target
    try:
        return int(target)
    except ValueError:
        return target  # load_csv reports the unknown column with the list of columns


def _load_labeled(args: argparse.Namespace, path: str, labels: str | None, which: str) -> tuple[Dataset, str]:
    from . import datasets

    kind = _sniff(path)
    if kind == "idx":
        if labels is None:
            raise CLIError(f"{path}: IDX images need their label file: add --{which}labels FILE")
        if args.target is not None:
            raise CLIError("--target applies to CSV files; IDX labels come from --labels")
        return datasets.load_idx(path, labels), kind
    if labels is not None:
        raise CLIError(f"--{which}labels is for IDX image files, but {path} is a {kind.upper()} file")
    if kind == "npz":
        if args.target is not None:
            raise CLIError(f"--target applies to CSV files; {path} is an .npz (its target is the array y)")
        ds = datasets.load_npz(path)
        if ds.y is None:
            raise CLIError(f"{path}: no array named 'y' (the target); save with np.savez(path, X=X, y=y)")
        return ds, kind
    delim = _delimiter(args, path)
    names = datasets.read_csv_header(path, delim)
    return datasets.load_csv(path, target=_csv_target(path, names, args.target), delimiter=delim), kind


def _labels_of(ds: Dataset) -> np.ndarray:
    """The target of a data set from _load_labeled or load_digits (which always have one)."""
    if ds.y is None:  # pragma: no cover - _load_labeled refuses files without a target
        raise CLIError(f"{ds.source}: the data has no target")
    return ds.y


def _detect_task(ds: Dataset, requested: str | None) -> tuple[str, str]:
    y = _labels_of(ds)
    if y.dtype.kind in "US":
        if requested == "regress":
            lines = getattr(ds, "_target_lines", None)
            for k, v in enumerate(y):
                try:
                    float(v)
                except ValueError:
                    where = f"{ds.source}:{lines[k]}:{ds._target_column}" if lines else f"{ds.source}: row {k + 1}"
                    raise CLIError(f"{where}: target column {ds.target_name!r}: {str(v)!r} is not a number "
                                   "(--task regress needs a numeric target)") from None
        return "classify", "text target"
    if y.ndim > 1:
        if requested == "classify":
            raise CLIError(f"{ds.source}: y has shape {y.shape}; --task classify needs one label per sample")
        return "regress", f"{y.shape[1]} target columns"
    if requested:
        return requested, "--task"
    if y.dtype.kind in "biu":
        n_unique = len(np.unique(y))
        if n_unique <= MAX_AUTO_CLASSES:
            return "classify", f"whole-number target with {n_unique} distinct values"
        return "regress", f"whole-number target with {n_unique} distinct values (> {MAX_AUTO_CLASSES})"
    return "regress", "target with fractional values"


class _Scaler:
    def __init__(self, mean: Any, std: Any) -> None:
        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.asarray(std, dtype=np.float64)

    @classmethod
    def fit(cls, X: np.ndarray) -> "_Scaler":
        mean = X.mean(axis=0, dtype=np.float64)
        std = X.std(axis=0, dtype=np.float64)
        std[~(std > 1e-12)] = 1.0
        return cls(mean, std)

    def transform(self, X: np.ndarray, dtype: Any) -> np.ndarray:
        return np.ascontiguousarray((X - self.mean) / self.std, dtype=dtype)

    def inverse(self, Y: np.ndarray) -> np.ndarray:
        return Y * self.std + self.mean

    def to_json(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}


# --------------------------------------------------------------------------- train
def _build_model(n_in: int, n_out: int, args: argparse.Namespace) -> Any:
    """The estimators' network (fastmlp._mlp): Linear -> [norm] -> activation -> [Dropout] per hidden
    layer, residual blocks where --residual makes them, torch's default initialization."""
    import fastmlp as fm

    from ._mlp import mlp_layers, residual_flags

    try:
        res = residual_flags(args.hidden, args.residual)
    except ValueError:
        raise CLIError(f"--residual makes a hidden layer x + f(x) where its input and output widths are equal, but "
                       f"none of --hidden {','.join(map(str, args.hidden))} is: the first hidden layer projects the "
                       "inputs, layer i >= 2 is residual when its width equals layer i - 1's "
                       "(e.g. --hidden 64,64,64)") from None
    norm = None if args.normalization == "none" else args.normalization
    layout = [(ACTIVATION_ALIASES.get(args.activation, args.activation), args.dropout, norm, r) for r in res]
    return fm.Sequential(*mlp_layers([n_in, *args.hidden, n_out], layout), seed=args.seed, dtype=args.dtype)


def optimizer_class(name: str) -> Any:
    import fastmlp as fm

    return {n.lower(): getattr(fm.optim, n) for n in fm.optim.__all__}[name]


def default_lr(name: str) -> float:
    import inspect

    return LR_OVERRIDES.get(name, inspect.signature(optimizer_class(name)).parameters["lr"].default)


def _build_optimizer(model: Any, args: argparse.Namespace) -> Any:
    import fastmlp as fm

    cls = optimizer_class(args.optimizer)
    kw: dict = {"lr": default_lr(args.optimizer) if args.lr is None else args.lr}
    if args.weight_decay is not None:
        kw["weight_decay"] = args.weight_decay
    if args.momentum:
        if args.optimizer not in ("sgd", "rmsprop"):
            raise CLIError(f"--momentum applies to sgd and rmsprop, not {args.optimizer}")
        kw["momentum"] = args.momentum
    return cls(model.parameters(), **kw)


def _split(X: np.ndarray, y: np.ndarray, frac: float, seed: int, stratify: bool, what: str) -> tuple:
    from .datasets import train_test_split

    try:
        return train_test_split(X, y, test_size=frac, seed=seed, stratify=y if stratify else None)
    except ValueError:
        raise CLIError(f"{X.shape[0]} samples are too few for a {what} of {frac:g}; "
                       f"use more data or --{what.replace(' ', '-')} 0") from None


def _json_float(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def cmd_train(args: argparse.Namespace) -> int:
    import fastmlp as fm
    from . import datasets
    from .serialization import save

    if args.lr is None:
        args.lr = default_lr(args.optimizer)
    _check_outputs([("--out", args.out)] + ([("--plot", args.plot)] if args.plot else []),
                   [args.data, args.labels, args.test_data, args.test_labels])
    plot_format = None  # None: no plot (matplotlib missing: _plot says so)
    if args.plot and importlib.util.find_spec("matplotlib") is not None:
        plot_format = _plot_format(args.plot)
    if args.data is None:
        for opt in ("labels", "target", "test_data", "test_labels"):
            if getattr(args, opt) is not None:
                raise CLIError(f"--{opt.replace('_', '-')} needs --data FILE")
        ds, kind = datasets.load_digits(), "digits"
    else:
        ds, kind = _load_labeled(args, args.data, args.labels, "")
    X, y = ds.X, _labels_of(ds)
    task, why = _detect_task(ds, args.task)

    test = None
    if args.test_data is not None:
        test, _ = _load_labeled(args, args.test_data, args.test_labels, "test-")
        test_y = _labels_of(test)
        if test.X.shape[1] != X.shape[1]:
            raise CLIError(f"{args.test_data}: {test.X.shape[1]} features, but {ds.source} has {X.shape[1]}")
    elif args.test_labels is not None:
        raise CLIError("--test-labels needs --test-data FILE")

    classes: np.ndarray | None = None  # the class labels (classification only)
    target: np.ndarray  # what the network is trained on: class indices, or (n, k) float64 values
    y_test: np.ndarray | None = None  # the same for the test set, if there is one
    if task == "classify":
        classes, y_idx = np.unique(y, return_inverse=True)
        y_idx = y_idx.reshape(-1).astype(np.int64)
        if len(classes) < 2:
            raise CLIError(f"{ds.source}: the target has a single value ({classes[0]!r}); nothing to classify")
        if test is not None:
            known = np.isin(test_y, classes)
            if not known.all():
                bad = test_y[np.argmax(~known)]
                raise CLIError(f"{args.test_data}: label {bad!r} does not occur in the training data {ds.source}")
            y_test = np.searchsorted(classes, test_y)
        target = y_idx
        n_out = len(classes)
    else:
        target = y.astype(np.float64).reshape(len(y), -1)
        n_out = target.shape[1]
        if test is not None:
            if test_y.dtype.kind not in "biuf":
                raise CLIError(f"{args.test_data}: the target is not numeric")
            y_test = test_y.astype(np.float64).reshape(len(test_y), -1)
            if y_test.shape[1] != target.shape[1]:
                raise CLIError(f"{args.test_data}: {y_test.shape[1]} target columns, but {ds.source} has "
                               f"{target.shape[1]}")

    strat = task == "classify"
    if test is not None:
        X_tr, y_tr, X_te = X, target, test.X
    elif args.test_split > 0:
        X_tr, X_te, y_tr, y_test = _split(X, target, args.test_split, args.seed, strat, "test split")
    else:
        X_tr, y_tr, X_te, y_test = X, target, None, None
    if args.val_split > 0:
        X_tr, X_val, y_tr, y_val = _split(X_tr, y_tr, args.val_split, args.seed + 1, strat, "val split")
    else:
        X_val = y_val = None

    dtype = np.dtype(args.dtype)
    scaler = _Scaler.fit(X_tr) if args.standardize else _Scaler(np.zeros(X.shape[1]), np.ones(X.shape[1]))
    yscaler = None
    if task == "regress":
        yscaler = _Scaler.fit(y_tr) if args.standardize else _Scaler(np.zeros(n_out), np.ones(n_out))

    def prep(Xp: Any, yp: Any) -> tuple:
        if Xp is None:
            return None, None
        Xs = scaler.transform(Xp, dtype)
        ys = yp if yscaler is None else yscaler.transform(yp, dtype)  # None: classification
        return Xs, ys

    Xs_tr, ys_tr = prep(X_tr, y_tr)
    Xs_val, ys_val = prep(X_val, y_val)
    Xs_te, ys_te = prep(X_te, y_test)

    fm.manual_seed(args.seed)
    model = _build_model(X.shape[1], n_out, args)
    opt = _build_optimizer(model, args)
    loss_fn = fm.CrossEntropyLoss() if task == "classify" else fm.MSELoss()

    source = (ds.source or str(args.data)) if kind != "digits" else "digits (8x8 images shipped with fastmlp)"
    print(f"data: {source}: {X.shape[0]} samples, {X.shape[1]} features"
          + (f"; test data: {args.test_data}: {test.X.shape[0]} samples" if test is not None else ""))
    if classes is not None:  # task == "classify"
        shown = ", ".join(str(c) for c in classes[:12]) + (", ..." if len(classes) > 12 else "")
        print(f"task: classify ({why}): {len(classes)} classes: {shown}")
    else:
        print(f"task: regress ({why})")
    print(f"split: {Xs_tr.shape[0]} train, {0 if Xs_val is None else Xs_val.shape[0]} validation, "
          f"{0 if Xs_te is None else Xs_te.shape[0]} test (seed {args.seed}); features "
          + ("standardized" if args.standardize else "not standardized"))
    widths = "-".join(str(w) for w in [X.shape[1], *args.hidden, n_out])
    print(f"model: {widths} {args.activation}" + (f", dropout {args.dropout:g}" if args.dropout else "")
          + (f", {args.normalization} norm" if args.normalization != "none" else "")
          + (", residual" if args.residual else "")
          + f", {model.num_parameters():,} parameters, {args.dtype}; {args.optimizer} lr={args.lr:g}, "
          f"batch {args.batch_size}, {args.epochs} epochs")
    sys.stdout.flush()

    n_train = Xs_tr.shape[0]
    if args.normalization == "batch" and (n_train == 1 or n_train % args.batch_size == 1):
        raise CLIError(f"--normalization batch needs at least 2 samples in every batch, but {n_train} training "
                       f"samples in batches of {args.batch_size} leave a batch of 1 sample: choose another "
                       "--batch-size")
    callbacks = []
    if args.patience is not None:
        if Xs_val is None:
            raise CLIError("--patience needs a validation set (--val-split > 0)")
        callbacks.append(fm.EarlyStopping(monitor="val_loss", patience=args.patience, restore_best_weights=True))
    t0 = time.perf_counter()
    try:
        hist = model.fit(Xs_tr, ys_tr, loss_fn, opt, epochs=args.epochs, batch_size=args.batch_size,
                         validation_data=None if Xs_val is None else (Xs_val, ys_val), callbacks=callbacks,
                         verbose=0 if args.quiet else 1, n_threads=args.threads)
    except FloatingPointError as e:
        raise CLIError(f"{e}".replace("\n", " ")) from None
    seconds = time.perf_counter() - t0
    model.eval()
    h = hist.history

    test_metrics: dict = {}
    if Xs_te is not None and y_test is not None and Xs_te.shape[0]:
        out = model.predict(Xs_te, n_threads=args.threads)
        if yscaler is None:  # classification
            acc = float(np.mean(np.argmax(out, axis=1) == ys_te))
            test_metrics = {"accuracy": acc, "loss": float(loss_fn(out, ys_te)), "samples": int(out.shape[0])}
            print(f"test accuracy: {acc:.4f} ({out.shape[0]} samples)")
        else:
            pred = yscaler.inverse(out.astype(np.float64))
            err = pred - y_test
            rmse = float(np.sqrt(np.mean(err ** 2)))
            ss = float(np.sum((y_test - y_test.mean(axis=0)) ** 2))
            r2 = 1.0 - float(np.sum(err ** 2)) / ss if ss > 0 else float("nan")
            test_metrics = {"rmse": rmse, "mae": float(np.mean(np.abs(err))), "r2": r2,
                            "samples": int(out.shape[0])}
            print(f"test RMSE: {rmse:.4g}, R^2: {r2:.4f} ({out.shape[0]} samples)")
    else:
        last = {k: v[-1] for k, v in h.items() if v and k not in ("lr", "time")}
        print("final epoch: " + ", ".join(f"{k} {v:.4g}" for k, v in last.items()))
    print(f"trained {len(hist.epoch)} epochs in {seconds:.2f} s")

    extra = {
        "fastmlp_cli": 1,
        "task": task,
        "classes": None if classes is None else classes.tolist(),
        "n_features": int(X.shape[1]),
        "feature_names": ds.feature_names,
        "target_name": ds.target_name,
        "scaler": scaler.to_json() if args.standardize else None,
        "target_scaler": yscaler.to_json() if (yscaler is not None and args.standardize) else None,
        "data": {"source": source, "kind": kind, "labels": args.labels, "test_data": args.test_data,
                 "train": int(Xs_tr.shape[0]), "val": 0 if Xs_val is None else int(Xs_val.shape[0]),
                 "test": 0 if Xs_te is None else int(Xs_te.shape[0])},
        "training": {"hidden": args.hidden, "activation": args.activation, "dropout": args.dropout,
                     "normalization": args.normalization, "residual": args.residual,
                     "optimizer": args.optimizer, "lr": args.lr, "batch_size": args.batch_size,
                     "epochs": args.epochs, "epochs_run": len(hist.epoch), "seed": args.seed,
                     "standardize": args.standardize, "seconds": seconds},
        "history": {k: [_json_float(v) for v in vals] for k, vals in h.items()},
        "test": test_metrics,
    }
    try:
        save(model, args.out, extra=extra)
    except OSError as e:
        raise CLIError(f"{args.out}: cannot write the model file ({e.strerror or e})") from None
    wrote = [f"{args.out} (model)"]
    if args.plot:
        name = os.path.basename(source) if kind != "digits" else "digits"
        png = _plot(h, args.plot, plot_format, task, f"fastmlp on {name}: {widths}", test_metrics)
        if png:
            wrote.append(f"{png} (training curves)")
    print("wrote " + " and ".join(wrote))
    return 0


def _plot(h: dict, path: str, fmt: str | None, task: str, title: str, test: dict) -> str | None:
    from ._files import atomic_write

    if fmt is None:
        _err("fastmlp: matplotlib is not installed, so no plot was written (pip install 'fastmlp[plot]')")
        return None
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epochs = np.arange(1, len(h.get("loss", [])) + 1)
    panels = [("loss", "loss")] + ([("accuracy", "accuracy")] if task == "classify" else [])
    fig = Figure(figsize=(5.5 * len(panels), 4), layout="constrained")
    for i, (key, label) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for k, style, name in ((key, "-o", "train"), (f"val_{key}", "-s", "validation")):
            if h.get(k):
                ax.plot(epochs, h[k], style, markersize=3, label=name)
        if key == "accuracy" and "accuracy" in test:
            ax.axhline(test["accuracy"], color="gray", linestyle="--", label=f"test {test['accuracy']:.4f}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        if key == "loss":
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    try:
        with atomic_write(path) as f:
            fig.savefig(f, format=fmt, dpi=100)
    except (OSError, ValueError) as e:
        raise CLIError(f"{path}: cannot write the plot ({e})") from None
    return path


# --------------------------------------------------------------------------- predict
def _load_model(path: str) -> Any:
    import fastmlp as fm

    from ._files import open_regular

    if not os.path.exists(path):
        raise CLIError(f"{path}: no such file")
    if os.path.isdir(path):
        raise CLIError(f"{path}: is a folder, not a model file")
    with open_regular(path) as f:
        if f.read(4) != b"PK\x03\x04":
            raise CLIError(f"{path}: not a fastmlp model file (expected an .npz written by 'fastmlp train')")
    return fm.load(path)


def cmd_predict(args: argparse.Namespace) -> int:
    from . import datasets
    from ._files import atomic_write

    if args.out:
        _check_outputs([("--out", args.out)], [args.model, args.data, args.labels])
    model = _load_model(args.model)
    ex = getattr(model, "_file_extra", {}) or {}
    task = ex.get("task")
    names = ex.get("feature_names")
    path = args.data
    kind = _sniff(path)
    if kind == "idx":
        ds = datasets.load_idx(path, args.labels)
    else:
        if args.labels is not None:
            raise CLIError(f"--labels is for IDX image files, but {path} is a {kind.upper()} file")
        if kind == "npz":
            ds = datasets.load_npz(path)
        else:
            delim = _delimiter(args, path)
            header = datasets.read_csv_header(path, delim)
            tname = ex.get("target_name")
            target = tname if (tname and tname in header and header.count(tname) == 1) else None
            if names and kind == "csv":
                missing = [n for n in names if n not in header]
                if len(missing) == len(names) and len(header) - (target is not None) == len(names):
                    names = None  # same number of columns, other names: take them in order
                    _err(f"fastmlp predict: warning: {path} has none of the model's column names "
                         f"{', '.join(map(repr, ex['feature_names'][:3]))}, ...; using its columns in order")
                elif missing:
                    shown = ", ".join(map(repr, missing[:10]))
                    raise CLIError(f"{path}: the model needs columns the file lacks: {shown}"
                                   + (f" and {len(missing) - 10} more" if len(missing) > 10 else ""))
            ds = datasets.load_csv(path, target=target, delimiter=delim, features=names or None)
    X = ds.X
    n_in = model.in_features
    if n_in is not None and X.shape[1] != n_in:
        raise CLIError(f"{path}: {X.shape[1]} features, but the model {args.model} takes {n_in}")
    sc = ex.get("scaler")
    dtype = model.dtype
    Xs = _Scaler(sc["mean"], sc["std"]).transform(X, dtype) if sc else np.ascontiguousarray(X, dtype=dtype)
    out = model.predict(Xs, n_threads=args.threads).astype(np.float64)

    rows: list
    if task == "classify":
        classes = np.asarray(ex["classes"])
        idx = np.argmax(out, axis=1)
        labels = classes[idx]
        header = [ex.get("target_name") or "prediction"]
        cols = [labels]
        if args.proba:
            z = out - out.max(axis=1, keepdims=True)
            pr = np.exp(z)
            pr /= pr.sum(axis=1, keepdims=True)
            header += [f"p_{c}" for c in classes.tolist()]
            cols += [pr[:, j] for j in range(pr.shape[1])]
    elif task == "regress":
        ts = ex.get("target_scaler")
        vals = _Scaler(ts["mean"], ts["std"]).inverse(out) if ts else out
        name = ex.get("target_name") or "prediction"
        header = [name] if vals.shape[1] == 1 else [f"{name}_{j}" for j in range(vals.shape[1])]
        cols = [vals[:, j] for j in range(vals.shape[1])]
    else:  # a model saved with model.save: raw outputs
        header = [f"output_{j}" for j in range(out.shape[1])]
        cols = [out[:, j] for j in range(out.shape[1])]
    if args.proba and task != "classify":
        raise CLIError(f"--proba needs a classification model; {args.model} is "
                       + (f"a {task} model" if task else "not from 'fastmlp train'"))

    def fmt(v: Any) -> str:
        return f"{v:.9g}" if isinstance(v, (float, np.floating)) else str(v)

    rows = [[fmt(c[i]) for c in cols] for i in range(X.shape[0])]
    if args.out:
        try:
            with atomic_write(args.out, text=True) as f:
                w = csv.writer(f)
                w.writerow(header)
                w.writerows(rows)
        except OSError as e:
            raise CLIError(f"{args.out}: cannot write ({e.strerror or e})") from None
    else:
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
        sys.stdout.flush()
    if ds.y is not None and task == "classify":
        truth = np.asarray(ds.y)
        pred = np.asarray(labels)
        if truth.dtype.kind != pred.dtype.kind and (truth.dtype.kind in "US" or pred.dtype.kind in "US"):
            truth, pred = truth.astype(str), pred.astype(str)
        _err(f"accuracy on {path}: {np.mean(truth == pred):.4f} ({len(truth)} samples)")
    elif ds.y is not None and task == "regress" and ds.y.dtype.kind in "biuf":
        err = cols[0] - ds.y.astype(np.float64) if len(cols) == 1 else np.stack(cols, 1) - ds.y.reshape(len(X), -1)
        _err(f"RMSE on {path}: {np.sqrt(np.mean(np.square(err))):.4g} ({len(X)} samples)")
    if args.out:
        _err(f"wrote {len(rows)} predictions to {args.out}")
    return 0


# --------------------------------------------------------------------------- info
def cmd_info(args: argparse.Namespace) -> int:
    model = _load_model(args.model)
    ex = getattr(model, "_file_extra", {}) or {}
    print(f"model file: {args.model}")
    print(repr(model))
    linears = [layer for layer in model if hasattr(layer, "out_features")]
    n_in = model.in_features
    n_out = linears[-1].out_features if linears else None
    print(f"parameters: {model.num_parameters():,} ({model.dtype.name})")
    print(f"inputs: {n_in if n_in is not None else 'any'}, outputs: {n_out if n_out is not None else 'same as inputs'}")
    if not ex.get("fastmlp_cli"):
        print("training summary: none (not written by 'fastmlp train')")
        return 0
    task = ex.get("task")
    if task == "classify":
        cl = [str(c) for c in ex.get("classes") or []]
        print(f"task: classify, {len(cl)} classes: {', '.join(cl[:12])}{', ...' if len(cl) > 12 else ''}")
    else:
        print(f"task: {task}" + (f" of {ex['target_name']!r}" if ex.get("target_name") else ""))
    names = ex.get("feature_names")
    if names:
        print(f"features: {', '.join(names[:8])}{', ...' if len(names) > 8 else ''} ({len(names)}), "
              + ("standardized" if ex.get("scaler") else "not standardized"))
    d = ex.get("data", {})
    print(f"trained on: {d.get('source')}: {d.get('train')} train, {d.get('val')} validation, {d.get('test')} test")
    tr = ex.get("training", {})
    hidden = ",".join(map(str, tr.get("hidden", []))) or "none"
    print(f"settings: hidden {hidden}, {tr.get('activation')}, dropout {tr.get('dropout')}, "
          f"normalization {tr.get('normalization', 'none')}, residual {'yes' if tr.get('residual') else 'no'}, "
          f"{tr.get('optimizer')} "
          f"lr={tr.get('lr')}, batch {tr.get('batch_size')}, {tr.get('epochs_run')}/{tr.get('epochs')} epochs, "
          f"seed {tr.get('seed')}, {tr.get('seconds', 0):.2f} s")
    hist = ex.get("history", {})
    last = {k: v[-1] for k, v in hist.items() if v and k not in ("lr", "time") and v[-1] is not None}
    if last:
        print("last epoch: " + ", ".join(f"{k} {v:.4g}" for k, v in last.items()))
    test = ex.get("test") or {}
    if test:
        print("test: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in test.items()))
    return 0


# --------------------------------------------------------------------------- export
def cmd_export(args: argparse.Namespace) -> int:
    _check_outputs([("--out", args.out)], [args.model])
    model = _load_model(args.model)
    ex = getattr(model, "_file_extra", {}) or {}
    sc, ts = ex.get("scaler"), ex.get("target_scaler") if ex.get("task") == "regress" else None
    scaling = {"input_scaling": (sc["mean"], sc["std"]) if sc else None,
               "output_scaling": (ts["mean"], ts["std"]) if ts else None}
    if args.format == "onnx":
        if args.prefix != "fastmlp":
            raise CLIError("--prefix applies to --format c")
        if importlib.util.find_spec("onnx") is None:
            raise CLIError("the onnx package is not installed (pip install 'fastmlp[onnx]')")
        from . import onnx as fm_onnx

        opset = fm_onnx.DEFAULT_OPSET if args.opset is None else args.opset
        fm_onnx.export(model, args.out, opset, **scaling)
        what = f"ONNX opset {opset}, input 'input', output 'output'"
    else:
        if args.opset is not None:
            raise CLIError("--opset applies to --format onnx")
        from .c_export import export_c

        export_c(model, args.out, args.prefix, **scaling)
        what = f"C99, {args.prefix}_predict(const float *x, int n, float *y)"
    print(f"wrote {args.out} ({what}" + (", standardizes its input" if sc else "") + ")")
    return 0


# --------------------------------------------------------------------------- bench
def _bench_script() -> Path | None:
    """FASTMLP_BENCH, or bench/train_speed.py of the source checkout this package is imported from: only
    when the package is that checkout's python/fastmlp (never a file that happens to sit two folders
    above an installed package)."""
    env = os.environ.get("FASTMLP_BENCH")
    if env:
        return Path(env)
    package = Path(__file__).resolve().parent
    root = package.parents[1]
    script = root / "bench" / "train_speed.py"
    if package != root / "python" / "fastmlp" or not script.is_file():
        return None
    try:
        project = (root / "pyproject.toml").read_text(encoding="utf-8")
    except (OSError, ValueError):
        return None
    return script if re.search(r'^\[project\]\s*\nname = "fastmlp"$', project, re.MULTILINE) else None


def cmd_bench(args: argparse.Namespace) -> int:
    script = _bench_script()
    if script is None or not script.is_file():
        raise CLIError("the benchmark is not installed: 'fastmlp bench' runs bench/train_speed.py from a source "
                       "checkout of fastmlp (git clone it, pip install -e '.[bench]', and run it there)"
                       + (f"; FASTMLP_BENCH={script} is not a file" if script is not None else ""))
    spec = importlib.util.spec_from_file_location("fastmlp_bench_train_speed", script)
    if spec is None or spec.loader is None:
        raise CLIError(f"{script}: cannot load the benchmark")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if not hasattr(mod, "main"):
        raise CLIError(f"{script}: has no main(argv) function")
    argv = (["--quick"] if args.quick else []) + list(args.rest)
    if not any(a == "--out-dir" or a.startswith("--out-dir=") for a in argv):
        argv += ["--out-dir", os.getcwd()]  # results into the current folder, as 'fastmlp train' does
    return int(mod.main(argv) or 0)


# --------------------------------------------------------------------------- entry point
def _message(e: BaseException) -> str:
    if isinstance(e, FileNotFoundError) and e.filename is not None:
        msg = f"{e.filename}: {e.strerror or 'no such file'}"
    elif isinstance(e, OSError) and e.filename is not None:
        msg = f"{e.filename}: {e.strerror or e}"
    else:
        msg = str(e) or type(e).__name__
    return " ".join(msg.split())  # one line


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "bench":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    try:
        return args.func(args)
    except BrokenPipeError:  # e.g. 'fastmlp predict ... | head': stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except (CLIError, ValueError, OSError, FloatingPointError) as e:
        if os.environ.get("FASTMLP_TRACEBACK"):
            raise
        _err(f"fastmlp {args.command}: error: {_message(e)}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        _err(f"fastmlp {args.command}: interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
