"""Export to ONNX (needs the ``onnx`` extra: ``pip install fastmlp[onnx]``).

    fm.onnx.export(model, "model.onnx")          # or model.to_onnx("model.onnx"); model.to_onnx() -> ModelProto

The graph computes ``model.predict`` (eval mode: Dropout is the identity) in the
model's dtype, with one input ``input`` (batch, in_features) and one output
``output`` (batch, out_features); the batch size is dynamic. Each layer kind is
one entry of ``_LAYERS``: a function that appends the layer's nodes.

``import fastmlp.onnx`` also registers fastmlp's ``MLPClassifier`` and
``MLPRegressor`` with skl2onnx when it is installed (``register_skl2onnx()``
does it explicitly), so that ``skl2onnx.to_onnx(pipeline, X[:1])`` converts
pipelines that contain them, with the outputs of skl2onnx's own MLP converters.
"""
from __future__ import annotations

import importlib.util
from typing import Any, Callable

import numpy as np

try:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
except ImportError as e:  # pragma: no cover - the optional extra is missing
    raise ImportError(f"fastmlp.onnx needs the onnx package: pip install 'fastmlp[onnx]' ({e})") from e

from ._export import check_model, check_scaling, widths
from ._files import atomic_write
from ._version import __version__

__all__ = ["export", "to_model", "register_skl2onnx", "DEFAULT_OPSET"]

DEFAULT_OPSET = 17  # ONNX 1.12 (2022): widely supported by runtimes
MIN_OPSET = 13  # Softmax over the last axis only (its opset-13 meaning), Erf, Gemm with a 1-D bias
_PROTO = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE}


class _Builder:
    """Adds nodes and constants to a graph, naming them uniquely; the graph's
    compute dtype is ``dtype``. ``node`` returns the name of its output."""

    def __init__(self, dtype: Any, opset: int) -> None:
        self.dtype = np.dtype(dtype)
        self.opset = opset
        self.nodes: list = []
        self.initializers: list = []
        self._count: dict = {}

    def name(self, base: str) -> str:
        self._count[base] = self._count.get(base, -1) + 1
        return f"{base}_{self._count[base]}"

    def const(self, base: str, value: Any, dtype: Any = None) -> str:
        name = self.name(base)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype or self.dtype), name))
        return name

    def node(self, op: str, inputs: list, domain: str = "", out: str | None = None, **attrs: Any) -> str:
        out = out or self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.name(f"{op}_node"), domain=domain, **attrs))
        return out


def _linear(g: _Builder, layer: Any, x: str) -> str:
    inputs = [x, g.const("weight", layer.weight.data)]  # weight (out, in): Gemm's transB
    if layer.bias is not None:
        inputs.append(g.const("bias", layer.bias.data))
    return g.node("Gemm", inputs, transB=1)


def _leaky_relu(g: _Builder, layer: Any, x: str) -> str:
    if g.dtype == np.float32:
        return g.node("LeakyRelu", [x], alpha=layer.negative_slope)
    # alpha is a float32 attribute: in float64 the slope is a float64 constant, x if x > 0 else slope * x
    positive = g.node("Greater", [x, g.const("zero", 0.0)])
    return g.node("Where", [positive, x, g.node("Mul", [x, g.const("slope", layer.negative_slope)])])


def _gelu(g: _Builder, layer: Any, x: str) -> str:
    if getattr(layer, "approximate", "none") == "tanh":  # x sigmoid(2z), z = sqrt(2/pi) (x + 0.044715 x^3)
        cube = g.node("Mul", [g.node("Mul", [x, x]), x])
        z = g.node("Add", [x, g.node("Mul", [cube, g.const("c", 0.044715)])])
        return g.node("Mul", [x, g.node("Sigmoid", [g.node("Mul", [z, g.const("k", 2 * (2 / np.pi) ** 0.5)])])])
    # 0.5 * x * (1 + erf(x / sqrt(2))), as PyTorch's GELU(approximate='none')
    erf = g.node("Erf", [g.node("Mul", [x, g.const("inv_sqrt2", 0.70710678118654752440)])])
    half_x = g.node("Mul", [x, g.const("half", 0.5)])
    return g.node("Mul", [half_x, g.node("Add", [erf, g.const("one", 1.0)])])


