"""Executors run trials: locally in worker processes (watchdog in the parent)."""

from frugalml.executors._local import LocalExecutor, kill_tree, worker_context
from frugalml.executors._task import TrialTask, resolve_train_function

__all__ = ["LocalExecutor", "TrialTask", "kill_tree", "resolve_train_function", "worker_context"]
