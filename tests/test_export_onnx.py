"""ONNX export: every layer, float32 and float64, run by ONNX Runtime against model.predict and the NumPy
reference; skl2onnx conversion of pipelines with fastmlp's estimators; `fastmlp export --format onnx`."""
import math
import warnings

import numpy as np
import pytest

import fastmlp as fm
from fastmlp.datasets import load_digits
from reference import RefSequential

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

TOL = {"float32": dict(rtol=1e-5, atol=1e-6), "float64": dict(rtol=1e-12, atol=1e-12)}
ACTIVATIONS = [fm.ReLU, lambda: fm.LeakyReLU(0.1), lambda: fm.LeakyReLU(1.7), fm.Sigmoid, fm.Tanh, fm.GELU,
               fm.Softmax, fm.Identity, lambda: fm.Dropout(0.5)]
ACT_IDS = ["relu", "leaky0.1", "leaky1.7", "sigmoid", "tanh", "gelu", "softmax", "identity", "dropout"]


def run_onnx(proto, x):
    """The graph's output for x with ONNX Runtime; for a float64 graph with Erf (GELU), which ONNX Runtime
    has no float64 kernel for and whose reference implementation in onnx rounds to float32, onnx's
    reference evaluator with a float64 erf."""
    if x.dtype == np.float64 and any(n.op_type == "Erf" for n in proto.graph.node):
        from onnx.reference import ReferenceEvaluator
        from onnx.reference.ops._op import OpRunUnaryNum

        class Erf(OpRunUnaryNum):
            def _run(self, x):
                return (np.vectorize(math.erf, otypes=[np.float64])(x),)

        return ReferenceEvaluator(proto, new_ops=[Erf]).run(None, {"input": x})[0]
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


def reference(model, x):
    kinds = [(s["kind"], {"negative_slope": s["negative_slope"]} if s["kind"] == "leaky_relu" else {})
             for s in model._layer_specs()]
    kinds = [("identity", {}) if k == "dropout" else (k, kw) for k, kw in kinds]
    return RefSequential.from_state(kinds, model.state_dict())(x)


def inputs(n, width, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 2, (n, width))
    if n >= 4:
        x[0], x[1], x[2] = 30.0, -30.0, 0.0  # saturated sigmoid/tanh/softmax rows, and zeros
    return x.astype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("act", ACTIVATIONS, ids=ACT_IDS)
def test_every_layer_matches_predict_and_reference(act, dtype):
    model = fm.Sequential(fm.Linear(7, 9), act(), fm.Linear(9, 5), act(), seed=3, dtype=dtype)
    model.train()  # the export is eval mode whatever the model's mode
    proto = model.to_onnx()
    onnx.checker.check_model(proto, full_check=True)
    for n in (0, 1, 5, 256):  # the batch size is dynamic
        x = inputs(n, 7, dtype)
        got = run_onnx(proto, x)
        assert got.dtype == np.dtype(dtype) and got.shape == (n, 5)
        np.testing.assert_allclose(got, model.predict(x), **TOL[dtype])
        np.testing.assert_allclose(got, reference(model, x), rtol=1e-5 if dtype == "float32" else 1e-10,
                                   atol=1e-6 if dtype == "float32" else 1e-12)
    assert model.training  # exporting did not switch the model's mode


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("sizes", [(1, 1), (1, 2, 1), (17, 33, 1), (64, 255, 127, 10), (3, 65, 3)])
def test_edge_widths_and_no_bias(sizes, dtype):
    layers = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers += [fm.Linear(a, b, bias=i % 2 == 0), fm.Tanh()]
    model = fm.Sequential(*layers[:-1], seed=1, dtype=dtype)
    x = inputs(33, sizes[0], dtype, seed=2)
    np.testing.assert_allclose(run_onnx(model.to_onnx(), x), model.predict(x), **TOL[dtype])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_models_without_linear_take_any_width(dtype):
    for model in (fm.Sequential(fm.Softmax(), dtype=dtype), fm.Sequential(dtype=dtype),
                  fm.Sequential(fm.Dropout(0.2), fm.LeakyReLU(0.3), dtype=dtype)):
        proto = model.to_onnx()
        for width in (1, 6):
            x = inputs(4, width, dtype)
            np.testing.assert_allclose(run_onnx(proto, x), model.predict(x), **TOL[dtype])


