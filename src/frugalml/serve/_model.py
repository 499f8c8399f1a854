"""A servable model on disk: an MLflow sklearn model plus frugalml's extra files.

``extra_files/frugalml_reference.json`` holds the training-data fingerprint
(:class:`Reference`); ``extra_files/frugalml_monitoring.json``, when present, the
model's default monitoring config. Any MLflow model URI works (``models:/name@alias``,
``models:/name/3``, ``runs:/...``) as well as a local model directory.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frugalml.exceptions import FrugalError
from frugalml.serve._reference import Reference

REFERENCE_FILE = "frugalml_reference.json"
MONITORING_FILE = "frugalml_monitoring.json"


class ModelLoadError(FrugalError, RuntimeError):
    """A model URI cannot be resolved or loaded, or lacks frugalml's reference file."""


@dataclass(frozen=True)
class ServedModel:
    """A loaded model with its reference statistics and where it came from."""

    model: Any
    reference: Reference
    uri: str
    path: Path
    name: str = ""
    version: str = ""
    monitoring: dict[str, Any] | None = None
    tags: dict[str, str] = field(default_factory=dict)


def pip_requirements() -> list[str]:
    """Pinned requirements (skips MLflow's slow inference by loading the model)."""
    import numpy
    import sklearn

    return [f"scikit-learn=={sklearn.__version__}", f"numpy=={numpy.__version__}"]


def extra_files(directory: Path, reference: Reference, monitoring: dict[str, Any] | None = None) -> list[str]:
    """Write frugalml's files into ``directory``; returns their paths for ``extra_files=``."""
    files = [str(reference.save(directory / REFERENCE_FILE))]
    if monitoring is not None:
        (directory / MONITORING_FILE).write_text(json.dumps(monitoring))
        files.append(str(directory / MONITORING_FILE))
    return files


def save_model(model: Any, reference: Reference, path: str | Path, monitoring: dict[str, Any] | None = None) -> Path:
    """Save a servable model directory (no tracking server involved)."""
    import mlflow.sklearn

    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.sklearn.save_model(model, str(path), extra_files=extra_files(Path(tmp), reference, monitoring),
                                  pip_requirements=pip_requirements())
    return path


def _resolve(uri: str, tracking_uri: str | None) -> tuple[Path, str, str, dict[str, str]]:
    """Local directory, registered name, version and version tags of ``uri``."""
    import mlflow
    from mlflow.exceptions import MlflowException

    local = Path(uri)
    if local.is_dir():
        return local, local.name, "", {}
    if ":/" not in uri:
        raise ModelLoadError(f"no model directory {uri!r}; pass a model directory or an MLflow model URI "
                             "(models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/model).")
    if uri.startswith(("models:/", "runs:/")) and not (tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")):
        # MLflow would fall back to ./mlflow.db, creating an empty store where it looks
        raise ModelLoadError(f"{uri!r} needs the tracking store it is registered in: pass --tracking-uri "
                             "(`frugalml register` prints it) or set MLFLOW_TRACKING_URI.")
    name = version = ""
    tags: dict[str, str] = {}
    try:
        if uri.startswith("models:/"):
            client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
            name, _, ref = uri[len("models:/"):].partition("@")
            if ref:
                found = client.get_model_version_by_alias(name, ref)
            elif "/" in name:
                name, _, number = name.partition("/")
                found = client.get_model_version(name, number) if number.isdigit() else None
            else:
                found = None
            if found is not None:
                version, tags = str(found.version), dict(found.tags)
        if tracking_uri:
            mlflow.set_tracking_uri(tracking_uri)
            mlflow.set_registry_uri(tracking_uri)
        path = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except MlflowException as error:
        where = f" (tracking URI {tracking_uri})" if tracking_uri else " (set --tracking-uri or MLFLOW_TRACKING_URI)"
        raise ModelLoadError(f"cannot resolve model {uri!r}{where}: {error.message.splitlines()[0]}") from error
    return path, name, version, tags


def load_model(uri: str, tracking_uri: str | None = None) -> ServedModel:
    """Load a model and its reference from any MLflow model URI or a local model directory."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    path, name, version, tags = _resolve(str(uri), tracking_uri)
    reference_file = path / "extra_files" / REFERENCE_FILE
    if (path / "frugalml.db").is_file():
        raise ModelLoadError(f"{uri!r} is a study directory, not a model; register its best configuration with "
                             f"`frugalml register {uri} --alias champion` and serve the printed models:/ URI.")
    if not reference_file.is_file():
        raise ModelLoadError(
            f"model {uri!r} has no {REFERENCE_FILE}; register it with `frugalml register` so serving "
            "knows its training schema and statistics."
        )
    import mlflow.sklearn

    try:
        model = mlflow.sklearn.load_model(str(path))
    except Exception as error:  # corrupt or incompatible files: one line for the user
        raise ModelLoadError(f"cannot load model {uri!r}: {type(error).__name__}: {error}") from error
    monitoring_file = path / "extra_files" / MONITORING_FILE
    monitoring = json.loads(monitoring_file.read_text()) if monitoring_file.is_file() else None
    return ServedModel(model, Reference.load(reference_file), str(uri), path, name, version, monitoring, tags)
