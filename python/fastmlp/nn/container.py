"""Sequential, the model, and Residual, the block (torch.nn.modules.container)."""
from __future__ import annotations

import builtins
import copy
import threading
import weakref
from collections import OrderedDict
from typing import Any, Iterator, Mapping

import numpy as np

from .. import _core, _random
from .._arrays import as_dtype, as_float_array, check_finite, check_precision
from .linear import Linear
from .module import _INT_BUFFERS, Grad, Module, Parameter, _flatten, _layer_from_spec, _modules

__all__ = ["Sequential", "Residual"]

_TRAINING: Any = None


def _training() -> Any:
    """fastmlp.training, imported on the first call and kept: the per-call methods (train_step in a
    Python loop, predict of one row) would otherwise pay ~2 us an import statement."""
    global _TRAINING
    if _TRAINING is None:
        from .. import training

        _TRAINING = training
    return _TRAINING


class Residual(Module):
    """x + block(x), as a torch module ``Residual`` whose ``block`` is ``nn.Sequential(*layers)``
    and whose forward is ``x + self.block(x)``: its tensors are named '<i>.block.<j>.weight'.
    The block must keep the width. Blocks nest. ``block`` is indexed and iterated as that
    nn.Sequential (``model[1].block[0].weight``) and is fixed: replace the Residual to change it."""

    _kind = "residual"
    _fields = {"block": (list,)}

    def __init__(self, *layers: Module) -> None:
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for j, layer in enumerate(layers):
            if not isinstance(layer, Module) or isinstance(layer, (Sequential, _Block)):
                raise TypeError(f"Residual: layer {j} must be a fastmlp layer, got {type(layer).__name__}")
        self.block = _Block(layers)

    def _named_children(self) -> list:
        return [("block", self.block)]

    def _flat(self, name: str) -> list:
        # cpp/layers/residual.cpp: residual_begin, the block's layers, residual_end in the engine's flat list
        return [({"kind": "residual_begin"}, None, None), *_flatten(self.block, f"{name}.block."),
                ({"kind": "residual_end"}, None, None)]

    def _spec(self) -> dict:
        return {"kind": self._kind, "block": [layer._spec() for layer in self.block]}

    @classmethod
    def _from_spec(cls, spec: Mapping[str, Any]) -> "Module":
        block = spec.get("block", [])
        if not isinstance(block, list) or not all(isinstance(b, Mapping) for b in block):
            raise ValueError("residual: block must be a list of layer specs")
        return cls(*[_layer_from_spec(b) for b in block])

    def __repr__(self) -> str:
        return "Residual(\n  (block): " + repr(self.block).replace("\n", "\n  ") + "\n)"


class _Block(Module):
    """A Residual's block: its layers in order, indexed and iterated as torch's nn.Sequential
    ('1.block.0'). Fixed once built: to change a block, replace the Residual (model[i] = ...)."""

    def __init__(self, layers: Any) -> None:
        self._layers = tuple(layers)

    def __len__(self) -> int:
        return len(self._layers)

    def __getitem__(self, i: Any) -> Any:
        return list(self._layers[i]) if isinstance(i, slice) else self._layers[i]

    def __iter__(self) -> Iterator[Module]:
        return iter(self._layers)

    def __setitem__(self, i: Any, value: Any) -> None:
        raise TypeError("a Residual's block cannot be edited in place: replace the whole block, "
                        "model[i] = fm.Residual(...) (the layers you keep keep their parameters)")

    __delitem__ = __setitem__

    def _named_children(self) -> list:
        return [(str(j), layer) for j, layer in enumerate(self._layers)]

    def __repr__(self) -> str:
        inner = "".join(f"\n  ({j}): " + repr(layer).replace("\n", "\n  ") for j, layer in enumerate(self._layers))
        return f"Sequential({inner}\n)"


