"""A servable model: any MLflow model, plus the training-data fingerprint it is checked against.

``extra_files/frugalml_reference.json`` holds the fingerprint (:class:`Reference`)
of a model registered by frugalml; ``extra_files/frugalml_monitoring.json``, when
present, the model's default monitoring config. A model from elsewhere (any flavour
MLflow can load as a pyfunc) is served with ``reference=`` a table of its inputs
(and optional ``target``), from which the fingerprint is built at load time. Any
MLflow model URI works (``models:/name@alias``, ``models:/name/3``, ``runs:/...``)
as well as a local model directory.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from frugalml.exceptions import DataError, FrugalError, one_line
from frugalml.flavors import SKLEARN_SERIALIZATION, choose_keras_backend, missing_module_message, recorded_modules
from frugalml.lineage import parse_model_uri, store_problem
from frugalml.serve import _classifier as classifier
from frugalml.serve._reference import CATEGORICAL, Reference, encode_table

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
    download: Path | None = None  # the folder of frugalml's copy of a remote model (ModelLocation.download)

    @property
    def location(self) -> ModelLocation:
        return ModelLocation(self.path, self.name, self.version, dict(self.tags), self.download)


@dataclass(frozen=True)
class ModelLocation:
    """Where a model URI resolved to: its local directory, registered name, version and version tags."""

    path: Path
    name: str = ""
    version: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    # a model in a remote artifact store (an MLflow server's, S3...) is copied into a folder of frugalml's,
    # removed by release() or when the process that made it exits; None: MLflow's own local files
    download: Path | None = None


DOWNLOAD_PREFIX = "frugalml-model-"
# in a copy's folder, flocked by the process that made it for as long as the copy is in use: the kernel lets go when
# that process dies, even by kill -9, and the next process that copies a model removes a folder it can lock
OWNER_LOCK = ".frugalml-owner.lock"
# the folders this process downloaded models into and has not released: the process that made each (a child forked
# from it inherits this dict, not the copies) and the lock's descriptor (None where the file system has no flock)
_downloads: dict[Path, tuple[int, int | None]] = {}
_swept = False


def release(model: ServedModel | ModelLocation) -> None:
    """Remove the copy of a remote model that this process downloaded (nothing for local files, or
    for a copy another process made: a worker of ``--workers N`` serves its parent's)."""
    _remove(model.download)


def _remove(folder: Path | None) -> None:
    if folder is None or _downloads.get(folder, (None,))[0] != os.getpid():
        return
    _, lock = _downloads.pop(folder)
    shutil.rmtree(folder, ignore_errors=True)
    if lock is not None:
        os.close(lock)


def _release_all() -> None:
    for folder in list(_downloads):
        _remove(folder)


def _new_download() -> Path:
    global _swept
    if not _swept:
        _swept = True
        remove_orphaned_downloads()
    if not _downloads:
        atexit.unregister(_release_all)  # registered once however often the set empties
        atexit.register(_release_all)
    folder = Path(tempfile.mkdtemp(prefix=DOWNLOAD_PREFIX))
    _downloads[folder] = (os.getpid(), _claim(folder))
    return folder


def _claim(folder: Path) -> int | None:
    """Lock ``folder`` as this process's: a descriptor to keep open, or None where flock is refused (a
    network file system): that copy is then never taken for an orphan's."""
    fd, claim = tempfile.mkstemp(dir=folder)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # locked before it has its name: no sweep can take a copy being made
        os.rename(claim, folder / OWNER_LOCK)
    except OSError:
        os.close(fd)
        Path(claim).unlink(missing_ok=True)
        return None
    return fd


def remove_orphaned_downloads(directory: str | os.PathLike | None = None) -> list[Path]:
    """Remove the copies of remote models left in ``directory`` (``$TMPDIR``) by processes of this
    user that died without releasing them (kill -9, a power cut); returns them. Only a folder
    holding frugalml's owner lock is a copy; one whose lock is held belongs to a live process and is
    left alone."""
    removed = []
    for folder in Path(directory or tempfile.gettempdir()).glob(DOWNLOAD_PREFIX + "*"):
        lock = folder / OWNER_LOCK
        try:
            fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)  # a FIFO must not block
        except OSError:  # not a copy (a frugalml-model-* folder of another use), gone already, or not ours to read
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            here, there = os.fstat(fd), os.lstat(lock)
            if not (stat.S_ISREG(here.st_mode) and os.path.samestat(here, there) and here.st_uid == os.getuid()
                    and stat.S_ISDIR(os.lstat(folder).st_mode)):
                continue  # a file made to look like a lock, or one that went (and its folder's name reused)
        except OSError:  # its process is alive
            continue
        else:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        finally:
            os.close(fd)
    return removed


