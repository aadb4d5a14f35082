"""Model files: an .npz holding a JSON header and the arrays. No pickle is
used, so loading a file never runs code.

Format (version 1):
- ``__fastmlp__``: uint8 bytes of a UTF-8 JSON object ``{"format": "fastmlp",
  "version": 1, "dtype", "seed", "training", "dropout_calls", "epochs_done", "layers": [...],
  "optimizer": null | {"class", "param_groups": [{hyperparameters...,
  "params": [names]}], "steps": [...], "momentum_ready": [...]}, "extra": {...}}``
- ``param/<name>``: each parameter ('0.weight', '0.bias', ...).
- ``buffer/<name>``: each buffer ('1.running_mean', ...; '1.num_batches_tracked' as a 0-D int64).
- ``optim/<group>``: each optimizer group's state buffer (slots, n).
"""
from __future__ import annotations

import json
import math
import os
import re
from typing import Any

import numpy as np

from . import optim
from ._files import NpyMembers, atomic_write, open_regular, write_npz
from .nn.container import Sequential
from .nn.module import _INT_BUFFERS, _LAYER_TYPES, Parameter, _layer_from_spec, _tensor_shapes
from .optim.lr_scheduler import _from_file, _to_file

FORMAT_VERSION = 1
_HEADER = "__fastmlp__"


def save(model: Any, path: Any, optimizer: Any = None, extra: dict | None = None, scheduler: Any = None) -> None:
    """Write model (and optimizer, and scheduler) to path atomically (see _files.atomic_write:
    a symlink is written through, an existing file keeps its mode, an
    interrupted save leaves the previous file and no temporary file)."""
    with model._core.hold(False):  # one consistent state, even during a fit in another thread
        header: dict = {"format": "fastmlp", "version": FORMAT_VERSION, "dtype": model.dtype.name, "seed": model.seed,
                        "training": model.training, "dropout_calls": int(model._core.dropout_calls),
                        "epochs_done": int(model._core.epochs_done),
                        "layers": model._layer_specs(), "optimizer": None, "extra": extra or {}}
        arrays = {f"{'buffer' if k in model._buffers else 'param'}/{k}": v for k, v in model.state_dict().items()}
        for k, v in arrays.items():
            if not np.isfinite(v).all():
                raise ValueError(f"cannot save: {k.split('/', 1)[1]} contains NaN or infinity")
        if optimizer is not None:
            optimizer._sync()  # the hyperparameters as the next step would use them: checked, plain numbers
            names = {id(p): n for n, p in model.named_parameters()}
            groups = []
            for gi, g in enumerate(optimizer.param_groups):
                if not all(isinstance(p, Parameter) and id(p) in names for p in g["params"]):
                    raise ValueError("save(optimizer=...) needs an optimizer over this model's parameters")
                groups.append({**{k: v for k, v in g.items() if k != "params"},
                               "params": [names[id(p)] for p in g["params"]]})
                if not hasattr(optimizer, "_core"):  # LBFGS: its own state, below
                    continue
                arrays[f"optim/{gi}"] = np.array(optimizer._core.state(gi))
                if not np.isfinite(arrays[f"optim/{gi}"]).all():
                    raise ValueError(f"cannot save: the optimizer state of group {gi} contains NaN or infinity "
                                     "(save the model without the optimizer, or reset it)")
            if hasattr(optimizer, "_core"):
                header["optimizer"] = {"class": type(optimizer).__name__, "param_groups": groups,
                                       "steps": [int(optimizer._core.get_step(i)) for i in range(len(groups))],
                                       "momentum_ready": [bool(optimizer._core.get_momentum_ready(i))
                                                          for i in range(len(groups))],
                                       "mu_product": [float(optimizer._core.get_mu_product(i))
                                                      for i in range(len(groups))]}
            else:  # LBFGS
                meta, lbfgs_arrays = optimizer._file_state()
                header["optimizer"] = {"class": type(optimizer).__name__, "param_groups": groups, "lbfgs": meta}
                arrays.update(lbfgs_arrays)
        if scheduler is not None:
            if optimizer is None or getattr(scheduler, "optimizer", None) is not optimizer:
                raise ValueError("save(scheduler=...) needs the optimizer it schedules, saved with it (optimizer=...)")
            header["scheduler"] = _to_file(scheduler)
    blob = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    with atomic_write(path) as f:
        write_npz(f, {_HEADER: blob, **arrays})


