"""Keras's callbacks in fit: call order and logs, ModelCheckpoint (resuming from a
checkpoint is bit-identical), CSVLogger, LambdaCallback, TerminateOnNaN,
ReduceLROnPlateau, EarlyStopping's messages and fit's verbose output."""
import csv
import re

import numpy as np
import pytest

import fastmlp as fm
from fastmlp.callbacks import (Callback, CSVLogger, EarlyStopping, LambdaCallback, ModelCheckpoint,
                               ReduceLROnPlateau, TerminateOnNaN)


def data(n=90, d=5, k=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    return X, (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0.5)


def net(seed=1):
    return fm.Sequential(fm.Linear(5, 8), fm.Tanh(), fm.Dropout(0.2), fm.Linear(8, 3), seed=seed, dtype="float64")


def weights(m):
    return np.concatenate([p.data.ravel().copy() for p in m.parameters()])


def fit(m, opt, epochs, callbacks=(), val=True, **kw):
    X, y = data()
    kw.setdefault("verbose", 0)
    return m.fit(X, y, fm.CrossEntropyLoss(), opt, epochs=epochs, batch_size=16,
                 validation_data=data(30, seed=5) if val else None, callbacks=list(callbacks), **kw)


def scores(values):
    """A callable that puts values[epoch] into the logs as 'score' (before the callbacks after it)."""
    def score(epoch, logs):
        logs["score"] = values[epoch]
    return score


# --------------------------------------------------------------------------- the protocol

class Recorder(Callback):
    def __init__(self):
        self.calls = []

    def set_model(self, model):
        super().set_model(model)
        self.calls.append(("set_model", model))

    def set_params(self, params):
        super().set_params(params)
        self.calls.append(("set_params", dict(params)))

    def on_train_begin(self, logs=None):
        self.calls.append(("train_begin", dict(logs)))

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(("epoch_begin", epoch, dict(logs)))

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("epoch_end", epoch, dict(logs)))

    def on_train_end(self, logs=None):
        self.calls.append(("train_end", dict(logs)))


def test_call_order_params_and_logs_are_keras():
    m = net()
    opt = fm.optim.Adam(m.parameters(), lr=1e-2)
    sched = fm.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    rec = Recorder()
    h = fit(m, opt, 3, [rec], scheduler=sched)
    names = [c[0] for c in rec.calls]
    assert names == ["set_model", "set_params", "train_begin"] + ["epoch_begin", "epoch_end"] * 3 + ["train_end"]
    assert rec.calls[0][1] is m and rec.model is m
    params = rec.calls[1][1]
    assert params["epochs"] == 3 and params["steps"] == 6 and params["verbose"] == 0
    assert params["optimizer"] is opt and params["scheduler"] is sched
    assert [c[1] for c in rec.calls if c[0] == "epoch_end"] == [0, 1, 2]
    ends = [c[2] for c in rec.calls if c[0] == "epoch_end"]
    assert set(ends[0]) == set(h.history) == {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "time"}
    for i, logs in enumerate(ends):
        assert logs == {k: v[i] for k, v in h.history.items()}
    assert [e["lr"] for e in ends] == [1e-2, 5e-3, 2.5e-3]
    assert rec.calls[-1][1] == ends[-1]  # on_train_end gets the last epoch's logs, as Keras


