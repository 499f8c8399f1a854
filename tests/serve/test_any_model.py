"""Bring your own model: a user's training function tuned, registered without refitting and
served; and a model trained outside frugalml (plain MLflow) served with ``--reference``.

Real data (../shared/data), a real MLflow sqlite store, real server processes on 127.0.0.1.
"""

from __future__ import annotations

import shutil
import time

import numpy as np
import pandas as pd
import pytest

import trainers
from frugalml import Search, Study, TrialStatus, Workload, tune
from frugalml.cli import main
from frugalml.registry import register
from frugalml.serve._model import pip_requirements  # pinned: MLflow would infer them in a subprocess (seconds)
from serve_helpers import ServerProcess, scrape, value

WINDOW = 190
CONFIG = f"window_rows = {WINDOW}\nmin_window_rows = 50\ninterval_s = 0.05\n"


def _drift_windows(server, X: np.ndarray) -> float:
    """Predict one window of ``X``; the count of drift-flagged windows once the monitor closed it."""
    before = value(scrape(server.client), "frugalml_drift_windows_total")
    response = server.client.post("/predict", json={"instances": X.tolist()})
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + 15
    while (samples := scrape(server.client)) and value(samples, "frugalml_drift_windows_total") < before + 1:
        assert time.monotonic() < deadline, "the monitor did not close the window"
        time.sleep(0.05)
    return value(samples, "frugalml_drift_flagged_windows_total")


