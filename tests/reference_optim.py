"""Obviously-correct NumPy float64 references for torch.optim's update rules
(the single-tensor, non-foreach, non-capturable code path of
torch/optim/*.py and the algorithm boxes of the PyTorch docs) and for the
learning-rate schedules of torch.optim.lr_scheduler.

Everything here is plain Python loops over float64 arrays, written for
readability, not speed. No fastmlp and no torch is imported.
"""
from __future__ import annotations

import math

import numpy as np

# --------------------------------------------------------------------------- optimizers

DEFAULTS = {
    "SGD": dict(lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False),
    "Adagrad": dict(lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10,
                    maximize=False),
    "RMSprop": dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, maximize=False),
    "Adadelta": dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, maximize=False),
    "Adam": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False,
                 decoupled_weight_decay=False),
    "AdamW": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, maximize=False),
    "NAdam": dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
                  decoupled_weight_decay=False, maximize=False),
    "RAdam": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False,
                  maximize=False),
    "Adamax": dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, maximize=False),
    "ASGD": dict(lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0.0, maximize=False),
}


def sgd_update(p, g, state, *, lr, momentum, dampening, weight_decay, nesterov, maximize):
    """torch.optim.SGD: d = g (+ wd p); with momentum buf = d on the first step,
    then buf = momentum buf + (1 - dampening) d; d = d + momentum buf (Nesterov) or buf;
    p -= lr d."""
    d = -g if maximize else g.copy()
    if weight_decay != 0:
        d = d + weight_decay * p
    if momentum != 0:
        buf = state.get("momentum_buffer")
        if buf is None:
            buf = d.copy()  # first step: no dampening
        else:
            buf = momentum * buf + (1 - dampening) * d
        state["momentum_buffer"] = buf
        d = d + momentum * buf if nesterov else buf
    p -= lr * d


def adagrad_update(p, g, state, *, lr, lr_decay, weight_decay, initial_accumulator_value, eps, maximize):
    """torch.optim.Adagrad: clr = lr / (1 + (t - 1) lr_decay); sum += d^2;
    p -= clr d / (sqrt(sum) + eps)."""
    if "sum" not in state:
        state["sum"] = np.full_like(p, initial_accumulator_value)
        state["step"] = 0
    state["step"] += 1
    t = state["step"]
    d = -g if maximize else g.copy()
    if weight_decay != 0:
        d = d + weight_decay * p
    clr = lr / (1 + (t - 1) * lr_decay)
    state["sum"] = state["sum"] + d * d
    p -= clr * d / (np.sqrt(state["sum"]) + eps)


def rmsprop_update(p, g, state, *, lr, alpha, eps, weight_decay, momentum, centered, maximize):
    """torch.optim.RMSprop: v = alpha v + (1 - alpha) d^2; centered: m = alpha m + (1 - alpha) d,
    avg = sqrt(v - m^2) + eps, else sqrt(v) + eps; momentum: buf = mu buf + d / avg, p -= lr buf;
    else p -= lr d / avg."""
    if "square_avg" not in state:
        state["step"] = 0
        state["square_avg"] = np.zeros_like(p)
        state["momentum_buffer"] = np.zeros_like(p)
        state["grad_avg"] = np.zeros_like(p)
    state["step"] += 1
    d = -g if maximize else g.copy()
    if weight_decay != 0:
        d = d + weight_decay * p
    state["square_avg"] = alpha * state["square_avg"] + (1 - alpha) * d * d
    if centered:
        state["grad_avg"] = alpha * state["grad_avg"] + (1 - alpha) * d
        avg = np.sqrt(state["square_avg"] - state["grad_avg"] ** 2) + eps
    else:
        avg = np.sqrt(state["square_avg"]) + eps
    if momentum > 0:
        state["momentum_buffer"] = momentum * state["momentum_buffer"] + d / avg
        p -= lr * state["momentum_buffer"]
    else:
        p -= lr * d / avg


