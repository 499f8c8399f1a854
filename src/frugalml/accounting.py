"""What a stopped trial saved: the one place saved CPU-seconds and joules are worked out.

A trial's cost splits in three:

* **setup**: everything up to the end of its first step (imports, data loading, model
  building and the first step's one-off warm-up), paid once however long the run;
* **training steps**: CPU-seconds per step between step boundaries;
* **evaluations**: CPU-seconds per evaluation window (a window's boundary is read in the
  worker after its ``trial.report``, so the window's evaluation is inside it).

A trial stopped early saved what its steps not run would have cost, setup not repeated. Its
basis (``TrialRecord.saved_basis``) is, in this order:

=============  ===================================================================
``measured``   the trial's own readings (:func:`step_cost`): a training step's cost from the
               latest readings between training steps (after its last window's boundary
               where it has them), an evaluation's from its windows (later ones first), so
               the steps not run cost ``training rate × steps + evaluation × the windows they
               would have ended`` (every ``eval_every`` steps); without those readings, its
               steady windows' rate × the steps not run: from its first window's boundary to
               its last (or from the end of its first step, with one window)
``peers``      the median rate of finished trials of the same configuration family:
               the same workload and parameters, but for ones that do not change a
               step's cost (:data:`COST_NEUTRAL_PARAMS`, e.g. the learning rate)
``predicted``  the cost model's CPU-ms per step (the study's ``[prediction]``)
``unknown``    none of these, or no planned length: shown as unknown, never a number
=============  ===================================================================

A trial stopped before any evaluation of its own finished (in its first window) has no
measured evaluation cost: it is not ``measured`` (unless it would never have evaluated).

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

    With the readings its executor keeps (a training step 8 ms, an evaluation 50 ms, every 10 steps):

    >>> readings = {"eval_every": 10, "eval_cpu_s": [[10, 0.05], [20, 0.05], [30, 0.05]], "tail": [35.0, 2.30]}
    >>> windows = tuple(Window(s, {"cpu_s": 2.0 + 0.013 * (s - 10)}) for s in (10, 20, 30))
    >>> record = TrialRecord("w/c/r0", 0, "w", "c", 0, {}, TrialStatus.STOPPED, steps_done=35,
    ...                      steps_planned=100, cpu_s=2.30, windows=windows, info={STEP_READINGS: readings})
    >>> saving = stop_saving(record)  # 65 steps x 8 ms + 7 evaluations (40...100) x 50 ms
    >>> saving.basis, round(saving.cpu_s, 3)
    ('measured', 0.87)
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
#: info key of a stopped trial: the readings its executor's lifecycle kept to split its cost
#: (``eval_every``; ``eval_cpu_s``: ``[[window step, its evaluation's CPU-s], ...]``; ``tail``:
#: ``[fractional step, CPU-s]`` read between training steps after the last boundary;
#: ``evaluating_cpu_s``: what an evaluation the stop interrupted had cost), see :func:`step_cost`.
STEP_READINGS = "step_readings"
#: A training rate is read over at least this many CPU-seconds where the trial has them: the
#: watchdog's samples tick every 10 ms (psutil) and read up to ~10 ms under the worker's own clock.
MIN_READING_CPU_S = 0.1
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


def window_rate(record: TrialRecord) -> StepRate | None:
    """The trial's per-step cost over its steady windows, or None before its first full window.

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


@dataclass(frozen=True)
class StepCost:
    """A trial's own cost of a training step and of an evaluation (:func:`step_cost`).

    ``train_cpu_s``: CPU-seconds a training step; ``eval_cpu_s``: an evaluation window's
    evaluation; ``eval_every``: steps a window; ``steps``: training steps the rate was read over.
    ``evaluating_cpu_s``: what an evaluation the stop interrupted had already cost (None: none).
    """

    train_cpu_s: float
    eval_cpu_s: float
    eval_every: int
    steps: float
    evaluating_cpu_s: float | None = None

    @property
    def per_step(self) -> float:
        """CPU-seconds a step, evaluation included pro rata."""
        return self.train_cpu_s + self.eval_cpu_s / self.eval_every

    def not_run(self, steps_done: int, steps_planned: int) -> float:
        """What steps ``steps_done + 1 .. steps_planned`` would have cost: each training step, and
        each evaluation of a window they would have ended (the steps that are multiples of
        ``eval_every``), with the rest of one the stop interrupted."""
        steps = max(0, steps_planned - steps_done)
        windows = steps_planned // self.eval_every - min(steps_done, steps_planned) // self.eval_every
        if self.evaluating_cpu_s is not None and self.eval_cpu_s > 0:
            windows += max(0.0, 1.0 - self.evaluating_cpu_s / self.eval_cpu_s)
        return self.train_cpu_s * steps + self.eval_cpu_s * windows


