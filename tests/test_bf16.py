"""bfloat16 products (cpp/gemm_bf16.h): the rounding to bfloat16 and the operand layouts against NumPy
uint32 arithmetic, the emulation twin against a NumPy evaluation of the documented canonical order (bit
for bit) in each of the engine's three product forms, the AVX512_BF16 kernel and the emulation's SIMD
twins (AVX-512F, AVX2) against the twin (bit for bit), and all against a float64 product of the rounded
inputs. The AMX kernel sums in its own way (gemm_bf16.cpp): its bits against those of the same path on other
batches, positions and threads, its values against the float64 product."""
from __future__ import annotations

import numpy as np
import pytest

from fastmlp import _core

# the fast paths this CPU runs: VDPBF16PS, and the emulation's arithmetic on AVX-512F or AVX2 registers
FAST = [p for p in ("avx512bf16", "avx512f", "avx2") if _core.bf16_isa_available(p)]
needs_fast = pytest.mark.skipif(not FAST, reason="this CPU has neither AVX-512 nor AVX2 (the emulation path is tested alone)")
AMX = ["amx"] if _core.bf16_isa_available("amx") else []  # TDPBF16PS: its own bits
PATHS = ["emulation", "auto"] + FAST + AMX
CANONICAL = [p for p in PATHS if (_core.bf16_auto_path() if p == "auto" else p) != "amx"]  # the documented order's bits
OWN_BITS = [p for p in PATHS if p not in CANONICAL]
K_SIZES = [0, 1, 2, 3, 15, 16, 17, 31, 32, 33, 63, 64, 65, 255, 256, 257, 1023, 1024, 1025]
MN_SIZES = [(0, 3), (3, 0), (1, 1), (1, 17), (2, 16), (3, 15), (5, 4), (11, 31), (12, 32), (13, 33), (17, 63),
            (24, 64), (25, 65)]
FORMS = ["nt", "nn", "tn"]  # c = x w^T (forward), x w (dx), x^T w (dw)
NR = 32  # the kernel's panel width (kBf16NR)
FLT_MIN = np.float32(2.0**-126)


