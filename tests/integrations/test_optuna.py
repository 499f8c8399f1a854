"""Optuna users: a plain objective pruned by frugalml budgets, across processes sharing sqlite."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from frugalml import ConfigError
from frugalml.integrations.optuna import ATTR, STOP_ATTR, SystemBudgetPruner, SystemMetrics

HERE = Path(__file__).resolve().parent


def test_a_plain_objective_is_pruned_for_memory_by_processes_sharing_a_sqlite_study(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(study_name="shared", storage=storage)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    workers = [
        subprocess.Popen([sys.executable, str(HERE / "objectives.py"), storage, "shared", megabytes], env=env,
                         stderr=subprocess.PIPE, text=True)
        for megabytes in ("20,700", "30,800")
    ]
    for worker in workers:
        assert worker.wait(timeout=120) == 0, worker.stderr.read()

    trials = {t.params["megabytes"]: t for t in optuna.load_study(study_name="shared", storage=storage).trials}
    assert sorted(trials) == [20, 30, 700, 800]
    for megabytes, trial in trials.items():
        metrics = trial.user_attrs[ATTR]  # written by the worker process, read back from sqlite
        if megabytes > 400:
            assert trial.state is optuna.trial.TrialState.PRUNED
            assert trial.user_attrs[STOP_ATTR]["rule"] == "max_memory_mb"
            assert metrics["memory_mb"] > 400 and metrics["step"] == 2 and len(trial.intermediate_values) == 3
        else:
            assert trial.state is optuna.trial.TrialState.COMPLETE and STOP_ATTR not in trial.user_attrs
            assert metrics["memory_mb"] < 400 and metrics["step"] == 7
        assert {"mean_step_ms", "cpu_percent", "cpu_s", "wall_s", "peak_memory_mb"} <= set(metrics)
    # A pruner in yet another process reaches the same verdict from the stored trials alone.
    pruner = SystemBudgetPruner(max_memory_mb=400)
    assert pruner.explain(None, trials[800]).rule == "max_memory_mb" and pruner.explain(None, trials[20]) is None


def test_system_metrics_prunes_slow_steps_and_defers_to_a_wrapped_pruner(tmp_path):
    pruner = SystemBudgetPruner({"max_mean_step_ms": 10}, wrapped=optuna.pruners.ThresholdPruner(upper=5.0))
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", pruner=pruner)

    def objective(trial):
        step_s, loss = trial.suggest_float("step_s", 0.001, 0.03), trial.suggest_float("loss", 1.0, 10.0)
        with SystemMetrics(trial, interval_s=0.05) as system:
            for epoch in range(3):
                for _ in range(10):
                    end = time.perf_counter() + step_s
                    while time.perf_counter() < end:
                        pass
                    system.step()
                system.report(loss, epoch)
                if system.should_prune():
                    raise optuna.TrialPruned()
        return loss

    for params in ({"step_s": 0.001, "loss": 1.0}, {"step_s": 0.03, "loss": 1.0}, {"step_s": 0.001, "loss": 9.0}):
        study.enqueue_trial(params)
    study.optimize(objective, n_trials=3)
    fast, slow, bad = study.trials
    assert fast.state is optuna.trial.TrialState.COMPLETE
    assert fast.user_attrs[ATTR]["mean_step_ms"] < 10
    assert slow.state is optuna.trial.TrialState.PRUNED and slow.user_attrs[STOP_ATTR]["rule"] == "max_mean_step_ms"
    assert slow.user_attrs[STOP_ATTR]["value"] >= 25  # ~30 ms steps
    assert bad.state is optuna.trial.TrialState.PRUNED and STOP_ATTR not in bad.user_attrs  # the wrapped pruner


class SlowStorage(optuna.storages.InMemoryStorage):
    """Storage whose writes take 100 ms, as a busy database's do."""

    def set_trial_user_attr(self, *args, **kwargs):
        time.sleep(0.1)
        super().set_trial_user_attr(*args, **kwargs)

    def set_trial_intermediate_value(self, *args, **kwargs):
        time.sleep(0.1)
        super().set_trial_intermediate_value(*args, **kwargs)


def test_time_spent_storing_a_report_is_not_billed_to_the_next_step():
    study = optuna.create_study(storage=SlowStorage())
    trial = study.ask()
    with SystemMetrics(trial, sidecar=False) as system:
        for epoch in range(3):
            for _ in range(10):
                time.sleep(0.002)
                system.step()
            system.report(1.0, epoch)
            system.should_prune()
    assert 1.5 < trial.user_attrs[ATTR]["mean_step_ms"] < 10  # 2 ms steps; 200 ms of writes left out


def test_bad_pruner_arguments_are_one_line_config_errors():
    with pytest.raises(ConfigError, match="needs at least one budget"):
        SystemBudgetPruner()
    with pytest.raises(ConfigError, match="must be an optuna pruner"):
        SystemBudgetPruner(max_memory_mb=400, wrapped="median")
    with pytest.raises(ConfigError, match="Unknown budget"):
        SystemBudgetPruner(max_ram=400)
    with pytest.raises(ConfigError, match="budget must be a dict"):
        SystemBudgetPruner(400)
