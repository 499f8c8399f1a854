"""Learning rules: patience, median stopping, divergence. They keep a trial feasible."""

from __future__ import annotations

import bisect
import math
import statistics

from frugalml.exceptions import ConfigError
from frugalml.metrics import TRAIN_LOSS, VAL_LOSS
from frugalml.records import StopInfo, TrialRecord
from frugalml.stopping._base import ML, StoppingRule, TrialView
from frugalml.validation import positive


class Patience(StoppingRule):
    """Stop when ``metric`` has not improved by ``min_delta`` for ``patience`` windows."""

    name = "patience"
    kind = ML
    per_sample = False
    needs_peers = False

    def __init__(self, patience: int, *, min_delta: float = 0.0, metric: str = VAL_LOSS) -> None:
        self.patience = int(positive("Patience", "patience", patience, integer=True))
        if not isinstance(min_delta, (int, float)) or min_delta < 0:
            raise ConfigError(f"The 'min_delta' parameter of Patience must be >= 0. Got {min_delta!r} instead.")
        self.min_delta = float(min_delta)
        self.metric = metric

    def check(self, view: TrialView) -> StopInfo | None:
        values = [v for v in view.values(self.metric) if math.isfinite(v)]
        if len(values) <= self.patience:
            return None
        best_before = min(values[: -self.patience])
        recent_best = min(values[-self.patience :])
        if recent_best >= best_before - self.min_delta:
            return self._stop(
                view, recent_best, best_before - self.min_delta,
                f"{self.metric} did not improve on {best_before:.4g} for {self.patience} windows",
            )
        return None


class MedianStopping(StoppingRule):
    """Stop a trial whose best ``metric`` so far is worse than the median of finished
    peers' values at the same step (Golovin et al., 2017; Optuna's MedianPruner).

    Each peer's running minimum is built once, and the peers' median at a step once
    per (workload, number of peers, step), so checking a window costs about the same
    with 10 finished peers as with 1,000. The memo is study-wide, not per trial.
    """

    name = "median"
    kind = ML
    per_sample = False
    MEMO_SIZE = 4096

    def __init__(self, *, min_trials: int = 3, warmup_windows: int = 2, metric: str = VAL_LOSS) -> None:
        self.min_trials = int(positive("MedianStopping", "min_trials", min_trials, integer=True))
        self.warmup_windows = int(warmup_windows)
        self.metric = metric
        self._medians: dict[tuple[str, int, str, int], float | None] = {}
        self._minima: dict[str, tuple[list[int], list[float]]] = {}

    def _median_at(self, view: TrialView, step: int) -> float | None:
        peers = view.peers
        key = (view.workload, len(peers), peers[-1].trial_id if peers else "", step)
        if key not in self._medians:
            if len(self._medians) >= self.MEMO_SIZE:
                self._medians.clear()
            peer_values = [v for peer in peers if (v := self._best_until(peer, step)) is not None]
            self._medians[key] = statistics.median(peer_values) if len(peer_values) >= self.min_trials else None
        return self._medians[key]

    def _best_until(self, peer: TrialRecord, step: int) -> float | None:
        """The peer's best value up to ``step``: a bisection in its running minimum, built once."""
        if peer.trial_id not in self._minima:
            if len(self._minima) >= self.MEMO_SIZE:
                self._minima.clear()
            steps, minima, best = [], [], math.inf
            for window in peer.windows:
                if self.metric in window.values:
                    best = min(best, window.values[self.metric])
                    steps.append(window.step)
                    minima.append(best)
            self._minima[peer.trial_id] = (steps, minima)
        steps, minima = self._minima[peer.trial_id]
        at = bisect.bisect_right(steps, step)
        return minima[at - 1] if at and math.isfinite(minima[at - 1]) else None

    def check(self, view: TrialView) -> StopInfo | None:
        values = [v for v in view.values(self.metric) if math.isfinite(v)]
        if len(values) <= self.warmup_windows or len(view.peers) < self.min_trials:
            return None
        median = self._median_at(view, view.windows[-1].step)
        if median is None:
            return None
        best = min(values)
        if best > median:
            return self._stop(view, best, median, f"{self.metric} {best:.4g} worse than peers' median {median:.4g}")
        return None


class Divergence(StoppingRule):
    """Stop on NaN/inf loss, or a window training loss over ``factor`` times the first one."""

    name = "divergence"
    kind = ML
    per_sample = False
    needs_peers = False

    def __init__(self, *, factor: float = 1000.0) -> None:
        self.factor = positive("Divergence", "factor", factor)

    def check(self, view: TrialView) -> StopInfo | None:
        if not view.windows:
            return None
        latest = view.windows[-1].values
        for name in (TRAIN_LOSS, VAL_LOSS):
            value = latest.get(name)
            if value is not None and not math.isfinite(value):
                return self._stop(view, value, math.inf, f"{name} is {value}")
        losses = view.values(TRAIN_LOSS)
        first, last = losses[0] if losses else None, losses[-1] if losses else None
        if first and last is not None and first > 0 and last > self.factor * first:
            return self._stop(
                view, last, self.factor * first, f"train_loss {last:.4g} > {self.factor:g} x first window's {first:.4g}"
            )
        return None

