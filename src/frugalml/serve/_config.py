"""The monitoring configuration of a served model, and its one converter.

Written as TOML (``frugalml serve --config monitoring.toml``), as a dict (``PUT
/admin/monitoring-config``) or in Python; :func:`as_monitoring_config` turns any of
them into a validated :class:`MonitoringConfig`::

    window_rows = 500        # rows per drift window
    psi_threshold = 0.25     # a feature drifts when its PSI is above this ...
    ks_alpha = 0.05          # ... or its KS p-value is below ks_alpha / n_features
    nonfinite = "reject"     # NaN/inf inputs: "reject" (422) or "impute" (training mean)
    webhooks = ["http://127.0.0.1:9000/alerts"]
    slo_window_s = 60        # a model with an SLO: its live latency quantile over this window,
    slo_min_requests = 20    # judged once it holds this many requests (see frugalml.serve._slo)

    [custom_metrics]         # name = "module:function(X, predictions) -> float", per window
    share_high_glucose = "mychecks:high_glucose"

    [[alerts]]
    name = "input drift"
    metric = "drift.features"   # see ServingMonitor.values() for the names; '*' matches any suffix
    op = ">="
    threshold = 1
    window = 1                  # mean of the metric's latest `window` values
    for_s = 0                   # how long the condition must hold before it fires
"""

from __future__ import annotations

import importlib
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping

from frugalml.exceptions import ConfigError
from frugalml.validation import Interval, check, check_keys, printable, read_toml

OPS: dict[str, Callable[[float, float], bool]] = {
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}
NONFINITE_POLICIES = ("reject", "impute")
CustomMetric = Callable[..., float]


MAX_COUNT = 10**7  # rows, labels or ids kept in memory: a sanity cap, far above any useful setting


def _number(owner: str, name: str, value: Any, low: float, high: float = math.inf, *, integer: bool = False,
            open_low: bool = False) -> None:
    closed = ("right" if open_low else "both") if high < math.inf else ("neither" if open_low else "left")
    check(owner, name, value, Interval(int if integer else float, low, None if high == math.inf else high, closed))


@dataclass(frozen=True)
class AlertRule:
    """Fire when ``mean(latest `window` values of metric) <op> threshold`` holds for ``for_s`` seconds.

    Example:
        >>> AlertRule(name="slow", metric="latency.p99_ms", op=">", threshold=50, for_s=30).op
        '>'
    """

    name: str
    metric: str
    threshold: float
    op: str = ">"
    window: int = 1
    for_s: float = 0.0

    def __post_init__(self) -> None:
        for key in ("name", "metric"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value.strip() or not printable(value) or len(value) > 128:
                raise ConfigError(f"alert rule {key!r} must be a non-empty line of printable text (at most 128 "
                                  f"characters). Got {value!r} instead.")
        _check_metric_name(self.name, self.metric)
        if self.op not in OPS:
            raise ConfigError(f"alert rule {self.name!r}: 'op' must be one of {sorted(OPS)}. Got {self.op!r} instead.")
        _number(f"alert rule {self.name!r}", "threshold", self.threshold, -math.inf)
        _number(f"alert rule {self.name!r}", "window", self.window, 1, integer=True)
        _number(f"alert rule {self.name!r}", "for_s", self.for_s, 0.0)

    def holds(self, value: float) -> bool:
        return math.isfinite(value) and OPS[self.op](value, self.threshold)


# Metric families of ServingMonitor.values(); None: any suffix (per feature, slice or custom name).
METRIC_FAMILIES: dict[str, tuple[str, ...] | None] = {
    "drift": None, "quality": None, "custom": None, "data": None,
    "nonfinite": ("inputs", "outputs", "weights"),
    "latency": ("p50_ms", "p99_ms"),
    "errors": ("rate",),
    "process": ("cpu_percent", "memory_mb"),
    "slo": ("predict_ms",),
}


def _check_metric_name(rule: str, metric: str) -> None:
    family, _, suffix = metric.partition(".")
    known = METRIC_FAMILIES.get(family, ())
    if family not in METRIC_FAMILIES or not suffix or (known and suffix not in known and suffix != "*"):
        names = ", ".join(f"{f}.*" if s is None else ", ".join(f"{f}.{x}" for x in s) for f, s in METRIC_FAMILIES.items())
        raise ConfigError(f"alert rule {rule!r}: unknown metric {metric!r}; use one of {names}.")


@dataclass(frozen=True)
class MonitoringConfig:
    """How a served model is watched. See the module docstring for the TOML form."""

    enabled: bool = True
    window_rows: int = 500
    window_s: float | None = None  # also close a window this old once it has min_window_rows
    min_window_rows: int = 50
    psi_threshold: float = 0.25
    ks_alpha: float = 0.05
    nonfinite: str = "reject"
    quality_window: int = 200
    max_slices: int = 50
    feedback_capacity: int = 100_000
    interval_s: float = 0.5
    webhooks: tuple[str, ...] = ()
    webhook_timeout_s: float = 5.0
    custom_metrics: Mapping[str, Any] = field(default_factory=dict)
    alerts: tuple[AlertRule, ...] = ()
    slo_window_s: float = 60.0  # the live SLO quantile covers the model's predict times of this long ...
    slo_min_requests: int = 20  # ... once it holds this many requests (more for a high quantile)

    def __post_init__(self) -> None:
        owner = "MonitoringConfig"
        if not isinstance(self.enabled, bool):
            raise ConfigError(f"The 'enabled' parameter of {owner} must be a bool. Got {self.enabled!r} instead.")
        for name in ("window_rows", "min_window_rows", "quality_window", "max_slices", "feedback_capacity"):
            _number(owner, name, getattr(self, name), 1, MAX_COUNT, integer=True)
        if self.window_s is not None:
            _number(owner, "window_s", self.window_s, 0.0, open_low=True)
        _number(owner, "psi_threshold", self.psi_threshold, 0.0, open_low=True)
        _number(owner, "ks_alpha", self.ks_alpha, 0.0, 1.0, open_low=True)
        _number(owner, "interval_s", self.interval_s, 0.01, 60.0)
        _number(owner, "slo_window_s", self.slo_window_s, 1.0, 86400.0)
        _number(owner, "slo_min_requests", self.slo_min_requests, 1, MAX_COUNT, integer=True)
        _number(owner, "webhook_timeout_s", self.webhook_timeout_s, 0.0, 60.0, open_low=True)
        if self.nonfinite not in NONFINITE_POLICIES:
            raise ConfigError(f"'nonfinite' must be one of {NONFINITE_POLICIES}. Got {self.nonfinite!r} instead.")
        for url in self.webhooks:
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise ConfigError(f"each webhook must be an http(s) URL. Got {url!r} instead.")
        names = [rule.name for rule in self.alerts]
        if len(set(names)) != len(names):
            raise ConfigError(f"alert rule names must be unique; got {names}.")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["custom_metrics"] = {k: v if isinstance(v, str) else _qualname(v) for k, v in self.custom_metrics.items()}
        data["webhooks"] = list(self.webhooks)
        data["alerts"] = [asdict(rule) for rule in self.alerts]
        return data

    def custom_functions(self) -> dict[str, CustomMetric]:
        """The custom metrics as callables (``"module:function"`` strings are imported)."""
        return {name: _import(name, spec) for name, spec in self.custom_metrics.items()}


def _qualname(function: Any) -> str:
    return f"{getattr(function, '__module__', '?')}:{getattr(function, '__qualname__', repr(function))}"


def _import(name: str, spec: Any) -> CustomMetric:
    if callable(spec):
        return spec
    if not isinstance(spec, str) or ":" not in spec:
        raise ConfigError(f"custom metric {name!r} must be a callable or 'module:function'. Got {spec!r} instead.")
    module, _, attribute = spec.partition(":")
    try:
        function = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"custom metric {name!r}: cannot import {spec!r} ({error}).") from error
    if not callable(function):
        raise ConfigError(f"custom metric {name!r}: {spec!r} is not callable.")
    return function


