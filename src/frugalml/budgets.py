"""The one registry of resource budgets: every other module reads it.

A budget is a key of a study's ``[budget]`` table (``max_memory_mb = 400``). Its
entry says what it limits and how: parsing, the watchdog's rules, in-trial and
cross-configuration prediction, Optuna constraints, Ray peers and reports all read
:data:`BUDGETS`. Adding a budget is one entry here, plus the monitor field that
measures it.

How a budget is applied depends on its ``scope``:

==========  ================================================================
``sample``  every watchdog sample of the worker's tree; the peak over the run
            (memory: a single long step that allocates past it is stopped; a
            running total such as the trial's joules: its peak is the total so far)
``window``  the mean of each evaluation window (step time)
``trial``   the trial's wall time
``study``   the whole study's CPU-seconds or joules (stops the study, not a config)
``serve``   what the trained model costs to serve, measured in a fresh process under the
            study's ``[deploy]`` envelope (:mod:`frugalml.deploy`): before training where
            the cost does not depend on the weights (built-in networks and SGD models),
            else once training ended; a ``floor`` budget is a minimum (throughput)
==========  ================================================================

Example:
    >>> BUDGETS["max_memory_mb"].metric
    'memory_mb'
    >>> budget("max_memory_gb")
    Traceback (most recent call last):
    ...
    frugalml.exceptions.ConfigError: Unknown budget rule 'max_memory_gb' in [budget]; known: max_gpu_memory_mb, max_mean_step_ms, max_memory_mb, max_model_mb, max_predict_memory_mb, max_predict_ms, max_study_cpu_seconds, max_study_joules, max_trial_joules, max_trial_seconds, min_throughput_rows_s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from frugalml.exceptions import ConfigError
from frugalml.metrics import (CPU_S, ENERGY_J, GPU_MEMORY_MB, MEAN_STEP_MS, MEMORY_MB, MODEL_MB, PEAK_GPU_MEMORY_MB,
                              PEAK_MEMORY_MB, PREDICT_MEMORY_MB, PREDICT_MS, THROUGHPUT_ROWS_S, TRIAL_ENERGY_J,
                              TRIAL_SECONDS, WALL_S)

SAMPLE = "sample"
WINDOW = "window"
TRIAL = "trial"
STUDY = "study"
SERVE = "serve"


#: the least violation of a broken budget, as Optuna's constraints read it (> 0: infeasible)
MIN_VIOLATION = 1e-6


def as_violation(excess: float) -> float:
    """A broken budget's ``excess`` as Optuna's constraints read it: at least ``MIN_VIOLATION``, also where
    it is unknown (NaN) or was read below the limit (a CUDA out-of-memory on a shared device)."""
    return max(excess, MIN_VIOLATION) if math.isfinite(excess) else MIN_VIOLATION


@dataclass(frozen=True)
class Budget:
    """One resource budget.

    Attributes:
        key: its name in ``[budget]`` and its stop rule's name (``StopInfo.rule``).
        unit: the unit of the limit, as messages print it.
        metric: the measured metric it limits (named in :mod:`frugalml.metrics`): a sample/window
            metric for ``sample`` and ``window`` scopes, ``wall_s`` for ``trial``, ``cpu_s`` or
            ``energy_j`` for ``study``.
        what: words for messages ("memory", "mean step time").
        scope: ``sample``, ``window``, ``trial`` or ``study`` (see the module docstring).
        predicted: the cost model's metric for a configuration (``peak_memory_mb``),
            None when it is not predicted.
        label: the axis label of reports.
        param: the limit's argument name in its rule's constructor (as error messages say it).
        needs_peers: its rule reads finished peer trials (none of the budgets does).
        cumulative: its metric is a running total (joules): a trial stopped early shows
            only part of it.
        floor: the limit is a minimum (throughput), not a maximum.
    """

    key: str
    unit: str
    metric: str
    what: str
    scope: str
    predicted: str | None
    label: str
    param: str = "limit"
    needs_peers: bool = False
    cumulative: bool = False
    floor: bool = False

    def breaks(self, value: float, limit: float) -> bool:
        """True when ``value`` is on the wrong side of ``limit``."""
        return value < limit if self.floor else value > limit

    def excess(self, value: float, limit: float) -> float:
        """How far ``value`` is past ``limit`` as a fraction (> 0: broken), as Optuna's constraints read it."""
        if self.floor:
            return limit / value - 1.0 if value > 0 else float("inf")
        return value / limit - 1.0

    def violation(self, value: float, limit: float) -> float:
        """:meth:`excess` of a budget known to be broken, as :func:`as_violation` reads it."""
        return as_violation(self.excess(value, limit) if limit > 0 else math.nan)

    @property
    def per_config(self) -> bool:
        """True for budgets a configuration can break (all but the study's compute)."""
        return self.scope != STUDY

    @property
    def plotted(self) -> bool:
        """True for budgets drawn as a line on a metric's chart."""
        return self.scope in (SAMPLE, WINDOW)