@pytest.mark.parametrize("opset", [13, 17, 21])
def test_opsets(opset):
    model = fm.Sequential(fm.Linear(4, 8), fm.LeakyReLU(), fm.Linear(8, 8), fm.GELU(), fm.Linear(8, 3),
                          fm.Softmax(), seed=0)
    proto = model.to_onnx(opset=opset)
    assert [o.version for o in proto.opset_import] == [opset]
    x = inputs(9, 4, "float32")
    np.testing.assert_allclose(run_onnx(proto, x), model.predict(x), **TOL["float32"])


def test_graph_is_small_and_clean(tmp_path):
    model = fm.Sequential(fm.Linear(784, 256), fm.ReLU(), fm.Dropout(0.2), fm.Linear(256, 10), seed=0)
    path = tmp_path / "m.onnx"
    proto = fm.onnx.export(model, path)
    assert path.read_bytes() == proto.SerializeToString() == model.to_onnx().SerializeToString()
    assert onnx.load(str(path)) == proto
    g = proto.graph
    assert [n.op_type for n in g.node] == ["Gemm", "Relu", "Gemm"]
    assert all(a.name != "transB" or a.i == 1 for n in g.node for a in n.attribute)
    assert [(i.name, [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]) for i in g.input] \
        == [("input", ["batch", 784])]
    assert [(o.name, [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim]) for o in g.output] \
        == [("output", ["batch", 10])]
    weights = 4 * model.num_parameters()
    assert weights < path.stat().st_size < weights + 2000  # the weights and little else
    w = {t.name: onnx.numpy_helper.to_array(t) for t in g.initializer}
    np.testing.assert_array_equal(w[g.node[0].input[1]], model[0].weight.data)  # (out, in), bit-exact


NORMS = [fm.BatchNorm1d, lambda w: fm.BatchNorm1d(w, affine=False, momentum=None),
         lambda w: fm.BatchNorm1d(w, track_running_stats=False), fm.LayerNorm,
         lambda w: fm.LayerNorm(w, eps=1e-7, elementwise_affine=False), lambda w: fm.LayerNorm(w, bias=False),
         fm.RMSNorm, lambda w: fm.RMSNorm(w, eps=1e-3, elementwise_affine=False)]
NORM_IDS = ["batchnorm", "batchnorm-plain-cumulative", "batchnorm-batch-stats", "layernorm", "layernorm-plain",
            "layernorm-nobias", "rmsnorm", "rmsnorm-plain"]


def trained(model, steps=5, seed=0):
    """model after a few SGD steps on random data (so that running statistics and affine parameters are
    not their initial values), in eval mode."""
    rng = np.random.default_rng(seed)
    params = list(model.parameters())
    opt = fm.optim.SGD(params, lr=0.05) if params else None
    model.train()
    for _ in range(steps):
        x = rng.normal(1.5, 2, (16, model.in_features)).astype(model.dtype)
        if opt is None:  # nothing to train: a forward pass in training mode updates the running statistics
            model(x)
        else:
            model.train_step(x, rng.normal(size=model(x).shape).astype(model.dtype), fm.MSELoss(), opt)
    for name, b in model.named_buffers():
        if name.endswith("running_mean"):
            assert np.abs(b).min() > 0.0  # moved from the initial zeros
    return model.eval()


def norm_reference(layer, x):
    """The layer's eval-mode output in float64, from its definition."""
    eps = np.finfo(x.dtype).eps if getattr(layer, "eps", 0) is None else layer.eps  # RMSNorm's None: the dtype's
    x = x.astype(np.float64)
    w = getattr(layer, "weight", None)
    b = getattr(layer, "bias", None)
    if isinstance(layer, fm.BatchNorm1d):
        m, v = (layer.running_mean, layer.running_var) if layer.track_running_stats else (x.mean(0), x.var(0))
        y = (x - m) / np.sqrt(v + layer.eps)
    elif isinstance(layer, fm.LayerNorm):
        y = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + layer.eps)
    else:
        y = x / np.sqrt((x * x).mean(1, keepdims=True) + eps)
    y = y * w.data if w is not None else y
    return y + b.data if b is not None else y


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("opset", [13, 17, 18])
@pytest.mark.parametrize("make", NORMS, ids=NORM_IDS)
def test_normalization_layers(make, opset, dtype):
    model = trained(fm.Sequential(fm.Linear(7, 9), make(9), fm.Linear(9, 5), seed=4, dtype=dtype))
    proto = model.to_onnx(opset=opset)
    batch_stats = isinstance(model[1], fm.BatchNorm1d) and not model[1].track_running_stats
    for n in (2, 5, 256) if batch_stats else (0, 1, 5, 256):
        x = inputs(n, 7, dtype)
        got, want = run_onnx(proto, x), model.predict(x)
        assert got.dtype == np.dtype(dtype) and got.shape == (n, 5)
        np.testing.assert_allclose(got, want, rtol=TOL[dtype]["rtol"],
                                   atol=TOL[dtype]["rtol"] * np.abs(want).max(initial=1.0))
    alone = trained(fm.Sequential(make(9), seed=5, dtype=dtype))  # the layer on its own, against its definition
    x = inputs(33, 9, dtype, seed=1)
    want = norm_reference(alone[0], x)
    np.testing.assert_allclose(run_onnx(alone.to_onnx(opset=opset), x), want,
                               rtol=1e-5 if dtype == "float32" else 1e-10, atol=(1e-5 if dtype == "float32" else 1e-10)
                               * np.abs(want).max())


