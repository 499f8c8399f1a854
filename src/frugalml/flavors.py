"""Save any trained model as an MLflow model, and the data it should be served against.

The MLflow flavour follows the model's type, read from its class hierarchy without
importing any framework: XGBoost, LightGBM, scikit-learn, PyTorch (and Lightning),
Keras, Transformers pipelines; anything else with a ``predict`` method becomes a
pyfunc model that calls it. In the trial a model is only pickled (MLflow is not
imported there: its import would count against the trial's memory); the driver makes
it an MLflow model, the trial run's ``model`` artifact, when it logs the trial
(:mod:`frugalml.tracking`), or when it is registered and has no such artifact. Files
are written to a temporary folder and renamed into place, so a trial killed mid-save
leaves nothing half-written.

Reference data (``reference.parquet``) is a table of the model's input columns plus
an optional ``target`` column, the same format ``frugalml serve --reference`` reads.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import shutil
from pathlib import Path
from typing import Any

from frugalml.exceptions import DataError, TrialUsageError, one_line

TARGET = "target"  # the label/target column of a reference table
REFERENCE_FILE = "reference.parquet"
MODEL_META = "frugalml_model.json"  # beside a kept model: its flavour, class and the user modules it needs
TASKS = ("classification", "regression")

# class-module prefix -> (MLflow flavour module, distribution pinned in the model's requirements)
_FLAVORS = (
    ("xgboost", "mlflow.xgboost", "xgboost"),
    ("lightgbm", "mlflow.lightgbm", "lightgbm"),
    ("transformers", "mlflow.transformers", "transformers"),
    ("keras", "mlflow.keras", "keras"),
    ("tf_keras", "mlflow.keras", "keras"),
    ("torch", "mlflow.pytorch", "torch"),
    ("lightning", "mlflow.pytorch", "torch"),
    ("pytorch_lightning", "mlflow.pytorch", "torch"),
    ("sklearn", "mlflow.sklearn", "scikit-learn"),
)

# How scikit-learn models are written (MLflow 3 defaults to skops, which refuses many estimators, e.g. trees,
# and whose import walks all of scikit-learn and imports torch: +6 s per model logged). frugalml logs only
# models it trained itself; load untrusted models with care whatever the format.
SKLEARN_SERIALIZATION = "cloudpickle"


def flavor_of(model: Any) -> tuple[str, str | None]:
    """The MLflow flavour module for ``model`` and the package to pin: ``("mlflow.sklearn", "scikit-learn")``."""
    modules = [cls.__module__ for cls in type(model).__mro__]
    for prefix, flavor, package in _FLAVORS:
        if any(m == prefix or m.startswith(prefix + ".") for m in modules):
            return flavor, package
    return "mlflow.pyfunc", None


def _requirements(package: str | None) -> list[str]:
    """Pinned requirements, so MLflow does not load the model in a subprocess to infer them."""
    pins = []
    for name in ("numpy", "pandas", "cloudpickle", *([package] if package else [])):
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return pins


class _Predictor:
    """The pyfunc wrapper of a model that is no known flavour: ``predict`` calls the model's."""

    def __init__(self, model: Any) -> None:
        self.model = model

    # model_input unannotated: MLflow infers a signature from its type hint, and warns on ``Any``
    # ("Type hints must be wrapped in list[...]") past any warning filter, once per exported model
    def predict(self, context: Any, model_input, params: Any = None) -> Any:  # noqa: ANN001
        return self.model.predict(model_input)


