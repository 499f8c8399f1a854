"""What a gate compares: each metric's direction, unit and default tolerances.

Tolerances say how much worse the candidate may be before it is a regression; a
change counts only when it exceeds *both* the absolute and the relative tolerance
(as MLflow's ``MetricThreshold(min_absolute_change, min_relative_change)`` requires
both of an improvement). Defaults are sized to the noise measured on a shared
2-core runner by ``benchmarks/gate_false_alarms.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from frugalml.metrics import ACCURACY, MEAN_STEP_MS, PEAK_MEMORY_MB, RMSE, VAL_LOSS


@dataclass(frozen=True)
class GateMetric:
    """One metric a gate can compare."""

    name: str
    unit: str
    higher_is_better: bool
    kind: str  # "quality" (the model's) or "system" (its cost)
    max_relative_regression: float
    max_absolute_regression: float
    description: str


GATE_METRICS: dict[str, GateMetric] = {m.name: m for m in (
    GateMetric(ACCURACY, "", True, "quality", 0.0, 0.01, "test accuracy of the best configuration"),
    GateMetric(RMSE, "", False, "quality", 0.05, 0.0, "test RMSE of the best configuration"),
    GateMetric(VAL_LOSS, "", False, "quality", 0.05, 0.0, "validation loss of the best configuration"),
    GateMetric(MEAN_STEP_MS, "ms", False, "system", 0.15, 0.0, "mean training step time"),
    GateMetric(PEAK_MEMORY_MB, "MB", False, "system", 0.10, 5.0, "peak memory (RSS - shared) while training"),
    GateMetric("predict_p50_ms", "ms", False, "system", 0.20, 0.02, "median single-row predict latency"),
    GateMetric("predict_p99_ms", "ms", False, "system", 0.50, 0.1, "p99 single-row predict latency"),
    GateMetric("model_size_mb", "MB", False, "system", 0.10, 0.01, "size of the MLflow model directory"),
)}
