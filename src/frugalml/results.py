"""Study results: per-configuration aggregates over repeats, the best feasible
configuration, and the compute the stopping rules saved."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from frugalml.records import TrialRecord, TrialStatus
from frugalml.search import Search, objective_values

KEY_METRICS = ("val_loss", "accuracy", "rmse", "mean_step_ms", "peak_memory_mb", "cpu_percent")


@dataclass(frozen=True)
class ConfigSummary:
    """One configuration of one workload, aggregated over its repeats."""

    workload: str
    config_id: str
    params: Mapping[str, Any]
    repeats: int
    feasible: bool
    statuses: tuple[str, ...]
    mean: Mapping[str, float]
    std: Mapping[str, float]
    objective: tuple[float, ...] | None


def summarize(records: Sequence[TrialRecord], search: Search | None = None) -> list[ConfigSummary]:
    """Aggregate trials by (workload, configuration): mean and spread of key metrics."""
    search = search or Search()
    groups: dict[tuple[str, str], list[TrialRecord]] = {}
    for record in records:
        groups.setdefault((record.workload, record.config_id), []).append(record)
    summaries = []
    for (workload, config), group in groups.items():
        mean, std = {}, {}
        for metric in KEY_METRICS:
            values = [v for r in group if (v := r.summary()[metric]) is not None and math.isfinite(v)]
            if values:
                mean[metric] = statistics.fmean(values)
                std[metric] = statistics.stdev(values) if len(values) > 1 else 0.0
        feasible = all(r.feasible for r in group)
        values = objective_values(group, search.objectives) if feasible else None
        summaries.append(
            ConfigSummary(
                workload, config, dict(group[0].params), len(group), feasible,
                tuple(r.status.value for r in group), mean, std, tuple(values) if values else None,
            )
        )
    return summaries


def best_feasible(
    records: Sequence[TrialRecord], search: Search | None = None, workload: str | None = None
) -> ConfigSummary | None:
    """The configuration with the best first objective among those whose repeats all met the budgets."""
    search = search or Search()
    sign = 1.0 if search.directions[0] == "minimize" else -1.0
    candidates = [
        s for s in summarize(records, search)
        if s.feasible and s.objective is not None and (workload is None or s.workload == workload)
    ]
    return min(candidates, key=lambda s: sign * s.objective[0], default=None)


@dataclass(frozen=True)
class ComputeAccount:
    """CPU-seconds used by the study and saved by stopping rules (by rule)."""

    used_cpu_s: float
    saved_cpu_s: float
    saved_by_rule: Mapping[str, float] = field(default_factory=dict)
    trials: int = 0
    stopped: int = 0
    failed: int = 0

    @property
    def saved_fraction(self) -> float:
        total = self.used_cpu_s + self.saved_cpu_s
        return self.saved_cpu_s / total if total > 0 else 0.0


def compute_account(records: Sequence[TrialRecord]) -> ComputeAccount:
    saved_by_rule: dict[str, float] = {}
    for record in records:
        if record.stop is not None:
            saved_by_rule[record.stop.rule] = saved_by_rule.get(record.stop.rule, 0.0) + record.cpu_s_saved
    return ComputeAccount(
        used_cpu_s=sum(r.cpu_s for r in records),
        saved_cpu_s=sum(r.cpu_s_saved for r in records),
        saved_by_rule=saved_by_rule,
        trials=len(records),
        stopped=sum(r.status is TrialStatus.STOPPED for r in records),
        failed=sum(r.status is TrialStatus.FAILED for r in records),
    )


@dataclass(frozen=True)
class StudyResult:
    """What :func:`frugalml.tune` returns."""

    name: str
    directory: str
    records: tuple[TrialRecord, ...]
    search: Search

    def best_feasible(self, workload: str | None = None) -> ConfigSummary | None:
        return best_feasible(self.records, self.search, workload)

    def summaries(self) -> list[ConfigSummary]:
        return summarize(self.records, self.search)

    def compute(self) -> ComputeAccount:
        return compute_account(self.records)