def step_cost(record: TrialRecord) -> StepCost | None:
    """A stopped trial's training-step and evaluation costs from its own readings, or None.

    From the readings its executor kept (:data:`STEP_READINGS`) and its boundaries:

    * a **training step**: CPU-seconds over training steps only: from the last boundary to the
      latest reading between training steps (the tail), and each window's CPU less its
      evaluation's. The latest readings after the first window come first (warm: no
      first-step allocations or just-in-time compilation in them), pooled until they cover
      :data:`MIN_READING_CPU_S`; the first window's steps only where there is nothing else;
    * an **evaluation**: each window's evaluation CPU-seconds (its wall-time share); the mean
      of those after the first window, else the first one's (its first-call warm-up in it).
      A window without that share is charged all it cost beyond its training steps.

    None without the readings (records made before them), without a training reading, or
    without any finished evaluation when the steps not run would have evaluated.
    """
    readings = record.info.get(STEP_READINGS)
    if not isinstance(readings, Mapping) or not record.steps_planned:
        return None
    eval_every = int(readings.get("eval_every") or 0)
    points = boundaries(record)
    if eval_every <= 0 or not points:
        return None
    splits = {int(step): float(cpu) for step, cpu in readings.get("eval_cpu_s", ())}
    windows: list[tuple[int, float, float | None, bool]] = []  # (steps, CPU-s, its evaluation's, warm), oldest first
    for (start, start_cpu), (end, end_cpu) in zip(points, points[1:]):
        evaluation = splits.get(end)
        if evaluation is not None and not 0.0 <= evaluation <= end_cpu - start_cpu:
            evaluation = None
        windows.append((end - start, end_cpu - start_cpu, evaluation, start > 1))
    segments = [(n, window_cpu - evaluation, warm) for n, window_cpu, evaluation, warm in reversed(windows)
                if evaluation is not None]  # training steps only, latest first
    tail = readings.get("tail")
    if tail is not None:
        (step, at_step), (position, reading) = points[-1], (float(tail[0]), float(tail[1]))
        if position > step and reading > at_step:
            segments.insert(0, (position - step, reading - at_step, step > 1))
    steps = cpu = 0.0
    for segment_steps, segment_cpu, _ in sorted(segments, key=lambda segment: not segment[2]):  # warm first
        if cpu >= MIN_READING_CPU_S:
            break
        steps, cpu = steps + segment_steps, cpu + segment_cpu
    if steps <= 0 or cpu <= 0:
        return None
    train = cpu / steps
    evaluations = [(evaluation if evaluation is not None else max(0.0, cpu_w - steps_w * train), warm)
                   for steps_w, cpu_w, evaluation, warm in windows]
    warm = [e for e, is_warm in evaluations if is_warm]
    if warm:
        evaluation = statistics.fmean(warm)
    elif evaluations:
        evaluation = evaluations[-1][0]
    elif eval_every > record.steps_planned:
        evaluation = 0.0  # it would never have evaluated
    else:
        return None  # stopped before its first evaluation finished: its cost is not known
    evaluating = readings.get("evaluating_cpu_s")
    return StepCost(train, evaluation, eval_every, steps, None if evaluating is None else float(evaluating))


def measured_rate(record: TrialRecord) -> StepRate | None:
    """The trial's own per-step cost, evaluation included pro rata, or None before its first full window:
    from :func:`step_cost` where its readings allow, else :func:`window_rate`."""
    cost = step_cost(record)
    if cost is None:
        return window_rate(record)
    return StepRate(cost.per_step, MEASURED, _joules_per_cpu_s(record), max(1, round(cost.steps)))


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
    """What stopping ``record`` early saved: its :func:`step_cost` of the planned steps it did not
    run where it has one, else a per-step rate (:func:`step_rate`) × those steps."""
    if not record.steps_planned:
        return Saving(0, UNKNOWN)
    steps = max(0, record.steps_planned - record.steps_done)
    cost = step_cost(record)
    if cost is not None:
        cpu = cost.not_run(record.steps_done, record.steps_planned)
        joules = _joules_per_cpu_s(record)
        return Saving(steps, MEASURED, cpu, cpu * joules if joules is not None else None)
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
