"""Layers and the Sequential model (torch.nn semantics, C++ engine)."""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Iterator, Mapping

import numpy as np

from . import _core, _random
from ._arrays import as_dtype, as_float_array, check_finite, check_int, check_number

__all__ = [
    "Module", "Parameter", "Linear", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "GELU", "Softmax",
    "Identity", "Dropout", "Sequential", "ELU", "CELU", "SELU", "SiLU", "Mish", "Softplus", "Softsign",
    "Hardtanh", "ReLU6", "Hardsigmoid", "Hardswish", "LogSigmoid", "LogSoftmax", "PReLU", "Flatten",
    "AlphaDropout",
]

_INIT_NAMES = ("default", "zeros", "ones", "uniform", "normal", "xavier_uniform", "xavier_normal",
               "kaiming_uniform", "kaiming_normal")


class Parameter:
    """A parameter of a model: ``data`` and ``grad`` are NumPy views of the
    model's C++ buffers (zero-copy). Assigning to ``data`` copies into them."""

    __slots__ = ("_data", "_grad", "name")

    def __init__(self, data: np.ndarray, grad: np.ndarray, name: str = "") -> None:
        self._data, self._grad, self.name = data, grad, name

    @property
    def data(self) -> np.ndarray:
        return self._data

    @data.setter
    def data(self, value: Any) -> None:
        value = np.asarray(value)
        if value.shape != self._data.shape:
            raise ValueError(f"{self.name or 'parameter'}: shape {value.shape} does not match {self._data.shape}")
        self._data[...] = value

    @property
    def grad(self) -> np.ndarray:
        return self._grad

    shape = property(lambda self: self._data.shape)
    dtype = property(lambda self: self._data.dtype)
    ndim = property(lambda self: self._data.ndim)
    size = property(lambda self: self._data.size)

    def numel(self) -> int:
        return int(self._data.size)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        if copy:
            return np.array(self._data, dtype=dtype, copy=True)
        return self._data if dtype is None else self._data.astype(dtype)

    def __repr__(self) -> str:
        return f"Parameter {self.name} {self._data.shape} {self._data.dtype}:\n{self._data!r}"


_LAYER_TYPES: dict[str, type["Module"]] = {}


class Module:
    """Base of the layers. Layers describe the computation; a Sequential
    owns their parameters, which appear as ``.weight``/``.bias`` once built.

    A layer class names its engine kind (``_kind``, the name the C++ layer is
    registered under in cpp/layers/) and the arguments of its spec (``_fields``:
    name -> the JSON types a model file may give; each is an attribute of the same
    name and a constructor argument). The spec is what the engine builds the layer
    from, what model files store and what `_layer_from_spec` rebuilds it from."""

    training: bool = True
    _kind: str = ""
    _fields: dict[str, tuple] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("_kind"):
            _LAYER_TYPES[cls._kind] = cls

    def _spec(self) -> dict:
        return {"kind": self._kind, **{k: getattr(self, k) for k in self._fields}}

    @classmethod
    def _from_spec(cls, spec: Mapping[str, Any]) -> "Module":
        return cls(**{k: spec[k] for k in cls._fields if k in spec})

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"{type(self).__name__} is a layer description: put it in fm.Sequential(...) and call that")


class Linear(Module):
    """y = x W^T + b with W (out_features, in_features), like torch.nn.Linear.

    ``init`` names the weight initializer ('default' is PyTorch's: W and b
    uniform in +-1/sqrt(in_features)); with any other init the bias starts at 0.
    """

    _kind = "linear"
    _fields = {"in_features": (int,), "out_features": (int,), "bias": (bool,), "init": (dict,)}

    def __init__(self, in_features: int, out_features: int, bias: bool = True, init: str = "default") -> None:
        self.in_features = check_int(in_features, "in_features", low=1, high=2**62)
        self.out_features = check_int(out_features, "out_features", low=1, high=2**62)
        self.bias_enabled = bool(bias)
        if init not in _INIT_NAMES:
            raise ValueError(f"unknown init {init!r}; expected one of {', '.join(_INIT_NAMES)}")
        self.init = init
        self.weight: Parameter | None = None
        self.bias: Parameter | None = None

    def _spec(self) -> dict:
        return {"kind": "linear", "in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias_enabled, "init": {"name": self.init}}

    @classmethod
    def _from_spec(cls, spec: Mapping[str, Any]) -> "Module":
        init = spec.get("init", {"name": "default"})
        if not (isinstance(init, Mapping) and set(init) == {"name"} and isinstance(init["name"], str)):
            raise ValueError(f"linear: init must be an object {{'name': ...}}, got {init!r}")
        return cls(spec["in_features"], spec["out_features"], bias=spec.get("bias", True), init=init["name"])

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias_enabled}"


