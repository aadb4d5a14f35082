"""Export a model to one dependency-free C99 source file: ``fm.export_c(model, "model.c")``.

The file defines, for ``prefix`` P:

    void P_predict(const float *x, int n, float *y);   /* x (n, in) row-major -> y (n, out), eval mode */
    int P_in_features(void);
    int P_out_features(void);

The weights are static arrays printed to round-trip exactly (float32 ``%.9g``,
float64 ``%.17g``); a float64 model computes in double between the float
input and output. No allocation: rows are processed one at a time through two
scratch rows of the widest layer (and one row per residual block for its input),
on the stack (static when they exceed 64 KiB, which makes P_predict not reentrant). Only ``<math.h>`` is used. Each layer kind
is one entry of ``_LAYERS``: a function returning the C statements of the layer.
"""
from __future__ import annotations

import re
from typing import Any, Callable

import numpy as np

from ._export import check_model, check_scaling, widths
from ._files import atomic_write
from ._version import __version__

__all__ = ["export_c"]

_STACK_LIMIT = 64 * 1024  # bytes of scratch rows kept on the stack


class _C:
    """What a layer's code needs: the real type's names, and the arrays emitted so far."""

    def __init__(self, prefix: str, dtype: np.dtype) -> None:
        self.prefix = prefix
        self.double = dtype == np.float64
        self.real = "double" if self.double else "float"
        self.suffix = "" if self.double else "f"  # math.h function suffix and literal suffix
        self.arrays: list[str] = []
        self.skips: list[int] = []  # the widths of the rows that keep residual blocks' inputs
        self.widest = 0

    def lit(self, v: float) -> str:
        s = f"{float(v):.17g}" if self.double else f"{float(np.float32(v)):.9g}"
        if not any(c in s for c in ".en"):
            s += ".0"  # "3f" is not a C literal
        return s + self.suffix

    def array(self, name: str, values: np.ndarray) -> str:
        full = f"{self.prefix}_{name}"
        vals = [self.lit(v) for v in np.asarray(values).ravel().tolist()]
        rows = ",\n".join("    " + ", ".join(vals[i:i + 8]) for i in range(0, len(vals), 8))
        self.arrays.append(f"static const {self.real} {full}[{len(vals)}] = {{\n{rows}\n}};")
        return full

    def fn(self, name: str) -> str:
        return name + self.suffix


def _linear(c: _C, i: Any, layer: Any, n: int) -> tuple[str, int]:
    m = layer.out_features
    wt = c.array(f"w{i}", layer.weight.data.T)  # stored (in, out): the inner loop runs over outputs
    init = f"{c.array(f'b{i}', layer.bias.data)}[j]" if layer.bias is not None else c.lit(0.0)
    code = (f"for (j = 0; j < {m}; ++j) b[j] = {init};\n"
            f"for (k = 0; k < {n}; ++k) {{\n"
            f"    const {c.real} ak = a[k], *w = {wt} + (long)k * {m};\n"
            f"    for (j = 0; j < {m}; ++j) b[j] += ak * w[j];\n"
            f"}}\n"
            f"t = a; a = b; b = t;")
    return code, m


def _map(expr: Callable[[_C, Any], str], pre: Callable[[_C, Any], str] = lambda c, layer: "") \
        -> Callable[[_C, Any, Any, int], tuple[str, int]]:
    """An element-wise layer: a[j] = expr(c, layer), a C expression of v = a[j],
    after the C statements pre(c, layer)."""
    def emit(c: _C, i: Any, layer: Any, n: int) -> tuple[str, int]:
        return f"for (j = 0; j < {n}; ++j) {{ const {c.real} v = a[j]; {pre(c, layer)}a[j] = {expr(c, layer)}; }}", n
    return emit


def _sigmoid(c: _C, z: str) -> str:
    """1 / (1 + e^-z) as a C expression that never overflows."""
    e = f"{c.fn('exp')}(-{c.fn('fabs')}({z}))"
    return f"({z} >= 0 ? {c.lit(1)} / ({c.lit(1)} + {e}) : {e} / ({c.lit(1)} + {e}))"


def _softplus(c: _C, z: str) -> str:
    """log(1 + e^z) = max(z, 0) + log1p(e^-|z|) as a C expression that never overflows."""
    return f"({c.fn('fmax')}({z}, {c.lit(0)}) + {c.fn('log1p')}({c.fn('exp')}(-{c.fn('fabs')}({z}))))"


