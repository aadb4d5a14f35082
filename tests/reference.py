"""Independent NumPy float64 reference implementations for the fastmlp tests.

Everything here is written from the mathematical definitions (and the
PyTorch documentation of the same operations), not from fastmlp's code.
It favours obviousness over speed: e.g. the softmax backward builds the full
Jacobian of every row.

All functions take and return float64 arrays.
"""
from __future__ import annotations

import math

import numpy as np

SQRT2 = math.sqrt(2.0)
SQRT_2PI = math.sqrt(2.0 * math.pi)


def f64(a):
    return np.asarray(a, dtype=np.float64)


# --------------------------------------------------------------------------- linear

def linear_forward(x, W, b=None):
    """y = x W^T + b, W of shape (out, in)."""
    x, W = f64(x), f64(W)
    y = x @ W.T
    if b is not None:
        y = y + f64(b)
    return y


def linear_backward(x, W, dy):
    """(dx, dW, db) for y = x W^T + b: dW = dy^T x, db = sum_rows dy, dx = dy W."""
    x, W, dy = f64(x), f64(W), f64(dy)
    return dy @ W, dy.T @ x, dy.sum(axis=0)


# --------------------------------------------------------------------------- activations

def relu(x):
    x = f64(x)
    return np.where(x > 0, x, 0.0)


def relu_backward(x, dy):
    # d relu / dx = 1 for x > 0, 0 otherwise (PyTorch uses 0 at x == 0)
    return np.where(f64(x) > 0, f64(dy), 0.0)


def leaky_relu(x, negative_slope=0.01):
    x = f64(x)
    return np.where(x > 0, x, negative_slope * x)


def leaky_relu_backward(x, dy, negative_slope=0.01):
    # PyTorch: grad where x > 0, grad * slope otherwise (slope also at x == 0)
    return np.where(f64(x) > 0, f64(dy), negative_slope * f64(dy))


def sigmoid(x):
    """1 / (1 + exp(-x)), evaluated without overflow on either side."""
    x = f64(x)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def sigmoid_backward(x, dy):
    s = sigmoid(x)
    return f64(dy) * s * (1.0 - s)


def tanh(x):
    return np.tanh(f64(x))


def tanh_backward(x, dy):
    t = np.tanh(f64(x))
    return f64(dy) * (1.0 - t * t)


def _Phi(x):
    """Standard normal CDF 0.5 (1 + erf(x / sqrt 2)), written with
    erfc(-x / sqrt 2) = 1 + erf(x / sqrt 2) so that it stays accurate for x << 0."""
    return np.vectorize(lambda v: 0.5 * math.erfc(-v / SQRT2), otypes=[np.float64])(f64(x))


def gelu(x):
    """GELU, the exact (erf) form: x * Phi(x)."""
    x = f64(x)
    return x * _Phi(x)


def gelu_backward(x, dy):
    """d/dx [x Phi(x)] = Phi(x) + x phi(x)."""
    x = f64(x)
    phi = np.exp(-0.5 * x * x) / SQRT_2PI
    return f64(dy) * (_Phi(x) + x * phi)


def softmax(x):
    """Row-wise softmax (over the last axis), shifted by the row max."""
    x = f64(x)
    if x.size == 0:
        return x.copy()
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def softmax_jacobian(s_row):
    """J[i, j] = d s_i / d x_j = s_i (delta_ij - s_j) for one row s."""
    s = f64(s_row)
    return np.diag(s) - np.outer(s, s)


def softmax_backward(x, dy):
    """Vector-Jacobian product dx = J^T dy for every row, with the full Jacobian."""
    x, dy = f64(x), f64(dy)
    s = softmax(x)
    dx = np.empty_like(dy)
    for r in range(x.shape[0]):
        dx[r] = softmax_jacobian(s[r]).T @ dy[r]
    return dx


def log_softmax(x):
    x = f64(x)
    z = x - x.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def identity(x):
    return f64(x).copy()


