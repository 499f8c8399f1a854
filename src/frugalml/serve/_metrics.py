"""Prometheus exposition: request metrics, process resources and the monitor's state.

Everything lives in the server's own :class:`CollectorRegistry`. Request counters
are updated on the request path; the process and monitor families are computed only
when ``/metrics`` is scraped. Names carry their unit, in Prometheus's base units (bytes, seconds; ``promtool check
metrics`` is clean).

Series stay bounded whatever the model's width: per-feature families (``{feature=...}``) cover
at most ``max_feature_series`` features (:func:`shown_features`: drifted first, then those
with values outside their training range, then the ones already shown), and aggregates over
all features (``frugalml_feature_psi_max``, ``frugalml_features_drifted``, ...) say what the
rest do. A 784-pixel image model scrapes in about 165 series instead of 4,239.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import psutil
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from frugalml.monitors import private_bytes
from frugalml.serve._drift import FeatureDrift, WindowDrift
from frugalml.serve._model import ServedModel
from frugalml.serve._monitor import ServingMonitor
from frugalml.serve._settings import MAX_FEATURE_SERIES
from frugalml.serve._slo import LATENCY_BUDGET, ServedSlo, predict_buckets
from frugalml.serve._validate import ERROR_KINDS

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
PREDICT_ENDPOINTS = ("/predict", "/invocations", "/v2/models/{name}/infer")  # the protocols that predict
ENDPOINTS = (*PREDICT_ENDPOINTS, "/feedback", "/health", "/metrics", "/openapi.json", "/admin/reload",
             "/admin/monitoring-config",
             "/v2", "/v2/health/ready", "/v2/health/live", "/v2/models/{name}", "/v2/models/{name}/ready", "/ping",
             "/version")
_KNOWN_ENDPOINTS = frozenset((*ENDPOINTS, "/challenger", "other"))  # /challenger: series with its first request
OUT_OF_RANGE_NOTABLE = 0.05  # this share of a window's values outside the training range puts a feature forward


class ServerMetrics:
    """The request-path metrics, with label children bound once."""

    def __init__(self) -> None:
        disable_created_metrics()  # no *_created series: half the scrape, nothing a dashboard uses
        self.registry = CollectorRegistry()
        self.requests = Counter("frugalml_requests", "HTTP requests by endpoint and status code",
                                ["endpoint", "code"], registry=self.registry)
        self.latency = Histogram("frugalml_request_duration_seconds", "HTTP request latency by endpoint",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.errors = Counter("frugalml_errors", "Refused or failed requests by kind", ["kind"], registry=self.registry)
        self.in_flight = Gauge("frugalml_requests_in_flight", "Requests being handled", registry=self.registry)
        self.rows = Counter("frugalml_predicted_rows", "Rows predicted", registry=self.registry)
        self.model_calls = Counter("frugalml_model_calls", "Calls to the model's predict (fewer than predict "
                                   "requests with --max-batch-size)", registry=self.registry)
        reloads = Counter("frugalml_model_reloads", "Model swaps (alias moves, /admin/reload) by result",
                          ["result"], registry=self.registry)
        self.reloads = {result: reloads.labels(result) for result in ("ok", "error")}
        # an endpoint's latency series appear with its first request (15 series each: most servers
        # see a handful of the 17 endpoints); the request counters below exist from the start
        self._latency_children: dict[str, Any] = {}
        # series exist from the start at 0, so increase() and rate() count the first requests too
        self._request_children: dict[tuple[str, int], Any] = {
            (e, 200): self.requests.labels(e, "200") for e in (*ENDPOINTS, "other")}
        for kind in ERROR_KINDS:
            self.errors.labels(kind)
        self._slo_predict: tuple[ServedSlo | None, Any, int] = (None, None, 0)  # the SLO, its histogram, batch size

    def follow_slo(self, slo: ServedSlo | None) -> None:
        """Time the model's predict calls for ``slo`` (its latency limit is a bucket edge), or stop."""
        old, histogram, _ = self._slo_predict
        if slo == old:
            return
        if histogram is not None:
            self.registry.unregister(histogram)
        if slo is None or LATENCY_BUDGET not in slo.slo.limits:
            self._slo_predict = (slo, None, 0)
            return
        histogram = Histogram("frugalml_slo_predict_seconds", "The model's predict time, requests of at most the "
                              "SLO's batch_size rows (what max_predict_ms limits)", buckets=predict_buckets(slo),
                              registry=self.registry)
        self._slo_predict = (slo, histogram, slo.batch_size)

    def observe_predict(self, seconds: float, rows: int) -> None:
        _, histogram, batch_size = self._slo_predict
        if histogram is not None and rows <= batch_size:
            histogram.observe(seconds)

    def endpoint(self, path: str) -> str:
        """The endpoint label of ``path`` (a model name in a v2 path becomes ``{name}``, and a version is
        dropped: bounded labels)."""
        if path.startswith("/v2/models/"):
            parts = path[len("/v2/models/"):].split("/")
            rest = parts[3:] if len(parts) >= 3 and parts[1] == "versions" else parts[1:]
            path = "/".join(["/v2/models/{name}", *rest])
        return path if path in _KNOWN_ENDPOINTS else "other"

    def observe(self, endpoint: str, code: int, seconds: float) -> None:
        child = self._request_children.get((endpoint, code))
        if child is None:
            child = self._request_children.setdefault((endpoint, code), self.requests.labels(endpoint, str(code)))
        child.inc()
        latency = self._latency_children.get(endpoint)
        if latency is None:
            latency = self._latency_children.setdefault(endpoint, self.latency.labels(endpoint))
        latency.observe(seconds)


