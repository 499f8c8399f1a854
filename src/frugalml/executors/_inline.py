"""In-process executor: trials run one after another in the calling process.

For tests and debugging (like Optuna's ``n_jobs=1``): no worker process, no OS
sampling, no watchdog. Rules are checked at the end of every window against that
window's metrics and the trial's joules so far (RAPL, else CPU-seconds × a stated power
per core, as in the process executors), which double as the trial's latest "sample", so a training
function that reports its own system figures (``trial.report(memory_mb=...)``)
is held to budgets on them. A rule that fires ends training by raising inside the
trial's ``step``/``report`` call. The tuner's scheduling, resume, repeats, skipping
and compute accounting run against it exactly as against the process executors.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping

from frugalml.executors._base import Executor, ExecutorSettings, StudyState
from frugalml.executors._lifecycle import TrialLifecycle, failed
from frugalml.executors._task import TrialTask, resolve_train_function
from frugalml.messages import Done, FirstStep, Message, Metrics, WindowEnd
from frugalml.metrics import CPU_S, ENERGY_J
from frugalml.monitors import POWERCAP, EnergyMonitor, default_watts_per_core, energy_estimate_warning
from frugalml.records import TrialRecord
from frugalml.trial import PROGRESS_SIZE, Trial, TrialStopped
from frugalml.validation import positive


class InProcessExecutor(Executor):
    """Runs submitted trials in this process, one per :meth:`poll`, in submission order.

    Args:
        settings: an :class:`ExecutorSettings` (or ``workers`` and its fields as keywords);
            ``workers`` trials can be submitted at once, they run one after another.
        state: the study's finished trials, as rules read them.
        cpu_clock: the clock a trial's CPU-seconds are read from (default
            ``time.process_time``); injectable so tests can charge exact costs.
        watts_per_core: the energy estimate's power per busy core (default
            :func:`~frugalml.monitors.default_watts_per_core`).
        powercap_root: where the RAPL zones are (a test passes a folder without them).
    """

    def __init__(self, settings: ExecutorSettings | int = 1, state: StudyState | None = None, *,
                 cpu_clock: Callable[[], float] = time.process_time, watts_per_core: float | None = None,
                 powercap_root: str | Path = POWERCAP, **options: Any) -> None:
        super().__init__(ExecutorSettings.coerce(settings, options), state)
        self.cpu_clock = cpu_clock
        self.watts_per_core = (default_watts_per_core() if watts_per_core is None
                               else positive("InProcessExecutor", "watts_per_core", watts_per_core))
        self.powercap_root = powercap_root
        self._queue: deque[TrialTask] = deque()

    @property
    def running(self) -> list[TrialTask]:
        return list(self._queue)

    def submit(self, task: TrialTask) -> None:
        self._check_slot()
        self._queue.append(task)

    def poll(self, timeout: float | None = None) -> list[TrialRecord]:
        return [self._run(self._queue.popleft())] if self._queue else []

    def running_cpu_s(self) -> float:
        return 0.0  # between polls nothing runs

    def energy_estimate_warning(self, budget: Mapping[str, Any]) -> str | None:
        return energy_estimate_warning(budget, self.powercap_root, self.watts_per_core)

    def shutdown(self) -> None:
        self._queue.clear()

    def _run(self, task: TrialTask) -> TrialRecord:
        run = _InlineRun(self, task)
        trial = Trial(task.params, eval_every=task.eval_every, send=run.receive, progress=run.lifecycle.progress,
                      steps_planned=task.steps_planned, artifact_dir=task.artifact_dir)
        try:
            resolve_train_function(task.train)(trial, **task.train_kwargs)
            trial._finish()
            run.lifecycle.receive(Done(steps=trial.steps, cpu_s=run.cpu_s()))
        except TrialStopped:
            pass  # the lifecycle holds the stop
        except Exception as error:  # noqa: BLE001 - a failing trial is recorded, the study goes on
            run.lifecycle.receive(failed(error, cpu_s=run.cpu_s()))
        run.lifecycle.observe(run.measure())
        used = {CPU_S: run.cpu_s(), ENERGY_J: run.lifecycle.sample[ENERGY_J]}
        run.lifecycle.check_finished(self.settings.rules,
                                     run.lifecycle.view(time.monotonic(), self.state, used, at_boundary=True))
        energy = {ENERGY_J: run.lifecycle.sample[ENERGY_J], **run.energy.labels()}
        return run.lifecycle.record(peers=self.state.peers(task.workload), rules=self.settings.rules, info=energy)


class _InlineRun:
    """One trial's messages, stamped and measured as a worker and its watchdog would, fed to
    its lifecycle and checked against the rules as they arrive."""

    def __init__(self, executor: InProcessExecutor, task: TrialTask) -> None:
        self.executor = executor
        self.lifecycle = TrialLifecycle(task, [0.0] * PROGRESS_SIZE)
        self.cpu_start = executor.cpu_clock()
        self.energy = EnergyMonitor(executor.cpu_clock, watts_per_core=executor.watts_per_core,
                                    powercap_root=executor.powercap_root)

    def cpu_s(self) -> float:
        return self.executor.cpu_clock() - self.cpu_start

    def measure(self) -> dict[str, float]:
        """This trial's sample: its CPU-seconds and joules so far (no process tree to sample)."""
        return {CPU_S: self.cpu_s(), ENERGY_J: self.energy.sample()[ENERGY_J]}

    def receive(self, message: Message) -> None:
        lifecycle = self.lifecycle
        if isinstance(message, FirstStep):
            message = FirstStep(cpu_s=self.cpu_s())
        elif isinstance(message, (WindowEnd, Metrics)):  # rules will read this moment's figures
            lifecycle.observe(self.measure())
            if isinstance(message, WindowEnd):  # a step boundary, read after the window's evaluation
                message = replace(message, cpu_s=lifecycle.sample[CPU_S])
        lifecycle.receive(message)
        if isinstance(message, (WindowEnd, Metrics)) and lifecycle.windows:
            self._check()

    def _check(self) -> None:
        executor, lifecycle = self.executor, self.lifecycle
        # in-process, the latest window's figures (with what the function reported of its own
        # memory, say) are the trial's latest sample
        sample = lifecycle.windows[-1].values
        used = {CPU_S: self.cpu_s(), ENERGY_J: lifecycle.sample[ENERGY_J]}
        view = lifecycle.view(time.monotonic(), executor.state, used, sample=sample, at_boundary=True)
        stop = lifecycle.check(executor.settings.rules, view)
        if stop is not None:
            raise TrialStopped(stop.message)