def round_bf16(x):
    """float32 -> bfloat16 bits (uint16): round to nearest even by uint32 arithmetic; float32 denormals to
    a zero of their sign; NaN quiet; as VCVTNEPS2BF16."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32)
    rounded = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    sign = (u >> np.uint32(16)) & np.uint32(0x8000)
    nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    out = np.where(nan, (u >> np.uint32(16)) | np.uint32(0x40), rounded)
    out = np.where((u & np.uint32(0x7F800000)) == 0, sign, out)
    return out.astype(np.uint16)


def from_bf16(h):
    return (h.astype(np.uint32) << np.uint32(16)).view(np.float32)


def pairs_of(n):
    return (n + 1) // 2


def even_rows(h):
    """h (rows, cols) with a zero row appended when rows is odd"""
    return np.vstack([h, np.zeros((h.shape[0] % 2, h.shape[1]), h.dtype)])


def words(lo, hi):
    return lo.astype(np.uint32) | (hi.astype(np.uint32) << np.uint32(16))


def ref_layout(x, layout):
    """the layouts of gemm_bf16.h in NumPy: words of two bfloat16, the even k in the low half"""
    h = round_bf16(x).reshape(x.shape)
    if layout in ("rows", "panels_of_rows"):
        t = even_rows(h.T)  # (2 pairs(cols), rows)
        w = words(t[0::2], t[1::2]).T  # (rows, pairs(cols))
        if layout == "rows":
            return w
        pairs = w.T  # the pairs layout of x^T
    else:
        e = even_rows(h)
        pairs = words(e[0::2], e[1::2])  # (pairs(rows), cols)
        if layout == "pairs":
            return pairs
    P, n = pairs.shape
    q = (n + NR - 1) // NR
    wide = np.zeros((P, q * NR), np.uint32)
    wide[:, :n] = pairs
    return wide.reshape(P, q, NR).transpose(1, 0, 2)


def bf16_values(x):
    """x float32 -> its bfloat16 values as float64"""
    return from_bf16(round_bf16(x)).reshape(x.shape).astype(np.float64)


def flush(v):
    """a float32 denormal to a zero of its sign (VDPBF16PS's FTZ)."""
    return np.where(np.abs(v) < FLT_MIN, np.copysign(np.float32(0), v), v).astype(np.float32)


def canonical(x, w, b=None):
    """y = bf16(x) bf16(w)^T (+ b) in the documented order (gemm_bf16.h): per k pair, the odd element's
    product then the even's, each one fma. The product of two bfloat16 values is exact in float64 and, for
    the data used (all magnitudes in [2^-4, 4] or zero, k < 2^11), so is the float64 sum; its rounding to
    float32 is then the fma's single rounding."""
    a, c = even_rows(bf16_values(x).T).T, even_rows(bf16_values(w).T).T  # k padded to even with +0
    s = np.zeros((x.shape[0], w.shape[0]), np.float32)
    for p in range(pairs_of(x.shape[1])):
        for k in (2 * p + 1, 2 * p):
            s = flush((s.astype(np.float64) + a[:, k, None] * c[None, :, k]).astype(np.float32))
    return s if b is None else s + b


def product(x, w, b, path, threads, form):
    """c = x w^T through the hook's operand layouts of `form` (the same values, transposed as needed)"""
    if form == "nt":
        return _core.gemm_bf16(x, w, b, path, threads, "nt")
    if form == "nn":
        return _core.gemm_bf16(x, np.ascontiguousarray(w.T), b, path, threads, "nn")
    return _core.gemm_bf16(np.ascontiguousarray(x.T), np.ascontiguousarray(w.T), b, path, threads, "tn")


def data(rng, *shape):
    """normal values with magnitudes below 2^-4 set to zero and above 4 clipped (see canonical)"""
    v = rng.normal(size=shape)
    v = np.where(np.abs(v) < 2.0**-4, 0.0, np.clip(v, -4, 4))
    return v.astype(np.float32)


def same_bits(a, b):
    assert a.shape == b.shape and a.dtype == b.dtype == np.float32
    nan = np.isnan(a)
    assert np.array_equal(nan, np.isnan(b))
    return bool(np.array_equal(a.view(np.uint32)[~nan], b.view(np.uint32)[~nan]))


SPECIAL = np.array([0, 0x80000000, 0x00000001, 0x807FFFFF, 0x00800000, 0x7F800000, 0xFF800000, 0x7FC00000,
                    0x7F800001, 0xFF800001, 0x7F7FFFFF, 0xFF7FFFFF, 0x3F808000, 0x3F818000, 0x3F808001,
                    0x3F807FFF, 0x7F7F8000], np.uint32)


@pytest.mark.parametrize("path", PATHS)
def test_rounding_matches_numpy(path):
    """every conversion (VCVTNE2PS2BF16 and VCVTNEPS2BF16 on the hardware path) rounds as to_bf16"""
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2**32, size=199_966, dtype=np.uint64).astype(np.uint32)
    x = np.concatenate([bits, SPECIAL, SPECIAL[::-1]]).view(np.float32)
    got = _core.to_bf16(x.reshape(-1, 2), "rows", path)  # word = (x[2i], x[2i + 1])
    assert got.shape == (x.size // 2, 1) and got.dtype == np.uint32
    h = round_bf16(x)
    assert np.array_equal(got[:, 0], words(h[0::2], h[1::2]))
    for layout in ("rows", "pairs", "panels", "panels_of_rows"):
        assert np.array_equal(_core.to_bf16(x.reshape(-1, 50), layout, path), ref_layout(x.reshape(-1, 50), layout))
    # ties to even, overflow to inf, NaN stays NaN, denormals to signed zero
    v = from_bf16(round_bf16(SPECIAL.view(np.float32)))
    assert v[0] == 0 and v[2] == 0 and np.signbit(v[3]) and v[3] == 0
    assert np.isinf(v[16]) and np.isnan(v[8]) and np.isnan(v[9])
    assert from_bf16(round_bf16(np.float32([1.00390625, 1.01171875]))).tolist() == [1.0, 1.015625]


@pytest.mark.parametrize("layout", ["rows", "pairs", "panels", "panels_of_rows"])
@pytest.mark.parametrize("rows,cols", [(0, 5), (5, 0), (1, 1), (2, 2), (3, 31), (33, 2), (40, 65), (17, 32),
                                       (64, 33), (150, 97), (300, 250), (301, 251)])  # the last two: on 2 threads
def test_layouts(layout, rows, cols):
    x = np.random.default_rng(rows * 1000 + cols).normal(size=(rows, cols)).astype(np.float32)
    want = ref_layout(x, layout)
    for path in PATHS:
        for threads in (1, 2):
            got = _core.to_bf16(x, layout, path, threads)
            assert got.shape == want.shape and np.array_equal(got, want), (path, threads)


@pytest.mark.parametrize("k", K_SIZES)
@pytest.mark.parametrize("mn", MN_SIZES)
def test_emulation_is_the_canonical_order(k, mn):
    m, n = mn
    rng = np.random.default_rng(k * 100 + m * 10 + n)
    x, w, b = data(rng, m, k), data(rng, n, k), data(rng, n)
    ref = bf16_values(x) @ bf16_values(w).T
    scale = np.abs(bf16_values(x)) @ np.abs(bf16_values(w)).T
    for bias in (None, b):
        want = canonical(x, w, bias)
        for path in CANONICAL:
            for form in FORMS:
                assert same_bits(product(x, w, bias, path, 1, form), want), (path, form)
        for path in OWN_BITS:  # within float32 accumulation error of the exact sum
            for form in FORMS:
                got = product(x, w, bias, path, 1, form)
                assert np.all(np.abs(got - (ref if bias is None else ref + b)) <= 1e-5 * (scale + np.abs(b))), (path, form)


@pytest.mark.parametrize("k", [1, 33, 300, 1025])
def test_close_to_float64_product(k):
    """Any normal data: within float32 accumulation error of the exact product of the rounded inputs."""
    rng = np.random.default_rng(k)
    x = (rng.normal(size=(9, k)) * np.exp(rng.normal(size=(9, k)))).astype(np.float32)
    w = rng.normal(size=(7, k)).astype(np.float32)
    ref = bf16_values(x) @ bf16_values(w).T
    scale = np.abs(bf16_values(x)) @ np.abs(bf16_values(w)).T
    for path in PATHS:
        got = _core.gemm_bf16(x, w, None, path, 1)
        assert np.all(np.abs(got - ref) <= 1e-5 * scale + 1e-30), path
    # and the rounding to bfloat16 matters: far from the float32 product
    assert not np.allclose(x.astype(np.float64) @ w.T.astype(np.float64), ref, rtol=1e-5, atol=0)


def test_flush_to_zero_of_denormal_results():
    """products below float32's normal range give zero (FTZ), where float32 would keep a denormal"""
    x = np.float32([[2.0**-100, 2.0**-100, 1.0]])
    w = np.float32([[2.0**-30, -(2.0**-30), 0.0]])
    for path in PATHS:
        for form in FORMS:
            y = product(x, w, None, path, 1, form)
            assert y[0, 0] == 0 and same_bits(y, canonical(x, w))
    assert (np.float32(2.0**-100) * np.float32(2.0**-30)) != 0  # float32 itself would not flush


@pytest.mark.parametrize("t", range(-118, -104))
def test_flush_decided_by_the_exponents(t):
    """The AVX2 path leaves out the flushing when the smallest exponents of the operands' nonzero values
    prove no sum can be denormal (gemm_bf16.cpp, flush_free): e(x) + e(w) >= -112 unbiased. A cancellation
    at each side of that bound: x[1] w[1] + x[0] w[0] = -2^t (1 + 2^-6) + 2^t (1 + 2^-7)^2 = 2^(t - 14),
    the smallest multiple the proof allows, kept when normal and flushed to +0 when not."""
    ex, ew = t // 2, t - t // 2
    x = np.float32([[2.0**ex * (1 + 2.0**-7), -(2.0**ex) * (1 + 2.0**-6)]])
    w = np.float32([[2.0**ew * (1 + 2.0**-7), 2.0**ew]] * 3)
    want = np.float32(2.0 ** (t - 14)) if t - 14 >= -126 else np.float32(0)
    for path in PATHS:
        for form in FORMS:
            y = product(np.repeat(x, 5, axis=0), w, None, path, 1, form)
            assert same_bits(y, np.full((5, 3), want, np.float32)), (path, form, y[0, 0], want)


@needs_fast
@pytest.mark.parametrize("scale", [1.0, 1e-20, 1e-34, 1e-36, 1e19, 1e33])  # 1e-34..: denormal sums flushed
def test_hardware_equals_emulation(scale):
    """random data over the whole float32 range, with tiny, huge, zero, inf and NaN values and
    cancellations: the same bits on both paths and in every form (NaN: any NaN)"""
    rng = np.random.default_rng(int(np.log10(scale) + 40))
    for m, n, k in [(7, 9, 1), (13, 5, 31), (6, 17, 64), (25, 11, 333), (3, 4, 1500), (30, 70, 130)]:
        x = (rng.normal(size=(m, k)) * scale * np.exp(rng.normal(size=(m, k)) * 3)).astype(np.float32)
        w = (rng.normal(size=(n, k)) * np.exp(rng.normal(size=(n, k)) * 3)).astype(np.float32)
        x[rng.random(x.shape) < 0.05] = 0
        h = k // 2  # exact and near cancellations in the first rows: x[2i+1] w[2i+1] = -x[2i] w[2i] (1 + d)
        x[:2, 1 : 2 * h : 2] = x[:2, 0 : 2 * h : 2]
        w[:, 1 : 2 * h : 2] = -w[:, 0 : 2 * h : 2] * np.float32(1 + 2.0**-8) ** rng.integers(0, 2, size=(n, h))
        if k > 10:
            x[0, 3], w[1, 5], x[2, 4] = np.inf, -np.inf, np.nan
        b = rng.normal(size=n).astype(np.float32)
        with np.errstate(all="ignore"):
            want = _core.gemm_bf16(x, w, b, "emulation", 1)
            for form in FORMS:
                for path in FAST:
                    assert same_bits(product(x, w, b, path, 2, form), want), (form, path)


@needs_fast
@pytest.mark.parametrize("k", [1, 31, 32, 33, 300])  # AMX: k pairs < 16, = 16, a step and a partial one
@pytest.mark.parametrize("path", FAST + AMX)
def test_hardware_threads_and_batch_do_not_change_bits(path, k):
    rng = np.random.default_rng(5)
    x, w = data(rng, 203, k), data(rng, 70, k)
    for form in FORMS:
        one = product(x, w, None, path, 1, form)
        assert same_bits(product(x, w, None, path, 2, form), one)
        assert same_bits(product(x[5:6], w, None, path, 1, form), one[5:6])
        assert same_bits(product(x[7:40], w[3:50], None, path, 2, form), one[7:40, 3:50])


@pytest.mark.skipif(not AMX, reason="this CPU has no AMX (or Linux does not grant its tile state)")
@pytest.mark.parametrize("scale", [1.0, 1e-20, 1e-36, 1e33])
def test_amx_special_values(scale):
    """the data of test_hardware_equals_emulation on AMX: where no sum of the finite products can overflow,
    inf and NaN where the canonical order has them; every finite value within float32 accumulation error of
    the float64 product (flushed ones included)"""
    rng = np.random.default_rng(int(np.log10(scale) + 40))
    for m, n, k in [(7, 9, 1), (13, 5, 31), (6, 17, 64), (25, 11, 333), (3, 4, 1500), (40, 70, 130)]:
        x = (rng.normal(size=(m, k)) * scale * np.exp(rng.normal(size=(m, k)) * 3)).astype(np.float32)
        w = (rng.normal(size=(n, k)) * np.exp(rng.normal(size=(n, k)) * 3)).astype(np.float32)
        x[rng.random(x.shape) < 0.05] = 0
        if k > 10:
            x[0, 3], w[1, 5], x[2, 4] = np.inf, -np.inf, np.nan
        with np.errstate(all="ignore"):
            want = _core.gemm_bf16(x, w, None, "emulation", 1)
            ref = bf16_values(x) @ bf16_values(w).T
            finite_part = np.nan_to_num(np.abs(bf16_values(x)), posinf=0) @ np.nan_to_num(np.abs(bf16_values(w)), posinf=0).T
            bound = 1e-5 * finite_part + 2.0**-126
        safe = finite_part < 2.0**127
        for form in FORMS:
            got = product(x, w, None, "amx", 2, form)
            assert np.array_equal(np.isnan(got) & safe, np.isnan(want) & safe), form
            assert np.array_equal(got[np.isinf(want) & safe], want[np.isinf(want) & safe]), form
            fin = np.isfinite(got) & np.isfinite(ref)
            assert np.all(np.abs(got[fin] - ref[fin]) <= bound[fin]), form


@pytest.mark.skipif(not AMX, reason="this CPU has no AMX (or Linux does not grant its tile state)")
def test_amx_in_a_forked_child_and_other_threads():
    """the tile state's permission is the process's: a forked child and new threads run the kernel too"""
    import os
    import threading

    rng = np.random.default_rng(9)
    x, w = data(rng, 70, 100), data(rng, 40, 100)
    want = product(x, w, None, "amx", 1, "nt")
    got = []
    t = threading.Thread(target=lambda: got.append(product(x, w, None, "amx", 2, "tn")))
    t.start()
    t.join()
    assert same_bits(got[0], want)
    r, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report whether its bits are the parent's
        try:
            os.write(wfd, b"1" if same_bits(product(x, w, None, "amx", 2, "nt"), want) else b"0")
        finally:
            os._exit(0)
    os.close(wfd)
    _, status = os.waitpid(pid, 0)
    assert os.read(r, 1) == b"1" and status == 0
    os.close(r)


def _with_bf16_isa(value, code):
    """code run by a fresh interpreter with FASTMLP_BF16_ISA=value (the engine reads it once)"""
    import os
    import subprocess
    import sys

    env = dict(os.environ, FASTMLP_BF16_ISA=value)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("path", ["emulation"] + FAST)
def test_environment_chooses_the_path(path):
    """FASTMLP_BF16_ISA picks auto's path: a canonical one gives the canonical bits (on an AMX machine too)"""
    r = _with_bf16_isa(path, f"""
import numpy as np, fastmlp as fm
from fastmlp import _core
assert _core.bf16_auto_path() == {path!r}, _core.bf16_auto_path()
m = fm.Sequential(fm.Linear(40, 33), fm.ReLU(), fm.Linear(33, 5), seed=1)
x = np.random.default_rng(0).normal(size=(70, 40)).astype(np.float32)
W1, b1, W2, b2 = [p.data for p in m.parameters()]
h = np.maximum(_core.gemm_bf16(x, W1, b1, "emulation", 1), np.float32(0))
want = _core.gemm_bf16(h, W2, b2, "emulation", 1)
assert np.array_equal(m.predict(x, precision="bfloat16").view(np.uint32), want.view(np.uint32))
""")
    assert r.returncode == 0, r.stderr


def test_environment_naming_no_path_fails_cleanly():
    """a bad FASTMLP_BF16_ISA: bfloat16 calls raise ValueError saying so and change nothing; float32 works"""
    r = _with_bf16_isa("avx9000", """
import numpy as np, fastmlp as fm
m = fm.Sequential(fm.Linear(8, 4), seed=0)
x = np.ones((16, 8), np.float32)
y = np.arange(16) % 4
before = [p.data.copy() for p in m.parameters()]
opt = fm.optim.SGD(m.parameters(), lr=0.1)
for call in (lambda: m.fit(x, y, fm.CrossEntropyLoss(), opt, epochs=1, verbose=0, precision="bfloat16"),
             lambda: m.predict(x, precision="bfloat16")):
    try:
        call()
    except ValueError as e:
        assert "FASTMLP_BF16_ISA must be" in str(e) and "avx9000" in str(e), e
    else:
        raise AssertionError("no error")
assert all(np.array_equal(a, p.data) for a, p in zip(before, m.parameters()))
m.fit(x, y, fm.CrossEntropyLoss(), opt, epochs=1, verbose=0)
assert not all(np.array_equal(a, p.data) for a, p in zip(before, m.parameters()))
""")
    assert r.returncode == 0, r.stderr


def test_bad_arguments():
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="isa must be"):
        _core.gemm_bf16(x, x, None, "bogus", 1)
    with pytest.raises(ValueError, match="to sum over"):
        _core.gemm_bf16(x, np.ones((2, 4), np.float32), None, "auto", 1)
    with pytest.raises(ValueError, match="form must be"):
        _core.gemm_bf16(x, x, None, "auto", 1, "tt")
    with pytest.raises(ValueError, match="layout must be"):
        _core.to_bf16(x, "columns")
    with pytest.raises(TypeError, match="float32"):
        _core.gemm_bf16(x.astype(np.float64), x, None, "auto", 1)