# The activations below are composed from Exp, Log, Tanh, Sigmoid, Max/Min and Where with constants in the
# model's dtype, as their torch definitions: ONNX's own Elu, Selu, Softplus, ... take float32 attributes
# and ONNX Runtime has no float64 kernels for several of them.
def _where_positive(g: _Builder, x: str, negative: str) -> str:
    """x where x > 0, else the tensor negative."""
    return g.node("Where", [g.node("Greater", [x, g.const("zero", 0.0)]), x, negative])


def _expm1_negative(g: _Builder, x: str, scale: float = 1.0) -> str:
    """exp(min(x, 0) / scale) - 1 (the min keeps the unused branch of Where finite)."""
    v = g.node("Min", [x, g.const("zero", 0.0)])
    v = g.node("Mul", [v, g.const("inv_scale", 1 / scale)]) if scale != 1.0 else v
    return g.node("Sub", [g.node("Exp", [v]), g.const("one", 1.0)])


def _elu(g: _Builder, alpha: float, x: str, scale: float = 1.0) -> str:
    """x if x > 0 else alpha (exp(x / scale) - 1) (ELU: scale 1; CELU: scale alpha)."""
    return _where_positive(g, x, g.node("Mul", [_expm1_negative(g, x, scale), g.const("alpha", alpha)]))


def _softplus_of(g: _Builder, z: str) -> str:
    """log(1 + e^z) = max(z, 0) + log(1 + e^-|z|), which never overflows."""
    tail = g.node("Log", [g.node("Add", [g.const("one", 1.0), g.node("Exp", [g.node("Neg", [g.node("Abs", [z])])])])])
    return g.node("Add", [g.node("Max", [z, g.const("zero", 0.0)]), tail])


def _softplus(g: _Builder, layer: Any, x: str) -> str:
    z = g.node("Mul", [x, g.const("beta", layer.beta)])
    y = g.node("Mul", [_softplus_of(g, z), g.const("inv_beta", 1 / layer.beta)])
    return g.node("Where", [g.node("Greater", [z, g.const("threshold", layer.threshold)]), x, y])


def _clamp(g: _Builder, x: str, lo: float, hi: float) -> str:
    return g.node("Min", [g.node("Max", [x, g.const("min_val", lo)]), g.const("max_val", hi)])


def _hardsigmoid(g: _Builder, x: str) -> str:  # relu6(x + 3) / 6
    return g.node("Div", [_clamp(g, g.node("Add", [x, g.const("three", 3.0)]), 0.0, 6.0), g.const("six", 6.0)])


_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946


def _mean(g: _Builder, x: str, axis: int) -> str:
    """The mean of x over one axis, keeping it (ReduceMean's axes are an input from opset 18)."""
    if g.opset >= 18:
        return g.node("ReduceMean", [x, g.const("axes", [axis], dtype=np.int64)], keepdims=1)
    return g.node("ReduceMean", [x], axes=[axis], keepdims=1)


def _normalize(g: _Builder, x: str, axis: int, eps: float, center: bool) -> str:
    """(x - mean) / sqrt(var + eps) over axis (biased variance; without center x / sqrt(mean(x^2) + eps)).
    The statistics are computed in float64 and rounded to the dtype, as the engine does: in float32
    mean and variance would lose the spread of values near 1e3 (and ONNX Runtime's LayerNormalization
    kernel computes E[x^2] - mean^2), so LayerNormalization is not used."""
    xd = g.node("Cast", [x], to=TensorProto.DOUBLE) if g.dtype == np.float32 else x
    mean = _mean(g, xd, axis) if center else None
    d = g.node("Sub", [xd, mean]) if mean else xd
    var = _mean(g, g.node("Mul", [d, d]), axis)
    invstd = g.node("Reciprocal", [g.node("Sqrt", [g.node("Add", [var, g.const("eps", eps, dtype=np.float64)])])])
    if g.dtype == np.float32:
        invstd = g.node("Cast", [invstd], to=TensorProto.FLOAT)
        mean = g.node("Cast", [mean], to=TensorProto.FLOAT) if mean else None
    return g.node("Mul", [g.node("Sub", [x, mean]) if mean else x, invstd])


def _affine(g: _Builder, x: str, weight: Any, bias: Any) -> str:
    if weight is not None:
        x = g.node("Mul", [x, g.const("weight", weight.data)])
    if bias is not None:
        x = g.node("Add", [x, g.const("bias", bias.data)])
    return x


