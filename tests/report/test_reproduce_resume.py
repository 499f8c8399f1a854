"""``frugalml reproduce thesis --resume`` says per workload what is done and what is left,
and the rest runs. In-process (no worker processes, no datasets): about a second."""

from __future__ import annotations

import pytest

from frugalml import Search, Study, Workload
from frugalml.executors import InProcessExecutor
from frugalml.reproduce import resume_progress, summary_markdown
from frugalml.tuner import Tuner, tune


def steady(trial) -> None:
    for step in range(20):
        if trial.step(loss=1.0 / (1 + step), n_samples=trial.params["batch_size"]):
            trial.report(val_loss=1.0 / (1 + step), memory_mb=100.0)


def two_workloads(directory) -> Study:
    workloads = [Workload(train=steady, max_steps=20, eval_every=10, name=name) for name in ("first", "second")]
    return Study(name="resume", workloads=workloads, search=Search(space={"batch_size": [30, 300, 3000]}),
                 repeats=2, workers=1, directory=str(directory), mlflow_uri=None)


def test_resume_counts_done_and_left_per_workload_and_finishes_a_partial_one(study_dir):
    assert [(p.workload, p.done, p.left) for p in resume_progress(two_workloads(study_dir))] == [
        ("first", 0, 6), ("second", 0, 6)]
    ended = []

    def interrupt_after_eight(event, payload):
        if event == "end":
            ended.append(payload.trial_id)
            if len(ended) == 8:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Tuner(two_workloads(study_dir), progress=interrupt_after_eight, executor=InProcessExecutor).run()
    progress = resume_progress(two_workloads(study_dir))
    assert sum(p.done for p in progress) == 8 and all(p.planned == 6 for p in progress)
    assert any(0 < p.done < p.planned for p in progress)  # a partially finished workload
    assert str(progress[1]) == f"resume second: {progress[1].done}/6 trials done, {progress[1].left} left"
    tune(two_workloads(study_dir), resume=True, executor=InProcessExecutor)
    assert [(p.done, p.left) for p in resume_progress(two_workloads(study_dir))] == [(6, 0), (6, 0)]



def test_the_findings_give_the_trial_time_of_every_resumed_session_not_only_the_last():
    text = summary_markdown([], quick=False, seconds=150.0, machine="m", substitute_note=None, figures=[],
                            trials=720, trial_seconds=8.2 * 3600, workers=2)
    assert "Trial time: 8.2 h, the sum of the 720 stored trials' wall times" in text
    assert "about 4.1 h elapsed on 2 workers" in text and "This invocation: 2.5 min" in text


def test_fresh_clears_every_study_of_the_design_before_the_first_runs(tmp_path):
    """An interrupted fresh run left the previous run's later studies, which --resume took for its own. Only
    what frugalml wrote goes, and a study another process is running is refused before anything is cleared."""
    from frugalml.exceptions import StoreLockedError
    from frugalml.reproduce._run import _start_over
    from frugalml.store import ResultStore

    first, second = (two_workloads(tmp_path / name) for name in ("main", "budget"))
    tune(first, executor=InProcessExecutor)
    tune(second, executor=InProcessExecutor)
    (tmp_path / "mine.txt").write_text("kept")
    with ResultStore(second.path).run_lock(), pytest.raises(StoreLockedError):
        _start_over((first, second))
    assert ResultStore(first.path).exists  # refused whole: nothing was cleared
    _start_over((first, second))
    assert not ResultStore(first.path).exists and not ResultStore(second.path).exists
    assert (tmp_path / "mine.txt").read_text() == "kept"


def test_a_reproduce_mistake_is_the_one_line_printed(tmp_path, capfd, caplog, monkeypatch):
    """Before, the data note and the design line came first: three lines for one mistake."""
    from helpers import cli_in_process

    (tmp_path / "x.txt").write_text("")
    for args, said in [(["--out", str(tmp_path / "x.txt")], "x.txt is a file; --out needs a folder"),
                       (["--out", str(tmp_path / "rq"), "--resume", "--fresh"], "either --resume")]:
        result = cli_in_process("reproduce", "thesis", "--quick", *args, capfd=capfd, caplog=caplog,
                                monkeypatch=monkeypatch)
        assert result.returncode == 2 and result.stdout == "" and said in result.stderr, result.stdout
        assert result.stderr.count("\n") == 1, result.stderr
