"""The command line as a user runs it: tune, resume after a kill, list/show, bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from contextlib import closing
from pathlib import Path

import psutil
import pytest

from frugalml import ResultStore
from frugalml.tracking import default_uri
from helpers import cli, cli_in_process, mlflow_trial_runs, start_tune, write_study

STEADY_STUDY = """
[study]
name = "{name}"
workers = 2
directory = "out"

[[workloads]]
train = "trainers:steady"
train_kwargs = {{ steps = {steps}, step_s = 0.002 }}
eval_every = 50
name = "steady"

[search]
method = "grid"
space = {{ offset = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7] }}
"""
# for a study stopped while its trials run: 1 s or more a trial, asleep (almost no CPU)
SLEEPING_STUDY = (STEADY_STUDY.replace("trainers:steady", "trainers:ranked").replace('name = "steady"', 'name = "ranked"')
                  .replace("steps = {steps}, step_s = 0.002", "steps = 100, alloc_at = 0").replace("offset", "quality"))
NO_MLFLOW = '\n[tracking]\nmlflow_uri = "none"\n'


def _all_gone(processes: list[psutil.Process], timeout_s: float = 10) -> bool:
    """True once none of ``processes`` runs (zombies count as gone)."""
    def running(p: psutil.Process) -> bool:
        try:
            return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + timeout_s
    while any(running(p) for p in processes) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not any(running(p) for p in processes)


def test_resume_after_the_driver_is_killed_loses_and_repeats_nothing(tmp_path):
    # once three are stored, the other five need two rounds more, ample time for the kill
    study_file = write_study(tmp_path / "s.toml", SLEEPING_STUDY.format(name="resume"))
    driver = start_tune(study_file)
    store = ResultStore(tmp_path / "out")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(store.trial_ids()) < 3:
        time.sleep(0.05)
    helpers = psutil.Process(driver.pid).children(recursive=True)  # the forkserver and the workers
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    before = {r.trial_id: r for r in store.trials()}
    assert 3 <= len(before) < 8
    assert len(helpers) >= 2 and _all_gone(helpers)  # orphaned workers die with the driver (PR_SET_PDEATHSIG)

    refused = cli("tune", str(study_file))
    assert refused.returncode == 2 and "--resume" in refused.stderr

    resumed = cli("tune", str(study_file), "--resume", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    after = {r.trial_id: r for r in store.trials()}
    assert len(after) == 8
    for trial_id, record in before.items():  # finished trials kept as they were
        assert after[trial_id].number == record.number and after[trial_id].train_loss == record.train_loss
    # only the missing trials ran again
    assert resumed.stdout.count("completed") == 8 - len(before)
    numbers = [r.number for r in after.values()]
    assert len(set(numbers)) == 8
    runs = mlflow_trial_runs(default_uri(tmp_path / "out"), "resume")
    assert set(runs) == set(after)  # one MLflow run per trial, no duplicates


def test_tune_show_and_list_print_tables_json_and_csv(healthy_study, tmp_path):
    folder, done = healthy_study
    shutil.copytree(folder, tmp_path, dirs_exist_ok=True)
    assert done.returncode == 0, done.stderr
    assert "best configuration within budget: {'offset': 0.0}" in done.stdout
    assert "compute: used" in done.stdout
    shown = cli("show", str(tmp_path / "out"), "--format", "json")
    rows = json.loads(shown.stdout)
    assert len(rows) == 8 and {r["status"] for r in rows} == {"completed"}
    assert rows[0]["param_offset"] == 0.0 and rows[0]["mean_step_ms"] > 1.5
    table = cli("show", "out", "--root", str(tmp_path))
    assert "best feasible" in table.stdout
    csv_rows = cli("show", str(tmp_path / "out"), "--format", "csv").stdout.splitlines()
    assert len(csv_rows) == 9 and csv_rows[0].startswith("number,trial_id")
    listing = cli("list", "--root", str(tmp_path), "--format", "json")
    assert json.loads(listing.stdout)[0]["trials"] == 8


BAD_STUDIES = {
    "unknown dataset": ('dataset = "mnist_785"\nalgorithm = "svm"', "mnist_785"),
    "unknown algorithm": ('dataset = "diabetes"\nalgorithm = "random_forest"', "random_forest"),
    "algorithm for the wrong task": ('dataset = "red_wine"\nalgorithm = "perceptron"', "perceptron"),
    "missing target column": ('path = "{csv}"\ntarget = "label"\nalgorithm = "svm"', "label"),
    "NaN data": ('path = "{nan_csv}"\nalgorithm = "svm"', "NaN"),
    "empty data": ('path = "{empty_csv}"\nalgorithm = "svm"', "empty"),
}


@pytest.fixture
def data_files(tmp_path):
    (tmp_path / "ok.csv").write_text("a,b,target\n" + "".join(f"{i},{i * 2},{i % 2}\n" for i in range(20)))
    (tmp_path / "nan.csv").write_text("a,b,target\n1,,0\n" + "".join(f"{i},{i},{i % 2}\n" for i in range(20)))
    (tmp_path / "empty.csv").write_text("a,b,target\n")
    return {"csv": tmp_path / "ok.csv", "nan_csv": tmp_path / "nan.csv", "empty_csv": tmp_path / "empty.csv"}


def _assert_one_line_error(result, needle, study_dir):
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("frugalml: error:"), result.stderr
    assert needle.lower() in lines[0].lower()
    assert not ResultStore(study_dir).exists  # nothing half-written
    assert not study_dir.exists(), sorted(p.name for p in study_dir.iterdir())  # nothing written at all


@pytest.mark.parametrize("case", sorted(BAD_STUDIES))
def test_bad_workloads_give_one_line_errors_and_write_nothing(tmp_path, data_files, case):
    workload, needle = BAD_STUDIES[case]
    body = (
        '[study]\nname = "bad"\ndirectory = "out"\n[[workloads]]\n'
        + workload.format(**{k: str(v) for k, v in data_files.items()})
        + '\n[search]\nspace = { batch_size = [10], learning_rate = [0.01] }\n'
    )
    result = cli("tune", str(write_study(tmp_path / "bad.toml", body)))
    _assert_one_line_error(result, needle, tmp_path / "out")


BAD_FILES = {
    "malformed toml": ("[study\nname = 1", "not valid TOML"),
    "zero budget": ('[study]\nname="b"\n[[workloads]]\ndataset="diabetes"\nalgorithm="svm"\n[budget]\nmax_memory_mb = 0', "'max_memory_mb' parameter of [budget]"),
    "negative budget": ('[study]\nname="b"\n[[workloads]]\ndataset="diabetes"\nalgorithm="svm"\n[budget]\nmax_mean_step_ms = -5', "bare number of ms"),
    "unknown rule": ('[study]\nname="b"\n[[workloads]]\ndataset="diabetes"\nalgorithm="svm"\n[stopping]\npatiense = 3', "patiense"),
    "unknown metric": ('[study]\nname="b"\n[[workloads]]\ndataset="diabetes"\nalgorithm="svm"\n[search]\nobjectives=["val_los"]\nspace={batch_size=[30]}', "val_los"),
    "batch size zero": ('[study]\nname="b"\n[[workloads]]\ndataset="diabetes"\nalgorithm="svm"\n[search]\nspace={batch_size=[0, 30], learning_rate=[0.01]}', "batch_size"),
    "built-in without a learning rate": ('[study]\nname="b"\n[[workloads]]\ndataset="diabetes"\nalgorithm="svm"\n[search]\nspace={batch_size=[30]}', "learning_rate = [0.01]"),
    "unknown search": ('[study]\nname="b"\n[[workloads]]\ndataset="diabetes"\nalgorithm="svm"\n[search]\nmethod="annealing"', "annealing"),
    "unknown key": ('[study]\nname="b"\nworkerz=2\n[[workloads]]\ndataset="diabetes"\nalgorithm="svm"', "workerz"),
    "no workloads": ('[study]\nname="b"', "workloads"),
    "never steps": ('[study]\nname="b"\n[[workloads]]\ntrain="trainers:never_steps"\n[search]\nspace={x=[1]}', "trial.step"),
    "seed not an int": ('[study]\nname="b"\nseed="a"\n[[workloads]]\ndataset="diabetes"\nalgorithm="svm"', "'seed' must be an integer"),
    "params not a table": ('[study]\nname="b"\n[[workloads]]\ndataset="diabetes"\nalgorithm="svm"\nparams="x"', "'params' must be a table"),
    "dataset not a string": ('[study]\nname="b"\n[[workloads]]\ndataset=5\nalgorithm="svm"', "'dataset' must be a string"),
    "hang timeout zero": ('[study]\nname="b"\n[[workloads]]\ndataset="diabetes"\nalgorithm="svm"\n[execution]\nhang_timeout_s=0', "hang_timeout_s"),
    "pin not a bool": ('[study]\nname="b"\n[[workloads]]\ndataset="diabetes"\nalgorithm="svm"\n[execution]\npin="yes"', "'pin' must be true or false"),
    "mlflow uri not a string": ('[study]\nname="b"\n[[workloads]]\ndataset="diabetes"\nalgorithm="svm"\n[tracking]\nmlflow_uri=3', "'mlflow_uri' must be a string"),
    "mlflow uri unknown scheme": ('[study]\nname="b"\n[[workloads]]\ndataset="diabetes"\nalgorithm="svm"\n[search]\nspace={batch_size=[30], learning_rate=[0.01]}\n[tracking]\nmlflow_uri="bogus://x"', "unknown scheme"),
    "workloads as a table": ('[study]\nname="b"\n[workloads]\ndataset="diabetes"\nalgorithm="svm"', "[[workloads]]"),
    "table not a table": ('prediction=3\n[study]\nname="b"\n[[workloads]]\ndataset="diabetes"\nalgorithm="svm"', "[prediction] must be a table"),
    "unknown built-in parameter": ('[study]\nname="b"\n[[workloads]]\ndataset="diabetes"\nalgorithm="svm"\nparams={alpha_typo=3}', "alpha_typo"),
    "median not a switch": ('[study]\nname="b"\n[[workloads]]\ndataset="diabetes"\nalgorithm="svm"\n[stopping]\nmedian="yes"', "median must be true, false"),
    "data dir missing": ('[study]\nname="b"\ndata_dir="no/such/folder"\n[[workloads]]\ndataset="diabetes"\nalgorithm="svm"', "data_dir"),
    "address without ray": ('[study]\nname="b"\naddress="127.0.0.1:1"\n[[workloads]]\ndataset="diabetes"\nalgorithm="svm"', "backend"),
    "more cpus than cores": ('[study]\nname="b"\n[[workloads]]\ndataset="diabetes"\nalgorithm="svm"\n[execution]\ncpus_per_trial=100000', "cpus_per_trial"),
    "repeated grid value": ('[study]\nname="b"\n[[workloads]]\ndataset="diabetes"\nalgorithm="svm"\n[search]\nspace={learning_rate=[0.01, 0.01]}', "more than once"),
    "n_trials with grid": ('[study]\nname="b"\n[[workloads]]\ndataset="diabetes"\nalgorithm="svm"\n[search]\nn_trials=5\nspace={batch_size=[30]}', "n_trials"),
    "range step not a number": ('[study]\nname="b"\n[[workloads]]\ndataset="diabetes"\nalgorithm="svm"\n[search]\nmethod="random"\nspace={learning_rate={low=0.001, high=0.1, step="x"}}', "step"),
}


# Run as a real `frugalml tune` process: each kind of failure (TOML, a key, a built-in's parameters, and all
# that only the tuner finds: data, MLflow, cores, the training function). The rest fail the same way as
# "unknown key" (a ConfigError while the file is read), so they go through the CLI's ``main`` in this process.
REAL_CLI_CASES = {"malformed toml", "unknown key", "unknown built-in parameter", "data dir missing",
                  "mlflow uri unknown scheme", "more cpus than cores", "never steps"}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_study_files_give_one_line_errors_and_write_nothing(tmp_path, case, capfd, caplog, monkeypatch):
    assert REAL_CLI_CASES <= BAD_FILES.keys()
    body, needle = BAD_FILES[case]
    body = body.replace('name="b"', 'name="b"\ndirectory="out"') if 'name="b"' in body else body
    args = ["tune", str(write_study(tmp_path / "bad.toml", body))]
    result = cli(*args) if case in REAL_CLI_CASES else cli_in_process(*args, capfd=capfd, caplog=caplog, monkeypatch=monkeypatch)
    _assert_one_line_error(result, needle, tmp_path / "out")  # "never steps" too: its trial ran, then all went


def test_missing_study_file_and_unknown_study(tmp_path, capfd, caplog, monkeypatch):
    result = cli("tune", str(tmp_path / "nope.toml"))  # the real process; the others fail the same way, in main
    assert result.returncode == 2 and "not found" in result.stderr
    result = cli_in_process("show", "nope", "--root", str(tmp_path), capfd=capfd, caplog=caplog,
                            monkeypatch=monkeypatch)
    assert result.returncode == 2 and "No study 'nope'" in result.stderr
    result = cli_in_process("list", "--root", str(tmp_path / "nowhere"), capfd=capfd, caplog=caplog,
                            monkeypatch=monkeypatch)
    assert result.returncode == 2 and "is not a folder" in result.stderr


def test_ctrl_c_stops_cleanly_and_resume_finishes(tmp_path):
    # MLflow off: Ctrl-C of a study tracked to MLflow, and its --resume, run in
    # tracking/test_tracking.py::test_ctrl_c_ends_the_mlflow_runs_killed_and_resume_finishes_them
    study_file = write_study(tmp_path / "s.toml", SLEEPING_STUDY.format(name="ctrlc") + NO_MLFLOW)
    driver = start_tune(study_file, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                        start_new_session=True)
    store = ResultStore(tmp_path / "out")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(store.trial_ids()) < 1:
        time.sleep(0.05)
    helpers = psutil.Process(driver.pid).children(recursive=True)
    os.killpg(driver.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the driver, forkserver and workers
    _, stderr = driver.communicate(timeout=60)
    assert driver.returncode == 130
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert _all_gone(helpers)
    resumed = cli("tune", str(study_file), "--resume", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert len(store.trial_ids()) == 8


def test_gpus_per_trial_on_a_machine_without_gpus_is_a_one_line_error(tmp_path, capfd, caplog, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU, even where the CI machine has one
    body = STEADY_STUDY.format(name="gpu", steps=10) + "\n[execution]\ngpus_per_trial = 1\n"
    # the machine's GPUs are looked for in a real process; a negative count is refused as the file is read
    _assert_one_line_error(cli("tune", str(write_study(tmp_path / "s.toml", body))), "gpus_per_trial", tmp_path / "out")
    body = STEADY_STUDY.format(name="gpu", steps=10) + "\n[execution]\ngpus_per_trial = -1\n"
    result = cli_in_process("tune", str(write_study(tmp_path / "s.toml", body)), capfd=capfd, caplog=caplog,
                            monkeypatch=monkeypatch)
    _assert_one_line_error(result, "gpus_per_trial", tmp_path / "out")


def test_a_study_whose_trials_report_no_objective_says_so_not_that_the_budget_was_missed(tmp_path):
    body = STEADY_STUDY.format(name="silent", steps=10).replace("0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7", "0.1")
    done = cli("tune", str(write_study(tmp_path / "s.toml", body + NO_MLFLOW)), "--no-progress")  # 10 steps, no window
    assert done.returncode == 0, done.stderr
    assert "steady: no configuration reported val_loss, the objective (trial.report(val_loss=...))" in done.stdout
    assert "met the budget" not in done.stdout


def test_cli_overrides_are_validated_and_resume_with_fresh_is_refused(tmp_path, capfd, caplog, monkeypatch):
    study_file = write_study(tmp_path / "s.toml", STEADY_STUDY.format(name="flags", steps=10))
    fixtures = {"capfd": capfd, "caplog": caplog, "monkeypatch": monkeypatch}
    _assert_one_line_error(cli_in_process("tune", str(study_file), "--workers", "0", **fixtures), "'workers'",
                           tmp_path / "out")
    _assert_one_line_error(cli_in_process("tune", str(study_file), "--resume", "--fresh", **fixtures), "not both",
                           tmp_path / "out")
    (tmp_path / "taken").write_text("a file, not a folder")
    # found before the workers of a user's training function start: no process is left behind
    _assert_one_line_error(cli_in_process("tune", str(study_file), "--directory", str(tmp_path / "taken"),
                                          **fixtures), "is a file", tmp_path / "out")


@pytest.fixture(scope="module")
def healthy_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """A study finished by ``frugalml tune`` (its file and its ``out`` folder) and that run's output;
    each test copies the folder, so one run serves them all."""
    folder = tmp_path_factory.mktemp("healthy")
    # MLflow off: no test here looks at it; --fresh clears a study folder that holds an MLflow store in
    # test_hostile_inputs.py::test_fresh_clears_the_marked_study_folder_it_created
    body = STEADY_STUDY.format(name="damaged", steps=10).replace("eval_every = 50", "eval_every = 10") + NO_MLFLOW
    study_file = write_study(folder / "s.toml", body)  # evaluated at its last step: a best configuration to show
    done = cli("tune", str(study_file), "--no-progress")
    assert done.returncode == 0, done.stderr
    for leftover in (folder / "out").glob("frugalml.db-*"):  # WAL files of the healthy store
        leftover.unlink()
    return folder, done


@pytest.mark.parametrize("damage", ["not sqlite", "foreign sqlite", "truncated"])
def test_a_damaged_results_store_is_a_one_line_error_and_fresh_starts_over(healthy_study, tmp_path, damage):
    shutil.copytree(healthy_study[0], tmp_path, dirs_exist_ok=True)
    study_file = tmp_path / "s.toml"
    db = tmp_path / "out" / "frugalml.db"
    if damage == "foreign sqlite":
        db.unlink()
        with closing(sqlite3.connect(db)) as other, other:
            other.execute("CREATE TABLE notes (text TEXT)")
    else:
        db.write_bytes({"not sqlite": b"hello\n", "truncated": db.read_bytes()[:3000]}[damage])
    for args in (("show", str(tmp_path / "out")), ("tune", str(study_file), "--resume", "--no-progress")):
        result = cli(*args)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "not a readable frugalml results store" in result.stderr
    if damage == "truncated":  # the way out, shown once: --fresh starts the study over
        assert cli("tune", str(study_file), "--fresh", "--no-progress").returncode == 0
        assert len(ResultStore(tmp_path / "out").trial_ids()) == 8


def test_command_line_mistakes_are_one_line_errors(capfd, caplog, monkeypatch):
    for args, needle in ((("tune", "--workers", "abc", "s.toml"), "invalid int value"),
                         (("nonsense",), "invalid choice"), (("show",), "required: study")):
        # one real process; argparse refuses the others the same way, in main
        result = cli(*args) if args == ("nonsense",) else cli_in_process(*args, capfd=capfd, caplog=caplog,
                                                                          monkeypatch=monkeypatch)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert needle in result.stderr and "--help" in result.stderr


OWN_TRAIN = """def train(trial):
    for step in range(1, 21):
        if trial.step(loss=1.0 / step, n_samples=10):
            trial.report(val_loss=1.0 / step + trial.params["offset"])
