"""fit with two threads splits each batch in two halves, computed at once with
single-threaded products, and adds their gradients before the step. It is the
same computation in another summation order: these tests compare it with the
one-thread fit (float64 to ~1e-12, float32 to ~1e-5) for every loss and its
options, odd batch sizes, shuffling and sample weights, and check when fit
splits."""
import numpy as np
import pytest

import fastmlp as fm
from fastmlp import training


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


def fit_pair(kind, dtype, batch, n=700, shuffle=True, sample_weight=False, epochs=2):
    rng = np.random.default_rng(11)
    X, y, loss = case(kind, n, dtype, rng)
    sw = rng.integers(0, 3, n).astype(dtype) if sample_weight else None
    out = []
    for n_threads in (1, 2):
        m = net(dtype)
        opt = fm.optim.Adam(m.parameters(), lr=1e-2)
        h = m.fit(X, y, loss, opt, epochs=epochs, batch_size=batch, shuffle=shuffle, verbose=0, n_threads=n_threads,
                  sample_weight=sw)
        out.append((weights(m), h.history))
    return out


KINDS = ["ce", "ce_options", "ce_sum", "ce_probs", "mse", "huber", "bce", "poisson"]


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-11), ("float32", 2e-5)])
@pytest.mark.parametrize("kind", KINDS)
def test_two_threads_compute_the_one_thread_fit(kind, dtype, rtol):
    (w1, h1), (w2, h2) = fit_pair(kind, dtype, batch=128)
    assert not np.array_equal(w1, w2) or dtype == "float32"  # the halves really ran (another summation order)
    np.testing.assert_allclose(w2, w1, rtol=rtol, atol=rtol * np.abs(w1).max())
    np.testing.assert_allclose(h2["loss"], h1["loss"], rtol=rtol)
    if "accuracy" in h1:
        assert h1["accuracy"] == h2["accuracy"]


