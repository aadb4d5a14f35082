"""fit splits each batch of a model whose rows are independent into chunks (a
number chosen from the batch and the model alone: training.batch_chunks), runs
them on the pool's threads with single-threaded products, each chunk's gradient
in a buffer of its own, and sums the buffers in a fixed tree before the step.
These tests check that every n_threads from 1 to 8 (and more threads than the
machine has cores) gives the same bits, for every loss and its options, odd
batch sizes, shuffling, sample weights, dropout and bfloat16; that the result is
the whole batch's computation in another summation order (against one unchunked
pass over the whole batch: float64 to ~1e-11, float32 to ~1e-5); that train_step
steps as fit does, the same bits for every thread count; and when fit chunks."""
import numpy as np
import pytest

import fastmlp as fm
from fastmlp import training

THREADS = (1, 2, 3, 4, 5, 8)


def weights(m):
    return np.concatenate([p.data.ravel().copy() for p in m.parameters()])


def net(dtype, seed=3, out=4, act=fm.Tanh):
    return fm.Sequential(fm.Linear(5, 24), act(), fm.Linear(24, 16), fm.ReLU(), fm.Linear(16, out), seed=seed,
                         dtype=dtype)


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


def fit_threads(kind, dtype, batch, n=700, shuffle=True, sample_weight=False, epochs=2, threads=THREADS):
    """[(weights, history)] of the same fit with each n_threads"""
    rng = np.random.default_rng(11)
    X, y, loss = case(kind, n, dtype, rng)
    sw = rng.integers(0, 3, n).astype(dtype) if sample_weight else None
    out = []
    for n_threads in threads:
        m = net(dtype)
        opt = fm.optim.Adam(m.parameters(), lr=1e-2)
        h = m.fit(X, y, loss, opt, epochs=epochs, batch_size=batch, shuffle=shuffle, verbose=0, n_threads=n_threads,
                  sample_weight=sw)
        out.append((weights(m), h.history))
    return out


def unchunked_step(m, x, y, loss, opt):
    """zero_grad + forward + loss + backward of the whole batch in one pass (no chunks), then opt.step()"""
    t = loss._target(y, (x.shape[0], m._core.out_features(x.shape[1])), m.dtype)
    m._core.loss_and_grad(x, t, loss._spec(m.dtype), False)
    m._grads_set()
    opt.step()


def whole_batch_steps(kind, dtype, batch, n=700, epochs=2):
    """The reference: the same training (no shuffle), each whole batch's gradient in one unchunked pass"""
    rng = np.random.default_rng(11)
    X, y, loss = case(kind, n, dtype, rng)
    m = net(dtype)
    opt = fm.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(epochs):
        for s in range(0, n, batch):
            unchunked_step(m, X[s:s + batch], y[s:s + batch], loss, opt)
    return weights(m)


def untimed(history):
    return {k: v for k, v in history.items() if k != "time"}


def assert_same_bits(runs):
    (w1, h1), *rest = runs
    for w, h in rest:
        np.testing.assert_array_equal(w, w1)
        assert untimed(h) == untimed(h1)


KINDS = ["ce", "ce_options", "ce_sum", "ce_probs", "mse", "huber", "bce", "poisson"]


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-11), ("float32", 2e-5)])
@pytest.mark.parametrize("kind", KINDS)
def test_every_thread_count_gives_the_same_bits_as_one_thread(kind, dtype, rtol):
    runs = fit_threads(kind, dtype, batch=128, shuffle=False)
    assert_same_bits(runs)
    # the chunks computed the whole batch's step, in another summation order
    ref = whole_batch_steps(kind, dtype, batch=128)
    w = runs[0][0]
    assert not np.array_equal(w, ref) or dtype == "float32"
    np.testing.assert_allclose(w, ref, rtol=rtol, atol=rtol * np.abs(ref).max())


