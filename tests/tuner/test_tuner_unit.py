"""The tuner's scheduling, resume, repeats, skipping and compute accounting, in-process.

These run the real Tuner, results store and rules against the InProcessExecutor: no
worker processes, so the whole file takes about a second. The same behaviour across
real processes is covered in test_tuner.py, tests/prediction and tests/executors.
"""

from __future__ import annotations

import functools
import time

import pytest

from frugalml import ResultStore, Search, Study, TrialStatus, Workload
from frugalml.executors import InProcessExecutor
from frugalml.stopping import STUDY
from frugalml.tuner import Tuner, tune

CPU = [0.0]  # the CPU clock the in-process executor reads: each step charges a known cost


STEP_S = 0.001  # each step's wall time: the saving splits a window's CPU by wall-time share (accounting.step_cost)


def costly(trial, steps: int = 40, cpu_per_step: float = 0.1) -> None:
    """Memory grows with the batch (100 MB + 0.01 MB per row): a reported system figure. The
    steps take the wall time and the fake CPU; the report after them, next to none of either."""
    batch = trial.params["batch_size"]
    for step in range(steps):
        CPU[0] += cpu_per_step
        time.sleep(STEP_S)
        loss = 1.0 / (1 + step) + trial.params.get("offset", 0.0)
        if trial.step(loss=loss, n_samples=batch):
            trial.report(val_loss=loss, memory_mb=100.0 + 0.01 * batch)


def study(directory, **overrides) -> Study:
    args = dict(
        name="unit",
        workloads=[Workload(train=costly, max_steps=40, eval_every=10, name="costly")],
        search=Search(space={"batch_size": [30, 300, 3000, 30000], "offset": [0.0, 0.5]}),
        workers=2, directory=str(directory), mlflow_uri=None,
    )
    return Study(**{**args, **overrides})


inline = functools.partial(InProcessExecutor, cpu_clock=lambda: CPU[0])


def test_every_configuration_runs_each_repeat_once(study_dir):
    result = tune(study(study_dir, repeats=3), executor=inline)
    assert len(result.records) == 8 * 3
    ids = [r.trial_id for r in result.records]
    assert len(set(ids)) == len(ids)
    repeats: dict[str, list[int]] = {}
    for record in result.records:
        repeats.setdefault(record.config_id, []).append(record.repeat)
    assert all(sorted(r) == [0, 1, 2] for r in repeats.values())
    assert all(r.cpu_s == pytest.approx(4.0) for r in result.records)


def test_a_budget_stops_the_configurations_that_break_it(study_dir):
    result = tune(study(study_dir, budget={"max_memory_mb": 200}), executor=inline)
    stopped = [r for r in result.records if r.status is TrialStatus.STOPPED]
    assert {r.params["batch_size"] for r in stopped} == {30000}
    assert all(r.stop.rule == "max_memory_mb" and r.steps_done == 10 and r.steps_saved == 30 for r in stopped)
    assert all(r.cpu_s_saved == pytest.approx(3.0, rel=0.02) for r in stopped)
    assert result.best_feasible().params == {"batch_size": 30, "offset": 0.0}


SAMPLED = {"batch_size": [30, 300, 3000, 30000], "offset": {"low": 0.0, "high": 1.0}}


@pytest.mark.parametrize("search", [None, Search(method="random", space=SAMPLED, n_trials=8, seed=1),
                                    Search(method="tpe", space=SAMPLED, n_trials=8, seed=1)],
                         ids=["grid", "random", "tpe"])
def test_an_interrupted_study_resumes_without_losing_or_repeating_a_trial(study_dir, search):
    overrides = {"search": search} if search is not None else {}
    ended = []

    def interrupt_after_three(event, payload):
        if event == "end":
            ended.append(payload.trial_id)
            if len(ended) == 3:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Tuner(study(study_dir, **overrides), progress=interrupt_after_three, executor=inline).run()
    first = {r.trial_id: r.number for r in ResultStore(study_dir).trials()}
    assert set(first) == set(ended)
    result = tune(study(study_dir, **overrides), resume=True, executor=inline)
    numbers = {r.trial_id: r.number for r in result.records}
    assert len(result.records) == 8 and len(numbers) == 8
    assert {t: numbers[t] for t in first} == first  # stored trials kept, not re-run
    assert len(set(numbers.values())) == 8
    assert len({tuple(sorted(r.params.items())) for r in result.records}) == 8  # nor their configurations


