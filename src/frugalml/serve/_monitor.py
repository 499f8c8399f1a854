"""The monitor of one served model: drift windows, numerical health, quality, alerts.

The request path only calls :meth:`ServingMonitor.observe` (a lock and an append) and
:meth:`ServingMonitor.observe_request`; everything else (closing windows, PSI/KS, custom
metrics, process sampling, alert rules) runs in :meth:`ServingMonitor.process`, which the
host calls whenever :meth:`ServingMonitor.due` says so (every ``interval_s``, or sooner when a
window fills); the server does it from its event loop, so no second thread contends
for the GIL with requests. Nothing here knows about HTTP, so the monitor is tested by
calling it directly.

Metric names (:meth:`ServingMonitor.values`, usable in alert rules):

==================================  ===================================================
``drift.psi.<feature>``             PSI of the latest window vs the training bins
``drift.ks.<feature>``              KS statistic vs the training sample
``drift.ks_pvalue.<feature>``       its p-value
``drift.psi_max`` / ``drift.ks_max`` largest over features
``drift.psi_mean``                  mean PSI over features
``drift.features`` / ``drift.share`` drifted features (count / share) in the window
``drift.detected``                  1 when any feature drifted in the window, else 0
``drift.prediction_psi``            PSI of the predictions (class shares or bins)
``drift.prediction_ks``             KS of the predictions (regression)
``data.out_of_range``               share of the window's rows with a value outside the
                                    training range of its feature
``data.out_of_range.<feature>``     share of the window's values outside that range
``data.out_of_range_features``      features with a value outside their training range
``data.constant_features``          features constant in the window that vary in training
``nonfinite.inputs``                NaN/inf input values in the latest window
``nonfinite.outputs``               NaN/inf predictions in the latest window
``nonfinite.weights``               NaN/inf values among the model's weights
``quality.accuracy`` / ``.rmse``    over the latest labels; ``.<key>=<value>`` per slice
``quality.<metric>_gap.<key>``      best minus worst slice value of a slice key
``quality.estimated_accuracy``      a classifier's expected accuracy in the latest window,
                                    from its calibrated confidence, before any label (CBPE)
``quality.mean_confidence``         its raw mean confidence in that window
``custom.<name>``                   a user metric, computed per window
``latency.p50_ms`` / ``p99_ms``     predict latency since the previous tick
``errors.rate``                     share of failed requests since the previous tick
``process.cpu_percent``             CPU of the server process (100 = one core)
``process.memory_mb``               RSS - shared of the server process (MB = 2**20 B)
``slo.predict_ms``                  a model with an SLO: its latency quantile over the
                                    model's predict times of the last ``slo_window_s``
                                    (absent until enough requests; :mod:`frugalml.serve._slo`)
==================================  ===================================================
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from typing import Any, Iterable, Mapping, NamedTuple

import numpy as np
import psutil

from frugalml.monitors import private_bytes
from frugalml.serve._alerts import AlertEvaluator, LogNotifier, Notifier, WebhookNotifier
from frugalml.serve._config import as_monitoring_config
from frugalml.serve._drift import WindowDrift, window_drift
from frugalml.serve._estimate import Calibration
from frugalml.serve._quality import PredictionLog, QualityTracker
from frugalml.serve._reference import Reference
from frugalml.serve._slo import LATENCY_METRIC, ServedSlo, latency_window, slo_rule
from frugalml.units import to_mb

logger = logging.getLogger("frugalml.serve")
_HISTORY = 64  # values kept per metric for alert windows


def _yield_gil() -> None:
    time.sleep(0)  # releases the GIL: requests waiting on it run between features


class MonitorState(NamedTuple):
    """What the exposition needs, read under the monitor's lock."""

    values: dict[str, float]
    drift: WindowDrift | None
    windows: int
    flagged_windows: int
    class_counts: dict[str, int]
    prediction_buckets: tuple[tuple[float, ...], tuple[int, ...], float] | None  # edges, counts, sum
    nonfinite_totals: dict[tuple[str, str], int]
    feedback: int
    alerts_firing: dict[str, bool]
    alerts_fired: dict[str, int]
    webhook_failures: int
    slo_predict_ms: float | None = None  # the live SLO latency quantile (None: too few requests)
    slo_requests: int = 0  # requests in the SLO window


