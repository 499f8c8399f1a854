"""Stopping rules on immutable trial snapshots."""

from __future__ import annotations

import math

import pytest

from frugalml import ConfigError
from frugalml.records import TrialRecord, TrialStatus, Window
from frugalml.stopping import (
    Divergence, MedianStopping, MemoryBudget, Patience, StepTimeBudget, StudyComputeBudget, TrialView,
    WallTimeBudget, as_rules, check_all, rules_from_config,
)


def view(**kwargs) -> TrialView:
    return TrialView(trial_id="t", **kwargs)


def windows(metric: str, values: list[float], every: int = 100) -> tuple[Window, ...]:
    return tuple(Window((i + 1) * every, {metric: v}) for i, v in enumerate(values))


def test_memory_budget_fires_only_above_the_limit():
    assert MemoryBudget(400).check(view(sample={"memory_mb": 399.0})) is None
    stop = MemoryBudget(400).check(view(sample={"memory_mb": 401.5}, steps_done=7))
    assert (stop.rule, stop.kind, stop.step, stop.value, stop.threshold) == ("max_memory_mb", "system", 7, 401.5, 400)


def test_step_time_budget_uses_windows_and_the_unfinished_window():
    rule = StepTimeBudget(10, warmup_windows=0)
    assert rule.check(view(windows=windows("mean_step_ms", [9.0]))) is None
    assert rule.check(view(windows=windows("mean_step_ms", [11.0]))).value == 11.0
    # 100-step windows: 0.6 s done + 0.5 s in one step > 10 ms * 100
    stop = rule.check(view(eval_every=100, window_train_s=0.6, step_in_progress_s=0.5))
    assert stop is not None and stop.value == pytest.approx(11.0)
    assert rule.check(view(eval_every=100, window_train_s=0.6, step_in_progress_s=0.3)) is None


def test_step_time_budget_gives_the_warm_up_window_twice_the_limit_by_default():
    rule = StepTimeBudget(10)
    slow_start = windows("mean_step_ms", [17.0])  # a network's first window: ~1.7x a steady one
    assert rule.check(view(windows=slow_start, steps_done=100, steps_planned=1000)) is None
    stop = rule.check(view(windows=windows("mean_step_ms", [21.0]), steps_done=100, steps_planned=1000))
    assert stop.value == 21.0 and stop.threshold == 10 and "2 × budget 10 ms" in stop.message
    # in the warm-up window, 1.5 s into its 100 steps is under 2 x 10 ms x 100; 2.1 s is over
    assert rule.check(view(eval_every=100, window_train_s=1.5, steps_planned=1000)) is None
    assert rule.check(view(eval_every=100, window_train_s=2.1, steps_planned=1000)).value == pytest.approx(21.0)
    # after it, the plain limit, for finished and unfinished windows
    assert rule.check(view(windows=windows("mean_step_ms", [17.0, 9.0]), steps_planned=1000)) is None
    assert rule.check(view(windows=windows("mean_step_ms", [9.0, 11.0]), steps_planned=1000)).value == 11.0
    stop = rule.check(view(windows=slow_start, eval_every=100, window_train_s=1.1, steps_planned=1000))
    assert stop is not None and stop.value == pytest.approx(11.0) and "allowance" not in stop.message


def test_a_trial_with_no_window_after_its_warm_up_is_held_to_the_limit():
    rule = StepTimeBudget(10)
    assert rule.check(view(windows=windows("mean_step_ms", [11.0]), steps_done=100, steps_planned=100)).value == 11.0
    stop = rule.check(view(eval_every=100, steps_planned=50, window_train_s=0.6))  # plans 50 steps: one window
    assert stop is not None and stop.value == pytest.approx(12.0)
    assert rule.within(windows("mean_step_ms", [19.0, 9.0, 8.0]), steps_planned=300)
    assert not rule.within(windows("mean_step_ms", [21.0, 9.0]), steps_planned=200)
    assert not rule.within(windows("mean_step_ms", [11.0]), steps_planned=100)  # its only window: no allowance
    assert rule.within(windows("mean_step_ms", [11.0]))  # no plan: check allowed it, as more could have come
    assert rule.within(windows("mean_step_ms", [9.0, math.nan]), steps_planned=200)  # NaN breaks nothing, as in check
    assert not StepTimeBudget(10, warmup_windows=0).within(windows("mean_step_ms", [17.0, 9.0]), steps_planned=200)
    assert repr(StepTimeBudget(10, warmup_allowance=3)) == "StepTimeBudget(max_mean_step_ms=10, warmup_windows=1, " \
                                                           "warmup_allowance=3.0)"