@pytest.mark.parametrize("batch", [63, 64, 65, 127, 255, 256, 257, 511, 512, 513, 700, 1023, 1024, 1025, 2048])
@pytest.mark.parametrize("shuffle", [True, False])
def test_odd_batches_and_order(batch, shuffle):
    n = 2100
    runs = fit_threads("ce", "float64", batch=batch, shuffle=shuffle, n=n, threads=(1, 2, 3, 8))
    assert_same_bits(runs)
    if not shuffle:
        ref = whole_batch_steps("ce", "float64", batch=batch, n=n)
        np.testing.assert_allclose(runs[0][0], ref, rtol=1e-11, atol=1e-12)
        # one chunk below 64 rows: then fit is the unchunked computation itself
        assert np.array_equal(runs[0][0], ref) == (training.batch_chunks(net("float64"), batch) == 1)


@pytest.mark.parametrize("kind", ["ce", "ce_options", "mse", "bce"])
def test_sample_weights_with_zero_rows(kind):
    assert_same_bits(fit_threads(kind, "float64", batch=100, sample_weight=True))


def test_how_many_chunks():
    small = net("float32")
    assert [training.batch_chunks(small, r) for r in (0, 1, 63, 64, 200, 511, 512, 1023, 1024, 5000)] == \
        [1, 1, 1, 2, 2, 2, 4, 4, 8, 8]
    seed = fm.Sequential(fm.Linear(784, 256), fm.ReLU(), fm.Linear(256, 10))  # 0.8 MB of gradient per chunk
    assert [training.batch_chunks(seed, r) for r in (256, 512, 1024, 4096)] == [2, 4, 8, 8]
    # 7.4 MB of parameters: chunks of 256 rows or more; the two big weights' gradients deferred (not one a
    # chunk), so the buffers do not limit the chunks
    large = fm.Sequential(fm.Linear(784, 1024), fm.ReLU(), fm.Linear(1024, 1024), fm.ReLU(), fm.Linear(1024, 10))
    assert [training.batch_chunks(large, r) for r in (63, 64, 511, 512, 1023, 1024, 2048, 4096)] == \
        [1, 2, 2, 2, 2, 4, 8, 8]
    assert large._core.chunked_params == 1024 + 1024 + 1024 * 10 + 10
    assert seed._core.chunked_params == 256 + 256 * 10 + 10  # 784 x 256 >= 65536: deferred
    assert small._core.chunked_params == small._core.n_params  # none
    # the budget, without deferral (kept = every parameter): more than one extra buffer of 7.4 MB costs
    # more than it brings
    assert fm._core.batch_chunks(4096, large._core.n_params, 4) == 2
    assert fm._core.batch_chunks(4096, large._core.n_params, 4, large._core.chunked_params) == 8
    assert fm._core.batch_chunks(1024, seed._core.n_params, 8) == 4  # twice the bytes per gradient, none deferred
    bn = fm.Sequential(fm.Linear(5, 8), fm.BatchNorm1d(8), fm.Linear(8, 2))
    assert training.batch_chunks(bn, 5000) == 1  # batch statistics: a row's output depends on the whole batch
    bn.eval()  # eval mode does not matter: fit trains on batch statistics
    assert training.batch_chunks(bn, 5000) == 1
    with pytest.raises(TypeError):
        fm._core.batch_chunks("many", 10, 4)


def test_thread_plan():
    small = net("float32")
    n = training.default_threads()
    for rows in (32, 200):
        assert training.thread_plan(None, small, rows, split=True) == (1, n)  # fit: the chunks get the threads
        assert training.thread_plan(8, small, rows, split=True) == (1, 8)
        assert training.thread_plan(1, small, rows, split=True) == (1, 1)
    assert training.thread_plan(2, small, 200, split=False) == (2, 1)  # predict, evaluate: the products' threads
    seed = fm.Sequential(fm.Linear(784, 256), fm.ReLU(), fm.Linear(256, 10))
    assert training.thread_plan(4, seed, 256, split=True) == (1, 4)
    bn = fm.Sequential(fm.Linear(5, 8), fm.BatchNorm1d(8), fm.Linear(8, 2))
    assert training.thread_plan(2, bn, 500, split=True) == (2, 1)  # batch statistics: the products get the threads
    dropout = fm.Sequential(fm.Linear(5, 8), fm.Dropout(0.5), fm.Linear(8, 2))
    assert training.thread_plan(2, dropout, 500, split=True) == (1, 2)  # each chunk draws its rows' masks


