"""Samplers propose configurations; they learn from finished ones (ask-and-tell)."""

from __future__ import annotations

import abc
import importlib.util
import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from frugalml.budgets import SERVING_METRICS
from frugalml.exceptions import ConfigError
from frugalml.metrics import (ACCURACY, CPU_PERCENT, MAXIMISED, MEAN_STEP_MS, MEMORY_MB, RMSE, THROUGHPUT_SPS,
                              TRAIN_LOSS, VAL_LOSS, WALL_S)
from frugalml.records import TrialRecord
from frugalml.search._space import (
    check_size, config_id, fixed_values, grid_size, validate_space,
)

METHODS = ("grid", "random", "tpe", "gp", "nsga2")
KNOWN_METRICS = (
    VAL_LOSS, ACCURACY, RMSE, TRAIN_LOSS, MEAN_STEP_MS, MEMORY_MB, CPU_PERCENT, THROUGHPUT_SPS, WALL_S,
    *SERVING_METRICS,
)


#: params -> predicted relative violation per budget (``value / limit - 1``; NaN: not known to fit, past
#: what was measured, so not to be learnt as infeasible), or None if predicted to fit
Screen = Callable[[Mapping[str, Any]], "Mapping[str, float] | None"]
#: params -> (predicted CPU-s of the trial, the median finished trial's), or None before the model can tell
Cost = Callable[[Mapping[str, Any]], "tuple[float, float] | None"]


@dataclass(frozen=True)
class Config:
    """A configuration to run ``repeats`` times."""

    config_id: str
    params: Mapping[str, Any]


@dataclass
class Search:
    """How configurations are chosen.

    Args:
        method: ``grid`` (every combination, in order), ``random``, ``tpe``, ``gp`` or ``nsga2``
            (Optuna samplers through ask-and-tell). ``gp`` is Optuna's Gaussian-process sampler
            (log expected improvement times the probability of fitting the budgets): for small
            continuous spaces and few trials; it needs PyTorch.
        space: parameter → list of choices, a ``{low, high, log, int}`` range, or a fixed value.
        n_trials: configurations to try (random/tpe/gp/nsga2; grid tries them all).
        objectives: metrics to optimise, e.g. ``["val_loss"]`` or
            ``["val_loss", "mean_step_ms"]`` (multi-objective). ``accuracy`` and
            ``throughput_sps`` are maximised, everything else minimised.
        seed: seed of the sampler.
        constraints: tell TPE / NSGA-II how far each configuration broke the resource
            budgets (Optuna constraints), so they learn to stop proposing ones that
            cannot fit; ``false`` is plain search (a budget-stopped trial is just pruned).
        points: with grid search, run exactly these configurations, in this order,
            instead of every combination (a warm start: an earlier study's best ones).
        cost_aware: with random / TPE / NSGA-II and a ``[prediction]`` cost model, favour
            configurations predicted cheap (cost cooling, Lee et al. 2020): a candidate
            predicted to cost ``c`` CPU-s against the median finished trial's ``m`` is
            proposed with probability ``min(1, m / c) ** (1 - progress)``, where progress is
            the share of ``n_trials`` proposed (or of ``max_study_cpu_seconds`` spent, if
            larger); a deferred candidate is dropped from the sampler's model, not told as bad.
    """

    method: str = "grid"
    space: dict[str, Any] = field(
        default_factory=lambda: {"batch_size": [30, 300, 3000, 30000], "learning_rate": [0.1, 0.01, 0.001, 0.0001]}
    )
    n_trials: int | None = None
    objectives: list[str] = field(default_factory=lambda: [VAL_LOSS])
    seed: int = 0
    constraints: bool = True
    points: list[dict[str, Any]] | None = None
    cost_aware: bool = False

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"Unknown search method {self.method!r}; use one of {', '.join(METHODS)}.")
        validate_space(self.space, self.method)
        if self.method == "grid" and self.n_trials is not None:
            raise ConfigError("Grid search tries every configuration, so 'n_trials' does not apply; remove it, "
                              "or use method = \"random\" or \"tpe\" to try n_trials of them.")
        if self.method != "grid" and (not isinstance(self.n_trials, int) or self.n_trials < 1):
            raise ConfigError(f"Search method {self.method!r} needs 'n_trials' >= 1. Got {self.n_trials!r} instead.")
        if self.method == "grid" and self.points is None:
            sizes = " x ".join(str(len(v)) for v in self.space.values() if isinstance(v, list))
            check_size(f"The grid ({sizes})", grid_size(self.space), "list fewer values, or use method = \"random\" "
                       "or \"tpe\" with n_trials")
        check_size("[search] n_trials", self.n_trials or 0, "lower n_trials")
        if isinstance(self.objectives, str):
            self.objectives = [self.objectives]
        if not self.objectives:
            raise ConfigError("[search] 'objectives' must name at least one metric, e.g. ['val_loss'].")
        for objective in self.objectives:
            if objective not in KNOWN_METRICS:
                raise ConfigError(f"Unknown objective metric {objective!r}; use one of {', '.join(KNOWN_METRICS)}.")
        if self.points is not None:
            self._check_points()
        for flag in ("constraints", "cost_aware"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"[search] '{flag}' must be true or false. Got {getattr(self, flag)!r} instead.")
        if self.method == "gp" and importlib.util.find_spec("torch") is None:
            raise ConfigError("[search] method = \"gp\" runs Optuna's GPSampler, which needs PyTorch: "
                              "pip install torch (or frugalml[torch]), or use method = \"tpe\".")
        if self.cost_aware and self.method == "gp":
            raise ConfigError("[search] cost_aware defers costly candidates for a redraw, and the GP redraws the same "
                              "point (its model has not changed): use method = \"tpe\" or \"random\" with "
                              "cost_aware, or drop cost_aware.")
        if self.cost_aware and self.method == "grid":
            raise ConfigError("[search] cost_aware weighs the proposals of random, tpe or nsga2; grid search runs "
                              "every configuration. Use another method or drop cost_aware.")

    def _check_points(self) -> None:
        if self.method != "grid":
            raise ConfigError("[search] 'points' lists the configurations grid search runs; use it with "
                              "method = \"grid\", or drop it.")
        if not isinstance(self.points, list) or not self.points or not all(isinstance(p, Mapping) for p in self.points):
            raise ConfigError(f"[search] 'points' must be a non-empty list of tables, e.g. [{{batch_size = 30}}]. "
                              f"Got {self.points!r} instead.")
        for point in self.points:
            outside = sorted(set(point) - set(self.space))
            if outside:
                raise ConfigError(f"[search] point {dict(point)} sets {outside}, which the space does not have.")

    @property
    def directions(self) -> list[str]:
        return ["maximize" if o in MAXIMISED else "minimize" for o in self.objectives]

    def sampler(self, budget: Mapping[str, Any] | None = None, screen: Screen | None = None,
                cost: Cost | None = None, spent: Callable[[], float] | None = None) -> "Sampler":
        """A fresh sampler; ``budget`` (the study's) gives the constraints TPE / NSGA-II learn
        from; ``screen`` rejects candidates predicted over it before they are proposed, and
        ``cost`` (with ``spent``, the share of the compute budget used) weighs them by cost
        when ``cost_aware`` (random, TPE and NSGA-II; grid search runs its grid)."""
        if self.method == "grid":
            return GridSampler(self.space, self.points)
        # lazy: Optuna's import costs ~0.2 CPU-s that grid search, serving and registering never need
        from frugalml.search._optuna import CONSTRAINED, OptunaSampler

        constrained = self.constraints and CONSTRAINED
        return OptunaSampler(self, budget if constrained else None, screen, cost if self.cost_aware else None, spent)