# ---------------------------------------------------------------- models: precision='bfloat16'
import fastmlp as fm  # noqa: E402
from fastmlp.datasets import load_digits  # noqa: E402


def mlp(n_in=20, hidden=37, n_out=5, seed=0, dtype="float32"):
    return fm.Sequential(fm.Linear(n_in, hidden), fm.ReLU(), fm.Linear(hidden, n_out), seed=seed, dtype=dtype)


def weights(model):
    return [p.data.copy() for p in model.parameters()]  # W1, b1, W2, b2


def bf16_forward(x, W1, b1, W2, b2):
    """the engine's bfloat16 forward from the product kernel (checked above) and NumPy float32 work"""
    h = np.maximum(_core.gemm_bf16(x, W1, b1, "auto", 1), np.float32(0))
    return h, _core.gemm_bf16(h, W2, b2, "auto", 1)


@pytest.mark.parametrize("B", [1, 2, 33, 100])
def test_predict_forward_and_evaluate(B):
    model = mlp()
    x = np.random.default_rng(B).normal(size=(B, 20)).astype(np.float32)
    want = bf16_forward(x, *weights(model))[1]
    assert same_bits(model.predict(x, precision="bfloat16"), want)
    assert same_bits(model.predict(x, batch_size=7, precision="bfloat16"), want)  # rows independent of the chunk
    assert same_bits(model(x, precision="bfloat16"), want)
    f32 = model.predict(x)
    assert not same_bits(f32, want) and np.allclose(f32, want, rtol=0.05, atol=0.05)
    assert same_bits(model.predict(x, precision="float32"), f32)
    y = np.arange(B) % 5
    loss = fm.CrossEntropyLoss()
    assert model.evaluate(x, y, loss, precision="bfloat16")["loss"] == pytest.approx(float(loss(want, y)), rel=1e-6)


