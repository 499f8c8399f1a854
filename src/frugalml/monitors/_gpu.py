"""GPU utilisation and memory of a process tree, via NVML (``pip install frugalml[gpu]``)."""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable

from frugalml.metrics import GPU_MEMORY_MB, GPU_UTIL_PERCENT
from frugalml.monitors._base import Monitor
from frugalml.monitors._tree import tree_pids
from frugalml.units import to_mb


def _nvml_handles(pynvml: Any = None) -> tuple[Any, list[Any]]:
    """``(pynvml, device handles)`` with NVML initialised, or ``(None, [])`` (and NVML shut
    down again) when the library, the driver or a device is missing. ``pynvml``: the module
    to use (a test's fake); default: imported."""
    if pynvml is None:
        try:
            import pynvml  # lazy: optional dependency, and nvmlInit costs ~50 ms
        except ImportError:
            return None, []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:  # no driver or library
        return None, []
    try:
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except pynvml.NVMLError:
        handles = []
    if not handles:
        pynvml.nvmlShutdown()
        return None, []
    return pynvml, handles


def visible_gpus() -> list[str]:
    """The NVIDIA devices this process may use: ``CUDA_VISIBLE_DEVICES`` where set, else
    every device NVML lists (``[]`` without NVML or a GPU)."""
    declared = os.environ.get("CUDA_VISIBLE_DEVICES")
    if declared is not None:
        return [device.strip() for device in declared.split(",") if device.strip() and device.strip() != "-1"]
    nvml, handles = _nvml_handles()
    if nvml is not None:
        nvml.nvmlShutdown()
    return [str(index) for index in range(len(handles))]


class GpuMonitor(Monitor):
    """Samples the NVIDIA GPUs used by a process tree.

    Returns ``gpu_util_percent`` (mean device utilisation, from
    ``nvmlDeviceGetUtilizationRates``, over the devices the tree has a context on;
    device-wide, so other processes on a shared GPU count too) and ``gpu_memory_mb``
    (GPU memory used by the tree's processes). Both are left out, never 0, when NVML or
    a GPU is missing (:attr:`available` is False) and while no process of the tree is on
    a GPU: NVML reports host pids, which inside a container's pid namespace match none.
    :attr:`devices` holds the NVML indices the tree was on at the latest sample.

    Args:
        pids: the root pid of the tree, or a callable returning the tree's pids (lets a
            :class:`ProcessTreeMonitor` share its listing, see ``default_monitors``).

    Example:
        >>> import os
        >>> with GpuMonitor(os.getpid()) as monitor:
        ...     metrics = monitor.sample()  # {} without an NVIDIA GPU
    """

    def __init__(self, pids: int | Callable[[], Iterable[int]]) -> None:
        if isinstance(pids, int) and not isinstance(pids, bool):
            root = pids
            self._pids: Callable[[], Iterable[int]] = lambda: tree_pids(root)
        elif callable(pids):
            self._pids = pids
        else:
            raise TypeError(
                f"`pids` must be an int pid or a callable returning pids, but got {pids!r}."
            )
        self._nvml, self._handles = _nvml_handles()
        self.devices: tuple[int, ...] = ()  # NVML indices the tree was on at the latest sample

    @property
    def available(self) -> bool:
        """True when NVML initialised and found at least one device."""
        return self._nvml is not None

    def sample(self) -> dict[str, float]:
        """Return the GPU metrics of the tree, or ``{}`` when unavailable or unused."""
        if self._nvml is None:
            return {}
        nvml, pids = self._nvml, set(self._pids())
        memory_bytes: int | None = None
        utils: list[float] = []
        devices: list[int] = []
        for index, handle in enumerate(self._handles):
            used: dict[int, int | None] = {}
            for list_processes in (
                nvml.nvmlDeviceGetComputeRunningProcesses,
                nvml.nvmlDeviceGetGraphicsRunningProcesses,
            ):
                try:
                    processes = list_processes(handle)
                except nvml.NVMLError:  # e.g. graphics listing not supported
                    continue
                for process in processes:
                    # A process with compute and graphics contexts is listed twice.
                    if process.pid in pids and used.get(process.pid) is None:
                        used[process.pid] = process.usedGpuMemory  # None under WDDM or MIG
            if not used:
                continue
            devices.append(index)
            known = [value for value in used.values() if value is not None]
            if known:
                memory_bytes = (memory_bytes or 0) + sum(known)
            try:
                utils.append(float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu))
            except nvml.NVMLError:
                pass
        self.devices = tuple(devices)
        metrics: dict[str, float] = {}
        if utils:
            metrics[GPU_UTIL_PERCENT] = sum(utils) / len(utils)
        if memory_bytes is not None:
            metrics[GPU_MEMORY_MB] = to_mb(memory_bytes)
        return metrics

    def close(self) -> None:
        if self._nvml is not None:
            nvml, self._nvml, self._handles = self._nvml, None, []
            try:
                nvml.nvmlShutdown()
            except nvml.NVMLError:
                pass
