"""Merging several monitors into one, and the default set for a worker process."""

from __future__ import annotations

from typing import Callable, Iterable, Mapping, Union

from frugalml.monitors._base import Monitor
from frugalml.monitors._energy import EnergyMonitor
from frugalml.monitors._function import FunctionMonitor
from frugalml.monitors._gpu import GpuMonitor
from frugalml.monitors._process_tree import ProcessTreeMonitor

MonitorLike = Union[Monitor, Callable[[], Mapping[str, float]]]


def as_monitor(monitor: MonitorLike) -> Monitor:
    """Convert what a user may pass (a Monitor or a zero-argument callable) into a Monitor."""
    if isinstance(monitor, Monitor):
        return monitor
    if callable(monitor):
        return FunctionMonitor(monitor)
    raise TypeError(
        f"A monitor must be a Monitor or a callable returning a dict, but got {monitor!r}."
    )


class CompositeMonitor(Monitor):
    """Samples several monitors and merges their metrics; on a name clash the later wins.

    Args:
        monitors: monitors, or zero-argument callables returning name -> value.

    Example:
        >>> monitor = CompositeMonitor([lambda: {"a": 1.0}, lambda: {"b": 2.0}])
        >>> monitor.sample()
        {'a': 1.0, 'b': 2.0}
    """

    def __init__(self, monitors: Iterable[MonitorLike]) -> None:
        self.monitors: tuple[Monitor, ...] = tuple(as_monitor(m) for m in monitors)

    def sample(self) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for monitor in self.monitors:
            metrics.update(monitor.sample())
        return metrics

    def sample_detailed(self) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for monitor in self.monitors:
            metrics.update(monitor.sample_detailed())
        return metrics

    def close(self) -> None:
        """Close every monitor, even when one of them raises; re-raise the first error."""
        error: BaseException | None = None
        for monitor in self.monitors:
            try:
                monitor.close()
            except Exception as exc:  # noqa: BLE001 - the others must still be closed
                error = error or exc
        if error is not None:
            raise error


def tree_monitors(pid: int, *, watts_per_core: float | None = None) -> tuple[ProcessTreeMonitor, GpuMonitor, EnergyMonitor]:
    """The process-tree, GPU and energy monitors of ``pid``'s tree, wired together: the GPU
    monitor reads the tree's pids and the energy monitor its CPU-seconds and devices as
    their latest samples left them, so sample them in this order."""
    tree = ProcessTreeMonitor(pid)
    gpu = GpuMonitor(lambda: tree.pids)
    energy = EnergyMonitor(lambda: tree.cpu_s, (lambda: gpu.devices) if gpu.available else None,
                           watts_per_core=watts_per_core)
    return tree, gpu, energy


def default_monitors(pid: int) -> list[Monitor]:
    """The process-tree monitor of ``pid``, a GPU monitor where NVML finds a GPU, and the
    tree's :class:`EnergyMonitor` (:func:`tree_monitors`), in the order a
    :class:`CompositeMonitor` must sample them."""
    tree, gpu, energy = tree_monitors(pid)
    if not gpu.available:
        gpu.close()
        return [tree, energy]
    return [tree, gpu, energy]