def test_first_layer_against_float64_reference():
    rng = np.random.default_rng(3)
    model = fm.Sequential(fm.Linear(300, 40), seed=1, dtype="float32")
    x = (rng.normal(size=(50, 300)) * 3).astype(np.float32)
    W, b = weights(model)
    ref = bf16_values(x) @ bf16_values(W).T + b
    scale = np.abs(bf16_values(x)) @ np.abs(bf16_values(W)).T + np.abs(b)
    assert np.all(np.abs(model.predict(x, precision="bfloat16") - ref) <= 1e-5 * scale)


def test_backward_and_train_step():
    """gradients of the bfloat16 products: dW = bf16(dy)^T bf16(x), dx = bf16(dy) bf16(W), db and the
    element-wise work in float32; then an SGD step in float32"""
    rng = np.random.default_rng(7)
    model = mlp()
    x = rng.normal(size=(45, 20)).astype(np.float32)
    g = rng.normal(size=(45, 5)).astype(np.float32)
    W1, b1, W2, b2 = weights(model)
    h, out = bf16_forward(x, W1, b1, W2, b2)
    assert same_bits(model.forward(x, precision="bfloat16"), out)
    model.zero_grad()
    dx = model.backward(g)
    dh = _core.gemm_bf16(g, np.ascontiguousarray(W2.T), None, "auto", 1) * (h > 0)
    want = [_core.gemm_bf16(np.ascontiguousarray(dh.T), np.ascontiguousarray(x.T), None, "auto", 1), _column_sums(dh),
            _core.gemm_bf16(np.ascontiguousarray(g.T), np.ascontiguousarray(h.T), None, "auto", 1), _column_sums(g)]
    for p, w in zip(model.parameters(), want):
        assert same_bits(p.grad, w), p.name
    assert same_bits(dx, _core.gemm_bf16(dh.astype(np.float32), np.ascontiguousarray(W1.T), None, "auto", 1))
    # train_step: the same gradients (of the mean loss) with a float32 SGD step
    check_train_step(model, x, rng.integers(0, 5, size=45))


