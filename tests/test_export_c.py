"""C export: the generated file compiles with `cc -O2 -std=c99` (warnings as errors) and, loaded with ctypes,
gives model.predict's outputs within float32 precision; `fastmlp export --format c`."""
import ctypes
import re
import shutil
import subprocess

import numpy as np
import pytest

import fastmlp as fm
from fastmlp.datasets import load_digits

CC = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler (cc) on this machine")
ACTIVATIONS = [fm.ReLU, lambda: fm.LeakyReLU(0.1), lambda: fm.LeakyReLU(1.7), fm.Sigmoid, fm.Tanh, fm.GELU,
               fm.Softmax, fm.Identity, lambda: fm.Dropout(0.5)]
ACT_IDS = ["relu", "leaky0.1", "leaky1.7", "sigmoid", "tanh", "gelu", "softmax", "identity", "dropout"]


def compile_c(src, tmp_path, name="m"):
    """Compile the file as the README says, then as a shared library; return (library, object file)."""
    flags = ["-O2", "-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror"]
    obj, lib = tmp_path / f"{name}.o", tmp_path / f"{name}.so"
    for cmd in ([CC, *flags, "-c", str(src), "-o", str(obj)],
                [CC, *flags, "-shared", "-fPIC", str(src), "-o", str(lib), "-lm"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
    return ctypes.CDLL(str(lib)), obj


def c_predict(lib, prefix, x, n_out):
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.full((x.shape[0], n_out), np.nan, dtype=np.float32)
    fn = getattr(lib, f"{prefix}_predict")
    fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    fn(x.ctypes.data, x.shape[0], y.ctypes.data)
    return y


def inputs(n, width, seed=0):
    x = np.random.default_rng(seed).normal(0, 2, (n, width)).astype(np.float32)
    if n >= 3:
        x[0], x[1], x[2] = 30.0, -30.0, 0.0
    return x


def check(model, tmp_path, prefix="fastmlp", n_out=None, **scaling):
    src = tmp_path / f"{prefix}.c"
    fm.export_c(model, src, prefix=prefix, **scaling)
    lib, _ = compile_c(src, tmp_path, prefix)
    n_in = model.in_features
    assert getattr(lib, f"{prefix}_in_features")() == n_in
    n_out = getattr(lib, f"{prefix}_out_features")()
    for n in (0, 1, 7):
        x = inputs(n, n_in, seed=n)
        got = c_predict(lib, prefix, x, n_out)
        xs = x if "input_scaling" not in scaling else (x - scaling["input_scaling"][0]) / scaling["input_scaling"][1]
        want = model.predict(xs.astype(model.dtype)).astype(np.float64)
        if "output_scaling" in scaling:
            want = want * scaling["output_scaling"][1] + scaling["output_scaling"][0]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(want).max(initial=0)))
    return src


@needs_cc
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("act", ACTIVATIONS, ids=ACT_IDS)
def test_every_layer(act, dtype, tmp_path):
    model = fm.Sequential(fm.Linear(7, 9), act(), fm.Linear(9, 5, bias=False), act(), seed=3, dtype=dtype)
    model.train()
    check(model, tmp_path)


@needs_cc
def test_edge_widths_scaling_and_prefix(tmp_path):
    check(fm.Sequential(fm.Linear(1, 1), seed=0), tmp_path, prefix="one")
    check(fm.Sequential(fm.Linear(3, 65), fm.Sigmoid(), fm.Linear(65, 1), seed=1), tmp_path, prefix="_Odd9",
          input_scaling=(np.array([1.0, -2.0, 3.0]), np.array([0.5, 2.0, 4.0])), output_scaling=(10.0, 3.0))


NORMS = [fm.BatchNorm1d, lambda w: fm.BatchNorm1d(w, affine=False, momentum=None), fm.LayerNorm,
         lambda w: fm.LayerNorm(w, eps=1e-7, elementwise_affine=False), lambda w: fm.LayerNorm(w, bias=False),
         fm.RMSNorm, lambda w: fm.RMSNorm(w, eps=1e-3, elementwise_affine=False)]
NORM_IDS = ["batchnorm", "batchnorm-plain-cumulative", "layernorm", "layernorm-plain", "layernorm-nobias", "rmsnorm",
            "rmsnorm-plain"]


