"""System budgets, one rule class per scope of :mod:`frugalml.budgets`.

:func:`budget_rule` builds the rule of any registry entry; the named classes
(``MemoryBudget(400)``, ...) are the same rules for the budgets people type most.
"""

from __future__ import annotations

from typing import Sequence

from frugalml.budgets import SAMPLE, SERVE, STUDY, TRIAL, WARMUP_ALLOWANCE, WARMUP_WINDOWS, WINDOW, Budget, budget
from frugalml.exceptions import ConfigError
from frugalml.records import StopInfo, Window
from frugalml.stopping._base import STUDY as STUDY_KIND
from frugalml.stopping._base import SYSTEM, StoppingRule, TrialView
from frugalml.validation import AT_LEAST_ONE, NON_NEGATIVE_INT, check, positive

_EXAMPLE = {"MB": 400, "ms": 50, "s": 600, "J": 1000, "CPU-s": 3600, "rows/s": 1000}  # a limit, in messages


class ResourceBudget(StoppingRule):
    """A limit on one registry budget; ``name`` is the budget's key."""

    kind = SYSTEM

    def __init__(self, key: str, limit: float, *, owner: str | None = None) -> None:
        self.budget: Budget = budget(key)
        self.name = key
        self.needs_peers = self.budget.needs_peers
        if owner is None:  # a rule made in code: its own parameter's name
            self.limit = float(positive(type(self).__name__, self.budget.param, limit))
        else:  # a study's [budget] key: named as the user wrote it, with its unit
            try:
                self.limit = float(positive(owner, key, limit))
            except ConfigError as error:
                raise ConfigError(f"{str(error).rstrip('.')}; write a bare number of {self.budget.unit}, "
                                  f"e.g. {key} = {_EXAMPLE.get(self.budget.unit, 10)}.") from None

    def _over(self, view: TrialView, value: float, message: str | None = None) -> StopInfo:
        b = self.budget
        return self._stop(view, value, self.limit, message or f"{b.what} {value:.4g} {b.unit} > budget {self.limit:g} {b.unit}")

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self._options().items())
        return f"{type(self).__name__}({self.budget.key}={self.limit:g}{extra})"

    def _options(self) -> dict:
        return {}


class SampleBudget(ResourceBudget):
    """Stop a trial once a watchdog sample of ``budget.metric`` exceeds the limit.

    Checked on every sample, so a single long step that allocates past the budget
    is stopped mid-step.
    """

    def check(self, view: TrialView) -> StopInfo | None:
        used = view.sample.get(self.budget.metric)
        if used is not None and used > self.limit:
            b = self.budget
            return self._over(view, used, f"{b.what} {used:.1f} {b.unit} > budget {self.limit:g} {b.unit}")
        return None


class WindowBudget(ResourceBudget):
    """Stop a trial whose window mean of ``budget.metric`` (step time) exceeds the limit.

    Between reports the watchdog also knows the time spent in the unfinished
    window; once that alone exceeds the limit times the window length, the
    window's mean must break the budget, and the trial is stopped without waiting.

    The first ``warmup_windows`` windows (default 1) carry the warm-up (imports, the
    allocator, caches: a network's first window takes ~1.7× a steady one), while the
    budget is on the steady step time, as the cost model predicts it. They are held to
    ``warmup_allowance`` times the limit (default 2), so a configuration many times too
    slow still stops in its first steps. A trial with no window after its warm-up is
    held to the limit throughout: those windows are all it costs.
    """

    def __init__(self, key: str, limit: float, *, owner: str | None = None,
                 warmup_windows: int = WARMUP_WINDOWS, warmup_allowance: float = WARMUP_ALLOWANCE) -> None:
        super().__init__(key, limit, owner=owner)
        owner = owner or type(self).__name__
        self.warmup_windows = int(check(owner, "warmup_windows", warmup_windows, NON_NEGATIVE_INT))
        self.warmup_allowance = float(check(owner, "warmup_allowance", warmup_allowance, AT_LEAST_ONE))

    def _options(self) -> dict:
        options: dict = {"warmup_windows": self.warmup_windows}
        if self.warmup_allowance != WARMUP_ALLOWANCE:
            options["warmup_allowance"] = self.warmup_allowance
        return options

    def held_to(self, index: int, *, steady_follows: bool) -> float:
        """The most window ``index`` (0-based) may average: the limit, times the allowance
        for a warm-up window that steady windows follow."""
        warm_up = index < self.warmup_windows and steady_follows
        return self.limit * self.warmup_allowance if warm_up else self.limit

    def steady_follows(self, steps_planned: int | None, eval_every: int) -> bool:
        """True unless the trial plans no window after its warm-up ones (unknown plan: more may come)."""
        return steps_planned is None or steps_planned > self.warmup_windows * eval_every

    def within(self, windows: Sequence[Window], *, steps_planned: int | None = None,
               eval_every: int | None = None) -> bool:
        """True when a finished trial's windows all kept to the budget as :meth:`check` held
        them (``eval_every``: by default the first window's length)."""
        if not windows:
            return True
        steady = self.steady_follows(steps_planned, eval_every or windows[0].step)
        return all(not (w.values.get(self.budget.metric, 0.0) > self.held_to(i, steady_follows=steady))
                   for i, w in enumerate(windows))

    def check(self, view: TrialView) -> StopInfo | None:
        b = self.budget
        steady = self.steady_follows(view.steps_planned, view.eval_every)
        if view.windows:
            mean = view.windows[-1].values.get(b.metric)
            held = self.held_to(len(view.windows) - 1, steady_follows=steady)
            if mean is not None and mean > held:
                return self._over(view, mean, f"mean step {mean:.2f} {b.unit} > {self._held(held)}")
        if view.at_end:
            return None
        held = self.held_to(len(view.windows), steady_follows=steady)
        unfinished_ms = (view.window_train_s + view.step_in_progress_s) * 1000.0
        if unfinished_ms > held * view.window_length:
            lower_bound = unfinished_ms / view.window_length
            return self._over(view, lower_bound, f"mean step already >= {lower_bound:.2f} ms in the unfinished "
                                                 f"window > {self._held(held)}")
        return None

    def _held(self, held: float) -> str:
        unit = self.budget.unit
        if held == self.limit:
            return f"budget {self.limit:g} {unit}"
        return f"{self.warmup_allowance:g} × budget {self.limit:g} {unit} (the warm-up window's allowance)"


