"""The built-in training function: SGD trained batch by batch with ``partial_fit``."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from frugalml.exceptions import ConfigError
from frugalml.metrics import ACCURACY, RMSE, VAL_LOSS
from frugalml.trial import Trial
from frugalml.validation import Interval, check
from frugalml.workloads._algorithms import _loss_name, algorithm_loss, loss_from_decision, make_estimator
from frugalml.workloads._prepare import PreparedData

DATA_FORMATS = ("numpy", "pandas")


def steps_planned(n_train: int, batch_size: int, epochs: int = 1, max_steps: int | None = None) -> int:
    """Steps a run will take: ``ceil(n_train / batch) * epochs``, capped by ``max_steps``.

    A batch larger than ``n_train`` counts as ``n_train``.
    """
    batch = max(1, min(int(batch_size), int(n_train)))
    total = math.ceil(n_train / batch) * int(epochs)
    return total if max_steps is None else min(total, int(max_steps))


def evaluated_rows(trial: Trial, n_test: int, eval_rows: int | None) -> int:
    """Test rows a window before the last is evaluated on; recorded (``info["eval_rows"]``)
    when it is a sample, since a trial a rule stops keeps a sampled value as its last."""
    if eval_rows is None or eval_rows >= n_test:
        return n_test
    trial.set_info(eval_rows=eval_rows)
    return eval_rows


def _check_int(name: str, value: Any, low: int) -> int:
    return int(check("sgd_train", name, value, Interval(int, low, None, integral_floats=True)))


def sgd_train(
    trial: Trial,
    data: PreparedData,
    *,
    algorithm: str,
    epochs: int = 1,
    max_steps: int | None = None,
    data_format: str = "numpy",
    seed: int = 0,
    eval_rows: int | None = None,
) -> None:
    """Train an SGD model on ``data`` one batch per ``trial.step``, as in the thesis.

    Reads ``trial.params["batch_size"]``, ``trial.params["learning_rate"]`` and, when
    given, ``trial.params["alpha"]`` (the L2 strength; default 0.0001). Batches
    are sequential slices of the (already shuffled) training split, with no per-epoch
    shuffle. When a window ends, reports ``val_loss`` and ``accuracy`` (classification)
    or ``rmse`` (regression) on the whole test split (with ``eval_rows``, windows before
    the last on its first ``eval_rows`` rows); a final partial window is reported too. A
    batch larger than the training split is clamped, and recorded with ``trial.set_info``.
    If the weights overflow, reports an infinite loss, records ``diverged=True`` and returns.

    Args:
        trial: the trial handle.
        data: a prepared dataset (memory-mapped here, not copied).
        algorithm: one of ``ALGORITHMS``.
        epochs: passes over the training split.
        max_steps: stop after this many steps.
        data_format: ``"numpy"`` slices the memory map (no copy); ``"pandas"`` slices a
            DataFrame with ``.iloc``, so each batch is copied, as with ``fetch_openml``.
        seed: the estimator's ``random_state``.
        eval_rows: test rows the windows before the last are evaluated on (None: all).

    Example::

        >>> trial = Trial({"batch_size": 32, "learning_rate": 0.01}, eval_every=10)
        >>> sgd_train(trial, prepare_dataset(resolve_dataset("diabetes")), algorithm="svm")
    """
    batch_size = _check_int("batch_size", trial.params.get("batch_size"), 1)
    learning_rate = check("sgd_train", "learning_rate", trial.params.get("learning_rate"),
                          Interval(float, 0, None, closed="neither"))
    alpha = check("sgd_train", "alpha", trial.params.get("alpha", 0.0001), Interval(numbers.Real, 0, None))
    epochs = _check_int("epochs", epochs, 1)
    if max_steps is not None:
        max_steps = _check_int("max_steps", max_steps, 1)
    if eval_rows is not None:
        eval_rows = _check_int("eval_rows", eval_rows, 1)
    if data_format not in DATA_FORMATS:
        raise ConfigError(f"data_format must be one of {DATA_FORMATS}, but got {data_format!r}.")
    task = data.task
    loss = _loss_name(algorithm, task, data.name)[1]
    estimator = make_estimator(algorithm, task, float(learning_rate), seed, dataset=data.name, alpha=float(alpha))

    n_train = data.n_train
    batch = min(batch_size, n_train)
    if batch < batch_size:
        trial.set_info(batch_size=batch, batch_size_clamped=True, requested_batch_size=batch_size)
    X_train, y_train, X_test, y_test = data.arrays(mmap=True)
    rows = data.frame().iloc if data_format == "pandas" else X_train
    fit_kwargs = {"classes": np.arange(len(data.classes))} if task == "classification" else {}
    planned = steps_planned(n_train, batch, epochs, max_steps)

    sample = evaluated_rows(trial, len(y_test), eval_rows)

    def evaluate(whole: bool) -> dict[str, float]:
        n = len(y_test) if whole else sample
        X, y = X_test[:n], y_test[:n]
        if task == "classification":
            decision = estimator.decision_function(X)
            predicted = (decision > 0).astype(np.int64) if decision.ndim == 1 else decision.argmax(axis=1)
            accuracy = float(np.mean(estimator.classes_[predicted] == y))
            return {VAL_LOSS: loss_from_decision(loss, decision, y, estimator.classes_), ACCURACY: accuracy}
        predicted = estimator.predict(X)
        with np.errstate(over="ignore", invalid="ignore"):
            rmse = float(np.sqrt(np.mean((y - predicted) ** 2)))
        return {VAL_LOSS: loss_from_decision(loss, predicted, y, epsilon=estimator.epsilon), RMSE: rmse}

    step = 0
    pending = False
    trial.reset_clock()
    while step < planned:
        for start in range(0, n_train, batch):
            if step >= planned:
                break
            X_batch, y_batch = rows[start : start + batch], y_train[start : start + batch]
            try:
                estimator.partial_fit(X_batch, y_batch, **fit_kwargs)
            except ValueError as error:
                if "overflow" not in str(error):
                    raise
                trial.set_info(diverged=True)
                trial.step(math.inf, len(y_batch))
                quality = {ACCURACY: math.nan} if task == "classification" else {RMSE: math.inf}
                trial.report(val_loss=math.inf, **quality)
                return
            step += 1
            pending = not trial.step(algorithm_loss(estimator, algorithm, task, X_batch, y_batch), len(y_batch))
            if not pending:
                trial.report(**evaluate(whole=step >= planned))
    if pending:
        trial.report(**evaluate(whole=True))