def dropout_fit(n_threads, batch, width=16, drop=fm.Dropout, dtype="float64", epochs=2, n=300, shuffle=True,
                steps=False):
    rng = np.random.default_rng(2)
    X, y = rng.standard_normal((n, 5)).astype(dtype), rng.integers(0, 2, n)
    m = fm.Sequential(fm.Linear(5, width), fm.ReLU(), drop(0.3), fm.Linear(width, 16), fm.Tanh(), drop(0.5),
                      fm.Linear(16, 2), seed=4, dtype=dtype)
    opt = fm.optim.SGD(m.parameters(), lr=0.1)
    if steps:  # the reference: whole batches unchunked, whose masks are drawn for the whole batch at once
        for _ in range(epochs):
            for s in range(0, n, batch):
                unchunked_step(m, X[s:s + batch], y[s:s + batch], fm.CrossEntropyLoss(), opt)
        return weights(m), None, m._core.dropout_calls
    h = m.fit(X, y, fm.CrossEntropyLoss(), opt, epochs=epochs, batch_size=batch, verbose=0, n_threads=n_threads,
              shuffle=shuffle)
    return weights(m), h.history["loss"], m._core.dropout_calls


@pytest.mark.parametrize("drop", [fm.Dropout, fm.AlphaDropout])
@pytest.mark.parametrize("batch, width", [(100, 16), (130, 7), (129, 7), (64, 1), (300, 3), (600, 5), (1100, 3)])
def test_dropout_chunks_draw_the_whole_batch_masks(drop, batch, width):
    # each chunk draws the whole batch's mask for its rows (also from an odd flat index: 65 rows of 7):
    # every thread count gives the same bits, with the same stream position, and the whole batch's masks
    n = 2200
    runs = [dropout_fit(t, batch, width, drop, n=n) for t in (1, 2, 3, 8)]
    for w, loss, calls in runs:
        np.testing.assert_array_equal(w, runs[0][0])
        assert loss == runs[0][1]
        assert calls == 2 * -(-n // batch)  # one stream step per batch, chunked or not
    fit = dropout_fit(1, batch, width, drop, n=n, shuffle=False)
    ref = dropout_fit(1, batch, width, drop, n=n, steps=True)
    assert fit[2] == ref[2]
    assert not np.array_equal(fit[0], ref[0])  # the chunks really ran
    np.testing.assert_allclose(fit[0], ref[0], rtol=1e-11, atol=1e-12)


def test_dropout_fit_is_bit_reproducible():
    a, b = dropout_fit(2, 100, dtype="float32"), dropout_fit(2, 100, dtype="float32")
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1]


