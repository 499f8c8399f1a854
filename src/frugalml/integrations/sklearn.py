"""scikit-learn estimators without ``partial_fit``: one ``fit`` is one frugalml step.

:func:`fit` plans the run, times ``estimator.fit`` as the step, reports validation
metrics when validation data is given, and returns the fitted estimator. A single
``fit`` is one long step, which frugalml.tune's watchdog still holds to the memory,
step-time and trial-time budgets from outside the process: a forest that outgrows
its memory budget is stopped in the middle of ``fit``. Ensembles that can grow
(``warm_start`` and ``n_estimators``: forests, gradient boosting, bagging) can be fitted
in ``n_steps`` steps instead, each adding ``n_estimators / n_steps`` estimators, so that
windows, step times and predicted stops work as with any other training loop.

Example::

    from sklearn.ensemble import RandomForestClassifier
    from frugalml.integrations.sklearn import fit

    def train(trial):
        forest = RandomForestClassifier(n_estimators=300, max_depth=trial.params["max_depth"])
        fit(trial, forest, X, y, X_val=X_val, y_val=y_val, n_steps=10)   # 30 trees per step
        trial.log_model(forest, input_example=X[:3])

Reported after the last step (and when a window ends): ``accuracy`` and ``val_loss``
(log loss with ``predict_proba``, else 1 - accuracy) for a classifier; ``val_loss``
(mean squared error) and ``rmse`` for a regressor; ``score`` (``estimator.score``) for
anything else. Cost: one ``trial.step`` per step; the validation metrics cost a
``predict`` (and ``predict_proba``) on the validation data per report.
"""

from __future__ import annotations

import math
from typing import Any

from frugalml.exceptions import TrialUsageError
from frugalml.integrations._frameworks import require, require_trial
from frugalml.metrics import ACCURACY, RMSE, VAL_LOSS
from frugalml.validation import POSITIVE_INT, check

sklearn = require("sklearn", "1.4", "all", package="scikit-learn")

__all__ = ["fit"]


def fit(trial: Any, estimator: Any, X: Any, y: Any = None, *, X_val: Any = None, y_val: Any = None,
        n_steps: int = 1, **fit_params: Any) -> Any:
    """Fit ``estimator`` on ``X``, ``y`` as ``n_steps`` frugalml steps; returns the fitted estimator.

    Args:
        trial: the trial your training function receives.
        estimator: an unfitted scikit-learn estimator (or anything with ``fit``).
        X, y: the training data.
        X_val, y_val: validation data for the reported metrics (both or neither).
        n_steps: 1 (one ``fit``), or more for an ensemble with ``warm_start`` and
            ``n_estimators``, grown to ``n_estimators`` in that many fits.
        **fit_params: passed to every ``estimator.fit`` (e.g. ``sample_weight``).
    """
    trial = require_trial(trial, "frugalml.integrations.sklearn.fit")
    check("fit", "n_steps", n_steps, POSITIVE_INT)
    if not callable(getattr(estimator, "fit", None)):
        raise TrialUsageError(f"frugalml.integrations.sklearn.fit needs an estimator with a fit method. "
                              f"Got {type(estimator).__name__} instead.")
    if (X_val is None) != (y_val is None):
        raise TrialUsageError("frugalml.integrations.sklearn.fit needs both X_val and y_val, or neither. "
                              f"Got {'X_val' if y_val is None else 'y_val'} only.")
    sizes = _sizes(estimator, n_steps)
    warm_start = estimator.get_params().get("warm_start") if n_steps > 1 else None
    n_samples = _num_samples(X)
    trial.plan(n_steps)
    trial.reset_clock()  # loading the data and building the estimator is set-up, not the first step
    try:
        for step, n_estimators in enumerate(sizes, start=1):
            if n_estimators is not None:
                estimator.set_params(warm_start=True, n_estimators=n_estimators)
            estimator.fit(X, y, **fit_params)
            if (trial.step(n_samples=n_samples) or step == n_steps) and X_val is not None:
                trial.report(**_evaluate(estimator, X_val, y_val))
    finally:
        if warm_start is not None:
            estimator.set_params(warm_start=warm_start)  # the fitted estimators stay; a refit starts afresh
    return estimator


def _sizes(estimator: Any, n_steps: int) -> list[int | None]:
    """The ensemble size after each step (None: one plain ``fit``)."""
    if n_steps == 1:
        return [None]
    params = estimator.get_params() if callable(getattr(estimator, "get_params", None)) else {}
    total = params.get("n_estimators")
    if "warm_start" not in params or not isinstance(total, int):
        raise TrialUsageError(f"fit(n_steps={n_steps}) grows an ensemble step by step, which needs an estimator "
                              f"with warm_start and n_estimators (a forest, gradient boosting, bagging); "
                              f"{type(estimator).__name__} has not both. Pass n_steps=1 to fit it in one step.")
    if n_steps > total:
        raise TrialUsageError(f"fit(n_steps={n_steps}) must add at least one estimator per step, so n_steps <= "
                              f"n_estimators must hold. Got n_estimators={total}.")
    return [math.ceil(total * step / n_steps) for step in range(1, n_steps + 1)]


def _num_samples(X: Any) -> int:
    shape = getattr(X, "shape", None)
    return int(shape[0]) if shape else len(X)


def _evaluate(estimator: Any, X_val: Any, y_val: Any) -> dict[str, float]:
    from sklearn.base import is_classifier, is_regressor
    from sklearn.metrics import accuracy_score, log_loss, mean_squared_error

    if is_classifier(estimator):
        accuracy = float(accuracy_score(y_val, estimator.predict(X_val)))
        if hasattr(estimator, "predict_proba"):
            val_loss = float(log_loss(y_val, estimator.predict_proba(X_val), labels=estimator.classes_))
        else:
            val_loss = 1.0 - accuracy
        return {VAL_LOSS: val_loss, ACCURACY: accuracy}
    if is_regressor(estimator):
        mse = float(mean_squared_error(y_val, estimator.predict(X_val)))
        return {VAL_LOSS: mse, RMSE: math.sqrt(mse)}
    return {"score": float(estimator.score(X_val, y_val))}