class Sequential(Module):
    """A stack of layers run in order, with its parameters in one C++ buffer.

    >>> model = Sequential(Linear(784, 256), ReLU(), Linear(256, 10), seed=0)

    ``seed`` initialises every Linear (by its ``init``) and drives dropout;
    with seed=None one is drawn from the global stream (fm.manual_seed).
    ``dtype`` is 'float32' (default) or 'float64'.
    """

    def __init__(self, *layers: Module, seed: int | None = None, dtype: Any = "float32") -> None:
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        self._layers: list[Module] = []
        self._params: "OrderedDict[str, Parameter]" = OrderedDict()
        self._buffers: "OrderedDict[str, np.ndarray]" = OrderedDict()
        self._build(list(layers), as_dtype(dtype), _random.next_seed() if seed is None else _random.check_seed(seed))
        self._last_1d = False
        self._can_backward: bool | None = None  # None: no forward yet; False: its backward has run
        self._fit_lock = threading.Lock()  # held for a whole fit call
        self._file_extra: dict = {}  # metadata of the file the model was loaded from

    def _build(self, layers: list, dtype: np.dtype, seed: int) -> None:
        """Build the C++ model of these layers. A layer that already has tensors (this model's, or
        one removed from a model) gives them its values, and keeps its Parameter objects (pointed
        at the new buffers, converted to dtype); the others are initialised from seed. Layers of
        this model left out get copies of their tensors. Everything is checked before anything changes."""
        for i, layer in enumerate(layers):
            if isinstance(layer, (Sequential, _Block)):
                raise TypeError(f"layer {i}: nested Sequential models are not supported; list the layers flat")
            if not isinstance(layer, Module):
                raise TypeError(f"layer {i}: expected a fastmlp layer (Linear, ReLU, ...), got {type(layer).__name__}")
        seen: set = set()
        for layer in _modules(layers):
            if "weight" not in vars(layer):  # stateless (activations, dropout): may appear anywhere, twice
                continue
            # a model owns its layers' tensors (one buffer per model): a layer cannot be in two places,
            # which would look weight-tied without being so
            owner = layer._owner() if layer._owner is not None else None
            if owner is not None and owner is not self:
                raise ValueError(f"this {type(layer).__name__} already belongs to a model, and a layer cannot be "
                                 "shared between models; use copy.deepcopy(model) for an independent copy, "
                                 f"or a new {type(layer).__name__}(...)")
            if id(layer) in seen:
                raise ValueError(f"this {type(layer).__name__} appears twice; weight sharing is not supported. "
                                 "Use two layers (copy.deepcopy(layer) before building the model)")
            seen.add(id(layer))
        cls = _core.Model32 if dtype == np.float32 else _core.Model64
        flat = _flatten(layers)  # residual blocks become residual_begin ... residual_end
        core = cls([spec for spec, _, _ in flat], seed)
        old = getattr(self, "_core", None)
        if old is not None:
            core.training = old.training
            core.dropout_calls, core.epochs_done = old.dropout_calls, old.epochs_done
        params: "OrderedDict[str, Parameter]" = OrderedDict()
        buffers: "OrderedDict[str, np.ndarray]" = OrderedDict()
        order, kept = [], []  # torch's state_dict order: layer by layer, its parameters then its buffers
        for layer_idx, pname, data, grad in core.parameters():
            name, layer = f"{flat[layer_idx][1]}.{pname}", flat[layer_idx][2]
            p = getattr(layer, pname, None)
            if isinstance(p, Parameter) and p.shape == data.shape:
                data[...], grad[...] = p._data, p._grad
                kept.append((p, data, grad, name))
            else:
                p = Parameter(data, grad, name)
                p._requires_grad = layer._requires_grad
            params[name] = p
            order.append((layer_idx, 0, name, layer, pname))
        for layer_idx, bname, view in core.buffers():
            name, layer = f"{flat[layer_idx][1]}.{bname}", flat[layer_idx][2]
            v = getattr(layer, bname, None)
            if isinstance(v, np.ndarray) and v.shape == view.shape:
                view[...] = v
            buffers[name] = view
            order.append((layer_idx, 1, name, layer, bname))
        # nothing below can fail: commit
        mine = {id(m) for m in _modules(layers)}
        for m in _modules(self._layers):  # left out: they keep copies of their tensors
            if id(m) not in mine:
                for k, v in list(vars(m).items()):
                    if isinstance(v, Parameter):
                        v._data, v._grad, v._model = v._data.copy(), v._grad.copy().view(Grad), None
                    elif isinstance(v, np.ndarray):
                        setattr(m, k, v.copy())
                m._owner = None
        for p, data, grad, name in kept:
            p._data, p._grad, p.name = data, grad.view(Grad), name
        for _, kind, name, layer, attr in order:
            setattr(layer, attr, params[name] if kind == 0 else buffers[name])
        ref = weakref.ref(self)
        for p in params.values():
            p._model = ref
        for m in _modules(layers):
            m._owner = ref
            m.training = bool(core.training)
        self.dtype, self._core, self._layers, self._params, self._buffers = dtype, core, layers, params, buffers
        # multiply-adds per row of the largest product (residual blocks' included): training.auto_threads
        self._largest_product = max((la.in_features * la.out_features for _, _, la in flat
                                     if hasattr(la, "in_features")), default=0)
        self._state_keys = [k for _, _, k, _, _ in sorted(order, key=lambda t: t[:2])]

    # ---- structure
    def __len__(self) -> int:
        return len(self._layers)

    def __getitem__(self, i: Any) -> Any:
        """model[i] is the layer; model[a:b] a new Sequential of copies of those layers (their
        current values, the model's seed and dtype: a layer belongs to one model)."""
        if isinstance(i, slice):
            with self._core.hold(False):
                copies = [copy.deepcopy(layer) for layer in self._layers[i]]  # Module.__getstate__: no model
            out = Sequential(*copies, seed=self.seed, dtype=self.dtype)
            return out.train(self.training)
        return self._layers[self._index(i)]

    def __iter__(self) -> Iterator[Module]:
        return iter(list(self._layers))

    def _index(self, i: Any, insert: bool = False) -> int:
        """i as a position in the layers, as torch.nn.Sequential reads it (negative from the end);
        insert: a position to insert at (clamped, as list.insert)."""
        if not isinstance(i, (int, np.integer)) or isinstance(i, (bool, np.bool_)):
            raise TypeError(f"Sequential indices must be integers or slices, not {type(i).__name__}")
        n, i = len(self._layers), int(i)
        if insert:
            return max(0, min(n, i + n if i < 0 else i))
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of range")
        return i + n if i < 0 else i

    def _restructure(self, layers: list) -> None:
        """Rebuild the C++ model for a new layer list (structural edits). Optimizers built before
        keep the old buffers: their step raises, asking for a new optimizer."""
        if not self._fit_lock.acquire(blocking=False):
            raise RuntimeError("the model is being trained (fit): change its structure after fit returns")
        try:
            with self._core.hold(True):
                self._build(layers, self.dtype, self.seed)
            self._can_backward = None  # the last forward belongs to the old structure
        finally:
            self._fit_lock.release()

    def __setitem__(self, i: Any, layer: Any) -> None:
        layers = list(self._layers)
        if isinstance(i, slice):
            layers[i] = list(layer)
        else:
            layers[self._index(i)] = layer
        self._restructure(layers)

    def __delitem__(self, i: Any) -> None:
        layers = list(self._layers)
        if isinstance(i, slice):
            del layers[i]
        else:
            del layers[self._index(i)]
        self._restructure(layers)

    def append(self, layer: Module) -> "Sequential":
        """Add a layer at the end (rebuilding the C++ model; the other layers keep their values)."""
        self._restructure(self._layers + [layer])
        return self

    def extend(self, layers: Any) -> "Sequential":
        self._restructure(self._layers + list(layers))
        return self

    def insert(self, index: int, layer: Module) -> "Sequential":
        layers = list(self._layers)
        layers.insert(self._index(index, insert=True), layer)
        self._restructure(layers)
        return self

    def pop(self, index: int = -1) -> Module:
        layer = self._layers[self._index(index)]
        del self[index]
        return layer

    def _named_children(self) -> list:
        return [(str(i), layer) for i, layer in enumerate(self._layers)]

    # ---- dtype, as torch's module.to(dtype) / .double() / .float()
    def to(self, dtype: Any) -> "Sequential":
        """Convert the parameters and buffers to dtype ('float32', 'float64', np.float64 or a
        torch dtype), in place; the Parameter objects stay the model's. Returns self."""
        dt = as_dtype(str(dtype).replace("torch.", "") if "torch" in str(type(dtype)) else dtype)
        if dt != self.dtype:
            if not self._fit_lock.acquire(blocking=False):
                raise RuntimeError("the model is being trained (fit): convert it after fit returns")
            try:
                with self._core.hold(True):
                    self._build(self._layers, dt, self.seed)
                self._can_backward = None
            finally:
                self._fit_lock.release()
        return self

    def double(self) -> "Sequential":
        return self.to(np.float64)

    def float(self) -> "Sequential":
        return self.to(np.float32)

    def summary(self, print_fn: Any = print) -> str | None:
        """A table of the layers (nested blocks indented), their output widths and parameter
        counts, then the totals (trainable / frozen) as Keras's model.summary(). Printed with
        print_fn (print); print_fn=None returns the text instead."""
        width = self.in_features
        rows = []

        def walk(layers: Any, prefix: str, depth: int) -> None:
            nonlocal width
            for i, layer in enumerate(layers):
                name = f"{prefix}{i}"
                if isinstance(layer, Linear):
                    width = layer.out_features
                n = sum(p.numel() for p in layer.parameters())
                rows.append(("  " * depth + f"{name} ({type(layer).__name__})",
                             "?" if width is None else f"(None, {width})", f"{n:,}"))
                if isinstance(layer, Residual):
                    walk(layer.block, f"{name}.block.", depth + 1)

        walk(self._layers, "", 0)
        head = ("Layer (type)", "Output Shape", "Param #")
        w = [max(len(r[k]) for r in rows + [head]) for k in range(3)]
        line = lambda r: f"{r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:>{w[2]}}"  # noqa: E731
        rule = "=" * (sum(w) + 4)
        total = sum(p.numel() for p in self._params.values())
        frozen = sum(p.numel() for p in self._params.values() if not p.requires_grad)
        n_buf = sum(int(b.size) for b in self._buffers.values())
        text = "\n".join([f'Model: "Sequential" ({self.dtype.name})', rule, line(head), rule,
                          *[line(r) for r in rows], rule, f"Total params: {total:,}",
                          f"Trainable params: {total - frozen:,}", f"Non-trainable params: {frozen:,}",
                          *([f"Buffers (not trained): {n_buf:,}"] if n_buf else []), rule])
        if print_fn is None:
            return text
        print_fn(text)
        return None

    def __repr__(self) -> str:
        inner = "".join(f"\n  ({i}): " + repr(layer).replace("\n", "\n  ") for i, layer in enumerate(self._layers))
        return f"Sequential({inner}\n)" if inner else "Sequential()"

    @property
    def seed(self) -> int:
        return int(self._core.seed)

    @property
    def in_features(self) -> int | None:
        n = self._core.in_features()
        return None if n < 0 else int(n)

    def _layer_specs(self) -> list:
        return [layer._spec() for layer in self._layers]

    # ---- mode
    @property
    def training(self) -> bool:  # type: ignore[override]
        return bool(self._core.training)

    def train(self, mode: bool = True) -> "Sequential":
        self._core.training = bool(mode)
        for layer in _modules(self._layers):
            layer.training = bool(mode)
        return self

    def eval(self) -> "Sequential":
        return self.train(False)

    # ---- parameters
    def parameters(self) -> Iterator[Parameter]:
        return iter(list(self._params.values()))

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]:
        return iter(list(self._params.items()))

    def num_parameters(self) -> int:
        return int(self._core.n_params)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset every gradient, as torch: to None by default (an optimizer's
        step() skips the parameter until a backward), or to zeros."""
        with self._core.hold(True):  # during a fit in another thread: between two of its steps
            for p in self._params.values():
                p._zero_grad(set_to_none)

    def _grads_set(self) -> None:
        """A backward (or a training step) gave every parameter a gradient."""
        for p in self._params.values():
            p._grad_none = False

    def reset_parameters(self, seed: int | None = None) -> "Sequential":
        """Re-initialise every layer's parameters and buffers (running statistics), from seed (default:
        the model's seed)."""
        self._core.reset_parameters(self.seed if seed is None else _random.check_seed(seed))
        return self

    def buffers(self) -> Iterator[np.ndarray]:
        """The buffers (BatchNorm's running statistics): live NumPy views, not trained."""
        return iter(list(self._buffers.values()))

    def named_buffers(self) -> Iterator[tuple[str, np.ndarray]]:
        return iter(list(self._buffers.items()))

    def _tensor(self, key: str) -> np.ndarray:
        return self._params[key].data if key in self._params else self._buffers[key]

    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Copies of the parameters and buffers, keyed, ordered and shaped as torch.nn.Sequential's
        (num_batches_tracked as a 0-D int64): one consistent state (during a fit in another thread,
        taken between two of its steps)."""
        with self._core.hold(False):
            return OrderedDict((k, np.array(self._tensor(k), dtype=np.int64) if k.rsplit(".", 1)[1] in _INT_BUFFERS
                                else self._tensor(k).copy()) for k in self._state_keys)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> None:
        """Copy parameters and buffers in (NumPy arrays, or anything np.asarray takes,
        e.g. CPU torch tensors). Everything is checked before anything changes."""
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
        missing = [k for k in self._state_keys if k not in state_dict]
        unexpected = [k for k in state_dict if k not in self._params and k not in self._buffers]
        if strict and (missing or unexpected):
            raise KeyError(f"Error(s) in loading state_dict: missing keys {missing}, unexpected keys {unexpected}")
        staged = {}
        for k in self._state_keys:
            if k not in state_dict:
                continue
            dst = self._tensor(k)
            v = state_dict[k]
            if hasattr(v, "detach"):  # a torch tensor
                v = v.detach().cpu().numpy()
            a = as_float_array(v, dst.dtype, name=f"state_dict[{k!r}]").reshape(np.shape(v))  # 0-D stays 0-D
            if a.shape != dst.shape:
                raise ValueError(f"size mismatch for {k}: copying a param with shape {a.shape}, "
                                 f"the shape in current model is {dst.shape}")
            if not np.isfinite(a).all():
                raise ValueError(f"state_dict[{k!r}] contains NaN or infinity")
            if k.rsplit(".", 1)[1] in _INT_BUFFERS:
                exact = 2 ** (np.finfo(dst.dtype).nmant + 1)  # every count up to here is exact in the dtype
                n = np.asarray(v)
                if not (n.dtype.kind in "fiu" and n == np.floor(n) and 0 <= n <= exact):
                    raise ValueError(f"state_dict[{k!r}] must be an integer count in [0, {exact}] "
                                     f"(exact in {dst.dtype}), got {n}")
            staged[k] = a
        with self._core.hold(True):  # during a fit in another thread: between two of its steps
            for k, a in staged.items():
                self._tensor(k)[...] = a

    # ---- compute
    def _input(self, x: Any, check: bool = True) -> np.ndarray:
        """x as a 2-D float array of the model's dtype; check=False leaves its
        finiteness to the caller (predict checks chunk by chunk in C++)."""
        if np.ndim(x) == 0:
            raise ValueError("input is a 0-D scalar; pass a 1-D sample or a 2-D (batch, features) array")
        a = as_float_array(x, self.dtype, "input")
        if check:
            check_finite(a, "input")
        if a.ndim == 1:
            return a.reshape(1, -1)
        if a.ndim != 2:
            raise ValueError(f"input must be 1-D (one sample) or 2-D (batch, features), got {a.ndim}-D")
        return a

    def forward(self, x: Any, precision: str = "float32") -> np.ndarray:
        """The model's output for x (batch, in_features) as a new array. ``precision='bfloat16'``: the
        products in bfloat16 (see ``fit``); the next ``backward`` uses the same precision."""
        bf16 = check_precision(precision, self)
        a = self._input(x)
        out = self._core.forward(a, bf16)
        self._last_1d = np.ndim(x) == 1  # only once the forward succeeded
        self._can_backward = True
        return out[0] if self._last_1d else out

    __call__ = forward

    def backward(self, grad_output: Any, retain_graph: bool = False) -> np.ndarray:
        """Back-propagate dL/d(output) through the last forward (the model keeps
        only the last one's activations): accumulates every parameter's .grad
        and returns dL/d(input). grad_output must have that output's shape. As
        in PyTorch, a second backward of the same forward raises unless the
        first one passed retain_graph=True."""
        if self._can_backward is False:
            raise RuntimeError("Trying to backward through the graph a second time: the last forward was "
                               "already back-propagated (or train_step/fit ran since); call the model on the "
                               "input again, or pass retain_graph=True to the first backward")
        g = as_float_array(grad_output, self.dtype, "grad_output")
        g = g.reshape(1, -1) if (self._last_1d and g.ndim == 1) else g
        dx = self._core.backward(g, True)
        self._can_backward = bool(retain_graph)
        self._grads_set()
        return dx[0] if self._last_1d else dx

    # ---- pickling (joblib, copy.deepcopy): the architecture and arrays, never the C++ object
    def __getstate__(self) -> dict:
        with self._core.hold(False):
            return self._state()

    def _state(self) -> dict:
        return {"layers": self._layer_specs(), "dtype": self.dtype.name, "seed": self.seed,
                "training": self.training, "dropout_calls": int(self._core.dropout_calls),
                "epochs_done": int(self._core.epochs_done), "state_dict": self.state_dict(),
                "frozen": [k for k, p in self._params.items() if not p.requires_grad]}

    def __setstate__(self, state: dict) -> None:
        Sequential.__init__(self, *[_layer_from_spec(s) for s in state["layers"]], seed=state["seed"],
                            dtype=state["dtype"])
        self.load_state_dict(state["state_dict"])
        self.train(state["training"])
        self._core.dropout_calls = state["dropout_calls"]
        self._core.epochs_done = state["epochs_done"]
        for k in state.get("frozen", ()):
            self._params[k].requires_grad = False

    # ---- the Keras-style facade: train_step, fit, predict, evaluate, save and to_onnx call the layers above
    # nn (training, distributed, serialization, onnx), imported when called (training by _training, once).
    # These are the only imports of a higher layer below fastmlp/__init__.py (tests/test_layout.py holds the list).
    def train_step(self, x: Any, y: Any, loss_fn: Any, optimizer: Any, precision: str = "float32",
                   clip_grad_norm: builtins.float | None = None,
                   clip_grad_value: builtins.float | None = None) -> builtins.float:
        """zero_grad + forward + loss + backward + optimizer.step in one C++
        call (dropout active), with the gradient clipped before the step as
        fm.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm) then
        clip_grad_value_(..., clip_grad_value) would. Returns the loss before the step.
        ``precision``: as ``fit``'s."""
        return _training().train_step(self, x, y, loss_fn, optimizer, precision=precision,
                                      clip_grad_norm=clip_grad_norm, clip_grad_value=clip_grad_value)

    def fit(self, X: Any, y: Any, loss: Any, optimizer: Any, epochs: int = 1, batch_size: int = 32,
            shuffle: bool = True, validation_data: Any = None, scheduler: Any = None, callbacks: Any = (),
            verbose: int = 1, n_threads: int | None = None, sample_weight: Any = None,
            scheduler_interval: str | None = None, comm: Any = None, precision: str = "float32",
            clip_grad_norm: builtins.float | None = None, clip_grad_value: builtins.float | None = None,
            validation_split: builtins.float = 0.0,
            class_weight: dict | None = None, initial_epoch: int = 0, metrics: Any = (),
            steps_per_epoch: int | None = None) -> Any:
        """Train for ``epochs`` epochs of mini-batches; the loop runs in C++
        with the GIL released. Returns a History (per-epoch loss, val_loss,
        accuracy, val_accuracy, lr, time). Ctrl-C stops at the next batch
        boundary and raises KeyboardInterrupt; the model keeps every completed step.
        ``sample_weight`` (n,) makes each batch's loss the weighted mean over its rows
        (a batch whose weights are all zero is skipped).

        Keras's options: ``validation_split`` holds out the last fraction of the rows
        (before shuffling) as validation data; ``class_weight`` ({class: weight}) weights
        each row's loss by its class (times ``sample_weight``); with ``initial_epoch``
        the epochs run from it to ``epochs`` (History and callbacks see those indices);
        ``metrics`` ('accuracy', 'mae', 'mse') adds History keys ``mae``, ``mse`` (the
        training outputs' errors, summed in the C++ loop) and ``val_mae``, ``val_mse``
        (accuracy is always logged for a classification loss). ``steps_per_epoch``
        makes each epoch that many batches, continuing through the data from where
        the last epoch stopped and starting a new (reshuffled) pass at its end, so
        epochs may be shorter or longer than one pass (one process, mini-batch
        optimizers; a divergence resets the model to the epoch's start or, if the
        epoch crossed the end of the data, to that crossing).
        ``clip_grad_norm`` / ``clip_grad_value`` clip each step's gradient in the C++
        loop, as ``fm.nn.utils.clip_grad_norm_(model.parameters(), max_norm)`` (the
        total 2-norm over all parameters) and ``clip_grad_value_`` between backward and
        step: once per step, on the whole batch's gradient (after the chunks' sum
        or comm's allreduce).

        ``n_threads`` bounds fastmlp's threads and OpenBLAS's together (None:
        every core). Unless the model has BatchNorm on batch statistics, fit
        splits each batch of at least 64 rows into chunks (2, or 4 to 8 for big
        batches of small models: ``fastmlp.training.batch_chunks``, a function of
        the batch and the model, not of the threads), runs them on ``n_threads``
        threads with single-threaded products, and sums their gradients in a fixed
        tree before the step: the whole batch's update in another summation order
        (float64 agrees with an unchunked ``train_step`` to ~1e-12), and the same
        bits for every ``n_threads``. Dropout draws the same masks either way (each
        chunk the whole batch's mask of its rows). BatchNorm models give their
        products the threads, or one thread when they are small (where BLAS
        threads cost more than they bring).

        Other threads may use the model during a fit: ``predict``, ``state_dict``,
        ``save``, ``load_state_dict``, ``train_step``, ``forward``/``backward`` and
        ``opt.step()`` wait for the next batch boundary (at most one batch) and see
        one consistent state between two steps. Callbacks and signal handlers run
        on fit's own thread between batches or epochs and may call the model too.
        A second fit of the same model is refused with RuntimeError.

        ``scheduler`` is stepped after every epoch, or after every batch with
        ``scheduler_interval='batch'`` (inside the C++ loop: no Python call per batch).
        None: per batch for OneCycleLR and CyclicLR, per epoch for the others.
        With ``optimizer=LBFGS`` training is full-batch: one ``step(closure)`` per epoch
        over all of X (batch_size and shuffle are ignored).

        ``comm`` (an mpi4py communicator, e.g. ``MPI.COMM_WORLD``) trains data-parallel:
        X, y are this rank's shard and ``batch_size`` the global batch (see
        fastmlp.distributed).

        ``precision='bfloat16'`` (float32 models) runs every Linear product, forward and backward, as
        ``torch.autocast('cpu', dtype=torch.bfloat16)`` does: both operands rounded to bfloat16 (to nearest
        even), the products accumulated in float32 (AVX512_BF16 where the CPU has it, else an emulation with
        the same bits, on AVX-512F or AVX2 registers where the CPU has those). Weights, gradients, optimizer
        state, activations, losses and element-wise layers stay
        float32. The default ``'float32'`` computes in the model's dtype."""
        from .. import distributed, training

        fit: Any = training.fit if comm is None else distributed.fit
        return fit(self, X, y, loss, optimizer, epochs=epochs, batch_size=batch_size, shuffle=shuffle,
                   validation_data=validation_data, scheduler=scheduler, callbacks=callbacks, verbose=verbose,
                   n_threads=n_threads, sample_weight=sample_weight, scheduler_interval=scheduler_interval,
                   comm=comm, precision=precision, clip_grad_norm=clip_grad_norm, clip_grad_value=clip_grad_value,
                   validation_split=validation_split, class_weight=class_weight, initial_epoch=initial_epoch,
                   metrics=metrics, steps_per_epoch=steps_per_epoch)

    def predict(self, X: Any, batch_size: int | None = None, n_threads: int | None = None,
                precision: str = "float32") -> np.ndarray:
        """Eval-mode output for X, in chunks, GIL released. Predicts from several threads run at
        once; each one uses one set of weights for all its chunks (during a fit in another
        thread, the weights between two of its steps). ``precision``: as ``fit``'s."""
        return _training().predict(self, X, batch_size=batch_size, n_threads=n_threads, precision=precision)

    def evaluate(self, X: Any, y: Any, loss: Any, batch_size: int | None = None,
                 n_threads: int | None = None, precision: str = "float32") -> dict:
        """{'loss': ..., 'accuracy': ... (classification losses)} in eval mode. ``precision``: as ``fit``'s."""
        return _training().evaluate(self, X, y, loss, batch_size=batch_size, n_threads=n_threads, precision=precision)

    def save(self, path: Any, optimizer: Any = None, scheduler: Any = None) -> None:
        """Write architecture + weights (+ optimizer state, + its scheduler's) to an .npz file, atomically."""
        from ..serialization import save

        save(self, path, optimizer=optimizer, scheduler=scheduler)

    def to_onnx(self, path: Any = None, opset: int | None = None) -> Any:
        """The ONNX model (onnx.ModelProto) computing predict; with a path, also
        written there (atomically). Needs the 'onnx' extra; see fastmlp.onnx."""
        from .. import onnx as fm_onnx

        opset = fm_onnx.DEFAULT_OPSET if opset is None else opset
        return fm_onnx.to_model(self, opset) if path is None else fm_onnx.export(self, path, opset)
