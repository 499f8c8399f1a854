"""``frugalml serve models:/NAME@ALIAS`` follows its alias: a real MLflow sqlite registry, a real server
process, and a client predicting throughout the swap."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from serve_helpers import PredictingClient, ServerProcess, scrape, value

from frugalml.cli import main
from frugalml.serve import ServerSettings

NAME = "tiny"


def _register(uri: str, experiment_id: str, model, X: pd.DataFrame) -> str:
    """Log ``model`` with plain MLflow, register it under NAME and point ``champion`` at it."""
    import mlflow
    import mlflow.sklearn

    from frugalml.serve._model import pip_requirements

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        with mlflow.start_run(experiment_id=experiment_id):
            info = mlflow.sklearn.log_model(model, name="model", input_example=X.head(2),  # cloudpickle: skops
                                            pip_requirements=pip_requirements(),  # would import torch (6 s)
                                            serialization_format="cloudpickle")
        version = str(mlflow.register_model(info.model_uri, NAME).version)
        mlflow.MlflowClient().set_registered_model_alias(NAME, "champion", version)
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    return version


def test_the_server_follows_its_alias_without_failing_a_request(tmp_path):
    import mlflow
    from sklearn.linear_model import LogisticRegression

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = mlflow.MlflowClient(tracking_uri=uri).create_experiment(
        "tiny", artifact_location=(tmp_path / "artifacts").as_uri())
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(200, 3)), columns=["a", "b", "c"])
    y = (X["a"] + X["b"] > 0).astype(int)
    assert _register(uri, experiment, LogisticRegression().fit(X, y), X) == "1"

    server = ServerProcess(f"models:/{NAME}@champion", "--tracking-uri", uri, "--poll-registry", "0.5",
                           log=tmp_path / "server.log").wait_ready()
    client = PredictingClient(server.url, [{"a": 0.5, "b": -0.1, "c": 2.0}])
    try:
        client.start()
        assert client.wait_for("1", timeout=10), client.answers[-5:]
        assert _register(uri, experiment, LogisticRegression(C=0.01).fit(X, 1 - y), X) == "2"
        assert client.wait_for("2", timeout=10), f"{client.answers[-5:]}\n{server.log()}"
        time.sleep(0.5)  # and some requests after the swap
        client.stopped.set()
        client.join(timeout=15)
        answers = client.answers
        assert [a for a in answers if a[0] != 200] == []  # not one request failed during the swap
        versions = [v for _, v in answers]
        swap = versions.index("2")
        assert set(versions[:swap]) == {"1"} and set(versions[swap:]) == {"2"}, "the version went back and forth"
        samples = scrape(server.client)
        assert value(samples, "frugalml_model_reloads_total", result="ok") == 1
        assert value(samples, "frugalml_model_reloads_total", result="error") == 0
        assert server.client.get("/health").json()["model"]["version"] == "2"

        mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri).delete_registered_model_alias(NAME, "champion")
        deadline = time.monotonic() + 10
        while value(scrape(server.client), "frugalml_model_reloads_total", result="error") < 2:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.2)
        answer = server.client.post("/predict", json={"rows": client.rows[:1]})
        assert answer.status_code == 200 and answer.json()["model_version"] == "2"  # the old model keeps serving
        assert server.log().count("cannot follow") == 1, server.log()  # the same error is logged once
    finally:
        client.stopped.set()
        server.stop()


@pytest.mark.parametrize("seconds", ["-1", "abc", "86401", "nan"])
def test_a_bad_poll_interval_is_one_line(seconds, capsys):
    assert main(["serve", "models:/tiny@champion", "--poll-registry", seconds]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "'poll_registry_s'" in error and "in the range [0, 86400]" in error


def test_the_poll_interval_applies_to_an_alias_uri_only(tmp_path, capsys):
    settings = ServerSettings()
    assert settings.poll_interval("models:/tiny@champion") == 30
    assert settings.poll_interval("models:/tiny/1") == settings.poll_interval(str(tmp_path)) == 0
    assert ServerSettings(poll_registry_s=0).poll_interval("models:/tiny@champion") == 0
    assert main(["serve", str(tmp_path / "missing"), "--poll-registry", "5"]) == 2
    assert "--poll-registry is ignored" in capsys.readouterr().err
