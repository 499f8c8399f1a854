"""Runs a study: proposes configurations, runs trials on an executor, records results.

The local results store is written first (one transaction per finished trial);
MLflow second. Resuming re-runs only trials that were not stored, and re-logs to
MLflow any stored trial that did not reach it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import itertools
import logging
import queue
import sys
import threading
import warnings
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from frugalml.budgets import serving as serving_budgets
from frugalml.deploy import ARCHITECTURE, LOG_MODEL_HINT, MeasurementError, ServingJudge
from frugalml.exceptions import ConfigError, FrugalError, StoreError, StoreLockedError, TrialUsageError
from frugalml.executors import (
    Executor, ExecutorSettings, StudyState, TrialTask, make_executor, preload, resolve_train_function,
)
from frugalml.lineage import data_lineage, write_lineage
from frugalml.ownership import make_owned_dir, remove_owned
from frugalml.prediction import ConfigGate
from frugalml.records import TrialRecord, TrialStatus
from frugalml.results import StudyResult
from frugalml.search import Config, Sampler
from frugalml.stopping import STUDY, StudyBudget
from frugalml.store import RUN_LOCK_FILE, ResultStore
from frugalml.study import DEFAULT_MLFLOW, Study, Workload, stored_study
from frugalml.tracking import MlflowTracker, Tracker, TrackingError, check_uri, default_uri, shown_uri

logger = logging.getLogger("frugalml.tracking")  # with no logging set up, Python prints the line to stderr
ProgressCallback = Callable[[str, Any], None]  # ("start", TrialTask) or ("end", TrialRecord)
ExecutorFactory = Callable[[ExecutorSettings, StudyState], Executor]


@dataclass
class _WorkloadPlan:
    workload: Workload
    sampler: Sampler
    train: Any
    train_kwargs: dict[str, Any]
    n_train: int | None
    pending: deque  # (Config, repeat) still to start
    open_configs: dict[str, tuple[Config, list[TrialRecord]]]
    exhausted: bool = False
    gate: Any = None  # a frugalml.prediction.ConfigGate when the study predicts costs


def _prepare(workload: Workload, study: Study) -> tuple[Any, dict[str, Any], int | None]:
    """Resolve the training function and its arguments; built-in data is prepared here, once."""
    if workload.train is not None:
        if study.backend == "local":  # a Ray cluster may hold modules the driver lacks
            check_train_function(workload.train, workload.train_kwargs)
            if study.measures_serving:
                _check_logs_a_model(workload, sorted(serving_budgets(study.budget)) or ["as objectives"])
        return workload.train, dict(workload.train_kwargs), None
    # lazy: frugalml.workloads imports scikit-learn (~1 s), which a user's own training function may not need
    from frugalml.workloads import (
        NETWORKS, check_network, make_estimator, network_train, prepare_dataset, resolve_dataset, sgd_train,
    )

    if study.data_dir and not Path(study.data_dir).expanduser().is_dir():
        raise ConfigError(f"[study] data_dir {study.data_dir!r} is not a folder; fix the path or remove data_dir.")
    source = resolve_dataset(workload.dataset, path=workload.path, target=workload.target, data_dir=study.data_dir)
    data = prepare_dataset(source, seed=study.seed)
    if workload.algorithm in NETWORKS:  # every listed architecture must build on this data: fail now
        for params in _listed_values(study.search, workload.params):
            check_network(workload.algorithm, params, data.n_features)
        train = network_train
        # every network worker needs torch, and its optimisers import torch._dynamo (1.5 CPU-s):
        # import both once, in the forkserver (imports start no threads, so forking stays safe)
        preload("torch", "torch._dynamo")
    else:
        make_estimator(workload.algorithm, data.task, 0.01, study.seed, dataset=data.name)  # mismatch fails now
        train = sgd_train
    if workload.data_format == "pandas":
        data.frame()  # writes the column-ordered copy once, not in the first trial
    kwargs = dict(
        data=data, algorithm=workload.algorithm, epochs=workload.epochs, max_steps=workload.max_steps,
        data_format=workload.data_format, seed=study.seed,
    )
    return train, kwargs, data.n_train


def check_train_function(train: Any, train_kwargs: Mapping[str, Any]) -> None:
    """A one-line ConfigError, before any trial, when ``train`` is not a Python function that
    takes the trial first (``train = "os:system"`` would fail every trial the same way)."""
    function = resolve_train_function(train)
    call = function if inspect.isfunction(inspect.unwrap(function)) or inspect.ismethod(function) \
        or isinstance(function, functools.partial) else getattr(type(function), "__call__", None)
    is_python = not inspect.isclass(function) and (call is function or inspect.isfunction(call))
    try:
        inspect.signature(function).bind(object(), **train_kwargs)
    except (TypeError, ValueError):
        is_python = False
    if not is_python:
        kind = "it is a class" if inspect.isclass(function) else "it is a built-in" if inspect.isbuiltin(function) \
            else "its arguments do not fit (trial, **train_kwargs)"
        raise ConfigError(f"{train!r} is not a training function ({kind}); write one as "
                          "def train(trial, **train_kwargs) and name it 'module:function'.")


def _check_logs_a_model(workload: Workload, keys: list[str]) -> None:
    """Serving budgets are measured on the model a trial keeps: a one-line ConfigError, before any
    trial, when the training function's module never calls ``trial.log_model``."""
    function = inspect.unwrap(resolve_train_function(workload.train))
    module = inspect.getmodule(function)
    try:
        source = inspect.getsource(module) if module is not None else None
    except (OSError, TypeError):  # no source to read (a compiled module): the first trial will say it
        return
    if source is not None and "log_model" not in source:
        raise ConfigError(f"workload '{workload.name}': the study measures serving costs "
                          f"({', '.join(keys)}) but "
                          f"{getattr(function, '__qualname__', workload.train)} never keeps its model; "
                          f"{LOG_MODEL_HINT}.")


