"""Immutable records of what a trial did: its evaluation windows, stop and result.

A window's values are keyed by the metric names of :mod:`frugalml.metrics`.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from frugalml.budgets import as_violation, budget_of_rule
from frugalml.metrics import (ACCURACY, CPU_PERCENT, ENERGY_J, MEAN_STEP_MS, MEMORY_MB, MODEL_MB, PEAK_MEMORY_MB,
                              PREDICT_MS, RMSE, VAL_LOSS)


class StopKind(str, enum.Enum):
    """What a stop means for the trial's result (stored as its value)."""

    SYSTEM = "system"  # a resource budget: the trial is infeasible
    ML = "ml"  # a learning rule: the trial stays feasible
    STUDY = "study"  # the study's compute budget ran out: the trial is incomplete

    def __str__(self) -> str:
        return self.value


class TrialStatus(str, enum.Enum):
    """Lifecycle of a trial. ``STOPPED`` means a stopping rule ended it early."""

    RUNNING = "running"
    COMPLETED = "completed"
    STOPPED = "stopped"
    FAILED = "failed"
    SKIPPED = "skipped"

    @property
    def finished(self) -> bool:
        return self is not TrialStatus.RUNNING


@dataclass(frozen=True)
class Window:
    """Metrics of one evaluation window, ending at ``step`` (1-based step count)."""

    step: int
    values: Mapping[str, float]

    def get(self, name: str, default: float | None = None) -> float | None:
        return self.values.get(name, default)



def is_estimate(energy_source: str | None) -> bool:
    """True when an ``energy_source`` says its joules are (partly) estimated, not measured."""
    return "estimate" in (energy_source or "")


@dataclass(frozen=True)
class StopInfo:
    """Which rule stopped a trial, where, and by how much.

    ``kind`` (a :class:`StopKind`) is ``SYSTEM`` for resource budgets (the trial is
    infeasible), ``ML`` for rules about learning (patience, median, divergence: an ML stop
    keeps the trial feasible) and ``STUDY`` when the study's budget ran out. ``latency_ms`` is the time from the sample that broke the budget
    to the worker being gone, for stops enforced by the watchdog.
    """

    rule: str
    kind: str
    step: int
    value: float
    threshold: float
    message: str
    latency_ms: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.kind, StopKind) and self.kind in StopKind._value2member_map_:
            object.__setattr__(self, "kind", StopKind(self.kind))  # as read back from a store

    @property
    def is_system(self) -> bool:
        return self.kind == StopKind.SYSTEM

    @property
    def violation(self) -> float:
        """``value / threshold - 1`` (``threshold / value - 1`` for a minimum such as throughput):
        how far past its budget a system stop was, as Optuna's constraints read it (> 0:
        infeasible). At least 1e-6, also where the value is unknown or was read below the
        limit (a CUDA out-of-memory on a shared device)."""
        threshold = self.threshold or 0.0
        if (b := budget_of_rule(self.rule)) is not None:
            return b.violation(self.value, threshold)
        return as_violation(self.value / threshold - 1.0 if threshold > 0 else math.nan)


