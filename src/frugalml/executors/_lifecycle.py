"""One trial's lifecycle: its messages and samples in, its view and record out.

Every executor feeds a :class:`TrialLifecycle` (the local one from a worker's pipe and a
watchdog's samples, the in-process one from the trial's own calls and its CPU clock, Ray's
through the local executor on each node), so a window's figures, the snapshot rules read
and the final record are made here and nowhere else:

- :meth:`TrialLifecycle.observe` takes a system sample (memory, CPU-seconds, joules, ...);
- :meth:`TrialLifecycle.receive` takes a :mod:`frugalml.messages` message;
- :meth:`TrialLifecycle.view` is the :class:`~frugalml.stopping.TrialView` rules read;
- :meth:`TrialLifecycle.record` classifies the outcome (completed, stopped, failed; a GPU
  out-of-memory error is a budget stop) and makes the :class:`~frugalml.records.TrialRecord`.

A stopped trial's record also carries the readings :mod:`frugalml.accounting` splits its
per-step cost with (``info["step_readings"]``): each window's evaluation share of its CPU-seconds
(by wall time), the latest CPU reading taken between training steps after the last boundary,
and what an evaluation the stop interrupted had already cost. They are gathered here, from the
messages, the samples and the progress slots, and worked out there.

Example:
    >>> from frugalml.messages import Done, WindowEnd
    >>> task = TrialTask("t1", 0, "w", "c", 0, {}, "m:f", eval_every=2)
    >>> trial = TrialLifecycle(task, progress=[2.0, 0.0, 0.0, 0.0, 0.0], started=0.0)
    >>> trial.observe({"cpu_s": 0.5, "memory_mb": 40.0})
    >>> trial.receive(WindowEnd(step=2, n_steps=2, train_s=0.2, samples=8, losses=[0.7, 0.5], train_loss=0.6,
    ...                         metrics={"val_loss": 0.65}, cpu_s=0.5), now=1.0)
    >>> trial.receive(Done(steps=2, cpu_s=0.6), now=1.0)
    >>> record = trial.record(now=1.0)
    >>> record.status.value, record.cpu_s, record.windows[0].values["memory_mb"]
    ('completed', 0.6, 40.0)
"""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import replace
from typing import Any, Iterable, Mapping, Sequence

from frugalml.accounting import FIRST_STEP_CPU_S, STEP_READINGS
from frugalml.budgets import TRIAL, budget_of_rule
from frugalml.exceptions import FrugalError, one_line
from frugalml.executors._base import StudyState
from frugalml.executors._gpu import gpu_memory_limit, gpu_oom_stop, gpu_out_of_memory, peak_gpu_memory_mb
from frugalml.executors._task import TrialTask, trial_record
from frugalml.messages import Done, Failed, FirstStep, Info, Message, Metrics, Outcome, Plan, WindowEnd
from frugalml.metrics import (CPU_PERCENT, CPU_S, ENERGY_J, GPU_MEMORY_MB, GPU_UTIL_PERCENT, MEAN_STEP_MS, MEMORY_MB,
                              PEAK_RSS_MB, READ_MB, THROUGHPUT_SPS, TRAIN_LOSS, USS_MB, WALL_S, WRITE_MB)
from frugalml.records import StopInfo, TrialRecord, TrialStatus, Window
from frugalml.stopping import SYSTEM, StoppingRule, TrialView, check_all
from frugalml.trial import (
    PHASE_TRAIN, PROGRESS_EVALUATING, PROGRESS_MARK, PROGRESS_PHASE, PROGRESS_STEPS, PROGRESS_WINDOW_S, phase_name,
)

SAMPLED = (READ_MB, WRITE_MB, GPU_UTIL_PERCENT, GPU_MEMORY_MB, ENERGY_J)  # a window takes them from the sample
DETAILED = (USS_MB, PEAK_RSS_MB)  # from the slower, detailed sample
MEASURED = (CPU_S, ENERGY_J)  # a window's measured figures: a later report does not replace them


def _times_the_trial(rule: StoppingRule) -> bool:
    budget = budget_of_rule(rule.name)
    return budget is not None and budget.scope == TRIAL


def failed(error: BaseException, cpu_s: float) -> Failed:
    """The last message of a trial whose training function raised ``error`` (call it in the
    ``except`` block, where the traceback is). A GPU out-of-memory error is recognised here,
    where the exception is: the parent sees one line of it."""
    return Failed(
        error=one_line(error, typed=True),
        traceback=traceback.format_exc(),
        user_error=isinstance(error, FrugalError),
        cpu_s=cpu_s,
        oom=gpu_out_of_memory(error),
    )


