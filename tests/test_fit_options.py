"""fit's Keras options (validation_split, class_weight, initial_epoch), each against
a hand-computed expectation."""
import numpy as np
import pytest

import fastmlp as fm


def _data(n=50, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    return X, (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0.5)


def _model(seed=1):
    return fm.Sequential(fm.Linear(4, 8), fm.Tanh(), fm.Linear(8, 3), seed=seed, dtype="float64")


def _fit(m, X, y, **kw):
    opt = fm.optim.SGD(m.parameters(), lr=0.1, momentum=0.5)
    return m.fit(X, y, fm.CrossEntropyLoss(), opt, batch_size=8, verbose=0, n_threads=1, **kw)


@pytest.mark.parametrize("n,split,cut", [(50, 0.2, 40), (7, 0.5, 3), (10, 0.15, 8)])
def test_validation_split_is_the_last_rows_before_shuffling(n, split, cut):
    """Keras: the first int(n (1 - split)) rows train, the rest validate, whatever shuffle does."""
    X, y = _data(n)
    a, b = _model(), _model()
    ha = _fit(a, X, y, epochs=3, validation_split=split)
    hb = _fit(b, X[:cut], y[:cut], epochs=3, validation_data=(X[cut:], y[cut:]))
    assert ha.history["val_loss"] == hb.history["val_loss"]
    assert ha.history["loss"] == hb.history["loss"]
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[k], v)


def test_validation_split_with_sample_weight_splits_the_weights():
    X, y = _data(20)
    w = np.linspace(0.5, 2.0, 20)
    a, b = _model(), _model()
    ha = _fit(a, X, y, epochs=2, validation_split=0.25, sample_weight=w)
    hb = _fit(b, X[:15], y[:15], epochs=2, validation_data=(X[15:], y[15:]), sample_weight=w[:15])
    assert ha.history["loss"] == hb.history["loss"] and ha.history["val_loss"] == hb.history["val_loss"]
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[k], v)


@pytest.mark.parametrize("kw,match", [(dict(validation_split=1.0), "validation_split"),
                                      (dict(validation_split=-0.1), "validation_split"),
                                      (dict(validation_split=1e-17), "no validation"),
                                      (dict(validation_split=0.99), "no training"),
                                      (dict(validation_split=0.2, validation_data=(np.ones((2, 4)), [0, 1])),
                                       "not both")])
def test_validation_split_errors(kw, match):
    X, y = _data(10)
    m = _model()
    before = m.state_dict()
    with pytest.raises(ValueError, match=match):
        _fit(m, X, y, **kw)
    for k, v in before.items():
        np.testing.assert_array_equal(m.state_dict()[k], v)


def test_class_weight_equals_the_sample_weights_it_stands_for():
    X, y = _data(40)
    cw = {0: 0.5, 1: 2.0}  # class 2 not in the dict: weight 1, as Keras
    sw = np.linspace(0.1, 1.0, 40)
    per_row = np.array([cw.get(int(c), 1.0) for c in y])
    a, b, c = _model(), _model(), _model()
    ha = _fit(a, X, y, epochs=3, class_weight=cw, sample_weight=sw)
    hb = _fit(b, X, y, epochs=3, sample_weight=per_row * sw)
    hc = _fit(c, X, y, epochs=3, sample_weight=sw)
    assert ha.history["loss"] == hb.history["loss"]
    assert ha.history["loss"] != hc.history["loss"]
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[k], v)


def test_class_weight_one_hot_and_one_column_targets():
    """The class of a row of a probability target is its argmax; of a (n, 1) 0/1 target its value."""
    X, y = _data(30)
    onehot = np.eye(3)[y]
    a, b = _model(), _model()
    opt = lambda m: fm.optim.SGD(m.parameters(), lr=0.1)  # noqa: E731
    a.fit(X, onehot, fm.CrossEntropyLoss(), opt(a), epochs=2, batch_size=8, verbose=0, class_weight={1: 3.0})
    b.fit(X, onehot, fm.CrossEntropyLoss(), opt(b), epochs=2, batch_size=8, verbose=0,
          sample_weight=np.where(y == 1, 3.0, 1.0))
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[k], v)
    yb = (y == 1).astype(np.float64).reshape(-1, 1)
    a = fm.Sequential(fm.Linear(4, 1), seed=2, dtype="float64")
    b = fm.Sequential(fm.Linear(4, 1), seed=2, dtype="float64")
    a.fit(X, yb, fm.BCEWithLogitsLoss(), opt(a), epochs=2, batch_size=8, verbose=0, class_weight={0: 0.25})
    b.fit(X, yb, fm.BCEWithLogitsLoss(), opt(b), epochs=2, batch_size=8, verbose=0,
          sample_weight=np.where(y == 1, 1.0, 0.25))
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[k], v)


