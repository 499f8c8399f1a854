"""Before a configuration runs: predict its cost, skip it if it cannot fit, re-check after.

Settings come from the study file's ``[prediction]`` table::

    [prediction]
    skip = true                 # false: predict and re-check, never skip
    screen = false              # true: TPE/NSGA-II/random never propose what would be skipped
    confidence = 0.9            # skip only when the lower bound breaks a budget
    min_observations = 4        # trials of the workload needed before anything is skipped
    features = ["batch_size"]   # parameters the cost depends on (see CostModel); for the
                                # built-in networks: batch_size, weights_mb, activations_mb, gflops
    history = ["studies/old"]   # earlier studies of the same workloads, used as observations
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from frugalml.accounting import credible_prediction, skip_saving
from frugalml.budgets import BUDGETS, SAMPLE, WINDOW
from frugalml.exceptions import ConfigError
from frugalml.metrics import CPU_MS_PER_STEP, MEAN_STEP_MS, TRIAL_SECONDS
from frugalml.prediction._cost_model import PREDICTED_METRICS, CostModel, DatasetShape, broken_metric, observed_costs
from frugalml.prediction._estimate import Estimate
from frugalml.records import StopInfo, StopKind, TrialRecord, TrialStatus
from frugalml.store import ResultStore
from frugalml.validation import check_keys

SKIP_REASON = "skipped: predicted over budget"
#: until the cost model predicts a budget's metric, screening lets a candidate's cost features grow
#: at most this factor past the largest of a trial that ran within that budget (a safe region that
#: grows from what was measured, rather than random start-up draws far past the budget)
SAFE_EXPANSION = 2.0


@dataclass(frozen=True)
class PredictionSettings:
    """The ``[prediction]`` table of a study; see the module docstring."""

    skip: bool = True
    screen: bool = False
    confidence: float = 0.9
    min_observations: int = 4
    features: tuple[str, ...] | None = None  # None: batch_size, and a built-in network's architecture
    history: tuple[str, ...] = ()

    @property
    def model_features(self) -> tuple[str, ...]:
        """The cost model's features when nothing adds a workload's own: ``features`` or batch_size."""
        return self.features if self.features is not None else ("batch_size",)

    @classmethod
    def from_config(cls, table: Mapping[str, Any]) -> PredictionSettings:
        check_keys("[prediction]", table, [f.name for f in fields(cls)])
        values = dict(table)
        for key in ("skip", "screen"):
            if not isinstance(values.get(key, True), bool):
                raise ConfigError(f"[prediction] '{key}' must be true or false. Got {values[key]!r} instead.")
        for key in ("features", "history"):
            if key in values:
                if not isinstance(values[key], (list, tuple)) or not all(isinstance(v, str) for v in values[key]):
                    raise ConfigError(f"[prediction] '{key}' must be a list of strings. Got {values[key]!r} instead.")
                values[key] = tuple(values[key])
        settings = cls(**values)
        CostModel(settings.model_features, min_observations=settings.min_observations,
                  confidence=settings.confidence)
        return settings


def _as_dict(estimate: Estimate) -> dict[str, float]:
    return {"predicted": estimate.value, "low": estimate.low, "high": estimate.high}


class CostScreen:
    """Predicts each configuration of one workload before it is launched.

    Args:
        settings: the study's prediction settings.
        budget: the study's budgets (only memory, step time and trial time matter here).
        workload: the workload's name (trial ids start with it).
        shape: the training split's shape, for batch MB.
        records: returns this workload's trials so far (the model refits when they change).
        history: trials of the same workload from earlier studies.
        derive: derived cost features of a configuration (see :class:`CostModel`).
        features: the cost model's features, when not the settings' own.
    """

    def __init__(self, settings: PredictionSettings, budget: Mapping[str, float], workload: str,
                 shape: DatasetShape, records: Callable[[], Sequence[TrialRecord]],
                 history: Sequence[TrialRecord] = (),
                 derive: Callable[[Mapping[str, Any]], Mapping[str, float]] | None = None,
                 features: Sequence[str] | None = None) -> None:
        self.settings = settings
        self.budget = {k: float(v) for k, v in budget.items() if k in PREDICTED_METRICS}
        self.workload = workload
        self.shape = shape
        self.records = records
        self.history = tuple(history)
        self.model = CostModel(features or settings.model_features, min_observations=settings.min_observations,
                               confidence=settings.confidence, derive=derive)
        self._fitted_on = -1
        self._predictions: dict[str, dict[str, Estimate]] = {}

    @classmethod
    def for_study(cls, study: Any, workload: Any, data: Any,
                  records: Callable[[], Sequence[TrialRecord]]) -> CostScreen | None:
        """The screen of ``workload`` in ``study``, or None when the study does not predict.

        A built-in network's configurations are predicted from its architecture
        (``weights_mb``, ``activations_mb``, ``gflops`` beside ``batch_size``) unless
        ``[prediction] features`` names others.
        """
        settings = study.prediction_settings()
        if settings is None:
            return None
        shape = DatasetShape(data.n_train, data.n_features) if data is not None else DatasetShape()
        history = [r for directory in settings.history for r in _load_history(directory)
                   if r.workload == workload.name]
        derive = features = None
        if data is not None:
            from frugalml.workloads import NETWORK_FEATURES, NETWORKS, network_features

            if workload.algorithm in NETWORKS:
                derive = network_features(workload.algorithm, data.n_features, len(data.classes) or 1)
                if settings.features is None:  # an explicit list, even ["batch_size"], is the user's choice
                    features = ("batch_size", *NETWORK_FEATURES)
        return cls(settings, study.budget, workload.name, shape, records, history, derive, features)

    def predict(self, params: Mapping[str, Any], steps_planned: int | None) -> dict[str, Estimate]:
        """Predicted costs of ``params``; empty until the model has enough observations."""
        observed = [*self.history, *self.records()]
        if len(observed) != self._fitted_on:
            self.model.fit(observed, self.shape)
            self._fitted_on = len(observed)
        if not self.model.ready:
            return {}
        predictions = self.model.predict(params)
        step = predictions.get(MEAN_STEP_MS)
        if step is not None and steps_planned:
            # training time alone: a lower bound of the wall time, which adds evaluation
            predictions[TRIAL_SECONDS] = Estimate(*(v * steps_planned / 1000.0 for v in step))
        return predictions

    def skip(self, *, config_id: str, params: Mapping[str, Any], steps_planned: int | None, number: int,
             repeats: int = 1) -> TrialRecord | None:
        """A SKIPPED record if ``params`` is predicted over a budget, else None.

        Predicted over budget means: the cost model's lower bound at the confidence
        breaks it, or a configuration with the same cost features (differing only
        in, say, the learning rate) was measured breaking it (a hard stop; a
        predicted stop is not evidence enough). The model's prediction is
        kept either way, so :meth:`annotate` can re-check it.
        """
        predictions = self.predict(params, steps_planned)
        self._predictions[config_id] = predictions
        if not self.settings.skip:
            return None
        prediction = self._over_budget(predictions) or self._same_cost_as_a_broken_one(self.model.design(params))
        if prediction is None:
            return None
        saving = skip_saving(steps_planned, self._cpu_s_per_step(params, predictions), repeats)
        key, metric, limit, low = prediction["budget"], prediction["metric"], prediction["threshold"], prediction["low"]
        stop = StopInfo(
            rule=f"skipped_{key}", kind=StopKind.SYSTEM, step=0, value=low, threshold=limit,
            message=f"skipped: {metric} predicted >= {low:.4g} ({prediction['basis']}) > budget {limit:g}",
        )
        return saving.apply(TrialRecord(
            trial_id=f"{self.workload}/{config_id}/r0", number=number, workload=self.workload,
            config_id=config_id, repeat=0, params=dict(params), status=TrialStatus.SKIPPED,
            steps_planned=steps_planned, stop=stop, info={"reason": SKIP_REASON, "prediction": prediction},
        ))

    def _cpu_s_per_step(self, params: Mapping[str, Any], predictions: Mapping[str, Estimate]) -> float | None:
        """The predicted CPU-seconds per step, where the model can stand behind it (a narrow
        interval, inside the range it was fitted on: :func:`frugalml.accounting.credible_prediction`);
        None (saved: ``unknown``) otherwise."""
        metric = CPU_MS_PER_STEP if CPU_MS_PER_STEP in predictions else MEAN_STEP_MS
        cpu = predictions.get(metric)
        if cpu is None:
            return None
        return credible_prediction(cpu.value / 1000.0, cpu.low / 1000.0, cpu.high / 1000.0,
                                   reach=self.model.reach(params, metric))

    def predicted_cpu_s_per_step(self, params: Mapping[str, Any], steps_planned: int | None) -> float | None:
        """The cost model's CPU-seconds per step of ``params`` (evaluation included), or None
        while it cannot tell: what a trial stopped before its first window is credited at."""
        return self._cpu_s_per_step(params, self.predict(params, steps_planned))

    def violations(self, params: Mapping[str, Any], steps_planned: int | None) -> dict[str, float] | None:
        """``upper bound / limit - 1`` of each budget ``params`` may break (its prediction's
        upper bound at ``confidence`` is over the limit, or a trial whose cost features were
        each no larger than those of ``params`` broke it), else None: the a-priori constraint a
        screening sampler rejects candidates on (HyperPower).

        Screening is cautious where skipping is sure (:meth:`skip` waits for the lower
        bound): a rejected candidate costs the sampler one more draw, while a proposal that
        breaks the budget costs a trial start and is one more over-budget trial. On the point
        prediction, a sampler drawn to a budget-bound optimum (a GP especially) proposes at
        the predicted edge, where about half the candidates break it. Before the model
        predicts a budget's metric, a candidate past ``SAFE_EXPANSION`` times the cost features
        of a trial that ran within that budget is rejected with a NaN violation: not predicted
        to break it, only not known to fit, so a sampler must not learn it as infeasible (told
        as infeasible, GP search learnt the whole range of large batches as such, and one run
        of five stayed among small batches).
        """
        predictions = self.predict(params, steps_planned)
        broken = {key: ratio - 1.0 for key, ratio in self._broken(predictions, "high").items()}
        x = self.model.design(params)
        if x is None:
            return broken or None
        if not broken and (same := self._same_cost_as_a_broken_one(x, at_least=True)) is not None:
            broken = {same["budget"]: BUDGETS[same["budget"]].violation(same["low"], same["threshold"])}
        return broken or self._past_the_safe_region(x, predictions) or None

    def _past_the_safe_region(self, x: Sequence[float], predictions: Mapping[str, Estimate]) -> dict[str, float]:
        """NaN for each budget whose metric the model does not predict for ``params`` (before
        ``min_observations``, or while the trials that broke it measured only a lower bound) and
        for which a cost feature of ``params`` (the model's features: batch MB, a network's
        weights, activations and FLOPs, or the user's) is more than ``SAFE_EXPANSION`` times the
        largest among the trials the model observed within it: costs grow with each. Nothing is
        known before the first trial ends, so nothing is rejected then; a budget no trial
        measures (trial seconds, which only the prediction gives) is never screened so. ``x``: the
        candidate's design row."""
        past = {}
        for key, limit in self.budget.items():
            metric = PREDICTED_METRICS[key]
            X, y = self.model.observations_.get(metric, (None, None))
            if metric in predictions or X is None or not (y <= limit).any():
                continue
            largest = X[y <= limit].max(axis=0)
            factor = max((value / top for value, top in zip(x[1:], largest[1:]) if top > 0), default=1.0)
            if factor > SAFE_EXPANSION:
                past[key] = math.nan  # unknown, not predicted: the sampler must not learn it as infeasible
        return past

    def trial_cost(self, params: Mapping[str, Any], steps_planned: int | None) -> tuple[float, float] | None:
        """(predicted CPU-s of a trial of ``params``, the median CPU-s of the workload's
        completed trials), or None while the model or the steps cannot tell."""
        cpu = self.predict(params, steps_planned).get(CPU_MS_PER_STEP)
        finished = [r.cpu_s for r in [*self.history, *self.records()]
                    if r.status is TrialStatus.COMPLETED and math.isfinite(r.cpu_s) and r.cpu_s > 0]
        if cpu is None or not steps_planned or not finished:
            return None
        return cpu.value * steps_planned / 1000.0, statistics.median(finished)

    def _broken(self, predictions: dict[str, Estimate], bound: str) -> dict[str, float]:
        """Budget key -> ``bound`` (``"low"`` or ``"high"``) of its metric's prediction over the
        limit, for each budget that bound breaks."""
        return {key: getattr(predictions[metric], bound) / limit for key, limit in self.budget.items()
                if (metric := PREDICTED_METRICS[key]) in predictions and getattr(predictions[metric], bound) > limit}

    def _over_budget(self, predictions: dict[str, Estimate]) -> dict[str, Any] | None:
        broken = self._broken(predictions, "low")
        if not broken:
            return None
        key = max(broken, key=lambda k: (broken[k], k))
        metric = PREDICTED_METRICS[key]
        return {
            "budget": key, "metric": metric, "threshold": self.budget[key], **_as_dict(predictions[metric]),
            "confidence": self.settings.confidence, "observations": self.model.n_observations_,
            "basis": f"cost model, {self.settings.confidence:.0%} lower bound",
            "costs": {m: _as_dict(e) for m, e in predictions.items()},
        }

    def _same_cost_as_a_broken_one(self, x: Sequence[float] | None, at_least: bool = False) -> dict[str, Any] | None:
        """The evidence that a trial with the same cost features (design row ``x``) broke a budget
        (``at_least``: or, for memory and step time, with cost features no larger, each of
        them, since those costs grow with each). A trial of an earlier study that stayed within
        this study's budget is no evidence."""
        if x is None:
            return None
        for record in [*self.history, *self.records()]:
            key = record.stop.rule if record.stop is not None and record.stop.is_system else None
            if key not in self.budget or (measured := self.model.design(record.params)) is None:
                continue
            budget, limit, stop = BUDGETS[key], self.budget[key], record.stop
            broke = math.isfinite(stop.value) and budget.breaks(stop.value, limit)  # measured past this limit
            # a GPU out-of-memory reads nothing, or below its own limit: evidence for the same features
            # only, under a budget no looser than the one it was stopped for
            unread = not math.isfinite(stop.value) or not budget.breaks(stop.value, stop.threshold)
            same = measured == x and (broke or (unread and not budget.breaks(stop.threshold, limit)))
            larger = (at_least and broke and budget.scope in (SAMPLE, WINDOW)
                      and all(a >= b for a, b in zip(x, measured)))
            if not (same or larger):
                continue
            relation = "same cost features as" if measured == x else "cost features at least those of"
            return {
                "budget": key, "metric": PREDICTED_METRICS[key], "threshold": self.budget[key],
                "predicted": record.stop.value, "low": record.stop.value, "high": None,
                "confidence": self.settings.confidence, "observations": self.model.n_observations_,
                "basis": f"{relation} {record.trial_id}, which broke it",
            }
        return None

    def annotate(self, record: TrialRecord) -> TrialRecord:
        """Add predicted vs measured costs to a trial that ran (``info["cost_prediction"]``)."""
        predictions = self._predictions.get(record.config_id)
        if not predictions or record.status is TrialStatus.FAILED:
            return record
        measured = observed_costs(record)
        if record.status is TrialStatus.COMPLETED:
            measured[TRIAL_SECONDS] = record.wall_s
        censored = broken_metric(record)
        check: dict[str, Any] = {"observations": self.model.n_observations_}
        for metric, estimate in predictions.items():
            entry: dict[str, Any] = _as_dict(estimate)
            value = measured.get(metric)
            if value is not None and value > 0:
                entry.update(measured=value, error=estimate.value / value - 1.0,
                             within=estimate.low <= value <= estimate.high)
                if metric == censored:
                    entry["measured_is_lower_bound"] = True  # stopped on the way up
            check[metric] = entry
        return replace(record, info={**record.info, "cost_prediction": check})


def _load_history(directory: str) -> list[TrialRecord]:
    path = Path(directory)
    store = ResultStore(path)
    if not store.exists:
        raise ConfigError(f"[prediction] history: no study results in {path}; give the directory of an earlier study.")
    return [r for r in store.trials(with_steps=False) if math.isfinite(r.cpu_s)]
