"""The channel: one small Ray actor through which the driver and the nodes share study figures.

What a node cannot know alone, the driver publishes here: the CPU-seconds and joules the
rest of the study used (for study budgets) and the finished peers of each workload (for
median stopping). Each running trial exchanges its own figures for those every
``SYNC_INTERVAL_S``, which also tells the driver how far a trial got if its Ray worker dies.
"""

from __future__ import annotations

from typing import Any, Mapping

from frugalml.budgets import STUDY_METRICS
from frugalml.records import TrialRecord

SYNC_INTERVAL_S = 0.5  # how often a running trial and the driver exchange study figures


class Channel:
    """Study figures shared by the driver and the nodes (a Ray actor, no CPU reserved)."""

    def __init__(self) -> None:
        self.finished = dict.fromkeys(STUDY_METRICS, 0.0)
        self.peers: dict[str, list[TrialRecord]] = {}
        self.version = 0
        self.running: dict[str, dict[str, Any]] = {}
        self.forgotten: set[str] = set()  # a late message from an ended trial must not revive it

    def publish(self, finished: Mapping[str, float], peers: Mapping[str, list[TrialRecord]]) -> None:
        self.finished = dict(finished)
        if peers:
            self.peers.update(peers)
            self.version += 1

    def started(self, trial_id: str, node: dict[str, str]) -> None:
        if trial_id not in self.forgotten:
            self.running.setdefault(trial_id, {})["node"] = node

    def exchange(self, trial_id: str, state: dict[str, Any], version: int) -> tuple[dict[str, float], int, dict | None]:
        """Store a trial's progress; return what the rest of the study used (finished trials
        and the other running ones: CPU-seconds, joules) and, if newer, the peers."""
        if trial_id not in self.forgotten:
            self.running.setdefault(trial_id, {}).update(state)
        others = [s for t, s in self.running.items() if t != trial_id]
        used = {m: self.finished.get(m, 0.0) + sum(s.get(m, 0.0) for s in others) for m in STUDY_METRICS}
        return used, self.version, (self.peers if version != self.version else None)

    def running_used(self, metric: str) -> float:
        return sum(s.get(metric, 0.0) for s in self.running.values())

    def forget(self, trial_id: str) -> dict[str, Any]:
        """Drop a finished trial; returns what it last said (node, steps, CPU-seconds, joules)."""
        self.forgotten.add(trial_id)
        return self.running.pop(trial_id, {})