@pytest.mark.parametrize("how", ["stop_training", "return"])
def test_a_callback_stops_training(how):
    class Stop(Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                if how == "return":
                    return True
                self.model.stop_training = True

    rec = Recorder()
    m = net()
    h = fit(m, fm.optim.SGD(m.parameters(), lr=0.1), 10, [Stop(), rec])
    assert h.epoch == [0, 1]
    assert [c[0] for c in rec.calls][-3:] == ["epoch_begin", "epoch_end", "train_end"]  # the epoch finishes
    h = fit(m, fm.optim.SGD(m.parameters(), lr=0.1), 2)  # the next fit starts afresh
    assert h.epoch == [0, 1] and m.stop_training is False


# --------------------------------------------------------------------------- ModelCheckpoint

def test_checkpoint_resumes_bit_identically(tmp_path):
    def setup():
        m = net()
        opt = fm.optim.Adam(m.parameters(), lr=1e-2)
        return m, opt, fm.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)

    m, opt, sched = setup()
    path = str(tmp_path / "ckpt-{epoch:02d}-{val_loss:.3f}.npz")
    h = fit(m, opt, 2, [ModelCheckpoint(path, monitor="loss")], scheduler=sched)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f"ckpt-{e + 1:02d}-{v:.3f}.npz" for e, v in enumerate(h.history["val_loss"])]

    m2, opt2, sched2 = fm.load(tmp_path / names[0], optimizer=True, scheduler=True)
    h2 = fit(m2, opt2, 1, scheduler=sched2)
    np.testing.assert_array_equal(weights(m2), weights(m))
    assert h2.history["loss"] == h.history["loss"][1:] and opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    m3 = fm.load(tmp_path / names[1])  # the last checkpoint is the model at the end
    np.testing.assert_array_equal(weights(m3), weights(m))


def test_checkpoint_leaves_out_what_cannot_be_saved(tmp_path):
    m = net()
    opt = fm.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    sched = fm.optim.lr_scheduler.LambdaLR(opt, lambda e: 0.5 ** e)  # a Python function: not saved
    fit(m, opt, 1, [ModelCheckpoint(tmp_path / "a.npz"), ModelCheckpoint(tmp_path / "w.npz", save_weights_only=True)],
        scheduler=sched)
    _, o, s = fm.load(tmp_path / "a.npz", optimizer=True, scheduler=True)
    np.testing.assert_array_equal(o._core.state(0), opt._core.state(0))  # the momentum buffers
    assert s is None
    _, o = fm.load(tmp_path / "w.npz", optimizer=True)
    assert o is None
    np.testing.assert_array_equal(weights(fm.load(tmp_path / "w.npz")), weights(m))


@pytest.mark.parametrize("mode, values, saved, not_improved", [
    ("min", [3.0, 1.0, 2.0, 0.5, 0.5], [0, 1, 3], "Epoch 3: score did not improve from 1.00000"),
    ("max", [3.0, 1.0, 4.0, 4.0, 5.0], [0, 2, 4], "Epoch 2: score did not improve from 3.00000"),
])
def test_checkpoint_save_best_only(tmp_path, capsys, mode, values, saved, not_improved):
    m = net()
    seen = {}

    def keep(epoch, logs):
        seen[epoch] = weights(m)

    cp = ModelCheckpoint(tmp_path / "best-{epoch}.npz", monitor="score", save_best_only=True, mode=mode, verbose=1)
    fit(m, fm.optim.SGD(m.parameters(), lr=0.1), len(values), [scores(values), keep, cp])
    assert sorted(int(p.stem.split("-")[1]) - 1 for p in tmp_path.iterdir()) == saved
    for e in saved:
        np.testing.assert_array_equal(weights(fm.load(tmp_path / f"best-{e + 1}.npz")), seen[e])
    out = capsys.readouterr().out
    assert f"\nEpoch 1: score improved from {'inf' if mode == 'min' else '-inf'} to 3.00000, saving model to " \
           f"{tmp_path / 'best-1.npz'}\n" in out
    assert f"\n{not_improved}\n" in out
    assert cp.best == values[saved[-1]]


