"""The study-wide budgets: whether the study may start another trial."""

from __future__ import annotations

from typing import Any, Sequence

from frugalml.executors import Executor, StudyState
from frugalml.metrics import CPU_S
from frugalml.stopping import StudyBudget


class StudyBudgets:
    """The :class:`~frugalml.stopping.StudyBudget` rules among a study's rules.

    A new trial starts only while the finished trials and the running ones together used
    less than every study budget's limit (CPU-seconds, joules).
    """

    def __init__(self, rules: Sequence[Any]) -> None:
        self.rules = [rule for rule in rules if isinstance(rule, StudyBudget)]

    @property
    def compute_limit(self) -> float | None:
        """The study's CPU-seconds limit, None without one."""
        rule = next((r for r in self.rules if r.budget.metric == CPU_S), None)
        return rule.limit if rule else None

    def left(self, state: StudyState, executor: Executor) -> bool:
        """Whether every study budget has some left: finished trials plus the executor's running ones."""
        return all(
            state.finished(rule.budget.metric) + executor.running_used(rule.budget.metric) < rule.limit
            for rule in self.rules
        )