def _clamp(c: _C, v: str, lo: float, hi: float) -> str:
    return f"({v} < {c.lit(lo)} ? {c.lit(lo)} : {v} > {c.lit(hi)} ? {c.lit(hi)} : {v})"


def _prelu(c: _C, i: Any, layer: Any, n: int) -> tuple[str, int]:
    w = c.array(f"w{i}", layer.weight.data)
    return f"for (j = 0; j < {n}; ++j) if (a[j] <= 0) a[j] *= {w}[{'j' if layer.weight.data.size > 1 else 0}];", n


def _log_softmax(c: _C, i: Any, layer: Any, n: int) -> tuple[str, int]:
    return (f"{{ {c.real} mx = a[0], s = {c.lit(0)};\n"
            f"for (j = 1; j < {n}; ++j) if (a[j] > mx) mx = a[j];\n"
            f"for (j = 0; j < {n}; ++j) s += {c.fn('exp')}(a[j] - mx);\n"
            f"s = mx + {c.fn('log')}(s);\n"
            f"for (j = 0; j < {n}; ++j) a[j] -= s; }}"), n


def _gelu(c: _C, approximate: str) -> str:
    if approximate == "tanh":  # x sigmoid(2 sqrt(2/pi) (x + 0.044715 x^3)), as the engine
        z = f"({c.lit(2 * (2 / np.pi) ** 0.5)} * (v + {c.lit(0.044715)} * v * v * v))"
        return f"v * {_sigmoid(c, z)}"
    return f"{c.lit(0.5)} * v * ({c.lit(1)} + {c.fn('erf')}(v * {c.lit(2 ** -0.5)}))"


_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946


def _softmax(c: _C, i: Any, layer: Any, n: int) -> tuple[str, int]:
    return (f"{{ {c.real} mx = a[0], s = {c.lit(0)};\n"
            f"for (j = 1; j < {n}; ++j) if (a[j] > mx) mx = a[j];\n"
            f"for (j = 0; j < {n}; ++j) {{ a[j] = {c.fn('exp')}(a[j] - mx); s += a[j]; }}\n"
            f"s = {c.lit(1)} / s;\n"
            f"for (j = 0; j < {n}; ++j) a[j] *= s; }}"), n


def _identity(c: _C, i: Any, layer: Any, n: int) -> tuple[str, int]:
    return "", n


def _affine(c: _C, i: Any, n: int, expr: str, weight: Any, bias: Any) -> str:
    """a[j] = expr * weight[j] + bias[j] (each factor only when present)."""
    if weight is not None:
        expr = f"{expr} * {c.array(f'w{i}', weight.data)}[j]"
    if bias is not None:
        expr = f"{expr} + {c.array(f'b{i}', bias.data)}[j]"
    return f"for (j = 0; j < {n}; ++j) a[j] = {expr};"


def _batch_norm(c: _C, i: Any, layer: Any, n: int) -> tuple[str, int]:
    if not layer.track_running_stats:
        raise ValueError(f"layer {i} (BatchNorm1d(track_running_stats=False)) normalizes with the statistics of "
                         f"the whole batch, also in eval mode; the C export computes one row at a time and cannot "
                         f"export it (the ONNX export can)")
    var = layer.running_var
    invstd = 1 / np.sqrt(var + var.dtype.type(layer.eps))  # in the dtype, as the engine
    expr = f"(a[j] - {c.array(f'mean{i}', layer.running_mean)}[j]) * {c.array(f'invstd{i}', invstd)}[j]"
    return _affine(c, i, n, expr, *((layer.weight, layer.bias) if layer.affine else (None, None))), n


def _row_norm(c: _C, i: Any, n: int, eps: float, center: bool, weight: Any, bias: Any) -> str:
    """(a - mean) / sqrt(var + eps) over the row (without center a / sqrt(mean(a^2) + eps)), the
    statistics summed in double as the engine does."""
    mean = (f"for (j = 0; j < {n}; ++j) m += (double)a[j];\n"
            f"m /= {n}.0;\n") if center else ""
    return (f"{{ double m = 0.0, v = 0.0; {c.real} mt, s;\n{mean}"
            f"for (j = 0; j < {n}; ++j) {{ const double d = (double)a[j] - m; v += d * d; }}\n"
            f"mt = ({c.real})m; s = ({c.real})(1.0 / sqrt(v / {n}.0 + {float(eps)!r}));\n"
            f"{_affine(c, i, n, '(a[j] - mt) * s', weight, bias)} }}")