def identity_backward(x, dy):
    return f64(dy).copy()


ACTIVATIONS = {
    # name: (forward, backward(x, dy))
    "relu": (relu, relu_backward),
    "leaky_relu": (leaky_relu, leaky_relu_backward),
    "sigmoid": (sigmoid, sigmoid_backward),
    "tanh": (tanh, tanh_backward),
    "gelu": (gelu, gelu_backward),
    "softmax": (softmax, softmax_backward),
    "identity": (identity, identity_backward),
}


def activation(kind, x, **kw):
    return ACTIVATIONS[kind][0](x, **kw)


def activation_backward(kind, x, dy, **kw):
    return ACTIVATIONS[kind][1](x, dy, **kw)


# --------------------------------------------------------------------------- losses
# Every loss returns (value, dL/dinput).

def _reduce(elementwise, grad_elementwise, reduction):
    if reduction == "mean":
        n = elementwise.size
        return elementwise.sum() / n, grad_elementwise / n
    if reduction == "sum":
        return elementwise.sum(), grad_elementwise
    raise ValueError(reduction)


def mse_loss(x, t, reduction="mean"):
    """mean/sum of (x - t)^2; gradient 2 (x - t) (/ N)."""
    d = f64(x) - f64(t)
    return _reduce(d * d, 2.0 * d, reduction)


def l1_loss(x, t, reduction="mean"):
    """mean/sum of |x - t|; gradient sign(x - t) (0 where equal)."""
    d = f64(x) - f64(t)
    return _reduce(np.abs(d), np.sign(d), reduction)


def huber_loss(x, t, reduction="mean", delta=1.0):
    """0.5 d^2 if |d| < delta else delta (|d| - 0.5 delta); gradient clip(d, -delta, delta)."""
    d = f64(x) - f64(t)
    a = np.abs(d)
    val = np.where(a < delta, 0.5 * d * d, delta * (a - 0.5 * delta))
    grad = np.clip(d, -delta, delta)
    return _reduce(val, grad, reduction)


def _ce_from_coefficients(x, Q):
    """loss = -sum_ic Q_ic log softmax(x)_ic ; gradient = rowsum(Q) softmax(x) - Q."""
    logp = log_softmax(x)
    value = -(Q * logp).sum()
    grad = Q.sum(axis=1, keepdims=True) * softmax(x) - Q
    return value, grad