class _Activation(Module):
    pass


class ReLU(_Activation):
    _kind = "relu"


class Sigmoid(_Activation):
    _kind = "sigmoid"


class Tanh(_Activation):
    _kind = "tanh"


class Identity(_Activation):
    _kind = "identity"


class GELU(_Activation):
    """GELU: x * Phi(x) (approximate='none', PyTorch's default: the erf form) or
    x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))) (approximate='tanh')."""

    _kind = "gelu"
    _fields = {"approximate": (str,)}

    def __init__(self, approximate: str = "none") -> None:
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class Softmax(_Activation):
    """Softmax over the features of each row (dim=-1 / dim=1 of a batch)."""

    _kind = "softmax"

    def __init__(self, dim: int | None = -1) -> None:
        if dim not in (-1, 1, None):
            raise ValueError(f"Softmax: only dim=-1 (the feature axis of a (batch, features) input) is supported, got {dim}")
        self.dim = -1


class LeakyReLU(_Activation):
    _kind = "leaky_relu"
    _fields = {"negative_slope": (int, float)}

    def __init__(self, negative_slope: float = 0.01) -> None:
        self.negative_slope = check_number(negative_slope, "negative_slope")

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


# ---- the modern activations (torch.nn's names, arguments, defaults and formulas)
class ELU(_Activation):
    """x if x > 0 else alpha * (e^x - 1)."""

    _kind = "elu"
    _fields = {"alpha": (int, float)}

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = check_number(alpha, "ELU alpha")

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class CELU(_Activation):
    """max(0, x) + min(0, alpha * (e^(x/alpha) - 1)); alpha must not be 0."""

    _kind = "celu"
    _fields = {"alpha": (int, float)}

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = check_number(alpha, "CELU alpha")
        if self.alpha == 0:
            raise ValueError("CELU: alpha must not be 0")

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class SELU(_Activation):
    """scale * ELU(x, alpha) with scale = 1.0507009873554805, alpha = 1.6732632423543772."""

    _kind = "selu"


class SiLU(_Activation):
    """x * sigmoid(x) (also called swish)."""

    _kind = "silu"


class Mish(_Activation):
    """x * tanh(softplus(x))."""

    _kind = "mish"


class Softplus(_Activation):
    """log(1 + e^(beta x)) / beta, and x where beta * x > threshold."""

    _kind = "softplus"
    _fields = {"beta": (int, float), "threshold": (int, float)}

    def __init__(self, beta: float = 1.0, threshold: float = 20.0) -> None:
        self.beta = check_number(beta, "Softplus beta")
        if self.beta == 0:
            raise ValueError("Softplus: beta must not be 0")
        self.threshold = check_number(threshold, "Softplus threshold")

    def extra_repr(self) -> str:
        return f"beta={self.beta}, threshold={self.threshold}"


class Softsign(_Activation):
    """x / (1 + |x|)."""

    _kind = "softsign"


class Hardtanh(_Activation):
    """x clamped to [min_val, max_val] (gradient 0 at and beyond the ends)."""

    _kind = "hardtanh"
    _fields = {"min_val": (int, float), "max_val": (int, float)}

    def __init__(self, min_val: float = -1.0, max_val: float = 1.0) -> None:
        self.min_val = check_number(min_val, "Hardtanh min_val")
        self.max_val = check_number(max_val, "Hardtanh max_val")
        if not self.min_val < self.max_val:
            raise ValueError(f"Hardtanh: min_val ({self.min_val}) must be less than max_val ({self.max_val})")

    def extra_repr(self) -> str:
        return f"min_val={self.min_val}, max_val={self.max_val}"


class ReLU6(_Activation):
    """min(max(x, 0), 6), i.e. Hardtanh(0, 6)."""

    _kind = "relu6"


