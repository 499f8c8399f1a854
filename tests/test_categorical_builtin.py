"""A built-in workload on a table with a text column, end to end (issue 25): ``frugalml tune`` with
worker processes, ``frugalml register`` into the study's MLflow sqlite store, ``frugalml serve`` taking
the raw text. The table is diabetes with ``mass`` binned into WHO BMI classes (``bmi_class``:
underweight / normal / overweight / obese), written as Parquet with a pandas ``category`` column."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from frugalml.exceptions import DataError
from frugalml.workloads import prepare_dataset, resolve_dataset
from helpers import ServerProcess, cli, write_study

MODEL = "bmi-logistic"
CATEGORIES = ["normal", "obese", "overweight", "underweight"]


def bmi_table() -> pd.DataFrame:
    """diabetes with ``mass`` replaced by its WHO BMI class, in the same column position."""
    frame = pd.read_csv(Path(os.environ["FRUGALML_DATA_DIR"]) / "diabetes.csv.gz")
    classes = pd.cut(frame["mass"], [-np.inf, 18.5, 25, 30, np.inf], right=False,
                     labels=["underweight", "normal", "overweight", "obese"])
    frame.insert(frame.columns.get_loc("mass"), "bmi_class", classes)
    return frame.drop(columns="mass")


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory):
    """The study tuned and its best configuration registered, both by the CLI; (tracking URI, table)."""
    folder = tmp_path_factory.mktemp("categorical-builtin")
    table = bmi_table()
    assert isinstance(table["bmi_class"].dtype, pd.CategoricalDtype)
    table.to_parquet(folder / "diabetes_bmi.parquet", index=False)
    study = write_study(folder / "study.toml", f"""
[study]
name = "bmi"
directory = "{folder / 'study'}"
workers = 2
[[workloads]]
name = "logistic"
path = "{folder / 'diabetes_bmi.parquet'}"
algorithm = "logistic_regression"
eval_every = 10
[search]
space = {{ batch_size = [16, 64], learning_rate = [0.01] }}
""")
    tuned = cli("tune", str(study))
    assert tuned.returncode == 0, tuned.stdout + tuned.stderr
    registered = cli("register", str(folder / "study"), "--alias", "champion")
    assert registered.returncode == 0, registered.stdout + registered.stderr
    assert f"registered {MODEL} version 1" in registered.stdout
    from frugalml.tracking import default_uri

    return default_uri(folder / "study"), table


def test_the_registered_model_takes_the_raw_text_column(registered):
    import mlflow
    from mlflow.models import get_model_info

    uri, table = registered
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    info = get_model_info(f"models:/{MODEL}@champion")
    inputs = {c["name"]: c["type"] for c in info.signature.inputs.to_dict()}
    assert list(inputs) == [c for c in table.columns if c != "target"]
    assert inputs["bmi_class"] == "string" and inputs["plas"] == "double"
    version = mlflow.MlflowClient().get_model_version_by_alias(MODEL, "champion")
    schema = {f["name"]: f["dtype"] for f in json.loads(version.tags["frugalml.schema"])}
    assert schema["bmi_class"] == "str"

    rows = table.drop(columns="target").tail(50)
    rows = rows.astype({c: str if c == "bmi_class" else float for c in rows.columns})  # the signature's types
    predicted = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion").predict(rows)
    assert set(predicted) <= {"tested_negative", "tested_positive"}
    accuracy = float(np.mean(np.asarray(predicted) == table["target"].tail(50).to_numpy()))
    assert accuracy > 0.6  # a real model, on rows it may have seen; the study's own accuracy is held out


def test_serve_answers_raw_text_and_an_unseen_category(registered, tmp_path):
    import mlflow.sklearn

    uri, table = registered
    model = mlflow.sklearn.load_model(f"models:/{MODEL}@champion")  # the encoder is its first step
    assert model.steps[0][0] == "encode"
    server = ServerProcess(f"models:/{MODEL}@champion", "--tracking-uri", uri, log=tmp_path / "server.log").wait_ready()
    try:
        health = server.client.get("/health").json()
        assert "bmi_class" in health["model"]["features"]
        metadata = server.client.get(f"/v2/models/{MODEL}").json()
        assert {i["name"]: i["datatype"] for i in metadata["inputs"]}["bmi_class"] == "BYTES"

        rows = table.drop(columns="target").head(20).astype({"bmi_class": str})
        records = [{k: (v if k == "bmi_class" else float(v)) for k, v in row.items()}
                   for row in rows.to_dict("records")]
        response = server.client.post("/predict", json={"rows": records})
        assert response.status_code == 200, response.text
        expected = model.predict(rows.to_numpy(dtype=object)).tolist()
        assert response.json()["predictions"] == expected

        unseen = {**records[0], "bmi_class": "morbidly obese"}  # never seen in training: all one-hot columns 0
        response = server.client.post("/predict", json={"rows": [unseen]})
        assert response.status_code == 200, response.text
        assert response.json()["predictions"][0] in ("tested_negative", "tested_positive")
        number = server.client.post("/predict", json={"rows": [{**records[0], "bmi_class": 2.5}]})
        assert number.status_code == 422 and number.json()["kind"] == "wrong_type"
    finally:
        server.stop()


def test_an_id_like_text_column_is_a_one_line_error(tmp_path):
    table = bmi_table()
    table.insert(0, "patient", [f"p{i:04d}" for i in range(len(table))])  # one distinct value per row
    table.to_csv(tmp_path / "with_ids.csv", index=False)
    with pytest.raises(DataError, match="text column 'patient' has 768 distinct values") as error:
        prepare_dataset(resolve_dataset(path=tmp_path / "with_ids.csv"), cache_dir=tmp_path)
    assert "\n" not in str(error.value)

    study = write_study(tmp_path / "ids.toml", f"""
