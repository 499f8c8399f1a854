"""The served model's SLO, live: the serving budgets it was tuned under, against its traffic.

``frugalml register`` tags a version with the serving budgets its study held trials to
(``frugalml.slo``, :class:`frugalml.deploy.Slo`). The server reads that tag (:meth:`ServedSlo.of`),
times every call to the model, and compares the latency quantile the SLO names with
``max_predict_ms`` over a sliding window of requests (:class:`LatencyWindow`), as monitor
metric ``slo.predict_ms``: an alert rule (:func:`slo_rule`) fires once when it breaks.

What is timed is the model's own predict call, the quantity tuning measured (``[deploy]``:
``calls`` predictions of ``batch_size`` rows), counted only for requests of at most
``batch_size`` rows; parsing, queueing and the answer are not in it (the whole request is
``frugalml_request_duration_seconds``). Throughput, model size and inference memory are
shown with their limits and left to ``frugalml check``: live throughput is what clients
offer, not what the model can do, and the server's memory holds far more than the model.

Example:
    >>> from frugalml.deploy import Slo
    >>> window = LatencyWindow(Slo.of_study({"max_predict_ms": 2}, {"quantile": 0.5}), window_s=60, min_requests=3)
    >>> for t in range(4):
    ...     window.add(float(t), 0.001, rows=1)
    >>> window.value_ms(4.0)
    (1.0, 4)
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from frugalml.budgets import BUDGETS
from frugalml.deploy import SLO_TAG, Slo
from frugalml.serve._config import AlertRule, MonitoringConfig

LATENCY_BUDGET = "max_predict_ms"
LATENCY_METRIC = "slo.predict_ms"  # the monitor's metric, usable in alert rules too
RULE_NAME = "slo.max_predict_ms"  # the alert rule the server adds for a model with an SLO
_MAX_TIMES = 100_000


@dataclass(frozen=True)
class ServedSlo:
    """The SLO a server holds its model to: ``slo``, from the tag of ``name`` version ``version``."""

    slo: Slo
    name: str
    version: str

    @classmethod
    def of(cls, served: Any, previous: ServedSlo | None = None) -> ServedSlo | None:
        """The SLO of ``served`` (a :class:`ServedModel`), from its ``frugalml.slo`` tag.

        A version of the same registered model that carries no SLO (promoted by hand, registered
        outside frugalml) keeps ``previous``: the endpoint's promise does not vanish with the tag."""
        own = Slo.from_json(served.tags.get(SLO_TAG))
        if own is not None:
            return cls(own, served.name, served.version)
        if previous is not None and served.name and served.name == previous.name:
            return previous
        return None

    @property
    def batch_size(self) -> int:
        return int(self.slo.deploy.get("batch_size", 1))


def min_requests(quantile: float, floor: int) -> int:
    """Requests a window needs before its ``quantile`` is judged: at least ``floor``, and ``1 / (1 - q)``
    (100 for p99), so that the slowest request alone (a first call, a pause) is not the quantile."""
    return max(int(floor), math.ceil(1 / max(1.0 - quantile, 1e-3) - 1e-9))


class LatencyWindow:
    """Model predict times of requests of at most the SLO's ``batch_size`` rows, over the last
    ``window_s`` seconds; their quantile once there are ``min_requests`` (see :func:`min_requests`).
    Not thread-safe: the monitor calls it under its lock."""

    def __init__(self, slo: Slo, window_s: float, min_requests: int) -> None:
        self.quantile = slo.quantile
        self.batch_size = int(slo.deploy.get("batch_size", 1))
        self.window_s = float(window_s)
        self.min_requests = min_requests
        self._times: deque[tuple[float, float]] = deque(maxlen=_MAX_TIMES)

    def add(self, now: float, seconds: float, rows: int) -> None:
        if rows <= self.batch_size:
            self._times.append((now, seconds))

    def value_ms(self, now: float) -> tuple[float | None, int]:
        """The live quantile in ms (None: too few requests in the window) and the requests it covers."""
        times, horizon = self._times, now - self.window_s
        while times and times[0][0] < horizon:
            times.popleft()
        if len(times) < self.min_requests:
            return None, len(times)
        return float(np.quantile([s for _, s in times], self.quantile) * 1e3), len(times)


def latency_window(slo: ServedSlo | None, config: MonitoringConfig) -> LatencyWindow | None:
    if slo is None or LATENCY_BUDGET not in slo.slo.limits:
        return None
    return LatencyWindow(slo.slo, config.slo_window_s, min_requests(slo.slo.quantile, config.slo_min_requests))


