"""Optimizers with torch.optim's update rules, defaults and state_dict layout.

Parameters are a model's Parameters (their .grad is used) or plain NumPy
float arrays, updated in place (pass their gradients: ``opt.step(grads)``).
"""
from __future__ import annotations

import numbers
from typing import Any, Callable, Iterable

import numpy as np

from .. import _core
from .._arrays import FLOAT_DTYPES, as_float_array, check_number
from ..nn import Parameter

__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adadelta", "Adam", "AdamW", "NAdam", "RAdam", "Adamax",
           "ASGD"]

# options torch.optim keeps in its param_groups that have no effect here (CPU,
# one fused pass, no autograd): accepted and kept so torch code runs unchanged
_TORCH_ONLY_OPTIONS = {"foreach", "fused", "capturable", "differentiable"}
# what schedules keep in param_groups (torch's names)
_SCHEDULE_KEYS = {"initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum"}
# the group entries that are not hyperparameters of the C++ step
_NOT_CONFIG = {"params", "param_names", *_SCHEDULE_KEYS, *_TORCH_ONLY_OPTIONS}

# hyperparameters that are switches, and numbers that must be >= 0
_BOOL_OPTIONS = {"nesterov", "centered", "amsgrad", "maximize", "sklearn_adam", "decoupled_weight_decay"}
_NON_NEGATIVE = {"lr", "eps", "weight_decay", "momentum", "lr_decay", "initial_lr", "momentum_decay", "lambd"}
# state slots that hold sums or averages of squares (>= 0, else the next step takes sqrt of a negative)
_SQUARE_SLOTS = {"sum", "square_avg", "acc_delta", "exp_avg_sq", "max_exp_avg_sq"}


def _hyperparameter(k: str, v: Any) -> Any:
    """One hyperparameter checked alone and converted to a plain Python value
    (bool, float or a pair of floats), so that it saves as JSON."""
    if k in _BOOL_OPTIONS:
        if not isinstance(v, (bool, np.bool_)):
            raise TypeError(f"{k} must be True or False, got {v!r}")
        return bool(v)
    if k in _TORCH_ONLY_OPTIONS:
        if v is not None and not isinstance(v, (bool, np.bool_)):
            raise TypeError(f"{k} must be True, False or None, got {v!r}")
        return None if v is None else bool(v)
    if k == "param_names":
        return list(v)
    if k == "betas":
        if not isinstance(v, (tuple, list, np.ndarray)):
            raise TypeError(f"betas must be a pair (beta1, beta2), got {v!r}")
        if len(v) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {v!r}")
        return tuple(check_number(b, f"beta parameter at index {i}", low=0.0, high=1.0, high_open=True)
                     for i, b in enumerate(v))
    return check_number(v, k, low=0.0 if k in _NON_NEGATIVE else None)


def _numpy(v: Any) -> Any:
    """A torch tensor as a NumPy array; anything else unchanged."""
    return v.detach().cpu().numpy() if hasattr(v, "detach") else v


# state_dict names of each optimizer's state slots, in the C++ slot order
_SLOT_NAMES = {
    "sgd": ["momentum_buffer"],
    "adagrad": ["sum"],
    "rmsprop": ["square_avg", "momentum_buffer", "grad_avg"],
    "adadelta": ["square_avg", "acc_delta"],
    "adam": ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"],
    "adamw": ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"],
    "nadam": ["exp_avg", "exp_avg_sq"],
    "radam": ["exp_avg", "exp_avg_sq"],
    "adamax": ["exp_avg", "exp_inf"],
    "asgd": ["ax", "eta", "mu"],
}
# slots that hold one number per parameter in torch (ASGD's eta and mu, 0-d tensors there): in the
# state_dict a float each, read from the parameter's first element (the C++ step writes the same
# value to every element); mu = 0 marks an element no step has touched yet
_SCALAR_SLOTS = {"eta", "mu"}


