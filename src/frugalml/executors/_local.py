"""Local executor: trials in parallel worker processes, watched from the parent.

Each trial runs in a fresh process forked from a forkserver that has numpy and what
the study's workers import preloaded (fast start, no threads inherited). The parent samples each
worker's process tree on a cadence and applies stopping rules to the samples and
to every evaluation window; a trial that must stop is killed with its whole tree
at once, so a budget is enforced even in the middle of one long step.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

import psutil

from frugalml.executors._base import Executor, ExecutorSettings, StudyState
from frugalml.executors._gpu import warn_if_gpu_budget_unmeasurable, why_no_gpu_here
from frugalml.executors._lifecycle import TrialLifecycle
from frugalml.executors._task import TrialTask
from frugalml.executors._worker import BLAS_MODULE, WARM_MODULE, run_worker
from frugalml.exceptions import ConfigError
from frugalml.monitors import (
    EnergyMonitor, GpuMonitor, ProcessTreeMonitor, default_watts_per_core, tree_monitors, visible_gpus,
)
from frugalml.processes import ORPHAN_GUARD_MODULE, PRELOAD_MODULE, use_forkserver
from frugalml.messages import Message, WindowEnd
from frugalml.metrics import CPU_S, ENERGY_J
from frugalml.records import StopInfo, TrialRecord
from frugalml.stopping import TrialView
from frugalml.trial import PROGRESS_MARK, PROGRESS_SIZE

# what every worker needs; a study adds what its own workers import (preload): scikit-learn for the
# built-in workloads, a user's frameworks for theirs. A library preloaded and never used is paid
# anyway, in CPU and in each worker's memory: inherited heap counts in RSS - shared (scikit-learn
# and pandas: ~94 MB in a fresh process, a trial measured ~60 MB more with them)
BASE_PRELOAD = (ORPHAN_GUARD_MODULE, BLAS_MODULE, "numpy", "threadpoolctl", "frugalml.executors._worker")
PRELOAD = list(BASE_PRELOAD)  # what the next forkserver imports: the base and what the study's workers need
DETAILED_SAMPLE_EVERY_S = 2.0  # USS costs ~4 ms per process: keep it off the fast cadence
# USS walks every mapped page: 10-40 CPU-ms for a worker that mapped a few hundred MB (a memory-mapped
# dataset), more on a busy machine; so a detailed sample also waits 200x its own CPU time (0.5% of a core)
DETAILED_MAX_SHARE = 0.005
REAP_WAIT_S = 1.0  # a SIGKILLed tree is reaped in ~25 ms; the watchdog never waits longer than this



def preload(*modules: str) -> None:
    """Have the forkserver import ``modules`` too, so that each worker does not (torch takes
    2-5 s a worker). One that fails to import there is left to the workers. A forkserver that
    imported something else is replaced when the next worker starts."""
    PRELOAD.extend(m for m in modules if m not in PRELOAD)


def reset_preload() -> None:
    """Back to the base set, for a new study to add what its workers need: a worker's memory
    (RSS - shared) counts what it inherited, so an earlier study's torch must not stay."""
    PRELOAD[:] = BASE_PRELOAD


def check_local_resources(cpus: int, gpus: float, pin: bool) -> None:
    """A one-line ConfigError where a trial's ``cpus`` cannot be pinned, or its ``gpus`` had, on this machine."""
    if pin and hasattr(os, "sched_getaffinity") and cpus > (cores := len(os.sched_getaffinity(0))):
        raise ConfigError(f"execution 'cpus_per_trial' = {cpus} but this machine gives {cores} cores to pin; "
                          f"use at most {cores}, or the Ray backend on a bigger cluster.")
    if gpus > 0 and math.ceil(gpus) > (n := len(visible_gpus())):
        raise _too_few_gpus(gpus, n)


def _too_few_gpus(gpus: float, visible: int) -> ConfigError:
    return ConfigError(f"gpus_per_trial = {gpus:g} but {visible} NVIDIA GPU(s) are visible here; "
                       "set [execution] gpus_per_trial = 0, or run on a machine (or Ray cluster) with GPUs.")


def worker_context() -> multiprocessing.context.BaseContext:
    """A forkserver context with :data:`PRELOAD` imported (spawn where fork is unavailable)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    # the base as modules; the rest through PRELOAD_MODULE, which survives one that raises; WARM_MODULE last.
    # Between studies, one made for another preload is stopped: its workers are gone
    return use_forkserver([*BASE_PRELOAD, PRELOAD_MODULE, WARM_MODULE], [m for m in PRELOAD if m not in BASE_PRELOAD])


@contextlib.contextmanager
def _ctrl_c_deferred():
    """Hold a Ctrl-C until the block ends, then raise it.

    A KeyboardInterrupt between connecting to the forkserver and handing it the
    new process's fds kills the forkserver with a traceback, and one between
    starting a worker and registering it would leave that worker unwatched.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received and callable(previous):
        previous(signal.SIGINT, None)  # the default handler raises KeyboardInterrupt


def kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants."""
    try:
        root = psutil.Process(pid)
        processes = root.children(recursive=True) + [root]
    except psutil.NoSuchProcess:
        return
    for process in processes:
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "worker did not exit"
    if exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = {
            "SIGKILL": " (the kernel's OOM killer sends SIGKILL when memory runs out)",
            "SIGSEGV": " (segmentation fault in native code)",
        }.get(name, "")
        return f"worker killed by {name}{hint}"
    return (
        f"worker exited with code {exitcode} without reporting (if your script calls frugalml.tune at "
        "module level, put that call under `if __name__ == '__main__':`)"
    )


@dataclass
class _Running:
    """A worker's handles, its monitors and its trial's :class:`TrialLifecycle`."""

    trial: TrialLifecycle
    process: Any
    connection: Connection
    slot: int
    monitor: ProcessTreeMonitor | None = None
    gpu: GpuMonitor | None = None
    energy: EnergyMonitor | None = None
    detailed_due: float = 0.0  # monotonic time of the next detailed sample
    closed: bool = False  # the worker closed its end: only its sentinel is waited on


class LocalExecutor(Executor):
    """Runs trials in up to ``workers`` processes and enforces stopping rules on them.

    Args:
        settings: an :class:`ExecutorSettings`, or the number of workers with its
            fields as keywords (``LocalExecutor(2, rules=[MemoryBudget(400)])``).
        state: the study's finished trials, as rules read them.

    With ``gpus_per_trial``, worker slot *i* gets the next ``ceil(gpus)`` visible
    devices, round-robin, as its ``CUDA_VISIBLE_DEVICES``; a fraction shares a
    device between slots.
    """

    def __init__(self, settings: ExecutorSettings | int = 1, state: StudyState | None = None, **options: Any) -> None:
        super().__init__(ExecutorSettings.coerce(settings, options), state)
        settings = self.settings
        self.rules = list(settings.rules)
        self.sample_interval_s = settings.sample_interval_s
        self.pin = settings.pin
        self.hang_timeout_s = settings.hang_timeout_s
        self.gpus_per_trial = settings.gpus_per_trial
        self._running: dict[str, _Running] = {}
        self._last_sample = 0.0
        self._visible_gpus: list[str] | None = None
        self._gpu_devices(0, self.gpus_per_trial)  # fail now, before any trial, when none can be had
        warn_if_gpu_budget_unmeasurable(self.rules, why_no_gpu_here)
        self._watts_per_core = default_watts_per_core()  # a bad FRUGALML_WATTS_PER_CORE fails now, not mid-start

    def _gpu_devices(self, slot: int, gpus: float) -> str | None:
        """The ``CUDA_VISIBLE_DEVICES`` of worker ``slot`` for a trial wanting ``gpus``."""
        if gpus <= 0:
            return None
        if self._visible_gpus is None:
            self._visible_gpus = visible_gpus()
        visible, per_trial = self._visible_gpus, math.ceil(gpus)
        if per_trial > len(visible):
            raise _too_few_gpus(gpus, len(visible))
        return ",".join(visible[(slot * per_trial + i) % len(visible)] for i in range(per_trial))

    @property
    def running(self) -> list[TrialTask]:
        return [r.trial.task for r in self._running.values()]

    def running_cpu_s(self) -> float:
        return self.running_used(CPU_S)

    def running_used(self, metric: str) -> float:
        return sum(r.trial.sample.get(metric, 0.0) for r in self._running.values())

    def running_steps(self) -> dict[str, int]:
        """Steps done so far by each running trial, by trial id (read from shared memory)."""
        return {trial_id: r.trial.steps_done for trial_id, r in self._running.items()}

    def submit(self, task: TrialTask) -> None:
        """Start ``task`` in a new worker process."""
        self._check_slot()
        with _ctrl_c_deferred():
            self._start(task)

    def _start(self, task: TrialTask) -> None:
        check_local_resources(task.cpus, 0, self.pin)
        context = worker_context()
        used = {r.slot for r in self._running.values()}
        slot = min(set(range(self.workers)) - used)
        progress = context.RawArray("d", PROGRESS_SIZE)
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(
            target=run_worker,
            args=(task, sender, progress, slot if self.pin else None,
                  self._gpu_devices(slot, task.gpus or self.gpus_per_trial), dict(os.environ)),
            name=f"frugalml-trial-{task.number}", daemon=True,
        )
        process.start()
        sender.close()
        running = _Running(TrialLifecycle(task, progress), process, receiver, slot)
        try:
            running.monitor, running.gpu, running.energy = tree_monitors(
                process.pid, watts_per_core=self._watts_per_core)
        except psutil.NoSuchProcess:
            pass
        self._running[task.trial_id] = running

    def poll(self, timeout: float | None = None) -> list[TrialRecord]:
        """Wait up to ``timeout`` seconds for events; return trials that ended."""
        deadline = time.monotonic() + (self.sample_interval_s if timeout is None else timeout)
        finished: list[TrialRecord] = []
        while True:
            now = time.monotonic()
            wait_s = max(0.0, min(deadline, self._last_sample + self.sample_interval_s) - now)
            # a worker's pipe is at EOF from its last message until it has exited: waiting on it then spins
            objects = [r.connection for r in self._running.values() if not r.closed] + [
                r.process.sentinel for r in self._running.values()
            ]
            ready = set(wait(objects, wait_s)) if objects else (time.sleep(wait_s) or set())
            for running in list(self._running.values()):
                if running.connection in ready:
                    self._drain(running)
                if running.process.sentinel in ready and running.trial.stop is None:
                    self._drain(running)
                    finished.append(self._finish(running))
            if time.monotonic() - self._last_sample >= self.sample_interval_s:
                self._last_sample = time.monotonic()
                for running in list(self._running.values()):
                    self._watch(running)
            for running in list(self._running.values()):
                if running.trial.stop is not None or running.trial.failure is not None:
                    finished.append(self._finish(running))
            if finished or time.monotonic() >= deadline:
                return finished

    def shutdown(self) -> None:
        """Kill every running worker (used on Ctrl-C); their trials are not recorded."""
        for running in self._running.values():
            kill_tree(running.process.pid)
        for running in self._running.values():
            running.process.join(5)
        self._running.clear()

    # -- inside the loop ---------------------------------------------------------------

    def _drain(self, running: _Running) -> None:
        try:
            while running.connection.poll():
                self._handle(running, running.connection.recv())
        except (EOFError, OSError):
            running.closed = True

    def _handle(self, running: _Running, message: Message) -> None:
        trial = running.trial
        if isinstance(message, WindowEnd):
            now = time.monotonic()
            self._sample(running, now)
            if now >= running.detailed_due and running.monitor is not None:
                cost_s = time.thread_time()
                try:
                    trial.observe_detailed(running.monitor.sample_detailed())
                except psutil.Error:
                    pass
                cost_s = time.thread_time() - cost_s
                running.detailed_due = now + max(DETAILED_SAMPLE_EVERY_S, cost_s / DETAILED_MAX_SHARE)
            trial.receive(message, now)
            if not trial.ended:
                self._check(running, time.monotonic())
        else:
            trial.receive(message)

    def _sample(self, running: _Running, taken: float) -> None:
        """Sample the trial's process tree (``taken``: ``time.monotonic()``, read just before)."""
        if running.monitor is None:
            return
        try:
            sample = running.monitor.sample()
            if running.gpu is not None:
                sample.update(running.gpu.sample())
            if running.energy is not None and sample:  # {}: the tree is gone, keep the last sample
                sample.update(running.energy.sample())
        except psutil.Error:
            return
        running.trial.observe(sample, at=taken)

    def _watch(self, running: _Running) -> None:
        trial = running.trial
        if trial.ended or not running.process.is_alive():
            return
        now = time.monotonic()
        self._sample(running, now)
        self._check(running, now, sample_only=True)
        if trial.stop is None and self.hang_timeout_s is not None:
            idle = now - max(trial.progress[PROGRESS_MARK], trial.started)
            if idle > self.hang_timeout_s:
                trial.failure = f"hung: no step for {idle:.0f} s (hang_timeout_s={self.hang_timeout_s:g})"
                kill_tree(running.process.pid)

    def _view(self, running: _Running, now: float, at_boundary: bool = False) -> TrialView:
        used = {CPU_S: self.running_cpu_s(), ENERGY_J: self.running_used(ENERGY_J)}
        return running.trial.view(now, self.state, used, at_boundary=at_boundary)

    def _check(self, running: _Running, sampled_at: float, sample_only: bool = False) -> None:
        trial = running.trial
        stop = trial.check(self.rules, self._view(running, sampled_at), sample_only=sample_only)
        if stop is None:
            return
        kill_tree(running.process.pid)
        running.process.join(REAP_WAIT_S)
        latency_ms = (time.monotonic() - sampled_at) * 1000.0
        trial.stop = StopInfo(**{**stop.__dict__, "latency_ms": latency_ms})

    # -- the end of a trial -----------------------------------------------------------

    def _finish(self, running: _Running) -> TrialRecord:
        running.process.join(10)
        self._drain(running)
        trial = running.trial
        trial.check_finished(self.rules, self._view(running, time.monotonic(), at_boundary=True))
        del self._running[trial.task.trial_id]
        running.connection.close()
        info: dict[str, Any] = {}
        if running.energy is not None:
            if ENERGY_J in trial.sample:
                info.update(energy_j=running.energy.final_j(trial.cpu_s), **running.energy.labels())
            running.energy.close()
        return trial.record(peers=self.state.peers(trial.task.workload), rules=self.rules, info=info,
                            no_outcome=describe_exit(running.process.exitcode))
