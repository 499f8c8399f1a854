"""frugalml.accounting: the own-step floor under a predicted rate, and a stopped trial's CPU used.

Records as the executors write them; the last test runs a real worker with known CPU costs.
"""

from __future__ import annotations

import uuid

import pytest

import trainers
from frugalml import accounting
from frugalml.executors import LocalExecutor, TrialTask
from frugalml.records import StopInfo, TrialRecord, TrialStatus, Window
from frugalml.stopping import as_rules

STOP = StopInfo("max_memory_mb", "system", 5, 500.0, 400.0, "memory")


def stopped(steps_done: int, cpu_s: float, first_step_cpu_s: float | None = None, windows=(),
            steps_planned: int = 60, info=None) -> TrialRecord:
    info = {**({} if first_step_cpu_s is None else {accounting.FIRST_STEP_CPU_S: first_step_cpu_s}), **(info or {})}
    return TrialRecord("w/c/r0", 0, "w", "c", 0, {"width": 2048}, TrialStatus.STOPPED, steps_done=steps_done,
                       steps_planned=steps_planned, cpu_s=cpu_s, stop=STOP, windows=tuple(windows), info=info)


def test_a_predicted_rate_is_raised_to_what_the_trials_own_steps_already_cost():
    # first step ended at 1.0 CPU-s; steps 2-5 and part of step 6 took 0.6 CPU-s more: a step costs >= 0.6 / 5
    record = accounting.account(stopped(5, 1.6, first_step_cpu_s=1.0), predicted_cpu_s_per_step=0.01)
    assert record.saved_basis == "predicted" and record.steps_saved == 55
    assert record.cpu_s_saved == pytest.approx(55 * 0.6 / 5)


def test_the_floor_never_lowers_a_rate_and_needs_a_boundary():
    higher = accounting.account(stopped(5, 1.6, first_step_cpu_s=1.0), predicted_cpu_s_per_step=0.5)
    assert higher.cpu_s_saved == pytest.approx(55 * 0.5)
    # stopped in its first step: no boundary, so no floor; never more than the predicted full cost
    first = accounting.account(stopped(0, 3.0), predicted_cpu_s_per_step=0.01)
    assert accounting.own_step_floor(first) is None
    assert first.saved_basis == "predicted" and first.cpu_s_saved == pytest.approx(60 * 0.01)
    # a floor is not an estimate: with neither peers nor a prediction the saving stays unknown
    alone = accounting.account(stopped(5, 1.6, first_step_cpu_s=1.0))
    assert alone.saved_basis == "unknown" and accounting.saved_cpu_s(alone) is None


def test_a_measured_rate_is_not_floored():
    windows = [Window(10, {"cpu_s": 1.1}), Window(20, {"cpu_s": 1.2})]
    record = accounting.account(stopped(25, 1.9, first_step_cpu_s=1.0, windows=windows), predicted_cpu_s_per_step=1.0)
    assert record.saved_basis == "measured" and record.cpu_s_saved == pytest.approx(35 * 0.01)


def test_a_stopped_trials_cpu_used_is_at_least_its_last_boundary_reading():
    # the watchdog's last sample (1.2) predates the worker's window at step 20 (1.5)
    windows = [Window(10, {"cpu_s": 1.3}), Window(20, {"cpu_s": 1.5})]
    record = accounting.account(stopped(20, 1.2, first_step_cpu_s=1.0, windows=windows))
    assert record.cpu_s == pytest.approx(1.5)
    later = accounting.account(stopped(20, 1.7, first_step_cpu_s=1.0, windows=windows))
    assert later.cpu_s == pytest.approx(1.7)  # a later sample is kept as it is
    completed = TrialRecord("w/c/r0", 0, "w", "c", 0, {}, TrialStatus.COMPLETED, steps_done=20, steps_planned=20,
                            cpu_s=1.2, windows=tuple(windows))
    assert accounting.account(completed) is completed