def adadelta_update(p, g, state, *, lr, rho, eps, weight_decay, maximize):
    """torch.optim.Adadelta: v = rho v + (1 - rho) d^2; delta = sqrt(u + eps) / sqrt(v + eps) d;
    u = rho u + (1 - rho) delta^2; p -= lr delta."""
    if "square_avg" not in state:
        state["step"] = 0
        state["square_avg"] = np.zeros_like(p)
        state["acc_delta"] = np.zeros_like(p)
    state["step"] += 1
    d = -g if maximize else g.copy()
    if weight_decay != 0:
        d = d + weight_decay * p
    state["square_avg"] = rho * state["square_avg"] + (1 - rho) * d * d
    delta = np.sqrt(state["acc_delta"] + eps) / np.sqrt(state["square_avg"] + eps) * d
    state["acc_delta"] = rho * state["acc_delta"] + (1 - rho) * delta * delta
    p -= lr * delta


def adam_update(p, g, state, *, lr, betas, eps, weight_decay, amsgrad, maximize, decoupled_weight_decay=False):
    """torch.optim.Adam (decoupled=False: d += wd p) / AdamW (decoupled=True: p *= 1 - lr wd first):
    m = b1 m + (1 - b1) d; v = b2 v + (1 - b2) d^2; vmax = max(vmax, v) (amsgrad);
    p -= lr / (1 - b1^t) * m / (sqrt(v or vmax) / sqrt(1 - b2^t) + eps)."""
    b1, b2 = betas
    if "exp_avg" not in state:
        state["step"] = 0
        state["exp_avg"] = np.zeros_like(p)
        state["exp_avg_sq"] = np.zeros_like(p)
        state["max_exp_avg_sq"] = np.zeros_like(p)
    state["step"] += 1
    t = state["step"]
    d = _decay(p, -g if maximize else g.copy(), lr, weight_decay, decoupled_weight_decay)
    state["exp_avg"] = b1 * state["exp_avg"] + (1 - b1) * d
    state["exp_avg_sq"] = b2 * state["exp_avg_sq"] + (1 - b2) * d * d
    bc1 = 1 - b1 ** t
    bc2 = 1 - b2 ** t
    if amsgrad:
        state["max_exp_avg_sq"] = np.maximum(state["max_exp_avg_sq"], state["exp_avg_sq"])
        vhat = state["max_exp_avg_sq"]
    else:
        vhat = state["exp_avg_sq"]
    denom = np.sqrt(vhat) / math.sqrt(bc2) + eps
    p -= (lr / bc1) * state["exp_avg"] / denom


def _decay(p, d, lr, weight_decay, decoupled):
    """Weight decay: decoupled (p *= 1 - lr wd, in place; d unchanged) or L2 (d + wd p)."""
    if decoupled:
        p *= 1 - lr * weight_decay
        return d
    return d + weight_decay * p


def adamw_update(p, g, state, decoupled_weight_decay=True, **kw):
    adam_update(p, g, state, decoupled_weight_decay=decoupled_weight_decay, **kw)


def _moments(state, p, d, b1, b2, second="exp_avg_sq"):
    if "exp_avg" not in state:
        state["step"] = 0
        state["exp_avg"] = np.zeros_like(p)
        state[second] = np.zeros_like(p)
    state["step"] += 1
    state["exp_avg"] = b1 * state["exp_avg"] + (1 - b1) * d
    if second == "exp_avg_sq":
        state[second] = b2 * state[second] + (1 - b2) * d * d
    return state["step"]


def nadam_update(p, g, state, *, lr, betas, eps, weight_decay, momentum_decay, decoupled_weight_decay, maximize):
    """torch.optim.NAdam (the algorithm box of its docs): mu_t = b1 (1 - 0.5 * 0.96^(t psi));
    p -= lr * (mu_{t+1} m / (1 - prod_{i<=t+1} mu_i) + (1 - mu_t) d / (1 - prod_{i<=t} mu_i))
              / (sqrt(v / (1 - b2^t)) + eps)."""
    b1, b2 = betas
    d = _decay(p, -g if maximize else g.copy(), lr, weight_decay, decoupled_weight_decay)
    t = _moments(state, p, d, b1, b2)

    def mu(i):
        return b1 * (1 - 0.5 * 0.96 ** (i * momentum_decay))

    # the product of the mu of the steps taken so far (with the momentum_decay of each step, if edited)
    prod_t = state["mu_product"] = state.get("mu_product", 1.0) * mu(t)
    prod_next = prod_t * mu(t + 1)
    mhat = mu(t + 1) * state["exp_avg"] / (1 - prod_next) + (1 - mu(t)) * d / (1 - prod_t)
    p -= lr * mhat / (np.sqrt(state["exp_avg_sq"] / (1 - b2 ** t)) + eps)