class Hardsigmoid(_Activation):
    """min(max(x + 3, 0), 6) / 6."""

    _kind = "hardsigmoid"


class Hardswish(_Activation):
    """x * min(max(x + 3, 0), 6) / 6."""

    _kind = "hardswish"


class LogSigmoid(_Activation):
    """log(sigmoid(x)) = -softplus(-x)."""

    _kind = "logsigmoid"


class LogSoftmax(_Activation):
    """log(softmax(x)) over the features of each row (dim=1 / dim=-1 of a batch)."""

    _kind = "log_softmax"

    def __init__(self, dim: int = 1) -> None:
        if isinstance(dim, bool) or dim not in (1, -1):
            raise ValueError(f"LogSoftmax: only dim=1 or dim=-1 (the feature axis of a (batch, features) input) "
                             f"is supported, got {dim!r}")
        self.dim = 1


class PReLU(Module):
    """x if x > 0 else a * x with a learnable ``weight`` a of shape (num_parameters,): one weight
    for every feature (num_parameters=1) or one per feature (num_parameters = the input width),
    each starting at ``init``."""

    _kind = "prelu"
    _fields = {"num_parameters": (int,), "init": (int, float)}

    def __init__(self, num_parameters: int = 1, init: float = 0.25) -> None:
        self.num_parameters = check_int(num_parameters, "PReLU num_parameters", low=1, high=2**62)
        self.init = check_number(init, "PReLU init")
        self.weight: Parameter | None = None

    def extra_repr(self) -> str:
        return f"num_parameters={self.num_parameters}"