def test_a_real_trial_stopped_deep_into_a_slow_step_is_credited_at_least_its_own_step_cost():
    step_cpu_s = 0.15
    rule = as_rules(lambda view: "stop after step 3" if view.steps_done >= 3 else None)[0]
    task = TrialTask(
        trial_id=f"t/{uuid.uuid4().hex[:6]}/r0", number=0, workload="t", config_id="c", repeat=0,
        params={"width": 1}, train=trainers.metered,
        train_kwargs={"steps": 40, "setup_cpu_s": 0.1, "step_cpu_s": step_cpu_s, "eval_cpu_s": 0.0},
        eval_every=20, steps_planned=40, predicted_cpu_s_per_step=0.001,  # a cost model far too low
    )
    executor = LocalExecutor(1, rules=[rule], sample_interval_s=0.05)
    executor.submit(task)
    finished = []
    while not finished:
        finished = executor.poll(1.0)
    record = finished[0]
    assert record.status is TrialStatus.STOPPED and 3 <= record.steps_done < 20
    assert record.saved_basis == "predicted"
    rate = record.cpu_s_saved / record.steps_saved
    # at least the steps after the first one, spread over one step more; never above a step's cost
    assert 0.4 * step_cpu_s < rate <= 1.1 * step_cpu_s


def test_the_thesis_in_range_budget_is_a_counterfactual_read_from_the_full_runs_cpu_at_window_ends():
    import pandas as pd

    from frugalml.reproduce import simulate_memory_budget

    def run(trial_id, memory, readings):
        return [{"workload": "w", "config_id": trial_id, "trial_id": trial_id, "step": 10 * (i + 1),
                 "memory_mb": m, "wall_s": 1.0 * (i + 1), "cpu_percent": 50.0, "val_loss": 1.0,
                 **({} if c is None else {"cpu_s": c})} for i, (m, c) in enumerate(zip(memory, readings))]

    windows = pd.DataFrame(run("big", [300, 300, 300], [2.0, 3.0, 4.5]) + run("old", [300, 300, 300], [None] * 3))
    trials = simulate_memory_budget(windows, 200).set_index("trial_id")
    # what the full run spent after the window that broke the budget: read, not estimated
    assert trials.loc["big", "cpu_from"] == "boundaries"
    assert trials.loc["big", "saved_cpu_s"] == pytest.approx(2.5) and trials.loc["big", "cpu_s"] == pytest.approx(4.5)
    # runs recorded without the readings: CPU % x wall time, and labelled so
    assert trials.loc["old", "cpu_from"] == "cpu_percent" and trials.loc["old", "saved_cpu_s"] == pytest.approx(1.0)


def test_a_prediction_is_credited_only_when_its_interval_is_narrow_enough():
    # the thesis grid's batch 30000 (±6 %) is credited; mlp width 2048 from widths 32-512 ([0, 3x]) is not
    assert accounting.credible_prediction(0.67, 0.63, 0.71) == pytest.approx(0.67)
    assert accounting.credible_prediction(0.573, 0.0, 1.76) is None
    assert accounting.credible_prediction(0.5) == pytest.approx(0.5)  # no interval given: taken as it is
    assert accounting.credible_prediction(None) is None and accounting.credible_prediction(-1.0) is None
    half = accounting.PREDICTION_SPREAD
    assert accounting.credible_prediction(1.0, 1.0 - half, 1.0 + half) == pytest.approx(1.0)
    assert accounting.credible_prediction(1.0, 1.0 - half, 1.0 + half + 0.01) is None


def _ran(width: int, ms_per_step: float) -> TrialRecord:
    windows = [Window(s, {"cpu_s": 1.0 + ms_per_step * (s - 1) / 1000.0}) for s in (10, 20, 30)]
    return TrialRecord(f"w/{width}/r0", 0, "w", str(width), 0, {"width": width}, TrialStatus.COMPLETED,
                       steps_done=30, steps_planned=30, cpu_s=windows[-1].values["cpu_s"], windows=tuple(windows),
                       info={accounting.FIRST_STEP_CPU_S: 1.0})