def radam_update(p, g, state, *, lr, betas, eps, weight_decay, decoupled_weight_decay, maximize):
    """torch.optim.RAdam: rho_inf = 2 / (1 - b2) - 1, rho_t = rho_inf - 2 t b2^t / (1 - b2^t);
    mhat = m / (1 - b1^t); rho_t > 5: p -= lr mhat r_t sqrt(1 - b2^t) / (sqrt(v) + eps) with
    r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t)); else p -= lr mhat."""
    b1, b2 = betas
    d = _decay(p, -g if maximize else g.copy(), lr, weight_decay, decoupled_weight_decay)
    t = _moments(state, p, d, b1, b2)
    mhat = state["exp_avg"] / (1 - b1 ** t)
    rho_inf = 2 / (1 - b2) - 1
    rho_t = rho_inf - 2 * t * b2 ** t / (1 - b2 ** t)
    if rho_t > 5:
        r = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
        p -= lr * mhat * r * math.sqrt(1 - b2 ** t) / (np.sqrt(state["exp_avg_sq"]) + eps)
    else:
        p -= lr * mhat


def adamax_update(p, g, state, *, lr, betas, eps, weight_decay, maximize):
    """torch.optim.Adamax: d = g + wd p; m = b1 m + (1 - b1) d; u = max(b2 u, |d| + eps);
    p -= lr / (1 - b1^t) m / u."""
    b1, b2 = betas
    d = (-g if maximize else g) + weight_decay * p
    t = _moments(state, p, d, b1, b2, second="exp_inf")
    state["exp_inf"] = np.maximum(b2 * state["exp_inf"], np.abs(d) + eps)
    p -= lr / (1 - b1 ** t) * state["exp_avg"] / state["exp_inf"]


def asgd_update(p, g, state, *, lr, lambd, alpha, t0, weight_decay, maximize):
    """torch.optim.ASGD: state starts at eta = lr, mu = 1, ax = 0; d = g + wd p;
    p = p (1 - lambd eta) - eta d; ax = p while mu == 1, else ax += mu (p - ax);
    then eta = lr / (1 + lambd lr t)^alpha, mu = 1 / max(1, t - t0) for the next step."""
    if "ax" not in state:
        state.update(step=0, eta=lr, mu=1.0, ax=np.zeros_like(p))
    state["step"] += 1
    t = state["step"]
    d = (-g if maximize else g) + weight_decay * p
    p *= 1 - lambd * state["eta"]
    p -= state["eta"] * d
    state["ax"] = p.copy() if state["mu"] == 1 else state["ax"] + state["mu"] * (p - state["ax"])
    state["eta"] = lr / (1 + lambd * lr * t) ** alpha
    state["mu"] = 1 / max(1, t - t0)


UPDATES = {"SGD": sgd_update, "Adagrad": adagrad_update, "RMSprop": rmsprop_update,
           "Adadelta": adadelta_update, "Adam": adam_update, "AdamW": adamw_update, "NAdam": nadam_update,
           "RAdam": radam_update, "Adamax": adamax_update, "ASGD": asgd_update}


class RefOptimizer:
    """A torch-like optimizer over float64 copies of the parameters.

    ``params`` is a list of arrays or a list of group dicts {'params': [...], **options}.
    The arrays are copied to float64 and updated in place; ``param_groups``
    can be edited between steps, as in torch.
    """

    def __init__(self, name, params, **options):
        self.name = name
        self.defaults = {**DEFAULTS[name], **options}
        params = list(params)
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.param_groups = []
        for g in groups:
            grp = {**self.defaults, **{k: v for k, v in g.items() if k != "params"}}
            grp["params"] = [np.array(p, dtype=np.float64) for p in g["params"]]
            self.param_groups.append(grp)
        self.state = [[{} for _ in g["params"]] for g in self.param_groups]

    @property
    def params(self):
        return [p for g in self.param_groups for p in g["params"]]

    def step(self, grads):
        grads = list(grads)
        k = 0
        for gi, g in enumerate(self.param_groups):
            opts = {key: v for key, v in g.items() if key not in ("params", "initial_lr")}
            for pi, p in enumerate(g["params"]):
                UPDATES[self.name](p, np.asarray(grads[k], dtype=np.float64), self.state[gi][pi], **opts)
                k += 1


