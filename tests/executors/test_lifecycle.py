"""A trial's lifecycle: messages and samples in, its view and record out, the same for every executor."""

from __future__ import annotations

import math
import pickle
import uuid

import pytest

from frugalml.accounting import FIRST_STEP_CPU_S
from frugalml.executors import InProcessExecutor, LocalExecutor, TrialTask
from frugalml.executors._gpu import gpu_out_of_memory
from frugalml.executors._lifecycle import TrialLifecycle, failed
from frugalml.messages import Done, Failed, FirstStep, Info, Metrics, Plan, WindowEnd
from frugalml.records import StopInfo, TrialStatus
from frugalml.executors import StudyState
from frugalml.stopping import GpuMemoryBudget
from frugalml.trial import PROGRESS_PHASE, PROGRESS_SIZE, PROGRESS_STEPS, PHASE_LOG

REPORTED_J = 1e9  # a training function's own "energy_j" and "cpu_s": the measured ones stay


def task(**overrides) -> TrialTask:
    fields = dict(trial_id=f"t/{uuid.uuid4().hex[:6]}/r0", number=0, workload="w", config_id="c", repeat=0,
                  params={"lr": 0.1}, train="m:f", eval_every=10)
    return TrialTask(**{**fields, **overrides})


def window(step: int, *, after_loop: bool = False, **fields) -> WindowEnd:
    return WindowEnd(**{"step": step, "n_steps": 10, "train_s": 0.5, "samples": 40, "losses": [1.0] * 10,
                        "train_loss": 1.0, "metrics": {}, "wall_s": step / 10, "after_loop": after_loop, **fields})


def lifecycle(steps: int = 0) -> TrialLifecycle:
    progress = [0.0] * PROGRESS_SIZE
    progress[PROGRESS_STEPS] = steps
    return TrialLifecycle(task(), progress, started=0.0)


def test_a_recorded_sequence_becomes_windows_info_and_a_completed_record():
    trial = lifecycle(steps=25)
    sequence = [
        Metrics(0, {"val_loss": 3.0}),  # before any window: joins the first
        Plan(25), FirstStep(cpu_s=0.25), Info({"device": "cpu"}),
        window(10, metrics={"val_loss": 2.0}, cpu_s=1.0, own_memory_mb=30.0),
        Metrics(10, {"accuracy": 0.5, "energy_j": REPORTED_J, "cpu_s": REPORTED_J}),  # a second report
        window(20, metrics={"val_loss": 1.5}, cpu_s=2.0),
        window(25, after_loop=True, cpu_s=2.5),  # flushed after the loop: not a step boundary
        Done(steps=25, cpu_s=2.6),
    ]
    samples = [{"cpu_s": 1.0, "memory_mb": 40.0, "energy_j": 10.0}, {"cpu_s": 2.0, "memory_mb": 45.0, "energy_j": 20.0},
               {"cpu_s": 2.5, "memory_mb": 45.0, "energy_j": 25.0}]
    for message in sequence:
        if isinstance(message, WindowEnd):
            trial.observe(samples.pop(0))
        trial.receive(message, now=message.wall_s if isinstance(message, WindowEnd) else None)
    record = trial.record(now=3.0, info={"energy_j": 26.0})
    assert record.status is TrialStatus.COMPLETED and record.error is None and record.stop is None
    assert record.steps_done == 25 and record.steps_planned == 25 and record.cpu_s == 2.6 and record.wall_s == 3.0
    assert record.info["device"] == "cpu" and record.info[FIRST_STEP_CPU_S] == 0.25 and record.energy_j == 26.0
    first, second, last = (w.values for w in record.windows)
    assert [w.step for w in record.windows] == [10, 20, 25] and len(record.train_loss) == 30
    assert first["val_loss"] == 2.0 and first["accuracy"] == 0.5  # the window's report wins over the early one
    assert first["energy_j"] == 10.0 and first["cpu_s"] == 1.0  # measured, not the second report's
    assert first["memory_mb"] == 40.0 and first["mean_step_ms"] == 50.0 and first["throughput_sps"] == 80.0
    assert second["cpu_percent"] == pytest.approx(1.0 / 1.0 * 100.0)  # 1 CPU-s in 1 s
    assert "cpu_s" not in last and last["energy_j"] == 25.0


