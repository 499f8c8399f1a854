"""Drawing step (static): PNG figures with matplotlib from the report's data step."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from frugalml.exceptions import ConfigError
from frugalml.metrics import TRAIN_LOSS, VAL_LOSS
from frugalml.report._info import LABELS, CurvesInfo, EffectsInfo, ParetoInfo, WorkloadInfo, budget_metric

DPI = 80


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - depends on the environment
        raise ConfigError("PNG figures need matplotlib; install it with `pip install 'frugalml[report]'`.") from None
    return plt


def slug(name: str) -> str:
    """A file-name-safe version of a workload name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "workload"


def _log_scale(values: pd.Series) -> bool:
    numeric = pd.to_numeric(values, errors="coerce").dropna()
    return bool(len(numeric) and (numeric > 0).all() and numeric.max() / numeric.min() >= 20)


def _colors(keys: list[str]) -> dict[str, Any]:
    cmap = _pyplot().get_cmap("tab20" if len(keys) > 10 else "tab10")
    return {key: cmap(i % cmap.N) for i, key in enumerate(keys)}


def draw_curves(info: CurvesInfo, title: str, path: Path) -> Path:
    """Each metric over steps: mean over repeats, min-max band; x marks where trials stopped."""
    plt = _pyplot()
    metrics = list(info.metrics)
    cols = 3
    rows = max(1, math.ceil(len(metrics) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(13, 3.2 * rows + 0.6), squeeze=False)
    configs = list(dict.fromkeys(info.curves["config_id"])) if not info.curves.empty else []
    colors = _colors(configs)
    for ax, metric in zip(axes.flat, metrics):
        data = info.curves[info.curves["metric"] == metric]
        for config in configs:
            line = data[data["config_id"] == config].sort_values("step")
            if line.empty:
                continue
            ax.plot(line["step"], line["mean"], color=colors[config], lw=1.3, label=config)
            ax.fill_between(line["step"], line["low"], line["high"], color=colors[config], alpha=0.15, lw=0)
        stops = info.stops[(info.stops["metric"] == metric) & info.stops["value"].notna()]
        if not stops.empty:
            ax.scatter(stops["step"], stops["value"], marker="x", color="red", s=40, zorder=5, label="stopped")
        ax.set_title(LABELS.get(metric, metric), fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=8)
        if metric in (TRAIN_LOSS, VAL_LOSS) and not data.empty and (data["mean"] > 0).all() and \
                data["mean"].max() / max(data["mean"].min(), 1e-12) > 100:
            ax.set_yscale("log")
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=7, frameon=False)
    fig.suptitle(f"{title}: metrics over training steps (mean of repeats, band = min-max)", fontsize=11)
    legend_rows = math.ceil(len(labels) / 4) if handles else 0
    fig.tight_layout(rect=(0, min(0.4, 0.03 + 0.022 * legend_rows * 3 / rows), 1, 0.96))
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def draw_effects(info: EffectsInfo, title: str, path: Path) -> Path | None:
    """Each metric against each hyperparameter (one line per value of the others), as thesis Figs 11-28."""
    if not info.params or info.points.empty:
        return None
    plt = _pyplot()
    metrics, params = list(info.metrics), list(info.params)
    fig, axes = plt.subplots(len(metrics), len(params), figsize=(5.2 * len(params), 2.4 * len(metrics) + 0.5),
                             squeeze=False)
    for col, param in enumerate(params):
        data = info.points[info.points["param"] == param]
        series = list(dict.fromkeys(data["series"]))
        colors = _colors(series)
        for row, metric in enumerate(metrics):
            ax = axes[row][col]
            for name in series:
                line = data[(data["series"] == name) & (data["metric"] == metric)].sort_values("value")
                if not line.empty:
                    ax.errorbar(line["value"], line["mean"], yerr=line["std"], marker="o", ms=3, lw=1.2,
                                capsize=2, color=colors[name], label=name)
            if _log_scale(data["value"]):
                ax.set_xscale("log")
            ax.set_ylabel(LABELS.get(metric, metric), fontsize=8)
            ax.tick_params(labelsize=7)
            if row == 0:
                ax.set_title(f"effect of {param}", fontsize=10)
                ax.legend(fontsize=6, frameon=False)
            if row == len(metrics) - 1:
                ax.set_xlabel(param, fontsize=8)
    fig.suptitle(f"{title}: hyperparameter effects (mean ± std over repeats and windows' summary)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def draw_pareto(info: ParetoInfo, title: str, path: Path) -> Path | None:
    """Val loss against steady step time and against memory; budgets as dashed lines."""
    points = info.points.dropna(subset=[VAL_LOSS])
    if points.empty:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(info.costs), figsize=(6 * len(info.costs), 4.2), squeeze=False)
    for ax, cost in zip(axes[0], info.costs):
        ok = points[points["feasible"]]
        bad = points[~points["feasible"]]
        ax.scatter(ok[cost], ok[VAL_LOSS], color="tab:blue", s=25, label="within budget")
        ax.scatter(bad[cost], bad[VAL_LOSS], color="tab:red", marker="x", s=35, label="broke a budget (stopped)")
        front = ok[ok[f"front_{cost}"]].sort_values(cost)
        if not front.empty:
            ax.plot(front[cost], front[VAL_LOSS], color="tab:blue", lw=1, ls="-", label="Pareto front")
        if (limit := info.budgets.get(budget_metric(cost))) is not None:
            ax.axvline(limit, color="red", ls="--", lw=1.2, label=f"budget {limit:g}")
        if _log_scale(points[cost]):
            ax.set_xscale("log")
        if _log_scale(points[VAL_LOSS]):
            ax.set_yscale("log")
        ax.set_xlabel(LABELS[cost], fontsize=9)
        ax.set_ylabel("val loss (last window)", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(f"{title}: Pareto front (configurations, mean of repeats)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def draw_workload(info: WorkloadInfo, out: Path, prefix: str = "") -> list[Path]:
    """All PNG figures of one workload, written to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    base = slug(prefix + info.name)
    paths = [
        draw_curves(info.curves, info.label, out / f"{base}-curves.png") if info.curves.metrics else None,
        draw_effects(info.effects, info.label, out / f"{base}-effects.png"),
        draw_pareto(info.pareto, info.label, out / f"{base}-pareto.png"),
    ]
    return [p for p in paths if p is not None]