def test_a_prediction_far_beyond_the_configurations_the_model_saw_is_not_credited():
    from frugalml.prediction import CostModel

    # a perfectly linear cost seen on widths 32-256: the fit is exact, its interval narrow everywhere
    model = CostModel(features=["width"]).fit([_ran(w, 2.0 + 0.01 * w) for w in (32, 64, 128, 256)])
    assert model.reach({"width": 128}, "cpu_ms_per_step") == 1.0
    assert model.reach({"width": 512}, "cpu_ms_per_step") == pytest.approx(2.0)
    assert model.reach({"width": 2048}, "cpu_ms_per_step") == pytest.approx(8.0)
    assert model.reach({"width": 2048}, "no_such_metric") == float("inf")
    wide = model.predict({"width": 2048})["cpu_ms_per_step"]
    assert (wide.high - wide.low) / 2 < accounting.PREDICTION_SPREAD * wide.value  # narrow, but 8x out
    assert accounting.credible_prediction(wide.value / 1e3, wide.low / 1e3, wide.high / 1e3,
                                          reach=model.reach({"width": 2048}, "cpu_ms_per_step")) is None
    near = model.predict({"width": 512})["cpu_ms_per_step"]
    assert accounting.credible_prediction(near.value / 1e3, near.low / 1e3, near.high / 1e3,
                                          reach=model.reach({"width": 512}, "cpu_ms_per_step")) == pytest.approx(
        (2.0 + 0.01 * 512) / 1e3, rel=0.01)


def readings(eval_cpu_s=(), tail=None, eval_every=10, **more):
    return {accounting.STEP_READINGS: {"eval_every": eval_every, "eval_cpu_s": [list(e) for e in eval_cpu_s],
                                       **({} if tail is None else {"tail": list(tail)}), **more}}


def test_the_step_cost_splits_training_from_evaluation_and_prices_the_windows_left():
    # first step at 1.0; windows at 10 and 20: 10 ms a training step, 50 ms an evaluation (the first window: 0.1
    # CPU-s of warm-up more); stopped at step 25 with its tail read at 24.5
    windows = [Window(10, {"cpu_s": 1.0 + 9 * 0.01 + 0.1 + 0.05}), Window(20, {"cpu_s": 1.24 + 0.15})]
    record = stopped(25, 1.39 + 0.045, first_step_cpu_s=1.0, windows=windows,
                     info=readings([(10, 0.05), (20, 0.05)], tail=(24.5, 1.39 + 0.045)))
    cost = accounting.step_cost(record)
    assert cost.train_cpu_s == pytest.approx(0.01) and cost.eval_cpu_s == pytest.approx(0.05)
    assert accounting.measured_rate(record).cpu_s == pytest.approx(0.015)  # evaluation pro rata: the cost model's
    saved = accounting.account(record)
    assert saved.saved_basis == "measured" and saved.cpu_s_saved == pytest.approx(35 * 0.01 + 4 * 0.05)
    # a window without its evaluation's share is charged everything beyond its training steps (warm-up included)
    no_share = accounting.step_cost(stopped(25, 1.385, first_step_cpu_s=1.0, windows=windows[:1],
                                            info=readings(tail=(24.5, 1.24 + 14.5 * 0.01))))
    assert no_share.train_cpu_s == pytest.approx(0.01) and no_share.eval_cpu_s == pytest.approx(0.1 + 0.05)


def test_a_trial_stopped_before_its_first_evaluation_is_measured_only_when_it_would_never_evaluate():
    tail = (20.5, 1.0 + 19.5 * 0.01)
    assert accounting.step_cost(stopped(20, 1.2, first_step_cpu_s=1.0, info=readings(tail=tail))) is None
    never = accounting.account(stopped(20, 1.2, first_step_cpu_s=1.0, info=readings(tail=tail, eval_every=100)))
    assert never.saved_basis == "measured" and never.cpu_s_saved == pytest.approx(40 * 0.01)
    # a tail read under its boundary (the watchdog's CPU clock ticks every 10 ms): the first window's steps instead
    short = stopped(25, 1.3, first_step_cpu_s=1.0, windows=[Window(10, {"cpu_s": 1.2})],
                    info=readings([(10, 0.05)], tail=(12.0, 1.19)))
    assert accounting.step_cost(short).train_cpu_s == pytest.approx(0.15 / 9)
    # no training reading at all: no step cost (the windows' rate, where there is one, is the fallback)
    assert accounting.step_cost(stopped(25, 1.3, windows=[Window(10, {"cpu_s": 1.2})], info=readings())) is None
