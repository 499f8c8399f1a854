"""XGBoost, LightGBM and scikit-learn training loops tuned by frugalml through their adapters.

Each framework's study runs its own loop (``xgb.train``, ``LGBMRegressor.fit``, one
``ExtraTreesRegressor.fit``) in worker processes on casp_protein: the large configuration
outgrows the memory budget and the watchdog kills it mid-training (for the forest, in
the middle of its single ``fit``), the small one completes, and its logged model is
registered and served, answering ``/predict`` with that model's own predictions.
Measured on this data (peak ``memory_mb`` of a worker, RSS - shared): XGBoost depth 3
~137 MB, depth 18 ~1050 MB; LightGBM 15 leaves ~132 MB, 2047 leaves ~658 MB (its
histogram pool); extra trees with 200-row leaves ~130 MB, with 1-row leaves growing by
~6 MB per tree past 1 GB. The budgets sit between, with a margin of 2x or more each
side. The in-process tests check what needs no watchdog: planned lengths, reported
metrics, and how each adapter ends its framework's loop when a rule fires.
"""

from __future__ import annotations

import importlib
import pickle
import sys
from pathlib import Path

import boosting_trainers as trainers
import cloudpickle
import numpy as np
import pytest
from helpers import ServerProcess

from frugalml import ConfigError, Search, Study, Trial, TrialStatus, TrialUsageError, Workload, tune
from frugalml.executors import InProcessExecutor
from frugalml.messages import Message, Plan
from frugalml.registry import register

# -- studies in worker processes: a memory budget, then register and serve ------------------

def _tune(directory: Path, name: str, train, space: dict, memory_mb: float):
    study = Study(name=name, workloads=[Workload(train=train, eval_every=5, name=name)], search=Search(space=space),
                  budget={"max_memory_mb": memory_mb}, workers=2, directory=str(directory))
    return tune(study)


def _small_and_large(result, param: str, small_and_large: tuple, memory_mb: float, planned: int):
    by_value = {r.params[param]: r for r in result.records}
    small, large = (by_value[value] for value in small_and_large)
    print(f"{result.records[0].workload}: small {small.params} peak {small.peak('memory_mb'):.0f} MB; large "
          f"{large.params} stopped at step {large.steps_done}/{large.steps_planned} "
          f"({large.stop.message if large.stop else large.status})")
    assert small.status is TrialStatus.COMPLETED, small.error
    assert small.steps_done == small.steps_planned == planned  # the adapter's trial.plan: the workload has no steps
    assert small.peak("memory_mb") < memory_mb / 2
    assert large.status is TrialStatus.STOPPED, large.error
    assert large.stop.rule == "max_memory_mb" and large.stop.value > memory_mb
    assert large.steps_planned == planned and large.steps_done < planned
    assert large.cpu_s_saved > 0 or large.saved_basis == "unknown"  # unknown: stopped before its first window
    assert "model" not in large.info  # killed before it could log one
    return small, large


def _serve(tmp_path: Path, directory: Path, name: str, rows: np.ndarray) -> list:
    version = register(directory, alias="champion")
    server = ServerProcess(f"models:/{name}-{name}@champion", "--tracking-uri", version.tracking_uri,
                           log=tmp_path / "server.log").wait_ready()
    try:
        answer = server.client.post("/predict", json={"instances": rows.tolist()})
        assert answer.status_code == 200, answer.text
        return answer.json()["predictions"]
    finally:
        server.stop()


def _trained(record):
    with open(Path(record.info["model"]["path"]) / "model.pkl", "rb") as file:
        return cloudpickle.load(file)


def _rows() -> np.ndarray:
    return trainers.casp(n_train=1)[2][:20]  # validation rows none of the models trained on


def test_xgboost_train_deep_trees_are_stopped_for_memory_and_the_shallow_booster_is_served(tmp_path):
    import xgboost as xgb

    memory_mb = 400
    result = _tune(tmp_path / "study", "xgb", trainers.xgboost_casp, {"max_depth": [3, 18]}, memory_mb)
    small, _ = _small_and_large(result, "max_depth", (3, 18), memory_mb, planned=30)
    assert small.info["model"]["flavor"] == "mlflow.xgboost"
    assert small.last("val_loss") == pytest.approx(small.last("rmse"))
    assert small.last("val_loss") < small.windows[0].values["val_loss"]
    assert small.last("train_loss") > 0
    rows = _rows()
    served = _serve(tmp_path, tmp_path / "study", "xgb", rows)
    booster = _trained(small)
    assert isinstance(booster, xgb.Booster)
    assert served == pytest.approx(booster.predict(xgb.DMatrix(rows)).tolist(), rel=1e-6)


