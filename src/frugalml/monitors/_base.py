"""The extension point: a source of system metrics sampled by the watchdog."""

from __future__ import annotations

import abc
from types import TracebackType


class Monitor(abc.ABC):
    """A source of system metrics, sampled on a cadence from the parent process.

    Subclasses implement :meth:`sample`. A metric that cannot be measured is left out
    of the returned dict, never reported as 0, so budgets never act on a made-up value.

    Example:
        >>> class ConstantMonitor(Monitor):
        ...     def sample(self) -> dict[str, float]:
        ...         return {"answer": 42.0}
        >>> with ConstantMonitor() as monitor:
        ...     monitor.sample()
        {'answer': 42.0}
    """

    @abc.abstractmethod
    def sample(self) -> dict[str, float]:
        """Return the current value of each available metric, keyed by unit-suffixed name."""

    def sample_detailed(self) -> dict[str, float]:
        """Return :meth:`sample` plus metrics too costly for every tick (called every ~2 s)."""
        return self.sample()

    def close(self) -> None:
        """Release what the monitor holds (library handles, files). Idempotent."""

    def __enter__(self) -> Monitor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
