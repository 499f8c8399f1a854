"""The deployment envelope: the box a model will be served on, as ``[deploy]`` writes it."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from frugalml.exceptions import ConfigError
from frugalml.validation import Interval, check, check_keys

CALLS = Interval(int, 10, 100_000, closed="both")
QUANTILE = Interval(float, 0.5, 1.0, closed="both")
BATCH = Interval(int, 1, 100_000, closed="both")  # rows a timed call predicts: held in memory at once
TIMEOUT = Interval(float, 1.0, 3600.0, closed="both")


def machine_cores() -> int:
    """Cores this process may run on (its affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0))


@dataclass(frozen=True)
class Deploy:
    """Where and how a model's serving cost is measured.

    Args:
        cores: cores the measuring process is pinned to (a smaller box, emulated);
            the last ``cores`` of those frugalml may use, away from the first trial's.
        threads: threads the model may use (OpenMP, BLAS, torch); default ``cores``.
        batch_size: rows per timed prediction (1: single-row latency).
        quantile: the latency quantile ``max_predict_ms`` limits (0.99: p99).
        calls: timed predictions; ``warmup`` untimed ones run first.
        resources: on Ray, the custom resources of the node to measure on
            (``{edge = 1}``: a node started with ``--resources '{"edge": 1}'``).
        timeout_s: a measurement that takes longer fails the trial.

    Example:
        >>> Deploy.from_config({"cores": 1, "quantile": 0.95}).n_threads
        1
    """

    cores: int = 1
    threads: int | None = None
    batch_size: int = 1
    quantile: float = 0.99
    calls: int = 200
    warmup: int = 10
    resources: Mapping[str, float] = field(default_factory=dict)
    timeout_s: float = 120.0

    def __post_init__(self) -> None:
        owner = "[deploy]"
        available = machine_cores()
        check(owner, "cores", self.cores, Interval(int, 1, None))
        if self.cores > available and not self.resources:
            raise ConfigError(f"[deploy] cores = {self.cores} is more than the {available} this machine lets frugalml "
                              f"use; ask for at most {available}, or measure on a Ray node (resources = {{...}}).")
        if self.threads is not None:
            check(owner, "threads", self.threads, Interval(int, 1, 1024, closed="both"))
        check(owner, "batch_size", self.batch_size, BATCH)
        percentile = isinstance(self.quantile, (int, float)) and not isinstance(self.quantile, bool)
        if percentile and 50 <= self.quantile <= 100:
            raise ConfigError(f"[deploy] quantile = {self.quantile:g} is a percentile; write it as a share: quantile = "
                              f"{self.quantile / 100:g} for p{self.quantile:g} (the range is [0.5, 1]).")
        check(owner, "quantile", self.quantile, QUANTILE)
        check(owner, "calls", self.calls, CALLS)
        check(owner, "warmup", self.warmup, Interval(int, 0, 10_000, closed="both"))
        check(owner, "timeout_s", self.timeout_s, TIMEOUT)
        if not isinstance(self.resources, Mapping) or not all(
                isinstance(k, str) and v in Interval(float, 0, None, closed="neither")
                for k, v in self.resources.items()):
            raise ConfigError(f"[deploy] resources must be a table of resource names and amounts > 0, e.g. "
                              f"{{ edge = 1 }}. Got {self.resources!r} instead.")

    @property
    def n_threads(self) -> int:
        return self.threads or self.cores

    @classmethod
    def from_config(cls, table: Mapping[str, Any] | None) -> Deploy:
        """The envelope of a ``[deploy]`` table (empty: the defaults); one-line errors."""
        table = dict(table or {})
        check_keys("[deploy]", table, [f.name for f in fields(cls)])
        return cls(**table)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["resources"] = dict(self.resources)
        return data

    def describe(self) -> str:
        """``"p99 of 200 calls of 1 row, 1 core, 1 thread"``, for messages."""
        return (f"p{self.quantile * 100:g} of {self.calls} calls of {self.batch_size} row"
                f"{'s' if self.batch_size > 1 else ''}, {self.cores} core{'s' if self.cores > 1 else ''}, "
                f"{self.n_threads} thread{'s' if self.n_threads > 1 else ''}")
