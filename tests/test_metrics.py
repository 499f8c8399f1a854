"""frugalml.metrics is the one home of metric names: the registry and the groups name only its metrics."""

from __future__ import annotations

from frugalml import metrics
from frugalml.budgets import BUDGETS

CONSTANTS = {name: value for name, value in vars(metrics).items() if name.isupper() and isinstance(value, str)}
NAMES = set(CONSTANTS.values())


def test_each_constant_is_its_metric_name_spelled_in_capitals():
    # stores, MLflow runs and users' TOML hold these strings: a constant never renames its metric
    assert CONSTANTS and all(name.lower() == value for name, value in CONSTANTS.items())


def test_every_budget_limits_and_predicts_a_named_metric():
    for budget in BUDGETS.values():
        assert budget.metric in NAMES, budget.key
        assert budget.predicted is None or budget.predicted in NAMES, budget.key


def test_the_groups_hold_named_metrics():
    assert metrics.SYSTEM_METRICS <= NAMES
    assert metrics.MAXIMISED <= NAMES
