"""Sampling a training process from a separate process, so the training pays nothing.

A :class:`Sidecar` is a small process that samples another process's tree (RSS -
shared, CPU, I/O, GPU, via :mod:`frugalml.monitors`) every ``interval_s`` and writes
the latest figures into a shared-memory file of 16 doubles. The sampled process reads
them in a few microseconds when it reports. A sampling *thread* inside the training
process would instead cost 3-6 % of step time at 10 Hz (it holds the GIL while it
reads /proc).

The sidecar is double-forked: it is not a child of the process it samples, so its
own memory (~25 MB) never counts towards that process's tree. It exits when the
sampled process ends, when :meth:`Sidecar.close` is called, or when its file is gone.

This module imports only the standard library at the top: the sidecar starts from
``python -c`` without importing frugalml's package (which pulls in optuna and
pandas), so it is up in ~0.2 s.
"""

from __future__ import annotations

import gc
import math
import mmap
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Slots of the shared file; 0 is the sample counter, NaN means "not measured".
_FIELDS = (
    "seq", "time", "pid", "memory_mb", "peak_memory_mb", "rss_mb", "cpu_s", "read_mb", "write_mb",
    "gpu_util_percent", "gpu_memory_mb", "n_processes",
)
_SLOT = {name: i for i, name in enumerate(_FIELDS)}
_WINDOW = 12  # the reset count when the latest sample was measured: its peak's window
_RESET = 14  # how many times the reader asked for a new peak window
_STOP = 15
_SIZE = 16
_SAMPLED = _FIELDS[3:]  # the metrics a reader gets
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

_LAUNCH = """
import os, sys, types
if os.fork():
    os._exit(0)  # the launcher exits: the sidecar is re-parented, outside the sampled tree
os.setsid()
package = types.ModuleType("frugalml")  # skip frugalml/__init__.py: start fast and small
package.__path__ = [sys.argv[1]]
sys.modules["frugalml"] = package
from frugalml.integrations._sidecar import serve
serve(int(sys.argv[2]), sys.argv[3], float(sys.argv[4]))
"""


def _shared_dir() -> str | None:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