class Optimizer:
    """Base class: holds ``param_groups`` (dicts as in PyTorch) and one C++
    optimizer whose state lives in one buffer per group."""

    _kind = ""

    def __init__(self, params: Iterable[Any], defaults: dict) -> None:
        self.defaults = {k: _hyperparameter(k, v) for k, v in defaults.items()}
        params = list(params) if not isinstance(params, (Parameter, np.ndarray)) else [params]
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.param_groups: list[dict] = []
        for g in groups:
            self.param_groups.append(self._new_group(g))
        self._dtype = np.dtype(self._param_array(self.param_groups[0]["params"][0]).dtype.char)
        self._core = self._make_core()

    @staticmethod
    def _param_array(p: Any) -> np.ndarray:
        return p.data if isinstance(p, Parameter) else p

    def _make_core(self) -> Any:
        cls = _core.Optimizer32 if self._dtype == np.float32 else _core.Optimizer64
        core = cls([(self._config(g), [self._pair(p) for p in g["params"]]) for g in self.param_groups])
        # the arrays the C++ optimizer writes: a model rebuilt since (append, insert, to(dtype), ...)
        # gives its Parameters new ones, and this optimizer would update the old ones
        self._arrays = [p._data if isinstance(p, Parameter) else p for g in self.param_groups for p in g["params"]]
        self.__dict__.pop("_frozen", None)
        return core

    def _check_current(self) -> None:
        if not all(a is (p._data if isinstance(p, Parameter) else p)
                   for a, p in zip(self._arrays, (p for g in self.param_groups for p in g["params"]))):
            raise RuntimeError("the model's structure or dtype changed (append, insert, del, model[i] = ..., to) "
                               "after this optimizer was built: build a new optimizer over model.parameters()")

    def _new_group(self, g: Any) -> dict:
        """A checked parameter group: g's options over the defaults; its params
        may be (name, Parameter) pairs, as named_parameters() gives (their names
        go to 'param_names', as torch 2.x)."""
        if not isinstance(g, dict) or "params" not in g:
            raise TypeError("parameter groups must be dicts with a 'params' entry")
        ps = g["params"]
        ps = [ps] if isinstance(ps, (Parameter, np.ndarray)) else list(ps)
        names = [p[0] for p in ps if isinstance(p, tuple)]
        if names:
            if len(names) != len(ps) or not all(len(p) == 2 and isinstance(p[0], str) for p in ps):
                raise ValueError("all optimizer params should be with/without names. Some param names are missing")
            ps = [p[1] for p in ps]
        if not ps:
            raise ValueError("optimizer got an empty parameter list")
        if self.param_groups and bool(names or "param_names" in g) != ("param_names" in self.param_groups[0]):
            raise ValueError("all optimizer param groups should be with/without names")
        dtype = getattr(self, "_dtype", None)
        seen = {id(p) for grp in self.param_groups for p in grp["params"]}
        for p in ps:
            if not isinstance(p, (Parameter, np.ndarray)):
                raise TypeError(f"optimizer can only optimize fastmlp Parameters or NumPy arrays, got {type(p).__name__}")
            arr = self._param_array(p)
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
        unknown = set(g) - set(self.defaults) - {"params", "param_names", *_SCHEDULE_KEYS}
        if unknown:
            raise TypeError(f"unknown option(s) {sorted(unknown)} for {type(self).__name__}")
        group = {**self._checked({**self.defaults, **{k: v for k, v in g.items() if k != "params"}}), "params": ps}
        if names:
            group["param_names"] = names
        return group

    def add_param_group(self, param_group: dict) -> None:
        """Add a group (a dict with 'params' and options), as torch's add_param_group;
        the other groups keep their state."""
        group = self._new_group(param_group)
        old, self.param_groups = self._core, self.param_groups + [group]
        try:
            self._core = self._make_core()
        except BaseException:
            self.param_groups.pop()
            raise
        for gi in range(len(self.param_groups) - 1):
            self._core.state(gi)[...] = old.state(gi)
            self._core.set_step(gi, old.get_step(gi))
            self._core.set_momentum_ready(gi, old.get_momentum_ready(gi))
            self._core.set_mu_product(gi, old.get_mu_product(gi))
        self.__dict__.pop("_pushed", None)

    def __getstate__(self) -> dict:
        """Pickle/deepcopy: the groups (their parameters are pickled with them) and the state_dict."""
        return {"param_groups": self.param_groups, "defaults": self.defaults, "state_dict": self.state_dict()}

    def __setstate__(self, state: dict) -> None:
        self.param_groups, self.defaults = [], dict(state["defaults"])
        for g in state["param_groups"]:
            self.param_groups.append(self._new_group(g))
        self._dtype = np.dtype(self._param_array(self.param_groups[0]["params"][0]).dtype.char)
        self._core = self._make_core()
        self.load_state_dict(state["state_dict"])

    # ---- hyperparameters
    def _checked(self, group: dict, keys: Any = None) -> dict:
        """The group's hyperparameters (without 'params') as plain Python
        values: each checked (only those named in keys, if given), then their
        combination. The one place hyperparameters are validated."""
        out = {k: (v if keys is not None and k not in keys else _hyperparameter(k, v))
               for k, v in group.items() if k != "params"}
        _core.check_optim(self._config(out))
        return out

    @staticmethod
    def _store(group: dict, clean: dict) -> None:
        """Write checked values back into a group as plain Python values; a
        list (betas) is updated in place, so later edits of it are still seen."""
        for k, v in clean.items():
            if isinstance(group.get(k), list):
                group[k][:] = v
            else:
                group[k] = v

    def _config(self, group: dict) -> dict:
        cfg = {k: v for k, v in group.items() if k not in _NOT_CONFIG}
        cfg["kind"] = self._kind
        return cfg

    @staticmethod
    def _pair(p: Any) -> tuple:
        # the C++ side wants numpy's own dtype object (an unpickled array has an equal copy of it)
        if isinstance(p, Parameter):
            return p.data.view(np.dtype(p.dtype.char)), p._grad.view(np.dtype(p.dtype.char))
        return p.view(np.dtype(p.dtype.char)), None

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
            todo.append((i, self._checked(g, changed)))
        for i, clean in todo:
            self._store(self.param_groups[i], clean)
            cfg = self._config(clean)
            self._core.set_config(i, cfg)
            pushed[i] = self._snapshot(cfg)
        # the frozen parameters (requires_grad False), which every C++ step leaves alone
        frozen = [isinstance(p, Parameter) and not p.requires_grad for g in self.param_groups for p in g["params"]]
        if frozen != self.__dict__.get("_frozen", [False] * len(frozen)):
            self._core.set_frozen(frozen)
            self._frozen = frozen

    def _core_for(self, model: Any) -> Any:
        """The C++ optimizer, for a model whose parameters these must be."""
        self._check_current()
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
        self._check_current()
        self._sync()
        if grads is None:
            # as torch: a Parameter whose .grad is None (zero_grad(set_to_none=True), no backward since)
            # is skipped, and a group with none left is not stepped at all
            active = [not (isinstance(p, Parameter) and p.grad is None) for g in self.param_groups for p in g["params"]]
            if all(active):
                self._core.step()
            elif any(active):
                self._core.step_some(active)
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
        """Reset the gradients of the Parameters, as torch: to None by default
        (then step() skips them until a backward gives them a gradient again),
        or to zeros with set_to_none=False (a gradient that is None stays None)."""
        for g in self.param_groups:
            for p in g["params"]:
                if isinstance(p, Parameter):
                    p._zero_grad(set_to_none)

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
            if self._kind == "nadam":
                st["mu_product"] = float(self._core.get_mu_product(gi))
            for k, name in enumerate(names):
                if name not in _SCALAR_SLOTS:
                    st[name] = buf[k, off:off + n].reshape(shape)
            if self._kind == "asgd":
                # a parameter no step has touched shows the values torch's first step starts from
                touched = n > 0 and buf[2, off] != 0
                st["eta"] = float(buf[1, off]) if touched else float(self.param_groups[gi]["lr"])
                st["mu"] = float(buf[2, off]) if touched else 1.0
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
        """Load a state_dict from state_dict() (or torch's, tensors or NumPy
        arrays). Everything is checked before anything changes: the groups'
        sizes and hyperparameters (options of another optimizer are refused),
        each state's names, shapes and values, and the step. A parameter
        without state (torch's empty ``state``) starts afresh: zero moments."""
        if not isinstance(state_dict, dict) or not isinstance(state_dict.get("param_groups"), (list, tuple)):
            raise TypeError("state_dict must be a dict with 'state' and 'param_groups', as from optimizer.state_dict()")
        groups, states = state_dict["param_groups"], state_dict.get("state", {})
        if not isinstance(states, dict):
            raise TypeError("state_dict['state'] must be a dict {parameter index: state}")
        if len(groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        names, ids = _SLOT_NAMES[self._kind], [pid for g in groups for pid in g.get("params", ())]
        if len(set(ids)) != len(ids):
            raise ValueError("loaded state dict lists a parameter in more than one place")
        if set(states) - set(ids):
            raise ValueError(f"loaded state dict has state for unknown parameter(s) {sorted(set(states) - set(ids), key=str)}")
        staged = []
        for gi, (mine, theirs) in enumerate(zip(self.param_groups, groups)):
            if not isinstance(theirs, dict) or len(theirs.get("params", ())) != len(mine["params"]):
                raise ValueError("loaded state dict contains a parameter group that doesn't match the size of optimizer's group")
            hyper = {k: v for k, v in theirs.items() if k not in ("params", "param_names") and k not in _TORCH_ONLY_OPTIONS}
            unknown = set(hyper) - set(self.defaults) - _SCHEDULE_KEYS
            if unknown:
                raise ValueError(f"loaded parameter group {gi} has option(s) {sorted(unknown)} that "
                                 f"{type(self).__name__} does not have (a state_dict of another optimizer?)")
            clean = self._checked({**{k: v for k, v in mine.items() if k != "params"}, **hyper})
            buf = np.array(self._core.state(gi))  # the new state, built in a copy: (slots, n)
            buf[...] = 0
            if self._kind == "adagrad":
                buf[0] = clean["initial_accumulator_value"]
            steps, ready, mus, off = set(), [], set(), 0
            for pid, p in zip(theirs["params"], mine["params"]):
                shape = np.shape(p.data if isinstance(p, Parameter) else p)
                n = int(np.prod(shape))
                st = states.get(pid, {})
                if not isinstance(st, dict):
                    raise TypeError(f"state of parameter {pid!r} must be a dict, got {type(st).__name__}")
                extra = set(st) - set(names) - {"step", *(("mu_product",) if self._kind == "nadam" else ())}
                if extra:
                    raise ValueError(f"state of parameter {pid!r} has {sorted(extra)}, which {type(self).__name__} "
                                     f"does not keep (it keeps {names}; a state_dict of another optimizer?)")
                pstep = self._checked_step(st.get("step", 0), pid)
                steps.add(pstep)
                if "mu_product" in st:
                    mus.add(check_number(float(np.asarray(_numpy(st["mu_product"]))), "mu_product", low=0.0))
                if self._kind == "sgd":
                    ready.append(st.get("momentum_buffer") is not None)
                for k, name in enumerate(names):
                    v = st.get(name)
                    if v is None:
                        continue
                    if name in _SCALAR_SLOTS:
                        if pstep == 0:
                            continue  # not stepped yet: the first step starts afresh (eta = lr, mu = 1)
                        buf[k, off:off + n] = self._checked_scalar(name, v, pid)
                        continue
                    a = as_float_array(_numpy(v), self._dtype, f"state {name!r} of parameter {pid!r}")
                    if a.shape != shape:
                        raise ValueError(f"state {name!r} of parameter {pid!r} has shape {a.shape}, expected {shape}")
                    if not np.isfinite(a).all():
                        raise ValueError(f"state {name!r} of parameter {pid!r} contains NaN or infinity")
                    if name in _SQUARE_SLOTS and (a < 0).any():
                        raise ValueError(f"state {name!r} of parameter {pid!r} has negative values "
                                         "(it is a sum or average of squares)")
                    buf[k, off:off + n] = a.reshape(-1)
                off += n
            if len(steps) > 1 or len(set(ready)) > 1 or len(mus) > 1:
                raise ValueError(f"the parameters of group {gi} are at different steps; fastmlp keeps one step "
                                 "count (and one SGD momentum state) per parameter group")
            staged.append((gi, clean, steps.pop() if steps else 0, buf, all(ready) and bool(ready),
                           mus.pop() if mus else 1.0))
        pushed = self.__dict__.setdefault("_pushed", {})
        with self._core.hold(True):  # during a fit in another thread: between two of its steps
            for gi, clean, step, buf, is_ready, mu_product in staged:
                self._store(self.param_groups[gi], clean)
                cfg = self._config(clean)
                self._core.set_config(gi, cfg)
                pushed[gi] = self._snapshot(cfg)
                self._core.set_step(gi, step)
                self._core.set_momentum_ready(gi, is_ready)
                self._core.set_mu_product(gi, mu_product)
                self._core.state(gi)[...] = buf

    @staticmethod
    def _checked_scalar(name: str, v: Any, pid: Any) -> float:
        """ASGD's eta (>= 0) or mu (in (0, 1]), one number (torch: a 0-d tensor)."""
        a = np.asarray(_numpy(v))
        if a.size != 1 or a.dtype.kind not in "iuf":
            raise ValueError(f"state {name!r} of parameter {pid!r} must be one number, got {v!r}")
        f = float(a.reshape(()))
        if name == "mu":
            return check_number(f, f"state 'mu' of parameter {pid!r}", low=0.0, high=1.0, low_open=True)
        return check_number(f, f"state 'eta' of parameter {pid!r}", low=0.0)

    @staticmethod
    def _checked_step(v: Any, pid: Any) -> int:
        """A loaded step count as an int (torch keeps it as a float tensor)."""
        v = _numpy(v)
        if isinstance(v, np.ndarray) and v.size == 1:
            v = v.reshape(()).item()
        f = float(v) if isinstance(v, numbers.Real) and not isinstance(v, bool) else float("nan")
        if not (np.isfinite(f) and f == int(f) and 0 <= f <= 2**53):
            raise ValueError(f"step of parameter {pid!r} must be a whole number in [0, 2**53], got {v!r}")
        return int(f)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(g.items()) if k != "params"]
        return "\n".join(lines + [")"])


