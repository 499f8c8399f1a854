"""Training functions for the boosting-adapter tests: each framework's own loop on real data.

They live at module level so frugalml's worker processes can import them. Each one
trains on casp_protein (45730 rows, 9 features, a float target), hands its loop to the
framework through the adapter under test, and logs the trained model and a reference
table so that the best trial can be registered and served.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

N_TRAIN = 40_000  # large enough that deep trees outgrow a few hundred MB within their first round
N_VAL = 5_000


def casp(n_train: int = N_TRAIN) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train and validation rows of casp_protein, in a fixed shuffled order."""
    frame = pd.read_csv(os.path.join(os.environ["FRUGALML_DATA_DIR"], "casp_protein.csv.gz"))
    order = np.random.default_rng(0).permutation(len(frame))
    X = frame.drop(columns="target").to_numpy(dtype=np.float64)[order]
    y = frame["target"].to_numpy(dtype=np.float64)[order]
    return X[:n_train], y[:n_train], X[-N_VAL:], y[-N_VAL:]


def diabetes() -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame, np.ndarray]:
    """The diabetes table with 0/1 labels (tested_positive = 1): 600 training rows, 168 validation rows."""
    frame = pd.read_csv(os.path.join(os.environ["FRUGALML_DATA_DIR"], "diabetes.csv.gz"))
    X, y = frame.drop(columns="target"), (frame["target"] == "tested_positive").to_numpy(dtype=np.int64)
    return X.iloc[:600], y[:600], X.iloc[600:], y[600:]


def _log(trial, model, X_val, y_val) -> None:
    trial.log_model(model, input_example=X_val[:3])
    trial.log_reference(X_val[:2000], y_val[:2000])


def xgboost_casp(trial, rounds: int = 30, max_bin: int = 512) -> None:
    """``xgb.train`` on casp_protein; ``trial.params["max_depth"]`` sets the trees' depth (and memory)."""
    import xgboost as xgb

    from frugalml.integrations.xgboost import FrugalmlCallback

    X, y, X_val, y_val = casp()
    dtrain, dval = xgb.DMatrix(X, y), xgb.DMatrix(X_val, y_val)
    params = {"max_depth": trial.params["max_depth"], "max_bin": max_bin, "nthread": 1, "eta": 0.3}
    booster = xgb.train(params, dtrain, num_boost_round=rounds, evals=[(dtrain, "train"), (dval, "val")],
                        verbose_eval=False, callbacks=[FrugalmlCallback(trial, rounds=rounds, n_samples=len(X))])
    _log(trial, booster, X_val, y_val)


def lightgbm_casp(trial, rounds: int = 30, max_bin: int = 2047) -> None:
    """``LGBMRegressor.fit`` on casp_protein; ``trial.params["num_leaves"]`` sets the histogram pool (memory)."""
    import lightgbm as lgb

    from frugalml.integrations.lightgbm import FrugalmlCallback

    X, y, X_val, y_val = casp()
    model = lgb.LGBMRegressor(n_estimators=rounds, num_leaves=trial.params["num_leaves"], max_bin=max_bin,
                              min_child_samples=2, n_jobs=1, verbose=-1)
    # rounds=: the 2047-leaf pool is allocated (and killed) before LightGBM's first round
    model.fit(X, y, eval_X=(X_val,), eval_y=(y_val,), callbacks=[FrugalmlCallback(trial, rounds=rounds)])
    _log(trial, model, X_val, y_val)


def extra_trees_casp(trial, n_estimators: int = 150) -> None:
    """One ``ExtraTreesRegressor.fit`` on casp_protein; ``trial.params["min_samples_leaf"]`` sets the
    trees' size: at 1 every tree holds ~2 nodes per training row (~6 MB), and memory grows during the fit."""
    from sklearn.ensemble import ExtraTreesRegressor

    from frugalml.integrations.sklearn import fit

    X, y, X_val, y_val = casp()
    forest = ExtraTreesRegressor(n_estimators=n_estimators, min_samples_leaf=trial.params["min_samples_leaf"],
                                 n_jobs=1, random_state=0)
    fit(trial, forest, X, y, X_val=X_val, y_val=y_val)
    _log(trial, forest, X_val, y_val)


def _probe(trial):
    """An XGBoost callback to list before frugalml's: it records whether XGBoost's loop ended its own way
    (``after_training`` runs) and how many rounds the booster has then."""
    import xgboost as xgb

    class Probe(xgb.callback.TrainingCallback):
        def after_training(self, model):
            trial.set_info(after_training_rounds=model.num_boosted_rounds())
            return model

    return Probe()


def xgboost_diabetes(trial, rounds: int = 50, sklearn_api: bool = False) -> None:
    """XGBoost on diabetes (binary, with the ``error`` metric), through ``xgb.train`` or ``XGBClassifier``."""
    import xgboost as xgb

    from frugalml.integrations.xgboost import FrugalmlCallback

    X, y, X_val, y_val = diabetes()
    callback = FrugalmlCallback(trial, rounds=rounds, n_samples=len(X))
    params = {"max_depth": trial.params.get("max_depth", 3), "nthread": 1, "eval_metric": ["error", "logloss"]}
    if sklearn_api:  # the callback stays on the model, and is pickled with it by log_model
        model = xgb.XGBClassifier(n_estimators=rounds, callbacks=[callback], **params)
        model.fit(X, y, eval_set=[(X_val, y_val)], verbose=False)
    else:
        dtrain, dval = xgb.DMatrix(X, y), xgb.DMatrix(X_val, y_val)
        model = xgb.train({**params, "objective": "binary:logistic"}, dtrain, num_boost_round=rounds,
                          evals=[(dtrain, "train"), (dval, "val")], verbose_eval=False,
                          callbacks=[_probe(trial), callback])
    trial.log_model(model, input_example=X_val.head(3))


def lightgbm_diabetes(trial, rounds: int = 50) -> None:
    """``lgb.train`` on diabetes with the training data among the validation sets."""
    import lightgbm as lgb

    from frugalml.integrations.lightgbm import FrugalmlCallback

    X, y, X_val, y_val = diabetes()
    train_set = lgb.Dataset(X, y)
    valid = lgb.Dataset(X_val, y_val, reference=train_set)
    params = {"objective": "binary", "metric": ["binary_error", "binary_logloss"], "num_leaves": 7,
              "num_threads": 1, "verbose": -1}
    booster = lgb.train(params, train_set, num_boost_round=rounds, valid_sets=[train_set, valid],
                        callbacks=[FrugalmlCallback(trial)])
    trial.set_info(rounds_trained=booster.current_iteration())


def forest_diabetes(trial, n_estimators: int = 40, n_steps: int = 4) -> None:
    """A random forest grown in ``n_steps`` warm-start fits."""
    from sklearn.ensemble import RandomForestClassifier

    from frugalml.integrations.sklearn import fit

    X, y, X_val, y_val = diabetes()
    forest = fit(trial, RandomForestClassifier(n_estimators=n_estimators, max_depth=4, random_state=0),
                 X, y, X_val=X_val, y_val=y_val, n_steps=n_steps)
    trial.set_info(trees=len(forest.estimators_), warm_start=forest.warm_start)
