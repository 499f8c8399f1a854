"""Compute saved, as it really was: real worker processes with known CPU costs."""

from __future__ import annotations

import uuid

import pytest

import trainers
from frugalml import accounting
from frugalml.executors import LocalExecutor, TrialTask
from frugalml.records import TrialStatus
from frugalml.stopping import MemoryBudget, as_rules

STEPS, EVERY = 60, 10
STEP_CPU_S, EVAL_CPU_S, SETUP_CPU_S = 0.004, 0.02, 0.3
RATE = STEP_CPU_S + EVAL_CPU_S / EVERY  # per step, evaluation included pro rata


def run(executor, params=None, predicted=None, artifact_dir=None, **kwargs):
    task = TrialTask(
        trial_id=f"t/{uuid.uuid4().hex[:6]}/r0", number=0, workload="t", config_id=uuid.uuid4().hex[:6], repeat=0,
        params=params or {"batch_size": 8, "learning_rate": 0.1}, train=trainers.metered,
        train_kwargs={"steps": STEPS, "setup_cpu_s": SETUP_CPU_S, "step_cpu_s": STEP_CPU_S,
                      "eval_cpu_s": EVAL_CPU_S, **kwargs},
        eval_every=EVERY, steps_planned=STEPS, predicted_cpu_s_per_step=predicted, artifact_dir=artifact_dir,
    )
    executor.submit(task)
    finished = []
    while not finished:
        finished = executor.poll(1.0)
    executor.state.add(finished[0])
    return finished[0]


def stop_at(step):
    return as_rules(lambda view: f"stop at {step}" if view.steps_done >= step else None)[0]


def test_a_stop_mid_run_saves_its_own_steady_rate_times_the_steps_not_run():
    record = run(LocalExecutor(1, rules=[stop_at(30)], sample_interval_s=0.05))
    assert record.status is TrialStatus.STOPPED and record.saved_basis == "measured"
    steps = STEPS - record.steps_done
    assert record.steps_saved == steps
    # the set-up (0.3 CPU-s) is not charged to the steps not run, the evaluations are
    assert record.cpu_s_saved == pytest.approx(steps * RATE, rel=0.3)
    assert record.energy_j_saved == pytest.approx(record.cpu_s_saved * record.energy_j / record.cpu_s, rel=1e-6)


@pytest.fixture(scope="module")
def first_step_budget():
    """A memory budget 150 MB over a small trial's peak: 400 MB in the first step breaks it."""
    small = run(LocalExecutor(1, sample_interval_s=0.05), setup_cpu_s=0.0, step_cpu_s=0.0, eval_cpu_s=0.0)
    return small.peak("memory_mb") + 150


def test_a_trial_stopped_in_its_first_step_takes_the_cost_model_rate_never_more_than_a_full_run(first_step_budget):
    executor = LocalExecutor(1, rules=[MemoryBudget(first_step_budget)], sample_interval_s=0.05)
    record = run(executor, predicted=RATE, first_step_mb=400)
    assert record.status is TrialStatus.STOPPED and record.steps_done == 0
    assert record.saved_basis == "predicted"
    assert record.cpu_s_saved == pytest.approx(RATE * STEPS)  # never more than the predicted full cost
    assert record.peak("memory_mb") == record.stop.value  # the value that broke the budget is its peak

    alone = run(executor, first_step_mb=400)  # no prediction, no peer of its family: unknown
    assert alone.saved_basis == "unknown" and accounting.saved_cpu_s(alone) is None


def test_a_trial_stopped_in_its_first_step_takes_its_finished_peers_rate(first_step_budget):
    executor = LocalExecutor(1, rules=[MemoryBudget(first_step_budget)], sample_interval_s=0.05)
    peer = run(executor, params={"batch_size": 8, "learning_rate": 0.1})
    assert peer.status is TrialStatus.COMPLETED
    record = run(executor, params={"batch_size": 8, "learning_rate": 0.01}, first_step_mb=400)  # same family
    assert record.status is TrialStatus.STOPPED and record.saved_basis == "peers"
    assert record.cpu_s_saved == pytest.approx(RATE * STEPS, rel=0.3)
    assert record.cpu_s_saved < peer.cpu_s  # what a full run of the family cost, set-up included
    other = run(executor, params={"batch_size": 64, "learning_rate": 0.01}, first_step_mb=400)
    assert other.saved_basis == "unknown"  # a different batch size is not the same family


def test_a_budget_broken_after_the_loop_records_the_phase(first_step_budget, tmp_path):
    executor = LocalExecutor(1, rules=[MemoryBudget(first_step_budget)], sample_interval_s=0.05)
    record = run(executor, after_loop_mb=400)
    assert record.status is TrialStatus.STOPPED and record.steps_done == STEPS
    assert record.stop_phase == "evaluate" and record.steps_saved == 0 and record.cpu_s_saved == 0
    assert not record.feasible  # a budget broken after training still breaks it (docs/savings.md)
    assert record.peak("memory_mb") == record.stop.value

    logging = run(executor, log_mb=120, artifact_dir=str(tmp_path))
    assert logging.status is TrialStatus.STOPPED and logging.stop_phase == "log"
    assert logging.peak("memory_mb") == logging.stop.value


def test_the_study_line_shows_the_basis_mix_and_an_unknown_saving_is_never_a_number():
    from frugalml.cli._format import compute_line, trial_rows
    from frugalml.records import StopInfo, TrialRecord, Window
    from frugalml.results import compute_account

    stop = StopInfo("max_memory_mb", "system", 0, 500.0, 400.0, "memory")
    windows = tuple(Window(s, {"cpu_s": 1.0 + 0.01 * s}) for s in (10, 20))
    measured = accounting.account(TrialRecord("w/a/r0", 0, "w", "a", 0, {"batch_size": 1}, TrialStatus.STOPPED,
                                              steps_done=20, steps_planned=100, cpu_s=1.3, stop=stop, windows=windows))
    unknown = accounting.account(TrialRecord("w/b/r0", 1, "w", "b", 0, {"batch_size": 2}, TrialStatus.STOPPED,
                                             steps_done=0, steps_planned=100, cpu_s=2.0, stop=stop))
    predicted = accounting.account(TrialRecord("w/c/r0", 2, "w", "c", 0, {"batch_size": 3}, TrialStatus.STOPPED,
                                               steps_done=0, steps_planned=100, cpu_s=2.0, stop=stop), (), 0.05)
    assert (measured.saved_basis, unknown.saved_basis, predicted.saved_basis) == ("measured", "unknown", "predicted")
    assert measured.cpu_s_saved == pytest.approx(0.8) and predicted.cpu_s_saved == pytest.approx(5.0)
    assert [row["cpu_s_saved"] for row in trial_rows([measured, unknown])] == [pytest.approx(0.8), None]
    line = compute_line(compute_account([measured, unknown, predicted]))
    assert "saved 5.8 CPU-s" in line and "(saved from: 1 measured, 1 predicted, 1 unknown)" in line