@pytest.mark.parametrize("cw,err", [([1.0], TypeError), ({0: -1.0}, ValueError), ({"a": 1.0}, TypeError),
                                    ({0: float("nan")}, ValueError)])
def test_class_weight_errors(cw, err):
    X, y = _data(10)
    with pytest.raises(err, match="class_weight"):
        _fit(_model(), X, y, class_weight=cw)


def test_initial_epoch_counts_epochs_from_it():
    X, y = _data(30)
    seen = []
    h = _fit(_model(), X, y, epochs=5, initial_epoch=2, callbacks=[lambda epoch, logs: seen.append(epoch)])
    assert seen == [2, 3, 4]  # callbacks see the absolute epoch index
    assert h.epoch == [2, 3, 4] and len(h.history["loss"]) == 3  # epochs - initial_epoch entries
    assert len(_fit(_model(), X, y, epochs=2, initial_epoch=2).history.get("loss", [])) == 0
    with pytest.raises(ValueError, match="initial_epoch"):
        _fit(_model(), X, y, epochs=2, initial_epoch=-1)


def test_initial_epoch_resumes_a_split_fit():
    """fit(epochs=2) then fit(epochs=4, initial_epoch=2) trains as fit(epochs=4): 4 epochs in all."""
    X, y = _data(30)
    a, b = _model(), _model()
    oa = fm.optim.SGD(a.parameters(), lr=0.1, momentum=0.5)
    ob = fm.optim.SGD(b.parameters(), lr=0.1, momentum=0.5)
    loss = fm.CrossEntropyLoss()
    a.fit(X, y, loss, oa, epochs=4, batch_size=8, verbose=0)
    b.fit(X, y, loss, ob, epochs=2, batch_size=8, verbose=0)
    b.fit(X, y, loss, ob, epochs=4, initial_epoch=2, batch_size=8, verbose=0)
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[k], v)


def _regression(n, seed=3):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    return X, np.stack([X[:, 0] * 2 - X[:, 1], np.sin(X[:, 2])], axis=1) + 0.1 * rng.normal(size=(n, 2))


@pytest.mark.parametrize("n,batch,threads", [(37, 8, 1), (300, 128, 2), (1, 4, 1)])
def test_metrics_mae_mse_are_the_training_outputs_errors(n, batch, threads):
    """mae/mse: the mean over the epoch's trained rows of |out - y| and (out - y)^2, the outputs
    being those each batch was trained on (before its step): a train_step loop in NumPy's words."""
    X, Y = _regression(n)
    Xv, Yv = _regression(11, seed=4)
    a = fm.Sequential(fm.Linear(4, 8), fm.Tanh(), fm.Linear(8, 2), seed=5, dtype="float64")
    b = fm.Sequential(fm.Linear(4, 8), fm.Tanh(), fm.Linear(8, 2), seed=5, dtype="float64")
    oa, ob = fm.optim.Adam(a.parameters(), lr=0.01), fm.optim.Adam(b.parameters(), lr=0.01)
    h = a.fit(X, Y, fm.MSELoss(), oa, epochs=2, batch_size=batch, shuffle=False, verbose=0, n_threads=threads,
              metrics=["mae", "mse"], validation_data=(Xv, Yv))
    for epoch in range(2):
        abs_sum = sq_sum = 0.0
        for s in range(0, n, batch):
            d = b.predict(X[s:s + batch]) - Y[s:s + batch]
            abs_sum, sq_sum = abs_sum + np.abs(d).sum(), sq_sum + (d * d).sum()
            b.train_step(X[s:s + batch], Y[s:s + batch], fm.MSELoss(), ob)
        assert h.history["mae"][epoch] == pytest.approx(abs_sum / Y.size, rel=1e-10)
        assert h.history["mse"][epoch] == pytest.approx(sq_sum / Y.size, rel=1e-10)
        assert h.history["loss"][epoch] == pytest.approx(h.history["mse"][epoch], rel=1e-10)  # MSELoss is mse
        if epoch == 1:
            d = b.predict(Xv) - Yv
            assert h.history["val_mae"][1] == pytest.approx(np.abs(d).mean(), rel=1e-10)
            assert h.history["val_mse"][1] == pytest.approx((d * d).mean(), rel=1e-10)