def _listed_values(search: Any, fixed: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One configuration per listed value (or range bound: a float unless the range is
    ``int``) of each parameter, and each grid point, the rest fixed: enough to find a
    value that cannot be built."""
    configs = [dict(fixed)]
    for name, spec in search.space.items():
        if isinstance(spec, Mapping):
            values = [spec["low"], spec["high"]] if spec.get("int") else [float(spec["low"]), float(spec["high"])]
        else:
            values = spec if isinstance(spec, list) else [spec]
        configs += [{**fixed, name: value} for value in values]
    configs += [{**fixed, **point} for point in search.points or ()]
    return configs


def _grid_architectures(search: Any, fixed: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every architecture a grid search will run (the product of its listed architecture
    parameters, and its points); none for other methods, which propose as they go."""
    if search.method != "grid":
        return []
    names = [n for n in ARCHITECTURE if isinstance(search.space.get(n), list)]
    configs = [{**fixed, **dict(zip(names, values))} for values in itertools.product(*(search.space[n] for n in names))]
    return configs + [{**fixed, **point} for point in search.points or ()]


def _data_file(plan: _WorkloadPlan) -> str | None:
    """The file a workload's data was read from (a built-in's cached copy), else its own ``path``."""
    return plan.train_kwargs["data"].meta()["source"] if plan.n_train is not None else plan.workload.path


def _ask_gate(method: str, plan: _WorkloadPlan, params: Mapping[str, Any]) -> Any:
    """``plan.gate.<method>`` of a candidate, with the workload's fixed params and planned steps:
    ``violations`` for a screening sampler, ``trial_cost`` for a cost-aware one."""
    params = {**plan.workload.params, **params}
    return getattr(plan.gate, method)(params, _steps_planned(plan, params))


def _steps_planned(plan: _WorkloadPlan, params: Mapping[str, Any]) -> int | None:
    workload = plan.workload
    if plan.n_train is None:
        planned = workload.steps or workload.max_steps
        return min(planned, workload.max_steps or planned) if planned else None
    from frugalml.workloads import NETWORKS, steps_planned  # lazy: scikit-learn, as in _prepare
    from frugalml.workloads._networks import COMMON

    default = COMMON["batch_size"] if workload.algorithm in NETWORKS else 1
    return steps_planned(plan.n_train, int(params.get("batch_size", default)), workload.epochs, workload.max_steps)


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
        self.store = ResultStore(study.path)
        self.records: list[TrialRecord] = []
        self.state = StudyState()
        self._tracker: Tracker | None = None
        self._store_open = False
        self._lineage: dict[str, Any] | None = None
        self._tracking: queue.Queue[TrialRecord | None] = queue.Queue()
        self._tracking_error: Exception | None = None
        self._locks: contextlib.ExitStack | None = None
        self._run_locked = False
        self._judge: ServingJudge | None = None
        self._prefetched: set[str] = set()

    # -- set-up -------------------------------------------------------------------------

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
        stored_name, _ = self.store.study()
        if stored_name != self.study.name:
            raise StoreError(f"{self.study.path} holds study '{stored_name}', not '{self.study.name}'.")
        previous = self.store.trials(with_steps=False)
        if previous and not self.resume:
            raise StoreError(
                f"Study '{self.study.name}' already has {len(previous)} trials in {self.study.path}; "
                "pass --resume to continue it or --fresh to start over."
            )
        self.records = self.store.trials()
        self.state = StudyState(self.records)
        self._store_open = True

    def _plans(self) -> list[_WorkloadPlan]:
        plans = []
        for workload in self.study.workloads:
            train, kwargs, n_train = _prepare(workload, self.study)
            plan = _WorkloadPlan(workload, None, train, kwargs, n_train, deque(), {})
            screen = cost = None
            if self.study.prediction:
                plan.gate = ConfigGate.for_study(
                    self.study, workload, kwargs.get("data"), lambda name=workload.name: self.state.peers(name),
                )
                if plan.gate.settings.screen:
                    screen = functools.partial(_ask_gate, "violations", plan)
                cost = functools.partial(_ask_gate, "trial_cost", plan)
            sampler = plan.sampler = self.study.search.sampler(self.study.budget, screen, cost, self._spent)
            mine = [r for r in self.records if r.workload == workload.name]
            by_config: dict[str, list[TrialRecord]] = {}
            for record in mine:
                by_config.setdefault(record.config_id, []).append(record)
            finished, incomplete = [], []
            for config_id, group in by_config.items():
                config = Config(config_id, dict(group[0].params))
                if len(group) >= self.study.repeats or any(r.status is TrialStatus.SKIPPED for r in group):
                    finished.append((config, group))
                else:
                    incomplete.append(config)
                    plan.open_configs[config_id] = (config, list(group))
                    done = {r.repeat for r in group}
                    plan.pending.extend((config, rep) for rep in range(self.study.repeats) if rep not in done)
            sampler.restore(finished, incomplete)
            plans.append(plan)
        return plans

    def _spent(self) -> float:
        """The share of the study's compute budget used by finished trials (0 without one)."""
        limit = self.study.budget.get("max_study_cpu_seconds")
        return self.state.finished_cpu_s / float(limit) if limit else 0.0

    # -- recording ----------------------------------------------------------------------

    def _tracking_uri(self) -> str:
        return default_uri(self.study.path) if self.study.mlflow_uri == DEFAULT_MLFLOW else self.study.mlflow_uri

    def _tracker_or_none(self) -> Tracker | None:
        if self._tracker is None and self.study.mlflow_uri:
            uri = self._tracking_uri()
            study = self.study
            params = {"method": study.search.method, "repeats": study.repeats, "workers": study.workers,
                      "seed": study.seed, "backend": study.backend, "objectives": ",".join(study.search.objectives),
                      **{f"budget/{k}": v for k, v in study.budget.items()},
                      **{f"stopping/{k}": v for k, v in study.stopping.items()},
                      "workloads": ",".join(w.name for w in study.workloads)}
            self._tracker = MlflowTracker(uri, study.name, artifact_dir=study.path / "mlartifacts", params=params)
        return self._tracker

    def _record(self, record: TrialRecord) -> None:
        if not self._store_open:
            self._lock_run()
            self.store.open_study(self.study.name, self.study.to_dict())
            self._store_open = True
            if self._lineage is not None:
                write_lineage(self.study.path, self._lineage)
        self.store.save_trial(record)
        self.records.append(record)
        self.state.add(record)
        if self.study.mlflow_uri:
            self._tracking.put(record)

    def _track_in_background(self) -> None:
        """Log to MLflow on a thread: a slow tracking server must not pause the watchdog.

        After the first failure nothing more is sent this run (each try would wait out
        the server's time limits again); the store has every trial and ``--resume`` logs
        the ones MLflow lacks. The tracker is opened first, while the first trials run, so
        an unreachable server is reported within seconds of the start.
        """
        try:
            self._tracker_or_none()
        except Exception as error:  # noqa: BLE001 - as below
            self._tracking_failed(error)
        while (record := self._tracking.get()) is not None:
            if self._tracking_error is not None:
                continue
            try:
                run_id = self._tracker_or_none().log_trial(record)
            except Exception as error:  # noqa: BLE001 - any failure of the copy; the store has the trial
                self._tracking_failed(error)
                continue
            try:
                self.store.set_mlflow_run(record.trial_id, run_id)
            except Exception:  # noqa: BLE001 - the driver meets the store's problem itself; resume re-logs
                pass

    def _tracking_failed(self, error: BaseException) -> None:
        """Turn tracking off for the rest of this run and say so, once."""
        if self._tracking_error is not None:
            return
        self._tracking_error = error
        lines = str(error).strip().splitlines()
        why = (lines[0] if lines else type(error).__name__)[:300]
        if not isinstance(error, TrackingError):
            why = f"MLflow tracking at {shown_uri(self._tracking_uri())} failed: {why}"
        logger.warning("frugalml: warning: %s; the study goes on without MLflow (its results store has every trial), "
                       "and `frugalml tune --resume` logs the trials MLflow lacks.", why)

    def _sync_tracking(self) -> None:
        """Queue stored trials that never reached MLflow (the driver died in between, or the
        tracking server was down) for the tracking thread."""
        if not self.records or not self.study.mlflow_uri:
            return
        unlogged = {t for t, run in self.store.mlflow_runs().items() if run is None}
        for record in self.records:
            if record.trial_id in unlogged:
                self._tracking.put(record)

    # -- the loop -----------------------------------------------------------------------

    def run(self) -> StudyResult:
        with contextlib.ExitStack() as locks:
            self._locks = locks
            if self.store.exists:  # a second `tune` of this study is refused now; a new one locks with its store
                self._lock_run()
            return self._run()

    def _lock_run(self) -> None:
        if self._locks is not None and not self._run_locked:
            self._locks.enter_context(self.store.run_lock())
            self._run_locked = True

    def _run(self) -> StudyResult:
        if self.study.mlflow_uri and self.study.mlflow_uri != DEFAULT_MLFLOW:
            check_uri(self.study.mlflow_uri)  # before --fresh deletes anything
        self._load_previous()
        plans = self._plans()  # validates data before anything is written or deleted
        if self.fresh and self.store.exists:
            remove_owned(self.study.path, keep=frozenset({RUN_LOCK_FILE}))  # never a folder frugalml did not create
        make_owned_dir(self.study.path)  # frugalml's (marked) before MLflow's default store goes in it
        self._lock_run()
        self._sync_tracking()
        rules = self.study.stopping_rules()
        study_budgets = [r for r in rules if isinstance(r, StudyBudget)]
        compute_budget = next((r for r in study_budgets if r.budget.metric == "cpu_s"), None)
        study = self.study
        settings = ExecutorSettings(
            workers=study.workers, rules=tuple(rules), sample_interval_s=study.sample_interval_s, pin=study.pin,
            hang_timeout_s=study.hang_timeout_s, gpus_per_trial=study.gpus_per_trial,
        )
        executor = self.executor_factory(settings, self.state)
        self._next_number = max((r.number for r in self.records), default=-1) + 1
        by_task: dict[str, tuple[_WorkloadPlan, Config]] = {}
        tracking = threading.Thread(target=self._track_in_background, name="frugalml-tracking", daemon=True)
        tracking.start()
        try:
            self._judge = self._serving_judge(serving_budgets(study.budget)) if study.measures_serving else None
            if (warning := executor.energy_estimate_warning(study.budget)) is not None:
                warnings.warn(warning, stacklevel=2)
            if not self._store_open:  # a new study: where each workload's data came from, written with the store
                self._lineage = {p.workload.name: data_lineage(_data_file(p), dataset=p.workload.dataset)
                                 for p in plans}
            while True:
                budget_left = all(
                    self.state.finished(r.budget.metric) + executor.running_used(r.budget.metric) < r.limit
                    for r in study_budgets
                )
                while executor.free_slots > 0 and budget_left:
                    if not self._start_next(plans, executor, by_task):
                        break
                judge = self._judge
                if not executor.running and not (judge and judge.pending):
                    break
                ended = executor.poll() if executor.running else []
                if judge is not None:  # serving budgets: records come back once their model is measured
                    ended = [done for r in ended if (done := judge.submit(r) if judge.takes(r) else r) is not None]
                    ended += judge.finished(timeout=0.0 if executor.running else 0.1)
                for record in ended:
                    plan, config = by_task.pop(record.trial_id)
                    self._check_usage(record, executor)
                    if plan.gate is not None:
                        record = plan.gate.annotate(record)
                    self._record(record)
                    self.progress("end", record)
                    _, group = plan.open_configs[config.config_id]
                    group.append(record)
                    if len(group) >= self.study.repeats or (record.stop and record.stop.kind == STUDY):
                        del plan.open_configs[config.config_id]
                        plan.sampler.tell(config, group)
        except BaseException:
            executor.shutdown()
            raise
        finally:
            if self._judge is not None:
                self._judge.close()
            ended_by = sys.exc_info()[0]
            if ended_by is not None:  # leave unsent trials to --resume rather than wait for them
                while not self._tracking.empty():
                    self._tracking.get_nowait()
            self._tracking.put(None)
            tracking.join()
            if self._tracker is not None and ended_by is not None:  # never leave the study's run RUNNING
                self._tracker.close("KILLED" if issubclass(ended_by, KeyboardInterrupt) else "FAILED")
        result = StudyResult(self.study.name, str(self.study.path), tuple(self.records), self.study.search,
                             compute_budget.limit if compute_budget else None)
        self._end_tracking(result)
        return result

    def _end_tracking(self, result: StudyResult) -> None:
        """Log the study's summary and end its run: FINISHED, or FAILED where trials are missing."""
        if self._tracker is None:
            return
        if self._tracking_error is None:
            try:
                self._tracker.log_study(result)
                self._tracker.close()
                return
            except Exception as error:  # noqa: BLE001 - the store has everything; MLflow is a copy
                self._tracking_failed(error)
        self._tracker.close("FAILED")

    def _start_next(self, plans: list[_WorkloadPlan], executor: Executor,
                    by_task: dict[str, tuple[_WorkloadPlan, Config]]) -> bool:
        for plan in plans:
            while not plan.pending and not plan.exhausted:
                config = plan.sampler.ask()
                if config is None:
                    plan.exhausted = True
                    break
                if self._skipped(plan, config) or self._screened_out(plan, config):
                    continue
                plan.open_configs[config.config_id] = (config, [])
                plan.pending.extend((config, repeat) for repeat in range(self.study.repeats))
            if plan.pending:
                config, repeat = plan.pending.popleft()
                params = {**plan.workload.params, **config.params}
                steps_planned = _steps_planned(plan, params)
                task = TrialTask(
                    trial_id=f"{plan.workload.name}/{config.config_id}/r{repeat}", number=self._next_number,
                    workload=plan.workload.name, config_id=config.config_id, repeat=repeat, params=params,
                    train=plan.train, train_kwargs=plan.train_kwargs, eval_every=plan.workload.eval_every,
                    steps_planned=steps_planned, cpus=self.study.cpus_per_trial,
                    gpus=self.study.gpus_per_trial,
                    artifact_dir=str((self.study.path / "artifacts" / f"trial-{self._next_number:05d}").resolve()),
                    predicted_cpu_s_per_step=plan.gate.predicted_cpu_s_per_step(params, steps_planned)
                    if plan.gate is not None else None,  # a stop before the first window is credited at it
                )
                if self._judge is not None and plan.workload.train is None:  # its record carries the screen's cost
                    with contextlib.suppress(MeasurementError):
                        self._judge.keep(task.trial_id, self._judge.screen(
                            plan.workload.name, plan.workload.algorithm, params, plan.train_kwargs["data"]))
                executor.submit(task)
                self._next_number += 1
                by_task[task.trial_id] = (plan, config)
                self.progress("start", task)
                return True
        return False

    def _skipped(self, plan: _WorkloadPlan, config: Config) -> bool:
        """Record ``config`` as SKIPPED, and tell the sampler, if it is predicted over budget."""
        if plan.gate is None:
            return False
        params = {**plan.workload.params, **config.params}
        record = plan.gate.skip(config_id=config.config_id, params=params, steps_planned=_steps_planned(plan, params),
                                number=self._next_number, repeats=self.study.repeats)
        if record is None:
            return False
        self._next_number += 1
        self._record(record)
        self.progress("end", record)
        plan.sampler.tell(config, [record])
        return True

    def _serving_judge(self, limits: dict[str, float]) -> ServingJudge:
        """The judge of serving budgets: measuring on this machine, or on a Ray node that offers
        ``[deploy] resources`` (the cluster is connected by now)."""
        deploy = self.study.deployment()
        if deploy.resources:
            from frugalml.deploy import on_ray  # lazy: Ray

            return ServingJudge(limits, deploy, runner=on_ray(deploy))
        return ServingJudge(limits, deploy)

    def _screened_out(self, plan: _WorkloadPlan, config: Config) -> bool:
        """Measure a built-in configuration's untrained model under ``[deploy]`` before it trains;
        record it as SKIPPED (or FAILED, where it cannot be measured), and tell the sampler, if it
        cannot meet a serving budget."""
        if self._judge is None or plan.workload.train is not None:
            return False
        params = {**plan.workload.params, **config.params}
        if plan.workload.name not in self._prefetched:  # a grid's architectures, measured in one go
            self._prefetched.add(plan.workload.name)
            with contextlib.suppress(MeasurementError):
                self._judge.prefetch(plan.workload.name, plan.workload.algorithm,
                                     _grid_architectures(self.study.search, plan.workload.params),
                                     plan.train_kwargs["data"])
        base = TrialRecord(trial_id=f"{plan.workload.name}/{config.config_id}/r0", number=self._next_number,
                           workload=plan.workload.name, config_id=config.config_id, repeat=0, params=params,
                           status=TrialStatus.SKIPPED, steps_planned=_steps_planned(plan, params))
        try:
            cost = self._judge.screen(plan.workload.name, plan.workload.algorithm, params, plan.train_kwargs["data"])
        except MeasurementError as error:
            record = dataclasses.replace(base, status=TrialStatus.FAILED, error=str(error),
                                         info={"stop_phase": "deploy"})
        else:
            record = self._judge.skipped(base, cost)
            if record is None:
                return False
        self._next_number += 1
        self._record(record)
        self.progress("end", record)
        plan.sampler.tell(config, [record])
        return True

    @staticmethod
    def _check_usage(record: TrialRecord, executor: Executor) -> None:
        """Abort on mistakes every trial would repeat: a user error raised in the
        training code, or a training function that never called ``trial.step``."""
        if record.status is TrialStatus.FAILED and record.info.get("user_error"):
            executor.shutdown()
            raise FrugalError(f"Trial {record.trial_id} failed: {record.error}")
        if record.status is TrialStatus.COMPLETED and record.steps_done == 0:
            executor.shutdown()
            raise TrialUsageError(
                f"The training function of workload '{record.workload}' returned without calling "
                "trial.step(); call trial.step(loss, n_samples) once per training step."
            )


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
