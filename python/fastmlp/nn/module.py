"""The base of the layers (torch.nn.modules.module): Parameter, Module, the registry of layer
classes by engine kind, and the engine's flat list of a model's layers."""
from __future__ import annotations

import copy
from typing import Any, Iterator, Mapping

import numpy as np

from .. import _core
from .._arrays import as_float_array, check_number

__all__ = ["Module", "Parameter"]


class Grad(np.ndarray):
    """A parameter's gradient: a NumPy view of the model's gradient buffer,
    with torch's ``zero_()`` (NumPy's way: ``p.grad[...] = 0``)."""

    def zero_(self) -> "Grad":
        self[...] = 0
        return self


def _value(v: Any) -> Any:
    return v._data if isinstance(v, Parameter) else v


class Parameter:
    """A parameter of a model: ``data`` and ``grad`` are NumPy views of the
    model's C++ buffers (zero-copy). Assigning to ``data`` copies into them.

    In-place arithmetic writes into the model (``p -= lr * p.grad``), and the
    usual torch in-place methods exist (``zero_``, ``fill_``, ``copy_``,
    ``add_``, ``sub_``, ``mul_``, ``div_``). ``grad`` is None after
    ``zero_grad()`` (set_to_none, torch's default) until the next backward.

    ``requires_grad_(False)`` freezes it, as torch: its ``grad`` stays None and no
    optimizer step (``opt.step()``, ``train_step``, ``fit``) changes it or its state.

    Pickled or deep-copied together with its model (``pickle.dumps((model, opt))``, a dict holding
    both), it stays the model's: the copy's optimizer steps the copied model, as in torch. Alone, it
    brings its model along."""

    __slots__ = ("_data", "_grad", "_grad_none", "_requires_grad", "name", "_model")

    def __init__(self, data: np.ndarray, grad: np.ndarray, name: str = "") -> None:
        self._data, self._grad, self.name = data, grad.view(Grad), name
        self._grad_none = False
        self._model: Any = None  # a weak reference to the Sequential whose buffers hold it
        self._requires_grad = True

    def _in_model(self) -> tuple[Any, str] | None:
        """(model, key) when it is one of a live model's parameters."""
        ref = getattr(self, "_model", None)  # (absent in Parameters unpickled from older files)
        model = ref() if ref is not None else None
        if model is not None:
            for k, q in model._params.items():
                if q is self:
                    return model, k
        return None

    def __reduce__(self) -> tuple:
        found = self._in_model()
        if found is not None:  # the pickled model's own parameter (pickle's memo: one model for all)
            return _parameter_of, found
        return _standalone_parameter, (np.array(self._data), np.array(self._grad), self.name, self._requires_grad,
                                       self._grad_none)

    def __deepcopy__(self, memo: dict) -> "Parameter":
        found = self._in_model()
        if found is not None:  # the copied model's own parameter
            return copy.deepcopy(found[0], memo)._params[found[1]]
        p = memo[id(self)] = self._copy()
        return p

    def _copy(self) -> "Parameter":
        """A Parameter of no model, with copies of the data and gradient."""
        return _standalone_parameter(self._data.copy(), self._grad.copy(), self.name, self._requires_grad,
                                     self._grad_none)

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
    def grad(self) -> Grad | None:
        return None if self._grad_none or not self._requires_grad else self._grad

    @grad.setter
    def grad(self, value: Any) -> None:
        if value is None:
            self._zero_grad(True)
            return
        a = as_float_array(value, self._data.dtype, f"{self.name or 'parameter'}.grad")
        if a.shape != self._data.shape:
            raise ValueError(f"{self.name or 'parameter'}.grad: shape {a.shape} does not match {self._data.shape}")
        self._grad[...] = a
        self._grad_none = False

    def _zero_grad(self, set_to_none: bool) -> None:
        """Zero the gradient buffer (so the next backward starts from 0); with
        set_to_none, .grad reads None until then."""
        self._grad[...] = 0
        self._grad_none = self._grad_none or set_to_none

    shape = property(lambda self: self._data.shape)
    dtype = property(lambda self: self._data.dtype)
    ndim = property(lambda self: self._data.ndim)
    size = property(lambda self: self._data.size)

    @property
    def requires_grad(self) -> bool:
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"requires_grad must be True or False, got {value!r}")
        self._requires_grad = bool(value)

    def requires_grad_(self, requires_grad: bool = True) -> "Parameter":
        """Freeze (False) or unfreeze the parameter in place, as torch; returns it."""
        self.requires_grad = requires_grad
        return self

    def numel(self) -> int:
        return int(self._data.size)

    # ---- in place, into the model's buffer (torch's names); each returns the Parameter
    def __iadd__(self, other: Any) -> "Parameter":
        self._data += _value(other)
        return self

    def __isub__(self, other: Any) -> "Parameter":
        self._data -= _value(other)
        return self

    def __imul__(self, other: Any) -> "Parameter":
        self._data *= _value(other)
        return self

    def __itruediv__(self, other: Any) -> "Parameter":
        self._data /= _value(other)
        return self

    def zero_(self) -> "Parameter":
        self._data[...] = 0
        return self

    def fill_(self, value: float) -> "Parameter":
        self._data[...] = check_number(value, "fill_ value")
        return self

    def copy_(self, src: Any) -> "Parameter":
        self.data = _value(src)
        return self

    def add_(self, other: Any, alpha: float = 1) -> "Parameter":
        self._data += alpha * np.asarray(_value(other))
        return self

    def sub_(self, other: Any, alpha: float = 1) -> "Parameter":
        self._data -= alpha * np.asarray(_value(other))
        return self

    def mul_(self, other: Any) -> "Parameter":
        return self.__imul__(other)

    def div_(self, other: Any) -> "Parameter":
        return self.__itruediv__(other)

    def detach(self) -> np.ndarray:
        """The values as a NumPy view of the model's buffer (torch's detach shares memory too)."""
        return self._data

    numpy = detach

    def clone(self) -> np.ndarray:
        return self._data.copy()

    def __getattr__(self, name: str) -> Any:
        hint = ("; it is a NumPy view: write in place with NumPy (p.data[...] = ..., p.grad[...] = 0) or fm.init"
                if name.endswith("_") and not name.startswith("_") else "")
        raise AttributeError(f"'Parameter' object has no attribute {name!r}{hint}")

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        if copy:
            return np.array(self._data, dtype=dtype, copy=True)
        return self._data if dtype is None else self._data.astype(dtype)

    def __repr__(self) -> str:
        return f"Parameter {self.name} {self._data.shape} {self._data.dtype}:\n{self._data!r}"