def _batch_norm(g: _Builder, layer: Any, x: str) -> str:
    if layer.track_running_stats:  # eval mode: (x - running_mean) / sqrt(running_var + eps) * weight + bias
        invstd = 1 / np.sqrt(layer.running_var + layer.running_var.dtype.type(layer.eps))  # in the dtype, as the engine
        x = g.node("Mul", [g.node("Sub", [x, g.const("running_mean", layer.running_mean)]), g.const("invstd", invstd)])
    else:  # the batch's own statistics, in eval mode too (as torch)
        x = _normalize(g, x, 0, layer.eps, True)
    return _affine(g, x, layer.weight, layer.bias) if layer.affine else x


def _layer_norm(g: _Builder, layer: Any, x: str) -> str:
    y = _normalize(g, x, -1, layer.eps, True)
    return _affine(g, y, *((layer.weight, layer.bias) if layer.elementwise_affine else (None, None)))


def _rms_norm(g: _Builder, layer: Any, x: str) -> str:
    eps = float(np.finfo(g.dtype).eps) if layer.eps is None else layer.eps  # None: the dtype's machine epsilon
    return _affine(g, _normalize(g, x, -1, eps, False), layer.weight if layer.elementwise_affine else None, None)


def _residual(g: _Builder, layer: Any, x: str) -> str:
    return g.node("Add", [x, _network(g, layer.block, x)])  # x + block(x)


# kind (as in a layer's spec) -> f(builder, layer, input name) -> output name
_LAYERS: dict[str, Callable[[_Builder, Any, str], str]] = {
    "linear": _linear,
    "relu": lambda g, layer, x: g.node("Relu", [x]),
    "leaky_relu": _leaky_relu,
    "sigmoid": lambda g, layer, x: g.node("Sigmoid", [x]),
    "tanh": lambda g, layer, x: g.node("Tanh", [x]),
    "gelu": _gelu,
    "softmax": lambda g, layer, x: g.node("Softmax", [x], axis=-1),
    "identity": lambda g, layer, x: x,
    "dropout": lambda g, layer, x: x,  # identity in eval mode
    "batch_norm": _batch_norm,
    "layer_norm": _layer_norm,
    "rms_norm": _rms_norm,
    "residual": _residual,
    "elu": lambda g, layer, x: _elu(g, layer.alpha, x),
    "celu": lambda g, layer, x: _elu(g, layer.alpha, x, layer.alpha),
    "selu": lambda g, layer, x: g.node("Mul", [_elu(g, _SELU_ALPHA, x), g.const("scale", _SELU_SCALE)]),
    "silu": lambda g, layer, x: g.node("Mul", [x, g.node("Sigmoid", [x])]),
    "mish": lambda g, layer, x: g.node("Mul", [x, g.node("Tanh", [_softplus_of(g, x)])]),
    "softplus": _softplus,
    "softsign": lambda g, layer, x: g.node("Div", [x, g.node("Add", [g.node("Abs", [x]), g.const("one", 1.0)])]),
    "hardtanh": lambda g, layer, x: _clamp(g, x, layer.min_val, layer.max_val),
    "relu6": lambda g, layer, x: _clamp(g, x, 0.0, 6.0),
    "hardsigmoid": lambda g, layer, x: _hardsigmoid(g, x),
    "hardswish": lambda g, layer, x: g.node("Mul", [x, _hardsigmoid(g, x)]),
    "logsigmoid": lambda g, layer, x: g.node("Neg", [_softplus_of(g, g.node("Neg", [x]))]),
    "log_softmax": lambda g, layer, x: g.node("LogSoftmax", [x], axis=-1),
    "prelu": lambda g, layer, x: _where_positive(g, x, g.node("Mul", [x, g.const("weight", layer.weight.data)])),
    "alpha_dropout": lambda g, layer, x: x,  # identity in eval mode
    "flatten": lambda g, layer, x: x,  # the identity on (batch, features)
}


def _network(g: _Builder, layers: Any, x: str) -> str:
    """Append the layers (a model's, or a residual block's) to g after the tensor x; return the output's name."""
    for i, layer in enumerate(layers):
        kind = layer._spec()["kind"]
        if kind not in _LAYERS:
            raise ValueError(f"layer {i} ({type(layer).__name__}) has no ONNX export")
        x = _LAYERS[kind](g, layer, x)
    return x