@pytest.mark.parametrize("bad_row", [0, 200, 511])
def test_an_error_in_any_chunk_reaches_the_caller(bad_row):
    # the engine directly (the Python API checks labels first): a bad label in one of 4 chunks
    m = net("float64")
    opt = fm.optim.SGD(m.parameters(), lr=0.1)
    X = np.zeros((512, 5))
    y = np.zeros(512, dtype=np.int64)
    y[bad_row] = 9
    before = weights(m)
    for workers in (1, 2, 4):
        with pytest.raises(ValueError, match="out of bounds"):
            m._core.train_epoch(X, y, {"kind": "cross_entropy"}, opt._core, 512, False, False, None, workers)
        np.testing.assert_array_equal(weights(m), before)
    # and the model still trains afterwards, the same on any thread count
    y[bad_row] = 1
    got = []
    for workers in (1, 2, 4):
        m2 = net("float64")
        o2 = fm.optim.SGD(m2.parameters(), lr=0.1)
        bad = y.copy()
        bad[-1] = 7
        with pytest.raises(ValueError, match="out of bounds"):  # a failed call, then a good one
            m2._core.train_epoch(X, bad, {"kind": "cross_entropy"}, o2._core, 512, False, False, None, workers)
        st = m2._core.train_epoch(X, y, {"kind": "cross_entropy"}, o2._core, 512, False, False, None, workers)
        assert np.isfinite(st["loss"])
        got.append(weights(m2))
    for w in got:
        np.testing.assert_array_equal(w, got[0])
    with pytest.raises(ValueError, match="workers"):
        m._core.train_epoch(X, y, {"kind": "cross_entropy"}, opt._core, 512, False, False, None, 0)


def test_the_lowest_failing_chunk_names_its_row():
    # two chunks fail at once: the error is the lowest chunk's, whichever thread ran it
    X = np.zeros((1024, 5))
    X[300, 1] = X[900, 2] = np.nan
    y = np.zeros(1024, dtype=np.int64)
    for n_threads in (1, 2, 8):
        m = net("float64")
        with pytest.raises(ValueError, match=r"row 300\)"):
            m.fit(X, y, fm.CrossEntropyLoss(), fm.optim.SGD(m.parameters(), lr=0.1), batch_size=1024,
                  shuffle=False, verbose=0, n_threads=n_threads)


@pytest.mark.parametrize("n_threads", [1, 2, 3])
@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_row_deep_in_the_data_is_named_and_changes_nothing(n_threads, shuffle, bad):
    # fit checks each batch as it gathers it (no separate pass over X): a bad row found after some
    # steps were taken must still leave the model, its gradients and the optimizer as they were
    rng = np.random.default_rng(5)
    X, y = rng.standard_normal((1000, 5)), rng.integers(0, 4, 1000)
    m = fm.Sequential(fm.Linear(5, 16), fm.ReLU(), fm.Dropout(0.0), fm.Linear(16, 4), seed=1, dtype="float64")
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
    with pytest.raises(ValueError, match=r"X contains NaN or infinity \(row 937\)"):
        m.predict(X, batch_size=100)


@pytest.mark.parametrize("n_threads", [1, 2])
def test_non_finite_rows_are_found_without_training_on_them(n_threads):
    # rows that no step uses are still checked: fit with 0 epochs, and a batch whose weights are all zero
    # (skipped) -- found by the fuzzer (fuzz/fuzz_arrays.py)
    rng = np.random.default_rng(6)
    X, y = rng.standard_normal((512, 5)), rng.integers(0, 4, 512)
    X[300, 1] = np.nan
    m = net("float64")
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


def test_a_batch_whose_rows_are_all_ignored_is_skipped_with_any_threads():
    # 'mean' over no counted row is 0/0: the batch is skipped (as one of zero sample weights), chunked
    # or not; a training set with no counted row at all is refused
    rng = np.random.default_rng(0)
    X = rng.standard_normal((256, 5))
    y = np.r_[np.full(128, 3), rng.integers(0, 3, 128)]
    loss = fm.CrossEntropyLoss(ignore_index=3)
    for n_threads in (1, 2, 5):
        m, ref = net("float64"), net("float64")
        m.fit(X, y, loss, fm.optim.SGD(m.parameters(), lr=0.1, momentum=0.9), batch_size=128, shuffle=False,
              verbose=0, n_threads=n_threads)
        ref.fit(X[128:], y[128:], loss, fm.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9), batch_size=128,
                shuffle=False, verbose=0, n_threads=n_threads)
        np.testing.assert_array_equal(m._core.flat_params(), ref._core.flat_params())
        with pytest.raises(ValueError, match="nothing to learn"):
            m.fit(X[:128], y[:128], loss, fm.optim.SGD(m.parameters(), lr=0.1), verbose=0, n_threads=n_threads)


