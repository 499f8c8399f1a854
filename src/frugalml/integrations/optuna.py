"""frugalml's system budgets for Optuna: a pruner and a helper that measures an objective.

:class:`SystemMetrics` (or the :func:`instrument` decorator) stores the trial's system
metrics as the user attribute ``"frugalml"`` each time the objective reports, so they
live in the study's storage; :class:`SystemBudgetPruner` reads them from the
``FrozenTrial`` it is given. With an RDB storage (``sqlite:///study.db``, PostgreSQL,
MySQL) several processes or machines share one study, and any of them can see why a
trial was pruned.

Example::

    import optuna
    from frugalml.integrations.optuna import SystemBudgetPruner, instrument

    @instrument                                     # measures the objective's process
    def objective(trial):                           # a plain Optuna objective
        model = make_model(trial.suggest_int("batch_size", 30, 30000, log=True))
        for epoch in range(20):
            loss = train_one_epoch(model)
            trial.report(loss, epoch)               # also stores memory_mb, mean_step_ms...
            if trial.should_prune():
                raise optuna.TrialPruned()
        return loss

    study = optuna.create_study(
        storage="sqlite:///study.db", study_name="svm", load_if_exists=True,
        pruner=SystemBudgetPruner(max_memory_mb=400, wrapped=optuna.pruners.MedianPruner()),
    )
    study.optimize(objective, n_trials=16)

Costs: a sidecar process samples the objective's process at 10 Hz (~0.1 s to start,
~17 MB, none of it in the objective's process); each report reads the process once
(~0.1-0.3 ms) and writes one user attribute to the storage (one write, like
``trial.report`` itself). Memory is the process's, so run one trial per process
(several processes on one storage, or ``n_jobs=1``) for per-trial figures: threads of
one process share it.
"""

from __future__ import annotations

import functools
from dataclasses import asdict
from typing import Any, Callable, Mapping

from frugalml.exceptions import ConfigError
from frugalml.integrations._budget import budget_rules, view_of
from frugalml.integrations._sidecar import SystemSampler
from frugalml.records import StopInfo
from frugalml.stopping import StudyComputeBudget, check_all

try:
    import optuna
    from optuna.pruners import BasePruner
except ImportError:  # pragma: no cover - optuna is a frugalml dependency
    raise ConfigError("frugalml.integrations.optuna needs Optuna; install it with: pip install optuna") from None

__all__ = ["ATTR", "STOP_ATTR", "SystemBudgetPruner", "SystemMetrics", "instrument"]

ATTR = "frugalml"  # user attribute: the system metrics of the latest report
STOP_ATTR = "frugalml_stop"  # user attribute: which budget pruned the trial


class SystemBudgetPruner(BasePruner):
    """Prunes trials whose reported system metrics break a frugalml budget.

    Budgets are the keys of a study's ``[budget]`` table: ``max_memory_mb``,
    ``max_mean_step_ms``, ``max_trial_seconds`` and ``max_study_cpu_seconds`` (the
    CPU-seconds of all the study's trials, read from the storage). A trial without
    system metrics (not measured by :class:`SystemMetrics`) is never pruned for a budget.

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
        self.wrapped = wrapped
        self._needs_study = any(isinstance(rule, StudyComputeBudget) for rule in self.rules)

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        if self.explain(study, trial) is not None:
            return True
        return self.wrapped is not None and self.wrapped.prune(study, trial)

    def explain(self, study: optuna.Study | None, trial: optuna.trial.FrozenTrial) -> StopInfo | None:
        """The budget ``trial`` breaks (rule, value, threshold, message), or None."""
        return self._check(study, trial.number, trial.user_attrs.get(ATTR))

    def _check(self, study: optuna.Study | None, number: int, metrics: Mapping[str, float] | None) -> StopInfo | None:
        if not metrics:
            return None
        study_cpu_s = 0.0
        if self._needs_study and study is not None:
            others = (t.user_attrs.get(ATTR, {}) for t in study.get_trials(deepcopy=False) if t.number != number)
            study_cpu_s = sum(m.get("cpu_s", 0.0) for m in others) + metrics.get("cpu_s", 0.0)
        return check_all(self.rules, view_of(number, int(metrics.get("step", 0)), metrics, study_cpu_s))


class SystemMetrics:
    """Measures an Optuna trial's process and reports its system metrics with each value.

    Call :meth:`step` once per training step for a true step time (a clock read and
    an append); without it ``mean_step_ms`` is the time between reports divided by
    the steps between them.

    Args:
        trial: the Optuna trial.
        interval_s: the sidecar's sampling period.
        sidecar: also sample from a separate process between reports (default); False
            gives the figures at each report only (no peak between reports).

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

    def __init__(self, trial: optuna.Trial, *, interval_s: float = 0.1, sidecar: bool = True) -> None:
        self.trial = trial
        self.sampler = SystemSampler(interval_s=interval_s, sidecar=sidecar)
        self.latest: dict[str, float] = {}
        self._peak_mb = 0.0
        self._started = False

    def __enter__(self) -> SystemMetrics:
        if not self._started:
            self.sampler.start()
            self._started = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def step(self) -> None:
        """Mark the end of one training step."""
        self.sampler.step()

    def report(self, value: float, step: int) -> None:
        """Store the system metrics since the previous report, then ``trial.report(value, step)``."""
        self.__enter__()
        metrics = self.sampler.window(step + 1)  # Optuna steps start at 0
        self._peak_mb = max(self._peak_mb, metrics.get("memory_mb", 0.0))
        self.latest = {**metrics, "peak_memory_mb": self._peak_mb, "step": step}
        self.trial.set_user_attr(ATTR, self.latest)
        self.trial.report(value, step)
        self.sampler.restart_step_clock()  # two storage writes, not training

    def should_prune(self) -> bool:
        """``trial.should_prune()``; when a frugalml budget is the reason, it is stored
        as the user attribute ``"frugalml_stop"``."""
        try:
            return self._should_prune()
        finally:
            self.sampler.restart_step_clock()

    def _should_prune(self) -> bool:
        if not self.trial.should_prune():
            return False
        pruner = self.trial.study.pruner
        if isinstance(pruner, SystemBudgetPruner) and self.latest:
            stop = pruner._check(self.trial.study, self.trial.number, self.latest)
            if stop is not None:
                self.trial.set_user_attr(STOP_ATTR, asdict(stop))
        return True

    def close(self) -> None:
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
    objective: Callable[[Any], Any] | None = None, *, interval_s: float = 0.1, sidecar: bool = True
) -> Any:
    """Decorate a plain objective so its ``trial.report`` calls also store system metrics.

    The objective runs unchanged; inside it, ``trial.system.step()`` marks training
    steps if you want per-step times (else a "step" is what you pass to ``report``).
    """

    def decorate(function: Callable[[Any], Any]) -> Callable[[optuna.Trial], Any]:
        @functools.wraps(function)
        def measured(trial: optuna.Trial) -> Any:
            with SystemMetrics(trial, interval_s=interval_s, sidecar=sidecar) as system:
                return function(_InstrumentedTrial(trial, system))

        return measured

    return decorate(objective) if objective is not None else decorate
