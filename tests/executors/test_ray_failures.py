"""Why a trial's Ray task died, in one line, and the record the driver makes of it from what
the node last said; Ray's exceptions are built here, no cluster is started."""

from __future__ import annotations

import time

import pytest

ray = pytest.importorskip("ray", reason="the Ray backend needs the 'ray' extra: pip install 'frugalml[ray]'")

from frugalml.executors import TrialTask  # noqa: E402
from frugalml.executors._ray_failures import failed_record, why_failed  # noqa: E402
from frugalml.records import TrialStatus  # noqa: E402


@pytest.mark.parametrize(("error", "expected"), [
    (ray.exceptions.WorkerCrashedError(), "Ray worker died during the trial"),
    (ray.exceptions.NodeDiedError("node 10.0.0.2 is gone\nmore"), "Ray node died during the trial: node 10.0.0.2 is gone"),
    (ray.exceptions.OutOfMemoryError("task was killed\ndetails"), "Ray's memory monitor killed the worker: task was killed"),
    (ray.exceptions.TaskCancelledError(), "Ray task cancelled"),
    (RuntimeError("boom\ntraceback"), "Ray task failed: boom"),
])
def test_each_way_a_ray_task_dies_is_one_line(error, expected):
    info: dict = {}
    message = why_failed(error, info)
    assert message.startswith(expected) and "\n" not in message
    assert info == {"ray_error": type(error).__name__}


def test_training_code_missing_on_the_node_is_a_user_error():
    error = ray.exceptions.RayTaskError("run_on_node", "traceback", ModuleNotFoundError("No module named 'mytrain'"))
    info: dict = {}
    message = why_failed(error, info)
    assert message.startswith("cannot load the trial on its Ray node: No module named 'mytrain'; install")
    assert info == {"ray_error": "RayTaskError", "user_error": True}


def test_the_record_of_a_dead_task_keeps_what_its_node_last_said():
    task = TrialTask(trial_id="w/c/r0", number=3, workload="w", config_id="c", repeat=0, params={"lr": 0.1},
                     train="trainers:steady", train_kwargs={}, steps_planned=100)
    last = {"node": {"ip": "10.0.0.2", "id": "n2"}, "steps": 40, "cpu_s": 2.5, "energy_j": 30.0}
    record = failed_record(task, time.monotonic() - 1.0, ray.exceptions.WorkerCrashedError(), last)
    assert record.status is TrialStatus.FAILED and record.error.startswith("Ray worker died")
    assert (record.steps_done, record.cpu_s, record.energy_j) == (40, 2.5, 30.0)
    assert record.info["node"] == last["node"] and record.info["ray_error"] == "WorkerCrashedError"
    assert record.wall_s >= 1.0
