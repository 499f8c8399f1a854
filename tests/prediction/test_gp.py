"""``method = "gp"``: Optuna's GPSampler, told the budgets as constraints and screened by the cost model."""

from __future__ import annotations

import importlib.util
import math

import pytest

from frugalml import ConfigError, Search, StopInfo, TrialRecord, TrialStatus, Window
from frugalml.search import OptunaSampler

SPACE = {"batch_size": {"low": 16, "high": 32768, "log": True, "int": True},
         "learning_rate": {"low": 1e-5, "high": 1.0, "log": True}}
EDGE = 12_000  # the largest batch that fits: a worker holds 100 MB + batch / 120 MB, the budget is 200 MB


def loss(params) -> float:
    """Shaped like the SGD models' 40-step val_loss on mnist_784: it falls with the batch (more
    rows seen) and has an interior optimum in the learning rate, so the best that fits is at the edge."""
    return (0.65 + 0.35 * math.log(32768 / params["batch_size"]) / math.log(32768 / 16)
            + 0.08 * (math.log10(params["learning_rate"]) - math.log10(2e-4)) ** 2)


def completed(config, value: float) -> list[TrialRecord]:
    memory = 100 + config.params["batch_size"] / 120
    return [TrialRecord(trial_id=f"w/{config.config_id}/r0", number=0, workload="w", config_id=config.config_id,
                        repeat=0, params=dict(config.params), status=TrialStatus.COMPLETED, steps_done=10,
                        windows=(Window(10, {"memory_mb": memory, "val_loss": value}),))]


def screen(params):
    return {"max_memory_mb": params["batch_size"] / EDGE - 1} if params["batch_size"] > EDGE else None


def search_best(method: str, seed: int, n_trials: int = 20) -> tuple[float, list[dict]]:
    sampler = Search(method=method, space=SPACE, n_trials=n_trials, seed=seed).sampler(
        {"max_memory_mb": 200}, screen=screen)
    proposed = []
    while (config := sampler.ask()) is not None:
        proposed.append(dict(config.params))
        sampler.tell(config, completed(config, loss(config.params)))
    return min(loss(p) for p in proposed), proposed


def test_the_gp_finds_a_budget_bound_optimum_within_3_percent_in_20_trials_and_random_search_does_not():
    optimum = loss({"batch_size": EDGE, "learning_rate": 2e-4})
    gp, proposed = search_best("gp", seed=1)
    random, _ = search_best("random", seed=1)
    assert all(p["batch_size"] <= EDGE for p in proposed)  # screened: nothing over the edge is proposed
    # the screened candidates reach the GP as infeasible with the best value seen: told the worst,
    # its smooth objective model learns that the edge's neighbourhood is bad (11% off at this seed)
    assert gp <= 1.03 * optimum
    assert random > 1.03 * optimum


def test_an_infeasible_trial_is_told_to_the_gp_as_the_best_value_seen():
    sampler = Search(method="gp", space=SPACE, n_trials=3, seed=0).sampler({"max_memory_mb": 200})
    first, second, third = sampler.ask(), sampler.ask(), sampler.ask()
    sampler.tell(first, completed(first, 0.9))
    sampler.tell(second, completed(second, 0.7))
    sampler.tell(third, [TrialRecord(trial_id="w/t/r0", number=2, workload="w", config_id=third.config_id, repeat=0,
                                     params=dict(third.params), status=TrialStatus.SKIPPED)])
    broke = sampler.study.trials[2]
    # a skipped trial without a budget stop is just pruned; now one that broke the budget
    assert broke.state.name == "PRUNED"
    sampler._remaining = 1
    fourth = sampler.ask()
    sampler.tell(fourth, [TrialRecord(trial_id="w/f/r0", number=3, workload="w", config_id=fourth.config_id,
                                      repeat=0, params=dict(fourth.params), status=TrialStatus.STOPPED, steps_done=1,
                                      windows=(Window(1, {"memory_mb": 260.0}),),
                                      stop=StopInfo("max_memory_mb", "system", 1, 260.0, 200.0, "memory"))])
    told = sampler.study.trials[-1]
    # Optuna is told log(1 + loss): the ranking, with the outliers of diverged runs squashed
    assert told.state.name == "COMPLETE" and told.value == pytest.approx(math.log1p(0.7))
    assert told.value == min(t.value for t in sampler.study.trials if t.state.name == "COMPLETE")
    assert told.constraints["max_memory_mb"] == pytest.approx(0.3)


def test_optuna_is_told_squashed_values_so_a_diverged_run_does_not_flatten_the_gp():
    """The GP is told log(1 + loss), a loss capped at GP_CAP times the best seen so far; TPE only
    the log (it ranks, so a cap would change nothing but ties)."""
    for method, cap in (("gp", OptunaSampler.GP_CAP), ("tpe", math.inf)):
        sampler = Search(method=method, space=SPACE, n_trials=3, seed=0).sampler({"max_memory_mb": 200})
        first, good, diverged = sampler.ask(), sampler.ask(), sampler.ask()
        sampler.tell(first, completed(first, 40.0))  # nothing better seen yet: told as it is
        sampler.tell(good, completed(good, 0.65))
        sampler.tell(diverged, completed(diverged, 25.0))
        assert [t.value for t in sampler.study.trials] == pytest.approx(
            [math.log1p(40.0), math.log1p(0.65), math.log1p(min(25.0, cap * 0.65))]), method


def test_cost_aware_gp_is_a_one_line_error_since_a_deferred_candidate_would_come_back():
    with pytest.raises(ConfigError, match=r"the GP redraws the same point"):
        Search(method="gp", space=SPACE, n_trials=4, cost_aware=True)


def test_gp_without_pytorch_is_a_one_line_error(monkeypatch):
    real = importlib.util.find_spec
    # a fake: this machine has PyTorch; the check must name the fix when a user's does not
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    with pytest.raises(ConfigError, match=r"method = \"gp\" runs Optuna's GPSampler, which needs PyTorch: pip install"):
        Search(method="gp", space=SPACE, n_trials=4)


def test_after_a_candidate_not_known_to_fit_the_gp_draws_at_random_not_the_same_point_again():
    """A failed trial changes none of the GP's data, so its next draws would repeat the rejected
    point (and the last would be proposed anyway); the draws after one are random."""
    search = Search(method="gp", space=SPACE, n_trials=14, seed=0)
    sampler = search.sampler({"max_memory_mb": 200},
                             screen=lambda p: {"max_memory_mb": math.nan} if p["batch_size"] > 2000 else None)
    sampler.screen = None  # the start-up: 10 random trials, told a loss that falls with the batch
    for _ in range(10):
        config = sampler.ask()
        sampler.tell(config, completed(config, loss(config.params)))
    sampler.screen = lambda p: {"max_memory_mb": math.nan} if p["batch_size"] > 2000 else None
    proposed = [sampler.ask().params["batch_size"] for _ in range(4)]
    assert sampler.screened >= 4  # the GP wants the largest batches: each ask rejected one at least
    assert sum(b <= 2000 for b in proposed) >= 3, proposed
