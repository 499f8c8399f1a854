"""``frugalml register`` on a real tiny study, then ``frugalml serve models:/NAME@champion``."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from frugalml import Search, Study, Workload, tune
from frugalml.exceptions import ConfigError
from serve_helpers import ServerProcess

PREDICT_TOKEN = "predict-token-for-tests"


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("study") / "reg"
    spec = Study(
        name="reg", workloads=[Workload(dataset="diabetes", algorithm="logistic_regression", eval_every=10)],
        search=Search(space={"batch_size": [16, 64], "learning_rate": [0.01]}), directory=str(directory),
    )
    return tune(spec)


def test_register_refits_the_best_config_and_records_its_profile(study, tmp_path, capsys):
    from mlflow import MlflowClient

    from frugalml.cli import main
    from frugalml.tracking import default_uri

    monitoring = tmp_path / "monitoring.toml"
    monitoring.write_text("window_rows = 200\n")
    assert main(["register", study.directory, "--alias", "champion", "--monitoring", str(monitoring)]) == 0
    assert "registered reg-diabetes-logistic_regression version 1" in capsys.readouterr().out
    assert main(["register", study.directory, "--alias", "challenger"]) == 0

    client = MlflowClient(tracking_uri=default_uri(study.directory), registry_uri=default_uri(study.directory))
    champion = client.get_model_version_by_alias("reg-diabetes-logistic_regression", "champion")
    challenger = client.get_model_version_by_alias("reg-diabetes-logistic_regression", "challenger")
    assert (str(champion.version), str(challenger.version)) == ("1", "2")
    tags = champion.tags
    best = study.best_feasible()
    assert tags["frugalml.config_id"] == best.config_id and tags["frugalml.study"] == "reg"
    assert json.loads(tags["frugalml.params"]) == best.params
    for key in ("single_row_p50_ms", "single_row_p99_ms", "batch1000_p50_ms", "batch1000_p99_ms",
                "study_mean_step_ms"):
        assert float(tags[f"frugalml.profile.{key}"]) > 0
    for key, measured in best.mean.items():  # the study's system profile, as far as it was measured
        assert float(tags[f"frugalml.profile.study_{key}"]) == pytest.approx(measured, rel=1e-5)
    assert float(tags["frugalml.profile.refit_accuracy"]) == pytest.approx(best.mean["accuracy"])
    assert [f["name"] for f in json.loads(tags["frugalml.schema"])][:2] == ["preg", "plas"]

    from frugalml.serve import load_model

    served = load_model("models:/reg-diabetes-logistic_regression@champion", default_uri(study.directory))
    assert served.version == "1" and served.monitoring["window_rows"] == 200
    from frugalml.serve._model import ModelLocation

    gone = ModelLocation(served.path.parent / "no-such-folder", served.name, served.version, served.tags)
    again = load_model("models:/reg-diabetes-logistic_regression@challenger", default_uri(study.directory),
                       location=gone)  # a worker's copy of a temporary download that was cleaned
    assert again.version == "1" and again.path == served.path  # the same version, found again in the registry
    assert served.reference.training_sha256 == tags["frugalml.training_sha256"]
    assert len(served.reference.features[1].sample) > 100 and len(served.reference.features[1].edges) >= 5


def test_serve_a_registered_alias_with_token_and_rate_limit(study, diabetes, tmp_path):
    import mlflow.sklearn

    from frugalml.tracking import default_uri

    uri = "models:/reg-diabetes-logistic_regression@champion"
    server = ServerProcess(uri, "--study", study.directory, "--predict-token", PREDICT_TOKEN, "--rate-limit", "5/s",
                           log=tmp_path / "server.log")
    try:
        server.wait_ready()
        _, split = diabetes
        mlflow.set_tracking_uri(default_uri(study.directory))
        mlflow.set_registry_uri(default_uri(study.directory))
        model = mlflow.sklearn.load_model(uri)
        auth = {"Authorization": f"Bearer {PREDICT_TOKEN}"}
        response = server.client.post("/predict", json={"instances": split.X_test[:50].tolist()}, headers=auth)
        assert response.status_code == 200, response.text
        assert response.json()["predictions"] == model.predict(split.X_test[:50]).tolist()
        assert response.json()["model_version"] == "1"
        assert server.client.post("/predict", json={"instances": split.X_test[:1].tolist()}).status_code == 401
        assert server.client.post("/admin/reload").status_code == 403  # no admin token: admin is off
        codes = [server.client.post("/predict", json={"instances": split.X_test[:1].tolist()}, headers=auth).status_code
                 for _ in range(30)]  # 5/s, bursts of 5: a 429 unless 30 requests take over 5 s
        assert 429 in codes and codes[0] == 200
        assert server.client.get("/health").status_code == 200
    finally:
        server.stop()


def test_register_refuses_what_it_cannot_register(tmp_path, capsys):
    from frugalml.cli import main
    from frugalml.study import StoredStudy

    assert main(["register", str(tmp_path / "nothing")]) == 2
    assert "No study" in capsys.readouterr().err
    two = StoredStudy("two", {"workloads": [{"name": "a", "algorithm": "svm"}, {"name": "b", "algorithm": "svm"}]})
    with pytest.raises(ConfigError, match="pass --workload"):
        two.workload(None)
    with pytest.raises(ConfigError, match="no workload 'c'"):
        two.workload("c")
    assert main(["serve", str(tmp_path / "no-model")]) == 2
    assert "no model directory" in capsys.readouterr().err
    assert main(["serve", str(tmp_path / "no-model"), "--body-timeout", "nan"]) == 2
    assert "'body_timeout_s'" in capsys.readouterr().err


def test_register_checks_alias_and_tracking_uri_before_registering(study, tmp_path, capsys, monkeypatch):
    from mlflow import MlflowClient

    from frugalml.cli import main
    from frugalml.tracking import default_uri

    client = MlflowClient(tracking_uri=default_uri(study.directory), registry_uri=default_uri(study.directory))
    assert main(["register", study.directory, "--name", "reserved-alias", "--alias", "v1"]) == 2
    err = capsys.readouterr().err
    assert "'v1'" in err and "reserved" in err and len(err.strip().splitlines()) == 1
    assert not client.search_registered_models(filter_string="name = 'reserved-alias'")  # nothing half-registered
    assert main(["register", study.directory, "--tracking-uri", "bogus://x"]) == 2
    assert "bogus://x" in capsys.readouterr().err
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["serve", "models:/reg-diabetes-logistic_regression@champion"]) == 2
    assert "--tracking-uri" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists()  # MLflow's fallback store was not created here


class _Sleepy:
    """A model that takes ``seconds`` a predict call, and counts the calls."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.calls = seconds, 0

    def predict(self, X):
        self.calls += 1
        time.sleep(self.seconds)
        return X[:, 0]


