"""The thesis's findings as pure functions of the measured data.

Each ``finding_*`` takes tidy frames and returns a :class:`Finding` whose verdict
follows from the numbers alone, so feeding data where a finding fails flips it.

``windows`` has one row per trial window with at least: ``workload``, ``trial_id``,
``config_id``, ``batch_size``, ``learning_rate``, ``step``, ``mean_step_ms``,
``cpu_percent``, ``memory_mb``, plus ``large`` (bool: a large dataset) and
``data_format`` (``numpy`` / ``pandas``).
"""

from __future__ import annotations

import enum
import math
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

SYSTEM_METRICS = ("mean_step_ms", "cpu_percent", "memory_mb")
#: Largest relative change counted as "level" / "no effect", per metric (timing is noisy on shared cores).
TOLERANCE = {"mean_step_ms": 0.25, "cpu_percent": 0.25, "memory_mb": 0.05}
MIN_MEMORY_EFFECT_MB = 10.0
MIN_WINDOWS = 4


class Verdict(str, enum.Enum):
    HOLDS = "holds"
    DOES_NOT_HOLD = "does not hold"
    INCONCLUSIVE = "inconclusive"


class Finding(NamedTuple):
    key: str
    claim: str
    verdict: Verdict
    evidence: str
    numbers: dict[str, Any]


def _series(windows: pd.DataFrame, metric: str) -> dict[str, np.ndarray]:
    """trial_id → the metric's finite values in step order."""
    out = {}
    for trial_id, group in windows.sort_values("step").groupby("trial_id", sort=False):
        values = pd.to_numeric(group[metric], errors="coerce").to_numpy(dtype=float)
        out[trial_id] = values[np.isfinite(values)]
    return out


def _changed(before: float, after: float, metric: str) -> bool:
    scale = max(abs(before), abs(after), 1e-9)
    if metric == "memory_mb":
        return abs(after - before) > max(MIN_MEMORY_EFFECT_MB, TOLERANCE[metric] * scale)
    return abs(after - before) > TOLERANCE[metric] * scale