@pytest.mark.parametrize("batch", [128, 600, 1100])
def test_a_large_model_sums_the_chunks_gradients_on_every_thread(batch):
    # from 2^13 parameters the chunks' gradients are summed in blocks over the threads (34,788 here:
    # the blocks end at odd places of the layers' tensors); 2, 4 and 8 chunks
    rng = np.random.default_rng(8)
    X, y = rng.standard_normal((2200, 5)), rng.integers(0, 4, 2200)
    out = []
    for n_threads in (1, 2, 3, 8):
        m = fm.Sequential(fm.Linear(5, 201), fm.ReLU(), fm.Linear(201, 163), fm.Tanh(), fm.Linear(163, 4), seed=2,
                          dtype="float64")
        assert sum(p.data.size for p in m.parameters()) == 34788
        h = m.fit(X, y, fm.CrossEntropyLoss(), fm.optim.SGD(m.parameters(), lr=0.05, momentum=0.9), epochs=2,
                  batch_size=batch, verbose=0, n_threads=n_threads)
        out.append((weights(m), h.history))
    assert_same_bits(out)


@pytest.mark.parametrize("n_threads", [16, 64, 4096])
def test_more_threads_than_cores(n_threads):
    # the pool starts at most one thread per chunk (and 63 at most): any n_threads runs, with the same bits
    ref, got = fit_threads("ce", "float32", batch=1024, n=2100, threads=(1, n_threads))
    assert_same_bits([ref, got])


def test_bfloat16_fit_gives_the_same_bits_on_every_thread_count():
    rng = np.random.default_rng(9)
    X, y = rng.standard_normal((1500, 40)).astype(np.float32), rng.integers(0, 10, 1500)
    out = []
    for n_threads in THREADS:
        m = fm.Sequential(fm.Linear(40, 96), fm.GELU(), fm.Dropout(0.1), fm.Linear(96, 10), seed=5)
        h = m.fit(X, y, fm.CrossEntropyLoss(), fm.optim.AdamW(m.parameters(), lr=1e-3), epochs=2, batch_size=512,
                  verbose=0, n_threads=n_threads, precision="bfloat16")
        out.append((weights(m), h.history))
    assert_same_bits(out)


def test_estimators_give_the_same_bits_on_every_thread_count():
    from fastmlp import MLPClassifier
    rng = np.random.default_rng(10)
    X, y = rng.standard_normal((900, 8)), rng.integers(0, 3, 900)
    coefs = []
    for n_threads in (1, 2, 7):
        clf = MLPClassifier(hidden_layer_sizes=(32, 16), max_iter=5, batch_size=300, random_state=0,
                            n_threads=n_threads).fit(X, y)
        coefs.append(np.concatenate([c.ravel() for c in clf.coefs_]))
    for c in coefs:
        np.testing.assert_array_equal(c, coefs[0])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("rows", [16, 63, 64, 200, 513])
