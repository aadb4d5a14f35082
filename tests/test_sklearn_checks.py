"""scikit-learn's own estimator checks (check_estimator) on fastmlp.MLPClassifier
and fastmlp.MLPRegressor, with one expected failure (below: BatchNorm and sample weights).

The instances are what users get: the default dtype='float32' (each solver family
and the extensions get their own instance, with a small max_iter for speed), plus
one float64 instance of each class that runs the whole suite as it is.

One per-check parameter, as scikit-learn sets them for its own estimators
(PER_ESTIMATOR_CHECK_PARAMS in sklearn/utils/_test_common/instance_generator.py;
there MLPClassifier runs check_sample_weight_equivalence_on_dense_data with
solver='lbfgs'): two checks run the float32 instances with dtype='float64',
because their tolerances are below float32 resolution.

check_sample_weight_equivalence_on_dense_data and
check_sample_weight_equivalence_on_sparse_data compare a fit with integer sample weights to a fit
on the correspondingly repeated rows with assert_allclose's default rtol=1e-7,
below float32 resolution (6e-8 per rounding, and a fit does many). Measured in
float32 (scikit-learn 1.9.1), the largest differences between the two fits'
predictions are 4e-8 to 6e-7 absolute for the stochastic solvers and 1e-6 to
4e-6 for L-BFGS (which amplifies rounding over its 50 iterations); relative to
the values, 6e-7 to 9e-6 for the classifiers' probabilities, and up to 2e-2 for
regression predictions close to 0. So in float32 the check would fail on
rounding, not on a weighting error, and this suite does NOT check the
sample-weight equivalence of the float32 instances; tests/test_estimators.py
(test_integer_sample_weights_equal_repeated_rows) checks it in float32 at
float32 precision (rtol=1e-5), where ignoring the weights fails.

check_methods_subset_invariance (20 rows against one row at a time) and
check_methods_sample_order_invariance (the rows in another order) run the float32
instances as they are: predictions use fastmlp's fixed-order forward product
(cpp/gemm.h), so a row's output is the same bits whatever batch or position it is
computed in, on every OpenBLAS kernel family (.ci/run runs this file again with
OPENBLAS_CORETYPE=Haswell, where the BLAS's own edge tiles once made them fail).

normalization='batch' instances fail the two check_sample_weight_equivalence checks by design, as
torch.nn.BatchNorm1d would: a batch's mean and variance count its rows, so a row of weight 2 is
not two rows there (nor a row of weight 0 no row), although the loss weighs it so. For them the test
requires that failure (AssertionError) instead of hiding it; LayerNorm normalizes each row on its
own and passes them.

Every other check runs on the float32 instances unchanged.
"""
import functools

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("scipy")

from sklearn.base import clone  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import fastmlp as fm  # noqa: E402

ESTIMATORS = [
    # scikit-learn's defaults (adam, relu, (100,)) with every core
    fm.MLPClassifier(max_iter=100),
    fm.MLPRegressor(max_iter=100),
    # sgd with Nesterov momentum (and the adaptive schedule); L-BFGS. ('invscaling' decays with
    # the number of rows seen, as in scikit-learn, so weights are not repetitions there.)
    fm.MLPClassifier(solver="sgd", learning_rate="adaptive", learning_rate_init=0.05, max_iter=60, n_threads=1),
    fm.MLPRegressor(solver="sgd", max_iter=60, n_threads=1),
    fm.MLPClassifier(solver="lbfgs", max_iter=50, n_threads=1),
    fm.MLPRegressor(solver="lbfgs", max_iter=50, n_threads=1),
    # the extensions: other optimizers, per-layer activations (class_weight: check_class_weight_classifiers)
    fm.MLPClassifier(solver="rmsprop", hidden_layer_sizes=(30, 20), activation=["tanh", "relu"],
                     learning_rate_init=0.01, max_iter=60, n_threads=1),
    fm.MLPClassifier(solver="adamw", hidden_layer_sizes=(40,), activation=["logistic"], learning_rate_init=0.01,
                     max_iter=60, n_threads=1),
    fm.MLPRegressor(solver="adagrad", hidden_layer_sizes=(30, 20), activation=["relu", "tanh"],
                    learning_rate_init=0.05, max_iter=60, n_threads=1),
    fm.MLPRegressor(solver="adadelta", learning_rate_init=1.0, max_iter=60, n_threads=1),
    # normalization and residual blocks, a stochastic solver and L-BFGS (full-batch statistics)
    fm.MLPClassifier(hidden_layer_sizes=(16, 16), normalization="batch", residual=True, learning_rate_init=0.01,
                     max_iter=60, n_threads=1),
    fm.MLPRegressor(hidden_layer_sizes=(16, 16), normalization="batch", solver="lbfgs", max_iter=50, n_threads=1),
    fm.MLPClassifier(hidden_layer_sizes=(16, 16), normalization="layer", residual=True, solver="lbfgs", max_iter=50,
                     n_threads=1),
    fm.MLPRegressor(hidden_layer_sizes=(16, 16), normalization="layer", residual=True, learning_rate_init=0.01,
                    max_iter=60, n_threads=1),
    # float64: every check as it is (the two of PER_CHECK_PARAMS_FLOAT32 included)
    fm.MLPClassifier(max_iter=100, dtype="float64"),
    fm.MLPRegressor(max_iter=100, dtype="float64"),
]

# check name -> parameters set on (a clone of) a float32 instance before that check runs
PER_CHECK_PARAMS_FLOAT32 = {
    "check_sample_weight_equivalence_on_dense_data": {"dtype": "float64"},
    "check_sample_weight_equivalence_on_sparse_data": {"dtype": "float64"},
}


# checks that instances with normalization='batch' fail by design (see the docstring)
BATCH_STATISTICS_FAIL = {"check_sample_weight_equivalence_on_dense_data",
                         "check_sample_weight_equivalence_on_sparse_data"}


def _check_name(check):
    return check.func.__name__ if isinstance(check, functools.partial) else check.__name__


def test_the_per_check_parameters_name_existing_checks():
    """If scikit-learn renamed one of these checks, it would run in float32 again and fail on a
    tolerance, hiding the cause: fail here, naming it, instead."""
    items = parametrize_with_checks(ESTIMATORS[:2]).args[1]  # (estimator, check) pairs or pytest.param
    names = {_check_name(getattr(item, "values", item)[1]) for item in items}
    if not any(n.startswith("check_sample_weight_equivalence") for n in names):
        pytest.skip("this scikit-learn has no check_sample_weight_equivalence_* checks")
    assert set(PER_CHECK_PARAMS_FLOAT32) <= names


@parametrize_with_checks(ESTIMATORS)
def test_sklearn_check(estimator, check):
    params = PER_CHECK_PARAMS_FLOAT32.get(_check_name(check))
    if params and estimator.get_params()["dtype"] == "float32":
        estimator = clone(estimator).set_params(**params)
    if estimator.get_params()["normalization"] == "batch" and _check_name(check) in BATCH_STATISTICS_FAIL:
        with pytest.raises(AssertionError):  # batch statistics count rows, not sample weights
            check(estimator)
        return
    check(estimator)
