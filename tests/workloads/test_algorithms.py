from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
from sklearn.linear_model import SGDClassifier, SGDRegressor
from sklearn.metrics import hinge_loss, log_loss, mean_squared_error

from frugalml.exceptions import ConfigError
from frugalml.workloads import ALGORITHMS, algorithm_loss, check_algorithm, make_estimator, prepare_dataset, resolve_dataset


@pytest.mark.parametrize(
    ("algorithm", "task", "cls", "loss"),
    [
        ("linear_regression", "regression", SGDRegressor, "squared_error"),
        ("perceptron", "classification", SGDClassifier, "perceptron"),
        ("logistic_regression", "classification", SGDClassifier, "log_loss"),
        ("svm", "classification", SGDClassifier, "hinge"),
        ("svm", "regression", SGDRegressor, "epsilon_insensitive"),
    ],
)
def test_make_estimator(algorithm, task, cls, loss):
    estimator = make_estimator(algorithm, task, 0.05, 7)
    assert type(estimator) is cls and estimator.loss == loss
    assert (estimator.learning_rate, estimator.eta0, estimator.random_state) == ("constant", 0.05, 7)
    assert algorithm in ALGORITHMS


def test_task_mismatch_and_unknown_algorithm_are_config_errors():
    expected = (
        "algorithm 'perceptron' is for classification but dataset 'red_wine' is a regression task; "
        "use 'linear_regression' or 'svm'."
    )
    with pytest.raises(ConfigError) as error:
        make_estimator("perceptron", "regression", 0.01, 0, dataset="red_wine")
    assert str(error.value) == expected
    with pytest.raises(ConfigError, match="'linear_regression' is for regression .* use 'perceptron' or"):
        make_estimator("linear_regression", "classification", 0.01, 0)
    with pytest.raises(ConfigError, match="unknown algorithm 'tree'"):
        make_estimator("tree", "classification", 0.01, 0)


def fitted(algorithm, task, X, y, classes=None):
    estimator = make_estimator(algorithm, task, 0.01, 0)
    kwargs = {"classes": classes} if classes is not None else {}
    for start in range(0, len(y), 64):
        estimator.partial_fit(X[start : start + 64], y[start : start + 64], **kwargs)
    return estimator


def test_binary_losses_match_scikit_learn(diabetes):
    X, y, _, _ = diabetes.arrays()
    classes = np.arange(2)
    logistic = fitted("logistic_regression", "classification", X, y, classes)
    expected = log_loss(y, logistic.predict_proba(X))
    assert algorithm_loss(logistic, "logistic_regression", "classification", X, y) == pytest.approx(expected)
    svm = fitted("svm", "classification", X, y, classes)
    expected = hinge_loss(np.where(y == 1, 1, -1), svm.decision_function(X))
    assert algorithm_loss(svm, "svm", "classification", X, y) == pytest.approx(expected)
    perceptron = fitted("perceptron", "classification", X, y, classes)
    margin = np.where(y == 1, 1, -1) * perceptron.decision_function(X)
    expected = np.maximum(0, -margin).mean()
    assert algorithm_loss(perceptron, "perceptron", "classification", X, y) == pytest.approx(expected)


def test_multiclass_loss_sums_one_vs_rest_losses():
    # red wine quality as six classes: real multi-class data
    data = prepare_dataset(resolve_dataset("red_wine", task="classification"))
    X, y, _, _ = data.arrays()
    assert data.classes == ("3", "4", "5", "6", "7", "8")
    estimator = fitted("logistic_regression", "classification", X, y, np.arange(6))
    decision = estimator.decision_function(X)
    expected = np.mean([sum(np.log1p(np.exp(-(1 if y[i] == c else -1) * decision[i, c])) for c in range(6))
                        for i in range(len(y))])
    assert algorithm_loss(estimator, "logistic_regression", "classification", X, y) == pytest.approx(expected)


def test_log_loss_is_stable_for_huge_margins(diabetes):
    X, y, _, _ = diabetes.arrays()
    estimator = fitted("logistic_regression", "classification", X, y, np.arange(2))
    estimator.coef_ *= 1e6
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = algorithm_loss(estimator, "logistic_regression", "classification", X, y)
    assert np.isfinite(loss) and loss > 1e3


def test_regression_losses(red_wine):
    X, y, _, _ = red_wine.arrays()
    linear = fitted("linear_regression", "regression", X, y)
    expected = 0.5 * mean_squared_error(y, linear.predict(X))
    assert algorithm_loss(linear, "linear_regression", "regression", X, y) == pytest.approx(expected)
    svm = fitted("svm", "regression", X, y)
    expected = np.maximum(0, np.abs(y - svm.predict(X)) - svm.epsilon).mean()
    assert algorithm_loss(svm, "svm", "regression", X, y) == pytest.approx(expected)


def test_check_algorithm_fails_as_make_estimator_does_and_the_driver_never_imports_scikit_learn(tmp_path):
    with pytest.raises(ConfigError) as error:
        check_algorithm("perceptron", "regression", dataset="red_wine")
    assert "'perceptron' is for classification but dataset 'red_wine'" in str(error.value)
    check_algorithm("svm", "regression")

    # a fresh driver tunes a built-in SGD study: the workers train with scikit-learn, the driver
    # only checks that the algorithm fits the task (importing scikit-learn costs it ~0.8 CPU-s)
    script = f"""
import sys
from frugalml import Search, Study, Workload, tune
study = Study(name="driver", directory={str(tmp_path / "study")!r}, mlflow_uri=None, workers=1,
              workloads=[Workload(dataset="diabetes", algorithm="svm", max_steps=4, eval_every=2)],
              search=Search(method="grid", space={{"learning_rate": [0.01], "batch_size": [30]}}))
result = tune(study)
print(len(result.records), sorted(m for m in sys.modules if m.split(".")[0] == "sklearn")[:3])
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[-2] == "1 []", done.stdout
