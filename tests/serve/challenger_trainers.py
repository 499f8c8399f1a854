"""A champion and a challenger for ``test_challenger.py``: the same SGD on diabetes, the challenger
slower by ``predict_s`` of CPU a call and answering the other label on about 10% of the rows."""

from __future__ import annotations

import time

import numpy as np

LABELS = ("tested_negative", "tested_positive")


class Challenger:
    """A trained classifier that burns ``predict_s`` of CPU per call and flips the label of every row
    whose glucose (``plas``, column 1) is a multiple of 10: deterministic, ~10% of diabetes' rows."""

    def __init__(self, model, predict_s: float) -> None:
        self.model, self.predict_s = model, predict_s

    def predict(self, X):
        end = time.thread_time() + self.predict_s
        while time.thread_time() < end:
            pass
        X = np.asarray(X, dtype=np.float64)
        predictions = np.asarray(self.model.predict(X), dtype=object)
        flip = np.round(X[:, 1]) % 10 == 0
        predictions[flip] = [LABELS[1 - LABELS.index(p)] for p in predictions[flip]]
        return predictions


class Raises:
    """A challenger whose every predict fails."""

    def predict(self, X):
        raise ValueError("this challenger always fails")


def sgd(trial) -> None:
    """SGD on diabetes; ``params['challenger']`` keeps it as a :class:`Challenger`."""
    from trainers import diabetes_sgd

    model, X, y = diabetes_sgd(trial)
    kept = Challenger(model, float(trial.params["predict_s"])) if trial.params["challenger"] else model
    trial.log_model(kept, input_example=X.to_numpy()[:3])
    trial.log_reference(X, y)