class Sidecar:
    """A process that samples ``pid``'s process tree every ``interval_s`` seconds.

    Args:
        pid: the process to sample (default: this one).
        interval_s: sampling period.

    Example:
        >>> with Sidecar(interval_s=0.1) as sidecar:   # doctest: +SKIP
        ...     sidecar.read()["memory_mb"]
        87.3
    """

    def __init__(self, pid: int | None = None, *, interval_s: float = 0.1) -> None:
        if not (isinstance(interval_s, (int, float)) and 0 < interval_s <= 10):
            raise ValueError(f"`0 < interval_s <= 10` must hold, but got {interval_s=!r}.")
        self.pid = os.getpid() if pid is None else pid
        self.interval_s = float(interval_s)
        self.path: str | None = None
        self._map: mmap.mmap | None = None
        self._values: Any = None

    def start(self, timeout_s: float = 10.0) -> Sidecar:
        """Launch the sidecar and wait for its first sample.

        Raises:
            RuntimeError: it gave no sample within ``timeout_s``.
        """
        fd, self.path = tempfile.mkstemp(prefix="frugalml-sidecar-", dir=_shared_dir())
        os.write(fd, bytes(8 * _SIZE))
        self._map = mmap.mmap(fd, 8 * _SIZE)
        os.close(fd)
        self._values = memoryview(self._map).cast("d")
        root = str(Path(__file__).resolve().parents[1])
        subprocess.run(
            [sys.executable, "-c", _LAUNCH, root, str(self.pid), self.path, repr(self.interval_s)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=30,
        )
        deadline = time.monotonic() + timeout_s
        while self._values[0] == 0:
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"the frugalml sidecar gave no sample within {timeout_s:g} s")
            time.sleep(0.01)
        return self

    @property
    def sidecar_pid(self) -> int | None:
        return int(self._values[_SLOT["pid"]]) if self._values is not None and self._values[0] else None

    def read(self) -> dict[str, float]:
        """The latest sample: ``memory_mb`` (RSS - shared), ``peak_memory_mb`` (since
        :meth:`reset_peak`; absent until a sample is measured after it), ``rss_mb``,
        ``cpu_s``, ``read_mb``/``write_mb``, GPU figures where measured, and ``age_s``
        (seconds since the sample); ``{}`` if closed."""
        values = self._values
        if values is None or values[0] == 0:
            return {}
        current = values[_WINDOW] == values[_RESET]  # read first: later slots are at least as new
        sample = {name: values[_SLOT[name]] for name in _SAMPLED}
        sample = {name: value for name, value in sample.items() if not math.isnan(value)}
        if not current:
            sample.pop("peak_memory_mb", None)  # measured before the latest reset: not this window's peak
        sample["age_s"] = time.monotonic() - values[_SLOT["time"]]
        return sample

    def reset_peak(self) -> None:
        """Start a new window for ``peak_memory_mb``."""
        if self._values is not None:
            self._values[_RESET] += 1

    @property
    def alive(self) -> bool:
        """True while the sidecar keeps sampling (its last sample is recent)."""
        sample = self.read()
        return bool(sample) and sample["age_s"] < max(2.0, 10 * self.interval_s)

    def close(self) -> None:
        """Stop the sidecar and remove its file. Idempotent."""
        if self._values is not None:
            self._values[_STOP] = 1
            self._values.release()
            self._values = None
        if self._map is not None:
            self._map.close()
            self._map = None
        if self.path is not None:
            Path(self.path).unlink(missing_ok=True)
            self.path = None

    def __enter__(self) -> Sidecar:
        return self if self._values is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def serve(pid: int, path: str, interval_s: float) -> None:
    """The sidecar's loop (runs in the sidecar process)."""
    from frugalml.monitors import GpuMonitor, ProcessTreeMonitor

    try:
        tree, gpu = ProcessTreeMonitor(pid), GpuMonitor(pid)
        with open(path, "r+b") as file:
            shared = mmap.mmap(file.fileno(), 8 * _SIZE)
    except Exception:  # noqa: BLE001 - the process or the file is already gone
        return
    values = memoryview(shared).cast("d")
    values[_SLOT["pid"]] = os.getpid()
    reset_seen, peak = values[_RESET], 0.0
    try:
        while values[_STOP] == 0 and os.path.exists(path):
            window = values[_RESET]  # read before measuring: a reset during the sample is not in it
            sample = tree.sample()
            if not sample:  # the sampled process ended
                break
            sample.update(gpu.sample())
            if window != reset_seen:
                reset_seen, peak = window, 0.0
            peak = max(peak, sample["memory_mb"])
            sample["peak_memory_mb"] = peak
            for name in _SAMPLED:
                values[_SLOT[name]] = sample.get(name, math.nan)
            values[_WINDOW] = window
            values[_SLOT["time"]] = time.monotonic()
            values[0] += 1
            time.sleep(interval_s)
    finally:
        gpu.close()
        Path(path).unlink(missing_ok=True)


def _own_sample(between: dict[str, float], base_io: tuple[float | None, float | None]) -> dict[str, float] | None:
    """This process alone, as :class:`frugalml.monitors.ProcessTreeMonitor` reads a one-process
    tree (RSS - shared, CPU with reaped children), with disk I/O since ``base_io`` from the
    sidecar's sample ``between``; None where there is no ``/proc/self/statm``."""
    try:
        with open("/proc/self/statm", "rb") as file:
            fields = file.read().split()
    except OSError:
        return None
    resident, shared = int(fields[1]) * _PAGE, int(fields[2]) * _PAGE
    times = os.times()
    # MB by hand, not frugalml.units: the sidecar imports nothing of frugalml but this module
    sample = {"memory_mb": (resident - shared) / 2**20, "rss_mb": resident / 2**20,
              "cpu_s": times.user + times.system + times.children_user + times.children_system}
    if base_io[0] is not None and base_io[1] is not None and "read_mb" in between and "write_mb" in between:
        sample["read_mb"], sample["write_mb"] = between["read_mb"] - base_io[0], between["write_mb"] - base_io[1]
    return sample


