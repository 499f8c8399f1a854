"""The record of a trial whose Ray task died, and why it died, in one line."""

from __future__ import annotations

from typing import Any, Mapping

from frugalml.exceptions import one_line
from frugalml.executors._lifecycle import TrialLifecycle
from frugalml.executors._ray_connect import import_ray
from frugalml.executors._task import TrialTask
from frugalml.metrics import CPU_S, ENERGY_J
from frugalml.records import TrialRecord
from frugalml.trial import PROGRESS_SIZE


def failed_record(task: TrialTask, started: float, error: BaseException, last: Mapping[str, Any]) -> TrialRecord:
    """The record of ``task``, started at ``started`` (``time.monotonic()``), whose Ray task died
    with ``error``: its steps and windows stayed on the node; ``last`` is what the node last
    told the channel (node, steps, CPU-seconds, joules)."""
    trial = TrialLifecycle(task, [0.0] * PROGRESS_SIZE, started)
    info: dict[str, Any] = {}
    trial.failure = why_failed(error, info)
    if "node" in last:
        info["node"] = last["node"]
    if last.get(ENERGY_J):  # what its node last said: the study's joules keep counting it
        info[ENERGY_J] = float(last[ENERGY_J])
    return trial.record(steps_done=int(last.get("steps", 0)), cpu_s=float(last.get(CPU_S, 0.0)), info=info)


def why_failed(error: BaseException, info: dict[str, Any]) -> str:
    """What killed a trial's Ray task, in one line (``info`` gets ``ray_error`` and, for an
    import error, ``user_error``)."""
    exceptions = import_ray().exceptions
    info["ray_error"] = type(error).__name__
    cause = getattr(error, "cause", None)
    if isinstance(error, exceptions.RayTaskError) and isinstance(cause, ImportError):
        message = (
            f"cannot load the trial on its Ray node: {one_line(cause)}; install the training code "
            "on every node (or pass a runtime_env)"
        )
        info["user_error"] = True
    elif isinstance(error, exceptions.OutOfMemoryError):
        message = f"Ray's memory monitor killed the worker: {one_line(error)}"
    elif isinstance(error, exceptions.WorkerCrashedError):
        message = "Ray worker died during the trial (killed, or its node ran out of memory)"
    elif isinstance(error, exceptions.NodeDiedError):
        message = f"Ray node died during the trial: {one_line(error)}"
    elif isinstance(error, exceptions.TaskCancelledError):
        message = "Ray task cancelled"
    else:
        message = f"Ray task failed: {one_line(cause or error)}"
    return message