@pytest.mark.parametrize("opset", [13, 17])
def test_row_statistics_keep_the_spread_of_large_values(opset):
    """float32 rows near 1e3 with a spread of 1e-2: the graph computes the statistics in float64 as the engine does
    (in float32 the mean alone is off by 6e-5, the normalized values by 1e-2)."""
    model = fm.Sequential(fm.LayerNorm(8), fm.RMSNorm(8), fm.BatchNorm1d(8, track_running_stats=False), seed=0)
    x = (1000 + np.random.default_rng(0).normal(size=(16, 8)) * 0.01).astype(np.float32)
    np.testing.assert_allclose(run_onnx(model.to_onnx(opset=opset), x), model.predict(x), rtol=1e-5, atol=1e-5)


def tabular_resnet(dtype, seed=8):
    """Linear, two residual blocks x + Dropout(ReLU(BatchNorm(Linear(x)))) (one nesting a LayerNorm-RMSNorm
    block), Linear."""
    def block(*inner):
        return fm.Residual(fm.Linear(16, 16, bias=False), fm.BatchNorm1d(16), fm.ReLU(), fm.Dropout(0.1), *inner)

    return fm.Sequential(fm.Linear(10, 16), block(), block(fm.Residual(fm.LayerNorm(16), fm.Tanh(), fm.RMSNorm(16))),
                         fm.Linear(16, 4), seed=seed, dtype=dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("opset", [13, 18])
def test_residual_networks(opset, dtype):
    model = trained(tabular_resnet(dtype))
    proto = model.to_onnx(opset=opset)
    for n in (0, 1, 7, 300):
        x = inputs(n, 10, dtype, seed=n)
        want = model.predict(x)
        np.testing.assert_allclose(run_onnx(proto, x), want, rtol=TOL[dtype]["rtol"],
                                   atol=TOL[dtype]["rtol"] * np.abs(want).max(initial=1.0))
    # x + block(x) is not block(x): an empty block doubles its input, as torch's x + Sequential()(x)
    x = inputs(5, 3, dtype)
    np.testing.assert_allclose(run_onnx(fm.Sequential(fm.Residual(), dtype=dtype).to_onnx(), x), 2 * x)


# the activations of issue 10 (their classes may not be in this build yet): (class name, arguments)
MODERN = [("ELU", (0.7,)), ("CELU", (1.3,)), ("SELU", ()), ("SiLU", ()), ("Mish", ()), ("Softplus", (2.0, 5.0)),
          ("Softsign", ()), ("Hardtanh", (-0.5, 2.0)), ("ReLU6", ()), ("Hardswish", ()), ("Hardsigmoid", ()),
          ("PReLU", ()), ("PReLU", (9,)), ("LogSoftmax", ()), ("LogSigmoid", ()), ("GELU", ("tanh",)),
          ("AlphaDropout", (0.3,)), ("Flatten", ())]
MODERN_IDS = [f"{name}{''.join(map(str, args))}" for name, args in MODERN]


def modern(name, args):
    if not hasattr(fm, "SiLU"):  # GELU exists without approximate='tanh' before them
        pytest.skip(f"fm.{name}{args} is not in this build (the modern activations are not merged yet)")
    return getattr(fm, name)(*args)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name, args", MODERN, ids=MODERN_IDS)
def test_modern_activations(name, args, dtype):
    model = trained(fm.Sequential(fm.Linear(7, 9), modern(name, args), fm.Linear(9, 5), seed=6, dtype=dtype))
    proto = model.to_onnx()
    for n in (0, 1, 5, 256):
        x = inputs(n, 7, dtype) * 3
        want = model.predict(x)
        np.testing.assert_allclose(run_onnx(proto, x), want, rtol=TOL[dtype]["rtol"],
                                   atol=TOL[dtype]["rtol"] * np.abs(want).max(initial=1.0))
    # alone, at +-1000 and near 0: no overflow, the same values
    alone = fm.Sequential(modern(name, args), seed=6, dtype=dtype)
    x = np.array([[1000.0, -1000.0, 0.0, 1e-9, -1e-9, 30.0, -30.0, 2.5, -2.5]] * 2, dtype=dtype)
    got, want = run_onnx(alone.to_onnx(), x), alone.predict(x)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["rtol"] * np.abs(want).max())


