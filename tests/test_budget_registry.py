"""Every budget of the registry, end to end: parsed from TOML, enforced by the real
watchdog on a real worker, predicted in-trial and across configurations, reported,
and exported as an Optuna constraint.

The scenarios below are keyed by budget: a budget added to ``frugalml.budgets``
without one fails ``test_every_budget_has_a_scenario``. The GPU-memory scenario
uses a fake NVML (no NVIDIA GPU here) and says so in its id.
"""

from __future__ import annotations

import os
import uuid
from types import SimpleNamespace

import optuna
import pytest

import trainers
from frugalml import Search, TrialRecord, TrialStatus, Window, load_study
from frugalml.budgets import BUDGETS, SAMPLE, SERVE, STUDY, WINDOW
from frugalml.executors import LocalExecutor, StudyState, TrialTask
from frugalml.monitors._tree import tree_pids
from frugalml.prediction import CostModel, DatasetShape, constraint_values, observed_costs
from frugalml.report import CURVE_METRICS, EFFECT_METRICS, get_curves_info, get_pareto_info
from frugalml.report._info import LABELS
from frugalml.results import compute_account
from frugalml.stopping import PredictedBudget, TrialView
from helpers import FakeNvml

MB = 2**20


class TreeOnGpu(FakeNvml):
    """A fake NVML device on which every process under this test holds 500 MB from the
    sixth sample on (training has started by then)."""

    samples = 0

    def nvmlDeviceGetComputeRunningProcesses(self, handle: dict) -> list:
        self.samples += 1
        if self.samples <= 5:
            return []
        return [SimpleNamespace(pid=pid, usedGpuMemory=500 * MB) for pid in tree_pids(os.getpid())]


# budget -> (limit, training function and kwargs, whatever the scenario sets up)
SCENARIOS = {
    "max_memory_mb": dict(limit=300, train=trainers.allocate_in_one_step, kwargs={"megabytes": 800, "steps": 50}),
    "max_gpu_memory_mb": dict(limit=100, train=trainers.steady, kwargs={"steps": 400, "step_s": 0.005}, gpu=True),
    "max_mean_step_ms": dict(limit=5, train=trainers.steady, kwargs={"steps": 200, "step_s": 0.01}),
    "max_trial_seconds": dict(limit=0.5, train=trainers.steady, kwargs={"steps": 400, "step_s": 0.005}),
    "max_study_cpu_seconds": dict(limit=50, train=trainers.steady, kwargs={"steps": 400, "step_s": 0.005},
                                  state={"finished_cpu_s": 49.7}),  # the trial itself breaks it after ~0.3 CPU-s
    # Estimated joules here (no RAPL): 10 W per core, so ~3 J after ~0.3 CPU-s.
    "max_trial_joules": dict(limit=3, train=trainers.steady, kwargs={"steps": 400, "step_s": 0.005}),
    "max_study_joules": dict(limit=50, train=trainers.steady, kwargs={"steps": 400, "step_s": 0.005},
                             state={"finished_energy_j": 47.0}),
}
IDS = [f"{key}-fake-nvml" if SCENARIOS[key].get("gpu") else key for key in SCENARIOS]


def test_every_budget_has_a_scenario():
    """Serving budgets are measured on the model, not by the watchdog: tests/deploy/test_serving_budgets.py."""
    assert set(SCENARIOS) == {key for key, b in BUDGETS.items() if b.scope != SERVE}


@pytest.fixture(params=list(SCENARIOS), ids=IDS)
def stopped(request, monkeypatch, tmp_path):
    """The record of a real trial stopped by the watchdog for one budget, parsed from a study file."""
    key = request.param
    scenario = SCENARIOS[key]
    if scenario.get("gpu"):
        monkeypatch.setitem(os.sys.modules, "pynvml", TreeOnGpu([{"compute": [], "util": 40}]))
    monkeypatch.setenv("FRUGALML_WATTS_PER_CORE", "10")
    path = tmp_path / "study.toml"
    predict = "[stopping]\npredicted = true\n" if BUDGETS[key].per_config else ""
    path.write_text(f'[study]\nname = "b"\n[[workloads]]\ntrain = "trainers:steady"\n'
                    f'[budget]\n{key} = {scenario["limit"]}\n{predict}')
    rules = load_study(path).stopping_rules()
    assert [r.name for r in rules][0] == key
    predicted = [r for r in rules if isinstance(r, PredictedBudget)]
    if BUDGETS[key].per_config:
        assert predicted[0].budgets == {key: scenario["limit"]}
    else:
        assert not predicted
    state = StudyState()
    for name, value in scenario.get("state", {}).items():
        setattr(state, name, value)
    executor = LocalExecutor(1, state, rules=rules[:1], sample_interval_s=0.05)
    steps = scenario["kwargs"]["steps"]
    executor.submit(TrialTask(f"w/{uuid.uuid4().hex[:6]}/r0", 0, "w", "c", 0, {"batch_size": 32},
                              scenario["train"], scenario["kwargs"], eval_every=10, steps_planned=steps))
    finished = []
    while not finished:
        finished = executor.poll(1.0)
    return key, scenario["limit"], finished[0]


