"""A noise-aware verdict per metric: a bootstrap confidence bound on how much worse.

Measurements are nested: a trial's windows, several trials (repeats) of one
configuration, or rounds of timing. The hierarchical bootstrap resamples the groups,
then the values within each chosen group, so a trial whose every window is slow
counts once per trial, not once per window (Saravanan et al. 2020, "Application of
the hierarchical bootstrap to multi-level data"). scipy's ``bootstrap`` resamples a
flat sample only, hence this small function.

The statistic is the mean, or for step time timed here in at least
``FASTEST_ROUND_MIN_ROUNDS`` rounds each side's fastest round (``"min"``). Other work on
the machine only ever adds time, in bursts that can fall on one side's rounds more than
the other's, so a side's least disturbed round is its best estimate (as ``timeit``
advises); no bootstrap then, the fastest rounds are compared with the tolerances as they
are. That has no confidence bound: it is wrong when every round of the candidate was
slowed, likely with few rounds (a 3-round retrain gate in this repository's loaded test
suite read the same model 2.4x slower), hence the mean below 5 rounds.
``benchmarks/gate_false_alarms.py`` measures both rules' error rates on the same rounds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from frugalml.gate._settings import MetricGate

Groups = Sequence[Sequence[float]]

PASS, REGRESSION, IMPROVED = "pass", "regression", "improved"
FASTEST_ROUND_MIN_ROUNDS = 5  # fewer rounds of step time: the mean, with its bound


def step_time_statistic(rounds: int) -> str:
    """How step time timed here in ``rounds`` rounds a side is judged: ``"min"`` or ``"mean"``."""
    return "min" if rounds >= FASTEST_ROUND_MIN_ROUNDS else "mean"


def clean(groups: Groups) -> list[np.ndarray]:
    """Finite values only; groups left empty are dropped."""
    arrays = [np.asarray([v for v in group if v is not None and math.isfinite(v)], dtype=np.float64)
              for group in groups]
    return [a for a in arrays if a.size]


def bootstrap_means(groups: list[np.ndarray], resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``resamples`` hierarchical-bootstrap replicates of the pooled mean of ``groups``."""
    sizes = np.asarray([g.size for g in groups], dtype=np.float64)
    if len(groups) == 1 and groups[0].size == 1:
        return np.full(resamples, groups[0][0])
    within = np.stack([g[rng.integers(0, g.size, size=(resamples, g.size))].mean(axis=1) for g in groups])
    chosen = rng.integers(0, len(groups), size=(resamples, len(groups)))
    columns = np.arange(resamples)[:, None]
    weights = sizes[chosen]
    return (within[chosen, columns] * weights).sum(axis=1) / weights.sum(axis=1)


def pooled_mean(groups: list[np.ndarray]) -> float:
    return float(np.concatenate(groups).mean())


def smallest(groups: list[np.ndarray]) -> float:
    return float(np.concatenate(groups).min())


def as_is(groups: list[np.ndarray], resamples: int, rng: np.random.Generator) -> np.ndarray:
    """The smallest value, every time: the fastest round needs no resampling (see the module docstring)."""
    return np.full(resamples, smallest(groups))


#: statistic -> (its replicates, its value on the groups)
STATISTICS = {"mean": (bootstrap_means, pooled_mean), "min": (as_is, smallest)}


@dataclass(frozen=True)
class MetricResult:
    """One metric's comparison. ``worse_by``: how much worse the candidate is (in the
    metric's unit; negative = better), with its one-sided confidence bounds."""

    metric: str
    unit: str
    higher_is_better: bool
    baseline: float
    candidate: float
    ratio: float
    ratio_interval: tuple[float, float]
    worse_by: float
    worse_by_low: float
    relative_low: float
    status: str
    reason: str
    n_baseline: int
    n_candidate: int
    statistic: str = "mean"
    rounds: tuple[tuple[float, ...], tuple[float, ...]] = ((), ())  # baseline's, candidate's, when timed in rounds

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in self.__dict__.items()}


