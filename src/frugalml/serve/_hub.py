"""The one monitoring state of ``frugalml serve --workers N`` (the monitor process's side) and of
``--backend ray`` (inside the hub actor, :mod:`frugalml.serve._ray`).

Every worker ships what it saw (:mod:`frugalml.serve._messages`) to one :class:`Hub`, which
owns the only :class:`ServingMonitor` (drift windows, quality, label-free estimates, alerts),
the registry of every prediction id any worker issued (:class:`WorkerLogs`), and the latest
request counters of each worker. So feedback for an id from any worker is accepted once,
on any worker; an alert fires once; ``/metrics`` on any worker is the sum over all of them.

Messages become state here, in :meth:`Hub.handle`, and nowhere else; the one command from the
supervisor, "the served alias moved", is :meth:`Hub.follow`. :func:`serve_hub` runs the hub on a
listener (a local socket; TCP for Ray replicas): a thread per connection (there is no request path in this
process for them to slow down) and one that processes the monitor when it is due.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from multiprocessing.connection import Connection, Listener
from typing import Any, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from frugalml.serve._config import MonitoringConfig
from frugalml.serve._feedback import accept_feedback
from frugalml.serve._messages import (
    Accepted,
    Exposition,
    FeedbackRequest,
    Flush,
    Hello,
    Refused,
    ScrapeRequest,
    SloLive,
    SloRequest,
)
from frugalml.serve._metrics import MonitorCollector, ProcessCollector
from frugalml.serve._model import ServedModel
from frugalml.serve._monitor import ServingMonitor
from frugalml.serve._quality import FeedbackError, PredictionLog
from frugalml.serve._slo import ServedSlo
from frugalml.serve._validate import RequestError

logger = logging.getLogger("frugalml.serve")
FEEDBACK_WAIT_S = 2.0  # feedback for a row its worker has not shipped yet waits this long for it
_PROCESS_POLL_S = 0.02


class WorkerLogs:
    """Every worker's prediction ids: one :class:`PredictionLog` per worker prefix, each filled with
    the rows that worker ships, numbered as it numbered them. Quacks like one ``PredictionLog``
    for :class:`ServingMonitor` and :func:`accept_feedback`."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._logs: dict[str, PredictionLog] = {}

    def add_worker(self, prefix: str) -> None:
        self._logs.setdefault(prefix, PredictionLog(self.capacity, prefix=prefix))

    def record_shipped(self, prefix: str, first: int, predictions: Any) -> None:
        self._logs[prefix].record(predictions, first=first)

    def not_yet_shipped(self, prediction_id: Any) -> bool:
        """True for an id of a known worker that has not shipped its row yet."""
        prefix, _, number = str(prediction_id).rpartition("-")
        log = self._logs.get(prefix)
        return log is not None and number.isascii() and number.isdigit() and len(number) <= 18 \
            and int(number) >= log._next

    def _log(self, prediction_id: Any) -> PredictionLog:
        log = self._logs.get(str(prediction_id).rpartition("-")[0])
        if log is None:
            raise FeedbackError(f"unknown prediction_id {prediction_id!r}: not issued by this server (or it restarted).")
        return log

    def resize(self, capacity: int) -> None:
        self.capacity = capacity
        for log in self._logs.values():
            log.resize(capacity)

    def get(self, prediction_id: Any) -> Any:
        return self._log(prediction_id).get(prediction_id)

    def check_unlabelled(self, prediction_id: Any) -> None:
        self._log(prediction_id).check_unlabelled(prediction_id)

    def mark_labelled(self, prediction_id: Any) -> None:
        self._log(prediction_id).mark_labelled(prediction_id)


class WorkerCounters(Collector):
    """The request counters of every worker, summed sample by sample (the latest snapshot of each)."""

    def __init__(self) -> None:
        self._snapshots: dict[tuple[int, str], tuple[int, tuple]] = {}  # (worker, prefix) -> (sequence, families)
        self._lock = threading.Lock()

    def update(self, key: tuple[int, str], sequence: int, families: tuple) -> None:
        with self._lock:
            if sequence > self._snapshots.get(key, (-1, ()))[0]:
                self._snapshots[key] = (sequence, families)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            snapshots = [families for _, families in self._snapshots.values()]
        merged: dict[str, tuple[str, str, dict]] = {}
        for families in snapshots:
            for name, kind, documentation, samples in families:
                sums = merged.setdefault(name, (kind, documentation, {}))[2]
                for sample, labels, value in samples:
                    sums[(sample, labels)] = sums.get((sample, labels), 0.0) + value
        for name, (kind, documentation, sums) in merged.items():
            metric = Metric(name, documentation, kind)
            for (sample, labels), value in sums.items():
                metric.add_sample(sample, dict(labels), value)
            yield metric