"""


def test_a_training_module_beside_the_study_file_is_found_and_a_wrong_name_says_what_is_there(tmp_path):
    """``train = "mytrain:train"`` next to the study file, run from another folder, with nothing on PYTHONPATH
    for it: the driver and the workers find it; a misspelt function lists the module's, a file path is
    answered with the module name."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "mytrain.py").write_text(OWN_TRAIN)
    body = ('[study]\nname = "own"\n[[workloads]]\ntrain = "{train}"\neval_every = 10\n'
            '[search]\nspace = {{ offset = [0.0, 0.1] }}\n[tracking]\nmlflow_uri = "none"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    study = write_study(project / "study.toml", body.format(train="mytrain:train"))
    result = cli("tune", str(study), "--no-progress", cwd=elsewhere)
    assert result.returncode == 0 and result.stdout.count(": completed") == 2, result.stdout + result.stderr
    for train, said in [("mytrain:trian", "module 'mytrain' has no 'trian'; its functions: train."),
                        ("project/mytrain.py:train", "names a file; name its module: 'mytrain:train'"),
                        ("nosuch:train", "beside the study file, in the working folder, installed, or on PYTHONPATH")]:
        write_study(project / "study.toml", body.format(train=train))
        result = cli("tune", str(project / "study.toml"), "--no-progress", "--fresh", cwd=elsewhere)
        assert result.returncode == 2 and said in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_a_study_named_in_decomposed_unicode_is_found_and_a_folder_that_is_no_study_says_so(
        tmp_path, capfd, caplog, monkeypatch):
    import unicodedata

    from frugalml import Search, Study, Workload, tune
    from frugalml.executors import InProcessExecutor

    def quick(trial):
        for step in range(1, 11):
            if trial.step(loss=1.0 / step):
                trial.report(val_loss=1.0 / step)

    name = unicodedata.normalize("NFC", "études ü")
    tune(Study(name=name, workloads=[Workload(train=quick, eval_every=5)], search=Search(space={"x": [1]}),
               directory=str(tmp_path / "studies" / name), mlflow_uri=None), executor=InProcessExecutor)
    typed = unicodedata.normalize("NFD", name)  # as macOS input gives it: looks the same, other code points
    assert typed != name
    shown = cli_in_process("show", typed, "--root", str(tmp_path / "studies"), "--format", "csv", capfd=capfd,
                           caplog=caplog, monkeypatch=monkeypatch)
    assert shown.returncode == 0 and "x=1" in shown.stdout, shown.stderr
    (tmp_path / "plain").mkdir()
    plain = cli_in_process("show", str(tmp_path / "plain"), "--root", str(tmp_path / "studies"), capfd=capfd,
                           caplog=caplog, monkeypatch=monkeypatch)
    assert plain.returncode == 2 and "is a folder but holds no study (no frugalml.db)" in plain.stderr


def test_the_summary_names_a_budget_by_its_key_however_its_trials_were_ruled_out():
    from frugalml.cli._tune import _none_met
    from frugalml.records import StopInfo, TrialRecord, TrialStatus

    def ruled_out(number: int, rule: str, value: float) -> TrialRecord:
        stop = StopInfo(rule, "system", 0, value, 1e-06, "skipped: predict latency")
        return TrialRecord(f"w/{number}/r0", number, "w", str(number), 0, {}, TrialStatus.SKIPPED, stop=stop)

    line = _none_met([ruled_out(0, "skipped_max_predict_ms", 0.2393), ruled_out(1, "skipped_max_predict_ms", 2.8)])
    assert line == "no configuration met the budget: max_predict_ms = 1e-06 skipped 2 of 2 (the lowest reading 0.2393)"
