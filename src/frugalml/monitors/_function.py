"""Adapting a plain callable into a :class:`Monitor`."""

from __future__ import annotations

from typing import Callable, Mapping

from frugalml.monitors._base import Monitor


class FunctionMonitor(Monitor):
    """A monitor whose :meth:`sample` calls ``fn`` (no arguments, returns name -> value).

    Example:
        >>> monitor = FunctionMonitor(lambda: {"queue_length": 3.0})
        >>> monitor.sample()
        {'queue_length': 3.0}
    """

    def __init__(self, fn: Callable[[], Mapping[str, float]]) -> None:
        if not callable(fn):
            raise TypeError(f"`fn` must be callable, but got {fn!r}.")
        self.fn = fn

    def sample(self) -> dict[str, float]:
        return {name: float(value) for name, value in self.fn().items()}
