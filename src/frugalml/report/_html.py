"""Drawing step (interactive): one self-contained HTML file with plotly (no CDN)."""

from __future__ import annotations

import html
import math
from typing import Any, Sequence

import pandas as pd

from frugalml.exceptions import ConfigError
from frugalml.metrics import VAL_LOSS
from frugalml.report._info import (
    LABELS, CurvesInfo, EffectsInfo, ParetoInfo, ReportInfo, budget_metric, compute_rows,
)

_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
            "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94"]
_CSS = """body{font-family:system-ui,sans-serif;margin:24px;max-width:1400px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:8px 0 20px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f3f3f3}.note{background:#fff3cd;border:1px solid #e0c46c;padding:8px 12px;margin:10px 0}
h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:36px}.chart{margin-bottom:18px}"""


def _plotly() -> tuple[Any, Any, Any]:
    try:
        import plotly.graph_objects as go
        from plotly.offline import get_plotlyjs
        from plotly.subplots import make_subplots
    except ImportError:  # pragma: no cover - depends on the environment
        raise ConfigError("HTML reports need plotly; install it with `pip install 'frugalml[report]'`.") from None
    return go, make_subplots, get_plotlyjs


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _log(values: pd.Series) -> bool:
    numeric = pd.to_numeric(values, errors="coerce").dropna()
    return bool(len(numeric) and (numeric > 0).all() and numeric.max() / numeric.min() >= 20)


