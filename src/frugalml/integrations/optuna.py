"""frugalml's system budgets for Optuna: a pruner, a helper that measures an objective,
and a sampler wrapper that stops proposing configurations that cannot fit.

:class:`SystemMetrics` (or the :func:`instrument` decorator) measures the trial's
process at each ``trial.report`` and hands the figures to :class:`SystemBudgetPruner`
in memory; it stores them as the user attribute ``"frugalml"`` every ``flush_every``
reports, when the trial is pruned and when it ends, so they live in the study's
storage. With an RDB storage (``sqlite:///study.db``, PostgreSQL, MySQL) several
processes or machines share one study, and any of them can see why a trial was pruned:
a trial pruned for a budget gets the user attribute ``"frugalml_stop"`` and, with
Optuna >= 5, the per-trial constraint Optuna's samplers read (``Trial.set_constraint``).

Example::

    import optuna
    from frugalml.integrations.optuna import BudgetGatedSampler, SystemBudgetPruner, instrument

    @instrument                                     # measures the objective's process
    def objective(trial):                           # a plain Optuna objective
        model = make_model(trial.suggest_int("batch_size", 30, 30000, log=True))
        for epoch in range(20):
            loss = train_one_epoch(model)
            trial.report(loss, epoch)               # also measures memory_mb, mean_step_ms...
            if trial.should_prune():
                raise optuna.TrialPruned()
        return loss

    study = optuna.create_study(
        storage="sqlite:///study.db", study_name="svm", load_if_exists=True,
        sampler=BudgetGatedSampler(optuna.samplers.TPESampler(), features=["batch_size"]),
        pruner=SystemBudgetPruner(max_memory_mb=400, wrapped=optuna.pruners.MedianPruner()),
    )
    study.optimize(objective, n_trials=16)

Costs: a sidecar process samples the objective's process at 10 Hz (~0.1 s to start,
once per process; ~17 MB, none of it in the objective's process); each report reads
the process once (~10-50 µs) and keeps the figures in memory; one storage write per
``flush_every`` reports (default 10), on prune and at the end, on top of
``trial.report``'s own. ``benchmarks/optuna_overhead.py``: Optuna's SGDClassifier
pruning example on SQLite runs as fast per step with ``@instrument`` as without.
Memory is the process's, so run one trial per process (several processes on one
storage, or ``n_jobs=1``) for per-trial figures: threads of one process share it.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import asdict
from typing import Any, Callable, Mapping, Sequence

from frugalml.budgets import BUDGETS
from frugalml.exceptions import ConfigError
from frugalml.integrations._budget import budget_rules, view_of
from frugalml.integrations._sidecar import SystemSampler
from frugalml.metrics import CPU_S, GPU_MEMORY_MB, MEAN_STEP_MS, MEMORY_MB, PEAK_MEMORY_MB, WALL_S
from frugalml.prediction import CostScreen, DatasetShape, PredictionSettings, check_confidence
from frugalml.records import StopInfo, StopKind, TrialRecord, TrialStatus, Window
from frugalml.stopping import StudyComputeBudget, check_all
from frugalml.validation import Interval, check

try:
    import optuna
    from optuna.pruners import BasePruner
    from optuna.samplers import BaseSampler
except ImportError:  # pragma: no cover - optuna is a frugalml dependency
    raise ConfigError("frugalml.integrations.optuna needs Optuna; install it with: pip install optuna") from None

__all__ = [
    "ATTR", "BudgetGatedSampler", "STOP_ATTR", "SystemBudgetPruner", "SystemMetrics", "budget_constraints", "instrument",
]

ATTR = "frugalml"  # user attribute: the system metrics of the latest stored report
STOP_ATTR = "frugalml_stop"  # user attribute: which budget pruned the trial

# (study name, trial number) -> the latest metrics of the trials this process is measuring:
# the pruner reads them here, so a report costs no storage write of its own
_LIVE: dict[tuple[str, int], dict[str, float]] = {}
_HAS_CONSTRAINTS = hasattr(optuna.trial.Trial, "set_constraint")  # Optuna >= 5


def _metrics(study: optuna.Study | None, trial: optuna.trial.FrozenTrial) -> Mapping[str, float] | None:
    """A trial's latest metrics: in memory if this process measures it, else from the storage."""
    live = _LIVE.get((study.study_name, trial.number)) if study is not None else None
    return live if live is not None else trial.user_attrs.get(ATTR)