_MAX_HEADER_BYTES = 1 << 28  # 256 MiB of JSON: far above any real header (the CLI's has the feature names)
_U64 = 2**64 - 1
_MEMBER = re.compile(r"(param|buffer)/\d+(\.block\.\d+)*\.[a-z_]+|optim/\d+|lbfgs/[a-z_]+")  # '1.block.0.weight'
_TOP_FIELDS = {"format", "version", "dtype", "seed", "training", "dropout_calls", "epochs_done", "layers",
               "optimizer", "scheduler", "extra"}


def _json(v: Any) -> str:
    return json.dumps(v)[:60]


def _need(ok: bool, field: str, what: str, v: Any) -> None:
    if not ok:
        raise ValueError(f"header field {field} must be {what}, got {_json(v)}")


def _check_int(v: Any, field: str, low: int, high: int) -> None:
    _need(type(v) is int and low <= v <= high, field, f"an integer in [{low}, {high}]", v)


def _check_keys(d: Any, field: str, allowed: set, required: set) -> None:
    _need(isinstance(d, dict), field, "an object", d)
    unknown, missing = sorted(set(d) - allowed), sorted(required - set(d))
    if unknown:
        raise ValueError(f"header field {field} has unknown entries {unknown}")
    if missing:
        raise ValueError(f"header field {field} lacks {missing}")


def _check_layers(layers: list, field: str, depth: int = 0) -> None:
    """Each layer spec of the list (and of a residual block's, nested) has its exact JSON types."""
    _need(depth < 64, field, "nested less than 64 deep", "...")
    for i, spec in enumerate(layers):
        f = f"{field}[{i}]"
        _need(isinstance(spec, dict) and isinstance(spec.get("kind"), str), f, "an object with a 'kind'", spec)
        cls = _LAYER_TYPES.get(spec["kind"])
        _need(cls is not None, f"{f}.kind", "a layer kind", spec["kind"])
        _check_keys(spec, f, {"kind", *cls._fields}, set())  # type: ignore[union-attr]
        for k, v in spec.items():  # each argument has its exact JSON type (bool is not a number)
            types = {"kind": (str,), **cls._fields}[k]  # type: ignore[union-attr]
            _need(type(v) in types, f"{f}.{k}", " or ".join(t.__name__ for t in types), v)
        if spec["kind"] == "linear":
            for k in ("in_features", "out_features"):
                _need(k in spec, f"{f}.{k}", "an integer", None)
                _check_int(spec[k], f"{f}.{k}", 1, 2**62)
            init = spec.get("init", {"name": "default"})
            _check_keys(init, f"{f}.init", {"name"}, {"name"})
            _need(isinstance(init["name"], str), f"{f}.init.name", "a string", init["name"])
        if spec["kind"] == "residual":
            _check_layers(spec.get("block", []), f"{f}.block", depth + 1)