@dataclass(frozen=True)
class TrialRecord:
    """Everything persisted about one trial.

    ``trial_id`` is stable across resumes: ``"<workload>/<config_id>/r<repeat>"``.
    Its joules live in ``info`` (``energy_j``, ``energy_source``, ``energy_assumption``),
    read through :attr:`energy_j`, :attr:`energy_source` and :attr:`energy_j_saved`; so do
    what a stop saved was based on (:attr:`saved_basis`) and where in the trial it came
    (:attr:`stop_phase`). ``cpu_s_saved`` and the joules saved are worked out by
    :mod:`frugalml.accounting` alone; ``cpu_s_saved`` is 0 where the basis is ``unknown``.
    """

    trial_id: str
    number: int
    workload: str
    config_id: str
    repeat: int
    params: Mapping[str, Any]
    status: TrialStatus
    steps_done: int = 0
    steps_planned: int | None = None
    wall_s: float = 0.0
    cpu_s: float = 0.0
    steps_saved: int = 0
    cpu_s_saved: float = 0.0
    stop: StopInfo | None = None
    error: str | None = None
    train_loss: tuple[float, ...] = ()
    windows: tuple[Window, ...] = ()
    info: Mapping[str, Any] = field(default_factory=dict)

    @property
    def feasible(self) -> bool:
        """True when the trial ran without breaking a resource budget."""
        if self.status is TrialStatus.COMPLETED:
            return True
        return self.status is TrialStatus.STOPPED and self.stop is not None and not self.stop.is_system

    @property
    def energy_j(self) -> float | None:
        """Joules the trial used; None where not monitored (skipped trials)."""
        value = self.info.get(ENERGY_J)
        return float(value) if value is not None else None

    @property
    def energy_source(self) -> str | None:
        """How :attr:`energy_j` was got: ``rapl``, ``nvml``, ``rapl+nvml``, or ``estimate...``
        (then ``info["energy_assumption"]`` states the watts assumed)."""
        return self.info.get("energy_source")

    @property
    def energy_j_saved(self) -> float | None:
        """Joules early stopping saved (see :mod:`frugalml.accounting`); None where unknown,
        0 for a trial that ran to its end and whose joules are known."""
        value = self.info.get("energy_j_saved")
        if value is None and self.status is TrialStatus.COMPLETED and self.energy_j is not None:
            return 0.0
        return float(value) if value is not None else None

    @property
    def saved_basis(self) -> str | None:
        """What ``cpu_s_saved`` rests on: ``measured``, ``peers``, ``predicted`` or ``unknown``
        (None for a trial that saved nothing, or one recorded before the basis was kept)."""
        return self.info.get("saved_basis")

    @property
    def stop_phase(self) -> str | None:
        """Where a stopped trial was when it was stopped: ``train`` (its loop), ``evaluate``
        (after its last planned step) or ``log`` (saving a model or reference data).

        A resource budget broken after training (``evaluate``, ``log``) still makes the trial
        infeasible: the budget is on the trial's whole process tree, the run did not finish
        (no final evaluation, no model), and whoever ships the configuration pays for its
        evaluation and export too. The phase says where, so a user can tell them apart.
        """
        return self.info.get("stop_phase")

    def serving(self, metric: str) -> float | None:
        """What :mod:`frugalml.deploy` measured of the trial's model (``predict_ms``, ``model_mb``,
        ``throughput_rows_s``, ``predict_memory_mb``); None where it was not measured."""
        value = (self.info.get("serving") or {}).get(metric)
        return float(value) if value is not None else None

    def last(self, name: str) -> float | None:
        """Value of ``name`` in the latest window that has it."""
        for window in reversed(self.windows):
            value = window.values.get(name)
            if value is not None:
                return value
        return None

    def peak(self, name: str) -> float | None:
        """Largest value of ``name`` over all windows."""
        values = [w.values[name] for w in self.windows if name in w.values]
        return max(values) if values else None

    def mean(self, name: str) -> float | None:
        values = [w.values[name] for w in self.windows if name in w.values]
        values = [v for v in values if math.isfinite(v)]
        return sum(values) / len(values) if values else None

    def summary(self) -> dict[str, float | None]:
        """Key figures for tables: final ML metrics, mean step time, peak memory, and the
        serving latency and model size where they were measured."""
        return {
            VAL_LOSS: self.last(VAL_LOSS),
            ACCURACY: self.last(ACCURACY),
            RMSE: self.last(RMSE),
            MEAN_STEP_MS: self.mean(MEAN_STEP_MS),
            PEAK_MEMORY_MB: self.peak(MEMORY_MB),
            CPU_PERCENT: self.mean(CPU_PERCENT),
            PREDICT_MS: self.serving(PREDICT_MS),
            MODEL_MB: self.serving(MODEL_MB),
        }
