"""A user's own training loop whose step time is set by a parameter, for the gate's tests."""

from __future__ import annotations

import os
import time


def timed_sgd(trial, epochs: int = 4, batch: int = 32) -> None:
    """SGD on real data (diabetes) with ``params['step_s']`` of CPU work added to each step:
    a candidate made slower on purpose, by a known factor."""
    import pandas as pd
    from sklearn.linear_model import SGDClassifier

    frame = pd.read_csv(os.path.join(os.environ["FRUGALML_DATA_DIR"], "diabetes.csv.gz"))
    X, y = frame.drop(columns="target"), frame["target"]
    if trial.params.get("shuffle_labels"):  # data that makes the model worse
        y = y.sample(frac=1.0, random_state=1).reset_index(drop=True)
    features, labels = X.to_numpy(), y.to_numpy()  # numpy batches: the added work dominates the step
    model = SGDClassifier(alpha=trial.params["alpha"], random_state=0)
    batches = len(X) // batch
    trial.plan(epochs * batches)
    step_s = float(trial.params["step_s"])
    for _ in range(epochs):
        for i in range(batches):
            rows = slice(i * batch, (i + 1) * batch)
            model.partial_fit(features[rows], labels[rows], classes=["tested_negative", "tested_positive"])
            end = time.thread_time() + step_s
            while time.thread_time() < end:
                pass
            if trial.step(loss=0.0, n_samples=batch):
                trial.report(accuracy=model.score(features, labels))
    trial.log_model(model, input_example=features[:3])
    trial.log_reference(X, y)


class SlowPredictor:
    """A trained model whose every predict call burns ``predict_s`` of CPU: one slower to serve."""

    def __init__(self, model, predict_s: float) -> None:
        self.model, self.predict_s = model, predict_s

    def predict(self, X):
        end = time.thread_time() + self.predict_s
        while time.thread_time() < end:
            pass
        return self.model.predict(X)


def served_sgd(trial) -> None:
    """SGD on diabetes, kept as a model whose predict takes ``params['predict_s']`` longer."""
    from trainers import diabetes_sgd

    model, X, y = diabetes_sgd(trial)
    trial.log_model(SlowPredictor(model, float(trial.params["predict_s"])), input_example=X.to_numpy()[:3])
    trial.log_reference(X, y)