class SystemSampler:
    """System metrics of this process between two reports, for the Ray Tune and Optuna adapters.

    Per report window: ``memory_mb`` (peak RSS - shared of the process tree since the
    previous report: the sidecar's peak, and a fresh read at the report), ``rss_mb``,
    ``cpu_percent`` (100 = one core), ``cpu_s`` and ``wall_s`` (since :meth:`start`),
    ``mean_step_ms``, ``read_mb``/``write_mb`` and GPU figures where measured.
    ``mean_step_ms`` is the mean of the durations marked with :meth:`step` (a clock read
    and an append each), or else the time since the previous report divided by the
    steps reported in between.

    Each report also reads this process itself, so a report is exact even when it comes
    right after an allocation the sidecar has not sampled yet: ~10 µs (``/proc/self/statm``
    and ``times()``; disk I/O then comes from the sidecar's latest sample) while the
    sidecar's latest sample saw no child process, else the whole tree (~0.3-0.5 ms).

    Args:
        interval_s: the sidecar's sampling period.
        sidecar: also sample from a separate process between reports (default); False
            gives the figures at each report only (no peak between reports).
    """

    def __init__(self, *, interval_s: float = 0.1, sidecar: bool = True) -> None:
        self.interval_s = interval_s
        self.use_sidecar = sidecar
        self._sidecar: Sidecar | None = None
        self._monitor: Any = None
        self._durations: list[float] = []
        self._mark = time.perf_counter()

    def start(self, *, collect: bool = True) -> SystemSampler:
        """Start sampling (idempotent) and begin a trial: clocks and counters restart, and
        the sidecar of a previous trial is reused (a new one if it died).

        With ``collect`` (default) it collects garbage first: what earlier trials of this
        process left in reference cycles (a pruned trial's frames live on in its
        exception's traceback until the next collection) would otherwise count towards
        this trial's memory. That costs 0.05-0.4 s with Optuna, scikit-learn and
        SQLAlchemy loaded; pass False when the previous trial returned normally.
        """
        if collect:
            gc.collect()
        if self._monitor is None:
            from frugalml.monitors import ProcessTreeMonitor

            self._monitor = ProcessTreeMonitor(os.getpid())
        if self._sidecar is not None and not self._sidecar.alive:  # a reused sampler whose sidecar died
            self._sidecar.close()
            self._sidecar = None
        if self.use_sidecar and self._sidecar is None:
            self._sidecar = Sidecar(interval_s=self.interval_s).start()
        between = self._sidecar.read() if self._sidecar is not None else {}
        if self._sidecar is not None:
            self._sidecar.reset_peak()
        sample = self._monitor.sample()
        now = time.monotonic()
        self._started = now
        self._base_cpu_s = sample.get("cpu_s", 0.0)
        self._base_io = (sample.get("read_mb", 0.0), sample.get("write_mb", 0.0))
        self._base_io_sidecar = (between.get("read_mb"), between.get("write_mb"))
        self._last = (now, self._base_cpu_s, 0)
        self._durations = []
        self._mark = time.perf_counter()
        return self

    def step(self) -> None:
        """Mark the end of one training step (time since the previous mark or report)."""
        now = time.perf_counter()
        self._durations.append(now - self._mark)
        self._mark = now

    def restart_step_clock(self) -> None:
        """Time from here on is training again: what came since the last mark (storing a
        report, asking the pruner) is not billed to the next step."""
        self._mark = time.perf_counter()

    def window(self, steps: int | None = None) -> dict[str, float]:
        """Metrics since the previous call; ``steps`` is the total steps done so far, if known."""
        now = time.monotonic()
        between: dict[str, float] = {}
        if self._sidecar is not None:
            between = self._sidecar.read()
            self._sidecar.reset_peak()
        sample = _own_sample(between, self._base_io_sidecar) if between.get("n_processes") == 1 else None
        if sample is None:
            sample = self._monitor.sample()
            if "read_mb" in sample and "write_mb" in sample:
                sample["read_mb"] -= self._base_io[0]
                sample["write_mb"] -= self._base_io[1]
        last_time, last_cpu_s, last_steps = self._last
        elapsed = now - last_time
        metrics: dict[str, float] = {"wall_s": now - self._started}
        if "memory_mb" in sample:
            metrics["memory_mb"] = max(sample["memory_mb"], between.get("peak_memory_mb", 0.0))
        for name in ("rss_mb", "gpu_util_percent", "gpu_memory_mb"):
            if name in sample or name in between:
                metrics[name] = sample.get(name, between.get(name))
        if "cpu_s" in sample:
            metrics["cpu_s"] = sample["cpu_s"] - self._base_cpu_s
            if elapsed > 0:
                metrics["cpu_percent"] = 100.0 * (sample["cpu_s"] - last_cpu_s) / elapsed
        if "read_mb" in sample and "write_mb" in sample:
            metrics["read_mb"], metrics["write_mb"] = sample["read_mb"], sample["write_mb"]
        if self._durations:
            metrics["mean_step_ms"] = 1000.0 * sum(self._durations) / len(self._durations)
        elif steps is not None and steps > last_steps and elapsed > 0:
            metrics["mean_step_ms"] = 1000.0 * elapsed / (steps - last_steps)
        self._last = (now, sample.get("cpu_s", last_cpu_s), steps if steps is not None else last_steps)
        self._durations = []
        self._mark = time.perf_counter()
        return metrics

    def close(self) -> None:
        if self._sidecar is not None:
            self._sidecar.close()
            self._sidecar = None
        self._monitor = None
