"""The thesis's findings as pure functions of the measured data.

Each ``finding_*`` takes tidy frames and returns a :class:`Finding` whose verdict
follows from the numbers alone, so feeding data where a finding fails flips it.

``windows`` has one row per trial window with at least: ``workload``, ``trial_id``,
``config_id``, ``batch_size``, ``learning_rate``, ``step``, ``mean_step_ms``,
``cpu_percent``, ``memory_mb``, plus ``large`` (bool: a large dataset) and
``data_format`` (``numpy`` / ``pandas``); the in-range memory budget also reads
``wall_s`` (since the trial started) and ``val_loss``. Findings 3 and 6 are judged twice
(``THESIS_NUMBERS``): step time and memory; the thesis's budget and one inside the range.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from frugalml.metrics import CPU_PERCENT, CPU_S, MEAN_STEP_MS, MEMORY_MB, VAL_LOSS, WALL_S

STUDIED_METRICS = (MEAN_STEP_MS, CPU_PERCENT, MEMORY_MB)  # the thesis's system metrics, judged level or not
#: Largest relative change counted as "level" / "no effect", per metric (timing is noisy on shared cores).
TOLERANCE = {MEAN_STEP_MS: 0.25, CPU_PERCENT: 0.25, MEMORY_MB: 0.05}
MIN_MEMORY_EFFECT_MB = 10.0
#: Largest over smallest batch's mean step time counted as "raises step time".
STEP_RATIO_EFFECT = 2.0
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
    if metric == MEMORY_MB:
        return abs(after - before) > max(MIN_MEMORY_EFFECT_MB, TOLERANCE[metric] * scale)
    return abs(after - before) > TOLERANCE[metric] * scale


def finding_level_within_run(windows: pd.DataFrame) -> Finding:
    """System metrics stay level within a run: after the first window, the second half
    of a run's windows matches the first half (within ``TOLERANCE``) in >= 80% of runs."""
    claim = "System metrics (step time, CPU %, memory) stay level within a run."
    shares, parts = {}, []
    for metric in STUDIED_METRICS:
        series = [v[1:] for v in _series(windows, metric).values() if len(v) >= MIN_WINDOWS]
        level = [not _changed(v[: len(v) // 2].mean(), v[len(v) // 2 :].mean(), metric) for v in series]
        if level:
            shares[metric] = float(np.mean(level))
            parts.append(f"{metric} level in {sum(level)}/{len(level)} runs")
    if len(shares) < len(STUDIED_METRICS) or min(len(_series(windows, m)) for m in STUDIED_METRICS) < 3:
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
    levelled = not _changed(float(memory[1:half + 1].mean()), float(memory[half:].mean()), MEMORY_MB)
    return rise > max(2.0, 0.02 * plateau) and levelled, rise


def finding_memory_rises_then_levels(windows: pd.DataFrame) -> Finding:
    """Memory rises at the start of runs on large datasets, then levels (and not on small ones)."""
    claim = "Memory rises at the start of a run on the large datasets, then levels."
    result: dict[str, Any] = {}
    for large in (True, False):
        runs = [v for v in _series(windows[windows["large"] == large], MEMORY_MB).values() if len(v) >= MIN_WINDOWS]
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
        mean_step_ms=(MEAN_STEP_MS, "mean"), cpu_percent=(CPU_PERCENT, "mean"), memory_mb=(MEMORY_MB, "max"),
    ).reset_index()
    return per_trial


def batch_effects(windows: pd.DataFrame) -> pd.DataFrame:
    """Per workload: step time ratio and memory change from the smallest to the largest batch.

    ``raises_step`` is a ratio >= ``STEP_RATIO_EFFECT``; ``raises_memory`` a rise of more
    than max(``MIN_MEMORY_EFFECT_MB``, 5%) (``TOLERANCE``)."""
    per_trial = _config_means(windows)
    rows = []
    for workload, group in per_trial.groupby("workload"):
        by_batch = group.groupby("batch_size")[[MEAN_STEP_MS, MEMORY_MB]].mean().sort_index()
        if len(by_batch) < 2:
            continue
        low, high = by_batch.iloc[0], by_batch.iloc[-1]
        step_ratio = high[MEAN_STEP_MS] / low[MEAN_STEP_MS] if low[MEAN_STEP_MS] > 0 else math.inf
        memory_delta = high[MEMORY_MB] - low[MEMORY_MB]
        rows.append({
            "workload": workload, "large": bool(group["large"].iloc[0]), "data_format": group["data_format"].iloc[0],
            "batch_low": by_batch.index[0], "batch_high": by_batch.index[-1], "step_ratio": float(step_ratio),
            "memory_delta_mb": float(memory_delta),
            "raises_step": bool(step_ratio >= STEP_RATIO_EFFECT),
            "raises_memory": bool(_changed(low[MEMORY_MB], high[MEMORY_MB], MEMORY_MB) and memory_delta > 0),
        })
    return pd.DataFrame(rows)


def _path_verdict(group: pd.DataFrame, column: str) -> str:
    """One data path: holds when every large dataset shows the effect and no small one,
    "partial" when only some large ones do, "inconclusive" without both size classes."""
    large, small = group.loc[group["large"], column], group.loc[~group["large"], column]
    if large.empty or small.empty:
        return Verdict.INCONCLUSIVE.value
    if small.any() or not large.any():
        return Verdict.DOES_NOT_HOLD.value
    return Verdict.HOLDS.value if large.all() else "partial"


def _overall_verdict(per_path: dict[str, str]) -> tuple[Verdict, str]:
    """Holds if some path holds; inconclusive if some is partial or none can be judged."""
    holding = [p for p, v in per_path.items() if v == Verdict.HOLDS.value]
    partial = [p for p, v in per_path.items() if v == "partial"]
    if holding:
        if len(holding) == len(per_path):
            return Verdict.HOLDS, "shown on every path"
        return Verdict.HOLDS, f"shown on the {' and '.join(holding)} path(s)"
    if partial:
        return Verdict.INCONCLUSIVE, f"shown by some large datasets only, on the {' and '.join(partial)} path(s)"
    if all(v == Verdict.INCONCLUSIVE.value for v in per_path.values()):
        return Verdict.INCONCLUSIVE, "no path has both large and small datasets"
    return Verdict.DOES_NOT_HOLD, "no data path shows it"


def _batch_finding(windows: pd.DataFrame, key: str, claim: str, column: str, measure: str,
                   effect: Callable[[Any], str]) -> Finding:
    """Judge one batch effect (``column`` of :func:`batch_effects`, sized by ``measure``) per data path."""
    effects = batch_effects(windows)
    if effects.empty:
        return Finding(key, claim, Verdict.INCONCLUSIVE, "no batch-size variation", {})
    per_path, parts = {}, []
    for path, group in effects.groupby("data_format"):
        per_path[path] = _path_verdict(group, column)
        shown = ", ".join(group.loc[group[column], "workload"]) or "none"
        detail = ", ".join(f"{r.workload} {effect(r)}" for r in group.itertuples())
        parts.append(f"{path} path → {per_path[path]} (shown by: {shown}; {detail})")
    verdict, lead = _overall_verdict(per_path)
    lead += f" (batch {effects['batch_low'].min():g} → {effects['batch_high'].max():g})"
    kept = ["workload", "large", "data_format", "batch_low", "batch_high", measure, column]
    return Finding(key, claim, verdict, f"{lead}: " + "; ".join(parts),
                   {"per_path": per_path, "effects": effects[kept].to_dict("records")})


def finding_batch_step_time(windows: pd.DataFrame) -> Finding:
    """Larger batches raise mean step time (largest over smallest batch >= ``STEP_RATIO_EFFECT``,
    2x) on the large datasets and on no small one, judged per data path (numpy / pandas):
    a path holds when every large dataset shows it, is partial when only some do. Holds if
    some path holds; inconclusive if none does but one is partial (or none has both size
    classes); does not hold otherwise."""
    return _batch_finding(windows, "batch_step_time", "Batch size raises step time on the large datasets only.",
                          "raises_step", "step_ratio", lambda r: _times(r.step_ratio))


def _times(ratio: float) -> str:
    """A ratio as "x1.5", "x38", "x120": two significant digits, never "x1.2e+02"."""
    if not math.isfinite(ratio) or ratio < 10:
        return f"x{ratio:.2g}"
    return f"x{round(ratio, 1 - int(math.floor(math.log10(ratio)))):.0f}"


def _megabytes(change: float) -> str:
    """A memory change as "+178 MB", never "-0 MB"."""
    return f"{round(change):+d} MB" if math.isfinite(change) else f"{change} MB"


def finding_batch_memory(windows: pd.DataFrame) -> Finding:
    """Larger batches raise peak memory (largest minus smallest batch > max(10 MB, 5%):
    ``MIN_MEMORY_EFFECT_MB``, ``TOLERANCE``) on the large datasets and on no small one,
    judged per data path as :func:`finding_batch_step_time`."""
    return _batch_finding(windows, "batch_memory", "Batch size raises memory on the large datasets only.",
                          "raises_memory", "memory_delta_mb", lambda r: _megabytes(r.memory_delta_mb))


def finding_learning_rate_no_effect(windows: pd.DataFrame) -> Finding:
    """Within each workload and batch size, configuration means differ across learning rates
    by no more than the tolerance, or no more than twice the spread between repeats."""
    claim = "Learning rate has no effect on system metrics."
    per_trial = _config_means(windows)
    checks = []
    for (workload, batch), group in per_trial.groupby(["workload", "batch_size"]):
        if group["learning_rate"].nunique() < 2:
            continue
        for metric in STUDIED_METRICS:
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


def eta_squared(windows: pd.DataFrame, metric: str, by: str = "config_id") -> float:
    """Share of the metric's row-to-row variance explained by the groups of ``by`` (the
    configuration, by default; any parameter's levels for a main effect)."""
    data = windows[[by, metric]].assign(**{metric: pd.to_numeric(windows[metric], errors="coerce")})
    data = data[np.isfinite(data[metric])]
    if data[by].nunique() < 2:
        return math.nan
    values = data[metric].astype(float)
    total = float(((values - values.mean()) ** 2).sum())
    means = data.groupby(by)[metric].transform("mean").astype(float)
    between = float(((means - values.mean()) ** 2).sum())
    return between / total if total > 0 else 0.0


def finding_cpu_uninformative(windows: pd.DataFrame) -> Finding:
    """In the workloads where mean step time is informative (the configuration explains
    >= 50% of its variance across windows), CPU % is not (< 50%) in at least 2/3 of them."""
    claim = "CPU % is uninformative where mean step time is informative."
    scores = {w: {m: eta_squared(g, m) for m in (MEAN_STEP_MS, CPU_PERCENT)} for w, g in windows.groupby("workload")}
    informative = {w: s for w, s in scores.items() if s[MEAN_STEP_MS] >= 0.5}
    numbers = {"per_workload": scores, "step_informative": sorted(informative)}
    if not informative:
        return Finding("cpu_uninformative", claim, Verdict.INCONCLUSIVE,
                       f"mean step time is informative in none of {len(scores)} workloads", numbers)
    cpu_flat = [w for w, s in informative.items() if not s[CPU_PERCENT] >= 0.5]
    share = len(cpu_flat) / len(informative)
    numbers["share_cpu_uninformative"] = share
    verdict = Verdict.HOLDS if share >= 2 / 3 else Verdict.DOES_NOT_HOLD if share <= 1 / 3 else Verdict.INCONCLUSIVE
    detail = ", ".join(f"{w}: step {s[MEAN_STEP_MS]:.0%} / CPU {s[CPU_PERCENT]:.0%}" for w, s in informative.items())
    evidence = (f"mean step time is informative in {len(informative)}/{len(scores)} workloads; in "
                f"{len(cpu_flat)} of those CPU % is not (variance explained by the configuration, eta squared: {detail})")
    return Finding("cpu_uninformative", claim, verdict, evidence, numbers)


def _trial_peaks(windows: pd.DataFrame) -> pd.Series:
    """trial_id → the trial's peak memory over its windows."""
    return pd.to_numeric(windows[MEMORY_MB], errors="coerce").groupby(windows["trial_id"]).max().dropna()


def finding_memory_budget_thesis(budget_trials: pd.DataFrame, budget_mb: float,
                                 windows: pd.DataFrame | None = None) -> Finding:
    """The thesis's budget (``budget_mb``, 400 MB) as measured in the budgeted study.

    Holds when it stops at least one trial and the stopped trials' unrun steps amount to
    > 0 CPU-s. Does not hold when it stops nothing and every peak, budgeted or not, stays
    under it (the budget never binds on this machine: a measured fact about this budget
    here, not missing data; :func:`finding_memory_budget_in_range` tests the mechanism),
    when its stops save nothing, or when a budgeted run peaked over it unstopped.
    Inconclusive without a budgeted study, or when only runs outside it went over.
    """
    key = "memory_budget_thesis"
    claim = f"A {budget_mb:g} MB memory budget (the thesis's) stops trials early and saves compute."
    if budget_trials.empty:
        return Finding(key, claim, Verdict.INCONCLUSIVE, "no budgeted study", {})
    stopped = budget_trials["stop_rule"] == "max_memory_mb"
    # what each stop saved was worked out by frugalml.accounting when it ran; an unknown one is NaN, not counted
    saved, used = float(budget_trials.loc[stopped, "cpu_s_saved"].sum()), float(budget_trials[CPU_S].sum())
    full = used + float(budget_trials["cpu_s_saved"].sum())
    bases = (budget_trials.loc[stopped, "saved_basis"].fillna("unknown").value_counts()
             if "saved_basis" in budget_trials else pd.Series(dtype=int))
    budgeted_peaks = pd.to_numeric(budget_trials[MEMORY_MB], errors="coerce")
    unbudgeted = _trial_peaks(windows) if windows is not None and not windows.empty else pd.Series(dtype=float)
    peaks = pd.concat([budgeted_peaks, unbudgeted]).dropna()
    numbers = {"trials": len(budget_trials), "stopped_by_memory": int(stopped.sum()), "saved_cpu_s": saved,
               "used_cpu_s": used, "saved_fraction": saved / full if full > 0 else 0.0,
               "saved_basis": {str(k): int(v) for k, v in bases.items()},
               "peak_range_mb": [float(peaks.min()), float(peaks.max())] if len(peaks) else None,
               "unbudgeted_runs": len(unbudgeted), "unbudgeted_runs_over_budget": int((unbudgeted > budget_mb).sum()),
               "budgeted_runs_over_budget_unstopped": int(((budgeted_peaks > budget_mb) & ~stopped).sum())}
    evidence = (f"{numbers['stopped_by_memory']}/{len(budget_trials)} trials stopped by the {budget_mb:g} MB budget; "
                f"saved {saved:.1f} CPU-s = {numbers['saved_fraction']:.0%} of running every trial in full "
                f"(used {used:.1f} CPU-s)")
    if numbers["saved_basis"]:
        evidence += " [saved from: " + ", ".join(f"{n} {k}" for k, n in numbers["saved_basis"].items()) + "]"
    if len(peaks):
        evidence += (f"; peak memory {peaks.min():.0f}–{peaks.max():.0f} MB over {len(peaks)} runs "
                     f"({len(unbudgeted)} unbudgeted, {numbers['unbudgeted_runs_over_budget']} of them "
                     f"over {budget_mb:g} MB)")
    if stopped.any() and saved > 0:
        return Finding(key, claim, Verdict.HOLDS, evidence, numbers)
    if numbers["budgeted_runs_over_budget_unstopped"]:
        unstopped = numbers["budgeted_runs_over_budget_unstopped"]
        verdict, why = Verdict.DOES_NOT_HOLD, f"{unstopped} budgeted runs went over it unstopped"
    elif stopped.any():
        verdict, why = Verdict.DOES_NOT_HOLD, "its stops came at the trials' last step: nothing saved"
    elif numbers["unbudgeted_runs_over_budget"]:
        verdict, why = Verdict.INCONCLUSIVE, "only runs outside the budgeted study went over it"
    else:
        verdict, why = Verdict.DOES_NOT_HOLD, ("the budget never binds on this machine: every peak is under it, so it "
                                               "stops nothing and saves nothing here (the mechanism is judged at an "
                                               "in-range budget, finding 6b)")
    return Finding(key, claim, verdict, f"{evidence}; {why}", numbers)


def _final(values: pd.Series) -> float:
    """The last value of a series in step order that is not NaN (inf: diverged), NaN if none."""
    values = pd.to_numeric(values, errors="coerce").dropna()
    return float(values.iloc[-1]) if len(values) else math.nan


def simulate_memory_budget(windows: pd.DataFrame, budget_mb: float) -> pd.DataFrame:
    """Per unbudgeted trial: what a memory budget would have done to it, a counterfactual.

    A trial stops at its first window whose ``memory_mb`` is over ``budget_mb``.
    ``saved_cpu_s`` is what its full run spent after that window, so this is not
    frugalml's "saved" figure (:mod:`frugalml.accounting`, which estimates the steps a
    trial that *was* stopped did not run): no trial here was stopped, and nothing is
    estimated beyond the full run's own readings. The CPU-s come from the CPU-seconds
    read at each window's end (``cpu_s``: the step boundaries accounting uses) where
    every window of the run has one (``cpu_from = "boundaries"``); runs recorded before
    those readings were kept estimate each window as ``cpu_percent`` / 100 x its wall
    time, the change in ``wall_s`` (``cpu_from = "cpu_percent"``). ``val_loss`` is the
    full run's last one.
    """
    rows = []
    for trial_id, group in windows.sort_values("step").groupby("trial_id", sort=False):
        memory = pd.to_numeric(group[MEMORY_MB], errors="coerce").to_numpy(dtype=float)
        readings = (pd.to_numeric(group[CPU_S], errors="coerce").to_numpy(dtype=float) if CPU_S in group
                    else np.full(len(group), np.nan))
        if len(readings) and np.isfinite(readings).all():
            cpu_s, cpu_from = np.diff(readings, prepend=0.0).clip(min=0.0), "boundaries"
        else:
            wall = pd.to_numeric(group[WALL_S], errors="coerce").ffill().fillna(0.0).to_numpy(dtype=float)
            cpu_share = pd.to_numeric(group[CPU_PERCENT], errors="coerce").fillna(0.0).to_numpy(dtype=float) / 100
            cpu_s, cpu_from = cpu_share * np.diff(wall, prepend=0.0).clip(min=0.0), CPU_PERCENT
        over = np.flatnonzero(memory > budget_mb)
        peak = float(np.nanmax(memory)) if np.isfinite(memory).any() else math.nan
        rows.append({"workload": group["workload"].iloc[0], "config_id": group["config_id"].iloc[0],
                     "trial_id": trial_id, "peak_mb": peak,
                     "stopped": bool(len(over)), "stop_step": int(group["step"].iloc[over[0]]) if len(over) else None,
                     CPU_S: float(cpu_s.sum()), "saved_cpu_s": float(cpu_s[over[0] + 1:].sum()) if len(over) else 0.0,
                     "cpu_from": cpu_from, VAL_LOSS: _final(group[VAL_LOSS])})
    return pd.DataFrame(rows)


def _config_peaks(windows: pd.DataFrame) -> pd.Series:
    """(workload, config_id) → the mean over its repeats of each run's peak memory."""
    memory = pd.to_numeric(windows[MEMORY_MB], errors="coerce")
    per_trial = memory.groupby([windows["workload"], windows["config_id"], windows["trial_id"]]).max()
    return per_trial.groupby(level=["workload", "config_id"]).mean().dropna()


def _best(configs: pd.DataFrame) -> dict[str, str | None]:
    """workload → the configuration with the lowest finite mean final val_loss among ``configs``."""
    candidates = configs[np.isfinite(configs[VAL_LOSS].astype(float))]
    best = {w: None for w in configs["workload"].unique()}
    for workload, group in candidates.groupby("workload"):
        best[workload] = str(group.loc[group[VAL_LOSS].idxmin(), "config_id"])
    return best


def finding_memory_budget_in_range(windows: pd.DataFrame) -> Finding:
    """A memory budget inside the observed range works as a mechanism.

    A counterfactual simulated on the unbudgeted runs' windows (the design runs no study at
    such a budget; see :func:`simulate_memory_budget`: what the full runs spent after the
    windows where the budget would have stopped them, not the product's accounted "saved"
    figure, which finding 6a reads from the budgeted study's records), at the midpoint between the smallest and the
    largest configuration's peak memory (a configuration's peak: the mean over its
    repeats of each run's peak). Holds when all three hold: it saves > 0 CPU-s; in every
    workload the best feasible configuration (lowest mean final val_loss among those with
    no repeat stopped) is the full runs' best among configurations whose peak is under the
    budget; and no configuration whose peak is under the budget has a repeat stopped (no
    false stop). As a stop follows from a window over the budget, the last two can fail
    only where a configuration's repeats straddle it. Does not hold otherwise.
    Inconclusive when the peaks span less than ``MIN_MEMORY_EFFECT_MB`` (10 MB: a budget
    between them would split noise), or windows lack ``wall_s``, ``cpu_percent`` or ``val_loss``.
    """
    key = "memory_budget_in_range"
    claim = ("A memory budget inside the observed range stops trials early and saves compute, "
             "keeping the best feasible configuration.")
    missing = [c for c in (MEMORY_MB, WALL_S, CPU_PERCENT, VAL_LOSS) if c not in windows]
    if missing or windows.empty:
        return Finding(key, claim, Verdict.INCONCLUSIVE, f"windows lack {', '.join(missing) or 'rows'}", {})
    peaks = _config_peaks(windows)
    low, high = (float(peaks.min()), float(peaks.max())) if len(peaks) else (math.nan, math.nan)
    if len(peaks) < 2 or not high - low >= MIN_MEMORY_EFFECT_MB:
        return Finding(key, claim, Verdict.INCONCLUSIVE, f"configuration peaks span {high - low:.1f} MB "
                       f"(< {MIN_MEMORY_EFFECT_MB:g} MB): no budget inside the range separates configurations",
                       {"peak_range_mb": [low, high]})
    budget = (low + high) / 2
    trials = simulate_memory_budget(windows, budget)
    configs = trials.groupby(["workload", "config_id"]).agg(
        peak_mb=("peak_mb", "mean"), stopped=("stopped", "any"), val_loss=(VAL_LOSS, "mean")).reset_index()
    fits = configs["peak_mb"] <= budget
    with_budget, reference = _best(configs[~configs["stopped"]]), _best(configs[fits])
    changed = sorted(w for w in reference if with_budget.get(w) != reference[w])
    false_stops = sorted(f"{r.workload} {r.config_id}" for r in configs[fits & configs["stopped"]].itertuples())
    saved, total = float(trials["saved_cpu_s"].sum()), float(trials[CPU_S].sum())
    stopped_per_workload = trials[trials["stopped"]].groupby("workload").size()
    cpu_from = {str(k): int(v) for k, v in trials["cpu_from"].value_counts().items()}
    numbers = {"budget_mb": budget, "peak_range_mb": [low, high], "trials": len(trials), "cpu_from": cpu_from,
               "counterfactual": True,
               "stopped": int(trials["stopped"].sum()), "saved_cpu_s": saved, "total_cpu_s": total,
               "saved_fraction": saved / total if total > 0 else 0.0, "best_changed_in": changed,
               "false_stops": false_stops,
               "stopped_per_workload": {w: int(n) for w, n in stopped_per_workload.items()}}
    verdict = Verdict.HOLDS if saved > 0 and not changed and not false_stops else Verdict.DOES_NOT_HOLD
    stops = ", ".join(f"{w}: {n}" for w, n in numbers["stopped_per_workload"].items())
    how = ("CPU-s read at window ends" if set(cpu_from) == {"boundaries"}
           else "CPU-s estimated as CPU % x window wall time" if set(cpu_from) == {CPU_PERCENT}
           else ", ".join(f"{n} runs from {k}" for k, n in cpu_from.items()))
    evidence = (f"counterfactual, simulated on the unbudgeted runs' windows (a trial stops at its first window over "
                f"the budget) at {budget:.0f} MB, the midpoint of configuration peaks {low:.0f}–{high:.0f} MB: stops "
                f"{numbers['stopped']}/{len(trials)} trials ({stops}); saves {saved:.1f} of {total:.1f} CPU-s "
                f"({numbers['saved_fraction']:.0%}: what the full runs spent after those windows, {how}; not "
                f"frugalml's accounted 'saved' figure, which 6a reads); best feasible configuration as in the "
                f"full runs in "
                f"{len(reference) - len(changed)}/{len(reference)} workloads"
                + (f" (differs in {', '.join(changed)})" if changed else "")
                + (f"; false stops: {len(false_stops)} ({', '.join(false_stops)})" if false_stops
                   else "; no false stop"))
    return Finding(key, claim, verdict, evidence, numbers)


#: Each finding's number in the thesis: findings 3 and 6 are judged twice.
THESIS_NUMBERS = {"level_within_run": "1", "memory_rises_then_levels": "2", "batch_step_time": "3a",
                  "batch_memory": "3b", "learning_rate_no_effect": "4", "cpu_uninformative": "5",
                  "memory_budget_thesis": "6a", "memory_budget_in_range": "6b"}


def thesis_findings(windows: pd.DataFrame, budget_trials: pd.DataFrame, budget_mb: float) -> list[Finding]:
    """The thesis's six findings as eight verdicts, in the thesis's order (see ``THESIS_NUMBERS``)."""
    return [
        finding_level_within_run(windows),
        finding_memory_rises_then_levels(windows),
        finding_batch_step_time(windows),
        finding_batch_memory(windows),
        finding_learning_rate_no_effect(windows),
        finding_cpu_uninformative(windows),
        finding_memory_budget_thesis(budget_trials, budget_mb, windows),
        finding_memory_budget_in_range(windows),
    ]