def data_quality(reference: Reference, X: np.ndarray) -> dict[str, float]:
    """Out-of-range and constant inputs of one window of finite rows, against the training data."""
    low = np.array([f.min for f in reference.features])
    high = np.array([f.max for f in reference.features])
    outside = (X < low) | (X > high)
    varied = np.array([f.std > 0 for f in reference.features])
    constant = (X.max(axis=0) == X.min(axis=0)) & varied if len(X) > 1 else np.zeros(len(low), dtype=bool)
    values = {"data.out_of_range": float(outside.any(axis=1).mean()), "data.constant_features": float(constant.sum()),
              "data.out_of_range_features": float(outside.any(axis=0).sum())}
    for feature, share in zip(reference.features, outside.mean(axis=0).tolist()):
        values[f"data.out_of_range.{feature.name}"] = share
    return values


def weights_nonfinite(model: Any) -> int:
    """NaN/inf values among ``coef_``/``intercept_`` of a model or a pipeline's steps."""
    steps = [s for _, s in getattr(model, "steps", [])] or [model]
    count = 0
    for step in steps:
        for name in ("coef_", "intercept_"):
            value = getattr(step, name, None)
            if value is not None:
                count += int(np.size(value) - np.isfinite(np.asarray(value, dtype=np.float64)).sum())
    return count


