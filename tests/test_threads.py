"""fit and train_step on fastmlp's pool (cpp/pool.h): every partition of a
training batch is chosen from the shapes alone, never from the thread count --
row chunks of at least 64 rows, each with its own gradient buffer, summed in
chunk order (cpp/trainer.h), and, for a batch run whole (BatchNorm, or
gradients too large to keep one per chunk), a fixed grid of product tiles
(cpp/blas.h) -- so the weights have the same bits for every n_threads, with
dropout too (its masks are drawn at each element's position in the whole
batch). These tests compare whole trainings bit for bit across n_threads 1..8
and beyond the core count, check that the chunked computation is the
one-chunk computation in another summation order (float64 ~1e-12), and that
errors in any chunk reach the caller."""
import os

import numpy as np
import pytest

import fastmlp as fm
from fastmlp import _core, training
from test_hostile import run_child

THREADS = range(1, 9)


def weights(m):
    return np.concatenate([p.data.ravel().copy() for p in m.parameters()])


def state(m):
    return np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in m.state_dict().values()])


@pytest.fixture
def chunk_bytes():
    """Set the engine's bound on the row chunks' gradient bytes for one test (0: every batch whole)."""
    before = _core._chunk_bytes()
    yield _core._set_chunk_bytes
    _core._set_chunk_bytes(before)


def digits_like(dtype, dropout=0.2, bn=False, wide=False, seed=3):
    h, h2 = (512, 512) if wide else (48, 32)
    layers = [fm.Linear(64, h), fm.ReLU()]
    if bn:
        layers.append(fm.BatchNorm1d(h))
    if dropout:
        layers.append(fm.Dropout(dropout))
    layers += [fm.Linear(h, h2), fm.Tanh(), fm.Linear(h2, 10)]
    return fm.Sequential(*layers, seed=seed, dtype=dtype)


def digits_data(dtype, n=600, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 64)).astype(dtype)
    y = (np.abs(X[:, :10]).argmax(1) + (X[:, 10] > 1)) % 10
    return X, y


def train(make, X, y, n_threads, loss=None, epochs=3, batch=256, opt=fm.optim.Adam, **kw):
    m = make()
    o = opt(m.parameters(), lr=1e-2)
    h = m.fit(X, y, loss or fm.CrossEntropyLoss(), o, epochs=epochs, batch_size=batch, verbose=0, n_threads=n_threads,
              **kw)
    return m, {k: v for k, v in h.history.items() if k != "time"}


def same_for_every_thread_count(make, X, y, threads=THREADS, **kw):
    ref, h_ref = train(make, X, y, 1, **kw)
    for n in threads:
        m, h = train(make, X, y, n, **kw)
        assert np.array_equal(state(m), state(ref)), f"n_threads={n} differs from 1"
        assert h == h_ref, n
    return ref


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dropout_net_is_bit_identical_for_every_thread_count(dtype):
    X, y = digits_data(dtype)
    make = lambda: digits_like(dtype)  # noqa: E731
    assert make()._core._row_chunks(256) == 4  # the row-chunk path
    ref = same_for_every_thread_count(make, X, y)
    assert not np.array_equal(weights(ref), weights(make()))  # it trained


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_batchnorm_net_runs_whole_and_is_bit_identical(dtype):
    X, y = digits_data(dtype)
    make = lambda: digits_like(dtype, bn=True)  # noqa: E731
    assert make()._core._row_chunks(256) == 1  # BatchNorm mixes the rows: one chunk
    ref = same_for_every_thread_count(make, X, y)
    assert ref[2].running_mean.any() and not np.array_equal(ref[2].running_var, np.ones(48))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_wide_net_on_product_tiles_is_bit_identical(dtype, chunk_bytes):
    chunk_bytes(0)  # its batches whole, so the products' tiles carry the threads
    X, y = digits_data(dtype, n=512)
    make = lambda: digits_like(dtype, wide=True)  # noqa: E731
    assert make()._core._row_chunks(512) == 1
    # the second layer's forward, weight gradient and dx, each (512, 512, 512), are cut in two
    assert _core._gemm_tiles(512, 512, 512) == (2, 1)
    same_for_every_thread_count(make, X, y, batch=512)


def test_the_row_chunks_are_chosen_from_the_shapes(chunk_bytes):
    small = digits_like("float32")
    assert [small._core._row_chunks(b) for b in (1, 63, 64, 127, 128, 200, 511, 512, 513, 10 ** 6)] == \
        [1, 1, 1, 1, 2, 2, 4, 8, 8, 8]
    large = fm.Sequential(fm.Linear(784, 1024), fm.ReLU(), fm.Linear(1024, 1024), fm.ReLU(), fm.Linear(1024, 10))
    assert large._core._row_chunks(512) == 1  # 8 gradients of 1.9M parameters: the tiles instead
    n = sum(p.data.size for p in small.parameters())
    chunk_bytes(n * 4 * 2)
    assert small._core._row_chunks(256) == 1 and small._core._row_chunks(128) == 2


