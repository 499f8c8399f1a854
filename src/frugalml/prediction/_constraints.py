"""Budget violations as constraint values, the form Optuna's TPE and NSGA-II samplers use."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

from frugalml.budgets import BUDGETS, SERVE, TRIAL, WARMUP_WINDOWS, WINDOW, budget_of_rule
from frugalml.records import TrialRecord


def measured(record: TrialRecord, key: str) -> float | None:
    """What ``record`` measured of budget ``key``'s metric: its peak over the windows (a
    budget holds for every sample or window; for step time, every window after the
    warm-up one, which the budget holds to an allowance), the wall time for the trial's time, or
    what :mod:`frugalml.deploy` measured of its model for a serving budget."""
    b = BUDGETS[key]
    if b.scope == SERVE:
        return record.serving(b.metric)
    if b.scope == TRIAL:
        return record.wall_s if record.steps_done else None
    if b.scope == WINDOW:
        means = [v for w in record.windows if (v := w.values.get(b.metric)) is not None and math.isfinite(v)]
        return max(means[WARMUP_WINDOWS:] or means) if means else None
    return record.peak(b.metric)


def constraint_values(records: Sequence[TrialRecord], budget: Mapping[str, float]) -> dict[str, float]:
    """``value / limit - 1`` per per-configuration budget (``> 0``: broken), the worst over ``records``.

    A trial stopped or skipped for a budget contributes the value that broke it (for a
    prediction, its lower bound); other trials contribute what they measured.

    Example:
        >>> constraint_values([], {"max_memory_mb": 400})
        {'max_memory_mb': 0.0}
    """
    values = {}
    for key, limit in budget.items():
        if key not in BUDGETS or not BUDGETS[key].per_config:
            continue
        worst = None
        for record in records:
            stop = record.stop
            broke_it = stop is not None and stop.is_system and budget_of_rule(stop.rule) is BUDGETS[key]
            if broke_it:
                value = stop.violation
            elif (value_measured := measured(record, key)) is not None:
                value = BUDGETS[key].excess(value_measured, float(limit))
            else:
                continue
            if math.isfinite(value):
                worst = value if worst is None else max(worst, value)
        values[key] = 0.0 if worst is None else worst
    return values
