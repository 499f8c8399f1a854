"""frugalml's system budgets for Ray Tune: a ``Stopper`` and a trainable wrapper.

A Tune ``Stopper`` sees only what a trainable reports, so :func:`with_system_metrics`
adds frugalml's system metrics to every result of an unmodified trainable, and
:class:`SystemBudgetStopper` stops the trials whose results break a budget. A stopped
trial ends ``TERMINATED`` like a completed one, so the stopper writes its verdict into
the trial's own results (``feasible``, ``frugalml_stop``): they are saved with the
experiment, and :func:`best_feasible_result` picks the best trial that kept its budgets.

Example::

    from ray import tune
    from frugalml.integrations.ray_tune import SystemBudgetStopper, best_feasible_result, with_system_metrics

    def train(config):                      # unmodified: reports only its loss
        for epoch in range(20):
            tune.report({"loss": fit_one_epoch(config)})

    stopper = SystemBudgetStopper(max_memory_mb=400, max_mean_step_ms=50)
    tuner = tune.Tuner(
        with_system_metrics(train),
        param_space={"batch_size": tune.grid_search([30, 300, 3000, 30000])},
        run_config=tune.RunConfig(stop=stopper),
    )
    results = tuner.fit()
    best = best_feasible_result(results, metric="loss", mode="min")   # never an over-budget trial
    [r.metrics.get("frugalml_stop") for r in results]                # why a trial was stopped, or None

Costs: a sidecar process samples the trainable's process at 10 Hz, so training pays
nothing per step; each report reads the sidecar's peak (~5 µs) and the process once
(~10-50 µs; the whole process tree, ~0.3-0.5 ms, while it has child processes); each
trial starts one sidecar (~0.1 s, ~17 MB RSS, outside the trial).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict
from typing import Any, Callable, Iterable, Mapping, MutableMapping

from frugalml.exceptions import ConfigError
from frugalml.integrations._budget import budget_rules, numeric, view_of
from frugalml.integrations._sidecar import SystemSampler
from frugalml.metrics import CPU_S, MEAN_STEP_MS, MEMORY_MB, WALL_S
from frugalml.records import StopInfo
from frugalml.stopping import STUDY, MemoryBudget, check_all

try:
    from ray.tune import Result, Stopper, Trainable
except ImportError:  # pragma: no cover - depends on the environment
    raise ConfigError("frugalml.integrations.ray_tune needs Ray Tune; install it with: pip install 'frugalml[ray]'") from None

__all__ = ["FEASIBLE", "STOP_KEY", "SystemBudgetStopper", "best_feasible_result", "with_system_metrics"]

FEASIBLE = "feasible"  # result key: False once the trial broke a per-trial budget
STOP_KEY = "frugalml_stop"  # result key: the StopInfo (as a dict) of the budget that stopped the trial


class SystemBudgetStopper(Stopper):
    """Stops Ray Tune trials whose results break a frugalml budget.

    Budgets are the keys of a study's ``[budget]`` table: ``max_memory_mb`` (reads
    ``memory_mb``), ``max_mean_step_ms`` (reads ``mean_step_ms``, else Tune's
    ``time_this_iter_s``), ``max_trial_seconds`` (``wall_s``, else ``time_total_s``)
    and ``max_study_cpu_seconds`` (the sum of the trials' latest ``cpu_s``; ends the
    whole experiment through :meth:`stop_all`). Wrap the trainable with
    :func:`with_system_metrics` so its results carry these metrics.

    The stopper writes its verdict into each result it is given, which Tune then
    logs and keeps as the trial's latest result: ``feasible`` (False once a per-trial
    budget is broken; a study budget ends trials but leaves them feasible) and, in the
    result that stopped the trial, ``frugalml_stop`` (rule, value, threshold,
    message). Both are saved with the experiment (``result.json``, ``Result.metrics``,
    ``Tuner.restore(...).get_results()``); ``feasible`` is in ``progress.csv`` too.

    Args:
        budget: a mapping of budgets, e.g. ``{"max_memory_mb": 400}``.
        **budgets: the same as keywords.

    Attributes:
        stops: ``trial_id -> StopInfo`` for each trial this stopper stopped (in the
            driver's memory; the results keep the same record).

    Example:
        >>> stopper = SystemBudgetStopper(max_memory_mb=400)
        >>> result = {"memory_mb": 512.0, "training_iteration": 3}
        >>> stopper("t1", result)
        True
        >>> result["feasible"], result["frugalml_stop"]["message"]
        (False, 'memory 512.0 MB > budget 400 MB')
    """

    def __init__(self, budget: Mapping[str, Any] | None = None, **budgets: Any) -> None:
        self.rules = budget_rules("SystemBudgetStopper", budget, budgets)
        self.stops: dict[str, StopInfo] = {}
        self._cpu_s: dict[str, float] = {}
        self._study_stop: StopInfo | None = None
        self._warned = False

    def __call__(self, trial_id: str, result: Mapping[str, Any]) -> bool:
        metrics = numeric(result)
        metrics.setdefault(WALL_S, metrics.get("time_total_s", 0.0))
        if MEAN_STEP_MS not in metrics and "time_this_iter_s" in metrics:
            metrics[MEAN_STEP_MS] = 1000.0 * metrics["time_this_iter_s"]
        if MEMORY_MB not in metrics and not self._warned and any(isinstance(r, MemoryBudget) for r in self.rules):
            self._warned = True
            warnings.warn("SystemBudgetStopper: results carry no 'memory_mb'; wrap the trainable with "
                          "frugalml.integrations.ray_tune.with_system_metrics(trainable).", stacklevel=2)
        if CPU_S in metrics:
            self._cpu_s[trial_id] = metrics[CPU_S]
        step = int(metrics.get("training_iteration", 0))
        stop = check_all(self.rules, view_of(trial_id, step, metrics, sum(self._cpu_s.values())))
        if isinstance(result, MutableMapping):
            # Tune hands the stopper the result it then logs and keeps as the trial's
            # latest: the verdict is saved with the experiment, not only in self.stops
            result[FEASIBLE] = stop is None or not stop.is_system
            if stop is not None:
                result[STOP_KEY] = asdict(stop)
        if stop is None:
            return False
        self.stops[trial_id] = stop
        if stop.kind == STUDY:
            self._study_stop = stop
        return True

    def stop_all(self) -> bool:
        """True once the study compute budget (``max_study_cpu_seconds``) is spent."""
        return self._study_stop is not None


def best_feasible_result(results: Iterable[Result], metric: str, mode: str) -> Result:
    """The best result among trials that kept their budgets (Tune's ``get_best_result``
    for ``scope="last"``, with over-budget trials left out).

    A trial is left out when its latest result says ``feasible: False`` (written by
    :class:`SystemBudgetStopper`), when it errored, or when ``metric`` is missing, NaN
    or infinite. Works on ``tuner.fit()``'s grid and on ``Tuner.restore(...).get_results()``.

    Args:
        results: a ``ResultGrid`` (or any iterable of Tune ``Result`` objects).
        metric: the result key to rank by, e.g. ``"loss"``.
        mode: ``"min"`` or ``"max"``.

    Raises:
        RuntimeError: no trial is feasible and reported ``metric``.
    """
    if mode not in ("min", "max"):
        raise ConfigError(f"best_feasible_result's mode must be 'min' or 'max'. Got {mode!r} instead.")
    best: Result | None = None
    for result in results:
        metrics = result.metrics or {}
        value = metrics.get(metric)
        if result.error is not None or metrics.get(FEASIBLE) is False:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        if best is None or (value < best.metrics[metric] if mode == "min" else value > best.metrics[metric]):
            best = result
    if best is None:
        raise RuntimeError(f"No feasible trial reported {metric!r}: every trial broke a budget, failed or "
                           "left it out; raise the budgets or change the search space.")
    return best


def with_system_metrics(
    trainable: Callable[[dict], Any] | type[Trainable], *, interval_s: float = 0.1, sidecar: bool = True,
    step_key: str | None = None,
) -> type[Trainable]:
    """A trainable that runs ``trainable`` unchanged and adds system metrics to each result.

    Added to every result (keys the trainable reports itself are left alone):
    ``memory_mb`` (peak RSS - shared of the trial's process tree since the previous
    result, MB = 2**20 bytes), ``rss_mb``, ``cpu_percent`` (100 = one core),
    ``cpu_s``, ``wall_s``, ``mean_step_ms``, ``read_mb``/``write_mb`` and, with an
    NVIDIA GPU, ``gpu_util_percent``/``gpu_memory_mb``. The trial's process is the
    Ray worker running the trainable, so its memory includes Ray's own core worker
    (a baseline of ~100-200 MB, constant across trials); object-store pages are
    shared and not counted.

    Args:
        trainable: a function trainable ``train(config)`` or a ``Trainable`` class.
        interval_s: the sidecar's sampling period.
        sidecar: also sample from a separate process between reports (default); False
            gives the figures at each report only (no peak between reports).
        step_key: a result key counting steps done so far (e.g. ``"step"``): then
            ``mean_step_ms`` is per step; by default it is per reported iteration.
    """
    if isinstance(trainable, type) and issubclass(trainable, Trainable):
        base = trainable
    else:
        from ray.tune.trainable.function_trainable import wrap_function

        base = wrap_function(trainable)

    class SystemMetricsTrainable(base):  # type: ignore[misc, valid-type]
        def setup(self, config: dict, *args: Any, **kwargs: Any) -> None:
            self._frugalml = SystemSampler(interval_s=interval_s, sidecar=sidecar).start()
            super().setup(config, *args, **kwargs)

        def step(self) -> dict:
            result = super().step()
            steps = result.get(step_key) if step_key else self.iteration + 1  # Tune counts it after step()
            for name, value in self._frugalml.window(int(steps) if steps is not None else None).items():
                result.setdefault(name, value)
            return result

        def reset_config(self, new_config: dict) -> bool:
            reset = super().reset_config(new_config)
            if reset:
                self._frugalml.start()  # a reused actor: a new trial, new clocks
            return reset

        def cleanup(self) -> None:
            try:
                super().cleanup()
            finally:
                self._frugalml.close()

    name = getattr(trainable, "__name__", None) or getattr(base, "_name", "trainable")
    SystemMetricsTrainable._name = getattr(base, "_name", name)
    SystemMetricsTrainable.__name__ = SystemMetricsTrainable.__qualname__ = f"{name}_with_system_metrics"
    return SystemMetricsTrainable
