"""Training functions for the serving-budget tests, at module level so worker processes import them."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd


def _casp(n_train: int = 20_000) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    frame = pd.read_csv(os.path.join(os.environ["FRUGALML_DATA_DIR"], "casp_protein.csv.gz"))
    X = frame.drop(columns="target").to_numpy(dtype=np.float64)
    y = frame["target"].to_numpy(dtype=np.float64)
    return X[:n_train], y[:n_train], X[-2000:], y[-2000:]


def xgboost_forest(trial) -> None:
    """``xgb.train`` through frugalml's adapter; ``max_depth`` and ``rounds`` set the forest's size,
    and so what one prediction costs."""
    import xgboost as xgb

    from frugalml.integrations.xgboost import FrugalmlCallback

    X, y, X_val, y_val = _casp()
    rounds = int(trial.params["rounds"])
    booster = xgb.train({"max_depth": trial.params["max_depth"], "nthread": 1, "eta": 0.3}, xgb.DMatrix(X, y),
                        num_boost_round=rounds, evals=[(xgb.DMatrix(X_val, y_val), "val")], verbose_eval=False,
                        callbacks=[FrugalmlCallback(trial, rounds=rounds, n_samples=len(X))])
    trial.log_model(booster, input_example=X_val[:5])


class Unservable:
    """A model whose predict fails: measuring it must fail the trial, never make it feasible."""

    def predict(self, X):
        raise ValueError("this model cannot predict")


def unservable(trial) -> None:
    for _ in range(3):
        trial.step(1.0, 10)
    trial.report(val_loss=1.0)
    trial.log_model(Unservable(), input_example=np.zeros((2, 3)))


def keeps_no_model(trial) -> None:
    """Trains, but never keeps its model (its module calls no trial.log_model... in this function)."""
    for _ in range(3):
        trial.step(1.0, 10)
    trial.report(val_loss=1.0)


class Sized:
    """A model of ``mb`` megabytes of weights (its pickle is that large); predicts zeros."""

    def __init__(self, mb: float) -> None:
        self.weights = np.ones(int(mb * 2**20) // 8)

    def predict(self, X):
        return np.zeros(len(X))


def sized(trial) -> None:
    """Trains ~0.8 s and keeps a model whose size is ``params['mb']``: model size linear in a parameter."""
    import time

    for _ in range(4):
        time.sleep(0.2)  # about as long as measuring the previous trial's model takes
        trial.step(1.0, 10)
    trial.report(val_loss=1.0 / trial.params["mb"])
    trial.log_model(Sized(trial.params["mb"]), input_example=np.zeros((2, 3)))
