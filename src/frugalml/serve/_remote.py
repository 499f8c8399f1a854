"""A worker's link to the monitor process of ``frugalml serve --workers N`` (or a Ray replica's to
the hub actor of ``--backend ray``).

On the request path, :class:`HubLink` issues prediction ids (``<this worker's prefix>-<row>``: a
counter update) and queues rows and request outcomes (a lock and an append), as the
single-process :class:`ServingMonitor` does. The server's event loop calls :meth:`HubLink.process`
when :meth:`HubLink.due` says so (every ``FLUSH_S`` while there is traffic): one pickled
:class:`Flush` over a local socket (TCP to a Ray hub actor). Feedback and scrapes are round trips on a second
connection, made from a thread so the event loop keeps serving (and keeps flushing: the
monitor may be waiting for this very worker's rows to check a label).
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import signal
import socket
import threading
import time
from multiprocessing.connection import Client
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from frugalml.serve._messages import (
    FLUSH_S,
    Accepted,
    Exposition,
    FeedbackRequest,
    Flush,
    Hello,
    Refused,
    Rows,
    ScrapeRequest,
    SloLive,
    SloRequest,
)
from frugalml.serve._validate import RequestError

logger = logging.getLogger("frugalml.serve")


def snapshot(registry: CollectorRegistry) -> tuple:
    """Every family of ``registry`` as plain tuples (see :data:`frugalml.serve._messages.Family`)."""
    return tuple((family.name, family.type, family.documentation,
                  tuple((s.name, tuple(s.labels.items()), s.value) for s in family.samples))
                 for family in registry.collect())


class HubLink:
    """What one worker tells the monitor process, and asks it.

    Args:
        worker: this worker's index.
        address: the monitor process's socket path, or ``(host, port)`` of a Ray hub actor; ``authkey`` its key.
        monitored: whether rows and request outcomes are shipped (monitoring on, with training statistics);
            request counters always are.
        node: the Ray node of a replica, named in each answer's ``X-Frugalml-Node`` header (None: not on Ray).
    """

    def __init__(self, worker: int, address: str | tuple[str, int], authkey: bytes, monitored: bool = True,
                 node: str | None = None) -> None:
        self.worker = worker
        self.monitored = monitored
        self.node = node
        self.prefix = secrets.token_hex(4)
        self.registry: CollectorRegistry | None = None  # the worker's request counters, set by the app
        self._rpc = Client(address, authkey=authkey)  # AF_UNIX for a path, AF_INET for (host, port)
        self._rpc_lock = threading.Lock()
        self._call(Hello(worker, os.getpid(), self.prefix, socket.gethostname() if node is not None else ""))
        self._stream = Client(address, authkey=authkey)
        self._lock = threading.Lock()
        self._sequence = itertools.count(1)
        self._next = 0
        self._rows: list[Rows] = []
        self._nonfinite: list[tuple[str, int, int]] = []
        self._requests = self._errors = 0
        self._latencies: list[float] = []
        self._predicts: list[tuple[float, int]] = []
        self._dirty = False
        self._flushed_at = 0.0

    # -- the request path ---------------------------------------------------------------

    def observe(self, X: np.ndarray, predictions: np.ndarray, confidence: np.ndarray | None = None) -> list[str]:
        n = len(predictions)
        with self._lock:
            first = self._next
            self._next += n
            if self.monitored:
                self._rows.append(Rows(first, X, predictions, confidence))
        prefix = self.prefix
        return [f"{prefix}-{i}" for i in range(first, first + n)]

    def observe_nonfinite(self, nan: int, inf: int, where: str = "input") -> None:
        if self.monitored:
            with self._lock:
                self._nonfinite.append((where, nan, inf))

    def observe_request(self, latency_s: float | None, ok: bool) -> None:
        with self._lock:
            self._dirty = True
            if self.monitored:
                self._requests += 1
                self._errors += not ok
                if latency_s is not None and len(self._latencies) < 100_000:
                    self._latencies.append(latency_s)

    def observe_predict(self, seconds: float, rows: int) -> None:
        if self.monitored:
            with self._lock:
                if len(self._predicts) < 100_000:
                    self._predicts.append((seconds, rows))

    # -- off the request path -------------------------------------------------------------

    def due(self, now: float) -> bool:
        return (self._dirty or bool(self._rows)) and now - self._flushed_at >= FLUSH_S

    def process(self, now: float | None = None) -> None:
        """Ship what was seen since the previous flush, with the counters as they are now."""
        self._flushed_at = time.monotonic() if now is None else now
        with self._lock:
            rows, self._rows = tuple(self._rows), []
            nonfinite, self._nonfinite = tuple(self._nonfinite), []
            requests, errors, self._requests, self._errors = self._requests, self._errors, 0, 0
            latencies, self._latencies = tuple(self._latencies), []
            predicts, self._predicts = tuple(self._predicts), []
            self._dirty = False
        flush = Flush(self.worker, self.prefix, rows, nonfinite, requests, errors, latencies, next(self._sequence),
                      self._families(), predicts)
        try:
            self._stream.send(flush)
        except OSError:
            logger.error("the monitor process is gone (frugalml serve's parent, or its Ray hub actor); this worker "
                         "stops")
            os.kill(os.getpid(), signal.SIGTERM)

    def _families(self) -> tuple | None:
        return snapshot(self.registry) if self.registry is not None else None

    def feedback(self, data: Any) -> int:
        """Count the labels in a ``/feedback`` body (blocking: call it from a thread)."""
        answer = self._call(FeedbackRequest(data))
        return answer.accepted

    def scrape(self) -> bytes:
        """The Prometheus text of every worker and the monitor (blocking: call it from a thread)."""
        flush = Flush(self.worker, self.prefix, sequence=next(self._sequence), families=self._families())
        return self._call(ScrapeRequest(flush)).text

    def slo_live(self) -> tuple[float | None, int]:
        """The live SLO latency and the requests it covers, from the monitor process (blocking)."""
        answer = self._call(SloRequest())
        return answer.predict_ms, answer.requests

    def _call(self, message: Any) -> Accepted | Exposition | SloLive:
        try:
            with self._rpc_lock:
                self._rpc.send(message)
                answer = self._rpc.recv()
        except (OSError, EOFError):
            raise RequestError(503, "internal", "the monitor process of this server is gone; the server is "
                                                "shutting down.") from None
        if isinstance(answer, Refused):
            raise RequestError(answer.status, answer.kind, answer.message)
        return answer

    def stop(self) -> None:
        for connection in (self._stream, self._rpc):
            connection.close()
