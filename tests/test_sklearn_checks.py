"""scikit-learn's own estimator checks (check_estimator) on fastmlp.MLPClassifier
and fastmlp.MLPRegressor, with no expected failures.

The instances use dtype='float64': check_sample_weight_equivalence_* compares a
weighted fit with a fit on repeated rows at rtol=1e-7, which float32 training
(rounding ~6e-8 per operation) cannot meet; every other check also passes in
float32 (see test_estimators.py for float32 coverage). Each solver family gets
its own instance, with a small max_iter for speed.
"""
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("scipy")

from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import fastmlp as fm  # noqa: E402

ESTIMATORS = [
    # scikit-learn's defaults (adam, relu, (100,)) with every core
    fm.MLPClassifier(max_iter=100, dtype="float64"),
    fm.MLPRegressor(max_iter=100, dtype="float64"),
    # sgd with Nesterov momentum (and the adaptive schedule); L-BFGS. ('invscaling' decays with
    # the number of rows seen, as in scikit-learn, so weights are not repetitions there.)
    fm.MLPClassifier(solver="sgd", learning_rate="adaptive", learning_rate_init=0.05, max_iter=60,
                     dtype="float64", n_threads=1),
    fm.MLPRegressor(solver="sgd", max_iter=60, dtype="float64", n_threads=1),
    fm.MLPClassifier(solver="lbfgs", max_iter=50, dtype="float64", n_threads=1),
    fm.MLPRegressor(solver="lbfgs", max_iter=50, dtype="float64", n_threads=1),
    # the extensions: other optimizers, per-layer activations (class_weight: check_class_weight_classifiers)
    fm.MLPClassifier(solver="rmsprop", hidden_layer_sizes=(30, 20), activation=["tanh", "relu"],
                     learning_rate_init=0.01, max_iter=60, dtype="float64", n_threads=1),
    fm.MLPClassifier(solver="adamw", hidden_layer_sizes=(40,), activation=["logistic"], learning_rate_init=0.01,
                     max_iter=60, dtype="float64", n_threads=1),
    fm.MLPRegressor(solver="adagrad", hidden_layer_sizes=(30, 20), activation=["relu", "tanh"],
                    learning_rate_init=0.05, max_iter=60, dtype="float64", n_threads=1),
    fm.MLPRegressor(solver="adadelta", learning_rate_init=1.0, max_iter=60, dtype="float64", n_threads=1),
]


@parametrize_with_checks(ESTIMATORS)
def test_sklearn_check(estimator, check):
    check(estimator)
