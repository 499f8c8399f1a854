"""Register a study's best feasible configuration in the MLflow Model Registry.

:func:`refit_best` is the data step: it refits the configuration that met the budgets
on the study's training split (``partial_fit`` over sequential batches, as the study
trained it) and wraps it with the training scaler, so the model takes raw feature
values; it fingerprints the training data (:class:`~frugalml.serve.Reference`) and
measures prediction latency. :func:`register` logs that to MLflow and registers a
version, with the profile, the study link and the data's lineage (``frugalml.data.*``,
:mod:`frugalml.lineage`) as tags.

Example:
    >>> from frugalml.registry import register
    >>> version = register("studies/demo", alias="champion")    # doctest: +SKIP
    >>> version.model_uri                                        # doctest: +SKIP
    'models:/demo-diabetes-svm@champion'
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, NamedTuple

import numpy as np

from frugalml.budgets import SERVING_METRICS
from frugalml.deploy import SLO_TAG, Slo
from frugalml.exceptions import FrugalError, one_line
from frugalml.flavors import SKLEARN_SERIALIZATION
from frugalml.lineage import data_lineage, lineage_tags, log_dataset, read_lineage, record_promotion, store_problem
from frugalml.records import TrialRecord
from frugalml.serve import Reference, encode_table, extra_files, pip_requirements, sha256_arrays
from frugalml.store import ResultStore
from frugalml.study import DEFAULT_MLFLOW, StoredStudy, stored_study
from frugalml.tracking import MODEL_ARTIFACT, default_uri, seed_sqlite_store, sqlite_path
from frugalml.tuner import load_result

TAG = "frugalml."


class RegistryError(FrugalError, RuntimeError):
    """A study cannot be registered (no feasible configuration, custom training code, divergence)."""


class RawSplit(NamedTuple):
    """The prepared split in raw (unstandardised) feature units, as a client sends them (an object
    array with text in its text columns, for a table that has some)."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    feature_names: tuple[str, ...]


@dataclass(frozen=True)
class Refit:
    """A refitted best configuration, ready to register or save."""

    model: Any
    reference: Reference
    profile: dict[str, float]
    link: dict[str, str]
    params: dict[str, Any]
    model_dir: Path | None = None  # a model the trial logged itself (trial.log_model), registered as it is
    lineage: dict[str, Any] | None = None  # where the data came from (frugalml.lineage.data_lineage)
    training: tuple[Any, str | None] | None = None  # (DataFrame, target column): the register run's mlflow.data input
    recipe: dict[str, Any] | None = None  # the workload, params, seed and data_dir: enough to train it again
    slo: Slo | None = None  # the serving budgets the study held it to (frugalml.deploy)


@dataclass(frozen=True)
class RegisteredModel:
    """A registered model version."""

    name: str
    version: str
    alias: str | None
    tracking_uri: str
    run_id: str
    profile: dict[str, float]

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}@{self.alias}" if self.alias else f"models:/{self.name}/{self.version}"


def raw_split(data: Any) -> RawSplit:
    """Undo the training scaler (and one-hot encoding) of a :class:`~frugalml.workloads.PreparedData`."""
    _, y_train, _, y_test = data.arrays(mmap=False)
    names = data.meta().get("feature_names") or [f"x{j}" for j in range(data.n_features)]
    return RawSplit(data.raw("train"), y_train, data.raw("test"), y_test, tuple(map(str, names)))