class SystemBudgetPruner(BasePruner):
    """Prunes trials whose reported system metrics break a frugalml budget.

    Budgets are the keys of a study's ``[budget]`` table: ``max_memory_mb``,
    ``max_mean_step_ms``, ``max_trial_seconds`` and ``max_study_cpu_seconds`` (the
    CPU-seconds of all the study's trials; another process's running trials count
    with their latest stored figures). A trial without system metrics (not measured
    by :class:`SystemMetrics`) is never pruned for a budget.

    Args:
        budget: a mapping of budgets, e.g. ``{"max_memory_mb": 400}``.
        wrapped: another pruner consulted when no budget is broken (e.g. ``MedianPruner``).
        **budgets: budgets as keywords.

    Example:
        >>> pruner = SystemBudgetPruner(max_memory_mb=400, wrapped=optuna.pruners.MedianPruner())
    """

    def __init__(self, budget: Mapping[str, Any] | None = None, *, wrapped: BasePruner | None = None,
                 **budgets: Any) -> None:
        if wrapped is not None and not isinstance(wrapped, BasePruner):
            raise ConfigError(f"`wrapped` must be an optuna pruner, but got {wrapped!r}.")
        self.rules = budget_rules("SystemBudgetPruner", budget, budgets)
        self.budget = {key: float(limit) for key, limit in {**dict(budget or {}), **budgets}.items()}
        self.wrapped = wrapped
        self._needs_study = any(isinstance(rule, StudyComputeBudget) for rule in self.rules)

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        if self.explain(study, trial) is not None:
            return True
        return self.wrapped is not None and self.wrapped.prune(study, trial)

    def explain(self, study: optuna.Study | None, trial: optuna.trial.FrozenTrial) -> StopInfo | None:
        """The budget ``trial`` breaks (rule, value, threshold, message), or None."""
        return self._check(study, trial.number, _metrics(study, trial))

    def _check(self, study: optuna.Study | None, number: int, metrics: Mapping[str, float] | None) -> StopInfo | None:
        if not metrics:
            return None
        study_cpu_s = 0.0
        if self._needs_study and study is not None:
            others = (_metrics(study, t) or {} for t in study.get_trials(deepcopy=False) if t.number != number)
            study_cpu_s = sum(m.get(CPU_S, 0.0) for m in others) + metrics.get(CPU_S, 0.0)
        return check_all(self.rules, view_of(number, int(metrics.get("step", 0)), metrics, study_cpu_s))


def budget_constraints(trial: optuna.trial.FrozenTrial) -> tuple[float]:
    """A ``constraints_func`` for Optuna < 5 (no ``Trial.set_constraint``): the violation
    ``value / budget - 1`` of the budget that pruned ``trial``, ``0.0`` when none did.

    Example:
        >>> sampler = optuna.samplers.NSGAIISampler(constraints_func=budget_constraints)  # doctest: +SKIP
    """
    stop = trial.user_attrs.get(STOP_ATTR)
    if not stop or stop.get("kind") != StopKind.SYSTEM or not stop.get("threshold"):
        return (0.0,)
    return (stop["value"] / stop["threshold"] - 1.0,)


