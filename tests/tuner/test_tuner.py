"""Whole studies through the public API: search, repeats, failures, MLflow."""

from __future__ import annotations

import pytest

import trainers
from frugalml import ResultStore, Search, Study, TrialStatus, Workload, tune
from frugalml.tracking import default_uri
from helpers import mlflow_trial_runs


def test_a_crashing_and_a_segfaulting_trial_do_not_end_the_study(study_dir):
    study = Study(
        name="failures",
        workloads=[
            Workload(train=trainers.crash, name="crash"),
            Workload(train=trainers.segfault, name="segv"),
            Workload(train=trainers.steady, train_kwargs={"steps": 50}, eval_every=25, name="ok"),
        ],
        search=Search(space={"offset": [0.0, 0.5]}),
        workers=2, directory=str(study_dir), mlflow_uri=None,
    )
    result = tune(study)
    status = {r.trial_id: r.status for r in result.records}
    assert len(status) == 6
    assert [status[f"ok/offset={o}/r0"] for o in (0.0, 0.5)] == [TrialStatus.COMPLETED] * 2
    assert {r.status for r in result.records if r.workload != "ok"} == {TrialStatus.FAILED}
    assert result.best_feasible().params == {"offset": 0.0}


def test_repeats_tpe_and_mlflow_match_the_local_store(study_dir):
    study = Study(
        name="tpe",
        workloads=[Workload(train=trainers.steady, train_kwargs={"steps": 60, "step_s": 0.0005}, eval_every=20)],
        search=Search(method="tpe", space={"offset": {"low": 0.0, "high": 1.0}}, n_trials=4, seed=1),
        repeats=2, workers=2, directory=str(study_dir),
    )
    result = tune(study)
    assert len(result.records) == 8
    by_config = {}
    for record in result.records:
        by_config.setdefault(record.config_id, []).append(record.repeat)
    assert sorted(map(sorted, by_config.values())) == [[0, 1]] * 4
    stored = {r.trial_id: r for r in ResultStore(study_dir).trials()}
    runs = mlflow_trial_runs(default_uri(study_dir), "tpe")
    assert set(runs) == set(stored)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=default_uri(study_dir))
    for trial_id, record in stored.items():
        run = runs[trial_id]
        assert run.data.tags["status"] == record.status.value
        assert float(run.data.params["offset"]) == record.params["offset"]
        history = client.get_metric_history(run.info.run_id, "train_loss_step")
        assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(list(record.train_loss))
        val = client.get_metric_history(run.info.run_id, "val_loss")
        assert [(m.step, m.value) for m in sorted(val, key=lambda m: m.step)] == [
            (w.step, pytest.approx(w.values["val_loss"])) for w in record.windows
        ]
        mem = client.get_metric_history(run.info.run_id, "system/memory_mb")
        assert len(mem) == len(record.windows)


def test_study_compute_budget_stops_the_study(study_dir):
    study = Study(
        name="compute",
        workloads=[Workload(train=trainers.steady, train_kwargs={"steps": 2000, "step_s": 0.002})],
        search=Search(space={"offset": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]}),
        budget={"max_study_cpu_seconds": 3.0}, workers=1, directory=str(study_dir), mlflow_uri=None,
    )
    result = tune(study)
    assert len(result.records) < 6
    assert any(r.stop is not None and r.stop.rule == "max_study_cpu_seconds" for r in result.records)
    assert result.compute().used_cpu_s < 6.0


def test_patience_stops_a_flat_trial_but_keeps_it_feasible(study_dir):
    study = Study(
        name="patience",
        workloads=[Workload(train=trainers.allocate, train_kwargs={"megabytes": 1, "steps": 400, "sleep_s": 0.02},
                            eval_every=20, max_steps=400)],  # 20 ms steps: the stop lands within 200 ms of step 80
        search=Search(space={"x": [1]}), stopping={"patience": 3}, directory=str(study_dir), mlflow_uri=None,
    )
    (record,) = tune(study).records
    assert record.status is TrialStatus.STOPPED and record.stop.rule == "patience"
    assert record.feasible and 80 <= record.stop.step <= 90 and 80 <= record.steps_done <= 90
    assert record.steps_saved == 400 - record.steps_done


def test_mlflow_gets_artifacts_in_the_study_system_metrics_apart_and_the_study_on_the_parent_run(study_dir):
    from mlflow.tracking import MlflowClient

    from frugalml.tracking import default_uri

    from test_tuner_unit import inline, study

    result = tune(study(study_dir, mlflow_uri="default", budget={"max_memory_mb": 200}, repeats=2), executor=inline)
    client = MlflowClient(tracking_uri=default_uri(study_dir))
    experiment = client.get_experiment_by_name("unit")
    assert experiment.artifact_location == (study_dir / "mlartifacts").resolve().as_uri()
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parent = next(r for r in runs if "frugalml.study" in r.data.tags)
    trials = [r for r in runs if "frugalml.trial_id" in r.data.tags]
    assert len(trials) == len(result.records) == 16
    assert parent.data.params["budget/max_memory_mb"] == "200" and parent.data.params["repeats"] == "2"
    best = result.best_feasible()
    assert parent.data.tags["best/costly"] == best.config_id
    assert parent.data.metrics["best/costly/val_loss"] == pytest.approx(best.mean["val_loss"])
    assert parent.data.metrics["study/cpu_s_saved"] == pytest.approx(result.compute().saved_cpu_s)
    keys = {frozenset(k for k in r.data.metrics if k.startswith("trial/")) for r in trials}
    assert len(keys) == 1 and {"trial/cpu_s", "trial/wall_s", "trial/peak_memory_mb"} <= next(iter(keys))
    for run in trials:
        assert "system/memory_mb" in run.data.metrics and "system/mean_step_ms" in run.data.metrics
        assert "memory_mb" not in run.data.metrics and "val_loss" in run.data.metrics


def test_a_resume_with_every_trial_recorded_starts_no_worker_and_one_with_a_trial_left_does(study_dir, monkeypatch,
                                                                                            caplog):
    """The forkserver imports the ML stack (torch, for a network: seconds): only for trials to run. A
    resume of an edited search says that it runs what the edit adds."""
    import frugalml.tuner._tuner as tuner_module

    started = []
    real = tuner_module.start_workers_early
    monkeypatch.setattr(tuner_module, "start_workers_early", lambda study: (started.append(study.name), real(study)))

    def study(offsets: list[float]) -> Study:
        return Study(name="resumed", workloads=[Workload(train=trainers.steady, train_kwargs={"steps": 4})],
                     search=Search(space={"offset": offsets}), repeats=2, directory=str(study_dir), mlflow_uri=None)

    first = tune(study([0.0, 0.1]))
    assert len(first.records) == 4 and started == ["resumed"]
    again = tune(study([0.0, 0.1]), resume=True)
    assert [r.trial_id for r in again.records] == [r.trial_id for r in first.records] and started == ["resumed"]
    assert "differs from" not in caplog.text
    more = tune(study([0.0, 0.1, 0.2]), resume=True)  # a value added: two trials to run
    assert len(more.records) == 6 and started == ["resumed", "resumed"]
    assert "the study's [search] differs from the one it was created with (4 trials stored); --resume keeps" \
        in caplog.text
