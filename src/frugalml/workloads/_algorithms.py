"""The thesis's four SGD algorithms and their own losses, computed cheaply with numpy."""

from __future__ import annotations

from typing import Any

import numpy as np

from frugalml.exceptions import ConfigError

ALGORITHMS = ("linear_regression", "perceptron", "logistic_regression", "svm")

# (algorithm, task) -> (estimator class name, scikit-learn loss)
_ESTIMATORS: dict[tuple[str, str], tuple[str, str]] = {
    ("linear_regression", "regression"): ("SGDRegressor", "squared_error"),
    ("perceptron", "classification"): ("SGDClassifier", "perceptron"),
    ("logistic_regression", "classification"): ("SGDClassifier", "log_loss"),
    ("svm", "classification"): ("SGDClassifier", "hinge"),
    ("svm", "regression"): ("SGDRegressor", "epsilon_insensitive"),
}


def _loss_name(algorithm: str, task: str, dataset: str | None = None) -> tuple[str, str]:
    if algorithm not in ALGORITHMS:
        raise ConfigError(f"unknown algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)} (SGD) "
                          "or mlp, cnn (PyTorch networks).")
    if task not in ("classification", "regression"):
        raise ConfigError(f"task must be 'classification' or 'regression', but got {task!r}.")
    if (algorithm, task) not in _ESTIMATORS:
        fits = [a for a in ALGORITHMS if (a, task) in _ESTIMATORS]
        other = "regression" if task == "classification" else "classification"
        where = f"dataset {dataset!r}" if dataset else "the dataset"
        raise ConfigError(
            f"algorithm {algorithm!r} is for {other} but {where} is a {task} task; "
            f"use {' or '.join(repr(a) for a in fits)}."
        )
    return _ESTIMATORS[(algorithm, task)]


def check_algorithm(algorithm: str, task: str, dataset: str | None = None) -> None:
    """Raise :class:`~frugalml.exceptions.ConfigError` unless ``algorithm`` fits ``task``;
    unlike :func:`make_estimator`, without importing scikit-learn (~0.8 CPU-s in a driver)."""
    _loss_name(algorithm, task, dataset)


def make_estimator(
    algorithm: str, task: str, learning_rate: float, seed: int = 0, *, dataset: str | None = None,
    alpha: float = 0.0001,
) -> Any:
    """A scikit-learn SGD estimator with a constant learning rate.

    Args:
        algorithm: one of :data:`ALGORITHMS`.
        task: ``"classification"`` or ``"regression"``.
        learning_rate: the constant step size ``eta0``.
        seed: ``random_state``.
        dataset: named in the error message when the algorithm does not fit the task.
        alpha: the L2 regularisation strength (scikit-learn's default).

    Example::

        >>> make_estimator("svm", "regression", 0.01, seed=0).loss
        'epsilon_insensitive'
    """
    from sklearn.linear_model import SGDClassifier, SGDRegressor

    class_name, loss = _loss_name(algorithm, task, dataset)
    cls = SGDClassifier if class_name == "SGDClassifier" else SGDRegressor
    return cls(loss=loss, learning_rate="constant", eta0=learning_rate, random_state=seed, alpha=alpha)


def algorithm_loss(estimator: Any, algorithm: str, task: str, X: Any, y: np.ndarray) -> float:
    """The algorithm's own mean loss on ``(X, y)``.

    Classification is one-vs-rest: per sample, the binary loss summed over classes with
    ``y`` in {-1, +1} (one column for two classes). Regression uses ``0.5 (y - f)^2``
    or ``max(0, |y - f| - epsilon)``.
    """
    _, loss = _loss_name(algorithm, task)
    if task == "classification":
        return loss_from_decision(loss, estimator.decision_function(X), y, estimator.classes_)
    return loss_from_decision(loss, estimator.predict(X), y, epsilon=getattr(estimator, "epsilon", 0.0))


def loss_from_decision(
    loss: str, decision: np.ndarray, y: np.ndarray, classes: np.ndarray | None = None, epsilon: float = 0.0
) -> float:
    """Mean loss from decision values (classification) or predictions (regression)."""
    y = np.asarray(y)
    with np.errstate(over="ignore", invalid="ignore"):
        if loss in ("squared_error", "epsilon_insensitive"):
            residual = y - decision
            per_sample = 0.5 * residual**2 if loss == "squared_error" else np.maximum(0.0, np.abs(residual) - epsilon)
            return float(np.mean(per_sample))
        assert classes is not None
        if decision.ndim == 1:
            signs = np.where(y == classes[1], 1.0, -1.0)
        else:
            signs = -np.ones(decision.shape)
            signs[np.arange(len(y)), np.searchsorted(classes, y)] = 1.0
        margin = signs * decision
        if loss == "hinge":
            per_entry = np.maximum(0.0, 1.0 - margin)
        elif loss == "perceptron":
            per_entry = np.maximum(0.0, -margin)
        else:  # log_loss, stable for large margins
            per_entry = np.logaddexp(0.0, -margin)
        return float(np.mean(per_entry.sum(axis=1)) if per_entry.ndim == 2 else np.mean(per_entry))