class ProcessCollector(Collector):
    """CPU and memory of the server process, sampled at scrape time; with ``others`` (the worker pids of
    ``frugalml serve --workers``), summed over this process and those."""

    def __init__(self, others: Callable[[], Iterable[int]] = tuple) -> None:
        self._others = others
        self._processes: dict[int, psutil.Process] = {}
        self._sample(os.getpid())

    def _sample(self, pid: int) -> psutil.Process:
        process = self._processes.get(pid)
        if process is None:
            process = self._processes[pid] = psutil.Process(pid)
            process.cpu_percent(None)
        return process

    def collect(self) -> Iterator[Metric]:
        cpu = private = rss = 0.0
        pids = {os.getpid(), *self._others()}
        for pid in list(self._processes):
            if pid not in pids:
                del self._processes[pid]
        for pid in sorted(pids):
            try:
                process = self._sample(pid)
                memory = process.memory_info()
                cpu += process.cpu_percent(None)
            except psutil.Error:
                if pid == os.getpid():
                    return
                continue
            private += private_bytes(memory)
            rss += memory.rss
        yield GaugeMetricFamily("frugalml_process_cpu_percent", "CPU since the previous scrape (100 = one core)", cpu)
        yield GaugeMetricFamily("frugalml_process_memory_bytes", "RSS minus shared memory of the server process",
                                float(private))
        yield GaugeMetricFamily("frugalml_process_rss_bytes", "Resident set size of the server process", rss)


MAX_LABEL_CHARS = 128


def label(value: object) -> str:
    """A label value that cannot break the exposition: valid UTF-8, no control characters,
    at most ``MAX_LABEL_CHARS``. Every label built from user input (feature names, slice
    values, alert and custom metric names, model names) goes through here."""
    text = str(value)[:MAX_LABEL_CHARS]
    if text.isprintable():
        try:
            text.encode("utf-8")
            return text
        except UnicodeEncodeError:
            pass
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")  # a lone surrogate becomes \\ud800
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)[:MAX_LABEL_CHARS]


