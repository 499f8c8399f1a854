"""The tuner: sets a study up (or resumes it), runs the scheduling loop, and shuts down cleanly."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

from frugalml.budgets import serving as serving_budgets
from frugalml.deploy import ServingJudge
from frugalml.exceptions import ConfigError, FrugalError, StoreError, StoreLockedError, TrialUsageError
from frugalml.executors import Executor, ExecutorSettings, StudyState, check_local_resources, make_executor, reset_preload
from frugalml.ownership import make_owned_dir, remove_created, remove_owned
from frugalml.records import TrialRecord
from frugalml.results import StudyResult
from frugalml.search import Search
from frugalml.store import RUN_LOCK_FILE, ResultStore
from frugalml.study import DEFAULT_MLFLOW, Study, stored_study
from frugalml.tracking import check_uri
from frugalml.tuner._budgets import StudyBudgets
from frugalml.tuner._plans import WorkloadPlan, build_plans, is_finished, stored_configurations
from frugalml.tuner._prepare import preload_for, start_workers_early
from frugalml.tuner._proposals import TrialSource
from frugalml.tuner._recorder import Recorder
from frugalml.tuner._schedule import Scheduler
from frugalml.tuner._tracking import BackgroundTracking

logger = logging.getLogger("frugalml.tuner")  # with no logging set up, Python prints the line to stderr

ProgressCallback = Callable[[str, Any], None]  # ("start", TrialTask) or ("end", TrialRecord)
ExecutorFactory = Callable[[ExecutorSettings, StudyState], Executor]


class Tuner:
    """Runs one :class:`Study` to completion (or resumes it).

    Args:
        study: what to run.
        resume: continue the study stored in its directory.
        fresh: delete an existing study directory and start over.
        progress: called with ``("start", TrialTask)`` and ``("end", TrialRecord)``.
        executor: builds the executor from the study's settings and state, e.g.
            :class:`~frugalml.executors.InProcessExecutor`; default: the study's backend.
    """

    def __init__(self, study: Study, *, resume: bool = False, fresh: bool = False,
                 progress: ProgressCallback | None = None, executor: ExecutorFactory | None = None) -> None:
        self.study = study
        self.resume = resume
        self.fresh = fresh
        self.progress = progress or (lambda event, payload: None)
        self.executor_factory = executor or (
            lambda settings, state: make_executor(study.backend, settings, state, address=study.address)
        )
        self._local_workers = executor is None and study.backend == "local"
        self.store = ResultStore(study.path)
        self.records: list[TrialRecord] = []
        self.state = StudyState()
        self._store_open = False
        self._locks: contextlib.ExitStack | None = None
        self._run_locked = False
        self._created: list[Path] = []  # the folders this run made: what a mistake its first trial shows undoes

    def run(self) -> StudyResult:
        with contextlib.ExitStack() as locks:
            self._locks = locks
            if self.store.exists:  # a second `tune` of this study is refused now; a new one locks with its store
                self._lock_run()
            try:
                return self._run()
            # the first trial showed a mistake in the input, or the machine's setup stops any worker from
            # starting (a $TMPDIR too long for a socket): with nothing finished, the new study leaves no
            # folder, as a refused file would
            except (TrialUsageError, ConfigError):
                if self._run_locked and not self.records:
                    remove_created(self._created)
                raise
            finally:
                reset_preload()  # the next study (or an executor used on its own) says what its workers need

    def _lock_run(self) -> None:
        if self._locks is not None and not self._run_locked:
            self._locks.enter_context(self.store.run_lock())
            self._run_locked = True

    def _load_previous(self) -> None:
        if not self.store.exists:
            return
        if self.fresh:  # cleared in _run once the whole study has been checked; a damaged store too, not a locked one
            try:
                self.store.check_writable()
            except StoreLockedError:
                raise
            except StoreError:
                pass
            return
        self.store.check_writable()  # another process's lock is said now, not after the first trial
        stored_name, spec = self.store.study()
        if stored_name != self.study.name:
            raise StoreError(f"{self.study.path} holds study '{stored_name}', not '{self.study.name}'.")
        previous = self.store.trials(with_steps=False)
        if previous and not self.resume:
            raise StoreError(
                f"Study '{self.study.name}' already has {len(previous)} trials in {self.study.path}; "
                "pass --resume to continue it or --fresh to start over."
            )
        if previous and (changed := _changed(spec, self.study)):
            logger.warning("frugalml: note: the study's %s differs from the one it was created with (%d trials "
                           "stored); --resume keeps them and runs what the new one adds (--fresh starts over)",
                           " and ".join(changed), len(previous))
        self.records = self.store.trials()
        self.state = StudyState(self.records)
        self._store_open = True

    def _set_up(self, settings: ExecutorSettings) -> tuple[list[WorkloadPlan], Executor, ServingJudge | None]:
        """Check everything and make the executor (and the judge of serving budgets), then clear
        (``fresh``) or read (``resume``) the study's directory."""
        study = self.study
        if study.mlflow_uri and study.mlflow_uri != DEFAULT_MLFLOW:
            check_uri(study.mlflow_uri)  # before --fresh deletes anything
        self._load_previous()
        # a resume with nothing left to run imports nothing for workers
        start = self._local_workers and not self._all_recorded()
        # a built-in dataset takes seconds to prepare: the workers' imports overlap it. A user's own training
        # function prepares nothing, so its workers start once the study is known to be valid: bad input starts
        # no process (the price: the driver's import of the user's module no longer overlaps the forkserver's)
        early = start and any(w.train is None for w in study.workloads)
        if self._local_workers:  # before anything is written, or a worker started
            check_local_resources(study.cpus_per_trial, study.gpus_per_trial, study.pin)
        preload_for(study)  # what the workers' forkservers import: the local one, a Ray node's
        if early:
            start_workers_early(study)
        plans = build_plans(study, self.records, self.state)  # validates data before anything is written or deleted
        # its own checks too (a Ray cluster to connect to, its GPUs, the energy estimate's setting, a node offering
        # [deploy] resources): a typo in an address must not cost --fresh's finished study
        executor = self.executor_factory(settings, self.state)
        judge = None
        try:
            judge = self._serving_judge(serving_budgets(study.budget)) if study.measures_serving else None
            if self.fresh and self.store.exists:
                remove_owned(study.path, keep=frozenset({RUN_LOCK_FILE}))  # never a folder frugalml did not create
            make_owned_dir(study.path, self._created)  # frugalml's (marked) before MLflow's default store goes in it
            self._lock_run()
            if start and not early:
                start_workers_early(study)
        except BaseException:
            if judge is not None:
                judge.close()
            executor.shutdown()
            raise
        return plans, executor, judge

    def _all_recorded(self) -> bool:
        """True when every workload has as many finished configurations as it can try. Only a
        hint: a worker still starts when a trial does."""
        most = self.study.configurations_per_workload
        return all(sum(is_finished(group, self.study.repeats)
                       for group in stored_configurations(self.records, workload.name).values()) >= most
                   for workload in self.study.workloads)

    def _run(self) -> StudyResult:
        study = self.study
        rules = study.stopping_rules()
        budgets = StudyBudgets(rules)
        settings = ExecutorSettings(
            workers=study.workers, rules=tuple(rules), sample_interval_s=study.sample_interval_s, pin=study.pin,
            hang_timeout_s=study.hang_timeout_s, gpus_per_trial=study.gpus_per_trial,
        )
        plans, executor, judge = self._set_up(settings)
        tracking = BackgroundTracking(study, self.store)
        tracking.put_unlogged(self.records)
        recorder = Recorder(study, self.store, self.records, self.state, tracking, self.progress, self._lock_run,
                            store_open=self._store_open)
        tracking.start()
        ended_by: type[BaseException] | None = None
        try:
            if (warning := executor.energy_estimate_warning(study.budget)) is not None:
                warnings.warn(warning, stacklevel=2)
            if not recorder.store_open:  # a new study: where each workload's data came from, written with the store
                recorder.lineage = {plan.workload.name: plan.data_lineage() for plan in plans}
            next_number = max((r.number for r in self.records), default=-1) + 1
            source = TrialSource(study, plans, recorder, judge, next_number)
            Scheduler(executor, source, budgets, recorder, self.state, judge, study.repeats, self.progress).run()
        except BaseException as error:
            ended_by = type(error)
            raise
        finally:
            try:
                if judge is not None:
                    judge.close()
                # on an error, its running trials; always, what it holds: a Ray executor's channel actor (a
                # worker process on the cluster) and the Ray connection it made, which outlived the study before
                executor.shutdown()
            finally:
                tracking.stop(ended_by=ended_by)  # an error leaves unsent trials to --resume
        result = StudyResult(study.name, str(study.path), tuple(self.records), study.search, budgets.compute_limit)
        tracking.end(result)
        return result

    def _serving_judge(self, limits: dict[str, float]) -> ServingJudge:
        """The judge of serving budgets: measuring on this machine, or on a Ray node that offers
        ``[deploy] resources`` (the cluster is connected by now)."""
        deploy = self.study.deployment()
        if deploy.resources:
            from frugalml.deploy import on_ray  # lazy: Ray

            return ServingJudge(limits, deploy, runner=on_ray(deploy))
        return ServingJudge(limits, deploy)