def test_lightgbm_large_leaf_pool_is_stopped_for_memory_and_the_small_regressor_is_served(tmp_path):
    import lightgbm as lgb

    memory_mb = 350
    result = _tune(tmp_path / "study", "lgb", trainers.lightgbm_casp, {"num_leaves": [15, 2047]}, memory_mb)
    small, _ = _small_and_large(result, "num_leaves", (15, 2047), memory_mb, planned=30)
    assert small.info["model"]["flavor"] == "mlflow.lightgbm"
    assert small.last("val_loss") == pytest.approx(small.last("l2"))
    rows = _rows()
    served = _serve(tmp_path, tmp_path / "study", "lgb", rows)
    model = _trained(small)
    assert isinstance(model, lgb.LGBMRegressor)
    assert served == pytest.approx(model.predict(rows).tolist(), rel=1e-6)


def test_sklearn_forest_outgrowing_its_budget_is_stopped_mid_fit_and_the_small_forest_is_served(tmp_path):
    from sklearn.ensemble import ExtraTreesRegressor

    memory_mb = 400
    result = _tune(tmp_path / "study", "forest", trainers.extra_trees_casp, {"min_samples_leaf": [200, 1]},
                   memory_mb)
    small, large = _small_and_large(result, "min_samples_leaf", (200, 1), memory_mb, planned=1)
    assert large.steps_done == 0  # the one fit was under way when the watchdog killed it
    assert small.info["model"]["flavor"] == "mlflow.sklearn"
    assert small.last("rmse") == pytest.approx(small.last("val_loss") ** 0.5)
    rows = _rows()
    served = _serve(tmp_path, tmp_path / "study", "forest", rows)
    forest = _trained(small)
    assert isinstance(forest, ExtraTreesRegressor)
    assert served == pytest.approx(forest.predict(rows).tolist(), rel=1e-9)


# -- in process: planned lengths, metrics, and ending the framework's loop ------------------

def _in_process(tmp_path: Path, train, budget: dict | None = None, eval_every: int = 5, **train_kwargs):
    study = Study(name="inline", workloads=[Workload(train=train, train_kwargs=train_kwargs, eval_every=eval_every,
                                                     name="w")],
                  search=Search(space={"max_depth": [3]}), budget=budget or {}, directory=str(tmp_path / "study"),
                  mlflow_uri=None)  # no tracking store: 0.2 s a study instead of 3-5
    (record,) = tune(study, executor=InProcessExecutor).records
    return record


@pytest.mark.parametrize("train, kwargs, planned, train_loss", [
    (trainers.xgboost_diabetes, {}, 50, True),
    (trainers.xgboost_diabetes, {"sklearn_api": True}, 50, False),  # eval_set names no "train" set
    (trainers.lightgbm_diabetes, {}, 50, True),
    (trainers.forest_diabetes, {"n_steps": 4}, 4, False),
], ids=["xgb.train", "XGBClassifier", "lgb.train", "forest-warm-start"])
def test_a_full_run_plans_its_rounds_and_reports_loss_and_accuracy_every_window(tmp_path, train, kwargs, planned,
                                                                                  train_loss):
    record = _in_process(tmp_path, train, eval_every=2, **kwargs)
    assert record.status is TrialStatus.COMPLETED, record.error
    assert record.steps_done == record.steps_planned == planned
    assert len(record.windows) == planned // 2
    for window in record.windows:
        assert 0 < window.values["val_loss"] < 1.5 and 0.5 < window.values["accuracy"] <= 1.0
        assert (window.values["train_loss"] > 0) is train_loss  # NaN when the framework has none
    assert record.windows[-1].values["throughput_sps"] > 0


def test_sklearn_api_model_is_logged_with_the_callback_and_the_copy_has_no_trial(tmp_path):
    record = _in_process(tmp_path, trainers.xgboost_diabetes, sklearn_api=True)
    assert record.info["model"]["flavor"] == "mlflow.xgboost"
    model = _trained(record)
    (callback,) = model.get_params()["callbacks"]
    assert callback.trial is None  # the trial's pipe and shared memory stayed in its process
    assert model.predict(trainers.diabetes()[2]).shape == (168,)
    with pytest.raises(TrialUsageError, match="no trial; create FrugalmlCallback") as error:
        model.fit(*trainers.diabetes()[:2])
    assert "\n" not in str(error.value)


def test_xgboost_ends_its_own_loop_when_a_rule_fires_and_the_trial_still_ends_stopped(tmp_path):
    record = _in_process(tmp_path, trainers.xgboost_diabetes, budget={"max_mean_step_ms": 0.0001})
    assert record.status is TrialStatus.STOPPED and record.stop.rule == "max_mean_step_ms"
    assert record.steps_done == 5 and record.steps_planned == 50 and record.cpu_s_saved > 0
    assert record.info["after_training_rounds"] == 5  # after_iteration returned True: XGBoost ran after_training
    assert "model" not in record.info  # the stop was raised again: no half-trained model logged as finished


def test_lightgbm_stop_propagates_out_of_lgb_train_so_the_run_is_not_taken_for_complete(tmp_path):
    record = _in_process(tmp_path, trainers.lightgbm_diabetes, budget={"max_mean_step_ms": 0.0001})
    assert record.status is TrialStatus.STOPPED and record.stop.rule == "max_mean_step_ms"
    assert record.steps_done == 5 and record.steps_planned == 50
    assert "rounds_trained" not in record.info  # the code after lgb.train did not run