def _layer_norm(c: _C, i: Any, layer: Any, n: int) -> tuple[str, int]:
    affine = (layer.weight, layer.bias) if layer.elementwise_affine else (None, None)
    return _row_norm(c, i, n, layer.eps, True, *affine), n


def _rms_norm(c: _C, i: Any, layer: Any, n: int) -> tuple[str, int]:
    eps = float(np.finfo(np.float64 if c.double else np.float32).eps) if layer.eps is None else layer.eps
    return _row_norm(c, i, n, eps, False, layer.weight if layer.elementwise_affine else None, None), n


def _residual(c: _C, i: Any, layer: Any, n: int) -> tuple[str, int]:
    """a + block(a): the input is kept in a row of its own (one per residual block)."""
    skip = f"skip{len(c.skips)}"
    c.skips.append(n)
    steps, width = _steps(c, layer.block, n, f"{i}_")
    if width != n:
        raise ValueError(f"layer {i}: the residual block changes the width from {n} to {width}")
    return "\n".join([f"for (j = 0; j < {n}; ++j) {skip}[j] = a[j];", *steps,
                      f"for (j = 0; j < {n}; ++j) a[j] += {skip}[j];"]), n


# kind -> f(context, layer name (its index path), layer, input width)
#      -> (C statements on the row a (width), output width)
_LAYERS: dict[str, Callable[[_C, Any, Any, int], tuple[str, int]]] = {
    "linear": _linear,
    "relu": _map(lambda c, layer: f"v > 0 ? v : {c.lit(0)}"),
    "leaky_relu": _map(lambda c, layer: f"v > 0 ? v : {c.lit(layer.negative_slope)} * v"),
    "sigmoid": _map(lambda c, layer: f"v >= 0 ? {c.lit(1)} / ({c.lit(1)} + e) : e / ({c.lit(1)} + e)",
                    pre=lambda c, layer: f"const {c.real} e = {c.fn('exp')}(-{c.fn('fabs')}(v)); "),  # never overflows
    "tanh": _map(lambda c, layer: f"{c.fn('tanh')}(v)"),
    "gelu": _map(lambda c, layer: _gelu(c, getattr(layer, "approximate", "none"))),
    "softmax": _softmax,
    "identity": _identity,
    "dropout": _identity,  # identity in eval mode
    "batch_norm": _batch_norm,
    "layer_norm": _layer_norm,
    "rms_norm": _rms_norm,
    "residual": _residual,
    "elu": _map(lambda c, layer: f"v > 0 ? v : {c.lit(layer.alpha)} * {c.fn('expm1')}(v)"),
    "celu": _map(lambda c, layer: f"v > 0 ? v : {c.lit(layer.alpha)} * {c.fn('expm1')}(v / {c.lit(layer.alpha)})"),
    "selu": _map(lambda c, layer: f"{c.lit(_SELU_SCALE)} * (v > 0 ? v : {c.lit(_SELU_ALPHA)} * {c.fn('expm1')}(v))"),
    "silu": _map(lambda c, layer: f"v * {_sigmoid(c, 'v')}"),
    "mish": _map(lambda c, layer: f"v * {c.fn('tanh')}({_softplus(c, 'v')})"),
    "softplus": _map(lambda c, layer: f"z > {c.lit(layer.threshold)} ? v : {_softplus(c, 'z')} / {c.lit(layer.beta)}",
                     pre=lambda c, layer: f"const {c.real} z = {c.lit(layer.beta)} * v; "),
    "softsign": _map(lambda c, layer: f"v / ({c.lit(1)} + {c.fn('fabs')}(v))"),
    "hardtanh": _map(lambda c, layer: _clamp(c, "v", layer.min_val, layer.max_val)),
    "relu6": _map(lambda c, layer: _clamp(c, "v", 0.0, 6.0)),
    "hardsigmoid": _map(lambda c, layer: f"{_clamp(c, f'(v + {c.lit(3)})', 0.0, 6.0)} / {c.lit(6)}"),
    "hardswish": _map(lambda c, layer: f"v * {_clamp(c, f'(v + {c.lit(3)})', 0.0, 6.0)} / {c.lit(6)}"),
    "logsigmoid": _map(lambda c, layer: f"-{_softplus(c, '(-v)')}"),
    "log_softmax": _log_softmax,
    "prelu": _prelu,
    "alpha_dropout": _identity,  # identity in eval mode
    "flatten": _identity,  # the identity on (batch, features)
}