def test_step_time_warm_up_is_a_stopping_setting_with_a_one_line_error():
    [rule] = rules_from_config({"max_mean_step_ms": 50}, {"step_time_warmup_windows": 2})
    assert rule.warmup_windows == 2
    [memory] = rules_from_config({"max_memory_mb": 50}, {"step_time_warmup_windows": 0})
    assert not hasattr(memory, "warmup_windows")
    with pytest.raises(ConfigError, match=r"'step_time_warmup_windows' parameter of \[stopping\] must be an int "
                                          r"in the range \[0, inf\)\. Got -1 instead"):
        rules_from_config({}, {"step_time_warmup_windows": -1})
    with pytest.raises(ConfigError, match="warmup_windows"):
        StepTimeBudget(5, warmup_windows=1.5)
    with pytest.raises(ConfigError, match=r"'warmup_allowance' parameter of StepTimeBudget must be a float in the "
                                          r"range \[1, inf\)"):
        StepTimeBudget(5, warmup_allowance=0.5)


def test_wall_and_study_budgets():
    assert WallTimeBudget(5).check(view(wall_s=6)).rule == "max_trial_seconds"
    assert WallTimeBudget(5).check(view(wall_s=4)) is None
    stop = StudyComputeBudget(100).check(view(study_cpu_s=101))
    assert stop.kind == "study"


def test_patience_waits_for_stagnation():
    rule = Patience(2)
    assert rule.check(view(windows=windows("val_loss", [3, 2, 1]))) is None
    assert rule.check(view(windows=windows("val_loss", [3, 1, 1.5, 1.2]))).rule == "patience"


def test_median_stopping_compares_with_peers_at_the_same_step():
    peers = [
        TrialRecord(f"p{i}", i, "w", "c", 0, {}, TrialStatus.COMPLETED, windows=windows("val_loss", [v, v, v]))
        for i, v in enumerate([1.0, 2.0, 3.0])
    ]
    rule = MedianStopping(min_trials=3, warmup_windows=1)
    assert rule.check(view(windows=windows("val_loss", [5.0, 4.0]), peers=peers)).rule == "median"
    assert rule.check(view(windows=windows("val_loss", [5.0, 1.5]), peers=peers)) is None
    assert rule.check(view(windows=windows("val_loss", [5.0, 4.0]), peers=peers[:2])) is None


def test_divergence_on_nan_and_explosion():
    assert Divergence().check(view(windows=windows("train_loss", [1.0, math.nan]))).rule == "divergence"
    assert Divergence(factor=10).check(view(windows=windows("train_loss", [1.0, 11.0]))) is not None
    assert Divergence(factor=10).check(view(windows=windows("train_loss", [1.0, 9.0]))) is None


def test_system_budgets_are_checked_before_learning_rules():
    rules = [Patience(1), MemoryBudget(10)]
    stop = check_all(rules, view(windows=windows("val_loss", [1, 2]), sample={"memory_mb": 20}))
    assert stop.rule == "max_memory_mb"


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf, "400", True])
def test_impossible_budgets_are_rejected_in_one_line(bad):
    with pytest.raises(ConfigError) as error:
        MemoryBudget(bad)
    assert "max_mb" in str(error.value) and "\n" not in str(error.value)


def test_conversion_from_config_dicts_callables_and_lists():
    rules = rules_from_config({"max_memory_mb": 400, "max_mean_step_ms": 50}, {"patience": 5, "median": True})
    assert [r.name for r in rules] == ["max_memory_mb", "max_mean_step_ms", "patience", "median"]
    custom = as_rules([MemoryBudget(1), lambda v: "too many steps" if v.steps_done > 3 else None])
    assert custom[1].check(view(steps_done=4)).message == "too many steps"
    with pytest.raises(ConfigError, match="Unknown budget rule 'max_memroy_mb'"):
        rules_from_config({"max_memroy_mb": 4}, {})
    with pytest.raises(ConfigError, match="Unknown stopping rule"):
        rules_from_config({}, {"patiense": 4})


def test_step_time_bound_uses_a_short_last_window():
    # 2 planned steps, 25-step windows: 0.9 s in step 1 + 0.2 s into step 2 > 2 x 500 ms
    stop = StepTimeBudget(500).check(view(eval_every=25, steps_planned=2, steps_done=1,
                                          window_train_s=0.9, step_in_progress_s=0.2))
    assert stop is not None and stop.value == pytest.approx(550)


def test_learning_rules_do_not_stop_a_trial_that_has_finished_training():
    flat = windows("val_loss", [1.0, 1.0, 1.0])
    assert check_all([Patience(1)], view(windows=flat, steps_done=300, steps_planned=300)) is None
    assert check_all([Patience(1)], view(windows=flat, steps_done=200, steps_planned=300)) is not None
