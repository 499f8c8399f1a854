"""A trial's logged model in MLflow: exported in the driver as its trial run's ``model``
artifact, loadable with ``mlflow.pyfunc.load_model("runs:/<run id>/model")``, and the
version ``frugalml register`` makes is that model, tagged with the run it came from.

A real Lightning trial in a worker process (one epoch of 6 batches on 3,000 mnist rows)
and a real MLflow sqlite store.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

import torch_trainers
from frugalml import ResultStore, Search, Study, TrialStatus, Workload, tune
from frugalml.flavors import load_saved
from frugalml.lineage import model_lineage
from frugalml.records import TrialRecord
from frugalml.registry import register
from frugalml.tracking import MlflowTracker, default_uri


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _labels(predictions) -> list[int]:
    """Class indices from a network's scores (rows x classes) or from labels already picked."""
    values = np.asarray(predictions)
    return [int(v) for v in (values.argmax(1) if values.ndim == 2 else values)]


def test_a_lightning_trials_model_loads_from_its_mlflow_run_and_is_the_registered_version(tmp_path):
    import mlflow.pyfunc

    directory = tmp_path / "study"
    study = Study(name="lit", workers=1, directory=str(directory),
                  workloads=[Workload(train=torch_trainers.lightning_mlp, train_kwargs={"epochs": 1, "batch_size": 500},
                                      eval_every=3, name="fit")],
                  search=Search(space={"hidden": [32], "lr": [0.01]}))
    (record,) = tune(study).records
    assert record.status is TrialStatus.COMPLETED, record.error
    uri = default_uri(directory)
    run_id = ResultStore(directory).mlflow_runs()[record.trial_id]
    run = MlflowClient(uri).get_run(run_id)
    assert "model_error" not in run.data.tags and run.info.status == "FINISHED"

    mlflow.set_tracking_uri(uri)  # where runs:/ and models:/ URIs resolve; reset below
    mlflow.set_registry_uri(uri)
    try:
        _check_models(mlflow, uri, directory, record, run_id)
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)


def _check_models(mlflow, uri, directory, record, run_id) -> None:
    import torch

    loaded = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    assert loaded.metadata.flavors.keys() >= {"pytorch", "python_function"}
    rows = torch_trainers.mnist()[2][:20]
    trained, _, _ = load_saved(record.info["model"]["path"])  # the trial's own copy
    with torch.no_grad():
        expected = trained(torch.from_numpy(rows)).argmax(1).tolist()
    assert _labels(loaded.predict(rows)) == expected and len(set(expected)) > 1  # it learned something

    version = register(directory, alias="champion")
    tags = MlflowClient(uri, registry_uri=uri).get_model_version(version.name, version.version).tags
    assert tags["frugalml.trial_run_id"] == run_id
    assert tags["frugalml.trial_model_uri"] == f"runs:/{run_id}/model"
    assert model_lineage(version.model_uri, uri)["trial"]["model_uri"] == f"runs:/{run_id}/model"
    registered = mlflow.pyfunc.load_model(version.model_uri)
    schema = registered.metadata.get_input_schema()  # named columns where registration made it a classifier
    inputs = pd.DataFrame(rows, columns=schema.input_names()) if schema.has_input_names() else rows
    assert _labels(registered.predict(inputs)) == expected
    assert not (Path(record.info["model"]["path"]).parent / "mlflow-model").exists()  # the run's, not exported again


def test_a_model_the_driver_cannot_export_is_left_out_of_its_run_with_the_reason(tmp_path):
    kept = tmp_path / "trial-00000" / "model"
    kept.mkdir(parents=True)
    (kept / "model.pkl").write_bytes(b"not a pickle")
    (kept / "frugalml_model.json").write_text(json.dumps({"flavor": "mlflow.sklearn", "class": "Broken"}))
    record = TrialRecord(trial_id="fit/a/r0", number=0, workload="fit", config_id="a", repeat=0, params={},
                         status=TrialStatus.COMPLETED, train_loss=(0.5,), windows=(), stop=None, error=None,
                         steps_done=1, cpu_s=0.1, wall_s=0.1, steps_saved=0, cpu_s_saved=0.0,
                         info={"model": {"path": str(kept), "flavor": "mlflow.sklearn"}})
    tracker = MlflowTracker("sqlite:///" + str(tmp_path / "mlflow.db"), "broken")
    run = tracker.client.get_run(tracker.log_trial(record))
    assert run.info.status == "FINISHED" and run.data.metrics["trial/steps_done"] == 1
    assert run.data.tags["model_error"].startswith("UnpicklingError") and "\n" not in run.data.tags["model_error"]
    assert tracker.client.list_artifacts(run.info.run_id) == []