def _check_header(h: Any) -> None:
    """Every field of a version-1 header has its exact JSON type (bool is not an
    int, an int is not a float) and a value the engine accepts; the message names
    the field. The values' meaning (ranges of p, lr, ...) is checked again by
    the constructors."""
    _check_keys(h, "(the header)", _TOP_FIELDS, {"format", "version", "dtype", "seed", "layers"})
    _need(h["dtype"] in ("float32", "float64"), "dtype", "'float32' or 'float64'", h["dtype"])
    _check_int(h["seed"], "seed", 0, _U64)
    _need(type(h.get("training", True)) is bool, "training", "true or false", h.get("training"))
    for k in ("dropout_calls", "epochs_done"):
        _check_int(h.get(k, 0), k, 0, _U64)
    _need(isinstance(h.get("extra", {}), dict), "extra", "an object", h.get("extra"))
    _need(isinstance(h["layers"], list), "layers", "a list", h["layers"])
    _check_layers(h["layers"], "layers")
    _need(isinstance(h.get("scheduler", {}), dict), "scheduler", "an object", h.get("scheduler"))
    oh = h.get("optimizer")
    if oh is None:
        return
    lbfgs = isinstance(oh, dict) and oh.get("class") == "LBFGS"  # its state is its own: no steps, no optim/ arrays
    _check_keys(oh, "optimizer", {"class", "param_groups", "steps", "momentum_ready", "mu_product", "lbfgs"},
                {"class", "param_groups", "lbfgs"} if lbfgs else {"class", "param_groups", "steps"})
    _need(isinstance(oh["class"], str), "optimizer.class", "a string", oh["class"])
    groups = oh["param_groups"]
    _need(isinstance(groups, list) and len(groups) > 0, "optimizer.param_groups", "a non-empty list", groups)
    for gi, g in enumerate(groups):
        f = f"optimizer.param_groups[{gi}]"
        _need(isinstance(g, dict) and isinstance(g.get("params"), list)
              and all(isinstance(n, str) for n in g["params"]), f, "an object with 'params', a list of names", g)
        for k, v in g.items():
            ok = type(v) in (int, float, bool) or (isinstance(v, list) and all(type(b) in (int, float) for b in v))
            # None (torch's default for foreach, fused, ..., LBFGS's max_eval and line_search_fn) and LBFGS's
            # line_search_fn name are values too: the optimizer's own checks judge them when it is rebuilt
            ok = ok or v is None or (k == "line_search_fn" and isinstance(v, str))
            ok = ok or (k == "param_names" and isinstance(v, list) and all(isinstance(n, str) for n in v))
            _need(k == "params" or ok, f"{f}.{k}", "a number, true/false, a string, null or a list of numbers", v)
    n = len(groups)
    if lbfgs:
        _need(isinstance(oh["lbfgs"], dict), "optimizer.lbfgs", "an object", oh["lbfgs"])
        return
    mu = oh.get("mu_product", [1.0] * n)
    _need(isinstance(mu, list) and len(mu) == n and all(type(v) in (int, float) and math.isfinite(v) for v in mu),
          "optimizer.mu_product", f"a list of {n} finite numbers", mu)
    steps, ready = oh["steps"], oh.get("momentum_ready", [False] * n)
    _need(isinstance(steps, list) and len(steps) == n, "optimizer.steps", f"a list of {n} integers", steps)
    for gi, st in enumerate(steps):
        _check_int(st, f"optimizer.steps[{gi}]", 0, 2**63 - 2)  # the engine's int64 counts one more step
    _need(isinstance(ready, list) and len(ready) == n and all(type(r) is bool for r in ready),
          "optimizer.momentum_ready", f"a list of {n} true/false values", ready)


def _read_header(path: str, z: NpyMembers) -> dict:
    for key, info in z.names.items():
        if key != _HEADER and not _MEMBER.fullmatch(key) or info.filename != key + ".npy":
            raise ValueError(f"{path}: not a fastmlp model file (unknown member {info.filename!r})")
    if _HEADER not in z.names:
        raise ValueError(f"{path}: not a fastmlp model file (no {_HEADER} header)")
    blob = z.read(_HEADER, max_bytes=_MAX_HEADER_BYTES, kinds="u")
    if blob.dtype != np.uint8 or blob.ndim != 1:
        raise ValueError(f"{path}: corrupted header (not a 1-D uint8 array)")
    try:
        header = json.loads(blob.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"{path}: corrupted header ({type(e).__name__})") from None
    if not isinstance(header, dict) or header.get("format") != "fastmlp":
        raise ValueError(f"{path}: not a fastmlp model file")
    version = header.get("version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise ValueError(f"{path}: model file format version {_json(version)} is not supported "
                         f"(this fastmlp reads version {FORMAT_VERSION})")
    _check_header(header)
    return header


def load(path: Any, optimizer: bool = False, scheduler: bool = False) -> Any:
    """Read a model written by ``model.save``. With optimizer=True, return
    (model, optimizer) with the optimizer's state restored (None if none was
    saved); with scheduler=True as well, (model, optimizer, scheduler). A damaged
    or foreign file raises ValueError; nothing is executed.
    Only the members the format names are read (an unknown one is refused),
    each checked against the header's architecture before it is decompressed."""
    if scheduler and not optimizer:
        raise TypeError("load(scheduler=True) needs optimizer=True: a scheduler comes with its optimizer")
    path = os.fspath(path)
    with open_regular(path) as f:
        if f.read(4) != b"PK\x03\x04":
            raise ValueError(f"{path}: not a fastmlp model file (not an .npz archive)")
    try:
        with NpyMembers(path) as z:
            header = _read_header(path, z)
            return _build(header, z, optimizer, scheduler)
    except (FileNotFoundError, IsADirectoryError, PermissionError, MemoryError):
        raise
    except ValueError as e:
        msg = str(e)
        raise ValueError(msg if msg.startswith(path) else f"{path}: corrupted or incompatible model file ({msg})") \
            from None
    except Exception as e:  # a damaged file fails in many ways inside zipfile/zlib/numpy: all mean "not readable"
        raise ValueError(f"{path}: not a readable fastmlp model file ({type(e).__name__}: {e})") from None


