"""Optuna users: a plain objective pruned by frugalml budgets, across processes sharing sqlite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest

from frugalml import ConfigError
from frugalml.integrations.optuna import (
    ATTR, STOP_ATTR, BudgetGatedSampler, SystemBudgetPruner, SystemMetrics, budget_constraints, instrument,
)
from frugalml.monitors import ProcessTreeMonitor

HERE = Path(__file__).resolve().parent


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}


def test_a_plain_objective_is_pruned_for_memory_by_processes_sharing_a_sqlite_study(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(study_name="shared", storage=storage)
    workers = [
        subprocess.Popen([sys.executable, str(HERE / "objectives.py"), storage, "shared", megabytes], env=_env(),
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
    # 1-ms steps well inside 20 ms on a loaded machine too (a descheduled process stretches a step); 30-ms ones over
    pruner = SystemBudgetPruner({"max_mean_step_ms": 20}, wrapped=optuna.pruners.ThresholdPruner(upper=5.0))
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
    assert fast.user_attrs[ATTR]["mean_step_ms"] < 20
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
    assert 1.5 < trial.user_attrs[ATTR]["mean_step_ms"] < 15  # 2 ms steps; the writes would add 20 ms a step


def _tpe_study(arm: str, seed: int = 0) -> tuple[float, list[dict]]:
    """The budget and the trials of ``objectives.run_tpe`` (a fresh process per arm)."""
    lines = subprocess.run([sys.executable, str(HERE / "objectives.py"), "tpe", arm, str(seed)], env=_env(),
                           check=True, timeout=120, capture_output=True, text=True).stdout.splitlines()
    return json.loads(lines[0])["max_memory_mb"], [json.loads(line) for line in lines[1:]]


def _rule(trial: dict) -> str:
    return trial["user_attrs"].get(STOP_ATTR, {}).get("rule", "")


def _repeats_of_known_breakers(trials: list[dict]) -> list[dict]:
    """Trials that ran although a smaller or equal size had already been pruned for memory."""
    smallest_broken, repeats = None, []
    for trial in trials:
        megabytes = trial["params"]["megabytes"]
        if smallest_broken is not None and megabytes >= smallest_broken:
            repeats.append(trial)
        if _rule(trial) == "max_memory_mb":
            smallest_broken = min(megabytes, smallest_broken or megabytes)
    return repeats


def test_tpe_stops_proposing_over_budget_configurations_once_one_was_pruned_for_memory():
    studies = {arm: _tpe_study(arm) for arm in ("plain", "gated")}
    ran = {arm: [t for t in trials if not _rule(t).startswith("skipped_")] for arm, (_, trials) in studies.items()}
    pruned = {arm: [t for t in trials if _rule(t) == "max_memory_mb"] for arm, trials in ran.items()}
    repeats = {arm: _repeats_of_known_breakers(trials) for arm, trials in ran.items()}
    print("\nover-budget trials after the first memory prune: "
          + ", ".join(f"{arm} {len(p) - 1} ({len(repeats[arm])} at or above a pruned size)" for arm, p in pruned.items()))
    # The prune is recorded where Optuna's samplers read constraints (TPE reads them) ...
    limit, first = studies["plain"][0], pruned["plain"][0]
    assert first["constraints"]["max_memory_mb"] == pytest.approx(first["user_attrs"][STOP_ATTR]["value"] / limit - 1)
    # ... yet TPE keeps proposing sizes at or above one it has seen pruned for memory.
    assert len(pruned["plain"]) - 1 >= 5 and len(repeats["plain"]) >= 3
    # Gated, none of those runs; the over-budget trials left probe the budget's edge, below every pruned size.
    assert repeats["gated"] == [] and len(pruned["gated"]) - 1 <= 2
    assert len(ran["gated"]) == 30
    skipped = [t for t in studies["gated"][1] if _rule(t).startswith("skipped_")]
    assert len(skipped) >= 5 and all(t["state"] == "PRUNED" and t["constraints"]["max_memory_mb"] > 0
                                     for t in skipped)  # recorded, never run, learnt from
    # Not by giving up on the good region: as good a configuration, just under the budget.
    best = {arm: min(t["value"] for t in trials if t["state"] == "COMPLETE") for arm, trials in ran.items()}
    assert best["gated"] <= best["plain"] + 0.02


class CountingStorage(optuna.storages.InMemoryStorage):
    """Storage that counts the user-attribute writes."""

    writes = 0

    def set_trial_user_attr(self, *args, **kwargs):
        self.writes += 1
        super().set_trial_user_attr(*args, **kwargs)


def test_reports_are_kept_in_memory_and_stored_every_tenth_report_on_prune_and_at_the_end():
    @instrument(sidecar=False)
    def objective(trial):
        megabytes = trial.suggest_int("megabytes", 0, 300)
        held = []
        for step in range(50):
            if step == 3:
                held.append(np.ones(max(megabytes, 1) * 2**20 // 8))
            trial.report(1.0, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return 1.0

    storage = CountingStorage()
    limit = ProcessTreeMonitor(os.getpid()).sample()["memory_mb"] + 150
    study = optuna.create_study(storage=storage, pruner=SystemBudgetPruner(max_memory_mb=limit))
    study.enqueue_trial({"megabytes": 300})
    study.enqueue_trial({"megabytes": 0})
    study.optimize(objective, n_trials=2)
    pruned, complete = study.trials
    assert complete.state is optuna.trial.TrialState.COMPLETE and complete.user_attrs[ATTR]["step"] == 49
    assert complete.user_attrs[ATTR]["peak_memory_mb"] < limit - 100  # the pruned trial's 300 MB were collected
    # The pruner saw step 3's memory in this process's memory, not the storage's (last stored: none yet).
    assert pruned.state is optuna.trial.TrialState.PRUNED and len(pruned.intermediate_values) == 4
    assert pruned.user_attrs[ATTR]["step"] == 3 and pruned.user_attrs[STOP_ATTR]["rule"] == "max_memory_mb"
    # 54 reports, 7 writes: 2 for the pruned trial (metrics, stop), 5 for the completed one (every 10th)
    assert storage.writes == 7
    assert budget_constraints(pruned)[0] == pytest.approx(pruned.user_attrs[STOP_ATTR]["value"] / limit - 1)
    assert budget_constraints(complete) == (0.0,)


def test_bad_pruner_arguments_are_one_line_config_errors():
    with pytest.raises(ConfigError, match="needs at least one budget"):
        SystemBudgetPruner()
    with pytest.raises(ConfigError, match="must be an optuna pruner"):
        SystemBudgetPruner(max_memory_mb=400, wrapped="median")
    with pytest.raises(ConfigError, match="Unknown budget"):
        SystemBudgetPruner(max_ram=400)
    with pytest.raises(ConfigError, match="budget must be a dict"):
        SystemBudgetPruner(400)
    with pytest.raises(ConfigError, match="does not measure joules, so 'max_study_joules' would never stop anything"):
        SystemBudgetPruner(max_study_joules=5000)
    with pytest.raises(ConfigError, match="'flush_every' parameter of SystemMetrics must be an int"):
        SystemMetrics(optuna.create_study().ask(), flush_every=0)
    with pytest.raises(ConfigError, match="'features' parameter of BudgetGatedSampler must be a non-empty list"):
        BudgetGatedSampler(features="batch_size")
    with pytest.raises(ConfigError, match="`sampler` must be an optuna sampler"):
        BudgetGatedSampler("tpe", features=["batch_size"])
    study = optuna.create_study(sampler=BudgetGatedSampler(features=["x"]))
    with pytest.raises(ConfigError, match="create the study with pruner=SystemBudgetPruner"):
        study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
