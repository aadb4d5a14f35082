"""model.fit / predict / evaluate: the C++ epoch loop must do exactly what the
equivalent Python loop of train_step calls does."""
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import fastmlp as fm
from fastmlp import training


def data(n=300, d=6, k=3, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(dtype)
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0.5)
    return X, y % k


def net(dtype="float64", dropout=0.0, seed=1):
    layers = [fm.Linear(6, 16), fm.Tanh()]
    if dropout:
        layers.append(fm.Dropout(dropout))
    layers += [fm.Linear(16, 8), fm.GELU(), fm.Linear(8, 3)]
    return fm.Sequential(*layers, seed=seed, dtype=dtype)


def weights(m):
    return np.concatenate([p.data.ravel().copy() for p in m.parameters()])


@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("batch", [1, 7, 32, 300, 1000])
def test_fit_without_shuffle_equals_train_step_loop(dropout, batch):
    X, y = data()
    a, b = net(dropout=dropout), net(dropout=dropout)
    oa = fm.optim.Adam(a.parameters(), lr=1e-2)
    ob = fm.optim.Adam(b.parameters(), lr=1e-2)
    loss = fm.CrossEntropyLoss()
    # below 64 rows, the same products as train_step; from 64 fit splits the batch into chunks (on any
    # n_threads: tests/test_chunks.py), the same step in another summation order
    h = a.fit(X, y, loss, oa, epochs=2, batch_size=batch, shuffle=False, verbose=0, n_threads=1)
    losses = []
    for _ in range(2):
        ls = [(b.train_step(X[i:i + batch], y[i:i + batch], loss, ob), len(X[i:i + batch]))
              for i in range(0, len(X), batch)]
        losses.append(sum(v * n for v, n in ls) / len(X))
    if training.batch_chunks(a, batch) == 1:
        np.testing.assert_array_equal(weights(a), weights(b))
    else:
        np.testing.assert_allclose(weights(a), weights(b), rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(h.history["loss"], losses, rtol=1e-12)


def test_fit_with_regression_loss_and_float32():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((257, 6)).astype(np.float32)
    Y = (X @ rng.standard_normal((6, 3))).astype(np.float32)
    a, b = net("float32"), net("float32")
    oa, ob = fm.optim.SGD(a.parameters(), lr=0.01, momentum=0.9), fm.optim.SGD(b.parameters(), lr=0.01, momentum=0.9)
    a.fit(X, Y, fm.MSELoss(), oa, epochs=1, batch_size=48, shuffle=False, verbose=0, n_threads=1)  # one chunk
    for i in range(0, 257, 48):
        b.train_step(X[i:i + 48], Y[i:i + 48], fm.MSELoss(), ob)
    np.testing.assert_array_equal(weights(a), weights(b))


@pytest.mark.parametrize("n_threads", [1, 2])
def test_same_seed_same_threads_is_bit_identical(n_threads):
    X, y = data(n=500)
    runs = []
    for _ in range(2):
        m = net(dtype="float32", dropout=0.2, seed=7)
        opt = fm.optim.Adam(m.parameters(), lr=1e-2)
        m.fit(X, y, fm.CrossEntropyLoss(), opt, epochs=3, batch_size=16, verbose=0, n_threads=n_threads)
        runs.append(weights(m))
    np.testing.assert_array_equal(runs[0], runs[1])


def test_shuffling_changes_batches_and_epochs_differ():
    X, y = data(n=200)
    ws = []
    for shuffle in (False, True):
        m = net(seed=3)
        m.fit(X, y, fm.CrossEntropyLoss(), fm.optim.SGD(m.parameters(), lr=0.1), epochs=2, batch_size=10,
              shuffle=shuffle, verbose=0)
        ws.append(weights(m))
    assert not np.array_equal(ws[0], ws[1])


def test_history_has_the_logs_and_follows_the_schedule():
    X, y = data(n=240)
    m = net()
    opt = fm.optim.SGD(m.parameters(), lr=0.2)
    sched = fm.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    h = m.fit(X, y, fm.CrossEntropyLoss(), opt, epochs=5, batch_size=24, validation_data=(X[:50], y[:50]),
              scheduler=sched, verbose=0)
    assert set(h.history) == {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "time"}
    assert h.history["lr"] == [0.2, 0.2, 0.1, 0.1, 0.05]
    assert opt.param_groups[0]["lr"] == 0.05  # 5 scheduler steps: halved after epochs 2 and 4
    m.eval()
    out = m(X[:50])
    assert h.history["val_loss"][-1] == pytest.approx(fm.CrossEntropyLoss()(out, y[:50]), rel=1e-12)
    assert h.history["val_accuracy"][-1] == pytest.approx(np.mean(out.argmax(1) == y[:50]))
    assert all(0 <= a <= 1 for a in h.history["accuracy"])
    assert h.history["loss"][-1] < h.history["loss"][0]


def test_training_accuracy_counts_the_batches_seen():
    X, y = data(n=64)
    m = net()
    opt = fm.optim.SGD(m.parameters(), lr=0.0)  # lr 0: the model does not change during the epoch
    h = m.fit(X, y, fm.CrossEntropyLoss(), opt, epochs=1, batch_size=8, verbose=0)
    m.eval()
    assert h.history["accuracy"][0] == pytest.approx(np.mean(m(X).argmax(1) == y))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n,batch", [(0, None), (1, None), (1000, 7), (5000, None), (129, 64)])
def test_predict_equals_forward(dtype, n, batch):
    X, _ = data(n=max(n, 1), dtype=np.dtype(dtype))
    X = X[:n]
    m = net(dtype, dropout=0.5)
    p = m.predict(X, batch_size=batch)
    m.eval()
    ref = m(X) if n else np.zeros((0, 3), dtype)
    assert p.dtype == np.dtype(dtype) and p.shape == (n, 3)
    np.testing.assert_allclose(p, ref, rtol=1e-5 if dtype == "float32" else 1e-12, atol=1e-6 if dtype == "float32" else 1e-13)
    assert m.predict(X[:1][0] if n else np.zeros(6)).shape == (3,)


def test_predict_from_many_threads_at_once():
    X, _ = data(n=3000, dtype=np.float32)
    m = net("float32")
    ref = m.predict(X)
    results = [None] * 6

    def work(i):
        results[i] = m.predict(X[i * 100:], batch_size=37 + i)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for i, r in enumerate(results):
        np.testing.assert_allclose(r, ref[i * 100:], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_small_predicts_on_the_kept_workspace_give_the_bits_of_a_big_one(dtype):
    """Chunks of up to 512 rows reuse a workspace the model keeps between calls; bigger ones, and a predict
    that finds it in use, make their own. The bits are the same either way, whatever came before: a big
    predict, a failed one, one in bfloat16, other thread counts."""
    X, _ = data(n=1500, dtype=np.dtype(dtype))
    m = net(dtype, dropout=0.5)
    ref = m.predict(X)  # 1500 rows: a workspace of its own
    bf16 = m.predict(X, precision="bfloat16") if dtype == "float32" else None
    for rows in (1, 2, 7, 511, 512, 513, 1500, 3):
        for n_threads in (None, 1, 2, 3):
            np.testing.assert_array_equal(m.predict(X[:rows], n_threads=n_threads), ref[:rows])
    np.testing.assert_array_equal(m.predict(X, batch_size=100), ref)
    bad = X[:10].copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        m.predict(bad)
    np.testing.assert_array_equal(m.predict(X[:10]), ref[:10])
    if bf16 is not None:
        np.testing.assert_array_equal(m.predict(X[:10], precision="bfloat16"), bf16[:10])
        np.testing.assert_array_equal(m.predict(X[:10]), ref[:10])
    np.testing.assert_array_equal(m.predict(X[0]), ref[0])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_predict_of_a_ready_array_takes_the_lean_path_to_the_same_bits_and_errors(dtype):
    """A C-contiguous array of the model's dtype, 1-D or 2-D, with the default batch_size and precision
    goes straight to C++ (training.predict's lean path); anything else takes the general one. The same
    bits either way, and the same errors."""
    X, _ = data(n=700, dtype=np.dtype(dtype))
    m = net(dtype, dropout=0.5)
    ref = m.predict(np.asfortranarray(X))  # the general path (a copy made C-contiguous)
    other = np.float32 if dtype == "float64" else np.float64
    for n_threads in (None, 1, 2, 5):
        np.testing.assert_array_equal(m.predict(X, n_threads=n_threads), ref)
        np.testing.assert_array_equal(m.predict(X[3], n_threads=n_threads), ref[3])
        np.testing.assert_array_equal(m.predict(np.asfortranarray(X), n_threads=n_threads), ref)  # general path
    np.testing.assert_array_equal(m.predict(X[:0]), ref[:0])
    np.testing.assert_array_equal(m.predict(X.tolist()), ref)
    unpickled = pickle.loads(pickle.dumps(X))  # its dtype equals numpy's float dtype but is another object
    assert unpickled.dtype == X.dtype and unpickled.dtype is not X.dtype
    np.testing.assert_array_equal(m.predict(unpickled), ref)
    assert m.predict(X.astype(other)).dtype == np.dtype(dtype)
    bad = X.copy()
    bad[650, 2] = np.inf
    for arg in (bad, bad[650]):
        with pytest.raises(ValueError, match="NaN or inf"):
            m.predict(arg)
    with pytest.raises(ValueError, match="features"):
        m.predict(np.ones((2, 5), dtype))
    with pytest.raises(ValueError, match="features"):
        m.predict(np.ones(5, dtype))
    for n_threads in (0, True, 2.0):
        with pytest.raises((ValueError, TypeError), match="n_threads"):
            m.predict(X, n_threads=n_threads)
    with pytest.raises(ValueError, match="3-D"):
        m.predict(np.ones((2, 3, 2), dtype))
    np.testing.assert_array_equal(m.predict(X), ref)  # after the failed calls


def test_predict_sets_its_threads_for_the_call_only():
    from fastmlp import _core

    X, _ = data(n=600, dtype=np.float32)
    m = net("float32")
    before = _core.blas_get_num_threads()
    for n_threads in (1, 3, None):
        m.predict(X, n_threads=n_threads)
        assert _core.blas_get_num_threads() == before
    with pytest.raises(ValueError):
        m.predict(np.full((600, 6), np.nan, np.float32), n_threads=3)
    assert _core.blas_get_num_threads() == before


@pytest.mark.parametrize("how", ["step", "step_some", "named", "loaded"])
def test_opt_step_waits_while_another_thread_holds_the_model(how, tmp_path):
    """opt.step() on a model's parameters takes the model's gate (so that during a fit in another thread it
    steps between two of fit's steps): while another thread holds the model, it waits. It once did not:
    the C++ optimizer saw a view of a view, whose base is an array, and so found no model to lock."""
    m = net(dropout=0.0)
    opt = fm.optim.Adam(m.named_parameters() if how == "named" else m.parameters(), lr=0.01)
    X, y = data()
    m.train_step(X[:8], y[:8], fm.CrossEntropyLoss(), opt)
    if how == "loaded":
        m.save(tmp_path / "m.npz", optimizer=opt)
        m, opt = fm.load(tmp_path / "m.npz", optimizer=True)
        m.train_step(X[:8], y[:8], fm.CrossEntropyLoss(), opt)
    if how == "step_some":
        next(iter(m.parameters())).grad = None  # one parameter without a gradient: step_some
    before = weights(m)
    done = threading.Event()
    with m._core.hold(True):
        t = threading.Thread(target=lambda: (opt.step(), done.set()))
        t.start()
        assert not done.wait(0.3), "opt.step() ran while another thread held the model"
        assert np.array_equal(weights(m), before)
    t.join(10)
    assert done.is_set() and not np.array_equal(weights(m), before)


def test_early_stopping_restores_the_best_weights():
    X, y = data(n=200)
    Xv, yv = data(n=100, seed=9)
    m = net()
    opt = fm.optim.SGD(m.parameters(), lr=0.5, momentum=0.9)  # large lr: a noisy validation curve
    seen = {}

    def record(epoch, logs):
        seen[epoch] = (logs["val_loss"], weights(m))

    es = fm.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    h = m.fit(X, y, fm.CrossEntropyLoss(), opt, epochs=60, batch_size=20, validation_data=(Xv, yv),
              callbacks=[record, es], verbose=0)
    best = min(seen, key=lambda e: seen[e][0])
    assert es.best_epoch == best
    assert len(h.epoch) == es.stopped_epoch + 1 < 60
    assert h.epoch[-1] - best == 2  # patience 2, as Keras: stops on the second epoch without improvement
    np.testing.assert_array_equal(weights(m), seen[best][1])
    assert m.evaluate(Xv, yv, fm.CrossEntropyLoss())["loss"] == pytest.approx(seen[best][0], rel=1e-12)


def test_callable_callback_stops_training():
    X, y = data(n=50)
    m = net()
    h = m.fit(X, y, fm.CrossEntropyLoss(), fm.optim.SGD(m.parameters(), lr=0.1), epochs=10, verbose=0,
              callbacks=[lambda epoch, logs: epoch == 2])
    assert h.epoch == [0, 1, 2]


def test_ctrl_c_stops_at_a_batch_boundary_and_leaves_a_usable_model():
    X, y = data(n=20000, dtype=np.float32)
    m = net("float32")
    opt = fm.optim.Adam(m.parameters(), lr=1e-3)
    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        m.fit(X, y, fm.CrossEntropyLoss(), opt, epochs=10_000, batch_size=8, verbose=0)
    timer.cancel()
    assert np.isfinite(weights(m)).all()
    assert m.training  # mode restored
    before = weights(m)
    h = m.fit(X[:100], y[:100], fm.CrossEntropyLoss(), opt, epochs=1, verbose=0)
    assert np.isfinite(h.history["loss"][0]) and not np.array_equal(before, weights(m))


def test_a_second_fit_on_a_training_model_is_refused():
    X, y = data(n=20000, dtype=np.float32)
    m = net("float32")
    opt = fm.optim.SGD(m.parameters(), lr=1e-3)
    started, release = threading.Event(), threading.Event()

    def cb(epoch, logs):
        started.set()
        return release.is_set()

    errors = []

    def run():
        try:
            m.fit(X, y, fm.CrossEntropyLoss(), opt, epochs=10_000, batch_size=4, verbose=0, callbacks=[cb])
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    assert started.wait(30)
    try:
        for _ in range(20):  # refused every time, also between the other fit's epochs
            with pytest.raises(RuntimeError, match="already training"):
                m.fit(X[:10], y[:10], fm.CrossEntropyLoss(), opt, epochs=1, verbose=0)
    finally:
        release.set()
        t.join()
    assert not errors  # the first fit was not disturbed
    assert np.isfinite(weights(m)).all()


def test_divergence_is_reported_and_weights_stay_finite():
    rng = np.random.default_rng(0)
    X = (rng.standard_normal((512, 6)) * 1e3).astype(np.float32)
    Y = (X @ rng.standard_normal((6, 3)) * 1e3).astype(np.float32)
    m = net("float32")
    with pytest.raises(FloatingPointError, match=r"epoch \d+.*batch \d+.*lower learning rate"):
        m.fit(X, Y, fm.MSELoss(), fm.optim.SGD(m.parameters(), lr=10.0), epochs=50, batch_size=16, verbose=0)
    assert np.isfinite(weights(m)).all()


def test_weights_that_overflow_are_reset_to_the_epoch_start():
    # one huge but finite step: float32 weights overflow to inf while every loss was finite
    X = np.ones((4, 6), np.float32)
    Y = np.full((4, 3), 1e18, np.float32)
    m = net("float32")
    opt = fm.optim.SGD(m.parameters(), lr=1e20)
    start = weights(m)
    with pytest.raises(FloatingPointError, match="non-finite.*reset.*start of epoch 1"):
        m.fit(X, Y, fm.MSELoss(reduction="sum"), opt, epochs=1, batch_size=4, verbose=0)
    np.testing.assert_array_equal(weights(m), start)
    assert opt.state_dict()["state"][0]["step"] == 0


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"epochs": -1}, ValueError, "epochs"),
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"n_threads": 0}, ValueError, "n_threads"),
    ({"validation_data": (np.zeros((3, 6)),)}, ValueError, "pair"),
    ({"scheduler": object()}, TypeError, "scheduler"),
])
def test_fit_rejects_bad_arguments_and_changes_nothing(kwargs, exc, match):
    X, y = data(n=20)
    m = net()
    before = weights(m)
    with pytest.raises(exc, match=match):
        m.fit(X, y, fm.CrossEntropyLoss(), fm.optim.SGD(m.parameters(), lr=0.1), verbose=0, **kwargs)
    np.testing.assert_array_equal(before, weights(m))