@pytest.mark.parametrize("batch", [64, 65, 127, 255, 256, 257, 700, 1000])
@pytest.mark.parametrize("shuffle", [True, False])
def test_odd_batches_and_order(batch, shuffle):
    (w1, h1), (w2, h2) = fit_pair("ce", "float64", batch=batch, shuffle=shuffle)
    np.testing.assert_allclose(w2, w1, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(h2["loss"], h1["loss"], rtol=1e-11)


@pytest.mark.parametrize("kind", ["ce", "ce_options", "mse", "bce"])
def test_sample_weights_with_zero_rows(kind):
    (w1, h1), (w2, h2) = fit_pair(kind, "float64", batch=100, sample_weight=True)
    np.testing.assert_allclose(w2, w1, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(h2["loss"], h1["loss"], rtol=1e-11)


def test_a_batch_whose_rows_are_all_ignored_is_skipped_with_any_threads():
    # 'mean' over no counted row is 0/0: the batch is skipped (as one of zero sample weights), on the
    # split path as on one thread; a training set with no counted row at all is refused
    rng = np.random.default_rng(0)
    X = rng.standard_normal((256, 5))
    y = np.r_[np.full(128, 3), rng.integers(0, 3, 128)]
    loss = fm.CrossEntropyLoss(ignore_index=3)
    for n_threads in (1, 2):
        m, ref = net("float64"), net("float64")
        m.fit(X, y, loss, fm.optim.SGD(m.parameters(), lr=0.1, momentum=0.9), batch_size=128, shuffle=False,
              verbose=0, n_threads=n_threads)
        ref.fit(X[128:], y[128:], loss, fm.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9), batch_size=128,
                shuffle=False, verbose=0, n_threads=n_threads)
        np.testing.assert_array_equal(m._core.flat_params(), ref._core.flat_params())
        with pytest.raises(ValueError, match="nothing to learn"):
            m.fit(X[:128], y[:128], loss, fm.optim.SGD(m.parameters(), lr=0.1), verbose=0, n_threads=n_threads)


def test_two_thread_fit_is_bit_reproducible():
    a, b = fit_pair("ce", "float32", batch=200), fit_pair("ce", "float32", batch=200)
    np.testing.assert_array_equal(a[1][0], b[1][0])


def test_when_fit_splits():
    small = net("float32")
    assert training.thread_plan(None, small, 200, split=True) == (1, 2)
    assert training.thread_plan(2, small, 64, split=True) == (1, 2)
    assert training.thread_plan(2, small, 32, split=True) == (2, 1)  # too few rows: the products use the threads
    assert training.thread_plan(None, small, 32, split=True) == (1, 1)  # ... and small ones only one
    assert training.thread_plan(1, small, 200, split=True) == (1, 1)
    assert training.thread_plan(2, small, 200, split=False) == (2, 1)  # predict, evaluate: never split
    seed = fm.Sequential(fm.Linear(784, 256), fm.ReLU(), fm.Linear(256, 10))
    assert training.thread_plan(2, seed, 32, split=True) == (2, 1)
    assert training.thread_plan(2, seed, 64, split=True) == (1, 2)  # two threads: split at any size
    assert training.thread_plan(2, seed, 256, split=True) == (1, 2)
    assert training.thread_plan(4, seed, 256, split=True) == (4, 1)  # more, big products (51M): OpenBLAS's threads
    assert training.thread_plan(4, small, 200, split=True) == (1, 2)  # ... small ones split
    bn = fm.Sequential(fm.Linear(5, 8), fm.BatchNorm1d(8), fm.Linear(8, 2))
    assert training.thread_plan(2, bn, 500, split=True) == (2, 1)  # batch statistics: the products get the threads
    bn.eval()  # eval mode does not matter: fit trains on batch statistics
    assert training.thread_plan(2, bn, 500, split=True) == (2, 1)
    n = training.default_threads()
    assert training.thread_plan(None, seed, 256, split=True) == ((1, 2) if n == 2 else (n, 1))
    dropout = fm.Sequential(fm.Linear(5, 8), fm.Dropout(0.5), fm.Linear(8, 2))
    assert training.thread_plan(2, dropout, 500, split=True) == (1, 2)  # each half draws its rows' masks
    assert training.thread_plan(2, fm.Sequential(fm.Linear(5, 8), fm.Dropout(0.0), fm.Linear(8, 2)), 500,
                                split=True) == (1, 2)


def dropout_fit(n_threads, batch, width=16, drop=fm.Dropout, dtype="float64", epochs=2, n=300):
    rng = np.random.default_rng(2)
    X, y = rng.standard_normal((n, 5)).astype(dtype), rng.integers(0, 2, n)
    m = fm.Sequential(fm.Linear(5, width), fm.ReLU(), drop(0.3), fm.Linear(width, 16), fm.Tanh(), drop(0.5),
                      fm.Linear(16, 2), seed=4, dtype=dtype)
    h = m.fit(X, y, fm.CrossEntropyLoss(), fm.optim.SGD(m.parameters(), lr=0.1), epochs=epochs, batch_size=batch,
              verbose=0, n_threads=n_threads)
    return weights(m), h.history["loss"], m._core.dropout_calls


@pytest.mark.parametrize("drop", [fm.Dropout, fm.AlphaDropout])
@pytest.mark.parametrize("batch, width", [(100, 16), (130, 7), (129, 7), (64, 1), (300, 3)])
def test_dropout_splits_with_the_one_thread_masks(drop, batch, width):
    # each half draws the whole batch's mask for its rows (also from an odd flat index: 65 rows of 7):
    # the two-thread fit is the one-thread fit in another summation order, with the same stream position
    (w1, l1, c1), (w2, l2, c2) = dropout_fit(1, batch, width, drop), dropout_fit(2, batch, width, drop)
    assert training.can_split(fm.Sequential(fm.Linear(5, width), drop(0.3)), batch)
    assert not np.array_equal(w1, w2)  # the halves really ran
    np.testing.assert_allclose(w2, w1, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(l2, l1, rtol=1e-11)
    assert c1 == c2 == 2 * -(-300 // batch)  # one stream step per batch, split or not


def test_dropout_model_with_two_threads_is_bit_reproducible():
    a, b = dropout_fit(2, 100, dtype="float32"), dropout_fit(2, 100, dtype="float32")
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1]


def test_an_error_in_the_second_half_reaches_the_caller():
    # the engine directly (the Python API checks labels first): a bad label in the worker's half
    m = net("float64")
    opt = fm.optim.SGD(m.parameters(), lr=0.1)
    X = np.zeros((128, 5))
    y = np.zeros(128, dtype=np.int64)
    y[-1] = 9
    with pytest.raises(ValueError, match="out of bounds"):
        m._core.train_epoch(X, y, {"kind": "cross_entropy"}, opt._core, 128, False, False, None, 2)
    # and the model still trains afterwards, on either path
    y[-1] = 1
    for workers in (1, 2):
        st = m._core.train_epoch(X, y, {"kind": "cross_entropy"}, opt._core, 128, False, False, None, workers)
        assert np.isfinite(st["loss"])


@pytest.mark.parametrize("n_threads", [1, 2])
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


def test_a_large_model_sums_the_halves_gradients_on_both_threads():
    # from 2^15 parameters the two halves' gradients are added on both threads, each a part of the
    # flat buffer (34,788 here: the parts meet at an odd place of the last layers' tensors)
    rng = np.random.default_rng(8)
    X, y = rng.standard_normal((400, 5)), rng.integers(0, 4, 400)
    out = []
    for n_threads in (1, 2):
        m = fm.Sequential(fm.Linear(5, 201), fm.ReLU(), fm.Linear(201, 163), fm.Tanh(), fm.Linear(163, 4), seed=2,
                          dtype="float64")
        assert sum(p.data.size for p in m.parameters()) == 34788
        h = m.fit(X, y, fm.CrossEntropyLoss(), fm.optim.SGD(m.parameters(), lr=0.05, momentum=0.9), epochs=2,
                  batch_size=128, verbose=0, n_threads=n_threads)
        out.append((weights(m), h.history["loss"]))
    assert not np.array_equal(out[0][0], out[1][0])
    np.testing.assert_allclose(out[1][0], out[0][0], rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(out[1][1], out[0][1], rtol=1e-11)
