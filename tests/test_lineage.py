"""Data lineage end to end: a DVC-tracked CSV -> a tiny study -> a registered version -> ``frugalml lineage``.

The DVC repository is real (``git init``, ``dvc init``, ``dvc add``, a commit; no
remote), made with DVC's Python API, which runs what its CLI runs without a
subprocess start per command. The study trains in-process for a few steps.

Promotions are raced by 10 real processes against one real SQLite store, through the
file lock a local store gets and the registry-side lock a tracking server gets.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from frugalml import Search, Study, Workload, lineage, tune
from frugalml.cli import main
from frugalml.executors import InProcessExecutor
from frugalml.registry import register
from helpers import mlflow_store

os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def git(root, *args: str) -> str:
    command = ["git", "-c", "user.name=frugalml", "-c", "user.email=tests@frugalml", *args]
    return subprocess.run(command, cwd=root, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def dvc_repo(tmp_path_factory):
    """A git + DVC repository with ``data/train.csv`` added to DVC and committed."""
    pytest.importorskip("dvc", reason="data lineage through DVC needs the lineage extra: "
                                      "pip install 'frugalml[lineage]'")
    from dvc.repo import Repo

    root = tmp_path_factory.mktemp("dvc-repo")
    git(root, "init", "-q")
    Repo.init(str(root))
    csv = root / "data" / "train.csv"
    csv.parent.mkdir()
    csv.write_text("a,b,target\n" + "".join(f"{i % 7},{(i * 3) % 11},{int(i % 7 > 3)}\n" for i in range(60)))
    with Repo(str(root)) as repo:
        repo.add(str(csv))  # writes data/train.csv.dvc and data/.gitignore
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "data v1")
    md5 = re.search(r"md5: (\w+)", (root / "data" / "train.csv.dvc").read_text())[1]
    return {"root": root, "csv": csv, "rev": git(root, "rev-parse", "HEAD"), "md5": md5}


@pytest.fixture(scope="module")
def registered(dvc_repo, tmp_path_factory):
    directory = tmp_path_factory.mktemp("study") / "lin"
    spec = Study(
        name="lin", workloads=[Workload(path=str(dvc_repo["csv"]), algorithm="logistic_regression", max_steps=4,
                                        eval_every=2)],
        search=Search(space={"batch_size": [8], "learning_rate": [0.01]}), directory=str(directory), mlflow_uri=None,
    )
    tune(spec, executor=InProcessExecutor)
    return directory, register(directory, alias="champion")


def client_for(version):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=version.tracking_uri, registry_uri=version.tracking_uri)


def test_a_study_records_the_dvc_revision_and_md5_of_its_data(dvc_repo, registered):
    directory, _ = registered
    recorded = json.loads((directory / lineage.LINEAGE_FILE).read_text())["workloads"]["train-logistic_regression"]
    data = dvc_repo["csv"].read_bytes()
    assert recorded["sha256"] == hashlib.sha256(data).hexdigest() and recorded["size_bytes"] == len(data)
    assert recorded["dvc"] == {
        "repo": str(dvc_repo["root"]), "path": "data/train.csv", "dvc_file": "data/train.csv.dvc",
        "md5": dvc_repo["md5"], "rev": dvc_repo["rev"], "dirty": False,
    }
    assert dvc_repo["md5"] == hashlib.md5(data).hexdigest()  # DVC 3 hashes the bytes as they are


def test_the_version_and_its_run_carry_the_lineage_and_an_mlflow_dataset(dvc_repo, registered):
    _, version = registered
    client = client_for(version)
    tags = client.get_model_version(version.name, version.version).tags
    assert tags["frugalml.data.dvc.rev"] == dvc_repo["rev"] and tags["frugalml.data.dvc.md5"] == dvc_repo["md5"]
    assert tags["frugalml.data.dvc.path"] == "data/train.csv" and tags["frugalml.data.dvc.dirty"] == "false"
    sha256 = hashlib.sha256(dvc_repo["csv"].read_bytes()).hexdigest()
    assert tags["frugalml.data.sha256"] == sha256
    run = client.get_run(version.run_id)
    assert run.data.tags["frugalml.data.dvc.rev"] == dvc_repo["rev"]
    [logged] = run.inputs.dataset_inputs
    input_tags = {t.key: t.value for t in logged.tags}
    assert input_tags["mlflow.data.context"] == "training" and input_tags["dvc.md5"] == dvc_repo["md5"]
    assert logged.dataset.digest == sha256[:36] and logged.dataset.name == "train.csv"
    assert json.loads(logged.dataset.source)["uri"] == str(dvc_repo["csv"])
    assert json.loads(logged.dataset.profile)["num_rows"] == 42  # the 70% training split of 60 rows
    [promotion] = json.loads(client.get_registered_model(version.name).tags[lineage.HISTORY_TAG])
    assert promotion["alias"] == "champion" and promotion["version"] == "1" and promotion["previous"] is None
    assert promotion["run_id"] == version.run_id and promotion["at"].endswith("+00:00")


def test_frugalml_lineage_prints_data_study_trial_model_and_history(dvc_repo, registered, capsys):
    directory, version = registered
    printed = subprocess.run(
        [sys.executable, "-m", "frugalml.cli", "lineage", f"models:/{version.name}/1", "--tracking-uri",
         version.tracking_uri], capture_output=True, text=True, timeout=120,
    )
    assert printed.returncode == 0, printed.stderr
    out = printed.stdout
    for expected in (dvc_repo["rev"], dvc_repo["md5"], "data/train.csv", str(directory.resolve()), "champion",
                     "train-logistic_regression/", "alias history"):
        assert expected in out
    assert out.index("data") < out.index("study") < out.index("trial") < out.index("model") < out.index("history")

    assert main(["lineage", f"models:/{version.name}@champion", "--tracking-uri", version.tracking_uri, "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["data"]["dvc"]["rev"] == dvc_repo["rev"] and found["study"]["name"] == "lin"
    assert found["trial"]["params"] == {"batch_size": 8, "learning_rate": 0.01}
    assert found["model"]["version"] == "1" and found["model"]["aliases"] == ["champion"]
    assert [h["alias"] for h in found["history"]] == ["champion"]


@pytest.mark.parametrize(("uri", "tracking", "message"), [
    ("models:/no-such-model/1", "store", "no registered model 'no-such-model'"),
    ("models:/{name}/7", "store", "has no version 7 (its versions: 1"),
    ("models:/{name}@gone", "store", "has no alias 'gone' (its aliases: "),
    ("runs:/abc/model", "store", "must be models:/NAME/VERSION or models:/NAME@ALIAS"),
    ("models:/{name}/1", None, "needs the tracking store"),
    ("models:/{name}/1", "sqlite:///{missing}", "no MLflow store at"),
], ids=["unknown model", "unknown version", "unknown alias", "bad URI", "no tracking URI", "no store"])
def test_lineage_mistakes_are_one_line_errors(registered, tmp_path, capsys, monkeypatch, uri, tracking, message):
    _, version = registered
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracking = version.tracking_uri if tracking == "store" else tracking
    args = ["lineage", uri.format(name=version.name)]
    if tracking:
        args += ["--tracking-uri", tracking.format(missing=tmp_path / "none.db")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("frugalml: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "none.db").exists()


def test_record_promotion_moves_the_alias_and_keeps_a_bounded_history(registered, monkeypatch):
    _, version = registered
    client = client_for(version)
    monkeypatch.setattr(lineage, "HISTORY_LIMIT", 3)
    for reason in ("canary", "rollout", "rollback", "rollout again"):
        entry = lineage.record_promotion(client, version.name, "staging", "1", reason, run_id="r-1")
    assert str(client.get_model_version_by_alias(version.name, "staging").version) == "1"
    assert entry["previous"] == "1" and entry["reason"] == "rollout again"
    history = json.loads(client.get_registered_model(version.name).tags[lineage.HISTORY_TAG])
    assert [h["reason"] for h in history] == ["rollout", "rollback", "rollout again"]  # the champion entry dropped
    with pytest.raises(lineage.LineageError, match="cannot point alias 'staging' .* at version 9"):
        lineage.record_promotion(client, version.name, "staging", "9", "no such version")


def test_a_file_outside_dvc_has_a_sha256_and_no_dvc_entry(tmp_path):
    csv = tmp_path / "plain.csv"
    csv.write_text("a,target\n1,0\n")
    found = lineage.data_lineage(csv, dataset="plain")
    assert found == {"dataset": "plain", "path": str(csv), "size_bytes": 13,
                     "sha256": hashlib.sha256(b"a,target\n1,0\n").hexdigest()}
    assert lineage.lineage_tags(found)["frugalml.data.sha256"] == found["sha256"]
    assert not any(key.startswith("frugalml.data.dvc.") for key in lineage.lineage_tags(found))
    assert lineage.data_lineage(None, dataset="diabetes") == {"dataset": "diabetes"}


def test_a_changed_file_is_marked_dirty_against_its_commit(dvc_repo):
    csv, original = dvc_repo["csv"], dvc_repo["csv"].read_text()
    try:
        csv.write_text(original + "1,1,1\n")
        found = lineage.data_lineage(csv)
        assert found["dvc"]["dirty"] is True and found["dvc"]["rev"] == dvc_repo["rev"]
        assert found["dvc"]["md5"] == dvc_repo["md5"]  # what DVC recorded, not the changed bytes
    finally:
        csv.write_text(original)


# -- concurrent promotions ---------------------------------------------------------------------

PROMOTERS = 10  # processes promoting versions 1..10 of one model at the same moment
ROUNDS = 5  # each lock, a fresh model each round, in one store (a new SQLite store costs ~3 s)


def promote_in_rounds(uri: str, sync: Path, index: int, rounds: list[tuple[str, bool]]) -> None:
    """One promoter process: its own client, then in each round, once the go file appears,
    ``champion`` of that round's model -> version ``index + 1`` through the public function."""
    import traceback

    from mlflow import MlflowClient

    try:
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.get_registered_model(rounds[0][0])
        (sync / f"ready-{index}").touch()
        for number, (name, remote) in enumerate(rounds):
            if remote:  # the registry-side lock a tracking server gets, forced on this SQLite store
                lineage._local_store = lambda uri: None
            while not (sync / f"go-{number}").exists():
                time.sleep(0.002)
            lineage.record_promotion(client, name, "champion", str(index + 1), f"promoter {index}")
            (sync / f"done-{number}-{index}").touch()
    except BaseException:
        (sync / f"error-{index}").write_text(traceback.format_exc())
        raise