def test_fit_rejects_bad_data():
    X, y = data(n=20)
    m = net()
    opt = fm.optim.SGD(m.parameters(), lr=0.1)
    loss = fm.CrossEntropyLoss()
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        m.fit(X, y[:-1], loss, opt, verbose=0)
    with pytest.raises(ValueError, match="X has 5 features, but the model is expecting 6"):
        m.fit(X[:, :5], y, loss, opt, verbose=0)
    with pytest.raises(ValueError, match="Reshape your data|reshape your data"):
        m.fit(X[:, 0], y, loss, opt, verbose=0)
    Xn = X.copy()
    Xn[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        m.fit(Xn, y, loss, opt, verbose=0)
    with pytest.raises(ValueError, match="out of bounds"):
        m.fit(X, y + 5, loss, opt, verbose=0)
    with pytest.raises(TypeError, match="optimizer parameters are float64"):
        m32 = net("float32")
        m32.fit(X, y, loss, opt, verbose=0)


def test_fit_uses_c_contiguous_input_in_place_and_never_writes_it():
    X, y = data(n=64, dtype=np.float32)
    Xf = np.asfortranarray(X)
    X.setflags(write=False)
    a, b = net("float32"), net("float32")
    a.fit(X, y, fm.CrossEntropyLoss(), fm.optim.SGD(a.parameters(), lr=0.1), epochs=2, batch_size=8, verbose=0)
    b.fit(Xf, y, fm.CrossEntropyLoss(), fm.optim.SGD(b.parameters(), lr=0.1), epochs=2, batch_size=8, verbose=0)
    np.testing.assert_array_equal(weights(a), weights(b))
    np.testing.assert_array_equal(Xf, X)


def test_progress_bar_is_drawn_with_tqdm(capsys):
    pytest.importorskip("tqdm")
    X, y = data(n=64)
    m = net()
    m.fit(X, y, fm.CrossEntropyLoss(), fm.optim.SGD(m.parameters(), lr=0.1), epochs=2, verbose=1)
    err = capsys.readouterr().err
    assert "epoch 1/2" in err and "epoch 2/2" in err and "loss=" in err


def test_fit_resumes_reproducibly_after_save_and_load(tmp_path):
    X, y = data(n=120)
    a = net(dropout=0.2)
    oa = fm.optim.Adam(a.parameters(), lr=1e-2)
    a.fit(X, y, fm.CrossEntropyLoss(), oa, epochs=2, batch_size=16, verbose=0)
    a.save(tmp_path / "m.npz", optimizer=oa)
    b, ob = fm.load(tmp_path / "m.npz", optimizer=True)
    for m, o in ((a, oa), (b, ob)):
        m.fit(X, y, fm.CrossEntropyLoss(), o, epochs=2, batch_size=16, verbose=0)
    np.testing.assert_array_equal(weights(a), weights(b))


def test_sample_weights_are_gathered_with_their_rows():
    X, y = data(n=90)
    w = np.random.default_rng(5).uniform(0, 3, 90)
    a, b = net(), net()
    oa, ob = fm.optim.SGD(a.parameters(), lr=0.1), fm.optim.SGD(b.parameters(), lr=0.1)
    a.fit(X, y, fm.CrossEntropyLoss(), oa, epochs=1, batch_size=9, shuffle=False, sample_weight=w, verbose=0)
    # reference: each batch's loss is sum_i w_i l_i / sum_i w_i
    for i in range(0, 90, 9):
        out = b(X[i:i + 9])
        p = np.exp(out - out.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        g = p.copy()
        g[np.arange(9), y[i:i + 9]] -= 1
        g *= (w[i:i + 9] / w[i:i + 9].sum())[:, None]
        ob.zero_grad()
        b.backward(g)
        ob.step()
    np.testing.assert_allclose(weights(a), weights(b), rtol=1e-10, atol=1e-12)
    # shuffled: weight 2 on a row is the same as that row appearing twice in a full batch
    c, d = net(), net()
    Xd = np.concatenate([X, X[:10]])
    yd = np.concatenate([y, y[:10]])
    w2 = np.ones(90)
    w2[:10] = 2
    c.fit(X, y, fm.CrossEntropyLoss(), fm.optim.SGD(c.parameters(), lr=0.1), batch_size=90, sample_weight=w2, verbose=0)
    d.fit(Xd, yd, fm.CrossEntropyLoss(), fm.optim.SGD(d.parameters(), lr=0.1), batch_size=100, verbose=0)
    np.testing.assert_allclose(weights(c), weights(d), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="sample_weight"):
        c.fit(X, y, fm.CrossEntropyLoss(), fm.optim.SGD(c.parameters(), lr=0.1), sample_weight=-w, verbose=0)


def test_poisson_nll_loss_matches_its_definition():
    rng = np.random.default_rng(2)
    x, t = rng.standard_normal((5, 3)), rng.poisson(2.0, (5, 3)).astype(float)
    loss = fm.PoissonNLLLoss()
    assert loss(x, t) == pytest.approx(np.mean(np.exp(x) - t * x), rel=1e-12)
    np.testing.assert_allclose(loss.backward(), (np.exp(x) - t) / x.size, rtol=1e-12)
    rate = np.exp(x)
    lin = fm.PoissonNLLLoss(log_input=False, reduction="sum")
    assert lin(rate, t) == pytest.approx(np.sum(rate - t * np.log(rate + 1e-8)), rel=1e-12)
    np.testing.assert_allclose(lin.backward(), 1 - t / (rate + 1e-8), rtol=1e-12)


def test_models_pickle_and_deepcopy_with_their_training_state():
    import copy
    import pickle

    X, y = data(n=60)
    a = net(dropout=0.3)
    a.fit(X, y, fm.CrossEntropyLoss(), fm.optim.SGD(a.parameters(), lr=0.1), epochs=2, batch_size=8, verbose=0)
    for b in (pickle.loads(pickle.dumps(a)), copy.deepcopy(a)):
        np.testing.assert_array_equal(weights(a), weights(b))
        assert b.dtype == a.dtype and repr(b) == repr(a)
        b.fit(X, y, fm.CrossEntropyLoss(), fm.optim.SGD(b.parameters(), lr=0.1), epochs=1, batch_size=8, verbose=0)
    a.fit(X, y, fm.CrossEntropyLoss(), fm.optim.SGD(a.parameters(), lr=0.1), epochs=1, batch_size=8, verbose=0)
    np.testing.assert_array_equal(weights(a), weights(b))  # same shuffles and dropout masks after the copy


def test_saved_files_get_the_usual_permissions_and_text_files_a_clear_error(tmp_path):
    old = os.umask(0o022)
    try:
        net().save(tmp_path / "m.npz")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "m.npz").st_mode & 0o777 == 0o644
    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not an .npz archive"):
        fm.load(tmp_path / "t.csv")


def test_a_batch_whose_weights_are_all_zero_is_skipped():
    X, y = data(n=40)
    w = np.ones(40)
    w[:10] = 0
    a, b = net(), net()
    a.fit(X, y, fm.CrossEntropyLoss(), fm.optim.SGD(a.parameters(), lr=0.1), batch_size=10, shuffle=False,
          sample_weight=w, verbose=0)
    b.fit(X[10:], y[10:], fm.CrossEntropyLoss(), fm.optim.SGD(b.parameters(), lr=0.1), batch_size=10, shuffle=False,
          verbose=0)
    np.testing.assert_allclose(weights(a), weights(b), rtol=1e-12)


def test_default_threads_are_one_for_small_products_and_all_cores_for_large():
    from fastmlp.training import SMALL_WORK, auto_threads, default_threads

    small = fm.Sequential(fm.Linear(64, 100), fm.ReLU(), fm.Linear(100, 10))
    assert auto_threads(small, 200) == 1
    big = fm.Sequential(fm.Linear(784, 1024), fm.ReLU(), fm.Linear(1024, 10))
    assert auto_threads(big, 512) == default_threads()
    assert auto_threads(big, SMALL_WORK // (784 * 1024) + 1) == default_threads()


def test_default_threads_see_every_product_and_follow_the_model_changes():
    from fastmlp.training import SMALL_WORK, auto_threads, default_threads

    rows = SMALL_WORK // (512 * 512) + 1  # enough rows for a 512x512 product, too few for 64x64
    m = fm.Sequential(fm.Linear(64, 64), fm.ReLU(), fm.Linear(64, 10))
    assert auto_threads(m, rows) == 1
    m.insert(1, fm.Residual(fm.Linear(64, 64), fm.ReLU()))
    assert auto_threads(m, rows) == 1
    m[1] = fm.Residual(fm.Linear(64, 512), fm.ReLU(), fm.Linear(512, 64))  # inside a block
    assert m._largest_product == 512 * 64
    m.append(fm.Linear(10, 512)).append(fm.Linear(512, 512))
    assert auto_threads(m, rows) == default_threads()
    del m[-1]
    assert m._largest_product == 512 * 64


def test_fork_during_a_long_predict_in_small_chunks_does_not_hang_the_child():
    """fork waits up to a second for every model's gate (cpp/gate.cpp); a predict in another thread
    that outlasts it keeps the lock of the workspace the model keeps for small chunks, copied locked
    into the child. The child's predicts must make their own workspace, not wait for that lock."""
    src = textwrap.dedent("""
        import os, signal, threading, time
        import numpy as np
        import fastmlp as fm
        m = fm.Sequential(fm.Linear(64, 2048), fm.ReLU(), fm.Linear(2048, 2048), fm.ReLU(), fm.Linear(2048, 10),
                          seed=0, dtype="float32").eval()
        X = np.random.default_rng(0).normal(size=(40000, 64)).astype(np.float32)
        ref = m.predict(X[:100])
        started = threading.Event()
        def long_predict():
            started.set()
            m.predict(X, batch_size=500)  # seconds, all on the kept workspace
        t = threading.Thread(target=long_predict)
        t.start()
        started.wait()
        time.sleep(0.2)
        pid = os.fork()
        if pid == 0:
            signal.alarm(60)  # a child that hangs dies, and the parent sees it
            ok = np.array_equal(m.predict(X[:100]), ref) and np.array_equal(m.predict(X[:100], batch_size=7), ref)
            os._exit(0 if ok else 3)
        status = os.waitpid(pid, 0)[1]
        t.join()
        assert status == 0, status
        assert np.array_equal(m.predict(X[:100]), ref)
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout + r.stderr


def _wide_net():
    # float32 Linears of 256+ inputs: their training forwards run the fixed-order product, on the weights'
    # panels packed once per batch (Model::weight_forms) when a pass has 48+ rows and 64+ outputs
    return fm.Sequential(fm.Linear(300, 256), fm.ReLU(), fm.Linear(256, 80), fm.ReLU(), fm.Linear(80, 3), seed=2,
                         dtype="float32")


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("batch", [47, 60])
def test_fit_on_packed_weights_equals_a_loop_of_forward_backward_and_step(n_threads, batch):
    """fit (one chunk a batch below 64 rows) packs the weights' panels once per batch for its forwards; a
    loop of m(x), backward and opt.step() packs them in each forward: the same bits, on 1 or 2 threads, and
    the packs follow the weights as they change (a stale pack would not)."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((300, 300)).astype(np.float32)
    y = rng.integers(0, 3, 300)
    a, b = _wide_net(), _wide_net()
    oa = fm.optim.SGD(a.parameters(), lr=0.05, momentum=0.9)
    ob = fm.optim.SGD(b.parameters(), lr=0.05, momentum=0.9)
    loss = fm.CrossEntropyLoss()
    a.fit(X, y, loss, oa, epochs=2, batch_size=batch, shuffle=False, verbose=0, n_threads=n_threads)
    b.train()
    for _ in range(2):
        for i in range(0, len(X), batch):
            b.zero_grad()
            loss(b(X[i:i + batch]), y[i:i + batch])
            b.backward(loss.backward())
            ob.step()
    np.testing.assert_array_equal(weights(a), weights(b))
    assert not np.array_equal(weights(a), weights(_wide_net()))
