"""The serving budgets a study was tuned under travel with its registered model as an SLO,
and ``frugalml check`` fails a candidate that breaks it outright, whatever the champion."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET

from frugalml import Search, Study, TrialStatus, Workload, tune
from frugalml.deploy import SLO_TAG, Slo

SLOW_S = 0.02  # the slower candidate's CPU per predict call: past the 15 ms limit whatever the load


def _study(directory, name, predict_s, budget):
    study = Study(name=name, workloads=[Workload(train="gate_trainers:served_sgd", eval_every=4, name="w")],
                  search=Search(objectives=["accuracy"], space={"predict_s": [predict_s]}), budget=budget,
                  deploy={"calls": 50, "quantile": 0.5} if budget else {}, directory=str(directory / name))
    return study, tune(study)


def _check(candidate, *args):
    return subprocess.run([sys.executable, "-m", "frugalml.cli", "check", str(candidate), *args],
                          capture_output=True, text=True, timeout=300)


def test_the_registered_slo_fails_a_slower_candidate_and_passes_the_tuned_one(tmp_path, capsys):
    import mlflow

    from frugalml.cli import main
    from frugalml.registry import register

    fast, result = _study(tmp_path, "fast", 0.0, {"max_predict_ms": 15.0})
    (record,) = result.records
    assert record.status is TrialStatus.COMPLETED and record.info["serving"]["predict_ms"] < 15.0
    version = register(fast.directory, name="served", alias="champion")
    client = mlflow.MlflowClient(version.tracking_uri, registry_uri=version.tracking_uri)
    tags = client.get_model_version("served", version.version).tags
    slo = Slo.from_json(tags[SLO_TAG])
    assert slo.limits == {"max_predict_ms": 15.0} and slo.quantile == 0.5 and slo.deploy["calls"] == 50
    assert 0 < float(tags["frugalml.profile.serve_predict_ms"]) < 8.0

    slow, _ = _study(tmp_path, "slow", SLOW_S, {})  # tuned with no serving budget: 20 ms a prediction
    out = tmp_path / "r"
    gate = tmp_path / "gate.toml"  # the SLO is judged whatever the gate; the relative comparison, briefly
    gate.write_text("[gate]\nlatency_rounds = 3\nlatency_calls = 20\ntraining_rounds = 0\n")
    baseline = ["--baseline", "models:/served@champion", "--tracking-uri", version.tracking_uri, "--gate", str(gate)]
    done = _check(slow.directory, *baseline, "--json", str(out / "r.json"), "--junit", str(out / "r.xml"))
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads((out / "r.json").read_text())
    assert not report["verdict"] == "pass"  # slower than the champion too: "regression" wins the one-word verdict
    (latency,) = [c for c in report["slo"] if c["budget"] == "max_predict_ms"]
    assert latency["broken"] and latency["value"] > SLOW_S * 1e3 * 0.9 and latency["limit"] == 15.0
    cases = ET.parse(out / "r.xml").getroot().iter("testcase")
    failed = [case.get("name") for case in cases if case.find("failure") is not None]
    assert "max_predict_ms" in failed
    assert "SLO broken" in done.stdout

    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    try:
        main(["check", str(fast.directory), *baseline, "--json", str(out / "f.json")])  # the CLI above, in-process
    finally:  # it points MLflow (and MLFLOW_TRACKING_URI) at this registry: back, as register() leaves them
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])
    report = json.loads((out / "f.json").read_text())
    assert [c["broken"] for c in report["slo"]] == [False], capsys.readouterr().out
