"""How well cost is predicted on the thesis workloads: the data step behind
``frugalml evaluate-prediction`` (the CLI only prints what this returns).

Real trials are run over a batch-size x learning-rate grid; then

* in-trial: each trial's first k windows predict its mean step time (mean of its
  window means) and peak memory (highest window), compared with what it measured;
* cross-configuration: the cost model, fitted on the other configurations, predicts
  a configuration's steady step time and peak memory ("leave one configuration
  out"), and, harder, with every configuration of that batch size left out;
* learning-rate effect: how much the costs differ between learning rates at the
  same batch size (the thesis found: not at all).
"""

from __future__ import annotations

import math
import statistics
import tempfile
from typing import Iterable, NamedTuple, Sequence

from frugalml.exceptions import ConfigError
from frugalml.metrics import MEAN_STEP_MS, PEAK_MEMORY_MB
from frugalml.prediction import CostModel, DatasetShape, estimate_trial, observed_costs
from frugalml.records import TrialRecord, TrialStatus
from frugalml.search import Search
from frugalml.study import Study, Workload
from frugalml.tuner import tune
from frugalml.workloads import prepare_dataset, resolve_dataset

# dataset -> algorithm, as in the thesis (casp_protein stands in for wave_energy)
THESIS_WORKLOADS = {
    "mnist_784": "logistic_regression",
    "diabetes": "logistic_regression",
    "red_wine": "linear_regression",
    "casp_protein": "linear_regression",
}
QUICK_WORKLOADS = ("diabetes", "red_wine")
KS = (1, 2, 5)


class ErrorRow(NamedTuple):
    """One predictor's figure for one workload and metric.

    ``value``: for ``k=N`` and ``leave ... out``, the median of |predicted / measured - 1|;
    for ``lr effect`` the median relative range across learning rates; for ``batch
    effect`` the ratio of the costliest to the cheapest batch size. ``coverage``: the
    share of measured values inside the predicted bounds (None without bounds);
    ``n``: how many predictions (or batch sizes) it summarises.
    """

    workload: str
    metric: str
    predictor: str
    n: int
    value: float | None
    coverage: float | None = None


class Plan(NamedTuple):
    """What runs: the grid, and per dataset (max_steps, eval_every) for ten windows a trial."""

    batch_sizes: tuple[int, ...]
    learning_rates: tuple[float, ...]
    steps: dict[str, tuple[int, int]]
    default_steps: tuple[int, int]


# frugalml's default 100-step windows, except on mnist_784, where a batch-30000 step
# takes 0.5-1.5 s: 10-step windows keep a trial there to about a minute.
FULL = Plan((30, 300, 3000, 30000), (0.1, 0.001), {"mnist_784": (100, 10)}, (1000, 100))
QUICK = Plan((30, 300, 3000), (0.01, 0.001), {}, (36, 6))


def _median_error(
    pairs: Iterable[tuple[float, float, float | None, float | None]],
) -> tuple[int, float | None, float | None]:
    """(n, median |predicted/measured - 1|, share within [low, high]) of (predicted, measured, low, high)."""
    pairs = [p for p in pairs if p[1] > 0 and math.isfinite(p[0])]
    if not pairs:
        return 0, None, None
    errors = [abs(p / m - 1.0) for p, m, _, _ in pairs]
    bounded = [(m, lo, hi) for _, m, lo, hi in pairs if lo is not None]
    coverage = sum(lo <= m <= hi for m, lo, hi in bounded) / len(bounded) if bounded else None
    return len(pairs), statistics.median(errors), coverage


def in_trial_errors(records: Sequence[TrialRecord], workload: str, *, ks: Sequence[int] = KS,
                    confidence: float = 0.9) -> list[ErrorRow]:
    """Prediction error after k windows, against each completed trial's full run."""
    rows = []
    done = [r for r in records if r.status is TrialStatus.COMPLETED]
    for k in ks:
        step_pairs, memory_pairs = [], []
        for record in done:
            if len(record.windows) <= k:
                continue
            estimate = estimate_trial(record.windows[:k], steps_planned=record.steps_planned,
                                      eval_every=record.windows[0].step, confidence=confidence)
            summary = record.summary()
            for pairs, predicted, measured in ((step_pairs, estimate.mean_step_ms, summary[MEAN_STEP_MS]),
                                               (memory_pairs, estimate.peak_memory_mb, summary[PEAK_MEMORY_MB])):
                if predicted is not None and measured:
                    pairs.append((predicted.value, measured, predicted.low, predicted.high))
        for metric, pairs in ((MEAN_STEP_MS, step_pairs), (PEAK_MEMORY_MB, memory_pairs)):
            rows.append(ErrorRow(workload, metric, f"k={k}", *_median_error(pairs)))
    return rows


