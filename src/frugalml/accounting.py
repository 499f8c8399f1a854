"""What a stopped trial saved: the one place saved CPU-seconds and joules are worked out.

A trial's cost splits in two:

* **setup**: everything up to the end of its first step (imports, data loading, model
  building and the first step's one-off warm-up), paid once however long the run;
* **per-step cost**: CPU-seconds between step boundaries, evaluation included in
  proportion to the windows that run it (a window's boundary is read in the worker
  after its ``trial.report``, so the window's evaluation is inside it).

A trial stopped early saved ``per-step rate × steps not run``; its setup is not
repeated. The rate comes, in this order, from (``TrialRecord.saved_basis``):

=============  ===================================================================
``measured``   the trial's own steady windows: from its first window's boundary to
               its last (or from the end of its first step, with one window)
``peers``      the median rate of finished trials of the same configuration family:
               the same workload and parameters, but for ones that do not change a
               step's cost (:data:`COST_NEUTRAL_PARAMS`, e.g. the learning rate)
``predicted``  the cost model's CPU-ms per step (the study's ``[prediction]``)
``unknown``    none of these, or no planned length: shown as unknown, never a number
=============  ===================================================================

Joules saved are the CPU-seconds saved × the joules per CPU-second the trial itself
measured (RAPL, NVML) or estimated; a trial without its own joules takes its peers'.

Example:
    >>> from frugalml.records import TrialRecord, TrialStatus, Window
    >>> windows = tuple(Window(s, {"cpu_s": 2.0 + 0.01 * s}) for s in (10, 20, 30))
    >>> record = TrialRecord("w/c/r0", 0, "w", "c", 0, {}, TrialStatus.STOPPED, steps_done=35,
    ...                      steps_planned=100, cpu_s=2.4, windows=windows)
    >>> saving = stop_saving(record)
    >>> saving.basis, saving.steps, round(saving.cpu_s, 3)
    ('measured', 65, 0.65)
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping, Sequence

from frugalml.records import TrialRecord, TrialStatus

MEASURED, PEERS, PREDICTED, UNKNOWN = "measured", "peers", "predicted", "unknown"
BASES = (MEASURED, PEERS, PREDICTED, UNKNOWN)
UNRECORDED = "unrecorded"
FIRST_STEP_CPU_S = "first_step_cpu_s"  # info key: the trial's CPU-seconds at the end of its first step
COST_NEUTRAL_PARAMS = frozenset({
    "learning_rate", "lr", "eta0", "alpha", "l1_ratio", "momentum", "weight_decay", "seed", "tol", "dropout",
})


@dataclass(frozen=True)
class StepRate:
    """Cost of one step, evaluation included pro rata.

    ``cpu_s``: CPU-seconds per step; ``joules_per_cpu_s``: the trial's own joules per
    CPU-second (None where it has none); ``steps``: the steps it was measured over.
    """

    cpu_s: float
    basis: str
    joules_per_cpu_s: float | None = None
    steps: int = 0


@dataclass(frozen=True)
class Saving:
    """What a stop (or a skip) saved: ``cpu_s``/``energy_j`` are None when unknown."""

    steps: int
    basis: str
    cpu_s: float | None = None
    energy_j: float | None = None

    def apply(self, record: TrialRecord) -> TrialRecord:
        """``record`` carrying this saving (``cpu_s_saved`` is 0 where it is unknown)."""
        info = {**record.info, "saved_basis": self.basis}
        info.pop("energy_j_saved", None)
        if self.energy_j is not None:
            info["energy_j_saved"] = self.energy_j
        return replace(record, steps_saved=self.steps, cpu_s_saved=self.cpu_s or 0.0, info=info)


def _joules_per_cpu_s(record: TrialRecord) -> float | None:
    energy = record.energy_j
    if energy is None or not record.cpu_s or record.cpu_s <= 0 or not math.isfinite(energy):
        return None
    return energy / record.cpu_s


def boundaries(record: TrialRecord) -> list[tuple[int, float]]:
    """``(step, CPU-seconds so far)`` at the trial's step boundaries: the end of its first
    step, and every window's end read after its evaluation."""
    points: list[tuple[int, float]] = []
    first = record.info.get(FIRST_STEP_CPU_S)
    if first is not None and math.isfinite(first):
        points.append((1, float(first)))
    for window in record.windows:
        cpu = window.values.get("cpu_s")
        if cpu is not None and math.isfinite(cpu) and window.step > (points[-1][0] if points else 0):
            points.append((window.step, float(cpu)))
    return points


def setup_cpu_s(record: TrialRecord) -> float | None:
    """CPU-seconds before the steady per-step cost: up to the end of the first step."""
    first = record.info.get(FIRST_STEP_CPU_S)
    return float(first) if first is not None else None