class SystemMetrics:
    """Measures an Optuna trial's process and reports its system metrics with each value.

    Call :meth:`step` once per training step for a true step time (a clock read and
    an append); without it ``mean_step_ms`` is the time between reports divided by
    the steps between them. Either way the time spent in ``trial.report``,
    ``should_prune`` and storage writes is left out.

    Args:
        trial: the Optuna trial.
        interval_s: the sidecar's sampling period.
        sidecar: also sample from a separate process between reports (default); False
            gives the figures at each report only (no peak between reports).
        flush_every: store the metrics every this many reports (and always on prune
            and at the end); the pruner in this process sees every report regardless.
        sampler: a :class:`SystemSampler` to measure with, left running at the end for
            the next trial (``interval_s`` and ``sidecar`` are then its own); by
            default a new one, closed at the end.
        collect: collect garbage before the trial (see :meth:`SystemSampler.start`);
            needed after a trial of this process that raised (was pruned).

    Example::

        def objective(trial):
            with SystemMetrics(trial) as system:
                for epoch in range(20):
                    for X, y in batches:
                        model.partial_fit(X, y)
                        system.step()
                    system.report(val_loss(model), epoch)
                    if system.should_prune():
                        raise optuna.TrialPruned()
            return val_loss(model)
    """

    def __init__(self, trial: optuna.Trial, *, interval_s: float = 0.1, sidecar: bool = True,
                 flush_every: int = 10, sampler: SystemSampler | None = None, collect: bool = True) -> None:
        self.trial = trial
        self.flush_every = check("SystemMetrics", "flush_every", flush_every, Interval(int, 1, None))
        self.sampler = sampler if sampler is not None else SystemSampler(interval_s=interval_s, sidecar=sidecar)
        self._owns_sampler = sampler is None
        self._collect = collect
        self.latest: dict[str, float] = {}
        self._key = (trial.study.study_name, trial.number)
        self._peak_mb = 0.0
        self._reports = 0
        self._stored = True  # the storage has self.latest
        self._started = False

    def __enter__(self) -> SystemMetrics:
        if not self._started:
            self.sampler.start(collect=self._collect)
            self._started = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def step(self) -> None:
        """Mark the end of one training step."""
        self.sampler.step()

    def report(self, value: float, step: int) -> None:
        """Measure the system metrics since the previous report, then ``trial.report(value, step)``."""
        self.__enter__()
        metrics = self.sampler.window(step + 1)  # Optuna steps start at 0
        self._peak_mb = max(self._peak_mb, metrics.get(MEMORY_MB, 0.0))
        self.latest = {**metrics, PEAK_MEMORY_MB: self._peak_mb, "step": step}
        _LIVE[self._key] = self.latest
        self._stored = False
        self._reports += 1
        if self._reports % self.flush_every == 0:
            self.flush()
        self.trial.report(value, step)
        self.sampler.restart_step_clock()  # storage writes, not training

    def should_prune(self) -> bool:
        """``trial.should_prune()``; when a frugalml budget is the reason, the trial's
        metrics, the user attribute ``"frugalml_stop"`` and (Optuna >= 5) the constraint
        ``value / budget - 1`` named after the budget are stored."""
        try:
            return self._should_prune()
        finally:
            self.sampler.restart_step_clock()

    def _should_prune(self) -> bool:
        if not self.trial.should_prune():
            return False
        self.flush()  # other processes see what it measured when it was pruned
        pruner = self.trial.study.pruner
        if isinstance(pruner, SystemBudgetPruner) and self.latest:
            stop = pruner._check(self.trial.study, self.trial.number, self.latest)
            if stop is not None:
                self.trial.set_user_attr(STOP_ATTR, asdict(stop))
                if _HAS_CONSTRAINTS and stop.is_system and stop.rule in BUDGETS and BUDGETS[stop.rule].per_config:
                    self.trial.set_constraint(stop.rule, stop.violation)
        return True

    def flush(self) -> None:
        """Store the latest metrics as the user attribute ``"frugalml"`` (if not yet stored)."""
        if not self._stored and self.latest:
            self.trial.set_user_attr(ATTR, self.latest)
        self._stored = True

    def close(self) -> None:
        """Store the latest metrics and stop measuring (a sampler passed in keeps running). Idempotent."""
        try:
            self.flush()
        finally:
            _LIVE.pop(self._key, None)
            if self._owns_sampler:
                self.sampler.close()


class _InstrumentedTrial:
    """An Optuna trial whose ``report`` and ``should_prune`` go through :class:`SystemMetrics`."""

    def __init__(self, trial: optuna.Trial, system: SystemMetrics) -> None:
        self._trial, self.system = trial, system

    def report(self, value: float, step: int) -> None:
        self.system.report(value, step)

    def should_prune(self) -> bool:
        return self.system.should_prune()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trial, name)


def instrument(
    objective: Callable[[Any], Any] | None = None, *, interval_s: float = 0.1, sidecar: bool = True,
    flush_every: int = 10,
) -> Any:
    """Decorate a plain objective so its ``trial.report`` calls also measure system metrics.

    The objective runs unchanged; inside it, ``trial.system.step()`` marks training
    steps if you want per-step times (else a "step" is what you pass to ``report``).
    The arguments are :class:`SystemMetrics`'s. Trials that follow one another in a
    process share one sidecar (starting one costs ~0.1-0.3 s), and garbage is collected
    only after a trial that raised; trials running at the same time (``n_jobs > 1``) get
    a sidecar each.
    """
    check("instrument", "flush_every", flush_every, Interval(int, 1, None))

    def decorate(function: Callable[[Any], Any]) -> Callable[[optuna.Trial], Any]:
        # samplers of finished trials for the next ones, and whether their trial returned
        # normally (then it left no traceback cycles to collect)
        idle: list[tuple[SystemSampler, bool]] = []
        lock = threading.Lock()

        @functools.wraps(function)
        def measured(trial: optuna.Trial) -> Any:
            with lock:
                sampler, clean = idle.pop() if idle else (SystemSampler(interval_s=interval_s, sidecar=sidecar), False)
            returned = False
            try:
                with SystemMetrics(trial, flush_every=flush_every, sampler=sampler, collect=not clean) as system:
                    value = function(_InstrumentedTrial(trial, system))
                returned = True
                return value
            finally:
                with lock:
                    idle.append((sampler, returned))

        return measured

    return decorate(objective) if objective is not None else decorate