# --------------------------------------------------------------------------- schedules
# Each reference keeps the lrs of the groups it schedules as a list that the
# test may edit between steps (as a user editing param_groups[i]['lr']), and
# applies torch's recursive (chainable) get_lr formula to the current values.


class StepLRRef:
    """lr <- lr * gamma when last_epoch % step_size == 0 (last_epoch > 0)."""

    def __init__(self, lrs, step_size, gamma=0.1):
        self.lrs, self.base_lrs = list(lrs), list(lrs)
        self.step_size, self.gamma, self.last_epoch = step_size, gamma, 0

    def step(self):
        self.last_epoch += 1
        if self.last_epoch % self.step_size == 0:
            self.lrs = [lr * self.gamma for lr in self.lrs]
        return list(self.lrs)


class ExponentialLRRef:
    """lr <- lr * gamma every epoch."""

    def __init__(self, lrs, gamma):
        self.lrs, self.base_lrs = list(lrs), list(lrs)
        self.gamma, self.last_epoch = gamma, 0

    def step(self):
        self.last_epoch += 1
        self.lrs = [lr * self.gamma for lr in self.lrs]
        return list(self.lrs)


class CosineAnnealingLRRef:
    """torch's CosineAnnealingLR.get_lr (recursive form)."""

    def __init__(self, lrs, T_max, eta_min=0.0):
        self.lrs, self.base_lrs = list(lrs), list(lrs)
        self.T_max, self.eta_min, self.last_epoch = T_max, eta_min, 0

    def step(self):
        self.last_epoch += 1
        e, T, eta = self.last_epoch, self.T_max, self.eta_min
        if (e - 1 - T) % (2 * T) == 0:
            self.lrs = [lr + (base - eta) * (1 - math.cos(math.pi / T)) / 2
                        for lr, base in zip(self.lrs, self.base_lrs)]
        else:
            self.lrs = [(1 + math.cos(math.pi * e / T)) / (1 + math.cos(math.pi * (e - 1) / T)) * (lr - eta) + eta
                        for lr in self.lrs]
        return list(self.lrs)


def cosine_closed_form(base_lr, e, T_max, eta_min=0.0):
    """The closed form the recursion follows while nobody edits the lr."""
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * e / T_max)) / 2


class ReduceLROnPlateauRef:
    """torch's ReduceLROnPlateau.step(metric)."""

    def __init__(self, lrs, mode="min", factor=0.1, patience=10, threshold=1e-4, threshold_mode="rel",
                 cooldown=0, min_lr=0.0, eps=1e-8):
        self.lrs = list(lrs)
        self.mode, self.factor, self.patience = mode, factor, patience
        self.threshold, self.threshold_mode = threshold, threshold_mode
        self.cooldown, self.min_lr, self.eps = cooldown, min_lr, eps
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0

    def is_better(self, a, best):
        if self.mode == "min" and self.threshold_mode == "rel":
            return a < best * (1.0 - self.threshold)
        if self.mode == "min" and self.threshold_mode == "abs":
            return a < best - self.threshold
        if self.mode == "max" and self.threshold_mode == "rel":
            return a > best * (self.threshold + 1.0)
        return a > best + self.threshold

    def step(self, metric):
        current = float(metric)
        self.last_epoch += 1
        if self.is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            new = []
            for old in self.lrs:
                nl = max(old * self.factor, self.min_lr)
                new.append(nl if old - nl > self.eps else old)
            self.lrs = new
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        return list(self.lrs)


# --------------------------------------------------------------------------- gradient streams