def decide(gate: MetricGate, baseline: Groups, candidate: Groups, *, confidence: float, resamples: int,
           seed: int, statistic: str = "mean", keep_rounds: bool = False) -> MetricResult:
    """Regression when, with ``confidence``, the candidate's mean is worse by more than both
    tolerances (or breaks the gate's ``limit``); improved when it is as surely better by as
    much. With ``statistic="min"`` (rounds of timing, lower is better), the fastest rounds are
    compared as they are, and the ``limit`` holds the candidate's fastest round. ``keep_rounds``:
    list the values (one per round) in the result."""
    if statistic == "min" and gate.metric.higher_is_better:
        raise ValueError(f"the fastest round is for timings (lower is better), not {gate.metric.name}")
    base, cand = clean(baseline), clean(candidate)
    rng = np.random.default_rng(seed)
    replicates, value = STATISTICS[statistic]
    # a bootstrap bound; the fastest rounds are compared as they are, and so is a side of one value (one trial
    # reporting once): resampling it gives it back every time, and a bound from no noise would claim a confidence
    single = statistic == "mean" and min(sum(g.size for g in base), sum(g.size for g in cand)) == 1
    surely = statistic == "mean" and not single
    named, bound, confident = ("", "at least ", f" at {confidence:.0%} confidence") if surely else \
        ("", "", " (one value a side, no confidence bound: [study] repeats >= 2 give one)") if single else \
        ("fastest round ", "", "")
    b_star, c_star = replicates(base, resamples, rng), replicates(cand, resamples, rng)
    b, c = value(base), value(cand)
    sign = -1.0 if gate.metric.higher_is_better else 1.0
    worse = sign * (c_star - b_star)
    scale = np.abs(b_star)
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(scale > 0, worse / scale, np.where(worse > 0, np.inf, np.where(worse < 0, -np.inf, 0.0)))
        ratios = np.where(b_star != 0, c_star / b_star, np.nan)
    alpha = 1.0 - confidence
    low_abs, high_abs = np.quantile(worse, [alpha, 1 - alpha])
    low_rel, high_rel = np.quantile(relative, [alpha, 1 - alpha])
    interval = tuple(float(q) for q in np.nanquantile(ratios, [alpha / 2, 1 - alpha / 2])) \
        if np.isfinite(ratios).any() else (math.nan, math.nan)
    unit = gate.metric.unit
    tolerance = f"{gate.max_relative_regression:.0%} and {gate.max_absolute_regression:g}{unit}"
    if gate.limit is not None and sign * (c - gate.limit) > 0:
        status, reason = REGRESSION, f"{c:.4g}{unit} is {'below' if sign < 0 else 'above'} the limit {gate.limit:g}{unit}"
    elif low_abs > gate.max_absolute_regression and low_rel > gate.max_relative_regression:
        status, reason = REGRESSION, (f"{named}worse by {bound}{low_rel:.1%} ({low_abs:.3g}{unit}){confident}; "
                                      f"tolerated: {tolerance}")
    elif high_abs < -gate.max_absolute_regression and high_rel < -gate.max_relative_regression:
        status, reason = IMPROVED, f"{named}better by {bound}{-high_rel:.1%} ({-high_abs:.3g}{unit})"
    else:
        status, reason = PASS, (f"not surely worse than {tolerance} ({confidence:.0%} confidence)" if surely
                                else f"{named}not worse than {tolerance}{confident}")
    rounds = tuple(tuple(float(v) for v in np.concatenate(side)) for side in (base, cand)) \
        if keep_rounds or statistic == "min" else ((), ())
    return MetricResult(
        gate.metric.name, unit, gate.metric.higher_is_better, b, c, c / b if b else math.nan, interval,
        sign * (c - b), float(low_abs), float(low_rel), status, reason,
        sum(g.size for g in base), sum(g.size for g in cand), statistic, rounds,
    )