[study]
name = "ids"
directory = "{tmp_path / 'out'}"
[[workloads]]
path = "{tmp_path / 'with_ids.csv'}"
algorithm = "svm"
[search]
space = {{ batch_size = [16], learning_rate = [0.01] }}
""")
    result = cli("tune", str(study))
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("frugalml: error:") and "'patient'" in lines[0]


def test_prepared_split_keeps_the_raw_text_and_encodes_a_test_only_category_as_zero(tmp_path):
    from sklearn.model_selection import train_test_split

    table = bmi_table().astype({"bmi_class": str})
    _, test_rows = train_test_split(np.arange(len(table)), test_size=0.3, random_state=0, shuffle=True)
    table.loc[test_rows[:5], "bmi_class"] = "unrecorded"  # a category of the test split only (the split's seed)
    table.to_csv(tmp_path / "bmi.csv", index=False)
    data = prepare_dataset(resolve_dataset(path=tmp_path / "bmi.csv"), cache_dir=tmp_path)
    meta = data.meta()
    assert meta["feature_names"] == [c for c in table.columns if c != "target"]
    assert meta["categories"] == {"bmi_class": CATEGORIES} and data.n_features == 7 + 4

    raw_train, raw_test = data.raw("train"), data.raw("test")
    assert raw_train.dtype == object and set(raw_train[:, 5]) == set(CATEGORIES)
    assert sorted(np.concatenate([raw_train[:, 5], raw_test[:, 5]])) == sorted(table["bmi_class"])
    plas = np.concatenate([raw_train[:, 1], raw_test[:, 1]]).astype(float)
    np.testing.assert_allclose(np.sort(plas), np.sort(table["plas"].to_numpy(dtype=float)))
    encoded = data.encoder().transform(raw_test)[:, 7:].astype(float)  # the one-hot block, before scaling
    known = raw_test[:, 5] != "unrecorded"
    assert (~known).sum() == 5 and (encoded[known].sum(axis=1) == 1).all() and (encoded[~known] == 0).all()
    X_test = data.arrays()[2]
    scale, mean = np.asarray(meta["scaler_scale"]), np.asarray(meta["scaler_mean"])
    np.testing.assert_allclose(X_test[:, 7:] * scale[7:] + mean[7:], encoded, atol=1e-9)