BUDGETS: dict[str, Budget] = {
    b.key: b
    for b in (
        Budget("max_memory_mb", "MB", MEMORY_MB, "memory", SAMPLE, PEAK_MEMORY_MB,
               "memory RSS-shared (MB)", param="max_mb"),
        Budget("max_gpu_memory_mb", "MB", GPU_MEMORY_MB, "GPU memory", SAMPLE, PEAK_GPU_MEMORY_MB,
               "GPU memory (MB)", param="max_mb"),
        Budget("max_mean_step_ms", "ms", MEAN_STEP_MS, "mean step time", WINDOW, MEAN_STEP_MS,
               "mean step time (ms)", param="max_ms"),
        Budget("max_trial_seconds", "s", WALL_S, "trial time", TRIAL, TRIAL_SECONDS,
               "trial wall time (s)", param="max_s"),
        Budget("max_trial_joules", "J", ENERGY_J, "trial energy", SAMPLE, TRIAL_ENERGY_J,
               "trial energy (J)", param="max_j", cumulative=True),
        Budget("max_study_cpu_seconds", "CPU-s", CPU_S, "study compute", STUDY, None,
               "study compute (CPU-s)", param="max_cpu_s"),
        Budget("max_study_joules", "J", ENERGY_J, "study energy", STUDY, None,
               "study energy (J)", param="max_j"),
        Budget("max_predict_ms", "ms", PREDICT_MS, "predict latency", SERVE, PREDICT_MS,
               "predict latency (ms)", param="max_ms"),
        Budget("min_throughput_rows_s", "rows/s", THROUGHPUT_ROWS_S, "predict throughput", SERVE, None,
               "predict throughput (rows/s)", param="min_rows_s", floor=True),
        Budget("max_model_mb", "MB", MODEL_MB, "model size", SERVE, MODEL_MB, "model size (MB)", param="max_mb"),
        Budget("max_predict_memory_mb", "MB", PREDICT_MEMORY_MB, "inference memory", SERVE, PREDICT_MEMORY_MB,
               "inference memory RSS-shared (MB)", param="max_mb"),
    )
}


# The step-time budget's warm-up (see stopping.WindowBudget): its first windows may average
# this many times the limit; constraints and reports read the same defaults.
WARMUP_WINDOWS = 1
WARMUP_ALLOWANCE = 2.0

STUDY_METRICS: tuple[str, ...] = tuple(dict.fromkeys(b.metric for b in BUDGETS.values() if b.scope == STUDY))
"""The metrics study budgets sum over trials: ``("cpu_s", "energy_j")``."""

SERVING_METRICS: tuple[str, ...] = tuple(b.metric for b in BUDGETS.values() if b.scope == SERVE)
"""What :mod:`frugalml.deploy` measures of a model, as a trial's ``info["serving"]`` keeps it."""


def budget(key: str) -> Budget:
    """The registry entry of ``key``; a one-line :class:`ConfigError` naming the known ones."""
    try:
        return BUDGETS[key]
    except (KeyError, TypeError):
        raise ConfigError(f"Unknown budget rule {key!r} in [budget]; known: {', '.join(sorted(BUDGETS))}.") from None


def budget_of_rule(rule: str) -> Budget | None:
    """The budget a stop rule's name refers to: ``max_memory_mb``, ``predicted_max_memory_mb``
    or ``skipped_max_memory_mb``; None for other rules."""
    return BUDGETS.get(rule.removeprefix("predicted_").removeprefix("skipped_"))


def per_config(limits: dict | None) -> dict[str, float]:
    """The per-configuration budgets of a ``[budget]`` table, as floats (study compute dropped)."""
    return {k: float(v) for k, v in (limits or {}).items() if k in BUDGETS and BUDGETS[k].per_config}


def serving(limits: dict | None) -> dict[str, float]:
    """The serving budgets of a ``[budget]`` table, as floats."""
    return {k: float(v) for k, v in (limits or {}).items() if k in BUDGETS and BUDGETS[k].scope == SERVE}


def names(scopes: tuple[str, ...] = (SAMPLE, WINDOW, TRIAL, STUDY, SERVE)) -> str:
    """The keys of budgets in ``scopes``, for messages: ``"max_gpu_memory_mb, max_mean_step_ms, ..."``."""
    return ", ".join(sorted(k for k, b in BUDGETS.items() if b.scope in scopes))