def test_digits_model():
    ds = load_digits()
    X = ((ds.X - ds.X.mean(0)) / (ds.X.std(0) + 1e-9)).astype(np.float32)
    for dtype in ("float32", "float64"):
        model = fm.Sequential(fm.Linear(64, 32), fm.GELU(), fm.Linear(32, 10), seed=0, dtype=dtype)
        model.fit(X.astype(dtype), ds.y, fm.CrossEntropyLoss(), fm.optim.Adam(model.parameters(), lr=1e-2),
                  epochs=3, verbose=0)
        got, want = run_onnx(model.to_onnx(), X.astype(dtype)), model.predict(X.astype(dtype))
        # relative to the logits' scale: a logit near 0 is a difference of terms of that scale
        np.testing.assert_allclose(got, want, rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["rtol"] * np.abs(want).max())
        assert np.mean(np.argmax(got, 1) == ds.y) > 0.8


def test_scaling():
    model = fm.Sequential(fm.Linear(3, 4), fm.Tanh(), fm.Linear(4, 2), seed=0, dtype="float64")
    mean, std, ym, ys = np.array([1.0, -2.0, 3.0]), np.array([0.5, 2.0, 4.0]), np.array([10.0, -1.0]), 3.0
    x = inputs(6, 3, "float64")
    got = run_onnx(fm.onnx.to_model(model, input_scaling=(mean, std), output_scaling=(ym, ys)), x)
    np.testing.assert_allclose(got, model.predict((x - mean) / std) * ys + ym, **TOL["float64"])


def test_bad_arguments_raise_and_write_nothing(tmp_path):
    model = fm.Sequential(fm.Linear(3, 2), seed=0)
    path = tmp_path / "m.onnx"
    for opset in (12, 10 ** 6, 17.0, True, "17"):
        with pytest.raises(ValueError, match="opset"):
            fm.onnx.export(model, path, opset=opset)
    with pytest.raises(TypeError, match="Sequential"):
        fm.onnx.export(fm.Linear(3, 2), path)
    with pytest.raises(ValueError, match="input_scaling: mean must have 3 values"):
        fm.onnx.export(model, path, input_scaling=([0.0, 1.0], 1.0))
    with pytest.raises(ValueError, match="std contains 0"):
        fm.onnx.export(model, path, output_scaling=(0.0, [1.0, 0.0]))
    model[0].weight.data[0, 0] = np.nan
    with pytest.raises(ValueError, match="0.weight contains NaN"):
        fm.onnx.export(model, path)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- skl2onnx
def _skl():
    pytest.importorskip("sklearn")
    return pytest.importorskip("skl2onnx")


def _pipe(est, X, y):
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_iter reached
        return Pipeline([("scale", StandardScaler()), ("mlp", est)]).fit(X, y)


def _outputs(sess):
    return [(o.name, o.type) for o in sess.get_outputs()]