class Hub:
    """The monitoring state shared by every worker serving ``served``.

    Example:
        >>> hub = Hub(served, config)                                   # doctest: +SKIP
        >>> hub.handle(Hello(worker=0, pid=123, prefix="9f3a0c1e"))     # doctest: +SKIP
    """

    def __init__(self, served: ServedModel, config: MonitoringConfig, max_feature_series: int = 10) -> None:
        self.served = served
        self.config = config
        self.workers: dict[int, Hello] = {}
        self.logs = WorkerLogs(config.feedback_capacity)
        self.slo = ServedSlo.of(served)
        self.monitor = self._new_monitor(served)
        self.counters = WorkerCounters()
        self.registry = CollectorRegistry()
        self.registry.register(self.counters)
        host = socket.gethostname()  # a Ray replica on another machine: its CPU and memory are not sampled here
        self.registry.register(ProcessCollector(
            lambda: [hello.pid for hello in self.workers.values() if hello.host in ("", host)]))
        self.registry.register(MonitorCollector(lambda: self.served, lambda: self.monitor, max_feature_series,
                                                lambda: self.slo))
        self._arrived = threading.Condition()  # rows came in
        self._feedback = threading.Lock()  # one feedback body at a time: a label counts once

    def _new_monitor(self, served: ServedModel) -> ServingMonitor | None:
        if not (self.config.enabled and served.reference.has_statistics):
            return None
        monitor = ServingMonitor(served.reference, self.config, model=served.model,
                                 name=served.name or served.uri, slo=self.slo)
        monitor.log = self.logs  # every worker's ids, whichever version issued them
        return monitor

    def follow(self, served: ServedModel) -> None:
        """Monitor ``served`` from now on (the served alias moved to it), as the one-process server does:
        a new monitor against its training data, the SLO of its version (or the previous one's when it
        carries none). Request counters, issued ids and feedback already counted stay."""
        with self._feedback:
            old = self.monitor
            self.slo = ServedSlo.of(served, self.slo)
            self.served = served
            self.monitor = self._new_monitor(served)
        if old is not None:
            old.stop()

    def handle(self, message: Any) -> Any:
        """Turn one message into state; returns the answer for a request, None for a one-way message."""
        if isinstance(message, Flush):
            self._ingest(message)
            return None
        if isinstance(message, FeedbackRequest):
            return self._feedback_answer(message.data)
        if isinstance(message, ScrapeRequest):
            self._ingest(message.flush)
            return Exposition(generate_latest(self.registry))
        if isinstance(message, SloRequest):
            state = self.monitor.state() if self.monitor is not None else None
            return SloLive(*((state.slo_predict_ms, state.slo_requests) if state is not None else (None, 0)))
        if isinstance(message, Hello):
            with self._arrived:
                self.workers[message.worker] = message
                self.logs.add_worker(message.prefix)
            return Accepted(0)
        raise TypeError(f"unexpected message {type(message).__name__}")

    def _ingest(self, flush: Flush) -> None:
        if flush.families is not None:
            self.counters.update((flush.worker, flush.prefix), flush.sequence, flush.families)
        monitor = self.monitor
        if monitor is None:
            return
        with self._arrived:
            for rows in flush.rows:
                self.logs.record_shipped(flush.prefix, rows.first, rows.predictions)
                monitor.enqueue(rows.X, rows.predictions, rows.confidence)
            self._arrived.notify_all()
        for where, nan, inf in flush.nonfinite:
            monitor.observe_nonfinite(nan, inf, where)
        if flush.requests:
            monitor.observe_requests(flush.requests, flush.errors, flush.latencies)
        if flush.predicts:
            monitor.observe_predicts(flush.predicts)

    def _feedback_answer(self, data: Any) -> Accepted | Refused:
        monitor = self.monitor
        if monitor is None:
            return Refused(409, "monitoring_disabled", "feedback needs monitoring; it is disabled in the config.")
        items = data if isinstance(data, list) else [data]
        ids = [item["prediction_id"] for item in items if isinstance(item, dict) and "prediction_id" in item]
        deadline = time.monotonic() + FEEDBACK_WAIT_S
        with self._arrived:  # an id issued a moment ago may still be on its way from its worker
            while any(self.logs.not_yet_shipped(i) for i in ids) and time.monotonic() < deadline:
                self._arrived.wait(deadline - time.monotonic())
        with self._feedback:
            try:
                return Accepted(accept_feedback(monitor, data))
            except RequestError as error:
                return Refused(error.status, error.kind, error.message)

    def process_when_due(self) -> None:
        monitor = self.monitor
        if monitor is not None and monitor.due(time.monotonic()):
            try:
                monitor.process()
            except Exception:  # keep monitoring whatever one window does
                logger.exception("monitoring failed to process a window")

    def stop(self) -> None:
        if self.monitor is not None:
            self.monitor.stop()


def _serve_connection(hub: Hub, connection: Connection) -> None:
    with connection:
        while True:
            try:
                message = connection.recv()
            except (EOFError, OSError):
                return
            try:
                answer = hub.handle(message)
            except Exception:  # a malformed message must not take the monitor down
                logger.exception("the monitor process could not handle %s", type(message).__name__)
                answer = Refused(500, "internal", "the monitor process failed on this request; see its log.") \
                    if isinstance(message, (FeedbackRequest, ScrapeRequest)) else None
            if answer is not None:
                try:
                    connection.send(answer)
                except OSError:
                    return


def serve_hub(hub: Hub, listener: Listener, stop: threading.Event) -> list[threading.Thread]:
    """Answer workers on ``listener`` and process the monitor, on daemon threads, until ``stop``."""

    def accept() -> None:
        while not stop.is_set():
            try:
                connection = listener.accept()
            except OSError:  # the listener was closed: shutting down
                return
            except Exception:  # noqa: BLE001 - a client with the wrong key: refuse it, keep listening
                logger.warning("refused a connection to the monitor socket (wrong key)")
                continue
            threading.Thread(target=_serve_connection, args=(hub, connection), daemon=True,
                             name="frugalml-hub-connection").start()

    def process() -> None:
        while not stop.wait(_PROCESS_POLL_S):
            hub.process_when_due()

    threads = [threading.Thread(target=accept, daemon=True, name="frugalml-hub-accept"),
               threading.Thread(target=process, daemon=True, name="frugalml-hub-monitor")]
    for thread in threads:
        thread.start()
    return threads