def save_model(model: Any, directory: str | Path, *, input_example: Any = None) -> tuple[Path, str]:
    """Keep ``model`` in ``directory/model`` for registration; returns that path and the MLflow flavour.

    Inside the trial this is a pickle (``torch.save`` for PyTorch): importing MLflow
    there would cost seconds and ~300 MB that the trial's memory budget would count.
    :func:`export_mlflow` turns it into an MLflow model when it is registered.
    """
    flavor, _ = flavor_of(model)
    if flavor == "mlflow.pyfunc" and not callable(getattr(model, "predict", None)):
        raise TrialUsageError(
            f"log_model cannot save a {type(model).__name__}: it is no scikit-learn, PyTorch, Keras, XGBoost, "
            "LightGBM or Transformers model and has no predict method; pass the trained model (or an object "
            "whose predict(inputs) returns its predictions)."
        )
    target = Path(directory) / "model"
    tmp = target.with_name(f".model.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        import cloudpickle

        if flavor == "mlflow.pytorch":
            import torch

            torch.save(model, tmp / "model.pt")
            modules = _user_modules(_torch_pickle(tmp / "model.pt"))
        else:
            pickled = cloudpickle.dumps(model)
            (tmp / "model.pkl").write_bytes(pickled)
            modules = _user_modules(pickled)
        if input_example is not None:
            (tmp / "input_example.pkl").write_bytes(cloudpickle.dumps(input_example))
    except Exception as error:  # noqa: BLE001 - anything unpicklable: one line for the user
        shutil.rmtree(tmp, ignore_errors=True)
        raise TrialUsageError(
            f"log_model cannot save the {type(model).__name__}: {type(error).__name__}: {one_line(error)}; "
            "pass the trained model itself (defined at module level, without open files or locks)."
        ) from None
    meta = {"flavor": flavor, "class": type(model).__qualname__, "modules": modules}
    if flavor == "mlflow.keras":  # loading it again needs the same backend, whatever KERAS_BACKEND says then
        meta["keras_backend"] = str(importlib.import_module("keras").backend.backend())
    (tmp / MODEL_META).write_text(json.dumps(meta))
    if target.exists():
        shutil.rmtree(target)
    os.rename(tmp, target)
    return target, flavor


def _torch_pickle(path: Path) -> bytes:
    """The pickle inside a ``torch.save`` archive (``<name>/data.pkl``), where the classes are named."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith("/data.pkl")), None)
            return archive.read(name) if name else b""
    except (OSError, zipfile.BadZipFile):
        return b""


def _user_modules(pickled: bytes) -> dict[str, str]:
    """The user's own modules a pickle refers to, each with the folder to put on ``PYTHONPATH`` for it.

    A class is pickled by reference to its module; a module of the user's (neither the
    standard library nor an installed distribution) must be importable wherever the model
    is loaded again, so its folder is recorded for the error message that says so.
    """
    import pickletools
    import sys

    names: set[str] = set()
    try:
        for opcode, argument, _ in pickletools.genops(pickled):
            if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "GLOBAL") and isinstance(argument, str):
                names.add(argument.split(" ")[0].partition(".")[0])
    except Exception:  # noqa: BLE001 - a pickle pickletools cannot walk: no hint, the model is saved all the same
        return {}
    folders: dict[str, str] = {}
    for name in sorted(names - set(sys.stdlib_module_names)):
        file = getattr(sys.modules.get(name), "__file__", None)
        if not file or name in _declared_modules():
            continue
        path = Path(file).resolve()
        if any(path.is_relative_to(root) for root in _library_folders()):  # an installed distribution's
            continue
        folders[name] = str(path.parent.parent if path.name == "__init__.py" else path.parent)
    return folders


@functools.cache
def _library_folders() -> tuple[Path, ...]:
    """This interpreter's standard library and site-packages folders."""
    import site
    import sysconfig

    paths = sysconfig.get_paths()
    folders = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")} | set(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        folders.add(site.getusersitepackages())
    return tuple(Path(folder).resolve() for folder in folders)


@functools.cache
def _declared_modules() -> frozenset[str]:
    """Top-level modules installed distributions declare in ``top_level.txt`` (setuptools' editable
    installs, whose files are outside site-packages, included).

    Not ``importlib.metadata.packages_distributions()``: it reads every distribution's file list,
    0.3-2.7 CPU-s in each trial worker that logs a model, charged to the trial.
    """
    return frozenset(name for dist in importlib.metadata.distributions()
                     for name in (dist.read_text("top_level.txt") or "").split())


KERAS_BACKENDS = ("tensorflow", "torch", "jax")


