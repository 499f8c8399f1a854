"""New SQLite MLflow stores are copies of a migrated, empty template in the cache."""

from __future__ import annotations

import sqlite3
from contextlib import closing

from mlflow.tracking import MlflowClient

from frugalml.tracking import MlflowTracker, seed_sqlite_store
from frugalml.tracking._template import template_path
from helpers import mlflow_store


def _rows(path, query):
    with closing(sqlite3.connect(path)) as connection:
        return connection.execute(query).fetchall()


def _schema(path):
    """Each table and index with its columns (not the SQL text: MLflow writes an enum's CHECK list
    from a set, in another order in each process)."""
    with closing(sqlite3.connect(path)) as connection:
        names = connection.execute("SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'").fetchall()
        return sorted((kind, name, connection.execute(f"PRAGMA {'table' if kind == 'table' else 'index'}_info"
                                                      f"('{name}')").fetchall()) for kind, name in names)


def test_a_store_from_the_template_has_mlflows_schema_and_takes_runs_artifacts_and_models(tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # MLflow's own default artifact root, ./mlruns, would be here
    made_by_mlflow = tmp_path / "mlflow-made.db"
    MlflowClient(tracking_uri=f"sqlite:///{made_by_mlflow}").search_experiments()
    uri = mlflow_store(tmp_path / "study")
    store = tmp_path / "study" / "mlflow.db"

    template = template_path()
    assert _rows(template, "SELECT * FROM experiments") == []  # nothing of any store in the template
    assert _schema(store) == _schema(made_by_mlflow)
    version = "SELECT version_num FROM alembic_version"
    assert _rows(store, version) == _rows(made_by_mlflow, version)  # fully migrated
    assert sorted(p.name for p in store.parent.iterdir()) == ["mlflow.db"]  # nothing half-written left behind

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    default = client.get_experiment("0")
    assert default.name == "Default" and default.artifact_location == str(store.parent / "mlruns" / "0")
    run = client.create_run("0")
    client.log_metric(run.info.run_id, "val_loss", 0.5)
    (tmp_path / "model.txt").write_text("weights")
    client.log_artifact(run.info.run_id, str(tmp_path / "model.txt"), "model")
    client.set_terminated(run.info.run_id)
    assert client.get_run(run.info.run_id).data.metrics == {"val_loss": 0.5}
    assert (store.parent / "mlruns" / "0" / run.info.run_id / "artifacts" / "model" / "model.txt").is_file()
    assert not (elsewhere / "mlruns").exists()

    client.create_registered_model("tiny")
    version = client.create_model_version("tiny", f"runs:/{run.info.run_id}/model", run.info.run_id)
    client.set_registered_model_alias("tiny", "champion", version.version)
    assert client.get_model_version_by_alias("tiny", "champion").run_id == run.info.run_id


def test_an_existing_store_and_other_uris_are_left_alone(tmp_path):
    existing = tmp_path / "mlflow.db"
    existing.write_bytes(b"not touched")
    seed_sqlite_store(f"sqlite:///{existing}")
    assert existing.read_bytes() == b"not touched"
    seed_sqlite_store(f"file://{tmp_path / 'mlruns'}")
    seed_sqlite_store("http://127.0.0.1:1")
    seed_sqlite_store("sqlite:///:memory:")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db"]


def test_without_a_template_mlflow_creates_the_store_itself(tmp_path, monkeypatch):
    not_a_folder = tmp_path / "cache"
    not_a_folder.write_text("a file where the cache should be")
    monkeypatch.setenv("FRUGALML_CACHE_DIR", str(not_a_folder))
    uri = f"sqlite:///{tmp_path / 'study' / 'mlflow.db'}"
    seed_sqlite_store(uri)
    assert not (tmp_path / "study" / "mlflow.db").exists()
    tracker = MlflowTracker(uri, "fallback")  # the tracker seeds too, fails the same way, and MLflow steps in
    tracker.close()
    assert MlflowClient(tracking_uri=uri).get_experiment_by_name("fallback") is not None
