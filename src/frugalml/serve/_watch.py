"""``frugalml monitor``: a live terminal view of a server's ``/metrics``.

:func:`dashboard` is the data step (Prometheus text in, a :class:`Dashboard` out);
:func:`render` draws it with rich. Rates need two scrapes, so :func:`dashboard`
takes the previous one.
"""

from __future__ import annotations

import math
import time
from typing import NamedTuple

from prometheus_client.parser import text_string_to_metric_families

from frugalml.units import to_mb


class FeatureRow(NamedTuple):
    name: str
    psi: float
    ks: float
    ks_pvalue: float
    drifted: bool


class Dashboard(NamedTuple):
    at: float
    model: dict[str, str]
    requests: float
    predict_requests: float
    request_rate: float | None
    errors: dict[str, float]
    in_flight: float
    p50_ms: float | None
    p99_ms: float | None
    cpu_percent: float | None
    memory_mb: float | None
    monitoring: bool
    windows: float
    flagged_windows: float
    features: tuple[FeatureRow, ...]
    prediction_psi: float | None
    quality: dict[str, float]
    custom: dict[str, float]
    alerts: dict[str, bool]
    nonfinite: dict[str, float]


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus-style quantile from cumulative ``(upper bound, count)`` buckets."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = upper, count
    return lower


def _mb(n_bytes: float | None) -> float | None:
    return None if n_bytes is None else to_mb(n_bytes)


def dashboard(text: str, previous: Dashboard | None = None, now: float | None = None) -> Dashboard:
    """Parse one scrape of ``/metrics`` into what the view shows."""
    now = time.time() if now is None else now
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)

    def one(name: str) -> float | None:
        found = samples.get(name)
        return found[0].value if found else None

    def by(name: str, label: str) -> dict[str, float]:
        return {s.labels[label]: s.value for s in samples.get(name, [])}

    requests = sum(s.value for s in samples.get("frugalml_requests_total", []))
    predict = sum(s.value for s in samples.get("frugalml_requests_total", []) if s.labels["endpoint"] == "/predict")
    buckets = [(float(s.labels["le"]), s.value) for s in samples.get("frugalml_request_duration_seconds_bucket", [])
               if s.labels["endpoint"] == "/predict"]
    p50, p99 = (histogram_quantile(q, buckets) for q in (0.5, 0.99))
    rate = None
    if previous is not None and now > previous.at:
        rate = max(0.0, predict - previous.predict_requests) / (now - previous.at)
    drifted = by("frugalml_feature_drifted", "feature")
    ks_p = by("frugalml_feature_ks_pvalue", "feature")
    ks_stat = by("frugalml_feature_ks_statistic", "feature")
    features = tuple(
        FeatureRow(name, psi, ks_stat.get(name, math.nan), ks_p.get(name, math.nan), bool(drifted.get(name)))
        for name, psi in by("frugalml_feature_psi", "feature").items()
    )
    info = samples.get("frugalml_model_info", [])
    quality = {f"{s.labels['metric']} [{s.labels['slice']}]": s.value for s in samples.get("frugalml_quality", [])}
    nonfinite = {f"{s.labels['where']} {s.labels['kind']}": s.value
                 for s in samples.get("frugalml_nonfinite_values_total", [])}
    return Dashboard(
        at=now, model=dict(info[0].labels) if info else {}, requests=requests, predict_requests=predict,
        request_rate=rate, errors=by("frugalml_errors_total", "kind"),
        in_flight=max(0.0, (one("frugalml_requests_in_flight") or 0) - 1),  # less the scrape reading it
        p50_ms=None if p50 is None else p50 * 1e3, p99_ms=None if p99 is None else p99 * 1e3,
        cpu_percent=one("frugalml_process_cpu_percent"), memory_mb=_mb(one("frugalml_process_memory_bytes")),
        monitoring=bool(one("frugalml_monitoring_enabled")), windows=one("frugalml_drift_windows_total") or 0,
        flagged_windows=one("frugalml_drift_flagged_windows_total") or 0, features=features,
        prediction_psi=one("frugalml_prediction_psi"), quality=quality,
        custom=by("frugalml_custom_metric", "name"),
        alerts={k: bool(v) for k, v in by("frugalml_alert_firing", "rule").items()}, nonfinite=nonfinite,
    )


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}g}"


def render(board: Dashboard, url: str):  # -> rich renderable
    """Draw a dashboard: service, drift by feature, quality/custom metrics, alerts."""
    from rich.console import Group
    from rich.table import Table

    model = board.model
    head = Table(title=f"{model.get('name') or model.get('uri', '?')} v{model.get('version') or '-'}  {url}",
                 show_header=False, title_justify="left")
    head.add_column(style="bold")
    head.add_column()
    errors = ", ".join(f"{k} {v:g}" for k, v in sorted(board.errors.items())) or "none"
    for label, value in (
        ("requests", f"{board.requests:g} total, {_fmt(board.request_rate)} predict/s, {board.in_flight:g} in flight"),
        ("predict latency", f"p50 {_fmt(board.p50_ms)} ms, p99 {_fmt(board.p99_ms)} ms"),
        ("errors", errors),
        ("process", f"CPU {_fmt(board.cpu_percent)} %, memory {_fmt(board.memory_mb, 4)} MB"),
        ("drift windows", f"{board.windows:g} closed, {board.flagged_windows:g} flagged, prediction PSI "
                          f"{_fmt(board.prediction_psi)}" if board.monitoring else "monitoring disabled"),
        ("non-finite", ", ".join(f"{k} {v:g}" for k, v in board.nonfinite.items() if v) or "none"),
    ):
        head.add_row(label, value)
    parts = [head]
    if board.features:
        drift = Table(title="drift vs training (latest window)", title_justify="left")
        for column in ("feature", "PSI", "KS", "KS p-value", "drifted"):
            drift.add_column(column)
        for row in board.features:
            style = "bold red" if row.drifted else None
            drift.add_row(row.name, _fmt(row.psi), _fmt(row.ks), _fmt(row.ks_pvalue), "yes" if row.drifted else "",
                          style=style)
        parts.append(drift)
    extra = {**{f"quality {k}": v for k, v in board.quality.items()},
             **{f"custom {k}": v for k, v in board.custom.items()}}
    if extra:
        table = Table(title="quality and custom metrics", title_justify="left")
        table.add_column("metric")
        table.add_column("value")
        for name, value in extra.items():
            table.add_row(name, _fmt(value, 4))
        parts.append(table)
    if board.alerts:
        alerts = Table(title="alerts", title_justify="left")
        alerts.add_column("rule")
        alerts.add_column("state")
        for rule, firing in board.alerts.items():
            alerts.add_row(rule, "FIRING" if firing else "ok", style="bold red" if firing else "green")
        parts.append(alerts)
    return Group(*parts)