# foreach, fused, capturable and differentiable: accepted (and kept in param_groups, as torch)
# so that torch code runs unchanged; they have no effect here.
def _flags(foreach: bool | None, capturable: bool, differentiable: bool, fused: bool | None = None,
           with_fused: bool = False, with_capturable: bool = True) -> dict:
    out: dict[str, Any] = {"foreach": foreach, "differentiable": differentiable}
    if with_capturable:
        out["capturable"] = capturable
    if with_fused:
        out["fused"] = fused
    return out


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, as torch.optim.SGD."""

    _kind = "sgd"

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, maximize: bool = False,
                 foreach: bool | None = None, differentiable: bool = False, fused: bool | None = None) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov, maximize=maximize,
                                      **_flags(foreach, False, differentiable, fused, True, False)))


class Adagrad(Optimizer):
    _kind = "adagrad"

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10, foreach: bool | None = None, *,
                 maximize: bool = False, differentiable: bool = False, fused: bool | None = None) -> None:
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, eps=eps, maximize=maximize,
                                      **_flags(foreach, False, differentiable, fused, True, False)))


class RMSprop(Optimizer):
    _kind = "rmsprop"

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False,
                 capturable: bool = False, foreach: bool | None = None, maximize: bool = False,
                 differentiable: bool = False) -> None:
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                                      centered=centered, maximize=maximize,
                                      **_flags(foreach, capturable, differentiable)))


class Adadelta(Optimizer):
    _kind = "adadelta"

    def __init__(self, params: Iterable[Any], lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6,
                 weight_decay: float = 0.0, foreach: bool | None = None, *, capturable: bool = False,
                 maximize: bool = False, differentiable: bool = False) -> None:
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize,
                                      **_flags(foreach, capturable, differentiable)))


class Adam(Optimizer):
    """Adam (AMSGrad), as torch.optim.Adam; decoupled_weight_decay=True makes it AdamW."""

    _kind = "adam"

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *, foreach: bool | None = None,
                 maximize: bool = False, capturable: bool = False, differentiable: bool = False,
                 fused: bool | None = None, decoupled_weight_decay: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize, decoupled_weight_decay=decoupled_weight_decay,
                                      **_flags(foreach, capturable, differentiable, fused, True)))


class AdamW(Adam):
    """Adam with decoupled weight decay (p *= 1 - lr * weight_decay), as torch.optim.AdamW."""

    _kind = "adamw"

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False,
                 foreach: bool | None = None, capturable: bool = False, differentiable: bool = False,
                 fused: bool | None = None) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         maximize=maximize, foreach=foreach, capturable=capturable, differentiable=differentiable,
                         fused=fused, decoupled_weight_decay=True)


class NAdam(Optimizer):
    """Adam with Nesterov momentum (Dozat 2016), as torch.optim.NAdam; decoupled_weight_decay=True
    gives NAdamW."""

    _kind = "nadam"

    def __init__(self, params: Iterable[Any], lr: float = 2e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum_decay: float = 4e-3, decoupled_weight_decay: bool = False, *,
                 foreach: bool | None = None, maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      momentum_decay=momentum_decay, decoupled_weight_decay=decoupled_weight_decay,
                                      maximize=maximize, **_flags(foreach, capturable, differentiable)))


class RAdam(Optimizer):
    """Rectified Adam (Liu et al. 2019), as torch.optim.RAdam; decoupled_weight_decay=True gives RAdamW."""

    _kind = "radam"

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, decoupled_weight_decay: bool = False, *, foreach: bool | None = None,
                 maximize: bool = False, capturable: bool = False, differentiable: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      decoupled_weight_decay=decoupled_weight_decay, maximize=maximize,
                                      **_flags(foreach, capturable, differentiable)))


class ASGD(Optimizer):
    """Averaged stochastic gradient descent (Polyak and Juditsky 1992), as torch.optim.ASGD:
    p *= 1 - lambd eta; p -= eta (g + weight_decay p); after t0 steps, state[p]['ax'] is the running
    average of the parameters since (read it for evaluation); eta = lr / (1 + lambd lr t)^alpha,
    made from the group's lr at each step (so schedules act on it, one step later)."""

    _kind = "asgd"

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, lambd: float = 1e-4, alpha: float = 0.75,
                 t0: float = 1e6, weight_decay: float = 0.0, foreach: bool | None = None, maximize: bool = False,
                 differentiable: bool = False, capturable: bool = False) -> None:
        super().__init__(params, dict(lr=lr, lambd=lambd, alpha=alpha, t0=t0, weight_decay=weight_decay,
                                      maximize=maximize, **_flags(foreach, capturable, differentiable)))


class Adamax(Optimizer):
    """Adam with the infinity norm, as torch.optim.Adamax."""

    _kind = "adamax"

    def __init__(self, params: Iterable[Any], lr: float = 2e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, foreach: bool | None = None, *, maximize: bool = False,
                 differentiable: bool = False, capturable: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize,
                                      **_flags(foreach, capturable, differentiable)))
