"""The next trial to start: asked of each workload's sampler in turn, after the configurations
predicted over budget, or screened out by a serving budget, are recorded as skipped."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from typing import Any, Mapping

from frugalml.deploy import ARCHITECTURE, MeasurementError, ServingJudge
from frugalml.executors import TrialTask
from frugalml.records import TrialRecord, TrialStatus
from frugalml.search import Config
from frugalml.study import Study
from frugalml.tuner._plans import WorkloadPlan
from frugalml.tuner._recorder import Recorder


class TrialSource:
    """Turns the samplers' proposals into numbered :class:`TrialTask`\\ s, each repeat of a
    configuration in turn, and records the ones that will not run.

    Args:
        study: the study, for its repeats, resources and directory.
        plans: one per workload, asked in this order.
        recorder: where skipped configurations are recorded.
        judge: the judge of serving budgets, None when the study has none.
        next_number: the number of the next trial.
    """

    def __init__(self, study: Study, plans: list[WorkloadPlan], recorder: Recorder, judge: ServingJudge | None,
                 next_number: int) -> None:
        self.study, self.plans, self.recorder, self.judge = study, plans, recorder, judge
        self.next_number = next_number
        self._prefetched: set[str] = set()

    def next(self) -> tuple[TrialTask, WorkloadPlan, Config] | None:
        """The next trial with its plan and configuration; None when every sampler is done."""
        for plan in self.plans:
            self._propose(plan)
            if plan.pending:
                config, repeat = plan.pending.popleft()
                return self._task(plan, config, repeat), plan, config
        return None

    def _propose(self, plan: WorkloadPlan) -> None:
        """Ask ``plan``'s sampler until a configuration is to run (its repeats queued) or none is left."""
        while not plan.pending and not plan.exhausted:
            config = plan.sampler.ask()
            if config is None:
                plan.exhausted = True
                break
            if self._skipped(plan, config) or self._screened_out(plan, config):
                continue
            plan.open_configs[config.config_id] = (config, [])
            plan.pending.extend((config, repeat) for repeat in range(self.study.repeats))

    def _task(self, plan: WorkloadPlan, config: Config, repeat: int) -> TrialTask:
        params = {**plan.workload.params, **config.params}
        steps_planned = plan.steps_planned(params)
        number = self.next_number
        task = TrialTask(
            trial_id=f"{plan.workload.name}/{config.config_id}/r{repeat}", number=number,
            workload=plan.workload.name, config_id=config.config_id, repeat=repeat, params=params,
            train=plan.train, train_kwargs=plan.train_kwargs, eval_every=plan.workload.eval_every,
            steps_planned=steps_planned, cpus=self.study.cpus_per_trial, gpus=self.study.gpus_per_trial,
            artifact_dir=str((self.study.path / "artifacts" / f"trial-{number:05d}").resolve()),
            predicted_cpu_s_per_step=plan.screen.predicted_cpu_s_per_step(params, steps_planned)
            if plan.screen is not None else None,  # a stop before the first window is credited at it
        )
        if self.judge is not None and plan.workload.train is None:  # its record carries the screen's cost
            with contextlib.suppress(MeasurementError):
                self.judge.keep(task.trial_id, self.judge.screen(
                    plan.workload.name, plan.workload.algorithm, params, plan.train_kwargs["data"]))
        self.next_number += 1
        return task

    def _skipped(self, plan: WorkloadPlan, config: Config) -> bool:
        """Record ``config`` as SKIPPED, and tell the sampler, if it is predicted over budget."""
        if plan.screen is None:
            return False
        params = {**plan.workload.params, **config.params}
        record = plan.screen.skip(config_id=config.config_id, params=params, steps_planned=plan.steps_planned(params),
                                number=self.next_number, repeats=self.study.repeats)
        if record is None:
            return False
        self._record_unrun(plan, config, record)
        return True

    def _screened_out(self, plan: WorkloadPlan, config: Config) -> bool:
        """Measure a built-in configuration's untrained model under ``[deploy]`` before it trains;
        record it as SKIPPED (or FAILED, where it cannot be measured), and tell the sampler, if it
        cannot meet a serving budget."""
        if self.judge is None or plan.workload.train is not None:
            return False
        params = {**plan.workload.params, **config.params}
        if plan.workload.name not in self._prefetched:  # a grid's architectures, measured in one go
            self._prefetched.add(plan.workload.name)
            with contextlib.suppress(MeasurementError):
                self.judge.prefetch(plan.workload.name, plan.workload.algorithm,
                                    grid_architectures(self.study.search, plan.workload.params),
                                    plan.train_kwargs["data"])
        base = TrialRecord(trial_id=f"{plan.workload.name}/{config.config_id}/r0", number=self.next_number,
                           workload=plan.workload.name, config_id=config.config_id, repeat=0, params=params,
                           status=TrialStatus.SKIPPED, steps_planned=plan.steps_planned(params))
        try:
            cost = self.judge.screen(plan.workload.name, plan.workload.algorithm, params, plan.train_kwargs["data"])
        except MeasurementError as error:
            record = dataclasses.replace(base, status=TrialStatus.FAILED, error=str(error),
                                         info={"stop_phase": "deploy"})
        else:
            record = self.judge.skipped(base, cost)
            if record is None:
                return False
        self._record_unrun(plan, config, record)
        return True

    def _record_unrun(self, plan: WorkloadPlan, config: Config, record: TrialRecord) -> None:
        self.next_number += 1
        self.recorder.record(record)
        plan.sampler.tell(config, [record])


def grid_architectures(search: Any, fixed: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every architecture a grid search will run (the product of its listed architecture
    parameters, and its points); none for other methods, which propose as they go."""
    if search.method != "grid":
        return []
    names = [n for n in ARCHITECTURE if isinstance(search.space.get(n), list)]
    configs = [{**fixed, **dict(zip(names, values))} for values in itertools.product(*(search.space[n] for n in names))]
    return configs + [{**fixed, **point} for point in search.points or ()]
