"""The Linear forward product of cpp/gemm.h: every kernel path (the inner-product
kernels for few rows, the packed outer-product kernel for many) gives the bits of
the scalar reference twin, the twin computes the documented order (checked
against an exact rational evaluation) and is accurate (against long-double
NumPy), and a row's result does not depend on its position, the batch size,
the number of threads or concurrent calls."""
from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
import threading
from fractions import Fraction

import numpy as np
import pytest

import fastmlp as fm
from fastmlp import _core

DTYPES = [np.float32, np.float64]
FAST = [isa for isa in ("avx512", "avx2") if _core.gemm_isa_available(isa)] + ["auto"]
SIZES = [0, 1, 2, 3, 5, 15, 16, 17, 31, 32, 33, 63, 64, 65, 255, 256, 257, 784, 1023, 1024, 1025]
LANES = {np.float32: 8, np.float64: 8}


def dense(x, w, b=None, isa="auto", threads=1):
    f = _core.dense_forward32 if x.dtype == np.float32 else _core.dense_forward64
    return f(x, w, b, isa, threads)


def same_bits(a, b):
    """Equal bit patterns, except that any NaN matches any NaN (FMA forms may pick another NaN's payload)."""
    assert a.shape == b.shape and a.dtype == b.dtype
    nan = np.isnan(a)
    assert np.array_equal(nan, np.isnan(b))
    u = f"u{a.dtype.itemsize}"
    return bool(np.array_equal(a.view(u)[~nan], b.view(u)[~nan]))


def mixed_shapes(limit=3_000_000):
    """(B, in, out) triples covering every edge size in each position, mixed with the others."""
    n = len(SIZES)
    out = []
    for i, s in enumerate(SIZES):
        for a, c in ((7, 13), (3, 11), (17, 5)):
            for t in ((s, SIZES[(i + a) % n], SIZES[(i + c) % n]), (SIZES[(i + a) % n], s, SIZES[(i + c) % n]),
                      (SIZES[(i + a) % n], SIZES[(i + c) % n], s)):
                if t[0] * t[1] * t[2] <= limit:
                    out.append(t)
    return sorted(set(out))


SHAPES = mixed_shapes()


def data(rng, dtype, B, n_in, n_out):
    x = rng.normal(size=(B, n_in)).astype(dtype)
    w = rng.normal(size=(n_out, n_in)).astype(dtype)
    b = rng.normal(size=n_out).astype(dtype)
    return x, w, b


def assert_reference_bits(rng, dtype, shapes, thread_counts):
    """Every fast path on every (B, in, out) of shapes, with and without a bias, on each of
    thread_counts threads, gives the reference's bits."""
    for B, n_in, n_out in shapes:
        x, w, b = data(rng, dtype, B, n_in, n_out)
        for bias in (None, b):
            ref = dense(x, w, bias, "reference")
            for isa in FAST:
                for threads in thread_counts:
                    assert same_bits(dense(x, w, bias, isa, threads), ref), (B, n_in, n_out, isa, threads)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fast_kernels_equal_reference_bit_for_bit(dtype):
    assert len(SHAPES) > 100
    rng = np.random.default_rng(0)
    for B, n_in, n_out in SHAPES:
        x, w, b = data(rng, dtype, B, n_in, n_out)
        for bias in (None, b):
            ref = dense(x, w, bias, "reference")
            assert ref.shape == (B, n_out)
            for isa in FAST:
                for threads in (1, 3):
                    assert same_bits(dense(x, w, bias, isa, threads), ref), (B, n_in, n_out, isa, threads, bias is None)


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_count_of_leftover_rows_equals_reference(dtype):
    """Batches that leave 1 .. MR-1 rows after the full row blocks (every MR up to 8):
    those rows go through smaller blocks together and must still give the reference's
    bits, and each row the bits it has alone."""
    rng = np.random.default_rng(7)
    for B in range(1, 18):
        for n_in, n_out in ((1, 5), (15, 4), (17, 33), (784, 17), (33, 1)):
            x, w, b = data(rng, dtype, B, n_in, n_out)
            ref = dense(x, w, b, "reference")
            alone = np.concatenate([dense(x[r:r + 1], w, b) for r in range(B)])
            assert same_bits(alone, ref), (B, n_in, n_out)
            for isa in FAST:
                for threads in (1, 2):
                    assert same_bits(dense(x, w, b, isa, threads), ref), (B, n_in, n_out, isa, threads)


