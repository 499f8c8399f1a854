"""The one place where user input becomes a list of stopping rules."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

from frugalml.budgets import BUDGETS, WARMUP_WINDOWS
from frugalml.exceptions import ConfigError
from frugalml.records import StopInfo
from frugalml.stopping._base import ML, StoppingRule, TrialView
from frugalml.stopping._budget import budget_rule
from frugalml.stopping._halving import SuccessiveHalving
from frugalml.stopping._learning import Divergence, MedianStopping, Patience
from frugalml.stopping._predicted import PredictedBudget
from frugalml.validation import NON_NEGATIVE_INT, check



def _patience(value: Any) -> StoppingRule:
    if isinstance(value, Mapping):
        return Patience(**value)
    return Patience(value)


def _switch_or_settings(name: str, value: Any) -> None:
    if not isinstance(value, (bool, Mapping)):
        raise ConfigError(f"[stopping] {name} must be true, false or a table of settings. Got {value!r} instead.")


def _median(value: Any) -> StoppingRule | None:
    _switch_or_settings("median", value)
    if value is False:
        return None
    return MedianStopping(**value) if isinstance(value, Mapping) else MedianStopping()


def _divergence(value: Any) -> StoppingRule | None:
    _switch_or_settings("divergence", value)
    if value is False:
        return None
    return Divergence(**value) if isinstance(value, Mapping) else Divergence()


STOPPING_KEYS: dict[str, Callable[[Any], StoppingRule | None]] = {
    "patience": _patience,
    "median": _median,
    "divergence": _divergence,
    "halving": SuccessiveHalving.from_config,
    "predicted": PredictedBudget.from_config,  # also given the [budget] table
}


class FunctionRule(StoppingRule):
    """Adapts ``fn(view) -> str | None`` (a reason to stop, or None) into a rule."""

    kind = ML

    def __init__(self, fn: Callable[[TrialView], str | None], name: str | None = None) -> None:
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "custom")

    def check(self, view: TrialView) -> StopInfo | None:
        reason = self.fn(view)
        return None if reason is None else self._stop(view, float("nan"), float("nan"), str(reason))


WARMUP_KEY = "step_time_warmup_windows"  # a [stopping] setting of the step-time budget, not a rule


def rules_from_config(budget: Mapping[str, Any] | None, stopping: Mapping[str, Any] | None) -> list[StoppingRule]:
    """Build rules from a study file's ``[budget]`` and ``[stopping]`` tables.

    ``[stopping] step_time_warmup_windows`` (default 1) is how many first windows the
    step-time budget holds to twice its limit (see :class:`~frugalml.stopping.WindowBudget`).
    """
    rules: list[StoppingRule] = []
    stopping = dict(stopping or {})
    warmup = check("[stopping]", WARMUP_KEY, stopping.pop(WARMUP_KEY, WARMUP_WINDOWS), NON_NEGATIVE_INT)
    for table, known in (("budget", BUDGETS), ("stopping", STOPPING_KEYS)):
        for key, value in dict((budget if table == "budget" else stopping) or {}).items():
            if key not in known:
                choices = sorted(known) if table == "budget" else sorted([*known, WARMUP_KEY])
                raise ConfigError(f"Unknown {table} rule '{key}' in [{table}]; known: {', '.join(choices)}.")
            try:
                if table == "budget":
                    rule = budget_rule(key, value, warmup_windows=warmup)
                else:
                    rule = PredictedBudget.from_config(value, budget or {}) if key == "predicted" else known[key](value)
            except TypeError as error:
                raise ConfigError(f"Bad settings for [{table}] {key} = {value!r}: {error}.") from None
            if rule is not None:
                rules.append(rule)
    return rules


def as_rules(value: StoppingRule | Callable | Iterable | Mapping | None) -> list[StoppingRule]:
    """Convert a rule, a callable, a budget/stopping mapping or a list of these into rules."""
    if value is None:
        return []
    if isinstance(value, StoppingRule):
        return [value]
    if isinstance(value, Mapping):
        budget = {k: v for k, v in value.items() if k in BUDGETS}
        stopping = {k: v for k, v in value.items() if k not in BUDGETS}
        return rules_from_config(budget, stopping)
    if callable(value):
        return [FunctionRule(value)]
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        return [rule for item in value for rule in as_rules(item)]
    raise ConfigError(f"Cannot use {value!r} as a stopping rule; pass a StoppingRule, a callable, a dict or a list.")