def choose_keras_backend(recorded: str | None = None) -> str | None:
    """Make Keras load with a backend that is installed; call it before Keras is imported.

    ``KERAS_BACKEND`` wins when set. Else the backend the model was saved with
    (``recorded``), when installed, else the first installed of TensorFlow (Keras's own
    default), PyTorch and JAX; it is put in ``KERAS_BACKEND`` for Keras to read.

    Raises:
        TrialUsageError: no backend is installed.
    """
    import importlib.util
    import sys

    if os.environ.get("KERAS_BACKEND") or "keras" in sys.modules:  # chosen already (None: Keras's default)
        return os.environ.get("KERAS_BACKEND")
    for backend in ([recorded] if recorded in KERAS_BACKENDS else []) + list(KERAS_BACKENDS):
        if importlib.util.find_spec(backend) is not None:
            os.environ["KERAS_BACKEND"] = backend
            return backend
    raise TrialUsageError(
        f"a Keras model needs one of its backends installed ({', '.join(KERAS_BACKENDS)}); none is: install "
        "PyTorch (pip install 'frugalml[keras]') or set KERAS_BACKEND to an installed backend."
    )


def missing_module_message(error: BaseException | None, modules: dict[str, str] | None = None) -> str | None:
    """What to do when a model cannot be loaded because a module it needs is not importable.

    ``modules`` maps the user modules recorded at save time to their folders. None when
    ``error`` is not a missing module.
    """
    while error is not None and not isinstance(error, ModuleNotFoundError):
        error = error.__cause__ or error.__context__  # a flavour may wrap it
    if error is None or not error.name:
        return None
    name = error.name
    top = name.partition(".")[0]
    if top in KERAS_BACKENDS and os.environ.get("KERAS_BACKEND") == top:
        return (f"KERAS_BACKEND={top} but {top!r} is not installed: set KERAS_BACKEND to an installed backend "
                "(torch) or unset it to let frugalml choose.")
    folder = (modules or {}).get(top)
    if folder:
        return (f"the model was pickled from module {name!r}, which this Python cannot import: add its folder to "
                f"PYTHONPATH (PYTHONPATH={folder}), or run `python -m frugalml ...` from that folder.")
    return (f"the model needs module {name!r}, which this Python cannot import: install the package that "
            "provides it, or, if it is your own module, add the folder that holds it (its .py file or package) "
            "to PYTHONPATH, or run `python -m frugalml ...` from that folder.")


def recorded_modules(directory: str | Path) -> dict[str, str]:
    """The user modules :func:`save_model` recorded for the model in ``directory`` (``{}`` if none)."""
    try:
        return dict(json.loads((Path(directory) / MODEL_META).read_text()).get("modules") or {})
    except (OSError, ValueError, AttributeError):
        return {}


def load_saved(directory: str | Path) -> tuple[Any, str, Any]:
    """The model :func:`save_model` kept, its flavour and its input example (or None).

    Raises:
        TrialUsageError: the model's class is in a module this process cannot import.
    """
    import cloudpickle

    directory = Path(directory)
    meta = json.loads((directory / MODEL_META).read_text())
    if meta["flavor"] == "mlflow.keras":
        choose_keras_backend(meta.get("keras_backend"))
    try:
        if (directory / "model.pt").is_file():
            import torch

            model = torch.load(directory / "model.pt", map_location="cpu", weights_only=False)
        else:
            model = cloudpickle.loads((directory / "model.pkl").read_bytes())
        example_file = directory / "input_example.pkl"
        example = cloudpickle.loads(example_file.read_bytes()) if example_file.is_file() else None
    except ModuleNotFoundError as error:
        raise TrialUsageError(missing_module_message(error, meta.get("modules"))) from None
    return model, meta["flavor"], example