def _local_artifacts(uri: str, tracking_uri: str | None) -> bool:
    """Whether MLflow hands out ``uri``'s own files on this machine rather than a copy: a local store's,
    through ``models:/``; ``runs:/`` copies even those (into a temporary folder it never removes)."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository
    from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository

    try:
        repo = get_artifact_repository(uri, tracking_uri=tracking_uri, registry_uri=tracking_uri)
    except Exception:  # noqa: BLE001 - a copy of frugalml's, then: the download reports what is wrong
        return False
    while hasattr(repo, "repo"):  # models:/ and runs:/ wrap the store's own repository
        if isinstance(repo, RunsArtifactRepository):
            return False
        repo = repo.repo
    return isinstance(repo, LocalArtifactRepository)


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
                                  pip_requirements=pip_requirements(), serialization_format=SKLEARN_SERIALIZATION)
    return path


def resolve_model(uri: str, tracking_uri: str | None) -> ModelLocation:
    """Where ``uri`` is: its local directory, registered name, version and version tags."""
    import mlflow
    from mlflow.exceptions import MlflowException

    local = Path(uri)
    if local.is_dir():
        return ModelLocation(local, local.name)
    if ":/" not in uri:
        raise ModelLoadError(f"no model directory {uri!r}; pass a model directory or an MLflow model URI "
                             "(models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/model).")
    if uri.startswith(("models:/", "runs:/")) and not (tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")):
        # MLflow would fall back to ./mlflow.db, creating an empty store where it looks
        raise ModelLoadError(f"{uri!r} needs the tracking store it is registered in: pass --tracking-uri "
                             "(`frugalml register` prints it) or set MLFLOW_TRACKING_URI.")
    if uri.startswith(("models:/", "runs:/")) and (
            problem := store_problem(tracking_uri or os.environ["MLFLOW_TRACKING_URI"])):
        raise ModelLoadError(problem)
    name = version = ""
    tags: dict[str, str] = {}
    try:
        if uri.startswith("models:/"):
            client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
            name, number, alias = parse_model_uri(uri) or ("", None, None)
            if alias:
                found = client.get_model_version_by_alias(name, alias)
            else:
                found = client.get_model_version(name, number) if number and number.isdigit() else None
            if found is not None:
                version, tags = str(found.version), dict(found.tags)
        if tracking_uri:
            mlflow.set_tracking_uri(tracking_uri)
            mlflow.set_registry_uri(tracking_uri)
        download = None if _local_artifacts(uri, tracking_uri) else _new_download()
        try:
            path = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=download and str(download)))
        except BaseException:
            _remove(download)
            raise
    except MlflowException as error:
        where = f" (tracking URI {tracking_uri})" if tracking_uri else " (set --tracking-uri or MLFLOW_TRACKING_URI)"
        raise ModelLoadError(f"cannot resolve model {uri!r}{where}: {one_line(error)}"
                             f"{_registered_here(tracking_uri, name, error)}") from error
    return ModelLocation(path, name, version, tags, download)


def _registered_here(tracking_uri: str | None, name: str, error: Exception) -> str:
    """For a name the registry does not have: the names it has (a typo's fix), as the end of a message."""
    if not name or getattr(error, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
        return ""
    import mlflow

    try:
        client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        try:
            client.get_registered_model(name)
            return ""  # the model is there: its version or alias is not
        except Exception:  # noqa: BLE001, S110 - it is not: say which are
            pass
        names = sorted(m.name for m in client.search_registered_models(max_results=20))
    except Exception:  # noqa: BLE001 - the message stands without the list
        return ""
    return f"; registered there: {', '.join(names)}" if names else "; nothing is registered there"


class PyfuncPredictor:
    """An MLflow pyfunc model behind the ``predict(X: ndarray) -> ndarray`` serving calls.

    Rows become a DataFrame with the reference's feature names, cast to the types of
    the model's signature when it has one. A classifier that returns one score per
    class (a network's logits) is answered with the index of the highest score, and
    ``predict_proba`` gives its class probabilities (softmax of the scores unless they
    are probabilities already); a network registered by frugalml
    (:mod:`frugalml.serve._classifier`) answers both itself, as ``mlflow.pyfunc`` does.
    """

    def __init__(self, model: Any, feature_names: tuple[str, ...] = ()) -> None:
        self.model = model
        self.feature_names = tuple(feature_names)
        schema = model.metadata.get_input_schema() if model.metadata is not None else None
        self._tensor = schema is not None and schema.is_tensor_spec()
        self._types = schema.numpy_types() if schema is not None else None
        names = schema.input_names() if schema is not None and schema.has_input_names() else None
        if names and not self.feature_names:
            self.feature_names = tuple(str(n) for n in names)
        conf = model.metadata.flavors.get("python_function", {}) if model.metadata is not None else {}
        self._classifier = conf.get("loader_module") == classifier.__name__
        self.classes_: np.ndarray | None = np.asarray(conf["frugalml_classes"]) if self._classifier else None

    def _inputs(self, X: Any) -> Any:
        import pandas as pd

        X = np.asarray(X)
        if self._tensor:
            return X.astype(self._types[0]) if self._types else X
        inputs = pd.DataFrame(X, columns=list(self.feature_names) or None)
        if self._types is not None and len(self._types) == inputs.shape[1]:
            inputs = inputs.astype(dict(zip(inputs.columns, self._types)))
        elif X.dtype == object:  # text features: numbers back to numeric columns
            inputs = inputs.infer_objects()
        return inputs

    def predict(self, X: Any) -> np.ndarray:
        output = np.asarray(self.model.predict(self._inputs(X)))
        if output.ndim == 2 and output.shape[1] == 1:
            return output[:, 0]
        if output.ndim == 2 and self.classes_ is None:  # a network's classes: its output indices
            self.classes_ = np.arange(output.shape[1])
        return output.argmax(axis=1) if output.ndim == 2 else output

    def predict_proba(self, X: Any) -> np.ndarray | None:
        """Class probabilities (rows x classes, in the order of ``classes_``); None for a model without them."""
        if self._classifier:
            return np.asarray(self.model.predict(self._inputs(X), params={classifier.PARAM: True}))
        output = np.asarray(self.model.predict(self._inputs(X)))
        if output.ndim != 2 or output.shape[1] < 2:
            return None
        if self.classes_ is None:
            self.classes_ = np.arange(output.shape[1])
        return classifier.probabilities(output)


class _NamedColumns:
    """A scikit-learn model fitted on a DataFrame, given rows as a DataFrame with its column names
    (an array would warn on every request); other attributes (``coef_``) are the model's."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.feature_names = tuple(str(n) for n in model.feature_names_in_)
        if hasattr(model, "predict_proba"):
            self.predict_proba = lambda X: model.predict_proba(self._frame(X))

    def _frame(self, X: Any) -> Any:
        import pandas as pd

        X = np.asarray(X)
        frame = pd.DataFrame(X, columns=self.model.feature_names_in_)
        return frame.infer_objects() if X.dtype == object else frame  # text features: numbers stay numeric

    def predict(self, X: Any) -> np.ndarray:

        return self.model.predict(self._frame(X))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


def load_predictor(path: Path, uri: str, feature_names: tuple[str, ...] = ()) -> Any:
    """The scikit-learn model itself (its weights are checked for NaN), else a :class:`PyfuncPredictor`."""
    import mlflow.pyfunc
    from mlflow.models import Model

    try:
        flavors = Model.load(str(path)).flavors
        if "keras" in flavors:  # Keras reads its backend once, at import: one that is installed
            choose_keras_backend(flavors["keras"].get("keras_backend"))
        if "sklearn" in flavors:
            import mlflow.sklearn

            model = mlflow.sklearn.load_model(str(path))
            return _NamedColumns(model) if hasattr(model, "feature_names_in_") else model
        return PyfuncPredictor(mlflow.pyfunc.load_model(str(path)), feature_names)
    except FrugalError as error:  # no Keras backend installed
        raise ModelLoadError(f"cannot load model {uri!r}: {error}") from None
    except Exception as error:  # corrupt or incompatible files, a user module not importable: one line
        hint = missing_module_message(error, recorded_modules(path))
        raise ModelLoadError(f"cannot load model {uri!r}: {hint or f'{type(error).__name__}: {error}'}") from error


def reference_from_table(model: Any, path: str | Path, *, task: str | None = None, seed: int = 0) -> Reference:
    """The fingerprint of a table of ``model``'s inputs (and optional ``target``) for drift and quality."""
    from frugalml.flavors import TARGET, infer_task, read_reference

    frame, stored_task = read_reference(path)
    y = frame.pop(TARGET).to_numpy() if TARGET in frame.columns else None
    names = tuple(str(c) for c in frame.columns)
    wanted = getattr(model, "feature_names", ())
    if wanted and set(wanted) != set(names):
        raise DataError(f"reference {str(path)!r} has columns {list(names)} but the model takes {list(wanted)}; "
                        "pass a table of exactly the model's inputs (plus an optional 'target').")
    if wanted:
        frame, names = frame[list(wanted)], tuple(wanted)
    if frame.empty:
        raise DataError(f"reference {str(path)!r} has no rows; pass a table of the model's inputs.")
    X, categories = encode_table(frame)  # text columns as category codes
    raw = frame.to_numpy(dtype=object) if categories else X
    if isinstance(model, PyfuncPredictor) and not model.feature_names:
        model.feature_names = names
    try:
        predictions = np.asarray(model.predict(raw))
    except Exception as error:  # the model's own error, in one line
        raise DataError(f"the model cannot predict on reference {str(path)!r}: "
                        f"{one_line(error, typed=True)}") from None
    task = task or stored_task or infer_task(y if y is not None else predictions)
    classes: tuple[str, ...] = ()
    calibration = None
    if task == "classification":
        seen = {str(v) for v in predictions.tolist()} | ({str(v) for v in y.tolist()} if y is not None else set())
        classes = tuple(sorted(seen))
        calibration = _calibration(model, raw, y)
    return Reference.build(X, y if y is not None else predictions, names, task=task, predictions=predictions,
                           classes=classes, seed=seed, data={"source": str(path)}, categories=categories,
                           calibration=calibration)


def _calibration(model: Any, X: np.ndarray, y: np.ndarray | None) -> dict[str, Any] | None:
    """The confidence calibrator of a classifier with class probabilities, fitted on labelled reference rows
    (for ``quality.estimated_accuracy``); None without labels or probabilities."""
    from frugalml.serve._estimate import Calibration, confidences

    if y is None:
        return None
    try:
        scored = confidences(model, X)
    except Exception:  # noqa: BLE001 - a model whose predict_proba fails here is served without the estimate
        return None
    if scored is None:
        return None
    predicted, confidence = scored
    return Calibration.fit(confidence, predicted.astype(str) == np.asarray(y).astype(str)).to_dict()


def _schema_only(path: Path, names: tuple[str, ...]) -> Reference | None:
    """The fingerprint the model's column signature gives (names from it where ``names`` is empty: a
    model fitted on arrays keeps none); text columns where it says ``string``. None without names."""
    from mlflow.models import Model

    schema = Model.load(str(path)).get_input_schema()
    columns = [] if schema is None or schema.is_tensor_spec() else schema.inputs
    names = names or tuple(str(c.name) for c in columns if c.name is not None)
    if not names:
        return None
    text = {str(c.name) for c in columns if getattr(c.type, "name", "") == "string"}
    return Reference.schema_only(names, dtypes=[CATEGORICAL if n in text else "float64" for n in names])


def load_model(uri: str, tracking_uri: str | None = None, reference: str | Path | Reference | None = None, *,
               location: ModelLocation | None = None) -> ServedModel:
    """Load a model and its reference from any MLflow model URI or a local model directory.

    ``reference``: for a model without frugalml's reference file, a Parquet or CSV table
    of its inputs (and optional ``target`` column) to fingerprint, or that fingerprint made
    before (a worker of ``--workers N`` takes its parent's). ``location``: where
    ``uri`` resolved to when the model was loaded before (:attr:`ServedModel.location`):
    the same version is loaded from there, without asking the registry again (a worker of
    ``frugalml serve --workers N`` serves its parent's version, even once the alias moved);
    from the registry by its version if that folder is gone.
    """
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    resolved = location is None or not (location.path / "MLmodel").is_file()  # its folder gone: a cleaned download
    if resolved:
        pinned = location is not None and location.name and location.version
        location = resolve_model(f"models:/{location.name}/{location.version}" if pinned else str(uri), tracking_uri)
    try:
        return _load(uri, location, reference)
    except BaseException:
        if resolved:  # a copy made here, of a model that will not be served (a caller's location is the caller's)
            release(location)
        raise


def _load(uri: str, location: ModelLocation, reference: str | Path | Reference | None) -> ServedModel:
    path, name, version, tags = location.path, location.name, location.version, dict(location.tags)
    reference_file = path / "extra_files" / REFERENCE_FILE
    if (path / "frugalml.db").is_file():
        raise ModelLoadError(f"{uri!r} is a study directory, not a model; register its best configuration with "
                             f"`frugalml register {uri} --alias champion` and serve the printed models:/ URI.")
    if not (path / "MLmodel").is_file():
        raise ModelLoadError(f"{uri!r} holds no MLflow model (no MLmodel file); pass an MLflow model directory or URI.")
    if reference_file.is_file():
        fingerprint = Reference.load(reference_file)
        model = load_predictor(path, str(uri), fingerprint.feature_names)
    elif isinstance(reference, Reference):
        fingerprint = reference
        model = load_predictor(path, str(uri), fingerprint.feature_names)
    elif reference is not None:
        model = load_predictor(path, str(uri))
        fingerprint = reference_from_table(model, reference)
    else:  # the signature gives the schema; without training data there is nothing to drift from
        model = load_predictor(path, str(uri))
        fingerprint = _schema_only(path, getattr(model, "feature_names", ()))
        if fingerprint is None:
            raise ModelLoadError(
                f"model {uri!r} has neither {REFERENCE_FILE} nor a signature with input names: pass --reference DATA "
                "(a Parquet or CSV table of its inputs, and an optional 'target' column), or log it with an "
                "input_example, or register it with `frugalml register`."
            )
    monitoring_file = path / "extra_files" / MONITORING_FILE
    monitoring = json.loads(monitoring_file.read_text()) if monitoring_file.is_file() else None
    return ServedModel(model, fingerprint, str(uri), path, name, version, monitoring, tags, location.download)