def trained(model, steps=5, seed=0):
    """model after a few SGD steps on random data, so that running statistics and affine parameters are not
    their initial values."""
    rng = np.random.default_rng(seed)
    opt = fm.optim.SGD(model.parameters(), lr=0.05)
    model.train()
    for _ in range(steps):
        x = rng.normal(1.5, 2, (16, model.in_features)).astype(model.dtype)
        model.train_step(x, rng.normal(size=model(x).shape).astype(model.dtype), fm.MSELoss(), opt)
    for name, b in model.named_buffers():
        if name.endswith("running_mean"):
            assert np.abs(b).min() > 0.0  # moved from the initial zeros
    return model


@needs_cc
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("make", NORMS, ids=NORM_IDS)
def test_normalization_layers(make, dtype, tmp_path):
    src = check(trained(fm.Sequential(fm.Linear(7, 9), make(9), fm.Linear(9, 5), seed=4, dtype=dtype)), tmp_path)
    assert not re.search(r"\b(malloc|calloc|alloca)\b", src.read_text())


def tabular_resnet(dtype, seed=8):
    """Linear, two residual blocks x + Dropout(ReLU(BatchNorm(Linear(x)))) (one nesting a LayerNorm-RMSNorm
    block), Linear."""
    def block(*inner):
        return fm.Residual(fm.Linear(16, 16, bias=False), fm.BatchNorm1d(16), fm.ReLU(), fm.Dropout(0.1), *inner)

    return fm.Sequential(fm.Linear(10, 16), block(), block(fm.Residual(fm.LayerNorm(16), fm.Tanh(), fm.RMSNorm(16))),
                         fm.Linear(16, 4), seed=seed, dtype=dtype)


@needs_cc
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_residual_networks(dtype, tmp_path):
    src = check(trained(tabular_resnet(dtype)), tmp_path)
    assert src.read_text().count("skip") == 3 * 3  # a kept input row per block: declared, saved, added back
    check(fm.Sequential(fm.Linear(3, 3), fm.Residual(), seed=0, dtype=dtype), tmp_path, prefix="empty")  # 2x


def test_batch_statistics_in_eval_are_refused(tmp_path):
    model = fm.Sequential(fm.Linear(3, 4), fm.Residual(fm.BatchNorm1d(4, track_running_stats=False)), seed=0)
    with pytest.raises(ValueError, match=r"layer 1_0 \(BatchNorm1d\(track_running_stats=False\)\) normalizes "
                                         r"with the statistics of the whole batch.*the ONNX export can"):
        fm.export_c(model, tmp_path / "m.c")
    assert list(tmp_path.iterdir()) == []


# the activations of issue 10 (their classes may not be in this build yet): (class name, arguments)
MODERN = [("ELU", (0.7,)), ("CELU", (1.3,)), ("SELU", ()), ("SiLU", ()), ("Mish", ()), ("Softplus", (2.0, 5.0)),
          ("Softsign", ()), ("Hardtanh", (-0.5, 2.0)), ("ReLU6", ()), ("Hardswish", ()), ("Hardsigmoid", ()),
          ("PReLU", ()), ("PReLU", (9,)), ("LogSoftmax", ()), ("LogSigmoid", ()), ("GELU", ("tanh",)),
          ("AlphaDropout", (0.3,)), ("Flatten", ())]


@needs_cc
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name, args", MODERN, ids=[f"{n}{''.join(map(str, a))}" for n, a in MODERN])
def test_modern_activations(name, args, dtype, tmp_path):
    if not hasattr(fm, "SiLU"):  # GELU exists without approximate='tanh' before them
        pytest.skip(f"fm.{name}{args} is not in this build (the modern activations are not merged yet)")
    check(trained(fm.Sequential(fm.Linear(7, 9), getattr(fm, name)(*args), fm.Linear(9, 5), seed=6, dtype=dtype)),
          tmp_path)