def test_product_tiles_are_cut_from_the_shapes_alone():
    assert _core._gemm_tiles(32, 10, 64) == (1, 1)  # small: one call
    tm, tn = _core._gemm_tiles(512, 1024, 1024)  # the large config's: 8 tiles of 64M multiply-adds
    assert tm * tn == 8 and tm >= 2 and tn >= 2
    assert _core._gemm_tiles(8192, 8192, 8192) == (8, 8)  # at most 64
    assert _core._gemm_tiles(256, 256, 1 << 20) == (1, 1)  # no side is long enough to cut
    assert _core._gemm_tiles(100000, 10, 784) == (8, 1)  # 10 columns are never cut


KINDS = ["ce", "ce_options", "ce_sum", "ce_probs", "mse", "huber", "bce", "poisson"]


def small_net(dtype, seed=3, out=4, dropout=0.0):
    layers = [fm.Linear(5, 24), fm.Tanh(), fm.Linear(24, 7), fm.ReLU()]
    if dropout:
        layers.append(fm.Dropout(dropout))
    return fm.Sequential(*layers, fm.Linear(7, out), seed=seed, dtype=dtype)


def case(kind, n, dtype, rng):
    X = rng.standard_normal((n, 5)).astype(dtype)
    labels = rng.integers(0, 4, n)
    if kind == "ce":
        return X, labels, fm.CrossEntropyLoss()
    if kind == "ce_options":
        labels[::7] = 2  # ignore_index rows
        w = np.array([0.5, 2.0, 1.0, 3.0], dtype=dtype)
        return X, labels, fm.CrossEntropyLoss(weight=w, ignore_index=2, label_smoothing=0.1)
    if kind == "ce_sum":
        return X, labels, fm.CrossEntropyLoss(reduction="sum")
    if kind == "ce_probs":
        P = rng.dirichlet(np.ones(4), n).astype(dtype)
        return X, P, fm.CrossEntropyLoss()
    if kind == "mse":
        return X, rng.standard_normal((n, 4)).astype(dtype), fm.MSELoss()
    if kind == "huber":
        return X, rng.standard_normal((n, 4)).astype(dtype) * 3, fm.HuberLoss(delta=0.5)
    if kind == "bce":
        return X, (rng.random((n, 4)) > 0.5).astype(dtype), fm.BCEWithLogitsLoss(pos_weight=np.full(4, 2.0, dtype))
    if kind == "poisson":
        return X, rng.poisson(2.0, (n, 4)).astype(dtype), fm.PoissonNLLLoss()
    raise AssertionError(kind)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", KINDS)
def test_every_loss_with_weights_and_clipping_is_bit_identical(kind, dtype):
    rng = np.random.default_rng(11)
    X, y, loss = case(kind, 700, dtype, rng)
    sw = rng.integers(0, 3, 700).astype(dtype)
    for extra in ({}, {"sample_weight": sw, "clip_grad_norm": 0.5, "clip_grad_value": 0.05}):
        same_for_every_thread_count(lambda: small_net(dtype, dropout=0.1), X, y, threads=(2, 3, 8), loss=loss,
                                    batch=200, **extra)


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-11), ("float32", 2e-5)])
@pytest.mark.parametrize("kind", KINDS)
def test_chunks_compute_the_one_chunk_step(kind, dtype, rtol, chunk_bytes):
    # the same update in another summation order; dropout (hidden width 7: chunks start at odd elements)
    # draws the same masks at every cut
    rng = np.random.default_rng(11)
    X, y, loss = case(kind, 700, dtype, rng)
    out = []
    for bound in (0, 1 << 30):
        chunk_bytes(bound)
        out.append(train(lambda: small_net(dtype, dropout=0.5), X, y, 2, loss=loss, epochs=2, batch=254))
    (w1, h1), (w2, h2) = [(weights(m), h) for m, h in out]
    assert small_net(dtype)._core._row_chunks(254) == 2  # the second chunk starts at row 127, element 889
    assert not np.array_equal(w1, w2) or dtype == "float32"  # the chunks really ran (another summation order)
    np.testing.assert_allclose(w2, w1, rtol=rtol, atol=rtol * np.abs(w1).max())
    np.testing.assert_allclose(h2["loss"], h1["loss"], rtol=rtol)
    if "accuracy" in h1:
        assert h1["accuracy"] == h2["accuracy"]