def test_skipping_a_configuration_predicted_over_budget(study_dir):
    grid = Search(space={"batch_size": [30, 300, 1000, 3000, 30000, 100]})
    result = tune(study(study_dir, search=grid, budget={"max_memory_mb": 200}, prediction={"skip": True}, workers=1),
                  executor=inline)
    status = {r.params["batch_size"]: r.status for r in result.records}
    assert status[30000] is TrialStatus.SKIPPED
    skipped = next(r for r in result.records if r.status is TrialStatus.SKIPPED)
    assert skipped.stop.rule == "skipped_max_memory_mb" and skipped.info["prediction"]["low"] > 200
    assert skipped.cpu_s == 0 and skipped.steps_saved == 40
    assert all(s is TrialStatus.COMPLETED for b, s in status.items() if b != 30000)
    late = next(r for r in result.records if r.params["batch_size"] == 100)
    assert late.info["cost_prediction"]["peak_memory_mb"]["measured"] == pytest.approx(101.0)


def test_the_study_compute_budget_stops_the_study(study_dir):
    # 10.5, not 10: windows of 1 CPU-s summed from a shared float clock land on 10 +- 1e-13, either side
    result = tune(study(study_dir, workers=1, budget={"max_study_cpu_seconds": 10.5}), executor=inline)
    assert [r.status for r in result.records] == [TrialStatus.COMPLETED] * 2 + [TrialStatus.STOPPED]
    last = result.records[-1]
    assert last.stop.kind == STUDY and last.stop.rule == "max_study_cpu_seconds"
    assert sum(r.cpu_s for r in result.records) == pytest.approx(11.0)  # stopped at the first window over 10.5
    assert result.compute_budget_cpu_s == 10.5


def test_a_failing_trial_is_recorded_and_the_study_goes_on(study_dir):
    def sometimes_fails(trial, steps: int = 20) -> None:
        for step in range(steps):
            if trial.params["offset"] > 0 and step == 5:
                raise ValueError("diverged")
            trial.step(loss=1.0)

    result = tune(study(study_dir, workloads=[Workload(train=sometimes_fails, name="f", eval_every=5)],
                        search=Search(space={"offset": [0.0, 0.5, 0.0001]})), executor=inline)
    status = {r.params["offset"]: (r.status, r.error) for r in result.records}
    assert status[0.5] == (TrialStatus.FAILED, "ValueError: diverged")
    assert status[0.0][0] is TrialStatus.COMPLETED


def planned_by_the_trial(trial, steps: int = 40) -> None:
    trial.plan(steps)
    costly(trial, steps=steps)


def test_a_planned_length_from_the_trial_or_the_workload_counts_the_compute_a_stop_saved(study_dir):
    space = Search(space={"batch_size": [30, 30000]})
    for workload in (Workload(train=planned_by_the_trial, eval_every=10, name="w"),
                     Workload(train=costly, steps=40, eval_every=10, name="w")):
        result = tune(study(study_dir, workloads=[workload], search=space, budget={"max_memory_mb": 200}),
                      fresh=True, executor=inline)
        small, large = sorted(result.records, key=lambda r: r.params["batch_size"])
        assert small.steps_planned == 40 and small.status is TrialStatus.COMPLETED
        assert large.status is TrialStatus.STOPPED and (large.steps_done, large.steps_saved) == (10, 30)
        assert result.compute().saved_cpu_s == pytest.approx(3.0, rel=0.02)


def test_a_bad_planned_length_is_a_one_line_error(study_dir):
    from frugalml import ConfigError, FrugalError

    with pytest.raises(ConfigError, match="'steps'.*built-in"):
        Workload(dataset="diabetes", algorithm="svm", steps=10)
    with pytest.raises(ConfigError, match="workload 'steps' must be an int"):
        Workload(train=costly, steps=0)
    with pytest.raises(ConfigError, match="'eval_rows' samples a built-in workload's test split"):
        Workload(train=costly, eval_rows=100)
    with pytest.raises(ConfigError, match="workload 'eval_rows' must be an int"):
        Workload(dataset="diabetes", algorithm="svm", eval_rows=0)

    def plans_nonsense(trial):
        trial.plan(2.5)

    with pytest.raises(FrugalError, match=r"TrialUsageError: trial.plan\(total_steps\) needs an int"):
        tune(study(study_dir, workloads=[Workload(train=plans_nonsense, name="p")]), executor=inline)



