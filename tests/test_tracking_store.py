"""New SQLite MLflow stores are copied from a migrated, empty template in the cache."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import mlflow
from mlflow.tracking import MlflowClient

from frugalml.files import cache_root
from frugalml.tracking import seed_sqlite_store


def _rows(path, query):
    with closing(sqlite3.connect(path)) as connection:
        return connection.execute(query).fetchall()


def test_a_seeded_store_is_what_mlflow_would_have_created_and_takes_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    made_by_mlflow = tmp_path / "mlflow-made.db"
    MlflowClient(tracking_uri=f"sqlite:///{made_by_mlflow}").search_experiments()
    seeded = tmp_path / "study" / "mlflow.db"
    seed_sqlite_store(f"sqlite:///{seeded}")
    template = cache_root() / "mlflow" / f"empty-store-{mlflow.__version__}.db"
    assert template.is_file() and seeded.is_file()
    query = "SELECT version_num FROM alembic_version"
    assert _rows(seeded, query) == _rows(made_by_mlflow, query)  # fully migrated
    experiments = "SELECT experiment_id, name, artifact_location FROM experiments"
    assert _rows(seeded, experiments) == _rows(made_by_mlflow, experiments)  # Default points at ./mlruns/0 here
    client = MlflowClient(tracking_uri=f"sqlite:///{seeded}")
    run = client.create_run(client.create_experiment("mine"))
    client.log_metric(run.info.run_id, "val_loss", 0.5)
    assert client.get_run(run.info.run_id).data.metrics == {"val_loss": 0.5}
    assert not list(seeded.parent.glob(".*.tmp"))  # nothing half-written left behind


def test_an_existing_store_and_other_uris_are_left_alone(tmp_path):
    existing = tmp_path / "mlflow.db"
    existing.write_bytes(b"not touched")
    seed_sqlite_store(f"sqlite:///{existing}")
    assert existing.read_bytes() == b"not touched"
    seed_sqlite_store(f"file://{tmp_path / 'mlruns'}")
    seed_sqlite_store("http://127.0.0.1:1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db"]