def check_train_step(model, x, y):
    """train_step's float32 SGD step is lr times the bfloat16 products' gradients of the mean loss"""
    B = x.shape[0]
    W1, b1, W2, b2 = weights(model)
    h, out = bf16_forward(x, W1, b1, W2, b2)
    opt = fm.optim.SGD(model.parameters(), lr=0.1)
    before = weights(model)
    model.train_step(x, y, fm.CrossEntropyLoss(), opt, precision="bfloat16")
    p_out = np.exp(out - out.max(1, keepdims=True))
    p_out /= p_out.sum(1, keepdims=True)
    p_out[np.arange(B), y] -= 1
    d = (p_out / B).astype(np.float32)
    # every parameter's step (train_step converts the weights once for the batch; forward and backward
    # converted them themselves): dW2, db2, then dx of layer 2 through the ReLU to dW1, db1
    dW2 = _core.gemm_bf16(np.ascontiguousarray(d.T), np.ascontiguousarray(h.T), None, "auto", 1)
    dh2 = _core.gemm_bf16(d, np.ascontiguousarray(W2.T), None, "auto", 1) * (h > 0)
    dW1 = _core.gemm_bf16(np.ascontiguousarray(dh2.T), np.ascontiguousarray(x.T), None, "auto", 1)
    for i, g in ((0, dW1), (1, _column_sums(dh2)), (2, dW2), (3, _column_sums(d))):
        step = before[i] - list(model.parameters())[i].data
        assert np.abs(step - 0.1 * g).max() <= 1e-3 * np.abs(0.1 * g).max(), i