_LAYER_TYPES: dict[str, type["Module"]] = {}


class Module:
    """Base of the layers. Layers describe the computation; a Sequential
    owns their parameters and buffers, which appear as ``.weight``/``.bias``
    (``.running_mean``, ...) once built.

    A layer class names its engine kind (``_kind``, the name the C++ layer is
    registered under in cpp/layers/) and the arguments of its spec (``_fields``:
    name -> the JSON types a model file may give; each is an attribute of the same
    name and a constructor argument). The spec is what the engine builds the layer
    from, what model files store and what `_layer_from_spec` rebuilds it from."""

    training: bool = True
    _kind: str = ""
    _fields: dict[str, tuple] = {}
    _owner: Any = None  # a weak reference to the Sequential whose buffers hold this layer's tensors
    _requires_grad: bool = True  # given to the layer's Parameters when a model creates them

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("_kind"):
            _LAYER_TYPES[cls._kind] = cls

    def _spec(self) -> dict:
        return {"kind": self._kind, **{k: getattr(self, k) for k in self._fields}}

    def __getstate__(self) -> dict:
        """Pickling or deep-copying a layer gives a layer of its own (no model), with copies of its tensors."""
        state = dict(self.__dict__)
        state.pop("_owner", None)
        for k, v in state.items():
            if isinstance(v, Parameter):
                state[k] = v._copy()
            elif isinstance(v, np.ndarray):
                state[k] = v.copy()
        return state

    @classmethod
    def _from_spec(cls, spec: Mapping[str, Any]) -> "Module":
        return cls(**{k: spec[k] for k in cls._fields if k in spec})

    def _flat(self, name: str) -> list:
        """This layer's entries in the engine's flat list (see _flatten), its tensors named '<name>.<tensor>';
        a block overrides it."""
        return [(self._spec(), name, self)]

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"{type(self).__name__} is a layer description: put it in fm.Sequential(...) and call that")

    # ---- the module tree, as torch.nn.Module's
    def _named_children(self) -> list:
        return []

    def named_children(self) -> Iterator[tuple[str, "Module"]]:
        return iter(self._named_children())

    def children(self) -> Iterator["Module"]:
        return iter([m for _, m in self._named_children()])

    def named_modules(self, memo: set | None = None, prefix: str = "",
                      remove_duplicate: bool = True) -> Iterator[tuple[str, "Module"]]:
        """This module and every module inside it, depth first, with torch's names
        ('', '0', '1', '1.block', '1.block.0', ...); a module met twice is given once."""
        memo = set() if memo is None else memo
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, m in self._named_children():
            yield from m.named_modules(memo, f"{prefix}.{name}" if prefix else name, remove_duplicate)

    def modules(self) -> Iterator["Module"]:
        return iter([m for _, m in self.named_modules()])

    def apply(self, fn: Any) -> "Module":
        """fn(module) on every child module (recursively), then on this one, as torch; returns self."""
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]:  # type: ignore[override]
        """The layer's Parameters (and those of the layers inside it) with names relative to it
        ('weight', 'block.0.bias'); none until a Sequential holding the layer is built."""
        out = []
        for prefix, m in self.named_modules():
            out += [(f"{prefix}.{k}" if prefix else k, v) for k, v in vars(m).items() if isinstance(v, Parameter)]
        return iter(out)

    def parameters(self) -> Iterator[Parameter]:
        return iter([p for _, p in self.named_parameters()])

    def requires_grad_(self, requires_grad: bool = True) -> "Module":
        """Freeze (False) or unfreeze every parameter of this module, as torch; a layer not yet in a
        model passes the setting to the Parameters the model creates for it. Returns self."""
        if not isinstance(requires_grad, (bool, np.bool_)):
            raise TypeError(f"requires_grad must be True or False, got {requires_grad!r}")
        for m in self.modules():
            m._requires_grad = bool(requires_grad)
        for p in self.parameters():
            p.requires_grad = bool(requires_grad)
        return self


