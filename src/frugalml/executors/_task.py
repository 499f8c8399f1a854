"""What the parent sends a worker: one trial to run."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from frugalml.exceptions import ConfigError
from frugalml.records import TrialRecord, TrialStatus

TrainFunction = Callable[..., None]


@dataclass(frozen=True)
class TrialTask:
    """One trial to run in a worker: ``train(trial, **train_kwargs)``.

    ``train`` is a module-level function or a ``"module:function"`` string, so it can
    be sent to a worker process.
    """

    trial_id: str
    number: int
    workload: str
    config_id: str
    repeat: int
    params: Mapping[str, Any]
    train: TrainFunction | str
    train_kwargs: Mapping[str, Any] = field(default_factory=dict)
    eval_every: int = 100
    steps_planned: int | None = None
    cpus: int = 1
    gpus: float = 0.0
    artifact_dir: str | None = None  # where the trial's logged model and reference go


def resolve_train_function(train: TrainFunction | str) -> TrainFunction:
    """Import ``"module:function"`` or return the callable as it is."""
    if callable(train):
        return train
    module_name, _, attribute = str(train).partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"Training function {train!r} must look like 'package.module:function'.")
    try:
        function = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"Cannot import training function {train!r}: {error}.") from None
    if not callable(function):
        raise ConfigError(f"Training function {train!r} is not callable.")
    return function


def trial_record(task: TrialTask, status: TrialStatus, **fields: Any) -> TrialRecord:
    """The record of ``task``'s trial: its identity from the task, the outcome from ``fields``.

    A stopped trial with a planned length is credited with the steps it did not run,
    at the CPU-seconds per step it had used (a trial stopped in step 1 spent ~1 step).
    """
    steps_done = fields.get("steps_done", 0)
    if status is TrialStatus.STOPPED and task.steps_planned:
        steps_saved = max(0, task.steps_planned - steps_done)
        fields.setdefault("steps_saved", steps_saved)
        fields.setdefault("cpu_s_saved", steps_saved * fields.get("cpu_s", 0.0) / max(steps_done, 1))
    return TrialRecord(
        trial_id=task.trial_id, number=task.number, workload=task.workload, config_id=task.config_id,
        repeat=task.repeat, params=dict(task.params), status=status, steps_planned=task.steps_planned, **fields,
    )
