"""Optimizers with torch.optim's update rules, defaults and state_dict layout.

Parameters are a model's Parameters (their .grad is used) or plain NumPy
float arrays, updated in place (pass their gradients: ``opt.step(grads)``).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np

from .. import _core
from .._arrays import FLOAT_DTYPES, as_float_array, check_number
from ..nn import Parameter

__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adadelta", "Adam", "AdamW"]

# options torch.optim keeps in its param_groups that have no meaning here
_TORCH_ONLY_OPTIONS = {"foreach", "fused", "capturable", "differentiable", "decoupled_weight_decay"}

# state_dict names of each optimizer's state slots, in the C++ slot order
_SLOT_NAMES = {
    "sgd": ["momentum_buffer"],
    "adagrad": ["sum"],
    "rmsprop": ["square_avg", "momentum_buffer", "grad_avg"],
    "adadelta": ["square_avg", "acc_delta"],
    "adam": ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"],
    "adamw": ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"],
}


class Optimizer:
    """Base class: holds ``param_groups`` (dicts as in PyTorch) and one C++
    optimizer whose state lives in one buffer per group."""

    _kind = ""

    def __init__(self, params: Iterable[Any], defaults: dict) -> None:
        self.defaults = dict(defaults)
        params = list(params) if not isinstance(params, (Parameter, np.ndarray)) else [params]
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.param_groups: list[dict] = []
        seen: set[int] = set()
        dtype = None
        for g in groups:
            if not isinstance(g, dict) or "params" not in g:
                raise TypeError("parameter groups must be dicts with a 'params' entry")
            ps = g["params"]
            ps = [ps] if isinstance(ps, (Parameter, np.ndarray)) else list(ps)
            for p in ps:
                if not isinstance(p, (Parameter, np.ndarray)):
                    raise TypeError(f"optimizer can only optimize fastmlp Parameters or NumPy arrays, got {type(p).__name__}")
                arr = p.data if isinstance(p, Parameter) else p
                if arr.dtype not in FLOAT_DTYPES:
                    raise TypeError(f"parameters must be float32 or float64 arrays, got {arr.dtype}")
                if not arr.flags.c_contiguous or not arr.flags.writeable:
                    raise ValueError("parameters must be writable C-contiguous arrays (they are updated in place)")
                if dtype is not None and arr.dtype != dtype:
                    raise TypeError("all parameters of one optimizer must share a dtype")
                dtype = arr.dtype
                if id(p) in seen:
                    raise ValueError("some parameters appear in more than one parameter group")
                seen.add(id(p))
            unknown = set(g) - set(self.defaults) - {"params", "initial_lr"}
            if unknown:
                raise TypeError(f"unknown option(s) {sorted(unknown)} for {type(self).__name__}")
            group = {**self.defaults, **{k: v for k, v in g.items() if k != "params"}, "params": ps}
            self._check(group)
            self.param_groups.append(group)
        self._dtype = np.dtype(dtype)
        cls = _core.Optimizer32 if self._dtype == np.float32 else _core.Optimizer64
        self._core = cls([(self._config(g), [self._pair(p) for p in g["params"]]) for g in self.param_groups])

    # ---- hyperparameters
    def _check(self, group: dict, keys: Any = None) -> None:
        """Check the group's values (only those named in keys, if given), then
        their combination."""
        for k, v in group.items():
            if keys is not None and k not in keys:
                continue
            if k in ("nesterov", "centered", "amsgrad", "maximize", "sklearn_adam"):
                if not isinstance(v, (bool, np.bool_)):
                    raise TypeError(f"{k} must be True or False, got {v!r}")
            elif k == "betas":
                if not isinstance(v, (tuple, list, np.ndarray)):
                    raise TypeError(f"betas must be a pair (beta1, beta2), got {v!r}")
                if len(v) != 2:
                    raise ValueError(f"betas must be a pair (beta1, beta2), got {v!r}")
                for i, b in enumerate(v):
                    check_number(b, f"beta parameter at index {i}", low=0.0, high=1.0, high_open=True)
            elif k not in ("params", "initial_lr"):
                check_number(v, k, low=0.0 if k in ("lr", "eps", "weight_decay", "momentum", "lr_decay") else None)
        _core.check_optim(self._config(group))

    def _config(self, group: dict) -> dict:
        cfg = {k: v for k, v in group.items() if k not in ("params", "initial_lr")}
        cfg["kind"] = self._kind
        return cfg

    @staticmethod
    def _pair(p: Any) -> tuple:
        return (p.data, p.grad) if isinstance(p, Parameter) else (p, None)

    @staticmethod
    def _snapshot(cfg: dict) -> dict | None:
        """The values of a group's configuration, comparable with ==; None when
        they are not plain numbers (then the whole group is checked again)."""
        try:
            return {k: (type(v), tuple(float(b) for b in v) if k == "betas" else float(v))
                    for k, v in cfg.items() if k != "kind"}
        except (TypeError, ValueError):
            return None

    def _sync(self) -> None:
        """Check the groups' hyperparameters (a user or a scheduler may have
        changed them) and push them to C++: only what changed since the last
        push is checked again, and everything is checked before anything is
        pushed."""
        pushed = self.__dict__.setdefault("_pushed", {})
        todo = []
        for i, g in enumerate(self.param_groups):
            cfg = self._config(g)
            snap, old = self._snapshot(cfg), pushed.get(i)
            if snap is not None and snap == old:
                continue
            changed = None if snap is None or old is None else {k for k in snap if snap[k] != old.get(k)}
            self._check(g, changed)
            todo.append((i, cfg, snap))
        for i, cfg, snap in todo:
            self._core.set_config(i, cfg)
            pushed[i] = snap

    def _core_for(self, model: Any) -> Any:
        """The C++ optimizer, for a model whose parameters these must be."""
        if model.dtype != self._dtype:
            raise TypeError(f"optimizer parameters are {self._dtype}, the model is {model.dtype}")
        mine = {id(p) for p in model.parameters()}
        if not all(id(p) in mine for g in self.param_groups for p in g["params"]):
            raise ValueError("the optimizer must be built over this model's parameters (model.parameters())")
        return self._core

    # ---- stepping
    def step(self, grads: Any = None, closure: Callable[[], Any] | None = None) -> Any:
        """One update of every parameter. Parameters of a model use their
        .grad; plain arrays need ``grads``, one array per parameter in order."""
        if callable(grads) and closure is None:
            grads, closure = None, grads
        loss = closure() if closure is not None else None
        self._sync()
        if grads is None:
            self._core.step()
        else:
            flat = [p for g in self.param_groups for p in g["params"]]
            grads = [grads] if isinstance(grads, np.ndarray) and len(flat) == 1 and grads.shape == np.shape(flat[0]) else list(grads)
            if len(grads) != len(flat):
                raise ValueError(f"step(grads) needs {len(flat)} gradients, got {len(grads)}")
            conv = []
            for i, (gr, p) in enumerate(zip(grads, flat)):
                a = as_float_array(gr, self._dtype, f"grads[{i}]")
                if a.shape != np.shape(p.data if isinstance(p, Parameter) else p):
                    raise ValueError(f"grads[{i}] has shape {a.shape}, its parameter {np.shape(p)}")
                conv.append(a)
            self._core.step_with(conv)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for g in self.param_groups:
            for p in g["params"]:
                if isinstance(p, Parameter):
                    p.grad[...] = 0

    # ---- state
    @property
    def state(self) -> dict:
        """Per-parameter state views, keyed by parameter, as torch's optimizer.state."""
        out = {}
        for gi, g in enumerate(self.param_groups):
            for p, st in zip(g["params"], self._group_state(gi)):
                out[p if isinstance(p, Parameter) else id(p)] = st
        return out

    def _group_state(self, gi: int, raw: bool = False) -> list[dict]:
        """Views of each parameter's state; SGD's momentum_buffer is None
        before its first momentum step (as torch), unless raw."""
        names = _SLOT_NAMES[self._kind]
        buf = self._core.state(gi)
        step = float(self._core.get_step(gi))
        out, off = [], 0
        for p in self.param_groups[gi]["params"]:
            shape = np.shape(p.data if isinstance(p, Parameter) else p)
            n = int(np.prod(shape))
            st: dict[str, Any] = {"step": step}
            for k, name in enumerate(names):
                st[name] = buf[k, off:off + n].reshape(shape)
            if self._kind == "sgd" and not raw and not self._core.get_momentum_ready(gi):
                st["momentum_buffer"] = None  # as torch: no buffer before the first momentum step
            out.append(st)
            off += n
        return out

    def state_dict(self) -> dict:
        """{'state': {index: {'step', buffers...}}, 'param_groups': [...]} as torch (copies): one
        consistent state (during a fit in another thread, taken between two of its steps)."""
        state, groups, idx = {}, [], 0
        with self._core.hold(False):
            for gi, g in enumerate(self.param_groups):
                ids = []
                for st in self._group_state(gi):
                    state[idx] = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in st.items()}
                    ids.append(idx)
                    idx += 1
                groups.append({**{k: v for k, v in g.items() if k != "params"}, "params": ids})
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a state_dict from state_dict() (or torch's, as NumPy arrays)."""
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        staged = []
        for gi, (mine, theirs) in enumerate(zip(self.param_groups, groups)):
            if len(theirs["params"]) != len(mine["params"]):
                raise ValueError("loaded state dict contains a parameter group that doesn't match the size of optimizer's group")
            hyper = {k: v for k, v in theirs.items() if k != "params" and k not in _TORCH_ONLY_OPTIONS}
            if "betas" in hyper:
                hyper["betas"] = tuple(hyper["betas"])
            self._check({**mine, **hyper})
            views = self._group_state(gi, raw=True)
            fills, step, ready = [], 0.0, False
            for pid, view in zip(theirs["params"], views):
                st = state_dict["state"].get(pid, {})
                step = float(np.asarray(st.get("step", step)))
                for name, v in st.items():
                    if name == "step" or name not in view:
                        continue
                    if v is None:
                        continue
                    ready = ready or name == "momentum_buffer"
                    a = np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v, dtype=self._dtype)
                    if a.shape != view[name].shape:
                        raise ValueError(f"state {name!r} has shape {a.shape}, expected {view[name].shape}")
                    fills.append((view[name], a))
            staged.append((gi, hyper, int(step), fills, ready))
        with self._core.hold(True):  # during a fit in another thread: between two of its steps
            for gi, hyper, step, fills, ready in staged:
                self.param_groups[gi].update(hyper)
                self._core.set_step(gi, step)
                self._core.set_momentum_ready(gi, ready)
                for dst, src in fills:
                    dst[...] = src
        self._sync()

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(g.items()) if k != "params"]
        return "\n".join(lines + [")"])


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, as torch.optim.SGD."""

    _kind = "sgd"

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov, maximize=maximize))


class Adagrad(Optimizer):
    _kind = "adagrad"

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10, *, maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, eps=eps, maximize=maximize))


class RMSprop(Optimizer):
    _kind = "rmsprop"

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False, *,
                 maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                                      centered=centered, maximize=maximize))


class Adadelta(Optimizer):
    _kind = "adadelta"

    def __init__(self, params: Iterable[Any], lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6,
                 weight_decay: float = 0.0, *, maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize))


class Adam(Optimizer):
    _kind = "adam"

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *, maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=tuple(betas) if isinstance(betas, (list, np.ndarray)) else betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize))


class AdamW(Adam):
    """Adam with decoupled weight decay (p *= 1 - lr * weight_decay), as torch.optim.AdamW."""

    _kind = "adamw"

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         maximize=maximize)
