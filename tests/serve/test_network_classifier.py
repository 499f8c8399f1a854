"""A PyTorch classifier registered by frugalml: ``mlflow.pyfunc`` and ``frugalml serve`` give the same answers.

The trial logs a network whose output is logits and whose MLflow signature is a float32 tensor.
Registered, its pyfunc answers labels (``params={"probabilities": True}``: class probabilities) on
the named input columns, ``/predict`` the same labels (``?probabilities=true``: the same
probabilities), and the server estimates accuracy from the calibrated confidence before any label.
A real tune, a real MLflow sqlite store, a real server process on 127.0.0.1.
"""

from __future__ import annotations

import numpy as np

import network_trainers
from frugalml import Search, Study, Workload, tune
from frugalml.registry import register
from serve_helpers import ServerProcess, scrape_until, value

CONFIG = "window_rows = 100\nmin_window_rows = 50\ninterval_s = 0.05\n"


def test_a_torch_classifier_answers_the_same_labels_and_probabilities_from_pyfunc_and_the_server(tmp_path):
    import mlflow.pyfunc

    directory = tmp_path / "study"
    tune(Study(name="net", workloads=[Workload(train=network_trainers.torch_classifier, eval_every=10, name="mlp")],
               search=Search(space={"hidden": [8]}), workers=1, directory=str(directory)))
    version = register(directory, alias="champion")
    X, y = network_trainers.diabetes()
    rows = X.iloc[600:700].reset_index(drop=True)

    mlflow.set_tracking_uri(version.tracking_uri)
    mlflow.set_registry_uri(version.tracking_uri)
    try:
        model = mlflow.pyfunc.load_model(version.model_uri)
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    assert model.metadata.get_input_schema().input_names() == list(X.columns)  # not a (-1, 8) tensor
    labels = model.predict(rows)
    proba = model.predict(rows, params={"probabilities": True})
    assert list(proba.columns) == ["0", "1"] and np.allclose(proba.sum(axis=1), 1.0)
    assert labels.tolist() == proba.to_numpy().argmax(axis=1).tolist() and len(set(labels.tolist())) == 2
    assert np.mean(labels == y[600:700]) > 0.65  # it learned something

    (tmp_path / "monitoring.toml").write_text(CONFIG)
    server = ServerProcess(version.model_uri, "--tracking-uri", version.tracking_uri, "--config",
                           str(tmp_path / "monitoring.toml"), log=tmp_path / "server.log").wait_ready()
    try:
        answer = server.client.post("/predict", json={"rows": rows.to_dict("records")})
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == labels.tolist()  # the registered model is the served model
        with_proba = server.client.post("/predict?probabilities=true", json={"rows": rows.to_dict("records")})
        assert with_proba.status_code == 200, with_proba.text
        assert with_proba.json()["classes"] == [0, 1] and with_proba.json()["predictions"] == labels.tolist()
        assert np.allclose(with_proba.json()["probabilities"], proba.to_numpy(), atol=1e-6)
        bad = server.client.post("/predict?probabilities=maybe", json={"rows": rows.head(1).to_dict("records")})
        assert bad.status_code == 422 and bad.json()["kind"] == "bad_request"

        samples = scrape_until(server.client, lambda s: value(s, "frugalml_quality", metric="estimated_accuracy"))
        assert 0.5 < value(samples, "frugalml_quality", metric="estimated_accuracy") <= 1.0
    finally:
        server.stop()


def test_a_scikit_learn_classifier_gives_probabilities_too(server):
    row = {"instances": [[1, 100, 70, 20, 80, 30, 0.5, 40]]}
    answer = server.client.post("/predict?probabilities=true", json=row)  # the session's logistic regression
    assert answer.status_code == 200, answer.text
    assert answer.json()["classes"] == ["tested_negative", "tested_positive"]
    assert len(answer.json()["probabilities"][0]) == 2
    assert answer.json()["predictions"][0] == answer.json()["classes"][int(np.argmax(answer.json()["probabilities"][0]))]
