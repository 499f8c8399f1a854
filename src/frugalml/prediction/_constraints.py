"""Budget violations as constraint values, the form Optuna's TPE and NSGA-II samplers use."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

from frugalml.prediction._gate import BUDGET_METRICS
from frugalml.records import TrialRecord


def _measured(record: TrialRecord, key: str) -> float | None:
    if key == "max_memory_mb":
        return record.peak("memory_mb")
    if key == "max_mean_step_ms":
        return record.peak("mean_step_ms")  # the budget holds for every window
    return record.wall_s if record.steps_done else None


def constraint_values(records: Sequence[TrialRecord], budget: Mapping[str, float]) -> dict[str, float]:
    """``value / limit - 1`` per resource budget (``> 0``: broken), the worst over ``records``.

    A trial stopped or skipped for a budget contributes the value that broke it (for a
    prediction, its lower bound); other trials contribute what they measured.

    Example:
        >>> constraint_values([], {"max_memory_mb": 400})
        {'max_memory_mb': 0.0}
    """
    values = {}
    for key, limit in budget.items():
        if key not in BUDGET_METRICS:
            continue
        worst = None
        for record in records:
            stop = record.stop
            if stop is not None and stop.rule in (key, f"predicted_{key}", f"skipped_{key}") and stop.threshold > 0:
                value = stop.value / stop.threshold - 1.0
            elif (measured := _measured(record, key)) is not None:
                value = measured / float(limit) - 1.0
            else:
                continue
            if math.isfinite(value):
                worst = value if worst is None else max(worst, value)
        values[key] = 0.0 if worst is None else worst
    return values