def measured_rate(record: TrialRecord) -> StepRate | None:
    """The trial's own per-step cost over its steady windows, or None before its first full window.

    Steady: from the first window's end to the last's, when it has two windows (the first
    window's warm-up left out); from the end of the first step to the window's end with one.
    """
    setup = setup_cpu_s(record)
    points = [p for p in boundaries(record) if p[0] > 1]
    if len(points) >= 2:
        start, end = points[0], points[-1]
    elif points and setup is not None:
        start, end = (1, setup), points[0]
    else:
        return None
    steps, cpu = end[0] - start[0], end[1] - start[1]
    if steps <= 0 or cpu <= 0:
        return None
    return StepRate(cpu / steps, MEASURED, _joules_per_cpu_s(record), steps)


def family(params: Mapping[str, Any]) -> tuple:
    """The configuration family of ``params``: those that cost the same per step."""
    return tuple(sorted((k, repr(v)) for k, v in params.items() if k not in COST_NEUTRAL_PARAMS))


def peer_rate(record: TrialRecord, peers: Iterable[TrialRecord]) -> StepRate | None:
    """The median measured rate of finished peers of ``record``'s workload and family."""
    key = family(record.params)
    rates = [rate for peer in peers
             if peer.trial_id != record.trial_id and peer.workload == record.workload
             and peer.status in (TrialStatus.COMPLETED, TrialStatus.STOPPED) and family(peer.params) == key
             and (rate := measured_rate(peer)) is not None]
    if not rates:
        return None
    joules = [r.joules_per_cpu_s for r in rates if r.joules_per_cpu_s is not None]
    return StepRate(statistics.median(r.cpu_s for r in rates), PEERS,
                    statistics.median(joules) if joules else None, sum(r.steps for r in rates))


def step_rate(record: TrialRecord, peers: Iterable[TrialRecord] = (),
              predicted_cpu_s_per_step: float | None = None) -> StepRate | None:
    """The per-step cost to charge ``record``'s steps not run: measured, peers', predicted, or None."""
    rate = measured_rate(record) or peer_rate(record, peers)
    if rate is None and predicted_cpu_s_per_step is not None and predicted_cpu_s_per_step > 0:
        rate = StepRate(float(predicted_cpu_s_per_step), PREDICTED)
    if rate is not None and rate.joules_per_cpu_s is None and (own := _joules_per_cpu_s(record)) is not None:
        rate = replace(rate, joules_per_cpu_s=own)
    return rate


def stop_saving(record: TrialRecord, peers: Iterable[TrialRecord] = (),
                predicted_cpu_s_per_step: float | None = None) -> Saving:
    """What stopping ``record`` early saved: per-step rate × the planned steps it did not run."""
    if not record.steps_planned:
        return Saving(0, UNKNOWN)
    steps = max(0, record.steps_planned - record.steps_done)
    rate = step_rate(record, peers, predicted_cpu_s_per_step)
    if rate is None:
        return Saving(steps, UNKNOWN)
    cpu = rate.cpu_s * steps
    return Saving(steps, rate.basis, cpu, cpu * rate.joules_per_cpu_s if rate.joules_per_cpu_s is not None else None)


def account(record: TrialRecord, peers: Iterable[TrialRecord] = (),
            predicted_cpu_s_per_step: float | None = None) -> TrialRecord:
    """``record`` with its saving, where it was stopped early; other records as they are.

    Every executor (local, in-process, Ray) calls this once per finished trial.
    """
    if record.status is not TrialStatus.STOPPED:
        return record
    return stop_saving(record, peers, predicted_cpu_s_per_step).apply(record)


def skip_saving(steps_planned: int | None, predicted_cpu_s_per_step: float | None, repeats: int = 1) -> Saving:
    """What skipping a configuration predicted over budget saved: its predicted per-step
    cost × its planned steps, for each repeat (setup not counted: a lower bound)."""
    steps = (steps_planned or 0) * repeats
    if not steps or predicted_cpu_s_per_step is None or predicted_cpu_s_per_step <= 0:
        return Saving(steps, UNKNOWN)
    return Saving(steps, PREDICTED, predicted_cpu_s_per_step * steps)


def basis_mix(records: Sequence[TrialRecord]) -> dict[str, int]:
    """How many stopped or skipped trials' savings rest on each basis, in :data:`BASES` order
    (``unrecorded``: recorded before the basis was kept, by the old CPU-s-per-step-done rule)."""
    counts = {basis: 0 for basis in (*BASES, UNRECORDED)}
    for record in records:
        if record.status in (TrialStatus.STOPPED, TrialStatus.SKIPPED):
            counts[record.saved_basis or UNRECORDED] += 1
    return {basis: n for basis, n in counts.items() if n}


def describe_mix(mix: Mapping[str, int]) -> str:
    """A :func:`basis_mix` in words: ``"3 measured, 1 peers, 1 unknown"`` (empty when nothing was saved)."""
    return ", ".join(f"{n} {basis}" for basis, n in mix.items())


def saved_cpu_s(record: TrialRecord) -> float | None:
    """The CPU-seconds ``record`` saved, None where unknown (for tables: never a number then)."""
    return None if record.saved_basis == UNKNOWN else record.cpu_s_saved
