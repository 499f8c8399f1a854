"""In-trial prediction: a trial's cost at the end of training, from its first windows.

Three figures, each a point value with one-sided bounds at a confidence level:

* **step time** levels off after the first window, which carries the warm-up (first
  ``partial_fit`` calls, first touches of the data). The steady level is the median
  of the later windows' means; its band is their robust spread (1.4826 x MAD of the
  log means, at least 10 %), or a prior of 30 % while fewer than three later windows
  exist. The
  trial's mean step time is the observed windows plus the remaining ones at that level.
* **peak memory** (or any sampled metric's peak, :func:`estimate_peak`) cannot fall below the highest window seen, which is the lower
  bound. Memory rises during warm-up and then levels off, so a rise is projected
  only when the later windows show a significant linear trend. If the rises shrink
  (later half vs earlier half, a geometric decay ``r``), it is a warm-up that
  saturates: the point adds the rest of the geometric series, ``rise * r / (1 - r)``,
  and the lower bound stays at the peak seen. If they do not shrink, it is a leak:
  the point extrapolates the slope to the end, and the lower bound its lower
  confidence slope, but only as far ahead as the rise has been watched. The upper
  bound extrapolates the upper slope to the end either way.
* **total time** (or any running total's end, :func:`estimate_total`): wall time so far
  plus the remaining steps at the recent windows' wall time per step (evaluation included).

Example:
    >>> from frugalml.records import Window
    >>> windows = [Window(10 * i, {"mean_step_ms": 5.0, "memory_mb": 100.0, "wall_s": 0.06 * i})
    ...            for i in range(1, 4)]
    >>> estimate = estimate_trial(windows, steps_planned=100)
    >>> round(estimate.total_s.value, 2), estimate.peak_memory_mb.value
    (0.6, 100.0)
"""

from __future__ import annotations

import math
import statistics
from typing import NamedTuple, Sequence

from frugalml.metrics import MEAN_STEP_MS, MEMORY_MB, WALL_S
from frugalml.records import Window
from frugalml.validation import Interval, check

# Relative (log) window-to-window spread of step time and wall time per step, before a
# trial has measured its own: the median we measured on a busy 2-core machine, where
# other processes come and go (0.2-0.33; a quiet machine is far steadier).
PRIOR_STEP_SPREAD = 0.3
MIN_STEP_SPREAD = 0.1
MIN_MEMORY_SPREAD = 0.01  # relative jitter of a window's peak memory, at least
RECENT_WINDOWS = 8  # only the latest windows describe the steady state


class Estimate(NamedTuple):
    """A predicted value with one-sided bounds: ``P(true >= low) ~ P(true <= high) ~ confidence``."""

    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


class TrialEstimate(NamedTuple):
    """What a trial's first ``windows`` say about its end. Fields are None when unknown."""

    windows: int
    steady_step_ms: Estimate | None
    mean_step_ms: Estimate | None
    peak_memory_mb: Estimate | None
    total_s: Estimate | None


def z_score(confidence: float) -> float:
    """The standard normal quantile of ``confidence`` (one-sided)."""
    check_confidence("estimate_trial", confidence)
    return statistics.NormalDist().inv_cdf(confidence)


def check_confidence(owner: str, confidence: object) -> float:
    return float(check(owner, "confidence", confidence, Interval(float, 0.5, 1)))


def robust_spread(values: Sequence[float]) -> float:
    """1.4826 x the median absolute deviation: the standard deviation, for normal data."""
    centre = statistics.median(values)
    return 1.4826 * statistics.median(abs(v - centre) for v in values)


def _finite(windows: Sequence[Window], name: str) -> list[tuple[int, float]]:
    return [(w.step, v) for w in windows if (v := w.values.get(name)) is not None and math.isfinite(v) and v >= 0]


def _steady_step(windows: Sequence[Window], z: float) -> tuple[Estimate, float] | None:
    means = [v for _, v in _finite(windows, MEAN_STEP_MS) if v > 0]
    if not means:
        return None
    steady = (means[1:] if len(means) > 1 else means)[-RECENT_WINDOWS:]
    level = statistics.median(steady)
    logs = [math.log(v) for v in steady]
    spread = PRIOR_STEP_SPREAD if len(steady) < 3 else max(robust_spread(logs), MIN_STEP_SPREAD)
    return Estimate(level, level * math.exp(-z * spread), level * math.exp(z * spread)), spread


def _remaining_windows(windows: Sequence[Window], steps_planned: int | None, eval_every: int | None) -> int | None:
    if steps_planned is None or not windows:
        return None
    last = windows[-1].step
    every = eval_every or windows[0].step
    return max(0, math.ceil((steps_planned - last) / max(every, 1)))


def _mean_step(windows: Sequence[Window], steady: Estimate, remaining: int | None) -> Estimate:
    means = [v for _, v in _finite(windows, MEAN_STEP_MS) if v > 0]
    if remaining is None:
        return steady
    total = len(means) + remaining
    done = sum(means)
    return Estimate(*((done + remaining * level) / total for level in steady))


