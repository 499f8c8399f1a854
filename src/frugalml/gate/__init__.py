"""Performance gates: is a candidate model worse than the baseline, in quality or in cost?

:func:`check` compares a candidate (a study's best feasible configuration, or a model
version) with a baseline (the ``@champion``, or another study) on ML quality and the
system profile: training step time and peak memory from the trials, single-row
predict latency timed here with both models interleaved, model size. A metric is a
regression only when a bootstrap confidence bound says the candidate is worse by
more than the gate's tolerances, so one noisy sample on a shared runner does not
fail a build; step time re-run here in 5 rounds or more is judged on each side's
fastest round, since other work on the runner only adds time.

Example:
    >>> from frugalml.gate import check
    >>> result = check("studies/new", "models:/demo@champion", tracking_uri="sqlite:///mlflow.db")  # doctest: +SKIP
    >>> result.passed, [m.metric for m in result.regressions]                                      # doctest: +SKIP
    (False, ['mean_step_ms'])
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from frugalml.exceptions import ConfigError
from frugalml.gate._decide import (
    FASTEST_ROUND_MIN_ROUNDS,
    IMPROVED,
    PASS,
    REGRESSION,
    MetricResult,
    decide,
    step_time_statistic,
)
from frugalml.gate._live import live_check
from frugalml.gate._metrics import GATE_METRICS, GateMetric
from frugalml.gate._remeasure import Recipe, step_times
from frugalml.gate._result import CheckResult
from frugalml.gate._settings import GateSettings, MetricGate, load_gate
from frugalml.gate._sides import Side, check_schemas, resolve, time_predictions
from frugalml.metrics import MEAN_STEP_MS, MODEL_MB, PREDICT_MS, THROUGHPUT_ROWS_S

MEASURED_HERE = ("predict_p50_ms", "predict_p99_ms")  # timed by compare() itself, on both sides


def compare(candidate: Side, baseline: Side, settings: GateSettings | None = None) -> CheckResult:
    """Decide each gated metric for two resolved sides (timing their predictions first)."""
    settings = settings or GateSettings()
    check_schemas(candidate, baseline)
    for gate in settings.metrics:  # a usage error before anything is measured
        name = gate.metric.name
        lacking = [label for side, label in ((candidate, "the candidate"), (baseline, "the baseline"))
                   if not side.samples.get(name)]
        if gate.required and lacking and name not in MEASURED_HERE:
            raise ConfigError(f"the gate compares {name!r} but {lacking[0]} did not measure it; remove it from "
                              "[gate] or measure it on both sides.")
    timed = time_predictions([baseline, candidate], baseline.inputs, rounds=settings.latency_rounds,
                             calls=settings.latency_calls, seed=settings.seed)
    for side, found in zip((baseline, candidate), timed):
        side.samples.update(found)
    notes = []
    gated = {gate.metric.name for gate in settings.metrics}
    step_statistic: str | None = None  # how step time timed here in rounds is judged; None: not re-measured
    if settings.training_rounds and MEAN_STEP_MS in gated:
        if baseline.recipe is not None and candidate.recipe is not None:
            rounds = step_times([baseline.recipe, candidate.recipe], settings.training_rounds)
            baseline.samples[MEAN_STEP_MS], candidate.samples[MEAN_STEP_MS] = rounds
            step_statistic = step_time_statistic(min(map(len, rounds)))  # a round that timed no step is missing
            notes.append(_remeasured_note(rounds, settings.training_rounds, step_statistic))
        else:
            notes.append("step time as stored with each side (a side's study is not at hand to re-run)")
    results, missing = [], []
    for gate in settings.metrics:
        name = gate.metric.name
        if not (candidate.samples.get(name) and baseline.samples.get(name)):
            missing.append(name)
            continue
        in_rounds = name == MEAN_STEP_MS and step_statistic is not None
        results.append(decide(gate, baseline.samples[name], candidate.samples[name], confidence=settings.confidence,
                              resamples=settings.resamples, seed=settings.seed,
                              statistic=step_statistic if in_rounds else "mean", keep_rounds=in_rounds))
    slo = candidate.slo or baseline.slo
    if slo is not None:
        notes.append(f"SLO from {'the candidate' if candidate.slo else 'the baseline'}: measured here, in this "
                     f"process, not under its [deploy] envelope ({dict(slo.deploy)})")
    return CheckResult(candidate.label, baseline.label, settings.confidence, tuple(results), tuple(missing),
                       tuple(notes), tuple(slo.check(slo_measured(candidate, slo.quantile))) if slo else ())


def _remeasured_note(rounds: list, asked: int, statistic: str) -> str:
    counted = f"{asked}" if {len(r) for r in rounds} == {asked} else f"{len(rounds[0])} and {len(rounds[1])} of {asked}"
    rule = ("each side's fastest round compared (other work only adds time)" if statistic == "min"
            else f"the rounds' mean (fewer than {FASTEST_ROUND_MIN_ROUNDS} rounds)")
    return f"step time re-measured here: {counted} rounds per side, interleaved; {rule}"


def slo_measured(side: Side, quantile: float) -> dict[str, float]:
    """What this check measured of ``side`` in an SLO's terms: its single-row latency at the SLO's
    quantile (p99 from 0.99 up, else the median; the median over timing rounds), the rows a second
    that latency allows, and the size of the model on disk."""
    measured = {}
    rounds = side.samples.get("predict_p99_ms" if quantile >= 0.99 else "predict_p50_ms")
    if rounds:
        measured[PREDICT_MS] = float(np.median([v for group in rounds for v in group]))
    medians = side.samples.get("predict_p50_ms")
    if medians:
        measured[THROUGHPUT_ROWS_S] = 1000.0 / float(np.median([v for group in medians for v in group]))
    if side.samples.get("model_size_mb"):
        measured[MODEL_MB] = float(side.samples["model_size_mb"][0][0])
    return measured


def check(candidate: str, baseline: str, *, settings: GateSettings | None = None, tracking_uri: str | None = None,
          workload: str | None = None) -> CheckResult:
    """Compare ``candidate`` with ``baseline``; each a study directory or a model URI/directory.

    Args:
        candidate, baseline: a study directory, ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``,
            ``runs:/...`` or an MLflow model directory.
        settings: the gate (default: every metric both sides measured, default tolerances).
        tracking_uri: where ``models:/`` URIs are registered.
        workload: which workload of a study with several.
    """
    targets = {"candidate": candidate, "baseline": baseline}
    # a model first: a wrong name or store fails in a second, not after the study's refit (seconds)
    order = sorted(targets, key=lambda side: (Path(targets[side]) / "frugalml.db").is_file())
    sides = {side: resolve(targets[side], tracking_uri, workload) for side in order}
    return compare(sides["candidate"], sides["baseline"], settings)


__all__ = [
    "CheckResult",
    "FASTEST_ROUND_MIN_ROUNDS",
    "GATE_METRICS",
    "GateMetric",
    "GateSettings",
    "IMPROVED",
    "MetricGate",
    "MetricResult",
    "PASS",
    "REGRESSION",
    "Recipe",
    "Side",
    "check",
    "compare",
    "decide",
    "live_check",
    "load_gate",
    "resolve",
    "step_time_statistic",
]