def test_checkpoint_threshold_missing_monitor_and_bad_arguments(tmp_path):
    m = net()
    cp = ModelCheckpoint(tmp_path / "c.npz", monitor="score", save_best_only=True, initial_value_threshold=2.0)
    fit(m, fm.optim.SGD(m.parameters(), lr=0.1), 2, [scores([2.5, 2.5]), cp])
    assert not (tmp_path / "c.npz").exists()  # never beat the threshold
    with pytest.warns(UserWarning, match="Can save best model only with nothing available, skipping"):
        fit(m, fm.optim.SGD(m.parameters(), lr=0.1), 1, [ModelCheckpoint(tmp_path / "d.npz", monitor="nothing",
                                                                         save_best_only=True)])
    assert not (tmp_path / "d.npz").exists()
    with pytest.raises(KeyError, match="Failed to format this callback filepath"):
        fit(m, fm.optim.SGD(m.parameters(), lr=0.1), 1, [ModelCheckpoint(tmp_path / "{nothing}.npz")])
    fit(m, fm.optim.SGD(m.parameters(), lr=0.1), 1, [ModelCheckpoint(tmp_path / "sub" / "dir" / "e.npz")])
    assert (tmp_path / "sub" / "dir" / "e.npz").exists()
    with pytest.raises(ValueError, match="save_freq"):
        ModelCheckpoint(tmp_path / "x.npz", save_freq=10)
    with pytest.raises(ValueError, match="mode"):
        ModelCheckpoint(tmp_path / "x.npz", mode="up")


# --------------------------------------------------------------------------- CSVLogger

def read_csv(path, sep=","):
    with open(path, newline="") as f:
        return list(csv.reader(f, delimiter=sep))


@pytest.mark.parametrize("sep", [",", ";"])
def test_csv_logger_rows_and_append(tmp_path, sep):
    path = tmp_path / "log.csv"
    m = net()
    opt = fm.optim.SGD(m.parameters(), lr=0.1)
    h = fit(m, opt, 3, [CSVLogger(path, separator=sep)])
    rows = read_csv(path, sep)
    keys = sorted(h.history)
    assert rows[0] == ["epoch", *keys]
    assert rows[1:] == [[str(e), *(str(h.history[k][e]) for k in keys)] for e in range(3)]
    assert open(path, "rb").read().count(b"\r\n") == 4  # Keras's (Excel's) dialect
    assert [float(r[keys.index("loss") + 1]) for r in rows[1:]] == h.history["loss"]  # exact round trip

    h2 = fit(m, opt, 2, [CSVLogger(path, separator=sep, append=True)])
    rows2 = read_csv(path, sep)
    assert rows2[:4] == rows and len(rows2) == 6  # no second header
    assert rows2[4:] == [[str(e), *(str(h2.history[k][e]) for k in keys)] for e in range(2)]

    fit(m, opt, 1, [CSVLogger(path, separator=sep)])  # without append: a new file
    assert len(read_csv(path, sep)) == 2

    new = tmp_path / "new.csv"
    fit(m, opt, 1, [CSVLogger(new, append=True)])  # append to a file that does not exist: with a header
    assert read_csv(new)[0][0] == "epoch"


def test_csv_logger_rows_are_on_disk_as_each_epoch_ends(tmp_path):
    path = tmp_path / "log.csv"
    lines = []
    m = net()
    fit(m, fm.optim.SGD(m.parameters(), lr=0.1), 3,
        [CSVLogger(path), lambda epoch, logs: lines.append(len(read_csv(path)))])
    assert lines == [2, 3, 4]


def test_csv_logger_missing_keys_are_na(tmp_path):
    path = tmp_path / "log.csv"
    m = net()

    def extra(epoch, logs):
        if epoch == 0:
            logs["score"] = 1.5

    fit(m, fm.optim.SGD(m.parameters(), lr=0.1), 2, [extra, CSVLogger(path)], val=False)
    rows = read_csv(path)
    i = rows[0].index("score")
    assert rows[1][i] == "1.5" and rows[2][i] == "NA"


# --------------------------------------------------------------------------- LambdaCallback

