"""The typed messages between ``frugalml serve --workers N``'s worker processes and its monitor process
(and between ``--backend ray``'s replicas and its hub actor).

Workers send (over one socket each, :mod:`multiprocessing.connection`, pickled: a local socket for
``--workers``, TCP for Ray replicas, which may run on other machines):

- :class:`Hello` once, when the model is loaded: which worker, its pid and the prefix of its ids;
- :class:`Flush` every ``FLUSH_S`` while there is traffic, off the request path: the rows it
  predicted (with the ids it issued for them), NaN/inf counts, request outcomes and a snapshot
  of its request counters;
- :class:`FeedbackRequest`, :class:`ScrapeRequest` and :class:`SloRequest` on a second connection,
  each answered with :class:`Accepted` / :class:`Refused`, :class:`Exposition` or :class:`SloLive`.

The monitor process turns them into state in one place (:class:`frugalml.serve._hub.Hub`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

FLUSH_S = 0.05  # how often a worker with traffic ships what it saw to the monitor process

# one Prometheus family as a worker's registry collects it: name, type, help, samples (name, labels, value)
Family = tuple[str, str, str, tuple[tuple[str, tuple[tuple[str, str], ...], float], ...]]


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process needs to start (pickled to it by :mod:`multiprocessing`)."""

    index: int
    model_uri: str
    location: Any  # ModelLocation: where the parent's model_uri resolved to, loaded from there
    settings: Any  # ServerSettings
    config: Any  # MonitoringConfig
    host: str
    port: int
    address: str  # the monitor process's socket
    authkey: bytes
    parent_pid: int
    log_level: str = "info"
    access_log: bool = False
    reference: Any = None  # Reference: the parent's fingerprint (of a --reference table: not made again)


@dataclass(frozen=True)
class Hello:
    worker: int
    pid: int
    prefix: str
    host: str = ""  # the worker's machine: its pid means something only there ("": the monitor's own)


@dataclass(frozen=True)
class Rows:
    """Rows one worker predicted: ids ``<prefix>-<first>`` ... ``<prefix>-<first + len - 1>``."""

    first: int
    X: np.ndarray
    predictions: np.ndarray
    confidence: np.ndarray | None


@dataclass(frozen=True)
class Flush:
    """What one worker saw since its previous flush, and its request counters as they are now
    (``sequence`` orders the snapshots: an older one never replaces a newer)."""

    worker: int
    prefix: str  # names the worker process: a restarted worker has another
    rows: tuple[Rows, ...] = ()
    nonfinite: tuple[tuple[str, int, int], ...] = ()  # (where, nan, inf)
    requests: int = 0
    errors: int = 0
    latencies: tuple[float, ...] = ()
    sequence: int = 0
    families: tuple[Family, ...] | None = None
    predicts: tuple[tuple[float, int], ...] = ()  # each call to the model: (seconds, rows), for the SLO


@dataclass(frozen=True)
class FeedbackRequest:
    """The JSON body of a ``POST /feedback`` as parsed, for the monitor process to check and count."""

    data: Any


@dataclass(frozen=True)
class ScrapeRequest:
    """``GET /metrics`` on a worker: the exposition of every worker and the monitor, with the
    asking worker's counters as they are now."""

    flush: Flush


@dataclass(frozen=True)
class SloRequest:
    """``GET /health`` on a worker: the live SLO latency, which the monitor process keeps."""


@dataclass(frozen=True)
class SloLive:
    predict_ms: float | None  # None: too few requests in the SLO window
    requests: int


@dataclass(frozen=True)
class Accepted:
    accepted: int


@dataclass(frozen=True)
class Refused:
    """A request the monitor refuses: the worker answers it as a :class:`RequestError`."""

    status: int
    kind: str
    message: str


@dataclass(frozen=True)
class Exposition:
    text: bytes = field(repr=False)
