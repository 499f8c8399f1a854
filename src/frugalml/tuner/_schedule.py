"""The scheduling loop: keep the executor's slots full while the study budgets last, and hand
each ended trial to the recorder and to its configuration."""

from __future__ import annotations

from typing import Any, Callable

from frugalml.deploy import ServingJudge
from frugalml.exceptions import TrialUsageError
from frugalml.executors import Executor, StudyState
from frugalml.processes import raise_if_interrupted
from frugalml.records import TrialRecord, TrialStatus
from frugalml.search import Config
from frugalml.tuner._budgets import StudyBudgets
from frugalml.tuner._plans import WorkloadPlan
from frugalml.tuner._proposals import TrialSource
from frugalml.tuner._recorder import Recorder


class Scheduler:
    """Runs a study's trials on ``executor`` until every sampler is done and every trial ended.

    With a serving ``judge``, a trial's record comes back once its kept model was measured.
    """

    def __init__(self, executor: Executor, source: TrialSource, budgets: StudyBudgets, recorder: Recorder,
                 state: StudyState, judge: ServingJudge | None, repeats: int,
                 progress: Callable[[str, Any], None]) -> None:
        self.executor, self.source, self.budgets, self.recorder = executor, source, budgets, recorder
        self.state, self.judge, self.repeats, self.progress = state, judge, repeats, progress
        self._running: dict[str, tuple[WorkloadPlan, Config]] = {}  # by trial id

    def run(self) -> None:
        executor = self.executor
        while True:
            raise_if_interrupted()  # a Ctrl-C that Python swallowed in a callback still ends the study
            budget_left = self.budgets.left(self.state, executor)
            while executor.free_slots > 0 and budget_left:
                if not self._start_next():
                    break
            if not executor.running and not (self.judge and self.judge.pending):
                break
            for record in self._ended():
                self._finish(record)

    def _start_next(self) -> bool:
        proposal = self.source.next()
        if proposal is None:
            return False
        task, plan, config = proposal
        self.executor.submit(task)
        self._running[task.trial_id] = (plan, config)
        self.progress("start", task)
        return True

    def _ended(self) -> list[TrialRecord]:
        executor, judge = self.executor, self.judge
        ended = executor.poll() if executor.running else []
        if judge is not None:  # serving budgets: records come back once their model is measured
            ended = [done for r in ended if (done := judge.submit(r) if judge.takes(r) else r) is not None]
            ended += judge.finished(timeout=0.0 if executor.running else 0.1)
        return ended

    def _finish(self, record: TrialRecord) -> None:
        plan, config = self._running.pop(record.trial_id)
        check_usage(record, self.executor)
        if plan.screen is not None:
            record = plan.screen.annotate(record)
        self.recorder.record(record)
        plan.finish(config, record, self.repeats)


def check_usage(record: TrialRecord, executor: Executor) -> None:
    """Abort on mistakes every trial would repeat, with a :class:`TrialUsageError`: a user
    error raised in the training code, or a training function that never called ``trial.step``."""
    if record.status is TrialStatus.FAILED and record.info.get("user_error"):
        executor.shutdown()
        raise TrialUsageError(f"Trial {record.trial_id} failed: {record.error}")
    if record.status is TrialStatus.COMPLETED and record.steps_done == 0:
        executor.shutdown()
        raise TrialUsageError(
            f"The training function of workload '{record.workload}' returned without calling "
            "trial.step(); call trial.step(loss, n_samples) once per training step."
        )