# buffers that torch keeps as int64 (stored in the model's float type, exact up to 2**24 / 2**53)
_INT_BUFFERS = frozenset({"num_batches_tracked"})


def _flatten(layers: Any, prefix: str = "") -> list:
    """The engine's flat layer list for these layers: [(spec, state_dict prefix or None, layer)],
    each layer giving its entries (Module._flat: a Residual gives residual_begin, its block's
    layers '<i>.block.<j>', residual_end)."""
    out: list = []
    for i, layer in enumerate(layers):
        out += layer._flat(f"{prefix}{i}")
    return out


def _modules(layers: Any) -> Iterator[Module]:
    """Every layer, those inside blocks too, in order; a layer given twice is met twice (a block's
    container, such as a Residual's ``block``, is no layer: it has no engine kind)."""
    for layer in layers:
        yield from (m for _, m in layer.named_modules(remove_duplicate=False) if m._kind)


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


def _tensor_shapes(layers: list, buffers: bool = False) -> dict:
    """{state_dict key: shape} of every parameter (buffers=True: every buffer) a
    Sequential of these layers would have, from the engine's table, without
    building it (no memory is given to the tensors)."""
    flat = _flatten(layers)
    out = {}
    for i, name, shape, is_buffer in _core.layer_tensors([spec for spec, _, _ in flat]):
        if is_buffer == buffers:
            out[f"{flat[i][1]}.{name}"] = tuple(shape)
    return out


def _parameter_of(model: Any, key: str) -> Parameter:
    """A pickled model parameter: the unpickled model's own."""
    return model._params[key]


def _standalone_parameter(data: np.ndarray, grad: np.ndarray, name: str, requires_grad: bool,
                          grad_none: bool) -> Parameter:
    p = Parameter(data, grad, name)
    p._requires_grad, p._grad_none = requires_grad, grad_none
    return p
