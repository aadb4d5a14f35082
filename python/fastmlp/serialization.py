"""Model files: an .npz holding a JSON header and the arrays. No pickle is
used, so loading a file never runs code.

Format (version 1):
- ``__fastmlp__``: uint8 bytes of a UTF-8 JSON object ``{"format": "fastmlp",
  "version": 1, "dtype", "seed", "training", "dropout_calls", "epochs_done", "layers": [...],
  "optimizer": null | {"class", "param_groups": [{hyperparameters...,
  "params": [names]}], "steps": [...], "momentum_ready": [...]}, "extra": {...}}``
- ``param/<name>``: each parameter ('0.weight', '0.bias', ...).
- ``optim/<group>``: each optimizer group's state buffer (slots, n).
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any, BinaryIO, Callable

import numpy as np

FORMAT_VERSION = 1
_HEADER = "__fastmlp__"


def save(model: Any, path: Any, optimizer: Any = None, extra: dict | None = None) -> None:
    """Write model (and optimizer) to path atomically: a temporary file in the
    same folder is written, flushed and renamed over path."""
    from .nn import Parameter

    header: dict = {"format": "fastmlp", "version": FORMAT_VERSION, "dtype": model.dtype.name, "seed": model.seed,
                    "training": model.training, "dropout_calls": int(model._core.dropout_calls),
                    "epochs_done": int(model._core.epochs_done),
                    "layers": model._layer_specs(), "optimizer": None, "extra": extra or {}}
    arrays = {f"param/{k}": v for k, v in model.state_dict().items()}
    for k, v in arrays.items():
        if not np.isfinite(v).all():
            raise ValueError(f"cannot save: {k[len('param/'):]} contains NaN or infinity")
    if optimizer is not None:
        names = {id(p): n for n, p in model.named_parameters()}
        groups = []
        for gi, g in enumerate(optimizer.param_groups):
            if not all(isinstance(p, Parameter) and id(p) in names for p in g["params"]):
                raise ValueError("save(optimizer=...) needs an optimizer over this model's parameters")
            groups.append({**{k: v for k, v in g.items() if k != "params"}, "params": [names[id(p)] for p in g["params"]]})
            arrays[f"optim/{gi}"] = np.array(optimizer._core.state(gi))
            if not np.isfinite(arrays[f"optim/{gi}"]).all():
                raise ValueError(f"cannot save: the optimizer state of group {gi} contains NaN or infinity "
                                 "(save the model without the optimizer, or reset it)")
        header["optimizer"] = {"class": type(optimizer).__name__, "param_groups": groups,
                               "steps": [int(optimizer._core.get_step(i)) for i in range(len(groups))],
                               "momentum_ready": [bool(optimizer._core.get_momentum_ready(i))
                                                  for i in range(len(groups))]}
    blob = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    atomic_write(path, lambda f: np.savez(f, **{_HEADER: blob, **arrays}))


def atomic_write(path: Any, write: Callable[[BinaryIO], Any]) -> None:
    """Call write(f) on a temporary file in path's folder, flush it to disk and
    rename it over path: an interrupted write never leaves a torn file."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".fastmlp-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _read(path: Any) -> tuple[dict, dict]:
    path = os.fspath(path)
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":
            raise ValueError(f"{path}: not a fastmlp model file (not an .npz archive)")
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError("an .npy array, not an .npz archive")
        with z:
            files = {k: z[k] for k in z.files}
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as e:  # a damaged file fails in many ways inside numpy/zipfile: all mean "not readable"
        raise ValueError(f"{path}: not a readable fastmlp model file ({type(e).__name__}: {e})") from None
    if _HEADER not in files:
        raise ValueError(f"{path}: not a fastmlp model file (no {_HEADER} header)")
    blob = files.pop(_HEADER)
    if not isinstance(blob, np.ndarray) or blob.dtype != np.uint8:
        raise ValueError(f"{path}: corrupted header (not a uint8 array)")
    try:
        header = json.loads(blob.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"{path}: corrupted header ({type(e).__name__})") from None
    if not isinstance(header, dict) or header.get("format") != "fastmlp":
        raise ValueError(f"{path}: not a fastmlp model file")
    if header.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path}: model file format version {header.get('version')} is not supported "
                         f"(this fastmlp reads version {FORMAT_VERSION})")
    return header, files


def load(path: Any, optimizer: bool = False) -> Any:
    """Read a model written by ``model.save``. With optimizer=True, return
    (model, optimizer) with the optimizer's state restored (None if none was
    saved). A damaged or foreign file raises ValueError; nothing is executed."""
    header, files = _read(path)
    try:
        return _build(header, files, optimizer)
    except (KeyError, TypeError, AttributeError, IndexError, ValueError, OverflowError) as e:
        raise ValueError(f"{os.fspath(path)}: corrupted or incompatible model file ({type(e).__name__}: {e})") from None


def _build(header: dict, files: dict, with_optimizer: bool) -> Any:
    from . import optim
    from .nn import Linear, Sequential, _layer_from_spec

    layers = [_layer_from_spec(s) for s in header["layers"]]
    # the arrays must match the declared architecture before any memory is given to it
    for i, layer in enumerate(layers):
        if isinstance(layer, Linear):
            shapes = {"weight": (layer.out_features, layer.in_features), "bias": (layer.out_features,)}
            for name, shape in shapes.items():
                a = files.get(f"param/{i}.{name}")
                if a is None and name == "bias" and not layer.bias_enabled:
                    continue
                if a is None or a.shape != shape:
                    raise ValueError(f"parameter {i}.{name} is missing or does not have the declared shape {shape}")
    model = Sequential(*layers, seed=int(header["seed"]), dtype=header["dtype"])
    state = {k[len("param/"):]: v for k, v in files.items() if k.startswith("param/")}
    model.load_state_dict(state)
    counters = {k: header.get(k, 0) for k in ("dropout_calls", "epochs_done")}
    for k, v in counters.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{k} must be a non-negative integer, got {v!r}")
    model.train(bool(header.get("training", True)))
    model._core.dropout_calls = counters["dropout_calls"]
    model._core.epochs_done = counters["epochs_done"]
    model._file_extra = header.get("extra", {})
    if not with_optimizer:
        return model
    oh = header.get("optimizer")
    if oh is None:
        return model, None
    cls: Any = getattr(optim, oh["class"], None)
    if not (isinstance(cls, type) and issubclass(cls, optim.Optimizer)) or cls is optim.Optimizer:
        raise ValueError(f"unknown optimizer class {oh['class']!r}")
    params = dict(model.named_parameters())
    groups = []
    for g in oh["param_groups"]:
        hyper = {k: (tuple(v) if k == "betas" else v) for k, v in g.items() if k != "params"}
        groups.append({**hyper, "params": [params[n] for n in g["params"]]})
    factory: Any = cls  # a concrete optimizer class, whose first argument is the groups
    opt = factory(groups)
    steps = oh["steps"]
    if len(steps) != len(groups) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in steps):
        raise ValueError(f"optimizer steps {steps!r} do not match its {len(groups)} parameter group(s)")
    ready = oh.get("momentum_ready", [False] * len(groups))
    for gi, step in enumerate(steps):
        buf = files.get(f"optim/{gi}")
        dst = opt._core.state(gi)
        if buf is None or buf.shape != dst.shape or buf.dtype != dst.dtype or not np.isfinite(buf).all():
            raise ValueError(f"optimizer state of group {gi} is missing or corrupted")
        dst[...] = buf
        opt._core.set_step(gi, step)
        opt._core.set_momentum_ready(gi, bool(ready[gi]))
    return model, opt
