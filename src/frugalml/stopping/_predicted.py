"""Stop a trial as soon as it is predicted to break a budget, not only once it has."""

from __future__ import annotations

from typing import Any, Mapping

from frugalml.exceptions import ConfigError
from frugalml.records import StopInfo
from frugalml.stopping._base import SYSTEM, StoppingRule, TrialView
from frugalml.stopping._validation import positive

# budget key -> (TrialEstimate field, what it is, unit)
_PREDICTED = {
    "max_memory_mb": ("peak_memory_mb", "peak memory", "MB"),
    "max_mean_step_ms": ("steady_step_ms", "steady step time", "ms"),
    "max_trial_seconds": ("total_s", "trial time", "s"),
}


class PredictedBudget(StoppingRule):
    """Stop a trial once its predicted cost is over a budget at ``confidence``.

    From ``min_windows`` windows on, the trial's end is estimated with
    :func:`frugalml.prediction.estimate_trial`; the trial stops when the one-sided
    lower bound of its peak memory, steady step time or total time exceeds the
    budget. ``StopInfo.rule`` is ``"predicted_<budget>"`` and ``value`` that bound.

    Example:
        >>> rule = PredictedBudget(max_trial_seconds=60, confidence=0.9, min_windows=2)
        >>> rule.kind
        'system'
    """

    name = "predicted"
    kind = SYSTEM

    def __init__(self, *, max_memory_mb: float | None = None, max_mean_step_ms: float | None = None,
                 max_trial_seconds: float | None = None, confidence: float = 0.9, min_windows: int = 2) -> None:
        from frugalml.prediction import check_confidence

        given = {"max_memory_mb": max_memory_mb, "max_mean_step_ms": max_mean_step_ms,
                 "max_trial_seconds": max_trial_seconds}
        self.budgets = {k: positive("PredictedBudget", k, v) for k, v in given.items() if v is not None}
        if not self.budgets:
            raise ConfigError(
                "PredictedBudget needs a budget to predict against: max_memory_mb, max_mean_step_ms or "
                "max_trial_seconds (in [budget])."
            )
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
        return cls(**{k: v for k, v in budget.items() if k in _PREDICTED}, **settings)

    def check(self, view: TrialView) -> StopInfo | None:
        if view.at_end or len(view.windows) < self.min_windows:
            return None
        from frugalml.prediction import estimate_trial

        estimate = estimate_trial(view.windows, steps_planned=view.steps_planned, eval_every=view.eval_every,
                                  confidence=self.confidence)
        for key, limit in self.budgets.items():
            field, what, unit = _PREDICTED[key]
            predicted = getattr(estimate, field)
            if predicted is not None and predicted.low > limit:
                return StopInfo(
                    rule=f"predicted_{key}", kind=SYSTEM, step=view.steps_done, value=predicted.low,
                    threshold=limit,
                    message=(f"predicted {what} {predicted.value:.4g} {unit} (>= {predicted.low:.4g} at "
                             f"{self.confidence:.0%}) > budget {limit:g} {unit}"),
                )
        return None
