"""L-BFGS with torch.optim.LBFGS's algorithm (the same two-loop recursion,
first step, stopping tests and strong-Wolfe line search), in NumPy over the
flat parameter vector; the closure computes the loss and the gradients."""
from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np

from .._arrays import check_int, check_number
from ..nn import Parameter
from .optimizer import Optimizer

__all__ = ["LBFGS"]


def _cubic_interpolate(x1: Any, f1: Any, g1: Any, x2: Any, f2: Any, g2: Any, bounds: Any = None) -> Any:
    """Minimizer of the cubic through (x1, f1, g1) and (x2, f2, g2), clipped to bounds."""
    if bounds is not None:
        xmin_bound, xmax_bound = bounds
    else:
        xmin_bound, xmax_bound = (x1, x2) if x1 <= x2 else (x2, x1)
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1**2 - g1 * g2
    if d2_square >= 0:
        d2 = np.sqrt(d2_square)
        if x1 <= x2:
            min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
        else:
            min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
        return min(max(min_pos, xmin_bound), xmax_bound)
    return (xmin_bound + xmax_bound) / 2.0


def _strong_wolfe(obj_func: Callable, x: Any, t: Any, d: np.ndarray, f: float, g: np.ndarray, gtd: Any,
                  c1: float = 1e-4, c2: float = 0.9, tolerance_change: float = 1e-9,
                  max_ls: int = 25) -> tuple[float, np.ndarray, Any, int]:
    """torch's _strong_wolfe (after minFunc): bracketing, then zoom by cubic interpolation."""
    d_norm = np.abs(d).max()
    g = g.copy()
    f_new, g_new = obj_func(x, t, d)
    ls_func_evals = 1
    gtd_new = g_new.dot(d)
    t_prev, f_prev, g_prev, gtd_prev = 0, f, g, gtd
    done = False
    ls_iter = 0
    while ls_iter < max_ls:
        if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new.copy()], [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bracket_f, bracket_g = [t], [f_new], [g_new]
            done = True
            break
        if gtd_new >= 0:
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new.copy()], [gtd_prev, gtd_new]
            break
        min_step = t + 0.01 * (t - t_prev)
        max_step = t * 10
        tmp = t
        t = _cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds=(min_step, max_step))
        t_prev, f_prev, g_prev, gtd_prev = tmp, f_new, g_new.copy(), gtd_new
        f_new, g_new = obj_func(x, t, d)
        ls_func_evals += 1
        gtd_new = g_new.dot(d)
        ls_iter += 1
    if ls_iter == max_ls:
        bracket, bracket_f, bracket_g = [0, t], [f, f_new], [g, g_new]
    insuf_progress = False
    low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break
        t = _cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0], bracket[1], bracket_f[1], bracket_gtd[1])
        eps = 0.1 * (max(bracket) - min(bracket))
        if min(max(bracket) - t, t - min(bracket)) < eps:
            if insuf_progress or t >= max(bracket) or t <= min(bracket):
                t = max(bracket) - eps if abs(t - max(bracket)) < abs(t - min(bracket)) else min(bracket) + eps
                insuf_progress = False
            else:
                insuf_progress = True
        else:
            insuf_progress = False
        f_new, g_new = obj_func(x, t, d)
        ls_func_evals += 1
        gtd_new = g_new.dot(d)
        ls_iter += 1
        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low_pos]:
            bracket[high_pos], bracket_f[high_pos] = t, f_new
            bracket_g[high_pos], bracket_gtd[high_pos] = g_new.copy(), gtd_new
            low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high_pos] - bracket[low_pos]) >= 0:
                bracket[high_pos], bracket_f[high_pos] = bracket[low_pos], bracket_f[low_pos]
                bracket_g[high_pos], bracket_gtd[high_pos] = bracket_g[low_pos], bracket_gtd[low_pos]
            bracket[low_pos], bracket_f[low_pos] = t, f_new
            bracket_g[low_pos], bracket_gtd[low_pos] = g_new.copy(), gtd_new
    return bracket_f[low_pos], bracket_g[low_pos], bracket[low_pos], ls_func_evals


