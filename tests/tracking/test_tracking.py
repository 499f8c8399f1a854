"""MLflow tracking as a user meets it: string hyperparameters, a tracking server that is
down or never answers, a store path that cannot exist, and studies that end badly.

Real MLflow SQLite stores throughout, and a real CLI process wherever the process is what is
tested (its stderr as it happens, Ctrl-C) plus one per refusal; a ``--resume`` after it, and a
refusal's other cases, go through the CLI's ``main`` in this process (real trial workers where
trials run), failing on anything a real process would have added to its stderr. The other
in-process tests use the real Tuner and store with the InProcessExecutor.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient

from frugalml import ResultStore, Search, Study, Workload
from frugalml.exceptions import StoreError
from frugalml.executors import InProcessExecutor
from frugalml.records import TrialStatus
from frugalml.tracking import MlflowTracker, check_uri, default_uri, probe
from frugalml.tuner import tune
from helpers import TESTS, cli, cli_in_process, free_port, mlflow_store, mlflow_trial_runs, start_tune, write_study

STUDY = """
[study]
name = "{name}"
workers = 1
directory = "out"

[[workloads]]
train = "trainers:steady"
train_kwargs = {{ steps = {steps}, step_s = 0.002 }}
eval_every = 20
name = "steady"

[search]
method = "grid"
space = {{ optimizer = ["adam", "sgd"], offset = [0.0, 0.1] }}

[tracking]
mlflow_uri = "{uri}"
"""
WARNING = "frugalml: warning:"


def _runs(uri: str, experiment: str) -> list:
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id], max_results=1000) if found else []


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


class Blackhole:
    """A port that accepts connections (the kernel completes them) and never answers."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(64)
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"

    def close(self) -> None:
        self.socket.close()


@pytest.fixture
def blackhole():
    hole = Blackhole()
    yield hole
    hole.close()


# -- string hyperparameters -----------------------------------------------------------------------