class Sampler(abc.ABC):
    """Proposes configurations; told the finished repeats of each."""

    @abc.abstractmethod
    def ask(self) -> Config | None:
        """The next configuration, or None when the search is exhausted."""

    def tell(self, config: Config, records: Sequence[TrialRecord]) -> None:
        """Learn from the finished repeats of ``config``."""

    def restore(self, finished: Sequence[tuple[Config, Sequence[TrialRecord]]], incomplete: Sequence[Config]) -> None:
        """Rebuild state on resume: ``finished`` configs are done; ``incomplete`` ones come first."""


class GridSampler(Sampler):
    """Every combination of the listed values, in a fixed order (or just ``points``, in theirs)."""

    def __init__(self, space: Mapping[str, Any], points: Sequence[Mapping[str, Any]] | None = None) -> None:
        fixed = fixed_values(space)
        names = [k for k in space if k not in fixed]
        combinations = [dict(zip(names, values)) for values in itertools.product(*(space[n] for n in names))] \
            if points is None else [{k: v for k, v in p.items() if k not in fixed} for p in points]
        self._configs = [Config(config_id(varied), {**fixed, **varied}) for varied in combinations]
        self._done: set[str] = set()
        self._position = 0

    def __len__(self) -> int:
        return len(self._configs)

    def ask(self) -> Config | None:
        while self._position < len(self._configs):
            config = self._configs[self._position]
            self._position += 1
            if config.config_id not in self._done:
                return config
        return None

    def restore(self, finished, incomplete) -> None:
        self._done = {config.config_id for config, _ in finished} | {c.config_id for c in incomplete}


def objective_values(records: Sequence[TrialRecord], objectives: Sequence[str]) -> list[float] | None:
    """Mean of each objective over feasible repeats; None if none is usable."""
    feasible = [r for r in records if r.feasible]
    if not feasible:
        return None
    values = []
    for objective in objectives:
        finals = [r.serving(objective) if objective in SERVING_METRICS else
                  r.mean(objective) if objective in (MEAN_STEP_MS, MEMORY_MB) else r.last(objective) for r in feasible]
        finals = [v for v in finals if v is not None and math.isfinite(v)]
        if not finals:
            return None
        values.append(sum(finals) / len(finals))
    return values
