"""Executors run trials: locally in worker processes (watchdog in the parent), on Ray, or in-process.

Every executor implements :class:`Executor` (submit / poll / free slots / running
CPU-seconds / shutdown), takes one :class:`ExecutorSettings` and reads the study's
finished trials from a :class:`StudyState`. Whatever runs the trial, its messages
(:mod:`frugalml.messages`) and system samples go to one ``TrialLifecycle``
(``_lifecycle.py``), the one place that makes its windows, the view rules read and its record.
"""

from __future__ import annotations

from frugalml.executors._base import Executor, ExecutorSettings, StudyState
from frugalml.executors._inline import InProcessExecutor
from frugalml.executors._local import LocalExecutor, check_local_resources, kill_tree, preload, reset_preload, worker_context
from frugalml.executors._ray_connect import connect as connect_ray
from frugalml.executors._ray_connect import shared_connection
from frugalml.executors._task import TrialTask, resolve_train_function, trial_record

__all__ = [
    "Executor",
    "ExecutorSettings",
    "InProcessExecutor",
    "LocalExecutor",
    "StudyState",
    "TrialTask",
    "check_local_resources",
    "connect_ray",
    "kill_tree",
    "make_executor",
    "resolve_train_function",
    "shared_connection",
    "trial_record",
    "preload",
    "reset_preload",
    "worker_context",
]


def make_executor(backend: str, settings: ExecutorSettings, state: StudyState, *, address: str | None = None) -> Executor:
    """The executor of a study's ``backend``: ``"local"`` or ``"ray"``."""
    if backend == "ray":
        from frugalml.executors._ray import RayExecutor  # lazy: Ray takes seconds to import

        return RayExecutor(settings, state, address=address)
    return LocalExecutor(settings, state)
