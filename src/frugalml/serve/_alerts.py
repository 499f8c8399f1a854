"""Alert rules evaluated over metric histories, and where their events go.

:class:`AlertEvaluator` is pure: given each metric's recent values and the time, it
returns the transitions (``firing`` once when a rule's condition has held for
``for_s``, ``resolved`` once when it stops holding), so an alert is de-duplicated
for as long as its condition holds. Notifiers deliver the events: the log always,
webhooks (a JSON POST from a daemon thread, never from a request) when configured.
"""

from __future__ import annotations

import abc
import fnmatch
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from frugalml.exceptions import one_line
from frugalml.serve._config import AlertRule

logger = logging.getLogger("frugalml.serve.alerts")


@dataclass(frozen=True)
class AlertEvent:
    """A rule starting to fire or resolving."""

    rule: str
    status: str  # "firing" | "resolved"
    metric: str
    value: float
    op: str
    threshold: float
    at: float  # unix time
    model: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "value": self.value if self.value == self.value else None}

    def message(self) -> str:
        return (
            f"alert {self.rule!r} {self.status}: {self.metric} = {self.value:.4g} "
            f"({'breaks' if self.status == 'firing' else 'back within'} {self.op} {self.threshold:g})"
        )


class _RuleState:
    __slots__ = ("since", "firing")

    def __init__(self) -> None:
        self.since: float | None = None  # when the condition started to hold
        self.firing = False


class AlertEvaluator:
    """Tracks each rule's state; :meth:`evaluate` returns only the transitions."""

    def __init__(self, rules: Sequence[AlertRule], model: str = "") -> None:
        self.rules = tuple(rules)
        self.model = model
        self._states = {rule.name: _RuleState() for rule in self.rules}
        self.fired_total = {rule.name: 0 for rule in self.rules}

    @property
    def firing(self) -> dict[str, bool]:
        return {name: state.firing for name, state in self._states.items()}

    def _worst(self, rule: AlertRule, history: Mapping[str, Sequence[float]]) -> tuple[str, float] | None:
        """The matching metric whose windowed mean holds the condition (else the last one seen)."""
        names = fnmatch.filter(history, rule.metric) if "*" in rule.metric else [rule.metric]
        seen = None
        for name in names:
            values = history.get(name)
            if not values:
                continue
            recent = list(values)[-rule.window:]
            value = sum(recent) / len(recent)
            if rule.holds(value):
                return name, value
            seen = (name, value)
        return seen

    def evaluate(self, history: Mapping[str, Sequence[float]], now: float) -> list[AlertEvent]:
        """``history`` maps metric names to their recent values (oldest first); ``now`` is monotonic."""
        events = []
        for rule in self.rules:
            state = self._states[rule.name]
            found = self._worst(rule, history)
            holds = found is not None and rule.holds(found[1])
            if holds:
                state.since = now if state.since is None else state.since
                if not state.firing and now - state.since >= rule.for_s:
                    state.firing = True
                    self.fired_total[rule.name] += 1
                    events.append(self._event(rule, "firing", found))
            else:
                state.since = None
                if state.firing:
                    state.firing = False
                    events.append(self._event(rule, "resolved", found))
        return events

    def _event(self, rule: AlertRule, status: str, found: tuple[str, float] | None) -> AlertEvent:
        metric, value = found if found is not None else (rule.metric, float("nan"))
        return AlertEvent(rule.name, status, metric, value, rule.op, rule.threshold, time.time(), self.model)


class Notifier(abc.ABC):
    """Where alert events go."""

    @abc.abstractmethod
    def notify(self, event: AlertEvent) -> None:
        """Deliver one event; must not block for long (called from the monitor's thread)."""

    def close(self) -> None:
        """Release resources (threads)."""


class LogNotifier(Notifier):
    """Writes each event to the ``frugalml.serve.alerts`` logger (WARNING when firing)."""

    def notify(self, event: AlertEvent) -> None:
        logger.log(logging.WARNING if event.status == "firing" else logging.INFO, event.message())


class WebhookNotifier(Notifier):
    """POSTs each event as JSON to every URL, each URL from its own daemon thread.

    Each POST has ``timeout_s`` to connect and again to read the answer, so a receiver
    that is down or never answers costs its own thread that long and nothing else: a
    slow URL never delays another, and never the server's requests. Failures are counted
    in ``failures``; the first of an outage is logged as one line, the rest at DEBUG
    until the URL takes an event again. At most ``max_queued`` events wait per URL;
    older ones are dropped (and counted as failures) while a receiver is down.
    """

    def __init__(self, urls: Iterable[str], timeout_s: float = 5.0, max_queued: int = 1000) -> None:
        self.urls = tuple(urls)
        self.timeout_s = timeout_s
        self.sent = 0
        self.failures = 0
        self._lock = threading.Lock()
        self._down: set[str] = set()
        self._queues: dict[str, queue.Queue[AlertEvent | None]] = {url: queue.Queue(max_queued) for url in self.urls}
        self._threads = [
            threading.Thread(target=self._run, args=(url,), name=f"frugalml-webhook-{number}", daemon=True)
            for number, url in enumerate(self.urls)
        ]
        for thread in self._threads:
            thread.start()

    def notify(self, event: AlertEvent) -> None:
        for url in self.urls:
            self._put(url, event)

    def close(self) -> None:
        for url in self.urls:
            self._put(url, None)
        deadline = time.monotonic() + self.timeout_s + 1  # as long as a POST under way may take to fail
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def _put(self, url: str, event: AlertEvent | None) -> None:
        waiting = self._queues[url]
        while True:
            try:
                waiting.put_nowait(event)
                return
            except queue.Full:
                try:
                    dropped = waiting.get_nowait()
                except queue.Empty:
                    continue
                if dropped is not None:
                    self._failed(url, dropped, f"{waiting.maxsize} alerts were waiting; the oldest was dropped")

    def _run(self, url: str) -> None:
        waiting = self._queues[url]
        while (event := waiting.get()) is not None:
            body = json.dumps(event.to_dict()).encode()
            request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    response.read(1 << 16)
            except (OSError, ValueError) as error:  # refused, timed out, reset, an HTTP error, a bad answer
                self._failed(url, event, _why(error, self.timeout_s))
                continue
            with self._lock:
                self.sent += 1
                recovered = url in self._down
                self._down.discard(url)
            if recovered:
                logger.warning("webhook %s takes alerts again", url)

    def _failed(self, url: str, event: AlertEvent, why: str) -> None:
        with self._lock:
            self.failures += 1
            first = url not in self._down
            self._down.add(url)
        if first:
            logger.error("webhook %s failed for alert %r: %s; alerts still go to this log, and each new alert "
                         "tries the webhook again (failures count in frugalml_webhook_failures)", url, event.rule, why)
        else:
            logger.debug("webhook %s failed again for alert %r: %s", url, event.rule, why)


def _why(error: BaseException, timeout_s: float) -> str:
    """One line on why a POST failed."""
    reason = getattr(error, "reason", error)  # a URLError wraps the socket's error
    if isinstance(reason, TimeoutError) or isinstance(error, TimeoutError):
        return f"no answer within {timeout_s:g} s"
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    text = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
    return one_line(str(text), squash=True)