class TrialTimeBudget(ResourceBudget):
    """Stop a trial that has run longer than the limit (seconds)."""

    def check(self, view: TrialView) -> StopInfo | None:
        if view.wall_s > self.limit:
            return self._over(view, view.wall_s, f"ran {view.wall_s:.1f} s > budget {self.limit:g} s")
        return None


class StudyBudget(ResourceBudget):
    """Stop running trials (and start no more) once the study used the limit (CPU-seconds, joules)."""

    kind = STUDY_KIND

    def check(self, view: TrialView) -> StopInfo | None:
        used, unit = view.study_used(self.budget.metric), self.budget.unit
        if used > self.limit:
            return self._over(view, used, f"study used {used:.1f} {unit} > budget {self.limit:g} {unit}")
        return None


class ServingBudget(ResourceBudget):
    """A limit on what the trained model costs to serve (latency, throughput, size, inference
    memory). The watchdog has nothing of it to check during training: :mod:`frugalml.deploy`
    measures the model under the study's ``[deploy]`` envelope and applies the limit."""

    def check(self, view: TrialView) -> StopInfo | None:
        return None


_BY_SCOPE: dict[str, type[ResourceBudget]] = {
    SAMPLE: SampleBudget, WINDOW: WindowBudget, TRIAL: TrialTimeBudget, STUDY: StudyBudget, SERVE: ServingBudget,
}


def budget_rule(key: str, limit: float, *, warmup_windows: int = WARMUP_WINDOWS) -> ResourceBudget:
    """The stopping rule of budget ``key`` at ``limit`` (a one-line error for bad input);
    ``warmup_windows`` applies to window budgets (step time) only."""
    owner = "[budget]"
    if budget(key).scope == WINDOW:
        return WindowBudget(key, limit, owner=owner, warmup_windows=warmup_windows)
    return _BY_SCOPE[budget(key).scope](key, limit, owner=owner)


class MemoryBudget(SampleBudget):
    """Stop a trial whose worker memory (RSS - shared, MB) exceeds ``max_mb``.

    Example:
        >>> MemoryBudget(400).name
        'max_memory_mb'
    """

    def __init__(self, max_mb: float) -> None:
        super().__init__("max_memory_mb", max_mb)


class GpuMemoryBudget(SampleBudget):
    """Stop a trial whose GPU memory (MB, the tree's processes on every visible GPU) exceeds ``max_mb``."""

    def __init__(self, max_mb: float) -> None:
        super().__init__("max_gpu_memory_mb", max_mb)


class StepTimeBudget(WindowBudget):
    """Stop a trial whose mean training step time over a window exceeds ``max_ms``
    (its first ``warmup_windows`` windows: twice that, see :class:`WindowBudget`).

    Example:
        >>> StepTimeBudget(50, warmup_windows=0)
        StepTimeBudget(max_mean_step_ms=50, warmup_windows=0)
    """

    def __init__(self, max_ms: float, *, warmup_windows: int = WARMUP_WINDOWS,
                 warmup_allowance: float = WARMUP_ALLOWANCE) -> None:
        super().__init__("max_mean_step_ms", max_ms, warmup_windows=warmup_windows,
                         warmup_allowance=warmup_allowance)


class WallTimeBudget(TrialTimeBudget):
    """Stop a trial that has run longer than ``max_s`` seconds."""

    def __init__(self, max_s: float) -> None:
        super().__init__("max_trial_seconds", max_s)


class StudyComputeBudget(StudyBudget):
    """Stop running trials (and start no more) once the study used ``max_cpu_s`` CPU-seconds."""

    def __init__(self, max_cpu_s: float) -> None:
        super().__init__("max_study_cpu_seconds", max_cpu_s)