def test_a_study_over_string_choices_logs_every_trial_and_resume_adds_nothing(tmp_path, capfd, caplog, monkeypatch):
    """Trial ids hold ``optimizer='adam'``; the study name holds a quote too."""
    name = "o'brien-optimizers"
    study_file = write_study(tmp_path / "s.toml", STUDY.format(name=name, steps=40, uri="default"))
    done = cli("tune", str(study_file), "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert WARNING not in done.stderr and "Traceback" not in done.stderr
    uri = default_uri(tmp_path / "out")
    runs = mlflow_trial_runs(uri, name)
    stored = ResultStore(tmp_path / "out").mlflow_runs()
    assert set(runs) == set(stored) and len(runs) == 4 and "steady/offset=0.0,optimizer='adam'/r0" in runs
    assert {r.info.status for r in runs.values()} == {"FINISHED"}
    assert sorted(r.data.params["optimizer"] for r in runs.values()) == ["adam", "adam", "sgd", "sgd"]
    assert stored == {trial_id: run.info.run_id for trial_id, run in runs.items()}  # each trial knows its run

    resumed = cli_in_process("tune", str(study_file), "--no-progress", "--resume", cwd=tmp_path, capfd=capfd,
                              caplog=caplog, monkeypatch=monkeypatch, workers=True)
    assert resumed.returncode == 0, resumed.stderr
    assert WARNING not in resumed.stderr and "completed" not in resumed.stdout  # nothing ran again
    assert {t: r.info.run_id for t, r in mlflow_trial_runs(uri, name).items()} == stored  # nothing re-logged
    parents = [r for r in _runs(uri, name) if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # found again, not duplicated
    shown = cli("show", str(tmp_path / "out"), "--format", "csv")
    assert shown.returncode == 0 and shown.stdout.count("adam") >= 2


# -- time limits ------------------------------------------------------------------------------------


def _tune_watching_stderr(study_file: Path, cwd: Path) -> tuple[int, list[tuple[float, str]], str]:
    """Run ``frugalml tune``; returns its exit status, its stderr lines with the seconds since
    the start at which each appeared, and its stdout."""
    started = time.monotonic()
    process = start_tune(study_file, cwd)
    lines: list[tuple[float, str]] = []
    reader = threading.Thread(target=lambda: lines.extend((time.monotonic() - started, line)
                                                          for line in process.stderr))
    reader.start()
    stdout = process.stdout.read()
    process.wait(timeout=120)
    reader.join()
    return process.returncode, lines, stdout


@pytest.mark.parametrize("server", [
    # slow: a refused connection is told apart from a server that answers by the probe's own test; the
    # study's way through a server that is down runs end to end in "never answers"
    pytest.param("closed port", marks=pytest.mark.slow),
    "never answers",
])
def test_an_unreachable_tracking_server_is_one_line_within_seconds_and_resume_logs_the_trials(
        server, tmp_path, blackhole, capfd, caplog, monkeypatch):
    uri = f"http://127.0.0.1:{free_port()}" if server == "closed port" else blackhole.url
    # 40 busy steps a trial, as elsewhere: no assertion depends on how long the trials take (the 10 s
    # 14 s guards against MLflow's own time limits and retries, 15 s a request; the probe gives up after 3,
    # and a loaded machine takes 2-4 s to start the CLI and its forkserver)
    study_file = write_study(tmp_path / "s.toml", STUDY.format(name="down", steps=40, uri=uri))
    status, lines, stdout = _tune_watching_stderr(study_file, tmp_path)
    assert status == 0, lines
    assert stdout.count("completed") == 4  # the study went on
    warnings = [(at, line) for at, line in lines if WARNING in line]
    assert len(warnings) == 1, lines  # once, not per trial
    at, line = warnings[0]
    assert uri in line and "unreachable" in line and "--resume" in line
    assert at < 14, f"the message came {at:.1f} s after the start"
    assert not any("Traceback" in line for _, line in lines)
    store = ResultStore(tmp_path / "out")
    assert len(store.mlflow_runs()) == 4 and set(store.mlflow_runs().values()) == {None}

    # the tracking store is back (here: a local one): --resume logs the four, runs nothing
    local = "sqlite:///" + str(tmp_path / "mlflow.db")
    study_file.write_text(study_file.read_text().replace(uri, local))
    resumed = cli_in_process("tune", str(study_file), "--resume", "--no-progress", cwd=tmp_path, capfd=capfd,
                              caplog=caplog, monkeypatch=monkeypatch, workers=True)
    assert resumed.returncode == 0 and WARNING not in resumed.stderr, resumed.stderr
    assert "completed" not in resumed.stdout
    runs = mlflow_trial_runs(local, "down")
    assert set(runs) == set(store.mlflow_runs()) and None not in store.mlflow_runs().values()
    assert {r.info.status for r in _runs(local, "down")} == {"FINISHED"}


def test_the_probe_tells_a_server_that_answers_from_one_that_does_not(blackhole):
    import http.server

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    answering = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=answering.serve_forever, daemon=True).start()
    try:
        assert probe(f"http://127.0.0.1:{answering.server_address[1]}/some/prefix") is None  # a 404 is an answer
    finally:
        answering.shutdown()
        answering.server_close()
    started = time.monotonic()
    assert probe(blackhole.url, timeout_s=1) == "no answer within 1 s"
    assert time.monotonic() - started < 3
    assert probe(f"http://127.0.0.1:{free_port()}") == "Connection refused"


@pytest.mark.parametrize("where, expected", [
    ("/dev/null/x.db", "'/dev/null' is not a folder"),
    ("not-sqlite.db", "is not an SQLite database"),
    ("a-folder", "is not a file"),
])
def test_a_tracking_store_that_cannot_exist_is_one_line_before_any_trial(where, expected, tmp_path, capfd, caplog,
                                                                           monkeypatch):
    (tmp_path / "not-sqlite.db").write_text("hello")
    (tmp_path / "a-folder").mkdir()
    path = where if where.startswith("/") else str(tmp_path / where)
    study_file = write_study(tmp_path / "s.toml", STUDY.format(name="nowhere", steps=40, uri="sqlite:///" + path))
    before = _tree(tmp_path)
    started = time.monotonic()
    if where == "/dev/null/x.db":  # one real process; the same refusal of the others in this one
        refused = cli("tune", str(study_file), "--no-progress", cwd=tmp_path)
    else:
        refused = cli_in_process("tune", str(study_file), "--no-progress", cwd=tmp_path, capfd=capfd, caplog=caplog,
                                  monkeypatch=monkeypatch)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.startswith("frugalml: error: ") and refused.stderr.count("\n") == 1, refused.stderr
    assert expected in refused.stderr and "mlflow_uri" in refused.stderr
    assert time.monotonic() - started < 10
    assert _tree(tmp_path) == before and not (tmp_path / "out").exists()


def test_check_uri_accepts_stores_that_can_be_created(tmp_path):
    check_uri("sqlite:///" + str(tmp_path / "new" / "deeper" / "mlflow.db"))  # folders are made when needed
    check_uri(mlflow_store(tmp_path / "seeded"))
    check_uri("http://127.0.0.1:1")  # a server that is down is not a mistake in the study file


# -- studies that end badly leave no run RUNNING --------------------------------------------------


def _statuses(uri: str, experiment: str) -> tuple[str, list[str]]:
    """(the study run's status, the trial runs' statuses)."""
    runs = _runs(uri, experiment)
    parent = [r.info.status for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parent) == 1
    return parent[0], [r.info.status for r in runs if "mlflow.parentRunId" in r.data.tags]


def test_ctrl_c_ends_the_mlflow_runs_killed_and_resume_finishes_them(tmp_path, capfd, caplog, monkeypatch):
    # the second trial waits for `release`: Ctrl-C comes once the first one's MLflow run exists, however
    # long a loaded driver takes to log it (racing timed trials, the study sometimes ended first)
    release = tmp_path / "release"
    body = STUDY.format(name="interrupted", steps=40, uri="default").replace(
        'train = "trainers:steady"\ntrain_kwargs = { steps = 40, step_s = 0.002 }',
        f'train = "trainers:first_then_held"\ntrain_kwargs = {{ release = "{release}", steps = 40 }}')
    assert "first_then_held" in body
    study_file = write_study(tmp_path / "s.toml", body)
    uri = default_uri(tmp_path / "out")
    # Ctrl-C's default: a process that ignores SIGINT (an xdist worker can) passes SIG_IGN on to its children
    driver = start_tune(study_file, tmp_path, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    store = ResultStore(tmp_path / "out")

    def logged() -> bool:  # the first trial is logged: the study's run and a trial run exist
        try:
            return store.exists and any(store.mlflow_runs().values())
        except StoreError:  # the store is being created
            return False

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not logged():
        time.sleep(0.1)
    driver.send_signal(signal.SIGINT)
    _, stderr = driver.communicate(timeout=60)
    assert driver.returncode == 130, stderr
    assert "Traceback" not in stderr
    parent, trials = _statuses(uri, "interrupted")
    assert parent == "KILLED" and trials and "RUNNING" not in trials

    release.touch()
    resumed = cli_in_process("tune", str(study_file), "--resume", "--no-progress", cwd=tmp_path, capfd=capfd,
                              caplog=caplog, monkeypatch=monkeypatch, workers=True)
    assert resumed.returncode == 0, resumed.stderr
    parent, trials = _statuses(uri, "interrupted")
    assert parent == "FINISHED" and trials == ["FINISHED"] * 4
    assert set(mlflow_trial_runs(uri, "interrupted")) == set(store.mlflow_runs())


def test_a_study_that_fails_ends_its_mlflow_run_failed(tmp_path, capfd, caplog, monkeypatch):
    # a store outside the study's folder: the folder itself goes (nothing finished), the tracking server stays
    uri = "sqlite:///" + str(tmp_path / "mlflow.db")
    write_study(tmp_path / "s.toml", STUDY.format(name="broken", steps=40, uri=uri).replace(
        'train = "trainers:steady"\ntrain_kwargs = { steps = 40, step_s = 0.002 }', 'train = "trainers:never_steps"'))
    # in this process (tests/cli runs a never-stepping study's one-line error in a real one); its trial in a worker
    failed = cli_in_process("tune", str(tmp_path / "s.toml"), "--no-progress", cwd=tmp_path, capfd=capfd,
                             caplog=caplog, monkeypatch=monkeypatch, workers=True)
    assert failed.returncode == 2 and "trial.step" in failed.stderr, failed.stderr
    parent, trials = _statuses(uri, "broken")
    assert parent == "FAILED" and "RUNNING" not in trials
    assert not (tmp_path / "out").exists()


def _steady(trial, steps: int = 30) -> None:
    for step in range(1, steps + 1):
        if trial.step(loss=1.0 / step, n_samples=1):
            trial.report(val_loss=1.0 / step)


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_mid_study_ends_the_mlflow_runs_failed(tmp_path, monkeypatch):
    """The results store's second write fails with ENOSPC (as on a full disk)."""
    uri = "sqlite:///" + str(tmp_path / "mlflow.db")
    study = Study(name="full", workloads=[Workload(train=_steady, name="steady", eval_every=10)],
                  search=Search(space={"optimizer": ["adam", "sgd"]}), directory=str(tmp_path / "out"),
                  mlflow_uri=uri)
    writes = []
    save_trial = ResultStore.save_trial

    def fill_up(store, record):
        writes.append(record.trial_id)
        if len(writes) == 2:
            _disk_full()
        save_trial(store, record)

    monkeypatch.setattr(ResultStore, "save_trial", fill_up)
    with pytest.raises(OSError, match="No space left"):
        tune(study, executor=functools.partial(InProcessExecutor))
    parent, trials = _statuses(uri, "full")
    assert parent == "FAILED" and "RUNNING" not in trials


def test_a_study_run_while_the_caller_handles_an_error_ends_its_mlflow_runs_finished(tmp_path):
    """How the study ended is the study's own exception, not one its caller is handling."""
    uri = "sqlite:///" + str(tmp_path / "mlflow.db")
    study = Study(name="inside", workloads=[Workload(train=_steady, name="steady", eval_every=10)],
                  search=Search(space={"optimizer": ["adam"]}), directory=str(tmp_path / "out"), mlflow_uri=uri)
    try:
        raise KeyError("the caller's own")
    except KeyError:
        tune(study, executor=functools.partial(InProcessExecutor))
    parent, trials = _statuses(uri, "inside")
    assert parent == "FINISHED" and trials == ["FINISHED"]


def _record(trial_id: str):
    from frugalml.records import TrialRecord

    return TrialRecord(trial_id=trial_id, number=0, workload="steady", config_id=trial_id.split("/")[1], repeat=0,
                       params={"optimizer": "adam"}, status=TrialStatus.COMPLETED, train_loss=(0.5,), windows=(),
                       stop=None, error=None, steps_done=1, cpu_s=0.1, wall_s=0.1, steps_saved=0, cpu_s_saved=0.0)


def test_a_trial_run_that_cannot_be_completed_is_ended_failed_and_a_left_running_one_killed(tmp_path, monkeypatch):
    uri = "sqlite:///" + str(tmp_path / "mlflow.db")
    tracker = MlflowTracker(uri, "partial")
    monkeypatch.setattr(tracker.client, "log_batch", _disk_full)
    with pytest.raises(OSError):
        tracker.log_trial(_record("steady/optimizer='adam'/r0"))
    monkeypatch.undo()
    _, trials = _statuses(uri, "partial")
    assert trials == ["FAILED"]

    left = tracker.client.create_run(tracker.experiment_id, tags={"mlflow.parentRunId": tracker.parent_run_id,
                                                                  "frugalml.trial_id": "steady/x/r0"})
    assert tracker.client.get_run(left.info.run_id).info.status == "RUNNING"  # as a SIGKILLed driver leaves it
    again = MlflowTracker(uri, "partial")
    assert again.runs_by_trial()["steady/x/r0"] == left.info.run_id
    assert again.client.get_run(left.info.run_id).info.status == "KILLED"
    again.log_trial(_record("steady/optimizer='adam'/r0"))  # the FAILED copy is replaced
    again.close()
    parent, trials = _statuses(uri, "partial")
    assert parent == "FINISHED" and sorted(trials) == ["FINISHED", "KILLED"]
    assert re.fullmatch(r"[0-9a-f]+", again.runs_by_trial()["steady/optimizer='adam'/r0"])


# -- MLflow's own process ---------------------------------------------------------------------------


def test_the_driver_of_a_tracked_study_never_imports_mlflow(tmp_path):
    """MLflow's imports (~1.4 CPU-s) and their teardown at exit (~0.5 s) are its tracking process's."""
    script = tmp_path / "driver.py"
    script.write_text(
        "import sys\n"
        "from frugalml import Search, Study, Workload, tune\n"
        "import trainers\n"
        "if __name__ == '__main__':\n"
        f"    study = Study(name='apart', directory={str(tmp_path / 'out')!r},\n"
        "                  search=Search(space={'offset': [0.0, 0.1]}),\n"
        "                  workloads=[Workload(train=trainers.steady, name='steady', eval_every=10,\n"
        "                                      train_kwargs={'steps': 20, 'step_s': 0.0})])\n"
        "    tune(study)\n"
        "    print('mlflow' in sys.modules, 'sqlalchemy' in sys.modules)\n"
    )
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": path})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]
    runs = mlflow_trial_runs(default_uri(tmp_path / "out"), "apart")
    assert len(runs) == 2 and {r.info.status for r in runs.values()} == {"FINISHED"}
    assert set(ResultStore(tmp_path / "out").mlflow_runs().values()) == {r.info.run_id for r in runs.values()}


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _tracking_process() -> psutil.Process | None:
    """This process's live MLflow tracking process, if any."""
    for child in psutil.Process().children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "frugalml.tracking._child" in " ".join(child.cmdline()):
                return child
        except psutil.Error:
            continue
    return None


def test_a_tracking_process_killed_mid_study_costs_one_warning_and_resume_logs_the_rest(tmp_path, caplog):
    uri = "sqlite:///" + str(tmp_path / "mlflow.db")
    study = Study(name="orphaned", workloads=[Workload(train=_steady, name="steady", eval_every=10)],
                  search=Search(space={"optimizer": ["adam", "sgd", "rmsprop", "adagrad"]}),
                  directory=str(tmp_path / "out"), mlflow_uri=uri)
    killed = []

    def kill_tracking(event, payload):
        if event == "end" and not killed and (process := _tracking_process()) is not None:
            process.kill()
            process.wait(10)
            killed.append(process.pid)

    result = tune(study, progress=kill_tracking, executor=functools.partial(InProcessExecutor))
    assert killed and len(result.records) == 4  # the study went on
    warnings = [r.getMessage() for r in caplog.records if r.getMessage().startswith(WARNING)]
    assert len(warnings) == 1 and "tracking process ended" in warnings[0] and "--resume" in warnings[0]
    stored = ResultStore(tmp_path / "out").mlflow_runs()
    assert len(stored) == 4 and None in stored.values()
    parent, trials = _statuses(uri, "orphaned")  # ended from a new tracking process: none left RUNNING
    assert parent == "FAILED" and "RUNNING" not in trials

    caplog.clear()
    tune(study, resume=True, executor=functools.partial(InProcessExecutor))  # in a new tracking process
    assert not [r for r in caplog.records if r.getMessage().startswith(WARNING)]
    assert _tracking_process().pid != killed[0]
    stored = ResultStore(tmp_path / "out").mlflow_runs()
    runs = mlflow_trial_runs(uri, "orphaned")
    assert None not in stored.values() and stored == {t: r.info.run_id for t, r in runs.items()}
    parent, trials = _statuses(uri, "orphaned")
    assert parent == "FINISHED" and trials == ["FINISHED"] * 4


def test_a_tracking_process_started_by_a_study_on_a_thread_outlives_the_thread_for_later_studies(tmp_path, caplog):
    """The parent-death signal is tied to the thread that started a process: one a study's thread started
    must not die with that thread while the driver's later studies use it."""
    from frugalml.tracking import end_tracking_process

    end_tracking_process()
    uri = "sqlite:///" + str(tmp_path / "mlflow.db")

    def study(name: str) -> Study:
        return Study(name=name, workloads=[Workload(train=_steady, name="steady", eval_every=10)],
                     search=Search(space={"optimizer": ["adam"]}), directory=str(tmp_path / name), mlflow_uri=uri)

    thread = threading.Thread(target=tune, args=(study("on-a-thread"),),
                              kwargs={"executor": functools.partial(InProcessExecutor)})
    thread.start()
    thread.join(120)
    started = _tracking_process()
    assert started is not None
    time.sleep(0.5)  # a parent-death signal would have come by now
    tune(study("after-it"), executor=functools.partial(InProcessExecutor))
    assert _tracking_process().pid == started.pid
    assert not [r for r in caplog.records if r.getMessage().startswith(WARNING)]
    for name in ("on-a-thread", "after-it"):
        assert _statuses(uri, name) == ("FINISHED", ["FINISHED"])


def test_kill_9_of_the_driver_ends_its_mlflow_runs_killed_and_leaves_no_process(tmp_path, capfd, caplog, monkeypatch):
    """The tracking process sees its driver's socket end and ends the study's run KILLED, as the
    next open of the study would (and resume does), and is gone within a second."""
    uri = "sqlite:///" + str(tmp_path / "mlflow.db")
    study_file = write_study(tmp_path / "s.toml", STUDY.format(name="killed", steps=600, uri=uri))
    driver = start_tune(study_file, tmp_path)
    deadline = time.monotonic() + 120
    while not ((tmp_path / "mlflow.db").exists() and len(_runs(uri, "killed")) > 1):  # a trial run beside the study's
        assert time.monotonic() < deadline and driver.poll() is None, "no trial was logged"
        time.sleep(0.2)
    family = [driver, *psutil.Process(driver.pid).children(recursive=True)]
    driver.kill()
    driver.communicate()
    time.sleep(1.0)
    assert not [p.pid for p in family[1:] if _alive(p)]
    parent, trials = _statuses(uri, "killed")
    assert parent == "KILLED" and "RUNNING" not in trials

    resumed = cli_in_process("tune", str(study_file), "--resume", "--no-progress", cwd=tmp_path, capfd=capfd,
                              caplog=caplog, monkeypatch=monkeypatch, workers=True)
    assert resumed.returncode == 0, resumed.stderr
    parent, trials = _statuses(uri, "killed")
    assert parent == "FINISHED" and trials == ["FINISHED"] * 4
