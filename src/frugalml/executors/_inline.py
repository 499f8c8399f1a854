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

import math
import time
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping

from frugalml.accounting import FIRST_STEP_CPU_S
from frugalml.exceptions import FrugalError
from frugalml.executors._base import Executor, ExecutorSettings, StudyState
from frugalml.executors._gpu import gpu_memory_limit, gpu_oom_stop, gpu_out_of_memory, peak_gpu_memory_mb
from frugalml.executors._task import TrialTask, resolve_train_function, trial_record
from frugalml.monitors._energy import POWERCAP, EnergyMonitor, default_watts_per_core, energy_estimate_warning
from frugalml.records import StopInfo, TrialRecord, TrialStatus, Window
from frugalml.stopping import TrialView, check_all
from frugalml.trial import Trial, TrialStopped
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
        trial = Trial(task.params, eval_every=task.eval_every, send=run.receive, steps_planned=task.steps_planned,
                      artifact_dir=task.artifact_dir)
        run.trial = trial
        status, error, info = TrialStatus.COMPLETED, None, {}
        try:
            resolve_train_function(task.train)(trial, **task.train_kwargs)
            trial._finish()
        except TrialStopped:
            status = TrialStatus.STOPPED
        except Exception as exc:  # noqa: BLE001 - a failing trial is recorded, the study goes on
            if (oom := gpu_out_of_memory(exc)) is not None:  # out of GPU memory: a budget stop, not a crash
                status = TrialStatus.STOPPED
                peak_mb = peak_gpu_memory_mb(w.values for w in run.windows)  # what the function reported
                limit_mb = gpu_memory_limit(self.settings.rules)
                run.stop = gpu_oom_stop(oom, step=trial.steps, peak_mb=peak_mb, limit_mb=limit_mb)
                run.stop_phase = trial.phase
            else:
                status, error = TrialStatus.FAILED, f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
                info["user_error"] = isinstance(exc, FrugalError)
        if run.stop is not None:  # a training function that swallowed the stop still stopped
            status, error = TrialStatus.STOPPED, None
            info["stop_phase"] = run.stop_phase
        info.update(energy_j=run.energy.sample()["energy_j"], **run.energy.labels())
        return trial_record(
            run.task, status, self.state.peers(task.workload), steps_done=trial.steps, wall_s=time.monotonic() - run.started,
            cpu_s=self.cpu_clock() - run.cpu_start, stop=run.stop, error=error, train_loss=tuple(run.losses),
            windows=run.windows, info={**run.info, **info},
        )


class _InlineRun:
    """One trial's messages turned into windows, checked against the rules as they arrive."""

    def __init__(self, executor: InProcessExecutor, task: TrialTask) -> None:
        self.executor, self.task = executor, task
        self.trial: Trial | None = None
        self.windows: tuple[Window, ...] = ()
        self.losses: list[float] = []
        self.info: dict[str, Any] = {}
        self.stop: StopInfo | None = None
        self.stop_phase: str | None = None
        self.started = time.monotonic()
        self.cpu_start = executor.cpu_clock()
        self.energy = EnergyMonitor(executor.cpu_clock, watts_per_core=executor.watts_per_core,
                                    powercap_root=executor.powercap_root)

    def receive(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "info":
            self.info.update(message["info"])
            return
        if kind == "plan":
            self.task = replace(self.task, steps_planned=int(message["steps"]))
            return
        if kind == "first_step":
            self.info[FIRST_STEP_CPU_S] = self.executor.cpu_clock() - self.cpu_start
            return
        if kind == "metrics" and self.windows:
            last = self.windows[-1]
            reported = {k: v for k, v in message["metrics"].items()
                        if k not in ("energy_j", "cpu_s")}  # the monitor's stay
            self.windows = (*self.windows[:-1], Window(last.step, {**last.values, **reported}))
        elif kind == "window":
            train_s = message["train_s"]
            values = {
                "train_loss": message["train_loss"], **message["metrics"],
                "mean_step_ms": train_s / message["n_steps"] * 1000.0,
                "throughput_sps": message["samples"] / train_s if train_s > 0 else math.nan,
                "wall_s": message["wall_s"],
            }
            values["energy_j"] = self.energy.sample()["energy_j"]  # the monitor's, as in the process executors
            if not message.get("after_loop"):  # a step boundary, read after the window's evaluation
                values["cpu_s"] = self.executor.cpu_clock() - self.cpu_start
            self.windows = (*self.windows, Window(message["step"], values))
            self.losses.extend(message["losses"])
        else:
            return
        self._check()

    def _check(self) -> None:
        executor, task = self.executor, self.task
        view = TrialView(
            trial_id=task.trial_id, workload=task.workload, params=task.params, eval_every=task.eval_every,
            steps_done=self.trial.steps if self.trial else 0, wall_s=time.monotonic() - self.started,
            cpu_s=executor.cpu_clock() - self.cpu_start, windows=self.windows, sample=self.windows[-1].values,
            peers=executor.state.peers(task.workload),
            study_cpu_s=executor.state.finished_cpu_s + executor.cpu_clock() - self.cpu_start,
            study_energy_j=executor.state.finished_energy_j + self.windows[-1].values["energy_j"],
            steps_planned=task.steps_planned,
        )
        stop = check_all(executor.settings.rules, view)
        if stop is not None:
            self.stop = stop
            self.stop_phase = self.trial.phase if self.trial else "train"
            raise TrialStopped(stop.message)