def _check_opset(opset: Any) -> int:
    top = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)) or not MIN_OPSET <= opset <= top:
        raise ValueError(f"opset must be an integer from {MIN_OPSET} to {top} (this onnx's newest), got {opset!r}")
    return int(opset)


def to_model(model: Any, opset: int = DEFAULT_OPSET, *, input_scaling: Any = None,
             output_scaling: Any = None) -> onnx.ModelProto:
    """The ONNX model (onnx.ModelProto) of a fastmlp Sequential, checked with onnx.checker.

    ``input_scaling=(mean, std)`` makes the graph standardize its input first,
    ``(input - mean) / std``; ``output_scaling=(mean, std)`` maps the network's
    output to ``output * std + mean`` (one value per feature, or scalars)."""
    check_model(model)
    opset = _check_opset(opset)
    n_in, n_out = widths(model)
    scale_in, scale_out = check_scaling(input_scaling, n_in, "input_scaling"), \
        check_scaling(output_scaling, n_out, "output_scaling")
    g = _Builder(model.dtype, opset)
    x = "input"
    if scale_in is not None:
        x = g.node("Div", [g.node("Sub", [x, g.const("input_mean", scale_in[0])]), g.const("input_std", scale_in[1])])
    out = _network(g, model, x)
    if scale_out is not None:
        out = g.node("Add", [g.node("Mul", [out, g.const("output_std", scale_out[1])]),
                             g.const("output_mean", scale_out[0])])
    if out == "input":  # no layer computes anything
        g.nodes.append(helper.make_node("Identity", ["input"], ["output"], name="Identity_output"))
    else:  # the node that computes the result gives it the graph's output name
        next(node for node in g.nodes if node.output[0] == out).output[0] = "output"
    in_dim: Any = n_in if n_in is not None else "features"
    out_dim: Any = n_out if n_out is not None else "features"
    proto = _PROTO[model.dtype]
    graph = helper.make_graph(g.nodes, "fastmlp", [helper.make_tensor_value_info("input", proto, ["batch", in_dim])],
                              [helper.make_tensor_value_info("output", proto, ["batch", out_dim])], g.initializers)
    opsets = [helper.make_opsetid("", opset)]
    m = helper.make_model(graph, opset_imports=opsets, producer_name="fastmlp", producer_version=__version__,
                          doc_string=" ".join(repr(model).split()))
    m.ir_version = helper.find_min_ir_version_for(opsets)  # the oldest runtime that knows the opset reads it
    onnx.checker.check_model(m, full_check=True)
    return m


def export(model: Any, path: Any, opset: int = DEFAULT_OPSET, *, input_scaling: Any = None,
           output_scaling: Any = None) -> onnx.ModelProto:
    """Write the ONNX model of ``model`` (see to_model) to ``path``, atomically, and return it."""
    m = to_model(model, opset, input_scaling=input_scaling, output_scaling=output_scaling)
    with atomic_write(path) as f:
        f.write(m.SerializeToString())
    return m


# --------------------------------------------------------------------------- skl2onnx
class _Skl2onnxBuilder(_Builder):
    """A _Builder that writes into skl2onnx's scope and container; ``out``
    names a node's output (one of the operator's outputs)."""

    def __init__(self, dtype: Any, scope: Any, container: Any) -> None:
        super().__init__(dtype, container.target_opset)
        self.scope, self.container = scope, container

    def name(self, base: str) -> str:
        return self.scope.get_unique_variable_name(base)

    def const(self, base: str, value: Any, dtype: Any = None) -> str:
        a = np.asarray(value, dtype=self.dtype if dtype is None else dtype)
        name = self.name(base)
        if a.dtype.kind == "U":
            self.container.add_initializer(name, TensorProto.STRING, list(a.shape),
                                           [v.encode("utf-8") for v in a.ravel().tolist()])
        else:
            self.container.add_initializer(name, helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape),
                                           a.ravel().tolist())
        return name

    def node(self, op: str, inputs: list, domain: str = "", out: str | None = None, **attrs: Any) -> str:
        out = out or self.name(op.lower())
        self.container.add_node(op, inputs, out, op_domain=domain, name=self.scope.get_unique_operator_name(op),
                                **attrs)
        return out