def _steps(c: _C, layers: Any, width: int, path: str = "") -> tuple[list[str], int]:
    """The C statements of the layers (a model's or a residual block's, named path + index) on a row of
    the given width, and the output width; c.widest grows to the widest row."""
    steps = []
    for i, layer in enumerate(layers):
        kind = layer._spec()["kind"]
        if kind not in _LAYERS:
            raise ValueError(f"layer {path}{i} ({type(layer).__name__}) has no C export")
        code, width = _LAYERS[kind](c, f"{path}{i}", layer, width)
        c.widest = max(c.widest, width)
        if code:
            about = "Residual, a + block(a)" if kind == "residual" else " ".join(repr(layer).split())
            steps.append(f"/* layer {path}{i}: {about} */\n{code}")
    return steps, width


def _scale(c: _C, name: str, scaling: tuple | None, inverse: bool) -> str:
    """(a - mean) / std, or with inverse a * std + mean, over the row a."""
    if scaling is None:
        return ""
    mean, std = c.array(f"{name}_mean", scaling[0]), c.array(f"{name}_std", scaling[1])
    expr = f"a[j] * {std}[j] + {mean}[j]" if inverse else f"(a[j] - {mean}[j]) / {std}[j]"
    return f"/* {name} scaling */\nfor (j = 0; j < {len(scaling[0])}; ++j) a[j] = {expr};"


def _source(model: Any, prefix: str, scale_in: tuple | None, scale_out: tuple | None) -> str:
    c = _C(prefix, model.dtype)
    n_in = model.in_features
    if n_in is None:
        raise ValueError("the C export needs a fixed input width: the model has no Linear layer")
    c.widest = n_in
    layers, n_out = _steps(c, model, n_in)
    steps = [_scale(c, "input", scale_in, False), *layers, _scale(c, "output", scale_out, True)]
    widest = c.widest
    rows = [f"buf0[{widest}]", f"buf1[{widest}]"] + [f"skip{k}[{w}]" for k, w in enumerate(c.skips)]
    storage = "static " if (2 * widest + sum(c.skips)) * np.dtype(model.dtype).itemsize > _STACK_LIMIT else ""
    body = "\n".join(s for s in steps if s).replace("\n", "\n        ")
    arch = " ".join(repr(model).split())
    return f"""/* Generated by fastmlp {__version__}: {arch}, {model.dtype.name}.
 * C99, no allocation, only <math.h>. {prefix}_predict(x, n, y): x is (n, {n_in}) row-major, y is (n, {n_out});
 * the model in eval mode (dropout off). Compile with e.g. cc -O2 -std=c99 -c file.c (link with -lm). */
#include <math.h>

{chr(10).join(c.arrays)}

int {prefix}_in_features(void) {{ return {n_in}; }}
int {prefix}_out_features(void) {{ return {n_out}; }}

void {prefix}_predict(const float *x, int n, float *y) {{
    /* two scratch rows of the widest layer (a holds the current activations), one per residual block */
    {storage}{c.real} {", ".join(rows)};
    {c.real} *a, *b, *t;
    int r, j, k;
    for (r = 0; r < n; ++r) {{
        a = buf0; b = buf1;
        for (j = 0; j < {n_in}; ++j) a[j] = x[(long)r * {n_in} + j];
        {body}
        for (j = 0; j < {n_out}; ++j) y[(long)r * {n_out} + j] = (float)a[j];
    }}
    (void)b; (void)t; (void)k;
}}
"""


def export_c(model: Any, path: Any, prefix: str = "fastmlp", *, input_scaling: Any = None,
             output_scaling: Any = None) -> None:
    """Write ``model`` (a fastmlp Sequential) as one C99 source file at ``path``
    (atomically), defining ``<prefix>_predict``, ``<prefix>_in_features`` and
    ``<prefix>_out_features``; see the module's documentation. The scalings are
    fastmlp.onnx.to_model's: ``(x - mean) / std`` first, ``y * std + mean`` last."""
    check_model(model)
    if not isinstance(prefix, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", prefix):
        raise ValueError(f"prefix must be a C identifier (letters, digits, _; not starting with a digit), "
                         f"got {prefix!r}")
    n_in, n_out = widths(model)
    src = _source(model, prefix, check_scaling(input_scaling, n_in, "input_scaling"),
                  check_scaling(output_scaling, n_out, "output_scaling")).encode("utf-8")
    with atomic_write(path) as f:
        f.write(src)