class TrialLifecycle:
    """One running trial: what its messages and samples said so far.

    Args:
        task: the trial's task (its ``steps_planned`` follows a :class:`~frugalml.messages.Plan`).
        progress: the trial's shared progress slots (see :mod:`frugalml.trial`).
        started: ``time.monotonic()`` when the trial started (default: now).
    """

    def __init__(self, task: TrialTask, progress: Sequence[float], started: float | None = None) -> None:
        self.task = task
        self.progress = progress
        self.started = time.monotonic() if started is None else started
        self.windows: tuple[Window, ...] = ()  # a tuple: each view shares it, no copy
        self.train_loss: list[float] = []
        self.info: dict[str, Any] = {}
        self.sample: Mapping[str, float] = {}
        self.detailed: Mapping[str, float] = {}
        self.outcome: Outcome | None = None
        self.stop: StopInfo | None = None
        self.stop_phase: str | None = None
        self.failure: str | None = None  # why the executor ended it (hung, its Ray task died)
        self._memory: list[tuple[float, float]] = []  # (when, memory_mb): the samples since the last window
        self._last_window_cpu_s = 0.0
        self._last_window_at = self.started
        self._pending_metrics: dict[str, float] = {}
        self._readings = _StepReadings()

    # -- in ----------------------------------------------------------------------------

    def observe(self, sample: Mapping[str, float], at: float | None = None) -> None:
        """Take a system sample taken at ``at`` (``time.monotonic()``, default: now); ``{}`` (the
        process tree is gone) keeps the last one."""
        if sample:
            self.sample = sample
            if MEMORY_MB in sample:
                self._memory.append((time.monotonic() if at is None else at, sample[MEMORY_MB]))
            if CPU_S in sample:
                self._readings.between_steps(sample[CPU_S], self.progress, self._window_step, self.task.eval_every)

    def observe_detailed(self, detailed: Mapping[str, float]) -> None:
        """Take a detailed sample (``uss_mb``, ``peak_rss_mb``: a few ms each, so rarer)."""
        self.detailed = detailed

    def receive(self, message: Message, now: float | None = None) -> None:
        """Take one message of the trial; ``now`` is when it arrived (a window's CPU share)."""
        if isinstance(message, WindowEnd):
            self._add_window(message, time.monotonic() if now is None else now)
        elif isinstance(message, Metrics):
            if self.windows:  # a second report: it joins the latest window, whose measured figures stay
                last = self.windows[-1]
                measured = {name: last.values[name] for name in MEASURED if name in last.values}
                self.windows = (*self.windows[:-1], Window(last.step, {**last.values, **message.metrics, **measured}))
            else:  # reported before any window: it joins the first
                self._pending_metrics.update(message.metrics)
        elif isinstance(message, Info):
            self.info.update(message.info)
        elif isinstance(message, FirstStep):
            if message.cpu_s is not None:
                self.info[FIRST_STEP_CPU_S] = message.cpu_s
                self._readings.first_step(message.cpu_s, self.progress, time.monotonic() if now is None else now)
        elif isinstance(message, Plan):
            self.task = replace(self.task, steps_planned=int(message.steps))
        elif isinstance(message, (Done, Failed)):
            self.outcome = message

    def _add_window(self, message: WindowEnd, now: float) -> None:
        sample = self.sample
        train_s = message.train_s
        cpu_s = sample.get(CPU_S, self._last_window_cpu_s)
        elapsed = now - self._last_window_at
        values: dict[str, float] = {
            TRAIN_LOSS: message.train_loss,
            **self._pending_metrics,
            **message.metrics,
            MEAN_STEP_MS: train_s / message.n_steps * 1000.0,
            THROUGHPUT_SPS: message.samples / train_s if train_s > 0 else float("nan"),
            WALL_S: message.wall_s,
        }
        if message.cpu_s is not None and not message.after_loop:
            values[CPU_S] = message.cpu_s  # read by the sender at the boundary (accounting)
            self._readings.window(message, now)
        if elapsed > 0 and CPU_S in sample:
            values[CPU_PERCENT] = (cpu_s - self._last_window_cpu_s) / elapsed * 100.0
        # The tree's peak over the samples taken before the window ended (a later one, say of the
        # model being logged, belongs to the next), at least the worker's own figure at its end.
        # With no such sample, the latest: an upper bound that keeps a child's memory (a data
        # loader's) that the worker's own figure lacks.
        cut = message.ended_at
        inside = [m for t, m in self._memory if cut is None or t <= cut]
        self._memory = [(t, m) for t, m in self._memory if cut is not None and t > cut]
        if not inside and MEMORY_MB in sample:
            inside = [sample[MEMORY_MB]]
        memory = [*inside, *([] if message.own_memory_mb is None else [message.own_memory_mb])]
        if memory:
            values[MEMORY_MB] = max(memory)
        for name in DETAILED:
            if name in self.detailed:
                values[name] = self.detailed[name]
        for name in SAMPLED:
            if name in sample:
                values[name] = sample[name]
        self._pending_metrics = {}
        self.windows = (*self.windows, Window(message.step, values))
        self.train_loss.extend(message.losses)
        self._last_window_cpu_s, self._last_window_at = cpu_s, now

    @property
    def _window_step(self) -> int:
        return self.windows[-1].step if self.windows else 0

    # -- the view rules read -------------------------------------------------------------

    @property
    def steps_done(self) -> int:
        return int(self.progress[PROGRESS_STEPS])

    @property
    def phase(self) -> str:
        """Where the trial is now: ``train``, ``evaluate`` or ``log``."""
        return phase_name(self.progress[PROGRESS_PHASE], self.steps_done, self.task.steps_planned)

    @property
    def cpu_s(self) -> float:
        """CPU-seconds the trial used: its last message's count, else the latest sample's."""
        return (self.outcome.cpu_s if self.outcome is not None else 0.0) or self.sample.get(CPU_S, 0.0)

    @property
    def ended(self) -> bool:
        """A rule stopped it, or its last message came."""
        return self.stop is not None or self.outcome is not None

    def view(self, now: float, state: StudyState, running_used: Mapping[str, float], *,
             sample: Mapping[str, float] | None = None, at_boundary: bool = False) -> TrialView:
        """The snapshot rules read at ``now``.

        ``running_used``: what the study's running trials, this one included, used so far of
        each study metric (``cpu_s``, ``energy_j``). ``sample``: what rules read as the latest
        sample (default: the latest observed). ``at_boundary``: checked synchronously at a
        window's end (in-process), where no step is in progress and no window unfinished.
        """
        progress, task = self.progress, self.task
        steps = progress[PROGRESS_STEPS]
        in_step = not at_boundary and steps > 0 and not progress[PROGRESS_EVALUATING]
        return TrialView(
            trial_id=task.trial_id,
            workload=task.workload,
            params=task.params,
            eval_every=task.eval_every,
            steps_done=int(steps),
            wall_s=now - self.started,
            cpu_s=self.sample.get(CPU_S, 0.0),
            windows=self.windows,
            sample=self.sample if sample is None else sample,
            step_in_progress_s=max(0.0, now - progress[PROGRESS_MARK]) if in_step else 0.0,
            # no step of the new window yet: what the shared slot holds is the last window's, read before the
            # worker cleared it (a stale 1.9 s over a 1-step final window read as a 1,923 ms mean step)
            window_train_s=0.0 if at_boundary or steps <= self._window_step else progress[PROGRESS_WINDOW_S],
            peers=state.peers(task.workload),
            study_cpu_s=state.finished_cpu_s + running_used.get(CPU_S, 0.0),
            study_energy_j=state.finished_energy_j + running_used.get(ENERGY_J, 0.0),
            steps_planned=task.steps_planned,
        )

    def check(self, rules: Sequence[StoppingRule], view: TrialView, *, sample_only: bool = False) -> StopInfo | None:
        """The stop ``rules`` decide on ``view``, or None. A stop is kept with the phase the
        trial was in (read now: before the executor kills or interrupts it)."""
        stop = check_all(rules, view, sample_only=sample_only)
        if stop is not None:
            self.stop, self.stop_phase = stop, self.phase
            self._readings.stopped(self.progress, self.sample)
        return stop

    def check_finished(self, rules: Sequence[StoppingRule], view: TrialView) -> StopInfo | None:
        """The budgets read a finished trial's last figures once more: a trial shorter than the
        watchdog's tick, or one whose last sample came after its last window, finished with no rule
        having read them, and would be taken for feasible over a budget. ``view`` at a boundary.
        A trial's time budget is left out: the time since it finished is not the trial's."""
        if self.stop is not None or not isinstance(self.outcome, Done):
            return None
        sample = dict(self.sample)  # per figure the larger of the last window's and the watchdog's last read
        for key, value in (self.windows[-1].values if self.windows else {}).items():
            if math.isfinite(value) and not (key in sample and math.isfinite(sample[key]) and sample[key] >= value):
                sample[key] = value  # a read that found the process exiting (0 MB) is not its footprint
        if not sample:
            return None
        budgets = [rule for rule in rules if rule.kind == SYSTEM and not _times_the_trial(rule)]
        return self.check(budgets, replace(view, sample=sample), sample_only=True)

    # -- out -------------------------------------------------------------------------------

    def record(self, *, now: float | None = None, peers: Iterable[TrialRecord] = (),
               rules: Iterable[StoppingRule] = (), steps_done: int | None = None, cpu_s: float | None = None,
               no_outcome: str = "the trial ended without reporting", info: Mapping[str, Any] | None = None,
               ) -> TrialRecord:
        """The trial's record, its outcome classified here once for every executor.

        A rule's stop wins (a training function that swallowed it still stopped); then the
        executor's :attr:`failure`; then the last message: :class:`~frugalml.messages.Done`
        completes, :class:`~frugalml.messages.Failed` fails, unless it was the GPU running out of
        memory, a stop of the GPU memory budget; no last message fails with ``no_outcome``.

        Args:
            now: when it ended (default: now). peers: finished trials of its workload (accounting).
            rules: the study's rules (a GPU out-of-memory stop's threshold).
            steps_done, cpu_s: where the executor knows better than the messages (a dead Ray task).
            info: the executor's own facts (joules, node), over the trial's.
        """
        now = time.monotonic() if now is None else now
        steps_done = self.steps_done if steps_done is None else steps_done
        outcome = self.outcome
        cpu_s = self.cpu_s if cpu_s is None else cpu_s
        info = {**self.info, **(info or {})}
        status, error, stop = self._classify(outcome, steps_done, rules, no_outcome, info)
        if status is TrialStatus.STOPPED and self.stop_phase is not None:
            info["stop_phase"] = self.stop_phase
        if status is TrialStatus.STOPPED:
            info[STEP_READINGS] = self._readings.as_info(self.task.eval_every)
        windows = self.windows
        if status is not TrialStatus.COMPLETED and self.sample and (not windows or windows[-1].step < steps_done):
            windows = (*windows, self._final_window(steps_done, now))
        return trial_record(
            self.task, status, peers, steps_done=steps_done, wall_s=now - self.started, cpu_s=cpu_s,
            stop=stop, error=error, train_loss=tuple(self.train_loss), windows=windows, info=info,
        )

    def _classify(self, outcome: Outcome | None, steps_done: int, rules: Iterable[StoppingRule], no_outcome: str,
                  info: dict[str, Any]) -> tuple[TrialStatus, str | None, StopInfo | None]:
        if self.stop is not None:
            return TrialStatus.STOPPED, None, self.stop
        if self.failure is not None:
            return TrialStatus.FAILED, self.failure, None
        if isinstance(outcome, Done):
            return TrialStatus.COMPLETED, None, None
        if isinstance(outcome, Failed):
            info["traceback"] = outcome.traceback
            if outcome.oom is None:
                info["user_error"] = outcome.user_error
                return TrialStatus.FAILED, outcome.error, None
            # out of GPU memory: a budget stop, not a crash
            peak_mb = peak_gpu_memory_mb([*(w.values for w in self.windows), self.sample])
            stop = gpu_oom_stop(outcome.oom, step=steps_done, peak_mb=peak_mb, limit_mb=gpu_memory_limit(rules))
            self.stop_phase = self.phase
            return TrialStatus.STOPPED, None, stop
        return TrialStatus.FAILED, no_outcome, None

    def _final_window(self, steps_done: int, now: float) -> Window:
        """System figures at the moment a trial ended early, so its footprint is on record."""
        sample = self.sample
        values: dict[str, float] = {}
        memory = [m for _, m in self._memory] or ([sample[MEMORY_MB]] if MEMORY_MB in sample else [])
        if memory:
            values[MEMORY_MB] = max(memory)
        values[WALL_S] = now - self.started
        for name in SAMPLED:
            if name in sample:
                values[name] = sample[name]
        return Window(steps_done, values)


