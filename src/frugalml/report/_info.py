"""The data step of a report: pure functions from trial records to tidy frames.

Nothing here draws. Each ``get_*_info`` returns a NamedTuple of DataFrames that a
test can check without a renderer; :mod:`._html` and :mod:`._png` draw them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd

from frugalml import accounting
from frugalml.budgets import BUDGETS, SERVE
from frugalml.exceptions import one_line
from frugalml.metrics import (ACCURACY, CPU_PERCENT, CPU_S, ENERGY_J, GPU_MEMORY_MB, MEAN_STEP_MS, MEMORY_MB,
                              MODEL_MB, PEAK_MEMORY_MB, PREDICT_MS, RMSE, STEADY_STEP_MS, TRAIN_LOSS, VAL_LOSS)
from frugalml.prediction import steady_step_ms
from frugalml.records import TrialRecord, is_estimate
from frugalml.results import ComputeAccount, compute_account
from frugalml.store import ResultStore
from frugalml.study import stored_study

#: A trial's estimated joules are charted as their own metric, never on the measured ones' axis.
ESTIMATED_ENERGY = "energy_estimated_j"
_BUDGETED = (*(b.metric for b in BUDGETS.values() if b.plotted), ESTIMATED_ENERGY)  # memory, step time, joules
#: Metrics drawn over training steps, in order (the quality metric is accuracy or rmse).
CURVE_METRICS = (TRAIN_LOSS, VAL_LOSS, ACCURACY, RMSE, CPU_PERCENT, *_BUDGETED)
#: Per-trial metrics whose response to each hyperparameter is drawn.
EFFECT_METRICS = (VAL_LOSS, ACCURACY, RMSE, CPU_PERCENT, *_BUDGETED)
#: Study budget key → the metric it bounds (the budgets drawn as a line on that metric's chart).
PLOTTED_METRICS = {key: b.metric for key, b in BUDGETS.items() if b.plotted}
LABELS = {
    TRAIN_LOSS: "train loss", VAL_LOSS: "val loss", ACCURACY: "accuracy", RMSE: "RMSE",
    CPU_PERCENT: "CPU (%)", **{b.metric: b.label for b in BUDGETS.values() if b.plotted},
    ESTIMATED_ENERGY: "trial energy, ESTIMATED (J)",
    STEADY_STEP_MS: "steady step time (ms, after the warm-up window)",
}
#: The Pareto chart's cost columns → the metric whose budget is drawn on them. Step time is the steady
#: figure (the median of the window means after the first), as a step-time budget judges it after its
#: warm-up window; a trial with only its first window is plotted at that window.
PARETO_COSTS = {STEADY_STEP_MS: MEAN_STEP_MS, MEMORY_MB: MEMORY_MB}
#: What a model costs to serve, charted against val loss when the study measured it (serving budgets).
SERVING_COSTS = (PREDICT_MS, MODEL_MB)
LABELS.update({b.metric: b.label for b in BUDGETS.values() if b.scope == SERVE})


def _energy_column(record: TrialRecord) -> str:
    """Where a record's joules go in a frame: ``energy_j`` when measured, else the estimated column."""
    return ESTIMATED_ENERGY if is_estimate(record.energy_source) else ENERGY_J


class CurvesInfo(NamedTuple):
    """Metrics over steps per configuration, averaged over repeats.

    ``curves``: config_id, step, metric, mean, std, low, high, n.
    ``stops``: one row per stopped/failed trial: config_id, trial_id, step, metric, value, status, reason.
    """

    workload: str
    metrics: tuple[str, ...]
    curves: pd.DataFrame
    stops: pd.DataFrame


class EffectsInfo(NamedTuple):
    """Each hyperparameter's effect on each per-trial metric.

    ``points``: param, value, series (the other parameters), metric, mean, std, n.
    """

    workload: str
    params: tuple[str, ...]
    metrics: tuple[str, ...]
    points: pd.DataFrame