@pytest.mark.parametrize("drop", [0.0, 0.3])
def test_train_step_is_fits_step_for_every_thread_count(dtype, rows, drop):
    """train_step chunks its batch as fit does (its products single-threaded, the chunks on the current
    threads): the same weights as fit's steps on those batches without shuffling, for 1 to 8 threads"""
    rng = np.random.default_rng(rows)
    X, y = rng.standard_normal((rows, 20)).astype(dtype), rng.integers(0, 4, rows)

    def model():
        return fm.Sequential(fm.Linear(20, 300), fm.ReLU(), fm.Dropout(drop), fm.Linear(300, 4), seed=6, dtype=dtype)

    runs = []
    for nt in (1, 2, 3, 8):
        m = model()
        opt = fm.optim.Adam(m.parameters(), lr=1e-2)
        before = fm._core.blas_get_num_threads()
        with training.blas_threads(nt):  # train_step's threads
            losses = [m.train_step(X, y, fm.CrossEntropyLoss(), opt) for _ in range(3)]
        assert fm._core.blas_get_num_threads() == before
        runs.append((weights(m), losses))
    for w, losses in runs[1:]:
        np.testing.assert_array_equal(w, runs[0][0])
        assert losses == runs[0][1]
    f = model()
    h = f.fit(X, y, fm.CrossEntropyLoss(), fm.optim.Adam(f.parameters(), lr=1e-2), epochs=3, batch_size=rows,
              shuffle=False, verbose=0, n_threads=2)
    np.testing.assert_array_equal(weights(f), runs[0][0])
    np.testing.assert_allclose(h.history["loss"], runs[0][1], rtol=1e-12 if dtype == "float64" else 1e-6)
    # and the chunks are fit's: an unchunked pass over the batch (single-threaded products, as the chunks')
    # gives other bits from 64 rows on
    u = model()
    opt = fm.optim.Adam(u.parameters(), lr=1e-2)
    with training.blas_threads(1):
        for _ in range(3):
            unchunked_step(u, X, y, fm.CrossEntropyLoss(), opt)
    assert np.array_equal(weights(u), runs[0][0]) == (training.batch_chunks(u, rows) == 1)


def deferred_net(dtype, drop=0.0, seed=7):
    """two weights of 65536 elements or more, whose gradients a split batch defers: 170 -> 400 (rows of dw
    in two slices) and 400 -> 170 (its columns in two slices); the others kept per chunk"""
    return fm.Sequential(fm.Linear(5, 170), fm.Tanh(), fm.Linear(170, 400), fm.ReLU(), fm.Dropout(drop),
                         fm.Linear(400, 170), fm.Tanh(), fm.Linear(170, 4), seed=seed, dtype=dtype)


def deferred_fit(dtype, batch, n_threads, n=900, shuffle=True, precision="float32", drop=0.0, epochs=2, make=None):
    """(weights, history) of a fit of deferred_net (or make(dtype)) on the rows whole_batch_reference steps on"""
    rng = np.random.default_rng(12)
    X, y = rng.standard_normal((n, 5)).astype(dtype), rng.integers(0, 4, n)
    m = make(dtype) if make else deferred_net(dtype, drop)
    h = m.fit(X, y, fm.CrossEntropyLoss(), fm.optim.SGD(m.parameters(), lr=0.05, momentum=0.9), epochs=epochs,
              batch_size=batch, shuffle=shuffle, verbose=0, n_threads=n_threads,
              **({"precision": precision} if dtype == "float32" else {}))
    return weights(m), h.history


def big_net(dtype, seed=7):
    """272,000-element weights: keeping their gradients per chunk allows only two chunks"""
    return fm.Sequential(fm.Linear(5, 170), fm.Tanh(), fm.Linear(170, 1600), fm.ReLU(), fm.Linear(1600, 170),
                         fm.Tanh(), fm.Linear(170, 4), seed=seed, dtype=dtype)


def test_the_big_weights_gradients_are_deferred():
    m = deferred_net("float64")
    n = [p.data.size for p in m.parameters()]
    assert n[2] == 68000 and n[4] == 68000  # the two deferred weights
    assert m._core.chunked_params == sum(n) - n[2] - n[4]
    rows = (63, 64, 127, 128, 255, 256, 512, 1024)
    assert [training.batch_chunks(m, r) for r in rows] == [1, 2, 2, 2, 2, 2, 4, 8]
    # deferred where the chunks are short (under 128 rows) or where keeping them would allow fewer chunks
    assert [m._core.defers_grads(r) for r in rows] == [False, True, True, True, True, False, False, False]
    big = big_net("float64")  # 4.4 MB: chunks of 256 rows or more
    rows = (64, 255, 256, 512, 1023, 1024, 2048)
    assert [fm._core.batch_chunks(r, big._core.n_params, 8) for r in rows] == [2] * 7  # the gradients kept: two
    assert [training.batch_chunks(big, r) for r in rows] == [2, 2, 2, 2, 2, 4, 8]
    assert [big._core.defers_grads(r) for r in rows] == [True, True, False, False, False, True, True]
    assert not deferred_net("float64")[:2]._core.defers_grads(200)  # Linear(5, 170) alone: nothing to defer


