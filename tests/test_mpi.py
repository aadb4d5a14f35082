"""Data-parallel fit over MPI (fastmlp.distributed), on loopback: `mpiexec -n 2` and `-n 4` run a worker
script (below) whose ranks write what they saw to JSON files. Every run is bounded in time and its process
group killed on timeout, so a hang fails the test instead of the suite. MPICH's mpiexec (the mpich wheel's)
runs as root and with more ranks than cores as it is; Open MPI's needs --allow-run-as-root --oversubscribe."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("mpi4py", reason="the 'mpi' extra (mpi4py, mpich) is not installed")
MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
if MPIEXEC is None:
    pytest.skip("mpiexec not found (the mpich wheel installs it next to python)", allow_module_level=True)
OPEN_MPI = "Open MPI" in subprocess.run([MPIEXEC, "--version"], capture_output=True, text=True, timeout=60).stdout

WORKER = r'''
import json, os, signal, sys, threading
import numpy as np
import fastmlp as fm
from mpi4py import MPI

comm = MPI.COMM_WORLD
rank, size = comm.rank, comm.size
scenario, out = sys.argv[1], sys.argv[2]


def shard(r, n, d, classes):
    g = np.random.default_rng(1000 + r)
    X = g.normal(size=(n, d))
    y = g.integers(0, classes, size=n) if classes else g.normal(size=(n, 3))
    return X, y, g.uniform(0.1, 2.0, size=n)


def net(d, out_dim, act, seed):
    return fm.Sequential(fm.Linear(d, 7), act(), fm.Linear(7, out_dim), seed=seed, dtype="float64")


def flat(m):
    return m._core.flat_params().tolist()


def global_batches(parts, b, steps):
    """The global data whose batches of size * b rows are the ranks' step-by-step batches."""
    return np.concatenate([p[i * b:(i + 1) * b] for i in range(steps) for p in parts])


CONFIGS = {
    # unequal shards (37 and 45 rows: 10 steps of 4 rows, the longer shards' last 5 rows left out),
    # class and sample weights, Adam
    # rank 0's optimizer has state (a fit of its own before), the others' none: rank 0's is broadcast
    "ce": dict(n=lambda r: 37 + 8 * (r % 2), d=5, classes=3, act=fm.Tanh, b=4, epochs=3, weights=True, warm=True,
               loss=lambda: fm.CrossEntropyLoss(weight=np.array([1.0, 2.0, 0.5])),
               opt=lambda p: fm.optim.Adam(p, lr=0.01)),
    # reduction 'sum', Nesterov momentum
    "mse_sum": dict(n=lambda r: 33, d=4, classes=0, act=fm.ReLU, b=5, epochs=2, weights=False,
                    loss=lambda: fm.MSELoss(reduction="sum"),
                    opt=lambda p: fm.optim.SGD(p, lr=0.002, momentum=0.9, nesterov=True)),
    # 64 rows per rank and step on two threads: each rank splits its batch in two chunks
    "split": dict(n=lambda r: 200, d=6, classes=0, act=fm.Sigmoid, b=64, epochs=2, weights=True, threads=2,
                  loss=lambda: fm.MSELoss(), opt=lambda p: fm.optim.SGD(p, lr=0.05)),
    # validation on rank 0, a schedule on val_loss, early stopping that restores the best weights
    "val": dict(n=lambda r: 30, d=5, classes=3, act=fm.GELU, b=3, epochs=12, weights=False, val=True,
                loss=lambda: fm.CrossEntropyLoss(), opt=lambda p: fm.optim.SGD(p, lr=0.5)),
    # gradient clipping after the allreduce (on the global batch's gradient), metrics summed over the ranks
    "clip": dict(n=lambda r: 40, d=5, classes=0, act=fm.Tanh, b=5, epochs=2, weights=True,
                 fit=dict(clip_grad_norm=0.05, clip_grad_value=0.01, metrics=["mae", "mse"]),
                 loss=lambda: fm.MSELoss(), opt=lambda p: fm.optim.SGD(p, lr=0.5, momentum=0.9)),
    # ASGD: rank 0's state (ax, eta, mu: a fit of its own before) is broadcast
    "asgd": dict(n=lambda r: 40, d=5, classes=3, act=fm.Tanh, b=4, epochs=2, weights=False, warm=True,
                 loss=lambda: fm.CrossEntropyLoss(), opt=lambda p: fm.optim.ASGD(p, lr=0.2, lambd=0.05, t0=1.0)),
    # shuffled, each rank with its own stream: no single-process reference, the ranks must agree
    "shuffle": dict(n=lambda r: 50, d=5, classes=3, act=fm.ReLU, b=4, epochs=4, weights=False, shuffle=True,
                    loss=lambda: fm.CrossEntropyLoss(), opt=lambda p: fm.optim.SGD(p, lr=0.2)),
}