class ParetoInfo(NamedTuple):
    """Validation loss against cost per configuration, with the study's budgets.

    ``points``: config_id, val_loss, steady_step_ms, memory_mb, feasible, status, reason,
    front_steady_step_ms, front_memory_mb (on the Pareto front of that pair).
    ``budgets``: metric → budget (only the budgets the study set). ``costs``: the cost columns
    charted: the training costs, then the serving costs (:data:`SERVING_COSTS`) where measured.
    """

    workload: str
    points: pd.DataFrame
    budgets: dict[str, float]
    costs: tuple[str, ...] = tuple(PARETO_COSTS)


class WorkloadInfo(NamedTuple):
    name: str
    label: str
    curves: CurvesInfo
    effects: EffectsInfo
    pareto: ParetoInfo


class ReportInfo(NamedTuple):
    """Everything a report shows about one study."""

    name: str
    directory: str
    budget: dict[str, float]
    workloads: tuple[WorkloadInfo, ...]
    trials: pd.DataFrame
    stops: pd.DataFrame
    compute: ComputeAccount
    notes: tuple[str, ...]


def _reason(record: TrialRecord) -> str | None:
    if record.stop is not None:
        return f"{record.stop.rule}: {record.stop.message}"
    if record.error:
        return one_line(record.error)
    if record.status.value == "skipped":
        return "skipped"
    return None


def windows_frame(records: Sequence[TrialRecord]) -> pd.DataFrame:
    """One row per trial window: identifiers, parameters, and every metric as a column."""
    rows = []
    for record in records:
        base = {"workload": record.workload, "config_id": record.config_id, "trial_id": record.trial_id,
                "repeat": record.repeat, "status": record.status.value, **dict(record.params)}
        energy = _energy_column(record)
        for index, window in enumerate(record.windows):
            values = dict(window.values)
            if energy != ENERGY_J and ENERGY_J in values:
                values[energy] = values.pop(ENERGY_J)
            rows.append({**base, "window": index, "step": window.step, **values})
    return pd.DataFrame(rows)


def trials_frame(records: Sequence[TrialRecord]) -> pd.DataFrame:
    """One row per trial: parameters, status, stop reason and summary metrics.

    ``mean_step_ms`` and ``cpu_percent`` are means over windows, ``steady_step_ms`` the
    median of the window means after the first, ``memory_mb`` and ``gpu_memory_mb`` the peaks.
    """
    rows = []
    for record in records:
        summary = record.summary()
        rows.append({
            "workload": record.workload, "config_id": record.config_id, "trial_id": record.trial_id,
            "repeat": record.repeat, **dict(record.params), "status": record.status.value,
            "feasible": record.feasible, "stop_rule": record.stop.rule if record.stop else None,
            "stop_step": record.stop.step if record.stop else None, "reason": _reason(record),
            **{metric: summary[metric] for metric in (VAL_LOSS, ACCURACY, RMSE, MEAN_STEP_MS)},
            STEADY_STEP_MS: steady_step_ms(record), CPU_PERCENT: summary[CPU_PERCENT],
            MEMORY_MB: summary[PEAK_MEMORY_MB], GPU_MEMORY_MB: record.peak(GPU_MEMORY_MB),
            "steps_done": record.steps_done,
            "steps_planned": record.steps_planned, CPU_S: record.cpu_s,
            "cpu_s_saved": accounting.saved_cpu_s(record), "saved_basis": record.saved_basis,
            "stop_phase": record.stop_phase,
            ENERGY_J: None, ESTIMATED_ENERGY: None, _energy_column(record): record.energy_j,
            "energy_j_saved": record.energy_j_saved,
            "energy_source": record.energy_source,
            **{metric: record.serving(metric) for metric in SERVING_COSTS},
        })
    frame = pd.DataFrame(rows)
    for column in (*EFFECT_METRICS, *PARETO_COSTS, *SERVING_COSTS):
        if column in frame:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").replace([np.inf, -np.inf], np.nan)
    return frame


def _present(frame: pd.DataFrame, metrics: Sequence[str]) -> tuple[str, ...]:
    return tuple(m for m in metrics if m in frame and frame[m].notna().any())


