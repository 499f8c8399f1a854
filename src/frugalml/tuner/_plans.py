"""Each workload's plan: its sampler, its prepared training function, and the configurations
still to start or to finish (restored from the stored trials on resume)."""

from __future__ import annotations

import functools
from collections import deque
from dataclasses import dataclass
from typing import Any, Mapping

from frugalml.executors import StudyState
from frugalml.lineage import data_lineage
from frugalml.prediction import CostScreen
from frugalml.records import TrialRecord, TrialStatus
from frugalml.search import Config, Sampler
from frugalml.stopping import STUDY
from frugalml.study import Study, Workload
from frugalml.tuner._prepare import prepare


def stored_configurations(records: list[TrialRecord], workload: str) -> dict[str, list[TrialRecord]]:
    """A workload's stored trials by configuration id, in stored order."""
    by_config: dict[str, list[TrialRecord]] = {}
    for record in records:
        if record.workload == workload:
            by_config.setdefault(record.config_id, []).append(record)
    return by_config


def is_finished(group: list[TrialRecord], repeats: int) -> bool:
    """A configuration with every repeat recorded, or skipped: nothing of it left to run."""
    return len(group) >= repeats or any(r.status is TrialStatus.SKIPPED for r in group)


@dataclass
class WorkloadPlan:
    workload: Workload
    sampler: Sampler
    train: Any
    train_kwargs: dict[str, Any]
    n_train: int | None
    pending: deque  # (Config, repeat) still to start
    open_configs: dict[str, tuple[Config, list[TrialRecord]]]
    exhausted: bool = False
    screen: Any = None  # a frugalml.prediction.CostScreen when the study predicts costs

    def restore(self, records: list[TrialRecord], repeats: int) -> None:
        """Tell the sampler the stored configurations; queue the repeats an incomplete one lacks."""
        finished, incomplete = [], []
        for config_id, group in stored_configurations(records, self.workload.name).items():
            config = Config(config_id, dict(group[0].params))
            if is_finished(group, repeats):
                finished.append((config, group))
            else:
                incomplete.append(config)
                self.open_configs[config_id] = (config, list(group))
                done = {r.repeat for r in group}
                self.pending.extend((config, rep) for rep in range(repeats) if rep not in done)
        self.sampler.restore(finished, incomplete)

    def finish(self, config: Config, record: TrialRecord, repeats: int) -> None:
        """Add a trial's record to its configuration; tell the sampler once all its repeats
        ended (or a study budget stopped one)."""
        _, group = self.open_configs[config.config_id]
        group.append(record)
        if len(group) >= repeats or (record.stop and record.stop.kind == STUDY):
            del self.open_configs[config.config_id]
            self.sampler.tell(config, group)

    def steps_planned(self, params: Mapping[str, Any]) -> int | None:
        workload = self.workload
        if self.n_train is None:
            planned = workload.steps or workload.max_steps
            return min(planned, workload.max_steps or planned) if planned else None
        from frugalml.workloads import NETWORK_BATCH_SIZE, NETWORKS, steps_planned  # lazy: scikit-learn

        default = NETWORK_BATCH_SIZE if workload.algorithm in NETWORKS else 1
        return steps_planned(self.n_train, int(params.get("batch_size", default)), workload.epochs, workload.max_steps)

    def data_lineage(self) -> dict[str, Any]:
        """Where the workload's data came from: a built-in's cached copy, else its own ``path``."""
        source = self.train_kwargs["data"].meta()["source"] if self.n_train is not None else self.workload.path
        return data_lineage(source, dataset=self.workload.dataset)


def build_plans(study: Study, records: list[TrialRecord], state: StudyState) -> list[WorkloadPlan]:
    """One plan per workload, its data checked and prepared, its sampler told ``records``."""
    def spent() -> float:
        """The share of the study's compute budget used by finished trials (0 without one)."""
        limit = study.budget.get("max_study_cpu_seconds")
        return state.finished_cpu_s / float(limit) if limit else 0.0

    plans = []
    for workload in study.workloads:
        train, kwargs, n_train = prepare(workload, study)
        plan = WorkloadPlan(workload, None, train, kwargs, n_train, deque(), {})
        screen = cost = None
        if study.prediction:
            plan.screen = CostScreen.for_study(study, workload, kwargs.get("data"), lambda name=workload.name: state.peers(name))
            if plan.screen.settings.screen:
                screen = functools.partial(_ask_screen, "violations", plan)
            cost = functools.partial(_ask_screen, "trial_cost", plan)
        plan.sampler = study.search.sampler(study.budget, screen, cost, spent)
        plan.restore(records, study.repeats)
        plans.append(plan)
    return plans


def _ask_screen(method: str, plan: WorkloadPlan, params: Mapping[str, Any]) -> Any:
    """``plan.screen.<method>`` of a candidate, with the workload's fixed params and planned steps:
    ``violations`` for a screening sampler, ``trial_cost`` for a cost-aware one."""
    params = {**plan.workload.params, **params}
    return getattr(plan.screen, method)(params, plan.steps_planned(params))