def test_lambda_callback():
    calls = []
    cb = LambdaCallback(on_epoch_begin=lambda epoch, logs: calls.append(("begin", epoch)),
                        on_epoch_end=lambda epoch, logs: calls.append(("end", epoch, logs["loss"])),
                        on_train_begin=lambda logs: calls.append("train_begin"),
                        on_train_end=lambda logs: calls.append(("train_end", logs["loss"])))
    m = net()
    h = fit(m, fm.optim.SGD(m.parameters(), lr=0.1), 2, [cb])
    loss = h.history["loss"]
    assert calls == ["train_begin", ("begin", 0), ("end", 0, loss[0]), ("begin", 1), ("end", 1, loss[1]),
                     ("train_end", loss[1])]
    only_end = LambdaCallback(on_epoch_end=lambda epoch, logs: epoch == 0)  # returning True stops
    assert fit(m, fm.optim.SGD(m.parameters(), lr=0.1), 5, [only_end]).epoch == [0]
    with pytest.raises(TypeError, match="on_epoch_end must be callable"):
        LambdaCallback(on_epoch_end=3)


# --------------------------------------------------------------------------- TerminateOnNaN

def test_terminate_on_nan_stops_a_diverging_run_at_the_epoch_start(capsys):
    X, y = data()
    Y = np.stack([y * 1e3] * 3, axis=1).astype(np.float64)

    def run(extra):
        m = net()
        opt = fm.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)
        seen = {}

        def blow_up(epoch, logs):  # after epoch 1, an lr that makes epoch 2 diverge
            seen[epoch] = (weights(m), opt._core.state(0).copy())
            if epoch == 1:
                opt.param_groups[0]["lr"] = 1e30

        h = m.fit(X, Y, fm.MSELoss(), opt, epochs=6, batch_size=16, verbose=0, callbacks=[blow_up, *extra])
        return h, m, opt, seen

    with pytest.raises(FloatingPointError, match="epoch 3"):
        run([])
    ended = []
    h, m, opt, seen = run([TerminateOnNaN(), LambdaCallback(on_train_end=ended.append)])
    assert h.epoch == [0, 1] and ended == [{k: v[-1] for k, v in h.history.items()}]
    # the model and optimizer as at the start of the diverging epoch, never NaN
    np.testing.assert_array_equal(weights(m), seen[1][0])
    np.testing.assert_array_equal(opt._core.state(0), seen[1][1])
    assert re.fullmatch(r"Batch \d+: Invalid loss, terminating training\n", capsys.readouterr().out)


# --------------------------------------------------------------------------- ReduceLROnPlateau

def test_reduce_lr_on_plateau_lr_trace(capsys):
    values = [1.0, 0.9, 0.9, 0.9, 0.9, 0.85, 0.85, 0.85, 0.85, 0.85, 0.85, 0.7]
    m = net()
    ps = list(m.parameters())
    opt = fm.optim.SGD([{"params": ps[:2]}, {"params": ps[2:], "lr": 0.3}], lr=1.0)
    lrs = []
    cb = ReduceLROnPlateau(monitor="score", factor=0.5, patience=2, min_delta=0.01, cooldown=2, min_lr=0.2, verbose=1)
    h = fit(m, opt, len(values), [scores(values), cb,
                                  lambda e, logs: lrs.append([g["lr"] for g in opt.param_groups])])
    # by hand, as Keras counts: epoch 0 best 1.0; 1 best 0.9; 2, 3 wait 1, 2 -> lr 0.5 (group 2: 0.2, the
    # floor), cooldown 2; 4 in cooldown (counter 1); 5 counter 0, improves (0.85 < 0.9 - 0.01); 6, 7 wait ->
    # 0.25 (group 2 at the floor: kept), cooldown; 8 in cooldown; 9, 10 wait -> 0.2 (floor); 11 counter 1
    assert lrs == [[1.0, 0.3]] * 3 + [[0.5, 0.2]] * 4 + [[0.25, 0.2]] * 3 + [[0.2, 0.2]] * 2
    assert h.history["lr"] == [1.0] * 4 + [0.5] * 4 + [0.25] * 3 + [0.2]  # the lr each epoch trained with
    out = capsys.readouterr().out
    assert re.findall(r"Epoch (\d+): ReduceLROnPlateau reducing learning rate to (\S+)\.\n", out) == \
        [("4", "0.5"), ("8", "0.25"), ("11", "0.2")]