def _peak(windows: Sequence[Window], steps_planned: int | None, z: float, metric: str = MEMORY_MB) -> Estimate | None:
    points = _finite(windows, metric)
    if not points:
        return None
    peak = max(v for _, v in points)
    recent = points[1:][-RECENT_WINDOWS:]
    jitter = max(robust_spread([v for _, v in recent]) if len(recent) >= 3 else 0.0, MIN_MEMORY_SPREAD * peak)
    value, low, high = peak, peak, peak + z * jitter
    remaining = None if steps_planned is None else max(0, steps_planned - points[-1][0])
    if len(recent) >= 3 and remaining:
        slope, slope_se = _linear_trend(recent)
        if slope - z * slope_se > 0:  # still rising, significantly
            high = peak + (slope + z * slope_se) * remaining + z * jitter
            ratio, rise = _decay(recent)
            if ratio < 1:  # a warm-up rise: its increments shrink geometrically
                windows_left = remaining / max(1, (recent[-1][0] - recent[0][0]) / (len(recent) - 1))
                value = peak + min(rise * ratio / (1 - ratio), rise * windows_left)
            else:  # a leak: it goes on
                value = peak + slope * remaining
                low = peak + (slope - z * slope_se) * min(remaining, recent[-1][0] - recent[0][0])
    return Estimate(value, low, high)


def _decay(points: Sequence[tuple[int, float]]) -> tuple[float, float]:
    """Per-window ratio of successive rises (later half vs earlier half) and the latest rise."""
    rises = [b - a for (_, a), (_, b) in zip(points, points[1:])]
    half = len(rises) // 2
    early, late = statistics.fmean(rises[:half]), statistics.fmean(rises[-half:])
    if early <= 0:
        return 1.0, late
    return max(0.0, late / early) ** (1 / (len(rises) - half)), max(late, 0.0)


def _linear_trend(points: Sequence[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares slope (per step) and its standard error."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    if sxx == 0:
        return 0.0, math.inf
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx
    residual = sum((y - mean_y - slope * (x - mean_x)) ** 2 for x, y in points)
    return slope, math.sqrt(residual / (n - 2) / sxx) if n > 2 else math.inf


def _total(windows: Sequence[Window], steps_planned: int | None, z: float, metric: str = WALL_S) -> Estimate | None:
    points = _finite(windows, metric)
    if steps_planned is None or not points:
        return None
    elapsed = points[-1][1]
    remaining = max(0, steps_planned - points[-1][0])
    rates = [(w1 - w0) / (s1 - s0) for (s0, w0), (s1, w1) in zip(points, points[1:]) if s1 > s0]
    rates = [r for r in rates if r > 0][-RECENT_WINDOWS:] or [elapsed / max(points[-1][0], 1)]
    rate = statistics.median(rates)
    spread = PRIOR_STEP_SPREAD if len(rates) < 3 else max(robust_spread([math.log(r) for r in rates]), MIN_STEP_SPREAD)
    return Estimate(*(elapsed + remaining * rate * math.exp(k * spread) for k in (0.0, -z, z)))


def estimate_peak(windows: Sequence[Window], metric: str, *, steps_planned: int | None = None,
                  confidence: float = 0.9) -> Estimate | None:
    """Predict the peak of a sampled metric (``memory_mb``, ``gpu_memory_mb``) at the trial's end,
    as ``estimate_trial`` does for memory; None when no window has it."""
    return _peak(windows, steps_planned, z_score(confidence), metric)


def estimate_total(windows: Sequence[Window], metric: str, *, steps_planned: int | None = None,
                   confidence: float = 0.9) -> Estimate | None:
    """Predict a running total (``energy_j``) at the trial's end, as ``estimate_trial`` does
    for wall time: so far, plus the remaining steps at the recent windows' rate per step;
    None without ``steps_planned`` or a window that has it."""
    return _total(windows, steps_planned, z_score(confidence), metric)


def estimate_trial(
    windows: Sequence[Window],
    *,
    steps_planned: int | None = None,
    eval_every: int | None = None,
    confidence: float = 0.9,
) -> TrialEstimate:
    """Predict a trial's steady step time, mean step time, peak memory and total time.

    Args:
        windows: the trial's evaluation windows so far (``mean_step_ms``, ``memory_mb``,
            ``wall_s``); the final partial window of a stopped trial may lack some.
        steps_planned: steps of the full run; without it the total time is unknown.
        eval_every: steps per window (default: the first window's length).
        confidence: the one-sided confidence of the ``low`` and ``high`` bounds.
    """
    z = z_score(confidence)
    steady = _steady_step(windows, z)
    remaining = _remaining_windows(windows, steps_planned, eval_every)
    return TrialEstimate(
        windows=len(windows),
        steady_step_ms=steady[0] if steady else None,
        mean_step_ms=_mean_step(windows, steady[0], remaining) if steady else None,
        peak_memory_mb=_peak(windows, steps_planned, z),
        total_s=_total(windows, steps_planned, z),
    )