@pytest.mark.parametrize("batch", [1, 63, 64, 65, 127, 255, 256, 257, 700, 1000])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_fit_equals_a_train_step_loop_on_any_threads(batch, dropout):
    rng = np.random.default_rng(4)
    X, y = rng.standard_normal((700, 5)), rng.integers(0, 4, 700)
    a, b = small_net("float64", dropout=dropout), small_net("float64", dropout=dropout)
    oa, ob = fm.optim.Adam(a.parameters(), lr=1e-2), fm.optim.Adam(b.parameters(), lr=1e-2)
    a.fit(X, y, fm.CrossEntropyLoss(), oa, epochs=2, batch_size=batch, shuffle=False, verbose=0, n_threads=3)
    for _ in range(2):
        for i in range(0, 700, batch):
            b.train_step(X[i:i + batch], y[i:i + batch], fm.CrossEntropyLoss(), ob)
    np.testing.assert_array_equal(weights(a), weights(b))


def test_dropout_with_several_threads_is_reproducible_for_a_seed():
    X, y = digits_data("float32")
    runs = [weights(train(lambda s=s: digits_like("float32", dropout=0.5, seed=s), X, y, 4)[0]) for s in (5, 5, 6)]
    assert np.array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])
    # another seed only for the masks: the same initial weights, another stream
    m1, m2 = digits_like("float32", dropout=0.5, seed=5), digits_like("float32", dropout=0.5, seed=6)
    m2.load_state_dict(m1.state_dict())
    for m in (m1, m2):
        m.fit(X, y, fm.CrossEntropyLoss(), fm.optim.SGD(m.parameters(), lr=0.1), batch_size=256, verbose=0, n_threads=4)
    assert not np.array_equal(weights(m1), weights(m2))


def test_more_threads_than_cores():
    X, y = digits_data("float64", n=300)
    many = 2 * (os.cpu_count() or 1) + 3
    same_for_every_thread_count(lambda: digits_like("float64"), X, y, threads=(many, 64), epochs=1)
    m = digits_like("float64")
    assert np.array_equal(m.predict(X, n_threads=many), m.predict(X, n_threads=1))


def test_n_threads_bounds_the_pool_and_is_restored():
    before = _core.blas_get_num_threads()
    X, y = digits_data("float32", n=300)
    seen = []
    m = digits_like("float32")
    m.fit(X, y, fm.CrossEntropyLoss(), fm.optim.SGD(m.parameters(), lr=0.1), verbose=0, n_threads=3,
          callbacks=[fm.callbacks.LambdaCallback(on_epoch_end=lambda *a: seen.append(_core.blas_get_num_threads()))])
    assert seen == [3] and _core.blas_get_num_threads() == before
    assert training.thread_plan(5, m, 10) == 5
    assert training.thread_plan(None, m, 256) == 1  # fit: small products, whatever the chunks
    big = fm.Sequential(fm.Linear(784, 256), fm.ReLU(), fm.Linear(256, 10))
    assert training.thread_plan(None, big, 256) == training.default_threads()  # the seed net
    assert training.thread_plan(None, m, 200) == 1  # a small predict


def test_a_batch_whose_rows_are_all_ignored_is_skipped_with_any_threads():
    # 'mean' over no counted row is 0/0: the batch is skipped (as one of zero sample weights), on
    # every thread count; a training set with no counted row at all is refused
    rng = np.random.default_rng(0)
    X = rng.standard_normal((256, 5))
    y = np.r_[np.full(128, 3), rng.integers(0, 3, 128)]
    loss = fm.CrossEntropyLoss(ignore_index=3)
    for n_threads in (1, 2):
        m, ref = small_net("float64"), small_net("float64")
        m.fit(X, y, loss, fm.optim.SGD(m.parameters(), lr=0.1, momentum=0.9), batch_size=128, shuffle=False,
              verbose=0, n_threads=n_threads)
        ref.fit(X[128:], y[128:], loss, fm.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9), batch_size=128,
                shuffle=False, verbose=0, n_threads=n_threads)
        np.testing.assert_array_equal(m._core.flat_params(), ref._core.flat_params())
        with pytest.raises(ValueError, match="nothing to learn"):
            m.fit(X[:128], y[:128], loss, fm.optim.SGD(m.parameters(), lr=0.1), verbose=0, n_threads=n_threads)


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_an_error_in_any_chunk_reaches_the_caller_and_names_the_lowest(threads):
    # the engine directly (the Python API checks labels first): bad labels in chunks 5 and 2
    m = small_net("float64")
    opt = fm.optim.SGD(m.parameters(), lr=0.1)
    X = np.zeros((256, 5))
    y = np.zeros(256, dtype=np.int64)
    y[200], y[70] = 9, 7
    before = weights(m)
    with pytest.raises(ValueError, match="7.*out of bounds|out of bounds.*7"):
        m._core.train_epoch(X, y, {"kind": "cross_entropy"}, opt._core, 256, False, False, None, threads)
    np.testing.assert_array_equal(weights(m), before)
    y[200] = y[70] = 1
    st = m._core.train_epoch(X, y, {"kind": "cross_entropy"}, opt._core, 256, False, False, None, threads)
    assert np.isfinite(st["loss"])
    with pytest.raises(ValueError, match="threads"):
        m._core.train_epoch(X, y, {"kind": "cross_entropy"}, opt._core, 256, False, False, None, 0)


