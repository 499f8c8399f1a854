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
import urllib.request
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

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
    """POSTs each event as JSON to every URL, from a daemon thread.

    Failures are logged and counted in ``failures``; they never reach the server's requests.
    """

    def __init__(self, urls: Iterable[str], timeout_s: float = 5.0) -> None:
        self.urls = tuple(urls)
        self.timeout_s = timeout_s
        self.sent = 0
        self.failures = 0
        self._queue: queue.Queue[AlertEvent | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="frugalml-webhooks", daemon=True)
        self._thread.start()

    def notify(self, event: AlertEvent) -> None:
        self._queue.put(event)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=self.timeout_s + 1)

    def _run(self) -> None:
        while (event := self._queue.get()) is not None:
            body = json.dumps(event.to_dict()).encode()
            for url in self.urls:
                request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                        response.read()
                    self.sent += 1
                except OSError as error:
                    self.failures += 1
                    logger.error("webhook %s failed for alert %r: %s", url, event.rule, error)