@pytest.mark.parametrize("dtype", DTYPES)
def test_outer_product_blocks_equal_reference(dtype):
    """The packed outer-product paths (48 rows and 64 columns or more, cpp/gemm_outer.inc): sizes
    around its thresholds and its tiles (AVX-512: 12 x 32 float32 / 12 x 16 float64; AVX2: 6 x 16 /
    6 x 8), the edges of its x blocks (~256 KB: 72 rows of 784 float32 on AVX-512, 78 on AVX2, 36 of
    float64 on both) and of its w panels (~4 MB: 1312 columns of 784 float32 on AVX-512, 1328 on
    AVX2; 656 and 664 of float64), inputs shorter than one lane set and not a multiple of it, all
    give the reference's bits, on any split over threads (by rows, or by columns when B < out)."""
    rng = np.random.default_rng(8)
    shapes = [(B, n_in, n_out) for B in (47, 48, 49, 60) for n_in in (0, 1, 15, 16, 17, 100)
              for n_out in (63, 64, 65, 96, 97)]
    shapes += [(B, 784, 64) for B in (77, 78, 79, 143, 144, 145, 156, 157, 216, 217)]
    shapes += [(128, 784, n) for n in (655, 656, 657, 663, 664, 665, 1311, 1312, 1313, 1327, 1328, 1329)]
    shapes += [(130, 3001, 70), (128, 8193, 65)]
    assert_reference_bits(rng, dtype, shapes, (1, 2, 3))


@pytest.mark.parametrize("dtype", DTYPES)
def test_extreme_values_match_reference(dtype):
    info = np.finfo(dtype)
    rng = np.random.default_rng(1)
    special = np.array([1e30, -1e30, -0.0, 0.0, info.smallest_subnormal, -info.smallest_subnormal * 3,
                        info.tiny / 3, info.max, np.inf, -np.inf, 1.0, -1.0], dtype=dtype)
    for B, n_in, n_out in [(5, 33, 7), (9, 17, 20), (1, 64, 3), (4, 1, 4)]:
        x = rng.choice(special, size=(B, n_in)).astype(dtype)
        w = rng.choice(special, size=(n_out, n_in)).astype(dtype)
        b = rng.choice(special, size=n_out).astype(dtype)
        for bias in (None, b):
            ref = dense(x, w, bias, "reference")
            for isa in FAST:
                assert same_bits(dense(x, w, bias, isa, 2), ref), (B, n_in, n_out, isa)
    # inf in, inf out; subnormal products are kept (no flush to zero); -0.0 alone sums to +0.0
    n = 37
    w = np.ones((2, n), dtype)
    x = np.zeros((3, n), dtype)
    x[0, 5] = np.inf
    x[1, :] = info.smallest_subnormal
    x[2, :] = -0.0
    for isa in FAST + ["reference"]:
        y = dense(x, w, None, isa)
        assert np.all(y[0] == np.inf)
        assert np.all(y[1] == np.asarray(info.smallest_subnormal, dtype) * n)
        assert np.all(y[2] == 0) and not np.signbit(y[2]).any()
        big = np.full((2, n), 1e30 if dtype == np.float32 else 1e300, dtype)
        assert np.all(dense(big, big, None, isa) == np.inf)  # overflowing products
        assert np.all(dense(big[:, :1].copy(), -big[:, :1], None, isa) == -np.inf)


def _round_to(dtype, q: Fraction):
    """q rounded to the nearest dtype value, ties to even (exact, for finite q in range)."""
    d = np.asarray(float(q), dtype)  # within one ulp of the answer
    cands = [d, np.nextafter(d, dtype(np.inf)), np.nextafter(d, dtype(-np.inf))]
    key = lambda c: (abs(Fraction(float(c)) - q), int(np.asarray(c).view(f"u{np.dtype(dtype).itemsize}")) & 1)
    return min(cands, key=key)


