"""What the parent sends a worker: one trial to run."""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
import math
import os
from typing import Any, Callable, Iterable, Mapping

from frugalml import accounting
from frugalml.budgets import BUDGETS, SAMPLE, WINDOW
from frugalml.exceptions import ConfigError, one_line
from frugalml.records import StopInfo, TrialRecord, TrialStatus, Window

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
    predicted_cpu_s_per_step: float | None = None  # the cost model's, for a stop before the first window


def resolve_train_function(train: TrainFunction | str) -> TrainFunction:
    """Import ``"module:function"`` or return the callable as it is."""
    if callable(train):
        return train
    module_name, _, attribute = str(train).partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"Training function {train!r} must look like 'package.module:function'.")
    if module_name.endswith(".py"):
        raise ConfigError(f"Training function {train!r} names a file; name its module: "
                          f"'{os.path.basename(module_name)[:-3]}:{attribute}' (found beside the study file).")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        parts = module_name.split(".")
        packages = {".".join(parts[:i + 1]) for i in range(len(parts))}  # the module and the packages above it
        missing = isinstance(error, ModuleNotFoundError) and error.name in packages
        where = ("; the module must be importable: beside the study file, in the working folder, installed, or on "
                 "PYTHONPATH") if missing else ""  # not a module its own imports miss
        raise ConfigError(f"Cannot import training function {train!r}: {error}{where}.") from None
    except Exception as error:  # noqa: BLE001 - its import failed (np.float, say): one line, as any user's mistake
        raise ConfigError(f"Cannot import training function {train!r}: its module raised "
                          f"{one_line(error, typed=True).rstrip('.')}.") from None
    function = getattr(module, attribute, None)
    if function is None:
        defined = sorted(name for name, value in vars(module).items() if not name.startswith("_")
                         and inspect.isfunction(value) and value.__module__ == module.__name__)
        raise ConfigError(f"Cannot import training function {train!r}: module {module_name!r} has no {attribute!r}; "
                          f"its functions: {', '.join(defined) or 'none'}.")
    if not callable(function):
        raise ConfigError(f"Training function {train!r} is not callable.")
    return function


def trial_record(task: TrialTask, status: TrialStatus, peers: Iterable[TrialRecord] = (),
                 **fields: Any) -> TrialRecord:
    """The record of ``task``'s trial: its identity from the task, the outcome from ``fields``.

    A budget stop's value is on record as the peak of its metric (the sample that broke
    it may have come after the last window). A stopped trial is credited with the
    compute it did not spend by :func:`frugalml.accounting.account`, from its own steady
    windows, else ``peers`` (finished trials of its workload), else the task's predicted
    per-step cost.
    """
    stop = fields.get("stop")
    if stop is not None:
        fields["windows"] = _with_stop_peak(tuple(fields.get("windows", ())), stop, fields.get("steps_done", 0))
    record = TrialRecord(
        trial_id=task.trial_id, number=task.number, workload=task.workload, config_id=task.config_id,
        repeat=task.repeat, params=dict(task.params), status=status, steps_planned=task.steps_planned, **fields,
    )
    return accounting.account(record, peers, task.predicted_cpu_s_per_step)


def _with_stop_peak(windows: tuple[Window, ...], stop: StopInfo, steps_done: int) -> tuple[Window, ...]:
    """``windows`` whose peak of the stop's metric is at least the value that broke the budget."""
    budget = BUDGETS.get(stop.rule)  # a measured stop: not a predicted_ one, whose value is a forecast
    if (budget is None or budget.scope not in (SAMPLE, WINDOW) or not stop.is_system
            or not math.isfinite(stop.value)):
        return windows
    metric = budget.metric
    peak = max((w.values[metric] for w in windows if metric in w.values), default=None)
    if peak is not None and peak >= stop.value:
        return windows
    if windows and windows[-1].step >= steps_done:
        last = windows[-1]
        return (*windows[:-1], Window(last.step, {**last.values, metric: stop.value}))
    return (*windows, Window(steps_done, {metric: stop.value}))