def get_curves_info(records: Sequence[TrialRecord], workload: str) -> CurvesInfo:
    """Mean and spread (std, min, max) over repeats of each metric at each window step."""
    mine = [r for r in records if r.workload == workload]
    windows = windows_frame(mine)
    metrics = _present(windows, CURVE_METRICS) if not windows.empty else ()
    curves = pd.DataFrame(columns=["config_id", "step", "metric", "mean", "std", "low", "high", "n"])
    if metrics:
        long = windows.melt(["config_id", "step"], list(metrics), "metric", "value")
        long["value"] = pd.to_numeric(long["value"], errors="coerce").replace([np.inf, -np.inf], np.nan)
        grouped = long.dropna(subset=["value"]).groupby(["config_id", "metric", "step"])["value"]
        curves = grouped.agg(mean="mean", std="std", low="min", high="max", n="count").reset_index()
        curves["std"] = curves["std"].fillna(0.0)
    stop_rows = []
    for record in mine:
        reason = _reason(record)
        if record.status.value in ("completed", "running") or reason is None:
            continue
        last = record.windows[-1] if record.windows else None
        for metric in metrics:
            value = last.values.get(metric) if last else None
            stop_rows.append({
                "config_id": record.config_id, "trial_id": record.trial_id,
                "step": record.stop.step if record.stop else (last.step if last else 0), "metric": metric,
                "value": value if value is not None and math.isfinite(value) else None,
                "status": record.status.value, "reason": reason,
            })
    stops = pd.DataFrame(stop_rows, columns=["config_id", "trial_id", "step", "metric", "value", "status", "reason"])
    return CurvesInfo(workload, metrics, curves, stops)


def _series_label(row: Mapping[str, Any], others: Sequence[str]) -> str:
    return ", ".join(f"{p}={row[p]}" for p in others) or "all"


def get_effects_info(records: Sequence[TrialRecord], workload: str) -> EffectsInfo:
    """Per-trial metrics grouped by one hyperparameter's value, one series per value of the others."""
    trials = trials_frame([r for r in records if r.workload == workload])
    columns = ["param", "value", "series", "metric", "mean", "std", "n"]
    if trials.empty:
        return EffectsInfo(workload, (), (), pd.DataFrame(columns=columns))
    params = tuple(sorted({k for r in records if r.workload == workload for k in r.params
                           if trials[k].nunique(dropna=True) > 1 and pd.api.types.is_numeric_dtype(trials[k])}))
    metrics = _present(trials, EFFECT_METRICS)
    parts = []
    for param in params:
        others = [p for p in params if p != param]
        frame = trials.assign(series=trials.apply(_series_label, axis=1, others=others) if others else "all")
        long = frame.melt(["series", param], list(metrics), "metric", "metric_value").dropna(subset=["metric_value"])
        agg = long.groupby(["series", param, "metric"])["metric_value"].agg(mean="mean", std="std", n="count")
        agg = agg.reset_index().rename(columns={param: "value"})
        agg["param"] = param
        parts.append(agg)
    points = pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)
    points["std"] = points["std"].fillna(0.0)
    return EffectsInfo(workload, params, metrics, points)


def pareto_front(x: Sequence[float], y: Sequence[float]) -> list[bool]:
    """True where no other point is at least as good in both (both minimised) and better in one."""
    points = list(zip(x, y))
    front = []
    for i, (xi, yi) in enumerate(points):
        if not (math.isfinite(xi) and math.isfinite(yi)):
            front.append(False)
            continue
        dominated = any(
            xj <= xi and yj <= yi and (xj < xi or yj < yi)
            for j, (xj, yj) in enumerate(points) if j != i and math.isfinite(xj) and math.isfinite(yj)
        )
        front.append(not dominated)
    return front