def test_a_users_own_model_is_tuned_registered_without_refitting_and_served(tmp_path, monkeypatch):
    directory = tmp_path / "study"
    study = Study(name="own", workloads=[Workload(train=trainers.sgd_logged, eval_every=4, name="sgd")],
                  search=Search(space={"alpha": [0.0001, 0.01]}), workers=2, directory=str(directory))
    result = tune(study)
    assert {r.status for r in result.records} == {TrialStatus.COMPLETED}
    assert all(r.steps_planned == 2 * (768 // 64) == r.steps_done for r in result.records)  # from trial.plan
    assert all(r.info["model"]["flavor"] == "mlflow.sklearn" for r in result.records)
    best = result.best_feasible()
    version = register(directory, alias="champion")
    assert version.profile["single_row_p50_ms"] > 0 and version.profile["study_val_loss"] == pytest.approx(
        best.mean["val_loss"])
    server = ServerProcess("models:/own-sgd@champion", "--tracking-uri", version.tracking_uri,
                           log=tmp_path / "server.log").wait_ready()
    try:
        health = server.client.get("/health").json()
        assert health["model"]["task"] == "classification"
        assert health["model"]["features"][:2] == ["preg", "plas"]
        frame = pd.read_csv(trainers.os.path.join(trainers.os.environ["FRUGALML_DATA_DIR"], "diabetes.csv.gz"))
        rows = frame.drop(columns="target").head(20)
        answer = server.client.post("/predict", json={"instances": rows.to_numpy().tolist()})
        assert answer.status_code == 200, answer.text
        import cloudpickle

        trial = next(r for r in result.records if r.config_id == best.config_id)
        with open(f"{trial.info['model']['path']}/model.pkl", "rb") as file:
            trained = cloudpickle.load(file)
        assert answer.json()["predictions"] == trained.predict(rows).tolist()  # the trial's own model
    finally:
        server.stop()


@pytest.fixture(scope="module")
def outside_model(tmp_path_factory):
    """A gradient-boosting regressor on red_wine, logged and registered with plain MLflow."""
    import mlflow
    import mlflow.sklearn
    from sklearn.ensemble import HistGradientBoostingRegressor

    folder = tmp_path_factory.mktemp("outside")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    frame = pd.read_csv(trainers.os.path.join(trainers.os.environ["FRUGALML_DATA_DIR"], "red_wine.csv.gz"))
    frame = frame.sample(frac=1.0, random_state=0)  # the file is not in random order
    train, test = frame.iloc[:1200], frame.iloc[1200:]
    X, y = train.drop(columns="target"), train["target"].astype(float)
    model = HistGradientBoostingRegressor(max_iter=50, random_state=0).fit(X, y)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    # artifacts in the test's folder: MLflow's default root is ./mlruns, in whatever folder pytest runs from
    mlflow.set_experiment(experiment_id=mlflow.create_experiment(
        "outside", artifact_location=(folder / "artifacts").as_uri()))
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(model, name="model", input_example=X.head(2), serialization_format="cloudpickle",
                                        pip_requirements=pip_requirements())
    mlflow.register_model(info.model_uri, "wine")
    unnamed = HistGradientBoostingRegressor(max_iter=5, random_state=0).fit(X.to_numpy(), y)  # no column names
    with mlflow.start_run():  # and no input_example: no signature, so no schema to serve it by
        bare = mlflow.sklearn.log_model(unnamed, name="model", serialization_format="cloudpickle",
                                        pip_requirements=pip_requirements())
    mlflow.register_model(bare.model_uri, "wine-unsigned")
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
    reference = folder / "reference.parquet"
    train.assign(target=y).to_parquet(reference)
    return uri, reference, model, test.drop(columns="target")


def test_a_model_trained_outside_frugalml_is_served_with_a_reference_and_drift_fires(outside_model, tmp_path):
    """... by two workers, each with the fingerprint their parent made of the table: a worker started
    again after the table changed keeps the one the server started with."""
    uri, reference, model, held_out = outside_model
    (tmp_path / "monitoring.toml").write_text(CONFIG)
    table = tmp_path / "reference.parquet"
    shutil.copy(reference, table)
    server = ServerProcess("models:/wine/1", "--tracking-uri", uri, "--reference", str(table), "--workers", "2",
                           "--config", str(tmp_path / "monitoring.toml"), log=tmp_path / "server.log").wait_announced()
    try:
        started = server.health_by_worker()
        assert {h["model"]["task"] for h in started.values()} == {"regression"} and len(started) == 2
        assert len({h["model"]["training_sha256"] for h in started.values()}) == 1
        rows = held_out.head(20)
        answer = server.client.post("/predict", json={"instances": rows.to_numpy().tolist()})
        assert answer.json()["predictions"] == pytest.approx(model.predict(rows).tolist())
        flagged = _drift_windows(server, held_out.iloc[20:WINDOW].to_numpy())
        assert flagged == 0  # held-out rows: the training distribution
        shifted = held_out.iloc[WINDOW:2 * WINDOW].to_numpy().copy()
        shifted[:, 10] += 2.0  # alcohol up 2 percentage points
        assert _drift_windows(server, shifted) == 1

        pd.read_parquet(table).head(100).to_parquet(table)  # the table changes under the running server
        server.kill_a_worker()
        models = {worker: health["model"] for worker, health in started.items()}
        assert {worker: health["model"] for worker, health in server.health_by_worker().items()} == models
    finally:
        server.stop()


def test_without_a_reference_an_outside_model_is_served_by_its_signature_with_drift_off(outside_model, tmp_path):
    uri, _, model, held_out = outside_model
    server = ServerProcess("models:/wine/1", "--tracking-uri", uri, log=tmp_path / "server.log").wait_ready()
    try:
        health = server.client.get("/health").json()
        assert health["monitoring"] is False and health["drift"].startswith("off: the model has no reference data")
        assert health["model"]["features"] == list(held_out.columns)  # from the MLflow signature
        rows = held_out.head(5)
        answer = server.client.post("/predict", json={"rows": rows.to_dict(orient="records")})
        assert answer.json()["predictions"] == pytest.approx(model.predict(rows).tolist())
        assert server.client.post("/feedback", json={"prediction_id": "x-1", "label": 5}).status_code == 409
    finally:
        server.stop()


def test_serving_an_outside_model_without_schema_or_reference_is_a_one_line_error(outside_model, tmp_path, capsys):
    uri, reference, _, _ = outside_model
    assert main(["serve", "models:/wine-unsigned/1", "--tracking-uri", uri]) == 2
    error = capsys.readouterr().err.strip()
    assert "--reference" in error and len(error.splitlines()) == 1
    bad = tmp_path / "bad.parquet"
    pd.DataFrame({"fixed acidity": [1.0]}).to_parquet(bad)
    assert main(["serve", "models:/wine/1", "--tracking-uri", uri, "--reference", str(bad)]) == 2
    error = capsys.readouterr().err.strip()
    assert "has columns" in error and "the model takes" in error and len(error.splitlines()) == 1


def test_a_model_fitted_on_arrays_takes_its_input_names_from_the_signature(outside_model, tmp_path):
    """scikit-learn keeps no column names for a model fitted on a NumPy array; its MLflow signature has them."""
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.linear_model import Ridge

    from frugalml.serve import load_model

    _, _, _, held_out = outside_model
    X = held_out.head(100)
    model = Ridge().fit(X.to_numpy(), np.arange(len(X), dtype=float))
    assert not hasattr(model, "feature_names_in_")
    mlflow.sklearn.save_model(model, str(tmp_path / "model"), serialization_format="cloudpickle",
                              pip_requirements=pip_requirements(),
                              signature=infer_signature(X, model.predict(X.to_numpy())))
    served = load_model(str(tmp_path / "model"))
    assert served.reference.feature_names == tuple(held_out.columns)
    assert served.model.predict(X.to_numpy()) == pytest.approx(model.predict(X.to_numpy()))
