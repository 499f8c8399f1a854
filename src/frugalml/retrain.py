"""Continuous training: re-tune on new data, gate the new best against the champion, promote on a pass.

:func:`retrain` re-runs a study on a new data file within the same budgets. It is
warm-started from the earlier study: only its ``top`` best feasible configurations
run again (the best one on old data is, nearly always, among the best on drifted
data of the same schema), and its trials feed the cost model as history. The new
best is compared with the champion by :func:`frugalml.gate.check`, registered (a gate
that cannot run registers nothing), and the alias moves only if the gate passed; a
failed gate leaves the champion serving.
Every step is an MLflow run in the ``<model>-retrain`` experiment (trigger, data
version, verdict) and tags on the new version.

Example:
    >>> from frugalml.retrain import retrain
    >>> done = retrain("studies/demo", "data/new.csv", model="demo-diabetes-svm",
    ...                tracking_uri="sqlite:///studies/demo/mlflow.db")     # doctest: +SKIP
    >>> done.promoted, done.candidate.version                               # doctest: +SKIP
    (True, '2')
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable

from frugalml.exceptions import ConfigError, DataError, StoreLockedError
from frugalml.files import sha256_file, write_atomic
from frugalml.gate import CheckResult, GateSettings, check
from frugalml.lineage import LINEAGE_FILE, record_promotion
from frugalml.names import MAX_NAME_CHARS
from frugalml.ownership import is_owned, remove_owned
from frugalml.registry import TAG, RegisteredModel, RegistryError, artifact_location, register, study_tracking_uri
from frugalml.results import ranked_feasible
from frugalml.search import Search
from frugalml.store import ResultStore
from frugalml.study import Study, Workload, stored_study
from frugalml.tuner import load_result, tune

# What a retrain specifies anew; every other Study field is carried over from the earlier study as stored
# (``rules`` are stored as their reprs, so they cannot be).
_RESPECIFIED = frozenset({"name", "workloads", "search", "directory", "prediction", "rules"})


@dataclass(frozen=True)
class RetrainResult:
    """What a retrain did."""

    study_dir: str
    candidate: RegisteredModel
    champion: str  # the version that held the alias before
    promoted: bool
    check: CheckResult
    cpu_s: float
    trials: int
    trigger: str
    run_id: str


def warm_points(study_dir: str | Path, workload: str, top: int) -> list[dict[str, Any]]:
    """The ``top`` best feasible configurations of an earlier study, best first."""
    result = load_result(study_dir)
    return [dict(s.params) for s in ranked_feasible(result.records, result.search, workload)[:top]]


def _new_data(workload: dict[str, Any], data: str | Path, target: str | None, data_dir: str | None,
              feature_names: tuple[str, ...], seed: int) -> str:
    """Check the new data has the champion's schema before anything trains on it."""
    from frugalml.workloads import prepare_dataset, resolve_dataset

    path = Path(data)
    if not path.is_file():
        raise DataError(f"new data {str(path)!r} not found; pass a CSV/Parquet/npz file with the study's columns.")
    source = resolve_dataset(path=str(path.resolve()), target=target or workload.get("target"), data_dir=data_dir)
    names = tuple(prepare_dataset(source, seed=seed).meta().get("feature_names") or ())  # cached for the tune
    if feature_names and names != tuple(feature_names):
        raise DataError(f"new data {str(path)!r} has columns {list(names)[:8]} but the champion takes "
                        f"{list(feature_names)[:8]}; retrain on data with the champion's schema.")
    return str(path.resolve())


DONE_FILE = "retrain.json"  # written before a retrain registers anything: from then on its folder is kept


def _next_name(study_dir: Path, name: str, data_path: str) -> str:
    """``<name>-retrain-N``: the last one again if a killed retrain left it before registering anything
    and no one runs it (resumed on the same data bytes, else cleared), otherwise the next free number."""
    k = 1
    while (study_dir.parent / _retrain_name(name, k)).exists():
        k += 1
    last = study_dir.parent / _retrain_name(name, k - 1)
    if k > 1 and is_owned(last) and not (last / DONE_FILE).exists() and not _running(last):
        recorded = [entry.get("sha256") for entry in _lineages(last)]
        if recorded != [sha256_file(data_path)]:
            remove_owned(last)  # its own trials only: nothing of it was registered
        return last.name
    return _retrain_name(name, k)


