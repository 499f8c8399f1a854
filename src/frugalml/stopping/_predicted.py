"""Stop a trial as soon as it is predicted to break a budget, not only once it has."""

from __future__ import annotations

from typing import Any, Mapping

from frugalml.budgets import BUDGETS, SAMPLE, SERVE, STUDY, TRIAL, WINDOW, names
from frugalml.exceptions import ConfigError
from frugalml.metrics import MEMORY_MB
from frugalml.prediction import Estimate, check_confidence, estimate_peak, estimate_total, estimate_trial
from frugalml.records import StopInfo
from frugalml.stopping._base import SYSTEM, StoppingRule, TrialView
from frugalml.validation import check_keys, positive

_PREDICTABLE = (SAMPLE, WINDOW, TRIAL)


class PredictedBudget(StoppingRule):
    """Stop a trial once its predicted cost is over a budget at ``confidence``.

    From ``min_windows`` windows on, the trial's end is estimated with
    :func:`frugalml.prediction.estimate_trial` (and :func:`~frugalml.prediction.estimate_peak`
    for sampled metrics); the trial stops when the one-sided lower bound of a
    budget's metric at the end (peak memory, steady step time, total time, ...)
    exceeds the budget. ``StopInfo.rule`` is ``"predicted_<budget>"`` and ``value`` that bound.

    Args:
        **budgets: limits by budget key (any per-trial budget of :mod:`frugalml.budgets`).

    Example:
        >>> rule = PredictedBudget(max_trial_seconds=60, confidence=0.9, min_windows=2)
        >>> rule.kind
        'system'
    """

    name = "predicted"
    kind = SYSTEM
    per_sample = False
    needs_peers = False

    def __init__(self, *, confidence: float = 0.9, min_windows: int = 2, **budgets: float) -> None:
        unknown = sorted(k for k in budgets if k not in BUDGETS or BUDGETS[k].scope in (STUDY, SERVE))
        if unknown:
            raise ConfigError(f"PredictedBudget cannot predict {unknown}; use {names(_PREDICTABLE)}.")
        self.budgets = {k: positive("PredictedBudget", k, v) for k, v in budgets.items() if v is not None}
        if not self.budgets:
            raise ConfigError(f"PredictedBudget needs a budget to predict against: {names(_PREDICTABLE)} (in [budget]).")
        self.confidence = check_confidence("PredictedBudget", confidence)
        self.min_windows = int(positive("PredictedBudget", "min_windows", min_windows, integer=True))

    @classmethod
    def from_config(cls, value: Any, budget: Mapping[str, Any]) -> PredictedBudget | None:
        """``[stopping] predicted = true | false | {confidence, min_windows}`` with the ``[budget]`` table."""
        if value is False:
            return None
        settings = dict(value) if isinstance(value, Mapping) else {}
        if not isinstance(value, Mapping) and value is not True:
            raise ConfigError(f"[stopping] predicted must be true, false or a table. Got {value!r} instead.")
        check_keys("[stopping] predicted", settings, ("confidence", "min_windows"))
        predictable = {k: v for k, v in budget.items() if k in BUDGETS and BUDGETS[k].scope not in (STUDY, SERVE)}
        return cls(**predictable, **settings)

    def _estimates(self, view: TrialView) -> dict[str, Estimate | None]:
        trial = estimate_trial(view.windows, steps_planned=view.steps_planned, eval_every=view.eval_every,
                               confidence=self.confidence)
        estimates = {}
        for key in self.budgets:
            b = BUDGETS[key]
            if b.cumulative:  # a running total (joules) ends where its rate per step takes it
                estimates[key] = estimate_total(view.windows, b.metric, steps_planned=view.steps_planned,
                                                confidence=self.confidence)
            elif b.scope == SAMPLE:
                estimates[key] = (trial.peak_memory_mb if b.metric == MEMORY_MB else
                                  estimate_peak(view.windows, b.metric, steps_planned=view.steps_planned,
                                                confidence=self.confidence))
            else:
                estimates[key] = trial.steady_step_ms if b.scope == WINDOW else trial.total_s
        return estimates

    def check(self, view: TrialView) -> StopInfo | None:
        if view.at_end or len(view.windows) < self.min_windows:
            return None
        for key, predicted in self._estimates(view).items():
            limit, b = self.budgets[key], BUDGETS[key]
            if predicted is not None and predicted.low > limit:
                what = ("total " if b.cumulative else {SAMPLE: "peak ", WINDOW: "steady "}.get(b.scope, "")) + b.what
                return StopInfo(
                    rule=f"predicted_{key}", kind=SYSTEM, step=view.steps_done, value=predicted.low,
                    threshold=limit,
                    message=(f"predicted {what} {predicted.value:.4g} {b.unit} (>= {predicted.low:.4g} at "
                             f"{self.confidence:.0%}) > budget {limit:g} {b.unit}"),
                )
        return None