def test_a_sample_taken_after_a_window_ended_counts_toward_the_next_window_not_that_one():
    # the parent reads messages late on a busy machine: a sample taken meanwhile (the model being
    # logged, say) is not the window's; one taken before it ended is, and so is the worker's own figure
    trial = lifecycle(steps=20)
    trial.observe({"cpu_s": 0.5, "memory_mb": 300.0}, at=1.0)
    trial.observe({"cpu_s": 0.9, "memory_mb": 410.0}, at=2.5)  # after the window ended at 2.0
    trial.receive(window(10, cpu_s=0.8, own_memory_mb=320.0, ended_at=2.0), now=3.0)
    trial.observe({"cpu_s": 1.2, "memory_mb": 350.0}, at=3.5)
    trial.receive(window(20, cpu_s=1.3, ended_at=4.0), now=4.1)
    trial.observe({"cpu_s": 1.4, "memory_mb": 600.0}, at=4.5)  # after the last window: only a stop's final window has it
    assert [w.values["memory_mb"] for w in trial.windows] == [320.0, 410.0]
    assert trial._final_window(20, now=5.0).values["memory_mb"] == 600.0
    # no sample before a window's end: the latest one stands in (an upper bound, a child's memory kept)
    late = lifecycle(steps=10)
    late.observe({"cpu_s": 0.5, "memory_mb": 200.0}, at=3.0)
    late.receive(window(10, cpu_s=0.4, own_memory_mb=150.0, ended_at=2.0), now=3.0)
    assert late.windows[0].values["memory_mb"] == 200.0


def test_every_message_survives_a_pipe():
    oom = gpu_out_of_memory(RuntimeError("CUDA error: out of memory"))
    for message in (Plan(3), Info({"a": 1}), FirstStep(0.1), Metrics(1, {"x": 1.0}), window(10, cpu_s=1.0),
                    Done(3, 0.5), Failed("E: x", "tb", False, 0.5, oom)):
        assert pickle.loads(pickle.dumps(message)) == message


def test_one_classifier_a_stop_wins_then_the_executors_failure_then_the_last_message():
    stop = StopInfo(rule="max_memory_mb", kind="system", step=5, value=500.0, threshold=400.0, message="over")
    trial = lifecycle(steps=5)
    trial.stop, trial.stop_phase = stop, "train"
    trial.receive(Done(5, 1.0))  # a training function that swallowed the stop still stopped
    record = trial.record(now=1.0)
    assert record.status is TrialStatus.STOPPED and record.stop.rule == "max_memory_mb"
    assert record.info["stop_phase"] == "train"

    trial = lifecycle(steps=5)
    trial.failure = "hung: no step for 9 s"
    assert trial.record(now=1.0).error == "hung: no step for 9 s"

    trial = lifecycle(steps=5)
    assert trial.record(now=1.0, no_outcome="worker killed by SIGKILL").error == "worker killed by SIGKILL"


def test_a_failure_keeps_its_traceback_and_a_gpu_out_of_memory_error_is_a_budget_stop():
    try:
        raise ValueError("bad input\nsecond line")
    except ValueError as error:
        message = failed(error, cpu_s=0.5)
    trial = lifecycle(steps=3)
    trial.observe({"cpu_s": 0.4, "memory_mb": 50.0})
    trial.receive(message)
    record = trial.record(now=1.0)
    assert record.status is TrialStatus.FAILED and record.error == "ValueError: bad input"
    assert "Traceback" in record.info["traceback"] and record.info["user_error"] is False
    assert record.windows[-1].step == 3 and record.windows[-1].values["memory_mb"] == 50.0  # its footprint

    try:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    except RuntimeError as error:
        message = failed(error, cpu_s=0.5)
    trial = lifecycle(steps=3)
    trial.progress[PROGRESS_PHASE] = PHASE_LOG
    trial.receive(message)
    record = trial.record(now=1.0, rules=[GpuMemoryBudget(1000)])
    assert record.status is TrialStatus.STOPPED and record.stop.rule == "max_gpu_memory_mb"
    assert record.stop.threshold == 1000 and record.info["stop_phase"] == "log"


def test_the_view_reads_the_progress_slots_and_the_study_figures():
    trial = lifecycle(steps=12)
    trial.observe({"cpu_s": 3.0, "energy_j": 30.0})
    trial.receive(window(10, cpu_s=3.0), now=1.0)
    state = StudyState()
    view = trial.view(2.0, state, {"cpu_s": 5.0, "energy_j": 50.0})
    assert view.steps_done == 12 and view.cpu_s == 3.0 and view.wall_s == 2.0 and view.windows == trial.windows
    assert view.study_cpu_s == 5.0 and view.study_energy_j == 50.0 and view.sample["energy_j"] == 30.0
    assert trial.view(2.0, state, {}, sample={"memory_mb": 1.0}, at_boundary=True).sample == {"memory_mb": 1.0}