class _StepReadings:
    """What a trial's CPU readings tell apart: training steps from evaluations (for
    :func:`frugalml.accounting.step_cost`, which works them out).

    * each window's **evaluation CPU-seconds**: the window's CPU since its previous boundary
      (the first step's end, or the previous window's) times the share of its wall time that
      was not in its steps (``WindowEnd.train_s``): evaluation, and reports;
    * the **tail**: the latest sample taken between training steps after the last boundary,
      at a fractional step (the step under way counted by its wall time so far over the
      window's mean step), so ``CPU since the boundary / steps since it`` is training only;
    * at a stop inside an evaluation whose window never came, the CPU-seconds it had run.

    Cheap by design: a few float operations a sample; nothing is kept per step.
    """

    def __init__(self) -> None:
        self.boundary: tuple[int, float] | None = None  # (step, CPU-s) of the last boundary seen here
        self.boundary_wall_s: float | None = None  # the worker's wall_s at it (a window's), for the next span
        self.first_step_at: float | None = None  # monotonic time of the first step's end
        self.first_step_s: float | None = None  # the first step's own duration (in the first window's train_s)
        self.eval_cpu_s: list[tuple[int, float]] = []
        self.tail: tuple[float, float] | None = None  # (fractional step, CPU-s)
        self.evaluating_cpu_s: float | None = None

    def first_step(self, cpu_s: float, progress: Sequence[float], now: float) -> None:
        self.boundary, self.tail = (1, cpu_s), None
        if int(progress[PROGRESS_STEPS]) == 1:  # read before the second step ended: the first one's slots
            self.first_step_at, self.first_step_s = progress[PROGRESS_MARK], progress[PROGRESS_WINDOW_S]
        else:  # the parent was late: the message's arrival, and the first step's length unknown
            self.first_step_at, self.first_step_s = now, None

    def window(self, message: WindowEnd, now: float) -> None:
        """A window's boundary: its evaluation's share of its CPU-seconds, by wall time."""
        previous, cpu_s = self.boundary, float(message.cpu_s)  # type: ignore[arg-type]
        if previous is not None and previous[0] < message.step and cpu_s > previous[1]:
            if self.boundary_wall_s is not None:  # since the previous window: the worker's own clock
                span, train = message.wall_s - self.boundary_wall_s, message.train_s
            elif previous[0] == 1 and self.first_step_at is not None and self.first_step_s is not None:
                span, train = now - self.first_step_at, message.train_s - self.first_step_s
            else:
                span = train = 0.0
            if span > 0:
                share = min(1.0, max(0.0, span - train) / span)
                self.eval_cpu_s.append((message.step, (cpu_s - previous[1]) * share))
        self.boundary, self.boundary_wall_s, self.tail = (message.step, cpu_s), message.wall_s, None

    def between_steps(self, cpu_s: float, progress: Sequence[float], window_step: int, eval_every: int) -> None:
        """A sample taken at ``cpu_s``: kept as the tail if it fell between training steps after
        the last boundary (not in an evaluation, nor after a window whose message is still on its way)."""
        steps = int(progress[PROGRESS_STEPS])
        if (self.boundary is None or steps <= self.boundary[0] or steps >= window_step + eval_every
                or progress[PROGRESS_EVALUATING] or progress[PROGRESS_PHASE] != PHASE_TRAIN):
            return
        in_window, window_s = steps - window_step, progress[PROGRESS_WINDOW_S]
        if window_step == 0 and self.first_step_s is not None:  # the first step's warm-up is not a step's length
            in_window, window_s = in_window - 1, window_s - self.first_step_s
        step_s = window_s / in_window if in_window > 0 else 0.0
        fraction = min(1.0, max(0.0, (time.monotonic() - progress[PROGRESS_MARK]) / step_s)) if step_s > 0 else 0.5
        self.tail = (steps + fraction, cpu_s)

    def stopped(self, progress: Sequence[float], sample: Mapping[str, float]) -> None:
        """A stop: inside an evaluation whose window never came, keep what it had cost so far
        (its wall time since the last step x the trial's latest CPU share)."""
        steps = int(progress[PROGRESS_STEPS])
        if progress[PROGRESS_EVALUATING] and self.boundary is not None and steps > self.boundary[0]:
            share = sample.get(CPU_PERCENT, 100.0) / 100.0
            self.evaluating_cpu_s = max(0.0, time.monotonic() - progress[PROGRESS_MARK]) * max(0.0, share)

    def as_info(self, eval_every: int) -> dict[str, Any]:
        info: dict[str, Any] = {"eval_every": eval_every}
        if self.eval_cpu_s:
            info["eval_cpu_s"] = [[step, round(cpu_s, 6)] for step, cpu_s in self.eval_cpu_s]
        if self.tail is not None:
            info["tail"] = [round(self.tail[0], 3), self.tail[1]]
        if self.evaluating_cpu_s is not None:
            info["evaluating_cpu_s"] = round(self.evaluating_cpu_s, 6)
        return info