def test_the_watchdog_enforces_each_budget_on_a_real_worker(stopped):
    key, limit, record = stopped
    assert record.status is TrialStatus.STOPPED, (record.error, record.stop)
    assert record.stop.rule == key and record.stop.threshold == limit and record.stop.value > limit
    assert record.stop.kind == ("study" if BUDGETS[key].scope == STUDY else "system")
    assert record.feasible is (BUDGETS[key].scope == STUDY)  # only a resource budget makes a trial infeasible
    assert record.steps_done < record.steps_planned and record.energy_source == "estimate"  # no RAPL here
    if record.saved_basis == "unknown":  # stopped before its first window, no peers, no cost model
        assert record.cpu_s_saved == 0 and record.energy_j_saved is None
    else:
        assert record.saved_basis == "measured" and record.cpu_s_saved > 0 and record.energy_j_saved > 0


def test_each_budget_is_reported(stopped):
    key, limit, record = stopped
    budget = BUDGETS[key]
    assert compute_account([record]).saved_by_rule[key] == pytest.approx(record.cpu_s_saved)
    curves = get_curves_info([record], "w")
    assert set(curves.stops["reason"]) == {f"{key}: {record.stop.message}"}
    if budget.plotted:  # drawn over steps when measured, with the budget on the cost-vs-loss chart
        assert budget.metric in CURVE_METRICS and budget.metric in EFFECT_METRICS
        assert LABELS[budget.metric] == budget.label and budget.unit in budget.label
        if record.peak(budget.metric) is not None:  # estimated joules are charted apart from measured ones
            charted = "energy_estimated_j" if "estimate" in (record.energy_source or "") and \
                budget.metric == "energy_j" else budget.metric
            assert charted in curves.metrics
        assert get_pareto_info([record], "w", {key: limit}).budgets == {budget.metric: limit}


def _windows(key: str, values: list[float]) -> tuple[Window, ...]:
    metric = BUDGETS[key].metric
    return tuple(Window(10 * (i + 1), {metric: v, "mean_step_ms": v if metric == "mean_step_ms" else 1.0,
                                        "wall_s": (i + 1) * (v if metric == "wall_s" else 0.01)})
                 for i, v in enumerate(values))


@pytest.mark.parametrize("key", [k for k, b in BUDGETS.items() if b.per_config and b.scope != SERVE])
def test_each_per_configuration_budget_is_predicted_in_trial_and_across_configurations(key):
    budget = BUDGETS[key]
    rule = PredictedBudget(**{key: 100.0}, min_windows=3)
    if budget.scope == SAMPLE:  # a leak: rising 10 per window, 100 windows planned
        windows = _windows(key, [40.0, 50.0, 60.0, 70.0, 80.0])
    elif budget.scope == WINDOW:  # steady at 150 ms a step
        windows = _windows(key, [300.0, 150.0, 151.0, 149.0])
    else:  # 1.2 s per window of 10 steps: 120 s planned
        windows = _windows(key, [1.2, 1.2, 1.2, 1.2])
    view = TrialView("t", steps_done=windows[-1].step, windows=windows, steps_planned=1000, eval_every=10)
    stop = rule.check(view)
    assert stop is not None and stop.rule == f"predicted_{key}" and stop.value > 100
    assert PredictedBudget(**{key: 1000.0}, min_windows=3).check(view) is None
    if budget.scope not in (SAMPLE, WINDOW):
        return  # a trial's time is predicted from its step time (CostScreen), not fitted itself
    records = [TrialRecord(f"w/{b}/r0", b, "w", str(b), 0, {"batch_size": b}, TrialStatus.COMPLETED, steps_done=10,
                           cpu_s=1.0, windows=_windows(key, [1.0 + 0.1 * b] * 3)) for b in (10, 20, 40, 80, 160)]
    assert budget.predicted in observed_costs(records[0])
    model = CostModel(min_observations=4).fit(records, DatasetShape())
    predicted = model.predict({"batch_size": 320})[budget.predicted]
    assert predicted.low < 33.0 < predicted.high


@pytest.mark.parametrize("key", [k for k, b in BUDGETS.items() if b.per_config])
def test_each_per_configuration_budget_is_an_optuna_constraint(key):
    b = BUDGETS[key]
    value = 100.0 / 1.5 if b.floor else 150.0  # half past the limit of 100 either way
    serving = {"serving": {b.metric: value}} if b.scope == SERVE else {}  # what frugalml.deploy measured
    over = TrialRecord("w/a/r0", 0, "w", "a", 0, {"x": 1}, TrialStatus.COMPLETED, steps_done=30, wall_s=150.0,
                       windows=_windows(key, [150.0, 150.0, 150.0]), info=serving)
    assert constraint_values([over], {key: 100.0}) == {key: pytest.approx(0.5)}
    sampler = Search(method="tpe", space={"x": {"low": 0.0, "high": 1.0}}, n_trials=2).sampler({key: 100.0})
    sampler.tell(sampler.ask(), [over])
    (stored,) = sampler.study.trials
    assert stored.state is optuna.trial.TrialState.COMPLETE  # infeasible, ranked by the constraint
    assert stored.constraints == {key: pytest.approx(0.5)}
