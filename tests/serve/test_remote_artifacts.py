"""A model in a remote artifact store: a real ``mlflow server`` on loopback, proxying its artifacts
(``mlflow-artifacts:/``). frugalml copies such a model into a folder of its own and removes it when
the version is replaced and when the server stops; MLflow's own download makes a new temporary
folder at every load and never removes it.

Real data (../shared/data), a real MLflow tracking server process, a real frugalml server process.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import httpx
import pandas as pd
import pytest

from frugalml.serve._model import pip_requirements  # pinned: MLflow would infer them in a subprocess (seconds)
from helpers import free_port
from serve_helpers import ServerProcess


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    """``mlflow server`` with proxied artifacts and model ``wine`` at versions 1 (@champion) and 2."""
    import mlflow
    from sklearn.linear_model import Ridge

    folder = tmp_path_factory.mktemp("tracking-server")
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}", "--artifacts-destination",
         str(folder / "artifacts")],
        stdout=(folder / "server.log").open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})  # its job runner: ~25 CPU-s, unused here
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (folder / "server.log").read_text()
            try:
                if httpx.get(f"{uri}/health", timeout=2, trust_env=False).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (folder / "server.log").read_text()
            time.sleep(0.3)
        frame = pd.read_csv(Path(os.environ["FRUGALML_DATA_DIR"]) / "red_wine.csv.gz")
        X, y = frame.drop(columns="target"), frame["target"].astype(float)
        client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        experiment = client.create_experiment("remote")
        for alpha in (1.0, 100.0):
            run = client.create_run(experiment)
            mlflow.set_tracking_uri(uri)
            mlflow.set_registry_uri(uri)
            with mlflow.start_run(run_id=run.info.run_id):
                info = mlflow.sklearn.log_model(Ridge(alpha=alpha).fit(X, y), name="model", input_example=X.head(2),
                                                pip_requirements=pip_requirements(),
                                                serialization_format="cloudpickle")
            mlflow.register_model(info.model_uri, "wine")
        client.set_registered_model_alias("wine", "champion", "1")
        yield uri, client, X
    finally:
        import mlflow

        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


@pytest.fixture
def temporary(monkeypatch) -> Iterator[Path]:
    """The servers' $TMPDIR, where their copies of remote models go: a short path, as a forkserver's
    socket in it must stay under the 108 bytes of an AF_UNIX address (pytest's tmp_path can be longer)."""
    folder = Path(tempfile.mkdtemp(prefix="fm-"))
    monkeypatch.setenv("TMPDIR", str(folder))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _copies(folder: Path) -> int:
    return sum(1 for _ in folder.rglob("MLmodel"))


def test_a_remote_model_is_copied_into_a_folder_of_frugalmls_and_released(tracking_server, tmp_path, monkeypatch):
    from frugalml.serve import load_model, release

    uri, _, X = tracking_server
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    served = load_model("models:/wine@champion", uri)
    assert served.version == "1" and served.download is not None and served.download.parent == tmp_path
    assert served.path.is_relative_to(served.download) and _copies(tmp_path) == 1
    assert len(served.model.predict(X.head(3).to_numpy())) == 3
    with pytest.raises(Exception):  # a load that fails from a location it was handed leaves that copy alone
        load_model("models:/wine@champion", uri, tmp_path / "no-such-table.csv", location=served.location)
    assert (served.path / "MLmodel").is_file()
    child = multiprocessing.get_context("fork").Process(target=release, args=(served,))  # a forked child's release
    child.start()
    child.join(30)
    assert child.exitcode == 0 and (served.path / "MLmodel").is_file()  # is not the copy's: it is its parent's
    release(served)
    assert not served.download.exists() and _copies(tmp_path) == 0
    import mlflow.sklearn
    from sklearn.linear_model import Ridge

    mlflow.sklearn.save_model(Ridge().fit(X, X.iloc[:, 0]), str(tmp_path / "local"), input_example=X.head(2),
                              pip_requirements=pip_requirements(),
                              serialization_format="cloudpickle")
    local = load_model(str(tmp_path / "local"))  # MLflow's own files: served where they are, never removed
    assert local.download is None and local.path == tmp_path / "local"
    release(local)
    assert (tmp_path / "local" / "MLmodel").is_file()
    from frugalml.tracking import seed_sqlite_store

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    seed_sqlite_store(store)
    mlflow.set_tracking_uri(store)
    try:
        experiment = mlflow.create_experiment("local", artifact_location=(tmp_path / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=experiment) as run:
            mlflow.sklearn.log_model(Ridge().fit(X, X.iloc[:, 0]), name="model", input_example=X.head(2),
                                     pip_requirements=pip_requirements(),
                                     serialization_format="cloudpickle")
    finally:
        mlflow.set_tracking_uri(None)
    by_run = load_model(f"runs:/{run.info.run_id}/model", store)  # MLflow copies runs:/ even from a local store
    assert by_run.download is not None and by_run.download.parent == tmp_path and _copies(by_run.download) == 1
    assert not [folder for folder in tmp_path.iterdir() if folder.name.startswith("tmp")]  # none of MLflow's
    release(by_run)
    assert not by_run.download.exists() and _copies(tmp_path / "artifacts") == 1


def test_the_server_removes_a_replaced_versions_copy_and_its_own_when_it_stops(tracking_server, tmp_path, temporary):
    uri, client, X = tracking_server
    server = ServerProcess("models:/wine@champion", "--tracking-uri", uri, "--poll-registry", "0.2",
                           log=tmp_path / "server.log").wait_ready()
    try:
        assert server.client.get("/health").json()["model"]["version"] == "1"
        assert _copies(temporary) == 1
        client.set_registered_model_alias("wine", "champion", "2")
        deadline = time.monotonic() + 30
        while server.client.get("/health").json()["model"]["version"] != "2":
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
        rows = X.head(4).to_numpy().tolist()
        assert server.client.post("/predict", json={"instances": rows}).status_code == 200
        assert _copies(temporary) == 1  # version 1's copy went with the swap
    finally:
        server.stop()
        client.set_registered_model_alias("wine", "champion", "1")
    assert server.process.returncode in (0, -signal.SIGTERM) and _copies(temporary) == 0, server.log()


def test_workers_serve_their_parents_copy_which_goes_when_the_server_stops(tracking_server, tmp_path, temporary):
    uri, _, X = tracking_server
    server = ServerProcess("models:/wine@champion", "--tracking-uri", uri, "--workers", "2",
                           log=tmp_path / "server.log").wait_announced()
    try:
        assert len(server.health_by_worker()) == 2
        assert _copies(temporary) == 1  # one download, in the parent; the workers load from it
    finally:
        server.stop()
    assert _copies(temporary) == 0, server.log()


def test_a_copy_left_by_a_killed_server_goes_with_the_next_copy_and_nothing_else_does(tracking_server, tmp_path,
                                                                                       temporary, monkeypatch):
    from frugalml.serve import load_model, release
    from frugalml.serve._model import remove_orphaned_downloads

    uri, _, _ = tracking_server
    killed = ServerProcess("models:/wine@champion", "--tracking-uri", uri, log=tmp_path / "killed.log").wait_ready()
    killed.process.kill()  # kill -9: no lifespan, no atexit
    killed.process.wait(30)
    (left,) = [folder for folder in temporary.iterdir() if _copies(folder)]
    foreign = temporary / "frugalml-model-not-a-copy"  # a folder of that name without the owner's lock file
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    trap = temporary / "frugalml-model-fifo"  # a FIFO where the lock file would be: opening it must not block
    trap.mkdir()
    os.mkfifo(trap / ".frugalml-owner.lock")
    alive = ServerProcess("models:/wine@champion", "--tracking-uri", uri, log=tmp_path / "alive.log").wait_ready()
    try:
        assert not left.exists(), alive.log()  # the live server's first copy removed the dead one's
        (own,) = [folder for folder in temporary.iterdir() if _copies(folder)]
        monkeypatch.setattr(tempfile, "tempdir", str(temporary))
        served = load_model("models:/wine@champion", uri)
        assert remove_orphaned_downloads(temporary) == []  # the live server's copy, this process's, the others
        assert own.exists() and served.download.exists() and _copies(temporary) == 2
        release(served)
        assert (foreign / "keep.txt").read_text() == "mine" and trap.exists()
    finally:
        alive.stop()
    assert _copies(temporary) == 0 and foreign.exists(), alive.log()
