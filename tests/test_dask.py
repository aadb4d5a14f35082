"""Many fits on Dask: the estimators under joblib's 'dask' backend (GridSearchCV, cross_val_score) on a
two-process LocalCluster on loopback, n_threads=None taking the worker's share of the cores, and
dask_ml's Incremental training out of core through partial_fit."""
import os
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")

import fastmlp as fm  # noqa: E402
from fastmlp.datasets import load_digits  # noqa: E402

TIMEOUT = 120  # seconds for any one wait on the cluster


@pytest.fixture(scope="module")
def client():
    environ = dict(os.environ)  # LocalCluster sets OMP_NUM_THREADS=1 in this process too: restore it after
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  host="127.0.0.1", worker_dashboard_address=None) as cluster, \
            distributed.Client(cluster, timeout=TIMEOUT) as c:
        c.wait_for_workers(2, timeout=TIMEOUT)
        yield c
    os.environ.clear()
    os.environ.update(environ)


def digits(n=600):
    ds = load_digits()
    X = (ds.X[:n] - ds.X[:n].mean(0)) / (ds.X[:n].std(0) + 1e-9)
    return X.astype(np.float64), ds.y[:n]


def _threads_in_task():
    from fastmlp.training import default_threads, thread_plan

    model = fm.Sequential(fm.Linear(784, 1024), fm.ReLU(), fm.Linear(1024, 10), seed=0)
    return default_threads(), thread_plan(None, model, rows=4096, split=True)


def test_n_threads_none_is_the_workers_share(client):
    futures = [client.submit(_threads_in_task, pure=False, workers=[w]) for w in client.scheduler_info()["workers"]]
    # one thread per worker (of the machine's cores): neither fastmlp's split nor OpenBLAS's threads
    assert [f.result(timeout=TIMEOUT) for f in futures] == [(1, (1, 1))] * 2
    assert _threads_in_task()[0] == len(os.sched_getaffinity(0))  # outside a worker: every core


def test_grid_search_on_the_dask_backend(client):
    import joblib
    from sklearn.model_selection import GridSearchCV

    X, y = digits()
    Y = np.stack([y * 1.0, np.sin(y)], 1)
    grid = {"alpha": [1e-4, 1e-1], "hidden_layer_sizes": [(8,), (16,)]}
    est = fm.MLPRegressor(max_iter=15, random_state=0, dtype="float64")  # n_threads=None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: max_iter reached
        with joblib.parallel_backend("dask"):
            on_dask = GridSearchCV(est, grid, cv=3, n_jobs=-1).fit(X, Y)
        # the same fits in this process, one thread each: what n_threads=None gives inside a worker
        local = GridSearchCV(est.set_params(n_threads=1), grid, cv=3, n_jobs=1).fit(X, Y)
    np.testing.assert_array_equal(on_dask.cv_results_["mean_test_score"], local.cv_results_["mean_test_score"])
    assert on_dask.best_params_ == local.best_params_
    # the refit runs in this process, with every core (batches split into chunks, as on one thread)
    np.testing.assert_allclose(on_dask.predict(X), local.predict(X), rtol=1e-9, atol=1e-12)


def test_cross_val_score_on_the_dask_backend(client):
    import joblib
    from sklearn.model_selection import cross_val_score

    X, y = digits()
    est = fm.MLPClassifier((16,), learning_rate_init=1e-2, max_iter=20, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with joblib.parallel_backend("dask"):
            on_dask = cross_val_score(est, X, y, cv=4, scoring="neg_log_loss", n_jobs=-1)
        local = cross_val_score(est.set_params(n_threads=1), X, y, cv=4, scoring="neg_log_loss", n_jobs=1)
    np.testing.assert_array_equal(on_dask, local)
    assert np.all(on_dask > -1.0)  # the fits learned something


def test_incremental_trains_out_of_core(client):
    da = pytest.importorskip("dask.array")
    wrappers = pytest.importorskip("dask_ml.wrappers")
    X, y = digits(1797)
    chunk = 400  # 5 blocks, the last one short
    Xd, yd = da.from_array(X, chunks=(chunk, X.shape[1])), da.from_array(y, chunks=chunk)
    assert Xd.numblocks[0] == 5
    est = fm.MLPClassifier((16,), learning_rate_init=2e-2, random_state=0, n_threads=1)
    inc = wrappers.Incremental(est, scoring="accuracy", shuffle_blocks=False)
    ref = fm.MLPClassifier((16,), learning_rate_init=2e-2, random_state=0, n_threads=1)
    for epoch in range(2):
        inc.partial_fit(Xd, yd, classes=np.arange(10))
        for i in range(0, len(X), chunk):  # the same partial_fit calls, block by block, in this process
            ref.partial_fit(X[i:i + chunk], y[i:i + chunk], classes=np.arange(10))
    for a, b in zip(inc.estimator_.coefs_ + inc.estimator_.intercepts_, ref.coefs_ + ref.intercepts_):
        np.testing.assert_array_equal(a, b)
    assert inc.estimator_.t_ == ref.t_ == 2 * len(X)  # every row seen once per pass
    assert inc.score(Xd, yd) > 0.8
    np.testing.assert_array_equal(inc.predict(Xd).compute(), ref.predict(X))