class Flatten(Module):
    """nn.Flatten(start_dim=1, end_dim=-1): the identity on (batch, features) inputs (so that torch
    models and checkpoints with a Flatten line up layer by layer)."""

    _kind = "flatten"
    _fields = {"start_dim": (int,), "end_dim": (int,)}

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        for name, v in (("start_dim", start_dim), ("end_dim", end_dim)):
            if isinstance(v, bool) or v not in (1, -1):
                raise ValueError(f"Flatten: only {name}=1 or -1 (the feature axis of a (batch, features) input) "
                                 f"is supported, got {v!r}")
        self.start_dim, self.end_dim = int(start_dim), int(end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Dropout(Module):
    """Inverted dropout: in training, zero each element with probability p
    and scale the rest by 1/(1-p); identity in eval mode."""

    _kind = "dropout"
    _fields = {"p": (int, float)}

    def __init__(self, p: float = 0.5) -> None:
        self.p = check_number(p, "dropout probability p", low=0.0, high=1.0, high_open=True)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class AlphaDropout(Module):
    """Alpha dropout for SELU networks, as torch.nn.AlphaDropout: in training each element is
    dropped with probability p to alpha' = -1.7580993408473766 and the result is scaled and
    shifted (a * (...) + b) so that zero mean and unit variance are kept; identity in eval mode."""

    _kind = "alpha_dropout"
    _fields = {"p": (int, float)}

    def __init__(self, p: float = 0.5) -> None:
        self.p = check_number(p, "alpha dropout probability p", low=0.0, high=1.0)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _layer_from_spec(spec: Mapping[str, Any]) -> Module:
    """The layer a spec describes (a model file's or a pickle's), through the
    registry of layer classes: unknown kinds and unknown arguments are refused."""
    cls = _LAYER_TYPES.get(spec.get("kind"))  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(f"unknown layer kind {spec.get('kind')!r}")
    unknown = sorted(set(spec) - {"kind"} - set(cls._fields))
    if unknown:
        raise ValueError(f"{cls._kind}: unknown arguments {unknown}")
    return cls._from_spec(spec)


def _tensor_shapes(layers: list) -> dict:
    """{state_dict key: shape} of every parameter a Sequential of these layers
    would have, from the engine's table, without building it (no memory is
    given to the parameters)."""
    out = {}
    for i, name, shape in _core.layer_tensors([layer._spec() for layer in layers]):
        out[f"{i}.{name}"] = tuple(shape)
    return out


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
        for i, layer in enumerate(layers):
            if isinstance(layer, Sequential):
                raise TypeError(f"layer {i}: nested Sequential models are not supported; list the layers flat")
            if not isinstance(layer, Module):
                raise TypeError(f"layer {i}: expected a fastmlp layer (Linear, ReLU, ...), got {type(layer).__name__}")
        self.dtype = as_dtype(dtype)
        seed = _random.next_seed() if seed is None else _random.check_seed(seed)
        cls = _core.Model32 if self.dtype == np.float32 else _core.Model64
        self._core = cls([layer._spec() for layer in layers], seed)
        self._layers = list(layers)
        self._params: "OrderedDict[str, Parameter]" = OrderedDict()
        for layer_idx, pname, data, grad in self._core.parameters():
            name = f"{layer_idx}.{pname}"
            p = Parameter(data, grad, name)
            self._params[name] = p
            setattr(self._layers[layer_idx], pname, p)
        self._last_1d = False
        self._fit_lock = threading.Lock()  # held for a whole fit call
        self._file_extra: dict = {}  # metadata of the file the model was loaded from

    # ---- structure
    def __len__(self) -> int:
        return len(self._layers)

    def __getitem__(self, i: int) -> Module:
        return self._layers[i]

    def __iter__(self) -> Iterator[Module]:
        return iter(self._layers)

    def __repr__(self) -> str:
        inner = "".join(f"\n  ({i}): {layer!r}" for i, layer in enumerate(self._layers))
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
        for layer in self._layers:
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

    def zero_grad(self) -> None:
        with self._core.hold(True):
            self._core.flat_grads()[...] = 0

    def reset_parameters(self, seed: int | None = None) -> "Sequential":
        """Re-initialise every Linear, from seed (default: the model's seed)."""
        self._core.reset_parameters(self.seed if seed is None else _random.check_seed(seed))
        return self

    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Copies of the parameters, keyed and shaped as torch.nn.Sequential's: one consistent state
        (during a fit in another thread, taken between two of its steps)."""
        with self._core.hold(False):
            return OrderedDict((k, p.data.copy()) for k, p in self._params.items())

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> None:
        """Copy parameters in (NumPy arrays, or anything np.asarray takes,
        e.g. CPU torch tensors). Everything is checked before anything changes."""
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
        missing = [k for k in self._params if k not in state_dict]
        unexpected = [k for k in state_dict if k not in self._params]
        if strict and (missing or unexpected):
            raise KeyError(f"Error(s) in loading state_dict: missing keys {missing}, unexpected keys {unexpected}")
        staged = {}
        for k, p in self._params.items():
            if k not in state_dict:
                continue
            v = state_dict[k]
            if hasattr(v, "detach"):  # a torch tensor
                v = v.detach().cpu().numpy()
            a = as_float_array(v, p.dtype, name=f"state_dict[{k!r}]")
            if a.shape != p.shape:
                raise ValueError(f"size mismatch for {k}: copying a param with shape {a.shape}, "
                                 f"the shape in current model is {p.shape}")
            if not np.isfinite(a).all():
                raise ValueError(f"state_dict[{k!r}] contains NaN or infinity")
            staged[k] = a
        with self._core.hold(True):  # during a fit in another thread: between two of its steps
            for k, a in staged.items():
                self._params[k].data[...] = a

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

    def forward(self, x: Any) -> np.ndarray:
        """The model's output for x (batch, in_features) as a new array."""
        a = self._input(x)
        out = self._core.forward(a)
        self._last_1d = np.ndim(x) == 1  # only once the forward succeeded
        return out[0] if self._last_1d else out

    __call__ = forward

    def backward(self, grad_output: Any) -> np.ndarray:
        """Back-propagate dL/d(output) of the last forward: accumulates every
        parameter's .grad and returns dL/d(input)."""
        g = as_float_array(grad_output, self.dtype, "grad_output")
        g = g.reshape(1, -1) if (self._last_1d and g.ndim == 1) else g
        dx = self._core.backward(g, True)
        return dx[0] if self._last_1d else dx

    def train_step(self, x: Any, y: Any, loss_fn: Any, optimizer: Any) -> float:
        """zero_grad + forward + loss + backward + optimizer.step in one C++
        call (dropout active). Returns the loss before the step."""
        from .losses import _Loss
        from .optim import Optimizer

        if not isinstance(loss_fn, _Loss):
            raise TypeError(f"loss_fn must be a fastmlp loss (e.g. fm.CrossEntropyLoss()), got {type(loss_fn).__name__}")
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a fastmlp optimizer, got {type(optimizer).__name__}")
        core_opt = optimizer._core_for(self)
        a = self._input(x)
        out_width = self._core.out_features(a.shape[1])
        t = loss_fn._target(y, (a.shape[0], out_width), self.dtype)
        check_finite(t, "target")
        optimizer._sync()
        return float(self._core.train_step(a, t, loss_fn._spec(self.dtype), core_opt))

    def fit(self, X: Any, y: Any, loss: Any, optimizer: Any, epochs: int = 1, batch_size: int = 32,
            shuffle: bool = True, validation_data: Any = None, scheduler: Any = None, callbacks: Any = (),
            verbose: int = 1, n_threads: int | None = None, sample_weight: Any = None) -> Any:
        """Train for ``epochs`` epochs of mini-batches; the loop runs in C++
        with the GIL released. Returns a History (per-epoch loss, val_loss,
        accuracy, val_accuracy, lr, time). Ctrl-C stops at the next batch
        boundary and raises KeyboardInterrupt; the model keeps every completed step.
        ``sample_weight`` (n,) makes each batch's loss the weighted mean over its rows
        (a batch whose weights are all zero is skipped).

        ``n_threads`` bounds fastmlp's threads and OpenBLAS's together (None:
        every core). When the products are too small for OpenBLAS's threads (a
        batch's largest product under 8M multiply-adds), a model without dropout
        and batches of at least 64 rows, two or more threads split each batch in
        two halves computed at once, each with single-threaded products, whose
        gradients are added before the step: the same update in another summation
        order (float64 agrees with one thread to ~1e-12), bit-reproducible for a
        given n_threads. Otherwise the products use the threads, or one thread
        when they are small (where BLAS threads cost more than they bring).

        Other threads may use the model during a fit: ``predict``, ``state_dict``,
        ``save``, ``load_state_dict``, ``train_step``, ``forward``/``backward`` and
        ``opt.step()`` wait for the next batch boundary (at most one batch) and see
        one consistent state between two steps. Callbacks and signal handlers run
        on fit's own thread between batches or epochs and may call the model too.
        A second fit of the same model is refused with RuntimeError."""
        from .training import fit

        return fit(self, X, y, loss, optimizer, epochs=epochs, batch_size=batch_size, shuffle=shuffle,
                   validation_data=validation_data, scheduler=scheduler, callbacks=callbacks, verbose=verbose,
                   n_threads=n_threads, sample_weight=sample_weight)

    def predict(self, X: Any, batch_size: int | None = None, n_threads: int | None = None) -> np.ndarray:
        """Eval-mode output for X, in chunks, GIL released. Predicts from several threads run at
        once; each one uses one set of weights for all its chunks (during a fit in another
        thread, the weights between two of its steps)."""
        from .training import predict

        return predict(self, X, batch_size=batch_size, n_threads=n_threads)

    def evaluate(self, X: Any, y: Any, loss: Any, batch_size: int | None = None,
                 n_threads: int | None = None) -> dict:
        """{'loss': ..., 'accuracy': ... (classification losses)} in eval mode."""
        from .training import evaluate

        return evaluate(self, X, y, loss, batch_size=batch_size, n_threads=n_threads)

    # ---- pickling (joblib, copy.deepcopy): the architecture and arrays, never the C++ object
    def __getstate__(self) -> dict:
        with self._core.hold(False):
            return self._state()

    def _state(self) -> dict:
        return {"layers": self._layer_specs(), "dtype": self.dtype.name, "seed": self.seed,
                "training": self.training, "dropout_calls": int(self._core.dropout_calls),
                "epochs_done": int(self._core.epochs_done), "state_dict": self.state_dict()}

    def __setstate__(self, state: dict) -> None:
        Sequential.__init__(self, *[_layer_from_spec(s) for s in state["layers"]], seed=state["seed"],
                            dtype=state["dtype"])
        self.load_state_dict(state["state_dict"])
        self.train(state["training"])
        self._core.dropout_calls = state["dropout_calls"]
        self._core.epochs_done = state["epochs_done"]

    # ---- files
    def save(self, path: Any, optimizer: Any = None) -> None:
        """Write architecture + weights (+ optimizer state) to an .npz file, atomically."""
        from .serialization import save

        save(self, path, optimizer=optimizer)