def whole_batch_reference(make, dtype, batch, n, epochs=2):
    rng = np.random.default_rng(12)
    X, y = rng.standard_normal((n, 5)).astype(dtype), rng.integers(0, 4, n)
    ref = make(dtype)
    opt = fm.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9)
    for _ in range(epochs):
        for s in range(0, n, batch):
            unchunked_step(ref, X[s:s + batch], y[s:s + batch], fm.CrossEntropyLoss(), opt)
    return weights(ref)


@pytest.mark.parametrize("batch", [64, 65, 127, 255, 257])
@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-11), ("float32", 2e-5)])
def test_deferred_gradients_are_the_whole_batch_s(batch, dtype, rtol):
    # the deferred products (one over the batch's rows, in slices) and the kept chunks' sum: the same bits on
    # every thread count, odd batches (odd chunk sizes: even first rows) included, and the whole batch's step
    # (257 rows: two chunks of 128 rows or more, nothing deferred)
    assert deferred_net(dtype)._core.defers_grads(batch) == (batch != 257)
    runs = [deferred_fit(dtype, batch, t, shuffle=False) for t in (1, 2, 3, 8)]
    assert_same_bits(runs)
    r = whole_batch_reference(deferred_net, dtype, batch, 900)
    assert not np.array_equal(runs[0][0], r) or dtype == "float32"
    np.testing.assert_allclose(runs[0][0], r, rtol=rtol, atol=rtol * np.abs(r).max())


@pytest.mark.parametrize("batch, chunks", [(1024, 4), (1025, 4), (2048, 8)])
def test_deferred_gradients_give_a_big_model_more_chunks(batch, chunks):
    # four or eight chunks (not two) of the big net, its two big weights deferred: the same bits on every
    # thread count, and the whole batch's steps
    m = big_net("float64")
    assert training.batch_chunks(m, batch) == chunks and m._core.defers_grads(batch)
    runs = [deferred_fit("float64", batch, t, n=2100, shuffle=False, epochs=1, make=big_net) for t in (1, 2, 8)]
    assert_same_bits(runs)
    r = whole_batch_reference(big_net, "float64", batch, 2100, epochs=1)
    assert not np.array_equal(runs[0][0], r)
    np.testing.assert_allclose(runs[0][0], r, rtol=1e-11, atol=1e-11 * np.abs(r).max())


@pytest.mark.parametrize("batch", [129, 255])
def test_deferred_gradients_with_shuffling_dropout_and_bfloat16(batch):
    assert deferred_net("float32")._core.defers_grads(batch)
    for kw in ({"dtype": "float32"}, {"dtype": "float64", "drop": 0.3}, {"dtype": "float32", "precision": "bfloat16"},
               {"dtype": "float32", "precision": "bfloat16", "drop": 0.2}):
        assert_same_bits([deferred_fit(batch=batch, n_threads=t, **kw) for t in (1, 2, 5, 8)])


