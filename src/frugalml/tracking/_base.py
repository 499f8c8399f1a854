"""The tracking extension point: where finished trials are logged besides the local store."""

from __future__ import annotations

import abc
from typing import Any

from frugalml.records import TrialRecord


class Tracker(abc.ABC):
    """Receives each finished trial; returns an id of what it wrote (or None)."""

    @abc.abstractmethod
    def log_trial(self, record: TrialRecord) -> str | None:
        """Log one finished trial, replacing an earlier copy with the same ``trial_id``."""

    def log_study(self, result: Any) -> None:
        """Log the study as a whole (a :class:`~frugalml.results.StudyResult`) once it ends."""

    def close(self, status: str = "FINISHED") -> None:
        """Flush and release resources at the end of a study: ``FINISHED``, ``FAILED``
        (an error ended it) or ``KILLED`` (interrupted)."""