def _build(header: dict, z: NpyMembers, with_optimizer: bool, with_scheduler: bool = False) -> Any:
    layers = [_layer_from_spec(s) for s in header["layers"]]
    # the members must be exactly the declared architecture's parameters, each of its declared shape,
    # checked from the .npy headers before any data is decompressed or memory given to the model
    members = {}  # member name -> (state_dict key, shape)
    for member, what in (("param", "parameters"), ("buffer", "buffers")):
        shapes = _tensor_shapes(layers, buffers=member == "buffer")
        present = {k[len(member) + 1:] for k in z.names if k.startswith(member + "/")}
        if present != set(shapes):
            missing, extra = sorted(set(shapes) - present), sorted(present - set(shapes))
            raise ValueError(f"the {what} do not match the declared layers (missing {missing}, unexpected {extra})")
        for name, shape in shapes.items():
            dtype, got, _, _ = z.header(f"{member}/{name}")
            if tuple(got) != shape:
                raise ValueError(f"{what[:-1]} {name} does not have the declared shape {shape}")
            members[f"{member}/{name}"] = (name, shape)
    # a count is an int64 (load_state_dict checks that it is exact in the model's dtype)
    state = {name: z.read(m, shape, kinds="i" if name.rsplit(".", 1)[1] in _INT_BUFFERS else "f")
             for m, (name, shape) in members.items()}
    model = Sequential(*layers, seed=header["seed"], dtype=header["dtype"])
    model.load_state_dict(state)
    model.train(header.get("training", True))
    model._core.dropout_calls = header.get("dropout_calls", 0)
    model._core.epochs_done = header.get("epochs_done", 0)
    model._file_extra = header.get("extra", {})
    if not with_optimizer:  # the optimizer's members are not read
        return model
    oh = header.get("optimizer")
    n_groups = 0 if oh is None or oh["class"] == "LBFGS" else len(oh["param_groups"])
    if {k for k in z.names if k.startswith("optim/")} != {f"optim/{gi}" for gi in range(n_groups)}:
        raise ValueError(f"the optimizer state members do not match the header's {n_groups} parameter group(s)")
    if oh is None:
        return (model, None, None) if with_scheduler else (model, None)
    cls: Any = getattr(optim, oh["class"], None)
    if not (isinstance(cls, type) and issubclass(cls, optim.Optimizer)) or cls is optim.Optimizer:
        raise ValueError(f"unknown optimizer class {oh['class']!r}")
    params = dict(model.named_parameters())
    groups = []
    for g in oh["param_groups"]:
        hyper = {k: (tuple(v) if k == "betas" else v) for k, v in g.items() if k != "params"}
        unknown = [n for n in g["params"] if n not in params]
        if unknown:
            raise ValueError(f"the optimizer names parameters the model does not have: {unknown}")
        groups.append({**hyper, "params": [params[n] for n in g["params"]]})
    factory: Any = cls  # a concrete optimizer class, whose first argument is the groups
    opt = factory(groups)
    if cls is optim.LBFGS:
        n = sum(p.data.size for p in opt._params)
        rows = int(opt.defaults["history_size"]) + 1
        files = {name: z.read(name, max_bytes=rows * n * 8 + 4096, kinds="f") for name in z.names
                 if name.startswith("lbfgs/")}
        opt._load_file_state(oh["lbfgs"], files)
    else:
        _load_optim_state(opt, oh, z)
    if with_scheduler:
        sh = header.get("scheduler")
        return model, opt, None if sh is None else _from_file(sh, opt)
    return model, opt


def _load_optim_state(opt: Any, oh: dict, z: NpyMembers) -> None:
    n_groups = len(opt.param_groups)
    ready = oh.get("momentum_ready", [False] * n_groups)
    for gi, step in enumerate(oh["steps"]):
        dst = opt._core.state(gi)
        buf = z.read(f"optim/{gi}", dst.shape, kinds="f")
        if buf.dtype != dst.dtype or not np.isfinite(buf).all():
            raise ValueError(f"optimizer state of group {gi} is corrupted (dtype {buf.dtype}, or not finite)")
        dst[...] = buf
        opt._core.set_step(gi, step)
        opt._core.set_momentum_ready(gi, bool(ready[gi]))
        opt._core.set_mu_product(gi, float(oh.get("mu_product", [1.0] * n_groups)[gi]))
