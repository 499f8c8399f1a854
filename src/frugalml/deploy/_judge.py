"""Serving budgets applied to a study's trials: before training where the model's serving cost
does not depend on its weights, else on the model the trial kept, once it ended."""

from __future__ import annotations

import concurrent.futures
import dataclasses
from typing import Any, Callable, Mapping

from frugalml.accounting import skip_saving
from frugalml.deploy._envelope import Deploy
from frugalml.deploy._measure import MeasurementError, run_probe, serving_record, verdict
from frugalml.metrics import CPU_S
from frugalml.records import TrialRecord, TrialStatus

LOG_MODEL_HINT = ("call trial.log_model(model, input_example=X[:5]) at the end of training, so frugalml can "
                  "measure what the model costs to serve")
#: the parameters that shape a built-in model (what its serving cost depends on)
ARCHITECTURE = ("depth", "width", "activation", "dropout", "channels", "kernel")

Runner = Callable[..., dict[str, float]]


class ServingJudge:
    """Measures trials' models under ``deploy`` and holds them to the serving ``limits`` (none:
    measured only, for a study that optimises a serving cost).

    ``screen`` measures a built-in configuration before it trains (cached per architecture:
    an SGD model's cost is one per workload, a network's one per shape). ``submit`` takes
    a finished trial's record and measures the model it logged on a thread, in a fresh
    process, while the study goes on; ``finished`` hands back the records with their
    ``info["serving"]`` set, stopped (``stop_phase = "deploy"``) where a budget is broken,
    failed where the model could not be measured. ``runner`` is injectable for tests.
    """

    def __init__(self, limits: Mapping[str, float], deploy: Deploy, *, runner: Runner = run_probe) -> None:
        self.limits, self.deploy, self._run = dict(limits), deploy, runner
        self._screened: dict[tuple, dict[str, Any] | MeasurementError] = {}
        self._screened_workloads: set[str] = set()
        self._charged: set[int] = set()
        self._measured: dict[str, tuple[dict[str, Any], float]] = {}  # trial id -> its screen's cost, CPU to charge
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending: dict[concurrent.futures.Future, TrialRecord] = {}

    # -- before training ------------------------------------------------------------------

    @staticmethod
    def _key(workload: str, algorithm: str, params: Mapping[str, Any]) -> tuple:
        return (workload, algorithm, *(params.get(name) for name in ARCHITECTURE))

    @staticmethod
    def _spec(algorithm: str, params: Mapping[str, Any], data: Any) -> dict[str, Any]:
        _, _, _, y_test = data.arrays(mmap=True)
        return {"kind": "builtin", "algorithm": algorithm, "params": dict(params), "task": data.task,
                "dataset": data.name, "n_features": data.n_features, "labels": y_test[:256].tolist(),
                "n_outputs": len(data.classes) if data.task == "classification" else 1}

    @staticmethod
    def _rows(data: Any) -> Any:
        return data.arrays(mmap=True)[2][:256]

    def prefetch(self, workload: str, algorithm: str, configs: list[Mapping[str, Any]], data: Any) -> None:
        """Measure the architectures of ``configs`` not measured yet in one probe process that imports
        the framework once and forks a fresh child per architecture (a grid's, at its start)."""
        todo = {}
        for params in configs:
            todo.setdefault(self._key(workload, algorithm, params), params)
        todo = {key: params for key, params in todo.items() if key not in self._screened}
        if len(todo) < 2:
            return
        self._screened_workloads.add(workload)
        spec = {"batch": [self._spec(algorithm, params, data) for params in todo.values()]}
        for key, cost in zip(todo, self._run(spec, self.deploy, rows=self._rows(data))):
            self._screened[key] = (MeasurementError(f"the model could not be measured in a fresh process: "
                                                    f"{cost['error']}") if "error" in cost
                                   else {**cost, "where": "before training"})

    def screen(self, workload: str, algorithm: str, params: Mapping[str, Any], data: Any) -> dict[str, Any]:
        """The serving cost of a built-in configuration's untrained model (one-line
        :class:`MeasurementError` where it cannot be measured)."""
        self._screened_workloads.add(workload)
        key = self._key(workload, algorithm, params)
        if key not in self._screened:
            cost = self._run(self._spec(algorithm, params, data), self.deploy, rows=self._rows(data))
            self._screened[key] = {**cost, "where": "before training"}
        if isinstance(self._screened[key], MeasurementError):
            raise self._screened[key]
        return self._screened[key]

    def _charge(self, cost: Mapping[str, Any]) -> float:
        """The CPU-seconds a measurement took, charged to the first record that uses it (0 after)."""
        if id(cost) in self._charged:
            return 0.0
        self._charged.add(id(cost))
        return float(cost.get(CPU_S) or 0.0)

    def keep(self, trial_id: str, cost: Mapping[str, Any]) -> None:
        """Remember a screened trial's cost, for its record when it ends."""
        self._measured[trial_id] = (dict(cost), self._charge(cost))

    def skipped(self, record: TrialRecord, cost: Mapping[str, Any]) -> TrialRecord | None:
        """``record`` (a SKIPPED stand-in) with the budget ``cost`` breaks, or None if it fits; the
        measurement's CPU-seconds are the skipped configuration's cost."""
        stop = verdict(cost, self.limits, before=" (measured on the untrained model, before training)")
        if stop is None:
            return None
        stop = dataclasses.replace(stop, rule=f"skipped_{stop.rule}", message=f"skipped: {stop.message}")
        charge = self._charge(cost)
        info = {**record.info, "serving": serving_record(cost, charge), "stop_phase": "deploy"}
        # its planned steps not run, at a cost no one predicted: unknown (was read as 'unrecorded', an old record)
        return skip_saving(record.steps_planned, None).apply(dataclasses.replace(record, stop=stop, cpu_s=charge,
                                                                                   info=info))

    # -- after training -------------------------------------------------------------------

    def takes(self, record: TrialRecord) -> bool:
        """True for a record this judge still has to measure or annotate: a screened built-in
        trial's, or a user's trial that may ship (its model is measured)."""
        if record.trial_id in self._measured:
            return True
        return record.feasible and record.workload not in self._screened_workloads

    def submit(self, record: TrialRecord) -> TrialRecord | None:
        """Start measuring ``record``'s model; returns the record at once where nothing is left
        to measure (a screened trial, or a model never logged: then failed, a user error)."""
        screened = self._measured.pop(record.trial_id, None)
        if screened is not None:
            cost, charge = screened
            return dataclasses.replace(record, cpu_s=record.cpu_s + charge,
                                       info={**record.info, "serving": serving_record(cost, charge)})
        model = record.info.get("model")
        if (not isinstance(model, Mapping) or not model.get("path")) and record.status is not TrialStatus.COMPLETED:
            # a learning rule ended it before it kept a model: feasible for learning, unmeasured to serve
            return dataclasses.replace(record, info={**record.info, "serving_unmeasured": "stopped before log_model"})
        if not isinstance(model, Mapping) or not model.get("path"):
            return dataclasses.replace(
                record, status=TrialStatus.FAILED, stop=None,
                error=f"the study measures serving costs ({', '.join(self.limits) or 'as objectives'}) but the trial "
                      f"logged no model: "
                      f"{LOG_MODEL_HINT}.", info={**record.info, "user_error": True})
        if self._pool is None:  # one at a time: measurements must not compete with each other for the cores
            self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="frugalml-deploy")
        future = self._pool.submit(self._run, {"kind": "saved", "model_dir": model["path"]}, self.deploy)
        self._pending[future] = record
        return None

    @property
    def pending(self) -> int:
        return len(self._pending)

    def finished(self, timeout: float = 0.0) -> list[TrialRecord]:
        """Records whose measurement ended (waiting up to ``timeout`` seconds for one)."""
        if not self._pending:
            return []
        done, _ = concurrent.futures.wait(list(self._pending), timeout=timeout,
                                          return_when=concurrent.futures.FIRST_COMPLETED)
        return [self._judged(self._pending.pop(future), future) for future in done]

    def _judged(self, record: TrialRecord, future: concurrent.futures.Future) -> TrialRecord:
        try:
            cost = {**future.result(), "where": "after training"}
        except MeasurementError as error:
            return dataclasses.replace(record, status=TrialStatus.FAILED, stop=None, error=str(error),
                                       info={**record.info, "stop_phase": "deploy"})
        charge = float(cost.get(CPU_S) or 0.0)  # measuring is part of what the trial cost
        info = {**record.info, "serving": serving_record(cost, charge)}
        cpu_s = record.cpu_s + charge
        stop = verdict(cost, self.limits, step=record.steps_done, before=" (measured after training)")
        if stop is None:
            return dataclasses.replace(record, cpu_s=cpu_s, info=info)
        return dataclasses.replace(record, status=TrialStatus.STOPPED, stop=stop, cpu_s=cpu_s,
                                   info={**info, "stop_phase": "deploy"})

    def close(self) -> None:
        """Stop measuring: pending measurements are dropped (``--resume`` runs their trials again)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pending.clear()