def fit_model(data: Any, algorithm: str, params: Mapping[str, Any], *, epochs: int = 1,
              max_steps: int | None = None, seed: int = 0) -> Any:
    """Fit ``algorithm`` with ``params`` as the study did; returns scaler + estimator as a Pipeline.

    A classifier predicts the original class labels (``data.classes``). A table with text
    columns gets the study's one-hot encoder as the first step, so the model takes raw text.
    """
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from frugalml.workloads import make_estimator, steps_planned  # lazy: scikit-learn (~1 s)

    batch = max(1, min(int(params.get("batch_size", 1)), data.n_train))
    estimator = make_estimator(algorithm, data.task, float(params.get("learning_rate", 0.01)), seed, dataset=data.name)
    X_train, y_train, _, _ = data.arrays(mmap=True)
    fit_kwargs = {"classes": np.arange(len(data.classes))} if data.task == "classification" else {}
    planned = steps_planned(data.n_train, batch, epochs, max_steps)
    step = 0
    while step < planned:
        for start in range(0, data.n_train, batch):
            if step >= planned:
                break
            try:
                estimator.partial_fit(X_train[start:start + batch], y_train[start:start + batch], **fit_kwargs)
            except ValueError as error:
                if "overflow" in str(error):
                    raise RegistryError(
                        f"refitting {algorithm} with {dict(params)} diverged (weights overflowed)."
                    ) from error
                raise
            step += 1
    if data.task == "classification":
        estimator.classes_ = np.asarray(data.classes)  # predict() maps codes to the original labels
    meta = data.meta()
    scaler = StandardScaler()
    scaler.mean_ = np.asarray(meta["scaler_mean"], dtype=np.float64)
    scaler.scale_ = np.asarray(meta["scaler_scale"], dtype=np.float64)
    scaler.var_ = scaler.scale_**2
    scaler.n_features_in_ = data.n_features
    scaler.n_samples_seen_ = data.n_train
    encoder = data.encoder()
    return Pipeline([*([("encode", encoder)] if encoder is not None else []), ("scale", scaler), ("model", estimator)])


def _percentiles_ms(samples: list[float]) -> tuple[float, float]:
    p50, p99 = np.percentile(np.asarray(samples) * 1e3, [50, 99])
    return float(p50), float(p99)


LATENCY_BUDGET_S = 2.0  # per kind of call (one row, a batch): a slow model is timed on fewer calls, not for longer
LATENCY_LEAST_CALLS = (20, 3)  # ... but on at least this many (one row, a batch)


def measure_latency(model: Any, X: np.ndarray, *, single_calls: int = 200, batch_rows: int = 1000,
                    batch_calls: int = 20, budget_s: float = LATENCY_BUDGET_S, seed: int = 0) -> dict[str, float]:
    """p50/p99 milliseconds of ``model.predict`` on one row and on ``batch_rows`` rows.

    Each kind of call is timed ``single_calls`` / ``batch_calls`` times, or as many times as fit
    in ``budget_s`` seconds (at least :data:`LATENCY_LEAST_CALLS`): a forest taking 50 ms a row
    would otherwise hold ``frugalml register`` for 10 s of single-row calls.
    """
    rng = np.random.default_rng(seed)
    rows = X[rng.integers(0, len(X), size=single_calls)]
    batch = X[rng.integers(0, len(X), size=batch_rows)]
    model.predict(batch)  # warm-up
    single = _timed(model.predict, (row[None, :] for row in rows), budget_s, LATENCY_LEAST_CALLS[0])
    batched = _timed(model.predict, (batch for _ in range(batch_calls)), budget_s, LATENCY_LEAST_CALLS[1])
    single_p50, single_p99 = _percentiles_ms(single)
    batch_p50, batch_p99 = _percentiles_ms(batched)
    return {
        "single_row_p50_ms": single_p50, "single_row_p99_ms": single_p99,
        f"batch{batch_rows}_p50_ms": batch_p50, f"batch{batch_rows}_p99_ms": batch_p99,
    }


def _timed(predict: Any, inputs: Iterator[np.ndarray], budget_s: float, least: int) -> list[float]:
    """Seconds of ``predict`` on each of ``inputs``, until they run out or ``budget_s`` has passed
    and at least ``least`` calls were timed."""
    seconds: list[float] = []
    deadline = time.perf_counter() + budget_s
    for x in inputs:
        start = time.perf_counter()
        predict(x)
        seconds.append(time.perf_counter() - start)
        if len(seconds) >= least and time.perf_counter() >= deadline:
            break
    return seconds


