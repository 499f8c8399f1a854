"""Composable stopping rules: system budgets and learning rules.

Successive halving and Hyperband (:class:`SuccessiveHalving`) are a learning rule too.
Rules are small stateless classes with one method, ``check(view) -> StopInfo | None``.
System budgets (``kind="system"``) make a trial infeasible; learning rules
(``kind="ml"``) end it early but keep its result.
"""

from frugalml.stopping._base import ML, STUDY, SYSTEM, StoppingRule, TrialView, check_all
from frugalml.stopping._budget import (
    GpuMemoryBudget, MemoryBudget, ResourceBudget, StepTimeBudget, StudyBudget, StudyComputeBudget, WallTimeBudget,
    budget_rule,
)
from frugalml.stopping._convert import FunctionRule, as_rules, rules_from_config
from frugalml.stopping._halving import SuccessiveHalving
from frugalml.stopping._learning import Divergence, MedianStopping, Patience
from frugalml.stopping._predicted import PredictedBudget

__all__ = [
    "ML",
    "STUDY",
    "SYSTEM",
    "Divergence",
    "FunctionRule",
    "GpuMemoryBudget",
    "MedianStopping",
    "MemoryBudget",
    "Patience",
    "PredictedBudget",
    "ResourceBudget",
    "StepTimeBudget",
    "StoppingRule",
    "StudyBudget",
    "SuccessiveHalving",
    "StudyComputeBudget",
    "TrialView",
    "WallTimeBudget",
    "as_rules",
    "budget_rule",
    "check_all",
    "rules_from_config",
]
