"""What both adapters share: budgets from user input, and a rule's view of reported metrics."""

from __future__ import annotations

import math
from typing import Any, Mapping

from frugalml.exceptions import ConfigError
from frugalml.metrics import CPU_S, WALL_S
from frugalml.records import Window
from frugalml.stopping import StoppingRule, TrialView
from frugalml.budgets import names
from frugalml.stopping import rules_from_config


def budget_rules(owner: str, budget: Mapping[str, Any] | None, budgets: Mapping[str, Any]) -> list[StoppingRule]:
    """Rules for ``budget`` (a ``[budget]`` table) merged with keyword budgets."""
    if budget is not None and not isinstance(budget, Mapping):
        raise ConfigError(
            f"{owner}'s budget must be a dict such as {{'max_memory_mb': 400}}, or keywords "
            f"({owner}(max_memory_mb=400)). Got {budget!r} instead."
        )
    merged = {**dict(budget or {}), **budgets}
    if not merged:
        raise ConfigError(f"{owner} needs at least one budget: {names()}.")
    if "max_study_joules" in merged:  # nothing measures a study's joules here: the budget would never act
        raise ConfigError(f"{owner} does not measure joules, so 'max_study_joules' would never stop anything; "
                          "use `frugalml tune` for energy budgets, or report energy_j and set max_trial_joules.")
    # each report is judged: the adapters' view holds the latest report only, with no
    # window history to leave a warm-up out of (a user who wants one reports after it)
    return rules_from_config(merged, {"step_time_warmup_windows": 0})


def numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The numeric metrics of a result dict as floats (NaN, nested dicts and strings dropped)."""
    return {
        name: float(value) for name, value in metrics.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
    }


def view_of(trial_id: Any, step: int, metrics: Mapping[str, float], study_cpu_s: float = 0.0) -> TrialView:
    """A snapshot of a trial whose latest report was ``metrics`` at ``step``: budgets read
    the latest window and sample, so one window is enough."""
    return TrialView(
        trial_id=str(trial_id), steps_done=step, wall_s=metrics.get(WALL_S, 0.0), cpu_s=metrics.get(CPU_S, 0.0),
        windows=(Window(step, dict(metrics)),), sample=metrics, study_cpu_s=study_cpu_s,
    )
