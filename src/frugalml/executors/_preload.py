"""Imported by the trial workers' forkserver after the base set: the libraries this study's
workers import (scikit-learn for the built-in workloads; torch, Lightning, XGBoost... for a
user's own training function), once, so that each worker inherits them instead of importing
them again (torch: ~3 CPU-s a worker, Lightning ~8).

The driver names them in ``PRELOAD_ENV`` while it starts the forkserver. One that fails to
import here is skipped, not fatal (CPython's forkserver survives only an ``ImportError``): the
worker imports it again and its trial reports the error, as it would without the preload.
Keras is imported only where it would take the torch backend here, on the machine that forks
(a Ray node may have TensorFlow where the driver has not). What the imports set in the
environment (Lightning's ``PYTORCH_NVML_BASED_CUDA_CHECK``, the Keras adapter's backend) is kept
in :data:`ENVIRONMENT`, for each worker to set again after taking the driver's environment.
"""

import importlib
import importlib.util
import os

from frugalml.executors._worker import PRELOAD_ENV

KERAS_ADAPTER = "frugalml.integrations.keras"


def _keras_on_torch() -> bool:
    backend = os.environ.get("KERAS_BACKEND")
    return backend == "torch" if backend is not None else importlib.util.find_spec("tensorflow") is None


_before = dict(os.environ)
for _name in filter(None, os.environ.pop(PRELOAD_ENV, "").split(",")):
    if (_name.partition(".")[0] == "keras" or _name == KERAS_ADAPTER) and not _keras_on_torch():
        continue
    try:
        importlib.import_module(_name)
    except Exception:  # noqa: BLE001, S110 - left to the worker's own import (above)
        pass
ENVIRONMENT = {name: value for name, value in os.environ.items() if _before.get(name) != value}