def export_mlflow(saved: str | Path, target: str | Path) -> Path:
    """Write the model kept in ``saved`` as an MLflow model directory at ``target``, in its flavour."""
    import mlflow.pyfunc

    model, flavor, example = load_saved(saved)
    _, package = flavor_of(model)
    modules = recorded_modules(saved)
    options: dict[str, Any] = {"pip_requirements": _requirements(package)}
    if example is not None:
        options["input_example"] = example
    if flavor in ("mlflow.sklearn", "mlflow.lightgbm"):
        # MLflow 3.17 saves a LightGBM scikit-learn model with skops by default; loading that walks all
        # of scikit-learn and imports torch: a server of 751 MB RSS against 258 (benchmarks/serve_memory.py)
        options["serialization_format"] = SKLEARN_SERIALIZATION
    if flavor == "mlflow.keras":  # MLflow 3.17's keras flavour writes the input example before making the folder
        Path(target).mkdir(parents=True, exist_ok=True)
    try:
        if flavor == "mlflow.pyfunc":
            python_model = type("FrugalmlPredictor", (_Predictor, mlflow.pyfunc.PythonModel), {})(model)
            mlflow.pyfunc.save_model(str(target), python_model=python_model, **options)
        else:
            importlib.import_module(flavor).save_model(model, str(target), **options)
    except Exception as error:  # noqa: BLE001 - each flavour raises its own kinds; one line for the user
        raise TrialUsageError(
            f"cannot save the {type(model).__name__} with {flavor}: {one_line(error)}; check that the "
            "model is trained and that its input_example is what its predict accepts."
        ) from None
    if modules:  # for the message that says where to find them, when serving cannot import them
        (Path(target) / MODEL_META).write_text(json.dumps({"flavor": flavor, "modules": modules}))
    return Path(target)


def infer_task(y: Any) -> str:
    """``"regression"`` for a floating-point target, else ``"classification"``."""
    import numpy as np

    return "regression" if np.asarray(y).dtype.kind == "f" else "classification"


def reference_frame(X: Any, y: Any = None) -> Any:
    """``X`` (and ``y`` as the ``target`` column) as a DataFrame with string column names."""
    import numpy as np
    import pandas as pd

    if isinstance(X, pd.DataFrame):
        frame = X.reset_index(drop=True).copy()
        frame.columns = [str(c) for c in frame.columns]
    else:
        values = np.asarray(X)
        if values.ndim == 1:
            values = values.reshape(-1, 1)
        if values.ndim != 2:
            raise TrialUsageError(f"log_reference needs 2-D inputs (rows x features); got shape {values.shape}. "
                                  "Flatten images to rows first, e.g. X.reshape(len(X), -1).")
        frame = pd.DataFrame(values, columns=[f"x{j}" for j in range(values.shape[1])])
    if TARGET in frame.columns:
        raise TrialUsageError(f"log_reference: '{TARGET}' names the label column; rename that input column.")
    if y is not None:
        y = np.asarray(y)
        if len(y) != len(frame):
            raise TrialUsageError(f"log_reference got {len(frame)} input rows but {len(y)} labels; pass one per row.")
        frame[TARGET] = y
    if len(frame) == 0:
        raise TrialUsageError("log_reference got no rows; pass the data the model was trained on.")
    return frame


def save_reference(directory: str | Path, X: Any, y: Any = None, *, task: str | None = None) -> Path:
    """Write ``X`` and ``y`` to ``directory/reference.parquet`` (atomically), with the task."""
    if task is not None and task not in TASKS:
        raise TrialUsageError(f"log_reference task must be one of {', '.join(TASKS)}. Got {task!r} instead.")
    frame = reference_frame(X, y)
    if task is None and y is not None:
        task = infer_task(frame[TARGET])
    path = Path(directory) / REFERENCE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    table_meta = {"frugalml": json.dumps({"task": task})}
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table.replace_schema_metadata({**(table.schema.metadata or {}), **table_meta}), tmp)
    os.replace(tmp, path)
    return path


def read_reference(path: str | Path) -> tuple[Any, str | None]:
    """A reference table (Parquet or CSV) and the task stored with it (None when not stored)."""
    import pandas as pd

    path = Path(path)
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            meta = json.loads((table.schema.metadata or {}).get(b"frugalml", b"{}"))
            return table.to_pandas(), meta.get("task")
        return pd.read_csv(path), None
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read reference data {str(path)!r}: {error}; pass a Parquet or CSV file "
                              "of the model's input columns (and an optional 'target' column).") from None
