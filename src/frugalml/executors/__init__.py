"""Executors run trials: locally in worker processes (watchdog in the parent)."""

from frugalml.executors._local import LocalExecutor, kill_tree, worker_context
from frugalml.executors._task import TrialTask, resolve_train_function

__all__ = ["LocalExecutor", "TrialTask", "kill_tree", "make_executor", "resolve_train_function", "worker_context"]


def make_executor(backend: str, workers: int, address: str | None = None, **options):
    """The executor for ``backend`` ("local" or "ray"); ``options`` go to its constructor.

    Every executor offers ``submit(task)``, ``poll(timeout) -> list[TrialRecord]``,
    ``free_slots``, ``running``, ``running_cpu_s()`` and ``shutdown()``.
    """
    if backend == "ray":
        from frugalml.executors._ray import RayExecutor

        return RayExecutor(workers, address=address, **options)
    return LocalExecutor(workers, **options)