def pseudo_gradients(shapes, steps, seed=0):
    """A deterministic stream of gradients for parameters of the given shapes:
    grad_fn(params, t) = A_i * p_i - b_i + noise_t, the gradient of a fixed
    separable quadratic plus seeded noise of comparable size."""
    rng = np.random.default_rng(seed)
    A = [rng.uniform(0.5, 2.0, size=s) for s in shapes]
    b = [rng.normal(size=s) for s in shapes]
    noise = [[rng.normal(scale=0.5, size=s) for s in shapes] for _ in range(steps)]

    def grad_fn(params, t):
        return [a * np.asarray(p, dtype=np.float64) - bb + n for a, bb, p, n in zip(A, b, params, noise[t])]

    return grad_fn


# --------------------------------------------------------------------------- schedules, closed forms
# lr of one group after e steps (e = last_epoch), from the formulas of torch's docs,
# for a run where nobody edits the lr.

def multistep_lr(base, e, milestones, gamma=0.1):
    return base * gamma ** sum(1 for m in milestones if m <= e)


def constant_lr(base, e, factor=1 / 3, total_iters=5):
    return base * (factor if e < total_iters else 1.0)


def linear_lr(base, e, start_factor=1 / 3, end_factor=1.0, total_iters=5):
    return base * (start_factor + (end_factor - start_factor) * min(e, total_iters) / total_iters)


def polynomial_lr(base, e, total_iters=5, power=1.0):
    return base * (1 - min(e, total_iters) / total_iters) ** power


def lambda_lr(base, e, fn):
    return base * fn(e)


def multiplicative_lr(base, e, fn):
    lr = base
    for i in range(1, e + 1):
        lr *= fn(i)
    return lr


def warm_restarts_lr(base, e, T_0, T_mult=1, eta_min=0.0):
    """SGDR: restart every T_i epochs, T_i = T_0 T_mult^k."""
    T_i, T_cur = T_0, e
    while T_cur >= T_i:
        T_cur -= T_i
        T_i *= T_mult
    return eta_min + (base - eta_min) * (1 + math.cos(math.pi * T_cur / T_i)) / 2


def cyclic_lr(e, base_lr, max_lr, step_size_up=2000, step_size_down=None, mode="triangular", gamma=1.0,
              base_momentum=0.8, max_momentum=0.9):
    """(lr, momentum) of CyclicLR after e steps: a triangle wave between base_lr and max_lr
    (up for step_size_up steps, down for step_size_down), its height scaled by 1 (triangular),
    1 / 2^(cycle - 1) (triangular2) or gamma^e (exp_range); momentum the mirror image."""
    up = step_size_up
    down = up if step_size_down is None else step_size_down
    cycle = e // (up + down)  # 0-based
    pos = e - cycle * (up + down)
    frac = pos / up if pos <= up else 1 - (pos - up) / down
    scale = {"triangular": 1.0, "triangular2": 0.5 ** cycle, "exp_range": gamma ** e}[mode]
    return (base_lr + (max_lr - base_lr) * frac * scale,
            max_momentum - (max_momentum - base_momentum) * frac * scale)


def one_cycle_lr(e, max_lr, total_steps, pct_start=0.3, anneal_strategy="cos", div_factor=25.0,
                 final_div_factor=1e4, three_phase=False, base_momentum=0.85, max_momentum=0.95):
    """(lr, momentum) of the 1cycle policy after e steps: initial = max_lr / div_factor up to max_lr
    over the first pct_start * total_steps - 1 steps, then down to initial / final_div_factor at
    total_steps - 1 (three_phase: down to initial at 2 pct_start total - 2, then to the minimum)."""
    initial = max_lr / div_factor
    low = initial / final_div_factor
    p1 = pct_start * total_steps - 1
    if three_phase:
        knots = [(0.0, initial, max_momentum), (p1, max_lr, base_momentum),
                 (2 * pct_start * total_steps - 2, initial, max_momentum), (total_steps - 1, low, max_momentum)]
    else:
        knots = [(0.0, initial, max_momentum), (p1, max_lr, base_momentum), (total_steps - 1, low, max_momentum)]
    for (s0, lr0, m0), (s1, lr1, m1) in zip(knots, knots[1:]):
        if e <= s1 or s1 == knots[-1][0]:
            pct = (e - s0) / (s1 - s0)
            if anneal_strategy == "cos":
                w = (1 - math.cos(math.pi * pct)) / 2
            else:
                w = pct
            return lr0 + (lr1 - lr0) * w, m0 + (m1 - m0) * w
    raise AssertionError("unreachable")
