"""The two sides of a check: a study's best feasible configuration, or a model version.

A side holds repeated measurements per metric, as groups (one per trial, or one per
timing round), plus a model to time predictions with. A registered version that
came from a study still on disk is measured from that study's trials; otherwise
from the profile ``frugalml register`` stored in its tags (one value per metric).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from frugalml.deploy import SLO_TAG, Slo
from frugalml.exceptions import ConfigError, DataError
from frugalml.gate._remeasure import Recipe, steady_step_times
from frugalml.metrics import ACCURACY, MEAN_STEP_MS, MEMORY_MB, PEAK_MEMORY_MB, RMSE, VAL_LOSS
from frugalml.records import TrialRecord
from frugalml.registry import TAG, refit_best
from frugalml.study import stored_study
from frugalml.tuner import load_result
from frugalml.units import to_mb

Groups = list[list[float]]


@dataclass
class Side:
    """What one side of a check measured."""

    label: str
    samples: dict[str, Groups]
    predictor: Any
    feature_names: tuple[str, ...]
    inputs: np.ndarray  # rows to time predictions on
    info: dict[str, str] = field(default_factory=dict)
    recipe: Recipe | None = None  # how to train it again, when its study is at hand
    slo: Slo | None = None  # the serving budgets it was tuned (or registered) under


def _size_mb(path: Path) -> float:
    return to_mb(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()))


def trial_samples(records: Sequence[TrialRecord]) -> dict[str, Groups]:
    """Per-metric groups from the trials of one configuration."""
    samples: dict[str, Groups] = {}
    for name in (ACCURACY, RMSE, VAL_LOSS):
        finals = [[value] for r in records if (value := r.last(name)) is not None and math.isfinite(value)]
        if finals:
            samples[name] = finals
    steps = [times for r in records if (times := steady_step_times(r))]
    if steps:
        samples[MEAN_STEP_MS] = steps
    peaks = [[peak] for r in records if (peak := r.peak(MEMORY_MB)) is not None]
    if peaks:
        samples[PEAK_MEMORY_MB] = peaks
    return samples


def _best_records(study_dir: Path, workload: str, config_id: str) -> list[TrialRecord]:
    return [r for r in load_result(study_dir).records
            if r.workload == workload and r.config_id == config_id and r.feasible]


def _recipe(study_dir: Path, workload: str, params: Any) -> Recipe:
    stored = stored_study(study_dir)
    return Recipe(stored.workload(workload), dict(params), stored.seed, stored.data_dir)


def from_study(study_dir: str | Path, workload: str | None = None) -> Side:
    """The study's best feasible configuration (refitted, or the model its trial logged)."""
    from frugalml.serve import save_model

    study_dir = Path(study_dir)
    refit = refit_best(study_dir, workload, measure=False)  # compare() times both sides itself
    records = _best_records(study_dir, refit.link["workload"], refit.link["config_id"])
    samples = trial_samples(records)
    if refit.model_dir is not None:
        size = _size_mb(refit.model_dir)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            size = _size_mb(save_model(refit.model, refit.reference, Path(tmp) / "model"))
    samples["model_size_mb"] = [[size]]
    label = f"study {refit.link['study']} ({refit.link['config_id']})"
    return Side(label, samples, refit.model, refit.reference.feature_names, refit.reference.sample_inputs,
                {"study_dir": str(study_dir.resolve()), **refit.link},
                _recipe(study_dir, refit.link["workload"], refit.params), refit.slo)


def from_model(uri: str, tracking_uri: str | None = None) -> Side:
    """A model version (any MLflow model URI, or a model directory)."""
    from frugalml.serve import load_model, release

    served = load_model(uri, tracking_uri)
    try:
        return _side_of(served, uri)
    finally:
        release(served)  # a remote model's copy: measured, and the side keeps the model in memory


def _side_of(served: Any, uri: str) -> Side:
    tags = served.tags
    samples: dict[str, Groups] = {}
    recipe = None
    study_dir = Path(tags.get(TAG + "study_dir", ""))
    if tags.get(TAG + "config_id") and (study_dir / "frugalml.db").is_file():
        records = _best_records(study_dir, tags.get(TAG + "workload", ""), tags[TAG + "config_id"])
        samples = trial_samples(records)
        if records:
            recipe = _recipe(study_dir, records[0].workload, records[0].params)
    if recipe is None and tags.get(TAG + "recipe"):  # its study is elsewhere: train it again from the tag
        stored = json.loads(tags[TAG + "recipe"])
        recipe = Recipe(stored["workload"], stored["params"], int(stored.get("seed", 0)), stored.get("data_dir"))
    for key, value in tags.items():  # the profile stored at registration fills what the study cannot
        name = key.removeprefix(TAG + "profile.study_")
        if key.startswith(TAG + "profile.study_") and name not in samples:
            samples[name] = [[float(value)]]
    samples["model_size_mb"] = [[_size_mb(served.path)]]
    if not served.reference.has_statistics:
        raise DataError(f"model {uri!r} has no reference data to time predictions on; register it with "
                        "`frugalml register`, or compare studies instead.")
    label = f"{served.name} version {served.version}" if served.version else uri
    info = {"uri": uri, **({"version": served.version} if served.version else {}),
            **({"study_dir": str(study_dir)} if str(study_dir) != "." else {})}
    return Side(label, samples, served.model, served.reference.feature_names, served.reference.sample_inputs, info,
                recipe, Slo.from_json(tags.get(SLO_TAG)))


def resolve(target: str, tracking_uri: str | None = None, workload: str | None = None) -> Side:
    """A study directory or a model URI/directory, whichever ``target`` is."""
    path = Path(target)
    if (path / "frugalml.db").is_file():
        return from_study(path, workload)
    if target.startswith(("models:/", "runs:/")) or (path / "MLmodel").is_file():
        return from_model(target, tracking_uri)
    raise ConfigError(f"{target!r} is neither a study directory (holding frugalml.db) nor a model "
                      "(models:/NAME@ALIAS, models:/NAME/VERSION, runs:/..., or an MLflow model directory).")


def check_schemas(candidate: Side, baseline: Side) -> None:
    if tuple(candidate.feature_names) != tuple(baseline.feature_names):
        raise DataError(f"the candidate takes features {list(candidate.feature_names)[:8]} but the baseline takes "
                        f"{list(baseline.feature_names)[:8]}: a different schema cannot be compared; train the "
                        "candidate on data with the baseline's columns.")


def time_predictions(sides: Sequence[Side], inputs: np.ndarray, *, rounds: int, calls: int,
                     seed: int = 0) -> list[dict[str, Groups]]:
    """p50/p99 single-row predict latency per round, the sides interleaved (ABBA...) so that
    drifting machine load hits both alike; each round is one measurement."""
    rng = np.random.default_rng(seed)
    rows = inputs[rng.integers(0, len(inputs), size=calls)]
    found: list[dict[str, Groups]] = [{"predict_p50_ms": [], "predict_p99_ms": []} for _ in sides]
    for side in sides:
        side.predictor.predict(rows[:1])  # warm-up
    for k in range(rounds):
        order = range(len(sides)) if k % 2 == 0 else reversed(range(len(sides)))
        for i in order:
            predict = sides[i].predictor.predict
            elapsed = []
            for row in rows:
                start = time.perf_counter()
                predict(row[None, :])
                elapsed.append(time.perf_counter() - start)
            p50, p99 = np.percentile(np.asarray(elapsed) * 1e3, [50, 99])
            found[i]["predict_p50_ms"].append([float(p50)])
            found[i]["predict_p99_ms"].append([float(p99)])
    return found