def reports_twice(trial) -> None:
    """Reports at each window's end, then again with figures of its own for what executors measure."""
    for step in range(1, 21):
        if trial.step(loss=1.0 / step, n_samples=4):
            trial.report(val_loss=1.0 / step)
            trial.report(accuracy=0.5, energy_j=REPORTED_J, cpu_s=REPORTED_J)


@pytest.mark.parametrize("executor", [InProcessExecutor, LocalExecutor], ids=["in-process", "local"])
def test_every_executor_keeps_its_measured_joules_and_cpu_seconds_over_reported_ones(executor):
    run = executor(1, **({"sample_interval_s": 0.05} if executor is LocalExecutor else {}))
    run.submit(task(train=reports_twice, steps_planned=20))
    finished = []
    while not finished:
        finished = run.poll(1.0)
    (record,) = finished
    assert record.status is TrialStatus.COMPLETED and [w.step for w in record.windows] == [10, 20]
    for values in (w.values for w in record.windows):
        assert values["accuracy"] == 0.5 and values["val_loss"] < 1.0
        for measured in ("energy_j", "cpu_s"):
            assert math.isfinite(values[measured]) and values[measured] < REPORTED_J, (measured, values)
        assert {"train_loss", "mean_step_ms", "throughput_sps", "wall_s", "cpu_percent"} <= values.keys()
    assert 0 < record.energy_j < REPORTED_J and record.energy_source is not None


def test_a_trial_that_finished_over_a_budget_no_rule_read_is_recorded_stopped():
    """Shorter than the watchdog's tick: its only window, over the memory budget, came with its Done, and the
    watchdog's last read found its process exiting (memory 0). The budgets read both once more at the end."""
    from frugalml.stopping import MemoryBudget, Patience, WallTimeBudget

    def finished(memory_mb: float) -> TrialLifecycle:
        trial = lifecycle(steps=4)
        trial.receive(window(4, after_loop=True, cpu_s=0.04, own_memory_mb=memory_mb), now=0.05)
        trial.receive(Done(steps=4, cpu_s=0.05))
        trial.observe({"cpu_s": 0.05, "memory_mb": 0.0})
        return trial

    # the trial's time budget is not read at the end: the time since it finished is not the trial's
    rules = [MemoryBudget(0.4), Patience(patience=1), WallTimeBudget(0.05)]
    over = finished(20.8)
    assert over.check_finished(rules, over.view(0.06, StudyState(), {}, at_boundary=True)) is not None
    record = over.record(now=0.06)
    assert record.status is TrialStatus.STOPPED and record.stop.rule == "max_memory_mb" and not record.feasible
    assert record.stop.value == pytest.approx(20.8)
    within = finished(0.3)  # within the budgets (viewed at 0.06 s); a learning rule never stops a finished trial
    assert within.check_finished(rules, within.view(0.06, StudyState(), {}, at_boundary=True)) is None
    assert within.record(now=0.06).status is TrialStatus.COMPLETED


def test_a_window_received_before_the_worker_cleared_its_time_is_not_read_twice():
    """The demo's batch 3000 at step 50 of 51: window 50 received, the shared slot still holding its 1.92 s
    (the worker not yet past clearing it): over the 1-step final window that read as a 1,923 ms mean step.
    Here 60 steps are planned, 40 ms a step: the stale second read as 100 ms over the 10-step final window."""
    from frugalml.stopping import StepTimeBudget
    from frugalml.trial import PROGRESS_MARK, PROGRESS_WINDOW_S

    progress = [0.0] * PROGRESS_SIZE
    trial = TrialLifecycle(task(eval_every=25, steps_planned=60), progress, started=0.0)
    for step in (25, 50):
        progress[PROGRESS_STEPS], progress[PROGRESS_WINDOW_S] = step, 1.0
        trial.receive(window(step, n_steps=25, train_s=1.0, cpu_s=step / 10), now=step / 10)
    progress[PROGRESS_MARK] = 5.08  # the last step ended 20 ms ago (a monotonic time, as the worker's)
    view = trial.view(5.1, StudyState(), {})
    assert view.window_train_s == 0.0
    assert StepTimeBudget(60, warmup_windows=0).check(view) is None
    progress[PROGRESS_STEPS], progress[PROGRESS_WINDOW_S], progress[PROGRESS_MARK] = 55, 0.7, 5.6  # the final
    # window's own steps, too slow, are still caught before it ends: 0.7 s over its 10 steps
    assert StepTimeBudget(60, warmup_windows=0).check(trial.view(5.6, StudyState(), {})).value == pytest.approx(70.0)