def promoters(uri: str, sync: Path, rounds: list[tuple[str, bool]]) -> None:
    """Spawned once: imports MLflow, then forks the ``PROMOTERS`` promoter processes (each opens
    its own client and connections after the fork) and writes their exit statuses.

    One import for all ten: spawned one by one, each promoter paid ~2.5 CPU-s to import MLflow
    and this module before it could race. Its SQL stores' modules and mappers too: a client's first
    call imports and configures them, ~1 CPU-s in each promoter.
    """
    import mlflow  # noqa: F401 - before the forks; nothing of it is connected yet
    import mlflow.store.model_registry.sqlalchemy_store  # noqa: F401
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    from sqlalchemy.orm import configure_mappers

    configure_mappers()  # class set-up only: no engine or connection exists before the forks

    pids = []
    for index in range(PROMOTERS):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                promote_in_rounds(uri, sync, index, rounds)
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    statuses = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    (sync / "statuses.json").write_text(json.dumps(statuses))


def wait_for(paths: list[Path], sync: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        errors = sorted(sync.glob("error-*"))
        assert not errors, errors[0].read_text()[-3000:]
        assert time.monotonic() < deadline, f"timed out waiting for {[p.name for p in paths if not p.exists()]}"
        time.sleep(0.01)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for the promotion tests, each test with models of its own names."""
    from mlflow import MlflowClient

    uri = mlflow_store(tmp_path_factory.mktemp("promotions"))  # a copy of the empty store, not its migrations
    return uri, MlflowClient(tracking_uri=uri, registry_uri=uri)


def new_model(client, name: str, versions: int, source) -> str:
    client.create_registered_model(name)
    for _ in range(versions):
        client.create_model_version(name, source=str(source))
    return name


def test_concurrent_promotions_all_reach_the_history_in_the_order_the_alias_moved(store, tmp_path, capsys):
    """10 processes promote 10 versions of one model at once, 5 times with each lock: a file
    lock beside this SQLite store, and the registry-side lock a tracking server gets."""
    import multiprocessing

    uri, client = store
    rounds = [(new_model(client, f"concurrent-{lock}-{number}", PROMOTERS, tmp_path), lock == "registry")
              for lock in ("file", "registry") for number in range(ROUNDS)]
    sync = tmp_path / "sync"
    sync.mkdir()
    # Real processes, each with its own client and connections, forked from one spawned process
    # (not this one: its MLflow client holds connections to the store; not the forkserver: an
    # earlier test's, frugalml's executors use one, has other preloads and pins).
    parent = multiprocessing.get_context("spawn").Process(target=promoters, args=(uri, sync, rounds))
    parent.start()
    try:
        wait_for([sync / f"ready-{index}" for index in range(PROMOTERS)], sync)
        for number, (name, remote) in enumerate(rounds):
            (sync / f"go-{number}").touch()
            wait_for([sync / f"done-{number}-{index}" for index in range(PROMOTERS)], sync)
    finally:
        parent.join(timeout=30)
        if parent.is_alive():
            for promoter in psutil.Process(parent.pid).children():
                promoter.kill()
            parent.kill()
    assert parent.exitcode == 0
    assert json.loads((sync / "statuses.json").read_text()) == [0] * PROMOTERS

    for name, _ in rounds:
        model = client.get_registered_model(name)
        history = json.loads(model.tags[lineage.HISTORY_TAG])
        moves = [entry["version"] for entry in history]
        assert sorted(moves, key=int) == [str(v) for v in range(1, PROMOTERS + 1)], f"{name}: {moves}"
        assert [entry["previous"] for entry in history] == [None, *moves[:-1]], f"{name}: {history}"
        assert str(model.aliases["champion"]) == moves[-1]
        assert [entry["at"] for entry in history] == sorted(entry["at"] for entry in history)
    assert not [m.name for m in client.search_registered_models() if m.name.endswith("lock")]  # none left

    assert main(["lineage", f"models:/{rounds[0][0]}@champion", "--tracking-uri", uri, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["history"]
    assert shown == json.loads(client.get_registered_model(rounds[0][0]).tags[lineage.HISTORY_TAG])
    assert len(shown) == PROMOTERS


def test_a_promotion_waits_a_bounded_time_for_the_lock_and_then_says_who_holds_it(store, tmp_path, monkeypatch):
    import fcntl

    uri, client = store
    name = new_model(client, "held", 2, tmp_path)
    lineage.record_promotion(client, name, "champion", "1", "first")
    monkeypatch.setattr(lineage, "PROMOTION_LOCK_TIMEOUT_S", 0.3)
    lock_file = f"{uri[len('sqlite:///'):]}{lineage.PROMOTION_LOCK_SUFFIX}"
    with open(lock_file, "a+b") as held:  # another process's promotion, as the OS sees it
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        started = time.monotonic()
        with pytest.raises(lineage.LineageError, match=f"another process has held the promotion lock {lock_file} "
                                                       f"for 0.3 s .*`lsof {lock_file}` shows which"):
            lineage.record_promotion(client, name, "champion", "2", "blocked")
        assert time.monotonic() - started < 5
    model = client.get_registered_model(name)
    assert str(model.aliases["champion"]) == "1" and len(json.loads(model.tags[lineage.HISTORY_TAG])) == 1
    assert lineage.record_promotion(client, name, "champion", "2", "released")["previous"] == "1"


def test_a_registry_lock_left_by_a_killed_promotion_is_broken_after_its_lease(store, tmp_path, monkeypatch):
    uri, client = store
    name = new_model(client, "orphaned", 1, tmp_path)
    monkeypatch.setattr(lineage, "_local_store", lambda uri: None)  # as on a tracking server
    client.create_registered_model(lineage.PROMOTION_LOCK_MODEL.format(name=name))  # its holder was killed
    monkeypatch.setattr(lineage, "PROMOTION_LOCK_TIMEOUT_S", 0.5)
    with pytest.raises(lineage.LineageError, match=f"another promotion of '{name}' has held the registry lock"):
        lineage.record_promotion(client, name, "champion", "1", "within the lease")
    monkeypatch.setattr(lineage, "PROMOTION_LOCK_LEASE_S", 0.0)
    assert lineage.record_promotion(client, name, "champion", "1", "lease over")["previous"] is None
    assert [m.name for m in client.search_registered_models(f"name LIKE '{name}%'")] == [name]


@pytest.mark.parametrize(("uri", "store"), [
    ("sqlite:///studies/demo/mlflow.db", "studies/demo/mlflow.db"),
    ("sqlite:////abs/mlflow.db?timeout=20", "/abs/mlflow.db"),
    ("file:///abs/mlruns", "/abs/mlruns"),
    ("./mlruns", "mlruns"),
    ("sqlite://", None), ("sqlite:///:memory:", None), ("http://tracking:5000", None),
    ("postgresql://user@db/mlflow", None), ("databricks", None), ("databricks-uc", None),
])
def test_which_stores_get_a_file_lock(uri, store):
    assert lineage._local_store(uri) == (None if store is None else Path(store))
