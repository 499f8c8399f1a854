"""Memory, CPU and I/O of a worker's whole process tree, read from the parent process."""

from __future__ import annotations

import time
from typing import NamedTuple

import psutil

from frugalml.metrics import (CPU_PERCENT, CPU_S, MEMORY_MB, N_PROCESSES, PEAK_RSS_MB, READ_MB, RSS_MB, USS_MB,
                              WRITE_MB)
from frugalml.monitors._base import Monitor
from frugalml.monitors._tree import tree_pids
from frugalml.units import to_mb


class _Totals(NamedTuple):
    memory: int
    rss: int
    cpu_s: float
    read: int | None  # None: the OS did not let us read every process's I/O
    write: int | None
    uss: int | None
    n_processes: int


class ProcessTreeMonitor(Monitor):
    """Samples a process and all its descendants (e.g. data-loader subprocesses).

    :meth:`sample` (~0.1 ms per process) returns ``memory_mb`` (sum of RSS minus
    shared, so file-backed and shmem pages such as a memory-mapped dataset are not
    counted), ``rss_mb``, ``cpu_s`` (CPU seconds of the tree so far, reaped children
    included), ``cpu_percent`` (since the previous sample, 100 = one core; left out when
    less than :attr:`min_cpu_window_s` passed, since CPU times tick every 10 ms),
    ``read_mb``/``write_mb`` (disk bytes since the monitor was created; left out where
    the OS denies I/O counters) and ``n_processes``. :meth:`sample_detailed` (~4 ms per
    process with numpy loaded: the kernel walks every mapping for USS) adds ``uss_mb``
    and, on Linux, ``peak_rss_mb`` (VmHWM of the root process).

    Processes that end while being read are skipped. Once the root process has ended
    (zombie or reaped) or none can be read, both methods return ``{}``; stop sampling
    once you have reaped the root, as its pid may then be reused. ``cpu_s``, ``read_mb`` and
    ``write_mb`` never decrease: a child's totals vanish briefly between its exit and
    its parent reaping it, and are lost if it is orphaned. Where the OS has no
    ``shared`` figure (macOS, Windows), ``memory_mb`` is the RSS.

    Args:
        pid: root of the tree, normally the trial's worker process.

    Raises:
        psutil.NoSuchProcess: if no process has ``pid`` when the monitor is created.

    Example:
        >>> import os
        >>> monitor = ProcessTreeMonitor(os.getpid())
        >>> sorted(monitor.sample_detailed())  # doctest: +SKIP
        ['cpu_percent', 'cpu_s', 'memory_mb', 'n_processes', 'peak_rss_mb', 'read_mb',
         'rss_mb', 'uss_mb', 'write_mb']
    """

    min_cpu_window_s: float = 0.05

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._procs: dict[int, psutil.Process] = {pid: psutil.Process(pid)}
        self._io_supported = hasattr(self._procs[pid], "io_counters")
        totals = self._read(detailed=False)
        now = time.monotonic()
        self._cpu_s = totals.cpu_s if totals else 0.0
        self._cpu_ref = (now, self._cpu_s)
        if totals is None or totals.read is None:
            self._io_supported = False  # no baseline to count from
        self._io_base = (totals.read or 0, totals.write or 0) if totals else (0, 0)
        self._io_mb = (0.0, 0.0)
        self._sampled = totals is not None

    @property
    def pids(self) -> tuple[int, ...]:
        """Pids of the tree's processes read at the latest sample."""
        return tuple(self._procs)

    @property
    def cpu_s(self) -> float | None:
        """CPU-seconds of the tree at the latest sample; None before any."""
        return self._cpu_s if self._sampled else None

    def sample(self) -> dict[str, float]:
        """Return the fast metrics of the tree, or ``{}`` once the root process has ended."""
        return self._sample(detailed=False)

    def sample_detailed(self) -> dict[str, float]:
        """Return :meth:`sample` plus ``uss_mb`` and ``peak_rss_mb`` (costs a few ms)."""
        return self._sample(detailed=True)

    def close(self) -> None:
        self._procs = {}

    def _sample(self, detailed: bool) -> dict[str, float]:
        totals = self._read(detailed)
        if totals is None or not totals.n_processes:
            return {}
        now = time.monotonic()
        self._cpu_s = max(self._cpu_s, totals.cpu_s)
        self._sampled = True
        metrics = {
            MEMORY_MB: to_mb(totals.memory),
            RSS_MB: to_mb(totals.rss),
            CPU_S: self._cpu_s,
            N_PROCESSES: float(totals.n_processes),
        }
        ref_time, ref_cpu_s = self._cpu_ref
        if now - ref_time >= self.min_cpu_window_s:
            metrics[CPU_PERCENT] = 100.0 * (self._cpu_s - ref_cpu_s) / (now - ref_time)
            self._cpu_ref = (now, self._cpu_s)
        if totals.read is not None and totals.write is not None:
            self._io_mb = (
                max(self._io_mb[0], to_mb(totals.read - self._io_base[0])),
                max(self._io_mb[1], to_mb(totals.write - self._io_base[1])),
            )
            metrics[READ_MB], metrics[WRITE_MB] = self._io_mb
        if totals.uss is not None:
            metrics[USS_MB] = to_mb(totals.uss)
        if detailed and (peak := _peak_rss_mb(self.pid)) is not None:
            metrics[PEAK_RSS_MB] = peak
        return metrics

    def _read(self, detailed: bool) -> _Totals | None:
        memory = rss = read = write = uss = n_processes = 0
        cpu_s = 0.0
        io_ok, uss_ok = self._io_supported, detailed
        procs: dict[int, psutil.Process] = {}
        for pid in tree_pids(self.pid):
            proc = self._procs.get(pid)
            try:
                if proc is None:
                    proc = psutil.Process(pid)
                with proc.oneshot():
                    if pid == self.pid and proc.status() == psutil.STATUS_ZOMBIE:
                        return None
                    mem, cpu = proc.memory_info(), proc.cpu_times()
                    io = proc_uss = None
                    if io_ok:
                        try:
                            io = proc.io_counters()
                        except psutil.AccessDenied:
                            io_ok = False
                    if uss_ok:
                        try:
                            proc_uss = proc.memory_full_info().uss
                        except psutil.AccessDenied:
                            uss_ok = False
            except psutil.NoSuchProcess:  # also ZombieProcess
                if pid == self.pid:
                    return None
                continue
            except psutil.AccessDenied:
                continue
            procs[pid] = proc
            n_processes += 1
            memory += private_bytes(mem)
            rss += mem.rss
            # Reaped children's CPU is in children_*; these fields are absent on macOS.
            cpu_s += cpu.user + cpu.system
            cpu_s += getattr(cpu, "children_user", 0.0) + getattr(cpu, "children_system", 0.0)
            if io is not None:
                read += _io_field(io, "read")
                write += _io_field(io, "write")
            if proc_uss is not None:
                uss += proc_uss
        self._procs = procs
        return _Totals(
            memory=memory,
            rss=rss,
            cpu_s=cpu_s,
            read=read if io_ok else None,
            write=write if io_ok else None,
            uss=uss if uss_ok and n_processes else None,
            n_processes=n_processes,
        )


def private_bytes(mem: object) -> int:
    """RSS minus shared pages (file-backed, shmem) of one ``memory_info()``: the memory figure."""
    return mem.rss - getattr(mem, "shared", 0)


def _io_field(io: object, direction: str) -> int:
    """Disk bytes where the OS gives them, else bytes passed to read()/write() calls."""
    value = getattr(io, f"{direction}_bytes", None)
    return value if value is not None else getattr(io, f"{direction}_chars", 0)


def _peak_rss_mb(pid: int) -> float | None:
    """VmHWM (peak RSS) of ``pid`` from /proc; None where the OS has no such file."""
    try:
        with open(f"/proc/{pid}/status", "rb") as file:
            for line in file:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB -> MB
    except (OSError, ValueError, IndexError):
        pass
    return None