def get_pareto_info(records: Sequence[TrialRecord], workload: str, budget: Mapping[str, Any]) -> ParetoInfo:
    """Per configuration (mean over repeats): val loss, steady step time, peak memory; the fronts."""
    trials = trials_frame([r for r in records if r.workload == workload])
    budgets = {b.metric: float(budget[key]) for key, b in BUDGETS.items()
               if (b.plotted or b.scope == SERVE) and budget.get(key) is not None}
    costs = (*PARETO_COSTS, *_present(trials, SERVING_COSTS))
    columns = ["config_id", VAL_LOSS, *costs, "feasible", "status", "reason", *(f"front_{cost}" for cost in costs)]
    if trials.empty:
        return ParetoInfo(workload, pd.DataFrame(columns=columns), budgets, costs)
    grouped = trials.groupby("config_id", sort=False)
    points = grouped[[VAL_LOSS, *costs]].mean()
    points["feasible"] = grouped["feasible"].all()
    points["status"] = grouped["status"].agg(lambda s: "/".join(sorted(set(s))))
    points["reason"] = grouped["reason"].agg(lambda s: "; ".join(sorted({str(v) for v in s if v})) or None)
    points = points.reset_index()
    for cost in costs:
        ok = points[points["feasible"]]
        flags = pareto_front(ok[cost].fillna(math.inf).tolist(), ok[VAL_LOSS].fillna(math.inf).tolist())
        points[f"front_{cost}"] = pd.Series(flags, index=ok.index, dtype=bool).reindex(points.index, fill_value=False)
    return ParetoInfo(workload, points[columns], budgets, costs)


def budget_metric(cost: str) -> str:
    """The metric whose budget is drawn on a Pareto cost column (steady step time: step time's)."""
    return PARETO_COSTS.get(cost, cost)


def workload_labels(spec: Mapping[str, Any]) -> dict[str, str]:
    """Workload name → display label; a substitute dataset is labelled as such."""
    from frugalml.workloads import BUILTIN_DATASETS  # lazy: scikit-learn (~1 s), for a label

    labels = {}
    for workload in spec.get("workloads", []):
        name = workload.get("name")
        builtin = BUILTIN_DATASETS.get(workload.get("dataset") or "")
        substitute = builtin.substitute_for if builtin else None
        if substitute:
            labels[name] = f"{name} (not {substitute} data)" if "substitute" in name.lower() else \
                f"{name} [SUBSTITUTE for {substitute}: not {substitute} data]"
        else:
            labels[name] = name
    return labels


def get_report_info(directory: str | Path, records: Sequence[TrialRecord] | None = None) -> ReportInfo:
    """Read a study's store and compute everything its report shows."""
    stored = stored_study(directory)
    name, spec = stored.name, stored.spec
    records = list(records) if records is not None else ResultStore(directory).trials()
    budget = stored.budget
    labels = workload_labels(spec)
    order = [w.get("name") for w in stored.workloads]
    names = [n for n in order if any(r.workload == n for r in records)]
    names += sorted({r.workload for r in records} - set(names))
    workloads = tuple(
        WorkloadInfo(n, labels.get(n, n), get_curves_info(records, n), get_effects_info(records, n),
                     get_pareto_info(records, n, budget))
        for n in names
    )
    trials = trials_frame(records)
    stops = trials[trials["status"] != "completed"] if not trials.empty else trials
    notes = tuple(f"{label}" for n, label in labels.items() if label != n)
    return ReportInfo(name, str(directory), budget, workloads, trials, stops.reset_index(drop=True),
                      compute_account(records), notes)


def compute_rows(account: ComputeAccount) -> list[dict[str, Any]]:
    """The compute budget table: used and saved CPU-seconds, overall and by stopping rule."""
    rows = [
        {"item": "trials", "value": account.trials},
        {"item": "stopped trials", "value": account.stopped},
        {"item": "failed trials", "value": account.failed},
        {"item": "CPU-s used", "value": round(account.used_cpu_s, 2)},
        {"item": "CPU-s saved by stopping rules", "value": round(account.saved_cpu_s, 2)},
        {"item": "saved fraction of running every trial in full", "value": f"{account.saved_fraction:.1%}"},
        {"item": "saved from (trials by basis; unknown counts as 0)",
         "value": accounting.describe_mix(account.saved_basis) or "-"},
    ]
    rows += [{"item": f"CPU-s saved by {rule}", "value": "unknown" if rule in account.unknown else round(cpu, 2)}
             for rule, cpu in sorted(account.saved_by_rule.items())]
    if account.used_energy_j is not None:
        how = f" ({', '.join(account.energy_sources)})"
        rows += [{"item": f"joules used{how}", "value": round(account.used_energy_j, 2)},
                 {"item": f"joules saved by stopping rules{how}", "value": round(account.saved_energy_j or 0.0, 2)}]
    return rows