def test_latency_is_timed_on_fewer_calls_of_a_slow_model_not_for_longer():
    from frugalml.registry import LATENCY_LEAST_CALLS, measure_latency

    X = np.random.default_rng(0).random((50, 4))
    fast = _Sleepy(0.0)
    measure_latency(fast, X, budget_s=10)
    assert fast.calls == 1 + 200 + 20  # the warm-up, then every call asked for
    slow = _Sleepy(0.02)
    started = time.perf_counter()
    profile = measure_latency(slow, X, budget_s=0.05)
    # 0.05 s of 20-ms calls is 2.5 a kind: the least of each kind is timed instead
    assert slow.calls == 1 + sum(LATENCY_LEAST_CALLS)
    assert time.perf_counter() - started < 2 and profile["single_row_p50_ms"] >= 20



@pytest.fixture(scope="module")
def one_version_registry(tmp_path_factory):
    """A real MLflow registry with model ``m`` at version 1."""
    from mlflow import MlflowClient

    from frugalml.tracking import seed_sqlite_store

    folder = tmp_path_factory.mktemp("aliases")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    seed_sqlite_store(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("m")
    client.create_model_version("m", source=str(folder))
    return client


@pytest.mark.parametrize("alias", ["champion", "v1", "V12", "latest", "LATEST", "v1a", "bad alias", "x" * 256])
def test_the_alias_check_agrees_with_mlflows_registry(alias, one_version_registry):
    """The early check rejects what MLflow's registry rejects (its helpers were renamed once, in MLflow 3.18)."""
    from mlflow.exceptions import MlflowException

    from frugalml.registry import RegistryError, _check_alias, _reserved_alias

    def rejected(check) -> bool:
        try:
            check(alias)
        except (MlflowException, RegistryError):
            return True
        return False

    by_mlflow = rejected(lambda a: one_version_registry.set_registered_model_alias("m", a, "1"))
    assert rejected(_check_alias) == by_mlflow
    if alias.replace(" ", "").isalnum() and len(alias) < 256:  # the fallback covers the reserved names only
        assert rejected(_reserved_alias) == by_mlflow or alias == "bad alias"


def test_a_version_registered_into_another_store_outlives_its_studys_fresh_and_stores_are_checked(
        tmp_path, capfd, caplog, monkeypatch):
    """Registered into another study's store, a version keeps its files beside that store: ``--fresh`` of the
    study it came from does not take them. A store that is not there, or a bare path to an SQLite file, is
    one line (exit 2) before anything is created or refitted."""
    from frugalml.cli import main
    from frugalml.serve import load_model
    from frugalml.tracking import default_uri
    from helpers import cli_in_process

    def small(name: str) -> Study:
        return Study(name=name, workloads=[Workload(dataset="diabetes", algorithm="logistic_regression",
                                                    eval_every=10, max_steps=20)],
                     search=Search(space={"batch_size": [64], "learning_rate": [0.01]}),
                     directory=str(tmp_path / name))

    home, source = tune(small("home")), tune(small("source"))
    registry = default_uri(home.directory)
    assert main(["register", source.directory, "--name", "shared", "--alias", "champion",
                 "--tracking-uri", registry]) == 0
    tune(small("source"), fresh=True)
    served = load_model("models:/shared@champion", registry)
    assert served.version == "1" and served.path.is_relative_to(tmp_path / "home")

    missing = tmp_path / "no-such.db"
    bare = str(tmp_path / "home" / "mlflow.db")
    for command in (["serve", "models:/shared@champion", "--tracking-uri", f"sqlite:///{missing}"],
                    ["lineage", "models:/shared@champion", "--tracking-uri", f"sqlite:///{missing}"],
                    ["lineage", "models:/shared@champion", "--tracking-uri", bare],
                    ["serve", "models:/shared@champion", "--tracking-uri", bare],
                    ["register", source.directory, "--tracking-uri", bare]):
        result = cli_in_process(*command, capfd=capfd, caplog=caplog, monkeypatch=monkeypatch)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, (command, result.stderr)
        said = "no MLflow store at" if command[-1] != bare else f"an SQLite store is named sqlite:///{bare}"
        assert said in lines[0], lines
    assert not missing.exists()
    result = cli_in_process("serve", "models:/sharde@champion", "--tracking-uri", registry, capfd=capfd,
                            caplog=caplog, monkeypatch=monkeypatch)
    assert result.returncode == 2 and result.stderr.strip().endswith("; registered there: shared"), result.stderr


@pytest.mark.parametrize("argv, words", [
    (["--token", "short"], "token (--token, or $FRUGALML_ADMIN_TOKEN) must be a string of at least 8 characters; got 5"),
    (["--predict-token", ""], "predict_token (--predict-token, or $FRUGALML_PREDICT_TOKEN) must be a string of at least"),
])
def test_a_short_token_is_one_line_naming_its_flag_and_variable(argv, words, capsys, tmp_path):
    from frugalml.cli import main

    assert main(["serve", str(tmp_path / "no-model"), *argv]) == 2
    error = capsys.readouterr().err
    assert words in error and error.count("\n") == 1, error


def test_a_built_in_network_study_is_refused_in_one_line_that_says_how_to_ship_one(tmp_path, capsys):
    """'unknown algorithm 'mlp'; choose one of ... mlp, cnn' contradicted itself, after 2.5 s of refitting."""
    from frugalml.cli import main

    study = tune(Study(name="net", workloads=[Workload(dataset="diabetes", algorithm="mlp", max_steps=4,
                                                       eval_every=2)],
                       search=Search(space={"depth": [1], "width": [4], "learning_rate": [0.01]}),
                       directory=str(tmp_path / "net"), mlflow_uri=None))
    assert study.best_feasible() is not None
    assert main(["register", study.directory]) == 2
    error = capsys.readouterr().err
    assert "trains a built-in mlp network, which frugalml cannot refit and register yet" in error, error
    assert "trial.log_model(model)" in error and error.count("\n") == 1
