"""Compute saved, as it really was: real worker processes with known CPU costs."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace

import pytest

import trainers
from frugalml import accounting
from frugalml.executors import LocalExecutor, StudyState, TrialTask
from frugalml.executors._lifecycle import TrialLifecycle
from frugalml.messages import FirstStep, WindowEnd
from frugalml.records import TrialRecord, TrialStatus, Window
from frugalml.stopping import MemoryBudget, as_rules
from frugalml.trial import PROGRESS_EVALUATING, PROGRESS_MARK, PROGRESS_SIZE, PROGRESS_STEPS, PROGRESS_WINDOW_S

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


def test_a_real_stop_inside_an_evaluation_is_charged_the_rest_of_it_and_the_evaluations_left():
    # stopped at step 20 while its second evaluation (0.1 CPU-s) runs: that window's message never comes
    record = run(LocalExecutor(1, rules=[stop_at(20)], sample_interval_s=0.02), eval_cpu_s=0.1)
    assert record.status is TrialStatus.STOPPED and record.steps_done == 20 and record.saved_basis == "measured"
    readings = record.info[accounting.STEP_READINGS]
    interrupted = "evaluating_cpu_s" in readings  # else the watchdog was late and window 20 came whole
    assert [w.step for w in record.windows if "cpu_s" in w.values] == ([10] if interrupted else [10, 20])
    left = 1 - readings["evaluating_cpu_s"] / 0.1 if interrupted else 0.0
    assert 0 <= left <= 1
    assert record.cpu_s_saved == pytest.approx(40 * STEP_CPU_S + (4 + left) * 0.1, rel=0.25)


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
    small = accounting.account(TrialRecord("w/d/r0", 3, "w", "d", 0, {"batch_size": 4}, TrialStatus.STOPPED,
                                           steps_done=20, steps_planned=25, cpu_s=0.2, stop=stop, windows=(
                                               Window(10, {"cpu_s": 0.1}), Window(20, {"cpu_s": 0.2}))))
    line = compute_line(compute_account([small]))  # below one CPU-s, two significant digits: not "saved 0.0 (20%)"
    assert "used 0.2 CPU-s, saved 0.05 CPU-s (20% of running every trial in full)" in line, line


# -- recorded message sequences fed to a lifecycle, no processes -------------------------------------------------
# A PyTorch-like trial: set-up to 3.0 CPU-s, a training step 10 ms, an evaluation 30 ms every 40 steps, 237 steps;
# its first window pays 0.1 CPU-s of warm-up (allocations, first-call compilation). CPU-seconds = wall seconds.
PLANNED, EVAL_EVERY, SETUP, TRAIN, EVALUATION, WARM_UP = 237, 40, 3.0, 0.01, 0.03, 0.1
FIRST_STEP_S = 0.5  # the first step's own length (its warm-up, in the set-up)


class Recorded:
    """A lifecycle fed what a worker and its watchdog would send, with its progress slots set by hand.

    Wall seconds are CPU-seconds x ``WALL`` (a trial given 1 % of a core), so that the real time this
    test takes between setting a slot and the lifecycle reading it is negligible against a step's.
    """

    WALL = 100.0

    def __init__(self):
        self.progress = [0.0] * PROGRESS_SIZE
        task = TrialTask("w/c/r0", 0, "w", "c", 0, {"hidden": 1024}, "m:f", eval_every=EVAL_EVERY,
                         steps_planned=PLANNED)
        self.trial = TrialLifecycle(task, self.progress, started=0.0)
        self.window_s = 0.0  # the worker's wall time of the current window's steps
        self.wall_s = 0.0  # the worker's wall time since the trial started
        self.clock = 0.0  # the parent's monotonic clock at the latest boundary

    def slots(self, steps, *, evaluating=False, mark_ago_s=0.0):
        self.progress[PROGRESS_STEPS] = steps
        self.progress[PROGRESS_EVALUATING] = 1.0 if evaluating else 0.0
        self.progress[PROGRESS_WINDOW_S] = self.window_s
        self.progress[PROGRESS_MARK] = time.monotonic() - mark_ago_s

    def first_step(self, cpu_s=SETUP):
        self.window_s = self.wall_s = FIRST_STEP_S * self.WALL
        self.slots(1)
        self.clock = self.progress[PROGRESS_MARK]
        self.trial.receive(FirstStep(cpu_s=cpu_s), now=self.clock)

    def window(self, step, cpu_s, train_cpu_s, span_cpu_s):
        """Window ``step`` ends at ``cpu_s``: its training steps took ``train_cpu_s`` (with the first step's own
        length in the first window's ``train_s``), the window ``span_cpu_s`` since the previous boundary."""
        train_s = train_cpu_s * self.WALL + (FIRST_STEP_S * self.WALL if step == EVAL_EVERY else 0.0)
        self.wall_s += span_cpu_s * self.WALL
        self.clock += span_cpu_s * self.WALL
        self.slots(step)  # the sample taken as the message arrives: after the boundary, before the message
        self.trial.observe({"cpu_s": cpu_s})
        self.trial.receive(WindowEnd(step=step, n_steps=EVAL_EVERY, train_s=train_s, samples=step, losses=[],
                                     wall_s=self.wall_s, cpu_s=cpu_s), now=self.clock)
        self.window_s = 0.0

    def sample(self, steps, cpu_s, *, step_cpu_s=TRAIN, fraction=0.5, evaluating=False):
        """A watchdog sample at ``cpu_s``, ``fraction`` into the step after ``steps``."""
        step_s = step_cpu_s * self.WALL
        self.window_s = (steps - (self.trial.windows[-1].step if self.trial.windows else 0)) * step_s
        self.slots(steps, evaluating=evaluating, mark_ago_s=fraction * step_s)
        self.trial.observe({"cpu_s": cpu_s, "cpu_percent": 100.0 / self.WALL})

    def decide_stop(self):
        assert self.trial.check([stop_at(0)], self.trial.view(1.0, StudyState(), {}), sample_only=True)

    def stop(self, peers=()):
        self.decide_stop()
        record = self.trial.record(now=1.0)
        if peers:  # as the executor would have accounted it with them
            record = accounting.account(replace(record, steps_saved=0, cpu_s_saved=0.0), peers)
        return record

    def through_first_window(self):
        """Set-up, the first step, and the first window (its warm-up and its evaluation in it)."""
        self.first_step()
        train = (EVAL_EVERY - 1) * TRAIN + WARM_UP
        self.window(EVAL_EVERY, SETUP + train + EVALUATION, train, train + EVALUATION)
        return SETUP + train + EVALUATION


def test_a_stop_after_one_window_is_charged_its_warm_training_steps_and_each_evaluation_left():
    recorded = Recorded()
    boundary = recorded.through_first_window()
    recorded.sample(66, boundary + 26.5 * TRAIN)  # stopped halfway into step 67: training only since step 40
    record = recorded.stop()
    assert record.saved_basis == "measured" and record.steps_done == 66
    readings = record.info[accounting.STEP_READINGS]
    assert readings["eval_cpu_s"] == [[40, pytest.approx(EVALUATION)]]
    assert readings["tail"][0] == pytest.approx(66.5, abs=0.01)
    # 171 steps not run at 10 ms, and the evaluations at steps 80, 120, 160 and 200; no warm-up
    assert record.cpu_s_saved == pytest.approx(171 * TRAIN + 4 * EVALUATION, rel=0.01)
    # the single window's rate (the first step to the window) would have charged the warm-up 171 / 39 times
    assert accounting.window_rate(record).cpu_s * 171 > 1.2 * record.cpu_s_saved


def test_later_windows_are_preferred_to_the_first_for_both_rates():
    recorded = Recorded()
    boundary = recorded.through_first_window()
    for step in (80, 120):  # warm windows: a training step 12 ms here (a busier machine), the evaluation 40 ms
        boundary += EVAL_EVERY * 0.012 + 0.04
        recorded.window(step, boundary, EVAL_EVERY * 0.012, EVAL_EVERY * 0.012 + 0.04)
    recorded.sample(125, boundary + 5.5 * 0.012, step_cpu_s=0.012)  # a short tail: 0.066 CPU-s, pooled with window 120
    record = recorded.stop()
    assert record.saved_basis == "measured"
    assert record.cpu_s_saved == pytest.approx(112 * 0.012 + 2 * 0.04, rel=0.01)  # evaluations at 160 and 200


def test_a_stop_inside_an_evaluation_charges_what_was_left_of_it():
    recorded = Recorded()
    boundary = recorded.through_first_window()
    recorded.sample(70, boundary + 30.5 * TRAIN)  # the latest sample between training steps
    # steps 71-80 done, the evaluation of window 80 had run 10 ms of its 30 when the watchdog stopped it;
    # its window's message never came
    recorded.sample(80, boundary + 40 * TRAIN + 0.01, fraction=1.0, evaluating=True)
    record = recorded.stop()
    readings = record.info[accounting.STEP_READINGS]
    assert readings["evaluating_cpu_s"] == pytest.approx(0.01, rel=0.05)
    assert readings["tail"][0] == pytest.approx(70.5, abs=0.01)
    assert record.saved_basis == "measured" and record.steps_done == 80
    # 157 steps, the evaluations at 120, 160 and 200, and two thirds of the one at 80
    assert record.cpu_s_saved == pytest.approx(157 * TRAIN + (3 + 2 / 3) * EVALUATION, rel=0.02)


def test_a_stop_before_any_evaluation_finished_is_not_measured_from_training_steps_alone():
    recorded = Recorded()
    recorded.first_step()
    recorded.sample(30, SETUP + 29.5 * TRAIN)
    recorded.sample(40, SETUP + 39 * TRAIN + 0.01, fraction=1.0, evaluating=True)  # inside the first evaluation
    record = recorded.stop()
    assert [w.values.get("cpu_s") for w in record.windows] == [None]  # its window never came: no boundary
    assert accounting.step_cost(record) is None and record.saved_basis == "unknown"
    # a finished peer of its family gives it a rate
    peer = accounting.account(TrialRecord("w/p/r0", 1, "w", "p", 0, {"hidden": 1024, "lr": 0.1},
                                          TrialStatus.COMPLETED, steps_done=PLANNED, steps_planned=PLANNED,
                                          cpu_s=6.0, windows=(Window(40, {"cpu_s": 3.5}), Window(80, {"cpu_s": 3.9})),
                                          info={accounting.FIRST_STEP_CPU_S: 3.0}))
    assert recorded.stop(peers=[peer]).saved_basis == "peers"


def test_a_window_drained_after_the_stop_was_decided_is_still_a_boundary():
    # the watchdog decided the stop first; the executor drains the worker's pipe before it makes the record
    recorded = Recorded()
    recorded.first_step()
    recorded.sample(39, SETUP + 38.5 * TRAIN)
    recorded.decide_stop()
    train = (EVAL_EVERY - 1) * TRAIN
    recorded.window(EVAL_EVERY, SETUP + train + EVALUATION, train, train + EVALUATION)
    record = recorded.trial.record(now=1.0)
    assert record.status is TrialStatus.STOPPED and record.windows[0].values["cpu_s"] == pytest.approx(3.42)
    assert record.saved_basis == "measured"
    assert record.cpu_s_saved == pytest.approx(197 * TRAIN + 4 * EVALUATION, rel=0.02)