def cross_entropy_index(x, y, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """torch.nn.functional.cross_entropy with class-index targets y (B,).

    Per sample i (not ignored), with w the class weights and eps the smoothing:
        l_i = (1 - eps) * w[y_i] * (-log p_i[y_i]) + (eps / C) * sum_c w[c] * (-log p_i[c])
    'sum' adds the l_i; 'mean' divides the sum by sum_i w[y_i] over the
    non-ignored samples (PyTorch's weighted mean, also for the smoothing term).
    """
    x = f64(x)
    B, C = x.shape
    y = np.asarray(y, dtype=np.int64)
    w = np.ones(C) if weight is None else f64(weight)
    Q = np.zeros((B, C))
    denom = 0.0
    for i in range(B):
        if y[i] == ignore_index:
            continue
        Q[i, y[i]] += (1.0 - label_smoothing) * w[y[i]]
        Q[i, :] += (label_smoothing / C) * w
        denom += w[y[i]]
    if reduction == "mean":
        Q = Q / denom
    elif reduction != "sum":
        raise ValueError(reduction)
    return _ce_from_coefficients(x, Q)


def cross_entropy_prob(x, t, weight=None, reduction="mean", label_smoothing=0.0):
    """torch.nn.functional.cross_entropy with class-probability targets t (B, C).

    t' = (1 - eps) t + eps / C ;  l_i = -sum_c w[c] t'_ic log p_ic ;
    'mean' divides the sum by the batch size B.
    """
    x, t = f64(x), f64(t)
    B, C = x.shape
    w = np.ones(C) if weight is None else f64(weight)
    ts = (1.0 - label_smoothing) * t + label_smoothing / C
    Q = ts * w[None, :]
    if reduction == "mean":
        Q = Q / B
    elif reduction != "sum":
        raise ValueError(reduction)
    return _ce_from_coefficients(x, Q)


def softplus(z):
    """log(1 + exp(z)) without overflow."""
    z = f64(z)
    return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


def bce_with_logits(x, t, reduction="mean", pos_weight=None):
    """l = -[pw t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))]
         = pw t softplus(-x) + (1 - t) softplus(x)
    dl/dx = -pw t sigmoid(-x) + (1 - t) sigmoid(x).  pos_weight broadcasts over the last axis."""
    x, t = f64(x), f64(t)
    pw = np.ones(x.shape[-1] if x.ndim else 1) if pos_weight is None else f64(pos_weight)
    val = pw * t * softplus(-x) + (1.0 - t) * softplus(x)
    grad = -pw * t * sigmoid(-x) + (1.0 - t) * sigmoid(x)
    return _reduce(val, grad, reduction)


# --------------------------------------------------------------------------- a reference network

class RefSequential:
    """A list of layers (kind, params) run in order, in float64.

    kinds: ('linear', (W, b or None)), ('relu', {}), ('leaky_relu', {'negative_slope': s}),
           ('sigmoid', {}), ('tanh', {}), ('gelu', {}), ('softmax', {}), ('identity', {}),
           ('dropout_mask', {'mask': M, 'p': p})  (a fixed dropout mask; output x * M / (1 - p)).
    """

    def __init__(self, layers):
        self.layers = list(layers)
        self._inputs = None

    @classmethod
    def from_state(cls, kinds, state_dict):
        """kinds: list of kind strings or (kind, kwargs); weights from a torch-style state_dict."""
        layers = []
        for i, k in enumerate(kinds):
            kind, kw = (k, {}) if isinstance(k, str) else k
            if kind == "linear":
                W = f64(state_dict[f"{i}.weight"])
                b = state_dict.get(f"{i}.bias")
                layers.append(("linear", (W, None if b is None else f64(b))))
            else:
                layers.append((kind, dict(kw)))
        return cls(layers)

    def forward(self, x):
        h = f64(x)
        self._inputs = []
        for kind, params in self.layers:
            self._inputs.append(h)
            if kind == "linear":
                W, b = params
                h = linear_forward(h, W, b)
            elif kind == "dropout_mask":
                h = h * params["mask"] / (1.0 - params["p"])
            else:
                h = activation(kind, h, **params)
        return h

    __call__ = forward

    def backward(self, dy):
        """Returns (dx, grads) with grads keyed '<i>.weight' / '<i>.bias'."""
        g = f64(dy)
        grads = {}
        for i in reversed(range(len(self.layers))):
            kind, params = self.layers[i]
            h = self._inputs[i]
            if kind == "linear":
                W, b = params
                g, dW, db = linear_backward(h, W, g)
                grads[f"{i}.weight"] = dW
                if b is not None:
                    grads[f"{i}.bias"] = db
            elif kind == "dropout_mask":
                g = g * params["mask"] / (1.0 - params["p"])
            else:
                g = activation_backward(kind, h, g, **params)
        return g, grads


# --------------------------------------------------------------------------- finite differences

def central_diff(f, x, h=1e-6):
    """Central finite differences of the scalar function f at the float64 array x
    (x is perturbed in place and restored)."""
    g = np.zeros(x.shape, dtype=np.float64)
    flat = x.reshape(-1)
    gf = g.reshape(-1)
    for k in range(flat.size):
        old = flat[k]
        flat[k] = old + h
        fp = f()
        flat[k] = old - h
        fm_ = f()
        flat[k] = old
        gf[k] = (fp - fm_) / (2.0 * h)
    return g
