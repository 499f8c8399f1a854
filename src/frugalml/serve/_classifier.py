"""A registered network classifier that answers as ``frugalml serve`` does: labels, or probabilities on request.

A PyTorch (Lightning) or Keras network returns one score per class (logits, or softmax
outputs); MLflow's own pyfunc returns them as they are. When ``frugalml register`` registers
such a classifier it points the model's ``python_function`` flavour at this module
(:func:`as_classifier`), so ``mlflow.pyfunc.load_model("models:/...")`` gives what ``/predict``
gives:

* ``predict(frame)``: the class labels (the index of the highest score);
* ``predict(frame, params={"probabilities": True})``: a DataFrame of class probabilities,
  one column per class (softmax of the scores, unless they are probabilities already).

The network's own flavour (``mlflow.pytorch.load_model``, ``mlflow.keras.load_model``) is
untouched, and its signature names the real input columns (the reference's features).

Example:
    >>> import mlflow.pyfunc                                                    # doctest: +SKIP
    >>> model = mlflow.pyfunc.load_model("models:/mnist-fit@champion")         # doctest: +SKIP
    >>> model.predict(rows)                                                     # doctest: +SKIP
    array([7, 2, 1])
    >>> model.predict(rows, params={"probabilities": True}).shape               # doctest: +SKIP
    (3, 10)
"""

from __future__ import annotations

import importlib
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

LOADERS = ("mlflow.pytorch", "mlflow.keras")  # flavours whose pyfunc returns per-class scores
PARAM = "probabilities"


def probabilities(scores: Any) -> np.ndarray:
    """Per-class ``scores`` (rows x classes) as probabilities: as they are when they already are, else softmax."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.min(initial=0.0) >= 0 and np.allclose(scores.sum(axis=1), 1.0, atol=1e-4):
        return scores
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


class _Classifier:
    """The pyfunc implementation: the network's own pyfunc, answered as labels or probabilities."""

    def __init__(self, inner: Any, classes: Sequence[Any]) -> None:
        self.inner = inner
        self.classes = np.asarray(classes)

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        import pandas as pd

        if isinstance(data, pd.DataFrame):  # named columns, in the signature's order
            data = data.to_numpy(dtype=np.float32)
        scores = np.asarray(self.inner.predict(np.asarray(data, dtype=np.float32)))
        if scores.ndim == 1:
            scores = scores.reshape(-1, 1)
        if params and params.get(PARAM):
            return pd.DataFrame(probabilities(scores), columns=[str(c) for c in self.classes])
        return self.classes[scores.argmax(axis=1)]


def _model_file(path: str) -> Path:
    for candidate in (Path(path), Path(path).parent):
        if (candidate / "MLmodel").is_file():
            return candidate / "MLmodel"
    raise FileNotFoundError(f"no MLmodel file at {path} or above it")


def _load_pyfunc(path: str, model_config: Any = None) -> _Classifier:
    """Called by ``mlflow.pyfunc.load_model`` with the model's data folder."""
    from mlflow.models import Model

    flavors = Model.load(str(_model_file(path))).flavors
    conf = flavors["python_function"]
    loader = conf["frugalml_loader"]
    if loader == "mlflow.keras":
        from frugalml.flavors import choose_keras_backend

        choose_keras_backend(flavors.get("keras", {}).get("keras_backend"))  # no KERAS_BACKEND needed to load it
    return _Classifier(importlib.import_module(loader)._load_pyfunc(path), conf["frugalml_classes"])


def as_classifier(directory: str | Path, classes: Sequence[Any], feature_names: Sequence[str],
                  training: Any = None) -> bool:
    """Make the MLflow model in ``directory`` answer labels / probabilities (see the module); False if it
    is no network flavour this applies to. The signature's inputs become ``feature_names``, typed as
    the ``training`` DataFrame's columns are (float64 without it: MLflow refuses int64 data for a
    float64 column), its output the label, with a ``probabilities`` parameter (default False)."""
    from mlflow.models import Model, ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
    from mlflow.types.utils import _infer_schema

    directory = Path(directory)
    model = Model.load(str(directory / "MLmodel"))
    conf = model.flavors.get("python_function")
    if conf is None or conf.get("loader_module") not in LOADERS:
        return False
    conf["frugalml_loader"] = conf["loader_module"]
    conf["loader_module"] = __name__
    conf["frugalml_classes"] = [c.item() if isinstance(c, np.generic) else c for c in classes]
    label = "long" if np.asarray(classes).dtype.kind in "iu" else "string"
    with warnings.catch_warnings():  # MLflow's hint that integer columns cannot hold missing values
        warnings.simplefilter("ignore", UserWarning)
        inputs = _infer_schema(training[list(feature_names)].head(100)) if training is not None \
            else Schema([ColSpec("double", str(name)) for name in feature_names])
    model.signature = ModelSignature(
        inputs=inputs,
        outputs=Schema([ColSpec(label)]),
        params=ParamSchema([ParamSpec(PARAM, "boolean", False)]),
    )
    for stale in ("input_example.json", "serving_input_example.json"):  # the tensor example no longer fits
        if (directory / stale).is_file():
            os.remove(directory / stale)
    model.saved_input_example_info = None
    model.save(str(directory / "MLmodel"))
    return True