def curves_figure(info: CurvesInfo, title: str) -> Any:
    go, make_subplots, _ = _plotly()
    metrics = list(info.metrics)
    cols = 3
    rows = max(1, math.ceil(len(metrics) / cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[LABELS.get(m, m) for m in metrics],
                        horizontal_spacing=0.06, vertical_spacing=0.12)
    configs = list(dict.fromkeys(info.curves["config_id"])) if not info.curves.empty else []
    for index, metric in enumerate(metrics):
        row, col = index // cols + 1, index % cols + 1
        data = info.curves[info.curves["metric"] == metric]
        for number, config in enumerate(configs):
            line = data[data["config_id"] == config].sort_values("step")
            if line.empty:
                continue
            color = _PALETTE[number % len(_PALETTE)]
            fig.add_trace(go.Scatter(
                x=list(line["step"]) + list(line["step"])[::-1], y=list(line["high"]) + list(line["low"])[::-1],
                mode="lines", fill="toself", fillcolor=_rgba(color, 0.15), line={"width": 0}, hoverinfo="skip",
                legendgroup=config, showlegend=False), row=row, col=col)
            fig.add_trace(go.Scatter(
                x=line["step"], y=line["mean"], mode="lines", line={"color": color, "width": 1.5}, name=config,
                legendgroup=config, showlegend=index == 0,
                customdata=line[["std", "n"]].to_numpy(),
                hovertemplate=f"{config}<br>step %{{x}}<br>{metric} %{{y:.4g}} ± %{{customdata[0]:.3g}} "
                              "(n=%{customdata[1]})<extra></extra>"), row=row, col=col)
        stops = info.stops[(info.stops["metric"] == metric) & info.stops["value"].notna()]
        if not stops.empty:
            fig.add_trace(go.Scatter(
                x=stops["step"], y=stops["value"], mode="markers", marker={"symbol": "x", "color": "red", "size": 9},
                name="stopped / failed", legendgroup="stopped", showlegend=index == 0,
                text=[f"{t} ({s}): {html.escape(str(r))}" for t, s, r in zip(stops["trial_id"], stops["status"], stops["reason"])],
                hovertemplate="%{text}<extra></extra>"), row=row, col=col)
        fig.update_xaxes(title_text="step", row=row, col=col)
    fig.update_layout(title=f"{title}: metrics over training steps (mean of repeats, band = min–max)",
                      height=330 * rows + 120, legend={"font": {"size": 10}})
    return fig


def effects_figure(info: EffectsInfo, title: str) -> Any | None:
    if not info.params or info.points.empty:
        return None
    go, make_subplots, _ = _plotly()
    metrics, params = list(info.metrics), list(info.params)
    fig = make_subplots(rows=len(metrics), cols=len(params), shared_xaxes=True, vertical_spacing=0.03,
                        subplot_titles=[f"{LABELS.get(m, m)} vs {p}" for m in metrics for p in params])
    for col, param in enumerate(params, start=1):
        data = info.points[info.points["param"] == param]
        for number, series in enumerate(dict.fromkeys(data["series"])):
            color = _PALETTE[number % len(_PALETTE)]
            for row, metric in enumerate(metrics, start=1):
                line = data[(data["series"] == series) & (data["metric"] == metric)].sort_values("value")
                if line.empty:
                    continue
                fig.add_trace(go.Scatter(
                    x=line["value"], y=line["mean"], error_y={"type": "data", "array": line["std"], "visible": True},
                    mode="lines+markers", line={"color": color}, name=f"{param}: {series}",
                    legendgroup=f"{param}{series}", showlegend=row == 1), row=row, col=col)
        if _log(data["value"]):
            fig.update_xaxes(type="log", col=col)
        fig.update_xaxes(title_text=param, row=len(metrics), col=col)
    fig.update_layout(title=f"{title}: effect of each hyperparameter (mean ± std over repeats)",
                      height=230 * len(metrics) + 150, legend={"font": {"size": 10}})
    return fig


def pareto_figure(info: ParetoInfo, title: str) -> Any | None:
    points = info.points.dropna(subset=[VAL_LOSS])
    if points.empty:
        return None
    go, make_subplots, _ = _plotly()
    fig = make_subplots(rows=1, cols=len(info.costs), subplot_titles=[f"val loss vs {LABELS[c]}" for c in info.costs])
    for col, cost in enumerate(info.costs, start=1):
        for feasible, name, marker in ((True, "within budget", {"color": "#1f77b4", "size": 8}),
                                       (False, "broke a budget (stopped)", {"color": "red", "symbol": "x", "size": 10})):
            part = points[points["feasible"] == feasible]
            if part.empty:
                continue
            text = [f"{c}<br>{s}" + (f"<br>{html.escape(str(r))}" if r else "")
                    for c, s, r in zip(part["config_id"], part["status"], part["reason"])]
            fig.add_trace(go.Scatter(x=part[cost], y=part[VAL_LOSS], mode="markers", marker=marker, name=name,
                                     legendgroup=name, showlegend=col == 1, text=text,
                                     hovertemplate="%{text}<br>%{x:.4g}, val loss %{y:.4g}<extra></extra>"),
                          row=1, col=col)
        front = points[points["feasible"] & points[f"front_{cost}"]].sort_values(cost)
        if not front.empty:
            fig.add_trace(go.Scatter(x=front[cost], y=front[VAL_LOSS], mode="lines", line={"color": "#1f77b4"},
                                     name="Pareto front", legendgroup="front", showlegend=col == 1), row=1, col=col)
        if (limit := info.budgets.get(budget_metric(cost))) is not None:
            fig.add_vline(x=limit, line={"color": "red", "dash": "dash"}, row=1, col=col,
                          annotation_text=f"budget {limit:g}")
        fig.update_xaxes(title_text=LABELS[cost], type="log" if _log(points[cost]) else "linear", row=1, col=col)
        fig.update_yaxes(title_text="val loss", row=1, col=col)
    fig.update_layout(title=f"{title}: Pareto front of val loss against cost (mean of repeats)", height=460)
    return fig


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return "<p>none</p>"
    columns = list(columns or rows[0].keys())

    def cell(value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        return html.escape(f"{value:.4g}" if isinstance(value, float) else str(value))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _figure_html(fig: Any) -> str:
    return '<div class="chart">' + fig.to_html(full_html=False, include_plotlyjs=False) + "</div>"


def study_section(info: ReportInfo) -> str:
    """The HTML of one study: notes, budgets, compute table, stopped trials, charts per workload."""
    parts = [f"<h1>frugalml report: study {html.escape(info.name)}</h1>",
             f"<p>results store: <code>{html.escape(info.directory)}</code>; budgets: "
             f"{html.escape(', '.join(f'{k}={v}' for k, v in info.budget.items()) or 'none')}</p>"]
    parts += [f'<div class="note">{html.escape(note)}</div>' for note in info.notes]
    parts.append("<h2>Compute budget</h2>" + _table(compute_rows(info.compute)))
    stops = info.stops.to_dict("records") if not info.stops.empty else []
    parts.append(f"<h2>Stopped, failed and skipped trials ({len(stops)})</h2>"
                 + _table(stops, ["trial_id", "status", "stop_rule", "stop_step", "steps_done", "steps_planned",
                                  "cpu_s_saved", "saved_basis", "energy_j_saved", "energy_source", "stop_phase",
                                  "reason"]))
    for workload in info.workloads:
        parts.append(f'<h2 id="{html.escape(workload.name)}">Workload {html.escape(workload.label)}</h2>')
        figures = [curves_figure(workload.curves, workload.label) if workload.curves.metrics else None,
                   effects_figure(workload.effects, workload.label), pareto_figure(workload.pareto, workload.label)]
        parts += [_figure_html(fig) for fig in figures if fig is not None]
    return "\n".join(parts)


def render_html(infos: Sequence[ReportInfo], title: str, preamble: str = "") -> str:
    """A complete, offline HTML page: plotly.js inline once, then each study's section."""
    _, _, get_plotlyjs = _plotly()
    sections = "\n".join(study_section(info) for info in infos)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style><script type='text/javascript'>{get_plotlyjs()}</script></head>"
            f"<body>{preamble}{sections}</body></html>")