@pytest.mark.parametrize("B", [64, 130, 255, 257])
def test_train_step_of_a_split_batch_with_a_deferred_gradient(B):
    # chunks of the batch (even first rows), W1's gradient (66,000 elements) deferred: one bfloat16 product
    # over the whole batch from the rows the chunks kept as pairs; W2's from the chunks' sum
    from fastmlp import training
    model = mlp(hidden=3300)
    assert training.batch_chunks(model, B) == 2 and model._core.chunked_params == model._core.n_params - 66000
    assert model._core.defers_grads(B) == (B < 256)  # chunks under 128 rows
    rng = np.random.default_rng(B)
    check_train_step(model, rng.normal(size=(B, 20)).astype(np.float32), rng.integers(0, 5, size=B))


def _column_sums(d):
    acc = np.zeros(d.shape[1], np.float32)
    for r in d:  # row by row in float32, as the engine
        acc += r
    return acc


def test_fit_digits_accuracy():
    X, y = load_digits()
    X = X / np.float32(16)
    Xtr, ytr, Xte, yte = X[:1400], y[:1400], X[1400:], y[1400:]
    acc = {}
    for precision in ("float32", "bfloat16"):
        model = fm.Sequential(fm.Linear(64, 128), fm.ReLU(), fm.Linear(128, 10), seed=3, dtype="float32")
        opt = fm.optim.Adam(model.parameters(), lr=3e-3)
        hist = model.fit(Xtr, ytr, fm.CrossEntropyLoss(), opt, epochs=15, batch_size=64, verbose=0,
                         precision=precision)
        assert np.isfinite(hist.history["loss"]).all()
        acc[precision] = float(np.mean(model.predict(Xte, precision=precision).argmax(1) == yte))
    assert acc["float32"] > 0.85
    assert abs(acc["bfloat16"] - acc["float32"]) <= 0.005 + 1e-9, acc


