"""``retrain`` keeps the SLO: the re-tuned study holds its trials to the same serving budgets and
envelope, and the version it registers carries the same ``frugalml.slo`` tag as the champion."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from frugalml import Search, Study, Workload, tune
from frugalml.deploy import SLO_TAG, Slo
from frugalml.gate import GateSettings
from frugalml.retrain import retrain
from frugalml.tuner import load_result

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "diabetes.csv.gz"
BUDGET = {"max_predict_ms": 50.0, "max_model_mb": 5.0}
DEPLOY = {"calls": 20, "quantile": 0.5}


def test_the_retrained_version_carries_the_champions_slo(tmp_path):
    import mlflow

    from frugalml.registry import register

    frame = pd.read_csv(DATA)
    frame.to_csv(tmp_path / "base.csv", index=False)
    frame.iloc[::-1].to_csv(tmp_path / "new.csv", index=False)
    study = Study(name="base", workloads=[Workload(path=str(tmp_path / "base.csv"), algorithm="logistic_regression",
                                                   eval_every=10)],
                  search=Search(objectives=["accuracy"], space={"batch_size": [64], "learning_rate": [0.1]}),
                  budget=BUDGET, deploy=DEPLOY, directory=str(tmp_path / "base"))
    tune(study)
    champion = register(study.directory, name="kept", alias="champion")
    client = mlflow.MlflowClient(champion.tracking_uri, registry_uri=champion.tracking_uri)
    tag = client.get_model_version("kept", champion.version).tags[SLO_TAG]
    assert Slo.from_json(tag).limits == BUDGET and Slo.from_json(tag).deploy["calls"] == 20

    gate = GateSettings.from_config({"training_rounds": 0, "latency_rounds": 3, "latency_calls": 10, "resamples": 100})
    done = retrain(study.directory, tmp_path / "new.csv", model="kept", tracking_uri=champion.tracking_uri, gate=gate,
                   top=1)
    assert done.candidate.version != champion.version
    retrained = client.get_model_version("kept", done.candidate.version).tags
    assert retrained[SLO_TAG] == tag  # the same budgets and envelope, byte for byte
    (record,) = load_result(done.study_dir).records
    assert record.info["serving"]["predict_ms"] < BUDGET["max_predict_ms"]  # re-tuned under them, not only tagged