def as_alert_rule(value: AlertRule | Mapping[str, Any]) -> AlertRule:
    if isinstance(value, AlertRule):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(f"an alert rule must be a table/dict. Got {value!r} instead.")
    check_keys("an alert rule", value, [f.name for f in fields(AlertRule)])
    data = dict(value)
    missing = [key for key in ("metric", "threshold") if key not in data]
    if missing:
        raise ConfigError(f"alert rule {data.get('name', '')!r} needs {' and '.join(missing)}, e.g. "
                          "{metric = \"drift.detected\", op = \">=\", threshold = 1}.")
    data.setdefault("name", str(data.get("metric", "")))
    try:
        return AlertRule(**data)
    except TypeError as error:
        raise ConfigError(f"alert rule {data.get('name')!r}: {error}.") from error


def as_monitoring_config(value: MonitoringConfig | Mapping[str, Any] | str | Path | None) -> MonitoringConfig:
    """Convert ``None`` (defaults), a dict, a TOML file path or a config into a :class:`MonitoringConfig`."""
    if value is None:
        return MonitoringConfig()
    if isinstance(value, MonitoringConfig):
        return value
    if isinstance(value, (str, Path)):
        value = read_toml(value, "monitoring config", "pass a TOML file of monitoring settings (see docs/serving.md)")
    if not isinstance(value, Mapping):
        raise ConfigError(f"a monitoring config must be a table/dict. Got {type(value).__name__} instead.")
    check_keys("the monitoring config", value, [f.name for f in fields(MonitoringConfig)])
    data = dict(value)
    if not isinstance(data.get("alerts", []), (list, tuple)):
        raise ConfigError("'alerts' must be a list of tables ([[alerts]]).")
    data["alerts"] = tuple(as_alert_rule(rule) for rule in data.get("alerts", ()))
    webhooks = data.get("webhooks", ())
    data["webhooks"] = (webhooks,) if isinstance(webhooks, str) else tuple(webhooks)
    if not isinstance(data.get("custom_metrics", {}), Mapping):
        raise ConfigError("'custom_metrics' must be a table of name = 'module:function'.")
    return MonitoringConfig(**data)