def test_grid_points_run_exactly_those_configurations_in_their_order(study_dir):
    from frugalml.exceptions import ConfigError

    points = [{"batch_size": 3000, "offset": 0.5}, {"batch_size": 30, "offset": 0.0}]
    result = tune(study(study_dir, search=Search(space={"batch_size": [30, 3000], "offset": [0.0, 0.5]},
                                                 points=points)), executor=inline)
    assert [dict(r.params) for r in result.records] == points
    for bad, message in (({"points": [{"width": 3}]}, "the space does not have"),
                         ({"points": []}, "non-empty list"),
                         ({"points": points, "method": "random", "n_trials": 2}, "use it with")):
        with pytest.raises(ConfigError, match=message):
            Search(space={"batch_size": [30, 3000], "offset": [0.0, 0.5]}, **bad)


def test_in_process_trials_record_estimated_joules_and_energy_budgets_act_on_them(study_dir, recwarn):
    # no RAPL (an empty powercap folder): the estimate is the trial's CPU-seconds x 10 W per core (4 CPU-s, 40 J a trial)
    run = functools.partial(InProcessExecutor, cpu_clock=lambda: CPU[0], watts_per_core=10.0,
                            powercap_root=study_dir / "no-rapl")
    with pytest.warns(UserWarning, match=r"max_trial_joules will act on estimated joules .* 10 W per core"):
        result = tune(study(study_dir / "trial", workers=1, budget={"max_trial_joules": 25}), executor=run)
    assert all(r.stop.rule == "max_trial_joules" and r.steps_done == 30 for r in result.records)  # 30 J > 25 J
    assert all(r.energy_j == pytest.approx(30.0) and r.energy_source == "estimate" for r in result.records)
    assert all(r.windows[0].values["energy_j"] == pytest.approx(10.0) for r in result.records)
    # 80 J finished + 10 J a window: over 105 J in the third window (a limit off the 10 J grid:
    # the CPU clock's sums of 0.1 are not exact)
    result = tune(study(study_dir / "study", workers=1, budget={"max_study_joules": 105}), executor=run)
    assert [r.status for r in result.records] == [TrialStatus.COMPLETED] * 2 + [TrialStatus.STOPPED]
    assert result.records[-1].stop.rule == "max_study_joules" and result.records[-1].steps_done == 30


def refuses_x(trial, bad: float = 1.0) -> None:
    """Trains, unless ``params['x'] == bad``: then a user error every such trial would repeat."""
    from frugalml.exceptions import ConfigError

    if trial.params["x"] == bad:
        raise ConfigError(f"x = {bad} is not allowed here")
    for step in range(4):
        trial.step(loss=1.0 / (1 + step))


def _refusing(directory, xs, **overrides) -> Study:
    return Study(name="refuses", workloads=[Workload(train=refuses_x, eval_every=2, name="w")],
                 search=Search(space={"x": xs}), workers=1, directory=str(directory), **overrides)


def test_a_mistake_the_first_trial_shows_leaves_no_folder_and_the_same_path_works_after(tmp_path):
    from frugalml.exceptions import TrialUsageError

    new = tmp_path / "new" / "study"
    with pytest.raises(TrialUsageError, match="x = 1.0 is not allowed"):
        tune(_refusing(new, [1.0]), executor=InProcessExecutor)  # MLflow's default store: in the folder
    assert not (tmp_path / "new").exists()
    fixed = tune(_refusing(new, [0.0]), executor=InProcessExecutor)  # MLflow's cached engine was let go
    assert len(fixed.records) == 1 and len(ResultStore(new).mlflow_runs()) == 1
    assert all(run is not None for run in ResultStore(new).mlflow_runs().values())


def test_a_folder_that_was_there_or_holds_a_finished_trial_stays(tmp_path):
    from frugalml.exceptions import TrialUsageError

    mine = tmp_path / "mine"
    mine.mkdir()
    with pytest.raises(TrialUsageError):
        tune(_refusing(mine, [1.0], mlflow_uri=None), executor=InProcessExecutor)
    assert mine.is_dir()  # not frugalml's to remove: it was there before
    finished = tmp_path / "finished"
    with pytest.raises(TrialUsageError):  # workers=1, grid order: x = 0 finishes before x = 1 fails
        tune(_refusing(finished, [0.0, 1.0], mlflow_uri=None), executor=InProcessExecutor)
    assert [r.params["x"] for r in ResultStore(finished).trials()] == [0.0]
