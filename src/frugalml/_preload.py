"""Imported by frugalml's forkservers after their base set: the libraries the workers import, once,
so that each worker inherits them instead of importing them again. For a study's trial workers,
scikit-learn for the built-in workloads; torch, Lightning, XGBoost... for a user's own training
function (torch: ~3 CPU-s a worker, Lightning ~8). For ``frugalml serve --workers N``, the
serving stack and the model's flavour (~3 CPU-s and ~140 MB a worker, see
:mod:`frugalml.serve._supervisor`).

The process that starts the forkserver names them in ``PRELOAD_ENV``
(:func:`frugalml.processes.use_forkserver`). One that fails to
import here is skipped, not fatal (CPython's forkserver survives only an ``ImportError``): the
worker imports it again and its trial reports the error, as it would without the preload.
Keras is imported only where it would take the torch backend here, on the machine that forks
(a Ray node may have TensorFlow where the driver has not). What the imports set in the
environment (Lightning's ``PYTORCH_NVML_BASED_CUDA_CHECK``, the Keras adapter's backend) is kept
in :data:`ENVIRONMENT`, for each worker to set again after taking the driver's environment.
"""

import gc
import importlib
import importlib.util
import os

from frugalml.processes import PRELOAD_ENV

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
# what was imported goes to the permanent generation: a forked worker's collections skip it, so they
# neither spend CPU walking it nor write to its pages (which copy-on-write would then copy into the worker).
# The serve forkserver's last import; the trials' imports frugalml.executors._warm after it, which freezes
# again what its warm-up left (a list splice: nothing repeated)
gc.freeze()