def _skl_network(operator: Any, scope: Any, container: Any) -> tuple[_Skl2onnxBuilder, str]:
    """The estimator's network on the operator's input, computed in the
    estimator's dtype (as its predict does); returns the logits."""
    model = operator.raw_operator._model
    g = _Skl2onnxBuilder(model.dtype, scope, container)
    x = g.node("Cast", [operator.inputs[0].full_name], to=_PROTO[model.dtype])
    return g, _network(g, model, x)


def _proto_of(variable: Any) -> int:
    return TensorProto.DOUBLE if type(variable.type).__name__ == "DoubleTensorType" else TensorProto.FLOAT


def _convert_classifier(scope: Any, operator: Any, container: Any) -> None:
    # the outputs of skl2onnx's MLPClassifier converter: label, probabilities (as predict_proba)
    est = operator.raw_operator
    g, logits = _skl_network(operator, scope, container)
    label, proba = operator.outputs[0].full_name, operator.outputs[1].full_name
    p = g.node("Softmax", [logits], axis=-1) if est._multiclass() else g.node("Sigmoid", [logits])
    if est.n_outputs_ == 1:  # binary: the columns (1 - p, p)
        p = g.node("Concat", [g.node("Sub", [g.const("one", 1.0), p]), p], axis=1)
    g.node("Cast", [p], to=_proto_of(operator.outputs[1]), out=proba)
    if est._label_binarizer.y_type_ == "multilabel-indicator":  # an indicator matrix, p > 0.5
        g.node("Cast", [g.node("Binarizer", [p], domain="ai.onnx.ml", threshold=0.5)], to=TensorProto.INT64,
               out=label)
        return
    classes = np.asarray(est.classes_)
    if scope.get_options(est, {"nocl": False})["nocl"]:  # labels are the class indices
        classes = np.arange(len(classes), dtype=np.int64)
    classes = classes.astype(np.int64) if classes.dtype.kind in "biuf" else classes.astype(str)  # as skl2onnx
    picked = g.node("ArrayFeatureExtractor", [g.const("classes", classes, dtype=classes.dtype),
                                              g.node("ArgMax", [p], axis=1)], domain="ai.onnx.ml")
    g.node("Reshape", [picked, g.const("flat", [-1], dtype=np.int64)], out=label)


def _convert_regressor(scope: Any, operator: Any, container: Any) -> None:
    est = operator.raw_operator
    g, out = _skl_network(operator, scope, container)
    if est.loss == "poisson":
        out = g.node("Exp", [out])
    g.node("Cast", [out], to=_proto_of(operator.outputs[0]), out=operator.outputs[0].full_name)


def _classifier_shapes(operator: Any) -> None:
    from skl2onnx.common.data_types import Int64TensorType
    from skl2onnx.common.shape_calculator import calculate_linear_classifier_output_shapes

    calculate_linear_classifier_output_shapes(operator)
    est = operator.raw_operator
    if est._label_binarizer.y_type_ == "multilabel-indicator":
        n = operator.inputs[0].get_first_dimension()
        operator.outputs[0].set_type(Int64TensorType(shape=[n, est.n_outputs_]))
        operator.outputs[1].type.shape = [n, est.n_outputs_]


def _regressor_shapes(operator: Any) -> None:
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

    cls = DoubleTensorType if isinstance(operator.inputs[0].type, DoubleTensorType) else FloatTensorType
    operator.outputs[0].set_type(cls([operator.inputs[0].get_first_dimension(), operator.raw_operator.n_outputs_]))


def register_skl2onnx() -> None:
    """Register fastmlp's MLPClassifier and MLPRegressor with skl2onnx (idempotent).
    The classifier takes skl2onnx's classifier options ``zipmap`` (True, False or
    'columns'), ``nocl`` and ``output_class_labels``."""
    from skl2onnx import update_registered_converter

    from .estimators import MLPClassifier, MLPRegressor

    update_registered_converter(MLPClassifier, "FastmlpMLPClassifier", _classifier_shapes, _convert_classifier,
                                options={"zipmap": [True, False, "columns"], "nocl": [False, True],
                                         "output_class_labels": [False, True]},
                                overwrite=True)
    update_registered_converter(MLPRegressor, "FastmlpMLPRegressor", _regressor_shapes, _convert_regressor,
                                overwrite=True)


if all(importlib.util.find_spec(m) for m in ("skl2onnx", "sklearn", "scipy")):
    register_skl2onnx()
