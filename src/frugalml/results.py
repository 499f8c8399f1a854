"""Study results: per-configuration aggregates over repeats, the best feasible
configuration, and the compute the stopping rules saved."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from frugalml import accounting
from frugalml.metrics import (ACCURACY, CPU_PERCENT, MEAN_STEP_MS, MODEL_MB, PEAK_MEMORY_MB, PREDICT_MS, RMSE,
                              VAL_LOSS)
from frugalml.records import StopKind, TrialRecord, TrialStatus, is_estimate
from frugalml.search import Search, objective_values

KEY_METRICS = (VAL_LOSS, ACCURACY, RMSE, MEAN_STEP_MS, PEAK_MEMORY_MB, CPU_PERCENT, PREDICT_MS, MODEL_MB)


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


def ranked_feasible(
    records: Sequence[TrialRecord], search: Search | None = None, workload: str | None = None
) -> list[ConfigSummary]:
    """The configurations whose repeats all met the budgets, best first objective first.

    Trials cut short by the study's compute budget (the budgeted mode) are incomplete, not candidates.
    """
    search = search or Search()
    records = [r for r in records if r.stop is None or r.stop.kind != StopKind.STUDY]
    sign = 1.0 if search.directions[0] == "minimize" else -1.0
    candidates = [
        s for s in summarize(records, search)
        if s.feasible and s.objective is not None and (workload is None or s.workload == workload)
    ]
    return sorted(candidates, key=lambda s: sign * s.objective[0])


def best_feasible(
    records: Sequence[TrialRecord], search: Search | None = None, workload: str | None = None
) -> ConfigSummary | None:
    """The configuration with the best first objective among those whose repeats all met the budgets."""
    ranked = ranked_feasible(records, search, workload)
    return ranked[0] if ranked else None


MECHANISMS = ("hard budget stop", "predicted stop", "skip", "learning rule", "study budget")


def mechanism(record: TrialRecord) -> str | None:
    """Which mechanism ended a trial early (one of ``MECHANISMS``), or None if it ran in full."""
    if record.status is TrialStatus.SKIPPED:
        return "skip"
    if record.stop is None:
        return None
    if record.stop.rule.startswith("predicted_"):
        return "predicted stop"
    return {StopKind.SYSTEM: "hard budget stop", StopKind.ML: "learning rule", StopKind.STUDY: "study budget"}.get(record.stop.kind)


@dataclass(frozen=True)
class ComputeAccount:
    """CPU-seconds used by the study and saved by stopping rules (by rule and by mechanism).

    ``full_cpu_s`` estimates running every configuration tried in full: what was used
    plus what each early stop or skip saved (a skip saves its predicted cost).
    ``used_energy_j``/``saved_energy_j`` are the joules of the trials that know theirs
    (None when none does); ``energy_sources`` says how they were got (``estimate...``:
    not measured, see :class:`~frugalml.monitors.EnergyMonitor`). ``saved_basis`` counts the
    stopped and skipped trials by what their saving rests on (:mod:`frugalml.accounting`):
    an ``unknown`` one adds nothing to the sums; ``unknown`` names the rules and mechanisms
    whose every saving is unknown (shown as such, not as 0).
    """

    used_cpu_s: float
    saved_cpu_s: float
    saved_by_rule: Mapping[str, float] = field(default_factory=dict)
    trials: int = 0
    stopped: int = 0
    failed: int = 0
    skipped: int = 0
    saved_by_mechanism: Mapping[str, float] = field(default_factory=dict)
    used_energy_j: float | None = None
    saved_energy_j: float | None = None
    energy_sources: tuple[str, ...] = ()
    saved_basis: Mapping[str, int] = field(default_factory=dict)
    unknown: frozenset[str] = frozenset()

    def shown(self, name: str, cpu_s: float) -> str:
        """``cpu_s`` of rule or mechanism ``name`` as a figure, or ``unknown``."""
        return accounting.UNKNOWN if name in self.unknown else f"{cpu_s:.1f}"

    @property
    def energy_estimated(self) -> bool:
        """True when some of the joules are estimates, not measurements."""
        return any(is_estimate(source) for source in self.energy_sources)

    @property
    def full_cpu_s(self) -> float:
        return self.used_cpu_s + self.saved_cpu_s

    @property
    def saved_fraction(self) -> float:
        total = self.used_cpu_s + self.saved_cpu_s
        return self.saved_cpu_s / total if total > 0 else 0.0


def compute_account(records: Sequence[TrialRecord]) -> ComputeAccount:
    saved_by_rule: dict[str, float] = {}
    saved_by_mechanism: dict[str, float] = {}
    metered = [r for r in records if r.energy_j is not None]
    known: set[str] = set()
    for record in records:
        figure = accounting.saved_cpu_s(record)
        saved = figure or 0.0
        names = [record.stop.rule] if record.stop is not None else []
        if (how := mechanism(record)) is not None:
            names.append(how)
        if figure is not None:
            known.update(names)
        if record.stop is not None:
            saved_by_rule[record.stop.rule] = saved_by_rule.get(record.stop.rule, 0.0) + saved
        if how is not None:
            saved_by_mechanism[how] = saved_by_mechanism.get(how, 0.0) + saved
    return ComputeAccount(
        used_cpu_s=sum(r.cpu_s for r in records),
        saved_cpu_s=sum(accounting.saved_cpu_s(r) or 0.0 for r in records),
        saved_by_rule=saved_by_rule,
        trials=len(records),
        stopped=sum(r.status is TrialStatus.STOPPED for r in records),
        failed=sum(r.status is TrialStatus.FAILED for r in records),
        skipped=sum(r.status is TrialStatus.SKIPPED for r in records),
        saved_by_mechanism=saved_by_mechanism,
        used_energy_j=sum(r.energy_j for r in metered) if metered else None,
        saved_energy_j=sum(r.energy_j_saved or 0.0 for r in metered) if metered else None,
        energy_sources=tuple(sorted({r.energy_source or "unknown" for r in metered})),
        saved_basis=accounting.basis_mix(records),
        unknown=frozenset((set(saved_by_rule) | set(saved_by_mechanism)) - known),
    )


@dataclass(frozen=True)
class StudyResult:
    """What :func:`frugalml.tune` returns."""

    name: str
    directory: str
    records: tuple[TrialRecord, ...]
    search: Search
    compute_budget_cpu_s: float | None = None  # the budgeted mode's B, when set

    @property
    def budget_exhausted(self) -> bool:
        """True when the study's compute budget stopped it before the search was done."""
        return any(r.stop is not None and r.stop.kind == StopKind.STUDY for r in self.records) or (
            self.compute_budget_cpu_s is not None and self.compute().used_cpu_s >= self.compute_budget_cpu_s
        )

    def best_feasible(self, workload: str | None = None) -> ConfigSummary | None:
        return best_feasible(self.records, self.search, workload)

    def summaries(self) -> list[ConfigSummary]:
        return summarize(self.records, self.search)

    def compute(self) -> ComputeAccount:
        return compute_account(self.records)
