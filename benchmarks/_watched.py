"""One trial under the real worker process and watchdog, for benchmarks that time code inside it."""

from __future__ import annotations

from typing import Any, Callable


def run_watched(train: Callable[..., None], kwargs: dict[str, Any]) -> Any:
    """Run ``train(trial, **kwargs)`` as one trial of a ``LocalExecutor`` (pinned, 0.1 s sampling); its record."""
    from frugalml.executors import LocalExecutor, TrialTask

    executor = LocalExecutor(1, sample_interval_s=0.1, pin=True)
    try:
        executor.submit(TrialTask("bench/c/r0", 0, "bench", "c", 0, {}, train, kwargs, eval_every=100))
        records = []
        while not records:
            records = executor.poll(1.0)
    finally:
        executor.shutdown()
    record = records[0]
    assert record.status.value == "completed", record.error
    return record
