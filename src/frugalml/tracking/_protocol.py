"""The messages between a driver and its MLflow tracking process (:mod:`frugalml.tracking._remote`).

The driver sends one request and waits for its reply, so they never interleave. Each request
names its study's ``key`` (the driver's studies share the process).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from frugalml.records import TrialRecord


@dataclasses.dataclass(frozen=True)
class Open:
    """Open (or create) the study's experiment and parent run; ``sys_path`` is the driver's, so a
    trial's model unpickles as it would there."""

    key: str
    uri: str
    study_name: str
    artifact_dir: str | None
    params: dict[str, object]
    sys_path: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class LogTrial:
    key: str
    record: TrialRecord


@dataclasses.dataclass(frozen=True)
class LogStudy:
    key: str
    result: Any  # a frugalml.results.StudyResult (a layer above this one)


@dataclasses.dataclass(frozen=True)
class Close:
    """End the study's run with ``status``; ``sweep``: and its trial runs left RUNNING (KILLED)."""

    key: str
    status: str
    sweep: bool = False


@dataclasses.dataclass(frozen=True)
class Shutdown:
    """The driver is done with the process (at its exit, or after it retired the socket): no reply,
    and the studies still open are left as they are (a bare end of the socket means the driver died)."""


Request = Open | LogTrial | LogStudy | Close | Shutdown


@dataclasses.dataclass(frozen=True)
class Done:
    value: str | None = None  # LogTrial's run id


@dataclasses.dataclass(frozen=True)
class Failed:
    """The request raised: its one-line message; ``tracking`` when it was a :class:`TrackingError`
    (a message already about MLflow), else the driver says where tracking failed."""

    message: str
    tracking: bool


Reply = Done | Failed
