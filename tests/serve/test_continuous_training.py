"""Continuous training end to end, all real processes: a served champion, drifted traffic, the drift
alert's webhook reaching ``frugalml retrain --listen``, a warm re-tune, the gate, promotion, and the
running server switching version while a client keeps predicting; then a retrain on data that makes
the model worse fails the gate and the champion keeps serving."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from serve_helpers import PredictingClient, ServerProcess, free_port

from frugalml import Search, Study, Workload, tune

MODEL = "ct"
MONITORING = """
window_rows = 100
interval_s = 0.05
webhooks = ["{url}"]
[[alerts]]
name = "input drift"
metric = "drift.detected"
op = ">="
threshold = 1
window = 2
"""
# What this test gates on is quality. Step time is ~1 ms here, and with 3 rounds on a loaded 2-core machine the
# same configuration on both sides read 1.39x (CI 1.13-1.70) in 2 of ~8 suite runs: a user gating on a shared
# runner sets such an absolute tolerance. The gate's statistics are tested in tests/gate.
GATE = "[gate]\ntraining_rounds = 3\nlatency_rounds = 6\n[gate.mean_step_ms]\nmax_absolute_regression = 1.0\n"


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory):
    """A study on real diabetes data, its best registered as ``ct@champion``; the drifted and the bad data."""
    from frugalml.registry import register

    folder = tmp_path_factory.mktemp("ct")
    frame = pd.read_csv(Path(__file__).resolve().parents[2].parent / "shared" / "data" / "diabetes.csv.gz")
    frame.to_csv(folder / "base.csv", index=False)
    shifted = frame.assign(plas=frame["plas"] + 25.0)  # glucose up by ~0.8 training std
    shifted.to_csv(folder / "shifted.csv", index=False)
    bad = frame.assign(target=frame["target"].sample(frac=1.0, random_state=1).to_numpy())  # labels lost
    bad.to_csv(folder / "bad.csv", index=False)
    study = Study(name="ct", workloads=[Workload(path=str(folder / "base.csv"), target="target",
                                                 algorithm="logistic_regression", eval_every=10)],
                  search=Search(objectives=["accuracy"], space={"batch_size": [16, 64], "learning_rate": [0.01, 0.1]}),
                  workers=2, directory=str(folder / "ct"))
    tune(study)
    version = register(study.directory, name=MODEL, alias="champion")
    (folder / "gate.toml").write_text(GATE)
    return folder, Path(study.directory), version.tracking_uri, shifted.drop(columns="target")


def _retrain(folder: Path, study: Path, uri: str, data: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "frugalml.cli", "retrain", str(study), "--data", str(folder / data), "--model",
            MODEL, "--tracking-uri", uri, "--gate", str(folder / "gate.toml"), "--top", "2", *extra]


def _wait_for_line(log: Path, text: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in (log.read_text() if log.exists() else ""):
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)


def test_drift_retrains_gates_promotes_and_the_server_switches_without_a_failed_request(champion, capsys):
    import mlflow
    from mlflow import MlflowClient

    from frugalml.cli import main

    folder, study, uri, shifted = champion
    port = free_port()
    (folder / "monitoring.toml").write_text(MONITORING.format(url=f"http://127.0.0.1:{port}/"))
    log = folder / "retrain.log"
    with log.open("w") as out:
        listener = subprocess.Popen(_retrain(folder, study, uri, "shifted.csv", "--listen", f"127.0.0.1:{port}",
                                             "--on", "input drift", "--once", "--json", str(folder / "gate.json")),
                                    stdout=out, stderr=subprocess.STDOUT)
    server = client = None
    try:  # the server starts beside the listener: no traffic, so no alert, until both are up
        server = ServerProcess(f"models:/{MODEL}@champion", "--tracking-uri", uri, "--poll-registry", "0.5",
                               "--config", str(folder / "monitoring.toml"), log=folder / "server.log")
        _wait_for_line(log, "waiting for alerts", listener)
        server.wait_ready()
        client = PredictingClient(server.url, shifted.sample(300, random_state=0).to_dict("records"), limit=20_000)
        client.start()
        # full rate (as PredictingClient) until the drift alert fires, and again once the new version is registered,
        # so the promotion and the server's switch happen under it; a trickle (10 a second) while the listener
        # re-tunes and gates, when the server has nothing to do but serve version 1 as before
        _wait_for_line(server.log_path, "alert 'input drift' firing", server.process, timeout=60)
        client.pause = 0.1
        _wait_for_line(log, f"registered {MODEL} version 2", listener, timeout=240)
        client.pause = 0.005
        assert listener.wait(timeout=240) == 0, log.read_text()
        assert client.wait_for("2", timeout=20), f"{client.answers[-5:]}\n{server.log()}"
        time.sleep(0.5)
        client.stopped.set()
        client.join(timeout=15)
        assert [a for a in client.answers if a[0] != 200] == []  # not one request failed
        versions = [v for _, v in client.answers]
        swap = versions.index("2")
        assert set(versions[:swap]) == {"1"} and set(versions[swap:]) == {"2"}
        assert json.loads((folder / "gate.json").read_text())["verdict"] == "pass"

        registry = MlflowClient(tracking_uri=uri, registry_uri=uri)
        promoted = registry.get_model_version(MODEL, "2").tags
        assert promoted["frugalml.gate"] == "pass" and promoted["frugalml.trigger"] == "alert: input drift"
        assert promoted["frugalml.retrained_from"] == "1"

        # the manual retrain in this process (the CLI's main), while the server process keeps serving
        capsys.readouterr()
        previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
        environ = {key: os.environ.get(key) for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
        try:
            code = main([*_retrain(folder, study, uri, "bad.csv")[3:], "--top", "1"])
        finally:  # loading the champion points MLflow (and its environment variables) at this registry: back
            mlflow.set_tracking_uri(previous[0])
            mlflow.set_registry_uri(previous[1])
            for key, before in environ.items():
                if before is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = before
        out, err = capsys.readouterr()
        assert code == 1, out + err
        assert "not promoted: @champion stays on version 2" in out
        assert str(registry.get_model_version_by_alias(MODEL, "champion").version) == "2"
        failed = registry.get_model_version(MODEL, "3").tags
        assert failed["frugalml.gate"] == "regression" and "accuracy" in failed["frugalml.gate.regressions"]
        time.sleep(1.5)  # three poll intervals: the server must still be on the champion
        answer = server.client.post("/predict", json={"rows": client.rows[:1]})
        assert answer.status_code == 200 and answer.json()["model_version"] == "2"

        runs = registry.search_runs([registry.get_experiment_by_name(f"{MODEL}-retrain").experiment_id])
        assert sorted(r.data.tags["frugalml.trigger"] for r in runs) == ["alert: input drift", "manual"]
        assert {r.data.tags["frugalml.gate"] for r in runs} == {"pass", "regression"}
        assert all(r.data.tags.get("frugalml.data.sha256") for r in runs)
        history = json.loads(registry.get_registered_model(MODEL).tags["frugalml.alias_history"])
        assert [(h["version"], h["reason"]) for h in history][-1] == ("2", "retrain (alert: input drift): gate passed")
    finally:
        if client is not None:
            client.stopped.set()
        if server is not None:
            server.stop()
        if listener.poll() is None:
            listener.kill()


def test_data_with_another_schema_is_refused_before_anything_trains(champion, capsys):
    from frugalml.cli import main

    folder, study, uri, _ = champion
    pd.read_csv(folder / "base.csv").drop(columns="mass").to_csv(folder / "narrow.csv", index=False)
    before = sorted(p.name for p in study.parent.iterdir())
    assert main(["retrain", str(study), "--data", str(folder / "narrow.csv"), "--model", MODEL,
                 "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert "but the champion takes" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in study.parent.iterdir()) == before  # no study started
    assert main(["retrain", str(study), "--data", str(folder / "base.csv"), "--model", "nobody",
                 "--tracking-uri", uri]) == 2
    assert "cannot resolve model" in capsys.readouterr().err
    assert main(["retrain", str(study), "--data", str(folder / "base.csv"), "--model", MODEL, "--once"]) == 2
    assert "go with --listen" in capsys.readouterr().err