class LBFGS(Optimizer):
    """L-BFGS as torch.optim.LBFGS: one parameter group of Parameters; ``step(closure)``
    runs up to max_iter iterations, the closure zeroing the gradients, computing the
    loss, back-propagating and returning the loss. ``model.fit(..., optimizer=lbfgs)``
    trains full-batch: one step(closure) per epoch over the whole data set."""

    _STATE_KEYS = ("func_evals", "n_iter", "d", "t", "old_dirs", "old_stps", "ro", "H_diag", "prev_flat_grad",
                   "prev_loss", "al")

    def __init__(self, params: Iterable[Any], lr: float = 1, max_iter: int = 20, max_eval: int | None = None,
                 tolerance_grad: float = 1e-7, tolerance_change: float = 1e-9, history_size: int = 100,
                 line_search_fn: str | None = None) -> None:
        max_iter = check_int(max_iter, "max_iter", low=1)
        if max_eval is None:
            max_eval = max_iter * 5 // 4
        self.defaults = dict(lr=lr, max_iter=max_iter, max_eval=max_eval, tolerance_grad=tolerance_grad,
                             tolerance_change=tolerance_change, history_size=history_size,
                             line_search_fn=line_search_fn)
        self.param_groups = []
        params = list(params) if not isinstance(params, (Parameter, np.ndarray)) else [params]
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        if len(groups) != 1:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")
        self.param_groups = [self._new_group(groups[0])]
        self._dtype = np.dtype(self._param_array(self.param_groups[0]["params"][0]).dtype.char)
        self._params = self.param_groups[0]["params"]
        if not all(isinstance(p, Parameter) for p in self._params):
            raise TypeError("LBFGS needs Parameters (model.parameters()): the closure fills their .grad")
        self._lbfgs: dict[str, Any] = {}

    def _check(self, group: dict, keys: Any = None) -> None:
        check_number(group["lr"], "lr", low=0.0)
        check_int(group["max_iter"], "max_iter", low=1)
        check_int(group["max_eval"], "max_eval", low=1)
        check_int(group["history_size"], "history_size", low=1)
        check_number(group["tolerance_grad"], "tolerance_grad", low=0.0)
        check_number(group["tolerance_change"], "tolerance_change", low=0.0)
        if group["line_search_fn"] not in (None, "strong_wolfe"):
            raise ValueError(f"line_search_fn must be None or 'strong_wolfe', got {group['line_search_fn']!r}")

    def _checked(self, group: dict, keys: Any = None) -> dict:
        """The base class's one validation point: LBFGS's own options, checked."""
        self._check(group)
        return {k: v for k, v in group.items() if k != "params"}

    def _make_core(self) -> Any:
        raise TypeError("LBFGS has a single parameter group")

    def add_param_group(self, param_group: dict) -> None:
        raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")

    def _sync(self) -> None:
        self._check(self.param_groups[0])

    def _core_for(self, model: Any) -> Any:
        raise TypeError("LBFGS trains full-batch: model.fit handles it apart")

    # ---- the flat parameter vector
    def _gather_flat_grad(self) -> np.ndarray:
        # as torch: a parameter without a gradient (frozen, or no backward) counts as a zero gradient
        return np.concatenate([np.zeros(p.data.size, p.data.dtype) if p.grad is None else p.grad.reshape(-1)
                               for p in self._params])

    def _add_grad(self, step_size: Any, update: np.ndarray) -> None:
        offset = 0
        for p in self._params:
            n = p.data.size
            p.data.reshape(-1)[...] += step_size * update[offset:offset + n]
            offset += n

    def _clone_param(self) -> list[np.ndarray]:
        return [p.data.copy() for p in self._params]

    def _set_param(self, params_data: list[np.ndarray]) -> None:
        for p, pdata in zip(self._params, params_data):
            p.data[...] = pdata

    def _directional_evaluate(self, closure: Callable, x: list[np.ndarray], t: Any,
                              d: np.ndarray) -> tuple[float, np.ndarray]:
        self._add_grad(t, d)
        loss = float(closure())
        flat_grad = self._gather_flat_grad()
        self._set_param(x)
        return loss, flat_grad

    def step(self, closure: Any = None, *_: Any) -> Any:  # type: ignore[override]
        """Up to max_iter L-BFGS iterations; returns the closure's first loss."""
        if not callable(closure):
            raise TypeError("LBFGS.step needs a closure that computes the loss and gradients and returns the loss")
        group = self.param_groups[0]
        self._check(group)
        lr, max_iter, max_eval = group["lr"], group["max_iter"], group["max_eval"]
        tolerance_grad, tolerance_change = group["tolerance_grad"], group["tolerance_change"]
        line_search_fn, history_size = group["line_search_fn"], group["history_size"]
        state = self._lbfgs
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)
        orig_loss = closure()
        loss = float(orig_loss)
        current_evals = 1
        state["func_evals"] += 1
        flat_grad = self._gather_flat_grad()
        opt_cond = np.abs(flat_grad).max() <= tolerance_grad
        if opt_cond:
            return orig_loss
        d: Any = state.get("d")
        t: Any = state.get("t")
        old_dirs: Any = state.get("old_dirs")
        old_stps: Any = state.get("old_stps")
        ro: Any = state.get("ro")
        H_diag: Any = state.get("H_diag")
        prev_flat_grad: Any = state.get("prev_flat_grad")
        prev_loss: Any = state.get("prev_loss")
        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            state["n_iter"] += 1
            if state["n_iter"] == 1:
                d = -flat_grad
                old_dirs, old_stps, ro = [], [], []
                H_diag = 1
            else:
                y = flat_grad - prev_flat_grad
                s = d * t
                ys = y.dot(s)
                if ys > 1e-10:
                    if len(old_dirs) == history_size:
                        old_dirs.pop(0)
                        old_stps.pop(0)
                        ro.pop(0)
                    old_dirs.append(y)
                    old_stps.append(s)
                    ro.append(1.0 / ys)
                    H_diag = ys / y.dot(y)
                num_old = len(old_dirs)
                if "al" not in state:
                    state["al"] = [None] * history_size
                al = state["al"]
                q = -flat_grad
                for i in range(num_old - 1, -1, -1):
                    al[i] = old_stps[i].dot(q) * ro[i]
                    q += -al[i] * old_dirs[i]
                d = r = q * H_diag
                for i in range(num_old):
                    be_i = old_dirs[i].dot(r) * ro[i]
                    r += (al[i] - be_i) * old_stps[i]
            prev_flat_grad = flat_grad.copy()
            prev_loss = loss
            t = min(1.0, 1.0 / np.abs(flat_grad).sum()) * lr if state["n_iter"] == 1 else lr
            gtd = flat_grad.dot(d)
            if gtd > -tolerance_change:
                break
            ls_func_evals = 0
            if line_search_fn is not None:
                x_init = self._clone_param()

                def obj_func(x: Any, t: Any, d: np.ndarray) -> tuple[float, np.ndarray]:
                    return self._directional_evaluate(closure, x, t, d)

                loss, flat_grad, t, ls_func_evals = _strong_wolfe(obj_func, x_init, t, d, loss, flat_grad, gtd,
                                                                  max_ls=max_eval - current_evals)
                self._add_grad(t, d)
                opt_cond = np.abs(flat_grad).max() <= tolerance_grad
            else:
                self._add_grad(t, d)
                if n_iter != max_iter:
                    loss = float(closure())
                    flat_grad = self._gather_flat_grad()
                    opt_cond = np.abs(flat_grad).max() <= tolerance_grad
                    ls_func_evals = 1
            current_evals += ls_func_evals
            state["func_evals"] += ls_func_evals
            if n_iter == max_iter or current_evals >= max_eval or opt_cond:
                break
            if np.abs(d * t).max() <= tolerance_change:
                break
            if abs(loss - prev_loss) < tolerance_change:
                break
        state.update(d=d, t=t, old_dirs=old_dirs, old_stps=old_stps, ro=ro, H_diag=H_diag,
                     prev_flat_grad=prev_flat_grad, prev_loss=prev_loss)
        return orig_loss

    # ---- state, as torch's (the state of the first parameter)
    @property
    def state(self) -> dict:
        return {self._params[0]: self._lbfgs}

    def state_dict(self) -> dict:
        def copy(v: Any) -> Any:
            if isinstance(v, np.ndarray):
                return v.copy()
            return [copy(a) for a in v] if isinstance(v, list) else v

        group = {**{k: v for k, v in self.param_groups[0].items() if k != "params"},
                 "params": list(range(len(self._params)))}
        return {"state": {0: {k: copy(v) for k, v in self._lbfgs.items()}} if self._lbfgs else {},
                "param_groups": [group]}

    def load_state_dict(self, state_dict: dict) -> None:
        """Load state_dict() (or torch's LBFGS state, tensors as NumPy arrays or torch tensors)."""
        groups = state_dict["param_groups"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(self._params):
            raise ValueError("loaded state dict does not match this LBFGS's parameters")
        n = sum(p.data.size for p in self._params)

        def conv(v: Any, key: str) -> Any:
            if hasattr(v, "detach"):
                v = v.detach().cpu().numpy()
            if isinstance(v, list):
                return [conv(a, key) for a in v]
            if isinstance(v, np.ndarray) and v.ndim == 1:
                if v.shape != (n,):
                    raise ValueError(f"LBFGS state {key!r} has {v.shape[0]} values, the parameters {n}")
                return v.astype(self._dtype, copy=True)
            if isinstance(v, np.ndarray):
                return v.astype(self._dtype)[()]
            return v

        hyper = {k: v for k, v in groups[0].items() if k in self.defaults}
        self._check({**self.param_groups[0], **hyper})
        st = state_dict["state"].get(0, state_dict["state"].get(next(iter(state_dict["state"]), 0), {}))
        new = {k: conv(v, k) for k, v in st.items() if k in self._STATE_KEYS}
        self.param_groups[0].update(hyper)
        self._lbfgs = new

    # ---- model files: the scalars go in the JSON header, the vectors in arrays
    _FILE_SCALARS = ("func_evals", "n_iter", "t", "H_diag", "prev_loss")
    _FILE_VECTORS = ("d", "prev_flat_grad", "old_dirs", "old_stps")

    def _file_state(self) -> tuple[dict, dict]:
        st = self._lbfgs
        meta: dict[str, Any] = {k: float(st[k]) for k in self._FILE_SCALARS if st.get(k) is not None}
        if "ro" in st:
            meta["ro"] = [float(r) for r in st["ro"]]
        if "al" in st:
            meta["al"] = [None if a is None else float(a) for a in st["al"]]
        n = sum(p.data.size for p in self._params)
        arrays = {f"lbfgs/{k}": np.array(st[k], dtype=self._dtype).reshape(-1, n) for k in self._FILE_VECTORS
                  if st.get(k) is not None}
        return meta, arrays

    def _load_file_state(self, meta: dict, files: dict) -> None:
        n = sum(p.data.size for p in self._params)
        st: dict[str, Any] = {}
        for k in self._FILE_SCALARS:
            if k in meta:
                v = check_number(meta[k], k)
                st[k] = int(v) if k in ("func_evals", "n_iter") else self._dtype.type(v)
        for k in self._FILE_VECTORS:
            a = files.get(f"lbfgs/{k}")
            if a is None:
                continue
            if a.ndim != 2 or a.shape[1] != n or a.dtype != self._dtype or not np.isfinite(a).all():
                raise ValueError(f"LBFGS state {k!r} is corrupted")
            st[k] = [row.copy() for row in a] if k.startswith("old_") else a[0].copy()
        if "ro" in meta:
            st["ro"] = [self._dtype.type(check_number(r, "ro")) for r in meta["ro"]]
        if "al" in meta:
            st["al"] = [None if a is None else self._dtype.type(check_number(a, "al")) for a in meta["al"]]
        if len(st.get("old_dirs", [])) != len(st.get("old_stps", [])) or len(st.get("old_dirs", [])) != len(
                st.get("ro", [])):
            raise ValueError("LBFGS history is corrupted")
        self._lbfgs = st

    def __getstate__(self) -> dict:
        return {"params": self._params, "defaults": self.defaults, "state_dict": self.state_dict()}

    def __setstate__(self, state: dict) -> None:
        LBFGS.__init__(self, state["params"], **state["defaults"])
        self.load_state_dict(state["state_dict"])