class ServingMonitor:
    """Watches one model's inputs, outputs and labels against its training reference.

    Args:
        reference: the training-data fingerprint stored with the model.
        config: a :class:`MonitoringConfig` (or anything :func:`as_monitoring_config` takes).
        model: the model, to check its weights for NaN/inf.
        notifiers: where alert events go, besides the log and the config's webhooks.

    Example:
        >>> monitor = ServingMonitor(reference, {"window_rows": 200})     # doctest: +SKIP
        >>> monitor.observe(X, model.predict(X))                   # doctest: +SKIP
        >>> monitor.process(); monitor.values()["drift.psi_max"]   # doctest: +SKIP
    """

    def __init__(self, reference: Reference, config: Any = None, *, model: Any = None,
                 notifiers: Iterable[Notifier] = (), name: str = "", slo: ServedSlo | None = None) -> None:
        self.reference = reference
        self.name = name
        self.slo = slo
        self._extra_notifiers = list(notifiers)
        self._lock = threading.Lock()  # guards what the request path touches
        self._processing = threading.RLock()  # one process()/configure() at a time
        self._os_process = psutil.Process()
        self._os_process.cpu_percent(None)
        self._init_counters()
        self.configure(config, model=model)

    # -- configuration ------------------------------------------------------------------

    def configure(self, config: Any, *, model: Any = None) -> None:
        """Apply a new config (and model): the open window, metric history, quality and alert
        state start afresh; cumulative counters (windows, predictions, NaN/inf) and issued
        prediction ids carry on (the server makes a new monitor, with new ids, when a model
        is reloaded or monitoring is switched off and on)."""
        config = as_monitoring_config(config)
        custom = config.custom_functions()
        old = getattr(self, "_notifiers", [])
        with self._processing, self._lock:
            self.config = config
            self._custom = custom
            if self.log is None:
                self.log = PredictionLog(config.feedback_capacity)
            else:
                self.log.resize(config.feedback_capacity)  # ids issued so far stay valid
            self.quality = QualityTracker(self.reference.task, self.reference.classes, config.quality_window,
                                          config.max_slices)
            rule = slo_rule(self.slo, config)
            self.alerts = AlertEvaluator((*config.alerts, *([rule] if rule else [])), self.name)
            self._slo_window = latency_window(self.slo, config)
            self._slo_live: tuple[float | None, int] = (None, 0)
            self._webhooks = WebhookNotifier(config.webhooks, config.webhook_timeout_s) if config.webhooks else None
            self._notifiers = [LogNotifier(), *self._extra_notifiers, *([self._webhooks] if self._webhooks else [])]
            self._window_X: list[np.ndarray] = []
            self._window_pred: list[np.ndarray] = []
            self._window_conf: list[np.ndarray] = []
            self._window_rows = 0
            self._window_started = time.monotonic()
            self._window_nonfinite_inputs = 0
            self._history: dict[str, deque[float]] = {}
            self.drift: WindowDrift | None = None
            if model is not None:
                self._weights_nonfinite = weights_nonfinite(model)
        for notifier in old:
            if isinstance(notifier, WebhookNotifier):
                notifier.close()

    def _init_counters(self) -> None:
        """State that lives as long as the monitor: queued rows, ids and cumulative counters."""
        self.log: PredictionLog | None = None
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._calibration = Calibration.from_dict(self.reference.calibration) if self.reference.calibration else None
        self._pending_rows = 0
        self._processed_at = time.monotonic()
        self._latencies: list[float] = []
        self._requests = 0
        self._errors = 0
        self._weights_nonfinite = 0
        self.windows = 0
        self.flagged_windows = 0
        self.class_counts = {c: 0 for c in self.reference.classes}
        prediction = self.reference.prediction
        self._edges = np.asarray(prediction.edges if prediction else ())
        self._bucket_counts = np.zeros(len(self._edges) + 1, dtype=np.int64)
        self._prediction_sum = 0.0
        self.nonfinite_totals = {(w, k): 0 for w in ("input", "output") for k in ("nan", "inf")}

    # -- the request path ---------------------------------------------------------------

    def observe(self, X: np.ndarray, predictions: np.ndarray, confidence: np.ndarray | None = None) -> list[str]:
        """Queue a batch of finite input rows and their predictions (and, for a classifier with
        probabilities, each prediction's confidence); returns prediction ids."""
        ids = self.log.record(predictions)
        self.enqueue(X, predictions, confidence)
        return ids

    def enqueue(self, X: np.ndarray, predictions: np.ndarray, confidence: np.ndarray | None = None) -> None:
        """Queue rows whose ids were issued elsewhere (by a worker of ``frugalml serve --workers``)."""
        if confidence is None:
            confidence = np.full(len(X), np.nan)
        with self._lock:
            self._pending.append((X, predictions, confidence))
            self._pending_rows += len(X)

    def observe_nonfinite(self, nan: int, inf: int, where: str = "input") -> None:
        """Count NaN/inf values seen in inputs (rejected or imputed) or outputs."""
        with self._lock:
            self.nonfinite_totals[(where, "nan")] += nan
            self.nonfinite_totals[(where, "inf")] += inf
            if where == "input":
                self._window_nonfinite_inputs += nan + inf

    def observe_request(self, latency_s: float | None, ok: bool) -> None:
        """One finished request (latency of a predict, None for others)."""
        with self._lock:
            self._requests += 1
            self._errors += not ok
            if latency_s is not None and len(self._latencies) < 100_000:
                self._latencies.append(latency_s)

    def observe_predict(self, seconds: float, rows: int) -> None:
        """One call to the model: how long it took, on how many rows (for the SLO)."""
        window = self._slo_window
        if window is not None:
            with self._lock:
                window.add(time.monotonic(), seconds, rows)

    def observe_predicts(self, calls: Iterable[tuple[float, int]]) -> None:
        """Calls to the model timed elsewhere (a worker's since its previous flush), as ``(seconds, rows)``."""
        window = self._slo_window
        if window is not None:
            now = time.monotonic()
            with self._lock:
                for seconds, rows in calls:
                    window.add(now, seconds, rows)

    def observe_requests(self, requests: int, errors: int, latencies_s: Iterable[float]) -> None:
        """Finished requests counted elsewhere (a worker's since its previous flush)."""
        with self._lock:
            self._requests += requests
            self._errors += errors
            self._latencies.extend(list(latencies_s)[:max(0, 100_000 - len(self._latencies))])

    def feedback(self, prediction_id: Any, label: Any, slice_: Mapping[str, Any] | None = None) -> None:
        """A true label for an earlier prediction (:class:`FeedbackError` when unusable;
        :class:`DuplicateFeedback` for a second label of one prediction)."""
        self.log.check_unlabelled(prediction_id)
        self.quality.add(self.log.get(prediction_id), label, slice_)
        self.log.mark_labelled(prediction_id)

    # -- processing ---------------------------------------------------------------------

    def due(self, now: float) -> bool:
        """True when :meth:`process` has work: a full window, or ``interval_s`` since the last run."""
        with self._lock:
            full = self._window_rows + self._pending_rows >= self.config.window_rows
        return full or now - self._processed_at >= self.config.interval_s

    def process(self, now: float | None = None) -> None:
        """Close full windows, update metrics and evaluate the alert rules."""
        with self._processing:
            now = time.monotonic() if now is None else now
            self._processed_at = now
            self._process(now)

    def _process(self, now: float) -> None:
        with self._lock:
            pending, self._pending, self._pending_rows = self._pending, [], 0
        if pending:  # one concatenation, however many requests were queued
            X = np.concatenate([x for x, _, _ in pending])
            predictions = np.concatenate([p for _, p, _ in pending])
            confidence = np.concatenate([c for _, _, c in pending])
            self._account_predictions(predictions)
            self._add_to_window(X, predictions, confidence, now)
        config = self.config
        if config.window_s is not None and self._window_rows >= config.min_window_rows \
                and now - self._window_started >= config.window_s:
            self._close_window(now)
        self._tick(now)
        events = self.alerts.evaluate(self._history, now)
        for event in events:
            for notifier in self._notifiers:
                try:
                    notifier.notify(event)
                except Exception:  # a user notifier must not stop monitoring
                    logger.exception("notifier %r failed", notifier)

    def _account_predictions(self, predictions: np.ndarray) -> None:
        if self.reference.task == "classification":
            labels, counts = np.unique(predictions.astype(str), return_counts=True)
            with self._lock:
                for label, count in zip(labels.tolist(), counts.tolist()):
                    self.class_counts[label] = self.class_counts.get(label, 0) + count
            return
        values = np.asarray(predictions, dtype=np.float64)
        finite = np.isfinite(values)
        nan = int(np.isnan(values).sum())
        self.observe_nonfinite(nan, int(len(values) - finite.sum() - nan), "output")
        counts = np.bincount(np.searchsorted(self._edges, values[finite], side="left"), minlength=len(self._edges) + 1)
        with self._lock:
            self._bucket_counts += counts
            self._prediction_sum += float(values[finite].sum())

    def _add_to_window(self, X: np.ndarray, predictions: np.ndarray, confidence: np.ndarray, now: float) -> None:
        size = self.config.window_rows
        start = 0
        while start < len(X):
            take = min(len(X) - start, size - self._window_rows)
            self._window_X.append(X[start:start + take])
            self._window_pred.append(predictions[start:start + take])
            self._window_conf.append(confidence[start:start + take])
            self._window_rows += take
            start += take
            if self._window_rows >= size:
                self._close_window(now)

    def _close_window(self, now: float) -> None:
        X = np.concatenate(self._window_X)
        predictions = np.concatenate(self._window_pred)
        confidence = np.concatenate(self._window_conf)
        self._window_X, self._window_pred, self._window_conf, self._window_rows = [], [], [], 0
        self._window_started = now
        config = self.config
        drift = window_drift(self.reference, X, predictions, psi_threshold=config.psi_threshold,
                             ks_alpha=config.ks_alpha, between_features=_yield_gil)
        values = {
            **data_quality(self.reference, X),
            "drift.psi_max": max((f.psi for f in drift.features), default=0.0),
            "drift.ks_max": max((f.ks for f in drift.features), default=0.0),
            "drift.psi_mean": float(np.mean([f.psi for f in drift.features])) if drift.features else 0.0,
            "drift.features": float(drift.drifted),
            "drift.detected": float(drift.drifted > 0),
            "drift.share": drift.drifted / max(1, len(drift.features)),
            "drift.prediction_psi": drift.prediction_psi,
            "nonfinite.inputs": float(self._window_nonfinite_inputs),
            "nonfinite.outputs": float(self._nonfinite_outputs(predictions)),
        }
        if self._calibration is not None and np.isfinite(confidence).all():  # quality before any label
            values["quality.estimated_accuracy"] = self._calibration.expected_accuracy(confidence)
            values["quality.mean_confidence"] = float(confidence.mean())
        if drift.prediction_ks is not None:
            values["drift.prediction_ks"] = drift.prediction_ks
        for feature in drift.features:
            values[f"drift.psi.{feature.name}"] = feature.psi
            values[f"drift.ks.{feature.name}"] = feature.ks
            values[f"drift.ks_pvalue.{feature.name}"] = feature.ks_pvalue
        for name, function in self._custom.items():
            try:
                values[f"custom.{name}"] = float(function(X, predictions))
            except Exception as error:  # a failing user metric is logged, not fatal
                logger.warning("custom metric %r failed: %s", name, error)
                values[f"custom.{name}"] = math.nan
        with self._lock:
            self._window_nonfinite_inputs = 0
            self.drift = drift
            self.windows += 1
            self.flagged_windows += drift.drifted > 0
            self._record(values)

    def _nonfinite_outputs(self, predictions: np.ndarray) -> int:
        if self.reference.task == "classification":
            return 0
        return int(len(predictions) - np.isfinite(np.asarray(predictions, dtype=np.float64)).sum())

    def _tick(self, now: float) -> None:
        with self._lock:
            latencies, self._latencies = self._latencies, []
            requests, errors, self._requests, self._errors = self._requests, self._errors, 0, 0
            if self._slo_window is not None:
                self._slo_live = live = self._slo_window.value_ms(now)
                if live[0] is None:  # too few requests to judge: no value, and a firing SLO alert resolves
                    self._history.pop(LATENCY_METRIC, None)
        values = {"nonfinite.weights": float(self._weights_nonfinite)}
        if latencies:
            p50, p99 = np.percentile(latencies, [50, 99])
            values.update({"latency.p50_ms": p50 * 1e3, "latency.p99_ms": p99 * 1e3})
        if requests:
            values["errors.rate"] = errors / requests
        try:
            memory = self._os_process.memory_info()
            values["process.memory_mb"] = to_mb(private_bytes(memory))
            values["process.cpu_percent"] = self._os_process.cpu_percent(None)
        except psutil.Error:
            pass
        values.update(self.quality.values())
        with self._lock:
            if self._slo_window is not None and self._slo_live[0] is not None:
                values[LATENCY_METRIC] = self._slo_live[0]
            self._record(values)

    def _record(self, values: Mapping[str, float]) -> None:
        for name, value in values.items():
            self._history.setdefault(name, deque(maxlen=_HISTORY)).append(float(value))

    # -- reading ------------------------------------------------------------------------

    def values(self) -> dict[str, float]:
        """The latest value of every metric (see the module docstring for names); quality as of
        the last label received, not the last processing."""
        with self._lock:
            latest = {name: values[-1] for name, values in self._history.items() if values}
        return latest | self.quality.values()

    def state(self) -> MonitorState:
        values = self.values()
        with self._lock:
            buckets = None
            if self.reference.prediction is not None:
                buckets = (tuple(self._edges.tolist()), tuple(self._bucket_counts.tolist()), self._prediction_sum)
            return MonitorState(
                values=values,
                drift=self.drift, windows=self.windows, flagged_windows=self.flagged_windows,
                class_counts=dict(self.class_counts), prediction_buckets=buckets,
                nonfinite_totals=dict(self.nonfinite_totals), feedback=self.quality.total,
                alerts_firing=self.alerts.firing, alerts_fired=dict(self.alerts.fired_total),
                webhook_failures=self._webhooks.failures if self._webhooks else 0,
                slo_predict_ms=self._slo_live[0], slo_requests=self._slo_live[1],
            )

    def stop(self) -> None:
        """Close the alert notifiers (their webhook threads); the monitor is not used again."""
        for notifier in self._notifiers:
            notifier.close()
