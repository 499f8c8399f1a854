"""Tables with a text (categorical) column end to end: a user's scikit-learn Pipeline (one-hot
encoder + random forest) on diabetes with ``age`` binned into labels, served with and without
``--reference``, and registered from a study by ``frugalml register`` (issue 25)."""

from __future__ import annotations

import time

import pytest

from frugalml import Search, Study, Workload, tune
from frugalml.registry import register
from frugalml.serve._model import pip_requirements  # pinned: MLflow would infer them in a subprocess (seconds)
from serve_helpers import ServerProcess, category_pipeline, pipeline_logged, scrape, table_with_categories, value

CONFIG = "window_rows = 150\nmin_window_rows = 50\ninterval_s = 0.05\n"


@pytest.fixture(scope="module")
def table():
    X, y = table_with_categories()
    return X.iloc[:600], y.iloc[:600], X.iloc[600:]  # 168 held-out rows


@pytest.fixture(scope="module")
def pipeline_dir(table, tmp_path_factory):
    """The Pipeline saved with plain MLflow (signature from an input example), and its training table."""
    import mlflow.sklearn

    X, y, _ = table
    folder = tmp_path_factory.mktemp("categorical")
    model = category_pipeline().fit(X, y)
    mlflow.sklearn.save_model(model, str(folder / "model"), input_example=X.head(3), pip_requirements=pip_requirements(),
                              serialization_format="cloudpickle")
    X.assign(target=y).to_csv(folder / "reference.csv", index=False)
    (folder / "monitoring.toml").write_text(CONFIG)
    return folder, model


def _check_predictions(server, model, rows) -> None:
    expected = model.predict(rows).tolist()
    records = rows.to_dict("records")
    response = server.client.post("/predict", json={"rows": records})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == expected
    split = {"dataframe_split": {"columns": list(rows.columns), "data": rows.to_numpy().tolist()}}
    assert server.client.post("/invocations", json=split).json() == {"predictions": expected}
    csv = server.client.post("/invocations", content=rows.to_csv(index=False), headers={"Content-Type": "text/csv"})
    assert csv.json() == {"predictions": expected}, csv.text
    columns = {"inputs": [{"name": c, "shape": [len(rows)], "datatype": "BYTES" if c == "age_group" else "FP64",
                           "data": rows[c].tolist()} for c in rows.columns]}
    infer = server.client.post("/v2/models/model/infer", json=columns)
    assert infer.status_code == 200, infer.text
    assert infer.json()["outputs"][0]["data"] == expected
    wrong = server.client.post("/predict", json={"rows": [{**records[0], "age_group": None}]})
    assert wrong.status_code == 422 and wrong.json()["kind"] == "wrong_type" and "age_group" in wrong.json()["error"]


def test_a_pipeline_with_a_text_column_is_served_without_reference(pipeline_dir, table, tmp_path):
    folder, model = pipeline_dir
    server = ServerProcess(str(folder / "model"), log=tmp_path / "server.log").wait_ready()
    try:
        _check_predictions(server, model, table[2].head(40))
        metadata = server.client.get("/v2/models/model").json()
        assert {i["name"]: i["datatype"] for i in metadata["inputs"]}["age_group"] == "BYTES"
    finally:
        server.stop()


def test_a_pipeline_with_a_text_column_is_monitored_with_reference(pipeline_dir, table, tmp_path):
    folder, model = pipeline_dir
    server = ServerProcess(str(folder / "model"), "--reference", str(folder / "reference.csv"), "--config",
                           str(folder / "monitoring.toml"), log=tmp_path / "server.log").wait_ready()
    try:
        assert server.client.get("/health").json()["monitoring"] is True
        held_out = table[2]
        shifted = held_out.head(150).assign(age_group="senior")  # the category mix moves
        shifted.loc[shifted.index[:15], "age_group"] = "centenarian"  # a category never seen in training
        before = value(scrape(server.client), "frugalml_drift_windows_total")
        response = server.client.post("/predict", json={"rows": shifted.to_dict("records")})  # one whole window
        assert response.json()["predictions"] == model.predict(shifted).tolist()
        deadline = time.monotonic() + 15
        while value(samples := scrape(server.client), "frugalml_drift_windows_total") < before + 1:
            assert time.monotonic() < deadline, "the monitor did not close the window"
            time.sleep(0.05)
        assert value(samples, "frugalml_feature_drifted", feature="age_group") == 1
        assert value(samples, "frugalml_feature_psi", feature="age_group") > 0.25
        unseen = value(samples, "frugalml_data_out_of_range_ratio", feature="age_group")
        assert unseen == pytest.approx(15 / 150)  # the unseen category, counted
        _check_predictions(server, model, held_out.head(40))
    finally:
        server.stop()


def test_a_pipeline_with_a_text_column_is_registered_and_served(tmp_path, table):
    directory = tmp_path / "study"
    study = Study(name="categorical", workloads=[Workload(train=pipeline_logged, eval_every=1, name="forest")],
                  search=Search(space={"n_estimators": [5, 20]}), workers=1, directory=str(directory))
    tune(study)
    version = register(directory, alias="champion")  # used to refuse: ['age_group'] cannot be fingerprinted
    server = ServerProcess("models:/categorical-forest@champion", "--tracking-uri", version.tracking_uri,
                           log=tmp_path / "server.log").wait_ready()
    try:
        health = server.client.get("/health").json()
        assert health["monitoring"] is True and "age_group" in health["model"]["features"]
        rows = table[2].head(30)
        response = server.client.post("/predict", json={"rows": rows.to_dict("records")})
        assert response.status_code == 200, response.text
        assert set(response.json()["predictions"]) <= {"tested_negative", "tested_positive"}
    finally:
        server.stop()