def build_reference(model: Any, data: Any, split: RawSplit, *, bins: int = 10, sample_size: int = 1000,
                    seed: int = 0) -> Reference:
    """The training-data fingerprint: sha256 of the fitted arrays, schema, reference statistics."""
    from frugalml.serve import Calibration, confidences

    X_fit, y_fit, _, _ = data.arrays(mmap=True)
    meta = data.meta()
    X_raw, categories = split.X_train, None
    if X_raw.dtype == object:  # text columns: the fingerprint keeps their categories, and codes into them
        import pandas as pd

        X_raw, categories = encode_table(pd.DataFrame(X_raw, columns=list(split.feature_names)).infer_objects())
    calibration = None
    scored = confidences(model, split.X_train) if data.task == "classification" else None
    if scored is not None:  # labels are class codes into data.classes; the model predicts the names
        predicted, confidence = scored
        truth = np.asarray(data.classes)[split.y_train]
        calibration = Calibration.fit(confidence, predicted.astype(str) == truth.astype(str)).to_dict()
    return Reference.build(
        X_raw, split.y_train, split.feature_names, task=data.task, predictions=model.predict(split.X_train),
        classes=data.classes, bins=bins, sample_size=sample_size, seed=seed, hashed=(X_fit, y_fit),
        calibration=calibration, categories=categories,
        data={"dataset": data.name, "source": meta.get("source"), "source_file": meta.get("file"),
              "seed": meta.get("seed"), "test_size": meta.get("test_size"), "n_test": data.n_test,
              "substitute_for": data.substitute_for},
    )


def logged_best(study_dir: str | Path, stored: StoredStudy, workload: dict[str, Any], best: Any, *,
                measure: bool = True) -> Refit:
    """The model a trial of the best feasible configuration logged (``trial.log_model``), not refitted.

    Its reference is the data the trial logged (``trial.log_reference``); the profile
    is the study's measured costs plus (``measure``) prediction latency on that data.
    """
    from frugalml.serve import load_predictor, reference_from_table

    records = [r for r in load_result(study_dir).records
               if r.workload == workload["name"] and r.config_id == best.config_id and r.feasible]
    logged = [r for r in records if r.info.get("model") and Path(r.info["model"]["path"]).is_dir()]
    if not logged:
        raise RegistryError(
            f"the best configuration of workload {workload['name']!r} logged no model; call "
            "trial.log_model(model) (and trial.log_reference(X, y)) at the end of your training function."
        )
    record = logged[0]
    if not record.info.get("reference"):
        raise RegistryError(
            f"trial {record.trial_id} logged a model but no reference data; call trial.log_reference(X, y) "
            "with the training inputs so serving can check drift and quality."
        )
    trial_model = _trial_run_model(study_dir, record.trial_id)
    model_dir = trial_model[1] if trial_model is not None else _exported(Path(record.info["model"]["path"]))
    model = load_predictor(model_dir, str(model_dir))
    reference = reference_from_table(model, record.info["reference"], seed=stored.seed)
    X = reference.sample_inputs
    profile = {
        **{f"study_{k}": float(v) for k, v in best.mean.items() if v is not None and math.isfinite(v)},
        **serving_profile(records),
        **(measure_latency(model, X) if measure else {}),
    }
    link = {"study": stored.name, "study_dir": str(Path(study_dir).resolve()), "config_id": best.config_id,
            "workload": str(workload["name"]), "trial": record.trial_id, "flavor": record.info["model"]["flavor"]}
    if trial_model is not None:  # the version is that run's model (plus serving's files): say which
        link.update(trial_run_id=trial_model[0], trial_model_uri=f"runs:/{trial_model[0]}/{MODEL_ARTIFACT}")
    from frugalml.flavors import TARGET, read_reference

    frame, _ = read_reference(record.info["reference"])
    return Refit(model, reference, profile, link, dict(best.params), model_dir,
                 lineage=_lineage(study_dir, workload, workload.get("path")),
                 training=(frame, TARGET if TARGET in frame.columns else None),
                 recipe=_recipe(stored, workload, best.params), slo=study_slo(stored))


def _lineage(study_dir: str | Path, workload: Mapping[str, Any], data_file: str | None) -> dict[str, Any]:
    """The data lineage the study recorded for ``workload``; computed now for a study from before lineage.json."""
    recorded = read_lineage(study_dir, str(workload["name"]))
    return recorded if recorded is not None else data_lineage(data_file, dataset=workload.get("dataset"))


def _trial_run_model(study_dir: str | Path, trial_id: str) -> tuple[str, Path] | None:
    """The trial's MLflow run id and a local path of the model logged with it (``runs:/<id>/model``).

    None where there is none: a study without MLflow, a trial not logged yet, a run
    from before trial models were logged, or a model the driver could not export.
    """
    run_id = ResultStore(study_dir).mlflow_runs().get(trial_id)
    if not run_id or not stored_study(study_dir).mlflow_uri:
        return None
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    try:  # a local artifact store gives its own path: nothing is copied
        path = Path(download_artifacts(run_id=run_id, artifact_path=MODEL_ARTIFACT,
                                       tracking_uri=study_tracking_uri(study_dir)))
    except (MlflowException, OSError):
        return None
    return (run_id, path) if (path / "MLmodel").is_file() else None