@pytest.mark.parametrize("n_threads", [1, 3])
@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_row_deep_in_the_data_is_named_and_changes_nothing(n_threads, shuffle, bad):
    # fit checks each chunk as it gathers it (no separate pass over X): a bad row found after some
    # steps were taken must still leave the model, its gradients and the optimizer as they were
    rng = np.random.default_rng(5)
    X, y = rng.standard_normal((1000, 5)), rng.integers(0, 4, 1000)
    m = fm.Sequential(fm.Linear(5, 16), fm.ReLU(), fm.Dropout(0.2), fm.Linear(16, 4), seed=1, dtype="float64")
    opt = fm.optim.Adam(m.parameters(), lr=1e-2)
    m.fit(X, y, fm.CrossEntropyLoss(), opt, batch_size=128, verbose=0, n_threads=n_threads)
    before = (weights(m), m._core.flat_grads().copy(), opt.state_dict(), m._core.epochs_done)
    X[937, 3] = bad
    with pytest.raises(ValueError, match=r"X contains NaN or infinity \(row 937\)"):
        m.fit(X, y, fm.CrossEntropyLoss(), opt, epochs=3, batch_size=128, shuffle=shuffle, verbose=0,
              n_threads=n_threads)
    np.testing.assert_array_equal(weights(m), before[0])
    np.testing.assert_array_equal(m._core.flat_grads(), before[1])
    after = opt.state_dict()
    assert after["state"][0]["step"] == before[2]["state"][0]["step"]
    np.testing.assert_array_equal(after["state"][0]["exp_avg"], before[2]["state"][0]["exp_avg"])
    assert m._core.epochs_done == before[3]


@pytest.mark.parametrize("n_threads", [1, 2])
def test_non_finite_rows_are_found_without_training_on_them(n_threads):
    # rows that no step uses are still checked: fit with 0 epochs, and a batch whose weights are all zero
    # (skipped) -- found by the fuzzer (fuzz/fuzz_arrays.py)
    rng = np.random.default_rng(6)
    X, y = rng.standard_normal((512, 5)), rng.integers(0, 4, 512)
    X[300, 1] = np.nan
    m = small_net("float64")
    opt = fm.optim.SGD(m.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="NaN or infinity"):
        m.fit(X, y, fm.CrossEntropyLoss(), opt, epochs=0, verbose=0, n_threads=n_threads)
    sw = np.ones(512)
    sw[256:] = 0  # the second batch of 256 is skipped
    before = weights(m)
    with pytest.raises(ValueError, match=r"X contains NaN or infinity \(row 300\)"):
        m.fit(X, y, fm.CrossEntropyLoss(), opt, batch_size=256, shuffle=False, verbose=0, n_threads=n_threads,
              sample_weight=sw)
    np.testing.assert_array_equal(weights(m), before)


def test_fork_while_another_thread_trains_on_the_pool():
    # the child of a fork taken while the parent's pool runs a fit (its threads are not copied, its
    # lock may be held) starts a pool of its own and trains to the parent's bits
    res = run_child("""
        import threading
        rng = np.random.default_rng(0)
        X = rng.normal(size=(4000, 16)); y = rng.integers(0, 3, 4000)
        def make():
            return fm.Sequential(fm.Linear(16, 64), fm.ReLU(), fm.Dropout(0.2), fm.Linear(64, 3), seed=2)
        def fit(m, n):
            m.fit(X, y, fm.CrossEntropyLoss(), fm.optim.Adam(m.parameters(), lr=1e-3), epochs=2, batch_size=256,
                  verbose=0, n_threads=n)
            return np.concatenate([p.data.ravel() for p in m.parameters()])
        ref = fit(make(), 1)
        busy = make()
        t = threading.Thread(target=lambda: [fit(busy, 4) for _ in range(3)])
        t.start()
        for _ in range(4):
            pid = os.fork()
            if pid == 0:
                try:
                    os._exit(0 if np.array_equal(fit(make(), 3), ref) else 3)
                except BaseException:
                    os._exit(4)
            _, status = os.waitpid(pid, 0)
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
        t.join()
        assert np.array_equal(fit(make(), 2), ref)
    """, timeout=300)
    assert res["outcome"] == "ok", res