@pytest.mark.parametrize("target", ["multiclass", "binary", "strings", "multilabel"])
def test_skl2onnx_classifier_pipeline(target):
    s2o = _skl()
    from sklearn.neural_network import MLPClassifier as SkMLP

    ds = load_digits()
    X = ds.X.astype(np.float32)  # (ONNX Runtime's ZipMap takes float probabilities only)
    y = {"multiclass": ds.y, "binary": ds.y % 2, "strings": np.array(["cat", "dog", "emu"])[ds.y % 3],
         "multilabel": np.stack([ds.y % 2, ds.y % 3 == 0, ds.y > 6], 1).astype(int)}[target]
    pipe = _pipe(fm.MLPClassifier((16,), max_iter=15, random_state=0), X, y)
    sk_pipe = _pipe(SkMLP((16,), max_iter=2, random_state=0), X, y)
    want_label, want_proba = pipe.predict(X), pipe.predict_proba(X)
    for zipmap in (True, False, "columns"):
        if zipmap == "columns" and target == "multilabel":
            continue
        opts = {id(pipe[-1]): {"zipmap": zipmap}}
        sess = ort.InferenceSession(s2o.to_onnx(pipe, X[:1], options=opts).SerializeToString(),
                                    providers=["CPUExecutionProvider"])
        sk_sess = ort.InferenceSession(s2o.to_onnx(sk_pipe, X[:1], options={id(sk_pipe[-1]): {"zipmap": zipmap}})
                                       .SerializeToString(), providers=["CPUExecutionProvider"])
        assert _outputs(sess) == _outputs(sk_sess)  # the names and types of skl2onnx's own MLP converter
        got = sess.run(None, {sess.get_inputs()[0].name: X})
        np.testing.assert_array_equal(got[0], want_label)
        classes = range(y.shape[1]) if target == "multilabel" else pipe.classes_
        if zipmap is True:
            proba = np.array([[row[c] for c in classes] for row in got[1]])
        elif zipmap == "columns":
            proba = np.stack(got[1:], 1)
        else:
            proba = got[1]
        np.testing.assert_allclose(proba, want_proba, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("loss, outputs, dtype", [("squared_error", 1, "float32"), ("squared_error", 3, "float32"),
                                                  ("poisson", 1, "float32"), ("squared_error", 2, "float64")])
def test_skl2onnx_regressor_pipeline(loss, outputs, dtype):
    s2o = _skl()
    ds = load_digits()
    X = ds.X.astype(dtype)
    y = np.stack([ds.y * (k + 1.0) for k in range(outputs)], 1)
    pipe = _pipe(fm.MLPRegressor(loss=loss, hidden_layer_sizes=(16,), max_iter=15, random_state=0, dtype=dtype),
                 X, y if outputs > 1 else y[:, 0])
    sess = ort.InferenceSession(s2o.to_onnx(pipe, X[:1]).SerializeToString(), providers=["CPUExecutionProvider"])
    proto = {"float32": "tensor(float)", "float64": "tensor(double)"}[dtype]
    assert _outputs(sess) == [("variable", proto)]
    got = sess.run(None, {sess.get_inputs()[0].name: X})[0]
    want = pipe.predict(X).reshape(len(X), outputs)
    np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == "float32" else 1e-10, atol=1e-5 * np.abs(want).max())


# --------------------------------------------------------------------------- fastmlp export
def test_cli_export_onnx_keeps_the_scaling(tmp_path, monkeypatch, capsys):
    from fastmlp import cli

    monkeypatch.chdir(tmp_path)
    ds = load_digits()
    X = ds.X.astype(np.float64)
    np.savez("reg.npz", X=X, y=ds.y * 3.0 + 100.0)
    for data, task in ((None, "classify"), ("reg.npz", "regress")):
        argv = ["train", "-q", "--epochs", "2", "--no-plot", "--out", f"{task}.npz"]
        assert cli.main(argv + (["--data", data] if data else [])) == 0
        assert cli.main(["export", f"{task}.npz", "--format", "onnx", "--out", f"{task}.onnx"]) == 0
        assert f"wrote {task}.onnx" in capsys.readouterr().out
        model = fm.load(f"{task}.npz")
        ex = model._file_extra
        want = model.predict(((X - ex["scaler"]["mean"]) / ex["scaler"]["std"]).astype(np.float32))
        if task == "regress":
            want = want * ex["target_scaler"]["std"] + ex["target_scaler"]["mean"]
        got = run_onnx(onnx.load(f"{task}.onnx"), X.astype(np.float32))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    assert cli.main(["export", "classify.npz", "--format", "onnx", "--out", "x.onnx", "--opset", "5"]) == 2
    assert "opset must be an integer from 13" in capsys.readouterr().err
    assert cli.main(["export", "classify.npz", "--format", "onnx", "--out", "x.onnx", "--prefix", "p"]) == 2
    assert not (tmp_path / "x.onnx").exists()