def _exported(saved: Path) -> Path:
    """The MLflow model of a trial's kept model, exported once beside it (written, then renamed)."""
    import shutil

    from frugalml.flavors import export_mlflow

    target = saved.with_name("mlflow-model")
    if not (target / "MLmodel").is_file():
        tmp = saved.with_name(f".mlflow-model.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            export_mlflow(saved, tmp)
        except FrugalError as error:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RegistryError(str(error)) from None
        shutil.rmtree(target, ignore_errors=True)
        os.rename(tmp, target)
    return target


def refit_best(study_dir: str | Path, workload: str | None = None, *, measure: bool = True) -> Refit:
    """Refit the study's best feasible configuration; fingerprint its data; measure latency
    (``measure = False``: a caller that times predictions itself, as ``frugalml check`` does).

    A workload with its own training function is not refitted: its best trial's
    logged model is taken as it is (:func:`logged_best`).
    """
    from frugalml.workloads import prepare_dataset, resolve_dataset  # lazy: scikit-learn (~1 s)

    study_dir = Path(study_dir)
    from frugalml.workloads import NETWORKS

    stored = stored_study(study_dir)
    name = stored.name
    chosen = stored.workload(workload)
    if chosen.get("algorithm") in NETWORKS and not chosen.get("train"):
        raise RegistryError(
            f"workload {chosen['name']!r} trains a built-in {chosen['algorithm']} network, which frugalml cannot "
            "refit and register yet; to ship a network, train it in your own training function and end it with "
            "trial.log_model(model) and trial.log_reference(X, y).")
    result = load_result(study_dir)
    best = result.best_feasible(chosen["name"])
    if best is None:
        raise RegistryError(
            f"study {name!r} has no feasible configuration for workload {chosen['name']!r}: every "
            "configuration broke a budget or failed; relax the budget or widen the search."
        )
    if chosen.get("train") or not chosen.get("algorithm"):
        return logged_best(study_dir, stored, chosen, best, measure=measure)
    seed = stored.seed
    source = resolve_dataset(chosen.get("dataset"), path=chosen.get("path"), target=chosen.get("target"),
                             data_dir=stored.data_dir)
    data = prepare_dataset(source, seed=seed)
    model = fit_model(data, chosen["algorithm"], best.params, epochs=int(chosen.get("epochs", 1)),
                      max_steps=chosen.get("max_steps"), seed=seed)
    split = raw_split(data)
    reference = build_reference(model, data, split, seed=seed)
    profile = {
        **{f"study_{k}": float(v) for k, v in best.mean.items() if v is not None and math.isfinite(v)},
        **serving_profile(r for r in result.records if r.workload == chosen["name"] and r.config_id == best.config_id),
        **(measure_latency(model, split.X_train) if measure else {}),
        **_refit_quality(model, data.task, split),
    }
    link = {
        "study": name, "study_dir": str(study_dir.resolve()), "config_id": best.config_id,
        "workload": str(chosen["name"]), "algorithm": str(chosen["algorithm"]),
        "trials": ",".join(r.trial_id for r in result.records
                           if r.workload == chosen["name"] and r.config_id == best.config_id),
    }
    return Refit(model, reference, profile, link, dict(best.params),
                 lineage=_lineage(study_dir, chosen, data.meta()["source"]),
                 training=(_training_frame(split, data, source.target or "target"), source.target or "target"),
                 recipe=_recipe(stored, chosen, best.params), slo=study_slo(stored))


def study_slo(stored: StoredStudy) -> Slo | None:
    """The serving budgets a study held its trials to, as its registered model's SLO."""
    return Slo.of_study(stored.budget, stored.spec.get("deploy"))


def serving_profile(records: Iterable[TrialRecord]) -> dict[str, float]:
    """``serve_<metric>``: the mean of what :mod:`frugalml.deploy` measured of the configuration's models."""
    profile, records = {}, list(records)
    for metric in SERVING_METRICS:
        values = [v for r in records if (v := r.serving(metric)) is not None]
        if values:
            profile[f"serve_{metric}"] = sum(values) / len(values)
    return profile


def _recipe(stored: StoredStudy, workload: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    return {"workload": dict(workload), "params": dict(params), "seed": stored.seed, "data_dir": stored.data_dir}


def _training_frame(split: RawSplit, data: Any, target: str) -> Any:
    """The training split in raw units, with the target as the study read it (class labels, not codes)."""
    import pandas as pd

    frame = pd.DataFrame(split.X_train, columns=list(split.feature_names), copy=False).infer_objects()
    frame[target] = np.asarray(data.classes)[split.y_train] if data.task == "classification" else split.y_train
    return frame


def _refit_quality(model: Any, task: str, split: RawSplit) -> dict[str, float]:
    predicted = model.predict(split.X_test)
    if task == "classification":
        labels = np.asarray(model.steps[-1][1].classes_)[split.y_test]
        return {"refit_accuracy": float(np.mean(predicted == labels))}
    return {"refit_rmse": float(np.sqrt(np.mean((predicted - split.y_test) ** 2)))}


def study_tracking_uri(study_dir: str | Path) -> str:
    """The study's MLflow tracking URI (its sqlite store unless the study named another)."""
    uri = stored_study(study_dir).mlflow_uri
    return default_uri(study_dir) if uri in (None, DEFAULT_MLFLOW) else str(uri)


def artifact_location(uri: str, study_dir: str | Path) -> str | None:
    """Where a new experiment in store ``uri`` keeps what a study's registration (or retrain) logs: with the
    store, so that it lives as long as the store does. A SQLite store's beside its file (the study's own:
    the study's ``mlartifacts``, which ``--fresh`` clears with the store; another study's: never in this
    study's folder, which ``--fresh`` would clear under a registry that still names them); a tracking
    server's wherever it keeps artifacts; a database without a server (MLflow would use ``./mlruns`` of
    the working folder): the study's folder, as the study's own trial runs use."""
    if (path := sqlite_path(uri)) is not None:
        return str(path.resolve().parent / "mlartifacts")
    if uri.split(":", 1)[0].lower() in ("http", "https", "databricks", "databricks-uc", "uc"):
        return None
    return str((Path(study_dir) / "mlartifacts").resolve())


def _tags(refit: Refit) -> dict[str, str]:
    reference = refit.reference
    schema = json.dumps(reference.schema)
    tags = {
        **{TAG + k: v for k, v in refit.link.items()},
        TAG + "params": json.dumps(refit.params, sort_keys=True),
        TAG + "training_sha256": reference.training_sha256,
        TAG + "schema_sha256": sha256_arrays(np.frombuffer(schema.encode(), dtype=np.uint8)),
        TAG + "n_features": str(len(reference.features)),
        TAG + "task": reference.task,
        **{TAG + "profile." + k: f"{v:.6g}" for k, v in refit.profile.items()},
    }
    if len(schema) <= 4000:
        tags[TAG + "schema"] = schema
    if refit.slo is not None:
        tags[SLO_TAG] = refit.slo.to_json()
    if refit.recipe is not None and len(recipe := json.dumps(refit.recipe, sort_keys=True, default=str)) <= 4000:
        tags[TAG + "recipe"] = recipe  # how to train it again where its study folder is not at hand (frugalml check)
    return tags


def _log_model_dir(refit: Refit, monitoring: Mapping[str, Any] | None, tmp: Path, run_id: str) -> str:
    """Log a saved MLflow model directory, with frugalml's extra files added, as the run's ``model``."""
    import shutil

    import mlflow

    copy = tmp / "model"
    shutil.copytree(refit.model_dir, copy)
    classes = getattr(refit.model, "classes_", None)  # a network classifier's: its output indices
    if refit.reference.task == "classification" and classes is not None:
        from frugalml.serve import as_classifier

        as_classifier(copy, classes, refit.reference.feature_names,  # pyfunc answers labels, as /predict does
                      refit.training[0] if refit.training is not None else None)
    (copy / "extra_files").mkdir(exist_ok=True)
    extra_files(copy / "extra_files", refit.reference, dict(monitoring) if monitoring is not None else None)
    mlflow.log_artifacts(str(copy), artifact_path="model")
    return f"runs:/{run_id}/model"


def _check_alias(alias: str) -> None:
    """MLflow's own alias rules, checked before anything is registered."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils import validation

    # Private helpers, renamed in MLflow 3.18 (``_validate_model_alias_name*`` before). Where neither name
    # exists, MLflow's documented rule: "latest" and "v<number>" are reserved.
    checks = [getattr(validation, f"_validate{kind}_alias_name{suffix}", None)
              for kind in ("", "_model") for suffix in ("", "_reserved")]
    checks = [check for check in checks if check is not None] or [_reserved_alias]
    try:
        for check in checks:
            check(alias)
    except MlflowException as error:
        raise RegistryError(f"cannot use alias {alias!r}: {one_line(error)} Pick another alias.") from None


def _reserved_alias(alias: str) -> None:
    from mlflow.exceptions import MlflowException

    if alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias):
        raise MlflowException(f"Alias name {alias!r} is reserved by MLflow.")


def register(
    study_dir: str | Path,
    *,
    name: str | None = None,
    alias: str | None = None,
    workload: str | None = None,
    monitoring: Mapping[str, Any] | None = None,
    tracking_uri: str | None = None,
) -> RegisteredModel:
    """Refit the best feasible configuration and register it as a new model version.

    The run and the version carry the data's lineage as ``frugalml.data.*`` tags (the
    study's ``lineage.json``), and the run logs the training split as an ``mlflow.data``
    input (context ``training``).

    Args:
        study_dir: the study's directory.
        name: the registered model's name (default ``<study>-<workload>``).
        alias: an alias to point at the new version (e.g. ``champion``), recorded in the
            model's ``frugalml.alias_history`` (:func:`frugalml.lineage.record_promotion`).
        workload: which workload's best configuration (needed when the study has several).
        monitoring: a default monitoring config stored with the model.
        tracking_uri: default: the study's own tracking URI.
    """
    import mlflow
    import mlflow.sklearn
    import pandas as pd
    from mlflow.exceptions import MlflowException
    from mlflow.models import infer_signature

    if alias is not None:
        _check_alias(alias)
    if monitoring is not None:
        from frugalml.serve import as_monitoring_config

        monitoring = as_monitoring_config(monitoring).to_dict()  # fails now, not when served
    if tracking_uri and (problem := store_problem(tracking_uri, must_exist=False)):
        raise RegistryError(problem)
    refit = refit_best(study_dir, workload)
    study, config_id = refit.link["study"], refit.link["config_id"]
    name = name or f"{study}-{refit.link['workload']}"
    uri = tracking_uri or study_tracking_uri(study_dir)
    tags = {**_tags(refit), **lineage_tags(refit.lineage or {})}
    previous = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    try:
        seed_sqlite_store(uri)
        client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        experiment = client.get_experiment_by_name(f"{study}-registry")
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(
            f"{study}-registry", artifact_location=artifact_location(uri, study_dir))
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"register {config_id}", tags=tags) as run, \
                tempfile.TemporaryDirectory() as tmp:
            mlflow.log_params({k: v for k, v in refit.params.items()})
            mlflow.log_metrics(refit.profile)
            if refit.training is not None:
                log_dataset(refit.lineage or {}, refit.training[0], "training", targets=refit.training[1])
            if refit.model_dir is not None:
                model_uri = _log_model_dir(refit, monitoring, Path(tmp), run.info.run_id)
            else:
                features = refit.reference.feature_names
                example = pd.DataFrame([refit.reference.typical_row()], columns=list(features)).infer_objects()
                signature = infer_signature(example, refit.model.predict(example.to_numpy()))
                model_uri = mlflow.sklearn.log_model(
                    refit.model, name="model", signature=signature, pip_requirements=pip_requirements(),
                    extra_files=extra_files(Path(tmp), refit.reference, monitoring),
                    serialization_format=SKLEARN_SERIALIZATION,
                ).model_uri
        version = mlflow.register_model(model_uri, name, tags=tags)
        client.update_model_version(name, version.version, f"best feasible {config_id} of study {study}")
        if alias:
            record_promotion(client, name, alias, version.version, f"registered best feasible {config_id} of "
                             f"study {study}", run_id=run.info.run_id)
    except MlflowException as error:
        raise RegistryError(f"cannot register model {name!r} at {uri}: {one_line(error)}") from error
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])
    return RegisteredModel(name, str(version.version), alias, uri, run.info.run_id, refit.profile)