def test_metrics_float32_and_accuracy():
    X, Y = _regression(50)
    m = fm.Sequential(fm.Linear(4, 2), seed=5, dtype="float32")
    before = m.predict(X)
    h = m.fit(X, Y, fm.L1Loss(), fm.optim.SGD(m.parameters(), lr=0.0), batch_size=16, verbose=0, metrics="mae")
    assert h.history["mae"][0] == pytest.approx(np.abs(before - Y).mean(), rel=1e-5)
    assert h.history["mae"][0] == pytest.approx(h.history["loss"][0], rel=1e-5)
    Xc, y = _data(30)
    hc = _fit(_model(), Xc, y, epochs=1, metrics=["accuracy"])
    assert 0 <= hc.history["accuracy"][0] <= 1


@pytest.mark.parametrize("metrics,loss,match", [(["auc"], "mse", "unknown metric"), (["accuracy"], "mse", "classification"),
                                                (["mae"], "ce", "regression loss")])
def test_metrics_errors(metrics, loss, match):
    X, Y = _regression(10)
    m = fm.Sequential(fm.Linear(4, 3), seed=5, dtype="float64")
    y = (X[:, 0] > 0).astype(np.int64)
    fn, t = (fm.MSELoss(), np.c_[Y, Y[:, :1]]) if loss == "mse" else (fm.CrossEntropyLoss(), y)
    with pytest.raises(ValueError, match=match):
        m.fit(X, t, fn, fm.optim.SGD(m.parameters(), lr=0.1), verbose=0, metrics=metrics)


@pytest.mark.parametrize("spe", [3, 5, 7, 1])
def test_steps_per_epoch_continues_through_the_data(spe):
    """Unshuffled: epoch e trains batches e*spe .. (e+1)*spe - 1 of the data cycled (5 per pass);
    the same steps as a train_step loop, and each epoch's loss the mean of its batches'."""
    X, y = _data(37)  # 5 batches of 8: the last has 5 rows
    a, b = _model(), _model()
    oa = fm.optim.SGD(a.parameters(), lr=0.1, momentum=0.5)
    ob = fm.optim.SGD(b.parameters(), lr=0.1, momentum=0.5)
    loss = fm.CrossEntropyLoss()
    h = a.fit(X, y, loss, oa, epochs=3, batch_size=8, shuffle=False, verbose=0, n_threads=1, steps_per_epoch=spe)
    assert len(h.history["loss"]) == 3
    k = 0
    for epoch in range(3):
        losses, rows = [], []
        for _ in range(spe):
            s = (k % 5) * 8
            losses.append(b.train_step(X[s:s + 8], y[s:s + 8], loss, ob))
            rows.append(len(X[s:s + 8]))
            k += 1
        assert h.history["loss"][epoch] == pytest.approx(np.average(losses, weights=rows), rel=1e-12)
    for key, v in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[key], v)


def test_steps_per_epoch_shuffled_passes_are_the_ordinary_epochs():
    """Shuffled, the passes are those of ordinary epochs: 2 epochs of 10 batches == 4 of one pass (5)."""
    X, y = _data(40)
    a, b, c = _model(), _model(), _model()
    ha = _fit(a, X, y, epochs=2, steps_per_epoch=10)
    hc = _fit(c, X, y, epochs=4, steps_per_epoch=5)
    _fit(b, X, y, epochs=4)
    for key, v in b.state_dict().items():
        np.testing.assert_array_equal(a.state_dict()[key], v)
        np.testing.assert_array_equal(c.state_dict()[key], v)
    assert len(ha.history["loss"]) == 2 and len(hc.history["loss"]) == 4


def test_steps_per_epoch_with_a_batch_schedule():
    """A per-batch schedule steps once per trained batch (the epoch's steps_per_epoch of them)."""
    from fastmlp.optim.lr_scheduler import StepLR

    X, y = _data(40)
    m = _model()
    opt = fm.optim.SGD(m.parameters(), lr=1.0)
    sched = StepLR(opt, step_size=1, gamma=0.5)
    h = m.fit(X, y, fm.CrossEntropyLoss(), opt, epochs=2, batch_size=8, verbose=0, steps_per_epoch=7,
              scheduler=sched, scheduler_interval="batch")
    assert h.history["lr"] == pytest.approx([0.5 ** 6, 0.5 ** 13])
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 ** 14)


@pytest.mark.parametrize("spe,err", [(0, ValueError), (1.5, TypeError)])
def test_steps_per_epoch_errors(spe, err):
    X, y = _data(10)
    with pytest.raises(err, match="steps_per_epoch"):
        _fit(_model(), X, y, steps_per_epoch=spe)
    m = _model()
    with pytest.raises(ValueError, match="steps_per_epoch"):
        m.fit(X, y, fm.CrossEntropyLoss(), fm.optim.LBFGS(m.parameters()), verbose=0, steps_per_epoch=2)