def test_lightgbm_early_stopping_still_works_beside_the_callback():
    import lightgbm as lgb

    from frugalml.integrations.lightgbm import FrugalmlCallback

    X, y, X_val, y_val = trainers.diabetes()
    messages: list[Message] = []
    trial = Trial({}, eval_every=1000, send=messages.append)
    booster = lgb.train({"objective": "binary", "learning_rate": 0.5, "verbose": -1}, lgb.Dataset(X, y), 500,
                        valid_sets=[lgb.Dataset(X_val, y_val)],
                        callbacks=[lgb.early_stopping(3, verbose=False), FrugalmlCallback(trial)])
    assert booster.current_iteration() < 500
    assert messages[0] == Plan(steps=500)
    assert trial.steps == booster.best_iteration + 3  # every round, the one early stopping ended in too


def test_sklearn_warm_start_steps_stop_between_fits_when_a_rule_fires(tmp_path):
    record = _in_process(tmp_path, trainers.forest_diabetes, budget={"max_mean_step_ms": 0.0001}, eval_every=1,
                         n_steps=4)
    assert record.status is TrialStatus.STOPPED and record.stop.rule == "max_mean_step_ms"
    assert record.steps_done == 1 and record.steps_planned == 4


# -- misuse: one-line errors ----------------------------------------------------------------

def _adapters():
    from frugalml.integrations import lightgbm, sklearn, xgboost

    return {
        "xgboost": lambda trial: xgboost.FrugalmlCallback(trial),
        "lightgbm": lambda trial: lightgbm.FrugalmlCallback(trial),
        "sklearn": lambda trial: sklearn.fit(trial, None, [[0.0]], [0]),
    }


@pytest.mark.parametrize("framework", ["xgboost", "lightgbm", "sklearn"])
@pytest.mark.parametrize("not_a_trial", [None, {"max_depth": 3}])
def test_an_adapter_given_anything_but_a_trial_says_so_in_one_line(framework, not_a_trial):
    with pytest.raises(TrialUsageError, match="needs the frugalml Trial your training function receives") as error:
        _adapters()[framework](not_a_trial)
    assert "\n" not in str(error.value) and type(not_a_trial).__name__ in str(error.value)


def test_bad_settings_and_names_are_one_line_errors():
    import xgboost as xgb
    from sklearn.linear_model import Ridge

    from frugalml.integrations.sklearn import fit
    from frugalml.integrations.xgboost import FrugalmlCallback

    trial = Trial({}, eval_every=2)
    with pytest.raises(ConfigError, match=r"The 'rounds' parameter of FrugalmlCallback must be an int in the range "
                                          r"\[1, inf\). Got 0 instead."):
        FrugalmlCallback(trial, rounds=0)
    X, y, X_val, y_val = trainers.diabetes()
    dtrain, dval = xgb.DMatrix(X, y), xgb.DMatrix(X_val, y_val)
    with pytest.raises(TrialUsageError, match=r"data_name='test'\) names no evals set; the sets are \['train', "
                                              r"'val'\]"):
        xgb.train({}, dtrain, 10, evals=[(dtrain, "train"), (dval, "val")], verbose_eval=False,
                  callbacks=[FrugalmlCallback(trial, data_name="test")])
    with pytest.raises(TrialUsageError, match="needs an estimator with warm_start and n_estimators"):
        fit(trial, Ridge(), X, y, n_steps=3)
    with pytest.raises(TrialUsageError, match="needs both X_val and y_val, or neither. Got X_val only."):
        fit(trial, Ridge(), X, y, X_val=X_val)


def test_a_pickled_callback_outside_its_trial_says_how_to_fix_it():
    import xgboost as xgb

    from frugalml.integrations.xgboost import FrugalmlCallback

    copied = pickle.loads(pickle.dumps(FrugalmlCallback(Trial({}), rounds=3)))
    X, y, _, _ = trainers.diabetes()
    with pytest.raises(TrialUsageError, match="copied out of its trial's process"):
        xgb.train({}, xgb.DMatrix(X, y), 3, callbacks=[copied])


@pytest.mark.parametrize("module, extra", [("xgboost", "xgboost"), ("lightgbm", "lightgbm")])
def test_a_missing_or_old_framework_is_a_one_line_install_hint(monkeypatch, module, extra):
    adapter = f"frugalml.integrations.{module}"
    monkeypatch.delitem(sys.modules, adapter, raising=False)
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    with pytest.raises(ConfigError, match=rf"needs {module}; install it with: pip install 'frugalml\[{extra}\]'"):
        importlib.import_module(adapter)
    monkeypatch.setitem(sys.modules, module, type(sys)(module))
    sys.modules[module].__version__ = "1.7.6"
    with pytest.raises(ConfigError, match=rf"needs {module} >= \d\.0, but 1\.7\.6 is installed"):
        importlib.import_module(adapter)