def train(cfg, m, X, y, w, comm_, val, warm):
    opt = cfg["opt"](m.parameters())
    if warm is not None:
        m.fit(*warm, cfg["loss"](), opt, epochs=1, batch_size=3, verbose=0)
    extra = {}
    if cfg.get("val"):
        extra = dict(validation_data=val, scheduler=fm.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, threshold=0.02),
                     callbacks=[fm.EarlyStopping(patience=2, min_delta=0.01, restore_best_weights=True)])
    h = m.fit(X, y, cfg["loss"](), opt, epochs=cfg["epochs"], batch_size=cfg["b"] * size, shuffle=cfg.get("shuffle", False),
              verbose=0, n_threads=cfg.get("threads", 1), sample_weight=w if cfg["weights"] else None, comm=comm_,
              **extra, **cfg.get("fit", {}))
    return {k: v for k, v in h.history.items() if k != "time"}


def equivalence():
    res = {}
    for name, cfg in CONFIGS.items():
        parts = [shard(r, cfg["n"](r), cfg["d"], cfg["classes"]) for r in range(size)]
        out_dim = cfg["classes"] or 3
        val = shard(99, 20, cfg["d"], cfg["classes"])[:2]
        m = net(cfg["d"], out_dim, cfg["act"], seed=rank)  # rank 0's weights must win
        X, y, w = parts[rank]
        warm = (X[:7], y[:7]) if cfg.get("warm") and rank == 0 else None
        hist = train(cfg, m, X, y, w, comm, val if rank == 0 else None, warm)
        res[name] = {"params": flat(m), "history": hist}
        res[name]["dropout_calls"] = int(m._core.dropout_calls)
        if rank == 0 and not cfg.get("shuffle"):  # single-process training on the same global batches
            steps = min(-(-len(p[0]) // cfg["b"]) for p in parts)
            G = [global_batches([p[k] for p in parts], cfg["b"], steps) for k in range(3)]
            ref = net(cfg["d"], out_dim, cfg["act"], seed=0)
            res[name]["ref_history"] = train(cfg, ref, G[0], G[1], G[2], None, val,
                                                (parts[0][0][:7], parts[0][1][:7]) if cfg.get("warm") else None)
            res[name]["ref_params"] = flat(ref)
    # dropout, every rank with the same rows: were the ranks' masks the same, this would be
    # single-process training on one shard with batch b
    X, y, _ = shard(0, 24, 5, 3)
    m = fm.Sequential(fm.Linear(5, 16), fm.ReLU(), fm.Dropout(0.5), fm.Linear(16, 3), seed=0, dtype="float64")
    one = fm.Sequential(fm.Linear(5, 16), fm.ReLU(), fm.Dropout(0.5), fm.Linear(16, 3), seed=0, dtype="float64")
    for model, c in ((m, comm), (one, None)):
        model.fit(X, y, fm.CrossEntropyLoss(), fm.optim.SGD(model.parameters(), lr=0.5), epochs=3,
                  batch_size=4 * (size if c else 1), shuffle=False, verbose=0, comm=c)
    res["dropout"] = {"params": flat(m), "one": flat(one), "dropout_calls": int(m._core.dropout_calls),
                      "one_calls": int(one._core.dropout_calls)}
    return res


def attempt(fn):
    try:
        fn()
        return {"error": None}
    except BaseException as e:
        return {"error": type(e).__name__, "message": str(e)}


def failures():
    res = {}
    X, y, _ = shard(rank, 24, 4, 2)
    loss = fm.CrossEntropyLoss()

    def model():
        return net(4, 2, fm.Tanh, seed=0)

    # a NaN in the last rank's shard, at its second batch of the second epoch
    m = model()
    opt = fm.optim.SGD(m.parameters(), lr=0.1)
    m.fit(X, y, loss, opt, epochs=1, batch_size=4 * size, shuffle=False, verbose=0, comm=comm)
    start = flat(m)
    Xb = X.copy()
    if rank == size - 1:
        Xb[6, 2] = np.nan
    r = attempt(lambda: m.fit(Xb, y, loss, opt, epochs=2, batch_size=4 * size, shuffle=False, verbose=0, comm=comm))
    res["nan"] = dict(r, params=flat(m), start=start)
    # divergence on every rank: a step that overflows the weights
    m = model()
    big = np.full((24, 2), 1e150)
    r = attempt(lambda: m.fit(X * 1e150, big, fm.MSELoss(), fm.optim.SGD(m.parameters(), lr=1e10), epochs=2,
                              batch_size=2 * size, verbose=0, comm=comm))
    res["diverge"] = dict(r, params=flat(m))
    # a callback that raises on rank 0 (the logs have no val_loss)
    m = model()
    r = attempt(lambda: m.fit(X, y, loss, fm.optim.SGD(m.parameters(), lr=0.1), epochs=3, batch_size=2 * size,
                              verbose=0, callbacks=[fm.EarlyStopping()], comm=comm))
    res["callback"] = dict(r, params=flat(m))
    # a global batch that does not split evenly; a bad argument on one rank only
    m = model()
    res["uneven"] = attempt(lambda: m.fit(X, y, loss, fm.optim.SGD(m.parameters(), lr=0.1), batch_size=2 * size + 1,
                                          verbose=0, comm=comm))
    Xr = X[:, :3] if rank == 1 else X
    res["one_bad"] = attempt(lambda: m.fit(Xr, y, loss, fm.optim.SGD(m.parameters(), lr=0.1), batch_size=2 * size,
                                           verbose=0, comm=comm))
    # and the communicator still works: a good fit afterwards
    res["after"] = attempt(lambda: m.fit(X, y, loss, fm.optim.SGD(m.parameters(), lr=0.1), epochs=2,
                                         batch_size=2 * size, verbose=0, comm=comm))
    res["after"]["params"] = flat(m)
    return res


def interrupt():
    """Ctrl-C on rank 1 at several moments: inside long epochs (1250 steps), and with epochs of 2 steps, where
    it often lands in an epoch's last reduction or between epochs (validation, callbacks, exchanges)."""
    out = {}
    for rows, delay in [(20000, 1.5), (32, 0.7), (32, 1.1), (32, 1.3), (32, 1.9)]:
        X, y, _ = shard(rank, rows, 20, 4)
        m = fm.Sequential(fm.Linear(20, 64), fm.ReLU(), fm.Linear(64, 4), seed=0, dtype="float64")
        if rank == 1:
            threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT)).start()
        r = attempt(lambda: m.fit(X, y, fm.CrossEntropyLoss(), fm.optim.SGD(m.parameters(), lr=0.01),
                                  epochs=10 ** 6, batch_size=8 * size, verbose=0, n_threads=1, comm=comm,
                                  validation_data=(X[:8], y[:8]) if rank == 0 else None))
        out[f"{rows}/{delay}"] = dict(r, params=flat(m), epochs_done=int(m._core.epochs_done))
    return out