def _gauge(name: str, doc: str, labels: list[str], samples: list[tuple[list[str], float]]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for values, value in samples:
        family.add_metric([label(v) for v in values], value)
    return family


def _counter(name: str, doc: str, labels: list[str], samples: list[tuple[list[str], float]]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for values, value in samples:
        family.add_metric([label(v) for v in values], value)
    return family


def shown_features(features: Sequence[FeatureDrift], out_of_range: Sequence[float], limit: int,
                   previous: set[str] | frozenset[str] = frozenset()) -> tuple[int, ...]:
    """Indices (in feature order) of the at most ``limit`` features that get their own series.

    Every feature when there are no more than ``limit``. Otherwise the first ``limit`` ranked by,
    in turn: drifted; at least ``OUT_OF_RANGE_NOTABLE`` of the window's values outside the training
    range; shown for the window before (``previous``: a calm window keeps the same features, so
    their series do not churn); PSI (NaN last); out-of-range share; feature order.
    """
    if len(features) <= limit:
        return tuple(range(len(features)))

    def rank(i: int) -> tuple[bool, bool, bool, float, float]:
        feature = features[i]
        psi = -math.inf if math.isnan(feature.psi) else feature.psi
        return (feature.drifted, out_of_range[i] >= OUT_OF_RANGE_NOTABLE, feature.name in previous, psi,
                out_of_range[i])

    return tuple(sorted(sorted(range(len(features)), key=rank, reverse=True)[:max(0, limit)]))


def _feature_families(features: Sequence[FeatureDrift]) -> Iterator[Metric]:
    shown = " (at most max_feature_series features, drifted first)"
    yield _gauge("frugalml_feature_psi", "PSI of the latest window vs the training bins" + shown, ["feature"],
                 [([f.name], f.psi) for f in features])
    yield _gauge("frugalml_feature_ks_statistic", "KS statistic vs the training sample" + shown, ["feature"],
                 [([f.name], f.ks) for f in features])
    yield _gauge("frugalml_feature_ks_pvalue", "KS p-value vs the training sample" + shown, ["feature"],
                 [([f.name], f.ks_pvalue) for f in features])
    yield _gauge("frugalml_feature_drifted", "1 when the feature drifted in the latest window" + shown, ["feature"],
                 [([f.name], float(f.drifted)) for f in features])


def _feature_aggregates(drift: WindowDrift, values: Mapping[str, float]) -> Iterator[Metric]:
    """Over every input feature, shown or not."""
    features = drift.features
    psis = [f.psi for f in features]
    yield GaugeMetricFamily("frugalml_input_features", "Input features of the model (those with per-feature "
                            "series: count(frugalml_feature_psi))", float(len(features)))
    yield GaugeMetricFamily("frugalml_features_drifted", "Features that drifted in the latest window",
                            float(drift.drifted))
    yield GaugeMetricFamily("frugalml_feature_psi_max", "Largest PSI over all features in the latest window",
                            max(psis, default=0.0))
    yield GaugeMetricFamily("frugalml_feature_psi_mean", "Mean PSI over all features in the latest window",
                            sum(psis) / len(psis) if psis else 0.0)
    yield GaugeMetricFamily("frugalml_feature_ks_statistic_max", "Largest KS statistic over all features",
                            max((f.ks for f in features), default=0.0))
    yield GaugeMetricFamily("frugalml_features_out_of_range",
                            "Features with a value outside their training range in the latest window",
                            values.get("data.out_of_range_features", 0.0))


class MonitorCollector(Collector):
    """The monitor's state as Prometheus families (read at scrape time)."""

    def __init__(self, served: Callable[[], ServedModel], monitor: Callable[[], ServingMonitor | None],
                 max_feature_series: int = MAX_FEATURE_SERIES,
                 slo: Callable[[], ServedSlo | None] = lambda: None) -> None:
        self._served = served
        self._monitor = monitor
        self._slo = slo
        self.max_feature_series = max_feature_series
        self._shown: tuple[WindowDrift | None, tuple[int, ...]] = (None, ())

    def _shown_features(self, drift: WindowDrift, values: Mapping[str, float]) -> tuple[int, ...]:
        """The features with their own series for ``drift``'s window, chosen once per window."""
        window, shown = self._shown
        if window is drift:
            return shown
        previous = {window.features[i].name for i in shown} if window is not None else set()
        out_of_range = [values.get(f"data.out_of_range.{f.name}", 0.0) for f in drift.features]
        shown = shown_features(drift.features, out_of_range, self.max_feature_series, previous)
        self._shown = (drift, shown)
        return shown

    def collect(self) -> Iterator[Metric]:
        served = self._served()
        yield _gauge("frugalml_model_info", "The served model", ["name", "version", "uri", "training_sha256"],
                     [([served.name, served.version, served.uri, served.reference.training_sha256], 1.0)])
        monitor = self._monitor()
        yield GaugeMetricFamily("frugalml_monitoring_enabled", "1 when inputs and predictions are monitored",
                                float(monitor is not None))
        state = monitor.state() if monitor is not None else None
        yield from slo_families(self._slo(), state.slo_predict_ms if state is not None else None)
        if state is None:
            return
        names: list[str] = []
        if state.drift is not None:
            drift = state.drift
            features = [drift.features[i] for i in self._shown_features(drift, state.values)]
            names = [f.name for f in features]
            yield from _feature_families(features)
            yield from _feature_aggregates(drift, state.values)
            yield GaugeMetricFamily("frugalml_prediction_psi", "PSI of the predictions vs training",
                                    drift.prediction_psi)
            if drift.prediction_ks is not None:
                yield GaugeMetricFamily("frugalml_prediction_ks_statistic", "KS statistic of the predictions",
                                        drift.prediction_ks)
        if "data.out_of_range" in state.values:
            values = state.values
            yield GaugeMetricFamily("frugalml_data_out_of_range_rows_ratio",
                                    "Share of the latest window's rows with a value outside the training range",
                                    values["data.out_of_range"])
            yield _gauge("frugalml_data_out_of_range_ratio", "Share of a feature's values outside its training range "
                         "(the features of frugalml_feature_psi)",
                         ["feature"], [([name], values.get(f"data.out_of_range.{name}", 0.0)) for name in names])
            yield GaugeMetricFamily("frugalml_data_constant_features",
                                    "Features constant in the latest window that vary in training",
                                    values["data.constant_features"])
        yield CounterMetricFamily("frugalml_drift_windows", "Drift windows closed", state.windows)
        yield CounterMetricFamily("frugalml_drift_flagged_windows", "Windows with at least one drifted feature",
                                  state.flagged_windows)
        if state.prediction_buckets is None:
            yield _counter("frugalml_predicted_class", "Predictions by class", ["class"],
                           [([c], float(n)) for c, n in state.class_counts.items()])
        else:
            edges, counts, total = state.prediction_buckets
            cumulative, buckets = 0, []
            for edge, count in zip((*edges, float("inf")), counts):
                cumulative += count
                buckets.append(("+Inf" if edge == float("inf") else repr(float(edge)), cumulative))
            family = HistogramMetricFamily("frugalml_prediction_value", "Predicted values (training quantile bins)")
            family.add_metric([], buckets, total)
            yield family
        yield _counter("frugalml_nonfinite_values", "NaN/inf values seen in inputs and outputs", ["where", "kind"],
                       [([w, k], float(n)) for (w, k), n in state.nonfinite_totals.items()])
        values = state.values
        yield GaugeMetricFamily("frugalml_model_nonfinite_weights", "NaN/inf values among the model's weights",
                                values.get("nonfinite.weights", 0.0))
        quality = [(name.split(".", 2)[1:], v) for name, v in values.items() if name.startswith("quality.")]
        yield _gauge("frugalml_quality", "Accuracy or RMSE over the latest labels (slice 'all' or key=value)",
                     ["metric", "slice"], [([parts[0], parts[1] if len(parts) > 1 else "all"], v)
                                           for parts, v in quality])
        yield CounterMetricFamily("frugalml_feedback", "Labels received", state.feedback)
        yield _gauge("frugalml_custom_metric", "User-defined metrics of the latest window", ["name"],
                     [([name[len("custom."):]], v) for name, v in values.items() if name.startswith("custom.")])
        yield _gauge("frugalml_alert_firing", "1 while an alert rule fires", ["rule"],
                     [([rule], float(firing)) for rule, firing in state.alerts_firing.items()])
        yield _counter("frugalml_alerts_fired", "Times an alert rule started firing", ["rule"],
                       [([rule], float(n)) for rule, n in state.alerts_fired.items()])
        yield CounterMetricFamily("frugalml_webhook_failures", "Alert webhooks that could not be delivered",
                                  state.webhook_failures)


def slo_families(slo: ServedSlo | None, live_ms: float | None) -> Iterator[Metric]:
    """``frugalml_slo_limit`` per SLO budget, and ``frugalml_slo_live`` where the server measures it
    (left out, not 0, until the SLO window holds enough requests). The latency quantile is label
    ``slo_quantile``: ``promtool check metrics`` keeps ``quantile`` for summaries."""
    if slo is None:
        return
    quantile = f"{slo.slo.quantile:g}"
    limit = GaugeMetricFamily("frugalml_slo_limit", "The served version's SLO: each serving budget it was tuned "
                              "under, in the budget's unit (max_predict_ms: milliseconds at the quantile)",
                              labels=["budget", "slo_quantile"])
    for key, value in sorted(slo.slo.limits.items()):
        limit.add_metric([key, quantile if key == LATENCY_BUDGET else ""], float(value))
    yield limit
    live = GaugeMetricFamily("frugalml_slo_live", "Live traffic's value of an SLO budget (max_predict_ms: the "
                             "quantile of the model's predict time over the SLO window, milliseconds)",
                             labels=["budget", "slo_quantile"])
    if live_ms is not None:
        live.add_metric([LATENCY_BUDGET, quantile], live_ms)
    yield live
