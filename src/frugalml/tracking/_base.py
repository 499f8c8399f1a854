"""The tracking extension point: where finished trials are logged besides the local store."""

from __future__ import annotations

import abc

from frugalml.records import TrialRecord


class Tracker(abc.ABC):
    """Receives each finished trial; returns an id of what it wrote (or None)."""

    @abc.abstractmethod
    def log_trial(self, record: TrialRecord) -> str | None:
        """Log one finished trial, replacing an earlier copy with the same ``trial_id``."""

    def close(self) -> None:
        """Flush and release resources at the end of a study."""
