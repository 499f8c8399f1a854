"""Predict a trial's system cost before it wastes the budget.

* :func:`estimate_trial`: in a running trial, its peak memory, step time and total
  time at the end of training, from its first windows (used by the ``predicted``
  stopping rule, :class:`frugalml.stopping.PredictedBudget`);
* :class:`CostModel`: across configurations, the cost of one that has not run, from
  its hyperparameters and the dataset's shape;
* :class:`CostScreen`: skips configurations predicted over budget and re-checks the
  model against every trial that runs (the study file's ``[prediction]`` table);
* :func:`constraint_values`: budget violations in the form Optuna's samplers learn from.

How well all this predicts on the thesis workloads is measured by
:func:`frugalml.reproduce.evaluate_prediction` (it runs studies, so it lives with them).
"""

from frugalml.prediction._constraints import constraint_values
from frugalml.prediction._cost_model import (
    METRICS, PREDICTED_METRICS, CostModel, DatasetShape, broken_metric, observed_costs, steady_step_ms,
)
from frugalml.prediction._estimate import (
    Estimate, TrialEstimate, check_confidence, estimate_peak, estimate_total, estimate_trial,
)
from frugalml.prediction._screen import SKIP_REASON, CostScreen, PredictionSettings

__all__ = [
    "CostModel",
    "CostScreen",
    "DatasetShape",
    "Estimate",
    "METRICS",
    "PREDICTED_METRICS",
    "PredictionSettings",
    "SKIP_REASON",
    "TrialEstimate",
    "broken_metric",
    "check_confidence",
    "constraint_values",
    "estimate_peak",
    "estimate_total",
    "estimate_trial",
    "observed_costs",
    "steady_step_ms",
]
