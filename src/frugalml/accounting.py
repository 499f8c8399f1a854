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

A ``peers`` or ``predicted`` rate is never lower than what the trial's own steps after
its last boundary already cost (:func:`own_step_floor`): a trial stopped deep into a
slow step has measured at least that much per step, whatever the cost model says.
:func:`credible_prediction` is the policy for a prediction the cost model cannot stand
behind (its interval too wide, or the configuration more than :data:`PREDICTION_REACH` times
beyond what it was fitted on): ``unknown``. The rate arrives here as a bare number, so the
caller that holds the interval (the study's cost-model gate) applies it.

Joules saved are the CPU-seconds saved × the joules per CPU-second the trial itself
measured (RAPL, NVML) or estimated; a trial without its own joules takes its peers'.

A stopped trial's CPU-seconds used are at least its last boundary's reading: a killed
worker's figure is the watchdog's last sample, which can predate the worker's last
boundary message when the parent is slow to drain its pipe (:func:`account`).

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
#: A predicted rate is credited only when its interval's half-width is within this share of it
#: (:func:`credible_prediction`). Set on benchmarks/savings_truth.py (docs/savings.md), few runs:
#: the predictions 50 % or more off the full runs had 90 % intervals of ±110 % or wider; those
#: within 20 %, ±6 % to ±100 %.
PREDICTION_SPREAD = 0.75
#: ... and only when no cost feature of the configuration lies more than this factor outside the
#: range the cost model was fitted on: a linear fit of a few small configurations' per-step cost,
#: asked about one 8x larger, was 2x off (+117 %) with an interval inside the spread (docs/savings.md).
PREDICTION_REACH = 2.0
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


def own_step_floor(record: TrialRecord) -> float | None:
    """A floor under the trial's per-step cost from its own steps after its last boundary.

    ``k`` steps done after the boundary, and the step under way when it stopped, cost the
    CPU-seconds since the boundary; that step was at most a whole one, so a step costs at
    least ``CPU since the boundary / (k + 1)``. None without a boundary (stopped in its
    first step) or without CPU spent since.
    """
    points = boundaries(record)
    if not points or not math.isfinite(record.cpu_s):
        return None
    step, cpu = points[-1]
    spent, steps = record.cpu_s - cpu, record.steps_done - step
    if spent <= 0 or steps < 0:
        return None
    return spent / (steps + 1)


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
    """The per-step cost to charge ``record``'s steps not run: measured, peers', predicted, or
    None; a peers' or predicted rate is at least :func:`own_step_floor`."""
    rate = measured_rate(record)
    if rate is None:
        rate = peer_rate(record, peers)
        if rate is None and predicted_cpu_s_per_step is not None and predicted_cpu_s_per_step > 0:
            rate = StepRate(float(predicted_cpu_s_per_step), PREDICTED)
        if rate is not None and (floor := own_step_floor(record)) is not None and floor > rate.cpu_s:
            rate = replace(rate, cpu_s=floor)
    if rate is not None and rate.joules_per_cpu_s is None and (own := _joules_per_cpu_s(record)) is not None:
        rate = replace(rate, joules_per_cpu_s=own)
    return rate


def credible_prediction(cpu_s_per_step: float | None, low: float | None = None,
                        high: float | None = None, reach: float = 1.0) -> float | None:
    """The cost model's CPU-seconds per step where it stands behind it, else None (``unknown``).

    ``low``/``high``: the prediction's interval (the cost model's, at the study's confidence).
    None when there is no prediction, or when the interval's half-width is over
    :data:`PREDICTION_SPREAD` of the value: a model fitted on a handful of trials and asked
    4x beyond the widest says so with an interval of [0, 3x], and its point value is then
    a guess. Also None when ``reach`` (how far beyond the configurations it was fitted on the
    model was asked: :meth:`frugalml.prediction.CostModel.reach`) is over :data:`PREDICTION_REACH`.
    The predicted rate a trial stopped before its first window is credited at, and a skipped
    configuration's, pass through here (the study's cost-model gate).

    Example:
        >>> credible_prediction(0.5, 0.4, 0.6), credible_prediction(0.5, 0.0, 1.5)
        (0.5, None)
        >>> credible_prediction(0.5, 0.4, 0.6, reach=8.0) is None
        True
    """
    if cpu_s_per_step is None or not math.isfinite(cpu_s_per_step) or cpu_s_per_step <= 0:
        return None
    if reach > PREDICTION_REACH:
        return None
    if low is not None and high is not None and (high - low) / 2 > PREDICTION_SPREAD * cpu_s_per_step:
        return None
    return float(cpu_s_per_step)


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

    Every executor (local, in-process, Ray) calls this once per finished trial. A stopped
    trial's ``cpu_s`` is raised to its last boundary's reading where it is below it (see
    the module docstring).
    """
    if record.status is not TrialStatus.STOPPED:
        return record
    points = boundaries(record)
    if points and points[-1][1] > record.cpu_s:
        record = replace(record, cpu_s=points[-1][1])
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
