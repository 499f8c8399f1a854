"""The stopping-rule extension point and the snapshot rules read."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from frugalml.metrics import CPU_S, ENERGY_J
from frugalml.records import StopInfo, StopKind, TrialRecord, Window

SYSTEM, ML, STUDY = StopKind.SYSTEM, StopKind.ML, StopKind.STUDY


@dataclass(frozen=True)
class TrialView:
    """An immutable snapshot of a running trial, as stopping rules see it.

    Args:
        trial_id: the trial's stable id.
        workload: the workload's name; peers share it.
        params: the configuration under test.
        eval_every: steps per evaluation window.
        steps_done: steps finished so far.
        wall_s: seconds since the worker started.
        cpu_s: CPU seconds of the worker's process tree so far.
        windows: evaluation windows so far.
        sample: the latest system sample of the worker's process tree.
        step_in_progress_s: seconds the step now running has taken so far (0 while
            the trial evaluates); with a long step this grows between reports.
        window_train_s: training seconds in the current, unfinished window.
        peers: finished trials of the same workload (for median stopping).
        study_cpu_s: CPU seconds used by the whole study so far, this trial included.
        study_energy_j: joules used by the whole study so far, this trial included.
        steps_planned: steps the trial would run in full, when known.
    """

    trial_id: str
    workload: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    eval_every: int = 100
    steps_done: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    windows: tuple[Window, ...] = ()
    sample: Mapping[str, float] = field(default_factory=dict)
    step_in_progress_s: float = 0.0
    window_train_s: float = 0.0
    peers: Sequence[TrialRecord] = ()
    study_cpu_s: float = 0.0
    steps_planned: int | None = None
    study_energy_j: float = 0.0

    @property
    def window_length(self) -> int:
        """Steps the current, unfinished window will have (shorter at the end of training)."""
        start = self.windows[-1].step if self.windows else 0
        if self.steps_planned is None:
            return self.eval_every
        return max(1, min(self.eval_every, self.steps_planned - start))

    @property
    def at_end(self) -> bool:
        """True once every planned step is done."""
        return self.steps_planned is not None and self.steps_done >= self.steps_planned

    def study_used(self, metric: str) -> float:
        """The whole study's use of a study budget's metric (``cpu_s`` or ``energy_j``)."""
        return {CPU_S: self.study_cpu_s, ENERGY_J: self.study_energy_j}[metric]

    def values(self, name: str) -> list[float]:
        return [w.values[name] for w in self.windows if name in w.values]


class StoppingRule(abc.ABC):
    """Decides whether a trial must stop. Rules keep no per-trial state.

    Subclasses set ``name`` and ``kind`` (``"system"``, ``"ml"`` or ``"study"``) and
    implement :meth:`check`, returning a :class:`StopInfo` to stop or None to go on.
    ``per_sample = False`` declares a rule that reads only windows and peers, which
    change once per window: the watchdog then checks it when a window arrives, not
    on every system sample. ``needs_peers = False`` declares one that never reads
    finished peers.
    """

    name: str = "rule"
    kind: str = ML
    per_sample: bool = True
    needs_peers: bool = True  # False: never reads ``view.peers`` (Ray then sends nodes no peers)

    @abc.abstractmethod
    def check(self, view: TrialView) -> StopInfo | None:
        """Return why ``view``'s trial must stop, or None."""

    def _stop(self, view: TrialView, value: float, threshold: float, message: str) -> StopInfo:
        return StopInfo(
            rule=self.name, kind=self.kind, step=view.steps_done, value=float(value),
            threshold=float(threshold), message=message,
        )

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


def check_all(rules: Sequence[StoppingRule], view: TrialView, *, sample_only: bool = False) -> StopInfo | None:
    """The first rule that fires, system budgets first (they are the hard ones).

    Learning rules are not applied once training is over: stopping then saves nothing.
    With ``sample_only`` (a watchdog sample, no new window) only per-sample rules run.
    """
    for rule in sorted(rules, key=lambda r: r.kind != SYSTEM):
        if (rule.kind == ML and view.at_end) or (sample_only and not rule.per_sample):
            continue
        stop = rule.check(view)
        if stop is not None:
            return stop
    return None
