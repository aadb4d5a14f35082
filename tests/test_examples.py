"""Run each example's main() and check the numbers it returns."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))

import himmelblau  # noqa: E402
import linear_regression  # noqa: E402
import mlp_classifier  # noqa: E402
import softmax_regression  # noqa: E402


def test_linear_regression_recovers_true_parameters():
    r = linear_regression.main(verbose=False)
    np.testing.assert_allclose(r["w"], [2.0, -3.4], atol=0.05)
    assert abs(r["b"] - 4.2) < 0.05
    # noise std is 0.01, so the fitted MSE should be close to 1e-4
    assert r["loss"] < 1e-3


def test_softmax_regression_accuracy():
    r = softmax_regression.main(verbose=False)
    assert r["train_acc"] > 0.9
    assert r["test_acc"] > 0.9
    probs = r["probs"]
    assert probs.shape == (3, 3)
    assert np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_mlp_classifier_accuracy_schedule_and_reload():
    r = mlp_classifier.main(verbose=False)
    assert r["test_acc"] > 0.95
    assert r["train_acc"] > 0.95
    assert r["reload_identical"] is True
    # ExponentialLR stepped once per epoch for 100 epochs
    assert r["final_lr"] == pytest.approx(0.02 * 0.98**100, rel=1e-9)


def test_himmelblau_reaches_all_four_minima():
    r = himmelblau.main(verbose=False)
    # start i converges to minimum i
    for found, expected in zip(r["found"], himmelblau.MINIMA):
        np.testing.assert_allclose(found, expected, atol=1e-3)
    assert np.all(r["dist_to_minima"] < 1e-3)
    assert np.all(r["f"] < 1e-8)


def test_himmelblau_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    for p in rng.uniform(-5, 5, (5, 2)):
        h = 1e-6
        fd = [(himmelblau.himmelblau(p + h * e) - himmelblau.himmelblau(p - h * e)) / (2 * h) for e in np.eye(2)]
        np.testing.assert_allclose(himmelblau.grad(p), fd, rtol=1e-6, atol=1e-5)


def test_himmelblau_adam_matches_numpy_adam():
    """The optimizer used by the example against a hand-written torch-rule Adam."""
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    x = np.array([-1.0, 0.0])
    ref, m, v = x.copy(), np.zeros(2), np.zeros(2)
    opt = himmelblau.fm.optim.Adam([x], lr=lr)
    for t in range(1, 51):
        opt.step([himmelblau.grad(x)])
        g = himmelblau.grad(ref)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        ref = ref - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    np.testing.assert_allclose(x, ref, rtol=1e-10, atol=1e-12)
