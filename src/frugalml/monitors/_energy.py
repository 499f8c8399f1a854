"""Joules a trial used: measured from RAPL and NVML counters where readable, else estimated.

Sources, as :attr:`EnergyMonitor.source` names them (``"rapl+nvml"``, ``"estimate"``, ...):

============  ===================================================================
``rapl``      CPU packages: ``/sys/class/powercap/intel-rapl:N/energy_uj`` (µJ,
              wrapping at ``max_energy_range_uj``); Linux makes it root-only since 5.10
``nvml``      NVIDIA GPUs: ``nvmlDeviceGetTotalEnergyConsumption`` (mJ, Volta and later)
``estimate``  no readable RAPL counter: the tree's CPU-seconds × :attr:`~EnergyMonitor.watts_per_core`
============  ===================================================================

The estimate is never mixed silently with measurements: its source says ``estimate``
and :attr:`~EnergyMonitor.assumption` states the watts it assumed.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import psutil

from frugalml.budgets import BUDGETS
from frugalml.exceptions import ConfigError
from frugalml.metrics import ENERGY_J
from frugalml.monitors._base import Monitor
from frugalml.monitors._gpu import _nvml_handles

POWERCAP = Path("/sys/class/powercap")
WATTS_ENV = "FRUGALML_WATTS_PER_CORE"
# CodeCarbon's fallback for a CPU it cannot measure or look up: 85 W TDP (POWER_CONSTANT), of which
# 50 % is drawn (CONSUMPTION_PERCENTAGE_CONSTANT), codecarbon/external/hardware.py.
CODECARBON_TDP_W = 85.0
CODECARBON_DRAWN = 0.5


def default_watts_per_core() -> float:
    """``$FRUGALML_WATTS_PER_CORE``, else CodeCarbon's fallback (42.5 W) shared by this machine's logical CPUs."""
    value = os.environ.get(WATTS_ENV)
    if value is None:
        return CODECARBON_TDP_W * CODECARBON_DRAWN / (os.cpu_count() or 1)
    try:
        watts = float(value)
    except ValueError:
        watts = math.nan
    if not (math.isfinite(watts) and watts > 0):
        raise ConfigError(f"{WATTS_ENV} must be a number of watts > 0. Got {value!r} instead; unset it for the default.")
    return watts


def estimate_assumption(watts_per_core: float) -> str:
    """The words that label an estimate: what it assumed, and why."""
    fallback = WATTS_ENV not in os.environ and watts_per_core == default_watts_per_core()  # not one a caller gave
    origin = f", CodeCarbon's 42.5 W fallback over {os.cpu_count() or 1} cores; set {WATTS_ENV}" if fallback else ""
    return f"CPU-seconds × {watts_per_core:.3g} W per core (no readable RAPL counter{origin})"


def energy_estimate_warning(budget: Mapping[str, Any], powercap_root: str | Path = POWERCAP,
                            watts_per_core: float | None = None) -> str | None:
    """One line for a ``[budget]`` table whose energy budgets will act on estimates here; None otherwise."""
    keys = sorted(k for k in budget if k in BUDGETS and BUDGETS[k].metric == ENERGY_J)
    if not keys or rapl_packages(powercap_root):
        return None
    watts = default_watts_per_core() if watts_per_core is None else watts_per_core
    return f"{', '.join(keys)} will act on estimated joules on this machine: {estimate_assumption(watts)}."


def machine_busy_cpu_s() -> float:
    """CPU-seconds the whole machine spent busy (``/proc/stat``; guest time is inside user)."""
    times = psutil.cpu_times()
    return sum(getattr(times, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq"))


def rapl_packages(root: str | Path = POWERCAP) -> list[Path]:
    """The CPU-package RAPL zones under ``root`` whose counter this process can read.

    Sub-zones (``intel-rapl:0:0``: cores, uncore, DRAM) are inside their package and
    ``psys`` (the whole platform) contains it, so both are left out.
    """
    zones = []
    for zone in sorted(Path(root).glob("intel-rapl:*")):
        if zone.name.count(":") != 1 or _read_text(zone / "name") == "psys":
            continue
        if _read_int(zone / "energy_uj") is not None:
            zones.append(zone)
    return zones


def counter_delta(previous: int, current: int, wraps_at: int) -> int:
    """The increase of a counter that restarts from 0 after ``wraps_at``.

    A counter that went down wrapped, unless the wrap would mean more than half its range
    between two samples (~130 kJ on a typical package, in a fraction of a second): then it
    was reset (a driver reload, a resumed VM), and counted from 0 since.
    """
    if current >= previous:
        return current - previous
    wrapped = current + wraps_at - previous
    return wrapped if 0 <= wrapped <= wraps_at // 2 else current


class EnergyMonitor(Monitor):
    """Samples ``energy_j``: the joules a trial's process tree used since the monitor started.

    Per trial, not per machine. Each sample, a CPU package's energy since the previous
    sample is shared by CPU time: the trial gets the package's joules × its tree's
    CPU-seconds / the whole machine's busy CPU-seconds (:func:`machine_busy_cpu_s`), so
    concurrent trials split it (idle power included) and other work on the machine keeps
    its share. A GPU's joules go to the trial while its tree has a context on the device
    (``gpu_devices``); trials sharing one device are each charged all of it, as with
    ``gpu_util_percent``. Without a readable RAPL counter the CPU part is estimated:
    the tree's CPU-seconds × :attr:`watts_per_core`; a GPU without an energy counter
    adds nothing.

    Args:
        cpu_s: the tree's CPU-seconds so far (``ProcessTreeMonitor.cpu_s``); None before any.
        gpu_devices: NVML indices of the devices the tree is on now (``GpuMonitor.devices``);
            None: GPUs are not read.
        watts_per_core: the estimate's power per busy core (default :func:`default_watts_per_core`).
        powercap_root: where the RAPL zones are (a test passes a fake tree).
        nvml: the ``pynvml`` module (a test passes a fake); default: imported.
        busy_cpu_s: the machine's busy CPU-seconds so far (a test passes a fake).

    Example:
        >>> cpu_seconds = iter([1.0, 3.0]).__next__   # the tree's CPU-s at the start, then now
        >>> monitor = EnergyMonitor(cpu_seconds, watts_per_core=10.0, powercap_root="/nonexistent")
        >>> monitor.source, monitor.sample()
        ('estimate', {'energy_j': 20.0})
    """

    def __init__(self, cpu_s: Callable[[], float | None], gpu_devices: Callable[[], Iterable[int]] | None = None, *,
                 watts_per_core: float | None = None, powercap_root: str | Path = POWERCAP, nvml: Any = None,
                 busy_cpu_s: Callable[[], float] = machine_busy_cpu_s) -> None:
        self._cpu_s, self._gpu_devices, self._busy_cpu_s = cpu_s, gpu_devices, busy_cpu_s
        self._zones = rapl_packages(powercap_root)
        self._wraps_at = [_read_int(zone / "max_energy_range_uj") or 2**32 for zone in self._zones]
        self._uj = [_read_int(zone / "energy_uj") or 0 for zone in self._zones]
        self._busy, self._tree = busy_cpu_s(), cpu_s() or 0.0
        self._tree_at_start = self._tree  # CPU spent before the monitor started is not its to count
        self.watts_per_core = None if self._zones else (watts_per_core or default_watts_per_core())
        self._nvml, handles = _nvml_handles(nvml) if gpu_devices is not None else (None, [])
        self._mj = {i: mj for i, handle in enumerate(handles) if (mj := self._gpu_mj(handle)) is not None}
        self._handles = {i: handles[i] for i in self._mj}
        if self._nvml is not None and not self._handles:
            self.close()
        self._cpu_j = self._gpu_j = 0.0

    @property
    def source(self) -> str:
        """``rapl`` or ``estimate`` for the CPUs, ``+nvml`` once GPU joules were charged (a tree
        NVML never saw on a device, as in a container's pid namespace, gets none)."""
        return ("rapl" if self._zones else "estimate") + ("+nvml" if self._gpu_j > 0 else "")

    @property
    def estimated(self) -> bool:
        return not self._zones

    @property
    def assumption(self) -> str | None:
        """What an estimate assumed; None when every joule is measured."""
        return estimate_assumption(self.watts_per_core) if self.watts_per_core is not None else None

    def labels(self) -> dict[str, str]:
        """How the joules were got, for a trial's record: ``energy_source`` and ``energy_assumption``."""
        assumption = self.assumption
        return {"energy_source": self.source, **({"energy_assumption": assumption} if assumption else {})}

    def sample(self) -> dict[str, float]:
        tree = self._cpu_s()
        if tree is None and not (self._cpu_j or self._gpu_j):
            return {}
        tree = max(tree or 0.0, self._tree)
        if self.watts_per_core is not None:
            self._cpu_j = (tree - self._tree_at_start) * self.watts_per_core
        else:
            uj = [_read_int(zone / "energy_uj") for zone in self._zones]
            joules = sum(counter_delta(old, new, wraps) for old, new, wraps in zip(self._uj, uj, self._wraps_at)
                         if new is not None) / 1e6
            busy = self._busy_cpu_s()
            if busy > self._busy:
                self._cpu_j += joules * min(1.0, (tree - self._tree) / (busy - self._busy))
            self._uj = [old if new is None else new for old, new in zip(self._uj, uj)]
            self._busy = max(self._busy, busy)
        self._tree = tree
        if self._handles:
            self._sample_gpus()
        return {ENERGY_J: self._cpu_j + self._gpu_j}

    def final_j(self, cpu_s: float) -> float:
        """The trial's joules at its end, from the tree's final CPU-seconds (the worker's own count):
        an estimate also counts the CPU spent after the last sample; measured joules stay as sampled."""
        if self.watts_per_core is not None:
            self._cpu_j = max(self._cpu_j, (cpu_s - self._tree_at_start) * self.watts_per_core)
        return self._cpu_j + self._gpu_j

    def _sample_gpus(self) -> None:
        on = set(self._gpu_devices())
        for index, handle in self._handles.items():
            mj = self._gpu_mj(handle)
            if mj is None:
                continue
            if index in on:
                self._gpu_j += max(0, mj - self._mj[index]) / 1000.0
            self._mj[index] = mj

    def _gpu_mj(self, handle: Any) -> int | None:
        read = getattr(self._nvml, "nvmlDeviceGetTotalEnergyConsumption", None)  # pynvml < 11 lacks it
        try:
            return int(read(handle)) if read is not None else None
        except self._nvml.NVMLError:  # not supported before Volta
            return None

    def close(self) -> None:
        if self._nvml is not None:
            nvml, self._nvml, self._handles = self._nvml, None, {}
            try:
                nvml.nvmlShutdown()
            except nvml.NVMLError:
                pass


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _read_int(path: Path) -> int | None:
    text = _read_text(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None