def test_fit_bfloat16_differs_from_float32_and_is_reproducible():
    X, y = load_digits()
    X = X[:300] / np.float32(16)
    runs = []
    for precision in ("bfloat16", "bfloat16", "float32"):
        model = fm.Sequential(fm.Linear(64, 32), fm.Tanh(), fm.Linear(32, 10), seed=1, dtype="float32")
        opt = fm.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        model.fit(X, y[:300], fm.CrossEntropyLoss(), opt, epochs=2, batch_size=32, verbose=0, precision=precision)
        runs.append(np.concatenate([p.data.ravel() for p in model.parameters()]))
    assert same_bits(runs[0], runs[1]) and not same_bits(runs[0], runs[2])


@pytest.mark.parametrize("bad", ["bf16", "float16", "", None, 16, "BFLOAT16"])
def test_bad_precision_raises(bad):
    model = mlp()
    x = np.ones((3, 20), np.float32)
    before = weights(model)
    opt = fm.optim.SGD(model.parameters(), lr=0.1)
    for call in (lambda: model.predict(x, precision=bad), lambda: model(x, precision=bad),
                 lambda: model.evaluate(x, [0, 1, 2], fm.CrossEntropyLoss(), precision=bad),
                 lambda: model.train_step(x, [0, 1, 2], fm.CrossEntropyLoss(), opt, precision=bad),
                 lambda: model.fit(x, [0, 1, 2], fm.CrossEntropyLoss(), opt, verbose=0, precision=bad)):
        with pytest.raises(ValueError, match="precision must be 'float32' or 'bfloat16'"):
            call()
    assert all(same_bits(a, b) for a, b in zip(before, weights(model)))