def _retrain_name(name: str, k: int) -> str:
    suffix = f"-retrain-{k}"
    return name[: MAX_NAME_CHARS - len(suffix)] + suffix


def _running(folder: Path) -> bool:
    try:
        with ResultStore(folder).run_lock():
            return False
    except StoreLockedError:
        return True


def _lineages(folder: Path) -> list[dict[str, Any]]:
    try:
        return list(json.loads((folder / LINEAGE_FILE).read_text())["workloads"].values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []


def retrain_study(study_dir: str | Path, data: str | Path, *, feature_names: tuple[str, ...] = (),
                  target: str | None = None, top: int = 3, cold: bool = False, out: str | Path | None = None,
                  workload: str | None = None) -> Study:
    """The earlier study, re-specified on ``data``: same budgets, rules and settings; warm unless ``cold``."""
    study_dir = Path(study_dir)
    stored = stored_study(study_dir)
    chosen = stored.workload(workload)
    if chosen.get("train") or not chosen.get("path") and not chosen.get("dataset"):
        raise ConfigError(f"workload {chosen.get('name')!r} trains with its own function, which reads its own "
                          "data; retrain re-runs built-in workloads on a new data file.")
    if not isinstance(top, int) or top < 1:
        raise ConfigError(f"--top must be an int >= 1. Got {top!r} instead.")
    spec = stored.spec
    path = _new_data(chosen, data, target, stored.data_dir, feature_names, stored.seed)
    entry = {**chosen, "path": path, "dataset": None, "target": target or chosen.get("target")}
    search = dict(spec.get("search") or {})
    if not cold:
        points = warm_points(study_dir, str(chosen["name"]), top)
        if not points:
            raise ConfigError(f"study {stored.name!r} has no feasible configuration to warm-start from; "
                              "pass --cold to search the whole space again.")
        space = {k: sorted({p[k] for p in points}, key=repr) for k in points[0]}
        search.update(method="grid", n_trials=None, space=space, points=points)
    prediction = dict(spec.get("prediction") or {})
    if prediction:
        prediction["history"] = [*prediction.get("history", []), str(study_dir.resolve())]
    name = _next_name(study_dir, stored.name, path) if out is None else Path(out).name
    directory = Path(out) if out is not None else study_dir.parent / name
    carried = {f.name: spec[f.name] for f in fields(Study) if f.name not in _RESPECIFIED and f.name in spec}
    return Study(name=name, workloads=[Workload(**entry)], search=Search(**search), directory=str(directory),
                 prediction=prediction, **carried)


def retrain(study_dir: str | Path, data: str | Path, *, model: str, tracking_uri: str | None = None,
            alias: str = "champion", target: str | None = None, gate: GateSettings | None = None, top: int = 3,
            cold: bool = False, trigger: str = "manual", out: str | Path | None = None,
            workload: str | None = None, progress: Callable[[str], None] | None = None) -> RetrainResult:
    """Re-tune ``study_dir`` on ``data``, register its best, and move ``alias`` only if the gate passes.

    Args:
        study_dir: the study the champion came from.
        data: the new data file (same columns as the champion's training data).
        model: the registered model's name; ``alias`` names its champion.
        tracking_uri: the registry (default: the study's own store).
        gate: the gate (default :class:`~frugalml.gate.GateSettings`).
        top: how many of the earlier study's best configurations the warm start runs.
        cold: search the whole space again instead.
        trigger: why this retrain ran (``manual``, ``alert: input drift``, ``new data``), recorded.
    """
    import mlflow

    from frugalml.serve import load_model, release

    say = progress or (lambda message: None)
    uri = tracking_uri or study_tracking_uri(study_dir)
    champion = load_model(f"models:/{model}@{alias}", uri)
    release(champion)  # only its version and inputs are used here; a remote model's copy would stay till exit
    study = retrain_study(study_dir, data, feature_names=champion.reference.feature_names, target=target, top=top,
                          cold=cold, out=out, workload=workload)
    say(f"re-tuning {study.name} on {data} ({'cold' if cold else f'warm: top {top}'})")
    resumed = out is None and ResultStore(study.path).exists  # a retrain killed earlier, on this data
    result = tune(study, resume=resumed)
    account = result.compute()
    if result.best_feasible() is None:
        write_atomic(study.path / DONE_FILE, json.dumps({"state": "no feasible configuration"}))
        raise RegistryError(f"the retrain study {study.name!r} found no feasible configuration on the new data; "
                            f"the champion (version {champion.version}) keeps serving.")
    say(f"gating the new best against {model} version {champion.version}")
    verdict = check(str(study.path), f"models:/{model}/{champion.version}", settings=gate, tracking_uri=uri)
    write_atomic(study.path / DONE_FILE, json.dumps({"state": "registering", "champion": champion.version}))
    candidate = register(study.path, name=model, tracking_uri=uri)  # a failed gate is registered too: the history
    say(f"registered {model} version {candidate.version} (gate: {verdict.verdict})")
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    run_id = _record(client, model, study, data, trigger, candidate, champion.version, verdict, account)
    for key, value in {"gate": verdict.verdict, "trigger": trigger, "retrained_from": champion.version,
                       "retrain_run": run_id, "gate.regressions": ",".join(m.metric for m in verdict.regressions)
                       }.items():
        client.set_model_version_tag(model, candidate.version, TAG + key, value)
    if verdict.passed:
        record_promotion(client, model, alias, candidate.version, f"retrain ({trigger}): gate passed", run_id)
        say(f"gate passed: {alias} -> version {candidate.version}")
    else:
        say(f"gate failed ({', '.join(m.metric for m in verdict.regressions)}): {alias} stays on version "
            f"{champion.version}")
    write_atomic(study.path / DONE_FILE, json.dumps({"state": "done", "candidate": candidate.version,
                                                      "gate": verdict.verdict, "champion": champion.version,
                                                      "run_id": run_id}))
    return RetrainResult(str(study.path), candidate, champion.version, verdict.passed, verdict,
                         account.used_cpu_s, len(result.records), trigger, run_id)


def _record(client: Any, model: str, study: Study, data: str | Path, trigger: str, candidate: RegisteredModel,
            champion: str, verdict: CheckResult, account: Any) -> str:
    """One run in ``<model>-retrain``: why it ran, on which data, what it cost, what the gate said."""
    from frugalml.lineage import data_lineage, lineage_tags

    experiment = client.get_experiment_by_name(f"{model}-retrain")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(
        f"{model}-retrain", artifact_location=artifact_location(client.tracking_uri, study.path))
    tags = {TAG + "trigger": trigger, TAG + "gate": verdict.verdict, TAG + "candidate_version": candidate.version,
            TAG + "champion_version": champion, TAG + "study_dir": str(study.path.resolve()),
            **lineage_tags(data_lineage(str(data)))}
    run = client.create_run(experiment_id, run_name=f"retrain -> version {candidate.version}", tags=tags)
    client.log_param(run.info.run_id, "data", str(data))
    metrics = {"cpu_seconds": account.used_cpu_s, "trials": account.trials, "skipped": account.skipped}
    for m in verdict.metrics:
        if math.isfinite(m.ratio):
            metrics[f"gate/{m.metric}_ratio"] = m.ratio
    for key, value in metrics.items():
        client.log_metric(run.info.run_id, key, float(value))
    client.log_text(run.info.run_id, verdict.to_json(), "gate.json")
    client.log_text(run.info.run_id, verdict.to_markdown(), "gate.md")
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def alert_matches(event: Any, rules: tuple[str, ...]) -> bool:
    """A firing alert webhook event (``AlertEvent.to_dict()``) for one of ``rules`` (any, when empty)."""
    return isinstance(event, dict) and event.get("status") == "firing" and (not rules or event.get("rule") in rules)


__all__ = ["RetrainResult", "alert_matches", "retrain", "retrain_study", "warm_points"]
