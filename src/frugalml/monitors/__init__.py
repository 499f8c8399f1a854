"""System-metric monitors, sampled by the watchdog in the parent process.

The trial process pays nothing: a :class:`Monitor` reads the OS about the worker's
process tree on a cadence. Metric names carry their unit (see :mod:`frugalml.records`);
a metric that cannot be measured is left out, never reported as 0.

Example:
    >>> import os
    >>> from frugalml.monitors import CompositeMonitor, default_monitors
    >>> with CompositeMonitor(default_monitors(os.getpid())) as monitor:
    ...     metrics = monitor.sample()
"""

from __future__ import annotations

from frugalml.monitors._base import Monitor
from frugalml.monitors._composite import CompositeMonitor, MonitorLike, as_monitor, default_monitors, tree_monitors
from frugalml.monitors._energy import (
    POWERCAP, EnergyMonitor, default_watts_per_core, energy_estimate_warning, machine_busy_cpu_s,
)
from frugalml.monitors._function import FunctionMonitor
from frugalml.monitors._gpu import GpuMonitor, visible_gpus
from frugalml.monitors._process_tree import ProcessTreeMonitor, private_bytes

__all__ = [
    "CompositeMonitor",
    "EnergyMonitor",
    "FunctionMonitor",
    "GpuMonitor",
    "Monitor",
    "MonitorLike",
    "POWERCAP",
    "ProcessTreeMonitor",
    "as_monitor",
    "default_monitors",
    "default_watts_per_core",
    "energy_estimate_warning",
    "machine_busy_cpu_s",
    "private_bytes",
    "tree_monitors",
    "visible_gpus",
]