def exact_canonical(x, w, b, dtype):
    """The order documented in gemm.h, each fma and addition rounded exactly once (rationals)."""
    L = LANES[dtype]
    s = [dtype(0)] * L
    for k in range(len(x)):
        s[k % L] = _round_to(dtype, Fraction(float(x[k])) * Fraction(float(w[k])) + Fraction(float(s[k % L])))
    h = L // 2
    while h >= 1:
        s = [_round_to(dtype, Fraction(float(s[i])) + Fraction(float(s[i + h]))) for i in range(h)]
        h //= 2
    return s[0] if b is None else _round_to(dtype, Fraction(float(s[0])) + Fraction(float(b)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_reference_computes_the_documented_order(dtype):
    rng = np.random.default_rng(2)
    for n_in in (0, 1, 7, 8, 9, 16, 17, 40):
        # wide exponent range so that the order shows in the rounding
        x = (rng.normal(size=(2, n_in)) * 10.0 ** rng.integers(-6, 7, size=(2, n_in))).astype(dtype)
        w = (rng.normal(size=(3, n_in)) * 10.0 ** rng.integers(-6, 7, size=(3, n_in))).astype(dtype)
        b = rng.normal(size=3).astype(dtype)
        for bias in (None, b):
            y = dense(x, w, bias, "reference")
            for r, j in itertools.product(range(2), range(3)):
                want = exact_canonical(x[r], w[j], None if bias is None else bias[j], dtype)
                assert y[r, j] == want and np.signbit(y[r, j]) == np.signbit(want), (n_in, r, j)


@pytest.mark.parametrize("dtype", DTYPES)
def test_reference_is_accurate(dtype):
    tol = 1e-5 if dtype == np.float32 else 1e-12
    rng = np.random.default_rng(3)
    for B, n_in, n_out in SHAPES[::3]:
        x, w, b = data(rng, dtype, B, n_in, n_out)
        got = dense(x, w, b, "reference")
        xl, wl, bl = (a.astype(np.longdouble) for a in (x, w, b))
        want = xl @ wl.T + bl
        scale = np.abs(xl) @ np.abs(wl).T + np.abs(bl)  # the error bound of any summation order scales with this
        assert np.all(np.abs(got - want) <= tol * scale), (B, n_in, n_out)


@pytest.mark.parametrize("dtype", DTYPES)
def test_shared_panels_taken_by_any_thread_equal_reference(dtype):
    """Several threads on 48 rows and 64 columns or more, w^T within one packing: w^T is packed once,
    its panels shared out, then pieces of rows taken by whichever thread is free (gemm.cpp's
    shared_rows). Pieces and panels that do not divide evenly, the last piece short, more threads than
    pieces or than cores: the reference's bits."""
    rng = np.random.default_rng(9)
    shapes = [(B, 300, n_out) for B in (48, 49, 61, 97, 131) for n_out in (64, 65, 97, 161)]
    shapes += [(250, 33, 700), (48, 2049, 64)]
    assert_reference_bits(rng, dtype, shapes, (2, 3, 5, 8))


@pytest.mark.parametrize("dtype", DTYPES)
def test_rows_do_not_depend_on_position_batch_or_threads(dtype):
    rng = np.random.default_rng(4)
    for B, n_in, n_out in [(257, 784, 256), (100, 1025, 33), (33, 17, 1023), (600, 784, 10)]:
        x, w, b = data(rng, dtype, B, n_in, n_out)
        y = dense(x, w, b, "auto", 1)
        perm = rng.permutation(B)
        assert same_bits(dense(x[perm], w, b, "auto", 2), y[perm])
        for r in (0, 1, B // 2, B - 1):
            assert same_bits(dense(x[r:r + 1], w, b), y[r:r + 1])
        for lo, hi in ((0, 3), (5, 5 + min(B - 5, 70)), (B - 9, B)):
            assert same_bits(dense(x[lo:hi], w, b, "auto", 2), y[lo:hi])
        for threads in range(1, 9):
            assert same_bits(dense(x, w, b, "auto", threads), y), threads


def seed_model(dtype):
    return fm.Sequential(fm.Linear(784, 256), fm.ReLU(), fm.Linear(256, 10), seed=0, dtype=dtype).eval()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_model_outputs_do_not_depend_on_position_batch_threads(dtype):
    m = seed_model(dtype)
    rng = np.random.default_rng(5)
    X = rng.normal(size=(1500, 784)).astype(dtype)
    ref = m.predict(X, n_threads=1)
    perm = rng.permutation(len(X))
    assert same_bits(m.predict(X[perm], n_threads=2), ref[perm])
    assert same_bits(m(X), ref)
    for r in (0, 1, 777, 1499):
        assert same_bits(m.predict(X[r]), ref[r])
        assert same_bits(m(X[r:r + 1]), ref[r:r + 1])
    for threads in range(1, 9):
        assert same_bits(m.predict(X, n_threads=threads), ref), threads
        assert same_bits(m.predict(X, batch_size=97, n_threads=threads), ref), threads
    m.train()  # training-mode forwards run on OpenBLAS: the same values to rounding
    np.testing.assert_allclose(m(X), ref, rtol=1e-4 if dtype == "float32" else 1e-11, atol=1e-5)
    m.eval()
    assert same_bits(m(X[perm]), ref[perm])


@pytest.mark.parametrize("dtype", DTYPES)
def test_concurrent_calls_equal_serial(dtype):
    rng = np.random.default_rng(6)
    x, w, b = data(rng, dtype, 700, 784, 256)
    m = seed_model(np.dtype(dtype).name)
    X = rng.normal(size=(900, 784)).astype(dtype)
    want, want_m = dense(x, w, b, "auto", 2), m.predict(X, n_threads=2)
    got = [None] * 8
    barrier = threading.Barrier(8)

    def work(i):
        barrier.wait()
        got[i] = [(dense(x, w, b, "auto", 1 + i % 4), m.predict(X, n_threads=1 + i % 3)) for _ in range(3)]

    ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    for g in got:
        for y, ym in g:
            assert same_bits(y, want) and same_bits(ym, want_m)


def test_bad_arguments_raise():
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="isa must be"):
        dense(x, np.ones((4, 3), np.float32), None, "sse9")
    with pytest.raises(ValueError, match="columns"):
        dense(x, np.ones((4, 2), np.float32))
    with pytest.raises(ValueError, match="b must have shape"):
        dense(x, np.ones((4, 3), np.float32), np.ones(3, np.float32))
    with pytest.raises(TypeError, match="float32"):
        dense(x, np.ones((4, 3), np.float64))


def test_pool_after_fork_and_threads_in_child():
    """The pool's threads are not copied by fork: a child that predicts on several
    threads must start its own (and not wait for its parent's), nor find OpenBLAS's
    thread lock held by a parent thread that was setting its threads (that hung a
    child in about one run of 10 before cpp/blas.cpp's fork guard)."""
    src = textwrap.dedent("""
        import os, threading
        import numpy as np
        import fastmlp as fm
        m = fm.Sequential(fm.Linear(784, 256), fm.ReLU(), fm.Linear(256, 10), seed=0).eval()
        X = np.random.default_rng(0).normal(size=(3000, 784)).astype(np.float32)
        ref = m.predict(X, n_threads=4)
        # fork while another thread is inside the pool
        stop = threading.Event()
        def busy():
            while not stop.is_set():
                m.predict(X, n_threads=4)
        t = threading.Thread(target=busy); t.start()
        pids = []
        for _ in range(10):  # each fork may land inside the busy thread's OpenBLAS thread setting
            pid = os.fork()
            if pid == 0:
                ok = all(np.array_equal(m.predict(X, n_threads=n), ref) for n in (1, 2, 4))
                os._exit(0 if ok else 3)
            pids.append(pid)
        codes = [os.waitpid(p, 0)[1] for p in pids]
        stop.set(); t.join()
        assert codes == [0] * 10, codes
        assert np.array_equal(m.predict(X, n_threads=4), ref)
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout + r.stderr


@pytest.mark.parametrize("n_in", [255, 256, 784])
def test_float32_training_forwards_of_wide_inputs_use_the_fixed_order(n_in):
    """A float32 Linear of 256+ inputs runs its training forwards on the fixed-order product too (there it
    is the faster, bench/gemm_speed.py): in training mode its rows then have the eval mode's bits, whatever
    the batch they are in; below 256 inputs training runs OpenBLAS's product, as accurate."""
    rng = np.random.default_rng(n_in)
    m = fm.Sequential(fm.Linear(n_in, 70), fm.ReLU(), fm.Linear(70, 5), seed=0, dtype="float32")
    X = rng.standard_normal((300, n_in)).astype(np.float32)
    want = m.eval()(X)
    m.train()
    for rows in (1, 47, 48, 129, 300):
        got = m(X[:rows])
        if n_in >= 256:
            assert same_bits(m[0:2](X[:rows]), m.eval()[0:2](X[:rows])), rows
            m.train()
        np.testing.assert_allclose(got, want[:rows], rtol=2e-5, atol=2e-5)
