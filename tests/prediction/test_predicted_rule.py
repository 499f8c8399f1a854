"""The `predicted` stopping rule: earlier than the hard budget when a trial will break it,
never when it stays under."""

from __future__ import annotations

import pytest

import trainers
from frugalml import ConfigError, Search, Study, TrialStatus, Window, Workload, tune
from frugalml.stopping import PredictedBudget, TrialView, rules_from_config
from prediction import cost_trainers


def windows(step_ms: float, memory: list[float], every: int = 10) -> tuple[Window, ...]:
    return tuple(
        Window(every * i, {"mean_step_ms": step_ms, "memory_mb": m, "wall_s": every * i * step_ms / 1000})
        for i, m in enumerate(memory, 1)
    )


def test_the_rule_reads_a_view_and_names_the_budget_it_predicts_broken():
    rule = PredictedBudget(max_trial_seconds=10, max_memory_mb=500, confidence=0.9, min_windows=2)
    slow = TrialView("t", windows=windows(50.0, [100, 100]), steps_planned=1000, steps_done=20)
    stop = rule.check(slow)  # 1000 steps at 50 ms: 50 s > 10 s
    assert (stop.rule, stop.kind, stop.threshold) == ("predicted_max_trial_seconds", "system", 10)
    assert stop.value > 10 and "predicted trial time" in stop.message
    assert rule.check(TrialView("t", windows=windows(5.0, [100, 100]), steps_planned=1000)) is None  # 5 s
    assert rule.check(TrialView("t", windows=windows(50.0, [100]), steps_planned=1000)) is None  # 1 window
    assert rule.check(TrialView("t", windows=windows(50.0, [100] * 3), steps_planned=30, steps_done=30)) is None


def test_a_running_total_such_as_joules_is_predicted_at_its_end_not_as_a_peak():
    rule = PredictedBudget(max_trial_joules=100, confidence=0.9, min_windows=2)
    # 10 J per 10-step window, 200 steps planned: ~200 J at the end, though 20 J so far
    spent = tuple(Window(10 * i, {"energy_j": 10.0 * i, "wall_s": 0.1 * i}) for i in (1, 2))
    stop = rule.check(TrialView("t", windows=spent, steps_planned=200, steps_done=20))
    assert stop.rule == "predicted_max_trial_joules" and 100 < stop.value < 200
    assert "predicted total trial energy 200 J" in stop.message
    assert rule.check(TrialView("t", windows=spent, steps_planned=60, steps_done=20)) is None  # ~60 J
    assert rule.check(TrialView("t", windows=spent, steps_done=20)) is None  # no plan: no end to predict


def test_settings_come_from_the_study_file_tables():
    rules = rules_from_config({"max_memory_mb": 400}, {"predicted": {"confidence": 0.95, "min_windows": 3}})
    predicted = rules[-1]
    assert isinstance(predicted, PredictedBudget)
    assert (predicted.budgets, predicted.confidence, predicted.min_windows) == ({"max_memory_mb": 400}, 0.95, 3)
    assert [type(r) for r in rules_from_config({"max_memory_mb": 400}, {"predicted": False})] == [type(rules[0])]
    with pytest.raises(ConfigError, match="needs a budget"):
        rules_from_config({"max_study_cpu_seconds": 10}, {"predicted": True})
    with pytest.raises(ConfigError, match="confidence"):
        rules_from_config({"max_memory_mb": 400}, {"predicted": {"confidence": 1.0}})
    with pytest.raises(ConfigError, match="predicted"):
        rules_from_config({"max_memory_mb": 400}, {"predicted": {"confidance": 0.9}})


def study(tmp_path, name, workloads, budget, predicted=True):
    return Study(name=name, workloads=workloads, search=Search(space={"offset": [0.0]}), budget=budget,
                 stopping={"predicted": {"confidence": 0.9, "min_windows": 2}} if predicted else {},
                 workers=2, directory=str(tmp_path / name), mlflow_uri=None)


def test_trial_time_predicted_over_budget_stops_long_before_the_hard_rule(tmp_path):
    # 400 steps that sleep 5 ms: over 2 s against a 1 s budget, on a busy machine too (the hard rule's
    # step does not hang on a CPU share); 40 steps of 1 ms fit, even with a small share of a core.
    long = Workload(train=trainers.allocate, train_kwargs={"megabytes": 0, "steps": 400, "sleep_s": 0.005},
                    eval_every=20, max_steps=400, name="long")
    short = Workload(train=trainers.steady, train_kwargs={"steps": 40, "step_s": 0.001}, eval_every=20,
                     max_steps=40, name="short")
    predicted = tune(study(tmp_path, "predicted", [long, short], {"max_trial_seconds": 1.0}))
    by_name = {r.workload: r for r in predicted.records}
    assert by_name["short"].status is TrialStatus.COMPLETED and by_name["short"].stop is None
    stop = by_name["long"].stop
    assert stop.rule == "predicted_max_trial_seconds" and stop.kind == "system"
    hard = tune(study(tmp_path, "hard", [long], {"max_trial_seconds": 1.0}, predicted=False)).records[0]
    assert hard.stop.rule == "max_trial_seconds"
    assert stop.step < hard.stop.step / 2
    assert by_name["long"].cpu_s_saved > hard.cpu_s_saved


def test_a_memory_leak_is_stopped_before_it_reaches_the_budget(tmp_path):
    leak = Workload(train=cost_trainers.leak, train_kwargs={"steps": 400, "mb_per_step": 0.5}, eval_every=10,
                    max_steps=400, name="leak")
    record = tune(study(tmp_path, "leak", [leak], {"max_memory_mb": 1000.0})).records[0]
    base = record.windows[0].values["memory_mb"]
    budget = base + 120  # reached after ~240 steps of 0.5 MB
    record = tune(study(tmp_path, "leak-budget", [leak], {"max_memory_mb": budget})).records[0]
    assert record.stop.rule == "predicted_max_memory_mb"
    assert record.stop.step < 230  # the hard rule would fire at ~240 (~200 on a quiet machine)
    assert record.peak("memory_mb") < budget