def test_float64_model_refuses_bfloat16():
    model = mlp(dtype="float64")
    x = np.ones((3, 20))
    opt = fm.optim.SGD(model.parameters(), lr=0.1)
    before = weights(model)
    for call in (lambda: model.predict(x, precision="bfloat16"),
                 lambda: model.fit(x, [0, 1, 2], fm.CrossEntropyLoss(), opt, verbose=0, precision="bfloat16"),
                 lambda: model.train_step(x, [0, 1, 2], fm.CrossEntropyLoss(), opt, precision="bfloat16")):
        with pytest.raises(ValueError, match="needs a float32 model"):
            call()
    assert all(np.array_equal(a, b) for a, b in zip(before, weights(model)))
    model.predict(x, precision="float32")  # the default: the model's own dtype


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_estimators_precision():
    X, y = load_digits()
    X = X[:600] / np.float32(16)
    y = y[:600]
    kw = dict(hidden_layer_sizes=(32,), max_iter=30, random_state=0)
    f32 = fm.MLPClassifier(**kw).fit(X, y)
    bf = fm.MLPClassifier(precision="bfloat16", **kw).fit(X, y)
    assert bf.get_params()["precision"] == "bfloat16"
    assert not np.array_equal(f32.coefs_[0], bf.coefs_[0])
    assert abs(f32.score(X, y) - bf.score(X, y)) <= 0.02
    # predict uses the bfloat16 products
    out = bf._model.predict(X, precision="bfloat16")
    assert not same_bits(out, bf._model.predict(X))
    assert np.array_equal(bf.predict(X), bf._model.predict(X, precision="bfloat16").argmax(1))
    r = fm.MLPRegressor(precision="bfloat16", solver="lbfgs", max_iter=20, **{k: kw[k] for k in ("hidden_layer_sizes",
                                                                                                "random_state")})
    r.fit(X, X[:, 10])
    assert np.isfinite(r.loss_)
    with pytest.raises(ValueError, match="precision"):
        fm.MLPClassifier(precision="half").fit(X, y)
    with pytest.raises(ValueError, match="needs dtype='float32'"):
        fm.MLPClassifier(precision="bfloat16", dtype="float64").fit(X, y)