def _changed(stored: Mapping[str, Any], study: Study) -> list[str]:
    """Whether the stored spec's ``[search]`` and ``repeats`` differ from ``study``'s, read as the study would
    read them (a store of an older version lacks keys added since: their defaults, not a change)."""
    changed = []
    try:
        if Search(**stored.get("search", {})) != study.search:
            changed.append("[search]")
    except (FrugalError, TypeError):  # a search this version no longer reads: say nothing rather than guess
        pass
    default_repeats = next(f.default for f in dataclasses.fields(Study) if f.name == "repeats")
    if stored.get("repeats", default_repeats) != study.repeats:
        changed.append("repeats")
    return changed


def tune(study: Study, *, resume: bool = False, fresh: bool = False, progress: ProgressCallback | None = None,
         executor: ExecutorFactory | None = None) -> StudyResult:
    """Run ``study`` (or resume it) and return its results.

    Example:
        >>> import frugalml
        >>> study = frugalml.load_study("examples/demo.toml")      # doctest: +SKIP
        >>> result = frugalml.tune(study)                          # doctest: +SKIP
        >>> result.best_feasible().params                          # doctest: +SKIP
    """
    if resume and fresh:
        raise ConfigError("Pass either resume (continue the study) or fresh (delete its results first), not both.")
    return Tuner(study, resume=resume, fresh=fresh, progress=progress, executor=executor).run()


def load_result(directory: str | Path) -> StudyResult:
    """Read a finished (or interrupted) study's results from its directory."""
    stored = stored_study(directory)
    return StudyResult(stored.name, str(directory), tuple(ResultStore(directory).trials()), stored.search,
                       stored.compute_budget_cpu_s)
