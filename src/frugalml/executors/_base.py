"""The executor contract, the settings every executor takes, and the study state it reads."""

from __future__ import annotations

import abc
from dataclasses import dataclass, fields
from typing import Any, Iterable, Mapping, Sequence

from frugalml.executors._task import TrialTask
from frugalml.metrics import CPU_S, ENERGY_J
from frugalml.monitors import energy_estimate_warning
from frugalml.records import TrialRecord
from frugalml.stopping import StoppingRule
from frugalml.validation import POSITIVE, POSITIVE_INT, check


@dataclass(frozen=True)
class ExecutorSettings:
    """How trials run, the same for every executor.

    Args:
        workers: trials run at once.
        rules: stopping rules applied to every sample and window.
        sample_interval_s: watchdog cadence (the OS is sampled this often per worker).
        pin: pin each worker to its own core(s) where the OS allows.
        hang_timeout_s: a trial with no step for this long is killed as hung (None: never).
        gpus_per_trial: NVIDIA GPUs per trial (a task's own ``gpus``, where set, wins).
    """

    workers: int = 1
    rules: tuple[StoppingRule, ...] = ()
    sample_interval_s: float = 0.1
    pin: bool = True
    hang_timeout_s: float | None = 600.0
    gpus_per_trial: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", tuple(self.rules))
        check("ExecutorSettings", "workers", self.workers, POSITIVE_INT)
        check("ExecutorSettings", "sample_interval_s", self.sample_interval_s, POSITIVE)
        if self.hang_timeout_s is not None:
            check("ExecutorSettings", "hang_timeout_s", self.hang_timeout_s, POSITIVE)

    @classmethod
    def coerce(cls, settings: ExecutorSettings | int, options: Mapping[str, Any]) -> ExecutorSettings:
        """``settings`` as it is, or ``workers`` plus keyword options (``LocalExecutor(2, rules=[...])``)."""
        if isinstance(settings, ExecutorSettings):
            if options:
                raise TypeError(f"pass either ExecutorSettings or keyword options, not both: {sorted(options)}")
            return settings
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"unknown executor option(s) {unknown}; known: {', '.join(sorted(known - {'workers'}))}")
        return cls(workers=settings, **options)


class StudyState:
    """What a running trial's rules know of the rest of the study, updated once per finished trial.

    Finished peers per workload (for median stopping) and the CPU-seconds and joules
    finished trials used (for the study's budgets); the watchdog reads them on every
    sample without scanning the records.

    Example:
        >>> state = StudyState()
        >>> state.finished_cpu_s, state.peers("mnist_784-svm")
        (0.0, ())
    """

    def __init__(self, records: Iterable[TrialRecord] = ()) -> None:
        self._peers: dict[str, tuple[TrialRecord, ...]] = {}
        self.finished_cpu_s = 0.0
        self.finished_energy_j = 0.0
        for record in records:
            self.add(record)

    def add(self, record: TrialRecord) -> None:
        """Count a finished (or skipped) trial."""
        if record.status.finished:
            self._peers[record.workload] = (*self._peers.get(record.workload, ()), record)
        self.finished_cpu_s += record.cpu_s
        self.finished_energy_j += record.energy_j or 0.0

    def finished(self, metric: str) -> float:
        """What finished trials used of a study budget's metric (``cpu_s`` or ``energy_j``)."""
        return self.totals()[metric]

    def peers(self, workload: str) -> Sequence[TrialRecord]:
        """The finished trials of ``workload``, oldest first."""
        return self._peers.get(workload, ())

    def totals(self) -> dict[str, float]:
        """What finished trials used of every study budget's metric (:data:`~frugalml.budgets.STUDY_METRICS`)."""
        return {CPU_S: self.finished_cpu_s, ENERGY_J: self.finished_energy_j}

    def replace(self, finished: Mapping[str, float], peers: Mapping[str, Sequence[TrialRecord]] | None = None) -> None:
        """Take figures computed elsewhere (a Ray node mirrors the driver's state): ``finished``
        as :meth:`totals` gives them."""
        self.finished_cpu_s = float(finished.get(CPU_S, 0.0))
        self.finished_energy_j = float(finished.get(ENERGY_J, 0.0))
        if peers is not None:
            self._peers = {w: tuple(r) for w, r in peers.items()}


class Executor(abc.ABC):
    """Runs trials and enforces stopping rules on them (the local and Ray backends).

    The tuner submits a task while :attr:`free_slots` > 0, and collects finished
    trials with :meth:`poll`; it adds each to :attr:`state`, which the rules read.
    """

    def __init__(self, settings: ExecutorSettings, state: StudyState | None = None) -> None:
        self.settings = settings
        self.state = state if state is not None else StudyState()

    @property
    def workers(self) -> int:
        return self.settings.workers

    @property
    def free_slots(self) -> int:
        return self.workers - len(self.running)

    @property
    @abc.abstractmethod
    def running(self) -> list[TrialTask]:
        """The tasks submitted and not yet returned by :meth:`poll`."""

    @abc.abstractmethod
    def submit(self, task: TrialTask) -> None:
        """Start ``task``; raises RuntimeError without a free slot."""

    @abc.abstractmethod
    def poll(self, timeout: float | None = None) -> list[TrialRecord]:
        """Wait up to ``timeout`` seconds (default: one sample interval); return trials that ended."""

    @abc.abstractmethod
    def running_cpu_s(self) -> float:
        """CPU-seconds the running trials used so far."""

    def running_used(self, metric: str) -> float:
        """What the running trials used so far of a study budget's metric (``cpu_s``, ``energy_j``);
        0 for a metric this executor does not sample."""
        return self.running_cpu_s() if metric == CPU_S else 0.0

    def energy_estimate_warning(self, budget: Mapping[str, Any]) -> str | None:
        """One line when ``budget``'s energy budgets will act on this executor's estimated joules."""
        return energy_estimate_warning(budget)

    @abc.abstractmethod
    def shutdown(self) -> None:
        """Stop every running trial (their trials are not recorded) and release what the executor holds;
        called when a study ends, however it ends."""

    def _check_slot(self) -> None:
        if self.free_slots <= 0:
            raise RuntimeError("no free worker slot")