def finding_level_within_run(windows: pd.DataFrame) -> Finding:
    """System metrics stay level within a run: after the first window, the second half
    of a run's windows matches the first half (within ``TOLERANCE``) in >= 80% of runs."""
    claim = "System metrics (step time, CPU %, memory) stay level within a run."
    shares, parts = {}, []
    for metric in SYSTEM_METRICS:
        series = [v[1:] for v in _series(windows, metric).values() if len(v) >= MIN_WINDOWS]
        level = [not _changed(v[: len(v) // 2].mean(), v[len(v) // 2 :].mean(), metric) for v in series]
        if level:
            shares[metric] = float(np.mean(level))
            parts.append(f"{metric} level in {sum(level)}/{len(level)} runs")
    if len(shares) < len(SYSTEM_METRICS) or min(len(_series(windows, m)) for m in SYSTEM_METRICS) < 3:
        return Finding("level_within_run", claim, Verdict.INCONCLUSIVE,
                       f"too few runs with >= {MIN_WINDOWS} windows", shares)
    verdict = (Verdict.HOLDS if min(shares.values()) >= 0.8
               else Verdict.DOES_NOT_HOLD if min(shares.values()) < 0.5 else Verdict.INCONCLUSIVE)
    evidence = "; ".join(parts) + " (first window excluded; level = halves differ by <= " + \
        ", ".join(f"{m} {t:.0%}" for m, t in TOLERANCE.items()) + f" and {MIN_MEMORY_EFFECT_MB:g} MB)"
    return Finding("level_within_run", claim, verdict, evidence, shares)


def _rise_then_level(memory: np.ndarray) -> tuple[bool, float]:
    half = len(memory) // 2
    plateau = float(np.median(memory[half:]))
    rise = plateau - float(memory[0])
    levelled = not _changed(float(memory[1:half + 1].mean()), float(memory[half:].mean()), "memory_mb")
    return rise > max(2.0, 0.02 * plateau) and levelled, rise


def finding_memory_rises_then_levels(windows: pd.DataFrame) -> Finding:
    """Memory rises at the start of runs on large datasets, then levels (and not on small ones)."""
    claim = "Memory rises at the start of a run on the large datasets, then levels."
    result: dict[str, Any] = {}
    for large in (True, False):
        runs = [v for v in _series(windows[windows["large"] == large], "memory_mb").values() if len(v) >= MIN_WINDOWS]
        checks = [_rise_then_level(v) for v in runs]
        result["large" if large else "small"] = {
            "runs": len(checks), "rise_then_level": sum(c[0] for c in checks),
            "median_rise_mb": float(np.median([c[1] for c in checks])) if checks else math.nan,
        }
    large, small = result["large"], result["small"]
    if large["runs"] < 2:
        return Finding("memory_rises_then_levels", claim, Verdict.INCONCLUSIVE, "too few large-dataset runs", result)
    share_large = large["rise_then_level"] / large["runs"]
    share_small = small["rise_then_level"] / small["runs"] if small["runs"] else 0.0
    verdict = (Verdict.HOLDS if share_large >= 0.5 and share_large > share_small
               else Verdict.DOES_NOT_HOLD if share_large < 0.2 else Verdict.INCONCLUSIVE)
    evidence = (f"large datasets: {large['rise_then_level']}/{large['runs']} runs rise after the first window and "
                f"then level (median rise {large['median_rise_mb']:.1f} MB); small datasets: "
                f"{small['rise_then_level']}/{small['runs']} (median rise {small['median_rise_mb']:.1f} MB)")
    if verdict is Verdict.DOES_NOT_HOLD:
        evidence += "; memory is already at its plateau at the first window"
    return Finding("memory_rises_then_levels", claim, verdict, evidence, result)


def _config_means(windows: pd.DataFrame) -> pd.DataFrame:
    """Per trial: mean step time and CPU over windows, peak memory; then mean and std per configuration."""
    per_trial = windows.groupby(["workload", "config_id", "trial_id"]).agg(
        batch_size=("batch_size", "first"), learning_rate=("learning_rate", "first"),
        large=("large", "first"), data_format=("data_format", "first"),
        mean_step_ms=("mean_step_ms", "mean"), cpu_percent=("cpu_percent", "mean"), memory_mb=("memory_mb", "max"),
    ).reset_index()
    return per_trial


def batch_effects(windows: pd.DataFrame) -> pd.DataFrame:
    """Per workload: step time ratio and memory change from the smallest to the largest batch."""
    per_trial = _config_means(windows)
    rows = []
    for workload, group in per_trial.groupby("workload"):
        by_batch = group.groupby("batch_size")[["mean_step_ms", "memory_mb"]].mean().sort_index()
        if len(by_batch) < 2:
            continue
        low, high = by_batch.iloc[0], by_batch.iloc[-1]
        step_ratio = high["mean_step_ms"] / low["mean_step_ms"] if low["mean_step_ms"] > 0 else math.inf
        memory_delta = high["memory_mb"] - low["memory_mb"]
        rows.append({
            "workload": workload, "large": bool(group["large"].iloc[0]), "data_format": group["data_format"].iloc[0],
            "batch_low": by_batch.index[0], "batch_high": by_batch.index[-1], "step_ratio": float(step_ratio),
            "memory_delta_mb": float(memory_delta),
            "raises_step": bool(step_ratio >= 2.0),
            "raises_memory": bool(_changed(low["memory_mb"], high["memory_mb"], "memory_mb") and memory_delta > 0),
        })
    return pd.DataFrame(rows)


def finding_batch_raises_cost_on_large_only(windows: pd.DataFrame) -> Finding:
    """Larger batches raise step time (>= 2x) and memory (> max(10 MB, 5%)) on the large
    datasets and on no small one, judged per data path: a path holds when every large
    dataset shows it, is partial when only some do. Holds if some path holds."""
    claim = "Batch size raises step time and memory on the large datasets only."
    effects = batch_effects(windows)
    if effects.empty:
        return Finding("batch_raises_cost_on_large_only", claim, Verdict.INCONCLUSIVE, "no batch-size variation", {})
    per_path: dict[str, str] = {}
    parts = []
    for path, group in effects.groupby("data_format"):
        both = group["raises_step"] & group["raises_memory"]
        large, small = both[group["large"]], both[~group["large"]]
        if large.empty or small.empty:
            per_path[path] = "inconclusive"
        elif small.any() or not large.any():
            per_path[path] = Verdict.DOES_NOT_HOLD.value
        else:
            per_path[path] = Verdict.HOLDS.value if large.all() else "partial"
        shown = ", ".join(group.loc[both, "workload"]) or "none"
        detail = ", ".join(f"{r.workload}: step x{r.step_ratio:.2g}, memory {r.memory_delta_mb:+.0f} MB"
                           for r in group.itertuples())
        parts.append(f"{path} path → {per_path[path]} (shown by: {shown}; {detail})")
    holding = [p for p, v in per_path.items() if v == Verdict.HOLDS.value]
    partial = [p for p, v in per_path.items() if v == "partial"]
    if holding:
        verdict = Verdict.HOLDS
        lead = f"shown on the {' and '.join(holding)} path(s) only" if len(holding) < len(per_path) else "shown on every path"
    elif partial:
        verdict, lead = Verdict.INCONCLUSIVE, f"shown by some large datasets only, on the {' and '.join(partial)} path(s)"
    elif all(v == "inconclusive" for v in per_path.values()):
        verdict, lead = Verdict.INCONCLUSIVE, "no path has both large and small datasets"
    else:
        verdict, lead = Verdict.DOES_NOT_HOLD, "no data path shows it"
    return Finding("batch_raises_cost_on_large_only", claim, verdict, f"{lead}: " + "; ".join(parts),
                   {"per_path": per_path, "effects": effects.to_dict("records")})


def finding_learning_rate_no_effect(windows: pd.DataFrame) -> Finding:
    """Within each workload and batch size, configuration means differ across learning rates
    by no more than the tolerance, or no more than twice the spread between repeats."""
    claim = "Learning rate has no effect on system metrics."
    per_trial = _config_means(windows)
    checks = []
    for (workload, batch), group in per_trial.groupby(["workload", "batch_size"]):
        if group["learning_rate"].nunique() < 2:
            continue
        for metric in SYSTEM_METRICS:
            by_lr = group.groupby("learning_rate")[metric]
            means, stds = by_lr.mean().dropna(), by_lr.std().dropna()
            if len(means) < 2:
                continue
            noise = 2 * float(stds.max()) if len(stds) else 0.0
            effect = _changed(means.min(), means.max(), metric) and (means.max() - means.min()) > noise
            checks.append({"workload": workload, "batch_size": batch, "metric": metric, "effect": bool(effect),
                           "range": float(means.max() - means.min())})
    if not checks:
        return Finding("learning_rate_no_effect", claim, Verdict.INCONCLUSIVE, "fewer than two learning rates", {})
    frame = pd.DataFrame(checks)
    shares = {m: float(1 - g["effect"].mean()) for m, g in frame.groupby("metric")}
    worst = min(shares.values())
    verdict = Verdict.HOLDS if worst >= 0.8 else Verdict.DOES_NOT_HOLD if worst < 0.5 else Verdict.INCONCLUSIVE
    evidence = "; ".join(f"{m}: no learning-rate effect in {int(round(s * (frame['metric'] == m).sum()))}/"
                         f"{(frame['metric'] == m).sum()} (workload, batch) groups" for m, s in shares.items())
    return Finding("learning_rate_no_effect", claim, verdict, evidence, {"no_effect_share": shares})


def eta_squared(windows: pd.DataFrame, metric: str) -> float:
    """Share of the metric's window-to-window variance explained by the configuration."""
    data = windows[["config_id", metric]].assign(**{metric: pd.to_numeric(windows[metric], errors="coerce")})
    data = data[np.isfinite(data[metric])]
    if data["config_id"].nunique() < 2:
        return math.nan
    values = data[metric].astype(float)
    total = float(((values - values.mean()) ** 2).sum())
    means = data.groupby("config_id")[metric].transform("mean").astype(float)
    between = float(((means - values.mean()) ** 2).sum())
    return between / total if total > 0 else 0.0


def finding_cpu_uninformative(windows: pd.DataFrame) -> Finding:
    """In the workloads where mean step time is informative (the configuration explains
    >= 50% of its variance across windows), CPU % is not (< 50%) in at least 2/3 of them."""
    claim = "CPU % is uninformative where mean step time is informative."
    scores = {w: {m: eta_squared(g, m) for m in ("mean_step_ms", "cpu_percent")} for w, g in windows.groupby("workload")}
    informative = {w: s for w, s in scores.items() if s["mean_step_ms"] >= 0.5}
    numbers = {"per_workload": scores, "step_informative": sorted(informative)}
    if not informative:
        return Finding("cpu_uninformative", claim, Verdict.INCONCLUSIVE,
                       f"mean step time is informative in none of {len(scores)} workloads", numbers)
    cpu_flat = [w for w, s in informative.items() if not s["cpu_percent"] >= 0.5]
    share = len(cpu_flat) / len(informative)
    numbers["share_cpu_uninformative"] = share
    verdict = Verdict.HOLDS if share >= 2 / 3 else Verdict.DOES_NOT_HOLD if share <= 1 / 3 else Verdict.INCONCLUSIVE
    detail = ", ".join(f"{w}: step {s['mean_step_ms']:.0%} / CPU {s['cpu_percent']:.0%}" for w, s in informative.items())
    evidence = (f"mean step time is informative in {len(informative)}/{len(scores)} workloads; in "
                f"{len(cpu_flat)} of those CPU % is not (variance explained by the configuration, eta squared: {detail})")
    return Finding("cpu_uninformative", claim, verdict, evidence, numbers)


def finding_memory_budget_saves(budget_trials: pd.DataFrame, budget_mb: float,
                                windows: pd.DataFrame | None = None) -> Finding:
    """A memory budget saves compute when it stops at least one trial and the stopped trials'
    unrun steps amount to CPU-seconds > 0 (measured in the budgeted study)."""
    claim = f"A {budget_mb:g} MB memory budget saves compute."
    if budget_trials.empty:
        return Finding("memory_budget_saves", claim, Verdict.INCONCLUSIVE, "no budgeted study", {})
    stopped = budget_trials[budget_trials["stop_rule"] == "max_memory_mb"]
    saved, used = float(stopped["cpu_s_saved"].sum()), float(budget_trials["cpu_s"].sum())
    full = used + float(budget_trials["cpu_s_saved"].sum())
    numbers = {"trials": len(budget_trials), "stopped_by_memory": len(stopped), "saved_cpu_s": saved,
               "used_cpu_s": used, "saved_fraction": saved / full if full > 0 else 0.0,
               "peak_memory_mb": float(pd.to_numeric(budget_trials["memory_mb"], errors="coerce").max())}
    if windows is not None and not windows.empty:
        numbers["unbudgeted_runs_over_budget"] = int(
            (windows.groupby("trial_id")["memory_mb"].max() > budget_mb).sum())
    verdict = Verdict.HOLDS if len(stopped) and saved > 0 else Verdict.DOES_NOT_HOLD
    evidence = (f"{len(stopped)}/{len(budget_trials)} trials stopped by the {budget_mb:g} MB budget; saved "
                f"{saved:.1f} CPU-s = {numbers['saved_fraction']:.0%} of running every trial in full "
                f"(used {used:.1f} CPU-s; highest peak memory {numbers['peak_memory_mb']:.0f} MB)")
    if "unbudgeted_runs_over_budget" in numbers:
        evidence += f"; {numbers['unbudgeted_runs_over_budget']} unbudgeted runs went over {budget_mb:g} MB"
    return Finding("memory_budget_saves", claim, verdict, evidence, numbers)


def thesis_findings(windows: pd.DataFrame, budget_trials: pd.DataFrame, budget_mb: float) -> list[Finding]:
    """All six findings, in the thesis's order."""
    return [
        finding_level_within_run(windows),
        finding_memory_rises_then_levels(windows),
        finding_batch_raises_cost_on_large_only(windows),
        finding_learning_rate_no_effect(windows),
        finding_cpu_uninformative(windows),
        finding_memory_budget_saves(budget_trials, budget_mb, windows),
    ]
