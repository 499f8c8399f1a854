"""Budget violations reach Optuna as constraints, so TPE / NSGA-II learn what cannot fit."""

from __future__ import annotations

import pytest

from frugalml import Search, StopInfo, TrialRecord, TrialStatus, Window
from frugalml.prediction import constraint_values
from frugalml.search import Config

BUDGET = {"max_memory_mb": 200, "max_mean_step_ms": 50, "max_study_cpu_seconds": 100}


def trial(config: Config, *, memory: float, step_ms: float, stop: StopInfo | None = None,
          status: TrialStatus = TrialStatus.COMPLETED) -> TrialRecord:
    windows = (Window(10, {"memory_mb": memory, "mean_step_ms": step_ms, "val_loss": 0.5}),)
    return TrialRecord(trial_id=f"w/{config.config_id}/r0", number=0, workload="w", config_id=config.config_id,
                       repeat=0, params=dict(config.params), status=status, steps_done=10, windows=windows,
                       stop=stop)


def test_constraint_values_are_the_relative_violation_of_each_resource_budget():
    config = Config("c", {"batch_size": 30000})
    fits = trial(config, memory=150, step_ms=25)
    assert constraint_values([fits], BUDGET) == {"max_memory_mb": -0.25, "max_mean_step_ms": -0.5}
    broke = trial(config, memory=300, step_ms=25, status=TrialStatus.STOPPED,
                  stop=StopInfo("max_memory_mb", "system", 1, 300.0, 200.0, "memory"))
    predicted = trial(config, memory=150, step_ms=25, status=TrialStatus.STOPPED,
                      stop=StopInfo("predicted_max_mean_step_ms", "system", 20, 75.0, 50.0, "predicted"))
    assert constraint_values([fits, broke, predicted], BUDGET) == {"max_memory_mb": 0.5, "max_mean_step_ms": 0.5}


def test_a_completed_trial_s_warm_up_window_does_not_make_it_infeasible():
    config = Config("c", {"batch_size": 300})
    warm = TrialRecord(trial_id="w/c/r0", number=0, workload="w", config_id="c", repeat=0, params=dict(config.params),
                       status=TrialStatus.COMPLETED, steps_done=20,
                       windows=(Window(10, {"mean_step_ms": 85.0}), Window(20, {"mean_step_ms": 45.0})))
    # the watchdog held the first window to twice the 50 ms budget and passed the trial
    assert constraint_values([warm], {"max_mean_step_ms": 50}) == {"max_mean_step_ms": pytest.approx(-0.1)}


@pytest.mark.parametrize("method", ["tpe", "gp", "nsga2"])
def test_the_sampler_stores_constraints_and_ranks_infeasible_trials_below(method):
    search = Search(method=method, space={"batch_size": [30, 300, 3000, 30000]}, n_trials=3, seed=0)
    sampler = search.sampler(BUDGET)
    first, second, third = sampler.ask(), sampler.ask(), sampler.ask()
    sampler.tell(first, [trial(first, memory=150, step_ms=25)])
    sampler.tell(second, [trial(second, memory=260, step_ms=25, status=TrialStatus.STOPPED,
                                stop=StopInfo("max_memory_mb", "system", 1, 260.0, 200.0, "memory"))])
    skipped = TrialRecord(trial_id="w/s/r0", number=2, workload="w", config_id=third.config_id, repeat=0,
                          params=dict(third.params), status=TrialStatus.SKIPPED,
                          stop=StopInfo("skipped_max_memory_mb", "system", 0, 240.0, 200.0, "skipped"))
    sampler.tell(third, [skipped])
    trials = sampler.study.trials
    assert trials[0].constraints == {"max_memory_mb": -0.25, "max_mean_step_ms": -0.5}
    assert trials[1].constraints["max_memory_mb"] == pytest.approx(0.3)
    assert trials[2].constraints["max_memory_mb"] == pytest.approx(0.2)
    # infeasible trials are complete (NSGA-II only reads complete ones), with placeholder values
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert trials[1].value >= trials[0].value


def test_plain_search_tells_no_constraints():
    search = Search(method="tpe", space={"batch_size": [30, 30000]}, n_trials=1, constraints=False)
    sampler = search.sampler(BUDGET)
    config = sampler.ask()
    sampler.tell(config, [trial(config, memory=300, step_ms=25, status=TrialStatus.STOPPED,
                                stop=StopInfo("max_memory_mb", "system", 1, 300.0, 200.0, "memory"))])
    (only,) = sampler.study.trials
    assert only.constraints == {} and only.state.name == "PRUNED"


def test_resume_restores_the_constraints():
    search = Search(method="tpe", space={"batch_size": [30, 30000]}, n_trials=4)
    config = Config("t0000:batch_size=30000", {"batch_size": 30000})
    stopped = trial(config, memory=300, step_ms=25, status=TrialStatus.STOPPED,
                    stop=StopInfo("max_memory_mb", "system", 1, 300.0, 200.0, "memory"))
    sampler = search.sampler(BUDGET)
    sampler.restore([(config, [stopped])], [])
    (restored,) = sampler.study.trials
    assert restored.constraints["max_memory_mb"] == pytest.approx(0.5) and restored.state.name == "COMPLETE"


@pytest.mark.parametrize("value, threshold", [(10_240.0, 40_000.0), (float("nan"), 81_920.0), (500.0, float("nan"))])
def test_a_gpu_out_of_memory_stop_is_infeasible_even_when_read_below_the_limit(value, threshold):
    """A CUDA OOM on a shared device: the memory in use plus the failed request can be
    below the budget, or unknown; the stop still breaks it."""
    stop = StopInfo("max_gpu_memory_mb", "system", 3, value, threshold, "GPU memory ran out")
    record = TrialRecord(trial_id="w/c/r0", number=0, workload="w", config_id="c", repeat=0, params={},
                         status=TrialStatus.STOPPED, stop=stop)
    assert stop.violation > 0 and constraint_values([record], {"max_gpu_memory_mb": 40_000})["max_gpu_memory_mb"] > 0