res = {"equivalence": equivalence, "failures": failures, "interrupt": interrupt}[scenario]()
with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
    json.dump(res, f)
'''


def mpiexec(n, args, timeout):
    """mpiexec -n n python args...; returns its output. A run still going after timeout s is killed
    (its whole process group) and fails the test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMI_", "PMIX_", "HYDRA_"))}
    cmd = [MPIEXEC, *(["--allow-run-as-root", "--oversubscribe"] if OPEN_MPI else []), "-n", str(n), sys.executable,
           *map(str, args)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                         start_new_session=True)
    try:
        output, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        output, _ = p.communicate()
        pytest.fail(f"mpiexec -n {n} {args} did not finish in {timeout} s (a rank hangs):\n{output[-3000:]}")
    assert p.returncode == 0, f"mpiexec -n {n} {args} failed ({p.returncode}):\n{output[-3000:]}"
    return output


def run(tmp_path, n, scenario, timeout=150):
    """Run the worker's scenario under mpiexec -n n; returns each rank's results."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    mpiexec(n, [script, scenario, tmp_path], timeout)
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(n)]


@pytest.fixture(scope="module", params=[2, 4])
def ranks(request):
    return request.param


def test_weights_and_history_equal_single_process_on_the_global_batches(tmp_path, ranks):
    res = run(tmp_path, ranks, "equivalence")
    drop = [r.pop("dropout") for r in res]
    assert all(d["params"] == drop[0]["params"] for d in drop)
    assert all(d["dropout_calls"] == d["one_calls"] == 18 for d in drop)  # rank 0's stream position, as one process
    assert np.abs(np.subtract(drop[0]["params"], drop[0]["one"])).max() > 1e-3  # the ranks drew masks of their own
    for name, r0 in res[0].items():
        for r in res[1:]:  # every rank: the same weights and the same History, bit for bit
            assert r[name]["params"] == r0["params"], name
            assert r[name]["history"] == r0["history"], name
            assert r[name]["dropout_calls"] == r0["dropout_calls"] == 0, name
        if name == "shuffle":
            assert r0["history"]["loss"][-1] < 0.97 * r0["history"]["loss"][0]
            continue
        np.testing.assert_allclose(r0["params"], r0["ref_params"], rtol=1e-12, atol=1e-13, err_msg=name)
        assert r0["history"].keys() == r0["ref_history"].keys(), name
        for k, v in r0["history"].items():
            np.testing.assert_allclose(v, r0["ref_history"][k], rtol=1e-12, atol=1e-13, err_msg=f"{name} {k}")
    assert "val_loss" in res[0]["val"]["history"] and "accuracy" in res[0]["ce"]["history"]
    assert "mae" in res[0]["clip"]["history"] and "mse" in res[0]["clip"]["history"]
    # early stopping stopped before the last epoch, and the schedule lowered the learning rate
    assert 1 < len(res[0]["val"]["history"]["loss"]) < 12
    assert min(res[0]["val"]["history"]["lr"]) < 0.5


def test_failures_stop_every_rank_consistently(tmp_path, ranks):
    res = run(tmp_path, ranks, "failures")
    last = ranks - 1
    for rank, r in enumerate(res):
        nan = r["nan"]
        if rank == last:
            assert nan["error"] == "ValueError" and "X" in nan["message"], nan
        else:
            assert nan["error"] == "RuntimeError" and f"rank {last} failed" in nan["message"], nan
        # reset to the start of the failed epoch, on every rank
        assert nan["params"] == nan["start"] == res[0]["nan"]["start"]
        assert r["diverge"]["error"] == "FloatingPointError", r["diverge"]
        assert r["diverge"]["params"] == res[0]["diverge"]["params"]
        cb = r["callback"]
        if rank == 0:
            assert cb["error"] == "KeyError" and "val_loss" in cb["message"], cb
        else:
            assert cb["error"] == "RuntimeError" and "rank 0 failed (KeyError" in cb["message"], cb
        assert r["uneven"]["error"] == "ValueError" and "multiple of the number of ranks" in r["uneven"]["message"]
        bad = r["one_bad"]
        if rank == 1:
            assert bad["error"] == "ValueError" and "features" in bad["message"], bad
        else:
            assert bad["error"] == "RuntimeError" and "rank 1 failed (ValueError" in bad["message"], bad
        assert r["after"]["error"] is None and r["after"]["params"] == res[0]["after"]["params"]


def test_ctrl_c_on_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    res = run(tmp_path, 2, "interrupt", timeout=90)
    for case, r1 in res[1].items():
        r0 = res[0][case]
        assert r1["error"] == "KeyboardInterrupt", (case, r1)
        assert r0["error"] == "KeyboardInterrupt" and "another rank" in r0["message"], (case, r0)
        assert r0["params"] == r1["params"] and r0["epochs_done"] == r1["epochs_done"], case


def test_example_trains_the_same_model_on_every_rank():
    example = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "data_parallel.py")
    out = mpiexec(2, [example], timeout=120)
    m = re.search(r"2 rank\(s\), (\d+) epochs: test accuracy ([0-9.]+).*identical model on every rank: (\w+)", out)
    assert m, out
    assert float(m.group(2)) > 0.95 and m.group(3) == "True", out


def test_benchmark_runs(tmp_path):  # a smoke test: no timing is checked
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "d.json"
    mpiexec(2, [os.path.join(root, "bench", "distributed_speed.py"), "--samples", "2048", "--repeats", "1",
                "--allreduce-calls", "5", "--out", out], timeout=120)
    rec = json.loads(out.read_text())[-1]
    assert rec["ranks"] == 2 and rec["rows_per_rank_and_step"] == 128 and rec["steps_per_epoch"] == 8
    assert rec["allreduce_bytes_per_step"] == 4 * 203530 and rec["s_per_epoch"] > 0 and rec["loss"] > 0