def test_deferred_bfloat16_gradients_are_near_float32s():
    # one product over the batch in bfloat16 (its rows kept as pairs by chunks of even first rows): near the
    # float32 fit after one epoch, as every bfloat16 product is
    w32, _ = deferred_fit("float32", 255, 2, shuffle=False, epochs=1)
    wbf, _ = deferred_fit("float32", 255, 2, shuffle=False, epochs=1, precision="bfloat16")
    assert not np.array_equal(w32, wbf)
    np.testing.assert_allclose(wbf, w32, atol=2e-2 * np.abs(w32).max())


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_train_step_defers_as_fit_does(dtype):
    rng = np.random.default_rng(13)
    X, y = rng.standard_normal((200, 5)).astype(dtype), rng.integers(0, 4, 200)
    assert deferred_net(dtype)._core.defers_grads(200)
    runs = []
    for nt in (1, 2, 8):
        m = deferred_net(dtype)
        opt = fm.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
        with training.blas_threads(nt):
            losses = [m.train_step(X, y, fm.CrossEntropyLoss(), opt) for _ in range(2)]
        runs.append((weights(m), losses))
    for w, losses in runs[1:]:
        np.testing.assert_array_equal(w, runs[0][0])
        assert losses == runs[0][1]
    f = deferred_net(dtype)
    f.fit(X, y, fm.CrossEntropyLoss(), fm.optim.SGD(f.parameters(), lr=0.05, momentum=0.9), epochs=2, batch_size=200,
          shuffle=False, verbose=0, n_threads=3)
    np.testing.assert_array_equal(weights(f), runs[0][0])


@pytest.mark.parametrize("make, batch", [(net, 128), (net, 1024), (deferred_net, 200), (big_net, 2048)])
@pytest.mark.parametrize("opt, precision", [("SGD", "float32"), ("Adam", "float32"), ("Adam", "bfloat16")])
def test_the_step_that_sums_the_chunks_is_the_sum_then_the_step(make, batch, opt, precision):
    # fit sums the chunks' gradients block by block inside the optimizer's step (each block just before its
    # update) unless something reads the whole gradient first: a clip that never clips takes the other
    # way, a pass of its own then the step. The same bits, and the same (whole) last gradient
    rng = np.random.default_rng(14)
    X, y = rng.standard_normal((2100, 5)).astype(np.float32), rng.integers(0, 4, 2100)
    out = []
    for clip in (None, 1e30):
        for n_threads in (1, 2, 3):
            m = make("float32")
            o = getattr(fm.optim, opt)(m.parameters(), lr=1e-2, **({"momentum": 0.9} if opt == "SGD" else {}))
            h = m.fit(X, y, fm.CrossEntropyLoss(), o, epochs=2, batch_size=batch, verbose=0, n_threads=n_threads,
                      precision=precision, clip_grad_norm=clip)
            out.append((np.concatenate([weights(m), m._core.flat_grads()]), h.history))
    assert training.batch_chunks(make("float32"), batch) >= 2
    assert_same_bits(out)


def unfused_net(dtype, seed=8):
    """deferred weights whose product no element-wise layer finishes (dy copied to the kept rows, not written
    there by an epilogue): one without a bias before Dropout, one inside a residual block before LayerNorm,
    and one whose input is the data itself"""
    return fm.Sequential(fm.Linear(5, 260), fm.Linear(260, 256, bias=False), fm.Dropout(0.1), fm.GELU(),
                         fm.Residual(fm.Linear(256, 256), fm.LayerNorm(256)), fm.SiLU(), fm.Linear(256, 4),
                         seed=seed, dtype=dtype)


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-11), ("float32", 2e-5)])
def test_deferred_gradients_without_an_epilogue(dtype, rtol):
    m = unfused_net(dtype)
    assert m._core.chunked_params == m._core.n_params - 260 * 256 - 256 * 256 and m._core.defers_grads(200)
    runs = [deferred_fit(dtype, 200, t, n=800, shuffle=False, make=unfused_net) for t in (1, 2, 5)]
    assert_same_bits(runs)
    # the reference: whole batches unchunked (Dropout's masks are the whole batch's either way)
    r = whole_batch_reference(unfused_net, dtype, 200, 800)
    np.testing.assert_allclose(runs[0][0], r, rtol=rtol, atol=rtol * np.abs(r).max())