def test_reduce_lr_on_plateau_mode_max_missing_monitor_and_arguments():
    m = net()
    opt = fm.optim.SGD(m.parameters(), lr=1.0)
    fit(m, opt, 4, [scores([0.5, 0.4, 0.6, 0.6]), ReduceLROnPlateau(monitor="score", mode="max", patience=1,
                                                                    factor=0.1, min_delta=0.0)])
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)  # epochs 1 and 3 did not improve
    assert ReduceLROnPlateau(monitor="val_accuracy").mode == "max"
    with pytest.warns(UserWarning, match="conditioned on metric `nothing`"):
        fit(m, opt, 1, [ReduceLROnPlateau(monitor="nothing")])
    with pytest.raises(ValueError, match="factor >= 1.0"):
        ReduceLROnPlateau(factor=1.0)


# --------------------------------------------------------------------------- verbose

def test_verbose_2_prints_one_keras_line_per_epoch(capsys):
    m = net()
    h = fit(m, fm.optim.SGD(m.parameters(), lr=0.1), 2, verbose=2)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Epoch 1/2" and lines[2] == "Epoch 2/2" and len(lines) == 4
    for e, line in ((0, lines[1]), (1, lines[3])):
        want = " - ".join(f"{k}: {h.history[k][e]:.4f}" for k in ("accuracy", "loss", "val_accuracy", "val_loss"))
        assert re.fullmatch(r"6/6 - \d+s - \d+(us|ms|s)/step - " + re.escape(want), line), line
    fit(m, fm.optim.SGD(m.parameters(), lr=0.1), 1, verbose=2)  # one epoch: no 'Epoch 1/1' line, as Keras
    assert capsys.readouterr().out.startswith("6/6 - ")
    fit(m, fm.optim.SGD(m.parameters(), lr=0.1), 1, verbose=0)
    assert capsys.readouterr().out == ""
    for bad in (3, -1, "yes", 1.0):
        with pytest.raises(ValueError, match="verbose must be 0, 1, 2 or 'auto'"):
            fit(m, fm.optim.SGD(m.parameters(), lr=0.1), 1, verbose=bad)


def test_epoch_line_formats_small_values_as_keras():
    from fastmlp.callbacks import _epoch_line

    assert _epoch_line(4, {"loss": 0.0001234, "accuracy": 0.5, "lr": 0.1, "time": 0.02}) == \
        "4/4 - 0s - 5ms/step - accuracy: 0.5000 - loss: 1.2340e-04"
    assert _epoch_line(1, {"loss": 2.0, "time": 3.0}) == "1/1 - 3s - 3s/step - loss: 2.0000"
    assert _epoch_line(1000, {"loss": 2.0, "time": 0.01}) == "1000/1000 - 0s - 10us/step - loss: 2.0000"


def test_early_stopping_verbose_messages(capsys):
    m = net()
    es = EarlyStopping(monitor="score", patience=1, mode="min", restore_best_weights=True, verbose=1)
    fit(m, fm.optim.SGD(m.parameters(), lr=0.1), 6, [scores([1.0, 0.5, 0.7, 0.8, 0.1, 0.1]), es])
    assert es.stopped_epoch == 2 and m.stop_training
    assert capsys.readouterr().out == \
        "Epoch 3: early stopping\nRestoring model weights from the end of the best epoch: 2.\n"
    es = EarlyStopping(monitor="score", patience=10, mode="min", verbose=1)
    fit(m, fm.optim.SGD(m.parameters(), lr=0.1), 2, [scores([1.0, 0.5]), es])
    assert capsys.readouterr().out == ""