@needs_cc
def test_weights_round_trip_exactly(tmp_path):
    model = fm.Sequential(fm.Linear(5, 4), seed=0)
    model[0].weight.data[0, :] = [3.0, -0.0, 1e-38, 3.4e38, np.float32(1) / 3]  # integral, -0, tiny, huge
    fm.export_c(model, tmp_path / "w.c")
    text = (tmp_path / "w.c").read_text()
    body = text[text.index("fastmlp_w0[20] = {") + 19:]
    vals = [float(v.rstrip("f")) for v in re.findall(r"[-+0-9.e]+f", body[:body.index("}")])]
    np.testing.assert_array_equal(np.array(vals, dtype=np.float32).reshape(5, 4).T, model[0].weight.data)
    f64 = fm.Sequential(fm.Linear(3, 2), seed=0, dtype="float64")
    fm.export_c(f64, tmp_path / "d.c")
    text = (tmp_path / "d.c").read_text()
    body = text[text.index("fastmlp_w0[6] = {") + 17:]
    vals = [float(v) for v in body[:body.index("}")].replace("\n", " ").split(",")]
    np.testing.assert_array_equal(np.array(vals).reshape(3, 2).T, f64[0].weight.data)
    assert "double buf0" in text


@needs_cc
def test_the_file_is_self_contained(tmp_path):
    model = fm.Sequential(fm.Linear(784, 256), fm.ReLU(), fm.Linear(256, 10), seed=0)
    src = check(model, tmp_path, prefix="mnist")
    text = src.read_text()
    assert re.findall(r"#include\s*<(\w+\.h)>", text) == ["math.h"]
    assert not re.search(r"\b(malloc|calloc|realloc|alloca|free)\b", text)
    assert "float buf0[784], buf1[784];" in text  # the scratch rows, on the stack
    _, obj = compile_c(src, tmp_path, "mnist2")
    nm = shutil.which("nm")
    if nm:  # the object defines the three functions and needs nothing beyond libm
        syms = subprocess.run([nm, str(obj)], capture_output=True, text=True).stdout
        assert {"mnist_predict", "mnist_in_features", "mnist_out_features"} <= set(re.findall(r" T (\w+)", syms))
        assert set(re.findall(r" U (\w+)", syms)) <= {"expf", "exp", "tanhf", "erff", "fabsf"}
    big = fm.Sequential(fm.Linear(3, 20000), seed=0)  # 160 KB of scratch: static, not the stack
    fm.export_c(big, tmp_path / "big.c")
    assert "static float buf0[20000]" in (tmp_path / "big.c").read_text()


def test_bad_arguments_raise_and_write_nothing(tmp_path):
    model = fm.Sequential(fm.Linear(3, 2), seed=0)
    for prefix in ("9x", "a-b", "", "a b", None, "ü"):
        with pytest.raises(ValueError, match="prefix must be a C identifier"):
            fm.export_c(model, tmp_path / "m.c", prefix=prefix)
    with pytest.raises(ValueError, match="no Linear layer"):
        fm.export_c(fm.Sequential(fm.ReLU()), tmp_path / "m.c")
    with pytest.raises(TypeError, match="Sequential"):
        fm.export_c(fm.ReLU(), tmp_path / "m.c")
    model[0].bias.data[1] = np.inf
    with pytest.raises(ValueError, match="0.bias contains NaN or infinity"):
        fm.export_c(model, tmp_path / "m.c")
    assert list(tmp_path.iterdir()) == []


@needs_cc
def test_cli_export_c_digits(tmp_path, monkeypatch, capsys):
    from fastmlp import cli

    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "-q", "--epochs", "2", "--no-plot"]) == 0
    assert cli.main(["export", "fastmlp-model.npz", "--format", "c", "--out", "digits.c", "--prefix", "digits"]) == 0
    assert "wrote digits.c" in capsys.readouterr().out
    lib, _ = compile_c(tmp_path / "digits.c", tmp_path)
    ds = load_digits()
    model = fm.load("fastmlp-model.npz")
    sc = model._file_extra["scaler"]
    want = model.predict(((ds.X - sc["mean"]) / sc["std"]).astype(np.float32))
    got = c_predict(lib, "digits", ds.X, 10)  # raw pixels: the file standardizes them
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    assert cli.main(["export", "fastmlp-model.npz", "--format", "c", "--out", "x.c", "--prefix", "9"]) == 2
    assert "prefix must be a C identifier" in capsys.readouterr().err
    assert cli.main(["export", "fastmlp-model.npz", "--format", "c", "--out", "x.c", "--opset", "13"]) == 2
    assert not (tmp_path / "x.c").exists()