def cross_config_errors(records: Sequence[TrialRecord], workload: str, shape: DatasetShape, *,
                        confidence: float = 0.9, min_observations: int = 3) -> list[ErrorRow]:
    """Cost-model error leaving one configuration out, and leaving its batch size out."""
    ran = [r for r in records if r.status in (TrialStatus.COMPLETED, TrialStatus.STOPPED)]
    rows = []
    for predictor, same in (
        ("leave config out", lambda a, b: a.config_id == b.config_id),
        ("leave batch out", lambda a, b: a.params.get("batch_size") == b.params.get("batch_size")),
    ):
        pairs: dict[str, list] = {MEAN_STEP_MS: [], PEAK_MEMORY_MB: []}
        for record in ran:
            model = CostModel(min_observations=min_observations, confidence=confidence)
            model.fit([r for r in ran if not same(r, record)], shape)
            predicted = model.predict(record.params) if model.ready else {}
            measured = observed_costs(record)
            for metric in pairs:
                if metric in predicted and metric in measured:
                    value, low, high = predicted[metric]
                    pairs[metric].append((value, measured[metric], low, high))
        rows.extend(ErrorRow(workload, m, predictor, *_median_error(p)) for m, p in pairs.items())
    return rows


def learning_rate_effect(records: Sequence[TrialRecord], workload: str) -> list[ErrorRow]:
    """Median over batch sizes of the relative range of each cost across learning rates,
    and, for scale, the batch effect: costliest over cheapest batch size (medians over rates)."""
    by_batch: dict[object, list[dict[str, float]]] = {}
    for record in records:
        if record.status in (TrialStatus.COMPLETED, TrialStatus.STOPPED):
            by_batch.setdefault(record.params.get("batch_size"), []).append(observed_costs(record))
    rows = []
    for metric in (MEAN_STEP_MS, PEAK_MEMORY_MB):
        ranges = []
        for costs in by_batch.values():
            values = [c[metric] for c in costs if metric in c]
            if len(values) >= 2:
                ranges.append((max(values) - min(values)) / statistics.fmean(values))
        rows.append(ErrorRow(workload, metric, "lr effect", len(ranges), statistics.median(ranges) if ranges else None))
        levels = [statistics.median(v) for c in by_batch.values() if (v := [x[metric] for x in c if metric in x])]
        ratio = max(levels) / min(levels) if len(levels) >= 2 else None
        rows.append(ErrorRow(workload, metric, "batch effect", len(levels), ratio))
    return rows


def evaluate_prediction(
    workloads: Sequence[str] | None = None,
    *,
    quick: bool = False,
    workers: int = 2,
    directory: str | None = None,
    confidence: float = 0.9,
    progress: object = None,
) -> tuple[list[ErrorRow], dict[str, str]]:
    """Run the grid on each workload and measure prediction error.

    Returns the error rows and, per workload name, its label (a stand-in says so).
    """
    names = list(workloads or (QUICK_WORKLOADS if quick else THESIS_WORKLOADS))
    unknown = [n for n in names if n not in THESIS_WORKLOADS]
    if unknown:
        raise ConfigError(
            f"Unknown workload(s) {unknown} for evaluate-prediction; choose from {', '.join(THESIS_WORKLOADS)}."
        )
    plan = QUICK if quick else FULL
    labels, shapes = {}, {}
    for name in names:
        data = prepare_dataset(resolve_dataset(name))
        labels[name] = f"{name} (stand-in for {data.substitute_for})" if data.substitute_for else name
        shapes[name] = DatasetShape(data.n_train, data.n_features)
    with tempfile.TemporaryDirectory(prefix="frugalml-evaluate-") as scratch:
        study = Study(
            name="evaluate-prediction",
            workloads=[Workload(dataset=n, algorithm=THESIS_WORKLOADS[n], name=n, data_format="pandas", epochs=10_000,
                                max_steps=plan.steps.get(n, plan.default_steps)[0],
                                eval_every=plan.steps.get(n, plan.default_steps)[1]) for n in names],
            search=Search(space={"batch_size": list(plan.batch_sizes), "learning_rate": list(plan.learning_rates)}),
            workers=workers, directory=directory or scratch, mlflow_uri=None,
        )
        result = tune(study, fresh=True, progress=progress)  # type: ignore[arg-type]
    rows: list[ErrorRow] = []
    for name in names:
        mine = [r for r in result.records if r.workload == name]
        rows += in_trial_errors(mine, name, confidence=confidence)
        rows += cross_config_errors(mine, name, shapes[name], confidence=confidence)
        rows += learning_rate_effect(mine, name)
    return rows, labels