def slo_rule(slo: ServedSlo | None, config: MonitoringConfig) -> AlertRule | None:
    """The alert rule on ``slo.predict_ms`` (None without a latency SLO, or when the config has its own
    rule of that name: the user's wins)."""
    if slo is None or LATENCY_BUDGET not in slo.slo.limits or any(r.name == RULE_NAME for r in config.alerts):
        return None
    return AlertRule(name=RULE_NAME, metric=LATENCY_METRIC, op=">", threshold=float(slo.slo.limits[LATENCY_BUDGET]))


def status(slo: ServedSlo | None, served_version: str, live_ms: float | None, requests: int,
           config: MonitoringConfig | None, monitored: bool) -> dict[str, Any] | None:
    """What ``/health`` says of the SLO: limits, envelope, each check and whether live traffic meets it
    (``met``: None until a window holds enough requests)."""
    if slo is None:
        return None
    checks = slo.slo.check({BUDGETS[LATENCY_BUDGET].metric: live_ms})
    measured = [c for c in checks if c.value is not None]
    answer: dict[str, Any] = {
        "budget": dict(slo.slo.limits), "deploy": dict(slo.slo.deploy), "quantile": slo.slo.quantile,
        "version": slo.version,
        "met": None if not measured else not any(c.broken for c in measured),
        "checks": [c.to_dict() for c in checks],
        "lines": [c.line for c in checks],
    }
    if slo.version != served_version:
        answer["note"] = (f"kept from version {slo.version}: the served version {served_version or '-'} carries "
                          "no SLO of its own")
    if LATENCY_BUDGET in slo.slo.limits:
        if not monitored:
            answer["live"] = "off: monitoring is disabled (or the model has no reference data)"
        elif config is not None:
            needed = min_requests(slo.slo.quantile, config.slo_min_requests)
            answer["live"] = {
                "measures": f"p{slo.slo.quantile * 100:g} of the model's predict time, requests of at most "
                            f"{slo.batch_size} row{'s' if slo.batch_size > 1 else ''}, last {config.slo_window_s:g} s",
                "requests": requests, "min_requests": needed, "predict_ms": live_ms}
    return answer


PREDICT_BUCKETS = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


def predict_buckets(slo: ServedSlo) -> tuple[float, ...]:
    """:data:`PREDICT_BUCKETS` and the SLO's limit (in seconds): at a bucket edge, ``histogram_quantile``
    crosses the limit exactly when the share of slower calls does."""
    limit = float(slo.slo.limits[LATENCY_BUDGET]) / 1e3
    return tuple(sorted({*PREDICT_BUCKETS, limit}))


def prometheus_rules(slo: ServedSlo, uri: str, *, window: str = "5m", for_: str = "5m") -> str:
    """A Prometheus rule file (YAML) alerting when the model's predict time breaks its SLO, computed by
    Prometheus from ``frugalml_slo_predict_seconds`` over ``window`` on servers of this model."""
    import yaml

    if LATENCY_BUDGET not in slo.slo.limits:
        raise ValueError(f"the SLO has no {LATENCY_BUDGET}: {dict(slo.slo.limits)}")
    limit_ms = float(slo.slo.limits[LATENCY_BUDGET])
    q = slo.slo.quantile
    name = slo.name or "model"
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    expr = (f"histogram_quantile({q:g}, sum by (le, instance) (rate(frugalml_slo_predict_seconds_bucket[{window}])))"
            f" > {limit_ms / 1e3:g} and on (instance) frugalml_model_info{{name=\"{escaped}\"}}")
    rule = {
        "alert": "FrugalmlSloPredictLatency",
        "expr": expr,
        "for": for_,
        "labels": {"severity": "warning", "model": name, "budget": LATENCY_BUDGET},
        "annotations": {"summary": f"p{q * 100:g} model predict time {{{{ $value | humanizeDuration }}}} on "
                                   f"{{{{ $labels.instance }}}} breaks the SLO of {name} ({LATENCY_BUDGET} = "
                                   f"{limit_ms:g})"},
    }
    head = (f"# Prometheus alerting rules from the SLO of {uri} (version {slo.version or '-'}), written by\n"
            f"# `frugalml serve {uri} --print-slo-rules`; add the file to rule_files: in prometheus.yml.\n")
    group = {"groups": [{"name": f"frugalml-slo-{name}", "rules": [rule]}]}
    return head + yaml.safe_dump(group, sort_keys=False, allow_unicode=True, width=1000)
