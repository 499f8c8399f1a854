"""The local executor with real worker processes: budgets, failures, accounting."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import psutil
import pytest

import trainers
from frugalml.exceptions import ConfigError
from frugalml.executors import LocalExecutor, TrialTask
from frugalml.executors._local import worker_context
from frugalml.records import TrialStatus
from frugalml.stopping import MemoryBudget, StepTimeBudget


def run_one(train, rules=(), params=None, eval_every=25, hang_timeout_s=600.0, **kwargs):
    executor = LocalExecutor(1, rules=rules, sample_interval_s=0.05, hang_timeout_s=hang_timeout_s)
    task = TrialTask(
        trial_id=f"t/{uuid.uuid4().hex[:6]}/r0", number=0, workload="t", config_id="c", repeat=0,
        params=params or {}, train=train, train_kwargs=kwargs, eval_every=eval_every, steps_planned=kwargs.get("steps"),
    )
    executor.submit(task)
    finished = []
    while not finished:
        finished = executor.poll(1.0)
    return finished[0]


def test_completed_trial_records_every_step_and_window():
    record = run_one(trainers.steady, steps=100, step_s=0.002, cpu_clock=True)
    assert record.status is TrialStatus.COMPLETED
    assert record.steps_done == 100 and len(record.train_loss) == 100
    assert [w.step for w in record.windows] == [25, 50, 75, 100]
    window = record.windows[-1].values
    assert 1.9 < window["mean_step_ms"] < 200  # steps of 2 CPU-ms: at least 2 ms of wall time; in ms, not s
    for name in ("val_loss", "train_loss", "memory_mb", "cpu_percent", "wall_s", "throughput_sps"):
        assert name in window, name
    assert "gpu_util_percent" not in window  # no GPU here: omitted, not zero
    assert record.cpu_s > 0.2  # 100 steps of 2 CPU-ms


def test_a_worker_sees_the_drivers_environment_of_now_not_of_when_the_forkserver_started(monkeypatch):
    """The forkserver outlives a study (the next one with the same imports reuses it), and a forked
    worker inherits its environment: a variable set in a notebook between two studies was unseen."""
    monkeypatch.setenv("FRUGALML_TEST_VALUE", "1")
    first = run_one(trainers.reports_environment, eval_every=2)
    monkeypatch.setenv("FRUGALML_TEST_VALUE", "2")
    monkeypatch.setenv("FRUGALML_TEST_OTHER", "3")
    second = run_one(trainers.reports_environment, eval_every=2)
    other = run_one(trainers.reports_environment, eval_every=2, name="FRUGALML_TEST_OTHER")
    monkeypatch.delenv("FRUGALML_TEST_VALUE")
    gone = run_one(trainers.reports_environment, eval_every=2)
    assert [r.last("val_loss") for r in (first, second, other, gone)] == [1.0, 2.0, 3.0, -1.0]


def test_memory_accounting_matches_a_known_200_mb_allocation():
    record = run_one(trainers.allocate, megabytes=200, at_step=100, steps=300, eval_every=50)
    assert record.status is TrialStatus.COMPLETED
    before = next(w for w in record.windows if w.step == 50).values["memory_mb"]
    after = next(w for w in record.windows if w.step == 300).values["memory_mb"]
    assert after - before == pytest.approx(200, rel=0.05)


def test_a_trial_read_only_after_its_worker_exited_still_has_memory_in_every_window():
    # The CI failure: a short trial's windows were all read after the worker had exited,
    # when there was no process tree left to sample.
    executor = LocalExecutor(1, sample_interval_s=0.05)
    worker_context()  # the forkserver, whose child the worker will be
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    executor.submit(TrialTask(
        trial_id="t/late/r0", number=0, workload="t", config_id="c", repeat=0, params={},
        train=trainers.allocate, train_kwargs={"megabytes": 50, "at_step": 30, "steps": 60, "sleep_s": 0.005},
        eval_every=20,
    ))
    (worker,) = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    worker.wait(timeout=30)  # not polled: the parent reads nothing while the worker runs
    records = []
    while not records:
        records = executor.poll(1.0)
    memory = [w.values.get("memory_mb") for w in records[0].windows]
    assert len(memory) == 3 and all(m is not None and m > 10 for m in memory), memory
    assert memory[2] - memory[0] == pytest.approx(50, rel=0.2)  # each window its own figure, not one shared


def test_memory_of_a_child_process_counts():
    record = run_one(trainers.allocate_in_child, megabytes=200, steps=300, eval_every=50)
    before = next(w for w in record.windows if w.step == 50).values["memory_mb"]
    after = next(w for w in record.windows if w.step == 300).values["memory_mb"]
    assert after - before == pytest.approx(200, rel=0.10)


def test_memory_budget_stops_a_trial_inside_one_long_step():
    record = run_one(trainers.allocate_in_one_step, rules=[MemoryBudget(300)], megabytes=800, steps=50)
    assert record.status is TrialStatus.STOPPED
    assert record.stop.rule == "max_memory_mb" and record.stop.kind == "system"
    assert 300 < record.stop.value < 800
    assert record.stop.step == 4  # killed during step 5, before it ever reported
    assert record.stop.latency_ms is not None and record.stop.latency_ms < 1000
    assert record.steps_saved == 46  # stopped before its first window, with no peers or cost model:
    assert record.saved_basis == "unknown" and record.cpu_s_saved == 0  # its saving is unknown, not a number
    assert record.peak("memory_mb") == record.stop.value  # the value that broke the budget is on record


def test_memory_budget_leaves_a_trial_under_it_alone():
    record = run_one(trainers.allocate, rules=[MemoryBudget(1000)], megabytes=100, steps=200)
    assert record.status is TrialStatus.COMPLETED


def test_step_time_budget_stops_slow_steps_only():
    # 1-ms steps against a 20-ms budget: a busy-wait step is wall time, and on 2 cores shared with the rest of
    # the suite and a profiler sampling every process, 1-ms steps once averaged over 5 ms in a window
    slow = run_one(trainers.steady, rules=[StepTimeBudget(20)], steps=200, step_s=0.04)
    fast = run_one(trainers.steady, rules=[StepTimeBudget(20)], steps=200, step_s=0.001)
    assert slow.status is TrialStatus.STOPPED and slow.stop.rule == "max_mean_step_ms"
    assert slow.stop.value > 20 and slow.steps_done < 200
    assert fast.status is TrialStatus.COMPLETED


def test_crash_is_recorded_as_failed_with_its_reason():
    record = run_one(trainers.crash, at_step=10)
    assert record.status is TrialStatus.FAILED
    assert "RuntimeError: boom at step 10" in record.error
    assert record.steps_done == 9


def test_segfault_is_recorded_as_failed():
    record = run_one(trainers.segfault)
    assert record.status is TrialStatus.FAILED
    assert "SIGSEGV" in record.error


def _memory_cgroup(limit_mb: int) -> Path | None:
    root = Path("/sys/fs/cgroup/memory")
    if root.is_dir() and os.access(root, os.W_OK):
        group = root / f"frugalml-test-{uuid.uuid4().hex[:8]}"
        group.mkdir()
        (group / "memory.limit_in_bytes").write_text(str(limit_mb * 2**20))
        return group
    unified = Path("/sys/fs/cgroup")
    if (unified / "cgroup.controllers").exists() and os.access(unified, os.W_OK):
        group = unified / f"frugalml-test-{uuid.uuid4().hex[:8]}"
        group.mkdir()
        (group / "memory.max").write_text(str(limit_mb * 2**20))
        return group
    return None


def test_trial_killed_by_the_kernel_oom_killer_is_recorded_as_failed():
    group = _memory_cgroup(300)
    if group is None:
        pytest.skip("needs a writable memory cgroup to provoke a real kernel OOM kill")
    try:
        record = run_one(trainers.oom_in_cgroup, cgroup=str(group), megabytes=2000)
    finally:
        group.rmdir()
    assert record.status is TrialStatus.FAILED
    assert "SIGKILL" in record.error and "OOM" in record.error


def test_hung_trial_is_killed_and_failed():
    record = run_one(trainers.hangs, hang_timeout_s=1.0)
    assert record.status is TrialStatus.FAILED and record.error.startswith("hung")


def test_gpus_per_trial_gives_each_worker_slot_its_own_device_fake_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")  # declared devices: no real GPU here
    executor = LocalExecutor(2, sample_interval_s=0.05, gpus_per_trial=1)
    for number in range(2):
        executor.submit(TrialTask(
            trial_id=f"t/g{number}/r0", number=number, workload="t", config_id=f"g{number}", repeat=0, params={},
            train=trainers.note_gpu_devices, train_kwargs={"steps": 400}, eval_every=100,
        ))
    records = []
    while len(records) < 2:
        records += executor.poll(1.0)
    assert sorted(r.info["cuda_visible_devices"] for r in records) == ["3", "5"]


def test_gpus_per_trial_without_a_visible_gpu_fails_before_any_trial(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # hides any real GPU too
    with pytest.raises(ConfigError, match="gpus_per_trial = 1 but 0 NVIDIA GPU"):
        LocalExecutor(2, gpus_per_trial=1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(ConfigError, match="gpus_per_trial = 2 but 1 NVIDIA GPU"):
        LocalExecutor(1, gpus_per_trial=2)
