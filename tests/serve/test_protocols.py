"""Clients written for other servers switch over: MLflow's scoring protocol on /invocations and
the Open Inference Protocol v2 (KServe) get the same predictions as /predict."""

from __future__ import annotations

import numpy as np
import pytest

from serve_helpers import scrape, value


@pytest.fixture
def rows(diabetes):
    _, split = diabetes
    return split.X_test[:25]


def _predict(server, rows) -> list:
    response = server.client.post("/predict", json={"instances": rows.tolist()})
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def test_an_mlflow_scoring_client_gets_the_same_predictions(server, rows):
    expected = _predict(server, rows)
    names = server.client.get("/health").json()["model"]["features"]
    bodies = {
        "dataframe_split": {"dataframe_split": {"columns": names, "data": rows.tolist()}},
        "dataframe_split, columns reordered": {"dataframe_split": {"columns": names[::-1],
                                                                   "data": rows[:, ::-1].tolist()}},
        "dataframe_records": {"dataframe_records": [dict(zip(names, r)) for r in rows.tolist()]},
        "instances": {"instances": rows.tolist()},
        "inputs (lists)": {"inputs": rows.tolist()},
        "inputs (columns)": {"inputs": {n: rows[:, j].tolist() for j, n in enumerate(names)}},
    }
    for case, body in bodies.items():
        response = server.client.post("/invocations", json=body)
        assert response.status_code == 200, (case, response.text)
        assert response.json() == {"predictions": expected}, case
    bad = server.client.post("/invocations", json={"dataframe_split": {"columns": ["preg"], "data": [[1, 2]]}})
    assert bad.status_code == 422 and "\n" not in bad.json()["error"]
    assert server.client.post("/invocations", json={"data": []}).status_code == 422


def test_a_v2_inference_client_gets_the_same_predictions(server, rows):
    expected = _predict(server, rows)
    assert server.client.get("/v2/health/ready").json()["ready"] is True
    health = server.client.get("/health").json()["model"]
    name = health["name"] or "model"
    metadata = server.client.get(f"/v2/models/{name}").json()
    assert metadata["inputs"][0]["shape"] == [-1, len(health["features"])]
    tensor = {"inputs": [{"name": "input-0", "shape": list(rows.shape), "datatype": "FP64",
                          "data": rows.ravel().tolist()}]}
    columns = {"inputs": [{"name": f, "shape": [len(rows)], "datatype": "FP64", "data": rows[:, j].tolist()}
                          for j, f in enumerate(health["features"])]}
    before = value(scrape(server.client), "frugalml_requests_total", endpoint="/v2/models/{name}/infer", code="200")
    for body in (tensor, columns):
        response = server.client.post(f"/v2/models/{name}/infer", json=body)
        assert response.status_code == 200, response.text
        (output,) = response.json()["outputs"]
        assert output["data"] == expected and output["shape"] == [len(rows)]
        assert len(response.json()["parameters"]["prediction_ids"]) == len(rows)
    after = value(scrape(server.client), "frugalml_requests_total", endpoint="/v2/models/{name}/infer", code="200")
    assert after == before + 2  # one bounded label, whatever the model name in the path
    assert server.client.post("/v2/models/other/infer", json=tensor).status_code == 404
    wrong = {"inputs": [{"name": "input-0", "shape": [len(rows), 3], "datatype": "FP64",
                         "data": np.zeros(len(rows) * 3).tolist()}]}
    assert server.client.post(f"/v2/models/{name}/infer", json=wrong).json()["kind"] == "wrong_count"
