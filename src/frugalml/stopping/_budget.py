"""System budgets: memory, mean step time, wall time per trial, study compute."""

from __future__ import annotations

from frugalml.records import StopInfo
from frugalml.stopping._base import STUDY, SYSTEM, StoppingRule, TrialView
from frugalml.stopping._validation import positive


class MemoryBudget(StoppingRule):
    """Stop a trial whose worker memory (RSS - shared, MB) exceeds ``max_mb``.

    Checked on every watchdog sample, so a single long step that allocates past
    the budget is stopped mid-step.

    Example:
        >>> MemoryBudget(400).name
        'max_memory_mb'
    """

    name = "max_memory_mb"
    kind = SYSTEM

    def __init__(self, max_mb: float) -> None:
        self.max_mb = positive("MemoryBudget", "max_mb", max_mb)

    def check(self, view: TrialView) -> StopInfo | None:
        used = view.sample.get("memory_mb")
        if used is not None and used > self.max_mb:
            return self._stop(view, used, self.max_mb, f"memory {used:.1f} MB > budget {self.max_mb:g} MB")
        return None


class StepTimeBudget(StoppingRule):
    """Stop a trial whose mean training step time over a window exceeds ``max_ms``.

    Between reports the watchdog also knows the time spent in the unfinished
    window; once that alone exceeds ``max_ms`` times the window length, the
    window's mean must break the budget, and the trial is stopped without waiting.
    """

    name = "max_mean_step_ms"
    kind = SYSTEM

    def __init__(self, max_ms: float) -> None:
        self.max_ms = positive("StepTimeBudget", "max_ms", max_ms)

    def check(self, view: TrialView) -> StopInfo | None:
        if view.windows:
            mean_ms = view.windows[-1].values.get("mean_step_ms")
            if mean_ms is not None and mean_ms > self.max_ms:
                return self._stop(
                    view, mean_ms, self.max_ms, f"mean step {mean_ms:.2f} ms > budget {self.max_ms:g} ms"
                )
        if view.at_end:
            return None
        unfinished_ms = (view.window_train_s + view.step_in_progress_s) * 1000.0
        if unfinished_ms > self.max_ms * view.window_length:
            lower_bound = unfinished_ms / view.window_length
            return self._stop(
                view, lower_bound, self.max_ms,
                f"mean step already >= {lower_bound:.2f} ms in the unfinished window > budget {self.max_ms:g} ms",
            )
        return None


class WallTimeBudget(StoppingRule):
    """Stop a trial that has run longer than ``max_s`` seconds."""

    name = "max_trial_seconds"
    kind = SYSTEM

    def __init__(self, max_s: float) -> None:
        self.max_s = positive("WallTimeBudget", "max_s", max_s)

    def check(self, view: TrialView) -> StopInfo | None:
        if view.wall_s > self.max_s:
            return self._stop(view, view.wall_s, self.max_s, f"ran {view.wall_s:.1f} s > budget {self.max_s:g} s")
        return None


class StudyComputeBudget(StoppingRule):
    """Stop running trials (and start no more) once the study used ``max_cpu_s`` CPU-seconds."""

    name = "max_study_cpu_seconds"
    kind = STUDY

    def __init__(self, max_cpu_s: float) -> None:
        self.max_cpu_s = positive("StudyComputeBudget", "max_cpu_s", max_cpu_s)

    def check(self, view: TrialView) -> StopInfo | None:
        if view.study_cpu_s > self.max_cpu_s:
            return self._stop(
                view, view.study_cpu_s, self.max_cpu_s,
                f"study used {view.study_cpu_s:.1f} CPU-s > budget {self.max_cpu_s:g} CPU-s",
            )
        return None