def _record(trial: optuna.trial.FrozenTrial) -> TrialRecord | None:
    """A finished trial as frugalml's cost model reads one (None if it was not measured)."""
    metrics = trial.user_attrs.get(ATTR)
    if not metrics:
        return None
    stop = trial.user_attrs.get(STOP_ATTR)
    steps = int(metrics.get("step", 0)) + 1
    window = {MEMORY_MB: metrics.get(PEAK_MEMORY_MB, metrics.get(MEMORY_MB))}
    window.update((name, metrics[name]) for name in (MEAN_STEP_MS, GPU_MEMORY_MB) if name in metrics)
    return TrialRecord(
        trial_id=str(trial.number), number=trial.number, workload="optuna", config_id=str(trial.number), repeat=0,
        params=trial.params, status=TrialStatus.COMPLETED if trial.state.name == "COMPLETE" else TrialStatus.STOPPED,
        steps_done=steps, wall_s=metrics.get(WALL_S, 0.0), cpu_s=metrics.get(CPU_S, 0.0),
        stop=StopInfo(**stop) if stop else None, windows=(Window(steps, {k: v for k, v in window.items() if v}),),
    )


class BudgetGatedSampler(BaseSampler):
    """A sampler that does not run proposals predicted to break the study's budgets.

    Recording a budget prune as a constraint is not enough for TPE: it already ranks a
    pruned trial among the worst, yet its prior favours regions it has seen little of,
    and the over-budget region holds only the few trials pruned there, so it keeps
    proposing sizes there. This wrapper judges each proposal of the wrapped sampler
    against the budgets of the study's :class:`SystemBudgetPruner`; it is predicted
    over a budget when

    * every cost feature is at least that of a trial pruned for the budget (costs grow
      with the features: batch size, width, number of features...), or
    * frugalml's cost model (:class:`frugalml.prediction.CostModel`, linear in the
      features), fitted on the study's measured trials, puts the lower bound of its
      ``confidence`` interval over the budget, or a configuration with the same
      features broke it.

    Such a proposal is recorded as a pruned trial that never ran (user attribute
    ``"frugalml_stop"`` with rule ``"skipped_<budget>"``, and the constraint the
    sampler learns from), as frugalml's own tuner records a skipped configuration,
    and the wrapped sampler is asked again; after ``redraws`` tries a random sampler
    is. Parameters sampled one at a time (TPE's start-up trials, independent sampling)
    are re-drawn without a record. The cost model loads ``scipy.stats`` (~40 MB) when
    the sampler is made, so that memory is in every trial's figures alike.

    Args:
        sampler: the sampler to wrap (default: ``TPESampler(seed=seed)``).
        features: the numeric parameters the costs grow with.
        confidence: one-sided confidence of the cost model's bounds.
        min_observations: measured trials needed before the cost model predicts.
        redraws: proposals asked of ``sampler``, then of the random sampler, before
            running the last one anyway.
        seed: seed of the random sampler.

    Attributes:
        n_skipped: proposals not run.

    Example:
        >>> sampler = BudgetGatedSampler(optuna.samplers.TPESampler(seed=0), features=["batch_size"])
    """

    def __init__(self, sampler: BaseSampler | None = None, *, features: Sequence[str], confidence: float = 0.9,
                 min_observations: int = 4, redraws: int = 10, seed: int | None = None) -> None:
        if sampler is not None and not isinstance(sampler, BaseSampler):
            raise ConfigError(f"`sampler` must be an optuna sampler, but got {sampler!r}.")
        if isinstance(features, str) or not features or not all(isinstance(f, str) for f in features):
            raise ConfigError("The 'features' parameter of BudgetGatedSampler must be a non-empty list of parameter "
                              f"names, e.g. ['batch_size']. Got {features!r} instead.")
        check("BudgetGatedSampler", "min_observations", min_observations, Interval(int, 2, None))
        self.sampler = sampler if sampler is not None else optuna.samplers.TPESampler(seed=seed)
        self.settings = PredictionSettings(features=tuple(features), min_observations=min_observations,
                                           confidence=check_confidence("BudgetGatedSampler", confidence))
        self.redraws = check("BudgetGatedSampler", "redraws", redraws, Interval(int, 1, None))
        self._random = optuna.samplers.RandomSampler(seed=seed)
        self.n_skipped = 0
        import scipy.stats  # noqa: F401 - the cost model's, loaded now rather than mid-study (see above)

    def infer_relative_search_space(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
        return self.sampler.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                        search_space: dict[str, Any]) -> dict[str, Any]:
        def draw(sampler: BaseSampler) -> dict[str, Any]:
            if sampler is self.sampler:
                return self.sampler.sample_relative(study, trial, search_space)
            return {name: sampler.sample_independent(study, trial, name, d) for name, d in search_space.items()}

        def skipped(proposal: dict[str, Any], stop: StopInfo) -> None:  # the wrapped sampler learns from it
            study.add_trial(optuna.trial.create_trial(
                state=optuna.trial.TrialState.PRUNED, params={**trial.params, **proposal},
                distributions={**trial.distributions, **{name: search_space[name] for name in proposal}},
                user_attrs={STOP_ATTR: asdict(stop)},
                **({"constraints": {stop.rule.removeprefix("skipped_"): stop.violation}}
                   if _HAS_CONSTRAINTS else {}),
            ))

        return self._gated(study, trial, draw, lambda proposal: proposal, skipped)

    def sample_independent(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, param_name: str,
                           param_distribution: Any) -> Any:
        def draw(sampler: BaseSampler) -> Any:
            return sampler.sample_independent(study, trial, param_name, param_distribution)

        if param_name not in self.settings.features:
            return draw(self.sampler)
        return self._gated(study, trial, draw, lambda value: {param_name: value}, None)

    def _gated(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, draw: Callable[[BaseSampler], Any],
               as_params: Callable[[Any], dict[str, Any]],
               skipped: Callable[[dict[str, Any], StopInfo], None] | None) -> Any:
        first = proposal = draw(self.sampler)
        if not set(self.settings.features) <= {*trial.params, *as_params(first)}:
            return first  # a cost feature is not sampled yet: judged when the last one is
        judge = self._judge(study, trial)
        for sampler in (self.sampler, self._random):
            for _ in range(self.redraws):
                stop = judge({**trial.params, **as_params(proposal)})
                if stop is None:
                    return proposal
                self.n_skipped += 1
                if skipped is not None:
                    skipped(as_params(proposal), stop)
                proposal = draw(sampler)
        return proposal

    def _judge(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> Callable[[dict], StopInfo | None]:
        """Tells which budget a configuration is predicted to break, from the study's measured trials."""
        pruner = study.pruner
        if not isinstance(pruner, SystemBudgetPruner):
            raise ConfigError("BudgetGatedSampler reads the budgets of the study's pruner: create the study "
                              "with pruner=SystemBudgetPruner(...).")
        states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        records = [r for t in study.get_trials(deepcopy=False, states=states) if (r := _record(t)) is not None]
        broken = [r for r in records if r.stop is not None and r.stop.rule in BUDGETS and r.stop.is_system
                  and BUDGETS[r.stop.rule].per_config]
        screen = CostScreen(self.settings, pruner.budget, "optuna", DatasetShape(), lambda: records)
        features = self.settings.features

        def judge(config: dict) -> StopInfo | None:
            for record in broken:
                if all(_at_least(config[f], record.params.get(f)) for f in features):
                    rule = record.stop.rule
                    return StopInfo(f"skipped_{rule}", StopKind.SYSTEM, 0, record.stop.value, record.stop.threshold,
                                    f"skipped: {', '.join(features)} >= trial {record.number}'s, which broke {rule}")
            skip = screen.skip(config_id=str(trial.number), params=config, steps_planned=None, number=trial.number)
            return skip.stop if skip is not None else None

        return judge

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.sampler.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, state: Any,
                    values: Sequence[float] | None) -> None:
        self.sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.sampler.reseed_rng()
        self._random.reseed_rng()


def _at_least(value: Any, other: Any) -> bool:
    numbers = (int, float)
    return isinstance(value, numbers) and isinstance(other, numbers) and value >= other
